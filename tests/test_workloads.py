"""Traces: loaders on small files written here (malformed ones too), built-in traces, and the
study's ceiling binning with its coverage."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from infergy.cli import app
from infergy.workloads import BinError, BinGrid, TraceError, describe, get_trace, load_trace

AZURE = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
         "2023-11-16 18:17:03.9799600,4808,10\n"
         "2023-11-16 18:17:04.0319600,3180,8\n"
         "2023-11-16 18:17:05.9799600,100,600\n")
BURST = ("Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,"
         "Total tokens,Log Type\n"
         "5,1,0.5,ChatGPT,100,20,120,Conversation log\n"
         "6,2,0.4,GPT-4,300,0,300,Conversation log\n"
         "9,3,0.9,ChatGPT,50,7,57,API log\n"
         "12,4,1.1,ChatGPT,70,0,70,Conversation log\n")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_trace_reads_lengths_and_arrival_times(tmp_path):
    trace = load_trace(write(tmp_path, "a.csv", AZURE))
    assert trace.input_tokens.tolist() == [4808, 3180, 100]
    assert trace.output_tokens.tolist() == [10, 8, 600]
    assert trace.arrival_s.tolist() == pytest.approx([0, 0.052, 2.0])
    assert trace.dropped == {}


def test_burstgpt_drops_and_counts_failed_requests_and_filters(tmp_path):
    path = write(tmp_path, "b.csv", BURST)
    trace = load_trace(path)
    assert trace.input_tokens.tolist() == [100, 50]
    assert trace.dropped == {"failed requests (0 response tokens)": 2}
    chat = load_trace(path, model="ChatGPT", log_type="Conversation log")
    assert chat.input_tokens.tolist() == [100]
    assert chat.dropped["Model is not ChatGPT"] == 1
    with pytest.raises(TraceError, match="no row has Model = 'Claude'; it has ChatGPT, GPT-4"):
        load_trace(path, model="Claude")


def test_any_table_with_a_column_mapping_csv_jsonl_and_parquet(tmp_path):
    rows = [{"prompt_len": 12, "gen_len": 3, "t": 0.5}, {"prompt_len": 40, "gen_len": 9, "t": 2}]
    csv_path = write(tmp_path, "t.csv", "prompt_len,gen_len,t\n12,3,0.5\n40,9,2\n")
    jsonl = write(tmp_path, "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    paths = [csv_path, jsonl]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    paths.append(tmp_path / "t.parquet")
    for path in paths:
        trace = load_trace(path, input_col="prompt_len", output_col="gen_len", time_col="t")
        assert trace.input_tokens.tolist() == [12, 40], path
        assert trace.arrival_s.tolist() == [0, 1.5], path
    with pytest.raises(TraceError, match="not a known trace format: give --input-col"):
        load_trace(csv_path)


@pytest.mark.parametrize(("text", "match"), [
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,12,4\n"
     "2023-11-16 18:17:04,abc,4\n",
     r"line 3, column 'ContextTokens': expected a whole number of tokens from 0 to "
     r"10,000,000, got 'abc'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,12,-4\n",
     r"line 2, column 'GeneratedTokens': expected a whole number of tokens from 0 to "
     r"10,000,000, got -4"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,12.5,4\n",
     r"line 2, column 'ContextTokens'.*got 12.5"),
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,12\n", r"not a known trace format"),
    ("", r"empty file"),
    ("TIMESTAMP;ContextTokens;GeneratedTokens\n2023-11-16 18:17:03;12;4\n",
     r"one column .*is the delimiter not a comma"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,12,4\n",
     r"line 2, column 'TIMESTAMP': expected a time, got 'yesterday'"),
])
def test_malformed_traces_name_the_file_line_and_column(tmp_path, text, match):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(TraceError, match=match) as info:
        load_trace(path)
    assert str(path) in str(info.value)


def test_a_missing_column_lists_the_columns_the_file_has(tmp_path):
    path = write(tmp_path, "t.csv", "a,b\n1,2\n")
    with pytest.raises(TraceError, match="no column 'gen'; the file has a, b"):
        load_trace(path, input_col="a", output_col="gen")


def test_skip_bad_skips_and_counts_malformed_rows(tmp_path):
    path = write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:17:03,12,4\n2023-11-16 18:17:04,abc,4\n"
                 "2023-11-16 18:17:05,7,-1\n2023-11-16 18:17:06,9,2\n")
    trace = load_trace(path, skip_bad=True)
    assert trace.input_tokens.tolist() == [12, 9]
    assert trace.dropped == {"bad ContextTokens": 1, "bad GeneratedTokens": 1}


def test_the_built_in_azure_trace_has_the_published_statistics():
    d = describe(get_trace("azure-code-2023"))
    assert d["requests"] == 8819
    assert d["input"]["mean"] == pytest.approx(2047.8, abs=0.05)
    assert d["input"]["median"] == 1469 and d["output"]["median"] == 13
    assert d["span_s"] == pytest.approx(3436, abs=1)


def test_classical_tasks_are_seeded_distributions_within_their_published_range():
    trace = get_trace("summarization")
    assert len(trace) == 1024 and set(trace.output_tokens.tolist()) == {64}
    assert trace.input_tokens.max() <= 2386 and trace.input_tokens.min() >= 1
    assert trace.input_tokens.mean() == pytest.approx(838.49, rel=0.05)
    assert np.array_equal(trace.input_tokens, get_trace("summarization").input_tokens)
    with pytest.raises(TraceError, match=r"not a built-in trace .*azure-code-2023"):
        get_trace("wmt")
    with pytest.raises(TraceError, match=r"not a built-in trace \(did you mean azure-code-2023"
                                         r"\?\) \(azure-code-2023, translation"):
        get_trace("azure-code-2024")


def test_ceiling_bins_on_a_hand_computed_example():
    grid = BinGrid((32, 128, 512), (8, 64))
    binned = grid.assign(np.array([1, 32, 33, 512, 513, 100]), np.array([8, 9, 64, 1, 5, 65]))
    assert binned.input_bin.tolist() == [0, 0, 1, 2, -1, -1]
    assert binned.output_bin.tolist() == [0, 1, 1, 0, -1, -1]
    assert binned.coverage() == {"requests": 6, "binned": 4, "beyond_last_edge": 2,
                                 "over_input": 1, "over_output": 1, "handled": "exclude"}
    assert binned.counts().tolist() == [[1, 1], [0, 1], [1, 0]]
    ins, outs = binned.binned_lengths()
    assert ins.tolist() == [32, 32, 128, 512] and outs.tolist() == [8, 64, 64, 8]
    clamped = BinGrid((32, 128, 512), (8, 64), beyond="clamp").assign(
        np.array([513, 100]), np.array([5, 65]))
    assert clamped.input_bin.tolist() == [2, 1] and clamped.output_bin.tolist() == [0, 1]
    assert clamped.coverage()["beyond_last_edge"] == 2 and clamped.kept.all()


def test_named_bins_and_bad_edges():
    assert BinGrid.named("paper").input_edges == (32, 128, 256, 512, 1024, 2048, 4096, 8192)
    assert BinGrid.named("paper-rule").input_edges[:3] == (16, 32, 64)
    assert BinGrid.named("pow2").output_edges[-1] == 4096
    with pytest.raises(BinError, match="unknown bins 'paperz'"):
        BinGrid.named("paperz")
    with pytest.raises(BinError, match="increasing"):
        BinGrid((8, 4), (1,))


def test_own_edges_on_one_axis_keep_the_named_grid_s_on_the_other():
    """--input-edges alone (or --output-edges alone) replaces that axis of --bins' grid."""
    grid = BinGrid.of("paper", "128,512", None)
    assert grid.input_edges == (128, 512)
    assert grid.output_edges == BinGrid.named("paper").output_edges
    assert BinGrid.of("pow2", None, "8,64").input_edges == BinGrid.named("pow2").input_edges
    with pytest.raises(BinError, match="--output-edges expects token counts separated by "
                                       "commas, got '8,x'"):
        BinGrid.of("paper", "128", "8,x")


def test_estimate_with_input_edges_alone_runs_and_bad_edges_are_said():
    runner = CliRunner()
    args = ["estimate", "--trace", "azure-code-2023", "--model", "llama-3.1-8b", "--gpu",
            "h100", "--engine", "hf-eager", "--json"]
    alone = runner.invoke(app, [*args, "--input-edges", "128,512,8192"])
    assert alone.exit_code == 0, alone.output
    bad = runner.invoke(app, [*args, "--input-edges", "12x"])
    assert bad.exit_code == 2
    assert "--input-edges expects token counts separated by commas" in " ".join(
        bad.output.split())


def test_an_error_is_printed_as_it_is_not_as_markup():
    """A user's error with brackets (a spec's `models: [...]`, a name) keeps them."""
    result = CliRunner().invoke(app, ["measure", "--model", "[bold]nope"])
    assert result.exit_code == 2 and "unknown model '[bold]nope'" in " ".join(
        result.output.split())


def test_traces_cli_lists_and_describes_and_fails_clearly(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["traces", "list"])
    assert listed.exit_code == 0 and "azure-code-2023" in listed.output
    described = runner.invoke(app, ["traces", "describe", "azure-code-2023", "--json"])
    assert described.exit_code == 0
    assert json.loads(described.output)[0]["requests"] == 8819
    path = write(tmp_path, "a.csv", AZURE)
    own = runner.invoke(app, ["traces", "describe", str(path)])
    assert own.exit_code == 0 and "a.csv" in own.output
    bad = runner.invoke(app, ["traces", "describe", str(write(tmp_path, "e.csv", ""))])
    said = " ".join(bad.output.split())  # rich wraps at the terminal's width: the path's length
    assert bad.exit_code == 2 and "empty file" in said and "Traceback" not in said


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    """A word-level tokenizer built here (no download): one token per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["hello", "how", "are", "you", "fine", "thanks", "write", "a", "poem", "about",
             "the", "sea", "waves", "[UNK]"]
    tok = Tokenizer(models.WordLevel({w: n for n, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    return folder


SHAREGPT = [
    {"id": "a", "conversations": [{"from": "human", "value": "hello how are you"},
                                  {"from": "gpt", "value": "fine thanks"},
                                  {"from": "human", "value": "ignored later turn"}]},
    {"id": "b", "conversations": [{"from": "system", "value": "x"},
                                  {"from": "human", "value": "write a poem about the sea"},
                                  {"from": "gpt", "value": "waves waves waves"}]},
    {"id": "c", "conversations": [{"from": "human", "value": "no answer"}]},
]


def test_sharegpt_counts_the_first_exchange_with_the_tokenizer(tmp_path, word_tokenizer):
    path = write(tmp_path, "s.json", json.dumps(SHAREGPT))
    trace = load_trace(path, "sharegpt", tokenizer=str(word_tokenizer))
    assert trace.input_tokens.tolist() == [4, 6] and trace.output_tokens.tolist() == [2, 3]
    assert trace.dropped == {"no user turn with an answer": 1}


def test_sharegpt_cut_mid_record_keeps_the_whole_records(tmp_path, word_tokenizer):
    text = json.dumps(SHAREGPT)
    path = write(tmp_path, "cut.json", text[: text.index('"id": "b"') + 12])
    trace = load_trace(path, "sharegpt", tokenizer=str(word_tokenizer))
    assert len(trace) == 1
    assert trace.dropped == {"record cut at the end of the file": 1}


def test_sharegpt_needs_a_tokenizer(tmp_path):
    path = write(tmp_path, "s.json", json.dumps(SHAREGPT))
    with pytest.raises(TraceError, match="give a tokenizer"):
        load_trace(path, "sharegpt")
    with pytest.raises(TraceError, match="tokenizer /no/such/folder: no such folder"):
        load_trace(path, "sharegpt", tokenizer="/no/such/folder")


@pytest.mark.parametrize(("header", "suffix"), [
    ("prompt_tokens,completion_tokens", ".csv"),
    ("Input_Length,Output_Length", ".csv"),
    ("input_tokens,output_tokens", ".jsonl"),
])
def test_common_column_names_are_found_without_a_mapping(tmp_path, header, suffix):
    inp, outp = header.split(",")
    if suffix == ".jsonl":
        text = "\n".join(json.dumps({inp: a, outp: b}) for a, b in ((12, 3), (40, 9))) + "\n"
    else:
        text = f"{header}\n12,3\n40,9\n"
    trace = load_trace(write(tmp_path, "t" + suffix, text))
    assert trace.input_tokens.tolist() == [12, 40] and trace.output_tokens.tolist() == [3, 9]


def test_a_bad_jsonl_record_is_named_by_its_own_line(tmp_path):
    path = write(tmp_path, "t.jsonl", '{"input_tokens": 5, "output_tokens": 2}\n'
                                      '{"input_tokens": "x", "output_tokens": 2}\n')
    with pytest.raises(TraceError, match=r"line 2, column 'input_tokens'"):
        load_trace(path)


def test_an_empty_numeric_time_is_an_error_not_nan(tmp_path):
    path = write(tmp_path, "t.csv", "input_tokens,output_tokens,time\n5,2,0.5\n6,3,\n")
    with pytest.raises(TraceError, match=r"line 3, column 'time': expected a time"):
        load_trace(path)


def test_epoch_milliseconds_are_refused_not_read_as_seconds(tmp_path):
    """1700000000000, ...1000, ...2000 read as seconds spanned 33 minutes, not 2 s."""
    path = write(tmp_path, "t.csv", "input_tokens,output_tokens,timestamp\n5,2,1700000000000\n"
                                    "6,3,1700000001000\n7,3,1700000002000\n")
    with pytest.raises(TraceError, match=r"column 'timestamp': numbers from 1.7e\+12 are epoch "
                                         r"milliseconds"):
        load_trace(path)
    seconds = write(tmp_path, "s.csv", "input_tokens,output_tokens,timestamp\n5,2,1700000000\n"
                                       "6,3,1700000001\n")
    assert load_trace(seconds).arrival_s.tolist() == [0.0, 1.0]  # epoch seconds are seconds


# First contact (issue 28): bad input refused clearly, never a traceback or nonsense.

def said(result) -> str:
    """A CLI run's output with rich's line breaks joined (independent of the width)."""
    return " ".join(result.output.split())


def deny_reading(monkeypatch, path):
    """Reading `path` fails as a file without read permission does (root reads anything,
    so chmod alone cannot show it)."""
    from pathlib import Path

    real_open = Path.open

    def refusing_open(self, *args, **kwargs):
        if Path(self).resolve() == Path(path).resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)


def test_an_unreadable_trace_names_the_file_and_the_reason(tmp_path, monkeypatch):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(TraceError, match=r"folder.csv: is a folder, not a file"):
        load_trace(folder)
    with pytest.raises(TraceError, match=r"folder.csv: is a folder, not a file"):
        get_trace(str(folder))
    with pytest.raises(TraceError, match=r"nope.csv: no such file"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match=r"nope.csv: not a built-in trace .* and no such file"):
        get_trace(str(tmp_path / "nope.csv"))
    locked = write(tmp_path, "locked.csv", AZURE)
    deny_reading(monkeypatch, locked)
    with pytest.raises(TraceError, match=r"locked.csv: cannot be read \(Permission denied\)"):
        load_trace(locked)
    with pytest.raises(TraceError, match=r"locked.csv: cannot be read \(Permission denied\)"):
        load_trace(locked, "sharegpt", tokenizer="unused")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads a file without read permission")
def test_a_trace_without_read_permission_is_said_through_the_cli(tmp_path):
    locked = write(tmp_path, "locked.csv", AZURE)
    locked.chmod(0)
    result = CliRunner().invoke(app, ["traces", "describe", str(locked)])
    assert result.exit_code == 2 and "cannot be read (Permission denied)" in said(result)


@pytest.mark.parametrize(("data", "kind"), [
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "a PNG image"),
    (bytes(range(256)) * 4, "binary data"),
    (b"\xfa\xfb\x00\x01\x02" * 100, "binary data"),
    ("input_tokens,output_tokens\n5,3\n".encode("utf-16"), "UTF-16 text: save it as UTF-8"),
    ("input_tokens,output_tokens\n5,3\n".encode("utf-16-le"), "UTF-16 text: save it as UTF-8"),
    (b"SQLite format 3\x00" + bytes(100), "an SQLite database"),
    (b"PK\x03\x04" + bytes(100), "a zip archive"),
])
def test_a_binary_trace_says_what_it_is(tmp_path, data, kind):
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    with pytest.raises(TraceError, match=re.escape(f"t.csv: not a trace file ({kind})")):
        load_trace(path)


def test_a_utf8_byte_order_mark_is_just_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffinput_tokens,output_tokens\n5,3\n".encode())
    assert load_trace(path).input_tokens.tolist() == [5]


@pytest.mark.parametrize(("cell", "shown"), [
    ("1e30", "1e+30"), ("99999999999999999999999", "99999999999999999999999"),
    ("inf", "inf"), ("-inf", "-inf"), ("nan", "nan"), ("-5", "-5"), ("12.5", "12.5"),
    ("10000001", "10000001"), ("", "nan"),
])
def test_token_counts_past_the_bound_or_not_whole_are_refused_at_their_line(
        tmp_path, cell, shown):
    path = write(tmp_path, "t.csv", f"input_tokens,output_tokens\n5,3\n{cell},4\n")
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert str(info.value).startswith(f"{path}: line 3, column 'input_tokens': expected a "
                                      f"whole number of tokens from 0 to 10,000,000, got ")
    assert shown in str(info.value)
    skipped = load_trace(path, skip_bad=True)
    assert skipped.input_tokens.tolist() == [5] and skipped.dropped == {"bad input_tokens": 1}


def test_the_token_bound_itself_is_accepted(tmp_path):
    path = write(tmp_path, "t.csv", "input_tokens,output_tokens\n10000000,0\n0,10000000\n")
    trace = load_trace(path)
    assert trace.input_tokens.tolist() == [10_000_000, 0]
    assert trace.input_tokens.dtype == np.int64


@pytest.mark.parametrize("value", ["true", "1e400", "99999999999999999999999", "-1", "2.5",
                                   '"many"', "null", "[3]", '{"n": 3}'])
def test_a_bad_jsonl_count_is_refused_at_its_line(tmp_path, value):
    path = write(tmp_path, "t.jsonl", '{"input_tokens": 5, "output_tokens": 2}\n'
                                      f'{{"input_tokens": {value}, "output_tokens": 2}}\n')
    with pytest.raises(TraceError, match=r"line 2, column 'input_tokens(\.n)?': expected a "
                                         r"whole number of tokens from 0 to 10,000,000"):
        load_trace(path)


def test_times_with_zones_are_taken_in_utc(tmp_path):
    path = write(tmp_path, "t.csv", "timestamp,input_tokens,output_tokens\n"
                                    "2023-11-16T18:17:03+00:00,5,3\n"
                                    "2023-11-16T20:17:04+02:00,5,3\n"
                                    "2023-11-16T18:17:05Z,5,3\n"
                                    "2023-11-16T13:17:06-05:00,5,3\n")
    assert load_trace(path).arrival_s.tolist() == [0, 1, 2, 3]
    same = write(tmp_path, "s.csv", "timestamp,input_tokens,output_tokens\n"
                                    "2023-11-16T20:17:03+02:00,5,3\n"
                                    "2023-11-16T20:17:05+02:00,5,3\n")
    assert load_trace(same).arrival_s.tolist() == [0, 2]


@pytest.mark.parametrize(("times", "line", "has"), [
    (["2023-11-16T18:17:03+00:00", "2023-11-16T18:17:04", "2023-11-16T20:17:05+02:00"], 3,
     "has no time zone"),
    (["2023-11-16 18:17:03", "2023-11-16 18:17:04", "2023-11-16 18:17:05+02:00"], 4,
     "has a time zone"),
    (["2023-11-16T18:17:03Z", "2023-11-16T18:17:04Z", "2023-11-16 18:17:05"], 4,
     "has no time zone"),
])
def test_times_with_and_without_a_zone_in_one_file_are_refused_at_a_line(
        tmp_path, times, line, has):
    path = write(tmp_path, "t.csv", "timestamp,input_tokens,output_tokens\n" +
                 "".join(f"{t},5,3\n" for t in times))
    with pytest.raises(TraceError, match=rf"line {line}, column 'timestamp': '.*' {has}, but "
                                         rf"line 2 \('.*'\) has .*: give every time a zone"):
        load_trace(path)


@pytest.mark.parametrize(("cell", "shown"), [
    ("not a time", "'not a time'"), ("2023-13-45 25:00:00", "'2023-13-45 25:00:00'"),
])
def test_an_unreadable_time_is_named_at_its_line(tmp_path, cell, shown):
    path = write(tmp_path, "t.csv", "timestamp,input_tokens,output_tokens\n"
                                    f"2023-11-16 18:17:03,5,3\n{cell},5,3\n")
    with pytest.raises(TraceError, match=rf"line 3, column 'timestamp': expected a time, got "
                                         rf"{re.escape(shown)}"):
        load_trace(path)
    seconds = write(tmp_path, "s.csv", "time,input_tokens,output_tokens\n1.5,5,3\ninf,5,3\n")
    with pytest.raises(TraceError, match=r"line 3, column 'time': expected a time, got inf"):
        load_trace(seconds)


def test_a_row_with_more_fields_than_the_header_is_refused_not_shifted(tmp_path):
    """pandas would take the first column as an index and shift every other one."""
    path = write(tmp_path, "t.csv", "input_tokens,output_tokens\n5,3,9\n6,4\n")
    with pytest.raises(TraceError, match=r"line 2: more fields than the header's 2 columns"):
        load_trace(path)
    trailing = write(tmp_path, "c.csv", "input_tokens,output_tokens\n5,3,\n6,4,\n")
    assert load_trace(trailing).output_tokens.tolist() == [3, 4]


def test_a_json_list_of_records_and_nested_api_logs_are_tables(tmp_path):
    rows = [{"input_tokens": 5, "output_tokens": 3}, {"input_tokens": 7, "output_tokens": 1}]
    listed = write(tmp_path, "t.json", json.dumps(rows))
    assert load_trace(listed).input_tokens.tolist() == [5, 7]
    bad = write(tmp_path, "b.json", json.dumps([*rows, {"input_tokens": -1,
                                                         "output_tokens": 1}]))
    with pytest.raises(TraceError, match=r"record 3, column 'input_tokens'"):
        load_trace(bad)
    logs = write(tmp_path, "api.jsonl", "".join(json.dumps(
        {"id": n, "usage": {"prompt_tokens": 10 + n, "completion_tokens": 2}}) + "\n"
        for n in range(3)))
    trace = load_trace(logs)
    assert trace.input_tokens.tolist() == [10, 11, 12] and trace.output_tokens.sum() == 6


@pytest.mark.parametrize(("name", "text", "match"), [
    ("s.json", json.dumps(SHAREGPT), r"a JSON list of conversations, as ShareGPT's: give "
                                     r"--format sharegpt and --tokenizer DIR"),
    ("s.jsonl", "\n".join(json.dumps(r) for r in SHAREGPT), r"records of conversations "
                                                            r"\(id, conversations\).*--format "
                                                            r"sharegpt"),
    ("m.jsonl", json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n",
     r"records of conversations \(messages\).*--format sharegpt"),
    ("s.txt", "\n".join(json.dumps(r) for r in SHAREGPT), r"--format sharegpt"),
    ("n.json", "[1, 2, 3]", r"a JSON list holding a number: expected records"),
    ("c.json", '[{"input_tokens": 1, "output_tokens": 2},', r"line 1, column \d+: not valid "
                                                             r"JSON"),
    ("l.jsonl", '{"input_tokens": 1, "output_tokens": 2}\n[1, 2]\n', r"line 2: a list, not a "
                                                                    r"record"),
    ("b.jsonl", '{"input_tokens": 1, "output_tokens": 2}\n{"input_tokens": 1\n',
     r"line 2: not a JSON record"),
    ("o.jsonl", '{"prompt": "hi", "response": "yo"}\n', r"columns prompt, response are not a "
                                                        r"known trace format: give "
                                                        r"--input-col and --output-col"),
])
def test_a_file_of_another_shape_says_what_it_looks_like_and_what_to_give(tmp_path, name,
                                                                         text, match):
    path = write(tmp_path, name, text)
    with pytest.raises(TraceError, match=match) as info:
        load_trace(path)
    assert str(info.value).startswith(str(path))
    result = CliRunner().invoke(app, ["traces", "describe", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert re.search(match, said(result))


def test_sharegpt_reads_one_conversation_a_line_and_openai_messages(tmp_path, word_tokenizer):
    lines = write(tmp_path, "s.jsonl", "\n".join(json.dumps(r) for r in SHAREGPT) + "\n")
    trace = load_trace(lines, "sharegpt", tokenizer=str(word_tokenizer))
    assert trace.input_tokens.tolist() == [4, 6] and trace.output_tokens.tolist() == [2, 3]
    messages = write(tmp_path, "m.jsonl", json.dumps({"messages": [
        {"role": "system", "content": "x"}, {"role": "user", "content": "hello how are you"},
        {"role": "assistant", "content": "fine thanks"}]}) + "\n")
    trace = load_trace(messages, "sharegpt", tokenizer=str(word_tokenizer))
    assert trace.input_tokens.tolist() == [4] and trace.output_tokens.tolist() == [2]
    cut = write(tmp_path, "c.jsonl", lines.read_text() + '{"id": "d", "conversations": [')
    assert load_trace(cut, "sharegpt", tokenizer=str(word_tokenizer)).dropped[
        "record cut at the end of the file"] == 1
    broken = write(tmp_path, "b.jsonl", '{"id": 1\n' + lines.read_text())
    with pytest.raises(TraceError, match=r"b.jsonl: line 1: not a JSON record"):
        load_trace(broken, "sharegpt", tokenizer=str(word_tokenizer))


def test_every_bad_trace_is_a_clear_error_through_the_cli(tmp_path):
    """A corpus of bad traces through `traces describe` and `estimate`: exit 2, the file
    named, no traceback."""
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    corpus = {
        "big.csv": "input_tokens,output_tokens\n1e30,4\n",
        "zones.csv": "timestamp,input_tokens,output_tokens\n2023-11-16T18:17:03Z,5,3\n"
                     "2023-11-16T18:17:04,5,3\n",
        "array.json": json.dumps(SHAREGPT),
        "png.csv": b"\x89PNG\r\n\x1a\n" + bytes(64),
        "utf16.csv": "input_tokens,output_tokens\n5,3\n".encode("utf-16"),
        "shifted.csv": "input_tokens,output_tokens\n5,3,9\n",
        "empty.csv": "",
    }
    paths = [folder, tmp_path / "missing.csv"]
    for name, data in corpus.items():
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        paths.append(path)
    runner = CliRunner()
    for path in paths:
        for args in (["traces", "describe", str(path)],
                     ["estimate", "-t", str(path), "-m", "llama-3.1-8b", "--gpu", "h100"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 2, (args, result.output)
            assert "Traceback" not in result.output and path.name in said(result), args
            assert result.exception is None or isinstance(result.exception, SystemExit), args
