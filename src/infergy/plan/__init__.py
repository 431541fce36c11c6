"""The plan: what will be measured, decided before any GPU work (sweep specs and presets,
a replay's static batches, the checks a point must pass)."""

from infergy.plan.spec import MAX, PRESETS, SpecError, SweepSpec, Task, load_spec, parse_spec

__all__ = ["MAX", "PRESETS", "SpecError", "SweepSpec", "Task", "load_spec", "parse_spec"]
