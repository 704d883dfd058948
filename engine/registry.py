"""A name -> object registry that refuses duplicates and names the valid choices.

    HEADS = Registry("head")

    @HEADS.register("cosine")
    class CosineHead: ...

    HEADS.get("cosine"), HEADS.names()   # -> CosineHead, ["cosine"]

Heads, losses, screening signals, screening extras and bench stages each keep one; those whose names a
user types pass `error=UserError`, so a bad name becomes one line at the CLI. A leaf module:
it imports nothing of the project, so every package may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered under unique names, kept in registration order.

    Args:
        kind: what the names are of ("head", "loss", ...), used in error messages.
        error: exception raised for an unknown name (a `UserError` where users type names).
    """

    def __init__(self, kind: str, error: type[Exception] = LookupError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name` (a second one is refused:
        two modules silently overwriting each other's entry is the bug this prevents)."""

        def wrap(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return wrap

    def get(self, name: str) -> T:
        """The object registered as `name`; `self.error` naming the valid names otherwise."""
        if name not in self._items:
            raise self.error(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        """Names in registration order, as iterating a dict gives them."""
        return iter(list(self._items))

    def names(self) -> list[str]:
        """Registered names, sorted (what a CLI offers as choices)."""
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, object) pairs in registration order (the order signals are combined in)."""
        return iter(list(self._items.items()))
