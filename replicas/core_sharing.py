"""Engines that share CPU cores: a step is stretched while its co-located engines are busy.

The step profile (``cascade profile``) times one engine with the host to itself.
Deployed, several engines can share the same cores: on a host without a GPU,
vLLM-CPU's automatic OpenMP binding pins the worker threads of every engine of
a pool to the same core(s) (on a 2-core host, all to core 0: ``taskset -cp`` of
the ``VLLM::Worker`` threads), and the engines' front-ends, Ray and the client
share the rest. ``CoreSharing`` models this as *processor sharing within a
group*: engines are grouped (``engines_per_group`` consecutive engines, in the
simulator's build order: pool by pool, replica by replica), and a step of an
engine whose group has ``m`` *other* engines busy (a step in flight) lasts

    duration × (1 + alpha · m)

``alpha`` (≥ 0) is the fractional slowdown of a step per other busy engine of
the group. Assumptions, stated because they bound what it can show:

* Only part of a step contends. ``alpha = 1`` would be two engines wholly on one
  core (each step twice as long while both run); a step of a tiny model is
  mostly Python scheduling, IPC and output handling, and only its kernels run on
  the pinned OpenMP threads, so a real ``alpha`` lies well below 1. It is
  *measured*, not derived: ``cascade bench fidelity`` fits it to a probe of
  requests sent two at a time (``experiments.benchmarks.fidelity_calibrate``).
* Linear in the busy others: a step's contended share is shared evenly with
  every other busy engine's (processor sharing), so each one adds ``alpha``.
* Step granularity: a step keeps the stretch it began with; the simulator cuts
  fast-forwarded decode runs when a peer starts or stops, so the next step
  sees the change (``experiments.simulator``).
* Groups do not span hosts.

The serving stack on the same cores (``per_stream``, ≥ 0, default 0). Every
streamed answer costs CPU outside the engines: Serve's proxy, the ingress and
the replica actor handle its chunks (measured on vLLM-CPU: ~0.6 of a core for
them at 0.8 of capacity on a 2-core host, `cpu_s` of ``cascade bench ab``), and
that CPU is taken from the engines. A step that begins while ``s`` requests are
running host-wide (each engine's in-flight requests up to its ``max_num_seqs``)
is further stretched by ``per_stream · s``:

    duration × (1 + alpha · m + per_stream · s)

Linear in the streams (each costs about the same per chunk; chunks come every
batching interval whatever the batch); fitted by ``cascade bench fidelity`` to
the capacity probe (requests all at once: the most streams the pool runs). When
``s`` changes (an arrival, a completion) every busy engine's run is cut at its
next step boundary, as for a peer starting or stopping.

The host's cores, shared by everything (``host_cores`` > 0: replaces the two
linear terms above, which must then be 0). When every engine has cores of its
own (``cpu_threads_bind: distinct``) what still contends is the host: the busy
engines and the serving stack's work per streamed token share ``host_cores``
cores. A step of duration ``d`` that begins while ``n`` engines of the host are
busy (this one included) and ``s`` requests stream host-wide lasts ``x·d``,
where the processor-sharing balance "demand over cores = stretch" reads

    x = D / C,   D = n·e + s·k / x     (cores demanded; k: the stack's CPU per
                                      streamed token, in units of a step)

i.e. ``x = (a + sqrt(a² + 4·k·s/C)) / 2`` with ``a = n·e/C``, never below 1.
``e`` (``engine_demand``, default 1) is the cores a busy engine keeps busy (its
scheduler process and its worker alternate on about one core); ``k``
(``stream_cost``) is fitted by ``cascade bench fidelity`` to the stream probe.
Concave in the streams (the square root), where the linear ``per_stream``
over-stretches light loads once fitted at a heavy one; a step's tokens are
taken as one step of the engine's own (``k`` absorbs the ratio of the stack's
CPU per token to a typical step), so ``x`` does not depend on ``d``.

Off by default (``None`` in ``SimSetup``): on a GPU node each engine has its own
device, and the effect does not apply in this form. ``engines_per_group = 1``
or ``alpha = 0`` reproduce the unshared simulator exactly.

YAML-like (the simulator's setup; ``cascade bench fidelity`` builds it)::

    core_sharing: {engines_per_group: 2, alpha: 0.2, per_stream: 0.01}
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CoreSharing:
    """Which engines share cores, how much a busy peer and a running stream slow
    a step (module docstring).

    Raises ``ValueError`` for ``engines_per_group`` or ``host_cores`` out of
    range, any factor < 0 / not finite, or the host model beside a linear term.
    """

    engines_per_group: int
    alpha: float
    per_stream: float = 0.0
    host_cores: int = 0  # > 0: the host model (module docstring); alpha, per_stream 0
    stream_cost: float = 0.0  # k of the host model
    engine_demand: float = 1.0  # e of the host model, cores per busy engine

    def __post_init__(self) -> None:
        if self.engines_per_group < 1:
            raise ValueError(
                f"core sharing: engines_per_group must be >= 1, got {self.engines_per_group}"
            )
        for name in ("alpha", "per_stream", "stream_cost", "engine_demand"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"core sharing: {name} must be a finite number >= 0, got {v}")
        if self.host_cores < 0:
            raise ValueError(f"core sharing: host_cores must be >= 0, got {self.host_cores}")
        if self.host_cores and (self.alpha or self.per_stream):
            raise ValueError(
                "core sharing: the host model (host_cores > 0) replaces alpha and per_stream; "
                f"got alpha {self.alpha}, per_stream {self.per_stream}"
            )

    @property
    def active(self) -> bool:
        """Whether a step can ever be stretched."""
        return (
            (self.engines_per_group > 1 and self.alpha > 0)
            or self.per_stream > 0
            or self.host_cores > 0
        )

    @property
    def tracks_streams(self) -> bool:
        """Whether the stretch depends on the requests running host-wide."""
        return self.per_stream > 0 or (self.host_cores > 0 and self.stream_cost > 0)

    def stretch(self, busy_others: int, streams: int = 0) -> float:
        """The factor of a step that begins while ``busy_others`` peers are busy
        and ``streams`` requests run host-wide."""
        if self.host_cores:
            c = self.host_cores
            a = (busy_others + 1) * self.engine_demand / c
            return max(1.0, 0.5 * (a + math.sqrt(a * a + 4.0 * self.stream_cost * streams / c)))
        return 1.0 + self.alpha * busy_others + self.per_stream * streams


class CoreGroups:
    """The groups of ``n`` engines under ``sharing`` and their busy flags.

    ``set_busy(k, flag)`` returns the peers whose stretch changed (the caller cuts
    their runs); ``stretch(k)`` is the factor for engine k's next step; the
    caller keeps ``streams`` (requests running host-wide) current and cuts every
    ``busy()`` engine's run when it changes.
    """

    __slots__ = ("_busy", "_count", "_group", "_members", "sharing", "streams")

    def __init__(self, sharing: CoreSharing, n: int) -> None:
        self.sharing = sharing
        size = sharing.engines_per_group
        self._group = [k // size for k in range(n)]
        groups = -(-n // size)
        self._members: list[list[int]] = [
            list(range(g * size, min((g + 1) * size, n))) for g in range(groups)
        ]
        self._count = [0] * groups  # busy engines per group
        self._busy = [False] * n
        self.streams = 0  # requests running host-wide (the simulator sets it)

    def stretch(self, k: int) -> float:
        """The factor for a step of engine ``k`` beginning now."""
        others = self._count[self._group[k]] - self._busy[k]
        return self.sharing.stretch(others, self.streams)

    def busy(self) -> list[int]:
        """The engines with a step in flight."""
        return [k for k, b in enumerate(self._busy) if b]

    def set_busy(self, k: int, busy: bool) -> list[int]:
        """Mark engine ``k`` busy or idle; the peers of its group whose next steps
        now see a different stretch (empty when nothing changed)."""
        if self._busy[k] == busy:
            return []
        self._busy[k] = busy
        g = self._group[k]
        self._count[g] += 1 if busy else -1
        return [j for j in self._members[g] if j != k and self._busy[j]]
