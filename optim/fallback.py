"""Safe plans for when a solve fails: they never raise and always route everything."""

from __future__ import annotations

import numpy as np

from optim.checks import BoolArray, FloatArray
from optim.inputs import ProblemInputs


def usable_pairs(inputs: ProblemInputs) -> BoolArray:
    """Allowed pairs on pools that have replicas (C, P)."""
    return inputs.allowed_mask & (inputs.replicas[None, :] > 0)


def proportional_to_capacity(inputs: ProblemInputs) -> FloatArray:
    """Route each class to pools in proportion to their capacity for it.

    Capacity of pool p for class c is ``n_p / demand_s[c, p]`` requests/s. A class
    with no usable pool is spread over the pools that have replicas (or all pools
    when none has): sending it somewhere beats dropping it silently.
    """
    capacity = inputs.replicas[None, :] / inputs.demand_s
    weights = np.where(usable_pairs(inputs), capacity, 0.0)
    for c in np.flatnonzero(weights.sum(axis=1) <= 0):
        open_pools = inputs.replicas > 0
        weights[c] = np.where(open_pools, capacity[c], 0.0) if open_pools.any() else 1.0
    plan: FloatArray = weights / weights.sum(axis=1, keepdims=True)
    return plan


def still_valid(
    plan: FloatArray, inputs: ProblemInputs, made_for: FloatArray | None = None
) -> bool:
    """A previous plan is reusable if it only uses pairs that are still usable and,
    given ``made_for`` (the replicas per pool it was solved with), no pool it sends
    traffic to has fewer replicas now: its shares were sized for capacity that is
    gone (a node lost with its replicas), and reusing them would pile the lost
    replicas' traffic on the survivors."""
    if plan.shape != inputs.demand_s.shape:
        return False
    if not np.all((plan <= 1e-9) | usable_pairs(inputs)):
        return False
    if made_for is None or made_for.shape != inputs.replicas.shape:
        return made_for is None
    used = (plan > 1e-9).any(axis=0)
    return bool(np.all(~used | (inputs.replicas >= made_for)))
