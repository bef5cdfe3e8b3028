"""Ranking metrics over binary relevance lists. Standard library only.

Both evaluation protocols use these: the paper's (relevance of the list after dropping seen and out-of-catalog
items) and the rank-aligned one (relevance per line, as the reward sees it); they differ only in the ``hits``
list passed in and, for the paper's NDCG, in ``ideal_len``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ["dcg_at_k", "ndcg_at_k", "recall_at_k"]


def _check_k(k: int) -> int:
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return k


def dcg_at_k(hits: Sequence[float], k: int) -> float:
    """sum_{i=1..k} hits_i / log2(i + 1) (1-based i); missing positions count 0."""
    k = _check_k(k)
    return sum(float(h) / math.log2(i + 2) for i, h in enumerate(hits[:k]) if h)


def recall_at_k(hits: Sequence[float], n_relevant: int, k: int) -> float:
    """Relevant items in the top k / number of relevant items; 0.0 when there are none."""
    k = _check_k(k)
    if n_relevant <= 0:
        return 0.0
    return min(1.0, sum(float(h) for h in hits[:k]) / n_relevant)


def ndcg_at_k(hits: Sequence[float], n_relevant: int, k: int, ideal_len: Optional[int] = None) -> float:
    """DCG@k / IDCG@k; IDCG places min(n_relevant, k, ideal_len) relevant items at the top.

    ``ideal_len`` caps the ideal list's length (the official evaluation takes it as the length of the filtered
    list); None means no cap. Returns 0.0 when the ideal DCG is 0.
    """
    k = _check_k(k)
    n_ideal = min(int(n_relevant), k) if ideal_len is None else min(int(n_relevant), k, int(ideal_len))
    if n_ideal <= 0:
        return 0.0
    idcg = sum(1.0 / math.log2(i + 2) for i in range(n_ideal))
    return dcg_at_k(hits, k) / idcg
