"""Named registries for every pluggable axis (encoders, fusions, tasks).

Register by name, refuse duplicates, list names for help text and tests, and accept a
ready object wherever a name is accepted (the pattern of torchvision's `models/_api.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from mmcli.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    description: str
    tags: tuple[str, ...] = ()


class Registry(Generic[T]):
    """A name -> factory table for one kind of component."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "", tags: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name", "what it does")`."""

        def add(factory: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            doc = description or (getattr(factory, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, factory, doc, tuple(tags))
            return factory

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown {self.kind} '{name}' (known: {known})")
        return self._entries[name].factory

    def entry(self, name: str) -> Entry[T]:
        self.get(name)
        return self._entries[name]

    def names(self, tag: str | None = None) -> list[str]:
        return sorted(n for n, e in self._entries.items() if tag is None or tag in e.tags)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def build(self, spec: Any, *args: Any, **kwargs: Any) -> Any:
        """Build from a name, or return `spec` itself when it is a ready object."""
        if isinstance(spec, str):
            factory: Any = self.get(spec)
            return factory(*args, **kwargs)
        return spec
