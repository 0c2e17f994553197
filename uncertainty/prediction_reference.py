"""The latency prediction written out: the readable reference of the fast path.

The model of ``uncertainty.prediction`` (see its docstring), one quantity per
line, as a person would compute it. ``uncertainty.prediction_fast`` computes the
same numbers as one matrix product per request; the tests hold the two equal
(``tests/unit/uncertainty/test_prediction_fast.py``: to 1e-9). Nothing on a
request path calls this module: it is the specification, and the baseline the
fast path's measured gain is stated against.

The fast path adds floors (1e-150 s on means, 1e-24 s² on variances) that this
reference does not: they change no result above those magnitudes.
"""

from __future__ import annotations

import numpy as np

from uncertainty.cascade import CascadeModel
from uncertainty.lognormal import lognormal_cdf
from uncertainty.prediction import LatencyPrediction
from uncertainty.replica_load import AR_CLIP, SIGMA_PREFILL_FLOOR_S, ReplicaLoad
from uncertainty.validation import FloatArray


def reference_latency(
    model: CascadeModel,
    load: ReplicaLoad,
    prompt_tokens: int,
    output_tokens: float,
    output_tokens_std: float = 0.0,
) -> LatencyPrediction:
    """What ``predict_latency`` returns (to 1e-9), computed by the formulas.

    P = ``prompt_tokens``, L = ``output_tokens`` (expected), σ_L its σ; per replica:
    """
    p, length, sd = float(prompt_tokens), float(output_tokens), float(output_tokens_std)
    # TTFT = queue wait + prefill; prefill ≈ P · c with CV from telemetry
    prefill_mean = p * load.prefill_s_per_token
    prefill_sd = load.prefill_cv * prefill_mean
    ttft_mean = load.queue_wait_mean_s + prefill_mean
    ttft_var = load.queue_wait_std_s**2 + prefill_sd**2
    # admitting the request: its prefill joins the prefill steps the running
    # decodes share (σ_p grows), its tokens raise KV pressure (capped at full)
    sp_from = np.maximum(load.sigma_prefill_s, SIGMA_PREFILL_FLOOR_S)
    sp_to = np.sqrt(sp_from**2 + prefill_sd**2)
    kv_from = np.clip(load.kv_pressure, 0.0, 1.0)
    kv_to = np.clip(kv_from + (p + length) / np.maximum(load.kv_capacity_tokens, 1.0), 0.0, 1.0)
    # decode ITL σ with the request admitted: the observed σ scaled by the cascade
    # model's predicted change, or the model's σ where none is observed (σ = 0)
    scaled = load.itl_std_s * np.exp(model.log_ratio(sp_from, sp_to, kv_from, kv_to))
    modelled = model.sigma_decode(sp_to, kv_to, np.maximum(load.heterogeneity, 1.0))
    itl_sd = np.where(load.itl_std_s > 0, scaled, modelled)
    # E2E = TTFT + (L − 1) ITLs: their sum's variance grows by the AR(1) factor,
    # and the output length's uncertainty adds ITL² · σ_L²
    rho = np.clip(load.itl_autocorr, -AR_CLIP, AR_CLIP)
    n = max(length - 1.0, 0.0)
    e2e_mean = ttft_mean + n * load.itl_mean_s
    decode_var = n * itl_sd**2 * (1.0 + rho) / (1.0 - rho)
    e2e_var = ttft_var + decode_var + (load.itl_mean_s * sd) ** 2
    return LatencyPrediction(ttft_mean, ttft_var, e2e_mean, e2e_var, itl_sd)


def reference_slo_probability(
    model: CascadeModel,
    load: ReplicaLoad,
    prompt_tokens: int,
    output_tokens: float,
    output_tokens_std: float,
    ttft_slo_s: float,
    e2e_slo_s: float,
) -> FloatArray:
    """What ``predict_slo_probability`` returns first (to 1e-9): P(TTFT ≤
    ``ttft_slo_s``) · P(E2E ≤ ``e2e_slo_s``), each a lognormal matched to the
    predicted mean and variance (the product: a conservative joint, see
    ``uncertainty.prediction``)."""
    pred = reference_latency(model, load, prompt_tokens, output_tokens, output_tokens_std)
    ttft = lognormal_cdf(pred.ttft_mean_s, pred.ttft_var_s2, ttft_slo_s)
    e2e = lognormal_cdf(pred.e2e_mean_s, pred.e2e_var_s2, e2e_slo_s)
    out: FloatArray = ttft * e2e
    return out
