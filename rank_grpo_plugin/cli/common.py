"""Helpers shared by the ``rank-grpo`` subcommands (no heavy imports here)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Optional, TypeVar

from ..recsys.catalog import Catalog, CatalogError

T = TypeVar("T")


class CliError(Exception):
    """A user-facing error: printed as ``rank-grpo <cmd>: error: <message>``, exit status 2."""


def progress(iterable: Iterable[T], desc: str, total: Optional[int] = None, unit: str = "it") -> Iterable[T]:
    """A tqdm progress bar on stderr when tqdm is installed and not disabled (RANK_GRPO_PROGRESS=0)."""
    if os.environ.get("RANK_GRPO_PROGRESS", "1") == "0":
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)




def read_catalog(path: str) -> Catalog:
    """The catalog file a command was given: JSONL/JSON/CSV/TSV, or the official pickle through the core's safe
    reader; a bad or unreadable file is a :class:`CliError` (the reward's per-process cache is
    :func:`rank_grpo_plugin.scoring.load_catalog`)."""
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext in (".pkl", ".pickle"):
            return Catalog.from_pickle(path)
        return Catalog.from_file(path)
    except CatalogError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"cannot read catalog {path}: {e}") from None


def cache_dir() -> Path:
    """Where converted models live: ``$RANK_GRPO_CACHE`` or ``~/.cache/rank_grpo_plugin``."""
    return Path(os.environ.get("RANK_GRPO_CACHE") or Path.home() / ".cache" / "rank_grpo_plugin")
