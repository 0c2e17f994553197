"""Build routers, admission and backpressure from config (or a profile name).

router = build_router("cascade")                       # named profile
router = build_router({"scorers": [{"type": "kv_usage"}]})
pol = build_policies(load_policy_config("examples/policies/cascade.yaml"))
decision = pol.admission.decide(request, pool_view, now_s)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.admission import Admission
from policies.backpressure import Backpressure
from policies.base import Filter, Picker, Scorer
from policies.config import (
    ComponentSpec,
    PolicyConfig,
    RouterConfig,
    load_policy_config,
    validate_section,
)
from policies.registry import ADMISSIONS, BACKPRESSURES, FILTERS, PICKERS, SCORERS
from policies.router import Router
from policies.slo import SloClass
from uncertainty import CascadeModel


def _wants_slos(spec: ComponentSpec) -> bool:
    """True when the component takes an SLO table and the file did not set its own."""
    return "slos" in type(spec.params).model_fields and "slos" not in spec.params.model_fields_set


def build_router(
    spec: str | Mapping[str, Any] | RouterConfig,
    *,
    cascade_model: CascadeModel | None = None,
    slos: Mapping[str, SloClass] | None = None,
) -> Router:
    """A ``Router`` from a profile name (``policies.PROFILES``), a ``router:``
    mapping or a validated ``RouterConfig``. ``slos`` fills SLO-aware scorers
    that have no ``slos`` of their own; ``cascade_model`` seeds the uncertainty
    scorers. Raises ``ValueError`` (with the key path) for an invalid spec."""
    cfg = spec if isinstance(spec, RouterConfig) else validate_section(RouterConfig, spec, "router")
    filters: list[Filter] = [FILTERS.build(f.type, f.params) for f in cfg.filters]
    scorers: list[tuple[Scorer, float]] = []
    for s in cfg.scorers:
        scorer = SCORERS.build(s.type, s.params)
        if slos is not None and _wants_slos(s):
            scorer.set_slos(dict(slos))  # type: ignore[attr-defined]
        scorers.append((scorer, s.weight))
    picker: Picker = PICKERS.build(cfg.picker.type, cfg.picker.params)
    name = cfg.profile or (spec if isinstance(spec, str) else "custom")
    router = Router(filters, scorers, picker, name=name)
    if cascade_model is not None:
        router.set_cascade_model(cascade_model)
    return router


def build_admission(
    spec: ComponentSpec, *, slos: Mapping[str, SloClass] | None = None
) -> Admission:
    adm = ADMISSIONS.build(spec.type, spec.params)
    if slos is not None and _wants_slos(spec):
        adm.set_slos(dict(slos))  # type: ignore[attr-defined]
    return adm


def build_backpressure(spec: ComponentSpec) -> Backpressure:
    return BACKPRESSURES.build(spec.type, spec.params)


@dataclass
class Policies:
    """The three policies of one deployment, built from a ``PolicyConfig``. The
    gateway (``orchestrator.gateway.Gateway``) applies them in order: backpressure
    hold (spill / defer), admission, router."""

    router: Router
    admission: Admission
    backpressure: Backpressure
    config: PolicyConfig

    def set_cascade_model(self, model: CascadeModel) -> None:
        self.router.set_cascade_model(model)
        setter = getattr(self.admission, "set_cascade_model", None)
        if setter is not None:
            setter(model)


def build_policies(
    source: str | Mapping[str, Any] | PolicyConfig, *, cascade_model: CascadeModel | None = None
) -> Policies:
    """Router, admission and backpressure from a YAML path, mapping or config."""
    cfg = load_policy_config(source)
    slos = cfg.slos
    policies = Policies(
        router=build_router(cfg.router, cascade_model=cascade_model, slos=slos),
        admission=build_admission(cfg.admission, slos=slos),
        backpressure=build_backpressure(cfg.backpressure),
        config=cfg,
    )
    if cascade_model is not None:
        policies.set_cascade_model(cascade_model)
    return policies
