"""Measured GPU profiles (vidur format) → compact per-step cost tables.

Source data (``../shared/data/profiles/vidur``, see its README):

* ``compute/<gpu>/meta-llama/<model>/mlp.csv``: one transformer layer's non-attention
  ops (ms; mean and std per op) by ``num_tokens`` and TP degree.
* ``legacy_a100/attention.csv``: attention prefill/decode times on A100 for the
  70B GQA shape (64 q heads, 8 KV heads, head dim 128) at TP 2. The only attention
  profile; other shapes, TP degrees and GPUs are scaled from it (see ``AttentionFit``).
* ``network/<gpu>_dgx/all_reduce.csv``: all-reduce times (ms) by message size and
  number of workers, for TP > 1.
* ``legacy_a100/cpu_overheads.csv``: per-step CPU work (schedule, prepare inputs,
  sampler, output processing) by batch size.

Everything is converted to **seconds** here. A ``StepProfile`` is what the
performance model needs for one (model, GPU, TP) combination: a dense table of the
per-step linear-op cost by token count (mean and variance), an attention cost fit,
the all-reduce cost by token count, and the CPU overhead fit. Loading is the only
slow part (pandas, ~0.2 s); cache the result per combination (``load_step_profile``
is memoised).

Failure modes: a missing directory/file raises ``FileNotFoundError`` naming the
path; an unknown model or GPU raises ``ValueError`` listing the known ones; a TP
degree that is not profiled raises ``ValueError``.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

DATA_ENV = "CASCADE_DATA_DIR"
_MS = 1e-3


def data_dir() -> Path:
    """The shared data directory: ``$CASCADE_DATA_DIR`` or ``<repo>/../shared/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Architecture facts the cost model and the KV-cache sizing need."""

    name: str
    profile_dir: str  # directory name under compute/<gpu>/meta-llama/ ("" = none)
    n_layers: int
    n_head: int
    n_kv_head: int
    n_embd: int
    n_params: float  # parameters (for weight memory)
    dtype_bytes: int = 2

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def kv_bytes_per_token(self, tp: int) -> float:
        """K and V bytes one token occupies on one GPU of a TP-``tp`` replica."""
        kv_heads = max(1.0, self.n_kv_head / tp)
        return 2.0 * self.n_layers * kv_heads * self.head_dim * self.dtype_bytes

    def weight_bytes(self, tp: int) -> float:
        return self.n_params * self.dtype_bytes / tp


MODELS: dict[str, ModelShape] = {
    m.name: m
    for m in (
        ModelShape("llama-2-7b", "Llama-2-7b-hf", 32, 32, 32, 4096, 6.74e9),
        ModelShape("llama-2-70b", "Llama-2-70b-hf", 80, 64, 8, 8192, 69.0e9),
        ModelShape("llama-3-8b", "Meta-Llama-3-8B", 32, 32, 8, 4096, 8.03e9),
        ModelShape("llama-3-70b", "Meta-Llama-3-70B", 80, 64, 8, 8192, 70.6e9),
    )
}


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str  # "a100" / "h100" (profile directory)
    memory_bytes: float
    network_dir: str  # under network/


GPUS: dict[str, GpuSpec] = {
    "a100": GpuSpec("a100", 80 * 2**30, "a100_dgx"),
    "h100": GpuSpec("h100", 80 * 2**30, "h100_dgx"),
}


def model_shape(name: str) -> ModelShape:
    key = name.lower().removeprefix("meta-llama/").replace("-hf", "").replace("meta-", "")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[key]


def gpu_spec(name: str) -> GpuSpec:
    key = name.lower().replace("nvidia-", "").split("-")[0]
    if key not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; known: {sorted(GPUS)}")
    return GPUS[key]


@dataclass(frozen=True, slots=True)
class AttentionFit:
    """Attention cost per layer (seconds), fitted to the profile by least squares.

    prefill (one request, chunk c after k cached tokens):
        t = p0 + p1·c + p2·c·(k + c/2)          (FLOPs ∝ c·(k + c/2))
    decode (a batch of b sequences holding K KV tokens in all):
        t = d0 + d1·b + d2·K                    (memory bound: reads K tokens)
    ``cv_prefill`` / ``cv_decode``: median std/mean of the profile rows (the spread
    of one measurement). ``r2_*``: goodness of fit on the A100 profile.
    """

    p0: float
    p1: float
    p2: float
    d0: float
    d1: float
    d2: float
    cv_prefill: float
    cv_decode: float
    r2_prefill: float
    r2_decode: float

    def scaled(self, compute: float, memory: float) -> AttentionFit:
        """Scale the size-dependent terms: ``compute`` multiplies the prefill work
        terms, ``memory`` the per-sequence and per-KV-token decode terms. Fixed
        launch costs (p0, d0) are kept."""
        return AttentionFit(
            self.p0, self.p1 * compute, self.p2 * compute,
            self.d0, self.d1 * memory, self.d2 * memory,
            self.cv_prefill, self.cv_decode, self.r2_prefill, self.r2_decode,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class StepProfile:
    """Per-step costs of one (model, GPU, TP) combination, in seconds.

    ``linear_mean[n]`` / ``linear_var[n]``: the whole forward pass's non-attention
    ops for a step of ``n`` tokens (all layers, plus embedding, plus TP all-reduces),
    for n in [0, len - 1]; beyond the table the caller extrapolates linearly with
    ``linear_slope`` (s per token; the profile is compute bound there).
    Layers are taken as perfectly correlated within a step (the same kernel on the
    same GPU state): a step's std is ``n_layers`` times one layer's std, not
    √n_layers times. ``attention`` is per layer. ``cpu_*``: per-step CPU overhead
    ``cpu_a + cpu_b · batch_size``.
    """

    model: ModelShape
    gpu: GpuSpec
    tp: int
    linear_mean: FloatArray
    linear_var: FloatArray
    linear_slope: float
    attention: AttentionFit
    cpu_a: float
    cpu_b: float

    @property
    def max_tokens(self) -> int:
        return int(self.linear_mean.size - 1)


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"profile data not found: {path} (set ${DATA_ENV})")
    return path


def _read_csv(path: Path) -> dict[str, NDArray[Any]]:
    """Read a profile CSV into columns (pandas is a dependency; imported lazily)."""
    import pandas as pd

    frame = pd.read_csv(_require(path))
    return {str(c): frame[c].to_numpy() for c in frame.columns}


_LINEAR_OPS = (
    "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
    "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add",
)  # fmt: skip


def _dense(grid: FloatArray, values: FloatArray, n_max: int) -> FloatArray:
    """Values on 0..n_max by linear interpolation over ``grid`` (0 tokens → 0)."""
    xs = np.concatenate(([0.0], grid))
    ys = np.concatenate(([0.0], values))
    out: FloatArray = np.interp(np.arange(n_max + 1, dtype=np.float64), xs, ys)
    return out


@functools.cache
def _attention_fit_a100(root: Path) -> AttentionFit:
    cols = _read_csv(root / "profiles/vidur/legacy_a100/attention.csv")
    is_prefill = cols["is_prefill"].astype(bool)
    reshape = (
        cols["time_stats.attn_input_reshape.mean"] + cols["time_stats.attn_output_reshape.mean"]
    )

    def fit(x: FloatArray, y: FloatArray) -> tuple[FloatArray, float]:
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        resid = y - x @ coef
        r2 = 1.0 - float(resid @ resid) / float(((y - y.mean()) ** 2).sum())
        return np.asarray(coef, dtype=np.float64), r2

    c = cols["prefill_chunk_size"][is_prefill].astype(np.float64)
    k = cols["kv_cache_size"][is_prefill].astype(np.float64)
    y = (cols["time_stats.attn_prefill.mean"][is_prefill] + reshape[is_prefill]) * _MS
    pc, pr2 = fit(np.column_stack([np.ones_like(c), c, c * (k + c / 2)]), y)
    sd = cols["time_stats.attn_prefill.std"][is_prefill] * _MS
    cvp = float(np.median(sd / np.maximum(y, 1e-12)))

    dmask = ~is_prefill
    b = cols["batch_size"][dmask].astype(np.float64)
    kk = cols["kv_cache_size"][dmask].astype(np.float64) * b  # KV tokens in the batch
    yd = (cols["time_stats.attn_decode.mean"][dmask] + reshape[dmask]) * _MS
    dc, dr2 = fit(np.column_stack([np.ones_like(b), b, kk]), yd)
    sdd = cols["time_stats.attn_decode.std"][dmask] * _MS
    cvd = float(np.median(sdd / np.maximum(yd, 1e-12)))
    p = [max(float(v), 0.0) for v in pc]
    d = [max(float(v), 0.0) for v in dc]
    return AttentionFit(p[0], p[1], p[2], d[0], d[1], d[2], cvp, cvd, pr2, dr2)


def _linear_per_layer(root: Path, gpu: str, model: ModelShape, tp: int) -> tuple[FloatArray, ...]:
    path = root / "profiles/vidur/compute" / gpu / "meta-llama" / model.profile_dir / "mlp.csv"
    cols = _read_csv(path)
    tps = cols["num_tensor_parallel_workers"]
    if tp not in set(int(t) for t in tps):
        raise ValueError(f"TP {tp} not profiled for {model.name} on {gpu}: {sorted(set(tps))}")
    sel = tps == tp
    n = cols["num_tokens"][sel].astype(np.float64)
    order = np.argsort(n, kind="stable")
    n = n[order]
    mean = sum(cols[f"time_stats.{op}.mean"][sel][order] for op in _LINEAR_OPS) * _MS
    # op spreads add in quadrature within a layer (different kernels, independent noise)
    var = sum(cols[f"time_stats.{op}.std"][sel][order] ** 2 for op in _LINEAR_OPS) * _MS**2
    emb = cols["time_stats.emb.mean"][sel][order] * _MS
    emb_var = cols["time_stats.emb.std"][sel][order] ** 2 * _MS**2
    # duplicated num_tokens rows: average them
    uniq, inv = np.unique(n, return_inverse=True)
    cnt = np.bincount(inv).astype(np.float64)
    agg = [np.bincount(inv, weights=a) / cnt for a in (mean, var, emb, emb_var)]
    return (uniq, *agg)


def _all_reduce(root: Path, gpu: GpuSpec, tp: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(size bytes, mean s, var s²) of one all-reduce among ``tp`` workers."""
    cols = _read_csv(root / "profiles/vidur/network" / gpu.network_dir / "all_reduce.csv")
    # one node, all ranks on NVSwitch (the a100 file also holds 1-device-per-node runs)
    sel = (cols["num_workers"] == tp) & (cols["devices_per_node"] == tp)
    if not sel.any():
        raise ValueError(f"no all-reduce profile for {tp} workers on {gpu.name}")
    size = cols["size"][sel].astype(np.float64)
    mean = cols["time_stats.all_reduce.mean"][sel] * _MS
    var = cols["time_stats.all_reduce.std"][sel] ** 2 * _MS**2
    uniq, inv = np.unique(size, return_inverse=True)
    cnt = np.bincount(inv).astype(np.float64)
    return uniq, np.bincount(inv, weights=mean) / cnt, np.bincount(inv, weights=var) / cnt


def _cpu_overhead(root: Path) -> tuple[float, float]:
    cols = _read_csv(root / "profiles/vidur/legacy_a100/cpu_overheads.csv")
    b = cols["batch_size"].astype(np.float64)
    y = (
        sum(
            cols[f"{c}_mean"]
            for c in ("schedule", "sampler_e2e", "prepare_inputs_e2e", "process_model_outputs")
        )
        * _MS
    )
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones_like(b), b]), y, rcond=None)
    return max(float(coef[0]), 0.0), max(float(coef[1]), 0.0)


def _scale_ratios(root: Path, gpu: str) -> tuple[float, float]:
    """(compute, memory) time ratios of ``gpu`` to the A100, measured on the MLP ops
    of Llama-2-70B at TP 1: at 4096 tokens (compute bound) and at 1 token (weight
    reads, memory bound). 1.0 for the A100 itself."""
    if gpu == "a100":
        return 1.0, 1.0
    shape = MODELS["llama-2-70b"]
    here = _linear_per_layer(root, gpu, shape, 1)
    ref = _linear_per_layer(root, "a100", shape, 1)
    return float(here[1][-1] / ref[1][-1]), float(here[1][0] / ref[1][0])


@functools.cache
def load_step_profile(
    model: str, gpu: str, tp: int, *, max_tokens: int = 16384, root: Path | None = None
) -> StepProfile:
    """Build the ``StepProfile`` of ``model`` on ``gpu`` at TP ``tp`` (memoised)."""
    root = data_dir() if root is None else root
    shape, spec = model_shape(model), gpu_spec(gpu)
    if tp < 1:
        raise ValueError(f"tp must be >= 1, got {tp}")
    if not shape.profile_dir:
        raise ValueError(f"model {shape.name} has no GPU profile")
    n, mean, var, emb, emb_var = _linear_per_layer(root, spec.name, shape, tp)
    n_max = int(max(max_tokens, n[-1]))
    layer_mean = _dense(n, mean, n_max)
    layer_var = _dense(n, var, n_max)
    total_mean = shape.n_layers * layer_mean + _dense(n, emb, n_max)
    # layers perfectly correlated within a step: std scales with n_layers
    total_var = shape.n_layers**2 * layer_var + _dense(n, emb_var, n_max)
    if tp > 1:
        sizes, ar_mean, ar_var = _all_reduce(root, spec, tp)
        msg = np.arange(n_max + 1, dtype=np.float64) * shape.n_embd * shape.dtype_bytes
        ar_m = np.interp(msg, sizes, ar_mean)
        ar_v = np.interp(msg, sizes, ar_var)
        ar_m[0] = ar_v[0] = 0.0
        total_mean += 2 * shape.n_layers * ar_m  # after attention and after the MLP
        total_var += (2 * shape.n_layers) ** 2 * ar_v
    # beyond the profile, extend linearly with the slope of its last quarter
    hi = int(n[-1])
    lo = int(0.75 * hi)
    slope = float((total_mean[hi] - total_mean[lo]) / max(hi - lo, 1))
    if n_max > hi:
        total_mean[hi + 1 :] = total_mean[hi] + slope * np.arange(1, n_max - hi + 1)
        total_var[hi + 1 :] = total_var[hi] * (total_mean[hi + 1 :] / total_mean[hi]) ** 2
    # attention: profile shape is 64 q / 8 kv heads of dim 128 at TP 2
    q_scale = (shape.n_head / tp) / 32.0 * (shape.head_dim / 128.0)
    kv_scale = (max(1.0, shape.n_kv_head / tp)) / 4.0 * (shape.head_dim / 128.0)
    compute_ratio, memory_ratio = _scale_ratios(root, spec.name)
    attn = _attention_fit_a100(root).scaled(q_scale * compute_ratio, kv_scale * memory_ratio)
    cpu_a, cpu_b = _cpu_overhead(root)
    return StepProfile(
        model=shape, gpu=spec, tp=tp,
        linear_mean=total_mean, linear_var=total_var, linear_slope=slope,
        attention=attn, cpu_a=cpu_a, cpu_b=cpu_b,
    )  # fmt: skip


def kv_blocks(
    model: ModelShape,
    gpu: GpuSpec,
    tp: int,
    *,
    gpu_memory_utilization: float = 0.9,
    block_size: int = 16,
    activation_reserve_bytes: float = 2 * 2**30,
) -> int:
    """KV-cache blocks of one replica, as vLLM sizes them: the usable memory per GPU
    (utilisation × capacity − weights/TP − activation reserve) over the bytes of one
    block. Raises ``ValueError`` when the weights do not fit."""
    free = (
        gpu.memory_bytes * gpu_memory_utilization
        - model.weight_bytes(tp)
        - activation_reserve_bytes
    )
    per_block = model.kv_bytes_per_token(tp) * block_size
    if free <= per_block:
        raise ValueError(
            f"{model.name} at TP {tp} does not fit on {gpu.name} "
            f"({model.weight_bytes(tp) / 2**30:.1f} GiB of weights per GPU)"
        )
    return math.floor(free / per_block)
