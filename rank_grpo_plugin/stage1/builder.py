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
from .adjust import AdjustResult, apply_adjust, fit_adjust
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
def build_bc_data(cfg: BuildConfig, client=None, embedder=None,
                  log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
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
        client = _teacher_client(cfg)
    try:
        return _run_steps(cfg=cfg, client=client, embedder=embedder, log=log, rows=rows, catalog=catalog,
                          index=index, report=report, t_start=t_start)
    finally:
        if own_client:
            client.close()


def _teacher_client(cfg: BuildConfig):
    from .teacher import TeacherClient

    params: Dict[str, Any] = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    if cfg.seed is not None:
        params["seed"] = cfg.seed
    return TeacherClient(cfg.base_url or os.environ.get("OPENAI_BASE_URL", ""),
                         cfg.model or os.environ.get("RANK_GRPO_TEACHER_MODEL", ""),
                         cfg.api_key or os.environ.get("OPENAI_API_KEY"),
                         cache_path=cfg.cache or os.path.join(cfg.out, "teacher_cache.sqlite"),
                         concurrency=cfg.concurrency, max_retries=cfg.max_retries, timeout=cfg.timeout,
                         backoff_base=cfg.backoff_base, backoff_max=cfg.backoff_max,
                         price_input=cfg.price_input, price_output=cfg.price_output, params=params,
                         progress=cfg.progress)


def _run_steps(*, cfg: BuildConfig, client, embedder, log: Callable[[str], None], rows: List[Row],
               catalog: Catalog, index: CatalogIndex, report: Dict[str, Any], t_start: float) -> Dict[str, Any]:
    """Teacher lists -> Remap -> Reflect -> Adjust -> evaluation -> outputs; each step adds its part of ``report``."""
    tlists = _teacher_step(cfg=cfg, client=client, rows=rows, index=index, report=report, log=log)
    convs = [conversation_text(r.prompt) for r in rows]
    cand_idx, s_remap = _remap_step(cfg=cfg, embedder=embedder, rows=rows, convs=convs, tlists=tlists, index=index,
                                    report=report, log=log)
    targets = _candidate_targets(cfg=cfg, rows=rows, cand_idx=cand_idx, index=index, catalog=catalog, report=report,
                                 dtype=s_remap.dtype)
    ratings, s_reflect = _reflect_step(cfg=cfg, client=client, convs=convs, cand_idx=cand_idx, s_remap=s_remap,
                                       index=index, report=report, log=log)
    steps: Dict[str, torch.Tensor] = {"remap": s_remap}
    if cfg.reflect:
        steps["reflect"] = s_reflect
    fit = None
    if cfg.adjust:
        fit, steps["adjust"], held = _adjust_step(cfg=cfg, rows=rows, cand_idx=cand_idx, s_reflect=s_reflect,
                                                  targets=targets, n_items=len(index), report=report)
        if held is not None:
            steps["adjust_heldout"] = held
    final_step = "adjust" if cfg.adjust else ("reflect" if cfg.reflect else "remap")
    lists = {name: _ranked_lines(s, cand_idx, index, cfg.k) for name, s in steps.items()}
    report["metrics"] = _evaluate_steps(cfg=cfg, rows=rows, catalog=catalog, tlists=tlists, lists=lists,
                                        final_step=final_step)
    report["final_step"] = final_step
    report["teacher_client"] = client.stats.as_dict() if hasattr(client, "stats") else {}
    report["seconds"] = round(time.monotonic() - t_start, 2)
    paths = _write_outputs(cfg=cfg, rows=rows, index=index, tlists=tlists, cand_idx=cand_idx, s_remap=s_remap,
                           ratings=ratings if cfg.reflect else None, lists=lists, final_step=final_step,
                           fit=fit, report=report)
    report["outputs"] = {k: v for k, v in paths.items() if os.path.exists(v)}
    return report


def _ranked_lines(order_scores: torch.Tensor, cand_idx: torch.Tensor, index: CatalogIndex, k: int) -> List[str]:
    order = torch.sort(order_scores, dim=1, descending=True, stable=True).indices[:, :k]
    picked = torch.gather(cand_idx, 1, order)
    return ["\n".join(index.lines[c] for c in row) for row in picked.tolist()]


def _teacher_step(*, cfg: BuildConfig, client, rows: List[Row], index: CatalogIndex, report: Dict[str, Any],
                  log: Callable[[str], None]) -> List[TeacherList]:
    """1. The teacher's list for every row, parsed; ``report["teacher"]`` counts failures and malformed answers."""
    log(f"teacher lists for {len(rows)} rows ({report['conversations']} distinct prompts)")
    answers = client.complete_many([r.prompt for r in rows], desc="teacher lists")
    tlists = [parse_teacher_list(a.text, cfg.teacher_items) for a in answers]
    report["teacher"] = {
        "answers_failed": sum(t.failed for t in tlists),
        "answers_malformed": sum((not t.failed) and (t.unparsable_lines > 0 or len(t.items) < cfg.k) for t in tlists),
        "unparsable_lines": sum(t.unparsable_lines for t in tlists),
        "duplicate_items": sum(t.duplicates for t in tlists),
        "items": sum(len(t.items) for t in tlists),
        "items_in_catalog": sum(index.lookup(*it) >= 0 for t in tlists for it in t.items),
        "errors": sorted({a.error for a in answers if a.error})[:5],
    }
    return tlists


def _remap_step(*, cfg: BuildConfig, embedder, rows: List[Row], convs: List[str], tlists: List[TeacherList],
                index: CatalogIndex, report: Dict[str, Any],
                log: Callable[[str], None]) -> Tuple[torch.Tensor, torch.Tensor]:
    """2. Remap: every row's ``n_candidates`` best writable catalog items for its teacher list and conversation
    (never a seen title); returns their catalog indices and scores, [rows, n_candidates] each."""
    if embedder is None:
        embedder = make_embedder(cfg.embedder, cfg.embed_batch_size)
    t0 = time.monotonic()
    cat_emb, cached = catalog_embeddings(embedder, index.lines, cfg.embed_cache or os.path.join(cfg.out, "embeddings"),
                                         embedder.model_id)
    item_texts = sorted({item_line(t, y) for tl in tlists for t, y in tl.items})
    item_pos = {s: i for i, s in enumerate(item_texts)}
    item_emb = embedder(item_texts) if item_texts else torch.zeros(0, cat_emb.shape[1])
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
    report["remap"] = {"embedder": embedder.model_id, "catalog_embedding_cached": cached,
                       "seconds": round(time.monotonic() - t0, 2), "teacher_item_texts": len(item_texts)}
    log(f"remap: {len(rows)} x {cfg.n_candidates} candidates in {report['remap']['seconds']} s")
    return torch.cat(cand_chunks), torch.cat(score_chunks)


def _candidate_targets(*, cfg: BuildConfig, rows: List[Row], cand_idx: torch.Tensor, index: CatalogIndex,
                       catalog: Catalog, report: Dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
    """Ground-truth indicator over every row's candidates (the evaluation's matching rules): what Adjust fits."""
    targets = torch.zeros(cand_idx.shape, dtype=dtype)
    n_gt = 0
    for i, row in enumerate(rows):
        gt = [[t, y] for t, y in row.groundtruth]
        n_gt += len(gt)
        if gt:
            text = "\n".join(index.lines[c] for c in cand_idx[i].tolist())
            hits = catalog_hits(text, gt, row.seen, catalog, k=cfg.n_candidates, year_tolerance=cfg.year_tolerance)
            targets[i] = torch.tensor(hits, dtype=targets.dtype)
    report["remap"]["groundtruth_in_candidates"] = float(targets.sum()) / max(1, n_gt)
    return targets


def _reflect_step(*, cfg: BuildConfig, client, convs: List[str], cand_idx: torch.Tensor, s_remap: torch.Tensor,
                  index: CatalogIndex, report: Dict[str, Any],
                  log: Callable[[str], None]) -> Tuple[torch.Tensor, torch.Tensor]:
    """3. Reflect: the teacher rates every row's top ``n_reflect`` candidates; returns the ratings (0 where none)
    and the scores they shift (the Remap scores unchanged when Reflect is off)."""
    ratings = torch.zeros_like(s_remap)
    if not cfg.reflect:
        return ratings, s_remap
    nr = cfg.n_reflect
    msgs = [reflect_messages(conv, [index.lines[c] for c in cand_idx[i, :nr].tolist()]) for i, conv in enumerate(convs)]
    log(f"reflect: rating top-{nr} candidates")
    answers = client.complete_many(msgs, desc="reflect ratings", params={"max_tokens": max(64, 8 * nr + 32)})
    parsed = [parse_ratings(a.text, nr) for a in answers]
    for i, p in enumerate(parsed):
        ratings[i, :nr] = torch.tensor([r if r is not None else 0 for r in p.ratings], dtype=ratings.dtype)
    report["reflect"] = {
        "answers_failed": sum(a.text is None for a in answers),
        "answers_incomplete": sum(a.text is not None and p.n_rated < nr for a, p in zip(answers, parsed)),
        "ratings_parsed": sum(p.n_rated for p in parsed), "ratings_requested": nr * len(convs),
        "malformed_lines": sum(p.n_malformed for p in parsed),
        "rating_histogram": {str(v): int((ratings[:, :nr] == v).sum()) for v in range(-2, 3)},
    }
    return ratings, reflect_scores(s_remap, ratings, cfg.reflect_weight)


def _adjust_step(*, cfg: BuildConfig, rows: List[Row], cand_idx: torch.Tensor, s_reflect: torch.Tensor,
                 targets: torch.Tensor, n_items: int,
                 report: Dict[str, Any]) -> Tuple[AdjustResult, torch.Tensor, Optional[torch.Tensor]]:
    """4. Adjust: per-item w, b fitted on every row; returns the fit, the adjusted scores and, with ``holdout``,
    the 2-fold held-out scores (each half adjusted by a fit on the other; None when a fold is empty)."""
    t0 = time.monotonic()
    fit = fit_adjust(s_reflect, cand_idx, targets, n_items, cfg.lambda_w, cfg.lambda_b)
    adjusted = apply_adjust(s_reflect, cand_idx, fit.w, fit.b)
    report["adjust"] = {"loss": fit.loss, "lbfgs_iterations": fit.n_iter, "targets": fit.n_targets,
                        "seconds": round(time.monotonic() - t0, 2),
                        "w_range": [float(fit.w.min()), float(fit.w.max())],
                        "b_range": [float(fit.b.min()), float(fit.b.max())]}
    held = None
    if cfg.holdout:
        fold = torch.tensor([int(prompt_hash(r)[:8], 16) % 2 for r in rows])
        if 0 < int(fold.sum()) < len(rows):
            held = torch.empty_like(s_reflect)
            for f in (0, 1):
                tr, te = fold != f, fold == f
                fit_f = fit_adjust(s_reflect[tr], cand_idx[tr], targets[tr], n_items, cfg.lambda_w, cfg.lambda_b)
                held[te] = apply_adjust(s_reflect[te], cand_idx[te], fit_f.w, fit_f.b)
    return fit, adjusted, held


def _evaluate_steps(*, cfg: BuildConfig, rows: List[Row], catalog: Catalog, tlists: List[TeacherList],
                    lists: Dict[str, List[str]], final_step: str) -> Dict[str, Dict[str, float]]:
    """5. :func:`evaluate_lists` of the teacher lists, of each step's lists and of the rows' own completions (when
    every row has one); raises :class:`BuildError` unless the final lists are K in-catalog lines each."""
    def evaluate(texts: Sequence[str]) -> Dict[str, float]:
        return evaluate_lists(texts, rows, catalog, cfg.k, cfg.year_tolerance)

    evals = {"teacher": evaluate(["\n".join(item_line(t, y) for t, y in tl.items) for tl in tlists])}
    for name, texts in lists.items():
        evals[name] = evaluate(texts)
    refs = [r.completion for r in rows]
    if all(isinstance(t, str) for t in refs):
        evals["reference"] = evaluate(refs)
    final = evals[final_step]
    if final["in_catalog"] != 1.0 or final["lines_per_list"] != cfg.k:
        raise BuildError(f"internal check failed: built lists are {final['in_catalog']:.2%} in catalog with "
                         f"{final['lines_per_list']} lines on average (expected 100% and {cfg.k})")
    return evals


def _write_outputs(*, cfg: BuildConfig, rows: List[Row], index: CatalogIndex, tlists: List[TeacherList],
                   cand_idx: torch.Tensor, s_remap: torch.Tensor, ratings: Optional[torch.Tensor],
                   lists: Dict[str, List[str]], final_step: str, fit: Optional[AdjustResult],
                   report: Dict[str, Any]) -> Dict[str, str]:
    """6. The output files (module docstring), all replaced together or none; returns name -> path of every
    output name (``adjust_params.json`` is not written without Adjust)."""
    def sft(f):
        for row, text in zip(rows, lists[final_step]):
            # OpenRLHF 0.11.2 SFTDataset (apply_chat_template + output_key) concatenates input + output, so both
            # must be message lists: output is the assistant turn (same format as ``rank-grpo prepare --sft``).
            f.write(json.dumps({"input": row.prompt, "output": [{"role": "assistant", "content": text}]},
                               ensure_ascii=False) + "\n")

    def per_row(f):
        for i, row in enumerate(rows):
            rec = {"row": i, "teacher_items": [item_line(t, y) for t, y in tlists[i].items],
                   "teacher_failed": tlists[i].failed,
                   "candidates": [index.lines[c] for c in cand_idx[i].tolist()],
                   "remap_scores": [round(v, 5) for v in s_remap[i].tolist()],
                   "ratings": [int(v) for v in ratings[i].tolist()] if ratings is not None else None,
                   "lists": {name: texts[i].split("\n") for name, texts in lists.items()}}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    writers = {"sft.jsonl": sft, "lists.jsonl": per_row}
    if fit is not None:
        params_doc = {"catalog_fingerprint": index.fingerprint, "catalog_items": len(index),
                      "lambda_w": cfg.lambda_w, "lambda_b": cfg.lambda_b, "reflect_weight": cfg.reflect_weight,
                      "lambda_conv": cfg.lambda_conv, "loss": report["adjust"]["loss"],
                      "w": [round(v, 6) for v in fit.w.tolist()], "b": [round(v, 6) for v in fit.b.tolist()]}
        writers["adjust_params.json"] = lambda f: json.dump(params_doc, f)
    writers["report.json"] = lambda f: json.dump(report, f, indent=2, default=str)
    writers["report.md"] = lambda f: f.write(format_report(report))
    paths = {name: os.path.join(cfg.out, name) for name in
             ("sft.jsonl", "lists.jsonl", "adjust_params.json", "report.json", "report.md")}
    with atomic_paths(*(paths[name] for name in writers)) as tmps:
        for tmp, writer in zip(tmps, writers.values()):
            with open(tmp, "w", encoding="utf-8") as f:
                writer(f)
    return paths


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
