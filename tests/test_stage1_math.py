"""Stage 1 math: remap scores (hand-computed), reflect rating parsing, adjust recovering known (w, b)."""
from __future__ import annotations

import math

import pytest
import torch

from rank_grpo_plugin.stage1.adjust import adjust_loss, apply_adjust, fit_adjust
from rank_grpo_plugin.stage1.reflect import parse_ratings, reflect_messages, reflect_scores
from rank_grpo_plugin.stage1.remap import HashEmbedder, rank_weights, remap_scores, top_candidates


def test_rank_weights():
    assert torch.allclose(rank_weights(4), torch.tensor([1.0, 1 / math.sqrt(2), 1 / math.sqrt(3), 0.5]))


def test_remap_scores_hand_computed():
    # catalog c0 = (1, 0), c1 = (0, 1), c2 = (0.6, 0.8)
    cat = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    # row 0: t1 = c0 exactly (exact_idx 0); t2 has c2's embedding but is not exactly c2 (e.g. another year)
    # row 1: one teacher item t1 = (0, 1) = c1 exactly; position 2 is padding (its exact_idx must be ignored)
    temb = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    exact = torch.tensor([[0, -1], [1, 0]])
    conv = torch.tensor([[0.8, 0.6], [1.0, 0.0]])
    r2 = 1 / math.sqrt(2)
    # s[c] = sum_k p_k (t_k . c + I_exact[k, c]) + lam * conv . c, p = (1, 1/sqrt 2)
    expected_lam1 = torch.tensor([
        [1 * (1 + 1) + r2 * 0.6 + 0.8,   # c0 = 3.2243
         1 * 0.0 + r2 * 0.8 + 0.6,       # c1 = 1.1657
         1 * 0.6 + r2 * 1.0 + 0.96],     # c2 = 2.2671
        [0.0 + 1.0,                      # c0: only conv . c0
         1 * (1 + 1) + 0.0,              # c1: sim 1 + exact 1
         0.8 + 0.6],                     # c2
    ])
    got = remap_scores(temb, mask, exact, conv, cat, lam=1.0)
    assert torch.allclose(got, expected_lam1, atol=1e-6)
    assert got[0].tolist() == pytest.approx([3.22426, 1.16569, 2.26711], abs=1e-4)
    # lambda scales only the conversation term
    got0 = remap_scores(temb, mask, exact, conv, cat, lam=0.0)
    assert torch.allclose(got - got0, conv @ cat.T, atol=1e-6)


def test_remap_repeated_exact_item_accumulates():
    cat = torch.eye(3)
    temb = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0]]])
    got = remap_scores(temb, torch.ones(1, 2, dtype=torch.bool), torch.tensor([[0, 0]]), torch.zeros(1, 3), cat)
    p = 1 + 1 / math.sqrt(2)
    assert torch.allclose(got, torch.tensor([[2 * p, 0, 0]]))


def test_top_candidates_bans_and_ties():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 0.5]])
    banned = torch.tensor([[False, True, False, False, False]])
    idx, val = top_candidates(scores, banned, 3)
    assert idx.tolist() == [[2, 3, 0]] and val.tolist() == [[3.0, 2.0, 1.0]]
    with pytest.raises(ValueError, match="n-candidates"):
        top_candidates(scores, banned, 5)


def test_hash_embedder_counts_every_trigram_as_a_slow_loop_does():
    """The embedder against the obvious loop: one count per padded, casefolded character trigram in its blake2b
    bucket, then L2 rows; repeated trigrams count twice, an empty text is its padding's two trigrams."""
    import hashlib

    texts = ["Heat (1995)", "", "aaaa", "Amélie (2001)", "HEAT (1995)"]
    dim = 16
    want = torch.zeros(len(texts), dim)
    for i, t in enumerate(texts):
        s = "  " + t.casefold() + "  "
        for j in range(len(s) - 2):
            h = hashlib.blake2b(s[j:j + 3].encode("utf-8"), digest_size=4).digest()
            want[i, int.from_bytes(h, "little") % dim] += 1.0
    got = HashEmbedder(dim=dim)(texts)
    assert got.shape == (5, dim) and got.dtype == torch.float32
    assert torch.allclose(got, want / want.norm(dim=1, keepdim=True), atol=0, rtol=0)
    assert torch.equal(got[0], got[4])  # casefolded
    assert want[2].sum() == 6 and want[1].sum() == 2  # "  aaaa  ": 6 trigrams; "    ": 2


def test_parse_ratings_strict_but_tolerant():
    text = "1: +2\n2: -1\n\n3 : 0\nSure! here you go\n4: 3\n2: 2\n9: 1\n5=1\n#6: \u22122\n7: good"
    p = parse_ratings(text, 7)
    assert p.ratings == [2, -1, 0, None, 1, -2, None]
    assert p.n_rated == 5
    # prose, out-of-range rating, duplicate index, index beyond n, non-integer rating
    assert p.n_malformed == 5
    assert parse_ratings(None, 3).ratings == [None] * 3
    assert parse_ratings("", 0).n_rated == 0


def test_reflect_messages_and_scores():
    msgs = reflect_messages("USER: I like heist movies", ["Heat (1995)", "Ronin (1998)"])
    assert msgs[0]["role"] == "user" and "1. Heat (1995)\n2. Ronin (1998)" in msgs[0]["content"]
    s = reflect_scores(torch.tensor([[1.0, 2.0]]), torch.tensor([[2, -1]]), gamma=0.5)
    assert s.tolist() == [[2.0, 1.5]]


def test_adjust_recovers_known_w_b():
    g = torch.Generator().manual_seed(0)
    C, B, N = 8, 6000, 5
    w_true = torch.linspace(0.5, 2.0, C)
    b_true = torch.linspace(-1.0, 1.0, C)[torch.randperm(C, generator=g)]
    b_true -= b_true.mean()  # b is identified up to a constant shift; the penalty picks the mean-zero one
    cand = torch.stack([torch.randperm(C, generator=g)[:N] for _ in range(B)])
    s = torch.randn(B, N, generator=g) * 1.5
    logits = apply_adjust(s, cand, w_true, b_true)
    pick = torch.multinomial(torch.softmax(logits, 1), 1, generator=g).squeeze(1)
    y = torch.zeros(B, N)
    y[torch.arange(B), pick] = 1
    fit = fit_adjust(s, cand, y, C, lambda_w=0.01, lambda_b=0.01)
    assert fit.n_targets == B
    assert torch.allclose(fit.w, w_true, atol=0.15), (fit.w, w_true)
    assert torch.allclose(fit.b - fit.b.mean(), b_true, atol=0.15), (fit.b, b_true)
    # the fit is a minimum: no worse than the truth, and the gradient vanishes
    w = fit.w.double().requires_grad_(True)
    b = fit.b.double().requires_grad_(True)
    loss = adjust_loss(w, b, s.double(), cand, y.double(), 0.01, 0.01)
    loss.backward()
    assert w.grad.abs().max() < 1e-2 and b.grad.abs().max() < 1e-2
    assert loss.item() <= adjust_loss(w_true.double(), b_true.double(), s.double(), cand, y.double(), 0.01, 0.01) + 1e-6


def test_adjust_penalty_only_items_stay_at_prior():
    # item 3 is never a candidate: w = 1, b = 0 exactly; strong penalties shrink everything to the prior
    s = torch.tensor([[1.0, 0.0, -1.0]] * 4)
    cand = torch.tensor([[0, 1, 2]] * 4)
    y = torch.tensor([[0.0, 0.0, 1.0]] * 4)
    fit = fit_adjust(s, cand, y, 4)
    assert fit.w[3] == 1 and fit.b[3] == 0
    assert apply_adjust(s, cand, fit.w, fit.b)[0].argmax() == 2  # the target is now ranked first
    strong = fit_adjust(s, cand, y, 4, lambda_w=1e6, lambda_b=1e6)
    assert torch.allclose(strong.w, torch.ones(4), atol=1e-3) and torch.allclose(strong.b, torch.zeros(4), atol=1e-3)
    with pytest.raises(ValueError, match="same"):
        fit_adjust(s, cand[:, :2], y, 4)
