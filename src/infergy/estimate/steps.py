"""The step-cost model: the time and GPU energy of one engine step from what the step holds.

An engine runs a workload as a sequence of steps (one forward over the model each). What a step
holds is seven numbers, its features:

- `steps`: 1 (a per-step cost: kernel launches, the host's work, reading the weights once);
- `prefill_tokens`: prompt tokens computed in the step (a chunk of a prompt counts its tokens);
- `prefill_pairs`: query-key pairs of their causal attention, a chunk of c tokens after s
  already computed counting c x (s + c / 2): summed over a prompt's chunks it is I^2 / 2;
- `decode_seqs`: sequences generating one token in the step;
- `context_tokens`: the KV-cache tokens those sequences read (their context);
- `calls`: 1 for the step that starts a call of the engine offline (`generate` of a batch):
  its fixed overhead, 18 ms for one token on vLLM against a 6.5 ms decode step (H100); a
  server's steps have none;
- `expert_reads`: for a mixture of experts, the share of its experts' weights the step reads:
  its t tokens (prompt chunks and decoding sequences together) hit E x (1 - (1 - k/E)^t) of
  each layer's E experts (k a token, routed independently: infergy.models.flops), 1/8 of them
  for one token of olmoe-1b-7b and nearly all for 32; 0 for a dense model, whose `steps`
  reads all its weights.

Time and energy above the card's idle power are each linear in the features (coefficients
fitted from measured windows by infergy.estimate.fit), so the cost of many steps is the
coefficients times the sum of their features: a window of a measured point, a decode stretch
of k identical steps, or a whole simulated run. Energy = energy above idle + idle power x time:
the card draws its idle power whenever it is on, busy or not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from infergy.models.flops import expected_experts_touched
from infergy.models.shape import shape

FEATURES = ("steps", "prefill_tokens", "prefill_pairs", "decode_seqs", "context_tokens",
            "calls", "expert_reads")
CALL = np.array([0.0, 0, 0, 0, 0, 1, 0])  # the features of one engine call's overhead
DENSE = (0, 0)  # the (experts, experts a token) of a dense model


def routing(spec) -> dict:
    """What a batching policy holds of a model's experts: {"experts": [E, k]} for a mixture of
    experts (its experts a layer, a token's), {} for a dense model."""
    s = shape(spec)
    return {"experts": [s.experts, s.experts_per_token]} if s.is_moe else {}


def expert_share(experts: tuple[int, int], tokens: float) -> float:
    """The share of a mixture of experts' expert weights one step over `tokens` tokens reads
    (`experts`: its experts a layer and a token's; DENSE: 0)."""
    total, per_token = experts
    if not total or tokens <= 0:
        return 0.0
    return expected_experts_touched(total, per_token, int(tokens)) / total


def prefill_features(chunk: float, done: float, sequences: float = 1) -> np.ndarray:
    """The features of `sequences` prompt chunks of `chunk` tokens each after `done` tokens
    already computed, in one step (steps = 0 and expert_reads = 0: the caller counts the step
    and the experts its tokens read)."""
    return np.array([0.0, sequences * chunk, sequences * chunk * (done + chunk / 2), 0.0, 0.0,
                     0.0, 0.0])


def decode_features(sequences: float, context: float, steps: int = 1,
                    share: float = 0.0) -> np.ndarray:
    """The summed features of `steps` decode steps of `sequences` sequences whose contexts sum
    to `context` tokens at the first step and grow by one token each a step; each step reads
    `share` of a mixture of experts' expert weights (`expert_share`)."""
    return np.array([float(steps), 0.0, 0.0, float(sequences * steps),
                     steps * context + sequences * steps * (steps - 1) / 2, 0.0, steps * share])


def static_batch_features(batch: int, longest: int, output: int,
                          experts: tuple[int, int] = DENSE) -> tuple[np.ndarray, np.ndarray]:
    """The features of a static batch (transformers' `generate`): its prefill step, every
    prompt padded to the `longest`, and its decode steps, every sequence run to `output`
    tokens. The prefill carries the call's overhead."""
    prefill = prefill_features(longest, 0, batch) + CALL
    prefill[0] = 1
    prefill[-1] = expert_share(experts, batch * longest)
    return prefill, decode_features(batch, batch * (longest + 1), output - 1,
                                    expert_share(experts, batch))


# What the waiting power changes, as measured (docs/measurements.md, 2026-12-05 evening): said
# wherever the bare idle stands in for it.
WAITING_SEEN = "a waiting vLLM server drew 46 W more than the bare idle on an H100"


@dataclass
class StepCost:
    """A fitted step-cost model of one model x engine x GPU (x TP x software): seconds and
    joules above idle per unit of each of FEATURES, the card's idle power, the batching policy
    the engine ran with, and how well the model fitted and predicted measured points."""

    model: str
    engine: str
    gpu: str  # the card's name as measured (NVML)
    time_s: list[float]  # s per unit of each feature
    active_j: list[float]  # J above idle per unit of each feature
    idle_w: float  # the card's idle power, measured at the runs' starts
    batching: dict  # the engine's policy as measured (infergy.estimate.simulate.policy_of)
    busy_w: float = 0.0  # W above idle while a step runs, beside the work's own energy
    tp: int = 1
    software: dict = field(default_factory=dict)  # torch, transformers, vllm: as measured
    fit: dict = field(default_factory=dict)  # points used, residuals (infergy.estimate.fit)
    sources: list[str] = field(default_factory=list)  # the stores it was fitted from
    # What set its points' B = max (infergy.estimate.filled): the sweep's cap, and a static
    # engine's free memory after loading, in bytes.
    limits: dict = field(default_factory=dict)
    # The card's power with the engine's server up and waiting for requests (its model loaded:
    # vLLM's drew 118-120 W on an H100 whose bare idle was 72 W), measured in online replays
    # to it (infergy.profile.points.serving_idle_powers); None where never measured.
    serving_idle_w: float | None = None
    serving_idle_from: str = ""  # in words: the runs that measured it

    def __post_init__(self):
        # A model of the six features before expert_reads reads no expert weights.
        pad = [0.0] * (len(FEATURES) - len(self.time_s))
        self.time_s, self.active_j = list(self.time_s) + pad, list(self.active_j) + pad
        self._t = np.asarray(self.time_s, dtype=float)
        self._e = np.asarray(self.active_j, dtype=float)

    @property
    def experts(self) -> tuple[int, int]:
        """The model's (experts a layer, experts a token), as its batching policy holds them;
        DENSE for a dense model."""
        total, per_token = self.batching.get("experts") or DENSE
        return int(total), int(per_token)

    @property
    def waiting_w(self) -> float:
        """The power of the card while no step runs (the engine loaded, no request in
        flight): as measured with the server up where it was, else the card's bare idle."""
        return self.idle_w if self.serving_idle_w is None else self.serving_idle_w

    def waiting_words(self) -> str:
        """What the time with no request in flight is charged at, in words."""
        if self.serving_idle_w is None:
            return (f"{self.idle_w:.0f} W, the card's bare idle (its power with {self.engine} "
                    f"loaded and waiting is not measured)")
        return (f"{self.serving_idle_w:.0f} W, the card waiting with the server up (measured "
                f"in {self.serving_idle_from}; bare idle {self.idle_w:.0f} W)")

    def time(self, features: np.ndarray) -> float:
        """Seconds of steps whose features sum to `features`."""
        return float(self._t @ features)

    def active_energy(self, features: np.ndarray, seconds: float) -> float:
        """Joules above idle of steps whose features sum to `features` and that take
        `seconds`."""
        return float(self._e @ features) + self.busy_w * seconds

    def per_step_s(self, decode_seqs: float, context: float,
                   share: float = 0.0) -> tuple[float, float]:
        """A decode step's time as a + b x j at the j-th step (from 0) of a stretch whose
        contexts sum to `context` at its first step, reading `share` of the expert weights:
        (a, b) in s."""
        t = self._t
        return (float(t[0] + t[3] * decode_seqs + t[4] * context + t[6] * share),
                float(t[4] * decode_seqs))

    def to_dict(self) -> dict:
        """JSON-ready data, what `from_dict` reads back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StepCost:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
