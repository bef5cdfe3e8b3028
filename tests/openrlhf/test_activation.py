"""Activation in every process: the .pth startup hook, lazy patching, opt-out, cost, Ray actors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import sys, json\n"
    "{pre}\n"
    "from rank_grpo_plugin.openrlhf.register import activation_report\n"
    "print('REPORT' + json.dumps(activation_report()))\n"
)


def _python(code: str, **env):
    full = dict(os.environ, HF_HUB_OFFLINE="1", **env)
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _report(pre: str, **env):
    out = _python(PROBE.format(pre=pre), **env)
    return json.loads(out.split("REPORT", 1)[1].strip().splitlines()[0])


def test_pth_file_is_installed_in_site_packages():
    purelib = Path(sysconfig.get_paths()["purelib"])
    pth = purelib / "rank_grpo_plugin.pth"
    assert pth.exists(), f"{pth} missing: reinstall the plugin (pip install -e .)"
    text = pth.read_text()
    assert text.startswith("import ") and "rank_grpo_plugin._startup" in text
    assert "RANK_GRPO_PLUGIN_DISABLE" in text


def test_importing_the_package_is_cheap_and_lazy():
    out = _python(
        "import sys\n"
        "assert any(getattr(f, '_rank_grpo_finder', False) for f in sys.meta_path), 'startup hook not installed'\n"
        "heavy = [m for m in ('torch', 'openrlhf', 'ray', 'vllm', 'deepspeed') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import rank_grpo_plugin, rank_grpo_plugin.openrlhf, rank_grpo_plugin._startup\n"
        "heavy = [m for m in ('torch', 'openrlhf', 'ray', 'vllm', 'deepspeed') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('OK')\n"
    )
    assert "OK" in out


@pytest.mark.slow
def test_openrlhf_import_activates_and_opt_out_disables(expect_registry):
    from concurrent.futures import ThreadPoolExecutor

    pre = "import openrlhf.trainer.ppo_utils.experience_maker, openrlhf.trainer.ray.ppo_actor"
    with ThreadPoolExecutor(2) as pool:  # two independent processes, side by side on the 2 cores
        rep, rep_off = pool.map(lambda env: _report(pre, **env), [{}, {"RANK_GRPO_PLUGIN_DISABLE": "1"}])
    assert rep["active"] and not rep["disabled"] and rep["openrlhf_version"] == "0.11.2"
    if expect_registry:
        assert rep["registry"] and rep["patches"].get("openrlhf.utils.extensions") == "registered"
    else:
        assert rep["extension_points"] == "shim"
        assert set(rep["patches"].values()) == {"patched"} and len(rep["patches"]) == 3
    assert not rep_off["active"] and rep_off["disabled"] and rep_off["patches"] == {}


@pytest.mark.slow
def test_ray_actor_sees_plugin_and_opt_out(expect_registry):
    import ray

    from rank_grpo_plugin.openrlhf.flags import propagate_options
    from rank_grpo_plugin.options import OPTIONS_ENV, RankGRPOOptions

    # what the launcher does after validating the flags; the options must reach workers through ray.init's
    # runtime_env (as with `ray job submit`), not through this process's environment
    propagate_options(RankGRPOOptions(num_ranks=7, catalog="/x/catalog.jsonl"))
    saved = os.environ.pop(OPTIONS_ENV)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    finally:
        os.environ[OPTIONS_ENV] = saved
    try:
        @ray.remote(num_cpus=0)
        class Probe:
            def report(self):
                import openrlhf.trainer.ppo_utils.experience_maker  # noqa: F401
                import openrlhf.trainer.ray.ppo_actor  # noqa: F401

                from rank_grpo_plugin.openrlhf.register import activation_report
                from rank_grpo_plugin.options import RankGRPOOptions

                rep = activation_report()
                rep["num_ranks"] = RankGRPOOptions.from_env().num_ranks
                return rep

        on = Probe.remote()
        off = Probe.options(runtime_env={"env_vars": {"RANK_GRPO_PLUGIN_DISABLE": "1"}}).remote()
        rep_on, rep_off = ray.get([on.report.remote(), off.report.remote()], timeout=600)
    finally:
        ray.shutdown()
    assert rep_on["pid"] != os.getpid()
    assert rep_on["active"]
    assert rep_on["num_ranks"] == 7  # plugin options reached the worker
    if expect_registry:
        assert rep_on["patches"].get("openrlhf.utils.extensions") == "registered"
    else:
        assert rep_on["patches"].get(
            "openrlhf.trainer.ppo_utils.experience_maker:RemoteExperienceMaker.compute_advantages_and_returns"
        ) == "patched"
        assert rep_on["patches"].get("openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer.training_step") == "patched"
    assert not rep_off["active"] and rep_off["patches"] == {}


@pytest.mark.patch_only
def test_changed_function_is_refused_only_for_rank_grpo(monkeypatch):
    import types

    import openrlhf_compat
    from rank_grpo_plugin.openrlhf import register, shim

    register.register_extensions(shim)
    mod = types.ModuleType("fake_openrlhf_mod")

    class RemoteExperienceMaker:
        def compute_advantages_and_returns(self, experiences):
            return ["original", experiences]

    mod.RemoteExperienceMaker = RemoteExperienceMaker
    mod.__name__ = "openrlhf.trainer.ppo_utils.experience_maker"
    monkeypatch.setattr(openrlhf_compat, "fingerprint", lambda module, qualname: "0" * 64)
    shim._patch_experience_maker(mod)
    maker = RemoteExperienceMaker()
    maker.strategy = types.SimpleNamespace(args=types.SimpleNamespace(
        algo=types.SimpleNamespace(advantage=types.SimpleNamespace(estimator="group_norm"))))
    assert maker.compute_advantages_and_returns([1]) == ["original", [1]]  # untouched
    maker.strategy.args.algo.advantage.estimator = "rank_grpo"
    with pytest.raises(openrlhf_compat.OpenRLHFChanged,
                       match="compute_advantages_and_returns is not the OpenRLHF 0.11.2"):
        maker.compute_advantages_and_returns([1])


@pytest.mark.patch_only  # the patched copy differs on purpose
def test_fingerprints_match_installed_openrlhf():
    """Every function of the release table (adapter and CPU backend), read from the installed OpenRLHF."""
    import importlib

    import openrlhf_compat

    table = openrlhf_compat.RELEASES[openrlhf_compat.openrlhf_version()].sources
    assert len(table) == 14
    for key, want in table.items():
        mod_name, qualname = key.split(":")
        assert openrlhf_compat.fingerprint(importlib.import_module(mod_name), qualname) == want, key
        assert openrlhf_compat.verify(importlib.import_module(mod_name), qualname) is None, key


def test_one_import_hook_serves_every_caller():
    code = (
        "import sys\n"
        "from rank_grpo_plugin.hooks import when_imported, FINDER_MARK\n"
        "seen = []\n"
        "when_imported('json.tool', lambda m: seen.append(('a', m.__name__)))\n"
        "when_imported('json.tool', lambda m: seen.append(('b', m.__name__)))\n"
        "import json.tool\n"
        "when_imported('json.tool', lambda m: seen.append(('c', m.__name__)))  # already imported: now\n"
        "assert seen == [('a', 'json.tool'), ('b', 'json.tool'), ('c', 'json.tool')], seen\n"
        "assert sum(bool(getattr(f, FINDER_MARK, False)) for f in sys.meta_path) == 1\n"
        "print('OK')\n"
    )
    assert "OK" in _python(code)


@pytest.mark.slow
def test_wheel_and_editable_wheel_carry_the_pth(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                             ".pytest_cache", "runs", ".cache", "tests"))
    out = tmp_path / "wheels"
    code = (
        "import sys; from setuptools import build_meta as b\n"
        f"print('W=' + b.build_wheel({str(out)!r}))\n"
        f"print('E=' + b.build_editable({str(out)!r}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    names = dict(line.split("=", 1) for line in res.stdout.splitlines() if line[:2] in ("W=", "E="))
    for kind in ("W", "E"):
        with zipfile.ZipFile(out / names[kind]) as zf:
            members = zf.namelist()
            assert "rank_grpo_plugin.pth" in members, (kind, members[:20])
            assert "rank_grpo_plugin._startup" in zf.read("rank_grpo_plugin.pth").decode()
