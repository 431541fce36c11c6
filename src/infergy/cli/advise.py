"""`infergy advise`: the configuration that serves a trace with the least energy within a
latency target (infergy.estimate.advise), its runners-up and the Pareto front; `--out` writes
the page with its figure (infergy.report.advice)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from infergy.cli.app import (
    MODEL_HELP,
    app,
    engine_list,
    fail,
    gpu_list,
    out,
    output_folder,
    status,
)
from infergy.estimate import Advice, EstimateError, Serving, advise_trace, parse_slo
from infergy.models import UnknownGpuError, UnknownModelError
from infergy.report import CAPS, COLUMNS, cells, option_rows, verdict, write_advice
from infergy.store import StoreError
from infergy.workloads import TraceError, get_trace


@app.command()
def advise(
    trace: str = typer.Option(..., "--trace", "-t", help="A built-in trace or a trace file."),
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    gpu: str | None = typer.Option(None, "--gpu", help="Cards to search, comma-separated "
                                                       "(h100,h200); default: every card the "
                                                       "profiles hold."),
    engine: str = typer.Option("vllm,vllm-eager,hf-eager,hf-compiled", "--engine", "-e",
                               help="Engines to search, comma-separated."),
    fmt: str | None = typer.Option(None, "--format", help="Trace file format: azure, "
                                                          "burstgpt or table."),
    input_col: str | None = typer.Option(None, "--input-col", help="Input tokens column."),
    output_col: str | None = typer.Option(None, "--output-col", help="Output tokens column."),
    time_col: str | None = typer.Option(None, "--time-col", help="Arrival time column."),
    slo: str | None = typer.Option(None, "--slo", help="Latency targets, e.g. "
                                   "ttft_p90=500ms,tpot_p90=50ms,e2e_p99=30s (ttft, tpot, e2e; "
                                   "p50, p90, p99); none: the least energy at any latency."),
    serving: str = typer.Option("online", "--serving", help="online (at the trace's times, "
                                "or --rate) or offline (every request at once)."),
    rate: float | None = typer.Option(None, "--rate", help="Online: Poisson arrivals, "
                                                           "requests a second."),
    time_scale: float = typer.Option(1.0, "--time-scale", help="Online at the trace's times "
                                                               "divided by this (4: 4 times "
                                                               "faster)."),
    profile: list[Path] | None = typer.Option(None, "--profile", "-p",
                                              help="Results stores (default: the profiles "
                                                   "shipped with infergy)."),
    output: Path | None = typer.Option(None, "--out", "-o", help="Also write a page "
                                       "(index.html) with the energy-latency figure here."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes simulating "
                                       "at once (default: the machine's cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
):
    """Search the configurations infergy has profiles for (card, engine, batch caps, replicas)
    for the one that serves the trace with the least energy within the latency targets:
    every figure simulated over step-cost models fitted to measured points, with their
    error."""
    gpus, engines = gpu_list(gpu), engine_list(engine)
    if output is not None:
        output_folder(output, "--out")
    try:
        targets = parse_slo(slo) if slo is not None else []
        workload = get_trace(trace, fmt=fmt, input_col=input_col, output_col=output_col,
                             time_col=time_col)
        with status(not as_json, f"advise: searching {trace} on {model}"):
            advice = advise_trace(workload, model, gpus=gpus, engines=engines,
                                  serving=Serving(serving, rate, time_scale), targets=targets,
                                  stores=profile or None, workers=workers)
    except (TraceError, EstimateError, UnknownGpuError, UnknownModelError, StoreError) as e:
        raise fail(str(e)) from None
    page = write_advice(advice, output) if output is not None else None
    if as_json:
        out.print_json(json.dumps(advice.to_dict(), default=str))
        return
    _print(advice)
    _print_check(advice, trace, model, serving, rate, time_scale)
    if page:
        out.print(f"page: {page}")


def _print(advice: Advice) -> None:
    targets = ", ".join(t.words() for t in advice.targets) or "none given"
    out.print(f"[bold]{escape(advice.trace)} on {advice.model}[/], served "
              f"{escape(advice.serving)}; latency targets: {targets}.")
    if advice.left_out:
        out.print(f"{escape(advice.left_out)}.")
    out.print(_table("The configurations", option_rows(advice)))
    out.print(("" if advice.best else "[bold yellow]") + escape(verdict(advice))
              + ("" if advice.best else "[/]"))
    out.print(_table(f"Pareto front: least energy for its {advice.axis.name}",
                     [("", o) for o in advice.pareto]))
    for line in advice.notes:
        out.print(f"[yellow]{escape(line)}[/]")
    for line in advice.not_searched:
        out.print(f"[dim]not searched: {escape(line)}[/]")
    out.print(f"{CAPS}. {len(advice.options)} configurations simulated in {advice.search_s:.1f} s. "
              f"kWh: the whole trace on every replica, idle power included, simulated over "
              f"step-cost models fitted to measured points (predicted, not measured); ±p90: "
              f"that model's energy error on measured points. replicas: copies of the engine "
              f"on cards of the kind named, requests dealt in arrival order. baseline: vLLM's "
              f"defaults on the advised card with the replicas they need.")


def _print_check(advice: Advice, trace: str, model: str, serving: str, rate: float | None,
                 time_scale: float) -> None:
    """The command that measures the advised configuration on a GPU of its card (one
    replica, online: what the simulator predicted can be checked)."""
    config = advice.chosen.config
    args = config.serve_args()
    if args is None or config.replicas > 1 or serving != "online":
        return
    pace = f" --rate {rate:g}" if rate is not None else (
        f" --time-scale {time_scale:g}" if time_scale != 1 else "")
    out.print(f"[dim]measure it on {escape(config.gpu)}: infergy replay -t {escape(trace)} "
              f"-m {escape(model)} --mode online {args}{pace}[/]")


def _table(title: str, rows) -> Table:
    table = Table(title=title, title_justify="left")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("", "card", "engine",
                                                        "meets targets") else "right")
    for label, o in rows:
        table.add_row(*cells(label, o))
    return table
