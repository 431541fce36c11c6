"""Where a run happens: the torch device it asks for, checked against this machine, and
which process of a tensor-parallel run this one is."""

from __future__ import annotations

from infergy.engines import parse_options
from infergy.plan.tp import check_tp_gpus
from infergy.run.parallel import current_rank


class RunError(ValueError):
    """A run that cannot be made as asked on this machine; raised before any GPU work."""


def torch_device(device: str, tp: int = 1) -> str:
    """--device resolved against this machine's torch: "cuda" or "cpu". A `tp` over 1 asks
    for that many GPUs visible here (on cuda; an explicit cpu splits over CPU processes:
    tests), and auto finding none is an error (RunError, or ParallelError for too few
    GPUs)."""
    if device not in ("auto", "cuda", "cpu"):
        raise RunError(f"--device must be auto, cuda or cpu, got {device!r}")
    try:
        import torch
    except ImportError:
        raise RunError(
            "measuring needs torch and transformers: pip install 'infergy[measure]'"
        ) from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and tp > 1:
            raise RunError(f"--tp {tp} splits the model over GPUs, and torch sees no CUDA GPU "
                           f"here (--device cpu splits it over {tp} CPU processes instead, as "
                           f"the tests do with tiny models)")
    if device == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda, but torch sees no CUDA GPU here")
    if device == "cuda":  # a CPU run counts no GPU (its ranks share the CPU)
        check_tp_gpus(tp)
    return device


def engine_options(values: list[str]) -> dict:
    """--engine-option's key=value pairs as the engine's options (values read as JSON where
    they parse); RunError naming a malformed one."""
    try:
        return parse_options(values)
    except ValueError as e:
        raise RunError(f"--engine-option: {e}") from None


def process_of(tp: int, engine_cls) -> tuple[bool, int | None, bool]:
    """(split, rank, speaks) of this process: split, whether the run is one process a GPU
    (an engine that splits a model so, at TP > 1: the launching process starts them); rank,
    this process's among them (None: the launching one, or no split); speaks, whether it
    records and reports (rank 0, for all, or the only process)."""
    split = tp > 1 and engine_cls.tp_per_process
    rank = current_rank() if split else None
    return split, rank, rank in (None, 0)
