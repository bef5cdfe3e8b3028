"""The launch recipe (rank_grpo_plugin/recipes.py) and `rank-grpo recipe`: episodes arithmetic worked by hand, the
command lines per algorithm, the environment, errors. That OpenRLHF's real parser accepts every recipe command and
that the benchmark's arms differ only in their names: tests/test_example_scripts.py."""
from __future__ import annotations

import json
import shlex

import pytest

from rank_grpo_plugin.cli import main as cli_main
from rank_grpo_plugin.recipes import (ENVIRONMENT, LAUNCH_FILE, RLRecipe, SFTRecipe, episodes, launch_environment,
                                      resume_guard, rl_command, sft_command)


@pytest.mark.parametrize("steps,rows,pps,expected", [
    (30, 512, 4, (1, 120)),     # fits in one episode: 30 steps x 4 prompts
    (128, 512, 4, (1, 512)),    # exactly the whole dataset
    (200, 512, 4, (2, 400)),    # 2 episodes of 100 steps (128 fit in one)
    (150, 512, 4, (2, 300)),
    (129, 512, 4, (2, 260)),    # 129 over 2 episodes: 2 x 65 = 130, one step more than asked
    (8, 100, 4, (1, 32)),
    (60, 10, 4, (30, 8)),       # a 10-row dataset holds 2 steps of 4 prompts: 30 episodes
])
def test_episodes_by_hand(steps, rows, pps, expected):
    n_ep, max_samples = episodes(steps, rows, pps)
    assert (n_ep, max_samples) == expected
    assert n_ep * max_samples // pps >= steps and max_samples <= rows


def test_episodes_errors():
    with pytest.raises(ValueError, match="fewer than the 4 prompts"):
        episodes(10, 3, 4)
    with pytest.raises(ValueError, match="must be >= 1"):
        episodes(0, 100, 4)


def _flag(cmd, name, n=1):
    i = cmd.index(name)
    return cmd[i + 1:i + 1 + n] if n > 1 else cmd[i + 1]


def test_rl_command_per_algorithm(tmp_path):
    prompts = tmp_path / "rl.jsonl"
    prompts.write_text("{}\n" * 64 + "\n")  # blank lines are not rows
    base = RLRecipe(model="m", prompts=str(prompts), catalog="c.jsonl", out=str(tmp_path / "run"), steps=20)
    rank = rl_command(base)
    assert _flag(rank, "--algo.advantage.estimator") == "rank_grpo"
    assert _flag(rank, "--rank_grpo.advantage_level") == "rank"
    assert _flag(rank, "--actor.eps_clip_low_high", 2) == ["0.06", "0.08"]
    assert (_flag(rank, "--train.num_episodes"), _flag(rank, "--data.max_samples")) == ("2", "40")  # 16 rows/step-ep
    assert _flag(rank, "--ckpt.output_dir") == str(tmp_path / "run" / "model")
    assert "--algo.kl.use_loss" in rank and _flag(rank, "--algo.kl.init_coef") == "0.001"
    assert "--reward.stop_properly_penalty_coef" not in rank  # the plugin refuses it with its estimator
    noshape = rl_command(base.replace(shaping=False, advantage_level="sequence"))
    assert [_flag(noshape, f) for f in ("--rank_grpo.overflow_penalty", "--rank_grpo.early_stop_penalty",
                                        "--rank_grpo.eos_bonus")] == ["0", "0", "0"]
    grpo = rl_command(base.replace(algorithm="grpo"))
    assert _flag(grpo, "--algo.advantage.estimator") == "group_norm" and "--actor.policy_loss_type" not in grpo
    assert _flag(grpo, "--reward.stop_properly_penalty_coef") == "0"
    gspo = rl_command(base.replace(algorithm="gspo", kl_coef=0.0, seed=4, eval_prompts="v.jsonl", extra=("--x", "1")))
    assert _flag(gspo, "--actor.policy_loss_type") == "gspo"
    assert _flag(gspo, "--actor.eps_clip_low_high", 2) == ["0.0003", "0.0004"]
    assert "--algo.kl.use_loss" not in gspo and _flag(gspo, "--algo.kl.init_coef") == "0"
    assert _flag(gspo, "--train.seed") == "4" and _flag(gspo, "--eval.dataset") == "v.jsonl"
    assert gspo[-2:] == ["--x", "1"]
    with pytest.raises(ValueError, match="Rank-GRPO settings"):
        rl_command(base.replace(algorithm="grpo", advantage_level="sequence"))
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'; valid: rank_grpo, grpo, gspo"):
        rl_command(base.replace(algorithm="ppo"))
    with pytest.raises(ValueError, match="cannot count its rows"):
        rl_command(base.replace(prompts=str(tmp_path / "missing.jsonl")))


def test_sft_command():
    cmd = sft_command(SFTRecipe(model="m", data="d.jsonl", out="runs/sft/", port=1234, epochs=2))
    assert cmd[:5] == ["deepspeed", "--master_port", "1234", "--module", "openrlhf.cli.train_sft"]
    assert _flag(cmd, "--ckpt.path") == "runs/sft_ckpt" and _flag(cmd, "--train.max_epochs") == "2"
    assert _flag(cmd, "--ckpt.save_steps") == "-1" and "--ckpt.load_enable" not in cmd  # no checkpoints by default
    cmd = sft_command(SFTRecipe(model="m", data="d.jsonl", out="o", save_steps=20, resume=True))
    assert _flag(cmd, "--ckpt.save_steps") == "20" and cmd.count("--ckpt.load_enable") == 1


def test_resume_guard(tmp_path):
    ckpt = tmp_path / "ckpt"
    cmd = sft_command(SFTRecipe(model="m", data="d.jsonl", out="o", port=1111, save_steps=20, resume=True))
    resume_guard(str(ckpt), cmd)  # no checkpoints yet: records the command
    assert json.loads((ckpt / LAUNCH_FILE).read_text()) == {"command": cmd}
    other = sft_command(SFTRecipe(model="m", data="d.jsonl", out="o", port=2222, save_steps=20, resume=True,
                                  lr=1e-4, micro_batch=2))
    resume_guard(str(ckpt), other)  # still no checkpoints: a new start, the new command recorded
    assert json.loads((ckpt / LAUNCH_FILE).read_text()) == {"command": other}
    (ckpt / "latest").write_text("global_step20")
    resume_guard(str(ckpt), [*other[:2], "3333", *other[3:]])  # the same command on another port resumes
    with pytest.raises(RuntimeError) as e:
        resume_guard(str(ckpt), cmd)
    msg = str(e.value)
    assert msg.startswith(f"{ckpt} holds checkpoints of another command, so they are not resumed")
    assert msg.endswith("what differs: --adam.lr: 0.0001 -> 0.003; --train.micro_batch_size: 2 -> 8")
    with pytest.raises(RuntimeError, match=r"--ckpt.load_enable: \(set\) -> \(absent\)"):
        resume_guard(str(ckpt), [t for t in other if t != "--ckpt.load_enable"])
    assert json.loads((ckpt / LAUNCH_FILE).read_text()) == {"command": other}  # a refusal changes nothing
    (ckpt / LAUNCH_FILE).write_text("{not json")
    with pytest.raises(RuntimeError, match="rank_grpo_launch.json: not a launch record"):
        resume_guard(str(ckpt), other)
    (ckpt / LAUNCH_FILE).unlink()
    with pytest.raises(RuntimeError, match="holds checkpoints but not rank_grpo_launch.json: the command that "
                                           "wrote them is unknown"):
        resume_guard(str(ckpt), other)
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest"]
    rl = tmp_path / "rl_ckpt"  # an RL run's checkpoints: the actor's in ckpt/_actor
    (tmp_path / "rl.jsonl").write_text("{}\n" * 8)
    base = RLRecipe(model="m", prompts=str(tmp_path / "rl.jsonl"), catalog="c.jsonl", out="o", save_steps=2,
                    resume=True)
    resume_guard(str(rl), rl_command(base))
    (rl / "_actor").mkdir()
    (rl / "_actor" / "latest").write_text("global_step2")
    resume_guard(str(rl), rl_command(base))
    with pytest.raises(RuntimeError, match=r"--actor.adam.lr: 0.0003 -> 0.0001$"):
        resume_guard(str(rl), rl_command(base.replace(lr=1e-4)))


def test_launch_environment_keeps_values_already_set():
    env = launch_environment({"VLLM_CPU_KVCACHE_SPACE": "4", "OTHER": "x"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4" and "OTHER" not in env
    assert set(env) == set(ENVIRONMENT) and env["HF_HUB_OFFLINE"] == "1"


def test_cli_recipe_prints_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert cli_main(["recipe", "env"]) == 0
    assert "export VLLM_CPU_KVCACHE_SPACE=2\n" in capsys.readouterr().out
    argv = ["recipe", "rl", "--model", "m", "--prompts", "p.jsonl", "--rows", "100", "--catalog", "c",
            "--out", str(tmp_path), "--algorithm", "gspo", "--steps", "10", "--shaping", "true"]
    assert cli_main(argv + ["--", "--rollout.max_new_tokens", "99"]) == 0
    cmd = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    assert _flag(cmd, "--actor.policy_loss_type") == "gspo" and cmd[-2:] == ["--rollout.max_new_tokens", "99"]
    assert cli_main(argv + ["--null"]) == 0
    assert capsys.readouterr().out.split("\0")[:-1] == rl_command(RLRecipe(
        model="m", prompts="p.jsonl", catalog="c", out=str(tmp_path), algorithm="gspo", steps=10), rows=100)


@pytest.mark.parametrize("argv,message", [
    (["--advantage-level", "seq"], "--advantage-level 'seq': valid: rank, sequence"),
    (["--algorithm", "grpo", "--shaping", "false"], "Rank-GRPO settings"),
    (["--prompts", "nowhere.jsonl"], "prompts nowhere.jsonl: cannot count its rows"),
])
def test_cli_recipe_errors(tmp_path, capsys, argv, message):
    base = ["recipe", "rl", "--model", "m", "--prompts", "p.jsonl", "--rows", "100", "--catalog", "c", "--out", "o"]
    if "--prompts" in argv:
        base = base[:4] + base[8:]  # no --prompts / --rows of the base: the case's own --prompts is counted
    assert cli_main(base + argv) == 2
    assert message in capsys.readouterr().err
