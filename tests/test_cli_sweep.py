"""`infergy sweep` (plan and errors) and `infergy results` on a store written by the tests."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from infergy.cli import app
from infergy.store import Store

runner = CliRunner()
DEVICE = "GPU-simulated-0"
META = {"gpus": [{"model": "Simulated GPU", "uuid": DEVICE}], "host": {"hostname": "h"}}


def flat(text: str) -> str:
    return " ".join(text.split())


def write_store(path, batches=(1, 2)):
    with Store(path) as store:
        run = store.start_run(device=DEVICE, meta=META, spec=None)
        for batch in batches:
            point = {"model": "tiny", "engine": "hf-eager", "batch": batch, "input_tokens": 8,
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

    monkeypatch.setattr(cli_sweep, "local_device", lambda tp=1: DEVICE)
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


def test_results_errors_are_clear(tmp_path):
    missing = runner.invoke(app, ["results", "list", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no such results store" in flat(missing.output)
    write_store(tmp_path / "a.db")
    unknown = runner.invoke(app, ["results", "show", "zzz", "--db", str(tmp_path / "a.db")])
    assert unknown.exit_code == 2 and "no points with an id starting 'zzz'" in flat(
        unknown.output)
    bad = runner.invoke(app, ["results", "export", str(tmp_path / "x"), "--format", "xml",
                              "--db", str(tmp_path / "a.db")])
    assert bad.exit_code == 2 and "unknown export format 'xml'" in flat(bad.output)
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
    monkeypatch.setattr(cli_sweep, "local_device", lambda tp=1: asked.append(tp) or DEVICE)
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
