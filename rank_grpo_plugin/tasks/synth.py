"""A miniature conversational-recommendation task built from a real catalog, learnable by a tiny model on CPU.

The world: ``groups`` latent preference groups of ``items_per_group`` real catalog items each, plus distractor
items that belong to no group (``items`` in all). A conversation is one user turn naming 1-3 liked items (its
``seen_titles``) of one group -- or of two groups, for a share ``two_group_rate`` of conversations -- in natural
language, plus a request for K recommendations. Its ground truth is the other items of the same group(s), never a
seen one (``gt_size`` of them, or all). The best possible list puts the ground truth on the first ranks: NDCG@K 1.

The SFT target ("teacher") is deliberately imperfect so RL has room to improve: it holds a share
``teacher_recall`` of the ground-truth items, placed on random ranks among random other catalog items (never seen,
never ground truth), K distinct items in all.

Splits: the held-out (validation, test) conversations are *combinations of liked items that never occur in
training* (every item does: the mapping item -> group is learnable, a held-out combination is not memorised).
Training rows may repeat a combination with other wording; validation and test combinations are distinct from
each other too.

Rows have the Reddit-v2 shape (``prompt``, ``completion``, ``seen_titles``, ``groundtruth_with_release_year``, plus
a ``task`` field with the row's split, groups and combination id), so ``rank-grpo prepare`` / ``evaluate`` and
OpenRLHF's launcher use them unchanged. Standard library only; deterministic for a given seed and configuration.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..recsys.catalog import Catalog
from ..recsys.metrics import dcg_at_k, ndcg_at_k
from ..recsys.parse import normalize_title, parse_key, split_ranks

__all__ = ["SynthConfig", "SynthTask", "build_task", "write_task", "expected_ndcg_random_ranks"]

Item = Tuple[str, int]

SPLITS = ("train", "val", "test")

_LIKES = (
    "I loved {items}. Can you recommend something similar?",
    "I just watched {items} and really enjoyed {them}. Any suggestions?",
    "My favourite movies are {items}. What else would I like?",
    "{items} {is_are} great. I am looking for more like {them}.",
    "Big fan of {items}. What should I watch next?",
    "Last week I saw {items} and {it_they} made my week. More of that, please.",
)
_REQUEST = "Recommend {k} movies, one \"Title (Year)\" per line."
_PAPER_PREFIX = (
    "Pretend you are a movie recommender system.\n"
    "I will give you a conversation between a user and you (a recommender system). Based on the conversation, "
    "you need to reply with {k} recommendations. List the standardized English title of each movie in each line "
    "in the form of \"movie name\" (release_year) with NO extra words or sentences.\n"
    "Here is the conversation: USER: "
)


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the task (the ``rank-grpo synth`` flags); see :func:`add_arguments` for their meaning."""

    seed: int = 0
    items: int = 64
    groups: int = 4
    items_per_group: int = 8
    seen_min: int = 1
    seen_max: int = 3
    gt_size: int = 0
    two_group_rate: float = 0.0
    k: int = 20
    train_rows: int = 512
    val_rows: int = 32
    test_rows: int = 64
    teacher_recall: float = 0.5
    max_title_words: int = 1
    prompt_style: str = "short"

    def validate(self) -> None:
        """Raise ValueError naming the flag when the configuration is impossible."""
        def bad(flag: str, why: str) -> None:
            raise ValueError(f"--{flag.replace('_', '-')}: {why}")

        for name in ("items", "groups", "items_per_group", "seen_min", "k", "max_title_words"):
            if getattr(self, name) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("train_rows", "val_rows", "test_rows", "gt_size"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        if self.seen_max < self.seen_min:
            bad("seen_max", f"must be >= --seen-min ({self.seen_min}), got {self.seen_max}")
        if self.seen_max >= self.items_per_group:
            bad("seen_max", f"must be < --items-per-group ({self.items_per_group}) so some group item is left as "
                            f"ground truth, got {self.seen_max}")
        if self.gt_size > self.items_per_group - self.seen_max:
            bad("gt_size", f"at most --items-per-group - --seen-max = {self.items_per_group - self.seen_max} "
                           f"(0 = every unseen item of the group), got {self.gt_size}")
        if self.groups * self.items_per_group > self.items:
            bad("items", f"must be >= --groups x --items-per-group = {self.groups * self.items_per_group}, "
                         f"got {self.items}")
        if not 0.0 <= self.two_group_rate <= 1.0:
            bad("two_group_rate", f"must be in [0, 1], got {self.two_group_rate}")
        if self.two_group_rate > 0 and (self.groups < 2 or self.seen_max < 2):
            bad("two_group_rate", "needs --groups >= 2 and --seen-max >= 2")
        if not 0.0 <= self.teacher_recall <= 1.0:
            bad("teacher_recall", f"must be in [0, 1], got {self.teacher_recall}")
        span = (2 if self.two_group_rate > 0 else 1) * self.items_per_group  # items of a conversation's groups
        if self.k > self.items - span:
            bad("k", f"a teacher list of {self.k} distinct items outside the conversation's group(s) needs "
                     f"--items >= k + {span}, got --items {self.items}")
        if self.prompt_style not in ("short", "paper"):
            bad("prompt_style", f"expected 'short' or 'paper', got {self.prompt_style!r}")
        if self.train_rows + self.val_rows + self.test_rows == 0:
            bad("train_rows", "all three splits are empty")


@dataclass
class SynthTask:
    """A generated task: the item world and the rows of each split."""

    config: SynthConfig
    catalog: List[Item]  # the task's items (group items first, then distractors)
    groups: List[List[Item]]
    rows: Dict[str, List[dict]]

    def summary(self) -> dict:
        """Sizes and reference scores, written to ``task.json``."""
        out: dict = {"config": asdict(self.config), "catalog_items": len(self.catalog),
                     "groups": [[f"{t} ({y})" for t, y in g] for g in self.groups], "splits": {}}
        for split, rows in self.rows.items():
            if not rows:
                out["splits"][split] = {"rows": 0}
                continue
            combos = {r["task"]["combination"] for r in rows}
            gt = [len(r["groundtruth_with_release_year"]) for r in rows]
            out["splits"][split] = {
                "rows": len(rows), "combinations": len(combos),
                "mean_groundtruth": sum(gt) / len(gt),
                # NDCG@K of the teacher lists and of K random distinct unseen task items (expected value)
                "teacher_ndcg": sum(_ndcg_of_list(r) for r in rows) / len(rows),
                "random_list_ndcg": sum(expected_ndcg_random_ranks(len(r["groundtruth_with_release_year"]),
                                                                   len(self.catalog) - len(r["seen_titles"]),
                                                                   self.config.k) for r in rows) / len(rows),
            }
        return out


def _ndcg_of_list(row: dict) -> float:
    """Rank-aligned NDCG@K of a row's own completion, K its number of lines: line j hits when it parses to the key of
    a ground-truth item (every line is a distinct task item, written so that it parses back to that item's key)."""
    gt = {(normalize_title(t), int(y)) for t, y in row["groundtruth_with_release_year"]}
    lines = split_ranks(row["completion"][0]["content"])
    return ndcg_at_k([int(parse_key(line) in gt) for line in lines], len(gt), len(lines))


def expected_ndcg_random_ranks(n_gt: int, n_items: int, k: int) -> float:
    """Expected NDCG@k of k distinct items drawn uniformly from ``n_items`` (of which ``n_gt`` are relevant):
    each rank is relevant with probability n_gt / n_items, so the expected DCG is that share of a full list's."""
    if n_gt == 0 or n_items == 0:
        return 0.0
    full = [1] * k
    p = min(1.0, n_gt / n_items)
    return p * dcg_at_k(full, k) / dcg_at_k(full, min(n_gt, k))  # over the ideal DCG: n_gt hits on top


def _eligible_items(catalog: Catalog, max_words: int) -> List[Item]:
    """Catalog items with short titles that are unambiguous: one year per normalised title, 4-digit year, and a
    "Title (Year)" line that parses back to the item's key (so every scorer credits it)."""
    by_key: Dict[str, List[Item]] = {}
    for title, year in catalog:
        if len(title.split()) > max_words or not (1000 <= year <= 9999) or "\n" in title or "(" in title:
            continue
        if parse_key(f"{title} ({year})") != (normalize_title(title), year):
            continue
        by_key.setdefault(normalize_title(title), []).append((title, year))
    return sorted(v[0] for v in by_key.values() if len(v) == 1)


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _prompt(cfg: SynthConfig, liked: Sequence[Item], rng: random.Random) -> str:
    many = len(liked) > 1
    text = rng.choice(_LIKES).format(items=_join([f"{t} ({y})" for t, y in liked]),
                                     them="them" if many else "it", it_they="they" if many else "it",
                                     is_are="are" if many else "is")
    text = text[0].upper() + text[1:]
    if cfg.prompt_style == "paper":
        return _PAPER_PREFIX.format(k=cfg.k) + text
    return text + " " + _REQUEST.format(k=cfg.k)


def _combination_count(cfg: SynthConfig, two_groups: bool) -> int:
    """How many distinct (groups, liked items) combinations exist of one kind."""
    m = cfg.items_per_group
    if not two_groups:
        return cfg.groups * sum(math.comb(m, n) for n in range(cfg.seen_min, cfg.seen_max + 1))
    per_pair = sum(math.comb(m, n1) * math.comb(m, n - n1)
                   for n in range(max(2, cfg.seen_min), cfg.seen_max + 1) for n1 in range(1, n))
    return math.comb(cfg.groups, 2) * per_pair


Combination = Tuple[Tuple[int, ...], Tuple[Tuple[int, int], ...]]  # (group ids, ((group, member index), ...))


def _sample_combination(cfg: SynthConfig, rng: random.Random, two_groups: bool) -> Combination:
    """A random combination: number of liked items uniform in [seen_min, seen_max], then the items."""
    m = cfg.items_per_group
    if not two_groups:
        g = rng.randrange(cfg.groups)
        n = rng.randint(cfg.seen_min, cfg.seen_max)
        return (g,), tuple((g, i) for i in sorted(rng.sample(range(m), n)))
    g1, g2 = sorted(rng.sample(range(cfg.groups), 2))
    n = rng.randint(max(2, cfg.seen_min), cfg.seen_max)
    n1 = rng.randint(1, n - 1)
    return (g1, g2), (tuple((g1, i) for i in sorted(rng.sample(range(m), n1)))
                      + tuple((g2, i) for i in sorted(rng.sample(range(m), n - n1))))


def _combination_id(combo: Combination) -> str:
    """Stable readable id, e.g. ``g0:1,5|g2:3``."""
    parts: Dict[int, List[str]] = {}
    for g, i in combo[1]:
        parts.setdefault(g, []).append(str(i))
    return "|".join(f"g{g}:{','.join(v)}" for g, v in sorted(parts.items()))


def build_task(cfg: SynthConfig, catalog: Catalog) -> SynthTask:
    """Generate the task from ``catalog`` (deterministic for ``cfg``); ValueError naming the flag when impossible."""
    cfg.validate()
    rng = random.Random(cfg.seed)
    pool = _eligible_items(catalog, cfg.max_title_words)
    if len(pool) < cfg.items:
        raise ValueError(f"--items {cfg.items}: the catalog has only {len(pool)} items with at most "
                         f"{cfg.max_title_words} title words and one year per title (raise --max-title-words)")
    chosen = rng.sample(pool, cfg.items)
    groups = [chosen[i * cfg.items_per_group:(i + 1) * cfg.items_per_group] for i in range(cfg.groups)]

    held = cfg.val_rows + cfg.test_rows
    n_two = round(held * cfg.two_group_rate)
    for two, need in ((False, held - n_two), (True, n_two)):
        have = _combination_count(cfg, two) if (not two or cfg.two_group_rate > 0) else 0
        if need and need >= have:
            kind = "two-group" if two else "one-group"
            raise ValueError(f"--val-rows + --test-rows = {held}: needs {need} distinct {kind} combinations of "
                             f"liked items (and some left for training), but only {have} exist; lower them or "
                             f"raise --items-per-group / --seen-max")
    held_out: List[Combination] = []
    taken = set()
    for two in [True] * n_two + [False] * (held - n_two):
        while True:
            c = _sample_combination(cfg, rng, two)
            if c not in taken:
                break
        taken.add(c)
        held_out.append(c)
    rng.shuffle(held_out)
    split_combos: Dict[str, List[Combination]] = {"val": held_out[:cfg.val_rows], "test": held_out[cfg.val_rows:]}
    train: List[Combination] = []
    has_single_left = _combination_count(cfg, False) > held - n_two
    for _ in range(cfg.train_rows):
        two = cfg.two_group_rate > 0 and (rng.random() < cfg.two_group_rate or not has_single_left)
        while True:
            c = _sample_combination(cfg, rng, two)
            if c not in taken:
                break
        train.append(c)
    split_combos["train"] = train

    rows = {split: [_row(cfg, split, c, groups, chosen, rng) for c in split_combos[split]] for split in SPLITS}
    return SynthTask(cfg, list(chosen), groups, rows)


def _row(cfg: SynthConfig, split: str, combo: Combination, groups: List[List[Item]], task_items: List[Item],
         rng: random.Random) -> dict:
    group_ids = combo[0]
    liked = [groups[g][i] for g, i in combo[1]]
    rng.shuffle(liked)  # mention order is wording, not identity
    seen = set(liked)
    candidates = [it for g in group_ids for it in groups[g] if it not in seen]
    gt = rng.sample(candidates, cfg.gt_size) if cfg.gt_size else list(candidates)
    n_good = min(len(gt), cfg.k, round(cfg.teacher_recall * len(gt)))
    good = rng.sample(gt, n_good)
    gt_set = set(gt)
    others = [it for it in task_items if it not in seen and it not in gt_set]
    listed = good + rng.sample(others, cfg.k - n_good)
    rng.shuffle(listed)
    return {
        "prompt": [{"role": "user", "content": _prompt(cfg, liked, rng)}],
        "completion": [{"role": "assistant", "content": "\n".join(f"{t} ({y})" for t, y in listed)}],
        "seen_titles": [t for t, _ in liked],
        "groundtruth_with_release_year": [[t, str(y)] for t, y in gt],
        "task": {"split": split, "groups": list(group_ids), "combination": _combination_id(combo)},
    }


def write_task(task: SynthTask, out_dir) -> Dict[str, Path]:
    """Write ``train/val/test.jsonl``, ``catalog.jsonl`` (the task's items) and ``task.json``; returns the paths."""
    from .common import write_task_files

    return write_task_files(out_dir, task.rows, task.catalog, task.summary())


# ------------------------------------------------------------------------------------------------ CLI
_HELP = {
    "seed": "random seed: the same seed and flags give the same task, byte for byte",
    "items": "catalog items in the task: the group items plus distractors that belong to no group",
    "groups": "latent preference groups",
    "items_per_group": "items per group",
    "seen_min": "fewest liked (seen) items a conversation names",
    "seen_max": "most liked (seen) items a conversation names (< --items-per-group)",
    "gt_size": "ground-truth items per conversation, drawn from the unseen items of its group(s); 0 = all of them",
    "two_group_rate": "share of conversations that name items of two groups (their ground truth mixes both)",
    "k": "list length K asked for (and of the teacher lists)",
    "train_rows": "training rows (combinations may repeat with other wording)",
    "val_rows": "validation rows (each a combination never seen in training)",
    "test_rows": "test rows (each a combination seen neither in training nor in validation)",
    "teacher_recall": "share of a conversation's ground truth the SFT teacher lists (on random ranks, the other "
                      "lines random unseen catalog items): the SFT start's quality",
    "max_title_words": "only catalog titles of at most this many words (shorter lists, faster CPU runs)",
    "prompt_style": "'short' (one user turn and the request) or 'paper' (the paper's prompt template around it)",
}


def add_arguments(p) -> None:
    """The task's flags on an argparse parser (``--items-per-group`` for ``items_per_group`` ...)."""
    from .common import add_config_arguments

    add_config_arguments(p, SynthConfig, _HELP, {"prompt_style": ("short", "paper")})


def config_from_args(args) -> SynthConfig:
    from .common import config_from_args as _from_args

    return _from_args(SynthConfig, args)


def default_catalog_path() -> Path:
    from ..resources import REDDIT_V2_CATALOG

    return REDDIT_V2_CATALOG


def load_task_catalog(path: Optional[str]) -> Catalog:
    return Catalog.from_file(str(path or default_catalog_path()))
