"""Build a model to measure: random bf16 weights made on the GPU, or real weights from disk.

Random weights cost the same compute as trained ones: every matmul, attention and cache
operation has the same shapes and the same number of operations whatever the values. What
random weights change is *which* tokens come out, so infergy forces every request to its
exact output length (end-of-sequence never stops it) and never relies on their content.
"""

from __future__ import annotations

import random
from pathlib import Path

from infergy.models.catalog import ModelSpec

DTYPES = ("bfloat16", "float16", "float32")


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def default_device() -> str:
    """"cuda" where torch sees a GPU, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_model(
    spec: ModelSpec,
    *,
    device: str = "cuda",
    dtype: str = "bfloat16",
    seed: int = 0,
    weights: Path | None = None,
):
    """A transformers causal LM in eval mode on `device`.

    Without `weights`, parameters are random, seeded, and created directly on the device (an
    8B model takes seconds on a GPU; a CPU init would take minutes). With `weights`, a local
    checkpoint directory (config.json and safetensors) is loaded instead."""
    import torch
    from transformers import AutoModelForCausalLM

    if weights is not None:
        weights = Path(weights)
        if not (weights / "config.json").exists():
            raise FileNotFoundError(f"{weights}: no config.json: not a checkpoint directory")
        # device_map loads straight onto the GPU (it needs accelerate); a CPU needs neither.
        placement = {} if device == "cpu" else {"device_map": device}
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch_dtype(dtype),
                                                     **placement)
    else:
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(spec.hf_config(), dtype=torch_dtype(dtype))
    return model.eval()


def special_token_ids(config: dict) -> set[int]:
    """bos, eos and pad ids of a config (any of which may be a list or absent)."""
    ids: set[int] = set()
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = config.get(key)
        values = value if isinstance(value, list) else [value]
        ids.update(v for v in values if isinstance(v, int))
    return ids


def make_prompts(
    spec: ModelSpec, batch: int, input_tokens: int, *, seed: int = 0, tokenizer=None,
    text: str | None = None,
) -> list[list[int]]:
    """`batch` prompts of exactly `input_tokens` token ids each.

    By default random ids (seeded), never a special token. With a tokenizer and text, the
    text's tokens, repeated as needed and cut to length, each prompt from its own offset."""
    if tokenizer is not None:
        ids = tokenizer(text or "", add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("the text gave no tokens")
        stream = ids * ((input_tokens + 7 * batch) // len(ids) + 1)
        return [stream[7 * b : 7 * b + input_tokens] for b in range(batch)]
    vocab = spec.config["vocab_size"]
    special = special_token_ids(spec.config)
    rng = random.Random(seed)
    prompts = []
    for _ in range(batch):
        prompt: list[int] = []
        while len(prompt) < input_tokens:
            token = rng.randrange(vocab)
            if token not in special:
                prompt.append(token)
        prompts.append(prompt)
    return prompts


def write_placeholder_tokenizer(folder: Path, vocab_size: int) -> None:
    """A tokenizer of `vocab_size` placeholder tokens ("<0>", "<1>", ...) in `folder`, for an
    engine that will not run without one (vLLM's beam search) over random weights: its tokens
    mean nothing, as the weights don't; token ids, and so the compute, are the model's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({f"<{i}>": i for i in range(vocab_size)},
                                           unk_token="<0>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(str(folder))
