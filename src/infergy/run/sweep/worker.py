"""The sweep's worker: a process of its own that holds the meter and the loaded engine and
measures the points it is sent, one at a time.

It runs apart from the sweep's parent so that a fatal CUDA error (which leaves the CUDA
context unusable) or a crash costs only the worker: the parent records the point as failed,
starts a new worker and goes on. The worker ignores Ctrl-C (the parent decides when to stop)
and exits when the parent is gone.

Tensor parallelism with an engine that runs as one process a GPU (hf-eager, split by
transformers' own plan): the worker is rank 0 of N. Once it has measured the idle power
(no other rank exists yet, so none has touched a GPU), it starts N - 1 followers (`follow`,
this module's same `_Worker` code, rank r on the r-th visible GPU), they meet
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
import dataclasses
import os
import signal
import time
from dataclasses import dataclass

from infergy import provenance
from infergy.engines.decoding import Decoding
from infergy.meter import nvml
from infergy.plan.point import Point
from infergy.plan.spec import Cooldown, EngineChoice, point_text
from infergy.provenance import device_identity, run_metadata
from infergy.run.parallel import (
    RANK_GRACE_S,
    Ranks,
    free_port,
    rank_env,
    run_meter,
)
from infergy.run.point import PointResult, is_out_of_memory
from infergy.run.session import Session
from infergy.run.sweep.ranks import (
    FATAL_EXIT_CODE,
    RANK_TIMEOUT_S,
    Followers,
    RankLost,
    Replies,
    exit_with_parent,
    outcome,
)

# Messages of errors after which a CUDA context cannot be trusted: the worker exits.
FATAL_MARKERS = ("CUDA error", "illegal memory access", "device-side assert",
                 "unspecified launch failure", "CUBLAS_STATUS_EXECUTION_FAILED",
                 "NCCL error", "cudaErrorLaunchFailure")


class EngineLoadError(RuntimeError):
    """The engine of a group could not be loaded; its other points are not tried again."""


@dataclass(frozen=True)
class Job:
    model: str
    engine: EngineChoice
    decoding: str
    batch: int
    input_tokens: int
    output_tokens: int
    repeats: int = 3
    warmup: int = 1
    cooldown: Cooldown | None = None
    tp: int = 1  # GPUs the model is split over
    min_window_s: float = 0.0  # a shorter run is repeated in each window (measure_point)


@dataclass(frozen=True)
class WorkerSettings:
    device: str  # "cuda" or "cpu"
    dtype: str = "bfloat16"
    seed: int = 0
    idle_s: float = 5.0
    tp: int = 1  # the sweep's tensor parallelism: the first `tp` GPUs used and measured
    ranks: int = 1  # processes running each point: `tp` for an engine of one process a GPU
    # (transformers' plan), else 1 (vLLM starts its own)
    grace_s: float = RANK_GRACE_S  # ranks ending a point this far apart are out of step


def is_fatal(error: str | None) -> bool:
    return bool(error) and any(marker in error for marker in FATAL_MARKERS)


def local_device(tp: int = 1) -> str:
    """This machine's device identity as a worker of a sweep at `tp` would see it, without
    starting one."""
    if nvml.nvml_init() is None:
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
    try:
        # A CPU sweep measures no GPU: its points must not be stored as a GPU's.
        meter = run_meter(settings.device, settings.tp, settings.idle_s,
                          0 if settings.ranks > 1 else None)
        meta = run_metadata(meter)
        if settings.ranks > 1:  # after the idle power: no other rank has touched a GPU
            followers = Followers(settings, port, follow)
            exit_with_parent(then=followers.kill)  # even while stuck with lost ranks
            ranks = followers.meet(meter, lambda why, status: replies.last(
                ("error", f"the ranks could not meet: {why}"), then=followers.kill))
    except Exception as err:
        if followers is not None:
            followers.kill()
        replies.send(("error", f"{type(err).__name__}: {err}"))
        return
    replies.send(("ready", {"device": device_identity(meta), "meta": meta}))
    worker = _Worker(replies, settings, meter, ranks=ranks, followers=followers)
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
        worker.drop_engine()
        meter.close()
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
    try:
        meter = run_meter(settings.device, settings.tp, 0, rank)
        ranks = Ranks(settings.device, settings.ranks, timeout_s=RANK_TIMEOUT_S)
        ranks.attach(meter)
    except Exception as err:
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("error", f"{type(err).__name__}: {err}"))
        raise SystemExit(1) from None

    def tell(err: BaseException) -> None:  # before the edge that would wait for the others
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("failing", f"{type(err).__name__}: {err}"))

    worker = _Worker(None, settings, meter, ranks=ranks, tell=tell)
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
        worker.drop_engine()
        meter.close()
    if stopped:
        ranks.close()
    if worker.poisoned:
        raise SystemExit(FATAL_EXIT_CODE)


class _Worker:
    """One rank's engine and meter, running the jobs: the worker itself (rank 0, which
    replies through `replies`; with `followers`, the other ranks' answers agreed into its
    own) or a follower (no `replies`: says nothing)."""

    def __init__(self, replies: Replies | None, settings: WorkerSettings, meter, *,
                 ranks=None, followers: Followers | None = None, tell=None):
        self.replies = replies
        self.settings = settings
        self.meter = meter
        self.ranks = ranks
        self.followers = followers
        # Where there are several ranks: told each failure of the engine as it happens
        self.session = Session(meter, ranks,
                               tell if followers is None else followers.own_failure)
        self.poisoned = False
        self.leaving: str | None = None  # why this worker exits after its reply
        self.load_errors: dict = {}  # (model, engine) -> why it could not be loaded

    def say(self, text: str) -> None:
        if self.replies is not None:
            self.replies.send(("progress", text))

    def handle(self, kind: str, job: Job) -> dict:
        """The reply to one of the parent's jobs, run by every rank where there are several."""
        run = self.measure if kind == "measure" else self.estimate
        if self.followers is None:
            reply = run(job)
        elif kind == "measure" and job.cooldown:
            reply = self._cooled_with_followers(job)
        else:
            reply = self._with_followers(kind, job, run)
        if self.poisoned and not self.leaving:
            self.leaving = "a fatal CUDA error: its CUDA context cannot be trusted"
        return reply

    def _cooled_with_followers(self, job: Job) -> dict:
        """A point with a cooldown, over several ranks. Rank 0 cools down before the
        followers get the job: they would wait for it at the window's edge, a collective
        that keeps their GPUs busy (NCCL). Every rank loads the model first (an estimate job
        loads it), so that the GPUs cool down after the load's heat, as at TP 1; a load that
        fails (or a rank lost in it) is the point's failure."""
        load = None
        if not self._loaded(job):
            early = self._with_followers("estimate", job, self.estimate)
            load = early.get("load")
            if early.get("status", "ok") != "ok":
                return {**failed_record(job, self.settings.dtype, early["status"],
                                        early["error"]), "load": load}
        cooled = self.cool_down(job.cooldown)
        reply = self._with_followers("measure", dataclasses.replace(job, cooldown=None),
                                     self.measure)
        return {**reply, "cooldown": cooled, **({"load": load} if load else {})}

    def _with_followers(self, kind: str, job: Job, run) -> dict:
        edges = self.ranks.edges
        try:
            self.followers.forward(kind, job)
        except RankLost as lost:
            self.leaving = str(lost)
            return self._lost_reply(kind, job, str(lost))

        def on_lost(why: str, status: str) -> None:  # from the watch thread: rank 0 may
            # never return
            self.replies.last(("leaving", why),
                              (kind, self._lost_reply(kind, job, why, status)),
                              then=self.followers.kill)

        with self.followers.watching(on_lost):
            reply = run(job)
        own = outcome(kind, reply, self.ranks.edges - edges)
        try:
            theirs = self.followers.gather()
        except RankLost as lost:
            self.leaving = str(lost)
            if own["status"] == "ok":
                return self._lost_reply(kind, job, str(lost), own=own, reply=reply)
            # Rank 0 failed too: its status stands unless another rank ran out of memory
            # (then the point's is out of memory), both errors said.
            return self._lost_reply(kind, job, f"{lost}; rank 0: {own['error']}",
                                    own["status"], own=own, reply=reply)
        return self._agree(kind, job, reply, [own, *theirs])

    def _agree(self, kind: str, job: Job, reply: dict, outcomes: list[dict]) -> dict:
        """Rank 0's reply with every rank's outcome: the worst status of them (out of memory
        where any rank ran out, so a batch-size search halves on it; else failed) with that
        rank's error; the smallest estimate of a batch that fits. Ranks that ended otherwise
        (status, edges met) may be out of step: leave."""
        size = len(outcomes)
        if len({(o["status"], o["edges"]) for o in outcomes}) > 1:
            self.leaving = ("the ranks ended the point differently (" + ", ".join(
                f"rank {r} {o['status']} after {o['edges']} window edges"
                for r, o in enumerate(outcomes)) + "): they may be out of step")
        if any(is_fatal(o["error"]) for o in outcomes):
            self.poisoned = True
        worst = next(((r, o) for status in ("oom", "failed") for r, o in enumerate(outcomes)
                      if o["status"] == status), None)
        own_ok = reply.get("status", "ok") == "ok"
        # rank 0's reply stands where its status is the worst; else that rank's decides
        stands = worst is None or reply.get("status", "ok") == worst[1]["status"]
        error = None if worst is None else f"TP rank {worst[0]} of {size}: {worst[1]['error']}"
        if kind == "estimate":
            if not stands:
                return {"batch": None, "how": None, "status": worst[1]["status"],
                        "error": error, "load": reply.get("load")}
            batches = [o.get("batch") for o in outcomes]
            if own_ok and reply.get("batch") is not None:  # each rank's own free memory
                reply = {**reply, "batch": min(b for b in batches if b is not None),
                         "how": {**(reply.get("how") or {}), "ranks": batches}}
            return reply
        if not stands:  # rank 0's figures do not stand for the others'
            reply = {**failed_record(job, self.settings.dtype, worst[1]["status"], error),
                     "load": reply.get("load"), "engine_info": reply.get("engine_info")}
        return {**reply, "ranks": [{"rank": r, **o} for r, o in enumerate(outcomes)]}

    def _lost_reply(self, kind: str, job: Job, why: str, status: str = "failed", *,
                    own: dict | None = None, reply: dict | None = None) -> dict:
        """The reply for a job a lost rank ended: `status`, or out of memory where any rank
        is known to have run out (the point does not fit), with why; a point keeps what is
        known of each rank (`Followers.known`) as its `ranks`, rank 0's `reply` (where it
        ended the job) where its status stands, else that reply's load phase and engine."""
        known = self.followers.known(own) if self.followers is not None else []
        if any(r["status"] == "oom" for r in known):
            status = "oom"
        kept = {} if reply is None else {"load": reply.get("load")}
        if kind == "estimate":
            return {"batch": None, "how": None, "status": status, "error": why, **kept}
        if reply is not None and reply.get("status") == status:
            record = {**reply, "error": why}
        else:
            record = {**failed_record(job, self.settings.dtype, status, why), **kept,
                      **({} if reply is None else {"engine_info": reply.get("engine_info")})}
        return {**record, "ranks": known} if known else record

    def load(self, job: Job) -> dict | None:
        """Make `job`'s engine the loaded one; its load phase when it was loaded now."""
        if self._loaded(job):
            return None
        if (job.model, job.engine) in self.load_errors:  # one failed start is enough
            raise EngineLoadError(f"loading failed earlier in this worker: "
                                  f"{self.load_errors[(job.model, job.engine)]}")
        self.session.drop_engine()
        self.say(f"loading {job.model} in {job.engine.label}")
        try:  # the tasks come grouped by decoding: the engine is started for it (vLLM)
            return self.session.load(
                job.engine.name, job.model, device=self.settings.device,
                dtype=self.settings.dtype, seed=self.settings.seed,
                options=job.engine.options_dict, tp=job.tp, decoding=job.decoding,
                group=(job.model, job.engine))
        except Exception as err:
            if not is_out_of_memory(err):
                self.load_errors[(job.model, job.engine)] = f"{type(err).__name__}: {err}"
            raise

    @property
    def engine(self):
        return self.session.engine

    def _loaded(self, job: Job) -> bool:
        return self.session.group == (job.model, job.engine) and self.engine is not None

    def drop_engine(self) -> None:
        self.session.drop_engine()

    def estimate(self, job: Job) -> dict:
        """The engine's largest batch for the job's lengths (its memory model), in prompts: a
        prompt of beam search holds a sequence a beam (transformers expands the batch so, and
        vLLM runs each beam as a request)."""
        try:
            load = self.load(job)
            batch, how = self.engine.max_batch(job.input_tokens, job.output_tokens)
            beams = Decoding.parse(job.decoding).beams
            if batch is not None and beams > 1:
                batch, how = batch // beams, {**how, "sequences": batch, "beams": beams}
            return {"batch": batch, "how": how, "load": load}
        except Exception as err:
            return self._failed(err)

    def measure(self, job: Job) -> dict:
        try:
            load = self.load(job)
            cooled = self.cool_down(job.cooldown) if job.cooldown else None
            self.say(point_text(job))
            result = self.session.measure(
                job_point(job, self.settings.dtype), repeats=job.repeats, warmup=job.warmup,
                min_window_s=job.min_window_s, seed=self.settings.seed,
                progress=lambda m: self.say(f"{point_text(job)}: {m}"))
        except Exception as err:  # refused before measuring (a bad point, a decoding)
            return self._failed(err, job=job)
        record = {**result.to_dict(), "load": load, "cooldown": cooled,
                  "engine_info": _safe_info(self.engine)}
        if result.status == "oom" or (result.error and is_out_of_memory(result.error)):
            self.drop_engine()  # free whatever the failed batch left behind
        if is_fatal(result.error):
            self.poisoned = True
        return record

    def cool_down(self, cooldown: Cooldown) -> dict:
        """Wait until every GPU draws at most idle + within_w, for at most max_s."""
        start = time.perf_counter()
        idle = self.meter.idle_w
        gpus = self.meter.gpus
        while True:
            power = {g.name: instant_power_w(g) for g in gpus}
            hot = {n: w for n, w in power.items()
                   if w is not None and n in idle and w > idle[n] + cooldown.within_w}
            waited = time.perf_counter() - start
            if not hot or waited >= cooldown.max_s:
                return {"waited_s": round(waited, 2), "power_w": power,
                        "reached": not hot}
            self.say(f"cooling down: {', '.join(f'{n} {w:.0f} W' for n, w in hot.items())}")
            time.sleep(0.5)

    def _failed(self, err: Exception, job: Job | None = None) -> dict:
        """The record of a job that raised (for an estimate: no batch, and why)."""
        error = f"{type(err).__name__}: {err}"
        status = "oom" if is_out_of_memory(err) else "failed"
        if status == "oom":
            self.drop_engine()
        if is_fatal(error):
            self.poisoned = True
        if job is None:
            return {"batch": None, "how": None, "status": status, "error": error}
        return failed_record(job, self.settings.dtype, status, error)


def job_point(job: Job, dtype: str):
    """The bench Point a job measures."""
    return Point(job.model, job.engine.name, job.batch, job.input_tokens, job.output_tokens,
                 job.decoding, tp=job.tp, dtype=dtype)


def failed_record(job: Job, dtype: str, status: str, error: str) -> dict:
    """The stored record of a job with no measurement of its own: a PointResult's dict."""
    return PointResult(point=job_point(job, dtype), status=status, error=error).to_dict()


def instant_power_w(sensor) -> float | None:
    """A sensor's power now (instant field, else usage, else the 1 s average); None when it
    cannot be read."""
    try:
        power = sensor.read_power_w()
    except Exception:
        return None
    return power.get("instant", power.get("usage", power.get("average")))


def _safe_info(engine) -> dict:
    try:
        return engine.info()
    except Exception as err:
        return {"error": str(err)}



