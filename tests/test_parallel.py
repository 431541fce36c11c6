"""Tensor parallelism (issue 10): the checks before any work, the GPUs measured, and each
GPU's energy beside their sum."""

from __future__ import annotations

import json
import os
import sys

import pytest

from fake_pynvml import FakeNvmlDevice, FakePynvml
from infergy.engines import EngineError, engine_class
from infergy.meter import nvml, open_meter
from infergy.models import get_model
from infergy.plan.point import Point
from infergy.plan.tp import ParallelError, check_tp, check_tp_gpus
from infergy.run.parallel import match_rank_gpus
from infergy.run.point import measure_point
from simulated import SimulatedGpu

LLAMA = get_model("llama-3.1-8b")  # 32 attention heads, 8 key-value heads
UUIDS = [f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd" for i in range(4)]


@pytest.mark.parametrize(("tp", "engine", "message"), [
    (0, "vllm", "--tp must be a positive integer, got 0"),
    (2, "hf-compiled", "--tp 2: engine hf-compiled runs on one GPU"),
    (2, "hf-paged", "--tp 2: engine hf-paged runs on one GPU"),
    (3, "vllm", "--tp 3 does not divide llama-3.1-8b's 32 attention heads"),
    (3, "hf-eager", "--tp 3 does not divide llama-3.1-8b's 32 attention heads"),
])
def test_a_tp_that_cannot_run_is_refused_with_the_reason(tp, engine, message):
    with pytest.raises(ParallelError, match=message):
        check_tp(tp, LLAMA, engine_class(engine))


def test_tp_must_also_split_or_copy_the_key_value_heads():
    # 12 attention heads, 2 key-value heads: 3 GPUs divide the first, not the second
    with pytest.raises(ParallelError, match=r"--tp 3 neither divides "
                                            r"deepseek-r1-distill-qwen-1\.5b's 2 key-value"):
        check_tp(3, get_model("deepseek-r1-distill-qwen-1.5b"), engine_class("vllm"))


def test_tp_that_divides_the_heads_passes():
    for tp in (1, 2, 4, 8, 32):  # 32: each GPU with its own attention head, KV heads copied
        check_tp(tp, LLAMA, engine_class("vllm"))
    for tp in (1, 2, 4, 8):  # transformers' plan splits the 8 KV heads, never copies them
        check_tp(tp, LLAMA, engine_class("hf-eager"))
    with pytest.raises(ParallelError, match=r"--tp 16 does not divide llama-3\.1-8b's 8 "
                                            r"key-value heads, which hf-eager splits"):
        check_tp(16, LLAMA, engine_class("hf-eager"))


def test_the_memory_model_gives_each_gpu_its_share_of_a_sequence():
    """B = max at TP N starts from what one GPU of N holds: its share of the KV heads and of
    the projections; the residual stream and the logits stay whole on each."""
    from infergy.models.memory import sequence_bytes

    whole = sequence_bytes(LLAMA, 4096, 512)
    assert 0.5 * whole < sequence_bytes(LLAMA, 4096, 512, tp=2) < 0.6 * whole


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


def test_each_measured_gpu_is_matched_to_its_rank_by_uuid():
    """torch gives a GPU's UUID without NVML's "GPU-"; rank 1 here runs on NVML's first."""
    measured = ["GPU-aaaa-1", "GPU-bbbb-2"]
    assert match_rank_gpus(["BBBB-2", "aaaa-1"], measured) == {"GPU-bbbb-2": 0,
                                                                "GPU-aaaa-1": 1}


def test_a_rank_on_a_gpu_not_measured_is_refused_naming_it_and_the_remedy():
    with pytest.raises(ParallelError, match=r"rank 1 runs on GPU cccc-3, which is not among "
                                            r"the GPUs measured \(GPU-aaaa-1, GPU-bbbb-2\).*"
                                            r"CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        match_rank_gpus(["aaaa-1", "cccc-3"], ["GPU-aaaa-1", "GPU-bbbb-2"])


@pytest.mark.parametrize("rank_gpus, measured", [
    ([None, None], ["GPU-aaaa-1", "GPU-bbbb-2"]),  # ranks on a CPU
    (["aaaa-1", "bbbb-2"], []),  # no GPU readable here: the meter says why
])
def test_nothing_is_matched_where_a_side_cannot_name_its_gpus(rank_gpus, measured):
    assert match_rank_gpus(rank_gpus, measured) == {}


def test_a_point_over_two_gpus_keeps_each_gpus_energy_beside_the_sum(engines, make_meter):
    """The per-GPU aggregation, with simulated sensors standing in for two GPUs' counters:
    one window, read by one process, gives both GPUs the same edges."""
    meter = make_meter([SimulatedGpu(0, power_w=300.0, update_s=1e-4),
                        SimulatedGpu(1, power_w=100.0, update_s=1e-4)])
    result = measure_point(engines["hf-eager"], Point("tiny", "hf-eager", 2, 8, 4), meter,
                           repeats=2, warmup=0)
    assert result.status == "ok", result.error
    assert len(result.provenance["gpus"]) == 2  # the GPUs measured
    assert set(result.gpu_energy_j) == {"gpu0", "gpu1"}
    assert result.gpu_energy_j["gpu0"] == pytest.approx(3 * result.gpu_energy_j["gpu1"],
                                                        rel=0.05)
    for r in result.repeats:
        assert sum(r.gpu_energy_j.values()) == pytest.approx(r.request.energy_j)


def test_vllm_is_started_over_tp_gpus_and_single_gpu_engines_refuse_more(monkeypatch):
    import fake_vllm

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # load() sets it: restored
    engine = engine_class("vllm")(LLAMA, device="cuda", tp=2)
    engine.load()
    assert fake_vllm.LLM.instances[-1].kwargs["tensor_parallel_size"] == 2
    engine.close()
    with pytest.raises(EngineError, match="engine hf-compiled runs on one GPU, not --tp 2"):
        engine_class("hf-compiled")(LLAMA, device="cpu", tp=2)
    # hf-eager splits only as one process a GPU, which infergy's commands start
    with pytest.raises(EngineError, match="runs as one process a GPU"):
        engine_class("hf-eager")(get_model("tiny"), device="cpu", tp=2).load()


def test_vllms_server_is_started_over_tp_gpus(tmp_path):
    from infergy.run.servers import vllm_server

    command = vllm_server(LLAMA, port=8000, served_name="llama", folder=tmp_path, tp=4)
    assert command[command.index("--tensor-parallel-size") + 1] == "4"
    assert "--tensor-parallel-size" not in vllm_server(LLAMA, port=8000, served_name="llama",
                                                       folder=tmp_path)


MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                 "NVSHMEM_DISABLE_NVLS": "1"}
VLLM_ALL_REDUCE = ("VLLM_FLASHINFER_ALLREDUCE_BACKEND", "VLLM_ALLREDUCE_USE_SYMM_MEM")


@pytest.fixture
def multicast_off(monkeypatch):
    """A host that turns NVLink multicast off, as the shared GPU hosts here do; vLLM's own
    settings unset (and restored after the test, which the engine sets them for)."""
    for name, value in MULTICAST_OFF.items():
        monkeypatch.setenv(name, value)
    for name in VLLM_ALL_REDUCE:
        monkeypatch.setenv(name, "")  # so that the value before (none) is what comes back
        monkeypatch.delenv(name)


def test_vllm_split_on_a_host_without_multicast_leaves_out_the_multicast_all_reduce(
        monkeypatch, multicast_off):
    import fake_vllm

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    engine = engine_class("vllm")(LLAMA, device="cuda", tp=2)
    engine.load()
    kwargs = fake_vllm.LLM.instances[-1].kwargs
    assert kwargs["compilation_config"] == {"pass_config": {"fuse_allreduce_rms": False}}
    assert os.environ["VLLM_FLASHINFER_ALLREDUCE_BACKEND"] == "trtllm"
    assert os.environ["VLLM_ALLREDUCE_USE_SYMM_MEM"] == "0"
    assert engine.info()["env"] == {**MULTICAST_OFF, "VLLM_FLASHINFER_ALLREDUCE_BACKEND":
                                    "trtllm", "VLLM_ALLREDUCE_USE_SYMM_MEM": "0"}
    engine.close()
    # a second engine of the process finds the variables set: it records them all the same
    engine = engine_class("vllm-eager")(LLAMA, device="cuda", tp=2)
    engine.load()
    assert engine.info()["env"]["VLLM_FLASHINFER_ALLREDUCE_BACKEND"] == "trtllm"
    engine.close()
    # one GPU has no all-reduce: vLLM's defaults stand
    engine = engine_class("vllm")(LLAMA, device="cuda", tp=1)
    engine.load()
    assert "compilation_config" not in fake_vllm.LLM.instances[-1].kwargs
    assert "env" not in engine.info()
    engine.close()


@pytest.mark.parametrize(("given", "passed"), [
    ({"mode": 3}, {"mode": 3, "pass_config": {"fuse_allreduce_rms": False}}),
    (3, {"mode": 3, "pass_config": {"fuse_allreduce_rms": False}}),
    ({"pass_config": {"fuse_allreduce_rms": True}}, {"pass_config": {"fuse_allreduce_rms":
                                                                      True}}),  # asked for
])
def test_a_compilation_config_given_keeps_its_own_settings_and_is_not_changed(
        monkeypatch, multicast_off, given, passed):
    import fake_vllm

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    options = {"compilation_config": given}
    before = json.dumps(given)
    engine = engine_class("vllm")(LLAMA, device="cuda", tp=2, options=options)
    engine.load()
    assert fake_vllm.LLM.instances[-1].kwargs["compilation_config"] == passed
    assert json.dumps(options["compilation_config"]) == before  # the options' record: as given
    engine.close()
    with pytest.raises(EngineError, match="compilation_config: a mapping or a mode number"):
        engine_class("vllm")(LLAMA, device="cuda", tp=2,
                             options={"compilation_config": "-O3"}).load()


def test_vllm_split_where_multicast_is_on_keeps_vllms_defaults(monkeypatch):
    import fake_vllm

    for name in (*MULTICAST_OFF, *VLLM_ALL_REDUCE):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    engine = engine_class("vllm")(LLAMA, device="cuda", tp=2)
    engine.load()
    assert "compilation_config" not in fake_vllm.LLM.instances[-1].kwargs
    assert "VLLM_FLASHINFER_ALLREDUCE_BACKEND" not in os.environ
    engine.close()


def test_vllms_server_split_on_a_host_without_multicast(tmp_path, multicast_off):
    from infergy.run.servers import vllm_server

    command = vllm_server(LLAMA, port=8000, served_name="llama", folder=tmp_path, tp=2)
    assert command[:5] == ["env", *(f"{k}={v}" for k, v in MULTICAST_OFF.items()),
                           "VLLM_FLASHINFER_ALLREDUCE_BACKEND=trtllm"]
    assert command[5] == "VLLM_ALLREDUCE_USE_SYMM_MEM=0" and command[6] == sys.executable
    passes = json.loads(command[command.index("--compilation-config") + 1])
    assert passes == {"pass_config": {"fuse_allreduce_rms": False}}
    single = vllm_server(LLAMA, port=8000, served_name="llama", folder=tmp_path)
    assert single[0] == sys.executable and "--compilation-config" not in single


@pytest.mark.parametrize(("args", "message"), [
    (["--mode", "offline", "-e", "hf-compiled", "--tp", "2"],
     "--tp 2: engine hf-compiled runs on one GPU"),
    (["--mode", "offline", "-e", "hf-eager", "--tp", "16"],
     "--tp 16 does not divide llama-3.1-8b's 8 key-value heads, which hf-eager splits"),
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


@pytest.mark.parametrize(("args", "message"), [
    (["--tp", "3"], "--tp 3 does not divide tiny's 4 attention heads"),
    (["--tp", "4"], "--tp 4 does not divide tiny's 2 key-value heads, which hf-eager splits"),
    (["--tp", "2", "-e", "hf-compiled"], "--tp 2: engine hf-compiled runs on one GPU"),
    (["--tp", "2", "-e", "hf-eager", "-e", "vllm"],
     "at tp 2, hf-eager runs as one process a GPU and vllm starts its own: run them as "
     "separate sweeps"),
    (["--tp", "2", "--device", "cuda"], "--tp 2: only 1 GPU(s) visible here"),
])
def test_a_sweep_refuses_a_tp_that_cannot_run_before_any_work(tmp_path, monkeypatch, args,
                                                               message):
    from typer.testing import CliRunner

    from infergy.cli import app

    fake_gpus(monkeypatch, 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # the one GPU fake_gpus makes
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [tiny]\nengines: [hf-eager]\ninput_tokens: [8]\n"
                    "output_tokens: [2]\nidle_s: 0\n")
    res = CliRunner().invoke(app, ["sweep", str(spec), "--db", str(tmp_path / "r.db"), *args])
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert not (tmp_path / "r.db").exists()  # refused before the store, the worker, a GPU


@pytest.mark.parametrize("command", [
    ["measure", "-m", "llama-3.1-8b", "-e", "hf-eager", "-b", "1", "-i", "32", "--output", "8"],
    ["replay", "-t", "azure-code-2023", "-m", "llama-3.1-8b", "-e", "hf-eager", "--sample",
     "4"],
    ["sweep", "SPEC"],
])
def test_tp_on_a_machine_without_gpus_is_refused_unless_cpu_is_asked(tmp_path, monkeypatch,
                                                                     command):
    """On this machine (no CUDA), `--tp 2` once split llama-3.1-8b over two CPU processes,
    both killed for want of memory, with no word said: a split over CPUs is for tests, asked
    for with --device cpu."""
    from typer.testing import CliRunner

    from infergy.cli import app

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [llama-3.1-8b]\nengines: [hf-eager]\ninput_tokens: [32]\n"
                    "output_tokens: [8]\nidle_s: 0\n")
    command = [str(spec) if arg == "SPEC" else arg for arg in command]
    res = CliRunner().invoke(app, [*command, "--tp", "2", "--db", str(tmp_path / "r.db")])
    assert res.exit_code == 2, res.output
    assert ("--tp 2 splits the model over GPUs, and torch sees no CUDA GPU here (--device cpu "
            "splits it over 2 CPU processes instead") in " ".join(res.output.split())
    assert not (tmp_path / "r.db").exists()


def test_a_replay_refuses_more_ranks_than_visible_gpus_before_any_work(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from infergy.cli import app

    fake_gpus(monkeypatch, 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # the one GPU fake_gpus makes
    (tmp_path / "t.csv").write_text("in,out\n20,5\n")
    res = CliRunner().invoke(app, ["replay", "-t", str(tmp_path / "t.csv"), "--input-col",
                                   "in", "--output-col", "out", "-m", "tiny", "-e", "hf-eager",
                                   "--tp", "2", "--batch", "2", "--db", str(tmp_path / "r.db")])
    assert res.exit_code == 2, res.output
    assert "--tp 2: only 1 GPU(s) visible here" in " ".join(res.output.split())
    assert not (tmp_path / "r.db").exists()


def test_a_ranks_engine_failure_is_told_at_once_and_ranks_left_waiting_are_out_of_step(
        tmp_path, monkeypatch):
    """A rank whose engine fails tells the launcher before its window's edge (which waits for
    the others, maybe stuck in the model for it); ranks still running RANK_GRACE_S later are
    out of step, and `launch` stops them."""
    from infergy.engines.decoding import Decoding
    from infergy.run.parallel import (
        FAILING_ENV,
        RANK_ENV,
        RANK_GRACE_S,
        Telling,
        _out_of_step,
        tell_launch,
    )
    from simulated_engines import SimulatedFailureEngine

    monkeypatch.setenv(FAILING_ENV, str(tmp_path))
    monkeypatch.setenv(RANK_ENV, "1")
    engine = Telling(SimulatedFailureEngine(get_model("tiny"), device="cpu", fail_from_call=1,
                                            error=RuntimeError("simulated failure")),
                     tell_launch)
    assert engine.name == "simulated-failure"  # everything else passes through
    with pytest.raises(RuntimeError, match="simulated failure"):  # and the failure goes on
        engine.generate([[1, 2]], 2, Decoding.parse("greedy"))
    assert (tmp_path / "rank-1").read_text() == "RuntimeError: simulated failure"
    seen = {}  # the launcher's clock, from when it first saw each note (not the file's)
    assert _out_of_step(tmp_path, seen, now=100.0) is None  # the others may end with it
    assert _out_of_step(tmp_path, seen, now=100.0 + RANK_GRACE_S) is None
    assert _out_of_step(tmp_path, seen, now=101.0 + RANK_GRACE_S) == (
        1, "RuntimeError: simulated failure")
    assert _out_of_step(tmp_path, {}, grace_s=2.0, now=200.0) is None


def test_launch_stops_ranks_left_waiting_for_one_that_failed_alone(tmp_path, monkeypatch,
                                                                   capsys):
    """Rank 1's engine fails and tells it, then waits (as at its window's edge) while rank 0
    runs on (as in a collective that will never come): `launch` ends both `grace_s` after
    it saw the failure, returns 1 and says rank 1's error."""
    import time
    from pathlib import Path

    from infergy.run.parallel import launch

    src = Path(__file__).parents[1] / "src"
    rank = tmp_path / "rank.py"  # stands for `python -m infergy`: launch's ranks run it
    rank.write_text(f"#!{sys.executable}\n"
                    f"import os, sys, time\n"
                    f"sys.path.insert(0, {str(src)!r})\n"
                    f"from infergy.run.parallel import tell_launch\n"
                    f"if os.environ['INFERGY_TP_RANK'] == '1':\n"
                    f"    tell_launch(RuntimeError('simulated failure'))\n"
                    f"time.sleep(120)\n")
    rank.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(rank))
    start = time.monotonic()
    assert launch(2, [], grace_s=1.0) == 1
    assert time.monotonic() - start < 15
    err = " ".join(capsys.readouterr().err.split())
    assert "rank 1 of 2 failed: RuntimeError: simulated failure" in err
    assert "out of step" in err


def test_launch_says_which_rank_a_signal_killed_and_exits_as_a_shell_would(tmp_path, monkeypatch,
                                                                           capsys):
    """Two ranks of llama-3.1-8b on a machine short of memory: the system killed rank 0
    (SIGKILL), which could say nothing, and the command ended with status 247 and no word.
    Now `launch` names the rank and the signal and returns 128 + its number."""
    import signal

    from infergy.run.parallel import launch

    rank = tmp_path / "rank.sh"  # stands for `python -m infergy`: launch's ranks run it
    rank.write_text('#!/bin/sh\n[ "$INFERGY_TP_RANK" = 0 ] && kill -KILL $$\nsleep 120\n')
    rank.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(rank))
    assert launch(2, [], grace_s=1.0) == 128 + signal.SIGKILL
    err = " ".join(capsys.readouterr().err.split())
    assert "infergy: rank 0 of 2 was killed by SIGKILL, as the system's out-of-memory killer" \
        in err


def test_hf_eager_split_over_two_ranks_decodes_as_one_and_its_windows_are_aligned(tmp_path):
    """torchrun on the CPU (gloo), with the tiny model: the split model's greedy tokens are
    the whole model's, every window edge waits for both ranks, both hold rank 0's count of
    runs a window (min_window_s), and rank 0 keeps each GPU's energy (simulated sensors)
    beside the sum."""
    import json
    import os
    import subprocess
    from pathlib import Path

    import torch

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=2", str(Path(__file__).parent / "tp_ranks.py")],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    whole = engine_class("hf-eager")(get_model("tiny"), device="cpu", dtype="float32")
    whole.load()
    prompt = torch.tensor([[1, 5, 9, 20, 33, 7, 11, 2]])
    expected = whole.model.generate(prompt, max_new_tokens=6, do_sample=False,
                                    pad_token_id=0)[0, 8:].tolist()
    assert report["tokens"] == expected
    assert report["status"] == "ok", report["error"]
    assert report["split"] == ["DTensor", [32, 64], [64, 64]]  # the plan split q_proj
    assert report["edges"][0] > 0 and report["edges"][0] == report["edges"][1]  # matched
    assert report["shared"] == [10, 10]  # rank 0's value on both
    assert report["runs"][0] > 1 and report["runs"][0] == report["runs"][1]
    shares = report["gpu_energy_j"]
    assert set(shares) == {"gpu0", "gpu1"}
    assert sum(shares.values()) == pytest.approx(report["energy_j"], rel=0.05)


def test_measure_starts_one_process_a_gpu_and_rank_0_reports(tmp_path):
    import json
    import os
    import subprocess
    from pathlib import Path

    from infergy.store import Store

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-m", "infergy", "measure", "-m", "tiny", "-e",
                           "hf-eager", "--tp", "2", "--device", "cpu", "--dtype", "float32",
                           "--idle-s", "0", "--input", "8", "--output", "4", "--batch", "2",
                           "--repeats", "2", "--json", "--db", str(tmp_path / "tp.db")],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.index("{"):])  # one report, rank 0's
    assert result["point"]["tp"] == 2 and result["status"] == "ok"
    assert done.stdout.count('"point"') == 1
    with Store(tmp_path / "tp.db") as store:  # recorded once, by rank 0, with its TP
        (point,) = store.points()
        assert point["tp"] == 2 and point["engine"] == "hf-eager" and point["batch"] == 2
        assert store.runs()[0]["status"] == "finished"


def test_an_offline_replay_at_tp_2_runs_as_two_ranks_and_rank_0_records_it(tmp_path):
    import json
    import os
    import subprocess
    from pathlib import Path

    from infergy.store import Store

    (tmp_path / "t.csv").write_text("in,out\n20,5\n30,8\n100,12\n40,6\n60,3\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-m", "infergy", "replay", "-t", "t.csv",
                           "--input-col", "in", "--output-col", "out", "-m", "tiny", "-e",
                           "hf-eager", "--tp", "2", "--device", "cpu", "--dtype", "float32",
                           "--idle-s", "0", "--batch", "2", "--batching", "natural", "--json",
                           "--db", "r.db"], capture_output=True, text=True, timeout=240,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(done.stdout[done.stdout.index("["):])  # rank 0's report alone
    assert result["status"] == "ok" and result["tp"] == 2 and result["requests"] == 5
    assert [b["size"] for b in result["batches"]] == [2, 2, 1]
    with Store(tmp_path / "r.db") as store:  # recorded once, by rank 0
        (replay,) = store.replays()
        assert json.loads(replay["result"])["tp"] == 2
        assert store.runs()[0]["status"] == "finished"


def test_a_rank_that_fails_stops_the_run_with_its_error_and_no_traceback(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-m", "infergy", "measure", "-m", "tiny", "-e",
                           "hf-eager", "--tp", "2", "--device", "cpu", "--idle-s", "0",
                           "--weights", str(tmp_path)], capture_output=True, text=True,
                          timeout=240, env=env)
    assert done.returncode == 2
    assert "no config.json: not a checkpoint directory" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_processes_a_gpu_are_started_from_the_command_line_only():
    """Called as a library (typer's runner here), infergy cannot know its command line."""
    from typer.testing import CliRunner

    from infergy.cli import app

    res = CliRunner().invoke(app, ["measure", "-m", "tiny", "-e", "hf-eager", "--tp", "2",
                                   "--device", "cpu", "--idle-s", "0"])
    assert res.exit_code == 2
    assert "starts its processes from the `infergy` command line only" in \
        " ".join(res.output.split())


def test_a_process_exit_is_said_in_words_a_signal_by_its_name():
    """A sweep's rank or worker killed by a signal was `exit code -9`: now the signal's name,
    and for SIGKILL the likely sender."""
    from infergy.run.parallel import exit_said

    assert exit_said(9) == "exit code 9"
    assert exit_said(-15) == "killed by SIGTERM"
    assert exit_said(-9) == "killed by SIGKILL, as the system's out-of-memory killer does"
