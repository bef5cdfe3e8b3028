"""A real-conversation task from ReDial: dialogue-disjoint splits, an item-kNN teacher, classical baselines.

Source: ReDial recommending turns in the Reddit-v2 row shape (default: the 2,716 rows and 1,206-item catalog
shipped in :mod:`rank_grpo_plugin.resources`; every row is one turn at which the human recommender named movies).
A row's ground truth is what the recommender named (``groundtruth_with_release_year``); its context is the
conversation so far (``prompt``) and the movies mentioned in it (``seen_titles``).

Splits: the *dialogues* are shuffled with ``seed``; the first ``val_dialogues`` go to validation, the next
``test_dialogues`` to test, the rest to training, so no dialogue has rows in two splits (a dialogue's later turns
repeat its earlier context).

Items: a seen title maps to the catalog items with that normalised title (ReDial seen titles carry no year; when a
title has several years in the catalog, the ones written as "(YYYY)" in the conversation are taken, else all of
them); a ground-truth pair maps to the catalog item with that title and year. Ground-truth items whose title was
seen in the conversation are dropped (the evaluation excludes seen titles, so they can never be hit), and so are rows
left with no ground truth; ``task.json`` counts both.

Teacher and baselines (:mod:`rank_grpo_plugin.recsys.baselines`), fitted on the *training dialogues only* (a
dialogue = every item its rows mention, seen or named):

* **item-kNN** over co-mentions (``knn_score`` "count" or "cosine", or "auto": the one with the higher mean
  rank-aligned NDCG@K on the validation rows) -- the SFT target (``completion``) of every row. Training rows are
  scored with their own dialogue left out, so a target never contains a title only because the row's own answer
  was counted as a co-mention;
* **most-popular** (training dialogues mentioning the item);

both with seen titles excluded, K distinct catalog items as "Title (Year)" lines. ``baselines/<name>_<split>.jsonl``
holds each baseline's lists of the validation and test rows (``rank-grpo evaluate --predictions`` scores them).

Deterministic for a given source and configuration (byte-for-byte: sorted catalog, stable sorts, seeded shuffle).
"""
from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..recsys.catalog import Catalog
from ..recsys.parse import normalize_title

__all__ = ["RedialConfig", "RedialTask", "build_task", "write_task", "KNN_SCORES", "BASELINES"]

SPLITS = ("train", "val", "test")
KNN_SCORES = ("auto", "count", "cosine")
BASELINES = ("popularity", "item_knn")
_YEAR = re.compile(r"\((\d{4})\)")


@dataclass(frozen=True)
class RedialConfig:
    """Every knob of the task (the ``rank-grpo redial`` flags); :data:`_HELP` says what each means."""

    seed: int = 0
    val_dialogues: int = 100
    test_dialogues: int = 300
    k: int = 20
    knn_score: str = "auto"

    def validate(self) -> None:
        for name in ("val_dialogues", "test_dialogues"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(self, name)}")
        if self.k < 1:
            raise ValueError(f"--k: must be >= 1, got {self.k}")
        if self.knn_score not in KNN_SCORES:
            raise ValueError(f"--knn-score: expected one of {', '.join(KNN_SCORES)}, got {self.knn_score!r}")
        if self.knn_score == "auto" and self.val_dialogues == 0:
            raise ValueError("--knn-score auto chooses on validation rows: give --val-dialogues > 0 or choose "
                             "--knn-score count|cosine")


@dataclass
class RedialTask:
    config: RedialConfig
    catalog: List[Tuple[str, int]]  # sorted; item index = position
    rows: Dict[str, List[dict]]
    baselines: Dict[str, Dict[str, List[str]]]  # name -> split -> one list (text) per row
    summary: dict


def _resolve(rows: Sequence[dict], catalog: List[Tuple[str, int]]):
    """Per row: (context item indices, excluded item indices, kept ground-truth pairs, their item indices); plus
    drop counts. The context is year-resolved; the exclusion covers every year of a seen title, as the
    evaluation excludes seen titles by title alone."""
    by_title: Dict[str, List[int]] = {}
    by_key: Dict[Tuple[str, int], int] = {}
    for i, (t, y) in enumerate(catalog):
        by_title.setdefault(normalize_title(t), []).append(i)
        by_key[(normalize_title(t), y)] = i
    out, counts = [], {"seen_unknown": 0, "groundtruth_unknown": 0, "groundtruth_seen": 0}
    for n, row in enumerate(rows, 1):
        text = " ".join(m.get("content", "") for m in row["prompt"] if isinstance(m, dict))
        years = {int(y) for y in _YEAR.findall(text)}
        seen_ids, excluded, seen_keys = [], [], set()
        for t in row["seen_titles"]:
            cands = by_title.get(normalize_title(t), [])
            if not cands:
                counts["seen_unknown"] += 1
            named = [i for i in cands if catalog[i][1] in years]
            seen_ids += named or cands
            excluded += cands
            seen_keys.add(normalize_title(t))
        gt, gt_ids = [], []
        for pair in row["groundtruth_with_release_year"]:
            key = (normalize_title(pair[0]), int(pair[1]))
            if key[0] in seen_keys:
                counts["groundtruth_seen"] += 1
                continue
            if key not in by_key:
                counts["groundtruth_unknown"] += 1
                continue
            gt.append([pair[0], str(pair[1])])
            gt_ids.append(by_key[key])
        out.append((sorted(set(seen_ids)), sorted(set(excluded)), gt, gt_ids))
    return out, counts


def _lists(ids, catalog) -> List[str]:
    return ["\n".join(f"{catalog[i][0]} ({catalog[i][1]})" for i in row) for row in ids.tolist()]


def build_task(cfg: RedialConfig, rows: Sequence[dict], catalog: Catalog) -> RedialTask:
    """Split, resolve, fit and write the teacher/baseline lists (see the module docstring).

    ``rows``: dicts with ``dialog_id``, ``prompt``, ``seen_titles``, ``groundtruth_with_release_year`` (validated
    by the caller, e.g. :func:`rank_grpo_plugin.data.load_rows`). ValueError naming the flag when impossible.
    """
    import torch

    from ..recsys.baselines import CoMentions, top_k
    from ..recsys.match import catalog_hits
    from ..recsys.metrics import ndcg_at_k

    cfg.validate()
    items = sorted(set(catalog))
    n = len(items)
    if cfg.k > n:
        raise ValueError(f"--k {cfg.k}: the catalog has only {n} items")
    dialogues = list(dict.fromkeys(r["dialog_id"] for r in rows))
    if cfg.val_dialogues + cfg.test_dialogues >= len(dialogues):
        raise ValueError(f"--val-dialogues + --test-dialogues = {cfg.val_dialogues + cfg.test_dialogues}: the "
                         f"source has only {len(dialogues)} dialogues (some must be left for training)")
    order = list(dialogues)
    random.Random(cfg.seed).shuffle(order)
    split_of = {d: "val" for d in order[:cfg.val_dialogues]}
    split_of.update({d: "test" for d in order[cfg.val_dialogues:cfg.val_dialogues + cfg.test_dialogues]})
    resolved, counts = _resolve(rows, items)

    # Training dialogues: every item any of their rows mentions.
    dlg_items: Dict[str, set] = {}
    for row, (seen, _, _, gt_ids) in zip(rows, resolved):
        dlg_items.setdefault(row["dialog_id"], set()).update(seen, gt_ids)
    train_dlgs = [d for d in dialogues if split_of.get(d, "train") == "train"]
    model = CoMentions([sorted(dlg_items[d]) for d in train_dlgs], n)

    kept = {s: [] for s in SPLITS}  # split -> row positions with ground truth left
    dropped_rows = 0
    for j, (row, (_, _, gt, _)) in enumerate(zip(rows, resolved)):
        if gt:
            kept[split_of.get(row["dialog_id"], "train")].append(j)
        else:
            dropped_rows += 1

    def rank(split: str, method: str, score: str = "count"):
        pos = kept[split]
        seen = torch.zeros(len(pos), n)
        exclude = torch.zeros(len(pos), n, dtype=torch.bool)
        for r, j in enumerate(pos):
            seen[r, resolved[j][0]] = 1.0
            exclude[r, resolved[j][1]] = True
        leave = None
        if split == "train":
            leave = torch.zeros(len(pos), n)
            for r, j in enumerate(pos):
                leave[r, sorted(dlg_items[rows[j]["dialog_id"]])] = 1.0
        s = model.scores(seen, method, score, leave_out=leave)
        pop = model.popularity - (leave if leave is not None else 0)
        return _lists(top_k(s, exclude, pop, cfg.k), items)

    def mean_ndcg(split: str, lists: List[str]) -> float:
        """Mean rank-aligned NDCG@K, as ``rank-grpo evaluate`` computes it (recsys.evaluation)."""
        vals = [ndcg_at_k(catalog_hits(text, resolved[j][2], rows[j]["seen_titles"], catalog, k=cfg.k),
                          len(resolved[j][2]), cfg.k) for j, text in zip(kept[split], lists)]
        return sum(vals) / len(vals) if vals else None  # an empty split (JSON null, not NaN)

    selection = {}
    score = cfg.knn_score
    if score == "auto":
        selection = {s: mean_ndcg("val", rank("val", "knn", s)) for s in ("count", "cosine")}
        score = max(selection, key=lambda s: (selection[s], s == "cosine"))

    baselines: Dict[str, Dict[str, List[str]]] = {b: {} for b in BASELINES}
    out_rows: Dict[str, List[dict]] = {}
    split_summary = {}
    for split in SPLITS:
        teacher = rank(split, "knn", score)
        if split != "train":
            baselines["item_knn"][split] = teacher
            baselines["popularity"][split] = rank(split, "popularity")
        out_rows[split] = [{
            "prompt": rows[j]["prompt"],
            "completion": [{"role": "assistant", "content": text}],
            "seen_titles": list(rows[j]["seen_titles"]),
            "groundtruth_with_release_year": resolved[j][2],
            "task": {"split": split, "dialog_id": rows[j]["dialog_id"]},
        } for j, text in zip(kept[split], teacher)]
        s = {"rows": len(kept[split]), "dialogues": len({rows[j]["dialog_id"] for j in kept[split]}),
             "mean_groundtruth": (sum(len(resolved[j][2]) for j in kept[split]) / len(kept[split])
                                  if kept[split] else 0.0),
             "teacher_ndcg": mean_ndcg(split, teacher)}
        if split != "train":
            s["popularity_ndcg"] = mean_ndcg(split, baselines["popularity"][split])
        split_summary[split] = s
    summary = {"config": asdict(cfg), "knn_score": score, "knn_selection_val_ndcg": selection,
               "catalog_items": n, "source_rows": len(rows), "source_dialogues": len(dialogues),
               "dropped": {**counts, "rows_without_groundtruth": dropped_rows},
               "train_dialogues_fitted": len(train_dlgs), "splits": split_summary}
    return RedialTask(cfg, items, out_rows, baselines, summary)


def write_task(task: RedialTask, out_dir) -> Dict[str, Path]:
    """``train/val/test.jsonl``, ``catalog.jsonl``, ``task.json`` and ``baselines/<name>_<split>.jsonl``."""
    from .common import write_task_files

    extra = {}
    for name, by_split in task.baselines.items():
        for split, lists in by_split.items():
            extra[f"baselines/{name}_{split}.jsonl"] = [
                {"prompt": r["prompt"], "completion": text} for r, text in zip(task.rows[split], lists)]
    return write_task_files(out_dir, task.rows, task.catalog, task.summary, extra)


# ------------------------------------------------------------------------------------------------ CLI
_HELP = {
    "seed": "seed of the dialogue shuffle: the same seed, source and flags give the same files, byte for byte",
    "val_dialogues": "dialogues in the validation split (every decision is made on these)",
    "test_dialogues": "dialogues in the test split (evaluated once at the end)",
    "k": "list length K of the teacher and baseline lists",
    "knn_score": "item-kNN score: 'count' (co-mentions), 'cosine' (co-mentions / sqrt(popularity_i * "
                 "popularity_j)) or 'auto' (the higher validation NDCG@K of the two)",
}


def add_arguments(p) -> None:
    from .common import add_config_arguments

    add_config_arguments(p, RedialConfig, _HELP, {"knn_score": KNN_SCORES})


def config_from_args(args) -> RedialConfig:
    from .common import config_from_args as _from_args

    return _from_args(RedialConfig, args)


def load_source(rows_path: Optional[str], catalog_path: Optional[str]) -> Tuple[List[dict], Catalog]:
    """The source rows (validated; ``dialog_id`` kept) and catalog; defaults: the shipped ReDial files."""
    from ..data import DataError, load_rows
    from ..resources import REDIAL_CATALOG, REDIAL_TEST

    path = str(rows_path or REDIAL_TEST)
    loaded = load_rows(path, keep=("dialog_id",))
    missing = [r.where for r in loaded if not isinstance(r.extra.get("dialog_id"), (str, int))]
    if missing:
        raise DataError(f"{len(missing)} row(s) have no dialog_id (needed to split by dialogue), first: "
                        f"{missing[0]}")
    rows = [{"dialog_id": str(r.extra["dialog_id"]), "prompt": r.prompt, "seen_titles": list(r.seen),
             "groundtruth_with_release_year": [[t, y] for t, y in r.groundtruth]} for r in loaded]
    return rows, Catalog.from_file(str(catalog_path or REDIAL_CATALOG))
