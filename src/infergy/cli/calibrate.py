"""`infergy calibrate`: measure the calibration design of one model on one engine (one sweep,
one engine start), fit its step-cost model, say how well it fits, and keep it in the store."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import typer
import yaml
from rich.table import Table

from infergy.cli.app import MODEL_HELP, app, engine_list, fail, out, writable_folder
from infergy.cli.sweep import DEFAULT_DB, sweep_as_typed
from infergy.estimate import (
    FEATURES,
    EstimateError,
    design,
    errors,
    fit_step_cost,
    measured,
    prior_for,
)
from infergy.models import UnknownModelError, get_model
from infergy.plan import (
    CALIBRATION_INPUTS,
    CALIBRATION_OUTPUTS,
    CALIBRATION_RUNS,
    calibration_inputs,
)
from infergy.store import Store, StoreError

UNITS = {"steps": "a step", "prefill_tokens": "a prompt token", "prefill_pairs":
         "an attention pair", "decode_seqs": "a decoding sequence", "context_tokens":
         "a context token read", "calls": "an engine call", "expert_reads":
         "all the experts' weights read once"}


@app.command()
def calibrate(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    engine: str = typer.Option(..., "--engine", "-e", help="One engine."),
    db: Path = typer.Option(DEFAULT_DB, "--db", help="Results store (SQLite); resumed if it "
                                                     "exists: the points a card of this model "
                                                     "measured there are not measured again."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    fit_only: bool = typer.Option(False, "--fit-only", help="Measure nothing: fit the points "
                                                            "the store holds (a design measured "
                                                            "by a sweep of its own)."),
):
    """Measure the 24 points of the calibration design (inputs 32 to 8192, outputs 8 to 512,
    B = 1 and B = max) in one engine start, fit the engine's step-cost model to them, print
    its coefficients and errors, and keep it in the store (its meta table)."""
    started = time.monotonic()
    if fit_only:
        if not db.exists():
            raise fail(f"--db {db}: no such store (--fit-only fits the points a store holds)")
    else:
        spec = _spec(model, engine, db)
        try:
            # By the card's model, not the card: GPU time comes in pieces on fresh machines,
            # and a calibration resumed on one must not measure again what another measured
            # (2026-12-05 late night: 13 points of llama-3.2-3b were).
            sweep_as_typed(str(spec), db, device=device, resume_by="model")
        except typer.Exit as e:
            if e.exit_code:
                raise
    swept_s = None if fit_only else time.monotonic() - started
    try:
        with Store(db, create=False, read_only=True) as store:
            runs = store.runs()
        card = next((r["gpu_name"] for r in reversed(runs) if r.get("gpu_name")), None)
        data = measured([db], model, engine, card)
        inside, rest = design(data.windows)
        cost = fit_step_cost(data, inside or None, prior_for((str(db),), model, engine, card))
        checked = errors(cost, rest)["summary"] if rest else None
        cost.fit["validation"] = checked
        with Store(db) as store:
            store.put_meta(f"step_cost:{cost.model}:{cost.engine}:{cost.gpu}",
                           json.dumps(cost.to_dict()))
    except (EstimateError, StoreError) as e:
        raise fail(str(e)) from None
    _print(cost, checked, swept_s, db)


def _spec(model: str, engine: str, db: Path) -> Path:
    """The calibration design for `model` (the inputs its context holds with the longest
    output), written beside the store: the sweep spec that measures it, kept as a record.
    The model, the engine and the store's folder are checked first: nothing is written for a
    mistake."""
    try:
        spec = get_model(model)
    except UnknownModelError as e:
        raise fail(str(e)) from None
    if len(engine_list(engine)) > 1:
        raise fail(f"--engine {engine}: calibrate measures one engine at a time (one engine "
                   f"start); run it once an engine")
    inputs = calibration_inputs(spec.max_context)
    if len(inputs) < 2:
        raise fail(f"--model {model}: its context of {spec.max_context} tokens holds fewer "
                   f"than two of the calibration's inputs ({CALIBRATION_INPUTS}) with "
                   f"{max(CALIBRATION_OUTPUTS)} output tokens")
    writable_folder(db.parent, "--db", db)  # made where missing, as `measure --db` does
    # A model may be a config.json's path and an engine module:Class: a file name of neither.
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{spec.name}-{engine}").strip("_")
    path = db.with_name(f"{db.stem}-calibration-{name}.yaml")
    try:
        path.write_text(yaml.safe_dump({
            "models": [spec.name],
            "engines": [engine], "batch_sizes": [1, "max"],
            "grids": [{"input_tokens": inputs, "output_tokens": list(CALIBRATION_OUTPUTS)}],
            **CALIBRATION_RUNS}))
    except OSError as e:
        raise fail(f"--db {db}: the calibration's spec {path.name} cannot be written beside "
                   f"it ({e.strerror or e})") from None
    return path


def _print(cost, checked: dict | None, swept_s: float | None, db: Path) -> None:
    table = Table(title=f"{cost.model} on {cost.engine}, {cost.gpu}: step-cost model",
                  title_justify="left")
    for col in ("feature", "time per unit", "energy above idle per unit"):
        table.add_column(col, justify="left" if col == "feature" else "right")
    for name, t, e in zip(FEATURES, cost.time_s, cost.active_j, strict=True):
        if name == "expert_reads" and not cost.batching.get("experts"):  # a dense model
            continue
        table.add_row(f"{name} ({UNITS[name]})", f"{t:.3g} s", f"{e:.3g} J")
    table.add_row("busy power (a second of steps)", "", f"{cost.busy_w:.3g} W")
    out.print(table)
    out.print(f"Idle power {cost.idle_w:.1f} W. Batching as measured: "
              f"{json.dumps(cost.batching)}.")
    if cost.fit.get("prior"):
        out.print(f"Fitted drawn towards what the card's other calibrated models "
                  f"({', '.join(cost.fit['prior'])}) predict of it (infergy.estimate.fit).")
    for what, summary in (("fit (its own points)", cost.fit["summary"]),
                          ("predicting the store's other points", checked)):
        if not summary:
            continue
        for group, s in summary.items():
            e, t = s.get("energy_error"), s.get("time_error")
            if e and t:
                out.print(f"{what}, {group} ({s['points']} points): energy error median "
                          f"{e['median']:.1%}, p90 {e['p90']:.1%}; time median "
                          f"{t['median']:.1%}, p90 {t['p90']:.1%}")
    took = ("" if swept_s is None else f"Measured and fitted in {swept_s / 60:.1f} minutes "
            f"(the sweep, the engine's start included). ")
    out.print(f"{took}Kept in {db} (meta step_cost:{cost.model}:{cost.engine}:{cost.gpu}).")
