"""openrlhf_cpu.procs.kill_marked: stops exactly the processes that carry the marker (stdlib, no OpenRLHF)."""
import os
import subprocess
import sys
import time
import uuid

from openrlhf_cpu.procs import kill_marked

import pytest


@pytest.mark.slow  # starts processes
def test_kill_marked_stops_marked_processes_only():
    marker = uuid.uuid4().hex
    env = {**os.environ, "RANK_GRPO_TEST_MARK": marker}
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    marked = [subprocess.Popen(sleep, env=env) for _ in range(2)]
    other = subprocess.Popen(sleep, env={**env, "RANK_GRPO_TEST_MARK": marker + "x"})  # a different marker
    try:
        time.sleep(0.5)  # /proc/PID/environ is the exec-time environment
        assert kill_marked("RANK_GRPO_TEST_MARK", marker) == 2
        assert [p.wait(timeout=10) for p in marked] == [-9, -9]
        assert other.poll() is None
        assert kill_marked("RANK_GRPO_TEST_MARK", marker) == 0
    finally:
        for p in marked + [other]:
            p.kill()
            p.wait()
