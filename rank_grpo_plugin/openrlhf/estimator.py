"""The ``rank_grpo`` advantage estimator inside OpenRLHF's experience maker (PPOTrainer Ray actor).

Replaces the body of ``RemoteExperienceMaker.compute_advantages_and_returns`` (OpenRLHF 0.11.2) when
``--algo.advantage.estimator rank_grpo``:

1. per-rank hits ``[B, K]`` from the reward's ``rank_grpo/hit_rXX`` extra logs (see :mod:`.reward`), put back in
   rollout order with ``Experience.index`` exactly like OpenRLHF orders its scalar rewards;
2. core :func:`rank_rewards` -> :func:`rank_advantages` (per-rank group normalisation over
   ``n_samples_per_prompt`` consecutive samples);
3. rank ids from the action tokens and the tokenizer's newline table (:func:`action_rank_ids`), and core
   :func:`token_advantages` with the length shaping;
4. with KL as a reward (``--algo.kl.init_coef > 0`` without ``--algo.kl.use_loss``), the per-token penalty
   ``-kl_coef * kl`` is added as a return-to-go (reverse cumulative sum), as OpenRLHF does for its group
   estimators with ``gamma = 1``.

Rank ids are *derived from tokens* (``sequences`` and ``action_mask``) wherever they are needed, so they survive
every reshuffle OpenRLHF's replay buffer does (split, re-batch, padding removal, packing, dynamic batching)
without a new ``Experience`` field.
"""
from __future__ import annotations

import itertools
from typing import List

import torch

from rank_grpo_plugin.advantages import rank_advantages, token_advantages
from rank_grpo_plugin.ranks import newline_counts, num_emitted_items, rank_ids
from rank_grpo_plugin.rewards import rank_rewards

from .options import RankGRPOOptions
from .reward import LABEL_ERROR_KEY, hit_keys, parse_label

RANK_INFO_PREFIX = "rank_grpo/"


def action_tokens(sequences: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """The tokens the action mask / action log-probs refer to: ``sequences[:, -A:]`` (OpenRLHF aligns
    ``action_mask[:, j]`` with ``sequences[:, T - A + j]``; ``A = T - 1`` for rollouts)."""
    return sequences[:, sequences.shape[1] - action_mask.shape[1]:]


def action_rank_ids(sequences: torch.Tensor, action_mask: torch.Tensor, tokenizer) -> torch.Tensor:
    """Rank id of every action token, LongTensor[B, A] (-1 off the mask), on ``sequences``' device.

    Token ids past the tokenizer's vocabulary (a padded embedding, or anything vLLM may emit) count 0 newlines
    instead of failing.
    """
    tokens = action_tokens(sequences, action_mask)
    mask = action_mask.bool()
    used = torch.where(mask, tokens, torch.zeros_like(tokens))
    top = int(used.max()) + 1 if used.numel() else 0
    table = newline_counts(tokenizer, device=tokens.device)  # cached: no tokenizer call after the first
    if table.numel() < top:
        table = newline_counts(tokenizer, vocab_size=-(-top // 128) * 128, device=tokens.device)  # few sizes
    return rank_ids(tokens, mask, table)


def eos_token_ids(tokenizer) -> List[int]:
    ids = getattr(tokenizer, "eos_token_id", None)
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def action_eos_mask(sequences: torch.Tensor, action_mask: torch.Tensor, tokenizer) -> torch.Tensor:
    tokens = action_tokens(sequences, action_mask)
    ids = eos_token_ids(tokenizer)
    if not ids:
        return torch.zeros_like(action_mask, dtype=torch.bool)
    return torch.isin(tokens, torch.tensor(ids, device=tokens.device)) & action_mask.bool()


def _describe(experience, i: int) -> str:
    prompts = getattr(experience, "prompts", None) or []
    prompt = prompts[i] if i < len(prompts) else None
    index = experience.index[i] if getattr(experience, "index", None) and i < len(experience.index) else "?"
    return f"rollout sample {index} (prompt ending {str(prompt)[-80:]!r})"


def _hits_of(experience, num_ranks: int) -> torch.Tensor:
    """hits[b, K] float32 from the experience's info; clear errors for missing keys / bad labels."""
    info = experience.info
    if LABEL_ERROR_KEY in info:
        flags = torch.as_tensor(info[LABEL_ERROR_KEY]).reshape(-1)
        for i in torch.nonzero(flags > 0).flatten().tolist():
            labels = getattr(experience, "labels", None) or []
            parse_label(labels[i] if i < len(labels) else None, where=_describe(experience, i))
            raise ValueError(f"rank_grpo: the reward reported a malformed label for {_describe(experience, i)}")
    keys = hit_keys(num_ranks)
    missing = [k for k in keys if k not in info]
    if missing:
        raise ValueError(
            f"rank_grpo: the reward did not report per-rank hits ({missing[0]} ... missing from Experience.info; "
            f"present: {sorted(info)[:8]}). Use --rank_grpo.catalog (the plugin's catalog reward) or a "
            f"--reward.remote_url reward function returning extra_logs {keys[0]} ... {keys[-1]} for "
            f"--rank_grpo.num_ranks {num_ranks}."
        )
    cols = [torch.as_tensor(info[k], dtype=torch.float32).reshape(-1) for k in keys]
    return torch.stack(cols, dim=1)


def _reverse_cumsum(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(torch.cumsum(torch.flip(x, dims=[1]), dim=1), dims=[1])


@torch.no_grad()
def compute_rank_grpo_advantages(experience_maker, experiences: List) -> List:
    """``RemoteExperienceMaker.compute_advantages_and_returns`` for ``rank_grpo`` (OpenRLHF 0.11.2 semantics:
    fills ``advantages``/``returns`` [B, A] and ``info["return"]``, clears ``kl``)."""
    args = experience_maker.strategy.args
    tokenizer = experience_maker.tokenizer
    opts = RankGRPOOptions.from_args(args)
    k = int(opts.num_ranks)
    group = int(args.rollout.n_samples_per_prompt)
    if not experiences:
        return experiences

    hits_list = [_hits_of(e, k) for e in experiences]
    exp_len = [h.shape[0] for h in hits_list]
    for e, n in zip(experiences, exp_len):
        if e.index is None or len(e.index) != n:
            raise ValueError(f"rank_grpo: Experience.index has {None if e.index is None else len(e.index)} entries "
                             f"for {n} samples; cannot restore the rollout order")
    indices = torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)), dtype=torch.long)
    if not torch.equal(torch.sort(indices).values, torch.arange(len(indices))):
        raise ValueError(f"rank_grpo: Experience.index values are not a permutation of 0..{len(indices) - 1} "
                         "(samples missing or repeated); cannot rebuild the prompt groups")
    hits = torch.empty(len(indices), k, dtype=torch.float32)
    hits[indices] = torch.cat(hits_list, dim=0)  # rollout order: groups of `group` consecutive samples
    if hits.shape[0] % group:
        raise ValueError(f"rank_grpo: {hits.shape[0]} samples is not a multiple of --rollout.n_samples_per_prompt "
                         f"{group}; every prompt needs all of its samples in one batch")
    rewards = rank_rewards(hits, opts.reward_scheme, opts.gamma)
    adv = rank_advantages(rewards, group, scale=opts.adv_scale, eps=opts.adv_eps)
    rewards_per_exp = rewards[indices].split(exp_len)
    adv_per_exp = adv[indices].split(exp_len)

    kl_coef = float(getattr(experience_maker.kl_ctl, "value", 0.0) or 0.0)
    kl_as_reward = kl_coef != 0.0 and not args.algo.kl.use_loss
    for e, r, a in zip(experiences, rewards_per_exp, adv_per_exp):
        mask = e.action_mask.bool()
        device = e.action_mask.device
        ranks = action_rank_ids(e.sequences, e.action_mask, tokenizer)
        eos = action_eos_mask(e.sequences, e.action_mask, tokenizer)
        tok_adv = token_advantages(
            a.to(device), ranks, mask, eos, k,
            overflow_penalty=opts.overflow_penalty, early_stop_penalty=opts.early_stop_penalty,
            eos_bonus=opts.eos_bonus,
        )
        if kl_as_reward and e.kl is not None:
            penalty = torch.where(mask, -kl_coef * e.kl.float(), torch.zeros_like(tok_adv))
            tok_adv = torch.where(mask, tok_adv + _reverse_cumsum(penalty), tok_adv)
        e.advantages = tok_adv
        e.returns = tok_adv.clone()
        e.info["return"] = r.sum(dim=-1)
        items = num_emitted_items(ranks, mask, eos)
        started = torch.where(mask, ranks + 1, torch.zeros_like(ranks)).max(dim=1).values  # lines begun, no EOS
        e.info[RANK_INFO_PREFIX + "items_emitted"] = torch.where(items < 0, started, items).float()
        if opts.per_rank_metrics:
            width = max(2, len(str(k)))
            for j in range(k):
                e.info[f"{RANK_INFO_PREFIX}reward_r{j + 1:0{width}d}"] = r[:, j].clone()
                e.info[f"{RANK_INFO_PREFIX}adv_r{j + 1:0{width}d}"] = a[:, j].clone()
        e.kl = None
    return experiences
