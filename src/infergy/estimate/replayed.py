"""The estimate of the requests a replay runs (`infergy replay`), to set beside the energy it
measures."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from infergy.estimate.binned import estimate
from infergy.estimate.replays import predict_replay
from infergy.profile.load import (
    MissingPoints,
    Profile,
    load_card_profile,
    load_profile,
    shipped_profiles,
)
from infergy.workloads.bins import BinGrid
from infergy.workloads.trace import Trace


class ReplayEstimate:
    """The estimator on the replayed requests, from the profile that gave the binned B.
    `estimate`: the Estimate of those requests; None, with `missing` saying why, where the
    profile lacks some of their bins."""

    def __init__(self, workload: Trace, requests: np.ndarray, grid: BinGrid, profile: Profile):
        sub = Trace(workload.name, workload.input_tokens[requests],
                    workload.output_tokens[requests])
        self.profile, self.missing, self.estimate = profile, None, None
        self.workload = workload
        try:
            self.estimate = estimate(sub, grid.assign(sub.input_tokens, sub.output_tokens),
                                     profile)
        except MissingPoints as e:
            self.missing = str(e)

    def _simulated(self, result) -> float | None:
        """The simulator on the batches the replay ran, over the step-cost model fitted to the
        profile's points (infergy.estimate.served); None where it cannot be made."""
        p = self.profile
        served, _ = predict_replay({**asdict(result), "mode": "offline"}, p.model,
                                   [Path(s) for s in p.sources], self.workload, card=p.gpu)
        return served.energy_j if served else None

    def compare(self, result) -> dict:
        """The estimate against a replay's result (its `energy_j` and `status`): the profile's
        GPU and stores, the simulated (None where it cannot be made), binned, whole-batches and
        interpolated estimates in J, and each one's error (estimate / measured - 1; None where
        the replay measured no energy or did not finish)."""
        e = self.estimate
        figures = {"simulated_j": self._simulated(result), "binned_j": e.energy_j,
                   "whole_batches_j": e.energy_whole_batches_j,
                   "interpolated_j": e.interpolated_j}
        measured = result.energy_j if result.status == "ok" else None
        return {"profile_gpu": self.profile.gpu, "profiles": self.profile.sources, **figures,
                "errors": {k.removesuffix("_j"): (None if v is None or not measured
                                                  else v / measured - 1)
                           for k, v in figures.items()}}


def replay_estimate(workload: Trace, requests: np.ndarray, grid: BinGrid, model: str,
                    engine: str, stores: list[Path] | None = None, card: str | None = None,
                    gpu: str | None = None) -> tuple[ReplayEstimate | None, str | None]:
    """The estimator of a replay's requests, from the profile of `model` in `engine` in
    `stores` (default: the shipped profiles): the card's where `card` (as NVML names the one
    the replay runs on) is given, else `gpu`'s. (None, why) where no profile holds every bin
    the requests need; (estimator, None) otherwise."""
    try:
        profile = (load_card_profile(stores or shipped_profiles(), model, engine, card,
                                     shipped=not stores) if card
                   else load_profile(stores or shipped_profiles(), model, engine, gpu))
    except MissingPoints as e:
        return None, str(e)
    estimator = ReplayEstimate(workload, requests, grid, profile)
    if estimator.missing:
        return None, estimator.missing
    return estimator, None
