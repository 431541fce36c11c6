"""A workload's energy from measured points (the study's section 4); re-exports infergy.profile.

- binned.py: the study's formula N / B (and whole batches) and infergy's interpolation
  (`estimate`); theory.py: its theoretical baseline, TDP / peak FLOPS x FLOPs.
- cards.py: every engine on every GPU asked for, a table a card (`estimate_cards`).
- trace.py: a trace binned and estimated as `infergy estimate` does it (`estimate_trace`).
- steps.py, fit.py: the step-cost model of an engine step, fitted to measured points;
  filled.py: the bins a calibrated card did not measure, predicted by that model.
- simulate.py, continuous.py: the serving simulator (static batches, vLLM's continuous
  batching); served.py: a trace served on one engine, simulated (the headline figure);
  replays.py, replayed.py: the simulator, and the study's formula, on a measured replay.
- advise.py: the least-energy configuration within latency targets (targets.py);
- workload.py: all of it in one call: `infergy.estimate(trace, model=...)`.
"""

import sys

from infergy.estimate.advise import Advice, Candidate, Option, advise_trace, search
from infergy.estimate.binned import J_PER_KWH, Estimate, estimate
from infergy.estimate.cards import CardEstimate, Estimates, estimate_cards
from infergy.estimate.filled import fill_profile, predicted_words
from infergy.estimate.fit import design, errors, fit_step_cost, measured
from infergy.estimate.replayed import ReplayEstimate, replay_estimate
from infergy.estimate.replays import predict_replay
from infergy.estimate.served import Serving, Simulated, prior_for, unlike_waiting
from infergy.estimate.simulate import Served, simulate
from infergy.estimate.steps import FEATURES, StepCost
from infergy.estimate.targets import Target, parse_slo, seconds_words
from infergy.estimate.theory import theoretical
from infergy.estimate.trace import TraceEstimate, estimate_trace
from infergy.estimate.workload import CallablePackage, estimate_workload
from infergy.profile import (
    EstimateError,
    MissingPoints,
    Profile,
    load_card_profile,
    load_profile,
    shipped_profiles,
)

__all__ = ["FEATURES", "J_PER_KWH", "Advice", "Candidate", "CardEstimate", "Estimate",
           "EstimateError", "Estimates", "MissingPoints", "Option", "Profile", "ReplayEstimate",
           "Served", "Serving", "Simulated", "StepCost", "Target", "TraceEstimate", "advise_trace",
           "design", "errors", "estimate", "estimate_cards", "estimate_trace", "estimate_workload",
           "fill_profile", "fit_step_cost", "load_card_profile", "load_profile", "measured",
           "parse_slo", "predict_replay", "predicted_words", "prior_for", "replay_estimate",
           "search", "seconds_words", "shipped_profiles", "simulate", "theoretical",
           "unlike_waiting"]

sys.modules[__name__].__class__ = CallablePackage  # infergy.estimate(...)
