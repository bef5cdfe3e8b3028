"""Lazy activation of Rank-GRPO inside OpenRLHF, in every process, with a version guard.

How it gets in
--------------
``pip install`` puts ``rank_grpo_plugin.pth`` into site-packages. Python runs it at start-up in *every*
interpreter (the driver, Ray workers for the PPOTrainer, policy/reference and vLLM rollout actors, DeepSpeed
launcher children), and it calls :func:`install_import_hook`, which only adds a ``sys.meta_path`` finder. When
one of the OpenRLHF modules in :data:`_MODULE_HOOKS` is later imported, the finder lets the normal loader run
and then applies the matching patch to the freshly executed module. Nothing is imported eagerly, every step is
idempotent, and ``RANK_GRPO_PLUGIN_DISABLE=1`` turns the whole thing off.

What it patches (OpenRLHF 0.11.2; each patch names the function it wraps and checks that function's source)
---------------------------------------------------------------------------------------------------------
* ``argparse.ArgumentParser.parse_known_args`` (stdlib; acts only on OpenRLHF's ``train_ppo_ray`` parser,
  recognised by its ``--algo.advantage.estimator`` / ``--actor.policy_loss_type`` actions and their exact
  0.11.2 ``choices``): adds ``rank_grpo`` and the ``--rank_grpo.*`` flags, validates (:mod:`.cli`).
* ``openrlhf.trainer.ppo_utils.experience_maker.RemoteExperienceMaker.compute_advantages_and_returns``:
  dispatches to :func:`.estimator.compute_rank_grpo_advantages` when the estimator is ``rank_grpo``.
* ``openrlhf.trainer.ray.ppo_actor.ActorPPOTrainer.__init__``: swaps ``self.actor_loss_fn`` for
  :class:`.policy_loss.RankGRPOPolicyLoss` when ``--actor.policy_loss_type rank_grpo``.
* ``openrlhf.trainer.ray.ppo_actor.ActorPPOTrainer.training_step``: hands the current ``Experience`` to that
  loss (it derives rank ids from the experience's tokens).

Each wrapped OpenRLHF function is fingerprinted from OpenRLHF's *source file* (sha256 of the function's source
text, see :data:`EXPECTED_SOURCES`); runtime wrappers installed by others do not disturb the check. A mismatch
never touches runs that do not ask for rank_grpo; when rank_grpo *is* requested, the wrapper raises
:class:`OpenRLHFChanged` naming the function.

When OpenRLHF already ships the extension registry of ``patches/`` (``openrlhf.utils.extensions``), no
OpenRLHF function is patched at all: the plugin registers its estimator, loss and CLI extension there instead.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Callable, Dict, Optional

from ._startup import DISABLE_ENV, disabled

# ---------------------------------------------------------------------------------------------------------------
# The one place that declares which OpenRLHF releases the runtime patches were written against.
SUPPORTED_OPENRLHF_VERSIONS = ("0.11.2",)
# ---------------------------------------------------------------------------------------------------------------

CPU_ENV = "RANK_GRPO_PLUGIN_CPU"
ESTIMATOR = "rank_grpo"
POLICY_LOSS = "rank_grpo"
REGISTRY_MODULE = "openrlhf.utils.extensions"

# sha256 of ``ast.get_source_segment`` of each wrapped function in OpenRLHF 0.11.2's source files.
EXPECTED_SOURCES: Dict[str, str] = {
    "openrlhf.trainer.ppo_utils.experience_maker:RemoteExperienceMaker.compute_advantages_and_returns": (
        "edee114b74af1e792960f911d528043b286ff660ba28df78073a7300d1385c25"
    ),
    "openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer.__init__": (
        "7a01d56d774f90820f3dc589948ca58473394b8373151d8bf3aa9f7791b74bb9"
    ),
    "openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer.training_step": (
        "2ade5cf8894c07cc27adce23d61f517d252e79f706a2d1472e152dded60130f1"
    ),
}


class UnsupportedOpenRLHF(RuntimeError):
    """rank_grpo was requested on an OpenRLHF release the plugin was not written for."""


class OpenRLHFChanged(RuntimeError):
    """An OpenRLHF function the plugin wraps is not the one it was written against."""


# ------------------------------------------------------------------------------------------------ version guard
def openrlhf_version() -> Optional[str]:
    """Installed OpenRLHF version (from the distribution metadata, without importing openrlhf), or None."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version("openrlhf")
    except PackageNotFoundError:
        mod = sys.modules.get("openrlhf")
        return getattr(mod, "__version__", None)


def version_supported(ver: Optional[str] = None) -> bool:
    ver = openrlhf_version() if ver is None else ver
    return ver in SUPPORTED_OPENRLHF_VERSIONS


def unsupported_message(ver: Optional[str] = None) -> str:
    ver = openrlhf_version() if ver is None else ver
    return (
        f"rank_grpo_plugin: --algo.advantage.estimator/--actor.policy_loss_type rank_grpo needs OpenRLHF "
        f"{' or '.join(SUPPORTED_OPENRLHF_VERSIONS)} (or an OpenRLHF that ships the extension registry from "
        f"rank_grpo_plugin's patches/), but OpenRLHF {ver or '<not installed>'} is installed. Install a "
        f"supported OpenRLHF (pip install openrlhf=={SUPPORTED_OPENRLHF_VERSIONS[-1]}) or run without rank_grpo; "
        f"the plugin refuses to guess at other releases' internals."
    )


def require_supported() -> None:
    """Raise :class:`UnsupportedOpenRLHF` unless rank_grpo can run on the installed OpenRLHF."""
    if has_registry() or version_supported():
        return
    raise UnsupportedOpenRLHF(unsupported_message())


_REGISTRY_CACHE: Optional[bool] = None


def has_registry() -> bool:
    """True when the installed OpenRLHF ships the extension registry proposed in ``patches/``.

    Decided from the file system (never by importing: this runs inside the import hook), once per process.
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


# ------------------------------------------------------------------------------------------ source fingerprints
def source_fingerprint(module, qualname: str) -> Optional[str]:
    """sha256 of the source text of ``qualname`` (``Class.method`` or ``function``) in ``module``'s file.

    Read from the file (not from the live attribute), so wrappers installed at runtime do not change it.
    Returns None when the source or the definition cannot be found.
    """
    import ast
    import hashlib
    import inspect

    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    tree = ast.parse(source)
    node: ast.AST = tree
    for part in qualname.split("."):
        found = None
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and child.name == part:
                found = child
                break
        if found is None:
            return None
        node = found
    segment = ast.get_source_segment(source, node)
    if segment is None:
        return None
    return hashlib.sha256(segment.encode("utf-8")).hexdigest()


_PATCH_STATUS: Dict[str, str] = {}  # "module:qualname" -> "patched" | "changed: ..." | "skipped: ..."
_LOCK = threading.RLock()


def patch_status() -> Dict[str, str]:
    """What the plugin did to each OpenRLHF function in this process (for tests and bug reports)."""
    return dict(_PATCH_STATUS)


def _check_source(module, qualname: str) -> Optional[str]:
    """None when ``module.qualname`` is the expected 0.11.2 function, else a description of the difference."""
    key = f"{module.__name__}:{qualname}"
    expected = EXPECTED_SOURCES.get(key)
    got = source_fingerprint(module, qualname)
    if got is None:
        return f"{key} not found in {getattr(module, '__file__', module.__name__)}"
    if got != expected:
        return f"{key} source sha256 {got[:12]} differs from the expected {expected[:12]} (OpenRLHF 0.11.2)"
    return None


def _wrap_method(module, cls_name: str, method: str, make_wrapper: Callable[[Callable, Optional[str]], Callable]):
    """Replace ``module.cls_name.method`` with ``make_wrapper(original, problem)``, once.

    ``problem`` is None when the fingerprint matches and a text otherwise; wrappers must then behave exactly
    like the original unless rank_grpo is requested, and raise :class:`OpenRLHFChanged` if it is.
    """
    key = f"{module.__name__}:{cls_name}.{method}"
    with _LOCK:
        cls = getattr(module, cls_name, None)
        if cls is None:
            _PATCH_STATUS[key] = f"changed: class {cls_name} missing"
            return
        original = cls.__dict__.get(method)
        if original is None:
            _PATCH_STATUS[key] = f"changed: {cls_name}.{method} missing"
            return
        if getattr(original, "_rank_grpo_patch", False):
            return  # idempotent
        problem = None if version_supported() else f"OpenRLHF {openrlhf_version()} is not supported"
        if problem is None:
            problem = _check_source(module, f"{cls_name}.{method}")
        import functools

        wrapper = make_wrapper(original, problem)
        functools.update_wrapper(wrapper, original)
        wrapper._rank_grpo_patch = True  # type: ignore[attr-defined]
        wrapper._rank_grpo_problem = problem  # type: ignore[attr-defined]
        setattr(cls, method, wrapper)
        _PATCH_STATUS[key] = "patched" if problem is None else f"changed: {problem}"


def changed_error(problem: str) -> OpenRLHFChanged:
    return OpenRLHFChanged(
        f"rank_grpo_plugin cannot run rank_grpo: {problem}. The plugin's runtime patches were written against "
        f"OpenRLHF {', '.join(SUPPORTED_OPENRLHF_VERSIONS)} and refuse to patch a function that changed. "
        f"Reinstall OpenRLHF {SUPPORTED_OPENRLHF_VERSIONS[-1]} or apply rank_grpo_plugin's patches/ upstream diff."
    )


# --------------------------------------------------------------------------------------------- module patches
def _estimator_name(args) -> Optional[str]:
    try:
        return args.algo.advantage.estimator
    except AttributeError:
        return None


def _loss_name(args) -> Optional[str]:
    try:
        return args.actor.policy_loss_type
    except AttributeError:
        return None


def _patch_experience_maker(module) -> None:
    def make(original, problem):
        def compute_advantages_and_returns(self, experiences):
            if _estimator_name(self.strategy.args) != ESTIMATOR:
                return original(self, experiences)
            if problem is not None:
                raise changed_error(problem)
            from .estimator import compute_rank_grpo_advantages

            return compute_rank_grpo_advantages(self, experiences)

        return compute_advantages_and_returns

    _wrap_method(module, "RemoteExperienceMaker", "compute_advantages_and_returns", make)


def _patch_ppo_actor(module) -> None:
    def make_init(original, problem):
        def __init__(self, strategy, *args, **kwargs):
            original(self, strategy, *args, **kwargs)
            if _loss_name(strategy.args) != POLICY_LOSS:
                return
            if problem is not None:
                raise changed_error(problem)
            from .policy_loss import RankGRPOPolicyLoss

            self.actor_loss_fn = RankGRPOPolicyLoss(strategy.args, tokenizer=self.tokenizer)

        return __init__

    def make_step(original, problem):
        def training_step(self, experience, *args, **kwargs):
            loss_fn = getattr(self, "actor_loss_fn", None)
            if not getattr(loss_fn, "needs_experience", False):
                return original(self, experience, *args, **kwargs)
            if problem is not None:
                raise changed_error(problem)
            with loss_fn.bind(experience):
                return original(self, experience, *args, **kwargs)

        return training_step

    _wrap_method(module, "ActorPPOTrainer", "__init__", make_init)
    _wrap_method(module, "ActorPPOTrainer", "training_step", make_step)


def _on_openrlhf(module) -> None:
    """First import of the ``openrlhf`` package: CPU backend (when needed) and the CLI parser hook."""
    _maybe_install_cpu_backend()
    from . import cli

    cli.install_argparse_hook()


def _on_registry(module) -> None:
    register_extensions(module)


_REGISTRY_HOOKS = {
    "openrlhf": _on_openrlhf,
    REGISTRY_MODULE: _on_registry,
}
_PATCH_HOOKS = {
    "openrlhf": _on_openrlhf,
    "openrlhf.trainer.ppo_utils.experience_maker": _patch_experience_maker,
    "openrlhf.trainer.ray.ppo_actor": _patch_ppo_actor,
}


def _hooks() -> Dict[str, Callable]:
    return _REGISTRY_HOOKS if has_registry() else _PATCH_HOOKS


def _maybe_install_cpu_backend() -> None:
    """Call ``rank_grpo_plugin.openrlhf.cpu.install()`` on machines without CUDA (or with RANK_GRPO_PLUGIN_CPU=1)."""
    flag = os.environ.get(CPU_ENV, "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return
    import importlib
    import importlib.util

    if importlib.util.find_spec(__package__ + ".cpu") is None:
        return
    if flag not in ("1", "true", "yes", "on"):
        import torch

        if torch.cuda.is_available():
            return
    importlib.import_module(__package__ + ".cpu").install()


# ------------------------------------------------------------------------------------------ registry (patches/)
_REGISTERED = False


def register_extensions(extensions=None) -> None:
    """Register the estimator, the policy loss and the CLI extension in OpenRLHF's extension registry.

    Used when OpenRLHF ships ``openrlhf.utils.extensions`` (see ``patches/``); also the ``openrlhf.plugins``
    entry point. Idempotent.
    """
    global _REGISTERED
    if disabled():  # RANK_GRPO_PLUGIN_DISABLE=1 also opts out of the entry-point registration
        return
    with _LOCK:
        if _REGISTERED:
            return
        if extensions is None:
            import importlib

            extensions = importlib.import_module(REGISTRY_MODULE)
        ext = extensions
        from . import cli
        from .estimator import compute_rank_grpo_advantages
        from .policy_loss import RankGRPOPolicyLoss

        if ESTIMATOR not in ext.ADVANTAGE_ESTIMATORS:
            ext.ADVANTAGE_ESTIMATORS.register(ESTIMATOR, compute_rank_grpo_advantages)
        if POLICY_LOSS not in ext.POLICY_LOSSES:
            ext.POLICY_LOSSES.register(POLICY_LOSS, RankGRPOPolicyLoss)
        if cli.CLI_EXTENSION not in ext.CLI_EXTENSIONS:
            ext.CLI_EXTENSIONS.append(cli.CLI_EXTENSION)
        _REGISTERED = True
        _PATCH_STATUS[REGISTRY_MODULE] = "registered"


# ------------------------------------------------------------------------------------------------ import hook
def hook_for(fullname: str) -> Optional[Callable]:
    """The hook to run after ``fullname`` is executed (None for modules the plugin does not touch)."""
    if disabled():
        return None
    return _hooks().get(fullname)


def install_import_hook() -> None:
    """Install the finder (once) and patch any hooked module that is already imported. Cheap; no imports."""
    from . import _startup

    if disabled():
        return
    _startup.install_finder()
    if any(name == "openrlhf" or name.startswith("openrlhf.") for name in list(sys.modules)):
        activate_loaded()


def activate_loaded() -> None:
    """Apply the hooks to OpenRLHF modules that are already in ``sys.modules`` (idempotent)."""
    if disabled():
        return
    for name, hook in _hooks().items():
        module = sys.modules.get(name)
        if module is not None:
            hook(module)


def is_active() -> bool:
    """True when the plugin's hook is installed in this process and not disabled."""
    return (not disabled()) and any(getattr(f, "_rank_grpo_finder", False) for f in sys.meta_path)


def activation_report() -> dict:
    """A picklable summary of the plugin's state in this process (used by tests inside Ray actors)."""
    return {
        "active": is_active(),
        "disabled": disabled(),
        "openrlhf_version": openrlhf_version(),
        "registry": has_registry(),
        "patches": patch_status(),
        "pid": os.getpid(),
    }


__all__ = [
    "SUPPORTED_OPENRLHF_VERSIONS",
    "DISABLE_ENV",
    "CPU_ENV",
    "UnsupportedOpenRLHF",
    "OpenRLHFChanged",
    "install_import_hook",
    "activate_loaded",
    "activation_report",
    "is_active",
    "patch_status",
    "register_extensions",
    "require_supported",
    "version_supported",
    "source_fingerprint",
]
