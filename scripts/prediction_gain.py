"""Paired timing of the latency prediction: the readable reference against the
fast path (the figure quoted in ``uncertainty/prediction_fast.py``).

Both compute P(meet the TTFT and E2E SLOs) and the E2E mean + target of one
request on R replicas (the body of ``reference_slo_probability`` keeping the
mean, and ``predict_slo_probability``).
Calls alternate one by one in one process, so both see the same machine at the
same moment (this VM's speed drifts 2x within minutes); 64 replica states rotate
with warm per-load caches (as between two snapshots), requests are random::

    PYTHONPATH=. .venv/bin/python scripts/prediction_gain.py 8,64,1024 [calls]

Prints one JSON object per R: p50 of each (µs) and the median per-call ratio.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from experiments.benchmarks.timing import pin_to_one_core
from tests.builders import fitted_cascade_model, random_load
from uncertainty.lognormal import lognormal_cdf
from uncertainty.prediction import predict_slo_probability
from uncertainty.prediction_reference import reference_latency


def main() -> None:
    sizes = [int(x) for x in sys.argv[1].split(",")]
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    pin_to_one_core()
    rng = np.random.default_rng(0)
    model = fitted_cascade_model(rng)
    for r in sizes:
        loads = [random_load(rng, r) for _ in range(64)]
        reqs = [
            (int(p), float(n), float(sd))
            for p, n, sd in zip(
                rng.integers(1, 8000, calls),
                rng.integers(1, 1000, calls),
                rng.uniform(0, 100, calls),
                strict=True,
            )
        ]
        ref_t, fast_t = np.empty(calls), np.empty(calls)
        for i, (p, n, sd) in enumerate(reqs):
            load = loads[i % 64]
            t0 = time.perf_counter()
            pred = reference_latency(model, load, p, n, sd)
            prob = lognormal_cdf(pred.ttft_mean_s, pred.ttft_var_s2, 1.0)
            prob *= lognormal_cdf(pred.e2e_mean_s, pred.e2e_var_s2, 20.0)
            np.add(pred.e2e_mean_s, 20.0)
            t1 = time.perf_counter()
            predict_slo_probability(model, load, p, n, sd, 1.0, 20.0, 20.0)
            t2 = time.perf_counter()
            ref_t[i], fast_t[i] = t1 - t0, t2 - t1
        warm = slice(calls // 10, None)  # the first calls fill the per-load caches
        ref, fast = ref_t[warm] * 1e6, fast_t[warm] * 1e6
        row = {
            "replicas": r,
            "reference_p50_us": round(float(np.median(ref)), 1),
            "fast_p50_us": round(float(np.median(fast)), 1),
            "median_ratio_fast_over_reference": round(float(np.median(fast / ref)), 3),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
