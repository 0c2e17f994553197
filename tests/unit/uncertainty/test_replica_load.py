"""``ReplicaLoad``: its input checks and the per-request queue-wait refreshes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.builders import random_load, replica_load
from uncertainty import CascadeModel, predict_latency


def test_bad_inputs_name_the_field_and_index() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        replica_load(2, itl_mean_s=[0.1])
    with pytest.raises(ValueError, match=r"itl_std_s\[1\] is not finite"):
        replica_load(2, itl_std_s=[0.1, float("nan")])
    with pytest.raises(ValueError, match=r"queue_wait_mean_s\[1\] = -0.5: must be >= 0"):
        replica_load(2, queue_wait_mean_s=[0.1, -0.5])
    with pytest.raises(ValueError, match="queue_wait_std_s: must be finite and >= 0"):
        replica_load(2).with_queue_wait(np.zeros(2), np.array([0.1, -1.0]))
    with pytest.raises(ValueError, match="queue_wait_mean_s: must be finite and >= 0"):
        replica_load(2).with_queue_wait(np.array([np.nan, 0.0]), np.zeros(2))


def test_added_queue_work_adds_mean_and_variance() -> None:
    load = replica_load(3, queue_wait_mean_s=[0.1, 0.2, 0.0], queue_wait_std_s=[0.3, 0.0, 0.4])
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


def test_unchecked_added_queue_equals_the_checked_one_and_takes_the_buffer() -> None:
    rng = np.random.default_rng(5)
    load = random_load(rng, 16)
    before = load.queue_wait_mean_s.copy()
    extra = np.stack((rng.uniform(0, 2, 16), rng.uniform(0, 1, 16)))
    checked = load.with_added_queue(extra[0], extra[1])
    buffer = extra.copy()
    unchecked = load.with_added_queue_unchecked(buffer)
    np.testing.assert_array_equal(unchecked.queue_wait_mean_s, checked.queue_wait_mean_s)
    np.testing.assert_array_equal(unchecked.queue_wait_std_s, checked.queue_wait_std_s)
    model = CascadeModel()
    np.testing.assert_array_equal(
        predict_latency(model, unchecked, 900, 120.0).prob_within(1.0, 8.0),
        predict_latency(model, checked, 900, 120.0).prob_within(1.0, 8.0),
    )
    # the buffer now holds the new queue moments (mean, variance), read-only
    np.testing.assert_array_equal(buffer[0], checked.queue_wait_mean_s)
    assert not buffer.flags.writeable
    np.testing.assert_array_equal(load.queue_wait_mean_s, before)  # the base load untouched
