"""transformers `generate`: the study's unoptimized PyTorch (`hf-eager`, dynamic cache) and
PyTorch + torch.compile (`hf-compiled`, a static cache sized to the request and compiled by
transformers' own compile path, with CUDA graphs)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path

from infergy.engines.attention import NAME as ATTENTION_NAME
from infergy.engines.attention import use_sdpa_gqa
from infergy.engines.base import Engine, EngineError, Generation
from infergy.engines.decoding import Decoding
from infergy.engines.speculative import (
    assisted_generate,
    check_draft,
    check_draft_weights,
    speculative_generate,
)
from infergy.models.build import build_model
from infergy.models.memory import batch_that_fits, sequence_bytes


class _StepStreamer:
    """Sees every step of `generate`: the prompt first, then each step's new tokens (moved
    to the host, so the GPU has finished that step). Calls `on_first_token` after the
    prefill and records when each step's tokens were ready."""

    def __init__(self, start_s: float, on_first_token: Callable[[], None] | None):
        self.start_s = start_s
        self.on_first_token = on_first_token
        self.puts = 0
        self.times: list[float] = []

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 1:  # the prompt
            return
        self.times.append(time.perf_counter() - self.start_s)
        if self.puts == 2 and self.on_first_token is not None:
            self.on_first_token()

    def end(self) -> None:
        pass


class HFEager(Engine):
    name = "hf-eager"
    description = "transformers generate, dynamic cache (the study's unoptimized PyTorch)"
    first_token_hook = True
    decodings = ("greedy", "sample", "beam", "speculative")
    supports_tp = True  # transformers' tensor-parallel plan, one process a GPU
    tp_per_process = True
    cache_implementation: str | None = None  # transformers' default: the dynamic cache
    attention = "sdpa"  # the default; `--engine-option attention=NAME` changes it
    _draft = None  # (name, model) of speculative decoding's draft, built on first use

    def load(self) -> None:
        import torch

        self._torch = torch
        self.model = build_model(self.spec, device=self.device, dtype=self.dtype, seed=self.seed,
                                 weights=self.weights)
        if self.tp > 1:
            if not torch.distributed.is_initialized():
                raise EngineError(f"{self.name} over {self.tp} GPUs runs as one process a GPU "
                                  f"(torch.distributed): `infergy measure`, `replay` and "
                                  f"`sweep` with --tp {self.tp} start them")
            self.model = distribute(self.model, self.tp, self.device)
        self.attention = str(self.options.get("attention", self.attention))
        if self.attention == ATTENTION_NAME:
            use_sdpa_gqa(self.model)
        elif self.attention != self.model.config._attn_implementation:
            try:
                self.model.set_attn_implementation(self.attention)
            except (ValueError, ImportError) as err:
                raise EngineError(f"{self.name}: attention {self.attention!r} cannot be used: "
                                  f"{err} (infergy also offers {ATTENTION_NAME!r})") from None

    def _generation_kwargs(self, output_tokens: int, decoding: Decoding) -> dict:
        kwargs = {
            "max_new_tokens": output_tokens,
            "min_new_tokens": output_tokens,  # end-of-sequence never stops a request early
            "do_sample": decoding.sampling,
            "pad_token_id": 0,
        }
        if decoding.sampling:
            kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=0)
        if decoding.strategy == "beam":
            kwargs.update(num_beams=decoding.beams, num_return_sequences=1)
        if self.cache_implementation:
            kwargs["cache_implementation"] = self.cache_implementation
        return kwargs

    def check_decoding(self, decoding: Decoding) -> None:
        checked = self.__dict__.setdefault("_checked", set())  # once: generate checks each call
        if decoding in checked:
            return
        super().check_decoding(decoding)
        if decoding.strategy == "speculative":
            weights = self.options.get("draft_weights")
            if weights is not None:
                check_draft_weights(Path(weights), self.spec, self.weights)
            elif self.weights is not None and decoding.acceptance is None:
                raise EngineError(
                    f"speculative decoding with real target weights and a random "
                    f"{decoding.draft}: the draft would agree almost never; give its weights "
                    f"(--draft-weights DIR) or set acceptance=X to measure a given acceptance")
        checked.add(decoding)

    def prepare(self, batch, input_tokens, output_tokens, decoding) -> None:
        if decoding.strategy == "speculative":
            self._draft_model(decoding.draft)  # built here, measured apart from the requests

    def _draft_model(self, name: str):
        if self._draft is None or self._draft[0] != name:
            self._draft = None
            weights = self.options.get("draft_weights")
            self._draft = (name, build_model(check_draft(self.spec, name), device=self.device,
                                             dtype=self.dtype, seed=self.seed + 1,
                                             weights=None if weights is None else Path(weights)))
        return self._draft[1]

    def _speculative(self, ids, output_tokens, decoding, on_first_token) -> Generation:
        """infergy's batched loop, or with engine option speculative_path=assisted (one
        sequence, the draft's own acceptance, one vocabulary) transformers' assisted
        generation, which reports its first tokens only after its first round: its prefill
        window then holds the draft's first proposals and the first verification too."""
        path = self.options.get("speculative_path", "loop")
        if path not in ("loop", "assisted"):
            raise EngineError(f"{self.name}: speculative_path must be loop or assisted, got "
                              f"{path!r}")
        draft = self._draft_model(decoding.draft)
        start = time.perf_counter()
        streamer = _StepStreamer(start, on_first_token)
        if path == "assisted":
            if decoding.acceptance is not None:
                raise EngineError("transformers' assisted generation compares the draft's "
                                  "tokens: a controlled acceptance needs speculative_path=loop")
            if draft.config.vocab_size != self.model.config.vocab_size:
                raise EngineError("transformers' assisted generation needs the draft's and the "
                                  "target's vocabularies of one size: use speculative_path=loop")
            tokens, stats = assisted_generate(self.model, draft, ids, output_tokens,
                                              decoding.lookahead, streamer=streamer,
                                              pad_token_id=0)
        else:
            streamer.put(ids)  # the prompt, as generate gives it; the first token's put below
            generator = self._torch.Generator(device=self.device).manual_seed(decoding.seed)
            tokens, stats = speculative_generate(
                self.model, draft, ids, output_tokens, decoding.lookahead,
                acceptance=decoding.acceptance, generator=generator,
                on_first_token=lambda: streamer.put(None))
        if tokens.shape[1] != output_tokens:
            raise EngineError(f"{self.name} generated {tokens.shape[1]} tokens, not "
                              f"{output_tokens}")
        # A round gives several tokens: no per-token times, so TPOT comes from the decode.
        return Generation(output_tokens=[output_tokens] * len(ids),
                          first_token_s=streamer.times[0] if streamer.times else None,
                          stats={**stats.as_dict(), "path": path})

    def generate(self, prompts, output_tokens, decoding, on_first_token=None) -> Generation:
        self.check_decoding(decoding)
        torch = self._torch
        ids, mask = self._padded(prompts)
        if decoding.strategy == "speculative":
            if not bool(mask.all()):
                raise EngineError(f"{self.name}: speculative decoding takes prompts of one "
                                  f"length, not {sorted({len(p) for p in prompts})}")
            return self._speculative(ids, output_tokens, decoding, on_first_token)
        torch.manual_seed(decoding.seed)
        start = time.perf_counter()
        streamer = _StepStreamer(start, on_first_token)
        # transformers streams no beam search: no per-step times, no first-token signal.
        streams = self.first_token_hook_for(decoding)
        with torch.inference_mode():
            out = self.model.generate(
                ids, attention_mask=mask, streamer=streamer if streams else None,
                **self._generation_kwargs(output_tokens, decoding),
            )
        generated = out.shape[1] - ids.shape[1]
        if generated != output_tokens:
            raise EngineError(f"{self.name} generated {generated} tokens, not {output_tokens}")
        return Generation(
            output_tokens=[generated] * len(prompts),
            first_token_s=streamer.times[0] if streamer.times else None,
            token_times_s=streamer.times,
        )

    def _padded(self, prompts):
        """The prompts as one batch and its attention mask: prompts shorter than the longest
        are left-padded (pad id 0, masked out), as a static batch of mixed lengths runs."""
        torch = self._torch
        longest = max(map(len, prompts))
        ids = torch.zeros((len(prompts), longest), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, longest - len(prompt):] = 1
        return ids.to(self.device), mask.to(self.device)

    def info(self) -> dict:
        return {**super().info(), "attention": self.attention}

    def first_token_hook_for(self, decoding: Decoding) -> bool:
        return self.first_token_hook and decoding.strategy != "beam"

    def _cache_tokens(self, input_tokens: int, output_tokens: int) -> int:
        """KV slots this engine holds per sequence."""
        return input_tokens + output_tokens

    def max_batch(self, input_tokens, output_tokens):
        torch = self._torch
        if self.device == "cuda":
            free, _ = torch.cuda.mem_get_info()
            free += torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
            source = "free GPU memory after loading (torch.cuda.mem_get_info)"
        else:
            import psutil

            free = psutil.virtual_memory().available
            source = "available host memory (psutil)"
        per = sequence_bytes(self.spec, input_tokens, output_tokens,
                             getattr(torch, self.dtype).itemsize,
                             self._cache_tokens(input_tokens, output_tokens), tp=self.tp)
        return batch_that_fits(free, per), {
            "method": "memory model (infergy.models.memory)", "source": source,
            "free_gib": round(free / 2**30, 2), "per_sequence_mib": round(per / 2**20, 2)}

    def peak_memory_gib(self) -> float | None:
        if self.device != "cuda":
            return None
        return self._torch.cuda.max_memory_allocated() / 2**30

    def reset_peak_memory(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.reset_peak_memory_stats()

    def close(self) -> None:
        self.model = self._draft = None
        if self.device == "cuda":
            gc.collect()
            self._torch.cuda.empty_cache()


class HFCompiled(HFEager):
    name = "hf-compiled"
    supports_tp = tp_per_process = False  # torch.compile over DTensors: not measured yet
    description = ("transformers generate, static cache sized to the request, compiled with "
                   "CUDA graphs (the study's PyTorch + torch.compile)")
    cache_implementation = "static"
    decodings = ("greedy", "sample", "beam")  # speculative: hf-eager (its loop is not compiled)
    # transformers' sdpa copies K and V per query head under a static cache's mask, which made
    # this engine 1.8x slower than hf-eager at batch 128; see engines/attention.py.
    attention = ATTENTION_NAME

    def load(self) -> None:
        super().load()
        from transformers import CompileConfig

        # Each (batch, length) is its own graph: let dynamo keep many instead of falling back
        # to eager silently after 8 recompiles.
        self._torch._dynamo.config.cache_size_limit = max(
            64, self._torch._dynamo.config.cache_size_limit
        )
        self.compile_config = CompileConfig(
            mode=self.options.get("compile_mode", "reduce-overhead"),
            fullgraph=bool(self.options.get("fullgraph", False)),
            # One graph specialised to each batch shape: with dynamo's default, the second
            # batch size recompiles with a symbolic batch and later ones reuse that graph.
            dynamic=self.options.get("dynamic", False),
        )
        # transformers compiles generate's forward on accelerators only; say so on a CPU.
        self.compiled = self.device != "cpu"

    def _drop_graphs(self) -> None:
        """Drop the compiled graphs of earlier shapes and their CUDA graph memory pools: a sweep
        compiles one graph a shape, and kept they would fill the card (and shrink the next
        max-batch estimate) and, past dynamo's recompile limit, leave it running eager while
        labelled compiled."""
        if self.compiled:
            self._torch._dynamo.reset()
            gc.collect()
            self._torch.cuda.empty_cache()

    def max_batch(self, input_tokens, output_tokens):
        self._drop_graphs()
        return super().max_batch(input_tokens, output_tokens)

    def prepare(self, batch, input_tokens, output_tokens, decoding) -> None:
        self._drop_graphs()
        # transformers keeps the largest static cache of earlier calls (to avoid recompiling);
        # size it to this request instead, as the study's static cache was.
        self.model._previous_max_cache_length = -1
        prompts = [[1] * input_tokens for _ in range(batch)]
        self.generate(prompts, output_tokens, decoding)  # compiles and captures this shape

    def _generation_kwargs(self, output_tokens: int, decoding: Decoding) -> dict:
        kwargs = super()._generation_kwargs(output_tokens, decoding)
        if self.compiled:
            kwargs["compile_config"] = self.compile_config
        return kwargs

    def info(self) -> dict:
        return {**super().info(), "compiled": self.compiled,
                "compile_mode": self.compile_config.mode,
                "compile_dynamic": self.compile_config.dynamic}


def distribute(model, tp: int, device: str):
    """A transformers model built whole on this rank (the same seed on every rank: the same
    weights) split by its own tensor-parallel plan over `tp` ranks. Each rank builds the
    whole model first: a model that does not fit one GPU cannot be split this way."""
    from torch.distributed.device_mesh import init_device_mesh
    from transformers.distributed import DistributedConfig

    mesh = init_device_mesh(device, (tp,), mesh_dim_names=("tp",))
    return type(model).maybe_distribute_model(model, DistributedConfig(tp_size=tp), mesh)
