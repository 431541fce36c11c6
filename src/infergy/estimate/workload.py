"""A workload's estimate from Python, as `infergy estimate` makes it, in one call:

    import infergy
    result = infergy.estimate("azure-code-2023", model="llama-3.1-8b", engine="hf-eager,vllm")
    for row in result.rows():
        print(row["gpu"], row["engine"], row["simulated_kwh"], row["kwh"])

`infergy.estimate` is this package, callable (`CallablePackage`): calling it calls
`estimate_workload`, and `from infergy.estimate import ...` still reaches the package's parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from infergy.estimate.trace import TraceEstimate, estimate_trace
from infergy.workloads.bins import BinGrid
from infergy.workloads.builtin import get_trace
from infergy.workloads.trace import Trace


def estimate_workload(trace: str | Path | Trace, model: str,
                      engine: str | Sequence[str] = ("hf-eager", "vllm"),
                      gpu: str | Sequence[str] | None = None,
                      profile: str | Path | Sequence[str | Path] | None = None, *,
                      bins: str = "paper", input_edges: str | None = None,
                      output_edges: str | None = None, beyond: str = "exclude",
                      theory_gpu: str | None = None, fmt: str | None = None,
                      input_col: str | None = None,
                      output_col: str | None = None) -> TraceEstimate:
    """The energy of serving `trace` (a built-in trace's name, a trace file, or a `Trace`) with
    `model` on each engine (names, or one string separated by commas; the first is the
    baseline of the savings), on each GPU of `gpu` (None or "all": every GPU the profiles
    hold the model on), from `profile`'s results stores (None: the profiles shipped with
    infergy): the numbers `infergy estimate` prints, with the same options. Its `rows()` give,
    a GPU and engine a row, the simulated serving's kWh (`simulated_kwh`, the command's
    headline) and the study's formula's (`kwh`), each with J per request and per output
    token and the saving, and the theoretical baselines. Raises what the command says:
    TraceError, BinError, UnknownModelError, UnknownGpuError, EstimateError (MissingPoints:
    the points to measure), StoreError, all ValueErrors."""
    engines = [e.strip() for e in engine.split(",")] if isinstance(engine, str) else list(engine)
    gpus = [g.strip() for g in gpu.split(",")] if isinstance(gpu, str) else gpu
    if gpus is not None and "all" in gpus:
        gpus = None
    if isinstance(profile, str | Path):
        profile = [profile]
    workload = trace if isinstance(trace, Trace) else get_trace(
        str(trace), fmt=fmt, input_col=input_col, output_col=output_col)
    grid = BinGrid.of(bins, input_edges, output_edges, beyond)
    return estimate_trace(workload, model, engines, grid, gpus=gpus,
                          stores=[Path(p) for p in profile] if profile else None,
                          theory_gpu=theory_gpu)


class CallablePackage(ModuleType):
    """The class of the package infergy.estimate: `infergy.estimate(trace, model=...)` is
    `estimate_workload(trace, model=...)`."""

    def __call__(self, *args, **kwargs) -> TraceEstimate:
        return estimate_workload(*args, **kwargs)
