"""One registration path: the estimator, the policy loss and the launcher flags go into OpenRLHF's extension
points -- ``openrlhf.utils.extensions`` when OpenRLHF ships it (``patches/``), else the same points provided by
:mod:`.shim` -- with the same calls either way.

:func:`activate` runs when ``openrlhf`` is first imported (the startup hook, :mod:`rank_grpo_plugin._startup`);
:func:`register_extensions` is also the ``openrlhf.plugins`` entry point the upstream registry calls.
"""
from __future__ import annotations

import os
import threading

import openrlhf_compat
from rank_grpo_plugin.hooks import disabled, finder_installed, when_imported

from .flags import ESTIMATOR, POLICY_LOSS

_LOCK = threading.Lock()
_REGISTERED: dict = {}  # "upstream" | "shim" -> module registered into


def extension_points():
    """The module holding ``ADVANTAGE_ESTIMATORS`` / ``POLICY_LOSSES`` / ``CLI_EXTENSIONS`` in this process."""
    if openrlhf_compat.has_registry():
        import importlib

        return importlib.import_module(openrlhf_compat.REGISTRY_MODULE)
    from . import shim

    shim.install()
    return shim


def register_extensions(ext=None) -> None:
    """Register ``rank_grpo`` (estimator and policy loss) and the ``--rank_grpo.*`` flags in ``ext`` (default:
    :func:`extension_points`). Idempotent; a no-op when the plugin is disabled."""
    if disabled():
        return
    ext = extension_points() if ext is None else ext
    from .estimator import compute_rank_grpo_advantages
    from .flags import CLI_EXTENSION
    from .policy_loss import RankGRPOPolicyLoss

    with _LOCK:
        if ESTIMATOR not in ext.ADVANTAGE_ESTIMATORS:
            ext.ADVANTAGE_ESTIMATORS.register(ESTIMATOR, compute_rank_grpo_advantages)
        if POLICY_LOSS not in ext.POLICY_LOSSES:
            ext.POLICY_LOSSES.register(POLICY_LOSS, RankGRPOPolicyLoss)
        if CLI_EXTENSION not in ext.CLI_EXTENSIONS:
            ext.CLI_EXTENSIONS.append(CLI_EXTENSION)
        _REGISTERED["upstream" if ext.__name__ == openrlhf_compat.REGISTRY_MODULE else "shim"] = ext.__name__


def activate(openrlhf_module=None) -> None:
    """On the first ``import openrlhf``: register now (stock release, through the shim) or as soon as the
    upstream registry module is imported (it also calls the entry point; both are idempotent)."""
    if disabled():
        return
    if openrlhf_compat.has_registry():
        when_imported(openrlhf_compat.REGISTRY_MODULE, register_extensions)
    else:
        register_extensions()


def patch_status() -> dict:
    """What the plugin did in this process: each wrapped OpenRLHF function, and the registry it registered in."""
    from . import shim

    status = dict(shim.STATUS) if "shim" in _REGISTERED else {}
    if "upstream" in _REGISTERED:
        status[openrlhf_compat.REGISTRY_MODULE] = "registered"
    return status


def activation_report() -> dict:
    """A picklable summary of the plugin's state in this process (used by tests inside Ray actors)."""
    return {
        "active": (not disabled()) and finder_installed(),
        "disabled": disabled(),
        "openrlhf_version": openrlhf_compat.openrlhf_version(),
        "registry": openrlhf_compat.has_registry(),
        "extension_points": next(iter(_REGISTERED), None),
        "patches": patch_status(),
        "pid": os.getpid(),
    }
