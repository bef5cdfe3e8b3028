"""Line-aligned catalog relevance: which rank of a generated list hits the ground truth.

Deliberate difference from the official Rank-GRPO code: that code drops blank, preamble and unparsable lines
before matching, which shifts the credit of every later item to an earlier rank and so misaligns the reward
with the tokens it is applied to. Here rank k is always the k-th line of ``completion.split("\\n")`` -- the
same segmentation as :func:`rank_grpo_plugin.rank_ids` -- and an invalid line is a miss at its own rank.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

from .catalog import Catalog, parse_year
from .parse import normalize_title, parse_line, split_ranks

__all__ = ["catalog_hits", "GroundTruth", "year_offsets"]


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
            year = parse_year(pair[1])
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
    gt = GroundTruth(groundtruth)
    seen = {normalize_title(t) for t in seen_titles if isinstance(t, str)}
    offsets = year_offsets(year_tolerance)
    hits = [0] * k
    if gt.size == 0:
        return hits
    for j, line in enumerate(split_ranks(completion, k)):
        item = parse_line(line)
        if item is None:
            continue
        key = normalize_title(item.title)
        if key in seen or not catalog.contains(item.title, item.year):
            continue
        if gt.take(key, item.year, offsets):
            hits[j] = 1
    return hits

