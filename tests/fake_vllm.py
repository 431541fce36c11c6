"""Test double: a stand-in for the `vllm` package, enough for infergy's adapter. It records
the arguments the adapter passes and generates token ids without any model. Its engine admits
`CHUNK` new requests a step (as chunked prefill does), each getting its first token in the step
it is admitted, while the requests already running get one token a step."""

from __future__ import annotations

import enum
import sys
from types import ModuleType, SimpleNamespace
from typing import ClassVar

__version__ = "0.0-fake"
CHUNK = 2


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.output_kind = RequestOutputKind.CUMULATIVE


class _Engine:
    def __init__(self):
        self.waiting: list[list] = []  # [request id, tokens wanted, tokens made]
        self.running: list[list] = []
        self.steps = 0

    def add_request(self, request_id, prompt, params):
        assert params.output_kind is RequestOutputKind.DELTA
        self.waiting.append([request_id, params.kwargs["max_tokens"], 0])

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self):
        self.steps += 1
        admitted, self.waiting = self.waiting[:CHUNK], self.waiting[CHUNK:]
        self.running += admitted
        outputs = []
        for request in self.running:
            request[2] += 1
            outputs.append(SimpleNamespace(request_id=request[0], finished=request[2] == request[1],
                                           outputs=[SimpleNamespace(token_ids=[7])]))
        self.running = [r for r in self.running if r[2] < r[1]]
        return outputs


class LLM:
    instances: ClassVar[list[LLM]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.llm_engine = _Engine()
        LLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=True):
        tokens = params.kwargs["max_tokens"]
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[7] * tokens)])
                for _ in prompts]


def install(monkeypatch) -> ModuleType:
    """Make `import vllm` (and `vllm.sampling_params`) find this double for one test."""
    module = sys.modules[__name__]
    sampling = ModuleType("vllm.sampling_params")
    sampling.RequestOutputKind = RequestOutputKind
    sampling.SamplingParams = SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    return module
