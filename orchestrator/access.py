"""Who may call what: the ingress's bearer token and the controller's caller secret.

Two guards, both pure (no Ray), used by the Ray adapters:

* **Ingress bearer token** (``auth.token_env`` in the config; off by default).
  ``BearerAuthMiddleware`` is a plain ASGI middleware around the ingress's FastAPI
  app: every HTTP request to the app (``/v1/models``, completions, chat, and any
  other route Ray's ingress has) needs ``Authorization: Bearer <token>``, else it
  gets 401 with an OpenAI-style error body and ``WWW-Authenticate: Bearer``.
  Serve's own health routes (``/-/healthz``, ``/-/routes``) are answered by
  Serve's HTTP proxy before the app, so they stay open, as load balancers and
  probes expect. CORS preflights (``OPTIONS``) carry no credentials by design and
  pass to Ray's CORS middleware. The token comes from the environment variable the
  config names (``resolve_token``); a configured but missing or empty variable is
  an error naming it, raised when the ingress starts, never a silently open API.
  Tokens are compared in constant time (``hmac.compare_digest`` of SHA-256
  digests, so not even the length leaks).

* **Controller caller secret.** The controller's mutating calls (``push``,
  ``report_arrivals``, ``pin``) take a ``secret``; ``CallerGuard.check`` refuses a
  call without the deployment's secret with ``ControllerAccessError`` (a
  ``PermissionError``), counts it per method and logs it once per method. Ray
  has no authorization between the jobs and actors of one cluster, so this keeps
  out *accidental and foreign* callers (an old script, another app that found the
  actor's name, a test harness); it does not stop a malicious job with access to
  the cluster, which can read the secret where Cascade's actors read it (see
  docs/deploy.md, "Security").
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

logger = logging.getLogger("cascade.access")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEME = "bearer"

# ASGI types, spelled out (no starlette import in the pure core)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# ---- the ingress's bearer token ----------------------------------------------------------
def resolve_token(token_env: str, environ: Mapping[str, str], where: str = "the ingress") -> str:
    """The API token from ``environ[token_env]``. Raises ``ValueError`` naming the
    variable when it is missing or empty (the config asked for auth: serving
    without it would leave the API open)."""
    value = environ.get(token_env)
    if value is None:
        raise ValueError(
            f"auth.token_env is {token_env!r} but {token_env} is not set in the environment "
            f"of {where}: set it to the API token (on Kubernetes the rendered manifests take it "
            "from a Secret), or remove auth from the config to serve without a token"
        )
    if not value.strip():
        raise ValueError(f"auth.token_env is {token_env!r} but {token_env} is empty in {where}")
    return value.strip()


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def bearer_refusal(authorization: str | None, token: str) -> str | None:
    """Why a request with this ``Authorization`` header is refused, or ``None``
    when it carries ``Bearer <token>`` (scheme case-insensitive, RFC 6750).
    The token comparison takes the same time whatever the header holds."""
    if not authorization or not authorization.strip():
        return "missing Authorization header: send 'Authorization: Bearer <API token>'"
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != _SCHEME or not given.strip():
        return "the Authorization header must be 'Bearer <API token>'"
    if not hmac.compare_digest(_digest(given.strip()), _digest(token)):
        return "invalid API token"
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def unauthorized_body(message: str) -> bytes:
    """The 401 body: OpenAI-style, like the ingress's other errors."""
    error = {"message": message, "type": "AuthenticationError", "code": 401}
    return json.dumps({"error": error}).encode()


class BearerAuthMiddleware:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer <token>``
    (see the module docstring). ``token_env`` is read when the app is built in
    the ingress process (``ValueError`` naming it when unset); ``environ`` is for
    tests. ``refused`` counts the 401s sent."""

    def __init__(
        self, app: ASGIApp, token_env: str, environ: Mapping[str, str] | None = None
    ) -> None:
        import os

        self.app = app
        self._token = resolve_token(token_env, os.environ if environ is None else environ)
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)  # lifespan; CORS preflight
            return
        reason = bearer_refusal(_header(scope, b"authorization"), self._token)
        if reason is None:
            await self.app(scope, receive, send)
            return
        self.refused += 1
        body = unauthorized_body(reason)
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="cascade"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# ---- the controller's caller secret --------------------------------------------------------
def new_secret() -> str:
    """A fresh per-deployment controller secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


class ControllerAccessError(PermissionError):
    """A mutating controller call without the deployment's secret."""


class CallerGuard:
    """Checks the ``secret`` of the controller's mutating calls (see the module
    docstring). An empty ``expected`` refuses every call (fail closed).
    ``refused`` counts refusals per method; ``on_refuse(method)``, when given, is
    called on each refusal (the controller exports it as a Prometheus counter);
    an error it raises is swallowed: the refusal stands either way."""

    def __init__(self, expected: str, on_refuse: Callable[[str], None] | None = None) -> None:
        self._expected = _digest(expected) if expected else None
        self.refused: dict[str, int] = {}
        self._on_refuse = on_refuse

    def accepts(self, secret: object) -> bool:
        """Whether ``secret`` is this deployment's (constant time; counts nothing)."""
        if self._expected is None or not isinstance(secret, str) or not secret:
            return False
        return hmac.compare_digest(_digest(secret), self._expected)

    def check(self, method: str, secret: object) -> None:
        """Return if ``secret`` is right; else count, log once per method and raise
        ``ControllerAccessError``."""
        if self.accepts(secret):
            return
        first = method not in self.refused
        self.refused[method] = self.refused.get(method, 0) + 1
        if self._on_refuse is not None:
            with contextlib.suppress(Exception):  # metrics never decide access
                self._on_refuse(method)
        why = "no secret" if not secret else "a wrong secret"
        if first:  # once per method: a looping foreign caller must not flood the log
            logger.warning(
                "refused controller call %s with %s (logged once per method; "
                "counted in status()['refused_calls'])", method, why,
            )  # fmt: skip
        raise ControllerAccessError(
            f"Cascade controller refused {method}() with {why}: its mutating calls "
            "(push, report_arrivals, pin) are for Cascade's own replicas, ingress and CLI, "
            "which pass this deployment's secret (docs/deploy.md, Security)"
        )
