"""The numbers of a decoder's architecture that its FLOPs, bytes and memory depend on (`Shape`),
read from a config: a catalog model's, a `ModelSpec`'s, or a raw config.json dict.

Parameter counts must be exact, so each model_type's layout (biases, norms) is listed here; an
architecture not listed is refused, except a user's local config.json, counted as a llama-like
decoder (infergy.models.local says so). A mixture of experts' shared expert and its layers
without experts follow transformers' Qwen2-MoE and Qwen3-MoE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infergy.models.catalog import ModelSpec, get_model

SpecLike = ModelSpec | Mapping[str, Any] | str

# Per model_type: biases on the Q/K/V projections, on the output projection, and parameters
# of the norms in one decoder layer as a function of the shape. Parameter counts must be exact,
# so an architecture not listed here is refused rather than guessed.
_NORMS_RMS_2 = "rms2"  # input and post-attention RMSNorm weights
_NORMS_NONE = "none"  # OLMo v1: LayerNorm without weights
_NORMS_RMS_2_QK = "rms2+qk"  # OLMoE: also q_norm (hidden) and k_norm (kv width) over projections
_NORMS_RMS_2_QK_HEAD = "rms2+qk-head"  # Qwen3: also q_norm and k_norm over each head (head_dim)
_ARCHITECTURES: dict[str, tuple[bool | None, bool | None, str]] = {
    # model_type: (qkv bias, o bias, norms); None = from the config's attention_bias. A config's
    # own qkv_bias (Qwen2-MoE's), where it has one, decides the Q, K and V biases.
    "llama": (None, None, _NORMS_RMS_2),
    "qwen2": (True, False, _NORMS_RMS_2),
    "olmo": (None, None, _NORMS_NONE),
    "olmoe": (None, None, _NORMS_RMS_2_QK),
    "qwen3_moe": (None, None, _NORMS_RMS_2_QK_HEAD),
    "qwen2_moe": (True, False, _NORMS_RMS_2),
}


@dataclass(frozen=True)
class Shape:
    """The numbers of a decoder architecture that FLOPs and bytes depend on."""

    model_type: str
    hidden: int  # hidden_size
    layers: int  # num_hidden_layers
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    head_dim: int
    vocab: int  # vocab_size
    ffn: int  # intermediate size of the dense MLP, or of one expert
    tied: bool  # LM head shares the embedding matrix
    experts: int  # experts per layer; 0 for a dense model
    experts_per_token: int  # top-k; 0 for a dense model
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    norms: str
    # A mixture of experts' shared expert, which every token goes through beside its top-k, and
    # its sigmoid gate (Qwen2-MoE: shared_expert_intermediate_size); 0: none.
    shared_ffn: int = 0
    # A mixture of experts' layers with a dense MLP instead of experts, and that MLP's width
    # (transformers' Qwen2-MoE and Qwen3-MoE: mlp_only_layers, decoder_sparse_step).
    dense_layers: int = 0
    dense_ffn: int = 0

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def sparse_layers(self) -> int:
        """The layers whose MLP is the experts (0 for a dense model)."""
        return self.layers - self.dense_layers if self.is_moe else 0

    @property
    def token_mlp_width(self) -> int:
        """The widest MLP a token passes through in a layer: its experts' and the shared
        expert's together (a mixture of experts), a layer without experts' MLP, or the MLP."""
        return max(self.ffn * max(1, self.experts_per_token) + self.shared_ffn, self.dense_ffn)

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def norm_params(self) -> tuple[int, int]:
        """The norms' parameters: (a decoder layer's, the final norm's)."""
        if self.norms == _NORMS_NONE:
            return 0, 0
        per_layer = 2 * self.hidden
        if self.norms == _NORMS_RMS_2_QK:
            per_layer += self.hidden + (self.hidden // self.heads) * self.kv_heads
        elif self.norms == _NORMS_RMS_2_QK_HEAD:
            per_layer += 2 * self.head_dim
        return per_layer, self.hidden


def known_types() -> tuple[str, ...]:
    """The model_types whose parameter layout is known here."""
    return tuple(_ARCHITECTURES)


def _config(spec: SpecLike) -> tuple[Mapping[str, Any], bool]:
    """The config, and whether an unknown architecture is counted as a generic decoder (a
    user's local config.json, whose source says so)."""
    if isinstance(spec, str):
        spec = get_model(spec)
    if isinstance(spec, ModelSpec):
        return spec.config, spec.path is not None
    return spec, False


def shape(spec: SpecLike) -> Shape:
    """The `Shape` of a catalog model, a `ModelSpec` or a config.json dict.

    Raises ValueError for a model_type whose parameter layout is not known here."""
    c, generic = _config(spec)
    model_type = str(c.get("model_type", ""))
    if model_type not in _ARCHITECTURES and not generic:
        known = ", ".join(sorted(_ARCHITECTURES))
        raise ValueError(f"no FLOPs model for model_type {model_type!r}; known: {known}")
    if c.get("use_sliding_window"):
        # Attention would then see at most the window, which the formulas here do not model.
        raise ValueError("sliding-window attention is not modelled (use_sliding_window is set)")
    qkv_bias, o_bias, norms = _ARCHITECTURES.get(model_type, _ARCHITECTURES["llama"])
    attention_bias = bool(c.get("attention_bias", False))
    if "qkv_bias" in c:
        qkv_bias = bool(c["qkv_bias"])
    hidden = int(c["hidden_size"])
    heads = int(c["num_attention_heads"])
    experts = int(c.get("num_experts") or c.get("num_local_experts") or 0)
    ffn = int((experts and c.get("moe_intermediate_size")) or c["intermediate_size"])
    layers = int(c["num_hidden_layers"])
    dense_layers = _dense_layers(c, layers) if experts else 0
    return Shape(
        model_type=model_type,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=int(c.get("num_key_value_heads") or heads),
        head_dim=int(c.get("head_dim") or hidden // heads),
        vocab=int(c["vocab_size"]),
        ffn=ffn,
        tied=bool(c.get("tie_word_embeddings", False)),
        experts=experts,
        experts_per_token=int(c.get("num_experts_per_tok") or 0) if experts else 0,
        qkv_bias=attention_bias if qkv_bias is None else qkv_bias,
        o_bias=attention_bias if o_bias is None else o_bias,
        mlp_bias=bool(c.get("mlp_bias", False)),
        norms=norms,
        shared_ffn=int(c.get("shared_expert_intermediate_size") or 0) if experts else 0,
        dense_layers=dense_layers,
        dense_ffn=int(c["intermediate_size"]) if dense_layers else 0,
    )


def _dense_layers(c: Mapping[str, Any], layers: int) -> int:
    """How many of a mixture of experts' layers have a dense MLP, by transformers' rule for
    Qwen2-MoE and Qwen3-MoE: a layer has experts unless it is in mlp_only_layers, or its index
    + 1 is not a multiple of decoder_sparse_step."""
    only = set(c.get("mlp_only_layers") or ())
    step = int(c.get("decoder_sparse_step") or 1)
    return sum(1 for i in range(layers) if i in only or (i + 1) % step)
