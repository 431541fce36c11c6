"""Run a sweep: every task of a spec, through a worker process, into a results store.

The parent owns the store and the schedule; the worker (worker.py) owns the GPU. One sweep
writes a store at a time (its lock, store/lock.py: a second is refused at once). Each point
is recorded the moment it comes back, in one transaction. A point this device already
measured is skipped, so a killed sweep resumes where it stopped. Out of memory is recorded
and the sweep goes on; a worker that dies, meets a fatal CUDA error or says it is leaving (its
tensor-parallel ranks out of step: worker.py) is replaced. Ctrl-C ends the sweep after the
current point (a second Ctrl-C abandons it: the worker is stopped at once); SIGTERM (a
scheduler's cancel, `timeout`, `docker stop`), often followed by SIGKILL within seconds,
abandons the point in flight at once. Either way the worker is gone and the run is marked
interrupted before `run_sweep` returns. A store that cannot be written (a full disk) stops
the sweep with what was stored before kept.

Batch size "max": the worker's engine estimates the largest batch that fits (its memory
model); the runner measures the largest power of two at or under that estimate and the cap,
and halves it after each out-of-memory until a batch runs. Every try is recorded with the
search that led to it (`batch_search`), and a resumed search starts under the smallest batch
that already ran out of memory.
"""

from __future__ import annotations

import itertools
import signal
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from infergy.plan.point import Point
from infergy.plan.spec import MAX, SweepSpec, Task, engine_start
from infergy.provenance import gpu_name_of
from infergy.run.sweep.dryrun import measuring_time
from infergy.run.sweep.jobs import Job, WorkerSettings, failed_record, is_fatal
from infergy.run.sweep.process import (
    Abandoned,
    SweepError,
    WorkerGone,
    WorkerProcess,
    restart,
)
from infergy.run.sweep.ranks import FATAL_EXIT_CODE
from infergy.store import Store, StoreError
from infergy.store.lock import StoreLock
from infergy.store.quality import STEADY_CV


@dataclass
class Progress:
    """What the sweep reports as it goes; `on_update` is called after every change."""

    total: int
    done: int = 0  # measured in this run
    skipped: int = 0  # already in the store
    failed: int = 0
    oom: int = 0
    unsteady: int = 0  # measured, with repeats apart by more than STEADY_CV
    current: str = ""
    detail: str = ""
    point_times_s: list[float] = field(default_factory=list)  # each point's, its engine's
    # start left out: a vLLM start of minutes in the first point made the first ETA hours
    load_times_s: list[float] = field(default_factory=list)  # each engine start's
    loads_left: int = 0  # the engine starts the points left will need
    device: str = ""
    stopping: str = ""  # why the sweep is stopping, once it is
    stored: list[dict] = field(default_factory=list)  # each record stored: what, status,
    # energy_j, batch (a plain log prints them)
    notices: list[str] = field(default_factory=list)  # what a log should say (a new worker)

    @property
    def left(self) -> int:
        return self.total - self.done - self.skipped

    @property
    def eta_s(self) -> float | None:
        """The points left at the mean point's time, and the engine starts left at the mean
        start's."""
        if not self.point_times_s:
            return None
        starts = statistics.mean(self.load_times_s) * self.loads_left if self.load_times_s else 0
        return statistics.mean(self.point_times_s) * self.left + starts

    def eta_after(self, record: dict) -> float | None:
        """eta_s as a stored record (one of `stored`) leaves it: a record that ends its point
        is stored before the point counts as done, and that point is no longer left."""
        eta = self.eta_s
        if eta is None or not record.get("ends", True):
            return eta
        return max(0.0, eta - statistics.mean(self.point_times_s))


@dataclass
class SweepSummary:
    run_id: str | None
    device: str | None
    measured: int
    skipped: int
    failed: int
    oom: int
    interrupted: bool
    worker_restarts: int
    wall_s: float
    busy_s: float  # time inside measured points' repeats and warm-ups
    setup_s: float  # time loading, compiling, preparing
    unsteady: int = 0  # points whose repeats are apart by more than STEADY_CV
    total: int = 0  # points of the plan (this shard's)
    missing: int = 0  # of them neither in the store nor failed in this run
    failed_points: list[str] = field(default_factory=list)  # not in the store: failed here
    signal: str | None = None  # what stopped it: "SIGINT" or "SIGTERM"
    abandoned: str | None = None  # the point in flight, given up unstored
    store_error: str | None = None  # why the store could not be written: stopped there

    @property
    def complete(self) -> bool:
        """Every point of the plan is in the store, or failed in this run."""
        return not self.missing and not self.store_error


# Signals that stop a sweep at once: a scheduler's cancel, and a terminal or an ssh session
# gone (SIGHUP ended the parent without a word, its worker left running).
AT_ONCE = (signal.SIGTERM, signal.SIGHUP)


class Stop:
    """Ctrl-C, SIGTERM and SIGHUP, as they come: the first Ctrl-C stops after the current
    point, a second one, SIGTERM or SIGHUP at once (`abandon`)."""

    def __init__(self):
        self.signal: str | None = None
        self.count = 0
        self.abandon = False

    def __call__(self, signum, frame) -> None:  # the handler: nothing but flags
        self.count += 1
        if signum in AT_ONCE or self.signal is None:
            self.signal = signal.Signals(signum).name
        if signum in AT_ONCE or self.count > 1:
            self.abandon = True


RESUME_BY = ("card", "model")


def run_sweep(spec: SweepSpec, store: Store, *, device: str = "cuda", resume_by: str = "card",
              on_update: Callable[[Progress], None] | None = None) -> SweepSummary:
    """Measure every task of `spec` not yet in `store` for this device. `resume_by`: what
    counts as already measured: on this card ("card"), or on any card of its model
    ("model": one profile measured over several machines of one kind). StoreBusyError (a
    StoreError) where another sweep writes the store. The summary says whether every point
    of the plan is in the store (`complete`), what stopped the sweep (a signal, the store),
    and which points failed."""
    if resume_by not in RESUME_BY:
        raise SweepError(f"resume_by must be one of {', '.join(RESUME_BY)}, got {resume_by!r}")
    with StoreLock(store.path):
        return _run(spec, store, device, resume_by, on_update or (lambda p: None))


def _run(spec: SweepSpec, store: Store, device: str, resume_by: str,
         update: Callable[[Progress], None]) -> SweepSummary:
    tasks = spec.tasks()
    progress = Progress(total=len(tasks))
    settings = WorkerSettings(device=device, dtype=spec.dtype, seed=spec.seed,
                              idle_s=spec.idle_s, tp=spec.tp, ranks=spec.ranks)

    def on_progress(text: str) -> None:
        progress.detail = text
        update(progress)

    stop = Stop()

    def abandon() -> bool:
        """Polled while the worker works: says the stop asked for (once), and whether now."""
        if stop.count and not progress.stopping:
            progress.stopping = (f"{stop.signal}: stopping now" if stop.abandon else
                                 "stopping after this point (Ctrl-C again: now)")
            progress.notices.append(progress.stopping)
            update(progress)
        return stop.abandon

    def notice(text: str) -> None:
        progress.detail = text
        progress.notices.append(text)
        update(progress)

    def renew(gone: WorkerGone) -> bool:
        """A new worker for one that died (said), unless the sweep is stopping."""
        nonlocal restarts, worker
        if stop.count or stop.abandon:
            return False
        restarts += 1
        notice(f"{gone}: starting a new worker")
        worker = restart(worker, settings, on_progress, abandon)
        return True

    # Handlers only in the main thread (Python's rule): a sweep run in a thread is stopped
    # by its caller.
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, *AT_ONCE)} if main else {}
    start = time.perf_counter()
    restarts = 0
    busy = setup = 0.0
    run_id = abandoned = store_error = in_flight = None
    finished = False
    worker: WorkerProcess | None = None
    same: dict = {}
    outcome: dict[Task, str] = {}  # the tasks measured in this run: their last status

    def ask(kind: str, job: Job) -> dict:
        """The worker's reply to a job; a new worker asked where the last one said it was
        leaving (a fatal CUDA error, ranks out of step)."""
        nonlocal restarts, worker
        if worker.leaving:
            restarts += 1
            notice(f"the worker left ({worker.leaving}): starting a new one")
            worker = restart(worker, settings, on_progress, abandon)
        return worker.ask(kind, job)

    try:
        progress.detail = "starting the worker (measuring idle power)"
        update(progress)
        worker = WorkerProcess(settings, on_progress, abandon)
        progress.device = worker.device
        run_id = store.start_run(device=worker.device, meta=worker.meta, spec=spec.raw or None)
        same = {"gpu_name": gpu_name_of(worker.meta)} if resume_by == "model" else {}
        stored = [store.done(worker.device, task_key(t, spec), t.batch,
                             cap=spec.max_batch_cap, **same) for t in tasks]
        starts_left = starts_after([t for t, done in zip(tasks, stored, strict=True)
                                    if not done])
        running = None  # the start the engine runs for (plan.engine_start)
        for task, done in zip(tasks, stored, strict=True):
            if stop.count:
                break
            key = task_key(task, spec)
            if done:
                progress.skipped += 1
                update(progress)
                continue
            progress.loads_left = starts_left[progress.done]
            progress.current = task.describe()
            update(progress)
            t0 = time.perf_counter()
            # The engine's starts in this point: a load, or for a decoding of its own start
            # (vLLM's speculation, beam search) the first try's prepare, which starts it.
            starting = engine_start(task)
            started, fresh, running = [0.0], [starting != running], starting

            def save(record: dict, batch_requested, search: dict | None, key=key,
                     task=task, started=started, fresh=fresh) -> None:
                """Store one measured record now, in its own transaction."""
                nonlocal busy, setup
                store.add_point(run_id, progress.device, record,
                                engine_options=key["engine_options"],
                                batch_requested=batch_requested, batch_search=search)
                outcome[task] = record["status"]
                progress.failed += record["status"] == "failed"
                progress.oom += record["status"] == "oom"
                progress.unsteady += (record["status"] == "ok"
                                      and (record.get("energy_cv") or 0) > STEADY_CV)
                progress.stored.append({"what": task.describe(), "batch": record["point"][
                    "batch"], "status": record["status"], "energy_j": record.get("energy_j"),
                    "error": record.get("error"), "ends": _ends(record, batch_requested,
                                                                search)})
                busy += measuring_time(record)
                load_s = (record.get("load") or {}).get("time_s") or 0
                start_s = load_s or (_phase_time(record, "prepare") if fresh[0] else 0)
                fresh[0] = False
                if start_s:  # a start (an out-of-memory try's reload is one too)
                    started[0] += start_s
                    progress.load_times_s.append(start_s)
                setup += _phase_time(record, "prepare") + load_s
                update(progress)

            in_flight = task.describe()
            try:
                _measure_task(task, spec, store, ask, worker.device, key, save, same, renew)
            except WorkerGone as gone:
                if gone.exitcode == -signal.SIGTERM and not stop.count:
                    stop(signal.SIGTERM, None)  # the worker was sent SIGTERM too (a
                    # scheduler's cancel reaches every process of the job): a stop
                if stop.abandon:
                    abandoned = in_flight
                    break
                save(*_lost(task, spec, gone))
                in_flight = None
                renew(gone)
            in_flight = None
            progress.done += 1
            progress.point_times_s.append(time.perf_counter() - t0 - started[0])
            update(progress)
        finished = True
    except Abandoned:
        abandoned = in_flight
    except (StoreError, sqlite3.Error) as err:
        store_error = store_said(store, err)
    finally:
        try:  # our handlers stay while the worker stops: a second Ctrl-C kills it at once
            if worker is not None:
                worker.stop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if run_id is not None and store_error is None:
            try:
                store.end_run(run_id, "finished" if finished and not stop.count
                              else "interrupted")
            except (StoreError, sqlite3.Error) as err:
                store_error = store_said(store, err)
    failed, missing = [], len(tasks) - progress.skipped - len(outcome)
    if store_error is None and progress.device:  # what the store holds now, point by point
        try:
            failed, missing = _check(tasks, spec, store, progress.device, same, outcome)
        except (StoreError, sqlite3.Error) as err:
            store_error = store_said(store, err)
    return SweepSummary(run_id, progress.device or None, progress.done, progress.skipped,
                        progress.failed, progress.oom, bool(stop.count), restarts,
                        time.perf_counter() - start, busy, setup, progress.unsteady,
                        total=len(tasks), missing=missing, failed_points=failed,
                        signal=stop.signal, abandoned=abandoned, store_error=store_error)


def starts_after(tasks: list[Task]) -> list[int]:
    """For each of the tasks to measure, the engine starts the tasks after it will need
    (plan.engine_start), the tasks of one start coming together (an out-of-memory try's
    reload is not foreseen)."""
    starts = [engine_start(t) for t in tasks]
    changes = [a != b for a, b in itertools.pairwise(starts)]
    return list(itertools.accumulate(reversed(changes), initial=0))[::-1]


def _check(tasks: list[Task], spec: SweepSpec, store: Store, device: str, same: dict,
           outcome: dict[Task, str]) -> tuple[list[str], int]:
    """The points of the plan not in the store though tried in this run (failed: each
    described), and how many are not there at all (missing)."""
    failed, missing = [], 0
    for task in tasks:
        if store.done(device, task_key(task, spec), task.batch, cap=spec.max_batch_cap, **same):
            continue
        if task in outcome:
            failed.append(task.describe())
        else:
            missing += 1
    return failed, missing


def store_said(store: Store, err: Exception) -> str:
    """A store's failure to write, as the sweep says it (a StoreError names its store)."""
    if isinstance(err, StoreError):
        return str(err)
    return f"{store.path}: cannot be written ({err})"


def task_key(task: Task, spec: SweepSpec) -> dict:
    return {"model": task.model, "engine": task.engine.name,
            "engine_options": task.engine.options_key, "decoding": task.decoding,
            "dtype": spec.dtype, "tp": spec.tp, "input_tokens": task.input_tokens,
            "output_tokens": task.output_tokens}


def task_job(task: Task, spec: SweepSpec, batch: int) -> Job:
    return Job(Point(task.model, task.engine.name, batch, task.input_tokens,
                     task.output_tokens, task.decoding, tp=spec.tp, dtype=spec.dtype),
               task.engine.options_key, spec.repeats, spec.warmup, spec.cooldown,
               spec.min_window_s)


def _measure_task(task: Task, spec: SweepSpec, store: Store,
                  ask: Callable[[str, Job], dict], device: str, key: dict,
                  save: Callable[[dict, int | str, dict | None], None], same: dict,
                  renew: Callable[[WorkerGone], bool]) -> None:
    """Measure one task on `device` through `ask` (a worker's reply to a job), saving each
    record the moment it comes back: one point, or each try of a max-batch search (the last
    try carries the whole search). A worker killed by SIGKILL while it measures, as the
    kernel's out-of-memory killer ends a process that took the host's memory, is a batch out
    of memory (`killed`): a new worker (`renew`) goes on with the search, which a resumed
    sweep would otherwise start again at the batch that was killed."""
    def measure(batch: int) -> dict:
        job = task_job(task, spec, batch)
        try:
            return ask("measure", job)
        except WorkerGone as gone:
            if gone.exitcode != -signal.SIGKILL or not renew(gone):
                raise
            return failed_record(job, "oom", f"{gone}: {KILLED}")

    if task.batch != MAX:
        save(measure(task.batch), task.batch, None)
        return
    estimate = ask("estimate", task_job(task, spec, 1))
    cap = spec.max_batch_cap
    oom_before = [b for b in store.oom_batches(device, key, **same) if b <= cap]
    search = {"cap": cap, "estimate": estimate.get("batch"), "memory_model": estimate.get("how"),
              "earlier_oom": oom_before, "tried": []}
    if estimate.get("error"):
        search["estimate_error"] = estimate["error"]
    limit = min([cap, *(b - 1 for b in oom_before)])
    if estimate.get("batch") is not None:
        limit = min(limit, max(1, estimate["batch"]))
    batch = 1 << (limit.bit_length() - 1) if limit >= 1 else 0
    first = True
    while batch >= 1:
        record = measure(batch)
        if first and record.get("load") is None:
            record["load"] = estimate.get("load")  # the engine was loaded for the estimate
        first = False
        search["tried"].append({"batch": batch, "status": record["status"]})
        if record["status"] != "oom" or is_fatal(record.get("error")):
            # A fatal error ends the search (its out of memory may be the context's).
            search["found"] = batch if record["status"] == "ok" else None
            save(record, MAX, search)
            return
        save(record, MAX, dict(search, tried=list(search["tried"])))
        batch //= 2
    if not search["tried"]:  # nothing fits under earlier out-of-memory tries: say so
        save(_lost(task, spec, None, "no batch left to try: batch 1 ran out of memory "
                                     "earlier")[0], MAX, search)


KILLED = ("killed as the kernel's out-of-memory killer kills a process that took the host's "
          "memory: taken as out of memory at this batch")


def _ends(record: dict, batch_requested: int | str, search: dict | None) -> bool:
    """Does this stored record end its point? All but a B = max search's out-of-memory try
    that another try follows (_measure_task: the last try carries `found`; a try at batch 1,
    or a search with nothing to try, is the last)."""
    if batch_requested != MAX or not search or "found" in search or not search.get("tried"):
        return True
    return record["point"]["batch"] <= 1


def _lost(task: Task, spec: SweepSpec, gone: WorkerGone | None,
          why: str | None = None) -> tuple[dict, int | str, None]:
    """A failed record for a task with no result of its own (a lost worker, nothing to try)."""
    if gone is not None:
        fatal = " after a fatal CUDA error" if gone.exitcode == FATAL_EXIT_CODE else ""
        why = f"{gone}{fatal}"
    batch = task.batch if task.batch != MAX else 0
    return failed_record(task_job(task, spec, batch), "failed", why), task.batch, None


def _phase_time(record: dict, name: str) -> float:
    phase = record.get(name) or {}
    return phase.get("time_s") or 0.0


__all__ = ["Progress", "Stop", "SweepError", "SweepSummary", "measuring_time", "run_sweep",
           "store_said", "task_job", "task_key"]
