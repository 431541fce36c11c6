"""A trace on several engines and GPUs: a table a card, each engine against the first (the
baseline of the savings) and against the card's theoretical baseline; a card or an engine
the profiles lack is a message saying how to measure it. `CardEstimate.rows` is what
`infergy estimate` and the report both print of an estimate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infergy.estimate.binned import J_PER_KWH, Estimate, estimate, needed_bins
from infergy.estimate.filled import fill_profile, predicted_points
from infergy.estimate.served import Serving, band_of, simulate_trace
from infergy.estimate.theory import served_flops, theoretical
from infergy.estimate.unmeasured import predict_unmeasured
from infergy.models import get_model
from infergy.models.gpus import Gpu, get_gpu
from infergy.profile.load import (
    EstimateError,
    MissingPoints,
    Profile,
    card_of,
    card_of_file,
    how_to_measure,
    pick_profile,
    points_by_gpu,
    shipped_profiles,
    sweep_advice,
    what_stores_hold,
)
from infergy.profile.points import stored_cards, stored_points
from infergy.workloads.bins import Binned
from infergy.workloads.trace import Trace

# An idle share from which the power the idle time is charged at is said (`idle_charged`).
IDLE_WORTH_SAYING = 0.05


@dataclass
class CardEstimate:
    """A trace on each engine asked for, on one GPU, against the first engine (the baseline of
    the savings) and the theoretical baseline."""

    gpu: str  # the card's name as measured (NVML)
    estimates: list[Estimate]  # the engines estimated, the baseline first
    unmeasured: dict[str, MissingPoints]  # engines after the first lacking bins (or every one)
    theoretical_j: float  # the study's baseline on `theoretical_gpu`, in J
    theoretical_gpu: Gpu
    stores: list[str]  # the stores holding this GPU's points
    # The same baseline over every request at its own lengths, as the simulated serving runs
    # them (the study's: the binned requests at their bins' edges), in J.
    served_theoretical_j: float
    # Where the model is measured on no engine of this card: every figure is predicted from
    # the card's other models (infergy.estimate.unmeasured), said in these words.
    predicted_model: str | None = None
    # Where it is measured on some engines of the card: each engine predicted so, its words.
    predicted_engines: dict[str, str] = field(default_factory=dict)

    @property
    def baseline(self) -> Estimate:
        """The first engine's estimate: what the savings are against."""
        return self.estimates[0]

    def saving(self, result: Estimate) -> float:
        """The share of the baseline's energy that `result` saves (negative: it spends more)."""
        return 1 - result.energy_j / self.baseline.energy_j

    def above_theoretical(self, result: Estimate) -> float:
        """How far `result` lies above the theoretical baseline, as a share of it."""
        return result.energy_j / self.theoretical_j - 1

    def rows(self) -> list[dict]:
        """One dict an engine estimated, the baseline first. The figures `infergy estimate`
        leads with are the simulated serving's, `simulated_*` (simulated_kwh,
        simulated_j_per_request, simulated_j_per_output_token, simulated_saving_vs_baseline,
        simulated_above_theoretical, band, latencies, idle_share: `_simulated`; simulated_kwh
        None where it could not be made, with simulation_error). Beside them, the study's
        binned formula (its "study" column): energy_j, whole_batches_j, interpolated_j (None
        without a full grid of points), j_per_request and j_per_output_token in J (None
        without output tokens), kwh, above_theoretical and saving_vs_baseline as shares
        (0.25: 25%; the baseline's saving is 0), predicted_bins (None where every bin is
        measured; else how many bins and requests the card's calibrated model predicted,
        with its band) and its bins.
        What `infergy estimate` (its table and --json) and the report print of an estimate."""
        return [{"engine": r.engine, **self._simulated(r), "energy_j": r.energy_j, "kwh": r.kwh,
                 "whole_batches_j": r.energy_whole_batches_j,
                 "interpolated_j": r.interpolated_j, "j_per_request": r.j_per_request,
                 "j_per_output_token": r.j_per_output_token,
                 "above_theoretical": self.above_theoretical(r),
                 "saving_vs_baseline": self.saving(r), "predicted_bins": r.predicted,
                 "bins": r.bins}
                for r in self.estimates]

    def _simulated(self, r: Estimate) -> dict:
        """The simulated serving's figures (None where it could not be made)."""
        sim = r.simulated
        if sim is None:
            return {"simulated_kwh": None, "simulation_error": r.simulation_error}
        s, base = sim.served, self.baseline.simulated
        latency = s.latency()
        return {"simulated_kwh": s.energy_j / J_PER_KWH, "simulated_j": s.energy_j,
                "simulated_j_per_request": s.j_per_request,
                "simulated_j_per_output_token": s.j_per_output_token,
                "band": sim.band, "band_from": sim.checked_on, "serving": s.serving,
                "simulated_saving_vs_baseline": (1 - s.energy_j / base.served.energy_j
                                                 if base else None),
                "simulated_above_theoretical": s.energy_j / self.served_theoretical_j - 1,
                "time_s": s.time_s, "idle_share": s.idle_share,
                "idle_charged": (sim.cost.waiting_words()
                                 if s.idle_share >= IDLE_WORTH_SAYING else None),
                "waiting_measured": sim.cost.serving_idle_w is not None,
                "ttft_p90_s": (latency["ttft_s"] or {}).get("p90"),
                "tpot_p90_s": (latency["tpot_s"] or {}).get("p90"),
                "e2e_p90_s": (latency["e2e_s"] or {}).get("p90"),
                "simulation": s.to_dict(), "simulation_error": None}

    def to_dict(self) -> dict:
        """The card's estimate as JSON-ready data: its GPU and stores, the theoretical
        baseline (J, and the datasheet card), `rows()` and the engines not measured."""
        return {"gpu": self.gpu, "profiles": self.stores, "predicted_model": self.predicted_model,
                "predicted_engines": self.predicted_engines,
                "theoretical_j": self.theoretical_j,
                "served_theoretical_j": self.served_theoretical_j,
                "theoretical_gpu": self.theoretical_gpu.name, "engines": self.rows(),
                "unmeasured": [{"engine": name, "message": str(e), "missing_bins": e.missing}
                               for name, e in self.unmeasured.items()]}


@dataclass
class Estimates:
    """A trace estimated on every GPU asked for: one CardEstimate each, and the GPUs that could
    not be estimated with why (no profile, or the baseline engine lacking bins)."""

    cards: list[CardEstimate]
    not_estimated: dict[str, MissingPoints]  # the GPU as asked (or as measured) -> why
    stores: list[str]  # the stores the estimates came from
    shipped: bool  # the stores are the profiles shipped with infergy

    def to_dict(self) -> dict:
        """JSON-ready data: the stores, each card's `CardEstimate.to_dict()` and the GPUs not
        estimated with why."""
        return {"profiles": self.stores, "gpus": [c.to_dict() for c in self.cards],
                "unmeasured_gpus": [{"gpu": name, "message": str(e)}
                                    for name, e in self.not_estimated.items()]}


def estimate_cards(trace: Trace, binned: Binned, model: str, engines: Sequence[str],
                   gpus: Sequence[str] | None = None, stores: list[Path] | None = None,
                   theory_gpu: str | None = None, decoding: str = "greedy",
                   serving: Serving | None = None) -> Estimates:
    """Every engine on every GPU, from the trace binned once. `gpus`: models.gpus or NVML
    names; None: every GPU with B = max points of the model on one of the engines (a model
    with no point in the stores: every card the profiles hold, each predicting it). `stores`:
    None for the profiles shipped with infergy (those of the model, one store a card).
    `theory_gpu`: the datasheet card of the theoretical baseline (default: each measured one).
    A GPU without points, or whose first engine lacks a bin the trace needs, goes to
    `not_estimated`; when no GPU can be estimated, its error is raised (of several: all)."""
    shipped = stores is None
    if stores is None:
        if not shipped_profiles():
            raise EstimateError("no profile given and none shipped yet: pass --profile FILE, a "
                                "results store written by `infergy sweep` (make run shows one "
                                "from the repository)")
        stores = shipped_profiles(model)
    by_engine = {e: points_by_gpu(stores, model, e, decoding) for e in engines}
    measured = sorted({g for found in by_engine.values() for g in found})
    pool = shipped_profiles() if shipped else stores  # every model of the cards
    if gpus is None:
        asked = {card_of(g): g for g in measured}
        if not asked and next(stored_points(stores, model=model), None) is None:
            # measured on no card, on no engine: predicted on each card the pool holds
            asked = {card_of(g): g for g in stored_cards(pool)}
        if not asked:
            raise _no_points(model, engines, None, stores, shipped)
    else:  # an unknown name is an error before any estimate
        asked = {}
        for g in gpus:
            asked.setdefault(get_gpu(g).name, g)
    cards, why = [], {}
    served = served_flops(trace.input_tokens, trace.output_tokens, model)  # every card's
    for card, name in asked.items():
        if not any(card_of(g) == card for g in measured):
            try:
                cards.append(_predicted_card(trace, binned, model, engines, card, pool,
                                             theory_gpu, serving or Serving(), served))
            except EstimateError as e:
                lost = _no_points(model, engines, name, stores, shipped)
                why[name] = MissingPoints(f"{lost}. Nor can it be predicted: {e}", lost.missing,
                                          brief=f"{lost.brief}, nor predicted: {e.brief}")
            continue
        try:
            cards.append(_on_card(trace, binned, model, engines, by_engine, card, name,
                                  stores, pool, theory_gpu, serving or Serving(), served))
        except MissingPoints as e:
            why[name] = e
    if not cards:
        if len(why) == 1:
            raise next(iter(why.values()))
        raise MissingPoints("no GPU could be estimated:\n" + "\n".join(
            f"{name}: {e}" for name, e in why.items()), brief="; ".join(
            e.brief for e in why.values()))
    used = list(dict.fromkeys(s for c in cards for s in c.stores))  # a predicted card's too
    return Estimates(cards, why, used, shipped)


def _on_card(trace: Trace, binned: Binned, model: str, engines: Sequence[str],
             by_engine: dict[str, dict], card: str, asked: str, stores: list[Path],
             pool: list[Path], theory_gpu: str | None, serving: Serving,
             served: float) -> CardEstimate:
    """The engines on a card that measured `model` on some of them; an engine with none of
    its points is predicted from the card's models calibrated on it (as on a card that
    measured the model on no engine), else a row saying how to measure it."""
    # The stores holding this card: what its messages name, and where to measure the rest.
    held = {p["store"] for found in by_engine.values() for name, points in found.items()
            if card_of(name) == card for p in points.values()}
    stores = [s for s in stores if str(s) in held]
    results, unmeasured, predicted = [], {}, {}
    for engine in engines:
        if not any(card_of(name) == card for name in by_engine[engine]):
            try:
                result, sources, predicted[engine] = _predicted(trace, binned, model, engine,
                                                                card, pool, serving)
                results.append(result)
                stores += [s for s in map(Path, sources) if s not in stores]
                continue
            except EstimateError:
                pass  # said as the engine's missing points below
        try:
            profile = pick_profile(by_engine[engine], stores, model, engine, card, asked)
            try:
                result = estimate(trace, binned, profile)
            except MissingPoints as e:  # a calibrated card: the model predicts the rest
                profile = fill_profile(profile, e)
                result = estimate(trace, binned, profile)
            try:
                result.simulated = simulate_trace(trace, profile, serving, binned.grid)
            except EstimateError as e:  # too few points, no idle power: said in its row
                result.simulation_error = str(e)
            results.append(result)
        except MissingPoints as e:
            if engine == engines[0]:  # the baseline of the savings: nothing to compare
                others = [g for g in engines[1:]
                          if any(card_of(name) == card for name in by_engine[g])]
                if e.missing is None and others:  # say the engines it could estimate
                    raise MissingPoints(f"{e}. The card's points of {', '.join(others)} are "
                                        f"estimated with --engine {','.join(others)}") from None
                raise
            unmeasured[engine] = e  # a row saying so; the others are still estimated
    gpu = get_gpu(theory_gpu or card)
    return CardEstimate(results[0].gpu, results, unmeasured, theoretical(binned, model, gpu),
                        gpu, [str(s) for s in stores], predicted_engines=predicted,
                        served_theoretical_j=served * gpu.joules_per_flop)


def _predicted(trace: Trace, binned: Binned, model: str, engine: str, card: str,
               stores: list[Path], serving: Serving) -> tuple[Estimate, list[str], str]:
    """`model` on `engine` predicted from the card's models calibrated on it
    (predict_unmeasured): its estimate, the stores it came from and the words that say so.
    EstimateError (TransferError) where it cannot be predicted."""
    cost, summary, said, gpu = predict_unmeasured(stores, get_model(model), engine, card)
    points = predicted_points(cost, needed_bins(binned.counts(), binned.grid))
    profile = Profile(model, engine, gpu, points, list(cost.sources),
                      predicted={"band": band_of(summary), "checked_on":
                                 "measured points of the model the others predicted worst "
                                 "(the check said above)",
                                 "points": summary["all"]["points"]})
    result = estimate(trace, binned, profile)
    result.simulated = simulate_trace(trace, profile, serving, binned.grid,
                                      (cost, summary, said))
    return result, list(cost.sources), said


def _predicted_card(trace: Trace, binned: Binned, model: str, engines: Sequence[str],
                    card: str, stores: list[Path], theory_gpu: str | None,
                    serving: Serving, served: float) -> CardEstimate:
    """Every engine on a card that measured `model` on none: each engine's step-cost model and
    B = max points predicted from the card's calibrated models (predict_unmeasured). An
    engine that cannot be predicted is a row saying why (the first predicted one is the
    baseline of the savings); where none can, the first engine's TransferError is raised."""
    results, unmeasured, words, sources = [], {}, None, {}
    for engine in engines:
        try:
            result, used, said = _predicted(trace, binned, model, engine, card, stores,
                                            serving)
        except EstimateError as e:
            unmeasured[engine] = MissingPoints(str(e), brief=e.brief)
            continue
        words = words or said
        sources.update(dict.fromkeys(used))
        results.append(result)
    if not results:
        raise unmeasured[engines[0]]
    gpu = get_gpu(theory_gpu or card)
    return CardEstimate(results[0].gpu, results, unmeasured, theoretical(binned, model, gpu),
                        gpu, list(sources), predicted_model=words,
                        served_theoretical_j=served * gpu.joules_per_flop)


def _no_points(model: str, engines: Sequence[str], gpu: str | None, stores: list[Path],
               shipped: bool) -> MissingPoints:
    """No B = max point of the model on any of the engines (on `gpu`; None: on any GPU)."""
    on = f" on {gpu}" if gpu else ""
    held, unmetered = what_stores_hold(stores, model, list(engines), gpu)
    brief = f"{model} not measured with {', '.join(engines)}{on}"
    if not shipped:
        return MissingPoints(f"no B = max points of {model}{on} on {', '.join(engines)}"
                             f"{' with energy' if unmetered else ''} in "
                             f"{', '.join(map(str, stores))} ({held}): measure them on an "
                             f"NVIDIA GPU with {sweep_advice(model, engines[0], stores)}",
                             brief=brief)
    names = ", ".join(p.name for p in shipped_profiles()) or "none"
    if stores and not gpu:  # the model's profiles are shipped: the engines are what is missing
        return MissingPoints(f"the shipped profiles of {model} ({', '.join(p.name for p in stores)}"
                             f") hold no B = max point of {', '.join(engines)} ({held}): "
                             f"measure them with {sweep_advice(model, engines[0], stores)}",
                             brief=brief)
    how = how_to_measure(model, engines[0], gpu, repository=bool(stores))
    own = [p.name for p in stores if gpu and card_of_file(p, model) == get_gpu(gpu).name]
    what = (f"{own[0]} holds no B = max point of {', '.join(engines)} ({held})" if own else
            f"no shipped profile of {model}{on}")
    return MissingPoints(f"{what} (shipped: {names}): {how}", brief=brief)
