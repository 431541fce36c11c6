"""Bad stores and bad places to write: a store infergy refuses is left as it was, reading
needs no write access, a damaged store is said clearly by every command that opens it, two
processes can create one store, a full disk loses nothing, and merge and export never write
over or duplicate what they read."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infergy.cli import app
from infergy.store import SCHEMA_VERSION, Store, StoreError, export, merge

runner = CliRunner()
DEVICE = "GPU-simulated-0"
META = {"gpus": [{"model": "Simulated GPU", "uuid": DEVICE}], "host": {"hostname": "h"}}
SHIPPED = Path(__file__).parents[1] / "src/infergy/profile/shipped/llama-3.1-8b-h100.db"


def flat(text: str) -> str:
    return " ".join(text.split())


def point(batch=1, status="ok", model="llama-3.1-8b", pad=0, i=8, o=4) -> dict:
    p = {"model": model, "engine": "hf-eager", "batch": batch, "input_tokens": i,
         "output_tokens": o, "decoding": "greedy", "tp": 1, "dtype": "bfloat16"}
    return {"point": p, "status": status, "energy_j": 4.0 * batch if status == "ok" else None,
            "j_per_output_token": 1.0, "time_s": 0.1, "pad": "x" * pad}


def write_store(path, batches=(1, 2), *, device=DEVICE, status="ok", pad=0, requested=None):
    """A store of one run: a point per batch size; the points' ids."""
    with Store(path) as store:
        run = store.start_run(device=device, meta={**META, "gpus": [{**META["gpus"][0],
                                                                     "uuid": device}]},
                              spec=None)
        for batch in batches:
            store.add_point(run, device, point(batch, status, pad=pad), engine_options="{}",
                            batch_requested=batch if requested is None else requested)
        store.end_run(run, "finished")
        return [p["id"] for p in store.points()]


def files(path: Path) -> dict[str, bytes | None]:
    """The bytes of a store and of every file SQLite may put beside it (None: absent)."""
    return {suffix: (Path(f"{path}{suffix}").read_bytes()
                     if Path(f"{path}{suffix}").exists() else None)
            for suffix in ("", "-wal", "-shm", "-journal")}


# -- stores infergy refuses, and damaged ones ----------------------------------------------------

def _sql(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def _garbage_in_the_middle(path: Path) -> None:
    write_store(path, range(1, 301), pad=2000)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\xa5" * 40_000)


def _truncated(path: Path) -> None:
    write_store(path, range(1, 301), pad=2000)
    os.truncate(path, path.stat().st_size // 3)


def _bad_result(text: str):
    def make(path: Path) -> None:
        write_store(path, (1, 2), requested="max")  # read by estimate too
        _sql(path, f"UPDATE points SET result = '{text}' WHERE batch = 2")
    return make


DAMAGED = {
    "malformed": (_garbage_in_the_middle, "database disk image is malformed"),
    "truncated": (_truncated, "database disk image is malformed"),
    "empty meta": (lambda p: (write_store(p), _sql(p, "DELETE FROM meta")),
                   "holds no schema_version"),
    "version a word": (lambda p: (write_store(p), _sql(p, "UPDATE meta SET value = 'two'")),
                       "schema_version 'two' in its meta table is not a whole number"),
    "version a fraction": (lambda p: (write_store(p), _sql(p, "UPDATE meta SET value = '2.5'")),
                           "schema_version '2.5'"),
    "version zero": (lambda p: (write_store(p), _sql(p, "UPDATE meta SET value = '0'")),
                     "schema_version '0'"),
    "result not JSON": (_bad_result("{oops"), "the result of point"),
    "result a list": (_bad_result("[1, 2]"), "is not a JSON object"),
    "header cut": (lambda p: (write_store(p), os.truncate(p, 60)), "cut short"),
    "no points table": (lambda p: (write_store(p), _sql(p, "DROP TABLE points")),
                        "no points table"),
}
REFUSED = {
    "another application's": (lambda p: _sql(p, "CREATE TABLE invoices (n)",
                                             "INSERT INTO invoices VALUES (1)"),
                              "not an infergy results store (its tables: invoices)"),
    "newer schema": (lambda p: (write_store(p), _sql(
        p, f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}'")), "written by a newer infergy"),
    "not SQLite": (lambda p: p.write_text("model,energy\nx,1\n" * 50), "not an SQLite file"),
}


@pytest.mark.parametrize("kind", [*DAMAGED, *REFUSED])
def test_a_refused_or_damaged_store_is_a_clear_error_and_left_unchanged(tmp_path, kind):
    make, said = {**DAMAGED, **REFUSED}[kind]
    path = tmp_path / "s.db"
    make(path)
    before = files(path)
    assert before["-wal"] is None and before["-shm"] is None
    for opening in (lambda: Store(path), lambda: Store(path, create=False, read_only=True)):
        with pytest.raises(StoreError) as caught, opening() as store:
            store.runs(), store.points(), store.replays()  # a damaged page: when read
        assert str(path) in str(caught.value) and said in str(caught.value)
    with pytest.raises(StoreError, match=said.replace("(", r"\(").replace(")", r"\)")):
        merge([path], tmp_path / "merged.db")
    assert not (tmp_path / "merged.db").exists()  # every source read before the target made
    assert files(path) == before


@pytest.mark.parametrize("kind", [*DAMAGED, *REFUSED])
def test_every_command_opening_a_damaged_store_says_so_without_a_traceback(tmp_path, kind):
    make, said = {**DAMAGED, **REFUSED}[kind]
    path = tmp_path / "s.db"
    make(path)
    before = files(path)
    commands = {
        "list": (["results", "list", "--db", str(path)], True),
        "summary": (["results", "summary", "--db", str(path)], True),
        "export": (["results", "export", str(tmp_path / "out.csv"), "--db", str(path)], True),
        "show": (["results", "show", "", "--db", str(path)], False),
        "merge": (["results", "merge", str(path), "-o", str(tmp_path / "m.db")], True),
        "estimate": (["estimate", "-t", "azure-code-2023", "-m", "llama-3.1-8b", "-e",
                      "hf-eager", "-p", str(path)], True),
        "report": (["report", "--db", str(path), "-o", str(tmp_path / "report")], True),
        "dry run": (["sweep", "batch-sweep", "-m", "llama-3.1-8b", "-e", "hf-eager",
                     "--dry-run", "--db", str(path)], False),
    }
    try:
        Store(path).close()
    except StoreError:  # refused when opened: a sweep stops before measuring anything
        commands["sweep"] = (["sweep", "batch-sweep", "-m", "tiny", "--device", "cpu",
                              "--db", str(path)], True)
    for name, (args, reads_all) in commands.items():
        result = runner.invoke(app, args)
        text = flat(result.output)
        assert "Traceback" not in result.output, (name, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            name, result.exception)
        if reads_all:
            assert result.exit_code == 2 and f"error: {path}" in text, (name, text)
            assert said in text, (name, text)
        elif result.exit_code != 0:  # where it read what is damaged
            assert result.exit_code == 2 and f"error: {path}" in text, (name, text)
    assert files(path) == before
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "m.db").exists()


def test_a_point_whose_result_is_not_json_is_named(tmp_path):
    path = tmp_path / "s.db"
    ids = write_store(path, (1, 2))
    _sql(path, "UPDATE points SET result = 'nan nan' WHERE batch = 2")
    listed = runner.invoke(app, ["results", "list", "--db", str(path)])
    assert listed.exit_code == 2
    assert f"the result of point {ids[1]} is not a JSON object ('nan nan')" in flat(
        listed.output)
    shown = runner.invoke(app, ["results", "show", ids[0][:8], "--db", str(path)])
    assert shown.exit_code == 0, shown.output  # the other point reads as it did


def test_a_zero_byte_file_is_a_new_store_for_a_writer_and_no_results_for_a_reader(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    listed = runner.invoke(app, ["results", "list", "--db", str(path)])
    assert listed.exit_code == 0 and f"{path}: holds no points" in flat(listed.output)
    summary = runner.invoke(app, ["results", "summary", "--db", str(path)])
    assert summary.exit_code == 2 and "no measured points" in flat(summary.output)
    estimate = runner.invoke(app, ["estimate", "-t", "azure-code-2023", "-m", "llama-3.1-8b",
                                   "-e", "hf-eager", "-p", str(path)])
    assert estimate.exit_code == 2 and "no B = max points" in flat(estimate.output)
    assert path.read_bytes() == b"" and files(path)["-wal"] is None
    with (pytest.raises(StoreError, match="opened for reading only"),
          Store(path, create=False, read_only=True) as store):
        store.start_run(device=DEVICE, meta=META, spec=None)
    with Store(path) as store:  # a writer makes it a store
        assert store.points() == []
    with Store(path, create=False, read_only=True) as store:
        assert store.version == SCHEMA_VERSION


# -- reading needs no write access --------------------------------------------------------------

@contextlib.contextmanager
def unwritable(*paths: Path):
    """The files and folders `paths` made unwritable for this process: mode 0444 (0555 a
    folder), or, as root (whom file modes do not stop), the immutable attribute."""
    done = []
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        try:
            for p in paths:
                p.chmod(0o555 if p.is_dir() else 0o444)
                done.append(p)
            yield
        finally:
            for p in reversed(done):
                p.chmod(modes[p])
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root, whom file modes do not stop, without chattr")
    try:
        for p in paths:
            made = subprocess.run(["chattr", "+i", str(p)], capture_output=True, text=True)
            if made.returncode:
                pytest.skip(f"running as root, whom file modes do not stop, and this file "
                            f"system has no immutable attribute ({made.stderr.strip()})")
            done.append(p)
        yield
    finally:
        for p in reversed(done):
            subprocess.run(["chattr", "-i", str(p)], check=True)


def _reading_commands(path: Path, elsewhere: Path, point_id: str) -> dict[str, list[str]]:
    return {
        "list": ["results", "list", "--db", str(path)],
        "show": ["results", "show", point_id[:8], "--db", str(path)],
        "summary": ["results", "summary", "--db", str(path)],
        "export": ["results", "export", str(elsewhere / "p.csv"), "--db", str(path)],
        "merge from": ["results", "merge", str(path), "-o", str(elsewhere / "m.db")],
        "dry run": ["sweep", "batch-sweep", "-m", "llama-3.1-8b", "-e", "hf-eager",
                    "--dry-run", "--db", str(path)],
        "estimate": ["estimate", "-t", "azure-code-2023", "-m", "llama-3.1-8b", "-e",
                     "hf-eager", "-p", str(path)],
        "report": ["report", "--db", str(path), "-o", str(elsewhere / "report")],
    }


def _profile(path: Path) -> str:
    """A small copy of the shipped profile at `path` (its hf-eager B = max points: enough to
    estimate and report); the id of one of its points."""
    shutil.copy(SHIPPED, path)
    _sql(path, "DELETE FROM points WHERE NOT (engine = 'hf-eager' AND batch_requested = 'max')",
         "DELETE FROM replays")
    with Store(path, create=False, read_only=True) as store:
        return store.points()[0]["id"]


def test_a_store_that_cannot_be_written_is_read_by_every_reading_command(tmp_path):
    """A store of mode 0444 in a read-only folder (the shipped profile installed by root, read
    by another user): read by every command that reads, and not changed."""
    folder, elsewhere = tmp_path / "ro", tmp_path / "out"
    folder.mkdir()
    elsewhere.mkdir()
    path = folder / "p.db"
    point_id = _profile(path)
    before = files(path)
    with unwritable(path, folder):
        with pytest.raises(StoreError, match="cannot be written"):
            Store(path)
        with Store(path, create=False, read_only=True) as store:
            assert store.points()
            with pytest.raises(StoreError, match="opened for reading only"):
                store.start_run(device=DEVICE, meta=META, spec=None)
        for name, args in _reading_commands(path, elsewhere, point_id).items():
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (name, result.output)
        sweep = runner.invoke(app, ["sweep", "batch-sweep", "-m", "tiny", "--device", "cpu",
                                    "--db", str(path)])
        assert sweep.exit_code == 2 and "cannot be written" in flat(sweep.output)
    assert files(path) == before and os.listdir(folder) == ["p.db"]
    assert (elsewhere / "p.csv").exists() and (elsewhere / "report" / "index.html").exists()


def test_a_store_left_with_its_log_in_a_read_only_folder_is_read(tmp_path):
    """The files a killed writer leaves (the store, its write-ahead log and shared memory),
    none of them writable: read, what the log holds included."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "p.db"
    _profile(tmp_path / "w.db")
    with Store(tmp_path / "w.db") as writer:  # copied while it writes
        writer.start_run(device=DEVICE, meta=META, spec=None)
        for suffix in ("", "-wal", "-shm"):
            shutil.copy(f"{tmp_path / 'w.db'}{suffix}", f"{path}{suffix}")
    before = files(path)
    assert before["-wal"]
    with unwritable(path, Path(f"{path}-wal"), Path(f"{path}-shm"), folder):
        with Store(path, create=False, read_only=True) as store:
            assert store.points() and DEVICE in {r["device"] for r in store.runs()}
        for args in (["results", "list", "--db", str(path)],
                     ["estimate", "-t", "azure-code-2023", "-m", "llama-3.1-8b", "-e",
                      "hf-eager", "-p", str(path)]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
    assert files(path) == before


# -- two creators at once ------------------------------------------------------------------------

ROUNDS = 10


def _create(folder: str, barrier, answers) -> None:
    """Create store n of `folder` at the moment the other process does, ROUNDS times."""
    for n in range(ROUNDS):
        barrier.wait()
        try:
            with Store(Path(folder) / f"new{n}.db") as store:
                run = store.start_run(device=DEVICE, meta=META, spec=None)
                store.add_point(run, DEVICE, point(), engine_options="{}", batch_requested=1)
            answers.put((n, "ok"))
        except Exception as err:  # the test says which
            answers.put((n, f"{type(err).__name__}: {err}"))


def test_two_processes_creating_one_store_at_once_both_succeed(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, answers = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_create, args=(str(tmp_path), barrier, answers))
                 for _ in range(2)]
    for process in processes:
        process.start()
    said = sorted(answers.get(timeout=120) for _ in range(2 * ROUNDS))
    for process in processes:
        process.join(60)
    assert said == sorted([(n, "ok") for n in range(ROUNDS)] * 2)
    for n in range(ROUNDS):
        with Store(tmp_path / f"new{n}.db", create=False, read_only=True) as store:
            assert len(store.points()) == 2 and len(store.runs()) == 2


# -- a full disk -------------------------------------------------------------------------------

class DiskFullConnection:
    """Test double: an sqlite3 connection whose statements starting with one of `failing`
    fail as SQLite fails on a full disk; everything else goes to the real connection."""

    def __init__(self, db: sqlite3.Connection, failing: tuple[str, ...]):
        self.db, self.failing = db, failing

    def execute(self, sql: str, *args):
        if sql.lstrip().upper().startswith(self.failing):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


@pytest.mark.parametrize("failing", [("INSERT",), ("UPDATE",), ("COMMIT",)])
def test_a_full_disk_is_a_clear_error_and_loses_nothing_committed(tmp_path, failing):
    path = tmp_path / "s.db"
    write_store(path, (1, 2))
    with Store(path) as store:
        real = store.db
        store.db = DiskFullConnection(real, failing)
        with pytest.raises(StoreError) as caught:
            run = store.record_run(META, None, points=[(point(4), "{}", 4)])
            store.end_run(run, "finished")
        assert str(caught.value) == (f"disk full writing {path}: nothing already stored is "
                                     f"lost; free space and run the same command again to "
                                     f"resume")
        assert not real.in_transaction
        store.db = real
    with Store(path, create=False, read_only=True) as store:  # only the end of the run lost
        kept = [1, 2, 4] if failing == ("UPDATE",) else [1, 2]
        assert sorted(p["batch"] for p in store.points()) == kept


def test_sqlite_s_disk_i_o_error_on_a_full_disk_says_the_disk_is_full(tmp_path, monkeypatch):
    """Opening a store on a full disk fails creating its write-ahead log, and SQLite says
    only "disk I/O error": with the folder's free space under 16 MiB it is said as a full
    disk; with room, as the disk refusing, with the space free."""
    from infergy.store import opening

    path = tmp_path / "s.db"
    said = opening.said(path, sqlite3.OperationalError("disk I/O error"))
    assert str(said).startswith(f"{path}: the disk refused a read or write (disk I/O error, ")
    assert "MiB free there): check the folder's free space and file system" in str(said)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(opening.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    said = opening.said(path, sqlite3.OperationalError("disk I/O error"))
    assert str(said) == (f"disk full writing {path}: nothing already stored is lost; free "
                         f"space and run the same command again to resume")


def test_a_full_disk_while_exporting_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    write_store(path)

    def full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", full)
    result = runner.invoke(app, ["results", "export", str(tmp_path / "p.csv"), "--db",
                                 str(path)])
    assert result.exit_code == 2
    assert f"disk full writing {tmp_path / 'p.csv'}: nothing was written" in flat(result.output)
    assert sorted(os.listdir(tmp_path)) == ["s.db"]


# -- export and merge never write over what they read ------------------------------------------

def test_export_never_writes_over_a_store_or_the_store_read(tmp_path, monkeypatch):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    write_store(a)
    write_store(b, (4,))
    other = tmp_path / "other.sqlite"
    _sql(other, "CREATE TABLE t (x)")
    (tmp_path / "link.db").symlink_to(a)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    before = {p: files(p) for p in (a, b, other)}
    for out, said in ((a, "is the store being read"), ("../a.db", "is the store being read"),
                      (tmp_path / "link.db", "is the store being read"),
                      (b, "is an SQLite file"), (other, "is an SQLite file"),
                      (tmp_path / "sub", "is a folder")):
        for fmt in ("csv", "json"):
            result = runner.invoke(app, ["results", "export", str(out), "--db", "../a.db",
                                         "--format", fmt])
            assert result.exit_code == 2 and said in flat(result.output), (out, result.output)
    with Store(a, create=False, read_only=True) as store:  # the library refuses them too
        for out in (a, tmp_path / "link.db", b):
            with pytest.raises(StoreError, match=r"is the store being exported|SQLite file"):
                export(store, out, "csv")
    assert {p: files(p) for p in (a, b, other)} == before
    made = runner.invoke(app, ["results", "export", str(tmp_path / "new/dir/p.json"), "--db",
                               str(a), "--format", "json"])
    assert made.exit_code == 0 and len(json.loads((tmp_path / "new/dir/p.json").read_text())) == 2
    assert os.listdir(tmp_path / "new/dir") == ["p.json"]  # nothing left beside it


def test_merge_never_merges_a_store_into_itself(tmp_path, monkeypatch):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    write_store(a)
    write_store(b, (4,))
    (tmp_path / "link.db").symlink_to(a)
    monkeypatch.chdir(tmp_path)
    before = {p: files(p) for p in (a, b)}
    for target in ("a.db", "./a.db", str(a), "link.db"):
        result = runner.invoke(app, ["results", "merge", str(b), "a.db", "-o", target])
        assert result.exit_code == 2 and "is one of the stores merged" in flat(result.output)
    (tmp_path / "notes.csv").write_text("a,b\n")
    result = runner.invoke(app, ["results", "merge", "b.db", "-o", "notes.csv"])
    assert result.exit_code == 2 and "not an SQLite file" in flat(result.output)
    assert (tmp_path / "notes.csv").read_text() == "a,b\n"
    assert {p: files(p) for p in (a, b)} == before
    result = runner.invoke(app, ["results", "merge", "b.db", "-o", "a.db"])  # a store: its use
    assert result.exit_code == 0 and "1 points and 1 runs added to a.db" in flat(result.output)


# -- merge never duplicates a measurement ------------------------------------------------------

def test_merge_skips_a_point_measured_again_by_the_same_gpu(tmp_path):
    a, b, c = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    write_store(a, (1, 2))
    write_store(b, (2, 4))  # B = 2 measured in both stores of one card: once in the merge
    added = merge([a, b], c)
    assert (added.points, added.duplicates) == (3, 1)
    with Store(c, create=False, read_only=True) as store:
        assert sorted(p["batch"] for p in store.points()) == [1, 2, 4]
    result = runner.invoke(app, ["results", "merge", str(a), str(b), "-o",
                                 str(tmp_path / "d.db")])
    assert result.exit_code == 0
    assert "3 points and 2 runs added" in flat(result.output)
    assert "1 points skipped as duplicates" in flat(result.output)


def test_merge_keeps_points_of_other_gpus_and_measured_over_failed(tmp_path):
    a, b, c = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    write_store(a, (1, 2))
    write_store(b, (1, 2), device="GPU-simulated-1")  # another card: not duplicates
    failed, oom = tmp_path / "failed.db", tmp_path / "oom.db"
    write_store(failed, (1, 8), status="failed")
    write_store(oom, (1,), status="oom")
    added = merge([a, b, failed, oom], c)
    # failed B = 1 and oom B = 1: the key was measured (ok); failed B = 8: kept (nothing else)
    assert (added.points, added.duplicates) == (5, 2)
    with Store(c, create=False, read_only=True) as store:
        rows = sorted((p["device"][-1], p["batch"], p["status"]) for p in store.points())
    assert rows == [("0", 1, "ok"), ("0", 2, "ok"), ("0", 8, "failed"), ("1", 1, "ok"),
                    ("1", 2, "ok")]
    # a measured point where the target holds only a failed one is copied
    later = tmp_path / "later.db"
    write_store(later, (8,))
    assert merge([later], c).points == 1


def test_merge_of_one_store_measured_twice_keeps_each_point_once(tmp_path):
    """Two sweeps that wrote one store at once (before the writer lock) measured some points
    twice: merging it into a new store keeps one of each."""
    a = tmp_path / "a.db"
    write_store(a, (1, 2, 2, 4, 4, 4), requested="max")
    added = merge([a], tmp_path / "c.db")
    assert (added.points, added.duplicates) == (1, 5)  # B = max: one point whatever B found


# -- tables keep every column ------------------------------------------------------------------

def test_results_tables_cut_nothing_when_not_on_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    path = tmp_path / "s.db"
    with Store(path) as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        store.add_point(run, DEVICE, point(model="a-model-name-long-enough-to-be-cut-" * 3),
                        engine_options='{"max_num_batched_tokens": 8192, "chunked": true}',
                        batch_requested=1)
    result = runner.invoke(app, ["results", "list", "--db", str(path)])
    assert result.exit_code == 0 and "…" not in result.output
    assert "a-model-name-long-enough-to-be-cut-" * 3 in result.output
    assert '{"max_num_batched_tokens": 8192, "chunked": true}' in result.output


def test_measure_into_a_full_disk_is_a_clear_error_and_keeps_the_store(tmp_path, monkeypatch):
    """`infergy measure --db` records its point after measuring: a full disk then is a
    user's error (exit 2) naming the store, and what the store held is kept."""
    path = tmp_path / "s.db"
    write_store(path)
    start_run = Store.start_run

    def on_a_full_disk(self, **kwargs):
        self.db = DiskFullConnection(self.db, ("INSERT",))
        return start_run(self, **kwargs)

    monkeypatch.setattr(Store, "start_run", on_a_full_disk)
    result = runner.invoke(app, ["measure", "--model", "tiny", "--engine", "hf-eager",
                                 "--batch", "1", "--input", "8", "--output", "4", "--idle-s",
                                 "0", "--dtype", "float32", "--repeats", "1", "--warmup", "0",
                                 "--device", "cpu", "--db", str(path)])
    assert result.exit_code == 2, result.output
    assert f"disk full writing {path}: nothing already stored is lost" in flat(result.output)
    monkeypatch.undo()
    with Store(path, create=False, read_only=True) as store:
        assert len(store.points()) == 2
