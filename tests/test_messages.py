"""What infergy says where the profiles lack the points an estimate or a replay needs: what the
stores hold instead (points without energy, other engines, other GPUs, another model), and a
sweep that measures them which the model can run, into a store of the user's own."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.testing import CliRunner

from infergy.cli import app
from infergy.plan import parse_spec
from infergy.profile import shipped_profiles
from infergy.profile.load import is_shipped, sweep_advice
from infergy.store import Store

H100 = "NVIDIA H100 80GB HBM3"
GRID = [(32, 8), (32, 64), (128, 8), (128, 64)]
TRACE = "input_tokens,output_tokens\n10,5\n100,60\n"


def store_double(path, model="tiny", engine="hf-eager", gpu: str | None = H100,
                 energy: bool = True):
    """A test double of a results store: B = max points of `model` on `engine` over GRID,
    measured on `gpu` (None: on a CPU, without an energy sensor: energy None), energies
    made up."""
    with Store(path) as store:
        meta = {"gpus": [{"model": gpu}]} if gpu else {}
        run = store.start_run(device="GPU-x" if gpu else "cpu", meta=meta, spec=None)
        for i, o in GRID:
            point = {"model": model, "engine": engine, "batch": 4, "input_tokens": i,
                     "output_tokens": o, "decoding": "greedy", "tp": 1, "dtype": "bfloat16"}
            store.add_point(run, "GPU-x" if gpu else "cpu",
                            {"point": point, "status": "ok",
                             "energy_j": 4.0 * o if energy else None, "time_s": 1.0},
                            engine_options="{}", batch_requested="max")
    return path


def estimate(tmp_path, *args):
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    result = CliRunner().invoke(app, ["estimate", "-t", str(trace), "--input-edges", "32,128",
                                      "--output-edges", "8,64", *args])
    return result, " ".join(result.output.split())


def writes_no_shipped_store(text: str) -> bool:
    """No `--db` of the message names a store shipped with infergy."""
    return not any(is_shipped(db) for db in re.findall(r"--db (\S+?)`", text))


# -- points without energy (a sweep on a CPU) ------------------------------------------------

@pytest.mark.parametrize("args", [
    ["-m", "tiny", "-e", "hf-eager"],
    ["-m", "tiny", "-e", "hf-eager,vllm"],
    ["-m", "tiny", "-e", "hf-eager", "--gpu", "h100"],
], ids=["one engine", "two engines", "a GPU asked for"])
def test_points_without_energy_are_said_as_such_not_as_missing(tmp_path, args):
    """It said "no B = max points" of a store holding them, measured without a sensor."""
    db = store_double(tmp_path / "cpu.db", gpu=None, energy=False)
    result, text = estimate(tmp_path, *args, "-p", str(db))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "with energy in" in text
    assert ("the 4 they hold have no energy: they were measured where no energy sensor could "
            "be read, on a CPU or a GPU NVML cannot read") in text
    assert "measure them on an NVIDIA GPU with" in text and f"--db {db}`" in text


def test_a_replay_whose_profile_has_no_energy_says_so(tmp_path):
    db = store_double(tmp_path / "cpu.db", gpu=None, energy=False)
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    result = CliRunner().invoke(app, ["replay", "-t", str(trace), "-m", "tiny", "--device",
                                      "cpu", "--idle-s", "0", "-p", str(db)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "give --batch B" in text
    assert "no B = max points of tiny on hf-eager with energy" in text
    assert "have no energy" in text


# -- the engine is what is missing, not the profile ------------------------------------------

def test_an_engine_the_shipped_profile_lacks_is_named_with_the_engines_it_has(tmp_path):
    """It said "no shipped profile of llama-3.1-8b (shipped: llama-3.1-8b-h100.db)"."""
    result = CliRunner().invoke(app, ["estimate", "-t", "azure-code-2023", "-m",
                                      "llama-3.1-8b", "-e", "hf-paged"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "no shipped profile" not in text
    assert ("the shipped profiles of llama-3.1-8b (llama-3.1-8b-h100.db, llama-3.1-8b-h200.db) "
            "hold no B = max point of hf-paged (they hold llama-3.1-8b on hf-compiled, "
            "hf-eager, vllm, vllm-eager, not on hf-paged)") in text
    h100, h200 = shipped_profiles("llama-3.1-8b")
    assert ("`infergy sweep paper-bins -m llama-3.1-8b -e hf-paged -b max --db infergy.db`, "
            f"then pass --profile {h100} --profile {h200} --profile infergy.db") in text
    assert writes_no_shipped_store(text)
    assert not writes_no_shipped_store(f"--db {h100}`")  # as it advised before


@pytest.mark.parametrize(("engines", "missing"), [
    ("hf-eager", "hf-eager"), ("hf-compiled,vllm", "hf-compiled"), ("hf-paged", "hf-paged")])
def test_an_engine_a_users_store_lacks_is_named_with_the_engines_it_has(tmp_path, engines,
                                                                        missing):
    db = store_double(tmp_path / "p.db", model="llama-3.1-8b", engine="vllm")
    result, text = estimate(tmp_path, "-m", "llama-3.1-8b", "-e", engines, "-p", str(db))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"they hold llama-3.1-8b on vllm, not on {missing}" in text
    assert f"`infergy sweep paper-bins -m llama-3.1-8b -e {missing} -b max --db {db}`" in text


def test_another_models_store_says_which_models_it_holds(tmp_path):
    db = store_double(tmp_path / "p.db", model="tiny")
    result, text = estimate(tmp_path, "-m", "llama-3.2-1b", "-e", "hf-eager", "-p", str(db))
    assert result.exit_code == 2
    assert "they hold no B = max point of llama-3.2-1b; they hold tiny" in text


def test_a_gpu_the_store_lacks_names_the_gpus_it_holds(tmp_path):
    db = store_double(tmp_path / "p.db", model="llama-3.1-8b", gpu="NVIDIA H200")
    result, text = estimate(tmp_path, "-m", "llama-3.1-8b", "-e", "hf-eager", "--gpu", "h100",
                            "-p", str(db))
    assert result.exit_code == 2
    assert "they hold it on NVIDIA H200, not on h100" in text


# -- the sweep advised: one the model can run, into a store of the user's ---------------------

@pytest.mark.parametrize(("model", "preset"), [
    ("llama-3.1-8b", True), ("llama-3.2-1b", True), ("smollm2-135m", False),
    ("olmo-1b", False), ("tiny", False)])
def test_the_sweep_advised_fits_the_models_context(model, preset):
    advice = sweep_advice(model, "hf-eager", [])
    assert ("paper-bins -m" in advice) == preset
    assert "--db infergy.db`, then pass --profile infergy.db" in advice
    if not preset:  # the spec it gives is one the sweep accepts for this model
        spec_text = re.search(r"holding (\{.*?\}) \(", advice).group(1)
        spec = parse_spec(yaml.safe_load(spec_text), "advice")
        assert spec.models == [model] and spec.batch_sizes == ["max"]


@pytest.mark.parametrize("args", [
    ["-m", "tiny"], ["-m", "olmo-1b"], ["-m", "tiny", "-e", "vllm"]])
def test_a_replay_without_a_profile_advises_a_store_of_ones_own(tmp_path, args):
    """It advised `infergy sweep paper-bins -m tiny ... --db .../profile/shipped/...`: a preset
    tiny cannot run, into the package's own store."""
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    result = CliRunner().invoke(app, ["replay", "-t", str(trace), *args, "--device", "cpu",
                                      "--idle-s", "0"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "give --batch B" in text
    assert "paper-bins -m" not in text  # tiny's and olmo-1b's context: 2,048
    assert "`infergy sweep SPEC --db infergy.db`, then pass --profile infergy.db" in text
    assert "shipped/" not in text.split("measure them")[1]
    assert writes_no_shipped_store(text)
