"""Registries: config ``type`` name → policy class, one registry per extension point.

A policy class registers itself with a decorator::

    @SCORERS.register("kv_usage")
    class KvUsageScorer(Scorer): ...

and the config schema (``policies.config``) is generated from the registries, so a
name is accepted in a YAML file exactly when a class is registered under it.
Register before importing ``policies.config`` (the built-in policies are imported
by ``policies/__init__``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from policies.params import PolicyParams


class Buildable(Protocol):
    """What a registered class provides: its parameter model and a builder."""

    Params: type[PolicyParams]

    @classmethod
    def from_params(cls, params: Any) -> Any: ...


T = TypeVar("T")


class Registry(Generic[T]):
    """Name → class for one extension point (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator; raises ``ValueError`` if ``name`` is already taken."""

        def deco(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} type {name!r} is already registered")
            if not hasattr(cls, "Params") or not hasattr(cls, "from_params"):
                raise TypeError(f"{cls.__name__} needs a Params model and from_params()")
            self._classes[name] = cls
            cls.type_name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def get(self, name: str) -> type[T]:
        """The class for ``name``; ``ValueError`` listing accepted names otherwise."""
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} type {name!r}; accepted: {', '.join(self.names())}"
            ) from None

    def params_model(self, name: str) -> type[PolicyParams]:
        model: type[PolicyParams] = self.get(name).Params  # type: ignore[attr-defined]
        return model

    def build(self, name: str, params: PolicyParams | dict[str, Any] | None = None) -> T:
        """Instantiate ``name`` from validated params (a dict is validated first)."""
        cls = self.get(name)
        model = self.params_model(name)
        if params is None:
            params = model()
        elif isinstance(params, dict):
            params = model.model_validate(params)
        obj: T = cls.from_params(params)  # type: ignore[attr-defined]
        return obj

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._classes))

    def items(self) -> tuple[tuple[str, type[T]], ...]:
        return tuple(sorted(self._classes.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._classes


if TYPE_CHECKING:
    from policies.admission import Admission
    from policies.backpressure import Backpressure
    from policies.base import Filter, Picker, Scorer

# One registry per extension point; the names are the config's ``type`` values.
FILTERS: Registry[Filter] = Registry("filter")
SCORERS: Registry[Scorer] = Registry("scorer")
PICKERS: Registry[Picker] = Registry("picker")
ADMISSIONS: Registry[Admission] = Registry("admission")
BACKPRESSURES: Registry[Backpressure] = Registry("backpressure")
