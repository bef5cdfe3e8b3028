"""`rank-grpo catalog build | convert | inspect`."""
from __future__ import annotations

import json
import os
import pickle

from _paths import DATA
from rank_grpo_plugin.cli import main

os.environ["RANK_GRPO_PROGRESS"] = "0"


def _items(path):
    return [tuple(json.loads(x).values()) for x in path.read_text().splitlines()]


def test_build_from_redial_ground_truth_equals_shipped_catalog(tmp_path):
    out = tmp_path / "cat.jsonl"
    assert main(["catalog", "build", "--data", str(DATA / "redial" / "test.jsonl"), "-o", str(out)]) == 0
    shipped = {tuple(json.loads(x).values()) for x in (DATA / "redial" / "catalog.jsonl").read_text().splitlines()}
    assert set(_items(out)) == shipped and len(_items(out)) == 1206


def test_build_merges_splits_and_tables_without_duplicates(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"groundtruth_with_release_year": [["Heat", "1995"], ["Up", 2009]]}) + "\n"
                    + json.dumps({"groundtruth_with_release_year": [["Heat", 1995]]}) + "\n")
    table = tmp_path / "extra.tsv"
    table.write_text("Title\tYear\nJaws\t1975\nUp\t2009\n")
    out = tmp_path / "cat.jsonl"
    assert main(["catalog", "build", "--data", str(rows), "--catalog", str(table), "-o", str(out)]) == 0
    assert _items(out) == [("Jaws", 1975), ("Up", 2009), ("Heat", 1995)]


def test_build_reports_bad_row(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"groundtruth_with_release_year": [["Heat", "1995"]]}) + "\n"
                    + json.dumps({"groundtruth_with_release_year": [["Up", None]]}) + "\n")
    out = tmp_path / "cat.jsonl"
    assert main(["catalog", "build", "--data", str(rows), "-o", str(out)]) == 2
    assert f"{rows}: line 2: field 'groundtruth_with_release_year'[0]: year must be" in capsys.readouterr().err
    assert not out.exists()


def test_convert_pickle_safely(tmp_path, capsys):
    pkl = tmp_path / "gt_catalog.pkl"
    pkl.write_bytes(pickle.dumps([("Heat", 1995), ("The Wall", "201")], protocol=4))
    out = tmp_path / "cat.jsonl"
    assert main(["catalog", "convert", str(pkl), "-o", str(out)]) == 0
    assert _items(out) == [("Heat", 1995), ("The Wall", 201)]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps([("Heat", 1995), Evil()]))
    out2 = tmp_path / "cat2.jsonl"
    assert main(["catalog", "convert", str(bad), "-o", str(out2)]) == 2
    assert "refusing pickle" in capsys.readouterr().err
    assert not out2.exists() and not (tmp_path / "pwned").exists()


def test_inspect_finds_the_real_flaws_of_the_reddit_catalog(capsys):
    assert main(["catalog", "inspect", str(DATA / "reddit_v2" / "catalog.jsonl"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["items"] == 7404 and rep["year_min"] == 201 and rep["year_max"] == 2024
    assert rep["suspicious_years"]["examples"] == [["The Wall", 201]]
    assert rep["case_variants"]["count"] >= 1
    assert rep["exact_duplicates"]["count"] == 0
    assert main(["catalog", "inspect", str(DATA / "reddit_v2" / "catalog.jsonl")]) == 0
    text = capsys.readouterr().out
    assert "years: 201 .. 2024" in text and '["The Wall", 201]' in text
