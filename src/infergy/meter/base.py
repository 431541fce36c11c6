"""What every energy source looks like to a meter: a `Sensor` with a counter and/or power."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


class SensorError(RuntimeError):
    """A sensor could not be read. The message says which sensor and why."""


@dataclass(frozen=True)
class Unavailable:
    """A sensor that exists in principle but cannot be read here, and why."""

    what: str  # "gpu", "gpu3", "rapl", "cpu0", ...
    reason: str  # a sentence a user can act on


@dataclass(frozen=True)
class SensorInfo:
    """Static facts about one sensor, recorded with every measurement."""

    name: str  # short id used in results: "gpu0", "cpu0", "dram0"
    kind: str  # "gpu", "cpu" (a CPU package) or "dram"
    model: str  # "NVIDIA H100 80GB HBM3", "package-0", ...
    has_counter: bool  # a cumulative energy counter can be read
    power_sources: tuple[str, ...]  # power readings offered: "instant", "average", "usage"
    details: dict[str, object] = field(default_factory=dict)  # uuid, driver, power limit ...


class Sensor(ABC):
    """One energy source: a GPU, a CPU package or a DRAM zone.

    Reads are cheap and thread-safe; a failed read raises `SensorError`, never returns 0.
    """

    info: SensorInfo
    # Value at which the cumulative counter wraps to 0, in joules; None if it never wraps.
    counter_range_j: float | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @abstractmethod
    def read_energy_j(self) -> float | None:
        """The cumulative energy counter in joules (arbitrary origin), or None if the sensor
        has no counter. Raises SensorError when the read fails."""

    @abstractmethod
    def read_power_w(self) -> dict[str, float]:
        """Power readings in watts by source ("instant", "average", "usage"): the ones this
        sensor offers, possibly none. Raises SensorError when the read fails."""

    def state(self) -> dict[str, object]:
        """Conditions worth recording at a window edge (temperature, clocks); may be empty."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the sensor holds."""
