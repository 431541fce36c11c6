"""A section of the report's page (title, text, figures, tables, and what could not be shown),
how a figure lands in it, and the card names the page's files and sections use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from infergy.models.gpus import NVML_NAMES
from infergy.report import figures


@dataclass
class Section:
    """One heading of the page: its text, figures, tables, and what could not be shown."""

    title: str
    figures: list[str] = field(default_factory=list)  # file stems under out/
    tables: list[dict] = field(default_factory=list)  # {"title", "columns", "rows"}
    missing: list[str] = field(default_factory=list)  # what could not be shown, and how to fix
    text: str = ""
    collapsed: bool = False  # folded under its title (<details>): evidence few need to read


def card_tag(card: str) -> str:
    """A card's name in file names: its name in infergy's GPU table (h100-sxm, h200), else
    its NVML name in lower case, dashes for anything else."""
    name = NVML_NAMES.get(card, card).lower()
    return "-".join("".join(c if c.isalnum() else " " for c in name).split())


def save(fig, out: Path, stem: str, sec: Section, missing: str) -> None:
    """Write `fig` as out/STEM.png and .svg and add it to `sec`; where `fig` is None (its
    data are missing), add `missing` (if any) to what `sec` could not show."""
    if fig is None:
        if missing:
            sec.missing.append(missing)
        return
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)
    fig.savefig(out / f"{safe}.png", dpi=110)
    fig.savefig(out / f"{safe}.svg")
    figures._plt().close(fig)
    sec.figures.append(safe)
