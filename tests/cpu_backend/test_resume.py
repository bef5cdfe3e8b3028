"""Resume after a kill, through OpenRLHF's real launcher on CPU with Rank-GRPO: a run that checkpoints every 2 steps
(`--ckpt.save_steps 2`) is killed with SIGKILL (its process group and every process it started) after step 3, and
restarted with the same command plus `--ckpt.load_enable`. The kill point is exact: a ``sitecustomize`` in the
first run's environment stops the trainer (SIGSTOP) once it has logged step 3, before step 4 can start. It is also
the suite's Rank-GRPO launcher run: both halves pass `test_cpu_launcher.check_rank_grpo_run` (K = 10, the legacy
estimator flag, per-rank metrics, TensorBoard).

What OpenRLHF's resume gives, against numbers worked out from the episode plan (6 prompts, 2 per step, 8 samples per
step = one optimizer step per global step, 2 episodes: 6 steps):
- it loads the step-2 checkpoint, and the step counter goes on from it (3, 4, 5, 6) and the data position too: the
  run ends after exactly the 4 batches the plan had left (a restarted data loader would train 6 more, a skipped one
  fewer);
- the optimizer state continues: Adam's step count is 2 in the step-2 checkpoint and 6 in the last one (a resume
  that reloaded the weights but not the optimizer would end at 4);
- the plugin is active again in every process; the loaded weights reach the vLLM engine before the first rollout
  and every weight sync is verified.
What it does not give: the same rollouts after the resume. vLLM seeds its sampler once per engine start, so a
resumed run that learns samples other lists from step 3 on than an uninterrupted one. Here the tiny random model
earns reward 0 on these rows (all advantages 0), so the weights barely move, and a comparison of final weights would
say nothing about learning; README "Long runs" says so.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

# pytest puts this folder on sys.path
from test_cpu_launcher import check_rank_grpo_run, check_steps, rank_grpo_args  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(torch.cuda.is_available(), reason="CPU backend test; GPU resume is OpenRLHF's own")]


# The first run's PPO trainer (a Ray actor) stops itself as soon as it has logged step 3. The hook is a handler on
# the trainer module's logger, after OpenRLHF's own. (A patched trainer method would not do: the class `@ray.remote`
# builds holds its own copy of every method, inherited ones too, made when the driver imports the module.)
STOP_AFTER_STEP3 = """
import logging
from rank_grpo_plugin.hooks import when_imported

class _StopAfterStep3(logging.Handler):
    def emit(self, record):
        if "Global step 3:" in record.getMessage():
            stop_here("after step 3")

when_imported("openrlhf.trainer.ppo_trainer", lambda trainer: trainer.logger.addHandler(_StopAfterStep3()))
"""


def adam_steps(step_dir: Path):
    """Adam's step counts in one DeepSpeed checkpoint folder (``.../global_stepN``): its optimizer states file's base
    optimizer state (a file the calling test's run wrote itself). Also test_sft_resume's."""
    optim = torch.load(next(step_dir.glob("*optim_states.pt")), map_location="cpu", weights_only=False)
    return sorted({int(v["step"]) for v in optim["optimizer_state_dict"]["base_optimizer_state"]["state"].values()})


def test_killed_run_resumes_from_its_checkpoint(run_py, sitecustomize, tiny_model, prompt_data, tmp_path):
    # 6 prompts, 2 per step: 3 steps per episode, 2 episodes
    tb = tmp_path / "tb"
    args = rank_grpo_args(tiny_model, prompt_data, tmp_path / "model", tb, "--ckpt.path", str(tmp_path / "ckpt"),
                          "--ckpt.save_steps", "2", "--train.num_episodes", "2", "--train.seed", "7")
    run = run_py(args, timeout=900, cwd=str(tmp_path), env=sitecustomize(STOP_AFTER_STEP3),
                 kill_when=lambda out: "TEST FAULT" in out)
    killed = run.stdout
    assert run.returncode is None and "stops after step 3" in killed and "Global step 3:" in killed, killed[-6000:]
    check_rank_grpo_run(killed, check_steps(killed, 1, 3, syncs=[1, 2, 3]), tb)
    assert (tmp_path / "ckpt" / "_actor" / "global_step2").is_dir(), killed[-3000:]
    adam_at_2 = adam_steps(tmp_path / "ckpt" / "_actor" / "global_step2")
    t = time.time()
    resumed = run_py(args + ["--ckpt.load_enable"], timeout=900, cwd=str(tmp_path))
    log = resumed.stdout
    assert resumed.returncode == 0, log[-6000:]
    assert "Loading the checkpoint: " + str(tmp_path / "ckpt" / "_actor") in log, log[-4000:]
    # step counter and data position: the 4 batches the plan had left, numbered on from the checkpoint
    # the loaded weights reach the engine before the first rollout (sync #1), then one sync per step
    check_rank_grpo_run(log, check_steps(log, 3, 6, syncs=range(1, 6)), tb)
    assert log.index("weight sync #1 verified") < log.index("Global step 3:")
    # the optimizer state went on: one Adam step per global step, 2 before the kill and 6 at the end
    adam_at_6 = adam_steps(tmp_path / "ckpt" / "_actor" / "global_step6")
    assert adam_at_2 == [2] and adam_at_6 == [6]
    # the resumed run's model: finite, and it moved away from the start
    from transformers import AutoModelForCausalLM

    load = lambda p: {k: v.float() for k, v in AutoModelForCausalLM.from_pretrained(str(p)).state_dict().items()}  # noqa: E731
    start, end = load(tiny_model), load(tmp_path / "model")
    moved = max((end[k] - start[k]).abs().max().item() for k in end)
    print(f"resume: resumed run {time.time() - t:.0f}s; max |final - start| {moved:.3g}")
    assert all(torch.isfinite(v).all() for v in end.values()) and moved > 0
