"""Tensor parallelism checked before any GPU work: a TP size against the engine, the model's
attention heads and the GPUs this process can use."""

from __future__ import annotations

import os

from infergy.meter import nvml
from infergy.models.catalog import ModelSpec


class ParallelError(ValueError):
    """A tensor-parallel size that cannot run; raised before any work."""


def check_tp(tp: int, spec: ModelSpec, engine) -> None:
    """`tp` against the engine (its class) and the model's attention heads."""
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise ParallelError(f"--tp must be a positive integer, got {tp!r}")
    if tp == 1:
        return
    if not engine.supports_tp:
        raise ParallelError(
            f"--tp {tp}: engine {engine.name} runs on one GPU; tensor parallelism is measured "
            f"through hf-eager (transformers' own plan, one process a GPU), vllm or "
            f"vllm-eager")
    heads = int(spec.config["num_attention_heads"])
    kv_heads = int(spec.config.get("num_key_value_heads") or heads)
    if heads % tp:
        raise ParallelError(f"--tp {tp} does not divide {spec.name}'s {heads} attention "
                            f"heads: choose a divisor of {heads}")
    if engine.tp_per_process and kv_heads % tp:  # transformers' plan splits them only
        raise ParallelError(f"--tp {tp} does not divide {spec.name}'s {kv_heads} key-value "
                            f"heads, which {engine.name} splits over the GPUs")
    if kv_heads % tp and tp % kv_heads:  # vLLM splits KV heads, or copies them to each GPU
        raise ParallelError(f"--tp {tp} neither divides {spec.name}'s {kv_heads} key-value "
                            f"heads nor is a multiple of them")


def check_tp_gpus(tp: int) -> None:
    """`tp` against the GPUs this process can use (counted through NVML: CUDA untouched)."""
    if tp == 1:
        return
    reason = nvml.nvml_init()
    if reason is not None:
        raise ParallelError(f"--tp {tp}: no GPU can be counted here ({reason})")
    try:
        visible = len(nvml.visible_gpu_indices())
    finally:
        nvml.nvml_shutdown()
    if tp > visible:
        setting = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={setting})" if setting is not None else ""
        raise ParallelError(f"--tp {tp}: only {visible} GPU(s) visible here{where}")
