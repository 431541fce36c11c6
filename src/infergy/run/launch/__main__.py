"""The local launcher's worker: `python -m infergy.run.launch JOB`, JOB a pickled GroupJob
(launchers.LocalLauncher writes it); the group's result is written beside it, as
JOB.result.json, whole or not at all."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

from infergy.run.launch.group import run_group
from infergy.run.sweep.ranks import exit_with_parent


def main(argv: list[str]) -> int:
    """The local launcher's entry: run the pickled job at argv[0], write its result beside."""
    exit_with_parent()  # the driver gone (killed): the point in flight is given up
    path = Path(argv[0])
    with path.open("rb") as f:
        job = pickle.load(f)
    result = run_group(job)
    partial = path.with_name(path.name + ".result.part")
    partial.write_text(json.dumps(result, default=str))
    partial.replace(path.with_name(path.name + ".result.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
