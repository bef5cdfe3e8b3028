"""Throughput of ``rank-grpo evaluate --predictions FILE`` on the 2,716 ReDial test rows.

    python3 benchmarks/evaluate_throughput.py                  # builds the lists file, runs the CLI, prints the figures
    python3 benchmarks/evaluate_throughput.py --repeats 3      # median of 3 CLI runs
    python3 benchmarks/evaluate_throughput.py --repeats 3 --baseline DIR   # interleaved with another checkout's CLI

The lists file has one 20-line list per test row (positional alignment, no prompt field), built with a fixed
seed from the row itself and the catalog: the row's ground-truth items (years moved by 0/+-1/+-2 at random), a
seen title now and then, random catalog items, some markup (``1.``, ``**``, quotes), a preamble or blank line
in one list out of five, and an out-of-catalog title now and then. The CLI runs in a subprocess
(``python3 -m rank_grpo_plugin.cli evaluate ... --no-plot``, progress bar off); reported: the wall time of the
whole command (interpreter start, imports, loading rows/catalog/lists, evaluation, writing the outputs), the
CLI's own ``timing.evaluation_s`` from ``metrics.json`` and rows/s over it.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

REDIAL = C.DATA / "redial"


def build_lists(rows, catalog_rows, rng, k=20):
    out = []
    for row in rows:
        items = [(t, int(y) + rng.choice([0, 0, 0, 1, -1, 2])) for t, y in row["groundtruth_with_release_year"]]
        if row.get("seen_titles") and rng.random() < 0.3:
            items.append((rng.choice(row["seen_titles"]), 2000))
        if rng.random() < 0.2:
            items.append(("A Film That Does Not Exist", rng.randrange(1950, 2024)))
        while len(items) < k:
            r = catalog_rows[rng.randrange(len(catalog_rows))]
            items.append((r["title"], int(r["year"])))
        items = items[:k]
        rng.shuffle(items)
        lines = []
        for n, (t, y) in enumerate(items):
            fmt = rng.choice(["{t} ({y})"] * 6 + ["{n}. {t} ({y})", "**{t}** ({y})", '"{t}" ({y})'])
            lines.append(fmt.format(t=t, y=y, n=n + 1))
        if rng.random() < 0.2:
            lines.insert(0, rng.choice(["Here are 20 movies you might like:", ""]))
        out.append({"completion": "\n".join(lines)})
    return out


def main(argv=None) -> dict:
    p = C.parser(__doc__)
    p.add_argument("--repeats", type=int, default=1, help="CLI runs (median reported)")
    p.add_argument("--baseline", default=None,
                   help="another checkout (its root, used as PYTHONPATH) whose CLI runs interleaved with this one's")
    a = p.parse_args(argv)

    test, catalog = REDIAL / "test.jsonl", REDIAL / "catalog.jsonl"
    with open(test, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with open(catalog, encoding="utf-8") as f:
        catalog_rows = [json.loads(line) for line in f if line.strip()]
    checkouts = {"this": str(C.ROOT)}
    if a.baseline:
        checkouts["baseline"] = os.path.abspath(a.baseline)
    runs = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        lists = Path(tmp) / "redial_test_lists.jsonl"
        with open(lists, "w", encoding="utf-8") as f:
            for rec in build_lists(rows, catalog_rows, random.Random(0)):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        for r, name in [(r, n) for r in range(a.repeats) for n in (list(checkouts) if r % 2 == 0
                                                                     else list(checkouts)[::-1])]:
            env = dict(os.environ, RANK_GRPO_PROGRESS="0", PYTHONPATH=checkouts[name], HF_HUB_OFFLINE="1")
            out = Path(tmp) / f"eval-{name}{r}"
            cmd = [sys.executable, "-m", "rank_grpo_plugin.cli", "evaluate", "--data", str(test), "--catalog",
                   str(catalog), "--predictions", str(lists), "--out", str(out), "--no-plot"]
            load = C.load()
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"evaluate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            runs[name].append({"wall_s": wall, "evaluation_s": metrics["timing"]["evaluation_s"],
                         "total_s": metrics["timing"]["total_s"], "rows": metrics["config"]["rows"], "load": load,
                         "rank_ndcg@20": metrics["summary"]["metrics"]["rank/ndcg@20"],
                         "paper_ndcg@20": metrics["summary"]["metrics"]["paper/ndcg@20"]})
            print(f"  {name} run {r + 1}: wall {wall:.2f} s, evaluation {runs[name][-1]['evaluation_s']:.2f} s "
                  f"(load {load[0] if load else '?'})", flush=True)
    res = {}
    for name, rr in runs.items():
        rows_n = rr[0]["rows"]
        eval_s = statistics.median(x["evaluation_s"] for x in rr)
        wall_s = statistics.median(x["wall_s"] for x in rr)
        res[name] = {"pythonpath": checkouts[name], "rows": rows_n, "runs": rr, "wall_s_median": wall_s,
                     "evaluation_s_median": eval_s, "rows_per_s_evaluation": rows_n / eval_s,
                     "rows_per_s_wall": rows_n / wall_s}
        print(f"{name}: rank-grpo evaluate --predictions, {rows_n} ReDial test rows, 20-line lists; wall {wall_s:.2f} s "
              f"({rows_n / wall_s:.0f} rows/s), evaluation {eval_s:.2f} s ({rows_n / eval_s:.0f} rows/s); "
              f"rank NDCG@20 {rr[0]['rank_ndcg@20']:.4f}, paper NDCG@20 {rr[0]['paper_ndcg@20']:.4f}")
    payload = {"benchmark": "evaluate_throughput", "machine": C.machine(),
               "command": "python3 -m rank_grpo_plugin.cli evaluate --data <redial/test.jsonl> --catalog "
                          "<redial/catalog.jsonl> --predictions <lists.jsonl> --out <dir> --no-plot",
               "results": res}
    if "baseline" in res:
        payload["evaluation_speedup_vs_baseline"] = statistics.median(
            b["evaluation_s"] / t["evaluation_s"] for t, b in zip(runs["this"], runs["baseline"]))
        payload["wall_speedup_vs_baseline"] = statistics.median(
            b["wall_s"] / t["wall_s"] for t, b in zip(runs["this"], runs["baseline"]))
        print(f"this vs baseline (median of paired runs): evaluation {payload['evaluation_speedup_vs_baseline']:.2f}x,"
              f" wall {payload['wall_speedup_vs_baseline']:.2f}x")
    path = C.write_json("evaluate_throughput", payload, a.out, False)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
