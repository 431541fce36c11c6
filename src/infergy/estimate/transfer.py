"""A step-cost model predicted for a model measured on no card like this one, from the
models that were: how the card's engine turns a model's work into time and energy.

Each coefficient of a step-cost model (estimate/steps.py) is the cost of one unit of a
feature, and what a unit holds grows with the model. Its driver, per feature:

- `steps`: the weights, read once a step (bytes, bf16);
- `prefill_tokens` and `decode_seqs`: one token's FLOPs through the model (its matmuls and
  its logits; a mixture of experts counts the experts a token uses);
- `prefill_pairs`: one query-key pair's attention FLOPs over all layers (4 x heads x head
  width x layers);
- `context_tokens`: one cached token's K and V (bytes, bf16), read once a step;
- `calls`: the layers (an engine call's host work, its kernels' launches, grows with them).

Over the card's measured models, each coefficient (of time, and of energy above idle) is
fitted as a + b x driver (a, b >= 0, least squares of relative errors); with two models, b x
driver alone (one model predicts the other by proportion). The card's idle power and the
engine's busy power are the models' median; its batching policy is the engine's, with a
continuous engine's KV cache sized for the new model from the card's memory (its weights and
its bytes a token). A card with one measured model predicts nothing: no other model shows
the prediction's error. `leave_one_out` predicts each measured model from the others, and
that error is the band a prediction carries.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from infergy.estimate.steps import FEATURES, StepCost
from infergy.models import ModelSpec
from infergy.models.flops import kv_cache_bytes_per_token, prefill_flops, shape, weight_bytes
from infergy.profile.load import EstimateError

DRIVERS = ("weight bytes", "FLOPs a token", "attention FLOPs a pair", "FLOPs a token",
           "KV bytes a token", "layers")  # of each of FEATURES, in its order
MIN_MODELS = 2


class TransferError(EstimateError):
    """No prediction can be made (too few measured models); the message says what is missing."""


def drivers(spec: ModelSpec) -> np.ndarray:
    """What one unit of each feature holds for this model (DRIVERS, in FEATURES' order)."""
    s = shape(spec)
    token = prefill_flops(spec, 1, causal_attention=True)
    return np.array([weight_bytes(spec), token, 4.0 * s.heads * s.head_dim * s.layers, token,
                     kv_cache_bytes_per_token(spec), float(s.layers)])


@dataclass
class Transfer:
    """How one engine on one card turns a model's drivers into its step costs: per feature,
    (a, b) of time and of energy above idle; the card's idle power and the engine's busy
    power; the models it was fitted to."""

    engine: str
    gpu: str
    time: list[tuple[float, float]]
    active: list[tuple[float, float]]
    idle_w: float
    busy_w: float
    batching: dict
    models: list[str] = field(default_factory=list)

    def predict(self, spec: ModelSpec, band: dict | None = None) -> StepCost:
        """The predicted step-cost model of `spec` (its `fit` says it is predicted, from
        which models, and the error `band` a leave-one-out check showed)."""
        x = drivers(spec)
        time = [a + b * xi for (a, b), xi in zip(self.time, x, strict=True)]
        active = [a + b * xi for (a, b), xi in zip(self.active, x, strict=True)]
        fit = {"predicted": True, "from_models": list(self.models),
               "note": f"predicted for a model not measured on {self.gpu}, from "
                       f"{', '.join(self.models)}", "band": band or {}}
        return StepCost(spec.name, self.engine, self.gpu, time, active, self.idle_w,
                        _batching_for(self.batching, spec), busy_w=self.busy_w, fit=fit)


def fit_transfer(measured: list[tuple[ModelSpec, StepCost]]) -> Transfer:
    """The transfer of one engine on one card, from its models' fitted step-cost models.
    TransferError with fewer than MIN_MODELS models, or models of several engines or cards."""
    if len({(c.engine, c.gpu) for _, c in measured}) > 1:
        raise TransferError("a transfer is of one engine on one card: got "
                            + ", ".join(sorted({f'{c.engine} on {c.gpu}' for _, c in measured})))
    names = [spec.name for spec, _ in measured]
    if len(set(names)) < MIN_MODELS:
        where = f" with {measured[0][1].engine} on {measured[0][1].gpu}" if measured else ""
        raise TransferError(
            f"a prediction needs at least {MIN_MODELS} models measured{where} (there "
            f"{'is' if len(set(names)) == 1 else 'are'} {len(set(names))}"
            f"{': ' + ', '.join(sorted(set(names))) if names else ''}): each is predicted from "
            f"the others to show the prediction's error. Calibrate more models on the card "
            f"(`infergy calibrate -m MODEL -e ENGINE --db STORE`)")
    x = np.array([drivers(spec) for spec, _ in measured])
    costs = [c for _, c in measured]
    return Transfer(
        costs[0].engine, costs[0].gpu,
        [_line(x[:, k], [c.time_s[k] for c in costs]) for k in range(len(FEATURES))],
        [_line(x[:, k], [c.active_j[k] for c in costs]) for k in range(len(FEATURES))],
        statistics.median(c.idle_w for c in costs), statistics.median(c.busy_w for c in costs),
        _reference_batching(measured), names)


def _line(x: np.ndarray, y: list[float]) -> tuple[float, float]:
    """(a, b) >= 0 of y = a + b x, least squares of relative errors over the models where y is
    above 0 (a feature a model's fit dropped says nothing of its cost); through 0 (a = 0)
    with fewer than three such models."""
    y = np.asarray(y, dtype=float)
    keep = y > 0
    if not keep.any():
        return 0.0, 0.0
    x, y = x[keep], y[keep]
    if len(y) < 3:
        return 0.0, float(np.mean(y / x))
    rows = np.stack([np.ones_like(x), x], axis=1) / y[:, None]
    scale = np.abs(rows).max(axis=0)
    a, b = np.linalg.lstsq(rows / scale, np.ones(len(y)), rcond=None)[0] / scale
    if a < 0:
        return 0.0, float(np.sum(x / y) / np.sum((x / y) ** 2))
    if b < 0:
        return float(np.sum(1 / y) / np.sum(1 / y**2)), 0.0
    return float(a), float(b)


def _reference_batching(measured: list[tuple[ModelSpec, StepCost]]) -> dict:
    """The engine's policy as its models ran: static with the largest batch measured, or
    continuous with the card's memory for the KV cache as a measured model's shows it (the
    memory the cache and the weights took together)."""
    policies = [c.batching for _, c in measured]
    if policies[0].get("kind") == "static":
        return {"kind": "static", "batch": max(p["batch"] for p in policies)}
    spec, cost = measured[0]
    p = cost.batching
    usable = p["kv_blocks"] * p["block_bytes"] + weight_bytes(spec)
    return {**p, "usable_bytes": usable}


def _batching_for(reference: dict, spec: ModelSpec) -> dict:
    """The policy for `spec`: a continuous engine's KV cache what the card's usable memory
    holds once the model's weights are in it."""
    if reference.get("kind") != "continuous":
        return dict(reference)
    block_bytes = kv_cache_bytes_per_token(spec) * reference["block_size"]
    blocks = int((reference["usable_bytes"] - weight_bytes(spec)) // block_bytes)
    if blocks < 1:
        raise TransferError(f"{spec.name}'s weights ({weight_bytes(spec) / 2**30:.0f} GiB) "
                            f"leave no room for a KV cache on this card")
    out = {k: v for k, v in reference.items() if k != "usable_bytes"}
    return {**out, "kv_blocks": blocks, "block_bytes": block_bytes,
            "kv_source": "predicted: the card's memory as its measured models used it, less "
                         "this model's weights"}


def leave_one_out(measured: list[tuple[ModelSpec, StepCost]], windows: dict[str, list],
                  ) -> dict[str, dict]:
    """Each measured model predicted from the others, against its own measured points
    (`windows`: a model's `infergy.estimate.fit.Window`s): its errors' summary, by model.
    TransferError with fewer than MIN_MODELS + 1 models (one would predict from one)."""
    from infergy.estimate.fit import errors

    if len(measured) < MIN_MODELS + 1:
        raise TransferError(f"a leave-one-out check needs at least {MIN_MODELS + 1} measured "
                            f"models (there are {len(measured)})")
    out = {}
    for n, (spec, _) in enumerate(measured):
        others = measured[:n] + measured[n + 1:]
        predicted = fit_transfer(others).predict(spec)
        out[spec.name] = errors(predicted, windows[spec.name])["summary"]
    return out
