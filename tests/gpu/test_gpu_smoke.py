"""GPU smoke test: OpenRLHF 0.11.2's real launcher trains 2 Rank-GRPO steps with the tiny offline model on CUDA
(vLLM rollouts, DeepSpeed, NCCL weight sync; the plugin's CPU backend stays off), then the saved actor reloads with
transformers. Skipped (with the reason) on machines without CUDA.

    python -m pytest -q tests/gpu/test_gpu_smoke.py -s        # ~2-4 minutes on one GPU

One GPU is enough: actor, and vLLM share it (--train.colocate_all, vLLM at 25% of the memory); with more GPUs
nothing changes. Record the command, hardware and output in docs/ when you run it.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import torch

from rank_grpo_plugin.resources import REDDIT_V2

# The one resource a CPU machine lacks: a CUDA device. OpenRLHF and vLLM are part of every install.
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device (torch.cuda.is_available() is False): the GPU smoke test needs a GPU; the CPU path is "
           "covered by tests/cpu_backend")

ROOT = Path(__file__).resolve().parents[2]


def _prompts(path: Path, n: int = 4) -> None:
    subprocess.run([sys.executable, "-m", "rank_grpo_plugin.cli", "prepare", str(REDDIT_V2 / "sample.jsonl"),
                    "--limit", str(n), "--rl", str(path)], check=True, capture_output=True, text=True, timeout=120)


def _global_steps(log: str):
    """[(step, {key: float})] through the plugin's one launcher-log parser (nan/inf kept)."""
    from openrlhf_compat.logs import parse_steps

    return [(s.step, dict(s)) for s in parse_steps(log)]


@pytest.mark.slow
def test_two_rank_grpo_steps_on_cuda(tmp_path):
    from rank_grpo_plugin.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny_model", seed=0)
    data = tmp_path / "prompts.jsonl"
    _prompts(data)
    out = tmp_path / "actor"
    args = [
        sys.executable, "-m", "openrlhf.cli.train_ppo_ray",
        "--actor.model_name_or_path", model, "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "1",
        "--ref.num_nodes", "1", "--ref.num_gpus_per_node", "1",
        "--vllm.num_engines", "1", "--vllm.tensor_parallel_size", "1", "--vllm.gpu_memory_utilization", "0.25",
        "--vllm.enforce_eager", "--train.colocate_all",
        "--algo.advantage.estimator", "rank_grpo", "--rank_grpo.catalog", str(REDDIT_V2 / "catalog.jsonl"),
        "--algo.kl.use_loss", "--algo.kl.estimator", "k3", "--algo.kl.init_coef", "1e-3",
        "--rollout.n_samples_per_prompt", "4", "--rollout.batch_size", "2", "--rollout.micro_batch_size", "4",
        "--train.batch_size", "8", "--train.micro_batch_size", "4",
        "--data.prompt_dataset", str(data), "--data.input_key", "input", "--data.label_key", "label",
        "--data.apply_chat_template", "--data.max_len", "2048", "--rollout.max_new_tokens", "64",
        "--ds.zero_stage", "2", "--ds.param_dtype", "bf16", "--ds.attn_implementation", "sdpa",
        "--actor.adam.lr", "1e-4", "--ckpt.output_dir", str(out), "--ckpt.save_steps", "-1",
        "--logger.logging_steps", "1",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    for k in ("RANK_GRPO_PLUGIN_CPU", "RANK_GRPO_PLUGIN_DISABLE", "RANK_GRPO_PLUGIN_CPU_FAULT", "RAY_ADDRESS"):
        env.pop(k, None)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail("timed out after 900 s\n" + log[-6000:])
    (tmp_path / "train.log").write_text(log)
    print(f"device: {torch.cuda.get_device_name(0)}; log: {tmp_path / 'train.log'}")
    assert proc.returncode == 0, log[-6000:]
    assert "[rank_grpo_plugin] Rank-GRPO active" in log
    assert "[rank_grpo_plugin.cpu]" not in log  # the real CUDA path, not the CPU backend
    steps = _global_steps(log)
    assert [s for s, _ in steps] == [1, 2], log[-4000:]
    for _, m in steps:
        for key in ("policy_loss", "rank_grpo/ndcg", "rank_grpo/reward_r01", "rank_grpo/adv_r01"):
            assert key in m and math.isfinite(m[key]), (key, m)
        assert all(math.isfinite(v) for v in m.values()), m
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(str(out))
    assert all(torch.isfinite(p).all() for p in trained.parameters())
    print(json.dumps({"steps": steps}, indent=None)[:2000])
