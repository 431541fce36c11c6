"""Measure one point: a model, an engine, a decoding strategy, a batch of B prompts of I
tokens each generating exactly O tokens, on this machine's GPU (or CPU).

For each point: a `prepare` window (compile, graph capture, cache sizing for this shape),
warm-up runs (untimed for the result, but their time and energy are reported), then
`repeats` measured runs. Each run has a window for the whole request and, inside it, one for
the prefill (the forward over the prompt that yields the first token) and one for the
decode (the other O - 1 tokens). Engines that cannot signal the first token get their
prefill measured by a run of the same prompts with O = 1, once per point after the warm-up
(saving a run per repeat; vLLM's 3 s prefill runs varied 0.2-0.7% between runs), and each
repeat's decode = its request - that prefill.

A run shorter than `min_window_s` (by the warm-up, then timed warm by the fastest of more
runs) is measured as that many runs back to back inside each window, figures divided by the
number of runs: the energy counter updates every 100 ms on an H100, and a 0.1-1 s window
varied up to 28% between repeats where a 2 s one varies under 5%. Its prefill then comes
from a 1-token run looped the same way, as for engines that cannot signal the first token,
since a window over several runs has no single first token.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from infergy.engines.base import Engine
from infergy.engines.decoding import SPECULATIVE_COUNTS, Decoding, speculative_rates
from infergy.meter import Measurement, Meter
from infergy.models.build import make_prompts
from infergy.models.flops import prefill_flops
from infergy.plan.point import Point, PointError, validate_point
from infergy.provenance import run_metadata
from infergy.store.quality import unsteady_repeats


@dataclass(frozen=True)
class Phase:
    """Energy (J) and time (s) of one phase of one run. `method`: how it was found ("window":
    its own measurement window; "separate run": a run with O = 1; "request - prefill").
    `runs`: the runs its window held back to back (the figures are the window's / runs)."""

    energy_j: float | None
    active_energy_j: float | None
    time_s: float
    method: str = "window"
    runs: int = 1

    @classmethod
    def of(cls, m: Measurement, method: str = "window", runs: int = 1) -> Phase:
        return cls(_per_run(m.energy_j, runs), _per_run(m.active_energy_j, runs),
                   m.duration_s / runs, method, runs)

    def minus(self, other: Phase) -> Phase:
        def sub(a, b):
            return None if a is None or b is None else a - b

        return Phase(sub(self.energy_j, other.energy_j),
                     sub(self.active_energy_j, other.active_energy_j),
                     self.time_s - other.time_s, "request - prefill", self.runs)


def _per_run(value: float | None, runs: int) -> float | None:
    return None if value is None else value / runs


# A run this short is not looped further: a window of at most this many runs.
MAX_RUNS_PER_WINDOW = 1000


# Runs timed before the windows ran up to 20% slower than the windows' own on an H100
# (hf-compiled at B = 1: 17 runs of a 2 s window lasted 1.67 s), so a window is sized to this
# much more than `min_window_s`.
WINDOW_MARGIN = 1.25


def runs_per_window(run_s: float | None, min_window_s: float) -> int:
    """How many back-to-back runs of `run_s` seconds one window holds to last `min_window_s`
    seconds (`WINDOW_MARGIN` more, as `run_s` is a timed run; 1: the run alone is long
    enough, or nothing asked)."""
    if min_window_s <= 0 or run_s is None or run_s >= min_window_s:
        return 1
    return min(MAX_RUNS_PER_WINDOW, math.ceil(WINDOW_MARGIN * min_window_s / max(run_s, 1e-9)))


@dataclass(frozen=True)
class Repeat:
    request: Phase
    prefill: Phase
    decode: Phase
    ttft_s: float | None  # time to the first token of the batch
    tpot_s: float | None  # time per output token after the first, per sequence
    avg_power_w: float | None
    method: str | None  # how the meter found GPU energy
    warnings: tuple[str, ...] = ()
    failed: bool = False
    energy_reason: str | None = None  # why energy is None
    decoding_stats: dict = field(default_factory=dict)  # the engine's (speculative: acceptance)
    gpu_energy_j: dict = field(default_factory=dict)  # each measured GPU's share of the request


@dataclass
class PointResult:
    """A measured point: medians over repeats, the repeats themselves, and provenance.
    Energies in J, times in s; None where the meter could not tell (see `energy_reason`)."""

    point: Point
    status: str  # "ok", "oom" or "failed"
    error: str | None = None
    energy_j: float | None = None  # whole request, the batch
    prefill_energy_j: float | None = None
    decode_energy_j: float | None = None
    active_energy_j: float | None = None  # above idle
    j_per_output_token: float | None = None
    j_per_request: float | None = None
    time_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    throughput_tok_s: float | None = None  # output tokens per second
    avg_power_w: float | None = None
    peak_memory_gib: float | None = None
    energy_cv: float | None = None  # coefficient of variation of energy over repeats
    time_cv: float | None = None
    prefill_method: str | None = None
    meter_method: str | None = None
    energy_reason: str | None = None
    prepare: Phase | None = None  # compile / graph capture / cache sizing for this shape
    warmup: Phase | None = None
    repeats: list[Repeat] = field(default_factory=list)
    gpu_state_start: dict = field(default_factory=dict)
    gpu_state_end: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    engine_info: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    # Speculative decoding: rounds, proposed and accepted tokens summed over the repeats, and
    # the acceptance observed (with a controlled acceptance: the rate actually drawn).
    decoding_stats: dict = field(default_factory=dict)
    # Each measured GPU's energy (median over the repeats; several with --tp), summing to
    # about `energy_j`; which GPUs those are: `provenance["gpus"]`.
    gpu_energy_j: dict = field(default_factory=dict)
    # Runs each repeat's window held back to back (min_window_s), the figures above per run.
    runs_per_window: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _cv(values):
    values = [v for v in values if v is not None]
    if len(values) < 2 or not statistics.mean(values):
        return None
    return statistics.stdev(values) / statistics.mean(values)


def _states(meter: Meter) -> dict:
    return {s.name: s.state() for s in meter.gpus}


# What an allocator says when memory runs out: CUDA's words, and the CPU's (torch's
# "DefaultCPUAllocator: can't allocate memory", a MemoryError's).
OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """torch's OutOfMemoryError, Python's MemoryError, or an engine's or allocator's message
    saying the same (on a CPU, torch raises a RuntimeError: the search must halve there
    too, not store the batch as failed and try it again on every resume)."""
    text = str(err).lower()
    return (type(err).__name__ == "OutOfMemoryError" or isinstance(err, MemoryError)
            or any(words in text for words in OUT_OF_MEMORY_WORDS))


def measure_point(engine: Engine, point: Point, meter: Meter, *, repeats: int = 3,
                  warmup: int = 1, seed: int = 0, prompts: list[list[int]] | None = None,
                  min_window_s: float = 0.0, progress=None) -> PointResult:
    """Measure `point` with an engine whose model is loaded. Out of memory is a result
    (status "oom"), not an exception; so is an engine failure (status "failed").

    `prompts` (B lists of I token ids) replace the default random ones, e.g. real text from
    `make_prompts(..., tokenizer=..., text=...)`. `min_window_s`: a run shorter than this
    (after the warm-up, timed by the fastest of more runs) is repeated back to back in each
    window until it lasts about as long, the figures per run (0: one run a window)."""
    if repeats < 1:
        raise PointError(f"repeats must be at least 1, got {repeats}")
    if not min_window_s >= 0:
        raise PointError(f"min_window_s must be seconds >= 0, got {min_window_s!r}")
    if min_window_s > 0 and warmup < 1:
        raise PointError("min_window_s needs a warm-up run (warmup >= 1): it times a run")
    decoding = validate_point(point, engine.spec)
    engine.check_decoding(decoding)
    result = PointResult(point=point, status="ok", provenance=run_metadata(meter))
    batch, output_tokens = point.batch, point.output_tokens
    if prompts is None:
        prompts = make_prompts(engine.spec, batch, point.input_tokens, seed=seed)
    elif len(prompts) != batch or any(len(p) != point.input_tokens for p in prompts):
        raise PointError(f"prompts must be {batch} lists of {point.input_tokens} token ids")
    say = progress or (lambda message: None)
    open_windows: list = []
    try:
        say("prepare")
        with meter.window("prepare") as w:
            engine.prepare(batch, point.input_tokens, output_tokens, decoding)
        result.prepare = Phase.of(w.measurement)
        say("warm-up")
        with meter.window("warmup") as w:
            for _ in range(warmup):
                engine.generate(prompts, output_tokens, decoding)
        result.warmup = Phase.of(w.measurement) if warmup else None
        runs = _runs_for(meter, lambda: engine.generate(prompts, output_tokens, decoding),
                         result.warmup.time_s / warmup if warmup else None, min_window_s)
        separate = None
        if runs > 1 or not engine.first_token_hook_for(decoding):
            say("prefill (1-token run)")
            separate = _prefill_run(engine, meter, prompts, decoding, min_window_s,
                                    open_windows)
        engine.reset_peak_memory()
        result.gpu_state_start = _states(meter)
        for r in range(repeats):
            say(f"repeat {r + 1}/{repeats}")
            result.repeats.append(_one_repeat(engine, meter, prompts, output_tokens, decoding,
                                              open_windows, separate, runs))
        result.gpu_state_end = _states(meter)
        result.peak_memory_gib = engine.peak_memory_gib()
    except Exception as err:  # every engine failure becomes a recorded result
        result.status = "oom" if is_out_of_memory(err) else "failed"
        result.error = f"{type(err).__name__}: {err}"
        meter.stop(*open_windows)
        return result
    _summarize(result)
    _check_prefill(result, engine.spec, max(1, len(meter.gpus)))
    return result


# Dense bf16 peak of the fastest GPU there is (B200: about 2.25 PFLOP/s), with some margin.
PLAUSIBLE_FLOPS_PER_GPU = 3e15


def _check_prefill(result: PointResult, spec, gpus: int) -> None:
    """Warn when the prefill ran faster than any GPU could compute it: a prompt cache (not
    the model) served it, and the energy of the point lacks the prefill."""
    p = result.point
    if not result.ttft_s:
        return
    rate = prefill_flops(spec, p.input_tokens, p.batch, causal_attention=True) / result.ttft_s
    if rate > PLAUSIBLE_FLOPS_PER_GPU * gpus:
        result.warnings.append(
            f"prefill implausibly fast: {rate / 1e15:.1f} PFLOP/s over {gpus} GPU(s), above "
            f"any GPU's dense peak; a prompt (prefix) cache probably served it, so the "
            f"energy lacks the prefill: turn the engine's prefix caching off"
        )


def _prefill_run(engine, meter, prompts, decoding, min_window_s: float,
                 open_windows) -> Phase:
    """The point's prefill, by runs generating 1 token: one, then as many back to back as
    last `min_window_s` where that one was shorter (the first then served to time a run)."""
    phase = _prefill_window(engine, meter, prompts, decoding, 1, open_windows)
    runs = _runs_for(meter, lambda: engine.generate(prompts, 1, decoding), phase.time_s,
                     min_window_s)
    return phase if runs == 1 else _prefill_window(engine, meter, prompts, decoding, runs,
                                                   open_windows)


# The runs that count a window's runs last at least this share of the window.
TIMING_SHARE = 0.25
# A first run this many windows long is taken as long without timing more runs.
FIRST_RUN_DOUBT = 4


def _runs_for(meter, run, first_s: float | None, min_window_s: float) -> int:
    """How many runs back to back a window holds to last `min_window_s`: 1 where a first run
    (`first_s`) lasted `FIRST_RUN_DOUBT` windows, else as many as the fastest run says, of
    runs timed back to back in a window of their own (`TIMING_SHARE` of the window, at least
    one run) with the engine now warm. One run alone misleads: on a busy machine any run can
    take twice as long, and counted from such a run a window fell 2x short; a first run of a
    new shape carries one-off seconds besides (hf-eager on an H100: 2.7 s for runs of 0.19 s,
    so that windows of one run were 0.19 s long, their CVs up to 16%). Every rank decides as
    rank 0 (`Meter.share`), run by run, for they must run the same work."""
    if min_window_s <= 0 or not meter.share(
            first_s is not None and first_s < FIRST_RUN_DOUBT * min_window_s):
        return 1
    fastest = math.inf
    with meter.window("timing"):
        start = meter.clock()
        while True:
            meter.sync()
            t = meter.clock()
            run()
            meter.sync()
            fastest = min(fastest, meter.clock() - t)
            if not meter.share(meter.clock() - start < TIMING_SHARE * min_window_s):
                break
    return meter.share(runs_per_window(fastest, min_window_s))


def _prefill_window(engine, meter, prompts, decoding, runs: int, open_windows) -> Phase:
    window = meter.start("prefill")
    open_windows[:] = [window]
    for _ in range(runs):
        engine.generate(prompts, 1, decoding)
    (m,) = meter.stop(window)
    open_windows.clear()
    return Phase.of(m, "separate run", runs)


def _one_repeat(engine, meter, prompts, output_tokens, decoding, open_windows,
                separate: Phase | None, runs: int = 1) -> Repeat:
    """One measured request (`runs` of them back to back in its window, the figures per
    run); `separate`: the point's prefill by 1-token runs (None: the engine signals the
    first token, and one run a window)."""
    notes: list[str] = []
    hook = separate is None
    request = meter.start("request")
    open_windows[:] = [request]
    windows = {}
    if hook:
        windows["prefill"] = request.fork("prefill")
        open_windows.append(windows["prefill"])

        def on_first_token():
            windows["decode"] = windows["prefill"].split("decode")
            open_windows.append(windows["decode"])
    else:
        on_first_token = None
    for _ in range(runs):
        gen = engine.generate(prompts, output_tokens, decoding, on_first_token)
    if "decode" in windows:
        decode_m, request_m = meter.stop(windows["decode"], request)
        prefill_m = windows["prefill"].measurement
        prefill, decode = Phase.of(prefill_m), Phase.of(decode_m)
        req = Phase.of(request_m)
        if prefill_m.method != decode_m.method:
            # A short prefill read by sampled power, the decode and the request by the
            # counter: the decode's counter step holds what the prefill's window did not see,
            # so the two did not add up to the request. The decode is what the request
            # leaves once the prefill is taken out.
            decode = req.minus(prefill)
    else:
        (request_m,) = meter.stop(*open_windows)
        prefill, req = separate, Phase.of(request_m, runs=runs)
        decode = req.minus(prefill)
        if decode.time_s <= 0 or (decode.energy_j is not None and decode.energy_j < 0):
            # The 1-token run cost more than the whole request (fixed per-call overhead
            # dominates): a difference would be a made-up, negative decode.
            notes.append(
                f"decode not measurable as request - prefill: the 1-token prefill run "
                f"({prefill.time_s:.3g} s) was not shorter than the request "
                f"({req.time_s:.3g} s)"
            )
            decode = Phase(None, None, decode.time_s, "request - prefill (unmeasurable)",
                           runs)
    open_windows.clear()
    steps = gen.token_times_s
    ttft = gen.first_token_s if gen.first_token_s is not None else prefill.time_s
    if len(steps) >= 2:
        tpot = (steps[-1] - steps[0]) / (len(steps) - 1)
    elif output_tokens > 1 and decode.time_s > 0:
        tpot = decode.time_s / (output_tokens - 1)
    else:
        tpot = None
    return Repeat(
        request=req, prefill=prefill, decode=decode, ttft_s=ttft, tpot_s=tpot,
        avg_power_w=request_m.avg_power_w, method=request_m.method,
        warnings=(*request_m.warnings, *notes), failed=request_m.failed,
        energy_reason=request_m.reason, decoding_stats=gen.stats,  # of the last run
        gpu_energy_j={d.device: _per_run(d.energy_j, runs) for d in request_m.devices
                      if d.kind == "gpu"},
    )


def _summarize(result: PointResult) -> None:
    reps = result.repeats
    p = result.point
    result.energy_j = _median(r.request.energy_j for r in reps)
    result.prefill_energy_j = _median(r.prefill.energy_j for r in reps)
    result.decode_energy_j = _median(r.decode.energy_j for r in reps)
    result.active_energy_j = _median(r.request.active_energy_j for r in reps)
    result.time_s = _median(r.request.time_s for r in reps)
    result.ttft_s = _median(r.ttft_s for r in reps)
    result.tpot_s = _median(r.tpot_s for r in reps)
    result.avg_power_w = _median(r.avg_power_w for r in reps)
    result.energy_cv = _cv([r.request.energy_j for r in reps])
    result.time_cv = _cv([r.request.time_s for r in reps])
    result.prefill_method = reps[0].prefill.method
    result.runs_per_window = reps[0].request.runs
    result.meter_method = reps[0].method
    result.energy_reason = reps[0].energy_reason
    result.gpu_energy_j = {gpu: _median(r.gpu_energy_j.get(gpu) for r in reps)
                           for gpu in reps[0].gpu_energy_j}
    tokens = p.batch * p.output_tokens
    if result.energy_j is not None:
        result.j_per_output_token = result.energy_j / tokens
        result.j_per_request = result.energy_j / p.batch
    if result.time_s:
        result.throughput_tok_s = tokens / result.time_s
    counts = [r.decoding_stats for r in reps if r.decoding_stats]
    if counts and Decoding.parse(p.decoding).strategy == "speculative":
        result.decoding_stats = speculative_rates({k: None if any(c[k] is None for c in counts)
                                                   else sum(c[k] for c in counts)
                                                   for k in SPECULATIVE_COUNTS})
    if any(r.failed for r in reps):
        result.warnings.append("a sensor failed during a repeat: see repeats")
    lost = [n for n, r in enumerate(reps, 1) if r.request.energy_j is None]
    if lost and result.energy_j is not None:  # the medians are of the other repeats
        why = next(r.energy_reason for r in reps if r.request.energy_j is None)
        result.warnings.append(f"repeat {', '.join(map(str, lost))} of {len(reps)} measured "
                               f"no energy ({why}): the energies are the other repeats' "
                               f"medians")
    unsteady = unsteady_repeats(result)
    if unsteady:
        result.warnings.append(unsteady)
    result.warnings.extend(dict.fromkeys(w for r in reps for w in r.warnings))
