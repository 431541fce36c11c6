"""The tables of docs/measurements.md for a profile store (issue 7), in Markdown.

    python3 benchmarks/profile_tables.py src/infergy/profile/shipped/llama-3.1-8b-h100.db \
        [--spot spot-check.db ...] [--grid hf-compiled:max ...]

Prints what is measured of the profile spec (per engine and batch), the repeatability (CV
of energy over the repeats, points whose windows last at least 2 s, against the issue's
5%), J per output token over the bins for each --grid ENGINE:BATCH, and for each --spot
store its points against the profile's same engine, batch size and lengths (the issue's
10%).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infergy.plan import load_spec
from infergy.profile import load_points
from infergy.report.tables import REPEATABILITY_COLUMNS, repeatability_rows
from infergy.store import Store

SPEC = Path(__file__).parent / "sweeps" / "profile-llama-3.1-8b.yaml"


def ok_points(path: Path) -> list[dict]:
    with Store(path, create=False) as store:
        return store.points(status="ok")


def progress(points: list[dict]) -> str:
    spec = load_spec(SPEC)
    wanted: dict[tuple[str, str], int] = {}
    for task in spec.tasks():
        key = (task.engine.name, str(task.batch))
        wanted[key] = wanted.get(key, 0) + 1
    have = {(p["engine"], p["batch_requested"], p["input_tokens"], p["output_tokens"])
            for p in points}
    lines = ["| engine | " + " | ".join(f"B = {b}" for b in spec.batch_sizes) + " |",
             "|---|" + "---|" * len(spec.batch_sizes)]
    for engine in spec.engines:
        cells = [f"{sum(k[:2] == (engine.name, str(b)) for k in have)} / "
                 f"{wanted[(engine.name, str(b))]}" for b in spec.batch_sizes]
        lines.append(f"| {engine.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{len(have)} of {sum(wanted.values())} points."


def repeatability(store: Path) -> str:
    lines = ["| " + " | ".join(REPEATABILITY_COLUMNS) + " |",
             "|---" * len(REPEATABILITY_COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in repeatability_rows(load_points([store]))]
    return "\n".join(lines)


def grid(points: list[dict], engine: str, batch: str) -> str:
    rows = {(p["input_tokens"], p["output_tokens"]): p for p in points
            if p["engine"] == engine and p["batch_requested"] == batch}
    inputs = sorted({i for i, _ in rows})
    outputs = sorted({o for _, o in rows})
    lines = [f"J per output token, {engine} at B = {batch}"
             + (" (the batch found in brackets)" if batch == "max" else "") + ":", "",
             "| I \\ O | " + " | ".join(map(str, outputs)) + " |",
             "|---|" + "---|" * len(outputs)]
    for i in inputs:
        cells = []
        for o in outputs:
            p = rows.get((i, o))
            cells.append("" if p is None else f"{p['j_per_output_token']:.3g}"
                         + (f" ({p['batch']})" if batch == "max" else ""))
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spot(points: list[dict], spot_points: list[dict]) -> str:
    profile: dict[tuple, list[dict]] = {}
    for p in points:
        profile.setdefault(_key(p), []).append(p)
    lines = ["| card | engine | B | I/O | time s | J/token | profile J/token | diff | CV |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(spot_points, key=lambda p: (_key(p), p["device"])):
        ref = profile.get(_key(p))
        ref_j = ref[0]["j_per_output_token"] if ref else None
        diff = f"{p['j_per_output_token'] / ref_j - 1:+.1%}" if ref_j else "not in profile"
        lines.append(f"| {p['device'][:12]}… | {p['engine']} | {p['batch']} | "
                     f"{p['input_tokens']}/{p['output_tokens']} | {p['time_s']:.2f} | "
                     f"{p['j_per_output_token']:.4g} | "
                     f"{'' if ref_j is None else f'{ref_j:.4g}'} | {diff} | "
                     f"{_cv_text(_result(p).get('energy_cv'))} |")
    return "\n".join(lines)


def _cv_text(cv: float | None) -> str:
    return "n/a" if cv is None else f"{cv:.1%}"


def _key(p: dict) -> tuple:
    return (p["engine"], p["batch"], p["input_tokens"], p["output_tokens"], p["decoding"])


def _result(p: dict) -> dict:
    return json.loads(p["result"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--spot", type=Path, action="append", default=[])
    parser.add_argument("--grid", action="append", default=[], metavar="ENGINE:BATCH")
    args = parser.parse_args()
    points = ok_points(args.store)
    print(progress(points), "", repeatability(args.store), sep="\n")
    for item in args.grid:
        engine, _, batch = item.partition(":")
        print("", grid(points, engine, batch or "max"), sep="\n")
    for path in args.spot:
        print("", f"Spot check: {path}", "", spot(points, ok_points(path)), sep="\n")


if __name__ == "__main__":
    main()
