"""`infergy report`: a self-contained HTML page (index.html, figures as PNG and SVG beside it)
from results stores and traces. Every figure says what it was measured on; a figure or table
whose data are missing says so and which command would measure them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from infergy.report import figures

# Ember, Global Electricity Review 2024: world average carbon intensity of electricity in 2023.
WORLD_GCO2_PER_KWH = 480.0
GRID_SOURCE = "Ember, Global Electricity Review 2024 (world average, 2023)"


@dataclass
class Section:
    title: str
    figures: list[str] = field(default_factory=list)  # file stems under out/
    tables: list[dict] = field(default_factory=list)  # {"title", "columns", "rows"}
    missing: list[str] = field(default_factory=list)  # what could not be shown, and how to fix
    text: str = ""


def load_points(stores: list[Path]):
    """Every ok point of the stores as a DataFrame, with its GPU, software and day."""
    import pandas as pd

    from infergy.store import Store

    rows = []
    for path in stores:
        with Store(path, create=False) as store:
            gpus = {r["id"]: r["gpu_name"] for r in store.runs()}
            for p in store.points(status="ok"):
                result = json.loads(p["result"])
                versions = (result.get("provenance") or {}).get("versions") or {}
                software = ", ".join(f"{k} {versions[k]}" for k in ("torch", "transformers",
                                                                     "vllm") if versions.get(k))
                rows.append({
                    **{k: p[k] for k in ("model", "engine", "engine_options", "decoding",
                                         "batch", "batch_requested", "input_tokens",
                                         "output_tokens", "energy_j", "j_per_output_token",
                                         "time_s", "tp")},
                    "gpu_energy_j": result.get("gpu_energy_j") or {},
                    "prefill_energy_j": result.get("prefill_energy_j"),
                    "decode_energy_j": result.get("decode_energy_j"),
                    "tpot_s": result.get("tpot_s"),
                    "acceptance": (result.get("decoding_stats") or {}).get("acceptance"),
                    "engine_env": (result.get("engine_info") or {}).get("env") or {},
                    "gpu": gpus.get(p["run_id"]), "software": software or None,
                    "day": p["measured_at"][:10], "store": str(path), "run_id": p["run_id"],
                    "batch_label": "max" if p["batch_requested"] == "max" else str(p["batch"]),
                })
    return pd.DataFrame(rows, columns=None if rows else [
        "model", "engine", "engine_options", "decoding", "batch", "batch_requested",
        "input_tokens", "output_tokens", "energy_j", "j_per_output_token", "time_s", "tp",
        "gpu_energy_j", "prefill_energy_j", "decode_energy_j", "tpot_s", "acceptance",
        "engine_env", "gpu", "software", "day", "store", "run_id", "batch_label"])


def build_report(stores: list[Path], traces: list[str], out: Path, *, model: str | None = None,
                 grid_gco2_per_kwh: float = WORLD_GCO2_PER_KWH,
                 usd_per_kwh: float | None = None) -> Path:
    """Write out/index.html and its figures; the path of the page."""
    from infergy.workloads import BinGrid, describe, get_trace

    out.mkdir(parents=True, exist_ok=True)
    points = load_points([s for s in stores if Path(s).is_file()])
    missing_stores = [str(s) for s in stores if not Path(s).is_file()]
    sections: list[Section] = []
    measure = ("measure them with `infergy sweep paper-bins -m llama-3.1-8b -e hf-eager -e vllm "
               "--db FILE` and pass --db FILE")
    if points.empty:
        absent = f" ({', '.join(missing_stores)}: no such file)" if missing_stores else ""
        sections.append(Section("Measurements",
                                missing=[f"no measured points{absent}: {measure}"]))
    else:
        if model:
            points = points[points.model == model]
        parallel = points
        points = points[points.tp == 1]  # one GPU: the tensor-parallel ones get their section
        sec = Section("Measurements", text=f"{len(points)} measured points from "
                      f"{', '.join(sorted(points.store.unique()))}; the figures below are of "
                      f"greedy decoding.")
        greedy = points[points.decoding == "greedy"]
        for stem, make in (("batch", figures.batch_figure), ("phases", figures.phases_figure),
                           ("pareto", figures.pareto_figure)):
            _save(make(greedy), out, stem, sec, f"{stem}: not enough points ({measure})")
        for engine in sorted(greedy.engine.unique()):
            _save(figures.heatmap_figure(greedy, engine), out, f"heatmap-{engine}", sec,
                  f"heatmap of {engine}: no B = max points ({measure})")
        sections.append(sec)
        sections.extend(_decoding_sections(points, out))
        tp_section = _tp_section(parallel, out)
        if tp_section is not None:
            sections.append(tp_section)
    if traces:
        sec = Section("Workloads")
        stats = []
        for name in traces:
            trace = get_trace(name)
            d = describe(trace)
            stats.append([d["name"], d["requests"], f"{d['input']['mean']:.1f} ± "
                          f"{d['input']['std']:.1f}", d["input"]["median"], d["input"]["p99"],
                          f"{d['output']['mean']:.1f} ± {d['output']['std']:.1f}",
                          d["output"]["median"], d["output"]["p99"]])
            _save(figures.cdf_figure(trace, BinGrid.named("paper")), out,
                  f"cdf-{trace.name}", sec, "")
            if not points.empty:
                _estimate_section(trace, points[points.decoding == "greedy"], stores, out,
                                  sec, grid_gco2_per_kwh, usd_per_kwh)
        sec.tables.insert(0, {"title": "Traces (tokens; the study's Tables 1-2)",
                              "columns": ["trace", "requests", "input mean ± std", "median",
                                          "p99", "output mean ± std", "median", "p99"],
                              "rows": stats})
        sections.append(sec)
    replays = _replay_section([s for s in stores if Path(s).is_file()])
    if replays is not None:
        sections.append(replays)
    page = out / "index.html"
    page.write_text(_render(sections, grid_gco2_per_kwh))
    return page


def _replay_section(stores: list[Path]) -> Section | None:
    """The stores' replays (`infergy replay`): offline against the estimate, online served."""
    from infergy.store import Store

    offline, online, by_requests = [], [], {}
    for path in stores:
        with Store(path, create=False) as store:
            gpus = {r["id"]: r["gpu_name"] for r in store.runs()}
            for row in store.replays():
                r = json.loads(row["result"])
                gpu = gpus.get(row["run_id"]) or "-"
                if r.get("status") == "ok" and r.get("j_per_output_token") is not None:
                    key = (r["trace"], r["model"], r["requests"],
                           json.dumps(r.get("selection"), sort_keys=True), r.get("tp", 1), gpu)
                    by_requests.setdefault(key, []).append(r)
                j = _num(r.get("energy_j"), "{:.4g}")
                per_token = _num(r.get("j_per_output_token"), "{:.3g}")
                if row["mode"] == "offline":
                    est = r.get("estimate") or {}
                    errors = est.get("errors") or {}
                    offline.append([r["trace"], r["model"], _engine(r), r["batching"],
                                    f"{r['requests']} ({r['status']})", j, per_token,
                                    _num(est.get("binned_j"), "{:.4g}"),
                                    _num(errors.get("binned"), "{:+.1%}"),
                                    _num(errors.get("interpolated"), "{:+.1%}"), gpu])
                else:
                    lat = r.get("latency") or {}
                    ttft, tpot = lat.get("ttft_s") or {}, lat.get("tpot_s") or {}
                    steady = r.get("steady") or {}
                    online.append([r["trace"], r["model"], _server(r), r["batching"],
                                   f"{r['completed']} of {r['requests']}", j, per_token,
                                   _num(r.get("throughput_tok_s"), "{:.4g}"),
                                   _num(ttft.get("p50"), "{:.3f}"), _num(ttft.get("p99"),
                                                                          "{:.3f}"),
                                   _num(tpot.get("p50"), "{:.4f}"),
                                   _num(steady.get("j_per_output_token"), "{:.3g}"), gpu])
    if not offline and not online:
        return None
    sec = Section("Replays", text=(
        "Whole traces run for real (`infergy replay`). Offline: static batches, the GPU energy "
        "measured against the estimator's for the same requests (error: estimate / measured "
        "- 1). Online: requests streamed from a server; steady state while its level of "
        "requests was in flight."))
    if offline:
        sec.tables.append({"title": "Offline replays", "columns": [
            "trace", "model", "engine", "batching", "requests", "measured J", "J/tok",
            "estimate J", "error", "interp. error", "GPU"], "rows": offline})
    # The study's comparison holds one engine: a server infergy started (its engine known)
    # against the offline replay of the same requests on that engine.
    versus = [[trace, model, str(n), f"{_server(o)} ({o['batching']})",
               f"{_engine(f)} ({f['batching']})", f"{o['j_per_output_token']:.3g}",
               f"{f['j_per_output_token']:.3g}",
               f"{o['j_per_output_token'] / f['j_per_output_token'] - 1:+.1%}", gpu]
              for (trace, model, n, _, _, gpu), runs in sorted(by_requests.items())
              for o in runs if o["mode"] == "online"
              for f in runs if f["mode"] == "offline" and o.get("served_by") == f["engine"]]
    if versus:
        sec.tables.append({"title": "Online against offline, the same requests on the same "
                                    "card and engine (the study's comparison)", "columns": [
            "trace", "model", "requests", "online", "offline", "online J/tok",
            "offline J/tok", "online against offline", "GPU"], "rows": versus})
    if online:
        sec.tables.append({"title": "Online serving", "columns": [
            "trace", "model", "server", "arrivals", "completed", "J", "J/tok", "tok/s",
            "TTFT p50 s", "TTFT p99 s", "TPOT p50 s", "steady J/tok", "GPU"], "rows": online})
    return sec


def _engine(replay: dict) -> str:
    """An offline replay's engine, with its GPUs where more than one."""
    tp = replay.get("tp", 1)
    return replay["engine"] + (f" (TP {tp})" if tp > 1 else "")


def _server(online: dict) -> str:
    """An online replay's server: the engine infergy started (with its GPUs where more than
    one), or the endpoint given."""
    served_by, tp = online.get("served_by"), online.get("tp", 1)
    return f"{served_by} (--serve{f', TP {tp}' if tp > 1 else ''})" if served_by \
        else online["engine"]


def _change(value, base) -> float | None:
    """value / base - 1, or None where either is missing (None or NaN)."""
    if any(v is None or v != v for v in (value, base)) or not base:
        return None
    return value / base - 1


def _num(value, fmt: str) -> str:
    return "-" if value is None or value != value else fmt.format(value)  # None or NaN


def _decoding_sections(points, out: Path) -> list[Section]:
    """Speculative decoding and mixture of experts, where the stores hold such points."""
    from infergy.models import UnknownModelError, get_model

    sections = []
    if points.decoding.str.startswith("speculative").any():
        sec = Section("Speculative decoding", text=(
            "Acceptance set by `acceptance=` is a measurement device for random weights "
            "(docs/methodology.md); the legend gives the acceptance observed per token."))
        _save(figures.speculative_figure(points), out, "speculative", sec,
              "speculative decoding: no greedy points of the same model, engine and lengths to "
              "compare with (benchmarks/sweeps/speculative-llama-3.1-8b.yaml measures both)")
        sections.append(sec)

    def is_moe(name: str) -> bool:
        try:
            return get_model(name).is_moe
        except UnknownModelError:
            return False

    moe = {m for m in points.model.unique() if is_moe(m)}
    if moe:
        sec = Section("Mixture of experts")
        _save(figures.moe_figure(points, moe), out, "moe", sec,
              "mixture of experts: no dense model measured beside it "
              "(benchmarks/sweeps/moe-olmo.yaml measures OLMoE with OLMo-1B and OLMo-7B)")
        sections.append(sec)
    return sections


def _tp_section(points, out: Path) -> Section | None:
    """Tensor parallelism (the study's Figure 6): one point's latency and energy at every TP
    size measured, against TP 1, with each GPU's share."""
    if not (points.tp > 1).any():
        return None
    sec = Section("Tensor parallelism", text=(
        "The same point (model, engine, B, I, O) split over N GPUs of one host (`--tp N`); "
        "energy is every participating GPU's, summed, and only theirs (the host's other "
        "GPUs are not measured)."))
    rows = []
    for (model, engine, _, decoding, b, i, o, gpu), series in figures.tp_series(points):
        one = series[series.tp == 1].iloc[0]
        for _, p in series.iterrows():
            shares = ", ".join(f"{g} {j:.4g}" for g, j in sorted(p.gpu_energy_j.items())
                               if j is not None)
            rows.append([model, engine, decoding, str(b), str(i), str(o), str(p.tp),
                         f"{p.time_s:.3g}", f"{p.time_s / one.time_s - 1:+.1%}",
                         _num(p.energy_j, "{:.4g}"), _num(_change(p.energy_j, one.energy_j),
                                                          "{:+.1%}"), shares or "-", gpu,
                         _tp_note(p.engine_env)])
    if not rows:
        sec.missing.append("tensor parallelism: no point measured at TP 1 and at a larger TP "
                           "on one card (measure the same point with `--tp 1` and `--tp 2`)")
        return sec
    _save(figures.tp_figure(points), out, "tensor-parallel", sec, "")
    sec.tables.append({"title": "Against TP 1 on the same card (the study: TP 2 -40% latency, "
                                "+29% energy; TP 4 -61%, +55%)", "columns": [
        "model", "engine", "decoding", "B", "I", "O", "TP", "time s", "time vs TP 1", "energy J",
        "energy vs TP 1", "each GPU's J", "GPU", "note"], "rows": rows})
    return sec


def _tp_note(env: dict) -> str:
    """What a split point ran without, where its host turned NVLink multicast off."""
    from infergy.engines.vllm import NO_MULTICAST_ENV

    if not any(k in env for k in NO_MULTICAST_ENV):
        return ""
    return ("vLLM without its all-reduce + RMS-norm fusion: NVLink multicast off on the host ("
            + ", ".join(f"{k}={v}" for k, v in env.items() if k not in NO_MULTICAST_ENV) + ")")


def _estimate_section(trace, points, stores, out, sec, gco2, usd) -> None:
    """Figure 1 and the Table 4 layout for one trace, per model in the points, on a grid of
    the measured edges (requests past them charged at the last edge, said in the table)."""
    from infergy.estimate import EstimateError, estimate, load_profile, theoretical
    from infergy.estimate.hardware import NVML_NAMES, get_gpu
    from infergy.workloads import BinGrid

    for model in sorted(points.model.unique()):
        top = points[(points.model == model) & (points.batch_requested == "max")]
        if top.empty:
            continue
        grid = BinGrid(tuple(sorted(int(x) for x in top.input_tokens.unique())),
                       tuple(sorted(int(x) for x in top.output_tokens.unique())), "clamp")
        binned = grid.assign(trace.input_tokens, trace.output_tokens)
        rows, per_bin = [], {}
        for engine in sorted(top.engine.unique()):
            try:
                r = estimate(trace, binned, load_profile(stores, model, engine))
            except EstimateError as err:
                sec.missing.append(f"{trace.name} on {engine}: {err}")
                continue
            for b in r.bins:
                per_bin.setdefault((b["input"], b["output"], b["requests"]), {})[engine] = b
            card = get_gpu(NVML_NAMES.get(r.gpu, "h100-sxm"))
            optimal = theoretical(binned, model, card)
            rows.append({"engine": engine, "kwh": r.kwh, "theoretical_kwh": optimal / 3.6e6,
                         "above": r.energy_j / optimal - 1, "wh_per_1000": r.energy_j
                         / r.requests * 1000 / 3600, "gco2": r.kwh * gco2,
                         "usd": None if usd is None else r.kwh * usd, "gpu": r.gpu})
        if not rows:
            continue
        _save(figures.estimate_figure(rows, trace.name, top), out,
              f"estimate-{trace.name}-{model}", sec, "")
        base = rows[0]
        sec.tables.append({
            "title": f"{trace.name} on {model} ({rows[0]['gpu']}): measured against "
                     f"theoretical (the study's Table 4 layout); bins: the measured edges, "
                     f"requests past them charged at the last edge",
            "columns": ["engine", "kWh", "above theoretical", f"saving vs {base['engine']}",
                        "Wh per 1,000 requests", "gCO2e", "USD"],
            "rows": [[r["engine"], f"{r['kwh']:.4g}", f"{r['above']:+.1%}",
                      "-" if r is base else f"{1 - r['kwh'] / base['kwh']:.1%}",
                      f"{r['wh_per_1000']:.3g}", f"{r['gco2']:.3g}",
                      "give --usd-per-kwh" if r["usd"] is None else f"{r['usd']:.3g}"]
                     for r in rows]})
        engines = [r["engine"] for r in rows]
        sec.tables.append({
            "title": f"{trace.name} on {model}: energy per bin (B: the largest batch measured "
                     f"for the bin; kWh: N / B x the batch's energy)",
            "columns": ["input", "output", "requests",
                        *[f"{e} {k}" for e in engines for k in ("B", "kWh")]],
            "rows": [[i, o, n, *[cell for e in engines for cell in (
                by[e]["batch"], f"{by[e]['energy_j'] / 3.6e6:.3g}") if e in by]]
                for (i, o, n), by in sorted(per_bin.items())]})


def _save(fig, out: Path, stem: str, sec: Section, missing: str) -> None:
    if fig is None:
        if missing:
            sec.missing.append(missing)
        return
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)
    fig.savefig(out / f"{safe}.png", dpi=110)
    fig.savefig(out / f"{safe}.svg")
    figures._plt().close(fig)
    sec.figures.append(safe)


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
    from jinja2 import Environment

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
