"""`infergy estimate`: a trace's GPU energy on each engine and GPU from measured points, a
table a card (infergy.estimate.estimate_trace)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from infergy.cli.app import MODEL_HELP, app, engine_list, fail, gpu_list, out
from infergy.estimate import (
    J_PER_KWH,
    EstimateError,
    Serving,
    TraceEstimate,
    estimate_trace,
    predicted_words,
    seconds_words,
    unlike_waiting,
)
from infergy.models import UnknownGpuError, UnknownModelError, get_model
from infergy.store import StoreError
from infergy.workloads import BinError, BinGrid, TraceError, get_trace


@app.command()
def estimate(
    trace: str = typer.Option(..., "--trace", "-t", help="A built-in trace or a trace file."),
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
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
    output_edges: str | None = typer.Option(None, "--output-edges", help="Own output edges "
                                            "(either alone: the other axis's are --bins')."),
    beyond: str = typer.Option("exclude", "--beyond", help="Requests past the last edge: "
                                                           "exclude (as the study) or clamp."),
    fmt: str | None = typer.Option(None, "--format", help="Trace file format: azure, "
                                                          "burstgpt or table."),
    input_col: str | None = typer.Option(None, "--input-col", help="Input tokens column."),
    output_col: str | None = typer.Option(None, "--output-col", help="Output tokens column."),
    time_col: str | None = typer.Option(None, "--time-col", help="Arrival time column."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed rows."),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="ShareGPT: a tokenizer "
                                                                   "folder to count tokens."),
    serving: str = typer.Option("auto", "--serving", help="offline (every request at once), "
                                "online (at the trace's times, or --rate), or auto: online "
                                "where the trace has times."),
    rate: float | None = typer.Option(None, "--rate", help="Online: Poisson arrivals, "
                                                           "requests a second."),
    time_scale: float = typer.Option(1.0, "--time-scale", help="Online at the trace's times "
                                                               "divided by this (4: 4 times "
                                                               "faster)."),
    detail: bool = typer.Option(False, "--detail", help="Also the study's formula with whole "
                                                        "batches and infergy's interpolation."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
):
    """Estimate a trace's GPU energy on each engine and GPU: its requests served through the
    engine's batching, simulated step by step over a step-cost model fitted to measured
    points (with the error that model showed), beside the study's binned formula and the
    theoretical baseline."""
    gpus = gpu_list(gpu)
    try:
        model = get_model(model).name  # said before the trace is read; a Hugging Face id
        workload = get_trace(trace, fmt=fmt, input_col=input_col, output_col=output_col,
                             time_col=time_col, skip_bad=skip_bad, tokenizer=tokenizer)
        grid = BinGrid.of(bins, input_edges, output_edges, beyond)
        result = estimate_trace(workload, model, engine_list(engine), grid, gpus=gpus,
                                stores=profile or None, theory_gpu=theory_gpu,
                                serving=Serving(serving, rate, time_scale))
    except (TraceError, BinError, EstimateError, UnknownGpuError, UnknownModelError,
            StoreError) as e:
        raise fail(str(e)) from None
    if as_json:
        out.print_json(json.dumps(result.to_dict(), default=str))
        return
    _print(result, detail)


def _unlike_idle(rows_by_card: list[tuple[str, list[dict]]]) -> None:
    """A line for each engine whose idle time (where it is worth a line) one card charges at
    the measured waiting power and another at the bare idle: their rows differ by that."""
    for line in unlike_waiting((r["engine"], gpu, r["waiting_measured"])
                               for gpu, rows in rows_by_card for r in rows
                               if r.get("idle_charged")):
        out.print(f"[yellow]{escape(line)}[/]")


def _print(result: TraceEstimate, detail: bool = False) -> None:
    """The estimate as a table a card, each followed by its notes and theoretical baseline."""
    out.print(f"[bold]{escape(result.trace)} on {result.model}[/]: "
              f"{escape(result.coverage_line())}.")
    serving = ""
    rows_by_card = []
    for n, c in enumerate(result.estimates.cards):
        rows = c.rows()
        rows_by_card.append((c.gpu, rows))
        if n:
            out.print()
        table = Table(title=c.gpu, title_justify="left")
        # Short headers: the table fits 80 columns. Explained under the tables.
        columns = ["engine", "kWh", "±p90", "J/tok", "TTFT p90", "idle", "saving", "study"]
        columns += ["whole", "interp"] if detail else []
        for col in columns:
            table.add_column(col, justify="left" if col == "engine" else "right",
                             no_wrap=col == "engine")
        for k, r in enumerate(rows):
            if r["simulated_kwh"] is None:
                cells = ["n/a"] * 6 + [f"{r['kwh']:.4g}"]
            else:
                serving = r["serving"]
                tok = r["simulated_j_per_output_token"]
                cells = [f"{r['simulated_kwh']:.4g}", f"{r['band']:.0%}",
                         "n/a" if tok is None else f"{tok:.3g}",
                         seconds_words(r["ttft_p90_s"]),
                         f"{r['idle_share']:.0%}",
                         "-" if k == 0 or r["simulated_saving_vs_baseline"] is None
                         else f"{r['simulated_saving_vs_baseline']:.1%}",
                         f"{r['kwh']:.4g}"]
            if detail:
                interp = r["interpolated_j"]
                cells += [f"{r['whole_batches_j'] / r['energy_j'] - 1:+.1%}",
                          "n/a" if interp is None else f"{interp / r['energy_j'] - 1:+.1%}"]
            table.add_row(r["engine"], *cells)
        for name in c.unmeasured:
            table.add_row(name, "not yet", *[""] * (len(columns) - 2))
        out.print(table)
        if c.predicted_model:
            asked = ", ".join([r["engine"] for r in rows] + list(c.unmeasured))
            out.print(f"[bold yellow]{result.model} is measured on none of these engines on "
                      f"{c.gpu} ({asked}): every figure above is "
                      f"{escape(c.predicted_model)}.[/]")
        for name, words in c.predicted_engines.items():
            out.print(f"[bold yellow]{name}: {escape(words)}.[/]")
        for r in rows:
            if r.get("band_from", "").startswith("its residuals"):
                out.print(f"[yellow]{r['engine']}: ±p90 is {escape(r['band_from'])}: no other "
                          f"point is measured on this card to check it on[/]")
            if r["predicted_bins"]:
                out.print(f"[yellow]{r['engine']}: study: "
                          f"{escape(predicted_words(r['predicted_bins']))}[/]")
            if r.get("idle_charged"):
                out.print(f"[dim]{r['engine']}: idle charged at {escape(r['idle_charged'])}[/]")
            if r["simulated_kwh"] is None:
                out.print(f"[yellow]{r['engine']}: not simulated: "
                          f"{escape(str(r['simulation_error']))}[/]")
        for name, e in c.unmeasured.items():
            if c.predicted_model:  # the model measured on none of these engines: why not this
                out.print(f"[yellow]{name}: not predicted on {c.gpu}: {escape(str(e))}[/]")
                continue
            what = (f"{len(e.missing)} of the {result.bins_needed} bins the trace needs"
                    if e.missing is not None else "no B = max point at all")
            out.print(f"[yellow]{name}: not measured yet on {c.gpu}: {what} (--engine {name} "
                      f"alone names them and the sweep that measures them)[/]")
        card = c.theoretical_gpu
        out.print(f"Theoretical baseline: {c.served_theoretical_j / J_PER_KWH:.4g} kWh over "
                  f"every request at its own lengths (kWh's requests); the study's: "
                  f"{c.theoretical_j / J_PER_KWH:.4g} kWh over the binned requests at their "
                  f"bins' edges ({card.name}: {card.tdp_w:g} W / {card.bf16_dense_tflops:g} "
                  f"TFLOPS dense bf16, {card.source}).")
        if card.note:
            out.print(f"[yellow]{card.name}: {escape(card.note)}[/]")
    for name, e in result.estimates.not_estimated.items():
        out.print(f"[yellow]{name}: {escape(str(e))}[/]")
    _unlike_idle(rows_by_card)
    served = escape(serving or "as the engine would")
    # The savings' baseline: each card's first engine estimated (the first asked, unless a
    # predicted model's card could not predict it).
    baselines = list(dict.fromkeys(c.estimates[0].engine for c in result.estimates.cards))
    baseline = (baselines[0] if len(baselines) == 1 else
                f"each card's first row ({', '.join(baselines)})")
    out.print(f"kWh: every request of the trace served {served}, simulated step by step over "
              f"a step-cost model fitted to the measured points (predicted, not measured); "
              f"±p90: the 90th percentile of that model's energy error on measured points it "
              f"was not fitted to (those measured over 1 s or more). J/tok: per output token. "
              f"TTFT p90: time to first token. idle: share of the run with no request in "
              f"flight. saving: less energy than {baseline}. study: the study's binned "
              f"formula (N / B full batches of each bin's B = max), in kWh, for reproduction.")
    if any(e.j_per_output_token is None for c in result.estimates.cards for e in c.estimates):
        out.print("J/tok: n/a, the requests in the bins generate no output token.")
    if detail:
        out.print("whole: the study's formula with ceil(N / B) batches; interp: each request "
                  "at its own lengths by interpolation (both relative to the study's).")
    out.print(f"[dim]Profiles: {escape(', '.join(result.estimates.stores))}[/]")
