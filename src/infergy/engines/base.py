"""What every engine adapter provides to the point runner.

An engine wraps a real inference engine (transformers, vLLM, an HTTP server). It builds
the model once (`load`), gets ready for one shape of batch (`prepare`: compile, allocate
caches), and generates exactly `output_tokens` tokens for every prompt (`generate`). The
runner measures each of these in its own window.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from infergy.engines.decoding import Decoding
from infergy.models.catalog import ModelSpec


class EngineError(RuntimeError):
    """An engine cannot do what was asked; the message says why and what to do."""


@dataclass
class Generation:
    """What one `generate` call produced. Times in seconds from the call's start."""

    output_tokens: list[int]  # tokens generated, per prompt
    first_token_s: float | None = None  # when the first token of the batch was ready
    token_times_s: list[float] = field(default_factory=list)  # when each step's tokens were
    # ready (batch-level, the first token included); empty where the engine cannot say
    stats: dict = field(default_factory=dict)  # the decoding's own counts (speculative:
    # rounds, proposed, accepted, acceptance)


class Engine(ABC):
    """One inference engine for one model. Subclasses set the class attributes."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line: what it is in the study's words
    decodings: ClassVar[tuple[str, ...]] = ("greedy", "sample")
    # True: `generate` calls `on_first_token` right after the prefill, so prefill and decode
    # get windows of their own; False: the runner measures prefill by a run with 1 token.
    first_token_hook: ClassVar[bool] = False
    needs_gpu: ClassVar[bool] = False
    supports_tp: ClassVar[bool] = False  # runs over several GPUs (tensor parallelism)
    tp_per_process: ClassVar[bool] = False  # ... as one process a GPU (parallel.launch)

    def __init__(self, spec: ModelSpec, *, device: str, dtype: str = "bfloat16", seed: int = 0,
                 weights: Path | None = None, options: dict | None = None, tp: int = 1):
        if device != "cuda" and self.needs_gpu:
            raise EngineError(f"engine {self.name} needs a CUDA GPU; none is visible here")
        if tp != 1 and not self.supports_tp:
            raise EngineError(f"engine {self.name} runs on one GPU, not --tp {tp}")
        self.tp = tp  # GPUs the model is split over (the first `tp` visible ones)
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.seed = seed
        self.weights = weights
        self.options = dict(options or {})

    def first_token_hook_for(self, decoding: Decoding) -> bool:
        """Whether `generate` signals the first token for this decoding."""
        return self.first_token_hook

    @classmethod
    def check_support(cls, spec: ModelSpec, decoding: Decoding) -> None:
        """Before any work (no instance, no model): the engine has this decoding strategy, and
        a speculative draft suits the model. EngineError otherwise."""
        _check_support(cls.name, cls.decodings, spec, decoding)

    def check_decoding(self, decoding: Decoding) -> None:
        _check_support(self.name, self.decodings, self.spec, decoding)  # this instance's

    def expect(self, decoding: Decoding) -> None:
        """Before `load`: the decoding the first points ask for, checked (EngineError before
        any GPU work). An engine started for its decoding (`start_key`) starts for this one
        at load."""
        self.check_decoding(decoding)

    @classmethod
    def start_key(cls, decoding: Decoding) -> object:
        """What of `decoding` the engine is started with: a decoding of another key starts it
        again, in `prepare` (vLLM builds a speculative draft, and beam search's prefix cache,
        as it starts). None: every decoding runs on one start."""
        return None

    @abstractmethod
    def load(self) -> None:
        """Build the model (and start the engine). Measured apart as start-up."""

    def prepare(  # noqa: B027 - optional
        self, batch: int, input_tokens: int, output_tokens: int, decoding: Decoding
    ) -> None:
        """Get ready for this shape (compile, capture graphs, size caches). Measured apart."""

    @abstractmethod
    def generate(self, prompts: list[list[int]], output_tokens: int, decoding: Decoding,
                 on_first_token: Callable[[], None] | None = None) -> Generation:
        """Generate exactly `output_tokens` tokens for every prompt, in one batch. Prompts
        may differ in length (a replayed trace's): the engine pads them as it batches."""

    def info(self) -> dict:
        """Settings worth recording with every result (versions, options in effect)."""
        return {"engine": self.name, **self.options}

    def peak_memory_gib(self) -> float | None:
        """Peak GPU memory since the last `reset_peak_memory`, or None where unknown."""
        return None

    def max_batch(self, input_tokens: int, output_tokens: int) -> tuple[int | None, dict]:
        """The largest batch this loaded engine should fit for these lengths, by its memory
        model, and how that was found; None where the engine has no memory model."""
        return None, {"method": "none: this engine has no memory model"}

    def reset_peak_memory(self) -> None:  # noqa: B027 - optional
        pass

    def close(self) -> None:  # noqa: B027 - optional
        """Free the model and the GPU memory it holds."""


def _check_support(name: str, decodings: tuple[str, ...], spec: ModelSpec,
                   decoding: Decoding) -> None:
    if decoding.strategy not in decodings:
        raise EngineError(f"engine {name} does not support {decoding.strategy} decoding "
                          f"(it supports {', '.join(decodings)})")
    if decoding.strategy == "speculative":
        from infergy.engines.speculative import check_draft

        check_draft(spec, decoding.draft)
