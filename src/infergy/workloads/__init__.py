"""Workloads: traces of requests (trace.py), the ones built in (builtin.py), and the study's
binning of their lengths (bins.py)."""

from infergy.workloads.bins import BinError, BinGrid, Binned
from infergy.workloads.builtin import BUILTIN, builtin_trace, describe, get_trace, trace_names
from infergy.workloads.trace import FORMATS, Trace, TraceError, load_trace

__all__ = ["BUILTIN", "FORMATS", "BinError", "BinGrid", "Binned", "Trace", "TraceError",
           "builtin_trace", "describe", "get_trace", "load_trace", "trace_names"]
