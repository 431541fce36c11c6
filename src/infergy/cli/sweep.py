"""`infergy sweep`: the CLI over infergy.run's sweeps."""

from __future__ import annotations

import inspect
import shlex
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from infergy.cli.app import app, err, fail, out
from infergy.meter import gpu_sensors
from infergy.plan import ParallelError, SpecError, load_spec, with_options
from infergy.run import (
    LAUNCHERS,
    RESUME_BY,
    LaunchError,
    RunError,
    SweepError,
    describe_plan,
    instant_power_w,
    launch_sweep,
    local_device,
    local_slots,
    open_launcher,
    parts_folder,
    point_groups,
    run_sweep,
    torch_device,
)
from infergy.store import STEADY_CV, Store, StoreError

DEFAULT_DB = Path("infergy.db")
# A sweep stopped by a signal exits as a shell reports it (128 + N); Ctrl-C's 130 otherwise.
EXIT_AFTER = {"SIGTERM": 143, "SIGHUP": 129}


def open_store(db: Path, *, create: bool = True) -> Store:
    """The results store at `db`, or a user's error saying why it cannot be used. Without
    `create`, it is only read (read-only: no write access needed)."""
    try:
        return Store(db, create=create, read_only=not create)
    except StoreError as e:
        raise fail(str(e)) from None


@app.command()
def sweep(
    spec_file: str = typer.Argument(..., metavar="SPEC",
                                    help="A sweep spec (YAML) or a preset: paper-bins, "
                                         "paper-bins-rule, length-sweep, batch-sweep, "
                                         "calibration."),
    db: Path = typer.Option(DEFAULT_DB, "--db", help="Results store (SQLite); resumed if it "
                                                     "exists."),
    model: list[str] | None = typer.Option(None, "--model", "-m",
                                           help="Models (catalog names or config.json files), "
                                                "replacing the spec's."),
    engine: list[str] | None = typer.Option(None, "--engine", "-e",
                                            help="Engines, replacing the spec's."),
    batch: list[str] | None = typer.Option(None, "--batch", "-b",
                                           help="Batch sizes (or 'max'), replacing the spec's."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; measure nothing."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    resume_by: str = typer.Option("card", "--resume-by",
                                  help="What counts as already measured: points of this card "
                                       "(card), or of any card of its model (model: one "
                                       "profile over several machines of one kind)."),
    tp: int | None = typer.Option(None, "--tp", min=1, help="Tensor parallelism, replacing the "
                                                     "spec's: the model over the first N "
                                                     "visible GPUs (vllm, vllm-eager, or "
                                                     "hf-eager: one process a GPU), every one "
                                                     "of them measured."),
    shard: str | None = typer.Option(None, "--shard", metavar="K/N",
                                     help="Measure every N-th point from the K-th (0-based): "
                                          "N processes, one per GPU, share the sweep; merge "
                                          "their stores with 'infergy results merge'."),
    launcher: str = typer.Option("local", "--launcher",
                                 help="Where the points are measured: local (every GPU group "
                                      "of this host at once), ray (a Ray cluster), slurm "
                                      "(Slurm jobs, through submitit)."),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                       help="Point groups measured at once: local: GPU groups "
                                            "of this host (default: all; on a CPU, 1); ray: "
                                            "default the cluster's GPUs over --tp; slurm: "
                                            "jobs to split the plan into (default: one an "
                                            "engine start)."),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                           help="The Ray cluster to join (ray: default a "
                                                "new one on this machine)."),
    slurm_partition: str | None = typer.Option(None, "--slurm-partition"),
    slurm_account: str | None = typer.Option(None, "--slurm-account"),
    slurm_time: str | None = typer.Option(None, "--slurm-time",
                                          help="A job's time limit: minutes, HH:MM:SS or "
                                               "D-HH:MM:SS (default 1 day)."),
    slurm_option: list[str] | None = typer.Option(None, "--slurm-option", metavar="KEY=VALUE",
                                                  help="Any other sbatch option, e.g. "
                                                       "qos=high or constraint=h100."),
    slurm_executor: str = typer.Option("slurm", "--slurm-executor",
                                       help="slurm, or local: submitit runs the jobs on this "
                                            "machine (to try the path without a cluster)."),
):
    """Measure a grid of points into a results store. Every point is stored the moment it is
    measured; run the same command again to resume (points this GPU measured are skipped).
    Over several GPUs of this host, or a Ray cluster or Slurm (--launcher), the plan is cut
    into point groups, each measured by a worker into a store of its own and merged as its
    points come; such a sweep resumes by card model.
    One sweep writes a store at a time. Ctrl-C ends after the current point (exit 130);
    SIGTERM abandons the point in flight (exit 143), SIGHUP too (129)."""
    try:
        spec = with_options(load_spec(spec_file), models=model, engines=engine,
                            batch_sizes=batch, tp=tp, shard=shard)
    except SpecError as e:
        raise fail(str(e)) from None
    if resume_by not in RESUME_BY:
        raise fail(f"--resume-by expects one of {', '.join(RESUME_BY)}, got {resume_by!r}")
    if launcher not in LAUNCHERS:
        raise fail(f"--launcher expects one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if device not in ("auto", "cuda", "cpu"):
        raise fail(f"--device must be auto, cuda or cpu, got {device!r}")
    if dry_run:
        _print_plan(spec, db, resume_by, device)
        _print_groups(spec, launcher, workers, device)
        return
    again = _again(spec_file, db, model, engine, batch, device, resume_by, tp, shard,
                   {"--launcher": launcher, "--workers": workers, "--ray-address": ray_address,
                    "--slurm-partition": slurm_partition, "--slurm-account": slurm_account,
                    "--slurm-time": slurm_time, "--slurm-option": slurm_option,
                    "--slurm-executor": slurm_executor})
    try:
        chosen = open_launcher(launcher, parts_folder(db), spec.tp, device, workers,
                               ray_address=ray_address,
                               partition=slurm_partition or spec.slurm.get("partition"),
                               account=slurm_account or spec.slurm.get("account"),
                               time=slurm_time or spec.slurm.get("time"),
                               options=[*(f"{k}={v}" for k, v in spec.slurm.get(
                                   "options", {}).items()), *(slurm_option or [])],
                               executor=slurm_executor)
    except LaunchError as e:
        raise fail(str(e)) from None
    if chosen is not None:
        _launched(spec, db, chosen, device, again)
        return
    try:
        device = torch_device(device, spec.tp)
    except (RunError, ParallelError) as e:
        raise fail(str(e)) from None
    total = len(spec.tasks())
    view = _SweepProgress(total) if err.is_terminal else _SweepLog(total)
    with open_store(db) as store, view:
        try:
            summary = run_sweep(spec, store, device=device, resume_by=resume_by,
                                on_update=view.update)
        except SweepError as e:
            raise fail(str(e), 1) from None
        except StoreError as e:  # another sweep writes it
            raise fail(str(e)) from None
    _say_summary(summary, db, again)


def sweep_as_typed(spec: str, db: Path, **options) -> None:
    """`infergy sweep SPEC --db DB` with `options` (its parameters by name) and every other
    option at its command-line default: what another command (calibrate) runs."""
    defaults = {name: p.default.default for name, p in inspect.signature(sweep).parameters.items()
                if isinstance(p.default, typer.models.ParameterInfo)}
    sweep(**{**defaults, **options, "spec_file": spec, "db": db})


def _print_groups(spec, launcher: str, workers: int | None, device: str) -> None:
    """How a launched sweep would cut the plan (the whole plan, measured points included)."""
    try:
        slots = len(local_slots(spec.tp, device, workers)) if launcher == "local" else workers
    except LaunchError as e:
        raise fail(str(e)) from None
    if launcher == "slurm":
        slots = slots or 1
    if slots is None:  # ray without --workers: the cluster's GPUs, known once joined
        out.print("Launched through Ray: point groups for the cluster's GPUs over --tp (give "
                  "--workers N to see them here)", markup=False)
        return
    if launcher == "local" and slots == 1:
        return  # one worker: the sweep itself, no groups
    sizes = [len(g.indices) for g in point_groups(spec.tasks(), list(range(len(spec.tasks()))),
                                                  slots)]
    out.print(f"Launched through {launcher}, cut for {slots} worker(s): {len(sizes)} point "
              f"group(s) of {', '.join(map(str, sizes))} points, each of one engine start",
              markup=False)


def _launched(spec, db: Path, launcher, device: str, again: str) -> None:
    """A sweep through a launcher: its progress, its summary, its exit (as _say_summary)."""
    tasks = spec.tasks()
    ones = sum(task.batch == 1 for task in tasks)
    if launcher.name == "local" and launcher.gpus and ones:
        err.print(f"infergy: warning: {ones} point(s) at B = 1 are measured while this host's "
                  f"other GPUs work: a step at B = 1 is paced by the CPU that launches its "
                  f"kernels, and on a busy H100 host such points took 4-29% more energy a "
                  f"token (docs/measurements.md); measure them alone (--workers 1 -b 1)",
                  markup=False)
    view = _SweepProgress(len(tasks)) if err.is_terminal else _SweepLog(len(tasks))
    with view:
        try:
            summary = launch_sweep(spec, db, launcher, device=device, on_update=view.update)
        except (LaunchError, StoreError) as e:
            raise fail(str(e)) from None
    cost = sorted(summary.overhead_s)
    if cost:
        err.print(f"infergy: {summary.groups} point group(s) through --launcher "
                  f"{launcher.name}; its own time a group: median {cost[len(cost) // 2]:.1f} s, "
                  f"at most {cost[-1]:.1f} s", markup=False)
    for lost in summary.lost:
        err.print(f"infergy: lost: {lost}", markup=False)
    _say_summary(summary, db, again)


def _again(spec_file: str, db: Path, model, engine, batch, device: str, resume_by: str,
           tp: int | None, shard: str | None, launch: dict | None = None) -> str:
    """The command that resumes this sweep."""
    args = ["infergy", "sweep", spec_file, "--db", str(db)]
    for flag, values in (("-m", model), ("-e", engine), ("-b", batch),
                         ("--slurm-option", (launch or {}).get("--slurm-option"))):
        for value in values or []:
            args += [flag, value]
    defaults = {"--device": "auto", "--resume-by": "card", "--launcher": "local",
                "--slurm-executor": "slurm"}
    chosen = {"--device": device, "--resume-by": resume_by, "--tp": tp, "--shard": shard,
              **{k: v for k, v in (launch or {}).items() if k != "--slurm-option"}}
    for flag, value in chosen.items():
        if value is not None and value != defaults.get(flag):
            args += [flag, str(value)]
    return shlex.join(args)


def _say_summary(summary, db: Path, again: str) -> None:
    """The sweep's last lines, and its exit: 0 when every point of its plan is in the store,
    1 where some failed or are missing, 2 where the store could not be written, 130 after
    Ctrl-C, 143 after SIGTERM."""
    share = summary.busy_s / summary.wall_s if summary.wall_s else 0
    err.print(f"infergy: {summary.measured} points measured, {summary.skipped} already in "
              f"{db}, {summary.oom} out of memory, {summary.failed} failed, "
              f"{summary.worker_restarts} worker restarts; {summary.wall_s:.0f} s "
              f"({share:.0%} measuring, {summary.setup_s:.0f} s loading and compiling)",
              markup=False)
    if summary.unsteady:
        err.print(f"infergy: {summary.unsteady} of the points measured have repeats more than "
                  f"{STEADY_CV:.0%} apart (CV in `infergy results list`; `infergy results "
                  f"show ID` says why)", markup=False)
    if summary.store_error:
        raise fail(f"{summary.store_error}: the sweep stopped there, the points stored before "
                   f"are kept; once the store can be written, resume with: {again}")
    failed = ""
    if summary.failed_points:
        shown = "; ".join(summary.failed_points[:5])
        more = len(summary.failed_points) - 5
        failed = (f"; {len(summary.failed_points)} failed: {shown}"
                  + (f" and {more} more (`infergy results list --db {db} --status failed`)"
                     if more > 0 else "")
                  + " (tried again when the same command runs again)")
    if summary.signal and summary.missing:
        by = "Ctrl-C" if summary.signal == "SIGINT" else summary.signal
        how = (f"the point in flight ({summary.abandoned}) abandoned, not stored"
               if summary.abandoned else "after the point in flight")
        err.print(f"infergy: stopped by {by}, {how}; the run is marked interrupted; "
                  f"{summary.missing} of the plan's {summary.total} points are not in {db}"
                  f"{failed}: run the same command to resume: {again}", markup=False)
        raise typer.Exit(EXIT_AFTER.get(summary.signal, 130))
    if summary.missing:
        err.print(f"infergy: not done: {summary.missing} of the plan's {summary.total} points "
                  f"are not in {db}{failed}: run the same command to resume: {again}",
                  markup=False)
        raise typer.Exit(1)
    err.print(f"infergy: done: every point of the plan ({summary.total}) is in {db}{failed}",
              markup=False)
    if summary.signal:  # stopped after the last point: done, and the signal's exit
        raise typer.Exit(EXIT_AFTER.get(summary.signal, 130))
    if summary.failed_points:
        raise typer.Exit(1)


def _print_plan(spec, db: Path, resume_by: str = "card", device: str = "auto") -> None:
    store = open_store(db, create=False) if db.is_file() else None
    here, card = local_device(spec.tp, device), None
    if resume_by == "model" and store is not None and device != "cpu":
        # Planned from any machine: the card model is the store's (one, or say which).
        names = sorted({r["gpu_name"] for r in store.runs() if r["gpu_name"]})
        if len(names) > 1:
            store.close()
            raise fail(f"{db} holds runs of several cards ({', '.join(names)}): a dry run "
                        f"with --resume-by model needs a store of one")
        card = names[0] if names else None
    cpu = card is None and here.startswith("cpu:")
    try:
        plan = describe_plan(spec, store, here, gpu_name=card, cpu=cpu)
    finally:
        if store is not None:
            store.close()
    gpus = f" at TP {spec.tp}" if spec.tp > 1 else ""
    where = card or ("this CPU (" + here[4:] + ")" if cpu else here)
    table = Table(title=f"Plan of {spec.source} on {where}{gpus}", title_justify="left")
    for col in ("#", "model", "engine", "decoding", "B", "I", "O", "status", "rough time"):
        table.add_column(col)
    for n, row in enumerate(plan.rows):
        if not plan.listed_all and n == len(plan.rows) // 2:
            table.add_row("…", f"{plan.total - len(plan.rows):,} more points", *[""] * 7)
        t = row.task
        table.add_row(f"{row.number:,}", t.model, t.engine.label, t.decoding, str(t.batch),
                      str(t.input_tokens), str(t.output_tokens),
                      "in store" if row.done else "to measure",
                      _duration(row.took_s or row.estimate_s)
                      + ("" if row.took_s or row.scaled else " ?"))
    out.print(table)
    left = plan.total - plan.done
    idle = f"idle measurement ({_duration(spec.idle_s)}), " if spec.idle_s else ""
    if not left:
        out.print(f"{plan.total:,} points, {plan.done:,} already in {db}: nothing to measure",
                  markup=False)
        return
    out.print(f"{plan.total:,} points, {plan.done:,} already in {db}, {left:,} to measure in "
              f"{plan.starts} model loads; warm-ups and repeats roughly "
              f"{_duration(plan.todo_s)}, plus {idle}loading and compiling (not estimated)",
              markup=False)
    sample = (f"; timed from {plan.sampled:,} of the points, evenly spread"
              if plan.sampled < plan.total else "")
    unscaled = (f" (unscaled, marked ?: {_duration(plan.unscaled_s)})" if plan.unscaled_s
                else "")
    if cpu:
        out.print("Times on this CPU: measured for the points in the store; for the others "
                  "a rough guess, possibly ten times off (the model's FLOPs at 50 GFLOP/s, "
                  "its bytes at 10 GB/s, 10 ms a step and 1 ms a layer a step), scaled by "
                  "what this CPU's points of the engine at that batch size (and input "
                  f"length) took, where the store has some{unscaled}{sample}", markup=False)
    else:
        out.print("Times: measured for the points in the store; for the others the analytic "
                  "FLOPs and bytes at half a nominal H100's peak, scaled by what this engine's "
                  "points at that batch size (and input length, where measured) took, where "
                  f"the store has some{unscaled}{sample}", markup=False)


def _duration(seconds: float) -> str:
    """A time as a person reads it: 0.04 s, 27 s, 14 min, 3.2 h, 5.1 days."""
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.1f} days"


class _PowerColumn(ProgressColumn):
    """Live power of this machine's GPUs, read at most once a second."""

    def __init__(self):
        super().__init__()
        self._sensors, self._last, self._text = None, 0.0, Text("")

    def render(self, task) -> Text:
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            self._text = Text(self._read(), style="cyan")
        return self._text

    def _read(self) -> str:
        if self._sensors is None:
            self._sensors = gpu_sensors()
        watts = [w for w in map(instant_power_w, self._sensors) if w is not None]
        return f"{sum(watts):.0f} W" if watts else ""


class _SweepProgress:
    """Points done and left, ETA from measured point times, the current point, GPU power."""

    def __init__(self, total: int):
        self.progress = Progress(
            TextColumn("[bold]{task.fields[current]}"), BarColumn(),
            TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"), _PowerColumn(),
            TextColumn("[dim]{task.fields[detail]}"), console=err, transient=False,
        )
        self.task = self.progress.add_task("sweep", total=total, current="", eta="",
                                           detail="")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def update(self, p) -> None:
        eta = "" if p.eta_s is None else f"ETA {_duration(p.eta_s)}"
        self.progress.update(self.task, completed=p.done + p.skipped,
                             current=escape(p.current[:60]), eta=eta,
                             detail=escape((p.stopping or p.detail)[-70:]))


class _SweepLog:
    """Where standard error is not a terminal (a file, a CI log): a plain line for each
    record stored (what, how it ended, its energy, points done of the plan, time left) and
    each notice (a new worker, a stop), written the moment it happens, so a killed sweep's
    log says how far it came."""

    def __init__(self, total: int):
        self.total = total
        self.records = self.notices = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def update(self, p) -> None:
        for text in p.notices[self.notices:]:
            err.print(f"infergy: {text}", markup=False, highlight=False)
        self.notices = len(p.notices)
        for r in p.stored[self.records:]:
            if r["status"] == "failed":
                said = f"failed ({(r['error'] or '').splitlines()[0][:120]})" if r["error"] \
                    else "failed"
            else:
                said = "ok" if r["status"] == "ok" else "out of memory"
                if r["status"] == "ok":
                    said += (", energy not measured (no sensor)" if r["energy_j"] is None
                             else f", {r['energy_j']:.4g} J")
            tried = f" (tried B={r['batch']})" if "B=max" in r["what"] else ""
            eta_s = p.eta_after(r)
            eta = "" if eta_s is None else f", about {_duration(eta_s)} left"
            err.print(f"infergy: [{p.done + p.skipped + 1}/{p.total}] {r['what']}{tried}: "
                      f"{said}{eta}", markup=False, highlight=False)
        self.records = len(p.stored)
