"""Which configuration serves a workload with the least energy within a latency target
(`infergy advise`, issue 33).

Every configuration infergy has a step-cost model for (measured, or predicted for a model a
card did not measure: labelled) is served through the simulator (infergy.estimate.simulate)
with the workload's requests at their arrivals:
- the card, and the engine on it;
- the engine's batch cap: a static engine's batch (powers of two up to the smallest B = max
  of the bins the trace fills: larger ones are not known to fit the card's memory), vLLM's
  `max_num_seqs` and `max_num_batched_tokens`;
- replicas: copies of the engine on cards of the same kind, the requests dealt to them in
  arrival order (round robin, as a load balancer without state deals them). Doubled from one
  while the target is missed and the miss shrinks, then the fewest that meet it: more
  replicas serve a rate one cannot, and each draws its idle power the whole time.

The least energy that meets every target wins (within 1% of it, the engine's defaults first);
no target: the least energy. `Advice.not_searched` says what has no step-cost model, in brief:
tensor parallelism and speculative decoding (TP 1 and greedy points), rather than guess them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from infergy.estimate.binned import J_PER_KWH
from infergy.estimate.served import Serving, unlike_waiting
from infergy.estimate.simulate import Static, latency, policy_of, simulate
from infergy.estimate.steps import StepCost
from infergy.estimate.targets import Target
from infergy.estimate.trace import estimate_trace, left_out_words
from infergy.models import get_model
from infergy.profile.load import EstimateError
from infergy.workloads.bins import BinGrid
from infergy.workloads.trace import Trace

# vLLM's caps searched: max_num_seqs from its default (1024 on these cards) down by fours, and
# token budgets around the server's default of 8,192.
MAX_NUM_SEQS = (1024, 256, 64, 16)
BATCHED_TOKENS = (2048, 8192, 16384)
MAX_REPLICAS = 64
# A replica count is doubled again only while the worst miss shrinks by this much.
REPLICA_GAIN = 0.9
# Options within this share of the least energy count as tied (`_least`).
TIE = 0.01
# The Pareto front takes an option only where it saves this share over the front's last.
FRONT_STEP = 0.001
# Said in `Advice.not_searched`, rather than guessed.
UNMODELLED = ("tensor parallelism and speculative decoding: no step-cost model of either yet "
              "(the fit takes TP 1 and greedy points)")


@dataclass(frozen=True)
class Config:
    """One configuration: the card (its name as measured), the engine, its batch cap (a
    static engine's batch, or vLLM's max_num_seqs), vLLM's max_num_batched_tokens (None for a
    static engine) and how many replicas."""

    gpu: str
    engine: str
    batch_cap: int
    batched_tokens: int | None
    replicas: int = 1

    def words(self) -> str:
        cap = (f"batch {self.batch_cap}" if self.batched_tokens is None else
               f"max_num_seqs {self.batch_cap}, max_num_batched_tokens {self.batched_tokens}")
        copies = f", {self.replicas} replicas" if self.replicas > 1 else ""
        return f"{self.engine} ({cap}{copies})"

    def serve_args(self) -> str | None:
        """`infergy replay --mode online`'s options that serve one replica of this
        configuration (vLLM's server with its caps); None for an engine it cannot serve."""
        if self.batched_tokens is None:
            return None
        return (f"--serve {self.engine} --engine-option max_num_seqs={self.batch_cap} "
                f"--engine-option max_num_batched_tokens={self.batched_tokens}")


@dataclass
class Option:
    """A configuration served, simulated: the whole trace over its replicas."""

    config: Config
    default: bool  # the engine's own caps (vLLM's server defaults; a static engine's B), at
    # any replicas
    energy_j: float  # every replica's GPU, idle power included, first arrival to last answer
    requests: int
    output_tokens: int
    time_s: float
    latency: dict[str, dict[str, float] | None]  # Served.latency() over every replica
    band: float  # the step-cost model's energy error, p90 (infergy.estimate.served)
    predicted: str | None  # where the model is not measured on the card: how it is predicted
    refused: int = 0
    misses: list[dict] = field(default_factory=list)  # target, value_s, over (share)
    # The most requests (waiting or running) one replica of a continuous engine held at once:
    # any cap of at least this many serves the run the same.
    peak_inflight: int = 0

    @property
    def meets(self) -> bool:
        return not self.misses

    @property
    def j_per_request(self) -> float:
        return self.energy_j / self.requests if self.requests else float("nan")

    @property
    def kwh(self) -> float:
        return self.energy_j / J_PER_KWH

    def value(self, target: Target) -> float | None:
        """The option's figure for `target`'s metric and percentile, in s."""
        return (self.latency.get(target.metric) or {}).get(target.percentile)

    def to_dict(self) -> dict:
        return {"gpu": self.config.gpu, "engine": self.config.engine,
                "batch_cap": self.config.batch_cap,
                "max_num_batched_tokens": self.config.batched_tokens,
                "replicas": self.config.replicas, "configuration": self.config.words(),
                "default": self.default, "energy_j": self.energy_j, "kwh": self.kwh,
                "j_per_request": self.j_per_request, "requests": self.requests,
                "refused": self.refused, "time_s": self.time_s, "latency": self.latency,
                "band": self.band, "predicted": self.predicted, "meets": self.meets,
                "misses": self.misses}


@dataclass
class Advice:
    """The search's result. `best`: the least energy meeting every target (`_least`; None
    where none does: then `closest`, the option whose worst miss is smallest); `baseline`:
    vLLM's defaults on the best's card (the advised engine's own where vLLM has no model
    there), with the fewest replicas that meet the targets. Energies in J, times in s."""

    trace: str
    model: str
    serving: str
    targets: list[Target]
    options: list[Option]
    best: Option | None
    closest: Option | None
    baseline: Option | None
    pareto: list[Option]  # least energy for its latency (`axis`), by latency
    axis: Target  # the latency the front is drawn against
    not_searched: list[str]  # what was not searched, and why
    search_s: float
    left_out: str = ""  # the trace's requests not served, and why
    notes: list[str] = field(default_factory=list)  # what makes options less comparable

    @property
    def chosen(self) -> Option:
        """The best option, or the closest one where none meets the targets."""
        return self.best or self.closest

    def saving(self) -> float | None:
        """The share of the baseline's energy the chosen option saves."""
        if self.baseline is None:
            return None
        return 1 - self.chosen.energy_j / self.baseline.energy_j

    def runners_up(self, n: int = 5) -> list[Option]:
        """The best option of each other card x engine: the least energy meeting the
        targets (where none meets them: the smallest worst miss), in that order."""
        pool = [o for o in self.options if o.meets] if self.best else self.options
        key = (lambda o: o.energy_j) if self.best else _worst_miss
        mine = (self.chosen.config.gpu, self.chosen.config.engine)
        found: dict[tuple[str, str], Option] = {}
        for o in sorted(pool, key=key):
            found.setdefault((o.config.gpu, o.config.engine), o)
        return [o for k, o in found.items() if k != mine][:n]

    def to_dict(self) -> dict:
        return {"trace": self.trace, "model": self.model, "serving": self.serving,
                "targets": [{"target": t.name, "limit_s": t.limit_s} for t in self.targets],
                "best": self.best and self.best.to_dict(),
                "closest": None if self.best else self.closest.to_dict(),
                "baseline": self.baseline and self.baseline.to_dict(),
                "saving_vs_baseline": self.saving(),
                "runners_up": [o.to_dict() for o in self.runners_up()],
                "pareto": [o.to_dict() for o in self.pareto], "pareto_axis": self.axis.name,
                "options": [o.to_dict() for o in self.options],
                "not_searched": self.not_searched, "search_s": self.search_s,
                "left_out": self.left_out, "notes": self.notes}


@dataclass(frozen=True)
class Candidate:
    """One engine on one card, as the search needs it: its step-cost model and that model's
    energy error (p90), how it is predicted where the model is not measured on the card,
    and a static engine's largest batch known to fit (its default cap)."""

    gpu: str
    engine: str
    cost: StepCost
    band: float
    predicted: str | None = None
    static_batch: int = 1


def advise_trace(trace: Trace, model: str, *, gpus: Sequence[str] | None = None,
                 engines: Sequence[str] = ("vllm", "vllm-eager", "hf-eager", "hf-compiled"),
                 serving: Serving | None = None, targets: Sequence[Target] = (),
                 stores: list[Path] | None = None, grid: BinGrid | None = None,
                 workers: int | None = None) -> Advice:
    """Search every configuration of `model` on `engines` x `gpus` (None: every card the
    stores hold) that the stores (None: the shipped profiles) have a step-cost model for,
    serving `trace` as `serving` says (default: online), for the least energy meeting
    `targets`. `workers`: processes simulating at once (default: the machine's cores).
    EstimateError where nothing can be searched."""
    started = time.perf_counter()
    serving = serving or Serving("online")
    spec = get_model(model)
    trace, over = trace.within(spec.max_context)
    serving.arrivals(trace)  # an option that cannot be: said before any search
    found, not_searched = candidates(trace, model, engines, gpus, stores, grid, serving)
    advice = search(trace, spec.name, found, serving=serving, targets=targets,
                    not_searched=not_searched, workers=workers, started=started)
    if over:
        advice.left_out = left_out_words(over, spec.name, spec.max_context)
    return advice


def candidates(trace: Trace, model: str, engines: Sequence[str],
               gpus: Sequence[str] | None = None, stores: list[Path] | None = None,
               grid: BinGrid | None = None, serving: Serving | None = None,
               ) -> tuple[list[Candidate], list[str]]:
    """Each engine on each card with a step-cost model of `model` (measured, or predicted for a
    model the card did not measure), and what has none, in brief. EstimateError if none has."""
    grid = grid or BinGrid.of("paper")
    model = get_model(model).name
    found, not_searched, missing = [], [], []  # missing: (which, its EstimateError)
    for engine in engines:  # one at a time: a card lacking one engine still has the others
        try:  # the step-cost models alone: the search simulates every configuration
            result = estimate_trace(trace, model, [engine], grid, gpus=gpus, stores=stores,
                                    serving=replace(serving or Serving("online"),
                                                    models_only=True))
        except EstimateError as e:
            missing.append((engine, e))
            continue
        for card in result.estimates.cards:
            est = card.estimates[0]
            if est.simulated is None:
                not_searched.append(f"{engine} on {card.gpu}: {est.simulation_error}")
                continue
            filled = [b["batch"] for b in est.bins if b["requests"]]
            found.append(Candidate(card.gpu, engine, est.simulated.cost, est.simulated.band,
                                   card.predicted_model, min(filled) if filled else 1))
        missing += [(f"{engine} on {g}", e) for g, e in result.estimates.not_estimated.items()]
    if not found:  # the errors whole: what is missing and how to mend it
        raise EstimateError(f"nothing to search for {model}: no engine has a step-cost model on "
                            "any card asked for:\n" + "\n".join(f"{w}: {e}" for w, e in missing))
    hint = [f"`infergy estimate -t TRACE -m {model} -e ENGINE --gpu CARD` says how to measure "
            f"or calibrate each"] if missing else []
    return found, not_searched + [f"{w}: {e.brief}" for w, e in missing] + hint + [UNMODELLED]


def search(trace: Trace, model: str, found: Sequence[Candidate], *,
           serving: Serving | None = None, targets: Sequence[Target] = (),
           not_searched: Sequence[str] = (), workers: int | None = None,
           started: float | None = None) -> Advice:
    """`trace` served by every configuration of the candidates (`_caps`, with the replicas
    the targets ask for), the least energy meeting `targets` advised."""
    started = time.perf_counter() if started is None else started
    serving = serving or Serving("online")
    arrival = serving.arrivals(trace)
    inputs = np.maximum(trace.input_tokens, 1)
    outputs = np.maximum(trace.output_tokens, 1)
    span = 0.0 if arrival is None else float(arrival.max() - arrival.min())
    workers = workers or os.cpu_count() or 1
    run = (inputs, outputs, arrival, tuple(targets), span)
    # First each engine's defaults, with the replicas the targets ask for: the least energy
    # among those that meet them bounds the rest, so that configurations whose replicas'
    # idle power alone would exceed it are not simulated.
    first = _map(workers, [(c, [e for e in _caps(c, arrival is not None) if e[3]], {}, run,
                            float("inf")) for c in found])
    options = [o for found_ in first for o in found_]
    bound = min((o.energy_j for o in options if o.meets), default=float("inf"))
    rest = []
    for c, seeded in zip(found, first, strict=True):
        entries = [e for e in _caps(c, arrival is not None) if not e[3]]
        for budget in dict.fromkeys(e[1] for e in entries):
            seed = {o.config.replicas: o for o in seeded if o.config.batched_tokens == budget}
            rest.append((c, [e for e in entries if e[1] == budget], seed, run, bound))
    options += [o for found_ in _map(workers, rest) for o in found_]
    axis = targets[0] if targets else Target("e2e_s", "p90", float("inf"))
    best = _least(options)
    closest = None if best else min(options, key=_worst_miss)
    chosen = best or closest
    return Advice(trace.name, model, serving.words(arrival is not None), list(targets),
                  options, best, closest, _baseline(options, chosen), _front(options, axis),
                  axis, list(not_searched), time.perf_counter() - started,
                  notes=unlike_waiting((c.engine, c.gpu, c.cost.serving_idle_w is not None)
                                       for c in found))


def _map(workers: int, tasks: list[tuple]) -> list[list[Option]]:
    """`_search` of each task, in `workers` processes where there are several."""
    workers = min(workers, len(tasks))
    if workers <= 1:
        return [_search(*task) for task in tasks]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_search_task, tasks))


def _caps(c: Candidate, online: bool) -> list[tuple]:
    """Every (cap, token budget, policy, is the default) of `c`: a static engine's batch
    halved from its largest safe one; vLLM's max_num_seqs, largest first, at each budget."""
    default = policy_of(c.cost, online=online)
    if isinstance(default, Static):
        caps = [c.static_batch]
        while caps[-1] > 1:
            caps.append(caps[-1] // 2)
        return [(b, None, Static(b), b == c.static_batch) for b in caps]
    seqs = sorted({min(s, default.max_num_seqs) for s in MAX_NUM_SEQS}, reverse=True)
    budgets = sorted({*BATCHED_TOKENS, default.max_num_batched_tokens})
    return [(s, budget, replace(default, max_num_batched_tokens=budget, max_num_seqs=s),
             s == default.max_num_seqs and budget == default.max_num_batched_tokens)
            for budget in budgets for s in seqs]


def _search_task(task: tuple) -> list[Option]:
    return _search(*task)


def _search(c: Candidate, entries: list[tuple], seed: dict[int, Option], run: tuple,
            bound_j: float) -> list[Option]:
    """Each of `entries` (`_caps`' of one token budget, largest cap first) with the
    replicas the targets ask for: doubled from one while the worst miss shrinks, then, once
    a count meets them, the fewest that do, by halving the gap to the last that did not (5
    replicas, not 8). Not simulated: replicas whose idle power over the trace's span exceeds
    `bound_j`; a vLLM cap at least as large as the most requests a run of a larger cap held
    (`seed`: such runs, by replicas), which would serve it the same."""
    span = run[-1]
    options: list[Option] = []
    larger = dict(seed)
    for entry in entries:
        def serve(replicas: int, entry=entry) -> Option:
            options.append(_replicated(c, entry, replicas, larger, run))
            return options[-1]
        replicas, last = 1, None
        while c.cost.waiting_w * replicas * span <= bound_j:
            option = serve(replicas)
            worst = _worst_miss(option)
            if option.meets:
                fails, meets = (replicas // 2 if replicas > 1 else 1), replicas
                while meets - fails > 1:  # the targets' replicas lie between
                    middle = (fails + meets) // 2
                    fails, meets = (fails, middle) if serve(middle).meets else (middle, meets)
                break
            # No more replicas help a figure no request gives (inf), nor a miss that grows.
            if (replicas * 2 > MAX_REPLICAS or worst == float("inf")
                    or (last is not None and worst > last * REPLICA_GAIN)):
                break
            replicas, last = replicas * 2, worst
    return options


def _replicated(c: Candidate, entry: tuple, replicas: int, larger: dict[int, Option],
                run: tuple) -> Option:
    """`entry` (a cap of `_caps`) over `replicas` copies: a larger cap's run where it held no
    more requests than this cap (`larger`, by replicas: updated), else simulated."""
    cap, budget, policy, own = entry
    inputs, outputs, arrival, targets, _ = run
    config = Config(c.gpu, c.engine, cap, budget, replicas)
    held = larger.get(replicas)
    if budget is not None and held is not None and held.peak_inflight <= cap:
        option = replace(held, config=config)
    else:
        option = _serve(c, config, policy, inputs, outputs, arrival, targets)
        larger[replicas] = option
    option.default = own
    return option


def _serve(c: Candidate, config: Config, policy, inputs, outputs, arrival,
           targets: tuple[Target, ...]) -> Option:
    """The trace over `config.replicas` copies of the engine, requests dealt in arrival
    order. Energy: each replica's work plus its idle power from the first arrival to the
    last answer of any."""
    order = np.argsort(arrival, kind="stable") if arrival is not None else np.arange(len(inputs))
    parts = [p for r in range(config.replicas) if len(p := order[r::config.replicas])]
    runs = [simulate(c.cost, inputs[p], outputs[p], None if arrival is None else arrival[p],
                     policy=policy) for p in parts]
    # Each replica's run starts at its first arrival (`order` is by arrival).
    starts = [0.0 if arrival is None else float(arrival[p[0]]) for p in parts]
    span = max(t + s.time_s for t, s in zip(starts, runs, strict=True)) - starts[0]
    idle_s = config.replicas * span - sum(s.busy_s for s in runs)  # every card, not busy
    energy = sum(s.busy_energy_j for s in runs) + c.cost.waiting_w * idle_s
    joined = {k: np.concatenate([getattr(s, k) for s in runs])
              for k in ("ttft_s", "tpot_s", "e2e_s")}
    option = Option(config, False, energy, sum(s.requests for s in runs),
                    sum(s.output_tokens for s in runs), span, latency(**joined), c.band,
                    c.predicted, sum(s.refused for s in runs),
                    peak_inflight=max((max(s.inflight_s) for s in runs if s.inflight_s),
                                      default=0))
    option.misses = [{"target": t.name, "limit_s": t.limit_s, "value_s": v,
                      "over": (v / t.limit_s - 1) if v is not None else None}
                     for t in targets
                     if (v := option.value(t)) is None or v > t.limit_s]
    return option


def _least(options: list[Option]) -> Option | None:
    """The least energy meeting the targets; within TIE of it, the engine's defaults first,
    then the fewest replicas: a saving smaller than the simulator's error is no reason to
    change a setting."""
    meeting = [o for o in options if o.meets]
    if not meeting:
        return None
    least = min(o.energy_j for o in meeting)
    near = [o for o in meeting if o.energy_j <= least * (1 + TIE)]
    return min(near, key=lambda o: (not o.default, o.config.replicas, o.energy_j))


def _worst_miss(option: Option) -> float:
    """The largest share by which the option misses a target (0: it meets them all;
    inf: a figure it cannot give)."""
    return max((m["over"] if m["over"] is not None else float("inf") for m in option.misses),
               default=0.0)


def _baseline(options: list[Option], chosen: Option) -> Option | None:
    """vLLM's defaults on the chosen card (else the chosen engine's), with the fewest
    replicas meeting the targets (where none does, those missing them least)."""
    for engine in ("vllm", chosen.config.engine):
        own = [o for o in options if o.config.gpu == chosen.config.gpu
               and o.config.engine == engine and o.default]
        if own:
            meeting = [o for o in own if o.meets]
            return (min(meeting, key=lambda o: o.config.replicas) if meeting
                    else min(own, key=lambda o: (_worst_miss(o), o.energy_j)))
    return None


def _front(options: list[Option], axis: Target) -> list[Option]:
    """The options no other beats on both energy and `axis`'s latency, by latency."""
    known = sorted((o for o in options if o.value(axis) is not None),
                   key=lambda o: (o.value(axis), o.energy_j))
    front, least = [], float("inf")
    for o in known:
        if o.energy_j < least * (1 - FRONT_STEP):
            front.append(o)
            least = o.energy_j
    return front
