"""torch.cuda shims and the replay buffer's device: what OpenRLHF asks of CUDA that the CPU can answer."""
from __future__ import annotations

import threading

from .common import PATCHES, TAG, UpstreamChanged, require


def patch_torch_cuda(torch) -> None:
    cuda = torch.cuda
    if cuda.is_available():  # forced on a CUDA machine: leave torch alone
        return
    if getattr(cuda, "_rank_grpo_cpu_shims", False):
        return
    names = ("set_device", "current_device", "synchronize", "empty_cache", "current_stream")
    for name in names:
        if not callable(getattr(cuda, name, None)):
            raise UpstreamChanged(f"{TAG} torch {torch.__version__} has no torch.cuda.{name}")
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


_device_swap_lock = threading.Lock()


def patch_replay_buffer(mod) -> None:
    cls = mod.NaiveReplayBuffer
    original = require(mod, "NaiveReplayBuffer.__init__")
    if getattr(original, "_rank_grpo_cpu", False):
        return
    import torch

    def __init__(self, *args, **kwargs):
        # Replaces NaiveReplayBuffer.__init__ (OpenRLHF 0.10.4-0.11.2), which builds
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
