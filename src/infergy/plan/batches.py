"""A replay's plan: which of a trace's requests run, and in which static batches, decided
before any GPU work.

Two batchings of the same requests:
- `binned`, as the estimator assumes: the requests of each of the study's ceiling bins, in
  trace order, in batches of that bin's B (the profile's B = max for the bin, or a fixed B).
- `natural`: the requests in arrival order, in batches of B, whatever their lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infergy.models.catalog import ModelSpec
from infergy.workloads import BinGrid, Binned, Trace

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


WARMUPS = ("first", "each", "none")  # replay_offline's warm-up: which batches run once first
MODES = ("offline", "online")


def replay_options(mode: str, batching: str, warmup: str | None) -> tuple[list[str], str]:
    """The batchings a replay runs (`batching`: "binned", "natural" or both, comma-separated)
    and its warm-up (None: offline's default, "first"); ReplayError naming the option that
    does not fit `mode`."""
    if mode not in MODES:
        raise ReplayError(f"--mode must be offline or online, got {mode!r}")
    kinds = [b.strip() for b in batching.split(",") if b.strip()]
    if not kinds or any(b not in BATCHINGS for b in kinds):
        raise ReplayError(f"--batching must be binned, natural or both, got {batching!r}")
    if warmup is not None and mode == "online":
        raise ReplayError("--warmup: for --mode offline (online, the requests go to a server "
                          "as they arrive: there are no batches to run first)")
    warmup = "first" if warmup is None else warmup
    if warmup not in WARMUPS:
        raise ReplayError(f"--warmup must be {', '.join(WARMUPS)}, got {warmup!r}")
    return kinds, warmup


def replay_requests(trace: Trace, grid: BinGrid, sample: int | None, seed: int,
                    source: str, spec: ModelSpec | None = None) -> tuple[Binned, np.ndarray]:
    """The trace binned on `grid` and the requests to replay (`select_requests`); ReplayError
    where none falls inside the bins, some have no input or no output tokens, or some are
    longer (input + output) than the context of `spec`, the model (to drop from `source`, the
    trace as the user named it)."""
    binned = grid.assign(trace.input_tokens, trace.output_tokens)
    requests = select_requests(binned, sample, seed)
    if not len(requests):
        raise ReplayError(f"{trace.name}: none of its {len(trace)} requests falls inside "
                          f"the study's bins")
    empty = int(((trace.input_tokens[requests] < 1) | (trace.output_tokens[requests] < 1))
                .sum())
    if empty:
        raise ReplayError(f"{empty} of the requests have no input or no output tokens: drop "
                          f"them from {source}")
    if spec is not None:
        _check_context(trace, requests, spec, source)
    return binned, requests


def _check_context(trace: Trace, requests: np.ndarray, spec: ModelSpec, source: str) -> None:
    """ReplayError where requests are longer (input + output) than the model's context: no
    batch size runs them."""
    lengths = trace.input_tokens[requests] + trace.output_tokens[requests]
    over = lengths > spec.max_context
    if over.any():
        worst = requests[int(np.argmax(lengths))]
        i, o = int(trace.input_tokens[worst]), int(trace.output_tokens[worst])
        raise ReplayError(
            f"{int(over.sum())} of the {len(requests)} requests replayed are longer than "
            f"{spec.name}'s context of {spec.max_context} tokens (input + output; the longest: "
            f"{i} + {o} = {i + o}): drop them from {source}, or choose "
            f"a model with a longer context (infergy models lists each one's)")


def plan_replay(trace: Trace, binned: Binned, requests: np.ndarray, kinds: list[str],
                batch_of: Callable[[tuple[int, int]], int], spec: ModelSpec,
                batch: int | None = None) -> dict[str, list[Batch]]:
    """Each batching of `kinds` (BATCHINGS) as its static batches: binned, `batch_of(bin)` at
    a time; natural, `batch` at a time (default: the smallest of the bins' B, which fits the
    longest requests). ReplayError where a batch needs more than the model's context."""
    by_bin = plan_binned(trace, binned, requests, batch_of)
    natural_b = batch or min(batch_of(b.bin) for b in by_bin)
    plans = {kind: by_bin if kind == "binned" else plan_natural(trace, requests, natural_b)
             for kind in kinds}
    for kind, batches in plans.items():  # a static batch holds its longest of each
        too_long = [b for b in batches
                    if max(b.input_tokens) + b.generated_per_prompt > spec.max_context]
        if too_long:  # each request fits (replay_requests); together they do not
            smaller = ("a smaller --batch" if kind == "natural" else
                       "--batching natural with a smaller --batch")
            raise ReplayError(
                f"{len(too_long)} {kind} batches need more than {spec.name}'s context of "
                f"{spec.max_context} tokens, though each of their requests fits: a static "
                f"batch pads every prompt to its longest and runs every one to its longest "
                f"output, e.g. {max(too_long[0].input_tokens)} + "
                f"{too_long[0].generated_per_prompt}: give {smaller}, or choose a model with "
                f"a longer context")
    return plans
