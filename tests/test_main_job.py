"""examples/cpu/main_job.sh end to end in a short form (a small synth task, 1 SFT epoch, 2 Rank-GRPO steps, 2 sampled
lists per conversation): tiny model, rank-grpo synth + prepare, deepspeed --module openrlhf.cli.train_sft,
python -m openrlhf.cli.train_ppo_ray with rank_grpo, rank-grpo evaluate (greedy and sampled) on the held-out test
rows and the report -- reached through four interruptions (one per phase) and reruns with the same --out. A few
minutes on 2 idle cores (DeepSpeed ops compiled and cached)."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from openrlhf_compat.logs import rank_series, read_steps

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "cpu" / "main_job.sh"


MARK = "RANK_GRPO_MAIN_JOB_RUN"


def _marked(marker):
    """pids of the processes whose environment holds the job's marker (the job's own processes)."""
    pids, needle = [], f"{MARK}={marker}".encode()
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and needle in (d / "environ").read_bytes().split(b"\0"):
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def _sigint_default() -> None:
    # As in a terminal. When pytest itself was started in the background by a shell without job control, SIGINT
    # arrives ignored, and bash can never trap a signal that was ignored when it started.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _job(out, env, marker):
    return subprocess.Popen(["bash", str(SCRIPT), "--steps", "2", "--sft-epochs", "1", "--eval-samples", "2",
                             "--out", str(out)], cwd=out.parent, env=dict(env, **{MARK: marker}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_sigint_default)


def _interrupt(proc, needle, sig, to_group, delay, marker):
    """Read the console until ``needle``, wait ``delay`` s, send ``sig`` (to the job's process group, as Ctrl-C in a
    terminal does, or to the script alone, as `kill` does); returns (console, exit code, seconds to exit, how many
    of the job's processes were running when the signal went)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            break
    else:
        pytest.fail(f"the job ended before {needle!r}:\n" + "".join(lines)[-4000:])
    time.sleep(delay)
    running = len(_marked(marker))
    assert running, "no process of the job was running when it was interrupted"
    t = time.time()
    os.killpg(proc.pid, sig) if to_group else os.kill(proc.pid, sig)
    try:
        rest, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"main_job.sh did not stop within 60 s of {sig!r}")
    return "".join(lines) + rest, proc.returncode, time.time() - t, running


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU main job; GPU machines use examples/gpu")
def test_main_job_short_interrupted_in_every_phase_then_resumed(tmp_path):
    """The short job is interrupted in each phase -- the model build and the SFT by SIGINT to its process group
    (Ctrl-C), the RL run and an evaluation by SIGTERM to the script -- and rerun with the same --out after each: it
    stops within seconds naming the phase, leaves no process of the job behind, keeps the finished phases (a rerun
    skips them) and never a mark on the interrupted one; the last rerun completes the job. The RL run is stopped
    20 s into the launcher's start-up, when Ray's daemons and workers, the model actors and the vLLM engine are
    starting (the most processes, some not yet children of anything the script started), rather than after a
    training step: the stop is the same kill by marker, and the run saves a second launcher start."""
    out = tmp_path / "job"
    out.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK_GRPO_PLUGIN_DISABLE", "RANK_GRPO_PLUGIN_CPU_FAULT", "RAY_ADDRESS", "DRY_RUN", MARK)}
    env["SYNTH_ARGS"] = "--train-rows 48 --val-rows 4 --test-rows 8 --seed 1"
    stops, consoles = [], []
    for i, (needle, sig, to_group, delay, phase, marked, kept_line, least) in enumerate([
            ("(a) model: tiny", signal.SIGINT, True, 1.0, "model", [], None, 1),
            ("(c) SFT:", signal.SIGINT, True, 4.0, "sft", ["model", "synth", "prepare"], None, 1),
            ("Rank-GRPO active", signal.SIGTERM, False, 20.0, "rl", ["model", "synth", "prepare", "sft"], None, 8),
            ("SFT evaluated", signal.SIGTERM, False, 0.5, "eval_rank_grpo", ["sft", "rl", "eval_sft_sampled"],
             "sft", 1)]):
        marker = f"test_main_job_{os.getpid()}_{i}"
        console, rc, secs, running = _interrupt(_job(out, env, marker), needle, sig, to_group, delay, marker)
        consoles.append(console)
        name = "INT" if sig == signal.SIGINT else "TERM"
        assert rc == (130 if sig == signal.SIGINT else 143), console[-3000:]
        assert f"stopped by SIG{name} in phase '{phase}'" in console, console[-3000:]
        assert secs < 15, f"{secs:.1f} s from SIG{name} to exit"
        assert running >= least, f"only {running} processes of the job were running at SIG{name} in '{phase}'"
        time.sleep(1)
        assert not _marked(marker), f"processes of the job survived SIG{name}: {_marked(marker)}"
        marks = {p.name for p in (out / ".phases").iterdir()} if (out / ".phases").exists() else set()
        assert phase not in marks and set(marked) <= marks, (phase, marks)
        if kept_line:  # the rerun went on from the phases an earlier run finished (run 3 redid the SFT run 2 cut)
            assert f"{kept_line}: finished in an earlier run, kept" in console, console
        stops.append(f"{phase}: SIG{name} with {running} processes running -> exit in {secs:.1f}s")
    print("\n".join(stops))

    proc = _job(out, env, f"test_main_job_{os.getpid()}_final")
    try:
        log, _ = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail("main_job.sh timed out\n" + log[-6000:])
    assert proc.returncode == 0, log[-6000:]
    assert "sft: finished in an earlier run, kept" in log and "rl: finished in an earlier run, kept" in log, log
    assert "rl step 2/2" in consoles[-1]  # the run interrupted in evaluation had finished the RL phase
    # every command of commands.sh reruns as written: the launch environment is recorded with them
    commands = (out / "logs" / "commands.sh").read_text()
    assert "export VLLM_CPU_KVCACHE_SPACE=" in commands and "export HF_HUB_OFFLINE=1" in commands

    # (b) the synth task and the datasets from rank-grpo prepare
    assert len((out / "task" / "train.jsonl").read_text().splitlines()) == 48
    rl_rows = [json.loads(line) for line in (out / "data" / "rl.jsonl").read_text().splitlines()]
    assert len(rl_rows) == 48 and "groundtruth" in json.loads(rl_rows[0]["label"])
    # (c) SFT through the deepspeed launcher wrote a checkpoint; (d) two verified Rank-GRPO steps
    assert (out / "sft" / "config.json").is_file()
    rl_log = (out / "rank_grpo" / "train.log").read_text()
    assert "[rank_grpo_plugin] Rank-GRPO active" in rl_log
    assert len(re.findall(r"weight sync #\d+ verified", rl_log)) == 2
    steps = read_steps(out / "rank_grpo" / "train.log")
    assert [s.step for s in steps] == [1, 2]
    for s in steps:
        assert len(rank_series(s, "reward")) == 20 and len(rank_series(s, "hit")) == 20
        assert all(math.isfinite(v) for v in s.values())
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out / "rank_grpo" / "model"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # (e) greedy and sampled evaluations on the 8 held-out test rows, and the summary
    for name, rows in (("eval_sft", 8), ("eval_rank_grpo", 8), ("eval_sft_sampled", 16),
                       ("eval_rank_grpo_sampled", 16)):
        res = json.loads((out / name / "metrics.json").read_text())
        assert res["config"]["data"].endswith("task/test.jsonl")
        assert res["summary"]["rows"] == rows and math.isfinite(res["summary"]["metrics"]["rank/ndcg@20"])
        assert ("samples" in res) == ("sampled" in name)
    assert (out / "report" / "per_rank.png").is_file()
    # the console: one line per phase and step, the launcher's own output only in the log files
    assert "Global step" not in log and len(log.splitlines()) < 80, log
    for needle in ("main job summary", "Rank-GRPO step 1 (first)", "Rank-GRPO step 2 (last)",
                   "held-out NDCG@20 (rank-aligned, sampled): SFT", "held-out lists (sampled): SFT",
                   "per-rank plot:"):
        assert needle in log, (needle, log)
    assert re.search(r"wall time \(s\): .* total \d+", log)
    # nothing outside the repository and the output folder was read
    assert str(ROOT.parent / "shared") not in (out / "logs" / "commands.sh").read_text()
