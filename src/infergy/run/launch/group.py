"""A point group measured where a launcher placed it: in a process of its own (local), a Ray
task, or a Slurm job. It runs an ordinary sweep (`run_sweep`, through its worker process) of
the group's points into a store of its own in the sweep's parts folder, and says what it
does, line by line, in a log beside it, which the driver reads for its progress.

The store starts with the driver's points of the same keys (`seed`), and the sweep resumes
by card model: a point measured on a card of this one's model, here or earlier, is not
measured again. What the store holds is the driver's to merge, once the group has ended or
been lost. Errors that stop the group (no worker could start, a store that cannot be
written) come back as its result's `error`; what kills the process comes back as nothing.

The local launcher runs it as `python -m infergy.run.launch JOB` (__main__.py).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass

from infergy.plan.spec import SweepSpec
from infergy.run.device import RunError, torch_device
from infergy.run.sweep.runner import Progress, SweepError, run_sweep
from infergy.store import Store, StoreError
from infergy.store.exchange import merge_rows


@dataclass(frozen=True)
class GroupJob:
    name: str
    spec: SweepSpec  # the sweep's spec, its `select` the group's points
    store: str  # the group's own store
    log: str  # its progress, one JSON object a line
    device: str = "auto"  # auto, cuda or cpu: resolved where it runs
    seed: tuple = ((), ())  # (runs, points) of the driver's store, for the group's keys


def run_group(job: GroupJob) -> dict:
    """Measure the group; what it did (the sweep's summary, where it ran, its own time), or
    {"error": why} where it could not."""
    start = time.perf_counter()
    try:
        device = torch_device(job.device, job.spec.tp)
        with Store(job.store) as store:
            runs, points = job.seed
            if points:
                merge_rows(store, list(runs), list(points), [])
            with _Log(job.log, store) as log:
                summary = run_sweep(job.spec, store, device=device, resume_by="model",
                                    on_update=log.update)
    except (RunError, SweepError, StoreError, OSError) as err:
        return {"error": str(err), "host": socket.gethostname(),
                "wall_s": time.perf_counter() - start}
    return {"host": socket.gethostname(), "device": summary.device,
            "run_id": summary.run_id, "measured": summary.measured, "skipped": summary.skipped,
            "failed": summary.failed, "oom": summary.oom, "unsteady": summary.unsteady,
            "restarts": summary.worker_restarts, "busy_s": summary.busy_s,
            "setup_s": summary.setup_s, "interrupted": summary.interrupted,
            "signal": summary.signal, "abandoned": summary.abandoned,
            "store_error": summary.store_error, "wall_s": time.perf_counter() - start}


class _Log:
    """The group's progress as JSON lines, each flushed as it is written: the device once,
    each point begun (`current`), each record stored (its rows as the store holds them, with
    its run's the first time: `rows`, which the driver merges as they come; then `stored`),
    each point ended (`done`, `skipped`, its time), each notice. A file appended to by one
    writer and read whole lines at a time reads right on shared storage, where an SQLite
    file written on one node cannot be read on another."""

    def __init__(self, path: str, store: Store):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        self.store = store
        self.device = self.current = ""
        self.stored = self.notices = self.done = self.skipped = 0
        self.rowid = store.db.execute("SELECT coalesce(max(rowid), 0) FROM points").fetchone()[0]
        self.runs = {run["id"] for run in store.runs()}  # the driver's already

    def __enter__(self) -> _Log:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def write(self, **line) -> None:
        self.file.write(json.dumps(line, default=str) + "\n")
        self.file.flush()

    def _rows(self) -> dict:
        """The points stored since the last look, and the runs they are of, not yet sent."""
        rows = self.store.db.execute("SELECT rowid AS n, * FROM points WHERE rowid > ? ORDER BY "
                                     "rowid", (self.rowid,)).fetchall()
        points = [{k: v for k, v in dict(r).items() if k != "n"} for r in rows]
        self.rowid = rows[-1]["n"] if rows else self.rowid
        runs = [run for run in self.store.runs() if run["id"] not in self.runs]
        self.runs |= {run["id"] for run in runs}
        return {"runs": runs, "points": points}

    def update(self, p: Progress) -> None:
        if p.device and p.device != self.device:
            self.device = p.device
            self.write(device=p.device)
        for text in p.notices[self.notices:]:
            self.write(notice=text)
        self.notices = len(p.notices)
        if p.current != self.current:
            self.current = p.current
            self.write(current=p.current)
        if len(p.stored) > self.stored:  # the rows first: in the store once it is said
            self.write(rows=self._rows())
        for record in p.stored[self.stored:]:
            self.write(stored=record)
        self.stored = len(p.stored)
        if p.done != self.done or p.skipped != self.skipped:
            took = p.point_times_s[-1] if p.done != self.done and p.point_times_s else None
            self.write(done=p.done - self.done, skipped=p.skipped - self.skipped, took_s=took)
            self.done, self.skipped = p.done, p.skipped

