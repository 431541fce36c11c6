"""`infergy traces`: the built-in traces and any trace file, described in the study's Tables
1-2 layout. Registered on the main app by cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from infergy.cli import _fail, app, out

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
    gpu: str | None = typer.Option(None, "--gpu", help="The measured GPU to use (h100, h200, "
                                                       "...) when a store holds several; also "
                                                       "the theoretical baseline's GPU."),
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
    """Estimate a trace's GPU energy on each engine from measured points (the study's binned
    formula, whole batches, and infergy's interpolation), against the theoretical baseline."""
    from infergy.estimate import (
        EstimateError,
        MissingPoints,
        load_profile,
        shipped_profiles,
        theoretical,
    )
    from infergy.estimate import estimate as run_estimate
    from infergy.estimate.hardware import NVML_NAMES, UnknownGpuError, get_gpu
    from infergy.models import UnknownModelError, get_model
    from infergy.store import StoreError
    from infergy.workloads import BinError, BinGrid, TraceError, get_trace

    profile = profile or shipped_profiles()
    if not profile:
        raise _fail("no profile given and none shipped yet: pass --profile FILE, a results "
                    "store written by `infergy sweep` (make run shows one from the repository)")
    try:
        get_model(model)
        workload = get_trace(trace, fmt=fmt, input_col=input_col, output_col=output_col,
                             skip_bad=skip_bad, tokenizer=tokenizer)
        grid = (BinGrid(_edges(input_edges, "--input-edges"),
                        _edges(output_edges, "--output-edges"), beyond)
                if input_edges or output_edges else BinGrid.named(bins, beyond))
        binned = grid.assign(workload.input_tokens, workload.output_tokens)
        engines = [e.strip() for e in engine.split(",")]
        results, unmeasured = [], {}
        for name in engines:
            try:
                results.append(run_estimate(workload, binned,
                                            load_profile(profile, model, name, gpu)))
            except MissingPoints as e:
                if name == engines[0]:  # the baseline of the savings: nothing to compare
                    raise
                unmeasured[name] = e  # a row saying so; the others are still estimated
        cards = {r.gpu for r in results}
        if len(cards) > 1:
            raise EstimateError(f"the engines were measured on different GPUs "
                                f"({', '.join(sorted(cards))}): choose one with --gpu")
        card = get_gpu(theory_gpu or gpu or NVML_NAMES.get(results[0].gpu, results[0].gpu))
    except (TraceError, BinError, EstimateError, UnknownGpuError, UnknownModelError,
            StoreError) as e:
        raise _fail(str(e)) from None
    optimal = theoretical(binned, model, card)
    coverage = binned.coverage()
    base = results[0]
    report = {
        "trace": workload.name, "model": model, "gpu": base.gpu, "bins": {
            "input_edges": grid.input_edges, "output_edges": grid.output_edges, **coverage},
        "theoretical_j": optimal, "theoretical_gpu": card.name, "profiles": [str(p) for p in
                                                                             profile],
        "engines": [{
            "engine": r.engine, "energy_j": r.energy_j, "kwh": r.kwh,
            "whole_batches_j": r.energy_whole_batches_j, "interpolated_j": r.interpolated_j,
            "j_per_request": r.j_per_request, "j_per_output_token": r.j_per_output_token,
            "above_theoretical": r.energy_j / optimal - 1,
            "saving_vs_baseline": 1 - r.energy_j / base.energy_j, "bins": r.bins}
            for r in results],
        "unmeasured": [{"engine": name, "message": str(e), "missing_bins": e.missing}
                       for name, e in unmeasured.items()],
    }
    if as_json:
        out.print_json(json.dumps(report, default=str))
        return
    table = Table(title=f"{workload.name} ({coverage['binned']} of {coverage['requests']} "
                        f"requests binned) on {model}, {base.gpu}", title_justify="left")
    # Short headers: the table fits 80 columns. Explained under it.
    for col in ("engine", "kWh", "J/req", "J/tok", "whole", "interp.", "saving",
                "vs theory"):
        table.add_column(col, justify="left" if col == "engine" else "right",
                         no_wrap=col == "engine")
    for r in report["engines"]:
        interp = r["interpolated_j"]
        table.add_row(
            r["engine"], f"{r['kwh']:.4g}", f"{r['j_per_request']:.3g}",
            f"{r['j_per_output_token']:.3g}",
            f"{r['whole_batches_j'] / r['energy_j'] - 1:+.1%}",
            "n/a" if interp is None else f"{interp / r['energy_j'] - 1:+.1%}",
            "-" if r["engine"] == base.engine else f"{r['saving_vs_baseline']:.1%}",
            f"{r['above_theoretical']:+.1%}")
    needed = int((binned.counts() > 0).sum())
    for name in unmeasured:
        table.add_row(name, "not yet", *[""] * 6)
    out.print(table)
    for name, e in unmeasured.items():
        what = (f"{len(e.missing)} of the {needed} bins the trace needs"
                if e.missing is not None else "no B = max point at all")
        out.print(f"[yellow]{name}: not measured yet on {base.gpu}: {what} "
                  f"(--engine {name} alone names them and the sweep that measures them)[/]")
    out.print(f"kWh, J per request and per output token: the study's binned formula (N / B "
              f"batches of each bin). whole: with ceil(N / B) batches; interp.: each request at "
              f"its own lengths (both relative to the formula). saving: less energy than "
              f"{base.engine}. vs theory: above the theoretical baseline, {optimal / 3.6e6:.4g} "
              f"kWh ({card.name}: {card.tdp_w:g} W / {card.bf16_dense_tflops:g} TFLOPS dense "
              f"bf16, {card.source}).")
    if card.note:
        out.print(f"[yellow]{card.name}: {card.note}[/]")
    if coverage["beyond_last_edge"]:
        out.print(f"[yellow]{coverage['beyond_last_edge']} requests lie past the last bin edge "
                  f"({coverage['over_input']} by input, {coverage['over_output']} by output): "
                  f"{'excluded' if grid.beyond == 'exclude' else 'charged at the last edge'}[/]")
    out.print(f"[dim]Profiles: {', '.join(report['profiles'])}[/]")


@app.command()
def report(
    db: list[Path] | None = typer.Option(None, "--db", help="Results stores (repeatable)."),
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
    traces. Missing data are named on the page with the command that would measure them."""
    from infergy.report import build_report
    from infergy.workloads import TraceError

    try:
        page = build_report(list(db or []), list(trace or []), output, model=model,
                            grid_gco2_per_kwh=grid_gco2_per_kwh, usd_per_kwh=usd_per_kwh)
    except TraceError as e:
        raise _fail(str(e)) from None
    out.print(f"report: {page}")
