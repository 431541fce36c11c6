"""The `infergy` command on this machine (no GPU, no powercap)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from infergy import __version__
from infergy.cli import app

runner = CliRunner()
INFERGY = [sys.executable, "-m", "infergy"]
# Child processes print plain text, whatever the terminal this runs in.
PLAIN = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
PLAIN.pop("FORCE_COLOR", None)


def infergy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*INFERGY, *args], capture_output=True, text=True, timeout=timeout,
                          env=PLAIN)


def flat(text: str) -> str:
    """Text with line wrapping undone, for phrases that rich may break across lines."""
    return " ".join(text.split())


# -- env ---------------------------------------------------------------------------------------


def test_output_not_to_a_terminal_keeps_each_line_whole(tmp_path):
    """Piped output (a file, CI's log, a test's runner) is neither wrapped nor cut, whatever
    the length of a path in it (rich would break it at 80 columns)."""
    deep = tmp_path / ("d" * 120) / "trace.csv"
    result = runner.invoke(app, ["estimate", "-t", str(deep), "-m", "llama-3.1-8b"])
    assert result.exit_code == 2
    line = next(x for x in result.output.splitlines() if x.startswith("error"))
    assert str(deep) in line and "…" not in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"infergy {__version__}"


def test_no_arguments_shows_help():
    result = runner.invoke(app, [])
    assert "env" in result.output and "meter" in result.output


def test_env_exits_0_and_says_the_gpu_is_not_measurable():
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0
    text = flat(result.stdout)
    assert "not measurable gpu: NVML library not found" in text
    assert "not measurable rapl:" in text
    assert __version__ in text


def test_env_json_is_valid_and_complete():
    result = runner.invoke(app, ["env", "--json"])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert {"gpus", "rapl_zones", "unavailable", "versions"} <= info.keys()
    assert info["gpus"] == []
    assert info["rapl_zones"] == []
    gpu = [u for u in info["unavailable"] if u["what"] == "gpu"]
    assert len(gpu) == 1 and "NVML" in gpu[0]["reason"]
    assert info["versions"]["infergy"] == __version__
    assert info["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))


def test_env_json_from_the_command_line():
    result = infergy("env", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["versions"]["infergy"] == __version__


# -- meter -------------------------------------------------------------------------------------


def test_meter_without_a_command_is_a_usage_error():
    result = infergy("meter")
    assert result.returncode == 2
    assert "usage: infergy meter" in result.stderr
    assert "no command" in result.stderr


def test_meter_with_bad_gpu_list_is_a_usage_error():
    result = infergy("meter", "--gpus", "first", "--", sys.executable, "-c", "pass")
    assert result.returncode == 2
    assert "--gpus" in result.stderr


def test_meter_command_not_found_exits_127():
    result = infergy("meter", "--idle-s", "0", "--", "infergy-no-such-command-here")
    assert result.returncode == 127
    assert "command not found: infergy-no-such-command-here" in result.stderr


def test_meter_command_not_executable_exits_126(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = infergy("meter", "--idle-s", "0", "--", str(script))
    assert result.returncode == 126
    assert "permission denied" in result.stderr


def test_meter_exits_with_the_command_exit_code_and_reports_time():
    result = infergy("meter", "--idle-s", "0", "--", sys.executable, "-c",
                     "import sys; sys.exit(3)")
    assert result.returncode == 3
    text = flat(result.stderr)
    assert "(exit code 3)" in text
    assert " time " in text
    assert "GPU energy: n/a (no GPU measured: NVML library not found" in text


def test_meter_passes_the_command_output_and_options_through():
    result = infergy("meter", "--idle-s", "0", "--", sys.executable, "-c",
                     "import sys; print('hello', sys.argv[1:])", "--json", "-o", "x")
    assert result.returncode == 0
    assert result.stdout.strip() == "hello ['--json', '-o', 'x']"


def test_meter_json_output_file(tmp_path):
    out = tmp_path / "result.json"
    command = [sys.executable, "-c", "import time; time.sleep(0.2)"]
    result = infergy("meter", "--idle-s", "0", "--json", "-o", str(out), "--", *command)
    assert result.returncode == 0
    data = json.loads(out.read_text())
    assert data["command"] == command
    assert data["exit_code"] == 0
    assert data["interrupted"] is False
    assert 0.2 <= data["measurement"]["duration_s"] < 10
    assert data["measurement"]["energy_j"] is None  # no GPU here: null, never 0
    assert "NVML" in data["measurement"]["reason"]
    assert data["idle"] is None
    assert "gpu" in [u["what"] for u in data["unavailable"]]


def test_meter_json_output_file_when_the_command_is_not_found(tmp_path):
    out = tmp_path / "result.json"
    result = infergy("meter", "--idle-s", "0", "--json", "-o", str(out), "--",
                     "infergy-no-such-command-here")
    assert result.returncode == 127
    # either no result file, or one that says what happened
    assert not out.exists() or json.loads(out.read_text())["exit_code"] == 127


def test_meter_json_keeps_the_exit_code(tmp_path):
    out = tmp_path / "result.json"
    result = infergy("meter", "--idle-s", "0", "--json", "-o", str(out), "--",
                     sys.executable, "-c", "raise SystemExit(5)")
    assert result.returncode == 5
    assert json.loads(out.read_text())["exit_code"] == 5


def test_meter_json_to_stderr_without_output_file():
    result = infergy("meter", "--idle-s", "0", "--json", "--", sys.executable, "-c", "pass")
    assert result.returncode == 0
    start = result.stderr.index("{")
    assert json.loads(result.stderr[start:])["exit_code"] == 0


def test_meter_reports_a_child_killed_by_a_signal_as_a_shell_does():
    result = infergy("meter", "--idle-s", "0", "--", sys.executable, "-c",
                     "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert result.returncode == 128 + signal.SIGKILL


def test_meter_ctrl_c_exits_130_and_reports_the_time_so_far():
    command = [sys.executable, "-c",
               "import os, time; print(os.getpid(), flush=True); time.sleep(30)"]
    proc = subprocess.Popen([*INFERGY, "meter", "--idle-s", "0", "--", *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=PLAIN)
    try:
        child = int(proc.stdout.readline())  # the command is running
        proc.send_signal(signal.SIGINT)  # to infergy only: it interrupts the command
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    text = flat(stderr)
    assert "interrupted: measured so far" in text
    assert " time " in text
    with pytest.raises(ProcessLookupError):  # the command was stopped, not left running
        os.kill(child, 0)
