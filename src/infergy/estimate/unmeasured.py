"""A model with no point on a card, estimated from the card's calibrated models (issue 32).

The card's other models, each calibrated on the engine (the design measured at B = 1 and
B = max), give their step-cost models; `estimate.transfer` fits how the engine turns a model's
architecture into those costs and predicts the new model's. Each measured model is first
predicted from the others (leave one model out) against its own points: the worst of their
90th percentiles of energy error is the band every figure of the prediction carries. Fewer
than three calibrated dense models: no band can be shown, and nothing is predicted. A dense
model is predicted from the dense models, a mixture of experts from all (`_pool`); one
predicted from dense models only is priced by the expert weights its steps read, and says so
with the error that showed on the two such models checked.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from infergy.estimate.fit import Measured, errors
from infergy.estimate.served import band_of
from infergy.estimate.steps import FEATURES, StepCost
from infergy.estimate.transfer import (
    MIN_MODELS,
    TransferError,
    calibrated_models,
    fit_transfer,
    leave_one_out,
    predicted_from,
)
from infergy.models import ModelSpec
from infergy.models.flops import weight_bytes
from infergy.models.shape import shape

# What a mixture of experts predicted from dense models only is said with: its steps priced by
# the expert weights they read (estimate/transfer.py), checked on two such models.
MOE_FROM_DENSE = ("; it is a mixture of experts and they are dense: its steps are priced by the "
                  "expert weights they read, which on vllm on an H100 predicted olmoe-1b-7b's and "
                  "qwen3-30b-a3b's energy 3% and 6% off at B = 1 but 22% and 17% at B = max "
                  "(medians; docs/measurements.md, 2026-12-06 evening): the band is the dense "
                  "models' own")


def predict_unmeasured(stores: list[Path], spec: ModelSpec, engine: str,
                       card: str) -> tuple[StepCost, dict, str, str]:
    """The predicted step-cost model of `spec` on `engine` and `card` (a models.gpus name),
    from the stores' calibrated models of that card: (model, the worst held-out model's error
    summary, in words, the card as measured). TransferError, saying why, where the stores
    cannot support it."""
    fitted, skipped = calibrated_models(stores, spec, engine, card)
    held = (f"; the stores hold {', '.join(skipped)}" if skipped else "")
    dense = [(s, d) for s, d in fitted if not s.is_moe]
    if len(dense) < MIN_MODELS + 1:
        names = ", ".join(s.name for s, _ in dense) or "none"
        raise TransferError(
            f"predicting a model not measured on {card} needs {MIN_MODELS + 1} dense models "
            f"calibrated there on {engine}, each predicted from the others to show the "
            f"error; the stores calibrate {len(dense)} ({names}){held}. Calibrate more with "
            f"`infergy calibrate -m MODEL -e {engine} --db STORE` on that card",
            brief=f"{len(dense)} dense model{'' if len(dense) == 1 else 's'} calibrated on "
                  f"{card} ({names}), {MIN_MODELS + 1} needed to predict it")
    pool, checked = _pool(spec, fitted)
    worst, band = max(((m, band_of(s)) for m, s in checked.items()), key=lambda x: x[1])
    transfer = fit_transfer(pool)
    cost = transfer.predict(spec, band={m: band_of(s) for m, s in checked.items()})
    cost.limits = batch_limits(pool, spec)
    kinds = sorted({s.model_type for s, _ in pool})
    words = (f"predicted for a model not measured with {engine} on this card, from "
             f"{', '.join(s.name for s, _ in pool)}; "
             + (f"each of them predicted from the others erred by p90 {band:.0%} at worst "
                f"({worst})" if len(checked) > 1 else
                f"{worst} predicted from the others erred by p90 {band:.0%}")
             + ("" if spec.model_type in kinds else
                f"; its architecture ({spec.model_type}) is none of theirs ({', '.join(kinds)}), "
                f"and that error was not checked on it")
             + _range_words(spec, pool)
             + (MOE_FROM_DENSE if spec.is_moe and len(pool) == len(dense) else "")
             + (_expert_price_words(transfer, pool) if spec.is_moe else ""))
    return cost, checked[worst], words, fitted[0][1].gpu


def _range_words(spec: ModelSpec, pool: list) -> str:
    """Words where `spec`'s weights or layers lie beyond what the held-out check covered: as
    far past the pool's largest (smallest) as the largest (smallest) lay past the next one,
    when it was held out and predicted from the others. Further is an extrapolation."""
    def covered(values: list[float], mine: float) -> bool:
        v = sorted(values)
        return v[0] * v[0] / v[1] <= mine <= v[-1] * v[-1] / v[-2]

    sizes = [weight_bytes(s) / 1e9 for s, _ in pool]
    layers = [shape(s).layers for s, _ in pool]
    mine, depth = weight_bytes(spec) / 1e9, shape(spec).layers
    beyond = ([f"its {mine:.1f} GB of weights (theirs {min(sizes):.1f}-{max(sizes):.1f})"]
              if not covered(sizes, mine) else []) + (
             [f"its {depth} layers (theirs {min(layers)}-{max(layers)})"]
             if not covered(layers, depth) else [])
    return (f"; {' and '.join(beyond)} lie beyond what the check covered: an extrapolation, "
            f"its error not checked" if beyond else "")


def _expert_price_words(transfer, pool: list) -> str:
    """What the measured mixtures of experts said of their experts' FLOPs (a transfer's
    expert price, estimate/transfer.py), and that one of them checks nothing."""
    moes = [s.name for s, _ in pool if s.is_moe]
    dense_flop = transfer.time[FEATURES.index("prefill_tokens")]  # compute-bound FLOPs
    if not moes or not dense_flop:
        return ""
    ratio = 1 + transfer.expert_price[0] / dense_flop
    return (f"; its experts' FLOPs take {ratio:.1f}x the time of a dense prompt's FLOP, as "
            f"{', '.join(moes)} showed"
            + (", a price no second mixture of experts has checked" if len(moes) == 1 else ""))


def _pool(spec: ModelSpec, fitted: list) -> tuple[list, dict[str, dict]]:
    """The models `spec` is predicted from (`predicted_from`), and the held-out errors its band
    is of: with no mixture of experts among them, each of them predicted from the others; else
    the calibrated mixtures of experts' own, each predicted from the others (a mixture of
    experts predicted from dense models only has the dense models' band, and words that say
    so)."""
    pool = predicted_from(spec, fitted)
    moes = [(s, d) for s, d in pool if s.is_moe]
    if not moes:
        return pool, leave_one_out(pool)
    return pool, {s.name: errors(fit_transfer([m for m in pool if m[0] is not s])
                                 .predict(s), d.windows)["summary"] for s, d in moes}


def batch_limits(fitted: list[tuple[ModelSpec, Measured]], spec: ModelSpec) -> dict:
    """What sets B = max for the new model: the sweeps' cap, and for a static engine the
    memory its weights leave free (the measured models' free memory plus their weights)."""
    caps = [c.limits["cap"] for _, c in fitted if c.limits.get("cap")]
    limits = {"cap": max(caps)} if caps else {}
    room = [c.limits["free_bytes"] + weight_bytes(s) for s, c in fitted
            if c.limits.get("free_bytes")]
    if room:
        limits["free_bytes"] = statistics.median(room) - weight_bytes(spec)
    return limits
