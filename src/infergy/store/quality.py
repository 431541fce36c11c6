"""How far a measured point can be trusted: the thresholds that flag its repeats as unsteady,
read where points are measured (run), summarized (results) and reported (report)."""

from __future__ import annotations

# Repeats of one point further apart than this (CV of energy) are flagged: the 5%.
STEADY_CV = 0.05
# A window this long spans 20 steps of NVML's energy counter (100 ms): shorter ones vary
# by their steps alone.
STEADY_WINDOW_S = 2.0


def window_s(time_s: float | None, runs_per_window: int | None) -> float:
    """How long one window of a point lasted: its runs back to back (min_window_s)."""
    return (time_s or 0) * (runs_per_window or 1)


def unsteady_repeats(result) -> str | None:
    """Why a point's repeats disagree by more than `STEADY_CV`, where they do: its windows
    are short beside the energy counter's steps, or the runs' times varied with them (a
    busy launching CPU, as hf-eager's B = 1 on a virtual machine), or the power did."""
    cv = result.energy_cv
    if cv is None or cv <= STEADY_CV:
        return None
    apart = f"repeats {cv:.1%} apart (CV of energy, over {STEADY_CV:.0%})"
    window = window_s(result.time_s, result.runs_per_window)
    if window < STEADY_WINDOW_S:
        return (f"{apart}: windows of {window:.2g} s, a few steps of the energy counter; "
                f"min_window_s (--min-window) {STEADY_WINDOW_S:g} would fill each window with "
                f"runs back to back")
    if (result.time_cv or 0) > cv / 2:
        return (f"{apart}: the runs' times varied too (CV {result.time_cv:.1%}): the host "
                f"(the CPU launching the kernels, other work) set the pace, not the GPU")
    return f"{apart} at a steady time (CV {result.time_cv or 0:.1%}): the GPU's power varied"
