"""`infergy sweep` (plan and errors) and `infergy results` on a store written by the tests."""

from __future__ import annotations

import json
import re
import time

import pytest
from typer.testing import CliRunner

from infergy.cli import app
from infergy.run import describe_plan, local_device
from infergy.store import Store

runner = CliRunner()
DEVICE = "GPU-simulated-0"
META = {"gpus": [{"model": "Simulated GPU", "uuid": DEVICE}], "host": {"hostname": "h"}}


def flat(text: str) -> str:
    return " ".join(text.split())


def write_store(path, batches=(1, 2), model="tiny"):
    with Store(path) as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        for batch in batches:
            point = {"model": model, "engine": "hf-eager", "batch": batch, "input_tokens": 8,
                     "output_tokens": 4, "decoding": "greedy", "tp": 1, "dtype": "bfloat16"}
            store.add_point(run, DEVICE, {"point": point, "status": "ok", "energy_j": 4.0 * batch,
                                          "j_per_output_token": 1.0, "time_s": 0.1},
                            engine_options="{}", batch_requested=batch)
        return [p["id"] for p in store.points()]


def test_dry_run_prints_the_plan_and_measures_nothing(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [tiny]\ninput_tokens: [8, 16]\noutput_tokens: [4]\n"
                    "batch_sizes: [1, max]\n")
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--db",
                                 str(tmp_path / "r.db")])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "4 points, 0 already in" in text and "to measure in 1 model loads" in text
    assert not (tmp_path / "r.db").exists()


def test_dry_run_counts_what_the_store_already_has_for_this_device(tmp_path, monkeypatch):
    import infergy.cli.sweep as cli_sweep

    monkeypatch.setattr(cli_sweep, "local_device", lambda tp=1, device="auto": DEVICE)
    write_store(tmp_path / "r.db", batches=(1,))
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [tiny]\ninput_tokens: [8]\noutput_tokens: [4]\n"
                    "batch_sizes: [1, 2]\n")
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--db",
                                 str(tmp_path / "r.db")])
    assert result.exit_code == 0, result.output
    assert "2 points, 1 already in" in flat(result.output)


def test_dry_run_by_card_model_plans_from_any_machine_with_measured_times(tmp_path):
    """A CPU machine plans what is left of a GPU's profile: points of any card of the store's
    model count, and their measured times stand in the plan."""
    path = tmp_path / "r.db"
    with Store(path) as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        point = {"model": "tiny", "engine": "hf-eager", "batch": 1, "input_tokens": 8,
                 "output_tokens": 4, "decoding": "greedy", "tp": 1, "dtype": "bfloat16"}
        store.add_point(run, DEVICE, {
            "point": point, "status": "ok", "energy_j": 4.0, "time_s": 2.0,
            "warmup": {"time_s": 3.0},
            "repeats": [{"request": {"time_s": 2.0}, "prefill": {"time_s": 0.1,
                                                                 "method": "window"}}] * 3,
        }, engine_options="{}", batch_requested=1)
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [tiny]\ninput_tokens: [8, 16]\noutput_tokens: [4]\n"
                    "batch_sizes: [1]\n")
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--db", str(path)])
    assert "2 points, 0 already in" in flat(result.output)  # this machine is not that card
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--db", str(path),
                                 "--resume-by", "model"])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "Plan of" in text and "Simulated GPU" in text
    assert "2 points, 1 already in" in text and "9.0 s" in text  # 3 s warm-up + 3 x 2 s
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--resume-by", "card-ish"])
    assert result.exit_code == 2 and "--resume-by expects one of card, model" in flat(
        result.output)


def test_a_bad_spec_is_an_error_naming_the_field_without_a_traceback(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [tiny]\ninput_tokens: [8]\noutput_tokens: [4]\nrepeat: 3\n")
    result = runner.invoke(app, ["sweep", str(spec), "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 2
    assert "field 'repeat' (line 4): unknown field" in flat(result.output)
    assert "Traceback" not in result.output
    assert not (tmp_path / "r.db").exists()


def test_command_line_options_replace_the_spec_s_and_are_checked(tmp_path):
    result = runner.invoke(app, ["sweep", "batch-sweep", "-m", "tiny", "-b", "1", "-b", "max",
                                 "--dry-run", "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 0, result.output
    assert "2 points" in flat(result.output)
    result = runner.invoke(app, ["sweep", "batch-sweep", "-e", "hf-eagre", "--dry-run"])
    assert result.exit_code == 2 and "unknown engine 'hf-eagre'" in flat(result.output)
    result = runner.invoke(app, ["sweep", "batch-sweep", "-m", "tiny", "-b", "1", "-b", "max",
                                 "--shard", "1/2", "--dry-run", "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 0 and "1 points" in flat(result.output)
    result = runner.invoke(app, ["sweep", "batch-sweep", "--shard", "2/2", "--dry-run"])
    assert result.exit_code == 2 and "--shard expects K/N" in flat(result.output)
    assert "Traceback" not in result.output


def test_results_list_show_export_and_merge(tmp_path):
    ids = write_store(tmp_path / "a.db")
    write_store(tmp_path / "b.db", batches=(4,))
    listed = runner.invoke(app, ["results", "list", "--db", str(tmp_path / "a.db")])
    assert listed.exit_code == 0 and "2 points" in listed.output
    shown = runner.invoke(app, ["results", "show", ids[1][:10], "--db", str(tmp_path / "a.db")])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["point"]["batch"] == 2
    exported = runner.invoke(app, ["results", "export", str(tmp_path / "p.json"), "--format",
                                   "json", "--db", str(tmp_path / "a.db")])
    assert exported.exit_code == 0 and len(json.loads((tmp_path / "p.json").read_text())) == 2
    merged = runner.invoke(app, ["results", "merge", str(tmp_path / "a.db"),
                                 str(tmp_path / "b.db"), "-o", str(tmp_path / "c.db")])
    assert merged.exit_code == 0 and "3 points and 2 runs added" in flat(merged.output)
    summary = runner.invoke(app, ["results", "summary", "--db", str(tmp_path / "c.db")],
                            env={"COLUMNS": "200"})
    assert summary.exit_code == 0, summary.output
    text = flat(summary.output)
    assert "Simulated GPU: where and when" in text and "GPU-simulate… │ 3 │" in text
    # 3 points of 0.1 s at B = 1, 2 and 4: none with a window long enough for its CV to count
    assert text.count("│ hf-eager │ greedy │ 1 │") == 3 and "│ 1 │ 0 │ - │ - │ none │" in text


def test_results_merge_takes_one_models_points_and_their_runs(tmp_path):
    write_store(tmp_path / "a.db")
    write_store(tmp_path / "a.db", batches=(8,), model="other")
    merged = runner.invoke(app, ["results", "merge", str(tmp_path / "a.db"), "-m", "other",
                                 "-o", str(tmp_path / "o.db")])
    assert merged.exit_code == 0 and "1 points and 1 runs added" in flat(merged.output)
    with Store(tmp_path / "o.db", create=False, read_only=True) as store:
        assert [(p["model"], p["batch"]) for p in store.points()] == [("other", 8)]
        assert len(store.runs()) == 1
    missing = runner.invoke(app, ["results", "merge", str(tmp_path / "a.db"), "-m", "nope",
                                  "-o", str(tmp_path / "n.db")])
    assert missing.exit_code == 2 and "--model nope: no point or replay of it in" in flat(
        missing.output)
    assert not (tmp_path / "n.db").exists() and "Traceback" not in missing.output


def test_results_errors_are_clear(tmp_path):
    missing = runner.invoke(app, ["results", "list", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no such results store" in flat(missing.output)
    write_store(tmp_path / "a.db")
    unknown = runner.invoke(app, ["results", "show", "zzz", "--db", str(tmp_path / "a.db")])
    assert unknown.exit_code == 2 and "no points with an id starting 'zzz'" in flat(
        unknown.output)
    status = runner.invoke(app, ["results", "list", "--status", "bogus", "--db",
                                 str(tmp_path / "a.db")])
    assert status.exit_code == 2 and "--status expects one of ok, oom, failed" in flat(
        status.output)
    device = runner.invoke(app, ["sweep", "batch-sweep", "-m", "tiny", "--dry-run", "--device",
                                 "bogus"])
    assert device.exit_code == 2 and "--device must be auto, cuda or cpu" in flat(device.output)
    bad = runner.invoke(app, ["results", "export", str(tmp_path / "x"), "--format", "xml",
                              "--db", str(tmp_path / "a.db")])
    assert bad.exit_code == 2 and "unknown export format 'xml'" in flat(bad.output)
    # The format follows the file's extension; a --format against it is refused.
    by_name = runner.invoke(app, ["results", "export", str(tmp_path / "p.json"), "--db",
                                  str(tmp_path / "a.db")])
    assert by_name.exit_code == 0 and json.loads((tmp_path / "p.json").read_text())
    clash = runner.invoke(app, ["results", "export", str(tmp_path / "p.parquet"), "--format",
                                "csv", "--db", str(tmp_path / "a.db")])
    assert clash.exit_code == 2 and "a .parquet file, and --format csv" in flat(clash.output)
    assert not (tmp_path / "p.parquet").exists()
    summary = runner.invoke(app, ["results", "summary", "--db", str(tmp_path / "a.db"),
                                  "--model", "llama-3.1-8b"])
    assert summary.exit_code == 2 and "no measured points of llama-3.1-8b" in flat(
        summary.output)
    summary = runner.invoke(app, ["results", "summary", "--db", str(tmp_path / "none.db")])
    assert summary.exit_code == 2 and "no such results store" in flat(summary.output)


def test_a_point_measured_at_tp_1_is_not_measured_at_tp_2(tmp_path, monkeypatch):
    """TP is part of a point's identity in the store: the plan at TP 2 measures again what
    the store holds at TP 1, on GPUs of that many (the worker's identity, `local_device`)."""
    import infergy.cli.sweep as cli_sweep

    asked = []
    monkeypatch.setattr(cli_sweep, "local_device",
                        lambda tp=1, device="auto": asked.append(tp) or DEVICE)
    with Store(tmp_path / "r.db") as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        point = {"model": "llama-3.1-8b", "engine": "vllm", "batch": 1, "input_tokens": 8,
                 "output_tokens": 4, "decoding": "greedy", "tp": 1, "dtype": "bfloat16"}
        store.add_point(run, DEVICE, {"point": point, "status": "ok", "energy_j": 4.0,
                                      "j_per_output_token": 1.0, "time_s": 0.1},
                        engine_options="{}", batch_requested=1)
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [llama-3.1-8b]\nengines: [vllm]\ninput_tokens: [8]\n"
                    "output_tokens: [4]\nbatch_sizes: [1]\n")
    for tp, held in (("1", "1 points, 1 already in"), ("2", "1 points, 0 already in")):
        result = runner.invoke(app, ["sweep", str(spec), "--tp", tp, "--dry-run", "--db",
                                     str(tmp_path / "r.db")])
        assert result.exit_code == 0, result.output
        assert held in flat(result.output)
    assert asked == [1, 2]
    assert "at TP 2" in flat(result.output)


SPEC_3 = ("models: [tiny]\nengines: [{name: 'simulated_engines:FailsByBatchEngine', options: "
          "{crash_at_batch: 2}}]\ninput_tokens: [8]\noutput_tokens: [2]\nbatch_sizes: [1, 2, 4]\n"
          "repeats: 1\nwarmup: 0\nidle_s: 0\n")


def test_a_sweep_logged_to_a_file_says_each_point_as_stored_and_which_failed(tmp_path):
    """Standard error not a terminal (a file, a CI log): a plain line as each point is stored,
    and the last lines say the plan is whole in the store, naming the point that failed."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC_3)
    db = tmp_path / "r.db"
    result = runner.invoke(app, ["sweep", str(spec), "--db", str(db), "--device", "cpu"])
    text = flat(result.output)
    assert result.exit_code == 1, result.output  # a point failed
    label = "tiny simulated_engines:FailsByBatchEngine+crash_at_batch=2 greedy"
    assert f"infergy: [1/3] {label} B=1 I=8 O=2: ok, energy not measured (no sensor)" in text
    assert f"infergy: [2/3] {label} B=2 I=8 O=2: failed (the worker process died" in text
    assert ": starting a new worker" in text
    # The last point's line: nothing left once it is stored (its ETA counted it, 2026-12-06).
    assert f"infergy: [3/3] {label} B=4 I=8 O=2: ok, energy not measured (no sensor), about " \
           "0 s left" in text
    assert f"done: every point of the plan (3) is in {db}; 1 failed: {label} B=2 I=8 O=2 " \
           "(tried again when the same command runs again)" in text
    assert "━" not in result.output and "Traceback" not in result.output


def _summary(**fields):
    from infergy.run.sweep import SweepSummary

    return SweepSummary(**{"run_id": "r", "device": "cpu:h", "measured": 2, "skipped": 0,
                           "failed": 0, "oom": 0, "interrupted": False, "worker_restarts": 0,
                           "wall_s": 1.0, "busy_s": 0.5, "setup_s": 0.1, "total": 5,
                           **fields})


def test_a_sweep_says_done_only_with_its_whole_plan_in_the_store(tmp_path, monkeypatch):
    """The end of a sweep read from its summary (run_sweep replaced by a test double that
    returns one): points missing are not done (exit 1, the resume command with the
    options given), a store that could not be written exits 2, a stop by signal 130 / 143."""
    import infergy.cli.sweep as cli_sweep

    db = tmp_path / "r.db"
    args = ["sweep", "batch-sweep", "-m", "tiny", "-b", "1", "-b", "2", "--db", str(db),
            "--device", "cpu", "--shard", "0/2"]
    again = (f"infergy sweep batch-sweep --db {db} -m tiny -b 1 -b 2 --device cpu "
             f"--shard 0/2")
    cases = [
        ({"missing": 3}, 1, f"not done: 3 of the plan's 5 points are not in {db}: run the "
                            f"same command to resume: {again}"),
        ({"missing": 0}, 0, f"done: every point of the plan (5) is in {db}"),
        ({"missing": 2, "store_error": f"{db}: cannot be written (database or disk is full)"},
         2, f"error: {db}: cannot be written (database or disk is full): the sweep stopped "
            f"there, the points stored before are kept; once the store can be written, resume "
            f"with: {again}"),
        ({"missing": 3, "interrupted": True, "signal": "SIGTERM",
          "abandoned": "tiny hf-eager greedy B=2 I=32 O=32"}, 143,
         "stopped by SIGTERM, the point in flight (tiny hf-eager greedy B=2 I=32 O=32) "
         "abandoned, not stored; the run is marked interrupted; 3 of the plan's 5 points"),
        ({"missing": 3, "interrupted": True, "signal": "SIGINT"}, 130,
         "stopped by Ctrl-C, after the point in flight"),
    ]
    for fields, code, said in cases:
        monkeypatch.setattr(cli_sweep, "run_sweep", lambda *a, fields=fields, **k: _summary(
            **fields))
        result = runner.invoke(app, args)
        assert result.exit_code == code, result.output
        assert said in flat(result.output)
        assert ("done: every point" in flat(result.output)) == (code == 0)
        assert "Traceback" not in result.output


def test_a_dry_run_of_a_million_points_answers_at_once(tmp_path, monkeypatch):
    import infergy.cli.sweep as cli_sweep

    took = []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        plan = describe_plan(*args, **kwargs)
        took.append(time.perf_counter() - start)
        return plan

    monkeypatch.setattr(cli_sweep, "describe_plan", timed)
    spec = tmp_path / "s.yaml"
    spec.write_text(f"models: [tiny]\ninput_tokens: {list(range(1, 1001))}\n"
                    f"output_tokens: {list(range(1, 1001))}\nbatch_sizes: [1]\n")
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--db",
                                 str(tmp_path / "r.db"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert took[0] < 1.0
    assert "1,000,000 points, 0 already in" in text and "999,990 more points" in text
    assert "│ 1,000,000 │ tiny │ hf-eager │ greedy │ 1 │ 1000 │ 1000 │" in text
    assert "timed from 1,000 of the points, evenly spread" in text
    # Sharded: the shard's share, counted the same way
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--db",
                                 str(tmp_path / "r.db"), "--shard", "2/3"])
    assert "333,333 points, 0 already in" in flat(result.output)


def _seconds(text: str) -> float:
    """The rough time of a dry run's summary line, in seconds."""
    value, unit = re.search(r"repeats roughly ([\d.,]+) (s|min|h|days)", text).groups()
    return float(value.replace(",", "")) * {"s": 1, "min": 60, "h": 3600, "days": 86400}[unit]


def test_a_dry_run_on_a_cpu_times_a_cpu_not_an_h100(tmp_path, monkeypatch):
    """--device cpu (or auto without a GPU): a rough CPU guess, said to be one, never a
    GPU's speed; the CPU's own measured points in the store stand and scale the others."""
    import socket

    spec = tmp_path / "s.yaml"
    spec.write_text("models: [tiny]\ninput_tokens: [8, 16, 32]\noutput_tokens: [2, 4]\n"
                    "batch_sizes: [1, 2, 3]\nrepeats: 2\nwarmup: 1\nidle_s: 0\n")
    db = tmp_path / "r.db"
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--db", str(db),
                                 "--device", "cpu"])
    text = flat(result.output)
    assert result.exit_code == 0, result.output
    assert "on this CPU" in text and "Times on this CPU" in text and "rough guess" in text
    assert "H100" not in text
    assert 1 <= _seconds(text) <= 60  # the tiny model's 18 points: not "0 min"
    if local_device().startswith("cpu:"):  # no GPU here: auto is the CPU too
        auto = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--db", str(db)])
        assert "Times on this CPU" in flat(auto.output)
    # This CPU's measured points: their times stand, and scale the others' (no "?" left)
    host = {"hostname": socket.gethostname()}
    with Store(db) as store:
        run = store.start_run(device=f"cpu:{host['hostname']}", meta={"gpus": [], "host": host},
                              spec=None)
        for batch in (1, 2, 3):
            point = {"model": "tiny", "engine": "hf-eager", "batch": batch, "input_tokens": 8,
                     "output_tokens": 2, "decoding": "greedy", "tp": 1, "dtype": "bfloat16"}
            store.add_point(run, f"cpu:{host['hostname']}", {
                "point": point, "status": "ok", "energy_j": None, "time_s": 2.0,
                "warmup": {"time_s": 3.0},
                "repeats": [{"request": {"time_s": 3.0},
                             "prefill": {"time_s": 0.1, "method": "window"}}] * 2,
            }, engine_options="{}", batch_requested=batch)
    result = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--db", str(db),
                                 "--device", "cpu"])
    text = flat(result.output)
    assert "18 points, 3 already in" in text and "│ in store │ 9.0 s │" in text
    assert " ?" not in text.split("Times on")[0]
    assert _seconds(text) > 15 * 9.0 * 0.5  # scaled up towards what this CPU took


def test_a_dry_run_for_a_gpu_says_its_times_are_an_h100_s(tmp_path, monkeypatch):
    import infergy.cli.sweep as cli_sweep

    monkeypatch.setattr(cli_sweep, "local_device", lambda tp=1, device="auto": DEVICE)
    result = runner.invoke(app, ["sweep", "batch-sweep", "-m", "tiny", "--dry-run", "--db",
                                 str(tmp_path / "r.db")])
    assert result.exit_code == 0, result.output
    assert "half a nominal H100's peak" in flat(result.output)


def test_a_worker_that_gives_no_answer_is_killed_and_its_point_failed(tmp_path, monkeypatch):
    """The point's time limit passed: the worker killed, the point stored as failed with
    why, the sweep going on (a TypeError ended it: a helper's review)."""
    from infergy.run.sweep import process

    monkeypatch.setattr(process, "POINT_TIMEOUT_S", 3.0)
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [tiny]\nengines: [{name: 'simulated_engines:FailsByBatchEngine', "
                    "options: {sleep_s: 30}}]\ninput_tokens: [8]\noutput_tokens: [2]\n"
                    "batch_sizes: [1]\nrepeats: 1\nwarmup: 0\nidle_s: 0\n")
    db = tmp_path / "r.db"
    result = runner.invoke(app, ["sweep", str(spec), "--db", str(db), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    with Store(db, create=False, read_only=True) as store:
        (point,) = store.points()
    assert point["status"] == "failed"
    assert point["error"] == "the worker process gave no answer in 3 s and was killed"


def _children(pid: int) -> set[int]:
    """The processes `pid` started (Linux's /proc)."""
    import pathlib

    found = set()
    for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _running(pid: int) -> bool:
    import pathlib

    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] \
            not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("sig", "code"), [(9, -9), (1, 129)])
def test_a_sweep_killed_or_hung_up_leaves_no_worker_measuring(tmp_path, sig, code):
    """Its worker ends with it, rather than measure beside the sweep resumed on the same GPU
    (a helper's review: after kill -9 or SIGHUP, the worker ran on into the resumed sweep);
    SIGHUP stops the sweep as SIGTERM does, with its own exit status."""
    import os
    import subprocess
    import sys

    spec = tmp_path / "s.yaml"
    spec.write_text("models: [tiny]\nengines: [{name: 'simulated_engines:FailsByBatchEngine', "
                    "options: {sleep_s: 60}}]\ninput_tokens: [8]\noutput_tokens: [2]\n"
                    "batch_sizes: [1]\nrepeats: 1\nwarmup: 0\nidle_s: 0\n")
    tests = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [tests, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "infergy", "sweep", str(spec), "--db",
                             str(tmp_path / "r.db"), "--device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _children(proc.pid):
            time.sleep(0.2)
        time.sleep(3)  # the worker started, its point under way
        workers = _children(proc.pid)
        assert workers
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=30) == code
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(w) for w in workers):
            time.sleep(0.2)
        assert not any(_running(w) for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
