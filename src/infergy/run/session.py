"""One engine under one meter: the load-and-measure routine that `measure`, `replay` and the
sweep's worker share (each records what it measured in the store its own way: a run at a
time, `Store.record_run`, or a point at a time).

A `Session` holds the meter over this run's GPUs and, where `parallel.launch` started this
process as one of several ranks, the `Ranks` whose window edges wait for all of them. It loads
one engine at a time under a "load" window, measures points (or replays) with it, and closes
the engine, the meter and the ranks in that order (the ranks after the meter's last edge).
Before it, `place_this_process` says which part of a run this process plays (the only
process, a rank, or the one that launches the ranks) and opens the store it records in.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from infergy.engines import engine_class, new_engine
from infergy.engines.decoding import Decoding
from infergy.models import get_model
from infergy.plan.point import Point
from infergy.run.device import RunError, process_of, torch_device
from infergy.run.parallel import Ranks, Telling, launch, run_meter, tell_launch
from infergy.run.point import PointResult, measure_point
from infergy.store import Store


@dataclass
class Place:
    """This process's part of a run (`place_this_process`)."""

    device: str  # "cuda" or "cpu"
    rank: int | None  # among the ranks `launch` started; None: the only process
    speaks: bool  # records and reports: rank 0 (for all) or the only process
    store: Store | None  # the results store it records in, opened before any GPU work


def place_this_process(engine: str, tp: int, device: str, db: Path | None,
                       argv: list[str] | None) -> Place | int:
    """This process's place in a run of `engine` over `tp` GPUs on `device` (auto, cuda or
    cpu), with the store `db` opened where it records, before any GPU work. The process that
    starts a run of one process a GPU (hf-eager at TP > 1) launches the ranks instead, this
    command line (`argv`) run again, and gets their exit status."""
    device = torch_device(device, tp)
    split, rank, speaks = process_of(tp, engine_class(engine))
    store = Store(db) if db is not None and speaks else None
    if split and rank is None:  # the launching process: every check passed once
        if store is not None:
            store.close()  # rank 0 opens it again to record
        if argv is None:
            raise RunError("--tp with hf-eager starts its processes from the `infergy` "
                           "command line only")
        return launch(tp, argv)
    return Place(device, rank, speaks, store)


class Session:
    """A meter (and its ranks) with at most one engine loaded under it. Use as a context
    manager: leaving it closes the engine and the meter, and the ranks where it is left
    without an error (after one, the other ranks may be gone: leaving together would wait
    for them)."""

    def __init__(self, meter, ranks: Ranks | None = None,
                 tell: Callable[[BaseException], None] | None = None):
        self.meter = meter
        self.ranks = ranks
        # Told each failure of the engine as it happens, before a window's edge waits for
        # the other ranks: `launch` (a rank of a command run again) or rank 0 of a worker.
        self.tell = tell if tell is not None or ranks is None else tell_launch
        self.engine = None
        self.group: tuple | None = None  # what the loaded engine was loaded for

    @classmethod
    def start(cls, place: Place, tp: int, idle_s: float, *,
              status: Callable[[bool, str], object], notes: Callable[..., None]) -> Session:
        """The session of this process's `place` in a run over `tp` GPUs (`open`), with a
        status line while the idle power is measured; `notes` is told what cannot be
        measured here, by the process that speaks."""
        with status(place.speaks, f"infergy: measuring idle power for {idle_s:g} s ..."):
            session = cls.open(place.device, tp, idle_s, place.rank)
        for u in session.meter.unavailable if place.speaks else ():
            notes(f"not measurable: {u.what}: {u.reason}", "dim")
        return session

    @classmethod
    def open(cls, device: str, tp: int, idle_s: float, rank: int | None = None, *,
             timeout_s: float | None = None,
             tell: Callable[[BaseException], None] | None = None) -> Session:
        """The meter of a run over `tp` GPUs, idle power measured first by rank 0 (or the
        only process); where `launch` started this process (`rank` not None) the ranks meet
        after it, each waiting up to `timeout_s` (default: rank 0's idle time and 600 s), and
        `tell` (default: `launch`'s) is told each failure of the engine. ParallelError where
        the ranks cannot meet (the meter closed)."""
        meter = run_meter(device, tp, idle_s, rank)
        if rank is None:
            return cls(meter)
        try:
            ranks = Ranks(device, tp, timeout_s=idle_s + 600 if timeout_s is None else timeout_s)
            ranks.attach(meter)
        except Exception:
            meter.close()
            raise
        return cls(meter, ranks, tell)

    def load(self, engine: str, model: str, *, device: str, dtype: str = "bfloat16",
             seed: int = 0, tp: int = 1, options: dict | None = None, weights=None,
             decoding: str = "greedy", group=None) -> dict | None:
        """Load `model` in `engine` under a "load" window, closing the engine loaded before.
        Returns the load phase ({"time_s", "energy_j"}), or None where the engine loaded for
        the same `group` is kept. An engine that fails to load is closed and the error
        raised."""
        group = group if group is not None else (model, engine)
        if self.holds(group):
            return None
        self.drop_engine()
        loaded = new_engine(engine_class(engine), get_model(model), device=device, dtype=dtype,
                            seed=seed, weights=weights, options=options or {}, tp=tp)
        if self.tell is not None:
            loaded = Telling(loaded, self.tell)
        loaded.expect(Decoding.parse(decoding))  # an engine started for its decoding (vLLM)
        try:
            with self.meter.window("load") as window:
                loaded.load()
        except BaseException:
            loaded.close()
            raise
        self.engine, self.group = loaded, group
        return {"time_s": window.measurement.duration_s, "energy_j": window.measurement.energy_j}

    def holds(self, group) -> bool:
        """Whether the engine loaded for `group` is loaded."""
        return self.engine is not None and self.group == group

    def measure(self, point: Point, **options) -> PointResult:
        """`point` measured with the loaded engine (`measure_point`'s options)."""
        return measure_point(self.engine, point, self.meter, **options)

    def drop_engine(self) -> None:
        """Close the loaded engine and give its memory back."""
        if self.engine is not None:
            self.engine.close()
        self.engine = self.group = None
        gc.collect()
        torch = sys.modules.get("torch")  # only where an engine imported it
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self, *, ranks: bool = True) -> None:
        """Close the engine and the meter, then (with `ranks`) leave the ranks together,
        after the meter's last edge."""
        try:
            self.drop_engine()
        finally:
            self.meter.close()
            if ranks and self.ranks is not None:
                self.ranks.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind, *exc) -> None:
        # After a failure the other ranks may be gone: leaving together would wait for them.
        self.close(ranks=kind is None)


class Quiet(nullcontext):
    """A status line that says nothing: a rank other than 0, or a caller that shows none."""

    def __enter__(self) -> Quiet:
        return self

    def update(self, text: str) -> None:
        pass


def quiet(speaks: bool, text: str) -> Quiet:
    """The status of a run that shows none (the default of `measure` and `replay_trace`)."""
    return Quiet()
