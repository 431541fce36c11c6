"""NVIDIA GPUs: CUDA_VISIBLE_DEVICES mapping, NvmlGpu over a fake pynvml, and this machine."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fake_pynvml import FakeNvmlDevice, FakePynvml, NVMLError_LibraryNotFound
from infergy.cli import app
from infergy.meter import NoSuchGpu, SensorError, nvml, open_meter
from infergy.meter.core import describe
from infergy.meter.nvml import NvmlGpu, visible_devices

UUIDS = [
    "GPU-8f3a1c2e-0000-1111-2222-333344445555",
    "GPU-8f3b9d00-6666-7777-8888-999900001111",
    "GPU-12ab34cd-aaaa-bbbb-cccc-ddddeeeeffff",
]


@pytest.fixture(autouse=True)
def _cuda_order(monkeypatch):
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# -- visible_devices -------------------------------------------------------------------------------


def test_unset_means_every_gpu():
    assert visible_devices(None, UUIDS) == ([0, 1, 2], [])


@pytest.mark.parametrize("setting", ["", "   "])
def test_empty_means_no_gpu(setting):
    assert visible_devices(setting, UUIDS) == ([], [])


def test_indices_in_cuda_order():
    assert visible_devices("1,0", UUIDS) == ([1, 0], [])
    assert visible_devices(" 2 , 0 ", UUIDS) == ([2, 0], [])


@pytest.mark.parametrize(
    "setting",
    [
        "GPU-12ab34cd-aaaa-bbbb-cccc-ddddeeeeffff,GPU-8f3a1c2e-0000-1111-2222-333344445555",
        "GPU-12ab,GPU-8f3a",  # unique prefixes
        "12ab34cd-aaaa-bbbb-cccc-ddddeeeeffff,8f3a1c2e",  # without "GPU-"
        "12ab,0",  # UUID and index mixed
    ],
)
def test_uuid_and_uuid_prefix_entries(setting):
    assert visible_devices(setting, UUIDS) == ([2, 0], [])


@pytest.mark.parametrize(
    ("setting", "kept", "bad"),
    [
        ("0,3,1", [0], "3"),  # out of range
        ("2,-1,0", [2], "-1"),
        ("1,8f3,2", [1], "8f3"),  # prefix of two UUIDs
        ("1,GPU-ffff", [1], "GPU-ffff"),  # matches none
        ("0,1,0", [0, 1], "0"),  # duplicate
        ("0,,1", [0], ""),  # empty entry
        ("nonsense", [], "nonsense"),
    ],
)
def test_invalid_entry_ends_the_list_with_a_warning(setting, kept, bad):
    indices, warnings = visible_devices(setting, UUIDS)
    assert indices == kept
    assert len(warnings) == 1
    assert f"entry {bad!r}" in warnings[0]
    assert "every entry after it" in warnings[0]


def test_mig_instance_ends_the_list_with_a_warning():
    indices, warnings = visible_devices("1,MIG-5a1b2c3d-0000-1111-2222-333344445555,0", UUIDS)
    assert indices == [1]
    assert len(warnings) == 1
    assert "MIG" in warnings[0] and "not measured" in warnings[0]


MIXED = ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3"]


def test_different_models_without_pci_bus_order_warn(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    indices, warnings = visible_devices("0,1", UUIDS, MIXED)
    assert indices == [0, 1]
    assert len(warnings) == 1
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in warnings[0]


def test_different_models_with_pci_bus_order_do_not_warn(monkeypatch):
    assert visible_devices("0,1", UUIDS, MIXED) == ([0, 1], [])
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    assert visible_devices("0,1", UUIDS, MIXED)[1]


def test_same_model_machine_needs_no_order(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    same = ["NVIDIA H100 80GB HBM3"] * 3
    assert visible_devices("2,0", UUIDS, same) == ([2, 0], [])
    assert visible_devices(None, UUIDS, same) == ([0, 1, 2], [])


@pytest.mark.parametrize("setting", [None, "1", "0,2"])
def test_mixed_machine_without_pci_bus_order_always_warns(monkeypatch, setting):
    # NVML order H100, A100, H100; CUDA's FASTEST_FIRST order is H100, H100, A100:
    # CUDA_VISIBLE_DEVICES=1 is then the second H100 (NVML 2), not the A100 (NVML 1).
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    _, warnings = visible_devices(setting, UUIDS, MIXED)
    assert any("CUDA_DEVICE_ORDER=PCI_BUS_ID" in w for w in warnings)


# -- NvmlGpu over a fake pynvml --------------------------------------------------------------------


def fake(monkeypatch, *devices: FakeNvmlDevice, **kwargs) -> FakePynvml:
    module = FakePynvml(list(devices), **kwargs)
    monkeypatch.setattr(nvml, "pynvml", module)
    return module


def test_gpu_facts_and_units(monkeypatch):
    fake(monkeypatch, FakeNvmlDevice(UUIDS[0]), FakeNvmlDevice(UUIDS[1], name="NVIDIA A100"))
    gpu = NvmlGpu(1, cuda_index=0)
    assert gpu.name == "gpu1"
    assert gpu.info.kind == "gpu"
    assert gpu.info.model == "NVIDIA A100"
    assert gpu.info.has_counter
    assert gpu.info.power_sources == ("instant", "average")
    assert gpu.counter_range_j is None
    details = gpu.info.details
    assert details["uuid"] == UUIDS[1]
    assert details["nvml_index"] == 1 and details["cuda_index"] == 0
    assert details["driver"] == "570.86.15"
    assert details["power_limit_w"] == pytest.approx(700.0)  # mW -> W
    assert details["memory_gib"] == pytest.approx(80.0)  # bytes -> GiB


def test_counter_millijoules_become_joules(monkeypatch):
    device = FakeNvmlDevice(UUIDS[0], energy_mj=123_456_789)
    fake(monkeypatch, device)
    gpu = NvmlGpu(0)
    assert gpu.read_energy_j() == pytest.approx(123_456.789)
    device.energy_mj += 2_500
    assert gpu.read_energy_j() == pytest.approx(123_459.289)


def test_power_fields_milliwatts_become_watts(monkeypatch):
    device = FakeNvmlDevice(UUIDS[0], instant_mw=312_500, average_mw=250_250)
    fake(monkeypatch, device)
    gpu = NvmlGpu(0)
    assert gpu.read_power_w() == pytest.approx({"instant": 312.5, "average": 250.25})
    device.calls.clear()
    gpu.read_power_w()
    assert device.calls == ["fields"]  # one NVML call per power sample


def test_only_the_supported_power_field_is_read(monkeypatch):
    fake(monkeypatch, FakeNvmlDevice(UUIDS[0], instant_mw=None, average_mw=180_000))
    gpu = NvmlGpu(0)
    assert gpu.info.power_sources == ("average",)
    assert gpu.read_power_w() == {"average": pytest.approx(180.0)}


def test_unsupported_fields_fall_back_to_power_usage(monkeypatch):
    device = FakeNvmlDevice(UUIDS[0], instant_mw=None, average_mw=None, usage_mw=75_500)
    fake(monkeypatch, device)
    gpu = NvmlGpu(0)
    assert gpu.info.power_sources == ("usage",)
    assert gpu.read_power_w() == {"usage": pytest.approx(75.5)}


def test_old_nvidia_ml_py_without_power_field_constants_falls_back_to_usage(monkeypatch):
    module = fake(monkeypatch, FakeNvmlDevice(UUIDS[0], usage_mw=60_000))
    monkeypatch.delattr(FakePynvml, "NVML_FI_DEV_POWER_INSTANT")
    monkeypatch.delattr(FakePynvml, "NVML_FI_DEV_POWER_AVERAGE")
    assert not hasattr(module, "NVML_FI_DEV_POWER_INSTANT")
    gpu = NvmlGpu(0)
    assert gpu.info.power_sources == ("usage",)
    assert gpu.read_power_w() == {"usage": pytest.approx(60.0)}


def test_gpu_without_counter_or_power(monkeypatch):
    fake(monkeypatch, FakeNvmlDevice(UUIDS[0], energy_mj=None, instant_mw=None,
                                     average_mw=None, usage_mw=None, power_limit_mw=None))
    gpu = NvmlGpu(0)
    assert not gpu.info.has_counter
    assert gpu.read_energy_j() is None
    assert gpu.info.power_sources == ()
    assert gpu.read_power_w() == {}
    assert gpu.info.details["power_limit_w"] is None  # unsupported: None, not 0


def test_nvml_error_during_a_read_raises_sensor_error_naming_the_gpu(monkeypatch):
    device = FakeNvmlDevice(UUIDS[2])
    fake(monkeypatch, FakeNvmlDevice(UUIDS[0]), FakeNvmlDevice(UUIDS[1]), device)
    gpu = NvmlGpu(2)
    device.fail = True
    with pytest.raises(SensorError, match=r"^gpu2: energy counter: .*GPU is lost"):
        gpu.read_energy_j()
    with pytest.raises(SensorError, match=r"^gpu2: power fields: .*GPU is lost"):
        gpu.read_power_w()


def test_nvml_error_in_power_usage_raises_sensor_error(monkeypatch):
    device = FakeNvmlDevice(UUIDS[0], instant_mw=None, average_mw=None)
    fake(monkeypatch, device)
    gpu = NvmlGpu(0)
    device.fail = True
    with pytest.raises(SensorError, match=r"^gpu0: power usage: "):
        gpu.read_power_w()


def test_power_fields_that_stop_answering_raise_not_return_nothing(monkeypatch):
    device = FakeNvmlDevice(UUIDS[0])
    fake(monkeypatch, device)
    gpu = NvmlGpu(0)
    device.instant_mw = device.average_mw = None
    with pytest.raises(SensorError, match="gpu0: no power field answered"):
        gpu.read_power_w()


def test_state_is_none_for_what_the_driver_does_not_report(monkeypatch):
    fake(monkeypatch, FakeNvmlDevice(UUIDS[0]))
    assert NvmlGpu(0).state() == {"temperature_c": None, "sm_clock_mhz": None,
                                  "memory_clock_mhz": None, "utilization_pct": None}


# -- nvml_gpus, open_meter and describe over the fake ------------------------------------------


def test_nvml_gpus_follows_cuda_visible_devices(monkeypatch):
    fake(monkeypatch, *(FakeNvmlDevice(u) for u in UUIDS))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-12ab,1")
    gpus, missing, warnings = nvml.nvml_gpus()
    assert [g.name for g in gpus] == ["gpu2", "gpu1"]
    assert [g.info.details["cuda_index"] for g in gpus] == [0, 1]
    assert missing == [] and warnings == []


def test_nvml_gpus_reports_indices_that_do_not_exist(monkeypatch):
    fake(monkeypatch, FakeNvmlDevice(UUIDS[0]))
    gpus, missing, _ = nvml.nvml_gpus([0, 5])
    assert [g.name for g in gpus] == ["gpu0"]
    assert [u.what for u in missing] == ["gpu5"]
    assert "no GPU with NVML index 5" in missing[0].reason


def test_open_meter_over_fake_nvml(monkeypatch):
    module = fake(monkeypatch, *(FakeNvmlDevice(u) for u in UUIDS[:2]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with open_meter(idle_s=0, cpu=False, sync=lambda: None) as meter:
        assert [g.name for g in meter.gpus] == ["gpu1"]
        assert meter.unavailable == []
        assert module.initialised == 1
    assert module.initialised == 0  # closing the meter shuts NVML down


def test_describe_lists_every_gpu_and_which_are_visible(monkeypatch):
    module = fake(monkeypatch, *(FakeNvmlDevice(u) for u in UUIDS[:2]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    info = describe()
    assert [(g["name"], g["visible"], g["cuda_index"]) for g in info["gpus"]] == [
        ("gpu0", False, None),
        ("gpu1", True, 0),
    ]
    assert info["gpus"][1]["uuid"] == UUIDS[1]
    assert info["gpus"][1]["energy_counter"] is True
    assert module.initialised == 0


def test_open_meter_when_nvml_cannot_start(monkeypatch):
    fake(monkeypatch, init_error=NVMLError_LibraryNotFound(12))
    with open_meter(idle_s=0, cpu=False) as meter:
        assert meter.gpus == []
        assert [u.what for u in meter.unavailable] == ["gpu"]
        assert "NVML library not found" in meter.unavailable[0].reason


def test_without_nvidia_ml_py_the_meter_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(nvml, "pynvml", None)
    with open_meter(idle_s=0, cpu=False) as meter:
        assert meter.gpus == []
        assert "pip install nvidia-ml-py" in meter.unavailable[0].reason


# -- this machine: no NVIDIA driver ---------------------------------------------------------------


def test_open_meter_without_a_driver_measures_no_gpu_and_says_why():
    if nvml.nvml_init() is None:  # pragma: no cover - a machine with a GPU
        nvml.nvml_shutdown()
        pytest.skip("this machine has an NVIDIA driver")
    with open_meter(idle_s=0) as meter:
        assert meter.gpus == []
        gpu = [u for u in meter.unavailable if u.what == "gpu"]
        assert len(gpu) == 1
        assert "NVML" in gpu[0].reason
        with meter.window("work") as w:
            pass
    assert w.measurement.energy_j is None
    assert "NVML" in w.measurement.reason
    assert w.measurement.duration_s >= 0


# -- open_meter's gpus: CUDA indices, as torch numbers the visible GPUs --------------------------


@pytest.mark.parametrize(("setting", "gpus", "measured"), [
    (None, [1], ["gpu1"]),  # every GPU visible: CUDA index i is NVML index i
    (None, [2, 0], ["gpu2", "gpu0"]),
    ("2,1", [0], ["gpu2"]),  # the first visible GPU
    ("2,1", [1, 0], ["gpu1", "gpu2"]),
    ("GPU-12ab,0", [0], ["gpu2"]),  # visible by UUID
])
def test_open_meter_gpus_are_cuda_indices(monkeypatch, setting, gpus, measured):
    fake(monkeypatch, *(FakeNvmlDevice(u) for u in UUIDS))
    if setting is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", setting)
    with open_meter(gpus, idle_s=0, cpu=False, sync=lambda: None) as meter:
        assert [g.name for g in meter.gpus] == measured
        assert [g.info.details["cuda_index"] for g in meter.gpus] == gpus


@pytest.mark.parametrize(("setting", "gpus", "says"), [
    (None, [3], "no GPU of CUDA index 3: 3 visible, CUDA indices 0: NVIDIA H100 80GB HBM3 "
                "(gpu0), 1: NVIDIA H100 80GB HBM3 (gpu1), 2: NVIDIA H100 80GB HBM3 (gpu2)"),
    ("2", [0, 1], "no GPU of CUDA index 1: 1 visible with CUDA_VISIBLE_DEVICES='2', "
                  "CUDA indices 0: NVIDIA H100 80GB HBM3 (gpu2)"),
    ("", [0], "no GPU is visible to this process with CUDA_VISIBLE_DEVICES=''"),
])
def test_open_meter_refuses_a_cuda_index_past_the_visible_gpus(monkeypatch, setting, gpus,
                                                               says):
    module = fake(monkeypatch, *(FakeNvmlDevice(u) for u in UUIDS))
    if setting is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", setting)
    with pytest.raises(NoSuchGpu) as refused:
        open_meter(gpus, idle_s=0, cpu=False)
    assert str(refused.value) == says
    assert module.initialised == 0  # NVML shut down again


def test_open_meter_with_no_gpu_asked_measures_none_and_warns_of_nothing(monkeypatch):
    fake(monkeypatch, FakeNvmlDevice(UUIDS[0]), FakeNvmlDevice(UUIDS[1], name="NVIDIA A100"))
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    with open_meter([], idle_s=0, cpu=False) as meter:
        assert meter.gpus == [] and meter.warnings == []


def test_meter_command_gpus_are_cuda_indices(monkeypatch, tmp_path):
    fake(monkeypatch, *(FakeNvmlDevice(u) for u in UUIDS))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    out = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["meter", "--idle-s", "0", "--no-cpu", "--gpus", "1",
                                      "--json", "-o", str(out), "--", "true"])
    assert result.exit_code == 0, result.output
    devices = json.loads(out.read_text())["measurement"]["devices"]
    assert [d["device"] for d in devices] == ["gpu0"]  # CUDA index 1 of 2,0: NVML's 0


@pytest.mark.parametrize("gpus", ["2", "0,2", "5"])
def test_meter_command_refuses_gpus_past_the_visible_ones(monkeypatch, tmp_path, gpus):
    fake(monkeypatch, *(FakeNvmlDevice(u) for u in UUIDS))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    result = CliRunner().invoke(app, ["meter", "--idle-s", "0", "--gpus", gpus, "--",
                                      "touch", str(tmp_path / "ran")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"error: --gpus {gpus}: no GPU of CUDA index" in text
    assert "2 visible with CUDA_VISIBLE_DEVICES='2,0', CUDA indices 0: " in text
    assert not (tmp_path / "ran").exists()


def test_a_power_field_that_stops_answering_is_not_held_over_its_gap(monkeypatch):
    """NVML gives each field its own status: instant power failing while average power still
    answers left instant's last reading held to the window's end (100 J where the GPU drew
    about 370 J, a helper's review). A source with a gap is not integrated; one that answered
    every read is."""
    import time

    from infergy.meter import Meter
    device = FakeNvmlDevice(UUIDS[0], energy_mj=None, instant_mw=100_000, average_mw=100_000)
    fake(monkeypatch, device)
    meter = Meter([NvmlGpu(0)], sample_period_s=0.01, sync=lambda: None)
    try:
        with meter.window("gap") as w:
            time.sleep(0.1)
            device.instant_mw, device.average_mw = None, 400_000
            time.sleep(0.4)
    finally:
        meter.close()
    d = w.measurement.device("gpu0")
    assert d.method == "sampled:average"
    assert d.energy_j > 100.0 * w.measurement.duration_s * 2  # not instant's 100 W held
