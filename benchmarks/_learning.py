"""The learning benchmarks' small library: statistics, curves from launcher logs, the protocol's decisions (learning
rate per arm, steps ratio), reference lists, markdown tables and plots.

Not part of the package: imported by ``benchmarks/learning.py`` and ``benchmarks/macro.py`` (which put this folder
on ``sys.path``). Standard library plus the package's own recommendation logic; matplotlib only inside ``plot_*``.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from openrlhf_compat.logs import finite, rank_series, read_steps

# The held-out metric of OpenRLHF's own evaluation loop (--eval.dataset): mean reward of the sampled lists, which
# for every arm here is the plugin's NDCG@20 of the list (the eval loop applies no length penalty or shaping).
EVAL_KEY = "eval_default_pass1"


# ------------------------------------------------------------------------------------------------ statistics
def mean_sd(xs: Iterable[float]) -> Tuple[float, float]:
    """Mean and sample sd (n - 1) of the finite values (NaN, a diverged step, is left out); ``(nan, nan)`` when
    none is finite, sd 0 for one value."""
    xs = finite([float(x) for x in xs])
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def fmt(xs: Iterable[float], digits: int = 3) -> str:
    """``mean ± sd`` of the finite values of ``xs``; the value alone when there is one (a sample sd needs two, and
    "± 0.000" would claim a spread nobody measured); ``n/a`` when nothing is finite."""
    xs = finite([float(x) for x in xs])
    m, sd = mean_sd(xs)
    if math.isnan(m):
        return "n/a"
    return f"{m:.{digits}f}" if len(xs) == 1 else f"{m:.{digits}f} ± {sd:.{digits}f}"


def plural(n: int, noun: str) -> str:
    """``1 seed``, ``2 seeds``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table."""
    out = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ curves
def curves(log: Path) -> Dict[str, list]:
    """Per-step series of one launcher log: training reward (the list NDCG@K), in-catalog rate, items per list,
    response tokens, per-rank hit rates, clip fractions, KL; and the held-out evaluations (``eval_step``,
    ``eval_ndcg``: one per evaluated step)."""
    steps = read_steps(log)
    train = [s for s in steps if "reward" in s]
    evals = list({s.step: s for s in steps if EVAL_KEY in s}.values())
    nan = float("nan")
    return {
        "step": [s.step for s in train],
        "reward": [s.get("rank_grpo/ndcg", s.get("reward", nan)) for s in train],
        "in_catalog": [s.get("rank_grpo/in_catalog_rate", nan) for s in train],
        "items": [s.get("rank_grpo/items_emitted", nan) for s in train],
        "response_length": [s.get("response_length", nan) for s in train],
        "hits": [rank_series(s, "hit") for s in train],
        # rank-level loss: clip_frac_low/high per token; OpenRLHF's losses (ppo, gspo): ppo_clip_ratio (0.11;
        # clip_ratio before)
        "clip_low": [s.get("rank_grpo/clip_frac_low", s.get("ppo_clip_ratio", s.get("clip_ratio", nan)))
                     for s in train],
        "clip_high": [s.get("rank_grpo/clip_frac_high", nan) for s in train],
        "kl": [s.get("kl", nan) for s in train],
        "eval_step": [s.step for s in evals],
        "eval_ndcg": [s[EVAL_KEY] for s in evals],
    }


def clip_fraction(c: Dict[str, list]) -> float:
    """A run's clipped-token fraction, mean over its steps: both sides (``clip_low + clip_high``) for the rank-level
    loss, which logs them apart; OpenRLHF's own ``ppo_clip_ratio`` (already both sides) for its losses."""
    low = c["clip_low"]
    high = (c.get("clip_high") or []) + [float("nan")] * len(low)  # absent or NaN: no separate high side
    return mean_sd([lo + (hi if math.isfinite(hi) else 0.0) for lo, hi in zip(low, high)])[0]


def with_step0(c: Dict[str, list], step0: Optional[float]) -> Tuple[List[int], List[float]]:
    """The held-out curve of ``c`` with the SFT start's value as step 0 (when known)."""
    xs, ys = list(c.get("eval_step", [])), list(c.get("eval_ndcg", []))
    if step0 is not None and (not xs or xs[0] != 0):
        xs, ys = [0] + xs, [step0] + ys
    return xs, ys


def mean_curve(runs: Sequence[Dict[str, list]], step0: Optional[float] = None
               ) -> Tuple[List[int], List[float], List[float]]:
    """Held-out curve averaged over runs, on the steps every run evaluated: ``(steps, mean, sd)``."""
    pts = [dict(zip(*with_step0(c, step0))) for c in runs]
    if not pts:
        return [], [], []
    common = sorted(set.intersection(*(set(p) for p in pts)))
    ms = [mean_sd([p[s] for p in pts]) for s in common]
    return common, [m for m, _ in ms], [sd for _, sd in ms]


def best_point(steps: Sequence[int], values: Sequence[float]) -> Tuple[Optional[int], float]:
    """``(first step of the maximum, maximum)`` of a curve (NaN points skipped)."""
    best_s, best_v = None, float("-inf")
    for s, v in zip(steps, values):
        if math.isfinite(v) and v > best_v:
            best_s, best_v = s, v
    return best_s, (best_v if best_s is not None else float("nan"))


def first_reach(steps: Sequence[int], values: Sequence[float], target: float) -> Optional[int]:
    """The first step whose value is >= ``target`` (None: never)."""
    for s, v in zip(steps, values):
        if math.isfinite(v) and v >= target:
            return s
    return None


def flat_since(steps: Sequence[int], values: Sequence[float], tol: float) -> Optional[int]:
    """Where the curve went flat: the first evaluated step after which it never rises more than ``tol`` above its
    running best at that step, however slowly it gets there (a creep of 0.01 per evaluation is not flat). None for a
    curve without a finite value."""
    pts = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
    later = float("-inf")  # the highest value after each point, from the end backwards
    after = []
    for _, v in reversed(pts):
        after.append(later)
        later = max(later, v)
    after.reverse()
    best = float("-inf")
    for (s, v), top in zip(pts, after):
        best = max(best, v)
        if top <= best + tol:
            return s
    return None


# ------------------------------------------------------------------------------------------------ decisions
def choose_lr(best_by_lr: Dict[float, float]) -> Tuple[Optional[float], bool]:
    """The learning rate with the highest best validation value (ties: the lower rate) and whether it is the
    lowest rate of the grid (then the protocol adds a lower one). ``(None, False)`` when no run finished."""
    ok = {lr: v for lr, v in best_by_lr.items() if math.isfinite(v)}
    if not ok:
        return None, False
    lr = max(sorted(ok), key=lambda r: ok[r])
    return lr, lr == min(best_by_lr)


def lower_rate(lr: float) -> float:
    """The next rate below ``lr`` on a 1-3-10 grid (1e-4 -> 3e-5 -> 1e-5): the rate the protocol adds when an
    arm's best is its grid's lowest."""
    mantissa, exp = f"{lr:.0e}".split("e")
    return float(f"1e{int(exp)}") if int(mantissa) >= 3 else float(f"3e{int(exp) - 1}")


def steps_ratio(rank: Tuple[Sequence[int], Sequence[float]], seq: Tuple[Sequence[int], Sequence[float]]
                ) -> Dict[str, Optional[float]]:
    """Steps for the rank-level arm to reach the sequence-level arm's best held-out value, over the steps the
    sequence-level arm took to reach it, both curves read at the same evaluated steps (``(steps, values)`` each).
    ``ratio`` None when the rank-level arm never reaches it."""
    seq_at, target = best_point(*seq)
    rank_at = first_reach(*rank, target) if seq_at is not None else None
    ratio = rank_at / seq_at if (rank_at is not None and seq_at) else None
    return {"target": target, "sequence_step": seq_at, "rank_step": rank_at, "ratio": ratio}


# ------------------------------------------------------------------------------------------------ references
def reference_lists(rows, catalog, kind: str, k: int = 20, draws: int = 1, seed: int = 0) -> List[List[str]]:
    """Reference completions per row (``draws`` lists each, one entry per row): ``teacher`` the row's SFT target,
    ``random`` K distinct catalog items drawn uniformly, ``oracle`` the ground-truth items first (in the label's
    order), then distinct non-ground-truth catalog items up to K."""
    rng = random.Random(seed)
    items = sorted(catalog)
    out = []
    for row in rows:
        lists = []
        for _ in range(draws):
            if kind == "teacher":
                if row.completion is None:
                    raise ValueError(f"{row.where}: no completion (the teacher list) to use as a reference")
                lists.append(row.completion)
                continue
            if kind == "random":
                chosen = rng.sample(items, k)
            elif kind == "oracle":
                gt = [(t, int(y)) for t, y in row.groundtruth][:k]
                gt_keys = {(t.casefold(), y) for t, y in gt}
                rest = [it for it in items if (it[0].casefold(), it[1]) not in gt_keys]
                chosen = gt + rng.sample(rest, k - len(gt))
            else:
                raise ValueError(f"unknown reference {kind!r}; valid: teacher, random, oracle")
            lists.append("\n".join(f"{t} ({y})" for t, y in chosen))
        out.append(lists)
    return out


def score_lists(rows, lists: Sequence[Sequence[str]], catalog, k: int = 20) -> Dict[str, object]:
    """Mean ± sd over the draws of each metric of ``recsys.evaluation.aggregate`` (rank-aligned and paper), and
    the pooled in-catalog and duplicate rates: the same numbers ``rank-grpo evaluate`` reports."""
    from rank_grpo_plugin.recsys.evaluation import aggregate, evaluate_list

    draws = len(lists[0]) if lists else 0
    summaries = [aggregate([evaluate_list(lists[i][d], r.groundtruth, r.seen, catalog, k=k)
                            for i, r in enumerate(rows)], k=k) for d in range(draws)]
    keys = list(summaries[0]["metrics"]) if summaries else []
    return {"draws": draws,
            "metrics": {key: mean_sd([s["metrics"][key] for s in summaries]) for key in keys},
            "in_catalog_rate": mean_sd([s["in_catalog_rate"] for s in summaries]),
            "duplicate_rate": mean_sd([s["duplicate_rate"] for s in summaries])}


# ------------------------------------------------------------------------------------------------ plots
def plot_curves(path: Path, title: str, series: Dict[str, Tuple[List[int], List[float], List[float]]],
                hlines: Dict[str, float] = {}, ylabel: str = "held-out NDCG@20") -> Optional[Path]:
    """One plot of mean ± sd curves (``label -> (steps, mean, sd)``) with horizontal reference lines; None when
    matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, (xs, m, sd) in series.items():
        if not xs:
            continue
        line, = ax.plot(xs, m, label=label, lw=1.4)
        ax.fill_between(xs, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)], alpha=0.15,
                        color=line.get_color())
    for i, (label, y) in enumerate(hlines.items()):
        if math.isfinite(y):
            ax.axhline(y, ls=(0, (4, 2 + i)), lw=0.9, color="grey")
            ax.annotate(f"{label} {y:.3f}", (1.0, y), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=7, color="dimgrey")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("RL step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    # below the axes: inside them it hid curves and reference labels wherever it was put
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
