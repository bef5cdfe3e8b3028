"""Paths shared by the tests. A plain module with a unique name (``from _paths import DATA``): pytest puts each
test file's folder on ``sys.path`` (rootdir-less "prepend" mode), and ``conftest`` is not importable reliably when
several folders have one. Never ``import tests``: the openrlhf wheel installs a top-level package of that name."""
from pathlib import Path

from rank_grpo_plugin.resources import RESOURCES

ROOT = Path(__file__).resolve().parents[1]
DATA = RESOURCES  # the data shipped in the package: reddit_v2/ and redial/ (see its README.md)
