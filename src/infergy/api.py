"""The library's face beside `infergy.estimate` and `infergy.open_meter`: one point measured
from Python, as `infergy measure` measures it."""

from __future__ import annotations

from pathlib import Path

from infergy.models import get_model
from infergy.plan import Point
from infergy.run import MeasureOptions, PointResult, measure_one


def measure(model: str, engine: str = "hf-eager", batch: int = 1, input_tokens: int = 128,
            output_tokens: int = 32, *, decoding: str = "greedy", device: str = "auto",
            dtype: str = "bfloat16", repeats: int = 3, warmup: int = 1,
            min_window_s: float = 0.0, idle_s: float = 5.0, seed: int = 0,
            weights: str | Path | None = None, db: str | Path | None = None) -> PointResult:
    """Measure one point on this machine, as `infergy measure` does: `batch` prompts of
    `input_tokens` tokens, each generating exactly `output_tokens`, of `model` (a catalog
    name or Hugging Face id; random weights unless `weights`, a checkpoint folder) on `engine`,
    on one GPU (`device` "auto": the GPU where there is one, else the CPU). Returns the
    PointResult: energy_j, j_per_output_token, j_per_request (J), time_s, ttft_s, tpot_s (s),
    ... ; energies None, with `energy_reason`, where no sensor could be read (a CPU). `db`: a
    results store to record it in. Needs the `measure` extra (torch, transformers); the
    catalog's, engine's and point's errors are raised before any work."""
    point = Point(get_model(model).name, engine, batch, input_tokens, output_tokens,
                  decoding=decoding, dtype=dtype)
    how = MeasureOptions(repeats=repeats, warmup=warmup, min_window_s=min_window_s,
                         device=device, seed=seed, idle_s=idle_s,
                         weights=Path(weights) if weights else None,
                         db=Path(db) if db else None)
    return measure_one(point, how).result  # one process at TP 1: always a Measured
