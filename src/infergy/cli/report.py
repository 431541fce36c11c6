"""`infergy report`: the HTML report of results stores and traces
(infergy.report.build_report)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from infergy.cli.app import app, err, fail, note, out, output_folder, status
from infergy.estimate import EstimateError, parse_slo
from infergy.models import UnknownModelError, get_model
from infergy.report import WORLD_GCO2_PER_KWH, build_report
from infergy.store import StoreError
from infergy.workloads import TraceError


@app.command()
def report(
    db: list[Path] | None = typer.Option(None, "--db", help="Results stores (repeatable; "
                                                           "those of several cards: each "
                                                           "card apart; default: the "
                                                           "profiles shipped with infergy, "
                                                           "as `infergy estimate` reads "
                                                           "them)."),
    trace: list[str] | None = typer.Option(None, "--trace", "-t",
                                           help="Built-in traces or trace files (repeatable)."),
    output: Path = typer.Option(Path("infergy-report"), "--out", "-o", help="Folder to write."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only this model's points."),
    grid_gco2_per_kwh: float = typer.Option(WORLD_GCO2_PER_KWH, "--grid-gco2-per-kwh",
                                            help="Carbon intensity (default: world average "
                                                 "2023, Ember)."),
    usd_per_kwh: float | None = typer.Option(None, "--usd-per-kwh", help="Electricity price."),
    slo: str | None = typer.Option(None, "--slo", help="Also each trace's configuration of "
                                   "least energy within these latency targets (infergy "
                                   "advise), e.g. ttft_p90=2s,tpot_p90=50ms; none: at any "
                                   "latency."),
):
    """Write an HTML report (index.html, figures as PNG and SVG) from results stores and
    traces: first each trace's energy on each engine (the numbers of `infergy estimate`), then
    the evidence, each card the stores hold in its own sections. Missing data are named on
    the page with the command that would measure them."""
    for store in db or []:  # a mistyped path: said here, not only on the page
        if store.is_dir():
            raise fail(f"--db {store}: is a folder; give a results store (a file written by "
                       f"`infergy sweep`)")
        if not store.is_file():
            raise fail(f"--db {store}: no such results store")
    for name, value in (("--grid-gco2-per-kwh", grid_gco2_per_kwh),
                        ("--usd-per-kwh", usd_per_kwh)):
        if value is not None and not 0 <= value < float("inf"):
            raise fail(f"{name}: expected a number of 0 or more, got {value:g}")
    if model and not db:  # the shipped profiles are of catalog models: a typo said here
        try:
            model = get_model(model).name
        except UnknownModelError as e:
            raise fail(f"--model: {e}") from None
    try:
        targets = None if slo is None else parse_slo(slo)
    except EstimateError as e:
        raise fail(str(e)) from None
    output_folder(output, "--out")
    try:
        with _progress("report: reading traces") as say:
            page = build_report(list(db) if db else None, list(trace or []), output,
                                model=model, grid_gco2_per_kwh=grid_gco2_per_kwh,
                                usd_per_kwh=usd_per_kwh,
                                progress=lambda text: say(f"report: {text}"), slo=targets)
    except (TraceError, StoreError) as e:
        raise fail(str(e)) from None
    out.print(f"report: {page}")


@contextmanager
def _progress(first: str) -> Iterator:
    """What the report is doing, on stderr: a status line on a terminal, else a plain line
    each step (a log keeps them; a status line would leave nothing there)."""
    if err.is_terminal:
        with status(True, first) as line:
            yield line.update
        return
    yield lambda text: note(text, style="none")  # the report's first step says `first` too
