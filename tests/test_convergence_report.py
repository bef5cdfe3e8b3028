"""benchmarks/convergence.py's report arithmetic, on a hand-written launcher log (no OpenRLHF run)."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def conv():
    spec = importlib.util.spec_from_file_location("convergence_bench", ROOT / "benchmarks" / "convergence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_curves_from_a_launcher_log(tmp_path, conv):
    lines = []
    for step in range(1, 5):
        lines.append(f"(PPOTrainer pid=1) Global step {step}: {{'reward': {step / 10}, 'rank_grpo/ndcg': {step / 10}, "
                     f"'rank_grpo/hit_r02': 0.5, 'rank_grpo/hit_r01': {step / 4}, 'rank_grpo/clip_frac_low': 0.01}}")
        if step % 2 == 0:
            lines.append(f"(PPOTrainer pid=1) INFO ✨ Evaluation completed in 0:00:11, global_step {step}, "
                         f"eval_metrics: {{'eval_default_pass4': 0.9, 'eval_default_pass1': {0.2 + step / 100}}}")
    (tmp_path / "train.log").write_text("\n".join(lines) + "\n")
    c = conv.curves(tmp_path, step0=0.15)
    assert c["step"] == [1, 2, 3, 4] and c["reward"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert c["hits"][3] == [1.0, 0.5]  # ranks in order, whatever the log's key order
    assert c["eval_step"] == [0, 2, 4] and c["eval_ndcg"] == pytest.approx([0.15, 0.22, 0.24])
    assert c["clip_low"] == [0.01] * 4 and all(math.isnan(x) for x in c["clip_high"])


def test_mean_sd_and_steps_to_reach(conv):
    m, sd = conv.mean_sd([1.0, 2.0, 4.0, float("nan")])  # nan (a diverged step) is left out
    assert m == pytest.approx(7 / 3) and sd == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                                                                          + (4 - 7 / 3) ** 2) / 2))
    assert conv.mean_sd([0.5]) == (0.5, 0.0) and math.isnan(conv.mean_sd([])[0])
    steps = [0, 10, 20, 30]
    assert conv.steps_to_reach(steps, [0.1, 0.2, 0.3, 0.25], 0.3) == 20
    assert conv.steps_to_reach(steps, [0.1, 0.2, 0.29, 0.25], 0.3) is None
    assert conv.mean_curve([[1, 2, 3], [3, 4]]) == [2, 3]  # truncated to the shortest run


def test_report_merges_the_record_with_the_runs_on_disk(tmp_path, conv, capsys):
    """A run only in the results record (its folder gone) is reported beside one on disk; the disk wins."""
    def log(rewards, evals):
        out = [f"(PPOTrainer pid=1) Global step {i}: {{'reward': {r}, 'rank_grpo/ndcg': {r}}}"
               for i, r in enumerate(rewards, 1)]
        out += [f"(PPOTrainer pid=1) INFO ✨ Evaluation completed in 0:00:11, global_step {st}, eval_metrics: {{'eval_default_pass1': {v}}}"
                for st, v in evals]
        return "\n".join(out) + "\n"

    run = tmp_path / "rl" / "rank_grpo_s1"
    run.mkdir(parents=True)
    (run / "train.log").write_text(log([0.1, 0.2], [(2, 0.30)]))
    final = {"sampled": {"rank/ndcg@20": 0.30, "rank/recall@20": 0.40}}
    (run / "done.json").write_text(json.dumps({"rc": 0, "final_eval": final}))
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "train.log").write_text(log([0.3, 0.4], [(2, 0.50)]))
    rec2 = {"status": "done", "meta": {"rc": 0, "final_eval": {"sampled": {"rank/ndcg@20": 0.50,
                                                                            "rank/recall@20": 0.60}}},
            "curves": conv.curves(other), "failed_attempts": []}
    stale = dict(rec2, meta={"rc": 0, "final_eval": {"sampled": {"rank/ndcg@20": 9.0, "rank/recall@20": 9.0}}})
    record = {"data": {"rank_grpo": {"1": stale, "2": rec2}}}
    rec2["curves"] = dict(rec2["curves"], eval_step=[0, 2], eval_ndcg=[0.149, 0.50])  # a stale step-0 point
    res = conv.report(tmp_path, ["rank_grpo"], [1, 2, 3], {}, step0=0.15, record=record, last=2)
    text = capsys.readouterr().out
    assert "From the results record (run folders not on this disk): Rank-GRPO s2" in text
    assert res["finals"]["rank_grpo"]["ndcg_sampled"] == [0.30, 0.50]  # seed 1 from disk, not the stale record
    assert "| 0.400 ± 0.141 |" in text  # held-out NDCG@20 at step 2: mean and sd of 0.30, 0.50
    assert all("from_record" not in r for r in res["data"]["rank_grpo"].values())  # a mark of the report, not data
    assert "| Rank-GRPO | 2/2 | 0.150 ± 0.000 | 0.400 ± 0.141 |" in text  # one step 0 for both seeds
    assert res["data"]["rank_grpo"]["2"]["curves"]["eval_ndcg"] == [0.15, 0.50]


def test_same_sft_start_by_hash_else_by_greedy_metrics(conv):
    g = {"rank/ndcg@20": 0.0053, "rank/recall@20": 0.0031, "duplicate_rate": 0.9, "in_catalog_rate": 1.0}
    rec = {"greedy": g, "sampled": {"rank/ndcg@20": 0.170}}
    here = {"greedy": dict(g), "sampled": {"rank/ndcg@20": 0.168}, "weights_sha256": "ab"}
    same = lambda r, h: conv.same_sft_start(r, h)[0]  # noqa: E731
    assert same(rec, here) is True  # the sampled metrics differ: not evidence either way
    assert conv.same_sft_start(rec, here)[1].endswith("the same")
    assert same(rec, dict(here, greedy=dict(g, duplicate_rate=0.8))) is False
    assert "DIFFERENT" in conv.same_sft_start(rec, dict(here, greedy=dict(g, duplicate_rate=0.8)))[1]
    assert same(dict(rec, weights_sha256="cd"), here) is False  # the hash wins when recorded
    assert same(dict(rec, weights_sha256="ab"), dict(here, greedy={})) is True
    assert conv.same_sft_start({}, here) == (None, "SFT start: nothing recorded to compare it with")


def test_recorded_step0_is_the_stored_value_else_the_first_curve_point(conv):
    curve = lambda st, v: {"curves": {"eval_step": st, "eval_ndcg": v}}  # noqa: E731
    old = {"data": {"gspo": {"1": curve([10], [0.2])}, "rank_grpo": {"1": curve([0, 10], [0.153, 0.2])}}}
    assert conv.recorded_step0(old) == 0.153  # gspo s1 has no step-0 point; rank_grpo s1's is taken
    assert conv.recorded_step0(dict(old, step0=0.16)) == 0.16
    assert conv.recorded_step0({"data": {"gspo": {"1": curve([10], [0.2])}}}) is None
    assert conv.recorded_step0({}) is None
