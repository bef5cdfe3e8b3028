"""The list reward of one completion -- per-rank hits, NDCG@K and in-catalog rate -- and a per-process catalog
cache: what a host's reward function calls for every sample (``rank_grpo_plugin.openrlhf.reward`` for OpenRLHF).

Labels are decoded by the one row schema (:func:`rank_grpo_plugin.data.parse_label`). Model output is never
trusted: any completion, however broken, only earns zero relevance.

The catalog is one file for the whole run: :func:`load_catalog` and :func:`check_catalog` compare it, on every use,
with the content this process first read (and with the launcher's hash, ``RankGRPOOptions.catalog_sha256``): an
``os.stat`` per call, the file hashed again only when its size or modification time moved. A catalog that changes
or vanishes during the run raises :class:`CatalogChangedError` -- rewards from two catalogs in one run would not
be comparable, and nothing could reproduce them from the file.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Any, Dict, Optional, Tuple

from .data import DataError, LabelError, parse_label

__all__ = ["CatalogChangedError", "check_catalog", "file_sha256", "load_catalog", "score_completion"]

logger = logging.getLogger("rank_grpo_plugin.reward")


class CatalogChangedError(DataError):
    """The catalog file changed, or vanished, after the run started (bad data, like a malformed label)."""


_CATALOGS: Dict[str, Any] = {}
_STAMPS: Dict[str, Tuple[Tuple[int, int], str]] = {}  # path -> ((size, mtime_ns), sha256) of what this process read
_CATALOG_LOCK = threading.RLock()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_catalog(path: str, expect_sha256: Optional[str] = None) -> str:
    """The sha256 of catalog file ``path``, which must be the content this process saw first (or, before that,
    ``expect_sha256``: the launcher's). Cheap: one ``os.stat``; the file is hashed again only when its size or
    modification time moved (a ``touch`` is no change). Raises :class:`CatalogChangedError` naming the file."""
    with _CATALOG_LOCK:
        known = _STAMPS.get(path)
        reference = known[1] if known else expect_sha256
        try:
            st = os.stat(path)
            key = (st.st_size, st.st_mtime_ns)
            if known is not None and known[0] == key:
                return known[1]
            sha = file_sha256(path)
        except FileNotFoundError:
            if reference is None:
                from .recsys.catalog import CatalogError

                raise CatalogError(f"cannot read catalog {path}: no such file") from None
            raise CatalogChangedError(f"catalog {path} is gone: it was removed or renamed after the run started (or "
                                      "is not on this node); every reward of a run must come from one catalog: "
                                      "restore the file or start a new run") from None
        if reference is not None and sha != reference:
            raise CatalogChangedError(f"catalog {path} changed during the run (content sha256 {reference[:16]} when "
                                      f"the run started, {sha[:16]} now, {st.st_size:,} bytes); every reward of a "
                                      "run must come from one catalog: restore the file, or start a new run with "
                                      "the new catalog")
        _STAMPS[path] = (key, sha)
        return sha


def load_catalog(path: str, expect_sha256: Optional[str] = None):
    """Catalog for ``path``, loaded once per process (reward functions run in threads) and checked on every call
    with :func:`check_catalog` (raises :class:`CatalogChangedError` when the file changed since the first load, or
    differs from ``expect_sha256``)."""
    with _CATALOG_LOCK:
        check_catalog(path, expect_sha256)
        cat = _CATALOGS.get(path)
        if cat is None:
            from .recsys.catalog import Catalog

            cat = Catalog.from_file(path)
            check_catalog(path)  # unchanged while it was parsed
            _CATALOGS[path] = cat
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
