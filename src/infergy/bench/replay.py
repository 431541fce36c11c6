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

import numpy as np

from infergy.bench.point import is_out_of_memory, run_metadata
from infergy.decoding import Decoding
from infergy.engines.base import Engine
from infergy.meter import Meter
from infergy.models.build import make_prompts
from infergy.workloads import Binned, Trace

BATCHINGS = ("binned", "natural")


class ReplayError(ValueError):
    """A replay that cannot be run as asked; raised before any GPU work."""


@dataclass(frozen=True)
class Batch:
    """Requests run together: indices into the trace and their own lengths."""

    requests: tuple[int, ...]
    input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    bin: tuple[int, int] | None = None  # (I*, O*): the bin's edges, for binned batches

    @property
    def generated_per_prompt(self) -> int:
        return max(self.output_tokens)


def select_requests(binned: Binned, sample: int | None, seed: int) -> np.ndarray:
    """The requests to replay, in trace order: those inside the bins, or a seeded sample of
    `sample` of them."""
    kept = np.flatnonzero(binned.kept)
    if sample is None or sample >= len(kept):
        return kept
    if sample < 1:
        raise ReplayError(f"--sample must be at least 1, got {sample}")
    return np.sort(np.random.default_rng(seed).choice(kept, size=sample, replace=False))


def _batch(trace: Trace, chunk, edge=None) -> Batch:
    return Batch(tuple(int(r) for r in chunk), tuple(int(trace.input_tokens[r]) for r in chunk),
                 tuple(int(trace.output_tokens[r]) for r in chunk), edge)


def plan_natural(trace: Trace, requests: np.ndarray, batch: int) -> list[Batch]:
    """The requests in arrival order (trace order where it has no times), B at a time."""
    if batch < 1:
        raise ReplayError(f"batch size must be at least 1, got {batch}")
    order = requests
    if trace.arrival_s is not None:
        order = requests[np.argsort(trace.arrival_s[requests], kind="stable")]
    return [_batch(trace, order[k:k + batch]) for k in range(0, len(order), batch)]


def plan_binned(trace: Trace, binned: Binned, requests: np.ndarray,
                batch_of: Callable[[tuple[int, int]], int]) -> list[Batch]:
    """Each bin's requests in trace order, `batch_of((I*, O*))` at a time; bins in grid
    order."""
    grid = binned.grid
    batches = []
    keys = binned.input_bin[requests] * len(grid.output_edges) + binned.output_bin[requests]
    for key in np.unique(keys):
        members = requests[keys == key]
        edge = (grid.input_edges[key // len(grid.output_edges)],
                grid.output_edges[key % len(grid.output_edges)])
        size = batch_of(edge)
        if size < 1:
            raise ReplayError(f"batch size for bin I={edge[0]} O={edge[1]} must be at least 1, "
                              f"got {size}")
        batches += [_batch(trace, members[k:k + size], edge)
                    for k in range(0, len(members), size)]
    return batches


@dataclass
class BatchResult:
    size: int
    longest_input: int
    generated_per_prompt: int
    output_tokens: int  # the requests' own
    energy_j: float | None
    time_s: float
    bin: tuple[int, int] | None = None


@dataclass
class ReplayResult:
    """A measured replay. Energy over one window around every batch (GPU, the study's
    measure); each batch's own window too. Partial where `status` is not ok: the batches
    measured before the failure are kept."""

    trace: str
    model: str
    engine: str
    batching: str
    decoding: str
    mode: str = "offline"
    status: str = "ok"  # ok, oom, failed
    error: str | None = None
    requests: int = 0  # replayed (in the batches measured)
    batches: list[BatchResult] = field(default_factory=list)
    output_tokens: int = 0  # the requests' own
    padding_tokens: int = 0  # generated beyond a request's own length (static batches)
    energy_j: float | None = None
    active_energy_j: float | None = None
    time_s: float = 0.0
    j_per_output_token: float | None = None
    j_per_request: float | None = None
    energy_reason: str | None = None
    meter_method: str | None = None
    warmup: dict | None = None
    warnings: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    estimate: dict | None = None  # the estimator on the same requests, and its errors

    def to_dict(self) -> dict:
        return asdict(self)


def replay_offline(engine: Engine, meter: Meter, trace: Trace, batches: list[Batch],
                   decoding: Decoding, *, batching: str, seed: int = 0, warmup: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> ReplayResult:
    """Run the batches one after the other inside one measurement window. With `warmup`, the
    first batch runs once before it, in a window of its own (first-run allocation and
    kernel selection are not the workload's)."""
    spec = engine.spec
    result = ReplayResult(trace.name, spec.name, engine.name, batching, decoding.label())
    prompts_of = {}

    def prompts(batch: Batch) -> list[list[int]]:
        return [prompts_of.setdefault(r, make_prompts(spec, 1, n, seed=seed * 1_000_003 + r)[0])
                for r, n in zip(batch.requests, batch.input_tokens, strict=True)]

    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    whole = None
    try:
        if warmup and batches:
            with meter.window("warmup") as w:
                engine.generate(prompts(batches[0]), batches[0].generated_per_prompt, decoding)
            result.warmup = {"time_s": w.measurement.duration_s,
                             "energy_j": w.measurement.energy_j}
        whole = meter.start("replay", record_state=True)
        for n, batch in enumerate(batches):
            ids = prompts(batch)
            with meter.window("batch") as w:
                engine.generate(ids, batch.generated_per_prompt, decoding)
            m = w.measurement
            result.batches.append(BatchResult(
                len(batch.requests), max(batch.input_tokens), batch.generated_per_prompt,
                sum(batch.output_tokens), m.energy_j, m.duration_s, batch.bin))
            if progress:
                progress(n + 1, len(batches))
    except Exception as err:  # recorded: what was measured is kept
        result.status = "oom" if is_out_of_memory(err) else "failed"
        result.error = f"{type(err).__name__}: {err}"
    finally:
        if whole is not None:
            (total,) = meter.stop(whole)
            _summarize(result, batches, total)
    result.provenance = {**run_metadata(meter), "time": started}
    return result


def _summarize(result: ReplayResult, batches: list[Batch], total) -> None:
    done = batches[:len(result.batches)]
    result.requests = sum(len(b.requests) for b in done)
    result.output_tokens = sum(sum(b.output_tokens) for b in done)
    result.padding_tokens = sum(len(b.requests) * b.generated_per_prompt
                                - sum(b.output_tokens) for b in done)
    result.time_s = total.duration_s
    result.energy_j, result.active_energy_j = total.energy_j, total.active_energy_j
    result.energy_reason, result.meter_method = total.reason, total.method
    result.warnings = list(total.warnings)
    if result.energy_j is not None and result.requests:
        result.j_per_output_token = result.energy_j / result.output_tokens
        result.j_per_request = result.energy_j / result.requests
