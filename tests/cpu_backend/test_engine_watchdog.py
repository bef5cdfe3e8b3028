"""The CPU backend's engine watchdog (openrlhf_cpu/engines.py) on a stand-in for Ray (fast, no processes): a dead
engine is named with its reason, a slow one is not dead, start-up is bounded, failures are diagnosed. The patches on real OpenRLHF:
test_cpu_unit.py (a subprocess); the real launcher with an engine that dies: test_cpu_faults.py."""
from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from openrlhf_cpu import engines as watchdog


class ActorDied(Exception):
    """Stands for ray.exceptions.RayActorError."""


class Ref:
    def __init__(self, engine, fn=None):
        self.engine, self.fn = engine, fn


class FakeEngine:
    """An engine actor whose calls (``__ray_ready__``, ``__ray_call__``) are ready after ``up_after`` s, or fail with
    ``dies``; ``errored``: its vLLM engine core is dead while the actor lives."""

    def __init__(self, up_after=0.0, dies=None, ident="ab" * 8, errored=False):
        self.up_at = time.monotonic() + up_after
        self.dies = dies
        self.llm = types.SimpleNamespace(errored=errored)
        self._actor_id = types.SimpleNamespace(hex=lambda: ident * 2)
        self.__ray_ready__ = types.SimpleNamespace(remote=lambda: Ref(self))
        self.__ray_call__ = types.SimpleNamespace(remote=lambda fn: Ref(self, fn))

    def ready(self):
        return self.dies is not None or time.monotonic() >= self.up_at


def _fake_ray():
    ray = types.ModuleType("ray")

    def wait(refs, num_returns=1, timeout=None):
        end = time.monotonic() + (timeout or 0)
        while True:
            ready = [r for r in refs if r.engine.ready()]
            if len(ready) >= num_returns or time.monotonic() >= end:
                return ready, [r for r in refs if r not in ready]
            time.sleep(0.01)

    def get(ref):
        if ref.engine.dies is not None:
            raise ref.engine.dies
        return ref.fn(ref.engine) if ref.fn else True

    ray.wait, ray.get = wait, get
    ray.exceptions = types.SimpleNamespace(RayActorError=ActorDied)
    return ray


@pytest.fixture
def fake_ray(monkeypatch):
    ray = _fake_ray()
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.exceptions", ray.exceptions)
    monkeypatch.setattr(watchdog, "POLL_S", 0.05)
    monkeypatch.setattr(watchdog, "DIAGNOSE_S", 1.0)
    return ray


CREATION_ERROR = ActorDied(
    "The actor died because of an error raised in its creation task, ray::RolloutRayActor.__init__() ...\n"
    "Traceback (most recent call last):\n  File \"vllm/v1/worker/cpu_worker.py\", line 213\n"
    "ValueError: Available memory on node 0 (20.1/23.4 GiB) on kv cache allocation is less than requested memory "
    "for kv (97656.2 GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by "
    "other processes.\n")


def test_start_up_names_the_dead_engine_with_vllms_reason(fake_ray):
    engines = [FakeEngine(up_after=0.1), FakeEngine(dies=CREATION_ERROR, ident="cd" * 8)]
    t = time.monotonic()
    with pytest.raises(watchdog.EngineDiedError) as err:
        watchdog.wait_for_engines(engines, timeout=60)
    assert time.monotonic() - t < 5  # at once, not at the time-out
    text = str(err.value)
    assert text.startswith("[rank_grpo_plugin.cpu] vLLM engine 1 of 2 (RolloutRayActor cdcdcdcdcdcdcdcd) died at "
                           "start-up: ValueError: Available memory on node 0")
    assert "VLLM_CPU_KVCACHE_SPACE" in text


def test_start_up_waits_for_slow_engines_and_is_bounded(fake_ray, monkeypatch):
    watchdog.wait_for_engines([FakeEngine(up_after=0.3), FakeEngine()], timeout=30)  # slow is fine
    monkeypatch.setenv(watchdog.ENV_START_TIMEOUT, "0.3")
    t = time.monotonic()
    with pytest.raises(watchdog.EngineDiedError, match=r"vLLM engine 0 of 1 \(RolloutRayActor .*\) not up after 0 s "
                                                        r"\(RANK_GRPO_PLUGIN_CPU_ENGINE_START_TIMEOUT\)"):
        watchdog.wait_for_engines([FakeEngine(up_after=60)])
    assert time.monotonic() - t < 5


def test_mid_run_failures_are_diagnosed(fake_ray):
    alive, dead = FakeEngine(), FakeEngine(dies=ActorDied("The actor died unexpectedly before finishing this task.\n"
                                                          "RuntimeError: worker process exited with code 17"))
    busy = FakeEngine(up_after=60)
    assert watchdog.dead_engines([alive, busy], timeout=0.2) == []  # a slow answer is not a death
    assert watchdog.dead_engines([alive, dead]) == [
        (watchdog.engine_name([alive, dead], 1), "RuntimeError: worker process exited with code 17")]

    def sync_fails():
        raise RuntimeError("gloo: Connection closed by peer")

    trainer = types.SimpleNamespace(vllm_engines=[alive, dead])
    with pytest.raises(watchdog.EngineDiedError) as err:
        watchdog.broadcast_guard(trainer, lambda: None)
    assert str(err.value) == (f"[rank_grpo_plugin.cpu] {watchdog.engine_name([alive, dead], 1)} died during the run "
                              "(before a weight sync): RuntimeError: worker process exited with code 17. The run "
                              "stops.")
    trainer.vllm_engines = [alive]
    assert watchdog.broadcast_guard(trainer, lambda: 42) == 42
    t = time.monotonic()
    with pytest.raises(RuntimeError, match="Connection closed"):  # no dead engine: the original error stands
        watchdog.broadcast_guard(trainer, sync_fails)
    assert 1.0 <= time.monotonic() - t < 5  # a lost peer waited DIAGNOSE_S for a death to show
    t = time.monotonic()
    with pytest.raises(ValueError, match="checksums differ"):  # any other failure: one check
        watchdog.broadcast_guard(trainer, lambda: (_ for _ in ()).throw(ValueError("checksums differ")))
    assert time.monotonic() - t < 0.5
    late = FakeEngine(errored=False)  # its engine core is found dead a moment after the sync failed

    def sync_fails_then_dies():
        threading.Timer(0.3, lambda: setattr(late.llm, "errored", True)).start()
        sync_fails()

    with pytest.raises(watchdog.EngineDiedError, match="EngineDeadError: its vLLM engine core is dead"):
        watchdog.broadcast_guard(types.SimpleNamespace(vllm_engines=[late]), sync_fails_then_dies)
    with pytest.raises(watchdog.EngineDiedError, match=r"died during the run \(generating rollouts\)") as err:
        watchdog._diagnosed([alive, dead], "generating rollouts", sync_fails)
    assert isinstance(err.value.__cause__, RuntimeError)  # chained to what failed
    core_dead = FakeEngine(errored=True)  # the actor lives, its vLLM engine core does not
    assert watchdog.dead_engines([alive, core_dead]) == [
        (watchdog.engine_name([alive, core_dead], 1), "EngineDeadError: its vLLM engine core is dead (the "
         "engine-core or worker process exited)")]
    engine_dead = RuntimeError("ray::RolloutRayActor.generate_responses()\nvllm.v1.engine.exceptions.EngineDeadError: "
                               "EngineCore encountered an issue.")
    with pytest.raises(watchdog.EngineDiedError, match="EngineDeadError: EngineCore encountered an issue"):
        watchdog._diagnosed([FakeEngine(dies=engine_dead)], "generating rollouts", sync_fails)


def test_engine_exit_fault_only_when_asked(monkeypatch):
    exits = []
    monkeypatch.setattr(watchdog.os, "_exit", exits.append)
    monkeypatch.delenv("RANK_GRPO_PLUGIN_CPU_FAULT", raising=False)
    watchdog.engine_exit_fault(1)
    monkeypatch.setenv("RANK_GRPO_PLUGIN_CPU_FAULT", "engine_exit:2")
    watchdog.engine_exit_fault(1)
    assert exits == []
    watchdog.engine_exit_fault(2)
    assert exits == [17]
