"""Line-aligned catalog relevance: which rank of a generated list hits the ground truth.

Deliberate difference from the official Rank-GRPO code: that code drops blank, preamble and unparsable lines
before matching, which shifts the credit of every later item to an earlier rank and so misaligns the reward
with the tokens it is applied to. Here rank k is always the k-th line of ``completion.split("\\n")`` -- the
same segmentation as :func:`rank_grpo_plugin.rank_ids` -- and an invalid line is a miss at its own rank.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

from .catalog import Catalog, parse_year
from .parse import normalize_title, parse_key, split_ranks

__all__ = ["catalog_hits", "catalog_hits_and_flags", "GroundTruth", "year_offsets"]


def year_offsets(tolerance: int) -> List[int]:
    """Order in which year differences are tried: 0, +1, -1, +2, -2, ..."""
    out = [0]
    for d in range(1, int(tolerance) + 1):
        out += [d, -d]
    return out


class GroundTruth:
    """Multiset of not-yet-matched ground-truth items, keyed by normalised title.

    ``groundtruth`` is a list of [title, year] pairs (year as int or digit string); a malformed pair raises
    ValueError naming its index (labels are data we control, unlike model output).
    """

    def __init__(self, groundtruth: Iterable[Sequence[object]], where: str = "groundtruth"):
        self._open: Dict[str, List[int]] = {}
        self.size = 0
        for i, pair in enumerate(groundtruth):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)):
                raise ValueError(f"{where}[{i}]: expected [title, year], got {pair!r}")
            year = pair[1] if type(pair[1]) is int else parse_year(pair[1])
            if year is None:
                raise ValueError(f"{where}[{i}]: year must be an integer or digit string, got {pair[1]!r}")
            self._open.setdefault(normalize_title(pair[0]), []).append(year)
            self.size += 1

    def take(self, title_key: str, year: int, offsets: Sequence[int]) -> bool:
        """Consume one open item with this title and the first matching year offset; True if one matched."""
        years = self._open.get(title_key)
        if not years:
            return False
        for d in offsets:
            if year + d in years:
                years.remove(year + d)
                return True
        return False


def catalog_hits(
    completion: str,
    groundtruth: Iterable[Sequence[object]],
    seen_titles: Iterable[str],
    catalog: Catalog,
    k: int = 20,
    year_tolerance: int = 2,
) -> List[int]:
    """Relevance of each of the first ``k`` lines of a generated list.

    Args:
        completion: model output (untrusted; never raises on its content).
        groundtruth: [title, year] pairs; year as int or digit string. A malformed pair raises ValueError.
        seen_titles: titles already mentioned in the conversation; recommending them earns nothing.
        catalog: the item catalog; an item must be in it with exactly its (title, year).
        k: number of ranks K.
        year_tolerance: max |year difference| to a ground-truth item (tried 0, +1, -1, +2, -2, ...).

    Returns:
        list of k ints in {0, 1}; position j is line j of ``completion.split("\\n")`` (missing lines are 0).
        Each ground-truth occurrence is matched at most once, so a repeated item earns credit once.
    """
    return _scan(completion, groundtruth, seen_titles, catalog, k, year_tolerance, False)[0]


def catalog_hits_and_flags(
    completion: str,
    groundtruth: Iterable[Sequence[object]],
    seen_titles: Iterable[str],
    catalog: Catalog,
    k: int = 20,
    year_tolerance: int = 2,
) -> Tuple[List[int], List[int]]:
    """``(catalog_hits(...), in_catalog)`` in one pass over the lines (what the reward needs).

    ``in_catalog[j]`` is 1 when line j parses as ``Title (YYYY)`` and the catalog holds exactly that
    (title, year), seen or not (``catalog.contains`` of ``parse_line(line)``); both lists have k entries.
    """
    return _scan(completion, groundtruth, seen_titles, catalog, k, year_tolerance, True)


def _scan(completion, groundtruth, seen_titles, catalog, k, year_tolerance, flags):
    """The loop behind both entry points; ``flags`` asks for the per-line in-catalog flags too.

    Without flags a line is looked up only when it can hit, and an ASCII line is not even parsed unless the
    longest word of some ground-truth title key occurs in it (lowercased, "`" as "'"): the parsed key of an
    ASCII line is its title lowercased with whitespace collapsed, the title a substring of the line, so every
    word of the key occurs in the lowercased line. Non-ASCII lines (NFKC may change them) are always parsed.
    """
    gt = GroundTruth(groundtruth)
    hits = [0] * k
    in_catalog = [0] * k if flags else hits
    if gt.size == 0 and not flags:
        return hits, in_catalog
    open_years = gt._open
    index = catalog.index
    words = None if flags else [max(key.split(), key=len) for key in open_years if key and key.isascii()]
    seen = None  # normalised only when a line could hit
    offsets = year_offsets(year_tolerance)
    for j, line in enumerate(split_ranks(completion, k)):
        if words is not None and line.isascii():
            low = line.lower()
            if "`" in low:
                low = low.replace("`", "'")
            for w in words:
                if w in low:
                    break
            else:
                continue  # no ground-truth title can be this line's key
        item = parse_key(line)
        if item is None:
            continue
        key, year = item
        years = open_years.get(key)
        if not flags and not years:
            continue  # cannot hit: no unmatched ground-truth item has this title
        cat_years = index.get(key)
        if cat_years is None or year not in cat_years:
            continue
        if flags:
            in_catalog[j] = 1
            if not years:
                continue
        if seen is None:
            seen = {normalize_title(t) for t in seen_titles if isinstance(t, str)}
        if key not in seen and gt.take(key, year, offsets):
            hits[j] = 1
    return hits, in_catalog
