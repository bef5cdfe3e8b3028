"""Rank-level geometric-mean ratio loss vs a hand example and a slow per-unit reference."""
import math

import pytest
import torch

from rank_grpo_plugin import rank_policy_loss

K = 3


def slow_reference(lp, old, adv, ranks, mask, k, eps_low, eps_high, agg):
    """Obvious loops: per (row, unit) geometric-mean ratio, per-token clipped loss, then aggregation."""
    token_losses, unit_losses = [], []
    for b in range(lp.shape[0]):
        units = {}
        for t in range(lp.shape[1]):
            if mask[b, t]:
                units.setdefault(min(int(ranks[b, t]), k), []).append(t)
        for u, ts in units.items():
            w = math.exp(sum(float(lp[b, t] - old[b, t]) for t in ts) / len(ts))
            ls = []
            for t in ts:
                a = float(adv[b, t])
                ls.append(-min(w * a, min(max(w, 1 - eps_low), 1 + eps_high) * a))
            token_losses += ls
            unit_losses.append(sum(ls) / len(ls))
    if agg == "token_mean":
        return sum(token_losses) / len(token_losses)
    return sum(unit_losses) / len(unit_losses)


def test_hand_example_clipped_and_unclipped_units():
    # row 0: rank 0 tokens log-ratio 0.1, 0.3 -> w = e^0.2 = 1.2214 > 1.08, A = +1 -> clipped: loss 1.08 each
    #        rank 1 token log-ratio 0.0 -> w = 1, A = -2 -> loss 2
    lp = torch.tensor([[0.1, 0.3, 0.0, 0.0]], requires_grad=True)
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, 1.0, -2.0, 0.0]])
    ranks = torch.tensor([[0, 0, 1, -1]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = rank_policy_loss(lp, old, adv, ranks, mask, K)
    assert loss.item() == pytest.approx((-1.08 - 1.08 + 2.0) / 3, rel=1e-6)
    loss_r, _ = rank_policy_loss(lp, old, adv, ranks, mask, K, agg="rank_mean")
    assert loss_r.item() == pytest.approx((-1.08 + 2.0) / 2, rel=1e-6)
    assert stats["clip_frac_high"].item() == pytest.approx(2 / 3)
    assert stats["clip_frac_low"].item() == 0
    assert stats["ratio_mean"].item() == pytest.approx((math.exp(0.2) + 1.0) / 2, rel=1e-6)
    assert stats["rank_adv_mean"].tolist() == pytest.approx([1.0, -2.0, 0.0, 0.0])
    loss.backward()
    # clipped unit: no gradient; unclipped unit: d/dlp of -(w * A) with w = exp(lp) -> -A * w = 2, / 3 tokens
    assert lp.grad[0].tolist() == pytest.approx([0.0, 0.0, 2.0 / 3, 0.0])


@pytest.mark.parametrize("agg", ["token_mean", "rank_mean"])
def test_matches_slow_reference_on_random_batch(agg):
    g = torch.Generator().manual_seed(0)
    b, t = 5, 40
    lp = torch.randn(b, t, generator=g) * 0.1
    old = lp + torch.randn(b, t, generator=g) * 0.05
    adv = torch.randn(b, t, generator=g)
    ranks = torch.sort(torch.randint(0, K + 3, (b, t), generator=g), dim=1).values  # includes overflow
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 30:] = 0
    mask[3, :] = 0  # a row with no tokens
    ranks = torch.where(mask.bool(), ranks, torch.full_like(ranks, -1))
    loss, _ = rank_policy_loss(lp, old, adv, ranks, mask, K, 0.06, 0.08, agg)
    ref = slow_reference(lp, old, adv, ranks, mask, K, 0.06, 0.08, agg)
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_overflow_tokens_share_one_ratio_and_padding_is_ignored():
    lp = torch.tensor([[0.0, 0.2, 0.4, 5.0]], requires_grad=True)
    old = torch.zeros(1, 4)
    adv = torch.full((1, 4), -0.1)
    ranks = torch.tensor([[K, K + 1, K + 5, -1]])  # three overflow tokens in one unit, then padding
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = rank_policy_loss(lp, old, adv, ranks, mask, K)
    w = math.exp(0.2)  # geometric mean over the three overflow tokens
    assert loss.item() == pytest.approx(0.1 * w, rel=1e-6)  # -min(w*A, clip(w)*A) with A < 0 -> -w*A
    loss.backward()
    assert lp.grad[0, 3].item() == 0.0
    assert lp.grad[0, :3].tolist() == pytest.approx([0.1 * w / 3] * 3, rel=1e-5)


def test_gradient_flows_only_inside_clip_range():
    g = torch.Generator().manual_seed(1)
    b, t = 8, 30
    old = torch.randn(b, t, generator=g)
    lp = (old + torch.randn(b, t, generator=g) * 0.2).requires_grad_(True)
    ranks = (torch.arange(t) // 6).expand(b, t).contiguous()  # 5 units of 6 tokens
    adv = torch.randn(b, 5, generator=g).repeat_interleave(6, dim=1)
    mask = torch.ones(b, t)
    loss, stats = rank_policy_loss(lp, old, adv, ranks, mask, 5, rank_stats=False)
    loss.backward()
    w = torch.exp((lp - old).detach().view(b, 5, 6).mean(-1))
    a = adv.view(b, 5, 6)[..., 0]
    low, high = (a < 0) & (w < 0.94), (a > 0) & (w > 1.08)
    clipped = low | high
    assert low.any() and high.any() and "rank_adv_mean" not in stats
    assert stats["clip_frac_low"].item() == pytest.approx(low.sum().item() / (b * 5))  # 6 tokens per unit
    assert stats["clip_frac_high"].item() == pytest.approx(high.sum().item() / (b * 5))
    grad_units = lp.grad.view(b, 5, 6).abs().sum(-1)
    assert clipped.any() and (~clipped).any()
    assert (grad_units[clipped] == 0).all()
    assert (grad_units[~clipped & (a != 0)] > 0).all()
    # within an unclipped unit every token gets the same gradient (d mean / d token = 1 / n)
    g_unit = lp.grad.view(b, 5, 6)[~clipped]
    assert torch.allclose(g_unit, g_unit[:, :1].expand_as(g_unit))


def test_degenerate_all_masked_and_errors():
    z = torch.zeros(2, 3, requires_grad=True)
    loss, stats = rank_policy_loss(z, torch.zeros(2, 3), torch.ones(2, 3), torch.full((2, 3), -1),
                                   torch.zeros(2, 3), K)
    assert loss.item() == 0.0 and stats["ratio_mean"].item() == 0.0
    with pytest.raises(ValueError, match="token_mean"):
        rank_policy_loss(z, z, z, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), K, agg="seq_mean")
    with pytest.raises(ValueError, match="shape"):
        rank_policy_loss(z, z, z, torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 3), K)
    with pytest.raises(ValueError, match="eps_low"):
        rank_policy_loss(z, z, z, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), K, eps_low=1.5)


def test_bf16_inputs_reduce_in_float32():
    lp = torch.randn(2, 10).to(torch.bfloat16).requires_grad_(True)
    loss, _ = rank_policy_loss(lp, lp.detach(), torch.ones(2, 10), torch.zeros(2, 10, dtype=torch.long),
                               torch.ones(2, 10), K)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(-1.0)
    loss.backward()
    assert lp.grad.dtype == torch.bfloat16


def _token_level_reference(lp, old, adv, ranks, mask, k, eps_low, eps_high):
    """The textbook per-token form: per-unit ratio gathered to tokens, then -min(w A, clip(w) A) per token."""
    m = mask.bool()
    unit = torch.where(m, ranks.clamp(0, k), torch.full_like(ranks, k + 1))
    diff = torch.where(m, lp - old, torch.zeros_like(lp))
    sums = torch.zeros(lp.shape[0], k + 2).scatter_add(1, unit, diff)
    cnt = torch.zeros(lp.shape[0], k + 2).scatter_add(1, unit, m.float())
    w = torch.gather(torch.exp(sums / cnt.clamp(min=1)), 1, unit)
    tok = -torch.min(w * adv, w.clamp(1 - eps_low, 1 + eps_high) * adv)
    return (tok * m).sum() / m.sum()


def test_unit_level_form_equals_token_level_form_with_mixed_sign_advantages_in_a_unit():
    # Within one rank the advantages differ in sign (EOS shaping / overflow tokens share a unit with content):
    # the per-unit P/N split must give the same loss and the same gradient as the per-token formula.
    g = torch.Generator().manual_seed(3)
    b, t = 6, 48
    old = torch.randn(b, t, generator=g)
    lp0 = old + torch.randn(b, t, generator=g) * 0.3
    adv = torch.randn(b, t, generator=g)
    adv[:, ::7] = 0.0  # zero advantages never count as clipped
    ranks = torch.sort(torch.randint(0, K + 2, (b, t), generator=g), dim=1).values
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[2, 20:] = False
    ranks = torch.where(mask, ranks, torch.full_like(ranks, -1))
    lp1, lp2 = lp0.clone().requires_grad_(True), lp0.clone().requires_grad_(True)
    loss, stats = rank_policy_loss(lp1, old, adv, ranks, mask, K)
    ref = _token_level_reference(lp2, old, adv, ranks, mask, K, 0.06, 0.08)
    loss.backward()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(lp1.grad, lp2.grad, atol=1e-7)
    # clip fractions: tokens whose clipped branch is strictly smaller, split by the side of 1
    unit = torch.where(mask, ranks.clamp(0, K), torch.full_like(ranks, K + 1))
    d = torch.where(mask, lp0 - old, torch.zeros_like(lp0))
    w = torch.gather(torch.exp(torch.zeros(b, K + 2).scatter_add(1, unit, d)
                               / torch.zeros(b, K + 2).scatter_add(1, unit, mask.float()).clamp(min=1)), 1, unit)
    low = (mask & (adv < 0) & (w < 0.94)).sum().item() / mask.sum().item()
    high = (mask & (adv > 0) & (w > 1.08)).sum().item() / mask.sum().item()
    assert low > 0 and high > 0
    assert stats["clip_frac_low"].item() == pytest.approx(low)
    assert stats["clip_frac_high"].item() == pytest.approx(high)


def _token_level_reference64(lp, old, adv, ranks, mask, k, eps_low, eps_high, agg="token_mean"):
    """The per-token form in float64, with every stat worked out per token (torch.where drops whatever the padding
    holds, NaN included): (loss, stats) to compare against the float32 unit-level implementation."""
    lp, old, adv = lp.double(), old.double(), adv.double()
    m = mask.bool()
    unit = torch.where(m, ranks.long().clamp(0, k), torch.full_like(ranks.long(), k + 1))
    diff = torch.where(m, lp - old, torch.zeros_like(lp))
    z = torch.zeros(lp.shape[0], k + 2, dtype=torch.float64)
    sums = z.scatter_add(1, unit, diff)
    cnt = z.scatter_add(1, unit, m.double())
    wu = torch.exp(sums / cnt.clamp(min=1))
    w = torch.gather(wu, 1, unit)
    a = torch.where(m, adv, torch.zeros_like(adv))
    tok = torch.where(m, -torch.min(w * a, w.clamp(1 - eps_low, 1 + eps_high) * a), torch.zeros_like(a))
    n = m.sum().clamp(min=1)
    if agg == "token_mean":
        loss = tok.sum() / n
    else:
        per_unit = z.scatter_add(1, unit, tok)[:, : k + 1] / cnt[:, : k + 1].clamp(min=1)
        present = cnt[:, : k + 1] > 0
        loss = (per_unit * present).sum() / present.sum().clamp(min=1)
    present = cnt[:, : k + 1] > 0
    flat = unit.view(-1)
    stats = {
        "clip_frac_low": (m & (a < 0) & (w < 1 - eps_low)).sum() / n,
        "clip_frac_high": (m & (a > 0) & (w > 1 + eps_high)).sum() / n,
        "ratio_mean": wu[:, : k + 1][present].mean() if present.any() else torch.tensor(0.0),
        "tokens": m.sum().double(),
        "log_ratio_mean": diff.sum() / n,
        "rank_adv_mean": (torch.zeros(k + 2, dtype=torch.float64).scatter_add(0, flat, a.view(-1))
                          / torch.zeros(k + 2, dtype=torch.float64).scatter_add(0, flat, m.view(-1).double())
                          .clamp(min=1))[: k + 1],
    }
    return loss, stats


def _realistic_batch(b, t, k, seed, garbage_padding=True):
    """Right-padded rows of sorted rank ids running into the overflow, per-rank advantages with EOS-like
    shaping (mixed signs and zeros inside units), ratios near 1 so some units clip on either side."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(t // 4, t + 1, (b,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    ranks = torch.sort(torch.randint(0, k + 3, (b, t), generator=g), dim=1).values
    rank_adv = torch.randn(b, k + 3, generator=g)
    rank_adv[:, ::4] = 0.0
    adv = torch.gather(rank_adv, 1, ranks)
    adv[:, ::9] = -adv[:, ::9] * 0.5  # mixed signs inside a unit
    old = -torch.rand(b, t, generator=g) * 3
    unit_shift = torch.gather(torch.randn(b, k + 3, generator=g) * 0.1, 1, ranks)  # per-unit ratio away from 1
    lp = old + unit_shift + torch.randn(b, t, generator=g) * 0.05
    if garbage_padding:  # what a trainer may leave on padding: normalised advantages, -inf / NaN log-probs, -1 ranks
        pad = ~mask
        adv = torch.where(pad, torch.full_like(adv, -0.37), adv)
        lp = torch.where(pad, torch.full_like(lp, float("nan")), lp)
        old = torch.where(pad, torch.full_like(old, float("-inf")), old)
        ranks = torch.where(pad, torch.full_like(ranks, -1), ranks)
    return lp, old, adv, ranks, mask


@pytest.mark.parametrize("agg", ["token_mean", "rank_mean"])
@pytest.mark.parametrize("b,t,k", [(16, 300, 5), (3, 1000, 20), (64, 64, 1)])
def test_loss_gradient_and_every_stat_match_the_float64_per_token_reference(agg, b, t, k):
    lp0, old, adv, ranks, mask = _realistic_batch(b, t, k, seed=b + t + k)
    lp = lp0.clone().requires_grad_(True)
    loss, stats = rank_policy_loss(lp, old, adv, ranks, mask, k, 0.06, 0.08, agg)
    loss.backward()
    lp64 = lp0.double().requires_grad_(True)
    ref, ref_stats = _token_level_reference64(lp64, old, adv, ranks, mask, k, 0.06, 0.08, agg)
    ref.backward()
    assert stats["clip_frac_low"] > 0 and stats["clip_frac_high"] > 0  # both clip branches occur
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-7)
    grad_ref = torch.where(mask, lp64.grad, torch.zeros_like(lp64.grad))
    assert torch.isfinite(lp.grad).all() and (lp.grad[~mask] == 0).all()
    assert torch.allclose(lp.grad.double(), grad_ref, rtol=1e-4, atol=1e-9)
    assert set(stats) == set(ref_stats)
    for name, value in stats.items():
        assert value.dtype == torch.float32 and not value.requires_grad, name
        assert torch.allclose(value.double(), ref_stats[name].double(), rtol=1e-5, atol=1e-6), name


def test_surrogate_backward_passes_gradcheck_in_float64():
    from rank_grpo_plugin.loss import _RankSurrogate, _unit_index

    b, t, k = 3, 17, 2
    lp0, old, adv, ranks, mask = _realistic_batch(b, t, k, seed=5, garbage_padding=False)
    idx = _unit_index(ranks, adv, mask, k)
    diff = (lp0 - old).double().view(-1).requires_grad_(True)
    adv64 = adv.double().reshape(-1)

    def f(d):
        return _RankSurrogate.apply(d, adv64, idx, b, k + 1, 0.94, 1.08)[0]

    assert torch.autograd.gradcheck(f, (diff,), eps=1e-6, atol=1e-8)


def test_gradient_on_the_clip_boundary_follows_torch_clamp():
    # eps = 0 and equal log-probs: w == 1 == both bounds; torch.clamp passes the gradient on its boundary
    lp = torch.zeros(1, 4, requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -2.0, 0.5]])
    ranks = torch.tensor([[0, 0, 1, 1]])
    loss, stats = rank_policy_loss(lp, torch.zeros(1, 4), adv, ranks, torch.ones(1, 4), K, eps_low=0.0, eps_high=0.0)
    loss.backward()
    ref_lp = torch.zeros(1, 4, requires_grad=True)
    _token_level_reference(ref_lp, torch.zeros(1, 4), adv, ranks, torch.ones(1, 4), K, 0.0, 0.0).backward()
    assert loss.item() == pytest.approx(-0.5 / 4)
    assert lp.grad[0].tolist() == pytest.approx(ref_lp.grad[0].tolist())
    assert lp.grad[0].tolist() == pytest.approx([-0.25, -0.25, 0.1875, 0.1875])  # -(1+1)/2/4 ; -(-2+.5)/2/4
    assert stats["clip_frac_low"].item() == 0 and stats["clip_frac_high"].item() == 0


def test_nan_advantage_on_a_token_is_loud_on_padding_ignored():
    lp = torch.zeros(1, 4, requires_grad=True)
    ranks = torch.tensor([[0, 0, 1, -1]])
    mask = torch.tensor([[True, True, True, False]])
    adv = torch.tensor([[1.0, float("nan"), -1.0, 0.0]])
    loss, _ = rank_policy_loss(lp, torch.zeros(1, 4), adv, ranks, mask, K)
    assert torch.isnan(loss)
    adv = torch.tensor([[1.0, 1.0, -1.0, float("nan")]])
    loss, stats = rank_policy_loss(lp, torch.zeros(1, 4), adv, ranks, mask, K)
    assert loss.item() == pytest.approx((-1 - 1 + 1) / 3) and stats["tokens"].item() == 3


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.long, torch.float32])
def test_mask_and_rank_id_dtypes_give_the_same_result(mask_dtype):
    lp0, old, adv, ranks, mask = _realistic_batch(6, 50, 3, seed=7)
    out = []
    for r, mk in ((ranks, mask), (ranks.int(), mask.to(mask_dtype))):
        lp = lp0.clone().requires_grad_(True)
        loss, stats = rank_policy_loss(lp, old, adv, r, mk, 3)
        loss.backward()
        out.append((loss, stats, lp.grad))
    (l0, s0, g0), (l1, s1, g1) = out
    assert l0.item() == l1.item() and torch.equal(g0, g1)
    assert all(torch.equal(s0[n], s1[n]) for n in s0)


def test_sequences_of_2_pow_24_tokens_are_refused():
    big = torch.zeros(1, 1 << 24)
    with pytest.raises(ValueError, match="2\\*\\*24"):
        rank_policy_loss(big, big, big, big.long(), big, K)


def test_units_are_formed_by_rank_id_value_not_position():
    """Rank ids not sorted within a row ([1, 0, 1, 0, 2]): the loss and gradient are those of the sorted row with
    the same per-token values permuted alike, and equal the float64 per-token reference."""
    g = torch.Generator().manual_seed(7)
    lp0 = torch.randn(2, 5, generator=g) * 0.1
    old = torch.randn(2, 5, generator=g) * 0.1
    adv = torch.randn(2, 5, generator=g)
    ranks = torch.tensor([[1, 0, 1, 0, 2], [2, 2, 0, 1, 0]])
    mask = torch.ones(2, 5, dtype=torch.bool)
    perm = torch.argsort(ranks, dim=1, stable=True)
    take = lambda x: torch.gather(x, 1, perm)  # noqa: E731
    lp, lp_sorted = lp0.clone().requires_grad_(True), take(lp0).requires_grad_(True)
    loss, _ = rank_policy_loss(lp, old, adv, ranks, mask, K)
    loss_sorted, _ = rank_policy_loss(lp_sorted, take(old), take(adv), take(ranks), mask, K)
    loss.backward()
    loss_sorted.backward()
    assert loss.item() == pytest.approx(loss_sorted.item(), rel=1e-6)
    assert torch.allclose(take(lp.grad), lp_sorted.grad, atol=1e-7)
    ref, _ = _token_level_reference64(lp0.double(), old, adv, ranks, mask, K, 0.06, 0.08)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_negative_rank_ids_are_left_out_like_padding():
    """A token inside the mask with rank id -1 (after the first EOS, segmented on the list mask) enters neither
    a unit's ratio nor the token count."""
    lp = torch.tensor([[0.1, 0.3, 0.0, 5.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -2.0, 9.0]])
    mask = torch.ones(1, 4)
    loss, stats = rank_policy_loss(lp, torch.zeros(1, 4), adv, torch.tensor([[0, 0, 1, -1]]), mask, K)
    cut, cut_stats = rank_policy_loss(lp, torch.zeros(1, 4), adv, torch.tensor([[0, 0, 1, -1]]),
                                      torch.tensor([[1, 1, 1, 0]]), K)
    assert loss.item() == pytest.approx(cut.item()) == pytest.approx((-1.08 - 1.08 + 2.0) / 3, rel=1e-6)
    assert stats["tokens"].item() == 3
