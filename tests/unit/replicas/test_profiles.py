"""Profiles load from the shared vidur data and give sane, monotone step costs."""

from __future__ import annotations

import numpy as np
import pytest

from replicas.perf_model import FittedPerfModel, ProfiledPerfModel, StepShape, lognormal_draw
from replicas.profiles import GPUS, MODELS, kv_blocks, load_step_profile


@pytest.mark.parametrize(
    ("model", "gpu", "tp"),
    [("llama-2-7b", "a100", 1), ("llama-2-7b", "h100", 1), ("llama-2-70b", "a100", 4),
     ("llama-2-70b", "h100", 2)],
)  # fmt: skip
def test_step_cost_is_positive_and_grows_with_work(model: str, gpu: str, tp: int) -> None:
    pm = ProfiledPerfModel.load(model, gpu, tp)
    small, _ = pm.shape_mean_var(StepShape(8, n_decode=8, decode_kv_tokens=8 * 512))
    big, _ = pm.shape_mean_var(StepShape(128, n_decode=128, decode_kv_tokens=128 * 600))
    pre, var = pm.shape_mean_var(StepShape(2048, 1, 2048, 2048 * 1024.0))
    assert 0.003 < small < big < pre < 2.0
    assert var > 0
    # linear ops grow with tokens (well past the memory-bound region)
    lm = pm.profile.linear_mean
    assert lm[4096] > lm[1024] > lm[64] > 0


def test_attention_fit_matches_the_profile() -> None:
    attn = load_step_profile("llama-2-70b", "a100", 2).attention
    assert attn.r2_prefill > 0.95 and attn.r2_decode > 0.95


def test_h100_is_faster_than_a100() -> None:
    shape = StepShape(1024, 1, 1024, 1024 * 512.0)
    a, _ = ProfiledPerfModel.load("llama-2-7b", "a100").shape_mean_var(shape)
    h, _ = ProfiledPerfModel.load("llama-2-7b", "h100").shape_mean_var(shape)
    assert h < a


def test_lognormal_draw_matches_mean_and_std() -> None:
    z = np.random.default_rng(0).standard_normal(200_000)
    x = np.array([lognormal_draw(0.02, 0.004**2, float(v)) for v in z])
    assert x.mean() == pytest.approx(0.02, rel=0.01)
    assert x.std() == pytest.approx(0.004, rel=0.03)
    assert (x > 0).all()


def test_kv_blocks_from_memory() -> None:
    n7 = kv_blocks(MODELS["llama-2-7b"], GPUS["a100"], 1)
    assert 5000 < n7 < 9000  # ~110k tokens of KV on an 80 GB A100
    with pytest.raises(ValueError, match="does not fit"):
        kv_blocks(MODELS["llama-2-70b"], GPUS["a100"], 1)


def test_unknown_model_and_tp_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        load_step_profile("gpt-5", "a100", 1)
    with pytest.raises(ValueError, match="TP 3"):
        load_step_profile("llama-2-7b", "a100", 3)


def test_fitted_model_reads_a_measured_profile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.csv"
    rows = ["prefill_tokens,decode_seqs,kv_len,time_stats.step.mean,time_stats.step.std"]
    for pt in (0, 64, 256):
        for ds in (0, 4, 16):
            for kv in (64, 512):
                if pt == ds == 0:
                    continue
                mean = 2 + 0.01 * (pt + ds) + 0.05 * ds + 0.0001 * ds * kv
                rows.append(f"{pt},{ds},{kv},{mean},{0.05 * mean}")
    path.write_text("\n".join(rows) + "\n")
    fm = FittedPerfModel.from_csv(path)
    m, v = fm.shape_mean_var(StepShape(20, n_decode=20, decode_kv_tokens=20 * 512))
    assert m == pytest.approx((2 + 0.2 + 1.0 + 0.0001 * 20 * 512) * 1e-3, rel=0.02)
    assert v**0.5 / m == pytest.approx(0.05, rel=0.01)
    path.write_text(rows[0] + "\n1,2,x,3,4\n")
    with pytest.raises(ValueError, match=r"p.csv:2"):
        FittedPerfModel.from_csv(path)
