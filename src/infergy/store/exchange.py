"""Results stores in and out: every point exported as a flat table (csv, json, parquet), and
stores merged into one, each measurement kept once.

Neither writes over what it reads: an export never replaces an SQLite file (a results store)
nor the store it reads, and appears whole or not at all (written beside, then renamed); a
merge reads every source before it writes, and never merges a store into itself.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from infergy.store.opening import StoreError, is_sqlite, same_file
from infergy.store.store import (
    MEASURED,
    POINT_COLUMNS,
    POINT_KEY,
    REPLAY_COLUMNS,
    RUN_COLUMNS,
    Store,
)

EXPORT_COLUMNS = ("id", "measured_at", "device", "gpu_name", "model", "engine", "engine_options",
                  "decoding", "dtype", "tp", "batch", "batch_requested", "input_tokens",
                  "output_tokens", "status", "error", "energy_j", "prefill_energy_j",
                  "decode_energy_j", "active_energy_j", "j_per_output_token", "j_per_request",
                  "time_s", "ttft_s", "tpot_s", "throughput_tok_s", "avg_power_w",
                  "peak_memory_gib", "energy_cv", "meter_method", "run_id")
EXPORT_FORMATS = ("csv", "json", "parquet")


def export_rows(store: Store) -> Iterator[dict]:
    """One flat row per point: the key, the headline figures and the run's GPU."""
    gpus = {r["id"]: r["gpu_name"] for r in store.runs()}
    for p in store.points():
        result = json.loads(p["result"])
        row = {**{k: result.get(k) for k in EXPORT_COLUMNS}, **p, "gpu_name": gpus.get(p["run_id"])}
        yield {k: row.get(k) for k in EXPORT_COLUMNS}


def export(store: Store, path: Path, fmt: str) -> int:
    """Write every point to `path` as csv, json or parquet; the number of rows written.
    StoreError where `path` is an SQLite file or the store itself (never written over), or
    cannot be written: then no file of it is left."""
    path = Path(path)
    if fmt not in EXPORT_FORMATS:
        raise StoreError(f"unknown export format {fmt!r}; expected csv, json or parquet")
    if same_file(path, store.path):
        raise StoreError(f"{path}: is the store being exported ({store.path}); give another "
                         f"file to write")
    if path.is_dir():
        raise StoreError(f"{path}: is a folder; give the name of a file to write")
    if is_sqlite(path):
        raise StoreError(f"{path}: is an SQLite file (a results store?), which infergy never "
                         f"writes over; give another file to write")
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise StoreError("parquet export needs pyarrow: pip install 'infergy[parquet]'") \
                from None
    rows = list(export_rows(store))
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        if fmt == "csv":
            with partial.open("x", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        elif fmt == "json":
            with partial.open("x") as f:
                f.write(json.dumps(rows, indent=1) + "\n")
        else:
            pq.write_table(pa.table({k: [r[k] for r in rows] for k in EXPORT_COLUMNS}),
                           partial)
        os.replace(partial, path)
    except OSError as err:
        _remove(partial)
        raise _unwritten(path, err) from None
    except BaseException:
        _remove(partial)
        raise
    return len(rows)


def _unwritten(path: Path, err: OSError) -> StoreError:
    if "full" in str(err) or "No space" in str(err):
        return StoreError(f"disk full writing {path}: nothing was written; free space and "
                          f"run the same command again")
    return StoreError(f"{path}: cannot be written ({err.strerror or err}); nothing was "
                      f"written")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


class Merged(NamedTuple):
    """What a merge added: runs, points and replays, and the points skipped as duplicates
    (measured already, under another id, by the same device in the target)."""

    runs: int
    points: int
    replays: int
    duplicates: int


def merge(sources: Iterable[Path], target: Path, models: Iterable[str] = ()) -> Merged:
    """Merge stores into `target` (created if missing): every point and replay, or with
    `models` only those of these models, with the runs that measured them. Every source is
    read whole before the target is written; a source that is the target itself is refused,
    and so is a model that no source holds (StoreError)."""
    models = set(models)
    sources, target = [Path(s) for s in sources], Path(target)
    for source in sources:
        if same_file(source, target):
            raise StoreError(f"{source}: is the store merged into ({target}); merge into "
                             f"another store")
    read = []
    for source in sources:
        with Store(source, create=False, read_only=True) as src:
            runs, points, replays = src.runs(), src.points(), src.replays()
        if models:
            points = [p for p in points if p["model"] in models]
            replays = [r for r in replays if r["model"] in models]
            used = {row["run_id"] for row in points + replays}
            runs = [r for r in runs if r["id"] in used]
        read.append((runs, points, replays))
    held = {row["model"] for _, points, replays in read for row in points + replays}
    if missing := sorted(models - held):
        raise StoreError(f"--model {', '.join(missing)}: no point or replay of "
                         f"{'it' if len(missing) == 1 else 'them'} in "
                         f"{', '.join(map(str, sources))}")
    added = Merged(0, 0, 0, 0)
    with Store(target) as out:
        for runs, points, replays in read:
            added = Merged(*(a + b for a, b in zip(added, merge_rows(out, runs, points,
                                                                     replays), strict=True)))
    return added


def merge_rows(store: Store, runs: list[dict], points: list[dict],
               replays: list[dict]) -> Merged:
    """Copy the runs, points and replays (rows of another store) that `store` lacks, in one
    transaction. A point is lacking where its id is not there and no measured (ok or oom)
    point of its key (`POINT_KEY`: its device included) is. A run copied before it ended
    takes its end from a later copy."""
    added = [0, 0, 0, 0]
    with store.transaction():
        db = store.db
        for n, (table, columns, rows) in enumerate((("runs", RUN_COLUMNS, runs),
                                                    ("points", POINT_COLUMNS, points),
                                                    ("replays", REPLAY_COLUMNS, replays))):
            for row in rows:
                if table == "points" and _measured(db, row):
                    if not db.execute("SELECT 1 FROM points WHERE id = ?",
                                      (row["id"],)).fetchone():
                        added[3] += 1
                    continue
                cur = db.execute(
                    f"INSERT OR IGNORE INTO {table} ({','.join(columns)}) VALUES "
                    f"({','.join('?' * len(columns))})", tuple(row[c] for c in columns))
                added[n] += cur.rowcount
                if table == "runs" and not cur.rowcount and row["ended"]:
                    # merged while it ran, and again since it ended: its end is kept
                    db.execute("UPDATE runs SET ended = ?, status = ? WHERE id = ? AND ended "
                               "IS NULL", (row["ended"], row["status"], row["id"]))
    return Merged(*added)


def _measured(db, point: dict) -> bool:
    """Whether the store holds a measured point of `point`'s key. A B = max search stores a
    row for each batch it tried (out of memory at 64 and 32, then found at 16): an
    out-of-memory try is held where the store has that try (its batch), and the answer (or
    a failed try) where it has an answer, whatever its batch: one answer a key. (Keyed as
    one, every row after a search's first try was dropped, the answer too.)"""
    key, statuses = POINT_KEY, MEASURED
    if point["batch_requested"] == "max":
        key, statuses = ((*key, "batch"), ("oom",)) if point["status"] == "oom" else \
            (key, ("ok",))
    rows = db.execute(
        f"SELECT 1 FROM points WHERE {' AND '.join(f'{k} = ?' for k in key)} AND "
        f"status IN ({','.join('?' * len(statuses))}) LIMIT 1",
        (*(point[k] for k in key), *statuses)).fetchone()
    return rows is not None
