"""The results store: SQLite in WAL mode, one row per sweep run, one per measured point and
one per replayed trace (`infergy replay`).

Every point is written the moment it is measured, in its own transaction, so a killed sweep
loses nothing it measured; a resumed sweep asks `done()` which points this device already has.
Points carry a random id, so merging stores from several machines keeps each point once.
The schema is versioned: an older store is migrated when opened, a newer one is refused.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from infergy.provenance import device_identity, gpu_name_of

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


class StoreError(RuntimeError):
    """A store that cannot be used; the message says why and what to do."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Store:
    """One SQLite results file. Use as a context manager, or call `close()`."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        self.db = None
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path}: no such results store")
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._schema()
        except sqlite3.DatabaseError as err:
            if self.db is not None:
                self.db.close()
            if "readonly" in str(err) or "unable to open" in str(err):
                raise StoreError(f"{self.path}: cannot be written ({err})") from None
            raise StoreError(f"{self.path}: not an infergy results store ({err})") from None
        except StoreError:
            self.db.close()
            raise

    def _schema(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
        if "meta" not in tables:
            if tables - {"sqlite_sequence"}:
                raise StoreError(f"{self.path}: an SQLite file, but not an infergy store")
            # One script, one transaction: a store is created whole or not at all.
            # OR IGNORE: two sweeps creating one store at once both succeed.
            self.db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} INSERT OR IGNORE INTO meta "
                                  f"VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
            return
        version = int(self.db.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer infergy (store schema {version}; this "
                f"infergy reads up to {SCHEMA_VERSION}): upgrade infergy to use it; the "
                f"file was not changed"
            )
        if version < SCHEMA_VERSION:
            steps = " ".join(MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1))
            try:
                self.db.executescript(f"BEGIN; {steps} UPDATE meta SET value = "
                                      f"'{SCHEMA_VERSION}' WHERE key = 'schema_version'; "
                                      f"COMMIT;")
            except sqlite3.OperationalError as err:
                if "readonly" not in str(err):
                    raise
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                self.read_only_old = version  # readable as it is; nothing written

    def transaction(self):
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()

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
        return [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY started")]

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
        rows = self.db.execute(f"SELECT * FROM points WHERE {clause} ORDER BY measured_at, "
                               f"rowid", tuple(where.values()))
        return [dict(r) for r in rows]

    def point(self, prefix: str) -> dict:
        rows = self.db.execute("SELECT * FROM points WHERE id LIKE ?", (prefix + "%",)).fetchall()
        if len(rows) != 1:
            raise StoreError(f"{self.path}: {'no' if not rows else len(rows)} points with an "
                             f"id starting {prefix!r}")
        return dict(rows[0])

    def done(self, device: str, key: dict, batch_requested: int | str, *,
             gpu_name: str | None = None) -> bool:
        """Has this device measured this point (ok or oom)? For batch 'max': is there an
        ok point found by the search. With `gpu_name`, any card of that model counts as
        this device (a profile built over several machines of one kind)."""
        statuses = ("ok",) if batch_requested == "max" else MEASURED
        where, args = _devices(device, gpu_name)
        row = self.db.execute(
            f"SELECT 1 FROM points WHERE {where} AND {_equal(key)} AND batch_requested = ? "
            f"AND status IN ({','.join('?' * len(statuses))}) LIMIT 1",
            (*args, *key.values(), str(batch_requested), *statuses),
        ).fetchone()
        return row is not None

    def oom_batches(self, device: str, key: dict, *, gpu_name: str | None = None) -> list[int]:
        """Batch sizes that ran out of memory for this key on this device (with `gpu_name`:
        on any card of that model)."""
        where, args = _devices(device, gpu_name)
        rows = self.db.execute(
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
        if getattr(self, "read_only_old", SCHEMA_VERSION) < 2:
            return []
        clause = _equal(where) or "1"
        rows = self.db.execute(f"SELECT * FROM replays WHERE {clause} ORDER BY measured_at, "
                               f"rowid", tuple(where.values()))
        return [dict(r) for r in rows]

    # -- merge and export ---------------------------------------------------------------------

    def merge_from(self, other: Store) -> tuple[int, int, int]:
        """Copy the runs, points and replays of `other` that this store lacks; (runs, points,
        replays) added."""
        added = [0, 0, 0]
        with self.transaction():
            for n, (table, columns) in enumerate((("runs", RUN_COLUMNS),
                                                  ("points", POINT_COLUMNS),
                                                  ("replays", REPLAY_COLUMNS))):
                if table == "replays" and getattr(other, "read_only_old", SCHEMA_VERSION) < 2:
                    continue  # a read-only store from before replays
                for row in other.db.execute(f"SELECT {','.join(columns)} FROM {table}"):
                    cur = self.db.execute(
                        f"INSERT OR IGNORE INTO {table} ({','.join(columns)}) VALUES "
                        f"({','.join('?' * len(columns))})", tuple(row))
                    added[n] += cur.rowcount
        return added[0], added[1], added[2]


def _devices(device: str, gpu_name: str | None) -> tuple[str, tuple]:
    """The clause selecting this device's points, or those of every card named `gpu_name`."""
    if gpu_name is None:
        return "device = ?", (device,)
    return ("(device = ? OR device IN (SELECT device FROM runs WHERE gpu_name = ?))",
            (device, gpu_name))


def _equal(columns) -> str:
    """`a = ? AND b = ?` for these column names (values passed as parameters)."""
    return " AND ".join(f"{k} = ?" for k in columns)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *exc) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


# -- export -------------------------------------------------------------------------------------

EXPORT_COLUMNS = ("id", "measured_at", "device", "gpu_name", "model", "engine", "engine_options",
                  "decoding", "dtype", "tp", "batch", "batch_requested", "input_tokens",
                  "output_tokens", "status", "error", "energy_j", "prefill_energy_j",
                  "decode_energy_j", "active_energy_j", "j_per_output_token", "j_per_request",
                  "time_s", "ttft_s", "tpot_s", "throughput_tok_s", "avg_power_w",
                  "peak_memory_gib", "energy_cv", "meter_method", "run_id")


def export_rows(store: Store) -> Iterator[dict]:
    """One flat row per point: the key, the headline figures and the run's GPU."""
    gpus = {r["id"]: r["gpu_name"] for r in store.runs()}
    for p in store.points():
        result = json.loads(p["result"])
        row = {**{k: result.get(k) for k in EXPORT_COLUMNS}, **p, "gpu_name": gpus.get(p["run_id"])}
        yield {k: row.get(k) for k in EXPORT_COLUMNS}


def export(store: Store, path: Path, fmt: str) -> int:
    """Write every point to `path` as csv, json or parquet; the number of rows written."""
    rows = list(export_rows(store))
    if fmt == "csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=1) + "\n")
    elif fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise StoreError("parquet export needs pyarrow: pip install 'infergy[parquet]'") \
                from None
        columns = {k: [r[k] for r in rows] for k in EXPORT_COLUMNS}
        pq.write_table(pa.table(columns), path)
    else:
        raise StoreError(f"unknown export format {fmt!r}; expected csv, json or parquet")
    return len(rows)


def merge(sources: Iterable[Path], target: Path) -> tuple[int, int, int]:
    """Merge stores into `target` (created if missing); (runs, points, replays) added."""
    added = (0, 0, 0)
    with Store(target) as out:
        for source in sources:
            with Store(source, create=False) as src:
                added = tuple(a + b for a, b in zip(added, out.merge_from(src), strict=True))
    return added
