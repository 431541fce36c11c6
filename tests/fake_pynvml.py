"""A test double of the `pynvml` module (nvidia-ml-py), for testing NvmlGpu without a GPU.

`FakePynvml(gpus=[FakeNvmlDevice(...), ...])` stands in for the module: it has the functions
infergy calls, with NVML's units (energy in mJ, power in mW, memory in bytes), its constants
and its error classes. Each FakeNvmlDevice says which readings its driver supports (None:
not supported) and can be made to fail with `fail = True`. Class names follow pynvml's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_UNKNOWN = 999
NVML_VALUE_TYPE_UNSIGNED_INT = 1


class NVMLError(Exception):
    def __init__(self, value: int = NVML_ERROR_UNKNOWN):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {NVML_ERROR_NOT_SUPPORTED: "Not Supported"}.get(self.value, "Unknown Error")


class NVMLError_NotSupported(NVMLError):
    def __init__(self):
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


class NVMLError_GpuIsLost(NVMLError):
    def __str__(self) -> str:
        return "GPU is lost"


@dataclass
class FakeNvmlDevice:
    """One fake GPU as the driver reports it. None for a reading: not supported."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: int | None = 123_456_789
    instant_mw: int | None = 250_000
    average_mw: int | None = 240_000
    usage_mw: int | None = 245_000
    power_limit_mw: int | None = 700_000
    memory_bytes: int | None = 80 * 2**30
    fail: bool = False  # every reading raises NVMLError (GPU lost)
    calls: list[str] = field(default_factory=list)


class FakePynvml:
    """Stands in for the pynvml module. Instances carry the devices; errors are attributes."""

    NVML_SUCCESS = NVML_SUCCESS
    NVML_FI_DEV_POWER_AVERAGE = 185
    NVML_FI_DEV_POWER_INSTANT = 186
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost

    def __init__(self, gpus: list[FakeNvmlDevice], driver: str = "570.86.15",
                 init_error: NVMLError | None = None):
        self.gpus = gpus
        self.driver = driver
        self.init_error = init_error
        self.initialised = 0

    # -- library ------------------------------------------------------------------------------
    def nvmlInit(self):
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.gpus):
            raise NVMLError(2)
        return self.gpus[index]

    # -- per device ---------------------------------------------------------------------------
    @staticmethod
    def _read(device: FakeNvmlDevice, what: str, value):
        device.calls.append(what)
        if device.fail:
            raise NVMLError_GpuIsLost(15)
        if value is None:
            raise NVMLError_NotSupported()
        return value

    def nvmlDeviceGetUUID(self, h):
        return h.uuid

    def nvmlDeviceGetName(self, h):
        return h.name

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return self._read(h, "energy", h.energy_mj)

    def nvmlDeviceGetPowerUsage(self, h):
        return self._read(h, "usage", h.usage_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return self._read(h, "limit", h.power_limit_mw)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=self._read(h, "memory", h.memory_bytes))

    def nvmlDeviceGetFieldValues(self, h, field_ids):
        h.calls.append("fields")
        if h.fail:
            raise NVMLError_GpuIsLost(15)
        by_id = {self.NVML_FI_DEV_POWER_INSTANT: h.instant_mw,
                 self.NVML_FI_DEV_POWER_AVERAGE: h.average_mw}
        out = []
        for fid in field_ids:
            mw = by_id.get(fid)
            out.append(SimpleNamespace(
                fieldId=fid,
                nvmlReturn=NVML_SUCCESS if mw is not None else NVML_ERROR_NOT_SUPPORTED,
                valueType=NVML_VALUE_TYPE_UNSIGNED_INT,
                value=SimpleNamespace(uiVal=mw if mw is not None else 0),
            ))
        return out
