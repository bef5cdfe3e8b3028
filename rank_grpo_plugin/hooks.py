"""Process-wide hooks, a public module: the Rank-GRPO adapter, the CPU backend (``openrlhf_cpu``, a separate package
that uses nothing else of ``rank_grpo_plugin``) and other hosts' adapters share them. Generic Python, no host
knowledge, standard library only.

* :func:`when_imported` -- the one import hook: run ``fn(module)`` right after ``name`` has executed (or now, if
  it already has). One ``sys.meta_path`` finder serves every caller; it reacts to nothing but the watched names.
* :func:`on_ray_init` -- the one ``ray.init`` wrapper: callers add a step that adjusts the call's arguments
  (``before``) and/or checks its result (``after``).
* :func:`on_parse_args` -- the one ``argparse.ArgumentParser.parse_known_args`` wrapper (``parse_args`` goes
  through it): callers add a step that sees each parser before it parses (``before``: add flags) and the namespace
  it returns (``after``: validate, remember).
* :func:`env_flag` -- the one parser of boolean environment variables.

Nothing here imports torch, OpenRLHF or Ray at import time.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
from typing import Callable, Dict, List, Optional

__all__ = ["parse_bool", "env_flag", "disabled", "when_imported", "finder_installed", "on_ray_init", "on_parse_args",
           "FINDER_MARK", "DISABLE_ENV"]

DISABLE_ENV = "RANK_GRPO_PLUGIN_DISABLE"  # opts out of everything: the adapter and the CPU backend

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_bool(text: str, what: str = "value") -> bool:
    """``True`` for 1/true/yes/on, ``False`` for 0/false/no/off (any case, surrounding blanks ignored); any other
    text is a ``ValueError`` naming ``what`` (a typo must not silently flip a switch)."""
    t = str(text).strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise ValueError(f"{what}: expected one of {'/'.join(_TRUE + _FALSE)}, got {text!r}")


def env_flag(name: str, default: Optional[bool] = None) -> Optional[bool]:
    """:func:`parse_bool` of environment variable ``name``; ``default`` when it is unset or empty."""
    text = os.environ.get(name, "").strip()
    return default if not text else parse_bool(text, f"environment variable {name}")


def disabled() -> bool:
    """``RANK_GRPO_PLUGIN_DISABLE`` is set to a true value (an unparsable value counts as set)."""
    try:
        return bool(env_flag(DISABLE_ENV, False))
    except ValueError:
        return True


# ------------------------------------------------------------------------------------------------ import hook
FINDER_MARK = "_rank_grpo_finder"
_LOCK = threading.RLock()
_HOOKS: Dict[str, List[Callable]] = {}


def _find_spec_elsewhere(me, fullname, path=None, target=None):
    """The spec the other ``sys.meta_path`` finders (all but ``me``) give for ``fullname``, or None."""
    for finder in sys.meta_path:
        if finder is me or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _HookedLoader:
    """Delegates to the real loader, then runs the hooks registered for the executed module."""

    def __init__(self, loader, name: str):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:  # introspection (get_source, resources) sees the original
            spec.loader = self._loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        _run(self._name, module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder:
    """``sys.meta_path`` finder: lets the normal finders locate a watched module, then wraps its loader."""

    def __init__(self):
        setattr(self, FINDER_MARK, True)
        self._local = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _HOOKS or getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            spec = _find_spec_elsewhere(self, fullname, path, target)
        finally:
            self._local.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


_FINDER = _Finder()


def _install_finder() -> None:
    if not any(getattr(f, FINDER_MARK, False) for f in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)


def _run(name: str, module) -> None:
    while True:  # a hook may register more hooks for the module being initialised: run those too
        with _LOCK:
            callbacks = _HOOKS.pop(name, [])
        if not callbacks:
            return
        for fn in callbacks:
            fn(module)


def when_imported(name: str, fn: Callable) -> None:
    """Call ``fn(module)`` once ``name`` has been imported: now if it already is, else right after its body ran.

    Each registration runs once per process. Cheap: registering imports nothing.
    """
    with _LOCK:
        module = sys.modules.get(name)
        if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
            _HOOKS.setdefault(name, []).append(fn)
            _install_finder()
            return
    fn(module)


def finder_installed() -> bool:
    return any(getattr(f, FINDER_MARK, False) for f in sys.meta_path)


# ----------------------------------------------------------------------------------------------- ray.init wrapper
_RAY_STEPS: List[tuple] = []  # (name, before(args, kwargs) -> (args, kwargs), after(result, args, kwargs))


def on_ray_init(name: str, before: Optional[Callable] = None, after: Optional[Callable] = None) -> None:
    """Add a step to the one ``ray.init`` wrapper (installed when Ray is imported). Steps run in the order they
    were added; adding the same ``name`` twice keeps the first."""
    with _LOCK:
        if any(step[0] == name for step in _RAY_STEPS):
            return
        _RAY_STEPS.append((name, before, after))
    when_imported("ray", _wrap_ray_init)


def _wrap_ray_init(ray) -> None:
    original = getattr(ray, "init", None)
    if original is None or getattr(original, "_rank_grpo_wrapper", False):
        return

    @functools.wraps(original)
    def init(*args, **kwargs):
        # Wraps ray.init: the registered steps adjust the arguments, then check the result.
        with _LOCK:
            steps = list(_RAY_STEPS)
        for _, before, _ in steps:
            if before is not None:
                args, kwargs = before(ray, args, kwargs)
        result = original(*args, **kwargs)
        for _, _, after in steps:
            if after is not None:
                after(ray, result, args, kwargs)
        return result

    init._rank_grpo_wrapper = True
    init.steps = lambda: [step[0] for step in _RAY_STEPS]
    ray.init = init


# ------------------------------------------------------------------------------------------------ argparse wrapper
_PARSE_STEPS: List[tuple] = []  # (name, before(parser, argv), after(parser, namespace, argv))


def on_parse_args(name: str, before: Optional[Callable] = None, after: Optional[Callable] = None) -> None:
    """Add a step to the one ``argparse.ArgumentParser.parse_known_args`` wrapper (installed by the first call).

    Every parser of the process passes through it, so a step first decides whether the parser is its concern (e.g.
    by the option strings it holds). ``before(parser, argv)`` runs before the parse, ``after(parser, namespace,
    argv)`` on its result; ``argv`` is the list being parsed (``sys.argv[1:]`` when none was given). A step that
    finds a problem calls ``parser.error`` (the launcher exits 2 with its usage line). Steps run in the order they
    were added; adding the same ``name`` twice keeps the first. A parse started from inside a step on the same parser
    runs unwrapped."""
    with _LOCK:
        if any(step[0] == name for step in _PARSE_STEPS):
            return
        _PARSE_STEPS.append((name, before, after))
        _wrap_parse_known_args()


def _wrap_parse_known_args() -> None:
    original = argparse.ArgumentParser.parse_known_args
    if getattr(original, "_rank_grpo_wrapper", False):
        return

    @functools.wraps(original)
    def parse_known_args(self, args=None, namespace=None):
        # Wraps argparse.ArgumentParser.parse_known_args: the registered steps around the stdlib parse.
        if getattr(self, "_rank_grpo_busy", False):
            return original(self, args, namespace)
        argv = list(sys.argv[1:] if args is None else args)
        with _LOCK:
            steps = list(_PARSE_STEPS)
        self._rank_grpo_busy = True
        try:
            for _, before, _ in steps:
                if before is not None:
                    before(self, argv)
            namespace, rest = original(self, args, namespace)
            for _, _, after in steps:
                if after is not None:
                    after(self, namespace, argv)
        finally:
            self._rank_grpo_busy = False
        return namespace, rest

    parse_known_args._rank_grpo_wrapper = True
    parse_known_args.steps = lambda: [step[0] for step in _PARSE_STEPS]
    argparse.ArgumentParser.parse_known_args = parse_known_args
