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
