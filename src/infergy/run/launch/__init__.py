"""Launched sweeps: a plan cut into point groups (groups.py), each measured by a worker that
a launcher places (launchers.py: this host's GPUs, a Ray cluster, Slurm jobs) into a store of
its own (group.py), merged by the driver (driver.py) into the sweep's store as each ends."""

from infergy.run.launch.driver import LaunchSummary, launch_sweep, parts_folder
from infergy.run.launch.groups import point_groups
from infergy.run.launch.launchers import (
    LAUNCHERS,
    LaunchError,
    LocalLauncher,
    RayLauncher,
    SlurmLauncher,
    local_slots,
    open_launcher,
    parse_minutes,
)

__all__ = ["LAUNCHERS", "LaunchError", "LaunchSummary", "LocalLauncher", "RayLauncher",
           "SlurmLauncher", "launch_sweep", "local_slots", "open_launcher", "parse_minutes",
           "parts_folder", "point_groups"]
