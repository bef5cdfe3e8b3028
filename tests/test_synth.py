"""rank-grpo synth: the miniature conversational-recommendation task (standard library only)."""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rank_grpo_plugin.recsys.catalog import Catalog
from rank_grpo_plugin.recsys.match import catalog_hits
from rank_grpo_plugin.recsys.metrics import ndcg_at_k
from rank_grpo_plugin.tasks.synth import SynthConfig, build_task, expected_ndcg_random_ranks, write_task


@pytest.fixture(scope="module")
def catalog():
    from rank_grpo_plugin.resources import REDDIT_V2_CATALOG

    return Catalog.from_file(REDDIT_V2_CATALOG)


def _run_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "rank_grpo_plugin.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow  # runs the rank-grpo CLI in a subprocess
def test_deterministic_per_seed_and_seed_matters(tmp_path, catalog):
    a = write_task(build_task(SynthConfig(seed=3), catalog), tmp_path / "a")
    b = write_task(build_task(SynthConfig(seed=3), catalog), tmp_path / "b")
    c = write_task(build_task(SynthConfig(seed=4), catalog), tmp_path / "c")
    for key in ("train", "val", "test", "catalog", "task"):
        assert a[key].read_bytes() == b[key].read_bytes(), key
    assert a["train"].read_bytes() != c["train"].read_bytes()


@pytest.mark.parametrize("cfg", [SynthConfig(), SynthConfig(seed=1, two_group_rate=0.5, groups=5, items=80,
                                                               gt_size=4, seen_min=2, teacher_recall=0.25),
                                 SynthConfig(seed=2, items_per_group=4, seen_max=1, k=10, val_rows=3, test_rows=4,
                                             train_rows=50, items=40, teacher_recall=1.0)])
def test_rows_obey_the_task_rules(cfg, catalog):
    task = build_task(cfg, catalog)
    items = set(task.catalog)
    assert len(items) == cfg.items == len(task.catalog)
    group_of = {it: g for g, members in enumerate(task.groups) for it in members}
    assert len(group_of) == cfg.groups * cfg.items_per_group and all(it in items for it in group_of)
    combos = {}
    for split, rows in task.rows.items():
        assert len(rows) == getattr(cfg, f"{split}_rows")
        combos[split] = [r["task"]["combination"] for r in rows]
        for r in rows:
            seen = r["seen_titles"]
            gt = [(t, int(y)) for t, y in r["groundtruth_with_release_year"]]
            liked = [it for it in items if it[0] in seen]
            assert cfg.seen_min <= len(seen) <= cfg.seen_max and len(liked) == len(seen)
            groups = sorted({group_of[it] for it in liked})
            assert groups == r["task"]["groups"] and len(groups) in (1, 2)
            # the ground truth: other items of the same group(s), never a seen one
            assert gt and not {t for t, _ in gt} & set(seen)
            assert all(group_of.get(it) in groups for it in gt)
            unseen_group = [it for it in group_of if group_of[it] in groups and it not in liked]
            assert len(gt) == (cfg.gt_size or len(unseen_group)) and len(set(gt)) == len(gt)
            for t in seen:  # the liked items are named in the user turn
                assert t in r["prompt"][0]["content"]
            lines = r["completion"][0]["content"].split("\n")
            assert len(lines) == cfg.k and len(set(lines)) == cfg.k
            hits = catalog_hits(r["completion"][0]["content"], r["groundtruth_with_release_year"], seen,
                                Catalog(task.catalog), k=cfg.k)
            assert sum(hits) == min(len(gt), round(cfg.teacher_recall * len(gt)))  # the teacher's recall
    # held-out combinations never occur in training, and validation and test are disjoint and unique
    assert not set(combos["val"]) & set(combos["train"]) and not set(combos["test"]) & set(combos["train"])
    held = combos["val"] + combos["test"]
    assert len(set(held)) == len(held)
    if cfg.two_group_rate:
        assert any("|" in c for c in combos["train"]) and any("|" in c for c in held)


def test_reference_scores(catalog):
    # NDCG of k random distinct items out of n with g relevant: every rank is relevant with probability g/n
    assert expected_ndcg_random_ranks(2, 4, 4) == pytest.approx(0.5 * sum(1 / math.log2(j + 2) for j in range(4))
                                                                / (1 + 1 / math.log2(3)))
    rng = random.Random(0)
    sims = [ndcg_at_k([int(x < 3) for x in rng.sample(range(30), 10)], 3, 10) for _ in range(20000)]
    assert sum(sims) / len(sims) == pytest.approx(expected_ndcg_random_ranks(3, 30, 10), abs=0.005)
    s = build_task(SynthConfig(teacher_recall=1.0), catalog).summary()["splits"]["test"]
    assert 0 < s["random_list_ndcg"] < s["teacher_ndcg"] < 1.0  # all of the ground truth, on random ranks


@pytest.mark.parametrize("flags, message", [
    (["--seen-max", "8"], "--seen-max: must be < --items-per-group (8)"),
    (["--items", "20"], "--items: must be >= --groups x --items-per-group = 32"),
    (["--gt-size", "6"], "--gt-size: at most --items-per-group - --seen-max = 5"),
    (["--teacher-recall", "1.5"], "--teacher-recall: must be in [0, 1]"),
    (["--test-rows", "400"], "only 368 exist"),
    (["--items", "6000", "--max-title-words", "1"], "--items 6000: the catalog has only"),
    (["--items", "40", "--two-group-rate", "0.5", "--k", "30"], "--k: a teacher list of 30 distinct items"),
])
@pytest.mark.slow  # runs the rank-grpo CLI in a subprocess
def test_bad_flags_name_the_flag_and_write_nothing(tmp_path, flags, message):
    proc = _run_cli(["synth", str(tmp_path / "out"), *flags], tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # runs the rank-grpo CLI in a subprocess
def test_cli_writes_rows_that_prepare_accepts(tmp_path):
    proc = _run_cli(["synth", "task", "--train-rows", "40", "--val-rows", "4", "--test-rows", "8", "--seed", "5"],
                    tmp_path)
    assert proc.returncode == 0, proc.stderr
    paths = json.loads(proc.stdout)
    assert "test 8 rows (8 combinations" in proc.stderr
    summary = json.loads(Path(tmp_path, paths["task"]).read_text())
    assert summary["config"]["seed"] == 5 and len(summary["groups"]) == 4
    proc = _run_cli(["prepare", "task/train.jsonl", "--rl", "rl.jsonl", "--sft", "sft.jsonl"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rl = [json.loads(line) for line in (tmp_path / "rl.jsonl").read_text().splitlines()]
    sft = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / "task" / "train.jsonl").read_text().splitlines()]
    assert len(rl) == len(sft) == 40
    label = json.loads(rl[0]["label"])
    assert label["seen"] == rows[0]["seen_titles"]
    assert label["groundtruth"] == [[t, int(y)] for t, y in rows[0]["groundtruth_with_release_year"]]
    # the task's catalog holds every item any row names
    cat = Catalog.from_file(tmp_path / "task" / "catalog.jsonl")
    assert all(cat.contains(t, y) for r in rows for t, y in r["groundtruth_with_release_year"])
    help_text = _run_cli(["synth", "--help"], tmp_path).stdout
    for flag in ("--seed", "--items", "--groups", "--items-per-group", "--seen-min", "--seen-max", "--gt-size",
                 "--k", "--train-rows", "--val-rows", "--test-rows", "--teacher-recall", "--two-group-rate"):
        assert flag in help_text
