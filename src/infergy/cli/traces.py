"""`infergy traces`: the built-in traces and any trace file, described in the study's Tables
1-2 layout."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from infergy.cli.app import app, fail, out
from infergy.workloads import BUILTIN, TraceError, describe, get_trace

traces_app = typer.Typer(help="Workload traces: built-in ones and your own files.",
                         no_args_is_help=True)
app.add_typer(traces_app, name="traces")


@traces_app.command("list")
def traces_list():
    """The built-in traces, usable by name wherever a trace is asked for."""
    table = Table(title="Built-in traces", title_justify="left")
    table.add_column("name")
    table.add_column("what it is")
    for name, about in BUILTIN.items():
        table.add_row(name, about)
    out.print(table)


@traces_app.command("describe")
def traces_describe(
    traces: list[str] = typer.Argument(..., metavar="NAME|FILE ...", help="Built-in trace names "
                                       "or trace files (Azure, BurstGPT, CSV, JSONL, Parquet)."),
    fmt: str | None = typer.Option(None, "--format", help="azure, burstgpt, table or sharegpt "
                                                          "(default: guessed from the columns)."),
    input_col: str | None = typer.Option(None, "--input-col", help="Input tokens column."),
    output_col: str | None = typer.Option(None, "--output-col", help="Output tokens column."),
    time_col: str | None = typer.Option(None, "--time-col", help="Arrival time column."),
    model: str | None = typer.Option(None, "--model", help="BurstGPT: keep this Model only."),
    log_type: str | None = typer.Option(None, "--log-type", help="BurstGPT: keep this Log Type."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed rows "
                                                            "instead of stopping."),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="ShareGPT: a tokenizer "
                                                                   "folder to count tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Count, time span, arrival rate, and input and output tokens as mean +- std, median and
    p99 (the study's Tables 1-2)."""
    described = []
    for name in traces:
        try:
            trace = get_trace(name, fmt=fmt, input_col=input_col, output_col=output_col,
                              time_col=time_col, model=model, log_type=log_type,
                              skip_bad=skip_bad, tokenizer=tokenizer)
        except TraceError as e:
            raise fail(str(e)) from None
        described.append(describe(trace))
    if as_json:
        out.print_json(json.dumps(described))
        return
    table = Table(title="Traces (tokens)", title_justify="left")
    for col in ("trace", "requests", "span", "rate /s", "input mean ± std", "median", "p99",
                "output mean ± std", "median", "p99"):
        table.add_column(col, justify="left" if col == "trace" else "right")
    for d in described:
        i, o = d["input"], d["output"]
        span = "-" if d["span_s"] is None else f"{d['span_s'] / 60:.1f} min"
        rate = "-" if d["rate_per_s"] is None else f"{d['rate_per_s']:.2f}"
        table.add_row(d["name"], str(d["requests"]), span, rate,
                      f"{i['mean']:.2f} ± {i['std']:.2f}", f"{i['median']:g}", f"{i['p99']:g}",
                      f"{o['mean']:.2f} ± {o['std']:.2f}", f"{o['median']:g}", f"{o['p99']:g}")
    out.print(table)
    for d in described:
        for why, rows in d["dropped"].items():
            out.print(f"[yellow]{escape(d['name'])}[/]: {rows} rows dropped: {escape(why)}")
        if d["notes"]:
            out.print(f"[dim]{escape(d['name'])}: {escape(d['notes'])}[/]")

