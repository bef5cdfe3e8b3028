"""Every example script that launches OpenRLHF (train_ppo_ray or train_sft) passes only flags that OpenRLHF 0.11.2's
REAL launcher parsers accept (plus the plugin's --rank_grpo.* flags), and the GPU scripts carry the paper's settings.

How: each script runs with DRY_RUN=1 (it prints its commands, shell-quoted, as "+ ..." lines on stderr and runs
nothing heavy); every command that names ``openrlhf.cli.train_ppo_ray`` / ``openrlhf.cli.train_sft`` (after
``python -m``, ``python3 -m``, ``deepspeed --module`` or ``ray job submit -- python3 -m``) is then given to the
``if __name__ == "__main__":`` block of that installed OpenRLHF module, executed from its source with ``train``
replaced by a stub: the real parser (with the plugin's argparse hook, exactly as at launch) and OpenRLHF's own
argument checks run; nothing trains. That happens in one subprocess, so the plugin's process-wide hooks never touch
the pytest process. An unknown flag makes argparse exit 2 and the test fails with its message.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rank_grpo_plugin.resources import REDDIT_V2

pytestmark = pytest.mark.slow  # dry-runs the scripts and OpenRLHF's parsers in subprocesses

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LAUNCHERS = ("openrlhf.cli.train_ppo_ray", "openrlhf.cli.train_sft")

# How to dry-run each launching script: a list of (case name, extra environment, extra argv).
_GPU_ENV = {"DATA": str(REDDIT_V2 / "sample.jsonl"), "CATALOG": str(REDDIT_V2 / "catalog.jsonl"), "NGPU": "8"}
CASES = {
    "cpu/main_job.sh": [("tiny", {}, []), ("smollm2-20", {}, ["--model", "smollm2", "--steps", "20"]),
                        ("reddit", {}, ["--task", "reddit"]),
                        ("extra", {}, ["--steps", "2", "--sft-epochs", "1", "--",
                                       "--rank_grpo.reward_scheme", "log"])],
    "cpu/train_grpo_cpu.sh": [("group_norm", {}, []), ("rank_grpo", {"ESTIMATOR": "rank_grpo"}, [])],
    "stage1_then_sft.sh": [("cpu", {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "RANK_GRPO_TEACHER_MODEL": "t"}, [])],
    "gpu/sft_paper.sh": [("sft", dict(_GPU_ENV, MODEL="Qwen/Qwen2.5-0.5B-Instruct", OUT="runs/q"), [])],
    "gpu/rank_grpo_paper.sh": [
        ("colocated", dict(_GPU_ENV, OUT="runs/q"), []),
        ("separate", dict(_GPU_ENV, OUT="runs/q", COLOCATE="0", EXTRA_ARGS="--rank_grpo.loss_agg rank_mean"), []),
    ],
    "gpu/qwen2.5_0.5b.sh": [("qwen", _GPU_ENV, [])],
    "gpu/qwen2.5_0.5b_offpolicy_mu2.sh": [("mu2", _GPU_ENV, [])],
    "gpu/llama3.2_1b.sh": [("llama1b", _GPU_ENV, [])],
    "gpu/llama3.2_3b.sh": [("llama3b", _GPU_ENV, [])],
}

# Runs the real __main__ block of an OpenRLHF CLI module with `train` stubbed; prints one JSON result per command.
_CHECKER = r'''
import argparse, ast, contextlib, importlib.util, io, json, sys, types
from pathlib import Path

import openrlhf  # noqa: F401  - wakes the plugin (argparse hook) exactly like the launcher's own imports do


def main_block(module):
    spec = importlib.util.find_spec(module)
    source = Path(spec.origin).read_text(encoding="utf-8")
    tree = ast.parse(source)
    stdlib_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                      and all((a.name if isinstance(n, ast.Import) else (n.module or "")).split(".")[0]
                              in sys.stdlib_module_names for a in n.names)]
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.get_source_segment(source, node.test):
            body = ast.Module(body=stdlib_imports + node.body, type_ignores=[])
            return compile(body, spec.origin, "exec")
    raise SystemExit(f"no __main__ block in {spec.origin}")


def flatten(ns, prefix=""):
    out = {}
    for k, v in vars(ns).items():
        if isinstance(v, (argparse.Namespace, types.SimpleNamespace)):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if isinstance(v, (int, float, str, bool, type(None))) else (
                list(v) if isinstance(v, (list, tuple)) else str(v))
    return out


codes = {}
for item in json.load(open(sys.argv[1])):
    module, argv = item["module"], item["argv"]
    code = codes.setdefault(module, main_block(module))
    captured = []
    ns = {"__name__": "__example_check__", "train": captured.append}
    err = io.StringIO()
    old = sys.argv
    sys.argv = [module.rsplit(".", 1)[-1] + ".py", *argv]
    result = {"id": item["id"]}
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            exec(code, ns)
        result.update(ok=len(captured) == 1, args=flatten(captured[0]) if captured else None)
    except SystemExit as e:
        result.update(ok=False, error=f"exit {e.code}: {err.getvalue()[-2000:]}")
    except Exception as e:  # OpenRLHF's own assertions
        result.update(ok=False, error=f"{type(e).__name__}: {e}")
    finally:
        sys.argv = old
    print("RESULT " + json.dumps(result))
'''


def launching_scripts():
    """Every shell script under examples/ that launches OpenRLHF itself or through another example script."""
    scripts = {str(p.relative_to(EXAMPLES)): p.read_text(encoding="utf-8") for p in EXAMPLES.rglob("*.sh")}
    launching = {s for s, text in scripts.items() if any(m in text for m in LAUNCHERS)}
    grew = True
    while grew:
        calls = {s for s, text in scripts.items() if any(Path(t).name in text for t in launching)}
        grew = not calls <= launching
        launching |= calls
    return sorted(launching)


def launcher_argv(cmd):
    """(module, argv) of a command line that runs an OpenRLHF CLI module, else None."""
    for module in LAUNCHERS:
        if module in cmd:
            i = cmd.index(module)
            if i >= 1 and cmd[i - 1] in ("-m", "--module"):
                return module, cmd[i + 1:]
            raise AssertionError(f"{module} launched in an unexpected way: {shlex.join(cmd)}")
    return None


def dry_run(script, env, argv, tmp):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RANK_GRPO_PLUGIN", "DRY_RUN"))}
    full.update(env, DRY_RUN="1", HOME=os.environ.get("HOME", str(tmp)))
    if script.startswith("cpu/main_job"):
        argv = ["--out", str(tmp / "main_job"), *argv]
    if script.startswith("cpu/train_grpo"):
        full["WORK"] = str(tmp / "cpu_demo")
    proc = subprocess.run(["bash", str(EXAMPLES / script), *argv], cwd=tmp, env=full, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"{script} {argv} (DRY_RUN=1) failed:\n{proc.stderr[-3000:]}"
    return [shlex.split(line[2:]) for line in proc.stderr.splitlines() if line.startswith("+ ")]


# The learning benchmark's arms (benchmarks/learning.py) as launch-recipe settings: they must differ only in what
# their names say.
RECIPE_ARMS = {
    "rank": dict(algorithm="rank_grpo", advantage_level="rank"),
    "sequence": dict(algorithm="rank_grpo", advantage_level="sequence"),
    "rank_noshape": dict(algorithm="rank_grpo", advantage_level="rank", shaping=False),
    "sequence_noshape": dict(algorithm="rank_grpo", advantage_level="sequence", shaping=False),
    "grpo": dict(algorithm="grpo"),
    "gspo": dict(algorithm="gspo"),
}


def recipe_commands(tmp):
    from rank_grpo_plugin.recipes import RLRecipe, SFTRecipe, rl_command, sft_command

    # the plugin checks at parse time that the catalog exists: the shipped one
    base = RLRecipe(model="sft", prompts="rl.jsonl", catalog=str(REDDIT_V2 / "catalog.jsonl"), out=str(tmp / "rl"),
                    steps=200, seed=3, eval_prompts="val.jsonl", eval_every=5)
    cmds = {arm: rl_command(base.replace(**kw), rows=512) for arm, kw in RECIPE_ARMS.items()}
    cmds["no_kl_resume"] = rl_command(base.replace(kl_coef=0.0, resume=True, save_steps=2), rows=512)
    cmds["sft"] = sft_command(SFTRecipe(model="base", data="sft.jsonl", out="sft"))
    return cmds


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    """{(script, case): [(module, argv, result), ...]} for every case of every launching script."""
    tmp = tmp_path_factory.mktemp("examples")
    items, where = [], {}
    for script, cases in CASES.items():
        for case, env, argv in cases:
            cmds = [c for c in (launcher_argv(cmd) for cmd in dry_run(script, env, argv, tmp)) if c]
            assert cmds, f"{script} ({case}): the dry run printed no OpenRLHF launcher command"
            for j, (module, args) in enumerate(cmds):
                ident = f"{script}|{case}|{j}"
                items.append({"id": ident, "module": module, "argv": args})
                where[ident] = (script, case, module, args)
    for case, cmd in recipe_commands(tmp).items():  # the launch recipe's commands (rank_grpo_plugin/recipes.py)
        module, args = launcher_argv(cmd)
        ident = f"recipe|{case}|0"
        items.append({"id": ident, "module": module, "argv": args})
        where[ident] = ("recipe", case, module, args)
    spec = tmp / "commands.json"
    spec.write_text(json.dumps(items))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANK_GRPO_PLUGIN")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, "-c", _CHECKER, str(spec)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            script, case, module, args = where[r["id"]]
            results.setdefault((script, case), []).append((module, args, r))
    assert sum(len(v) for v in results.values()) == len(items)
    return results


def test_every_launching_script_has_a_dry_run_case():
    scripts = launching_scripts()
    assert set(scripts) == set(CASES), f"scripts launching OpenRLHF {scripts} vs. dry-run cases {sorted(CASES)}"
    for must in ("cpu/main_job.sh", "cpu/train_grpo_cpu.sh", "stage1_then_sft.sh", "gpu/llama3.2_3b.sh"):
        assert must in scripts


def test_all_launcher_flags_exist_in_openrlhf_0_11_2(parsed):
    bad = [f"{s} ({c}) {m}: {r.get('error')}\n  {shlex.join(a)}"
           for (s, c), cmds in parsed.items() for m, a, r in cmds if not r["ok"]]
    assert not bad, "\n".join(bad)


def test_parser_rejects_an_unknown_flag(tmp_path):
    """The checker is not vacuous: a misspelt flag fails the real parser."""
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps([
        {"id": "typo", "module": "openrlhf.cli.train_ppo_ray",
         "argv": ["--actor.model_name_or_path", "m", "--rollout.n_samples_per_promt", "8"]},
        {"id": "sft-typo", "module": "openrlhf.cli.train_sft", "argv": ["--adam.learning_rate", "1e-5"]},
        {"id": "old-style", "module": "openrlhf.cli.train_sft", "argv": ["--learning_rate", "1e-5"]},
    ]))
    proc = subprocess.run([sys.executable, "-c", _CHECKER, str(spec)], capture_output=True, text=True, timeout=300)
    results = [json.loads(l[7:]) for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert len(results) == 3 and not any(r["ok"] for r in results)
    assert all("unrecognized arguments" in r["error"] for r in results), results


def _ppo(parsed, script, case):
    return [r["args"] for m, _, r in parsed[(script, case)] if m == "openrlhf.cli.train_ppo_ray"]


def _sft(parsed, script, case):
    return [r["args"] for m, _, r in parsed[(script, case)] if m == "openrlhf.cli.train_sft"]


PAPER_RL = {
    "algo.advantage.estimator": "rank_grpo", "actor.policy_loss_type": "rank_grpo",
    "rollout.n_samples_per_prompt": 8, "rollout.batch_size": 48, "train.batch_size": 384,
    "actor.adam.betas": [0.9, 0.99], "actor.eps_clip_low_high": [0.06, 0.08],
    "algo.kl.use_loss": True, "algo.kl.estimator": "k3", "algo.kl.init_coef": 1e-3,
    "data.max_len": 3072, "rollout.max_new_tokens": 1024, "rollout.temperature": 1.0,
    "ds.param_dtype": "bf16", "ds.zero_stage": 3, "actor.lr_scheduler": "constant", "actor.lr_warmup_ratio": 0.0,
}
PAPER_SFT = {"adam.lr": 5e-5, "lr_scheduler": "cosine", "lr_warmup_ratio": 0.05, "train.max_epochs": 10,
             "data.max_len": 1024, "ds.param_dtype": "bf16"}


def _check(args, expected):
    wrong = {k: (args.get(k), v) for k, v in expected.items() if args.get(k) != v}
    assert not wrong, f"(got, expected): {wrong}"


def test_gpu_scripts_carry_the_paper_settings(parsed):
    for script, case in [("gpu/qwen2.5_0.5b.sh", "qwen"), ("gpu/llama3.2_1b.sh", "llama1b"),
                         ("gpu/llama3.2_3b.sh", "llama3b")]:
        (sft,) = _sft(parsed, script, case)
        _check(sft, PAPER_SFT)
        rl = _ppo(parsed, script, case)
        for a in rl:
            _check(a, PAPER_RL)
            assert a["vllm.num_engines"] >= 1 and a["rank_grpo.catalog"].endswith("catalog.jsonl")
            assert a["train.max_epochs"] == 1  # on-policy: one optimizer step per rollout batch of 384
            assert a["actor.model_name_or_path"] != sft["model.model_name_or_path"]  # starts from the SFT output
        if script.startswith("gpu/qwen"):
            (a,) = rl
            assert a["actor.adam.lr"] == 1e-6 and a["train.num_episodes"] == 2
            assert a["actor.model_name_or_path"] == sft["ckpt.output_dir"]
        else:  # 1e-6, then 1e-7 after step 8000: two runs, the second from the first one's weights
            p1, p2 = rl
            assert (p1["actor.adam.lr"], p2["actor.adam.lr"]) == (1e-6, 1e-7)
            assert p1["actor.model_name_or_path"] == sft["ckpt.output_dir"]
            assert p2["actor.model_name_or_path"] == p1["ckpt.output_dir"]
            assert p1["train.num_episodes"] == p2["train.num_episodes"] == 1
            assert p1["data.prompt_dataset"].endswith("rl_phase1.jsonl")
            assert p2["data.prompt_dataset"].endswith("rl_phase2.jsonl")
    (mu2,) = _ppo(parsed, "gpu/qwen2.5_0.5b_offpolicy_mu2.sh", "mu2")
    _check(mu2, PAPER_RL)
    assert mu2["train.max_epochs"] == 2 and mu2["actor.adam.lr"] == 1e-6 and mu2["train.num_episodes"] == 2


def test_cpu_main_job_commands(parsed):
    (sft,) = _sft(parsed, "cpu/main_job.sh", "tiny")
    (rl,) = _ppo(parsed, "cpu/main_job.sh", "tiny")
    assert rl["algo.advantage.estimator"] == "rank_grpo" and rl["rank_grpo.catalog"].endswith("catalog.jsonl")
    assert rl["actor.model_name_or_path"] == sft["ckpt.output_dir"]
    assert rl["rollout.n_samples_per_prompt"] > 1
    steps = rl["train.num_episodes"] * rl["data.max_samples"] // rl["rollout.batch_size"]
    assert steps == 50  # the synth task's default
    # the rate with the best validation NDCG@20 at step 50 in the learning benchmark (docs/BENCHMARKS.md)
    assert rl["actor.adam.lr"] == 1e-4 and rl["train.max_epochs"] == 2 and rl["algo.kl.init_coef"] == 1e-3
    # the default task is generated inside the run directory, nothing is read from outside the repository
    assert rl["rank_grpo.catalog"].endswith("main_job/task/catalog.jsonl")
    assert rl["data.prompt_dataset"].endswith("main_job/data/rl.jsonl")
    (red,) = _ppo(parsed, "cpu/main_job.sh", "reddit")
    assert red["rank_grpo.catalog"].endswith("rank_grpo_plugin/resources/reddit_v2/catalog.jsonl")
    assert red["train.num_episodes"] * red["data.max_samples"] // red["rollout.batch_size"] == 8
    assert red["actor.adam.lr"] == 3e-4
    (rl20,) = _ppo(parsed, "cpu/main_job.sh", "smollm2-20")
    assert rl20["train.num_episodes"] * rl20["data.max_samples"] // rl20["rollout.batch_size"] == 20
    assert "SmolLM2-135M-Instruct" in _sft(parsed, "cpu/main_job.sh", "smollm2-20")[0]["model.model_name_or_path"]
    (extra,) = _ppo(parsed, "cpu/main_job.sh", "extra")
    assert extra["rank_grpo.reward_scheme"] == "log"
    assert extra["train.num_episodes"] * extra["data.max_samples"] // extra["rollout.batch_size"] == 2
    assert _sft(parsed, "cpu/main_job.sh", "extra")[0]["train.max_epochs"] == 1


def test_main_job_dry_run_covers_the_pipeline_and_rejects_bad_options(tmp_path):
    cmds = dry_run("cpu/main_job.sh", {}, [], tmp_path)
    text = [shlex.join(c) for c in cmds]
    order = ["rank_grpo_plugin.tiny_model", "rank-grpo synth", "rank-grpo prepare", "deepspeed",
             "openrlhf.cli.train_ppo_ray", "rank-grpo evaluate", "rank-grpo evaluate", "rank-grpo evaluate",
             "rank-grpo evaluate"]
    pos = 0
    for needle in order:
        pos = next((i for i in range(pos, len(text)) if needle in text[i]), None)
        assert pos is not None, f"{needle!r} missing or out of order in {text}"
        pos += 1
    assert any("--module openrlhf.cli.train_sft" in t for t in text)
    for argv, message in [(["--steps", "0"], "--steps must be a positive integer"),
                          (["--model", str(tmp_path)], "expected tiny, smollm2 or a Hugging Face checkpoint"),
                          (["--bogus"], "unknown option '--bogus'"), (["--out"], "--out needs a value"),
                          (["--task", "x"], "--task must be synth or reddit")]:
        proc = subprocess.run(["bash", str(EXAMPLES / "cpu" / "main_job.sh"), "--dry-run", *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, (argv, proc.stderr)


def test_split_prompt_stream(tmp_path):
    data = tmp_path / "rl.jsonl"
    data.write_text("".join(json.dumps({"input": f"p{i}", "label": "{}"}) + "\n" for i in range(10)))
    script = EXAMPLES / "gpu" / "split_prompt_stream.py"
    out1, out2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    proc = subprocess.run([sys.executable, str(script), str(data), "--epochs", "2", "--split-at", "13",
                           "--out1", str(out1), "--out2", str(out2)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    a = [json.loads(l)["input"] for l in out1.read_text().splitlines()]
    b = [json.loads(l)["input"] for l in out2.read_text().splitlines()]
    assert len(a) == 13 and len(b) == 7
    stream = a + b
    assert sorted(stream[:10]) == sorted(stream[10:]) == sorted(f"p{i}" for i in range(10))  # two full epochs
    assert stream[:10] != stream[10:]  # each epoch has its own order
    proc = subprocess.run([sys.executable, str(script), str(data), "--split-at", "20", "--out1", str(out1),
                           "--out2", str(out2)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--split-at 20" in proc.stderr


def test_recipe_commands_parse_and_arms_differ_only_in_their_names(parsed):
    args = {case: r["args"] for (script, case), cmds in parsed.items() if script == "recipe" for _, _, r in cmds}
    bad = {case: r.get("error") for (script, case), cmds in parsed.items() if script == "recipe"
           for _, _, r in cmds if not r["ok"]}
    assert not bad, bad
    rank = args["rank"]
    _check(rank, {"algo.advantage.estimator": "rank_grpo", "rank_grpo.advantage_level": "rank",
                  "actor.eps_clip_low_high": [0.06, 0.08], "train.max_epochs": 2, "algo.kl.use_loss": True,
                  "algo.kl.estimator": "k3", "algo.kl.init_coef": 1e-3, "rollout.n_samples_per_prompt": 8,
                  "rollout.batch_size": 4, "train.batch_size": 32, "train.seed": 3, "eval.steps": 5,
                  "rollout.temperature": 1.0, "rank_grpo.overflow_penalty": -0.1, "rank_grpo.eos_bonus": 0.1})
    # 200 steps of 4 prompts from 512 rows: two episodes of 100 steps
    assert (rank["train.num_episodes"], rank["data.max_samples"]) == (2, 400)

    def diff(a, b):
        return {k for k in set(args[a]) | set(args[b]) if args[a].get(k) != args[b].get(k)}

    shaping = {"rank_grpo.overflow_penalty", "rank_grpo.early_stop_penalty", "rank_grpo.eos_bonus"}
    assert diff("rank", "sequence") == {"rank_grpo.advantage_level"}
    assert diff("rank", "rank_noshape") == shaping
    assert diff("sequence", "sequence_noshape") == shaping
    assert all(args["rank_noshape"][k] == 0 for k in shaping)
    _check(args["grpo"], {"algo.advantage.estimator": "group_norm", "actor.eps_clip_low_high": [0.2, 0.2],
                          "reward.stop_properly_penalty_coef": 0.0})
    _check(args["gspo"], {"algo.advantage.estimator": "group_norm", "actor.policy_loss_type": "gspo",
                          "actor.eps_clip_low_high": [3e-4, 4e-4], "reward.stop_properly_penalty_coef": 0.0})
    # the baselines share everything else with the plugin's arms: estimator, loss, clip and reward post-processing
    # are the only differences
    algo = {"algo.advantage.estimator", "actor.policy_loss_type", "actor.eps_clip_low_high",
            "reward.stop_properly_penalty_coef", "rank_grpo.advantage_level"}
    assert diff("rank", "grpo") <= algo and diff("grpo", "gspo") <= algo
    no_kl = args["no_kl_resume"]
    assert no_kl["algo.kl.init_coef"] == 0 and not no_kl["algo.kl.use_loss"] and no_kl["ckpt.load_enable"]
    assert no_kl["ckpt.save_steps"] == 2
    (sft,) = [r["args"] for (script, case), cmds in parsed.items() if (script, case) == ("recipe", "sft")
              for _, _, r in cmds]
    _check(sft, {"train.max_epochs": 5, "adam.lr": 3e-3, "lr_scheduler": "cosine", "data.apply_chat_template": True})
