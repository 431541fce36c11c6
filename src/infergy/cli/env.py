"""`infergy env` and `infergy meter`: what this machine can measure, and a command measured."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infergy.cli.app import app, err, fail, fmt, idle_seconds, note, out, output_file
from infergy.meter import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    NoSuchGpu,
    describe,
    open_meter,
    run_command,
)


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")):
    """List what can be measured here: GPUs, RAPL zones, versions. Exits 0 even when
    nothing is measurable."""
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
                fmt(g["power_limit_w"], "W"), fmt(g["memory_gib"], "GiB", 3),
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
        out.print(f"[yellow]not measurable[/] {escape(str(u['what']))}: {escape(str(u['reason']))}")
    for w in info["warnings"]:
        out.print(f"[yellow]warning[/] {escape(str(w))}")
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
            d.device, fmt(d.energy_j, "J"), d.method or f"[red]none[/]: {d.reason}", check,
            fmt(d.avg_power_w, "W"), fmt(d.idle_w, "W"), fmt(d.active_energy_j, "J"),
        )
    if len([d for d in m.devices if d.kind == "gpu"]) > 1:
        table.add_row("GPU total", fmt(m.energy_j, "J"), m.method or "", "",
                      fmt(m.avg_power_w, "W"), "", fmt(m.active_energy_j, "J"))
    return table


@app.command(context_settings={"ignore_unknown_options": True})
def meter(
    command: list[str] = typer.Argument(None, help="The command to run, after `--`."),
    as_json: bool = typer.Option(False, "--json", help="Write the result as JSON."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Write the result here instead of stderr."),
    idle_s: float = typer.Option(5.0, "--idle-s", callback=idle_seconds,
                                 help="Seconds of idle power measured before the command "
                                      "(0: skip; no energy above idle then)."),
    period_ms: float = typer.Option(50.0, "--period-ms", min=1,
                                    help="Power sampling period in milliseconds."),
    gpus: str | None = typer.Option(None, "--gpus",
                                    help="CUDA indices of the GPUs to measure, e.g. 0,1, as "
                                         "torch numbers them (after CUDA_VISIBLE_DEVICES; "
                                         "default: every GPU visible)."),
    cpu: bool = typer.Option(True, "--cpu/--no-cpu", help="Measure CPU and DRAM (RAPL)."),
):
    """Run a command and measure its energy, like `perf stat` measures time.

    Example: infergy meter -- python train.py --epochs 1

    Prints time, energy and power of each GPU (and CPU where RAPL is readable) to stderr,
    and exits with the command's own exit code (128 + N where signal N ended it). Ctrl-C,
    SIGTERM and SIGHUP are passed on to the command and every process it started.
    """
    if not command:
        err.print("usage: infergy meter [OPTIONS] -- COMMAND [ARGS]...\n"
                  "error: no command given to measure")
        raise typer.Exit(2)
    indices = _cuda_indices(gpus)
    if output is not None:  # checked before anything runs: the measurement is not lost
        output_file(output, "--output")
    try:
        m = open_meter(indices, cpu=cpu, idle_s=0, sample_period_s=period_ms / 1000)
    except NoSuchGpu as e:
        raise fail(f"--gpus {gpus}: {e}") from None
    with m:
        if indices and not m.gpus:
            why = "; ".join(f"{u.what}: {u.reason}" for u in m.unavailable
                            if u.what.startswith("gpu"))
            raise fail(f"--gpus {gpus}: no GPU can be measured here ({why})")
        for u in m.unavailable:
            note(f"not measurable: {u.what}: {u.reason}")
        if idle_s > 0 and m.sensors:
            try:
                with err.status(f"infergy: measuring idle power for {idle_s:g} s ..."):
                    m.measure_idle(idle_s)
            except KeyboardInterrupt:
                raise fail("interrupted while measuring idle power: the command was not run",
                           130) from None
        window = m.start(shlex.join(command))
        try:
            code, interrupted = run_command(command)
        except FileNotFoundError:
            window.stop()
            err.print(f"infergy: command not found: {escape(command[0])}")
            raise typer.Exit(EXIT_NOT_FOUND) from None
        except PermissionError:
            window.stop()
            err.print(f"infergy: permission denied: {escape(command[0])} is not executable")
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


def _cuda_indices(gpus: str | None) -> list[int] | None:
    """--gpus as a list of CUDA indices (None: every visible GPU); a user's error where it
    is not a list of distinct indices."""
    if gpus is None:
        return None
    try:
        indices = [int(x) for x in gpus.split(",")]
    except ValueError:
        raise fail(f"--gpus {gpus}: expected CUDA indices like 0 or 0,1") from None
    if any(i < 0 for i in indices):
        raise fail(f"--gpus {gpus}: CUDA indices count from 0")
    if len(set(indices)) < len(indices):
        raise fail(f"--gpus {gpus}: a GPU is named twice")
    return indices


def _write(output: Path | None, render) -> None:
    """Render to stderr, or to the file `output` (checked before the command ran). Where
    the file cannot be written even so, the result goes to stderr: it is not lost."""
    if output is None:
        render(err)
        return
    try:
        with output.open("w") as f:
            render(Console(file=f, width=120))
    except OSError as e:
        err.print(f"[red]error[/]: --output {escape(str(output))}: cannot be written "
                  f"({escape(e.strerror or str(e))}); the result, here instead:")
        render(err)


def _print_meter(sink: Console, command, code, interrupted, result, m) -> None:
    status = f"exit code {code}" + (", [red]interrupted[/]: measured so far" if interrupted else "")
    sink.print(f"\n[bold]infergy meter[/]: {escape(shlex.join(command))}  ({status})")
    sink.print(f"  time {result.duration_s:.3f} s")
    if result.devices:
        sink.print(_measurement_table(result, "energy"))
    if result.energy_j is None:
        sink.print(f"  GPU energy: n/a ({escape(result.reason or '')})")
    if m.idle is not None:
        sink.print(f"  idle measured for {m.idle.duration_s:.1f} s before the command")
    for w in (*m.warnings, *result.warnings):
        sink.print(f"  [yellow]warning[/] {escape(w)}")
    for e in result.errors:
        sink.print(f"  [red]failed[/] {escape(e)}")
