"""One engine under one meter: the load-measure-record routine that `measure`, `replay` and
the sweep's worker share.

A `Session` holds the meter over this run's GPUs and, where `parallel.launch` started this
process as one of several ranks, the `Ranks` whose window edges wait for all of them. It loads
one engine at a time under a "load" window, measures points (or replays) with it, and closes
the engine, the meter and the ranks in that order (the ranks after the meter's last edge).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from contextlib import nullcontext

from infergy.engines import engine_class, new_engine
from infergy.engines.decoding import Decoding
from infergy.models import get_model
from infergy.plan.point import Point
from infergy.run.parallel import Ranks, Telling, run_meter, tell_launch
from infergy.run.point import PointResult, measure_point


class Session:
    """A meter (and its ranks) with at most one engine loaded under it. Use as a context
    manager: leaving it closes the engine, the meter and the ranks."""

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
    def open(cls, device: str, tp: int, idle_s: float, rank: int | None = None, *,
             timeout_s: float | None = None) -> Session:
        """The meter of a run over `tp` GPUs, idle power measured first by rank 0 (or the
        only process); where `launch` started this process (`rank` not None) the ranks meet
        after it, each waiting up to `timeout_s` (default: rank 0's idle time and 600 s).
        ParallelError where they cannot meet (the meter closed)."""
        meter = run_meter(device, tp, idle_s, rank)
        if rank is None:
            return cls(meter)
        try:
            ranks = Ranks(device, tp, timeout_s=idle_s + 600 if timeout_s is None else timeout_s)
            ranks.attach(meter)
        except Exception:
            meter.close()
            raise
        return cls(meter, ranks)

    def load(self, engine: str, model: str, *, device: str, dtype: str = "bfloat16",
             seed: int = 0, tp: int = 1, options: dict | None = None, weights=None,
             decoding: str = "greedy", group=None) -> dict | None:
        """Load `model` in `engine` under a "load" window, closing the engine loaded before.
        Returns the load phase ({"time_s", "energy_j"}), or None where the engine loaded for
        the same `group` is kept. An engine that fails to load is closed and the error
        raised."""
        group = group if group is not None else (model, engine)
        if self.engine is not None and self.group == group:
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
