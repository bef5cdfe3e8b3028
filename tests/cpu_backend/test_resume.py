"""Resume after a kill, through OpenRLHF's real launcher on CPU with Rank-GRPO: a run that checkpoints every 2 steps
(`--ckpt.save_steps 2`) is killed with SIGKILL (its process group and every process it started) after step 3, and
restarted with the same command plus `--ckpt.load_enable`.

What OpenRLHF's resume gives, checked against an uninterrupted run of the same seed:
- the step counter goes on from the saved step (3, 4, 5, 6) and the data position too: the run ends after exactly
  the 4 batches the episode plan had left (a restarted data loader would train 6 more, a skipped one fewer);
- the state it resumes from is the uninterrupted run's at that step, to the bit: both step-2 checkpoints hold the
  same weights and Adam moments (training on CPU is deterministic here);
- the optimizer state continues: the final checkpoints' Adam step counts are equal;
- the plugin is active again in every process and every weight sync is verified.
What it does not give: the same rollouts after the resume. vLLM seeds its sampler once per engine start, so a
resumed run that learns samples other lists from step 3 on and ends with other weights. Here the tiny random model
earns reward 0 on these rows (all advantages 0), so the weights barely move and the final weight difference the
test prints (0 on this machine) says nothing about learning; README "Long runs" says so.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from openrlhf_compat.logs import parse_steps
from openrlhf_cpu.procs import kill_marked

from test_cpu_launcher import launcher_args  # noqa: E402  (pytest puts this folder on sys.path)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(torch.cuda.is_available(), reason="CPU backend test; GPU resume is OpenRLHF's own")]
MARK = "RANK_GRPO_TEST_RESUME_RUN"


def _kill_after(args, env, cwd, needle, timeout=900):
    """Run the launcher until its output shows ``needle``, then SIGKILL it and everything it started (as an OOM
    killer or a pre-empted node would); returns its output so far."""
    marker = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, *args], env=dict(env, **{MARK: marker}), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, t = [], time.time()
    try:
        for line in proc.stdout:
            lines.append(line)
            if needle in line or time.time() - t > timeout:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        kill_marked(MARK, marker)
        proc.wait()
    time.sleep(1)
    kill_marked(MARK, marker)
    out = "".join(lines)
    assert needle in out, out[-6000:]
    return out


def _ds_state(ckpt: Path, step: int):
    """(weights, Adam state) of the DeepSpeed checkpoint of ``step``: the model states file's ``module`` and the
    optimizer states file's base optimizer state (files this test wrote itself)."""
    d = ckpt / "_actor" / f"global_step{step}"
    model = torch.load(next(d.glob("*model_states.pt")), map_location="cpu", weights_only=False)["module"]
    optim = torch.load(next(d.glob("*optim_states.pt")), map_location="cpu", weights_only=False)
    return model, optim["optimizer_state_dict"]["base_optimizer_state"]["state"]


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_killed_run_resumes_from_its_checkpoint(run_py, base_env, tiny_model, prompt_data, tmp_path):
    def args(run):
        # 6 prompts, 2 per step: 3 steps per episode, 2 episodes
        return launcher_args(tiny_model, prompt_data, tmp_path / run / "model", "--ckpt.path",
                             str(tmp_path / run / "ckpt"), "--ckpt.save_steps", "2", "--train.num_episodes", "2",
                             "--train.seed", "7", estimator="rank_grpo")

    for run in ("whole", "killed"):
        (tmp_path / run).mkdir()
    whole = run_py(args("whole"), timeout=900, cwd=str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stdout[-6000:]
    assert [s.step for s in parse_steps(whole.stdout)] == [1, 2, 3, 4, 5, 6]

    killed = _kill_after(args("killed"), base_env, str(tmp_path / "killed"), "Global step 3:")
    assert (tmp_path / "killed" / "ckpt" / "_actor" / "global_step2").is_dir(), killed[-3000:]
    t = time.time()
    resumed = run_py(args("killed") + ["--ckpt.load_enable"], timeout=900, cwd=str(tmp_path / "killed"))
    log = resumed.stdout
    assert resumed.returncode == 0, log[-6000:]
    # step counter and data position: the 4 batches the plan had left, numbered on from the checkpoint
    assert [s.step for s in parse_steps(log)] == [3, 4, 5, 6], log[-4000:]
    assert "[rank_grpo_plugin] Rank-GRPO active" in log and "weight sync #1 verified" in log
    # the state it resumed from is the uninterrupted run's at step 2, to the bit
    w_whole, adam_whole = _ds_state(tmp_path / "whole" / "ckpt", 2)
    w_killed, adam_killed = _ds_state(tmp_path / "killed" / "ckpt", 2)
    assert _same(w_whole, w_killed) and _same(adam_whole, adam_killed)
    # the optimizer state went on: the same number of Adam steps at the end
    _, end_whole = _ds_state(tmp_path / "whole" / "ckpt", 6)
    _, end_resumed = _ds_state(tmp_path / "killed" / "ckpt", 6)
    steps = lambda st: sorted({int(v["step"]) for v in st.values()})  # noqa: E731
    assert steps(end_whole) == steps(end_resumed) and steps(end_whole)[0] > steps(adam_whole)[0]
    # the final weights: how far the resumed run ends from the uninterrupted one (other rollouts after the resume)
    from transformers import AutoModelForCausalLM

    load = lambda p: {k: v.float() for k, v in AutoModelForCausalLM.from_pretrained(str(p)).state_dict().items()}  # noqa: E731
    start, a, b = load(tiny_model), load(tmp_path / "whole" / "model"), load(tmp_path / "killed" / "model")
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    apart = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"resume: resumed run {time.time() - t:.0f}s; final weights: max |uninterrupted - resumed| {apart:.3g}, "
          f"max |uninterrupted - start| {moved:.3g}")
    assert all(torch.isfinite(v).all() for v in b.values()) and moved > 0
