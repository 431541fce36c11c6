"""A step-cost model predicted for a model measured on no card like this one, from the
models that were: how the card's engine turns a model's work into time and energy.

Each coefficient of a step-cost model (estimate/steps.py) is the cost of one unit of a
feature, and what a unit holds grows with the model. Its driver, per feature:

- `steps`: the weights every step reads (bytes, bf16: a dense model's all, a mixture of
  experts' all but its experts');
- `prefill_tokens` and `decode_seqs`: one token's FLOPs through the model (its matmuls and
  its logits; a mixture of experts counts the experts a token uses);
- `prefill_pairs`: one query-key pair's attention FLOPs over all layers (4 x heads x head
  width x layers);
- `context_tokens`: one cached token's K and V (bytes, bf16), read once a step;
- `calls`: the layers (an engine call's host work, its kernels' launches, grows with them);
- `expert_reads`: all the experts' weights (bytes, bf16; 0 for a dense model), at the cost a
  byte of `steps`' driver: the same weights read at the same rate, so a mixture of experts is
  predicted from dense models by what its steps read (1/8 of its experts for one token of
  olmoe-1b-7b, nearly all for 32), not by all it stores. It has no coefficient of its own.

Four prices (PRICES) have no feature of their own; each adds a column to the fit, some
features' units x a second driver, priced c >= 0 over and above those features' own costs:

- a mixture of experts' expert FLOPs (a token's k experts' matmuls) may cost more than dense
  FLOPs, its experts' small matmuls being grouped and gathered: a window's tokens
  (`prefill_tokens` + `decode_seqs`) x the model's expert FLOPs a token. Only a mixture of
  experts among the measured models fixes it: dense models alone leave it 0 (so a mixture of
  experts predicted from dense models is priced as above); on the H100, olmoe-1b-7b's own fit
  costs its FLOPs 1.5-1.6x what dense models give, all low at B = max. With qwen3-30b-a3b
  measured too, the two price an expert FLOP at 1.9x a dense one's time, and each predicted
  from the other seven models is 3.8% and 5.3% off at B = max, 22% and 17% from the dense
  ones alone (2026-12-06 evening).
- a decoding sequence's layers: beside its FLOPs, each layer's per-sequence work (attention
  over its own cache, the host's share) costs time a deep, thin model pays more of than its
  FLOPs say: `decode_seqs` x the layers. deepseek-r1-distill-qwen-1.5b (28 layers) decodes
  1,024 sequences 1.66x slower than llama-3.2-1b (16) for 1.25x its FLOPs (the H100,
  2026-12-06).
- a step's launches: beside the weights it reads, a step launches kernels, and an engine whose
  host launches them one by one pays a step by what it launches, not its bytes: `steps` x
  the step's launches. hf-eager launches each op of transformers' code (the ops a step,
  infergy.models.ops: 40 a llama layer, 32 an OLMo layer); other engines run their own
  kernels, in graphs, and are priced by the step's layers. On the H100 hf-eager's decode
  step at B = 1 took 0.6-1.0 ms a layer over four models of 16-32 layers and 2.5-16 GB, and
  olmo-7b's, its layers 0.8 a llama's ops, 0.81 a llama's time (2026-12-06); vLLM's graphs
  pay a kernel's floor, some tens of microseconds a layer.
- a token's unfused ops: an engine that runs transformers' ops one by one (LAUNCHES_OPS)
  reads and writes a token's vectors at each of them (its hidden state through the norms,
  in float32, and the residuals; its query, key and value through the rotary embedding and
  the cache), beside its matmuls' FLOPs: a window's tokens x the widths a token carries
  through a layer's attention side, hidden + query + 2 x key-value, x the layers (WIDTH; 0
  for other engines, whose kernels are fused). A thin model pays more of it than its FLOPs
  say, and a model of full multi-head attention (olmo-7b: keys and values 4 times a llama's
  of its width) more than one of grouped queries. On the H100, over hf-eager's five models,
  each predicted from the other four at B = max: 1.0-6.4% with it, 1.7-11.4% without it;
  the hidden state's width alone left olmo-7b at 10.1%, and the MLP's width added made it
  worse (2026-12-06 late afternoon).

Each coefficient is proportional to its driver, b x driver (b >= 0), with no part that is
the same for every model: a cost that does not grow with some part of the model belongs to
no model, and a constant fitted over models of similar size carries whatever they share into
a model of another size. With a constant allowed (a + b x driver), hf-eager's step was a
constant 20 ms from three models of 28-32 layers, and llama-3.2-1b's 12-16 ms step (16
layers) was predicted 50% high; proportional, with the step's layers priced, 7% (leave one
model out, docs/measurements.md, 2026-12-06 late morning). The b's and the prices are fitted once to
all the models' measured windows together (the least squares of relative errors that fits
one model, estimate/fit.py, over each window's features times the model's drivers and the
prices' columns), with one busy power for all; two models of different shapes fix them.
Fitting each model alone and then a line through their coefficients predicted worse:
features that move together in one model's design (a step and an engine call) split its
cost between them differently from one model to the next (on the H100's three calibrated
models, docs/measurements.md, 2026-12-05 night). The card's idle power, and its power with
an engine's server waiting, are the models' median; its batching policy is the engine's,
with a continuous engine's KV cache sized for the new model from the card's memory (its
weights, its profiling run's activations and its bytes a token: `_memory_line`). A card with
one measured model predicts nothing: no other model shows the prediction's error.
`leave_one_out` predicts each measured model from the others, and that error is the band a
prediction carries. A calibrated model's own fit is drawn towards what the card's other
models predict of it (`card_prior`; infergy.estimate.fit).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infergy.estimate.fit import Measured, design_gap, errors, fit_rows, measured, nnls
from infergy.estimate.steps import FEATURES, StepCost, routing
from infergy.models import ModelSpec, get_model
from infergy.models.flops import (
    expert_flops,
    expert_weight_bytes,
    kv_cache_bytes_per_token,
    prefill_flops,
    weight_bytes,
)
from infergy.models.ops import step_ops
from infergy.models.shape import shape
from infergy.profile.load import EstimateError, card_of
from infergy.profile.points import stored_points

DRIVERS = ("weight bytes read every step", "FLOPs a token", "attention FLOPs a pair",
           "FLOPs a token", "KV bytes a token", "layers",
           "expert weight bytes")  # of each of FEATURES, in its order
# The engines that launch each op of transformers' code from the host: their step's launches
# are those ops (infergy.models.ops), any other engine's its layers.
LAUNCHES_OPS = ("hf-eager",)
OWN = len(FEATURES) - 1  # the features with coefficients of their own: all but expert_reads
EXPERT_FLOPS = len(FEATURES)  # drivers()' next: a token's expert FLOPs (no feature of its own)
LAUNCHES = EXPERT_FLOPS + 1  # then what a step launches (no feature of its own)
WIDTH = LAUNCHES + 1  # and last: a token's unfused widths x layers (LAUNCHES_OPS only)
TOKENS = (FEATURES.index("prefill_tokens"), FEATURES.index("decode_seqs"))
LAYERS = FEATURES.index("calls")  # the driver of `calls` is the layers
# The prices (module doc): the features each adds to, and the driver it multiplies them by.
PRICES = ((TOKENS, EXPERT_FLOPS), ((FEATURES.index("decode_seqs"),), LAYERS),
          ((FEATURES.index("steps"),), LAUNCHES), (TOKENS, WIDTH))
MIN_MODELS = 2


class TransferError(EstimateError):
    """No prediction can be made (too few measured models); the message says what is missing."""


def drivers(spec: ModelSpec, engine: str) -> np.ndarray:
    """What one unit of each feature holds for this model (DRIVERS, in FEATURES' order), then
    a token's expert FLOPs (EXPERT_FLOPS; 0 for a dense model), what a step of `engine`
    launches (LAUNCHES: the ops of transformers' code for LAUNCHES_OPS, else the layers) and
    a token's unfused widths (WIDTH: hidden + query + 2 x key-value, x layers, for
    LAUNCHES_OPS; else 0)."""
    s = shape(spec)
    token = prefill_flops(spec, 1, causal_attention=True)
    experts = expert_weight_bytes(spec)
    unfused = engine in LAUNCHES_OPS
    launches = step_ops(spec).total(s.layers) if unfused else s.layers
    return np.array([weight_bytes(spec) - experts, token, 4.0 * s.heads * s.head_dim * s.layers,
                     token, kv_cache_bytes_per_token(spec), float(s.layers), experts,
                     expert_flops(spec), float(launches),
                     float((s.hidden + s.q_width + 2 * s.kv_width) * s.layers) if unfused
                     else 0.0])


def _columns(features: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A window's row of the pooled fit: its features times the model's drivers (the expert
    bytes it read counted with the other weight bytes, `steps`), and a column for each
    price."""
    scaled = features[:OWN] * x[:OWN]
    scaled[0] += features[OWN] * x[OWN]
    prices = [sum(features[i] for i in which) * x[driver] for which, driver in PRICES]
    return np.concatenate([scaled, prices])


def _coefficients(per_unit: list[float], x: np.ndarray, prices: list[float]) -> list[float]:
    """A model's cost per unit of each feature, b x driver from the cost of a unit of each
    driver: expert_reads at `steps`' cost a byte, and each price's features c x its driver
    more."""
    out = [b * xi for b, xi in zip(per_unit, x[:OWN], strict=True)] + [per_unit[0] * x[OWN]]
    for (which, driver), c in zip(PRICES, prices, strict=True):
        for i in which:
            out[i] += c * x[driver]
    return out


@dataclass
class Transfer:
    """How one engine on one card turns a model's drivers into its step costs: per feature,
    the cost of a unit of its driver, b, in time and in energy above idle; the card's idle
    power and the engine's busy power (and its power waiting with a server up, where
    measured); the models it was fitted to."""

    engine: str
    gpu: str
    time: list[float]
    active: list[float]
    idle_w: float
    busy_w: float
    batching: dict
    models: list[str] = field(default_factory=list)
    serving_idle_w: float | None = None
    serving_idle_from: str = ""
    sources: list[str] = field(default_factory=list)  # the stores of the models' points
    prices: list[tuple[float, float]] = field(
        default_factory=lambda: [(0.0, 0.0)] * len(PRICES))  # PRICES' c of time and of energy

    @property
    def expert_price(self) -> tuple[float, float]:
        """The expert FLOPs' price over a dense FLOP: c of time and of energy."""
        return self.prices[0]

    @property
    def layer_price(self) -> tuple[float, float]:
        """A decoding sequence's price a layer over its FLOPs: c of time and of energy."""
        return self.prices[1]

    @property
    def launch_price(self) -> tuple[float, float]:
        """A step's price a launch (drivers()' LAUNCHES) over the weights it reads: c of time
        and of energy."""
        return self.prices[2]

    @property
    def width_price(self) -> tuple[float, float]:
        """A token's price a unit of its unfused widths (drivers()' WIDTH): c of time and of
        energy."""
        return self.prices[3]

    def predict(self, spec: ModelSpec, band: dict | None = None) -> StepCost:
        """The predicted step-cost model of `spec` (its `fit` says it is predicted, from
        which models, and the error `band` a leave-one-out check showed)."""
        x = drivers(spec, self.engine)
        time = _coefficients(self.time, x, [t for t, _ in self.prices])
        active = _coefficients(self.active, x, [e for _, e in self.prices])
        ops = step_ops(spec) if self.engine in LAUNCHES_OPS else None
        uncounted = f"; its ops a step {ops.source}" if ops and not ops.counted else ""
        fit = {"predicted": True, "from_models": list(self.models),
               "note": f"predicted for a model not measured with {self.engine} on "
                       f"{self.gpu}, from {', '.join(self.models)}{uncounted}",
               "band": band or {}}
        return StepCost(spec.name, self.engine, self.gpu, time, active, self.idle_w,
                        _batching_for(self.batching, spec), busy_w=self.busy_w, fit=fit,
                        serving_idle_w=self.serving_idle_w,
                        serving_idle_from=self.serving_idle_from, sources=list(self.sources))


def fit_transfer(measured: list[tuple[ModelSpec, Measured]]) -> Transfer:
    """The transfer of one engine on one card, fitted to its models' measured windows.
    TransferError with fewer than MIN_MODELS models, or models of several engines or cards;
    EstimateError where a model's points are too few to fit its own step-cost model."""
    if len({(d.engine, d.gpu) for _, d in measured}) > 1:
        raise TransferError("a transfer is of one engine on one card: got "
                            + ", ".join(sorted({f'{d.engine} on {d.gpu}' for _, d in measured})))
    names = [spec.name for spec, _ in measured]
    if len(set(names)) < MIN_MODELS:
        where = f" with {measured[0][1].engine} on {measured[0][1].gpu}" if measured else ""
        raise TransferError(
            f"a prediction needs at least {MIN_MODELS} models measured{where} (there "
            f"{'is' if len(set(names)) == 1 else 'are'} {len(set(names))}"
            f"{': ' + ', '.join(sorted(set(names))) if names else ''}): each is predicted from "
            f"the others to show the prediction's error. Calibrate more models on the card "
            f"(`infergy calibrate -m MODEL -e ENGINE --db STORE`)")
    rows_t, y_t, rows_e, y_e = [], [], [], []
    for spec, data in measured:
        x = drivers(spec, data.engine)
        t, yt, e, ye = fit_rows(data)
        rows_t += [_columns(f, x) for f in t]
        rows_e += [np.append(_columns(r[:-1], x), r[-1]) for r in e]
        y_t += yt
        y_e += ye
    n = OWN
    time, energy = nnls(rows_t, y_t), nnls(rows_e, y_e)
    waiting = [(d.serving_idle_w, d.serving_idle_from) for _, d in measured
               if d.serving_idle_w is not None]
    return Transfer(
        measured[0][1].engine, measured[0][1].gpu,
        time[:n].tolist(), energy[:n].tolist(),
        statistics.median(d.idle_w for _, d in measured), float(energy[-1]),
        _reference_batching(measured), names,
        statistics.median(w for w, _ in waiting) if waiting else None,
        "; ".join(dict.fromkeys(words for _, words in waiting)),
        sorted({source for _, d in measured for source in d.sources}),
        [(float(t), float(e)) for t, e in zip(time[n:], energy[n:-1], strict=True)])


def _reference_batching(measured: list[tuple[ModelSpec, Measured]]) -> dict:
    """The engine's policy as its models ran: static with the largest batch measured, or
    continuous with the card's memory for the KV cache and the weights as its measured models
    show it (`_memory_line`)."""
    policies = [d.batching for _, d in measured]
    if policies[0].get("kind") == "static":
        return {"kind": "static", "batch": max(p["batch"] for p in policies)}
    return {**policies[0], "memory_line": _memory_line(measured)}


def _memory_line(measured: list[tuple[ModelSpec, Measured]]) -> tuple[float, float]:
    """(A, c): a model's KV cache and weights together take A - c x its profiling activation
    (`_activation`) of the card's memory. vLLM sizes its cache from what its profiling run
    left: the card's share less the weights, the largest batch's activations and its graphs;
    the activations grow with the model's MLP. On the H100 the rest took 1.7 GiB of
    llama-3.2-1b, 2.5 of llama-3.1-8b and 3.8 of deepseek-r1-distill-qwen-32b, whose cache a
    constant rest (the models' median) predicted 28% too large, and this line, fitted to the
    five smaller dense models, 4% too small (2026-12-06). The line is the dense models' where
    two of different widths were measured (olmoe-1b-7b's experts took 1.1 GiB more than the
    line, a mixture of experts' workspace): else all the models'. With one width measured,
    or where the wider models left more room, the models' median, with no slope."""
    def used(spec, d):
        return d.batching["kv_blocks"] * d.batching["block_bytes"] + weight_bytes(spec)
    dense = [(s, d) for s, d in measured if not s.is_moe]
    pool = dense if len({_activation(s, d.batching) for s, d in dense}) > 1 else measured
    x = np.array([_activation(s, d.batching) for s, d in pool])
    y = np.array([used(s, d) for s, d in pool])
    if len(set(x)) > 1:
        slope, intercept = np.polyfit(x, y, 1)
        if slope <= 0:
            return float(intercept), float(-slope)
    return float(statistics.median(used(s, d) for s, d in measured)), 0.0


def _activation(spec: ModelSpec, batching: dict) -> float:
    """The widest activation of vLLM's profiling run, in bytes: its largest batch of tokens
    (max_num_batched_tokens) through the MLP's gate and up projections, bf16 (a mixture of
    experts' through each token's experts and its shared expert, or a dense layer's MLP)."""
    return batching.get("max_num_batched_tokens", 0) * 2 * shape(spec).token_mlp_width * 2.0


def _batching_for(reference: dict, spec: ModelSpec) -> dict:
    """The policy for `spec`: its experts, and a continuous engine's KV cache what the card's
    memory holds for it (`_memory_line`) once the model's weights are in it."""
    if reference.get("kind") != "continuous":
        return {**reference, **routing(spec)}
    block_bytes = kv_cache_bytes_per_token(spec) * reference["block_size"]
    base, slope = reference["memory_line"]
    usable = base - slope * _activation(spec, reference)
    blocks = int((usable - weight_bytes(spec)) // block_bytes)
    if blocks < 1:
        raise TransferError(f"{spec.name}'s weights ({weight_bytes(spec) / 2**30:.0f} GiB) "
                            f"leave no room for a KV cache on this card")
    out = {k: v for k, v in reference.items() if k not in ("memory_line", "experts")}
    out.update(routing(spec))
    return {**out, "kv_blocks": blocks, "block_bytes": block_bytes,
            "kv_source": "predicted: the card's memory as its measured models used it, less "
                         "this model's weights and its profiling activations"}


def leave_one_out(measured: list[tuple[ModelSpec, Measured]]) -> dict[str, dict]:
    """Each measured model predicted from the others, against its own measured points: its
    errors' summary, by model. TransferError with fewer than MIN_MODELS + 1 models (one would
    predict from one)."""
    if len(measured) < MIN_MODELS + 1:
        raise TransferError(f"a leave-one-out check needs at least {MIN_MODELS + 1} measured "
                            f"models (there are {len(measured)})")
    out = {}
    for n, (spec, data) in enumerate(measured):
        others = measured[:n] + measured[n + 1:]
        out[spec.name] = errors(fit_transfer(others).predict(spec), data.windows)["summary"]
    return out


def calibrated_models(stores: list[Path], spec: ModelSpec, engine: str,
                      card: str) -> tuple[list[tuple[ModelSpec, Measured]], list[str]]:
    """The models other than `spec` calibrated on `engine` and `card` (a models.gpus name) in
    the stores, with their measured points; and, in words, those the stores hold but that
    cannot be fitted (a design not covered, too few points)."""
    found: dict[str, str] = {}  # model -> the card's name as measured
    for _, p, run in stored_points(stores, engine=engine, status="ok", tp=1,
                                   decoding="greedy", engine_options="{}"):
        name = run.get("gpu_name") or p["device"]
        if card_of(name) == card and p["model"] != spec.name:
            found[p["model"]] = name
    fitted, skipped = [], []
    for model, name in sorted(found.items()):
        try:
            data = measured(stores, model, engine, name)
            gap = design_gap(data.windows)
            if gap:
                skipped.append(f"{model} (not calibrated: {gap})")
                continue
            fit_rows(data)  # enough points to fit the model alone, or EstimateError
            fitted.append((get_model(model), data))
        except EstimateError as e:
            skipped.append(f"{model} ({e})")
    return fitted, skipped


def card_prior(stores: list[Path], spec: ModelSpec, engine: str, card: str) -> StepCost | None:
    """What the card's other models calibrated on `engine` in the stores (`calibrated_models`;
    `card` a models.gpus name) predict of `spec`'s step costs, the prior of its own fit
    (infergy.estimate.fit, fit_step_cost): from the dense ones for a dense model, from all for
    a mixture of experts. None where fewer than MIN_MODELS of those are calibrated."""
    pool = predicted_from(spec, calibrated_models(stores, spec, engine, card)[0])
    if len(pool) < MIN_MODELS:
        return None
    return fit_transfer(pool).predict(spec)


def predicted_from(spec: ModelSpec, fitted: list[tuple[ModelSpec, Measured]]) -> list:
    """The models of `fitted` that `spec` is predicted from: the dense ones for a dense model
    (a mixture of experts among them made the others worse: llama-3.2-1b's energy p90 13-17%
    without olmoe-1b-7b, 39% with it, on the H100), all of them for a mixture of experts."""
    return fitted if spec.is_moe else [(s, d) for s, d in fitted if not s.is_moe]
