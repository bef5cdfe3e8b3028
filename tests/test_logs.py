"""The launcher-log parser (stdlib only; no OpenRLHF needed)."""
import math

from openrlhf_compat.logs import finite, parse_step_line, parse_steps, rank_series, read_steps

LOG = """\
(PPOTrainer pid=11) INFO something else {'reward': 9}
(PPOTrainer pid=11) Global step 1: {'reward': 0.25, 'policy_loss': -0.5, 'rank_grpo/hit_r02': 0.5, 'rank_grpo/hit_r01': 0.125}
(PPOTrainer pid=11) INFO 12-02 02:01:30 ppo_trainer.py:598] ✨ Evaluation completed in 0:00:11, global_step 1, eval_metrics: {'eval_default_pass4': 0.40, 'eval_default_pass1': 0.25}
(PPOTrainer pid=11) Global step 2: {'reward': nan, 'kl': -inf, 'lr': 1e-05, 'ok': True, 'g': tensor(0.75), 'tag': 'a, b', 'rank_grpo/hit_r10': 1.0}
"""


def test_parses_steps_in_order_with_nan_and_inf_kept():
    steps = parse_steps(LOG)
    assert [s.step for s in steps] == [1, 1, 2]
    assert steps[1] == {"eval_default_pass4": 0.40, "eval_default_pass1": 0.25}  # the held-out evaluation
    del steps[1]
    assert steps[0] == {"reward": 0.25, "policy_loss": -0.5, "rank_grpo/hit_r02": 0.5, "rank_grpo/hit_r01": 0.125}
    s2 = steps[1]
    assert math.isnan(s2["reward"]) and s2["kl"] == -math.inf
    assert s2["lr"] == 1e-5 and s2["ok"] == 1.0 and s2["g"] == 0.75
    assert "tag" not in s2  # a string value is skipped, the rest of the step kept
    assert rank_series(steps[0], "hit") == [0.125, 0.5]  # sorted by rank, not by log order
    assert rank_series(s2, "hit") == [1.0] and rank_series(s2, "reward") == []
    assert finite([s["reward"] for s in steps]) == [0.25]


def test_not_a_step_line_and_missing_file(tmp_path):
    assert parse_step_line("Global step x: {}") is None
    assert parse_step_line("no step here") is None
    assert parse_step_line("Global step 4: {}") == {} and parse_step_line("Global step 4: {}").step == 4
    assert read_steps(tmp_path / "absent.log") == []
    (tmp_path / "a.log").write_text(LOG)
    assert [s.step for s in read_steps(tmp_path / "a.log")] == [1, 1, 2]
