"""Rank-level clipped policy loss with a geometric-mean importance ratio per rank."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from ._registry import Registry

__all__ = ["LOSS_AGGREGATIONS", "rank_log_ratio", "rank_policy_loss"]

LOSS_AGGREGATIONS: Registry = Registry("loss aggregation")


def _bins(rank_ids: torch.Tensor, mask: torch.Tensor, num_ranks: int) -> torch.Tensor:
    """Bin index per token: rank k < K -> k, every overflow token -> K, padding -> K + 1 (discarded)."""
    return torch.where(mask, rank_ids.clamp(min=0, max=num_ranks), torch.full_like(rank_ids, num_ranks + 1))


def rank_log_ratio(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    rank_ids: torch.Tensor,
    mask: torch.Tensor,
    num_ranks: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean token log-ratio of every (sequence, rank) unit.

    Args:
        log_probs, old_log_probs: FloatTensor[B, T] of the sampled tokens under the current / behaviour policy.
        rank_ids: LongTensor[B, T] (-1 on padding, >= K in the overflow).
        mask: [B, T] completion mask.
        num_ranks: K. Overflow tokens share one extra bin, index K.

    Returns:
        (unit_log_ratio FloatTensor[B, K+1] float32, unit_count FloatTensor[B, K+1], bins LongTensor[B, T]).
        Units with no tokens have log-ratio 0 and count 0. Gradients flow into ``log_probs``.
    """
    m = mask.bool()
    mf = m.float()
    b = log_probs.shape[0]
    bins = _bins(rank_ids, m, num_ranks)
    diff = (log_probs.float() - old_log_probs.float()) * mf
    sums = diff.new_zeros(b, num_ranks + 2).scatter_add(1, bins, diff)
    counts = mf.new_zeros(b, num_ranks + 2).scatter_add(1, bins, mf)
    unit = sums[:, : num_ranks + 1] / counts[:, : num_ranks + 1].clamp(min=1.0)
    return unit, counts[:, : num_ranks + 1], bins


@LOSS_AGGREGATIONS.register("token_mean")
def _token_mean(token_loss: torch.Tensor, m: torch.Tensor, bins: torch.Tensor, num_units: int) -> torch.Tensor:
    """Sum over masked tokens / number of masked tokens in the batch."""
    return (token_loss * m).sum() / m.sum().clamp(min=1)


@LOSS_AGGREGATIONS.register("rank_mean")
def _rank_mean(token_loss: torch.Tensor, m: torch.Tensor, bins: torch.Tensor, num_units: int) -> torch.Tensor:
    """Mean over (sequence, rank) units that hold at least one token of the unit's mean token loss."""
    b = token_loss.shape[0]
    sums = token_loss.new_zeros(b, num_units + 1).scatter_add(1, bins, token_loss * m)
    counts = token_loss.new_zeros(b, num_units + 1).scatter_add(1, bins, m.float())
    sums, counts = sums[:, :num_units], counts[:, :num_units]
    present = counts > 0
    per_unit = sums / counts.clamp(min=1.0)
    return (per_unit * present).sum() / present.sum().clamp(min=1)


def rank_policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    rank_ids: torch.Tensor,
    mask: torch.Tensor,
    num_ranks: int,
    eps_low: float = 0.06,
    eps_high: float = 0.08,
    agg: str = "token_mean",
    rank_stats: bool = True,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Rank-GRPO's clipped surrogate with a per-rank geometric-mean importance ratio.

    For unit u = (sequence i, rank k): w_u = exp(mean_{t in u} (log_probs_t - old_log_probs_t)), i.e. the
    geometric mean of the token ratios of that rank (all overflow tokens share one unit). Every token t in u
    has loss_t = -min(w_u * A_t, clip(w_u, 1 - eps_low, 1 + eps_high) * A_t).

    Args:
        log_probs: FloatTensor[B, T], requires grad.
        old_log_probs: FloatTensor[B, T] (behaviour policy; no grad).
        advantages: FloatTensor[B, T] from :func:`rank_grpo_plugin.token_advantages`.
        rank_ids: LongTensor[B, T].
        mask: [B, T] completion mask.
        num_ranks: K.
        eps_low, eps_high: clip range [1 - eps_low, 1 + eps_high].
        agg: one of :data:`LOSS_AGGREGATIONS`: ``token_mean`` (sum over masked tokens / their count in the
            batch) or ``rank_mean`` (mean over (sequence, rank) units of the unit's mean token loss).
        rank_stats: also return ``rank_adv_mean`` (one more scatter over [B, T]; off in the training hot path).

    Returns:
        (loss scalar float32, stats) with stats: ``clip_frac_low``/``clip_frac_high`` (share of masked tokens
        whose loss is the clipped branch with w below/above the range), ``ratio_mean`` (mean w over units with
        tokens) and, with ``rank_stats``, ``rank_adv_mean`` FloatTensor[K+1] (mean token advantage per rank,
        overflow last; 0 when a rank has no tokens). Stats are detached.
    """
    if not (log_probs.shape == old_log_probs.shape == advantages.shape == rank_ids.shape == mask.shape):
        raise ValueError(
            "log_probs, old_log_probs, advantages, rank_ids and mask must share one [B, T] shape, got "
            f"{[tuple(t.shape) for t in (log_probs, old_log_probs, advantages, rank_ids, mask)]}"
        )
    if not (0.0 <= eps_low < 1.0 and eps_high >= 0.0):
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    aggregate = LOSS_AGGREGATIONS.get(agg)
    m = mask.bool()
    unit_lr, unit_count, bins = rank_log_ratio(log_probs, old_log_probs, rank_ids, m, num_ranks)
    unit_ratio = torch.exp(unit_lr)  # [B, K+1]
    pad_col = unit_ratio.new_ones(unit_ratio.shape[0], 1)  # padding tokens: ratio 1, masked out below
    ratio = torch.gather(torch.cat([unit_ratio, pad_col], dim=1), 1, bins)  # [B, T]
    adv = advantages.float()
    surr1 = ratio * adv
    surr2 = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    token_loss = -torch.min(surr1, surr2)
    loss = aggregate(token_loss, m, bins, num_ranks + 1)

    with torch.no_grad():
        n_tok = m.sum().clamp(min=1)
        # the clipped branch is strictly smaller exactly when A > 0 and w > 1 + eps_high (high) or A < 0 and
        # w < 1 - eps_low (low): one comparison, split by the side of 1
        clipped = (surr2 < surr1) & m
        n_low = (clipped & (ratio < 1.0)).sum()
        present = unit_count > 0
        stats = {
            "clip_frac_low": n_low / n_tok,
            "clip_frac_high": (clipped.sum() - n_low) / n_tok,
            "ratio_mean": (unit_ratio.detach() * present).sum() / present.sum().clamp(min=1),
        }
        if rank_stats:
            adv_sum = adv.new_zeros(adv.shape[0], num_ranks + 2).scatter_add(1, bins, adv * m)[:, : num_ranks + 1]
            stats["rank_adv_mean"] = adv_sum.sum(0) / unit_count.sum(0).clamp(min=1)
    return loss, stats
