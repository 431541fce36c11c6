"""Issue 32's leave-one-model-out table, on a CPU, from stores already measured: for each
engine on each card, every model with enough points gets its own step-cost model; each is then
predicted from the others (infergy.estimate.transfer) and checked against its own points.
Dense models are predicted from dense ones; each mixture of experts from the dense models too
(the case the issue asks to say apart) and, where another mixture of experts is fitted, from all
the others, as `infergy estimate` predicts it (infergy.estimate.transfer.predicted_from).

    PYTHONPATH=src python3 benchmarks/validate_transfer.py --store A.db --store B.db \
        [--engine vllm --engine hf-eager] [--json OUT]

A model whose points are too few to fit its own step-cost model is not predicted from, only
predicted (from every fitted dense model) and checked on the points it has; a card with fewer
than three fitted models is listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from infergy.estimate.fit import errors, fit_rows, measured
from infergy.estimate.transfer import TransferError, fit_transfer, leave_one_out, predicted_from
from infergy.models import get_model
from infergy.profile.load import EstimateError


def contents(stores: list[Path]) -> set[tuple[str, str, str]]:
    """(card, engine, model) of every ok point in the stores."""
    found = set()
    for store in stores:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        found |= set(db.execute("SELECT r.gpu_name, p.engine, p.model FROM points p JOIN runs r "
                                "ON p.run_id = r.id WHERE p.status = 'ok' AND r.gpu_name "
                                "IS NOT NULL"))
    return found


def stats(summary: dict, group: str, key: str = "energy_error") -> str:
    s = (summary.get(group) or {}).get(key)
    return "-" if not s else f"{s['median']:.1%} / {s['p90']:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, action="append", required=True)
    parser.add_argument("--engine", action="append")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    found = contents(args.store)
    report = []
    for card, engine in sorted({(c, e) for c, e, _ in found}):
        if args.engine and engine not in args.engine:
            continue
        fitted, few = [], []
        for model in sorted(m for c, e, m in found if (c, e) == (card, engine)):
            try:
                data = measured(args.store, model, engine, card)
            except EstimateError as err:
                report.append({"card": card, "engine": engine, "model": model,
                               "skipped": str(err)})
                continue
            try:
                fit_rows(data)  # enough points to fit the model alone, or EstimateError
                fitted.append((get_model(model), data))
            except EstimateError:  # too few to fit or to predict from: only predicted
                few.append((get_model(model), data))
        dense = [(s, c) for s, c in fitted if not s.is_moe]
        print(f"== {engine} on {card}: {len(fitted)} models fitted ({len(dense)} dense)")
        try:
            checks = leave_one_out(dense)
        except TransferError as err:
            print(f"   no leave-one-out: {err}")
            report.append({"card": card, "engine": engine, "skipped": str(err)})
            continue
        rows = []
        for spec, data, calibrated in [*((s, d, True) for s, d in fitted),
                                       *((s, d, False) for s, d in few)]:
            if spec.is_moe or not calibrated:
                rows.append((spec, data, calibrated, "from the dense models",
                             errors(fit_transfer(dense).predict(spec), data.windows)))
            else:
                rows.append((spec, data, calibrated, "from the other dense models",
                             {"summary": checks[spec.name]}))
            others = [(s, d) for s, d in fitted if s.name != spec.name]
            if spec.is_moe and any(s.is_moe for s, _ in others):  # as `infergy estimate` does
                rows.append((spec, data, calibrated, "from all the others", errors(
                    fit_transfer(predicted_from(spec, others)).predict(spec), data.windows)))
        for spec, data, calibrated, how, checked in rows:
            summary = checked["summary"]
            print(f"   {spec.name:32} {how:28} energy |error| median / p90: all "
                  f"{stats(summary, 'all')}, B = 1 {stats(summary, '1')}, B = max "
                  f"{stats(summary, 'max')}; time all {stats(summary, 'all', 'time_error')}")
            if not calibrated:
                print(f"   {'':32} (too few points to fit it: none of the others is predicted "
                      f"from it; checked on its {len(data.windows)} points)")
            report.append({"card": card, "engine": engine, "model": spec.name, "how": how,
                           "summary": summary, "calibrated": calibrated})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
