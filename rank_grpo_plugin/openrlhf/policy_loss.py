"""The rank-level policy loss inside OpenRLHF's actor training step (PolicyModelActor Ray workers).

:class:`RankGRPOPolicyLoss` is a drop-in for ``openrlhf.models.PolicyLoss`` (the call signature of every supported
release; the return tuple of the installed one, :func:`openrlhf_compat.policy_loss_outputs`: ``(loss, clip_ratio,
ppo_kl, vllm_kl, is_filter_ratio)`` from 0.11.2 on, ``(loss, clip_ratio, ppo_kl, vllm_kl)`` up to 0.11.1) that calls
the core :func:`rank_grpo_plugin.rank_policy_loss` (geometric-mean importance ratio per (sequence, rank), clipped with
``--actor.eps_clip_low_high``). It declares ``needs_experience``, so OpenRLHF's training step passes the micro-batch
as ``experience=`` (the upstream registry of ``patches/``, or :mod:`.shim` on a stock release). Rank ids come from
``experience.extras`` when the estimator could store them there (``patches/``); otherwise they are derived from the
experience's tokens.

Normalisation follows OpenRLHF: with ``--rank_grpo.loss_agg token_mean`` the loss is a global token mean
(``sum / batch_num_tokens * dp_size``, the same pre-compensation for gradient accumulation and data parallelism
as ``aggregate_loss``); ``rank_mean`` averages (sequence, rank) units within the micro-batch. KL-as-loss,
entropy and aux losses are added by OpenRLHF's own ``training_step`` unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from openrlhf_compat import policy_loss_outputs
from rank_grpo_plugin.loss import rank_policy_loss

from .estimator import RANK_IDS_KEY, action_rank_ids
from rank_grpo_plugin.options import RankGRPOOptions

METRIC_PREFIX = "rank_grpo/"


class RankGRPOPolicyLoss(nn.Module):
    needs_experience = True

    def __init__(self, args, tokenizer=None):
        super().__init__()
        if tokenizer is None:
            raise ValueError("RankGRPOPolicyLoss needs the actor's tokenizer to find rank boundaries")
        self.tokenizer = tokenizer
        self.options = RankGRPOOptions.from_args(args)
        eps = getattr(args.actor, "eps_clip_low_high", None)
        if eps is None:
            eps = (args.actor.eps_clip, args.actor.eps_clip)
        self.eps_low, self.eps_high = float(eps[0]), float(eps[1])
        self.num_ranks = int(self.options.num_ranks)
        self.agg = self.options.loss_agg
        self.outputs = policy_loss_outputs()  # what the installed release's training step unpacks

    def rank_ids(self, experience, action_mask: torch.Tensor) -> torch.Tensor:
        """LongTensor[B, A]: carried in ``experience.extras`` when the host can carry them, else from the tokens
        (with ``--rank_grpo.separator``, as the estimator placed the advantages)."""
        carried = (getattr(experience, "extras", None) or {}).get(RANK_IDS_KEY)
        if carried is not None and carried.shape == action_mask.shape:
            return carried.to(action_mask.device, torch.long)
        return action_rank_ids(experience.sequences.to(action_mask.device), action_mask, self.tokenizer,
                               self.options.separator)

    def forward(
        self,
        log_probs: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        action_mask: Optional[torch.Tensor] = None,
        rollout_log_probs: Optional[torch.Tensor] = None,
        dp_size: int = 1,
        batch_num_tokens: Optional[float] = None,
        global_batch_size: Optional[float] = None,
        experience=None,
    ):
        if experience is None:
            raise RuntimeError(
                "rank_grpo policy loss called without the experience it belongs to: OpenRLHF's training step did "
                "not pass experience= (is the plugin disabled in this worker? RANK_GRPO_PLUGIN_DISABLE)"
            )
        if action_mask is None:
            action_mask = experience.action_mask
        action_mask = action_mask.to(log_probs.device)
        ranks = self.rank_ids(experience, action_mask)
        loss, stats = rank_policy_loss(
            log_probs, old_log_probs, advantages, ranks, action_mask, self.num_ranks,
            eps_low=self.eps_low, eps_high=self.eps_high, agg=self.agg, rank_stats=False,
        )
        if self.agg == "token_mean" and batch_num_tokens is not None:
            with torch.no_grad():  # one scale factor, so the rescale is a single autograd node
                scale = stats["tokens"].clamp(min=1).to(loss.dtype).mul_(dp_size).div_(
                    torch.as_tensor(batch_num_tokens, dtype=loss.dtype, device=loss.device).clamp(min=1))
            loss = loss * scale

        with torch.no_grad():
            ppo_kl = -stats["log_ratio_mean"]  # mean of old - new log-prob over the masked tokens
            clip_ratio = (stats["clip_frac_low"] + stats["clip_frac_high"]).detach()
            info = experience.info
            info[METRIC_PREFIX + "clip_frac_low"] = stats["clip_frac_low"].detach()
            info[METRIC_PREFIX + "clip_frac_high"] = stats["clip_frac_high"].detach()
            info[METRIC_PREFIX + "ratio_mean"] = stats["ratio_mean"].detach()
        return (loss, clip_ratio, ppo_kl, None, None)[: self.outputs]
