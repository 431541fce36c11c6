"""Run: an engine under a meter on this machine's GPUs (a `Session`), measuring a point, a
trace replayed offline or served online, and sweeps of many points (run.sweep). Importing it
loads neither torch nor vLLM: an engine imports them when it is loaded."""

from infergy.run.device import RunError, engine_options, torch_device
from infergy.run.launch import (
    LAUNCHERS,
    LaunchError,
    launch_sweep,
    local_slots,
    open_launcher,
    parts_folder,
    point_groups,
)
from infergy.run.measure import Measured, MeasureOptions, measure_one
from infergy.run.online import OnlineResult, ServeError
from infergy.run.point import PointResult, measure_point
from infergy.run.replay import OfflineReplay, ReplayResult, replay_trace
from infergy.run.servers import SERVE_CHOICES, SERVERS
from infergy.run.serving import Serving, replay_online, started_server
from infergy.run.session import Quiet, Session
from infergy.run.sweep import (
    RESUME_BY,
    SweepError,
    describe_plan,
    instant_power_w,
    local_device,
    run_sweep,
)

__all__ = ["LAUNCHERS", "RESUME_BY", "SERVERS", "SERVE_CHOICES", "LaunchError", "MeasureOptions",
           "Measured", "OfflineReplay", "OnlineResult", "PointResult", "Quiet", "ReplayResult",
           "RunError", "ServeError", "Serving", "Session", "SweepError", "describe_plan",
           "engine_options", "instant_power_w", "launch_sweep", "local_device", "local_slots",
           "measure_one", "measure_point", "open_launcher", "parts_folder", "point_groups",
           "replay_online", "replay_trace", "run_sweep", "started_server", "torch_device"]
