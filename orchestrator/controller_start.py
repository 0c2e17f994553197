"""Starting the controller actor, and the deployment's controller secret.

``ensure_controller(config)`` brings the detached controller
(``orchestrator.controller_actor``) to ``config``: reuse, create or replace, and
says which. ``build_app`` and ``cascade up`` call it; both then hand the secret it
returns to the deployments they build (the replicas' and the ingress's bind
kwargs), which pass it with every mutating call.

The secret (``cluster_secret``) is made once per Ray cluster, stored in Ray's
internal KV under the ``cascade`` namespace (``SECRET_KEY``), and given to each
controller as a constructor argument (so Ray's restarts keep it). It survives a
controller replaced for another config, so the replicas of a running app keep
reporting to the new controller; ``cascade down`` deletes it with the checkpoint.
Anything that can run code on the cluster can read it: it keeps out accidental and
foreign callers, not a malicious job (``orchestrator.access``; docs/deploy.md,
"Security").
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.experimental import internal_kv

from orchestrator.access import new_secret
from orchestrator.config import CascadeConfig
from orchestrator.controller_actor import ControllerActor
from orchestrator.controller_state import (
    config_change_message,
    config_fingerprint,
    describe_config,
)
from replicas.names import CONTROLLER_NAME, CONTROLLER_NAMESPACE

logger = logging.getLogger("cascade.controller")
SECRET_KEY = "controller-secret"
_REPLACE_TIMEOUT_S = 30.0  # for the old actor to die and free the name


def cluster_secret(*, create: bool = True) -> str | None:
    """This cluster's controller secret (see the module docstring); made and
    stored on first use when ``create``, else ``None`` when there is none.
    Concurrent first uses agree: only the first write lands."""
    data = internal_kv._internal_kv_get(SECRET_KEY, namespace=CONTROLLER_NAMESPACE)
    if data is None and create:
        internal_kv._internal_kv_put(
            SECRET_KEY, new_secret().encode(), overwrite=False, namespace=CONTROLLER_NAMESPACE
        )
        data = internal_kv._internal_kv_get(SECRET_KEY, namespace=CONTROLLER_NAMESPACE)
    return data.decode() if data else None


def delete_cluster_secret() -> None:
    """Forget the secret (``cascade down``): the next controller gets a new one."""
    internal_kv._internal_kv_del(SECRET_KEY, namespace=CONTROLLER_NAMESPACE)


@dataclass(frozen=True)
class ControllerStart:
    """What ``ensure_controller`` did: ``action`` is ``"created"``, ``"reused"`` or
    ``"replaced"``; ``message`` names both configs when it replaced one;
    ``secret`` is what the deployments must pass to the controller's mutating
    calls (never printed)."""

    actor: Any
    action: str
    message: str | None = None
    secret: str = field(default="", repr=False)


def _holds(actor: Any, secret: str, timeout_s: float) -> bool:
    try:
        return bool(ray.get(actor.verify_secret.remote(secret), timeout=timeout_s))
    except Exception:  # an older build without the method, dead, stuck
        return False


def ensure_controller(
    config: CascadeConfig, *, replace_timeout_s: float = _REPLACE_TIMEOUT_S
) -> ControllerStart:
    """Bring the detached controller to ``config`` and start its loop.

    A running controller with the same ``config_fingerprint`` that holds this
    cluster's secret is reused as it is. One of another config (or one that does
    not answer ``config_info`` within ``replace_timeout_s``: an older build, or
    stuck; or one without the secret) is killed without restart and a new one is
    created once its name is free; the message naming both configs is logged and
    returned. Raises ``RuntimeError`` if the old actor does not go away, or if
    another process created a controller of yet another config meanwhile.
    """
    secret = cluster_secret()
    assert secret is not None  # made above when missing
    new: dict[str, Any] = {
        "name": config.name,
        "fingerprint": config_fingerprint(config),
        "pools": [p.name for p in config.pools],
    }
    action, message = "created", None
    try:
        old_actor = ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
    except ValueError:  # none (a dead detached actor frees its name)
        old_actor = None
    if old_actor is not None:
        old: dict[str, Any] | None
        try:
            answer: Any = ray.get(old_actor.config_info.remote(), timeout=replace_timeout_s)
            old = dict(answer)
        except Exception:  # no such method, dead, stuck: cannot be trusted
            old = None
        if old is not None and old["fingerprint"] == new["fingerprint"]:
            if _holds(old_actor, secret, replace_timeout_s):
                ray.get(old_actor.ready.remote())
                return ControllerStart(old_actor, "reused", secret=secret)
            message = (
                f"the running Cascade controller of config {describe_config(**old)} does not "
                "hold this cluster's controller secret (an older build, or `cascade down` "
                "deleted it); replacing it with one that does"
            )
        else:
            message = config_change_message(old, new)
        logger.warning("%s", message)
        ray.kill(old_actor, no_restart=True)
        _wait_name_free(replace_timeout_s)
        action = "replaced"
    actor = ControllerActor.options(  # type: ignore[attr-defined]
        name=CONTROLLER_NAME,
        namespace=CONTROLLER_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,  # a concurrent start of the same config shares one actor
    ).remote(config.model_dump(mode="json"), uuid.uuid4().hex, secret)
    info = ray.get(actor.config_info.remote())
    if info["fingerprint"] != new["fingerprint"]:
        raise RuntimeError(
            "another process started a Cascade controller of config "
            f"{describe_config(info['name'], info['fingerprint'], info['pools'])} while this "
            f"one was starting {describe_config(new['name'], new['fingerprint'], new['pools'])}"
        )
    return ControllerStart(actor, action, message, secret=secret)


def _wait_name_free(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE)
        except ValueError:
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"the old controller {CONTROLLER_NAMESPACE}/{CONTROLLER_NAME} did not exit within "
        f"{timeout_s:.0f} s of being killed"
    )
