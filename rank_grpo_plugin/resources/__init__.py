"""Data shipped inside the package (see README.md here for sources and attribution).

``REDDIT_V2_CATALOG`` (7,404 items) and ``REDDIT_V2_SAMPLE`` (100 rows) are the main job's embedded data and
the default catalog of ``rank-grpo synth``; the larger ReDial files stay outside the package.
"""
from pathlib import Path

__all__ = ["RESOURCES", "REDDIT_V2", "REDDIT_V2_CATALOG", "REDDIT_V2_SAMPLE"]

RESOURCES = Path(__file__).resolve().parent
REDDIT_V2 = RESOURCES / "reddit_v2"
REDDIT_V2_CATALOG = REDDIT_V2 / "catalog.jsonl"
REDDIT_V2_SAMPLE = REDDIT_V2 / "sample.jsonl"
