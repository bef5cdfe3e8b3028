"""The pure Rank-GRPO recipe (rank_grpo_plugin.algorithm) against numbers worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from rank_grpo_plugin.algorithm import RecipeConfig, rank_grpo_advantages, reverse_cumsum

CFG = RecipeConfig(num_ranks=2)
A = 0.5 / (math.sqrt(0.5) + 1e-4)  # (1 - 0.5) / (unbiased std of [1, 0] + eps)


def _batch():
    hits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ranks = torch.tensor([[0, 0, 1, 1, 2], [0, 1, -1, -1, -1]])
    mask = ranks >= 0
    eos = torch.tensor([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)  # row 1 is truncated
    return hits, ranks, mask, eos


def test_recipe_places_group_normalised_rank_advantages_and_shaping():
    out = rank_grpo_advantages(*_batch(), group_size=2, config=CFG)
    want = torch.tensor([[A, A, -A, -A, 0.1], [-A, A, 0.0, 0.0, 0.0]])  # EOS after exactly K items: +0.1
    torch.testing.assert_close(out.token_advantages, want)
    torch.testing.assert_close(out.rank_rewards, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(out.rank_advantages, torch.tensor([[A, -A], [-A, A]]))
    assert out.items_emitted.tolist() == [2.0, 2.0]  # truncated row: the lines it began


def test_token_penalty_is_added_as_return_to_go():
    hits, ranks, mask, eos = _batch()
    penalty = torch.full(ranks.shape, -0.1)
    out = rank_grpo_advantages(hits, ranks, mask, eos, 2, CFG, token_penalty=penalty)
    base = rank_grpo_advantages(hits, ranks, mask, eos, 2, CFG).token_advantages
    togo = torch.tensor([[-0.5, -0.4, -0.3, -0.2, -0.1], [-0.2, -0.1, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out.token_advantages, base + togo)
    torch.testing.assert_close(reverse_cumsum(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[6.0, 5.0, 3.0]]))


def test_equal_groups_give_zero_rank_advantages_and_only_shaping():
    hits, ranks, mask, eos = _batch()
    out = rank_grpo_advantages(torch.ones_like(hits), ranks, mask, eos, 2, CFG)
    assert out.rank_advantages.abs().max() == 0
    torch.testing.assert_close(out.token_advantages, torch.tensor([[0.0, 0, 0, 0, 0.1], [0.0, 0, 0, 0, 0]]))


def test_config_from_options_and_bad_shapes():
    class Opts:
        num_ranks, reward_scheme, gamma, eos_bonus = 2, "exp", 2.0, 0.3

    cfg = RecipeConfig.from_options(Opts())
    assert (cfg.num_ranks, cfg.reward_scheme, cfg.gamma, cfg.eos_bonus, cfg.adv_eps) == (2, "exp", 2.0, 0.3, 1e-4)
    hits, ranks, mask, eos = _batch()
    with pytest.raises(ValueError, match=r"hits must be \[B, 3\]"):
        rank_grpo_advantages(hits, ranks, mask, eos, 2, RecipeConfig(num_ranks=3))
    with pytest.raises(ValueError, match="group_size"):
        rank_grpo_advantages(hits, ranks, mask, eos, 1, CFG)
