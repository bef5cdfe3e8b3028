"""Reproduce the per-step table of docs/STAGE1.md without a real teacher LLM.

    python -m rank_grpo_plugin.stage1.demo --out /tmp/bc_demo [--damage] [bc-data flags ...]

Runs ``rank-grpo bc-data`` on the 100 Reddit-v2 sample rows shipped in the package (or ``$RANK_GRPO_DATA``'s
``reddit_v2/``) against the scripted loopback server (:mod:`rank_grpo_plugin.stage1.scripted`) replaying each
row's existing ``completion`` as the teacher's list (``--damage``: with a preamble, a missing year, a wrong year and
an invented title per list, like an LLM's answer) and rating reflect candidates +1 when they are in that list. A
stand-in teacher: the numbers show what each step does to a given list, not what a real teacher would reach.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from ..data import DataError, default_data_dir
from ..recsys.parse import parse_line
from .cli import main as bc_main
from .scripted import ScriptedServer, replay_teacher


def damage(text: str) -> str:
    out = ["Sure! Here are 20 movies you might enjoy:"]
    for i, line in enumerate(text.split("\n"), 1):
        p = parse_line(line)
        if i == 3 and p:
            line = p.title
        elif i == 5 and p:
            line = f"{p.title} ({p.year + 1})"
        elif i == 7:
            line = "Totally Invented Picture (2031)"
        out.append(f"{i}. {line}")
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rank_grpo_plugin.stage1.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", help="rows with a completion (default: reddit_v2/sample.jsonl of the data folder)")
    p.add_argument("--catalog", help="item catalog (default: reddit_v2/catalog.jsonl of the data folder)")
    p.add_argument("--damage", action="store_true", help="damage the replayed lists like a raw LLM answer")
    args, rest = p.parse_known_args(argv)
    if not (args.data and args.catalog):  # the data folder is looked up only when a default is used
        try:
            reddit = default_data_dir() / "reddit_v2"
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.data = args.data or str(reddit / "sample.jsonl")
        args.catalog = args.catalog or str(reddit / "catalog.jsonl")
    with open(args.data, encoding="utf-8") as f:
        rows = [json.loads(l) for l in f if l.strip()]
    answers = {}
    for r in rows:
        text = r["completion"][-1]["content"] if isinstance(r["completion"], list) else r["completion"]
        answers[r["prompt"][-1]["content"]] = damage(text) if args.damage else text
    with ScriptedServer(replay_teacher(answers), max_requests=100 * len(rows) + 10) as srv:
        return bc_main(["--data", args.data, "--catalog", args.catalog, "--out", args.out,
                        "--base-url", srv.base_url, "--model", "replay", *rest])


if __name__ == "__main__":
    sys.exit(main())
