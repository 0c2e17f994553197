"""What the controller actor knows about its own config and keeps across restarts (pure).

* ``config_fingerprint``: a stable id of a validated config (sha256 of its canonical
  JSON: defaults filled in, keys sorted), so two files that validate to the same
  config have the same fingerprint and any change in any field gives another one.
  ``ensure_controller`` compares it to decide between reusing the running controller
  and replacing it; ``cascade status`` shows it.
* ``ControllerCheckpoint``: the small state a restarted controller needs to carry on
  (the Plan version counter, the fitted cascade model, pins and replica targets,
  the per-class arrival estimators), as plain JSON. The actor writes one to Ray's
  internal KV every few steps and reads it back when Ray restarts it.

Only a restart of the *same* actor (same ``creation_id``, hence the same config)
restores the fitted state; any other controller that finds a checkpoint (a new
config, a new session on a Ray cluster that outlived the old one) takes only its
Plan version, so versions never go back, and says so.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.config import CascadeConfig

CHECKPOINT_KEY = "controller-checkpoint"
# A checkpoint is written once the Plan version has moved this many steps past the
# last one written (and after every pin). A restored controller resumes its version
# counter this far past the checkpoint: the versions published after the last write
# that landed are never handed out again.
CHECKPOINT_EVERY_STEPS = 4
_FINGERPRINT_SHOWN = 12  # hex digits shown to people; comparisons use all 64


def config_fingerprint(config: CascadeConfig) -> str:
    """sha256 (hex) of the config's canonical JSON (validated, defaults filled in)."""
    text = json.dumps(
        config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


def short_fingerprint(fingerprint: str) -> str:
    return fingerprint[:_FINGERPRINT_SHOWN] if fingerprint else "unknown"


def describe_config(name: str, fingerprint: str, pools: tuple[str, ...] | list[str]) -> str:
    """``'name' (fp 0123456789ab; pools a, b)``: how a config is named to people."""
    return f"{name!r} (fp {short_fingerprint(fingerprint)}; pools {', '.join(pools) or '-'})"


def config_change_message(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """The message printed and logged when a running controller of config ``old``
    (its ``config_info()``; ``None``: it did not answer) is replaced by one of
    ``new``."""
    before = (
        "a controller that did not report its config"
        if old is None
        else f"config {describe_config(old['name'], old['fingerprint'], old['pools'])}"
    )
    after = describe_config(new["name"], new["fingerprint"], new["pools"])
    return (
        f"the running Cascade controller has {before}; replacing it with one of config "
        f"{after}. Its fitted models, pins and replica targets start afresh; "
        "the Plan version continues."
    )


@dataclass(frozen=True)
class ControllerCheckpoint:
    """The controller actor's restartable state (see the module docstring).

    ``core``: ``Controller.state_dict()``; ``arrivals``: per class,
    ``DecayedWelford.to_dict()``; ``shapes``: per class, (mean prompt tokens, mean
    output tokens); ``time_s``: wall clock when written; ``restarts``: how many
    times this actor had been restored when it wrote it.
    """

    fingerprint: str
    config_name: str
    creation_id: str
    time_s: float
    steps: int
    restarts: int
    core: Mapping[str, Any]
    arrivals: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    shapes: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def plan_version(self) -> int:
        return int(self.core["version"])

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> ControllerCheckpoint:
        """Parse ``encode()``'s bytes; ``ValueError`` for anything malformed
        (the caller then starts without it)."""
        try:
            d = json.loads(data)
            ckpt = cls(
                fingerprint=str(d["fingerprint"]),
                config_name=str(d["config_name"]),
                creation_id=str(d["creation_id"]),
                time_s=float(d["time_s"]),
                steps=int(d["steps"]),
                restarts=int(d["restarts"]),
                core=dict(d["core"]),
                arrivals={str(k): dict(v) for k, v in d.get("arrivals", {}).items()},
                shapes={str(k): (float(v[0]), float(v[1])) for k, v in d.get("shapes", {}).items()},
            )
        except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed controller checkpoint: {exc!r}") from None
        version = ckpt.core.get("version")
        if not isinstance(version, int) or version < 0 or not math.isfinite(ckpt.time_s):
            raise ValueError(f"malformed controller checkpoint: version {version!r}")
        return ckpt
