"""Decoding strategies, as plain data an engine turns into its own settings.

Written on the command line as `greedy`, `sample`, `sample:temperature=0.7,top_p=0.9` or
`beam:4` (beam search with 4 beams). Speculative decoding will be a further `strategy`;
engines say which strategies they support.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("greedy", "sample", "beam")


class DecodingError(ValueError):
    """A decoding specification that cannot be understood; the message says why."""


@dataclass(frozen=True)
class Decoding:
    """How tokens are chosen. `temperature` and `top_p` apply to sampling only, `beams` to
    beam search only."""

    strategy: str = "greedy"
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    beams: int = 1

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
        if self.strategy == "beam" and not (isinstance(self.beams, int) and self.beams >= 2):
            raise DecodingError(f"beam search needs at least 2 beams, got {self.beams!r} "
                                f"(1 beam is greedy)")
        if self.strategy != "beam" and self.beams != 1:
            raise DecodingError(f"beams apply to beam search only, not {self.strategy}")

    @property
    def sampling(self) -> bool:
        return self.strategy == "sample"

    def label(self) -> str:
        """The canonical text form, which `parse` reads back."""
        if self.strategy == "beam":
            return f"beam:{self.beams}"
        if not self.sampling:
            return self.strategy
        return f"sample:temperature={self.temperature:g},top_p={self.top_p:g}"

    @classmethod
    def parse(cls, text: str) -> Decoding:
        """`greedy`, `sample`, `sample:temperature=0.7,top_p=0.9` or `beam:4`."""
        strategy, _, params = text.strip().partition(":")
        if strategy not in STRATEGIES:
            raise DecodingError(
                f"unknown decoding strategy {strategy!r} in {text!r}; expected one of "
                f"{', '.join(STRATEGIES)} (speculative decoding: not yet)"
            )
        if strategy == "beam":
            try:
                beams = int(params)
            except ValueError:
                raise DecodingError(f"beam search is written beam:N (N beams), got "
                                    f"{text!r}") from None
            return cls(strategy="beam", beams=beams)
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
