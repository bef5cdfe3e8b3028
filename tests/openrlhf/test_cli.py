"""The launcher flags on OpenRLHF's real train_ppo_ray parser (in process, and once as the real script)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import openrlhf_compat
from rank_grpo_plugin.openrlhf import flags
from rank_grpo_plugin.options import OPTIONS_ENV, RankGRPOOptions


def _rank(helpers, catalog_path, *extra, estimator_flag="--algo.advantage.estimator"):
    return helpers.base_argv + [estimator_flag, "rank_grpo", "--rank_grpo.catalog", catalog_path, *extra]


def test_both_spellings_parse_and_reach_args(helpers, catalog_path, monkeypatch):
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    for flag in ("--algo.advantage.estimator", "--advantage_estimator"):
        args = helpers.run_cli(_rank(helpers, catalog_path, "--rank_grpo.num_ranks", "10",
                                     "--rank_grpo.reward_scheme", "exp", "--rank_grpo.gamma", "2.0",
                                     estimator_flag=flag))
        assert args.algo.advantage.estimator == "rank_grpo"
        assert args.actor.policy_loss_type == "rank_grpo"  # the default with the rank_grpo estimator
        assert args.rank_grpo.num_ranks == 10 and args.rank_grpo.reward_scheme == "exp"
        assert args.rank_grpo.gamma == 2.0
        assert args.rank_grpo.catalog == os.path.abspath(catalog_path)
        # the catalog reward is selected automatically (OpenRLHF then splits the URL list itself)
        assert args.reward.remote_url == [flags.REWARD_FILE]
        assert args.critic.model_name_or_path is None
        assert list(args.actor.eps_clip_low_high) == [0.06, 0.08]  # core defaults when no eps flag is given
        assert args.rank_grpo.advantage_level == "rank"
        opts = RankGRPOOptions.from_json(os.environ[OPTIONS_ENV])  # what the rollout actors will read
        assert opts.num_ranks == 10 and opts.catalog == os.path.abspath(catalog_path)


def test_explicit_ppo_loss_and_eps_are_kept(helpers, catalog_path):
    args = helpers.run_cli(_rank(helpers, catalog_path, "--actor.policy_loss_type", "ppo",
                                 "--actor.eps_clip_low_high", "0.1", "0.3"))
    assert args.actor.policy_loss_type == "ppo"  # rank advantages + token-level PPO (ablation) stays possible
    assert list(args.actor.eps_clip_low_high) == [0.1, 0.3]


def test_other_runs_untouched(helpers, monkeypatch):
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    args = helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "group_norm",
                                                "--reward.remote_url", "r.py"])
    assert args.algo.advantage.estimator == "group_norm"
    assert args.actor.policy_loss_type == "ppo"
    assert args.reward.remote_url == ["r.py"]
    assert args.actor.eps_clip_low_high == (0.2, 0.2)
    assert OPTIONS_ENV not in os.environ


def test_catalog_reward_for_a_grpo_baseline(helpers, catalog_path, capsys, monkeypatch):
    """GRPO / GSPO baselines may score with the plugin's catalog reward (scalar NDCG@K): the options are checked
    and reach the rollout actors exactly as for rank_grpo, and nothing rank_grpo-specific is switched on."""
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    args = helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "group_norm",
                                                "--rank_grpo.catalog", catalog_path, "--rank_grpo.num_ranks", "10"])
    assert args.reward.remote_url == [flags.REWARD_FILE]  # the catalog flag selects the catalog reward
    assert args.actor.policy_loss_type == "ppo" and args.actor.eps_clip_low_high == (0.2, 0.2)
    opts = RankGRPOOptions.from_json(os.environ[OPTIONS_ENV])
    assert opts.catalog == os.path.abspath(catalog_path) and opts.num_ranks == 10
    said = capsys.readouterr().err
    assert "catalog reward active (NDCG@10 per list) with OpenRLHF's estimator group_norm and policy loss ppo" in said
    assert "Rank-GRPO active" not in said and "advantage level" not in said
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    args = helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "group_norm", "--actor.policy_loss_type",
                                                "gspo", "--reward.remote_url", flags.REWARD_FILE,
                                                "--rank_grpo.catalog", catalog_path])
    assert args.actor.policy_loss_type == "gspo"
    assert RankGRPOOptions.from_json(os.environ[OPTIONS_ENV]).catalog == os.path.abspath(catalog_path)
    for extra, message in [
        (["--reward.remote_url", flags.REWARD_FILE], "catalog reward needs a catalog"),
        (["--rank_grpo.catalog", catalog_path, "--reward.remote_url", "r.py"], "only configure the plugin's catalog"),
    ]:
        with pytest.raises(SystemExit):
            helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "group_norm", *extra])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rollout.n_samples_per_prompt", "1"], "n_samples_per_prompt > 1"),
        (["--rank_grpo.reward_scheme", "exp"], "--rank_grpo.gamma > 1"),
        (["--rank_grpo.gamma", "2"], "only used by --rank_grpo.reward_scheme exp"),
        (["--actor.dual_clip", "3"], "--actor.dual_clip is not supported"),
        (["--algo.advantage.is_correction_level", "token"], "importance-sampling correction"),
        (["--actor.loss_agg_mode", "seq-mean-token-mean"], "--rank_grpo.loss_agg rank_mean"),
        (["--reward.overlong_buffer_len", "10"], "--reward.overlong_buffer_len is not supported"),
        (["--critic.model_name_or_path", "x"], "critic-free"),
        (["--train.agent_func_path", "a.py"], "agent_func_path"),
        (["--rank_grpo.num_ranks", "0"], "num_ranks must be >= 1"),
        (["--rank_grpo.advantage_level", "list"], "--rank_grpo.advantage_level: invalid choice: 'list' (choose from "
                                                  "'rank', 'sequence')"),
    ],
)
def test_bad_flags_are_clear_errors(helpers, catalog_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        helpers.run_cli(_rank(helpers, catalog_path, *extra))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_reward_and_catalog_errors(helpers, tmp_path, capsys):
    with pytest.raises(SystemExit):
        helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo"])
    assert "rank_grpo needs a reward" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo",
                                             "--rank_grpo.catalog", str(tmp_path / "nope.jsonl")])
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "A", "year": "x"}\n')
    with pytest.raises(SystemExit):
        helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo", "--rank_grpo.catalog", str(bad)])
    assert "bad.jsonl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "group_norm",
                                             "--actor.policy_loss_type", "rank_grpo", "--reward.remote_url", "r.py"])
    assert "needs --algo.advantage.estimator rank_grpo" in capsys.readouterr().err


@pytest.mark.patch_only  # with the upstream registry the version guard does not apply
def test_unsupported_version_is_one_loud_error(helpers, catalog_path, capsys, monkeypatch):
    monkeypatch.setattr(openrlhf_compat, "openrlhf_version", lambda: "0.10.1")
    with pytest.raises(SystemExit) as exc:
        helpers.run_cli(_rank(helpers, catalog_path))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "OpenRLHF 0.10.1 is installed" in err and "0.11.2" in err
    # runs that do not ask for rank_grpo are untouched on other versions
    args = helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "group_norm", "--reward.remote_url", "r.py"])
    assert args.algo.advantage.estimator == "group_norm"
    with pytest.raises(openrlhf_compat.UnsupportedOpenRLHF, match="0.10.1"):
        openrlhf_compat.require_supported()


@pytest.mark.patch_only  # the registry path uses no runtime parser patch
def test_changed_parser_is_refused(monkeypatch, catalog_path):
    import argparse

    parser = argparse.ArgumentParser()
    for flag in ("--rollout.n_samples_per_prompt", "--reward.remote_url"):
        parser.add_argument(flag)
    parser.add_argument("--algo.advantage.estimator", choices=["gae", "grpo_v2"], default="gae")
    parser.add_argument("--actor.policy_loss_type", choices=["ppo"], default="ppo")
    with pytest.raises(SystemExit):
        parser.parse_args(["--algo.advantage.estimator", "rank_grpo"])
    assert parser.parse_args([]).__dict__["algo.advantage.estimator"] == "gae"  # untouched otherwise


@pytest.mark.slow
def test_real_script_help_and_alias_error():
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    launcher = [sys.executable, "-m", "openrlhf.cli.train_ppo_ray"]
    with ThreadPoolExecutor(2) as pool:  # two independent processes, side by side on the 2 cores
        out, alias = pool.map(lambda args: subprocess.run(launcher + args, capture_output=True, text=True, env=env,
                                                          timeout=300),
                              [["--help"], ["--advantage_estimator", "rank_grpo", "--rollout.n_samples_per_prompt", "1"]])
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "rank_grpo" in text.split("--algo.advantage.estimator", 1)[1].split("\n", 1)[0]
    for flag in ("--advantage_estimator", "--rank_grpo.catalog", "--rank_grpo.num_ranks", "--rank_grpo.reward_scheme",
                 "--rank_grpo.gamma", "--rank_grpo.year_tolerance", "--rank_grpo.overflow_penalty",
                 "--rank_grpo.early_stop_penalty", "--rank_grpo.eos_bonus", "--rank_grpo.adv_scale",
                 "--rank_grpo.adv_eps", "--rank_grpo.loss_agg"):
        assert flag in text, flag
    assert "{ppo,gspo,rank_grpo}" in text
    assert alias.returncode == 2
    assert "n_samples_per_prompt > 1" in alias.stderr


def test_every_problem_is_reported_at_once(helpers, catalog_path, capsys):
    with pytest.raises(SystemExit) as exc:
        helpers.run_cli(_rank(helpers, catalog_path, "--rollout.n_samples_per_prompt", "1", "--rank_grpo.gamma", "2",
                              "--actor.dual_clip", "3"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "rank_grpo: 3 problems:" in err
    for message in ("only used by --rank_grpo.reward_scheme exp", "n_samples_per_prompt > 1",
                    "--actor.dual_clip is not supported"):
        assert message in err, message
