"""The fast line parser and one-pass matcher against the slow obvious implementation.

``parse_line``/``parse_key``/``normalize_title`` skip regexes and loops that cannot change a line and replace the
item regex by an ``rfind``; ``catalog_hits``/``catalog_hits_and_flags`` read the catalog index directly and look
at the catalog only for lines whose title is an open ground-truth title. The slow implementation,
``benchmarks/_reference_matchers.py`` (shared with the reward benchmark's strawman), is the regex definition of the
rules applied literally to every line, the catalog scanned pair by pair.
"""
from __future__ import annotations

import random
import re
import sys

import pytest

from _paths import ROOT

from rank_grpo_plugin import Catalog
from rank_grpo_plugin.scoring import score_completion
from rank_grpo_plugin.recsys.match import catalog_hits, catalog_hits_and_flags
from rank_grpo_plugin.recsys.parse import normalize_title, parse_key, parse_line

sys.path.insert(0, str(ROOT / "benchmarks"))
from _reference_matchers import ref_normalize, ref_parse, reference_hits_and_flags  # noqa: E402

# ----------------------------------------------------------------------------- hostile inputs
HOSTILE_LINES = [
    "", " ", "\r", "\t \x1c", "Dune (2021)", "dune (2021)\r", "  Dune   (2021)  ", "Dune(2021)", "Dune ( 2021 )",
    "Dune (2021) - great", "Dune (21)", "Dune (20211)", "Dune [2021]", "(2021)", " (2021)", "1)", "1.", "**",
    "1. Dune (2021)", "12) **Dune** (2021)", "#3 Dune (2021)", "#3. Dune (2021)", "#3Dune (2021)", "123. Dune (2021)",
    "1234. Dune (2021)", "1.5 Dune (2021)", "- *Dune (2021)*", "* Dune (2021)", "*Dune* (2021)", "+ Dune (2021)",
    "> Dune (2021)", "-Dune (2021)", "\u2022 \u201cDune\u201d (2021)", '"Dune" (2021)', '"Dune (2021)"',
    "'Dune' (2021)", "***Dune (2021)***", "__Dune__ (2021)", "_Dune_ (2021)", "** Dune (2021) **", '**"Dune"** (2021)',
    "*'*Dune*'* (2021)", "`Dune` (2021)", "Schindler`s List (1993)", "Schindler\u2019s List (1993)",
    "300: Rise of an Empire (2014)", "2001: A Space Odyssey (1968)", "(500) Days of Summer (2009)",
    "Birdman (or The Unexpected Virtue of Ignorance) (2014)", "Dune (2021) (2021)", "Dune ((2021))",
    "AM\u00c9LIE (2001)", "Ame\u0301lie (2001)", "\uff08Dune (2021)", "Dune \uff082021\uff09", "Dune (\uff12\uff10\uff12\uff11)",
    "Dune (\u0662\u0660\u0662\u0661)", "\u0661. Dune (2021)", "Stra\u00dfe (2001)", "STRASSE (2001)",
    "Dune\u00a0Part\u00a0Two (2024)", "Dune\u2014Part Two (2024)", "Dune\tPart   Two (2024)", "Dune\nPart Two (2024)",
    "Dune\n(2021)", "Dune (\n2021\n)", "\x1cDune (2021)\x1f", "\u3000Dune (2021)", "\ufeffDune (2021)",
    "Here are 20 movies you might enjoy:", "Enjoy!", "\u00b4Dune\u00b4 (2021)", "Dune (2021)**", "**Dune (2021)",
]
ALPHABET = list("Ab1 2(9)*_\"'`-+#.>\t\r\n\x1c\u00a0\u2019\u201c\u2022\uff08\uff09\u0301e\u00e9\u0661\uff11:,") + [
    "(1999)", " (2001)", "**", "1. ", "- ", "Dune", "\u0663\u0669\u0669\u0669", "(19 99)", "#12 "]


def random_lines(n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        s = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.5:
            s += rng.choice(["(1999)", " ( 2001 )", ")", "(12345)", "**", '"'])
        yield s


def test_whitespace_and_digit_classes_are_the_str_predicates():
    """The fast path's premise: re's \\s is str.isspace and \\d is str.isdecimal, on every code point."""
    ws, dig = re.compile(r"\s"), re.compile(r"\d")
    for c in range(sys.maxunicode + 1):
        ch = chr(c)
        assert (ws.match(ch) is not None) == ch.isspace(), hex(c)
        assert (dig.match(ch) is not None) == ch.isdecimal(), hex(c)


@pytest.mark.parametrize("seed", [0, 1])
def test_parse_line_key_and_normalize_match_the_regex_definition(seed):
    lines = HOSTILE_LINES + list(random_lines(20000, seed))
    parsed = 0
    for line in lines:
        want = ref_parse(line)
        got = parse_line(line)
        assert (tuple(got) if got else None) == want, repr(line)
        assert parse_key(line) == ((ref_normalize(want[0]), want[1]) if want else None), repr(line)
        assert normalize_title(line) == ref_normalize(line), repr(line)
        parsed += want is not None
    assert parsed > 2000  # the random lines do reach the item branch


CATALOG_ITEMS = [
    ("Dune", 2021), ("Dune", 1984), ("Dune: Part Two", 2024), ("Heat", 1995), ("Heat", 1986), ("Alien", 1979),
    ("Schindler's List", 1993), ("Amélie", 2001), ("(500) Days of Summer", 2009), ("300: Rise of an Empire", 2014),
    ("2001: A Space Odyssey", 1968), ("Birdman (or The Unexpected Virtue of Ignorance)", 2014),
    ("Straße", 2001), ("Léon: The Professional", 1994), ("Crouching Tiger, Hidden Dragon", 2000),
]
MARKUP = ["{t} ({y})", "{n}. {t} ({y})", "{n}) **{t}** ({y})", "- *{t}* ({y})", '"{t}" ({y})', "**{t} ({y})**",
          "#{n} {t} ({y})", "  {u}  ( {y} )\r", "\u2022 \u201c{t}\u201d ({y})", "{t} ({y}) - a classic", "{t} [{y}]",
          "{t}", "{n}. {t} ({y2})", "{l} ({y})", "`{t}` ({y})", "\uff08{t} ({y})", "{w} ({y})", "{n}. {b} ({y})"]


def hostile_completion(rng):
    lines = []
    for n in range(rng.randint(0, 26)):
        r = rng.random()
        if r < 0.1:
            lines.append(rng.choice(["", " ", "Here you go:", "Enjoy!"]))
        elif r < 0.2:
            lines.append(rng.choice(HOSTILE_LINES))
        else:
            t, y = rng.choice(CATALOG_ITEMS)
            t2 = t.replace("'", "\u2019") if rng.random() < 0.3 else t
            lines.append(rng.choice(MARKUP).format(t=t2, y=y + rng.choice([0, 0, 0, 1, -2, 3]), y2=y, n=n + 1,
                                                   u=t.upper(), l=t.lower(), w=t.replace(" ", " \t  "),
                                                   b=t.replace("'", "`")))
    return "\n".join(lines)


def test_hits_and_flags_match_the_slow_matcher_on_hostile_completions():
    catalog = Catalog(CATALOG_ITEMS)
    rng = random.Random(13)
    total_hits = total_flags = 0
    for _ in range(1500):
        completion = hostile_completion(rng)
        gt = [[t if rng.random() < 0.7 else t.upper(), str(y + rng.choice([0, 0, 1, -1, 2, -3]))]
              for t, y in rng.sample(CATALOG_ITEMS, rng.randint(0, 6))]
        gt += gt[:rng.randint(0, 1)]  # a ground-truth item listed twice
        seen = [t for t, _ in rng.sample(CATALOG_ITEMS, rng.randint(0, 3))] + ["  heat "] * (rng.random() < 0.2)
        want_hits, want_flags = reference_hits_and_flags(completion, gt, seen, CATALOG_ITEMS)
        assert catalog_hits(completion, gt, seen, catalog) == want_hits, (completion, gt, seen)
        assert catalog_hits_and_flags(completion, gt, seen, catalog) == (want_hits, want_flags), (completion, gt, seen)
        k5 = reference_hits_and_flags(completion, gt, seen, CATALOG_ITEMS, k=5, tol=0)
        assert catalog_hits_and_flags(completion, gt, seen, catalog, k=5, year_tolerance=0) == k5
        total_hits += sum(want_hits)
        total_flags += sum(want_flags)
    assert total_hits > 500 and total_flags > 5000  # hits and misses of every kind were exercised


def test_flags_without_ground_truth_and_seen_as_a_generator():
    catalog = Catalog(CATALOG_ITEMS)
    completion = "Dune (2021)\nnope\n1. Heat (1995)\nHeat (1990)"
    assert catalog_hits_and_flags(completion, [], [], catalog, k=5) == ([0] * 5, [1, 0, 1, 0, 0])
    assert catalog_hits(completion, [["Heat", 1995]], (t for t in ["heat"]), catalog, k=4) == [0, 0, 0, 0]
    assert catalog_hits(completion, [["Heat", 1995]], (t for t in ["dune"]), catalog, k=4) == [0, 0, 1, 0]


def test_reward_one_pass_equals_separate_calls(reddit_rows, reddit_catalog):
    """score_completion (one pass) gives catalog_hits' hits and the in-catalog rate of separate per-line checks."""
    rng = random.Random(5)
    cases = [(r["completion"][0]["content"], r["groundtruth_with_release_year"], r["seen_titles"]) for r in reddit_rows]
    cat = Catalog(CATALOG_ITEMS)
    cases_small = [(hostile_completion(rng), [[t, y] for t, y in rng.sample(CATALOG_ITEMS, 3)], ["Alien"])
                   for _ in range(200)]
    for catalog, group in ((reddit_catalog, cases), (cat, cases_small)):
        for completion, gt, seen in group:
            label = {"groundtruth": gt, "seen": seen}
            res = score_completion(completion, label, catalog, 20, 2)
            assert res["hits"] == catalog_hits(completion, gt, seen, catalog, k=20, year_tolerance=2)
            lines = completion.split("\n")[:20]
            in_cat = sum(1 for it in map(parse_line, lines) if it is not None and catalog.contains(it.title, it.year))
            assert res["in_catalog_rate"] == in_cat / 20
