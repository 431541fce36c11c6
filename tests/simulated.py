"""Test doubles for the meter: simulated sensors with known, exact energy.

Nothing here is used by the product. A simulated sensor's power is a step function of time
that the test sets; its cumulative counter is the exact integral of that power, updated only
every `update_s` seconds (quantised like NVML's counter) and optionally wrapping at
`counter_range_j` (like RAPL's). Reads can be made to fail, after a time or on demand.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from infergy.meter.base import Sensor, SensorError, SensorInfo


class SimulatedSensor(Sensor):
    """A simulated energy source with piecewise-constant power (W) over the meter's clock.

    `power_sources` are the power readings offered: "instant" (the power now), "average"
    (the mean over the last `average_window_s`) and "usage" (same as instant).
    `fail_after_s`: every read raises SensorError once that many seconds have passed since
    creation; `fail()` / `recover()` switch failures on and off now. `fail_reads` says which
    reads fail: "energy", "power" or both. `power_scale` makes the power readings (not the
    counter) read that factor of the true power, like a miscalibrated power sensor.
    `before_read(op)` is called at the start of each read ("energy" or "power") in the
    reading thread, for tests that order threads.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        *,
        power_w: float = 100.0,
        has_counter: bool = True,
        power_sources: tuple[str, ...] = ("instant", "average"),
        update_s: float = 0.02,
        counter_range_j: float | None = None,
        counter_start_j: float = 0.0,
        average_window_s: float = 1.0,
        power_scale: float = 1.0,
        fail_after_s: float | None = None,
        fail_reads: tuple[str, ...] = ("energy", "power"),
        state: dict[str, object] | None = None,
        before_read: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        model: str = "Simulated",
    ):
        self.clock = clock
        self.update_s = update_s
        self.counter_range_j = counter_range_j
        self.counter_start_j = counter_start_j
        self.average_window_s = average_window_s
        self.power_scale = power_scale
        self.fail_reads = fail_reads
        self.before_read = before_read
        self._state = dict(state or {})
        self._lock = threading.Lock()
        self.t0 = clock()
        # (time, watts) change points, in order; power is held between them.
        self._steps: list[tuple[float, float]] = [(self.t0, power_w)]
        self._fail_at = None if fail_after_s is None else self.t0 + fail_after_s
        self.reads = {"energy": 0, "power": 0}
        self.closed = False
        self.info = SensorInfo(
            name=name,
            kind=kind,
            model=model,
            has_counter=has_counter,
            power_sources=tuple(power_sources),
            details={"simulated": True},
        )

    # -- what the test controls --------------------------------------------------------------
    def set_power(self, watts: float) -> None:
        """From now on the sensor draws `watts`."""
        with self._lock:
            self._steps.append((self.clock(), watts))

    def fail(self) -> None:
        """Every read from now on raises SensorError."""
        self._fail_at = self.clock()

    def recover(self) -> None:
        self._fail_at = None

    # -- exact physics -------------------------------------------------------------------------
    def power_at(self, t: float) -> float:
        with self._lock:
            steps = list(self._steps)
        watts = steps[0][1]
        for start, w in steps:
            if start > t:
                break
            watts = w
        return watts

    def energy_between(self, a: float, b: float) -> float:
        """Exact energy in J drawn between clock times a and b."""
        with self._lock:
            steps = [*self._steps, (float("inf"), 0.0)]
        total = 0.0
        for (start, watts), (end, _) in itertools.pairwise(steps):
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                total += watts * (hi - lo)
        return total

    def true_counter_j(self, t: float) -> float:
        """The unquantised, unwrapped counter at time t."""
        return self.counter_start_j + self.energy_between(self.t0, t)

    # -- the Sensor interface ------------------------------------------------------------------
    def _check(self, op: str) -> None:
        if self.before_read is not None:
            self.before_read(op)
        self.reads[op] += 1
        if op in self.fail_reads and self._fail_at is not None and self.clock() >= self._fail_at:
            raise SensorError(f"{self.name}: simulated failure of the {op} read")

    def read_energy_j(self) -> float | None:
        self._check("energy")
        if not self.info.has_counter:
            return None
        t = self.clock()
        if self.update_s:
            t = self.t0 + int((t - self.t0) / self.update_s) * self.update_s
        value = self.true_counter_j(t)
        if self.counter_range_j:
            value %= self.counter_range_j
        return value

    def read_power_w(self) -> dict[str, float]:
        self._check("power")
        t = self.clock()
        out = {}
        for source in self.info.power_sources:
            if source in ("instant", "usage"):
                out[source] = self.power_at(t)
            elif source == "average":
                a = max(self.t0, t - self.average_window_s)
                out[source] = self.energy_between(a, t) / (t - a) if t > a else self.power_at(t)
        return {source: watts * self.power_scale for source, watts in out.items()}

    def state(self) -> dict[str, object]:
        return dict(self._state)

    def close(self) -> None:
        self.closed = True


class SimulatedGpu(SimulatedSensor):
    """A simulated NVIDIA GPU: energy counter (unless `has_counter=False`) and power readings."""

    def __init__(self, index: int = 0, **kwargs):
        kwargs.setdefault("model", "Simulated GPU")
        super().__init__(f"gpu{index}", "gpu", **kwargs)


class SimulatedRaplZone(SimulatedSensor):
    """A simulated RAPL zone ("cpu" package or "dram"): a wrapping counter, no power readings."""

    def __init__(self, name: str = "cpu0", kind: str = "cpu", **kwargs):
        kwargs.setdefault("power_sources", ())
        kwargs.setdefault("update_s", 0.001)
        kwargs.setdefault("counter_range_j", 262143.328850)
        kwargs.setdefault("model", "package-0" if kind == "cpu" else "dram")
        super().__init__(name, kind, **kwargs)
