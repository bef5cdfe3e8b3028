"""``rank-grpo synth``: generate the miniature conversational-recommendation task (see rank_grpo_plugin.tasks.synth)."""
from __future__ import annotations

import argparse
import json
import sys

from .common import CliError

DESCRIPTION = """\
Generate a miniature conversational-recommendation task from a real catalog (default: the Reddit-v2 catalog
shipped with the package). Latent preference groups of catalog items; each conversation names 1-3 liked items of
a group (its seen_titles) and asks for K movies; the ground truth is the group's other items. The SFT lists are an
imperfect teacher (--teacher-recall of the ground truth, on random ranks, among random catalog items), so RL has
room to improve. Validation and test conversations are combinations of liked items never seen in training.

Writes OUT/train.jsonl, val.jsonl, test.jsonl (Reddit-v2 row shape: prompt, completion, seen_titles,
groundtruth_with_release_year, task), OUT/catalog.jsonl (the task's items) and OUT/task.json (configuration,
groups, and reference scores: the teacher's NDCG@K and that of K random distinct items). Then e.g.:

  rank-grpo prepare OUT/train.jsonl --rl rl.jsonl --sft sft.jsonl
  rank-grpo evaluate --model CKPT --data OUT/test.jsonl --catalog OUT/catalog.jsonl
"""


def add_parser(sub: "argparse._SubParsersAction") -> None:
    from ..tasks.synth import add_arguments

    p = sub.add_parser("synth", help="generate a miniature, CPU-learnable recommendation task",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output directory")
    p.add_argument("--catalog", help="source catalog (.jsonl/.json/.csv/.tsv; default: the shipped Reddit-v2 "
                                     "catalog, 7,404 items)")
    add_arguments(p.add_argument_group("task"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..recsys.catalog import CatalogError
    from ..tasks.synth import build_task, config_from_args, load_task_catalog, write_task

    cfg = config_from_args(args)
    try:
        catalog = load_task_catalog(args.catalog)
        task = build_task(cfg, catalog)
    except (ValueError, CatalogError, OSError) as e:
        raise CliError(str(e)) from None
    paths = write_task(task, args.out)
    summary = task.summary()
    parts = []
    for split, s in summary["splits"].items():
        if s["rows"]:
            parts.append(f"{split} {s['rows']} rows ({s['combinations']} combinations, teacher NDCG@{cfg.k} "
                         f"{s['teacher_ndcg']:.3f}, random list {s['random_list_ndcg']:.3f})")
        else:
            parts.append(f"{split} 0 rows")
    print(f"synth: {summary['catalog_items']} items, {cfg.groups} groups x {cfg.items_per_group}; "
          + "; ".join(parts), file=sys.stderr)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
