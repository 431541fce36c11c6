"""The results store: points recorded and found again, schema versions, merge, export."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest

from infergy.store import SCHEMA_VERSION, Store, StoreError, export, merge

DEVICE = "GPU-simulated-0"
META = {"gpus": [{"model": "Simulated GPU", "uuid": DEVICE, "driver": "1.0",
                  "power_limit_w": 700.0}], "host": {"hostname": "h"}, "idle_w": {"gpu0": 80.0},
        "versions": {"infergy": "0.1.0"}}


def result(batch=1, i=8, o=4, status="ok", energy=10.0):
    point = {"model": "tiny", "engine": "hf-eager", "batch": batch, "input_tokens": i,
             "output_tokens": o, "decoding": "greedy", "tp": 1, "dtype": "bfloat16"}
    return {"point": point, "status": status, "energy_j": energy,
            "j_per_output_token": energy and energy / (batch * o), "time_s": 0.5,
            "repeats": []}


KEY = {"model": "tiny", "engine": "hf-eager", "engine_options": "{}", "decoding": "greedy",
       "dtype": "bfloat16", "tp": 1, "input_tokens": 8, "output_tokens": 4}


def test_a_recorded_point_is_done_for_its_device_only(tmp_path):
    with Store(tmp_path / "r.db") as store:
        run = store.start_run(device=DEVICE, meta=META, spec={"models": ["tiny"]})
        store.add_point(run, DEVICE, result(), engine_options="{}", batch_requested=1)
        assert store.done(DEVICE, KEY, 1)
        assert not store.done("GPU-other", KEY, 1)
        assert not store.done(DEVICE, KEY, 2)
        store.end_run(run, "finished")
        (r,) = store.runs()
        assert r["gpu_name"] == "Simulated GPU" and r["status"] == "finished"
        assert json.loads(r["idle_w"]) == {"gpu0": 80.0}


def test_by_card_model_a_point_of_another_card_of_that_model_is_done(tmp_path):
    """A profile measured over several machines of one kind (--resume-by model)."""
    other = {**META, "gpus": [{**META["gpus"][0], "uuid": "GPU-simulated-1"}]}
    with Store(tmp_path / "r.db") as store:
        run = store.start_run(device="GPU-simulated-1", meta=other, spec=None)
        store.add_point(run, "GPU-simulated-1", result(), engine_options="{}", batch_requested=1)
        store.add_point(run, "GPU-simulated-1", result(batch=8, status="oom", energy=None),
                        engine_options="{}", batch_requested="max")
        assert not store.done(DEVICE, KEY, 1)
        assert store.done(DEVICE, KEY, 1, gpu_name="Simulated GPU")
        assert not store.done(DEVICE, KEY, 1, gpu_name="Another GPU")
        assert store.oom_batches(DEVICE, KEY) == []
        assert store.oom_batches(DEVICE, KEY, gpu_name="Simulated GPU") == [8]


def test_out_of_memory_counts_as_measured_but_not_as_a_found_max(tmp_path):
    with Store(tmp_path / "r.db") as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        store.add_point(run, DEVICE, result(batch=8, status="oom", energy=None),
                        engine_options="{}", batch_requested=8)
        store.add_point(run, DEVICE, result(batch=16, status="oom", energy=None),
                        engine_options="{}", batch_requested="max")
        store.add_point(run, DEVICE, result(batch=1, status="failed", energy=None),
                        engine_options="{}", batch_requested=1)
        assert store.done(DEVICE, KEY, 8)
        assert not store.done(DEVICE, KEY, "max")
        assert not store.done(DEVICE, KEY, 1)  # failed points are measured again
        assert store.oom_batches(DEVICE, KEY) == [8, 16]


def test_a_store_is_in_wal_mode_and_survives_reopening(tmp_path):
    path = tmp_path / "r.db"
    with Store(path) as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        store.add_point(run, DEVICE, result(), engine_options="{}", batch_requested=1)
    with Store(path, create=False) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert len(store.points()) == 1


def test_a_store_from_a_newer_infergy_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "r.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"newer infergy.*upgrade infergy"):
        Store(path)
    assert path.read_bytes() == before


def test_an_older_store_is_migrated_on_opening(tmp_path, monkeypatch):
    from infergy.store import store as store_module

    path = tmp_path / "r.db"
    Store(path).close()
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_module.MIGRATIONS, SCHEMA_VERSION + 1,
                        "ALTER TABLE points ADD COLUMN note TEXT;")
    with Store(path) as store:
        version = store.db.execute("SELECT value FROM meta").fetchone()[0]
        columns = [r[1] for r in store.db.execute("PRAGMA table_info(points)")]
    assert version == str(SCHEMA_VERSION + 1) and "note" in columns


@pytest.mark.parametrize("content", [b"not a database at all" * 100, None])
def test_a_file_that_is_not_a_store_is_refused(tmp_path, content):
    path = tmp_path / "x.db"
    if content is None:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE other (x)")
        db.commit()
        db.close()
    else:
        path.write_bytes(content)
    with pytest.raises(StoreError, match="not an infergy"):
        Store(path)


def test_merge_keeps_every_point_once(tmp_path):
    a, b, c = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    for path, batches in ((a, (1, 2)), (b, (4,))):
        with Store(path) as store:
            run = store.start_run(device=DEVICE, meta=META, spec=None)
            for batch in batches:
                store.add_point(run, DEVICE, result(batch=batch), engine_options="{}",
                                batch_requested=batch)
    assert merge([a, b], c) == (2, 3, 0, 0)
    assert merge([a, b], c) == (0, 0, 0, 0)  # again: nothing twice
    with pytest.raises(StoreError, match="is the store merged into"):
        merge([a, c], c)
    with Store(c) as store:
        assert sorted(p["batch"] for p in store.points()) == [1, 2, 4]
        assert len(store.runs()) == 2


def test_merge_keeps_a_batch_search_s_every_try_and_its_answer(tmp_path):
    """B = max: out of memory at 64 and 32, found at 16. Keyed as one point, merging kept the
    first try alone and dropped the answer (a launched sweep then never finished, and
    `results merge` lost it, a helper's review); merged again, nothing comes twice."""
    a, c = tmp_path / "a.db", tmp_path / "c.db"
    with Store(a) as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        for batch, status in ((64, "oom"), (32, "oom"), (16, "ok")):
            store.add_point(run, DEVICE, result(batch=batch, status=status),
                            engine_options="{}", batch_requested="max")
    assert merge([a], c) == (1, 3, 0, 0)
    assert merge([a], c) == (0, 0, 0, 0)
    with Store(c, create=False, read_only=True) as store:
        assert sorted((p["batch"], p["status"]) for p in store.points()) == [
            (16, "ok"), (32, "oom"), (64, "oom")]
        assert store.done(DEVICE, KEY, "max")


def test_a_run_merged_while_it_ran_takes_its_end_from_a_later_merge(tmp_path):
    """A launched sweep merges a worker's points as they come, and its store once it ends."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    with Store(a) as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        store.add_point(run, DEVICE, result(), engine_options="{}", batch_requested=1)
    merge([a], b)
    with Store(a) as store:
        store.end_run(run, "interrupted")
    assert merge([a], b) == (0, 0, 0, 0)
    with Store(b) as store:
        assert [r["status"] for r in store.runs()] == ["interrupted"]
        store.end_run(run, "finished")  # an end already there is not undone
    merge([a], b)
    with Store(b) as store:
        assert [r["status"] for r in store.runs()] == ["finished"]


def test_export_writes_every_point_as_csv_json_and_parquet(tmp_path):
    with Store(tmp_path / "r.db") as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        for batch in (1, 2, 4):
            store.add_point(run, DEVICE, result(batch=batch), engine_options="{}",
                            batch_requested=batch)
        assert export(store, tmp_path / "p.csv", "csv") == 3
        rows = list(csv.DictReader((tmp_path / "p.csv").open()))
        assert [r["batch"] for r in rows] == ["1", "2", "4"]
        assert rows[0]["gpu_name"] == "Simulated GPU"
        assert export(store, tmp_path / "p.json", "json") == 3
        assert json.loads((tmp_path / "p.json").read_text())[2]["j_per_output_token"] == 0.625
        pq = pytest.importorskip("pyarrow.parquet")
        assert export(store, tmp_path / "p.parquet", "parquet") == 3
        assert pq.read_table(tmp_path / "p.parquet").column("batch").to_pylist() == [1, 2, 4]
        with pytest.raises(StoreError, match="unknown export format 'xml'"):
            export(store, tmp_path / "p.xml", "xml")


def test_the_shipped_profiles_are_at_this_schema_version():
    """Opening an older store migrates it, which writes: a profile inside an installed
    package must already be current (migrate it with the schema change)."""
    from infergy.estimate import shipped_profiles

    for path in shipped_profiles():
        db = sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True)  # nothing made beside
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        db.close()
        assert version == (str(SCHEMA_VERSION),), path



def test_an_older_store_read_only_is_read_as_it_is_and_not_migrated(tmp_path):
    path = tmp_path / "r.db"
    with Store(path) as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        store.add_point(run, DEVICE, result(), engine_options="{}", batch_requested=1)
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE replays; UPDATE meta SET value = '1';")
    db.close()
    before = path.read_bytes()
    with Store(path, create=False, read_only=True) as store:
        assert store.version == 1 and len(store.points()) == 1 and store.replays() == []
    assert path.read_bytes() == before
    with Store(path) as store:  # a writer migrates it
        assert store.version == SCHEMA_VERSION and store.replays() == []


def test_a_point_in_two_stores_given_is_read_once(tmp_path, monkeypatch):
    """The same store given twice (by two spellings of its path), or a store and another it
    was merged into: each point and replay comes once (`results summary` counted 8 of 4)."""
    from pathlib import Path

    from infergy.profile.load import shipped_profiles
    from infergy.profile.points import stored_points, stored_replays
    source = shipped_profiles("llama-3.1-8b")[0]
    merged = tmp_path / "merged.db"
    merge([source], merged)
    monkeypatch.chdir(source.parent)
    once = [p["id"] for _, p, _ in stored_points([source])]
    for stores in ([source, Path(source.name)], [source, merged], [merged, source]):
        assert sorted(p["id"] for _, p, _ in stored_points(stores)) == sorted(once)
        assert len(list(stored_replays(stores))) == len(list(stored_replays([source])))


def test_a_run_s_idle_power_is_its_gpus_not_its_cpu_s():
    """A run keeps every sensor's idle power (RAPL's where readable); a point's energy is its
    GPUs', and so is the idle the fit and the report take (the median of all three made a
    GPU idle at the CPU package's 44.9 W)."""
    from infergy.profile.points import idle_powers
    run = {"idle_w": json.dumps({"gpu0": 69.9, "cpu0": 44.9, "dram0": 6.0, "gpu1": None})}
    assert idle_powers(run) == [69.9]
