"""``rank-grpo redial``: real ReDial conversations as a task (see rank_grpo_plugin.tasks.redial)."""
from __future__ import annotations

import argparse
import json
import sys

from .common import CliError

DESCRIPTION = """\
Build a task from real ReDial conversations (default: the 2,716 recommending turns and 1,206-item catalog shipped
with the package): dialogues split into train / validation / test (no dialogue in two splits), the human
recommender's answer as ground truth, seen titles excluded. The SFT target of every row is an item-kNN list over
co-mentions in the training dialogues (a training row's own dialogue left out); the most-popular and item-kNN
lists of the validation and test rows are written as classical baselines.

Writes OUT/train.jsonl, val.jsonl, test.jsonl (prompt, completion, seen_titles, groundtruth_with_release_year,
task), OUT/catalog.jsonl, OUT/task.json (configuration, the kNN score chosen on validation, drop counts, and each
split's teacher / popularity NDCG@K) and OUT/baselines/{popularity,item_knn}_{val,test}.jsonl. Then e.g.:

  rank-grpo prepare OUT/train.jsonl --rl rl.jsonl --sft sft.jsonl
  rank-grpo evaluate --predictions OUT/baselines/item_knn_test.jsonl --data OUT/test.jsonl --catalog OUT/catalog.jsonl
"""


def add_parser(sub: "argparse._SubParsersAction") -> None:
    from ..tasks.redial import add_arguments

    p = sub.add_parser("redial", help="real ReDial conversations as a task, with classical baselines",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output directory")
    p.add_argument("--rows", help="source rows with dialog_id (.jsonl/.json/save_to_disk; default: the shipped "
                                  "ReDial split)")
    p.add_argument("--catalog", help="source catalog (default: the shipped ReDial catalog)")
    add_arguments(p.add_argument_group("task"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..tasks.redial import build_task, config_from_args, load_source, write_task

    cfg = config_from_args(args)
    rows, catalog = load_source(args.rows, args.catalog)
    try:
        task = build_task(cfg, rows, catalog)
    except ValueError as e:
        raise CliError(str(e)) from None
    paths = write_task(task, args.out)
    s = task.summary
    f3 = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731  (None: an empty split)
    parts = [f"{split} {v['rows']} rows / {v['dialogues']} dialogues (teacher NDCG@{cfg.k} {f3(v['teacher_ndcg'])}"
             + (f", popularity {f3(v['popularity_ndcg'])}" if "popularity_ndcg" in v else "") + ")"
             for split, v in s["splits"].items()]
    chosen = f"kNN score {s['knn_score']}" + (
        " (validation NDCG " + ", ".join(f"{k} {v:.3f}" for k, v in s["knn_selection_val_ndcg"].items()) + ")"
        if s["knn_selection_val_ndcg"] else "")
    print(f"redial: {s['catalog_items']} items; {chosen}; " + "; ".join(parts), file=sys.stderr)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
