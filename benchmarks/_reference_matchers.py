"""The rank-aligned list rules written the slow, obvious way: the reference the fast parser and matcher
(``rank_grpo_plugin.recsys.parse`` / ``.match``) are checked against, by ``tests/test_match_fast.py`` and by
``benchmarks/reward_throughput.py`` (its ``strawman`` candidate and the line parser of its ``official`` baseline).

Deliberate reference copies: each function restates a rule of ``rank_grpo_plugin/recsys/`` in its defining form --
the regexes applied to every line, the wrapper loop, year parsing, the catalog scanned pair by pair with every
title normalised again, the ground truth a plain list -- so that the package's optimised code is checked against
an independent statement of the same rules. Do not import them from the package: the comparison would be void.
Standard library only.
"""
from __future__ import annotations

import re
import unicodedata

__all__ = ["K", "TOL", "TYPOGRAPHIC", "ref_normalize", "ref_parse", "ref_unwrap", "ref_year", "reference_hits",
           "reference_hits_and_flags"]

K = 20  # ranks of a list
TOL = 2  # max |year difference| of a ground-truth match

# Typographic variants and the ASCII character each one means (rank_grpo_plugin.recsys.parse._TRANSLATE).
TYPOGRAPHIC = {
    "\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u00a0": " ",
}
_TABLE = str.maketrans(TYPOGRAPHIC)
_WS = re.compile(r"\s+")
_BULLET = re.compile(r"^\s*[-*+\u2022\u25cf\u25aa\u2023\u2043>]\s+")
_NUMBERING = re.compile(r"^\s*(?:\d{1,3}[.)](?!\d)|#\d{1,3}[.)]?(?=\s))\s*")
_ITEM = re.compile(r"^(?P<title>.*?\S)\s*\(\s*(?P<year>\d{4})\s*\)$")
_WRAPPERS = ("***", "**", "__", "*", "_", '"', "'")


def ref_normalize(title: str) -> str:
    """Title key: NFKC, typographic characters to ASCII, casefold, whitespace runs collapsed, stripped."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", title).translate(_TABLE).casefold()).strip()


def ref_unwrap(text: str) -> str:
    """Emphasis and quotes around ``text`` removed, repeatedly. A deliberate reference copy of
    ``rank_grpo_plugin.recsys.parse._strip_wrappers`` (which the fast parser calls only when a wrapper can apply)."""
    changed = True
    while changed and len(text) >= 2:
        changed = False
        text = text.strip()
        for mark in _WRAPPERS:
            n = len(mark)
            if len(text) > 2 * n and text.startswith(mark) and text.endswith(mark):
                text = text[n:-n]
                changed = True
                break
    return text.strip()


def ref_parse(line: str):
    """``(title, year)`` of a "Title (Year)" list line, or None: one bullet, one numbering, wrappers, the item regex,
    wrappers around the title, whitespace collapsed (the definition parse.parse_line implements without regexes)."""
    text = unicodedata.normalize("NFKC", line).translate(_TABLE).strip()
    text = _NUMBERING.sub("", _BULLET.sub("", text, count=1), count=1)
    m = _ITEM.match(ref_unwrap(text))
    if m is None:
        return None
    title = _WS.sub(" ", ref_unwrap(m.group("title"))).strip()
    return (title, int(m.group("year"))) if title else None


def ref_year(value):
    """A catalog or ground-truth year as int: an int, an integral float or a digit string; None otherwise. A
    deliberate reference copy of ``rank_grpo_plugin.recsys.catalog.parse_year``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def reference_hits_and_flags(completion, groundtruth, seen_titles, catalog_pairs, k=K, tol=TOL, flags=True):
    """``(hits, in_catalog)``, k entries each, by the rules read literally: line j of ``completion.split("\\n")``
    is rank j; it is in the catalog when it parses and a catalog pair has its normalised title and year (the
    pairs scanned one by one, every title normalised again); it hits when it is in the catalog, its title was not
    seen (seen titles normalised again for every line) and an unmatched ground-truth item with that title lies
    within ``tol`` years (tried 0, +1, -1, +2, -2, ...; each ground-truth entry matched once).

    ``flags=False`` computes the hits only (``in_catalog`` stays zeros): a line that cannot hit is not looked up.
    """
    open_gt = [[ref_normalize(t), ref_year(y)] for t, y in groundtruth]
    offsets = [0] + [d for e in range(1, tol + 1) for d in (e, -e)]
    hits, in_catalog = [0] * k, [0] * k
    if not (flags or open_gt):
        return hits, in_catalog
    for j, line in enumerate(completion.split("\n")[:k]):
        item = ref_parse(line)
        if item is None:
            continue
        key, year = ref_normalize(item[0]), item[1]
        seen = any(isinstance(s, str) and ref_normalize(s) == key for s in seen_titles)
        if seen and not flags:
            continue
        if not any(ref_year(y) == year and ref_normalize(t) == key for t, y in catalog_pairs):
            continue
        in_catalog[j] = int(flags)
        if seen:
            continue
        for d in offsets:
            if [key, year + d] in open_gt:
                open_gt.remove([key, year + d])
                hits[j] = 1
                break
    return hits, in_catalog


def reference_hits(completion, groundtruth, seen_titles, catalog_pairs, k=K, tol=TOL):
    """The hits of :func:`reference_hits_and_flags` (what ``catalog_hits`` returns)."""
    return reference_hits_and_flags(completion, groundtruth, seen_titles, catalog_pairs, k, tol, flags=False)[0]
