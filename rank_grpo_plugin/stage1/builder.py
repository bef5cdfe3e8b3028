"""The Stage-1 pipeline: teacher lists -> Remap -> Reflect -> Adjust -> SFT dataset + report.

Resumable by construction: every teacher request goes through the on-disk answer cache and the catalog
embedding is cached, so a rerun (after a crash, or with other Adjust/Reflect settings) pays for nothing twice and
recomputes the cheap steps. Outputs are written only after every step succeeded, each file atomically
(temp file + rename):

    OUT/sft.jsonl          {"input": chat messages, "output": [{"role": "assistant", "content": 20 "Title (Year)"
                           lines, no trailing newline}]}: openrlhf.cli.train_sft --data.input_key input
                           --data.output_key output --data.apply_chat_template
    OUT/lists.jsonl        per row: teacher items, candidates, ratings and the list after each step
    OUT/adjust_params.json fitted w, b per catalog item (+ catalog fingerprint, penalties, loss)
    OUT/report.json/.md    counters and Recall/NDCG@K after each step
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..files import atomic_paths
from ..recsys.catalog import Catalog
from ..recsys.evaluation import evaluate_list
from ..recsys.match import catalog_hits
from ..recsys.parse import normalize_title, parse_line, split_ranks
from .adjust import apply_adjust, fit_adjust
from .data import BuildError, CatalogIndex, Row, conversation_text, item_line, load_rows, prompt_hash
from .reflect import parse_ratings, reflect_messages, reflect_scores
from .remap import DEFAULT_EMBEDDER, catalog_embeddings, make_embedder, remap_scores, top_candidates

__all__ = ["BuildConfig", "build_bc_data", "parse_teacher_list", "evaluate_lists"]


@dataclass
class BuildConfig:
    data: str
    catalog: str
    out: str
    # teacher endpoint
    base_url: Optional[str] = None
    model: Optional[str] = None
    api_key: Optional[str] = None
    cache: Optional[str] = None  # default OUT/teacher_cache.sqlite
    concurrency: int = 4
    max_retries: int = 6
    timeout: float = 120.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    temperature: float = 0.0
    max_tokens: int = 1024
    seed: Optional[int] = None
    price_input: float = 0.0
    price_output: float = 0.0
    # remap
    embedder: str = DEFAULT_EMBEDDER
    embed_cache: Optional[str] = None  # default OUT/embeddings
    embed_batch_size: int = 128
    k: int = 20
    teacher_items: int = 20
    n_candidates: int = 100
    lambda_conv: float = 1.0
    # reflect
    reflect: bool = True
    n_reflect: int = 40
    reflect_weight: float = 0.5
    # adjust
    adjust: bool = True
    lambda_w: float = 0.01
    lambda_b: float = 0.01
    holdout: bool = True
    # misc
    year_tolerance: int = 2
    limit: Optional[int] = None
    batch_size: int = 256
    progress: bool = True

    def check(self) -> None:
        def bad(flag, msg):
            raise BuildError(f"{flag}: {msg}")
        if self.k < 1:
            bad("--k", f"must be >= 1, got {self.k}")
        if self.teacher_items < 1:
            bad("--teacher-items", f"must be >= 1, got {self.teacher_items}")
        if self.n_candidates < self.k:
            bad("--n-candidates", f"must be >= --k ({self.k}), got {self.n_candidates}")
        if self.reflect and not (1 <= self.n_reflect <= self.n_candidates):
            bad("--n-reflect", f"must be in 1..--n-candidates ({self.n_candidates}), got {self.n_reflect}")
        for flag, v in (("--lambda-w", self.lambda_w), ("--lambda-b", self.lambda_b)):
            if not (v >= 0 and math.isfinite(v)):
                bad(flag, f"must be a finite number >= 0, got {v}")
        if self.limit is not None and self.limit < 1:
            bad("--limit", f"must be >= 1, got {self.limit}")
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            bad("--out", f"{self.out} exists and is not a directory")


# ---------------------------------------------------------------------------------------------- teacher lists
@dataclass
class TeacherList:
    items: List[Tuple[str, int]]  # parsed (title, year), first occurrence, in teacher rank order
    unparsable_lines: int = 0
    duplicates: int = 0
    failed: bool = False


def parse_teacher_list(text: Optional[str], max_items: int = 20) -> TeacherList:
    """Parse a teacher answer as far as possible: every line that parses as "Title (Year)" is an item (numbering,
    bullets, quotes and emphasis are tolerated by :func:`parse_line`); non-blank lines that do not are counted;
    repeats are dropped; at most ``max_items`` items are kept. ``None`` (a failed request) is an empty list."""
    if text is None:
        return TeacherList([], failed=True)
    out = TeacherList([])
    keys = set()
    for line in text.split("\n"):
        if not line.strip():
            continue
        p = parse_line(line)
        if p is None:
            out.unparsable_lines += 1
            continue
        key = (normalize_title(p.title), p.year)
        if key in keys:
            out.duplicates += 1
            continue
        keys.add(key)
        if len(out.items) < max_items:
            out.items.append((p.title, p.year))
    return out


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_lists(texts: Sequence[str], rows: Sequence[Row], catalog: Catalog, k: int,
                   year_tolerance: int) -> Dict[str, float]:
    """Stage 1's report of one list per row, scored by :func:`~rank_grpo_plugin.recsys.evaluation.evaluate_list`:
    the mean rank-aligned Recall@k / NDCG@k over rows with ground truth, the fraction of the first k lines that
    are in-catalog items and the mean number of such lines."""
    evals = [evaluate_list(text, row.groundtruth, row.seen, catalog, ks=(k,), k=k, year_tolerance=year_tolerance)
             for text, row in zip(texts, rows)]
    scored = [e for e in evals if e.n_groundtruth]
    n = max(1, len(scored))
    lines = sum(len(split_ranks(text, k)) if text else 0 for text in texts)
    in_cat = sum(sum(e.rank_in_catalog) for e in evals)
    return {"recall": sum(e.metrics[f"rank/recall@{k}"] for e in scored) / n,
            "ndcg": sum(e.metrics[f"rank/ndcg@{k}"] for e in scored) / n,
            "in_catalog": in_cat / lines if lines else 0.0, "lines_per_list": lines / max(1, len(texts))}


# ---------------------------------------------------------------------------------------------- pipeline
def _ranked_lines(order_scores: torch.Tensor, cand_idx: torch.Tensor, index: CatalogIndex, k: int) -> List[str]:
    order = torch.sort(order_scores, dim=1, descending=True, stable=True).indices[:, :k]
    picked = torch.gather(cand_idx, 1, order)
    return ["\n".join(index.lines[c] for c in row) for row in picked.tolist()]


def build_bc_data(cfg: BuildConfig, client=None, embedder=None, log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Run every step and write the outputs; returns the report dict.

    ``client`` (a :class:`~rank_grpo_plugin.stage1.teacher.TeacherClient`) and ``embedder`` (callable texts ->
    [n, D] unit-norm tensor, with ``model_id``) are built from ``cfg`` when not given.
    """
    t_start = time.monotonic()
    cfg.check()
    own_client = client is None
    rows = load_rows(cfg.data, cfg.limit)
    catalog = Catalog.from_file(cfg.catalog)
    index = CatalogIndex(catalog)
    n_eligible = sum(index.eligible)
    if n_eligible < cfg.n_candidates:
        raise BuildError(f"--n-candidates {cfg.n_candidates} exceeds the {n_eligible} writable items of {cfg.catalog}")
    os.makedirs(cfg.out, exist_ok=True)
    report: Dict[str, Any] = {
        "config": {k: v for k, v in asdict(cfg).items() if k != "api_key"},
        "rows": len(rows), "conversations": len({r.prompt_key() for r in rows}),
        "catalog": {"items": len(index), "writable": n_eligible, "unwritable": index.n_unwritable,
                    "case_duplicates": index.n_duplicates, "fingerprint": index.fingerprint},
    }
    if client is None:
        from .teacher import TeacherClient

        params: Dict[str, Any] = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
        if cfg.seed is not None:
            params["seed"] = cfg.seed
        client = TeacherClient(cfg.base_url or os.environ.get("OPENAI_BASE_URL", ""),
                               cfg.model or os.environ.get("RANK_GRPO_TEACHER_MODEL", ""),
                               cfg.api_key or os.environ.get("OPENAI_API_KEY"),
                               cache_path=cfg.cache or os.path.join(cfg.out, "teacher_cache.sqlite"),
                               concurrency=cfg.concurrency, max_retries=cfg.max_retries, timeout=cfg.timeout,
                               backoff_base=cfg.backoff_base, backoff_max=cfg.backoff_max,
                               price_input=cfg.price_input, price_output=cfg.price_output, params=params,
                               progress=cfg.progress)

    try:
        return _build(cfg, client, embedder, log, rows, catalog, index, report, t_start)
    finally:
        if own_client:
            client.close()


def _build(cfg, client, embedder, log, rows, catalog, index, report, t_start):
    # 1. teacher lists ------------------------------------------------------------------------------------------
    log(f"teacher lists for {len(rows)} rows ({report['conversations']} distinct prompts)")
    answers = client.complete_many([r.prompt for r in rows], desc="teacher lists")
    tlists = [parse_teacher_list(a.text, cfg.teacher_items) for a in answers]
    n_items = sum(len(t.items) for t in tlists)
    n_in_cat = sum(index.lookup(*it) >= 0 for t in tlists for it in t.items)
    report["teacher"] = {
        "answers_failed": sum(t.failed for t in tlists),
        "answers_malformed": sum((not t.failed) and (t.unparsable_lines > 0 or len(t.items) < cfg.k) for t in tlists),
        "unparsable_lines": sum(t.unparsable_lines for t in tlists),
        "duplicate_items": sum(t.duplicates for t in tlists),
        "items": n_items, "items_in_catalog": n_in_cat,
        "errors": sorted({a.error for a in answers if a.error})[:5],
    }

    # 2. remap ------------------------------------------------------------------------------------------------------
    if embedder is None:
        embedder = make_embedder(cfg.embedder, cfg.embed_batch_size)
    t0 = time.monotonic()
    cat_emb, cached = catalog_embeddings(embedder, index.lines, cfg.embed_cache or os.path.join(cfg.out, "embeddings"),
                                         embedder.model_id)
    item_texts = sorted({item_line(t, y) for tl in tlists for t, y in tl.items})
    item_pos = {s: i for i, s in enumerate(item_texts)}
    item_emb = embedder(item_texts) if item_texts else torch.zeros(0, cat_emb.shape[1])
    convs = [conversation_text(r.prompt) for r in rows]
    conv_texts = sorted(set(convs))
    conv_pos = {s: i for i, s in enumerate(conv_texts)}
    conv_emb = embedder(conv_texts)
    eligible = torch.tensor(index.eligible)
    K = max(1, cfg.teacher_items)
    D = cat_emb.shape[1]
    cand_chunks, score_chunks = [], []
    for lo in range(0, len(rows), cfg.batch_size):
        batch = range(lo, min(len(rows), lo + cfg.batch_size))
        B = len(batch)
        temb = torch.zeros(B, K, D)
        mask = torch.zeros(B, K, dtype=torch.bool)
        exact = torch.full((B, K), -1, dtype=torch.long)
        banned = (~eligible).unsqueeze(0).repeat(B, 1)
        for j, i in enumerate(batch):
            for r, (t, y) in enumerate(tlists[i].items[:K]):
                temb[j, r] = item_emb[item_pos[item_line(t, y)]]
                mask[j, r] = True
                exact[j, r] = index.lookup(t, y)
            seen = index.seen_indices(rows[i].seen)
            if seen:
                banned[j, seen] = True
        q = conv_emb[[conv_pos[convs[i]] for i in batch]]
        scores = remap_scores(temb, mask, exact, q, cat_emb, lam=cfg.lambda_conv)
        try:
            idx, val = top_candidates(scores, banned, cfg.n_candidates)
        except ValueError as e:
            raise BuildError(f"{cfg.data}: rows {batch.start + 1}..{batch.stop}: {e}") from None
        cand_chunks.append(idx)
        score_chunks.append(val)
    cand_idx = torch.cat(cand_chunks)
    s_remap = torch.cat(score_chunks)
    report["remap"] = {"embedder": embedder.model_id, "catalog_embedding_cached": cached,
                       "seconds": round(time.monotonic() - t0, 2), "teacher_item_texts": len(item_texts)}
    log(f"remap: {len(rows)} x {cfg.n_candidates} candidates in {report['remap']['seconds']} s")

    # ground-truth indicator over candidates (same matching rules as the evaluation)
    targets = torch.zeros_like(s_remap)
    n_gt = 0
    for i, row in enumerate(rows):
        gt = [[t, y] for t, y in row.groundtruth]
        n_gt += len(gt)
        if gt:
            text = "\n".join(index.lines[c] for c in cand_idx[i].tolist())
            hits = catalog_hits(text, gt, row.seen, catalog, k=cfg.n_candidates, year_tolerance=cfg.year_tolerance)
            targets[i] = torch.tensor(hits, dtype=targets.dtype)
    report["remap"]["groundtruth_in_candidates"] = float(targets.sum()) / max(1, n_gt)

    # 3. reflect ----------------------------------------------------------------------------------------------------
    ratings = torch.zeros_like(s_remap)
    if cfg.reflect:
        nr = cfg.n_reflect
        msgs = [reflect_messages(convs[i], [index.lines[c] for c in cand_idx[i, :nr].tolist()]) for i in range(len(rows))]
        log(f"reflect: rating top-{nr} candidates")
        answers_r = client.complete_many(msgs, desc="reflect ratings",
                                         params={"max_tokens": max(64, 8 * nr + 32)})
        parsed = [parse_ratings(a.text, nr) for a in answers_r]
        for i, p in enumerate(parsed):
            ratings[i, :nr] = torch.tensor([r if r is not None else 0 for r in p.ratings], dtype=ratings.dtype)
        report["reflect"] = {
            "answers_failed": sum(a.text is None for a in answers_r),
            "answers_incomplete": sum(a.text is not None and p.n_rated < nr for a, p in zip(answers_r, parsed)),
            "ratings_parsed": sum(p.n_rated for p in parsed), "ratings_requested": nr * len(rows),
            "malformed_lines": sum(p.n_malformed for p in parsed),
            "rating_histogram": {str(v): int((ratings[:, :nr] == v).sum()) for v in range(-2, 3)},
        }
    s_reflect = reflect_scores(s_remap, ratings, cfg.reflect_weight) if cfg.reflect else s_remap

    # 4. adjust -----------------------------------------------------------------------------------------------------
    steps: Dict[str, torch.Tensor] = {"remap": s_remap}
    if cfg.reflect:
        steps["reflect"] = s_reflect
    final = s_reflect
    w = b = None
    if cfg.adjust:
        t0 = time.monotonic()
        fit = fit_adjust(s_reflect, cand_idx, targets, len(index), cfg.lambda_w, cfg.lambda_b)
        w, b = fit.w, fit.b
        final = apply_adjust(s_reflect, cand_idx, w, b)
        steps["adjust"] = final
        report["adjust"] = {"loss": fit.loss, "lbfgs_iterations": fit.n_iter, "targets": fit.n_targets,
                            "seconds": round(time.monotonic() - t0, 2),
                            "w_range": [float(w.min()), float(w.max())], "b_range": [float(b.min()), float(b.max())]}
        if cfg.holdout:
            fold = torch.tensor([int(prompt_hash(r)[:8], 16) % 2 for r in rows])
            if 0 < int(fold.sum()) < len(rows):
                held = torch.empty_like(s_reflect)
                for f in (0, 1):
                    tr, te = fold != f, fold == f
                    fit_f = fit_adjust(s_reflect[tr], cand_idx[tr], targets[tr], len(index), cfg.lambda_w, cfg.lambda_b)
                    held[te] = apply_adjust(s_reflect[te], cand_idx[te], fit_f.w, fit_f.b)
                steps["adjust_heldout"] = held

    # 5. lists, evaluation, outputs ---------------------------------------------------------------------------------
    lists = {name: _ranked_lines(s, cand_idx, index, cfg.k) for name, s in steps.items()}
    final_lists = _ranked_lines(final, cand_idx, index, cfg.k)
    evals: Dict[str, Dict[str, float]] = {}
    evals["teacher"] = evaluate_lists(["\n".join(item_line(t, y) for t, y in tl.items) for tl in tlists],
                                      rows, catalog, cfg.k, cfg.year_tolerance)
    for name, texts in lists.items():
        evals[name] = evaluate_lists(texts, rows, catalog, cfg.k, cfg.year_tolerance)
    refs = [r.completion for r in rows]
    if all(isinstance(t, str) for t in refs):
        evals["reference"] = evaluate_lists(refs, rows, catalog, cfg.k, cfg.year_tolerance)
    final_eval = evaluate_lists(final_lists, rows, catalog, cfg.k, cfg.year_tolerance)
    if final_eval["in_catalog"] != 1.0 or final_eval["lines_per_list"] != cfg.k:
        raise BuildError(f"internal check failed: built lists are {final_eval['in_catalog']:.2%} in catalog with "
                         f"{final_eval['lines_per_list']} lines on average (expected 100% and {cfg.k})")
    report["metrics"] = evals
    report["final_step"] = "adjust" if cfg.adjust else ("reflect" if cfg.reflect else "remap")
    report["teacher_client"] = client.stats.as_dict() if hasattr(client, "stats") else {}
    report["seconds"] = round(time.monotonic() - t_start, 2)

    paths = {name: os.path.join(cfg.out, name) for name in
             ("sft.jsonl", "lists.jsonl", "adjust_params.json", "report.json", "report.md")}

    def w_sft(f):
        for row, text in zip(rows, final_lists):
            # OpenRLHF 0.11.2 SFTDataset (apply_chat_template + output_key) concatenates input + output, so both
            # must be message lists: output is the assistant turn (same format as ``rank-grpo prepare --sft``).
            f.write(json.dumps({"input": row.prompt, "output": [{"role": "assistant", "content": text}]},
                               ensure_ascii=False) + "\n")

    def w_lists(f):
        for i, row in enumerate(rows):
            rec = {"row": i, "teacher_items": [item_line(t, y) for t, y in tlists[i].items],
                   "teacher_failed": tlists[i].failed,
                   "candidates": [index.lines[c] for c in cand_idx[i].tolist()],
                   "remap_scores": [round(v, 5) for v in s_remap[i].tolist()],
                   "ratings": [int(v) for v in ratings[i].tolist()] if cfg.reflect else None,
                   "lists": {name: texts[i].split("\n") for name, texts in lists.items()}}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    writers = {"sft.jsonl": w_sft, "lists.jsonl": w_lists}
    if w is not None:
        params_doc = {"catalog_fingerprint": index.fingerprint, "catalog_items": len(index),
                      "lambda_w": cfg.lambda_w, "lambda_b": cfg.lambda_b, "reflect_weight": cfg.reflect_weight,
                      "lambda_conv": cfg.lambda_conv, "loss": report["adjust"]["loss"],
                      "w": [round(v, 6) for v in w.tolist()], "b": [round(v, 6) for v in b.tolist()]}
        writers["adjust_params.json"] = lambda f: json.dump(params_doc, f)
    writers["report.json"] = lambda f: json.dump(report, f, indent=2, default=str)
    writers["report.md"] = lambda f: f.write(format_report(report))
    with atomic_paths(*(paths[name] for name in writers)) as tmps:  # all files replaced, or none
        for tmp, writer in zip(tmps, writers.values()):
            with open(tmp, "w", encoding="utf-8") as f:
                writer(f)
    report["outputs"] = {k: v for k, v in paths.items() if os.path.exists(v)}
    return report


_STEP_LABELS = [
    ("teacher", "teacher lists as parsed (not grounded)"),
    ("remap", "Remap"),
    ("reflect", "Remap + Reflect"),
    ("adjust", "Remap + Reflect + Adjust (fitted on these rows; the SFT targets)"),
    ("adjust_heldout", "... Adjust, 2-fold held-out by conversation"),
    ("reference", "rows' existing `completion` (reference)"),
]


def format_report(report: Dict[str, Any]) -> str:
    k = report["config"]["k"]
    lines = ["# Stage-1 behaviour-cloning data report", "",
             f"{report['rows']} rows ({report['conversations']} distinct prompts), catalog of "
             f"{report['catalog']['items']} items ({report['catalog']['writable']} writable).", "",
             f"| step | Recall@{k} | NDCG@{k} | in-catalog lines |", "|---|---|---|---|"]
    for name, label in _STEP_LABELS:
        m = report["metrics"].get(name)
        if m is None:
            continue
        if name == "adjust" and not report["config"]["reflect"]:
            label = "Remap + Adjust (fitted on these rows; the SFT targets)"
        lines.append(f"| {label} | {m['recall']:.4f} | {m['ndcg']:.4f} | {m['in_catalog']:.1%} |")
    t = report["teacher"]
    lines += ["", f"Teacher: {t['items']} items parsed ({t['items_in_catalog']} exactly in catalog), "
              f"{t['answers_failed']} failed answers, {t['answers_malformed']} malformed answers, "
              f"{t['unparsable_lines']} unparsable lines."]
    if "reflect" in report:
        r = report["reflect"]
        lines.append(f"Reflect: {r['ratings_parsed']}/{r['ratings_requested']} ratings parsed, "
                     f"{r['malformed_lines']} malformed lines, {r['answers_failed']} failed answers; "
                     f"histogram {r['rating_histogram']}.")
    lines.append(f"Ground truth among the top-{report['config']['n_candidates']} remap candidates: "
                 f"{report['remap']['groundtruth_in_candidates']:.1%}.")
    c = report.get("teacher_client") or {}
    if c:
        lines.append(f"Teacher client: {c['requests']} distinct requests, {c['cache_hits']} from cache, "
                     f"{c['http_calls']} HTTP calls, {c['retries']} retries, {c['failed']} failed; "
                     f"{c['prompt_tokens']} prompt + {c['completion_tokens']} completion tokens paid, "
                     f"${c['cost_usd']:.4f}.")
    return "\n".join(lines) + "\n"
