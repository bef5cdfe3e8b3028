"""vLLM side of the weight sync on CPU: receive into CPU tensors, apply the whole sync through vLLM's in-place
``reload_weights``, answer the checksum query."""
from __future__ import annotations

from .checksum import CHECKSUM_QUERY, vllm_checksums
from .common import PATCHES, TAG, CpuBackendError, UpstreamChanged, WeightSyncError, require
from .engines import engine_exit_fault


def update_weight(self, name, dtype, shape, empty_cache=False):
    """Replaces ``openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap.update_weight`` (OpenRLHF 0.10.4-0.11.2), which
    receives into ``torch.empty(..., device="cuda")`` and calls ``model.load_weights`` per tensor.

    On CPU, receives into a CPU tensor and buffers it. vLLM's CPU linear layers repack their weights into kernel
    format after loading (``dispatch_cpu_unquantized_gemm`` drops ``layer.weight``), so a plain ``load_weights``
    after start-up fails or leaves stale packed copies. When the last tensor of a sync arrives (OpenRLHF 0.10.4-0.11.2
    passes ``empty_cache=True`` exactly then) all buffered tensors go through vLLM's in-place
    ``model_runner.reload_weights`` (layerwise reload: load in checkpoint format, re-run the repacking).

    ``name == CHECKSUM_QUERY`` instead returns checksums of the parameters listed in ``shape``."""
    import torch

    if name == CHECKSUM_QUERY:
        return vllm_checksums(self, shape)
    if not getattr(self, "_rank_grpo_pending", None):  # the first tensor of a sync
        engine_exit_fault(getattr(self, "_rank_grpo_reloads", 0) + 1)
    if getattr(self, "_model_update_with_ray", False):
        raise CpuBackendError(f"{TAG} --vllm.sync_with_ray is not supported on CPU")
    if dtype != self.model_config.dtype:
        raise CpuBackendError(f"{TAG} weight sync dtype mismatch for {name}: trainer {dtype}, "
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
        raise UpstreamChanged(f"{TAG} vLLM {_vllm_version()} model runner has no reload_weights(); the CPU weight "
                              "sync needs vLLM's layerwise reload (tested with vLLM 0.29.0)")
    model = runner.model
    linear = torch.nn.functional.linear
    before = {id(m): m.cpu_linear for m in model.modules() if getattr(m, "cpu_linear", linear) is not linear}
    runner.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
    _repack_tied(model, before)
    stale = [n for n, m in model.named_modules() if id(m) in before and before[id(m)] is m.cpu_linear]
    if stale:
        raise WeightSyncError(f"{TAG} vLLM reload did not repack {len(stale)} CPU linear layers "
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


def patch_worker_wrap(mod) -> None:
    cls = mod.WorkerWrap
    if getattr(cls.update_weight, "_rank_grpo_cpu", False):
        return
    original = require(mod, "WorkerWrap.update_weight")
    # init_process_group imports stateless_init_process_group from distributed_util at call time (patched there).
    require(mod, "WorkerWrap.init_process_group")
    update_weight.__wrapped__ = original
    cls.update_weight = update_weight
    PATCHES["WorkerWrap.update_weight"] = "CPU receive + checksum query"


def verify_vllm_engine(mod) -> None:
    # RolloutRayActor.update_weight must forward to collective_rpc("update_weight") and return its result.
    require(mod, "RolloutRayActor.update_weight")
    PATCHES["RolloutRayActor.update_weight"] = "verified (carries the checksum query)"
