"""The plan: what will be measured, decided before any GPU work: a point (point.py), sweep
specs and presets (spec.py), a replay's static batches (batches.py), and the tensor-parallel
checks (tp.py)."""

from infergy.plan.batches import (
    BATCHINGS,
    WARMUPS,
    Batch,
    ReplayError,
    plan_replay,
    replay_options,
    replay_requests,
)
from infergy.plan.fields import MAX_WAIT_S
from infergy.plan.point import Point, PointError
from infergy.plan.presets import (
    CALIBRATION_INPUTS,
    CALIBRATION_OUTPUTS,
    CALIBRATION_RUNS,
    calibration_inputs,
)
from infergy.plan.spec import (
    MAX,
    PRESETS,
    EngineChoice,
    SpecError,
    SweepSpec,
    Task,
    engine_starts,
    load_spec,
    parse_spec,
    with_options,
)
from infergy.plan.tp import ParallelError, check_tp, check_tp_gpus

__all__ = ["BATCHINGS", "CALIBRATION_INPUTS", "CALIBRATION_OUTPUTS", "CALIBRATION_RUNS", "MAX",
           "MAX_WAIT_S", "PRESETS", "WARMUPS", "Batch", "EngineChoice", "ParallelError",
           "Point", "PointError", "ReplayError", "SpecError", "SweepSpec", "Task",
           "calibration_inputs", "check_tp", "check_tp_gpus", "engine_starts", "load_spec",
           "parse_spec", "plan_replay", "replay_options", "replay_requests", "with_options"]
