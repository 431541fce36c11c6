"""The study's theoretical baseline: TDP / peak FLOPS x the FLOPs of every request at its
binned lengths (infergy.models.flops), on a datasheet GPU (infergy.models.gpus)."""

from __future__ import annotations

import numpy as np

from infergy.models import get_model
from infergy.models.flops import request_flops
from infergy.models.gpus import Gpu
from infergy.workloads.bins import Binned


def theoretical(binned: Binned, model_name: str, gpu: Gpu) -> float:
    """The study's baseline: TDP / peak FLOPS x the FLOPs of every binned request, in J."""
    spec = get_model(model_name)
    grid, counts = binned.grid, binned.counts()
    flops = sum(int(counts[a, b]) * request_flops(spec, grid.input_edges[a],
                                                    grid.output_edges[b])
                for a, b in zip(*np.nonzero(counts), strict=True))
    return flops * gpu.joules_per_flop
