"""The sections of `infergy advise`'s search (its page, `--out DIR`, and `infergy report
--slo`): the energy-latency figure (PNG and SVG), the advised configuration, the baseline it
is compared with, the runners up, the Pareto front and what was not searched. Every figure
in them is the simulator's, predicted from measured points and labelled so."""

from __future__ import annotations

from pathlib import Path

from infergy.estimate import Advice, Option, seconds_words
from infergy.models.gpus import NVML_NAMES
from infergy.report.figures import ENGINE_COLORS, _plt
from infergy.report.section import Section, save

MARKERS = ["o", "s", "^", "D", "v", "P"]


def advice_figure(advice: Advice):
    """Energy of the whole trace against the latency the front is drawn on (the first
    target's), every configuration searched, the Pareto front joined, the target a line, the
    advised configuration and the baseline marked. None where no option has that latency."""
    axis = advice.axis
    known = [o for o in advice.options if o.value(axis) is not None]
    if not known:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    cards = sorted({o.config.gpu for o in known})
    for o in known:
        ax.scatter(o.value(axis), o.kwh, s=18, alpha=0.55,
                   color=ENGINE_COLORS.get(o.config.engine, "#555555"),
                   marker=MARKERS[cards.index(o.config.gpu) % len(MARKERS)],
                   edgecolors="none" if o.meets else "black", linewidths=0.6)
    front = advice.pareto
    ax.plot([o.value(axis) for o in front], [o.kwh for o in front], color="#333333",
            linewidth=1, label="Pareto front")
    if advice.targets:
        ax.axvline(axis.limit_s, color="#8a5a00", linestyle="--", linewidth=1,
                   label=f"target {axis.words()}")
    for o, label, marker in ((advice.chosen, "advised" if advice.best else "closest", "*"),
                             (advice.baseline, "baseline", "X")):
        if o is not None and o.value(axis) is not None:
            ax.scatter(o.value(axis), o.kwh, s=160, marker=marker, color="none",
                       edgecolors="black", linewidths=1.2, label=f"{label}: {_short(o)}")
    for engine in sorted({o.config.engine for o in known}):
        ax.scatter([], [], color=ENGINE_COLORS.get(engine, "#555555"), label=engine)
    for n, card in enumerate(cards):
        ax.scatter([], [], color="#999999", marker=MARKERS[n % len(MARKERS)],
                   label=NVML_NAMES.get(card, card))
    ax.set_xscale("log")
    ax.set_xlabel(f"{axis.name.replace('_', ' ')} (s), simulated")
    ax.set_ylabel("GPU energy of the whole trace (kWh), simulated")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"{advice.trace} on {advice.model}, {advice.serving}: every configuration "
                 f"searched", fontsize=10)
    fig.text(0.01, 0.01, "Predicted by infergy's simulator over step-cost models fitted to "
             "measured points, each card's from its own; outlined points miss a target.",
             fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def advice_sections(advice: Advice, out: Path, stem: str = "advice") -> list[Section]:
    """The search's sections: the advice with its figure (out/STEM.png and .svg) and
    tables, the Pareto front, and what was not searched (collapsed)."""
    targets = ", ".join(t.words() for t in advice.targets) or "none given"
    head = Section(f"Least energy for {advice.trace} on {advice.model}",
                   text=f"Served {advice.serving}; latency targets: {targets}. "
                        + (f"{advice.left_out}. " if advice.left_out else "")
                        + f"{len(advice.options)} configurations searched in "
                        f"{advice.search_s:.1f} s. {verdict(advice)}"
                        + "".join(f" {line}." for line in advice.notes))
    head.tables.append(table("The configurations", option_rows(advice)))
    save(advice_figure(advice), out, stem, head, "no configuration has the latency "
         f"{advice.axis.name} (no request of two tokens or more)")
    front = Section(f"Pareto front of {advice.trace} on {advice.model}",
                    text=f"The configurations that no other beats on both energy and "
                         f"{advice.axis.name}, by latency.")
    front.tables.append(table("Pareto front", [("", o) for o in advice.pareto]))
    left = Section(f"Not searched for {advice.trace} on {advice.model}", collapsed=True,
                   missing=list(advice.not_searched))
    return [head, front, left]


COLUMNS = ["", "card", "engine", "caps", "replicas", "kWh", "±p90", "J/req", "TTFT p90",
           "TPOT p90", "E2E p99", "meets targets"]
CAPS = ("caps: a static engine's batch; vLLM's max_num_seqs / max_num_batched_tokens; "
        "* the engine's defaults; † a card that did not measure the model with this engine: "
        "its figures predicted from the card's other models")


def option_rows(advice: Advice) -> list[tuple[str, Option]]:
    """The configurations table's rows, labelled: the advised (or closest) one, the baseline,
    the runners-up."""
    rows = [("advised" if advice.best else "closest", advice.chosen)]
    rows += [("baseline", advice.baseline)] if advice.baseline else []
    return rows + [(f"runner-up {n}", o) for n, o in enumerate(advice.runners_up(), 1)]


def table(title: str, rows: list[tuple[str, Option]]) -> dict:
    """A table of options in the page's layout (COLUMNS)."""
    return {"title": title, "columns": COLUMNS, "note": CAPS,
            "rows": [cells(label, o) for label, o in rows]}


def cells(label: str, o: Option) -> list[str]:
    """One option's cells (COLUMNS): what `infergy advise` prints in its tables too."""
    c = o.config
    caps = str(c.batch_cap) if c.batched_tokens is None else f"{c.batch_cap}/{c.batched_tokens}"
    card = NVML_NAMES.get(c.gpu, c.gpu) + " †" * bool(o.predicted)
    return [label, card, c.engine, caps + "*" * o.default,
            str(c.replicas), f"{o.kwh:.4g}", f"{o.band:.0%}", f"{o.j_per_request:.4g}",
            _latency(o, "ttft_s", "p90"), _latency(o, "tpot_s", "p90"),
            _latency(o, "e2e_s", "p99"),
            "yes" if o.meets else "no: " + "; ".join(_over(m) for m in o.misses)]


def verdict(advice: Advice) -> str:
    """In words: what is advised and what it saves, or which target no configuration meets
    and by how much the closest misses it."""
    chosen = advice.chosen
    where = f"{chosen.config.words()} on {chosen.config.gpu}"
    predicted = (f" The model is not measured with {chosen.config.engine} on "
                 f"{chosen.config.gpu}: these figures are {chosen.predicted}."
                 if chosen.predicted else "")
    if advice.best is None:
        return (f"No configuration meets every target. The closest, {where}, misses "
                + "; ".join(_miss(m) for m in chosen.misses) + "." + predicted)
    saving = advice.saving()
    if saving is None or advice.baseline is None:
        return f"Advised: {where}, {chosen.kwh:.4g} kWh.{predicted}"
    base = advice.baseline
    if base is chosen:
        return (f"Advised: {where}, the engine's defaults: {chosen.kwh:.4g} kWh "
                f"({chosen.j_per_request:.4g} J a request). No configuration searched saves "
                f"more than 1% over them.{predicted}")
    within = (" That is within the simulator's error band: no configuration searched does "
              "clearly better than the defaults." if abs(saving) < max(chosen.band, base.band)
              else "")
    return (f"Advised: {where}, {chosen.kwh:.4g} kWh ({chosen.j_per_request:.4g} J a request), "
            f"{saving:.1%} less than {base.config.words()}{' (defaults)' * base.default}"
            f"{'' if base.meets else ', which misses the targets'}.{within}{predicted}")


def _short(o: Option) -> str:
    """engine caps xN, card: the figure's legend."""
    caps = cells("", o)
    return f"{caps[2]} {caps[3]} x{caps[4]}, {caps[1]}"


def _latency(o: Option, metric: str, percentile: str) -> str:
    value = (o.latency.get(metric) or {}).get(percentile)
    return "-" if value is None else seconds_words(value)


def _over(m: dict) -> str:
    return f"{m['target']} {'?' if m['over'] is None else format(m['over'], '+.0%')}"


def _miss(m: dict) -> str:
    if m["value_s"] is None:
        return f"{m['target']}: no request gives it"
    return (f"{m['target']} {seconds_words(m['value_s'])} against {seconds_words(m['limit_s'])} "
            f"(+{m['over']:.0%})")
