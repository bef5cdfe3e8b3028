"""The one home of the Rank-GRPO recipe's defaults (standard library only, imported by every layer above it).

:class:`RecipeConfig` holds the hyper-parameters of the recipe (:func:`rank_grpo_plugin.algorithm.rank_grpo_advantages`
and the rank-level loss); :class:`rank_grpo_plugin.options.RankGRPOOptions` extends it with what a host run needs
besides (catalog, matching tolerance, logging), and the ``--rank_grpo.*`` flags take their defaults from it. The
clip range of the loss is not a ``--rank_grpo.*`` flag (OpenRLHF's ``--actor.eps_clip_low_high`` sets it), so its
defaults are the two constants below, used by :func:`rank_grpo_plugin.rank_policy_loss` and by the adapter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["EPS_LOW", "EPS_HIGH", "RecipeConfig", "DEFAULT_RECIPE"]

# The rank-level clip range [1 - EPS_LOW, 1 + EPS_HIGH] of the paper's runs.
EPS_LOW = 0.06
EPS_HIGH = 0.08


@dataclass(frozen=True)
class RecipeConfig:
    """Hyper-parameters of the recipe (names are the ``--rank_grpo.*`` flags of the OpenRLHF adapter).

    ``num_ranks`` K ranks per list; ``reward_scheme`` (``exp_inf``, ``log``, ``exp`` with ``gamma`` > 1) turns
    hits into per-rank rewards; ``advantage_level`` ``rank`` normalises every rank within a prompt's group
    (Rank-GRPO), ``sequence`` one return per list (the sequence-level ablation: same rewards, shaping and loss);
    ``adv_scale`` / ``adv_eps`` the group normalisation; ``overflow_penalty`` / ``early_stop_penalty`` /
    ``eos_bonus`` the length shaping; ``separator`` which item a newline-bearing token belongs to for its
    advantage and ratio (``end`` / ``start``); ``loss_agg`` the loss aggregation (``token_mean`` / ``rank_mean``).
    """

    num_ranks: int = 20
    reward_scheme: str = "exp_inf"
    gamma: Optional[float] = None
    advantage_level: str = "rank"
    adv_scale: str = "group"
    adv_eps: float = 1e-4
    overflow_penalty: float = -0.1
    early_stop_penalty: float = -0.1
    eos_bonus: float = 0.1
    separator: str = "end"
    loss_agg: str = "token_mean"


DEFAULT_RECIPE = RecipeConfig()
