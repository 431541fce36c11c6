"""SDPA attention without the grouped-query copies at decode: `sdpa-gqa`.

transformers' `sdpa` attention copies K and V once per query head of a group (`repeat_kv`)
whenever an attention mask is passed, and a static cache always passes one at decode (over all
its slots). For Llama-3.1-8B at batch 128 and 640 slots that is about 85 GB of extra traffic per
decode step, which is why the compiled static cache was slower than the dynamic one at large
batches (docs/notes/issue3-engines.md). This function computes the same attention without the
copy: at decode (one query per sequence) the query heads of one group become the query
positions of their KV head, so each KV head is read once. Prefill goes to transformers' own
function unchanged. The result is exact: the same scores, softmax and weighted sum.
"""

from __future__ import annotations

try:  # imported at module level: this function runs inside torch.compile's traced graph
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
except ImportError:  # infergy without its `measure` extra never calls anything here
    torch = sdpa_attention_forward = None

NAME = "sdpa_gqa"


def sdpa_gqa_attention_forward(module, query, key, value, attention_mask, dropout=0.0,
                               scaling=None, is_causal=None, **kwargs):
    groups = getattr(module, "num_key_value_groups", 1)
    if groups == 1 or query.shape[2] != 1 or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    batch, heads, _, head_dim = query.shape
    # Query head h = k * groups + r belongs to KV head k (repeat_kv's order). A mask of shape
    # (batch, 1, 1, slots) broadcasts over (batch, kv heads, groups, slots).
    grouped = query.reshape(batch, key.shape[1], groups, head_dim)
    out = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
    )
    return out.reshape(batch, 1, heads, head_dim), None


def use_sdpa_gqa(model) -> None:
    """Register `sdpa_gqa` with transformers (once) and switch `model` to it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, sdpa_gqa_attention_forward)
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
