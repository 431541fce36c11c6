"""The report's estimates of a trace: Figure 1 and the study's Table 4 layout, per model and
per card, from `CardEstimate.rows` (what `infergy estimate` prints too)."""

from __future__ import annotations

from pathlib import Path

from infergy.estimate import J_PER_KWH, EstimateError, estimate_cards
from infergy.models.gpus import UnknownGpuError, get_gpu
from infergy.report import figures
from infergy.report.section import Section, card_tag, save
from infergy.report.tables import NO_GPU_NAME
from infergy.workloads import BinGrid


def estimate_section(trace, points, stores: list[Path], cards: list[str], out: Path,
                     sec: Section, gco2: float, usd: float | None) -> None:
    """Add to `sec` Figure 1 and the Table 4 layout for one trace, per model in the points
    (a DataFrame of `load_points`) and per card (`estimate_cards`, one card at a time): each
    card on a grid of its own measured edges (requests past them charged at the last edge,
    said in the table), against the theoretical baseline of its own datasheet. The baseline
    of the savings is hf-eager where it holds every bin the trace needs on that card, else
    the first engine by name that does. `gco2`: gCO2e per kWh; `usd`: USD per kWh (None: not
    given)."""
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
                    f"(infergy/models/gpus.py), so it has no theoretical baseline; "
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
            rows = c.rows()
            tag = f"-{card_tag(card)}" if several else ""
            save(figures.estimate_figure(
                [{**r, "theoretical_kwh": c.theoretical_j / J_PER_KWH, "gpu": e.gpu}
                 for r, e in zip(rows, c.estimates, strict=True)], trace.name, top),
                out, f"estimate-{trace.name}-{model}{tag}", sec, "")
            datasheet = c.theoretical_gpu
            sec.tables.append({
                "title": f"{what}: measured against theoretical (the study's Table 4 layout; "
                         f"theoretical: {datasheet.name}'s {datasheet.tdp_w:g} W / "
                         f"{datasheet.bf16_dense_tflops:g} TFLOPS dense bf16); bins: this "
                         f"card's measured edges, requests past them charged at the last edge",
                "columns": ["engine", "kWh", "above theoretical",
                            f"saving vs {c.baseline.engine}", "Wh per 1,000 requests", "gCO2e",
                            "USD"],
                "rows": [[r["engine"], f"{r['kwh']:.4g}", f"{r['above_theoretical']:+.1%}",
                          "-" if k == 0 else f"{r['saving_vs_baseline']:.1%}",
                          f"{r['j_per_request'] * 1000 / 3600:.3g}", f"{r['kwh'] * gco2:.3g}",
                          "give --usd-per-kwh" if usd is None else f"{r['kwh'] * usd:.3g}"]
                         for k, r in enumerate(rows)]})
            sec.tables.append(_per_bin_table(what, rows))


def _per_bin_table(what: str, rows: list[dict]) -> dict:
    """Each bin's requests, and each engine's B and kWh in it (N / B x the batch's energy)."""
    per_bin: dict[tuple, dict] = {}
    for r in rows:
        for b in r["bins"]:
            per_bin.setdefault((b["input"], b["output"], b["requests"]), {})[r["engine"]] = b
    names = [r["engine"] for r in rows]
    return {
        "title": f"{what}: energy per bin (B: the largest batch measured for the bin on this "
                 f"card; kWh: N / B x the batch's energy)",
        "columns": ["input", "output", "requests",
                    *[f"{e} {k}" for e in names for k in ("B", "kWh")]],
        "rows": [[i, o, n, *[cell for e in names for cell in (
            by[e]["batch"], f"{by[e]['energy_j'] / J_PER_KWH:.3g}") if e in by]]
            for (i, o, n), by in sorted(per_bin.items())]}
