"""`infergy env` and `infergy meter`: what this machine can measure, and a command measured."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from infergy.cli.app import app, err, fmt, out
from infergy.meter import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, describe, open_meter, run_command


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
            code, interrupted = run_command(command)
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
