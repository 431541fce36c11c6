"""Where point groups run: this host's GPUs (`local`), a Ray cluster (`ray`), Slurm jobs
through submitit (`slurm`). Each launcher submits a GroupJob, says how it ended when asked,
and stops it on request; the driver (driver.py) does the rest.

An ending is ("done", result) where the group's runner returned (its result may carry an
`error`), or ("lost", why) where its process, task or job died without a result: killed, a
node lost, a job cancelled or out of time.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from infergy.meter import nvml
from infergy.run.launch.group import GroupJob, run_group
from infergy.run.parallel import exit_said

LAUNCHERS = ("local", "ray", "slurm")
EXTRAS = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}  # launcher: (module, extra)
CPUS_PER_GPU = 8  # a Slurm job's CPUs a GPU, unless --slurm-option cpus-per-task=N


class LaunchError(RuntimeError):
    """A launcher cannot be used (not installed, no cluster, a bad option); says why."""


def need(launcher: str):
    """The module a launcher runs on, or LaunchError naming the extra that installs it."""
    module, extra = EXTRAS[launcher]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LaunchError(f"--launcher {launcher} needs {module}, which is not installed: "
                          f"pip install 'infergy[{extra}]'") from None


@dataclass
class Ending:
    kind: str  # "done" or "lost"
    result: dict = field(default_factory=dict)  # "done": the runner's result
    why: str = ""  # "lost": what happened


# -- local: one process a GPU group of this host ------------------------------------------


def local_slots(tp: int, device: str, workers: int | None) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each local worker: the visible GPUs in groups of `tp`; on a
    CPU (`device` cpu, or no GPU), `workers` of them (default 1), None: the environment's."""
    models = [] if device == "cpu" else nvml.visible_gpu_models()
    if not models:
        return [None] * (workers or 1)
    setting = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in setting.split(",")][:len(models)] if setting else \
        [str(i) for i in range(len(models))]
    slots = [",".join(ids[k:k + tp]) for k in range(0, len(ids) - tp + 1, tp)]
    if not slots:
        raise LaunchError(f"--tp {tp}: only {len(ids)} GPU(s) visible here")
    if workers is not None:
        if workers > len(slots):
            raise LaunchError(f"--workers {workers}: this host has {len(slots)} group(s) of "
                              f"{tp} GPU(s) ({len(ids)} visible)")
        slots = slots[:workers]
    return slots


class LocalLauncher:
    """Each group in a process of its own (`python -m infergy.run.launch`), in a
    session of its own, one at a time on each slot (a GPU group), queued for a free slot."""

    name = "local"

    def __init__(self, slots: list[str | None]):
        self.slots = len(slots)
        self.gpus = any(slot is not None for slot in slots)  # else CPU workers
        self.free = list(slots)
        self.waiting: list[GroupJob] = []
        self.running: dict[str, tuple[subprocess.Popen, str | None, Path]] = {}
        self.dropped: set[str] = set()  # stopped while waiting: never started

    def submit(self, job: GroupJob) -> str:
        self.waiting.append(job)
        return job.name

    def _start(self) -> None:
        while self.waiting and self.free:
            job, slot = self.waiting.pop(0), self.free.pop(0)
            path = Path(job.store).with_suffix(".job")
            path.write_bytes(pickle.dumps(job))
            env = dict(os.environ)
            if slot is not None:
                env["CUDA_VISIBLE_DEVICES"] = slot
            with path.with_suffix(".out").open("ab") as out:  # its engines' words, kept
                # where the group is lost; the terminal keeps the driver's progress
                proc = subprocess.Popen([sys.executable, "-m", "infergy.run.launch",
                                         str(path)], env=env, start_new_session=True,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            self.running[job.name] = (proc, slot, path)

    def poll(self, handle: str) -> Ending | None:
        self._start()
        if handle in self.dropped:
            self.dropped.discard(handle)
            return Ending("lost", why="stopped before it started")
        if handle not in self.running:
            return None  # waiting for a slot
        proc, slot, path = self.running[handle]
        if proc.poll() is None:
            return None
        del self.running[handle]
        self.free.append(slot)
        answer = path.with_name(path.name + ".result.json")
        output = path.with_suffix(".out")
        try:
            result = json.loads(answer.read_text())
        except (OSError, ValueError):
            result = None
        for leftover in (path, answer, *([output] if result is not None else [])):
            with contextlib.suppress(OSError):
                leftover.unlink()
        if result is None:
            return Ending("lost", why=f"its process ended without a result "
                                      f"({exit_said(proc.returncode)}; its output: {output})")
        return Ending("done", result)

    def stop(self, handle: str, now: bool) -> None:
        """After its point in flight (SIGINT, as Ctrl-C stops a sweep), or now (SIGTERM: the
        point in flight abandoned, its measuring process killed, its run ended)."""
        if any(j.name == handle for j in self.waiting):
            self.waiting = [j for j in self.waiting if j.name != handle]
            self.dropped.add(handle)
        if handle in self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.running[handle][0].pid, signal.SIGTERM if now else signal.SIGINT)

    def pid(self, handle: str) -> int | None:
        """The process of a running group (tests kill it)."""
        return self.running[handle][0].pid if handle in self.running else None

    def close(self) -> None:
        """Stop what still runs (SIGTERM, then SIGKILL after 30 s)."""
        for handle in list(self.running):
            self.stop(handle, now=True)
        for proc, _, _ in self.running.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# -- ray: a task a group, num_gpus its TP --------------------------------------------------


class RayLauncher:
    """Each group a Ray task asking for `tp` GPUs (one node's: a task runs on one node), on
    the cluster at `address` (None: a new local one, as `ray.init()` starts it). The task
    runs the group's sweep, whose worker process is started by the task and sees the GPUs
    Ray gave it (CUDA_VISIBLE_DEVICES): vLLM, started inside it, finds no Ray of its own and
    keeps to them."""

    name = "ray"

    def __init__(self, address: str | None, tp: int, device: str, workers: int | None):
        self.ray = need("ray")
        if not self.ray.is_initialized():
            try:
                self.ray.init(address=address, log_to_driver=False,
                              configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise LaunchError(f"--ray-address {address}: cannot join the Ray cluster "
                                  f"({err})") from None
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        most = max([int(n["Resources"].get("GPU", 0)) for n in self.ray.nodes() if n["Alive"]]
                   or [0])
        self.gpus = 0 if device == "cpu" and most < tp else tp
        if self.gpus and most < tp:
            self.ray.shutdown()
            raise LaunchError(f"the Ray cluster's nodes have at most {most} GPU(s) ({gpus} in "
                              f"all): a group at --tp {tp} needs {tp} on one node")
        self.slots = workers or max(1, gpus // tp if self.gpus else
                                    int(self.ray.cluster_resources().get("CPU", 1)))
        self.remote = self.ray.remote(run_group).options(
            num_gpus=self.gpus, num_cpus=1, max_retries=0, name="infergy-group")
        self.refs: dict[str, object] = {}

    def submit(self, job: GroupJob) -> str:
        self.refs[job.name] = self.remote.remote(job)
        return job.name

    def poll(self, handle: str) -> Ending | None:
        ref = self.refs[handle]
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            return None
        del self.refs[handle]
        try:
            return Ending("done", self.ray.get(ref))
        except self.ray.exceptions.RayError as err:
            return Ending("lost", why=f"its Ray task failed: {_first_line(err)}")

    def stop(self, handle: str, now: bool) -> None:
        if handle in self.refs:
            with contextlib.suppress(Exception):
                self.ray.cancel(self.refs[handle], force=now)

    def close(self) -> None:
        for handle in list(self.refs):
            self.stop(handle, now=True)
        self.ray.shutdown()


# -- slurm: a job a group, through submitit ------------------------------------------------


def parse_minutes(text: str) -> int:
    """--slurm-time as minutes: MINUTES, HH:MM:SS, or D-HH:MM:SS (Slurm's forms)."""
    days, _, clock = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = clock.split(":")
    try:
        if len(parts) == 1:
            minutes = int(parts[0])
        else:
            h, m, s = ([0] * (3 - len(parts)) + [int(p) for p in parts])[-3:]
            minutes = h * 60 + m + (1 if s else 0)
        minutes += int(days) * 24 * 60
    except ValueError:
        raise LaunchError(f"--slurm-time expects minutes, HH:MM:SS or D-HH:MM:SS, got "
                          f"{text!r}") from None
    if minutes <= 0:
        raise LaunchError(f"--slurm-time must be positive, got {text!r}")
    return minutes


class SlurmLauncher:
    """Each group a Slurm job of one node, one task and `tp` GPUs, through submitit, its
    files (scripts, logs, results) in `folder` (shared storage: the jobs write there). With
    `executor` "local", submitit's local executor runs the jobs on this machine instead (to
    try the path without a cluster: every job sees the same GPUs)."""

    name = "slurm"

    def __init__(self, folder: Path, tp: int, device: str, workers: int | None, *,
                 partition: str | None = None, account: str | None = None,
                 time: str | None = None, options: dict[str, str] | None = None,
                 executor: str = "slurm"):
        submitit = need("slurm")
        self.submitit = submitit
        if executor == "slurm" and shutil.which("sbatch") is None:
            raise LaunchError("--launcher slurm: sbatch is not on this machine's PATH (run "
                              "from a Slurm login node; --slurm-executor local runs the jobs "
                              "here through submitit's local executor, to try the path)")
        try:
            self.executor = submitit.AutoExecutor(folder=str(folder), cluster=executor)
        except RuntimeError as err:  # no srun: not a Slurm node
            raise LaunchError(f"--launcher slurm: {err}") from None
        options = {k.replace("-", "_"): v for k, v in (options or {}).items()}
        params = {"name": "infergy-sweep", "nodes": 1, "tasks_per_node": 1,
                  "gpus_per_node": 0 if device == "cpu" else tp,
                  # a point at B = 1 is paced by the host's CPU: not Slurm's one CPU a task
                  "cpus_per_task": _count(options.pop("cpus_per_task", CPUS_PER_GPU * tp)),
                  "timeout_min": parse_minutes(time) if time else 24 * 60}
        if executor == "slurm":
            params.update({f"slurm_{k}": v for k, v in (("partition", partition),
                                                        ("account", account)) if v})
            if options:
                params["slurm_additional_parameters"] = options
        try:
            self.executor.update_parameters(**params)
        except (ValueError, TypeError) as err:
            raise LaunchError(f"Slurm options: {err}") from None
        self.slots = workers or 1
        self.jobs: dict[str, object] = {}

    def submit(self, job: GroupJob) -> str:
        try:
            self.jobs[job.name] = self.executor.submit(run_group, job)
        except Exception as err:  # sbatch's refusal (a partition that does not exist)
            raise LaunchError(f"Slurm refused the job of group {job.name}: "
                              f"{_first_line(err)}") from None
        return job.name

    def poll(self, handle: str) -> Ending | None:
        job = self.jobs[handle]
        if not job.done():
            return None
        del self.jobs[handle]
        try:
            return Ending("done", job.result())
        except Exception as err:  # killed, cancelled, out of time, its node lost
            return Ending("lost", why=f"its Slurm job {job.job_id} ended without a result "
                                      f"({job.state}: {_first_line(err)})")

    def stop(self, handle: str, now: bool) -> None:
        if handle in self.jobs:
            with contextlib.suppress(Exception):
                self.jobs[handle].cancel(check=False)

    def close(self) -> None:
        for handle in list(self.jobs):
            self.stop(handle, now=True)


def open_launcher(name: str, parts: Path, tp: int, device: str, workers: int | None, *,
                  ray_address: str | None = None, partition: str | None = None,
                  account: str | None = None, time: str | None = None,
                  options: list[str] | None = None, executor: str = "slurm"):
    """The launcher `name` for a sweep whose parts folder is `parts` (Slurm's files go in
    it); None for a local sweep of one worker (the sweep itself, in this process:
    `run_sweep`). LaunchError where it cannot be used."""
    if name not in LAUNCHERS:
        raise LaunchError(f"--launcher expects one of {', '.join(LAUNCHERS)}, got {name!r}")
    if name == "local":
        slots = local_slots(tp, device, workers)
        return LocalLauncher(slots) if len(slots) > 1 else None
    if name == "ray":
        return RayLauncher(ray_address, tp, device, workers)
    if executor not in ("slurm", "local"):
        raise LaunchError(f"--slurm-executor expects slurm or local, got {executor!r}")
    extra = {}
    for option in options or []:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise LaunchError(f"--slurm-option expects KEY=VALUE (an sbatch option without "
                              f"its dashes, e.g. qos=high), got {option!r}")
        extra[key.strip().lstrip("-")] = value
    return SlurmLauncher(parts / "slurm", tp, device, workers, partition=partition,
                         account=account, time=time, options=extra, executor=executor)



def _count(value) -> int:
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"--slurm-option cpus-per-task expects a whole number, got "
                          f"{value!r}") from None


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else type(err).__name__
