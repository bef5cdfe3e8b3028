"""OpenRLHF's real launcher on CPU with the tiny model. The Rank-GRPO run (`python -m`, catalog reward, K = 10, the
legacy `--advantage_estimator` spelling) is the one `test_resume.py` kills and resumes; its checks of the
cross-process parts in-process tests cannot see (the start-up hook in every Ray worker, the options reaching the
rollout actors, the per-rank hits crossing Ray to the estimator, the rank-level loss, the per-rank metrics in the
logged status and TensorBoard) are :func:`check_rank_grpo_run`, run on both halves of that run. The GRPO run
(`group_norm`, format reward) through `deepspeed --module openrlhf.cli.train_ppo_ray` is the one
`test_cpu_faults.py` trains and then ends with a dead engine.
The same launcher with the sync fix disabled (`RANK_GRPO_PLUGIN_CPU_FAULT=null_sync`: broadcasts that move nothing, as
vLLM's PyNccl does without NCCL) stops with WeightSyncError instead of training on garbage; an unsupported option is
refused before any model loads."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from openrlhf_compat.logs import parse_steps
from rank_grpo_plugin.resources import REDDIT_V2_CATALOG as CATALOG

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU backend tests; CUDA machines use the GPU path")

ROOT = Path(__file__).resolve().parents[2]
REWARD = ROOT / "examples" / "cpu" / "format_reward.py"


def launcher_args(model, data, out_dir, *extra, estimator="group_norm", catalog=CATALOG, max_new_tokens=48):
    """The CPU launcher runs' arguments: GRPO with the format reward, or (``estimator="rank_grpo"``) the plugin's
    catalog reward on ``catalog``."""
    if estimator == "rank_grpo":
        reward = ["--rank_grpo.catalog", str(catalog)]
    else:
        reward = ["--reward.remote_url", str(REWARD)]
    return [
        "-m", "openrlhf.cli.train_ppo_ray",
        "--actor.model_name_or_path", model, "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "1",
        "--ref.num_nodes", "1", "--ref.num_gpus_per_node", "1", "--algo.kl.init_coef", "0",
        "--vllm.num_engines", "1", "--vllm.tensor_parallel_size", "1", "--vllm.enforce_eager",
        "--algo.advantage.estimator", estimator, "--rollout.n_samples_per_prompt", "4",
        "--rollout.batch_size", "2", "--rollout.micro_batch_size", "4",
        "--train.batch_size", "8", "--train.micro_batch_size", "4",
        "--data.prompt_dataset", str(data), "--data.input_key", "input", "--data.label_key", "label",
        "--data.apply_chat_template", "--data.max_len", "1024", "--rollout.max_new_tokens", str(max_new_tokens),
        *reward,
        "--ds.zero_stage", "2", "--ds.param_dtype", "bf16", "--actor.adam.lr", "1e-4",
        "--ckpt.output_dir", str(out_dir), "--ckpt.save_steps", "-1", "--logger.logging_steps", "1",
        *extra,
    ]


def _steps(log: str):
    """[(step, {key: float})] from OpenRLHF's 'Global step N: {...}' lines (the plugin's one log parser)."""
    return [(s.step, dict(s)) for s in parse_steps(log)]


def deepspeed_runner(args):
    """`deepspeed --module ...` for launcher args: the `deepspeed` console script is deepspeed.launcher.runner, and
    running the module with this interpreter is the same launcher without depending on PATH (a pyenv shim or another
    environment's script). The deepspeed launcher sets CUDA_VISIBLE_DEVICES=0, which the CPU backend drops before
    declaring logical GPUs to Ray."""
    from rank_grpo_plugin.recipes import free_port

    port = str(free_port())
    assert args[:2] == ["-m", "openrlhf.cli.train_ppo_ray"]
    return ["-m", "deepspeed.launcher.runner", "--master_port", port, "--module", *args[1:]]


def rank_grpo_args(model, data, out_dir, tb_dir, *extra):
    """The Rank-GRPO launcher run: K = 10, TensorBoard on, and the pre-0.10 `--advantage_estimator` spelling the
    plugin keeps working."""
    args = launcher_args(model, data, out_dir, "--rank_grpo.num_ranks", "10", "--logger.tensorboard_dir", str(tb_dir),
                         *extra, estimator="rank_grpo")
    args[args.index("--algo.advantage.estimator")] = "--advantage_estimator"
    return args


def check_steps(log: str, first: int, last: int, syncs=None):
    """Every weight sync verified (>= 2 tensor checksums each; numbered ``syncs`` when given) and the steps
    ``first..last`` logged with finite reward, loss and gradient norm; returns the steps' metrics."""
    verified = re.findall(r"weight sync #(\d+) verified: (\d+) tensor checksums match", log)
    assert verified and all(int(n) >= 2 for _, n in verified), log[-4000:]
    if syncs is not None:
        assert [int(k) for k, _ in verified] == list(syncs), log[-4000:]
    steps = _steps(log)
    assert [s for s, _ in steps] == list(range(first, last + 1)), log[-4000:]
    for _, metrics in steps:
        for key in ("reward", "rollout/reward_mean", "policy_loss", "actor_grad_norm"):
            assert math.isfinite(metrics.get(key, math.nan)), (key, metrics)
    return [m for _, m in steps]


def check_rank_grpo_run(log: str, steps, tb_dir: Path) -> None:
    """A Rank-GRPO launcher run (:func:`rank_grpo_args`) had the plugin active in every process that needs it: K = 10
    announced, the plugin's reward function loaded, the per-rank metrics finite in every step's status (ranks 1..10,
    none past K) and TensorBoard written."""
    assert "[rank_grpo_plugin] Rank-GRPO active: K=10" in log
    assert "Loading custom `reward_func" in log and "rank_grpo_plugin/openrlhf/reward.py" in log
    keys = ("rank_grpo/ndcg", "rank_grpo/hit_r01", "rank_grpo/hit_r10", "rank_grpo/reward_r01",
            "rank_grpo/adv_r01", "rank_grpo/adv_r10", "rank_grpo/clip_frac_low", "rank_grpo/clip_frac_high",
            "rank_grpo/ratio_mean", "rank_grpo/items_emitted", "rank_grpo/in_catalog_rate")
    assert all(math.isfinite(m.get(k, math.nan)) for m in steps for k in keys), log[-3000:]
    assert all("rank_grpo/hit_r11" not in m for m in steps)  # K = 10
    assert any(tb_dir.rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_broken_weight_sync_fails_loudly(run_py, tiny_model, prompt_data, tmp_path):
    res = run_py(launcher_args(tiny_model, prompt_data, tmp_path / "out"),
                 env={"RANK_GRPO_PLUGIN_CPU_FAULT": "null_sync"}, timeout=900, cwd=str(tmp_path))
    log = res.stdout
    assert res.returncode != 0, log[-4000:]
    assert "WeightSyncError" in log and "weight sync #1 FAILED" in log, log[-6000:]
    assert "verified" not in log and "Global step 1:" not in log


@pytest.mark.slow
def test_unsupported_options_refused_by_launcher_before_ray(run_py, tiny_model, prompt_data, tmp_path):
    """A refused option given as a flag and one the launcher derives after parsing (--train.dynamic_batch_enable
    turns on --ds.packing_samples) are both named, before Ray starts."""
    res = run_py(launcher_args(tiny_model, prompt_data, tmp_path / "out", "--train.async_enable",
                               "--train.dynamic_batch_enable"), timeout=300, cwd=str(tmp_path))
    out = res.stdout
    assert res.returncode != 0
    assert "cannot run on the CPU backend" in out and "--train.async_enable" in out, out[-4000:]
    assert "--ds.packing_samples" in out and "Started a local Ray instance" not in out, out[-4000:]
