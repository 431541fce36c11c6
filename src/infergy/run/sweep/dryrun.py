"""A sweep's dry run: how many points its plan holds, how many a store already has, and a
rough time for the rest, answered at once however large the plan.

The plan is counted and indexed arithmetically (`PlanGrid`, in the order of
`SweepSpec.tasks()`), never built whole: a spec of a million points is planned in well under
a second. What the store holds is read once, from its points (bounded by the store, not the
plan). Up to `LIST_ALL` points are listed and timed one by one; a longer plan lists its first
and last few and is timed from an even sample of `SAMPLE` points.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from infergy.engines import engine_class
from infergy.engines.decoding import Decoding
from infergy.models import get_model
from infergy.models.flops import decode_bytes, prefill_flops
from infergy.models.shape import shape
from infergy.plan.spec import MAX, EngineChoice, SweepSpec, Task
from infergy.store import MEASURED, Store, reusable_max

LIST_ALL = 1000  # a plan of up to this many points is listed and timed point by point
ENDS = 5  # a longer one: its first and last ENDS points listed
SAMPLE = 1000  # and its time estimated from this many points, evenly spread

# The analytic run time's speeds: half a nominal H100's peak on a GPU; on a CPU a rough
# guess: bf16 matrix products at tens of GFLOP/s, memory at about 10 GB/s, and the
# framework's time a step (the tiny model's steps took 2 ms on an idle CPU, 30-50 ms on a
# busy one of two cores: a guess can be ten times off either way).
GPU_SPEED = {"flops": 0.5e15, "bytes_s": 2.3e12, "step_s": 0.0, "layer_step_s": 0.0}
CPU_SPEED = {"flops": 5e10, "bytes_s": 1e10, "step_s": 1e-2, "layer_step_s": 1e-3}


def measuring_time(record: dict) -> float:
    """Seconds a point spent in its warm-up, its 1-token prefill run and its repeats (points
    measured before the prefill run was shared had one such run per repeat), every run of a
    window that held several (min_window_s) counted."""
    def window_s(phase: dict) -> float:
        return phase["time_s"] * phase.get("runs", 1)

    repeats = record.get("repeats", [])
    prefills = {window_s(r["prefill"]) for r in repeats
                if r["prefill"]["method"] == "separate run"}
    return ((record.get("warmup") or {}).get("time_s") or 0.0) + sum(prefills) + sum(
        window_s(r["request"]) for r in repeats)


class _Pairs(Sequence):
    """The spec's (input, output) pairs in `tasks()`'s order (each once), without listing
    them: the first grid as a product, the pairs later grids add listed."""

    def __init__(self, grids: list[tuple[list[int], list[int]]]):
        self.inputs, self.outputs = (list(dict.fromkeys(v)) for v in grids[0])
        self.at_input = {v: n for n, v in enumerate(self.inputs)}
        self.at_output = {v: n for n, v in enumerate(self.outputs)}
        self.head = len(self.inputs) * len(self.outputs)
        self.extra = list(dict.fromkeys(
            (i, o) for inputs, outputs in grids[1:] for i in inputs for o in outputs
            if not (i in self.at_input and o in self.at_output)))
        self.at_extra = {pair: n for n, pair in enumerate(self.extra)}

    def __len__(self) -> int:
        return self.head + len(self.extra)

    def __getitem__(self, p: int) -> tuple[int, int]:
        if p < self.head:
            return self.inputs[p // len(self.outputs)], self.outputs[p % len(self.outputs)]
        return self.extra[p - self.head]

    def index(self, pair: tuple[int, int]) -> int | None:
        i, o = pair
        if i in self.at_input and o in self.at_output:
            return self.at_input[i] * len(self.outputs) + self.at_output[o]
        n = self.at_extra.get(pair)
        return None if n is None else self.head + n


class PlanGrid:
    """A spec's plan by arithmetic: `len()` points of this process's shard, the `task(j)` of
    each, and where a stored point stands in it, in the order of `spec.tasks()`."""

    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.pairs = _Pairs(spec.grids)
        self.dims = [spec.models, spec.engines, spec.decodings, range(len(self.pairs)),
                     spec.batch_sizes]
        self.full = 1
        for d in self.dims:
            self.full *= len(d)
        self.k, self.n = spec.shard

    def __len__(self) -> int:
        return max(0, (self.full - self.k + self.n - 1) // self.n)

    def task(self, j: int) -> Task:
        """The j-th point (0-based) of this shard."""
        index, parts = self.k + j * self.n, []
        for d in reversed(self.dims):
            index, at = divmod(index, len(d))
            parts.append(at)
        b, p, d, e, m = parts
        i, o = self.pairs[p]
        s = self.spec
        return Task(s.models[m], s.engines[e], s.decodings[d], s.batch_sizes[b], i, o)

    def positions(self, model: str, engine: EngineChoice, decoding: str, batch: str,
                  pair: tuple[int, int]) -> list[int]:
        """Where a point of these values stands in this shard (0-based; none where it is not
        in it, several where the spec names a value twice)."""
        p = self.pairs.index(pair)
        if p is None:
            return []
        s = self.spec
        found = []
        for at in itertools.product(
                [n for n, v in enumerate(s.models) if v == model],
                [n for n, v in enumerate(s.engines) if v == engine],
                [n for n, v in enumerate(s.decodings) if v == decoding], [p],
                [n for n, v in enumerate(s.batch_sizes) if str(v) == batch]):
            index = 0
            for a, d in zip(at, self.dims, strict=True):
                index = index * len(d) + a
            if index % self.n == self.k:
                found.append((index - self.k) // self.n)
        return found

    def blocks(self) -> list[tuple[str, EngineChoice, str, range]]:
        """(model, engine, decoding, the shard's points of it) for each that holds some."""
        size = len(self.pairs) * len(self.spec.batch_sizes)
        out = []
        for n, (m, e, d) in enumerate(itertools.product(self.spec.models, self.spec.engines,
                                                        self.spec.decodings)):
            first = -(-(n * size - self.k) // self.n)  # this shard's first j in the block
            last = -(-((n + 1) * size - self.k) // self.n)
            if last > max(first, 0):
                out.append((m, e, d, range(max(first, 0), last)))
        return out


@dataclass
class PlanRow:
    number: int  # 1-based, in this process's plan
    task: Task
    done: bool  # already in the store
    estimate_s: float  # rough seconds of its warm-up and repeats
    took_s: float | None  # what it took, where the store has it
    scaled: bool  # the estimate scaled by measured points


@dataclass
class Plan:
    """A dry run's answer."""

    total: int  # points this process would measure (its shard's), the store's included
    done: int  # of them in the store already
    rows: list[PlanRow]  # every point, or (where more than LIST_ALL) the first and last few
    todo_s: float  # rough seconds of warm-ups and repeats of the points to measure
    unscaled_s: float  # of which estimated by the formula alone
    sampled: int  # points the time was estimated from (total, where every one)
    starts: int  # model loads of the points to measure
    cpu: bool  # timed at a CPU's rough speed

    @property
    def listed_all(self) -> bool:
        return len(self.rows) == self.total


def describe_plan(spec: SweepSpec, store: Store | None = None, device: str | None = None,
                  gpu_name: str | None = None, *, cpu: bool = False) -> Plan:
    """The dry run of `spec`: which points `device` (or, with `gpu_name`, any card of that
    model) already measured in `store`, and a rough time for the warm-ups and repeats of
    the rest (without loading, compiling, idle power or cooling down): the analytic FLOPs
    and bytes at half a nominal H100's peak (B = max taken as 64), or with `cpu` at a CPU's
    rough speed (CPU_SPEED), scaled by what the store's points of the same engine, batch
    size and (where it has some) input length took against the same formula."""
    grid = PlanGrid(spec)
    speed = CPU_SPEED if cpu else GPU_SPEED
    took = _measured(grid, store, device, gpu_name)  # j -> seconds (None: not timed)

    def formula_s(task: Task) -> float:
        return _formula_s(task, spec, speed)

    # Calibration by the points already measured: per (engine, batch size, input length)
    # where some are, else per (engine, batch size). B = max varies with the lengths (1,024
    # at short inputs, 64 at 2,048 on an H100) while the formula takes 64 throughout.
    fine: dict[tuple, list[float]] = {}
    coarse: dict[tuple, list[float]] = {}
    for j, seconds in took.items():
        if seconds:
            t = grid.task(j)
            for scales, key in ((fine, (t.engine.label, t.batch, t.input_tokens)),
                                (coarse, (t.engine.label, t.batch))):
                sums = scales.setdefault(key, [0.0, 0.0])
                sums[0] += seconds
                sums[1] += formula_s(t)

    def row(j: int) -> PlanRow:
        t = grid.task(j)
        sums = (fine.get((t.engine.label, t.batch, t.input_tokens))
                or coarse.get((t.engine.label, t.batch)))
        estimate = formula_s(t) * (sums[0] / sums[1] if sums else 1.0)
        return PlanRow(j + 1, t, j in took, estimate, took.get(j), bool(sums))

    total = len(grid)
    if total <= LIST_ALL:
        rows = [row(j) for j in range(total)]
        timed = rows
    else:
        rows = [row(j) for j in (*range(ENDS), *range(total - ENDS, total))]
        timed = [row(j * total // SAMPLE) for j in range(SAMPLE)]
    left = [r for r in timed if not r.done]
    share = (total - len(took)) / len(left) if left else 0.0  # each sampled point stands
    todo_s = sum(r.estimate_s for r in left) * share  # for `share` of the plan's
    unscaled_s = sum(r.estimate_s for r in left if not r.scaled) * share
    return Plan(total, len(took), rows, todo_s, unscaled_s, len(timed),
                _starts(grid, took), cpu)


def _formula_s(task: Task, spec: SweepSpec, speed: dict) -> float:
    """Rough seconds of a point's warm-up and repeats (a window lasting at least
    min_window_s, a short run repeated in it) at `speed`."""
    model = _model(task.model)
    batch = task.batch if task.batch != MAX else min(spec.max_batch_cap, 64)
    steps = task.output_tokens + 1
    run_s = (prefill_flops(model, task.input_tokens, batch) / speed["flops"]
             + task.output_tokens * decode_bytes(
                 model, task.input_tokens + task.output_tokens // 2, batch) / speed["bytes_s"]
             + steps * (speed["step_s"] + shape(model).layers * speed["layer_step_s"]))
    separate_prefill = task.engine.name not in ("hf-eager", "hf-compiled")
    return ((spec.warmup + separate_prefill) * run_s
            + spec.repeats * max(run_s, spec.min_window_s))


@functools.lru_cache(maxsize=64)
def _model(name: str):
    return get_model(name)


def _measured(grid: PlanGrid, store: Store | None, device: str | None,
              gpu_name: str | None) -> dict[int, float | None]:
    """The points of this shard's plan the store holds as measured (ok or out of memory;
    for B = max a batch found), as `Store.done` counts them: each j with the seconds its
    latest ok point measured."""
    if store is None or not (device or gpu_name):
        return {}
    devices = {device} if device else set()
    if gpu_name is not None:
        devices |= {r["device"] for r in store.runs() if r["gpu_name"] == gpu_name}
    spec, found = grid.spec, {}
    for d in sorted(devices):
        for p in store.points(device=d):
            if (p["status"] not in MEASURED or p["dtype"] != spec.dtype or p["tp"] != spec.tp
                    or (p["batch_requested"] == MAX and (p["status"] != "ok" or not reusable_max(
                        p["batch"], p["batch_search"], spec.max_batch_cap)))):
                continue
            engine = EngineChoice(p["engine"], p["engine_options"])
            for j in grid.positions(p["model"], engine, p["decoding"], p["batch_requested"],
                                    (p["input_tokens"], p["output_tokens"])):
                if p["status"] == "ok":  # the latest measured one's time stands
                    found[j] = measuring_time(json.loads(p["result"]))
                else:
                    found.setdefault(j, None)
    return found


def _starts(grid: PlanGrid, done: dict[int, float | None]) -> int:
    """Model loads of the points left to measure: once a (model, engine) group, and for an
    engine started for its decoding (vLLM: a speculation, beam search), once a start key."""
    keys = set()
    start_key: Callable[[str, str], object] = functools.cache(
        lambda name, decoding: engine_class(name).start_key(Decoding.parse(decoding)))
    for model, engine, decoding, js in grid.blocks():
        held = (sum(j in js for j in done) if len(done) < len(js)
                else sum(j in done for j in js))
        if held < len(js):
            keys.add((model, engine, start_key(engine.name, decoding)))
    return len(keys)
