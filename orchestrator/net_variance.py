"""σ²_net per pool: the interconnect term of the optimizer, from measured profiles.

A tensor-parallel replica all-reduces its activations twice per layer every step;
how long that takes, and how much it varies, depends on the links between its
GPUs. The optimizer's ``η_p`` (``ProblemInputs.net_var_s2``, s²) is the variance
of one replica's per-step all-reduce time at full load; ``σ²_net = η ρ²``.

For a pool (``pools[].tp_size``, ``pools[].interconnect``, ``pools[].accelerator``)
and the served model (``model.perf_model``, or the pool's ``engine_overrides``):

* ``tp_size == 1``: no collective, ``η = 0``.
* the all-reduce profile (vidur's measured ``all_reduce.csv`` under
  ``<data>/profiles/vidur/network/``; ``replicas.profiles.data_dir``):
  ``nvlink`` → ``<gpu>_dgx`` with all ``tp`` ranks on one NVSwitch node;
  ``pcie`` → ``<gpu>_pairwise_nvlink`` at 4 ranks (pairs NVLinked, the pairs talk
  over PCIe: a PCIe-bound ring), ring-scaled to ``tp`` ranks for TP 2 and 8
  (``AllReduceProfile.ring_scaled``; that node has no 8-rank layout, and its
  2-rank layout is one NVLinked pair); ``cross_node`` → ``<gpu>_dgx`` with the
  ranks split over two nodes (profiled on the A100 DGX only).
* a decode step at full load: ``max_num_seqs`` tokens (one per running
  sequence), messages of ``tokens · hidden · dtype bytes``, batch-churn CV 0.5
  (``optim.net_variance_s2``).

The kind of link can also be *observed*: replicas on GPUs sample NVML's NVLink
and PCIe throughput (``GpuSample``). ``observed_interconnect`` says ``nvlink``
when a pool's TP replicas move bytes over NVLink and ``pcie`` when they are busy
and move none over NVLink but some over PCIe; the controller then uses that
kind instead of the configured one (NVML cannot see a NIC: ``cross_node`` stays).

Failure contract: ``pool_net_variance_s2`` raises ``ValueError`` (unknown GPU or
model, a layout the profiles lack) or ``FileNotFoundError`` (no profile file),
naming the pool. ``NetVariance`` — what the controller uses — never raises: a pool
it cannot model gets ``η = 0`` and a note saying why (``NetVariance.notes``),
because a controller must start where the profiles are not shipped (e.g. a
cluster without ``../shared/data``); ``cascade bench``/tests call the raising form.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optim.all_reduce_profile import AllReduceProfile
from optim.interconnect import net_variance_s2
from optim.specs import Interconnect
from orchestrator.config import CascadeConfig, PoolConfig
from replicas.profiles import data_dir, gpu_spec, model_shape
from replicas.telemetry import ReplicaSnapshot

PCIE_MEASURED_TP = 4  # the one PCIe-bound layout of the pairwise-NVLink profiles
TOKENS_CV = 0.5  # batch-size churn of a full decode batch (optim.net_variance_s2)


def all_reduce_profile(
    accelerator: str, interconnect: Interconnect, tp_size: int, root: Path | None = None
) -> AllReduceProfile:
    """The measured all-reduce times for ``tp_size`` ranks of ``accelerator`` on
    ``interconnect`` (see the module docstring for the mapping).

    Raises:
        ValueError: ``tp_size < 2``, unknown accelerator, or a layout not profiled.
        FileNotFoundError: the profile file is missing.
    """
    if tp_size < 2:
        raise ValueError(f"an all-reduce needs tp_size >= 2, got {tp_size}")
    gpu = gpu_spec(accelerator).name
    net = (data_dir() if root is None else root) / "profiles" / "vidur" / "network"
    if interconnect == "nvlink":
        return AllReduceProfile.read(net / f"{gpu}_dgx" / "all_reduce.csv", tp_size, tp_size)
    if interconnect == "pcie":
        measured = AllReduceProfile.read(
            net / f"{gpu}_pairwise_nvlink" / "all_reduce.csv", PCIE_MEASURED_TP, PCIE_MEASURED_TP
        )
        return measured if tp_size == PCIE_MEASURED_TP else measured.ring_scaled(tp_size)
    if interconnect == "cross_node":
        if tp_size % 2:
            raise ValueError(f"cross_node needs an even tp_size (two nodes), got {tp_size}")
        return AllReduceProfile.read(net / f"{gpu}_dgx" / "all_reduce.csv", tp_size, tp_size // 2)
    raise ValueError(f"unknown interconnect {interconnect!r}")


def pool_net_variance_s2(
    config: CascadeConfig,
    pool: PoolConfig,
    *,
    interconnect: Interconnect | None = None,
    root: Path | None = None,
) -> float:
    """``η_p`` of ``pool`` in s² (0 for TP 1); ``interconnect`` overrides the
    configured kind (an NVML observation). Raises as the module docstring says,
    with the pool's name in the message."""
    if pool.tp_size == 1:
        return 0.0
    kind = interconnect or pool.interconnect
    overrides: dict[str, Any] = dict(pool.engine_overrides)
    try:
        shape = model_shape(str(overrides.get("perf_model", config.model.perf_model)))
        profile = all_reduce_profile(pool.accelerator, kind, pool.tp_size, root)
    except (ValueError, FileNotFoundError) as exc:
        raise type(exc)(f"pool {pool.name!r} (tp_size {pool.tp_size}, {kind}): {exc}") from None
    return net_variance_s2(
        profile,
        hidden_size=shape.n_embd,
        num_layers=shape.n_layers,
        tokens_per_step=float(overrides.get("max_num_seqs", config.model.max_num_seqs)),
        tokens_cv=TOKENS_CV,
        bytes_per_element=shape.dtype_bytes,
    )


def observed_interconnect(
    snapshots: Iterable[ReplicaSnapshot], configured: Interconnect
) -> Interconnect:
    """The link a pool's TP replicas use, from their NVML samples (module docstring);
    ``configured`` when no replica reports GPU samples or the config says cross_node."""
    if configured == "cross_node":
        return configured
    samples = [s.gpu for s in snapshots if s.gpu is not None]
    if not samples:
        return configured
    if any(g.nvlink_bytes_per_s > 0 for g in samples):
        return "nvlink"
    if any(g.pcie_bytes_per_s > 0 and g.utilization > 0 for g in samples):
        return "pcie"
    return configured


class NetVariance:
    """Per pool and link kind, ``η_p`` computed once (profiles are read once per
    pool and kind); never raises (module docstring): ``notes[pool]`` says why a
    pool of TP > 1 got 0, ``kinds[pool]`` the link kind last used."""

    def __init__(self, config: CascadeConfig, root: Path | None = None) -> None:
        self._config = config
        self._root = root
        self._cache: dict[tuple[str, str], tuple[float, str | None]] = {}
        self.notes: dict[str, str] = {}
        self.kinds: dict[str, Interconnect] = {p.name: p.interconnect for p in config.pools}

    def values(self, latest: Iterable[ReplicaSnapshot] = ()) -> list[float]:
        """``η_p`` (s²) per configured pool, in config order; the link kind of each
        TP pool is what its replicas' NVML samples in ``latest`` show, if any."""
        snaps = list(latest)
        out = []
        for pool in self._config.pools:
            if pool.tp_size == 1:
                out.append(0.0)
                continue
            mine = [s for s in snaps if s.pool == pool.name]
            kind = observed_interconnect(mine, pool.interconnect)
            self.kinds[pool.name] = kind
            key = (pool.name, kind)
            if key not in self._cache:
                try:
                    eta = pool_net_variance_s2(
                        self._config, pool, interconnect=kind, root=self._root
                    )
                    self._cache[key] = (eta, None)
                except (ValueError, FileNotFoundError) as exc:
                    self._cache[key] = (0.0, f"net variance 0 (no profile): {exc}")
            eta, note = self._cache[key]
            if note is None:
                self.notes.pop(pool.name, None)
            else:
                self.notes[pool.name] = note
            out.append(eta)
        return out
