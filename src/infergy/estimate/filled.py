"""The bins a card's profile lacks, predicted by the card's calibrated step-cost model.

The study's formula needs the B = max point of every bin a trace falls in. A card calibrated
with `infergy calibrate` (24 points spread over the grid) measures few of the study's 56 bins;
the others are predicted here, each as the sweep would have measured it:

- B = max as the sweep's search starts it: the largest power of two under the cap and under
  what fits (vLLM: its KV cache as measured; transformers: infergy's memory model on the free
  memory measured after loading);
- the energy of that batch from the step-cost model (infergy.estimate.fit.predict_point).

A measured point always wins: only bins without one are filled. Each filled bin is marked
`predicted`, and the estimate says how many requests fall in them and the energy error the
model showed at B = max on measured points it was not fitted to (its residuals where the card
has no other point to check it on, said so).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from infergy.estimate.fit import design_gap, measured, predict_point
from infergy.estimate.served import step_model
from infergy.estimate.steps import StepCost
from infergy.models import get_model
from infergy.models.memory import batch_that_fits, sequence_bytes
from infergy.profile.load import EstimateError, MissingPoints, Profile


def max_batch(cost: StepCost, input_tokens: int, output_tokens: int) -> int | None:
    """The B = max the sweep would find for (I, O) on the card of `cost`: the largest power of
    two under its cap and under what the engine's memory holds. None where the points do
    not record what set it (a static engine's free memory)."""
    b = cost.batching
    if b.get("kind") == "static":
        free = cost.limits.get("free_bytes")
        if free is None:
            return None
        fits = batch_that_fits(free, sequence_bytes(get_model(cost.model), input_tokens,
                                                    output_tokens))
    else:
        per = math.ceil((input_tokens + output_tokens) / b["block_size"])
        fits = min(b["kv_blocks"] // per, b["max_num_seqs"])
    limit = min(cost.limits.get("cap", 1024), fits)
    return 1 << (limit.bit_length() - 1) if limit >= 1 else None


def fill_profile(profile: Profile, missing: MissingPoints) -> Profile:
    """`profile` with a predicted B = max point for each bin of `missing` (as `missing.missing`
    lists them), from the card's step-cost model fitted to every point of the profile's
    stores. `missing` itself, saying why, where the points cannot support a prediction."""
    def refuse(why: str) -> MissingPoints:
        return MissingPoints(f"{missing} (the card's step-cost model does not predict them: "
                             f"{why})", missing.missing)
    try:
        data = measured([Path(s) for s in profile.sources], profile.model, profile.engine,
                        profile.gpu)
        gap = design_gap(data.windows)
        if gap:
            raise refuse(f"{gap}: `infergy calibrate -m {profile.model} -e {profile.engine}`")
        cost, summary, words = step_model(tuple(profile.sources), profile.model,
                                          profile.engine, profile.gpu)
    except EstimateError as e:
        if isinstance(e, MissingPoints):
            raise
        raise refuse(str(e)) from None
    try:
        guessed = predicted_points(cost, missing.missing or [])
    except EstimateError as e:
        raise refuse(str(e)) from None
    at_max = summary.get("max") or summary["all"]
    band = (at_max.get("energy_error") or {}).get("p90")
    return dataclasses.replace(profile, points={**profile.points, **guessed}, predicted={
        "band": band, "checked_on": f"B = max points: {words}", "points": at_max["points"]})


def predicted_points(cost: StepCost, bins: list[tuple[int, int]]) -> dict:
    """(I, O) -> the B = max point `cost` predicts there, marked predicted, for each of
    `bins`. EstimateError where the model's points do not record what sets B = max."""
    points = {}
    for i, o in bins:
        batch = max_batch(cost, i, o)
        if batch is None:
            raise EstimateError(f"its points do not record the free memory that set B = max "
                                f"(I={i} O={o})")
        time_s, energy_j = predict_point(cost, batch, i, o)
        points[(i, o)] = {"batch": batch, "energy_j": energy_j, "time_s": time_s, "id": None,
                          "store": None, "predicted": True}
    return points


def predicted_words(p: dict) -> str:
    """What an estimate with predicted bins says of them (`Estimate.predicted`)."""
    band = "" if p.get("band") is None else (
        f", energy error p90 {p['band']:.0%} on {p['points']} {p['checked_on']}")
    return (f"{p['bins']} of its {p['of_bins']} bins ({p['requests']:,} requests) are not "
            f"measured on this card: their B = max points are predicted by its calibrated "
            f"step-cost model{band}")
