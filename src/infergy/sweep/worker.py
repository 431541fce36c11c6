"""The sweep's worker: a process of its own that holds the meter and the loaded engine and
measures the points it is sent, one at a time.

It runs apart from the sweep's parent so that a fatal CUDA error (which leaves the CUDA
context unusable) or a crash costs only the worker: the parent records the point as failed,
starts a new worker and goes on. The worker ignores Ctrl-C (the parent decides when to stop)
and exits when the parent is gone.

Messages, as (kind, body) tuples over a multiprocessing Pipe:
    parent -> worker: ("measure", Job), ("estimate", Job), ("stop", None)
    worker -> parent: ("ready", {"device", "meta"}), ("progress", text),
                      ("result", {...}), ("estimate", {...})
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
from dataclasses import dataclass

from infergy.sweep.spec import Cooldown, EngineChoice, point_text

# Messages of errors after which a CUDA context cannot be trusted: the worker exits.
FATAL_MARKERS = ("CUDA error", "illegal memory access", "device-side assert",
                 "unspecified launch failure", "CUBLAS_STATUS_EXECUTION_FAILED",
                 "NCCL error", "cudaErrorLaunchFailure")
FATAL_EXIT_CODE = 3


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


@dataclass(frozen=True)
class WorkerSettings:
    device: str  # "cuda" or "cpu"
    dtype: str = "bfloat16"
    seed: int = 0
    idle_s: float = 5.0
    tp: int = 1  # the sweep's tensor parallelism: the first `tp` GPUs used and measured


def is_fatal(error: str | None) -> bool:
    return bool(error) and any(marker in error for marker in FATAL_MARKERS)


def device_identity(meta: dict) -> str:
    """What "the same GPU" means for resuming: the UUIDs of the GPUs measured, or the host
    when there is none."""
    uuids = [g.get("uuid") for g in meta.get("gpus", []) if g.get("uuid")]
    return ",".join(uuids) if uuids else f"cpu:{meta['host']['hostname']}"


def local_device(tp: int = 1) -> str:
    """This machine's device identity as a worker of a sweep at `tp` would see it, without
    starting one."""
    from infergy import provenance
    from infergy.meter import nvml

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
    """The worker's loop (the target of its process)."""
    # Out of the terminal's process group: Ctrl-C (or `timeout -s INT`) reaches the parent,
    # which decides when to stop, and not the processes an engine starts (vLLM's engine core
    # aborted its requests on it, on an H100, mid-point).
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from infergy.bench.point import run_metadata
    from infergy.meter import open_meter

    try:
        # A CPU sweep measures no GPU: its points must not be stored as a GPU's.
        meter = open_meter(gpus=[] if settings.device == "cpu" else None,
                           limit=settings.tp, idle_s=settings.idle_s)
        meta = run_metadata(meter)
    except Exception as err:
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", {"device": device_identity(meta), "meta": meta}))
    worker = _Worker(conn, settings, meter)
    try:
        while True:
            try:
                kind, body = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                break
            if kind == "stop":
                break
            reply = worker.measure(body) if kind == "measure" else worker.estimate(body)
            try:
                conn.send((kind, reply))
            except (BrokenPipeError, OSError):
                break
            if worker.poisoned:
                break
    finally:
        worker.drop_engine()
        meter.close()
    if worker.poisoned:
        raise SystemExit(FATAL_EXIT_CODE)


class _Worker:
    def __init__(self, conn, settings: WorkerSettings, meter):
        self.conn = conn
        self.settings = settings
        self.meter = meter
        self.engine = None
        self.group = None
        self.poisoned = False
        self.load_errors: dict = {}  # (model, engine) -> why it could not be loaded

    def say(self, text: str) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(("progress", text))

    def load(self, job: Job) -> dict | None:
        """Make `job`'s engine the loaded one; its load phase when it was loaded now."""
        from infergy.engines import engine_class, new_engine
        from infergy.models import get_model

        if self.group == (job.model, job.engine) and self.engine is not None:
            return None
        if (job.model, job.engine) in self.load_errors:  # one failed start is enough
            raise EngineLoadError(f"loading failed earlier in this worker: "
                                  f"{self.load_errors[(job.model, job.engine)]}")
        self.drop_engine()
        self.say(f"loading {job.model} in {job.engine.label}")
        engine = new_engine(
            engine_class(job.engine.name), get_model(job.model), device=self.settings.device,
            dtype=self.settings.dtype, seed=self.settings.seed,
            options=job.engine.options_dict, tp=job.tp)
        try:
            with self.meter.window("load") as w:
                engine.load()
        except Exception as err:
            engine.close()
            from infergy.bench.point import is_out_of_memory

            if not is_out_of_memory(err):
                self.load_errors[(job.model, job.engine)] = f"{type(err).__name__}: {err}"
            raise
        self.engine, self.group = engine, (job.model, job.engine)
        return {"time_s": w.measurement.duration_s, "energy_j": w.measurement.energy_j}

    def drop_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = self.group = None
        gc.collect()
        torch = _torch()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def estimate(self, job: Job) -> dict:
        try:
            load = self.load(job)
            batch, how = self.engine.max_batch(job.input_tokens, job.output_tokens)
            return {"batch": batch, "how": how, "load": load}
        except Exception as err:
            return self._failed(err)

    def measure(self, job: Job) -> dict:
        from infergy.bench.point import is_out_of_memory, measure_point

        try:
            load = self.load(job)
            cooled = self.cool_down(job.cooldown) if job.cooldown else None
            self.say(point_text(job))
            result = measure_point(self.engine, job_point(job, self.settings.dtype),
                                   self.meter, repeats=job.repeats, warmup=job.warmup,
                                   seed=self.settings.seed,
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
        from infergy.bench.point import is_out_of_memory

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
    from infergy.bench.point import Point

    return Point(job.model, job.engine.name, job.batch, job.input_tokens, job.output_tokens,
                 job.decoding, tp=job.tp, dtype=dtype)


def failed_record(job: Job, dtype: str, status: str, error: str) -> dict:
    """The stored record of a job with no measurement of its own: a PointResult's dict."""
    from infergy.bench.point import PointResult

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


def _torch():
    import sys

    return sys.modules.get("torch")
