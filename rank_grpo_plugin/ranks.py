"""Token -> rank segmentation.

A completion is a ranked list, one item per line. Rank k (0-based) is the k-th line of the completion text
split on "\\n" with nothing collapsed, exactly as :func:`rank_grpo_plugin.recsys.match.catalog_hits` splits it.
In token space the rank of a token is the number of "\\n" characters decoded by the completion tokens strictly
before it, so a token that contains a newline (``"\\n"``, ``")\\n"``, ``"\\n\\n"``) belongs to the item it ends.

With ``separator="start"`` a token that contains newlines belongs instead to the item it starts (its rank is the
number of "\\n" up to and including it): the newline after item k is the choice to go on to item k+1 rather than
stop, and is then credited with item k+1's outcome, not item k's (see ``--rank_grpo.separator``). The text rank of
every other token is the same in both modes.

The newline table is computed once per tokenizer from its vocabulary; segmentation itself is a gather and a
cumulative sum, with no decoding and no Python loop over tokens.
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .config import DEFAULT_RECIPE as _D

__all__ = ["SEPARATORS", "newline_counts", "rank_ids", "tokenizer_rank_ids", "tokenizer_segmentations",
           "eos_token_ids", "eos_mask", "through_first_eos", "num_emitted_items"]

# Which item a token holding newlines belongs to: the item it ends ("end") or the item it starts ("start").
SEPARATORS = ("end", "start")


# tokenizer -> {(size, device): table}; the first entry, (n, "cpu"), is the decoded table itself.
_TABLE_CACHE: "weakref.WeakKeyDictionary[Any, Dict[Tuple[int, str], torch.Tensor]]" = weakref.WeakKeyDictionary()


def _vocab_size(tokenizer: Any) -> int:
    if hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        return int(tokenizer.get_vocab_size(with_added_tokens=True))
    try:  # transformers tokenizers: len() counts added tokens, .vocab_size does not
        return int(len(tokenizer))
    except TypeError:
        return int(tokenizer.vocab_size)


def _decode_each(tokenizer: Any, ids: list) -> list:
    """Decode every id on its own, in one batched call when the tokenizer offers one."""
    singles = [[i] for i in ids]
    if hasattr(tokenizer, "decode_batch"):  # tokenizers.Tokenizer (Rust, batched)
        return tokenizer.decode_batch(singles, skip_special_tokens=False)
    if hasattr(tokenizer, "batch_decode"):  # transformers
        return tokenizer.batch_decode(
            singles, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
    return [tokenizer.decode(s) for s in singles]


def newline_counts(
    tokenizer: Any, vocab_size: Optional[int] = None, device: Union[str, torch.device, None] = None
) -> torch.Tensor:
    """How many "\\n" each token id decodes to.

    Args:
        tokenizer: a ``transformers`` tokenizer or a ``tokenizers.Tokenizer``.
        vocab_size: length of the table; defaults to the tokenizer's size including added tokens. Pass the
            model's embedding size when it is padded beyond the tokenizer (ids past the tokenizer count 0).
        device: where the table lives (default CPU).

    Returns:
        LongTensor[V]. Decoded once per tokenizer object, then cached per (``vocab_size``, ``device``): a repeated
        call is a dictionary lookup (it does not even ask the tokenizer its size, which costs ~10 ms on some
        tokenizers). Tokens added to the tokenizer after the first call are not seen by the cached table.
    """
    dev = "cpu" if device is None else str(torch.device(device))
    try:
        tables = _TABLE_CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable: compute without caching
        tables = None
    if tables is None:
        n = _vocab_size(tokenizer)
        texts = _decode_each(tokenizer, list(range(n)))
        tables = {(n, "cpu"): torch.tensor([t.count("\n") for t in texts], dtype=torch.long)}
        try:
            _TABLE_CACHE[tokenizer] = tables
        except TypeError:
            pass
    (n, _), base = next(iter(tables.items()))
    size = n if vocab_size is None else int(vocab_size)
    if size < n:
        raise ValueError(f"vocab_size={size} is smaller than the tokenizer's {n} tokens")
    table = tables.get((size, dev))
    if table is None:
        table = base if size == n else torch.cat([base, base.new_zeros(size - n)])
        table = tables[(size, dev)] = table.to(dev)
    return table


def rank_ids(token_ids: torch.Tensor, mask: torch.Tensor, newline_counts: torch.Tensor,
             separator: str = _D.separator) -> torch.Tensor:
    """0-based rank of every completion token.

    Args:
        token_ids: LongTensor[B, T], completion tokens (padding anywhere; only masked positions are read).
        mask: Bool/Long/FloatTensor[B, T], 1 on completion tokens, 0 on padding.
        newline_counts: LongTensor[V], from :func:`newline_counts` (any device; moved to ``token_ids``'s).
        separator: ``"end"``: a newline-bearing token belongs to the item it ends; ``"start"``: to the item it
            starts (one of :data:`SEPARATORS`).

    Returns:
        LongTensor[B, T]: number of "\\n" in the masked tokens strictly before each token (``"start"``: up to and
        including it); -1 where mask is 0. Values >= K mean the token is in the overflow (text after the K-th
        item; with ``"start"`` also the newline that ends item K).
    """
    _check_input(token_ids, mask, (separator,))
    off = ~mask.bool()
    table = newline_counts.to(device=token_ids.device, dtype=torch.long)
    ids = token_ids.masked_fill(off, 0)
    if ids.numel():
        lo, hi = torch.aminmax(ids)
        if int(hi) >= table.numel() or int(lo) < 0:
            bad = int(hi) if int(hi) >= table.numel() else int(lo)
            raise ValueError(
                f"token id {bad} outside the newline table of size {table.numel()}; "
                "build it with newline_counts(tokenizer, vocab_size=<model vocab size>)"
            )
    return _segment(ids, off, table, (separator,))[0]


def _check_input(token_ids: torch.Tensor, mask: torch.Tensor, separators: Sequence[str]) -> None:
    for separator in separators:
        if separator not in SEPARATORS:
            raise ValueError(f"separator must be one of {list(SEPARATORS)}, got {separator!r}")
    if token_ids.shape != mask.shape:
        raise ValueError(f"token_ids {tuple(token_ids.shape)} and mask {tuple(mask.shape)} differ in shape")
    if token_ids.dim() != 2:
        raise ValueError(f"token_ids must be [B, T], got {tuple(token_ids.shape)}")


def _segment(ids: torch.Tensor, off: torch.Tensor, table: torch.Tensor,
             separators: Sequence[str]) -> Tuple[torch.Tensor, ...]:
    """The gather + cumsum of :func:`rank_ids` on checked input, once for all ``separators``: ``ids``
    LongTensor[B, T] with 0 where ``off`` (BoolTensor[B, T], True off the mask), every id < ``table.numel()``."""
    nl = table[ids].masked_fill_(off, 0)  # advanced indexing returns a new tensor: in-place is safe
    upto = torch.cumsum(nl, dim=1)  # "start": newlines up to and including the token; "end": strictly before
    return tuple((upto - nl if sep == "end" else upto.clone()).masked_fill_(off, -1) for sep in separators)


def tokenizer_rank_ids(token_ids: torch.Tensor, mask: torch.Tensor, tokenizer: Any,
                       separator: str = _D.separator) -> torch.Tensor:
    """:func:`rank_ids` with the tokenizer's cached newline table, LongTensor[B, T] (-1 off the mask).

    Token ids past the tokenizer's size (a padded embedding, or anything a rollout engine may emit) count 0
    newlines instead of failing: the table is widened in steps of 128, so only a few sizes are ever cached.
    One pass over the ids finds both their range and the table size (no second check as in :func:`rank_ids`).
    """
    return tokenizer_segmentations(token_ids, mask, tokenizer, (separator,))[0]


def tokenizer_segmentations(token_ids: torch.Tensor, mask: torch.Tensor, tokenizer: Any,
                            separators: Sequence[str] = SEPARATORS) -> Tuple[torch.Tensor, ...]:
    """:func:`tokenizer_rank_ids` for several ``separators`` from one gather of the newline table: a tuple of
    LongTensor[B, T], one per separator, in their order (e.g. ``"end"`` to count items, ``"start"`` to credit)."""
    _check_input(token_ids, mask, separators)
    off = ~mask.bool()
    ids = token_ids.masked_fill(off, 0)
    table = newline_counts(tokenizer, device=token_ids.device)  # cached: no tokenizer call after the first
    if ids.numel():
        lo, hi = (int(v) for v in torch.aminmax(ids))
        if lo < 0:
            raise ValueError(f"token id {lo} is negative")
        if table.numel() <= hi:
            table = newline_counts(tokenizer, vocab_size=-(-(hi + 1) // 128) * 128, device=token_ids.device)
    return _segment(ids, off, table, separators)


def eos_token_ids(tokenizer: Any) -> List[int]:
    """The tokenizer's EOS id(s) as a list (empty when it has none)."""
    ids = getattr(tokenizer, "eos_token_id", None)
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def eos_mask(token_ids: torch.Tensor, mask: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """BoolTensor[B, T]: masked tokens that are one of the tokenizer's EOS ids (all False when it has none)."""
    ids = eos_token_ids(tokenizer)
    if not ids:
        return torch.zeros_like(mask, dtype=torch.bool)
    return torch.isin(token_ids, torch.tensor(ids, device=token_ids.device)) & mask.bool()


def through_first_eos(mask: torch.Tensor, eos_mask: torch.Tensor) -> torch.Tensor:
    """BoolTensor[B, T]: ``mask`` cut after the first EOS of each row (the EOS itself kept; rows without an EOS
    keep their whole mask). A completion ends at its first EOS: whatever a host's mask lets through after it
    (a packed layout, another host's masking) is not part of the list and gets no advantage and no ratio."""
    m = mask.bool()
    eos = (eos_mask.bool() & m).long()
    return m & (torch.cumsum(eos, dim=1) - eos == 0)


def num_emitted_items(rank: torch.Tensor, mask: torch.Tensor, eos_mask: torch.Tensor) -> torch.Tensor:
    """Number of list items a completion emitted before its EOS token.

    Items = newlines before the EOS, plus one when the line the EOS ends is not empty (content tokens after
    the last newline). A single trailing newline after the last item therefore does not count as an item.

    Args:
        rank: LongTensor[B, T] from :func:`rank_ids` with ``separator="end"``.
        mask: [B, T] completion mask.
        eos_mask: [B, T], 1 on the EOS token (at most one per row; the first one counts).

    Returns:
        LongTensor[B]; -1 for rows without an EOS token (truncated completions).
    """
    m = mask.bool()
    eos = eos_mask.bool() & m
    has_eos = eos.any(dim=1)
    first = eos & (torch.cumsum(eos.long(), dim=1) == 1)
    eos_rank = torch.where(first, rank, torch.zeros_like(rank)).sum(dim=1)
    before_eos = torch.cumsum(first.long(), dim=1) == 0
    same_line = m & before_eos & (rank == eos_rank.unsqueeze(1))
    items = eos_rank + same_line.any(dim=1).long()
    return torch.where(has_eos, items, torch.full_like(items, -1))
