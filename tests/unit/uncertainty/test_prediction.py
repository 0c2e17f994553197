"""Per-request latency prediction: the orderings a router relies on."""

import numpy as np
import pytest

from uncertainty import CascadeModel, ReplicaLoad, predict_latency


def _load(n: int = 3, **over: list[float]) -> ReplicaLoad:
    base = {
        "queue_wait_mean_s": [0.0] * n,
        "queue_wait_std_s": [0.0] * n,
        "prefill_s_per_token": [1e-4] * n,
        "prefill_cv": [0.1] * n,
        "itl_mean_s": [0.02] * n,
        "itl_std_s": [0.004] * n,
        "itl_autocorr": [0.5] * n,
        "sigma_prefill_s": [0.005] * n,
        "kv_pressure": [0.2] * n,
        "kv_capacity_tokens": [100_000.0] * n,
        "heterogeneity": [1.2] * n,
    }
    base.update(over)
    return ReplicaLoad(**{k: np.asarray(v, dtype=float) for k, v in base.items()})


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
    with pytest.raises(ValueError, match="differ in shape"):
        _load(2, itl_mean_s=[0.1])
    with pytest.raises(ValueError, match=r"itl_std_s\[1\] is not finite"):
        _load(2, itl_std_s=[0.1, float("nan")])
    with pytest.raises(ValueError, match=r"queue_wait_mean_s\[1\] = -0.5: must be >= 0"):
        _load(2, queue_wait_mean_s=[0.1, -0.5])
    with pytest.raises(ValueError, match="queue_wait_std_s: must be finite and >= 0"):
        _load(2).with_queue_wait(np.zeros(2), np.array([0.1, -1.0]))
    with pytest.raises(ValueError, match="queue_wait_mean_s: must be finite and >= 0"):
        _load(2).with_queue_wait(np.array([np.nan, 0.0]), np.zeros(2))
    with pytest.raises(ValueError, match="output_tokens"):
        predict_latency(CascadeModel(), _load(1), 10, 0)
    with pytest.raises(ValueError, match="SLO"):
        predict_latency(CascadeModel(), _load(1), 10, 5).prob_within(e2e_slo_s=0.0)


def test_added_queue_work_adds_mean_and_variance() -> None:
    load = _load(3, queue_wait_mean_s=[0.1, 0.2, 0.0], queue_wait_std_s=[0.3, 0.0, 0.4])
    extra_mean, extra_sd = np.array([0.5, 0.0, 1.0]), np.array([0.4, 0.0, 0.3])
    added = load.with_added_queue(extra_mean, extra_sd)
    np.testing.assert_allclose(added.queue_wait_mean_s, [0.6, 0.2, 1.0])
    np.testing.assert_allclose(added.queue_wait_std_s, [0.5, 0.0, 0.5])  # √(0.3² + 0.4²)
    # same prediction as the load built with that queue wait from scratch
    direct = load.with_queue_wait(added.queue_wait_mean_s, added.queue_wait_std_s)
    a = predict_latency(CascadeModel(), added, 800, 64.0)
    b = predict_latency(CascadeModel(), direct, 800, 64.0)
    np.testing.assert_allclose(a.e2e_var_s2, b.e2e_var_s2, rtol=1e-12)
    np.testing.assert_allclose(a.prob_within(1.0, 3.0), b.prob_within(1.0, 3.0), rtol=1e-12)
    for bad in (np.array([0.1, -0.1, 0.0]), np.array([np.nan, 0.0, 0.0]), np.ones(2)):
        with pytest.raises(ValueError, match="with_added_queue"):
            load.with_added_queue(bad, np.zeros(3))
    np.testing.assert_array_equal(load.queue_wait_mean_s, [0.1, 0.2, 0.0])  # untouched


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
