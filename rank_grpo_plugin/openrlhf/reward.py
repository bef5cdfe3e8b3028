"""Catalog reward for OpenRLHF's reward-function extension, with vector-reward transport.

Use it as ``--reward.remote_url <this file>`` (``rank_grpo_plugin.openrlhf.flags.REWARD_FILE``); with
``--rank_grpo.catalog`` and no reward URL the plugin selects it automatically. OpenRLHF loads the file with
``spec_from_file_location`` inside every vLLM rollout actor and calls ``reward_func(queries, prompts, labels)``.

Vector transport. OpenRLHF 0.11.2 carries one scalar reward per sample, plus ``extra_logs`` whose values it
also reduces to one scalar each (``samples_generator`` keeps ``value.flatten()[0]``). So the K-vector of hits is
sent as K scalar extra logs, ``rank_grpo/hit_r01`` ... ``rank_grpo/hit_rK``; they travel in ``Experience.info``
through the experience maker to :func:`.estimator.compute_rank_grpo_advantages`, which stacks them back into
``hits[B, K]``. As a bonus they are logged as per-rank hit rates. The scalar reward (and score, for dynamic
filtering) is the list's NDCG@K.

Labels (the dataset's ``--data.label_key`` field) are JSON text or an already-decoded object, decoded by the one
row schema (:func:`rank_grpo_plugin.data.parse_label`)::

    {"groundtruth": [["The Matrix", 1999], ["Heat", "1995"]], "seen": ["Alien"]}

(``groundtruth_with_release_year`` / ``seen_titles`` are accepted as aliases). A malformed label is a data
error: the sample gets reward 0 and ``rank_grpo/label_error`` = 1, and the estimator then raises an error that
names the sample (OpenRLHF swallows exceptions raised inside reward functions). So does a catalog that changed
during the run (``rank_grpo/catalog_error`` = 1 on every sample; :func:`rank_grpo_plugin.scoring.check_catalog`).
Model output is never trusted: any completion, however broken, only earns zero relevance.
"""
from __future__ import annotations

import logging
import re
from typing import Any, List, Sequence

from rank_grpo_plugin.data import LabelError
from rank_grpo_plugin.scoring import CatalogChangedError, load_catalog, score_completion

logger = logging.getLogger("rank_grpo_plugin.reward")

HIT_PREFIX = "rank_grpo/hit_r"
LABEL_ERROR_KEY = "rank_grpo/label_error"
CATALOG_ERROR_KEY = "rank_grpo/catalog_error"
NDCG_KEY = "rank_grpo/ndcg"
IN_CATALOG_KEY = "rank_grpo/in_catalog_rate"

# Special-token text that decoding with skip_special_tokens=False leaves at the end of a completion
# ("<|im_end|>", "<|endoftext|>", "</s>", "<eos>", "<|eot_id|>", ...).
_TRAILING_SPECIALS = re.compile(r"(?:<\|[^<>|\n]{1,64}\|>|</s>|<eos>|<end_of_turn>)+\s*$")


def hit_key(rank: int, num_ranks: int) -> str:
    """Extra-log key of 0-based ``rank``: ``rank_grpo/hit_r01`` .. (zero-padded to K's width, at least 2)."""
    return f"{HIT_PREFIX}{rank + 1:0{max(2, len(str(num_ranks)))}d}"


def hit_keys(num_ranks: int) -> List[str]:
    return [hit_key(k, num_ranks) for k in range(num_ranks)]


def response_text(query: str, prompt: str) -> str:
    """The generated part of OpenRLHF's ``query`` (prompt + response decoded with special tokens), without the
    trailing special tokens (EOS) so the last line parses like the others."""
    if not isinstance(query, str):
        return ""
    if isinstance(prompt, str) and query.startswith(prompt):
        text = query[len(prompt):]
    elif isinstance(prompt, str) and prompt:
        tail = prompt[-64:]  # tokenizer round trips may alter the prompt's start, rarely its end
        pos = query.find(tail, max(0, len(prompt) - 2 * len(tail) - 64))
        text = query[pos + len(tail):] if pos >= 0 else query
    else:
        text = query
    return _TRAILING_SPECIALS.sub("", text)


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], options=None) -> dict:
    """OpenRLHF reward-function contract: ``{"rewards": Tensor[n], "scores": Tensor[n], "extra_logs": {...}}``.

    Options come from ``RANK_GRPO_PLUGIN_OPTIONS`` (set by the launcher for every Ray worker) unless given.
    """
    import torch

    from rank_grpo_plugin.options import RankGRPOOptions

    opts = options if options is not None else RankGRPOOptions.from_env()
    if not opts.catalog:
        raise RuntimeError("rank_grpo reward: no catalog configured (--rank_grpo.catalog / RANK_GRPO_PLUGIN_OPTIONS)")
    k = int(opts.num_ranks)
    try:
        catalog = load_catalog(opts.catalog, opts.catalog_sha256)
    except CatalogChangedError as e:  # bad data, reported like a bad label (OpenRLHF swallows what is raised here)
        logger.error("rank_grpo reward: %s", e)
        catalog = None
    rows = []
    for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels)):
        where = f"sample with prompt {str(prompt)[-80:]!r}"
        res = {"hits": [0] * k, "ndcg": 0.0, "in_catalog_rate": 0.0, "label_error": 0.0,
               "catalog_error": float(catalog is None)}
        if catalog is not None:
            try:
                res.update(score_completion(response_text(query, prompt), label, catalog, k, opts.year_tolerance,
                                            where))
            except LabelError as e:
                logger.error("rank_grpo reward: %s", e)
                res["label_error"] = 1.0
        rows.append(res)
    # Every value is its own small contiguous tensor: the dict crosses Ray with OpenRLHF's zero-copy tensor
    # serialisation (RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1), which rejects strided views such as hits[:, j].
    def column(values) -> "torch.Tensor":
        return torch.tensor(list(values), dtype=torch.float32)

    extra = {key: column(float(r["hits"][j]) for r in rows) for j, key in enumerate(hit_keys(k))}
    extra[NDCG_KEY] = column(r["ndcg"] for r in rows)
    extra[IN_CATALOG_KEY] = column(r["in_catalog_rate"] for r in rows)
    extra[LABEL_ERROR_KEY] = column(r["label_error"] for r in rows)
    extra[CATALOG_ERROR_KEY] = column(r["catalog_error"] for r in rows)
    return {"rewards": column(r["ndcg"] for r in rows), "scores": column(r["ndcg"] for r in rows), "extra_logs": extra}


if __name__ != "rank_grpo_plugin.openrlhf.reward":  # loaded by path (OpenRLHF's spec_from_file_location)
    from rank_grpo_plugin.openrlhf.reward import reward_func  # noqa: F811,E402  one implementation, one cache
