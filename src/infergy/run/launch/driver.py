"""The driver of a launched sweep: the plan cut into point groups (groups.py), each measured
by a worker that a launcher placed (launchers.py) into a store of its own, merged into the
sweep's store as each group ends.

- **Resume.** Before anything is launched, what an earlier run left in the parts folder (the
  stores of groups it lost, or of a driver killed mid-run) is merged; a part still being
  written (its worker alive, its lock held) stops the sweep with who holds it. A point counts
  as measured where the store holds it from a card of the sweep's card model: the local
  GPUs' model, on a CPU this host's CPU, else the one card model the store's runs name.
  Each worker checks again against the points it is given (`GroupJob.seed`), by its own
  card's model: nothing is measured twice.
- **Progress.** Each worker's log (group.py) is read as it grows: points done and stored,
  the point in flight, for the whole sweep.
- **Loss.** A group whose worker dies (killed, a node lost, a job cancelled) or cannot start
  is merged, and what it had not measured is sent again, once. The point it had in flight
  counts a try; a point lost twice is recorded failed with the reason (a worker that never
  reached a point costs each of its points a try), and the others go on.
- **Stop.** Ctrl-C asks every worker to stop after its point in flight (a second Ctrl-C, or
  SIGTERM: now); what they stored is merged, and the summary says what is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infergy.meter import nvml
from infergy.plan.spec import SweepSpec
from infergy.run.launch.group import GroupJob
from infergy.run.launch.groups import PointGroup, point_groups
from infergy.run.launch.launchers import Ending, LaunchError
from infergy.run.sweep.jobs import failed_record
from infergy.run.sweep.runner import (
    Progress,
    Stop,
    SweepSummary,
    store_said,
    task_job,
    task_key,
)
from infergy.run.sweep.worker import local_device
from infergy.store import MEASURED, Store, StoreError
from infergy.store.exchange import merge_rows
from infergy.store.lock import StoreBusyError, StoreLock

POLL_S = 0.25  # how often the driver looks at its groups
TRIES = 2  # a point lost with its worker this often is recorded failed


def parts_folder(db: Path) -> Path:
    """Where the workers of a sweep into `db` write their stores and logs."""
    return db.with_name(db.name + ".parts")


@dataclass
class _Running:
    group: PointGroup
    job: GroupJob
    submitted: float
    offset: int = 0  # of its log read so far
    position: int | None = None  # the last point it began, an index into group.indices
    in_flight: bool = False  # that point not yet ended
    device: str = ""


@dataclass
class LaunchSummary(SweepSummary):
    """A sweep's summary (SweepSummary), with the launcher's own share of each group's time."""

    groups: int = 0
    lost: list[str] = field(default_factory=list)  # each group lost, and why
    overhead_s: list[float] = field(default_factory=list)  # a group's time in the driver's
    # eyes less its worker's own


def launch_sweep(spec: SweepSpec, db: Path, launcher, *, device: str = "auto",
                 parts: Path | None = None,
                 on_update: Callable[[Progress], None] | None = None) -> LaunchSummary:
    """Measure every point of `spec` not yet in the store at `db`, in groups placed by
    `launcher`. StoreBusyError where another sweep writes the store; LaunchError where a
    part of an earlier run is still being written."""
    db, parts = Path(db), Path(parts or parts_folder(Path(db)))
    with StoreLock(db), Store(db) as store:
        return _Driver(spec, store, launcher, device, parts, on_update or (lambda p: None)
                       ).run()


class _Driver:
    def __init__(self, spec: SweepSpec, store: Store, launcher, device: str, parts: Path,
                 update: Callable[[Progress], None]):
        self.spec, self.store, self.launcher, self.device = spec, store, launcher, device
        self.parts, self.update = parts, update
        self.tasks = spec.tasks()
        self.progress = Progress(total=len(self.tasks))
        self.running: dict[str, _Running] = {}
        self.tries: dict[int, int] = {}
        self.cards: set[tuple[str, str | None]] = set()  # (device, card model): done there
        self.devices: set[str] = set()
        self.busy = self.setup = 0.0
        self.restarts = self.unsteady = 0
        self.lost: list[str] = []
        self.overhead: list[float] = []
        self.store_error: str | None = None
        self.held: list[str] = []  # parts a worker still holds
        self.run_id: str | None = None
        self.stop = Stop()
        self.stopping = ""
        self.count = 0  # groups made

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> LaunchSummary:
        start = time.perf_counter()
        self.parts.mkdir(parents=True, exist_ok=True)
        self._merge_leftovers()
        self.cards = self._sweep_cards()
        todo = [i for i in range(len(self.tasks)) if not self._done(i)]
        self.progress.skipped = len(self.tasks) - len(todo)
        self.update(self.progress)
        main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)} \
            if main else {}
        try:
            for group in point_groups(self.tasks, todo, self.launcher.slots):
                self._submit(group)
            while self.running:
                self._stop_asked()
                for handle in list(self.running):
                    self._read_log(self.running[handle])
                    ending = self.launcher.poll(handle)
                    if ending is not None:
                        self._ended(handle, ending)
                self._say()
                time.sleep(POLL_S)
        finally:
            try:
                self.launcher.close()
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
            if self.run_id is not None:
                with contextlib.suppress(StoreError, sqlite3.Error):
                    self.store.end_run(self.run_id, "finished")
            with contextlib.suppress(OSError):  # empty once every part is merged
                self.parts.rmdir()
        return self._summary(time.perf_counter() - start)

    def _submit(self, group: PointGroup) -> None:
        """Launch a group: its job (the spec selecting its points, its store and log in the
        parts folder, the store's points of its keys)."""
        self.count += 1
        store = self.parts / f"{group.name}.db"
        job = GroupJob(group.name, dataclasses.replace(self.spec, select=group.indices),
                       str(store), str(store.with_suffix(".log")), self.device,
                       self._seed(group.indices))
        self.running[self.launcher.submit(job)] = _Running(group, job, time.perf_counter())

    def _stop_asked(self) -> None:
        """Ctrl-C: every worker stops after its point; again, or SIGTERM: now."""
        if not self.stop.count:
            return
        said = "stopping now" if self.stop.abandon else \
            "stopping after the points in flight (Ctrl-C again: now)"
        if said != self.stopping:
            self.stopping = said
            self.progress.stopping = f"{self.stop.signal}: {said}"
            self.progress.notices.append(self.progress.stopping)
            for handle in self.running:
                self.launcher.stop(handle, now=self.stop.abandon)
            self.update(self.progress)

    def _say(self) -> None:
        now = [r for r in self.running.values() if r.in_flight]
        self.progress.detail = f"{len(self.running)} group(s) launched, {len(now)} measuring"
        self.update(self.progress)

    # -- a group's log and its end -----------------------------------------------------------
    def _read_log(self, r: _Running) -> None:
        """What the group's worker has said since the last look (whole lines only)."""
        try:
            with open(r.job.log, "rb") as f:
                f.seek(r.offset)
                data = f.read()
        except OSError:
            return
        data = data[:data.rfind(b"\n") + 1]
        r.offset += len(data)
        p = self.progress
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                said = json.loads(line)
            except ValueError:
                continue
            if "device" in said:
                r.device = said["device"]
                self.devices.add(r.device)
            if "notice" in said:
                p.notices.append(f"{r.group.name}: {said['notice']}")
            if "current" in said:
                r.position = self._position(r.group, said["current"])
                r.in_flight = r.position is not None
                p.current = said["current"]
            if "rows" in said:
                self._merge_rows(said["rows"])
            if "stored" in said:
                p.stored.append(said["stored"])
                status = said["stored"]["status"]
                p.failed += status == "failed"
                p.oom += status == "oom"
                self.update(p)  # a log prints each record with the count before it
            if "done" in said:
                p.done += said["done"]
                p.skipped += said["skipped"]
                if said["done"]:
                    r.in_flight = False
                    if said.get("took_s") is not None:
                        p.point_times_s.append(said["took_s"])
        self.update(p)

    def _position(self, group: PointGroup, text: str) -> int | None:
        for n, i in enumerate(group.indices):
            if self.tasks[i].describe() == text:
                return n
        return None

    def _ended(self, handle: str, ending: Ending) -> None:
        r = self.running.pop(handle)
        self._read_log(r)
        result = ending.result
        why = ending.why or result.get("error")
        if not why and result.get("store_error"):
            why = f"its store could not be written: {result['store_error']}"
        if self._merge_part(Path(r.job.store), r.job.log, r.job.seed[0]) is None:
            self.progress.notices.append(
                f"group {r.group.name} ended ({why or 'done'}) but its worker still holds its "
                f"store: kept in {self.parts} for the next run, its points not sent again")
            return
        if result.get("wall_s") is not None:
            self.overhead.append(time.perf_counter() - r.submitted - result["wall_s"])
        self.busy += result.get("busy_s") or 0.0
        self.setup += result.get("setup_s") or 0.0
        self.restarts += result.get("restarts") or 0
        self.unsteady += result.get("unsteady") or 0
        if result.get("signal") and not self.stop.count:  # its own stop: a scheduler's
            why = why or f"its worker was stopped ({result['signal']})"
        if not why or self.stop.count:
            return
        self.lost.append(f"{r.group.name}: {why}")
        self._send_again(r, why)

    def _send_again(self, r: _Running, why: str) -> None:
        """What a lost group had not measured: sent again, its point in flight (or, where it
        never reached one, each of its points) a try the poorer; a point out of tries is
        recorded failed."""
        indices = list(r.group.indices)
        if r.position is None:  # lost before it began a point
            unmeasured = charged = [i for i in indices if not self._done(i)]
        else:
            rest = indices[r.position:] if r.in_flight else indices[r.position + 1:]
            unmeasured = [i for i in rest if not self._done(i)]
            charged = [indices[r.position]] if r.in_flight else []
        for i in charged:
            self.tries[i] = self.tries.get(i, 0) + 1
        out = [i for i in unmeasured if self.tries.get(i, 0) >= TRIES]
        for i in out:
            self._record_failed(i, r.device, f"lost with its worker {TRIES} times: {why}")
        again = [i for i in unmeasured if i not in out]
        self.progress.notices.append(
            f"group {r.group.name} lost ({why}): {len(again)} point(s) sent again"
            + (f", {len(out)} recorded failed" if out else ""))
        if again:
            self.restarts += 1
            for group in point_groups(self.tasks, again, 1):
                self._submit(group)

    def _record_failed(self, i: int, device: str, why: str) -> None:
        task = self.tasks[i]
        try:
            if self.run_id is None:
                self.run_id = self.store.start_run(
                    device=f"launcher:{self.launcher.name}",
                    meta={"launcher": self.launcher.name}, spec=self.spec.raw or None)
            batch = task.batch if isinstance(task.batch, int) else 0
            record = failed_record(task_job(task, self.spec, batch), "failed", why)
            self.store.add_point(self.run_id, device or "unknown (its worker was lost)",
                                 record, engine_options=task.engine.options_key,
                                 batch_requested=task.batch)
        except (StoreError, sqlite3.Error) as err:
            self._store_failed(err)
            return
        self.progress.failed += 1
        self.progress.stored.append({"what": task.describe(), "batch": task.batch,
                                     "status": "failed", "energy_j": None, "error": why})

    # -- the stores --------------------------------------------------------------------------
    def _merge_rows(self, rows: dict) -> None:
        """A group's points as they come (its log's `rows`), into the sweep's store."""
        if self.store_error:
            return  # kept in the group's own store, for the next run
        try:
            merge_rows(self.store, rows["runs"], rows["points"], [])
        except (StoreError, sqlite3.Error) as err:
            self._store_failed(err)

    def _merge_part(self, path: Path, log: str | None = None, seeded=()) -> int | None:
        """Merge a group's store into the sweep's, learning the cards of its own runs (not
        those `seeded`), and remove it: the points added. None where a worker still holds
        it. A part that cannot be read, or merged, is kept for the next run."""
        if not path.exists():
            return 0
        try:
            with StoreLock(path, what="merge"), Store(path, create=False) as part:
                runs, points, replays = part.runs(), part.points(), part.replays()
        except StoreBusyError as err:
            self.held.append(str(err))
            return None
        except (StoreError, sqlite3.Error) as err:
            self.progress.notices.append(f"{path}: cannot be read ({err}): kept, not merged")
            return 0
        try:
            added = merge_rows(self.store, runs, points, replays).points
        except (StoreError, sqlite3.Error) as err:
            self._store_failed(err)
            return 0
        known = {run["id"] for run in seeded}
        self.cards |= {(run["device"], run["gpu_name"]) for run in runs if run["id"] not in known}
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm"),
                         Path(log) if log else path.with_suffix(".log"),
                         path.with_suffix(".job")):
            with contextlib.suppress(OSError):
                leftover.unlink()
        return added

    def _merge_leftovers(self) -> None:
        """The stores an earlier run of a sweep into this store left in the parts folder."""
        left = sorted(self.parts.glob("g*.db"))
        added = sum(self._merge_part(path) or 0 for path in left)
        if self.held:
            raise LaunchError(f"{self.held[0]}: a worker of an earlier run of this sweep still "
                              f"writes it; let it end (or stop it), then run the same command "
                              f"again")
        for output in self.parts.glob("g*.out"):  # a lost worker's words, said then
            with contextlib.suppress(OSError):
                output.unlink()
        if self.store_error:
            raise LaunchError(f"{self.store_error}: the parts left by an earlier run, in "
                              f"{self.parts}, are kept")
        if left:
            self.progress.notices.append(f"the stores of {len(left)} group(s) left in "
                                         f"{self.parts} by an earlier run merged ({added} "
                                         f"point(s) not yet in the store)")

    def _store_failed(self, err: Exception) -> None:
        """The sweep's store cannot be written: every worker stops after its point, and what
        they stored stays in the parts folder for the next run."""
        if self.store_error is None:
            self.store_error = store_said(self.store, err)
            for handle in self.running:
                self.launcher.stop(handle, now=False)

    def _seed(self, indices) -> tuple:
        """The store's measured points of these keys, and their runs: a worker skips those of
        its card model."""
        points, run_ids = [], set()
        for key in {tuple(task_key(self.tasks[i], self.spec).items()) for i in indices}:
            for p in self.store.points(**dict(key)):
                if p["status"] in MEASURED:
                    points.append(p)
                    run_ids.add(p["run_id"])
        runs = [r for r in self.store.runs() if r["id"] in run_ids] if run_ids else []
        return tuple(runs), tuple(points)

    # -- what counts as measured -------------------------------------------------------------
    def _sweep_cards(self) -> set[tuple[str, str | None]]:
        """Where a point counts as measured before anything is launched (see the module)."""
        if self.device == "cpu":
            return {(local_device(1, "cpu"), None)}
        if self.launcher.name == "local":
            models = nvml.visible_gpu_models(self.spec.tp)
            if models:
                return {("", ", ".join(sorted(set(models))))}
            return {(local_device(1, "cpu"), None)}
        names = {r["gpu_name"] for r in self.store.runs() if r["gpu_name"]}
        return {("", names.pop())} if len(names) == 1 else set()

    def _done(self, i: int) -> bool:
        task = self.tasks[i]
        key = task_key(task, self.spec)
        return any(self.store.done(device, key, task.batch, gpu_name=card,
                                   cap=self.spec.max_batch_cap)
                   for device, card in self.cards)

    def _summary(self, wall_s: float) -> LaunchSummary:
        p = self.progress
        failed, missing = [], 0
        if self.store_error is None:
            for i, task in enumerate(self.tasks):
                if self._done(i):
                    continue
                if self._tried_and_failed(task.describe()):  # by a worker, or here
                    failed.append(task.describe())
                else:
                    missing += 1
        else:
            missing = p.total - p.done - p.skipped
        return LaunchSummary(
            None, ", ".join(sorted(self.devices)) or None, p.done, p.skipped, p.failed, p.oom,
            bool(self.stop.count), self.restarts, wall_s, self.busy, self.setup,
            self.unsteady, total=p.total, missing=missing, failed_points=failed,
            signal=self.stop.signal, store_error=self.store_error, groups=self.count,
            lost=self.lost, overhead_s=self.overhead)

    def _tried_and_failed(self, text: str) -> bool:
        return any(s["what"] == text and s["status"] == "failed" for s in self.progress.stored)
