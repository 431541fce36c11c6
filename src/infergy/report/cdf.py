"""The report's figure of a trace rather than of stored points: its real request lengths
against the lengths its bins charge (the study's Figure 7)."""

from __future__ import annotations

import numpy as np

from infergy.report.figures import _empty_panel, _finish, _plt


def cdf_figure(trace, grid):
    """CDF of the trace's real lengths against the lengths its bins charge (Figure 7)."""
    binned = grid.assign(trace.input_tokens, trace.output_tokens)
    ins, outs = binned.binned_lengths()
    kept = binned.kept
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, real, charged, what in ((axes[0], trace.input_tokens[kept], ins, "input"),
                                    (axes[1], trace.output_tokens[kept], outs, "output")):
        if not (np.asarray(real) > 0).any():  # log axes: lengths of 0 tokens cannot be drawn
            _empty_panel(ax, f"no request has {what} tokens")
            continue
        for values, label, style in ((real, "real", "-"), (charged, "binned", "--")):
            x = np.sort(values)
            share = np.arange(1, len(x) + 1) / len(x)
            ax.plot(x[x > 0], share[x > 0], style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"{what} tokens")
        ax.set_ylabel("share of requests")
        ax.grid(True, alpha=0.3)
        ax.legend()
    return _finish(fig, f"{trace.name}: real against binned lengths", None,
                   f"{len(trace)} requests, {int(kept.sum())} binned; {trace.source}")
