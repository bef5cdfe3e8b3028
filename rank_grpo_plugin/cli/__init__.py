"""``rank-grpo``: data preparation, catalog tools, evaluation and reports for Rank-GRPO.

Subcommands (each has ``--help``)::

    rank-grpo prepare   rows (JSONL / JSON / save_to_disk) -> OpenRLHF RL prompt and SFT datasets
    rank-grpo catalog   build | convert | inspect item catalogs (the official .pkl is read safely)
    rank-grpo evaluate  a model (vLLM or HF generate) or a file of generated lists -> metrics JSON/Markdown/PNG
    rank-grpo report    compare several evaluation JSON files (Markdown table + per-rank plot)
    rank-grpo synth     generate a miniature, CPU-learnable recommendation task from a real catalog
    rank-grpo redial    real ReDial conversations as a task (dialogue-disjoint splits, item-kNN teacher, baselines)
    rank-grpo recipe    print the SFT / RL launcher command of the launch recipe (rank_grpo_plugin.recipes)
    rank-grpo bc-data   Stage 1: teacher lists -> Remap -> Reflect -> Adjust -> catalog-grounded SFT dataset

Subcommand modules are imported only when their command runs, so ``--help`` is fast and nothing heavy
(torch, transformers, vLLM) is imported unless a model is evaluated.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

__all__ = ["main", "build_parser"]

_COMMANDS = {
    "prepare": ".prepare",
    "catalog": ".catalog",
    "evaluate": ".evaluate",
    "report": ".report",
    "synth": ".synth",
    "redial": ".redial",
    "recipe": ".recipe",
    "bc-data": "..stage1.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rank-grpo",
        description="Rank-GRPO tools: prepare OpenRLHF datasets, manage catalogs, evaluate recommenders.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"rank_grpo_plugin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _COMMANDS.items():
        importlib.import_module(module, __name__).add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from .common import CliError
    from ..data import DataError
    from ..recsys.catalog import CatalogError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, DataError, CatalogError) as e:
        print(f"rank-grpo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rank-grpo {args.command}: interrupted", file=sys.stderr)
        return 130
