"""transformers continuous batching (paged attention cache, its ContinuousBatchingManager):
`hf-paged`.

With its default settings this path measured 5-6x less efficient than plain `generate` on an
H100 (docs/measurements.md); the settings below are infergy's, and every one can be changed
with `--engine-option key=value` (any field of transformers' ContinuousBatchingConfig).

The manager is used the way a server uses it: built and started once per batch shape in
`prepare` (paged cache, CUDA graph capture: measured there), then fed each batch of requests.
`generate_batch` instead builds or restarts a manager on every call and stops it afterwards,
which costs about 0.25 s of thread joins and garbage collection per call whatever the batch.
"""

from __future__ import annotations

import math
import time

from infergy.engines.base import EngineError, Generation
from infergy.engines.hf import HFEager
from infergy.models.flops import kv_cache_bytes_per_token

RESULT_TIMEOUT_S = 600.0  # no token for this long: the engine is stuck, not slow


class HFPaged(HFEager):
    name = "hf-paged"
    supports_tp = tp_per_process = False
    description = "transformers continuous batching (paged attention cache, its batch manager)"
    first_token_hook = False
    decodings = ("greedy", "sample")  # transformers' continuous batching has no beam search
    _manager = None
    _shape: tuple | None = None

    def _cb_config(self, batch: int, input_tokens: int, output_tokens: int):
        from transformers import ContinuousBatchingConfig

        # attention is a model option; block_size is read by _block_size
        options = {k: v for k, v in self.options.items() if k not in ("attention", "block_size")}
        block_size = self._block_size()
        blocks_per_request = math.ceil((input_tokens + output_tokens) / block_size)
        settings = {
            "block_size": block_size,
            # Room for the whole batch at once, plus one spare block a request.
            "num_blocks": batch * (blocks_per_request + 1),
            "max_requests_per_batch": batch,
            # Prefill many prompts per step, within what the activations of one step can take.
            "max_batch_tokens": min(max(batch * input_tokens, 256), 8192)
            if self.device == "cuda" else 256,
            # No prefix sharing: the manager lives across a point's runs of the same prompts,
            # and shared blocks would let every run after the first skip its prefill.
            "allow_block_sharing": False,
        }
        if self.device != "cuda":
            settings["use_cuda_graph"] = False
        settings.update(options)
        try:
            return ContinuousBatchingConfig(**settings), settings
        except TypeError as err:
            raise EngineError(f"hf-paged: bad engine option: {err}") from None

    def max_batch(self, input_tokens, output_tokens):
        self._stop()  # the last shape's paged cache and graphs are not free memory to count
        return super().max_batch(input_tokens, output_tokens)

    def _cache_tokens(self, input_tokens: int, output_tokens: int) -> int:
        # Whole blocks plus a spare one, and the step's attention mask row of bf16 per slot.
        block = self._block_size()
        slots = (math.ceil((input_tokens + output_tokens) / block) + 1) * block
        mask_bytes = slots * 8192 * 2 if self.device == "cuda" else 0
        return slots + math.ceil(mask_bytes / self._kv_bytes_per_token())

    def _block_size(self) -> int:
        """Tokens a cache block holds: the option, else 256 on a GPU, 16 on a CPU."""
        return int(self.options.get("block_size", 256 if self.device == "cuda" else 16))

    def _kv_bytes_per_token(self) -> float:
        return kv_cache_bytes_per_token(self.spec, getattr(self._torch, self.dtype).itemsize)

    def prepare(self, batch, input_tokens, output_tokens, decoding) -> None:
        self._start(batch, input_tokens, output_tokens, decoding)
        # One batch through the new manager: first-use costs land here, not in a repeat.
        self.generate([[1] * input_tokens for _ in range(batch)], output_tokens, decoding)

    def _start(self, batch, input_tokens, output_tokens, decoding) -> None:
        from transformers import GenerationConfig
        from transformers.generation.continuous_batching.utils import WorkloadHints

        self._stop()
        config, self.settings = self._cb_config(batch, input_tokens, output_tokens)
        gen = GenerationConfig(
            max_new_tokens=output_tokens,
            eos_token_id=-1,  # disabled: every request runs to its full length
            pad_token_id=0,
            do_sample=decoding.sampling,
            **({"temperature": decoding.temperature, "top_p": decoding.top_p, "top_k": 0}
               if decoding.sampling else {}),
        )
        self._torch.manual_seed(decoding.seed)
        manager = self.model.init_continuous_batching(
            generation_config=gen, continuous_batching_config=config,
            workload_hints=WorkloadHints(input_tokens, output_tokens, batch),
        )
        if self.device == "cuda":
            manager.warmup()  # captures the CUDA graphs now, not inside a measured run
        manager.start()
        self._manager = manager
        self._shape = (batch, input_tokens, decoding)
        self._max_output = output_tokens  # the cache is sized for this many new tokens

    def _stop(self) -> None:
        if self._manager is not None:
            self._manager.stop(block=True, timeout=30)
            self._manager.destroy()
        self._manager = self._shape = None

    def generate(self, prompts, output_tokens, decoding, on_first_token=None) -> Generation:
        self.check_decoding(decoding)
        longest = max(map(len, prompts))
        if (self._shape != (len(prompts), longest, decoding)  # not prepared for this shape
                or output_tokens > self._max_output):  # or a longer output than its cache
            self._start(len(prompts), longest, output_tokens, decoding)
        manager = self._manager
        start = time.perf_counter()
        ids = manager.add_requests(inputs=prompts, max_new_tokens=output_tokens,
                                   record_timestamps=True)
        pending, results = set(ids), {}
        last = time.perf_counter()
        while pending:
            result = manager.get_result(timeout=1)
            if result is not None:
                last = time.perf_counter()
                if result.is_finished() and result.request_id in pending:
                    pending.discard(result.request_id)
                    results[result.request_id] = result
            elif not manager.is_running():
                error = manager.background_thread_status.fatal_error
                self._stop()
                raise EngineError(f"hf-paged: the batch manager stopped with "
                                  f"{len(pending)} requests unfinished: {error}")
            elif time.perf_counter() - last > RESULT_TIMEOUT_S:
                self._stop()
                raise EngineError(f"hf-paged: no result for {RESULT_TIMEOUT_S:.0f} s")
        lengths = []
        for request_id in ids:
            result = results[request_id]
            if result.error is not None:
                raise EngineError(f"hf-paged request failed: {result.error}")
            lengths.append(len(result.generated_tokens))
        if any(n != output_tokens for n in lengths):
            raise EngineError(f"hf-paged generated {sorted(set(lengths))} tokens, "
                              f"not {output_tokens}")
        # Batch-level step times: when the last request of the batch had its k-th token.
        stamps = [results[i].timestamps for i in ids]
        times = ([max(s[k] for s in stamps) - start for k in range(output_tokens)]
                 if all(s and len(s) == output_tokens for s in stamps) else [])
        return Generation(output_tokens=lengths, first_token_s=times[0] if times else None,
                          token_times_s=times)

    def info(self) -> dict:
        return {**super().info(), **getattr(self, "settings", {})}

    def close(self) -> None:
        self._stop()
        super().close()
