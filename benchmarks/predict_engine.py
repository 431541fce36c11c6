"""Predict an engine's calibration on a card where only a sibling engine is measured (issue 30).

Each point of the design the sibling measured on the target card is predicted by the ratio the
two engines showed at the same point on a reference card where both are measured:

    J/token(engine, card) = J/token(sibling, card) x J/token(engine, ref) / J/token(sibling, ref)

and the same for time per output token (the reference may be another model on the same card:
`--ref-model`). Points are matched by (B label, input, output): at
B = max each engine's own batch search sets B, so the ratio is of J per output token at the
largest batch each fits. Written before the run (commit it), checked after:

    PYTHONPATH=src python3 benchmarks/predict_engine.py -m llama-3.1-8b -e vllm-eager \
        --sibling vllm --card "NVIDIA H200" --ref "NVIDIA H100 80GB HBM3" \
        --store src/infergy/profile/shipped/llama-3.1-8b-h200.db \
        --store src/infergy/profile/shipped/llama-3.1-8b-h100.db --json predicted.json
    PYTHONPATH=src python3 benchmarks/predict_engine.py --check predicted.json --measured C.db

`--from-card CARD` takes the other side of the same square: a model measured with the engine on
CARD only, predicted on --card by the ratio a reference model measured on both cards showed at
the same point,

    J/token(model, card) = J/token(model, CARD) x J/token(ref, card) / J/token(ref, CARD)

    PYTHONPATH=src python3 benchmarks/predict_engine.py -m llama-3.2-1b -e vllm --card \
        "NVIDIA H200" --from-card "NVIDIA H100 80GB HBM3" --ref-model llama-3.1-8b \
        --store A-H100.db --store REF-H100.db --store REF-H200.db --json predicted.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

from infergy.estimate.fit import measured


def per_point(stores, model: str, engine: str, card: str) -> dict[tuple, dict]:
    """(B label, I, O) -> J and seconds per output token (a window's figures are of one
    run), averaged over the point's windows."""
    groups: dict[tuple, list] = {}
    for w in measured(stores, model, engine, card).windows:
        if w.energy_j:
            key = (w.batch_label, w.input_tokens, w.output_tokens)
            groups.setdefault(key, []).append(w)
    return {k: {"batch": ws[0].batch,
                "j_per_token": statistics.fmean(w.energy_j / (w.batch * w.output_tokens)
                                                for w in ws),
                "s_per_token": statistics.fmean(w.time_s / w.output_tokens
                                                for w in ws)}
            for k, ws in groups.items()}


def predict(args) -> None:
    ref_model = args.ref_model or args.model
    if args.from_card:  # -e on another card, scaled by the reference model's ratio of cards
        sibling, on, ref_cards = args.engine, args.from_card, (args.card, args.from_card)
    else:  # a sibling engine on this card, scaled by the two engines' ratio on --ref
        sibling, on, ref_cards = args.sibling, args.card, (args.ref, args.ref)
    target = per_point(args.store, args.model, sibling, on)
    ref_engine = per_point(args.store, ref_model, args.engine, ref_cards[0])
    ref_sibling = per_point(args.store, ref_model, sibling, ref_cards[1])
    points = []
    for key in sorted(target, key=lambda k: (k[0] != "1", k[1], k[2])):
        if key not in ref_engine or key not in ref_sibling:
            continue
        e, s = ref_engine[key], ref_sibling[key]
        points.append({"batch_label": key[0], "input": key[1], "output": key[2],
                       "sibling_batch": target[key]["batch"],
                       "j_per_output_token": target[key]["j_per_token"]
                       * e["j_per_token"] / s["j_per_token"],
                       "s_per_output_token": target[key]["s_per_token"]
                       * e["s_per_token"] / s["s_per_token"]})
    write(args.json, {"model": args.model, "engine": args.engine, "sibling": sibling,
                      "card": args.card, "reference_card": ref_cards[1],
                      "reference_model": ref_model}, args.store, points)
    print(f"{args.model} on {args.engine}, {args.card}, "
          + (f"from its points on {args.from_card} and {ref_model}'s on both cards"
             if args.from_card else
             f"from {args.sibling} there and both on {args.ref} ({ref_model})")
          + f": {len(points)} points")
    for p in points:
        print(f"  B={p['batch_label']:>3} I={p['input']:>5} O={p['output']:>4}  "
              f"{p['j_per_output_token']:.4f} J/token  {1e3 * p['s_per_output_token']:.2f} "
              f"ms/token")


def write(path: Path, said: dict, stores: list[Path], points: list[dict]) -> None:
    """A prediction's JSON, as `check` reads it: when, what (model, engine, card...), from
    which stores, and its points."""
    out = {"predicted_at": datetime.now(UTC).isoformat(timespec="seconds"), **said,
           "stores": [str(s) for s in stores], "points": points}
    path.write_text(json.dumps(out, indent=1) + "\n")


def check(args) -> None:
    said = json.loads(args.check.read_text())
    got = per_point([args.measured], said["model"], said["engine"], said["card"])
    errs: dict[str, list[float]] = {}
    for p in said["points"]:
        key = (p["batch_label"], p["input"], p["output"])
        if key not in got:
            continue
        err = p["j_per_output_token"] / got[key]["j_per_token"] - 1
        terr = p["s_per_output_token"] / got[key]["s_per_token"] - 1
        errs.setdefault(key[0], []).append(err)
        print(f"  B={key[0]:>3} ({got[key]['batch']:>4}) I={key[1]:>5} O={key[2]:>4}  "
              f"energy {err:+7.1%}  time {terr:+7.1%}")
    for label, e in sorted(errs.items()):
        a = sorted(abs(x) for x in e)
        print(f"B = {label}: {len(a)} points, energy |error| median {statistics.median(a):.1%}, "
              f"max {a[-1]:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="llama-3.1-8b")
    parser.add_argument("-e", "--engine")
    parser.add_argument("--sibling", help="the engine measured on both cards")
    parser.add_argument("--card", default="NVIDIA H200")
    parser.add_argument("--ref", default="NVIDIA H100 80GB HBM3")
    parser.add_argument("--ref-model", help="the model both engines measured on --ref "
                                            "(default: -m's own)")
    parser.add_argument("--from-card", help="predict from -m's points with -e on this card, "
                        "scaled by --ref-model's ratio between --card and it")
    parser.add_argument("--store", type=Path, action="append", default=[])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--check", type=Path)
    parser.add_argument("--measured", type=Path)
    args = parser.parse_args()
    if args.check:
        check(args)
    else:
        predict(args)


if __name__ == "__main__":
    main()
