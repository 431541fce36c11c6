"""The README's Python, run as a reader would run it (each ```python block on its own, in a
fresh interpreter, on this machine without a GPU), and the library's face it shows:
`infergy.estimate`, `infergy.open_meter`, `infergy.measure`."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import infergy
from infergy.cli import app
from infergy.meter import DeviceEnergy, Measurement
from infergy.models import UnknownModelError
from infergy.profile import shipped_profiles
from infergy.workloads import TraceError, get_trace

ROOT = Path(__file__).parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(),
                    flags=re.DOTALL | re.MULTILINE)
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
SHIPPED = shipped_profiles("llama-3.1-8b")[0]  # a store path, as a user passes one


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """`code` run by this interpreter in `cwd`, as a reader would run a script."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=300)


def test_the_readme_has_python_blocks_of_the_meter_the_estimate_and_a_point():
    joined = "\n".join(BLOCKS)
    assert len(BLOCKS) >= 3
    for face in ("infergy.estimate(", "open_meter(", "infergy.measure("):
        assert face in joined


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{n}" for n in range(len(BLOCKS))])
def test_each_python_block_of_the_readme_runs_here(block, tmp_path):
    if "infergy.measure(" in block and importlib.util.find_spec("torch") is None:
        pytest.skip("infergy.measure needs the measure extra (torch)")
    done = run_python(block, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "a README example that prints nothing"
    assert not list(tmp_path.iterdir())  # nothing written where it ran


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_each_example_runs(path, tmp_path):
    done = run_python(path.read_text(), tmp_path)
    assert done.returncode == 0, done.stderr


def test_importing_infergy_loads_neither_torch_nor_pandas(tmp_path):
    done = run_python("import sys, infergy\n"
                      "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'vllm', "
                      "'matplotlib') if m in sys.modules))", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_infergy_estimate_gives_the_numbers_the_command_prints():
    result = infergy.estimate("azure-code-2023", model="llama-3.1-8b", engine="hf-eager,vllm",
                              gpu="h100")
    printed = CliRunner().invoke(app, ["estimate", "-t", "azure-code-2023", "-m",
                                       "llama-3.1-8b", "-e", "hf-eager,vllm", "--gpu", "h100",
                                       "--json"])
    assert printed.exit_code == 0, printed.output
    (card,) = json.loads(printed.output)["gpus"]
    rows = result.rows()
    assert [(r["gpu"], r["engine"]) for r in rows] == [(card["gpu"], "hf-eager"),
                                                       (card["gpu"], "vllm")]
    for row, shown in zip(rows, card["engines"], strict=True):
        for key in ("kwh", "energy_j", "j_per_request", "j_per_output_token",
                    "saving_vs_baseline", "above_theoretical"):
            assert row[key] == pytest.approx(shown[key])
    assert rows[0]["theoretical_kwh"] == pytest.approx(card["theoretical_j"] / 3.6e6)
    assert rows[0]["saving_vs_baseline"] == 0 and rows[1]["saving_vs_baseline"] > 0
    # The same from the options' other shapes: a list of engines, a GPU, a Trace.
    again = infergy.estimate(get_trace("azure-code-2023"), model="llama-3.1-8b",
                             engine=["hf-eager"], gpu="h100", profile=SHIPPED)
    assert again.rows()[0]["kwh"] == pytest.approx(rows[0]["kwh"])
    assert [r["engine"] for r in again.rows()] == ["hf-eager"]


def test_infergy_estimate_is_still_the_estimators_package():
    import infergy.estimate as package
    from infergy.estimate import estimate_cards

    assert package is infergy.estimate and package.estimate_cards is estimate_cards
    assert callable(infergy.estimate)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"model": "llama-9"}, UnknownModelError, "llama-9"),
    ({"model": "llama-3.1-8b", "engine": "hf-paged"}, infergy.EstimateError,
     "hold no B = max point of hf-paged"),
    ({"model": "llama-3.1-8b", "gpu": "b200"}, infergy.EstimateError,
     "no shipped profile of llama-3.1-8b on b200"),
])
def test_infergy_estimate_raises_what_the_command_says(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        infergy.estimate("azure-code-2023", **kwargs)


def test_infergy_estimate_of_a_trace_that_is_not_there_names_it(tmp_path):
    with pytest.raises(TraceError, match=r"no-such\.csv"):
        infergy.estimate(str(tmp_path / "no-such.csv"), model="llama-3.1-8b")


def measurement(*devices: str) -> Measurement:
    shares = tuple(DeviceEnergy(d, d.rstrip("0123456789"), 1.0, "counter", 1.0, None, None,
                                None, None, None, None, 2, None, None) for d in devices)
    return Measurement("decode", 0.0, 1.0, shares, None, None, None, None, None, None, 2,
                       False)


@pytest.mark.parametrize(("devices", "shown"), [
    ((), "measured: none: no sensor could be read"),
    (("cpu0", "dram0"), "measured: cpu0, dram0"),
    (("gpu1",), "measured: gpu1"),
])
def test_a_device_not_measured_is_a_lookup_error_naming_those_measured(devices, shown):
    """`Measurement.device("gpu0")` on a machine without that GPU was a bare StopIteration."""
    with pytest.raises(LookupError, match=re.escape(shown)) as e:
        measurement(*devices).device("gpu0")
    assert "no device 'gpu0' in the measurement 'decode'" in str(e.value)
    assert measurement("cpu0", "gpu0").device("gpu0").device == "gpu0"


def test_the_meter_from_the_face_measures_a_window_here():
    with infergy.open_meter(idle_s=0, cpu=False) as meter, meter.window("w") as w:
        sum(range(10_000))
    m = w.measurement
    assert m.duration_s > 0 and m.name == "w"
    if not any(d.kind == "gpu" for d in m.devices):  # this machine: no GPU sensor
        assert m.energy_j is None and m.reason
