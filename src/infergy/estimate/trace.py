"""A trace's estimate as `infergy estimate` makes it: the trace binned once on a grid, every
engine on every GPU asked for, and what is printed of it (`to_dict`, `coverage_line`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infergy.estimate.binned import J_PER_KWH
from infergy.estimate.cards import Estimates, estimate_cards
from infergy.estimate.served import Serving
from infergy.models import get_model
from infergy.profile.load import EstimateError
from infergy.workloads.bins import BinGrid, Binned
from infergy.workloads.trace import Trace


@dataclass
class TraceEstimate:
    """A trace estimated for one model on every engine and GPU asked for."""

    trace: str  # the trace's name
    model: str
    engines: list[str]  # the first is the baseline of the savings
    grid: BinGrid
    binned: Binned  # the trace on `grid`
    estimates: Estimates
    over_context: int = 0  # requests longer than the model's context, left out
    context: int = 0  # the model's context, in tokens

    @property
    def coverage(self) -> dict:
        """The trace's requests in the bins and past their last edge (`Binned.coverage`)."""
        return self.binned.coverage()

    @property
    def bins_needed(self) -> int:
        """How many bins hold at least one of the trace's requests."""
        return int((self.binned.counts() > 0).sum())

    def coverage_line(self) -> str:
        """'N of M requests in the bins', and those past the last edge, by input and by
        output, and what was done with them."""
        c = self.coverage
        beyond = (f"; {c['beyond_last_edge']} lie past the last bin edge ({c['over_input']} "
                  f"by input, {c['over_output']} by output): "
                  f"{'excluded' if self.grid.beyond == 'exclude' else 'charged at the last edge'}"
                  if c["beyond_last_edge"] else "")
        left = (f"{left_out_words(self.over_context, self.model, self.context)}; of the "
                f"rest, " if self.over_context else "")
        return f"{left}{c['binned']} of {c['requests']} requests in the bins{beyond}"

    def rows(self) -> list[dict]:
        """What `infergy estimate` prints, a dict a GPU and engine (the baseline first on each
        GPU): `gpu` (as measured), the keys of `CardEstimate.rows()` (simulated_kwh, the
        figure the command leads with, and kwh, the study's formula beside it; j_per_request,
        saving_vs_baseline, ... of each) and the GPU's theoretical baseline
        (`theoretical_kwh`, the study's over the binned requests at their bins' edges, and
        `served_theoretical_kwh`, over every request at its own lengths as the simulation
        serves them). GPUs and engines not estimated: `estimates.not_estimated` and each
        card's `unmeasured`, with why."""
        return [{"gpu": c.gpu, **row, "theoretical_kwh": c.theoretical_j / J_PER_KWH,
                 "served_theoretical_kwh": c.served_theoretical_j / J_PER_KWH}
                for c in self.estimates.cards for row in c.rows()]

    def to_dict(self) -> dict:
        """JSON-ready data (what `infergy estimate --json` prints): the trace, the model, the
        bins' edges and coverage, then `Estimates.to_dict()`."""
        return {"trace": self.trace, "model": self.model, "over_context": self.over_context,
                "bins": {"input_edges": self.grid.input_edges,
                         "output_edges": self.grid.output_edges, **self.coverage},
                **self.estimates.to_dict()}


def left_out_words(over: int, model: str, context: int) -> str:
    """What is said of the `over` requests longer than the model's context (`Trace.within`)."""
    return (f"{over} requests longer than {model}'s context of {context:,} tokens (input + "
            f"output) left out, as an engine refuses them")


def estimate_trace(trace: Trace, model: str, engines: Sequence[str], grid: BinGrid, *,
                   gpus: Sequence[str] | None = None, stores: list[Path] | None = None,
                   theory_gpu: str | None = None, decoding: str = "greedy",
                   serving: Serving | None = None) -> TraceEstimate:
    """`trace` for `model` on `engines` (the first: the baseline of the savings), less the
    requests longer than the model's context, binned on `grid`, on every GPU of `gpus` (None:
    every one the stores hold it on) from `stores` (None: the profiles shipped with infergy);
    see `estimate_cards`. UnknownModelError for a model not in the catalog, EstimateError
    (MissingPoints) where nothing can be estimated."""
    spec = get_model(model)  # unknown: said as such, not as a missing profile
    serving = serving or Serving()
    serving.arrivals(trace)  # a --rate or --time-scale that cannot be: said before any work
    trace, over = trace.within(spec.max_context)
    if over and not len(trace):
        raise EstimateError(f"{trace.name}: every one of its {over} requests is longer than "
                            f"{spec.name}'s context of {spec.max_context:,} tokens (input + "
                            f"output), which an engine refuses: nothing to estimate")
    binned = grid.assign(trace.input_tokens, trace.output_tokens)
    return TraceEstimate(trace.name, spec.name, list(engines), grid, binned,
                         estimate_cards(trace, binned, spec.name, engines, gpus, stores,
                                        theory_gpu, decoding, serving), over, spec.max_context)
