"""Sweeps on a CPU with the tiny model, through the real worker process: every point recorded
once, resumed after SIGKILL, out of memory recorded, a lost worker replaced."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infergy.plan import MAX, parse_spec
from infergy.run import describe_plan
from infergy.run.sweep import Progress, run_sweep
from infergy.store import Store

DOUBLE = "simulated_engines:FailsByBatchEngine"  # a test double, imported by the worker
TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


def spec(**fields):
    data = {"models": ["tiny"], "engines": ["hf-eager"], "input_tokens": [8, 16],
            "output_tokens": [2, 4], "batch_sizes": [1, 2, 4], "repeats": 1, "warmup": 0,
            "idle_s": 0, **fields}
    return parse_spec(data, "test spec")


def keys(points):
    return [(p["engine"], p["engine_options"], p["batch_requested"], p["batch"],
             p["input_tokens"], p["output_tokens"]) for p in points]


def test_a_sweep_of_12_points_records_each_once_and_a_second_run_measures_none(tmp_path):
    updates, last = [], []
    with Store(tmp_path / "r.db") as store:
        summary = run_sweep(spec(), store, device="cpu", on_update=lambda p: (updates.append(
            (p.done, p.skipped, p.current)), last.append(p)))
        assert len(last[-1].load_times_s) == 1 and last[-1].loads_left == 0  # one start
        points = store.points()
        assert summary.measured == 12 and summary.failed == 0 and not summary.interrupted
        assert len(points) == 12 and len(set(keys(points))) == 12
        assert all(p["status"] == "ok" for p in points)
        assert {p["device"] for p in points} == {summary.device}
        assert summary.device.startswith("cpu:")
        assert updates[-1][0] == 12 and any("B=2" in u[2] for u in updates)
        again = run_sweep(spec(), store, device="cpu")
        assert (again.measured, again.skipped) == (0, 12)
        assert len(store.points()) == 12
        runs = store.runs()
        assert [r["status"] for r in runs] == ["finished", "finished"]
        result = json.loads(points[0]["result"])
        assert result["gpu_state_start"] is not None and result["provenance"]["versions"]


def test_the_time_left_counts_an_engine_start_once_a_start_not_every_point():
    """A vLLM start of 300 s in the first point made its ETA 23 x 310 s (2.0 h) on an H100
    (2026-12-06): each point's time leaves its engine start out, and the starts left are
    counted at the mean start's time."""
    from infergy.plan.spec import EngineChoice, Task
    from infergy.run.sweep.runner import starts_after

    left = Progress(total=24, done=1, point_times_s=[10.0], load_times_s=[300.0])
    assert left.eta_s == 23 * 10.0
    left.loads_left = 2
    assert left.eta_s == 23 * 10.0 + 2 * 300.0
    assert Progress(total=3).eta_s is None
    # A point's record is stored before it counts as done: its line leaves it out of what is
    # left, unless it is a B = max try that another try follows.
    assert left.eta_after({"ends": True}) == 22 * 10.0 + 2 * 300.0
    assert left.eta_after({"ends": False}) == left.eta_s
    last = Progress(total=2, done=1, point_times_s=[10.0])
    assert last.eta_after({"ends": True}) == 0.0
    engines = [EngineChoice("vllm"), EngineChoice("hf-eager")]
    tasks = [Task(m, e, "greedy", 1, 8, 8) for m in ("a", "b") for e in engines for _ in "xy"]
    assert starts_after(tasks) == [3, 3, 2, 2, 1, 1, 0, 0]
    # vLLM starts again for a speculation (its draft starts with it): a start too.
    speculating = [Task("a", engines[0], d, b, 8, 8) for d in
                   ("greedy", "speculative:draft=tiny-draft,lookahead=2") for b in (1, 8)]
    assert starts_after(speculating) == [1, 1, 0, 0]


def test_a_sweeps_minimum_window_reaches_its_points_and_counts_every_run(tmp_path):
    from infergy.run.sweep.runner import measuring_time

    # A run of the tiny model takes about 6 ms, and 0.2 s on a busy CPU: 50 ms of sleep in
    # each run keeps the run's time, and so the window's count, about the same on any machine.
    window_s = 1.0
    engine = {"name": DOUBLE, "options": {"sleep_s": 0.05}}
    short = spec(engines=[engine], input_tokens=[8], output_tokens=[2], batch_sizes=[1],
                 warmup=1, repeats=2, min_window_s=window_s)
    with Store(tmp_path / "r.db") as store:
        assert run_sweep(short, store, device="cpu").measured == 1
        (point,) = store.points()
    result = json.loads(point["result"])
    assert point["status"] == "ok" and result["runs_per_window"] > 1
    assert all(r["request"]["runs"] == result["runs_per_window"] for r in result["repeats"])
    per_run = sum(r["request"]["time_s"] for r in result["repeats"])
    # Both windows, every run in them (a window lasts about window_s: its count from the fastest
    # of the timed runs).
    assert measuring_time(result) >= result["runs_per_window"] * per_run > 2 * 0.5 * window_s


def test_max_under_beam_search_counts_a_sequence_a_beam(tmp_path):
    """The memory model's batch is in sequences; beam search holds `beams` of them a prompt."""
    engine = {"name": DOUBLE, "options": {"estimate": 8}}
    s = spec(engines=[engine], decodings=["beam:2"], input_tokens=[8], output_tokens=[2],
             batch_sizes=[MAX])
    with Store(tmp_path / "r.db") as store:
        summary = run_sweep(s, store, device="cpu")
        (point,) = store.points()
    assert summary.measured == 1 and point["status"] == "ok" and point["batch"] == 4
    search = json.loads(point["batch_search"])
    assert search["estimate"] == 4
    assert search["memory_model"] == {"method": "test double's fixed estimate", "sequences": 8,
                                      "beams": 2}


def test_out_of_memory_is_recorded_and_max_is_found_under_it(tmp_path):
    engine = {"name": DOUBLE, "options": {"oom_from_batch": 3, "estimate": 6}}
    s = spec(engines=[engine], input_tokens=[8], output_tokens=[2], batch_sizes=[1, 4, MAX])
    with Store(tmp_path / "r.db") as store:
        summary = run_sweep(s, store, device="cpu")
        points = store.points()
    assert summary.measured == 3 and summary.oom == 1 and summary.failed == 0
    by = [(p["batch_requested"], p["batch"], p["status"]) for p in points]
    # B = 4 ran out of memory; max: the estimate 6 gives 4 (a power of two), but 4 is known
    # not to fit, so the search starts at 2.
    assert by == [("1", 1, "ok"), ("4", 4, "oom"), ("max", 2, "ok")]
    search = json.loads(points[-1]["batch_search"])
    assert search["estimate"] == 6 and search["found"] == 2 and search["cap"] == 1024
    assert search["earlier_oom"] == [4] and search["tried"] == [{"batch": 2, "status": "ok"}]
    assert search["memory_model"] == {"method": "test double's fixed estimate"}


def test_max_halves_after_each_out_of_memory(tmp_path):
    engine = {"name": DOUBLE, "options": {"oom_from_batch": 3, "estimate": 100}}
    s = spec(engines=[engine], input_tokens=[8], output_tokens=[2], batch_sizes=[MAX],
             max_batch_cap=16)
    with Store(tmp_path / "r.db") as store:
        summary = run_sweep(s, store, device="cpu")
        points = store.points()
    assert summary.oom == 3 and summary.measured == 1
    assert [(p["batch"], p["status"]) for p in points] == [
        (16, "oom"), (8, "oom"), (4, "oom"), (2, "ok")]
    search = json.loads(points[-1]["batch_search"])
    assert search["found"] == 2 and [t["batch"] for t in search["tried"]] == [16, 8, 4, 2]


def test_a_resumed_max_search_starts_under_the_batch_that_ran_out_of_memory(tmp_path):
    engine = {"name": DOUBLE, "options": {"oom_from_batch": 2}}  # no estimate: start at cap
    s = spec(engines=[engine], input_tokens=[8], output_tokens=[2], batch_sizes=[MAX],
             max_batch_cap=8)
    with Store(tmp_path / "r.db") as store:
        run = store.start_run(device="x", meta={}, spec=None)
        first = run_sweep(s, store, device="cpu")
        points = store.points()
        assert [p["batch"] for p in points] == [8, 4, 2, 1]
        # A killed search left only its out-of-memory tries: the next one starts under them.
        store.db.execute("DELETE FROM points WHERE batch = 1")
        again = run_sweep(s, store, device="cpu")
        tried = json.loads(store.points()[-1]["batch_search"])
    assert first.oom == 3 and again.measured == 1 and run
    assert tried["earlier_oom"] == [2, 4, 8] and tried["tried"] == [{"batch": 1, "status": "ok"}]


def test_a_stored_max_is_searched_again_where_the_cap_changed_what_a_search_finds(tmp_path):
    """B = max found at a cap of 8 (nothing ran out of memory) is the cap's, not the card's:
    a cap of 4 (lowered) or 16 (raised) searches again; a cap of 8 or of 15 reuses it. A
    batch found under memory (8 ran out, 4 fits) stands under any cap holding it."""
    engine = {"name": DOUBLE, "options": {}}
    def sweep(store, cap, options=engine):
        return run_sweep(spec(engines=[options], input_tokens=[8], output_tokens=[2],
                              batch_sizes=[MAX], max_batch_cap=cap), store, device="cpu")
    def planned_done(store, cap):  # the dry run counts as the sweep does
        s = spec(engines=[engine], input_tokens=[8], output_tokens=[2], batch_sizes=[MAX],
                 max_batch_cap=cap)
        return describe_plan(s, store, store.points()[0]["device"]).done
    with Store(tmp_path / "r.db") as store:
        assert sweep(store, 8).measured == 1
        assert [planned_done(store, cap) for cap in (8, 15, 4, 16)] == [1, 1, 0, 0]
        assert (sweep(store, 8).measured, sweep(store, 15).measured) == (0, 0)
        assert sweep(store, 4).measured == 1 and sweep(store, 16).measured == 1
        assert [p["batch"] for p in store.points()] == [8, 4, 16]
    bounded = {"name": DOUBLE, "options": {"oom_from_batch": 8}}
    with Store(tmp_path / "b.db") as store:
        assert sweep(store, 16, bounded).measured == 1  # 16 and 8 out of memory, 4 fits
        assert (sweep(store, 64, bounded).measured, sweep(store, 4, bounded).measured) == (0, 0)
        assert sweep(store, 2, bounded).measured == 1


def test_a_worker_killed_by_sigkill_is_out_of_memory_and_the_search_goes_on(tmp_path):
    """The kernel's out-of-memory killer ends a worker that took the host's memory with
    SIGKILL: that batch is out of memory, and a new worker goes on with the search in the
    same run (a resumed sweep started it again at the killed batch, every time). A fixed
    batch so killed is out of memory too, and not measured again."""
    engine = {"name": DOUBLE, "options": {"killed_from_batch": 8}}
    def sweep(store, batches):
        return run_sweep(spec(engines=[engine], input_tokens=[8], output_tokens=[2],
                              batch_sizes=batches, max_batch_cap=16), store, device="cpu")
    with Store(tmp_path / "r.db") as store:
        summary = sweep(store, [MAX])
        points = store.points()
        assert sweep(store, [MAX]).measured == 0
    assert [(p["batch"], p["status"]) for p in points] == [(16, "oom"), (8, "oom"), (4, "ok")]
    assert summary.worker_restarts == 2 and summary.oom == 2 and summary.failed == 0
    assert "killed by SIGKILL" in points[0]["error"] and "taken as out of memory at this " \
        "batch" in points[0]["error"]
    with Store(tmp_path / "f.db") as store:
        fixed = sweep(store, [2, 8])
        assert [(p["batch"], p["status"]) for p in store.points()] == [(2, "ok"), (8, "oom")]
        assert (fixed.worker_restarts, sweep(store, [2, 8]).measured) == (1, 0)
    search = json.loads(points[-1]["batch_search"])
    assert search["found"] == 4 and search["tried"] == [
        {"batch": 16, "status": "oom"}, {"batch": 8, "status": "oom"},
        {"batch": 4, "status": "ok"}]


@pytest.mark.parametrize(("option", "error"), [
    ("crash_at_batch", "worker process died"),
    ("fatal_at_batch", "CUDA error"),
])
def test_a_lost_worker_is_replaced_and_the_sweep_goes_on(tmp_path, option, error):
    s = spec(engines=[{"name": DOUBLE, "options": {option: 2}}], input_tokens=[8],
             output_tokens=[2], batch_sizes=[1, 2, 4])
    with Store(tmp_path / "r.db") as store:
        summary = run_sweep(s, store, device="cpu")
        points = store.points()
    assert summary.worker_restarts == 1 and summary.failed == 1
    assert [(p["batch"], p["status"]) for p in points] == [(1, "ok"), (2, "failed"), (4, "ok")]
    assert error in points[1]["error"]


def test_a_tp_2_sweep_runs_two_ranks_that_agree_and_a_lost_follower_fails_one_point(tmp_path):
    """hf-eager split by transformers' plan on the CPU (gloo): the worker is rank 0 and starts
    rank 1. Points are recorded once, at tp 2, with both ranks' outcomes; both ranks run out
    of memory at B >= 4 and agree, so the B = max search halves; rank 1 killing itself at
    B = 3 fails that point with its exit, no process waits for it, and a new worker (with a
    new rank 1) measures the rest."""
    engine = {"name": DOUBLE, "options": {"oom_from_batch": 4, "estimate": 8,
                                          "crash_at_batch": 3, "crash_on_rank": 1}}
    s = spec(engines=[engine], input_tokens=[8], output_tokens=[2], batch_sizes=[1, 3, MAX],
             tp=2)
    with Store(tmp_path / "r.db") as store:
        summary = run_sweep(s, store, device="cpu")
        points = store.points()
    assert [(p["batch_requested"], p["batch"], p["status"], p["tp"]) for p in points] == [
        ("1", 1, "ok", 2), ("3", 3, "failed", 2),
        ("max", 8, "oom", 2), ("max", 4, "oom", 2), ("max", 2, "ok", 2)]
    assert "TP rank 1 of 2 died (exit code 9)" in points[1]["error"]
    assert summary.worker_restarts == 1 and summary.failed == 1 and summary.oom == 2
    for p in points[:1] + points[2:]:
        ranks = json.loads(p["result"])["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1]
        assert {r["status"] for r in ranks} == {p["status"]}  # every rank ended alike
        assert ranks[0]["edges"] == ranks[1]["edges"] > 0  # every window edge met by both
    search = json.loads(points[-1]["batch_search"])
    assert search["estimate"] == 8 and search["memory_model"]["ranks"] == [8, 8]


def test_a_tp_2_point_where_only_a_follower_runs_out_of_memory_is_out_of_memory(
        tmp_path, monkeypatch):
    """Rank 1 alone runs out of memory at B >= 4 while rank 0 goes on into the model's
    collectives (where it waits for rank 1, or its collective breaks): the point is out of
    memory all the same, with what each rank is known to have done, and the B = max search
    halves to a batch that fits."""
    import functools

    import infergy.run.sweep.runner as runner
    from infergy.run.sweep.jobs import WorkerSettings

    monkeypatch.setattr(runner, "WorkerSettings", functools.partial(WorkerSettings,
                                                                    grace_s=2.0))
    engine = {"name": DOUBLE, "options": {"oom_from_batch": 4, "oom_on_rank": 1,
                                          "estimate": 4}}
    s = spec(engines=[engine], input_tokens=[8], output_tokens=[2], batch_sizes=[MAX], tp=2)
    with Store(tmp_path / "r.db") as store:
        summary = run_sweep(s, store, device="cpu")
        points = store.points()
    assert [(p["batch_requested"], p["batch"], p["status"]) for p in points] == [
        ("max", 4, "oom"), ("max", 2, "ok")]
    assert summary.oom == 1 and summary.failed == 0
    assert "CUDA out of memory at batch 4" in points[0]["error"]
    ranks = json.loads(points[0]["result"])["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[1]["status"] == "oom"


def test_a_tp_2_sweep_with_a_cooldown_records_rank_0s_wait_before_each_point(tmp_path):
    """At tp 2 rank 0 cools down before its follower gets the point (the follower waits idle,
    not at a window's edge): every point is measured by both ranks alike and records the
    wait once, rank 0's. The model is loaded on both before the first cooldown: the first
    point's job holds no load window (as many edges as the second's), its record the load."""
    s = spec(input_tokens=[8], output_tokens=[2], batch_sizes=[1, 2], tp=2,
             cooldown={"max_s": 1, "within_w": 15})
    with Store(tmp_path / "r.db") as store:
        summary = run_sweep(s, store, device="cpu")
        points = store.points()
    assert summary.measured == 2 and summary.failed == 0 and summary.worker_restarts == 0
    for p in points:
        result = json.loads(p["result"])
        # A CPU sweep measures no GPU: nothing to wait for, and the wait is still recorded.
        assert result["cooldown"] == {"waited_s": 0.0, "power_w": {}, "reached": True}
        assert [(r["rank"], r["status"]) for r in result["ranks"]] == [(0, "ok"), (1, "ok")]
        assert result["ranks"][0]["edges"] == result["ranks"][1]["edges"] > 0
    first, second = (json.loads(p["result"]) for p in points)
    assert first["ranks"][0]["edges"] == second["ranks"][0]["edges"]
    assert first["load"]["time_s"] > 0 and second["load"] is None


def test_a_tp_2_sweep_with_a_cooldown_records_a_model_that_cannot_start_as_failed(tmp_path):
    engine = {"name": DOUBLE, "options": {"fail_load": True}}
    s = spec(engines=[engine], input_tokens=[8], output_tokens=[2], batch_sizes=[1, 2], tp=2,
             cooldown={"max_s": 1, "within_w": 15})
    with Store(tmp_path / "r.db") as store:
        summary = run_sweep(s, store, device="cpu")
        points = store.points()
    assert summary.failed == 2 and summary.worker_restarts == 0
    assert all("could not start (simulated)" in p["error"] for p in points)
    # A fatal CUDA error in that load: the worker's context cannot be trusted, it leaves.
    fatal = {"name": DOUBLE, "options": {"fail_load": "CUDA error: an illegal memory access "
                                                      "was encountered (simulated)"}}
    with Store(tmp_path / "f.db") as store:
        summary = run_sweep(spec(engines=[fatal], input_tokens=[8], output_tokens=[2],
                                 batch_sizes=[1, 2], tp=2, cooldown={"max_s": 1, "within_w": 15}),
                            store, device="cpu")
    assert summary.failed == 2 and summary.worker_restarts >= 1


def wait_for_points(db: Path, count: int, timeout_s: float = 120) -> None:
    """Until the store at `db` holds `count` points (a sweep in another process writes it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if db.exists():
            with contextlib.suppress(sqlite3.OperationalError):
                if sqlite3.connect(db).execute("SELECT count(*) FROM points").fetchone()[0] \
                        >= count:
                    return


def _sweep_command(spec_path: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "infergy", "sweep", str(spec_path), "--db", str(db),
            "--device", "cpu"]


SPEC_18 = ("models: [tiny]\nengines: [hf-eager]\ninput_tokens: [8, 16, 32]\n"
           "output_tokens: [2, 4]\nbatch_sizes: [1, 2, 3]\nrepeats: 2\nwarmup: 1\nidle_s: 0\n")


def start_sweep(tmp_path, spec_text: str = SPEC_18
                ) -> tuple[subprocess.Popen, Path, Path, dict]:
    """`infergy sweep` of 18 points in a process (and session) of its own."""
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(spec_text)
    db = tmp_path / "r.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    proc = subprocess.Popen(_sweep_command(spec_path, db), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, db, spec_path, env


def test_a_sweep_killed_with_sigkill_resumes_losing_and_repeating_nothing(tmp_path):
    proc, db, spec_path, env = start_sweep(tmp_path)
    wait_for_points(db, 4)
    # The sweep, mid-run. Its worker has a process group of its own: it finishes its point,
    # finds its parent gone and exits, writing nothing (only the parent writes the store).
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store(db) as store:
        before = store.points()
    assert 4 <= len(before) < 18, "the sweep was not killed in the middle"
    done = subprocess.run(_sweep_command(spec_path, db), env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Store(db) as store:
        after = store.points()
        runs = store.runs()
    assert len(after) == 18 and len(set(keys(after))) == 18
    assert {p["id"] for p in before} <= {p["id"] for p in after}  # nothing lost
    assert f"{len(before)} already in" in done.stderr
    assert [r["status"] for r in runs] == ["running", "finished"]  # the killed run never ended


def test_ctrl_c_ends_the_sweep_after_the_current_point(tmp_path):
    proc, db, _, _ = start_sweep(tmp_path)
    wait_for_points(db, 1)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    said = " ".join(stderr.split())
    assert "stopped by Ctrl-C, after the point in flight" in said
    assert f"run the same command to resume: infergy sweep {tmp_path / 's.yaml'}" in said
    assert "Traceback" not in stderr
    with Store(db) as store:
        points = store.points()
        (run,) = store.runs()
    assert 1 <= len(points) < 18 and all(p["status"] == "ok" for p in points)
    assert run["status"] == "interrupted"


@pytest.mark.parametrize(("own", "follower", "status", "by"), [
    ("failed", "oom", "oom", 1),  # rank 0's collective broke on rank 1's out of memory
    ("ok", "oom", "oom", 1),
    ("ok", "failed", "failed", 1),
    ("oom", "failed", "oom", 0),  # rank 0's own out of memory stands
])
def test_the_ranks_of_a_point_agree_out_of_memory_where_any_ran_out(own, follower, status,
                                                                    by):
    """A sweep's worker at TP 2 (rank 0's agreement alone, no process started): out of
    memory on any rank is the point's, so a batch-size search halves for every rank."""
    from infergy.plan import Point
    from infergy.run.sweep.jobs import Job, JobRunner, WorkerSettings

    job = Job(Point("tiny", "hf-eager", 8, 8, 4, "greedy"))
    worker = JobRunner(None, WorkerSettings(device="cpu", tp=2, ranks=2), session=None)
    errors = {"ok": None, "oom": "OutOfMemoryError: CUDA out of memory", "failed": "boom"}
    mine = {"status": own, "error": errors[own], "energy_j": 1.0}
    outcomes = [{"status": own, "error": errors[own], "edges": 3},
                {"status": follower, "error": errors[follower], "edges": 3}]
    reply = worker._agree("measure", job, mine, outcomes)
    assert reply["status"] == status
    assert (reply["error"] or "").startswith("TP rank 1 of 2: ") == (by == 1)
    assert [r["status"] for r in reply["ranks"]] == [own, follower]


def _alive(pid: int) -> bool:
    """Is process `pid` running (a zombie is not)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _descendants(pid: int, depth: int | None = None) -> dict[int, str]:
    """The processes under `pid` (with `depth`, that many generations down), read from
    /proc: pid -> command line."""
    parents, found = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    wanted = {pid}
    for _ in itertools.count() if depth is None else range(depth):
        new = {p for p, parent in parents.items() if parent in wanted and p not in wanted}
        if not new:
            break
        wanted |= new
    for p in wanted - {pid}:
        with contextlib.suppress(OSError):
            found[p] = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


@pytest.mark.parametrize("to", ["the sweep", "every process"])
def test_sigterm_abandons_the_point_in_flight_marks_the_run_and_leaves_no_worker(tmp_path, to):
    """A scheduler's cancel, `timeout` or `docker stop`: SIGTERM to the sweep (or, as Slurm
    does, to every process of it, its worker included) ends it at once: the point in flight
    given up unstored, the worker gone, the run marked interrupted, the resume hint printed,
    exit 143."""
    proc, db, spec_path, _ = start_sweep(tmp_path)
    wait_for_points(db, 1)
    # The sweep's own children: a child the worker forks shows the worker's command line
    # until it runs its own (a `git status` for the provenance, in CI on 2026-12-06).
    workers = [p for p, cmd in _descendants(proc.pid, depth=1).items()
               if "spawn_main" in cmd and "resource_tracker" not in cmd]
    assert len(workers) == 1, _descendants(proc.pid)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    if to == "every process":
        os.kill(workers[0], signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    said = " ".join(stderr.split())
    assert proc.returncode == 143, stderr
    assert time.monotonic() - sent < 15  # at once, not after the point (nor a grace period)
    assert "Traceback" not in stderr
    assert "stopped by SIGTERM" in said and "the run is marked interrupted" in said
    assert f"run the same command to resume: infergy sweep {spec_path} --db {db} " \
           f"--device cpu" in said
    deadline = time.monotonic() + 10
    while _alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers[0]), "the worker outlived its sweep"
    with Store(db) as store:
        points = store.points()
        (run,) = store.runs()
    assert run["status"] == "interrupted" and run["ended"]
    assert 1 <= len(points) < 18 and all(p["status"] == "ok" for p in points)
    assert len(set(keys(points))) == len(points)
    assert f"{18 - len(points)} of the plan's 18 points are not in" in said


def test_a_second_sweep_into_a_store_being_written_is_refused_at_once(tmp_path):
    """One writer sweep a store: the second exits 2 saying who writes it since when, and
    what to do; the first measures every point once."""
    proc, db, spec_path, env = start_sweep(tmp_path)
    lock = db.with_name(db.name + ".lock")
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    second = subprocess.run(_sweep_command(spec_path, db), env=env, capture_output=True,
                            text=True, timeout=120)
    said = " ".join(second.stderr.split())
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    assert f"{db}: another infergy sweep is writing this store (sweep process {proc.pid} on " \
           in said and ", since 20" in said
    assert "wait for it to end, or give each process a store of its own (--db) and merge " \
           "them afterwards with `infergy results merge`" in said
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "done: every point of the plan (18) is in" in " ".join(stderr.split())
    with Store(db) as store:
        points = store.points()
        assert len(store.runs()) == 1  # the refused sweep began no run
    assert len(points) == 18 and len(set(keys(points))) == 18
    assert not lock.exists()  # released, and its file gone


def test_a_store_s_lock_is_held_once_and_freed_when_its_holder_is_killed(tmp_path):
    from infergy.store import StoreError
    from infergy.store.lock import StoreBusyError, StoreLock

    db = tmp_path / "r.db"
    with StoreLock(db), pytest.raises(StoreBusyError,
                                      match=rf"process {os.getpid()} on .*, since 20"):
        StoreLock(db).acquire()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from infergy.store.lock import StoreLock; "
         "StoreLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
         str(db)], env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusyError, match=rf"sweep process {holder.pid} on "):
            StoreLock(db).acquire()
    finally:
        holder.kill()  # SIGKILL: no chance to release it
        holder.wait()
    with StoreLock(db) as lock:  # the system released it with its process
        assert lock.fd is not None
    # A lock file that cannot be made is a StoreError naming it
    with pytest.raises(StoreError, match=r"its lock file .* cannot be made"):
        StoreLock(tmp_path / "no-such-folder" / "r.db").acquire()
    # A link to the store takes the store's own lock: two sweeps wrote every point twice
    (tmp_path / "link.db").symlink_to(db)
    with StoreLock(db), pytest.raises(StoreBusyError):
        StoreLock(tmp_path / "link.db").acquire()


def test_shards_each_into_its_own_store_stopped_rerun_and_merged_measure_each_point_once(
        tmp_path):
    """The by-hand several-GPU recipe: a shard a store, each copy given the others' points
    (as the shipped profiles' first sweeps did), one shard stopped mid-way and run again:
    merged, every point of the plan once. A shard is of the whole plan, whatever its store
    holds."""
    from infergy.store import merge

    def shard(k: int):
        return dataclasses.replace(spec(), shard=(k, 2))

    a, b = tmp_path / "a.db", tmp_path / "b.db"
    with Store(a) as store:
        first = run_sweep(shard(0), store, device="cpu")
        # Stopped before its last point: that point never stored
        store.db.execute("DELETE FROM points WHERE rowid = (SELECT max(rowid) FROM points)")
    merge([a], b)
    with Store(b) as store:
        other = run_sweep(shard(1), store, device="cpu")
    merge([b], a)
    with Store(a) as store:
        again = run_sweep(shard(0), store, device="cpu")
    assert (first.measured, other.measured, again.measured) == (6, 6, 1)
    assert other.skipped == 0 and again.skipped == 5
    assert all(s.complete and s.missing == 0 for s in (first, other, again))
    merge([a, b], tmp_path / "all.db")
    with Store(tmp_path / "all.db") as store:
        points = store.points()
    assert len(points) == 12 and len(set(keys(points))) == 12


def test_a_store_that_cannot_be_written_mid_sweep_stops_it_keeping_what_was_stored(
        tmp_path):
    """SQLite's own "database or disk is full" (its page limit reached after the first point):
    the sweep stops there, says why, writes nothing more, and what it stored stays."""
    with Store(tmp_path / "r.db") as store:
        def fill(progress) -> None:
            if progress.stored:  # the store full from now on
                pages = store.db.execute("PRAGMA page_count").fetchone()[0]
                store.db.execute(f"PRAGMA max_page_count = {pages}")

        summary = run_sweep(spec(), store, device="cpu", on_update=fill)
        assert summary.store_error and "full" in summary.store_error
        assert str(tmp_path / "r.db") in summary.store_error
        assert not summary.complete and summary.measured == 1
        (point,) = store.points()
        (run,) = store.runs()
    assert point["status"] == "ok" and run["status"] == "running"  # nothing more written
