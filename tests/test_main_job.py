"""examples/cpu/main_job.sh end to end in a short form (a small synth task, 1 SFT epoch, 2 Rank-GRPO steps, 2 sampled
lists per conversation): tiny model, rank-grpo synth + prepare, deepspeed --module openrlhf.cli.train_sft,
python -m openrlhf.cli.train_ppo_ray with rank_grpo, rank-grpo evaluate (greedy and sampled) on the held-out test
rows and the report. A few minutes on 2 idle cores (DeepSpeed ops compiled and cached)."""
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

from openrlhf_compat.logs import rank_series, read_steps

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "cpu" / "main_job.sh"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU main job; GPU machines use examples/gpu")
def test_main_job_short(tmp_path):
    out = tmp_path / "job"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK_GRPO_PLUGIN_DISABLE", "RANK_GRPO_PLUGIN_CPU_FAULT", "RAY_ADDRESS", "DRY_RUN")}
    env["SYNTH_ARGS"] = "--train-rows 48 --val-rows 4 --test-rows 8 --seed 1"
    proc = subprocess.Popen(["bash", str(SCRIPT), "--steps", "2", "--sft-epochs", "1", "--eval-samples", "2",
                             "--out", str(out)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail("main_job.sh timed out\n" + log[-6000:])
    assert proc.returncode == 0, log[-6000:]

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
                   "held-out NDCG@20 (rank-aligned, sampled): SFT", "rl step 2/2", "per-rank plot:"):
        assert needle in log, (needle, log)
    assert re.search(r"wall time \(s\): .* total \d+", log)
    # nothing outside the repository and the output folder was read
    assert str(ROOT.parent / "shared") not in (out / "logs" / "commands.sh").read_text()
