"""Per-rank reward schemes against hand-computed values."""
import math

import pytest
import torch

from rank_grpo_plugin import REWARD_SCHEMES, rank_rewards

HITS = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]])


def test_exp_inf_is_the_hit_itself():
    assert rank_rewards(HITS).tolist() == HITS.float().tolist()
    assert rank_rewards(HITS).dtype == torch.float32


def test_log_is_causal_dcg():
    # 1-based j: weights 1/log2(2)=1, 1/log2(3), 1/log2(4)=0.5, 1/log2(5)
    w4 = 1 / math.log2(5)
    expected = [[1.5, 0.5, 0.5, 0.0], [0.0] * 4, [w4, w4, w4, w4]]
    assert torch.allclose(rank_rewards(HITS, "log"), torch.tensor(expected))


def test_exp_gamma_discounts_by_distance_from_rank():
    # gamma = 2: r_0 = 1 + 1/4, r_1 = 1/2, r_2 = 1, r_3 = 0; last row: 1/8, 1/4, 1/2, 1
    expected = [[1.25, 0.5, 1.0, 0.0], [0.0] * 4, [0.125, 0.25, 0.5, 1.0]]
    assert torch.allclose(rank_rewards(HITS, "exp", gamma=2.0), torch.tensor(expected))


def test_exp_with_huge_gamma_approaches_exp_inf():
    assert torch.allclose(rank_rewards(HITS, "exp", gamma=1e9), HITS.float(), atol=1e-8)


def test_k20_log_first_rank_equals_list_dcg():
    hits = torch.zeros(1, 20)
    hits[0, [0, 4, 19]] = 1
    dcg = 1 / math.log2(2) + 1 / math.log2(6) + 1 / math.log2(21)
    assert rank_rewards(hits, "log")[0, 0].item() == pytest.approx(dcg, rel=1e-6)


def test_errors_list_valid_names_and_check_gamma():
    with pytest.raises(ValueError, match="exp, exp_inf, log"):
        rank_rewards(HITS, "dcg")
    for bad in (None, 1.0, 0.5, float("inf")):
        with pytest.raises(ValueError, match="gamma"):
            rank_rewards(HITS, "exp", gamma=bad)
    with pytest.raises(ValueError, match="only used by the 'exp'"):
        rank_rewards(HITS, "log", gamma=2.0)
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        rank_rewards(torch.ones(4))
    assert REWARD_SCHEMES.names() == ["exp", "exp_inf", "log"]


def test_list_returns_sum_exp_inf_and_take_rank1_of_the_look_ahead_schemes():
    from rank_grpo_plugin.rewards import LIST_RETURNS, REWARD_SCHEMES, list_returns

    assert LIST_RETURNS.names() == REWARD_SCHEMES.names()  # every scheme has its list return
    hits = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert list_returns(rank_rewards(hits, "exp_inf"), "exp_inf").tolist() == [2.0, 0.0]
    dcg = 1.0 + 1.0 / math.log2(4)  # hits on ranks 1 and 3
    assert list_returns(rank_rewards(hits, "log"), "log").tolist() == pytest.approx([dcg, 0.0])
    assert list_returns(rank_rewards(hits, "exp", 2.0), "exp").tolist() == pytest.approx([1.0 + 0.25, 0.0])
    with pytest.raises(ValueError, match="unknown list return 'dcg'; valid names: exp, exp_inf, log"):
        list_returns(hits, "dcg")
