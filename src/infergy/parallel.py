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


def check_tp(tp: int, spec: ModelSpec, engine, *, command: str = "measure") -> None:
    """`tp` against the engine (its class) and the model's attention heads. Engines that run
    as one process a GPU are started by torchrun from `infergy measure` only."""
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise ParallelError(f"--tp must be a positive integer, got {tp!r}")
    if tp == 1:
        return
    if not engine.supports_tp:
        raise ParallelError(
            f"--tp {tp}: engine {engine.name} runs on one GPU; tensor parallelism is measured "
            f"through hf-eager (transformers' own plan, one process a GPU), vllm or "
            f"vllm-eager")
    if engine.tp_by_torchrun and command != "measure":
        raise ParallelError(
            f"--tp {tp} with {engine.name}: one process a GPU is started by `infergy measure` "
            f"only; {command} splits a model through vllm or vllm-eager")
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


# -- transformers' own tensor parallelism, one process per GPU under torchrun ---------------

def under_torchrun() -> bool:
    """Whether this process is one of torchrun's workers."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def relaunch(tp: int, argv: list[str]) -> int:
    """Run this infergy command again as `tp` processes under torchrun (one a GPU, on this
    host), and return its exit status. torchrun stops every worker when one fails."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={tp}", "-m", "infergy", *argv]
    return subprocess.call(command)


class Ranks:
    """This worker's place among torchrun's: `rank` 0 measures every GPU and speaks; the
    others run the same model code, so every collective and window edge is matched."""

    def __init__(self, device: str):
        import torch
        import torch.distributed as dist

        self.rank = int(os.environ["RANK"])
        self.size = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ["LOCAL_RANK"])
        if device == "cuda":
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        self.device = device
        self._torch, self._dist = torch, dist

    @property
    def speaks(self) -> bool:
        return self.rank == 0

    def synced(self, also=None):
        """A meter's sync for every rank: this rank's GPU finishes its work, then every rank
        waits for the others, so each window edge is read when all the GPUs are done (aligned
        windows). Only this rank's own GPU is synchronized: no context on the others."""
        def edge() -> None:
            if self.device == "cuda":
                self._torch.cuda.synchronize()
            if also is not None:
                also()
            self._dist.barrier()

        return edge

    def barrier(self) -> None:
        self._dist.barrier()

    def close(self) -> None:
        self._dist.destroy_process_group()


def distribute(model, tp: int, device: str):
    """A transformers model built whole on this rank (the same seed on every rank: the same
    weights) split by its own tensor-parallel plan over `tp` ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from transformers.distributed import DistributedConfig

    mesh = init_device_mesh(device, (tp,), mesh_dim_names=("tp",))
    return type(model).maybe_distribute_model(model, DistributedConfig(tp_size=tp), mesh)
