"""Rank-level policy loss forward+backward vs OpenRLHF's own ``PolicyLoss`` (``ppo`` and ``gspo``).

    python3 benchmarks/policy_loss.py            # grid B in {4, 16, 64} x T in {128, 512, 1024}
    python3 benchmarks/policy_loss.py --quick    # smoke run

Same tensors for every candidate: token ids from the shipped Reddit-v2 SFT lists tokenised by SmolLM2's tokenizer
(joined by "\\n", right-padded, EOS-terminated; see ``_common.token_batch``), ``log_probs`` a leaf that requires
grad, ``old_log_probs`` = log_probs + noise (so some ratios clip), token advantages from the plugin's
``token_advantages`` with random per-rank hits (groups of 4). One torch thread; candidates interleaved; median.

Candidates (one call = forward + ``loss.backward()``):
* ``ppo``: ``openrlhf.models.loss.PolicyLoss(0.2, 0.2, policy_loss_type="ppo")`` -- the baseline (target: ours <= 1.3x);
* ``gspo``: ``PolicyLoss(policy_loss_type="gspo")`` (sequence-level ratio, per-sequence mean);
* ``rank_openrlhf``: ``rank_grpo_plugin.openrlhf.policy_loss.RankGRPOPolicyLoss`` as OpenRLHF's actor calls it
  (``loss_fn(log_probs, old, adv, action_mask=..., dp_size=1, batch_num_tokens=..., experience=...)``) with the rank
  ids the estimator stored in ``Experience.extras`` (the upstream registry of patches/);
* ``rank_openrlhf_stock``: the same on a stock OpenRLHF, whose Experience cannot carry them: the loss derives the
  rank ids from the experience's tokens on every call;
* ``rank_core``: the core ``rank_policy_loss`` on precomputed rank ids (``token_mean``);
* ``rank_core_rank_mean``: the same with ``agg="rank_mean"``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TARGET = 1.3
PROMPT_LEN = 64


def main(argv=None) -> dict:
    a = C.grid_parser(__doc__, repeats=7).parse_args(argv)
    batches = a.batches or ([4] if a.quick else [4, 16, 64])
    lengths = a.lengths or ([128] if a.quick else [128, 512, 1024])
    repeats = a.repeats or (2 if a.quick else 7)

    import torch

    torch.set_num_threads(1)
    from openrlhf.models.loss import PolicyLoss

    from rank_grpo_plugin import rank_ids, token_advantages
    from rank_grpo_plugin.advantages import rank_advantages
    from rank_grpo_plugin.loss import rank_policy_loss
    from rank_grpo_plugin.openrlhf.estimator import RANK_IDS_KEY
    from rank_grpo_plugin.openrlhf.policy_loss import RankGRPOPolicyLoss
    from rank_grpo_plugin.ranks import newline_counts

    info = C.machine()
    load_start = C.load()
    tok = C.smollm2_tokenizer()
    rows = C.reddit_rows()
    table = newline_counts(tok)
    K = 20
    eps_low, eps_high = 0.06, 0.08  # the plugin's defaults (--actor.eps_clip_low_high)

    ppo = PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.2, policy_loss_type="ppo")
    gspo = PolicyLoss(clip_eps_low=3e-4, clip_eps_high=4e-4, policy_loss_type="gspo")
    args = SimpleNamespace(actor=SimpleNamespace(eps_clip_low_high=(eps_low, eps_high), eps_clip=0.2),
                           rank_grpo=SimpleNamespace(num_ranks=K, loss_agg="token_mean"))
    ours = RankGRPOPolicyLoss(args, tokenizer=tok)

    cells = []
    all_finite = True
    for b in batches:
        for t in lengths:
            g = torch.Generator().manual_seed(b * 7919 + t)
            ids, mask, eos_mask = C.token_batch(tok, rows, b, t, seed=b * 31 + t)
            prompt = torch.randint(100, 40_000, (b, PROMPT_LEN), generator=g)
            stock = SimpleNamespace(sequences=torch.cat([prompt, ids], dim=1), action_mask=mask, info={})
            ranks = rank_ids(ids, mask, table)
            experience = SimpleNamespace(sequences=stock.sequences, action_mask=mask, info={},
                                         extras={RANK_IDS_KEY: ranks})
            hits = (torch.rand(b, K, generator=g) < 0.1).float()
            rank_adv = rank_advantages(hits, group_size=4 if b % 4 == 0 else b)
            adv = token_advantages(rank_adv, ranks, mask, eos_mask, K)
            lp0 = (-torch.rand(b, t, generator=g) * 3.0)
            old = (lp0 + 0.05 * torch.randn(b, t, generator=g)) * mask
            lp = (lp0 * mask).requires_grad_(True)
            fmask = mask.float()
            n_tok = float(mask.sum())

            def step(fn):
                lp.grad = None
                loss = fn()
                (loss[0] if isinstance(loss, tuple) else loss).backward()
                return loss

            cand = {
                "ppo": lambda: step(lambda: ppo(lp, old, adv, action_mask=fmask, dp_size=1, batch_num_tokens=n_tok)),
                "gspo": lambda: step(lambda: gspo(lp, old, adv, action_mask=fmask, dp_size=1, global_batch_size=b)),
                "rank_openrlhf": lambda: step(lambda: ours(lp, old, adv, action_mask=fmask, dp_size=1,
                                                          batch_num_tokens=n_tok, experience=experience)),
                "rank_openrlhf_stock": lambda: step(lambda: ours(lp, old, adv, action_mask=fmask, dp_size=1,
                                                                batch_num_tokens=n_tok, experience=stock)),
                "rank_core": lambda: step(lambda: rank_policy_loss(lp, old, adv, ranks, mask, K, eps_low, eps_high)),
                "rank_core_rank_mean": lambda: step(lambda: rank_policy_loss(lp, old, adv, ranks, mask, K, eps_low,
                                                                             eps_high, agg="rank_mean")),
            }
            losses = {}
            for name, fn in cand.items():
                out = fn()
                val = out[0] if isinstance(out, tuple) else out
                losses[name] = float(val.detach())
                all_finite &= bool(torch.isfinite(val)) and bool(torch.isfinite(lp.grad).all())
            # the OpenRLHF wrapper and the core loss must agree (token_mean, batch_num_tokens = local tokens)
            agree = all(abs(losses[n] - losses["rank_core"]) <= 1e-6 * max(1.0, abs(losses["rank_core"]))
                        for n in ("rank_openrlhf", "rank_openrlhf_stock"))
            if not agree:
                raise AssertionError(f"B={b} T={t}: RankGRPOPolicyLoss {losses['rank_openrlhf']} != "
                                     f"rank_policy_loss {losses['rank_core']}")
            inner = {name: C.calls_for(fn, 0.03, cap=500) for name, fn in cand.items()}
            res = C.interleaved(cand, repeats, inner)
            cell = {"batch": b, "length": t, "tokens": int(n_tok), "losses": losses, "wrapper_matches_core": agree,
                    "ms": {n: r["median_s"] * 1e3 for n, r in res.items()},
                    "ratio_vs_ppo": {n: C.paired_ratio(res, n, "ppo") for n in res},
                    "inner_calls": inner, "load": C.load()}
            cells.append(cell)
            print(f"  B={b:3d} T={t:5d}: ppo {cell['ms']['ppo']:.2f} ms; rank_core "
                  f"{cell['ratio_vs_ppo']['rank_core']:.2f}x, rank_openrlhf {cell['ratio_vs_ppo']['rank_openrlhf']:.2f}x, "
                  f"gspo {cell['ratio_vs_ppo']['gspo']:.2f}x (load {cell['load'][0]})", flush=True)

    # memory on the largest cell (state left by the last loop iteration)
    memory = {"cell": [batches[-1], lengths[-1]]}
    for name, fn in cand.items():
        memory[name] = {"python_peak_bytes": C.python_peak_bytes(fn), "tensor_peak_bytes": C.tensor_peak_bytes(fn)}

    big = cells[-1]
    worst_core = max(c["ratio_vs_ppo"]["rank_core"] for c in cells)
    payload = {
        "benchmark": "policy_loss", "quick": a.quick, "machine": info, "load_start": load_start,
        "load_end": C.load(), "threads": 1, "repeats": repeats, "num_ranks": K,
        "cells": cells, "memory": memory,
        "largest": {"batch": big["batch"], "length": big["length"], "ratio_vs_ppo": big["ratio_vs_ppo"]},
        "worst_ratio_rank_core": worst_core,
        "worst_ratio_rank_openrlhf": max(c["ratio_vs_ppo"]["rank_openrlhf"] for c in cells),
        "worst_ratio_rank_openrlhf_stock": max(c["ratio_vs_ppo"]["rank_openrlhf_stock"] for c in cells),
        "target_ratio": TARGET, "all_finite": all_finite,
        "wrapper_matches_core": all(c["wrapper_matches_core"] for c in cells),
    }
    payload["target_met_core_largest"] = big["ratio_vs_ppo"]["rank_core"] <= TARGET
    payload["target_met_openrlhf_largest"] = big["ratio_vs_ppo"]["rank_openrlhf"] <= TARGET
    path = C.write_json("policy_loss", payload, a.out, a.quick)

    names = list(cand)
    print()
    print(f"Policy loss forward+backward, 1 thread, median of {repeats} interleaved repeats; "
          f"load {load_start} -> {payload['load_end']}")
    print(C.table(["B", "T", "tokens", "ppo ms"] + [f"{n} / ppo" for n in names[1:]],
                  [[c["batch"], c["length"], c["tokens"], f"{c['ms']['ppo']:.2f}"]
                   + [f"{c['ratio_vs_ppo'][n]:.2f}x" for n in names[1:]] for c in cells]))
    print(f"peak memory at {memory['cell'][0]}x{memory['cell'][1]} (MiB, python / tensors): " + "; ".join(
        f"{n} {C.mib(memory[n]['python_peak_bytes'])} / {C.mib(memory[n]['tensor_peak_bytes'])}" for n in names))
    print(f"target <= {TARGET}x of ppo at {big['batch']}x{big['length']}: rank_core "
          f"{big['ratio_vs_ppo']['rank_core']:.2f}x ({'MET' if payload['target_met_core_largest'] else 'MISSED'}), "
          f"rank_openrlhf {big['ratio_vs_ppo']['rank_openrlhf']:.2f}x "
          f"({'MET' if payload['target_met_openrlhf_largest'] else 'MISSED'}); worst over the grid: rank_core "
          f"{worst_core:.2f}x, rank_openrlhf {payload['worst_ratio_rank_openrlhf']:.2f}x")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
