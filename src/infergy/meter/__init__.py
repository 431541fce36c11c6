"""Energy measurement: NVIDIA GPUs through NVML, CPU and DRAM through RAPL.

    from infergy.meter import open_meter
    with open_meter() as meter:                 # measures idle power first
        with meter.window("decode") as w:
            run_the_work()
        print(w.measurement.energy_j, w.measurement.active_energy_j)
"""

from infergy.meter.base import Sensor, SensorError, SensorInfo, Unavailable
from infergy.meter.command import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, run_command
from infergy.meter.core import Meter, cuda_sync, describe, open_meter
from infergy.meter.nvml import NoSuchGpu, gpu_sensors, visible_gpu_models
from infergy.meter.window import DeviceEnergy, Measurement, Window

__all__ = [
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "DeviceEnergy",
    "Measurement",
    "Meter",
    "NoSuchGpu",
    "Sensor",
    "SensorError",
    "SensorInfo",
    "Unavailable",
    "Window",
    "cuda_sync",
    "describe",
    "gpu_sensors",
    "open_meter",
    "run_command",
    "visible_gpu_models",
]
