"""Measure one point as `infergy measure` does: checked before any GPU work, the engine loaded
under the meter, the point measured and, with a store, recorded as a run of its own (as a
sweep records it). At TP > 1 with an engine of one process a GPU (hf-eager), the command is
run again as that many ranks (`parallel.launch`); rank 0 records and reports for all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infergy.engines import EngineError, engine_class
from infergy.engines.decoding import Decoding
from infergy.models import get_model
from infergy.models.build import make_prompts
from infergy.plan.point import Point, PointError, validate_point
from infergy.plan.spec import EngineChoice
from infergy.plan.tp import check_tp
from infergy.run.device import RunError, engine_options
from infergy.run.point import PointResult
from infergy.run.session import Session, place_this_process, quiet
from infergy.store import Store


@dataclass
class MeasureOptions:
    """How a point is measured, beside the point itself."""

    repeats: int = 3
    warmup: int = 1
    min_window_s: float = 0.0
    device: str = "auto"
    seed: int = 0
    idle_s: float = 5.0
    weights: Path | None = None
    draft_weights: Path | None = None
    engine_options: list[str] = field(default_factory=list)  # key=value, to the engine
    tokenizer: Path | None = None  # with text_file: real text for the prompts
    text_file: Path | None = None
    db: Path | None = None  # the results store the point is recorded in


@dataclass
class Measured:
    """What `measure_one` returns to the process that reports: the point's result, its load
    phase ({"time_s", "energy_j"}) and the device it ran on ("cuda" or "cpu")."""

    result: PointResult
    load: dict
    device: str


def check(point: Point, how: MeasureOptions) -> dict:
    """Every check made before the meter and the model (RunError and the catalog's, engine's,
    decoding's and TP's own errors); returns the options passed to the engine."""
    if how.min_window_s > 0 and how.warmup < 1:
        raise PointError("--min-window needs --warmup 1 or more: the warm-up times a run")
    spec = get_model(point.model)
    engine_cls = engine_class(point.engine)
    engine_cls.check_support(spec, validate_point(point, spec))
    check_tp(point.tp, spec, engine_cls)
    options = engine_options(how.engine_options)
    if how.draft_weights is not None:
        if not Decoding.parse(point.decoding).draft:
            raise RunError("--draft-weights: for --decoding speculative with --draft")
        options["draft_weights"] = str(how.draft_weights)
    if (how.tokenizer is None) != (how.text_file is None):
        raise RunError("--tokenizer and --text-file go together")
    if how.text_file is not None and not how.text_file.is_file():
        raise RunError(f"--text-file {how.text_file}: no such file")
    return options


def measure_one(point: Point, how: MeasureOptions, *, argv: list[str] | None = None,
                notes: Callable[..., None] = lambda text, style="dim": None,
                status: Callable[[bool, str], object] = quiet) -> Measured | int:
    """Measure `point`: a `Measured` for the process that reports, or the exit status where
    this process only launched the ranks or is a rank other than 0. `argv` is this command
    line, run again for the ranks. `notes(text, style)` is told what cannot be measured here;
    `status(speaks, text)` gives a context whose `update(text)` shows progress."""
    options = check(point, how)
    here = place_this_process(point.engine, point.tp, how.device, how.db, argv)
    if isinstance(here, int):  # launched the ranks
        return here
    with Session.start(here, point.tp, how.idle_s, status=status, notes=notes) as session:
        try:
            with status(here.speaks, f"infergy: loading {point.model} in {point.engine} ..."):
                load = session.load(point.engine, point.model, device=here.device,
                                    dtype=point.dtype, seed=how.seed, tp=point.tp,
                                    options=options, weights=how.weights,
                                    decoding=point.decoding)
            prompts = _prompts(point, how)
        except (EngineError, OSError, ValueError) as e:  # the engine or the prompts refused
            raise RunError(str(e)) from None
        label = (f"infergy: {point.engine} B={point.batch} I={point.input_tokens} "
                 f"O={point.output_tokens}")
        with status(here.speaks, label) as st:
            result = session.measure(point, repeats=how.repeats, warmup=how.warmup,
                                     seed=how.seed, prompts=prompts,
                                     min_window_s=how.min_window_s,
                                     progress=lambda msg: st.update(f"{label}: {msg}"))
    if here.store is not None:
        record_point(here.store, result, options, load)
    if not here.speaks:  # rank 0 reports for all
        return 0
    return Measured(result, load, here.device)


def record_point(store: Store, result: PointResult, options: dict,
                 load: dict | None = None) -> None:
    """A measured point into `store` (closed after), in a run of its own, as a sweep
    records it: with the engine's load (time and energy), as printed."""
    p = result.point
    spec = {"measure": {"engine": p.engine, "model": p.model}, "tp": p.tp}
    options_key = EngineChoice.of(p.engine, options).options_key
    with store:
        store.record_run(result.provenance, spec,
                         points=[({**result.to_dict(), "load": load}, options_key, p.batch)])


def _prompts(point: Point, how: MeasureOptions) -> list[list[int]] | None:
    """The prompts from real text where a tokenizer and a text file are given (None: the
    point's own random token ids)."""
    if how.tokenizer is None:
        return None
    from transformers import AutoTokenizer

    return make_prompts(get_model(point.model), point.batch, point.input_tokens,
                        seed=how.seed, tokenizer=AutoTokenizer.from_pretrained(how.tokenizer),
                        text=how.text_file.read_text())
