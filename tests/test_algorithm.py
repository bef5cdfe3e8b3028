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


def test_options_are_a_recipe_config_with_one_set_of_defaults_and_bad_shapes():
    from rank_grpo_plugin.config import DEFAULT_RECIPE
    from rank_grpo_plugin.options import RankGRPOOptions

    opts = RankGRPOOptions(num_ranks=2, reward_scheme="exp", gamma=2.0, eos_bonus=0.3, catalog="c.jsonl")
    assert isinstance(opts, RecipeConfig)
    for name in RecipeConfig.__dataclass_fields__:  # every recipe default is the config's
        assert getattr(RankGRPOOptions(), name) == getattr(DEFAULT_RECIPE, name), name
    hits, ranks, mask, eos = _batch()
    out = rank_grpo_advantages(hits, ranks, mask, eos, 2, opts)
    assert out.token_advantages[0, -1].item() == pytest.approx(0.3)  # the options' EOS bonus is used
    # a bad name arriving through the environment's JSON (no argparse choices there) is a problem naming its flag
    bad = RankGRPOOptions.from_json('{"advantage_level": "list", "separator": "middle"}')
    assert bad.problems() == ["--rank_grpo.advantage_level must be one of ['rank', 'sequence'], got 'list'",
                              "--rank_grpo.separator must be one of ['end', 'start'], got 'middle'"]
    with pytest.raises(ValueError, match=r"hits must be \[B, 3\]"):
        rank_grpo_advantages(hits, ranks, mask, eos, 2, RecipeConfig(num_ranks=3))
    with pytest.raises(ValueError, match="group_size"):
        rank_grpo_advantages(hits, ranks, mask, eos, 1, CFG)
    with pytest.raises(ValueError, match="unknown advantage level 'list'; valid names: rank, sequence"):
        rank_grpo_advantages(hits, ranks, mask, eos, 2, RecipeConfig(num_ranks=2, advantage_level="list"))


def test_sequence_level_gives_every_rank_the_normalised_list_return_with_the_same_shaping():
    """K = 2, one prompt, G = 2. Hits [1, 1] and [0, 1]: exp_inf list returns 2 and 1 -> centred +-0.5, unbiased
    std sqrt(0.5): A = +-0.5 / (sqrt(0.5) + 1e-4) on every rank of the list; shaping as in the rank level."""
    cfg = RecipeConfig(num_ranks=2, advantage_level="sequence")
    hits = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    ranks = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 2, 2, -1]])  # row 1 runs into the overflow, then stops
    mask = ranks >= 0
    eos = torch.tensor([[0, 0, 0, 0, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    out = rank_grpo_advantages(hits, ranks, mask, eos, 2, cfg)
    want = torch.tensor([[A, A, A, A, 0.1], [-A, -A, -0.1, -0.1, 0.0]])  # overflow token and EOS there: -0.1
    torch.testing.assert_close(out.token_advantages, want)
    torch.testing.assert_close(out.rank_advantages, torch.tensor([[A, A], [-A, -A]]))
    torch.testing.assert_close(out.returns, torch.tensor([2.0, 1.0]))
    # rank level on the same batch: rank 0 differs (+-A), rank 1 does not (0): the one difference is the credit
    rank = rank_grpo_advantages(hits, ranks, mask, eos, 2, RecipeConfig(num_ranks=2))
    torch.testing.assert_close(rank.token_advantages, torch.tensor([[A, A, 0.0, 0.0, 0.1], [-A, 0.0, -0.1, -0.1, 0]]))
    torch.testing.assert_close(rank.returns, out.returns)


def test_sequence_level_return_of_the_log_scheme_is_the_rank1_reward():
    """log scheme, K = 2: r = [h1 + h2 / log2(3), h2 / log2(3)]; the list return is r_1 (DCG@2), not the sum."""
    cfg = RecipeConfig(num_ranks=2, reward_scheme="log", advantage_level="sequence", adv_scale="none")
    hits = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    ranks = torch.tensor([[0, 1], [0, 1]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    eos = torch.zeros(2, 2, dtype=torch.bool)
    out = rank_grpo_advantages(hits, ranks, mask, eos, 2, cfg)
    d = 1 / math.log2(3)
    torch.testing.assert_close(out.returns, torch.tensor([d, 1.0]))
    centred = torch.tensor([(d - 1) / 2, (1 - d) / 2])
    torch.testing.assert_close(out.token_advantages, centred.unsqueeze(1).expand(2, 2))


def test_equal_returns_give_zero_sequence_advantage_even_with_different_hits():
    cfg = RecipeConfig(num_ranks=2, advantage_level="sequence")
    hits, ranks, mask, eos = _batch()  # one hit each, on different ranks: same list return
    out = rank_grpo_advantages(hits, ranks, mask, eos, 2, cfg)
    torch.testing.assert_close(out.token_advantages, torch.tensor([[0.0, 0, 0, 0, 0.1], [0.0, 0, 0, 0, 0]]))


def test_nothing_after_the_first_eos_gets_an_advantage():
    """Ids [5, "\n", 6, EOS, 7, EOS] with an all-ones mask (a host whose mask runs past the first EOS): the row
    ends at the first EOS, which gets the early-stop value; the tokens after it get 0, the second EOS too."""
    from rank_grpo_plugin import rank_ids

    table = torch.tensor([0, 1, 0, 0, 0, 0, 0, 0, 0, 0])  # id 1 is "\n", 9 is EOS
    ids = torch.tensor([[5, 1, 6, 9, 7, 9], [5, 1, 6, 9, 7, 9]])
    mask = torch.ones_like(ids)
    eos = ids == 9
    ranks = rank_ids(ids, mask, table)
    out = rank_grpo_advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), ranks, mask, eos, 2, CFG,
                               token_penalty=torch.full(ids.shape, -0.5))
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    # rank 0 row 0: +a, row 1: -a; rank 1: 0; EOS after 2 items = K: +0.1; KL return-to-go over 4 tokens only
    togo = torch.tensor([-2.0, -1.5, -1.0, -0.5, 0.0, 0.0])
    torch.testing.assert_close(out.token_advantages[0], torch.tensor([a, a, 0.0, 0.1, 0.0, 0.0]) + togo)
    torch.testing.assert_close(out.token_advantages[1], torch.tensor([-a, -a, 0.0, 0.1, 0.0, 0.0]) + togo)
    assert out.items_emitted.tolist() == [2.0, 2.0]
