"""Rank-level clipped policy loss with a geometric-mean importance ratio per rank."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from ._registry import Registry

__all__ = ["LOSS_AGGREGATIONS", "rank_log_ratio", "rank_policy_loss"]

LOSS_AGGREGATIONS: Registry = Registry("loss aggregation")


def _bins(rank_ids: torch.Tensor, mask: torch.Tensor, num_ranks: int) -> torch.Tensor:
    """Bin index per token: rank k < K -> k, every overflow token -> K, padding -> K + 1 (discarded)."""
    return rank_ids.clamp(min=0, max=num_ranks).masked_fill_(~mask, num_ranks + 1)


def _units(log_probs, old_log_probs, rank_ids, m, num_ranks):
    """(mean log-ratio [B, K+2] float32, token count [B, K+2], bins [B, T]); column K+1 collects the padding
    (log-ratio 0, dropped by the callers)."""
    b = log_probs.shape[0]
    bins = _bins(rank_ids, m, num_ranks)
    diff = (log_probs.float() - old_log_probs.float()).masked_fill(~m, 0.0)
    sums = diff.new_zeros(b, num_ranks + 2).scatter_add(1, bins, diff)
    counts = diff.new_zeros(b, num_ranks + 2).scatter_add_(1, bins, m.to(diff.dtype))
    return sums / counts.clamp(min=1.0), counts, bins


_FIELD = 21  # bits per packed count: a (sequence, rank) unit holds < 2**21 tokens


@torch.no_grad()
def _advantage_units(advantages: torch.Tensor, bins: torch.Tensor, m: torch.Tensor, width: int):
    """Per unit [B, width]: token count, positive / negative advantage sums (P, N) and how many tokens have a
    positive / negative advantage. The three counts travel packed in one int64 scatter (21 bits each)."""
    adv = advantages.float().masked_fill(~m, 0.0)
    code = (adv > 0).long().add_((adv < 0).long(), alpha=1 << _FIELD).add_(m.long(), alpha=1 << (2 * _FIELD))
    packed = torch.zeros(bins.shape[0], width, dtype=torch.long, device=bins.device).scatter_add_(1, bins, code)
    low = (1 << _FIELD) - 1
    counts = (packed >> (2 * _FIELD)).float()
    n_neg = ((packed >> _FIELD) & low).float()
    n_pos = (packed & low).float()
    pos = adv.new_zeros(bins.shape[0], width).scatter_add_(1, bins, adv.clamp(min=0.0))
    neg = adv.new_zeros(bins.shape[0], width).scatter_add_(1, bins, adv.clamp(max=0.0))
    return counts, pos, neg, n_pos, n_neg


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
    unit, counts, bins = _units(log_probs, old_log_probs, rank_ids, mask.bool(), num_ranks)
    return unit[:, : num_ranks + 1], counts[:, : num_ranks + 1], bins


@LOSS_AGGREGATIONS.register("token_mean")
def _token_mean(unit_loss: torch.Tensor, unit_count: torch.Tensor) -> torch.Tensor:
    """Sum over masked tokens / number of masked tokens in the batch."""
    return unit_loss.sum() / unit_count.sum().clamp(min=1)


@LOSS_AGGREGATIONS.register("rank_mean")
def _rank_mean(unit_loss: torch.Tensor, unit_count: torch.Tensor) -> torch.Tensor:
    """Mean over (sequence, rank) units that hold at least one token of the unit's mean token loss."""
    present = unit_count > 0
    return (unit_loss / unit_count.clamp(min=1) * present).sum() / present.sum().clamp(min=1)


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

    Computed per unit, exactly: since w_u is shared by the unit's tokens, min(w A, clip(w) A) is A min(w, 1 + eps_high)
    for A > 0 and A max(w, 1 - eps_low) for A < 0, so sum_{t in u} loss_t = -(P_u min(w_u, 1 + eps_high) +
    N_u max(w_u, 1 - eps_low)) with P_u / N_u the sums of the unit's positive / negative advantages. The gradient
    path per token is one scatter (forward) and its gather (backward).

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
        rank_stats: also return ``rank_adv_mean``.
        (A (sequence, rank) unit may hold up to 2**21 - 1 tokens: three counts share one int64 scatter.)

    Returns:
        (loss scalar float32, stats) with stats: ``clip_frac_low``/``clip_frac_high`` (share of masked tokens
        whose loss is the clipped branch with w below/above the range), ``ratio_mean`` (mean w over units with
        tokens), ``tokens`` (masked tokens), ``log_ratio_mean`` (mean token log-ratio over them) and, with ``rank_stats``, ``rank_adv_mean`` FloatTensor[K+1] (mean token advantage per rank,
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
    units = num_ranks + 1
    bins = _bins(rank_ids, m, num_ranks)
    diff = (log_probs.float() - old_log_probs.float()).masked_fill(~m, 0.0)
    sums = diff.new_zeros(diff.shape[0], num_ranks + 2).scatter_add(1, bins, diff)  # the only grad path
    counts, pos, neg, n_pos, n_neg = (t[:, :units] for t in _advantage_units(advantages, bins, m, num_ranks + 2))
    w = torch.exp(sums[:, :units] / counts.clamp(min=1.0))  # [B, K+1]
    unit_loss = -(pos * w.clamp(max=1.0 + eps_high) + neg * w.clamp(min=1.0 - eps_low))
    unit_count = counts
    loss = aggregate(unit_loss, unit_count)

    with torch.no_grad():
        n_tok = unit_count.sum().clamp(min=1)
        wd = w.detach()
        present = unit_count > 0
        stats = {
            "clip_frac_low": (n_neg * (wd < 1.0 - eps_low)).sum() / n_tok,
            "clip_frac_high": (n_pos * (wd > 1.0 + eps_high)).sum() / n_tok,
            "ratio_mean": (wd * present).sum() / present.sum().clamp(min=1),
            "tokens": unit_count.sum(),
            "log_ratio_mean": sums[:, :units].detach().sum() / n_tok,
        }
        if rank_stats:
            stats["rank_adv_mean"] = (pos + neg).sum(0) / unit_count.sum(0).clamp(min=1)
    return loss, stats
