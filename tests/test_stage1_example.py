"""examples/stage1_then_sft.sh: every bc-data flag it passes exists and it carries the paper's SFT settings (its
train_sft flags are checked by OpenRLHF's real parser in tests/test_example_scripts.py)."""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "stage1_then_sft.sh"


def _dry_run():
    env = dict(os.environ, DRY_RUN="1", OPENAI_BASE_URL="http://127.0.0.1:9/v1", RANK_GRPO_TEACHER_MODEL="t",
               PATH=os.environ.get("PATH", ""))
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(l[2:]) for l in proc.stderr.splitlines() if l.startswith("+ ")]


@pytest.mark.slow  # runs the example script / CLI in a subprocess
def test_example_flags_exist():
    cmds = _dry_run()
    bc = next(c for c in cmds if "rank_grpo_plugin.stage1" in c or "bc-data" in c)
    from rank_grpo_plugin.stage1.cli import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    start = bc.index("--data")
    p.parse_args(bc[start:])  # raises SystemExit on an unknown flag

    # its train_sft flags are parsed by OpenRLHF's real parser in tests/test_example_scripts.py
    sft = next(c for c in cmds if "openrlhf.cli.train_sft" in c)
    args = dict(zip(sft, sft[1:]))
    assert args["--adam.lr"] == "5e-5" and args["--lr_scheduler"] == "cosine"
    assert args["--lr_warmup_ratio"] == "0.05" and args["--train.max_epochs"] == "10"
    assert args["--data.max_len"] == "1024" and "--data.apply_chat_template" in sft
    assert "Qwen2.5-0.5B-Instruct" in args["--model.model_name_or_path"]


def test_add_subcommand_wires_bc_data():
    from rank_grpo_plugin.stage1.cli import add_parser, run_args

    p = argparse.ArgumentParser(prog="rank-grpo")
    sub = p.add_subparsers(dest="cmd")
    add_parser(sub)
    args = p.parse_args(["bc-data", "--data", "d.jsonl", "--catalog", "c.jsonl", "--out", "o", "--no-reflect",
                         "--n-candidates", "50"])
    assert args.func is run_args and args.reflect is False and args.n_candidates == 50 and args.adjust is True
