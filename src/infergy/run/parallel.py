"""Tensor parallelism (issue 10): the checks made before any work, and the GPUs a run of
TP N uses and measures.

A run of TP N uses the first N GPUs this process can use (CUDA_VISIBLE_DEVICES order, as
vLLM places its workers), and infergy measures exactly those: the idle power of a GPU the
run does not use is not counted. Each GPU's energy is kept (`Measurement.devices`) beside
their sum (`energy_j`), over one window read by one process, so every GPU's window has the
same edges.

Engines that split a model as one process a GPU (hf-eager, by transformers' own plan) run
as N ranks of the same code. `measure` and `replay` start them with `launch` (the command
line run again N times); a sweep's worker starts its own (infergy.run.sweep.worker). Either way
the ranks' parts are the ones here: `rank_env` (what torch.distributed reads), `run_meter`
(rank 0 measures every GPU, its idle power before any other rank touches a GPU; the others
measure nothing) and `Ranks` (the ranks meet after that idle power, and every window edge
waits for all of them). A rank whose engine fails tells it at once (`Telling`), before its
window's edge waits for the others: ranks that have not ended with it RANK_GRACE_S later are
out of step (waiting in the model for a collective that will never come), and whoever
watches them (`launch`, or a sweep's worker) stops them all.
"""

from __future__ import annotations

import os

from infergy.meter import open_meter
from infergy.plan.tp import ParallelError


def exit_said(code: int | None) -> str:
    """A process's exit status in words: its exit code, or the signal that killed it."""
    if code is None or code >= 0:
        return f"exit code {code}"
    import signal

    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    oom = ", as the system's out-of-memory killer does" if -code == signal.SIGKILL else ""
    return f"killed by {name}{oom}"


# -- transformers' own tensor parallelism, one process a GPU -------------------------------

RANK_ENV = "INFERGY_TP_RANK"  # set in the processes `launch` starts
FAILING_ENV = "INFERGY_TP_FAILING"  # ... with the folder where a rank tells its failure
# Ranks ending a run this long apart (one's engine failed, another is still in the model,
# waiting for a collective that will never come) are out of step: they are stopped rather
# than left to the process group's own timeout.
RANK_GRACE_S = 30.0


def current_rank() -> int | None:
    """This process's rank where `launch` started it, else None (the launching process)."""
    return int(os.environ[RANK_ENV]) if RANK_ENV in os.environ else None


def free_port() -> int:
    """A TCP port free on this host now, for the ranks' rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, tp: int, port: int) -> dict[str, str]:
    """What torch.distributed reads in rank `rank` of `tp` processes meeting on this host at
    `port` (rank r uses the r-th visible GPU); where OMP_NUM_THREADS is not set, the host's
    cores shared out between the ranks."""
    env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(tp),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // tp))
    return env


def launch(tp: int, argv: list[str], *, grace_s: float = RANK_GRACE_S) -> int:
    """Run this infergy command again as `tp` processes on this host, rank i on the i-th
    visible GPU, and wait for them. Rank 0 speaks (its output is this command's), the others'
    error output is kept and shown if one fails. A rank that exits with an error stops the
    others, and so does one whose engine failed (`tell_launch`) while another is still
    running `grace_s` (RANK_GRACE_S) after launch first saw that failure (out of step), so
    nothing waits for it forever. On Ctrl-C (which the ranks get too, being in this process
    group) the ranks have `grace_s` to end on their own, rank 0 recording what it ran; a
    second Ctrl-C stops them at once. Returns rank 0's exit status, the failed rank's, or 1
    where ranks were out of step (that rank's told error said)."""
    import contextlib
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    port = free_port()
    with contextlib.ExitStack() as stack:
        told = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="infergy-ranks-")))
        procs, logs = [], []
        for rank in range(tp):
            log = stack.enter_context(tempfile.TemporaryFile()) if rank else None
            env = {**os.environ, RANK_ENV: str(rank), FAILING_ENV: str(told),
                   **rank_env(rank, tp, port)}
            procs.append(subprocess.Popen([sys.executable, "-m", "infergy", *argv], env=env,
                                          stdout=subprocess.DEVNULL if rank else None,
                                          stderr=log))
            logs.append(log)
        failed = stuck = None
        seen: dict[Path, float] = {}  # each rank's told failure: when launch first saw it
        try:
            while failed is None and stuck is None and any(p.poll() is None for p in procs):
                failed = next(((r, p.returncode) for r, p in enumerate(procs)
                               if p.returncode not in (None, 0)), None)
                stuck = _out_of_step(told, seen, grace_s)
                time.sleep(0.1)
            failed = failed or next(((r, p.returncode) for r, p in enumerate(procs)
                                     if p.returncode), None)
        except KeyboardInterrupt:  # it reached the ranks too: rank 0 records what it ran
            end = time.monotonic() + grace_s
            while any(p.poll() is None for p in procs) and time.monotonic() < end:
                with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop now
                    time.sleep(0.1)
                    continue
                break
            raise
        finally:  # none outlives this
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if stuck is not None and failed is None:
            rank, why = stuck
            print(f"infergy: rank {rank} of {tp} failed: {why}; the other ranks did not end "
                  f"with it within {grace_s:.0f} s (out of step): all stopped",
                  file=sys.stderr)
            return 1
        if failed is None:
            return 0
        rank, code = failed
        tail = []
        if rank:  # rank 0 said its own; another rank's error is shown here
            logs[rank].seek(0)
            tail = logs[rank].read().decode(errors="replace").strip().splitlines()[-15:]
        if code < 0:  # killed by a signal: no rank said a word, rank 0 included
            print(f"infergy: rank {rank} of {tp} was {exit_said(code)}", *tail, sep="\n",
                  file=sys.stderr)
            return 128 - code  # a shell's status for it, not -code's low byte
        if rank:
            print(f"infergy: rank {rank} of {tp} failed (exit {code}):", *tail, sep="\n",
                  file=sys.stderr)
        return code


def _out_of_step(told, seen: dict, grace_s: float = RANK_GRACE_S,
                 now: float | None = None) -> tuple[int, str] | None:
    """(rank, why) of the first rank whose engine's failure, told in folder `told`
    (`tell_launch`), was first seen more than `grace_s` ago, else None. `seen` (note ->
    time.monotonic() when first seen) is kept by the caller between calls: the time is this
    process's own clock, not the note file's (another clock, coarse on some file systems)."""
    import time

    now = time.monotonic() if now is None else now
    for note in told.glob("rank-*"):
        seen.setdefault(note, now)
    if not seen:
        return None
    first, since = min(seen.items(), key=lambda s: s[1])
    if now - since <= grace_s:
        return None
    try:
        why = first.read_text()
    except OSError as err:  # being written, or gone: its rank is still out of step
        why = f"(its error could not be read: {err})"
    return int(first.name.removeprefix("rank-")), why


def tell_launch(err: BaseException) -> None:
    """Tell `launch` this rank's engine failed (see `Telling`): if the other ranks have not
    ended with it RANK_GRACE_S later, it stops them all."""
    import contextlib
    from pathlib import Path

    folder, rank = os.environ.get(FAILING_ENV), os.environ.get(RANK_ENV)
    if folder is None or rank is None:
        return
    note = Path(folder, f"rank-{rank}")
    with contextlib.suppress(Exception):  # never in place of the engine's own error
        if not note.exists():
            note.write_text(f"{type(err).__name__}: {err}")


class Telling:
    """A rank's engine that tells its failures (`tell(err)`) the moment they happen, before
    the window open around it closes: that edge waits for the other ranks, which may be
    waiting inside the model for this one (out of step: whoever watches the ranks ends
    them)."""

    def __init__(self, engine, tell):
        self._engine, self._tell = engine, tell

    def __getattr__(self, name: str):
        value = getattr(self._engine, name)
        if name not in ("load", "prepare", "generate"):
            return value

        def told(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except BaseException as err:
                self._tell(err)
                raise

        return told


def run_meter(device: str, tp: int, idle_s: float, rank: int | None):
    """The meter of one process of a run over `tp` GPUs (`device` cuda or cpu; a CPU run
    measures no GPU). `rank` None: the only process, measuring the run's GPUs, idle power
    first. Rank 0 of several does the same, before any other rank touches a GPU (they wait
    to meet it in `Ranks`); the other ranks measure nothing. A rank's meter synchronizes no
    GPU until `Ranks.attach` gives it the ranks' edge (the default would open a context on
    every GPU)."""
    gpus = None if device == "cuda" else []
    if rank is None:
        return open_meter(gpus=gpus, limit=tp, idle_s=idle_s)
    if rank == 0:
        return open_meter(gpus=gpus, limit=tp, idle_s=idle_s, sync=_no_sync)
    return open_meter(gpus=[], cpu=False, idle_s=0, sync=_no_sync)


def _no_sync() -> None:
    pass


class Ranks:
    """This process's place among the ranks of a run (started by `launch`, or by a sweep's
    worker): every rank runs the same model code, so every collective and window edge is
    matched; rank 0 measures and speaks. `edges`: the window edges this rank has met."""

    def __init__(self, device: str, tp: int, *, timeout_s: float = 600.0):
        import datetime as dt

        import torch
        import torch.distributed as dist

        self.rank = int(os.environ["RANK"])
        self.size = int(os.environ["WORLD_SIZE"])
        if self.size != tp:
            raise ParallelError(f"--tp {tp}, but {self.size} processes were started")
        # Each rank's own GPU named to NCCL (else it guesses by rank). It is made current only
        # after the rendezvous, which waits for rank 0's idle power: a context opened before
        # would raise the other GPUs' idle readings.
        gpu = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if device == "cuda" else None
        dist.init_process_group("nccl" if device == "cuda" else "gloo",
                                timeout=dt.timedelta(seconds=timeout_s), device_id=gpu)
        if gpu is not None:
            torch.cuda.set_device(gpu)
        self.device = device
        self.edges = 0
        self._torch, self._dist = torch, dist
        # Each rank's GPU by UUID (None on a CPU), rank by rank.
        self.gpus: list[str | None] = [None] * self.size
        dist.all_gather_object(self.gpus, None if gpu is None else _uuid(torch, gpu))

    @property
    def speaks(self) -> bool:
        return self.rank == 0

    def synced(self, also=None):
        """A meter's sync for every rank: this rank's GPU finishes its work, then every rank
        waits for the others, so each window edge is read when all the GPUs are done (aligned
        windows). Only this rank's own GPU is synchronized: no context on the others."""
        def edge() -> None:
            if self.device == "cuda":
                self._torch.cuda.synchronize()
            if also is not None:
                also()
            if self._dist.is_initialized():  # not once closed (a window stopped on Ctrl-C)
                self._dist.barrier()
            self.edges += 1

        return edge

    def attach(self, meter) -> None:
        """Make every window edge of `meter` an edge of all the ranks (see `synced`), and its
        shared decisions rank 0's (`share`). Every rank checks that the GPUs rank 0's meter
        measures are the ranks' own, and rank 0's meter names each GPU's rank
        (`match_rank_gpus`); ParallelError on every rank if not."""
        meter.sync = self.synced()
        meter.share = self.share
        measured = self.share([s.info.details.get("uuid") for s in meter.gpus])
        ranks = match_rank_gpus(self.gpus, measured)
        for sensor in meter.gpus:  # rank 0's: the others measure none
            if sensor.info.details.get("uuid") in ranks:
                sensor.info.details["tp_rank"] = ranks[sensor.info.details["uuid"]]

    def share(self, value):
        """Rank 0's `value`, on every rank: for what each would decide from its own timings
        (a window's runs), which must match for the ranks' collectives to."""
        box = [value]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, value, what: str) -> None:
        """Check that every rank decided `value` (something each works out on its own, such
        as a replay's batches) alike; ParallelError naming `what` if not, before any of them
        runs it (ranks running different work would wait for each other forever)."""
        values = [None] * self.size
        self._dist.all_gather_object(values, value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise ParallelError(f"the ranks disagree on {what}: rank {differ[0]}'s differ from "
                                f"rank 0's")

    def close(self) -> None:
        """Every rank leaves together: a process group torn down while a peer still talks
        to it can abort (gloo did, once in several runs)."""
        self._dist.barrier()
        self._dist.destroy_process_group()


def _uuid(torch, gpu) -> str:
    """A CUDA device's UUID as torch gives it (NVML's without its "GPU-")."""
    return str(torch.cuda.get_device_properties(gpu).uuid)


def match_rank_gpus(rank_gpus: list[str | None], measured: list[str | None]) -> dict[str, int]:
    """Each measured GPU's rank, by UUID; ParallelError where a rank runs on a GPU that is
    not among those measured: its energy would go uncounted, and a GPU no rank uses counted
    instead (CUDA and NVML can number GPUs differently). Nothing to check where a side cannot
    say: a CPU run, or GPUs that NVML cannot read (the meter says why)."""
    if None in rank_gpus or None in measured or not measured:
        return {}
    bare = {_bare(u): u for u in measured}
    for rank, uuid in enumerate(rank_gpus):
        if _bare(uuid) not in bare:
            raise ParallelError(
                f"rank {rank} runs on GPU {uuid}, which is not among the GPUs measured "
                f"({', '.join(measured)}): its energy would not be counted; set "
                f"CUDA_DEVICE_ORDER=PCI_BUS_ID, or name the GPUs by UUID in "
                f"CUDA_VISIBLE_DEVICES")
    return {bare[_bare(u)]: rank for rank, u in enumerate(rank_gpus)}


def _bare(uuid: str) -> str:
    """A UUID without NVML's "GPU-" or "MIG-" (torch gives it without), in lower case."""
    return (uuid.split("-", 1)[1] if uuid.startswith(("GPU-", "MIG-")) else uuid).lower()
