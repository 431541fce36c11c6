"""The sweeps infergy knows by name (`infergy sweep paper-bins`): the study's grids."""

from __future__ import annotations

from typing import Any

from infergy.workloads.bins import PAPER_INPUT_EDGES, PAPER_INPUT_EDGES_RULE, PAPER_OUTPUT_EDGES

MAX = "max"  # a batch size: the largest batch that fits, searched per (I, O)
# `infergy calibrate`'s design: the shortest and longest prompts and outputs and two between,
# at B = 1 and B = max, 24 points that span a step's prefill size, batch and context.
CALIBRATION_INPUTS = (32, 256, 2048, 8192)
CALIBRATION_OUTPUTS = (8, 64, 512)
# How each of its points is run: a warm-up, then two repeats of windows of at least 2 s (a
# shorter run is repeated inside its window), so that every point's energy is read over a
# window the 100 ms energy counter resolves (the fit drops windows under 1 s), at two thirds
# of the GPU time of three repeats.
CALIBRATION_RUNS = {"repeats": 2, "warmup": 1, "min_window_s": 2}


def calibration_inputs(max_context: int) -> list[int]:
    """The design's inputs a model's context holds with the longest output."""
    return [i for i in CALIBRATION_INPUTS if i + max(CALIBRATION_OUTPUTS) <= max_context]


PRESETS: dict[str, dict[str, Any]] = {
    "paper-bins": {
        "about": "the study's bins as printed: inputs 32, 128, 256, 512, ... 8192 x outputs "
                 "8 ... 512, at B = 1 and B = max",
        "grids": [{"input_tokens": list(PAPER_INPUT_EDGES),
                   "output_tokens": list(PAPER_OUTPUT_EDGES)}],
        "batch_sizes": [1, MAX],
    },
    "paper-bins-rule": {
        "about": "the study's bins by its own rule: inputs 2^4 ... 2^13 (16 ... 8192) x outputs "
                 "8 ... 512, at B = 1 and B = max",
        "grids": [{"input_tokens": list(PAPER_INPUT_EDGES_RULE),
                   "output_tokens": list(PAPER_OUTPUT_EDGES)}],
        "batch_sizes": [1, MAX],
    },
    "length-sweep": {
        "about": "the study's length sweeps: inputs 2^4 ... 2^15 (16 ... 32768) at outputs 64 "
                 "and 8, and outputs 2^0 ... 2^12 (1 ... 4096) at inputs 512 and 64; B = 1",
        "grids": [{"input_tokens": [2**m for m in range(4, 16)], "output_tokens": [64, 8]},
                  {"input_tokens": [512, 64], "output_tokens": [2**m for m in range(13)]}],
        "batch_sizes": [1],
    },
    "calibration": {
        "about": "the points a step-cost model is fitted to (infergy calibrate): inputs 32, "
                 "256, 2048, 8192 x outputs 8, 64, 512, at B = 1 and B = max",
        "grids": [{"input_tokens": list(CALIBRATION_INPUTS),
                   "output_tokens": list(CALIBRATION_OUTPUTS)}],
        "batch_sizes": [1, MAX],
        **CALIBRATION_RUNS,
    },
    "batch-sweep": {
        "about": "batch sizes 1 ... 1024 (powers of two) at input 512, output 128",
        "grids": [{"input_tokens": [512], "output_tokens": [128]}],
        "batch_sizes": [2**m for m in range(11)],
    },
}
