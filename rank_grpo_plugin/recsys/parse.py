"""Parsing "Title (Year)" list lines out of untrusted model text. Standard library only.

Nothing here raises on model output: an unparsable line is ``None``.
"""
from __future__ import annotations

import re
import unicodedata
from typing import List, NamedTuple, Optional, Tuple

__all__ = ["ParsedItem", "normalize_title", "parse_key", "parse_line", "split_ranks"]


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


def normalize_title(title: str) -> str:
    """Comparison key of a title: NFKC, typographic quotes/dashes to ASCII, Unicode casefold, whitespace
    collapsed and stripped. ``normalize_title("The  Matrix") == normalize_title("the matrix")``."""
    if title.isascii():  # NFKC is the identity on ASCII, casefold is lower, "`" is the only mapped character
        if "`" in title:
            title = title.replace("`", "'")
        return " ".join(title.lower().split())
    # str.split() splits on exactly the characters re's \s matches (both use Py_UNICODE_ISSPACE)
    return " ".join(unicodedata.normalize("NFKC", title).translate(_TRANSLATE).casefold().split())


# "1." "1)" "#1" list numbering (not "300: ..." nor "(500) Days of Summer"); "-", "*", "+", bullet characters.
_NUMBERING = re.compile(r"^\s*(?:\d{1,3}[.)](?!\d)|#\d{1,3}[.)]?(?=\s))\s*")
_BULLET = re.compile(r"^\s*[-*+\u2022\u25cf\u25aa\u2023\u2043>]\s+")
_EMPHASIS = ("***", "**", "__", "*", "_")
_QUOTES = ('"', "'")


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


_BULLET_FIRST = frozenset("-*+\u2022\u25cf\u25aa\u2023\u2043>")
_MARK_CHARS = frozenset("*_\"'")
# first characters that may start a bullet, a numbering or a wrapper (non-ASCII ones are checked one by one)
_LEAD = _BULLET_FIRST | _MARK_CHARS | frozenset("#0123456789")


def _title_year(text: str) -> Optional[Tuple[str, int]]:
    r"""``parse_line`` on text already NFKC-normalised and translated, as a plain tuple.

    Written for speed (it runs on every line of every sampled completion) but step for step the regex
    definition: strip; one bullet; one numbering; wrappers; ``^(?P<title>.*?\S)\s*\(\s*(?P<year>\d{4})\s*\)$``;
    wrappers around the title; whitespace collapsed. A regex or the wrapper loop runs only when the first
    (and last) character lets it change anything. The item regex is an equivalent ``rfind``: its suffix
    ``\s*\d{4}\s*\)`` holds no "(", so the year's "(" is the last one; ``\d`` is ``str.isdecimal`` and ``\s``
    ``str.isspace`` (same Unicode tables); the lazy title is what precedes that "(" minus trailing whitespace,
    and ``.`` does not match "\n". ``tests/test_match_fast.py`` checks it against the regex form.
    """
    text = text.strip()
    if not text:
        return None
    first = text[0]
    if first in _LEAD or not first.isascii():
        if first in _BULLET_FIRST:
            text = _BULLET.sub("", text, count=1)
            first = text[:1]
        if first == "#" or first.isdecimal():
            text = _NUMBERING.sub("", text, count=1)
        # bullet and numbering consume their trailing whitespace: none is left at either end here
        if len(text) >= 2 and text[0] in _MARK_CHARS and text[-1] in _MARK_CHARS:
            text = _strip_wrappers(text)
    if text[-1:] != ")":
        return None
    idx = text.rfind("(")
    if idx <= 0:
        return None
    year = text[idx + 1:-1].strip()
    if len(year) != 4 or not year.isdecimal():
        return None
    title = text[:idx].rstrip()
    if "\n" in title:
        return None
    if len(title) >= 2 and title[0] in _MARK_CHARS and title[-1] in _MARK_CHARS:
        title = _strip_wrappers(title)
    title = " ".join(title.split())
    if not title:
        return None
    return title, int(year)


def parse_line(line: str) -> Optional[ParsedItem]:
    """Parse one list line into ``(title, year)``; ``None`` when the line is not an item.

    Accepts ``Title (YYYY)`` with optional list numbering (``1.``, ``1)``), bullets, markdown emphasis and
    quotes around the line or around the title: ``"Dune" (2021)``, ``1. **Dune (2021)**``, ``- *Dune* (2021)``.
    The year must close the line; text after it ("Dune (2021) - great") makes the line unparsable.
    """
    if not isinstance(line, str):
        return None
    if line.isascii():  # NFKC is the identity on ASCII; "`" is the one ASCII character translated
        item = _title_year(line.replace("`", "'") if "`" in line else line)
    else:
        item = _title_year(unicodedata.normalize("NFKC", line).translate(_TRANSLATE))
    return None if item is None else ParsedItem(*item)


def parse_key(line: str) -> Optional[Tuple[str, int]]:
    """``(normalize_title(item.title), item.year)`` for ``item = parse_line(line)``, or ``None``, in one pass.

    When the cleaned line is ASCII the title is already NFKC-normalised, translated and whitespace-collapsed,
    so its key is ``title.lower()``."""
    if not isinstance(line, str):
        return None
    if line.isascii():
        item = _title_year(line.replace("`", "'") if "`" in line else line)
        return None if item is None else (item[0].lower(), item[1])
    text = unicodedata.normalize("NFKC", line).translate(_TRANSLATE)
    item = _title_year(text)
    if item is None:
        return None
    return (item[0].lower() if text.isascii() else normalize_title(item[0])), item[1]


def split_ranks(completion: str, k: Optional[int] = None) -> List[str]:
    """The completion's lines, rank by rank: ``completion.split("\\n")`` with nothing collapsed, so a blank
    line or a preamble is a rank of its own, exactly as the token segmentation counts "\\n". ``k`` keeps the
    first k lines (the rest is overflow)."""
    lines = completion.split("\n") if isinstance(completion, str) else []
    return lines if k is None else lines[:k]
