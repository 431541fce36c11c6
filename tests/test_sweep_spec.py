"""Sweep specs: presets, grids, and errors that name the file, field and what was expected."""

from __future__ import annotations

import codecs
import copy
import dataclasses
import itertools
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infergy.cli import app
from infergy.plan import MAX, PRESETS, SpecError, load_spec, parse_spec
from infergy.plan.spec import engine_starts, parse_shard
from infergy.workloads.bins import PAPER_INPUT_EDGES, PAPER_INPUT_EDGES_RULE, PAPER_OUTPUT_EDGES


def test_paper_bins_is_every_printed_input_edge_with_every_output_edge_at_1_and_max():
    spec = load_spec("paper-bins")
    tasks = spec.tasks()
    assert len(tasks) == len(PAPER_INPUT_EDGES) * len(PAPER_OUTPUT_EDGES) * 2
    assert {t.batch for t in tasks} == {1, MAX}
    assert {t.input_tokens for t in tasks} == {32, 128, 256, 512, 1024, 2048, 4096, 8192}
    assert {t.output_tokens for t in tasks} == {8, 16, 32, 64, 128, 256, 512}


def test_shards_split_the_points_between_processes_each_once():
    spec = load_spec("paper-bins")
    shards = [dataclasses.replace(spec, shard=(k, 3)).tasks() for k in range(3)]
    assert sorted(map(len, shards)) == [37, 37, 38]
    assert sorted(itertools.chain(*shards), key=spec.tasks().index) == spec.tasks()
    # Always of the whole plan: each shard's points are its own whatever a store holds, so
    # shards stopped and run again (each into its own store) never measure a point twice.
    assert [t for n, t in enumerate(spec.tasks()) if n % 3 == 1] == shards[1]
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 2 ") == (0, 2)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0", "1/2/3", "", "/", "1.0/2", "0/-2"):
        with pytest.raises(SpecError, match=r"--shard expects K/N with 0 <= K < N"):
            parse_shard(bad)


def test_the_dry_run_s_arithmetic_plan_is_the_sweep_s_point_for_point():
    """The dry run indexes a plan without listing it (a million points at once): the same
    points in the same order as `tasks()`, for every shard, with grids that overlap and
    values named twice."""
    from infergy.run.sweep.dryrun import PlanGrid

    spec = parse_spec({"models": ["tiny", "tiny"], "engines": ["hf-eager", "hf-paged"],
                       "decodings": ["greedy", "sample"], "batch_sizes": [1, "max", 2],
                       "grids": [{"input_tokens": [8, 16, 8], "output_tokens": [2, 4]},
                                 {"input_tokens": [8, 32], "output_tokens": [4, 8]}]})
    for n in (1, 2, 3, 7, 200):
        for k in range(min(n, 8)):
            shard = dataclasses.replace(spec, shard=(k, n))
            grid = PlanGrid(shard)
            assert [grid.task(j) for j in range(len(grid))] == shard.tasks()
            for j, task in enumerate(shard.tasks()):
                assert j in grid.positions(task.model, task.engine, task.decoding,
                                           str(task.batch), (task.input_tokens,
                                                             task.output_tokens))


def test_paper_bins_rule_offers_the_input_edges_of_the_study_s_own_rule():
    spec = load_spec("paper-bins-rule")
    assert PAPER_INPUT_EDGES_RULE == (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
    assert {t.input_tokens for t in spec.tasks()} == set(PAPER_INPUT_EDGES_RULE)


def test_length_sweep_is_two_grids_and_keeps_their_shared_point_once():
    tasks = load_spec("length-sweep").tasks()
    pairs = [(t.input_tokens, t.output_tokens) for t in tasks]
    # 12 inputs at 2 outputs, 13 outputs at 2 inputs; (512, 64), (512, 8), (64, 64) and
    # (64, 8) are in both
    assert len(pairs) == len(set(pairs)) == 24 + 26 - 4
    assert {(32768, 64), (32768, 8), (512, 4096), (64, 4096), (512, 1), (64, 1)} <= set(pairs)


def test_batch_sweep_is_powers_of_two_to_1024():
    assert [t.batch for t in load_spec("batch-sweep").tasks()] == [2**m for m in range(11)]


def test_tasks_are_grouped_so_each_model_is_built_once_per_engine():
    spec = parse_spec({"models": ["tiny", "smollm2-135m"], "engines": ["hf-eager", "hf-paged"],
                       "input_tokens": [8, 16], "output_tokens": [4], "batch_sizes": [1, 2]})
    groups = [t.group for t in spec.tasks()]
    assert len(groups) == 16
    changes = sum(a != b for a, b in itertools.pairwise(groups))
    assert changes == 3  # four groups, each contiguous


def test_vllm_is_started_once_a_speculative_decoding_and_tasks_come_decoding_by_decoding():
    """vLLM builds its draft with the engine (another speculation starts it again); hf-eager
    builds its draft beside the loaded target. Each decoding's tasks are contiguous."""
    spec = parse_spec({"models": ["llama-3.1-8b"], "engines": ["vllm", "hf-eager"],
                       "decodings": ["greedy", "speculative:draft=llama-3.2-1b",
                                     "speculative:draft=llama-3.2-1b,acceptance=0.5"],
                       "input_tokens": [8, 16], "output_tokens": [4], "batch_sizes": [1, 2]})
    tasks = spec.tasks()
    assert engine_starts(tasks) == 3 + 1
    vllm = [t.decoding for t in tasks if t.engine.name == "vllm"]
    assert sum(a != b for a, b in itertools.pairwise(vllm)) == 2  # three runs of four
    assert engine_starts([t for t in tasks if t.decoding == "greedy"]) == 2


def test_a_yaml_spec_with_engine_options_and_cooldown(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("models: [tiny]\n"
                    "engines: [hf-eager, {name: hf-paged, options: {block_size: 16}}]\n"
                    "preset: paper-bins\n"
                    "input_tokens: [32]\n"
                    "cooldown: {max_s: 10}\n")
    spec = load_spec(path)
    assert spec.engines[1].options_dict == {"block_size": 16}
    assert spec.engines[1].options_key == '{"block_size": 16}'
    assert spec.cooldown.max_s == 10 and spec.cooldown.within_w == 15
    assert {t.output_tokens for t in spec.tasks()} == set(PAPER_OUTPUT_EDGES)
    assert {t.input_tokens for t in spec.tasks()} == {32}


def test_a_cooldown_is_accepted_at_tp_2_on_an_engine_of_one_process_a_gpu():
    """Rank 0 cools its GPUs down before the other ranks get the point, so they wait for it
    idle, not in a collective that keeps their GPUs busy."""
    spec = parse_spec({"models": ["llama-3.1-8b"], "engines": ["hf-eager"],
                       "input_tokens": [8], "output_tokens": [4], "tp": 2,
                       "cooldown": {"max_s": 10}})
    assert spec.ranks == 2 and spec.cooldown.max_s == 10


@pytest.mark.parametrize(("yaml_text", "match"), [
    ("models: [tiny]\nengine: [hf-eager]\ninput_tokens: [8]\noutput_tokens: [4]\n",
     r"field 'engine' \(line 2\): unknown field; expected one of"),
    ("models: [tiny, no-such-model]\ninput_tokens: [8]\noutput_tokens: [4]\n",
     r"field 'models\[1\]' \(line 1\): unknown model 'no-such-model'; valid names: .*tiny"),
    ("models: [tiny]\nengines:\n  - hf-eager\n  - vlm\ninput_tokens: [8]\noutput_tokens: [4]\n",
     r"field 'engines\[1\]' \(line 4\): unknown engine 'vlm'; expected one of .*vllm"),
    ("models: [tiny]\ninput_tokens: [8, 0]\noutput_tokens: [4]\n",
     r"field 'input_tokens\[1\]' \(line 2\): expected a positive number of tokens, got 0"),
    ("models: [tiny]\ninput_tokens: []\noutput_tokens: [4]\n",
     r"field 'input_tokens' \(line 2\): expected a non-empty list"),
    ("models: [tiny]\ninput_tokens: [8]\noutput_tokens: [4]\nbatch_sizes: [1, -2]\n",
     r"field 'batch_sizes\[1\]' \(line 4\): expected an integer from 1 to 1,048,576 or "
     r"'max', got -2"),
    ("models: [tiny]\ninput_tokens: [2000]\noutput_tokens: [100]\n",
     r"field 'models\[0\]' \(line 1\): tiny's context is 2048 tokens, but the grid asks "
     r"for up to 2100"),
    ("models: [tiny]\npreset: paper-binz\n", r"field 'preset' \(line 2\): unknown preset"),
    ("models: [tiny]\ninput_tokens: [8]\n", r"field 'output_tokens'.*missing"),
    ("models: [tiny]\ninput_tokens: [8]\noutput_tokens: [4]\ndecodings: [beam]\n",
     r"field 'decodings\[0\]' \(line 4\)"),
    ("models: [tiny]\nengines: [hf-eager, vllm]\ninput_tokens: [8]\noutput_tokens: [4]\n"
     "tp: 2\n", r"field 'tp' \(line 5\): at tp 2, hf-eager runs as one process a GPU and "
                r"vllm starts its own: run them as separate sweeps"),
    ("models: [tiny]\nengines: [hf-paged]\ninput_tokens: [8]\noutput_tokens: [4]\ntp: 2\n",
     r"field 'tp' \(line 5\): --tp 2: engine hf-paged runs on one GPU"),
    ("models: [llama-3.1-8b]\nengines: [vllm]\ninput_tokens: [8]\noutput_tokens: [4]\ntp: 3\n",
     r"field 'tp' \(line 5\): --tp 3 does not divide llama-3.1-8b's 32 attention heads"),
    ("- a list\n", r"expected a mapping of fields"),
    ("models: [tiny\n", r"not valid YAML"),
    ("models: [tiny]\nmodels: [tiny-draft]\ninput_tokens: [8]\noutput_tokens: [4]\n",
     r"line 2: field 'models' given again \(first at line 1\)"),  # YAML keeps the last
    ("models: [tiny]\ngrids:\n- {input_tokens: [8], output_tokens: [4], input_tokens: [9]}\n",
     r"line 3: field 'grids\[0\].input_tokens' given again"),
])
def test_bad_specs_name_the_file_the_field_its_line_and_what_was_expected(
        tmp_path, yaml_text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(SpecError, match=match) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_a_missing_spec_file_names_the_presets(tmp_path):
    with pytest.raises(SpecError, match=r"no such file, and not a preset.*paper-bins"):
        load_spec(tmp_path / "nope.yaml")


def test_every_preset_says_what_it_is():
    for name, preset in PRESETS.items():
        assert preset["about"], name
        assert load_spec(name).tasks()


def test_engine_options_may_hold_mappings_and_lists():
    spec = parse_spec({"models": ["tiny"], "input_tokens": [8], "output_tokens": [4],
                       "engines": [{"name": "vllm", "options": {
                           "compilation_config": {"level": 3}, "sizes": [1, 2]}}]})
    (task,) = spec.tasks()
    assert hash(task) and task.engine.options_dict["compilation_config"] == {"level": 3}
    assert task.engine.options_key == '{"compilation_config": {"level": 3}, "sizes": [1, 2]}'


@pytest.mark.parametrize(("field", "value", "match"), [
    ("seed", "abc", r"field 'seed': expected an integer from 0 to 4,294,967,295, got 'abc'"),
    ("dtype", "int4", r"field 'dtype': expected one of bfloat16, float16, float32"),
    ("min_window_s", -2, r"field 'min_window_s': expected seconds from 0 to 60, got -2"),
    ("min_window_s", "2s", r"field 'min_window_s': expected seconds from 0 to 60, got '2s'"),
])
def test_seed_dtype_and_minimum_window_are_checked(field, value, match):
    with pytest.raises(SpecError, match=match):
        parse_spec({"models": ["tiny"], "input_tokens": [8], "output_tokens": [4],
                    field: value})


def test_a_minimum_window_needs_a_warm_up_to_time_a_run():
    with pytest.raises(SpecError, match=r"field 'min_window_s': needs warmup >= 1"):
        parse_spec({"models": ["tiny"], "input_tokens": [8], "output_tokens": [4],
                    "min_window_s": 2, "warmup": 0})
    spec = parse_spec({"models": ["tiny"], "input_tokens": [8], "output_tokens": [4],
                       "min_window_s": 2})
    assert spec.min_window_s == 2.0


# First contact (issue 28): specs that are unreadable, not text, or of the wrong shape.

GOOD = "models: [tiny]\ninput_tokens: [8]\noutput_tokens: [4]\n"
VALID = {"models": ["tiny"], "engines": ["hf-eager", {"name": "hf-paged", "options": {
    "block_size": 16}}], "decodings": ["greedy"], "batch_sizes": [1, "max"],
    "input_tokens": [8, 16], "output_tokens": [4], "repeats": 3, "warmup": 1,
    "cooldown": {"max_s": 10, "within_w": 5}, "max_batch_cap": 64, "dtype": "float32",
    "seed": 0, "idle_s": 1.0, "tp": 1, "min_window_s": 0}


def test_an_unreadable_spec_names_the_file_and_the_reason(tmp_path, monkeypatch):
    folder = tmp_path / "spec.yaml"
    folder.mkdir()
    with pytest.raises(SpecError, match=r"spec.yaml: is a folder, not a file"):
        load_spec(folder)
    with pytest.raises(SpecError, match=r"nope.yaml: no such file, and not a preset"):
        load_spec(str(tmp_path / "nope.yaml"))
    locked = tmp_path / "locked.yaml"
    locked.write_text(GOOD)
    real_open = Path.open

    def refusing_open(self, *args, **kwargs):  # root reads anything: a refusal, as a user's
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    with pytest.raises(SpecError, match=r"locked.yaml: cannot be read \(Permission denied\)"):
        load_spec(locked)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads a file without read permission")
def test_a_spec_without_read_permission_is_said_through_the_cli(tmp_path):
    locked = tmp_path / "locked.yaml"
    locked.write_text(GOOD)
    locked.chmod(0)
    result = CliRunner().invoke(app, ["sweep", str(locked), "--dry-run", "--db",
                                      str(tmp_path / "r.db")])
    assert result.exit_code == 2 and "cannot be read (Permission denied)" in " ".join(
        result.output.split())


@pytest.mark.parametrize(("data", "kind"), [
    (GOOD.encode("utf-16"), "UTF-16 text: save it as UTF-8"),
    (GOOD.encode("utf-16-be"), "UTF-16 text: save it as UTF-8"),
    (codecs.BOM_UTF16_BE + GOOD.encode("utf-16-be"), "UTF-16 text: save it as UTF-8"),
    (GOOD.encode("utf-32"), "UTF-32 text: save it as UTF-8"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "a PNG image"),
    (b"SQLite format 3\x00" + bytes(200), "an SQLite database"),
    (bytes(range(256)) * 3, "binary data"),
    ("models: [tiny]  # café\n".encode("latin-1"), "binary data, or text not in UTF-8: byte "
                                                  "0xe9 at offset 21"),
])
def test_a_spec_that_is_not_yaml_text_says_what_it_is(tmp_path, data, kind):
    path = tmp_path / "s.yaml"
    path.write_bytes(data)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: not a YAML text file ({kind})"


def test_a_real_sqlite_store_given_as_a_spec_is_said_and_left_alone(tmp_path):
    import sqlite3

    store = tmp_path / "results.db"
    with sqlite3.connect(store) as db:
        db.execute("create table t (x)")
    before = store.read_bytes()
    with pytest.raises(SpecError, match=r"not a YAML text file \(an SQLite database\)"):
        load_spec(store)
    assert store.read_bytes() == before


def test_a_utf8_byte_order_mark_is_just_text(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(GOOD.encode("utf-8-sig"))
    assert load_spec(path).models == ["tiny"]


@pytest.mark.parametrize(("yaml_text", "match"), [
    ("preset: [paper-bins]\n", r"field 'preset' \(line 1\): unknown preset \['paper-bins'\]; "
                               r"expected one of paper-bins"),
    ("preset: {a: 1}\n", r"field 'preset' \(line 1\): unknown preset \{'a': 1\}"),
    ("preset: 3\n", r"field 'preset' \(line 1\): unknown preset 3"),
    ("1: x\ntrue: y\nmodels: [tiny]\n", r"field '1' \(line 1\): unknown field"),
    ("models: [tiny]\ntrue: y\n", r"field 'True' \(line 2\): unknown field"),
    ("- models\n- tiny\n", r"expected a mapping of fields \(models: ..., engines: ...\), got a "
                           r"list"),
    ("just words\n", r"expected a mapping of fields .*, got 'just words'"),
    ("42\n", r"expected a mapping of fields .*, got 42"),
    ("models: {a: 1}\n" + GOOD[15:], r"field 'models' \(line 1\): expected a list, got a "
                                     r"mapping"),
    (GOOD + "warmup: [1]\n", r"field 'warmup' \(line 4\): expected an integer from 0 to 1,000, "
                             r"got \[1\]"),
    (GOOD + "repeats: 1000000000000000000000000000000\n",
     r"field 'repeats' \(line 4\): expected an integer from 1 to 1,000"),
    (GOOD + "seed: 99999999999999999999\n", r"field 'seed' \(line 4\): expected an integer"),
    (GOOD + "max_batch_cap: 1e9\n", r"field 'max_batch_cap' \(line 4\): expected an integer"),
    (GOOD + "batch_sizes: [1, 100000000000]\n", r"field 'batch_sizes\[1\]' \(line 4\)"),
    (GOOD + "idle_s: .inf\n", r"field 'idle_s' \(line 4\): expected seconds from 0 to 3600, "
                              r"got inf"),
    (GOOD + "idle_s: .nan\n", r"field 'idle_s' \(line 4\): expected seconds .*, got nan"),
    (GOOD + "cooldown: {max_s: .nan}\n", r"field 'cooldown.max_s' \(line 4\): expected "
                                         r"seconds"),
    (GOOD + "cooldown: {within_w: [1]}\n", r"field 'cooldown.within_w' \(line 4\): expected "
                                           r"watts"),
    (GOOD + "cooldown: [1]\n", r"field 'cooldown' \(line 4\): expected true, false or"),
    (GOOD + "dtype: [bfloat16]\n", r"field 'dtype' \(line 4\): expected one of bfloat16"),
    (GOOD + "min_window_s: {a: 1}\n", r"field 'min_window_s' \(line 4\): expected seconds "
                                      r"from 0 to 60"),
    (GOOD + "tp: [2]\n", r"field 'tp' \(line 4\): --tp must be a positive integer, got \[2\]"),
    (GOOD + "decodings: {greedy: 1}\n", r"field 'decodings' \(line 4\): expected a list"),
    (GOOD + "engines: [{name: hf-paged, options: {block_size: .nan}}]\n",
     r"field 'engines\[0\].options' \(line 4\): cannot be stored as JSON"),
    ("models: [tiny]\ngrids: [[8, 4]]\n", r"field 'grids\[0\]' \(line 2\): expected "
                                          r"\{input_tokens"),
    ("models: [tiny]\ninput_tokens: {a: 1}\noutput_tokens: [4]\n",
     r"field 'input_tokens' \(line 2\): expected a list, got a mapping"),
    ("models: [tiny\n", r"s.yaml: line 2, column 1: not valid YAML \(expected ',' or ']'"),
    ("models:\n\t- tiny\n", r"line 2, column 1: not valid YAML \(found character '\\t'"),
    ("models: " + "[" * 3000 + "]" * 3000 + "\n", r"YAML nested too deeply|not valid YAML|"
                                                  r"field 'models"),
])
def test_a_spec_of_the_wrong_shape_names_the_field_and_what_was_expected(
        tmp_path, yaml_text, match):
    path = tmp_path / "s.yaml"
    path.write_text(yaml_text)
    with pytest.raises(SpecError, match=match) as info:
        load_spec(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def _paths(value, prefix=()):
    """Every (key or index) path into a spec's data."""
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, sub in items:
        yield (*prefix, key)
        yield from _paths(sub, (*prefix, key))


@pytest.mark.parametrize("replacement", [
    [1], [], {"a": 1}, {}, "x", None, 10**30, -1, 1.5, True, False, float("inf"),
    float("nan"), [[1]], [{"a": 1}], {1: 2}, {True: "y"}, "max", [None],
])
def test_any_value_replaced_is_a_spec_or_a_spec_error_never_a_traceback(replacement):
    """A little fuzzing: each value of a valid spec (and the whole of it) replaced."""
    parse_spec(copy.deepcopy(VALID))
    for path in [*_paths(VALID), ()]:
        data = copy.deepcopy(VALID)
        if path:
            target = data
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(replacement)
        else:
            data = copy.deepcopy(replacement)
        try:
            spec = parse_spec(data, "s.yaml")
        except SpecError as err:
            assert str(err).startswith("s.yaml: "), (path, err)
            continue
        assert spec.tasks() and all(isinstance(b, int) or b == MAX for b in spec.batch_sizes)
        assert 1 <= spec.repeats <= 1000 and 0 <= spec.idle_s <= 3600, path


def test_specs_name_models_by_their_hugging_face_ids_in_any_case():
    spec = parse_spec({"models": ["meta-llama/Llama-3.2-1B-Instruct", "TINY",
                                  "HuggingFaceTB/smollm2-135m"],
                       "input_tokens": [8], "output_tokens": [4]})
    assert spec.models == ["llama-3.2-1b", "tiny", "smollm2-135m"]
    assert {t.model for t in spec.tasks()} == {"llama-3.2-1b", "tiny", "smollm2-135m"}
    with pytest.raises(SpecError, match=r"field 'models\[0\]': unknown model 'llama-3.2-1' "
                                        r"\(did you mean llama-3.2-1b"):
        parse_spec({"models": ["llama-3.2-1"], "input_tokens": [8], "output_tokens": [4]})


def test_bad_specs_through_the_cli_are_exit_2_without_a_traceback(tmp_path):
    corpus = {"utf16.yaml": GOOD.encode("utf-16"), "png.yaml": b"\x89PNG\r\n\x1a\n" + bytes(9),
              "preset.yaml": b"preset: [paper-bins]\n", "keys.yaml": b"1: x\nmodels: [a]\n",
              "list.yaml": b"- a\n", "inf.yaml": GOOD.encode() + b"idle_s: .inf\n"}
    paths = [tmp_path / "missing.yaml", tmp_path]
    for name, data in corpus.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    for path in paths:
        result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run", "--db",
                                          str(tmp_path / "r.db")])
        assert result.exit_code == 2, (path, result.output)
        assert "Traceback" not in result.output and path.name in result.output
    hf = CliRunner().invoke(app, ["sweep", "batch-sweep", "-m", "HuggingFaceTB/SmolLM2-135M",
                                  "--dry-run", "--db", str(tmp_path / "r.db")])
    assert hf.exit_code == 0, hf.output
    assert "smollm2-135m" in hf.output


def test_a_point_the_spec_names_twice_is_measured_once():
    """`models: [tiny, tiny]` and `batch_sizes: [1, 1]` measured one point four times."""
    spec = parse_spec({"models": ["tiny", "tiny"], "engines": ["hf-eager", "hf-eager"],
                       "input_tokens": [8], "output_tokens": [4], "batch_sizes": [1, 1, 2]})
    assert [t.batch for t in spec.tasks()] == [1, 2]
