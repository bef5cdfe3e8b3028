"""Per-rank rewards from relevance hits.

Every scheme is a pure function ``hits[B, K] -> rewards[B, K]`` registered in :data:`REWARD_SCHEMES`.
Schemes that look ahead (``log``, ``exp``) are written as one matrix product ``hits @ W`` with an upper-
triangular ``W[j, k] = w(j, k)`` for ``j >= k``: exact, vectorised, and K x K is tiny (K = 20).

Every scheme also has a *list return* in :data:`LIST_RETURNS`, ``rewards[B, K] -> returns[B]``: the one number
the sequence-level ablation (``advantage_level="sequence"``) normalises per list. For ``exp_inf`` the per-rank
rewards are immediate (r_k = rel_k), so the list's return is their sum (the number of hits); for the look-ahead
schemes r_k is already the return from rank k on, so the list's return is r_1 (for ``log``: DCG@K of the list).
Summing a look-ahead scheme's r_k instead would count hit j j times and favour late hits.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ._registry import Registry

__all__ = ["REWARD_SCHEMES", "LIST_RETURNS", "rank_rewards", "list_returns"]

REWARD_SCHEMES: Registry = Registry("reward scheme")
LIST_RETURNS: Registry = Registry("list return")


def _upper(num_ranks: int):
    """(j, k, 1[j >= k]) as float64 [K, 1], [1, K], [K, K]."""
    j = torch.arange(num_ranks, dtype=torch.float64).unsqueeze(1)
    k = torch.arange(num_ranks, dtype=torch.float64).unsqueeze(0)
    return j, k, (j >= k).to(torch.float64)


def _no_gamma(scheme: str, gamma: Optional[float]) -> None:
    if gamma is not None:
        raise ValueError(f"gamma is only used by the 'exp' reward scheme (got gamma={gamma!r} with {scheme!r})")


def _log_weights(num_ranks: int, gamma: Optional[float] = None) -> torch.Tensor:
    """W[j, k] = 1 / log2(j + 2) for j >= k (0-based j, i.e. 1 / log2(j' + 1) with 1-based j')."""
    _no_gamma("log", gamma)
    j, _, upper = _upper(num_ranks)
    return upper / torch.log2(j + 2.0)


def _exp_weights(num_ranks: int, gamma: Optional[float] = None) -> torch.Tensor:
    """W[j, k] = gamma ** -(j - k) for j >= k, gamma > 1."""
    if gamma is None or not math.isfinite(float(gamma)) or float(gamma) <= 1.0:
        raise ValueError(f"the 'exp' reward scheme needs a finite gamma > 1, got {gamma!r}")
    j, k, upper = _upper(num_ranks)
    return upper * torch.pow(torch.tensor(float(gamma), dtype=torch.float64), -(j - k).clamp(min=0))


_WEIGHTS = {"log": _log_weights, "exp": _exp_weights}  # the look-ahead schemes' own weight matrices


def _look_ahead(scheme: str):
    weights = _WEIGHTS[scheme]

    def rewards(hits: torch.Tensor, gamma: Optional[float] = None) -> torch.Tensor:
        w = weights(hits.shape[-1], gamma).to(hits.device)
        return (hits.to(torch.float64) @ w).to(torch.float32)

    rewards.__doc__ = f"r = hits @ W with {weights.__name__}: {weights.__doc__}"
    return rewards


@REWARD_SCHEMES.register("exp_inf")
def _exp_inf(hits: torch.Tensor, gamma: Optional[float] = None) -> torch.Tensor:
    """r_k = hit_k: each rank is rewarded for its own item only (Gamma -> infinity)."""
    _no_gamma("exp_inf", gamma)
    return hits.to(torch.float32).clone()


# r_k = sum_{j>=k} hit_j / log2(j+1) (1-based j: the DCG of the list from rank k on) and
# r_k = sum_{j>=k} hit_j / gamma^(j-k): each as one matrix product with its own weights.
REWARD_SCHEMES.register("log")(_look_ahead("log"))
REWARD_SCHEMES.register("exp")(_look_ahead("exp"))


def rank_rewards(hits: torch.Tensor, scheme: str = "exp_inf", gamma: Optional[float] = None) -> torch.Tensor:
    """Per-rank rewards.

    Args:
        hits: Tensor[B, K] of relevance in {0, 1} (any dtype).
        scheme: one of :data:`REWARD_SCHEMES` (``exp_inf``, ``log``, ``exp``).
        gamma: discount base for ``exp`` (> 1); must be None for the other schemes.

    Returns:
        FloatTensor[B, K] (float32), on ``hits``'s device.
    """
    fn = REWARD_SCHEMES.get(scheme)
    if hits.dim() != 2:
        raise ValueError(f"hits must be [B, K], got shape {tuple(hits.shape)}")
    return fn(hits, gamma=gamma)


@LIST_RETURNS.register("exp_inf")
def _sum_of_ranks(rewards: torch.Tensor) -> torch.Tensor:
    """sum_k r_k: the immediate per-rank rewards added up (the list's number of hits)."""
    return rewards.to(torch.float32).sum(dim=1)


def _from_first_rank(rewards: torch.Tensor) -> torch.Tensor:
    """r_1: a look-ahead scheme's reward of rank 1 is already the return of the whole list."""
    return rewards[:, 0].to(torch.float32).clone()


LIST_RETURNS.register("log", _from_first_rank)
LIST_RETURNS.register("exp", _from_first_rank)


def list_returns(rewards: torch.Tensor, scheme: str = "exp_inf") -> torch.Tensor:
    """One return per list from its per-rank rewards (see the module docstring).

    Args:
        rewards: FloatTensor[B, K] from :func:`rank_rewards` with the same ``scheme``.
        scheme: one of :data:`LIST_RETURNS` (the names of :data:`REWARD_SCHEMES`).

    Returns:
        FloatTensor[B] (float32).
    """
    fn = LIST_RETURNS.get(scheme)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, K], got shape {tuple(rewards.shape)}")
    return fn(rewards)
