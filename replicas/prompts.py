"""Prompt length without a tokenizer (pure): what routers and SimEngine use.

Token ids are counted exactly; text is estimated at ~4 characters per token (the
usual figure for English BPE vocabularies). Routers only need the order of
magnitude; the real engine tokenizes for real.
"""

from __future__ import annotations

import hashlib
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


# Tokens per prefix block (vLLM's default KV block size) and the characters that
# stand for them in text (the ~4 characters a token of count_prompt_tokens)
BLOCK_TOKENS = 16
_BLOCK_CHARS = 4 * BLOCK_TOKENS
MAX_PREFIX_BLOCKS = 256  # hash at most this many leading blocks (4k tokens)


def prefix_block_hashes(prompt: Any, max_blocks: int = MAX_PREFIX_BLOCKS) -> tuple[int, ...]:
    """Chained 64-bit hashes of the prompt's full leading blocks: hash k covers
    blocks 0..k, so two prompts share hash k exactly when they share their first
    k + 1 blocks (as vLLM's prefix cache keys blocks). Token ids are cut into
    ``BLOCK_TOKENS``-id blocks; text (a completion prompt or chat text) into
    blocks of ``4 · BLOCK_TOKENS`` characters, the estimate of
    ``count_prompt_tokens``. A partial last block is not hashed (vLLM does not
    cache it). Deterministic across processes (BLAKE2b, not Python's salted
    ``hash``), so routers and replicas agree. Anything else hashes to ().
    """
    if isinstance(prompt, str):
        data = prompt.encode("utf-8", "surrogatepass")
        step = _BLOCK_CHARS
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        data = b"".join(
            int(t).to_bytes(4, "little", signed=True) for t in prompt[: max_blocks * BLOCK_TOKENS]
        )
        step = 4 * BLOCK_TOKENS
    else:
        return ()
    n = min(len(data) // step, max_blocks)
    h = hashlib.blake2b(digest_size=8)
    out = []
    for k in range(n):
        h.update(data[k * step : (k + 1) * step])
        out.append(int.from_bytes(h.copy().digest(), "little"))
    return tuple(out)
