"""Rank-level clipped policy loss with a geometric-mean importance ratio per rank."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from ._registry import Registry
from .config import DEFAULT_RECIPE, EPS_HIGH, EPS_LOW

__all__ = ["LOSS_AGGREGATIONS", "rank_policy_loss"]

LOSS_AGGREGATIONS: Registry = Registry("loss aggregation")


# Layout of the flat per-unit accumulators of rank_policy_loss: [B, _LANES, _CLASSES, K+1].
# Class of a token: 0 / 1 / 2 = negative / zero (or NaN) / positive advantage, 3-5 = padding (dropped).
# Lane = t % _LANES: consecutive tokens of one unit add into different cells, so a scatter does not wait on the
# previous add to the same address (measured 2.5-3x faster on CPU than one cell per unit; the lanes and classes
# are summed afterwards, an [B, K+1]-sized reduction).
_LANES = 4
_CLASSES = 6
_MAX_TOKENS = 1 << 24  # token counts are float32 sums of ones: exact while a sequence has < 2**24 tokens


def _unit_index(rank_ids: torch.Tensor, advantages: torch.Tensor, m: torch.Tensor, num_ranks: int) -> torch.Tensor:
    """LongTensor[B*T]: each token's cell in the flat [B, _LANES, _CLASSES, K+1] accumulator.

    cell = ((b * _LANES + t % _LANES) * _CLASSES + class) * (K+1) + min(max(rank, 0), K). The arithmetic runs in
    int32 (vectorised on CPU, unlike int64) unless the accumulator has 2**31 cells or more.
    """
    b, t = rank_ids.shape
    width = num_ranks + 1
    row = _LANES * _CLASSES * width
    dtype = torch.int32 if b * row < (1 << 31) else torch.long
    dev = rank_ids.device
    # per-position constant: row and lane offsets, plus 4 * width so that class = sign(A) + 4 - 3 * mask
    lane = torch.arange(t, device=dev, dtype=dtype).remainder_(_LANES).mul_(_CLASSES * width).add_(4 * width)
    rows = torch.arange(0, b * row, row, device=dev, dtype=dtype).unsqueeze(1)
    cls = advantages.sign().to(dtype)  # -1 / 0 / 1; sign(NaN) is 0 (a test pins that NaN stays visible)
    idx = rank_ids.clamp(0, num_ranks).to(dtype).add_(cls, alpha=width).add_(m.to(dtype), alpha=-3 * width)
    return idx.add_(lane).add_(rows).long().view(-1)


class _RankSurrogate(torch.autograd.Function):
    """Per-unit clipped surrogate of :func:`rank_policy_loss`, with a hand-written backward.

    forward(diff FloatTensor[B*T] (log-ratio per token, requires grad), adv FloatTensor[B*T], idx LongTensor[B*T]
    from :func:`_unit_index`, b, width = K+1, lo = 1 - eps_low, hi = 1 + eps_high) returns
    ``unit_loss`` [B, K+1] (differentiable) and, not differentiable: ``sums`` (log-ratio sum per unit), ``cnt``
    [B, 3, K+1] (token counts with a negative / zero / positive advantage), ``counts`` [B, K+1], ``w``, ``pos``,
    ``neg`` [B, K+1] (all in diff's dtype).

    unit_loss = -(P * min(w, hi) + N * max(w, lo)), w = exp(sums / max(counts, 1)); its gradient w.r.t. a token's
    log-ratio is d unit_loss / d w * w / max(counts, 1) of the token's unit (clamp passes the gradient on the
    boundary, as torch.clamp does), 0 on padding: one index_select of the [B, K+1] unit gradients.
    """

    @staticmethod
    def forward(ctx, diff, adv, idx, b, width, lo, hi):
        cells = b * _LANES * _CLASSES * width
        acc = diff.new_zeros(3, cells)
        acc[0].scatter_add_(0, idx, diff)
        acc[1].scatter_add_(0, idx, adv.to(diff.dtype))
        acc[2].scatter_add_(0, idx, diff.new_ones(1).expand(idx.shape[0]))
        red = acc.view(3, b, _LANES, _CLASSES, width)[:, :, :, :3].sum(2)  # [3, B, 3, K+1]
        sums = red[0].sum(1)
        neg, zero, pos = red[1].unbind(1)
        pos = pos + zero  # the zero class sums to 0, or NaN from NaN advantages (kept visible in the loss)
        cnt = red[2]
        counts = cnt.sum(1)
        w = torch.exp(sums / counts.clamp(min=1.0))
        unit_loss = -(pos * w.clamp(max=hi) + neg * w.clamp(min=lo))
        ctx.save_for_backward(idx, w, pos, neg, counts)
        ctx.lo, ctx.hi, ctx.shape = lo, hi, (b, width)
        ctx.mark_non_differentiable(sums, cnt, counts, w, pos, neg)
        ctx.set_materialize_grads(False)
        return unit_loss, sums, cnt, counts, w, pos, neg

    @staticmethod
    def backward(ctx, grad, *_):
        if grad is None:
            return (None,) * 7
        idx, w, pos, neg, counts = ctx.saved_tensors
        b, width = ctx.shape
        g_sums = -(pos * (w <= ctx.hi) + neg * (w >= ctx.lo)) * grad * w / counts.clamp(min=1.0)
        cell = g_sums.new_zeros(b, _LANES, _CLASSES, width)
        cell[:, :, :3] = g_sums.view(b, 1, 1, width)  # padding classes keep 0
        return cell.view(-1).index_select(0, idx), None, None, None, None, None, None


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
    eps_low: float = EPS_LOW,
    eps_high: float = EPS_HIGH,
    agg: str = DEFAULT_RECIPE.loss_agg,
    rank_stats: bool = True,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Rank-GRPO's clipped surrogate with a per-rank geometric-mean importance ratio.

    For unit u = (sequence i, rank k): w_u = exp(mean_{t in u} (log_probs_t - old_log_probs_t)), i.e. the
    geometric mean of the token ratios of that rank (all overflow tokens share one unit). Every token t in u
    has loss_t = -min(w_u * A_t, clip(w_u, 1 - eps_low, 1 + eps_high) * A_t).

    Computed per unit, exactly: since w_u is shared by the unit's tokens, min(w A, clip(w) A) is A min(w, 1 + eps_high)
    for A > 0 and A max(w, 1 - eps_low) for A < 0, so sum_{t in u} loss_t = -(P_u min(w_u, 1 + eps_high) +
    N_u max(w_u, 1 - eps_low)) with P_u / N_u the sums of the unit's positive / negative advantages. Per token
    there are three scatters forward (log-ratio, advantage, count, into cells split by the sign of the advantage)
    and one index_select backward; everything else is per unit. Sums run in float32 in another order than a
    token-by-token loop (per lane, then summed), so results agree with it to float32 rounding.

    Args:
        log_probs: FloatTensor[B, T] (any float dtype; the gradient comes back in it), requires grad.
        old_log_probs: FloatTensor[B, T] (behaviour policy; no grad).
        advantages: FloatTensor[B, T] from :func:`rank_grpo_plugin.token_advantages` (or as normalised by the
            trainer: any values; padding is ignored whatever it holds).
        rank_ids: integer Tensor[B, T] (LongTensor or IntTensor; values on padding are ignored). A token with a
            negative rank id is left out like padding (:func:`rank_grpo_plugin.rank_ids` gives -1 off its mask,
            e.g. after the first EOS when segmented on :func:`rank_grpo_plugin.ranks.through_first_eos`). Units
            are formed by value: the ids need not be sorted within a row.
        mask: [B, T] completion mask (bool, or any dtype: nonzero = token).
        num_ranks: K.
        eps_low, eps_high: clip range [1 - eps_low, 1 + eps_high].
        agg: one of :data:`LOSS_AGGREGATIONS`: ``token_mean`` (sum over masked tokens / their count in the
            batch) or ``rank_mean`` (mean over (sequence, rank) units of the unit's mean token loss).
        rank_stats: also return ``rank_adv_mean``.
        (T must be < 2**24: token counts are float32 sums of ones, exact below that.)

    Returns:
        (loss scalar float32, stats) with stats: ``clip_frac_low``/``clip_frac_high`` (share of masked tokens
        whose loss is the clipped branch with w below/above the range), ``ratio_mean`` (mean w over units with
        tokens), ``tokens`` (masked tokens), ``log_ratio_mean`` (mean token log-ratio over them) and, with
        ``rank_stats``, ``rank_adv_mean`` FloatTensor[K+1] (mean token advantage per rank, overflow last; 0 when a
        rank has no tokens). All float32 scalars unless noted. Stats are detached.
    """
    if not (log_probs.shape == old_log_probs.shape == advantages.shape == rank_ids.shape == mask.shape):
        raise ValueError(
            "log_probs, old_log_probs, advantages, rank_ids and mask must share one [B, T] shape, got "
            f"{[tuple(t.shape) for t in (log_probs, old_log_probs, advantages, rank_ids, mask)]}"
        )
    if log_probs.dim() != 2:
        raise ValueError(f"expected [B, T] tensors, got {tuple(log_probs.shape)}")
    if log_probs.shape[1] >= _MAX_TOKENS:
        raise ValueError(f"sequences of {log_probs.shape[1]} tokens: rank_policy_loss counts exactly below 2**24")
    if not (0.0 <= eps_low < 1.0 and eps_high >= 0.0):
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    aggregate = LOSS_AGGREGATIONS.get(agg)
    b = log_probs.shape[0]
    idx = _unit_index(rank_ids, advantages, mask.bool() & (rank_ids >= 0), num_ranks)
    diff = log_probs.float() - old_log_probs.float()
    unit_loss, sums, cnt, counts, w, pos, neg = _RankSurrogate.apply(
        diff.view(-1), advantages.reshape(-1), idx, b, num_ranks + 1, 1.0 - eps_low, 1.0 + eps_high
    )
    loss = aggregate(unit_loss, counts)

    with torch.no_grad():
        tokens = counts.sum()
        n_tok = tokens.clamp(min=1)
        present = counts > 0
        stats = {
            "clip_frac_low": (cnt[:, 0] * (w < 1.0 - eps_low)).sum() / n_tok,
            "clip_frac_high": (cnt[:, 2] * (w > 1.0 + eps_high)).sum() / n_tok,
            "ratio_mean": (w * present).sum() / present.sum().clamp(min=1),
            "tokens": tokens,
            "log_ratio_mean": sums.sum() / n_tok,
        }
        if rank_stats:
            stats["rank_adv_mean"] = (pos + neg).sum(0) / counts.sum(0).clamp(min=1)
    return loss, stats
