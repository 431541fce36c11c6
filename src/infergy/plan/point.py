"""A point: what is measured, B prompts of I tokens each generating exactly O tokens on a
model, an engine and a decoding, checked against its model before any work."""

from __future__ import annotations

from dataclasses import dataclass

from infergy.engines.decoding import Decoding
from infergy.models.catalog import ModelSpec
from infergy.plan.fields import MAX_BATCH


class PointError(ValueError):
    """A point that cannot be measured as asked; raised before any GPU work."""


@dataclass(frozen=True)
class Point:
    """What is measured: B prompts of I tokens, each generating exactly O tokens."""

    model: str
    engine: str
    batch: int
    input_tokens: int
    output_tokens: int
    decoding: str = "greedy"
    tp: int = 1
    dtype: str = "bfloat16"


def validate_point(point: Point, spec: ModelSpec) -> Decoding:
    """Check a point against its model before any work; returns its Decoding."""
    for name in ("batch", "input_tokens", "output_tokens"):
        value = getattr(point, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PointError(f"{name} must be a positive integer, got {value!r}")
    if point.batch > MAX_BATCH:
        raise PointError(f"batch must be at most {MAX_BATCH:,} prompts, got {point.batch:,}")
    total = point.input_tokens + point.output_tokens
    if total > spec.max_context:
        raise PointError(
            f"input {point.input_tokens} + output {point.output_tokens} = {total} tokens is "
            f"beyond {spec.name}'s context of {spec.max_context} tokens"
        )
    return Decoding.parse(point.decoding)
