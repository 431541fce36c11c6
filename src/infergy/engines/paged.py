"""transformers continuous batching (`generate_batch`, paged attention cache): `hf-paged`.

With its default settings this path measured 5-6x less efficient than plain `generate` on an
H100 (docs/measurements.md); the settings below are infergy's, and every one can be changed
with `--engine-option key=value` (any field of transformers' ContinuousBatchingConfig).
"""

from __future__ import annotations

import math

from infergy.engines.base import EngineError, Generation
from infergy.engines.hf import HFEager


class HFPaged(HFEager):
    name = "hf-paged"
    description = "transformers continuous batching (generate_batch, paged attention cache)"
    first_token_hook = False

    def _cb_config(self, batch: int, input_tokens: int, output_tokens: int):
        from transformers import ContinuousBatchingConfig

        options = dict(self.options)
        block_size = int(options.pop("block_size", 256 if self.device == "cuda" else 16))
        blocks_per_request = math.ceil((input_tokens + output_tokens) / block_size)
        settings = {
            "block_size": block_size,
            # Room for the whole batch at once, plus one spare block a request.
            "num_blocks": batch * (blocks_per_request + 1),
            "max_requests_per_batch": batch,
            # Prefill many prompts per step, within what the activations of one step can take.
            "max_batch_tokens": min(max(batch * input_tokens, 256), 8192)
            if self.device == "cuda" else 256,
        }
        if self.device != "cuda":
            settings["use_cuda_graph"] = False
        settings.update(options)
        try:
            return ContinuousBatchingConfig(**settings), settings
        except TypeError as err:
            raise EngineError(f"hf-paged: bad engine option: {err}") from None

    def generate(self, prompts, output_tokens, decoding, on_first_token=None) -> Generation:
        from transformers import GenerationConfig

        self.check_decoding(decoding)
        torch = self._torch
        config, self.settings = self._cb_config(len(prompts), len(prompts[0]), output_tokens)
        gen = GenerationConfig(
            max_new_tokens=output_tokens,
            eos_token_id=-1,  # disabled: every request runs to its full length
            pad_token_id=0,
            do_sample=decoding.sampling,
            **({"temperature": decoding.temperature, "top_p": decoding.top_p, "top_k": 0}
               if decoding.sampling else {}),
        )
        torch.manual_seed(decoding.seed)
        # No inference_mode here: generate_batch runs its loop in a thread of its own, which
        # cannot update tensors made in inference mode.
        results = self.model.generate_batch(
            inputs=prompts, generation_config=gen, continuous_batching_config=config,
            progress_bar=False,
        )
        if len(results) != len(prompts):
            raise EngineError(f"hf-paged returned {len(results)} of {len(prompts)} requests")
        lengths = []
        for result in results.values():
            if result.error is not None:
                raise EngineError(f"hf-paged request failed: {result.error}")
            lengths.append(len(result.generated_tokens))
        if any(n != output_tokens for n in lengths):
            raise EngineError(f"hf-paged generated {sorted(set(lengths))} tokens, "
                              f"not {output_tokens}")
        return Generation(output_tokens=lengths)

    def info(self) -> dict:
        return {**super().info(), **getattr(self, "settings", {})}
