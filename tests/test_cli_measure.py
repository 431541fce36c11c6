"""`infergy measure` and `infergy models` as a user runs them, on this machine (no GPU)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

INFERGY = [sys.executable, "-m", "infergy"]
# Child processes print plain text, whatever the terminal this runs in.
PLAIN = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
PLAIN.pop("FORCE_COLOR", None)
TINY = ["measure", "--model", "tiny", "--engine", "hf-eager", "--batch", "2", "--input", "16",
        "--output", "8", "--idle-s", "0", "--dtype", "float32"]


def infergy(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*INFERGY, *args], capture_output=True, text=True, timeout=timeout,
                          env=PLAIN)


def flat(text: str) -> str:
    """Text with line wrapping undone, for phrases that rich may break across lines."""
    return " ".join(text.split())


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_measure_on_a_cpu_reports_time_and_says_why_energy_is_unavailable():
    result = infergy(*TINY, "--repeats", "2", "--warmup", "0")
    assert result.returncode == 0, result.stderr
    text = flat(result.stdout)
    assert "tiny on hf-eager (cpu), greedy: B=2, I=16, O=8, 2 repeats" in text
    assert re.search(r"J per output token n/a", text)
    assert re.search(r"throughput [\d.]+ tok/s", text)
    match = re.search(r"energy unavailable: (.+)", text)
    assert match and "no GPU measured" in match.group(1)
    no_traceback(result)


def test_measure_repeats_a_short_run_in_each_window_and_says_so():
    result = infergy(*TINY, "--repeats", "1", "--min-window", "1")
    assert result.returncode == 0, result.stderr
    assert re.search(r"1 repeats \(medians\), \d+ runs a window \(figures per run\)",
                     flat(result.stdout))


def test_measure_json_gives_the_point_status_and_repeats():
    result = infergy(*TINY, "--repeats", "2", "--warmup", "0", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["point"] == {"model": "tiny", "engine": "hf-eager", "batch": 2,
                             "input_tokens": 16, "output_tokens": 8, "decoding": "greedy",
                             "tp": 1, "dtype": "float32"}
    assert data["status"] == "ok"
    assert data["error"] is None
    assert len(data["repeats"]) == 2
    assert data["energy_j"] is None and data["j_per_output_token"] is None
    assert "no GPU measured" in data["energy_reason"]
    assert data["time_s"] > 0
    assert data["prefill_method"] == "window"
    assert data["load"]["time_s"] > 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model", "nope"], ["unknown model 'nope'", "llama-3.1-8b", "tiny"]),
        (["--model", "tiny", "--engine", "nope"], ["unknown engine 'nope'", "hf-eager", "vllm"]),
        (["--model", "tiny", "--input", "3000"], ["beyond tiny's context of 2048 tokens"]),
        (["--model", "tiny", "--decoding", "beam:1"], ["beam search needs at least 2 beams"]),
        (["--model", "tiny", "--engine", "hf-paged", "--decoding", "beam:4"],
         ["engine hf-paged does not support beam decoding", "greedy, sample"]),
        (["--model", "tiny", "--batch", "0"], ["batch must be a positive integer"]),
        (["--model", "tiny", "--min-window", "2", "--warmup", "0"],
         ["--min-window needs --warmup 1 or more"]),
    ],
)
def test_measure_refuses_bad_input_with_exit_2_and_a_message(args, says):
    result = infergy("measure", *args, "--idle-s", "0")
    assert result.returncode == 2
    message = flat(result.stderr)
    assert message.startswith("error:")
    for phrase in says:
        assert phrase in message
    no_traceback(result)


def test_measure_with_vllm_on_a_cpu_machine_says_why_it_cannot():
    result = infergy("measure", "--model", "tiny", "--engine", "vllm", "--input", "16",
                     "--output", "8", "--idle-s", "0", "--dtype", "float32")
    assert result.returncode != 0
    message = flat(result.stderr)
    assert "error: engine vllm needs a CUDA GPU" in message or "vLLM is not installed" in message
    no_traceback(result)


@pytest.mark.parametrize(("engine", "tp", "says"), [
    ("hf-compiled", "2", "error: --tp 2: engine hf-compiled runs on one GPU"),
    ("vllm", "3", "error: --tp 3 does not divide llama-3.1-8b's 32 attention heads"),
])
def test_measure_refuses_a_tp_that_cannot_run_before_any_work(engine, tp, says):
    result = infergy("measure", "--model", "llama-3.1-8b", "--engine", engine, "--tp", tp,
                     "--idle-s", "0")
    assert result.returncode == 2
    assert says in flat(result.stderr)
    no_traceback(result)


def test_models_lists_the_catalog():
    result = infergy("models")
    assert result.returncode == 0, result.stderr
    for name in ("llama-3.1-8b", "tiny", "meta-llama/Llama-3.1-8B"):
        assert name in result.stdout


def test_measure_stores_the_load_it_prints(tmp_path):
    """`measure --db` kept the point but not the engine's load (time and energy), which it
    prints and a sweep stores."""
    import json

    from typer.testing import CliRunner

    from infergy.cli import app
    from infergy.store import Store
    db = tmp_path / "m.db"
    result = CliRunner().invoke(app, ["measure", "--model", "tiny", "--engine", "hf-eager",
                                      "--batch", "1", "--input", "8", "--output", "4",
                                      "--idle-s", "0", "--dtype", "float32", "--repeats", "1",
                                      "--warmup", "0", "--device", "cpu", "--db", str(db)])
    assert result.exit_code == 0, result.output
    with Store(db, create=False, read_only=True) as store:
        (point,) = store.points()
    assert json.loads(point["result"])["load"]["time_s"] > 0
