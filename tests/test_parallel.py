"""Tensor parallelism (issue 10): the checks before any work, the GPUs measured, and each
GPU's energy beside their sum."""

from __future__ import annotations

import sys

import pytest

from fake_pynvml import FakeNvmlDevice, FakePynvml
from infergy.bench.point import Point, measure_point
from infergy.engines import EngineError, engine_class
from infergy.meter import nvml, open_meter
from infergy.models import get_model
from infergy.parallel import ParallelError, check_tp, check_tp_gpus
from simulated import SimulatedGpu

LLAMA = get_model("llama-3.1-8b")  # 32 attention heads, 8 key-value heads
UUIDS = [f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd" for i in range(4)]


@pytest.mark.parametrize(("tp", "engine", "supports", "message"), [
    (0, "vllm", True, "--tp must be a positive integer, got 0"),
    (2, "hf-eager", False, "--tp 2: engine hf-eager runs on one GPU"),
    (3, "vllm", True, "--tp 3 does not divide llama-3.1-8b's 32 attention heads"),
])
def test_a_tp_that_cannot_run_is_refused_with_the_reason(tp, engine, supports, message):
    with pytest.raises(ParallelError, match=message):
        check_tp(tp, LLAMA, engine=engine, supports_tp=supports)


def test_tp_must_also_split_or_copy_the_key_value_heads():
    # 12 attention heads, 2 key-value heads: 3 GPUs divide the first, not the second
    with pytest.raises(ParallelError, match=r"--tp 3 neither divides qwen2-1\.5b's 2 key-value"):
        check_tp(3, get_model("qwen2-1.5b"), engine="vllm", supports_tp=True)


def test_tp_that_divides_the_heads_passes():
    for tp in (1, 2, 4, 8, 32):  # 32: each GPU with its own attention head, KV heads copied
        check_tp(tp, LLAMA, engine="vllm", supports_tp=True)


def fake_gpus(monkeypatch, count: int) -> FakePynvml:
    module = FakePynvml([FakeNvmlDevice(u) for u in UUIDS[:count]])
    monkeypatch.setattr(nvml, "pynvml", module)
    return module


def test_tp_beyond_the_visible_gpus_is_refused_naming_the_setting(monkeypatch):
    fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    check_tp_gpus(2)
    with pytest.raises(ParallelError,
                       match=r"--tp 4: only 2 GPU\(s\) visible here \(CUDA_VISIBLE_DEVICES=0,1\)"):
        check_tp_gpus(4)


def test_tp_without_a_driver_is_refused(monkeypatch):
    monkeypatch.setattr(nvml, "pynvml", None)
    check_tp_gpus(1)  # one GPU or the CPU: nothing to count
    with pytest.raises(ParallelError, match="--tp 2: no GPU can be counted here"):
        check_tp_gpus(2)


def test_the_meter_measures_the_first_tp_visible_gpus_only(monkeypatch):
    fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1,2")
    with open_meter(limit=2, idle_s=0, cpu=False, sync=lambda: None) as meter:
        assert [g.name for g in meter.gpus] == ["gpu3", "gpu1"]  # CUDA's order
    with open_meter(idle_s=0, cpu=False, sync=lambda: None) as meter:
        assert len(meter.gpus) == 3  # no limit: every visible GPU


def test_a_point_over_two_gpus_keeps_each_gpus_energy_beside_the_sum(engines, make_meter):
    """The per-GPU aggregation, with simulated sensors standing in for two GPUs' counters:
    one window, read by one process, gives both GPUs the same edges."""
    meter = make_meter([SimulatedGpu(0, power_w=300.0, update_s=1e-4),
                        SimulatedGpu(1, power_w=100.0, update_s=1e-4)])
    result = measure_point(engines["hf-eager"], Point("tiny", "hf-eager", 2, 8, 4), meter,
                           repeats=2, warmup=0)
    assert result.status == "ok", result.error
    assert result.gpus_measured == 2
    assert set(result.gpu_energy_j) == {"gpu0", "gpu1"}
    assert result.gpu_energy_j["gpu0"] == pytest.approx(3 * result.gpu_energy_j["gpu1"],
                                                        rel=0.05)
    for r in result.repeats:
        assert sum(r.gpu_energy_j.values()) == pytest.approx(r.request.energy_j)


def test_vllm_is_started_over_tp_gpus_and_single_gpu_engines_refuse_more(monkeypatch):
    import fake_vllm

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    engine = engine_class("vllm")(LLAMA, device="cuda", tp=2)
    engine.load()
    assert fake_vllm.LLM.instances[-1].kwargs["tensor_parallel_size"] == 2
    engine.close()
    with pytest.raises(EngineError, match="engine hf-eager runs on one GPU, not --tp 2"):
        engine_class("hf-eager")(LLAMA, device="cpu", tp=2)


def test_vllms_server_is_started_over_tp_gpus(tmp_path):
    from infergy.bench.serve import vllm_server

    command = vllm_server(LLAMA, port=8000, served_name="llama", folder=tmp_path, tp=4)
    assert command[command.index("--tensor-parallel-size") + 1] == "4"
    assert "--tensor-parallel-size" not in vllm_server(LLAMA, port=8000, served_name="llama",
                                                       folder=tmp_path)


@pytest.mark.parametrize(("args", "message"), [
    (["--mode", "offline", "-e", "hf-eager", "--tp", "2"],
     "--tp 2: engine hf-eager runs on one GPU"),
    (["--mode", "online", "--serve", "hf-paged", "--tp", "2"],
     "--tp 2: engine hf-paged runs on one GPU"),
    (["--mode", "online", "--serve", "vllm", "--tp", "3"],
     "--tp 3 does not divide llama-3.1-8b's 32 attention heads"),
])
def test_replay_refuses_a_tp_that_cannot_run_before_any_work(args, message):
    from typer.testing import CliRunner

    from infergy.cli import app

    res = CliRunner().invoke(app, ["replay", "-t", "azure-code-2023", "-m", "llama-3.1-8b",
                                   "--sample", "4", *args])
    assert res.exit_code == 2 and message in " ".join(res.output.split())
