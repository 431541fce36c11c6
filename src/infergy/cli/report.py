"""`infergy report`: the HTML report of results stores and traces
(infergy.report.build_report)."""

from __future__ import annotations

from pathlib import Path

import typer

from infergy.cli.app import app, fail, out
from infergy.report import WORLD_GCO2_PER_KWH, build_report
from infergy.workloads import TraceError


@app.command()
def report(
    db: list[Path] | None = typer.Option(None, "--db", help="Results stores (repeatable; "
                                                           "those of several cards: each "
                                                           "card apart)."),
    trace: list[str] | None = typer.Option(None, "--trace", "-t",
                                           help="Built-in traces or trace files (repeatable)."),
    output: Path = typer.Option(Path("infergy-report"), "--out", "-o", help="Folder to write."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only this model's points."),
    grid_gco2_per_kwh: float = typer.Option(WORLD_GCO2_PER_KWH, "--grid-gco2-per-kwh",
                                            help="Carbon intensity (default: world average "
                                                 "2023, Ember)."),
    usd_per_kwh: float | None = typer.Option(None, "--usd-per-kwh", help="Electricity price."),
):
    """Write an HTML report (index.html, figures as PNG and SVG) from results stores and
    traces, each card the stores hold in its own sections, figures and estimate. Missing data
    are named on the page with the command that would measure them."""
    for store in db or []:  # a mistyped path: said here, not only on the page
        if not store.is_file():
            raise fail(f"--db {store}: no such results store")
    try:
        page = build_report(list(db or []), list(trace or []), output, model=model,
                            grid_gco2_per_kwh=grid_gco2_per_kwh, usd_per_kwh=usd_per_kwh)
    except TraceError as e:
        raise fail(str(e)) from None
    out.print(f"report: {page}")
