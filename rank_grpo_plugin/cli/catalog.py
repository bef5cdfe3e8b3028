"""``rank-grpo catalog``: build, convert and inspect item catalogs."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from collections import Counter, defaultdict
from typing import Dict, List, Tuple

from .common import CliError, progress, read_catalog


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("catalog", help="build | convert | inspect item catalogs",
                       description="Item catalogs ({title, year} JSONL). The official gt_catalog.pkl is read by a "
                                   "safe opcode interpreter that never executes pickle code.")
    csub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)

    b = csub.add_parser("build", help="catalog from the ground truth of dataset splits and/or catalog files")
    b.add_argument("--data", nargs="*", default=[], metavar="ROWS",
                   help="dataset splits (.jsonl/.json/save_to_disk dir); their ground-truth items are collected")
    b.add_argument("--split", help="split of a save_to_disk DatasetDict")
    b.add_argument("--groundtruth-field", default="groundtruth_with_release_year")
    b.add_argument("--catalog", nargs="*", default=[], metavar="FILE",
                   help="catalog files to merge: .jsonl/.json/.csv/.tsv with title,year or the official .pkl")
    b.add_argument("-o", "--out", required=True, help="output catalog (.jsonl)")
    b.set_defaults(func=run_build)

    c = csub.add_parser("convert", help="convert one catalog (.pkl/.csv/.tsv/.json/.jsonl) to JSONL")
    c.add_argument("source")
    c.add_argument("-o", "--out", required=True, help="output catalog (.jsonl)")
    c.set_defaults(func=run_convert)

    i = csub.add_parser("inspect", help="size, year range, duplicates and suspicious entries")
    i.add_argument("source", help="catalog file (.jsonl/.json/.csv/.tsv/.pkl)")
    i.add_argument("--json", action="store_true", help="print the report as JSON")
    i.add_argument("--show", type=int, default=10, help="examples shown per finding (default 10)")
    i.set_defaults(func=run_inspect)


def _dedupe(items) -> List[Tuple[str, int]]:
    seen = set()
    out = []
    for title, year in items:
        if (title, year) not in seen:
            seen.add((title, year))
            out.append((title, year))
    return out


def _check_out(path: str) -> None:
    if os.path.splitext(path)[1].lower() != ".jsonl":
        raise CliError(f"{path}: the output catalog must be .jsonl")


def run_build(args: argparse.Namespace) -> int:
    from ..data import DataError, iter_records
    from ..data import check_groundtruth as _check_groundtruth
    from ..recsys.catalog import Catalog

    _check_out(args.out)
    if not args.data and not args.catalog:
        raise CliError("nothing to build from: give --data ROWS... and/or --catalog FILE...")
    items: List[Tuple[str, int]] = []
    for path in args.catalog:
        items += read_catalog(path).items
    for path in args.data:
        for where, rec in progress(iter_records(path, args.split), f"catalog {os.path.basename(path)}", unit="row"):
            if not isinstance(rec, dict) or args.groundtruth_field not in rec:
                raise DataError(f"{where}: field {args.groundtruth_field!r} is missing")
            try:
                items += _check_groundtruth(rec[args.groundtruth_field], args.groundtruth_field)
            except DataError as e:
                raise DataError(f"{where}: {e}") from None
    cat = Catalog(_dedupe(items), source=args.out)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cat.to_jsonl(args.out)
    print(f"wrote {args.out}: {len(cat)} items ({len(items)} collected before de-duplication)", file=sys.stderr)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    _check_out(args.out)
    cat = read_catalog(args.source)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cat.to_jsonl(args.out)
    print(f"wrote {args.out}: {len(cat)} items from {args.source}", file=sys.stderr)
    return 0


_YEAR_IN_TITLE = re.compile(r"\(\s*\d{4}\s*\)\s*$")


def inspect_catalog(items: List[Tuple[str, int]], show: int = 10) -> Dict[str, object]:
    """Facts and suspicious entries of a catalog (JSON-ready)."""
    from ..recsys.parse import normalize_title

    max_year = datetime.date.today().year + 3
    years = [y for _, y in items]
    exact = Counter(items)
    by_key: Dict[Tuple[str, int], set] = defaultdict(set)
    by_title: Dict[str, set] = defaultdict(set)
    for t, y in items:
        by_key[(normalize_title(t), y)].add(t)
        by_title[normalize_title(t)].add(y)
    exact_dups = [[t, y, n] for (t, y), n in exact.items() if n > 1]
    case_variants = [sorted(v) + [y] for (k, y), v in by_key.items() if len(v) > 1]
    multi_year = sorted(([t, sorted(ys)] for t, ys in by_title.items() if len(ys) > 1), key=lambda x: x[0])
    bad_year = [[t, y] for t, y in items if y < 1870 or y > max_year]
    odd_title = [[t, y] for t, y in items
                 if t != t.strip() or "  " in t or _YEAR_IN_TITLE.search(t) or "\n" in t or "\t" in t]
    return {
        "items": len(items),
        "unique_items": len(exact),
        "unique_titles": len(by_title),
        "year_min": min(years) if years else None,
        "year_max": max(years) if years else None,
        "exact_duplicates": {"count": len(exact_dups), "examples": exact_dups[:show]},
        "case_variants": {"count": len(case_variants), "examples": case_variants[:show]},
        "titles_with_several_years": {"count": len(multi_year), "examples": multi_year[:show]},
        "suspicious_years": {"count": len(bad_year), "rule": f"year < 1870 or > {max_year}",
                             "examples": bad_year[:show]},
        "suspicious_titles": {"count": len(odd_title), "rule": "surrounding/double spaces, a '(YYYY)' suffix, "
                              "tabs or newlines", "examples": odd_title[:show]},
    }


def run_inspect(args: argparse.Namespace) -> int:
    cat = read_catalog(args.source)
    report = inspect_catalog(cat.items, args.show)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return 0
    print(f"catalog {args.source}")
    print(f"  items: {report['items']} ({report['unique_items']} unique rows, {report['unique_titles']} unique "
          f"normalised titles)")
    print(f"  years: {report['year_min']} .. {report['year_max']}")
    labels = {
        "exact_duplicates": "exact duplicate rows [title, year, count]",
        "case_variants": "titles differing only in case/spacing (same year)",
        "titles_with_several_years": "titles listed with several years (remakes or errors)",
        "suspicious_years": "suspicious years",
        "suspicious_titles": "suspicious titles",
    }
    for key, label in labels.items():
        finding = report[key]
        rule = f" ({finding['rule']})" if "rule" in finding else ""
        print(f"  {label}{rule}: {finding['count']}")
        for ex in finding["examples"]:
            print(f"      {json.dumps(ex, ensure_ascii=False)}")
    return 0
