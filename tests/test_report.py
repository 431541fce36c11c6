"""The HTML report from a store written here: every figure a valid image, every table with
its rows, and a page that still renders, saying what is missing, without data."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from infergy.cli import app
from infergy.estimate import load_profile
from infergy.plan import parse_spec
from infergy.profile import load_points
from infergy.report import build_report, figures, tables
from infergy.report.cdf import cdf_figure
from infergy.run.sweep import run_sweep
from infergy.store import Store
from infergy.workloads import BinGrid, get_trace

PNG = b"\x89PNG\r\n\x1a\n"
GPU = "NVIDIA H100 80GB HBM3"


def write_store(path, gpu=GPU, card_scale=1.0, inputs=(32, 128, 512), outputs=(8, 64)):
    """hf-eager and vllm (half hf-eager's energy) on one card, at B = 1 and max over 3 x 2
    lengths (or `inputs` x `outputs`); `card_scale` multiplies every energy."""
    with Store(path) as store:
        run = store.start_run(device="GPU-x", meta={"gpus": [{"model": gpu}]}, spec=None)
        for engine, scale in (("hf-eager", 2.0 * card_scale), ("vllm", 1.0 * card_scale)):
            for i in inputs:
                for o in outputs:
                    for batch, requested in ((1, 1), (64, "max")):
                        energy = scale * (0.05 * i * batch + 2.0 * o * batch ** 0.5)
                        point = {"model": "llama-3.1-8b", "engine": engine, "batch": batch,
                                 "input_tokens": i, "output_tokens": o, "decoding": "greedy",
                                 "tp": 1, "dtype": "bfloat16"}
                        result = {"point": point, "status": "ok", "energy_j": energy,
                                  "j_per_output_token": energy / (batch * o),
                                  "time_s": 0.01 * o * scale, "prefill_energy_j": 0.3 * energy,
                                  "decode_energy_j": 0.7 * energy,
                                  "provenance": {"versions": {"torch": "2.11.0"}}}
                        store.add_point(run, "GPU-x", result, engine_options="{}",
                                        batch_requested=requested)
    return path


def test_a_report_from_a_store_has_valid_figures_and_full_tables(tmp_path):
    db = write_store(tmp_path / "r.db")
    page = build_report([db], ["translation"], tmp_path / "out", usd_per_kwh=0.2)
    html = page.read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert {"batch.png", "phases.png", "pareto.png", "heatmap-hf-eager.png", "heatmap-vllm.png",
            "cdf-translation.png", "estimate-translation-llama-3.1-8b.png"} <= set(images)
    for name in images:
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG
        assert (tmp_path / "out" / name.replace(".png", ".svg")).read_text().lstrip().startswith(
            ("<?xml", "<svg"))
    tables = re.findall(r"<table>.*?</table>", html, flags=re.S)
    assert len(tables) == 5
    # The answer leads: each engine's energy of the trace, then the theoretical baseline.
    assert html.index("Energy of the workload") < html.index("<img")
    assert tables[0].count("<tr>") == 4 and "50.0%" in tables[0]  # hf-eager, vllm, theory
    assert "theoretical baseline (h100-sxm)" in tables[0] and "J per request" in tables[0]
    assert tables[1].count("<tr>") == 2  # header + the trace
    binned = BinGrid((32, 128, 512), (8, 64)).assign(
        get_trace("translation").input_tokens, get_trace("translation").output_tokens)
    assert tables[2].count("<tr>") == 1 + int((binned.counts() > 0).sum())  # a row a bin
    # The evidence of where: at the bottom, folded.
    assert tables[3].count("<tr>") == 2 and "GPU-x" in tables[3]  # header + the one GPU
    assert tables[4].count("<tr>") == 5  # hf-eager and vllm, each at B = 1 and max
    assert html.index("How these numbers were made") < html.index("<details><summary><h2>"
                                                                   "Provenance")
    assert "Not shown" not in html


H200 = "NVIDIA H200"


def test_two_cards_stores_make_one_report_with_each_card_apart(tmp_path):
    h100 = write_store(tmp_path / "llama-3.1-8b-h100.db")
    h200 = write_store(tmp_path / "llama-3.1-8b-h200.db", gpu=H200, card_scale=0.5)
    page = build_report([h100, h200], ["translation"], tmp_path / "out")
    html = page.read_text()
    assert "Not shown" not in html
    assert re.findall(r"<h2>Measurements on ([^<]*)</h2>", html) == [GPU, H200]
    images = set(re.findall(r'<img src="([^"]+)"', html))
    for card in ("h100-sxm", "h200"):  # every one-GPU figure once per card
        assert {f"{stem}-{card}.png" for stem in (
            "batch", "phases", "pareto", "heatmap-hf-eager", "heatmap-vllm",
            "estimate-translation-llama-3.1-8b")} <= images
    assert "batch.png" not in images and "heatmap-vllm.png" not in images
    for name in images:
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG
    # Each card's estimate: its own Table 4 and bins, against its own datasheet's baseline.
    captions = re.findall(r"<caption>([^<]*)</caption>", html)
    table4 = [c for c in captions if "Table 4" in c]
    assert len(table4) == 2 and GPU in table4[0] and "h100-sxm" in table4[0]
    assert H200 in table4[1] and "h200&#39;s 700 W" in table4[1]
    assert sum("energy per bin" in c for c in captions) == 2
    tables = re.findall(r"<table>.*?</table>", html, flags=re.S)
    on_h100, on_h200 = (t for t in tables if "Table 4" in t)
    kwh = [re.findall(r"<tr><td>(hf-eager|vllm)</td><td>([^<]*)</td>", t)
           for t in (on_h100, on_h200)]
    assert [e for e, _ in kwh[0]] == ["hf-eager", "vllm"]  # hf-eager the baseline
    for (_, a), (_, b) in zip(*kwh, strict=True):  # the H200 store at half the energy
        assert float(b) == pytest.approx(float(a) / 2, rel=1e-3)
    assert "50.0%" in on_h100 and "50.0%" in on_h200  # savings within each card
    assert "the cards&#39; energies are not compared here" in html
    # The figures refuse points of two cards rather than drawing them in one picture.
    both = load_points([h100, h200])
    with pytest.raises(figures.MixedCardsError, match="2 GPU models"):
        figures.heatmap_figure(both, "vllm")
    for figure in (figures.batch_figure, figures.phases_figure, figures.pareto_figure,
                   figures.tp_figure):
        with pytest.raises(figures.MixedCardsError):
            figure(both)
    # The command: both stores, a page naming both cards.
    result = CliRunner().invoke(app, ["report", "--db", str(h100), "--db", str(h200),
                                      "--trace", "translation", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "cli" / "index.html").read_text()
    assert GPU in text and H200 in text


def test_a_card_outside_the_gpu_table_is_named_and_the_others_still_estimated(tmp_path):
    h100 = write_store(tmp_path / "h100.db")
    other = write_store(tmp_path / "other.db", gpu="NVIDIA GeForce RTX 4090")
    html = build_report([h100, other], ["translation"], tmp_path / "out").read_text()
    assert "Measurements on NVIDIA GeForce RTX 4090" in html
    assert "heatmap-vllm-nvidia-geforce-rtx-4090.png" in html
    assert "NVIDIA GeForce RTX 4090 is not in infergy&#39;s GPU table" in html
    assert "--theory-gpu CARD" in html
    assert sum("Table 4" in c for c in re.findall(r"<caption>([^<]*)</caption>", html)) == 1
    assert "estimate-translation-llama-3.1-8b-h100-sxm.png" in html


def test_a_cards_baseline_lacking_bins_gives_way_to_an_engine_that_holds_them(tmp_path):
    import sqlite3

    db = write_store(tmp_path / "r.db")
    with sqlite3.connect(db) as c:  # hf-eager without its B = max points at input 512
        c.execute("DELETE FROM points WHERE engine = 'hf-eager' AND input_tokens = 512 AND "
                  "batch_requested = 'max'")
    html = build_report([db], ["translation"], tmp_path / "out").read_text()
    assert "saving vs vllm" in html
    assert "translation on llama-3.1-8b on NVIDIA H100 80GB HBM3, hf-eager: llama-3.1-8b on " \
           "hf-eager (NVIDIA H100 80GB HBM3) has no B = max point for" in html


def add_points(path, rows):
    """(model, engine, decoding, batch, J per output token, tpot s, acceptance) at 512/128."""
    with Store(path) as store:
        run = store.start_run(device="GPU-x", meta={"gpus": [{"model": GPU}]}, spec=None)
        for model, engine, decoding, batch, jpt, tpot, acceptance in rows:
            point = {"model": model, "engine": engine, "batch": batch, "input_tokens": 512,
                     "output_tokens": 128, "decoding": decoding, "tp": 1, "dtype": "bfloat16"}
            stats = {} if acceptance is None else {"acceptance": acceptance}
            result = {"point": point, "status": "ok", "energy_j": jpt * batch * 128,
                      "j_per_output_token": jpt, "time_s": tpot * 128, "tpot_s": tpot,
                      "decoding_stats": stats, "provenance": {"versions": {"torch": "2.11.0"}}}
            store.add_point(run, "GPU-x", result, engine_options="{}", batch_requested=batch)
    return path


def test_speculative_and_mixture_of_experts_figures_appear_when_their_points_exist(tmp_path):
    spec = "speculative:draft=llama-3.2-1b,lookahead=4,acceptance=0.8"
    rows = [("llama-3.1-8b", "hf-eager", "greedy", b, 4.0 / b ** 0.7, 0.02, None)
            for b in (1, 8, 32, 128)]
    rows += [("llama-3.1-8b", "hf-eager", spec, b, 3.0 / b ** 0.6, 0.01, 0.79)
             for b in (1, 8, 32, 128)]
    db = add_points(tmp_path / "s.db", rows)
    html = build_report([db], [], tmp_path / "a").read_text()
    assert "speculative.png" in html and "moe.png" not in html
    assert "Mixture of experts" not in html
    assert (tmp_path / "a" / "speculative.png").read_bytes()[:8] == PNG
    # vLLM's own speculation beside infergy's loop: a figure per engine.
    vllm = [("llama-3.1-8b", "vllm", d, b, j / b ** 0.6, 0.01, a)
            for d, j, a in (("greedy", 1.0, None), (spec, 0.8, 0.8)) for b in (1, 8, 32, 128)]
    both = add_points(tmp_path / "v.db", rows + vllm)
    html = build_report([both], [], tmp_path / "v").read_text()
    assert "speculative-hf-eager.png" in html and "speculative-vllm.png" in html
    assert (tmp_path / "v" / "speculative-vllm.png").read_bytes()[:8] == PNG
    # Beam search beside speculation in one store: a figure of its own, and neither figure
    # draws the other's lines.
    beams = [("llama-3.1-8b", "vllm", f"beam:{w}", b, w / b ** 0.3, 0.05, None)
             for w in (2, 4) for b in (1, 8, 32)]
    mixed = add_points(tmp_path / "w.db", vllm + beams)
    html = build_report([mixed], [], tmp_path / "w").read_text()
    assert "Beam search" in html and (tmp_path / "w" / "beam.png").read_bytes()[:8] == PNG
    again = add_points(tmp_path / "g.db", [("llama-3.1-8b", "vllm", "greedy", b, 3.0 / b ** 0.6,
                                            0.01, None) for b in (1, 8, 32, 128)])
    points = load_points([mixed, again])  # greedy twice at each batch: a line of the medians
    greedy_line = figures.decoding_figure(points, "beam").axes[0].get_lines()[2]
    assert list(greedy_line.get_xdata()) == [1, 8, 32, 128]
    assert greedy_line.get_ydata()[0] == pytest.approx((1.0 + 3.0) / 2)
    points = load_points([mixed])
    spec_fig = figures.decoding_figure(points, "speculative")
    assert [line.get_label() for line in spec_fig.axes[0].get_lines()] == [
        "greedy", "draft=llama-3.2-1b,lookahead=4,acceptance=0.8 (observed 80%-80%)"]
    beam_fig = figures.decoding_figure(points, "beam")
    assert [line.get_label() for line in beam_fig.axes[0].get_lines()] == [
        "beam:2", "beam:4", "greedy"]
    assert beam_fig.texts[0].get_text().startswith("Beam search: llama-3.1-8b on vllm")
    # The general figures are of greedy decoding only: the batch figure has its 4 points.
    moe_rows = [(m, "hf-eager", "greedy", b, j / b ** 0.5, t, None)
                for m, j, t in (("olmoe-1b-7b", 1.5, 0.03), ("olmo-1b", 1.0, 0.01),
                                ("olmo-7b", 5.0, 0.02)) for b in (1, 8, 64)]
    moe_rows += [(m, "vllm", "greedy", b, j / b ** 0.5, t, None)
                 for m, j, t in (("olmoe-1b-7b", 0.7, 0.002), ("olmo-1b", 0.7, 0.003))
                 for b in (1, 8, 64)]
    db = add_points(tmp_path / "m.db", moe_rows)
    html = build_report([db, tmp_path / "s.db"], [], tmp_path / "b").read_text()
    assert "moe.png" in html and (tmp_path / "b" / "moe.png").read_bytes()[:8] == PNG
    # One row per engine, each with the dense models of the MoE model's runs only (not the
    # llama-3.1-8b greedy points of the speculative store, another run).
    fig = figures.moe_figure(load_points([db, tmp_path / "s.db"]), {"olmoe-1b-7b"})
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == [
        "J per output token, hf-eager", "J per output token, vllm"]
    assert sorted(line.get_label() for line in fig.axes[0].get_lines()) == [
        "olmo-1b", "olmo-7b", "olmoe-1b-7b (MoE)"]
    only_moe = add_points(tmp_path / "o.db", moe_rows[:3])
    html = build_report([only_moe], [], tmp_path / "c").read_text()
    assert "no dense model measured beside it" in html


def test_sampling_is_tabled_against_greedy_at_the_same_engine_batch_and_lengths(tmp_path):
    rows = [("llama-3.1-8b", "vllm", "greedy", b, j, 0.01, None) for b, j in ((1, 2.0), (64, 0.5))]
    rows += [("llama-3.1-8b", "vllm", "sample:top_p=0.9", 64, 0.55, 0.01, None),
             ("llama-3.1-8b", "vllm", "sample:temperature=0.7", 1, 1.9, 0.01, None),
             ("llama-3.1-8b", "hf-eager", "sample:temperature=0.7", 1, 6.0, 0.03, None)]
    points = load_points([add_points(tmp_path / "d.db", rows)])
    assert tables.sampling_rows(points) == [
        # hf-eager has no greedy point to compare with: its change is not shown
        ["hf-eager", "1", "512", "128", "sample:temperature=0.7", "6", "-", "3.84", "-"],
        ["vllm", "1", "512", "128", "greedy", "2", "-", "1.28", "-"],
        ["vllm", "1", "512", "128", "sample:temperature=0.7", "1.9", "-5.0%", "1.28", "-"],
        ["vllm", "64", "512", "128", "greedy", "0.5", "-", "1.28", "-"],
        ["vllm", "64", "512", "128", "sample:top_p=0.9", "0.55", "+10.0%", "1.28", "-"]]
    html = build_report([tmp_path / "d.db"], [], tmp_path / "out").read_text()
    assert "Sampling against greedy" in html and "+10.0%" in html
    assert tables.sampling_rows(points[points.decoding == "greedy"]) == []


def test_a_report_without_data_still_renders_and_says_how_to_measure(tmp_path):
    page = build_report([tmp_path / "none.db"], [], tmp_path / "out")
    html = page.read_text()
    assert "Not shown: no measured points" in html and "infergy sweep paper-bins" in html
    assert "none.db: no such file" in html


def test_report_cli_writes_the_page(tmp_path):
    db = write_store(tmp_path / "r.db")
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "index.html").is_file()


def test_report_cli_refuses_a_store_that_is_not_there(tmp_path):
    """A mistyped --db once wrote a page saying the store was missing, and exited 0."""
    db = write_store(tmp_path / "r.db")
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--db", str(tmp_path / "x.db"),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"--db {tmp_path / 'x.db'}: no such results store" in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def _chromium() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                               "google-chrome")) if p), None)


def test_the_page_opens_in_headless_chromium_with_every_image_loaded(tmp_path):
    """A copy of the page gets a script that writes, once loaded, how many of its images
    have pixels into the title; Chromium dumps the DOM after loading it from disk."""
    import subprocess

    import pytest

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (the Makefile installs the Debian package `chromium` "
                    "where it can)")
    page = build_report([write_store(tmp_path / "r.db")], ["translation"], tmp_path / "out")
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", (
        "<script>window.addEventListener('load', () => { const i = [...document.images];"
        "document.title = 'loaded ' + i.filter(x => x.naturalWidth > 0).length + ' of ' + "
        "i.length; });</script></body>")))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", done.stdout).group(1)
    count = len(re.findall(r"<img ", page.read_text()))
    assert title == f"loaded {count} of {count}" and count >= 7


def test_replays_get_their_own_section_offline_against_the_estimate_and_online(tmp_path):
    offline = {"trace": "azure-code-2023", "mode": "offline", "batching": "binned",
               "model": "tiny", "engine": "hf-eager", "decoding": "greedy", "requests": 6,
               "status": "ok", "energy_j": 100.0, "j_per_output_token": 0.5, "time_s": 2.0,
               "estimate": {"binned_j": 120.0, "errors": {"binned": 0.2, "whole_batches": 1.5,
                                                          "interpolated": -0.05}}}
    offline["selection"] = {"sample": 6, "seed": 0}
    online = {**offline, "mode": "online", "batching": "poisson 4/s", "engine": "h:8000",
              "served_by": "hf-eager", "j_per_output_token": 0.4,
              "completed": 5, "throughput_tok_s": 300.0, "latency": {
                  "ttft_s": {"p50": 0.05, "p99": 0.2}, "tpot_s": {"p50": 0.01}},
              "steady": {"j_per_output_token": 0.4}}
    # Not compared: another engine's server, an --endpoint's (engine unknown), another seed.
    others = [{**online, "served_by": "vllm", "j_per_output_token": 0.3},
              {**online, "served_by": None, "j_per_output_token": 0.3},
              {**online, "selection": {"sample": 6, "seed": 1}, "j_per_output_token": 0.3}]
    with Store(tmp_path / "r.db") as store:
        run = store.start_run(device="GPU-x", meta={"gpus": [{"model": GPU}]}, spec=None)
        for replay in (offline, online, *others):
            store.add_replay(run, "GPU-x", replay)
    html = build_report([tmp_path / "r.db"], [], tmp_path / "out").read_text()
    assert "Offline replays" in html and "+20.0%" in html and "-5.0%" in html
    assert "whole-batches error" in html and "+150.0%" in html
    assert "Online serving" in html and "poisson 4/s" in html and "5 of 6" in html
    # Both replayed the same 6 requests of one trace on one card: compared, online -20%.
    assert "Online against offline" in html and "-20.0%" in html and "-40.0%" not in html
    assert "hf-eager (--serve)" in html and "vllm (--serve)" in html and "h:8000" in html


def test_tensor_parallel_points_get_their_own_section_and_stay_out_of_one_gpus(tmp_path):
    db = write_store(tmp_path / "r.db")
    with Store(db) as store:
        run = store.start_run(device="GPU-x,GPU-y", meta={"gpus": [{"model": GPU}] * 2},
                              spec=None)
        # ranks: each GPU's rank recorded, as where infergy's own ranks split the model
        for tp, batch, time_s, shares, ranks in (
                (2, 1, 0.3, {"gpu0": 95.0, "gpu1": 105.0}, True),
                (4, 1, 0.2, {f"gpu{g}": 62.5 for g in range(4)}, False),
                (2, 64, 9.9, {"gpu0": 5e5, "gpu1": 5e5}, False)):  # B = max: not one GPU's
            point = {"model": "llama-3.1-8b", "engine": "vllm", "batch": batch,
                     "input_tokens": 512, "output_tokens": 64, "decoding": "greedy", "tp": tp,
                     "dtype": "bfloat16"}
            energy = sum(shares.values())
            env = {"NCCL_NVLS_ENABLE": "0", "VLLM_FLASHINFER_ALLREDUCE_BACKEND": "trtllm",
                   "VLLM_ALLREDUCE_USE_SYMM_MEM": "0"} if tp == 4 else {}  # multicast off
            store.add_point(run, "GPU-x,GPU-y", {
                "point": point, "status": "ok", "energy_j": energy, "time_s": time_s,
                "j_per_output_token": energy / (64 * batch), "gpu_energy_j": shares,
                "engine_info": {"engine": "vllm", **({"env": env} if env else {})},
                "provenance": {"versions": {"torch": "2.11.0"}, "gpus": [
                    {"name": g, **({"tp_rank": r} if ranks else {})}
                    for r, g in enumerate(sorted(shares))]}},
                engine_options="{}", batch_requested=1 if batch == 1 else "max")
    points = load_points([db])
    assert sorted(points.tp.unique()) == [1, 2, 4]
    html = build_report([db], ["translation"], tmp_path / "out").read_text()
    section = html[html.index("Tensor parallelism"):]
    assert "tensor-parallel.png" in section
    # vllm B = 1, I = 512, O = 64 at TP 1 took 0.64 s and 0.05 * 512 + 2 * 64 = 153.6 J
    assert "-53.1%" in section and "+30.2%" in section  # TP 2: 0.3 s, 200 J
    assert "-68.8%" in section and "+62.8%" in section  # TP 4: 0.2 s, 250 J
    assert "gpu0 (rank 0) 95, gpu1 (rank 1) 105" in section
    assert "gpu0 62.5, gpu1 62.5" in section  # no ranks of infergy's own: none named
    # the TP 4 point ran where multicast was off: the table says what it ran without
    assert section.count("without its all-reduce + RMS-norm fusion") == 1
    assert "NVLink multicast off on the host (NCCL_NVLS_ENABLE=0)" in section
    # One GPU's figures and the estimate hold TP 1 only: the heatmap of vllm (B = max) is
    # the same image without the TP 2 points, and the profile keeps the TP 1 point's energy.
    one_gpu = build_report([write_store(tmp_path / "s.db")], [], tmp_path / "one")
    assert (tmp_path / "out" / "heatmap-vllm.png").read_bytes() == \
        (tmp_path / "one" / "heatmap-vllm.png").read_bytes()
    assert one_gpu.read_text().count("Tensor parallelism") == 0
    profile = load_profile([db], "llama-3.1-8b", "vllm")
    assert profile.points[(512, 64)]["energy_j"] == pytest.approx(0.05 * 512 * 64 + 2 * 64 * 8)


def test_a_figures_caption_names_each_package_once_though_its_points_ran_different_engines():
    pd = pytest.importorskip("pandas")
    points = pd.DataFrame({
        "gpu": ["NVIDIA H100 80GB HBM3"] * 2, "model": ["llama-3.1-8b"] * 2,
        "software": ["torch 2.11.0, transformers 5.17.0",
                     "torch 2.11.0, transformers 5.17.0, vllm 0.26.0"],
        "day": ["2026-11-27"] * 2})
    assert figures.provenance(points) == ("llama-3.1-8b on NVIDIA H100 80GB HBM3; torch 2.11.0, "
                                          "transformers 5.17.0, vllm 0.26.0; measured 2026-11-27")


def test_a_cards_provenance_and_repeatability_come_from_its_runs_and_repeats(tmp_path):
    """Two GPUs of one card, each with its own run: driver, power limit and idle power as
    measured; repeats' CV over the points whose windows last 2 s or more."""
    db = tmp_path / "r.db"
    with Store(db) as store:
        for device, driver, idle, day, host in (
                ("GPU-aaaaaaaa-1111", "580.159.04", 71.04, "26", {"cpu": "AMD EPYC", "cpus": 16}),
                ("GPU-bbbbbbbb-2222", "580.159.03", 78.35, "27", {"hostname": "vm"})):
            run = store.start_run(device=device, meta={
                "gpus": [{"model": GPU, "driver": driver, "power_limit_w": 700.0}],
                "idle_w": {"gpu0": idle}}, spec=None)
            # (time s, runs a window, CV): long and steady, long and 12% apart, a window of
            # 0.5 s (left out: the counter's steps), and a point whose CV was not measured
            for o, (time_s, runs, cv) in zip((8, 16, 32, 64), ((3.0, 1, 0.01),
                                                               (2.5, 1, 0.12), (0.1, 5, 0.3),
                                                               (4.0, 1, None)), strict=True):
                point = {"model": "llama-3.1-8b", "engine": "vllm", "batch": 1,
                         "input_tokens": 512, "output_tokens": o, "decoding": "greedy",
                         "tp": 1, "dtype": "bfloat16"}
                point_id = store.add_point(run, device, {
                    "point": point, "status": "ok", "energy_j": 10.0, "time_s": time_s,
                    "j_per_output_token": 10.0 / o, "energy_cv": cv, "runs_per_window": runs,
                    "provenance": {"versions": {"torch": "2.11.0", "vllm": "0.26.0"},
                                   "host": host}},
                    engine_options="{}", batch_requested=1)
                store.db.execute("UPDATE points SET measured_at = ? WHERE id = ?",
                                 (f"2026-11-{day}T13:{10 + o // 8}:00+00:00", point_id))
    html = build_report([db], [], tmp_path / "out").read_text()
    section = html[html.index(f"Provenance and repeatability on {GPU}"):]
    rows = [re.findall(r"<td>([^<]*)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", section,
                                                                    flags=re.S)]
    rows = [r for r in rows if r]
    assert rows[0] == ["GPU-aaaaaaaa…", "4", "2026-11-26 13:11 to 13:18", "580.159.04", "700",
                       "71.0", "AMD EPYC, 16 CPUs", "torch 2.11.0, vllm 0.26.0"]
    # points measured before the host's CPU was recorded
    assert rows[1][:7] == ["GPU-bbbbbbbb…", "4", "2026-11-27 13:11 to 13:18", "580.159.03",
                           "700", "78.3", "not recorded"]
    # 8 points; 4 with windows of 2 s or more and a CV (3 s, 2.5 s on each GPU): mean 6.5%
    assert rows[2] == ["vllm", "greedy", "1", "1", "8", "4", "6.5%", "12.0%",
                       "512/16 B=1 12.0%, 512/16 B=1 12.0%"]


def write_cpu_store(path, points):
    """A store as a sweep writes it on a machine without a GPU: its run has no GPU name, its
    device is the CPU's (cpu:HOST), and its points have times but no energy (None).
    `points`: (engine, I, O, batch, batch requested, status)."""
    with Store(path) as store:
        run = store.start_run(device="cpu:vm", meta={"host": {"hostname": "vm"}}, spec=None)
        for engine, i, o, batch, requested, status in points:
            point = {"model": "tiny", "engine": engine, "batch": batch, "input_tokens": i,
                     "output_tokens": o, "decoding": "greedy", "tp": 1, "dtype": "bfloat16"}
            ok = status == "ok"
            store.add_point(run, "cpu:vm", {
                "point": point, "status": status, "error": None if ok else "out of memory",
                "energy_j": None, "j_per_output_token": None, "prefill_energy_j": None,
                "decode_energy_j": None, "time_s": 0.001 * batch * (i + o) if ok else None,
                "tpot_s": 0.001 if ok else None, "energy_cv": None, "runs_per_window": 1,
                "energy_reason": "no GPU measured: NVML library not found",
                "provenance": {"versions": {"torch": "2.13.0+cpu"}}},
                engine_options="{}", batch_requested=requested)
    return path


CPU_SWEEP = [(e, i, o, b, r, "ok") for e in ("hf-eager", "hf-paged") for i in (8, 32)
             for o in (4, 8) for b, r in ((1, 1), (4, 4), (1024, "max"))]


@pytest.mark.parametrize("points", [
    CPU_SWEEP,  # every engine, bin and batch of a CPU sweep
    [("hf-eager", 8, 4, 1, 1, "ok")],  # a single point
    [("hf-eager", 8, 4, b, r, "ok") for b, r in ((1, 1), (4, 4), (1024, "max"))],  # one bin
    [p for p in CPU_SWEEP if p[4] != "max"],  # no B = max point
], ids=["sweep", "one point", "one engine one bin", "no B = max"])
def test_a_store_measured_without_an_energy_sensor_shows_times_and_says_why(tmp_path, points):
    """Every CPU sweep's store once crashed the report ("Data cannot be log-scaled"): the
    one end-to-end path a user without a GPU can try."""
    db = write_cpu_store(tmp_path / "cpu.db", points)
    html = build_report([db], ["translation"], tmp_path / "out").read_text()
    text = " ".join(html.split())
    assert "Measurements on cpu:vm (CPU, no GPU)" in text
    assert "no energy measured: no GPU sensor" in text
    assert "translation on tiny on cpu:vm (CPU, no GPU): not estimated: no " in text
    for name in re.findall(r'<img src="([^"]+)"', html):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG
    batches = {p[3] for p in points}
    assert ("batch.png" in html) == (len(batches) > 1)  # times against batch size
    if any(p[4] == "max" for p in points):  # B = max: the throughput over the bins
        assert "heatmap-hf-eager.png" in html
        assert "not estimated: no energy measured: no GPU sensor (its points were measured " \
               "on cpu:vm)" in text
    else:
        assert "heatmap of hf-eager: no B = max points" in text
        assert "not estimated: no B = max point" in text
    # The same from the command line: exit 0, no traceback.
    result = CliRunner().invoke(app, ["report", "--db", str(db), "-t", "translation", "--out",
                                      str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def test_a_cpu_stores_figures_draw_times_and_throughput_not_energy(tmp_path):
    points = load_points([write_cpu_store(tmp_path / "cpu.db", CPU_SWEEP)])
    fig = figures.batch_figure(points[points.engine == "hf-eager"])
    energy, time = fig.axes
    assert [t.get_text() for t in energy.texts] == ["no energy measured: no GPU sensor"]
    assert [line.get_label() for line in time.get_lines()] == ["hf-eager"]
    heat = figures.heatmap_figure(points, "hf-eager")
    assert "throughput over the bins (no energy measured: no GPU sensor)" in \
        heat.texts[0].get_text().replace("\n", " ")
    assert heat.axes[1].get_ylabel() == "output tokens per second at B = max"
    # 1024 requests of 8 + 4 tokens in 1024 x 0.012 s: 4 x 1024 tokens / 12.288 s = 333
    assert "333" in [t.get_text() for t in heat.axes[0].texts]
    for figure in (figures.phases_figure, figures.pareto_figure, figures.tp_figure):
        assert figure(points) is None  # energy only: the page says why instead
    assert figures.decoding_figure(points, "beam") is None


def test_a_store_of_failed_points_only_says_so(tmp_path):
    db = write_cpu_store(tmp_path / "cpu.db", [("hf-eager", 8, 4, 1024, "max", "oom"),
                                               ("hf-eager", 8, 4, 1, 1, "failed")])
    html = build_report([db], ["translation"], tmp_path / "out").read_text()
    assert "no measured points (they hold only 1 failed, 1 oom points: `infergy results " \
           "list --db STORE` shows why)" in " ".join(html.split())


def test_heatmap_numbers_are_dark_on_light_cells_and_light_on_dark():
    import matplotlib

    viridis = matplotlib.colormaps["viridis"]
    assert figures.text_color(viridis(1.0)) == "black"  # yellow
    assert figures.text_color(viridis(0.75)) == "black"  # green
    assert figures.text_color(viridis(0.0)) == "white"  # dark purple
    assert figures.text_color((1.0, 1.0, 1.0, 1.0)) == "black"
    assert figures.text_color((0.0, 0.0, 0.5, 1.0)) == "white"


def test_heatmap_cells_text_contrasts_with_its_cell(tmp_path):
    points = load_points([write_store(tmp_path / "r.db")])
    fig = figures.heatmap_figure(points, "vllm")
    ax = fig.axes[0]
    image = ax.get_images()[0]
    grid = image.get_array()
    colors = set()
    for text in ax.texts:
        x, y = (round(v) for v in text.get_position())
        expected = figures.text_color(image.cmap(image.norm(grid[y, x])))
        assert text.get_color() == expected
        colors.add(expected)
    assert colors == {"black", "white"}  # this grid spans light and dark cells


def test_no_figure_title_is_cut_at_the_figures_edges(tmp_path):
    """The estimate figure's title ran past its right edge; every title wraps to fit."""
    long_card = "NVIDIA H100 80GB HBM3"
    db = write_store(tmp_path / "r.db", gpu=long_card)
    points = load_points([db])
    trace = get_trace("translation")
    rows = [{"engine": "hf-eager", "kwh": 0.2, "theoretical_kwh": 0.1, "gpu": long_card},
            {"engine": "vllm", "kwh": 0.1, "theoretical_kwh": 0.1, "gpu": long_card}]
    made = [figures.estimate_figure(rows, "a-workload-with-a-rather-long-trace-name", points),
            figures.batch_figure(points), figures.phases_figure(points),
            figures.pareto_figure(points), figures.heatmap_figure(points, "vllm"),
            cdf_figure(trace, BinGrid.named("paper"))]
    for fig in made:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        for text in fig.texts:  # the title and the footer
            extent = text.get_window_extent(renderer)
            assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, text.get_text()
            assert extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1, text.get_text()
        for ax in fig.axes:  # the title clear of the panels
            title = fig.texts[0].get_window_extent(renderer)
            assert ax.get_tightbbox(renderer).y1 <= title.y0 + 1
    assert "\n" in made[0].texts[0].get_text()  # the long title wrapped


def test_the_reports_headline_is_the_estimate_of_the_same_trace_and_profile(tmp_path):
    """`infergy estimate` and the report once disagreed (0.1762 against 0.1781 kWh): the
    report charged requests past the last bin at the last edge. One default (excluded, as
    the study did, and counted), one code path."""
    db = write_store(tmp_path / "p.db", inputs=(32, 128, 256, 512, 1024, 2048, 4096, 8192),
                     outputs=(8, 16, 32, 64, 128, 256, 512))
    runner = CliRunner()
    estimated = runner.invoke(app, ["estimate", "-t", "azure-code-2023", "-m", "llama-3.1-8b",
                                    "-e", "hf-eager,vllm", "--profile", str(db), "--json"])
    assert estimated.exit_code == 0, estimated.output
    engines = json.loads(estimated.output)["gpus"][0]["engines"]
    result = runner.invoke(app, ["report", "--db", str(db), "-t", "azure-code-2023", "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "out" / "index.html").read_text()
    answer = re.findall(r"<table>.*?</table>", html, flags=re.S)[0]
    shown = dict(re.findall(r"<tr><td>(hf-eager|vllm)</td><td>([^<]*)</td>", answer))
    assert shown == {e["engine"]: f"{e['kwh']:.4g}" for e in engines}
    assert "8792 of 8819 requests in the bins; 27 lie past the last bin edge (0 by input, " \
           "27 by output): excluded" in answer
    assert f"infergy estimate -t azure-code-2023 -m llama-3.1-8b -e hf-eager,vllm --profile " \
           f"{db}" in html  # the command that prints the same numbers


def test_a_report_without_db_reads_the_shipped_profiles_as_estimate_does(tmp_path):
    """The issue's example: `infergy estimate -t azure-code-2023 -m llama-3.1-8b` says
    0.1762 kWh on hf-eager; the report of the same trace, from the same shipped profile,
    the same."""
    runner = CliRunner()
    estimated = runner.invoke(app, ["estimate", "-t", "azure-code-2023", "-m", "llama-3.1-8b"],
                              env={"COLUMNS": "200"})
    assert estimated.exit_code == 0, estimated.output
    kwh = re.search(r"hf-eager\W+([0-9.]+)", estimated.output).group(1)
    result = runner.invoke(app, ["report", "-t", "azure-code-2023", "-m", "llama-3.1-8b",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "out" / "index.html").read_text()
    answer = re.findall(r"<table>.*?</table>", html, flags=re.S)[0]
    assert re.search(r"<tr><td>hf-eager</td><td>([^<]*)</td>", answer).group(1) == kwh
    assert ("From the profiles shipped with infergy (llama-3.1-8b-h100.db, "
            "llama-3.1-8b-h200.db)") in html
    assert "infergy estimate -t azure-code-2023 -m llama-3.1-8b -e hf-eager," in html
    # The H200's calibrated profile (issue 30): its bins not measured said so.
    assert "not measured on this card" in html
    # What it was doing, said on stderr as it went (plain lines: not a terminal here).
    lines = result.output.splitlines()
    for step in ("report: loading 2 stores", "report: estimating azure-code-2023 on "
                 "llama-3.1-8b", "report: drawing batch"):
        assert any(step in line for line in lines), step


@pytest.mark.parametrize("case", ["out is a file", "out cannot be made", "db is a folder",
                                  "db is not a store", "db is half a store"])
def test_report_refuses_a_bad_out_or_db_before_any_work(tmp_path, case):
    good = write_store(tmp_path / "r.db")
    db, out = good, tmp_path / "out"
    if case == "out is a file":
        out = tmp_path / "page.html"
        out.write_text("mine")
        expected = f"--out {out}: is a file; give a folder to write into"
    elif case == "out cannot be made":  # under a file: no folder can be made there
        (tmp_path / "notes.txt").write_text("mine")
        out = tmp_path / "notes.txt" / "report"
        expected = f"--out {out}: folder {out} cannot be made"
    elif case == "db is a folder":
        db = tmp_path / "folder.db"
        db.mkdir()
        expected = f"--db {db}: is a folder"
    elif case == "db is not a store":
        db = tmp_path / "notes.db"
        db.write_text("not a database")
        expected = f"{db}"  # the store's own message: not a store
    else:
        db = tmp_path / "half.db"
        db.write_bytes(good.read_bytes()[:3000])
        expected = f"{db}"  # damaged: the store's own message says so
    before = db.read_bytes() if db.is_file() else None
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--out", str(out)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert expected in message and ("store" in message or "folder" in message)
    assert "Traceback" not in result.output
    if before is not None:
        assert db.read_bytes() == before  # refused: not touched
    if case == "out is a file":
        assert out.read_text() == "mine"
    assert not (out / "index.html").exists()


def test_a_real_cpu_sweeps_store_makes_a_report_end_to_end(tmp_path):
    """The first thing a user without a GPU can try: a sweep of the tiny model on the CPU,
    then its report. Times are drawn; energy is said to be missing, and why."""
    spec = parse_spec({"models": ["tiny"], "engines": ["hf-eager"], "input_tokens": [8, 16],
                       "output_tokens": [2], "batch_sizes": [1, 2], "repeats": 1, "warmup": 0,
                       "idle_s": 0}, "test spec")
    with Store(tmp_path / "cpu.db") as store:
        assert run_sweep(spec, store, device="cpu").measured == 4
    result = CliRunner().invoke(app, ["report", "--db", str(tmp_path / "cpu.db"), "-t",
                                      "translation", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    html = " ".join((tmp_path / "out" / "index.html").read_text().split())
    assert "batch.png" in html and "no energy measured: no GPU sensor" in html
    assert (tmp_path / "out" / "batch.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(("args", "expected"), [
    (["--usd-per-kwh", "-1"], "--usd-per-kwh: expected a number of 0 or more, got -1"),
    (["--grid-gco2-per-kwh", "nan"], "--grid-gco2-per-kwh: expected a number of 0 or more"),
    (["--grid-gco2-per-kwh", "inf"], "--grid-gco2-per-kwh: expected a number of 0 or more"),
    (["-m", "llama-3.1-8bb"], "--model: unknown model 'llama-3.1-8bb'"),
    (["-t", "no-such-trace"], "no-such-trace: not a built-in trace"),
])
def test_report_refuses_bad_options_with_a_clear_message(tmp_path, args, expected):
    result = CliRunner().invoke(app, ["report", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "index.html").exists()


def test_a_store_of_one_measured_point_is_estimated_on_its_own_edges(tmp_path):
    """One B = max point with energy: no batch, phases or Pareto figure (said), a heatmap of
    one cell, and the trace estimated on that one bin, with the command that agrees."""
    with Store(tmp_path / "one.db") as store:
        run = store.start_run(device="GPU-x", meta={"gpus": [{"model": GPU}]}, spec=None)
        point = {"model": "llama-3.1-8b", "engine": "vllm", "batch": 64, "input_tokens": 512,
                 "output_tokens": 64, "decoding": "greedy", "tp": 1, "dtype": "bfloat16"}
        store.add_point(run, "GPU-x", {
            "point": point, "status": "ok", "energy_j": 100.0, "j_per_output_token": 100 / 4096,
            "time_s": 1.0, "prefill_energy_j": 30.0, "decode_energy_j": 70.0},
            engine_options="{}", batch_requested="max")
    html = build_report([tmp_path / "one.db"], ["translation"], tmp_path / "out").read_text()
    text = " ".join(html.split())
    assert "heatmap-vllm.png" in html and "estimate-translation-llama-3.1-8b.png" in html
    for stem in ("batch", "phases", "pareto"):
        assert f"Not shown: {stem}: not enough points" in text
    assert "Bins: this card&#39;s measured edges (input 512; output 64)" in text
    assert "-e vllm --profile " in text and "--input-edges 512 --output-edges 64" in text
    # 1024 requests of 64 at 100 J a batch of 64: 1600 J
    # One point without an idle power: nothing to simulate, the study's formula said as such
    assert re.search(r"<tr><td>vllm</td><td>0.0004444</td><td>study&#39;s formula only</td>"
                     r"<td>1.562</td>", html)


def test_the_phases_figure_draws_both_fixed_lengths_of_the_study_s_length_sweeps(tmp_path):
    """Inputs swept at outputs 64 and 8, outputs at inputs 512 and 64 (the length-sweep
    preset): a line for each fixed length; a full grid of 3 x 3 keeps one."""
    db = write_store(tmp_path / "s.db", inputs=(16, 32, 64, 128, 512), outputs=(64, 8))
    write_store(db, inputs=(512, 64), outputs=(1, 2, 4, 16, 32))
    fig = figures.phases_figure(load_points([db]))
    left, right = fig.axes[:2]
    assert {line.get_label() for line in left.get_lines()} == {
        "B = 1, output 64", "B = 1, output 8", "B = max (per length), output 64",
        "B = max (per length), output 8"}
    assert {line.get_label() for line in right.get_lines()} >= {"B = 1, input 512",
                                                                 "B = 1, input 64"}
    grid = figures.phases_figure(load_points([write_store(tmp_path / "g.db",
                                                          outputs=(8, 64, 512))]))
    assert {line.get_label() for line in grid.axes[0].get_lines()} == {
        "B = 1", "B = max (per length)"}
