"""CPU backend pieces that need no Ray cluster: checksums, option refusals, upstream-change detection, the gloo
weight-sync group, and the patches applied on import of the real OpenRLHF 0.11.2 (in a subprocess)."""
from __future__ import annotations

import json
import os
import sys
import types
from types import SimpleNamespace

import pytest
import torch

import openrlhf_cpu  # noqa: E402  (importing the CPU backend patches nothing)
from openrlhf_cpu import checksum, common, driver, vllm_reload  # noqa: E402


# ---------------------------------------------------------------------------------------------------- checksums
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_checksum_is_exact_and_sensitive(dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=g).to(dtype)
    assert checksum.weight_checksum(w) == checksum.weight_checksum(w.clone())
    assert checksum.weight_checksum(w)[2] == w.numel()
    flipped = w.clone()
    flipped.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)[3, 5] += 1  # one ulp
    assert checksum.weight_checksum(flipped) != checksum.weight_checksum(w)
    swapped = w.clone()
    swapped[[0, 1]] = swapped[[1, 0]]  # same values, other places
    assert checksum.weight_checksum(swapped)[0] == checksum.weight_checksum(w)[0]
    assert checksum.weight_checksum(swapped) != checksum.weight_checksum(w)
    assert checksum.weight_checksum(torch.zeros(8)) != checksum.weight_checksum(torch.ones(8))


def test_checksum_names_pick_live_vllm_parameters():
    model = torch.nn.Module()
    named = [("model.embed_tokens.weight", torch.zeros(4, 2)), ("model.layers.0.q_proj.bias", torch.zeros(2)),
             ("model.layers.0.input_layernorm.weight", torch.zeros(2)), ("model.layers.0.q_proj.weight",
             torch.zeros(2, 2)), ("model.norm.weight", torch.zeros(2)), ("lm_head.weight", torch.zeros(4, 2))]
    del model
    names = checksum.checksum_names(named)
    assert names[0] == "model.embed_tokens.weight" and names[-1] == "lm_head.weight"
    assert not any(n.endswith(".bias") for n in names) and len(names) == 3


# ---------------------------------------------------------------------------------------------------- refusals
def _args(**over):
    args = SimpleNamespace(
        train=SimpleNamespace(colocate_all=False, async_enable=False, enable_ema=False),
        vllm=SimpleNamespace(enable_sleep=False, sync_with_ray=False, tensor_parallel_size=1),
        ds=SimpleNamespace(enable_sleep=False, packing_samples=False, tensor_parallel_size=1,
                           attn_implementation="sdpa"),
    )
    for path, value in over.items():
        group, name = path.split("__")
        setattr(getattr(args, group), name, value)
    return args


@pytest.mark.parametrize("option,value,flag", [
    ("train__colocate_all", True, "--train.colocate_all"),
    ("vllm__enable_sleep", True, "--vllm.enable_sleep"),
    ("ds__enable_sleep", True, "--ds.enable_sleep"),
    ("ds__packing_samples", True, "--ds.packing_samples"),
    ("train__async_enable", True, "--train.async_enable"),
    ("vllm__sync_with_ray", True, "--vllm.sync_with_ray"),
    ("vllm__tensor_parallel_size", 2, "--vllm.tensor_parallel_size"),
    ("ds__tensor_parallel_size", 2, "--ds.tensor_parallel_size"),
    ("train__enable_ema", True, "--train.enable_ema"),
])
def test_unsupported_options_are_refused(option, value, flag):
    with pytest.raises(openrlhf_cpu.CpuBackendError) as e:
        driver.check_args(_args(**{option: value}))
    assert flag in str(e.value) and "CUDA is not available" in str(e.value)


def test_every_refused_option_is_reported_at_once():
    with pytest.raises(openrlhf_cpu.CpuBackendError) as e:
        driver.check_args(_args(train__colocate_all=True, vllm__tensor_parallel_size=2, train__enable_ema=True))
    text = str(e.value)
    assert all(f in text for f in ("--train.colocate_all", "--vllm.tensor_parallel_size", "--train.enable_ema"))
    assert text.count("\n  - ") == 3


def test_supported_options_pass_and_flash_attention_default_becomes_sdpa(monkeypatch):
    driver.check_args(_args())
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray.py", "--rollout.n_samples_per_prompt", "4"])
    args = _args(ds__attn_implementation="flash_attention_2")
    driver.check_args(args)
    assert args.ds.attn_implementation == "sdpa"
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray.py", "--ds.attn_implementation", "flash_attention_2"])
    with pytest.raises(openrlhf_cpu.CpuBackendError, match="attn_implementation flash_attention_2"):
        driver.check_args(_args(ds__attn_implementation="flash_attention_2"))


def test_refusal_comes_before_ray_from_the_launcher_namespace(monkeypatch):
    """The parse step keeps the namespace of a parser holding every refused option (OpenRLHF's launcher); the
    wrapped ``hierarchize`` remembers the nested namespace made of it, and the ray.init step checks that one as the
    launcher left it: an option the launcher derives after parsing (packing from --train.dynamic_batch_enable) is
    refused too. Other parsers, and other namespaces passed to ``hierarchize``, are ignored."""
    import argparse

    import openrlhf.utils.config as oc

    monkeypatch.setattr(driver, "_LAUNCHER", {})
    assert getattr(oc.hierarchize, "_rank_grpo_cpu", False)  # the CPU backend is active in this process
    other = argparse.ArgumentParser()
    other.add_argument("--train.async_enable", action="store_true")
    driver._remember_launcher_args(other, other.parse_args(["--train.async_enable"]), [])
    assert oc.hierarchize(argparse.Namespace(**{"train.async_enable": True})).train.async_enable
    assert driver._LAUNCHER == {}
    assert driver._check_before_ray(None, ("auto",), {"x": 1}) == (("auto",), {"x": 1})

    launcher = argparse.ArgumentParser()
    for name, _, _ in driver.RULES:
        launcher.add_argument(f"--{name}", type=int, default=0)
    launcher.add_argument("--ds.attn_implementation", default="sdpa")
    parsed = launcher.parse_args([])
    driver._remember_launcher_args(launcher, parsed, [])
    assert driver._check_before_ray(None, (), {}) == ((), {})  # parsed, not yet hierarchized: nothing to check
    args = oc.hierarchize(parsed)
    assert driver._LAUNCHER["args"] is args
    assert driver._check_before_ray(None, (), {}) == ((), {})
    args.ds.packing_samples = True  # what the launcher does for --train.dynamic_batch_enable, after parsing
    with pytest.raises(openrlhf_cpu.CpuBackendError, match="--ds.packing_samples"):
        driver._check_before_ray(None, (), {})


# ---------------------------------------------------------------------------------------------- upstream guard
def get_strategy(args):  # a stand-in with different source than OpenRLHF 0.11.2's get_strategy
    return ("changed upstream", args)


def test_changed_upstream_function_is_detected():
    fake = types.ModuleType("openrlhf.utils.utils")
    fake.get_strategy = get_strategy
    fake.__file__ = __file__  # the source file the fingerprint reads
    with pytest.raises(openrlhf_cpu.UpstreamChanged, match="get_strategy is not the OpenRLHF 0.11.2 code"):
        common.require(fake, "get_strategy")
    fake.__file__ = "/nonexistent/utils.py"
    with pytest.raises(openrlhf_cpu.UpstreamChanged, match="not found"):
        common.require(fake, "get_strategy")


def test_other_openrlhf_version_is_refused(monkeypatch):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.12.0")
    with pytest.raises(openrlhf_cpu.UpstreamChanged,
                       match=r"releases 0\.10\.4, 0\.11\.0, 0\.11\.1 and 0\.11\.2 .* but OpenRLHF 0\.12\.0 is"):
        common.require(types.ModuleType("openrlhf.utils.utils"), "get_strategy")


# ------------------------------------------------------------------------------------------ gloo weight sync
def _gloo_peer(port, rank, q):
    import torch as t

    from openrlhf_cpu.checksum import weight_checksum
    from openrlhf_cpu.weight_sync import GlooBroadcastGroup

    group = GlooBroadcastGroup("127.0.0.1", port, rank, 2)
    w = t.arange(1000, dtype=t.float32).reshape(10, 100).to(t.bfloat16) if rank == 0 else \
        t.empty(10, 100, dtype=t.bfloat16)
    group.broadcast(w, src=0, stream=None)
    q.put((rank, weight_checksum(w)))


def test_gloo_broadcast_group_moves_bf16_weights():
    import multiprocessing as mp
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_gloo_peer, args=(port, r, q)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        got = dict(q.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert got[0] == got[1]
    assert got[0] == checksum.weight_checksum(torch.arange(1000, dtype=torch.float32).reshape(10, 100).to(torch.bfloat16))


# ------------------------------------------------------------------------------------------ rendezvous port
def _gloo_rendezvous():
    """What DeepSpeed's init_distributed does on CPU: an env:// gloo process group (MASTER_ADDR/PORT, RANK,
    WORLD_SIZE), whose rank 0 binds MASTER_PORT in a TCPStore."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    return dist.get_world_size()


@pytest.fixture
def taken_port(monkeypatch):
    """A port another socket listens on, named as this process's rendezvous port (rank 0)."""
    import socket

    sock = socket.socket()
    sock.bind(("", 0))
    sock.listen()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(sock.getsockname()[1]))
    monkeypatch.setenv("RANK", "0")
    yield sock.getsockname()[1]
    sock.close()


def test_one_rank_group_moves_off_a_taken_rendezvous_port(taken_port, monkeypatch, capsys):
    import torch.distributed as dist

    from openrlhf_cpu import rendezvous

    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(Exception, match="EADDRINUSE"):  # torch's own error, which the wrapper recognises
        _gloo_rendezvous()
    try:
        assert rendezvous.bind_retrying(_gloo_rendezvous) == 1
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    moved = int(os.environ["MASTER_PORT"])
    assert moved != taken_port
    assert f"rendezvous port {taken_port} was taken before it was bound" in capsys.readouterr().err


def test_taken_port_of_a_larger_group_and_other_errors_are_raised(taken_port, monkeypatch):
    from openrlhf_cpu import rendezvous

    monkeypatch.setenv("WORLD_SIZE", "2")  # rank 1 was told this port: rank 0 cannot move alone
    with pytest.raises(common.CpuBackendError, match=f"port {taken_port} was taken .* group of 2 ranks"):
        rendezvous.bind_retrying(_gloo_rendezvous)
    assert os.environ["MASTER_PORT"] == str(taken_port)
    monkeypatch.setenv("WORLD_SIZE", "1")
    calls = []

    def always_taken():
        calls.append(os.environ["MASTER_PORT"])
        raise RuntimeError("The server socket has failed to listen ... EADDRINUSE")

    with pytest.raises(common.CpuBackendError, match="3 rendezvous ports in a row were taken"):
        rendezvous.bind_retrying(always_taken)
    assert len(calls) == rendezvous.TRIES and len(set(calls)) == rendezvous.TRIES

    def broken():
        calls.append("broken")
        raise ValueError("not a port problem")

    with pytest.raises(ValueError, match="not a port problem"):
        rendezvous.bind_retrying(broken)
    assert calls[-2:] == [calls[-2], "broken"] and calls.count("broken") == 1


# --------------------------------------------------------------------- patches on real OpenRLHF (subprocess)
_PROBE = r"""
import json, sys
import openrlhf.trainer.ray.ppo_actor as pa, openrlhf.trainer.ray.vllm_worker_wrap as ww
import openrlhf.trainer.ray.vllm_engine, openrlhf.utils.distributed_util as du, openrlhf.utils
import openrlhf.utils.config, openrlhf.utils.deepspeed
from openrlhf.trainer.ppo_utils import NaiveReplayBuffer
import openrlhf.trainer.ppo_utils.samples_generator as sg
import ray, torch
import openrlhf_cpu as cpu
from openrlhf_cpu.vllm_reload import update_weight
from openrlhf_cpu.weight_sync import stateless_init_process_group
try:
    replay_device = str(NaiveReplayBuffer(4).target_device)
except (AssertionError, RuntimeError) as e:  # upstream on a machine without CUDA
    replay_device = "error: " + str(e)
print("RESULT " + json.dumps({
    "installed": cpu.installed(),
    "patches": sorted(cpu.PATCHES),
    "sync_fn": [du.stateless_init_process_group is stateless_init_process_group,
                pa.stateless_init_process_group is stateless_init_process_group],
    "update_weight": ww.WorkerWrap.update_weight is update_weight,
    "get_strategy": openrlhf.utils.get_strategy.__module__,
    "replay_device": replay_device,
    "ray_init": ray.init.steps() if hasattr(ray.init, "steps") else [],
    "engine_watch": [getattr(pa.ActorPPOTrainer._init_vllm_sync_group, "_rank_grpo_cpu_watch", False),
                     getattr(sg.SamplesGenerator._generate_vllm, "_rank_grpo_cpu_watch", False)],
}))
"""


@pytest.mark.slow  # a fresh Python process
def test_patches_applied_on_import_and_opt_out(run_py):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # two independent processes, side by side on the 2 cores
        out, off = pool.map(lambda on: run_py(["-c", _PROBE], env={"RANK_GRPO_PLUGIN_CPU": on}, timeout=300), "10")
    assert out.returncode == 0, out.stdout[-4000:]
    res = json.loads(out.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert res["installed"] and res["sync_fn"] == [True, True] and res["update_weight"]
    assert res["ray_init"][-2:] == ["cpu_backend_options", "cpu_backend"]
    assert res["get_strategy"] == "openrlhf_cpu.driver"
    assert res["replay_device"] == "cpu"
    assert {"torch.cuda", "NaiveReplayBuffer.__init__", "ActorPPOTrainer.broadcast_to_vllm",
            "WorkerWrap.update_weight", "RolloutRayActor.update_weight", "get_strategy", "hierarchize", "ray.init",
            "ActorPPOTrainer._init_vllm_sync_group", "SamplesGenerator._generate_vllm",
            "DeepspeedStrategy.setup_distributed"} <= set(res["patches"])
    assert res["engine_watch"] == [True, True]
    assert off.returncode == 0, off.stdout[-4000:]
    res = json.loads(off.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert not res["installed"] and res["patches"] == [] and res["sync_fn"] == [False, False]
    assert not res["update_weight"] and "cpu_backend" not in res["ray_init"]
    assert res["get_strategy"] == "openrlhf.utils.utils"
    assert res["engine_watch"] == [False, False]


def test_ray_init_patch_only_adds_resources_for_a_new_local_cluster(monkeypatch):
    import ray
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert driver._ray_connects(ray, None) is True
    monkeypatch.delenv("RAY_ADDRESS")
    assert driver._ray_connects(ray, "local") is False
    assert driver._ray_connects(ray, "10.0.0.1:6379") is True
    # a new local cluster: logical GPUs, the CPUs, no dashboard unless asked for; a joined cluster: untouched
    monkeypatch.setattr(driver, "_ray_connects", lambda ray, address: False)
    monkeypatch.delenv(driver.ENV_RAY_DASHBOARD, raising=False)
    _, kw = driver._local_cluster_resources(ray, (), {"runtime_env": {}})
    assert kw["num_gpus"] == 8 and kw["num_cpus"] >= 8 and kw["include_dashboard"] is False
    assert driver._local_cluster_resources(ray, (), {"include_dashboard": True})[1]["include_dashboard"] is True
    monkeypatch.setenv(driver.ENV_RAY_DASHBOARD, "1")
    assert "include_dashboard" not in driver._local_cluster_resources(ray, (), {})[1]
    monkeypatch.setattr(driver, "_ray_connects", lambda ray, address: True)
    assert driver._local_cluster_resources(ray, ("auto",), {}) == (("auto",), {})


# ------------------------------------------------------------------------------------------- vLLM reload (tied head)
class _PackedLinear(torch.nn.Module):
    """Stand-in for a vLLM CPU layer: ``process_weights_after_loading`` packs ``weight`` into ``cpu_linear`` (a
    copy, as vLLM's dispatch_cpu_unquantized_gemm does). A real vLLM model cannot be built without an engine; the
    launcher tests run real vLLM with an untied tiny model."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight
        self.quant_method = SimpleNamespace(process_weights_after_loading=self._pack)
        self._pack(self)

    @staticmethod
    def _pack(layer):
        packed = layer.weight.detach().clone()
        layer.cpu_linear = lambda x, w=None, b=None, packed=packed: x @ packed.t()


def _fake_worker(tied: bool):
    embed = _PackedLinear(torch.nn.Parameter(torch.zeros(4, 3), requires_grad=False))
    head = _PackedLinear(embed.weight if tied else torch.nn.Parameter(torch.zeros(4, 3), requires_grad=False))
    model = torch.nn.ModuleDict({"embed_tokens": embed, "lm_head": head})

    def reload_weights(weights_iterator, is_checkpoint_format):
        # like vLLM's layerwise reload: update the checkpoint's tensors in place and re-process their layers only
        for name, w in weights_iterator:
            layer = model[name.split(".")[0]]
            layer.weight.data.copy_(w)
            layer.quant_method.process_weights_after_loading(layer)

    return SimpleNamespace(model_runner=SimpleNamespace(model=model, reload_weights=reload_weights)), model


def test_reload_repacks_a_tied_lm_head_and_refuses_a_stale_untied_one():
    new = torch.arange(12.0).view(4, 3)
    x = torch.ones(1, 3)
    worker, model = _fake_worker(tied=True)  # the checkpoint has no lm_head.weight when it is tied
    vllm_reload._reload_on_cpu(worker, [("embed_tokens.weight", new)])
    assert torch.equal(model["lm_head"].cpu_linear(x), x @ new.t())  # generates with the new weights
    assert worker._rank_grpo_reloads == 1
    worker, model = _fake_worker(tied=False)  # an untied head missing from the sync is stale: refused
    with pytest.raises(common.WeightSyncError, match=r"did not repack 1 CPU linear layers \(e.g. \['lm_head'\]\)"):
        vllm_reload._reload_on_cpu(worker, [("embed_tokens.weight", new)])
