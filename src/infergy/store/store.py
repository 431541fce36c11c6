"""The results store: SQLite in WAL mode, one row per sweep run, one per measured point and
one per replayed trace (`infergy replay`).

Every point is written the moment it is measured, in its own transaction, so a killed sweep
loses nothing it measured; a resumed sweep asks `done()` which points this device already has.
Points carry a random id, so merging stores from several machines keeps each point once.
The schema is versioned: an older store is migrated when opened, a newer one is refused.
A store is looked at read-only before anything is written (infergy.store.opening): one that
is refused is left as it was. Readers open stores read-only (`read_only=True`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from infergy.provenance import device_identity, gpu_name_of
from infergy.store.opening import (
    BUSY_S,
    StoreError,
    busy,
    connect_read_only,
    look,
    read_version,
    said,
)
from infergy.store.searches import reusable_max

SCHEMA_VERSION = 2

_SCHEMA_BASE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    ended TEXT,
    status TEXT NOT NULL,          -- running, finished, interrupted (or never ended: killed)
    device TEXT NOT NULL,          -- GPU UUIDs, or cpu:<host>: what "the same GPU" means
    host TEXT,
    gpu_name TEXT,
    driver TEXT,
    power_limit_w REAL,
    idle_w TEXT,                   -- JSON: sensor -> watts, measured at the run's start
    versions TEXT,                 -- JSON: python, infergy, commit, torch, transformers, ...
    spec TEXT                      -- JSON: the sweep spec as given
);
CREATE TABLE IF NOT EXISTS points (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    device TEXT NOT NULL,
    model TEXT NOT NULL,
    engine TEXT NOT NULL,
    engine_options TEXT NOT NULL,  -- canonical JSON
    decoding TEXT NOT NULL,
    dtype TEXT NOT NULL,
    tp INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    batch_requested TEXT NOT NULL, -- the spec's value: a number, or "max"
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    status TEXT NOT NULL,          -- ok, oom, failed
    error TEXT,
    energy_j REAL,
    j_per_output_token REAL,
    time_s REAL,
    measured_at TEXT NOT NULL,
    batch_search TEXT,             -- JSON: how B = max was found
    result TEXT NOT NULL           -- JSON: the whole PointResult
);
CREATE INDEX IF NOT EXISTS points_key ON points
    (device, model, engine, engine_options, decoding, input_tokens, output_tokens);
"""

_REPLAYS = """
CREATE TABLE IF NOT EXISTS replays (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    device TEXT NOT NULL,
    trace TEXT NOT NULL,
    mode TEXT NOT NULL,            -- offline (online: not yet)
    batching TEXT NOT NULL,        -- binned, natural
    model TEXT NOT NULL,
    engine TEXT NOT NULL,
    decoding TEXT NOT NULL,
    requests INTEGER NOT NULL,
    status TEXT NOT NULL,          -- ok, oom, failed (the batches before it kept)
    energy_j REAL,
    j_per_output_token REAL,
    time_s REAL,
    measured_at TEXT NOT NULL,
    result TEXT NOT NULL           -- JSON: the whole ReplayResult, the estimate beside it
);
"""
_SCHEMA = _SCHEMA_BASE + _REPLAYS

# version -> SQL taking a store from version - 1 to version. Version 1 is the first.
MIGRATIONS: dict[int, str] = {2: _REPLAYS}

POINT_COLUMNS = ("id", "run_id", "device", "model", "engine", "engine_options", "decoding",
                 "dtype", "tp", "batch", "batch_requested", "input_tokens", "output_tokens",
                 "status", "error", "energy_j", "j_per_output_token", "time_s", "measured_at",
                 "batch_search", "result")
REPLAY_COLUMNS = ("id", "run_id", "device", "trace", "mode", "batching", "model", "engine",
                  "decoding", "requests", "status", "energy_j", "j_per_output_token", "time_s",
                  "measured_at", "result")
RUN_COLUMNS = ("id", "started", "ended", "status", "device", "host", "gpu_name", "driver",
               "power_limit_w", "idle_w", "versions", "spec")
MEASURED = ("ok", "oom")  # statuses that count as measured: never measured again
# What makes two points one measurement (with the device): merge keeps one of them.
POINT_KEY = ("device", "model", "engine", "engine_options", "decoding", "dtype", "tp",
             "batch_requested", "input_tokens", "output_tokens")

__all__ = ["MEASURED", "POINT_KEY", "SCHEMA_VERSION", "Store", "StoreError"]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Store:
    """One SQLite results file. Use as a context manager, or call `close()`.

    `create`: a missing or empty file becomes a new store. `read_only`: opened for reading
    only (no write access needed; nothing is created or changed beside it; an empty file
    reads as a store without results); a write is a StoreError. Raises StoreError where the
    file cannot be used, and changes nothing then."""

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self.version = SCHEMA_VERSION
        self.db: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a results store")
        if (read_only or not create) and not self.path.is_file():
            raise StoreError(f"{self.path}: no such results store")
        deadline = time.monotonic() + BUSY_S
        while True:
            try:
                self._open(create and not read_only)
                return
            except (sqlite3.Error, OSError) as err:
                self._drop()
                if busy(err) and time.monotonic() < deadline:  # another process creating it
                    time.sleep(random.uniform(0.01, 0.1))
                    continue
                raise said(self.path, err) from None
            except BaseException:
                self._drop()
                raise

    def _open(self, create: bool) -> None:
        version = look(self.path, SCHEMA_VERSION)  # read-only: a refused file is not touched
        if self.read_only:
            if version is None:  # an empty file: a store with no results
                self.db = sqlite3.connect(":memory:", isolation_level=None)
                self.db.row_factory = sqlite3.Row
                self._create()
            else:
                self.db = connect_read_only(self.path)
                self.db.row_factory = sqlite3.Row
                self.version = version
            return
        if version is None and not create:
            raise StoreError(f"{self.path}: an empty file, not yet a results store")
        self._check_writable()
        self.db = sqlite3.connect(self.path, timeout=BUSY_S, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")  # "locked" while another creates it: again
        self.db.execute("PRAGMA synchronous=NORMAL")
        if version != SCHEMA_VERSION:
            self._schema()

    def _check_writable(self) -> None:
        folder = self.path.absolute().parent
        if not self.path.exists():
            folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK) or (
                self.path.exists() and not os.access(self.path, os.W_OK)):
            where = self.path if self.path.exists() else folder
            raise StoreError(f"{self.path}: cannot be written (permission denied on {where}); "
                             f"reading it needs no write access")

    def _schema(self) -> None:
        """Create the store, or migrate an older one, in one transaction: whole or not at all.
        Decided inside it, so that two processes creating one store at once both succeed."""
        with self.transaction():
            version = read_version(self.db, self.path, SCHEMA_VERSION)
            if version is None:
                self._create()
                return
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _statements(MIGRATIONS[step]):
                    self.db.execute(statement)
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                            (str(SCHEMA_VERSION),))

    def _create(self) -> None:
        for statement in _statements(_SCHEMA):
            self.db.execute(statement)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),))

    def _drop(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        """The rows of a query; StoreError where the store cannot be read (damaged)."""
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise said(self.path, err) from None

    def transaction(self):
        """A write transaction (`with`); StoreError where the store cannot be written (read
        only, disk full): nothing of it is kept then, everything committed before is."""
        if self.read_only:
            raise StoreError(f"{self.path}: opened for reading only; nothing was written")
        return _Transaction(self)

    def put_meta(self, key: str, value: str) -> None:
        """Keep `value` under `key` in the store's meta table (a calibration's fitted model,
        say), replacing what was there."""
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, *, device: str, meta: dict, spec: dict | None) -> str:
        gpus = meta.get("gpus") or [{}]
        run_id = uuid.uuid4().hex
        with self.transaction():
            self.db.execute(
                "INSERT INTO runs (id, started, status, device, host, gpu_name, driver, "
                "power_limit_w, idle_w, versions, spec) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, now(), "running", device, (meta.get("host") or {}).get("hostname"),
                 gpu_name_of(meta),
                 gpus[0].get("driver"), gpus[0].get("power_limit_w"),
                 json.dumps(meta.get("idle_w")), json.dumps(meta.get("versions")),
                 json.dumps(spec, default=str)),
            )
        return run_id

    def end_run(self, run_id: str, status: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE runs SET ended = ?, status = ? WHERE id = ?",
                            (now(), status, run_id))

    def record_run(self, meta: dict, spec: dict | None, *, points: Iterable[tuple] = (),
                   replays: Iterable[dict] = (), status: str = "finished") -> str:
        """A run measured whole, recorded in one go: begun with its metadata (`meta`, the
        provenance's `run_metadata`; its device by `device_identity`), its `points` ((a
        PointResult's dict, engine options key, batch requested) each) and `replays`
        (ReplayResult dicts) added, ended with `status`. Returns the run's id. (A sweep, which
        records each point as it is measured, calls `start_run`, `add_point` and `end_run`.)"""
        device = device_identity(meta)
        run_id = self.start_run(device=device, meta=meta, spec=spec)
        for result, engine_options, batch_requested in points:
            self.add_point(run_id, device, result, engine_options=engine_options,
                           batch_requested=batch_requested)
        for replay in replays:
            self.add_replay(run_id, device, replay)
        self.end_run(run_id, status)
        return run_id

    def runs(self) -> list[dict]:
        """Every run, oldest first (its JSON columns checked, as text)."""
        runs = [dict(r) for r in self._rows("SELECT * FROM runs ORDER BY started")]
        for run in runs:
            for column in ("idle_w", "versions", "spec"):
                self._json(run, column, f"run {run['id']}", dict_only=False)
        return runs

    # -- points -------------------------------------------------------------------------------

    def add_point(self, run_id: str, device: str, result: dict, *, engine_options: str,
                  batch_requested: int | str, batch_search: dict | None = None) -> str:
        """Record one measured point (a PointResult's dict) in one transaction."""
        p = result["point"]
        point_id = uuid.uuid4().hex
        row = (point_id, run_id, device, p["model"], p["engine"], engine_options,
               p["decoding"], p["dtype"], p["tp"], p["batch"], str(batch_requested),
               p["input_tokens"], p["output_tokens"], result["status"], result.get("error"),
               result.get("energy_j"), result.get("j_per_output_token"), result.get("time_s"),
               now(), json.dumps(batch_search) if batch_search else None,
               json.dumps(result, default=str))
        with self.transaction():
            self.db.execute(f"INSERT INTO points VALUES ({','.join('?' * len(row))})", row)
        return point_id

    def points(self, **where: Any) -> list[dict]:
        """Points matching column = value filters, oldest first."""
        clause = _equal(where) or "1"
        rows = self._rows(f"SELECT * FROM points WHERE {clause} ORDER BY measured_at, rowid",
                          tuple(where.values()))
        return [self._checked_point(dict(r)) for r in rows]

    def point(self, prefix: str) -> dict:
        """The one point whose id starts with `prefix`; StoreError where none or several."""
        rows = self._rows("SELECT * FROM points WHERE substr(id, 1, ?) = ?",
                          (len(prefix), prefix))
        if len(rows) != 1:
            raise StoreError(f"{self.path}: {'no' if not rows else len(rows)} points with an "
                             f"id starting {prefix!r}")
        return self._checked_point(dict(rows[0]))

    def _checked_point(self, point: dict) -> dict:
        self._json(point, "result", f"point {point['id']}")
        self._json(point, "batch_search", f"point {point['id']}", dict_only=False)
        return point

    def _json(self, row: dict, column: str, what: str, dict_only: bool = True) -> None:
        """StoreError where `row[column]` is not JSON (an object, with `dict_only`)."""
        text = row.get(column)
        if text is None and not dict_only:
            return
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            value = ...
        if value is ... or (dict_only and not isinstance(value, dict)):
            raise StoreError(f"{self.path}: damaged: the {column} of {what} is not a JSON "
                             f"{'object' if dict_only else 'text'} ({str(text)[:40]!r})")

    def done(self, device: str, key: dict, batch_requested: int | str, *,
             gpu_name: str | None = None, cap: int | None = None) -> bool:
        """Has this device measured this point (ok or oom)? For batch 'max': is there an
        ok point found by a search that a search under `cap` (the sweep's max_batch_cap)
        would find again (`reusable_max`). With `gpu_name`, any card of that model counts as
        this device (a profile built over several machines of one kind)."""
        statuses = ("ok",) if batch_requested == "max" else MEASURED
        where, args = _devices(device, gpu_name)
        rows = self._rows(
            f"SELECT batch, batch_search FROM points WHERE {where} AND {_equal(key)} AND "
            f"batch_requested = ? AND status IN ({','.join('?' * len(statuses))})",
            (*args, *key.values(), str(batch_requested), *statuses))
        if batch_requested != "max" or cap is None:
            return bool(rows)
        return any(reusable_max(r[0], r[1], cap) for r in rows)

    def oom_batches(self, device: str, key: dict, *, gpu_name: str | None = None) -> list[int]:
        """Batch sizes that ran out of memory for this key on this device (with `gpu_name`:
        on any card of that model)."""
        where, args = _devices(device, gpu_name)
        rows = self._rows(
            f"SELECT DISTINCT batch FROM points WHERE {where} AND {_equal(key)} AND "
            f"status = 'oom'", (*args, *key.values()))
        return sorted(r[0] for r in rows)

    # -- replays ------------------------------------------------------------------------------

    def add_replay(self, run_id: str, device: str, result: dict) -> str:
        """Record one replay (a ReplayResult's dict) in one transaction."""
        replay_id = uuid.uuid4().hex
        row = (replay_id, run_id, device, result["trace"], result["mode"], result["batching"],
               result["model"], result["engine"], result["decoding"], result["requests"],
               result["status"], result.get("energy_j"), result.get("j_per_output_token"),
               result.get("time_s"), now(), json.dumps(result, default=str))
        with self.transaction():
            self.db.execute(f"INSERT INTO replays VALUES ({','.join('?' * len(row))})", row)
        return replay_id

    def replays(self, **where: Any) -> list[dict]:
        """Replays matching column = value filters, oldest first (none in a read-only store
        older than the replays table)."""
        if self.version < 2:
            return []
        clause = _equal(where) or "1"
        rows = [dict(r) for r in self._rows(
            f"SELECT * FROM replays WHERE {clause} ORDER BY measured_at, rowid",
            tuple(where.values()))]
        for replay in rows:
            self._json(replay, "result", f"replay {replay['id']}")
        return rows

def _devices(device: str, gpu_name: str | None) -> tuple[str, tuple]:
    """The clause selecting this device's points, or those of every card named `gpu_name`."""
    if gpu_name is None:
        return "device = ?", (device,)
    return ("(device = ? OR device IN (SELECT device FROM runs WHERE gpu_name = ?))",
            (device, gpu_name))


def _equal(columns) -> str:
    """`a = ? AND b = ?` for these column names (values passed as parameters)."""
    return " AND ".join(f"{k} = ?" for k in columns)


def _statements(script: str) -> list[str]:
    """The SQL statements of `script` (no `;` inside a statement), one by one: run in the
    caller's transaction, which `executescript` would end."""
    return [s for s in (part.strip() for part in script.split(";")) if s]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an error; SQLite's errors (disk full, read
    only, damaged) become StoreErrors that say them."""

    def __init__(self, store: Store):
        self.store, self.db = store, store.db

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise said(self.store.path, err) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as err:
                exc = err
        if getattr(self.db, "in_transaction", True):
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
        if isinstance(exc, (sqlite3.Error, OSError)):
            raise said(self.store.path, exc) from None
