"""The `infergy` command: a thin layer over the library. Each verb calls it and prints."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from infergy import __version__

app = typer.Typer(
    help="Measure and model the energy of large-language-model inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

# Exit codes of `infergy meter` when the command never ran, as a shell would give them.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
# Seconds a command gets to end after Ctrl-C, before it is signalled, then killed.
INTERRUPT_GRACE_S = 2.0


_ARGV: list[str] | None = None  # this command line, for processes started to run it again


def _version(value: bool) -> None:
    if value:
        out.print(f"infergy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


def _fmt(value: float | None, unit: str, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g} {unit}"


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")):
    """List what can be measured here: GPUs, RAPL zones, versions. Exits 0 even when
    nothing is measurable."""
    from infergy.meter.core import describe

    info = describe()
    if as_json:
        out.print_json(json.dumps(info))
        return
    versions = info["versions"]
    out.print(f"[bold]infergy {versions['infergy']}[/] ({versions['infergy_commit'] or 'no git'})"
              f" on {info['host']['hostname']}, {info['host']['os']}, {info['host']['machine']}"
              f" ({info['host']['cpu'] or 'CPU model unknown'}, {info['host']['cpus']} CPUs)")
    if info["gpus"]:
        table = Table(title="GPUs (NVML)", title_justify="left")
        for col in ("", "model", "UUID", "driver", "power limit", "memory", "energy counter",
                    "power readings", "visible as"):
            table.add_column(col)
        for g in info["gpus"]:
            table.add_row(
                g["name"], g["model"], g["uuid"], g["driver"] or "n/a",
                _fmt(g["power_limit_w"], "W"), _fmt(g["memory_gib"], "GiB", 3),
                "yes" if g["energy_counter"] else "[yellow]no[/]",
                ", ".join(g["power_sources"]) or "[yellow]none[/]",
                f"cuda:{g['cuda_index']}" if g["visible"] else "[dim]not visible[/]",
            )
        out.print(table)
    if info["rapl_zones"]:
        table = Table(title="CPU and DRAM (RAPL)", title_justify="left")
        for col in ("zone", "path", "measured as", "readable"):
            table.add_column(col)
        for z in info["rapl_zones"]:
            table.add_row(z["zone"], z["path"], z["measured_as"] or "[dim]part of package[/]",
                          "yes" if z["readable"] else f"[yellow]no[/]: {z['reason']}")
        out.print(table)
    for u in info["unavailable"]:
        out.print(f"[yellow]not measurable[/] {u['what']}: {u['reason']}")
    for w in info["warnings"]:
        out.print(f"[yellow]warning[/] {w}")
    table = Table(title="Software", title_justify="left")
    table.add_column("package")
    table.add_column("version")
    for name, version in versions.items():
        missing = "not a git checkout" if name == "infergy_commit" else "not installed"
        table.add_row(name, version or f"[dim]{missing}[/]")
    out.print(table)


def _measurement_table(m, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("device", "energy", "method", "cross-check", "avg power", "idle", "above idle"):
        table.add_column(col, justify="right" if col not in ("device", "method") else "left")
    for d in m.devices:
        check = "n/a"
        if d.disagreement is not None:
            check = f"{d.sampled_source} {d.disagreement:+.2%}"
        elif d.method and d.method.startswith("sampled"):
            check = "no counter"
        table.add_row(
            d.device, _fmt(d.energy_j, "J"), d.method or f"[red]none[/]: {d.reason}", check,
            _fmt(d.avg_power_w, "W"), _fmt(d.idle_w, "W"), _fmt(d.active_energy_j, "J"),
        )
    if len([d for d in m.devices if d.kind == "gpu"]) > 1:
        table.add_row("GPU total", _fmt(m.energy_j, "J"), m.method or "", "",
                      _fmt(m.avg_power_w, "W"), "", _fmt(m.active_energy_j, "J"))
    return table


@app.command(context_settings={"ignore_unknown_options": True})
def meter(
    command: list[str] = typer.Argument(None, help="The command to run, after `--`."),
    as_json: bool = typer.Option(False, "--json", help="Write the result as JSON."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Write the result here instead of stderr."),
    idle_s: float = typer.Option(5.0, "--idle-s", min=0,
                                 help="Seconds of idle power measured before the command "
                                      "(0: skip; no energy above idle then)."),
    period_ms: float = typer.Option(50.0, "--period-ms", min=1,
                                    help="Power sampling period in milliseconds."),
    gpus: str | None = typer.Option(None, "--gpus",
                                    help="NVML indices to measure, e.g. 0,1 (default: the "
                                         "GPUs in CUDA_VISIBLE_DEVICES, else all)."),
    cpu: bool = typer.Option(True, "--cpu/--no-cpu", help="Measure CPU and DRAM (RAPL)."),
):
    """Run a command and measure its energy, like `perf stat` measures time.

    Example: infergy meter -- python train.py --epochs 1

    Prints time, energy and power of each GPU (and CPU where RAPL is readable) to stderr,
    and exits with the command's own exit code.
    """
    from infergy.meter import open_meter

    if not command:
        err.print("usage: infergy meter [OPTIONS] -- COMMAND [ARGS]...\n"
                  "error: no command given to measure")
        raise typer.Exit(2)
    try:
        indices = [int(x) for x in gpus.split(",")] if gpus else None
    except ValueError:
        raise typer.BadParameter(f"expected NVML indices like 0,1; got {gpus!r}",
                                 param_hint="--gpus") from None

    with open_meter(indices, cpu=cpu, idle_s=0, sample_period_s=period_ms / 1000) as m:
        for u in m.unavailable:
            err.print(f"[dim]infergy: not measurable: {u.what}: {u.reason}[/]")
        if idle_s > 0 and m.sensors:
            with err.status(f"infergy: measuring idle power for {idle_s:g} s ..."):
                m.measure_idle(idle_s)
        window = m.start(shlex.join(command))
        try:
            code, interrupted = _run(command)
        except FileNotFoundError:
            window.stop()
            err.print(f"infergy: command not found: {command[0]}")
            raise typer.Exit(EXIT_NOT_FOUND) from None
        except PermissionError:
            window.stop()
            err.print(f"infergy: permission denied: {command[0]} is not executable")
            raise typer.Exit(EXIT_NOT_EXECUTABLE) from None
        result = window.stop()
    if as_json:
        payload = {
            "command": command,
            "exit_code": code,
            "interrupted": interrupted,
            "measurement": result.to_dict(),
            "idle": m.idle.to_dict() if m.idle else None,
            "unavailable": [{"what": u.what, "reason": u.reason} for u in m.unavailable],
            "warnings": m.warnings,
        }
        _write(output, lambda c: c.print_json(json.dumps(payload)))
    else:
        _write(output, lambda c: _print_meter(c, command, code, interrupted, result, m))
    raise typer.Exit(code)


def _write(output: Path | None, render) -> None:
    """Render to stderr, or to the file `output` (opened only now that there is a result)."""
    if output is None:
        render(err)
        return
    with output.open("w") as f:
        render(Console(file=f, width=120))


def _run(command: list[str]) -> tuple[int, bool]:
    """Run the command (no shell) to its end: (exit status as a shell reports it, whether it
    was interrupted).

    On Ctrl-C the terminal signals the command too: it gets INTERRUPT_GRACE_S to end by
    itself before it is sent SIGINT (for a signal sent to infergy alone), then killed after
    as long again. SIGTERM to infergy is handled the same way."""
    def _terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    interrupted = False
    proc = None
    try:
        # Started inside the try: a Ctrl-C right after the start still stops the command
        # (outside it, the command was left running, holding infergy's output open).
        proc = subprocess.Popen(command)
        code = proc.wait()
    except KeyboardInterrupt:
        interrupted = True
        code = _stop(proc) if proc is not None else -signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)
    return (128 - code if code < 0 else code), interrupted


def _stop(proc: subprocess.Popen) -> int:
    """After Ctrl-C: let the command end by itself, then send it SIGINT, then kill it.
    Another Ctrl-C moves on to the next step. Returns its exit status."""
    for step in (lambda: None, lambda: proc.send_signal(signal.SIGINT), proc.kill):
        try:
            if proc.poll() is None:
                step()
            return proc.wait(timeout=INTERRUPT_GRACE_S)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    return proc.wait()


def _print_meter(sink: Console, command, code, interrupted, result, m) -> None:
    status = f"exit code {code}" + (", [red]interrupted[/]: measured so far" if interrupted else "")
    sink.print(f"\n[bold]infergy meter[/]: {shlex.join(command)}  ({status})")
    sink.print(f"  time {result.duration_s:.3f} s")
    if result.devices:
        sink.print(_measurement_table(result, "energy"))
    if result.energy_j is None:
        sink.print(f"  GPU energy: n/a ({result.reason})")
    if m.idle is not None:
        sink.print(f"  idle measured for {m.idle.duration_s:.1f} s before the command")
    for w in (*m.warnings, *result.warnings):
        sink.print(f"  [yellow]warning[/] {w}")
    for e in result.errors:
        sink.print(f"  [red]failed[/] {e}")


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print a user's error (no traceback) and give the Exit to raise."""
    err.print(f"[red]error[/]: {message}")
    return typer.Exit(code)


def _options(values: list[str] | None) -> dict:
    from infergy.engines import parse_options

    try:
        return parse_options(values or [])
    except ValueError as e:
        raise _fail(f"--engine-option: {e}") from None


@app.command()
def measure(
    model: str = typer.Option(..., "--model", "-m", help="A catalog model (infergy models)."),
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
    idle_s: float = typer.Option(5.0, "--idle-s", min=0, help="Idle power measured first (s)."),
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
    from infergy.engines import EngineError, UnknownEngineError, engine_class, new_engine
    from infergy.engines.decoding import Decoding, DecodingError
    from infergy.models import UnknownModelError, get_model
    from infergy.run.parallel import ParallelError, check_tp
    from infergy.run.point import Point, PointError, measure_point, validate_point

    try:
        decoding = _decoding(decoding, draft, lookahead, acceptance)
        point = Point(model, engine, batch, input_tokens, output_tokens, decoding, tp=tp,
                      dtype=dtype)
        if min_window_s > 0 and warmup < 1:
            raise PointError("--min-window needs --warmup 1 or more: the warm-up times a run")
        spec = get_model(model)
        engine_cls = engine_class(engine)
        engine_cls.check_support(spec, validate_point(point, spec))  # before meter and model
        check_tp(tp, spec, engine_cls)
    except (UnknownModelError, UnknownEngineError, DecodingError, PointError,
            EngineError, ParallelError) as e:
        raise _fail(str(e)) from None
    options = _options(engine_option)
    if draft_weights is not None:
        if not Decoding.parse(decoding).draft:
            raise _fail("--draft-weights: for --decoding speculative with --draft")
        options["draft_weights"] = str(draft_weights)
    if (tokenizer is None) != (text_file is None):
        raise _fail("--tokenizer and --text-file go together")
    if text_file is not None and not text_file.is_file():
        raise _fail(f"--text-file {text_file}: no such file")
    device = _torch_device(device, tp)
    split, rank, speaks = _process_of(tp, engine_cls)
    store = None
    if db is not None and speaks:  # before any GPU work; rank 0 records for all
        from infergy.store import Store, StoreError

        try:
            store = Store(db)
        except StoreError as e:
            raise _fail(str(e)) from None
    if split and rank is None:  # the launching process: every check above passed once
        raise _launch(tp, store)

    m, ranks = _run_meter(device, tp, idle_s, rank)
    with m:
        for u in m.unavailable if speaks else ():
            err.print(f"[dim]infergy: not measurable: {u.what}: {u.reason}[/]")
        try:
            eng = new_engine(engine_cls, spec, device=device, dtype=dtype, seed=seed,
                             weights=weights, options=options, tp=tp)
            eng = _told(eng, ranks)
            eng.expect(Decoding.parse(decoding))
            with _status(speaks, f"infergy: loading {model} in {engine} ..."), \
                    m.window("load") as load:
                eng.load()
            prompts = None
            if tokenizer is not None:
                from transformers import AutoTokenizer

                from infergy.models.build import make_prompts

                prompts = make_prompts(spec, batch, input_tokens, seed=seed,
                                       tokenizer=AutoTokenizer.from_pretrained(tokenizer),
                                       text=text_file.read_text())
        except (EngineError, OSError, ValueError) as e:
            raise _fail(str(e)) from None
        try:
            with _status(speaks, f"infergy: {engine} B={batch} I={input_tokens} "
                                 f"O={output_tokens}") as st:
                result = measure_point(eng, point, m, repeats=repeats, warmup=warmup, seed=seed,
                                       prompts=prompts, min_window_s=min_window_s,
                                       progress=lambda msg: st.update(
                                           f"infergy: {engine} B={batch} I={input_tokens} "
                                           f"O={output_tokens}: {msg}"))
        finally:  # also on Ctrl-C: an engine may hold threads (hf-paged) or a process (vLLM)
            eng.close()
    if ranks is not None:  # after the meter's last edge
        ranks.close()
    load_phase = {"time_s": load.measurement.duration_s, "energy_j": load.measurement.energy_j}
    if store is not None:
        _record(store, result, options, engine=engine, model=model)
    if not speaks:  # rank 0 reports for all, its status the command's
        raise typer.Exit(0)
    if as_json:
        out.print_json(json.dumps({**result.to_dict(), "load": load_phase}, default=str))
    else:
        _print_point(result, load_phase, device)
    if result.status != "ok":
        raise typer.Exit(1)


def _process_of(tp: int, engine_cls) -> tuple[bool, int | None, bool]:
    """(split, rank, speaks) of this process: split, whether the run is one process a GPU
    (an engine that splits a model so, at TP > 1: the launching process starts them); rank,
    this process's among them (None: the launching one, or no split); speaks, whether it
    records and reports (rank 0, for all, or the only process)."""
    from infergy.run.parallel import current_rank

    split = tp > 1 and engine_cls.tp_per_process
    rank = current_rank() if split else None
    return split, rank, rank in (None, 0)


def _launch(tp: int, store=None) -> typer.Exit:
    """This command run again as `tp` processes, one a GPU (for an engine that splits a
    model so): the launching process's exit, with their status. `store`, opened to fail
    before any GPU work, is closed: rank 0 opens it again to record."""
    if _ARGV is None:
        raise _fail("--tp with hf-eager starts its processes from the `infergy` command line "
                    "only")
    from infergy.run.parallel import launch

    if store is not None:
        store.close()
    return typer.Exit(launch(tp, _ARGV))


def _run_meter(device: str, tp: int, idle_s: float, rank: int | None):
    """(meter, ranks) of this process of a run over `tp` GPUs: rank 0 (or the only process)
    measures the idle power first; where `launch` started this process, the ranks meet
    after it and every window edge waits for all of them (`ranks` None otherwise)."""
    from infergy.run.parallel import ParallelError, Ranks, run_meter

    with _status(rank in (None, 0), f"infergy: measuring idle power for {idle_s:g} s ..."):
        m = run_meter(device, tp, idle_s, rank)
    if rank is None:
        return m, None
    try:
        ranks = Ranks(device, tp, timeout_s=idle_s + 600)  # the others wait out rank 0's idle
        ranks.attach(m)
    except ParallelError as e:
        m.close()
        raise _fail(str(e)) from None
    return m, ranks


def _told(engine, ranks):
    """`engine`, where this process is one of several ranks, telling `launch` its failures
    the moment they happen, before its window's edge waits for the other ranks."""
    if ranks is None:
        return engine
    from infergy.run.parallel import Telling, tell_launch

    return Telling(engine, tell_launch)


def _record(store, result, options: dict, **spec) -> None:
    """A measured point into the store, in a run of its own, as a sweep records it."""
    from infergy.plan.spec import EngineChoice
    from infergy.run.sweep.worker import device_identity

    with store:
        device = device_identity(result.provenance)
        run = store.start_run(device=device, meta=result.provenance,
                              spec={"measure": spec, "tp": result.point.tp})
        store.add_point(run, device, result.to_dict(), batch_requested=result.point.batch,
                        engine_options=EngineChoice.of(spec["engine"], options).options_key)
        store.end_run(run, "finished")


class _Quiet:
    """A status line that says nothing: the ranks other than 0."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, text: str) -> None:
        pass


def _status(speaks: bool, text: str):
    return err.status(text) if speaks else _Quiet()


def _torch_device(device: str, tp: int = 1) -> str:
    """--device resolved against this machine's torch: cuda or cpu. A `tp` over 1 asks for
    that many GPUs visible here (on cuda; an explicit cpu splits over CPU processes: tests),
    and auto finding none is an error."""
    if device not in ("auto", "cuda", "cpu"):
        raise _fail(f"--device must be auto, cuda or cpu, got {device!r}")
    try:
        import torch
    except ImportError:
        raise _fail(
            "measuring needs torch and transformers: pip install 'infergy[measure]'"
        ) from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and tp > 1:
            raise _fail(f"--tp {tp} splits the model over GPUs, and torch sees no CUDA GPU "
                        f"here (--device cpu splits it over {tp} CPU processes instead, as "
                        f"the tests do with tiny models)")
    if device == "cuda" and not torch.cuda.is_available():
        raise _fail("--device cuda, but torch sees no CUDA GPU here")
    if device == "cuda":  # a CPU run counts no GPU (its ranks share the CPU)
        from infergy.run.parallel import ParallelError, check_tp_gpus

        try:
            check_tp_gpus(tp)
        except ParallelError as e:
            raise _fail(str(e)) from None
    return device


def _decoding(text: str, draft: str | None, lookahead: int | None,
              acceptance: float | None) -> str:
    """--decoding with --draft, --lookahead and --acceptance folded into its text form."""
    from infergy.engines.decoding import Decoding, DecodingError

    extra = {k: v for k, v in (("draft", draft), ("lookahead", lookahead),
                               ("acceptance", acceptance)) if v is not None}
    if not extra:
        return text
    if not text.startswith("speculative"):
        raise DecodingError(f"--{', --'.join(extra)}: for --decoding speculative, not {text!r}")
    params = ",".join(f"{k}={v}" for k, v in extra.items())
    return Decoding.parse(f"{text}{',' if ':' in text else ':'}{params}").label()


def _print_point(r, load: dict, device: str) -> None:
    from infergy.engines.decoding import Decoding

    p = r.point
    gpus = f", TP {p.tp}" if p.tp > 1 else ""
    out.print(f"\n[bold]{p.model}[/] on [bold]{p.engine}[/] ({device}{gpus}), {p.decoding}: "
              f"B={p.batch}, I={p.input_tokens}, O={p.output_tokens}, "
              f"{len(r.repeats)} repeats (medians)"
              + (f", {r.runs_per_window} runs a window (figures per run)"
                 if r.runs_per_window > 1 else ""))
    if r.status != "ok":
        out.print(f"[red]{r.status}[/]: {r.error}")
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="dim")
    table.add_column(justify="right")
    table.add_column(style="dim")
    cv = "" if r.energy_cv is None else f"CV {r.energy_cv:.1%} over repeats"
    rows = [
        ("energy, whole batch", _fmt(r.energy_j, "J"), cv),
        ("  prefill", _fmt(r.prefill_energy_j, "J"), r.prefill_method),
        ("  decode", _fmt(r.decode_energy_j, "J"), "request - prefill"
         if r.prefill_method != "window" else "window"),
        *((f"  {gpu}", _fmt(j, "J"), "") for gpu, j in r.gpu_energy_j.items()
          if len(r.gpu_energy_j) > 1),
        ("  above idle", _fmt(r.active_energy_j, "J"), ""),
        ("J per output token", _fmt(r.j_per_output_token, "J"), ""),
        ("J per request", _fmt(r.j_per_request, "J"), ""),
        ("time", _fmt(r.time_s, "s"), "" if r.time_cv is None else f"CV {r.time_cv:.1%}"),
        ("TTFT", _fmt(r.ttft_s, "s"), ""),
        ("TPOT", _fmt(None if r.tpot_s is None else r.tpot_s * 1000, "ms"), "per sequence"),
        ("throughput", _fmt(r.throughput_tok_s, "tok/s"), "output tokens"),
        ("average power", _fmt(r.avg_power_w, "W"), r.meter_method or ""),
        ("peak GPU memory", _fmt(r.peak_memory_gib, "GiB"), ""),
        ("load (start-up)", _fmt(load["time_s"], "s"), _fmt(load["energy_j"], "J")),
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
            rows.append((name, _fmt(phase.time_s, "s"), _fmt(phase.energy_j, "J")))
    for row in rows:
        table.add_row(*row)
    out.print(table)
    if r.energy_j is None:
        out.print(f"[yellow]energy unavailable[/]: {r.energy_reason}")
    for w in r.warnings:
        out.print(f"[yellow]warning[/] {w}")


@app.command()
def models():
    """List the model catalog: architectures with the facts of their public configs."""
    from infergy.models import get_model, model_names

    table = Table(title="Model catalog", title_justify="left")
    for col in ("name", "architecture", "parameters", "context", "mirrors"):
        table.add_column(col)
    for name in model_names():
        spec = get_model(name)
        params = spec.published_params
        table.add_row(name, spec.config.get("model_type", "?"),
                      "n/a" if params is None else f"{params / 1e9:.2f}B",
                      str(spec.max_context), spec.hf_id or "(test model)")
    out.print(table)


def main() -> None:
    global _ARGV
    _ARGV = sys.argv[1:]
    app(prog_name="infergy")


if __name__ == "__main__":
    sys.exit(main())
