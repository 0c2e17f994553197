"""The math of Cascade: estimators, mergeable summaries, hierarchy and cascade model.

Pure numpy/scipy; no Ray, no vLLM. See docs/uncertainty.md for definitions and
error bounds.
"""

from uncertainty.cascade import MULTIPLICATIVE_PRIOR, CascadeCoefficients, CascadeModel
from uncertainty.decayed import DecayedWelford
from uncertainty.hierarchy import LEVELS, Hierarchy
from uncertainty.moments import Moments
from uncertainty.prediction import LatencyPrediction, predict_latency
from uncertainty.replica_load import ReplicaLoad
from uncertainty.sketch import QuantileSketch
from uncertainty.summary import Summary

__all__ = [
    "LEVELS",
    "MULTIPLICATIVE_PRIOR",
    "CascadeCoefficients",
    "CascadeModel",
    "DecayedWelford",
    "Hierarchy",
    "LatencyPrediction",
    "Moments",
    "QuantileSketch",
    "ReplicaLoad",
    "Summary",
    "predict_latency",
]
