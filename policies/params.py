"""The base of every policy's parameter model: strict, frozen, explicit errors.

Each policy class declares ``Params`` (a subclass of ``PolicyParams``) with its
defaults; the config loader validates a YAML ``params:`` mapping against it and
the class builds itself with ``from_params``. An unknown key is refused with the
list of accepted keys, so a typo in a config file is caught before start-up.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class PolicyParams(BaseModel):
    """Strict, immutable parameter model (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # pydantic's own extra="forbid" message does not say what *is* accepted;
        # this one does, which is what a user editing YAML needs.
        if isinstance(data, dict):
            accepted = set(cls.model_fields)
            unknown = sorted(str(k) for k in data if k not in accepted)
            if unknown:
                keys = ", ".join(sorted(accepted)) or "(none)"
                raise ValueError(f"unknown key {unknown[0]!r}; accepted keys: {keys}")
        return data
