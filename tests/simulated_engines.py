"""Test doubles for engines: the real hf-eager engine on the tiny model, made to fail on cue.

Nothing here is used by the product. Each double counts its `generate` calls; with the
runner's defaults (hf-eager has no `prepare` work, one warm-up run) call 1 is the warm-up and
calls from 2 on are measured runs.
"""

from __future__ import annotations

import time

from infergy.engines.base import Engine, Generation
from infergy.engines.hf import HFEager


class OutOfMemoryError(RuntimeError):
    """Mimics torch.OutOfMemoryError: the runner recognises it by its class name."""


class SimulatedFailureEngine(HFEager):
    """hf-eager that raises `error` from the `fail_from_call`-th `generate` call on.

    `when`: "start" raises before any token (request and prefill windows open); "after first
    token" lets the prefill finish and raises in the decode (request and decode windows open).
    """

    name = "simulated-failure"

    def __init__(self, *args, error: BaseException, fail_from_call: int = 2,
                 when: str = "start", **kwargs):
        super().__init__(*args, **kwargs)
        if when not in ("start", "after first token"):
            raise ValueError(f"unknown failure point {when!r}")
        self.error = error
        self.fail_from_call = fail_from_call
        self.when = when
        self.calls = 0

    def generate(self, prompts, output_tokens, decoding, on_first_token=None):
        self.calls += 1
        if self.calls < self.fail_from_call:
            return super().generate(prompts, output_tokens, decoding, on_first_token)
        if self.when == "start":
            raise self.error

        def first_token_then_fail():
            if on_first_token is not None:
                on_first_token()
            raise self.error

        return super().generate(prompts, output_tokens, decoding, first_token_then_fail)


class OutOfMemoryEngine(SimulatedFailureEngine):
    """hf-eager that runs out of memory on the measured runs."""

    name = "simulated-oom"

    def __init__(self, *args, error: BaseException | None = None, **kwargs):
        error = error or OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        super().__init__(*args, error=error, **kwargs)


class GreedyOnlyEngine(HFEager):
    """hf-eager that says it supports greedy decoding only."""

    name = "simulated-greedy-only"
    decodings = ("greedy",)


class SlowPrefillRunEngine(Engine):
    """An engine with no first-token hook and no model: a run with one output token takes
    `prefill_run_s`, a full request `request_s`. With prefill_run_s > request_s it is an engine
    whose per-call overhead dominates, as transformers' continuous batching (hf-paged) does on
    a CPU, where a 1-token run can take as long as a 4-token one."""

    name = "simulated-slow-prefill-run"
    description = "test double: sleeps instead of generating"
    first_token_hook = False

    def __init__(self, *args, prefill_run_s: float = 0.2, request_s: float = 0.02,
                 first_run_s: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefill_run_s = prefill_run_s
        self.request_s = request_s
        self.first_run_s = first_run_s  # the first call's time, if set (a new shape's)
        self.calls: list[int] = []  # output tokens asked of each `generate`

    def load(self) -> None:
        pass

    def generate(self, prompts, output_tokens, decoding, on_first_token=None):
        self.check_decoding(decoding)
        self.calls.append(output_tokens)
        if self.first_run_s is not None and len(self.calls) == 1:
            time.sleep(self.first_run_s)
        else:
            time.sleep(self.prefill_run_s if output_tokens == 1 else self.request_s)
        return Generation(output_tokens=[output_tokens] * len(prompts))


class FailsByBatchEngine(HFEager):
    """hf-eager for sweeps, told by its engine options how to fail, by batch size:
    `oom_from_batch: N` runs out of memory at B >= N (and its memory model says `estimate`),
    in tensor-parallel rank `oom_on_rank` only where that is given (the other ranks go on into
    the model's collectives);
    `crash_at_batch: N` kills its own process at B == N (a lost worker), in tensor-parallel
    rank `crash_on_rank` only where that is given (a lost follower: the other ranks go on
    into the model's collectives);
    `killed_from_batch: N` has its process killed by SIGKILL at B >= N, as the kernel's
    out-of-memory killer does;
    `fatal_at_batch: N` raises a fatal CUDA error at B == N;
    `sleep_s: S` adds S seconds of sleep to every run: a run whose time a busy CPU barely
    changes;
    `fail_load: true` fails its load (a model that cannot start), or `fail_load: TEXT` with
    that message.
    Used by name, `simulated_engines:FailsByBatchEngine`, so a sweep's worker process (and
    its followers) can import it."""

    name = "simulated-fails-by-batch"

    def load(self) -> None:
        why = self.options.get("fail_load")
        if why:
            raise RuntimeError(why if isinstance(why, str)
                               else "the model could not start (simulated)")
        super().load()

    def generate(self, prompts, output_tokens, decoding, on_first_token=None):
        import torch

        batch = len(prompts)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if batch >= self.options.get("oom_from_batch", 1 << 30) and \
                self.options.get("oom_on_rank", rank) == rank:
            raise OutOfMemoryError(f"CUDA out of memory at batch {batch} (simulated)")
        if batch == self.options.get("crash_at_batch") and \
                self.options.get("crash_on_rank", rank) == rank:
            import os

            os._exit(9)
        if batch >= self.options.get("killed_from_batch", 1 << 30):
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if batch == self.options.get("fatal_at_batch"):
            raise RuntimeError("CUDA error: an illegal memory access was encountered "
                               "(simulated)")
        time.sleep(self.options.get("sleep_s", 0))
        return super().generate(prompts, output_tokens, decoding, on_first_token)

    def max_batch(self, input_tokens, output_tokens):
        estimate = self.options.get("estimate")
        return estimate, {"method": "test double's fixed estimate"}


class PhasedPowerEngine(Engine):
    """An engine with a first-token hook whose prefill and decode draw set powers on a
    simulated GPU (sleeps instead of generating): a prefill of `prefill_s` at `prefill_w`,
    then a decode of `decode_s` at `decode_w`, then `rest_w`."""

    name = "simulated-phased-power"
    description = "test double: sleeps at set powers instead of generating"
    first_token_hook = True

    def __init__(self, *args, gpu, prefill_s: float, decode_s: float, prefill_w: float,
                 decode_w: float, rest_w: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.gpu, self.prefill_s, self.decode_s = gpu, prefill_s, decode_s
        self.prefill_w, self.decode_w, self.rest_w = prefill_w, decode_w, rest_w

    def load(self) -> None:
        pass

    def generate(self, prompts, output_tokens, decoding, on_first_token=None):
        start = time.perf_counter()
        self.gpu.set_power(self.prefill_w)
        time.sleep(self.prefill_s)
        self.gpu.set_power(self.decode_w)
        first = time.perf_counter() - start
        if on_first_token:
            on_first_token()
        time.sleep(self.decode_s)
        self.gpu.set_power(self.rest_w)
        return Generation(output_tokens=[output_tokens] * len(prompts), first_token_s=first)
