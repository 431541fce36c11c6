"""The simulator on exactly what a measured replay ran (`infergy replay`, stored in a results
store): its static batches offline, or its requests at the times they were sent online, so
that the simulated energy can be set beside the measured one."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np

from infergy.estimate.continuous import Continuous
from infergy.estimate.served import step_model
from infergy.estimate.simulate import Served, SimulationError, Static, policy_of, simulate
from infergy.estimate.steps import StepCost
from infergy.plan.batches import plan_binned, plan_natural, select_requests
from infergy.profile.load import EstimateError, shipped_profiles
from infergy.workloads import BinGrid, Trace


def replay_engine(replay: dict) -> str:
    """The engine a stored replay ran on: its own name offline; online, the server's kind
    (vllm, or vllm-eager where its command had --enforce-eager)."""
    if replay.get("mode") != "online":
        return replay["engine"]
    command = (replay.get("server") or {}).get("command") or []
    served = replay.get("served_by") or (
        "vllm" if any("vllm" in str(part) for part in command) else replay["engine"])
    return f"{served}-eager" if served == "vllm" and "--enforce-eager" in command else served


def server_caps(command: list[str]) -> dict[str, int]:
    """The batch caps a recorded vLLM server command set (`--max-num-seqs`,
    `--max-num-batched-tokens`, as infergy.run.servers writes them): `max_num_seqs`,
    `max_num_batched_tokens`; those not set are absent."""
    caps = {}
    for flag, value in itertools.pairwise(command):
        key = str(flag).removeprefix("--").replace("-", "_")
        if key in ("max_num_seqs", "max_num_batched_tokens") and str(value).isdigit():
            caps[key] = int(value)
    return caps


def predict_replay(replay: dict, model: str, stores: list[Path] | None = None,
                   trace: Trace | None = None,
                   card: str | None = None) -> tuple[Served | None, str | None]:
    """The simulator on what a measured replay ran, over the step-cost model of its engine on
    `card` (NVML's name; default: the card the run recorded) fitted to `stores` (default: the
    profiles shipped with infergy): (the simulated run, None), or (None, why) where no model
    can be fitted or the run rebuilt."""
    gpus = (replay.get("provenance") or {}).get("gpus") or []
    card = card or (gpus[0].get("model") if gpus else None)
    if card is None:
        return None, "the run recorded no GPU"
    engine = replay_engine(replay)
    try:
        cost = step_model(tuple(str(s) for s in stores or shipped_profiles()), model, engine,
                          card)[0]
        return simulate_replay(cost, replay, trace), None
    except (EstimateError, SimulationError) as e:
        return None, str(e)


def simulate_replay(cost: StepCost, replay: dict, trace: Trace | None = None) -> Served:
    """The simulator on a stored replay's result (the `result` JSON of the store's replays
    table). Online: each record's request at its send time through the engine's server policy.
    A server started with its own batch caps (`--max-num-seqs`, `--max-num-batched-tokens`
    in its recorded command) is simulated with them.
    Offline: the replay's batches: on an engine that pads, their stored shapes; otherwise each
    request at its own lengths, rebuilt from `trace` (the replay's trace) and the replay's
    selection of requests; SimulationError where they do not match what was stored."""
    if replay.get("mode") == "online":
        records = [r for r in replay.get("records") or [] if r.get("sent_s") is not None]
        if not records:
            raise SimulationError("the online replay stored no requests")
        policy = policy_of(cost, online=True)
        if isinstance(policy, Continuous):
            policy = replace(policy, **server_caps(
                (replay.get("server") or {}).get("command") or []))
        return simulate(cost, np.array([r["input_tokens"] for r in records]),
                        np.array([r["output_asked"] for r in records]),
                        np.array([r["sent_s"] for r in records]), policy=policy,
                        serving=f"online, {replay.get('batching')}")
    batches = replay.get("batches") or []
    if not batches:
        raise SimulationError("the offline replay stored no batches")
    policy = policy_of(cost)
    if isinstance(policy, Static):  # padded: a batch's shape is all its cost
        sizes = [b["size"] for b in batches]
        inputs = np.repeat([b["longest_input"] for b in batches], sizes)
        outputs = np.repeat([b["generated_per_prompt"] for b in batches], sizes)
        groups = np.split(np.arange(len(inputs)), np.cumsum(sizes)[:-1])
    else:
        inputs, outputs, groups = _rebuild(replay, batches, trace)
    return simulate(cost, inputs, outputs, policy=policy, batches=groups,
                    serving=f"offline, {replay.get('batching')} batches")


def _rebuild(replay: dict, batches: list[dict], trace: Trace):
    """The replayed requests' lengths and each batch's indices into them, planned again as
    the replay planned them (infergy.plan.batches) from its selection and stored batch
    sizes."""
    if trace is None:
        raise SimulationError("an offline replay needs its trace to rebuild its batches")
    selection = replay.get("selection") or {}
    binned = BinGrid.named("paper").assign(trace.input_tokens, trace.output_tokens)
    chosen = select_requests(binned, selection.get("sample"), selection.get("seed", 0))
    if replay.get("batching") == "binned":
        sizes: dict[tuple, int] = {}
        for b in batches:  # a bin's first batch is full: its B
            sizes.setdefault(tuple(b["bin"]), b["size"])
        plan = plan_binned(trace, binned, chosen, lambda edge: sizes.get(edge, 1))
    else:
        plan = plan_natural(trace, chosen, batches[0]["size"])
    if len(plan) != len(batches) or any(
            (len(p.requests), max(p.input_tokens), p.generated_per_prompt)
            != (b["size"], b["longest_input"], b["generated_per_prompt"])
            for p, b in zip(plan, batches, strict=False)):
        raise SimulationError("the replay's batches do not match its trace and selection "
                              "(another trace, grid or sample)")
    return planned(plan, trace)


def planned(plan, trace: Trace) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """A replay's planned batches (infergy.plan.batches) as the simulator takes them: the
    requests' input and output lengths in the order run, and each batch's indices into them."""
    sizes_in_order = [len(p.requests) for p in plan]
    flat = np.concatenate([np.asarray(p.requests, dtype=np.int64) for p in plan])
    groups = np.split(np.arange(len(flat)), np.cumsum(sizes_in_order)[:-1])
    return trace.input_tokens[flat], trace.output_tokens[flat], groups
