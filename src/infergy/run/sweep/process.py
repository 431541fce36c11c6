"""The sweep's parent's handle on its worker process (worker.py): started, sent jobs, waited
for (watching for a stop asked for meanwhile), stopped or killed with every process it
started."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable

from infergy.run.parallel import exit_said
from infergy.run.sweep.jobs import Job, WorkerSettings
from infergy.run.sweep.worker import main as worker_main

WORKER_START_TIMEOUT_S = 600.0  # importing torch, opening NVML, measuring idle
POINT_TIMEOUT_S = 3600.0  # one point (load, compile, warm-up, repeats) at most
POLL_S = 0.2  # how often the parent looks at its worker (and at a stop asked for)


class SweepError(RuntimeError):
    """The sweep cannot go on (the worker cannot start); the message says why."""


class WorkerGone(Exception):
    """The worker died (`exitcode`: its exit status), or was killed for not answering
    (`why`: in words; `exitcode` then None)."""

    def __init__(self, exitcode: int | None, why: str | None = None):
        super().__init__(f"the worker process {why}" if why else
                         f"the worker process died ({exit_said(exitcode)})")
        self.exitcode = exitcode


class Abandoned(Exception):
    """The sweep was asked to stop now: the worker is killed, its point not stored."""


class WorkerProcess:
    """The parent's handle on one worker process. `abandon()` is asked while it waits:
    true, it kills the worker and raises Abandoned."""

    def __init__(self, settings: WorkerSettings, on_progress: Callable[[str], None],
                 abandon: Callable[[], bool] = lambda: False):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        # Not a daemon: engines start processes of their own (vLLM's engine core). The
        # worker exits when this process is gone (its pipe closes), and is killed on exit.
        self.process = ctx.Process(target=worker_main, args=(child, settings), daemon=False,
                                   name="infergy-worker")
        self.process.start()
        child.close()
        self.on_progress = on_progress
        self.abandon = abandon
        self.leaving: str | None = None  # why the worker exits after its last reply
        try:
            kind, body = self._wait(WORKER_START_TIMEOUT_S)
        except WorkerGone as gone:
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
            if self.abandon():
                self.kill()
                raise Abandoned()
            if self.conn.poll(POLL_S):
                try:
                    kind, body = self.conn.recv()
                except (EOFError, OSError):
                    self.process.join(5)
                    raise WorkerGone(self.process.exitcode) from None
                if kind == "progress":
                    self.on_progress(body)
                    continue
                if kind == "leaving":  # its reply follows
                    self.leaving = body
                    continue
                return kind, body
            if not self.process.is_alive():
                raise WorkerGone(self.process.exitcode)
        self.kill()
        raise WorkerGone(None, f"gave no answer in {timeout_s:.0f} s and was killed")

    def ask(self, kind: str, job: Job) -> dict:
        try:
            self.conn.send((kind, job))
        except (BrokenPipeError, OSError):
            self.process.join(5)
            raise WorkerGone(self.process.exitcode) from None
        _reply_kind, body = self._wait(POINT_TIMEOUT_S)
        return body

    def stop(self) -> None:
        """Ask the worker to leave, waiting up to 30 s (less where a stop is abandoned),
        then kill what is left of it."""
        if self.process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self.conn.send(("stop", None))
            deadline = time.monotonic() + 30
            while (self.process.is_alive() and time.monotonic() < deadline
                   and not self.abandon()):
                self.process.join(POLL_S)
        self.kill()

    def kill(self) -> None:
        """Kill the worker and every process it started (vLLM's engine core outlives its
        parent otherwise and keeps the GPU's memory): the worker leads its process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.is_alive():  # killed before it led a group of its own
            self.process.kill()
        self.process.join(5)


def restart(worker: WorkerProcess, settings: WorkerSettings, on_progress: Callable[[str], None],
            abandon: Callable[[], bool] = lambda: False) -> WorkerProcess:
    """A new worker in place of `worker` (killed), on the same device."""
    worker.kill()
    new = WorkerProcess(settings, on_progress, abandon)
    if new.device != worker.device:
        raise SweepError(f"the new worker sees device {new.device}, not {worker.device}")
    return new
