"""Group-normalised advantages (per rank, or per list for the ablation) and their placement on tokens (with
length shaping)."""
from __future__ import annotations

from typing import Optional

import torch

from ._registry import Registry
from .config import DEFAULT_RECIPE as _D
from .ranks import num_emitted_items, through_first_eos
from .rewards import list_returns

__all__ = ["ADVANTAGE_SCALES", "ADVANTAGE_LEVELS", "rank_advantages", "level_advantages", "token_advantages"]

ADVANTAGE_SCALES: Registry = Registry("advantage scaling")
ADVANTAGE_LEVELS: Registry = Registry("advantage level")


@ADVANTAGE_SCALES.register("group")
def _scale_group(centered: torch.Tensor, grouped: torch.Tensor, eps: float) -> torch.Tensor:
    """(r - mean) / (std + eps), unbiased std over the group, separately for every rank. A rank whose group
    rewards are all equal gets 0 (not NaN), even with eps = 0."""
    denom = grouped.std(dim=1, unbiased=True, keepdim=True) + eps
    return torch.where(denom > 0, centered / denom.clamp(min=torch.finfo(denom.dtype).tiny), torch.zeros_like(centered))


@ADVANTAGE_SCALES.register("none")
def _scale_none(centered: torch.Tensor, grouped: torch.Tensor, eps: float) -> torch.Tensor:
    """r - mean (Dr. GRPO style: no division by the group's spread)."""
    return centered


def rank_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = _D.adv_scale, eps: float = _D.adv_eps
) -> torch.Tensor:
    """Normalise per-rank rewards within each prompt's group, separately for every rank.

    Args:
        rewards: FloatTensor[B, K]; rows of one prompt are consecutive groups of ``group_size`` rows.
        group_size: G >= 2 samples per prompt.
        scale: one of :data:`ADVANTAGE_SCALES` (``group``: divide by std + eps; ``none``: centre only).
        eps: added to the std.

    Returns:
        FloatTensor[B, K] (float32). A group whose rewards at rank k are all equal gets 0 at rank k.
    """
    fn = ADVANTAGE_SCALES.get(scale)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, K], got shape {tuple(rewards.shape)}")
    if int(group_size) < 2:
        raise ValueError(f"group_size must be >= 2 for group-relative advantages, got {group_size}")
    b, k = rewards.shape
    if b % group_size:
        raise ValueError(
            f"batch of {b} rows is not a multiple of group_size={group_size}: "
            "each prompt needs exactly group_size consecutive samples"
        )
    grouped = rewards.to(torch.float32).view(b // group_size, group_size, k)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    return fn(centered, grouped, eps).view(b, k)


@ADVANTAGE_LEVELS.register("rank")
def _level_rank(rewards: torch.Tensor, group_size: int, scheme: str, scale: str, eps: float) -> torch.Tensor:
    """Rank-GRPO: every rank normalised on its own within the group (:func:`rank_advantages`)."""
    return rank_advantages(rewards, group_size, scale=scale, eps=eps)


@ADVANTAGE_LEVELS.register("sequence")
def _level_sequence(rewards: torch.Tensor, group_size: int, scheme: str, scale: str, eps: float) -> torch.Tensor:
    """The sequence-level ablation: the list's return (:func:`rank_grpo_plugin.rewards.list_returns`) normalised
    within the group the same way, and that one advantage given to every rank of the list."""
    per_list = rank_advantages(list_returns(rewards, scheme).unsqueeze(1), group_size, scale=scale, eps=eps)
    return per_list.expand_as(rewards).contiguous()


def level_advantages(
    rewards: torch.Tensor,
    group_size: int,
    level: str = _D.advantage_level,
    scheme: str = _D.reward_scheme,
    scale: str = _D.adv_scale,
    eps: float = _D.adv_eps,
) -> torch.Tensor:
    """Advantages of every rank at the chosen credit level.

    Args:
        rewards: FloatTensor[B, K] per-rank rewards from :func:`rank_grpo_plugin.rank_rewards` with ``scheme``;
            rows of one prompt are consecutive groups of ``group_size`` rows.
        group_size: G >= 2.
        level: one of :data:`ADVANTAGE_LEVELS`: ``rank`` (per-rank normalisation, Rank-GRPO) or ``sequence``
            (one normalised return per list, the same value on every rank).
        scheme: the reward scheme of ``rewards`` (it defines the list return for ``sequence``).
        scale, eps: as in :func:`rank_advantages`.

    Returns:
        FloatTensor[B, K] (float32), ready for :func:`token_advantages`.
    """
    return ADVANTAGE_LEVELS.get(level)(rewards, group_size, scheme, scale, eps)


def token_advantages(
    rank_adv: torch.Tensor,
    rank_ids: torch.Tensor,
    mask: torch.Tensor,
    eos_mask: torch.Tensor,
    num_ranks: int,
    overflow_penalty: float = _D.overflow_penalty,
    early_stop_penalty: float = _D.early_stop_penalty,
    eos_bonus: float = _D.eos_bonus,
    credit_ids: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Place per-rank advantages on tokens and add the length shaping.

    Args:
        rank_adv: FloatTensor[B, K] from :func:`rank_advantages` or :func:`level_advantages`.
        rank_ids: LongTensor[B, T] from :func:`rank_grpo_plugin.rank_ids` (-1 on padding).
        mask: [B, T] completion mask.
        eos_mask: [B, T], 1 on the EOS token of rows that stopped (none for truncated rows).
        num_ranks: K.
        overflow_penalty: advantage of every token after the K-th item (rank >= K), and of an EOS there.
        early_stop_penalty: advantage of the EOS token when fewer than K items were emitted.
        eos_bonus: advantage of the EOS token when exactly K items were emitted and nothing followed
            (a single trailing newline after item K is not an item, see :func:`num_emitted_items`).
        credit_ids: optional LongTensor[B, T], the rank whose advantage each token receives when it differs from
            ``rank_ids`` (``rank_ids(..., separator="start")``: a newline goes to the item it starts); ``rank_ids``
            (``separator="end"``) still counts the items emitted.

    Returns:
        FloatTensor[B, T] (float32): A_k on tokens of rank k < K, the shaping values described above, 0 on
        padding. The EOS token never receives a rank advantage. A row ends at its first EOS: tokens after it get 0
        even where ``mask`` is 1 (see :func:`rank_grpo_plugin.ranks.through_first_eos`).
    """
    if rank_adv.dim() != 2 or rank_adv.shape[1] != num_ranks:
        raise ValueError(f"rank_adv must be [B, {num_ranks}], got {tuple(rank_adv.shape)}")
    place = rank_ids if credit_ids is None else credit_ids
    if rank_ids.shape != mask.shape or eos_mask.shape != mask.shape or place.shape != mask.shape:
        raise ValueError("rank_ids, credit_ids, mask and eos_mask must have the same [B, T] shape")
    m = through_first_eos(mask, eos_mask)  # nothing after the first EOS is part of the list
    eos = eos_mask.bool() & m  # the first EOS only
    in_list = m & (place >= 0) & (place < num_ranks)
    idx = place.clamp(min=0, max=num_ranks - 1)
    adv = torch.gather(rank_adv.to(torch.float32), 1, idx)
    out = torch.where(in_list, adv, torch.zeros_like(adv))
    out = torch.where(m & (place >= num_ranks), torch.full_like(out, overflow_penalty), out)

    items = num_emitted_items(rank_ids, m, eos).unsqueeze(1)  # [B, 1]; -1 when no EOS
    eos_value = torch.where(
        items == num_ranks,
        torch.full_like(out[:, :1], eos_bonus),
        torch.where(
            items < num_ranks,
            torch.full_like(out[:, :1], early_stop_penalty),
            torch.full_like(out[:, :1], overflow_penalty),
        ),
    )
    return torch.where(eos, eos_value.expand_as(out), out)
