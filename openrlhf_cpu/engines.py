"""Rollout-engine watchdog: a vLLM engine that dies -- at start-up or during the run -- ends the job within a bounded
time with an error naming the engine (:class:`EngineDiedError`), instead of leaving the trainer waiting.

Without it, OpenRLHF's trainer rank 0 waits for a dead engine in the weight-sync group: at start-up
``ActorPPOTrainer._init_vllm_sync_group`` builds the group before it looks at the engines' replies, so an engine
whose constructor failed (e.g. vLLM refusing a KV cache larger than the free memory) leaves it in the group's
rendezvous until the sync timeout (``RANK_GRPO_PLUGIN_CPU_SYNC_TIMEOUT``, 600 s) -- and the driver waits on it.

* start-up -- ``ActorPPOTrainer._init_vllm_sync_group`` first waits until every engine actor is constructed
  (Ray's ``__ray_ready__``), polling every :data:`POLL_S` s: a dead engine is reported at once with vLLM's own
  reason, an engine not up after ``RANK_GRPO_PLUGIN_CPU_ENGINE_START_TIMEOUT`` s (default 900) too;
* during the run -- ``ActorPPOTrainer.broadcast_to_vllm`` checks that every engine is alive before each weight
  sync, and a sync or a rollout (``SamplesGenerator._generate_vllm``) that fails is diagnosed: when an engine is
  dead the error names it (engine index, actor id, Ray's or vLLM's reason), chained to the original failure.

Liveness: an actor whose process exited, or whose constructor raised, answers every call with Ray's
``RayActorError``; an actor whose vLLM engine-core (or worker) process died lives on, so the check also asks vLLM
inside the actor (``AsyncLLM.errored``, through Ray's ``__ray_call__``). A busy engine is never declared dead for
being slow.
"""
from __future__ import annotations

import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

from .common import ENV_FAULT, PATCHES, TAG, CpuBackendError, require

ENV_START_TIMEOUT = "RANK_GRPO_PLUGIN_CPU_ENGINE_START_TIMEOUT"
START_TIMEOUT_S = 900.0
POLL_S = 2.0
ALIVE_TIMEOUT_S = 30.0  # how long a liveness ping may take before the engine counts as busy (never as dead)
DIAGNOSE_S = 60.0  # how long a failure that looks like a lost peer waits for an engine's death to show


class EngineDiedError(CpuBackendError):
    """A vLLM rollout engine died (or never came up); the message names it and says why."""


def engine_name(engines: Sequence, i: int) -> str:
    actor_id = getattr(engines[i], "_actor_id", None)
    ident = actor_id.hex()[:16] if hasattr(actor_id, "hex") else "?"
    return f"vLLM engine {i} of {len(engines)} (RolloutRayActor {ident})"


def _reason(err: BaseException) -> str:
    """The last ``SomethingError: ...`` line of a Ray error's text (the engine's own exception), else its start."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if ":" in line and head.replace(".", "").isidentifier() and head.endswith(("Error", "Exception", "Exit")):
            return line[:600]
    return " ".join(lines)[:600] or type(err).__name__


def _dead(err: BaseException) -> bool:
    """Whether a reply means the engine is gone: its actor died, or vLLM's engine core did."""
    from ray.exceptions import RayActorError

    return isinstance(err, RayActorError) or "EngineDeadError" in f"{type(err).__name__} {err}"


def _start_timeout() -> float:
    return float(os.environ.get(ENV_START_TIMEOUT, START_TIMEOUT_S))


def wait_for_engines(engines: Sequence, timeout: Optional[float] = None) -> None:
    """Block until every engine actor is constructed. :class:`EngineDiedError` naming the first engine that died
    (with vLLM's reason), or, after ``timeout`` s, every engine that is still not up."""
    import ray

    timeout = _start_timeout() if timeout is None else timeout
    index = {engine.__ray_ready__.remote(): i for i, engine in enumerate(engines)}
    pending = list(index)
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=max(0.0, min(POLL_S, left)))
        for ref in ready:
            try:
                ray.get(ref)
            except Exception as e:  # noqa: BLE001 - any failure to construct is a dead engine
                raise EngineDiedError(f"{TAG} {engine_name(engines, index[ref])} died at start-up: {_reason(e)}. The "
                                      "run stops here instead of waiting for it in the weight-sync group.") from None
        if pending and left <= 0:
            names = ", ".join(engine_name(engines, index[r]) for r in pending)
            raise EngineDiedError(f"{TAG} {names} not up after {timeout:.0f} s ({ENV_START_TIMEOUT}); the run "
                                  "stops instead of waiting for it")


def engine_state(actor) -> Optional[str]:
    """Run inside a ``RolloutRayActor`` (through Ray's ``__ray_call__``): None when its vLLM engine runs, else why
    not (the actor lives on after its engine-core process died; vLLM then answers every request with
    ``EngineDeadError``)."""
    llm = getattr(actor, "llm", None)
    if llm is not None and getattr(llm, "errored", False):
        return "EngineDeadError: its vLLM engine core is dead (the engine-core or worker process exited)"
    return None


def dead_engines(engines: Sequence, timeout: float = ALIVE_TIMEOUT_S) -> List[Tuple[str, str]]:
    """``(engine name, reason)`` of every engine whose actor is dead, or whose vLLM engine core is (a slow answer
    is not a death)."""
    import ray

    if not engines:
        return []
    index = {engine.__ray_call__.remote(engine_state): i for i, engine in enumerate(engines)}
    ready, _ = ray.wait(list(index), num_returns=len(index), timeout=timeout)
    dead = []
    for ref in ready:
        try:
            state = ray.get(ref)
        except Exception as e:  # noqa: BLE001
            if _dead(e):
                dead.append((engine_name(engines, index[ref]), _reason(e)))
            continue
        if state:
            dead.append((engine_name(engines, index[ref]), state))
    return dead


def check_engines_alive(engines: Sequence, when: str, cause: Optional[BaseException] = None) -> None:
    """:class:`EngineDiedError` naming every dead engine (``when``: what the run was doing), chained to ``cause``
    (the failure that led to the check) when given."""
    dead = dead_engines(engines or [])
    if dead:
        what = "; ".join(f"{name} died during the run ({when}): {reason}" for name, reason in dead)
        raise EngineDiedError(f"{TAG} {what}. The run stops.") from cause


_PEER_FAILURE = ("closed by peer", "connection reset", "broken pipe", "enginedead", "actordied", "actor died",
                 "collective_rpc", "rayactorerror")


def _diagnosed(engines, when: str, call):
    """``call()``; if it fails while an engine is dead, :class:`EngineDiedError` naming it instead. A failure that
    looks like a lost peer (a gloo connection closed, an actor or engine core gone) is given up to
    :data:`DIAGNOSE_S` s for the death to show (vLLM notices a dead worker process within seconds); any other
    failure gets one check, then stands as it is."""
    try:
        return call()
    except EngineDiedError:
        raise
    except Exception as e:
        text = f"{type(e).__name__} {e}".lower()
        deadline = time.monotonic() + (DIAGNOSE_S if any(k in text for k in _PEER_FAILURE) else 0.0)
        while True:
            try:
                check_engines_alive(engines, when, cause=e)
            except EngineDiedError:
                raise
            except Exception:  # noqa: BLE001 - the diagnosis itself failed: the original error stands
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        raise


# ------------------------------------------------------------------------------------------------------ patches
def _wrap(mod, qualname: str, make, description: str) -> None:
    """Replace ``Class.method`` (``qualname``) of ``mod`` by ``make(original)``, once: the original is checked
    against its fingerprint first (:func:`require`), the wrapper is marked and recorded in :data:`PATCHES`."""
    cls_name, meth = qualname.split(".")
    cls = getattr(mod, cls_name)
    if getattr(getattr(cls, meth), "_rank_grpo_cpu_watch", False):
        return
    original = require(mod, qualname)
    wrapper = make(original)
    wrapper._rank_grpo_cpu_watch = True
    wrapper.__wrapped__ = original
    setattr(cls, meth, wrapper)
    PATCHES[qualname] = description


def patch_ppo_actor(mod) -> None:
    """``ActorPPOTrainer._init_vllm_sync_group``: wait for the engines first (trainer rank 0, at start-up)."""
    def make(original):
        def _init_vllm_sync_group(self, *args, **kwargs):
            # Wraps ActorPPOTrainer._init_vllm_sync_group (OpenRLHF 0.10.4-0.11.2): the engines are up, or an error.
            wait_for_engines(self.vllm_engines)
            return original(self, *args, **kwargs)
        return _init_vllm_sync_group

    _wrap(mod, "ActorPPOTrainer._init_vllm_sync_group", make,
          "waits for the vLLM engines (dead engine: EngineDiedError)")


def broadcast_guard(trainer, sync):
    """Run a weight sync (``sync()``) of ``trainer`` (an ``ActorPPOTrainer``) with the engines checked before it
    and a failure diagnosed (used by :mod:`.weight_sync`'s ``broadcast_to_vllm``)."""
    engines = getattr(trainer, "vllm_engines", None) or []
    check_engines_alive(engines, "before a weight sync")
    return _diagnosed(engines, "during a weight sync", sync)


def patch_samples_generator(mod) -> None:
    """``SamplesGenerator._generate_vllm``: a rollout that fails because an engine died names the engine."""
    def make(original):
        def _generate_vllm(self, *args, **kwargs):
            # Wraps SamplesGenerator._generate_vllm (OpenRLHF 0.10.4-0.11.2): a dead engine is named.
            return _diagnosed(getattr(self, "vllm_engines", None), "generating rollouts",
                              lambda: original(self, *args, **kwargs))
        return _generate_vllm

    _wrap(mod, "SamplesGenerator._generate_vllm", make, "a dead vLLM engine is named")


# ------------------------------------------------------------------------------------------------ fault injection
def engine_exit_fault(sync_number: int) -> None:
    """Test-only (``RANK_GRPO_PLUGIN_CPU_FAULT=engine_exit[:N]``, default N = 1): the vLLM worker process exits
    when weight sync #N reaches it, as an engine killed mid-run (the OOM killer) would. Called by
    :mod:`.vllm_reload` in the worker."""
    value = os.environ.get(ENV_FAULT, "")
    if not value.startswith("engine_exit"):
        return
    at = int(value.split(":", 1)[1]) if ":" in value else 1
    if sync_number == at:
        sys.stderr.write(f"{TAG} FAULT INJECTION {ENV_FAULT}={value}: vLLM worker pid {os.getpid()} exits at weight "
                         f"sync #{at}\n")
        sys.stderr.flush()
        os._exit(17)
