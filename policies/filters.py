"""Filters: drop replicas that should not get this request.

Every filter is soft by default (``strict: false``): if it would drop all
remaining replicas, the router ignores it, so that an overloaded or degraded
pool still serves rather than fails. ``strict: true`` makes an empty result
final (``Router.rank`` returns []).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from policies.base import Filter
from policies.params import PolicyParams
from policies.registry import FILTERS
from policies.view import IntArray, ReplicaView
from replicas.telemetry import RequestInfo


class _FilterParams(PolicyParams):
    strict: bool = False


class KvHeadroomParams(_FilterParams):
    max_kv_usage: float = Field(default=0.95, ge=0.0, le=1.0)


@FILTERS.register("kv_headroom")
class KvHeadroomFilter(Filter):
    """Drop replicas whose KV cache is fuller than ``max_kv_usage`` (they would
    preempt running sequences to fit a new prompt).

    YAML::

        filters:
          - {type: kv_headroom, params: {max_kv_usage: 0.95, strict: false}}
    """

    Params = KvHeadroomParams

    def __init__(self, max_kv_usage: float = 0.95, strict: bool = False) -> None:
        self.max_kv_usage = max_kv_usage
        self.strict = strict

    @classmethod
    def from_params(cls, params: KvHeadroomParams) -> KvHeadroomFilter:
        return cls(params.max_kv_usage, params.strict)

    def keep(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> np.ndarray:
        return view.kv_usage[candidates] <= self.max_kv_usage


class QueueCapFilterParams(_FilterParams):
    max_waiting: int = Field(default=64, ge=0)


@FILTERS.register("queue_cap")
class QueueCapFilter(Filter):
    """Drop replicas with more than ``max_waiting`` queued requests (snapshot
    waiting plus requests this router sent that the snapshot has not seen).

    YAML::

        filters:
          - {type: queue_cap, params: {max_waiting: 64}}
    """

    Params = QueueCapFilterParams

    def __init__(self, max_waiting: int = 64, strict: bool = False) -> None:
        self.max_waiting = max_waiting
        self.strict = strict

    @classmethod
    def from_params(cls, params: QueueCapFilterParams) -> QueueCapFilter:
        return cls(params.max_waiting, params.strict)

    def keep(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> np.ndarray:
        return (view.waiting[candidates] + view.unseen[candidates]) <= self.max_waiting


class FreshParams(_FilterParams):
    max_age_s: float = Field(default=5.0, gt=0.0)


@FILTERS.register("fresh")
class FreshFilter(Filter):
    """Drop replicas whose latest snapshot is older than ``max_age_s`` seconds
    (snapshots come every ~0.25 s; a silent replica is likely gone or stuck).

    YAML::

        filters:
          - {type: fresh, params: {max_age_s: 5.0}}
    """

    Params = FreshParams

    def __init__(self, max_age_s: float = 5.0, strict: bool = False) -> None:
        self.max_age_s = max_age_s
        self.strict = strict

    @classmethod
    def from_params(cls, params: FreshParams) -> FreshFilter:
        return cls(params.max_age_s, params.strict)

    def keep(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> np.ndarray:
        return view.age_s[candidates] <= self.max_age_s


class PoolFilterParams(_FilterParams):
    pools: list[str] = Field(default_factory=list)
    accelerators: list[str] = Field(default_factory=list)
    strict: bool = True


@FILTERS.register("pool")
class PoolFilter(Filter):
    """Keep only replicas in the listed pools and/or of the listed accelerator
    types (an empty list does not restrict). Strict by default: a pinned
    deployment must not silently spill to other hardware.

    YAML::

        filters:
          - {type: pool, params: {pools: [h100], accelerators: []}}
    """

    Params = PoolFilterParams

    def __init__(
        self,
        pools: list[str] | None = None,
        accelerators: list[str] | None = None,
        strict: bool = True,
    ) -> None:
        self.pools = frozenset(pools or ())
        self.accelerators = frozenset(accelerators or ())
        self.strict = strict

    @classmethod
    def from_params(cls, params: PoolFilterParams) -> PoolFilter:
        return cls(params.pools, params.accelerators, params.strict)

    def keep(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> np.ndarray:
        ok = np.ones(candidates.size, dtype=bool)
        if self.pools:
            ok &= np.fromiter(
                (view.pools[i] in self.pools for i in candidates), bool, candidates.size
            )
        if self.accelerators:
            ok &= np.fromiter(
                (view.accelerators[i] in self.accelerators for i in candidates),
                bool,
                candidates.size,
            )
        return ok
