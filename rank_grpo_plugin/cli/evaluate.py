"""``rank-grpo evaluate``: score a model or a file of generated lists with both protocols."""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
import time
from typing import Dict, List, Optional

from ..data import default_data_dir
from .common import CliError, progress, read_catalog

DEFAULT_LIMIT = 100  # rows of the ReDial test split in the no-argument demo

DESCRIPTION = """\
Evaluate generated recommendation lists against ground truth, in the paper's protocol (seen and
out-of-catalog items dropped first; NDCG ideal over the filtered length) and the rank-aligned protocol (line k
is rank k, as the reward sees it). Outputs go to --out: metrics.json (every figure), summary.md, per_rank.png,
generations.jsonl when a model generated the lists (reusable with --predictions), and with --save-rows
rows.jsonl: every list's hits and metrics, one line per data row and sample (for paired comparisons).

Sources of the lists (one):
  --model DIR|smollm2   generation, one list per unique conversation (vLLM if importable, else HF generate):
                        greedy by default; --temperature T --num-samples N samples N lists per conversation and
                        reports every metric as mean +- sd over the N samples (small models' greedy lists are
                        often degenerate, their sampled ones are what RL trains on)
  --predictions FILE    JSONL/JSON rows with a completion (string or assistant message, or a list of N
                        strings: N sampled lists, scored as --num-samples N is), matched to the data by
                        prompt when the rows carry one, else by position (one per row or per conversation)
  --from-data           the data rows' own completion field (e.g. the Reddit-v2 SFT targets)

With no arguments: SmolLM2-135M-Instruct zero-shot on the first %d rows of the ReDial test split shipped in
rank_grpo_plugin/resources/redial ($RANK_GRPO_DATA/redial when that variable is set).
""" % DEFAULT_LIMIT


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("evaluate", help="evaluate a model or generated lists (paper + rank-aligned metrics)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="test rows (.jsonl/.json/save_to_disk dir); default: the shipped ReDial test split")
    p.add_argument("--split", help="split of a save_to_disk DatasetDict")
    p.add_argument("--catalog", help="item catalog (.jsonl/.json/.csv/.tsv/.pkl); default: the shipped ReDial catalog")
    p.add_argument("--limit", type=int, help=f"first N rows only (default {DEFAULT_LIMIT} in the no-argument "
                                             "demo, else all)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="HF checkpoint directory, or 'smollm2' (default when no source is given)")
    src.add_argument("--predictions", help="file of generated lists")
    src.add_argument("--from-data", action="store_true", help="use the rows' completion field as the outputs")
    f = p.add_argument_group("fields")
    f.add_argument("--prompt-field", default="prompt")
    f.add_argument("--completion-field", default="completion",
                   help="completion field in --predictions / --from-data rows")
    f.add_argument("--seen-field", default="seen_titles")
    f.add_argument("--groundtruth-field", default="groundtruth_with_release_year")
    g = p.add_argument_group("generation")
    g.add_argument("--backend", choices=["auto", "vllm", "hf"], default="auto")
    g.add_argument("--batch-size", type=int, default=16, help="HF generate batch size")
    g.add_argument("--max-new-tokens", type=int, default=320)
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    g.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature (default 0: greedy, one list per conversation)")
    g.add_argument("--num-samples", type=int, default=1,
                   help="lists sampled per conversation with --temperature > 0 (metrics: mean +- sd over samples)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    m = p.add_argument_group("metrics")
    m.add_argument("--k", type=int, default=20, help="list length K asked of the model (default 20)")
    m.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20], help="cut-offs (default 5 10 20)")
    m.add_argument("--year-tolerance", type=int, default=2)
    m.add_argument("--truncate-first", action="store_true",
                   help="paper protocol variant: keep the first K parsed items before dropping seen/out-of-catalog")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="output directory (default runs/eval-<name>)")
    o.add_argument("--name", help="run name shown in reports")
    o.add_argument("--save-rows", action="store_true",
                   help="also write rows.jsonl: per-row hits and metrics of every list (one line per row and sample)")
    o.add_argument("--group-field", metavar="FIELD",
                   help="with --save-rows: a data field (dotted for nested, e.g. task.dialog_id, ReDial's dialogue) "
                        "whose value groups rows that are not independent; 'report --paired' resamples these "
                        "groups (default: rows of one conversation, the same prompt)")
    o.add_argument("--no-plot", action="store_true")
    p.set_defaults(func=run)


def _defaults(args: argparse.Namespace) -> None:
    demo = not (args.data or args.catalog or args.model or args.predictions or args.from_data)
    if bool(args.data) != bool(args.catalog):
        raise CliError("give --data and --catalog together (without both, the shipped ReDial test split and its "
                       "catalog are used)")
    if not args.data:
        data_dir = default_data_dir()
        args.data = str(data_dir / "redial" / "test.jsonl")
        args.catalog = str(data_dir / "redial" / "catalog.jsonl")
    if demo and args.limit is None:
        args.limit = DEFAULT_LIMIT
    if not (args.model or args.predictions or args.from_data):
        from .generate import SMOLLM2

        args.model = SMOLLM2


def _read_predictions(path: str, rows, keys: List[str], prompt_field: str,
                      completion_field: str) -> List[List[str]]:
    """The completions of every data row, ``[sample][row]``: N samples when each record's completion is a list of
    N strings (what a sampled ``--model`` evaluation writes to generations.jsonl), else one."""
    from ..data import completion_text, iter_records

    preds = list(iter_records(path))
    texts, prompts, n_samples = [], [], None
    for where, rec in preds:
        if not isinstance(rec, dict) or completion_field not in rec:
            raise CliError(f"{where}: field {completion_field!r} is missing")
        value = rec[completion_field]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            samples = list(value)  # N sampled lists of one conversation
        else:
            text = completion_text(value)
            if text is None:
                raise CliError(f"{where}: field {completion_field!r}: expected a string, an assistant message or a "
                               "list of strings (sampled lists)")
            samples = [text]
        if n_samples is None:
            n_samples, first = len(samples), where
        elif len(samples) != n_samples:
            raise CliError(f"{where}: field {completion_field!r} holds {len(samples)} list(s), but {first} holds "
                           f"{n_samples}; every prediction needs the same number of samples")
        texts.append(samples)
        prompts.append(rec.get(prompt_field))
    aligned = _align(path, preds, rows, keys, texts, prompts, prompt_field)
    return [[t[s] for t in aligned] for s in range(n_samples or 1)]


def _align(path: str, preds, rows, keys: List[str], texts: list, prompts: list, prompt_field: str) -> list:
    """``texts`` (one entry per prediction record) in data-row order: matched by prompt when every record has
    one, else by position (one record per row or per conversation)."""
    if all(p is not None for p in prompts):
        from ..data import check_prompt as _check_prompt  # the row schema's prompt validator

        by_key: Dict[str, list] = {}
        for (where, _), prompt, text in zip(preds, prompts, texts):
            try:
                msgs = _check_prompt(prompt, prompt_field)
            except Exception as e:
                raise CliError(f"{where}: {e}") from None
            by_key[json.dumps(msgs, ensure_ascii=False, sort_keys=True)] = text
        missing = [r.where for r, k in zip(rows, keys) if k not in by_key]
        if missing:
            raise CliError(f"{path}: no prediction for the prompt of {len(missing)} row(s), first: {missing[0]}")
        return [by_key[k] for k in keys]
    unique = list(dict.fromkeys(keys))
    if len(texts) == len(rows):
        return texts
    if len(texts) == len(unique):
        pos = {k: i for i, k in enumerate(unique)}
        return [texts[pos[k]] for k in keys]
    raise CliError(f"{path}: {len(texts)} predictions without a {prompt_field!r} field, but the data has "
                   f"{len(rows)} rows and {len(unique)} conversations; cannot align them")


def _group_of(row, path: List[str]) -> str:
    """The value of the dotted field ``path`` in a data row (kept by ``load_rows``), as a string."""
    value = row.extra
    for i, key in enumerate(path):
        if not isinstance(value, dict) or key not in value:
            raise CliError(f"{row.where}: --group-field {'.'.join(path)}: no field {'.'.join(path[:i + 1])!r}")
        value = value[key]
    if isinstance(value, (dict, list)) or value is None:
        raise CliError(f"{row.where}: --group-field {'.'.join(path)}: expected a string or number, got {value!r:.60}")
    return str(value)


def _data_tag(path: str) -> str:
    """'redial-test' for .../redial/test.jsonl (the file name alone is often just 'test')."""
    p = os.path.abspath(path.rstrip("/"))
    stem = os.path.splitext(os.path.basename(p))[0]
    parent = os.path.basename(os.path.dirname(p))
    return f"{parent}-{stem}" if parent else stem


def run(args: argparse.Namespace) -> int:
    from ..data import Fields, load_rows
    from ..files import write_atomic
    from ..recsys.evaluation import aggregate, evaluate_list, sample_spread
    from .report import plot_per_rank, summary_markdown

    _defaults(args)
    if args.k < 1 or any(c < 1 for c in args.ks):
        raise CliError("--k and --ks must be positive")
    t_start = time.time()
    fields = Fields(args.prompt_field, args.completion_field, args.seen_field, args.groundtruth_field)
    if args.group_field and not args.save_rows:
        raise CliError("--group-field applies with --save-rows")
    group_path = args.group_field.split(".") if args.group_field else []
    rows = load_rows(args.data, fields, need_completion=args.from_data, split=args.split, limit=args.limit,
                     keep=group_path[:1])
    groups = [_group_of(r, group_path) for r in rows] if group_path else None
    catalog = read_catalog(args.catalog)
    keys = [r.prompt_key() for r in rows]
    unique = list(dict.fromkeys(keys))
    first_row = {}
    for r, key in zip(rows, keys):
        first_row.setdefault(key, r)
    config = {"data": args.data, "catalog": args.catalog, "catalog_items": len(catalog), "limit": args.limit,
              "k": args.k, "ks": list(args.ks), "year_tolerance": args.year_tolerance,
              "truncate_first": args.truncate_first, "rows": len(rows), "conversations": len(unique)}
    timing: Dict[str, Optional[float]] = {"generation_s": None}
    generations = None
    per_sample: List[List[str]]  # the lists to score, [sample][row]
    if (args.temperature != 0 or args.num_samples != 1) and not args.model:
        raise CliError("--temperature / --num-samples apply to --model generation only (--predictions takes N "
                       "sampled lists per record as a list of N strings)")
    if args.from_data:
        per_sample = [[r.completion or "" for r in rows]]
        config["predictions"] = f"{args.data} [{args.completion_field}]"
        name = args.name or f"{_data_tag(args.data)}-{args.completion_field}"
    elif args.predictions:
        per_sample = _read_predictions(args.predictions, rows, keys, args.prompt_field, args.completion_field)
        config.update(predictions=args.predictions, num_samples=len(per_sample))
        name = args.name or os.path.splitext(os.path.basename(args.predictions))[0]
    else:
        from .generate import generate_samples, resolve_model

        model_dir, model_name = resolve_model(args.model)
        t0 = time.time()
        texts, backend = generate_samples(model_dir, [first_row[k].prompt for k in unique], args.backend,
                                          args.batch_size, args.max_new_tokens, args.dtype, args.seed,
                                          args.temperature, args.num_samples)
        timing["generation_s"] = time.time() - t0
        timing["lists_per_s"] = len(unique) * args.num_samples / max(timing["generation_s"], 1e-9)
        by_key = dict(zip(unique, texts))
        per_sample = [[by_key[k][s] for k in keys] for s in range(args.num_samples)]
        generations = [{args.prompt_field: first_row[k].prompt,
                        args.completion_field: by_key[k][0] if args.num_samples == 1 else by_key[k]}
                       for k in unique]
        decoding = "greedy" if args.temperature == 0 else f"sampled (T={args.temperature}, n={args.num_samples})"
        config.update(model=str(args.model), model_dir=str(model_dir), backend=backend,
                      max_new_tokens=args.max_new_tokens, decoding=decoding, temperature=args.temperature,
                      num_samples=args.num_samples, seed=args.seed)
        name = args.name or f"{model_name}-{_data_tag(args.data)}"

    t0 = time.time()
    truncate = args.k if args.truncate_first else None
    pairs = [(row, text) for texts in per_sample for row, text in zip(rows, texts)]
    evals = []
    for row, text in progress(pairs, "evaluate", unit="list"):
        evals.append(evaluate_list(text, row.groundtruth, row.seen, catalog, ks=args.ks, k=args.k,
                                   year_tolerance=args.year_tolerance, truncate_first=truncate))
    timing["evaluation_s"] = time.time() - t0
    timing["total_s"] = time.time() - t_start
    result = {"name": name, "created": datetime.datetime.now().isoformat(timespec="seconds"),
              "config": config, "timing": timing, "summary": aggregate(evals, k=args.k)}
    if len(per_sample) > 1:
        result["samples"] = sample_spread([aggregate(evals[i * len(rows):(i + 1) * len(rows)], k=args.k)
                                           for i in range(len(per_sample))])

    out = args.out or os.path.join("runs", f"eval-{name}")
    os.makedirs(out, exist_ok=True)
    files = {"metrics.json": json.dumps(result, ensure_ascii=False, indent=1) + "\n",
             "summary.md": f"# Evaluation: {name}\n\n" + summary_markdown(result)}
    if generations is not None:
        files["generations.jsonl"] = "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in generations)
    if args.save_rows:  # evals is [sample][row] flattened, as pairs; conversation: a digest of the prompt
        conv = [hashlib.sha1(k.encode("utf-8")).hexdigest()[:16] for k in keys]
        cluster = groups or conv
        files["rows.jsonl"] = "".join(
            json.dumps({"where": r.where, "sample": i // len(rows), "conversation": conv[i % len(rows)],
                        "cluster": cluster[i % len(rows)], "completion": c, "paper_hits": e.paper_hits,
                        "rank_hits": e.rank_hits, "metrics": e.metrics}, ensure_ascii=False) + "\n"
            for i, ((r, c), e) in enumerate(zip(pairs, evals)))
    for fname, text in files.items():
        write_atomic(os.path.join(out, fname), text)
    if not args.no_plot:
        plot_per_rank([result], [name], os.path.join(out, "per_rank.png"))
    print(summary_markdown(result))
    print(f"wrote {out}/ ({', '.join(sorted(files))}{'' if args.no_plot else ', per_rank.png'})", file=sys.stderr)
    return 0
