"""A killed SFT run resumes from its checkpoint: ``recipes.SFTRecipe(save_steps=..., resume=True)`` through the
deepspeed launcher and OpenRLHF's real ``train_sft`` on CPU (the command ``benchmarks/learning.py`` runs for a start
whose epoch outlasts a working session). The run checkpoints every 2 optimizer steps, is killed with SIGKILL (its
process group and everything it started) once the step-4 checkpoint is written, and is started again with the same
command.

Against numbers worked out from the plan (24 rows, 4 per optimizer step in micro-batches of 2, one epoch: 6 steps):
- the restart loads the step-4 checkpoint with its data position, 16 rows consumed;
- it trains the 2 steps the plan had left and ends at step 6 (a data loader restarted from row 0 would end at
  step 10; a run that ignored the checkpoint would write the step-2 checkpoint again);
- Adam's step count is 4 in the step-4 checkpoint and 6 in the last (a resume that reloaded the weights but not the
  optimizer would end at 2);
- the final HF checkpoint is written and finite.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import torch

from openrlhf_cpu.procs import kill_marked
from rank_grpo_plugin.recipes import SFTRecipe, sft_command

# pytest puts this folder on sys.path
from test_resume import adam_steps  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(torch.cuda.is_available(), reason="CPU backend test; GPU resume is OpenRLHF's own")]
MARK = "RANK_GRPO_TEST_SFT_RESUME_RUN"


def _rows(n: int):
    """``n`` SFT rows in ``rank-grpo prepare --sft``'s format: a user turn and a short list answer."""
    for i in range(n):
        yield {"input": [{"role": "user", "content": f"Conversation {i}: I liked Film {i} (1999). Recommend films."}],
               "output": [{"role": "assistant", "content": "\n".join(f"Film {i + j} ({1990 + j})" for j in range(5))}]}


def _run(cmd, env, log: Path, kill_when=None, timeout=600):
    """Run ``cmd`` with its output in ``log``; with ``kill_when`` (a predicate polled every 0.5 s) SIGKILL it and
    everything it started as soon as the predicate holds. Returns (exit code or None when killed, output)."""
    marker = uuid.uuid4().hex
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env={**env, MARK: marker}, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        t, rc = time.time(), None
        try:
            while time.time() - t < timeout:
                rc = proc.poll()
                if rc is not None or (kill_when and kill_when()):
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            kill_marked(MARK, marker)
    return rc, log.read_text(errors="replace")


def test_killed_sft_resumes_from_its_checkpoint(base_env, tiny_model, tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(24)), encoding="utf-8")
    ckpt = tmp_path / "ckpt"
    recipe = SFTRecipe(model=str(tiny_model), data=str(data), out=str(tmp_path / "sft"), ckpt=str(ckpt), epochs=1,
                       batch=4, micro_batch=2, lr=1e-3, max_len=256, save_steps=2, resume=True)
    cmd = sft_command(recipe)
    env = {**base_env, "OMP_NUM_THREADS": "1"}

    def step4_written() -> bool:  # DeepSpeed writes `latest` after the checkpoint's files
        latest = ckpt / "latest"
        return latest.is_file() and latest.read_text().strip() == "global_step4"

    rc, first = _run(cmd, env, tmp_path / "first.log", kill_when=step4_written)
    assert rc is None and step4_written(), f"exit {rc} before the step-4 checkpoint:\n{first[-4000:]}"
    assert not (tmp_path / "sft" / "config.json").exists()
    assert adam_steps(ckpt / "global_step4") == [4]
    step2 = (ckpt / "global_step2").stat().st_mtime_ns

    rc, second = _run(cmd, env, tmp_path / "second.log")
    assert rc == 0, second[-4000:]
    assert f"Loaded the checkpoint: {ckpt}, consumed_samples: 16" in second, second[-4000:]
    assert (ckpt / "latest").read_text().strip() == "global_step6"
    assert not (ckpt / "global_step8").exists() and not (ckpt / "global_step10").exists()
    assert (ckpt / "global_step2").stat().st_mtime_ns == step2  # steps 1-2 were not trained again
    assert adam_steps(ckpt / "global_step6") == [6]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "sft"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
