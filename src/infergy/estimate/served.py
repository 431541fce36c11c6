"""A trace served on one engine and card, simulated: the step-cost model fitted to the card's
measured points, checked on the points it was not fitted to, and the trace's requests run
through the engine's batching policy at their arrivals (infergy.estimate.simulate).

This is `infergy estimate`'s headline figure. Each request runs at its own lengths: none is
dropped for lying past a bin edge.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infergy.estimate.fit import design, errors, fit_step_cost, measured
from infergy.estimate.simulate import Served, Static, policy_of, simulate
from infergy.estimate.steps import StepCost
from infergy.estimate.transfer import card_prior
from infergy.models import UnknownModelError, get_model
from infergy.plan.batches import plan_binned
from infergy.profile.load import EstimateError, Profile, card_of, shipped_profiles
from infergy.workloads.arrivals import ArrivalError, arrival_times
from infergy.workloads.bins import BinGrid
from infergy.workloads.trace import Trace

SERVINGS = ("auto", "offline", "online")
# Fewer points than this outside the design: the band is the fit's own residuals.
MIN_VALIDATION_POINTS = 8


@dataclass(frozen=True)
class Serving:
    """How the trace is served: "offline" (every request at once), "online" (at the trace's
    times divided by `time_scale`, or a Poisson process at `rate` a second), or "auto"
    (online where the trace has times or a rate is given, offline otherwise). `models_only`:
    each engine's step-cost model found and its error, but no run simulated (`Simulated.served`
    None: `infergy advise` simulates its own configurations)."""

    mode: str = "auto"
    rate: float | None = None
    time_scale: float = 1.0
    models_only: bool = False

    def __post_init__(self):
        if self.mode not in SERVINGS:
            raise EstimateError(f"--serving must be one of {', '.join(SERVINGS)}, got "
                                f"{self.mode!r}")
        if self.rate is not None and self.mode == "offline":
            raise EstimateError("--rate: for --serving online (offline, every request "
                                "arrives at once)")
        if self.rate is not None and self.time_scale != 1:
            raise EstimateError("--rate and --time-scale: one or the other (--rate replaces "
                                "the trace's times with Poisson arrivals; --time-scale scales "
                                "them)")

    def arrivals(self, trace: Trace) -> np.ndarray | None:
        """Each request's arrival in s (None: offline). EstimateError where online is asked
        of a trace without times and no rate."""
        online = self.mode == "online" or (self.mode == "auto" and (
            self.rate is not None or trace.arrival_s is not None))
        if not online:
            if self.time_scale != 1:
                raise EstimateError(f"--time-scale: {trace.name} is served offline, not at its "
                                    f"own times: there are none to scale")
            return None
        if self.rate is None and trace.arrival_s is None:
            raise EstimateError(f"{trace.name} has no arrival times to serve it online at: "
                                f"give --rate (Poisson arrivals, requests a second), or "
                                f"--serving offline")
        every = np.arange(len(trace))
        try:
            if self.rate is not None:
                return arrival_times(trace, every, "poisson", rate=self.rate)
            return arrival_times(trace, every, "trace", time_scale=self.time_scale)
        except ArrivalError as e:
            raise EstimateError(str(e)) from None

    def words(self, online: bool) -> str:
        if not online:
            return "offline (every request at once)"
        if self.rate is not None:
            return f"online, Poisson {self.rate:g} requests/s"
        scale = f", {self.time_scale:g} times faster" if self.time_scale != 1 else ""
        return f"online at the trace's own times{scale}"


@dataclass
class Simulated:
    """One engine's simulated serving of a trace, with the model behind it and its error."""

    served: Served | None  # None where only the model was asked for (`Serving.models_only`)
    cost: StepCost
    band: float  # the 90th percentile of |energy error| the model showed (`validation`)
    validation: dict  # infergy.estimate.fit.summarize over the points it predicted
    checked_on: str  # in words: which points the band comes from


@functools.lru_cache(maxsize=32)
def step_model(stores: tuple[str, ...], model: str, engine: str,
               card: str) -> tuple[StepCost, dict, str]:
    """The step-cost model of `engine` on `card` fitted to every point the stores hold, drawn
    towards what the card's other calibrated models (in these stores and those shipped with
    infergy) predict of it (infergy.estimate.transfer.card_prior), and how well a model fitted
    to the design's points (infergy.estimate.fit.design) predicted the others: (model,
    summary, in words)."""
    data = measured([Path(s) for s in stores], model, engine, card)
    prior = prior_for(stores, model, engine, card)
    cost = fit_step_cost(data, prior=prior)
    inside, rest = design(data.windows)
    if len(rest) >= MIN_VALIDATION_POINTS and len(inside) >= MIN_VALIDATION_POINTS:
        summary = errors(fit_step_cost(data, inside, prior), rest)["summary"]
        words = (f"fitted to {len(inside)} design points, predicting the other {len(rest)} "
                 f"measured points")
    else:
        summary = cost.fit["summary"]
        words = f"its residuals on the {len(data.windows)} points it was fitted to"
    if prior:
        words += f", drawn towards what {', '.join(prior.fit['from_models'])} predict of it"
    return cost, summary, words


def prior_for(stores: tuple[str, ...], model: str, engine: str, card: str) -> StepCost | None:
    """`card_prior` from the stores and those shipped with infergy; None where the card's
    other models cannot give one (too few, or one that cannot be predicted: its weights
    leave no room for a KV cache there, say)."""
    pool = list(dict.fromkeys([*map(Path, stores), *shipped_profiles()]))
    try:
        return card_prior(pool, get_model(model), engine, card_of(card))
    except (EstimateError, UnknownModelError):
        return None


def simulate_trace(trace: Trace, profile: Profile, serving: Serving, grid: BinGrid,
                   step: tuple[StepCost, dict, str] | None = None) -> Simulated:
    """`trace` served on the profile's engine and card. A static engine offline runs the
    study's binned batches (each bin's B = max, requests past the last edge in the last bin);
    online, natural batches of the smallest B the trace's bins need. `step`: the step-cost
    model, its error summary and their words (default: `step_model` of the profile's
    stores)."""
    cost, summary, words = step or step_model(tuple(profile.sources), profile.model,
                                              profile.engine, profile.gpu)
    arrival = serving.arrivals(trace)
    if serving.models_only:
        return Simulated(None, cost, band_of(summary), summary, words)
    policy = policy_of(cost, online=arrival is not None)
    batches = None
    if isinstance(policy, Static):
        batches, smallest = _binned(trace, profile, grid)
        policy = Static(smallest)
        if arrival is not None:
            batches = None
    # A request of no token in or out runs as one: an engine takes no empty prompt, and
    # computes a prompt's first token even when none is kept.
    empty = int(((trace.input_tokens < 1) | (trace.output_tokens < 1)).sum())
    served = simulate(cost, np.maximum(trace.input_tokens, 1),
                      np.maximum(trace.output_tokens, 1), arrival, policy=policy,
                      batches=batches, serving=serving.words(arrival is not None),
                      own_outputs=trace.output_tokens)
    if empty:
        served.notes.append(f"{empty} requests of no input or no output token run as one")
    return Simulated(served, cost, band_of(summary), summary, words)


def band_of(summary: dict) -> float:
    """The band of an error summary (infergy.estimate.fit.summarize): the 90th percentile of
    |energy error| over the points measured over 1 s or more where there are enough (a shorter
    window's own error is 10% or more), else over all of them."""
    reliable = summary.get("window >= 1 s") or {}
    group = reliable if reliable.get("points", 0) >= MIN_VALIDATION_POINTS else summary["all"]
    return float((group.get("energy_error") or {}).get("p90", np.nan))


def _binned(trace: Trace, profile: Profile, grid: BinGrid):
    """The study's binned batches of every request (clamped into the last bins), and the
    smallest B they use."""
    clamped = dataclasses.replace(grid, beyond="clamp").assign(trace.input_tokens,
                                                               trace.output_tokens)
    smallest = min(p["batch"] for p in profile.points.values())

    def batch_of(edge):
        point = profile.points.get(edge)
        return point["batch"] if point else smallest
    batches = plan_binned(trace, clamped, np.arange(len(trace)), batch_of)
    return [np.array(b.requests) for b in batches], min(batch_of(b.bin) for b in batches)


def unlike_waiting(charged) -> list[str]:
    """A line for each engine whose time with no request in flight one card charges at the
    power measured with its server up and another at the bare idle (nothing measured there):
    `charged`, (engine, card, measured) of each. Online, most of a server's time is waiting,
    so those cards' energies differ by that (the H200 led the H100 by 20% on it alone)."""
    by_engine: dict[str, dict[bool, list[str]]] = {}
    for engine, card, waiting_measured in charged:
        cards = by_engine.setdefault(engine, {}).setdefault(waiting_measured, [])
        cards += [card] if card not in cards else []
    return [f"{engine}: not comparable across cards yet: the time with no request in flight "
            f"is charged at the waiting power measured on {', '.join(by[True])} but at the "
            f"bare idle on {', '.join(by[False])}, which it under-charges (an online replay "
            f"there, `infergy replay --mode online --serve vllm`, measures it)"
            for engine, by in by_engine.items() if len(by) == 2]
