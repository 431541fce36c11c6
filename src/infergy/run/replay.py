"""Replay a trace's own requests through an engine, offline, measuring the whole run: how far
is the binned estimate from a real run of the same requests? (The study never checked.)

Two batchings of the same requests:
- `binned`, as the estimator assumes: the requests of each of the study's ceiling bins, in
  trace order, in batches of that bin's B (the profile's B = max for the bin, or a fixed B).
- `natural`: the requests in arrival order, in batches of B, whatever their lengths.

Every request keeps its own input length (random token ids, seeded per request). A batch is
a static batch: its prompts are left-padded to the longest and every prompt generates the
batch's longest output, since a static batch runs until its longest request ends. Output
tokens are the requests' own; the rest of what the batch generated is padding, counted apart.
Requests past the bins' last edges are left out, as the estimator leaves them out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from infergy.engines import engine_class
from infergy.engines.base import Engine, EngineError
from infergy.engines.decoding import Decoding
from infergy.meter import Meter
from infergy.models import get_model
from infergy.models.build import make_prompts
from infergy.plan.batches import WARMUPS, Batch
from infergy.plan.tp import check_tp
from infergy.provenance import device_identity, run_metadata
from infergy.run.device import RunError, engine_options
from infergy.run.point import is_out_of_memory
from infergy.run.session import Session, place_this_process, quiet
from infergy.workloads import Trace


@dataclass
class BatchResult:
    size: int
    longest_input: int
    generated_per_prompt: int
    output_tokens: int  # the requests' own
    energy_j: float | None
    time_s: float
    bin: tuple[int, int] | None = None
    cold: dict | None = None  # warm-up "each": the batch's first run, before the measured one


@dataclass
class ReplayFigures:
    """What every replay records, offline or online: the columns of the store's `replays`
    table, and the energy per output token and per request they are divided into."""

    trace: str
    model: str
    engine: str
    batching: str  # offline: binned or natural; online: the arrival process
    decoding: str = "greedy"
    mode: str = "offline"
    status: str = "ok"
    error: str | None = None
    requests: int = 0
    output_tokens: int = 0  # the requests' own
    energy_j: float | None = None
    active_energy_j: float | None = None
    time_s: float = 0.0
    j_per_output_token: float | None = None
    j_per_request: float | None = None
    energy_reason: str | None = None
    tp: int = 1  # GPUs the model ran over (online through an --endpoint: GPUs measured)
    selection: dict = field(default_factory=dict)  # which of the trace's requests: sample
    # (N, or None for every request inside the bins) and seed; replays of one trace with the
    # same selection ran the same requests

    def divide(self, requests: int) -> None:
        """Energy per output token and per request (of `requests`), where energy was
        measured and there is something to divide it by."""
        if self.energy_j is not None and self.output_tokens:
            self.j_per_output_token = self.energy_j / self.output_tokens
            self.j_per_request = self.energy_j / requests

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReplayResult(ReplayFigures):
    """A measured replay: GPU energy (the study's measure) and time, summed over the batches'
    windows. Partial where `status` (ok, oom, failed, interrupted) is not ok: the batches
    measured before it are kept, `requests` counting theirs."""

    batches: list[BatchResult] = field(default_factory=list)
    padding_tokens: int = 0  # generated beyond a request's own length (static batches)
    meter_method: str | None = None
    warmup: dict | None = None
    warnings: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    estimate: dict | None = None  # the estimator on the same requests, and its errors




def request_prompt(spec, input_tokens: int, seed: int, request: int) -> list[int]:
    """A replayed request's prompt: random token ids of its own length, seeded by its index
    in the trace (the same prompt offline and online)."""
    return make_prompts(spec, 1, input_tokens, seed=seed * 1_000_003 + request)[0]


def replay_offline(engine: Engine, meter: Meter, trace: Trace, batches: list[Batch],
                   decoding: Decoding, *, batching: str, seed: int = 0,
                   warmup: str = "first",
                   progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Run the batches one after the other, each in its own measurement window; the replay's
    energy and time are their sums. Outside the windows: the prompts' making, and the
    engine's `prepare` for each new shape (hf-compiled compiles, hf-paged sizes its cache),
    which the profile's points leave out too. Warm-up, in windows of its own: "first", the
    first batch runs once first; "each", every batch does, as each profile point runs its
    shape before measuring it (each batch keeps its first run's figures as `cold`, the
    warm-up their sum); "none". A failure or Ctrl-C, in a warm-up run or a measured one,
    ends the replay with the batches measured before it kept (status failed, oom or
    interrupted; the error names a warm-up run that failed)."""
    if warmup not in WARMUPS:
        raise ValueError(f"warmup must be one of {', '.join(WARMUPS)}, not {warmup!r}")
    spec = engine.spec
    result = ReplayResult(trace.name, spec.name, engine.name, batching, decoding.label())
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    windows, shapes = [], set()
    warming = None  # the batch (from 1) whose warm-up run is running
    try:
        for n, batch in enumerate(batches):
            prompts = [request_prompt(spec, length, seed, r)
                       for r, length in zip(batch.requests, batch.input_tokens, strict=True)]
            shape = (len(prompts), max(batch.input_tokens), batch.generated_per_prompt)
            if shape not in shapes:
                shapes.add(shape)
                engine.prepare(*shape, decoding)
            cold = None
            if warmup == "each" or (n == 0 and warmup == "first"):
                warming = n + 1
                with meter.window("warmup") as w:
                    engine.generate(prompts, batch.generated_per_prompt, decoding)
                warming = None
                cold = {"time_s": w.measurement.duration_s, "energy_j": w.measurement.energy_j}
            with meter.window("batch", record_state=n == 0) as w:
                engine.generate(prompts, batch.generated_per_prompt, decoding)
            m = w.measurement
            windows.append(m)
            result.batches.append(BatchResult(
                len(batch.requests), max(batch.input_tokens), batch.generated_per_prompt,
                sum(batch.output_tokens), m.energy_j, m.duration_s, batch.bin,
                cold if warmup == "each" else None))
            if cold is not None:  # only a measured batch's: the sum of the batches' cold runs
                result.warmup = _add_runs(result.warmup, cold, warmup)
            if progress:
                progress(n + 1, len(batches))
    except KeyboardInterrupt:
        result.status, result.error = "interrupted", "stopped by Ctrl-C"
    except Exception as err:  # recorded: what was measured is kept
        result.status = "oom" if is_out_of_memory(err) else "failed"
        result.error = f"{type(err).__name__}: {err}"
    if result.error is not None and warming is not None:  # else a measured batch's
        result.error += f" (in batch {warming}'s warm-up run)"
    _summarize(result, batches, windows)
    result.provenance = {**run_metadata(meter), "time": started}
    return result


def _add_runs(total: dict | None, run: dict, mode: str) -> dict:
    """The warm-up's figures with one more run: time and energy summed (energy None once a
    run's could not be measured)."""
    if total is None:
        return {"mode": mode, "runs": 1, **run}
    energy = None if None in (total["energy_j"], run["energy_j"]) else \
        total["energy_j"] + run["energy_j"]
    return {**total, "runs": total["runs"] + 1, "time_s": total["time_s"] + run["time_s"],
            "energy_j": energy}


def _summarize(result: ReplayResult, batches: list[Batch], windows) -> None:
    """The replay's figures from the batches measured (all of them, unless it stopped)."""
    done = batches[:len(result.batches)]
    result.requests = sum(len(b.requests) for b in done)
    result.output_tokens = sum(sum(b.output_tokens) for b in done)
    result.padding_tokens = sum(len(b.requests) * b.generated_per_prompt
                                - sum(b.output_tokens) for b in done)
    result.time_s = sum(m.duration_s for m in windows)
    energies = [m.energy_j for m in windows]
    if windows and None not in energies:
        result.energy_j = sum(energies)
        active = [m.active_energy_j for m in windows]
        result.active_energy_j = None if None in active else sum(active)
        result.divide(result.requests)
    elif windows:
        result.energy_reason = next(m.reason for m in windows if m.energy_j is None)
    else:
        result.energy_reason = "no batch was measured"
    result.meter_method = windows[0].method if windows else None
    result.warnings = list(dict.fromkeys(w for m in windows for w in m.warnings))


@dataclass
class OfflineReplay:
    """What `replay_trace` runs: a model in an engine, and how."""

    model: str
    engine: str
    device: str = "auto"
    tp: int = 1
    dtype: str = "bfloat16"
    engine_options: list[str] = field(default_factory=list)  # key=value, to the engine
    idle_s: float = 5.0
    seed: int = 0
    warmup: str = "first"  # WARMUPS
    db: Path | None = None  # the results store the replays are recorded in
    stored: dict = field(default_factory=dict)  # the run's spec, as the store records it


def replay_trace(trace: Trace, plans: dict[str, list[Batch]], how: OfflineReplay, *,
                 estimate: Callable[[ReplayResult], dict] = lambda result: {},
                 selection: dict | None = None, profile_gpu: str | None = None,
                 argv: list[str] | None = None,
                 notes: Callable[..., None] = lambda text, style="dim": None,
                 status: Callable[[bool, str], object] = quiet,
                 ) -> list[ReplayResult] | int:
    """Replay `trace` in each batching of `plans` (kind -> batches) with one engine loaded
    once, each replay measured whole. Returns the replays for the process that reports, or
    the exit status where this process only launched the ranks (an engine of one process a
    GPU at TP > 1: this command line, `argv`, runs again as that many) or is a rank other than
    0. `estimate(result)` gives each replay's estimate beside it; a store (`how.db`) records
    each replay as it ends (ranks: all at the end). `notes(text, style)` is told what cannot be
    measured; `status(speaks, text)` gives a context whose `update(text)` shows progress.
    The engine and TP are checked against the model before any GPU work (EngineError,
    ParallelError)."""
    spec, engine_cls = get_model(how.model), engine_class(how.engine)
    engine_cls.check_support(spec, Decoding.parse("greedy"))
    check_tp(how.tp, spec, engine_cls)
    options = engine_options(how.engine_options)
    here = place_this_process(how.engine, how.tp, how.device, how.db, argv)
    if isinstance(here, int):  # launched the ranks
        return here
    speaks, store = here.speaks, here.store
    results: list[ReplayResult] = []
    with Session.start(here, how.tp, how.idle_s, status=status, notes=notes) as session:
        m, ranks = session.meter, session.ranks
        if ranks is not None:  # each rank made the plan: the same one?
            ranks.agree([(kind, [b.requests for b in batches])
                         for kind, batches in plans.items()], "the replay's batches")
        cards = {s.info.model for s in m.gpus}
        if profile_gpu is not None and cards and cards != {profile_gpu}:
            notes(f"the profile was measured on {profile_gpu}, this replay runs on "
                  f"{', '.join(sorted(cards))}: the estimate's error mixes the cards", "yellow")
        try:
            with status(speaks, f"infergy: loading {how.model} in {how.engine} ..."):
                session.load(how.engine, how.model, device=here.device, dtype=how.dtype,
                             options=options, tp=how.tp)
        except (EngineError, OSError, ValueError) as e:  # the engine refused
            raise RunError(str(e)) from None

        # One process: each replay stored as it ends. Ranks store theirs at the end, run and
        # all: rank 0 may be stopped with the others (one failing alone), which would leave
        # a run begun and never ended.
        run = None
        if store is not None and ranks is None:
            meta = run_metadata(m)
            run = store.start_run(device=device_identity(meta), meta=meta, spec=how.stored)
        try:
            for kind, batches in plans.items():
                with status(speaks, f"infergy: {kind} replay ...") as st:
                    r = replay_offline(session.engine, m, trace, batches, Decoding.parse("greedy"),
                                       batching=kind, seed=how.seed, warmup=how.warmup,
                                       progress=lambda n, total, k=kind: st.update(
                                           f"infergy: {k} replay, batch {n} of {total}"))
                r.estimate = {"none": f"the estimate is of one GPU's work (TP 1), this "
                                      f"replay ran over {how.tp}"} if how.tp > 1 \
                    else estimate(r)
                r.selection, r.tp = selection, how.tp
                results.append(r)
                if run is not None:
                    store.add_replay(run, device_identity(r.provenance), r.to_dict())
                if r.status != "ok":
                    break
        finally:  # Ctrl-C ends a replay as a result, recorded with its batches
            session.drop_engine()
            if store is not None:
                if run is not None:
                    store.end_run(run, _run_status(results, len(plans)))
                elif ranks is not None and results:
                    store.record_run(run_metadata(m), how.stored,
                                     replays=[r.to_dict() for r in results],
                                     status=_run_status(results, len(plans)))
                store.close()
    return results if speaks else 0  # rank 0 reports for all


def _run_status(results: list[ReplayResult], planned: int) -> str:
    statuses = {r.status for r in results}
    if statuses <= {"ok"} and len(results) == planned:
        return "finished"
    return "failed" if statuses & {"failed", "oom"} else "interrupted"
