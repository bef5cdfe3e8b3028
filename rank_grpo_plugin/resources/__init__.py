"""Data shipped inside the package (see README.md here for sources and attribution).

``REDDIT_V2_CATALOG`` (7,404 items) and ``REDDIT_V2_SAMPLE`` (100 rows) are the main job's embedded data and
the default catalog of ``rank-grpo synth``; ``REDIAL_TEST`` (2,716 rows) and ``REDIAL_CATALOG`` (1,206 items) are
the default data of ``rank-grpo evaluate``. The folder has the layout ``<dataset>/<file>.jsonl`` that
``$RANK_GRPO_DATA`` may replace (:func:`rank_grpo_plugin.data.default_data_dir`); tests and benchmarks read these
files directly, since their figures are about this data. Standard library only.
"""
from pathlib import Path

__all__ = ["RESOURCES", "REDDIT_V2", "REDDIT_V2_CATALOG", "REDDIT_V2_SAMPLE", "REDIAL", "REDIAL_CATALOG",
           "REDIAL_TEST"]

RESOURCES = Path(__file__).resolve().parent
REDDIT_V2 = RESOURCES / "reddit_v2"
REDDIT_V2_CATALOG = REDDIT_V2 / "catalog.jsonl"
REDDIT_V2_SAMPLE = REDDIT_V2 / "sample.jsonl"
REDIAL = RESOURCES / "redial"
REDIAL_CATALOG = REDIAL / "catalog.jsonl"
REDIAL_TEST = REDIAL / "test.jsonl"
