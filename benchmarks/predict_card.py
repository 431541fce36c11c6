"""Predict a model's B = 1 points on a card where no model like it is measured (issue 30's 32B on
the H200), from its points predicted on a reference card and a model measured on both cards.

    J/token(model, card) = J/token(model, ref; predict_calibration.py's JSON)
                           x J/token(ref model, card) / J/token(ref model, ref)

and the same for time per output token, point by point (B = 1, input, output). B = 1 only: at
B = max each card's memory sets the batch, and a large model's batch grows on a larger card far
more than the reference model's does, so the reference model's ratio does not carry over.
Written before the run (commit it), checked after with predict_engine.py:

    PYTHONPATH=src python3 benchmarks/predict_card.py --predicted MODEL-h100.json \
        --ref-model llama-3.1-8b --card "NVIDIA H200" --ref "NVIDIA H100 80GB HBM3" \
        --store A.db --store B.db --json MODEL-h200.json
    PYTHONPATH=src python3 benchmarks/predict_engine.py --check MODEL-h200.json --measured C.db
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from predict_engine import per_point, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predicted", type=Path, required=True,
                        help="predict_calibration.py's JSON: the model on the reference card")
    parser.add_argument("--ref-model", default="llama-3.1-8b")
    parser.add_argument("--card", default="NVIDIA H200")
    parser.add_argument("--ref", default="NVIDIA H100 80GB HBM3")
    parser.add_argument("--store", type=Path, action="append", default=[])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    said = json.loads(args.predicted.read_text())
    engine = said["engine"]
    on_card = per_point(args.store, args.ref_model, engine, args.card)
    on_ref = per_point(args.store, args.ref_model, engine, args.ref)
    points = []
    for p in said["points"]:
        key = ("1", p["input"], p["output"])
        if p["batch_label"] != "1" or key not in on_card or key not in on_ref:
            continue
        j, s = (on_card[key][f] / on_ref[key][f] for f in ("j_per_token", "s_per_token"))
        points.append({"batch_label": "1", "input": p["input"], "output": p["output"],
                       "card_ratio_j": j, "card_ratio_s": s,
                       "j_per_output_token": p["j_per_output_token"] * j,
                       "s_per_output_token": p["time_s"] / p["output"] * s})
    if not points:
        raise SystemExit(f"predict_card: {args.ref_model} on {engine} has no B = 1 point on "
                         f"both {args.card} and {args.ref} that the prediction has")
    write(args.json, {"model": said["model"], "engine": engine, "card": args.card,
                      "reference_card": args.ref, "reference_model": args.ref_model,
                      "from_prediction": str(args.predicted)}, args.store, points)
    print(f"{said['model']} on {engine}, {args.card}, B = 1: its prediction on {args.ref} x "
          f"{args.ref_model}'s ratio of {args.card} to {args.ref}: {len(points)} points")
    for p in points:
        print(f"  I={p['input']:>5} O={p['output']:>4}  {p['j_per_output_token']:.3f} J/token "
              f"({p['card_ratio_j']:.2f}x)  {1e3 * p['s_per_output_token']:.2f} ms/token "
              f"({p['card_ratio_s']:.2f}x)")


if __name__ == "__main__":
    main()
