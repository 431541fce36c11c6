"""Count the ops of each catalog model's decode step in transformers' code, on a CPU, and write
the table `infergy.models.ops` ships (src/infergy/models/ops.json). Run it again when the
installed transformers changes; tests/test_ops.py says when the table and transformers differ.

    PYTHONPATH=src python3 benchmarks/count_ops.py [--write]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import transformers

from infergy.models import get_model, model_names
from infergy.models.ops import TABLE, count_step_ops

OUT = Path(__file__).resolve().parents[1] / "src/infergy/models" / TABLE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {OUT}")
    args = parser.parse_args()
    models = {}
    for name in model_names():
        t0 = time.perf_counter()
        models[name] = list(count_step_ops(get_model(name).config))
        print(f"{name:32} {models[name][0]:4} a layer, {models[name][1]:4} outside "
              f"({time.perf_counter() - t0:.1f} s)")
    table = {"transformers": transformers.__version__, "torch": torch.__version__,
             "how": "a decode step of one token, dynamic cache, bf16, sdpa, on a CPU: aten ops "
                    "but views and no-op casts (infergy.models.ops)",
             "models": models}
    if args.write:
        rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(ops)}"
                           for name, ops in models.items())
        head = json.dumps({k: v for k, v in table.items() if k != "models"}, indent=1)[:-2]
        OUT.write_text(f'{head},\n "models": {{\n{rows}\n }}\n}}\n', encoding="utf-8")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
