"""openrlhf_compat: which OpenRLHF releases the Rank-GRPO adapter (``rank_grpo_plugin.openrlhf``) and the CPU
backend (``openrlhf_cpu``) were written against, shared by both (neither imports the other).

* :mod:`.releases` -- the one table to edit when a release is added (:data:`RELEASES`);
* :func:`fingerprint` -- the one fingerprint style: sha256 of a definition's source text
  (``ast.get_source_segment``) read from the module's *file*, so wrappers installed at runtime (ours, Ray's actor
  classes) do not change it; :func:`fingerprint_source` the same on source text (a file read from a wheel,
  :mod:`.wheel`); :func:`verify` / :func:`require` the one check; :class:`UnsupportedOpenRLHF` /
  :class:`OpenRLHFChanged` the errors;
* :func:`arg` -- OpenRLHF's args, hierarchical or flat; :func:`has_registry` -- whether OpenRLHF ships the
  extension registry of ``patches/``;
* :mod:`.logs` -- the one parser of the launcher's log lines.

Standard library only; never imports OpenRLHF (it runs inside import hooks).
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import os
import sys
from typing import Any, Optional

from .releases import RELEASES, SUPPORTED_OPENRLHF_VERSIONS, Release

__all__ = [
    "RELEASES", "SUPPORTED_OPENRLHF_VERSIONS", "Release", "UpstreamError", "UnsupportedOpenRLHF",
    "OpenRLHFChanged", "openrlhf_version", "version_supported", "unsupported_message", "release",
    "fingerprint", "fingerprint_source", "policy_loss_outputs", "verify", "require", "choices_problem",
    "require_supported", "has_registry", "arg", "set_arg", "REGISTRY_MODULE",
]

REGISTRY_MODULE = "openrlhf.utils.extensions"  # the extension registry added by patches/0001-*
# what a refusal says was asked for, when a run names rank_grpo
RANK_GRPO_REQUEST = "rank_grpo_plugin: --algo.advantage.estimator/--actor.policy_loss_type rank_grpo"



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
    """The one refusal: names the installed release and lists every supported one."""
    ver = openrlhf_version() if ver is None else ver
    *older, newest = SUPPORTED_OPENRLHF_VERSIONS
    listed = f"{', '.join(older)} and {newest}" if older else newest
    return (
        f"{what} supports the OpenRLHF releases {listed} (or an OpenRLHF that ships the extension registry from "
        f"rank_grpo_plugin's patches/), but OpenRLHF {ver or '<not installed>'} is installed. Install a supported "
        f"release (e.g. pip install openrlhf=={newest}); the plugin refuses to guess at other releases' internals."
    )


# -------------------------------------------------------------------------------------------------- fingerprints
def fingerprint_source(source: str, qualname: str) -> Optional[str]:
    """sha256 of the source text of ``qualname`` (``Class.method`` or ``function``) in a module's ``source`` text
    (``ast.get_source_segment``), or None when the definition is not there. The one fingerprint style: used on an
    installed module's file (:func:`fingerprint`) and on a file read from a wheel (:mod:`.wheel`)."""
    node: Any = ast.parse(source)
    for part in qualname.split("."):
        node = next((c for c in getattr(node, "body", []) if isinstance(
            c, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and c.name == part), None)
        if node is None:
            return None
    segment = ast.get_source_segment(source, node)
    return None if segment is None else hashlib.sha256(segment.encode("utf-8")).hexdigest()


def fingerprint(module, qualname: str) -> Optional[str]:
    """:func:`fingerprint_source` of ``module``'s file, or None when the file or the definition cannot be found."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    return fingerprint_source(source, qualname)


def policy_loss_outputs(ver: Optional[str] = None) -> int:
    """How many values the installed release's ``ActorPPOTrainer.training_step`` unpacks from the policy loss
    (:attr:`Release.loss_outputs`: 4 up to 0.11.1, 5 from 0.11.2 on); the newest listed release's count when the
    installed OpenRLHF is not listed (it then ships the registry of ``patches/``, written against that release)."""
    rel = release(ver)
    return (rel or RELEASES[SUPPORTED_OPENRLHF_VERSIONS[-1]]).loss_outputs


def verify(module, qualname: str) -> Optional[str]:
    """None when ``module.qualname`` is the function of a supported release, else what differs (one line)."""
    rel = release()
    if rel is None:
        return unsupported_message()
    key = f"{module.__name__}:{qualname}"
    expected = rel.sources.get(key)
    if expected is None:
        return f"{key} has no fingerprint for OpenRLHF {rel.version} in openrlhf_compat/releases.py"
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


def choices_problem(choices_of, ours=(), what: str = RANK_GRPO_REQUEST) -> Optional[str]:
    """None when the launcher's ``choices`` (``choices_of(flag)``, without the names in ``ours``) are the ones the
    installed release declares in :data:`RELEASES`, else what differs (one message)."""
    rel = release()
    if rel is None:
        return unsupported_message(what)
    for flag, expected in rel.choices.items():
        got = [c for c in (choices_of(flag) or []) if c not in ours]
        if tuple(got) != tuple(expected):
            return (f"rank_grpo_plugin: OpenRLHF's train_ppo_ray parser changed ({flag} choices {got}; expected "
                    f"{list(expected)} as in OpenRLHF {rel.version}); refusing to patch it")
    return None


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


def set_arg(ns: Any, dotted: str, value: Any) -> None:
    """Set ``ns.a.b`` (hierarchical) or attribute ``"a.b"`` (flat, or a key the namespace does not have yet)."""
    if dotted in vars(ns):
        setattr(ns, dotted, value)
        return
    parts = dotted.split(".")
    node = ns
    for part in parts[:-1]:
        if not hasattr(node, part):
            setattr(ns, dotted, value)  # flat namespace without this key yet
            return
        node = getattr(node, part)
    setattr(node, parts[-1], value)


def require_supported(what: str = RANK_GRPO_REQUEST):
    """Raise :class:`UnsupportedOpenRLHF` unless the plugin can run on the installed OpenRLHF (a listed release, or
    one that ships the extension registry, whose contract does not depend on internals)."""
    if has_registry() or version_supported():
        return
    raise UnsupportedOpenRLHF(unsupported_message(what))
