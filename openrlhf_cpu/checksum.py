"""Exact weight checksums: after every weight sync, trainer rank 0 and every vLLM worker compare 3 parameters."""
from __future__ import annotations

from typing import Dict, List

from .common import TAG, WeightSyncError

CHECKSUM_QUERY = "__rank_grpo_plugin_cpu_checksum__"  # name= of the update_weight call that asks for checksums


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


def vllm_checksums(worker, payload) -> Dict[str, object]:
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


def checksum_names(named) -> List[str]:
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
    names = checksum_names(named)
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
                raise WeightSyncError(f"{TAG} vLLM engine {i} worker {j} gave no checksums ({remote!r}); "
                                      "cannot verify the weight sync")
            meta = remote.get("__meta__", {})
            if meta.get("pending") or meta.get("reloads") != k:
                raise WeightSyncError(
                    f"{TAG} weight sync #{k} FAILED: vLLM engine {i} worker {j} applied {meta.get('reloads')} "
                    f"weight reloads (expected {k}) and has {meta.get('pending')} received tensors not applied"
                )
            for n in names:
                got = remote.get(n)
                if got is None or isinstance(got, str):
                    continue
                compared += 1
                if list(got) != local[n]:
                    raise WeightSyncError(
                        f"{TAG} weight sync #{k} FAILED: vLLM engine {i} worker {j} holds different values for "
                        f"{n} than the trainer (checksum {list(got)} vs trainer {local[n]}). vLLM would now generate "
                        f"from wrong weights (on CPU, vLLM's PyNccl silently disables itself and broadcasts nothing). "
                        f"Stopping instead of training on garbage."
                    )
    if compared == 0:
        raise WeightSyncError(
            f"{TAG} weight sync #{k}: none of {names} could be compared on the vLLM side ({results!r}); "
            "cannot verify the weight sync"
        )
    print(f"{TAG} weight sync #{k} verified: {compared} tensor checksums match on "
          f"{len(results)} vLLM engine(s) ({', '.join(names)})", flush=True)
    return local


