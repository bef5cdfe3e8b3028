"""Trivial reward for the CPU GRPO baseline (OpenRLHF ``--reward.remote_url format_reward.py`` contract).

``reward_func(queries, prompts, labels) -> {"rewards", "scores", "extra_logs"}``: half for the number of lines
(up to 20), half for the fraction of those lines that look like ``Title (Year)``. Dense enough that an untrained
tiny random model gets non-zero group variance. It needs no catalog; it only checks that training runs, moves
the weights and keeps rewards finite. The real Rank-GRPO reward is the catalog reward of ``rank_grpo_plugin.openrlhf.reward``.
"""
import re

import torch

_LINE = re.compile(r"^\s*\S.*\((1[89]\d\d|20\d\d)\)\s*$")


def _score(query: str, prompt: str) -> float:
    completion = query[len(prompt):] if query.startswith(prompt) else query
    lines = [ln for ln in completion.split("\n") if ln.strip()][:20]
    if not lines:
        return 0.0
    return 0.5 * len(lines) / 20.0 + 0.5 * sum(bool(_LINE.match(ln)) for ln in lines) / len(lines)


def reward_func(queries, prompts, labels):
    scores = torch.tensor([_score(q, p) for q, p in zip(queries, prompts)], dtype=torch.float32)
    return {"rewards": scores, "scores": scores, "extra_logs": {"format_reward": scores}}
