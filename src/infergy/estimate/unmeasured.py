"""A model with no point on a card, estimated from the card's calibrated models (issue 32).

The card's other models, each calibrated on the engine (the design measured at B = 1 and
B = max), give their step-cost models; `estimate.transfer` fits how the engine turns a model's
architecture into those costs and predicts the new model's. Each measured model is first
predicted from the others (leave one model out) against its own points: the worst of their
90th percentiles of energy error is the band every figure of the prediction carries. Fewer
than three calibrated models: no band can be shown, and nothing is predicted. A mixture of
experts predicted from dense models only is priced by the expert weights its steps read, and
says so with the error that showed on the one such model checked.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from infergy.estimate.filled import design_gap
from infergy.estimate.fit import Measured, fit_rows, measured
from infergy.estimate.served import band_of
from infergy.estimate.steps import StepCost
from infergy.estimate.transfer import MIN_MODELS, TransferError, fit_transfer, leave_one_out
from infergy.models import ModelSpec, get_model
from infergy.models.flops import weight_bytes
from infergy.profile.load import EstimateError, card_of
from infergy.profile.points import stored_points

# What a mixture of experts predicted from dense models only is said with: its steps priced by
# the expert weights they read (estimate/transfer.py), checked on one such model.
MOE_FROM_DENSE = ("; it is a mixture of experts and they are dense: its steps are priced by the "
                  "expert weights they read, which on an H100 predicted olmoe-1b-7b's energy "
                  "6-19% low at B = 1, 8 and 64 (3 points; docs/measurements.md, 2026-12-05): "
                  "the band is the dense models' own")


def predict_unmeasured(stores: list[Path], spec: ModelSpec, engine: str,
                       card: str) -> tuple[StepCost, dict, str, str]:
    """The predicted step-cost model of `spec` on `engine` and `card` (a models.gpus name),
    from the stores' calibrated models of that card: (model, the worst held-out model's error
    summary, in words, the card as measured). TransferError, saying why, where the stores
    cannot support it."""
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
    held = (f"; the stores hold {', '.join(skipped)}" if skipped else "")
    if len(fitted) < MIN_MODELS + 1:
        names = ", ".join(s.name for s, _ in fitted) or "none"
        raise TransferError(
            f"predicting a model not measured on {card} needs {MIN_MODELS + 1} models "
            f"calibrated there on {engine}, each predicted from the others to show the "
            f"error; the stores calibrate {len(fitted)} ({names}){held}. Calibrate more with "
            f"`infergy calibrate -m MODEL -e {engine} --db STORE` on that card")
    checked = leave_one_out(fitted)
    worst, band = max(((m, band_of(s)) for m, s in checked.items()), key=lambda x: x[1])
    cost = fit_transfer(fitted).predict(spec, band={m: band_of(s) for m, s in checked.items()})
    cost.limits = _limits(fitted, spec)
    kinds = sorted({s.model_type for s, _ in fitted})
    words = (f"predicted for a model not measured on this card, from "
             f"{', '.join(s.name for s, _ in fitted)}; each of them predicted from the others "
             f"erred by p90 {band:.0%} at worst ({worst})"
             + ("" if spec.model_type in kinds else
                f"; its architecture ({spec.model_type}) is none of theirs ({', '.join(kinds)}), "
                f"and that error was not checked on it")
             + (MOE_FROM_DENSE if spec.is_moe and not any(s.is_moe for s, _ in fitted) else ""))
    return cost, checked[worst], words, fitted[0][1].gpu


def _limits(fitted: list[tuple[ModelSpec, Measured]], spec: ModelSpec) -> dict:
    """What sets B = max for the new model: the sweeps' cap, and for a static engine the
    memory its weights leave free (the measured models' free memory plus their weights)."""
    caps = [c.limits["cap"] for _, c in fitted if c.limits.get("cap")]
    limits = {"cap": max(caps)} if caps else {}
    room = [c.limits["free_bytes"] + weight_bytes(s) for s, c in fitted
            if c.limits.get("free_bytes")]
    if room:
        limits["free_bytes"] = statistics.median(room) - weight_bytes(spec)
    return limits
