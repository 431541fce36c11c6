"""Test double: a stand-in for the `vllm` package, enough for infergy's adapter. It records
the arguments the adapter passes and generates token ids without any model."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

__version__ = "0.0-fake"


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class LLM:
    instances: ClassVar[list[LLM]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        LLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=True):
        tokens = params.kwargs["max_tokens"]
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[7] * tokens)])
                for _ in prompts]
