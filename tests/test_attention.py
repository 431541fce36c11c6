"""infergy's grouped-query SDPA (engines/attention.py) computes exactly what transformers'
`sdpa` computes, without copying K and V per query head."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from infergy.engines.attention import sdpa_gqa_attention_forward  # noqa: E402
from infergy.models.build import build_model  # noqa: E402


class _Attention(torch.nn.Module):
    num_key_value_groups = 4
    is_causal = True


def _reference(query, key, value, mask, scaling):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(_Attention(), query, key, value, mask, scaling=scaling)[0]


@pytest.mark.parametrize("with_mask", [True, False])
def test_decode_step_matches_transformers_sdpa_with_and_without_a_mask(with_mask):
    gen = torch.Generator().manual_seed(0)
    batch, kv_heads, slots, dim = 3, 2, 11, 16
    query = torch.randn(batch, kv_heads * 4, 1, dim, generator=gen)
    key = torch.randn(batch, kv_heads, slots, dim, generator=gen)
    value = torch.randn(batch, kv_heads, slots, dim, generator=gen)
    # A static cache's decode mask: each sequence sees its first n slots, n varying by row.
    mask = (torch.arange(slots)[None, :] < torch.tensor([[4], [11], [7]]))[:, None, None, :]
    mask = mask if with_mask else None
    ours, weights = sdpa_gqa_attention_forward(_Attention(), query, key, value, mask,
                                               scaling=0.25)
    assert weights is None
    assert ours.shape == (batch, 1, kv_heads * 4, dim)
    torch.testing.assert_close(ours, _reference(query, key, value, mask, 0.25))


def test_prefill_goes_to_transformers_sdpa_unchanged():
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(2, 8, 5, 16, generator=gen)
    key = torch.randn(2, 2, 5, 16, generator=gen)
    value = torch.randn(2, 2, 5, 16, generator=gen)
    ours, _ = sdpa_gqa_attention_forward(_Attention(), query, key, value, None, scaling=0.25)
    torch.testing.assert_close(ours, _reference(query, key, value, None, 0.25))


def test_static_cache_generation_gives_the_tokens_and_logits_of_stock_sdpa(tiny, monkeypatch):
    """The whole model, the way hf-compiled runs it (static cache, a mask at decode)."""
    import infergy.engines.attention as attention
    from infergy.engines.attention import use_sdpa_gqa

    model = build_model(tiny, device="cpu", dtype="float32", seed=0)
    ids = torch.randint(3, 500, (3, 12), generator=torch.Generator().manual_seed(2))
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6,
                  do_sample=False, pad_token_id=0, cache_implementation="static",
                  output_logits=True, return_dict_in_generate=True)
    stock = model.generate(ids, **kwargs)
    grouped_calls = []
    original = attention.sdpa_gqa_attention_forward

    def counting(module, query, *args, **kw):
        grouped_calls.append(query.shape[2] == 1)
        return original(module, query, *args, **kw)

    from transformers import AttentionInterface

    use_sdpa_gqa(model)
    monkeypatch.setitem(AttentionInterface._global_mapping, attention.NAME, counting)
    ours = model.generate(ids, **kwargs)
    assert model.config._attn_implementation == "sdpa_gqa"
    assert any(grouped_calls), "no decode step went through the grouped path"
    assert torch.equal(stock.sequences, ours.sequences)
    for a, b in zip(stock.logits, ours.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
