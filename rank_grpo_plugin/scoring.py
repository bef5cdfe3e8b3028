"""The list reward of one completion -- per-rank hits, NDCG@K and in-catalog rate -- and a per-process catalog
cache: what a host's reward function calls for every sample (``rank_grpo_plugin.openrlhf.reward`` for OpenRLHF).

Labels are decoded by the one row schema (:func:`rank_grpo_plugin.data.parse_label`). Model output is never
trusted: any completion, however broken, only earns zero relevance.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict

from .data import LabelError, parse_label

__all__ = ["load_catalog", "score_completion"]

logger = logging.getLogger("rank_grpo_plugin.reward")


_CATALOGS: Dict[str, Any] = {}
_CATALOG_LOCK = threading.Lock()


def load_catalog(path: str):
    """Catalog for ``path``, loaded once per process (reward functions run in threads)."""
    with _CATALOG_LOCK:
        cat = _CATALOGS.get(path)
        if cat is None:
            from .recsys.catalog import Catalog

            cat = _CATALOGS[path] = Catalog.from_file(path)
        return cat


def score_completion(completion: str, label: Any, catalog, num_ranks: int, year_tolerance: int,
                     where: str = "sample") -> Dict[str, Any]:
    """Per-rank hits, NDCG@K and in-catalog rate of one completion. Raises :class:`LabelError` only."""
    from .recsys.match import catalog_hits_and_flags
    from .recsys.metrics import ndcg_at_k

    groundtruth, seen = parse_label(label, where)
    try:  # one pass over the lines: hits and per-line in-catalog flags together
        hits, flags = catalog_hits_and_flags(completion, groundtruth, seen, catalog, k=num_ranks,
                                             year_tolerance=year_tolerance)
        in_cat = sum(flags)
    except LabelError:
        raise
    except Exception as e:  # model output must never crash training
        logger.warning("rank_grpo reward: %s: unexpected error on model output, scored 0: %r", where, e)
        hits, in_cat = [0] * num_ranks, 0
    hits = [int(bool(h)) for h in hits][:num_ranks] + [0] * max(0, num_ranks - len(hits))
    return {
        "hits": hits,
        "ndcg": float(ndcg_at_k(hits, len(groundtruth), num_ranks)),
        "in_catalog_rate": in_cat / float(num_ranks),
    }
