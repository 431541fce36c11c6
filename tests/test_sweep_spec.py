"""Sweep specs: presets, grids, and errors that name the file, field and what was expected."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

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
    # Resumed with 30 of the even points measured: the shards split what is left evenly
    # (taken of every point, shard 0 would keep 26 to measure and shard 1 56).
    all_points = spec.tasks()
    measured = set(all_points[0:60:2])
    left = [dataclasses.replace(spec, shard=(k, 2)).tasks(done=measured.__contains__)
            for k in range(2)]
    assert sorted(map(len, left)) == [41, 41]
    assert sorted(itertools.chain(*left), key=all_points.index) == [
        t for t in all_points if t not in measured]
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(SpecError, match=r"--shard expects K/N with 0 <= K < N"):
            parse_shard(bad)


def test_paper_bins_rule_offers_the_input_edges_of_the_study_s_own_rule():
    spec = load_spec("paper-bins-rule")
    assert PAPER_INPUT_EDGES_RULE == (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
    assert {t.input_tokens for t in spec.tasks()} == set(PAPER_INPUT_EDGES_RULE)


def test_length_sweep_is_two_grids_and_keeps_their_shared_point_once():
    tasks = load_spec("length-sweep").tasks()
    pairs = [(t.input_tokens, t.output_tokens) for t in tasks]
    assert len(pairs) == len(set(pairs)) == 12 + 13 - 1  # (512, 64) is in both
    assert (32768, 64) in pairs and (512, 4096) in pairs and (512, 1) in pairs


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
     r"field 'models\[1\]' \(line 1\): unknown model 'no-such-model'; expected one of .*tiny"),
    ("models: [tiny]\nengines:\n  - hf-eager\n  - vlm\ninput_tokens: [8]\noutput_tokens: [4]\n",
     r"field 'engines\[1\]' \(line 4\): unknown engine 'vlm'; expected one of .*vllm"),
    ("models: [tiny]\ninput_tokens: [8, 0]\noutput_tokens: [4]\n",
     r"field 'input_tokens\[1\]' \(line 2\): expected a positive number of tokens, got 0"),
    ("models: [tiny]\ninput_tokens: []\noutput_tokens: [4]\n",
     r"field 'input_tokens' \(line 2\): expected a non-empty list"),
    ("models: [tiny]\ninput_tokens: [8]\noutput_tokens: [4]\nbatch_sizes: [1, -2]\n",
     r"field 'batch_sizes\[1\]' \(line 4\): expected a positive integer or 'max', got -2"),
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
    ("seed", "abc", r"field 'seed': expected an integer >= 0, got 'abc'"),
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
