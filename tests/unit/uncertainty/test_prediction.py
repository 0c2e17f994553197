"""Per-request latency prediction: the orderings a router relies on."""

import numpy as np
import pytest

from tests.builders import replica_load as _load
from uncertainty import CascadeModel, predict_latency


def test_means_add_up() -> None:
    p = predict_latency(CascadeModel(), _load(1), prompt_tokens=1000, output_tokens=101)
    assert p.ttft_mean_s[0] == pytest.approx(0.1)
    assert p.e2e_mean_s[0] == pytest.approx(0.1 + 100 * 0.02)


def test_busier_slower_and_fuller_replicas_rank_worse() -> None:
    model = CascadeModel()
    p = predict_latency(
        model, _load(queue_wait_mean_s=[0.0, 0.5, 0.0], queue_wait_std_s=[0.0, 0.2, 0.0]), 500, 200
    )
    assert p.ttft_mean_s[1] > p.ttft_mean_s[0]
    # no ITL history (σ unknown): the cascade model alone orders by KV pressure
    q = predict_latency(model, _load(kv_pressure=[0.1, 0.5, 0.9], itl_std_s=[0.0] * 3), 500, 200)
    assert q.itl_std_s[0] < q.itl_std_s[1] < q.itl_std_s[2]
    assert q.e2e_quantile(0.99)[0] < q.e2e_quantile(0.99)[2]
    slo = float(q.e2e_mean_s[0] * 1.2)
    prob = q.prob_within(e2e_slo_s=slo)
    assert prob[0] > prob[1] > prob[2]
    assert np.all((prob >= 0) & (prob <= 1))


def test_observed_sigma_is_scaled_by_the_predicted_change() -> None:
    # with history, the observed σ already reflects today's pressure; admitting a
    # long prompt on a small KV cache raises it by the model's ratio
    m = CascadeModel()
    small_kv = predict_latency(m, _load(1, kv_capacity_tokens=[4000.0]), 2000, 100)
    big_kv = predict_latency(m, _load(1, kv_capacity_tokens=[1e6]), 2000, 100)
    assert small_kv.itl_std_s[0] > big_kv.itl_std_s[0] > 0.004


def test_autocorrelation_widens_the_e2e_distribution() -> None:
    m = CascadeModel()
    p = predict_latency(m, _load(itl_autocorr=[0.0, 0.5, 0.9]), 100, 300)
    assert p.e2e_var_s2[0] < p.e2e_var_s2[1] < p.e2e_var_s2[2]
    assert np.all(p.e2e_quantile(0.5) < p.e2e_quantile(0.99))


def test_heterogeneous_pool_fast_replica_preferred() -> None:
    # an H100-like replica: faster and steadier than an A100-like one
    p = predict_latency(
        CascadeModel(),
        _load(
            2, itl_mean_s=[0.012, 0.02], itl_std_s=[0.002, 0.006], prefill_s_per_token=[5e-5, 1e-4]
        ),
        800,
        150,
    )
    assert (
        p.prob_within(ttft_slo_s=0.2, e2e_slo_s=2.5)[0]
        > p.prob_within(ttft_slo_s=0.2, e2e_slo_s=2.5)[1]
    )


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="output_tokens"):
        predict_latency(CascadeModel(), _load(1), 10, 0)
    with pytest.raises(ValueError, match="SLO"):
        predict_latency(CascadeModel(), _load(1), 10, 5).prob_within(e2e_slo_s=0.0)
    with pytest.raises(ValueError, match="quantile"):
        predict_latency(CascadeModel(), _load(1), 10, 5).e2e_quantile(1.0)


def test_predictions_from_threads_do_not_share_buffers() -> None:
    """The hot path computes in a per-thread workspace: four threads predicting
    different requests at once get exactly what one thread gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    from uncertainty.prediction import predict_slo_probability

    rng = np.random.default_rng(11)
    load = _load(
        16,
        queue_wait_mean_s=list(rng.uniform(0, 1, 16)),
        queue_wait_std_s=list(rng.uniform(0, 0.5, 16)),
        kv_pressure=list(rng.uniform(0, 1, 16)),
    )
    model = CascadeModel()
    requests = [(int(p), float(length)) for p, length in rng.integers(1, 4000, (64, 2))]

    def run(req: tuple[int, float]) -> np.ndarray:
        prob, mean = predict_slo_probability(model, load, req[0], req[1], 0.0, 1.0, 20.0)
        return np.concatenate((prob, mean))

    alone = [run(r) for r in requests]
    for _ in range(5):
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(run, requests))
        for a, b in zip(alone, together, strict=True):
            np.testing.assert_array_equal(a, b)
