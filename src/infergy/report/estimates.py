"""The report's estimates of a trace, per model and per card: the answer that leads the page
(each engine's kWh and J per request, its saving against the baseline engine, the theoretical
baseline: the study's Table 4 layout) and its evidence further down (Figure 1, the energy of
each bin). Every number is `infergy.estimate.estimate_trace`'s, the code path of `infergy
estimate`, on its default bins (the study's; requests past the last edge excluded, as the
study did, and counted); the page names the command that prints the same numbers."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from infergy.estimate import (
    J_PER_KWH,
    EstimateError,
    MissingPoints,
    estimate_trace,
    predicted_words,
)
from infergy.models import UnknownModelError
from infergy.models.gpus import UnknownGpuError, get_gpu
from infergy.report import figures
from infergy.report.section import Section, card_tag, save
from infergy.report.tables import NO_GPU_NAME
from infergy.workloads import BinGrid

# `infergy estimate`'s default bins: the study's, requests past the last edge excluded.
DEFAULT_GRID = BinGrid.named("paper")


def estimate_section(name: str, trace, points, stores: list[Path], shipped: bool,
                     cards: list[str], out: Path, answer: Section, sec: Section, gco2: float,
                     usd: float | None, say: Callable[[str], None]) -> None:
    """Add to `answer` each engine's energy of `trace` (given as `name`) per model in the
    points (a DataFrame of `load_points`, cards in its gpu column) and per card, and to `sec`
    its evidence: Figure 1 and the energy per bin. The baseline of the savings is hf-eager
    where it holds every bin the trace needs on that card, else the first engine by name that
    does. A card measured on other edges than the study's is estimated on its own edges (the
    page says so). `shipped`: the stores are the profiles shipped with infergy. `gco2`: gCO2e
    per kWh; `usd`: USD per kWh (None: not given)."""
    several = len(cards) > 1
    for model in sorted(points.model.unique()):
        for card in cards:
            on_card = points[(points.model == model) & (points.gpu == card)]
            if on_card.empty:
                continue
            what = f"{trace.name} on {model} on {card}"
            top = figures.measured(on_card[on_card.batch_requested == "max"], "energy_j")
            why = _not_estimable(on_card, top, card, trace.name, model)
            if why:
                answer.missing.append(f"{what}: not estimated: {why}")
                continue
            say(f"estimating {what}")
            engines = sorted(top.engine.unique(), key=lambda e: (e != "hf-eager", e))
            try:
                result, grid, notes = _estimate(trace, model, card, engines, stores, top)
            except (EstimateError, UnknownModelError) as err:
                answer.missing.append(f"{what}: not estimated: {err}")
                continue
            (c,) = result.estimates.cards
            sec.missing.extend(f"{what}, {n}" for n in notes)
            for engine, err in c.unmeasured.items():
                sec.missing.append(f"{what}, {engine}: {err}")
            rows = c.rows()
            guessed = [f"{r['engine']}: the study's formula: {predicted_words(p)}"
                       for r in rows if (p := r["predicted_bins"])]
            guessed += [f"{r['engine']}: idle charged at {r['idle_charged']}." for r in rows
                        if r.get("idle_charged")]
            answer.tables.append(_answer_table(what, result, c, rows, grid, gco2, usd))
            answer.tables[-1]["note"] = " ".join([*guessed, _same_as(name, result, grid,
                                                                      stores, shipped,
                                                                      several)])
            tag = f"-{card_tag(card)}" if several else ""
            say(f"drawing the estimate of {what}")
            save(figures.estimate_figure(
                [{**r, "theoretical_kwh": c.theoretical_j / J_PER_KWH,
                  "served_theoretical_kwh": c.served_theoretical_j / J_PER_KWH, "gpu": e.gpu}
                 for r, e in zip(rows, c.estimates, strict=True)], trace.name, top),
                out, f"estimate-{trace.name}-{model}{tag}", sec, "")
            sec.tables.append(_per_bin_table(what, rows))


def _not_estimable(on_card, top, card: str, trace: str, model: str) -> str | None:
    """Why a model's points on a card cannot estimate a trace (None: they can)."""
    if not (on_card.batch_requested == "max").any():
        return (f"no B = max point (the largest batch that fits, which an estimate charges): "
                f"measure them with `infergy sweep paper-bins -m {model} -b max --db FILE`")
    if top.empty:
        where = ", ".join(sorted(on_card.device.dropna().unique())) or "an unknown device"
        return (f"{figures.NO_ENERGY} (its points were measured on {where}); an estimate "
                f"needs the energy of B = max points, measured on an NVIDIA GPU")
    if card == NO_GPU_NAME:
        return "the runs of these points recorded no GPU name, and an estimate is of one card"
    try:
        get_gpu(card)
    except UnknownGpuError:
        return (f"{card} is not in infergy's GPU table (infergy/models/gpus.py), so it has no "
                f"theoretical baseline; `infergy estimate -t {trace} -m {model} --profile "
                f"STORE --theory-gpu CARD` estimates it against a datasheet card you name")
    return None


def _estimate(trace, model: str, card: str, engines: list[str], stores: list[Path], top):
    """(TraceEstimate, its grid, notes): on `infergy estimate`'s default bins where the card's
    points hold every bin the trace needs, else on the card's own measured edges; the first
    engine holding them all leads. EstimateError where no engine can."""
    edges = BinGrid(tuple(sorted(int(x) for x in top.input_tokens.unique())),
                    tuple(sorted(int(x) for x in top.output_tokens.unique())))
    failed: list[str] = []
    for grid in [DEFAULT_GRID] + ([edges] if edges != DEFAULT_GRID else []):
        failed = []
        for k, engine in enumerate(engines):
            try:
                result = estimate_trace(trace, model, engines[k:], grid, gpus=[card],
                                        stores=stores)
            except MissingPoints as err:
                failed.append(f"{engine}: {err}")
                continue
            except EstimateError as err:  # no request in these bins: no engine will do
                failed.append(str(err))
                break
            return result, grid, failed
    raise EstimateError("; ".join(failed))


def _answer_table(what: str, result, c, rows: list[dict], grid: BinGrid, gco2: float,
                  usd: float | None) -> dict:
    """Each engine's energy of the workload, then the theoretical baseline's."""
    datasheet = c.theoretical_gpu
    bins = ("the study's" if grid == DEFAULT_GRID else
            f"this card's measured edges (input {', '.join(map(str, grid.input_edges))}; "
            f"output {', '.join(map(str, grid.output_edges))}), as the study's need points "
            f"it lacks")

    def money(kwh: float) -> str:
        return "give --usd-per-kwh" if usd is None else f"{kwh * usd:.3g}"

    theory_kwh = c.theoretical_j / J_PER_KWH  # the study's: binned, at the bins' edges
    served_kwh = c.served_theoretical_j / J_PER_KWH  # every request at its own lengths
    return {
        "title": f"{what}: every request served as the engine serves it, simulated over a "
                 f"step-cost model fitted to the measured points (predicted; ±p90: its energy "
                 f"error on points it was not fitted to); the study's formula beside it. "
                 f"{result.coverage_line()}. Bins: {bins}. Theoretical: "
                 f"{datasheet.name}'s {datasheet.tdp_w:g} W / {datasheet.bf16_dense_tflops:g} "
                 f"TFLOPS dense bf16, x every request's FLOPs at its own lengths (what the "
                 f"simulation serves; the study's formula's column: the binned requests at "
                 f"their bins' edges) (the study's Table 4 layout)",
        "columns": ["engine", "kWh", "±p90", "J per request", f"saving vs {c.baseline.engine}",
                    "above theoretical", "study's formula kWh", "gCO2e", "USD"],
        "rows": [_answer_row(r, k, gco2, money) for k, r in enumerate(rows)]
        + [[f"theoretical baseline ({datasheet.name})", f"{served_kwh:.4g}", "-",
            f"{c.served_theoretical_j / result.coverage['requests']:.4g}", "-", "-",
            f"{theory_kwh:.4g}", f"{served_kwh * gco2:.3g}", money(served_kwh)]]}


def _answer_row(r: dict, k: int, gco2: float, money) -> list:
    """An engine's row: the simulated serving (as `infergy estimate` prints it), or where it
    could not be simulated the study's formula, said as such."""
    if r["simulated_kwh"] is None:
        kwh, per, saving, above, band = (r["kwh"], r["j_per_request"], r["saving_vs_baseline"],
                                         r["above_theoretical"], "study's formula only")
    else:
        kwh, per, saving, above = (r["simulated_kwh"], r["simulated_j_per_request"],
                                   r["simulated_saving_vs_baseline"],
                                   r["simulated_above_theoretical"])
        band = f"{r['band']:.0%}"
    return [r["engine"], f"{kwh:.4g}", band, f"{per:.4g}",
            "-" if k == 0 or saving is None else f"{saving:.1%}", f"{above:+.1%}",
            f"{r['kwh']:.4g}", f"{kwh * gco2:.3g}", money(kwh)]


def _same_as(name: str, result, grid: BinGrid, stores: list[Path], shipped: bool,
             several: bool) -> str:
    """The `infergy estimate` command that prints the same numbers."""
    words = ["infergy", "estimate", "-t", name, "-m", result.model, "-e",
             ",".join(result.engines)]
    if several:
        words += ["--gpu", get_gpu(result.estimates.cards[0].gpu).name]
    if not shipped:
        for store in stores:
            words += ["--profile", str(store)]
    if grid != DEFAULT_GRID:
        words += ["--input-edges", ",".join(map(str, grid.input_edges)),
                  "--output-edges", ",".join(map(str, grid.output_edges))]
    return f"The same numbers: `{shlex.join(words)}`."


def _per_bin_table(what: str, rows: list[dict]) -> dict:
    """Each bin's requests, and each engine's B and kWh in it (N / B x the batch's energy)."""
    per_bin: dict[tuple, dict] = {}
    for r in rows:
        for b in r["bins"]:
            per_bin.setdefault((b["input"], b["output"], b["requests"]), {})[r["engine"]] = b
    names = [r["engine"] for r in rows]
    return {
        "collapsed": True,  # a row a bin: up to 56 rows, evidence few need to read
        "title": f"{what}: energy per bin (B: the largest batch measured for the bin on this "
                 f"card; kWh: N / B x the batch's energy)",
        "columns": ["input", "output", "requests",
                    *[f"{e} {k}" for e in names for k in ("B", "kWh")]],
        "rows": [[i, o, n, *[cell for e in names for cell in (
            by[e]["batch"], f"{by[e]['energy_j'] / J_PER_KWH:.3g}") if e in by]]
            for (i, o, n), by in sorted(per_bin.items())]}
