"""`infergy measure`: one point measured, printed, and recorded where a store is given."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from infergy.cli.app import (
    MODEL_HELP,
    LogsToStderr,
    app,
    argv,
    fail,
    fmt,
    idle_seconds,
    note,
    out,
)
from infergy.engines import Decoding, DecodingError, EngineError, UnknownEngineError
from infergy.models import UnknownModelError, get_model
from infergy.plan import ParallelError, Point, PointError
from infergy.run import MeasureOptions, RunError, measure_one
from infergy.store import StoreError

# A user's mistakes, and a machine that cannot run what was asked: said, no traceback.
USER_ERRORS = (UnknownModelError, UnknownEngineError, DecodingError, PointError, EngineError,
               ParallelError, RunError, StoreError)


@app.command()
def measure(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    engine: str = typer.Option("hf-eager", "--engine", "-e",
                               help="hf-eager, hf-compiled, hf-paged, vllm or vllm-eager."),
    batch: int = typer.Option(1, "--batch", "-b", help="Prompts in the batch (B)."),
    input_tokens: int = typer.Option(512, "--input", "-i", help="Tokens per prompt (I)."),
    output_tokens: int = typer.Option(128, "--output",
                                      help="Tokens generated per prompt, exactly (O)."),
    decoding: str = typer.Option("greedy", "--decoding",
                                 help="greedy, sample, sample:temperature=0.7,top_p=0.9, "
                                      "beam:N or speculative (with --draft)."),
    draft: str | None = typer.Option(None, "--draft", help="Speculative decoding's draft "
                                                           "model (a catalog model)."),
    lookahead: int | None = typer.Option(None, "--lookahead",
                                         help="Tokens the draft proposes a round (default 4)."),
    draft_weights: Path | None = typer.Option(None, "--draft-weights",
                                              help="The draft's checkpoint directory (with "
                                                   "--weights: the natural acceptance)."),
    acceptance: float | None = typer.Option(None, "--acceptance",
                                            help="Accept each proposed token with this "
                                                 "probability instead of by comparison (a "
                                                 "measurement device for random weights)."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Measured runs; medians reported."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Warm-up runs before measuring."),
    min_window_s: float = typer.Option(0.0, "--min-window", min=0, max=60,
                                       help="A run shorter than this (s, timed after the "
                                            "warm-up) is repeated back to back in each "
                                            "measured window, figures per run (an H100's "
                                            "energy counter updates every 100 ms: a short "
                                            "window reads it coarsely). 0: one run a window."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    dtype: str = typer.Option("bfloat16", "--dtype"),
    weights: Path | None = typer.Option(None, "--weights",
                                        help="A local checkpoint directory instead of random "
                                             "weights."),
    seed: int = typer.Option(0, "--seed"),
    tp: int = typer.Option(1, "--tp", min=1, help="Tensor parallelism: split the model over "
                                                  "the first N visible GPUs (vllm, "
                                                  "vllm-eager, hf-eager: one process a GPU); "
                                                  "every one of them is measured."),
    idle_s: float = typer.Option(5.0, "--idle-s", callback=idle_seconds,
                                 help="Idle power measured first (s)."),
    engine_option: list[str] | None = typer.Option(None, "--engine-option",
                                                   help="key=value passed to the engine."),
    tokenizer: Path | None = typer.Option(None, "--tokenizer",
                                          help="A local tokenizer directory, for --text-file."),
    text_file: Path | None = typer.Option(None, "--text-file",
                                          help="Real text for the prompts, cut to I tokens "
                                               "(default: random token ids)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    db: Path | None = typer.Option(None, "--db", help="Results store to record the point in "
                                                     "(as a sweep would)."),
):
    """Measure one point: energy and time of B prompts of I tokens generating O tokens."""
    try:
        point = Point(get_model(model).name, engine, batch, input_tokens, output_tokens,
                      _decoding(decoding, draft, lookahead, acceptance), tp=tp, dtype=dtype)
        how = MeasureOptions(repeats=repeats, warmup=warmup, min_window_s=min_window_s,
                             device=device, seed=seed, idle_s=idle_s, weights=weights,
                             draft_weights=draft_weights, engine_options=engine_option or [],
                             tokenizer=tokenizer, text_file=text_file, db=db)
        # With --json, standard output is the JSON alone: engines' log lines go to stderr.
        with LogsToStderr(as_json) as logs:
            done = measure_one(point, how, argv=argv(ctx), status=logs.status, notes=note)
    except USER_ERRORS as e:
        raise fail(str(e)) from None
    if isinstance(done, int):  # launched the ranks, or a rank other than 0
        raise typer.Exit(done)
    r = done.result
    if as_json:
        out.print_json(json.dumps({**r.to_dict(), "load": done.load}, default=str))
    else:
        _print_point(r, done.load, done.device)
    if r.status != "ok":
        raise typer.Exit(1)


def _decoding(text: str, draft: str | None, lookahead: int | None,
              acceptance: float | None) -> str:
    """--decoding with --draft, --lookahead and --acceptance folded into its text form."""
    extra = {k: v for k, v in (("draft", draft), ("lookahead", lookahead),
                               ("acceptance", acceptance)) if v is not None}
    if not extra:
        return text
    if not text.startswith("speculative"):
        raise DecodingError(f"--{', --'.join(extra)}: for --decoding speculative, not {text!r}")
    params = ",".join(f"{k}={v}" for k, v in extra.items())
    return Decoding.parse(f"{text}{',' if ':' in text else ':'}{params}").label()


def _print_point(r, load: dict, device: str) -> None:
    p = r.point
    gpus = f", TP {p.tp}" if p.tp > 1 else ""
    out.print(f"\n[bold]{p.model}[/] on [bold]{p.engine}[/] ({device}{gpus}), {p.decoding}: "
              f"B={p.batch}, I={p.input_tokens}, O={p.output_tokens}, "
              f"{len(r.repeats)} repeats (medians)"
              + (f", {r.runs_per_window} runs a window (figures per run)"
                 if r.runs_per_window > 1 else ""))
    if r.status != "ok":
        out.print(f"[red]{r.status}[/]: {escape(str(r.error))}")
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="dim")
    table.add_column(justify="right")
    table.add_column(style="dim")
    cv = "" if r.energy_cv is None else f"CV {r.energy_cv:.1%} over repeats"
    rows = [
        ("energy, whole batch", fmt(r.energy_j, "J"), cv),
        ("  prefill", fmt(r.prefill_energy_j, "J"), r.prefill_method),
        ("  decode", fmt(r.decode_energy_j, "J"), "request - prefill"
         if r.prefill_method != "window" else "window"),
        *((f"  {gpu}", fmt(j, "J"), "") for gpu, j in r.gpu_energy_j.items()
          if len(r.gpu_energy_j) > 1),
        ("  above idle", fmt(r.active_energy_j, "J"), ""),
        ("J per output token", fmt(r.j_per_output_token, "J"), ""),
        ("J per request", fmt(r.j_per_request, "J"), ""),
        ("time", fmt(r.time_s, "s"), "" if r.time_cv is None else f"CV {r.time_cv:.1%}"),
        ("TTFT", fmt(r.ttft_s, "s"), ""),
        ("TPOT", fmt(None if r.tpot_s is None else r.tpot_s * 1000, "ms"), "per sequence"),
        ("throughput", fmt(r.throughput_tok_s, "tok/s"), "output tokens"),
        ("average power", fmt(r.avg_power_w, "W"), r.meter_method or ""),
        ("peak GPU memory", fmt(r.peak_memory_gib, "GiB"), ""),
        ("load (start-up)", fmt(load["time_s"], "s"), fmt(load["energy_j"], "J")),
    ]
    stats = r.decoding_stats
    if stats.get("proposed"):
        set_to = Decoding.parse(p.decoding).acceptance
        rows.append(("acceptance, per token", f"{stats['acceptance']:.1%}",
                     f"{stats['accepted']} accepted, {stats['rejected']} rejected"
                     + ("" if set_to is None else f" (drawn at {set_to:g})")))
        rows.append(("  tokens per target pass", f"{stats['tokens_per_round']:.2f}",
                     f"{stats['accepted_share']:.1%} of {stats['proposed']} proposed kept"))
    for name, phase in (("prepare (compile)", r.prepare), ("warm-up", r.warmup)):
        if phase is not None:
            rows.append((name, fmt(phase.time_s, "s"), fmt(phase.energy_j, "J")))
    for row in rows:
        table.add_row(*row)
    out.print(table)
    if r.energy_j is None:
        out.print(f"[yellow]energy unavailable[/]: {escape(str(r.energy_reason))}")
    for w in r.warnings:
        out.print(f"[yellow]warning[/] {escape(w)}")
