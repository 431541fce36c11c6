"""The time and energy coefficients of llama-3.1-8b fitted on the H100 and on the H200 (the
shipped stores, no prior), per feature, with their ratio H200 / H100.

    PYTHONPATH=src python3 docs/measurements/2026-12-06-cross-card-ratio-check/coefficients.py
"""

from pathlib import Path

from infergy.estimate.fit import fit_step_cost, measured
from infergy.estimate.steps import FEATURES

SHIPPED = Path("src/infergy/profile/shipped")
CARDS = (("NVIDIA H100 80GB HBM3", "llama-3.1-8b-h100.db"), ("NVIDIA H200", "llama-3.1-8b-h200.db"))


def ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}" if a else "-"


for engine in ("vllm", "hf-eager"):
    h100, h200 = (fit_step_cost(measured([SHIPPED / db], "llama-3.1-8b", engine, card))
                  for card, db in CARDS)
    print(f"{engine}: idle {h100.idle_w:.1f} -> {h200.idle_w:.1f} W, "
          f"busy {h100.busy_w:.1f} -> {h200.busy_w:.1f} W")
    for i, name in enumerate(FEATURES[:6]):
        t, e = (h100.time_s[i], h200.time_s[i]), (h100.active_j[i], h200.active_j[i])
        print(f"  {name:15} time {t[0]:.3g} -> {t[1]:.3g} s ({ratio(*t)})   "
              f"energy {e[0]:.3g} -> {e[1]:.3g} J ({ratio(*e)})")
