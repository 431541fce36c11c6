"""Run a sweep: every task of a spec, through a worker process, into a results store.

The parent owns the store and the schedule; the worker (worker.py) owns the GPU. Each point is
recorded the moment it comes back, in one transaction. A point this device already measured
is skipped, so a killed sweep resumes where it stopped. Out of memory is recorded and the
sweep goes on; a worker that dies, meets a fatal CUDA error or says it is leaving (its
tensor-parallel ranks out of step: worker.py) is replaced; Ctrl-C ends the sweep after the
current point (a second Ctrl-C stops the worker at once).

Batch size "max": the worker's engine estimates the largest batch that fits (its memory
model); the runner measures the largest power of two at or under that estimate and the cap,
and halves it after each out-of-memory until a batch runs. Every try is recorded with the
search that led to it (`batch_search`), and a resumed search starts under the smallest batch
that already ran out of memory.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from infergy.models import get_model
from infergy.models.flops import decode_bytes, prefill_flops
from infergy.plan.point import Point
from infergy.plan.spec import MAX, SweepSpec, Task
from infergy.provenance import gpu_name_of
from infergy.run.parallel import exit_said
from infergy.run.sweep.jobs import Job, WorkerSettings, failed_record, is_fatal
from infergy.run.sweep.ranks import FATAL_EXIT_CODE
from infergy.run.sweep.worker import main as worker_main
from infergy.store import Store
from infergy.store.quality import STEADY_CV

WORKER_START_TIMEOUT_S = 600.0  # importing torch, opening NVML, measuring idle
POINT_TIMEOUT_S = 3600.0  # one point (load, compile, warm-up, repeats) at most


class SweepError(RuntimeError):
    """The sweep cannot go on (the worker cannot start); the message says why."""


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
    point_times_s: list[float] = field(default_factory=list)
    device: str = ""
    stopping: bool = False

    @property
    def left(self) -> int:
        return self.total - self.done - self.skipped

    @property
    def eta_s(self) -> float | None:
        if not self.point_times_s:
            return None
        return statistics.mean(self.point_times_s) * self.left


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


class _WorkerGone(Exception):
    def __init__(self, exitcode):
        super().__init__(f"the worker process died ({exit_said(exitcode)})")
        self.exitcode = exitcode


class _WorkerProcess:
    """The parent's handle on one worker process."""

    def __init__(self, settings: WorkerSettings, on_progress: Callable[[str], None]):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        # Not a daemon: engines start processes of their own (vLLM's engine core). The
        # worker exits when this process is gone (its pipe closes), and is killed on exit.
        self.process = ctx.Process(target=worker_main, args=(child, settings), daemon=False,
                                   name="infergy-worker")
        self.process.start()
        child.close()
        self.on_progress = on_progress
        self.leaving: str | None = None  # why the worker exits after its last reply
        try:
            kind, body = self._wait(WORKER_START_TIMEOUT_S)
        except _WorkerGone as gone:
            raise SweepError(f"the worker process did not start: {gone} (run from a script? "
                             f"start the sweep under `if __name__ == \"__main__\":`, as "
                             f"multiprocessing needs)") from None
        if kind != "ready":
            self.kill()
            raise SweepError(f"the worker could not start: {body}")
        self.device, self.meta = body["device"], body["meta"]

    def _wait(self, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.conn.poll(0.2):
                try:
                    kind, body = self.conn.recv()
                except (EOFError, OSError):
                    self.process.join(5)
                    raise _WorkerGone(self.process.exitcode) from None
                if kind == "progress":
                    self.on_progress(body)
                    continue
                if kind == "leaving":  # its reply follows
                    self.leaving = body
                    continue
                return kind, body
            if not self.process.is_alive():
                raise _WorkerGone(self.process.exitcode)
        self.kill()
        raise _WorkerGone(f"no answer in {timeout_s:.0f} s; killed")

    def ask(self, kind: str, job: Job) -> dict:
        try:
            self.conn.send((kind, job))
        except (BrokenPipeError, OSError):
            self.process.join(5)
            raise _WorkerGone(self.process.exitcode) from None
        _reply_kind, body = self._wait(POINT_TIMEOUT_S)
        return body

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self.conn.send(("stop", None))
            self.process.join(30)
        self.kill()

    def kill(self) -> None:
        """Kill the worker and every process it started (vLLM's engine core outlives its
        parent otherwise and keeps the GPU's memory): the worker leads its process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.join(5)


RESUME_BY = ("card", "model")


def run_sweep(spec: SweepSpec, store: Store, *, device: str = "cuda", resume_by: str = "card",
              on_update: Callable[[Progress], None] | None = None) -> SweepSummary:
    """Measure every task of `spec` not yet in `store` for this device. `resume_by`: what
    counts as already measured: on this card ("card"), or on any card of its model
    ("model": one profile measured over several machines of one kind)."""
    if resume_by not in RESUME_BY:
        raise SweepError(f"resume_by must be one of {', '.join(RESUME_BY)}, got {resume_by!r}")
    tasks = spec.tasks()
    progress = Progress(total=len(tasks))
    update = on_update or (lambda p: None)
    settings = WorkerSettings(device=device, dtype=spec.dtype, seed=spec.seed,
                              idle_s=spec.idle_s, tp=spec.tp, ranks=spec.ranks)

    def on_progress(text: str) -> None:
        progress.detail = text
        update(progress)

    interrupted = {"count": 0}
    state = {"worker": None}

    def on_sigint(signum, frame):
        interrupted["count"] += 1
        progress.stopping = True
        update(progress)
        if interrupted["count"] > 1 and state["worker"] is not None:
            state["worker"].kill()

    previous = signal.signal(signal.SIGINT, on_sigint)
    start = time.perf_counter()
    restarts = 0
    busy = setup = 0.0
    run_id = None

    def ask(kind: str, job: Job) -> dict:
        """The worker's reply to a job; a new worker asked where the last one said it was
        leaving (a fatal CUDA error, ranks out of step)."""
        nonlocal restarts
        if state["worker"].leaving:
            restarts += 1
            progress.detail = f"the worker left ({state['worker'].leaving}): starting a new one"
            update(progress)
            state["worker"] = _restart(state["worker"], settings, on_progress)
        return state["worker"].ask(kind, job)

    try:
        progress.detail = "starting the worker (measuring idle power)"
        update(progress)
        worker = state["worker"] = _WorkerProcess(settings, on_progress)
        progress.device = worker.device
        run_id = store.start_run(device=worker.device, meta=worker.meta, spec=spec.raw or None)
        same = {"gpu_name": gpu_name_of(worker.meta)} if resume_by == "model" else {}
        if spec.shard[1] > 1:  # a share of what is left: shards of a resumed sweep stay even
            tasks = spec.tasks(done=lambda t: store.done(worker.device, _key(t, spec), t.batch,
                                                         **same))
            progress.total = len(tasks)
            update(progress)
        for task in tasks:
            if interrupted["count"]:
                break
            key = _key(task, spec)
            if store.done(worker.device, key, task.batch, **same):
                progress.skipped += 1
                update(progress)
                continue
            progress.current = task.describe()
            update(progress)
            t0 = time.perf_counter()

            def save(record: dict, batch_requested, search: dict | None, key=key) -> None:
                """Store one measured record now, in its own transaction."""
                nonlocal busy, setup
                store.add_point(run_id, progress.device, record,
                                engine_options=key["engine_options"],
                                batch_requested=batch_requested, batch_search=search)
                progress.failed += record["status"] == "failed"
                progress.oom += record["status"] == "oom"
                progress.unsteady += (record["status"] == "ok"
                                      and (record.get("energy_cv") or 0) > STEADY_CV)
                busy += measuring_time(record)
                setup += _phase_time(record, "prepare") + ((record.get("load") or {}).get(
                    "time_s") or 0)

            try:
                _measure_task(task, spec, store, ask, worker.device, key, save, same)
            except _WorkerGone as gone:
                save(*_lost(task, spec, gone))
                if not interrupted["count"]:
                    restarts += 1
                    progress.detail = f"{gone}: starting a new worker"
                    update(progress)
                    state["worker"] = _restart(state["worker"], settings, on_progress)
            progress.done += 1
            progress.point_times_s.append(time.perf_counter() - t0)
            update(progress)
    finally:
        try:  # our handler stays while the worker stops: a second Ctrl-C kills it at once
            if state["worker"] is not None:
                state["worker"].stop()
        finally:
            signal.signal(signal.SIGINT, previous)
            if run_id is not None:
                store.end_run(run_id, "interrupted" if interrupted["count"] else "finished")
    return SweepSummary(run_id, progress.device or None, progress.done, progress.skipped,
                        progress.failed, progress.oom, bool(interrupted["count"]), restarts,
                        time.perf_counter() - start, busy, setup, progress.unsteady)


def _restart(worker: _WorkerProcess, settings, on_progress) -> _WorkerProcess:
    worker.kill()
    new = _WorkerProcess(settings, on_progress)
    if new.device != worker.device:
        raise SweepError(f"the new worker sees device {new.device}, not {worker.device}")
    return new


def _key(task: Task, spec: SweepSpec) -> dict:
    return {"model": task.model, "engine": task.engine.name,
            "engine_options": task.engine.options_key, "decoding": task.decoding,
            "dtype": spec.dtype, "tp": spec.tp, "input_tokens": task.input_tokens,
            "output_tokens": task.output_tokens}


def _job(task: Task, spec: SweepSpec, batch: int) -> Job:
    return Job(Point(task.model, task.engine.name, batch, task.input_tokens,
                     task.output_tokens, task.decoding, tp=spec.tp, dtype=spec.dtype),
               task.engine.options_key, spec.repeats, spec.warmup, spec.cooldown,
               spec.min_window_s)


def _measure_task(task: Task, spec: SweepSpec, store: Store,
                  ask: Callable[[str, Job], dict], device: str, key: dict,
                  save: Callable[[dict, int | str, dict | None], None], same: dict) -> None:
    """Measure one task on `device` through `ask` (a worker's reply to a job), saving each
    record the moment it comes back: one point, or each try of a max-batch search (the last
    try carries the whole search)."""
    if task.batch != MAX:
        save(ask("measure", _job(task, spec, task.batch)), task.batch, None)
        return
    estimate = ask("estimate", _job(task, spec, 1))
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
        record = ask("measure", _job(task, spec, batch))
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


def _lost(task: Task, spec: SweepSpec, gone: _WorkerGone | None,
          why: str | None = None) -> tuple[dict, int | str, None]:
    """A failed record for a task with no result of its own (a lost worker, nothing to try)."""
    if gone is not None:
        fatal = " after a fatal CUDA error" if gone.exitcode == FATAL_EXIT_CODE else ""
        why = f"{gone}{fatal}"
    batch = task.batch if task.batch != MAX else 0
    return failed_record(_job(task, spec, batch), "failed", why), task.batch, None


def _phase_time(record: dict, name: str) -> float:
    phase = record.get(name) or {}
    return phase.get("time_s") or 0.0


def measuring_time(record: dict) -> float:
    """Seconds a point spent in its warm-up, its 1-token prefill run and its repeats (points
    measured before the prefill run was shared had one such run per repeat), every run of a
    window that held several (min_window_s) counted."""
    def window_s(phase: dict) -> float:
        return phase["time_s"] * phase.get("runs", 1)

    repeats = record.get("repeats", [])
    prefills = {window_s(r["prefill"]) for r in repeats
                if r["prefill"]["method"] == "separate run"}
    return (_phase_time(record, "warmup") + sum(prefills)
            + sum(window_s(r["request"]) for r in repeats))


def describe_plan(spec: SweepSpec, store: Store | None = None, device: str | None = None,
                  gpu_name: str | None = None) -> list[dict]:
    """The dry run: every task, whether `device` (or, with `gpu_name`, any card of that
    model) already measured it in `store`, and a rough time for its warm-up and repeats
    (without loading, compiling or cooling down): the analytic FLOPs and bytes at half a
    nominal H100's peak (0.5 PFLOP/s, 2.3 TB/s, B = max taken as 64), scaled by what the
    store's points of the same engine, batch size and (where it has some) input length took
    against the same formula."""
    def measured(task: Task) -> bool:
        return bool(store and (device or gpu_name) and store.done(
            device or "", _key(task, spec), task.batch, gpu_name=gpu_name))

    plan = []  # a shard plans its share of what is left, as its sweep will
    for task in spec.tasks(done=measured if spec.shard[1] > 1 else None):
        model = get_model(task.model)
        batch = task.batch if task.batch != MAX else min(spec.max_batch_cap, 64)
        run_s = (prefill_flops(model, task.input_tokens, batch) / 0.5e15
                 + task.output_tokens * decode_bytes(
                     model, task.input_tokens + task.output_tokens // 2, batch) / 2.3e12)
        separate_prefill = task.engine.name not in ("hf-eager", "hf-compiled")
        # A window lasts at least min_window_s (a short run repeated in it).
        estimate_s = ((spec.warmup + separate_prefill) * run_s
                      + spec.repeats * max(run_s, spec.min_window_s))
        key = _key(task, spec)
        done = measured(task)
        took = None
        if done:
            rows = store.points(**key, batch_requested=str(task.batch), status="ok")
            took = measuring_time(json.loads(rows[-1]["result"])) if rows else None
        plan.append({"task": task, "done": done, "estimate_s": estimate_s, "took_s": took})
    # Calibrate the formula by the points already measured: per (engine, batch size, input
    # length) where some are, else per (engine, batch size). B = max varies with the lengths
    # (1,024 at short inputs, 64 at 2,048 on an H100) while the formula takes 64 throughout.
    def scales_by(group: Callable[[Task], tuple]) -> dict[tuple, float | None]:
        rows_of: dict[tuple, list[dict]] = {}
        for row in plan:
            rows_of.setdefault(group(row["task"]), []).append(row)
        scales = {}
        for k, rows in rows_of.items():
            known = [r for r in rows if r["took_s"]]
            scales[k] = (sum(r["took_s"] for r in known) / sum(r["estimate_s"] for r in known)
                         if known else None)
        return scales

    fine = scales_by(lambda t: (t.engine.label, t.batch, t.input_tokens))
    coarse = scales_by(lambda t: (t.engine.label, t.batch))
    for row in plan:
        t = row["task"]
        row["scale"] = (fine[(t.engine.label, t.batch, t.input_tokens)]
                        or coarse[(t.engine.label, t.batch)])
        if row["scale"]:
            row["estimate_s"] *= row["scale"]
    return plan


__all__ = ["Progress", "SweepError", "SweepSummary", "describe_plan", "run_sweep"]
