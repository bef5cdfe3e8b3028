"""The one parser of OpenRLHF's launcher log: ``Global step N: {'key': value, ...}`` lines -> per-step metrics.

Standard library only (the main job, the benchmarks and the tests read logs without importing OpenRLHF). The
dict is parsed key by key, never with ``eval``/``literal_eval``, so a step whose line holds ``nan``/``inf`` (a
diverged loss, an empty rank) is kept with ``float('nan')`` instead of being silently dropped; a value that is
not a number (a string, a list) is skipped, the rest of the step kept.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

__all__ = ["StepLog", "parse_step_line", "parse_steps", "read_steps", "rank_series", "finite"]

_STEP = re.compile(r"Global step (\d+): \{(.*)\}\s*$")
# the held-out evaluation (--eval.dataset): "Evaluation completed in 0:00:11, global_step 10, eval_metrics: {...}"
_EVAL = re.compile(r"Evaluation completed in [^,]*, global_step (\d+), eval_metrics: \{(.*)\}\s*$")
# 'key': value   (value up to the next ", '" or the end; numbers, nan, inf, tensor(x), True/False)
_PAIR = re.compile(r"'((?:[^'\\]|\\.)*)':\s*(.*?)(?=,\s*'|$)")
_TENSOR = re.compile(r"^tensor\((.*?)(?:,\s*\w+=.*)?\)$")


class StepLog(dict):
    """Metrics of one logged step (``dict`` of str -> float) with its ``step`` number."""

    def __init__(self, step: int, metrics: Dict[str, float]):
        super().__init__(metrics)
        self.step = int(step)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"StepLog(step={self.step}, {dict.__repr__(self)})"


def _number(text: str) -> Optional[float]:
    text = text.strip()
    m = _TENSOR.match(text)
    if m:
        text = m.group(1).strip()
    if text in ("True", "False"):
        return float(text == "True")
    try:
        return float(text)  # accepts nan, inf, -inf, 1e-05
    except ValueError:
        return None


def parse_step_line(line: str) -> Optional[StepLog]:
    """The metrics of one ``Global step N: {...}`` line, or of one evaluation line (``Evaluation completed ...,
    global_step N, eval_metrics: {...}``, whose keys start with ``eval_``), anywhere in the line; else None."""
    line = line.rstrip("\r\n")
    m = _STEP.search(line) or _EVAL.search(line)
    if not m:
        return None
    metrics: Dict[str, float] = {}
    for key, raw in _PAIR.findall(m.group(2)):
        value = _number(raw)
        if value is not None:
            metrics[key] = value
    return StepLog(int(m.group(1)), metrics)


def parse_steps(lines: Union[str, Iterable[str]]) -> List[StepLog]:
    """Every logged step of a log (its text, or an iterable of lines), in log order."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    return [s for s in (parse_step_line(line) for line in lines) if s is not None]


def read_steps(path: Union[str, Path]) -> List[StepLog]:
    """:func:`parse_steps` of a log file; [] when the file does not exist (a run that never started)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(encoding="utf-8", errors="replace") as f:
        return parse_steps(f)


def rank_series(step: Dict[str, float], name: str) -> List[float]:
    """Per-rank values ``rank_grpo/{name}_r01..rK`` of one step, in rank order ([] when absent)."""
    pat = re.compile(r"rank_grpo/" + re.escape(name) + r"_r(\d+)$")
    found = sorted((int(m.group(1)), v) for k, v in step.items() for m in [pat.match(k)] if m)
    return [v for _, v in found]


def finite(values: Iterable[float]) -> List[float]:
    """The finite values (drops nan/inf), for means over steps."""
    return [v for v in values if isinstance(v, float) and math.isfinite(v)]


# ------------------------------------------------------------------------------------------ console filter
def _fmt(step: Dict[str, float], key: str, spec: str = ".3f") -> str:
    v = step.get(key)
    return "n/a" if v is None else format(v, spec)


def step_line(step: StepLog, total: Optional[int], seconds: Optional[float]) -> str:
    """One concise console line of a Rank-GRPO/GRPO step."""
    of = f"/{total}" if total else ""
    secs = "" if seconds is None else f"  {seconds:.1f}s"
    return (f"step {step.step}{of}  reward {_fmt(step, 'reward')}  NDCG@K {_fmt(step, 'rank_grpo/ndcg')}  "
            f"items {_fmt(step, 'rank_grpo/items_emitted', '.1f')}  "
            f"in-catalog {_fmt(step, 'rank_grpo/in_catalog_rate', '.2f')}{secs}")


_TQDM = re.compile(r"(Train step of epoch \d+|Train epoch):\s+(\d+)%\|[^|]*\|\s*(\d+)/(\d+)")
_LOSS = re.compile(r"gpt_loss=([\d.]+)")


def follow(stream, log_path: Union[str, Path], kind: str, prefix: str, total: Optional[int] = None,
           out=None) -> int:
    """Copy a launcher's output ``stream`` to ``log_path`` and print a concise view on ``out`` (stdout).

    ``kind="rl"``: one line per ``Global step`` (and per held-out evaluation); ``kind="sft"``: one line per epoch
    (from OpenRLHF's progress bar, with the loss). Plugin lines (``[rank_grpo_plugin] ...``) and Python tracebacks' last line are shown too.
    Returns the number of step lines printed.
    """
    import sys
    import time

    out = out or sys.stdout
    printed = 0
    last = time.time()
    shown = set()
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        for raw in stream:
            log.write(raw)
            log.flush()
            # tqdm redraws with "\r": look at every segment
            for line in raw.replace("\r", "\n").split("\n"):
                if kind == "rl":
                    step = parse_step_line(line)
                    if step is not None and "reward" not in step and any(k.startswith("eval_") for k in step):
                        ev = {k: v for k, v in step.items() if k.endswith("_pass1")}
                        print(f"{prefix} eval at step {step.step}: held-out reward "
                              + ", ".join(f"{k} {v:.3f}" for k, v in ev.items()), file=out, flush=True)
                        continue
                    if step is not None:
                        now = time.time()
                        print(f"{prefix} {step_line(step, total, now - last)}", file=out, flush=True)
                        last = now
                        printed += 1
                        continue
                elif kind == "sft":
                    m = _TQDM.search(line)
                    if m and m.group(1).startswith("Train step") and int(m.group(2)) == 100:
                        if m.group(1) not in shown:
                            shown.add(m.group(1))
                            epoch = int(m.group(1).rsplit(" ", 1)[1]) + 1
                            now = time.time()
                            lm = _LOSS.search(line)
                            loss = f"  loss {lm.group(1)}" if lm else ""
                            print(f"{prefix} epoch {epoch}{f'/{total}' if total else ''}: {m.group(4)} micro-steps"
                                  f"{loss}  {now - last:.0f}s", file=out, flush=True)
                            last = now
                            printed += 1
                if "[rank_grpo_plugin]" in line and ("active" in line or "error" in line.lower()):
                    print(f"{prefix} {line.strip()[:200]}", file=out, flush=True)
    return printed


def main(argv=None) -> int:
    """``python -m openrlhf_compat.logs follow LOG --kind rl|sft [--total N] [--prefix P]`` (stdin)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m openrlhf_compat.logs", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("follow", help="tee stdin to LOG and print one line per step")
    f.add_argument("log")
    f.add_argument("--kind", choices=["rl", "sft"], required=True)
    f.add_argument("--total", type=int)
    f.add_argument("--prefix", default="")
    a = ap.parse_args(argv)
    follow(sys.stdin, a.log, a.kind, a.prefix, a.total)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
