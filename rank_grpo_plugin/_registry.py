"""A tiny name -> function registry whose lookups list the valid names on error.

Modelled on verl's ``core_algos`` registries: one pure function per algorithm, registered under a stable
name, so that adapters (CLI flags, config files) can select an algorithm by string and a typo fails loudly.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, Optional, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Maps names to callables. ``what`` names the kind of thing for error messages ("reward scheme")."""

    def __init__(self, what: str):
        self.what = what
        self._items: Dict[str, F] = {}

    def register(self, name: str, fn: Optional[F] = None):
        """``REGISTRY.register("name", fn)``, or as a decorator ``@REGISTRY.register("name")``. Registering a name
        twice is an error."""
        if fn is not None:
            return self.register(name)(fn)

        def deco(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._items[name] = fn
            return fn

        return deco

    def get(self, name: str) -> F:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.what} {name!r}; valid names: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
