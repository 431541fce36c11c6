"""How much memory one sequence of a batch needs: the memory model behind batch size `max`.

A rough, deliberately generous model (every estimate is confirmed by a run, and the search
halves the batch after an out-of-memory): the KV cache of I + O tokens, the largest transient
activations of the prefill (one layer's residual, attention projections and MLP at a time),
and the logits of one position in float32 with a few copies for the sampler.
"""

from __future__ import annotations

from infergy.models.flops import kv_cache_bytes_per_token
from infergy.models.shape import SpecLike, shape

USABLE_FRACTION = 0.9  # of the memory free after the model is loaded


def sequence_bytes(spec: SpecLike, input_tokens: int, output_tokens: int,
                   dtype_bytes: float = 2, cache_tokens: int | None = None,
                   tp: int = 1) -> float:
    """Bytes one sequence adds to a batch, on each GPU of `tp` the model is split over (the
    KV heads, attention projections and MLP are split; the residual stream and the logits
    stay whole on each). `cache_tokens`: the KV slots the engine holds per sequence, when
    not exactly I + O (a paged cache rounds up to whole blocks)."""
    s = shape(spec)
    slots = cache_tokens or input_tokens + output_tokens
    kv = kv_cache_bytes_per_token(spec, dtype_bytes) * slots / tp
    kv_dim = s.kv_heads * s.head_dim
    mlp = s.token_mlp_width
    per_token = (4 * s.hidden + (2 * kv_dim + 3 * mlp) / tp) * dtype_bytes
    logits = s.vocab * 4 * 4
    return kv + input_tokens * per_token + logits


def batch_that_fits(free_bytes: float, per_sequence_bytes: float) -> int:
    return max(0, int(USABLE_FRACTION * free_bytes // per_sequence_bytes))
