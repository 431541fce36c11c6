"""CPU package and DRAM energy through Linux powercap (RAPL, Intel and AMD).

Each zone under /sys/class/powercap/intel-rapl:N[:M] has `name` (package-0, dram, core,
...), `energy_uj` (a counter in microjoules that wraps at `max_energy_range_uj`). Since
Linux 5.10 `energy_uj` is readable by root only. Packages and DRAM zones are measured; core
and uncore are parts of their package and are listed but not counted again.
"""

from __future__ import annotations

from pathlib import Path

from infergy.meter.base import Sensor, SensorError, SensorInfo, Unavailable

POWERCAP = Path("/sys/class/powercap")
MEASURED_ZONES = ("package", "dram")


class RaplZone(Sensor):
    """One RAPL zone: a CPU package ("cpuN") or its DRAM ("dramN")."""

    def __init__(self, path: Path, name: str, kind: str, zone: str):
        self.path = path
        self._energy_file = path / "energy_uj"
        self.counter_range_j = int((path / "max_energy_range_uj").read_text()) / 1e6
        self.info = SensorInfo(
            name=name,
            kind=kind,
            model=zone,
            has_counter=True,
            power_sources=(),
            details={"path": str(path)},
        )

    def read_energy_j(self) -> float:
        try:
            return int(self._energy_file.read_text()) / 1e6
        except (OSError, ValueError) as err:
            raise SensorError(f"{self.name}: {self._energy_file}: {err}") from err

    def read_power_w(self) -> dict[str, float]:
        return {}


def _zone_dirs(root: Path) -> list[Path]:
    # Top-level zones are intel-rapl:N, subzones intel-rapl:N:M; the bare control type
    # directory (intel-rapl) has no energy file. Sort numerically.
    dirs = [p for p in root.glob("intel-rapl:*") if (p / "name").exists()]
    return sorted(dirs, key=lambda p: [int(x) for x in p.name.split(":")[1:]])


def rapl_zones(root: Path = POWERCAP) -> tuple[list[RaplZone], list[Unavailable], list[dict]]:
    """The measurable RAPL zones, what could not be read and why, and every zone found.

    The third list describes all zones (name, path, readable, reason) for `infergy env`.
    """
    if not root.exists():
        return [], [Unavailable("rapl", f"{root} does not exist (no powercap: not Linux, "
                                        "a container without /sys/class/powercap, or a VM)")], []
    dirs = _zone_dirs(root)
    if not dirs:
        return [], [Unavailable("rapl", f"no RAPL zone under {root}")], []
    zones: list[RaplZone] = []
    missing: list[Unavailable] = []
    found: list[dict] = []
    for path in dirs:
        zone = (path / "name").read_text().strip()
        package = path.name.split(":")[1]
        kind = next((k for k in MEASURED_ZONES if zone.startswith(k)), None)
        name = f"{'cpu' if kind == 'package' else kind}{package}" if kind else None
        entry = {"zone": zone, "path": str(path), "measured_as": name, "readable": False,
                 "reason": None}
        try:
            int((path / "energy_uj").read_text())
            entry["readable"] = True
        except PermissionError:
            entry["reason"] = (f"permission denied reading {path / 'energy_uj'} (root only "
                               "since Linux 5.10: run as root or grant read access)")
        except (OSError, ValueError) as err:
            entry["reason"] = f"cannot read {path / 'energy_uj'}: {err}"
        found.append(entry)
        if name is None:
            continue
        if entry["reason"]:
            missing.append(Unavailable(name, entry["reason"]))
            continue
        try:
            zones.append(RaplZone(path, name, "cpu" if kind == "package" else "dram", zone))
        except (OSError, ValueError) as err:
            missing.append(Unavailable(name, f"cannot read {path / 'max_energy_range_uj'}: {err}"))
    return zones, missing, found
