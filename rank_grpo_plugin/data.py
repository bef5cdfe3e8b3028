"""The one row schema: reading and validating conversational-recommendation rows (Reddit-v2 / ReDial shape), and
the RL label they become (:func:`label_json` encodes it, :func:`parse_label` decodes and checks it). Used by
``rank-grpo prepare / evaluate / catalog``, Stage 1 and the catalog reward.

A row holds a chat prompt, the ground-truth items, the titles already seen in the conversation and, for SFT,
a target list::

    {"prompt": [{"role": "user", "content": "..."}],          # or a plain string (becomes one user message)
     "completion": [{"role": "assistant", "content": "A (2001)\\nB (1999)..."}],  # or a plain string
     "seen_titles": ["Super Troopers"],
     "groundtruth_with_release_year": [["Police Academy", "1984"]]}

Inputs: JSONL, a JSON list, or a directory written by ``datasets.Dataset.save_to_disk`` (``datasets`` is
imported only for that case). Every row is checked; errors name the file, the row (line number for JSONL,
1-based index otherwise) and the field. :func:`dump_rows` serialises output rows; :func:`write_atomic`
(:mod:`rank_grpo_plugin.files`) writes them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .files import write_atomic  # re-exported beside dump_rows; its home is rank_grpo_plugin.files
from .recsys.catalog import parse_year
from .resources import RESOURCES

__all__ = ["DataError", "LabelError", "Fields", "Row", "check_record", "check_prompt", "check_groundtruth",
           "check_seen", "check_label_file", "completion_text", "default_data_dir", "dump_rows", "iter_records",
           "label_json", "parse_label", "load_rows", "write_atomic", "ROLES", "MAX_LABEL_CHARS"]

ROLES = ("system", "user", "assistant")


def default_data_dir() -> Path:
    """The folder the CLI's default data comes from (``<dataset>/<file>.jsonl``: ``redial/test.jsonl``,
    ``reddit_v2/sample.jsonl`` ...): ``$RANK_GRPO_DATA`` for users' own copy, else the data shipped in the package
    (:mod:`rank_grpo_plugin.resources`). Raises :class:`DataError` when ``$RANK_GRPO_DATA`` is not a folder."""
    env = os.environ.get("RANK_GRPO_DATA")
    if not env:
        return RESOURCES
    path = Path(env).expanduser()
    if not path.is_dir():
        raise DataError(f"RANK_GRPO_DATA={env}: not a directory (unset it to use the data shipped in "
                        f"{RESOURCES})")
    return path


class DataError(ValueError):
    """Bad input rows; the message names file, row and field."""


class LabelError(DataError):
    """A dataset label that is not the documented JSON; the message names the sample."""


@dataclass(frozen=True)
class Fields:
    """Names of the input fields (the official Reddit-v2 names by default). ``seen=""`` means no seen field."""

    prompt: str = "prompt"
    completion: str = "completion"
    seen: str = "seen_titles"
    groundtruth: str = "groundtruth_with_release_year"


@dataclass
class Row:
    where: str  # "file: line 3" / "dir: row 3"
    prompt: List[Dict[str, str]]
    groundtruth: List[Tuple[str, int]]
    seen: List[str]
    completion: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def prompt_key(self) -> str:
        """Identity of the conversation (rows repeat once per responding user)."""
        return json.dumps(self.prompt, ensure_ascii=False, sort_keys=True)


def label_json(groundtruth: Sequence[Tuple[str, int]], seen: Sequence[str]) -> str:
    """The RL label the reward reads: ``{"groundtruth": [[title, year], ...], "seen": [title, ...]}``."""
    return json.dumps({"groundtruth": [[t, y] for t, y in groundtruth], "seen": list(seen)}, ensure_ascii=False)


LABEL_FORMAT = '{"groundtruth": [["Title", 1999], ...], "seen": ["Title", ...]}'
# The largest label accepted, in characters of its JSON text (a decoded label is measured as json.dumps writes it).
# Real labels are far smaller (the shipped Reddit-v2 rows: at most 1,010 characters, 16 ground-truth items; ReDial:
# 390). A label is carried to every sample of its prompt's group and parsed for each of them in the rollout actors,
# so a huge one (a row that swallowed a whole catalog, a broken export) is a data error, refused like a malformed one.
MAX_LABEL_CHARS = 65_536


def _label_size(data: Any) -> int:
    try:
        return len(json.dumps(data, ensure_ascii=False))
    except (TypeError, ValueError):  # not JSON-serialisable: the type checks below name it
        return 0


def parse_label(label: Any, where: str = "sample") -> Tuple[list, list]:
    """(groundtruth pairs as given, seen titles) from a label (JSON text, bytes or the decoded object).

    Accepts the Reddit-v2 names ``groundtruth_with_release_year`` / ``seen_titles`` as aliases and a ground truth
    stored as a JSON string (never evaluated as Python). Refuses, with a :class:`LabelError` naming ``where`` and
    the part of the label that is wrong: an empty label, text that is not JSON, anything but a JSON object, a
    missing or empty ``groundtruth``, a ground-truth item that is not ``[title, year]`` with a non-empty title and
    a year that is an integer or a digit string, ``seen`` that is not a list of titles, and a label over
    :data:`MAX_LABEL_CHARS` characters (a huge row).
    """
    data = label
    if isinstance(label, (bytes, bytearray)):
        data = label.decode("utf-8", errors="replace")
    size = len(data) if isinstance(data, str) else _label_size(data)
    if size > MAX_LABEL_CHARS:
        raise LabelError(f"{where}: label is {size:,} characters long, over the limit of {MAX_LABEL_CHARS:,} "
                         f"(rank_grpo_plugin.data.MAX_LABEL_CHARS; real labels hold a few ground-truth items): "
                         f"{str(data)[:80]!r}...")
    if isinstance(data, str):
        if not data.strip():
            raise LabelError(f"{where}: empty label; expected JSON {LABEL_FORMAT} "
                             "(set --data.label_key to the dataset field holding it)")
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise LabelError(f"{where}: label is not valid JSON ({e}): {data[:120]!r}") from None
    if not isinstance(data, dict):
        raise LabelError(f"{where}: label must be a JSON object with 'groundtruth' and 'seen', got "
                         f"{type(data).__name__}: {str(data)[:120]!r}")
    gt = data.get("groundtruth", data.get("groundtruth_with_release_year"))
    seen = data.get("seen", data.get("seen_titles", []))
    if isinstance(gt, str):  # stringified lists in some dumps: JSON only
        try:
            gt = json.loads(gt)
        except json.JSONDecodeError:
            raise LabelError(f"{where}: 'groundtruth' is a string that is not a JSON list: {gt[:120]!r}") from None
    if gt is None:
        raise LabelError(f"{where}: label has no 'groundtruth' (keys: {sorted(data)[:8]}); expected {LABEL_FORMAT}")
    if not isinstance(gt, list):
        raise LabelError(f"{where}: label needs 'groundtruth': [[title, year], ...], got {str(gt)[:120]!r}")
    for i, pair in enumerate(gt):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise LabelError(f"{where}: groundtruth[{i}] must be [title, year], got {pair!r:.120}")
        if not isinstance(pair[0], str) or not pair[0].strip():
            raise LabelError(f"{where}: groundtruth[{i}]: title must be a non-empty string, got {pair[0]!r:.120}")
        if parse_year(pair[1]) is None:
            raise LabelError(f"{where}: groundtruth[{i}]: year must be an integer or digit string, got "
                             f"{pair[1]!r:.40}")
    try:
        seen = check_seen(seen, "seen")
    except DataError:
        raise LabelError(f"{where}: 'seen' must be a list of titles, got {str(seen)[:120]!r}") from None
    if not gt:
        raise LabelError(f"{where}: 'groundtruth' is empty (nothing to recommend; every list would score 0)")
    return [list(p) for p in gt], seen


def check_label_file(path: str, label_key: str, input_key: Optional[str] = None, limit: Optional[int] = None,
                     max_errors: int = 10) -> int:
    """Validate the RL labels of an OpenRLHF prompt dataset file (JSONL or a JSON list, as written by
    ``rank-grpo prepare --rl``) before any training starts: every row (the first ``limit``) must be a JSON object
    holding ``input_key`` (when given) and ``label_key``, and the label must pass :func:`parse_label`. Returns the
    number of rows checked; raises one :class:`DataError` listing up to ``max_errors`` bad rows, each as
    ``<file>: line <n>: field '<label_key>': <what is wrong>`` (``row <i>`` for a JSON list)."""
    def check(where: str, rec: Any) -> None:
        if not isinstance(rec, dict):
            raise LabelError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for key in (input_key, label_key):
            if key and key not in rec:
                raise LabelError(f"{where}: field {key!r} is missing (fields present: {sorted(rec)[:8]})")
        parse_label(rec[label_key], f"{where}: field {label_key!r}")

    return len(_check_all(path, iter_records(path), check, limit, max_errors, LabelError))


def _check_all(path: str, records: Iterable[Tuple[str, Any]], check: Callable[[str, Any], Any],
               limit: Optional[int], max_errors: int, catch: type = DataError) -> List[Any]:
    """``check(where, record)`` of every record (the first ``limit``), collecting what it returns; one
    :class:`DataError` listing up to ``max_errors`` of the rows it rejected (with ``catch``), or naming an empty
    file."""
    out: List[Any] = []
    errors: List[str] = []
    n_bad = n = 0
    for where, rec in records:
        if limit is not None and n >= limit:
            break
        n += 1
        try:
            out.append(check(where, rec))
        except catch as e:
            n_bad += 1
            if len(errors) < max_errors:
                errors.append(str(e))
    if errors:
        more = f"\n  ... and {n_bad - len(errors)} more" if n_bad > len(errors) else ""
        raise DataError(f"{n_bad} bad row(s) of {n} in {path}:\n  " + "\n  ".join(errors) + more)
    if not n:
        raise DataError(f"{path}: no rows")
    return out


# ----------------------------------------------------------------------------------------------- reading
def iter_records(path: str, split: Optional[str] = None) -> Iterator[Tuple[str, Any]]:
    """Yield ``(where, record)`` for each row of a JSONL / JSON list / save_to_disk directory."""
    path = os.fspath(path)
    if os.path.isdir(path):
        yield from _disk_records(path, split)
        return
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory")
    ext = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8") as f:
        if ext == ".json":
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not valid JSON: {e}") from None
            if isinstance(data, dict):  # {"data": [...]} / {"rows": [...]} style
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise DataError(f"{path}: expected a JSON list of rows (or an object holding one list)")
                data = lists[0]
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
            for i, rec in enumerate(data, 1):
                yield f"{path}: row {i}", rec
            return
        if ext not in (".jsonl", ".ndjson", ""):
            raise DataError(f"{path}: unknown data format {ext!r}; use .jsonl, .json or a save_to_disk directory")
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n}: not valid JSON: {e}") from None
            yield f"{path}: line {n}", rec


def _disk_records(path: str, split: Optional[str]) -> Iterator[Tuple[str, Any]]:
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
    except ImportError:
        raise DataError(f"{path}: reading a save_to_disk directory needs the 'datasets' package") from None
    try:
        ds = load_from_disk(path)
    except Exception as e:  # not a dataset directory
        raise DataError(f"{path}: not a datasets save_to_disk directory ({e})") from None
    where = path
    if isinstance(ds, DatasetDict):
        names = list(ds.keys())
        if split is None:
            if len(names) != 1:
                raise DataError(f"{path}: holds splits {names}; choose one with --split")
            split = names[0]
        if split not in ds:
            raise DataError(f"{path}: no split {split!r}; available: {names}")
        ds = ds[split]
        where = f"{path}[{split}]"
    elif split is not None and not isinstance(ds, Dataset):
        raise DataError(f"{path}: unexpected dataset type {type(ds).__name__}")
    for i, rec in enumerate(ds, 1):
        yield f"{where}: row {i}", rec


# --------------------------------------------------------------------------------------------- checking
def completion_text(value: Any) -> Optional[str]:
    """The target/generated text from a string, a message dict, or a messages list (last assistant turn)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, list) and value:
        assistant = [m for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
        last = (assistant or value)[-1]
        if isinstance(last, dict) and isinstance(last.get("content"), str):
            return last["content"]
        if isinstance(last, str):
            return last
    return None


def check_prompt(value: Any, name: str) -> List[Dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"field {name!r}: empty prompt")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise DataError(f"field {name!r}: expected a non-empty list of chat messages or a string, got "
                        f"{type(value).__name__}")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise DataError(f"field {name!r}[{i}]: expected a message object, got {type(msg).__name__}")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise DataError(f"field {name!r}[{i}].role: expected one of {list(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise DataError(f"field {name!r}[{i}].content: expected a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    if out[-1]["role"] == "assistant":
        raise DataError(f"field {name!r}: the last message is the assistant's; a prompt must end with user/system")
    return out


def _pair(pair: Any) -> Optional[Tuple[str, int]]:
    """(title, year) of a ground-truth pair ``[title, year]`` (year an integer or digit string), else None."""
    if isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str):
        year = parse_year(pair[1])
        if year is not None:
            return pair[0], year
    return None


def check_groundtruth(value: Any, name: str) -> List[Tuple[str, int]]:
    if not isinstance(value, list):
        raise DataError(f"field {name!r}: expected a list of [title, year] pairs, got {type(value).__name__}")
    if not value:
        raise DataError(f"field {name!r}: empty ground truth (nothing to recommend)")
    out = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise DataError(f"field {name!r}[{i}]: expected [title, year], got {pair!r}")
        title, year = pair
        if not isinstance(title, str) or not title.strip():
            raise DataError(f"field {name!r}[{i}]: title must be a non-empty string, got {title!r}")
        checked = _pair(pair)
        if checked is None:
            raise DataError(f"field {name!r}[{i}]: year must be an integer or digit string, got {year!r}")
        out.append(checked)
    return out


def check_seen(value: Any, name: str) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise DataError(f"field {name!r}: expected a list of title strings, got {value!r:.80}")
    return list(value)


def check_record(rec: Any, where: str, fields: Fields = Fields(), need_completion: bool = False,
                 keep: Sequence[str] = ()) -> Row:
    """Validate one record into a :class:`Row`; DataError("<where>: field ...: ...") when it is bad."""
    try:
        if not isinstance(rec, dict):
            raise DataError(f"expected a JSON object, got {type(rec).__name__}")
        for name in (fields.prompt, fields.groundtruth) + ((fields.seen,) if fields.seen else ()):
            if name not in rec:
                raise DataError(f"field {name!r} is missing (fields present: {sorted(rec)})")
        prompt = check_prompt(rec[fields.prompt], fields.prompt)
        gt = check_groundtruth(rec[fields.groundtruth], fields.groundtruth)
        seen = check_seen(rec[fields.seen], fields.seen) if fields.seen else []
        completion = None
        if need_completion:
            if fields.completion not in rec:
                raise DataError(f"field {fields.completion!r} is missing (fields present: {sorted(rec)})")
            completion = completion_text(rec[fields.completion])
            if completion is None or not completion.strip():
                raise DataError(f"field {fields.completion!r}: expected a non-empty string or an assistant "
                                f"message, got {rec[fields.completion]!r:.80}")
        extra = {k: rec[k] for k in keep if k in rec}
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    return Row(where, prompt, gt, seen, completion, extra)


def load_rows(path: str, fields: Fields = Fields(), need_completion: bool = False, split: Optional[str] = None,
              limit: Optional[int] = None, keep: Sequence[str] = (), max_errors: int = 10) -> List[Row]:
    """Read and validate every row (``limit`` keeps the first N); raise one DataError listing up to
    ``max_errors`` bad rows."""
    return _check_all(path, iter_records(path, split),
                      lambda where, rec: check_record(rec, where, fields, need_completion, keep), limit, max_errors)


# --------------------------------------------------------------------------------------------- writing
def dump_rows(path: str, rows: Sequence[Dict[str, Any]]) -> str:
    """Serialise output rows as JSONL (``.jsonl``) or a JSON list (``.json``)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        return json.dumps(list(rows), ensure_ascii=False, indent=1) + "\n"
    if ext != ".jsonl":
        raise DataError(f"{path}: output must end in .jsonl or .json (OpenRLHF loads both)")
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


