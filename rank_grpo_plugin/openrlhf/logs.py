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
    """The metrics of one ``Global step N: {...}`` line (anywhere in the line), or None if it is not one."""
    m = _STEP.search(line.rstrip("\r\n"))
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
