"""Cascade-model fit: recovery of known coefficients, and the fit on simulator telemetry.

``cascade bench cascade-fit --json`` prints one JSON object per row:

* ``synthetic-independent``: data drawn from known θ with independent,
  well-spread regressors; the fit must recover θ (``max_abs_error``).
* ``synthetic-collinear``: the shape seen on Ray: KV usage spanning a few
  percent and moving with load, σ_prefill drifting down with load, and decode σ
  driven by load through a term the model does not have. Least squares
  (``ols``) puts that load on the regressors with the least spread; the
  controller's regularised, bounded fit (``fit``) stays near the prior.
* ``simulator``: the cascade stack (controller + gateway) on ``--trace`` at
  ``--load`` for ``--duration`` virtual seconds; every controller tick's
  snapshots become rows exactly as the controller makes them
  (``orchestrator.cascade_rows``). Reports the controller's own fitted θ, a
  70/30 chronological split (fit on the first part, score the rest: R² of
  log σ_decode and Gaussian log-likelihood per row against a constant-σ
  baseline), and identifiability: the condition number of the standardised
  regressors and their correlations with each other and with the batch size
  (log running sequences), which the model does not include.

Figures in docs/uncertainty.md ("Validating the cascade fit").
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from uncertainty import CascadeModel
from uncertainty.validation import FloatArray

NAMES = ("log_scale", "a_prefill", "b_kv", "c_heterogeneity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", default="azure-conv")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of measured capacity")
    parser.add_argument("--duration", type=float, default=60.0, help="virtual seconds simulated")
    parser.add_argument("--samples", type=int, default=2000, help="synthetic rows")
    parser.add_argument("--noise", type=float, default=0.1, help="synthetic log-noise std")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sim", action="store_true", help="synthetic rows only")


def _design(rows: FloatArray) -> FloatArray:
    return np.column_stack(
        [np.ones(len(rows)), np.log(rows[:, 0]), np.log1p(rows[:, 1]), np.log(rows[:, 2])]
    )


def _fit(rows: FloatArray, *, regularised: bool) -> CascadeModel:
    m = (
        CascadeModel(forgetting=1.0)
        if regularised
        else CascadeModel(forgetting=1.0, exponent_prior_std=math.inf, bounds=None)
    )
    return m.update(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])


def _theta(m: CascadeModel) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in zip(NAMES, m.theta, strict=True)}


def _identifiability(rows: FloatArray, running: FloatArray | None = None) -> dict[str, Any]:
    x = _design(rows)[:, 1:]
    cols = ["log_sigma_prefill", "log1p_kv", "log_h"]
    if running is not None:
        x = np.column_stack([x, np.log1p(running)])
        cols.append("log1p_running")
    sd = x.std(axis=0)
    live = sd > 0
    corr = np.corrcoef(x[:, live].T) if live.sum() > 1 else np.ones((1, 1))
    eig = np.linalg.eigvalsh(np.corrcoef(x[:, :3][:, live[:3]].T)) if live[:3].sum() > 1 else [1]
    return {
        "condition_number": round(float(math.sqrt(max(eig) / max(min(eig), 1e-12))), 2),
        "correlation": {
            f"{a}~{b}": round(float(corr[i, j]), 3)
            for i, a in enumerate(c for c, ok in zip(cols, live, strict=True) if ok)
            for j, b in enumerate(c for c, ok in zip(cols, live, strict=True) if ok)
            if i < j
        },
        "kv_range": [round(float(rows[:, 1].min()), 4), round(float(rows[:, 1].max()), 4)],
        "sigma_prefill_cv": round(float(rows[:, 0].std() / rows[:, 0].mean()), 3),
    }


def _score(train: FloatArray, test: FloatArray, regularised: bool) -> dict[str, Any]:
    """R² and Gaussian log-likelihood of log σ_decode on ``test`` for the model
    fitted on ``train``, against a constant (intercept-only) baseline."""
    m = _fit(train, regularised=regularised)
    y_tr, y_te = np.log(train[:, 3]), np.log(test[:, 3])
    s_model = float(np.std(y_tr - _design(train) @ m.theta)) or 1e-9
    mu0, s0 = float(y_tr.mean()), float(y_tr.std()) or 1e-9

    def loglik(res: FloatArray, s: float) -> float:
        return float(np.mean(-0.5 * (res / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)))

    res = y_te - _design(test) @ m.theta
    ss = float(((y_te - y_te.mean()) ** 2).sum()) or 1e-12
    return {
        "theta": _theta(m),
        "r2_heldout": round(1.0 - float((res**2).sum()) / ss, 3),
        "loglik_heldout": round(loglik(res, s_model), 3),
        "loglik_heldout_constant": round(loglik(y_te - mu0, s0), 3),
    }


def _synthetic(args: argparse.Namespace, collinear: bool) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    n = args.samples
    if collinear:
        true = (0.0, 1.0, 1.0, 1.0)
        load = rng.uniform(0.0, 1.0, n)
        sp = np.exp(np.log(0.05) - 0.3 * load + rng.normal(0, 0.05, n))
        kv = np.clip(0.03 * load + rng.normal(0, 0.002, n), 0.0, 1.0)
        h = 1.0 + 0.3 * load + rng.uniform(0, 0.05, n)
        hidden = 1.5 * load  # decode σ rises with load through queueing: not a regressor
    else:
        true = (math.log(0.7), 0.8, 1.5, 0.6)
        sp = rng.lognormal(np.log(0.02), 0.6, n)
        kv = rng.uniform(0.0, 1.0, n)
        h = 1.0 + rng.exponential(0.5, n)
        hidden = np.zeros(n)
    rows = np.column_stack([sp, kv, h, np.ones(n)])
    log_sd = _design(rows) @ np.asarray(true) + hidden + rng.normal(0, args.noise, n)
    rows[:, 3] = np.exp(log_sd)
    fit, ols = _fit(rows, regularised=True), _fit(rows, regularised=False)
    err = np.abs(fit.theta - np.asarray(true))
    return {
        "bench": "cascade-fit",
        "row": "synthetic-collinear" if collinear else "synthetic-independent",
        "samples": n,
        "noise": args.noise,
        "true": dict(zip(NAMES, true, strict=True)),
        "fit": _theta(fit),
        "ols": _theta(ols),
        "max_abs_error": round(float(err.max()), 4),
        "max_abs_error_ols": round(float(np.abs(ols.theta - np.asarray(true)).max()), 4),
        **_identifiability(rows, load * 64 if collinear else None),
    }


def _simulator(args: argparse.Namespace) -> dict[str, Any]:
    from experiments.cascade_stack import CascadeStack, build_stack
    from experiments.sim_config import load_setup
    from experiments.simulator import measure_capacity, simulate
    from orchestrator.cascade_rows import cascade_rows
    from orchestrator.config import load_config
    from orchestrator.traces import load_trace

    cfg, setup = load_config(None), load_setup(None)
    trace = load_trace(args.trace, rng=np.random.default_rng(args.seed))
    cap = measure_capacity(setup, trace, seed=args.seed)
    scaled = trace.scaled_to_rate(args.load * cap).head(duration_s=args.duration)
    rows: list[FloatArray] = []
    running: list[float] = []
    stacks: list[CascadeStack] = []

    class Recording(CascadeStack):
        def tick(self, now_s: float, snapshots: Any) -> Any:
            for s in snapshots:
                r = cascade_rows([s])
                if r.size:
                    rows.append(r[0])
                    running.append(float(s.running))
            return super().tick(now_s, snapshots)

    def builder(rng: np.random.Generator, clock: Any) -> CascadeStack:
        s = build_stack(cfg, rng, clock)
        stacks.append(Recording(s.controller, s.gateway))
        return stacks[-1]

    simulate(setup, scaled, "cascade", seed=args.seed, stack=builder)
    data = np.asarray(rows).reshape(-1, 4)
    if len(data) < 20:
        raise ValueError(f"simulator gave {len(data)} cascade rows; run longer (--duration)")
    cut = int(0.7 * len(data))
    ctl = stacks[0].controller.cascade
    return {
        "bench": "cascade-fit",
        "row": "simulator",
        "trace": args.trace,
        "load": args.load,
        "duration_s": args.duration,
        "rows": len(data),
        "controller_theta": _theta(ctl),
        "controller_residual_std": round(ctl.coefficients.residual_std, 4),
        "fit": _score(data[:cut], data[cut:], regularised=True),
        "ols": _score(data[:cut], data[cut:], regularised=False),
        **_identifiability(data, np.asarray(running)),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.samples < 50 or not args.noise > 0 or not args.duration > 0:
        raise ValueError("--samples must be >= 50, --noise and --duration > 0")
    out = [_synthetic(args, collinear=False), _synthetic(args, collinear=True)]
    if not args.skip_sim:
        out.append(_simulator(args))
    return out
