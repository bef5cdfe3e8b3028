"""Stop a launcher run on CPU and everything it started (Ray workers, vLLM engines, DeepSpeed ranks).

Ray's workers are not children of the launcher, so a process group kill misses them; every process started
under one environment marker inherits it, which is what :func:`kill_marked` looks for (Linux ``/proc``)."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Iterable


def kill_marked(env_name: str, marker: str, keep: Iterable[int] = ()) -> int:
    """SIGKILL every process (but this one and those in ``keep``) whose environment holds ``env_name=marker``;
    returns how many."""
    spare = {os.getpid(), *keep}
    needle, n = f"{env_name}={marker}".encode(), 0
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) in spare:
            continue
        try:
            if needle in (pid_dir / "environ").read_bytes().split(b"\0"):
                os.kill(int(pid_dir.name), signal.SIGKILL)
                n += 1
        except OSError:  # gone, or not ours to read
            continue
    return n
