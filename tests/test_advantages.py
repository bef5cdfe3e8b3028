"""Per-rank group advantages and token placement with length shaping, worked by hand."""
import math

import pytest
import torch

from rank_grpo_plugin import rank_advantages, rank_ids, token_advantages


def test_group_normalisation_per_rank_unbiased_std():
    # one prompt, G = 3, K = 2. rank 0: [1, 0, 0]; rank 1: [1, 1, 1] (zero std)
    r = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    a = rank_advantages(r, group_size=3)
    std = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased: divide by G - 1
    expected0 = [(2 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4)]
    assert a[:, 0].tolist() == pytest.approx(expected0, rel=1e-6)
    assert a[:, 1].tolist() == [0.0, 0.0, 0.0]


def test_groups_are_independent_and_scale_none_centres_only():
    r = torch.tensor([[1.0], [3.0], [10.0], [10.0]])  # two prompts, G = 2
    a = rank_advantages(r, group_size=2, scale="none")
    assert a.flatten().tolist() == [-1.0, 1.0, 0.0, 0.0]
    g = rank_advantages(r, group_size=2, eps=0.0)
    assert g.flatten().tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0, 0.0])


def test_all_zero_hits_give_zero_advantages():
    assert rank_advantages(torch.zeros(8, 20), group_size=4).abs().sum() == 0


def test_advantage_errors():
    with pytest.raises(ValueError, match="not a multiple of group_size=4"):
        rank_advantages(torch.zeros(6, 20), group_size=4)
    with pytest.raises(ValueError, match=">= 2"):
        rank_advantages(torch.zeros(6, 20), group_size=1)
    with pytest.raises(ValueError, match="group, none"):
        rank_advantages(torch.zeros(6, 20), group_size=2, scale="batch")


# Vocabulary for token placement: 1 = "x", 2 = "\n", 3 = "\n\n", 9 = EOS, 0 = pad
TABLE = torch.tensor([0, 0, 1, 2, 0, 0, 0, 0, 0, 0])
K = 3
A = torch.tensor([[10.0, 20.0, 30.0]])


def place(tokens, eos_id=9, **kw):
    ids = torch.tensor([tokens])
    m = (ids != 0).long()
    r = rank_ids(ids, m, TABLE)
    return token_advantages(A, r, m, (ids == eos_id).long(), K, **kw)[0].tolist()


def test_exactly_k_items_then_eos_gets_bonus():
    # "x\nx\nx" EOS pad
    assert place([1, 2, 1, 2, 1, 9, 0]) == pytest.approx([10, 10, 20, 20, 30, 0.1, 0])


def test_trailing_newline_after_k_items_is_not_overflow():
    assert place([1, 2, 1, 2, 1, 2, 9]) == pytest.approx([10, 10, 20, 20, 30, 30, 0.1])


def test_early_eos_is_penalised():
    assert place([1, 2, 1, 9]) == pytest.approx([10, 10, 20, -0.1])
    assert place([9]) == pytest.approx([-0.1])  # empty completion


def test_overflow_tokens_and_eos_in_overflow_are_penalised():
    # K + 1 items: the 4th line is overflow
    assert place([1, 2, 1, 2, 1, 2, 1, 2, 9]) == pytest.approx([10, 10, 20, 20, 30, 30, -0.1, -0.1, -0.1])


def test_double_newline_skips_a_rank_and_blank_line_counts():
    # "x\n\nx" EOS: the blank second line is rank 1 (no tokens), third line rank 2 -> 3 items
    assert place([1, 3, 1, 9]) == pytest.approx([10, 10, 30, 0.1])


def test_truncated_completion_gets_no_eos_shaping():
    assert place([1, 2, 1]) == pytest.approx([10, 10, 20])
    # truncated inside the overflow: overflow tokens still penalised
    assert place([1, 2, 1, 2, 1, 2, 1, 1]) == pytest.approx([10, 10, 20, 20, 30, 30, -0.1, -0.1])


def test_custom_shaping_values():
    assert place([1, 2, 1, 9], early_stop_penalty=-1.0) == pytest.approx([10, 10, 20, -1.0])
    assert place([1, 2, 1, 2, 1, 9], eos_bonus=0.0) == pytest.approx([10, 10, 20, 20, 30, 0.0])


def test_shape_errors():
    ids = torch.tensor([[1, 9]])
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        token_advantages(torch.zeros(1, 2), ids, ids, ids, 3)


def test_separator_start_credits_the_newline_with_the_item_it_starts():
    """Hand example, K = 2, vocabulary A, "\\n", B, <eos>: "A\\nB\\n<eos>" and "A<eos>" (stopped after one item)."""
    table = torch.tensor([0, 0, 1, 0, 0, 0, 0])  # id 2 is "\n"
    ids = torch.tensor([[1, 2, 5, 2, 6], [1, 6, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    eos = ids == 6
    adv = torch.tensor([[0.5, -0.3], [-0.2, 0.4]])
    end, start = rank_ids(ids, mask, table), rank_ids(ids, mask, table, separator="start")
    assert end.tolist() == [[0, 0, 1, 1, 2], [0, 0, -1, -1, -1]]
    assert start.tolist() == [[0, 1, 1, 2, 2], [0, 0, -1, -1, -1]]
    by_end = token_advantages(adv, end, mask, eos, 2)
    by_start = token_advantages(adv, end, mask, eos, 2, credit_ids=start)
    # end: each newline carries the item it closes; EOS after exactly K items (+ one trailing newline): +0.1
    assert by_end.flatten().tolist() == pytest.approx([0.5, 0.5, -0.3, -0.3, 0.1, -0.2, -0.1, 0, 0, 0])
    # start: the first newline carries item 2's -0.3, the one after item K is overflow (-0.1); EOS shaping unchanged
    assert by_start.flatten().tolist() == pytest.approx([0.5, -0.3, -0.3, -0.1, 0.1, -0.2, -0.1, 0, 0, 0])
    with pytest.raises(ValueError, match="separator must be one of"):
        rank_ids(ids, mask, table, separator="middle")


def test_tokens_after_the_first_eos_get_nothing_and_only_the_first_eos_is_shaped():
    """[x, "\n", x, EOS, x, EOS], all-ones mask, K = 3: two items then EOS -> -0.1 there, 0 afterwards (the
    second EOS is not shaped again)."""
    ids = torch.tensor([[1, 2, 1, 9, 1, 9]])
    m = torch.ones_like(ids)
    out = token_advantages(A, rank_ids(ids, m, TABLE), m, (ids == 9).long(), K)
    assert out[0].tolist() == pytest.approx([10, 10, 20, -0.1, 0, 0])


def test_through_first_eos_keeps_rows_without_eos_whole():
    from rank_grpo_plugin.ranks import through_first_eos

    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    eos = torch.tensor([[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 1, 0, 0]])  # row 2: an "EOS" on padding
    assert through_first_eos(mask, eos).long().tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]


def test_level_advantages_rank_is_rank_advantages_and_sequence_broadcasts_the_list_advantage():
    from rank_grpo_plugin.advantages import level_advantages

    r = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # 2 prompts, G = 2
    torch.testing.assert_close(level_advantages(r, 2, "rank"), rank_advantages(r, 2))
    seq = level_advantages(r, 2, "sequence", scale="none")  # returns 2, 1 | 1, 1
    assert seq.tolist() == [[0.5] * 3, [-0.5] * 3, [0.0] * 3, [0.0] * 3]
    with pytest.raises(ValueError, match="valid names: rank, sequence"):
        level_advantages(r, 2, "token")
