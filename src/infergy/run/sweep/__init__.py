"""Sweeps: a plan's points measured by a worker process (worker.py, its parent's handle:
process.py) under a runner that records each point in the store and resumes (runner.py);
the plan of a dry run, however large (dryrun.py)."""

from infergy.run.sweep.dryrun import Plan, describe_plan
from infergy.run.sweep.jobs import instant_power_w
from infergy.run.sweep.runner import (
    RESUME_BY,
    Progress,
    SweepError,
    SweepSummary,
    run_sweep,
)
from infergy.run.sweep.worker import local_device

__all__ = ["RESUME_BY", "Plan", "Progress", "SweepError", "SweepSummary", "describe_plan",
           "instant_power_w", "local_device", "run_sweep"]
