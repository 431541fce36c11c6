"""The report's figures, each drawn from stored points (a pandas DataFrame, one row a point) and
saying what it shows: GPU, model, engine, versions and dates. A figure whose data are missing
returns None; the report then says what is missing and how to measure it. A figure draws one
card's points: given several GPU models' it raises MixedCardsError (energies of two cards are
never drawn in one figure)."""

from __future__ import annotations

import textwrap

import numpy as np

ENGINE_COLORS = {"hf-eager": "#d62728", "hf-compiled": "#ff7f0e", "hf-paged": "#9467bd",
                 "vllm": "#1f77b4", "vllm-eager": "#17becf"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def provenance(points) -> str:
    """One line: the GPUs, models, versions and dates the figure's points come from."""
    gpus = ", ".join(sorted(points["gpu"].dropna().unique()))
    models = ", ".join(sorted(points["model"].unique()))
    versions = ", ".join(sorted({package for software in points["software"].dropna().unique()
                                 for package in software.split(", ")}))  # each package once
    days = sorted(points["day"].dropna().unique())
    span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}" if days else "?"
    return f"{models} on {gpus}; {versions}; measured {span}"


class MixedCardsError(ValueError):
    """Points of several GPU models given to a figure that draws one card's."""


def one_card(points) -> None:
    """Raise MixedCardsError where the points come from several GPU models: a figure's
    energies are of one card (`build_report` draws each card's apart)."""
    cards = sorted(points["gpu"].dropna().unique())
    if len(cards) > 1:
        raise MixedCardsError(f"points of {len(cards)} GPU models ({', '.join(cards)}): a "
                              f"figure draws one card's; split them by the gpu column")


def _card(points) -> str:
    """ " on CARD" for a title: the one GPU model of the points ("" where none is known)."""
    cards = points["gpu"].dropna().unique()
    return f" on {cards[0]}" if len(cards) == 1 else ""


# What a panel or figure of energy says where its points have none (a CPU run, no sensor).
NO_ENERGY = "no energy measured: no GPU sensor"


def measured(points, column: str):
    """The points whose `column` holds a positive number (None and NaN: not measured, as
    every energy of a run without a GPU sensor), with that column as floats."""
    import pandas as pd

    values = pd.to_numeric(points[column], errors="coerce")
    return points.assign(**{column: values})[values.gt(0) & np.isfinite(values)]


def _empty_panel(ax, text: str) -> None:
    """A panel without data: says so where its lines would be."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10,
            color="#8a5a00", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _finish(fig, title: str, points, footer: str | None = None) -> object:
    """The figure's title (wrapped to its width, never cut) over its panels, and what it was
    measured on (`footer`, default its points' provenance) under them."""
    width_pt, height_pt = fig.get_figwidth() * 72, fig.get_figheight() * 72
    # DejaVu Sans Bold at 11 pt: at most about 0.68 em a character
    title = textwrap.fill(title, max(20, int(width_pt / (11 * 0.68))))
    foot = textwrap.fill(provenance(points) if footer is None else footer,
                         max(40, int(width_pt / (7 * 0.62))))
    bottom = (foot.count("\n") + 1) * 7 * 1.3 / height_pt + 0.01
    fig.suptitle(title, fontsize=11, fontweight="bold", y=0.99, va="top")
    fig.text(0.01, 0.005, foot, fontsize=7, color="#555555", va="bottom")
    fig.tight_layout(rect=(0, bottom, 1, 1))  # the suptitle: counted by tight_layout
    return fig


def _axes(ax, xlabel: str, ylabel: str, *, ylog: bool = True) -> None:
    """A panel against a length or batch size: log2 x, log y (unless not), grid."""
    ax.set_xscale("log", base=2)
    if ylog:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _color(engine: str) -> str:
    return ENGINE_COLORS.get(engine, "#333333")


def batch_figure(points):
    """J per output token and latency against batch size, per engine, at the (I, O) with the
    most batch sizes; each engine's max batch marked (the study's Figure 5)."""
    one_card(points)
    if points.empty:
        return None
    counts = points.groupby(["input_tokens", "output_tokens"])["batch"].nunique()
    (i, o), n = counts.idxmax(), counts.max()
    if n < 2:
        return None
    sub = points[(points.input_tokens == i) & (points.output_tokens == o)]
    # A run without a GPU sensor has times but no energy: the time panel alone, and the
    # energy panel saying why it is empty.
    panels = [(ax, measured(sub, col), col, label) for ax, col, label in (
        (0, "j_per_output_token", "J per output token"), (1, "time_s", "time of the batch (s)"))]
    if all(rows.empty for _, rows, _, _ in panels):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for n, rows, col, label in panels:
        ax = axes[n]
        if rows.empty:
            _empty_panel(ax, NO_ENERGY if n == 0 else "no time measured")
            continue
        for engine, by in rows.groupby("engine"):
            by = by.sort_values("batch")
            ax.plot(by.batch, by[col], "o-", color=_color(engine), label=engine)
            top = by[by.batch_requested == "max"]
            ax.scatter(top.batch, top[col], s=140, facecolors="none", edgecolors=_color(engine))
        _axes(ax, "batch size (circled: the largest that fits)", label)
        ax.legend()
    what = "energy and latency" if not panels[0][1].empty else "latency (no energy measured)"
    return _finish(fig, f"Batch size: {what}{_card(sub)} (input {i}, output {o} tokens)", sub)


def heatmap_figure(points, engine: str):
    """J per output token at B = max over the (input, output) grid of one engine."""
    one_card(points)
    sub = points[(points.engine == engine) & (points.batch_requested == "max")]
    if sub.empty:
        return None
    energy = measured(sub, "j_per_output_token")
    if not energy.empty:
        shown, cmap = energy, "viridis_r"  # less energy: lighter
        label, what = "J per output token at B = max", "energy per output token over the bins"
    else:  # no GPU sensor: the throughput of the same points, said as such
        timed = measured(sub, "time_s")
        shown = timed.assign(j_per_output_token=timed.batch * timed.output_tokens
                             / timed.time_s)
        if shown.empty:
            return None
        label, what, cmap = "output tokens per second at B = max", (
            f"throughput over the bins ({NO_ENERGY})"), "viridis"
    ins = sorted(shown.input_tokens.unique())
    outs = sorted(shown.output_tokens.unique())
    grid = np.full((len(ins), len(outs)), np.nan)
    for _, r in shown.iterrows():
        grid[ins.index(r.input_tokens), outs.index(r.output_tokens)] = r.j_per_output_token
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(1.2 * len(outs) + 3, 6), 0.6 * len(ins) + 2.5))
    from matplotlib.colors import LogNorm

    low, high = np.nanmin(grid), np.nanmax(grid)
    norm = LogNorm(low, high) if high > low else LogNorm(low / 2, high * 2)  # one value
    image = ax.imshow(grid, norm=norm, cmap=cmap, aspect="auto", origin="lower")
    for a in range(len(ins)):
        for b in range(len(outs)):
            if not np.isnan(grid[a, b]):
                value = grid[a, b]  # 1160 tokens/s, not 1.16e+03
                ax.text(b, a, f"{value:,.0f}" if value >= 1000 else f"{value:.3g}",
                        ha="center", va="center", fontsize=8,
                        color=text_color(image.cmap(image.norm(grid[a, b]))))
    ax.set_xticks(range(len(outs)), [str(x) for x in outs])
    ax.set_yticks(range(len(ins)), [str(x) for x in ins])
    ax.set_xlabel("output tokens (bin edge)")
    ax.set_ylabel("input tokens (bin edge)")
    fig.colorbar(image, ax=ax, label=label)
    return _finish(fig, f"{engine}{_card(sub)}: {what}", sub)


def text_color(rgba) -> str:
    """Black or white, whichever contrasts more with a cell of colour `rgba` (WCAG's
    relative luminance): dark numbers on light cells, light on dark."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgba[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "black" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "white"


def phases_figure(points):
    """Prefill energy against input length and decode energy against output length, by batch
    size (the study's Figure 2), for the engine with the most points, a line for each fixed
    length swept at (`_fixed`); None without two lengths of each measured with energy."""
    one_card(points)
    points = measured(measured(points, "prefill_energy_j"), "decode_energy_j")
    if points.empty:
        return None
    engine = points.engine.value_counts().idxmax()
    sub = points[points.engine == engine]
    if sub.input_tokens.nunique() < 2 or sub.output_tokens.nunique() < 2:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, x, y, held, phase in zip(axes, ("input_tokens", "output_tokens"),
                                     ("prefill_energy_j", "decode_energy_j"),
                                     ("output", "input"), ("prefill", "decode"), strict=True):
        fixed = _fixed(sub, f"{held}_tokens", x)
        for label, rows in sub.groupby("batch_label"):
            name = "B = max (per length)" if label == "max" else f"B = {label}"
            for v in fixed:
                line = rows[rows[f"{held}_tokens"] == v].sort_values(x)
                ax.plot(line[x], line[y], "o-",
                        label=name if len(fixed) == 1 else f"{name}, {held} {v}")
        _axes(ax, x.replace("_", " ") + (f" ({held} {fixed[0]})" if len(fixed) == 1 else ""),
              f"{phase} energy of the batch (J)")
    for ax in axes:
        ax.legend(fontsize=8)
    return _finish(fig, f"{engine}{_card(sub)}: prefill and decode energy", sub)


def _fixed(points, held: str, swept: str) -> list[int]:
    """The values of `held` the points sweep `swept` at: the most measured, and a second only
    where exactly one other holds as many lengths (the study's length sweeps: two of each)."""
    first = points[held].value_counts().idxmax()
    lengths = points.groupby(held)[swept].nunique()
    rest = lengths.drop(first).sort_values(ascending=False)
    two = len(rest) and rest.iloc[0] == lengths[first] >= 3 and (
        len(rest) == 1 or rest.iloc[1] < rest.iloc[0])
    return [int(first), int(rest.index[0])] if two else [int(first)]


def pareto_figure(points):
    """Energy against latency for every configuration at the most measured (I, O), with the
    Pareto front (nothing both faster and greener); None without two points measured with
    energy."""
    one_card(points)
    points = measured(measured(points, "j_per_output_token"), "time_s")
    if points.empty:
        return None
    (i, o) = points.groupby(["input_tokens", "output_tokens"]).size().idxmax()
    sub = points[(points.input_tokens == i) & (points.output_tokens == o)].copy()
    if len(sub) < 2:
        return None
    sub["latency"] = sub.time_s
    ordered = sub.sort_values(["latency", "j_per_output_token"])
    front, best = [], np.inf
    for _, r in ordered.iterrows():
        if r.j_per_output_token < best:
            front.append(r)
            best = r.j_per_output_token
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    labelled = []  # (label, log10 x, log10 y): the same label this close once only
    for engine, rows in sub.groupby("engine"):
        ax.scatter(rows.latency, rows.j_per_output_token, color=_color(engine), label=engine)
        for _, r in rows.iterrows():
            label, x, y = f"B={r.batch}", np.log10(r.latency), np.log10(r.j_per_output_token)
            if any(t == label and abs(x - u) < 0.1 and abs(y - v) < 0.1
                   for t, u, v in labelled):
                continue  # the engines' points of one batch, side by side: one label
            labelled.append((label, x, y))
            ax.annotate(label, (r.latency, r.j_per_output_token), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.plot([r.latency for r in front], [r.j_per_output_token for r in front], "k--",
            alpha=0.6, label="Pareto front")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time of the batch (s)")
    ax.set_ylabel("J per output token")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, f"Energy against latency{_card(sub)} (input {i}, output {o} tokens)",
                   sub)


STRATEGY_TITLES = {"speculative": "Speculative decoding", "beam": "Beam search"}


def decoding_figure(points, strategy: str):
    """J per output token against batch size for plain greedy decoding and each decoding of
    `strategy` (speculative or beam; left), and its energy against greedy's at the same batch
    (right): where the right-hand lines cross 0, the strategy stops paying (for speculation,
    the study's Figure 3). At the (model, engine, I, O) with the most points of the strategy;
    other strategies' points are left out."""
    one_card(points)
    points = measured(points, "j_per_output_token")
    ours = points[points.decoding.str.startswith(strategy)]
    if ours.empty:
        return None
    key = ["model", "engine", "input_tokens", "output_tokens"]
    (model, engine, i, o) = ours.groupby(key).size().idxmax()
    sub = points[(points.model == model) & (points.engine == engine)
                 & (points.input_tokens == i) & (points.output_tokens == o)
                 & ((points.decoding == "greedy") | points.decoding.str.startswith(strategy))]
    greedy = sub[sub.decoding == "greedy"].groupby("batch").j_per_output_token.median()
    if greedy.empty:
        return None
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for decoding, rows in sub.groupby("decoding"):
        label = decoding
        if strategy == "speculative" and decoding != "greedy":
            seen = rows.acceptance.dropna()
            label = decoding.removeprefix("speculative:") + (
                f" (observed {seen.min():.0%}-{seen.max():.0%})" if len(seen) else "")
        # A batch measured more than once (several runs or stores): the line through the
        # medians, as against greedy on the right.
        median = rows.groupby("batch").j_per_output_token.median()
        (line,) = left.plot(median.index, median.values, "o-", label=label,
                            color="black" if decoding == "greedy" else None)
        if len(rows) > len(median):
            left.plot(rows.batch, rows.j_per_output_token, ".", color=line.get_color(),
                      alpha=0.5)
        if decoding != "greedy":
            right.plot(median.index, 100 * (median / median.index.map(greedy) - 1), "o-",
                       label=label)
    right.axhline(0, color="black", linewidth=0.8)
    _axes(left, "batch size", "J per output token")
    _axes(right, "batch size", "energy against greedy at that batch (%)", ylog=False)
    left.legend(fontsize=7)
    return _finish(fig, f"{STRATEGY_TITLES[strategy]}: {model} on {engine} (input {i}, "
                   f"output {o})", sub)


def moe_figure(points, moe_models: set[str]):
    """J per output token and time per decode step against batch size, a mixture of experts
    beside the dense models measured in the same runs (the study's Figure 4), greedy: one row
    per engine, each at the (I, O) with the most points of MoE models on it."""
    import pandas as pd

    one_card(points)
    points = measured(points, "j_per_output_token")
    greedy = points[(points.decoding == "greedy") & (points.batch_requested != "max")]
    moe = greedy[greedy.model.isin(moe_models)]
    beside = greedy[greedy.run_id.isin(moe.run_id)]  # dense models of a MoE model's runs
    panels = []
    for engine, rows in moe.groupby("engine"):
        (i, o) = rows.groupby(["input_tokens", "output_tokens"]).size().idxmax()
        sub = beside[(beside.engine == engine) & (beside.input_tokens == i)
                     & (beside.output_tokens == o)]
        if sub.model.nunique() >= 2:  # a dense model beside it at these settings
            panels.append((engine, i, o, sub))
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 4 * len(panels)), squeeze=False)
    for (engine, _, _, sub), (left, right) in zip(panels, axes, strict=True):
        for model, rows in sub.groupby("model"):
            rows = rows.sort_values("batch")
            style = "s-" if model in moe_models else "o--"
            label = f"{model} (MoE)" if model in moe_models else model
            left.plot(rows.batch, rows.j_per_output_token, style, label=label)
            timed = measured(rows, "tpot_s")  # engines without a first token's time: none
            right.plot(timed.batch, 1000 * timed.tpot_s, style, label=label)
        _axes(left, "batch size", f"J per output token, {engine}")
        _axes(right, "batch size", f"time per decode step (ms), {engine}")
        left.legend(fontsize=8)
    lengths = sorted({(i, o) for _, i, o, _ in panels})
    return _finish(fig, "Mixture of experts against dense models (" + ", ".join(
        f"input {i}, output {o}" for i, o in lengths) + ")",
        pd.concat([sub for *_, sub in panels]))


TP_KEY = ["model", "engine", "engine_options", "decoding", "batch", "input_tokens",
          "output_tokens", "gpu"]


def tp_series(points) -> list[tuple[tuple, object]]:
    """Each point (TP_KEY) measured at TP 1 and at a larger TP on one card: its newest
    measurement at each TP, in TP order."""
    return [(key, group.sort_values("day").groupby("tp").tail(1).sort_values("tp"))
            for key, group in points.groupby(TP_KEY)
            if group.tp.nunique() >= 2 and 1 in set(group.tp)]


def tp_figure(points):
    """Latency and energy against the number of GPUs (TP), one line per point measured at TP
    1 and more (the study's Figure 6); None without one."""
    one_card(points)
    points = measured(points, "energy_j")
    series = tp_series(points)
    if not series:
        return None
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    models = points.model.nunique() > 1
    batches = sorted({key[4] for key, _ in series})  # an engine's colour, a batch's line style
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    for (model, engine, options, decoding, b, i, o, _), g in series:
        label = (f"{model + ' ' if models else ''}{engine}"
                 f"{'' if options == '{}' else ' ' + options}"
                 f"{'' if decoding == 'greedy' else ' ' + decoding} B={b} I={i} O={o}")
        line, marker = styles[batches.index(b) % len(styles)]
        for ax, column in ((left, "time_s"), (right, "energy_j")):
            ax.plot(g.tp, g[column], linestyle=line, marker=marker, color=_color(engine),
                    label=label)
    for ax, ylabel in ((left, "time per batch (s)"), (right, "GPU energy per batch (J), "
                                                           "all GPUs")):
        _axes(ax, "GPUs (tensor parallelism)", ylabel, ylog=False)
        ax.set_xticks(sorted(points.tp.unique()), [str(t) for t in sorted(points.tp.unique())])
    right.legend(fontsize=7)
    return _finish(fig, "Latency and energy against tensor parallelism", points)


def estimate_figure(rows: list[dict], trace: str, points):
    """Theoretical against each engine's estimated energy for one trace on one card (Figure
    1): the simulated serving the table leads with (the theoretical baseline over the same
    requests at their own lengths), and the study's formula beside it (where no simulation
    was made, the formula alone); `rows` each hold the card's name as measured under "gpu"."""
    if not rows:
        return None
    one_card(points)
    cards = sorted({r["gpu"] for r in rows})
    if len(cards) > 1:
        raise MixedCardsError(f"estimates of {len(cards)} GPU models ({', '.join(cards)}): a "
                              f"figure draws one card's")
    card = cards[0]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    theory = {"engine": "theoretical", "simulated_kwh": rows[0].get("served_theoretical_kwh"),
              "kwh": rows[0]["theoretical_kwh"]}
    names = [r["engine"] for r in (theory, *rows)]
    bars = []  # x, width, kWh, color, hatch (the study's formula; alone where not simulated)
    for x, r in enumerate((theory, *rows)):
        color, simulated = "#999999" if x == 0 else _color(r["engine"]), r.get("simulated_kwh")
        bars += ([(x - 0.2, 0.4, simulated, color, None), (x + 0.2, 0.4, r["kwh"], color, "//")]
                 if simulated is not None else [(x, 0.8, r["kwh"], color, "//")])
    for x, width, v, color, hatch in bars:
        ax.bar(x, v, width=width, color="white" if hatch else color, hatch=hatch,
               edgecolor=color)
        ax.text(x, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color="#777777", label="every request at its own lengths "
                                                    "(served, simulated: the table's kWh)"),
                       Patch(facecolor="white", hatch="//", edgecolor="#777777",
                             label="the study's binned formula")], fontsize=7,
              loc="upper left")
    ax.set_ylabel("energy of the whole trace (kWh)")
    ax.set_ylim(0, max(v for _, _, v, _, _ in bars) * 1.35)  # room for the numbers, legend
    return _finish(fig, f"{trace} on {card}: estimated against theoretical energy", points)
