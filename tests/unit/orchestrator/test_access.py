"""Who may call what (``orchestrator.access``): the ingress's bearer token, its ASGI
middleware, the controller's caller secret; the ``auth`` config section; the line
``cascade pin`` prints."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from orchestrator.access import (
    BearerAuthMiddleware,
    CallerGuard,
    ControllerAccessError,
    bearer_refusal,
    new_secret,
    resolve_token,
)
from orchestrator.config import parse_config
from orchestrator.pin_cli import pin_change

TOKEN = "s3cret-token-0123456789"
POOLS = [{"name": "llm", "accelerator": "CPU"}]


# ---- the bearer check (pure) ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (f"Bearer {TOKEN}", None),
        (f"bearer {TOKEN}", None),  # the scheme is case-insensitive (RFC 7235)
        (f"  Bearer   {TOKEN}  ", None),
        (None, "missing Authorization header"),
        ("", "missing Authorization header"),
        (TOKEN, "must be 'Bearer <API token>'"),
        (f"Basic {TOKEN}", "must be 'Bearer <API token>'"),
        ("Bearer ", "must be 'Bearer <API token>'"),
        ("Bearer wrong", "invalid API token"),
        (f"Bearer {TOKEN}x", "invalid API token"),
        (f"Bearer {TOKEN[:-1]}", "invalid API token"),
        ("Bearer s3cret-tökén", "invalid API token"),  # non-ASCII never raises
    ],
)
def test_bearer_refusal(header: str | None, reason: str | None) -> None:
    got = bearer_refusal(header, TOKEN)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


def test_the_token_comes_from_the_named_variable_or_a_clear_error() -> None:
    assert resolve_token("CASCADE_API_TOKEN", {"CASCADE_API_TOKEN": f" {TOKEN}\n"}) == TOKEN
    with pytest.raises(ValueError, match=r"CASCADE_API_TOKEN is not set in the environment of x"):
        resolve_token("CASCADE_API_TOKEN", {}, "x")
    with pytest.raises(ValueError, match="CASCADE_API_TOKEN is empty"):
        resolve_token("CASCADE_API_TOKEN", {"CASCADE_API_TOKEN": "  "})


# ---- the ASGI middleware ----------------------------------------------------------------------
def _call(mw: BearerAuthMiddleware, scope: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """(messages sent, whether the wrapped app ran) for one request."""
    sent: list[dict[str, Any]] = []
    ran = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        ran.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw.app = inner
    asyncio.run(mw(scope, receive, send))
    return sent, bool(ran)


def _scope(path: str, auth: str | None = None, method: str = "GET") -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if auth is not None:
        headers.append((b"Authorization", auth.encode()))  # any case: ASGI sends lower
    return {"type": "http", "method": method, "path": path, "headers": headers}


def _middleware() -> BearerAuthMiddleware:
    return BearerAuthMiddleware(None, token_env="TOK", environ={"TOK": TOKEN})  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/v1/completions", "/x"])
def test_every_route_needs_the_token(path: str) -> None:
    mw = _middleware()
    for auth in (None, "Bearer nope"):
        sent, ran = _call(mw, _scope(path, auth, "POST"))
        assert not ran
        start, body = sent
        assert start["status"] == 401
        headers = dict(start["headers"])
        assert headers[b"www-authenticate"].startswith(b"Bearer")
        assert headers[b"content-type"] == b"application/json"
        error = json.loads(body["body"])["error"]
        assert error["type"] == "AuthenticationError" and error["code"] == 401
        assert error["message"]
    assert mw.refused == 2
    sent, ran = _call(mw, _scope(path, f"Bearer {TOKEN}", "POST"))
    assert ran and sent[0]["status"] == 200 and mw.refused == 2


def test_lifespan_and_cors_preflight_pass_through() -> None:
    mw = _middleware()
    assert _call(mw, {"type": "lifespan"})[1]
    assert _call(mw, _scope("/v1/models", None, "OPTIONS"))[1]
    assert mw.refused == 0


def test_the_middleware_refuses_to_start_without_its_variable() -> None:
    with pytest.raises(ValueError, match="TOK is not set"):
        BearerAuthMiddleware(None, token_env="TOK", environ={})  # type: ignore[arg-type]


# ---- the controller's caller secret ----------------------------------------------------------
def test_the_guard_accepts_only_the_secret_and_counts_refusals() -> None:
    secret = new_secret()
    assert len(secret) >= 40 and secret != new_secret()
    guard = CallerGuard(secret)
    guard.check("push", secret)  # accepted: returns
    for wrong in ("", None, "x", secret + "x", 42):
        with pytest.raises(ControllerAccessError, match=r"refused push\(\)"):
            guard.check("push", wrong)
    with pytest.raises(PermissionError, match="wrong secret"):
        guard.check("pin", "nope")
    assert guard.refused == {"push": 5, "pin": 1}
    assert guard.accepts(secret) and not guard.accepts("nope")
    assert guard.refused == {"push": 5, "pin": 1}  # accepts() counts nothing


def test_a_guard_without_a_secret_refuses_everything() -> None:
    guard = CallerGuard("")
    for given in ("", "anything"):
        with pytest.raises(ControllerAccessError):
            guard.check("report_arrivals", given)
    assert guard.refused == {"report_arrivals": 2}


def test_each_refusal_reaches_the_metric_hook_and_a_broken_hook_changes_nothing() -> None:
    """The controller exports refusals as ``cascade_controller_refused_calls_total``
    through ``on_refuse``; the hook sees each refused method, never an accepted
    call, and a hook that raises neither lets the call through nor hides the refusal."""
    from orchestrator.metrics import CLOSED_LABELS, ControllerMetrics, RecordingBackend

    secret = new_secret()
    backend = RecordingBackend()
    exporter = ControllerMetrics(backend)
    seen: list[str] = []

    def hook(method: str) -> None:
        seen.append(method)
        exporter.emit("cascade_controller_refused_calls_total", 1.0, method=method)

    guard = CallerGuard(secret, on_refuse=hook)
    guard.check("pin", secret)
    for method in ("push", "push", "pin"):
        with pytest.raises(ControllerAccessError):
            guard.check(method, "wrong")
    assert seen == ["push", "push", "pin"] and set(seen) <= CLOSED_LABELS["method"]
    counter = "cascade_controller_refused_calls_total"
    assert backend.value(counter, method="push") == 2.0
    assert backend.value(counter, method="pin") == 1.0

    def broken(method: str) -> None:
        raise RuntimeError("metrics backend down")

    guard = CallerGuard(secret, on_refuse=broken)
    with pytest.raises(ControllerAccessError):
        guard.check("push", "wrong")
    guard.check("push", secret)
    assert guard.refused == {"push": 1}


# ---- the config section ----------------------------------------------------------------------
def test_auth_is_off_by_default_and_on_with_a_variable_name() -> None:
    assert not parse_config({"pools": POOLS}).auth.enabled
    auth = parse_config({"pools": POOLS, "auth": {"token_env": "CASCADE_API_TOKEN"}}).auth
    assert auth.enabled and auth.token_env == "CASCADE_API_TOKEN"
    assert (auth.k8s_secret, auth.k8s_secret_key) == (None, "token")


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"token_env": "1TOKEN"}, "auth.token_env: '1TOKEN' is not an environment variable name"),
        ({"token_env": "API-TOKEN"}, "auth.token_env: 'API-TOKEN' is not an environment variable"),
        ({"token_env": "T", "k8s_secret": "Api_Token"}, "auth.k8s_secret: 'Api_Token' is not a"),
        ({"token_env": "T", "k8s_secret_key": "a b"}, "auth.k8s_secret_key"),
        ({"k8s_secret": "api-token"}, "auth: k8s_secret is set but token_env is not"),
        ({"token": "plain-text"}, "auth.token: unknown key"),  # the token never goes in the file
    ],
)
def test_bad_auth_sections_are_refused_with_their_key_path(
    auth: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        parse_config({"pools": POOLS, "auth": auth}, "f.yaml")
    assert message in str(info.value) and str(info.value).startswith("f.yaml: ")


# ---- cascade pin's line ----------------------------------------------------------------------
def test_pin_says_what_it_changes() -> None:
    assert pin_change("a", {}, {"a": 2}, 1) == (
        "pool a: pinned to 2 replicas (was: the allocator's, target 1); pins now: a=2"
    )
    assert pin_change("a", {"a": 2, "b": 1}, {"b": 1}, 2) == (
        "pool a: back to the allocator (was: pinned to 2); pins now: b=1"
    )
    assert pin_change("a", {}, {}, None).endswith(
        "(was: the allocator's, target ?); pins now: none"
    )
