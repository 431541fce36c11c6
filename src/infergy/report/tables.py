"""A card's points as tables: where and when they were measured, and how well each point's
repeats agree (the coefficient of variation of energy, against infergy's 5%). They read the
DataFrame of `infergy.profile.load_points`; `benchmarks/profile_tables.py` prints the second in
Markdown for docs/measurements.md."""

from __future__ import annotations

import statistics

from infergy.store.quality import STEADY_CV, STEADY_WINDOW_S, window_s

# The card of points whose run recorded no GPU name: a card of their own, named as unknown.
NO_GPU_NAME = "GPU not recorded"
PROVENANCE_COLUMNS = ["GPU", "points", "measured (UTC)", "driver", "power limit W",
                      "idle W at runs' starts", "host CPU", "software"]
REPEATABILITY_COLUMNS = ["engine", "decoding", "TP", "B", "points",
                         f"windows of at least {STEADY_WINDOW_S:g} s", "mean CV", "max CV",
                         f"over {STEADY_CV:.0%}"]
SAMPLING_COLUMNS = ["engine", "B", "I", "O", "decoding", "J/token", "against greedy", "time s",
                    "CV of energy"]


def card_names(points) -> list[str]:
    """Each point's card: its GPU as its run recorded it; where none, the CPU it ran on
    ("cpu:HOST (CPU, no GPU)", a run on a machine without a GPU), else `NO_GPU_NAME`."""
    return [gpu if isinstance(gpu, str) and gpu else
            f"{device} (CPU, no GPU)" if str(device).startswith("cpu:") else NO_GPU_NAME
            for gpu, device in zip(points["gpu"], points["device"], strict=True)]


def card_tables(points) -> list[tuple[str, list[str], list[list[str]]]]:
    """Each card's two tables, as (title, columns, rows): where and when its points were
    measured, and how well their repeats agree (what `infergy results summary` prints)."""
    found = []
    for card, on_card in points.assign(card=card_names(points)).groupby("card"):
        found += [(f"{card}: where and when (UTC)", PROVENANCE_COLUMNS,
                   provenance_rows(on_card)),
                  (f"{card}: CV of energy over each point's repeats", REPEATABILITY_COLUMNS,
                   repeatability_rows(on_card))]
    return found


def provenance_rows(points) -> list[list[str]]:
    """One row per GPU (its UUID's first 12 characters; the GPUs of a tensor-parallel run
    together), first measured first: its points, the span of their times, the drivers and
    power limits of its runs, the idle power its runs measured at their starts, the host's CPU
    (which paces B = 1) and the software that measured them."""
    rows = []
    for device, group in points.groupby("device"):
        idle = [w for ws in group["idle_w"] for w in ws]
        first, last = group["measured_at"].min(), group["measured_at"].max()
        rows.append((first, [
            ", ".join(f"{d[:12]}…" if len(d) > 12 else d for d in device.split(",")),
            str(len(group)),
            _span(first, last),
            _each(group["driver"]),
            _each(f"{w:g}" for w in group["power_limit_w"] if known(w)),
            _range(idle, "{:.1f}") if idle else "not measured",
            _each(group["host_cpu"]) if group["host_cpu"].notna().any() else "not recorded",
            ", ".join(sorted({s for software in group["software"].dropna()
                              for s in software.split(", ")})) or "-",
        ]))
    return [row for _, row in sorted(rows)]


def repeatability_rows(points) -> list[list[str]]:
    """Per engine, decoding, TP and batch (1, max, ...): the points, those whose windows
    last at least `STEADY_WINDOW_S` (shorter ones vary by the energy counter's steps alone),
    their mean and largest CV of energy over repeats, and those over `STEADY_CV`, named."""
    rows = []
    keys = ["engine", "decoding", "tp", "batch_label"]
    for (engine, decoding, tp, batch), group in points.groupby(keys, sort=True):
        long = [(p, p.energy_cv) for p in group.itertuples()
                if known(p.energy_cv)
                and window_s(p.time_s, _int(p.runs_per_window)) >= STEADY_WINDOW_S]
        cvs = [cv for _, cv in long]
        over = [f"{p.input_tokens}/{p.output_tokens} B={p.batch} {cv:.1%}"
                for p, cv in long if cv > STEADY_CV]
        rows.append([engine, decoding, str(tp), batch, str(len(group)), str(len(long)),
                     f"{statistics.mean(cvs):.1%}" if cvs else "-",
                     f"{max(cvs):.1%}" if cvs else "-",
                     ", ".join(over) if over else "none"])
    return rows


def sampling_rows(points) -> list[list[str]]:
    """Sampling (the `sample:...` decodings) beside greedy decoding at the same engine (and
    engine options), batch, input and output, one card's one-GPU points: each point's J per
    output token, its change against greedy's (the median of greedy's points there), its time
    and the CV of its repeats' energy, which on a host-bound engine at B = 1 can exceed the
    change."""
    sampled = points[points.decoding.str.startswith("sample")]
    rows = []
    keys = ["engine", "engine_options", "batch", "input_tokens", "output_tokens"]
    for (engine, options, batch, i, o), group in sampled.groupby(keys, sort=True):
        greedy = points[(points.engine == engine) & (points.engine_options == options)
                        & (points.batch == batch) & (points.input_tokens == i)
                        & (points.output_tokens == o) & (points.decoding == "greedy")]
        base = greedy.j_per_output_token.median() if len(greedy) else None
        for p in [*greedy.itertuples(), *group.sort_values("decoding").itertuples()]:
            rows.append([engine, f"{batch} (max)" if p.batch_label == "max" else str(batch),
                         str(i), str(o), p.decoding, num(p.j_per_output_token, "{:.4g}"),
                         "-" if p.decoding == "greedy" else
                         num(change(p.j_per_output_token, base), "{:+.1%}"),
                         num(p.time_s, "{:.3g}"), num(p.energy_cv, "{:.1%}")])
    return rows


def _span(first: str, last: str) -> str:
    start, end = first[:16].replace("T", " "), last[:16].replace("T", " ")
    if start == end:
        return start
    return f"{start} to {end[11:] if end[:10] == start[:10] else end}"


def _range(values: list[float], fmt: str) -> str:
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}-{high}"


def _each(values) -> str:
    return ", ".join(sorted({str(v) for v in values if known(v)})) or "-"


def known(value) -> bool:
    """Neither None nor NaN (pandas' None in a column of numbers)."""
    return value is not None and value == value


def _int(value) -> int | None:
    return int(value) if known(value) else None


def num(value, fmt: str) -> str:
    """`value` formatted with `fmt`, or "-" where it is None or NaN."""
    return fmt.format(value) if known(value) else "-"


def change(value, base) -> float | None:
    """value / base - 1, or None where either is missing (None or NaN)."""
    if not (known(value) and known(base)) or not base:
        return None
    return value / base - 1
