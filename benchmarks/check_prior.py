"""How much a calibrated model's own fit gains from the card's other models as a prior
(infergy.estimate.fit, PRIOR_WEIGHT), on a CPU, from stores already measured: each model's
design is fitted with one of its inputs' points held out, and those points are predicted, at
several weights of the prior (0: its points alone), and by the prior alone.

    PYTHONPATH=src python3 benchmarks/check_prior.py --store A.db --store B.db ... \
        [--engine vllm] [--gpu "NVIDIA H100 80GB HBM3"]

The prior of each model is what the stores' other calibrated models of the card predict of it
(infergy.estimate.transfer.card_prior); a model with fewer than two such is skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from infergy.estimate.fit import design, errors, fit_step_cost, measured
from infergy.estimate.transfer import calibrated_models, card_prior
from infergy.models import get_model
from infergy.profile.load import card_of

WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0)


def held_out_errors(data, prior, weight: float | None) -> list[float]:
    """|energy error| of the points of each design input, predicted by the model fitted to the
    other inputs' points drawn towards `prior` at `weight` (0: their points alone; None: the
    prior alone)."""
    inside, _ = design(data.windows)
    out = []
    for held in sorted({w.input_tokens for w in inside}):
        test = [w for w in inside if w.input_tokens == held]
        rest = [w for w in inside if w.input_tokens != held]
        cost = prior if weight is None else fit_step_cost(data, rest, prior if weight else None,
                                                          weight)
        out += [abs(r["energy_error"]) for r in errors(cost, test)["errors"]
                if r["energy_error"] is not None]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, action="append", required=True)
    parser.add_argument("--engine", action="append", default=None)
    parser.add_argument("--gpu", default="NVIDIA H100 80GB HBM3")
    args = parser.parse_args()
    card = card_of(args.gpu)
    for engine in args.engine or ["vllm", "hf-eager"]:
        # Every calibrated model of the card: those other than one the stores cannot hold.
        models = [s.name for s, _ in calibrated_models(args.store, get_model("tiny"), engine,
                                                        card)[0]]
        found: dict[str, list[float]] = {}
        for model in models:
            spec = get_model(model)
            prior = card_prior(args.store, spec, engine, card)
            if prior is None:
                continue
            data = measured(args.store, model, engine, args.gpu)
            for w in WEIGHTS:
                found.setdefault(f"weight {w:g}", []).extend(held_out_errors(data, prior, w))
            found.setdefault("the prior alone", []).extend(held_out_errors(data, prior, None))
        print(f"== {engine} on {args.gpu}: {len(models)} calibrated models, each input of "
              f"each design held out in turn")
        for what, v in found.items():
            print(f"   {what:16s} energy |error| median {np.median(v):.1%}, "
                  f"p90 {np.percentile(v, 90):.1%} ({len(v)} points)")


if __name__ == "__main__":
    main()
