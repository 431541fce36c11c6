"""Run by tests/test_parallel.py under torchrun (2 CPU processes, gloo): hf-eager split by
transformers' tensor-parallel plan, measured as `infergy measure --tp` measures it. Rank 0's
meter holds two simulated GPUs (test doubles), the other rank's none; both meters' window
edges wait for every rank, and a window's runs (min_window_s) are rank 0's count on both.
Rank 0 prints one JSON line: the greedy tokens of the split model, the point's per-GPU
energies, how many barriers each edge took, and each rank's runs a window."""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch

from infergy.engines import engine_class
from infergy.meter import Meter
from infergy.models import get_model
from infergy.plan.point import Point
from infergy.run.parallel import Ranks
from infergy.run.point import measure_point
from simulated import SimulatedGpu

faulthandler.enable()  # a rank that crashes (it has, rarely, on a CPU) says where
ranks = Ranks("cpu", 2)
barriers = []
engine = engine_class("hf-eager")(get_model("tiny"), device="cpu", dtype="float32", tp=2)
engine.load()
q = engine.model.model.layers[0].self_attn.q_proj.weight  # split: half of it on each rank
split = [type(q).__name__, list(q.to_local().shape), list(q.shape)]
prompt = torch.tensor([[1, 5, 9, 20, 33, 7, 11, 2]])
tokens = engine.model.generate(prompt, max_new_tokens=6, do_sample=False,
                               pad_token_id=0)[0, 8:].tolist()
sensors = [SimulatedGpu(0, power_w=300.0, update_s=1e-4),
           SimulatedGpu(1, power_w=100.0, update_s=1e-4)] if ranks.speaks else []
meter = Meter(sensors, sample_period_s=0.01, sync=ranks.synced(lambda: barriers.append(1)))
meter.share = ranks.share  # as Ranks.attach does
result = measure_point(engine, Point("tiny", "hf-eager", 2, 8, 4, tp=2, dtype="float32"),
                       meter, repeats=2, warmup=1, min_window_s=1.0)
meter.close()
edges, runs, shared = [None, None], [None, None], [None, None]
torch.distributed.all_gather_object(edges, len(barriers))  # every rank's count of edges
torch.distributed.all_gather_object(runs, result.runs_per_window)
torch.distributed.all_gather_object(shared, ranks.share(ranks.rank + 10))
if ranks.speaks:
    print(json.dumps({"tokens": tokens, "status": result.status, "error": result.error,
                      "gpu_energy_j": result.gpu_energy_j, "energy_j": result.energy_j,
                      "edges": edges, "split": split, "runs": runs, "shared": shared}))
ranks.close()
sys.stdout.flush()
os._exit(0)  # as infergy's own ranks leave (src/infergy/__main__.py): no interpreter teardown
