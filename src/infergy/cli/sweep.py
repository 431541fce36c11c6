"""`infergy sweep`: the CLI over infergy.run's sweeps."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from infergy.cli.app import app, err, fail, out
from infergy.meter import gpu_sensors
from infergy.plan import ParallelError, SpecError, engine_starts, load_spec, with_options
from infergy.run import (
    RESUME_BY,
    RunError,
    SweepError,
    describe_plan,
    instant_power_w,
    local_device,
    run_sweep,
    torch_device,
)
from infergy.store import STEADY_CV, Store, StoreError

DEFAULT_DB = Path("infergy.db")


def open_store(db: Path, *, create: bool = True) -> Store:
    """The results store at `db`, or a user's error saying why it cannot be used."""
    try:
        return Store(db, create=create)
    except StoreError as e:
        raise fail(str(e)) from None


@app.command()
def sweep(
    spec_file: str = typer.Argument(..., metavar="SPEC",
                                    help="A sweep spec (YAML) or a preset: paper-bins, "
                                         "paper-bins-rule, length-sweep, batch-sweep."),
    db: Path = typer.Option(DEFAULT_DB, "--db", help="Results store (SQLite); resumed if it "
                                                     "exists."),
    model: list[str] | None = typer.Option(None, "--model", "-m",
                                           help="Models, replacing the spec's."),
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
):
    """Measure a grid of points into a results store. Every point is stored the moment it is
    measured; run the same command again to resume (points this GPU measured are skipped).
    Ctrl-C ends after the current point."""
    try:
        spec = with_options(load_spec(spec_file), models=model, engines=engine,
                            batch_sizes=batch, tp=tp, shard=shard)
    except SpecError as e:
        raise fail(str(e)) from None
    if resume_by not in RESUME_BY:
        raise fail(f"--resume-by expects one of {', '.join(RESUME_BY)}, got {resume_by!r}")
    if dry_run:
        _print_plan(spec, db, resume_by)
        return
    try:
        device = torch_device(device, spec.tp)
    except (RunError, ParallelError) as e:
        raise fail(str(e)) from None
    with open_store(db) as store, _SweepProgress(len(spec.tasks())) as view:
        try:
            summary = run_sweep(spec, store, device=device, resume_by=resume_by,
                                on_update=view.update)
        except SweepError as e:
            raise fail(str(e), 1) from None
    stopped = " (stopped by Ctrl-C: run the same command to resume)" if summary.interrupted \
        else ""
    share = summary.busy_s / summary.wall_s if summary.wall_s else 0
    err.print(f"infergy: {summary.measured} points measured, {summary.skipped} already in "
              f"{db}, {summary.oom} out of memory, {summary.failed} failed, "
              f"{summary.worker_restarts} worker restarts; {summary.wall_s:.0f} s "
              f"({share:.0%} measuring, {summary.setup_s:.0f} s loading and compiling)"
              f"{stopped}")
    if summary.unsteady:
        err.print(f"infergy: {summary.unsteady} of the points measured have repeats more than "
                  f"{STEADY_CV:.0%} apart (CV in `infergy results list`; `infergy results "
                  f"show ID` says why)")
    if summary.failed:
        raise typer.Exit(1)


def _print_plan(spec, db: Path, resume_by: str = "card") -> None:
    store = open_store(db, create=False) if db.is_file() else None
    device, card = local_device(spec.tp), None
    if resume_by == "model" and store is not None:
        # Planned from any machine: the card model is the store's (one, or say which).
        names = sorted({r["gpu_name"] for r in store.runs() if r["gpu_name"]})
        if len(names) > 1:
            store.close()
            raise fail(f"{db} holds runs of several cards ({', '.join(names)}): a dry run "
                        f"with --resume-by model needs a store of one")
        card = names[0] if names else None
    plan = describe_plan(spec, store, device, gpu_name=card)
    gpus = f" at TP {spec.tp}" if spec.tp > 1 else ""
    table = Table(title=f"Plan of {spec.source} on {card or device}{gpus}", title_justify="left")
    for col in ("model", "engine", "decoding", "B", "I", "O", "status", "rough time"):
        table.add_column(col)
    for row in plan:
        t = row["task"]
        table.add_row(t.model, t.engine.label, t.decoding, str(t.batch), str(t.input_tokens),
                      str(t.output_tokens), "in store" if row["done"] else "to measure",
                      f"{row['took_s'] or row['estimate_s']:.1f} s"
                      + ("" if row["took_s"] else "" if row["scale"] else " ?"))
    out.print(table)
    todo = [r for r in plan if not r["done"]]
    starts = engine_starts([r["task"] for r in todo])
    guessed = sum(r["estimate_s"] for r in todo if not r["scale"]) / 60
    out.print(f"{len(plan)} points, {len(plan) - len(todo)} already in {db}, {len(todo)} to "
              f"measure in {starts} model loads; warm-ups and repeats roughly "
              f"{sum(r['estimate_s'] for r in todo) / 60:.0f} min, plus loading, compiling "
              f"and idle measurement (not estimated)")
    out.print("Times: measured for the points in the store; for the others the analytic "
              "FLOPs and bytes at half a nominal H100's peak, scaled by what this engine's "
              "points at that batch size (and input length, where measured) took, where the "
              "store has some"
              + (f" (unscaled, marked ?: {guessed:.0f} min)" if guessed else ""))
    if store is not None:
        store.close()


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
        eta = "" if p.eta_s is None else f"ETA {p.eta_s / 60:.0f} min"
        detail = "stopping after this point (Ctrl-C again: now)" if p.stopping else p.detail
        self.progress.update(self.task, completed=p.done + p.skipped, current=p.current[:60],
                             eta=eta, detail=detail[-70:])
