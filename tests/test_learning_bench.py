"""benchmarks/_learning.py, the learning benchmark's statistics and decisions, on hand-written launcher logs and
hand-worked numbers (no OpenRLHF run); and benchmarks/learning.py's report on a hand-made record."""
import importlib.util
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench_args(lb, tmp_path, **changes):
    """learning.py's parsed arguments (its own parser): the benchmark's protocol (200 steps, validation every 5,
    synth, 200 tokens), one arm, one rate, one seed, the record at tmp_path/rec.json; ``changes`` override."""
    a = lb.parse_args(["final", "--tag", "t", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "rec.json"),
                       "--lrs", "1e-4", "--seeds", "1", "--arms", "rank"])
    vars(a).update(changes)
    return a


def _stand_in_sft(cmd, weights: bytes) -> None:
    """What OpenRLHF's SFT leaves in ``cmd``'s output folder, for tests that cannot afford a real training:
    ``config.json`` and ``weights`` as model.safetensors."""
    out = Path(cmd[cmd.index("--ckpt.output_dir") + 1])
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(weights)


@pytest.fixture(scope="module")
def L():
    return _load("_learning")


def _log(rewards, evals):
    out = [f"(PPOTrainer pid=1) Global step {i}: {{'reward': {r}, 'rank_grpo/ndcg': {r}, 'rank_grpo/hit_r02': 0.5, "
           f"'rank_grpo/hit_r01': {i / 4}, 'rank_grpo/clip_frac_low': 0.01}}" for i, r in enumerate(rewards, 1)]
    out += [f"(PPOTrainer pid=1) INFO ✨ Evaluation completed in 0:00:11, global_step {st}, "
            f"eval_metrics: {{'eval_default_pass8': 0.9, 'eval_default_pass1': {v}}}" for st, v in evals]
    return "\n".join(out) + "\n"


def test_curves_from_a_launcher_log(tmp_path, L):
    (tmp_path / "train.log").write_text(_log([0.1, 0.2, 0.3, 0.4], [(2, 0.22), (4, 0.24), (4, 0.24)]))
    c = L.curves(tmp_path / "train.log")
    assert c["step"] == [1, 2, 3, 4] and c["reward"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert c["hits"][3] == [1.0, 0.5]  # ranks in order, whatever the log's key order
    assert c["eval_step"] == [2, 4] and c["eval_ndcg"] == pytest.approx([0.22, 0.24])  # one per step
    assert c["clip_low"] == [0.01] * 4 and all(math.isnan(x) for x in c["clip_high"])
    assert L.clip_fraction(c) == pytest.approx(0.01)  # no high side logged: the low side is all of it
    # the rank-level loss logs both sides: a step's clipped fraction is their sum, then the mean over steps
    assert L.clip_fraction({"clip_low": [0.01, 0.03], "clip_high": [0.002, 0.004]}) == pytest.approx(0.023)
    assert L.clip_fraction({"clip_low": [0.01, 0.03]}) == pytest.approx(0.02)  # a record without clip_high
    assert L.with_step0(c, 0.15) == ([0, 2, 4], [0.15, 0.22, 0.24])
    assert L.with_step0(c, None) == ([2, 4], [0.22, 0.24])
    # OpenRLHF's own losses (GRPO, GSPO) log one both-sides fraction, ppo_clip_ratio in 0.11
    (tmp_path / "grpo.log").write_text("(PPOTrainer pid=1) Global step 1: {'reward': 0.2, 'ppo_clip_ratio': 0.004}\n"
                                       "(PPOTrainer pid=1) Global step 2: {'reward': 0.3, 'ppo_clip_ratio': 0.006}\n")
    assert L.clip_fraction(L.curves(tmp_path / "grpo.log")) == pytest.approx(0.005)


def test_statistics(L):
    m, sd = L.mean_sd([1.0, 2.0, 4.0, float("nan")])  # nan (a diverged step) is left out
    assert m == pytest.approx(7 / 3)
    assert sd == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert L.mean_sd([0.5]) == (0.5, 0.0) and math.isnan(L.mean_sd([])[0])
    assert L.fmt([0.3, 0.5]) == "0.400 ± 0.141" and L.fmt([]) == "n/a"
    assert L.fmt([0.3, float("nan")]) == "0.300"  # one value: no sd to show
    runs = [{"eval_step": [5, 10, 15], "eval_ndcg": [0.2, 0.3, 0.4]}, {"eval_step": [5, 10], "eval_ndcg": [0.4, 0.5]}]
    steps, mean, sd = L.mean_curve(runs, step0=0.1)
    assert steps == [0, 5, 10] and mean == pytest.approx([0.1, 0.3, 0.4]) and sd[0] == 0.0  # common steps only
    assert sd[1] == pytest.approx(math.sqrt(0.02))


def test_best_reach_and_flat(L):
    steps = [0, 5, 10, 15, 20, 30, 40]
    values = [0.1, 0.2, 0.3, float("nan"), 0.3, 0.31, 0.29]
    assert L.best_point(steps, values) == (30, 0.31)
    assert L.best_point(steps, [0.3, 0.3]) == (0, 0.3)  # the first step of the maximum
    assert L.first_reach(steps, values, 0.3) == 10 and L.first_reach(steps, values, 0.5) is None
    assert L.flat_since(steps, values, tol=0.02) == 10  # 0.31 at 30 is within 0.02 of the 0.30 best
    assert L.flat_since(steps, values, tol=0.0) == 30
    creep = [0.10 + 0.015 * i for i in range(6)]  # +0.015 per evaluation: each rise is small, the total is not
    assert L.flat_since([0, 10, 20, 30, 40, 50], creep, tol=0.02) == 40
    assert L.flat_since([0, 10], [float("nan")] * 2, tol=0.02) is None


def test_choose_lr_and_steps_ratio(L):
    assert L.choose_lr({1e-4: 0.25, 3e-4: 0.30, 1e-3: 0.29}) == (3e-4, False)
    assert L.choose_lr({1e-4: 0.31, 3e-4: 0.30, 1e-3: float("nan")}) == (1e-4, True)  # the lowest: extend grid
    assert L.choose_lr({1e-4: 0.30, 3e-4: 0.30}) == (1e-4, True)  # a tie goes to the lower rate
    assert L.choose_lr({1e-4: float("nan")}) == (None, False)
    assert [L.lower_rate(r) for r in (1e-3, 3e-4, 1e-4, 3e-5)] == [3e-4, 1e-4, 3e-5, 1e-5]
    seq = ([0, 10, 20, 30], [0.1, 0.2, 0.25, 0.24])  # best 0.25 at step 20
    assert L.steps_ratio(([0, 10, 20, 30], [0.1, 0.26, 0.3, 0.3]), seq) == {
        "target": 0.25, "sequence_step": 20, "rank_step": 10, "ratio": 0.5}
    assert L.steps_ratio(([0, 10, 20, 30], [0.1, 0.2, 0.2, 0.2]), seq)["ratio"] is None


def test_reference_lists(L):
    from rank_grpo_plugin.data import Row
    from rank_grpo_plugin.recsys.catalog import Catalog

    cat = Catalog([(f"Film {i}", 2000 + i) for i in range(30)])
    rows = [Row("r1", [{"role": "user", "content": "x"}], [("Film 1", 2001), ("Film 2", 2002)], ["Film 3"],
                completion="Film 2 (2002)\nFilm 9 (2009)"),
            Row("r2", [{"role": "user", "content": "y"}], [("Film 5", 2005)], [], completion="Film 5 (2005)")]
    oracle = L.reference_lists(rows, cat, "oracle", draws=3)
    assert all(len(lst.split("\n")) == 20 for per in oracle for lst in per)
    assert all(per[0].split("\n")[:2] == ["Film 1 (2001)", "Film 2 (2002)"] for per in oracle[:1])
    s = L.score_lists(rows, oracle, cat)
    assert s["draws"] == 3 and s["metrics"]["rank/ndcg@20"] == (1.0, 0.0) and s["duplicate_rate"] == (0.0, 0.0)
    teacher = L.score_lists(rows, L.reference_lists(rows, cat, "teacher"), cat)
    # row 1: hit at rank 1 of 2 ground-truth items -> NDCG 1 / (1 + 1/log2(3)); row 2: NDCG 1
    assert teacher["metrics"]["rank/ndcg@20"][0] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 1) / 2)
    rand = L.reference_lists(rows, cat, "random", draws=4, seed=1)
    assert all(len(set(lst.split("\n"))) == 20 for per in rand for lst in per)  # K distinct items
    assert rand == L.reference_lists(rows, cat, "random", draws=4, seed=1)  # reproducible from the seed
    assert L.score_lists(rows, rand, cat)["in_catalog_rate"] == (1.0, 0.0)
    with pytest.raises(ValueError, match="valid: teacher, random, oracle"):
        L.reference_lists(rows, cat, "best")


def test_report_from_a_record(tmp_path, L, capsys, monkeypatch):
    """learning.py's report reads only the record: grid, chosen rates, per-seed steps ratio, failed runs."""
    lb = _load("learning")
    record = {"runs": {}, "sft": {"val": {"metrics": {"rank/ndcg@20": [0.15, 0.01], "rank/recall@20": [0.2, 0.0]},
                                          "in_catalog_rate": 0.9, "duplicate_rate": 0.1}}}

    def put(arm, lr, seed, evals, status="done"):
        curves = {"eval_step": [s for s, _ in evals], "eval_ndcg": [v for _, v in evals], "clip_low": [0.1]}
        record["runs"][lb.run_id(arm, lr, seed)] = {"arm": arm, "lr": lr, "seed": seed, "status": status, "rc": 0,
                                                    "wall_s": 1.0, "steps_logged": 3, "curves": curves}

    put("rank", 1e-4, 1, [(10, 0.20), (20, 0.25)])
    put("rank", 3e-4, 1, [(10, 0.30), (20, 0.31)])
    put("sequence", 1e-4, 1, [(10, 0.20), (20, 0.28)])
    put("sequence", 3e-4, 1, [(10, 0.30)], status="failed")
    put("rank", 3e-4, 2, [(10, 0.32), (20, 0.30)])
    put("sequence", 1e-4, 2, [(10, 0.26), (20, 0.27)])
    cols = [f"rank/{m}@{c}" for m in ("recall", "ndcg") for c in (5, 10, 20)]
    for seed, v in ((1, 0.3), (2, 0.5)):  # tested final runs of the rank arm: every cut-off at v
        record["runs"][lb.run_id("rank", 3e-4, seed)]["test"] = {
            "metrics": {c: [v, 0.01] for c in cols}, "in_catalog_rate": 0.9, "duplicate_rate": 0.05,
            "mean_items": 20.0}
    record["references"] = {"test": {"popularity": {"metrics": {c: [0.1, 0.0] for c in cols},
                                                    "in_catalog_rate": [1.0, 0.0], "duplicate_rate": [0.0, 0.0]}}}
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(record))
    monkeypatch.setattr(lb, "LRS", (1e-4, 3e-4))  # this record's protocol grid
    b = lb.Bench(_bench_args(lb, tmp_path, results=str(path), quick=True, lrs=[1e-4, 3e-4], seeds=[1, 2],
                             arms=list(lb.ARMS), steps=20, eval_every=10))
    b.record = record
    assert b.rate("rank") == 3e-4 and b.rate("sequence") == 1e-4  # sequence's 3e-4 run failed: best so far
    assert b.final_rate("rank") == 3e-4 and b.final_rate("sequence") is None  # no final runs on an unfinished grid
    assert "sequence: its grid has a rate without a finished tuning run" in capsys.readouterr().out
    text = b.report()
    assert "| **0.310** @20 (last 0.310, mean 0.305, flat from 10) |" in text  # best 0.31 at 20, 0.30 at 10
    assert "| **0.280** @20 (last 0.280, mean 0.240, flat from 20) |" in text  # (0.20 + 0.28) / 2
    # seed 1: sequence best 0.28 at step 20, rank reaches it at 10 -> 0.5; seed 2: 0.27 at 20, rank at 10 -> 0.5
    assert "rank vs sequence, seed 1: sequence best 0.280 at step 20, rank reaches it at step 10 -> 0.50x" in text
    assert "**rank vs sequence: steps ratio 0.50 ± 0.00** over 2 of 2 seed pairs" in text
    assert "sequence_lr3e-4_s1: exit 0" in text  # failed runs are listed
    # the final table marks an arm whose grid has a rate without a finished run (sequence: 3e-4 failed)
    assert "| sequence-level credit (grid incomplete) | 1e-4 | 2/2 |" in text
    # a seed whose rank run never reaches the sequence run's best: said in words, and left out of the ratio
    record["runs"][lb.run_id("rank", 3e-4, 2)]["curves"]["eval_ndcg"] = [0.20, 0.21]
    text = b.report()
    assert "rank vs sequence, seed 2: sequence best 0.270 at step 20, rank never reaches it\n" in text
    assert "**rank vs sequence: steps ratio 0.50** over 1 of 2 seed pairs" in text  # one ratio: no sd
    assert "| Rank-GRPO (rank-level credit) | 3e-4 | 2/2 | 2 |" in text
    assert "| popularity lists | 0.100 ± 0.000 |" in text
    sd = ((0.3 - 0.4) ** 2 * 2) ** 0.5  # sample sd of (0.3, 0.5)
    assert f"| Rank-GRPO (rank-level credit) (2 seeds) | 0.400 ± {sd:.3f} | 0.400 ± {sd:.3f} |" in text
    assert "Runs from an earlier SFT start" not in text
    record["earlier_starts"] = [{"weights_sha256": "ab" * 32, "why_set_aside": "lost with its machine",
                                 "sft": record["sft"], "runs": {"rank_lr1e-4_s1": record["runs"]["rank_lr1e-4_s1"]}}]
    section = ("\n\n### Runs from an earlier SFT start (sha256 abababababab), set aside\n\nSet aside: lost with its "
               "machine.\n\n- rank_lr1e-4_s1: best validation NDCG@20 0.250 @20 (last 0.250)")
    earlier = b.report()
    assert section in earlier and earlier.replace(section, "") == text  # shown, and nothing else changes
    del record["earlier_starts"]
    b.a.seeds = [2]  # a `final --seeds 2` call reports every seed the record holds, not only the one it ran
    assert b.report() == text
    b.a.seeds = [1, 2]
    assert lb.lr_name(3e-4) == "3e-4" and lb.lr_name(1e-3) == "1e-3"

    # a lower rate added for one arm alone (its best was the grid's lowest): its grid has it, the others do not,
    # also while the call that runs it (--lrs 3e-5) is the one reporting
    put("sequence", 3e-5, 1, [(10, 0.29), (20, 0.29)])
    b.a.lrs = [3e-5]
    assert b.arm_grid("sequence") == [3e-5, 1e-4, 3e-4] and b.arm_grid("rank") == [1e-4, 3e-4]
    assert b.grid_complete("rank")
    assert b.rate("sequence") == 3e-5  # 3e-5 is now its lowest
    text = b.report()
    assert "| Rank-GRPO (rank-level credit) | - | 0.250 @20" in text
    assert "| sequence-level credit | **0.290** @10" in text
    assert [t for t in b.plan() if t.startswith(("tune  rank_l", "tune  sequence_l"))] == [
        "tune  sequence_lr3e-4_s1 (failed)"]
    # the grid complete and its lowest rate (3e-5) the best: the plan asks for 1e-5 and `final` waits for it
    put("sequence", 3e-4, 1, [(10, 0.20), (20, 0.21)])
    assert b.missing_lower("sequence") == 1e-5 and b.missing_lower("rank") is None
    assert "tune  sequence_lr1e-5_s1 (its best is the grid's lowest: tune --arms sequence --lrs 1e-5)" in b.plan()
    assert "final sequence: after its grid" in b.plan()
    b.a.arms, b.a.seeds = ["sequence"], [3]
    b.final()  # runs nothing (a run here would fail: no launcher in this test) and says why
    said = capsys.readouterr().out
    assert "no final runs before its grid has the lower rate: tune --arms sequence --lrs 1e-5" in said
    b.a.lrs = [1e-5]  # the call that runs it reports the protocol's next rate as such while it runs
    assert "| sequence-level credit | not run (the protocol's next) | **0.290** @10" in b.report()

    # the plots' horizontal lines: validation references, the oracle left out, a baseline that is the SFT
    # teacher (ReDial's item-kNN) drawn once and named so
    val = lambda v: {"metrics": {"rank/ndcg@20": [v, 0.0], "rank/recall@20": [v, 0.0]},  # noqa: E731
                     "in_catalog_rate": [1.0, 0.0], "duplicate_rate": [0.0, 0.0]}
    record["references"]["val"] = {"teacher": val(0.07), "random": val(0.01), "oracle": val(1.0),
                                   "popularity": val(0.02), "item_knn": val(0.07)}
    drawn = []
    monkeypatch.setattr(lb.L, "plot_curves", lambda path, title, series, hl: drawn.append(hl))
    b.quick, b.img_prefix = False, tmp_path / "img"
    b.report()
    assert drawn and all(hl == {"random lists": 0.01, "popularity lists": 0.02,
                                "item_knn lists (the SFT teacher)": 0.07} for hl in drawn)


def test_a_record_refuses_another_protocol(tmp_path):
    """Runs under two protocols never share a table: a call with other settings than the record's stops before
    anything runs, naming each flag and both values."""
    lb = _load("learning")
    path = tmp_path / "rec.json"
    path.write_text(json.dumps({"runs": {}, "protocol": {"steps": 200, "eval_every": 5, "lrs": [1e-4],
                                                         "task": "synth", "task_args": "",
                                                         "shared": {"max_new_tokens": 200}}}))
    lb.Bench(_bench_args(lb, tmp_path, results=str(path)))  # the record's own settings: accepted
    with pytest.raises(SystemExit) as e:
        lb.Bench(_bench_args(lb, tmp_path, results=str(path), steps=100, task_args="--seed 2"))
    assert "--steps 100 (the record's runs used 200)" in str(e.value)
    assert "--task-args '--seed 2' (the record's runs used '')" in str(e.value)
    with pytest.raises(SystemExit, match=r"--base 'smollm2' \(the record's runs used 'tiny'\)"):
        lb.Bench(_bench_args(lb, tmp_path, results=str(path), base="smollm2"))  # a record from before --base: tiny


def test_a_smollm2_start_trains_with_its_own_settings_and_is_not_kept(tmp_path, monkeypatch):
    """--base smollm2: the start is SFT of the converted SmolLM2 (the path its build prints) at the base's settings,
    its evaluations use vLLM, RL runs get its prompt length, and its ~270 MB start is not copied beside the record;
    a start that is not the recorded one says so. The model build, SFT and evaluation are stand-ins (hours on CPU)."""
    lb = _load("learning")
    smol = tmp_path / "cache" / "SmolLM2-135M-Instruct"
    calls = []

    def fake_sh(self, cmd, logfile, env=None, **kw):
        cmd = [str(c) for c in cmd]
        calls.append((cmd, env))
        logfile.parent.mkdir(parents=True, exist_ok=True)
        if "openrlhf.cli.train_sft" in cmd:
            _stand_in_sft(cmd, b"smol sft")
        elif "evaluate" in cmd:
            dest = Path(cmd[cmd.index("--out") + 1])
            dest.mkdir(parents=True)
            keys = [f"{p}/{n}@{c}" for p in ("rank", "paper") for n in ("ndcg", "recall") for c in (5, 10, 20)]
            (dest / "metrics.json").write_text(json.dumps({"summary": {
                "metrics": {k: 0.5 for k in keys}, "in_catalog_rate": 0.9, "duplicate_rate": 0.1, "mean_items": 20}}))
        else:
            Path(cmd[-1]).write_text(str(smol))  # the build writes the converted checkpoint's path there
        return 0

    monkeypatch.setattr(lb.Bench, "sh", fake_sh)
    b = lb.Bench(_bench_args(lb, tmp_path, base="smollm2", max_new_tokens=280))
    assert b.sft_start(tmp_path / "sft.jsonl") == tmp_path / "runs" / "sft"
    sft, sft_env = next((c, e) for c, e in calls if "openrlhf.cli.train_sft" in c)
    flag = lambda name: sft[sft.index(name) + 1]  # noqa: E731
    assert (flag("--model.model_name_or_path"), flag("--adam.lr"), flag("--data.max_len"),
            flag("--train.max_epochs"), flag("--train.batch_size")) == (str(smol), "5e-05", "1024", "1", "8")
    # micro-batches of 2 under a fixed mmap threshold (out of memory otherwise), checkpoints it resumes from
    assert (flag("--train.micro_batch_size"), flag("--ckpt.save_steps")) == ("2", "20") and "--ckpt.load_enable" in sft
    assert sft_env["MALLOC_MMAP_THRESHOLD_"] == "65536" and sft_env["HF_HUB_OFFLINE"] == "1"
    assert not (tmp_path / "rec_sft").exists()  # not kept beside the record
    ev = b.evaluate(tmp_path / "runs" / "sft", "test", tmp_path / "ev")
    cmd, env = calls[-1]
    assert cmd[cmd.index("--backend") + 1] == "vllm" and "--batch-size" not in cmd and "OMP_NUM_THREADS" not in env
    assert cmd[cmd.index("--max-new-tokens") + 1] == "280" and ev["metrics"]["rank/ndcg@20"] == [0.5, None]
    # every evaluation keeps its per-row metrics; a ReDial row's group (for paired comparisons) is its dialogue
    assert "--save-rows" in cmd and "--group-field" not in cmd
    b.a.task = "redial"
    b.evaluate(tmp_path / "runs" / "sft", "test", tmp_path / "ev_redial")
    cmd = calls[-1][0]
    assert cmd[cmd.index("--group-field") + 1] == "task.dialog_id"
    b.a.task = "synth"
    assert b.recipe("rank", 1e-4, 1, tmp_path / "r").prompt_max_len == 1024
    b.save()
    assert json.loads((tmp_path / "rec.json").read_text())["protocol"]["base"] == "smollm2"

    (tmp_path / "runs" / "sft" / "model.safetensors").write_bytes(b"trained again elsewhere")
    with pytest.raises(SystemExit, match="the start of --base smollm2 is not kept beside the record"):
        b.sft_start(tmp_path / "sft.jsonl")
    tiny = lb.Bench(_bench_args(lb, tmp_path, out=str(tmp_path / "t"), results=str(tmp_path / "t.json")))
    assert tiny.recipe("rank", 1e-4, 1, tmp_path / "r").prompt_max_len == 512  # the recipe's default
    tiny.evaluate(tmp_path / "runs" / "sft", "val", tmp_path / "ev_tiny")
    cmd, env = calls[-1]
    assert cmd[cmd.index("--backend") + 1] == "hf" and env["OMP_NUM_THREADS"] == "1"

    # the launch recorded its command beside its checkpoints; a start that has checkpoints resumes only with it
    ckpt = tmp_path / "runs" / "sft_ckpt"
    assert json.loads((ckpt / "rank_grpo_launch.json").read_text())["command"] == sft
    (ckpt / "latest").write_text("global_step20")  # as DeepSpeed leaves it after a checkpoint
    shutil.rmtree(tmp_path / "runs" / "sft")
    assert b.sft_start(tmp_path / "sft.jsonl") == tmp_path / "runs" / "sft"  # the same command (a free port)
    resumed = [c for c, _ in calls if "openrlhf.cli.train_sft" in c]
    assert len(resumed) == 2 and resumed[0][3:] == resumed[1][3:]
    launch = json.loads((ckpt / "rank_grpo_launch.json").read_text())
    launch["command"][launch["command"].index("--adam.lr") + 1] = "1e-4"
    (ckpt / "rank_grpo_launch.json").write_text(json.dumps(launch))
    shutil.rmtree(tmp_path / "runs" / "sft")
    logs = sorted(p.name for p in (tmp_path / "runs" / "logs").iterdir())
    with pytest.raises(SystemExit, match=r"SFT not started: .*sft_ckpt holds checkpoints of another command.*"
                                         r"--adam.lr: 1e-4 -> 5e-05$"):
        b.sft_start(tmp_path / "sft.jsonl")
    assert len([c for c, _ in calls if "openrlhf.cli.train_sft" in c]) == 2  # not launched
    assert sorted(p.name for p in (tmp_path / "runs" / "logs").iterdir()) == logs  # its log not moved


def test_the_sft_start_is_kept_beside_the_record_and_restored_from_it(tmp_path, monkeypatch):
    """A record resumes on a fresh machine from the SFT start kept beside it (trained again elsewhere, a start
    differs in its bits): the first setup trains it and keeps a copy, a second OUT restores that copy without
    training, and a start in OUT that is not the recorded one is refused, naming both digests and the copy."""
    import hashlib

    lb = _load("learning")
    trained = []

    def fake_sh(self, cmd, logfile, **kw):
        """Stands in for the tiny model build (nothing to do) and OpenRLHF's SFT (weights unique to the call)."""
        if "openrlhf.cli.train_sft" in cmd:
            trained.append(cmd)
            _stand_in_sft(cmd, b"weights %d" % len(trained))
        return 0

    monkeypatch.setattr(lb.Bench, "sh", fake_sh)
    sha1 = hashlib.sha256(b"weights 1").hexdigest()
    first = lb.Bench(_bench_args(lb, tmp_path))
    assert first.sft_start(tmp_path / "sft.jsonl") == tmp_path / "runs" / "sft" and len(trained) == 1
    assert first.record["sft"]["weights_sha256"] == sha1
    # the tiny start's SFT command is the one its record was made with: no checkpoints, no resume
    assert trained[0][trained[0].index("--ckpt.save_steps") + 1] == "-1" and "--ckpt.load_enable" not in trained[0]
    assert (tmp_path / "rec_sft" / "model.safetensors").read_bytes() == b"weights 1"  # kept beside rec.json
    quick = lb.Bench(_bench_args(lb, tmp_path, quick=True, out=str(tmp_path / "q"), results=str(tmp_path / "q.json")))
    quick.sft_start(tmp_path / "sft.jsonl")
    assert len(trained) == 2 and not (tmp_path / "q_sft").exists()  # a smoke run records and keeps nothing

    fresh = lb.Bench(_bench_args(lb, tmp_path, out=str(tmp_path / "fresh")))
    fresh.record = first.record
    (tmp_path / "fresh" / "sft").mkdir(parents=True)  # what an interrupted SFT training leaves: no config.json
    (tmp_path / "fresh" / "sft" / "optimizer.pt").write_bytes(b"partial")
    assert fresh.sft_start(tmp_path / "sft.jsonl") == tmp_path / "fresh" / "sft"
    assert len(trained) == 2 and (tmp_path / "fresh" / "sft" / "model.safetensors").read_bytes() == b"weights 1"
    assert sorted(p.name for p in (tmp_path / "fresh" / "sft").iterdir()) == ["config.json", "model.safetensors"]

    other = lb.Bench(_bench_args(lb, tmp_path, out=str(tmp_path / "other")))
    other.record = first.record
    (tmp_path / "other" / "sft").mkdir(parents=True)  # a start trained on another machine
    (tmp_path / "other" / "sft" / "config.json").write_text("{}")
    (tmp_path / "other" / "sft" / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(SystemExit) as e:
        other.sft_start(tmp_path / "sft.jsonl")
    sha2 = hashlib.sha256(b"other weights").hexdigest()
    assert f"(sha256 {sha2[:12]}) is not the one the record's runs began from ({sha1[:12]})" in str(e.value)
    assert f"remove {tmp_path / 'other' / 'sft'} to restore it from {tmp_path / 'rec_sft'}" in str(e.value)
    (tmp_path / "rec_sft" / "model.safetensors").write_bytes(b"damaged")  # a kept copy that is not it either
    with pytest.raises(SystemExit, match=r"the copy in .*rec_sft \(" + hashlib.sha256(b"damaged").hexdigest()[:12]):
        other.sft_start(tmp_path / "sft.jsonl")
    assert len(trained) == 2


def test_one_process_at_a_time_per_record(tmp_path):
    """A second tune/final on a record another one holds stops, naming the holder (both would rewrite it from
    their own copy and lose runs); a separate record is free."""
    lb = _load("learning")
    first = lb.Bench(_bench_args(lb, tmp_path))  # kept: its lock lives as long as its open lock file
    first.lock()
    with pytest.raises(SystemExit, match=rf"rec.json is in use by another learning.py \(pid {os.getpid()}\)"):
        lb.Bench(_bench_args(lb, tmp_path)).lock()
    lb.Bench(_bench_args(lb, tmp_path, results=str(tmp_path / "other.json"))).lock()


@pytest.mark.slow  # a subprocess
def test_runs_need_an_installed_plugin():
    """tune/final check once that the launcher's Python can activate the plugin (without site-packages it
    cannot: python -S), instead of recording every run as failed after 10 s."""
    lb = _load("learning")
    lb.plugin_importable_or_exit()
    with pytest.raises(SystemExit) as e:
        lb.plugin_importable_or_exit((sys.executable, "-S"))
    assert "rank_grpo_plugin is not installed" in str(e.value) and "pip install -e" in str(e.value)


@pytest.mark.slow  # three subprocesses
def test_a_rerun_keeps_the_logs_it_would_overwrite(tmp_path):
    """Bench.sh run three times into one log (a killed SFT resumed, a failed RL run retried): the last run's output
    is the log, the earlier ones are kept as NAME.1.log, NAME.2.log, and the exit codes come back."""
    import sys

    lb = _load("learning")
    b = lb.Bench(_bench_args(lb, tmp_path))
    log = tmp_path / "runs" / "r" / "train.log"
    codes = [b.sh([sys.executable, "-c", f"print('run {i}'); raise SystemExit({rc})"], log)
             for i, rc in ((1, 0), (2, 3), (3, 0))]
    assert codes == [0, 3, 0]
    out = {p.name: p.read_text().splitlines()[1] for p in log.parent.iterdir()}
    assert out == {"train.1.log": "run 1", "train.2.log": "run 2", "train.log": "run 3"}


@pytest.mark.slow  # two subprocesses
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_run_and_what_it_started(tmp_path, sig):
    """learning.py started in the background (SIGINT ignored, as a non-interactive shell's `&` leaves it): SIGINT or
    SIGTERM still stops it with exit 130, and the launcher it was running is killed, not orphaned."""
    import os
    import signal
    import subprocess
    import time

    script = tmp_path / "child.py"
    script.write_text(f"""
import importlib.util, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT / 'benchmarks')!r})
spec = importlib.util.spec_from_file_location("lb", {str(ROOT / 'benchmarks' / 'learning.py')!r})
lb = importlib.util.module_from_spec(spec); spec.loader.exec_module(lb)
lb.install_interrupt_handlers()
args = lb.parse_args(["final", "--quick", "--arms", "rank", "--out", {str(tmp_path / 'runs')!r}])
try:
    lb.Bench(args).sh([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(300)"],
                      Path({str(tmp_path / 'launcher.log')!r}))
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(1)
""")
    p = subprocess.Popen([sys.executable, str(script)], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    log = tmp_path / "launcher.log"
    deadline = time.time() + 120
    while time.time() < deadline and len(log.read_text().splitlines() if log.exists() else []) < 2:
        time.sleep(0.2)
    launcher = int(log.read_text().splitlines()[1])
    t = time.time()
    p.send_signal(getattr(signal, sig))
    assert p.wait(timeout=30) == 130
    assert time.time() - t < 15
    with pytest.raises(ProcessLookupError):
        os.kill(launcher, 0)


def test_a_second_task_runs_at_the_rates_another_record_chose(tmp_path, monkeypatch):
    """--rates-from: each arm at the rate its finished grid chose in another record (no grid on this task: `plan`
    lists only final runs, `tune` refuses); an arm without a finished grid there, a run at another rate and a later
    call without the flag are refused by name; the report states the borrowed rates instead of a grid."""
    lb = _load("learning")
    monkeypatch.setattr(lb, "LRS", (1e-4, 3e-4))
    ev = {"metrics": {"rank/ndcg@20": [0.15, 0.01], "rank/recall@20": [0.2, 0.0]}, "in_catalog_rate": 0.9,
          "duplicate_rate": 0.1}
    step0 = {"val": ev, "test": ev}  # the SFT start evaluated on both splits: `setup` is done

    def run(arm, lr, seed, best):
        return {"arm": arm, "lr": lr, "seed": seed, "status": "done", "rc": 0, "wall_s": 1.0, "steps_logged": 2,
                "curves": {"eval_step": [10, 20], "eval_ndcg": [best - 0.05, best], "clip_low": [0.1]}}

    # the default task: rank 0.30 at 3e-4 over 0.20 at 1e-4 -> 3e-4; sequence 0.25 at 1e-4 over 0.22 -> 1e-4, the
    # grid's lowest, with its lower rate 3e-5 run (0.21) -> 1e-4; grpo best at its lowest rate, no lower one run
    source = {"sft": step0, "runs": {lb.run_id(a, lr, 1): run(a, lr, 1, v) for a, lr, v in (
        ("rank", 1e-4, 0.20), ("rank", 3e-4, 0.30), ("sequence", 3e-5, 0.21), ("sequence", 1e-4, 0.25),
        ("sequence", 3e-4, 0.22), ("grpo", 1e-4, 0.26), ("grpo", 3e-4, 0.2))}}
    src = tmp_path / "default.json"
    src.write_text(json.dumps(source))
    assert lb.rates_of(src, ["rank", "sequence"]) == {"rank": 3e-4, "sequence": 1e-4}
    with pytest.raises(SystemExit, match=r"no finished grid for grpo there"):
        lb.rates_of(src, ["rank", "grpo"])

    # the second task's record, begun with `tune --arms rank --lrs 3e-4`: its run is at the borrowed rate
    rec = tmp_path / "big.json"
    protocol = {"steps": 200, "eval_every": 5, "lrs": [3e-4], "task": "synth", "task_args": "",
                "shared": {"max_new_tokens": 200}}
    rec.write_text(json.dumps({"runs": {"rank_lr3e-4_s1": run("rank", 3e-4, 1, 0.4)}, "sft": step0,
                               "protocol": protocol}))
    args = dict(results=str(rec), arms=["rank", "sequence"], seeds=[1, 2], rates_from=str(src))
    b = lb.Bench(_bench_args(lb, tmp_path, **args))
    b.img_prefix = tmp_path / "img" / "learning_t"  # the report's plots, not into docs/img
    assert b.rate("rank") == 3e-4 and b.rate("sequence") == 1e-4 and b.rate("grpo") is None
    assert b.arm_grid("sequence") == [1e-4] and b.grid_complete("sequence") and b.missing_lower("rank") is None
    assert b.plan() == ["final rank_lr3e-4_s1 (test evaluation)", "final rank_lr3e-4_s2",
                        "final sequence_lr1e-4_s1", "final sequence_lr1e-4_s2"]
    b.record["sft"] = {"val": ev}  # an SFT start never evaluated on the test rows: setup comes first
    assert b.plan()[0].startswith("setup (task, SFT start, its evaluations)") and b.plan()[1:] == [
        "final rank_lr3e-4_s1 (test evaluation)", "final rank_lr3e-4_s2", "final sequence_lr1e-4_s1",
        "final sequence_lr1e-4_s2"]
    b.record["sft"] = step0
    with pytest.raises(SystemExit, match="no grid to tune; run `final`"):
        b.tune()
    b.save()
    saved = json.loads(rec.read_text())["protocol"]["rates_from"]
    assert saved == {"record": str(src), "rates": {"rank": 3e-4, "sequence": 1e-4}}
    text = b.report()
    assert "### Rates: chosen on another task" in text and "Learning-rate grid" not in text
    assert f"validation rows of `{src}`: Rank-GRPO (rank-level credit) 3e-4, sequence-level credit 1e-4." in text
    assert "| Rank-GRPO (rank-level credit) | 3e-4 | 1/1 | 0 | 0.400 |" in text  # no "(grid incomplete)"
    assert "Plot of the grid" not in text and (tmp_path / "img" / "learning_t_val_ndcg.png").is_file()

    # refused: the record's runs were made under --rates-from, this call has none; a run at another rate
    with pytest.raises(SystemExit, match=rf"--rates-from None \(the record's runs used '{src}'\)"):
        lb.Bench(_bench_args(lb, tmp_path, **dict(args, rates_from=None)))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"runs": {"rank_lr1e-4_s1": run("rank", 1e-4, 1, 0.4)}, "protocol": protocol}))
    with pytest.raises(SystemExit, match=r"rank_lr1e-4_s1 is at 1e-4, not 3e-4"):
        lb.Bench(_bench_args(lb, tmp_path, **dict(args, results=str(other))))
