"""Traces usable by name: the Azure 2023 code trace shipped with the package, and the study's
classical tasks as length distributions.

The classical tasks are *not* their datasets: infergy has no copy of WMT-14, Wikitext-2, IMDB
or CNN-DailyMail. Each is a lognormal distribution of input lengths fitted to the mean and
standard deviation the study published, cut at its published maximum, with the study's fixed
output length, 1,024 requests (the study's count), seeded.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from infergy.workloads.trace import Trace, TraceError, load_trace

# name: (input mean, input std, input max, output tokens) from the study's task table.
CLASSICAL = {
    "translation": (49.96, 39.39, 550, 64, "WMT-14"),
    "generation": (136.89, 93.13, 547, 64, "Wikitext-2"),
    "classification": (292.48, 239.94, 3112, 1, "IMDB"),
    "summarization": (838.49, 400.70, 2386, 64, "CNN-DailyMail"),
}
AZURE_CODE_2023 = "azure_llm_inference_2023_code.csv"
BUILTIN = {
    "azure-code-2023": "Azure LLM inference trace 2023, code: 8,819 requests over about an hour "
                       "(CC-BY 4.0, Patel et al., Splitwise, ISCA 2024)",
    **{name: f"{dataset}-like lengths: lognormal fitted to the study's mean {mean} +- {std}, "
             f"max {top}, output {out} (a fitted distribution, not the dataset)"
       for name, (mean, std, top, out, dataset) in CLASSICAL.items()},
}
REQUESTS = 1024


def trace_names() -> list[str]:
    return list(BUILTIN)


def builtin_trace(name: str, seed: int = 0) -> Trace:
    if name == "azure-code-2023":
        with resources.as_file(resources.files("infergy.workloads") / "data" /
                               AZURE_CODE_2023) as path:
            trace = load_trace(path, "azure")
        trace.name, trace.notes = name, BUILTIN[name]
        return trace
    if name in CLASSICAL:
        mean, std, top, out, _ = CLASSICAL[name]
        return Trace(name=name, input_tokens=_lognormal(mean, std, top, seed),
                     output_tokens=np.full(REQUESTS, out, dtype=np.int64),
                     source=f"built-in distribution ({REQUESTS} requests, seed {seed})",
                     notes=BUILTIN[name])
    raise TraceError(f"unknown trace {name!r}; built-in traces: {', '.join(BUILTIN)} (or give "
                     f"a file)")


def _lognormal(mean: float, std: float, top: int, seed: int) -> np.ndarray:
    """REQUESTS whole token counts in [1, top] from the lognormal with this mean and std."""
    sigma2 = np.log(1 + (std / mean) ** 2)
    mu = np.log(mean) - sigma2 / 2
    values = np.random.default_rng(seed).lognormal(mu, np.sqrt(sigma2), REQUESTS)
    return np.clip(np.rint(values), 1, top).astype(np.int64)


def get_trace(name_or_path: str, **kwargs) -> Trace:
    """A built-in trace by name, or a trace file (kwargs go to `load_trace`)."""
    if name_or_path in BUILTIN:
        return builtin_trace(name_or_path)
    import difflib
    from pathlib import Path

    if not Path(name_or_path).exists():
        near = difflib.get_close_matches(name_or_path.lower(), list(BUILTIN), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise TraceError(f"{name_or_path}: not a built-in trace{hint} ({', '.join(BUILTIN)}) "
                         f"and no such file")
    return load_trace(name_or_path, **kwargs)


def describe(trace: Trace) -> dict:
    """The study's Tables 1-2 layout: mean +- std, median, p99 of input and output tokens;
    plus count, time span and arrival rate."""
    def stats(values: np.ndarray) -> dict:
        return {"mean": float(values.mean()), "std": float(values.std()),
                "median": float(np.median(values)), "p99": float(np.percentile(values, 99)),
                "max": int(values.max())}

    span = trace.span_s
    return {"name": trace.name, "requests": len(trace), "span_s": span,
            "rate_per_s": len(trace) / span if span else None,
            "input": stats(trace.input_tokens), "output": stats(trace.output_tokens),
            "dropped": trace.dropped, "source": trace.source, "notes": trace.notes}
