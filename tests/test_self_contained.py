"""Nothing outside the repository: the data the package, tests, examples and benchmarks read ships inside it
(``rank_grpo_plugin.resources``), the defaults point there, and a clone with nothing beside it passes the fast tier.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import os
import shutil
import subprocess
import sys

import pytest

from _paths import ROOT
from rank_grpo_plugin import resources
from rank_grpo_plugin.data import DataError, default_data_dir, load_rows


def test_shipped_data_loads_with_its_documented_sizes():
    assert len(load_rows(str(resources.REDDIT_V2_SAMPLE), need_completion=True)) == 100
    assert len(load_rows(str(resources.REDIAL_TEST))) == 2716
    for path, n in ((resources.REDDIT_V2_CATALOG, 7404), (resources.REDIAL_CATALOG, 1206)):
        items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(items) == n and all(set(item) == {"title", "year"} for item in items), path


def test_setup_package_data_ships_every_resource_file():
    """A wheel carries the same data as the checkout: every non-Python file under resources/ matches a pattern of
    setup.py's package_data."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    patterns = next(ast.literal_eval(kw.value)["rank_grpo_plugin"] for node in ast.walk(tree)
                    if isinstance(node, ast.Call) for kw in node.keywords if kw.arg == "package_data")
    package = ROOT / "rank_grpo_plugin"
    files = [p.relative_to(package).as_posix() for p in resources.RESOURCES.rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert {"resources/redial/test.jsonl", "resources/reddit_v2/catalog.jsonl"} <= set(files)
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"setup.py package_data {patterns} leaves out {missing}"


def test_default_data_dir_is_the_shipped_data_unless_rank_grpo_data_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv("RANK_GRPO_DATA", raising=False)
    assert default_data_dir() == resources.RESOURCES
    monkeypatch.setenv("RANK_GRPO_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.setenv("RANK_GRPO_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataError, match=r"RANK_GRPO_DATA=.*absent: not a directory"):
        default_data_dir()


def _git(*args: str, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


# what the clone's interpreter imports and where its default data lies
_WHERE = """
import json, openrlhf_compat, openrlhf_cpu, rank_grpo_plugin
from rank_grpo_plugin.data import default_data_dir
print(json.dumps([m.__file__ for m in (openrlhf_compat, openrlhf_cpu, rank_grpo_plugin)] + [str(default_data_dir())]))
"""


@pytest.mark.slow
def test_fast_tier_passes_on_a_clone_with_nothing_beside_it(tmp_path):
    """`git clone` of the committed HEAD into an otherwise empty folder; the fast tier runs there with the clone's
    own packages first on sys.path (PYTHONPATH: the site-packages .pth hook imports rank_grpo_plugin before the
    working directory joins sys.path, and an editable install would otherwise resolve it to this checkout)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail(f"needs git and a git checkout at {ROOT}")
    head = _git("rev-parse", "HEAD")
    clone = tmp_path / "rank_grpo_plugin_clone"
    _git("clone", "--quiet", "--no-checkout", str(ROOT), str(clone), cwd=tmp_path)
    _git("checkout", "--quiet", "--detach", head, cwd=clone)
    assert sorted(os.listdir(tmp_path)) == [clone.name]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK_GRPO_DATA", "PYTEST_ADDOPTS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(clone), HF_HUB_OFFLINE="1")

    where = subprocess.run([sys.executable, "-c", _WHERE], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=120)
    assert where.returncode == 0, where.stderr
    for path in json.loads(where.stdout.splitlines()[-1]):
        assert path.startswith(str(clone) + os.sep), f"{path} is not in the clone {clone}"

    run = subprocess.run([sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider"],
                         cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=1800)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0 and " passed" in summary and "failed" not in summary, run.stdout[-6000:]
