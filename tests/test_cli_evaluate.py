"""`rank-grpo evaluate` on files of generated lists, and `rank-grpo report` (no model needed)."""
from __future__ import annotations

import json
import os

import pytest

from _paths import DATA
from rank_grpo_plugin.cli import main

os.environ["RANK_GRPO_PROGRESS"] = "0"

REDDIT = DATA / "reddit_v2"

# Figures of the 100 Reddit-v2 sample SFT targets treated as model outputs (recorded in docs/EVALUATION.md).
SFT_FIGURES = {
    "paper/recall@5": 0.074814, "paper/ndcg@5": 0.085914,
    "paper/recall@10": 0.099075, "paper/ndcg@10": 0.095913,
    "paper/recall@20": 0.116143, "paper/ndcg@20": 0.102136,
}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_sft_targets_as_outputs_reproduce_recorded_figures(tmp_path, reddit_rows):
    out = tmp_path / "ev"
    rc = main(["evaluate", "--data", str(REDDIT / "sample.jsonl"), "--catalog", str(REDDIT / "catalog.jsonl"),
               "--from-data", "--out", str(out), "--name", "sft", "--save-rows"])
    assert rc == 0
    res = json.loads((out / "metrics.json").read_text())
    m = res["summary"]["metrics"]
    for name, value in SFT_FIGURES.items():
        assert m[name] == pytest.approx(value, abs=1e-6), name
        # every target is in the catalog and none is seen: both protocols coincide on these lists
        assert m[name.replace("paper/", "rank/")] == pytest.approx(value, abs=1e-6)
    s = res["summary"]
    assert s["rows"] == 100 and res["config"]["conversations"] == 40
    assert s["in_catalog_rate"] == 1.0 and s["duplicate_rate"] == 0.0
    # row 67 lists "The Wall (201)" (the catalog's bad year): one of 2000 lines does not parse as "Title (YYYY)"
    assert s["format_rate"] == pytest.approx(1999 / 2000)
    assert s["length_histogram"] == {"19": 1, "20": 99} and s["exact_k_rate"] == pytest.approx(0.99)
    assert len(s["per_rank_hit_rate"]) == 20
    # the per-rank hit rate is the mean of the per-row rank-aligned hits
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 100
    assert s["per_rank_hit_rate"][0] == pytest.approx(sum(r["rank_hits"][0] for r in rows) / 100)
    md = (out / "summary.md").read_text()
    assert "| 20 | 0.1161 | 0.1021 |" in md
    assert (out / "per_rank.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _mini(tmp_path):
    """Two conversations, three rows (the first conversation has two responding users)."""
    p1 = [{"role": "user", "content": "I liked Alien (1979)"}]
    p2 = [{"role": "user", "content": "Something like Heat (1995)?"}]
    rows = [
        {"prompt": p1, "seen_titles": ["Alien"], "groundtruth_with_release_year": [["Aliens", "1986"]]},
        {"prompt": p1, "seen_titles": ["Alien"], "groundtruth_with_release_year": [["Jaws", "1975"]]},
        {"prompt": p2, "seen_titles": [], "groundtruth_with_release_year": [["Ronin", "1998"], ["Up", 2009]]},
    ]
    cat = tmp_path / "cat.csv"
    cat.write_text("title,year\nAlien,1979\nAliens,1986\nJaws,1975\nRonin,1998\nUp,2009\nHeat,1995\n")
    return _write_jsonl(tmp_path / "rows.jsonl", rows), str(cat), p1, p2


def test_predictions_matched_by_prompt_by_conversation_and_by_row(tmp_path):
    data, cat, p1, p2 = _mini(tmp_path)
    c1 = "Alien (1979)\nAliens (1986)\nJaws (1975)"  # seen item first: paper compacts, rank-aligned keeps rank 1
    c2 = "Up (2009)\nFake (1990)\nRonin (1998)"

    def metrics(preds, name):
        out = tmp_path / name
        assert main(["evaluate", "--data", data, "--catalog", cat, "--predictions", preds, "--out", str(out),
                     "--ks", "1", "3", "--k", "3", "--no-plot"]) == 0
        return json.loads((out / "metrics.json").read_text())["summary"]

    by_prompt = metrics(_write_jsonl(tmp_path / "a.jsonl", [{"prompt": p2, "completion": c2},
                                                             {"prompt": p1, "completion": c1}]), "a")
    by_conv = metrics(_write_jsonl(tmp_path / "b.jsonl", [{"completion": c1}, {"completion": c2}]), "b")
    by_row = metrics(_write_jsonl(tmp_path / "c.jsonl", [{"completion": [{"role": "assistant", "content": c}]}
                                                         for c in (c1, c1, c2)]), "c")
    assert by_prompt["metrics"] == by_conv["metrics"] == by_row["metrics"]
    m = by_prompt["metrics"]
    # rows: (Aliens at paper pos 1 / rank 2), (Jaws at paper pos 2 / rank 3), (Up pos 1 rank 1, Ronin pos 2 rank 3)
    assert m["paper/recall@1"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["rank/recall@1"] == pytest.approx((0 + 0 + 0.5) / 3)
    assert m["paper/recall@3"] == m["rank/recall@3"] == pytest.approx(1.0)
    assert by_prompt["per_rank_hit_rate"] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    assert by_prompt["seen_rate"] == pytest.approx(2 / 9)


def test_sampled_predictions_score_as_samples_and_save_every_list(tmp_path, capsys):
    """A record whose completion is a list of N strings (a sampled evaluation's generations.jsonl) is N sampled
    lists of its conversation: mean +- sd over the N samples (not the last list alone), and --save-rows writes
    every list's hits, one line per row and sample."""
    data, cat, p1, p2 = _mini(tmp_path)
    lists = {"p1": ["Aliens (1986)\nJaws (1975)", "Jaws (1975)\nAliens (1986)"],  # hits by row: [1,0],[0,1]
             "p2": ["Up (2009)", "Nope (2022)"]}
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": p2, "completion": lists["p2"]},
                                                {"prompt": p1, "completion": lists["p1"]}])
    out = tmp_path / "ev"
    assert main(["evaluate", "--data", data, "--catalog", cat, "--predictions", preds, "--out", str(out),
                 "--ks", "1", "--k", "2", "--no-plot", "--save-rows"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    # recall@1 per row, sample 0: Aliens (1), Aliens again for the Jaws row (0), Up of {Ronin, Up} (1/2);
    # sample 1: Jaws for the Aliens row (0), Jaws (1), Nope (0)
    per_sample = [(1 + 0 + 0.5) / 3, (0 + 1 + 0) / 3]
    assert res["config"]["num_samples"] == 2 and res["summary"]["rows"] == 6
    assert [m["rank/recall@1"] for m in res["samples"]["metrics_per_sample"]] == pytest.approx(per_sample)
    assert res["samples"]["metrics_sd"]["rank/recall@1"] == pytest.approx(abs(per_sample[0] - per_sample[1]) / 2 ** 0.5)
    assert res["summary"]["metrics"]["rank/recall@1"] == pytest.approx(sum(per_sample) / 2)
    md = (out / "summary.md").read_text()
    assert "- lists: 2 per conversation, read from the file (metrics: mean ± sd over the samples)" in md
    assert "| 1 | 0.4167 ± 0.1179 |" in md  # paper recall@1: samples (1 + 0 + 1/2) / 3 and (0 + 1 + 0) / 3
    saved = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["sample"], r["completion"]) for r in saved] == [
        (0, lists["p1"][0]), (0, lists["p1"][0]), (0, lists["p2"][0]),
        (1, lists["p1"][1]), (1, lists["p1"][1]), (1, lists["p2"][1])]
    assert [r["metrics"]["rank/recall@1"] for r in saved] == [1, 0, 0.5, 0, 1, 0]
    # records with different numbers of lists are refused, naming both
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"completion": lists["p1"]}, {"completion": "Up (2009)"}])
    assert main(["evaluate", "--data", data, "--catalog", cat, "--predictions", bad, "--out",
                 str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: line 2: field 'completion' holds 1 list(s), but {bad}: line 1 holds 2" in err
    assert not (tmp_path / "bad").exists()


def test_report_paired_pools_seeds_and_compares_row_by_row(tmp_path, capsys):
    """`report --paired`: runs sharing a name are pooled (each row's metric averaged over their runs and samples),
    the first name is the baseline, and the difference is per row, against numbers worked out by hand."""
    data, cat, p1, p2 = _mini(tmp_path)

    def evaluate(name, c1, c2, *extra):
        preds = _write_jsonl(tmp_path / f"{name}.jsonl", [{"prompt": p1, "completion": c1},
                                                          {"prompt": p2, "completion": c2}])
        assert main(["evaluate", "--data", data, "--catalog", cat, "--predictions", preds, "--out",
                     str(tmp_path / name), "--ks", "1", "--k", "2", "--no-plot", "--save-rows", *extra]) == 0
        return str(tmp_path / name)

    # rank/recall@1 per row (truth Aliens | Jaws | Ronin+Up): base 0, 0, 0; seed 1: 1, 0, 1/2; seed 2, two
    # samples: 0, 1, 1/2 and 0, 0, 1/2, mean 0, 1/2, 1/2 -> 'rl' per row, the mean of the seeds: 1/2, 1/4, 1/2
    base = evaluate("base", "Nope (2022)", "Nope (2022)")
    s1 = evaluate("s1", "Aliens (1986)\nJaws (1975)", "Up (2009)")
    s2 = evaluate("s2", ["Jaws (1975)", "Nope (2022)"], ["Ronin (1998)", "Up (2009)"])
    capsys.readouterr()
    assert main(["report", base, s1, s2, "--names", "sft", "rl", "rl", "--paired", "rank/recall@1",
                 "--resamples", "400"]) == 0
    out = capsys.readouterr().out
    assert "each group against sft (1 run(s)); 3 rows of 2 conversations" in out
    # mean 5/12; conversation p1 (rows 1-2) differs by 3/4 in all, p2 (row 3) by 1/2: a resample's mean is 3/8
    # (p1 drawn twice), 1/2 (p2 twice) or 5/12 -> the interval's ends are 3/8 and 1/2
    assert "| rl | 2 | 0.4167 | 0.0000 | +0.4167 | [+0.3750, +0.5000] | 3 / 0 / 0 |" in out
    # a run evaluated on other rows, a run without rows.jsonl, an unknown metric, one group: refused by name
    other = evaluate("other", "Aliens (1986)", "Up (2009)", "--limit", "2")
    assert main(["report", base, other, "--names", "a", "b", "--paired", "rank/recall@1"]) == 2
    assert f"{other} scored other rows than {base}" in capsys.readouterr().err
    (tmp_path / "s1" / "rows.jsonl").unlink()
    assert main(["report", base, s1, "--paired", "rank/recall@1"]) == 2
    assert f"{s1}: no rows.jsonl for --paired; evaluate with --save-rows" in capsys.readouterr().err
    assert main(["report", base, s2, "--paired", "rank/ndcg@20"]) == 2
    assert "no numeric metrics['rank/ndcg@20']" in capsys.readouterr().err
    assert main(["report", base, s2, "--names", "x", "x", "--paired", "rank/recall@1"]) == 2
    assert "--paired needs runs of at least two groups" in capsys.readouterr().err


def test_report_paired_resamples_the_group_field(tmp_path, capsys):
    """evaluate --group-field task.dialog_id: rows of one dialogue (different prompts) move together in
    report --paired's bootstrap, against intervals worked out by hand for both clusterings."""
    prompts = [[{"role": "user", "content": f"turn {i}"}] for i in range(3)]
    truth = ["Aliens", "Ronin", "Jaws"]
    years = {"Aliens": 1986, "Ronin": 1998, "Jaws": 1975}
    rows = [{"prompt": p, "seen_titles": [], "groundtruth_with_release_year": [[t, years[t]]],
             "task": {"dialog_id": d}} for p, t, d in zip(prompts, truth, ["d1", "d1", "d2"])]
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    cat = tmp_path / "cat.csv"
    cat.write_text("title,year\nAliens,1986\nRonin,1998\nJaws,1975\n")

    def evaluate(name, lists, *extra):
        preds = _write_jsonl(tmp_path / f"{name}.jsonl", [{"completion": c} for c in lists])
        return main(["evaluate", "--data", data, "--catalog", str(cat), "--predictions", preds, "--out",
                     str(tmp_path / name), "--ks", "1", "--k", "1", "--no-plot", "--save-rows", *extra])

    for group in ([], ["--group-field", "task.dialog_id"]):
        tag = "d" if group else "c"
        assert evaluate(f"base_{tag}", ["Nope (2022)"] * 3, *group) == 0
        assert evaluate(f"rl_{tag}", ["Aliens (1986)", "Nope (2022)", "Jaws (1975)"], *group) == 0
    capsys.readouterr()
    # differences 1, 0, 1. By conversation (3 single rows) a resample's mean is 0 with probability 1/27 > 2.5 %:
    # the interval is [0, 1]. By dialogue, d1 = rows 1-2 (sum 1), d2 = row 3 (sum 1): 1/2, 2/3 or 1 -> [1/2, 1]
    for tag, ci in (("c", "[+0.0000, +1.0000]"), ("d", "[+0.5000, +1.0000]")):
        assert main(["report", str(tmp_path / f"base_{tag}"), str(tmp_path / f"rl_{tag}"), "--paired",
                     "rank/recall@1", "--resamples", "2000"]) == 0
        out = capsys.readouterr().out
        assert f"| +0.6667 | {ci} | 2 / 0 / 1 |" in out
        assert f"resampling {3 if tag == 'c' else 2} clusters" in out
    # runs grouped differently are not the same rows
    assert main(["report", str(tmp_path / "base_c"), str(tmp_path / "rl_d"), "--paired", "rank/recall@1"]) == 2
    assert "or their --group-field differ" in capsys.readouterr().err
    # a row without the field, and the flag without --save-rows, are refused by name
    assert main(["evaluate", "--data", data, "--catalog", str(cat), "--from-data", "--out", str(tmp_path / "x"),
                 "--group-field", "task.dialog_id"]) == 2
    assert "--group-field applies with --save-rows" in capsys.readouterr().err
    assert evaluate("bad", ["Nope (2022)"] * 3, "--group-field", "task.session") == 2
    assert f"{data}: line 1: --group-field task.session: no field 'task.session'" in capsys.readouterr().err


def test_misaligned_predictions_and_bad_rows_fail_cleanly(tmp_path, capsys):
    data, cat, _, _ = _mini(tmp_path)
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"completion": "Up (2009)"}] * 5)
    out = tmp_path / "out"
    assert main(["evaluate", "--data", data, "--catalog", cat, "--predictions", preds, "--out", str(out)]) == 2
    assert "5 predictions" in capsys.readouterr().err and not out.exists()

    bad = tmp_path / "bad.jsonl"
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    row["groundtruth_with_release_year"] = [["Jaws", "nineteen"]]
    bad.write_text(lines[0] + "\n" + json.dumps(row) + "\n" + lines[2] + "\n")
    assert main(["evaluate", "--data", str(bad), "--catalog", cat, "--predictions", preds, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: line 2: field 'groundtruth_with_release_year'[0]: year must be" in err
    assert not out.exists()


def test_report_compares_runs(tmp_path, capsys):
    data, cat, p1, p2 = _mini(tmp_path)
    runs = []
    for name, comp in (("good", "Aliens (1986)\nJaws (1975)\nUp (2009)"), ("bad", "Nope (2022)")):
        preds = _write_jsonl(tmp_path / f"{name}.jsonl", [{"completion": comp}] * 2)
        assert main(["evaluate", "--data", data, "--catalog", cat, "--predictions", preds, "--out",
                     str(tmp_path / name), "--name", name, "--no-plot"]) == 0
        runs.append(str(tmp_path / name / "metrics.json"))
    capsys.readouterr()
    assert main(["report", *runs, "--out", str(tmp_path / "rep")]) == 0
    table = capsys.readouterr().out
    assert "| good | 3 |" in table and "| bad | 3 |" in table
    assert (tmp_path / "rep" / "per_rank.png").exists()
    assert "## good" in (tmp_path / "rep" / "report.md").read_text()
    (tmp_path / "junk.json").write_text("{}")
    assert main(["report", str(tmp_path / "junk.json")]) == 2


def test_help_for_every_subcommand(capsys):
    for cmd in (["--help"], ["prepare", "--help"], ["catalog", "--help"], ["catalog", "inspect", "--help"],
                ["evaluate", "--help"], ["report", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(cmd)
        assert e.value.code == 0
    assert "--data.label_key label" in capsys.readouterr().out


def test_no_argument_default_is_smollm2_on_a_redial_slice(tmp_path, capsys, monkeypatch):
    from rank_grpo_plugin.cli import build_parser
    from rank_grpo_plugin.cli.evaluate import DEFAULT_LIMIT, _defaults

    monkeypatch.delenv("RANK_GRPO_DATA", raising=False)  # the shipped ReDial split, not a user's copy
    args = build_parser().parse_args(["evaluate"])
    _defaults(args)
    assert args.model == "smollm2" and args.limit == DEFAULT_LIMIT == 100
    assert args.data == str(DATA / "redial" / "test.jsonl") and args.catalog == str(DATA / "redial" / "catalog.jsonl")
    assert main(["evaluate", "--data", str(REDDIT / "sample.jsonl"), "--from-data"]) == 2
    assert "give --data and --catalog together" in capsys.readouterr().err
