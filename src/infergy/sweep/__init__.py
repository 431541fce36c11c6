"""Sweeps: a grid of points from a spec (spec.py), measured by a worker process (worker.py)
under a runner that records each point in the store and resumes (runner.py)."""

from infergy.sweep.runner import Progress, SweepError, SweepSummary, describe_plan, run_sweep
from infergy.sweep.spec import MAX, PRESETS, SpecError, SweepSpec, Task, load_spec, parse_spec

__all__ = ["MAX", "PRESETS", "Progress", "SpecError", "SweepError", "SweepSpec",
           "SweepSummary", "Task", "describe_plan", "load_spec", "parse_spec", "run_sweep"]
