"""The two Cascade configs one ``cascade bench ab`` run compares (no Ray here).

``--against-config B`` compares Cascade under ``--config A`` with Cascade under
``B``; ``--telemetry-off`` is the same comparison with the variant derived from
``--config`` (``loops.telemetry: false``). Either way the result is a
``ConfigPair``: ``a`` is the baseline, ``b`` the variant, and the ratio row is
``b / a`` per metric. Two Cascade deployments cannot share one Ray cluster (one
controller each), so ``--interleave K`` redeploys one of them per round in ABBA
order (``ab._run_alternating``).

Both configs must describe the same pool shape (``pool_shape_differences``):
the same pools and the same model and engine settings, except the model's
scheduling policy keys (``POLICY_MODEL_KEYS``). Routing, admission, SLOs and
loops may differ: that is what such a run compares. A run on two different
pools would measure the hardware, not the policy, so it is refused before
anything is deployed, with each differing key and both values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config import CascadeConfig, load_config

# the label of --config's system when no --against-config names it (the rows
# of a plain Cascade-vs-stock run, and the telemetry-on side of --telemetry-off)
CASCADE = "cascade"
TELEMETRY_OFF = "cascade-telemetry-off"
# model keys that choose how the engine schedules, not what it serves: the
# knobs an A/B of two configs on one pool is for
POLICY_MODEL_KEYS = frozenset(
    {"prefill_budget", "prefill_min_tokens", "kv_eviction", "first_chunk"}
)


@dataclass(frozen=True)
class ConfigPair:
    """Two Cascade configs measured against each other on the same pool.

    ``config_a`` / ``config_b`` are YAML file paths (what ``cascade up`` reads);
    ``label_a`` / ``label_b`` name their rows, result files and CDF curves (file
    stems: no ``/``); ``ratio_name`` names the ``b / a`` ratio row.
    """

    label_a: str
    config_a: str
    label_b: str
    config_b: str
    ratio_name: str

    @property
    def labels(self) -> tuple[str, str]:
        """(baseline, variant): the deploy order of even rounds."""
        return (self.label_a, self.label_b)

    @property
    def configs(self) -> dict[str, str]:
        """label -> config file."""
        return {self.label_a: self.config_a, self.label_b: self.config_b}


def load_cascade_config(flag: str, path: str) -> CascadeConfig:
    """Load the Cascade YAML file that ``flag`` names.

    Raises ``ValueError`` naming the flag: no such file, invalid YAML (with
    line and column), or invalid content (with the key path).
    """
    if not Path(path).is_file():
        raise ValueError(f"{flag}: no such file: {path}")
    try:
        return load_config(path)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def pool_shape(cfg: CascadeConfig) -> dict[str, Any]:
    """What must match between the two sides: every pool field, and every
    model field but ``POLICY_MODEL_KEYS`` (plain JSON data)."""
    model = cfg.model.model_dump(mode="json")
    return {
        "model": {k: v for k, v in model.items() if k not in POLICY_MODEL_KEYS},
        "pools": [p.model_dump(mode="json") for p in cfg.pools],
    }


def pool_shape_differences(a: CascadeConfig, b: CascadeConfig) -> list[str]:
    """``"<key.path>: <a> vs <b>"`` for each pool-shape value that differs
    (empty: the same pool), in key order."""
    out: list[str] = []
    _diff("", pool_shape(a), pool_shape(b), out)
    return out


def _diff(path: str, x: Any, y: Any, out: list[str]) -> None:
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(set(x) | set(y)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in x or key not in y:
                out.append(f"{sub}: {x.get(key, '(absent)')!r} vs {y.get(key, '(absent)')!r}")
            else:
                _diff(sub, x[key], y[key], out)
    elif isinstance(x, list) and isinstance(y, list) and path == "pools" and len(x) != len(y):
        out.append(f"pools: {len(x)} pool(s) vs {len(y)}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _diff(f"{path}[{i}]", u, v, out)
    elif x != y:
        out.append(f"{path}: {x!r} vs {y!r}")


def against_pair(config: str, cfg: CascadeConfig, against: str) -> ConfigPair:
    """``--config`` (baseline, already loaded as ``cfg``) vs ``--against-config``
    (variant). Labels are the file stems (``-a`` / ``-b`` appended when they are
    equal). Raises ``ValueError`` for a missing or invalid ``against`` file, and
    when the two pool shapes differ (every differing key named)."""
    other = load_cascade_config("--against-config", against)
    diffs = pool_shape_differences(cfg, other)
    if diffs:
        raise ValueError(
            f"--config {config} and --against-config {against} must run on the same pool "
            f"(only routing, admission, SLOs, loops and model {sorted(POLICY_MODEL_KEYS)} "
            f"may differ); they differ in: {'; '.join(diffs)}"
        )
    a, b = Path(config).stem, Path(against).stem
    if a == b:
        a, b = f"{a}-a", f"{b}-b"
    return ConfigPair(label_a=a, config_a=config, label_b=b, config_b=against,
                      ratio_name=f"{b}/{a}")  # fmt: skip


def telemetry_pair(config: str, cfg: CascadeConfig, out: Path) -> ConfigPair:
    """``--telemetry-off``: the baseline is ``cfg`` with ``loops.telemetry:
    false`` (written to ``out/telemetry-off.yaml``), the variant ``--config``
    itself; the ratio row ``telemetry on/off`` is the full-stack cost of
    Cascade's telemetry."""
    off = cfg.model_dump(mode="json")
    off["loops"]["telemetry"] = False
    path = out / "telemetry-off.yaml"
    path.write_text(yaml.safe_dump(off))
    return ConfigPair(label_a=TELEMETRY_OFF, config_a=str(path), label_b=CASCADE,
                      config_b=config, ratio_name="telemetry on/off")  # fmt: skip


def config_pair(config: str, cfg: CascadeConfig, *, against: str | None,
                telemetry_off: bool, out: Path) -> ConfigPair | None:  # fmt: skip
    """The pair the flags ask for, or None (Cascade alone vs stock routers).
    Raises ``ValueError`` when both flags are given."""
    if against is not None and telemetry_off:
        raise ValueError("--against-config and --telemetry-off: choose one (each names the "
                         "second Cascade config)")  # fmt: skip
    if against is not None:
        return against_pair(config, cfg, against)
    if telemetry_off:
        return telemetry_pair(config, cfg, out)
    return None
