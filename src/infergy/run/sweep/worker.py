"""The sweep's worker: a process of its own that holds the meter and the loaded engine and
measures the points it is sent, one at a time.

It runs apart from the sweep's parent so that a fatal CUDA error (which leaves the CUDA
context unusable) or a crash costs only the worker: the parent records the point as failed,
starts a new worker and goes on. The worker ignores Ctrl-C (the parent decides when to stop)
and exits when the parent is gone; SIGTERM ends it (a scheduler's cancel sent to every
process: the parent, seeing its worker so ended, stops the sweep rather than replace it).

Tensor parallelism with an engine that runs as one process a GPU (hf-eager, split by
transformers' own plan): the worker is rank 0 of N. Once it has measured the idle power
(no other rank exists yet, so none has touched a GPU), it starts N - 1 followers (`follow`,
the same `JobRunner` code (jobs.py), rank r on the r-th visible GPU), they meet
(torch.distributed), and every window edge of every rank waits for all of them. Each job
the parent sends is forwarded to the followers over pipes of their own, so every rank runs
the same load, windows and generation; rank 0 alone measures energy and replies (and cools
its GPUs down before it forwards a job: followers sent one would wait for it at a window's
edge, on NCCL a collective that keeps their GPUs busy). Each
follower answers with its status and the window edges it met (kept in the point as
`ranks`), and rank 0 agrees the status: out of memory where any rank ran out, failed where
any failed, so a batch-size search reads one answer. Ranks that ended a point differently
(another status, another count of edges) may be out of step in the model's collectives:
the worker then says it is leaving, replies and exits, and the parent starts a new one
before its next job. A follower that dies, or fails while rank 0 is still inside the model
(where it would wait forever on a collective), is seen by rank 0's watch thread, which
replies for it with the follower's error, ends every rank and exits: no process waits on a
lost rank. vLLM starts its own processes: a sweep does not mix it with hf-eager at TP > 1.

Messages, as (kind, body) tuples over multiprocessing Pipes:
    parent -> worker: ("measure", Job), ("estimate", Job), ("stop", None)
    worker -> parent: ("ready", {"device", "meta"}), ("error", text), ("progress", text),
                      ("leaving", why) just before its last reply, ("result", {...}),
                      ("estimate", {...})
    rank 0 -> follower: the parent's messages, forwarded
    follower -> rank 0: ("done", {"status", "error", "edges"[, "batch"]}), ("error", text),
                        ("failing", text) the moment its engine fails (before the window's
                        edge, which waits for the other ranks)
"""

from __future__ import annotations

import contextlib
import os
import signal

from infergy import provenance
from infergy.meter import nvml
from infergy.provenance import device_identity, run_metadata
from infergy.run.parallel import free_port, rank_env, run_meter
from infergy.run.session import Session
from infergy.run.sweep.jobs import JobRunner, WorkerSettings
from infergy.run.sweep.ranks import (
    FATAL_EXIT_CODE,
    RANK_TIMEOUT_S,
    Followers,
    Replies,
    exit_with_parent,
    outcome,
)


def local_device(tp: int = 1, device: str = "auto") -> str:
    """This machine's device identity as a worker of a sweep at `tp` on `device` (auto,
    cuda or cpu) would see it, without starting one: "cpu:HOST" where it measures no GPU."""
    if device != "cpu" and nvml.nvml_init() is None:
        try:
            gpus, _, _ = nvml.nvml_gpus(limit=tp)
            meta = {"gpus": [g.info.details for g in gpus]}
        finally:
            nvml.nvml_shutdown()
    else:
        meta = {"gpus": []}
    return device_identity({**meta, "host": provenance.host()})


def main(conn, settings: WorkerSettings) -> None:
    """The worker's loop (the target of its process): rank 0 where it runs several."""
    # Out of the terminal's process group: Ctrl-C (or `timeout -s INT`) reaches the parent,
    # which decides when to stop, and not the processes an engine starts (vLLM's engine core
    # aborted its requests on it, on an H100, mid-point) nor this worker's followers.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = Replies(conn)
    port = None
    if settings.ranks > 1:  # before torch is imported: its threads are the rank's share
        port = free_port()
        os.environ.update(rank_env(0, settings.ranks, port))
    followers = ranks = None

    def orphaned() -> None:
        """The sweep is gone (killed, its terminal closed): its followers, then this
        process's group (an engine's own processes, vLLM's engine core) end with it, rather
        than measure beside the sweep that resumes on the same GPU."""
        if followers is not None:
            followers.kill()
        os.killpg(os.getpgrp(), signal.SIGKILL)
    exit_with_parent(then=orphaned)  # even while stuck with lost ranks
    try:
        # A CPU sweep measures no GPU: its points must not be stored as a GPU's.
        meter = run_meter(settings.device, settings.tp, settings.idle_s,
                          0 if settings.ranks > 1 else None)
        meta = run_metadata(meter)
        if settings.ranks > 1:  # after the idle power: no other rank has touched a GPU
            followers = Followers(settings, port, follow)
            ranks = followers.meet(meter, lambda why, status: replies.last(
                ("error", f"the ranks could not meet: {why}"), then=followers.kill))
    except Exception as err:
        if followers is not None:
            followers.kill()
        replies.send(("error", f"{type(err).__name__}: {err}"))
        return
    replies.send(("ready", {"device": device_identity(meta), "meta": meta}))
    # Where there are several ranks: told each failure of the engine as it happens
    session = Session(meter, ranks, followers.own_failure if followers is not None else None)
    worker = JobRunner(replies, settings, session, followers=followers)
    try:
        while True:
            try:
                kind, body = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                break
            if kind == "stop":
                break
            try:
                reply = worker.handle(kind, body)
            except Exception as err:  # a bug: the followers may be mid-job, not at a barrier
                worker.leaving = f"{type(err).__name__}: {err}"  # so they are killed below
                raise
            leaving = worker.leaving
            if leaving:  # said first: the parent starts a new worker before its next job
                replies.send(("leaving", leaving))
            if not replies.send((kind, reply)) or leaving:
                break
    finally:
        session.close(ranks=False)  # rank 0 leaves the ranks with its followers
        if followers is not None:
            followers.stop(None if worker.leaving else ranks)
    if worker.poisoned:
        raise SystemExit(FATAL_EXIT_CODE)


def follow(conn, settings: WorkerSettings, rank: int, env: dict) -> None:
    """A follower's loop (the target of its process): rank `rank` of a worker's ranks, running
    every job rank 0 forwards, measuring nothing and answering with how it ended."""
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent()

    def tell(err: BaseException) -> None:  # before the edge that would wait for the others
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("failing", f"{type(err).__name__}: {err}"))

    try:  # a rank of the worker's `ranks` processes, measuring nothing
        session = Session.open(settings.device, settings.ranks, 0, rank,
                               timeout_s=RANK_TIMEOUT_S, tell=tell)
    except Exception as err:
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("error", f"{type(err).__name__}: {err}"))
        raise SystemExit(1) from None
    ranks = session.ranks
    worker = JobRunner(None, settings, session)
    stopped = False
    try:
        while True:
            try:
                kind, job = conn.recv()
            except (EOFError, OSError):  # rank 0 is gone
                break
            if kind == "stop":
                stopped = True
                break
            edges = ranks.edges
            reply = worker.measure(job) if kind == "measure" else worker.estimate(job)
            conn.send(("done", outcome(kind, reply, ranks.edges - edges)))
            if worker.poisoned:
                break
    except Exception as err:  # a bug, not a point's failure (those are answers): said, ended
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("error", f"{type(err).__name__}: {err}"))
        raise SystemExit(1) from None
    finally:
        session.close(ranks=False)
    if stopped:  # every rank leaves together, after its meter's last edge
        ranks.close()
    if worker.poisoned:
        raise SystemExit(FATAL_EXIT_CODE)
