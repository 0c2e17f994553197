"""Prompt length without a tokenizer (pure): what routers and SimEngine use.

Token ids are counted exactly; text is estimated at ~4 characters per token (the
usual figure for English BPE vocabularies). Routers only need the order of
magnitude; the real engine tokenizes for real.
"""

from __future__ import annotations

import math
from typing import Any


def count_prompt_tokens(prompt: Any) -> int:
    """Prompt length in tokens: token ids are counted; text is ~4 chars a token."""
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        return sum(count_prompt_tokens(p) for p in prompt)
    if isinstance(prompt, str):
        return max(1, math.ceil(len(prompt) / 4))
    return 1


def chat_text(messages: Any) -> str:
    parts = []
    for m in messages or []:
        content = m.get("content") if isinstance(m, dict) else getattr(m, "content", "")
        if isinstance(content, list):
            content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        parts.append(str(content or ""))
    return "\n".join(parts)
