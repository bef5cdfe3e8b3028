"""Driver side: refuse OpenRLHF options that cannot run on CPU (all problems at once) before Ray starts, and make
``ray.init`` of a new local cluster offer the logical GPUs OpenRLHF's placement groups ask for."""
from __future__ import annotations

import inspect
import os
import sys

from .common import ENV_FORCE, PATCHES, TAG, CpuBackendError, UpstreamChanged, require

ENV_RAY_GPUS = "RANK_GRPO_PLUGIN_CPU_RAY_GPUS"
ENV_RAY_CPUS = "RANK_GRPO_PLUGIN_CPU_RAY_CPUS"
ENV_RAY_DASHBOARD = "RANK_GRPO_PLUGIN_CPU_RAY_DASHBOARD"


def _flag_given(flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in sys.argv[1:])


# (option, refused when, why): every rule is checked and every problem reported at once
RULES = (
    ("train.colocate_all", bool, "vLLM/DeepSpeed colocation shares weights through CUDA IPC"),
    ("vllm.enable_sleep", bool, "vLLM sleep mode needs CUDA memory pools"),
    ("ds.enable_sleep", bool, "DeepSpeed state offload/reload targets CUDA"),
    ("ds.packing_samples", bool, "also implied by --train.dynamic_batch_enable and --ds.ring_attn_size > 1; needs "
                                 "flash-attn varlen CUDA kernels"),
    ("train.async_enable", bool, "async training is not supported by the CPU backend"),
    ("vllm.sync_with_ray", bool, "Ray collectives need NCCL/pygloo; the CPU backend syncs over gloo"),
    ("vllm.tensor_parallel_size", lambda v: (v or 1) > 1, "> 1: one vLLM CPU worker per engine only"),
    ("ds.tensor_parallel_size", lambda v: (v or 1) > 1, "> 1: DeepSpeed AutoTP needs CUDA"),
    ("train.enable_ema", bool, "OpenRLHF moves EMA weights to 'cuda'"),
)


def check_args(args) -> None:
    """Refuse OpenRLHF options that cannot work on CPU (all of them in one error); default the attention
    implementation to sdpa."""
    from openrlhf_compat import arg

    problems = [f"--{name} ({why})" for name, refused, why in RULES if refused(arg(args, name))]
    attn = arg(args, "ds.attn_implementation", "")
    if "flash" in attn or "kernels-community" in attn:
        if _flag_given("--ds.attn_implementation"):
            problems.append(f"--ds.attn_implementation {attn} (CUDA kernels; use sdpa or eager)")
        else:
            print(f"{TAG} no CUDA: --ds.attn_implementation defaults to sdpa instead of {attn}", flush=True)
            args.ds.attn_implementation = "sdpa"
    if problems:
        raise CpuBackendError(
            f"{TAG} CUDA is not available, and these OpenRLHF options cannot run on the CPU backend:\n  - "
            + "\n  - ".join(problems)
            + f"\nRemove them, or run on a CUDA machine. (CPU backend: the openrlhf_cpu package; "
            f"{ENV_FORCE}=0 turns it off.)"
        )


def patch_get_strategy(mod) -> None:
    if getattr(mod.get_strategy, "_rank_grpo_cpu", False):
        return
    original = require(mod, "get_strategy")

    def get_strategy(args):
        # Wraps openrlhf.utils.utils.get_strategy (OpenRLHF 0.10.4-0.11.2): CPU option checks first.
        check_args(args)
        return original(args)

    get_strategy._rank_grpo_cpu = True
    get_strategy.__wrapped__ = original
    mod.get_strategy = get_strategy
    pkg = sys.modules.get("openrlhf.utils")
    if pkg is not None and getattr(pkg, "get_strategy", None) is original:
        pkg.get_strategy = get_strategy
    PATCHES["get_strategy"] = "CPU option checks"


# OpenRLHF's launcher in this process: the namespace its parser returned ("parsed") and the nested one
# ``openrlhf.utils.config.hierarchize`` made of it ("args"), on which the launcher derives options before Ray starts
_LAUNCHER: dict = {}


def _remember_launcher_args(parser, ns, argv) -> None:
    """Parse step: keep the namespace of a parser that holds every option of RULES (OpenRLHF's launcher)."""
    if all(f"--{name}" in parser._option_string_actions for name, _, _ in RULES):
        _LAUNCHER.clear()
        _LAUNCHER["parsed"] = ns


def patch_hierarchize(mod) -> None:
    """Wraps ``openrlhf.utils.config.hierarchize``: remember the nested namespace made of the launcher's parse."""
    if getattr(mod.hierarchize, "_rank_grpo_cpu", False):
        return
    original = require(mod, "hierarchize")

    def hierarchize(args):
        # Wraps openrlhf.utils.config.hierarchize (OpenRLHF 0.10.4-0.11.2): same result, remembered.
        result = original(args)
        if _LAUNCHER.get("parsed") is args:
            _LAUNCHER["args"] = result
        return result

    hierarchize._rank_grpo_cpu = True
    hierarchize.__wrapped__ = original
    mod.hierarchize = hierarchize
    PATCHES["hierarchize"] = "the launcher's arguments, for the CPU option checks before Ray starts"


def _check_before_ray(ray, args, kwargs):
    """ray.init step: the CPU option checks on the launcher's arguments as the launcher left them (options it
    derives after parsing included, e.g. --ds.packing_samples from --train.dynamic_batch_enable), so a refused
    option costs no Ray start-up. ``get_strategy`` checks again: a script may build its arguments without the
    launcher's parser."""
    if "args" in _LAUNCHER:
        check_args(_LAUNCHER["args"])
    return args, kwargs


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _ray_connects(ray, address) -> bool:
    """Whether ray.init(address) joins an existing cluster (RAY_ADDRESS, an address, or the cluster of the last
    `ray start` on this node) rather than starting a local one -- Ray's own resolution when available."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address) is not None
    except ImportError:
        return bool(address) or bool(os.environ.get("RAY_ADDRESS"))
    except Exception:  # noqa: BLE001 - e.g. nothing to connect to for "auto": let ray.init report it
        return True


def _local_cluster_resources(ray, args, kwargs):
    """ray.init step: a new local cluster gets logical GPUs (OpenRLHF places {"GPU": 1, "CPU": 1} bundles) and no
    dashboard (``RANK_GRPO_PLUGIN_CPU_RAY_DASHBOARD=1`` keeps it)."""
    if _ray_connects(ray, args[0] if args else kwargs.get("address")):
        return args, kwargs
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not _cuda_available():
        # e.g. set to "0" by the `deepspeed` launcher; Ray refuses more logical GPUs than listed there.
        print(f"{TAG} no CUDA: ignoring CUDA_VISIBLE_DEVICES={visible!r} for the local Ray cluster", flush=True)
        os.environ.pop("CUDA_VISIBLE_DEVICES")
    kwargs = dict(kwargs)
    if kwargs.get("num_gpus") is None:
        kwargs["num_gpus"] = int(os.environ.get(ENV_RAY_GPUS, "8"))
    if kwargs.get("num_cpus") is None:
        kwargs["num_cpus"] = int(os.environ.get(ENV_RAY_CPUS, str(max(os.cpu_count() or 1, 8))))
    if kwargs.get("include_dashboard") is None and os.environ.get(ENV_RAY_DASHBOARD, "0") != "1":
        # the dashboard's nine module processes start under a 30 s deadline; on a loaded 2-core machine they miss
        # it and take the whole cluster start-up down with them ("The current node timed out during startup")
        kwargs["include_dashboard"] = False
    return args, kwargs


def _joined_cluster_has_gpus(ray, result, args, kwargs) -> None:
    """ray.init step: joining a cluster without GPU resources would leave OpenRLHF's placement groups waiting."""
    if kwargs.get("num_gpus") is None and not ray.cluster_resources().get("GPU"):
        raise CpuBackendError(
            f"{TAG} the Ray cluster this process joined ({ray.get_runtime_context().gcs_address}) "
            "offers no GPU resource, so OpenRLHF's placement groups would wait forever. On CPU start it with "
            "logical GPUs, e.g. `ray start --head --num-gpus 8 --num-cpus 8`."
        )


def patch_ray_init(ray) -> None:
    """Three steps of the one ``ray.init`` wrapper (:func:`rank_grpo_plugin.hooks.on_ray_init`) and the parse step
    that feeds the first (:func:`rank_grpo_plugin.hooks.on_parse_args`)."""
    from rank_grpo_plugin.hooks import on_parse_args, on_ray_init

    init = getattr(ray, "init", None)
    if init is None or not callable(init) or "num_gpus" not in inspect.signature(init).parameters:
        raise UpstreamChanged(f"{TAG} ray.init has no num_gpus parameter (Ray {getattr(ray, '__version__', '?')})")
    on_parse_args("cpu_backend_options", after=_remember_launcher_args)
    on_ray_init("cpu_backend_options", before=_check_before_ray)
    on_ray_init("cpu_backend", before=_local_cluster_resources, after=_joined_cluster_has_gpus)
    PATCHES["ray.init"] = "CPU option checks before Ray starts; logical GPUs for local clusters"
