"""patches/: the upstream diff applies cleanly to the installed OpenRLHF 0.11.2 and, applied to a copy, the
integration tests pass through its extension registry (no runtime patch of OpenRLHF at all)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATCHES = sorted((ROOT / "patches").glob("*.patch"))


def _patched_copy(tmp_path: Path) -> Path:
    src = Path(importlib.util.find_spec("openrlhf").origin).parent
    dest = tmp_path / "site"
    shutil.copytree(src, dest / "openrlhf", ignore=shutil.ignore_patterns("__pycache__"))
    for patch in PATCHES:
        for cmd in (["git", "apply", "--check", str(patch)], ["git", "apply", str(patch)]):
            res = subprocess.run(cmd, cwd=dest, capture_output=True, text=True)
            assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"
    return dest


@pytest.mark.patch_only  # applies the patch to the installed (unpatched) OpenRLHF
def test_patch_exists_and_applies_cleanly(tmp_path):
    assert PATCHES, "patches/*.patch missing"
    dest = _patched_copy(tmp_path)
    ext = (dest / "openrlhf" / "utils" / "extensions.py").read_text()
    assert "ADVANTAGE_ESTIMATORS" in ext and "POLICY_LOSSES" in ext and "openrlhf.plugins" in ext
    # the same diff also applies with plain `patch -p1` (as in an OpenRLHF checkout)
    if shutil.which("patch"):
        clean = tmp_path / "clean"
        shutil.copytree(Path(importlib.util.find_spec("openrlhf").origin).parent, clean / "openrlhf",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for patch in PATCHES:
            res = subprocess.run(["patch", "-p1", "--dry-run", "-i", str(patch)], cwd=clean, capture_output=True,
                                 text=True)
            assert res.returncode == 0 and "FAILED" not in res.stdout and "fuzz" not in res.stdout, res.stdout


@pytest.mark.slow
@pytest.mark.patch_only  # starts the re-run on the patched copy
def test_integration_suite_through_the_registry(tmp_path):
    dest = _patched_copy(tmp_path)
    env = dict(os.environ, RANK_GRPO_TEST_EXPECT_REGISTRY="1", HF_HUB_OFFLINE="1")  # patch_only tests deselected
    env["PYTHONPATH"] = os.pathsep.join([str(dest)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    here = Path(__file__).parent
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           str(here / "test_cli.py"), str(here / "test_estimator.py"), str(here / "test_policy_loss.py"),
           str(here / "test_activation.py"), str(here / "test_reward.py"),
           # the Ray actor test is left to the unpatched run: a Ray worker activates through the same .pth hook as
           # the fresh processes of test_activation's import test, which checks the registry path here
           "-k", "not wheel and not real_script and not ray_actor"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert " passed" in res.stdout
    # the child really ran against the patched copy
    probe = subprocess.run([sys.executable, "-c", "import openrlhf.utils.extensions as e; print(e.__file__)"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert str(dest) in probe.stdout, probe.stdout + probe.stderr
