"""What every task generator shares: its configuration dataclass as command-line flags, and what it writes (the
split rows, the task's catalog and its ``task.json``)."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..files import write_atomic

__all__ = ["add_config_arguments", "config_from_args", "write_task_files"]


def add_config_arguments(p, config_cls: type, helps: Mapping[str, str],
                         choices: Mapping[str, Sequence[str]] = {}) -> None:
    """One flag per field of the frozen dataclass ``config_cls`` (``--items-per-group`` for ``items_per_group``),
    typed and defaulted by the field, with ``helps[name]`` and the default in its help."""
    for f in fields(config_cls):
        kw = {"choices": list(choices[f.name])} if f.name in choices else {}
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=f.default,
                       help=f"{helps[f.name]} (default {f.default})", **kw)


def config_from_args(config_cls: type, args: Any):
    """The ``config_cls`` instance of parsed flags (see :func:`add_config_arguments`)."""
    return config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls)})


def _jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_task_files(out_dir, rows: Mapping[str, List[dict]], catalog: Iterable[Tuple[str, int]], summary: dict,
                     extra: Optional[Mapping[str, List[dict]]] = None) -> Dict[str, Path]:
    """Write ``<split>.jsonl`` per split, ``catalog.jsonl`` (sorted), ``task.json`` and ``extra`` (relative path ->
    JSONL rows), each atomically. Returns name -> path (splits by name, extra files by relative path)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: Dict[str, Path] = {}
    for split, split_rows in rows.items():
        paths[split] = out / f"{split}.jsonl"
        write_atomic(paths[split], _jsonl(split_rows))
    paths["catalog"] = out / "catalog.jsonl"
    write_atomic(paths["catalog"], _jsonl({"title": t, "year": y} for t, y in sorted(catalog)))
    paths["task"] = out / "task.json"
    write_atomic(paths["task"], json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
    for rel, extra_rows in (extra or {}).items():
        paths[rel] = out / rel
        paths[rel].parent.mkdir(parents=True, exist_ok=True)
        write_atomic(paths[rel], _jsonl(extra_rows))
    return paths
