"""A model described by a local transformers `config.json`, for a model the catalog does not
hold: named wherever a model is named by the file's path (or the folder holding it).

Its shape is read from the config's fields (layers, hidden size, heads, key-value heads,
intermediate size, vocabulary, context; experts and experts per token for a mixture of
experts), each checked, so that a wrong or missing one is an error naming the file and the
field. An architecture infergy does not know (its model_type) is counted as a llama-like
decoder (biases as the config's attention_bias and mlp_bias say, two RMSNorms a layer), and
says so in its `source`; its parameters may then differ from the real model's by its norms'.
A field of an architecture whose layers are not modelled (NOT_MODELLED: DeepSeek's latent
attention and its kind of mixture of experts) is refused, naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infergy.models.catalog import ModelSpec, UnknownModelError

# Whole numbers a decoder's shape needs, with their meaning for the error message.
REQUIRED = {"hidden_size": "the hidden size", "num_hidden_layers": "the number of layers",
            "num_attention_heads": "the attention heads", "vocab_size": "the vocabulary",
            "max_position_embeddings": "the longest sequence"}


# Fields of architectures whose layers the FLOPs model does not describe: refused rather than
# counted as a llama-like decoder, which would be wrong by their whole design.
NOT_MODELLED = {
    "kv_lora_rank": "multi-head latent attention (DeepSeek-V2 and V3)",
    "n_routed_experts": "a DeepSeek-style mixture of experts (n_routed_experts, n_shared_experts, "
                        "first_k_dense_replace); infergy reads num_experts or num_local_experts",
    "first_k_dense_replace": "a DeepSeek-style mixture of experts",
}


class ModelConfigError(UnknownModelError):
    """A local config.json that cannot describe a model; the message names the file and field."""


def is_config_path(name: str) -> bool:
    """Whether a model's name is a path to a config: a .json file, or a folder holding
    config.json."""
    path = Path(name).expanduser()
    return name.endswith(".json") or (path.is_dir() and (path / "config.json").is_file())


def read_config(name: str, known_types: tuple[str, ...] = ()) -> ModelSpec:
    """The ModelSpec of the config at `name` (a file, or a folder holding config.json), named
    by its absolute path. ModelConfigError where it cannot be read or describes no decoder."""
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    path = path.resolve()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"{path}: no such config file (a model is a catalog name, a "
                               f"Hugging Face id `infergy models` lists, or a config.json)") \
            from None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelConfigError(f"{path}: cannot be read ({err})") from None
    except ValueError as err:
        raise ModelConfigError(f"{path}: not a JSON config.json ({err})") from None
    _check(path, data)
    model_type = data["model_type"]
    generic = model_type not in known_types
    source = f"the local config {path}" + (
        f"; model_type {model_type!r} is not one infergy knows: its parameters are counted as "
        f"a llama-like decoder's (biases as attention_bias and mlp_bias say, two RMSNorms a "
        f"layer)" if generic else "")
    return ModelSpec(name=str(path), hf_id=None, source=source, published_params=None,
                     active_params=None, config=data, path=str(path))


def _check(path: Path, data: Any) -> None:
    def fail(field: str, expected: str) -> ModelConfigError:
        got = json.dumps(data.get(field)) if field in data else "nothing"
        return ModelConfigError(f"{path}: field '{field}': expected {expected}, got {got}")

    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: expected a JSON object of a transformers config "
                               f"(hidden_size, num_hidden_layers, ...)")
    if "text_config" in data:
        raise ModelConfigError(f"{path}: a multimodal config: give its text model's config "
                               f"(its text_config) as a config.json of its own")
    if not isinstance(data.get("model_type"), str) or not data["model_type"]:
        raise fail("model_type", "the architecture's name, as transformers writes it "
                                 "(\"llama\", \"qwen2\", \"mixtral\")")
    for field, meaning in REQUIRED.items():
        if not _whole(data.get(field)):
            raise fail(field, f"a whole number of at least 1 ({meaning})")
    experts = data.get("num_experts") or data.get("num_local_experts") or 0
    ffn = "moe_intermediate_size" if experts and "moe_intermediate_size" in data else \
        "intermediate_size"
    if not _whole(data.get(ffn)):
        raise fail(ffn, "a whole number of at least 1 (the MLP's width"
                        + (", an expert's)" if experts else ")"))
    heads = data["num_attention_heads"]
    kv = data.get("num_key_value_heads")
    if kv is not None and (not _whole(kv) or heads % kv):
        raise fail("num_key_value_heads", f"a whole number dividing the {heads} attention heads")
    if data.get("head_dim") is not None and not _whole(data["head_dim"]):
        raise fail("head_dim", "a whole number of at least 1")
    if data.get("head_dim") is None and data["hidden_size"] % heads:
        raise fail("head_dim", f"a head width (hidden_size {data['hidden_size']} is not a "
                               f"multiple of the {heads} heads)")
    if experts:
        key = "num_experts" if data.get("num_experts") else "num_local_experts"
        if not _whole(experts):
            raise fail(key, "a whole number of experts a layer")
        top = data.get("num_experts_per_tok")
        if not _whole(top) or top > experts:
            raise fail("num_experts_per_tok", f"the experts each token uses, 1 to {experts}")
        _check_layers(data, fail)
    for field, what in NOT_MODELLED.items():
        if data.get(field):
            raise fail(field, f"nothing: {what} is not modelled")
    if data.get("use_sliding_window"):
        raise fail("use_sliding_window", "false: sliding-window attention is not modelled")


def _check_layers(data: dict, fail) -> None:
    """A mixture of experts' layers without experts (Qwen2-MoE's and Qwen3-MoE's
    mlp_only_layers and decoder_sparse_step) and the width of their MLP."""
    layers, only = data["num_hidden_layers"], data.get("mlp_only_layers") or []
    step = data.get("decoder_sparse_step", 1)
    if not isinstance(only, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < layers for i in only):
        raise fail("mlp_only_layers", f"a list of layer indices, 0 to {layers - 1}")
    if step is not None and not _whole(step):
        raise fail("decoder_sparse_step", "a whole number of at least 1 (every how many layers "
                                          "one has experts)")
    if (only or (step or 1) > 1) and not _whole(data.get("intermediate_size")):
        raise fail("intermediate_size", "a whole number of at least 1 (the MLP's width in the "
                                        "layers without experts)")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
