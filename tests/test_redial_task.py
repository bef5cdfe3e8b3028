"""rank-grpo redial: the classical baselines against hand-worked numbers, the task's dialogue-disjoint splits,
its item resolution and its reproducibility."""
from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch

from rank_grpo_plugin.cli import main as cli_main
from rank_grpo_plugin.recsys.baselines import CoMentions, top_k
from rank_grpo_plugin.recsys.catalog import Catalog
from rank_grpo_plugin.recsys.evaluation import aggregate, evaluate_list
from rank_grpo_plugin.recsys.parse import normalize_title, parse_key, split_ranks
from rank_grpo_plugin.tasks.redial import RedialConfig, build_task, load_source, write_task

# Dialogues over 5 items: popularity [2, 3, 1, 1, 0]; co-mentions (0,1) 2, (0,2) 1, (1,2) 1, (1,3) 1.
DIALOGUES = [[0, 1, 2], [0, 1], [1, 3]]


def _seen(*ids, n=5):
    x = torch.zeros(1, n)
    x[0, list(ids)] = 1.0
    return x


def _rank(m, seen, method, score="count", k=3):
    s = m.scores(seen, method, score)
    return top_k(s, seen.bool(), m.popularity, k)[0].tolist(), s[0].tolist()


def test_fit_by_hand():
    m = CoMentions(DIALOGUES, 5)
    assert m.popularity.tolist() == [2, 3, 1, 1, 0]
    expect = torch.zeros(5, 5)
    for (i, j), c in {(0, 1): 2, (0, 2): 1, (1, 2): 1, (1, 3): 1}.items():
        expect[i, j] = expect[j, i] = c
    assert torch.equal(m.co, expect)


def test_knn_count_and_cosine_by_hand():
    m = CoMentions(DIALOGUES, 5)
    ids, s = _rank(m, _seen(0), "knn", "count")
    assert s[1:] == [2, 1, 0, 0] and ids == [1, 2, 3]  # 3 before 4: a zero-score tie goes to popularity
    ids, s = _rank(m, _seen(0), "knn", "cosine")
    assert s[1] == pytest.approx(2 / math.sqrt(2 * 3)) and s[2] == pytest.approx(1 / math.sqrt(2 * 1))
    assert s[3] == 0 and s[4] == 0 and ids == [1, 2, 3]
    ids, s = _rank(m, _seen(2, 3), "knn", "count")  # item 0: 1 + 0, item 1: 1 + 1
    assert [s[0], s[1], s[4]] == [1, 2, 0] and ids == [1, 0, 4]
    ids, s = _rank(m, _seen(2, 3), "knn", "cosine")
    assert s[0] == pytest.approx(1 / math.sqrt(2)) and s[1] == pytest.approx(2 / math.sqrt(3)) and ids == [1, 0, 4]


def test_popularity_ties_by_catalog_index():
    m = CoMentions(DIALOGUES, 5)
    ids, _ = _rank(m, _seen(1), "popularity")
    assert ids == [0, 2, 3]  # popularity 2, then the two items of popularity 1 in catalog order


def test_top_k_puts_excluded_last_and_checks_k():
    ids = top_k(torch.tensor([[5.0, 4.0, 3.0]]), torch.tensor([[True, False, False]]), torch.zeros(3), 3)
    assert ids.tolist() == [[1, 2, 0]]
    with pytest.raises(ValueError, match="k must be in"):
        top_k(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), torch.zeros(3), 4)


def test_unknown_names_list_the_valid_ones():
    m = CoMentions(DIALOGUES, 5)
    with pytest.raises(ValueError, match="valid: popularity, knn"):
        m.scores(_seen(0), "itemknn")
    with pytest.raises(ValueError, match="valid: count, cosine"):
        m.scores(_seen(0), "knn", "jaccard")


@pytest.mark.parametrize("score", ["count", "cosine"])
@pytest.mark.parametrize("method", ["knn", "popularity"])
def test_leave_out_equals_refitting_without_the_dialogue(method, score):
    rng = random.Random(0)
    n = 12
    dialogues = [rng.sample(range(n), rng.randint(1, 5)) for _ in range(30)]
    full = CoMentions(dialogues, n)
    for d in range(len(dialogues)):
        seen = torch.zeros(1, n)
        seen[0, dialogues[d][: max(1, len(dialogues[d]) - 1)]] = 1.0
        leave = torch.zeros(1, n)
        leave[0, dialogues[d]] = 1.0
        refit = CoMentions(dialogues[:d] + dialogues[d + 1:], n)
        torch.testing.assert_close(full.scores(seen, method, score, leave_out=leave),
                                   refit.scores(seen, method, score), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------ the task
def _row(dlg, text, seen, gt):
    return {"dialog_id": dlg, "prompt": [{"role": "user", "content": text}], "seen_titles": seen,
            "groundtruth_with_release_year": gt}


TOY_CATALOG = Catalog([("Alpha", 2001), ("Beta", 2002), ("Gamma", 2003), ("Delta", 2004), ("Alpha", 1980),
                       ("Omega", 1999)])


def test_toy_task_by_hand():
    rows = [
        _row("d1", "USER: I like Alpha (1980)", ["Alpha"], [["Beta", "2002"]]),
        _row("d1", "USER: I like Alpha (1980) SYSTEM: Beta (2002)", ["Alpha", "Beta"], [["Gamma", "2003"]]),
        _row("d2", "USER: Beta (2002)?", ["Beta"], [["Beta", "2002"]]),  # answer already seen: row dropped
        _row("d3", "USER: Alpha", ["Alpha"], [["Delta", "2004"], ["Alpha", "2001"]]),
    ]
    task = build_task(RedialConfig(val_dialogues=0, test_dialogues=1, k=3, knn_score="count"), rows, TOY_CATALOG)
    s = task.summary
    assert s["dropped"] == {"seen_unknown": 0, "groundtruth_unknown": 0, "groundtruth_seen": 2,
                            "rows_without_groundtruth": 1}
    test_dlgs = {r["task"]["dialog_id"] for r in task.rows["test"]}
    train_dlgs = {r["task"]["dialog_id"] for r in task.rows["train"]}
    assert not test_dlgs & train_dlgs and "d2" not in test_dlgs | train_dlgs
    by_dlg = {r["task"]["dialog_id"]: r for split in ("train", "test") for r in task.rows[split]}
    # d3's Alpha is ambiguous and its text names no year: every Alpha is excluded from its list
    lines = split_ranks(by_dlg["d3"]["completion"][0]["content"])
    assert len(lines) == 3 and not any(parse_key(line)[0] == "alpha" for line in lines)
    assert by_dlg["d3"]["groundtruth_with_release_year"] == [["Delta", "2004"]]


def test_year_in_the_conversation_picks_the_context_item():
    # d1 names Alpha (1980) and co-mentions it with Omega; d2 names Alpha (2001) with Gamma and Beta. A test row in
    # d3 that names "Alpha (1980)" scores Omega 1 and the rest 0 (ties by popularity, then catalog order: Beta);
    # had both Alphas been its context, Beta, Gamma and Omega would tie at 1 and Beta, Gamma would be listed.
    rows = [
        _row("d1", "USER: Alpha (1980)", ["Alpha"], [["Omega", "1999"]]),
        _row("d2", "USER: Alpha (2001)", ["Alpha"], [["Gamma", "2003"]]),
        _row("d2", "USER: Alpha (2001) and Gamma (2003)", ["Alpha", "Gamma"], [["Beta", "2002"]]),
        _row("d3", "USER: Alpha (1980) please", ["Alpha"], [["Delta", "2004"]]),
    ]
    for seed in range(20):  # a seed that puts d3 alone in test
        task = build_task(RedialConfig(seed=seed, val_dialogues=0, test_dialogues=1, k=2, knn_score="count"),
                          rows, TOY_CATALOG)
        if [r["task"]["dialog_id"] for r in task.rows["test"]] == ["d3"]:
            break
    else:
        pytest.fail("no seed puts d3 in test")
    assert task.baselines["item_knn"]["test"] == ["Omega (1999)\nBeta (2002)"]
    # popularity: Beta, Gamma, Omega each in one training dialogue (both Alphas excluded); catalog order
    assert task.baselines["popularity"]["test"] == ["Beta (2002)\nGamma (2003)"]


@pytest.fixture(scope="module")
def shipped():
    rows, catalog = load_source(None, None)
    cfg = RedialConfig(seed=1, val_dialogues=40, test_dialogues=60)
    return rows, catalog, cfg, build_task(cfg, rows, catalog)


def test_shipped_task_splits_by_dialogue_and_lists_are_clean(shipped):
    rows, catalog, cfg, task = shipped
    dlgs = {s: {r["task"]["dialog_id"] for r in task.rows[s]} for s in ("train", "val", "test")}
    for a, b in itertools.combinations(dlgs, 2):
        assert not dlgs[a] & dlgs[b], (a, b)
    assert len(dlgs["val"]) <= 40 and len(dlgs["test"]) <= 60
    assert task.summary["source_dialogues"] == 1242 and task.summary["source_rows"] == 2716
    kept = sum(task.summary["splits"][s]["rows"] for s in ("train", "val", "test"))
    assert kept + task.summary["dropped"]["rows_without_groundtruth"] == 2716
    lists = [(r, r["completion"][0]["content"]) for s in task.rows for r in task.rows[s]]
    lists += [(r, t) for name in task.baselines for s in ("val", "test")
              for r, t in zip(task.rows[s], task.baselines[name][s])]
    for row, text in lists:
        keys = [parse_key(line) for line in split_ranks(text)]
        assert len(keys) == 20 and len(set(keys)) == 20
        assert all(k is not None and catalog.contains(*k) for k in keys)
        seen = {normalize_title(t) for t in row["seen_titles"]}
        assert not any(k[0] in seen for k in keys)
        assert not any(normalize_title(t) in seen for t, _ in row["groundtruth_with_release_year"])


def test_reported_figures_are_the_evaluations(shipped):
    """task.json's NDCG figures are what recsys.evaluation (rank-grpo evaluate) computes from the written lists."""
    rows, catalog, cfg, task = shipped
    for split in ("val", "test"):
        for key, lists in (("teacher_ndcg", [r["completion"][0]["content"] for r in task.rows[split]]),
                           ("popularity_ndcg", task.baselines["popularity"][split])):
            evals = [evaluate_list(t, r["groundtruth_with_release_year"], r["seen_titles"], catalog)
                     for r, t in zip(task.rows[split], lists)]
            assert task.summary["splits"][split][key] == pytest.approx(aggregate(evals)["metrics"]["rank/ndcg@20"])
    assert task.summary["splits"]["test"]["teacher_ndcg"] > task.summary["splits"]["test"]["popularity_ndcg"] > 0
    sel = task.summary["knn_selection_val_ndcg"]  # --knn-score auto: the better one on validation
    assert set(sel) == {"count", "cosine"} and task.summary["knn_score"] == max(sel, key=sel.get)
    assert task.summary["splits"]["val"]["teacher_ndcg"] == pytest.approx(sel[task.summary["knn_score"]])


def test_byte_for_byte_per_seed(shipped, tmp_path):
    rows, catalog, cfg, task = shipped
    paths = write_task(task, tmp_path / "a")
    again = write_task(build_task(cfg, rows, catalog), tmp_path / "b")
    other = write_task(build_task(RedialConfig(seed=2, val_dialogues=40, test_dialogues=60), rows, catalog),
                       tmp_path / "c")
    assert set(paths) >= {"train", "val", "test", "catalog", "task", "baselines/item_knn_test.jsonl"}
    for key in paths:
        assert paths[key].read_bytes() == again[key].read_bytes(), key
    assert paths["test"].read_bytes() != other["test"].read_bytes()


def test_empty_validation_split_with_a_fixed_score(tmp_path, capsys):
    assert cli_main(["redial", str(tmp_path / "o"), "--val-dialogues", "0", "--test-dialogues", "5",
                     "--knn-score", "count"]) == 0
    info = json.loads((tmp_path / "o" / "task.json").read_text())  # strict JSON: no NaN for the empty split
    assert info["splits"]["val"] == {"rows": 0, "dialogues": 0, "mean_groundtruth": 0.0, "teacher_ndcg": None,
                                     "popularity_ndcg": None}
    assert (tmp_path / "o" / "val.jsonl").read_text() == ""
    assert "val 0 rows / 0 dialogues (teacher NDCG@20 -" in capsys.readouterr().err


def test_cli_errors_name_the_flag_and_the_row(tmp_path, capsys):
    assert cli_main(["redial", str(tmp_path / "o"), "--val-dialogues", "700", "--test-dialogues", "600"]) == 2
    assert "--val-dialogues + --test-dialogues = 1300" in capsys.readouterr().err
    assert cli_main(["redial", str(tmp_path / "o"), "--val-dialogues", "0"]) == 2
    assert "--knn-score auto" in capsys.readouterr().err
    src = tmp_path / "rows.jsonl"
    good = _row("d1", "USER: Alpha (1980)", ["Alpha"], [["Omega", "1999"]])
    bad = {k: v for k, v in good.items() if k != "dialog_id"}
    src.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert cli_main(["redial", str(tmp_path / "o"), "--rows", str(src)]) == 2
    err = capsys.readouterr().err
    assert "no dialog_id" in err and "line 2" in err
    assert not (tmp_path / "o").exists()  # nothing written on an error
