"""The weight-sync group: gloo between trainer rank 0 and the vLLM workers instead of vLLM's PyNccl (which on CPU
silently disables itself and broadcasts nothing), and the checksum guard after every ``broadcast_to_vllm``."""
from __future__ import annotations

import os
import sys

from .checksum import verify_weight_sync
from .common import ENV_FAULT, PATCHES, TAG, CpuBackendError, UpstreamChanged, require
from .engines import broadcast_guard

ENV_SYNC_TIMEOUT = "RANK_GRPO_PLUGIN_CPU_SYNC_TIMEOUT"


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
            raise CpuBackendError(f"{TAG} gloo weight sync needs a contiguous CPU tensor, got {tensor.device}")
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
    """Replaces ``openrlhf.utils.distributed_util.stateless_init_process_group`` (OpenRLHF 0.10.4-0.11.2), which
    builds a vLLM ``PyNcclCommunicator``: on CPU, a gloo group instead."""
    if os.environ.get(ENV_FAULT, "") == "null_sync":
        sys.stderr.write(f"{TAG} FAULT INJECTION {ENV_FAULT}=null_sync: weight sync broadcasts do nothing\n")
        return NullBroadcastGroup()
    return GlooBroadcastGroup(master_address, master_port, rank, world_size)


stateless_init_process_group._rank_grpo_cpu = True


def patch_distributed_util(mod) -> None:
    if getattr(mod.stateless_init_process_group, "_rank_grpo_cpu", False):
        return
    original = require(mod, "stateless_init_process_group")
    stateless_init_process_group.__wrapped__ = original
    mod.stateless_init_process_group = stateless_init_process_group
    PATCHES["distributed_util.stateless_init_process_group"] = "gloo group"


def patch_ppo_actor(mod) -> None:
    cls = mod.ActorPPOTrainer
    if getattr(cls.broadcast_to_vllm, "_rank_grpo_cpu", False):
        return
    original = require(mod, "ActorPPOTrainer.broadcast_to_vllm")
    require(mod, "ActorPPOTrainer._init_vllm_sync_group")  # calls the module-global stateless_init_process_group
    # ppo_actor bound its own copy via ``from openrlhf.utils.distributed_util import stateless_init_process_group``
    patch_distributed_util(sys.modules["openrlhf.utils.distributed_util"])
    bound = mod.stateless_init_process_group
    if bound is not stateless_init_process_group and bound is not stateless_init_process_group.__wrapped__:
        raise UpstreamChanged(f"{TAG} openrlhf.trainer.ray.ppo_actor.stateless_init_process_group is {bound!r}, "
                              "not the function imported from openrlhf.utils.distributed_util; OpenRLHF changed")
    mod.stateless_init_process_group = stateless_init_process_group

    def broadcast_to_vllm(self):
        # Wraps ActorPPOTrainer.broadcast_to_vllm (OpenRLHF 0.10.4-0.11.2): the sync, then the checksum guard;
        # the engines checked alive first, and a failure with a dead engine names it (engines.py).
        broadcast_guard(self, lambda: (original(self), verify_weight_sync(self)))

    broadcast_to_vllm._rank_grpo_cpu = True
    broadcast_to_vllm.__wrapped__ = original
    cls.broadcast_to_vllm = broadcast_to_vllm
    PATCHES["ActorPPOTrainer.broadcast_to_vllm"] = "checksum guard after each sync"
    PATCHES["ppo_actor.stateless_init_process_group"] = "gloo group"

