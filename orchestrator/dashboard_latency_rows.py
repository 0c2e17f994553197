"""The dashboard's latency rows: SLOs and tails, σ by hierarchy level, the cascade.

Each row is a function returning its panels (``orchestrator.dashboard_panels``);
``orchestrator.dashboard_rows.rows`` assembles all of them in order.
"""

from __future__ import annotations

from orchestrator.dashboard_panels import POOL, RATE, Panel, Query, hq, ratio_or_zero, series

LATENCY_HIST = "cascade_request_latency_seconds"
PREDICTED_P99 = "cascade_predicted_p99_seconds"


def slos_row(
    ttft_s: float | None = None, e2e_s: float | None = None, quantile: float | None = None
) -> list[Panel]:
    """Observed TTFT/E2E quantiles against the objectives drawn as lines (the
    default class's, when a config is given; none drawn when None), SLO attainment
    against its target ``quantile``, predicted vs observed P99 and its exceedances."""
    lat_hist, pred = LATENCY_HIST, PREDICTED_P99
    req_count = series(lat_hist, "count")
    return [
        Panel(
            "TTFT P50 / P99 by pool",
            "Time to first token observed at the ingress (histogram quantiles); the line is "
            "the default class's TTFT SLO.",
            (
                Query(hq(0.99, lat_hist, "pool", f'metric="ttft", {POOL}'), "{{pool}} P99"),
                Query(hq(0.5, lat_hist, "pool", f'metric="ttft", {POOL}'), "{{pool}} P50"),
            ),
            thresholds=((ttft_s, "red"),) if ttft_s is not None else (),
        ),
        Panel(
            "E2E P50 / P99 by pool",
            "End-to-end latency observed at the ingress; the line is the default class's E2E SLO.",
            (
                Query(hq(0.99, lat_hist, "pool", f'metric="e2e", {POOL}'), "{{pool}} P99"),
                Query(hq(0.5, lat_hist, "pool", f'metric="e2e", {POOL}'), "{{pool}} P50"),
            ),
            thresholds=((float(e2e_s), "red"),) if e2e_s is not None else (),
        ),
        Panel(
            "SLO attainment by class (E2E)",
            "Fraction of finished requests that met their class's E2E objective.",
            (
                Query(
                    "1 - "
                    + ratio_or_zero(
                        f'{series("cascade_slo_violations_total")}{{metric="e2e", {POOL}}}',
                        f'{req_count}{{metric="e2e", {POOL}}}',
                        "class",
                    ),
                    "{{class}}",
                ),
            ),
            unit="percentunit",
            thresholds=((quantile, "green"),) if quantile is not None else (),
        ),
        Panel(
            "Predicted vs observed P99 (E2E)",
            "Mean of the P99s the router predicted per request vs the P99 observed at the "
            "ingress over the same window.",
            (
                Query(
                    f'sum by (pool) (rate({series(pred, "sum")}{{metric="e2e", {POOL}}}{RATE})) / '
                    f'sum by (pool) (rate({series(pred, "count")}{{metric="e2e", {POOL}}}{RATE}))',
                    "{{pool}} predicted P99 (mean)",
                ),
                Query(hq(0.99, lat_hist, "pool", f'metric="e2e", {POOL}'), "{{pool}} observed P99"),
            ),
            width=12,
        ),
        Panel(
            "P99 exceedance rate (calibrated ≈ 1%)",
            "How often a request's observed latency exceeded its predicted P99. About 1% "
            "means the predicted quantiles are calibrated; more means the predictions are "
            "over-confident.",
            (
                Query(
                    ratio_or_zero(
                        f"{series('cascade_prediction_exceedances_total')}{{{POOL}}}",
                        f"{series(pred, 'count')}{{{POOL}}}",
                        "pool, metric",
                    ),
                    "{{pool}} {{metric}}",
                ),
            ),
            unit="percentunit",
            thresholds=((0.01, "orange"),),
            width=12,
        ),
        Panel(
            "Miss share per quantile (targets 0.5 / 0.1 / 0.01)",
            "Share of outcomes above the gateway's issued, conformally corrected P50 / P90 "
            "/ P99 for the replica chosen (TTFT, TPOT, E2E), over the window, and each "
            "conformal stream's running share at its ingress.",
            (
                Query(
                    f"sum by (pool, metric, quantile) (rate("
                    f"{series('cascade_prediction_misses_total')}{{{POOL}}}{RATE})) "
                    f"/ ignoring(quantile) group_left sum by (pool, metric) (rate("
                    f"{series('cascade_predictions_total')}{{{POOL}}}{RATE}))",
                    "{{pool}} {{metric}} q{{quantile}} (window)",
                ),
                Query(
                    f"max by (pool, metric, quantile) "
                    f"({series('cascade_prediction_miss_ratio')}{{{POOL}}})",
                    "{{pool}} {{metric}} q{{quantile}} (running)",
                ),
            ),
            unit="percentunit",
            width=24,
        ),
    ]


def level_row() -> list[Panel]:
    """σ and quantiles of the chosen metric per replica, pool and cluster."""
    level_sel = 'level="{level}", metric=~"$metric", ' + POOL
    sigma, quant = "cascade_latency_sigma_seconds", "cascade_latency_quantile_seconds"
    return [
        Panel(
            "σ per replica ($metric)",
            "Standard deviation of the chosen latency metric on each replica (exported by "
            "the replica itself).",
            (
                Query(
                    f"max by (pool, replica, metric) "
                    f"({series(sigma)}{{{level_sel.format(level='replica')}}})",
                    "{{replica}} {{metric}}",
                ),
            ),
        ),
        Panel(
            "σ per pool ($metric)",
            "Pool-level standard deviation: exact merge of the replicas' summaries.",
            (
                Query(
                    f"max by (pool, metric) ({series(sigma)}{{{level_sel.format(level='pool')}}})",
                    "{{pool}} {{metric}}",
                ),
            ),
        ),
        Panel(
            "σ of the cluster (TTFT / ITL / E2E)",
            "Cluster-level standard deviation (all pools merged).",
            (
                Query(
                    f'max by (metric) ({series(sigma)}{{level="cluster", metric=~"ttft|itl|e2e"}})',
                    "{{metric}}",
                ),
            ),
        ),
        Panel(
            "P99 per replica ($metric)",
            "P99 of the chosen metric on each replica, from its quantile sketch.",
            (
                Query(
                    f'max by (pool, replica, metric) ({series(quant)}{{quantile="0.99", '
                    f"{level_sel.format(level='replica')}}})",
                    "{{replica}} {{metric}}",
                ),
            ),
        ),
        Panel(
            "P50 / P90 / P99 per pool ($metric)",
            "Pool quantiles from the merged sketches.",
            (
                Query(
                    f"max by (pool, metric, quantile) "
                    f"({series(quant)}{{{level_sel.format(level='pool')}}})",
                    "{{pool}} {{metric}} q{{quantile}}",
                ),
            ),
        ),
        Panel(
            "P50 / P90 / P99 of the cluster (TTFT / ITL / E2E)",
            "Cluster quantiles from the merged sketches.",
            (
                Query(
                    f"max by (metric, quantile) "
                    f'({series(quant)}{{level="cluster", metric=~"ttft|itl|e2e"}})',
                    "{{metric}} q{{quantile}}",
                ),
            ),
        ),
        Panel(
            "Samples behind the statistics ($metric)",
            "How many samples each pool's and the cluster's statistics rest on: a σ or P99 "
            "from few samples is itself uncertain.",
            (
                Query(
                    f"max by (level, pool, metric) "
                    f'({series("cascade_latency_samples")}{{level=~"pool|cluster", '
                    f'metric=~"$metric"}})',
                    "{{level}} {{pool}} {{metric}}",
                ),
            ),
            unit="none",
            width=24,
        ),
    ]


def cascade_row() -> list[Panel]:
    """Prefill σ vs decode σ, the fitted cascade model against the observed."""
    coef = series("cascade_model_coefficient")
    pre, dec = (
        series("cascade_pool_prefill_sigma_seconds"),
        series("cascade_pool_decode_sigma_seconds"),
    )
    kv = series("cascade_pool_kv_usage_ratio")
    return [
        Panel(
            "Prefill σ vs decode σ by pool",
            "Recent (decayed) σ of prefill step time and of decode inter-token latency: "
            "the cascade carries the first into the second through the KV cache.",
            (
                Query(f"max by (pool) ({pre}{{{POOL}}})", "{{pool}} prefill σ"),
                Query(f"max by (pool) ({dec}{{{POOL}}})", "{{pool}} decode σ"),
            ),
        ),
        Panel(
            "Decode σ: observed vs cascade model (h = 1)",
            "The fitted model's decode σ = exp(log_scale) · σ_p^a · (1+kv)^b at each pool's "
            "prefill σ and KV usage (batch heterogeneity taken as 1), against the observed.",
            (
                Query(
                    f'scalar(exp(max({coef}{{coefficient="log_scale"}}))) * '
                    f"(max by (pool) ({pre}{{{POOL}}}) ^ "
                    f'scalar(max({coef}{{coefficient="a_prefill"}}))) * '
                    f"((1 + max by (pool) ({kv}{{{POOL}}})) ^ "
                    f'scalar(max({coef}{{coefficient="b_kv"}})))',
                    "{{pool}} model",
                ),
                Query(f"max by (pool) ({dec}{{{POOL}}})", "{{pool}} observed"),
            ),
        ),
        Panel(
            "Cascade coefficients",
            "a: prefill → decode elasticity; b: KV pressure; c: batch heterogeneity.",
            (
                Query(
                    f'max by (coefficient) ({coef}{{coefficient=~"a_prefill|b_kv|'
                    f'c_heterogeneity"}})',
                    "{{coefficient}}",
                ),
            ),
            unit="none",
        ),
        Panel(
            "Cascade fit: residual σ and samples",
            "Std of the fit's log-residuals (multiplicative noise) and the decayed sample count.",
            (
                Query(f'max({coef}{{coefficient="residual_std"}})', "residual σ (log)"),
                Query(f"max({series('cascade_model_samples')})", "samples (n_eff)"),
            ),
            unit="none",
            width=12,
        ),
    ]
