"""The gateway's prediction log: every issued prediction, matched with its outcome.

For each admitted request the gateway predicts, *for the replica actually
chosen*, TTFT, TPOT and E2E at P50/P90/P99 (``uncertainty.request_quantiles``,
mixed over the predicted output-length distribution). ``Calibrator`` then

* corrects each quantile online per (pool, class, metric, length known:
  ``PredictionRecord.stream``) with adaptive
  conformal inference (``uncertainty.conformal``);
* keeps the naive baseline: the pool's (and class's) empirical quantiles of the
  same metric over the requests completed so far (at least ``NAIVE_MIN``),
  corrected the same way by a tracker of its own;
* with ``select`` (off by default: see below), issues, per stream and level,
  whichever of the two corrected forecasters has
  had the lower quantile (pinball) loss over its recent outcomes (decayed,
  half-life ``SELECT_HALF_LIFE`` outcomes; the model's until both have
  ``SELECT_MIN``): both are calibrated by their own correction, and the score
  is proper, so the issued one is the sharper at equal calibration. Where the
  model's conditional quantiles (replica state, predicted length) are no better
  than the pool's marginal ones (measured: TPOT and E2E on most grid cells,
  docs/benchmarks.md), the issued prediction is the corrected marginal.
  Measured (docs/benchmarks.md, "sharpness by a proper score"): sharper by
  that score, but the issued P99's miss share leaves 1 % ± 0.5 % where the
  model alone holds it, so it is not the default;
* when the request completes (``observe``), counts, per metric and level,
  whether the outcome was above the prediction (a *miss*) for the corrected,
  raw-model and naive predictions, and the mean predicted quantile (the width
  of the one-sided interval [0, q̂]: lower is sharper at the same coverage);
* scores the output-length prediction: absolute percentage error of its P50,
  pinball loss of its P90, and the P90's miss rate.

``report()`` is what ``cascade simulate --json`` prints and the ingress exports.
Coverage is reported as the *miss share* (share of outcomes above the predicted
quantile: 0.5 / 0.1 / 0.01 is perfect). Pure; no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uncertainty import QuantileSketch
from uncertainty.conformal import DEFAULT_STEP, ConformalCorrector
from uncertainty.request_quantiles import LEVELS, METRIC_NAMES
from uncertainty.validation import FloatArray

NAIVE_MIN = 20  # completions of a (pool, class, metric) before the naive baseline predicts
NAIVE_BATCH = 16  # outcomes folded into a naive sketch at once (its quantiles then re-read)
METHODS = ("corrected", "raw", "naive")
SELECT_MIN = 50  # outcomes each corrected forecaster is scored on before the better is issued
SELECT_HALF_LIFE = 500.0  # outcomes: the pinball losses that choose between them decay
_DECAY = 0.5 ** (1.0 / SELECT_HALF_LIFE)
_SELECT_MIN_WEIGHT = (1.0 - _DECAY**SELECT_MIN) / (1.0 - _DECAY)  # SELECT_MIN outcomes, decayed


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a completed request measured: TTFT and E2E (s, from arrival at the
    gateway) and its output length (tokens). ``ValueError`` for NaN, infinite or
    negative values, E2E < TTFT, or fewer than one token."""

    ttft_s: float
    e2e_s: float
    output_tokens: int

    def __post_init__(self) -> None:
        for name in ("ttft_s", "e2e_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"Outcome.{name}={v!r}: must be a finite latency >= 0 s")
        if self.e2e_s < self.ttft_s:
            raise ValueError(f"Outcome: e2e_s={self.e2e_s!r} < ttft_s={self.ttft_s!r}")
        if not (isinstance(self.output_tokens, (int, np.integer)) and self.output_tokens >= 1):
            raise ValueError(f"Outcome.output_tokens={self.output_tokens!r}: must be an int >= 1")

    @property
    def tpot_s(self) -> float:
        """(E2E − TTFT)/(tokens − 1); NaN for a one-token answer."""
        n = self.output_tokens - 1
        return (self.e2e_s - self.ttft_s) / n if n > 0 else math.nan

    def values(self) -> tuple[float, float, float]:
        """(TTFT, TPOT, E2E), in ``METRIC_NAMES`` order."""
        return (self.ttft_s, self.tpot_s, self.e2e_s)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One issued prediction. Arrays are (3 metrics, 3 levels), seconds; NaN =
    none (e.g. the naive baseline before ``NAIVE_MIN`` completions)."""

    pool: str
    slo_class: str
    corrected: FloatArray
    raw: FloatArray
    naive: FloatArray
    length_p50: float  # predicted output length quantiles (NaN: no length model yet)
    length_p90: float
    # the two corrected forecasters (model, naive) the issued ``corrected`` was
    # chosen from (naive: NaN unless ``Calibrator.select``); each one's
    # conformal tracker is fed its own values
    model_corrected: FloatArray
    naive_corrected: FloatArray

    def stream(self, m: int) -> tuple[str, str, int, bool]:
        """The conformal stream of metric ``m``: (pool, class, metric, length
        known). TPOT and E2E predicted before the length model knows anything
        (from ``max_tokens``: far too wide) are a regime of their own, so their
        hits do not drag the correction of the later, length-based predictions."""
        return (self.pool, self.slo_class, m, m != 0 and math.isfinite(self.length_p50))


class Calibrator:
    """See the module docstring. ``step``: the conformal correction's η;
    ``select``: issue the corrected naive forecaster where it has scored better."""

    def __init__(
        self, step: float = DEFAULT_STEP, levels: Sequence[float] = LEVELS, *, select: bool = False
    ) -> None:
        self.levels = tuple(levels)
        self.select = select
        self.conformal = ConformalCorrector(step)
        self._naive: dict[tuple[str, str, int], QuantileSketch] = {}
        self._naive_pending: dict[tuple[str, str, int], list[float]] = {}
        self._naive_q: dict[tuple[str, str, int], FloatArray] = {}  # read at the last fold
        shape = (len(METHODS), len(METRIC_NAMES), len(self.levels))
        self.misses = np.zeros(shape)
        self.counts = np.zeros(shape)
        self.width_sum = np.zeros(shape)
        self.pinball_sum = np.zeros(shape)
        self._tau = np.asarray(self.levels, dtype=np.float64)[None, None, :]
        # per stream: decayed (loss sum, weight) of the corrected model and the
        # corrected naive forecaster, per level: shape (2, 2, levels)
        self._select: dict[tuple[str, str, int, bool], FloatArray] = {}
        self.issued_naive = 0  # predictions (metric x level) issued from the naive side
        self.predictions = 0
        self.matched = 0
        self._len = np.zeros(4)  # n, Σ APE(P50), Σ pinball(P90), Σ miss(P90)

    def predict(
        self,
        pool: str,
        slo_class: str,
        raw: FloatArray,
        length_p50: float = math.nan,
        length_p90: float = math.nan,
    ) -> PredictionRecord:
        """Issue the corrected prediction for ``raw`` ((3, levels) model quantiles,
        seconds) on ``pool`` for ``slo_class``; keep the naive baseline's beside it."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape != (len(METRIC_NAMES), len(self.levels)):
            raise ValueError(f"raw quantiles: shape {raw.shape}, expected (3, {len(self.levels)})")
        corrected = np.full(raw.shape, np.nan)
        naive = np.full(raw.shape, np.nan)
        model_c = np.full(raw.shape, np.nan)
        naive_c = np.full(raw.shape, np.nan)
        record = PredictionRecord(
            pool, slo_class, corrected, raw, naive, length_p50, length_p90, model_c, naive_c
        )
        for m in range(len(METRIC_NAMES)):
            q = self._naive_q.get((pool, slo_class, m))
            if q is not None:
                naive[m] = q
            stream = record.stream(m)
            scores = self._select.get(stream)
            for j, level in enumerate(self.levels):
                if math.isfinite(raw[m, j]):
                    model_c[m, j] = self.conformal.correct(stream, level, raw[m, j])
                if self.select and math.isfinite(naive[m, j]):  # its shadow costs otherwise
                    naive_c[m, j] = self.conformal.correct((stream, "naive"), level, naive[m, j])
                corrected[m, j] = model_c[m, j]
                if (
                    self.select
                    and scores is not None
                    and math.isfinite(naive_c[m, j])
                    and _naive_better(scores, j)
                ):
                    corrected[m, j] = naive_c[m, j]
                    self.issued_naive += 1
        self.predictions += 1
        return record

    def observe(self, record: PredictionRecord, outcome: Outcome) -> None:
        """Match ``outcome`` with its prediction: coverage counts, conformal
        updates (against the issued, corrected values), naive sketches."""
        self.matched += 1
        values = outcome.values()
        y = np.asarray(values)[None, :, None]  # a one-token answer's TPOT is NaN
        preds = np.stack((record.corrected, record.raw, record.naive))  # METHODS order
        ok = np.isfinite(preds) & np.isfinite(y)
        self.counts += ok
        with np.errstate(invalid="ignore"):
            self.misses += ok & (y > preds)
        self.width_sum += np.where(ok, preds, 0.0)
        with np.errstate(invalid="ignore"):
            self.pinball_sum += np.where(ok, _pinball(self._tau, y, preds), 0.0)
        model_c, naive_c = record.model_corrected, record.naive_corrected
        for m, obs in enumerate(values):
            if not math.isfinite(obs):
                continue
            stream = record.stream(m)
            both = True
            for j, level in enumerate(self.levels):
                issued = float(model_c[m, j])
                if math.isfinite(issued):
                    self.conformal.update(stream, level, issued, obs, float(record.raw[m, j]))
                shadow = float(naive_c[m, j])
                if math.isfinite(shadow):
                    self.conformal.update(
                        (stream, "naive"), level, shadow, obs, float(record.naive[m, j])
                    )
                both = both and math.isfinite(issued) and math.isfinite(shadow)
            if both:
                self._score(stream, model_c[m], naive_c[m], obs)
            self._naive_add((record.pool, record.slo_class, m), obs)
        if math.isfinite(record.length_p50):
            tokens = float(outcome.output_tokens)
            p90 = record.length_p90
            self._len += np.array(
                (
                    1.0,
                    abs(record.length_p50 - tokens) / tokens,
                    _pinball(0.9, tokens, p90),
                    float(tokens > p90),
                )
            )

    def _score(
        self, stream: tuple[str, str, int, bool], model: FloatArray, naive: FloatArray, y: float
    ) -> None:
        """Decay and add this outcome's pinball loss of both corrected forecasters."""
        scores = self._select.get(stream)
        if scores is None:
            scores = self._select[stream] = np.zeros((2, 2, len(self.levels)))
        for k, pred in enumerate((model, naive)):
            scores[k, 0] = _DECAY * scores[k, 0] + _pinball(self._tau[0, 0], y, pred)
            scores[k, 1] = _DECAY * scores[k, 1] + 1.0

    def _naive_add(self, key: tuple[str, str, int], y: float) -> None:
        pending = self._naive_pending.setdefault(key, [])
        pending.append(y)
        sketch = self._naive.get(key)
        n = (sketch.n if sketch is not None else 0) + len(pending)
        if len(pending) < NAIVE_BATCH and n != NAIVE_MIN:
            return
        if sketch is None:
            sketch = self._naive[key] = QuantileSketch(0.01)
        sketch.update(pending)
        pending.clear()
        if sketch.n >= NAIVE_MIN:
            self._naive_q[key] = sketch.quantiles(self.levels)

    def report(self) -> dict[str, Any]:
        """``coverage`` (miss share above the issued P50/P90/P99 per metric),
        ``coverage_raw`` (the model before the conformal correction),
        ``coverage_naive`` (the pool's empirical quantiles), the mean predicted
        quantile of each (``width_s``, ``width_raw_s``, ``width_naive_s``), their
        mean quantile (pinball) loss (``pinball_s``, ``pinball_raw_s``,
        ``pinball_naive_s``: s; a proper scoring rule, so lower is better at any
        coverage: it compares sharpness between predictors that are not equally
        calibrated, which width alone cannot), the requests each is over
        (``calibration_n``), and the output-length prediction's error
        (``length_prediction``). JSON-ready (None for NaN)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            share = self.misses / self.counts
            width = self.width_sum / self.counts
            pinball = self.pinball_sum / self.counts
        out: dict[str, Any] = {}
        for k, method in enumerate(METHODS):
            suffix = "" if method == "corrected" else f"_{method}"
            out[f"coverage{suffix}"] = _table(share[k], self.levels)
            out[f"width{suffix}_s"] = _table(width[k], self.levels)
            out[f"pinball{suffix}_s"] = _table(pinball[k], self.levels)
        out["calibration_n"] = {
            method: _num(self.counts[k, 2, 0]) for k, method in enumerate(METHODS)
        }
        n, ape, pin, miss = self._len
        out["length_prediction"] = {
            "n": int(n),
            "mape_p50": _num(ape / n) if n else None,
            "pinball_p90": _num(pin / n) if n else None,
            "miss_p90": _num(miss / n) if n else None,
        }
        return out


def _pinball(tau: Any, y: Any, pred: Any) -> Any:
    """The quantile (pinball) loss of ``pred`` as the ``tau`` quantile of ``y``
    (a proper scoring rule; numpy arrays broadcast, floats give a float)."""
    return np.maximum(tau * (y - pred), (1.0 - tau) * (pred - y))


def _naive_better(scores: FloatArray, j: int) -> bool:
    """Whether the corrected naive forecaster has had the lower decayed pinball
    loss at level ``j`` (both scored on >= ``SELECT_MIN`` outcomes' worth)."""
    if scores[0, 1, j] < _SELECT_MIN_WEIGHT or scores[1, 1, j] < _SELECT_MIN_WEIGHT:
        return False
    return bool(scores[1, 0, j] / scores[1, 1, j] < scores[0, 0, j] / scores[0, 1, j])


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _table(a: FloatArray, levels: Sequence[float]) -> dict[str, dict[str, float | None]]:
    return {
        metric: {f"p{round(q * 100):d}": _num(a[m, j]) for j, q in enumerate(levels)}
        for m, metric in enumerate(METRIC_NAMES)
    }
