"""Item catalog: loading, normalisation and (title, year) lookup. Standard library only.

Catalog files are JSONL, a JSON list, CSV or TSV with ``title`` and ``year`` columns. The official Rank-GRPO
release ships its catalog as ``gt_catalog.pkl``; :func:`load_pickle_catalog` reads that format with a small
opcode interpreter that never imports or calls anything, so a malicious pickle cannot run code.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickletools
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

from ..files import write_atomic
from .parse import normalize_title

__all__ = ["Catalog", "CatalogError", "load_pickle_catalog", "parse_year"]

PathLike = Union[str, "os.PathLike[str]"]


class CatalogError(ValueError):
    """Bad catalog input; the message names the file and the row."""


def parse_year(value: object) -> Optional[int]:
    """A year from an int or a digit string (``"1999"``, ``" 1999 "``, ``1999.0``); None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


class Catalog:
    """A set of (title, year) items with normalised-title lookup.

    Titles compare through :func:`normalize_title` (NFKC, casefold, whitespace collapsed), so titles that
    differ only in case are one entry for lookup, while ``items`` keeps every row as given.
    """

    def __init__(self, items: Iterable[Tuple[str, int]], source: str = "<memory>"):
        self.source = source
        self.items: List[Tuple[str, int]] = []
        self._years: Dict[str, Set[int]] = {}
        for i, item in enumerate(items, 1):
            try:
                title, year = item
            except (TypeError, ValueError):
                raise CatalogError(f"{source}: item {i}: expected (title, year), got {item!r}") from None
            y = parse_year(year)
            if not isinstance(title, str) or not title.strip() or y is None:
                raise CatalogError(f"{source}: item {i}: expected (title: str, year: int), got {item!r}")
            self.items.append((title, y))
            self._years.setdefault(normalize_title(title), set()).add(y)

    # ------------------------------------------------------------------ lookup
    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Tuple[str, int]]:
        return iter(self.items)

    def __contains__(self, item: object) -> bool:
        try:
            title, year = item  # type: ignore[misc]
        except (TypeError, ValueError):
            return False
        return self.contains(title, year)

    @property
    def index(self) -> Dict[str, Set[int]]:
        """The lookup index, built once at load: ``normalize_title(title)`` -> set of years. Read-only by
        contract (matching reads it directly to skip a call per line); ``contains(t, y)`` is
        ``parse_year(y) in index.get(normalize_title(t), ())``."""
        return self._years

    def contains(self, title: str, year: object) -> bool:
        """True when the catalog holds ``title`` (normalised) with exactly this year."""
        y = parse_year(year)
        return y is not None and y in self._years.get(normalize_title(title), ())

    def years(self, title: str) -> Set[int]:
        """Years listed for a title (empty set when absent)."""
        return set(self._years.get(normalize_title(title), ()))

    def has_title(self, title: str) -> bool:
        return normalize_title(title) in self._years

    def __repr__(self) -> str:
        return f"Catalog({len(self.items)} items from {self.source})"

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_file(cls, path: PathLike, fmt: Optional[str] = None) -> "Catalog":
        """Load a catalog from JSONL, JSON (list of objects or of [title, year] pairs), CSV or TSV.

        The format comes from ``fmt`` or the extension (.jsonl/.json/.csv/.tsv). Objects and table rows need
        ``title`` and ``year`` fields (case-insensitive header). Pickle files are refused here; convert them
        with ``load_pickle_catalog``. Errors name the file and the 1-based row.
        """
        path = os.fspath(path)
        ext = (fmt or os.path.splitext(path)[1].lstrip(".")).lower()
        if ext in ("pkl", "pickle"):
            raise CatalogError(
                f"{path}: pickle catalogs are not loaded directly; convert it with "
                "rank_grpo_plugin.load_pickle_catalog (a safe reader that executes nothing)"
            )
        try:
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
        except OSError as e:
            raise CatalogError(f"cannot read catalog {path}: {e}") from None
        if ext == "jsonl":
            rows = list(_jsonl_rows(text, path))
        elif ext == "json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise CatalogError(f"{path}: not valid JSON: {e}") from None
            if not isinstance(data, list):
                raise CatalogError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
            rows = list(enumerate(data, 1))
        elif ext in ("csv", "tsv"):
            rows = list(_table_rows(text, path, "," if ext == "csv" else "\t"))
        else:
            raise CatalogError(f"{path}: unknown catalog format {ext!r}; use .jsonl, .json, .csv or .tsv")
        return cls((_row_item(row, path, n) for n, row in rows), source=path)

    @classmethod
    def from_pickle(cls, path: PathLike) -> "Catalog":
        """Catalog from the official ``gt_catalog.pkl`` through the safe reader :func:`load_pickle_catalog`."""
        return cls(load_pickle_catalog(path), source=os.fspath(path))

    def to_jsonl(self, path: PathLike) -> None:
        """Write ``{"title", "year"}`` lines (atomically: a temp file renamed into place)."""
        write_atomic(path, "".join(json.dumps({"title": title, "year": year}, ensure_ascii=False) + "\n"
                                   for title, year in self.items))


def _jsonl_rows(text: str, path: str) -> Iterator[Tuple[int, object]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise CatalogError(f"{path}: line {n}: not valid JSON: {e}") from None


def _table_rows(text: str, path: str, delimiter: str) -> Iterator[Tuple[int, object]]:
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    fields = {(name or "").strip().lower(): name for name in (reader.fieldnames or [])}
    if "title" not in fields or "year" not in fields:
        raise CatalogError(f"{path}: header must have 'title' and 'year' columns, got {reader.fieldnames}")
    for n, row in enumerate(reader, 2):  # line 1 is the header
        yield n, {"title": row[fields["title"]], "year": row[fields["year"]]}


def _row_item(row: object, path: str, n: int) -> Tuple[str, int]:
    if isinstance(row, dict):
        lower = {str(k).lower(): v for k, v in row.items()}
        title, year = lower.get("title"), lower.get("year")
    elif isinstance(row, (list, tuple)) and len(row) == 2:
        title, year = row
    else:
        raise CatalogError(f"{path}: row {n}: expected an object with title and year, got {row!r}")
    y = parse_year(year)
    if not isinstance(title, str) or not title.strip():
        raise CatalogError(f"{path}: row {n}: missing or empty 'title' ({row!r})")
    if y is None:
        raise CatalogError(f"{path}: row {n}: 'year' must be an integer, got {year!r}")
    return title, y


# ---------------------------------------------------------------- safe pickle reading
_PLAIN_SET_CLASSES = {("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"), ("__builtin__", "frozenset")}


class _Global:
    """Marker for a GLOBAL naming set/frozenset; only ever 'called' by our REDUCE with one list argument."""

    def __init__(self, module: str, name: str):
        self.kind = frozenset if name == "frozenset" else set


def load_pickle_catalog(path: PathLike) -> List[Tuple[str, int]]:
    """Read the official ``gt_catalog.pkl`` (a list/tuple/set of (title, year) tuples) without unpickling.

    The file's opcodes are interpreted by a small stack machine that only builds str, int, list, tuple and
    set/frozenset values; it never imports a module or calls a function (a GLOBAL is accepted only when it
    names builtins.set/frozenset, and REDUCE only applies such a marker to a single list). Any other opcode,
    or any other shape of data, is refused with :class:`CatalogError`.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        value = _interpret(data)
    except CatalogError as e:
        raise CatalogError(f"{path}: {e}") from None
    except Exception as e:  # malformed stream (pickletools raises ValueError and friends)
        raise CatalogError(f"{path}: not a readable pickle catalog: {e}") from None
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise CatalogError(f"{path}: expected a list of (title, year) items, got {type(value).__name__}")
    items = []
    for i, item in enumerate(sorted(value) if isinstance(value, (set, frozenset)) else value, 1):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise CatalogError(f"{path}: item {i}: expected (title, year), got {item!r}")
        year = parse_year(item[1])
        if year is None:
            raise CatalogError(f"{path}: item {i}: year must be an int or digit string, got {item[1]!r}")
        items.append((item[0], year))
    return items


def _interpret(data: bytes) -> object:
    stack: list = []
    marks: List[int] = []
    memo: Dict[int, object] = {}

    def pop_mark() -> list:
        if not marks:
            raise CatalogError("malformed pickle: missing MARK")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            if len(stack) != 1:
                raise CatalogError("malformed pickle: stack not balanced at STOP")
            return stack[0]
        if name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BININT", "BININT1",
                    "BININT2", "LONG1", "LONG4", "INT", "LONG"):
            if name == "INT" and isinstance(arg, bool):
                raise CatalogError("booleans are not catalog data")
            stack.append(arg)
        elif name in ("SHORT_BINSTRING", "BINSTRING", "STRING"):  # protocol-0/1 str from Python 2
            stack.append(arg if isinstance(arg, str) else str(arg))
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "EMPTY_SET":
            stack.append(set())
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "LIST":
            stack.append(pop_mark())
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(stack) < n:
                raise CatalogError("malformed pickle: stack underflow")
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "APPEND":
            value = stack.pop()
            _target(stack, list).append(value)
        elif name == "APPENDS":
            items = pop_mark()
            _target(stack, list).extend(items)
        elif name == "ADDITEMS":
            items = pop_mark()
            _target(stack, set).update(items)
        elif name == "FROZENSET":
            stack.append(frozenset(pop_mark()))
        elif name in ("MEMOIZE",):
            memo[len(memo)] = stack[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
            else:
                attr, module = stack.pop(), stack.pop()
            if (module, attr) not in _PLAIN_SET_CLASSES:
                raise CatalogError(f"refusing pickle that references {module}.{attr}: only plain data is accepted")
            stack.append(_Global(module, attr))
        elif name == "REDUCE":
            args = stack.pop()
            fn = stack.pop()
            if not isinstance(fn, _Global) or not (isinstance(args, tuple) and len(args) == 1
                                                    and isinstance(args[0], list)):
                raise CatalogError("refusing pickle REDUCE that is not set(list)")
            stack.append(fn.kind(args[0]))
        else:
            raise CatalogError(f"refusing pickle opcode {name}: only lists/tuples/sets of str and int are accepted")
    raise CatalogError("malformed pickle: no STOP opcode")


def _target(stack: list, kind: type) -> object:
    if not stack or not isinstance(stack[-1], kind):
        raise CatalogError(f"malformed pickle: expected a {kind.__name__} to extend")
    return stack[-1]
