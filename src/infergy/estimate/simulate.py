"""The serving simulator: a workload's requests through an engine's batching policy, at their
arrivals, step by step over a fitted step-cost model (infergy.estimate.steps); no GPU.

Two policies, as the engines run them:
- static batches, as transformers' `generate` runs them (hf-eager, hf-compiled): every prompt
  of a batch padded to its longest, every request run to its longest output; one prefill step,
  then one decode step a token. Offline the batches are given (the study's binned batches, or
  natural ones in arrival order); online the engine takes up to `batch` waiting requests each
  time it is free.
- continuous batching, as vLLM V1 runs it (vllm, vllm-eager): infergy.estimate.continuous.

Arrivals: all at once (offline), or each request's time (infergy.workloads.arrivals). What
comes out (`Served`): GPU energy busy and idle, run time, J per request and per output token,
TTFT / TPOT / end-to-end percentiles, requests in flight over time, the share of time idle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from infergy.estimate.continuous import Clock, Continuous, run_continuous
from infergy.estimate.steps import WAITING_SEEN, StepCost, static_batch_features

STATIC_ENGINES = ("hf-eager", "hf-compiled")
# hf-paged (transformers' continuous batching) sizes its cache and token budget per batch
# shape (infergy.engines.paged): no policy of its own here yet.
CONTINUOUS_ENGINES = ("vllm", "vllm-eager")
# vLLM 0.26's OpenAI server on a card of 70 GiB or more (engine/arg_utils.py,
# get_batch_defaults), and its default share of the card's memory (config/cache.py); infergy's
# offline engine passes 0.9 (infergy.engines.vllm).
SERVER_BATCHED_TOKENS = 8192
SERVER_MEMORY_SHARE = 0.92


@dataclass(frozen=True)
class Static:
    """Static batches of at most `batch` requests, prompts padded to the longest."""

    batch: int
    kind: str = "static"


class SimulationError(ValueError):
    """A simulation that cannot be made as asked."""


@dataclass
class Served:
    """A simulated run. Energies in J (GPU, idle power included), times in s."""

    engine: str
    gpu: str
    serving: str  # how it was served, in words
    requests: int  # served
    output_tokens: int  # the requests' own
    generated_tokens: int  # every token generated, a static batch's padding included
    time_s: float  # the first arrival to the last answer
    busy_s: float
    idle_s: float  # no request in flight
    busy_energy_j: float
    idle_energy_j: float
    steps: int
    preemptions: int
    ttft_s: np.ndarray
    e2e_s: np.ndarray
    tpot_s: np.ndarray  # (end to end - TTFT) / (output - 1), requests of 2 tokens or more
    inflight_s: dict[int, float]  # requests in flight (waiting or running) -> seconds
    refused: int = 0  # longer than the engine takes (its context, or its whole KV cache)
    notes: list[str] = field(default_factory=list)

    @property
    def energy_j(self) -> float:
        return self.busy_energy_j + self.idle_energy_j

    @property
    def j_per_request(self) -> float:
        return self.energy_j / self.requests

    @property
    def j_per_output_token(self) -> float | None:
        return self.energy_j / self.output_tokens if self.output_tokens else None

    @property
    def idle_share(self) -> float:
        return self.idle_s / self.time_s if self.time_s else 0.0

    def latency(self) -> dict[str, dict[str, float] | None]:
        """p50, p90, p99 of TTFT, TPOT and end to end, in s (None where no request has it)."""
        return latency(self.ttft_s, self.tpot_s, self.e2e_s)

    def to_dict(self) -> dict:
        """JSON-ready figures (no per-request arrays)."""
        return {"engine": self.engine, "gpu": self.gpu, "serving": self.serving,
                "requests": self.requests, "refused": self.refused,
                "output_tokens": self.output_tokens, "generated_tokens": self.generated_tokens,
                "energy_j": self.energy_j, "busy_energy_j": self.busy_energy_j,
                "idle_energy_j": self.idle_energy_j, "time_s": self.time_s,
                "busy_s": self.busy_s, "idle_s": self.idle_s, "idle_share": self.idle_share,
                "j_per_request": self.j_per_request,
                "j_per_output_token": self.j_per_output_token, "steps": self.steps,
                "preemptions": self.preemptions, "latency": self.latency(),
                "inflight_s": {str(k): v for k, v in sorted(self.inflight_s.items())},
                "notes": self.notes}


def latency(ttft_s: np.ndarray, tpot_s: np.ndarray,
            e2e_s: np.ndarray) -> dict[str, dict[str, float] | None]:
    """p50, p90, p99 of each request's TTFT, TPOT and end to end (NaN: a request without
    it), in s; None where no request has it."""
    return {name: _percentiles(values) for name, values in
            (("ttft_s", ttft_s), ("tpot_s", tpot_s), ("e2e_s", e2e_s))}


def _percentiles(values: np.ndarray) -> dict[str, float] | None:
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def policy_of(cost: StepCost, online: bool = False) -> Static | Continuous:
    """The engine's policy as its points were measured (`cost.batching`), or as vLLM's
    server runs it (`online`: its own token budget and memory share)."""
    b = dict(cost.batching)
    if b.get("kind") == "static":
        return Static(int(b["batch"]))
    if online:
        extra = (SERVER_MEMORY_SHARE - b["memory_share"]) * b["memory_bytes"]
        b["kv_blocks"] += int(extra // b["block_bytes"])
        b["max_num_batched_tokens"] = SERVER_BATCHED_TOKENS
    return Continuous(int(b["kv_blocks"]), int(b["max_num_batched_tokens"]),
                      int(b["max_num_seqs"]), int(b["block_size"]))


def simulate(cost: StepCost, input_tokens: np.ndarray, output_tokens: np.ndarray,
             arrival_s: np.ndarray | None = None, *, policy: Static | Continuous | None = None,
             batches: Sequence[np.ndarray] | None = None, serving: str = "",
             own_outputs: np.ndarray | None = None) -> Served:
    """Serve the requests on the engine of `cost` with `policy` (default: as measured).
    `batches` (indices into the requests): static batches run back to back, offline (on a
    continuous engine, each batch one offline run of its requests, each to the batch's longest
    output, as `infergy replay` runs them); otherwise the requests arrive at `arrival_s`
    (None: all at once) and the policy forms its batches. `own_outputs`: the output tokens
    counted as the requests' own where they differ from those served (a request of none runs
    as one: its J per output token counts none)."""
    policy = policy or policy_of(cost)
    inputs = np.asarray(input_tokens, dtype=np.int64)
    outputs = np.asarray(output_tokens, dtype=np.int64)
    if (inputs < 1).any() or (outputs < 1).any():
        raise SimulationError("every request needs at least one input and one output token")
    n = len(inputs)
    if batches is not None:
        groups = [np.asarray(b, dtype=np.int64) for b in batches]
        asked = outputs.copy()
        for g in groups:  # a batch runs every request to its longest output
            asked[g] = outputs[g].max()
        arrival = np.zeros(n)
    else:
        arrival = np.zeros(n) if arrival_s is None else np.asarray(arrival_s, dtype=float)
        order = np.argsort(arrival, kind="stable")
        groups, asked = None, outputs.copy()  # a static batch's padding is written in
    served = np.ones(n, dtype=bool)
    if isinstance(policy, Continuous):
        served = inputs + asked <= policy.kv_tokens
    clock = Clock(n, float(arrival.min()) if n else 0.0)
    if isinstance(policy, Static):
        _static(cost, policy, inputs, asked, arrival, groups, clock)
    elif groups is not None:
        for g in groups:
            g = g[served[g]]
            if len(g):
                clock.call(cost, len(g))
                run_continuous(cost, policy, np.full(len(g), clock.now), inputs[g], asked[g],
                               clock, g)
    else:
        o = order[served[order]]
        if arrival_s is None:  # offline: one call of the engine
            clock.call(cost, len(o))
        run_continuous(cost, policy, arrival[o], inputs[o], asked[o], clock, o)
    own = outputs if own_outputs is None else np.asarray(own_outputs, dtype=np.int64)
    return _served(cost, policy, clock, arrival, served, outputs, asked, serving, own)


def _static(cost: StepCost, policy: Static, inputs, outputs, arrival, groups, clock) -> None:
    """Static batches: `groups` back to back, or online up to `policy.batch` waiting requests
    each time the engine is free. `outputs`: what each request runs to, its batch's longest
    output written in."""
    if groups is None:
        order = np.argsort(arrival, kind="stable")
        times = arrival[order]
        k = 0
        while k < len(order):
            clock_start = max(clock.now, arrival[order[k]])
            j = k + 1
            while j < len(order) and j - k < policy.batch and arrival[order[j]] <= clock_start:
                j += 1
            # in flight: the batch, and the requests arrived by then that wait for the next
            _batch(cost, order[k:j], inputs, outputs, arrival, clock,
                   lambda now, j=j: int(np.searchsorted(times, now, side="right")) - j)
            k = j
        return
    for g in groups:
        _batch(cost, g, inputs, outputs, arrival, clock)


def _batch(cost: StepCost, g: np.ndarray, inputs, outputs, arrival, clock: Clock,
           waiting=lambda now: 0) -> None:
    """One static batch from when the engine is free and its first request has arrived; every
    request runs to the longest output (written into `outputs`). `waiting(now)`: how many
    requests wait for a later batch, at the start of its prefill and of its decoding."""
    clock.wait_until(float(arrival[g].max()))
    b, longest, out = len(g), int(inputs[g].max()), int(outputs[g].max())
    outputs[g] = out
    prefill, decode = static_batch_features(b, longest, out, cost.experts)
    clock.run(prefill, cost.time(prefill), b + waiting(clock.now))
    clock.first_token[g] = clock.now
    clock.run(decode, cost.time(decode), b + waiting(clock.now))
    clock.end[g] = clock.now


def _served(cost, policy, clock: Clock, arrival, served, outputs, asked, serving,
            own) -> Served:
    ttft = clock.first_token[served] - arrival[served]
    e2e = clock.end[served] - arrival[served]
    many = outputs[served] > 1
    tpot = np.full(len(e2e), np.nan)
    tpot[many] = (e2e[many] - ttft[many]) / (outputs[served][many] - 1)
    start = float(arrival.min()) if len(arrival) else 0.0
    refused = int((~served).sum())
    notes = [f"{refused} requests longer than the engine's whole KV cache "
             f"({policy.kv_tokens} tokens) left out"] if refused else []
    if clock.idle_s > 0 and cost.serving_idle_w is None:
        notes.append(f"the {clock.idle_s:.0f} s with no request in flight are charged at the "
                     f"card's bare idle power ({cost.idle_w:.0f} W): the power of {cost.engine} "
                     f"waiting with its model loaded is not measured on this card "
                     f"({WAITING_SEEN}), so they may be under-charged")
    return Served(cost.engine, cost.gpu, serving or policy.kind, int(served.sum()),
                  int(own[served].sum()), int(asked[served].sum()), clock.now - start,
                  clock.busy_s, clock.idle_s,
                  cost.active_energy(clock.features, clock.busy_s) + cost.idle_w * clock.busy_s,
                  cost.waiting_w * clock.idle_s, int(clock.features[0]), clock.preemptions,
                  ttft, e2e, tpot, clock.inflight_s, refused, notes)
