"""Offline replay of a trace on a CPU: the batch plans, the tiny model through hf-eager with a
simulated GPU, a failure mid-replay, ragged prompts, the store's replays and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from infergy.cli import app
from infergy.engines.decoding import Decoding
from infergy.plan.batches import ReplayError, plan_binned, plan_natural, select_requests
from infergy.run.replay import ReplayResult, replay_offline
from infergy.store import Store, merge
from infergy.workloads import BinGrid, Trace
from simulated import SimulatedGpu
from simulated_engines import OutOfMemoryError, SimulatedFailureEngine

GREEDY = Decoding.parse("greedy")
# (input, output, arrival s): bins (32, 8) x2, (32, 16) x2, (128, 8), (128, 32); one past the
# last output edge (600 > 512), left out as the estimator leaves it out.
ROWS = [(20, 5, 0.0), (30, 9, 2.5), (10, 3, 1.0), (100, 20, 1.5), (60, 7, 0.5), (25, 16, 2.0),
        (40, 600, 3.0)]


def trace() -> Trace:
    ins, outs, times = (np.array(c) for c in zip(*ROWS, strict=True))
    return Trace("t", ins.astype(np.int64), outs.astype(np.int64), times.astype(float))


def binned(t: Trace):
    return BinGrid.named("paper").assign(t.input_tokens, t.output_tokens)


def test_requests_past_the_bins_are_left_out_and_a_sample_is_seeded_in_trace_order():
    t = trace()
    assert list(select_requests(binned(t), None, 0)) == [0, 1, 2, 3, 4, 5]
    sample = select_requests(binned(t), 3, seed=7)
    assert len(sample) == 3 and list(sample) == sorted(sample)
    assert list(sample) == list(select_requests(binned(t), 3, seed=7))
    assert set(sample) <= {0, 1, 2, 3, 4, 5}


def test_binned_batches_hold_one_bin_each_in_trace_order_at_that_bins_batch():
    t = trace()
    requests = select_requests(binned(t), None, 0)
    sizes = {(32, 8): 1, (32, 16): 2, (128, 8): 4, (128, 32): 4}
    batches = plan_binned(t, binned(t), requests, sizes.__getitem__)
    assert [(b.bin, b.requests) for b in batches] == [
        ((32, 8), (0,)), ((32, 8), (2,)), ((32, 16), (1, 5)), ((128, 8), (4,)),
        ((128, 32), (3,))]
    assert batches[2].input_tokens == (30, 25) and batches[2].output_tokens == (9, 16)
    assert batches[2].generated_per_prompt == 16  # a static batch runs to its longest


def test_natural_batches_follow_arrival_times():
    t = trace()
    batches = plan_natural(t, select_requests(binned(t), None, 0), 4)
    assert [b.requests for b in batches] == [(0, 4, 2, 3), (5, 1)]
    assert batches[0].generated_per_prompt == 20
    with pytest.raises(ReplayError, match="at least 1"):
        plan_natural(t, np.array([0]), 0)


def test_a_replay_on_a_simulated_gpu_measures_every_batch_and_the_whole(engines, make_meter):
    t = trace()
    batches = plan_natural(t, select_requests(binned(t), None, 0), 4)
    meter = make_meter([SimulatedGpu(power_w=200.0, update_s=1e-4)])
    result = replay_offline(engines["hf-eager"], meter, t, batches, GREEDY, batching="natural")

    assert result.status == "ok" and result.error is None
    assert result.requests == 6 and len(result.batches) == 2
    assert result.output_tokens == 5 + 9 + 3 + 20 + 7 + 16
    # Batch 1 generates 20 tokens for each of 4 requests, batch 2 16 for each of 2.
    assert result.padding_tokens == (4 * 20 - (5 + 7 + 3 + 20)) + (2 * 16 - (16 + 9))
    # The whole window holds every batch's window (and the gaps between them).
    batch_energy = sum(b.energy_j for b in result.batches)
    assert batch_energy <= result.energy_j <= batch_energy * 1.5 + 1.0
    assert result.energy_j == pytest.approx(200.0 * result.time_s, rel=0.05)
    assert result.j_per_output_token == pytest.approx(result.energy_j / result.output_tokens)
    assert result.warmup["energy_j"] > 0  # the first batch once, before the measured window
    assert result.provenance["gpus"][0]["name"] == "gpu0"
    assert meter._windows == []


def test_warm_up_each_runs_every_batch_first_and_keeps_its_cold_run(engines, make_meter):
    t = trace()
    batches = plan_natural(t, select_requests(binned(t), None, 0), 4)
    meter = make_meter([SimulatedGpu(power_w=200.0, update_s=1e-4)])
    calls = []
    engine = engines["hf-eager"]
    generate = engine.generate
    engine.generate = lambda *a, **k: calls.append(len(a[0])) or generate(*a, **k)
    runs = {}
    try:
        for mode in ("each", "first", "none"):
            calls[:] = []
            result = replay_offline(engine, meter, t, batches, GREEDY, batching="natural",
                                    warmup=mode)
            runs[mode] = result, list(calls)
    finally:
        del engine.generate
    (each, calls_each), (first, calls_first), (none, calls_none) = runs.values()
    assert calls_each == [4, 4, 2, 2]  # each batch twice
    assert calls_first == [4, 4, 2] and calls_none == [4, 2]  # the first twice; each once
    assert all(b.cold["time_s"] > 0 and b.cold["energy_j"] > 0 for b in each.batches)
    assert each.warmup["runs"] == 2 and each.warmup["mode"] == "each"
    assert each.warmup["time_s"] == pytest.approx(sum(b.cold["time_s"] for b in each.batches))
    assert each.warmup["energy_j"] == pytest.approx(
        sum(b.cold["energy_j"] for b in each.batches))
    assert first.warmup["runs"] == 1 and first.warmup["mode"] == "first"
    assert first.warmup["energy_j"] > 0 and all(b.cold is None for b in first.batches)
    assert none.warmup is None and all(b.cold is None for b in none.batches)
    with pytest.raises(ValueError, match="first, each, none"):
        replay_offline(engine, meter, t, batches, GREEDY, batching="natural", warmup="all")


def replay_failing(tiny, make_meter, error: BaseException, fail_from_call: int,
                   warmup: str = "first"):
    """A binned replay (B = 1) on hf-eager that raises `error` from a `generate` call on."""
    engine = SimulatedFailureEngine(tiny, device="cpu", dtype="float32", error=error,
                                    fail_from_call=fail_from_call)
    engine.load()
    t = trace()
    batches = plan_binned(t, binned(t), select_requests(binned(t), None, 0), lambda edge: 1)
    meter = make_meter([SimulatedGpu(power_w=100.0, update_s=1e-4)])
    try:
        return replay_offline(engine, meter, t, batches, GREEDY, batching="binned",
                              warmup=warmup), meter
    finally:
        engine.close()


def test_a_failure_mid_replay_keeps_the_batches_measured_before_it(tiny, make_meter):
    result, meter = replay_failing(tiny, make_meter, RuntimeError("engine died"), 3)
    # Call 1 is the warm-up, 2 the first batch, 3 fails.
    assert result.status == "failed" and "engine died" in result.error
    assert len(result.batches) == 1 and result.requests == 1
    assert result.energy_j > 0 and meter._windows == []


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("engine died"), "failed"),
                                               (OutOfMemoryError("CUDA out of memory"), "oom")])
def test_a_failure_in_a_warm_up_run_ends_the_replay_as_a_measured_batchs_does(
        tiny, make_meter, error, status):
    # Warm-up each: call 1 is batch 1's cold run, 2 its measured run, 3 batch 2's cold run.
    result, meter = replay_failing(tiny, make_meter, error, 3, warmup="each")
    assert result.status == status and result.error.endswith("(in batch 2's warm-up run)")
    assert len(result.batches) == 1 and result.requests == 1  # batch 1 kept, with its cold run
    assert result.batches[0].cold["energy_j"] > 0 and result.energy_j > 0
    assert result.warmup["runs"] == 1  # only the measured batch's cold run
    assert result.warmup["energy_j"] == result.batches[0].cold["energy_j"]
    assert meter._windows == []


def test_a_failed_first_warm_up_leaves_nothing_measured_and_says_so(tiny, make_meter):
    result, meter = replay_failing(tiny, make_meter, RuntimeError("engine died"), 1)
    assert result.status == "failed" and "batch 1's warm-up run" in result.error
    assert result.batches == [] and result.warmup is None
    assert result.energy_j is None and result.energy_reason == "no batch was measured"
    assert meter._windows == []


def test_prompts_of_different_lengths_are_left_padded_and_decode_as_alone(engines):
    engine = engines["hf-eager"]
    short, long = [5, 6, 7], [9, 10, 11, 12, 13, 14]
    ids, mask = engine._padded([short, long])
    assert ids.tolist() == [[0, 0, 0, 5, 6, 7], long]
    assert mask.tolist() == [[0, 0, 0, 1, 1, 1], [1] * 6]
    kwargs = engine._generation_kwargs(4, GREEDY)
    with torch.inference_mode():
        together = engine.model.generate(ids, attention_mask=mask, **kwargs)[:, -4:]
        alone = engine.model.generate(torch.tensor([short]), **kwargs)[:, -4:]
    assert together[0].tolist() == alone[0].tolist()
    assert engine.generate([short, long], 4, GREEDY).output_tokens == [4, 4]


def test_replays_are_stored_and_merged(tmp_path):
    result = {"trace": "t", "mode": "offline", "batching": "natural", "model": "tiny",
              "engine": "hf-eager", "decoding": "greedy", "requests": 6, "status": "ok",
              "energy_j": 12.5, "j_per_output_token": 0.2, "time_s": 1.0}
    with Store(tmp_path / "a.db") as store:
        run = store.start_run(device="cpu:x", meta={}, spec=None)
        store.add_replay(run, "cpu:x", result)
        (row,) = store.replays()
    assert row["batching"] == "natural" and json.loads(row["result"])["energy_j"] == 12.5
    assert merge([tmp_path / "a.db"], tmp_path / "b.db")[:3] == (1, 0, 1)
    assert merge([tmp_path / "a.db"], tmp_path / "b.db")[:3] == (0, 0, 0)


# -- the command ---------------------------------------------------------------------------


def write_trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("in,out,at\n" + "".join(f"{i},{o},{a}\n" for i, o, a in ROWS))
    return [str(path), "--input-col", "in", "--output-col", "out", "--time-col", "at"]


def profile_double(path, batch: int = 2, gpu: str = "Simulated GPU"):
    """A test double of a profile: tiny's B = max points over inputs 32, 128 x outputs 8, 16,
    32 on `gpu`, energies made up (1 J per request and output token)."""
    with Store(path) as store:
        run = store.start_run(device="GPU-x", meta={"gpus": [{"model": gpu}]}, spec=None)
        for i in (32, 128):
            for o in (8, 16, 32):
                point = {"model": "tiny", "engine": "hf-eager", "batch": batch,
                         "input_tokens": i, "output_tokens": o, "decoding": "greedy", "tp": 1,
                         "dtype": "bfloat16"}
                store.add_point(run, "GPU-x", {"point": point, "status": "ok",
                                               "energy_j": float(batch * o), "time_s": 1.0},
                                engine_options="{}", batch_requested="max")
    return path


def test_the_command_replays_both_batchings_with_the_profiles_batch_and_records_them(tmp_path):
    profile = profile_double(tmp_path / "p.db", batch=2)
    res = CliRunner().invoke(app, ["replay", "-t", *write_trace(tmp_path), "-m", "tiny",
                                   "--profile", str(profile), "--idle-s", "0", "--device",
                                   "cpu", "--db", str(tmp_path / "r.db"), "--json"])
    assert res.exit_code == 0, res.output
    results = json.loads(res.stdout[res.stdout.index("["):])
    assert [r["batching"] for r in results] == ["binned", "natural"]
    assert all(r["selection"] == {"sample": None, "seed": 0} for r in results)
    binned_r, natural = results
    assert [b["size"] for b in binned_r["batches"]] == [2, 2, 1, 1]  # the profile's B = 2
    assert [b["size"] for b in natural["batches"]] == [2, 2, 2]  # its smallest B
    est = binned_r["estimate"]
    assert est["binned_j"] == pytest.approx(2 * 8 + 2 * 16 + 8 + 32)  # N x O J a request
    assert est["profile_gpu"] == "Simulated GPU"
    assert est["errors"]["binned"] is None  # no energy measured on a CPU: no error to give
    with Store(tmp_path / "r.db") as store:
        assert [r["batching"] for r in store.replays()] == ["binned", "natural"]
        assert store.runs()[0]["status"] == "finished"


# -- the profile's card: by default the one the replay runs on -------------------------------

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


def running_on_double(*cards: str):
    """A test double of `infergy.cli.replay._cards_here`: the replay runs on these cards (NVML
    names), whatever the device (the test runs on the CPU)."""
    return lambda device, tp: list(cards[:tp])


def two_cards(tmp_path):
    """tiny's profile on the H100 at B = 1 and on the H200 at B = 4, in one store."""
    db = profile_double(tmp_path / "p.db", batch=1, gpu=H100)
    return profile_double(db, batch=4, gpu=H200)


def offline_replay(tmp_path, *args):
    return CliRunner().invoke(app, ["replay", "-t", *write_trace(tmp_path), "-m", "tiny",
                                    "--batching", "binned", "--idle-s", "0", "--device", "cpu",
                                    "--json", *args])


def test_the_profile_is_of_the_card_the_replay_runs_on_by_default(tmp_path, monkeypatch):
    import infergy.cli.replay

    db = two_cards(tmp_path)
    # On the CPU, as before: the stores hold two cards, one must be chosen.
    res = offline_replay(tmp_path, "--profile", str(db))
    assert res.exit_code == 2 and "several GPUs" in res.output and "--gpu" in res.output
    monkeypatch.setattr(infergy.cli.replay, "_cards_here", running_on_double(H200))
    res = offline_replay(tmp_path, "--profile", str(db))
    assert res.exit_code == 0, res.output
    (r,) = json.loads(res.stdout[res.stdout.index("["):])
    assert r["estimate"]["profile_gpu"] == H200
    assert [b["size"] for b in r["batches"]] == [2, 2, 1, 1]  # the H200's B = 4
    # --gpu still names the card: here the H100's profile, B = 1.
    res = offline_replay(tmp_path, "--profile", str(db), "--gpu", "h100")
    assert res.exit_code == 0, res.output
    (r,) = json.loads(res.stdout[res.stdout.index("["):])
    assert r["estimate"]["profile_gpu"] == H100
    assert [b["size"] for b in r["batches"]] == [1] * 6


def test_a_card_without_a_profile_is_named_with_how_to_measure_it(tmp_path, monkeypatch):
    import infergy.cli.replay
    import infergy.profile.load

    db = two_cards(tmp_path)
    monkeypatch.setattr(infergy.cli.replay, "_cards_here",
                        running_on_double("NVIDIA A100-SXM4-80GB"))
    res = offline_replay(tmp_path, "--profile", str(db))
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert (f"no profile of tiny on hf-eager for NVIDIA A100-SXM4-80GB, the card this runs on "
            f"({db}; they hold it on {H100}, {H200})") in text
    # tiny's context (2,048) cannot hold paper-bins: a spec of the bins within it, into p.db.
    assert ("a spec file holding {models: [tiny], engines: [hf-eager], batch_sizes: [max], "
            "input_tokens: [32, 128, 256, 512, 1024], output_tokens: [8, 16, 32, 64, 128, 256, "
            f"512]}} (the study's bins within tiny's context of 2048 tokens; paper-bins asks "
            f"for 8704) and `infergy sweep SPEC --db {db}`") in text
    assert "name a card they hold with --gpu" in text and "give --batch B" in text
    # With --batch, the replay runs without an estimate, saying why.
    res = offline_replay(tmp_path, "--profile", str(db), "--batch", "2")
    assert res.exit_code == 0, res.output
    (r,) = json.loads(res.stdout[res.stdout.index("["):])
    assert "for NVIDIA A100-SXM4-80GB, the card this runs on" in r["estimate"]["none"]
    # The shipped profiles: the card's store to add, made with the repository's sweep.
    folder = tmp_path / "profiles"
    folder.mkdir()
    profile_double(folder / "tiny-h100.db", gpu=H100)
    monkeypatch.setattr(infergy.profile.load, "PROFILES", folder)
    monkeypatch.setattr(infergy.cli.replay, "_cards_here", running_on_double(H200))
    res = offline_replay(tmp_path)
    text = " ".join(res.output.split())
    assert res.exit_code == 2
    assert ("no shipped profile of tiny on hf-eager for NVIDIA H200, the card this runs on "
            "(shipped: tiny-h100.db;") in text
    assert "--db src/infergy/profile/shipped/tiny-h200.db --resume-by model" in text
    monkeypatch.setattr(infergy.cli.replay, "_cards_here", running_on_double(H100))
    res = offline_replay(tmp_path)
    assert res.exit_code == 0, res.output
    (r,) = json.loads(res.stdout[res.stdout.index("["):])
    assert r["estimate"]["profile_gpu"] == H100 and r["estimate"]["profiles"] == [
        str(folder / "tiny-h100.db")]


def test_the_cards_here_are_the_visible_gpus_nvml_names_and_none_on_a_cpu(monkeypatch):
    from fake_pynvml import FakeNvmlDevice, FakePynvml
    from infergy.cli.replay import _cards_here
    from infergy.meter import nvml

    module = FakePynvml([FakeNvmlDevice("GPU-aaaa", name=H100),
                         FakeNvmlDevice("GPU-bbbb", name=H200)])
    monkeypatch.setattr(nvml, "pynvml", module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _cards_here("cpu", 1) == []
    assert _cards_here("cuda", 1) == [H100] and _cards_here("cuda", 2) == [H100, H200]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert _cards_here("cuda", 1) == [H200]
    assert module.initialised == 0  # NVML shut down after each look
    monkeypatch.setattr(nvml, "pynvml", None)  # no nvidia-ml-py: as on a CPU
    assert _cards_here("cuda", 1) == []


def replay_command(tmp_path, *args):
    """`infergy replay` of the test trace on tiny at B = 2, on the CPU, recorded in r.db;
    the JSON results, the store's run and the command's output."""
    res = CliRunner().invoke(app, ["replay", "-t", *write_trace(tmp_path), "-m", "tiny",
                                   "--batch", "2", "--idle-s", "0", "--device", "cpu",
                                   "--db", str(tmp_path / "r.db"), "--json", *args])
    # An exception the command let through would be res.exception; its exits are SystemExit.
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    with Store(tmp_path / "r.db") as store:
        (run,) = store.runs()
    return res, json.loads(res.stdout[res.stdout.index("["):]), run


def test_the_command_with_warm_up_each_keeps_every_batchs_cold_run(tmp_path):
    res, results, run = replay_command(tmp_path, "--warmup", "each")
    assert res.exit_code == 0, res.output
    assert [r["batching"] for r in results] == ["binned", "natural"]
    for r in results:
        assert r["batches"] and all(b["cold"]["time_s"] > 0 and "energy_j" in b["cold"]
                                    for b in r["batches"])
        assert r["warmup"]["mode"] == "each"
        assert r["warmup"]["runs"] == len(r["batches"])
        assert r["warmup"]["time_s"] == pytest.approx(sum(b["cold"]["time_s"]
                                                          for b in r["batches"]))
    assert json.loads(run["spec"])["warmup"] == "each"


@pytest.mark.parametrize(("args", "mode"), [([], "first"), (["--warmup", "none"], "none")])
def test_the_command_warms_up_the_first_batch_by_default_or_none(tmp_path, args, mode):
    res, (r,), run = replay_command(tmp_path, "--batching", "natural", *args)
    assert res.exit_code == 0, res.output
    assert all(b["cold"] is None for b in r["batches"])
    if mode == "first":
        assert r["warmup"]["mode"] == "first" and r["warmup"]["runs"] == 1
    else:
        assert r["warmup"] is None
    assert json.loads(run["spec"])["warmup"] == mode


def test_a_warm_up_that_fails_ends_the_command_with_the_batches_measured_kept(tmp_path):
    # The test double fails at B = 1: binned B = 2, 2, then 1, whose warm-up run fails.
    res, (r,), run = replay_command(tmp_path, "--batching", "binned", "--warmup", "each",
                                    "-e", "simulated_engines:FailsByBatchEngine",
                                    "--engine-option", "fatal_at_batch=1")
    assert res.exit_code == 1, res.output
    assert r["status"] == "failed" and r["error"].endswith("(in batch 3's warm-up run)")
    assert [b["size"] for b in r["batches"]] == [2, 2] and r["requests"] == 4
    assert r["warmup"]["runs"] == 2 and all(b["cold"] for b in r["batches"])
    assert run["status"] == "failed"


@pytest.mark.parametrize(("args", "message"), [
    (["--mode", "served"], "--mode must be offline or online"),
    (["--mode", "online", "--warmup", "first"], "--warmup: for --mode offline"),
    (["--batching", "sorted"], "--batching must be binned, natural or both"),
    (["--warmup", "all"], "--warmup must be first, each, none"),
    ([], "give --batch B"),  # no profile of tiny is shipped
])
def test_bad_replays_fail_before_any_work_with_a_clear_message(tmp_path, args, message):
    res = CliRunner().invoke(app, ["replay", "-t", *write_trace(tmp_path), "-m", "tiny",
                                   "--idle-s", "0", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_batches_longer_than_the_models_context_are_named_before_any_work(tmp_path):
    # Each request fits tiny's 2,048 tokens; a static batch of both needs 2,000 + 500.
    path = tmp_path / "long.csv"
    path.write_text("in,out\n2000,8\n30,500\n")
    res = CliRunner().invoke(app, ["replay", "-t", str(path), "--input-col", "in",
                                   "--output-col", "out", "-m", "tiny", "--batch", "2",
                                   "--batching", "natural", "--idle-s", "0"])
    assert res.exit_code == 2, res.output
    assert "1 natural batches need more than tiny's context of 2048 tokens" in res.output
    assert "2000 + 500" in res.output


@pytest.mark.parametrize(("rows", "args", "message"), [
    ("20,5\n0,4\n", [], "1 of the requests have no input or no output tokens"),
    ("20,5\n", ["--gpu", "zz"], "unknown GPU 'zz'"),
])
def test_bad_rows_and_an_unknown_gpu_are_refused_clearly(tmp_path, rows, args, message):
    path = tmp_path / "t.csv"
    path.write_text("in,out\n" + rows)
    res = CliRunner().invoke(app, ["replay", "-t", str(path), "--input-col", "in",
                                   "--output-col", "out", "-m", "tiny", "--batch", "2",
                                   "--idle-s", "0", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_ctrl_c_ends_a_replay_as_a_result_with_the_batches_before_it(tiny, make_meter):
    result, _ = replay_failing(tiny, make_meter, KeyboardInterrupt(), 4)
    assert result.status == "interrupted" and len(result.batches) == 2
    # Energy and time are the finished batches' own: per token figures stay true.
    assert result.energy_j == pytest.approx(sum(b.energy_j for b in result.batches))
    assert result.output_tokens == 5 + 3
    assert result.j_per_output_token == pytest.approx(result.energy_j / 8)


def test_the_offline_table_fits_a_terminal_of_80_columns(monkeypatch):
    """Nine columns of a GPU replay's figures (the H100's, docs/measurements.md), read whole
    at 80 columns: no cell cut short."""
    import io

    from rich.console import Console

    import infergy.cli.replay as cli_replay

    screen = io.StringIO()
    monkeypatch.setattr(cli_replay, "out", Console(file=screen, width=80))
    errors = {"simulated": -0.0077, "binned": -0.0922, "whole_batches": 6.803,
              "interpolated": -0.3487}
    results = [ReplayResult("azure-code-2023", "llama-3.1-8b", "vllm", batching,
                            requests=512, output_tokens=12949, energy_j=energy, time_s=time,
                            padding_tokens=padding,
                            estimate={"simulated_j": 32100.4, "binned_j": 29367.8,
                                      "errors": errors})
               for batching, energy, time, padding in (("binned", 32348.9, 55.2, 3256),
                                                       ("natural", 35701.7, 57.1, 79371))]
    cli_replay._print(results, "azure-code-2023", "llama-3.1-8b", "vllm")
    table = screen.getvalue().split("req.: ")[0]
    assert "…" not in table
    assert "32.35" in table and "32.1" in table and "-0.8%" in table and "-9.2%" in table
    assert "+680.3%" in table
    # A replay that stopped early: starred, its figures whole, its status in a note.
    results[1].status = "interrupted"
    screen.seek(0)
    screen.truncate()
    notes = io.StringIO()
    monkeypatch.setattr(cli_replay, "err", Console(file=notes, width=80))
    cli_replay._print(results, "azure-code-2023", "llama-3.1-8b", "vllm")
    table = screen.getvalue().split("req.: ")[0]
    assert "…" not in table and "natural*" in table and "35.7 " in table
    assert "natural*: interrupted after 0 batches" in " ".join(notes.getvalue().split())


def replay_long(tmp_path, rows: str, *args):
    """`infergy replay` of a trace of `rows` (input,output) on tiny (context 2,048)."""
    path = tmp_path / "long.csv"
    path.write_text("in,out\n" + rows)
    res = CliRunner().invoke(app, ["replay", "-t", str(path), "--input-col", "in",
                                   "--output-col", "out", "-m", "tiny", "--idle-s", "0",
                                   "--device", "cpu", *args])
    return res, " ".join(res.output.split())


@pytest.mark.parametrize(("rows", "args", "count", "longest"), [
    ("3000,8\n30,5\n", ["--batch", "2"], "1 of the 2", "3000 + 8 = 3008"),
    ("2000,100\n30,5\n2040,9\n", ["--batch", "1", "--batching", "natural"], "2 of the 3",
     "2000 + 100 = 2100"),
    ("30,5\n1900,200\n", [], "1 of the 2", "1900 + 200 = 2100"),  # before the profile's lack
    ("5000,8\n", ["--mode", "online", "--endpoint", "http://127.0.0.1:9"], "1 of the 1",
     "5000 + 8 = 5008"),
], ids=["binned and natural", "natural at B = 1", "no --batch", "online"])
def test_requests_longer_than_the_models_context_are_said_as_such(tmp_path, rows, args,
                                                                  count, longest):
    """An over-context replay suggested a smaller --batch, which cannot help."""
    res, text = replay_long(tmp_path, rows, *args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert (f"{count} requests replayed are longer than tiny's context of 2048 tokens (input "
            f"+ output; the longest: {longest}): drop them from") in text
    assert "choose a model with a longer context" in text and "--batch" not in text


def test_a_binned_batch_past_the_context_of_requests_that_each_fit_asks_for_natural(tmp_path):
    # Both in bin (2048, 8): 2,045 + 2 and 1,500 + 8 fit alone; together 2,045 + 8 do not.
    res, text = replay_long(tmp_path, "2045,2\n1500,8\n", "--batch", "2", "--batching",
                            "binned")
    assert res.exit_code == 2
    assert ("1 binned batches need more than tiny's context of 2048 tokens, though each of "
            "their requests fits") in text
    assert "e.g. 2045 + 8: give --batching natural with a smaller --batch" in text
