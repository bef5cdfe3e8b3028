"""``rank-grpo report``: compare evaluation runs; also the Markdown/PNG writers ``evaluate`` uses."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from ..files import atomic_paths, write_atomic
from .common import CliError


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("report", help="compare evaluation runs (metrics.json files)",
                       description="Print a Markdown table comparing runs and optionally write it with a "
                                   "side-by-side per-rank hit-rate plot.")
    p.add_argument("runs", nargs="+", help="metrics.json files written by 'rank-grpo evaluate' (or their dirs)")
    p.add_argument("--names", nargs="*", help="display names (default: each run's name)")
    p.add_argument("--out", help="directory for report.md and per_rank.png")
    p.add_argument("--paired", metavar="METRIC",
                   help="also compare the runs row by row on METRIC (e.g. rank/ndcg@20) from their rows.jsonl "
                        "(evaluate --save-rows): runs sharing a --names name are pooled (seeds of one arm), the "
                        "first name is the baseline; mean difference with a bootstrap CI over conversations (or "
                        "evaluate's --group-field groups)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples for --paired (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed for --paired (default 0)")
    p.set_defaults(func=run)


def load_run(path: str) -> Dict:
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except OSError as e:
        raise CliError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise CliError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(run, dict) or "summary" not in run or "metrics" not in run.get("summary", {}):
        raise CliError(f"{path}: not a metrics.json from 'rank-grpo evaluate' (no summary.metrics)")
    run.setdefault("name", os.path.basename(os.path.dirname(os.path.abspath(path))))
    return run


def _f(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4f}"


def _cell(run: Dict, name: str) -> str:
    """A metric of a run: its mean, with ``± sd`` over samples when the run sampled several lists per prompt."""
    value = run["summary"]["metrics"].get(name)
    sd = (run.get("samples") or {}).get("metrics_sd", {}).get(name)
    return _f(value) if sd is None or value is None else f"{value:.4f} ± {sd:.4f}"


def summary_markdown(run: Dict) -> str:
    """One run: metrics per k in both protocols, then diagnostics."""
    s, cfg = run["summary"], run.get("config", {})
    m = s["metrics"]
    ks = cfg.get("ks") or sorted({int(n.split("@")[1]) for n in m})
    lines = [f"## {run.get('name', 'run')}", ""]
    src = cfg.get("model") or cfg.get("predictions") or "?"
    lines += [f"- outputs: `{src}`" + (f" (backend {cfg['backend']})" if cfg.get("backend") else ""),
              f"- data: `{cfg.get('data', '?')}`, catalog: `{cfg.get('catalog', '?')}`",
              f"- rows: {s['rows']} ({cfg.get('conversations', '?')} conversations, "
              f"mean ground truth {s['mean_groundtruth']:.2f})"]
    timing = run.get("timing") or {}
    if timing.get("generation_s") is not None:
        n = cfg.get("num_samples") or 1
        lines.append(f"- generation: {cfg.get('decoding', 'greedy')}, {timing['generation_s']:.1f}s for "
                     f"{cfg.get('conversations')} x {n} lists" + (" (metrics: mean ± sd over the samples)"
                                                                 if n > 1 else ""))
    elif (cfg.get("num_samples") or 1) > 1:
        lines.append(f"- lists: {cfg['num_samples']} per conversation, read from the file (metrics: mean ± sd over "
                     "the samples)")
    lines += ["", "| k | Recall@k (paper) | NDCG@k (paper) | Recall@k (rank-aligned) | NDCG@k (rank-aligned) |",
              "|---|---|---|---|---|"]
    for k in ks:
        lines.append(f"| {k} | {_cell(run, f'paper/recall@{k}')} | {_cell(run, f'paper/ndcg@{k}')} | "
                     f"{_cell(run, f'rank/recall@{k}')} | {_cell(run, f'rank/ndcg@{k}')} |")
    lines += ["", "| diagnostic | value |", "|---|---|",
              f"| format compliance (parsed / non-blank lines) | {s['format_rate']:.3f} |",
              f"| in-catalog rate (of parsed items) | {s['in_catalog_rate']:.3f} |",
              f"| duplicate rate (of parsed items) | {s['duplicate_rate']:.3f} |",
              f"| seen-item rate (of parsed items) | {s['seen_rate']:.3f} |",
              f"| lists with exactly {cfg.get('k', 20)} items | {s['exact_k_rate']:.3f} |",
              f"| mean parsed items / filtered length | {s['mean_items']:.2f} / {s['mean_filtered_length']:.2f} |",
              ""]
    hist = s.get("length_histogram", {})
    if hist:
        lines += ["List lengths (parsed items: lists): " + ", ".join(f"{k}: {v}" for k, v in hist.items()), ""]
    rates = s.get("per_rank_hit_rate", [])
    if rates:
        lines += ["Per-rank hit rate (rank-aligned), ranks 1..%d: " % len(rates)
                  + " ".join(f"{r:.3f}" for r in rates), ""]
    return "\n".join(lines)


def comparison_markdown(runs: Sequence[Dict], names: Sequence[str]) -> str:
    ks = sorted({int(n.split("@")[1]) for r in runs for n in r["summary"]["metrics"]})
    head = ["run", "rows"] + [f"R@{k}" for k in ks] + [f"N@{k}" for k in ks] + \
        [f"N@{ks[-1]} rank-aligned", "in-catalog", "format", "dup", "exact-K"]
    lines = ["Paper protocol (R = Recall, N = NDCG) unless marked rank-aligned; a ± is the sd over sampled lists.",
             "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r, name in zip(runs, names):
        s = r["summary"]
        cells = [name, str(s["rows"])] + [_cell(r, f"paper/recall@{k}") for k in ks] + \
            [_cell(r, f"paper/ndcg@{k}") for k in ks] + [_cell(r, f"rank/ndcg@{ks[-1]}"),
                                                          f"{s['in_catalog_rate']:.3f}", f"{s['format_rate']:.3f}",
                                                          f"{s['duplicate_rate']:.3f}", f"{s['exact_k_rate']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _row_values(path: str, metric: str) -> Tuple[List[Tuple[str, str]], List[float]]:
    """One run's rows.jsonl: each data row's (conversation, cluster) and ``metric``, the mean over the run's
    samples. The cluster is evaluate's --group-field value, else the conversation."""
    d = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    rows_path = os.path.join(d, "rows.jsonl")
    if not os.path.isfile(rows_path):
        raise CliError(f"{d}: no rows.jsonl for --paired; evaluate with --save-rows (a run's generations.jsonl "
                       f"can be rescored: rank-grpo evaluate --predictions {d}/generations.jsonl --save-rows ...)")
    by_sample: Dict[int, List[Tuple[Tuple[str, str], float]]] = {}
    with open(rows_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                value, sample = float(rec["metrics"][metric]), int(rec["sample"])
                ident = (rec["conversation"], rec.get("cluster", rec["conversation"]))
            except json.JSONDecodeError as e:
                raise CliError(f"{rows_path}: line {n}: not valid JSON: {e}") from None
            except (KeyError, TypeError, ValueError):
                known = sorted((rec.get("metrics") or {}) if isinstance(rec, dict) else {})
                raise CliError(f"{rows_path}: line {n}: no numeric metrics[{metric!r}] / conversation / sample (a "
                               f"rows.jsonl of an older evaluate?); metrics there: {', '.join(known) or 'none'}"
                               ) from None
            by_sample.setdefault(sample, []).append((ident, value))
    if not by_sample:
        raise CliError(f"{rows_path}: no rows")
    samples = [by_sample[k] for k in sorted(by_sample)]
    idents = [i for i, _ in samples[0]]
    if any([i for i, _ in rows] != idents for rows in samples[1:]):
        raise CliError(f"{rows_path}: its samples do not cover the same rows")
    return idents, [sum(rows[j][1] for rows in samples) / len(samples) for j in range(len(idents))]


def paired_markdown(paths: Sequence[str], names: Sequence[str], metric: str, resamples: int = 10_000,
                    seed: int = 0) -> str:
    """Row-by-row comparison of run groups (runs sharing a name are pooled: each row's metric is its mean over the
    group's runs and samples); every group against the first with :func:`paired_difference`."""
    from ..recsys.evaluation import paired_difference

    if len(set(names)) < 2:
        raise CliError("--paired needs runs of at least two groups (--names: the first name is the baseline)")
    groups: Dict[str, List[Tuple[str, List[Tuple[str, str]], List[float]]]] = {}
    for path, name in zip(paths, names):
        groups.setdefault(name, []).append((path, *_row_values(path, metric)))
    pooled = {}
    ref_path, ref_idents = paths[0], groups[names[0]][0][1]
    for name, runs in groups.items():
        for path, idents, _ in runs:
            if idents != ref_idents:
                raise CliError(f"--paired: {path} scored other rows than {ref_path} (conversations, their order "
                               "or their --group-field differ); compare evaluations of the same data")
        pooled[name] = [sum(vals[i] for _, _, vals in runs) / len(runs) for i in range(len(ref_idents))]
    base = names[0]
    clusters = [cl for _, cl in ref_idents]
    lines = [f"Paired by row on {metric}: each group against {base} ({len(groups[base])} run(s)); "
             f"{len(ref_idents)} rows of {len({c for c, _ in ref_idents})} conversations; 95 % bootstrap CI "
             f"resampling {len(set(clusters))} clusters (rows of one conversation, or of one --group-field value, "
             f"move together; {resamples} resamples, seed {seed})", "",
             f"| group | runs | {metric} | {base} | mean difference | 95 % CI | rows better / worse / tied |",
             "|---|---|---|---|---|---|---|"]
    for name in groups:
        if name == base:
            continue
        d = paired_difference(pooled[base], pooled[name], clusters, resamples=resamples, level=0.95, seed=seed)
        lines.append(f"| {name} | {len(groups[name])} | {d['mean_other']:.4f} | {d['mean_base']:.4f} | "
                     f"{d['mean_diff']:+.4f} | [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] | "
                     f"{d['better']} / {d['worse']} / {d['tied']} |")
    return "\n".join(lines) + "\n"


def plot_per_rank(runs: Sequence[Dict], names: Sequence[str], path: str) -> Optional[str]:
    """Grouped bars of per-rank hit rate (rank-aligned), one colour per run; None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[rank-grpo] matplotlib not installed: no PNG plot (pip install matplotlib)", file=sys.stderr)
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    n = len(runs)
    width = 0.8 / max(n, 1)
    for i, (r, name) in enumerate(zip(runs, names)):
        rates = r["summary"]["per_rank_hit_rate"]
        xs = [j + 1 + (i - (n - 1) / 2) * width for j in range(len(rates))]
        ax1.bar(xs, rates, width=width, label=name)
        fmt = r["summary"].get("per_rank_format_rate")
        if fmt:
            ax2.plot(range(1, len(fmt) + 1), fmt, marker="o", ms=3, label=name)
    ax1.set_xlabel("rank (line of the list)")
    ax1.set_ylabel("hit rate")
    ax1.set_title("Per-rank hit rate (rank-aligned)")
    ax1.set_xticks(range(1, len(runs[0]["summary"]["per_rank_hit_rate"]) + 1))
    k = len(runs[0]["summary"]["per_rank_hit_rate"])
    ax2.set_xticks(range(1, k + 1, 2 if k > 10 else 1))
    ax2.set_xlabel("rank (line of the list)")
    ax2.set_ylabel("share of lists")
    ax2.set_ylim(0, 1.05)
    ax2.set_title("Line parses as 'Title (Year)'")
    for ax in (ax1, ax2):
        ax.grid(axis="y", alpha=0.3)
        if n > 1 or ax is ax1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_paths(path, suffix=".png") as (tmp,):
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    runs = [load_run(p) for p in args.runs]
    names = list(args.names or [])
    if names and len(names) != len(runs):
        raise CliError(f"--names has {len(names)} names for {len(runs)} runs")
    names = names or [r.get("name", f"run{i + 1}") for i, r in enumerate(runs)]
    text = comparison_markdown(runs, names)
    if args.paired:
        if args.resamples < 1:
            raise CliError("--resamples must be >= 1")
        text += "\n" + paired_markdown(args.runs, names, args.paired, args.resamples, args.seed)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        body = "# Rank-GRPO evaluation report\n\n" + text + "\n" + "\n".join(summary_markdown(r) for r in runs)
        write_atomic(os.path.join(args.out, "report.md"), body)
        png = plot_per_rank(runs, names, os.path.join(args.out, "per_rank.png"))
        print(f"wrote {os.path.join(args.out, 'report.md')}" + (f" and {png}" if png else ""), file=sys.stderr)
    return 0
