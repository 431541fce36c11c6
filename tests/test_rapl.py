"""CPU package and DRAM energy through a fake powercap tree built in tmp_path."""

from __future__ import annotations

import functools
import os
import pathlib
import time

import pytest

from infergy.meter import SensorError, open_meter, rapl
from infergy.meter.rapl import RaplZone, rapl_zones

RANGE_UJ = 262_143_328_850  # a real package range: 262143.32885 J


def write_zone(root: pathlib.Path, zone: str, name: str, energy_uj: int,
               range_uj: int = RANGE_UJ) -> pathlib.Path:
    path = root / zone
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return path


def set_energy(path: pathlib.Path, energy_uj: int) -> None:
    """Rewrite a zone's counter atomically, as the kernel presents it."""
    tmp = path / "energy_uj.tmp"
    tmp.write_text(f"{energy_uj}\n")
    os.replace(tmp, path / "energy_uj")


@pytest.fixture
def powercap(tmp_path) -> pathlib.Path:
    """Two packages; package 0 has core and dram subzones (flat, as /sys/class/powercap)."""
    root = tmp_path / "powercap"
    root.mkdir()
    (root / "intel-rapl").mkdir()  # the control type directory: no zone
    write_zone(root, "intel-rapl:0", "package-0", 1_500_000)
    write_zone(root, "intel-rapl:0:0", "core", 700_000)
    write_zone(root, "intel-rapl:0:1", "dram", 250_000, range_uj=65_532_610_987)
    write_zone(root, "intel-rapl:1", "package-1", 2_000_001)
    return root


def deny_reading(monkeypatch, target: pathlib.Path) -> None:
    """Make `target` unreadable: chmod 000, or where root reads anyway, a PermissionError
    from Path.read_text for that file."""
    if os.geteuid() != 0:
        target.chmod(0)
        return
    read_text = pathlib.Path.read_text

    def guarded(self, *args, **kwargs):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", guarded)


def test_packages_and_dram_are_measured_core_is_not(powercap):
    zones, missing, found = rapl_zones(powercap)
    assert [(z.name, z.info.kind, z.info.model) for z in zones] == [
        ("cpu0", "cpu", "package-0"),
        ("dram0", "dram", "dram"),
        ("cpu1", "cpu", "package-1"),
    ]
    assert missing == []
    assert [(f["zone"], f["measured_as"], f["readable"]) for f in found] == [
        ("package-0", "cpu0", True),
        ("core", None, True),  # part of package-0: listed, not counted again
        ("dram", "dram0", True),
        ("package-1", "cpu1", True),
    ]
    assert all(z.info.has_counter and z.info.power_sources == () for z in zones)


def test_zones_sort_numerically(tmp_path):
    root = tmp_path / "powercap"
    for n in (10, 2, 1):
        write_zone(root, f"intel-rapl:{n}", f"package-{n}", 1)
    assert [z.name for z in rapl_zones(root)[0]] == ["cpu1", "cpu2", "cpu10"]


def test_microjoules_become_joules(powercap):
    zones = {z.name: z for z in rapl_zones(powercap)[0]}
    assert zones["cpu0"].read_energy_j() == pytest.approx(1.5)
    assert zones["cpu1"].read_energy_j() == pytest.approx(2.000001)
    assert zones["dram0"].read_energy_j() == pytest.approx(0.25)
    assert zones["cpu0"].counter_range_j == pytest.approx(262_143.32885)
    assert zones["dram0"].counter_range_j == pytest.approx(65_532.610987)
    assert zones["cpu0"].read_power_w() == {}


def test_missing_powercap_is_unavailable_with_a_reason(tmp_path):
    zones, missing, found = rapl_zones(tmp_path / "no-such-dir")
    assert zones == [] and found == []
    assert len(missing) == 1
    assert missing[0].what == "rapl"
    assert "does not exist" in missing[0].reason


def test_powercap_without_rapl_zones_is_unavailable(tmp_path):
    (tmp_path / "intel-rapl").mkdir()
    zones, missing, _ = rapl_zones(tmp_path)
    assert zones == []
    assert missing[0].what == "rapl"
    assert "no RAPL zone" in missing[0].reason


def test_unreadable_counter_says_permission_denied(powercap, monkeypatch):
    deny_reading(monkeypatch, powercap / "intel-rapl:1" / "energy_uj")
    zones, missing, found = rapl_zones(powercap)
    assert [z.name for z in zones] == ["cpu0", "dram0"]
    assert [u.what for u in missing] == ["cpu1"]
    assert "permission denied" in missing[0].reason
    assert "root" in missing[0].reason  # says what to do
    entry = next(f for f in found if f["zone"] == "package-1")
    assert entry["readable"] is False
    assert entry["reason"] == missing[0].reason


def test_garbage_counter_is_unavailable_not_zero(powercap):
    (powercap / "intel-rapl:1" / "energy_uj").write_text("not a number\n")
    zones, missing, _ = rapl_zones(powercap)
    assert "cpu1" not in [z.name for z in zones]
    assert missing[0].what == "cpu1"
    assert "cannot read" in missing[0].reason


def test_missing_range_is_unavailable(powercap):
    (powercap / "intel-rapl:1" / "max_energy_range_uj").unlink()
    zones, missing, _ = rapl_zones(powercap)
    assert [z.name for z in zones] == ["cpu0", "dram0"]
    assert missing[0].what == "cpu1"
    assert "max_energy_range_uj" in missing[0].reason


def test_failed_read_raises_sensor_error_naming_the_zone(powercap):
    zone = next(z for z in rapl_zones(powercap)[0] if z.name == "cpu1")
    (powercap / "intel-rapl:1" / "energy_uj").unlink()
    with pytest.raises(SensorError, match=r"^cpu1: .*energy_uj"):
        zone.read_energy_j()


def test_counter_wrap_inside_a_window(powercap, make_meter):
    path = powercap / "intel-rapl:0"
    set_energy(path, 262_000_000_000)  # 262000 J, close to the 262143.32885 J range
    zone = RaplZone(path, "cpu0", "cpu", "package-0")
    meter = make_meter([zone], sample_period_s=None)
    w = meter.start("work")
    set_energy(path, 100_000_000)  # wrapped: now 100 J
    m = w.stop()
    expected = 100.0 + 262_143.32885 - 262_000.0
    assert m.device("cpu0").energy_j == pytest.approx(expected)
    assert m.device("cpu0").method == "counter"
    assert m.cpu_energy_j == pytest.approx(expected)
    assert m.energy_j is None  # CPU energy is never GPU energy


def test_counter_steps_with_the_sampler_following_the_counter(powercap, make_meter):
    path = powercap / "intel-rapl:0"
    set_energy(path, 262_100_000_000)
    zone = RaplZone(path, "cpu0", "cpu", "package-0")
    meter = make_meter([zone], sample_period_s=0.01, counter_period_s=0.01)
    with meter.window("work") as w:
        for value_uj in (262_130_000_000, 5_000_000, 15_000_000):
            time.sleep(0.05)
            set_energy(path, value_uj)
        time.sleep(0.05)
    # +30 J to 262130 J, wrap to 5 J, then +10 J
    assert w.measurement.cpu_energy_j == pytest.approx(30 + (262_143.32885 - 262_130 + 5) + 10)
    assert not w.measurement.failed


def test_open_meter_adds_readable_zones_and_lists_the_others(powercap, monkeypatch):
    deny_reading(monkeypatch, powercap / "intel-rapl:0:1" / "energy_uj")
    monkeypatch.setattr(rapl, "rapl_zones", functools.partial(rapl_zones, powercap))
    with open_meter(idle_s=0, sync=lambda: None) as meter:
        assert [s.name for s in meter.sensors if s.info.kind != "gpu"] == ["cpu0", "cpu1"]
        assert "dram0" in [u.what for u in meter.unavailable]
    with open_meter(idle_s=0, cpu=False, sync=lambda: None) as meter:
        assert [s for s in meter.sensors if s.info.kind != "gpu"] == []
