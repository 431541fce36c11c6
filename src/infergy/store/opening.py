"""Opening a results store: what a file is, found without changing it, and SQLite's errors
said as a user reads them.

A store is looked at read-only before anything is written (`look`): a file infergy refuses
(another application's SQLite file, a newer schema, a damaged file) is left exactly as it
was, journal mode included. Readers open stores read-only (`connect_read_only`), so reading
needs no write access: a store of mode 0444, in a read-only folder, or installed by root.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_S = 30.0  # how long a store busy with another process's write is waited for
LOW_SPACE = 16 * 2**20  # free bytes under which SQLite's "disk I/O error" is a full disk


class StoreError(RuntimeError):
    """A store that cannot be used; the message says why and what to do."""


def look(path: Path, newest: int) -> int | None:
    """The schema version of the store at `path`, read without changing anything; None
    where it holds no store yet (no file, an empty one, an SQLite file without tables).
    StoreError where infergy refuses it (not a store, a schema newer than `newest`, damaged);
    sqlite3.Error where SQLite cannot read it (the caller says it: `said`)."""
    try:
        if path.stat().st_size == 0:
            return None
        with path.open("rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreError(f"{path}: cannot be read ({err.strerror})") from None
    if not header.startswith(SQLITE_HEADER):
        raise StoreError(f"{path}: not an SQLite file, so not an infergy results store; "
                         f"it was left as it is")
    if len(header) < 100:
        raise StoreError(f"{path}: damaged (an SQLite file cut short, {len(header)} bytes): "
                         f"not readable as a results store; it was left as it is")
    db = connect_read_only(path)
    try:
        return read_version(db, path, newest)
    finally:
        db.close()


def read_version(db: sqlite3.Connection, path: Path, newest: int) -> int | None:
    """The schema version of the store open in `db` (None: no tables yet); StoreError where
    it is not an infergy store this infergy can read."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        if tables - {"sqlite_sequence"}:
            raise StoreError(f"{path}: an SQLite file, but not an infergy results store (its "
                             f"tables: {', '.join(sorted(tables)[:5])}); it was left as it is")
        return None
    rows = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    if not rows:
        raise StoreError(f"{path}: damaged or not an infergy results store (its meta table "
                         f"holds no schema_version); it was left as it is")
    try:
        version = int(rows[0][0])
    except (TypeError, ValueError):
        version = 0
    if version < 1:
        raise StoreError(f"{path}: damaged (schema_version {rows[0][0]!r} in its meta table "
                         f"is not a whole number from 1); it was left as it is")
    if version > newest:
        raise StoreError(
            f"{path}: written by a newer infergy (store schema {version}; this infergy reads "
            f"up to {newest}): upgrade infergy to use it; the file was not changed")
    missing = {"runs", "points"} - tables
    if missing:
        raise StoreError(f"{path}: damaged (no {' or '.join(sorted(missing))} table); it was "
                         f"left as it is")
    return version


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that reads the store at `path` and can write nothing. A store in use (its
    write-ahead log beside it) is opened in read-only mode, which sees what its writer
    committed; one not in use, or one whose shared-memory file cannot be made (a read-only
    folder), is opened immutable: nothing is created beside it."""
    uri = path.absolute().as_uri()
    if path.with_name(path.name + "-wal").exists():
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_S,
                             isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError as err:
            db.close()
            if not _cannot_open(err):
                raise
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)


def busy(err: BaseException) -> bool:
    """Whether `err` is SQLite's word that another process holds the store for a moment."""
    return isinstance(err, sqlite3.OperationalError) and (
        "locked" in str(err) or "busy" in str(err))


def _cannot_open(err: BaseException) -> bool:
    text = str(err)
    return "unable to open" in text or "readonly" in text or "read-only" in text


def said(path: Path, err: BaseException) -> StoreError:
    """SQLite's (or the system's) error on the store at `path`, as a StoreError that says
    what it means and what to do."""
    text = str(err) if not isinstance(err, OSError) else (err.strerror or str(err))
    refused = "disk I/O error" in text  # SQLite's word for a read or write the system refused
    free = _free_bytes(path) if refused else None
    if ("full" in text or getattr(err, "errno", None) == errno.ENOSPC
            or (free is not None and free < LOW_SPACE)):
        return StoreError(f"disk full writing {path}: nothing already stored is lost; free "
                          f"space and run the same command again to resume")
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return StoreError(f"{path}: damaged ({text}): not readable as a results store; "
                          f"restore it from a copy, or use another store")
    if "readonly" in text or "read-only" in text or isinstance(err, PermissionError):
        return StoreError(f"{path}: cannot be written ({text}); reading it needs no write "
                          f"access")
    if "unable to open" in text:
        return StoreError(f"{path}: cannot be opened ({text}): check that it and its folder "
                          f"exist and can be read")
    if busy(err):
        return StoreError(f"{path}: busy: another process held it for more than "
                          f"{BUSY_S:.0f} s ({text}); try again when it is done")
    if refused:
        room = "" if free is None else f", {free / 2**20:,.0f} MiB free there"
        return StoreError(f"{path}: the disk refused a read or write ({text}{room}): check the "
                          f"folder's free space and file system; nothing already stored is "
                          f"lost")
    return StoreError(f"{path}: {text}")


def _free_bytes(path: Path) -> int | None:
    """Free bytes on the file system of `path` (its folder where it does not exist yet);
    None where that cannot be asked."""
    try:
        return shutil.disk_usage(path if path.exists() else path.parent).free
    except OSError:
        return None


def is_sqlite(path: Path) -> bool:
    """Whether `path` is a file that starts as an SQLite database does."""
    try:
        with path.open("rb") as f:
            return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file (through links or other relative paths too)."""
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return a.absolute() == b.absolute()
