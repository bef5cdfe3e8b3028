"""Every OpenRLHF release of the compatibility table (``openrlhf_compat/releases.py``), read from its own wheel on
PyPI without installing it: the fingerprint of every function the Rank-GRPO adapter and the CPU backend patch or
rely on, the launcher's ``choices`` and the policy-loss tuple its training step unpacks. Then what the table means
for the plugin on each release (refusal of anything else, the loss's tuple, the flag rules), without installing one.

Wheels come from ``pip download openrlhf==X --no-deps`` into ``$RANK_GRPO_WHEEL_CACHE`` (default
``~/.cache/rank_grpo_plugin/openrlhf-wheels``) and are reused from there (~0.2 MB each). No network and no cached
wheel is a failure that says so, never a skip. The end-to-end check of each release (its own venv, its real
launcher, 2 Rank-GRPO steps on CPU) is ``scripts/openrlhf_releases.py`` (docs/COMPATIBILITY.md).
"""
from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import openrlhf_compat
from openrlhf_compat.releases import RELEASES, SUPPORTED_OPENRLHF_VERSIONS
from openrlhf_compat.wheel import read_release

CACHE = Path(os.environ.get("RANK_GRPO_WHEEL_CACHE", Path.home() / ".cache" / "rank_grpo_plugin" / "openrlhf-wheels"))


def _wheel(version: str) -> str:
    found = sorted(glob.glob(str(CACHE / f"openrlhf-{version}-*.whl")))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary",
           ":all:", "-d", str(CACHE), f"openrlhf=={version}"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pip download of openrlhf=={version} timed out after 300 s (this test needs PyPI, or the wheel "
                    f"in {CACHE})")
    found = sorted(glob.glob(str(CACHE / f"openrlhf-{version}-*.whl")))
    if res.returncode != 0 or not found:
        pytest.fail(f"could not fetch the openrlhf=={version} wheel (this test needs PyPI access, or the wheel in "
                    f"{CACHE}): `{' '.join(cmd)}` exited {res.returncode}:\n{(res.stderr or res.stdout)[-2000:]}")
    return found[0]


def test_table_lists_the_four_releases_with_the_same_checks():
    assert SUPPORTED_OPENRLHF_VERSIONS == ("0.10.4", "0.11.0", "0.11.1", "0.11.2")
    keys = set(RELEASES["0.11.2"].sources)
    assert len(keys) == 14
    for version, rel in RELEASES.items():
        assert rel.version == version
        assert set(rel.sources) == keys, version  # every release is checked at every patch point
        assert set(rel.choices) == {"--algo.advantage.estimator", "--actor.policy_loss_type"}


@pytest.mark.slow  # downloads (or reads cached) OpenRLHF wheels
@pytest.mark.parametrize("version", SUPPORTED_OPENRLHF_VERSIONS)
def test_wheel_matches_the_table(version):
    got = read_release(_wheel(version), keys=RELEASES[version].sources, flags=RELEASES[version].choices)
    want = RELEASES[version]
    assert got.version == version
    differs = {k: (v, got.sources[k]) for k, v in want.sources.items() if got.sources[k] != v}
    assert not differs, f"OpenRLHF {version} wheel differs from openrlhf_compat/releases.py: {differs}"
    assert dict(got.choices) == dict(want.choices)
    assert got.loss_outputs == want.loss_outputs


def test_what_the_wheels_differ_in():
    """The table's differences are the releases' own (hand-checked against the wheels' diffs): the CPU backend's
    functions are the same text in all four but the rollout loop its engine watchdog diagnoses (changed in 0.11.1);
    the adapter's three change in 0.11.1 (training_step) and 0.11.2."""
    rollout = "openrlhf.trainer.ppo_utils.samples_generator:SamplesGenerator._generate_vllm"
    cpu = [k for k in RELEASES["0.11.2"].sources if "compute_advantages" not in k and k != rollout
           and not k.endswith(("ActorPPOTrainer.__init__", "ActorPPOTrainer.training_step"))]
    assert len(cpu) == 10 and len({RELEASES[v].sources[k] for v in RELEASES for k in cpu}) == 10
    assert [RELEASES[v].sources[rollout][:8] for v in RELEASES] == ["f461f232", "f461f232", "bb043ccd", "bb043ccd"]
    step = "openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer.training_step"
    assert RELEASES["0.10.4"].sources == RELEASES["0.11.0"].sources
    assert len({RELEASES[v].sources[step] for v in ("0.11.0", "0.11.1", "0.11.2")}) == 3
    assert [RELEASES[v].loss_outputs for v in SUPPORTED_OPENRLHF_VERSIONS] == [4, 4, 4, 5]
    assert "flash_reinforce" in RELEASES["0.11.2"].choices["--algo.advantage.estimator"]
    assert "flash_reinforce" not in RELEASES["0.11.1"].choices["--algo.advantage.estimator"]


def test_fingerprint_source_is_the_one_fingerprint():
    """fingerprint (an imported module's file) and fingerprint_source (text) agree; missing names give None."""
    import openrlhf_compat.logs as mod

    text = Path(mod.__file__).read_text(encoding="utf-8")
    assert openrlhf_compat.fingerprint(mod, "parse_steps") == openrlhf_compat.fingerprint_source(text, "parse_steps")
    assert openrlhf_compat.fingerprint_source("x = 0\n\ndef f():\n    return 1\n", "f") == \
        hashlib.sha256(b"def f():\n    return 1").hexdigest()  # the definition's text only
    assert openrlhf_compat.fingerprint_source("class A:\n    def m(self): pass\n", "A.m") is not None
    assert openrlhf_compat.fingerprint_source("class A:\n    def m(self): pass\n", "A.n") is None


@pytest.mark.parametrize("version", ["0.10.3", "0.12.0", None])
def test_any_other_release_is_refused_with_the_list(version, monkeypatch):
    monkeypatch.setattr(openrlhf_compat, "openrlhf_version", lambda: version)
    monkeypatch.setattr(openrlhf_compat, "has_registry", lambda: False)
    assert not openrlhf_compat.version_supported()
    with pytest.raises(openrlhf_compat.UnsupportedOpenRLHF) as exc:
        openrlhf_compat.require_supported()
    msg = str(exc.value)
    assert f"OpenRLHF {version or '<not installed>'} is installed" in msg
    assert "0.10.4, 0.11.0, 0.11.1 and 0.11.2" in msg
    # the CPU backend refuses through the same table and says the same
    import openrlhf_cpu
    from openrlhf_cpu.common import require

    with pytest.raises(openrlhf_cpu.UpstreamChanged, match="0.10.4, 0.11.0, 0.11.1 and 0.11.2"):
        require(SimpleNamespace(__name__="openrlhf.utils.utils"), "get_strategy")


@pytest.mark.parametrize("version", SUPPORTED_OPENRLHF_VERSIONS)
def test_each_release_is_accepted(version, monkeypatch):
    monkeypatch.setattr(openrlhf_compat, "openrlhf_version", lambda: version)
    monkeypatch.setattr(openrlhf_compat, "has_registry", lambda: False)
    openrlhf_compat.require_supported()
    assert openrlhf_compat.choices_problem(lambda flag: list(RELEASES[version].choices[flag]) + ["rank_grpo"],
                                    ours={"rank_grpo"}) is None
    other = next(v for v in SUPPORTED_OPENRLHF_VERSIONS if RELEASES[v].choices != RELEASES[version].choices)
    problem = openrlhf_compat.choices_problem(lambda flag: list(RELEASES[other].choices[flag]))
    assert problem is not None and f"as in OpenRLHF {version}" in problem


@pytest.mark.parametrize("version, n", [("0.10.4", 4), ("0.11.0", 4), ("0.11.1", 4), ("0.11.2", 5), ("0.12.0", 5)])
def test_policy_loss_returns_what_the_release_unpacks(helpers, catalog_path, tokenizer, monkeypatch, version, n):
    """0.10.4-0.11.1 unpack (loss, clip_ratio, ppo_kl, vllm_kl); 0.11.2 adds is_filter_ratio. An unlisted version
    (which only runs with the registry of patches/, written against 0.11.2) gets the newest release's tuple."""
    from rank_grpo_plugin.openrlhf.policy_loss import RankGRPOPolicyLoss

    args = helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo",
                                                "--rank_grpo.catalog", catalog_path, "--rank_grpo.num_ranks", "3"])
    monkeypatch.setattr(openrlhf_compat, "openrlhf_version", lambda: version)
    loss_fn = RankGRPOPolicyLoss(args, tokenizer=tokenizer)
    ids = torch.tensor([tokenizer("A (1999)\nB (2000)\nC (2001)", add_special_tokens=False)["input_ids"]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    lp = torch.full(ids.shape, -1.0)
    out = loss_fn(lp, lp, torch.ones(ids.shape), action_mask=mask,
                  experience=SimpleNamespace(sequences=ids, action_mask=mask, info={}))
    assert len(out) == n
    assert out[3] is None and (n == 4 or out[4] is None)  # no vLLM IS correction in the rank-level loss
    assert float(out[1]) == 0.0 and float(out[2]) == 0.0  # on-policy: nothing clipped, no KL


def test_is_correction_enable_of_older_releases_is_refused(helpers, catalog_path):
    """0.10.4-0.11.1 spell the vLLM IS correction --algo.advantage.is_correction_enable (0.11.2:
    --algo.advantage.is_correction_level); the rank-level loss refuses both, naming the flag given."""
    from rank_grpo_plugin.openrlhf import flags

    argv = helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo", "--rank_grpo.catalog", catalog_path]
    args = helpers.run_cli(argv)
    del args.algo.advantage.is_correction_level  # as in an older release's namespace
    args.algo.advantage.is_correction_enable = True
    with pytest.raises(flags.RankGRPOConfigError, match="--algo.advantage.is_correction_enable .vLLM importance"):
        flags.validate(args, argv + ["--algo.advantage.is_correction_enable"])
    args.algo.advantage.is_correction_enable = False
    assert flags.validate(args, argv) is not None


PATCH = Path(__file__).resolve().parents[2] / "patches" / "0001-openrlhf-extension-registry.patch"
PATCH_RELEASES = ("0.11.2",)  # patches/README.md: the releases 0001-* applies to


@pytest.mark.slow  # downloads (or reads cached) OpenRLHF wheels
@pytest.mark.parametrize("version", SUPPORTED_OPENRLHF_VERSIONS)
def test_upstream_patch_applies_to_the_newest_release(version, tmp_path):
    """patches/0001-* applies cleanly (``git apply --check``, no fuzz) to the newest release's wheel sources, and the
    note in patches/README.md says which releases it applies to: on 0.10.4-0.11.1 the hunks for the
    ``flash_reinforce`` choices, the PolicyLoss construction and the 5-value unpacking have no context."""
    import zipfile

    with zipfile.ZipFile(_wheel(version)) as wheel:
        for name in wheel.namelist():
            rel = name.split(".data/purelib/", 1)[-1]
            if rel.startswith("openrlhf/") and rel.endswith(".py"):
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / rel).write_bytes(wheel.read(name))
    res = subprocess.run(["git", "apply", "--check", str(PATCH)], cwd=tmp_path, capture_output=True, text=True)
    assert (res.returncode == 0) == (version in PATCH_RELEASES), res.stderr[-2000:]
    assert version == SUPPORTED_OPENRLHF_VERSIONS[-1] or version not in PATCH_RELEASES
    note = " ".join((PATCH.parent / "README.md").read_text(encoding="utf-8").split())
    assert f"applies to OpenRLHF {', '.join(PATCH_RELEASES)}" in note
