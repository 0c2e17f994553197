"""Routing, admission and backpressure policies, chosen by config (pure: no Ray).

What the Ray Serve adapter, the ingress, the controller and the simulator call
(keep these names; docs/policies.md has the long form):

Views
    ``build_view(snapshots, outstanding, now_s, *, priors=None) -> ReplicaView``
        Struct of arrays over candidate replicas (frozen, read-only arrays) with
        router-local in-flight counts and an ``uncertainty.ReplicaLoad`` (``view.load``).
        ``view.with_outstanding(mapping)`` refreshes the in-flight counts cheaply;
        ``view.take(indices)`` / ``view.pool_indices(pool)`` select replicas;
        ``view.find(replica_id)`` / ``view.index_of(replica_id)`` locate one.
        ``ReplicaPrior``: documented defaults for metrics a fresh replica lacks.

Routing
    ``Router.rank(request, view, rng) -> list[int]``: view indices, best first;
        filtered-out replicas absent; [] if none is left.
    ``Router.on_routed(replica_id, request)`` / ``Router.on_completed(replica_id, request)``
    ``Router.set_cascade_model(model)`` / ``Router.set_slos(slos)``
    ``build_router(name | mapping | RouterConfig, *, cascade_model=None, slos=None) -> Router``
        Names (``PROFILES``): round_robin, random, pow2, least_outstanding,
        kv_usage, queue_depth, prefix_cache, dynamo_cost, uncertainty, cascade.
    Extension points: ``Filter.keep``, ``Scorer.score`` (values in [0, 1]),
        ``Picker.order``; registries ``FILTERS``, ``SCORERS``, ``PICKERS``.
    Cross-pool: ``PoolSplitter.choose_pool(slo_class, weights, rng, available=None) -> str``
        (``orchestrator.gateway.Gateway`` runs the whole decision).

Admission and backpressure
    ``Admission.decide(request, view, now_s, pressure=None) -> AdmissionDecision``
        ``AdmissionDecision(admit, reason, retry_after_s, defer, p_meet)``;
        types: always, queue_cap, token_budget, slo_feasible, expected_slo (``ADMISSIONS``).
    ``UncertaintyBackpressure.update(pool, now_s, itl_sigma_s, itl_sigma_growth=None,
        admitted_prefill_tokens_per_s=None) -> BackpressureState``
        ``BackpressureState(pool, time_s, saturation, prefill_token_budget,
        budget_fraction, sigma_eff_s, action)``; saturation ≥ 1 means hold (the
        gateway spills to another pool). Types: uncertainty, none (``BACKPRESSURES``).
        The ``token_budget`` admission enforces the budget (``TokenBucket``).

Config
    ``load_policy_config(path | mapping, *, whole_file=False) -> PolicyConfig``
        (``router``, ``admission``, ``backpressure``, ``slos``); ``ValueError``
        with the key path and accepted values on any error.
    ``build_policies(path | mapping | PolicyConfig) -> Policies`` (router,
        admission, backpressure).
    SLOs: ``SloClass`` (the one SLO type), ``SloConfig`` (classes + default,
        ``classify(prompt_tokens, requested)``).
"""

from policies.admission import (
    Admission,
    AdmissionDecision,
    AlwaysAdmit,
    QueueCapAdmission,
    SloFeasibleAdmission,
    TokenBudgetAdmission,
)
from policies.admission_outcome import ExpectedSloAdmission
from policies.backpressure import (
    Backpressure,
    BackpressureState,
    NoBackpressure,
    TokenBucket,
    UncertaintyBackpressure,
)
from policies.base import Filter, Picker, Scorer
from policies.build import (
    Policies,
    build_admission,
    build_backpressure,
    build_policies,
    build_router,
)
from policies.config import PolicyConfig, RouterConfig, load_policy_config
from policies.pools import PoolSplitter
from policies.profiles import BASELINES, PROFILES
from policies.registry import ADMISSIONS, BACKPRESSURES, FILTERS, PICKERS, SCORERS, Registry
from policies.router import Router
from policies.slo import SloClass, SloConfig
from policies.view import ReplicaPrior, ReplicaView, build_view

__all__ = [
    "ADMISSIONS",
    "BACKPRESSURES",
    "BASELINES",
    "FILTERS",
    "PICKERS",
    "PROFILES",
    "SCORERS",
    "Admission",
    "AdmissionDecision",
    "AlwaysAdmit",
    "Backpressure",
    "BackpressureState",
    "ExpectedSloAdmission",
    "Filter",
    "NoBackpressure",
    "Picker",
    "Policies",
    "PolicyConfig",
    "PoolSplitter",
    "QueueCapAdmission",
    "Registry",
    "ReplicaPrior",
    "ReplicaView",
    "Router",
    "RouterConfig",
    "Scorer",
    "SloClass",
    "SloConfig",
    "SloFeasibleAdmission",
    "TokenBucket",
    "TokenBudgetAdmission",
    "UncertaintyBackpressure",
    "build_admission",
    "build_backpressure",
    "build_policies",
    "build_router",
    "build_view",
    "load_policy_config",
]
