"""Predict a model's calibration on a card before it is measured (issue 32), then check it.

The model's step-cost model is predicted from the stores' models calibrated on that card and
engine (infergy.estimate.unmeasured, as `infergy estimate` does for a model measured nowhere);
each point of `infergy calibrate`'s design (the inputs its context holds x outputs, at B = 1
and at the B = max its batch search would find) is then predicted: time, GPU energy, J per
output token.

    PYTHONPATH=src python3 benchmarks/predict_calibration.py -m olmoe-1b-7b -e vllm --gpu h100-sxm \
        --store A.db --store B.db --json predicted.json            # before the run: commit it
    PYTHONPATH=src python3 benchmarks/predict_calibration.py --check predicted.json \
        --measured C.db                                            # after: signed errors

`--blind-after A.db` checks only the points A.db (the store as it was when the prediction was
made) lacks: where some of the model's points were measured first, the others are the blind test.

`--unbanded` predicts from two calibrated models as well, with no band: a prediction to commit
before the run of a third model, which `infergy estimate` refuses until the third is measured.

`--decoding D` checks a prediction against the measured points of another decoding.
`--own` predicts from the model's own points in the stores instead (its step-cost model, fitted
as `infergy estimate` fits it, drawn towards the card's other models), and `--sweep SPEC` (a
sweep's YAML or preset; its engine options and decoding kept) names the points: a measured
model's points not measured yet, such as the study's length sweeps past its calibration.

    PYTHONPATH=src python3 benchmarks/predict_calibration.py -m llama-3.1-8b -e vllm \
        --gpu h100-sxm --store S.db --own --sweep benchmarks/sweeps/length-sweep-llama-3.1-8b.yaml \
        --json predicted.json

The check reads the measured points of the same model, engine and card, and matches them to the
prediction by (B, I, O); a point predicted at a B = max the run did not reach is predicted again
at the B it measured, from the same predicted step-cost model (saved in the JSON).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from infergy.estimate.filled import max_batch
from infergy.estimate.fit import errors, measured, predict_point
from infergy.estimate.served import step_model
from infergy.estimate.steps import StepCost
from infergy.estimate.transfer import fit_transfer
from infergy.estimate.unmeasured import batch_limits, calibrated_models, predict_unmeasured
from infergy.models import UnknownModelError, get_model
from infergy.plan import (
    CALIBRATION_OUTPUTS,
    PRESETS,
    calibration_inputs,
    load_spec,
    with_options,
)
from infergy.profile.load import EstimateError

# The 12 study bins llama-3.1-8b's H200 profile is validated on (benchmarks/sweeps/h200-*.yaml).
VALIDATION_INPUTS, VALIDATION_OUTPUTS = (128, 512, 1024, 4096), (16, 128, 256)


def point(cost: StepCost, label: str, batch: int, i: int, o: int) -> dict:
    time_s, energy_j = predict_point(cost, batch, i, o)
    return {"batch_label": label, "batch": batch, "input": i, "output": o, "time_s": time_s,
            "energy_j": energy_j, "j_per_output_token": energy_j / (batch * o)}


def unbanded(args, spec) -> tuple[StepCost, dict, str, str]:
    """The transfer from every dense model the stores calibrate, two included, with no band
    (a band needs three: each predicted from the others): a prediction to commit before a
    third model's run checks it, which `infergy estimate` would refuse."""
    dense = [(s, d) for s, d in calibrated_models(args.store, spec, args.engine, args.gpu)[0]
             if not s.is_moe]
    cost = fit_transfer(dense).predict(spec)
    cost.limits = batch_limits(dense, spec)
    words = (f"predicted from {', '.join(s.name for s, _ in dense)} with no error band "
             f"(--unbanded: a band needs three models)")
    return cost, {}, words, dense[0][1].gpu


def own(args) -> tuple[StepCost, dict, str, str]:
    """The model's own step-cost model as `infergy estimate` fits it (infergy.estimate.served,
    step_model: its greedy points of the engine's default options in the stores, drawn
    towards the card's other calibrated models), on the stores' one card."""
    card = measured(args.store, args.model, args.engine).gpu
    cost, _, words = step_model(tuple(map(str, args.store)), args.model, args.engine, card)
    return cost, {}, f"its own step-cost model, fitted to all its points (checked: {words})", card


def design_points(spec, validation: bool) -> list[tuple[str, int, int]]:
    """(batch label, I, O) of calibrate's design, and of the validation bins if asked."""
    grids = [(calibration_inputs(spec.max_context), CALIBRATION_OUTPUTS)]
    if validation:
        grids.append(([i for i in VALIDATION_INPUTS if i + max(VALIDATION_OUTPUTS)
                       <= spec.max_context], VALIDATION_OUTPUTS))
    return [(label, i, o) for inputs, outputs in grids for i in inputs for o in outputs
            for label in ("1", "max")]


def predict(args) -> None:
    spec = get_model(args.model)
    if args.own:
        cost, worst, words, gpu = own(args)
    elif args.unbanded:
        cost, worst, words, gpu = unbanded(args, spec)
    else:
        cost, worst, words, gpu = predict_unmeasured(args.store, spec, args.engine, args.gpu)
    said = {"engine_options": "{}", "decoding": "greedy"}
    if args.sweep:
        sweep = load_spec(args.sweep)
        if args.sweep in PRESETS:  # a preset, as `infergy sweep PRESET -m MODEL -e ENGINE`
            sweep = with_options(sweep, models=[spec.name], engines=[args.engine])
        tasks = [t for t in sweep.tasks()
                 if t.model == spec.name and t.engine.name == args.engine]
        if not tasks:
            raise ValueError(f"{args.sweep} has no point of {spec.name} on {args.engine}")
        wanted = list(dict.fromkeys((str(t.batch), t.input_tokens, t.output_tokens)
                                    for t in tasks))
        said = {"engine_options": tasks[0].engine.options_key, "decoding": tasks[0].decoding,
                "sweep": str(args.sweep)}
    else:
        wanted = design_points(spec, args.validation)
    points = []
    for label, i, o in wanted:
        batch = (max_batch(cost, i, o) if label == "max" else int(label))
        if batch:
            points.append(point(cost, "max" if label == "max" else "1" if batch == 1 else
                                "other", batch, i, o))
    out = {"predicted_at": datetime.now(UTC).isoformat(timespec="seconds"),
           "model": args.model, "engine": args.engine, "card": gpu, "words": words, **said,
           "worst_held_out": worst, "stores": [str(s) for s in args.store],
           "step_cost": cost.to_dict(), "points": points}
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{args.model} on {args.engine}, {gpu}: {words}")
    for p in points:
        print(f"  B={p['batch']:>4} ({p['batch_label']:>3}) I={p['input']:>5} O={p['output']:>4}"
              f"  {p['time_s']:8.3f} s  {p['energy_j']:10.1f} J  "
              f"{p['j_per_output_token']:.4f} J/token")


def _bin(w) -> tuple:
    return w.batch_label, w.input_tokens, w.output_tokens


def check(args) -> None:
    said = json.loads(args.check.read_text())
    cost = StepCost.from_dict(said["step_cost"])
    kept = (args.decoding or said.get("decoding", "greedy"), said.get("engine_options", "{}"))
    data = measured(args.measured, said["model"], said["engine"], said["card"], *kept)
    windows = [w for w in data.windows if w.energy_j]
    if args.blind_after:  # only the points measured after the prediction was committed
        seen = {_bin(w) for w in measured([args.blind_after], said["model"], said["engine"],
                                          said["card"], *kept).windows}
        windows = [w for w in windows if _bin(w) not in seen]
        print(f"{len(windows)} points not in {args.blind_after} (its {len(seen)} left out)")
    checked = errors(cost, windows)
    for r in checked["errors"]:
        print(f"  B={r['batch']:>4} I={r['input']:>5} O={r['output']:>4}  energy "
              f"{r['energy_error']:+7.1%}  time {r['time_error']:+7.1%}")
    for label in ("1", "max"):
        group = checked["summary"].get(label)
        if group:
            e = group["energy_error"]
            print(f"B = {label}: {group['points']} points, energy |error| median "
                  f"{e['median']:.1%}, max {e['max']:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model")
    parser.add_argument("-e", "--engine", default="vllm")
    parser.add_argument("--gpu", help="a card as infergy names it (h100-sxm, h200: `infergy env`)")
    parser.add_argument("--store", type=Path, action="append", default=[])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--validation", action="store_true",
                        help="the 12 validation bins too (VALIDATION_INPUTS x _OUTPUTS)")
    parser.add_argument("--unbanded", action="store_true",
                        help="predict from two calibrated models too, with no error band")
    parser.add_argument("--own", action="store_true",
                        help="predict from the model's own points in the stores")
    parser.add_argument("--sweep", help="a sweep's YAML or preset (of the model and engine "
                        "given): the points to predict")
    parser.add_argument("--check", type=Path, help="a prediction's JSON, to check")
    parser.add_argument("--decoding", help="check against the points of this decoding (a "
                                           "greedy prediction against sampling's, say)")
    parser.add_argument("--measured", type=Path, action="append", default=[])
    parser.add_argument("--blind-after", type=Path,
                        help="check only the points this store (the one the prediction saw) "
                             "lacks: the blind ones")
    args = parser.parse_args()
    try:
        if args.check:
            check(args)
        elif args.model and (args.gpu or args.own) and args.store and args.json:
            predict(args)
        else:
            parser.error("predict with -m, --gpu, --store and --json, or check with --check "
                         "and --measured")
    except (EstimateError, UnknownModelError, OSError, ValueError) as e:
        raise SystemExit(f"predict_calibration: {e}") from None


if __name__ == "__main__":
    main()
