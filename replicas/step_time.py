"""Seeded step durations for the engine model, drawn from a ``PerfModel``.

A step's duration is lognormal with the performance model's mean and variance
for the batch (``mean_var``), from standard normals drawn in blocks of
``_Z_BLOCK`` from the injected generator (one block call is far cheaper than a
draw per step). ``step`` draws one step; ``decode_run`` draws a run of k alike
decode steps at once (the engine model's fast-forward), and ``give_back`` returns
the draws of steps a run did not take, so a run cut short consumes exactly what
step-by-step stepping would have.

Two terms outside the profile shape every drawn step, ``(draw + overhead_s) × scale``:

* ``overhead_s`` (``EngineConfig.step_overhead_s``, s per step): a fixed cost the
  deployment adds to every engine step that a profile of the engine alone does
  not contain (the serving front-end's per-step output processing, IPC, the
  stream back; measured by ``cascade bench fidelity``'s probe). It draws no
  randomness: with it the noise streams stay those of the engine alone.
* ``scale`` (≥ 1, set by the cluster simulator before each step,
  ``replicas.core_sharing``): the stretch of a step while other engines that
  share this engine's CPU cores are busy. A step keeps the scale it began with.

At ``overhead_s = 0`` and ``scale = 1`` every duration is bit-for-bit the
engine-alone draw ((x + 0.0) × 1.0 == x in IEEE arithmetic).
"""

from __future__ import annotations

import math

import numpy as np

from replicas.perf_model import PerfModel, lognormal_draw

_Z_BLOCK = 4096  # standard normals drawn per refill


class StepTimeSampler:
    """Step durations (seconds) for one replica (see the module docstring)."""

    __slots__ = ("_rng", "_z", "_zi", "overhead_s", "perf", "scale")

    def __init__(
        self, perf: PerfModel, rng: np.random.Generator, *, overhead_s: float = 0.0
    ) -> None:
        self.perf = perf
        self._rng = rng
        self._z: list[float] = []
        self._zi = 0
        self.overhead_s = overhead_s  # s added to every step (module docstring)
        self.scale = 1.0  # contention stretch of the next steps (module docstring)

    def step(
        self,
        num_tokens: int,
        n_prefill: int,
        prefill_tokens: int,
        prefill_work: float,
        n_decode: int,
        decode_kv: int,
    ) -> float:
        """One step of this batch (arguments as ``PerfModel.mean_var``)."""
        mean, var = self.perf.mean_var(
            num_tokens, n_prefill, prefill_tokens, prefill_work, n_decode, decode_kv
        )
        zi = self._zi
        if zi >= len(self._z):
            self._z = self._rng.standard_normal(_Z_BLOCK).tolist()
            zi = 0
        self._zi = zi + 1
        return (lognormal_draw(mean, var, self._z[zi]) + self.overhead_s) * self.scale

    def decode_run(
        self, n: int, kv: int, k: int, now_s: float, horizon_s: float, ends: list[float]
    ) -> float:
        """Up to ``k`` decode-only steps of ``n`` sequences whose KV read starts at
        ``kv`` tokens and grows by ``n`` a step, from ``now_s``: ``ends`` (cleared)
        receives each step's end time, stopping at the first end at or after
        ``horizon_s``. Returns the last end."""
        z = self._z
        zi = self._zi
        if zi + k > len(z):
            z = self._z = self._rng.standard_normal(_Z_BLOCK).tolist()
            zi = 0
        # In a decode run the KV read grows by n tokens a step; both perf models
        # are linear in it for the mean and quadratic for the variance, so three
        # evaluations give every step's moments exactly.
        mv = self.perf.mean_var
        m0, v0 = mv(n, 0, 0, 0.0, n, kv)
        m1, v1 = mv(n, 0, 0, 0.0, n, kv + n)
        _, v2 = mv(n, 0, 0, 0.0, n, kv + 2 * n)
        dm = m1 - m0
        dv = v1 - v0
        ddv = (v2 - 2.0 * v1 + v0) / 2.0
        ends.clear()
        t = now_s
        # lognormal_draw inlined: this loop is the simulator's hottest (one pass
        # per decode step of every fast-forwarded run); means are > 0 (both perf
        # models), so only var > 0 needs a test. Equal to step-by-step draws to
        # 1e-12 (tests/unit/replicas/test_step_time.py).
        log1p, sqrt, exp = math.log1p, math.sqrt, math.exp
        extra, scale = self.overhead_s, self.scale
        for j in range(k):
            mean = m0 + j * dm
            var = v0 + j * (dv - ddv) + j * j * ddv
            if var > 0.0:
                s2 = log1p(var / (mean * mean))
                t += (mean * exp(sqrt(s2) * z[zi + j] - 0.5 * s2) + extra) * scale
            else:
                t += (mean + extra) * scale
            ends.append(t)
            if t >= horizon_s:
                break
        self._zi = zi + len(ends)
        return t

    def give_back(self, steps: int) -> None:
        """Return the draws of the last ``steps`` steps of a run (not taken)."""
        self._zi -= steps
