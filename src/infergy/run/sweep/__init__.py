"""Sweeps: a plan's points measured by a worker process (worker.py) under a runner that
records each point in the store and resumes (runner.py)."""

from infergy.run.sweep.jobs import instant_power_w
from infergy.run.sweep.runner import (
    RESUME_BY,
    Progress,
    SweepError,
    SweepSummary,
    describe_plan,
    run_sweep,
)
from infergy.run.sweep.worker import local_device

__all__ = ["RESUME_BY", "Progress", "SweepError", "SweepSummary", "describe_plan",
           "instant_power_w", "local_device", "run_sweep"]
