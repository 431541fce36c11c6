"""Reading results stores: the one reader of their points and replays, for the profile (the
estimator's B = max points), the report and `infergy results`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from infergy.store import Store

# The columns of `load_points`, also those of its empty DataFrame (no store, no point).
POINT_COLUMNS = [
    "model", "engine", "engine_options", "decoding", "batch", "batch_requested",
    "input_tokens", "output_tokens", "energy_j", "j_per_output_token", "time_s", "tp",
    "gpu_energy_j", "gpu_ranks", "prefill_energy_j", "decode_energy_j", "tpot_s", "acceptance",
    "engine_env", "gpu", "software", "host_cpu", "day", "store", "run_id", "batch_label",
    "device", "measured_at", "energy_cv", "runs_per_window", "driver", "power_limit_w",
    "idle_w"]


def stored_points(stores: list[Path], **where) -> Iterator[tuple[Path, dict, dict]]:
    """(store, point, run) for every point of the stores matching `where` (columns of the
    points table, as `Store.points` takes them), each store in its own order (oldest first);
    `run` is the row of the run that measured the point, {} where it is not recorded. A
    point comes once, however many stores hold it (a store given twice, or merged into
    another given beside it: `infergy results merge` keeps its id)."""
    seen: set[str] = set()
    for path in distinct(stores):
        with Store(path, create=False, read_only=True) as store:
            runs = {r["id"]: r for r in store.runs()}
            for point in store.points(**where):
                if point["id"] not in seen:
                    seen.add(point["id"])
                    yield path, point, runs.get(point["run_id"]) or {}


def distinct(stores: list[Path]) -> list[Path]:
    """The stores, each file once (as first given: `a.db` and `./a.db` are one)."""
    found: dict[Path, Path] = {}
    for path in stores:
        found.setdefault(Path(path).resolve(), path)
    return list(found.values())


def stored_cards(stores: list[Path]) -> list[str]:
    """The cards (NVML names) the stores' runs measured on, in the stores' order."""
    found: dict[str, None] = {}
    for path in stores:
        with Store(path, create=False, read_only=True) as store:
            found.update(dict.fromkeys(r["gpu_name"] for r in store.runs() if r["gpu_name"]))
    return list(found)


def stored_replays(stores: list[Path]) -> Iterator[tuple[Path, dict, dict]]:
    """(store, replay, run) for every replay of the stores (`infergy replay`), as
    `stored_points` gives points, each once."""
    seen: set[str] = set()
    for path in distinct(stores):
        with Store(path, create=False, read_only=True) as store:
            runs = {r["id"]: r for r in store.runs()}
            for replay in store.replays():
                if replay["id"] not in seen:
                    seen.add(replay["id"])
                    yield path, replay, runs.get(replay["run_id"]) or {}


def load_points(stores: list[Path]):
    """Every ok point of the stores as a pandas DataFrame (columns: `POINT_COLUMNS`), one row
    a point with its GPU, software and day; energies in J, times in s, powers in W."""
    import pandas as pd

    rows = [_row(path, p, run) for path, p, run in stored_points(stores, status="ok")]
    return pd.DataFrame(rows, columns=None if rows else POINT_COLUMNS)


def _row(path: Path, p: dict, run: dict) -> dict:
    """One point's row of `load_points`, from its stored row and its run's."""
    result = json.loads(p["result"])
    provenance = result.get("provenance") or {}
    versions = provenance.get("versions") or {}
    host = provenance.get("host") or {}
    software = ", ".join(f"{k} {versions[k]}" for k in ("torch", "transformers", "vllm")
                         if versions.get(k))
    return {
        **{k: p[k] for k in ("model", "engine", "engine_options", "decoding", "batch",
                             "batch_requested", "input_tokens", "output_tokens", "energy_j",
                             "j_per_output_token", "time_s", "tp")},
        "gpu_energy_j": result.get("gpu_energy_j") or {},
        "gpu_ranks": {g["name"]: g["tp_rank"] for g in provenance.get("gpus", [])
                      if g.get("tp_rank") is not None},
        "prefill_energy_j": result.get("prefill_energy_j"),
        "decode_energy_j": result.get("decode_energy_j"),
        "tpot_s": result.get("tpot_s"),
        "acceptance": (result.get("decoding_stats") or {}).get("acceptance"),
        "engine_env": (result.get("engine_info") or {}).get("env") or {},
        "gpu": run.get("gpu_name"), "software": software or None,
        "host_cpu": ", ".join(filter(None, (
            host.get("cpu"), host.get("cpus") and f"{host['cpus']} CPUs"))) or None,
        "day": p["measured_at"][:10], "store": str(path), "run_id": p["run_id"],
        "batch_label": "max" if p["batch_requested"] == "max" else str(p["batch"]),
        "device": p["device"], "measured_at": p["measured_at"],
        "energy_cv": result.get("energy_cv"),
        "runs_per_window": result.get("runs_per_window"),
        "driver": run.get("driver"), "power_limit_w": run.get("power_limit_w"),
        "idle_w": idle_powers(run),
    }


def idle_powers(run: dict) -> list[float]:
    """The idle powers in W a run measured at its start, a GPU each (those read): a run
    keeps every sensor's (the CPU's and DRAM's too, where RAPL is readable), and a point's
    energy is its GPUs'."""
    return [w for name, w in (json.loads(run.get("idle_w") or "null") or {}).items()
            if name.startswith("gpu") and w is not None]


class Waiting(NamedTuple):
    """A power measured with a server up, its model loaded, waiting for requests."""

    engine: str  # the server's engine (vllm serves vllm-eager too)
    watts: float
    model: str  # the model loaded


def serving_idle_powers(stores: list[Path], model: str | None, engine: str,
                        gpu: str) -> list[Waiting]:
    """The powers measured with a server up, its model loaded, waiting for requests, in the
    stores' online replays of `model` (None: of any model) on card `gpu`: the idle at the
    start of a replay sent to a server that `infergy serve` had started, and the waiting
    window after the start of a server that `--serve` started (whose idle, before the start,
    is the card's bare idle). vllm and vllm-eager count for each other: the same server, with
    or without CUDA graphs."""
    family = {"vllm", "vllm-eager"} if engine in ("vllm", "vllm-eager") else {engine}
    found = []
    for _, replay, run in stored_replays(stores):
        if replay["mode"] != "online" or model not in (None, replay["model"]):
            continue
        result = json.loads(replay["result"])
        server = result.get("server") or {}
        gpus = (result.get("provenance") or {}).get("gpus") or []
        if result.get("served_by") not in family or not gpus or gpus[0].get("model") != gpu:
            continue
        waiting = (idle_powers(run) if server.get("started_by") == "infergy serve" else
                   [w for w in (server.get("waiting_w") or {}).values() if w is not None])
        found += [Waiting(result["served_by"], w, replay["model"]) for w in waiting]
    return found
