"""Decoding strategies, as plain data an engine turns into its own settings.

Written on the command line as `greedy`, `sample`, `sample:temperature=0.7,top_p=0.9`,
`beam:4` (beam search with 4 beams) or `speculative:draft=llama-3.2-1b,lookahead=4` (greedy
speculative decoding: a draft model proposes `lookahead` tokens, the target verifies them in
one pass), optionally with `acceptance=0.7`: each proposed token is accepted with that
probability instead of by comparison, a measurement device for random weights (whose drafts
agree with their targets almost never; docs/methodology.md). Engines say which strategies
they support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STRATEGIES = ("greedy", "sample", "beam", "speculative")


class DecodingError(ValueError):
    """A decoding specification that cannot be understood; the message says why."""


@dataclass(frozen=True)
class Decoding:
    """How tokens are chosen. `temperature` and `top_p` apply to sampling only, `beams` to
    beam search only, `draft`, `lookahead` and `acceptance` to speculative decoding only
    (`acceptance` None: the draft's tokens are compared with the target's, as in use)."""

    strategy: str = "greedy"
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    beams: int = 1
    draft: str | None = None
    lookahead: int = 4
    acceptance: float | None = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise DecodingError(
                f"unknown decoding strategy {self.strategy!r}; expected one of "
                f"{', '.join(STRATEGIES)}"
            )
        if not 0 < self.temperature < math.inf:  # inf: every logit 0, NaN probabilities
            raise DecodingError(f"temperature must be a finite number > 0, got "
                                f"{self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DecodingError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.strategy == "beam" and not (isinstance(self.beams, int) and self.beams >= 2):
            raise DecodingError(f"beam search needs at least 2 beams, got {self.beams!r} "
                                f"(1 beam is greedy)")
        if self.strategy != "beam" and self.beams != 1:
            raise DecodingError(f"beams apply to beam search only, not {self.strategy}")
        if self.strategy == "speculative":
            if not self.draft:
                raise DecodingError("speculative decoding needs a draft model (draft=NAME)")
            if not (isinstance(self.lookahead, int) and self.lookahead >= 1):
                raise DecodingError(f"lookahead must be a whole number of at least 1, got "
                                    f"{self.lookahead!r}")
            if self.acceptance is not None and not 0 <= self.acceptance <= 1:
                raise DecodingError(f"acceptance must be in [0, 1], got {self.acceptance}")
        elif (self.draft, self.lookahead, self.acceptance) != (None, 4, None):
            raise DecodingError(f"draft, lookahead and acceptance apply to speculative "
                                f"decoding only, not {self.strategy}")

    @property
    def sampling(self) -> bool:
        return self.strategy == "sample"

    def label(self) -> str:
        """The canonical text form, which `parse` reads back."""
        if self.strategy == "beam":
            return f"beam:{self.beams}"
        if self.strategy == "speculative":
            controlled = "" if self.acceptance is None else f",acceptance={self.acceptance:g}"
            return f"speculative:draft={self.draft},lookahead={self.lookahead}{controlled}"
        if not self.sampling:
            return self.strategy
        return f"sample:temperature={self.temperature:g},top_p={self.top_p:g}"

    @classmethod
    def parse(cls, text: str) -> Decoding:
        """`greedy`, `sample`, `sample:temperature=0.7,top_p=0.9`, `beam:4` or
        `speculative:draft=NAME,lookahead=4[,acceptance=0.7]`."""
        strategy, _, params = text.strip().partition(":")
        if strategy not in STRATEGIES:
            raise DecodingError(
                f"unknown decoding strategy {strategy!r} in {text!r}; expected one of "
                f"{', '.join(STRATEGIES)}"
            )
        if strategy == "speculative":
            return cls._speculative(text, params)
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

    @classmethod
    def _speculative(cls, text: str, params: str) -> Decoding:
        kwargs: dict = {}
        for item in filter(None, (p.strip() for p in params.split(","))):
            key, eq, value = (part.strip() for part in item.partition("="))
            if not eq or key not in ("draft", "lookahead", "acceptance") or not value:
                raise DecodingError(f"cannot read {item!r} in decoding {text!r}: expected "
                                    f"draft=NAME, lookahead=N or acceptance=X")
            try:
                kwargs[key] = {"draft": str, "lookahead": int, "acceptance": float}[key](value)
            except ValueError:
                kind = "a whole number" if key == "lookahead" else "a number"
                raise DecodingError(f"{key} must be {kind} in {text!r}, got {value!r}") from None
        return cls(strategy="speculative", **kwargs)


SPECULATIVE_COUNTS = ("rounds", "sequence_rounds", "proposed", "accepted", "rejected")


def speculative_rates(counts: dict) -> dict:
    """Speculative decoding's counts (rounds, sequence_rounds, proposed, accepted, rejected)
    with its rates: `acceptance`, per token: the proposals accepted over those compared (a
    round compares up to the first rejection), the rate that `acceptance=` sets;
    `accepted_share`: accepted over proposed (vLLM's "draft acceptance rate"); and
    `tokens_per_round`: tokens a sequence gained per target pass."""
    accepted, rejected = counts["accepted"], counts["rejected"]
    compared, rounds = accepted + rejected, counts["sequence_rounds"]
    return {**counts,
            "acceptance": accepted / compared if compared else None,
            "accepted_share": accepted / counts["proposed"] if counts["proposed"] else None,
            "tokens_per_round": (accepted + rounds) / rounds if rounds else None}
