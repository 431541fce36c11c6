"""`infergy report`: a self-contained HTML page (index.html, figures as PNG and SVG beside it)
from results stores and traces. Every figure says what it was measured on; each card the
stores hold gets its own sections, figures and estimate, never one figure or table with two
cards' energies. A figure or table whose data are missing says so and which command would
measure them."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment

from infergy.engines.vllm import NO_MULTICAST_ENV
from infergy.models import UnknownModelError, get_model
from infergy.profile.points import load_points
from infergy.report import figures, tables
from infergy.report.estimates import estimate_section
from infergy.report.replays import replay_section
from infergy.report.section import Section, card_tag, change, num, save
from infergy.report.tables import NO_GPU_NAME
from infergy.store.quality import STEADY_CV, STEADY_WINDOW_S
from infergy.workloads import BinGrid, describe, get_trace

# Ember, Global Electricity Review 2024: world average carbon intensity of electricity in 2023.
WORLD_GCO2_PER_KWH = 480.0
GRID_SOURCE = "Ember, Global Electricity Review 2024 (world average, 2023)"


def build_report(stores: list[Path], traces: list[str], out: Path, *, model: str | None = None,
                 grid_gco2_per_kwh: float = WORLD_GCO2_PER_KWH,
                 usd_per_kwh: float | None = None) -> Path:
    """Write out/index.html and its figures; the path of the page. Each GPU model (card) the
    stores hold gets its own sections, figures and estimate tables: no figure or table holds
    two cards' points. With several cards, the figures' files end in the card's name
    (batch-h100-sxm.png); with one, they do not (batch.png)."""
    out.mkdir(parents=True, exist_ok=True)
    found = [Path(s) for s in stores if Path(s).is_file()]
    points = load_points(found)
    missing_stores = [str(s) for s in stores if not Path(s).is_file()]
    if model and not points.empty:
        points = points[points.model == model]
    # A run that recorded no GPU name: its points are a card of their own, named as unknown.
    points = points.assign(gpu=points.gpu.fillna(NO_GPU_NAME))
    cards = sorted(points.gpu.unique())
    sections: list[Section] = []
    measure = ("measure them with `infergy sweep paper-bins -m llama-3.1-8b -e hf-eager -e vllm "
               "--db FILE` and pass --db FILE")
    if points.empty:
        absent = f" ({', '.join(missing_stores)}: no such file)" if missing_stores else ""
        of = f" of {model}" if model else ""
        sections.append(Section("Measurements",
                                missing=[f"no measured points{of}{absent}: {measure}"]))
    for card in cards:
        sections.extend(_card_sections(points[points.gpu == card], card, cards, out, measure))
    if traces:
        sec = Section("Workloads")
        if len(cards) > 1:
            sec.text = (f"Estimated from the stores' points of each card apart ("
                        f"{', '.join(cards)}), each against the theoretical baseline of its "
                        f"own datasheet: the cards' energies are not compared here (their "
                        f"B = max, and so the batches charged, differ).")
        stats = []
        greedy = points[(points.tp == 1) & (points.decoding == "greedy")]
        for name in traces:
            trace = get_trace(name)
            d = describe(trace)
            stats.append([d["name"], d["requests"], f"{d['input']['mean']:.1f} ± "
                          f"{d['input']['std']:.1f}", d["input"]["median"], d["input"]["p99"],
                          f"{d['output']['mean']:.1f} ± {d['output']['std']:.1f}",
                          d["output"]["median"], d["output"]["p99"]])
            save(figures.cdf_figure(trace, BinGrid.named("paper")), out,
                 f"cdf-{trace.name}", sec, "")
            if not greedy.empty:
                estimate_section(trace, greedy, found, cards, out, sec, grid_gco2_per_kwh,
                                 usd_per_kwh)
        sec.tables.insert(0, {"title": "Traces (tokens; the study's Tables 1-2)",
                              "columns": ["trace", "requests", "input mean ± std", "median",
                                          "p99", "output mean ± std", "median", "p99"],
                              "rows": stats})
        sections.append(sec)
    replays = replay_section(found)
    if replays is not None:
        sections.append(replays)
    page = out / "index.html"
    page.write_text(_render(sections, grid_gco2_per_kwh))
    return page


def _card_sections(points, card: str, cards: list[str], out: Path,
                   measure: str) -> list[Section]:
    """One card's sections: its one-GPU figures (greedy decoding), speculative decoding, beam
    search and mixture of experts where measured, and tensor parallelism."""
    several = len(cards) > 1
    tag = f"-{card_tag(card)}" if several else ""
    on = f" on {card}" if several else ""
    one_gpu = points[points.tp == 1]  # one GPU: the tensor-parallel ones get their section
    sec = Section(f"Measurements on {card}", text=f"{len(one_gpu)} measured points on {card} "
                  f"from {', '.join(sorted(one_gpu.store.unique())) or 'no store'}; the "
                  f"figures below are of greedy decoding"
                  + (f", of this card only (the stores hold {len(cards)} cards, each in its "
                     f"own sections)." if several else "."))
    greedy = one_gpu[one_gpu.decoding == "greedy"]
    for stem, make in (("batch", figures.batch_figure), ("phases", figures.phases_figure),
                       ("pareto", figures.pareto_figure)):
        save(make(greedy), out, f"{stem}{tag}", sec,
             f"{stem}{on}: not enough points ({measure})")
    for engine in sorted(greedy.engine.unique()):
        save(figures.heatmap_figure(greedy, engine), out, f"heatmap-{engine}{tag}", sec,
             f"heatmap of {engine}{on}: no B = max points ({measure})")
    sections = [sec, *_decoding_sections(one_gpu, out, tag, on)]
    tp_section = _tp_section(points, out, tag, on)
    if tp_section is not None:
        sections.append(tp_section)
    sections.append(_provenance_section(points, card))
    return sections


def _provenance_section(points, card: str) -> Section:
    """Where and when the card's points were measured, and how well each point's repeats
    agree, per engine, decoding, TP and batch."""
    sec = Section(f"Provenance and repeatability on {card}", text=(
        f"Every GPU of this card that measured these points, and the spread of each point's "
        f"repeats: the CV of its energy, over the points whose windows lasted at least "
        f"{STEADY_WINDOW_S:g} s (shorter ones vary by the energy counter's steps alone). A "
        f"point over {STEADY_CV:.0%} is flagged when measured; `infergy results show ID` says "
        f"why (where its runs' times varied as much, the host launching the kernels set the "
        f"pace, not the GPU). Each point keeps its repeats, windows, GPU state and software "
        f"in its store."))
    sec.tables.append({"title": "Where and when (each GPU by its UUID's first characters)",
                       "columns": tables.PROVENANCE_COLUMNS,
                       "rows": tables.provenance_rows(points)})
    sec.tables.append({"title": "Repeatability: CV of energy over each point's repeats",
                       "columns": tables.REPEATABILITY_COLUMNS,
                       "rows": tables.repeatability_rows(points)})
    return sec


def _decoding_sections(points, out: Path, tag: str = "", on: str = "") -> list[Section]:
    """Speculative decoding, beam search and mixture of experts, where one card's points hold
    such points (`tag`: the end of the figures' file names; `on`: the card in titles, where
    several)."""
    sections = []
    for strategy, text, sweeps in (
            ("speculative", "Acceptance set by `acceptance=` is a measurement device for random "
             "weights (docs/methodology.md); the legend gives the acceptance observed per "
             "token. One figure per engine: hf-eager's is infergy's own loop, vLLM's its own "
             "speculative decoding.", "speculative-llama-3.1-8b*.yaml"),
            ("beam", "Every beam runs to its full length; J per output token counts the one "
             "sequence returned per request. One figure per engine: hf-eager's is "
             "transformers' `generate`, vLLM's its `LLM.beam_search`.",
             "beam-llama-3.1-8b.yaml")):
        engines = sorted(points[points.decoding.str.startswith(strategy)].engine.unique())
        if not engines:
            continue
        title = figures.STRATEGY_TITLES[strategy]
        sec = Section(f"{title}{on}", text=text)
        for engine in engines:  # an engine's own name in the file where several
            name = f"{strategy}-{engine}" if len(engines) > 1 else strategy
            save(figures.decoding_figure(points[points.engine == engine], strategy), out,
                 f"{name}{tag}", sec,
                 f"{title.lower()} on {engine}: no greedy points of the same model, engine "
                 f"and lengths to compare with (the sweeps benchmarks/sweeps/{sweeps} "
                 f"measure both)")
        sections.append(sec)

    def is_moe(name: str) -> bool:
        try:
            return get_model(name).is_moe
        except UnknownModelError:
            return False

    moe = {m for m in points.model.unique() if is_moe(m)}
    if moe:
        sec = Section(f"Mixture of experts{on}")
        save(figures.moe_figure(points, moe), out, f"moe{tag}", sec,
             "mixture of experts: no dense model measured beside it "
             "(benchmarks/sweeps/moe-olmo.yaml measures OLMoE with OLMo-1B and OLMo-7B)")
        sections.append(sec)
    return sections


def _tp_section(points, out: Path, tag: str = "", on: str = "") -> Section | None:
    """Tensor parallelism (the study's Figure 6) on one card: one point's latency and energy
    at every TP size measured, against TP 1, with each GPU's share."""
    if not (points.tp > 1).any():
        return None
    sec = Section(f"Tensor parallelism{on}", text=(
        "The same point (model, engine, B, I, O) split over N GPUs of one host (`--tp N`); "
        "energy is every participating GPU's, summed, and only theirs (the host's other "
        "GPUs are not measured)."))
    rows = []
    for (model, engine, _, decoding, b, i, o, gpu), series in figures.tp_series(points):
        one = series[series.tp == 1].iloc[0]
        for _, p in series.iterrows():
            shares = ", ".join(f"{g}{_rank(p.gpu_ranks, g)} {j:.4g}"
                               for g, j in sorted(p.gpu_energy_j.items()) if j is not None)
            rows.append([model, engine, decoding, str(b), str(i), str(o), str(p.tp),
                         f"{p.time_s:.3g}", f"{p.time_s / one.time_s - 1:+.1%}",
                         num(p.energy_j, "{:.4g}"),
                         num(change(p.energy_j, one.energy_j), "{:+.1%}"), shares or "-", gpu,
                         _tp_note(p.engine_env)])
    if not rows:
        sec.missing.append("tensor parallelism: no point measured at TP 1 and at a larger TP "
                           "on one card (measure the same point with `--tp 1` and `--tp 2`)")
        return sec
    save(figures.tp_figure(points), out, f"tensor-parallel{tag}", sec, "")
    sec.tables.append({"title": "Against TP 1 on the same card (the study: TP 2 -40% latency, "
                                "+29% energy; TP 4 -61%, +55%)", "columns": [
        "model", "engine", "decoding", "B", "I", "O", "TP", "time s", "time vs TP 1", "energy J",
        "energy vs TP 1", "each GPU's J", "GPU", "note"], "rows": rows})
    return sec


def _rank(ranks: dict, gpu: str) -> str:
    """Which rank ran on `gpu`, where ranks of infergy's own split it (hf-eager)."""
    return f" (rank {ranks[gpu]})" if gpu in ranks else ""


def _tp_note(env: dict) -> str:
    """What a split point ran without, where its host turned NVLink multicast off."""
    if not any(k in env for k in NO_MULTICAST_ENV):
        return ""
    return ("vLLM without its all-reduce + RMS-norm fusion: NVLink multicast off on the host ("
            + ", ".join(f"{k}={v}" for k, v in env.items() if k not in NO_MULTICAST_ENV) + ")")


METHOD = """Energy is GPU energy from NVIDIA's NVML energy counter over each window (power sampled
every 50 ms as a cross-check), with the GPU's idle power measured at the start of each run and
reported apart. Each point is a batch of B prompts of exactly I tokens generating exactly O
tokens; it is run once to warm up, then 3 times, and the median is shown. Models have random
bf16 weights: every matmul and attention has the same shape and count as with trained weights,
and outputs are forced to their full length, so the compute, and the energy, are the same.
Not measured: CPU, host memory, power supply losses, cooling and networking; tokens a trained
model would stop early. Estimates charge each request at its ceiling bin's measured energy
per request at the largest batch that fits (the study's method); the theoretical baseline is
TDP / dense bf16 peak x FLOPs."""


def _render(sections: list[Section], gco2: float) -> str:
    template = Environment(autoescape=True).from_string(TEMPLATE)
    return template.render(sections=sections, method=METHOD, gco2=gco2, grid_source=GRID_SOURCE)


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>infergy report</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.missing { color: #8a5a00; background: #fff6e0; padding: 0.4em 0.8em; }
.method { background: #f4f6f8; padding: 0.8em 1em; }
</style></head><body>
<h1>infergy report</h1>
<div class="method"><h2>How these numbers were made</h2><p>{{ method }}</p>
<p>Carbon: {{ gco2 }} gCO2e per kWh ({{ grid_source }}, unless --grid-gco2-per-kwh was
given).</p></div>
{% for s in sections %}
<h2>{{ s.title }}</h2>
{% if s.text %}<p>{{ s.text }}</p>{% endif %}
{% for m in s.missing %}<p class="missing">Not shown: {{ m }}</p>{% endfor %}
{% for t in s.tables %}
<table><caption>{{ t.title }}</caption>
<tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% endfor %}
{% for f in s.figures %}
<figure><img src="{{ f }}.png" alt="{{ f }}"><figcaption><a href="{{ f }}.svg">SVG</a>
</figcaption></figure>
{% endfor %}
{% endfor %}
</body></html>
"""
