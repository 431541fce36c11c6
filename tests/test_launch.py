"""Launched sweeps on a CPU with the tiny model (infergy.run.launch): the same points through
every launcher (this host's processes, a two-node Ray cluster declaring logical GPUs, Slurm's
path through submitit's local executor) as one worker measures; a worker killed mid-sweep
losing nothing; a driver killed and run again completing the sweep; a point lost twice
recorded failed; no point measured twice by two launchers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infergy.plan import SpecError
from infergy.run.launch import (
    LaunchError,
    LocalLauncher,
    RayLauncher,
    SlurmLauncher,
    launch_sweep,
    local_slots,
    open_launcher,
    parse_minutes,
    parts_folder,
)
from infergy.run.launch.groups import point_groups
from infergy.run.launch.launchers import need
from infergy.run.sweep import run_sweep
from infergy.store import Store
from infergy.store.lock import StoreLock
from test_sweep import keys as point_keys
from test_sweep import spec  # 12 points of the tiny model

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
DOUBLE = "simulated_engines:FailsByBatchEngine"  # a test double, imported by the workers


def keys(points):
    return sorted(point_keys(points))


def points_of(db: Path) -> list[dict]:
    with Store(db) as store:
        return store.points()


@pytest.fixture
def workers_import_tests(monkeypatch):
    """The workers' processes import the test doubles (tests/) and this source tree."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC), str(TESTS)]))


# -- groups -----------------------------------------------------------------------------------


def test_groups_keep_an_engine_start_together_and_split_the_largest_for_the_workers():
    two = spec(engines=["hf-eager", {"name": "hf-eager", "options": {"use_cache": True}}])
    tasks = two.tasks()  # 24: 12 a start
    assert [len(g.indices) for g in point_groups(tasks, list(range(24)), 1)] == [12, 12]
    four = point_groups(tasks, list(range(24)), 4)
    assert sorted(len(g.indices) for g in four) == [6, 6, 6, 6]
    for group in four:  # one engine start each, neighbours apart (every other point)
        assert len({tasks[i].engine for i in group.indices}) == 1
        assert group.indices[1] - group.indices[0] == 2
    assert sorted(i for g in four for i in g.indices) == list(range(24))
    again = point_groups(tasks, list(range(24)), 4)
    assert [g.name for g in again] == [g.name for g in four]  # named for their points
    assert len({g.name for g in four}) == 4
    assert [len(g.indices) for g in point_groups(tasks, [0, 1, 13], 8)] == [1, 1, 1]


def test_slurm_time_limits_read_as_slurm_writes_them():
    assert parse_minutes("90") == 90
    assert parse_minutes("02:30:00") == 150
    assert parse_minutes("1-00:00:00") == 24 * 60
    for bad in ("soon", "0", "1:xx:00"):
        with pytest.raises(LaunchError, match="--slurm-time"):
            parse_minutes(bad)


def test_slurm_jobs_ask_for_the_groups_gpus_and_the_spec_s_and_command_line_s_options(
        tmp_path, monkeypatch):
    """The job script submitit writes, on a machine with stand-ins for sbatch and srun (test
    doubles: Slurm is not here); a spec's `slurm:` settings, the command line's after them."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name in ("sbatch", "srun"):
        (bin_ / name).write_text("#!/bin/sh\necho 'Submitted batch job 1'\n")
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    two = spec(slurm={"partition": "gpu", "time": "4:00:00", "options": {"qos": "low"}})
    launcher = open_launcher("slurm", tmp_path / "parts", 2, "auto", None,
                             partition=two.slurm["partition"], account="energy",
                             time=two.slurm["time"],
                             options=["qos=low", "qos=high", "constraint=h100"])
    script = launcher.executor._executor._make_submission_file_text("cmd", "uid")
    for line in ("--partition=gpu", "--account=energy", "--time=240", "--gpus-per-node=2",
                 "--cpus-per-task=16", "--nodes=1", "--ntasks-per-node=1", "--qos=high",
                 "--constraint=h100"):
        assert f"#SBATCH {line}\n" in script
    with pytest.raises(SpecError, match=r"field 'slurm.partition': expected text"):
        spec(slurm={"partition": ["gpu"]})
    with pytest.raises(LaunchError, match="--slurm-option expects KEY=VALUE"):
        open_launcher("slurm", tmp_path / "parts", 1, "auto", None, options=["qos"])


def test_a_launcher_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(LaunchError, match=r"pip install 'infergy\[ray\]'"):
        need("ray")
    with pytest.raises(LaunchError, match=r"pip install 'infergy\[slurm\]'"):
        SlurmLauncher(Path("unused"), 1, "cpu", None, executor="local")


def test_local_slots_on_a_cpu_are_the_workers_asked_for():
    assert local_slots(1, "cpu", None) == [None]
    assert local_slots(1, "cpu", 3) == [None, None, None]


# -- every launcher, the same points ----------------------------------------------------------


def test_every_launcher_measures_the_points_one_worker_measures(tmp_path):
    with Store(tmp_path / "one.db") as store:
        run_sweep(spec(), store, device="cpu")
    expected = keys(points_of(tmp_path / "one.db"))
    assert len(expected) == 12

    local = launch_sweep(spec(), tmp_path / "local.db", LocalLauncher(local_slots(1, "cpu", 2)),
                         device="cpu")
    assert (local.measured, local.groups, local.missing, local.failed) == (12, 2, 0, 0)
    assert keys(points_of(tmp_path / "local.db")) == expected
    assert not parts_folder(tmp_path / "local.db").exists()  # every part merged, removed
    assert len(local.overhead_s) == 2

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    cluster.add_node(num_cpus=1, num_gpus=1)  # two nodes, a logical GPU each
    try:
        ray = RayLauncher(cluster.address, 1, "cpu", None)
        assert (ray.slots, ray.gpus) == (2, 1)  # a group a GPU, as on a GPU cluster
        summary = launch_sweep(spec(), tmp_path / "ray.db", ray, device="cpu")
    finally:
        cluster.shutdown()
    assert (summary.measured, summary.groups, summary.missing) == (12, 2, 0)
    assert keys(points_of(tmp_path / "ray.db")) == expected

    slurm = SlurmLauncher(tmp_path / "slurm", 1, "cpu", 2, executor="local")
    summary = launch_sweep(spec(), tmp_path / "slurm.db", slurm, device="cpu")
    assert (summary.measured, summary.groups, summary.missing) == (12, 2, 0)
    assert keys(points_of(tmp_path / "slurm.db")) == expected
    with Store(tmp_path / "slurm.db") as store:  # a run a group, each ended
        assert [r["status"] for r in store.runs()] == ["finished", "finished"]


def test_two_launchers_never_measure_one_point_twice(tmp_path):
    db = tmp_path / "r.db"
    half = launch_sweep(spec(batch_sizes=[1]), db, LocalLauncher(local_slots(1, "cpu", 2)),
                        device="cpu")
    assert half.measured == 4
    rest = launch_sweep(spec(), db, SlurmLauncher(tmp_path / "slurm", 1, "cpu", 2,
                                                  executor="local"), device="cpu")
    assert (rest.measured, rest.skipped) == (8, 4)
    again = launch_sweep(spec(), db, LocalLauncher(local_slots(1, "cpu", 2)), device="cpu")
    assert (again.measured, again.skipped, again.groups) == (0, 12, 0)
    points = points_of(db)
    assert len(points) == 12 and len(set(keys(points))) == 12


# -- losses ---------------------------------------------------------------------------------


def kill_group_when(launcher: LocalLauncher, parts: Path, point: str, times: int) -> dict:
    """In the background: kill the worker measuring `point` (SIGKILL to its process group)
    each time it begins it, `times` times; what it did."""
    seen = {"kills": 0}

    def watch():
        done: set[tuple[str, int]] = set()
        deadline = time.monotonic() + 240
        while seen["kills"] < times and time.monotonic() < deadline:
            for log in parts.glob("g*.log"):
                lines = log.read_text().splitlines()
                for n, line in enumerate(lines):
                    said = json.loads(line) if line.endswith("}") else {}
                    if said.get("current") == point and (log.name, n) not in done:
                        pid = launcher.pid(log.stem)
                        if pid is not None:
                            done.add((log.name, n))
                            os.killpg(pid, signal.SIGKILL)
                            seen["kills"] += 1
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return seen


def slow(**fields):
    """Points that take a while (so that a worker is caught in the middle of one)."""
    return spec(engines=[{"name": DOUBLE, "options": {"sleep_s": 0.5}}], **fields)


def sweep_killing(tmp_path, times: int, on_update=None):
    """A sweep of slow points over two local workers, whose worker measuring the sixth point
    is killed each time it begins it, `times` times: its store, summary and kills."""
    db = tmp_path / "r.db"
    launcher = LocalLauncher(local_slots(1, "cpu", 2))
    seen = kill_group_when(launcher, parts_folder(db), slow().tasks()[5].describe(), times)
    summary = launch_sweep(slow(), db, launcher, device="cpu", on_update=on_update)
    assert seen["kills"] == times
    return db, summary


def test_a_worker_killed_mid_sweep_loses_nothing_and_its_point_is_measured_again(
        tmp_path, workers_import_tests):
    while_running = []

    def look(p):  # the sweep's store, while groups still measure: points merged as they come
        if p.done + p.skipped < p.total:
            with Store(tmp_path / "r.db", read_only=True) as store:
                while_running.append(len(store.points()))

    db, summary = sweep_killing(tmp_path, 1, look)
    assert max(while_running) >= 6
    assert len(summary.lost) == 1 and "killed by SIGKILL" in summary.lost[0]
    assert (summary.missing, summary.failed, summary.failed_points) == (0, 0, [])
    points = points_of(db)
    assert len(points) == 12 and len(set(keys(points))) == 12  # each once, none lost
    assert summary.worker_restarts == 1 and summary.groups == 3
    with Store(db) as store:  # the killed group's run never ended; the others did
        assert sorted(r["status"] for r in store.runs()) == ["finished", "finished", "running"]


def test_a_point_lost_with_its_worker_twice_is_recorded_failed_and_the_rest_measured(
        tmp_path, workers_import_tests):
    db, summary = sweep_killing(tmp_path, 2)
    assert len(summary.lost) == 2
    assert summary.failed_points == [slow().tasks()[5].describe()] and summary.missing == 0
    points = points_of(db)
    failed = [p for p in points if p["status"] == "failed"]
    assert len(failed) == 1 and "lost with its worker 2 times" in failed[0]["error"]
    assert len([p for p in points if p["status"] == "ok"]) == 11


def test_a_driver_killed_mid_sweep_is_completed_by_the_same_command(tmp_path):
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text("models: [tiny]\nengines: [hf-eager]\ninput_tokens: [8, 16, 32]\n"
                         "output_tokens: [2, 4]\nbatch_sizes: [1, 2, 3]\nrepeats: 2\n"
                         "warmup: 1\nidle_s: 0\n")
    db = tmp_path / "r.db"
    command = [sys.executable, "-m", "infergy", "sweep", str(spec_path), "--db", str(db),
               "--device", "cpu", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    parts = parts_folder(db)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(
            log.read_text().count('"stored"') for log in parts.glob("g*.log")) < 4:
        time.sleep(0.1)
    proc.kill()  # the driver only: its workers see it gone and end
    proc.wait()
    time.sleep(2.5)
    assert list(parts.glob("g*.db")), "nothing was left to merge"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "left in" in done.stderr and "by an earlier run merged" in done.stderr
    points = points_of(db)
    assert len(points) == 18 and len(set(keys(points))) == 18  # once each: none repeated
    assert not parts.exists()


def test_a_part_still_being_written_stops_the_sweep_saying_who_holds_it(tmp_path):
    db = tmp_path / "r.db"
    parts = parts_folder(db)
    parts.mkdir()
    Store(parts / "g000-00000000.db").close()
    with StoreLock(parts / "g000-00000000.db"), pytest.raises(LaunchError) as caught:
        launch_sweep(spec(), db, LocalLauncher([None, None]), device="cpu")
    assert "g000-00000000.db" in str(caught.value) and "still" in str(caught.value)
    assert (parts / "g000-00000000.db").exists()  # kept


def test_a_dry_run_says_how_a_launched_sweep_cuts_its_plan(tmp_path):
    from typer.testing import CliRunner

    from infergy.cli import app

    args = ["sweep", "paper-bins", "-e", "vllm", "-e", "hf-eager", "--db",
            str(tmp_path / "r.db"), "--dry-run", "--device", "cpu"]
    said = " ".join(CliRunner().invoke(app, [*args, "--launcher", "slurm", "--workers",
                                             "8"]).output.split())
    assert ("Launched through slurm, cut for 8 worker(s): 8 point group(s) of 28, 28, 28, 28, "
            "28, 28, 28, 28 points, each of one engine start") in said
    said = " ".join(CliRunner().invoke(app, args).output.split())
    assert "Launched" not in said  # one local worker: the sweep itself


def test_the_cli_refuses_an_unknown_launcher_and_a_slurm_without_sbatch(tmp_path):
    from typer.testing import CliRunner

    from infergy.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["sweep", "paper-bins", "--db", str(tmp_path / "r.db"),
                                 "--launcher", "sge"])
    assert result.exit_code == 2 and "local, ray, slurm" in result.output
    if not any((Path(d) / "sbatch").exists() for d in os.environ["PATH"].split(os.pathsep)):
        result = runner.invoke(app, ["sweep", "paper-bins", "--db", str(tmp_path / "r.db"),
                                     "--launcher", "slurm"])
        assert result.exit_code == 2 and "sbatch is not on this machine's PATH" in result.output


def test_ctrl_c_stops_a_launched_sweep_after_its_points_in_flight_and_the_command_resumes(
        tmp_path):
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(f"models: [tiny]\nengines: [{{name: '{DOUBLE}', options: {{sleep_s: "
                         f"0.5}}}}]\ninput_tokens: [8, 16]\noutput_tokens: [2, 4]\n"
                         f"batch_sizes: [1, 2, 4]\nrepeats: 1\nwarmup: 0\nidle_s: 0\n")
    db = tmp_path / "r.db"
    command = [sys.executable, "-m", "infergy", "sweep", str(spec_path), "--db", str(db),
               "--device", "cpu", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(
            log.read_text().count('"stored"') for log in parts_folder(db).glob("g*.log")) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    said = " ".join(stderr.split())
    assert proc.returncode == 130, stderr
    assert "stopped by Ctrl-C" in said and "run the same command to resume" in said
    before = points_of(db)
    assert 2 <= len(before) < 12 and all(p["status"] == "ok" for p in before)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = points_of(db)
    assert len(after) == 12 and len(set(keys(after))) == 12
    assert {p["id"] for p in before} <= {p["id"] for p in after}


def test_a_sweep_store_that_cannot_be_written_stops_the_workers_and_keeps_their_stores(
        tmp_path, monkeypatch, workers_import_tests):
    """SQLite's "database or disk is full" on the sweep's store after the first merge (a test
    double of the failure, in the driver): every worker stops after its point, their stores
    stay in the parts folder, and the same command, once the store can be written, merges
    them and completes the sweep: nothing lost, nothing measured twice."""
    import sqlite3

    from infergy.run.launch import driver

    db = tmp_path / "r.db"
    real = driver.merge_rows
    calls = []

    def full_after_one(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "merge_rows", full_after_one)
    summary = launch_sweep(slow(), db, LocalLauncher(local_slots(1, "cpu", 2)), device="cpu")
    assert summary.store_error and "full" in summary.store_error and str(db) in \
        summary.store_error
    assert list(parts_folder(db).glob("g*.db"))  # kept for the next run
    monkeypatch.setattr(driver, "merge_rows", real)
    again = launch_sweep(slow(), db, LocalLauncher(local_slots(1, "cpu", 2)), device="cpu")
    assert again.missing == 0 and again.store_error is None
    points = points_of(db)
    assert len(points) == 12 and len(set(keys(points))) == 12
