"""Fit a step-cost model (infergy.estimate.steps) to measured points, and say how well it
predicts the points it was not fitted to.

Each measured point (B prompts of I tokens generating O tokens each) gives two windows: the
prefill (a run generating one token) and the whole request. The steps an engine runs for a
window are known (the simulator schedules the point's batch exactly as for a workload), so each
window's summed features are known, and its time and its energy above idle are linear in the
coefficients: least squares over the windows, each weighted by 1 / its measured value (every
window counts by its relative error, the short as much as the long), coefficients kept
non-negative (a step never takes less time for holding more work).

A card whose other models are calibrated on the engine gives a prior (`fit_step_cost`'s
`prior`: their prediction of this model, infergy.estimate.transfer.card_prior): each
coefficient's relative distance from the prior's counts as PRIOR_WEIGHT of one window's
relative error. A design of 24 points leaves features that move together (a large model's
B = max points all fill its KV cache, so its decoding sequences and their context grow
together) split between them; the card's other models settle the split, and a model with
many points is fitted by its points.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infergy.estimate.continuous import Continuous, run_continuous
from infergy.estimate.simulate import CONTINUOUS_ENGINES, STATIC_ENGINES, Static, policy_of
from infergy.estimate.steps import CALL, FEATURES, StepCost, routing, static_batch_features
from infergy.models import get_model
from infergy.models.flops import kv_cache_bytes_per_token, weight_bytes
from infergy.plan.presets import CALIBRATION_INPUTS, CALIBRATION_OUTPUTS
from infergy.profile.load import EstimateError, shipped_profiles
from infergy.profile.points import idle_powers, serving_idle_powers, stored_points

# The design (`infergy calibrate`'s points): a model fitted to them predicts every other
# measured point, to check it.
DESIGN_INPUTS, DESIGN_OUTPUTS = CALIBRATION_INPUTS, CALIBRATION_OUTPUTS
# vLLM's offline engine as infergy runs it (infergy.engines.vllm; vLLM 0.26's LLM class on a
# card of 70 GiB or more: engine/arg_utils.py, get_batch_defaults).
OFFLINE_BATCHED_TOKENS = 16384
BLOCK_SIZE = 16
# A window's energy enters the fit only where the window (its runs back to back) lasted this
# long: the energy counter updates every 100 ms, and the 30 ms prefill of one prompt reads as
# anything from 0 to twice its energy. Its time enters always: the clock is exact.
MIN_ENERGY_WINDOW_S = 1.0
# Design points a model must be fitted over before it predicts a bin: the grid's corners at
# B = 1 and B = max (calibrate measures 24).
MIN_DESIGN_POINTS = 8
# A prior coefficient's weight, against one window's (module doc). Chosen on the H100's
# calibrated models, each design fitted with one input's points held out in turn
# (benchmarks/check_prior.py; 7 models on vllm, 4 on hf-eager): the held-out energy error,
# median / p90, went from 4.7 / 13.1% without a prior to 3.4 / 9.2% at 0.3 on vllm, and from
# 4.5 / 14.5% to 2.6 / 9.9% on hf-eager; 0.1 and 3 did worse on both, 1 a little better on
# hf-eager and worse on vllm, and the prior alone worse (12.4% and 10.3% p90)
# (docs/measurements.md, 2026-12-06 late afternoon).
PRIOR_WEIGHT = 0.3


@dataclass
class Window:
    """One measured point's figures: its shape, and its request and prefill windows."""

    batch: int
    input_tokens: int
    output_tokens: int
    batch_label: str  # "1", "max", ...: as the spec asked
    time_s: float
    energy_j: float | None  # GPU energy of the request, idle included
    active_j: float | None  # above idle
    prefill_time_s: float | None
    prefill_active_j: float | None
    idle_w: float | None
    point: str  # the point's id
    runs: int = 1  # runs back to back in each measured window (a short point's)
    prefill_runs: int = 1  # the same of its prefill's windows (looped apart from the request)


@dataclass
class Measured:
    """An engine's measured points on one card, with what the fit needs beside them."""

    model: str
    engine: str
    gpu: str
    windows: list[Window]
    batching: dict  # the policy the engine ran with (StepCost.batching)
    idle_w: float
    software: dict
    sources: list[str]
    limits: dict = field(default_factory=dict)  # StepCost.limits
    serving_idle_w: float | None = None  # StepCost.serving_idle_w
    serving_idle_from: str = ""  # StepCost.serving_idle_from


def measured(stores: Iterable[Path], model: str, engine: str, gpu: str | None = None,
             decoding: str = "greedy", engine_options: str = "{}") -> Measured:
    """Every ok point of `model` on `engine` (TP 1, `decoding`, the engine's default options
    as the profiles take them, or `engine_options` as a store keeps them) in the stores, on one
    card (`gpu`, as NVML names it; None: the only one). EstimateError where there is none, or
    several cards and no `gpu`."""
    stores = list(stores)
    found: dict[str, list] = {}
    for path, p, run in stored_points(stores, model=model, engine=engine, decoding=decoding,
                                      status="ok", tp=1, engine_options=engine_options):
        found.setdefault(run.get("gpu_name") or "unknown GPU", []).append((path, p, run))
    if gpu is not None:
        found = {g: v for g, v in found.items() if g == gpu}
    if not found:
        raise EstimateError(f"no measured point of {model} on {engine}"
                            f"{f' ({gpu})' if gpu else ''} in {', '.join(map(str, stores))}")
    if len(found) > 1:
        raise EstimateError(f"{model} on {engine} is measured on several cards "
                            f"({', '.join(sorted(found))}): name one")
    card, rows = next(iter(found.items()))
    windows, blocks, memory, seqs, software = [], [], [], [], {}
    caps, free = [], []
    for _, p, run in rows:
        result = json.loads(p["result"])
        windows.append(_window(p, result, run))
        search = json.loads(p["batch_search"] or "null") or {}
        model_of = search.get("memory_model") or {}
        if model_of.get("gpu_blocks"):
            blocks.append(int(model_of["gpu_blocks"]))
        if search.get("cap"):
            caps.append(int(search["cap"]))
        if model_of.get("free_gib"):
            free.append(float(model_of["free_gib"]) * 2**30)
        info = result.get("engine_info") or {}
        seqs.append(int(info.get("max_num_seqs") or 1024))
        memory += [g["memory_gib"] for g in (result.get("provenance") or {}).get("gpus", [])
                   if g.get("memory_gib")]
        versions = (result.get("provenance") or {}).get("versions") or {}
        software = {k: versions[k] for k in ("torch", "transformers", "vllm", "infergy")
                    if versions.get(k)} or software
    idle = [w.idle_w for w in windows if w.idle_w]
    if not idle:
        raise EstimateError(f"{model} on {engine} ({card}): no idle power recorded")
    batching = _batching(model, engine, blocks, memory, seqs, windows)
    # What set the B = max of the points: the sweep's cap, and the free memory the memory
    # model of a static engine read after loading (a continuous engine's is its KV cache).
    limits = {"cap": max(caps)} if caps else {}
    if free:
        limits["free_bytes"] = statistics.median(free)
    # The card's power with the engine's server up and waiting: as the model's own replays
    # measured it, else as replays of other models on the card did.
    found = serving_idle_powers(_waiting_pool(stores), None, engine, card)
    waiting = [w for w in found if w.model == model] or found
    servers = " and ".join(sorted({w.engine for w in waiting}))
    return Measured(model, engine, card, windows, batching, statistics.median(idle), software,
                    sorted({str(path) for path, _, _ in rows}), limits,
                    statistics.median(w.watts for w in waiting) if waiting else None,
                    f"{len(waiting)} online replay{'s' if len(waiting) > 1 else ''} to "
                    f"{servers}'s server, "
                    f"{' and '.join(sorted({w.model for w in waiting}))} loaded"
                    if waiting else "")


def _waiting_pool(stores: Iterable[Path]) -> list[Path]:
    """Where a card's waiting power may be read for a model whose own replays lack it: the
    stores given, and where they are infergy's shipped profiles, every shipped profile."""
    stores = list(stores)
    shipped = shipped_profiles()
    known = {p.resolve() for p in shipped}
    if stores and all(Path(s).resolve() in known for s in stores):
        given = {Path(s).resolve() for s in stores}
        return stores + [p for p in shipped if p.resolve() not in given]
    return stores


def _window(p: dict, result: dict, run: dict) -> Window:
    reps = result.get("repeats") or []
    prefill = [r["prefill"] for r in reps if r.get("prefill")]
    idle = [w for w in idle_powers(run) if w]
    return Window(
        int(p["batch"]), int(p["input_tokens"]), int(p["output_tokens"]),
        str(p["batch_requested"]), float(p["time_s"]), p["energy_j"],
        result.get("active_energy_j"),
        statistics.median(x["time_s"] for x in prefill) if prefill else None,
        (statistics.median(x["active_energy_j"] for x in prefill)
         if prefill and all(x.get("active_energy_j") is not None for x in prefill) else None),
        statistics.median(idle) if idle else None, p["id"],
        int(result.get("runs_per_window") or 1),
        min((int(x.get("runs") or 1) for x in prefill), default=1))


def _batching(model: str, engine: str, blocks, memory, seqs, windows) -> dict:
    """The engine's batching policy as its points ran: static for transformers' generate,
    vLLM's continuous batching with its measured KV cache otherwise."""
    spec = get_model(model)
    if engine in STATIC_ENGINES:
        return {"kind": "static", "batch": max(w.batch for w in windows), **routing(spec)}
    if engine not in CONTINUOUS_ENGINES:
        raise EstimateError(f"the simulator has no batching policy for {engine} yet (it has "
                            f"{', '.join(STATIC_ENGINES + CONTINUOUS_ENGINES)})")
    block_bytes = kv_cache_bytes_per_token(spec) * BLOCK_SIZE
    memory_bytes = (statistics.median(memory) if memory else 80) * 2**30
    if blocks:
        kv_blocks = int(statistics.median(blocks))
        source = "vLLM's KV cache as measured (the points' batch search)"
    else:  # the engine's memory model: 0.9 of the card less the weights and 2 GiB
        kv_blocks = int((0.9 * memory_bytes - weight_bytes(spec) - 2 * 2**30) // block_bytes)
        source = "memory model: 0.9 of the card less the weights and 2 GiB"
    return {"kind": "continuous", "kv_blocks": kv_blocks, "kv_source": source,
            "block_size": BLOCK_SIZE, "block_bytes": block_bytes, "memory_bytes": memory_bytes,
            "memory_share": 0.9, "max_num_seqs": max(seqs),
            "max_num_batched_tokens": OFFLINE_BATCHED_TOKENS, **routing(spec)}


def _counter(batching: dict) -> StepCost:
    """A step-cost model of no cost: what the simulator counts with it is the steps' features
    (an offline schedule does not depend on the steps' times)."""
    return StepCost("", "", "", [0.0] * len(FEATURES), [0.0] * len(FEATURES), 0.0, batching)


def point_features(batching: dict, batch: int, input_tokens: int,
                   output_tokens: int) -> np.ndarray:
    """The summed step features of B prompts of I tokens generating O tokens each, all at
    once, as the engine of `batching` schedules them (one call of the engine)."""
    key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(batching.items()))
    return _point_features(key, batch, input_tokens, output_tokens).copy()


@functools.lru_cache(maxsize=4096)
def _point_features(batching: tuple, batch: int, input_tokens: int,
                    output_tokens: int) -> np.ndarray:
    counter = _counter(dict(batching))
    policy = policy_of(counter)
    if isinstance(policy, Static):
        return sum(static_batch_features(batch, input_tokens, output_tokens, counter.experts))
    policy = Continuous(policy.kv_blocks, policy.max_num_batched_tokens,
                        max(batch, policy.max_num_seqs), policy.block_size)
    return CALL + run_continuous(counter, policy, np.zeros(batch), np.full(batch, input_tokens),
                                 np.full(batch, output_tokens)).features


def fit_step_cost(data: Measured, windows: list[Window] | None = None,
                  prior: StepCost | None = None, weight: float = PRIOR_WEIGHT) -> StepCost:
    """The step-cost model fitted to `windows` (default: every one of `data`), drawn towards
    `prior` at `weight` (module doc; None: by its windows alone), with its residuals on them
    (`fit`)."""
    windows = data.windows if windows is None else windows
    rows_t, y_t, rows_e, y_e = fit_rows(data, windows)
    time = nnls(rows_t, y_t, prior.time_s if prior else None, weight)
    energy = nnls(rows_e, y_e, [*prior.active_j, prior.busy_w] if prior else None, weight)
    cost = StepCost(data.model, data.engine, data.gpu, time.tolist(),
                    energy[:-1].tolist(), data.idle_w, data.batching, busy_w=float(energy[-1]),
                    software=data.software, sources=data.sources, limits=data.limits,
                    serving_idle_w=data.serving_idle_w,
                    serving_idle_from=data.serving_idle_from)
    cost.fit = {"points": len(windows), "windows": len(y_t),
                **({"prior": prior.fit.get("from_models", [])} if prior else {}),
                **errors(cost, windows, "residuals")}
    return cost


def fit_rows(data: Measured, windows: list[Window] | None = None) -> tuple[list, list, list,
                                                                            list]:
    """The fit's rows: (each window's summed features, its time) and (its features and its
    time, its energy above idle) for the windows whose energy counts (MIN_ENERGY_WINDOW_S).
    EstimateError where they are too few to fit a step-cost model."""
    windows = data.windows if windows is None else windows
    rows_t, y_t, rows_e, y_e = [], [], [], []
    for w in windows:
        shapes = [(w.output_tokens, w.time_s, w.active_j, w.runs),
                  (1, w.prefill_time_s, w.prefill_active_j, w.prefill_runs)]
        for out, seconds, joules, runs in shapes:
            if seconds is None:
                continue
            f = point_features(data.batching, w.batch, w.input_tokens, out)
            rows_t.append(f)
            y_t.append(seconds)
            if joules is not None and joules > 0 and seconds * runs >= MIN_ENERGY_WINDOW_S:
                rows_e.append(np.append(f, seconds))
                y_e.append(joules)
    # A dense model has no expert_reads to fit.
    needed = len(FEATURES) - (0 if data.batching.get("experts") else 1)
    if len(y_t) < needed or len(y_e) < needed:
        raise EstimateError(f"{data.model} on {data.engine} ({data.gpu}): {len(windows)} "
                            f"points are too few to fit a step-cost model: their windows give "
                            f"{len(y_t)} times and {len(y_e)} energies over at least "
                            f"{MIN_ENERGY_WINDOW_S:g} s, and it needs {needed} of each "
                            f"(a point gives two: its prefill and its request)")
    return rows_t, y_t, rows_e, y_e


def nnls(rows: list[np.ndarray], y: list[float], prior: list[float] | None = None,
         weight: float = PRIOR_WEIGHT) -> np.ndarray:
    """Least squares of relative errors with coefficients >= 0: a feature whose coefficient
    comes out negative is dropped and the rest fitted again. A feature no row holds is 0, not
    fitted: the solver's least norm gives it rounding noise, which a model that has the feature
    (a mixture of experts' expert FLOPs, after dense models) multiplies. `prior`: a coefficient
    each, each one above 0 adding a row, its relative distance from the prior at `weight`."""
    a = np.array(rows) / np.array(y)[:, None]
    b = np.ones(len(y))
    if prior is not None:
        drawn = [k for k, p in enumerate(prior) if p > 0]
        extra = np.zeros((len(drawn), a.shape[1]))
        for row, k in enumerate(drawn):
            extra[row, k] = weight / prior[k]
        a, b = np.vstack([a, extra]), np.concatenate([b, np.full(len(drawn), weight)])
    scale = np.abs(a).max(axis=0)
    keep = scale > 0
    scale[~keep] = 1
    while True:
        coef = np.zeros(a.shape[1])
        coef[keep] = np.linalg.lstsq(a[:, keep] / scale[keep], b, rcond=None)[0] / scale[keep]
        if (coef >= 0).all() or keep.sum() <= 1:
            return np.clip(coef, 0, None)
        keep &= coef > 0


def predict_point(cost: StepCost, batch: int, input_tokens: int,
                  output_tokens: int) -> tuple[float, float]:
    """A point's predicted (time in s, GPU energy in J with idle)."""
    f = point_features(cost.batching, batch, input_tokens, output_tokens)
    t = cost.time(f)
    return t, cost.active_energy(f, t) + cost.idle_w * t


def errors(cost: StepCost, windows: list[Window], name: str = "errors") -> dict:
    """Each point's error of energy and time (predicted / measured - 1), and their median and
    90th percentile of the absolute value, over all and by batch (B = 1, B = max, others)."""
    each = []
    for w in windows:
        t, e = predict_point(cost, w.batch, w.input_tokens, w.output_tokens)
        measured_e = w.energy_j
        each.append({"point": w.point, "batch": w.batch, "batch_label": w.batch_label,
                     "input": w.input_tokens, "output": w.output_tokens,
                     "window_s": w.time_s * w.runs,
                     "energy_error": None if not measured_e else e / measured_e - 1,
                     "time_error": t / w.time_s - 1})
    return {name: each, "summary": summarize(each)}


def summarize(each: list[dict]) -> dict:
    """Median and 90th percentile of |error| of energy and of time, over all the points, by
    batch label ("1", "max", "other"), and over the points whose measured window lasted 1 s
    or more ("window >= 1 s": the energy counter's 100 ms updates make a shorter window's
    energy uncertain by 10% or more)."""
    def stats(rows):
        out = {"points": len(rows)}
        for key in ("energy_error", "time_error"):
            v = np.abs([r[key] for r in rows if r[key] is not None])
            out[key] = ({"median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
                         "max": float(v.max())} if len(v) else None)
        return out
    groups = {"all": each}
    for r in each:
        label = r["batch_label"] if r["batch_label"] in ("1", "max") else "other"
        groups.setdefault(label, []).append(r)
        if r.get("window_s", 0) >= MIN_ENERGY_WINDOW_S:
            groups.setdefault("window >= 1 s", []).append(r)
    return {k: stats(v) for k, v in groups.items()}


def design(windows: list[Window]) -> tuple[list[Window], list[Window]]:
    """The windows of the design (B = 1 and B = max at DESIGN_INPUTS x DESIGN_OUTPUTS) and the
    others."""
    inside = [w for w in windows if w.batch_label in ("1", "max")
              and w.input_tokens in DESIGN_INPUTS and w.output_tokens in DESIGN_OUTPUTS]
    return inside, [w for w in windows if w not in inside]


def design_gap(windows: list[Window]) -> str | None:
    """What keeps these windows from being a calibration: too few of the design's points, or
    none at B = 1 or at B = max; None where they are one."""
    inside, _ = design(windows)
    labels = {w.batch_label for w in inside}
    if len(inside) < MIN_DESIGN_POINTS or labels != {"1", "max"}:
        return (f"{len(inside)} of the calibration design's points are measured, at "
                f"B = {' and '.join(sorted(labels)) or 'none'}; it needs {MIN_DESIGN_POINTS} "
                f"at B = 1 and B = max")
    return None
