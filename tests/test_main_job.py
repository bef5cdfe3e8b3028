"""examples/cpu/main_job.sh end to end with minimal flags (1 SFT epoch, 2 Rank-GRPO steps): tiny model, rank-grpo
prepare, deepspeed --module openrlhf.cli.train_sft, python -m openrlhf.cli.train_ppo_ray with rank_grpo,
rank-grpo evaluate twice and the report. About 3 minutes on 2 idle cores (DeepSpeed ops compiled and cached)."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from rank_grpo_plugin.openrlhf.logs import parse_steps

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "cpu" / "main_job.sh"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU main job; GPU machines use examples/gpu")
def test_main_job_minimal(tmp_path):
    out = tmp_path / "job"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK_GRPO_PLUGIN_DISABLE", "RANK_GRPO_PLUGIN_CPU_FAULT", "RAY_ADDRESS", "DRY_RUN")}
    proc = subprocess.Popen(["bash", str(SCRIPT), "--steps", "2", "--sft-epochs", "1", "--eval-limit", "8",
                             "--out", str(out)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail("main_job.sh timed out\n" + log[-6000:])
    assert proc.returncode == 0, log[-6000:]

    # (b) data from rank-grpo prepare
    rl_rows = [json.loads(l) for l in (out / "data" / "rl.jsonl").read_text().splitlines()]
    assert len(rl_rows) == 100 and "groundtruth" in json.loads(rl_rows[0]["label"])
    # (c) SFT through the deepspeed launcher wrote a checkpoint; (d) two verified Rank-GRPO steps
    assert (out / "sft" / "config.json").is_file()
    rl_log = (out / "rank_grpo" / "train.log").read_text()
    assert "[rank_grpo_plugin] Rank-GRPO active" in rl_log
    assert len(re.findall(r"weight sync #\d+ verified", rl_log)) == 2
    steps = parse_steps(rl_log)  # the plugin's one log parser: a step with nan is kept (as nan), not dropped
    assert [s.step for s in steps] == [1, 2]
    for metrics in steps:
        assert "rank_grpo/reward_r01" in metrics and "rank_grpo/hit_r20" in metrics
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out / "rank_grpo" / "model"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # (e) both evaluations and the summary
    for name in ("eval_sft", "eval_rank_grpo"):
        summary = json.loads((out / name / "metrics.json").read_text())["summary"]
        assert summary["rows"] == 8 and math.isfinite(summary["metrics"]["rank/ndcg@20"])
    assert "main job summary" in log and "Rank-GRPO step 1 (first)" in log and "Rank-GRPO step 2 (last)" in log
    assert re.search(r"wall time \(s\): .* total \d+", log)
