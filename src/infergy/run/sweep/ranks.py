"""Rank 0's handle on the other ranks of a sweep worker at TP > 1 (an engine of one process a
GPU): their processes and pipes, the jobs forwarded, their answers gathered and a watch over
them while rank 0 runs (the protocol is described in worker.py)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from typing import TYPE_CHECKING

from infergy.run.parallel import Ranks, exit_said, rank_env
from infergy.run.point import is_out_of_memory

if TYPE_CHECKING:
    from infergy.run.sweep.jobs import WorkerSettings

FATAL_EXIT_CODE = 3  # a worker whose CUDA context cannot be trusted exits with this
RANK_TIMEOUT_S = 600.0  # the ranks' process group: a last resort (see RANK_GRACE_S)


def exit_with_parent(then=None) -> None:
    """End this process (after `then()`) when its parent is gone, even while it waits in a
    collective with a rank that died (it would hold its GPU until the process group's
    timeout)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        if then is not None:
            then()
        os._exit(1)

    threading.Thread(target=watch, name="infergy-parent-watch", daemon=True).start()


def _told_status(why: str) -> str:
    """The status of a point whose rank's engine failed with `why`."""
    return "oom" if is_out_of_memory(RuntimeError(why)) else "failed"


def outcome(kind: str, reply: dict, edges: int) -> dict:
    """How a rank ended a job: its status, error and the window edges it met (an estimate's
    batch too)."""
    outcome = {"status": reply.get("status", "ok"), "error": reply.get("error"),
               "edges": edges}
    if kind == "estimate":
        outcome["batch"] = reply.get("batch")
    return outcome


class Replies:
    """The worker's messages to its parent, one at a time: rank 0's watch thread may answer
    for the worker while its main thread is stuck."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, *messages) -> bool:
        """Send `messages` in order; False where the parent is gone."""
        with self.lock:
            try:
                for message in messages:
                    self.conn.send(message)
            except (BrokenPipeError, OSError):
                return False
        return True

    def last(self, *messages, then) -> None:
        """Send `messages`, call `then` and exit this process, holding the lock throughout:
        nothing else is sent after them."""
        with self.lock:
            with contextlib.suppress(BrokenPipeError, OSError):
                for message in messages:
                    self.conn.send(message)
            then()
            os._exit(FATAL_EXIT_CODE)


class RankLost(Exception):
    """A follower died, failed on its own, or did not end a job: the ranks cannot go on."""


class Followers:
    """Rank 0's handle on the other ranks of a worker at TP > 1: their processes and pipes,
    the job forwarded, their answers gathered, and a watch over them while rank 0 runs."""

    def __init__(self, settings: WorkerSettings, port: int, follow):
        """Start ranks 1 .. N - 1, each running `follow(conn, settings, rank, env)`."""
        ctx = multiprocessing.get_context("spawn")
        self.size, self.device, self.grace_s = settings.ranks, settings.device, settings.grace_s
        self.conns, self.processes = [], []
        for rank in range(1, settings.ranks):
            mine, theirs = ctx.Pipe()
            # Not daemons: they are killed with the worker (its process group) or by it.
            process = ctx.Process(target=follow, name=f"infergy-rank-{rank}", daemon=False,
                                  args=(theirs, settings, rank,
                                        rank_env(rank, settings.ranks, port)))
            process.start()
            theirs.close()
            self.conns.append(mine)
            self.processes.append(process)
        self.answers: dict[int, dict] = {}  # rank -> the current job's outcome
        self.failing: dict[int, tuple[float, str]] = {}  # rank -> when its engine failed, why

    def name(self, rank: int) -> str:
        return f"TP rank {rank} of {self.size}"

    def meet(self, meter, on_lost):
        """Rank 0's Ranks, once every follower has met it (`on_lost(why, status)` if one
        cannot), attached to `meter`."""
        with self.watching(on_lost):
            ranks = Ranks(self.device, self.size, timeout_s=RANK_TIMEOUT_S)
        ranks.attach(meter)
        return ranks

    def own_failure(self, err: BaseException) -> None:
        """Rank 0's engine failed (told by its `Telling` engine)."""
        self.failing.setdefault(0, (time.monotonic(), f"{type(err).__name__}: {err}"))

    def forward(self, kind: str, job) -> None:
        """Send a job to every follower; RankLost where one is gone."""
        self.answers, self.failing = {}, {}
        for rank, conn in enumerate(self.conns, 1):
            try:
                conn.send((kind, job))
            except (BrokenPipeError, OSError):
                raise RankLost(self._gone(rank)) from None

    @contextlib.contextmanager
    def watching(self, on_lost):
        """While rank 0 runs: a thread that reads the followers' answers and calls
        `on_lost(why, status)` (which does not return) when one dies or reports an error of
        its own, or when a rank's engine failed and rank 0 is still inside the job
        `grace_s` later (the others wait in a collective that will never come, or at an
        edge): status "oom" where that failure was an out of memory, else "failed"."""
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.2):
                try:
                    self._read()
                except RankLost as lost:
                    on_lost(str(lost), "failed")
                failing = dict(self.failing)  # rank 0's own may be added meanwhile
                if failing:
                    rank, (since, why) = min(failing.items(), key=lambda f: f[1][0])
                    if time.monotonic() - since > self.grace_s:
                        on_lost(f"{self.name(rank)}: {why} (the other ranks did not end the "
                                f"point with it within {self.grace_s:.0f} s: out of step)",
                                _told_status(why))

        thread = threading.Thread(target=watch, name="infergy-ranks-watch", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def gather(self) -> list[dict]:
        """Every follower's outcome of the job rank 0 has just ended, in rank order;
        RankLost where one dies, errs or does not end it within `grace_s`."""
        deadline = time.monotonic() + self.grace_s
        while len(self.answers) < len(self.conns):
            self._read()
            if time.monotonic() > deadline:
                waiting = min(set(range(1, self.size)) - set(self.answers))
                raise RankLost(f"{self.name(waiting)} did not end the point within "
                                f"{self.grace_s:.0f} s of rank 0: the ranks are out of step")
            time.sleep(0.01)
        return [self.answers[r] for r in range(1, self.size)]

    def _read(self) -> None:
        """Take the answers that have come; RankLost where a follower erred or died."""
        for rank, (conn, process) in enumerate(zip(self.conns, self.processes, strict=True),
                                               1):
            while rank not in self.answers and conn.poll():
                try:
                    kind, body = conn.recv()
                except (EOFError, OSError):
                    raise RankLost(self._gone(rank)) from None
                if kind == "error":
                    raise RankLost(f"{self.name(rank)}: {body}")
                if kind == "failing":
                    self.failing.setdefault(rank, (time.monotonic(), body))
                    continue
                self.answers[rank] = body
            if rank not in self.answers and not process.is_alive():
                raise RankLost(self._gone(rank))

    def known(self, own: dict | None = None) -> list[dict]:
        """Every rank's answer of the current job as far as it is known, in the shape of a
        point's `ranks`: rank 0's `own` and the followers' answers where given, else the
        failure a rank's engine told (no edges counted), else nothing (status None)."""
        answers, failing = dict(self.answers), dict(self.failing)  # the watch may add
        known = []
        for rank in range(self.size):
            answer = own if rank == 0 else answers.get(rank)
            if answer is None and rank in failing:
                why = failing[rank][1]
                answer = {"status": _told_status(why), "error": why, "edges": None}
            known.append({"rank": rank, **(answer or {"status": None, "error": None,
                                                         "edges": None})})
        return known

    def _gone(self, rank: int) -> str:
        process = self.processes[rank - 1]
        process.join(1)
        return f"{self.name(rank)} died ({exit_said(process.exitcode)})"

    def stop(self, ranks) -> None:
        """End the followers: with `ranks` (all in step), together, leaving the process group
        as one; without, killed."""
        if ranks is not None and all(p.is_alive() for p in self.processes):
            for conn in self.conns:
                with contextlib.suppress(BrokenPipeError, OSError):
                    conn.send(("stop", None))
            with contextlib.suppress(Exception):  # a follower lost on the way: killed below
                ranks.close()
            for process in self.processes:
                process.join(10)
        self.kill()

    def kill(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join(5)
