"""The rendezvous port of a one-rank DeepSpeed group.

OpenRLHF picks ``MASTER_PORT`` long before it binds it: a Ray model actor takes a free port when it is built
(``BaseDistributedActor._get_free_port``: bind to port 0, close) and binds it in ``setup_distributed``, after the
vLLM engines and the other actors have started; the ``deepspeed`` launcher is handed a port the same way. In between,
the port is free in the kernel's ephemeral range, where the many local connections of Ray, gRPC and vLLM take their
source ports, so the bind can fail with ``EADDRINUSE`` (seen once in a whole-suite run of two launchers side by side).
In a group of one rank nobody else has been told the port, so a fresh one is as good: on ``EADDRINUSE`` pick a new
free port and try again, a few times. A group of several ranks cannot move its port alone; its error is re-raised
with what happened.
"""
from __future__ import annotations

import os
import sys

from rank_grpo_plugin.recipes import free_port

from .common import PATCHES, TAG, CpuBackendError, require

TRIES = 3


def _port_taken(exc: BaseException) -> bool:
    """True for torch's store error on a taken port (``DistNetworkError``, errno 98, message with EADDRINUSE)."""
    return "EADDRINUSE" in str(exc) or "address already in use" in str(exc).lower()


def bind_retrying(setup, *args, **kwargs):
    """Call ``setup(*args, **kwargs)`` (a ``setup_distributed``); when it fails because ``MASTER_PORT`` is taken and
    this process is the only rank (``WORLD_SIZE`` 1), set ``MASTER_PORT`` to a fresh free port and call it again, at
    most :data:`TRIES` times in all. Any other error, and a taken port in a larger group, is raised."""
    for attempt in range(1, TRIES + 1):
        try:
            return setup(*args, **kwargs)
        except Exception as exc:  # torch.distributed.DistNetworkError; its class moved between torch releases
            if not _port_taken(exc):
                raise
            port = os.environ.get("MASTER_PORT", "?")
            if os.environ.get("WORLD_SIZE", "1") != "1":
                raise CpuBackendError(
                    f"{TAG} the rendezvous port {port} was taken by another process between OpenRLHF choosing it "
                    f"and binding it, in a group of {os.environ.get('WORLD_SIZE')} ranks (which cannot move its "
                    "port alone); run again") from exc
            if attempt == TRIES:
                raise CpuBackendError(f"{TAG} {TRIES} rendezvous ports in a row were taken (last {port})") from exc
            os.environ["MASTER_PORT"] = str(free_port())
            sys.stderr.write(f"{TAG} rendezvous port {port} was taken before it was bound; a group of one rank "
                             f"moves to port {os.environ['MASTER_PORT']}\n")


def patch_strategy(mod) -> None:
    cls = mod.DeepspeedStrategy
    if getattr(cls.setup_distributed, "_rank_grpo_cpu", False):
        return
    original = require(mod, "DeepspeedStrategy.setup_distributed")

    def setup_distributed(self, *args, **kwargs):
        # Wraps DeepspeedStrategy.setup_distributed (OpenRLHF 0.10.4-0.11.2), which binds MASTER_PORT through
        # deepspeed.init_distributed: a one-rank group moves to a fresh port if its port was taken meanwhile.
        return bind_retrying(original, self, *args, **kwargs)

    setup_distributed._rank_grpo_cpu = True
    setup_distributed.__wrapped__ = original
    cls.setup_distributed = setup_distributed
    PATCHES["DeepspeedStrategy.setup_distributed"] = "a one-rank group moves to a free port if its port was taken"
