"""A sweep's plan cut into point groups, the pieces its workers measure apart.

A group holds points of one engine start (a model, an engine with its options, and what the
engine is started for: vLLM starts once for each speculation or beam search), so that every
start measures many points. Where the plan has fewer starts than the workers that can run at
once, the largest are split, each into pieces of about the plan's size over the workers,
interleaved (every k-th point), so that neighbouring points, of similar cost, go to different
workers. The largest groups come first: they start first.

A group is named for its points (`g003-1a2b3c4d`): the same points make the same name in
every run, which names its own store and log in the sweep's parts folder.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from infergy.engines import engine_class
from infergy.engines.decoding import Decoding
from infergy.plan.spec import Task


@dataclass(frozen=True)
class PointGroup:
    name: str
    indices: tuple[int, ...]  # the plan's points (`SweepSpec.tasks()`) it measures, in order


def engine_start(task: Task) -> tuple:
    """What one start of an engine serves: its model, engine and options, and the start key
    of the task's decoding (as `plan.spec.engine_starts` counts them)."""
    return (task.group, engine_class(task.engine.name).start_key(Decoding.parse(task.decoding)))


def point_groups(tasks: list[Task], todo: list[int], slots: int) -> list[PointGroup]:
    """The points `todo` (indices into `tasks`) in groups for `slots` workers at once."""
    starts: dict[tuple, list[int]] = {}
    for i in todo:
        starts.setdefault(engine_start(tasks[i]), []).append(i)
    size = max(1, math.ceil(len(todo) / max(1, slots)))
    pieces = []
    for members in starts.values():
        parts = math.ceil(len(members) / size)
        pieces += [members[k::parts] for k in range(parts)]
    pieces.sort(key=len, reverse=True)
    return [PointGroup(group_name(n, [tasks[i] for i in piece]), tuple(piece))
            for n, piece in enumerate(pieces)]


def group_name(number: int, tasks: list[Task]) -> str:
    digest = hashlib.sha1("\n".join(t.describe() for t in tasks).encode()).hexdigest()[:8]
    return f"g{number:03d}-{digest}"
