"""Shared by the CPU backend's modules: the errors (each says what cannot run on CPU and what to do instead), the
record of applied patches, and the upstream check."""
from __future__ import annotations

from typing import Dict

from openrlhf_compat import OpenRLHFChanged

TAG = "[rank_grpo_plugin.cpu]"  # kept: logs and docs grep for it
ENV_FORCE = "RANK_GRPO_PLUGIN_CPU"
ENV_FAULT = "RANK_GRPO_PLUGIN_CPU_FAULT"  # fault injection for tests: null_sync, engine_exit[:N]
PATCHES: Dict[str, str] = {}  # what has been applied in this process: target -> short description


class CpuBackendError(RuntimeError):
    """An OpenRLHF option or setup the CPU backend cannot run."""


class UpstreamChanged(CpuBackendError, OpenRLHFChanged):
    """The installed OpenRLHF is not the code these patches were written against."""


class WeightSyncError(CpuBackendError):
    """vLLM holds different weights than the trainer after a weight sync."""


def require(module, qualname: str):
    """``module.qualname`` after the upstream fingerprint check (:func:`openrlhf_compat.verify`);
    raises :class:`UpstreamChanged`."""
    import openrlhf_compat

    if not openrlhf_compat.version_supported():
        raise UpstreamChanged(f"{TAG} " + openrlhf_compat.unsupported_message("the CPU backend (openrlhf_cpu)")
                              + f" Or run on CUDA, or set {ENV_FORCE}=0 to turn the CPU backend off.")
    try:
        return openrlhf_compat.require(module, qualname, error=UpstreamChanged,
                                       hint=f"update openrlhf_cpu for this OpenRLHF, or set {ENV_FORCE}=0")
    except UpstreamChanged as e:
        raise UpstreamChanged(f"{TAG} {e}") from None
