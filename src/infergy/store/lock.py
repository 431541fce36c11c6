"""One writer sweep a store: an advisory lock (flock) on a file beside the store.

The lock file `STORE.lock` holds who took it (process, host, since when), for the message a
second sweep is refused with. The operating system releases the lock when its process ends,
however it ends (even SIGKILL, or a lost machine's reboot), so a killed sweep never leaves a
stale lock; the file is removed when the lock is released, and a file left behind is only
read for its words. flock needs a local file system (or NFS with its locks working).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path

from infergy.store.opening import StoreError


class StoreBusyError(StoreError):
    """Another process holds the store's writer lock; the message says who and what to do."""


def lock_path(store: str | Path) -> Path:
    """The lock file of the store at `store`: its name with `.lock` added, beside the file
    itself (a link to it, or another spelling of its path, takes the same lock)."""
    store = Path(store).resolve()
    return store.with_name(store.name + ".lock")


class StoreLock:
    """The writer lock of one store, taken at once or refused (StoreBusyError): a context
    manager, or `acquire()` then `release()`."""

    def __init__(self, store: str | Path, what: str = "sweep"):
        self.store = Path(store)
        self.path = lock_path(store)
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> StoreLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise StoreError(f"{self.store}: its lock file {self.path} cannot be made "
                                 f"({err.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise StoreBusyError(self._busy(holder)) from None
            except OSError as err:  # a file system without locks
                os.close(fd)
                raise StoreError(f"{self.store}: its lock file {self.path} cannot be locked "
                                 f"({err.strerror})") from None
            # The file may have been removed by the holder releasing it between our open and
            # our lock: a lock on a removed file locks nothing; take the new file's.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                  "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):  # removed while locked: no one holds it after us
            os.unlink(self.path)
        os.close(self.fd)  # releases the lock
        self.fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy(self, holder: dict) -> str:
        who = (f"{holder.get('what', 'sweep')} process {holder['pid']} on "
               f"{holder.get('host', '?')}, since {holder.get('since', '?')}"
               if holder.get("pid") else f"another process (lock file {self.path})")
        return (f"{self.store}: another infergy {self.what} is writing this store "
                f"({who}): wait for it to end, or give each process a store of its own "
                f"(--db) and merge them afterwards with `infergy results merge`")


def _read(fd: int) -> dict:
    """What the lock file says of its holder ({} where it says nothing readable)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
