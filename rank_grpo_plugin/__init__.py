"""Rank-GRPO for OpenRLHF: rank-level rewards, advantages and policy loss for LLM-based recommenders.

Public API (stable names; see README):

    newline_counts, rank_ids, rank_rewards, list_returns, rank_advantages, level_advantages, token_advantages,
    rank_policy_loss,
    rank_grpo_advantages (the whole recipe, rank_grpo_plugin.algorithm),
    Catalog, catalog_hits, parse_line, normalize_title, recall_at_k, ndcg_at_k

Importing this package is cheap: it imports neither torch nor OpenRLHF until a name that needs it is used.
"""
from __future__ import annotations

from ._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "newline_counts": ".ranks",
    "rank_ids": ".ranks",
    "num_emitted_items": ".ranks",
    "rank_rewards": ".rewards",
    "REWARD_SCHEMES": ".rewards",
    "list_returns": ".rewards",
    "LIST_RETURNS": ".rewards",
    "rank_advantages": ".advantages",
    "level_advantages": ".advantages",
    "ADVANTAGE_LEVELS": ".advantages",
    "token_advantages": ".advantages",
    "ADVANTAGE_SCALES": ".advantages",
    "rank_policy_loss": ".loss",
    "rank_grpo_advantages": ".algorithm",
    "RecipeConfig": ".config",
    "LOSS_AGGREGATIONS": ".loss",
    "Catalog": ".recsys.catalog",
    "CatalogError": ".recsys.catalog",
    "load_pickle_catalog": ".recsys.catalog",
    "catalog_hits": ".recsys.match",
    "parse_line": ".recsys.parse",
    "normalize_title": ".recsys.parse",
    "split_ranks": ".recsys.parse",
    "recall_at_k": ".recsys.metrics",
    "ndcg_at_k": ".recsys.metrics",
    "dcg_at_k": ".recsys.metrics",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list:
    return sorted(set(globals()) | set(_EXPORTS))
