"""Measurement windows: what one window read, and the arithmetic that turns it into energy.

A window collects, for each sensor, the cumulative counter and the power readings taken at
its two edges and by the meter's background sampler in between. Energy by counter is the sum
of the counter's steps (each step corrected for wrap-around); energy by sampled power is the
trapezoid integral of the readings over the window. Both are kept; the counter is trusted
where it exists, except in a window shorter than about two of its updates, where instant
power is.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from infergy.meter.base import Sensor, SensorError

if TYPE_CHECKING:
    from infergy.meter.core import Meter

# Power sources by preference for integration: instant readings follow the load; "average"
# (NVML's 1 s average) lags it; "usage" is whatever nvmlDeviceGetPowerUsage means on that GPU.
POWER_PREFERENCE = ("instant", "usage", "average")
# Counter update period / window duration above which instant power is trusted instead.
COARSE_COUNTER = 0.5


def counter_step(previous: float, current: float, range_j: float | None) -> float | None:
    """Energy in J between two readings of a cumulative counter that wraps at `range_j`.

    Returns None when the counter went backwards and does not wrap (driver reloaded)."""
    if current >= previous:
        return current - previous
    if range_j:
        return current + range_j - previous
    return None


def trapezoid_j(times_s: list[float], power_w: list[float], start_s: float, end_s: float) -> float:
    """Integral in J of power readings over [start_s, end_s], by trapezoids between readings.

    Beyond the first and last reading the power is held at that reading. A reading taken
    past the window's end (the end edge reads power after the counter, some milliseconds
    after the edge's time) only sets the power up to the end: the window is never integrated
    past it, so two windows sharing an edge (prefill, then decode) never both count the
    time between the edge and its reading."""
    if not times_s:
        raise ValueError("no power readings to integrate")
    if end_s <= start_s:
        return 0.0

    def at(t: float) -> float:  # the readings joined by straight lines, held flat past them
        if t <= times_s[0]:
            return power_w[0]
        if t >= times_s[-1]:
            return power_w[-1]
        i = bisect.bisect_right(times_s, t)
        share = (t - times_s[i - 1]) / (times_s[i] - times_s[i - 1])
        return power_w[i - 1] + share * (power_w[i] - power_w[i - 1])
    knots = [start_s, *(t for t in times_s if start_s < t < end_s), end_s]
    powers = [at(t) for t in knots]
    return sum(0.5 * (powers[i] + powers[i - 1]) * (knots[i] - knots[i - 1])
               for i in range(1, len(knots)))


def update_period_s(times_s: list[float], values: list[float]) -> float | None:
    """Mean time in s between changes of a polled counter, or None when it cannot be seen:
    fewer than 3 changes, or a counter polled too slowly (a change at more than half the
    readings: the estimate would be the polling period, not the counter's)."""
    changes = [t for i, t in enumerate(times_s[1:], 1) if values[i] != values[i - 1]]
    if len(changes) < 3 or len(changes) > len(values) / 2:
        return None
    return (changes[-1] - changes[0]) / (len(changes) - 1)


@dataclass(frozen=True)
class DeviceEnergy:
    """One sensor's share of a window. Energies in joules, power in watts, times in seconds.

    `energy_j` is the trusted figure (`method` says which); None with `reason` when it could
    not be determined. It is never 0 for a failed read."""

    device: str  # "gpu0" (NVML index), "cpu0" (CPU package), "dram0"
    kind: str  # "gpu", "cpu" or "dram"
    energy_j: float | None
    method: str | None  # "counter" or "sampled:<source>"
    counter_energy_j: float | None  # from the cumulative energy counter
    sampled_energy_j: float | None  # from integrated power readings
    sampled_source: str | None  # which power reading was integrated
    disagreement: float | None  # sampled / counter - 1
    idle_w: float | None  # this device's idle power, measured before
    active_energy_j: float | None  # energy_j - idle_w * duration: energy above idle
    avg_power_w: float | None  # energy_j / duration
    samples: int  # readings of this device in the window (edges included)
    counter_update_s: float | None  # observed period between counter updates
    resolution: float | None  # counter_update_s / duration: relative uncertainty of energy_j
    other_sampled_j: dict[str, float] = field(default_factory=dict)  # other power sources
    state_start: dict[str, object] = field(default_factory=dict)
    state_end: dict[str, object] = field(default_factory=dict)
    reason: str | None = None
    counter_reason: str | None = None  # why a counter was not used, where power was instead


@dataclass(frozen=True)
class Measurement:
    """What one window measured. GPU energy is the study's measure and `energy_j`; CPU
    package and DRAM energy (RAPL) are reported apart, never added to it."""

    name: str
    start_unix_s: float  # wall-clock time at the window's start
    duration_s: float
    devices: tuple[DeviceEnergy, ...]
    energy_j: float | None  # all measured GPUs; None if any is unknown or none is measured
    active_energy_j: float | None  # GPU energy above idle
    avg_power_w: float | None  # GPU energy / duration
    cpu_energy_j: float | None  # CPU packages (RAPL); None when not measured
    dram_energy_j: float | None  # DRAM (RAPL); None when not measured
    method: str | None  # how GPU energy was found: "counter", "sampled:instant", ...
    samples: int  # readings taken in the window, all devices
    failed: bool  # a sensor failed during the window: do not use it as a data point
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    reason: str | None = None  # why energy_j is None

    def device(self, name: str) -> DeviceEnergy:
        """The share of the device `name` ("gpu0", "cpu0", "dram0"); LookupError naming the
        devices measured where it is not one of them (a machine without that GPU)."""
        for d in self.devices:
            if d.device == name:
                return d
        measured = ", ".join(d.device for d in self.devices) or "none: no sensor could be read"
        raise LookupError(f"no device {name!r} in the measurement {self.name!r} (measured: "
                          f"{measured})")

    def to_dict(self) -> dict:
        return asdict(self)


class Reading(NamedTuple):
    """One read of a sensor. Each read happened at some instant within its (begin, end)."""

    counter_begin_s: float
    counter_end_s: float
    counter_j: float | None  # None: not read, or the read failed
    power_begin_s: float
    power_end_s: float
    power_w: dict[str, float] | None  # by source; None: the read failed
    error: str | None


def read_sensor(sensor: Sensor, clock, with_counter: bool = True) -> Reading:
    """Read a sensor's power, and its counter unless told not to, once."""
    error = counter = None
    t0 = clock()
    if with_counter:
        try:
            counter = sensor.read_energy_j()
        except SensorError as err:
            error = str(err)
    t1 = clock()
    try:
        power = sensor.read_power_w()
    except SensorError as err:
        power, error = None, (f"{error}; {err}" if error else str(err))
    return Reading(t0, t1, counter, t1, clock(), power, error)


@dataclass
class _Track:
    """Readings of one sensor within one window."""

    counter_t: list[float] = field(default_factory=list)
    counter_v: list[float] = field(default_factory=list)
    power_t: dict[str, list[float]] = field(default_factory=dict)
    power_v: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    counter_at_edges: int = 0  # counter reads that succeeded at the window's edges (want 2)
    power_failures: int = 0  # power reads that failed: the integral would have gaps
    power_reads: int = 0  # power reads kept; a source with fewer readings missed some
    counter_end_s: float = float("-inf")  # end of the last counter read kept
    power_end_s: float = float("-inf")

    def add(self, r: Reading) -> None:
        # Readings come from two threads (window edges, sampler). One whose read began
        # before the last kept read ended may have happened first: it is dropped, so the
        # counter never seems to run backwards (a whole wrap-around range, for RAPL).
        if r.counter_j is not None and r.counter_begin_s >= self.counter_end_s:
            self.counter_t.append((r.counter_begin_s + r.counter_end_s) / 2)
            self.counter_v.append(r.counter_j)
            self.counter_end_s = r.counter_end_s
        if r.power_w is None:
            self.power_failures += 1
        elif r.power_begin_s >= self.power_end_s:
            self.power_reads += 1
            for source, watts in r.power_w.items():
                self.power_t.setdefault(source, []).append((r.power_begin_s + r.power_end_s) / 2)
                self.power_v.setdefault(source, []).append(watts)
            self.power_end_s = r.power_end_s
        if r.error:
            self.errors.append(r.error)


@dataclass(frozen=True)
class Edge:
    """One reading of every sensor at a window edge, after waiting for the GPU."""

    unix_s: float  # wall-clock time
    t_s: float  # meter clock
    readings: tuple[Reading, ...]  # one per sensor
    states: tuple[dict, ...]  # one per sensor; empty unless asked for


def read_edge(meter: Meter, record_state: bool = False) -> Edge:
    """Wait for the GPU, then read every sensor of the meter once."""
    states = tuple(s.state() if record_state else {} for s in meter.sensors)
    meter.sync()
    unix_s, t_s = time.time(), meter.clock()
    readings = tuple(read_sensor(s, meter.clock) for s in meter.sensors)
    return Edge(unix_s, t_s, readings, states)


class Window:
    """An open measurement window. Close it with `stop()` (or leave its with-block); the
    result is then in `measurement`. `split` and `fork` open windows that share an edge with
    this one, so consecutive phases (prefill, then decode) cost one sensor read between them,
    and `Meter.stop(a, b)` closes several windows at one edge."""

    def __init__(self, meter: Meter, name: str, record_state: bool = False,
                 edge: Edge | None = None):
        self.meter = meter
        self.name = name
        self.measurement: Measurement | None = None
        self._record_state = record_state
        self._lock = threading.Lock()
        self._closed = False  # no more sampler readings
        self._tracks = [_Track() for _ in meter.sensors]
        self._start = edge or read_edge(meter, record_state)
        self.start_unix_s, self.start_s = self._start.unix_s, self._start.t_s
        self._add_edge(self._start)
        meter._register(self)

    def _add_edge(self, edge: Edge) -> None:
        for track, reading in zip(self._tracks, edge.readings, strict=True):
            track.add(reading)
            track.counter_at_edges += reading.counter_j is not None

    def add_reading(self, index: int, reading: Reading) -> None:
        """Called by the meter's sampler with one sensor's reading."""
        with self._lock:
            if not self._closed:
                self._tracks[index].add(reading)

    def _close(self) -> None:
        """Take no more sampler readings: each one kept has ended before the end edge."""
        with self._lock:
            self._closed = True
        self.meter._unregister(self)

    def stop(self) -> Measurement:
        """Close the window (waiting for the GPU first) and return its Measurement."""
        if self.measurement is None:
            self._close()
            self._finish(read_edge(self.meter, self._record_state))
        return self.measurement

    def split(self, name: str) -> Window:
        """Close this window and open the next one, `name`, at the same edge."""
        self._close()
        edge = read_edge(self.meter, self._record_state)
        self._finish(edge)
        return Window(self.meter, name, self._record_state, edge)

    def fork(self, name: str) -> Window:
        """Open another window, `name`, that starts where this one started."""
        return Window(self.meter, name, self._record_state, self._start)

    def _finish(self, end: Edge) -> None:
        with self._lock:
            self._add_edge(end)
            duration = end.t_s - self.start_s
            devices = [
                self._device_energy(sensor, track, duration, end.t_s, state_start, state_end)
                for sensor, track, state_start, state_end in zip(
                    self.meter.sensors, self._tracks, self._start.states, end.states, strict=True
                )
            ]
            self.measurement = summarize(
                self.name, self.start_unix_s, duration, devices, self.meter, self._tracks
            )

    def _device_energy(self, sensor: Sensor, track: _Track, duration: float, end_s: float,
                       state_start: dict, state_end: dict) -> DeviceEnergy:
        counter_j = None
        reason = None
        if sensor.info.has_counter:
            if track.counter_at_edges == 2:
                steps = [
                    counter_step(a, b, sensor.counter_range_j)
                    for a, b in zip(track.counter_v, track.counter_v[1:], strict=False)
                ]
                if None in steps:
                    reason = "energy counter went backwards (driver reloaded?)"
                else:
                    counter_j = sum(steps)
            else:
                reason = "energy counter not read at both window edges"
        # Power that could not be read for part of the window is not integrated: holding the
        # last reading over the gap would make a number up. A source that did not answer a
        # read the others answered (NVML gives each field its own status) has such a gap.
        sampled = {
            source: trapezoid_j(track.power_t[source], track.power_v[source], self.start_s, end_s)
            for source in POWER_PREFERENCE
            if 2 <= len(track.power_t.get(source, ())) == track.power_reads
            and not track.power_failures
        }
        source = next(iter(sampled), None)
        sampled_j = sampled.pop(source) if source else None
        period = update_period_s(track.counter_t, track.counter_v)
        period = period or self.meter.counter_update_s.get(sensor.name)
        # A window shorter than about two counter updates may see the counter step 0 or 2
        # times: instant power read at its edges and between them tells more there.
        coarse = period is not None and duration > 0 and period / duration > COARSE_COUNTER
        if counter_j is not None and not (coarse and source == "instant"):
            energy, method = counter_j, "counter"
        elif sampled_j is not None:
            energy, method = sampled_j, f"sampled:{source}"
        else:
            energy, method = None, None
            if track.power_failures:
                reason = (f"{reason}; " if reason else "") + (
                    f"{track.power_failures} power reads failed during the window")
            elif any(0 < len(track.power_t.get(s, ())) < track.power_reads
                     for s in POWER_PREFERENCE):
                reason = (f"{reason}; " if reason else "") + (
                    "a power field stopped answering during the window")
            reason = reason or "no energy counter and fewer than 2 power readings"
        idle_w = self.meter.idle_w.get(sensor.name)
        active = None if energy is None or idle_w is None else energy - idle_w * duration
        return DeviceEnergy(
            device=sensor.name,
            kind=sensor.info.kind,
            energy_j=energy,
            method=method,
            counter_energy_j=counter_j,
            sampled_energy_j=sampled_j,
            sampled_source=source,
            disagreement=(sampled_j / counter_j - 1) if sampled_j and counter_j else None,
            idle_w=idle_w,
            active_energy_j=active,
            avg_power_w=energy / duration if energy is not None and duration > 0 else None,
            samples=max(len(track.counter_v), len(track.power_t.get(source, ()))),
            counter_update_s=period if sensor.info.has_counter else None,
            resolution=(period / duration) if method == "counter" and period and duration > 0
            else None,
            other_sampled_j=sampled,
            state_start=state_start,
            state_end=state_end,
            reason=None if energy is not None else reason,
            counter_reason=reason if energy is not None and counter_j is None else None,
        )

    def __enter__(self) -> Window:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _total(devices: list[DeviceEnergy], kind: str, attr: str) -> float | None:
    values = [getattr(d, attr) for d in devices if d.kind == kind]
    if not values or None in values:
        return None
    return sum(values)


def summarize(name: str, start_unix_s: float, duration: float, devices: list[DeviceEnergy],
              meter: Meter, tracks: list[_Track]) -> Measurement:
    """Totals, warnings and failure of a window from its devices' figures."""
    errors = tuple(e for t in tracks for e in t.errors)
    warnings: list[str] = []
    gpus = [d for d in devices if d.kind == "gpu"]
    coarse = [d for d in devices if d.resolution is not None and d.resolution > meter.precision]
    if coarse:  # one warning for them all: the GPUs of a window of TP 4 would give four alike
        update_s = max(d.counter_update_s for d in coarse)
        counters = ("its energy counter updates" if len(coarse) == 1
                    else "their energy counters update")
        warnings.append(
            f"{', '.join(d.device for d in coarse)}: window of {duration:.3g} s is too short "
            f"for {meter.precision:.1%} precision: {counters} every {update_s * 1000:.0f} ms "
            f"(±{max(d.resolution for d in coarse):.1%}); measure at least "
            f"{update_s / meter.precision:.3g} s or repeat"
        )
    for d in devices:
        if d.counter_reason:  # never silently: the counter is the trusted figure
            warnings.append(f"{d.device}: {d.counter_reason}: energy from sampled "
                            f"{d.sampled_source} power instead")
        if d.method == "sampled:instant" and d.counter_energy_j is not None:
            warnings.append(
                f"{d.device}: window of {duration:.3g} s is shorter than two updates of the "
                f"energy counter ({d.counter_update_s * 1000:.0f} ms): energy from instant "
                f"power at {d.samples} readings instead (counter said "
                f"{d.counter_energy_j:.4g} J)"
            )
        if (d.disagreement is not None and abs(d.disagreement) > meter.disagreement_warn
                and duration >= 2.0):
            warnings.append(
                f"{d.device}: counter and sampled {d.sampled_source} power disagree by "
                f"{d.disagreement:+.1%}"
            )
    energy = _total(devices, "gpu", "energy_j")
    reason = None
    if not gpus:
        reason = "no GPU measured: " + (
            "; ".join(u.reason for u in meter.unavailable if u.what.startswith("gpu"))
            or "none selected"
        )
    elif energy is None:
        reason = "; ".join(f"{d.device}: {d.reason}" for d in gpus if d.reason)
    methods = sorted({d.method for d in gpus if d.method})
    return Measurement(
        name=name,
        start_unix_s=start_unix_s,
        duration_s=duration,
        devices=tuple(devices),
        energy_j=energy,
        active_energy_j=_total(devices, "gpu", "active_energy_j"),
        avg_power_w=energy / duration if energy is not None and duration > 0 else None,
        cpu_energy_j=_total(devices, "cpu", "energy_j"),
        dram_energy_j=_total(devices, "dram", "energy_j"),
        method="+".join(methods) or None,
        samples=sum(d.samples for d in devices),
        failed=bool(errors),
        errors=errors,
        warnings=tuple(dict.fromkeys(warnings)),
        reason=reason,
    )
