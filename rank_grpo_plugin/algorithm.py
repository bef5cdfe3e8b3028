"""The Rank-GRPO recipe as one pure function: per-rank hits + rank ids + masks -> token advantages.

Every host adapter (OpenRLHF today; verl or TRL tomorrow, see docs/ADDING_A_HOST.md) calls
:func:`rank_grpo_advantages` and only moves tensors in and out of its own batch objects. The steps are the core
functions of this package, in the order the paper uses them:

1. :func:`rank_grpo_plugin.rewards.rank_rewards` -- hits ``[B, K]`` -> per-rank rewards ``[B, K]``;
2. :func:`rank_grpo_plugin.advantages.level_advantages` -- per-rank normalisation within each prompt's group of
   ``group_size`` consecutive rows (``advantage_level="rank"``), or for the sequence-level ablation one normalised
   return per list on every rank (``"sequence"``);
3. :func:`rank_grpo_plugin.advantages.token_advantages` -- rank advantages placed on the tokens of their rank,
   with the length shaping (overflow penalty, early-stop penalty, EOS bonus);
4. optionally a per-token penalty (e.g. ``-kl_coef * kl`` when a host treats KL as a reward) added as its
   return-to-go (reverse cumulative sum, ``gamma = 1``), as OpenRLHF does for its group estimators.

torch only; no host framework.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .advantages import level_advantages, token_advantages
from .config import DEFAULT_RECIPE, RecipeConfig
from .ranks import num_emitted_items, through_first_eos
from .rewards import list_returns, rank_rewards

__all__ = ["RecipeConfig", "RecipeOutput", "rank_grpo_advantages", "reverse_cumsum"]


@dataclass
class RecipeOutput:
    """What :func:`rank_grpo_advantages` returns (all float32 unless said otherwise, on the inputs' device).

    ``token_advantages`` [B, T] (0 off the mask and after the first EOS); ``rank_rewards`` / ``rank_advantages``
    [B, K] (for logging; with ``advantage_level="sequence"`` every rank holds its list's advantage); ``returns`` [B]:
    the list return of the reward scheme (:func:`rank_grpo_plugin.rewards.list_returns`, the host's scalar return);
    ``items_emitted`` [B]: list items before the EOS, or for a truncated row the lines it began.
    """

    token_advantages: torch.Tensor
    rank_rewards: torch.Tensor
    rank_advantages: torch.Tensor
    returns: torch.Tensor
    items_emitted: torch.Tensor


def reverse_cumsum(x: torch.Tensor) -> torch.Tensor:
    """Return-to-go along dim 1: ``out[:, t] = x[:, t:].sum(1)``. [B, T] -> [B, T]."""
    return torch.flip(torch.cumsum(torch.flip(x, dims=[1]), dim=1), dims=[1])


@torch.no_grad()
def rank_grpo_advantages(
    hits: torch.Tensor,
    rank_ids: torch.Tensor,
    mask: torch.Tensor,
    eos_mask: torch.Tensor,
    group_size: int,
    config: RecipeConfig = DEFAULT_RECIPE,
    token_penalty: Optional[torch.Tensor] = None,
    credit_ids: Optional[torch.Tensor] = None,
) -> RecipeOutput:
    """Token advantages of Rank-GRPO for one batch of complete prompt groups.

    Args:
        hits: [B, K] relevance of each rank in {0, 1} (any dtype); rows of one prompt are ``group_size``
            consecutive rows.
        rank_ids: LongTensor[B, T] from :func:`rank_grpo_plugin.rank_ids` (-1 off the mask, >= K in the overflow).
        mask: [B, T] completion mask (a row ends at its first EOS: nothing after it gets an advantage).
        eos_mask: [B, T], 1 on the EOS token of rows that stopped (none on truncated rows).
        group_size: G >= 2 samples per prompt.
        config: :class:`rank_grpo_plugin.config.RecipeConfig` (or any subclass, e.g. the adapter's options);
            ``config.num_ranks`` must equal K.
        token_penalty: optional [B, T] per-token reward (e.g. ``-kl_coef * kl``) added to the advantages as its
            return-to-go over the masked tokens.
        credit_ids: optional LongTensor[B, T], the rank whose advantage each token receives, when it differs from
            ``rank_ids`` (``rank_ids(..., separator="start")``: a newline goes to the item it starts). ``rank_ids``
            (``separator="end"``) still counts the items emitted.

    Returns:
        :class:`RecipeOutput`.
    """
    k = int(config.num_ranks)
    if hits.dim() != 2 or hits.shape[1] != k:
        raise ValueError(f"hits must be [B, {k}] (num_ranks={k}), got {tuple(hits.shape)}")
    if rank_ids.shape[0] != hits.shape[0]:
        raise ValueError(f"hits has {hits.shape[0]} rows but rank_ids {rank_ids.shape[0]}")
    device = rank_ids.device
    m = through_first_eos(mask, eos_mask)
    rewards = rank_rewards(hits.to(device=device, dtype=torch.float32), config.reward_scheme, config.gamma)
    adv = level_advantages(rewards, group_size, level=config.advantage_level, scheme=config.reward_scheme,
                           scale=config.adv_scale, eps=config.adv_eps)
    tok_adv = token_advantages(
        adv, rank_ids, m, eos_mask, k, overflow_penalty=config.overflow_penalty,
        early_stop_penalty=config.early_stop_penalty, eos_bonus=config.eos_bonus, credit_ids=credit_ids,
    )
    if token_penalty is not None:
        penalty = torch.where(m, token_penalty.to(device=device, dtype=torch.float32), torch.zeros_like(tok_adv))
        tok_adv = torch.where(m, tok_adv + reverse_cumsum(penalty), tok_adv)
    items = num_emitted_items(rank_ids, m, eos_mask)
    started = torch.where(m, rank_ids + 1, torch.zeros_like(rank_ids)).amax(dim=1) if rank_ids.shape[1] else \
        torch.zeros_like(items)
    emitted = torch.where(items < 0, started, items).to(torch.float32)
    return RecipeOutput(token_advantages=tok_adv, rank_rewards=rewards, rank_advantages=adv,
                        returns=list_returns(rewards, config.reward_scheme), items_emitted=emitted)
