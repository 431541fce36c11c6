"""Tensor parallelism (issue 10): the checks made before any work, and the GPUs a run of
TP N uses and measures.

A run of TP N uses the first N GPUs this process can use (CUDA_VISIBLE_DEVICES order, as
vLLM places its workers), and infergy measures exactly those: the idle power of a GPU the
run does not use is not counted. Each GPU's energy is kept (`Measurement.devices`) beside
their sum (`energy_j`), over one window read by one process, so every GPU's window has the
same edges.
"""

from __future__ import annotations

import os

from infergy.models.catalog import ModelSpec


class ParallelError(ValueError):
    """A tensor-parallel size that cannot run; raised before any work."""


def check_tp(tp: int, spec: ModelSpec, *, engine: str, supports_tp: bool) -> None:
    """`tp` against the engine and the model's attention heads."""
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise ParallelError(f"--tp must be a positive integer, got {tp!r}")
    if tp == 1:
        return
    if not supports_tp:
        raise ParallelError(
            f"--tp {tp}: engine {engine} runs on one GPU; tensor parallelism is measured "
            f"through vllm or vllm-eager (transformers' own plans under torchrun: not built "
            f"yet)")
    heads = int(spec.config["num_attention_heads"])
    kv_heads = int(spec.config.get("num_key_value_heads") or heads)
    if heads % tp:
        raise ParallelError(f"--tp {tp} does not divide {spec.name}'s {heads} attention "
                            f"heads: choose a divisor of {heads}")
    if kv_heads % tp and tp % kv_heads:  # vLLM splits KV heads, or copies them to each GPU
        raise ParallelError(f"--tp {tp} neither divides {spec.name}'s {kv_heads} key-value "
                            f"heads nor is a multiple of them")


def check_tp_gpus(tp: int) -> None:
    """`tp` against the GPUs this process can use (counted through NVML: CUDA untouched)."""
    if tp == 1:
        return
    from infergy.meter import nvml

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
