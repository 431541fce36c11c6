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

from infergy.estimate.steps import CALL, FEATURES, StepCost, decode_features, expert_share


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


# The running requests' columns: id, KV tokens computed, tokens known but not yet computed
# (1 for a decoding request: the token it sampled last), tokens still to sample, tokens to
# sample in all, KV blocks held.
RID, COMP, NEED, REM, OUT, BLOCKS = range(6)


class _Scheduler:
    def __init__(self, cost: StepCost, policy: Continuous, clock: Clock):
        self.cost, self.p, self.clock = cost, policy, clock
        self.experts = cost.experts
        self.s = np.zeros((policy.max_num_seqs, 6), dtype=np.int64)  # in admission order
        self.n = 0
        self.free = policy.kv_blocks
        self.pending = False  # a running request has a prompt (part) to compute
        self.waiting: deque[tuple[int, int, int, int]] = deque()  # (id, prompt, sampled, out)

    def serve(self, arrival_s, input_tokens, output_tokens, ids) -> None:
        nxt, total = 0, len(arrival_s)
        clock = self.clock
        arrival = arrival_s.tolist()
        while nxt < total or self.waiting or self.n:
            while nxt < total and arrival[nxt] <= clock.now:
                self.waiting.append((int(ids[nxt]), int(input_tokens[nxt]), 0,
                                     int(output_tokens[nxt])))
                nxt += 1
            if not self.n and not self.waiting:
                clock.wait_until(arrival[nxt])
                continue
            if not self._stretch(arrival[nxt] if nxt < total else None) and not self._admit():
                self._step()

    def _blocks(self, tokens):
        return -(-tokens // self.p.block_size)

    def _stretch(self, coming: float | None) -> bool:
        """Run decode-only steps up to the next event in one go; False where the next step
        is not decode-only (a prompt to compute, a request to admit, a preemption)."""
        n, p = self.n, self.p
        if not n or self.pending or n > p.max_num_batched_tokens:
            return False
        bs, s = p.block_size, self.s[:n]
        comp = s[:, COMP]
        if self.waiting and n < p.max_num_seqs:
            _, prompt, sampled, _ = self.waiting[0]
            after = int((-(-(comp + 1) // bs)).sum()) - (p.kv_blocks - self.free)
            if -(-(prompt + sampled) // bs) <= self.free - after:
                return False  # it is admitted at the next step
        rem = s[:, REM]
        last = k = int(rem.min())
        if n * -(-k // bs) > self.free:  # else the blocks of k more tokens surely fit
            k = self._fits(k)
            if k < 1:
                return False
        context = float(comp.sum() + n)
        share = expert_share(self.experts, n)
        a, b = self.cost.per_step_s(n, context, share)
        if coming is not None and n < p.max_num_seqs:
            k = min(k, _steps_to_reach(a, b, coming - self.clock.now))
        self.clock.run(decode_features(n, context, k, share), a * k + b * k * (k - 1) / 2,
                       n + len(self.waiting))
        comp += k
        rem -= k
        blocks = -(-comp // bs)
        s[:, BLOCKS] = blocks
        self.free = p.kv_blocks - int(blocks.sum())
        if k == last:
            self._finish()
        return True

    def _admit(self) -> bool:
        """The usual step with something to admit, in fewer operations than `_step`: every
        running request decoding, their blocks free, waiting requests admitted. False where
        the step is not that one (a prompt part to compute, a preemption to make)."""
        n, p = self.n, self.p
        if self.pending or n >= p.max_num_seqs or n >= p.max_num_batched_tokens:
            return False
        s = self.s[:n]
        held = p.kv_blocks - self.free
        grown = self._blocks(s[:, COMP] + 1)
        free = self.free - (int(grown.sum()) - held)
        if free < 0:
            return False
        s[:, BLOCKS] = grown
        self.free = free
        budget = p.max_num_batched_tokens - n
        context = float(s[:, COMP].sum() + n)
        tokens = pairs = 0.0
        first = []
        m = n
        while m < p.max_num_seqs and (head := self._admitted(budget)):
            rid, known, sampled, out, chunk, blocks = head
            tokens += chunk
            pairs += chunk * chunk / 2
            budget -= chunk
            if chunk == known:  # the whole prompt: a token sampled at the end of the step
                self.s[m] = (rid, chunk, 1, out - sampled - 1, out, blocks)
                if not sampled:
                    first.append(rid)
            else:
                self.s[m] = (rid, chunk, known - chunk, out - sampled, out, blocks)
                self.pending = True
            m += 1
        features = np.array([1.0, tokens, pairs, n, context, 0.0,
                             expert_share(self.experts, n + tokens)])
        self.clock.run(features, self.cost.time(features), m + len(self.waiting))
        s[:, COMP] += 1
        s[:, REM] -= 1
        self.n = m
        if first:
            self.clock.first_token[first] = self.clock.now
        self._finish()
        return True

    def _admitted(self, budget: int) -> tuple[int, int, int, int, int, int] | None:
        """The first waiting request, taken from the queue with the blocks of its first chunk
        where budget is left and its whole prompt fits the free blocks: (id, tokens known,
        tokens sampled, tokens to sample in all, chunk, blocks); None otherwise."""
        if not self.waiting or budget <= 0:
            return None
        rid, prompt, sampled, out = self.waiting[0]
        known = prompt + sampled
        if self._blocks(known) > self.free:
            return None
        self.waiting.popleft()
        chunk = min(known, budget)
        blocks = int(self._blocks(chunk))
        self.free -= blocks
        return rid, known, sampled, out, chunk, blocks

    def _fits(self, k: int) -> int:
        """The most decode steps, at most `k`, before the running requests' blocks outgrow
        the cache."""
        comp, held = self.s[:self.n, COMP], self.p.kv_blocks

        def used(j):
            return self._blocks(comp + j).sum()
        if used(k) <= held:
            return k
        lo, hi = 0, k  # used(lo) fits, used(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if used(mid) <= held else (lo, mid)
        return lo

    def _step(self) -> None:
        """One step exactly as the scheduler makes it."""
        p = self.p
        need = self.s[:self.n, NEED]
        # np.minimum / np.maximum rather than np.clip: a tenth of its overhead on a few rows.
        take = np.minimum(np.maximum(p.max_num_batched_tokens - (np.cumsum(need) - need), 0),
                          need)
        preempted = self._allocate(take)
        n = self.n
        take = take[:n]
        budget = p.max_num_batched_tokens - int(take.sum())
        chunks = []
        while not preempted and n < p.max_num_seqs and (head := self._admitted(budget)):
            rid, known, sampled, out, chunk, held = head
            self.s[n] = (rid, 0, known, out - sampled, out, held)
            chunks.append(chunk)
            budget -= chunk
            n = self.n = n + 1
        if budget == p.max_num_batched_tokens:
            return  # everything was preempted: the next step admits again
        if chunks:
            take = np.concatenate((take, chunks))
        s = self.s[:n]
        comp, need = s[:, COMP], s[:, NEED]
        fresh = s[:, REM] == s[:, OUT]  # nothing sampled yet
        prefill = (need > 1) | fresh
        tp = take * prefill
        decoding = (take > 0) & ~prefill
        decodes = int(np.count_nonzero(decoding))
        features = np.array([1.0, float(tp.sum()), float(tp @ comp) + float(tp @ tp) / 2,
                             decodes, float(comp @ decoding) + decodes, 0.0,
                             expert_share(self.experts, int(take.sum()))])
        self.clock.run(features, self.cost.time(features), n + len(self.waiting))
        comp += take
        need -= take
        caught = (need == 0) & (take > 0)  # every known token computed: one sampled
        self.clock.first_token[s[caught & fresh, RID]] = self.clock.now
        s[:, REM] -= caught
        need += caught
        self._finish()
        # A prompt's last token (NEED 1, nothing sampled yet) is a prompt part too: the fast
        # paths would take it for a decoding sequence and lose its first token.
        left = self.s[:self.n]
        self.pending = bool(((left[:, NEED] != 1) | (left[:, REM] == left[:, OUT])).any())

    def _allocate(self, take: np.ndarray) -> bool:
        """The running requests' blocks for this step's tokens, in order; where the cache
        is full, the last running request is preempted until the request fits (or is the one
        preempted). True where one was."""
        s = self.s[:self.n]
        want = self._blocks(s[:, COMP] + take) - s[:, BLOCKS]
        wanted = int(want.sum())
        if wanted <= self.free:
            self.free -= wanted
            s[:, BLOCKS] += want
            return False
        i = 0
        while i < self.n:
            nb = int(self._blocks(self.s[i, COMP] + take[i]) - self.s[i, BLOCKS])
            while nb > self.free and self.n > i:
                self._preempt(self.n - 1)
            if i >= self.n:
                break
            self.free -= nb
            self.s[i, BLOCKS] += nb
            i += 1
        return True

    def _preempt(self, i: int) -> None:
        """Back to the front of the queue, its blocks freed, its tokens to compute again."""
        rid, comp, need, rem, out, blocks = (int(x) for x in self.s[i])
        sampled = out - rem
        self.waiting.appendleft((rid, comp + need - sampled, sampled, out))
        self.free += blocks
        self.n -= 1
        self.clock.preemptions += 1

    def _finish(self) -> None:
        n = self.n
        s = self.s[:n]
        if not n or s[:, REM].min() > 0:
            return
        done = s[:, REM] <= 0
        self.clock.end[s[done, RID]] = self.clock.now
        self.free += int(s[done, BLOCKS].sum())
        kept = s[~done]
        self.n = len(kept)
        self.s[:self.n] = kept


def _steps_to_reach(a: float, b: float, gap: float) -> int:
    """The fewest steps (at least 1) whose times a + b x j (j from 0) sum to `gap` or more."""
    if gap <= 0:
        return 1
    if b <= 0:
        return max(1, math.ceil(gap / a)) if a > 0 else 1
    c = a - b / 2  # the sum of k steps is c k + b k^2 / 2
    return max(1, math.ceil((-c + math.sqrt(c * c + 2 * b * gap)) / b))
