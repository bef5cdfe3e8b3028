"""Split a multi-epoch prompt stream in two at a given prompt count (for a two-phase learning-rate schedule).

    python3 examples/gpu/split_prompt_stream.py rl.jsonl --epochs 2 --split-at 384000 \
        --out1 rl_phase1.jsonl --out2 rl_phase2.jsonl

The stream is ``epochs`` passes over the JSONL rows, each pass shuffled with seed ``seed + epoch``; the first
``split-at`` rows of the stream go to ``out1`` and the rest to ``out2`` (each run then trains one episode over its
file). Lines are copied verbatim; each output is written atomically (:func:`rank_grpo_plugin.files.write_atomic`).
"""
from __future__ import annotations

import argparse
import random
import sys

from rank_grpo_plugin.files import write_atomic


def stream(lines, epochs: int, seed: int):
    for epoch in range(epochs):
        order = list(range(len(lines)))
        random.Random(seed + epoch).shuffle(order)
        for i in order:
            yield lines[i]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="prompt dataset (.jsonl, one row per line)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--split-at", type=int, required=True, help="number of prompts in the first part")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out1", required=True)
    ap.add_argument("--out2", required=True)
    a = ap.parse_args(argv)
    if not a.data.endswith(".jsonl"):
        ap.error(f"{a.data}: expected a .jsonl file (one prompt row per line)")
    with open(a.data, encoding="utf-8") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    total = len(lines) * a.epochs
    if not lines or a.epochs < 1:
        ap.error(f"{a.data}: no rows (or --epochs < 1)")
    if not 0 < a.split_at < total:
        ap.error(f"--split-at {a.split_at}: must be between 1 and {total - 1} ({len(lines)} rows x {a.epochs} "
                 f"epochs); without a drop inside the run, train in one phase instead")
    rows = list(stream(lines, a.epochs, a.seed))
    for path, part in ((a.out1, rows[: a.split_at]), (a.out2, rows[a.split_at:])):
        write_atomic(path, "".join(part))
        print(f"wrote {len(part)} prompts to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
