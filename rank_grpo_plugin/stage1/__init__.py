"""Stage 1 of ConvRec-R1: the Remap-Reflect-Adjust behaviour-cloning data builder (``rank-grpo bc-data``).

Modules: ``teacher`` (OpenAI-compatible client: concurrency, retries, cache, counters; stdlib only), ``remap``
(embedding remap into the catalog, torch), ``reflect`` (teacher ratings, torch), ``adjust`` (per-item w, b fit,
torch), ``builder`` (the pipeline, writer and report), ``cli``. Never imports OpenRLHF. Cheap to import.
"""
from __future__ import annotations

from .._lazy import lazy_getattr

_EXPORTS = {
    "BuildConfig": ".builder", "build_bc_data": ".builder", "parse_teacher_list": ".builder",
    "TeacherClient": ".teacher", "TeacherError": ".teacher", "TeacherConfigError": ".teacher",
    "remap_scores": ".remap", "rank_weights": ".remap", "top_candidates": ".remap", "Embedder": ".remap",
    "HashEmbedder": ".remap",
    "parse_ratings": ".reflect", "reflect_messages": ".reflect", "reflect_scores": ".reflect",
    "fit_adjust": ".adjust", "apply_adjust": ".adjust",
    "BuildError": ".data", "load_rows": ".data", "CatalogIndex": ".data",
    "add_parser": ".cli", "main": ".cli",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
