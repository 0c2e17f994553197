"""The ``tail_protect`` scorer: keep new requests off replicas whose ongoing
requests are likely to end in the E2E tail.

Output lengths are heavy-tailed, so a request that has already generated g
tokens is more likely than a fresh one to generate many more (its survival
P(L > x | L > g) grows with g). The E2E P99 requests are the longest outputs,
and their E2E is their output length times their TPOT, which every request
sharing their decode steps raises. A new request placed on replica i adds one
sequence to each of i's decode steps for its whole life, so the harm it does to
the E2E tail is proportional (within one pool: same step-time slope) to

    T_i = Σ_j w(g_j),   w(g) = P(L_j ends in the top 1 − q of lengths | L_j > g)
                             = min(1, (1 − q) / S(g))

summed over i's ongoing requests j (S: the survival function of output
lengths; q: ``tail_quantile``): the expected number of i's requests that will
be in the length tail. Score = min-max of T, lower is better (1 for the replica
with the fewest expected tail requests).

Inputs and cost: the view's ``generated_hist`` (ongoing requests per
``GENERATED_EDGES`` bucket of tokens generated so far, from each replica's
snapshot), weighed by w at each bucket's lower edge (conservative: a request
counts as its bucket's youngest). The weights are computed once per length
model update; a request costs one (R × 11) matrix-vector product.

The length distribution is the gateway's learned ``OutputLengthModel``
(``set_output_lengths``, all requests pooled) once it has ``min_samples``
completions; before that a lognormal prior (``prior_median_tokens``,
``prior_sigma``).

Failure modes: a replica that reports no histogram (``generated_hist == ()``)
has T = 0, so it looks tail-free and is preferred by this term alone; give the
scorer a weight below the load term's so that load still decides between such
replicas. Snapshots are up to a period stale (and the simulator's decode runs
update ages at their ends), so ages lag by up to ~0.5 s of tokens: a bucket
boundary is a factor 2, so the lag rarely moves a request across one.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field
from scipy.special import ndtr

from policies.base import Scorer, min_max_lower_is_better
from policies.params import PolicyParams
from policies.registry import SCORERS
from policies.view import IntArray, ReplicaView
from replicas.telemetry import GENERATED_EDGES, RequestInfo
from uncertainty.output_length import OutputLengthModel
from uncertainty.validation import FloatArray

_QS = (np.arange(400) + 0.5) / 400  # quantile grid the learned survival is read from


class TailProtectParams(PolicyParams):
    tail_quantile: float = Field(default=0.98, gt=0.0, lt=1.0)
    prior_median_tokens: float = Field(default=256.0, gt=0.0)
    prior_sigma: float = Field(default=1.0, gt=0.0)


def tail_weights(
    survival: FloatArray, tail_quantile: float
) -> FloatArray:
    """w = min(1, (1 − q) / S) per bucket edge (S: survival at the edge, clipped
    away from 0 so that an edge past every observed length weighs 1)."""
    s = np.maximum(np.asarray(survival, dtype=np.float64), 1e-12)
    out: FloatArray = np.minimum(1.0, (1.0 - tail_quantile) / s)
    return out


@SCORERS.register("tail_protect")
class TailProtectScorer(Scorer):
    """Fewer expected E2E-tail requests on the replica is better (module
    docstring); min-max normalised, 1 for the fewest.

    YAML::

        scorers:
          - type: tail_protect
            weight: 0.3
            params:
              tail_quantile: 0.98        # the tail = the longest 2 % of outputs
              prior_median_tokens: 256   # lognormal prior until lengths are learned
              prior_sigma: 1.0
    """

    Params = TailProtectParams

    def __init__(self, params: TailProtectParams | None = None) -> None:
        self.params = params or TailProtectParams()
        self._edges = np.asarray(GENERATED_EDGES, dtype=np.float64)
        self._learned_n = -1
        self.weights = self._prior_weights()

    @classmethod
    def from_params(cls, params: TailProtectParams) -> TailProtectScorer:
        return cls(params)

    def _prior_weights(self) -> FloatArray:
        p = self.params
        with np.errstate(divide="ignore"):
            z = (np.log(self._edges) - math.log(p.prior_median_tokens)) / p.prior_sigma
        return tail_weights(1.0 - ndtr(z), p.tail_quantile)

    def set_output_lengths(self, model: OutputLengthModel) -> None:
        """Read the survival of output lengths from the gateway's learned model
        (recomputed only when it learned more); before ``min_samples``
        completions the prior stays."""
        n = model.n
        if n == self._learned_n:
            return
        grid = model.overall_quantiles(_QS)
        if grid is None:
            return
        self._learned_n = n
        # S(e) = 1 − F(e), F read off the quantile grid (flat runs: np.interp
        # takes the right end of equal x's, i.e. P(L <= e) counts ties)
        cdf = np.interp(self._edges, np.maximum.accumulate(grid), _QS, left=0.0, right=1.0)
        self.weights = tail_weights(1.0 - cdf, self.params.tail_quantile)

    def score(self, request: RequestInfo, view: ReplicaView, candidates: IntArray) -> FloatArray:
        tail = view.generated_hist[candidates] @ self.weights
        return min_max_lower_is_better(tail)
