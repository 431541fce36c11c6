"""Continuous batching as vLLM V1's scheduler runs it (vllm/v1/core/sched/scheduler.py,
0.26.0), step by step over a step-cost model.

Each step has a token budget (`max_num_batched_tokens`). The running requests come first, in
the order they were admitted: a decoding one takes one token, one whose prompt is still being
computed takes what is left of it, up to the budget (chunked prefill). Their KV-cache blocks
are allocated in that order; where the cache is full the last running request is preempted
(its blocks freed, its tokens computed again later: vLLM's recompute) and goes back to the
front of the queue. Then, in a step that preempted nothing, waiting requests are admitted
first come first served while fewer than `max_num_seqs` run, budget is left and the whole
prompt fits in the free blocks. A request samples a token in the step that computes the last
of its known tokens: the first one (its TTFT) in the step its prompt completes.

Between events (an arrival, a request finishing, the cache filling) a stretch of decode-only
steps changes only by each context growing one token a step, so the stretch is summed in closed
form (infergy.estimate.steps.decode_features) instead of step by step: the cost of a run grows
with its requests, not with its tokens.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from infergy.estimate.steps import CALL, FEATURES, StepCost, decode_features


@dataclass(frozen=True)
class Continuous:
    """vLLM's scheduler limits. The KV cache holds `kv_blocks` blocks of `block_size` tokens."""

    kv_blocks: int
    max_num_batched_tokens: int = 16384  # vLLM 0.26's LLM class on a card of 70 GiB or more
    max_num_seqs: int = 1024
    block_size: int = 16
    kind: str = "continuous"

    @property
    def kv_tokens(self) -> int:
        return self.kv_blocks * self.block_size


class Clock:
    """The simulated run's totals: time busy and idle, summed step features, requests in
    flight over time (level -> seconds), each request's first-token and end times."""

    def __init__(self, requests: int, start: float = 0.0):
        self.now = start
        self.busy_s = self.idle_s = 0.0
        self.features = np.zeros(len(FEATURES))
        self.inflight_s: dict[int, float] = {}
        self.first_token = np.full(requests, np.nan)
        self.end = np.full(requests, np.nan)
        self.preemptions = 0

    def run(self, features: np.ndarray, seconds: float, inflight: int) -> None:
        self.features += features
        self.busy_s += seconds
        self.now += seconds
        self.inflight_s[inflight] = self.inflight_s.get(inflight, 0.0) + seconds

    def call(self, cost: StepCost, inflight: int) -> None:
        """An engine call's fixed overhead (an offline `generate`)."""
        self.run(CALL, cost.time(CALL), inflight)

    def wait_until(self, when: float) -> None:
        if when > self.now:
            self.idle_s += when - self.now
            self.inflight_s[0] = self.inflight_s.get(0, 0.0) + when - self.now
            self.now = when


def run_continuous(cost: StepCost, policy: Continuous, arrival_s: np.ndarray,
                   input_tokens: np.ndarray, output_tokens: np.ndarray,
                   clock: Clock | None = None, ids: np.ndarray | None = None) -> Clock:
    """Serve the requests (arriving at `arrival_s`, sorted, on the clock's time) to the end;
    each must fit the KV cache alone (input + output tokens; the caller checks). Results go
    to `clock` (a new one from the first arrival by default) at indices `ids` (default
    0..n-1)."""
    n_req = len(arrival_s)
    ids = np.arange(n_req) if ids is None else ids
    clock = clock or Clock(n_req, float(arrival_s[0]) if n_req else 0.0)
    _Scheduler(cost, policy, clock).serve(arrival_s, input_tokens, output_tokens, ids)
    return clock


class _Scheduler:
    def __init__(self, cost: StepCost, policy: Continuous, clock: Clock):
        self.cost, self.p, self.clock = cost, policy, clock
        cap = policy.max_num_seqs
        # The running requests, in admission order: ids, KV tokens computed, tokens known
        # (prompt + sampled), tokens sampled, tokens to sample in all, KV blocks held.
        self.rid = np.zeros(cap, dtype=np.int64)
        self.comp = np.zeros(cap, dtype=np.int64)
        self.known = np.zeros(cap, dtype=np.int64)
        self.gen = np.zeros(cap, dtype=np.int64)
        self.out = np.zeros(cap, dtype=np.int64)
        self.blocks = np.zeros(cap, dtype=np.int64)
        self.n = 0
        self.free = policy.kv_blocks
        self.waiting: deque[tuple[int, int, int, int]] = deque()  # (id, prompt, sampled, out)

    def serve(self, arrival_s, input_tokens, output_tokens, ids) -> None:
        nxt, total = 0, len(arrival_s)
        clock = self.clock
        while nxt < total or self.waiting or self.n:
            while nxt < total and arrival_s[nxt] <= clock.now:
                self.waiting.append((int(ids[nxt]), int(input_tokens[nxt]), 0,
                                     int(output_tokens[nxt])))
                nxt += 1
            if not self.n and not self.waiting:
                clock.wait_until(float(arrival_s[nxt]))
                continue
            coming = float(arrival_s[nxt]) if nxt < total else None
            if not self._stretch(coming):
                self._step()

    def _blocks(self, tokens):
        return -(-tokens // self.p.block_size)

    def _stretch(self, coming: float | None) -> bool:
        """Run decode-only steps up to the next event in one go; False where the next step
        is not decode-only (a prompt to compute, a request to admit, a preemption)."""
        n = self.n
        if not n or self.p.max_num_seqs < n or n > self.p.max_num_batched_tokens:
            return False
        comp, known = self.comp[:n], self.known[:n]
        if (known - comp != 1).any():
            return False
        if self.waiting and n < self.p.max_num_seqs:
            _, prompt, sampled, _ = self.waiting[0]
            after = self._blocks(comp + 1).sum() - self.blocks[:n].sum()
            if self._blocks(prompt + sampled) <= self.free - after:
                return False  # it is admitted at the next step
        k = int((self.out[:n] - self.gen[:n]).min())
        k = self._fits(k)
        if k < 1:
            return False
        context = float((comp + 1).sum())
        a, b = self.cost.per_step_s(n, context)
        if coming is not None and n < self.p.max_num_seqs:
            k = min(k, _steps_to_reach(a, b, coming - self.clock.now))
        features = decode_features(n, context, k)
        self.clock.run(features, a * k + b * k * (k - 1) / 2, n + len(self.waiting))
        self.comp[:n] += k
        self.known[:n] += k
        self.gen[:n] += k
        new = self._blocks(self.comp[:n])
        self.free -= int((new - self.blocks[:n]).sum())
        self.blocks[:n] = new
        self._finish()
        return True

    def _fits(self, k: int) -> int:
        """The most decode steps, at most `k`, before the running requests' blocks outgrow
        the cache."""
        n = self.n
        held = self.blocks[:n].sum() + self.free

        def used(j):
            return self._blocks(self.comp[:n] + j).sum()
        if used(k) <= held:
            return k
        lo, hi = 0, k  # used(lo) fits, used(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if used(mid) <= held else (lo, mid)
        return lo

    def _step(self) -> None:
        """One step exactly as the scheduler makes it."""
        p, n = self.p, self.n
        need = self.known[:n] - self.comp[:n]
        before = np.cumsum(need) - need
        take = np.clip(p.max_num_batched_tokens - before, 0, need)
        preempted = self._allocate(take)
        n = self.n
        take = take[:n]
        budget = p.max_num_batched_tokens - int(take.sum())
        while not preempted and self.waiting and n < p.max_num_seqs and budget > 0:
            rid, prompt, sampled, out = self.waiting[0]
            known = prompt + sampled
            if self._blocks(known) > self.free:
                break
            self.waiting.popleft()
            chunk = min(known, budget)
            held = int(self._blocks(chunk))
            self.rid[n], self.comp[n], self.known[n] = rid, 0, known
            self.gen[n], self.out[n], self.blocks[n] = sampled, out, held
            self.free -= held
            take = np.append(take, chunk)
            budget -= chunk
            n = self.n = n + 1
        if not take.any():
            return  # everything was preempted: the next step admits again
        comp, gen = self.comp[:n], self.gen[:n]
        prefill = (self.known[:n] - comp > 1) | (gen == 0)
        tp = np.where(prefill, take, 0)
        decoding = ~prefill & (take > 0)
        features = np.array([1.0, float(tp.sum()), float((tp * (comp + tp / 2)).sum()),
                             float(decoding.sum()), float((comp + 1)[decoding].sum()), 0.0])
        self.clock.run(features, self.cost.time(features), n + len(self.waiting))
        comp += take
        caught = (comp == self.known[:n]) & (take > 0)
        first = caught & (gen == 0)
        self.clock.first_token[self.rid[:n][first]] = self.clock.now
        gen += caught
        self.known[:n] += caught
        self._finish()

    def _allocate(self, take: np.ndarray) -> bool:
        """The running requests' blocks for this step's tokens, in order; where the cache
        is full, the last running request is preempted until the request fits (or is the one
        preempted). True where one was."""
        n = self.n
        want = self._blocks(self.comp[:n] + take) - self.blocks[:n]
        if int(want.sum()) <= self.free:
            self.free -= int(want.sum())
            self.blocks[:n] += want
            return False
        i = 0
        while i < self.n:
            nb = int(self._blocks(self.comp[i] + take[i]) - self.blocks[i])
            while nb > self.free and self.n > i:
                self._preempt(self.n - 1)
            if i >= self.n:
                break
            self.free -= nb
            self.blocks[i] += nb
            i += 1
        return True

    def _preempt(self, i: int) -> None:
        """Back to the front of the queue, its blocks freed, its tokens to compute again."""
        self.waiting.appendleft((int(self.rid[i]), int(self.known[i] - self.gen[i]),
                                 int(self.gen[i]), int(self.out[i])))
        self.free += int(self.blocks[i])
        self.n -= 1
        self.clock.preemptions += 1

    def _finish(self) -> None:
        n = self.n
        done = self.gen[:n] >= self.out[:n]
        if not done.any():
            return
        self.clock.end[self.rid[:n][done]] = self.clock.now
        self.free += int(self.blocks[:n][done].sum())
        keep = ~done
        m = int(keep.sum())
        for a in (self.rid, self.comp, self.known, self.gen, self.out, self.blocks):
            a[:m] = a[:n][keep]
        self.n = m


def _steps_to_reach(a: float, b: float, gap: float) -> int:
    """The fewest steps (at least 1) whose times a + b x j (j from 0) sum to `gap` or more."""
    if gap <= 0:
        return 1
    if b <= 0:
        return max(1, math.ceil(gap / a)) if a > 0 else 1
    c = a - b / 2  # the sum of k steps is c k + b k^2 / 2
    return max(1, math.ceil((-c + math.sqrt(c * c + 2 * b * gap)) / b))
