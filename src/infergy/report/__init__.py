"""`infergy report`: a self-contained HTML page (index.html, figures as PNG and SVG beside it)
from results stores and traces. Every figure says what it was measured on; each card the
stores hold gets its own sections, figures and estimate, never one figure or table with two
cards' energies. A figure or table whose data are missing says so and which command would
measure them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from infergy.report import figures, tables
from infergy.run.point import STEADY_CV, STEADY_WINDOW_S

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
            runs = {r["id"]: r for r in store.runs()}
            for p in store.points(status="ok"):
                result = json.loads(p["result"])
                run = runs.get(p["run_id"]) or {}
                provenance = result.get("provenance") or {}
                versions = provenance.get("versions") or {}
                host = provenance.get("host") or {}
                software = ", ".join(f"{k} {versions[k]}" for k in ("torch", "transformers",
                                                                     "vllm") if versions.get(k))
                rows.append({
                    **{k: p[k] for k in ("model", "engine", "engine_options", "decoding",
                                         "batch", "batch_requested", "input_tokens",
                                         "output_tokens", "energy_j", "j_per_output_token",
                                         "time_s", "tp")},
                    "gpu_energy_j": result.get("gpu_energy_j") or {},
                    "gpu_ranks": {g["name"]: g["tp_rank"] for g in provenance.get("gpus", [])
                                  if g.get("tp_rank") is not None},
                    "prefill_energy_j": result.get("prefill_energy_j"),
                    "decode_energy_j": result.get("decode_energy_j"),
                    "tpot_s": result.get("tpot_s"),
                    "acceptance": (result.get("decoding_stats") or {}).get("acceptance"),
                    "engine_env": (result.get("engine_info") or {}).get("env") or {},
                    "gpu": run.get("gpu_name"), "software": software or None,
                    "host_cpu": ", ".join(filter(None, (
                        host.get("cpu"), host.get("cpus") and f"{host['cpus']} CPUs"))) or None,
                    "day": p["measured_at"][:10], "store": str(path), "run_id": p["run_id"],
                    "batch_label": "max" if p["batch_requested"] == "max" else str(p["batch"]),
                    "device": p["device"], "measured_at": p["measured_at"],
                    "energy_cv": result.get("energy_cv"),
                    "runs_per_window": result.get("runs_per_window"),
                    "driver": run.get("driver"), "power_limit_w": run.get("power_limit_w"),
                    "idle_w": [w for w in (json.loads(run.get("idle_w") or "null")
                                           or {}).values() if w is not None],
                })
    return pd.DataFrame(rows, columns=None if rows else [
        "model", "engine", "engine_options", "decoding", "batch", "batch_requested",
        "input_tokens", "output_tokens", "energy_j", "j_per_output_token", "time_s", "tp",
        "gpu_energy_j", "gpu_ranks", "prefill_energy_j", "decode_energy_j", "tpot_s", "acceptance",
        "engine_env", "gpu", "software", "host_cpu", "day", "store", "run_id", "batch_label",
        "device", "measured_at", "energy_cv", "runs_per_window", "driver", "power_limit_w",
        "idle_w"])


def build_report(stores: list[Path], traces: list[str], out: Path, *, model: str | None = None,
                 grid_gco2_per_kwh: float = WORLD_GCO2_PER_KWH,
                 usd_per_kwh: float | None = None) -> Path:
    """Write out/index.html and its figures; the path of the page. Each GPU model (card) the
    stores hold gets its own sections, figures and estimate tables: no figure or table holds
    two cards' points. With several cards, the figures' files end in the card's name
    (batch-h100-sxm.png); with one, they do not (batch.png)."""
    from infergy.workloads import BinGrid, describe, get_trace

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
            _save(figures.cdf_figure(trace, BinGrid.named("paper")), out,
                  f"cdf-{trace.name}", sec, "")
            if not greedy.empty:
                _estimate_section(trace, greedy, found, cards, out, sec, grid_gco2_per_kwh,
                                  usd_per_kwh)
        sec.tables.insert(0, {"title": "Traces (tokens; the study's Tables 1-2)",
                              "columns": ["trace", "requests", "input mean ± std", "median",
                                          "p99", "output mean ± std", "median", "p99"],
                              "rows": stats})
        sections.append(sec)
    replays = _replay_section(found)
    if replays is not None:
        sections.append(replays)
    page = out / "index.html"
    page.write_text(_render(sections, grid_gco2_per_kwh))
    return page


NO_GPU_NAME = "GPU not recorded"


def card_tag(card: str) -> str:
    """A card's name in file names: its name in infergy's GPU table (h100-sxm, h200), else
    its NVML name in lower case, dashes for anything else."""
    from infergy.models.gpus import NVML_NAMES

    name = NVML_NAMES.get(card, card).lower()
    return "-".join("".join(c if c.isalnum() else " " for c in name).split())


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
        _save(make(greedy), out, f"{stem}{tag}", sec,
              f"{stem}{on}: not enough points ({measure})")
    for engine in sorted(greedy.engine.unique()):
        _save(figures.heatmap_figure(greedy, engine), out, f"heatmap-{engine}{tag}", sec,
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
                    source = est.get("profile_gpu")
                    offline.append([r["trace"], r["model"], _engine(r), r["batching"],
                                    f"{r['requests']} ({r['status']})", j, per_token,
                                    _num(est.get("binned_j"), "{:.4g}"),
                                    _num(errors.get("binned"), "{:+.1%}"),
                                    _num(errors.get("whole_batches"), "{:+.1%}"),
                                    _num(errors.get("interpolated"), "{:+.1%}"), gpu,
                                    "-" if source is None else "the same" if source == gpu
                                    else f"{source}: another card"])
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
        "- 1; whole batches: every partial batch charged as a full one). Online: requests "
        "streamed from a server; steady state while its level of requests was in flight. An "
        "offline replay's estimate is from its own card's profile unless `replay --gpu` named "
        "another: its error then compares two cards, and the table says so."))
    if offline:
        sec.tables.append({"title": "Offline replays", "columns": [
            "trace", "model", "engine", "batching", "requests", "measured J", "J/tok",
            "estimate J", "error", "whole-batches error", "interp. error", "GPU",
            "estimate's profile"],
            "rows": offline})
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
    return fmt.format(value) if tables.known(value) else "-"


def _decoding_sections(points, out: Path, tag: str = "", on: str = "") -> list[Section]:
    """Speculative decoding, beam search and mixture of experts, where one card's points hold
    such points (`tag`: the end of the figures' file names; `on`: the card in titles, where
    several)."""
    from infergy.models import UnknownModelError, get_model

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
            _save(figures.decoding_figure(points[points.engine == engine], strategy), out,
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
        _save(figures.moe_figure(points, moe), out, f"moe{tag}", sec,
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
                         _num(p.energy_j, "{:.4g}"), _num(_change(p.energy_j, one.energy_j),
                                                          "{:+.1%}"), shares or "-", gpu,
                         _tp_note(p.engine_env)])
    if not rows:
        sec.missing.append("tensor parallelism: no point measured at TP 1 and at a larger TP "
                           "on one card (measure the same point with `--tp 1` and `--tp 2`)")
        return sec
    _save(figures.tp_figure(points), out, f"tensor-parallel{tag}", sec, "")
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
    from infergy.engines.vllm import NO_MULTICAST_ENV

    if not any(k in env for k in NO_MULTICAST_ENV):
        return ""
    return ("vLLM without its all-reduce + RMS-norm fusion: NVLink multicast off on the host ("
            + ", ".join(f"{k}={v}" for k, v in env.items() if k not in NO_MULTICAST_ENV) + ")")


def _estimate_section(trace, points, stores: list[Path], cards: list[str], out: Path,
                      sec: Section, gco2: float, usd: float | None) -> None:
    """Figure 1 and the Table 4 layout for one trace, per model in the points and per card
    (`estimate_cards`, one card at a time): each card on a grid of its own measured edges
    (requests past them charged at the last edge, said in the table), against the theoretical
    baseline of its own datasheet. The baseline of the savings is hf-eager where it holds
    every bin the trace needs on that card, else the first engine by name that does."""
    from infergy.estimate import J_PER_KWH, EstimateError, estimate_cards
    from infergy.models.gpus import UnknownGpuError, get_gpu
    from infergy.workloads import BinGrid

    several = len(cards) > 1
    for model in sorted(points.model.unique()):
        for card in cards:
            top = points[(points.model == model) & (points.gpu == card)
                         & (points.batch_requested == "max")]
            if top.empty:
                continue
            what = f"{trace.name} on {model} on {card}"
            if card == NO_GPU_NAME:
                sec.missing.append(f"{what}: not estimated: the runs of these points recorded "
                                   f"no GPU name, and an estimate is of one card")
                continue
            try:
                get_gpu(card)
            except UnknownGpuError:
                sec.missing.append(
                    f"{what}: not estimated here: {card} is not in infergy's GPU table "
                    f"(infergy/estimate/hardware.py), so it has no theoretical baseline; "
                    f"`infergy estimate -t {trace.name} -m {model} --profile STORE "
                    f"--theory-gpu CARD` estimates it against a datasheet card you name")
                continue
            grid = BinGrid(tuple(sorted(int(x) for x in top.input_tokens.unique())),
                           tuple(sorted(int(x) for x in top.output_tokens.unique())), "clamp")
            binned = grid.assign(trace.input_tokens, trace.output_tokens)
            engines = sorted(top.engine.unique(), key=lambda e: (e != "hf-eager", e))
            result = None
            for k, engine in enumerate(engines):  # the first engine holding every bin leads
                try:
                    result = estimate_cards(trace, binned, model, engines[k:], [card], stores)
                    break
                except EstimateError as err:
                    sec.missing.append(f"{what}, {engine}: {err}")
            if result is None:
                continue
            (c,) = result.cards
            for engine, err in c.unmeasured.items():
                sec.missing.append(f"{what}, {engine}: {err}")
            base = c.baseline
            rows = [{"engine": r.engine, "kwh": r.kwh,
                     "theoretical_kwh": c.theoretical_j / J_PER_KWH,
                     "above": r.energy_j / c.theoretical_j - 1,
                     "wh_per_1000": r.energy_j / r.requests * 1000 / 3600,
                     "gco2": r.kwh * gco2, "usd": None if usd is None else r.kwh * usd,
                     "gpu": r.gpu} for r in c.estimates]
            tag = f"-{card_tag(card)}" if several else ""
            _save(figures.estimate_figure(rows, trace.name, top), out,
                  f"estimate-{trace.name}-{model}{tag}", sec, "")
            datasheet = c.theoretical_gpu
            sec.tables.append({
                "title": f"{what}: measured against theoretical (the study's Table 4 layout; "
                         f"theoretical: {datasheet.name}'s {datasheet.tdp_w:g} W / "
                         f"{datasheet.bf16_dense_tflops:g} TFLOPS dense bf16); bins: this "
                         f"card's measured edges, requests past them charged at the last edge",
                "columns": ["engine", "kWh", "above theoretical", f"saving vs {base.engine}",
                            "Wh per 1,000 requests", "gCO2e", "USD"],
                "rows": [[r["engine"], f"{r['kwh']:.4g}", f"{r['above']:+.1%}",
                          "-" if e is base else f"{c.saving(e):.1%}",
                          f"{r['wh_per_1000']:.3g}", f"{r['gco2']:.3g}",
                          "give --usd-per-kwh" if r["usd"] is None else f"{r['usd']:.3g}"]
                         for r, e in zip(rows, c.estimates, strict=True)]})
            per_bin: dict[tuple, dict] = {}
            for e in c.estimates:
                for b in e.bins:
                    per_bin.setdefault((b["input"], b["output"], b["requests"]), {})[
                        e.engine] = b
            names = [e.engine for e in c.estimates]
            sec.tables.append({
                "title": f"{what}: energy per bin (B: the largest batch measured for the bin "
                         f"on this card; kWh: N / B x the batch's energy)",
                "columns": ["input", "output", "requests",
                            *[f"{e} {k}" for e in names for k in ("B", "kWh")]],
                "rows": [[i, o, n, *[cell for e in names for cell in (
                    by[e]["batch"], f"{by[e]['energy_j'] / J_PER_KWH:.3g}") if e in by]]
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
