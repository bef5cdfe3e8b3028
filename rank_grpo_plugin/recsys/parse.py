"""Parsing "Title (Year)" list lines out of untrusted model text. Standard library only.

Nothing here raises on model output: an unparsable line is ``None``.
"""
from __future__ import annotations

import re
import unicodedata
from typing import List, NamedTuple, Optional

__all__ = ["ParsedItem", "normalize_title", "parse_line", "split_ranks"]


class ParsedItem(NamedTuple):
    title: str  # as written (cleaned of list markup), original case
    year: int


# Typographic variants that LLMs emit for the ASCII characters catalogs use.
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
        "\u00a0": " ",
    }
)
_WS = re.compile(r"\s+")


def normalize_title(title: str) -> str:
    """Comparison key of a title: NFKC, typographic quotes/dashes to ASCII, Unicode casefold, whitespace
    collapsed and stripped. ``normalize_title("The  Matrix") == normalize_title("the matrix")``."""
    t = unicodedata.normalize("NFKC", title).translate(_TRANSLATE).casefold()
    return _WS.sub(" ", t).strip()


# "1." "1)" "#1" list numbering (not "300: ..." nor "(500) Days of Summer"); "-", "*", "+", bullet characters.
_NUMBERING = re.compile(r"^\s*(?:\d{1,3}[.)](?!\d)|#\d{1,3}[.)]?(?=\s))\s*")
_BULLET = re.compile(r"^\s*[-*+\u2022\u25cf\u25aa\u2023\u2043>]\s+")
_EMPHASIS = ("***", "**", "__", "*", "_")
_QUOTES = ('"', "'")
_ITEM = re.compile(r"^(?P<title>.*?\S)\s*\(\s*(?P<year>\d{4})\s*\)$")


def _strip_wrappers(text: str) -> str:
    """Remove markdown emphasis and quotes wrapped around ``text`` (repeatedly, in any nesting)."""
    changed = True
    while changed and len(text) >= 2:
        changed = False
        text = text.strip()
        for mark in _EMPHASIS + _QUOTES:
            n = len(mark)
            if len(text) > 2 * n and text.startswith(mark) and text.endswith(mark):
                text = text[n:-n]
                changed = True
                break
    return text.strip()


def parse_line(line: str) -> Optional[ParsedItem]:
    """Parse one list line into ``(title, year)``; ``None`` when the line is not an item.

    Accepts ``Title (YYYY)`` with optional list numbering (``1.``, ``1)``), bullets, markdown emphasis and
    quotes around the line or around the title: ``"Dune" (2021)``, ``1. **Dune (2021)**``, ``- *Dune* (2021)``.
    The year must close the line; text after it ("Dune (2021) - great") makes the line unparsable.
    """
    if not isinstance(line, str):
        return None
    text = unicodedata.normalize("NFKC", line).translate(_TRANSLATE).strip()
    text = _BULLET.sub("", text, count=1)
    text = _NUMBERING.sub("", text, count=1)
    text = _strip_wrappers(text)
    match = _ITEM.match(text)
    if match is None:
        return None
    title = _strip_wrappers(match.group("title"))
    title = _WS.sub(" ", title).strip()
    if not title:
        return None
    return ParsedItem(title, int(match.group("year")))


def split_ranks(completion: str, k: Optional[int] = None) -> List[str]:
    """The completion's lines, rank by rank: ``completion.split("\\n")`` with nothing collapsed, so a blank
    line or a preamble is a rank of its own, exactly as the token segmentation counts "\\n". ``k`` keeps the
    first k lines (the rest is overflow)."""
    lines = completion.split("\n") if isinstance(completion, str) else []
    return lines if k is None else lines[:k]
