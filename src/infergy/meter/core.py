"""The meter: a set of sensors, a background power sampler, idle power, and windows."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from infergy import provenance
from infergy.meter import nvml, rapl
from infergy.meter.base import Sensor, Unavailable
from infergy.meter.window import Measurement, Window, read_edge, read_sensor

DEFAULT_SAMPLE_PERIOD_S = 0.05
DEFAULT_COUNTER_PERIOD_S = 1.0
IDLE_SAMPLE_PERIOD_S = 0.02
DEFAULT_IDLE_S = 5.0
DEFAULT_PRECISION = 0.01


def cuda_sync() -> None:
    """Wait for every CUDA device this process uses, if torch is already in use here.

    torch is never imported for this: a process that has not imported it has no GPU work of
    its own in flight."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    for device in range(torch.cuda.device_count()):
        torch.cuda.synchronize(device)


class Meter:
    """Measures energy over windows, for every sensor it holds.

    `sample_period_s` is the background sampler's period (None: no sampler, edges only).
    The sampler reads power every period but the energy counter only every
    `counter_period_s`: the window edges give the counter energy, and between them the
    counter is read only to follow wrap-arounds (RAPL) and its update period. One NVML
    counter read takes about 4 ms on an H100 (a power read about 10 µs), and reading it often
    slows a launch-bound workload by several percent (docs/measurements.md).
    `precision` is the relative precision asked of a window: shorter windows are flagged.
    `sync` is called at every window edge so that queued GPU work lands in the right window.
    `share(value)` returns the value every process measuring together takes for a decision
    each could make on its own timings (how many runs a window holds): the value itself here,
    rank 0's where ranks split a model (`Ranks.attach`), so they run the same work.
    """

    def __init__(
        self,
        sensors: Sequence[Sensor],
        *,
        unavailable: Sequence[Unavailable] = (),
        warnings: Sequence[str] = (),
        sample_period_s: float | None = DEFAULT_SAMPLE_PERIOD_S,
        counter_period_s: float = DEFAULT_COUNTER_PERIOD_S,
        precision: float = DEFAULT_PRECISION,
        disagreement_warn: float = 0.05,
        sync: Callable[[], None] = cuda_sync,
        clock: Callable[[], float] = time.perf_counter,
        on_close: Callable[[], None] | None = None,
    ):
        if sample_period_s is not None and sample_period_s <= 0:
            raise ValueError(f"sample_period_s must be positive or None, got {sample_period_s}")
        if not 0 < precision < 1:
            raise ValueError(f"precision must be between 0 and 1, got {precision}")
        self.sensors = list(sensors)
        self.unavailable = list(unavailable)
        self.warnings = list(warnings)
        self.sample_period_s = sample_period_s
        self.counter_period_s = counter_period_s
        self.precision = precision
        self.disagreement_warn = disagreement_warn
        self.sync = sync
        self.share: Callable[[Any], Any] = lambda value: value
        self.clock = clock
        self.idle_w: dict[str, float] = {}  # per sensor, from measure_idle
        self.counter_update_s: dict[str, float] = {}  # per sensor, observed at idle
        self.idle: Measurement | None = None
        self.sampler_cpu_s = 0.0  # CPU time the sampler thread has used: its cost
        self._on_close = on_close
        self._windows: list[Window] = []
        self._lock = threading.Lock()
        self._sampler_stop: threading.Event | None = None  # set: the running sampler ends
        self._thread: threading.Thread | None = None

    @property
    def gpus(self) -> list[Sensor]:
        return [s for s in self.sensors if s.info.kind == "gpu"]

    # -- windows -----------------------------------------------------------------------------
    def start(self, name: str, *, record_state: bool = False) -> Window:
        """Open a window now; close it with `.stop()`, which returns its Measurement.
        With `record_state`, temperatures and clocks are read at both edges."""
        return Window(self, name, record_state=record_state)

    @contextmanager
    def window(self, name: str, *, record_state: bool = False) -> Iterator[Window]:
        """`with meter.window("decode") as w: ...`; then `w.measurement`."""
        w = self.start(name, record_state=record_state)
        try:
            yield w
        finally:
            w.stop()

    def stop(self, *windows: Window) -> list[Measurement]:
        """Close several windows at one edge (one sensor read); their Measurements."""
        open_windows = [w for w in windows if w.measurement is None]
        for w in open_windows:
            w._close()
        if open_windows:
            edge = read_edge(self, any(w._record_state for w in open_windows))
            for w in open_windows:
                w._finish(edge)
        return [w.measurement for w in windows]

    def measure_idle(self, seconds: float = DEFAULT_IDLE_S) -> Measurement:
        """Hold still for `seconds` and record each sensor's idle power (W), which later
        windows subtract to give energy above idle. Run it with the GPUs at rest.

        The counter is polled at every sampler tick here, every 20 ms at most, to observe its
        update period (which NVML does not report)."""
        if self._windows:
            raise RuntimeError("measure idle power with no window open: the GPUs must be at rest")
        saved = self.counter_period_s, self.sample_period_s
        self.counter_period_s = 0.0
        if self.sample_period_s:
            self.sample_period_s = min(self.sample_period_s, IDLE_SAMPLE_PERIOD_S)
        try:
            with self.window("idle", record_state=True) as w:
                time.sleep(seconds)
        finally:
            self.counter_period_s, self.sample_period_s = saved
        m = w.measurement
        self.idle = m
        for d in m.devices:
            if d.avg_power_w is not None:
                self.idle_w[d.device] = d.avg_power_w
            if d.counter_update_s is not None:
                self.counter_update_s[d.device] = d.counter_update_s
            busy = d.state_end.get("utilization_pct")
            if busy:
                idle = "n/a" if d.avg_power_w is None else f"{d.avg_power_w:.1f} W"
                self.warnings.append(
                    f"{d.device} was {busy}% busy while idle power was measured: "
                    f"idle {idle} is overstated"
                )
        return m

    # -- the sampler ---------------------------------------------------------------------------
    def _register(self, window: Window) -> None:
        with self._lock:
            self._windows.append(window)
            # The sampler runs while at least one window is open; each run has its own stop.
            if self.sample_period_s and self._sampler_stop is None:
                self._sampler_stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._sample, args=(self._sampler_stop,), name="infergy-sampler",
                    daemon=True,
                )
                self._thread.start()

    def _unregister(self, window: Window) -> None:
        with self._lock:
            if window in self._windows:
                self._windows.remove(window)
            if not self._windows and self._sampler_stop is not None:
                self._sampler_stop.set()
                self._sampler_stop = None

    def _sample(self, stop: threading.Event) -> None:
        period = self.sample_period_s
        next_tick = self.clock() + period
        next_counter = self.clock() + self.counter_period_s
        while not stop.wait(max(0.0, next_tick - self.clock())):
            next_tick += period
            if next_tick < self.clock():  # fell behind (slow reads): skip, do not burst
                next_tick = self.clock() + period
            with_counter = self.clock() >= next_counter
            if with_counter:
                next_counter = self.clock() + self.counter_period_s
            cpu_start = time.thread_time()
            for i, sensor in enumerate(self.sensors):
                reading = read_sensor(sensor, self.clock, with_counter)
                with self._lock:
                    windows = list(self._windows)
                for w in windows:
                    w.add_reading(i, reading)
            self.sampler_cpu_s += time.thread_time() - cpu_start

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        for w in list(self._windows):
            w.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sensor in self.sensors:
            sensor.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_meter(
    gpus: Sequence[int] | None = None,
    *,
    limit: int | None = None,
    cpu: bool = True,
    idle_s: float = DEFAULT_IDLE_S,
    sample_period_s: float | None = DEFAULT_SAMPLE_PERIOD_S,
    precision: float = DEFAULT_PRECISION,
    sync: Callable[[], None] = cuda_sync,
) -> Meter:
    """A Meter over this machine's sensors, its idle power measured for `idle_s` seconds.

    `gpus` are CUDA indices, as torch numbers the GPUs this process can use
    (CUDA_VISIBLE_DEVICES, matched to NVML by UUID): NoSuchGpu, naming those there are, for
    one past them. By default every GPU this process can use, the first `limit` of them where
    given; `[]` measures none. Sensors keep NVML's names (`gpu2`: NVML index 2) and record
    their CUDA index. `cpu` adds RAPL package and DRAM zones where readable. Sensors that
    cannot be read are listed in `meter.unavailable` with the reason; a meter with no sensor
    still measures time. `idle_s=0` skips the idle measurement (no energy above idle then).
    """
    sensors: list[Sensor] = []
    unavailable: list[Unavailable] = []
    warnings: list[str] = []
    on_close = None
    reason = nvml.nvml_init()
    if reason is None:
        try:
            found, missing, warnings = nvml.nvml_gpus(
                limit=limit, cuda=list(gpus) if gpus is not None else None)
        except nvml.NoSuchGpu:
            nvml.nvml_shutdown()
            raise
        sensors += found
        unavailable += missing
        on_close = nvml.nvml_shutdown
    else:
        unavailable.append(Unavailable("gpu", reason))
    if cpu:
        zones, missing, _ = rapl.rapl_zones()
        sensors += zones
        unavailable += missing
    meter = Meter(
        sensors,
        unavailable=unavailable,
        warnings=warnings,
        sample_period_s=sample_period_s,
        precision=precision,
        sync=sync,
        on_close=on_close,
    )
    if idle_s > 0 and sensors:
        meter.measure_idle(idle_s)
    return meter


def describe() -> dict:
    """What can be measured here: every GPU NVML sees (visible to this process or not), the
    RAPL zones, the reasons for what cannot be read, software versions and host."""
    gpus: list[dict] = []
    unavailable: list[Unavailable] = []
    warnings: list[str] = []
    reason = nvml.nvml_init()
    if reason is None:
        try:
            every, missing, _ = nvml.nvml_gpus(list(range(nvml.device_count())))
            visible, _, warnings = nvml.nvml_gpus()
            cuda_index = {g.info.details["uuid"]: g.info.details["cuda_index"] for g in visible}
            unavailable += missing
            for g in every:
                gpus.append({
                    "name": g.name,
                    "model": g.info.model,
                    "visible": g.info.details["uuid"] in cuda_index,
                    "energy_counter": g.info.has_counter,
                    "power_sources": list(g.info.power_sources),
                    **g.info.details,
                    "cuda_index": cuda_index.get(g.info.details["uuid"]),
                })
        finally:
            nvml.nvml_shutdown()
    else:
        unavailable.append(Unavailable("gpu", reason))
    _, missing, zones = rapl.rapl_zones()
    unavailable += missing
    return {
        "gpus": gpus,
        "rapl_zones": zones,
        "unavailable": [{"what": u.what, "reason": u.reason} for u in unavailable],
        "warnings": warnings,
        "versions": provenance.software_versions(),
        "host": provenance.host(),
    }

