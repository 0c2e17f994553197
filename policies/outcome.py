"""The system's outcome of one decision: the expected number of requests that meet
their SLO, this request's and the ones already on the replica.

Routing a request to replica i changes the expected number of requests meeting
their SLO by

    G_i = P_i + Δ_i

where P_i is the request's own P(meet SLO) on i (``uncertainty.predict_
slo_probability``) and Δ_i ≤ 0 the change it causes to the N_i requests already
there: its prefill of P prompt tokens joins the steps their decodes share, so
each of them waits through about P·c_i seconds more (c_i: the replica's prefill
cost per token), and the cascade model (``uncertainty.cascade``) scales their
ITL σ by its predicted change (σ_prefill grows by the prefill's spread, KV
pressure by its tokens). Refusing the request counts it as a miss and changes
nothing else: G = 0. Hence one rule for both decisions (``expected_slo``
objective of the ``uncertainty`` scorer, ``expected_slo`` admission): route to
the replica with the largest G, and shed only when every G < 0.

The ongoing requests' model (per replica, from the view; no per-request telemetry):

- N_i = the view's ``ongoing`` (max(snapshot running + waiting, in flight)):
  every request ahead of this one decodes while its prefill runs;
- each one's TPOT is lognormal with mean m_i = the replica's ITL mean and
  variance σ_i²·AR_i/n + (κ·m_i)²: the mean of n autocorrelated ITLs (AR =
  (1 + ρ)/(1 − ρ)) plus a spread κ (``tpot_cv``) between requests that share the
  replica but not their lifetimes (and the load still to come), which the
  snapshot does not measure;
- n + 1 = ``running_output_tokens``, their output length (the gateway feeds the
  learned mean length); admitting adds P·c_i/n to each TPOT (the stall spread
  over n gaps) and scales σ_i by the cascade model's ratio over the k ≈
  P·c_i / m_i steps the prefill spans (not over all n: a TPOT averages them);
- their SLO is this request's class's TPOT target (the best proxy the view
  offers: a pool's requests share its class mix); without a TPOT target Δ = 0.

Δ_i = N_i·(P(TPOT_after ≤ τ) − P(TPOT_before ≤ τ)), clipped at 0 (a fitted
cascade exponent below 0 must not make a prefill look helpful).

Cost: the request-independent terms are computed once per view and cascade fit
(``_terms``, cached on the view's snapshot load, which every in-flight refresh of
the view shares), so a request costs about 30 array operations over the replicas
(measured: docs/benchmarks.md, "Issue 14 §3").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import Field
from scipy.special import ndtr

from policies.params import PolicyParams
from policies.slo import DEFAULT_SLOS, SloClass
from policies.view import ReplicaView
from uncertainty import CascadeModel
from uncertainty.replica_load import AR_CLIP, SIGMA_PREFILL_FLOOR_S
from uncertainty.validation import FloatArray

DEFAULT_TPOT_CV = 0.1  # κ: TPOT spread between requests sharing a replica
DEFAULT_RUNNING_OUTPUT_TOKENS = 256.0  # until the gateway has learned lengths


class OutcomeParams(PolicyParams):
    """The prediction parameters the ``uncertainty`` scorer and the
    ``expected_slo`` admission share (one definition, one set of defaults):
    ``output_cv`` the relative σ of a predicted output length, ``tpot_cv`` the
    TPOT spread between requests on a replica, ``running_output_tokens`` their
    output length until the gateway feeds the learned mean, ``slos`` the SLO
    table (``default`` covers other classes)."""

    output_cv: float = Field(default=0.3, ge=0.0)
    tpot_cv: float = Field(default=DEFAULT_TPOT_CV, ge=0.0)
    running_output_tokens: float = Field(default=DEFAULT_RUNNING_OUTPUT_TOKENS, ge=2.0)
    slos: dict[str, SloClass] = Field(default_factory=lambda: dict(DEFAULT_SLOS))


_CACHE_KEY = "_outcome_terms"
_EPS = 1e-12


@dataclass(frozen=True)
class _Terms:
    """Request-independent terms of Δ over R replicas (see module docstring)."""

    itl_mean: FloatArray  # m
    itl_var_ar_n: FloatArray  # σ²·AR/n
    kappa_m2: FloatArray  # (κ·m)²
    p_before: FloatArray  # P(TPOT ≤ τ) before admitting
    cost: FloatArray  # c: prefill s per prompt token
    prefill_var_per_tok2: FloatArray  # (CV·c)²
    log_sp2: FloatArray  # log σ_prefill²
    sp2: FloatArray  # σ_prefill²
    log1p_kv: FloatArray
    kv: FloatArray
    inv_cap: FloatArray  # 1 / KV capacity (tokens)


def learned_running_tokens(current: float, tokens: float) -> float:
    """``tokens`` (the gateway's learned mean output length of running requests)
    when usable — finite and >= 2, the length ``ongoing_harm`` needs — else
    ``current`` unchanged."""
    return float(tokens) if tokens >= 2.0 and math.isfinite(tokens) else current


def _lognormal_cdf(mean: FloatArray, var: FloatArray, log_x: float) -> FloatArray:
    m = np.maximum(mean, _EPS)
    s2 = np.log1p(var / (m * m))
    z = (log_x - np.log(m) + 0.5 * s2) / np.maximum(np.sqrt(s2), _EPS)
    out: FloatArray = ndtr(z)
    return out


def _terms(model: CascadeModel, view: ReplicaView, n: float, tpot_s: float, kappa: float) -> _Terms:
    """The cached terms of ``view`` for this cascade fit, n, τ and κ."""
    base = view.base_load
    key = (model.theta.tobytes(), n, tpot_s, kappa)
    hit = base.__dict__.get(_CACHE_KEY)
    if hit is not None and hit[0] == key:
        terms: _Terms = hit[1]
        return terms
    sp = np.maximum(base.sigma_prefill_s, SIGMA_PREFILL_FLOOR_S)
    kv = np.clip(base.kv_pressure, 0.0, 1.0)
    # observed ITL σ, or the cascade model's where none is observed (σ = 0)
    sigma = np.where(
        base.itl_std_s > 0,
        base.itl_std_s,
        model.sigma_decode(sp, kv, np.maximum(base.heterogeneity, 1.0)),
    )
    rho = np.clip(base.itl_autocorr, -AR_CLIP, AR_CLIP)
    m = base.itl_mean_s
    var_ar_n = sigma**2 * (1.0 + rho) / (1.0 - rho) / n
    kappa_m2 = (kappa * m) ** 2
    terms = _Terms(
        itl_mean=m,
        itl_var_ar_n=var_ar_n,
        kappa_m2=kappa_m2,
        p_before=_lognormal_cdf(m, var_ar_n + kappa_m2, math.log(tpot_s)),
        cost=base.prefill_s_per_token,
        prefill_var_per_tok2=(base.prefill_cv * base.prefill_s_per_token) ** 2,
        log_sp2=2.0 * np.log(sp),
        sp2=sp * sp,
        log1p_kv=np.log1p(kv),
        kv=kv,
        inv_cap=1.0 / np.maximum(base.kv_capacity_tokens, 1.0),
    )
    # kept on the snapshot's load: every in-flight refresh of the view shares it
    base.__dict__[_CACHE_KEY] = (key, terms)
    return terms


def ongoing_harm(
    model: CascadeModel,
    view: ReplicaView,
    prompt_tokens: float,
    output_tokens: float,
    tpot_s: float | None,
    *,
    running_output_tokens: float = DEFAULT_RUNNING_OUTPUT_TOKENS,
    tpot_cv: float = DEFAULT_TPOT_CV,
) -> FloatArray:
    """Δ per replica of ``view`` (module docstring): the expected change, <= 0, in
    the number of its ongoing requests that meet the TPOT target ``tpot_s`` if
    this request (``prompt_tokens``, ``output_tokens`` expected) is admitted
    there. Zeros without a TPOT target. ``ValueError`` for a non-positive
    ``tpot_s`` or ``running_output_tokens`` < 2, or a negative ``tpot_cv``."""
    if tpot_s is None:
        return np.zeros(view.size)
    if not tpot_s > 0:
        raise ValueError(f"tpot_s must be > 0, got {tpot_s!r}")
    if not running_output_tokens >= 2.0:
        raise ValueError(f"running_output_tokens must be >= 2, got {running_output_tokens!r}")
    if not tpot_cv >= 0.0:
        raise ValueError(f"tpot_cv must be >= 0, got {tpot_cv!r}")
    n = running_output_tokens - 1.0
    t = _terms(model, view, n, tpot_s, tpot_cv)
    theta = model.theta
    p = float(prompt_tokens)
    # the prefill's stall (P·c seconds) spread over each ongoing request's n gaps
    stall = t.cost * p
    m_after = stall / n
    m_after += t.itl_mean
    # cascade: σ_p² grows by the prefill's variance, KV by its tokens
    sp2_to = t.prefill_var_per_tok2 * (p * p)
    sp2_to += t.sp2
    log_ratio = np.log(sp2_to)
    log_ratio -= t.log_sp2
    log_ratio *= 0.5 * float(theta[1])
    kv_to = t.inv_cap * (p + float(output_tokens))
    kv_to += t.kv
    np.minimum(kv_to, 1.0, out=kv_to)
    kv_term = np.log1p(kv_to)
    kv_term -= t.log1p_kv
    log_ratio += float(theta[2]) * kv_term
    # σ² grows by the cascade ratio² only over the k ≈ stall / ITL steps the
    # prefill spans, of the n a TPOT averages: var after = σ²·AR/n · (1 +
    # (ratio² − 1)·min(k/n, 1)) + (κ·m_after)²
    var_after = np.exp(2.0 * log_ratio)
    var_after -= 1.0
    np.maximum(var_after, 0.0, out=var_after)
    k_over_n = stall / np.maximum(t.itl_mean, _EPS)
    np.clip(k_over_n, 1.0, n, out=k_over_n)
    var_after *= k_over_n
    var_after *= 1.0 / n
    var_after += 1.0
    var_after *= t.itl_var_ar_n
    var_after += t.kappa_m2 * np.square(m_after / np.maximum(t.itl_mean, _EPS))
    p_after = _lognormal_cdf(m_after, var_after, math.log(tpot_s))
    p_after -= t.p_before
    np.minimum(p_after, 0.0, out=p_after)
    p_after *= view.ongoing
    return p_after


__all__ = ["DEFAULT_RUNNING_OUTPUT_TOKENS", "DEFAULT_TPOT_CV", "ongoing_harm"]
