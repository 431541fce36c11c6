"""The report's section of replays (`infergy replay`): offline ones against the estimate,
online ones served, and the two on the same requests side by side."""

from __future__ import annotations

import json
from pathlib import Path

from infergy.profile.points import stored_replays
from infergy.report.section import Section
from infergy.report.tables import num


def replay_section(stores: list[Path]) -> Section | None:
    """The stores' replays (`infergy replay`): offline against the estimate, online served;
    None where the stores hold none."""
    offline, online, by_requests = [], [], {}
    for _, row, run in stored_replays(stores):
        r = json.loads(row["result"])
        gpu = run.get("gpu_name") or "-"
        if r.get("status") == "ok" and r.get("j_per_output_token") is not None:
            key = (r["trace"], r["model"], r["requests"],
                   json.dumps(r.get("selection"), sort_keys=True), r.get("tp", 1), gpu)
            by_requests.setdefault(key, []).append(r)
        j = num(r.get("energy_j"), "{:.4g}")
        per_token = num(r.get("j_per_output_token"), "{:.3g}")
        if row["mode"] == "offline":
            est = r.get("estimate") or {}
            errors = est.get("errors") or {}
            source = est.get("profile_gpu")
            offline.append([r["trace"], r["model"], _engine(r), r["batching"],
                            f"{r['requests']} ({r['status']})", j, per_token,
                            num(est.get("binned_j"), "{:.4g}"),
                            num(errors.get("binned"), "{:+.1%}"),
                            num(errors.get("whole_batches"), "{:+.1%}"),
                            num(errors.get("interpolated"), "{:+.1%}"), gpu,
                            "-" if source is None else "the same" if source == gpu
                            else f"{source}: another card"])
        else:
            lat = r.get("latency") or {}
            ttft, tpot = lat.get("ttft_s") or {}, lat.get("tpot_s") or {}
            steady = r.get("steady") or {}
            online.append([r["trace"], r["model"], _server(r), r["batching"],
                           f"{r['completed']} of {r['requests']}", j, per_token,
                           num(r.get("throughput_tok_s"), "{:.4g}"),
                           num(ttft.get("p50"), "{:.3f}"), num(ttft.get("p99"), "{:.3f}"),
                           num(tpot.get("p50"), "{:.4f}"),
                           num(steady.get("j_per_output_token"), "{:.3g}"), gpu])
    if not offline and not online:
        return None
    sec = Section("Replays", text=(
        "Whole traces run for real (`infergy replay`). Offline: static batches, the GPU energy "
        "measured against the estimator's for the same requests (error: estimate / measured "
        "- 1; whole batches: every partial batch charged as a full one). Online: requests "
        "streamed from a server; steady state while its level of requests was in flight. An "
        "offline replay's estimate is from its own card's profile unless `replay --gpu` named "
        "another: its error then compares two cards, and the table says so."))
    if offline:
        sec.tables.append({"title": "Offline replays", "columns": [
            "trace", "model", "engine", "batching", "requests", "measured J", "J/tok",
            "estimate J", "error", "whole-batches error", "interp. error", "GPU",
            "estimate's profile"],
            "rows": offline})
    # The study's comparison holds one engine: a server infergy started (its engine known)
    # against the offline replay of the same requests on that engine.
    versus = [[trace, model, str(n), f"{_server(o)} ({o['batching']})",
               f"{_engine(f)} ({f['batching']})", f"{o['j_per_output_token']:.3g}",
               f"{f['j_per_output_token']:.3g}",
               f"{o['j_per_output_token'] / f['j_per_output_token'] - 1:+.1%}", gpu]
              for (trace, model, n, _, _, gpu), runs in sorted(by_requests.items())
              for o in runs if o["mode"] == "online"
              for f in runs if f["mode"] == "offline" and o.get("served_by") == f["engine"]]
    if versus:
        sec.tables.append({"title": "Online against offline, the same requests on the same "
                                    "card and engine (the study's comparison)", "columns": [
            "trace", "model", "requests", "online", "offline", "online J/tok",
            "offline J/tok", "online against offline", "GPU"], "rows": versus})
    if online:
        sec.tables.append({"title": "Online serving", "columns": [
            "trace", "model", "server", "arrivals", "completed", "J", "J/tok", "tok/s",
            "TTFT p50 s", "TTFT p99 s", "TPOT p50 s", "steady J/tok", "GPU"], "rows": online})
    return sec


def _engine(replay: dict) -> str:
    """An offline replay's engine, with its GPUs where more than one."""
    tp = replay.get("tp", 1)
    return replay["engine"] + (f" (TP {tp})" if tp > 1 else "")


def _server(online: dict) -> str:
    """An online replay's server: the engine infergy started (with its GPUs where more than
    one), or the endpoint given."""
    served_by, tp = online.get("served_by"), online.get("tp", 1)
    return f"{served_by} (--serve{f', TP {tp}' if tp > 1 else ''})" if served_by \
        else online["engine"]

