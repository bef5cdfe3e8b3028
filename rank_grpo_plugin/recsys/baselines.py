"""Classical recommenders every conversational recommender is compared with: most-popular and item-kNN over
co-mentions.

Both are fitted on *dialogues*: each training dialogue is the set of catalog items mentioned in it (the titles the
user and the recommender named, including the recommender's answers). With X the binary dialogue x item matrix
(D x N), the fitted state is

* ``popularity[i]`` = number of training dialogues mentioning item i (= diag XᵀX), and
* ``co[i, j]`` = number of training dialogues mentioning both i and j, i != j (XᵀX with a zero diagonal).

A conversation's context is the items it has mentioned so far (``seen``). Scores of item j:

* ``popularity``: popularity[j];
* ``knn`` with ``score="count"``: Σ_{i ∈ seen} co[i, j];
* ``knn`` with ``score="cosine"``: Σ_{i ∈ seen} co[i, j] / sqrt(popularity[i] · popularity[j]) (item-item cosine
  similarity of the binary columns of X; 0 where a popularity is 0).

Ranking: seen items are excluded; items are ordered by score, ties (including every item with kNN score 0, so a
short kNN list is completed by popularity) by popularity, then by catalog index -- deterministic, no randomness.

``leave_out``: a training row must not be scored with counts that include its own dialogue (its answer would be
counted as a co-mention of its own context). :meth:`CoMentions.scores` takes each row's own dialogue vector and
subtracts it exactly (``co - x xᵀ`` off the diagonal, ``popularity - x``) without copying the N x N matrix.

Vectorised torch (dense matmuls; N is a catalog, a few thousand items: N² floats fit easily). Torch and the
standard library only.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

__all__ = ["CoMentions", "SCORES", "dialogue_matrix", "top_k"]

SCORES = ("count", "cosine")


def dialogue_matrix(dialogues: Sequence[Sequence[int]], n_items: int) -> torch.Tensor:
    """Binary dialogue x item matrix.

    Args:
        dialogues: D lists of item indices in [0, n_items) (repeats inside one dialogue count once).
        n_items: N, the catalog size.
    Returns:
        float32 tensor (D, N) with X[d, i] = 1 when dialogue d mentions item i.
    """
    x = torch.zeros(len(dialogues), n_items, dtype=torch.float32)
    rows = [d for d, items in enumerate(dialogues) for _ in items]
    cols = [i for items in dialogues for i in items]
    if cols and not (0 <= min(cols) and max(cols) < n_items):
        raise ValueError(f"item index out of range [0, {n_items}): {min(cols)}..{max(cols)}")
    if cols:
        x[torch.tensor(rows), torch.tensor(cols)] = 1.0
    return x


class CoMentions:
    """Popularity and co-mention counts of training dialogues (see the module docstring).

    Attributes:
        popularity: float32 (N,), dialogues mentioning each item.
        co: float32 (N, N), dialogues mentioning both items; zero diagonal.
    """

    def __init__(self, dialogues: Sequence[Sequence[int]], n_items: int):
        x = dialogue_matrix(dialogues, n_items)
        self.n_items = n_items
        self.co = x.T @ x  # (N, N); exact small integers in float32 (far below 2**24 dialogues)
        self.popularity = self.co.diagonal().clone()
        self.co.fill_diagonal_(0.0)

    def scores(self, seen: torch.Tensor, method: str, score: str = "cosine",
               leave_out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores of every catalog item for a batch of conversations.

        Args:
            seen: float32 (R, N) binary, the items each conversation has mentioned.
            method: ``"popularity"`` or ``"knn"``.
            score: ``"count"`` or ``"cosine"`` (knn only).
            leave_out: optional float32 (R, N) binary: for each conversation, the training dialogue whose counts
                must be removed (its own dialogue), or zeros.
        Returns:
            float32 (R, N) scores (higher first; seen items are not excluded here, :func:`top_k` does that).
        """
        if method not in ("popularity", "knn"):
            raise ValueError(f"unknown baseline {method!r}; valid: popularity, knn")
        if score not in SCORES:
            raise ValueError(f"unknown knn score {score!r}; valid: {', '.join(SCORES)}")
        r = seen.shape[0]
        lo = leave_out if leave_out is not None else torch.zeros_like(seen)
        pop = self.popularity.expand(r, -1) - lo  # (R, N) popularity without the left-out dialogue
        if method == "popularity":
            return pop
        if score == "count":
            a = seen
        else:
            inv = torch.where(pop > 0, pop.clamp_min(1.0).rsqrt(), torch.zeros_like(pop))
            a = seen * inv
        # Σ_i a_i co'[i, j] with co' = co - x xᵀ off the diagonal: a @ co - (a · x) x + a ⊙ x (the diagonal term
        # x_j x_j that the outer product adds and co' does not hold).
        s = a @ self.co - (a * lo).sum(-1, keepdim=True) * lo + a * lo
        if score == "cosine":
            s = s * inv
        return s


def top_k(scores: torch.Tensor, exclude: torch.Tensor, popularity: torch.Tensor, k: int) -> torch.Tensor:
    """The k best items of each row: by score, ties by popularity, then by lower catalog index; excluded items last.

    Args:
        scores: float32 (R, N).
        exclude: bool (R, N), items that must not be listed (seen in the conversation).
        popularity: float32 (R, N) or (N,), the tie-breaker.
        k: list length (<= N).
    Returns:
        int64 (R, k) item indices; a row with fewer than k allowed items ends with excluded ones (the caller
        checks ``exclude`` when that can happen).
    """
    r, n = scores.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    order = torch.arange(n).expand(r, n)
    # Stable sorts from the least to the most significant key: popularity (desc), then score (desc), then
    # exclusion (allowed first). Catalog order survives as the last tie-breaker.
    pop = popularity.expand(r, n)
    idx = torch.sort(pop, dim=1, descending=True, stable=True).indices
    order = order.gather(1, idx)
    idx = torch.sort(scores.gather(1, order), dim=1, descending=True, stable=True).indices
    order = order.gather(1, idx)
    idx = torch.sort(exclude.gather(1, order).to(torch.int8), dim=1, stable=True).indices
    order = order.gather(1, idx)
    return order[:, :k]
