"""Reflect: the teacher rates the top remapped candidates; s_reflect = s_remap + gamma * rating.

The teacher sees the conversation and a numbered candidate list and must answer one line per candidate,
``<number>: <rating>`` with an integer rating in -2..+2 and nothing else. Its answer is untrusted:
:func:`parse_ratings` keeps every well-formed line and counts the rest; a candidate left unrated (missing,
malformed, out-of-range, duplicate, or a failed request) gets rating 0, i.e. keeps its remap score.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["RATING_MIN", "RATING_MAX", "reflect_messages", "parse_ratings", "RatingParse", "reflect_scores"]

RATING_MIN, RATING_MAX = -2, 2

_INSTRUCTIONS = (
    "You are judging movie recommendations for a conversation.\n"
    "Rate how well each numbered candidate fits what the user is asking for, from -2 (clearly wrong) "
    "through 0 (neutral) to +2 (excellent fit).\n"
    "Answer with exactly one line per candidate, in the form <number>: <rating>, for example\n"
    "1: +2\n2: 0\n3: -1\n"
    "Use only the integers -2, -1, 0, +1, +2. Write nothing else.\n"
)


def reflect_messages(conversation: str, candidates: Sequence[str]) -> List[Dict[str, str]]:
    """Chat messages asking the teacher to rate ``candidates`` ("Title (Year)" lines) for ``conversation``."""
    listing = "\n".join(f"{i}. {c}" for i, c in enumerate(candidates, 1))
    content = (f"{_INSTRUCTIONS}\nConversation:\n{conversation}\n\nCandidates ({len(candidates)}):\n{listing}\n\n"
               f"Ratings for candidates 1 to {len(candidates)}:")
    return [{"role": "user", "content": content}]


_LINE = re.compile(r"^\s*(?:candidate\s*)?#?(\d{1,4})\s*[:=]\s*([+-]?\d+)\s*$", re.IGNORECASE)


@dataclass
class RatingParse:
    ratings: List[Optional[int]]  # per candidate, None = unrated
    n_rated: int
    n_malformed: int  # non-blank lines that were not a valid, new, in-range "<number>: <rating>"


def parse_ratings(text: Optional[str], n: int) -> RatingParse:
    """Parse a reflect answer for ``n`` candidates. Never raises on the answer's content."""
    ratings: List[Optional[int]] = [None] * n
    malformed = 0
    if isinstance(text, str):
        for line in text.splitlines():
            if not line.strip():
                continue
            m = _LINE.match(line.replace("\u2212", "-"))
            if m is None:
                malformed += 1
                continue
            i, r = int(m.group(1)), int(m.group(2))
            if not (1 <= i <= n) or not (RATING_MIN <= r <= RATING_MAX) or ratings[i - 1] is not None:
                malformed += 1
                continue
            ratings[i - 1] = r
    return RatingParse(ratings, sum(r is not None for r in ratings), malformed)


def reflect_scores(remap: torch.Tensor, ratings: torch.Tensor, gamma: float = 0.5) -> torch.Tensor:
    """s_reflect = s_remap + gamma * rating. remap, ratings: [B, N] (rating 0 where unrated). Returns [B, N]."""
    return remap + gamma * ratings.to(remap.dtype)
