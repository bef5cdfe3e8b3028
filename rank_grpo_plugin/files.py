"""Atomic file output: a reader never sees a half-written file, a crash never leaves one. Standard library only.

Every writer of the package (CLI outputs, catalogs, Stage 1 outputs, the embedding cache, converted and tiny
models) and of the benchmarks and examples goes through :func:`atomic_paths`, or :func:`write_atomic` for a whole
text or bytes value: the content is written to a temporary path next to the target (same directory, so the final
``os.replace`` is a rename on one file system), renamed into place when writing succeeded, removed when it failed.
"""
from __future__ import annotations

import itertools
import os
import shutil
from contextlib import contextmanager
from typing import Any, Iterator, List, Tuple, Union

__all__ = ["atomic_paths", "write_atomic"]

PathLike = Union[str, "os.PathLike[str]"]

_COUNTER = itertools.count()  # distinct temporary names for writers of one process (threads included)


def _temp_path(path: str, suffix: str) -> str:
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.tmp{os.getpid()}-{next(_COUNTER)}{suffix}")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextmanager
def atomic_paths(*paths: PathLike, suffix: str = "") -> Iterator[Tuple[str, ...]]:
    """Temporary paths, one per target in ``paths``, to write (a file, or a directory the caller creates).

    When the block succeeds every temporary path is renamed onto its target, in order; when it raises, every
    temporary path is removed and nothing is renamed, so several outputs are replaced all or none (up to the
    renames themselves). The targets' parent directories are created. ``suffix`` ends each temporary name, for
    writers that choose the format by extension (``numpy.save`` appends ``.npy`` otherwise, ``savefig`` reads
    ``.png``). A directory written to a temporary path replaces an existing directory target (``os.replace`` renames
    a directory onto an empty one only): the old directory is renamed aside, the new one into place, and the old one
    removed -- or renamed back when the second rename fails, so a target is never lost.
    """
    targets = [os.fspath(p) for p in paths]
    for target in targets:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    temps: List[str] = [_temp_path(t, suffix) for t in targets]
    try:
        yield tuple(temps)
        for tmp, target in zip(temps, targets):
            aside = None
            if os.path.isdir(tmp) and os.path.isdir(target) and not os.path.islink(target):
                aside = _temp_path(target, ".old")
                os.replace(target, aside)
            try:
                os.replace(tmp, target)
            except BaseException:
                if aside:
                    os.replace(aside, target)
                raise
            if aside:
                shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        for tmp in temps:
            _remove(tmp)
        raise


def write_atomic(path: PathLike, text_or_bytes: Any) -> None:
    """Write a whole file (``str`` as UTF-8, ``bytes`` as is) through :func:`atomic_paths`."""
    binary = isinstance(text_or_bytes, (bytes, bytearray))
    with atomic_paths(path) as (tmp,):
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            f.write(text_or_bytes)
