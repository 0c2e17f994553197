"""The mutable state of one request inside the engine model (not a contract type).

The scheduler (``replicas.engine_model``) advances ``computed`` / ``generated``
and the timestamps; the KV cache manager (``replicas.kv_cache``) owns ``blocks``,
``units`` and ``n_units``. Like vLLM v1's ``Request``, it is shared by both and
never leaves the replica.
"""

from __future__ import annotations


class SimRequest:
    """Mutable state of one request inside the engine (not a contract type)."""

    __slots__ = (
        "arrival_s", "blocks", "computed", "finish_s", "first_sched_s", "first_token_s",
        "generated", "hashes", "idx", "last_token_s", "n_units", "output", "peak_computed",
        "preemptions", "prompt", "request_id", "units",
    )  # fmt: skip

    def __init__(
        self,
        request_id: str,
        prompt: int,
        output: int,
        hashes: tuple[int, ...],
        arrival_s: float,
        idx: int,
    ) -> None:
        self.request_id = request_id
        self.idx = idx  # the caller's index (the DES's request number), -1 if none
        self.prompt = prompt
        self.output = output
        self.hashes = hashes
        self.arrival_s = arrival_s
        self.computed = 0  # tokens whose KV is computed
        # the most tokens ever computed, set at a preemption: tokens computed again
        # below it are recomputation (the scheduler's ``recomputed_tokens``)
        self.peak_computed = 0
        self.generated = 0  # output tokens emitted
        self.blocks = 0  # private KV blocks held
        self.units: list[int] = []  # shared prefix units held (hashes), leading
        self.n_units = 0  # prompt units this request registered or hit, leading
        self.first_sched_s = -1.0
        self.first_token_s = -1.0
        self.last_token_s = -1.0
        self.finish_s = -1.0
        self.preemptions = 0
