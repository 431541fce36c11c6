"""Sweeps: a plan's points measured by a worker process (worker.py) under a runner that
records each point in the store and resumes (runner.py)."""

from infergy.run.sweep.runner import Progress, SweepError, SweepSummary, describe_plan, run_sweep

__all__ = ["Progress", "SweepError", "SweepSummary", "describe_plan", "run_sweep"]
