"""Parsing, catalog loading (incl. the safe pickle reader), line-aligned catalog hits and metrics."""
import json
import math
import pickle
import re

import pytest

from rank_grpo_plugin import Catalog, CatalogError, catalog_hits, load_pickle_catalog, ndcg_at_k, parse_line, recall_at_k
from rank_grpo_plugin.recsys.metrics import dcg_at_k
from rank_grpo_plugin.recsys.parse import normalize_title

CAT = Catalog(
    [("Dune", 2021), ("Dune", 1984), ("Heat", 1995), ("Alien", 1979), ("Aliens", 1986),
     ("300: Rise of an Empire", 2014), ("(500) Days of Summer", 2009), ("Amélie", 2001), ("Schindler's List", 1993)]
)


@pytest.mark.parametrize(
    "line,expected",
    [
        ("Dune (2021)", ("Dune", 2021)),
        ('"Dune" (2021)', ("Dune", 2021)),
        ('"Dune (2021)"', ("Dune", 2021)),
        ("1. Dune (2021)", ("Dune", 2021)),
        ("12) **Dune** (2021)", ("Dune", 2021)),
        ("- *Dune (2021)*", ("Dune", 2021)),
        ("• “Dune” (2021)", ("Dune", 2021)),
        ("  Dune   (2021)  \r", ("Dune", 2021)),
        ("300: Rise of an Empire (2014)", ("300: Rise of an Empire", 2014)),
        ("(500) Days of Summer (2009)", ("(500) Days of Summer", 2009)),
        ("Birdman (or The Unexpected Virtue of Ignorance) (2014)", ("Birdman (or The Unexpected Virtue of Ignorance)", 2014)),
        ("Schindler’s List (1993)", ("Schindler's List", 1993)),
        ("Dune", None),
        ("Dune (2021) - a great film", None),
        ("Dune (21)", None),
        ("", None),
        ("Here are 20 movies you might like:", None),
        ("(2021)", None),
    ],
)
def test_parse_line(line, expected):
    got = parse_line(line)
    assert (tuple(got) if got else None) == expected


def test_normalize_title():
    assert normalize_title("  The   MATRIX ") == normalize_title("the matrix") == "the matrix"
    assert normalize_title("AMÉLIE") == normalize_title("amélie")
    assert normalize_title("Straße") == normalize_title("STRASSE")  # casefold, not lower


def test_hits_are_line_aligned_blank_and_preamble_lines_keep_their_rank():
    completion = "Here you go:\nHeat (1995)\n\nNot a movie\nAlien (1979)"
    gt = [["Alien", "1979"], ["Heat", 1995]]
    assert catalog_hits(completion, gt, [], CAT, k=6) == [0, 1, 0, 0, 1, 0]


def test_seen_out_of_catalog_and_duplicate_items():
    gt = [["Heat", "1995"], ["Dune", "2021"]]
    completion = "\n".join(["heat (1995)", "HEAT (1995)", "Dune (2021)", "Ghost Film (2021)"])
    assert catalog_hits(completion, gt, [], CAT, k=4) == [1, 0, 1, 0]  # repeat earns credit once
    assert catalog_hits(completion, gt, ["  heat "], CAT, k=4) == [0, 0, 1, 0]  # seen: no credit
    # in ground truth but not in catalog with that year: no credit
    assert catalog_hits("Ghost Film (2021)", [["Ghost Film", 2021]], [], CAT, k=2) == [0, 0]


def test_ground_truth_listed_twice_can_be_matched_twice():
    gt = [["Heat", "1995"], ["Heat", "1995"]]
    assert catalog_hits("Heat (1995)\nHeat (1995)\nHeat (1995)", gt, [], CAT, k=3) == [1, 1, 0]


def test_year_tolerance():
    cat = Catalog([("Heat", y) for y in range(1990, 2001)])
    gt = [["Heat", "1995"]]
    for year, hit in [(1995, 1), (1996, 1), (1994, 1), (1997, 1), (1993, 1), (1998, 0), (1992, 0)]:
        assert catalog_hits(f"Heat ({year})", gt, [], cat, k=1) == [hit], year
    assert catalog_hits("Heat (1996)", gt, [], cat, k=1, year_tolerance=0) == [0]


def test_year_matching_prefers_exact_then_nearest():
    cat = Catalog([("Heat", y) for y in range(1990, 2001)])
    # the 1996 line could take either gt item; it must take 1996 (exact), leaving 1995 for the 1995 line
    gt = [["Heat", 1995], ["Heat", 1996]]
    assert catalog_hits("Heat (1996)\nHeat (1995)", gt, [], cat, k=2) == [1, 1]


def test_k_truncation_and_short_lists():
    gt = [["Heat", 1995]]
    assert catalog_hits("Alien (1979)\nAliens (1986)\nHeat (1995)", gt, [], CAT, k=2) == [0, 0]
    assert catalog_hits("Heat (1995)", gt, [], CAT, k=20) == [1] + [0] * 19
    assert catalog_hits("", gt, [], CAT, k=3) == [0, 0, 0]
    assert catalog_hits("Heat (1995)\n", gt, [], CAT, k=3) == [1, 0, 0]


def test_untrusted_output_never_raises():
    for junk in ["\x00\x01", "(" * 10000, "1." * 500 + " (1999)", "🎬 (2020)\n" * 50, None, 42]:
        assert catalog_hits(junk, [["Heat", 1995]], [], CAT, k=20) == [0] * 20


def test_malformed_groundtruth_is_a_clear_error():
    with pytest.raises(ValueError, match=r"groundtruth\[1\]"):
        catalog_hits("Heat (1995)", [["Heat", 1995], ["Dune"]], [], CAT)
    with pytest.raises(ValueError, match="year"):
        catalog_hits("Heat (1995)", [["Heat", "nineteen"]], [], CAT)


def _reference_hits(completion, gt, seen, catalog_pairs, k=20):
    """Independent plain implementation for clean lists: lowercase exact title, |dy| <= 2, matched once."""
    open_gt = [(t.lower(), int(y)) for t, y in gt]
    seen = {s.lower() for s in seen}
    out = []
    for line in completion.split("\n")[:k]:
        m = re.fullmatch(r"(.+) \((\d{4})\)", line.strip())
        hit = 0
        if m and m.group(1).lower() not in seen and (m.group(1).lower(), int(m.group(2))) in catalog_pairs:
            title, year = m.group(1).lower(), int(m.group(2))
            for d in (0, 1, -1, 2, -2):
                if (title, year + d) in open_gt:
                    open_gt.remove((title, year + d))
                    hit = 1
                    break
        out.append(hit)
    return out + [0] * (k - len(out))


def test_real_reddit_sample_rows_against_reference(reddit_rows, reddit_catalog):
    pairs = {(t.lower(), y) for t, y in reddit_catalog}
    total = 0
    for row in reddit_rows:
        completion = row["completion"][0]["content"]
        hits = catalog_hits(completion, row["groundtruth_with_release_year"], row["seen_titles"], reddit_catalog)
        assert hits == _reference_hits(completion, row["groundtruth_with_release_year"], row["seen_titles"], pairs)
        total += sum(hits)
    assert len(reddit_rows) == 100
    assert total / len(reddit_rows) == pytest.approx(0.56)  # the sample's SFT lists: 56 hits in 100 lists of 20


# ---------------------------------------------------------------- catalog files
def test_catalog_formats(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"title": "Heat", "year": 1995}\n\n{"title": "Dune", "year": "2021"}\n')
    (tmp_path / "c.json").write_text(json.dumps([["Heat", 1995], {"Title": "Dune", "YEAR": 2021}]))
    (tmp_path / "c.csv").write_text('Title,Year\nHeat,1995\n"Dune, Part One",2021\n')
    (tmp_path / "c.tsv").write_text("title\tyear\nHeat\t1995\nDune\t2021\n")
    for name in ("c.jsonl", "c.json", "c.csv", "c.tsv"):
        cat = Catalog.from_file(tmp_path / name)
        assert len(cat) == 2 and cat.contains("heat", 1995) and ("HEAT", "1995") in cat
        assert not cat.contains("Heat", 1996)
    assert Catalog.from_file(tmp_path / "c.csv").contains("Dune, Part One", 2021)
    out = tmp_path / "round.jsonl"
    Catalog.from_file(tmp_path / "c.tsv").to_jsonl(out)
    assert Catalog.from_file(out).items == [("Heat", 1995), ("Dune", 2021)]


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("bad.jsonl", '{"title": "Heat", "year": 1995}\n{"title": "Dune"}\n', r"bad.jsonl: row 2: 'year'"),
        ("bad2.jsonl", '{"title": "Heat", "year": 1995}\nnot json\n', r"bad2.jsonl: line 2: not valid JSON"),
        ("bad.csv", "name,year\nHeat,1995\n", r"bad.csv: header must have 'title' and 'year'"),
        ("bad2.csv", "title,year\nHeat,1995\nDune,soon\n", r"bad2.csv: row 3: 'year' must be an integer"),
        ("bad.json", '{"title": "Heat"}', r"bad.json: expected a JSON list"),
        ("bad.txt", "Heat (1995)", r"unknown catalog format 'txt'"),
        ("c.pkl", "x", r"pickle catalogs are not loaded directly"),
    ],
)
def test_catalog_errors_name_file_and_row(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(CatalogError, match=message):
        Catalog.from_file(tmp_path / name)


def test_shipped_catalog_keeps_its_real_flaws(reddit_catalog):
    assert len(reddit_catalog) == 7404
    assert reddit_catalog.contains("The Wall", 201)  # a known bad year in the official catalog


# ---------------------------------------------------------------- safe pickle reader
@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("container", [list, set, tuple])
def test_pickle_catalog_all_protocols(tmp_path, protocol, container):
    data = container([("Heat", 1995), ("Dune", 2021), ("Amélie", 2001), ("Big", 10**12)])
    path = tmp_path / "gt_catalog.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    assert sorted(load_pickle_catalog(path)) == sorted(data)
    assert Catalog.from_pickle(path).contains("amélie", 2001)


class _Evil:
    def __reduce__(self):
        return (open, ("/tmp/rank_grpo_pwned", "w"))


def test_pickle_reader_refuses_code_and_never_executes_it(tmp_path):
    marker = "/tmp/rank_grpo_pwned"
    import os

    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([("Heat", 1995), _Evil()]))
    with pytest.raises(CatalogError, match="refusing pickle"):
        load_pickle_catalog(path)
    assert not os.path.exists(marker)


@pytest.mark.parametrize(
    "payload,message",
    [
        ({"Heat": 1995}, "refusing pickle opcode"),
        ([("Heat", 1995, "extra")], r"item 1: expected \(title, year\)"),
        ([("Heat", "nineteen")], "item 1: year"),
        ("just a string", "expected a list"),
    ],
)
def test_pickle_reader_refuses_other_shapes(tmp_path, payload, message):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CatalogError, match=message):
        load_pickle_catalog(path)


def test_pickle_reader_on_truncated_file(tmp_path):
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps([("Heat", 1995)] * 10)[:-5])
    with pytest.raises(CatalogError, match="t.pkl"):
        load_pickle_catalog(path)


# ---------------------------------------------------------------- metrics
def test_metrics_hand_values():
    hits = [0, 1, 0, 1, 0]
    assert dcg_at_k(hits, 5) == pytest.approx(1 / math.log2(3) + 1 / math.log2(5))
    assert recall_at_k(hits, 3, 5) == pytest.approx(2 / 3)
    assert recall_at_k(hits, 3, 2) == pytest.approx(1 / 3)
    assert recall_at_k(hits, 0, 5) == 0.0
    idcg3 = 1 + 1 / math.log2(3) + 0.5
    assert ndcg_at_k(hits, 3, 5) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg3)
    # ideal list capped at 2 positions
    idcg2 = 1 + 1 / math.log2(3)
    assert ndcg_at_k(hits, 3, 5, ideal_len=2) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg2)
    assert ndcg_at_k([1, 1], 2, 20) == pytest.approx(1.0)
    assert ndcg_at_k([], 2, 20) == 0.0 and ndcg_at_k([1], 0, 20) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(hits, 1, 0)
