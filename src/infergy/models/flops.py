"""Analytic FLOPs and bytes moved per forward of a dense or mixture-of-experts decoder.

Everything here is computed from a config dict (a `ModelSpec`, its name, or a raw config.json
dict); nothing imports torch.

FLOPs convention
----------------
A multiply-add counts 2 FLOPs. Counted: the matmuls, i.e. the Q, K, V and output projections
(GQA: K and V are `num_key_value_heads * head_dim` wide), the MLP (gated: gate, up and down),
for mixture-of-experts the router and the `num_experts_per_tok` experts each token is sent to
(and a shared expert with its gate, Qwen2-MoE's, which every token goes through; a layer of
`mlp_only_layers` or off `decoder_sparse_step` has a dense MLP instead),
the attention scores Q K^T and the attention-weighted values, and the LM head. Not counted:
elementwise and reduction work (norms, activations, rotary embedding, softmax, residual adds,
biases, the MoE weighting and sum) and the embedding lookup (a gather).

Attention in prefill counts the full I x I score matrix by default, as an SDPA or eager kernel
computes it and as torch's FlopCounterMode counts it (its SDPA formula ignores `is_causal`);
`causal_attention=True` counts only the causal half, I (I + 1) / 2 scores, which is the work a
causal flash kernel skips down to.

LM head: transformers' forward computes logits at every position unless told otherwise, but
`generate` (transformers 5.17, `GenerationMixin.generate`) passes `logits_to_keep=1`, so the
prefill computes logits for the last position only; vLLM also computes logits only where it
samples. `logits_positions` defaults to "last" because that is what inference engines do; use
"all" to match a plain `model(input_ids)` forward.

What FlopCounterMode counts (torch 2.13, transformers 5.17; checked in tests/test_flops.py)
-----------------------------------------------------------------------------------------
- It counts aten.mm / addmm / bmm / baddbmm and the CUDA SDPA kernels (flash, efficient,
  cuDNN). On CPU, SDPA dispatches to `_scaled_dot_product_flash_attention_for_cpu`, which has no
  formula, so attention is silently missing; the tests build models with
  `attn_implementation="eager"`, whose two matmuls (bmm, with GQA heads repeated) it counts.
- It also counts the rotary embedding's `inv_freq @ position_ids` (a bmm of head_dim / 2 x
  positions per forward), which this model leaves out: under 0.01% of any real forward.
- transformers 5.17 stores OLMoE experts as 3-D parameters and runs them through
  `experts_implementation`, "grouped_mm" by default (torch.nn.functional.grouped_mm ->
  aten._grouped_mm). FlopCounterMode has no formula for aten._grouped_mm, so by default the
  expert FLOPs are not counted at all (the count drops by the whole expert share). "eager" (a
  loop over the experts hit, F.linear -> mm) and "batched_mm" (bmm over per-(token, expert)
  gathered weights) are counted, and equal tokens x top-k x the three expert matmuls, as here.
  The tests compare all three, giving aten._grouped_mm a formula (2 x rows x in x out).

Bytes
-----
The fewest bytes that must cross GPU memory for one forward, in bytes (floats): every weight the
forward uses read once (embedding: only the rows gathered; LM head: the whole matrix; MoE: only
the experts hit), K and V of new tokens written once, and the K/V cache read once. See
`prefill_bytes` and `decode_bytes` for what is excluded.
"""

from __future__ import annotations

from typing import Literal

from infergy.models.shape import Shape, SpecLike, shape

LogitsPositions = Literal["all", "last"]

# --- parameters and weight bytes ------------------------------------------------------------


def _attention_params(s: Shape) -> int:
    weights = s.hidden * (s.q_width + 2 * s.kv_width) + s.q_width * s.hidden
    biases = (s.q_width + 2 * s.kv_width if s.qkv_bias else 0) + (s.hidden if s.o_bias else 0)
    return weights + biases


def _mlp_params(s: Shape, width: int = 0) -> int:
    """One gated MLP `width` wide (default: the dense model's MLP, or one expert)."""
    f = width or s.ffn
    return 3 * s.hidden * f + ((2 * f + s.hidden) if s.mlp_bias else 0)


def _layers_params(s: Shape, experts: float) -> float:
    """All the decoder layers, each layer of experts with `experts` experts' weights (all of
    them for a parameter count)."""
    per_layer_norms, _ = s.norm_params()
    common = s.layers * (_attention_params(s) + per_layer_norms)
    if not s.is_moe:
        return common + s.layers * _mlp_params(s)
    # The router, the experts, and a shared expert with its gate where there is one.
    shared = _mlp_params(s, s.shared_ffn) + s.hidden if s.shared_ffn else 0
    sparse = s.experts * s.hidden + experts * _mlp_params(s) + shared
    return common + s.sparse_layers * sparse + s.dense_layers * _mlp_params(s, s.dense_ffn)


def param_count(spec: SpecLike) -> int:
    """Total parameters, tied embeddings counted once (as `sum(p.numel())` over a built model)."""
    s = shape(spec)
    _, final_norm = s.norm_params()
    embeddings = s.vocab * s.hidden * (1 if s.tied else 2)
    return int(_layers_params(s, s.experts) + final_norm + embeddings)


def active_param_count(spec: SpecLike) -> int:
    """Parameters one token uses: for a mixture of experts, only its top-k experts (the router
    and everything else in full); for a dense model, `param_count`."""
    s = shape(spec)
    if not s.is_moe:
        return param_count(spec)
    _, final_norm = s.norm_params()
    embeddings = s.vocab * s.hidden * (1 if s.tied else 2)
    return int(_layers_params(s, s.experts_per_token) + final_norm + embeddings)


def weight_bytes(spec: SpecLike, dtype_bytes: float = 2) -> float:
    """Bytes of all weights stored at `dtype_bytes` per parameter (bf16: 2)."""
    return param_count(spec) * float(dtype_bytes)


def expert_weight_bytes(spec: SpecLike, dtype_bytes: float = 2) -> float:
    """Bytes of all a mixture of experts' expert weights (every layer's every expert; the
    routers not counted); 0 for a dense model."""
    s = shape(spec)
    return s.sparse_layers * s.experts * _mlp_params(s) * float(dtype_bytes)


def expert_flops(spec: SpecLike) -> float:
    """FLOPs of one token's experts over all layers (its top-k experts' three matmuls, as the
    FLOPs below count them; the router not counted); 0 for a dense model."""
    s = shape(spec)
    return s.sparse_layers * _expert_flops_per_token(s)


def kv_cache_bytes_per_token(spec: SpecLike, dtype_bytes: float = 2) -> float:
    """Bytes of K and V one token adds to the cache, over all layers (bf16: 2 bytes)."""
    return _kv_bytes_per_token(shape(spec), dtype_bytes)


def _kv_bytes_per_token(s: Shape, dtype_bytes: float) -> float:
    return 2.0 * s.layers * s.kv_width * dtype_bytes


def expected_experts_touched(num_experts: int, experts_per_token: int, tokens: int) -> float:
    """Expected number of distinct experts one MoE layer uses for `tokens` tokens.

    Assumes each token picks its `experts_per_token` experts uniformly at random and
    independently of the other tokens: an expert is missed by one token with probability
    1 - k/E, so E * (1 - (1 - k/E) ** tokens) experts are hit. A trained router is load-balanced
    but correlated across tokens, so real counts can be lower; random weights route close to
    uniformly."""
    if num_experts <= 0:
        return 0.0
    miss = 1.0 - experts_per_token / num_experts
    return num_experts * (1.0 - miss**tokens)


# --- FLOPs ----------------------------------------------------------------------------------


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _expert_flops_per_token(s: Shape) -> float:
    """Matmul FLOPs of one token through its top-k experts in one layer (0 for a dense model)."""
    return s.experts_per_token * 2.0 * 3 * s.hidden * s.ffn


def _linear_flops_per_token(s: Shape) -> float:
    """Matmul FLOPs of one token through all the layers, attention scores excluded."""
    projections = 2.0 * (s.hidden * (s.q_width + 2 * s.kv_width) + s.q_width * s.hidden)
    if not s.is_moe:
        return s.layers * (projections + 2.0 * 3 * s.hidden * s.ffn)
    shared = 2.0 * (3 * s.hidden * s.shared_ffn + s.hidden) if s.shared_ffn else 0.0
    sparse = 2.0 * s.hidden * s.experts + _expert_flops_per_token(s) + shared
    return (s.layers * projections + s.sparse_layers * sparse
            + s.dense_layers * 2.0 * 3 * s.hidden * s.dense_ffn)


def _attention_flops(s: Shape, query_key_pairs: float) -> float:
    """Q K^T and attention-weighted V for `query_key_pairs` scores, one layer, all heads."""
    return 2 * 2.0 * s.heads * s.head_dim * query_key_pairs


def _head_flops(s: Shape, positions: float) -> float:
    return 2.0 * s.hidden * s.vocab * positions


def prefill_flops(
    spec: SpecLike,
    input_tokens: int,
    batch: int = 1,
    logits_positions: LogitsPositions = "last",
    causal_attention: bool = False,
) -> float:
    """FLOPs of one forward over `input_tokens` prompt tokens for each of `batch` sequences.

    `logits_positions`: "last" (default; what `generate` and vLLM compute) or "all" (a plain
    forward). `causal_attention`: count only the causal half of the score matrix instead of the
    full I x I that kernels and FlopCounterMode count."""
    _check_positive(input_tokens=input_tokens, batch=batch)
    s = shape(spec)
    tokens = float(batch * input_tokens)
    pairs_per_sequence = (
        input_tokens * (input_tokens + 1) / 2.0 if causal_attention else float(input_tokens) ** 2
    )
    layers = tokens * _linear_flops_per_token(s) + s.layers * _attention_flops(
        s, batch * pairs_per_sequence
    )
    return layers + _head_flops(s, _logit_positions(logits_positions, tokens, batch))


def _logit_positions(logits_positions: str, tokens: float, batch: int) -> float:
    if logits_positions == "all":
        return tokens
    if logits_positions == "last":
        return float(batch)
    raise ValueError(f'logits_positions must be "all" or "last", got {logits_positions!r}')


def decode_flops(spec: SpecLike, context_tokens: int, batch: int = 1) -> float:
    """FLOPs of one decode step: one new token for each of `batch` sequences, each attending
    to `context_tokens` cached tokens plus itself. Logits for the new token only."""
    _check_positive(batch=batch)
    if int(context_tokens) != context_tokens or context_tokens < 0:
        raise ValueError(f"context_tokens must be a non-negative integer, got {context_tokens!r}")
    s = shape(spec)
    layers = batch * _linear_flops_per_token(s) + s.layers * _attention_flops(
        s, batch * (context_tokens + 1.0)
    )
    return layers + _head_flops(s, batch)


def request_flops(
    spec: SpecLike,
    input_tokens: int,
    output_tokens: int,
    batch: int = 1,
    causal_attention: bool = False,
) -> float:
    """FLOPs of `batch` requests of `input_tokens` in and `output_tokens` out, as `generate`
    runs them: a prefill (last-position logits; it yields the first output token), then
    `output_tokens - 1` decode steps at contexts I, I + 1, ..., I + O - 2."""
    _check_positive(input_tokens=input_tokens, output_tokens=output_tokens, batch=batch)
    s = shape(spec)
    steps = output_tokens - 1
    total = prefill_flops(spec, input_tokens, batch, "last", causal_attention)
    if steps:
        # Decode FLOPs are linear in the context, so the steps sum in closed form:
        # sum over c = I .. I+O-2 of (c + 1) = steps * (2I + steps + 1) / 2.
        keys = steps * (2.0 * input_tokens + steps + 1) / 2.0
        layers = steps * batch * _linear_flops_per_token(s) + s.layers * _attention_flops(
            s, batch * keys
        )
        total += layers + _head_flops(s, steps * batch)
    return total


# --- bytes ----------------------------------------------------------------------------------


def _weights_read_bytes(s: Shape, tokens: float, dtype_bytes: float) -> float:
    """Weights one forward over `tokens` tokens must read once: every layer weight (for MoE the
    expected experts hit), the whole LM head matrix and the gathered embedding rows."""
    experts = expected_experts_touched(s.experts, s.experts_per_token, int(tokens))
    _, final_norm = s.norm_params()
    params = _layers_params(s, experts) + final_norm
    params += s.vocab * s.hidden + tokens * s.hidden  # LM head, embedding rows
    return params * dtype_bytes


def prefill_bytes(
    spec: SpecLike,
    input_tokens: int,
    batch: int = 1,
    dtype_bytes: float = 2,
    kv_dtype_bytes: float | None = None,
) -> float:
    """Fewest bytes one prefill moves through GPU memory, in bytes.

    Counted: each weight used read once (`dtype_bytes` per parameter; embedding only the
    batch x I rows gathered; the whole LM head; for MoE each layer's expected distinct experts
    hit by batch x I tokens, see `expected_experts_touched`), the K and V of the batch x I new
    tokens written to the cache once and read once by attention (`kv_dtype_bytes`, default
    `dtype_bytes`).

    Excluded: activations (hidden states, MLP intermediates, score matrices), logits, rotary
    tables, weights read more than once (large GEMMs that re-stream tiles), copies an engine
    makes of its cache (transformers' DynamicCache concatenates), paged-cache metadata, and
    anything outside the forward (sampling, host transfers)."""
    _check_positive(input_tokens=input_tokens, batch=batch)
    s = shape(spec)
    kv = _kv_bytes_per_token(s, kv_dtype_bytes or dtype_bytes)
    tokens = float(batch * input_tokens)
    return _weights_read_bytes(s, tokens, dtype_bytes) + 2.0 * tokens * kv


def decode_bytes(
    spec: SpecLike,
    context_tokens: int,
    batch: int = 1,
    dtype_bytes: float = 2,
    kv_dtype_bytes: float | None = None,
) -> float:
    """Fewest bytes one decode step moves through GPU memory, in bytes.

    Counted: each weight used read once (embedding only the `batch` rows gathered; the whole LM
    head; for MoE each layer's expected distinct experts for `batch` tokens,
    E * (1 - (1 - k/E) ** batch)), the cached K and V of `context_tokens` tokens per sequence
    read once, and the new token's K and V written once.

    Excluded: as for `prefill_bytes` (activations, logits, rotary tables, re-reads, cache
    copies such as DynamicCache's concatenation, paged-cache metadata, sampling)."""
    _check_positive(batch=batch)
    if int(context_tokens) != context_tokens or context_tokens < 0:
        raise ValueError(f"context_tokens must be a non-negative integer, got {context_tokens!r}")
    s = shape(spec)
    kv = _kv_bytes_per_token(s, kv_dtype_bytes or dtype_bytes)
    return _weights_read_bytes(s, float(batch), dtype_bytes) + batch * (context_tokens + 1.0) * kv


def request_bytes(
    spec: SpecLike,
    input_tokens: int,
    output_tokens: int,
    batch: int = 1,
    dtype_bytes: float = 2,
    kv_dtype_bytes: float | None = None,
) -> float:
    """Fewest bytes of `batch` requests (I in, O out): a prefill and O - 1 decode steps at
    contexts I .. I + O - 2, each counted as in `prefill_bytes` and `decode_bytes`."""
    _check_positive(input_tokens=input_tokens, output_tokens=output_tokens, batch=batch)
    total = prefill_bytes(spec, input_tokens, batch, dtype_bytes, kv_dtype_bytes)
    steps = output_tokens - 1
    if steps:
        # Linear in the context: the steps at I .. I+O-2 sum to steps x the step at the mean.
        first = decode_bytes(spec, input_tokens, batch, dtype_bytes, kv_dtype_bytes)
        last = decode_bytes(spec, input_tokens + steps - 1, batch, dtype_bytes, kv_dtype_bytes)
        total += steps * (first + last) / 2.0
    return total

