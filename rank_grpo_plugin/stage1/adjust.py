"""Adjust: per-item calibration s_final = w[c] * s_reflect + b[c], fitted on the training ground truth.

For conversation i with candidates c_i1..c_iN (the remap top-N) and scores s_in, the model is a multinomial over
the candidates, P(c_in | i) = softmax_n(w[c_in] s_in + b[c_in]). (w, b) maximise the log-likelihood of the
ground-truth items found among the candidates, with L2 penalties pulling w to 1 and b to 0:

    minimise  L(w, b) = - sum_i sum_n y_in log P(c_in | i) + lambda_w ||w - 1||^2 + lambda_b ||b||^2

(y_in = 1 when candidate n of conversation i is a ground-truth item). The log-likelihood is a sum, not a mean,
so the penalty strength is relative to the amount of data, as in a MAP estimate. The logits are linear in (w, b),
so L is convex; it is minimised with full-batch L-BFGS in float64. Ground-truth items outside the candidate set
cannot be scored (a truncated-softmax approximation of the full-catalog likelihood) and are counted, not used.
Pure torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AdjustResult", "fit_adjust", "apply_adjust", "adjust_loss"]


@dataclass
class AdjustResult:
    w: torch.Tensor  # [C] float32
    b: torch.Tensor  # [C] float32
    loss: float
    n_iter: int
    n_targets: int


def apply_adjust(scores: torch.Tensor, cand_idx: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s_final = w[cand] * scores + b[cand]. scores, cand_idx: [B, N]; w, b: [C]. Returns [B, N]."""
    return w.to(scores.dtype)[cand_idx] * scores + b.to(scores.dtype)[cand_idx]


def adjust_loss(w, b, scores, cand_idx, targets, lambda_w, lambda_b):
    logits = apply_adjust(scores, cand_idx, w, b)
    logp = torch.log_softmax(logits, dim=1)
    nll = -(targets * logp).sum()
    return nll + lambda_w * (w - 1).pow(2).sum() + lambda_b * b.pow(2).sum()


def fit_adjust(
    scores: torch.Tensor,
    cand_idx: torch.Tensor,
    targets: torch.Tensor,
    n_items: int,
    lambda_w: float = 0.01,
    lambda_b: float = 0.01,
    max_iter: int = 500,
    tol: float = 1e-9,
) -> AdjustResult:
    """Fit per-item (w, b).

    Args:
        scores: [B, N] finite candidate scores (s_reflect).
        cand_idx: [B, N] long catalog indices of the candidates.
        targets: [B, N] {0, 1} (or counts) ground-truth indicator per candidate.
        n_items: catalog size C.
    Returns:
        AdjustResult with w, b of shape [C] (items never seen as candidates keep w = 1, b = 0).
    """
    if scores.shape != cand_idx.shape or scores.shape != targets.shape:
        raise ValueError(f"scores {tuple(scores.shape)}, cand_idx {tuple(cand_idx.shape)} and targets "
                         f"{tuple(targets.shape)} must have the same [B, N] shape")
    if not torch.isfinite(scores).all():
        raise ValueError("adjust needs finite candidate scores")
    s = scores.detach().double()
    y = targets.detach().double()
    idx = cand_idx.detach().long()
    keep = y.sum(1) > 0  # rows without a target contribute nothing to the likelihood
    s, y, idx = s[keep], y[keep], idx[keep]
    w = torch.ones(n_items, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_items, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-7,
                            tolerance_change=tol, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = adjust_loss(w, b, s, idx, y, lambda_w, lambda_b)
        loss.backward()
        return loss

    # Small problems are dominated by per-op overhead: extra intra-op threads only add contention (10x slower
    # measured on a loaded 2-core machine), so fit single-threaded below ~1M candidate scores.
    threads = torch.get_num_threads()
    if s.numel() < 1_000_000:
        torch.set_num_threads(1)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        loss = float(adjust_loss(w, b, s, idx, y, lambda_w, lambda_b))
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    return AdjustResult(w.detach().float(), b.detach().float(), loss, n_iter, int(y.sum().item()))
