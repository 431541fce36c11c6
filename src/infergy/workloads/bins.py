"""The study's binning (its section 4.1): each request goes to its ceiling bin, the smallest
input edge >= its input and the smallest output edge >= its output. Requests beyond the last
edge are excluded, as the study did, or clamped to the last edge; either way they are counted
and shown, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The study's bins (../shared/reference/paper.md, section 4.1). Its printed input edges drop
# 16 and 64 from its own rule 2^m, 4 <= m <= 13: both are offered.
PAPER_INPUT_EDGES = (32, 128, 256, 512, 1024, 2048, 4096, 8192)
PAPER_INPUT_EDGES_RULE = tuple(2**m for m in range(4, 14))
PAPER_OUTPUT_EDGES = (8, 16, 32, 64, 128, 256, 512)

BEYOND = ("exclude", "clamp")


class BinError(ValueError):
    pass


@dataclass(frozen=True)
class BinGrid:
    input_edges: tuple[int, ...]
    output_edges: tuple[int, ...]
    beyond: str = "exclude"  # requests past the last edge: "exclude" or "clamp"

    def __post_init__(self):
        for name in ("input_edges", "output_edges"):
            edges = getattr(self, name)
            if not edges or any(e < 1 for e in edges) or list(edges) != sorted(set(edges)):
                raise BinError(f"{name} must be increasing positive token counts, got "
                               f"{list(edges)}")
        if self.beyond not in BEYOND:
            raise BinError(f"beyond must be one of {', '.join(BEYOND)}, got {self.beyond!r}")

    @classmethod
    def named(cls, name: str, beyond: str = "exclude") -> BinGrid:
        """`paper` (the study's printed edges), `paper-rule` (its rule 2^4 ... 2^13) or
        `pow2` (powers of two from 1 to 32k input, 1 to 4k output)."""
        grids = {
            "paper": (PAPER_INPUT_EDGES, PAPER_OUTPUT_EDGES),
            "paper-rule": (PAPER_INPUT_EDGES_RULE, PAPER_OUTPUT_EDGES),
            "pow2": (tuple(2**m for m in range(16)), tuple(2**m for m in range(13))),
        }
        if name not in grids:
            raise BinError(f"unknown bins {name!r}; expected one of {', '.join(grids)}")
        return cls(*grids[name], beyond=beyond)

    @classmethod
    def of(cls, bins: str = "paper", input_edges: str | None = None,
           output_edges: str | None = None, beyond: str = "exclude") -> BinGrid:
        """The grid the command line asks for: the named one (`bins`), its input or output
        edges replaced by the ones given (token counts separated by commas, as
        --input-edges and --output-edges take them). BinError names the option that is
        wrong."""
        named = None if input_edges and output_edges else cls.named(bins, beyond)
        return cls(_edges(input_edges, "--input-edges") if input_edges else named.input_edges,
                   _edges(output_edges, "--output-edges") if output_edges
                   else named.output_edges, beyond)

    def assign(self, input_tokens: np.ndarray, output_tokens: np.ndarray) -> Binned:
        """Each request's ceiling bin, as indices into the edges (-1: excluded)."""
        inputs = np.asarray(input_tokens)
        outputs = np.asarray(output_tokens)
        ins, outs = np.asarray(self.input_edges), np.asarray(self.output_edges)
        i = np.searchsorted(ins, inputs, side="left")
        o = np.searchsorted(outs, outputs, side="left")
        over_in, over_out = i >= len(ins), o >= len(outs)
        if self.beyond == "clamp":
            i = np.minimum(i, len(ins) - 1)
            o = np.minimum(o, len(outs) - 1)
            keep = np.ones(len(inputs), dtype=bool)
        else:
            keep = ~(over_in | over_out)
        return Binned(self, np.where(keep, i, -1), np.where(keep, o, -1), int(over_in.sum()),
                      int(over_out.sum()), int((over_in | over_out).sum()))


@dataclass
class Binned:
    grid: BinGrid
    input_bin: np.ndarray  # index into grid.input_edges; -1 where excluded
    output_bin: np.ndarray
    over_input: int  # requests with more input than the last edge
    over_output: int
    beyond: int  # requests past either last edge (excluded, or clamped)

    @property
    def kept(self) -> np.ndarray:
        return self.input_bin >= 0

    def counts(self) -> np.ndarray:
        """Requests per (input bin, output bin)."""
        shape = (len(self.grid.input_edges), len(self.grid.output_edges))
        flat = np.ravel_multi_index((self.input_bin[self.kept], self.output_bin[self.kept]),
                                    shape)
        return np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape)

    def coverage(self) -> dict:
        total = len(self.input_bin)
        return {"requests": total, "binned": int(self.kept.sum()),
                "beyond_last_edge": self.beyond, "over_input": self.over_input,
                "over_output": self.over_output, "handled": self.grid.beyond}

    def binned_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """The lengths each kept request is charged at: its bin's edges."""
        ins, outs = np.asarray(self.grid.input_edges), np.asarray(self.grid.output_edges)
        return ins[self.input_bin[self.kept]], outs[self.output_bin[self.kept]]


def _edges(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise BinError(f"{option} expects token counts separated by commas, got {text!r}") \
            from None
