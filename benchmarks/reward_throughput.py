"""Catalog reward throughput: ``catalog_hits`` (and the OpenRLHF ``reward_func`` path) against three baselines.

    python3 benchmarks/reward_throughput.py           # 100 Reddit-v2 sample rows x 11 variants, real catalog
    python3 benchmarks/reward_throughput.py --quick   # 4 rows (seconds)

Data: the 100 Reddit-v2 sample rows (``rank_grpo_plugin/resources/reddit_v2/sample.jsonl``) and the 7,404-item
catalog. Each row's SFT completion is scored as is and in perturbed variants: shuffled lines, every year moved by
+-1 / +-2 / +-3, seen titles inserted (and a ground-truth title made "seen"), out-of-catalog titles, ground-truth
items injected with year offsets -3..3 and duplicates, and malformed/markup lines (preamble, blanks, numbering,
bold, quotes, typographic quotes, case, trailing text, bad years, > K lines).

Candidates (one thread; chunk by chunk, every repeat runs each candidate once, the order rotating; a chunk's time
is the median of its repeats; the strawman runs once per chunk):
* ``ours``: ``rank_grpo_plugin.recsys.match.catalog_hits`` with a loaded ``Catalog``;
* ``ours_one_pass``: ``catalog_hits_and_flags`` (hits and per-line in-catalog flags): it parses every line, where
  ``catalog_hits`` skips the lines in which no ground-truth title's longest word occurs;
* ``reward_func``: the OpenRLHF reward-function path (``rank_grpo_plugin/openrlhf/reward.py``): JSON label
  parsing, completion extraction from the query, hits and per-line in-catalog flags in one pass, NDCG, tensors;
* ``plain_indexed`` (fair baseline): the matcher a competent user would write in ~30 lines: one compiled regex
  for ``Title (YYYY)`` after optional numbering/bullet and emphasis/quotes, NFKC + casefold + whitespace
  normalisation, a normalised-title -> years dict of the catalog built once, the same seen / +-2-year /
  once-per-ground-truth rules. Its parser is simpler than ours (no typographic quotes, no nested wrappers), so its
  hits differ on a few hostile lines; agreement is reported (and asserted on the unperturbed rows);
* ``official`` (fair baseline): the official Rank-GRPO matching semantics, written here from its documented
  behaviour (not its code): blank and unparsable lines dropped before matching, then seen exclusion, the
  in-catalog check and the +-2-year ground-truth match over the first K remaining items. It uses our line forms
  and title normalisation written plainly (the regex parser of ``_reference_matchers.py``, a catalog dict built
  once), so its output must equal ``catalog_hits`` on the completion with its unparsable lines removed (asserted);
* ``strawman`` (not a fair baseline: the scale of what an index saves): ``_reference_matchers.reference_hits``, a
  plain implementation of our semantics with no index at all -- per line, a linear scan over the raw catalog rows
  that re-normalises every catalog title, seen titles re-normalised per line, ground truth as a plain list. No one
  would write it.

``ours``, ``ours_one_pass`` and ``reward_func`` must return identical hits to the strawman (an independent
implementation of the same rank-aligned rules) on every completion (asserted). Targets: ``ours`` >= 5x
``official`` and >= 1x ``plain_indexed``.
"""
from __future__ import annotations

import json
import random
import re
import statistics
import sys
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from _reference_matchers import K, TOL, ref_normalize, ref_parse, reference_hits  # noqa: E402

from rank_grpo_plugin.data import completion_text  # noqa: E402

# ----------------------------------------------------------------------------------------- plain indexed
_PLAIN_LINE = re.compile(
    r"^\s*(?:(?:\d{1,3}[.)]|#\d{1,3}|[-*+\u2022])\s+)?[*_\"']*(.+?)[*_\"']*\s*\(\s*(\d{4})\s*\)[*_\"']*\s*$")


def plain_norm(title: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", title).casefold().split())


def plain_index(catalog_rows):
    index = {}
    for r in catalog_rows:
        index.setdefault(plain_norm(r["title"]), set()).add(int(r["year"]))
    return index


def indexed_match(items, groundtruth, seen_titles, index, norm, k=K, tol=TOL):
    """The matching tail both fair baselines share: ``items`` are (rank, title, year) of parsed lines; an item
    hits when its normalised title is not seen, (title, year) is in ``index`` (normalised title -> years) and an
    unmatched ground-truth item with that title is within +-tol years (tried 0, +1, -1, ...)."""
    open_gt = {}
    for t, y in groundtruth:
        open_gt.setdefault(norm(t), []).append(int(y))
    seen = {norm(s) for s in seen_titles}
    offsets = [0] + [d for e in range(1, tol + 1) for d in (e, -e)]
    hits = [0] * k
    for j, title, year in items:
        key = norm(title)
        if key in seen or year not in index.get(key, ()):
            continue
        years = open_gt.get(key)
        if not years:
            continue
        for d in offsets:
            if year + d in years:
                years.remove(year + d)
                hits[j] = 1
                break
    return hits


def plain_hits(completion, groundtruth, seen_titles, index, k=K, tol=TOL):
    """What a competent user writes: one regex per line, a normalised-title dict, the same matching rules."""
    items = [(j, m.group(1), int(m.group(2)))
             for j, m in enumerate(map(_PLAIN_LINE.match, completion.split("\n")[:k])) if m is not None]
    return indexed_match(items, groundtruth, seen_titles, index, plain_norm, k, tol)


# ----------------------------------------------------------------------------------------- official semantics
def official_hits(completion, groundtruth, seen_titles, index, k=K, tol=TOL):
    """The official semantics: blank and unparsable lines are dropped first, then the first k items are
    matched (not seen, in the catalog, an unmatched ground-truth item within +-tol years). Entry j is the
    j-th *parsed* item, so a dropped line moves every later item's credit up one rank."""
    items = []
    for line in completion.split("\n"):
        if line.strip():
            item = ref_parse(line)
            if item is not None:
                items.append(item)
                if len(items) == k:
                    break
    return indexed_match([(j, t, y) for j, (t, y) in enumerate(items)], groundtruth, seen_titles, index,
                         ref_normalize, k, tol)


# ----------------------------------------------------------------------------------------- variants
_YEAR_END = re.compile(r"\((\d{4})\)\s*$")


def _shift_years(lines, rng, d):
    out = []
    for line in lines:
        s = d * rng.choice((-1, 1))
        out.append(_YEAR_END.sub(lambda m: f"({int(m.group(1)) + s})", line))
    return out


def variants(row, rng, catalog_rows):
    """(name, completion, groundtruth, seen) tuples for one row."""
    text = completion_text(row["completion"])
    gt = [list(p) for p in row["groundtruth_with_release_year"]]
    seen = list(row["seen_titles"])
    lines = text.split("\n")
    out = [("original", text, gt, seen)]
    sh = lines[:]
    rng.shuffle(sh)
    out.append(("shuffled", "\n".join(sh), gt, seen))
    for d in (1, 2, 3):
        out.append((f"year_pm{d}", "\n".join(_shift_years(lines, rng, d)), gt, seen))
    # seen titles inserted, and one ground-truth title made "seen"
    l2 = lines[:]
    for t in seen[:5]:
        years = [r["year"] for r in catalog_rows if r["title"] == t] or [2000]
        l2.insert(rng.randrange(len(l2) + 1), f"{t} ({years[0]})")
    seen2 = seen + ([gt[0][0]] if gt else [])
    if gt:
        l2.insert(0, f"{gt[0][0]} ({gt[0][1]})")
    out.append(("seen", "\n".join(l2[:K + 3]), gt, seen2))
    # out of catalog: made-up titles and real titles with a year the catalog does not list
    l3 = lines[:]
    for i in range(0, len(l3), 3):
        l3[i] = f"The Unmade Film Number {rng.randrange(10 ** 6)} ({rng.randrange(1950, 2024)})"
    for i in range(1, len(l3), 4):
        r = catalog_rows[rng.randrange(len(catalog_rows))]
        l3[i] = f"{r['title']} (1888)"
    out.append(("out_of_catalog", "\n".join(l3), gt, seen))
    # ground truth injected with year offsets -3..3, with duplicates
    l4 = lines[:]
    for t, y in gt[:6] + gt[:2]:
        yr = int(y) + rng.randint(-3, 3)
        l4[rng.randrange(len(l4))] = f"{t} ({yr})"
    l4.insert(rng.randrange(len(l4)), f"{gt[0][0]} ({gt[0][1]})" if gt else "")
    out.append(("gt_injected", "\n".join(l4), gt, seen))
    # ground truth at exact years (many hits), in markup
    l5 = lines[:]
    for n, (t, y) in enumerate(gt[:8]):
        fmt = [f"{t} ({y})", f"{n + 1}. **{t} ({y})**", f"- *{t}* ({y})", f'"{t}" ({y})',
               f"{t.upper()}  ({y})", f"  {t.replace(chr(39), chr(8217))} ( {y} )"][n % 6]
        l5[min(len(l5) - 1, 2 * n)] = fmt
    out.append(("gt_markup", "\n".join(l5), gt, seen))
    # malformed lines
    l6 = ["Here are 20 movies you might enjoy:", ""]
    for n, line in enumerate(lines):
        m = _YEAR_END.search(line)
        title = line[: m.start()].strip() if m else line
        year = m.group(1) if m else "2000"
        l6.append([line, f"{n + 1}) {line}", f"{title} ({year}) - a classic", f"{title} ({year[:2]})",
                   f"{title} [{year}]", title, f"#{n + 1} {line}", f"**{line}**", f"{line}\r",
                   unicodedata.normalize("NFKD", f"\uff08{line}")][n % 10])
    l6 += ["", "Enjoy!"]
    out.append(("malformed", "\n".join(l6), gt, seen))
    # long: more than K lines (overflow is ignored)
    out.append(("overflow", "\n".join(lines + lines[::-1]), gt, seen))
    return out


# ----------------------------------------------------------------------------------------- main
BASELINES = ("plain_indexed", "official", "strawman")
CANDIDATES = ("ours", "ours_one_pass", "reward_func") + BASELINES
OURS = ("ours", "ours_one_pass", "reward_func")
TARGETS = {"official": 5.0, "plain_indexed": 1.0}  # ours vs baseline: speed-up required


def main(argv=None) -> dict:
    p = C.parser(__doc__, quick="4 rows, 1 repeat (smoke run)")
    p.add_argument("--rows", type=int, default=None, help="number of sample rows (default all 100)")
    p.add_argument("--repeats", type=int, default=None, help="repeats of the fast candidates per chunk (default 5)")
    p.add_argument("--chunk", type=int, default=50, help="completions per interleaved chunk")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from rank_grpo_plugin.options import RankGRPOOptions
    from rank_grpo_plugin.openrlhf.reward import hit_keys, reward_func
    from rank_grpo_plugin.recsys.catalog import Catalog
    from rank_grpo_plugin.recsys.match import catalog_hits, catalog_hits_and_flags
    from rank_grpo_plugin.recsys.parse import parse_line

    info = C.machine()
    load_start = C.load()
    catalog_path = C.REDDIT / "catalog.jsonl"
    t0 = time.perf_counter()
    catalog = Catalog.from_file(catalog_path)
    catalog_load_s = time.perf_counter() - t0
    with open(catalog_path, encoding="utf-8") as f:
        catalog_rows = [json.loads(line) for line in f if line.strip()]
    catalog_pairs = [(r["title"], r["year"]) for r in catalog_rows]  # raw years: the strawman parses them per scan
    build_s = {}
    t0 = time.perf_counter()
    p_index = plain_index(catalog_rows)
    build_s["plain_indexed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    o_index = {}
    for r in catalog_rows:
        o_index.setdefault(ref_normalize(r["title"]), set()).add(int(r["year"]))
    build_s["official"] = time.perf_counter() - t0

    rows = C.reddit_rows()
    n_rows = a.rows or (4 if a.quick else len(rows))
    repeats = a.repeats or (1 if a.quick else 5)
    rng = random.Random(0)
    items = []
    for row in rows[:n_rows]:
        items += variants(row, rng, catalog_rows)
    kinds = sorted({v[0] for v in items})

    # OpenRLHF reward_func inputs: query = prompt + completion + EOS text, label = JSON
    opts = RankGRPOOptions(catalog=str(catalog_path), num_ranks=K, year_tolerance=TOL)
    prompts = ["<|im_start|>user\nRecommend 20 movies.<|im_end|>\n<|im_start|>assistant\n"] * len(items)
    queries = [pr + c + "<|im_end|>" for pr, (_, c, _, _) in zip(prompts, items)]
    labels = [json.dumps({"groundtruth": g, "seen": s}) for (_, _, g, s) in items]
    keys = hit_keys(K)

    def run_reward_func(lo, hi):
        out = reward_func(queries[lo:hi], prompts[lo:hi], labels[lo:hi], options=opts)
        cols = torch.stack([out["extra_logs"][key] for key in keys], dim=1)
        return [[int(x) for x in r] for r in cols.tolist()]

    runners = {
        "ours": lambda lo, hi: [catalog_hits(c, g, s, catalog, k=K, year_tolerance=TOL) for _, c, g, s in items[lo:hi]],
        "ours_one_pass": lambda lo, hi: [catalog_hits_and_flags(c, g, s, catalog, k=K, year_tolerance=TOL)[0]
                                         for _, c, g, s in items[lo:hi]],
        "reward_func": run_reward_func,
        "plain_indexed": lambda lo, hi: [plain_hits(c, g, s, p_index) for _, c, g, s in items[lo:hi]],
        "official": lambda lo, hi: [official_hits(c, g, s, o_index) for _, c, g, s in items[lo:hi]],
        "strawman": lambda lo, hi: [reference_hits(c, g, s, catalog_pairs) for _, c, g, s in items[lo:hi]],
    }

    run_reward_func(0, 1)  # loads the catalog into reward.py's per-process cache (once per process in training)
    n = len(items)
    chunks = [(lo, min(n, lo + a.chunk)) for lo in range(0, n, a.chunk)]
    times = {name: 0.0 for name in CANDIDATES}
    chunk_ratios = {b: [] for b in BASELINES}
    mismatches = []
    plain_agree = {kd: 0 for kd in kinds}
    hits_total = 0
    for ci, (lo, hi) in enumerate(chunks):
        results, samples = {}, {name: [] for name in CANDIDATES}
        for rep in range(repeats):  # candidates interleaved, the order rotating every repeat
            r = ci * repeats + rep
            for name in C.rotated(CANDIDATES, r):
                if name == "strawman" and rep > 0:
                    continue  # once per chunk (it takes ~1,000x longer)
                t0 = time.perf_counter()
                results[name] = runners[name](lo, hi)
                samples[name].append(time.perf_counter() - t0)
        per = {name: statistics.median(v) for name, v in samples.items()}
        for name in CANDIDATES:
            times[name] += per[name]
        for b in BASELINES:
            chunk_ratios[b].append(per[b] / per["ours"])
        for i in range(hi - lo):
            kind, completion, gt, seen = items[lo + i]
            want = results["strawman"][i]
            for name in OURS:
                if results[name][i] != want:
                    mismatches.append({"index": lo + i, "variant": kind, "candidate": name, "want": want,
                                       "got": results[name][i]})
            # official semantics = ours on the completion with its unparsable lines removed
            kept = "\n".join(line for line in completion.split("\n") if parse_line(line) is not None)
            want_off = catalog_hits(kept, gt, seen, catalog, k=K, year_tolerance=TOL)
            if results["official"][i] != want_off:
                mismatches.append({"index": lo + i, "variant": kind, "candidate": "official", "want": want_off,
                                   "got": results["official"][i]})
            agree = results["plain_indexed"][i] == want
            plain_agree[kind] += agree
            if kind == "original" and not agree:
                mismatches.append({"index": lo + i, "variant": kind, "candidate": "plain_indexed", "want": want,
                                   "got": results["plain_indexed"][i]})
        hits_total += sum(map(sum, results["ours"]))
        print(f"  chunk {ci + 1}/{len(chunks)}: ours {per['ours'] / (hi - lo) * 1e6:.0f} us/completion, "
              + ", ".join(f"{b} {per[b] / per['ours']:.2f}x" for b in BASELINES) + f" (load {C.load()[0]})",
              flush=True)
    if mismatches:
        raise AssertionError(f"{len(mismatches)} unexpected differences, first: {mismatches[:3]}")

    # per-variant hit counts (a sanity view of what was exercised)
    by_kind = {kd: {"completions": 0, "hits": 0, "plain_indexed_identical": plain_agree[kd]} for kd in kinds}
    for (kd, c, g, s) in items:
        by_kind[kd]["completions"] += 1
        by_kind[kd]["hits"] += sum(catalog_hits(c, g, s, catalog, k=K, year_tolerance=TOL))

    # memory: one pass over the first chunk (10 completions in --quick mode)
    lo, hi = chunks[0]
    if a.quick:
        hi = min(hi, lo + 10)
    memory = {name: {"python_peak_bytes": C.python_peak_bytes(lambda f=runners[name]: f(lo, hi)),
                     "tensor_peak_bytes": C.tensor_peak_bytes(lambda f=runners[name]: f(lo, hi))}
              for name in CANDIDATES}
    memory["completions"] = hi - lo
    memory["catalog_load_python_peak_bytes"] = C.python_peak_bytes(lambda: Catalog.from_file(catalog_path))

    cps = {name: n / t for name, t in times.items()}
    speedup = {b: times[b] / times["ours"] for b in BASELINES}
    payload = {
        "benchmark": "reward_throughput", "quick": a.quick, "machine": info,
        "load_start": load_start, "load_end": C.load(), "threads": 1, "repeats_fast": repeats,
        "rows": n_rows, "completions": n, "variants": by_kind, "total_hits": hits_total,
        "catalog_items": len(catalog), "catalog_load_s": catalog_load_s, "baseline_index_build_s": build_s,
        "seconds_total": times, "completions_per_s": cps,
        "speedup_ours_vs": speedup,
        "speedup_reward_func_vs": {b: times[b] / times["reward_func"] for b in BASELINES},
        "chunk_speedup_ours_vs_median": {b: statistics.median(r) for b, r in chunk_ratios.items()},
        "reward_func_overhead_vs_ours": times["reward_func"] / times["ours"],
        "one_pass_overhead_vs_ours": times["ours_one_pass"] / times["ours"],
        "plain_indexed_identical": sum(plain_agree.values()),
        "targets_ours_vs": TARGETS, "identical": not mismatches, "memory": memory,
    }
    payload["target_met"] = all(speedup[b] >= t for b, t in TARGETS.items())
    path = C.write_json("reward_throughput", payload, a.out, a.quick)

    print()
    print(f"Catalog reward throughput -- {n} completions ({n_rows} rows x {len(kinds)} variants), "
          f"{len(catalog)}-item catalog, 1 thread; load {load_start} -> {payload['load_end']}")
    print(C.table(["candidate", "completions/s", "us/completion", "ours is x faster", "vs plain_indexed",
                   "vs official", f"python peak MiB ({hi - lo} completions)"],
                  [[name, f"{cps[name]:.0f}", f"{times[name] / n * 1e6:.0f}",
                    "-" if name in OURS else f"{times[name] / times['ours']:.2f}x",
                    f"{times['plain_indexed'] / times[name]:.2f}x", f"{times['official'] / times[name]:.2f}x",
                    C.mib(memory[name]["python_peak_bytes"])]
                   for name in CANDIDATES]))
    print("per-chunk ratio baseline/ours, median over %d chunks: " % len(chunks)
          + ", ".join(f"{b} {v:.2f}x" for b, v in payload["chunk_speedup_ours_vs_median"].items())
          + f"; ours_one_pass costs {payload['one_pass_overhead_vs_ours']:.2f}x and reward_func "
          f"{payload['reward_func_overhead_vs_ours']:.2f}x catalog_hits")
    print(f"catalog load {catalog_load_s * 1e3:.0f} ms (once per process; python peak "
          f"{C.mib(memory['catalog_load_python_peak_bytes'])} MiB); ours, ours_one_pass and reward_func identical "
          "to the strawman, "
          f"official identical to ours on the compacted lists, on all {n} completions: {payload['identical']} "
          f"({hits_total} hits); plain_indexed identical on {payload['plain_indexed_identical']}/{n}")
    print("hits per variant (plain_indexed identical): " + ", ".join(
        f"{kd} {v['hits']}/{v['completions']} ({v['plain_indexed_identical']})" for kd, v in by_kind.items()))
    print("targets (ours vs baseline): " + ", ".join(f">= {t:g}x {b}: {speedup[b]:.2f}x" for b, t in TARGETS.items())
          + f" -> {'MET' if payload['target_met'] else 'MISSED'}")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
