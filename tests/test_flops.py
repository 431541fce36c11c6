"""Analytic FLOPs and bytes against torch's FlopCounterMode on small random models (CPU)."""

from __future__ import annotations

import pytest

from infergy.models import flops as F
from infergy.models import get_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

TOLERANCE = 0.02  # issue 3: analytic FLOPs within 2% of FlopCounterMode
BATCH, INPUT, CONTEXT = 2, 24, 40

TINY = get_model("tiny").config
# OLMoE-shaped: QK-norm, 8 experts top-2, GQA.
SMALL_MOE = {
    "model_type": "olmoe", "hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8,
    "num_experts_per_tok": 2, "vocab_size": 512, "max_position_embeddings": 2048,
    "eos_token_id": 2, "pad_token_id": 1, "tie_word_embeddings": False,
}
# Qwen2-shaped: bias on Q, K and V, GQA, tied embeddings.
SMALL_QWEN2 = {
    "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
    "max_position_embeddings": 2048, "use_sliding_window": False, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2,
}
DENSE = {"tiny": TINY, "qwen2": SMALL_QWEN2}
# Qwen2-MoE-shaped: a shared expert with its gate beside the top-2 of 8, Q, K and V biases (its
# qkv_bias), and a middle layer with a dense MLP of its own width (mlp_only_layers).
SMALL_QWEN2_MOE = {
    "model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 96,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8,
    "num_experts_per_tok": 2, "mlp_only_layers": [1], "vocab_size": 512,
    "max_position_embeddings": 2048, "use_sliding_window": False, "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2,
}


def _grouped_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    # aten._grouped_mm(a (rows, in), b (experts, in, out), offs): every row meets one expert.
    rows, inner = a_shape
    return 2 * rows * inner * out_shape[-1]


def counted_flops(fn) -> int:
    """FLOPs FlopCounterMode sees while fn runs; aten._grouped_mm, which it has no formula for,
    counted as 2 x rows x in x out."""
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten._grouped_mm: _grouped_mm_flop}
    )
    with torch.no_grad(), counter:
        fn()
    return counter.get_total_flops()


def build(config: dict, **kwargs):
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(**config)
    # Eager attention: FlopCounterMode has no formula for CPU SDPA and would miss attention.
    model = transformers.AutoModelForCausalLM.from_config(
        cfg, attn_implementation="eager", dtype=torch.float32, **kwargs
    )
    return model.eval()


def tokens(config: dict, batch: int, length: int):
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, config["vocab_size"], (batch, length), generator=generator)


def measure_prefill(model, config, logits_to_keep: int) -> int:
    ids = tokens(config, BATCH, INPUT)
    return counted_flops(
        lambda: model(input_ids=ids, use_cache=True, logits_to_keep=logits_to_keep)
    )


def measure_decode(model, config) -> int:
    with torch.no_grad():
        cache = transformers.DynamicCache(config=model.config)
        model(input_ids=tokens(config, BATCH, CONTEXT), past_key_values=cache, use_cache=True)
    assert cache.get_seq_length() == CONTEXT
    step = tokens(config, BATCH, 1)
    return counted_flops(lambda: model(input_ids=step, past_key_values=cache, use_cache=True))


def assert_close(analytic: float, counted: int) -> None:
    assert counted > 0
    assert abs(analytic - counted) / counted < TOLERANCE, (analytic, counted)


@pytest.mark.parametrize("name", sorted(DENSE))
def test_dense_prefill_matches_flop_counter(name):
    config = DENSE[name]
    model = build(config)
    # logits_to_keep=0 is a plain forward (logits everywhere); 1 is what generate passes.
    assert_close(F.prefill_flops(config, INPUT, BATCH, "all"), measure_prefill(model, config, 0))
    assert_close(F.prefill_flops(config, INPUT, BATCH, "last"), measure_prefill(model, config, 1))


@pytest.mark.parametrize("name", sorted(DENSE))
def test_dense_decode_matches_flop_counter(name):
    config = DENSE[name]
    assert_close(F.decode_flops(config, CONTEXT, BATCH), measure_decode(build(config), config))


# transformers 5.17 runs experts with grouped_mm by default; eager and batched_mm are counted by
# FlopCounterMode as they are, grouped_mm only with the formula above.
@pytest.mark.parametrize("experts", ["grouped_mm", "eager", "batched_mm"])
def test_moe_prefill_and_decode_match_flop_counter(experts):
    model = build(SMALL_MOE, experts_implementation=experts)
    assert model.config._experts_implementation == experts
    assert_close(
        F.prefill_flops(SMALL_MOE, INPUT, BATCH, "all"), measure_prefill(model, SMALL_MOE, 0)
    )
    assert_close(
        F.prefill_flops(SMALL_MOE, INPUT, BATCH, "last"), measure_prefill(model, SMALL_MOE, 1)
    )
    assert_close(F.decode_flops(SMALL_MOE, CONTEXT, BATCH), measure_decode(model, SMALL_MOE))


def test_shared_expert_and_dense_layers_match_flop_counter():
    model = build(SMALL_QWEN2_MOE)
    config = SMALL_QWEN2_MOE
    assert F.shape(config).dense_layers == 1 and F.shape(config).shared_ffn == 48
    assert_close(F.prefill_flops(config, INPUT, BATCH, "all"), measure_prefill(model, config, 0))
    assert_close(F.decode_flops(config, CONTEXT, BATCH), measure_decode(model, config))
    # The shared expert is read every step, like the attention: not an expert's weights.
    assert F.expert_weight_bytes(config) == 2 * 2 * 8 * 3 * 64 * 32  # 2 sparse layers, bf16


@pytest.mark.parametrize("config", [TINY, SMALL_MOE, SMALL_QWEN2, SMALL_QWEN2_MOE],
                         ids=["tiny", "moe", "qwen2", "qwen2-moe"])
def test_param_count_matches_the_built_model(config):
    model = build(config)
    assert F.param_count(config) == sum(p.numel() for p in model.parameters())
    assert F.weight_bytes(config) == 2 * F.param_count(config)


# --- properties of the analytic model (no torch needed, but cheap here) --------------------


def test_decode_is_two_flops_per_weight_at_short_context():
    spec = get_model("llama-3.1-8b")
    s = F.shape(spec)
    matmul_weights = F.param_count(spec) - s.vocab * s.hidden  # the embedding is a gather
    # norms (elementwise) are the only other difference: < 0.01%
    assert F.decode_flops(spec, 0) == pytest.approx(2 * matmul_weights, rel=1e-4)


def test_moe_decode_uses_the_active_experts_only():
    spec = get_model("olmoe-1b-7b")
    s = F.shape(spec)
    active_matmul = F.active_param_count(spec) - s.vocab * s.hidden
    assert F.decode_flops(spec, 0) == pytest.approx(2 * active_matmul, rel=1e-3)
    assert F.decode_flops(spec, 0) < F.decode_flops("olmo-7b", 0) / 4


def test_causal_attention_counts_half_the_scores():
    spec, length = get_model("llama-3.1-8b"), 512
    s = F.shape(spec)
    full = F.prefill_flops(spec, length)
    causal = F.prefill_flops(spec, length, causal_attention=True)
    skipped = length * length - length * (length + 1) / 2
    assert full - causal == pytest.approx(s.layers * 4 * s.heads * s.head_dim * skipped)


def test_logits_for_all_positions_cost_the_lm_head_per_token():
    spec = get_model("llama-3.1-8b")
    s = F.shape(spec)
    extra = F.prefill_flops(spec, 100, 3, "all") - F.prefill_flops(spec, 100, 3, "last")
    assert extra == pytest.approx(2 * s.hidden * s.vocab * (300 - 3))


@pytest.mark.parametrize("name", ["llama-3.1-8b", "olmoe-1b-7b"])
def test_request_is_prefill_plus_decode_steps(name):
    spec, inp, out, batch = get_model(name), 37, 9, 3
    steps = range(inp, inp + out - 1)
    flops = F.prefill_flops(spec, inp, batch) + sum(F.decode_flops(spec, c, batch) for c in steps)
    assert F.request_flops(spec, inp, out, batch) == pytest.approx(flops)
    moved = F.prefill_bytes(spec, inp, batch) + sum(F.decode_bytes(spec, c, batch) for c in steps)
    assert F.request_bytes(spec, inp, out, batch) == pytest.approx(moved)
    assert F.request_flops(spec, inp, 1, batch) == F.prefill_flops(spec, inp, batch)


def test_kv_cache_of_llama_3_1_8b_is_128_kib_per_token():
    assert F.kv_cache_bytes_per_token("llama-3.1-8b") == 2 * 32 * 8 * 128 * 2 == 131072


def test_dense_decode_bytes_are_weights_plus_cache():
    spec = get_model("llama-3.1-8b")
    s = F.shape(spec)
    kv = F.kv_cache_bytes_per_token(spec)
    # Whole weights except the embedding table, of which only the gathered row is read.
    weights = F.weight_bytes(spec) - 2 * (s.vocab - 1) * s.hidden
    assert F.decode_bytes(spec, 0) == pytest.approx(weights + kv)
    assert F.decode_bytes(spec, 1000, 4) - F.decode_bytes(spec, 0, 4) == pytest.approx(4000 * kv)
    assert F.decode_bytes(spec, 0, dtype_bytes=1, kv_dtype_bytes=1) < F.decode_bytes(spec, 0)


def test_expected_experts_touched():
    assert F.expected_experts_touched(64, 8, 1) == pytest.approx(8)
    assert F.expected_experts_touched(64, 8, 2) == pytest.approx(64 * (1 - (56 / 64) ** 2))
    assert F.expected_experts_touched(64, 8, 10_000) == pytest.approx(64)
    assert F.expected_experts_touched(0, 0, 5) == 0


def test_moe_decode_bytes_grow_with_batch_as_more_experts_are_hit():
    spec = get_model("olmoe-1b-7b")
    one, eight, many = (F.decode_bytes(spec, 0, b) for b in (1, 8, 512))
    assert one < eight < many
    assert many == pytest.approx(F.weight_bytes(spec), rel=0.02)  # every expert read
    assert one < F.weight_bytes(spec) / 4


@pytest.mark.parametrize(
    "call",
    [
        lambda: F.prefill_flops("tiny", 0),
        lambda: F.prefill_flops("tiny", 8, batch=0),
        lambda: F.prefill_flops("tiny", 8, logits_positions="first"),
        lambda: F.decode_flops("tiny", -1),
        lambda: F.request_flops("tiny", 8, 0),
        lambda: F.decode_bytes("tiny", 1.5),
        lambda: F.shape({**TINY, "model_type": "mamba"}),
        lambda: F.shape({**SMALL_QWEN2, "use_sliding_window": True}),
    ],
)
def test_bad_input_is_refused(call):
    with pytest.raises(ValueError):
        call()
