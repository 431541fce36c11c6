"""Datasheet figures of GPUs, for the theoretical baseline: board power (TDP), dense bf16
tensor throughput (no sparsity) and memory bandwidth, each with its source.

The study's baseline used 309.7 TFLOPS for the RTX A6000: that is NVIDIA's bf16 figure *with*
2:4 structured sparsity, twice the dense rate that an unpruned model can use. infergy uses the
dense figure and offers the study's as `a6000-sparse` to reproduce its Table 4.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    tdp_w: float
    bf16_dense_tflops: float
    memory_tb_s: float
    source: str
    note: str = ""

    @property
    def joules_per_flop(self) -> float:
        """TDP / peak: the theoretical baseline's energy of one FLOP."""
        return self.tdp_w / (self.bf16_dense_tflops * 1e12)


GPUS = {g.name: g for g in (
    Gpu("a6000", 300, 154.8, 0.768, "NVIDIA RTX A6000 datasheet (bf16 tensor 309.7 TFLOPS "
        "with sparsity, 154.8 dense)"),
    Gpu("a6000-sparse", 300, 309.7, 0.768, "the study's figure for the RTX A6000",
        "a sparsity number: twice what a dense model can use; for reproducing the study only"),
    Gpu("rtx6000-ada", 300, 364.2, 0.960, "NVIDIA RTX 6000 Ada datasheet (1,457 TFLOPS FP8 "
        "with sparsity; bf16 dense = a quarter)"),
    Gpu("a100-pcie", 300, 312.0, 1.935, "NVIDIA A100 datasheet, 80 GB PCIe"),
    Gpu("a100-sxm", 400, 312.0, 2.039, "NVIDIA A100 datasheet, 80 GB SXM"),
    Gpu("l40s", 350, 362.05, 0.864, "NVIDIA L40S datasheet (733 TFLOPS bf16 with sparsity)"),
    Gpu("h100-sxm", 700, 989.4, 3.35, "NVIDIA H100 datasheet, SXM (1,979 TFLOPS bf16 with "
        "sparsity)"),
    Gpu("h100-pcie", 350, 756.0, 2.0, "NVIDIA H100 datasheet, PCIe (1,513 TFLOPS bf16 with "
        "sparsity)"),
    Gpu("h200", 700, 989.4, 4.8, "NVIDIA H200 datasheet, SXM (1,979 TFLOPS bf16 with "
        "sparsity)"),
    Gpu("b200", 1000, 2250.0, 8.0, "NVIDIA DGX B200 datasheet, per GPU (4.5 PFLOPS bf16 with "
        "sparsity)"),
)}
# What NVML calls the cards infergy measures -> the table's name.
NVML_NAMES = {"NVIDIA H100 80GB HBM3": "h100-sxm", "NVIDIA H200": "h200",
              "NVIDIA H100 PCIe": "h100-pcie", "NVIDIA A100-SXM4-80GB": "a100-sxm",
              "NVIDIA A100 80GB PCIe": "a100-pcie", "NVIDIA RTX A6000": "a6000",
              "NVIDIA L40S": "l40s", "NVIDIA RTX 6000 Ada Generation": "rtx6000-ada",
              "NVIDIA B200": "b200"}
ALIASES = {"h100": "h100-sxm", "a100": "a100-sxm"}


class UnknownGpuError(ValueError):
    pass


def get_gpu(name: str) -> Gpu:
    key = ALIASES.get(name.lower(), NVML_NAMES.get(name, name.lower()))
    if key not in GPUS:
        raise UnknownGpuError(f"unknown GPU {name!r}; expected one of {', '.join(GPUS)} "
                              f"(or h100, a100)")
    return GPUS[key]
