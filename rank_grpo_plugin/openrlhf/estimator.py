"""The ``rank_grpo`` advantage estimator inside OpenRLHF's experience maker (PPOTrainer Ray actor).

Replaces the body of ``RemoteExperienceMaker.compute_advantages_and_returns`` (OpenRLHF 0.10.4-0.11.2) when
``--algo.advantage.estimator rank_grpo``. The recipe itself is :func:`rank_grpo_plugin.algorithm.rank_grpo_advantages`;
this module only moves tensors between OpenRLHF's ``Experience`` objects and it:

* per-rank hits ``[B, K]`` from the reward's ``rank_grpo/hit_rXX`` extra logs (see :mod:`.reward`);
* rank ids and the EOS mask from the action tokens and the tokenizer's newline table (:func:`action_rank_ids`);
* everything in rollout order (``Experience.index``), the results back into each experience.

Rank ids are derived from tokens, so they survive every reshuffle of OpenRLHF's replay buffer. Where the host
can carry them (``Experience.extras`` of patches/), they are stored for the policy loss, which then does not
derive them again on every micro-batch.
"""
from __future__ import annotations

import itertools
import os
from typing import List

import torch

from rank_grpo_plugin.algorithm import rank_grpo_advantages
from rank_grpo_plugin.data import parse_label
from rank_grpo_plugin.options import RankGRPOOptions
from rank_grpo_plugin.ranks import eos_mask, through_first_eos, tokenizer_rank_ids, tokenizer_segmentations
from rank_grpo_plugin.scoring import CatalogChangedError, check_catalog

from .reward import CATALOG_ERROR_KEY, LABEL_ERROR_KEY, hit_keys

RANK_INFO_PREFIX = "rank_grpo/"


def action_tokens(sequences: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """The tokens the action mask / action log-probs refer to: ``sequences[:, -A:]`` (OpenRLHF aligns
    ``action_mask[:, j]`` with ``sequences[:, T - A + j]``; ``A = T - 1`` for rollouts)."""
    return sequences[:, sequences.shape[1] - action_mask.shape[1]:]


def action_eos_mask(sequences: torch.Tensor, action_mask: torch.Tensor, tokenizer) -> torch.Tensor:
    """BoolTensor[B, A]: action tokens that are EOS."""
    return eos_mask(action_tokens(sequences, action_mask), action_mask, tokenizer)


def list_mask(sequences: torch.Tensor, action_mask: torch.Tensor, tokenizer) -> torch.Tensor:
    """BoolTensor[B, A]: the action mask up to and including each row's first EOS (the list; OpenRLHF's mask
    already ends there, this makes it so whatever the host's masking)."""
    return through_first_eos(action_mask, action_eos_mask(sequences, action_mask, tokenizer))


def action_rank_ids(sequences: torch.Tensor, action_mask: torch.Tensor, tokenizer,
                    separator: str = "end") -> torch.Tensor:
    """Rank id of every action token, LongTensor[B, A] (-1 off the mask and after the first EOS), on
    ``sequences``' device (``separator``: see :func:`rank_grpo_plugin.ranks.rank_ids`)."""
    mask = list_mask(sequences, action_mask, tokenizer)
    return tokenizer_rank_ids(action_tokens(sequences, action_mask), mask, tokenizer, separator)


def _describe(experience, i: int) -> str:
    prompts = getattr(experience, "prompts", None) or []
    prompt = prompts[i] if i < len(prompts) else None
    index = experience.index[i] if getattr(experience, "index", None) and i < len(experience.index) else "?"
    return f"rollout sample {index} (prompt ending {str(prompt)[-80:]!r})"


def _flagged(info, key: str) -> List[int]:
    if key not in info:
        return []
    return torch.nonzero(torch.as_tensor(info[key]).reshape(-1) > 0).flatten().tolist()


def _hits_of(experience, num_ranks: int, source: str = "") -> torch.Tensor:
    """hits[b, K] float32 from the experience's info; clear errors for missing keys / bad labels (``source``:
    the dataset and label field, prefixed to the sample's description)."""
    info = experience.info
    for i in _flagged(info, LABEL_ERROR_KEY):  # bad data: the same validator, naming what the host can name
        labels = getattr(experience, "labels", None) or []
        where = f"rank_grpo: bad label, the run stops before training on its batch: {source}{_describe(experience, i)}"
        parse_label(labels[i] if i < len(labels) else None, where=where)
        raise ValueError(f"rank_grpo: the reward reported a malformed label for {source}{_describe(experience, i)}")
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


RANK_IDS_KEY = RANK_INFO_PREFIX + "rank_ids"  # Experience.extras key (per token, aligned with action_mask)


def _rollout_order(experiences: List, exp_len: List[int]) -> torch.Tensor:
    """Row of every sample in rollout order (``Experience.index``), checked to be a permutation."""
    for e, n in zip(experiences, exp_len):
        if e.index is None or len(e.index) != n:
            raise ValueError(f"rank_grpo: Experience.index has {None if e.index is None else len(e.index)} entries "
                             f"for {n} samples; cannot restore the rollout order")
    indices = torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)), dtype=torch.long)
    if not torch.equal(torch.sort(indices).values, torch.arange(len(indices))):
        raise ValueError(f"rank_grpo: Experience.index values are not a permutation of 0..{len(indices) - 1} "
                         "(samples missing or repeated); cannot rebuild the prompt groups")
    return indices


def _stack(tensors: List[torch.Tensor], width: int, fill) -> torch.Tensor:
    """[B_i, A_i] tensors right-padded with ``fill`` to ``width`` and concatenated: [sum B_i, width]."""
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill) for t in tensors], dim=0)


@torch.no_grad()
def compute_rank_grpo_advantages(experience_maker, experiences: List) -> List:
    """``RemoteExperienceMaker.compute_advantages_and_returns`` for ``rank_grpo`` (OpenRLHF 0.11.2 semantics:
    fills ``advantages``/``returns`` [B, A] and ``info["return"]``, clears ``kl``).

    Plumbing only: the hits, rank ids and masks of all experiences are put in rollout order (``Experience.index``,
    as OpenRLHF orders its scalar rewards), :func:`rank_grpo_plugin.algorithm.rank_grpo_advantages` computes the
    recipe, and its results go back into each experience. With KL as a reward (``--algo.kl.init_coef > 0`` without
    ``--algo.kl.use_loss``) ``-kl_coef * kl`` is the recipe's token penalty. Where the Experience can carry them
    (``Experience.extras``, patches/), the rank ids are stored for the policy loss.
    """
    if not experiences:
        return experiences
    args = experience_maker.strategy.args
    tokenizer = experience_maker.tokenizer
    opts = RankGRPOOptions.from_args(args)  # a RecipeConfig: the recipe reads its hyper-parameters from it
    k = opts.num_ranks
    group = int(args.rollout.n_samples_per_prompt)

    if opts.catalog and os.path.exists(opts.catalog):  # one catalog per run: an os.stat per step (the reward, in
        try:                                             # the rollout actors, checks it on every call)
            check_catalog(opts.catalog, opts.catalog_sha256)
        except CatalogChangedError as e:
            raise CatalogChangedError(f"rank_grpo: --rank_grpo.catalog: {e}") from None
    if any(_flagged(e.info, CATALOG_ERROR_KEY) for e in experiences):
        raise CatalogChangedError(f"rank_grpo: the reward found that --rank_grpo.catalog {opts.catalog} changed or "
                                  "vanished during the run (see the rollout actors' log); the run stops before "
                                  "training on this batch")
    label_key = getattr(getattr(args, "data", None), "label_key", None)
    dataset = getattr(getattr(args, "data", None), "prompt_dataset", None)
    source = f"--data.prompt_dataset {dataset}: " if dataset else ""
    source += f"field {label_key!r} of " if label_key else ""
    hits_list = [_hits_of(e, k, source) for e in experiences]
    exp_len = [h.shape[0] for h in hits_list]
    indices = _rollout_order(experiences, exp_len)
    if len(indices) % group:
        raise ValueError(f"rank_grpo: {len(indices)} samples is not a multiple of --rollout.n_samples_per_prompt "
                         f"{group}; every prompt needs all of its samples in one batch")
    widths = [e.action_mask.shape[1] for e in experiences]
    width = max(widths)
    device = experiences[0].action_mask.device
    # "end" ranks count the items; the --rank_grpo.separator ranks receive the advantages (and group the loss's
    # ratios): both from one gather of the newline table, the same tensor when the separator is "end"
    seps = ("end",) if opts.separator == "end" else ("end", opts.separator)
    masks = [list_mask(e.sequences, e.action_mask, tokenizer).to(device) for e in experiences]
    segs = [tokenizer_segmentations(action_tokens(e.sequences, e.action_mask), m.to(e.action_mask.device), tokenizer,
                                    seps) for e, m in zip(experiences, masks)]
    ranks, credit = [s[0].to(device) for s in segs], [s[-1].to(device) for s in segs]
    eos = [action_eos_mask(e.sequences, e.action_mask, tokenizer).to(device) & m for e, m in zip(experiences, masks)]
    kl_coef = float(getattr(experience_maker.kl_ctl, "value", 0.0) or 0.0)
    kl_as_reward = kl_coef != 0.0 and not args.algo.kl.use_loss and all(e.kl is not None for e in experiences)

    order = torch.empty_like(indices)
    order[indices] = torch.arange(len(indices))  # row of rollout sample j in the concatenation
    def rollout(tensors, fill):
        return _stack(tensors, width, fill)[order.to(device)]

    out = rank_grpo_advantages(
        torch.cat(hits_list, dim=0)[order], rollout(ranks, -1), rollout(masks, False), rollout(eos, False), group,
        opts, token_penalty=rollout([-kl_coef * e.kl.float().to(device) for e in experiences], 0.0)
        if kl_as_reward else None,
        credit_ids=None if opts.separator == "end" else rollout(credit, -1),
    )
    back = indices.to(device)  # rollout row of each concatenated row
    parts = zip(experiences, credit, *(t[back].split(exp_len) for t in (
        out.token_advantages, out.rank_rewards, out.rank_advantages, out.returns, out.items_emitted)))
    for e, r_ids, tok_adv, r, a, ret, items in parts:
        tok_adv = tok_adv[:, : e.action_mask.shape[1]].to(e.action_mask.device)
        e.advantages = tok_adv
        e.returns = tok_adv.clone()
        e.info["return"] = ret
        e.info[RANK_INFO_PREFIX + "items_emitted"] = items
        if opts.per_rank_metrics:
            width_k = max(2, len(str(k)))
            for j in range(k):
                e.info[f"{RANK_INFO_PREFIX}reward_r{j + 1:0{width_k}d}"] = r[:, j].clone()
                e.info[f"{RANK_INFO_PREFIX}adv_r{j + 1:0{width_k}d}"] = a[:, j].clone()
        extras = getattr(e, "extras", None)
        if isinstance(extras, dict):
            extras[RANK_IDS_KEY] = r_ids
        e.kl = None
    return experiences
