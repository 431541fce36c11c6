"""Sweep specs: which points to measure, read from YAML or a built-in preset.

A spec is models x engines x decodings x batch sizes x (input, output) lengths, plus options.
The lengths are one or more grids: the study's bins are one grid (every input edge with every
output edge); its length sweep is two (inputs at a fixed output, outputs at a fixed input).

    models: [llama-3.1-8b]
    engines: [hf-eager, {name: hf-paged, options: {use_cuda_graph: true}}]
    decodings: [greedy]
    batch_sizes: [1, max]            # max: the largest batch that fits, searched per (I, O)
    preset: paper-bins               # or input_tokens / output_tokens, or grids: [...]
    repeats: 3
    warmup: 1
    min_window_s: 2                  # a shorter run is repeated in each window, figures per run
    cooldown: {max_s: 60, within_w: 15}
    max_batch_cap: 1024
    tp: 1                            # tensor parallelism: the model over the first N GPUs
    slurm: {partition: gpu, time: "4:00:00", options: {qos: high}}   # for --launcher slurm

Every error names the file, the field (with its line where the YAML has one) and what was
expected, before any GPU work.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infergy.engines import EngineError, UnknownEngineError, engine_class, engine_names
from infergy.engines.decoding import Decoding, DecodingError
from infergy.models import UnknownModelError, get_model
from infergy.plan import fields
from infergy.plan.fields import MAX_BATCH, FieldLines, SpecError
from infergy.plan.presets import MAX, PRESETS
from infergy.plan.tp import ParallelError, check_tp

DEFAULT_CAP = 1024
DTYPES = ("bfloat16", "float16", "float32")

KEYS = {"models", "engines", "decodings", "batch_sizes", "preset", "input_tokens",
        "output_tokens", "grids", "repeats", "warmup", "cooldown", "max_batch_cap", "dtype",
        "seed", "idle_s", "tp", "min_window_s", "slurm"}


@dataclass(frozen=True)
class EngineChoice:
    name: str
    options_key: str = "{}"  # the options as canonical JSON: hashable, and part of a point's
    # identity in the store (values may be lists or mappings: vLLM's compilation_config)

    @classmethod
    def of(cls, name: str, options: dict[str, Any] | None = None) -> EngineChoice:
        return cls(name, json.dumps(options or {}, sort_keys=True))

    @property
    def options_dict(self) -> dict[str, Any]:
        return json.loads(self.options_key)

    @property
    def label(self) -> str:
        return self.name + "".join(f"+{k}={json.dumps(v)}"
                                   for k, v in self.options_dict.items())


@dataclass(frozen=True)
class Cooldown:
    max_s: float = 60.0  # wait at most this long
    within_w: float = 15.0  # until the GPU draws no more than idle + this


@dataclass(frozen=True)
class Task:
    """One point to measure; `batch` is an int or "max"."""

    model: str
    engine: EngineChoice
    decoding: str
    batch: int | str
    input_tokens: int
    output_tokens: int

    @property
    def group(self) -> tuple[str, EngineChoice]:
        """Tasks of one group share a loaded model."""
        return (self.model, self.engine)

    def describe(self) -> str:
        return point_text(self)


def point_text(point, engine: EngineChoice | None = None) -> str:
    """One line naming a point to measure: a Task, or a Point with its engine's options."""
    return (f"{point.model} {(engine or point.engine).label} {point.decoding} "
            f"B={point.batch} I={point.input_tokens} O={point.output_tokens}")


@dataclass
class SweepSpec:
    models: list[str]
    engines: list[EngineChoice]
    decodings: list[str]
    batch_sizes: list[int | str]
    grids: list[tuple[list[int], list[int]]]
    repeats: int = 3
    warmup: int = 1
    cooldown: Cooldown | None = None
    max_batch_cap: int = DEFAULT_CAP
    dtype: str = "bfloat16"
    seed: int = 0
    idle_s: float = 5.0
    tp: int = 1
    min_window_s: float = 0.0  # a run shorter than this is repeated in each window
    source: str = "<spec>"
    raw: dict = field(default_factory=dict)
    shard: tuple[int, int] = (0, 1)  # (k, n): this process measures every n-th point from k
    select: tuple[int, ...] | None = None  # these of the (sharded) plan's points only: the
    # point group a launched worker measures (infergy.run.launch)
    slurm: dict = field(default_factory=dict)  # --launcher slurm's partition, account,
    # time, options (the command line's win)

    @property
    def ranks(self) -> int:
        """Processes running each point: `tp` where the engines split a model as one process
        a GPU (transformers' plan; kept apart from vLLM's, which starts its own), else 1."""
        split = self.tp > 1 and any(engine_class(e.name).tp_per_process for e in self.engines)
        return self.tp if split else 1

    def tasks(self) -> list[Task]:
        """Every point, grouped by (model, engine) so each model is built once per group,
        then by decoding (an engine started for its decoding, as vLLM for a speculation or
        beam search, starts once for each), lengths and batch size. A length pair in several
        grids is kept once; so is a model, engine, decoding or batch named twice (as read).
        With a shard (k, n), every n-th of those points from the k-th, always of the whole
        plan (what a store already holds plays no part): n processes, one a GPU, each with
        a store of its own, share one sweep, and measure each point once however often
        each is stopped and run again; neighbouring points (of similar cost) go to
        different GPUs. With `select`, those of the points (numbered from 0 after the shard),
        in that order.
        """
        pairs = list(dict.fromkeys((i, o) for inputs, outputs in self.grids
                                   for i in inputs for o in outputs))
        out = []
        for model in self.models:
            for engine in self.engines:
                for decoding in self.decodings:
                    for i, o in pairs:
                        for batch in self.batch_sizes:
                            out.append(Task(model, engine, decoding, batch, i, o))
        k, n = self.shard
        out = out[k::n]
        return out if self.select is None else [out[i] for i in self.select]


def engine_start(task: Task) -> tuple:
    """What a task's engine is started for: its group, and for an engine started for its
    decoding (vLLM: a speculation, beam search), its start key."""
    return task.group, engine_class(task.engine.name).start_key(Decoding.parse(task.decoding))


def engine_starts(tasks: list[Task]) -> int:
    """How many times a sweep of `tasks` (in order) loads a model: once an engine start."""
    return len({engine_start(task) for task in tasks})


def load_spec(source: str | Path) -> SweepSpec:
    """A spec from a YAML file, or a preset's name (see PRESETS) with its defaults. SpecError
    naming the file where it cannot be read or is not a YAML text file (fields.read_spec_file),
    and the field where one is wrong."""
    if isinstance(source, str) and source in PRESETS:
        return parse_spec({"preset": source}, f"preset {source}")
    data, lines = fields.read_spec_file(Path(source), list(PRESETS))
    return parse_spec(data, str(source), lines)


def with_options(spec: SweepSpec, *, models: list[str] | None = None,
                 engines: list[str] | None = None, batch_sizes: list[str] | None = None,
                 tp: int | None = None, shard: str | None = None) -> SweepSpec:
    """`spec` with the command line's models, engines, batch sizes (numbers or "max"), TP and
    shard ("K/N") in place of its own; SpecError naming the option where one is wrong."""
    if models or engines or batch_sizes or tp is not None:
        data = dict(spec.raw)
        if tp is not None:
            data["tp"] = tp
        if models:
            data["models"] = models
        if engines:
            data["engines"] = engines
        if batch_sizes:
            data["batch_sizes"] = [b if b == MAX else _batch_option(b) for b in batch_sizes]
        spec = parse_spec(data, f"{spec.source} with command-line options")
    if shard:
        spec = dataclasses.replace(spec, shard=parse_shard(shard))
    return spec


def _batch_option(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"--batch expects a positive integer or 'max', got {text!r}") from None


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard K/N` as (k, n): 0 <= k < n."""
    k, sep, n = text.partition("/")
    if sep and k.strip().isdigit() and n.strip().isdigit() and int(k) < int(n):
        return int(k), int(n)
    raise SpecError(f"--shard expects K/N with 0 <= K < N (this process's share of N, "
                    f"e.g. 0/4 ... 3/4 for four GPUs), got {text!r}")


def parse_spec(data: Any, source: str = "<spec>", lines: FieldLines | None = None
               ) -> SweepSpec:
    """Check and read a spec's data (the YAML's mapping); models named by a Hugging Face id
    become their catalog names."""
    lines = lines or FieldLines("")

    def fail(path: str, message: str) -> SpecError:
        return SpecError(f"{source}: field '{path}'{lines.at(path)}: {message}")

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of fields (models: ..., engines: ...), "
                        f"got {'a list' if isinstance(data, list) else fields.shown(data)}")
    unknown = sorted((k for k in data if k not in KEYS), key=str)  # keys may be 1 or true
    if unknown:
        raise fail(str(unknown[0]), f"unknown field; expected one of {', '.join(sorted(KEYS))}")
    preset = {}
    if "preset" in data:
        if not isinstance(data["preset"], str) or data["preset"] not in PRESETS:
            raise fail("preset", f"unknown preset {fields.shown(data['preset'])}; expected one of "
                                 f"{', '.join(PRESETS)}")
        preset = PRESETS[data["preset"]]
    models = []
    for n, name in enumerate(fields.as_list(data.get("models", ["llama-3.1-8b"]), "models",
                                            fail)):
        try:
            models.append(get_model(name).name)
        except UnknownModelError as err:
            raise fail(f"models[{n}]", str(err)) from None
    engines = []
    for n, item in enumerate(fields.as_list(data.get("engines", ["hf-eager"]), "engines",
                                            fail, mappings=True)):
        path = f"engines[{n}]"
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and set(item) <= {"name", "options"} and "name" in item:
            name, options = item["name"], item.get("options") or {}
            if not isinstance(options, dict):
                raise fail(f"{path}.options", "expected a mapping of engine settings")
        else:
            raise fail(path, "expected an engine name or {name: ..., options: {...}}")
        if name not in engine_names():
            try:
                engine_class(str(name))  # module:Class, an engine of the user's own
            except UnknownEngineError as err:
                raise fail(path, str(err)) from None
        if not all(isinstance(k, str) for k in options):
            raise fail(f"{path}.options", "expected setting names as keys")
        try:
            json.dumps(options, allow_nan=False)  # no inf or NaN: JSON has none
            engines.append(EngineChoice.of(name, options))
        except (TypeError, ValueError) as err:
            raise fail(f"{path}.options", f"cannot be stored as JSON: {err}") from None
    decodings = fields.as_list(data.get("decodings", ["greedy"]), "decodings", fail)
    for n, text in enumerate(decodings):
        try:
            decoding = Decoding.parse(str(text))
        except DecodingError as err:
            raise fail(f"decodings[{n}]", str(err)) from None
        _check_decoding(decoding, models, engines, lambda why, n=n: fail(f"decodings[{n}]", why))
    batches = fields.as_list(data.get("batch_sizes", preset.get("batch_sizes", [1])),
                             "batch_sizes", fail)
    for n, b in enumerate(batches):
        if b != MAX and not fields.is_int(b, 1, MAX_BATCH):
            raise fail(f"batch_sizes[{n}]", f"expected an integer from 1 to {MAX_BATCH:,} or "
                                            f"'max', got {fields.shown(b)}")
    grids = fields.grids(data, preset, fail, list(PRESETS))
    cap = fields.whole(data.get("max_batch_cap", DEFAULT_CAP), "max_batch_cap", fail, 1,
                       MAX_BATCH)
    repeats = fields.whole(data.get("repeats", preset.get("repeats", 3)), "repeats", fail, 1,
                           fields.MAX_REPEATS)
    warmup = fields.whole(data.get("warmup", preset.get("warmup", 1)), "warmup", fail, 0,
                          fields.MAX_REPEATS)
    seed = fields.whole(data.get("seed", 0), "seed", fail, 0, fields.MAX_SEED)
    dtype = data.get("dtype", "bfloat16")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise fail("dtype", f"expected one of {', '.join(DTYPES)}, got {fields.shown(dtype)}")
    idle_s = fields.seconds(data.get("idle_s", 5.0), "idle_s", fail)
    tp = data.get("tp", 1)
    _check_tp(tp, models, engines, lambda why: fail("tp", why))
    min_window_s = fields.seconds(data.get("min_window_s", preset.get("min_window_s", 0.0)),
                                  "min_window_s", fail, 60)
    if min_window_s > 0 and warmup < 1:
        raise fail("min_window_s", "needs warmup >= 1 (the warm-up times a run)")
    cooldown = fields.cooldown(data.get("cooldown"), fail)
    spec = SweepSpec(slurm=fields.slurm(data.get("slurm"), fail),
        models=_once(models), engines=_once(engines),
        decodings=_once(str(d) for d in decodings), batch_sizes=_once(batches), grids=grids,
        repeats=repeats, warmup=warmup,
        cooldown=None if cooldown is None else Cooldown(**cooldown), max_batch_cap=cap,
        dtype=dtype, seed=seed, idle_s=idle_s, tp=tp, min_window_s=min_window_s,
        source=source, raw=dict(data),
    )
    _check_context(spec, fail)
    return spec


def _once(values) -> list:
    """Each value once, in order: a model or batch named twice is measured once (it was
    measured as often as named)."""
    return list(dict.fromkeys(values))


def _check_tp(tp, models: list[str], engines: list[EngineChoice], fail) -> None:
    """The sweep's tensor parallelism against every engine and model (its GPUs are counted
    when it runs)."""
    for model in models:
        for engine in engines:
            try:
                check_tp(tp, get_model(model), engine_class(engine.name))
            except ParallelError as err:
                raise fail(str(err)) from None
    if tp > 1:  # one process a GPU (the worker's ranks), or vLLM's own: not both in a worker
        per_process = {e.name for e in engines if engine_class(e.name).tp_per_process}
        others = {e.name for e in engines} - per_process
        if per_process and others:
            raise fail(f"at tp {tp}, {', '.join(sorted(per_process))} runs as one process a "
                       f"GPU and {', '.join(sorted(others))} starts its own: run them as "
                       f"separate sweeps")


def _check_decoding(decoding: Decoding, models: list[str], engines: list[EngineChoice],
                    fail) -> None:
    """Every engine supports the decoding, and a speculative draft suits every model."""
    for choice in engines:
        for model in models:
            try:
                engine_class(choice.name).check_support(get_model(model), decoding)
            except EngineError as err:
                raise fail(str(err)) from None


def _check_context(spec: SweepSpec, fail) -> None:
    for n, model in enumerate(spec.models):
        context = get_model(model).max_context
        for inputs, outputs in spec.grids:
            longest = max(inputs) + max(outputs)
            if longest > context:
                raise fail(f"models[{n}]", f"{model}'s context is {context} tokens, but the "
                                           f"grid asks for up to {longest} (input + output)")
