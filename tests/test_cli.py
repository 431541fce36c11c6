"""The `infergy` command on this machine (no GPU, no powercap)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

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


@pytest.mark.parametrize("seconds", ["inf", "nan", "-1", "3601"])
def test_idle_seconds_past_an_hour_or_not_a_number_are_refused(seconds):
    """`--idle-s inf` passed `min=0` and ended in a traceback inside time.sleep on a card."""
    result = infergy("meter", "--idle-s", seconds, "--", "true")
    assert result.returncode == 2 and "expected seconds from 0 to 3600" in flat(result.stderr)


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


def running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def meter_in_background(tmp_path, script: str, *args: str) -> subprocess.Popen:
    """`infergy meter -- sh -c script`, once the script has written the file `ready`."""
    proc = subprocess.Popen([*INFERGY, "meter", "--idle-s", "0", *args, "--", "sh", "-c", script],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=PLAIN)
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 20) -> str:
    try:
        return proc.communicate(timeout=timeout)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def ready_then_sleep(seconds: int) -> str:
    """A shell command: Python writes `ready`, then sleeps. Python writes it once its own
    Ctrl-C handler is set, so a signal sent at `ready` always reaches a sleeping process. (A
    shell's `touch ready; sleep 30` leaves a gap: a Ctrl-C that comes while the shell starts
    `sleep` is taken by the shell, held until `sleep` ends, and lost to `sleep`, which then
    runs its 30 s: the test saw SIGTERM's 143 after the grace time instead of 130, in CI.)"""
    code = f"import pathlib, time; pathlib.Path('ready').touch(); time.sleep({seconds})"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


# The shell's background job (which ignores SIGINT: sh sets that for `&`) writes its pid.
GRANDCHILD = f"sleep 30 & echo $! > pid; {ready_then_sleep(30)}; wait"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                           (signal.SIGHUP, 129)])
def test_meter_signal_stops_the_commands_grandchildren_too(tmp_path, sig, code):
    proc = meter_in_background(tmp_path, GRANDCHILD)
    grandchild = int((tmp_path / "pid").read_text())
    proc.send_signal(sig)
    stderr = finish(proc)
    assert proc.returncode == code
    assert "interrupted: measured so far" in flat(stderr)
    deadline = time.monotonic() + 5
    while running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(grandchild)


def test_meter_exit_status_after_ctrl_c_is_always_the_commands(tmp_path):
    """The command traps Ctrl-C and exits 7: infergy exits 7, every time (it exited 0 in 3
    of 4 tries when the status was lost to a race)."""
    for _ in range(10):
        (tmp_path / "ready").unlink(missing_ok=True)
        # The trap runs between two commands: many short ones, not one long one.
        proc = meter_in_background(tmp_path,
                                   'trap "exit 7" INT; touch ready; while :; do sleep 0.05; done')
        proc.send_signal(signal.SIGINT)
        finish(proc)
        assert proc.returncode == 7


def test_meter_ctrl_c_to_a_command_that_dies_of_it_exits_130(tmp_path):
    for _ in range(5):
        (tmp_path / "ready").unlink(missing_ok=True)
        proc = meter_in_background(tmp_path, "touch ready; exec sleep 5")
        proc.send_signal(signal.SIGINT)
        finish(proc)
        assert proc.returncode == 130


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_meter_output_that_cannot_be_written_is_refused_before_the_command_runs(
        tmp_path, json_flag):
    store = tmp_path / "results.db"
    store.write_bytes(b"SQLite format 3\x00" + bytes(100))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("kept")
    ran = tmp_path / "ran"
    for output, says in [(tmp_path, "is a folder"), (store, "is an SQLite file"),
                         (a_file / "out.json", f"folder {a_file} cannot be made")]:
        result = infergy("meter", "--idle-s", "0", *json_flag, "-o", str(output), "--",
                         "touch", str(ran))
        assert result.returncode == 2, result.stderr
        assert f"--output {output}: {says}" in flat(result.stderr)
        assert "Traceback" not in result.stderr
        assert not ran.exists()  # nothing was run, nothing measured lost
    assert store.read_bytes() == b"SQLite format 3\x00" + bytes(100)
    assert a_file.read_text() == "kept"


def test_meter_prints_the_command_with_its_brackets():
    result = infergy("meter", "--idle-s", "0", "--", "echo", "[bold]models: [a, b][/]")
    assert result.returncode == 0
    assert "echo '[bold]models: [a, b][/]'" in flat(result.stderr)


def test_meter_output_in_missing_folders_is_written(tmp_path):
    out = tmp_path / "new" / "deeper" / "result.json"
    result = infergy("meter", "--idle-s", "0", "--json", "-o", str(out), "--", "true")
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["exit_code"] == 0


def test_meter_result_that_cannot_be_written_at_the_end_goes_to_stderr(tmp_path):
    folder = tmp_path / "gone"
    result = infergy("meter", "--idle-s", "0", "--json", "-o", str(folder / "result.json"),
                     "--", "sh", "-c", f"rm -r {folder}; exit 4")
    assert result.returncode == 4
    text = flat(result.stderr)
    assert f"--output {folder / 'result.json'}: cannot be written" in text
    assert json.loads(result.stderr[result.stderr.index("{"):])["exit_code"] == 4


@pytest.mark.parametrize(("gpus", "says"), [
    ("first", "expected CUDA indices like 0 or 0,1"),
    ("0,", "expected CUDA indices"),
    ("-1", "CUDA indices count from 0"),
    ("0,0", "a GPU is named twice"),
    ("0", "no GPU can be measured here (gpu: NVML library not found"),  # this machine
])
def test_meter_gpus_that_cannot_be_measured_are_refused_before_the_command_runs(
        tmp_path, gpus, says):
    result = infergy("meter", "--idle-s", "0", "--gpus", gpus, "--", "touch",
                     str(tmp_path / "ran"))
    assert result.returncode == 2
    assert f"--gpus {gpus}: {says}" in flat(result.stderr)
    assert not (tmp_path / "ran").exists()


# -- measure --json: the JSON alone on stdout ------------------------------------------------

# A test double of an engine that logs on standard output as it loads (vLLM's logger writes
# to stdout): Python's print, the file descriptor itself, and a process it starts.
NOISY_ENGINE = """
import os, subprocess, sys
from infergy.run.session import Session
load = Session.load
def noisy_load(self, *args, **kwargs):
    print("engine log: print", flush=True)
    os.write(1, b"engine log: fd 1\\n")
    subprocess.run([sys.executable, "-c", "print('engine log: a process')"], check=True)
    return load(self, *args, **kwargs)
Session.load = noisy_load
from infergy.cli import main
main(sys.argv[1:])
"""
TINY = ["measure", "--model", "tiny", "--engine", "hf-eager", "--batch", "1", "--input", "8",
        "--output", "4", "--idle-s", "0", "--dtype", "float32", "--device", "cpu",
        "--repeats", "1", "--warmup", "0"]


def test_measure_json_alone_on_stdout_and_engine_logs_on_stderr():
    result = subprocess.run([sys.executable, "-c", NOISY_ENGINE, *TINY, "--json"],
                            capture_output=True, text=True, timeout=120, env=PLAIN)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["point"]["model"] == "tiny"  # nothing else there
    for log in ("print", "fd 1", "a process"):
        assert f"engine log: {log}" in result.stderr


def test_measure_without_json_leaves_the_engine_logs_on_stdout():
    result = subprocess.run([sys.executable, "-c", NOISY_ENGINE, *TINY],
                            capture_output=True, text=True, timeout=120, env=PLAIN)
    assert result.returncode == 0, result.stderr
    for log in ("print", "fd 1", "a process"):
        assert f"engine log: {log}" in result.stdout


def test_replay_json_alone_on_stdout_and_engine_logs_on_stderr(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("in,out\n16,4\n8,4\n")
    result = subprocess.run(
        [sys.executable, "-c", NOISY_ENGINE, "replay", "-t", str(trace), "--input-col", "in",
         "--output-col", "out", "-m", "tiny", "--batch", "2", "--batching", "natural",
         "--idle-s", "0", "--device", "cpu", "--json"],
        capture_output=True, text=True, timeout=120, env=PLAIN)
    assert result.returncode == 0, result.stderr
    assert [r["batching"] for r in json.loads(result.stdout)] == ["natural"]
    for log in ("print", "fd 1", "a process"):
        assert f"engine log: {log}" in result.stderr
