"""examples/stage1_then_sft.sh: every flag it passes exists (bc-data's parser; OpenRLHF 0.11.2's train_sft parser,
read from its source without running it) and it carries the paper's SFT settings."""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
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


def test_example_flags_exist():
    cmds = _dry_run()
    bc = next(c for c in cmds if "rank_grpo_plugin.stage1" in c or "bc-data" in c)
    from rank_grpo_plugin.stage1.cli import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    start = bc.index("--data")
    p.parse_args(bc[start:])  # raises SystemExit on an unknown flag

    sft = next(c for c in cmds if "openrlhf.cli.train_sft" in c)
    spec = importlib.util.find_spec("openrlhf.cli.train_sft")
    if spec is None:
        pytest.skip("openrlhf not installed")
    src = Path(spec.origin).read_text()
    known = set(re.findall(r'add_argument\(\s*"(--[\w.]+)"', src))
    flags = [a for a in sft[sft.index("openrlhf.cli.train_sft") + 1:] if a.startswith("--")]
    assert flags and not [f for f in flags if f not in known], f"unknown train_sft flags: {set(flags) - known}"
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
