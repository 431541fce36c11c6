"""`infergy results`: read, export and merge results stores (infergy.store)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from infergy.cli.app import app, err, fail, fmt, out, output_file
from infergy.cli.sweep import DEFAULT_DB
from infergy.report import card_tables, load_points
from infergy.store import EXPORT_FORMATS, Store, StoreError, export, merge, same_file

results_app = typer.Typer(help="Read, export and merge results stores.", no_args_is_help=True)
app.add_typer(results_app, name="results")


def _read(db: Path, read):
    """What `read(store)` returns of the store at `db`, opened read-only; a user's error
    where the store cannot be read (missing, not a store, damaged)."""
    try:
        with Store(db, create=False, read_only=True) as store:
            return read(store)
    except StoreError as e:
        raise fail(str(e)) from None


def _table(title: str, columns) -> Table:
    """A table whose cells fold, never cut, where the terminal is narrow."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


STATUSES = ("ok", "oom", "failed")  # a point's, as the store keeps it


@results_app.command("list")
def results_list(
    db: Path = typer.Option(DEFAULT_DB, "--db", help="Results store."),
    model: str | None = typer.Option(None, "--model"),
    engine: str | None = typer.Option(None, "--engine"),
    status: str | None = typer.Option(None, "--status", help="ok, oom or failed."),
):
    """One line per point: its id, key and headline figures (CV: of energy over repeats)."""
    if status not in (None, *STATUSES):
        raise fail(f"--status expects one of {', '.join(STATUSES)}, got {status!r}")
    where = {k: v for k, v in (("model", model), ("engine", engine), ("status", status)) if v}
    points, runs = _read(db, lambda store: (store.points(**where),
                                            {r["id"]: r for r in store.runs()}))
    if not points:
        out.print(f"{db}: holds no points" + (" matching the filters" if where else ""),
                  markup=False)
        return
    table = _table(f"{db}: {len(points)} points",
                   ("id", "GPU", "model", "engine", "decoding", "TP", "B", "I", "O", "status",
                    "J/token", "time", "CV"))
    for p in points:
        cv = json.loads(p["result"]).get("energy_cv")
        batch = f"{p['batch']} (max)" if p["batch_requested"] == "max" else str(p["batch"])
        engine_label = p["engine"] + ("" if p["engine_options"] == "{}" else
                                      f" {p['engine_options']}")
        table.add_row(p["id"][:8], runs.get(p["run_id"], {}).get("gpu_name") or p["device"],
                      p["model"], engine_label, p["decoding"], str(p["tp"]), batch,
                      str(p["input_tokens"]),
                      str(p["output_tokens"]), p["status"],
                      fmt(p["j_per_output_token"], "J"), fmt(p["time_s"], "s"),
                      "" if cv is None else f"{cv:.1%}")
    out.print(table)


@results_app.command("summary")
def results_summary(
    db: list[Path] = typer.Option([DEFAULT_DB], "--db", help="Results store (repeatable)."),
    model: str | None = typer.Option(None, "--model"),
):
    """Per card: where and when its points were measured (a row per GPU: driver, power limit,
    idle power, software) and how well each point's repeats agree (CV of energy per engine,
    decoding, TP and batch; the points over 5% named)."""
    try:
        points = load_points(db)
    except StoreError as e:  # a missing store, or a file that is not one
        raise fail(str(e)) from None
    if model:
        points = points[points.model == model]
    if points.empty:
        raise fail(f"{', '.join(map(str, db))}: no measured points"
                    + (f" of {model}" if model else ""))
    for title, columns, rows in card_tables(points):
        table = _table(title, columns)
        for row in rows:
            table.add_row(*row)
        out.print(table)


@results_app.command("show")
def results_show(
    point_id: str = typer.Argument(..., help="A point's id (or its first characters)."),
    db: Path = typer.Option(DEFAULT_DB, "--db", help="Results store."),
):
    """One point, whole, as JSON (with its run)."""
    point, runs = _read(db, lambda store: (store.point(point_id), store.runs()))
    run = next((r for r in runs if r["id"] == point["run_id"]), None)
    for key in ("result", "batch_search"):
        if point[key]:
            point[key] = json.loads(point[key])
    out.print_json(json.dumps({"point": point, "run": run}, default=str))


@results_app.command("export")
def results_export(
    output: Path = typer.Argument(..., help="File to write."),
    db: Path = typer.Option(DEFAULT_DB, "--db", help="Results store."),
    fmt: str | None = typer.Option(None, "--format", help="csv, json or parquet (default: "
                                                          "the file's extension, else csv)."),
):
    """Every point as a flat table: key, headline figures, GPU. Never written over: a results
    store (any SQLite file), nor the store read; the file appears whole or not at all."""
    named = output.suffix.lower().lstrip(".")
    if fmt is None:
        fmt = named if named in EXPORT_FORMATS else "csv"
    if fmt not in EXPORT_FORMATS:
        raise fail(f"--format: unknown export format {fmt!r}; expected one of "
                   f"{', '.join(EXPORT_FORMATS)}")
    if named in EXPORT_FORMATS and named != fmt:
        raise fail(f"output {output}: a .{named} file, and --format {fmt}: give a .{fmt} "
                   f"name, or leave --format out")
    if same_file(output, db):
        raise fail(f"output {output}: is the store being read (--db {db}); give another file "
                   f"to write")
    output_file(output, "output")
    rows = _read(db, lambda store: export(store, output, fmt))
    err.print(f"infergy: {rows} points written to {output}", markup=False)


@results_app.command("merge")
def results_merge(
    sources: list[Path] = typer.Argument(..., help="Stores to merge."),
    output: Path = typer.Option(..., "--output", "-o", help="Store to merge into (created if "
                                                            "missing)."),
    model: list[str] = typer.Option([], "--model", "-m", help="Only this model's points and "
                                    "replays, with the runs that measured them (repeatable)."),
):
    """Merge stores measured on several machines or runs; each measurement is kept once (a
    point of the same key measured again on the same GPU is skipped as a duplicate)."""
    for source in sources:
        if not source.is_file():
            raise fail(f"{source}: no such results store")
        if same_file(source, output):
            raise fail(f"-o {output}: is one of the stores merged ({source}); merge into "
                       f"another store")
    if output.is_dir():
        raise fail(f"-o {output}: is a folder; give the store to merge into")
    try:
        added = merge(sources, output, model)
    except StoreError as e:
        raise fail(str(e)) from None
    also = f", {added.replays} replays" if added.replays else ""
    skipped = (f"; {added.duplicates} points skipped as duplicates (the same point measured "
               f"on the same GPU, already in {output})" if added.duplicates else "")
    err.print(f"infergy: {added.points} points{also} and {added.runs} runs added to "
              f"{output}{skipped}", markup=False)
