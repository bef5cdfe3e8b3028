"""A killed SFT run resumes from its checkpoint: ``recipes.SFTRecipe(save_steps=..., resume=True)`` through the
deepspeed launcher and OpenRLHF's real ``train_sft`` on CPU (the command ``benchmarks/learning.py`` runs for a start
whose epoch outlasts a working session). The run checkpoints every 2 optimizer steps, is killed with SIGKILL (its
process group and everything it started) once the step-4 checkpoint is written, and is started again with the same
command. The kill point is exact, not a race against a run of about a second: a ``sitecustomize`` in the first
run's environment stops its rank (SIGSTOP) as DeepSpeed's ``save_checkpoint`` returns from writing step 4, and the
test then kills everything, as the OOM killer would.

Against numbers worked out from the plan (24 rows, 4 per optimizer step in micro-batches of 2, one epoch: 6 steps):
- the restart loads the step-4 checkpoint with its data position, 16 rows consumed;
- it trains the 2 steps the plan had left and ends at step 6 (a data loader restarted from row 0 would end at
  step 10; a run that ignored the checkpoint would write the step-2 checkpoint again);
- Adam's step count is 4 in the step-4 checkpoint and 6 in the last (a resume that reloaded the weights but not the
  optimizer would end at 2);
- the final HF checkpoint is written and finite;
- ``recipes.resume_guard`` (called before each launch, as ``benchmarks/learning.py`` does) sees the checkpoints
  DeepSpeed wrote, refuses them to the same command with another learning rate and lets the same command resume.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from rank_grpo_plugin.recipes import LAUNCH_FILE, SFTRecipe, resume_guard, sft_command

# pytest puts this folder on sys.path
from test_resume import adam_steps  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(torch.cuda.is_available(), reason="CPU backend test; GPU resume is OpenRLHF's own")]


# The first run's rank stops itself once DeepSpeed has written the step-4 checkpoint (`latest` is its last file).
STOP_AFTER_STEP4 = """
import os
from rank_grpo_plugin.hooks import when_imported

def _stop_after_step4(engine):
    save = engine.DeepSpeedEngine.save_checkpoint

    def save_checkpoint(self, save_dir, *args, **kwargs):
        out = save(self, save_dir, *args, **kwargs)
        latest = os.path.join(save_dir, "latest")
        if os.path.isfile(latest) and open(latest).read().strip() == "global_step4":
            stop_here("after the step-4 checkpoint")
        return out

    engine.DeepSpeedEngine.save_checkpoint = save_checkpoint

when_imported("deepspeed.runtime.engine", _stop_after_step4)
"""


def _rows(n: int):
    """``n`` SFT rows in ``rank-grpo prepare --sft``'s format: a user turn and a short list answer."""
    for i in range(n):
        yield {"input": [{"role": "user", "content": f"Conversation {i}: I liked Film {i} (1999). Recommend films."}],
               "output": [{"role": "assistant", "content": "\n".join(f"Film {i + j} ({1990 + j})" for j in range(5))}]}


def test_killed_sft_resumes_from_its_checkpoint(run_cmd, sitecustomize, tiny_model, tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(24)), encoding="utf-8")
    ckpt = tmp_path / "ckpt"
    recipe = SFTRecipe(model=str(tiny_model), data=str(data), out=str(tmp_path / "sft"), ckpt=str(ckpt), epochs=1,
                       batch=4, micro_batch=2, lr=1e-3, max_len=256, save_steps=2, resume=True)
    cmd = sft_command(recipe)
    resume_guard(str(ckpt), cmd)  # what benchmarks/learning.py does before every launch that resumes

    def step4_written() -> bool:  # DeepSpeed writes `latest` after the checkpoint's files
        latest = ckpt / "latest"
        return latest.is_file() and latest.read_text().strip() == "global_step4"

    stop = sitecustomize(STOP_AFTER_STEP4)
    res = run_cmd(cmd, env={"OMP_NUM_THREADS": "1", **stop}, log=tmp_path / "first.log",
                  kill_when=lambda out: "TEST FAULT" in out)
    rc, first = res.returncode, res.stdout
    assert rc is None and "stops after the step-4 checkpoint" in first, f"exit {rc}:\n{first[-4000:]}"
    assert step4_written()
    assert not (tmp_path / "sft" / "config.json").exists()
    assert adam_steps(ckpt / "global_step4") == [4]
    step2 = (ckpt / "global_step2").stat().st_mtime_ns
    # DeepSpeed's `latest` marks the folder as holding checkpoints: the guard now checks, and lets only `cmd` resume
    with pytest.raises(RuntimeError, match=r"holds checkpoints of another command.*--adam.lr: 0.001 -> 0.002$"):
        resume_guard(str(ckpt), sft_command(dataclasses.replace(recipe, lr=2e-3)))
    resume_guard(str(ckpt), cmd)

    res = run_cmd(cmd, env={"OMP_NUM_THREADS": "1"}, log=tmp_path / "second.log")
    second = res.stdout
    assert res.returncode == 0, second[-4000:]
    assert f"Loaded the checkpoint: {ckpt}, consumed_samples: 16" in second, second[-4000:]
    assert (ckpt / "latest").read_text().strip() == "global_step6"
    assert json.loads((ckpt / LAUNCH_FILE).read_text()) == {"command": cmd}  # kept beside the checkpoints
    assert not (ckpt / "global_step8").exists() and not (ckpt / "global_step10").exists()
    assert (ckpt / "global_step2").stat().st_mtime_ns == step2  # steps 1-2 were not trained again
    assert adam_steps(ckpt / "global_step6") == [6]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "sft"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
