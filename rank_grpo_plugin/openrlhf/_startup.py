"""Interpreter-startup entry point, run by ``rank_grpo_plugin.pth`` in site-packages.

Kept tiny on purpose: it imports only ``os``/``sys``/``threading`` and installs a ``sys.meta_path`` finder that
reacts to nothing but a handful of OpenRLHF module names. The real work (:mod:`.activate`, then the patch
modules) is imported only when one of those modules is imported. No torch, no OpenRLHF, no file system scan.
Every failure at start-up is swallowed with a one-line warning so that a broken plugin never stops an unrelated
Python program from starting.

Opt out with ``RANK_GRPO_PLUGIN_DISABLE=1``.
"""
import os
import sys
import threading

DISABLE_ENV = "RANK_GRPO_PLUGIN_DISABLE"

# The only modules whose import wakes the plugin (see activate._PATCH_HOOKS / _REGISTRY_HOOKS).
WATCHED = frozenset(
    {
        "openrlhf",
        "openrlhf.utils.extensions",
        "openrlhf.trainer.ppo_utils.experience_maker",
        "openrlhf.trainer.ray.ppo_actor",
    }
)


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def find_spec_elsewhere(me, fullname, path=None, target=None):
    """The spec the other ``sys.meta_path`` finders (all but ``me``) give for ``fullname``, or None."""
    for finder in sys.meta_path:
        if finder is me or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _HookedLoader:
    """Delegates to the real loader, then runs the plugin's hook on the executed module."""

    def __init__(self, loader, hook):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:  # introspection (get_source, resources) sees the original
            spec.loader = self._loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        if not disabled():
            self._hook(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class OpenRLHFFinder:
    """``sys.meta_path`` finder: lets the normal finders locate a watched OpenRLHF module, then wraps its loader
    so the plugin's hook runs right after the module body executed."""

    _rank_grpo_finder = True

    def __init__(self):
        self._local = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in WATCHED or getattr(self._local, "busy", False) or disabled():
            return None
        self._local.busy = True
        try:
            from . import activate

            hook = activate.hook_for(fullname)
            if hook is None:
                return None
            spec = find_spec_elsewhere(self, fullname, path, target)
        finally:
            self._local.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader, hook)
        return spec


_INSTALL_LOCK = threading.Lock()


def install_finder() -> None:
    with _INSTALL_LOCK:
        if not any(getattr(f, "_rank_grpo_finder", False) for f in sys.meta_path):
            sys.meta_path.insert(0, OpenRLHFFinder())


def install() -> None:
    """Called by the .pth file: install the finder; if OpenRLHF is somehow already imported, activate now."""
    if disabled():
        return
    try:
        install_finder()
        if "openrlhf" in sys.modules:
            from . import activate

            activate.activate_loaded()
    except Exception as exc:  # never break interpreter startup
        sys.stderr.write(f"rank_grpo_plugin: startup hook not installed: {exc!r}\n")
