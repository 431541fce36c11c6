"""The HTML report from a store written here: every figure a valid image, every table with
its rows, and a page that still renders, saying what is missing, without data."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from infergy.cli import app
from infergy.estimate import load_profile
from infergy.profile import load_points
from infergy.report import build_report, figures
from infergy.store import Store
from infergy.workloads import BinGrid, get_trace

PNG = b"\x89PNG\r\n\x1a\n"
GPU = "NVIDIA H100 80GB HBM3"


def write_store(path, gpu=GPU, card_scale=1.0):
    """hf-eager and vllm (half hf-eager's energy) on one card, at B = 1 and max over 3 x 2
    lengths; `card_scale` multiplies every energy."""
    with Store(path) as store:
        run = store.start_run(device="GPU-x", meta={"gpus": [{"model": gpu}]}, spec=None)
        for engine, scale in (("hf-eager", 2.0 * card_scale), ("vllm", 1.0 * card_scale)):
            for i in (32, 128, 512):
                for o in (8, 64):
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
    assert tables[0].count("<tr>") == 2 and "GPU-x…" in tables[0]  # header + the one GPU
    assert tables[1].count("<tr>") == 5  # hf-eager and vllm, each at B = 1 and max
    tables = tables[2:]
    assert tables[0].count("<tr>") == 2  # header + the trace
    assert tables[1].count("<tr>") == 3 and "50.0%" in tables[1]  # hf-eager, vllm
    binned = BinGrid((32, 128, 512), (8, 64), "clamp").assign(
        get_trace("translation").input_tokens, get_trace("translation").output_tokens)
    assert tables[2].count("<tr>") == 1 + int((binned.counts() > 0).sum())  # a row a bin
    assert "How these numbers were made" in html and "Not shown" not in html


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
