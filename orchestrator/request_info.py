"""A ``RequestInfo`` from an OpenAI completions / chat request body (pure).

The SLO class a client asks for travels as the HTTP header ``x-cascade-class``
(read by the ingress) or the body field ``cascade_class``; the ingress writes the
class it decided into the body field, so the pool's router, which sees only the
body, classes the request the same way.
"""

from __future__ import annotations

from policies.slo import SloConfig
from replicas.prompts import chat_text, count_prompt_tokens, prefix_block_hashes
from replicas.telemetry import RequestInfo

CLASS_HEADER = "x-cascade-class"  # explicit SLO class: HTTP header ...
CLASS_FIELD = "cascade_class"  # ... or request body field


def request_info_from_body(
    body: object,
    request_id: str,
    *,
    slos: SloConfig | None = None,
    requested_class: str | None = None,
    with_hashes: bool = True,
) -> RequestInfo:
    """A ``RequestInfo`` from an OpenAI completions/chat request body.

    The SLO class: ``slos.classify`` of the prompt length and the explicit class
    (``requested_class``, e.g. the ``x-cascade-class`` header, else the body's
    ``cascade_class`` field); ``default`` without ``slos``. Prefix block hashes
    (``replicas.prompts.prefix_block_hashes``) for the prefix-affinity scorers
    unless ``with_hashes`` is False (the ingress: only routers score prefixes,
    and hashing is the costly part of parsing)."""
    if hasattr(body, "messages"):
        prompt: object = chat_text(body.messages)
    else:
        prompt = getattr(body, "prompt", "")
    max_tokens = getattr(body, "max_completion_tokens", None) or getattr(body, "max_tokens", None)
    tokens = count_prompt_tokens(prompt)
    cls = "default"
    if slos is not None:
        asked = requested_class or getattr(body, CLASS_FIELD, None)
        cls = slos.classify(tokens, asked if isinstance(asked, str) else None)
    return RequestInfo(
        request_id=request_id,
        prompt_tokens=tokens,
        max_tokens=max(int(max_tokens or 16), 1),
        prefix_hashes=prefix_block_hashes(prompt) if with_hashes else (),
        slo_class=cls,
    )
