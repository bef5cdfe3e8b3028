"""recsys.evaluation: the paper's protocol vs the rank-aligned one, against hand-computed lists (stdlib only)."""
from __future__ import annotations

import math

import pytest

from rank_grpo_plugin.recsys.catalog import Catalog
from rank_grpo_plugin.recsys.evaluation import aggregate, evaluate_list, paired_difference, paper_hits

L2, L3, L4, L5 = 1.0, 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(5)  # discounts of ranks 1..4

CAT = Catalog([("Alien", 1979), ("Aliens", 1986), ("Heat", 1995), ("Dune", 2021), ("Dune", 1984), ("Up", 2009),
               ("Cars", 2006), ("Big", 1988), ("Jaws", 1975)])


def test_seen_and_out_of_catalog_are_compacted_in_paper_but_keep_rank_in_rank_aligned():
    completion = "Alien (1979)\nFake Movie (2000)\nHeat (1995)\nJaws (1975)"
    gt = [["Heat", "1995"], ["Jaws", 1975]]
    ev = evaluate_list(completion, gt, ["Alien"], CAT, ks=(2, 5), k=5)
    assert ev.paper_hits == [1, 1]  # Alien (seen) and Fake Movie (not in catalog) dropped, list compacted
    assert ev.rank_hits == [0, 0, 1, 1, 0]  # lines 3 and 4 keep their ranks
    m = ev.metrics
    # the protocols disagree where they should
    assert m["paper/recall@2"] == 1.0 and m["rank/recall@2"] == 0.0
    assert m["paper/ndcg@2"] == pytest.approx(1.0)
    assert m["paper/recall@5"] == m["rank/recall@5"] == 1.0
    assert m["paper/ndcg@5"] == pytest.approx(1.0)
    assert m["rank/ndcg@5"] == pytest.approx((L4 + L5) / (L2 + L3))  # 0.5706
    assert (ev.n_items, ev.n_in_catalog, ev.n_seen, ev.n_duplicates, ev.n_lines) == (4, 3, 1, 0, 4)


def test_year_tolerance_off_by_1_and_2_match_off_by_3_does_not():
    completion = "Big (1988)\nCars (2006)\nJaws (1975)\nHeat (1996)"  # Heat 1996 is not in the catalog
    gt = [["Big", 1987], ["Cars", "2004"], ["Jaws", 1978], ["Heat", 1995]]
    ev = evaluate_list(completion, gt, [], CAT, ks=(20,), k=20)
    assert ev.paper_hits == [1, 1, 0]  # Heat (1996) dropped: out of catalog although within 1 year of the truth
    assert ev.rank_hits[:4] == [1, 1, 0, 0]
    assert ev.metrics["paper/recall@20"] == pytest.approx(2 / 4)
    # paper NDCG: ideal over the filtered length 3 -> min(4 relevant, 20, 3) = 3 ideal hits
    assert ev.metrics["paper/ndcg@20"] == pytest.approx((L2 + L3) / (L2 + L3 + L4))
    # rank-aligned NDCG: ideal = min(4, 20) = 4 hits
    assert ev.metrics["rank/ndcg@20"] == pytest.approx((L2 + L3) / (L2 + L3 + L4 + L5))
    assert paper_hits(completion, gt, [], CAT, year_tolerance=1) == [1, 0, 0]
    assert paper_hits(completion, gt, [], CAT, year_tolerance=3) == [1, 1, 1]


def test_duplicates_earn_once_unless_the_truth_repeats():
    completion = "Heat (1995)\nheat (1995)\nUp (2009)"
    ev = evaluate_list(completion, [["Heat", 1995], ["Up", 2009]], [], CAT, ks=(3,), k=3)
    assert ev.paper_hits == [1, 0, 1] and ev.rank_hits == [1, 0, 1]
    assert ev.metrics["paper/ndcg@3"] == pytest.approx((L2 + L4) / (L2 + L3))
    assert ev.n_duplicates == 1
    twice = evaluate_list(completion, [["Heat", 1995], ["Heat", 1995]], [], CAT, ks=(3,), k=3)
    assert twice.paper_hits == [1, 1, 0]
    assert twice.metrics["paper/recall@3"] == 1.0


def test_fewer_than_k_items_and_the_filtered_ideal_length():
    completion = "Fake (2000)\nUp (2009)"
    gt = [["Up", 2009], ["Heat", 1995], ["Jaws", 1975]]
    ev = evaluate_list(completion, gt, [], CAT, ks=(5, 20), k=20)
    assert ev.paper_hits == [1]
    assert ev.rank_hits == [0, 1] + [0] * 18
    assert ev.metrics["paper/recall@20"] == ev.metrics["rank/recall@20"] == pytest.approx(1 / 3)
    assert ev.metrics["paper/ndcg@20"] == pytest.approx(1.0)  # ideal_len = 1 filtered item
    assert ev.metrics["rank/ndcg@20"] == pytest.approx(L3 / (L2 + L3 + L4))  # 0.2961
    assert ev.rank_parsed == [1, 1] + [0] * 18


def test_preamble_lines_are_misses_in_rank_aligned_only():
    completion = "Here are my picks:\n1. Heat (1995)\n\n2. **Jaws (1975)**"
    ev = evaluate_list(completion, [["Jaws", 1975]], [], CAT, ks=(1, 4), k=4)
    assert ev.paper_hits == [0, 1]
    assert ev.rank_hits == [0, 0, 0, 1]
    assert ev.metrics["paper/recall@1"] == 0.0
    assert ev.metrics["paper/ndcg@4"] == pytest.approx(L3 / L2)
    assert ev.metrics["rank/ndcg@4"] == pytest.approx(L5 / L2)
    assert (ev.n_lines, ev.n_items) == (3, 2)  # blank line not counted as a line to format


def test_empty_completion_and_truncate_first():
    ev = evaluate_list("", [["Up", 2009]], [], CAT, ks=(5,), k=5)
    assert ev.paper_hits == [] and ev.rank_hits == [0] * 5
    assert all(v == 0.0 for v in ev.metrics.values())
    completion = "Fake (2000)\nAlien (1979)\nUp (2009)"
    assert paper_hits(completion, [["Up", 2009]], ["alien"], CAT) == [1]
    assert paper_hits(completion, [["Up", 2009]], ["alien"], CAT, truncate_first=2) == []


def test_aggregate_rates_histogram_and_per_rank():
    a = evaluate_list("Heat (1995)\nHeat (1995)\nFake (2001)", [["Heat", 1995]], [], CAT, ks=(3,), k=3)
    b = evaluate_list("junk\nUp (2009)\nJaws (1975)", [["Jaws", 1975], ["Up", 2009]], [], CAT, ks=(3,), k=3)
    s = aggregate([a, b], k=3)
    assert s["rows"] == 2
    assert s["metrics"]["paper/recall@3"] == pytest.approx((1.0 + 1.0) / 2)
    assert s["metrics"]["rank/ndcg@3"] == pytest.approx((1.0 + (L3 + L4) / (L2 + L3)) / 2)
    assert s["per_rank_hit_rate"] == [0.5, 0.5, 0.5]
    assert s["per_rank_format_rate"] == [0.5, 1.0, 1.0]
    assert s["paper_per_position_hit_rate"] == [1.0, 0.5, 0.0]
    assert s["format_rate"] == pytest.approx(5 / 6)
    assert s["in_catalog_rate"] == pytest.approx(4 / 5)
    assert s["duplicate_rate"] == pytest.approx(1 / 5)
    assert s["exact_k_rate"] == 0.5  # a has 3 parsed items, b has 2
    assert s["length_histogram"] == {"2": 1, "3": 1}
    assert s["mean_filtered_length"] == pytest.approx((2 + 2) / 2)


def test_evaluation_module_is_stdlib_only():
    import ast
    import pathlib
    import sys

    import rank_grpo_plugin.recsys.evaluation as mod

    tree = ast.parse(pathlib.Path(mod.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


# ------------------------------------------------------------------------------------- paired_difference
def test_paired_difference_by_hand():
    # every conversation's mean difference is 0.5, so every resample's is: the interval is [0.5, 0.5]
    d = paired_difference([0, 0, 0, 0], [1, 0, 0.5, 0.5], ["a", "a", "b", "b"], resamples=500)
    assert d["mean_diff"] == 0.5 and d["ci"] == [0.5, 0.5]
    assert (d["rows"], d["clusters"], d["better"], d["worse"], d["tied"]) == (4, 2, 3, 0, 1)
    # conversation a (2 rows, difference 1 each) and b (1 row, difference 0): a resample draws (a, a) -> 1,
    # (b, b) -> 0 or one of each -> 2/3, each pair with probability 1/4 or 1/2, so the 2.5 % and 97.5 %
    # quantiles are 0 and 1
    d = paired_difference([0, 0, 0], [1, 1, 0], ["a", "a", "b"], resamples=2000, seed=3)
    assert d["mean_diff"] == pytest.approx(2 / 3) and d["ci"] == [0.0, 1.0]
    assert d == paired_difference([0, 0, 0], [1, 1, 0], ["a", "a", "b"], resamples=2000, seed=3)
    assert d["mean_base"] == 0 and d["mean_other"] == pytest.approx(2 / 3)


def test_paired_difference_interval_matches_the_standard_error():
    """One row per conversation, 400 conversations: the bootstrap 95 % interval is mean +- 1.96 s / sqrt(n) (the
    normal approximation, worked out from the differences' sample sd), within 10 %."""
    import random
    import statistics

    rng = random.Random(0)
    base = [rng.random() for _ in range(400)]
    other = [b + rng.gauss(0.05, 0.2) for b in base]
    diffs = [o - b for o, b in zip(other, base)]
    half = 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5
    d = paired_difference(base, other, list(range(400)), resamples=4000)
    lo, hi = d["ci"]
    assert lo < d["mean_diff"] < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(statistics.mean(diffs), abs=0.2 * half)


def test_paired_difference_refuses_misaligned_rows():
    with pytest.raises(ValueError, match="equal, non-empty rows: 2 base, 1 other, 2 clusters"):
        paired_difference([0, 1], [1], ["a", "b"])
    with pytest.raises(ValueError, match="equal, non-empty rows"):
        paired_difference([], [], [])
