"""Token -> rank segmentation (micro benchmark): vectorised ``rank_ids`` vs a per-token ``tokenizer.decode`` loop.

    python3 benchmarks/segmentation.py            # grid B in {1, 8, 64} x T in {128, 512, 1024}
    python3 benchmarks/segmentation.py --quick    # smoke run (seconds)

Tokenizer: SmolLM2-135M-Instruct's real tokenizer (49,152 tokens, offline cache). Token ids: the 100 shipped
Reddit-v2 SFT lists tokenised, joined by "\\n" (long rows run into the overflow), cut to a random length in
[T/2, T] ending with EOS, right-padded (mask 0).

Candidates, timed interleaved in the same run, one torch thread:
* ``ours``: ``rank_ids(ids, mask, table)`` with the once-per-tokenizer ``newline_counts`` table (cached; its build
  time is measured separately and reported amortised);
* ``decode_loop`` (the baseline, target >= 300x): for each masked token, ``tokenizer.decode([id])`` and count the
  "\\n" before it -- the obvious implementation;
* ``plugin_path`` (extra, informative): ``rank_grpo_plugin.openrlhf.estimator.action_rank_ids(ids, mask, tokenizer)``,
  the call the OpenRLHF integration makes on every experience and every policy-loss micro-batch: the same
  ``rank_ids`` plus its per-call table lookup (``len(tokenizer)`` and the cached ``newline_counts``);
* ``rust_decode_loop`` (extra, informative): the same loop calling the Rust ``tokenizers`` backend directly,
  i.e. without transformers' Python wrapper -- the fastest a per-token decode loop can be.

Every grid point asserts that all candidates return identical rank ids. Writes benchmarks/results/segmentation.json.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TARGET = 300.0


def _decode_loop(decode, options, token_ids, mask):
    """Rank of a token = number of "\\n" that ``decode([id], **options)`` yields for the masked tokens before it;
    -1 off the mask."""
    import torch

    out = []
    for ids_row, m_row in zip(token_ids.tolist(), mask.tolist()):
        n, row = 0, []
        for t, m in zip(ids_row, m_row):
            if not m:
                row.append(-1)
                continue
            row.append(n)
            n += decode([t], **options).count("\n")
        out.append(row)
    return torch.tensor(out, dtype=torch.long)


def decode_loop(tokenizer, token_ids, mask):
    """Reference: the loop through the transformers tokenizer's ``decode``."""
    return _decode_loop(tokenizer.decode, {"skip_special_tokens": False, "clean_up_tokenization_spaces": False},
                        token_ids, mask)


def rust_decode_loop(backend, token_ids, mask):
    """Same loop on the Rust ``tokenizers.Tokenizer`` (no transformers wrapper)."""
    return _decode_loop(backend.decode, {"skip_special_tokens": False}, token_ids, mask)


def main(argv=None) -> dict:
    p = C.grid_parser(__doc__, repeats=5)
    p.add_argument("--slow-max-rows", type=int, default=None,
                   help="time the decode loops on at most this many rows and scale per row (identity is still "
                        "checked on the full batch); default: time every row")
    a = p.parse_args(argv)
    batches = a.batches or ([2] if a.quick else [1, 8, 64])
    lengths = a.lengths or ([64, 256] if a.quick else [128, 512, 1024])
    repeats = a.repeats or (2 if a.quick else 5)

    import torch

    torch.set_num_threads(1)
    from rank_grpo_plugin import ranks as R
    from rank_grpo_plugin.openrlhf.estimator import action_rank_ids

    info = C.machine()
    load_start = C.load()
    tok = C.smollm2_tokenizer()
    backend = tok.backend_tokenizer
    rows = C.reddit_rows()
    if a.quick:
        rows = rows[:10]

    # ---- the once-per-tokenizer table, built cold (cache cleared) a few times
    table_times = []
    for _ in range(1 if a.quick else 3):
        R._TABLE_CACHE.pop(tok, None)
        t0 = time.perf_counter()
        table = R.newline_counts(tok)
        table_times.append(time.perf_counter() - t0)
    table_s = sorted(table_times)[len(table_times) // 2]
    lookups = []
    for _ in range(5):
        t0 = time.perf_counter()
        R.newline_counts(tok)  # cached lookup, as every later call (still asks the tokenizer for its size)
        lookups.append(time.perf_counter() - t0)
    cached_lookup_s = sorted(lookups)[2]
    t0 = time.perf_counter()
    for _ in range(5):
        len(tok)
    len_tokenizer_s = (time.perf_counter() - t0) / 5

    cells = []
    all_identical = True
    for b in batches:
        for t in lengths:
            ids, mask, _ = C.token_batch(tok, rows, b, t, seed=b * 10_007 + t)
            n_tok = int(mask.sum())
            fast = R.rank_ids(ids, mask, table)
            slow = decode_loop(tok, ids, mask)
            rust = rust_decode_loop(backend, ids, mask)
            plug = action_rank_ids(ids, mask, tok)
            identical = bool(torch.equal(fast, slow) and torch.equal(fast, rust) and torch.equal(fast, plug))
            all_identical &= identical
            if not identical:
                bad = (fast != slow).nonzero()[:5].tolist()
                raise AssertionError(f"rank ids differ at B={b} T={t}, first positions {bad}")
            sub = b if a.slow_max_rows is None else max(1, min(b, a.slow_max_rows))
            ids_s, mask_s = ids[:sub], mask[:sub]
            scale = (n_tok / max(1, int(mask_s.sum()))) if sub < b else 1.0
            cand = {
                "ours": lambda: R.rank_ids(ids, mask, table),
                "decode_loop": lambda: decode_loop(tok, ids_s, mask_s),
                "rust_decode_loop": lambda: rust_decode_loop(backend, ids_s, mask_s),
                "plugin_path": lambda: action_rank_ids(ids, mask, tok),
            }
            inner = {"ours": C.calls_for(cand["ours"], 0.02), "plugin_path": C.calls_for(cand["plugin_path"], 0.05)}
            res = C.interleaved(cand, repeats, inner)
            for name in ("decode_loop", "rust_decode_loop"):  # scale a row subset up to the full batch (per token)
                res[name]["samples"] = [s * scale for s in res[name]["samples"]]
                res[name]["median_s"] *= scale
                res[name]["min_s"] *= scale
            cell = {
                "batch": b, "length": t, "tokens": n_tok, "identical": identical,
                "slow_rows_timed": sub, "slow_scaled_from_subset": sub < b,
                "ours_ms": res["ours"]["median_s"] * 1e3,
                "decode_loop_ms": res["decode_loop"]["median_s"] * 1e3,
                "rust_decode_loop_ms": res["rust_decode_loop"]["median_s"] * 1e3,
                "speedup_vs_decode": C.paired_ratio(res, "decode_loop", "ours"),
                "speedup_vs_rust_decode": C.paired_ratio(res, "rust_decode_loop", "ours"),
                "plugin_path_ms": res["plugin_path"]["median_s"] * 1e3,
                "speedup_plugin_path_vs_decode": C.paired_ratio(res, "decode_loop", "plugin_path"),
                "ours_inner_calls": inner["ours"],
                "load": C.load(),
            }
            cells.append(cell)
            print(f"  B={b:3d} T={t:5d}: ours {cell['ours_ms']:.3f} ms, decode loop {cell['decode_loop_ms']:.1f} ms "
                  f"-> {cell['speedup_vs_decode']:.0f}x (load {cell['load'][0]})", flush=True)

    # ---- memory on the largest cell
    b, t = max(batches), max(lengths)
    ids, mask, _ = C.token_batch(tok, rows, b, t, seed=b * 10_007 + t)
    sub = b if a.slow_max_rows is None else max(1, min(b, a.slow_max_rows))
    memory = {
        "cell": [b, t],
        "ours": {"python_peak_bytes": C.python_peak_bytes(lambda: R.rank_ids(ids, mask, table)),
                 "tensor_peak_bytes": C.tensor_peak_bytes(lambda: R.rank_ids(ids, mask, table))},
        "decode_loop": {"python_peak_bytes": C.python_peak_bytes(lambda: decode_loop(tok, ids[:sub], mask[:sub])),
                        "tensor_peak_bytes": C.tensor_peak_bytes(lambda: decode_loop(tok, ids[:sub], mask[:sub])),
                        "rows": sub},
        "table": {"python_peak_bytes": None, "tensor_bytes": int(table.numel() * table.element_size())},
    }
    R._TABLE_CACHE.pop(tok, None)
    memory["table"]["python_peak_bytes"] = C.python_peak_bytes(lambda: R.newline_counts(tok))
    R.newline_counts(tok)

    big = max(cells, key=lambda c: (c["batch"] * c["length"], c["batch"]))
    per_call_saving = (big["decode_loop_ms"] - big["ours_ms"]) / 1e3
    payload = {
        "benchmark": "segmentation", "quick": a.quick, "machine": info,
        "load_start": load_start, "load_end": C.load(), "threads": 1, "repeats": repeats,
        "tokenizer": {"name": "SmolLM2-135M-Instruct", "size": len(tok), "class": type(tok).__name__},
        "table": {"build_s_median": table_s, "build_s": table_times, "cached_lookup_s": cached_lookup_s,
                  "len_tokenizer_s": len_tokenizer_s,
                  "tokens_with_newline": int((table > 0).sum())},
        "cells": cells,
        "largest": {
            "batch": big["batch"], "length": big["length"],
            "speedup_vs_decode": big["speedup_vs_decode"],
            "speedup_vs_rust_decode": big["speedup_vs_rust_decode"],
            "speedup_plugin_path_vs_decode": big["speedup_plugin_path_vs_decode"],
            "speedup_first_call_incl_table": big["decode_loop_ms"] / (big["ours_ms"] + table_s * 1e3),
            "table_amortised_after_calls": table_s / per_call_saving if per_call_saving > 0 else None,
        },
        "min_speedup_vs_decode": min(c["speedup_vs_decode"] for c in cells),
        "target_speedup": TARGET,
        "all_identical": all_identical,
        "memory": memory,
    }
    payload["target_met"] = payload["largest"]["speedup_vs_decode"] >= TARGET
    path = C.write_json("segmentation", payload, a.out, a.quick)

    print()
    print(f"Segmentation: rank_ids vs per-token decode loop -- SmolLM2 tokenizer ({len(tok)} tokens), 1 thread, "
          f"median of {repeats} interleaved repeats; load {load_start} -> {payload['load_end']}")
    print(C.table(
        ["B", "T", "tokens", "ours ms", "decode loop ms", "speed-up", "rust decode loop ms", "speed-up (rust)",
         "plugin path ms", "speed-up (plugin path)", "identical"],
        [[c["batch"], c["length"], c["tokens"], f"{c['ours_ms']:.3f}",
          f"{c['decode_loop_ms']:.1f}" + ("*" if c["slow_scaled_from_subset"] else ""),
          f"{c['speedup_vs_decode']:.0f}x", f"{c['rust_decode_loop_ms']:.1f}",
          f"{c['speedup_vs_rust_decode']:.0f}x", f"{c['plugin_path_ms']:.2f}",
          f"{c['speedup_plugin_path_vs_decode']:.0f}x", c["identical"]] for c in cells]))
    if any(c["slow_scaled_from_subset"] for c in cells):
        print(f"* decode loops timed on {a.slow_max_rows} row(s) and scaled per token to the full batch")
    lg = payload["largest"]
    print(f"newline table (once per tokenizer): {table_s * 1e3:.0f} ms cold, cached lookup {cached_lookup_s * 1e3:.2f} ms "
          f"(len(tokenizer) alone {len_tokenizer_s * 1e3:.2f} ms); "
          f"at {lg['batch']}x{lg['length']}: {lg['speedup_vs_decode']:.0f}x per call, "
          f"{lg['speedup_first_call_incl_table']:.1f}x on a first call that also builds the table; the table pays off "
          f"after {lg['table_amortised_after_calls'] or float('nan'):.2f} call(s)")
    print(f"target >= {TARGET:.0f}x at {lg['batch']}x{lg['length']}: "
          f"{'MET' if payload['target_met'] else 'MISSED'} ({lg['speedup_vs_decode']:.0f}x); "
          f"all grid points identical: {all_identical}")
    m = memory
    print(f"peak memory at {b}x{t} (MiB): ours python {C.mib(m['ours']['python_peak_bytes'])}, tensors "
          f"{C.mib(m['ours']['tensor_peak_bytes'])}; decode loop ({sub} rows) python "
          f"{C.mib(m['decode_loop']['python_peak_bytes'])}, tensors {C.mib(m['decode_loop']['tensor_peak_bytes'])}; "
          f"table build python {C.mib(m['table']['python_peak_bytes'])}, table {C.mib(m['table']['tensor_bytes'])}")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
