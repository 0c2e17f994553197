"""The policy sections of the Cascade YAML, validated with pydantic v2.

::

    router:                      # or a named profile: ``router: cascade``
      filters: [{type: kv_headroom, params: {max_kv_usage: 0.95}}]
      scorers:
        - {type: uncertainty, weight: 1.0, params: {objective: slo_probability}}
        - {type: prefix_cache, weight: 0.3}
      picker: max_score          # or {type: max_score}
    admission: {type: slo_feasible, params: {min_probability: 0.5}}
    backpressure: {type: uncertainty, params: {sigma_high_s: 0.02, sigma_low_s: 0.015}}
    slos: {default: {ttft_s: 2.0, tpot_s: 0.1}}   # optional; fills SLO-aware policies

Every component entry is a discriminated union on ``type`` generated from the
registries (``policies.registry``): each member has ``type`` (a literal),
``params`` (the class's own ``Params`` model, defaults filled in) and, for
scorers, ``weight`` (finite, >= 0; default 1). A bare string is shorthand for
``{type: <string>}``. Unknown keys are refused everywhere.

``load_policy_config`` turns any validation failure into one ``ValueError``
whose message names the key path and, for an unknown type or key, the accepted
values, e.g. ``router.scorers[1].weight: must be >= 0 (got -1)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

# The built-in policies register themselves on import; the schema is generated
# from the registries, so these imports must come first.
import policies.admission
import policies.backpressure
import policies.filters
import policies.pickers
import policies.scorers  # noqa: F401
from policies.params import PolicyParams
from policies.profiles import PROFILES
from policies.registry import ADMISSIONS, BACKPRESSURES, FILTERS, PICKERS, SCORERS, Registry
from policies.slo import SloClass, slo_table

_SECTIONS = ("router", "admission", "backpressure", "slos")


class ComponentSpec(PolicyParams):
    """Static shape of one ``{type, params}`` entry (what mypy sees)."""

    type: str
    params: PolicyParams = Field(default_factory=PolicyParams)


class WeightedSpec(ComponentSpec):
    """Static shape of a scorer entry."""

    weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)


def _default_spec(name: str) -> Any:
    return {"type": name}


def _shorthand(v: Any) -> Any:
    return {"type": v} if isinstance(v, str) else v


def _tag(v: Any) -> str | None:
    if isinstance(v, dict):
        t = v.get("type")
        return t if isinstance(t, str) else None
    t = getattr(v, "type", None)
    return t if isinstance(t, str) else None


def _union(registry: Registry[Any], weighted: bool) -> Any:
    """``Annotated[Union[spec per registered type], Discriminator('type')]``."""
    base = WeightedSpec if weighted else ComponentSpec
    members = []
    for name, cls in registry.items():
        params_model = cls.Params
        model = create_model(
            f"{registry.kind.title()}Spec_{name}",
            __base__=base,
            type=(cast(Any, Literal)[name], ...),
            params=(params_model, Field(default_factory=params_model)),
        )
        members.append(Annotated[model, Tag(name)])
    accepted = ", ".join(registry.names())
    return Annotated[
        Union[tuple(members)],  # noqa: UP007 (a runtime-built union)
        Discriminator(
            _tag,
            custom_error_type="unknown_type",
            custom_error_message=f"unknown {registry.kind} type; accepted: {accepted}",
            custom_error_context={"kind": registry.kind, "accepted": accepted},
        ),
        BeforeValidator(_shorthand),
    ]


if TYPE_CHECKING:
    FilterSpec = ComponentSpec
    ScorerSpec = WeightedSpec
    PickerSpec = ComponentSpec
    AdmissionSpec = ComponentSpec
    BackpressureSpec = ComponentSpec
else:
    FilterSpec = _union(FILTERS, weighted=False)
    ScorerSpec = _union(SCORERS, weighted=True)
    PickerSpec = _union(PICKERS, weighted=False)
    AdmissionSpec = _union(ADMISSIONS, weighted=False)
    BackpressureSpec = _union(BACKPRESSURES, weighted=False)


class RouterConfig(PolicyParams):
    """``router:`` section: filters, weighted scorers, a picker; or a profile name."""

    filters: list[FilterSpec] = Field(default_factory=list)
    scorers: list[ScorerSpec] = Field(default_factory=list)
    picker: PickerSpec = Field(
        default_factory=lambda: _default_spec("max_score"), validate_default=True
    )
    profile: str | None = None  # a named profile to start from (see policies.PROFILES)

    @model_validator(mode="before")
    @classmethod
    def _named_profile(cls, data: Any) -> Any:
        # ``router: pow2`` is the profile; ``router: {profile: cascade, picker: ...}``
        # is the profile with the given keys replaced.
        name = data if isinstance(data, str) else None
        if isinstance(data, dict) and isinstance(data.get("profile"), str):
            name = data["profile"]
        if name is None:
            return data
        if name not in PROFILES:
            raise ValueError(
                f"unknown router profile {name!r}; accepted: {', '.join(sorted(PROFILES))}"
            )
        overrides = data if isinstance(data, dict) else {}
        return {**PROFILES[name], **overrides, "profile": name}


class PolicyConfig(PolicyParams):
    """The policy sections of one Cascade YAML file (all optional).

    ``slos``, when given, is the SLO table for every SLO-aware policy whose own
    ``params.slos`` was not set explicitly.
    """

    router: RouterConfig = Field(default_factory=RouterConfig)
    admission: AdmissionSpec = Field(
        default_factory=lambda: _default_spec("always"), validate_default=True
    )
    backpressure: BackpressureSpec = Field(
        default_factory=lambda: _default_spec("none"), validate_default=True
    )
    slos: dict[str, SloClass] | None = None

    @field_validator("slos", mode="after")
    @classmethod
    def _named_slos(cls, v: dict[str, SloClass] | None) -> dict[str, SloClass] | None:
        # a policy file names classes by key: {interactive: {ttft_s: .., tpot_s: ..}}
        return None if v is None else slo_table(v)

    @field_validator("router", mode="before")
    @classmethod
    def _router_default(cls, v: Any) -> Any:
        return {} if v is None else v


def load_policy_config(
    source: str | Path | Mapping[str, Any] | PolicyConfig, *, whole_file: bool = False
) -> PolicyConfig:
    """Validate a policy config from a YAML path or a mapping.

    ``whole_file=True`` reads only the policy sections (router, admission,
    backpressure, slos) of a full Cascade YAML and ignores the others (which the
    deployment schema validates). Raises ``ValueError`` (message: ``path: reason``
    per error, ``;``-separated) or ``FileNotFoundError``.
    """
    if isinstance(source, PolicyConfig):
        return source
    if isinstance(source, str | Path):
        import yaml  # only for files: the decision code itself never parses YAML

        text = Path(source).read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: not valid YAML: {exc}") from None
        where = f"{source}: "
    else:
        data = dict(source)
        where = ""
    if not isinstance(data, dict):
        raise ValueError(f"{where}expected a mapping at the top level, got {type(data).__name__}")
    if whole_file:
        data = {k: v for k, v in data.items() if k in _SECTIONS}
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(where + format_errors(exc, data)) from None


def validate_section(model: type[PolicyParams], data: Any, prefix: str) -> Any:
    """Validate one section (e.g. a ``RouterConfig`` from a dict or a profile
    name) with the same error messages, paths starting at ``prefix``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(format_errors(exc, {prefix: data}, prefix=(prefix,))) from None


# ---- error messages -----------------------------------------------------------
def _path(loc: tuple[int | str, ...], data: Any) -> str:
    """Key path as a user wrote it: ``router.scorers[1].weight``. Walks the
    input alongside ``loc`` to drop the union tags pydantic inserts."""
    out = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and -len(node) <= part < len(node) else None
            continue
        if isinstance(node, dict) and part in node:
            out += f".{part}" if out else part
            node = node[part]
        elif (isinstance(node, dict) and node.get("type") == part) or node == part:
            continue  # discriminated-union tag (or a shorthand string), not a key
        else:
            out += f".{part}" if out else part
            node = None
    return out or "(top level)"


def _message(err: Mapping[str, Any]) -> tuple[str, str]:
    """(path suffix, message) for one pydantic error."""
    t = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if t == "unknown_type":
        given = got.get("type") if isinstance(got, dict) else got
        kind = ctx.get("kind", "policy")
        if given is None:
            return ".type", f"missing; accepted {kind} types: {ctx.get('accepted')}"
        return ".type", f"unknown {kind} type {given!r}; accepted: {ctx.get('accepted')}"
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if t in bounds:
        op, key = bounds[t]
        return "", f"must be {op} {ctx.get(key)} (got {got!r})"
    if t == "extra_forbidden":
        return "", "unknown key"
    if t == "missing":
        return "", "required"
    if t == "finite_number":
        return "", f"must be a finite number (got {got!r})"
    msg = str(err.get("msg", t))
    return "", msg.removeprefix("Value error, ")


def format_errors(exc: ValidationError, data: Any, prefix: tuple[str, ...] = ()) -> str:
    parts = []
    for err in exc.errors():
        suffix, msg = _message(err)
        parts.append(f"{_path((*prefix, *err['loc']), data)}{suffix}: {msg}")
    return "; ".join(parts)
