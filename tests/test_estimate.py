"""The estimator: the study's formula on a hand-computed example, whole batches, the
interpolation, the theoretical baseline, missing bins, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import infergy.profile.load
from infergy.cli import app
from infergy.estimate import (
    EstimateError,
    MissingPoints,
    estimate,
    load_card_profile,
    load_profile,
    shipped_profiles,
    theoretical,
)
from infergy.estimate.theory import served_flops
from infergy.models import get_model
from infergy.models.flops import request_flops
from infergy.models.gpus import GPUS, UnknownGpuError, get_gpu
from infergy.store import Store
from infergy.workloads import BinGrid, Trace, get_trace

GPU = "NVIDIA H100 80GB HBM3"
# (I, O) -> (B at max, energy of that batch in J): a made-up profile on a 2 x 2 grid.
POINTS = {(32, 8): (64, 320.0), (32, 64): (64, 1280.0), (128, 8): (32, 480.0),
          (128, 64): (32, 1600.0)}


def write_profile(path, engine="vllm", points=POINTS, gpu=GPU):
    with Store(path) as store:
        run = store.start_run(device="GPU-x", meta={"gpus": [{"model": gpu}]}, spec=None)
        for (i, o), (batch, energy) in points.items():
            point = {"model": "llama-3.1-8b", "engine": engine, "batch": batch,
                     "input_tokens": i, "output_tokens": o, "decoding": "greedy", "tp": 1,
                     "dtype": "bfloat16"}
            store.add_point(run, "GPU-x", {"point": point, "status": "ok", "energy_j": energy,
                                           "time_s": 1.0}, engine_options="{}",
                            batch_requested="max")
    return path


def trace(inputs, outputs):
    return Trace("t", np.array(inputs), np.array(outputs))


def binned(t, grid):
    """(trace, its requests binned): estimate's first two arguments."""
    return t, grid.assign(t.input_tokens, t.output_tokens)


def test_the_study_s_formula_on_a_hand_computed_example(tmp_path):
    profile = load_profile([write_profile(tmp_path / "p.db")], "llama-3.1-8b", "vllm")
    # 100 requests in bin (32, 8), 40 in (128, 64), 1 past the last input edge (excluded).
    t = trace([10] * 100 + [100] * 40 + [500], [5] * 100 + [60] * 40 + [8])
    result = estimate(*binned(t, BinGrid((32, 128), (8, 64))), profile)
    assert result.requests == 140 and result.output_tokens == 100 * 5 + 40 * 60
    # 100 / 64 x 320 + 40 / 32 x 1600 = 500 + 2000
    assert result.energy_j == pytest.approx(2500.0)
    # ceil: 2 x 320 + 2 x 1600
    assert result.energy_whole_batches_j == pytest.approx(3840.0)
    assert result.j_per_request == pytest.approx(2500 / 140)
    assert result.kwh == pytest.approx(2500 / 3.6e6)
    assert [(b["input"], b["output"], b["requests"]) for b in result.bins] == [
        (32, 8, 100), (128, 64, 40)]


def test_interpolation_equals_the_profile_at_its_points_and_lies_between_them(tmp_path):
    profile = load_profile([write_profile(tmp_path / "p.db")], "llama-3.1-8b", "vllm")
    grid = BinGrid((32, 128), (8, 64))
    at_points = estimate(*binned(trace([32, 128], [8, 64]), grid), profile)
    assert at_points.interpolated_j == pytest.approx(320 / 64 + 1600 / 32)
    # Halfway in log I between 5 J and 15 J per request.
    mid = estimate(*binned(trace([64], [8]), grid), profile)
    assert mid.interpolated_j == pytest.approx(np.sqrt(5.0 * 15.0))
    assert mid.energy_j == pytest.approx(15.0)  # the study charges the ceiling bin


def test_missing_bins_are_listed_with_the_spec_that_would_measure_them(tmp_path):
    points = {k: v for k, v in POINTS.items() if k != (128, 64)}
    profile = load_profile([write_profile(tmp_path / "p.db", points=points)], "llama-3.1-8b",
                           "vllm")
    with pytest.raises(EstimateError, match=r"no B = max point for 1 bins .*I=128 O=64") as e:
        estimate(*binned(trace([100], [60]), BinGrid((32, 128), (8, 64))), profile)
    assert "batch_sizes: [max]" in str(e.value) and "infergy sweep SPEC --db" in str(e.value)


def test_a_profile_is_per_gpu_and_says_what_is_missing(tmp_path):
    a = write_profile(tmp_path / "a.db")
    b = write_profile(tmp_path / "b.db", gpu="NVIDIA H200")
    with pytest.raises(EstimateError, match=r"several GPUs.*choose one with --gpu"):
        load_profile([a, b], "llama-3.1-8b", "vllm")
    assert load_profile([a, b], "llama-3.1-8b", "vllm", gpu="h200").gpu == "NVIDIA H200"
    with pytest.raises(EstimateError, match=r"no B = max points of llama-3\.1-8b on hf-eager"):
        load_profile([a], "llama-3.1-8b", "hf-eager")


def test_theoretical_baseline_is_tdp_over_peak_times_the_binned_flops():
    t = trace([10, 100], [5, 60])
    grid = BinGrid((32, 128), (8, 64))
    spec = get_model("llama-3.1-8b")
    flops = request_flops(spec, 32, 8) + request_flops(spec, 128, 64)
    h100 = get_gpu("h100")
    assert theoretical(binned(t, grid)[1], "llama-3.1-8b", h100) == pytest.approx(
        flops * 700 / 989.4e12)


def test_the_served_baseline_takes_every_request_at_its_own_lengths():
    """What a simulated serving is above: the same requests it serves (a request of no output
    as one token out), at their own lengths, not at their bins' edges."""
    spec = get_model("llama-3.1-8b")
    flops = 2 * request_flops(spec, 10, 5) + request_flops(spec, 100, 1)
    assert served_flops(np.array([10, 100, 10]), np.array([5, 0, 5]), "llama-3.1-8b") \
        * get_gpu("h100").joules_per_flop == pytest.approx(flops * 700 / 989.4e12)


def test_the_gpu_table_has_its_sources_and_the_study_s_sparse_a6000():
    for name in ("a6000", "rtx6000-ada", "a100-pcie", "a100-sxm", "l40s", "h100-sxm",
                 "h100-pcie", "h200", "b200"):
        assert GPUS[name].source and GPUS[name].tdp_w > 0
    assert get_gpu("a6000-sparse").bf16_dense_tflops == pytest.approx(
        2 * get_gpu("a6000").bf16_dense_tflops, rel=1e-3)
    assert get_gpu("NVIDIA H100 80GB HBM3").name == "h100-sxm"
    with pytest.raises(UnknownGpuError, match="unknown GPU 'h300'; expected one of a6000"):
        get_gpu("h300")


def test_estimate_cli_prints_every_engine_against_the_first_and_theory(tmp_path):
    db = write_profile(tmp_path / "p.db")
    write_profile(db, engine="hf-eager", points={k: (b, e * 2) for k, (b, e) in POINTS.items()})
    trace_file = tmp_path / "t.csv"
    trace_file.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                          "2023-11-16 18:17:03,10,5\n2023-11-16 18:17:04,100,60\n")
    args = ["estimate", "-t", str(trace_file), "-m", "llama-3.1-8b", "-e", "hf-eager,vllm",
            "-p", str(db), "--input-edges", "32,128", "--output-edges", "8,64"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    (card,) = report["gpus"]
    hf, vllm = card["engines"]
    assert vllm["saving_vs_baseline"] == pytest.approx(0.5)
    assert hf["energy_j"] == pytest.approx(2 * (320 / 64 + 1600 / 32))
    assert card["gpu"] == GPU and card["theoretical_gpu"] == "h100-sxm"
    assert report["profiles"] == card["profiles"] == [str(db)]
    table = CliRunner().invoke(app, args)
    # Four points without an idle power: the study's figure, and why nothing is simulated
    assert table.exit_code == 0 and "1.528e-05" in table.output
    assert ("vllm: not simulated: llama-3.1-8b on vllm (NVIDIA H100 80GB HBM3): no idle power "
            "recorded") in " ".join(table.output.split())
    assert "saving: less energy than hf-eager" in " ".join(table.output.split())
    sparse = CliRunner().invoke(app, [*args, "--theory-gpu", "a6000-sparse"])
    assert sparse.exit_code == 0 and "a sparsity number" in " ".join(sparse.output.split())
    bad = CliRunner().invoke(app, [*args[:-4], "--bins", "pow2"])
    assert bad.exit_code == 2 and "no B = max point for" in bad.output


def test_an_engine_not_yet_measured_in_every_bin_is_a_row_saying_so(tmp_path):
    db = write_profile(tmp_path / "p.db", engine="hf-eager")
    write_profile(db, points={k: v for k, v in POINTS.items() if k != (128, 64)})  # vllm
    trace_file = tmp_path / "t.csv"
    trace_file.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                          "2023-11-16 18:17:03,10,5\n2023-11-16 18:17:04,100,60\n")
    args = ["estimate", "-t", str(trace_file), "-m", "llama-3.1-8b", "-p", str(db),
            "--input-edges", "32,128", "--output-edges", "8,64"]
    result = CliRunner().invoke(app, [*args, "-e", "hf-eager,vllm,vllm-eager"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "vllm │ not yet" in text and "vllm-eager │ not yet" in text
    assert "vllm: not measured yet on NVIDIA H100 80GB HBM3: 1 of the 2 bins the trace" in text
    assert "vllm-eager: not measured yet on NVIDIA H100 80GB HBM3: no B = max point" in text
    report = json.loads(CliRunner().invoke(app, [*args, "-e", "hf-eager,vllm", "--json"]).output)
    (card,) = report["gpus"]
    assert [e["engine"] for e in card["engines"]] == ["hf-eager"]
    assert card["unmeasured"][0]["missing_bins"] == [[128, 64]]
    # The baseline itself must be complete: the savings are against it.
    first = CliRunner().invoke(app, [*args, "-e", "vllm,hf-eager"])
    assert first.exit_code == 2 and "no B = max point for 1 bins" in " ".join(first.output.split())


def test_estimate_without_a_profile_uses_the_shipped_ones_or_says_there_are_none(tmp_path):
    result = CliRunner().invoke(app, ["estimate", "-t", "translation", "-m", "llama-3.1-8b",
                                      "-e", "hf-eager", "--gpu", "h100"])
    if shipped_profiles():
        # The H100 profile holds hf-eager's B = max points of every bin translation needs.
        assert result.exit_code == 0, result.output
        assert "llama-3.1-8b-h100.db" in result.output
    else:
        assert result.exit_code == 2 and "none shipped yet: pass --profile" in " ".join(
            result.output.split())


def test_estimate_reads_a_user_table_with_its_column_mapping(tmp_path):
    db = write_profile(tmp_path / "p.db")
    own = tmp_path / "mine.csv"
    own.write_text("prompt,completion\n10,5\n100,60\nbad,3\n")
    args = ["estimate", "-t", str(own), "-m", "llama-3.1-8b", "-e", "vllm", "-p", str(db),
            "--input-edges", "32,128", "--output-edges", "8,64", "--input-col", "prompt",
            "--output-col", "completion", "--json"]
    strict = CliRunner().invoke(app, args)
    assert strict.exit_code == 2 and "line 4, column 'prompt'" in " ".join(strict.output.split())
    result = CliRunner().invoke(app, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["gpus"][0]["engines"][0]["energy_j"] == pytest.approx(5 + 50)


def test_a_trace_with_nothing_in_the_bins_is_an_error_not_a_division_by_zero(tmp_path):
    profile = load_profile([write_profile(tmp_path / "p.db")], "llama-3.1-8b", "vllm")
    with pytest.raises(EstimateError, match="none of its 2 requests falls in the bins"):
        estimate(*binned(trace([500, 600], [5, 5]), BinGrid((32, 128), (8, 64))), profile)


def test_engines_measured_on_different_gpus_are_not_compared(tmp_path):
    db = write_profile(tmp_path / "p.db")  # vllm on the H100
    write_profile(db, engine="hf-eager", gpu="NVIDIA H200")
    args = ["estimate", "-t", "translation", "-m", "llama-3.1-8b", "-e", "hf-eager,vllm", "-p",
            str(db), "--input-edges", "32,128", "--output-edges", "8,64", "--beyond", "clamp"]
    # A table per GPU: on the H200, vllm is a row saying it is not measured there; the H100
    # lacks the baseline, hf-eager, and is a line saying so.
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    (card,) = report["gpus"]
    assert card["gpu"] == "NVIDIA H200" and [e["engine"] for e in card["engines"]] == [
        "hf-eager"]
    assert [e["engine"] for e in card["unmeasured"]] == ["vllm"]
    (lost,) = report["unmeasured_gpus"]
    assert lost["gpu"] == GPU and "no B = max points of llama-3.1-8b on hf-eager" in lost[
        "message"]
    alone = CliRunner().invoke(app, [*args, "--gpu", "h100"])
    assert alone.exit_code == 2 and "no B = max points of llama-3.1-8b on hf-eager on h100" in (
        " ".join(alone.output.split()))


def test_the_profile_of_the_card_a_run_is_on_by_its_nvml_name(tmp_path):
    db = write_profile(tmp_path / "p.db")
    write_profile(db, gpu="NVIDIA H200", points={k: (b, e / 2) for k, (b, e) in POINTS.items()})
    write_profile(db, gpu="NVIDIA GeForce RTX 4090")  # outside the GPU table: by its name
    for card in ("NVIDIA H200", "NVIDIA GeForce RTX 4090", GPU):
        assert load_card_profile([db], "llama-3.1-8b", "vllm", card).gpu == card
    assert load_card_profile([db], "llama-3.1-8b", "vllm", "NVIDIA H200").points[(32, 8)][
        "energy_j"] == 160.0
    with pytest.raises(MissingPoints, match="for NVIDIA A100-SXM4-80GB, the card this runs "
                                            "on") as e:
        load_card_profile([db], "llama-3.1-8b", "vllm", "NVIDIA A100-SXM4-80GB")
    assert "name a card they hold with --gpu" in str(e.value)


# -- the shipped profiles: one store a card, MODEL-CARD.db -------------------------------------

TRACE_CSV = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,10,5\n" \
            "2023-11-16 18:17:04,100,60\n"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A temporary folder of shipped profiles (empty until a test writes stores into it), and
    the arguments of an estimate of a two-request trace from them on hf-eager and vllm."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    monkeypatch.setattr(infergy.profile.load, "PROFILES", folder)
    trace_file = tmp_path / "t.csv"
    trace_file.write_text(TRACE_CSV)
    return folder, ["estimate", "-t", str(trace_file), "-m", "llama-3.1-8b", "-e",
                    "hf-eager,vllm", "--input-edges", "32,128", "--output-edges", "8,64"]


def write_card(folder, card, gpu, scale=1.0):
    """A shipped store of llama-3.1-8b on one card: hf-eager at twice vllm's energy."""
    db = write_profile(folder / f"llama-3.1-8b-{card}.db", gpu=gpu,
                       points={k: (b, e * scale) for k, (b, e) in POINTS.items()})
    write_profile(db, engine="hf-eager", gpu=gpu,
                  points={k: (b, 2 * e * scale) for k, (b, e) in POINTS.items()})
    return db


def test_every_card_with_a_shipped_profile_is_estimated_a_table_each(shipped):
    folder, args = shipped
    h100 = write_card(folder, "h100", GPU)
    h200 = write_card(folder, "h200", "NVIDIA H200", scale=0.75)
    write_profile(folder / "llama-3.2-1b-h100.db")  # another model's: not read
    for gpus in ([], ["--gpu", "all"], ["--gpu", "h100,h200"]):
        result = CliRunner().invoke(app, [*args, *gpus, "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert [c["gpu"] for c in report["gpus"]] == [GPU, "NVIDIA H200"]
        assert report["profiles"] == [str(h100), str(h200)] and not report["unmeasured_gpus"]
        on_h100, on_h200 = report["gpus"]
        assert on_h100["profiles"] == [str(h100)] and on_h200["profiles"] == [str(h200)]
        assert (on_h100["theoretical_gpu"], on_h200["theoretical_gpu"]) == ("h100-sxm", "h200")
        base = 2 * (320 / 64 + 1600 / 32)
        assert [e["energy_j"] for e in on_h200["engines"]] == pytest.approx(
            [0.75 * base, 0.75 * base / 2])
        assert on_h200["engines"][1]["saving_vs_baseline"] == pytest.approx(0.5)
    table = CliRunner().invoke(app, args)
    text = " ".join(table.output.split())
    assert table.exit_code == 0 and text.count("┃ engine ┃") == 2
    assert text.index(GPU) < text.index("NVIDIA H200 ┏")
    # Asked for one card, the other's store is not in the estimate.
    one = json.loads(CliRunner().invoke(app, [*args, "--gpu", "h200", "--json"]).output)
    assert [c["gpu"] for c in one["gpus"]] == ["NVIDIA H200"] and one["profiles"] == [str(h200)]


def test_a_card_asked_for_among_several_without_a_shipped_profile_is_a_line(shipped):
    folder, args = shipped
    write_card(folder, "h100", GPU)
    alone = json.loads(CliRunner().invoke(app, [*args, "--json"]).output)
    assert [c["gpu"] for c in alone["gpus"]] == [GPU] and not alone["unmeasured_gpus"]
    result = CliRunner().invoke(app, [*args, "--gpu", "h100,h200"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.count("┃ engine ┃") == 1
    assert ("h200: no shipped profile of llama-3.1-8b on h200 (shipped: llama-3.1-8b-h100.db): "
            "measure it on that card") in text
    assert ("infergy sweep benchmarks/sweeps/profile-llama-3.1-8b.yaml --db "
            "src/infergy/profile/shipped/llama-3.1-8b-h200.db --resume-by model") in text
    assert "every GPU of the host at once" in text
    report = json.loads(CliRunner().invoke(app, [*args, "--gpu", "h100,h200", "--json"]).output)
    (lost,) = report["unmeasured_gpus"]
    assert lost["gpu"] == "h200" and "no shipped profile" in lost["message"]


def test_a_single_card_without_a_shipped_profile_is_an_error_naming_the_shipped_ones(shipped):
    folder, args = shipped
    write_card(folder, "h100", GPU)
    result = CliRunner().invoke(app, [*args, "--gpu", "h200"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "no shipped profile of llama-3.1-8b on h200 (shipped: llama-3.1-8b-h100.db)" in text
    assert "profile-llama-3.1-8b.yaml" in text
    # A model without any shipped profile, on the one card the profiles hold: the sweep of
    # its own and --profile, and why the card cannot predict it.
    other = CliRunner().invoke(app, [*args[:4], "llama-3.2-1b", *args[5:]])
    said = " ".join(other.output.split())
    assert other.exit_code == 2 and ("no shipped profile of llama-3.2-1b on NVIDIA H100 80GB "
                                     "HBM3 (shipped: llama-3.1-8b-h100.db)") in said
    assert "--db infergy.db`, then pass --profile infergy.db. Nor can it be predicted" in said
    bad = CliRunner().invoke(app, [*args, "--gpu", "h100,h300"])
    assert bad.exit_code == 2 and "unknown GPU 'h300'" in bad.output


def test_a_shipped_card_whose_baseline_lacks_bins_is_a_line_beside_the_others(shipped):
    folder, args = shipped
    write_card(folder, "h100", GPU)
    h200 = write_profile(folder / "llama-3.1-8b-h200.db", gpu="NVIDIA H200")  # vllm only
    write_profile(h200, engine="hf-eager", gpu="NVIDIA H200",
                  points={k: v for k, v in POINTS.items() if k != (128, 64)})
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.count("┃ engine ┃") == 1
    assert "NVIDIA H200: llama-3.1-8b on hf-eager (NVIDIA H200) has no B = max point for 1 bins" \
        in text
    # The card's own store, not the H100's (the path may wrap: spaces dropped).
    assert f"infergysweepSPEC--dbinfergy.db`,thenpass--profile{h200}--profileinfergy.db" in (
        "".join(result.output.split()))  # a store of the user's, never a shipped one
    assert "models: [llama-3.1-8b]" in text and "engines: [hf-eager]" in text  # not markup
    only = CliRunner().invoke(app, [*args, "--gpu", "h200"])
    assert only.exit_code == 2 and "no B = max point for 1 bins" in only.output


def test_without_any_shipped_profile_the_estimate_asks_for_one(shipped):
    _, args = shipped
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "none shipped yet: pass --profile" in " ".join(
        result.output.split())


def test_an_unknown_engine_is_named_as_such_not_as_a_missing_profile():
    """`--engine nope` said `no shipped profile of llama-3.1-8b`, a profile that is shipped."""
    result = CliRunner().invoke(app, ["estimate", "--trace", "azure-code-2023", "--model",
                                      "llama-3.1-8b", "--engine", "hf-eager,nope"])
    assert result.exit_code == 2
    assert "--engine: unknown engine 'nope'; expected names of hf-eager, hf-compiled" in \
        " ".join(result.output.split())


@pytest.mark.parametrize("outputs", [[0, 0], [0]])
def test_a_trace_of_zero_outputs_has_no_energy_per_output_token_not_a_crash(tmp_path, outputs):
    db = write_profile(tmp_path / "p.db")
    trace_file = tmp_path / "t.csv"
    trace_file.write_text("input_tokens,output_tokens\n" +
                          "".join(f"{10 * (n + 1)},{o}\n" for n, o in enumerate(outputs)))
    args = ["estimate", "-t", str(trace_file), "-m", "llama-3.1-8b", "-e", "vllm", "-p",
            str(db), "--input-edges", "32,128", "--output-edges", "8,64"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    (engine,) = json.loads(result.output)["gpus"][0]["engines"]
    assert engine["j_per_output_token"] is None
    assert engine["energy_j"] == pytest.approx(len(outputs) * 320 / 64)  # charged at O* = 8
    table = CliRunner().invoke(app, args)
    said = " ".join(table.output.split())
    assert table.exit_code == 0 and "n/a" in said and "Traceback" not in said
    assert "J/tok: n/a, the requests in the bins generate no output token" in said


def test_a_simulated_request_of_no_output_counts_no_output_token():
    """It runs as one token (an engine computes a prompt's first token), but that token is
    not the request's: the table's J/tok said 2.64 above a footnote saying n/a."""
    rows = {n: infergy.estimate(trace([100] * n + [200], [0] * n + [o]), model="llama-3.1-8b",
                                engine="vllm", gpu="h100").rows()[0]
            for n, o in ((1, 0), (3, 10))}
    assert rows[1]["simulated_j_per_output_token"] is None
    assert rows[3]["simulation"]["output_tokens"] == 10
    assert rows[3]["simulated_j_per_output_token"] == pytest.approx(rows[3]["simulated_j"] / 10)


def test_some_zero_outputs_count_in_the_energy_per_output_token(tmp_path):
    profile = load_profile([write_profile(tmp_path / "p.db")], "llama-3.1-8b", "vllm")
    result = estimate(*binned(trace([10, 10], [0, 4]), BinGrid((32, 128), (8, 64))), profile)
    assert result.output_tokens == 4
    assert result.j_per_output_token == pytest.approx(2 * 320 / 64 / 4)
    none = estimate(*binned(trace([10], [0]), BinGrid((32, 128), (8, 64))), profile)
    assert none.j_per_output_token is None and none.j_per_request == pytest.approx(5)


def test_estimate_names_a_model_by_its_hugging_face_id(tmp_path):
    db = write_profile(tmp_path / "p.db")
    args = ["estimate", "-t", "translation", "-e", "vllm", "-p", str(db), "--input-edges",
            "32,128", "--output-edges", "8,64", "--beyond", "clamp", "--json"]
    by_id = CliRunner().invoke(app, [*args, "-m", "Meta-Llama/Llama-3.1-8B-Instruct"])
    by_name = CliRunner().invoke(app, [*args, "-m", "llama-3.1-8b"])
    assert by_id.exit_code == by_name.exit_code == 0, by_id.output
    assert json.loads(by_id.output) == json.loads(by_name.output)
    typo = CliRunner().invoke(app, [*args, "-m", "llama-3.1-8"])
    assert typo.exit_code == 2 and "did you mean llama-3.1-8b" in " ".join(typo.output.split())


def test_a_baseline_engine_with_no_point_on_the_card_names_the_engines_it_has(tmp_path):
    db = write_profile(tmp_path / "p.db")  # vllm only
    args = ["estimate", "-t", "translation", "-m", "llama-3.1-8b", "-p", str(db),
            "--input-edges", "32,128", "--output-edges", "8,64", "--beyond", "clamp"]
    result = CliRunner().invoke(app, [*args, "-e", "hf-eager,vllm"])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "no B = max points of llama-3.1-8b on hf-eager" in said
    assert "The card's points of vllm are estimated with --engine vllm" in said
    assert CliRunner().invoke(app, [*args, "-e", "vllm"]).exit_code == 0


def test_requests_longer_than_the_model_s_context_are_left_out_and_said():
    """olmo-7b holds 2,048 tokens: the code trace's longer requests cannot be served (an
    engine refuses them), so the estimate leaves them out, at the others' own times, and its
    coverage line counts them."""
    trace = Trace("t", np.array([100, 1500, 3000, 200]), np.array([10, 600, 10, 20]),
                  np.array([0.0, 1.0, 2.0, 3.0]))
    kept, over = trace.within(2048)
    assert over == 2 and kept.input_tokens.tolist() == [100, 200]
    assert kept.arrival_s.tolist() == [0.0, 3.0] and trace.within(4096) == (trace, 0)
    shown = CliRunner().invoke(app, ["estimate", "-t", "azure-code-2023", "-m", "olmo-7b",
                                     "-e", "vllm", "--json"])
    assert shown.exit_code == 0, shown.output
    said = json.loads(shown.output)
    code = get_trace("azure-code-2023")
    longer = int((code.input_tokens + code.output_tokens > 2048).sum())
    assert said["over_context"] == longer > 0
    assert said["bins"]["requests"] == len(code) - longer
    every = Trace("t", np.array([3000]), np.array([10]))
    with pytest.raises(EstimateError, match="every one of its 1 requests is longer than "
                                            "olmo-7b's context of 2,048"):
        infergy.estimate(every, model="olmo-7b", engine="vllm")


def test_a_trace_not_sorted_by_time_is_served_at_each_request_s_own_time():
    """A trace file in any row order: each request arrives at its own time (the times were
    once sorted apart from the requests, pairing lengths with other requests' times)."""
    import dataclasses

    import infergy
    code = get_trace("azure-code-2023")
    first = dataclasses.replace(code, input_tokens=code.input_tokens[:300],
                                output_tokens=code.output_tokens[:300],
                                arrival_s=code.arrival_s[:300])
    shuffle = np.random.default_rng(0).permutation(300)
    shuffled = dataclasses.replace(first, input_tokens=first.input_tokens[shuffle],
                                   output_tokens=first.output_tokens[shuffle],
                                   arrival_s=first.arrival_s[shuffle])
    rows = [infergy.estimate(t, model="llama-3.1-8b", engine="vllm", gpu="h100").rows()[0]
            for t in (first, shuffled)]
    for key in ("simulated_kwh", "ttft_p90_s", "e2e_p90_s"):
        assert rows[1][key] == pytest.approx(rows[0][key], rel=1e-9), key


@pytest.mark.parametrize("command", ["estimate", "advise"])
def test_a_trace_s_columns_are_named_for_estimate_and_advise_time_included(tmp_path, command):
    """A table of other column names: mapped, its times read (online at them); advise took
    no mapping and estimate no time column."""
    path = tmp_path / "mapped.csv"
    path.write_text("prompt_len,gen_len,t\n100,20,0\n200,40,1.5\n300,30,2\n")
    result = CliRunner().invoke(app, [command, "-t", str(path), "-m", "llama-3.1-8b", "--gpu",
                                      "h100", "-e", "vllm", "--input-col", "prompt_len",
                                      "--output-col", "gen_len", "--time-col", "t", "--json"])
    assert result.exit_code == 0, result.output
    assert "online at the trace's own times" in result.output
