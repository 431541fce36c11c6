"""`infergy report`: a self-contained HTML page (index.html, figures as PNG and SVG beside it)
from results stores and traces. Every figure says what it was measured on; each card the
stores hold gets its own sections, figures and estimate, never one figure or table with two
cards' energies. A figure or table whose data are missing says so and which command would
measure them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

from jinja2 import Environment

from infergy.engines.vllm import NO_MULTICAST_ENV
from infergy.estimate import Advice, EstimateError, Target, advise_trace
from infergy.models import UnknownModelError, get_model
from infergy.profile import shipped_profiles
from infergy.profile.points import load_points, stored_points
from infergy.report import figures, tables
from infergy.report.advice import advice_sections
from infergy.report.cdf import cdf_figure
from infergy.report.estimates import estimate_section
from infergy.report.replays import replay_section
from infergy.report.section import Section, card_tag, save
from infergy.report.tables import change, num
from infergy.store.quality import STEADY_CV, STEADY_WINDOW_S
from infergy.workloads import BinGrid, describe, get_trace

# Ember, Global Electricity Review 2024: world average carbon intensity of electricity in 2023.
WORLD_GCO2_PER_KWH = 480.0
GRID_SOURCE = "Ember, Global Electricity Review 2024 (world average, 2023)"
MEASURE = ("measure them with `infergy sweep paper-bins -m llama-3.1-8b -e hf-eager -e vllm "
           "--db FILE` and pass --db FILE")


def build_report(stores: list[Path] | None, traces: list[str], out: Path, *,
                 model: str | None = None, grid_gco2_per_kwh: float = WORLD_GCO2_PER_KWH,
                 usd_per_kwh: float | None = None,
                 progress: Callable[[str], None] | None = None,
                 slo: Sequence[Target] | None = None) -> Path:
    """Write out/index.html and its figures; the path of the page. It leads with the answer,
    each trace's energy per engine (as `infergy estimate` gives it, by the same code), then
    the evidence: the estimates' figures and bins, each card's measurements, the replays, and
    at the bottom how the numbers were made and where (each GPU, collapsed). `stores`: None
    for the profiles shipped with infergy (what `infergy estimate` reads by default; of
    `model` where given). Each GPU model (card) the stores hold gets its own sections,
    figures and estimate tables: no figure or table holds two cards' points. With several
    cards, the figures' files end in the card's name (batch-h100-sxm.png); with one, they do
    not (batch.png). `progress` is told what is being done (a status line's text). TraceError
    (a trace) and StoreError (a store) are raised before anything is written."""
    say = progress or (lambda text: None)
    if model:  # a Hugging Face id or an alias: the catalog's name, as the stores hold it
        with suppress(UnknownModelError):  # one outside the catalog may still be in a store
            model = get_model(model).name
    say("reading traces")
    workloads = [(name, get_trace(name)) for name in traces]
    given = None if stores is None else [Path(s) for s in stores]
    stores = shipped_profiles(model) if given is None else given
    # The shipped profiles, whether given or not: `infergy estimate` reads them by default.
    shipped = given is None or {s.resolve() for s in given} == {
        s.resolve() for s in shipped_profiles(model)}
    say(f"loading {len(stores)} store{'s' * (len(stores) != 1)}")
    found = [s for s in stores if s.is_file()]
    points = load_points(found)
    missing_stores = [str(s) for s in stores if not s.is_file()]
    if model and not points.empty:
        points = points[points.model == model]
    # The card of each point: its GPU; a CPU run's is its host's CPU (no energy measured).
    points = points.assign(gpu=tables.card_names(points))
    cards = sorted(points.gpu.unique())
    answer = Section("Energy of the workload", text=_sources(found, shipped))
    sections: list[Section] = [answer]
    if points.empty:
        answer.missing.append(_no_points(found, missing_stores, model, shipped))
    if not workloads:
        answer.missing.append("no workload given: `--trace NAME` (a built-in trace such as "
                              "azure-code-2023, `infergy traces list` names them, or a trace "
                              "file) puts its energy on each engine here")
    out.mkdir(parents=True, exist_ok=True)
    if workloads:
        sections.append(_workloads(workloads, points, found, shipped, cards, out, answer,
                                   grid_gco2_per_kwh, usd_per_kwh, say))
    if slo is not None and not points.empty:
        sections[1:1] = _advice(workloads, sorted(points.model.unique()), None if shipped
                                else found, slo, out, answer, say)
    for card in cards:
        sections.extend(_card_sections(points[points.gpu == card], card, cards, out, say))
    say("reading replays")
    replays = replay_section(found)
    if replays is not None:
        sections.append(replays)
    sections.append(Section("How these numbers were made", text=(
        f"{METHOD} Carbon: {grid_gco2_per_kwh:g} gCO2e per kWh ({GRID_SOURCE}, unless "
        f"--grid-gco2-per-kwh was given).")))
    sections.extend(_provenance_section(points[points.gpu == card], card) for card in cards)
    page = out / "index.html"
    page.write_text(_render(sections))
    return page


def _advice(workloads, models: list[str], stores: list[Path] | None, slo: Sequence[Target],
            out: Path, answer: Section, say: Callable[[str], None]) -> list[Section]:
    """Each trace's search for each model (infergy.estimate.advise); what cannot be searched
    is said in `answer`."""
    sections = []
    for _, trace in workloads:
        for model in models:
            say(f"searching the configurations of {trace.name} on {model}")
            try:
                advice = advise_trace(trace, model, stores=stores, targets=slo)
            except (EstimateError, UnknownModelError) as e:
                answer.missing.append(f"{trace.name} on {model}: no configuration searched: {e}")
                continue
            sections += advice_sections(advice, out, f"advice-{trace.name}-{model}")
    return sections


def _sources(stores: list[Path], shipped: bool) -> str:
    """Where the page's numbers come from."""
    if not stores:
        return ""
    names = ", ".join(s.name if shipped else str(s) for s in stores)
    return (f"From the profiles shipped with infergy ({names}), the ones `infergy estimate` "
            f"reads by default." if shipped else f"From {names}.")


def _no_points(found: list[Path], missing: list[str], model: str | None,
               shipped: bool) -> str:
    """What the page says without any measured point: why, and how to measure some."""
    of = f" of {model}" if model else ""
    if shipped:
        return (f"no profile{of} is shipped with infergy: {MEASURE}"
                .replace("pass --db FILE", "pass --db FILE (and --trace NAME)"))
    absent = f" ({', '.join(missing)}: no such file)" if missing else ""
    statuses: dict[str, int] = {}
    for _, p, _ in stored_points(found):
        if not model or p["model"] == model:
            statuses[p["status"]] = statuses.get(p["status"], 0) + 1
    held = (" (they hold only " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
            + " points: `infergy results list --db STORE` shows why)") if statuses else ""
    return f"no measured points{of}{absent}{held}: {MEASURE}"


def _workloads(workloads, points, found: list[Path], shipped: bool, cards: list[str],
               out: Path, answer: Section, gco2: float, usd: float | None,
               say: Callable[[str], None]) -> Section:
    """The traces (the study's Tables 1-2, the CDF of their lengths against their bins) and
    the evidence of each estimate; the estimates themselves go to `answer`."""
    sec = Section("Workloads and their estimates")
    if len(cards) > 1:
        sec.text = (f"Estimated from the stores' points of each card apart ({', '.join(cards)})"
                    f", each against the theoretical baseline of its own datasheet: the cards' "
                    f"energies are not compared here (their B = max, and so the batches "
                    f"charged, differ).")
    stats = []
    greedy = points[(points.tp == 1) & (points.decoding == "greedy")]
    for name, trace in workloads:
        d = describe(trace)
        stats.append([d["name"], d["requests"], f"{d['input']['mean']:.1f} ± "
                      f"{d['input']['std']:.1f}", f"{d['input']['median']:.5g}",
                      f"{d['input']['p99']:.5g}",
                      f"{d['output']['mean']:.1f} ± {d['output']['std']:.1f}",
                      f"{d['output']['median']:.5g}", f"{d['output']['p99']:.5g}"])
        say(f"drawing the lengths of {trace.name}")
        save(cdf_figure(trace, BinGrid.named("paper")), out, f"cdf-{trace.name}", sec,
             "")
        if not greedy.empty:
            estimate_section(name, trace, greedy, found, shipped, cards, out, answer, sec, gco2,
                             usd, say)
    sec.tables.insert(0, {"title": "Traces (tokens; the study's Tables 1-2)",
                          "columns": ["trace", "requests", "input mean ± std", "median", "p99",
                                      "output mean ± std", "median", "p99"], "rows": stats})
    return sec


def _card_sections(points, card: str, cards: list[str], out: Path,
                   say: Callable[[str], None]) -> list[Section]:
    """One card's sections: its one-GPU figures (greedy decoding), speculative decoding, beam
    search and mixture of experts where measured, and tensor parallelism. Points without
    energy (no GPU sensor) still show their times and throughput, and say why the rest is
    missing."""
    several = len(cards) > 1
    tag = f"-{card_tag(card)}" if several else ""
    on = f" on {card}" if several else ""
    one_gpu = points[points.tp == 1]  # one GPU: the tensor-parallel ones get their section
    greedy = one_gpu[one_gpu.decoding == "greedy"]
    energy = not figures.measured(one_gpu, "energy_j").empty
    devices = ", ".join(sorted(one_gpu.device.dropna().unique())) or "an unknown device"
    no_energy = (f"{figures.NO_ENERGY} (the points were measured on {devices}; `infergy env` "
                 f"says what a machine can measure)")
    sec = Section(f"Measurements on {card}", text=f"{len(one_gpu)} measured points on {card} "
                  f"from {', '.join(sorted(one_gpu.store.unique())) or 'no store'}; the "
                  f"figures below are of greedy decoding"
                  + (f", of this card only (the stores hold {len(cards)} cards, each in its "
                     f"own sections)." if several else ".")
                  + ("" if energy else f" {figures.NO_ENERGY[0].upper()}"
                     f"{figures.NO_ENERGY[1:]}: the figures show times and throughput."))
    for stem, make in (("batch", figures.batch_figure), ("phases", figures.phases_figure),
                       ("pareto", figures.pareto_figure)):
        say(f"drawing {stem}{on}")
        save(make(greedy), out, f"{stem}{tag}", sec,
             f"{stem}{on}: " + (no_energy if not energy and stem != "batch" else
                                f"not enough points ({MEASURE})"))
    for engine in sorted(greedy.engine.unique()):
        say(f"drawing the heatmap of {engine}{on}")
        save(figures.heatmap_figure(greedy, engine), out, f"heatmap-{engine}{tag}", sec,
             f"heatmap of {engine}{on}: no B = max points ({MEASURE})")
    say(f"drawing decoding strategies and tensor parallelism{on}")
    sections = [sec, *_decoding_sections(one_gpu, out, tag, on,
                                         "" if energy else f": {no_energy}")]
    rows = tables.sampling_rows(one_gpu)
    if rows:
        sections.append(Section(f"Sampling against greedy{on}", tables=[{
            "title": "J per output token of each decoding, against greedy's at the same engine, "
                     "B, I and O", "columns": tables.SAMPLING_COLUMNS, "rows": rows}], text=(
            "Temperature and top-p sampling beside greedy decoding (the study's decoding "
            "comparison). Every request generates its O tokens, end of sequence ignored, so "
            "the difference is the sampler's own cost. Where the CV of the repeats is as large "
            "as the change (B = 1 on a host-bound engine), the change is noise.")))
    tp_section = _tp_section(points, out, tag, on)
    if tp_section is not None:
        sections.append(tp_section)
    return sections


def _provenance_section(points, card: str) -> Section:
    """Where and when the card's points were measured, and how well each point's repeats
    agree, per engine, decoding, TP and batch."""
    sec = Section(f"Provenance and repeatability on {card}", collapsed=True, text=(
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


def _decoding_sections(points, out: Path, tag: str = "", on: str = "",
                       no_energy: str = "") -> list[Section]:
    """Speculative decoding, beam search and mixture of experts, where one card's points hold
    such points (`tag`: the end of the figures' file names; `on`: the card in titles, where
    several; `no_energy`: why the card's points have no energy, where they have none)."""
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
                 f"{name}{tag}", sec, f"{title.lower()} on {engine}{no_energy}" if no_energy
                 else f"{title.lower()} on {engine}: no greedy points of the same model, "
                 f"engine and lengths to compare with (the sweeps benchmarks/sweeps/{sweeps} "
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
             f"mixture of experts{no_energy}" if no_energy else
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
per request at the largest batch that fits (the study's method, by the code of `infergy
estimate`); requests past the last bin edge are excluded, as the study did, and counted. The
theoretical baseline is TDP / dense bf16 peak x FLOPs."""


def write_advice(advice: Advice, out: Path) -> Path:
    """`infergy advise --out`: out/index.html with the search's sections and figure; the
    page's path."""
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    page.write_text(_render(advice_sections(advice, out)))
    return page


def _render(sections: list[Section]) -> str:
    return Environment(autoescape=True).from_string(TEMPLATE).render(sections=sections)


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>infergy report</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
.missing { color: #8a5a00; background: #fff6e0; padding: 0.4em 0.8em; }
.note { color: #444; font-size: 0.9em; }
summary h2 { display: inline; }
details { margin: 1.5em 0; }
</style></head><body>
<h1>infergy report</h1>
{% for s in sections %}
{% if s.collapsed %}<details><summary><h2>{{ s.title }}</h2></summary>
{% else %}<h2>{{ s.title }}</h2>{% endif %}
{% if s.text %}<p>{{ s.text }}</p>{% endif %}
{% for t in s.tables %}
{% if t.collapsed %}<details><summary>{{ t.title }}</summary>{% endif %}
<table><caption>{{ t.title }}</caption>
<tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% if t.collapsed %}</details>{% endif %}
{% if t.note %}<p class="note">{{ t.note }}</p>{% endif %}
{% endfor %}
{% for m in s.missing %}<p class="missing">Not shown: {{ m }}</p>{% endfor %}
{% for f in s.figures %}
<figure><img src="{{ f }}.png" alt="{{ f }}"><figcaption><a href="{{ f }}.svg">SVG</a>
</figcaption></figure>
{% endfor %}
{% if s.collapsed %}</details>{% endif %}
{% endfor %}
</body></html>
"""
