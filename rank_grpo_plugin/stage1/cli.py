"""``rank-grpo bc-data``: build the Stage-1 behaviour-cloning SFT dataset (Remap-Reflect-Adjust).

Registered as ``rank-grpo bc-data`` (:func:`add_parser`); also runnable as ``python -m rank_grpo_plugin.stage1 ...``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .data import DEFAULT_EMBEDDER

__all__ = ["add_arguments", "add_parser", "run_args", "main"]

HELP = "build the Stage-1 SFT dataset from a teacher LLM (Remap-Reflect-Adjust)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--data", required=True, help="training rows (JSONL: prompt, groundtruth_with_release_year, seen_titles)")
    io.add_argument("--catalog", required=True, help="item catalog (.jsonl/.json/.csv/.tsv with title, year)")
    io.add_argument("--out", required=True, help="output directory (sft.jsonl, lists.jsonl, adjust_params.json, report.*)")
    io.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    t = p.add_argument_group("teacher (any OpenAI-compatible chat-completions endpoint)")
    t.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"),
                   help="e.g. http://127.0.0.1:8000/v1 (default: $OPENAI_BASE_URL)")
    t.add_argument("--model", default=os.environ.get("RANK_GRPO_TEACHER_MODEL"),
                   help="teacher model name (default: $RANK_GRPO_TEACHER_MODEL)")
    t.add_argument("--api-key", default=None, help="API key (default: $OPENAI_API_KEY, else 'EMPTY')")
    t.add_argument("--cache", default=None, help="answer cache (SQLite; default OUT/teacher_cache.sqlite)")
    t.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    t.add_argument("--max-retries", type=int, default=6, help="retries on 429/5xx/timeouts (default 6)")
    t.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP attempt (default 120)")
    t.add_argument("--backoff-base", type=float, default=1.0, help="first retry delay in seconds, doubled each retry")
    t.add_argument("--backoff-max", type=float, default=60.0, help="cap on a retry delay (also on Retry-After)")
    t.add_argument("--temperature", type=float, default=0.0)
    t.add_argument("--max-tokens", type=int, default=1024, help="max tokens of a teacher list answer")
    t.add_argument("--seed", type=int, default=None, help="sampling seed sent to the endpoint")
    t.add_argument("--price-input", type=float, default=0.0, help="USD per 1M prompt tokens (cost counter)")
    t.add_argument("--price-output", type=float, default=0.0, help="USD per 1M completion tokens (cost counter)")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    r = p.add_argument_group("remap")
    r.add_argument("--embedder", default=DEFAULT_EMBEDDER,
                   help=f"sentence-transformers model name or directory (default {DEFAULT_EMBEDDER}, the offline "
                        "PyPI package); 'hash' = dependency-free lexical stand-in for smoke tests")
    r.add_argument("--embed-cache", default=None, help="catalog embedding cache dir (default OUT/embeddings)")
    r.add_argument("--embed-batch-size", type=int, default=128)
    r.add_argument("--k", type=int, default=20, help="items per built list (default 20)")
    r.add_argument("--teacher-items", type=int, default=20, help="teacher items used per answer (default 20)")
    r.add_argument("--n-candidates", type=int, default=100, help="remap candidates kept per conversation (N, default 100)")
    r.add_argument("--lambda-conv", type=float, default=1.0, help="weight of conversation-item similarity (default 1)")
    f = p.add_argument_group("reflect and adjust")
    f.add_argument("--no-reflect", dest="reflect", action="store_false", help="skip the Reflect step")
    f.add_argument("--n-reflect", type=int, default=40, help="top candidates the teacher rates (N_r, default 40)")
    f.add_argument("--reflect-weight", type=float, default=0.5, help="s_reflect = s_remap + W * rating (default 0.5)")
    f.add_argument("--no-adjust", dest="adjust", action="store_false", help="skip the Adjust step")
    f.add_argument("--lambda-w", type=float, default=0.01, help="L2 penalty on w - 1 (default 0.01)")
    f.add_argument("--lambda-b", type=float, default=0.01, help="L2 penalty on b (default 0.01)")
    f.add_argument("--no-holdout", dest="holdout", action="store_false",
                   help="skip the 2-fold held-out Adjust evaluation in the report")
    f.add_argument("--year-tolerance", type=int, default=2, help="year tolerance of ground-truth matching (default 2)")


def run_args(args: argparse.Namespace) -> int:
    from ..recsys.catalog import CatalogError
    from .builder import BuildConfig, build_bc_data, format_report
    from .data import BuildError
    from .teacher import TeacherError

    names = BuildConfig.__dataclass_fields__
    cfg = BuildConfig(**{k: v for k, v in vars(args).items() if k in names})
    try:
        report = build_bc_data(cfg, log=lambda s: print(f"[bc-data] {s}", file=sys.stderr, flush=True))
    except (BuildError, CatalogError, TeacherError, ImportError) as e:
        print(f"rank-grpo bc-data: error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(format_report(report))
    print(f"\nwrote {', '.join(report['outputs'].values())}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bc-data`` on an ``argparse`` subparsers object; the parser's default ``func`` is
    :func:`run_args` (``args.func(args)`` returns the exit code)."""
    p = subparsers.add_parser("bc-data", help=HELP, description=__doc__.strip().splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=run_args)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="rank-grpo bc-data", description=HELP)
    add_arguments(p)
    return run_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
