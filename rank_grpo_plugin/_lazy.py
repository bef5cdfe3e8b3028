"""Lazy re-exports for package ``__init__`` modules (PEP 562): a name is imported from its submodule on first use,
so importing a package stays cheap (no torch, no OpenRLHF)."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, MutableMapping


def lazy_getattr(package: str, exports: Dict[str, str], namespace: MutableMapping[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``exports`` (name -> relative submodule) for ``package``; a resolved
    value is stored in ``namespace`` (the package's globals), so each name is looked up once."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
