"""Test double: a stand-in for the `vllm` package, enough for infergy's adapter. It records
the arguments the adapter passes and generates token ids without any model. Started with a
speculative_config, it counts drafts as vLLM's synthetic rejection sampling would (each
proposal accepted with the conditional rate of its position, until the first rejection) in
counters shaped as `LLM.get_metrics()` gives them. Its beam search, as vLLM's, needs a
tokenizer (in the model's folder, loaded at start unless `skip_tokenizer_init`) and returns
each prompt's beams with their prompt's tokens first. Register it also as
`vllm.sampling_params` (BeamSearchParams' module)."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

__version__ = "0.0-fake"


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class BeamSearchParams(SamplingParams):
    pass


class LLM:
    instances: ClassVar[list[LLM]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.tokenizer = None
        if not kwargs.get("skip_tokenizer_init", False):  # vLLM loads it as it starts
            folder = Path(kwargs["model"])
            if not (folder / "tokenizer.json").is_file():
                raise OSError(f"Can't load tokenizer for '{folder}'")
            self.tokenizer = folder
        self.prefix_cache_resets = 0
        self.shut_down = False
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self._shutdown))
        spec = kwargs.get("speculative_config")
        self.k = spec["num_speculative_tokens"] if spec else 0
        rates = (spec or {}).get("synthetic_acceptance_rates") or [0.0] * self.k
        # vLLM's unconditional rates to conditional ones: P(i accepted | all before were)
        self.conditional = [r / (rates[i - 1] if i else 1.0) if r else 0.0
                            for i, r in enumerate(rates)]
        self.counts = {"drafts": 0, "draft_tokens": 0, "accepted": 0}
        self.per_position = [0] * self.k
        self.random = random.Random(0)
        LLM.instances.append(self)

    def _shutdown(self, timeout=None):
        self.shut_down = True

    def generate(self, prompts, params, use_tqdm=True):
        tokens = params.kwargs["max_tokens"]
        if self.k:
            for _ in prompts:
                self._speculate(tokens)
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[7] * tokens)])
                for _ in prompts]

    def beam_search(self, prompts, params, use_tqdm=False):
        if self.tokenizer is None:
            raise ValueError("Tokenizer not available when `skip_tokenizer_init=True`")
        width, tokens = params.kwargs["beam_width"], params.kwargs["max_tokens"]
        return [SimpleNamespace(sequences=[SimpleNamespace(
            tokens=p["prompt_token_ids"] + [7] * tokens) for _ in range(width)])
            for p in prompts]

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        self.prefix_cache_resets += 1
        return True

    def _speculate(self, tokens: int) -> None:
        made = 1  # the prefill's token
        while made < tokens:
            proposed = min(self.k, tokens - made - 1) or 1
            accepted = 0
            while accepted < proposed and self.random.random() < self.conditional[accepted]:
                self.per_position[accepted] += 1
                accepted += 1
            self.counts["drafts"] += 1
            self.counts["draft_tokens"] += proposed
            self.counts["accepted"] += accepted
            made += accepted + 1

    def get_metrics(self):
        if self.kwargs.get("disable_log_stats", True):
            raise AssertionError("Stat logging disabled")
        counter = SimpleNamespace
        return [counter(name="vllm:num_requests_running", labels={}, value=0),
                *(counter(name=f"vllm:spec_decode_num_{k}", labels={"engine": "0"}, value=v)
                  for k, v in (("drafts", self.counts["drafts"]),
                               ("draft_tokens", self.counts["draft_tokens"]),
                               ("accepted_tokens", self.counts["accepted"]))),
                counter(name="vllm:spec_decode_num_accepted_tokens_per_pos",
                        labels={"engine": "0"}, values=list(self.per_position))]
