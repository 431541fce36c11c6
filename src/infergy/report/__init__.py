"""`infergy report`: a self-contained HTML page (index.html, figures as PNG and SVG beside it)
from results stores and traces, each card the stores hold in sections of its own.

- page.py: the page (`build_report`), a card's sections, the HTML template.
- estimates.py, replays.py: the sections of a trace's estimates and of the stores' replays.
- figures.py, cdf.py, tables.py: the figures (of points; of a trace's lengths) and the
  provenance and repeatability tables.
- section.py: a section of the page, and how a figure lands in it.
- advice.py: `infergy advise`'s page, its energy-latency figure and its tables' cells.

The stores' points are read by infergy.profile (`load_points`, re-exported here).
"""

from infergy.profile.points import load_points
from infergy.report import figures, tables
from infergy.report.advice import CAPS, COLUMNS, cells, option_rows, verdict
from infergy.report.page import GRID_SOURCE, WORLD_GCO2_PER_KWH, build_report, write_advice
from infergy.report.section import Section, card_tag
from infergy.report.tables import NO_GPU_NAME, card_tables

__all__ = ["CAPS", "COLUMNS", "GRID_SOURCE", "NO_GPU_NAME", "WORLD_GCO2_PER_KWH", "Section",
           "build_report", "card_tables", "card_tag", "cells", "figures", "load_points",
           "option_rows", "tables", "verdict", "write_advice"]
