"""Upstream compatibility: which OpenRLHF releases the plugin (adapter and CPU backend) was written against.

The one table to edit when a release is added (:data:`RELEASES`): per release, the fingerprint of every OpenRLHF
function that is patched or relied on, and the launcher's ``choices`` that the flags extension checks. One
fingerprint style: sha256 of the definition's source text (``ast.get_source_segment``) read from the module's
*file*, so wrappers installed at runtime (ours, Ray's actor classes) do not change it. :func:`verify` is the one
check; :class:`UnsupportedOpenRLHF` / :class:`OpenRLHFChanged` are the errors.

Standard library only; never imports OpenRLHF (it runs inside import hooks).
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = [
    "RELEASES", "SUPPORTED_OPENRLHF_VERSIONS", "Release", "UpstreamError", "UnsupportedOpenRLHF",
    "OpenRLHFChanged", "openrlhf_version", "version_supported", "unsupported_message", "release",
    "fingerprint", "verify", "require", "has_registry", "arg", "REGISTRY_MODULE",
]

REGISTRY_MODULE = "openrlhf.utils.extensions"  # the extension registry added by patches/0001-*


@dataclass(frozen=True)
class Release:
    version: str
    sources: Mapping[str, str]  # "module:qualname" -> sha256 of its source text in this release
    choices: Mapping[str, Tuple[str, ...]]  # train_ppo_ray flag -> its choices in this release (before ours)


_EM = "openrlhf.trainer.ppo_utils.experience_maker"
_PA = "openrlhf.trainer.ray.ppo_actor"
_WW = "openrlhf.trainer.ray.vllm_worker_wrap"

RELEASES: Dict[str, Release] = {
    "0.11.2": Release(
        version="0.11.2",
        sources={
            # Rank-GRPO adapter (shim.py), only without the registry of patches/
            f"{_EM}:RemoteExperienceMaker.compute_advantages_and_returns":
                "edee114b74af1e792960f911d528043b286ff660ba28df78073a7300d1385c25",
            f"{_PA}:ActorPPOTrainer.__init__": "7a01d56d774f90820f3dc589948ca58473394b8373151d8bf3aa9f7791b74bb9",
            f"{_PA}:ActorPPOTrainer.training_step":
                "2ade5cf8894c07cc27adce23d61f517d252e79f706a2d1472e152dded60130f1",
            # CPU backend (openrlhf_cpu)
            "openrlhf.trainer.ppo_utils.replay_buffer:NaiveReplayBuffer.__init__":
                "7cad124520cf78705ea8b8178256a68d5097036914ece2a44fb7a97060fe5f7b",
            "openrlhf.utils.distributed_util:stateless_init_process_group":
                "0f4de7e6719a99226fee197e96b7aef206eeafd5ebf617bce825fca70ad54ea7",
            f"{_PA}:ActorPPOTrainer.broadcast_to_vllm":
                "82f48dd34edc7fc2046de5e3d418b9af8b9ddb428cdfd7419ca528bb100783f5",
            f"{_PA}:ActorPPOTrainer._init_vllm_sync_group":
                "6ad3bfaadc9fe3f708d6b8264fd1cc7f2351e7fe13e7e3c6c5d97e0548b9feca",
            f"{_WW}:WorkerWrap.update_weight":
                "11ab5bd0006d9e7ed3ab5f5f155d232406cf3657804faead3e83e9f1b874a34f",
            f"{_WW}:WorkerWrap.init_process_group":
                "7de4bb7cd9164f760f78e8ad99d12e452290acd1ab0392b600c36347b4677f12",
            "openrlhf.trainer.ray.vllm_engine:RolloutRayActor.update_weight":
                "f45884e1ca34de05723292b7458939120111cfaa56f7f4594ab2c069a44f1cca",
            "openrlhf.utils.utils:get_strategy":
                "be0c2a9f22b91fa67118fcde01f4c416c76343f0888626bea4c0963196312b60",
        },
        choices={
            "--algo.advantage.estimator": ("gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo",
                                           "flash_reinforce"),
            "--actor.policy_loss_type": ("ppo", "gspo"),
        },
    ),
}
SUPPORTED_OPENRLHF_VERSIONS: Tuple[str, ...] = tuple(RELEASES)


class UpstreamError(RuntimeError):
    """The installed OpenRLHF is not one the plugin was written for."""


class UnsupportedOpenRLHF(UpstreamError):
    """rank_grpo (or the CPU backend) was requested on an OpenRLHF release that is not in :data:`RELEASES`."""


class OpenRLHFChanged(UpstreamError):
    """An OpenRLHF function the plugin wraps is not the one it was written against."""


# ------------------------------------------------------------------------------------------------------ versions
def openrlhf_version() -> Optional[str]:
    """Installed OpenRLHF version (from the distribution metadata, without importing openrlhf), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openrlhf")
    except PackageNotFoundError:
        return getattr(sys.modules.get("openrlhf"), "__version__", None)


def version_supported(ver: Optional[str] = None) -> bool:
    return (openrlhf_version() if ver is None else ver) in RELEASES


def release(ver: Optional[str] = None) -> Optional[Release]:
    return RELEASES.get(openrlhf_version() if ver is None else ver)


def unsupported_message(what: str = "rank_grpo_plugin", ver: Optional[str] = None) -> str:
    ver = openrlhf_version() if ver is None else ver
    listed = ", ".join(SUPPORTED_OPENRLHF_VERSIONS)
    return (
        f"{what} needs OpenRLHF {listed} (or an OpenRLHF that ships the extension registry from rank_grpo_plugin's "
        f"patches/), but OpenRLHF {ver or '<not installed>'} is installed. Install a supported release "
        f"(pip install openrlhf=={SUPPORTED_OPENRLHF_VERSIONS[-1]}); the plugin refuses to guess at other "
        f"releases' internals."
    )


# -------------------------------------------------------------------------------------------------- fingerprints
def fingerprint(module, qualname: str) -> Optional[str]:
    """sha256 of the source text of ``qualname`` (``Class.method`` or ``function``) in ``module``'s file, or None
    when the file or the definition cannot be found."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    node: Any = ast.parse(source)
    for part in qualname.split("."):
        node = next((c for c in getattr(node, "body", []) if isinstance(
            c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and c.name == part), None)
        if node is None:
            return None
    segment = ast.get_source_segment(source, node)
    return None if segment is None else hashlib.sha256(segment.encode("utf-8")).hexdigest()


def verify(module, qualname: str) -> Optional[str]:
    """None when ``module.qualname`` is the function of a supported release, else what differs (one line)."""
    rel = release()
    if rel is None:
        return unsupported_message()
    key = f"{module.__name__}:{qualname}"
    expected = rel.sources.get(key)
    if expected is None:
        return f"{key} has no fingerprint for OpenRLHF {rel.version} in rank_grpo_plugin/openrlhf/upstream.py"
    got = fingerprint(module, qualname)
    if got is None:
        return f"{key} not found in {getattr(module, '__file__', module.__name__)}"
    if got != expected:
        return (f"{key} is not the OpenRLHF {rel.version} code (source sha256 {got[:16]}, expected "
                f"{expected[:16]})")
    return None


def require(module, qualname: str, error=OpenRLHFChanged, hint: str = ""):
    """``module.qualname`` (resolved) after :func:`verify`; raises ``error`` with the problem and ``hint``."""
    problem = verify(module, qualname)
    if problem is not None:
        cls = UnsupportedOpenRLHF if not version_supported() and error is OpenRLHFChanged else error
        raise cls(f"{problem}. Refusing to patch blindly{'; ' + hint if hint else ''}.")
    obj = module
    for part in qualname.split("."):
        obj = getattr(getattr(obj, "__ray_actual_class__", obj), part)  # Ray actor classes wrap the class
    return obj


# ------------------------------------------------------------------------------------------------------ registry
_REGISTRY_CACHE: Optional[bool] = None


def has_registry() -> bool:
    """True when the installed OpenRLHF ships the extension registry of ``patches/``.

    Decided from the file system (never by importing: this runs inside import hooks), once per process.
    """
    global _REGISTRY_CACHE
    if REGISTRY_MODULE in sys.modules:
        return True
    if _REGISTRY_CACHE is None:
        pkg = sys.modules.get("openrlhf")
        locations = list(getattr(pkg, "__path__", []) or [])
        if not locations:
            import importlib.machinery

            try:
                spec = importlib.machinery.PathFinder.find_spec("openrlhf")
            except (ImportError, ValueError):
                spec = None
            locations = list(spec.submodule_search_locations or []) if spec is not None else []
        _REGISTRY_CACHE = any(os.path.isfile(os.path.join(loc, "utils", "extensions.py")) for loc in locations)
    return _REGISTRY_CACHE


# ---------------------------------------------------------------------------------------------------------- args
_MISSING = object()


def arg(ns: Any, dotted: str, default: Any = None) -> Any:
    """``ns.a.b`` of OpenRLHF's args for ``dotted="a.b"``: hierarchical (after ``hierarchize``) or flat (the
    parser's own namespace, attribute ``"a.b"``). ``default`` when absent or None."""
    value = vars(ns).get(dotted, _MISSING) if hasattr(ns, "__dict__") else _MISSING
    if value is _MISSING:
        value = ns
        for part in dotted.split("."):
            value = getattr(value, part, _MISSING)
            if value is _MISSING:
                return default
    return default if value is None else value


def require_supported(what: str = "rank_grpo_plugin: --algo.advantage.estimator/--actor.policy_loss_type rank_grpo"):
    """Raise :class:`UnsupportedOpenRLHF` unless the plugin can run on the installed OpenRLHF (a listed release, or
    one that ships the extension registry, whose contract does not depend on internals)."""
    if has_registry() or version_supported():
        return
    raise UnsupportedOpenRLHF(unsupported_message(what))
