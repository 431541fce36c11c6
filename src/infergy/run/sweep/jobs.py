"""What a sweep's worker runs: the jobs it is sent (a point and how it is measured), and the
`JobRunner` of each rank, which loads their engine in its `Session` and measures them (rank 0
agreeing the other ranks' outcomes into its reply where there are several)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from infergy.engines.decoding import Decoding
from infergy.plan.point import Point
from infergy.plan.spec import Cooldown, EngineChoice, point_text
from infergy.run.parallel import RANK_GRACE_S
from infergy.run.point import PointResult, is_out_of_memory
from infergy.run.session import Session
from infergy.run.sweep.ranks import Followers, RankLost, Replies, outcome

# Messages of errors after which a CUDA context cannot be trusted: the worker exits.
FATAL_MARKERS = ("CUDA error", "illegal memory access", "device-side assert",
                 "unspecified launch failure", "CUBLAS_STATUS_EXECUTION_FAILED",
                 "NCCL error", "cudaErrorLaunchFailure")


class EngineLoadError(RuntimeError):
    """The engine of a group could not be loaded; its other points are not tried again."""


@dataclass(frozen=True)
class Job:
    """What the worker is sent: a point, the engine's options, and how it is measured."""

    point: Point
    options_key: str = "{}"  # the engine's options (EngineChoice.options_key)
    repeats: int = 3
    warmup: int = 1
    cooldown: Cooldown | None = None
    min_window_s: float = 0.0  # a shorter run is repeated in each window (measure_point)

    @property
    def engine(self) -> EngineChoice:
        return EngineChoice(self.point.engine, self.options_key)

    @property
    def group(self) -> tuple[str, EngineChoice]:
        """Jobs of one group share a loaded model."""
        return (self.point.model, self.engine)

    def describe(self) -> str:
        return point_text(self.point, self.engine)


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


class JobRunner:
    """One rank's engine and meter, running the jobs: the worker itself (rank 0, which
    replies through `replies`; with `followers`, the other ranks' answers agreed into its
    own) or a follower (no `replies`: says nothing)."""

    def __init__(self, replies: Replies | None, settings: WorkerSettings, session: Session, *,
                 followers: Followers | None = None):
        self.replies = replies
        self.settings = settings
        self.session = session  # its meter, its ranks where there are several, its engine
        self.followers = followers
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
                return {**failed_record(job, early["status"],
                                        early["error"]), "load": load}
        cooled = self.cool_down(job.cooldown)
        reply = self._with_followers("measure", dataclasses.replace(job, cooldown=None),
                                     self.measure)
        return {**reply, "cooldown": cooled, **({"load": load} if load else {})}

    def _with_followers(self, kind: str, job: Job, run) -> dict:
        edges = self.session.ranks.edges
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
        own = outcome(kind, reply, self.session.ranks.edges - edges)
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
            reply = {**failed_record(job, worst[1]["status"], error),
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
            record = {**failed_record(job, status, why), **kept,
                      **({} if reply is None else {"engine_info": reply.get("engine_info")})}
        return {**record, "ranks": known} if known else record

    def load(self, job: Job) -> dict | None:
        """Make `job`'s engine the loaded one; its load phase when it was loaded now."""
        if self._loaded(job):
            return None
        if job.group in self.load_errors:  # one failed start is enough
            raise EngineLoadError(f"loading failed earlier in this worker: "
                                  f"{self.load_errors[job.group]}")
        self.say(f"loading {job.point.model} in {job.engine.label}")
        try:  # the tasks come grouped by decoding: the engine is started for it (vLLM)
            return self.session.load(
                job.point.engine, job.point.model, device=self.settings.device,
                dtype=job.point.dtype, seed=self.settings.seed,
                options=job.engine.options_dict, tp=job.point.tp, decoding=job.point.decoding,
                group=job.group)
        except Exception as err:
            if not is_out_of_memory(err):
                self.load_errors[job.group] = f"{type(err).__name__}: {err}"
            raise

    @property
    def engine(self):
        return self.session.engine

    def _loaded(self, job: Job) -> bool:
        return self.session.holds(job.group)

    def drop_engine(self) -> None:
        self.session.drop_engine()

    def estimate(self, job: Job) -> dict:
        """The engine's largest batch for the job's lengths (its memory model), in prompts: a
        prompt of beam search holds a sequence a beam (transformers expands the batch so, and
        vLLM runs each beam as a request)."""
        try:
            load = self.load(job)
            batch, how = self.engine.max_batch(job.point.input_tokens, job.point.output_tokens)
            beams = Decoding.parse(job.point.decoding).beams
            if batch is not None and beams > 1:
                batch, how = batch // beams, {**how, "sequences": batch, "beams": beams}
            return {"batch": batch, "how": how, "load": load}
        except Exception as err:
            return self._failed(err)

    def measure(self, job: Job) -> dict:
        try:
            load = self.load(job)
            cooled = self.cool_down(job.cooldown) if job.cooldown else None
            self.say(job.describe())
            result = self.session.measure(
                job.point, repeats=job.repeats, warmup=job.warmup,
                min_window_s=job.min_window_s, seed=self.settings.seed,
                progress=lambda m: self.say(f"{job.describe()}: {m}"))
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
        idle = self.session.meter.idle_w
        gpus = self.session.meter.gpus
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
        return failed_record(job, status, error)


def failed_record(job: Job, status: str, error: str) -> dict:
    """The stored record of a job with no measurement of its own: a PointResult's dict."""
    return PointResult(point=job.point, status=status, error=error).to_dict()


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
