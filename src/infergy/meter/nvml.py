"""NVIDIA GPUs through NVML (nvidia-ml-py): the energy counter, power readings, device mapping.

The cumulative energy counter (`nvmlDeviceGetTotalEnergyConsumption`, millijoules since the
driver loaded; Volta and newer) is the primary source. Power comes from the field values
`NVML_FI_DEV_POWER_INSTANT` and `NVML_FI_DEV_POWER_AVERAGE` (a 1 s average) where the driver
offers them, else from `nvmlDeviceGetPowerUsage`, whose meaning varies by generation.
"""

from __future__ import annotations

import contextlib
import os
import threading

from infergy.meter.base import Sensor, SensorError, SensorInfo, Unavailable

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but keep the meter usable without it
    pynvml = None

_FIELD_SOURCES = {"instant": "NVML_FI_DEV_POWER_INSTANT", "average": "NVML_FI_DEV_POWER_AVERAGE"}
_VALUE_ATTR = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}

_init_lock = threading.Lock()


def nvml_init() -> str | None:
    """Initialise NVML (reference-counted). Returns None on success, else why it failed."""
    if pynvml is None:
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    with _init_lock:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            return "NVML library not found: no NVIDIA driver on this machine"
        except pynvml.NVMLError as err:
            return f"NVML failed to initialise: {err}"
    return None


def nvml_shutdown() -> None:
    with _init_lock, contextlib.suppress(Exception):
        pynvml.nvmlShutdown()


def visible_devices(
    setting: str | None, uuids: list[str], names: list[str] | None = None
) -> tuple[list[int], list[str]]:
    """Map a CUDA_VISIBLE_DEVICES value to NVML device indices, as CUDA reads it.

    `uuids[i]` and `names[i]` are the UUID ("GPU-...") and model of NVML device i. Entries are
    integers (CUDA indices, taken as NVML's PCI-bus order) or UUID prefixes. As in CUDA, the
    list ends at the first invalid entry. Returns the NVML indices in CUDA order and
    warnings for the user.
    """
    warnings: list[str] = []
    indices: list[int] = []
    by_number = setting is None
    if setting is None:
        indices = list(range(len(uuids)))
    elif setting.strip():
        for raw in setting.split(","):
            entry = raw.strip()
            index: int | None = None
            if entry.lstrip("-").isdigit():
                by_number = True
                n = int(entry)
                index = n if 0 <= n < len(uuids) else None
            elif entry.startswith("MIG-"):
                warnings.append(
                    f"CUDA_VISIBLE_DEVICES entry {entry!r} is a MIG instance: NVML measures "
                    "whole GPUs, so it is not measured"
                )
                break
            elif entry:
                prefix = entry if entry.startswith("GPU-") else f"GPU-{entry}"
                matches = [i for i, u in enumerate(uuids) if u.startswith(prefix)]
                index = matches[0] if len(matches) == 1 else None
            if index is None or index in indices:
                warnings.append(
                    f"CUDA_VISIBLE_DEVICES entry {entry!r} matches no single GPU here "
                    f"({len(uuids)} found): CUDA ignores it and every entry after it"
                )
                break
            indices.append(index)
    # CUDA numbers GPUs fastest first unless told otherwise; NVML in PCI-bus order. The two
    # agree only when all GPUs of the machine are of one model.
    if (
        by_number
        and names
        and len(set(names)) > 1
        and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID"
    ):
        warnings.append(
            "this machine has GPUs of different models and CUDA_DEVICE_ORDER is not "
            "PCI_BUS_ID: CUDA may number them differently from NVML, so the GPU measured may "
            "not be the one used; set CUDA_DEVICE_ORDER=PCI_BUS_ID or name GPUs by UUID"
        )
    return indices, warnings


def _error(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


class NvmlGpu(Sensor):
    """One NVIDIA GPU. `index` is its NVML index (PCI-bus order)."""

    def __init__(self, index: int, cuda_index: int | None = None):
        self.index = index
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        uuid = pynvml.nvmlDeviceGetUUID(self._handle)
        model = pynvml.nvmlDeviceGetName(self._handle)
        self._field_ids = {
            source: getattr(pynvml, const)
            for source, const in _FIELD_SOURCES.items()
            if hasattr(pynvml, const)
        }
        # Probe which sources answer; keep only those, so a sample costs one or two calls.
        has_counter = self._probe(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        try:
            fields = self._read_fields(self._field_ids)
        except SensorError:
            fields = {}
        self._field_ids = {s: f for s, f in self._field_ids.items() if s in fields}
        self._use_usage = not self._field_ids and self._probe(
            lambda: pynvml.nvmlDeviceGetPowerUsage(self._handle)
        )
        sources = tuple(self._field_ids) + (("usage",) if self._use_usage else ())
        self.info = SensorInfo(
            name=f"gpu{index}",
            kind="gpu",
            model=model,
            has_counter=has_counter,
            power_sources=sources,
            details={
                "nvml_index": index,
                "cuda_index": cuda_index,
                "uuid": uuid,
                "driver": _optional(pynvml.nvmlSystemGetDriverVersion),
                "power_limit_w": _optional(
                    lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(self._handle) / 1000.0
                ),
                "memory_gib": _optional(
                    lambda: pynvml.nvmlDeviceGetMemoryInfo(self._handle).total / 2**30
                ),
            },
        )

    @staticmethod
    def _probe(read) -> bool:
        try:
            read()
        except pynvml.NVMLError:
            return False
        return True

    def _read_fields(self, field_ids: dict[str, int]) -> dict[str, float]:
        if not field_ids:
            return {}
        try:
            values = pynvml.nvmlDeviceGetFieldValues(self._handle, list(field_ids.values()))
        except pynvml.NVMLError as err:
            raise SensorError(f"{self.name}: power fields: {_error(err)}") from err
        out = {}
        for source, value in zip(field_ids, values, strict=True):
            if value.nvmlReturn == pynvml.NVML_SUCCESS:
                out[source] = getattr(value.value, _VALUE_ATTR[value.valueType]) / 1000.0
        return out

    def read_energy_j(self) -> float | None:
        if not self.info.has_counter:
            return None
        try:
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0
        except pynvml.NVMLError as err:
            raise SensorError(f"{self.name}: energy counter: {_error(err)}") from err

    def read_power_w(self) -> dict[str, float]:
        power = self._read_fields(self._field_ids)
        if self._field_ids and not power:
            raise SensorError(f"{self.name}: no power field answered")
        if self._use_usage:
            try:
                power["usage"] = pynvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
            except pynvml.NVMLError as err:
                raise SensorError(f"{self.name}: power usage: {_error(err)}") from err
        return power

    def state(self) -> dict[str, object]:
        h = self._handle
        util = _optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
        return {
            "temperature_c": _optional(lambda: pynvml.nvmlDeviceGetTemperature(h, 0)),
            "sm_clock_mhz": _optional(lambda: pynvml.nvmlDeviceGetClockInfo(h, 1)),
            "memory_clock_mhz": _optional(lambda: pynvml.nvmlDeviceGetClockInfo(h, 2)),
            "utilization_pct": util,
        }


def _optional(read):
    """A reading that may be unsupported: its value, or None."""
    try:
        return read()
    except Exception:
        return None


def device_count() -> int:
    """GPUs NVML sees (0 when it cannot count them). Call `nvml_init` first."""
    try:
        return pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:
        return 0


def _devices() -> tuple[list[str], list[str]]:
    """The UUIDs and models of every GPU NVML lists, by NVML index (NVMLError if it cannot)."""
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    return ([pynvml.nvmlDeviceGetUUID(h) for h in handles],
            [pynvml.nvmlDeviceGetName(h) for h in handles])


def _visible() -> tuple[list[int], list[str]]:
    """The NVML indices of the GPUs this process can use, in CUDA's order, and every GPU's
    model by NVML index (both empty where NVML cannot list them)."""
    try:
        uuids, names = _devices()
    except pynvml.NVMLError:
        return [], []
    return visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids, names)[0], names


def visible_gpu_indices() -> list[int]:
    """The NVML indices of the GPUs this process can use, in CUDA's order (empty where NVML
    cannot list them). Call `nvml_init` first."""
    return _visible()[0]


def visible_gpu_models(limit: int | None = None) -> list[str]:
    """The models (NVML names, "NVIDIA H100 80GB HBM3") of the GPUs this process can use, in
    CUDA's order, the first `limit` of them: the cards a run here would use. Empty where NVML
    cannot list them. Initialises and shuts down NVML itself."""
    if nvml_init() is not None:
        return []
    try:
        indices, names = _visible()
        return [names[i] for i in indices[:limit]]
    finally:
        nvml_shutdown()


class NoSuchGpu(ValueError):
    """A CUDA index that names no GPU this process can use; the message lists those it can."""


def nvml_gpus(
    indices: list[int] | None = None, limit: int | None = None, *,
    cuda: list[int] | None = None,
) -> tuple[list[NvmlGpu], list[Unavailable], list[str]]:
    """The GPUs to measure, with what could not be opened and warnings.

    `indices` are NVML indices (any GPU of the machine); by default the GPUs this process
    can use, read from CUDA_VISIBLE_DEVICES and matched to NVML devices by UUID: those of
    CUDA indices `cuda` where given (NoSuchGpu for one past them), else the first `limit`
    (a tensor-parallel run's GPUs). Call `nvml_init` first.
    """
    try:
        uuids, names = _devices()
    except pynvml.NVMLError as err:
        return [], [Unavailable("gpu", f"NVML could not list GPUs: {_error(err)}")], []
    count = len(uuids)
    warnings: list[str] = []
    chosen: list[tuple[int | None, int]]  # (CUDA index, NVML index)
    if cuda == []:  # none asked: no warning about CUDA_VISIBLE_DEVICES either
        chosen = []
    elif indices is None:
        visible, warnings = visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids, names)
        if cuda is None:
            chosen = list(enumerate(visible))[:limit]
        else:
            _check_cuda(cuda, visible, names)
            chosen = [(c, visible[c]) for c in cuda]
    else:
        chosen = [(None, i) for i in indices]
    gpus: list[NvmlGpu] = []
    missing: list[Unavailable] = []
    if count == 0:
        missing.append(Unavailable("gpu", "NVML found no GPU"))
    for cuda_index, i in chosen:
        if not 0 <= i < count:
            missing.append(Unavailable(f"gpu{i}", f"no GPU with NVML index {i} ({count} found)"))
            continue
        try:
            gpu = NvmlGpu(i, cuda_index)
        except pynvml.NVMLError as err:
            missing.append(Unavailable(f"gpu{i}", f"could not open: {_error(err)}"))
            continue
        if gpu.info.has_counter or gpu.info.power_sources:
            gpus.append(gpu)
        else:
            missing.append(Unavailable(
                gpu.name, f"{gpu.info.model} offers neither an energy counter nor power readings"
            ))
    return gpus, missing, warnings


def _check_cuda(cuda: list[int], visible: list[int], names: list[str]) -> None:
    """NoSuchGpu where a CUDA index is past the GPUs this process can use (`visible`, their
    NVML indices in CUDA order), naming them."""
    bad = [c for c in cuda if not 0 <= c < len(visible)]
    if not bad:
        return
    setting = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = "" if setting is None else f" with CUDA_VISIBLE_DEVICES={setting!r}"
    if not visible:
        raise NoSuchGpu(f"no GPU is visible to this process{where}")
    listed = ", ".join(f"{c}: {names[i]} (gpu{i})" for c, i in enumerate(visible))
    raise NoSuchGpu(f"no GPU of CUDA index {', '.join(map(str, bad))}: {len(visible)} "
                    f"visible{where}, CUDA indices {listed}")


def gpu_sensors() -> list[NvmlGpu]:
    """Every GPU NVML sees, as sensors (their power read by `instant_power_w`, say); none
    where NVML cannot start. NVML is left initialized for them."""
    return nvml_gpus()[0] if nvml_init() is None else []
