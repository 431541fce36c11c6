"""Decoding strategies, as plain data an engine turns into its own settings.

Written on the command line as `greedy`, `sample` or `sample:temperature=0.7,top_p=0.9`.
Beam search and speculative decoding will be further `strategy` values with their own
parameters (`beam:4`, `speculative`); engines say which strategies they support.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("greedy", "sample")


class DecodingError(ValueError):
    """A decoding specification that cannot be understood; the message says why."""


@dataclass(frozen=True)
class Decoding:
    """How tokens are chosen. `temperature` and `top_p` apply to sampling only."""

    strategy: str = "greedy"
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise DecodingError(
                f"unknown decoding strategy {self.strategy!r}; expected one of "
                f"{', '.join(STRATEGIES)}"
            )
        if not self.temperature > 0:
            raise DecodingError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DecodingError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def sampling(self) -> bool:
        return self.strategy == "sample"

    def label(self) -> str:
        """The canonical text form, which `parse` reads back."""
        if not self.sampling:
            return self.strategy
        return f"sample:temperature={self.temperature:g},top_p={self.top_p:g}"

    @classmethod
    def parse(cls, text: str) -> Decoding:
        """`greedy`, `sample`, or `sample:temperature=0.7,top_p=0.9`."""
        strategy, _, params = text.strip().partition(":")
        if strategy not in STRATEGIES:
            raise DecodingError(
                f"unknown decoding strategy {strategy!r} in {text!r}; expected one of "
                f"{', '.join(STRATEGIES)} (beam search and speculative decoding: not yet)"
            )
        kwargs: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in params.split(","))):
            key, eq, value = item.partition("=")
            key = {"t": "temperature", "p": "top_p"}.get(key.strip(), key.strip())
            if not eq or key not in ("temperature", "top_p"):
                raise DecodingError(
                    f"cannot read {item!r} in decoding {text!r}: expected temperature=X or top_p=X"
                )
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise DecodingError(f"{key} must be a number in {text!r}, got {value!r}") from None
        if kwargs and strategy != "sample":
            raise DecodingError(f"{strategy!r} takes no parameters (got {text!r})")
        return cls(strategy=strategy, **kwargs)
