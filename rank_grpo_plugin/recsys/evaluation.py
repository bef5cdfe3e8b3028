"""Evaluation of generated recommendation lists: the paper's protocol, the rank-aligned one, and diagnostics.

Standard library only. Two protocols, both built from :mod:`.parse`, :mod:`.match` and :mod:`.metrics`:

* **paper** (numbers comparable with Table 1 of arXiv 2510.20150, as the official evaluation computes them):
  parse the items out of the completion (unparsable lines are dropped), drop items whose title was seen in the
  conversation and items not in the catalog, *compacting* the list; then match against the ground truth (title
  equal after normalisation, |year difference| <= ``year_tolerance``, each ground-truth item matched once).
  Recall@k = hits in the top k / number of ground-truth items; NDCG@k with the ideal DCG taken over the
  filtered list's length (``ideal_len``), as the official code does.
* **rank-aligned** (the reward's view, :func:`~rank_grpo_plugin.recsys.match.catalog_hits`): line j of the
  completion is rank j; blank, unparsable, seen and out-of-catalog lines keep their rank and are misses; the ideal
  DCG places min(#ground truth, k) hits at the top.

Known, deliberate differences from the official script: titles and seen titles compare through
:func:`normalize_title` (the official code compares raw strings), and matching is one-to-one between ground-truth
items and list items (the official loop can let two identical ground-truth entries claim the same list item).
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

from .catalog import Catalog
from .match import GroundTruth, catalog_hits_and_flags, year_offsets
from .metrics import ndcg_at_k, recall_at_k
from .parse import normalize_title, parse_line, split_ranks

__all__ = [
    "DEFAULT_KS",
    "ListEvaluation",
    "aggregate",
    "evaluate_list",
    "paired_difference",
    "paper_hits",
    "sample_spread",
]

DEFAULT_KS: Tuple[int, ...] = (5, 10, 20)


def paper_hits(
    completion: str,
    groundtruth: Iterable[Sequence[object]],
    seen_titles: Iterable[str],
    catalog: Catalog,
    year_tolerance: int = 2,
    truncate_first: Optional[int] = None,
) -> List[int]:
    """Relevance of the *filtered* list (the paper's protocol).

    The completion's parsable items (all lines; ``truncate_first=k`` keeps only the first k parsable items before
    filtering) minus seen and out-of-catalog items, in order; entry i is 1 when filtered item i matched a
    ground-truth item. ``len(result)`` is the filtered list's length (the ideal length of the paper's NDCG).
    """
    items = [it for it in (parse_line(line) for line in split_ranks(completion)) if it is not None]
    if truncate_first is not None:
        items = items[: int(truncate_first)]
    seen = {normalize_title(t) for t in seen_titles if isinstance(t, str)}
    kept = [it for it in items if normalize_title(it.title) not in seen and catalog.contains(it.title, it.year)]
    gt = GroundTruth(groundtruth)
    offsets = year_offsets(year_tolerance)
    return [1 if gt.take(normalize_title(it.title), it.year, offsets) else 0 for it in kept]


@dataclass
class ListEvaluation:
    """Everything measured on one (completion, row) pair."""

    n_groundtruth: int
    paper_hits: List[int]  # filtered list relevance (length = filtered length)
    rank_hits: List[int]  # K entries, line-aligned
    metrics: Dict[str, float]  # "paper/recall@5", "rank/ndcg@20", ...
    n_lines: int  # non-blank lines of the whole completion
    n_items: int  # lines that parse as "Title (Year)"
    n_in_catalog: int  # parsed items in the catalog (exact title/year)
    n_seen: int  # parsed items whose title was seen in the conversation
    n_duplicates: int  # parsed items repeating an earlier (title, year) of the same list
    rank_parsed: List[int] = field(default_factory=list)  # K entries: line j parses
    rank_in_catalog: List[int] = field(default_factory=list)  # K entries: line j is an item the catalog holds


def evaluate_list(
    completion: str,
    groundtruth: Sequence[Sequence[object]],
    seen_titles: Sequence[str],
    catalog: Catalog,
    ks: Sequence[int] = DEFAULT_KS,
    k: int = 20,
    year_tolerance: int = 2,
    truncate_first: Optional[int] = None,
) -> ListEvaluation:
    """Score one generated list under both protocols and collect format diagnostics.

    ``k`` is the list length K the model was asked for (rank-aligned hits cover lines 1..K); ``ks`` are the
    cut-offs reported. ``groundtruth`` is a list of [title, year] pairs, ``seen_titles`` a list of titles.
    """
    groundtruth = list(groundtruth)
    seen_titles = list(seen_titles)
    n_gt = GroundTruth(groundtruth).size
    p_hits = paper_hits(completion, groundtruth, seen_titles, catalog, year_tolerance, truncate_first)
    r_hits, r_in_catalog = catalog_hits_and_flags(completion, groundtruth, seen_titles, catalog, k=k,
                                                  year_tolerance=year_tolerance)
    metrics: Dict[str, float] = {}
    for c in ks:
        metrics[f"paper/recall@{c}"] = recall_at_k(p_hits, n_gt, c)
        metrics[f"paper/ndcg@{c}"] = ndcg_at_k(p_hits, n_gt, c, ideal_len=len(p_hits))
        metrics[f"rank/recall@{c}"] = recall_at_k(r_hits, n_gt, c)
        metrics[f"rank/ndcg@{c}"] = ndcg_at_k(r_hits, n_gt, c)

    lines = split_ranks(completion)
    seen = {normalize_title(t) for t in seen_titles if isinstance(t, str)}
    n_items = n_cat = n_seen = n_dup = 0
    earlier = set()
    for line in lines:
        item = parse_line(line)
        if item is None:
            continue
        n_items += 1
        key = (normalize_title(item.title), item.year)
        n_dup += key in earlier
        earlier.add(key)
        n_seen += key[0] in seen
        n_cat += catalog.contains(item.title, item.year)
    rank_parsed = [int(parse_line(line) is not None) for line in split_ranks(completion, k)]
    rank_parsed += [0] * (k - len(rank_parsed))
    return ListEvaluation(
        n_groundtruth=n_gt,
        paper_hits=p_hits,
        rank_hits=r_hits,
        metrics=metrics,
        n_lines=sum(1 for line in lines if line.strip()),
        n_items=n_items,
        n_in_catalog=n_cat,
        n_seen=n_seen,
        n_duplicates=n_dup,
        rank_parsed=rank_parsed,
        rank_in_catalog=r_in_catalog,
    )


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def aggregate(evals: Sequence[ListEvaluation], k: int = 20) -> Dict[str, object]:
    """Average a run's per-row evaluations into one JSON-ready dict.

    Metrics are means over rows (rows of the same conversation each count, as in the paper's splits).
    Rates: ``in_catalog_rate`` = in-catalog items / parsed items, ``format_rate`` = parsed lines / non-blank
    lines, ``duplicate_rate`` = repeated items / parsed items, ``seen_rate`` = seen items / parsed items (all
    pooled over rows); ``exact_k_rate`` = share of lists with exactly K parsed items;
    ``length_histogram`` maps parsed-item count to number of lists; ``per_rank_hit_rate[j]`` is the share of rows
    whose line j+1 is a hit (rank-aligned), ``per_rank_format_rate[j]`` the share whose line j+1 parses, and
    ``paper_per_position_hit_rate[j]`` the share whose filtered item j+1 is a hit.
    """
    n = len(evals)
    metric_names = list(evals[0].metrics) if evals else []
    items = sum(e.n_items for e in evals)
    lines = sum(e.n_lines for e in evals)
    hist = Counter(e.n_items for e in evals)
    per_rank = [_mean([e.rank_hits[j] for e in evals]) for j in range(k)]
    per_fmt = [_mean([e.rank_parsed[j] for e in evals]) for j in range(k)]
    paper_pos = [_mean([(e.paper_hits[j] if j < len(e.paper_hits) else 0) for e in evals]) for j in range(k)]
    return {
        "rows": n,
        "metrics": {name: _mean([e.metrics[name] for e in evals]) for name in metric_names},
        "per_rank_hit_rate": per_rank,
        "per_rank_format_rate": per_fmt,
        "paper_per_position_hit_rate": paper_pos,
        "in_catalog_rate": (sum(e.n_in_catalog for e in evals) / items) if items else 0.0,
        "format_rate": (items / lines) if lines else 0.0,
        "duplicate_rate": (sum(e.n_duplicates for e in evals) / items) if items else 0.0,
        "seen_rate": (sum(e.n_seen for e in evals) / items) if items else 0.0,
        "exact_k_rate": _mean([float(e.n_items == k) for e in evals]),
        "mean_items": _mean([float(e.n_items) for e in evals]),
        "mean_filtered_length": _mean([float(len(e.paper_hits)) for e in evals]),
        "mean_groundtruth": _mean([float(e.n_groundtruth) for e in evals]),
        "length_histogram": {str(c): hist[c] for c in sorted(hist)},
    }


def sample_spread(summaries: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """Spread of N evaluations of the same rows (one per sampled list per conversation).

    ``summaries`` are :func:`aggregate` outputs, one per sample index. Returns ``{"n": N, "metrics_mean": {..},
    "metrics_sd": {..}, "metrics_per_sample": [{..}, ...]}`` with the sample standard deviation (ddof 1; 0 when
    N = 1) of each metric's per-sample mean over rows. The pooled ``aggregate`` of all N x rows lists has the
    same means.
    """
    per = [dict(s["metrics"]) for s in summaries]  # type: ignore[arg-type]
    n = len(per)
    names = list(per[0]) if per else []
    mean = {k: _mean([p[k] for p in per]) for k in names}
    sd = {k: (sum((p[k] - mean[k]) ** 2 for p in per) / (n - 1)) ** 0.5 if n > 1 else 0.0 for k in names}
    return {"n": n, "metrics_mean": mean, "metrics_sd": sd, "metrics_per_sample": per}


def paired_difference(base: Sequence[float], other: Sequence[float], clusters: Sequence[Hashable],
                      resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> Dict[str, object]:
    """``other`` against ``base`` on the same rows: the mean of ``other[i] - base[i]`` with a bootstrap
    confidence interval that resamples *clusters* (rows of one conversation move together: they share the prompt
    and the lists, so they are not independent).

    ``base``, ``other``: one metric per row (e.g. NDCG@20, already averaged over a run's sampled lists);
    ``clusters``: each row's conversation. Each resample draws as many clusters as there are, with replacement,
    and takes the mean difference over the rows it drew; the interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of those means (nearest rank). Returns ``{"rows", "clusters", "mean_base",
    "mean_other", "mean_diff", "ci": [lo, hi], "level", "resamples", "better", "worse", "tied"}`` (rows where
    other is above / below / equal to base). Deterministic per ``seed``.
    """
    n = len(base)
    if n == 0 or len(other) != n or len(clusters) != n:
        raise ValueError(f"paired_difference needs equal, non-empty rows: {n} base, {len(other)} other, "
                         f"{len(clusters)} clusters")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples} and {level}")
    sums: Dict[Hashable, float] = {}
    counts: Dict[Hashable, int] = {}
    for c, a, b in zip(clusters, base, other):
        sums[c] = sums.get(c, 0.0) + (b - a)
        counts[c] = counts.get(c, 0) + 1
    keys = list(sums)
    s_list, n_list = [sums[c] for c in keys], [counts[c] for c in keys]
    rng = random.Random(seed)
    means = []
    for _ in range(resamples):
        drawn = rng.choices(range(len(keys)), k=len(keys))
        means.append(sum(s_list[j] for j in drawn) / sum(n_list[j] for j in drawn))
    means.sort()
    lo = means[max(0, min(resamples - 1, int((1 - level) / 2 * resamples)))]
    hi = means[max(0, min(resamples - 1, int((1 + level) / 2 * resamples + 0.5) - 1))]
    diffs = [b - a for a, b in zip(base, other)]
    return {"rows": n, "clusters": len(keys), "mean_base": _mean(base), "mean_other": _mean(other),
            "mean_diff": sum(diffs) / n, "ci": [lo, hi], "level": level, "resamples": resamples,
            "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
            "tied": sum(d == 0 for d in diffs)}
