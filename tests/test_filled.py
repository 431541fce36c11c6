"""A calibrated card's unmeasured bins, predicted by its step-cost model (issue 30): on the
shipped H100 profile reduced to what a calibration measures, the predicted B = max points
against the ones measured there."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infergy.cli import app
from infergy.estimate.binned import estimate
from infergy.estimate.filled import fill_profile
from infergy.plan.presets import CALIBRATION_INPUTS, CALIBRATION_OUTPUTS
from infergy.profile.load import PROFILES, MissingPoints, load_profile
from infergy.workloads import get_trace
from infergy.workloads.bins import BinGrid

H100 = PROFILES / "llama-3.1-8b-h100.db"
DESIGN = {(i, o) for i in CALIBRATION_INPUTS for o in CALIBRATION_OUTPUTS}
VALIDATION = {(i, o) for i in (128, 512, 1024, 4096) for o in (16, 128, 256)}


def reduced(tmp_path: Path, bins: set, batches: tuple = ("1", "max")) -> Path:
    """A copy of the shipped H100 profile holding only the points of `bins` at `batches`."""
    path = tmp_path / "calibrated.db"
    src = sqlite3.connect(f"file:{H100}?mode=ro", uri=True)
    dst = sqlite3.connect(path)
    src.backup(dst)
    src.close()
    keep = [(i, o, b) for i, o in bins for b in batches]
    dst.execute("CREATE TEMP TABLE keep (i INT, o INT, b TEXT)")
    dst.executemany("INSERT INTO keep VALUES (?, ?, ?)", keep)
    dst.execute("DELETE FROM points WHERE (input_tokens, output_tokens, batch_requested) NOT IN "
                "(SELECT i, o, b FROM keep)")
    dst.commit()
    dst.close()
    return path


@pytest.mark.parametrize("engine", ["hf-eager", "vllm"])
def test_a_calibration_predicts_the_other_bins_as_measured(tmp_path, engine):
    """Design and validation points kept: each other bin's B = max is the one the sweep found,
    its energy within 8%, and the study's formula for the code trace within 2% of the full
    profile's; the measured points are untouched."""
    full = load_profile([H100], "llama-3.1-8b", engine)
    part = load_profile([reduced(tmp_path, DESIGN | VALIDATION)], "llama-3.1-8b", engine)
    others = sorted(set(full.points) - set(part.points))
    assert len(others) == 32
    filled = fill_profile(part, MissingPoints("missing", others))
    for key in others:
        p, m = filled.points[key], full.points[key]
        assert p["predicted"] and p["id"] is None
        assert p["batch"] == m["batch"], key
        assert p["energy_j"] == pytest.approx(m["energy_j"], rel=0.08), key
    for key, point in part.points.items():
        assert filled.points[key] == point  # a measured point always wins
    trace = get_trace("azure-code-2023")
    binned = BinGrid.named("paper").assign(trace.input_tokens, trace.output_tokens)
    guessed, whole = estimate(trace, binned, filled), estimate(trace, binned, full)
    assert guessed.energy_j == pytest.approx(whole.energy_j, rel=0.02)
    assert guessed.predicted["bins"] == sum(b["predicted"] for b in guessed.bins) > 0
    assert 0 < guessed.predicted["band"] < 0.10
    assert whole.predicted is None
    assert guessed.interpolated_j is None  # the measured bins alone make no full grid


def test_the_estimate_says_which_bins_are_predicted(tmp_path):
    store = reduced(tmp_path, DESIGN | VALIDATION)
    result = CliRunner().invoke(app, ["estimate", "-t", "azure-code-2023", "-m", "llama-3.1-8b",
                                      "-e", "vllm", "--profile", str(store)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert ("vllm: study: 32 of its 56 bins" in said and "are not measured on this card: "
            "their B = max points are predicted by its calibrated step-cost model" in said)
    data = json.loads(CliRunner().invoke(app, ["estimate", "-t", "azure-code-2023", "-m",
                                               "llama-3.1-8b", "-e", "vllm", "--profile",
                                               str(store), "--json"]).output)
    row = data["gpus"][0]["engines"][0]
    assert row["predicted_bins"]["bins"] == 32
    assert sum(b["predicted"] for b in row["bins"]) == 32


def test_without_the_design_at_both_batches_the_bins_stay_missing(tmp_path):
    """B = max points alone (no B = 1): the model is not a calibration, and the estimate says
    what to run."""
    store = reduced(tmp_path, DESIGN | VALIDATION, batches=("max",))
    part = load_profile([store], "llama-3.1-8b", "vllm")
    with pytest.raises(MissingPoints) as e:
        fill_profile(part, MissingPoints("12 bins missing", [(128, 8)]))
    assert e.value.missing == [(128, 8)]
    assert "12 bins missing" in str(e.value)
    assert "at B = max; it needs 8 at B = 1 and B = max: `infergy calibrate -m llama-3.1-8b " \
           "-e vllm`" in str(e.value)


def test_calibrate_fit_only_fits_what_the_store_holds_and_keeps_it(tmp_path):
    """`infergy calibrate --fit-only` on a design measured by a sweep of its own: fitted and
    kept in the store's meta, no sweep run (this machine has no GPU); a missing store is
    said."""
    store = reduced(tmp_path, DESIGN)
    result = CliRunner().invoke(app, ["calibrate", "-m", "llama-3.1-8b", "-e", "vllm", "--db",
                                      str(store), "--fit-only"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "llama-3.1-8b on vllm, NVIDIA H100 80GB HBM3: step-cost model" in result.output
    assert "Measured" not in result.output
    db = sqlite3.connect(store)
    (text,) = db.execute("SELECT value FROM meta WHERE key = ?",
                         ("step_cost:llama-3.1-8b:vllm:NVIDIA H100 80GB HBM3",)).fetchone()
    kept = json.loads(text)
    assert kept["engine"] == "vllm" and kept["limits"]["cap"] == 1024
    gone = CliRunner().invoke(app, ["calibrate", "-m", "llama-3.1-8b", "-e", "vllm", "--db",
                                    str(tmp_path / "none.db"), "--fit-only"])
    assert gone.exit_code == 2 and "none.db: no such store" in gone.output


def test_calibrate_s_sweep_runs_with_the_command_line_s_defaults(tmp_path, capsys):
    """calibrate's sweep (every option it does not set at its command-line default: the
    launcher's too, which a direct call once left unset): its plan, printed dry."""
    from infergy.cli.sweep import sweep_as_typed

    sweep_as_typed("calibration", tmp_path / "s.db", engine=["hf-eager"],
                   dry_run=True, device="cpu")
    assert "24 points, 0 already in" in " ".join(capsys.readouterr().out.split())
