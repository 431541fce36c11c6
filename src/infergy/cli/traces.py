"""`infergy traces`: the built-in traces and any trace file, described in the study's Tables
1-2 layout. Registered on the main app by cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from infergy.cli.app import _fail, app, out

traces_app = typer.Typer(help="Workload traces: built-in ones and your own files.",
                         no_args_is_help=True)
app.add_typer(traces_app, name="traces")


@traces_app.command("list")
def traces_list():
    """The built-in traces, usable by name wherever a trace is asked for."""
    from infergy.workloads import BUILTIN

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
    from infergy.workloads import TraceError, describe, get_trace

    described = []
    for name in traces:
        try:
            trace = get_trace(name, fmt=fmt, input_col=input_col, output_col=output_col,
                              time_col=time_col, model=model, log_type=log_type,
                              skip_bad=skip_bad, tokenizer=tokenizer)
        except TraceError as e:
            raise _fail(str(e)) from None
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
            out.print(f"[yellow]{d['name']}[/]: {rows} rows dropped: {why}")
        if d["notes"]:
            out.print(f"[dim]{d['name']}: {d['notes']}[/]")


def _edges(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise _fail(f"{option} expects token counts separated by commas, got {text!r}") from None


@app.command()
def estimate(
    trace: str = typer.Option(..., "--trace", "-t", help="A built-in trace or a trace file."),
    model: str = typer.Option(..., "--model", "-m", help="A catalog model."),
    engine: str = typer.Option("hf-eager,vllm", "--engine", "-e",
                               help="Engines, comma-separated; the first is the baseline of "
                                    "the savings."),
    profile: list[Path] | None = typer.Option(None, "--profile", "-p",
                                              help="Results stores holding B = max points "
                                                   "(default: the profiles shipped with "
                                                   "infergy)."),
    gpu: str | None = typer.Option(None, "--gpu", help="Measured GPUs, comma-separated "
                                                       "(h100,h200), or all (the default): "
                                                       "every GPU the profiles hold the model "
                                                       "on, a table each, against its own "
                                                       "theoretical baseline; one named among "
                                                       "several without a profile is a line "
                                                       "saying so."),
    theory_gpu: str | None = typer.Option(None, "--theory-gpu",
                                          help="The datasheet GPU of the theoretical baseline "
                                               "(default: the measured one); a6000-sparse is "
                                               "the study's figure."),
    bins: str = typer.Option("paper", "--bins", help="paper, paper-rule or pow2."),
    input_edges: str | None = typer.Option(None, "--input-edges", help="Own input edges, "
                                                                       "e.g. 32,128,512."),
    output_edges: str | None = typer.Option(None, "--output-edges", help="Own output edges."),
    beyond: str = typer.Option("exclude", "--beyond", help="Requests past the last edge: "
                                                           "exclude (as the study) or clamp."),
    fmt: str | None = typer.Option(None, "--format", help="Trace file format: azure, "
                                                          "burstgpt or table."),
    input_col: str | None = typer.Option(None, "--input-col", help="Input tokens column."),
    output_col: str | None = typer.Option(None, "--output-col", help="Output tokens column."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed rows."),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="ShareGPT: a tokenizer "
                                                                   "folder to count tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
):
    """Estimate a trace's GPU energy on each engine and GPU from measured points (the study's
    binned formula, whole batches, and infergy's interpolation), against the theoretical
    baseline."""
    from infergy.engines import ENGINES
    from infergy.estimate import J_PER_KWH, EstimateError, estimate_cards
    from infergy.models import UnknownModelError, get_model
    from infergy.models.gpus import UnknownGpuError
    from infergy.store import StoreError
    from infergy.workloads import BinError, BinGrid, TraceError, get_trace

    gpus = None if gpu in (None, "all") else [g.strip() for g in gpu.split(",") if g.strip()]
    if gpus is not None and (not gpus or "all" in gpus):
        raise _fail(f"--gpu expects GPU names separated by commas, or all; got {gpu!r}")
    try:
        get_model(model)
        workload = get_trace(trace, fmt=fmt, input_col=input_col, output_col=output_col,
                             skip_bad=skip_bad, tokenizer=tokenizer)
        grid = (BinGrid(_edges(input_edges, "--input-edges"),
                        _edges(output_edges, "--output-edges"), beyond)
                if input_edges or output_edges else BinGrid.named(bins, beyond))
        binned = grid.assign(workload.input_tokens, workload.output_tokens)
        engines = [e.strip() for e in engine.split(",")]
        unknown = [e for e in engines if e not in ENGINES and ":" not in e]
        if unknown:  # before the stores: they would say only that they hold no such points
            raise _fail(f"--engine: unknown engine {unknown[0]!r}; expected names of "
                        f"{', '.join(ENGINES)} (comma-separated), or module:Class")
        result = estimate_cards(workload, binned, model, engines, gpus, profile or None,
                                theory_gpu)
    except (TraceError, BinError, EstimateError, UnknownGpuError, UnknownModelError,
            StoreError) as e:
        raise _fail(str(e)) from None
    coverage = binned.coverage()
    report = {
        "trace": workload.name, "model": model, "bins": {
            "input_edges": grid.input_edges, "output_edges": grid.output_edges, **coverage},
        "profiles": result.stores,
        "gpus": [{
            "gpu": c.gpu, "profiles": c.stores, "theoretical_j": c.theoretical_j,
            "theoretical_gpu": c.theoretical_gpu.name,
            "engines": [{
                "engine": r.engine, "energy_j": r.energy_j, "kwh": r.kwh,
                "whole_batches_j": r.energy_whole_batches_j, "interpolated_j": r.interpolated_j,
                "j_per_request": r.j_per_request, "j_per_output_token": r.j_per_output_token,
                "above_theoretical": r.energy_j / c.theoretical_j - 1,
                "saving_vs_baseline": c.saving(r), "bins": r.bins} for r in c.estimates],
            "unmeasured": [{"engine": name, "message": str(e), "missing_bins": e.missing}
                           for name, e in c.unmeasured.items()]}
            for c in result.cards],
        "unmeasured_gpus": [{"gpu": name, "message": str(e)}
                            for name, e in result.not_estimated.items()],
    }
    if as_json:
        out.print_json(json.dumps(report, default=str))
        return
    base = engines[0]
    needed = int((binned.counts() > 0).sum())
    beyond_edge = (f"; {coverage['beyond_last_edge']} lie past the last bin edge "
                   f"({coverage['over_input']} by input, {coverage['over_output']} by output): "
                   f"{'excluded' if grid.beyond == 'exclude' else 'charged at the last edge'}"
                   if coverage["beyond_last_edge"] else "")
    out.print(f"[bold]{workload.name} on {model}[/]: {coverage['binned']} of "
              f"{coverage['requests']} requests in the bins{beyond_edge}.")
    for n, c in enumerate(result.cards):
        if n:
            out.print()
        table = Table(title=c.gpu, title_justify="left")
        # Short headers: the table fits 80 columns, a "not yet" row too. Explained under the
        # tables.
        for col in ("engine", "kWh", "J/req", "J/tok", "whole", "interp", "saving",
                    "vs theory"):
            table.add_column(col, justify="left" if col == "engine" else "right",
                             no_wrap=col == "engine")
        for r in c.estimates:
            interp = r.interpolated_j
            table.add_row(
                r.engine, f"{r.kwh:.4g}", f"{r.j_per_request:.3g}",
                f"{r.j_per_output_token:.3g}", f"{r.energy_whole_batches_j / r.energy_j - 1:+.1%}",
                "n/a" if interp is None else f"{interp / r.energy_j - 1:+.1%}",
                "-" if r is c.baseline else f"{c.saving(r):.1%}",
                f"{r.energy_j / c.theoretical_j - 1:+.1%}")
        for name in c.unmeasured:
            table.add_row(name, "not yet", *[""] * 6)
        out.print(table)
        for name, e in c.unmeasured.items():
            what = (f"{len(e.missing)} of the {needed} bins the trace needs"
                    if e.missing is not None else "no B = max point at all")
            out.print(f"[yellow]{name}: not measured yet on {c.gpu}: {what} (--engine {name} "
                      f"alone names them and the sweep that measures them)[/]")
        card = c.theoretical_gpu
        out.print(f"Theoretical baseline: {c.theoretical_j / J_PER_KWH:.4g} kWh ({card.name}: "
                  f"{card.tdp_w:g} W / {card.bf16_dense_tflops:g} TFLOPS dense bf16, "
                  f"{card.source}).")
        if card.note:
            out.print(f"[yellow]{card.name}: {card.note}[/]")
    for name, e in result.not_estimated.items():
        out.print(f"[yellow]{name}: {e}[/]")
    out.print(f"kWh, J per request and per output token: the study's binned formula (N / B "
              f"batches of each bin). whole: with ceil(N / B) batches; interp: each request at "
              f"its own lengths (both relative to the formula). saving: less energy than "
              f"{base}. vs theory: above the theoretical baseline (TDP / peak dense FLOPS x "
              f"the requests' FLOPs).")
    out.print(f"[dim]Profiles: {', '.join(report['profiles'])}[/]")


@app.command()
def report(
    db: list[Path] | None = typer.Option(None, "--db", help="Results stores (repeatable; "
                                                           "those of several cards: each "
                                                           "card apart)."),
    trace: list[str] | None = typer.Option(None, "--trace", "-t",
                                           help="Built-in traces or trace files (repeatable)."),
    output: Path = typer.Option(Path("infergy-report"), "--out", "-o", help="Folder to write."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only this model's points."),
    grid_gco2_per_kwh: float = typer.Option(480.0, "--grid-gco2-per-kwh",
                                            help="Carbon intensity (default: world average "
                                                 "2023, Ember)."),
    usd_per_kwh: float | None = typer.Option(None, "--usd-per-kwh", help="Electricity price."),
):
    """Write an HTML report (index.html, figures as PNG and SVG) from results stores and
    traces, each card the stores hold in its own sections, figures and estimate. Missing data
    are named on the page with the command that would measure them."""
    from infergy.report import build_report
    from infergy.workloads import TraceError

    for store in db or []:  # a mistyped path: said here, not only on the page
        if not store.is_file():
            raise _fail(f"--db {store}: no such results store")
    try:
        page = build_report(list(db or []), list(trace or []), output, model=model,
                            grid_gco2_per_kwh=grid_gco2_per_kwh, usd_per_kwh=usd_per_kwh)
    except TraceError as e:
        raise _fail(str(e)) from None
    out.print(f"report: {page}")
