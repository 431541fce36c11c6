"""The study's theoretical baseline: TDP / peak FLOPS x the FLOPs of every request at its
binned lengths (infergy.models.flops), on a datasheet GPU (infergy.models.gpus); and the
same over every request at its own lengths, the basis of a simulated serving."""

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


def served_flops(input_tokens: np.ndarray, output_tokens: np.ndarray, model_name: str) -> float:
    """The FLOPs of every request at its own lengths (at least one token in and out, as the
    simulator serves them): times a card's TDP / peak FLOPS (`Gpu.joules_per_flop`), what a
    simulated serving of the same requests is above. The same for every card: computed once
    a trace."""
    spec = get_model(model_name)
    pairs, counts = np.unique(np.stack([np.maximum(input_tokens, 1),
                                        np.maximum(output_tokens, 1)]), axis=1,
                              return_counts=True)
    return float(sum(int(n) * request_flops(spec, int(i), int(o))
                     for (i, o), n in zip(pairs.T, counts, strict=True)))
