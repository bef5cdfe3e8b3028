"""The CPU backend inside a real local Ray cluster: logical GPUs declared by the patched ray.init, OpenRLHF-style
{"GPU": 1, "CPU": 1} placement groups schedule, and an actor importing OpenRLHF gets the patches (or not, with the
opt-out variable)."""
from __future__ import annotations

import json

import pytest

_SCRIPT = r"""
import json
import openrlhf  # activation: the CPU backend registers its import hooks (ray.init included)
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init(include_dashboard=False, log_to_driver=False)
try:
    gpus = ray.cluster_resources().get("GPU", 0)
    pg = placement_group([{"GPU": 1, "CPU": 1}], strategy="PACK")
    ray.get(pg.ready(), timeout=120)

    @ray.remote(num_gpus=1)
    class Probe:
        def check(self):
            import torch
            import openrlhf.trainer.ray.ppo_actor  # noqa: F401
            import openrlhf.trainer.ray.vllm_worker_wrap as ww
            import openrlhf_cpu
            from openrlhf_cpu.vllm_reload import update_weight
            dev = str(torch.cuda.current_device()) if openrlhf_cpu.installed() else "n/a"
            return {"installed": openrlhf_cpu.installed(), "patches": sorted(openrlhf_cpu.PATCHES), "device": dev,
                    "update_weight": ww.WorkerWrap.update_weight is update_weight}

    strategy = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=0)
    on = ray.get(Probe.options(scheduling_strategy=strategy).remote().check.remote(), timeout=300)
    off = ray.get(Probe.options(runtime_env={"env_vars": {"RANK_GRPO_PLUGIN_CPU": "0"}}).remote()
                  .check.remote(), timeout=300)
    print("RESULT " + json.dumps({"gpus": gpus, "on": on, "off": off}))
finally:
    ray.shutdown()
"""


@pytest.mark.slow
def test_patches_active_in_ray_actor_and_logical_gpus(run_py):
    out = run_py(["-c", _SCRIPT], env={"RANK_GRPO_PLUGIN_CPU": "1"}, timeout=420)
    assert out.returncode == 0, out.stdout[-5000:]
    res = json.loads(out.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert res["gpus"] >= 1
    assert res["on"]["installed"] and res["on"]["update_weight"] and res["on"]["device"] == "cpu"
    assert {"ActorPPOTrainer.broadcast_to_vllm", "WorkerWrap.update_weight", "NaiveReplayBuffer.__init__"} <= set(
        res["on"]["patches"])
    assert not res["off"]["installed"] and not res["off"]["update_weight"] and res["off"]["patches"] == []
