"""Paired A/B of the router decision time: a previous commit against this tree.

On a shared VM whose speed changes by 2x within minutes, two benchmark runs
cannot be compared; this script alternates the two implementations decision by
decision in one process, so both see the same machine at the same moment.

Prepare the previous commit's packages under other names, then run::

    git worktree add /tmp/old <commit>
    mkdir -p /tmp/oldpkgs
    cp -r /tmp/old/uncertainty /tmp/oldpkgs/old_uncertainty
    cp -r /tmp/old/policies /tmp/oldpkgs/old_policies
    grep -rl "uncertainty\\|policies" --include=*.py /tmp/oldpkgs | xargs sed -i -E \\
      's/^(\\s*)(from|import) (uncertainty|policies)/\\1\\2 old_\\3/'
    .venv/bin/python scripts/router_pair.py 64 64 [policy]   # replicas, states

Prints one JSON object: p50/p99 of each (µs) and the median per-decision ratio
new/old. Workload as ``cascade bench router`` (same snapshots and requests).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

sys.path.insert(0, "/tmp/oldpkgs")

import old_policies as old  # made by the recipe above

import policies as new
from experiments.benchmarks import router as rb


def main() -> None:
    replicas, states = int(sys.argv[1]), int(sys.argv[2])
    policy = sys.argv[3] if len(sys.argv) > 3 else "uncertainty"
    rb.pin_to_one_core()
    rng = np.random.default_rng(0)
    prefixes = [tuple(int(h) for h in rng.integers(0, 2**62, size=64)) for _ in range(32)]
    reqs = rb._requests(rng, 4000, prefixes)
    snaps = [rb._snapshots(rng, replicas, prefixes) for _ in range(states)]
    new_bases = [new.build_view(s, None, 0.3) for s in snaps]
    old_bases = [old.build_view(s, None, 0.3) for s in snaps]
    new_router, old_router = new.build_router(policy), old.build_router(policy)
    rng_new, rng_old, queue_rng = (np.random.default_rng(s) for s in (1, 1, 5))
    t_new: list[float] = []
    t_old: list[float] = []
    clock = time.perf_counter_ns
    for k in range(-200, 40_000):  # negative k: warm-up
        i = k % states
        ids = new_bases[i].replica_ids
        busy = queue_rng.integers(0, len(ids), size=min(8, len(ids))).tolist()
        counts = queue_rng.integers(1, 80, size=len(busy)).tolist()
        outstanding = {ids[a]: c for a, c in zip(busy, counts, strict=True)}
        vn = new_bases[i].with_outstanding(outstanding)
        vo = old_bases[i].with_outstanding(outstanding)
        req = reqs[k % len(reqs)]
        # alternate which goes first; each side: (router, view, rng, timings)
        sides = [(old_router, vo, rng_old, t_old), (new_router, vn, rng_new, t_new)]
        for router, view, pick_rng, times in sides if k % 2 else sides[::-1]:
            t0 = clock()
            ranking = router.rank(req, view, pick_rng)
            dt = clock() - t0
            if k >= 0:
                times.append(dt / 1e3)
            if ranking:
                router.on_routed(view.replica_ids[ranking[0]], req)
    tn, to = np.array(t_new), np.array(t_old)
    print(
        json.dumps(
            {
                "policy": policy,
                "replicas": replicas,
                "states": states,
                "old_us_p50": round(float(np.median(to)), 1),
                "new_us_p50": round(float(np.median(tn)), 1),
                "old_us_p99": round(float(np.percentile(to, 99)), 1),
                "new_us_p99": round(float(np.percentile(tn, 99)), 1),
                "median_pair_ratio": round(float(np.median(tn / to)), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
