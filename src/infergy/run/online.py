"""Serve a trace's requests online through any OpenAI-compatible HTTP server (vLLM, SGLang,
TGI, transformers serve), this host's GPUs measured over the run (issue 9).

Arrivals: the trace's own timestamps (scaled by `time_scale`), a Poisson process at `rate`
requests per second (seeded), or a fixed concurrency (closed loop: each of N clients sends its
next request when the last one ends). Each request streams its completion (`/v1/completions`,
the prompt as token ids of the request's own input length, exactly its own output length,
greedy): its time to first token (TTFT), the gaps between streamed chunks (ITL), time per
output token after the first (TPOT) and end-to-end latency.

A request the server refuses, fails, cuts off or stalls on is counted with its reason and the
run goes on; every read has a timeout, so nothing hangs. Every request in flight is a task of
one event loop (the client of `infergy.run.client`), not a thread: a thousand streams cost the
host no more threads than one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from infergy.meter import Meter
from infergy.provenance import run_metadata
from infergy.run.client import (
    Endpoint,
    RequestFailed,
    ServeError,
    allow_connections,
    run_to_end,
)
from infergy.run.replay import ReplayFigures
from infergy.workloads import Trace
from infergy.workloads.arrivals import ArrivalError
from infergy.workloads.arrivals import arrival_times as workload_arrivals

ARRIVALS = ("trace", "poisson", "concurrency")


def arrival_times(trace: Trace, requests: np.ndarray, process: str, *, rate: float | None = None,
                  time_scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """Seconds from the run's start at which each request is sent, in order
    (infergy.workloads.arrivals); ServeError for arrivals that cannot be made."""
    try:
        return workload_arrivals(trace, requests, process, rate=rate, time_scale=time_scale,
                                 seed=seed)
    except ArrivalError as e:
        raise ServeError(str(e)) from None


@dataclass
class RequestRecord:
    request: int  # index into the trace
    input_tokens: int
    output_asked: int
    status: str = "not sent"  # ok, http, server, short, connection, timeout, cut off,
    # malformed, not sent, in flight (still unanswered when the run was stopped)
    error: str | None = None
    sent_s: float | None = None  # from the run's start
    output_tokens: int = 0
    ttft_s: float | None = None
    e2e_s: float | None = None
    tpot_s: float | None = None
    itl_max_s: float | None = None  # the longest gap between its chunks
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (when, tokens) of each
    # chunk, from the run's start; summarized, then emptied before the result is kept


@dataclass
class OnlineResult(ReplayFigures):
    """A served run. `energy_j` covers the whole run (first send to last answer). The steady
    state is every stretch of the run with at least `steady_inflight` requests in flight (the
    batch full, as the ML.ENERGY benchmark defines it), each in its own window, summed.
    `engine` is the endpoint's URL (no credentials); `batching` the arrival process (trace
    x0.5, poisson 4/s, concurrency 16); `status` ok or interrupted (Ctrl-C): failed requests
    are counted, not fatal; `requests` those sent."""

    mode: str = "online"
    completed: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason -> requests
    stopped: str | None = None  # why fewer requests were sent than the trace holds
    throughput_tok_s: float | None = None
    requests_per_s: float | None = None
    idle_share: float | None = None  # share of the run with no request in flight
    inflight_s: dict[int, float] = field(default_factory=dict)  # seconds with N in flight
    latency: dict = field(default_factory=dict)  # ttft/tpot/itl/e2e -> p50, p90, p99 (s)
    steady: dict | None = None  # the steady-state window's figures, or why there is none
    server: dict | None = None  # a server infergy started: its command, start-up time, energy
    served_by: str | None = None  # that server's engine (vllm, vllm-eager, hf-paged); None
    # for an --endpoint, whose engine infergy cannot know
    request_form: dict = field(default_factory=dict)  # what the server took: fields (vllm:
    # lengths enforced; openai: a request may end early) and prompt (token ids or text)
    records: list[RequestRecord] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)


class _InFlight:
    """Requests in flight over time, counted on the run's event loop. A monitor thread of its
    own opens a steady-state window whenever the count reaches the level and closes it when
    the count falls below: sensor reads never hold up the event loop's streams."""

    def __init__(self, meter: Meter, clock, steady_at: int | None):
        self.meter, self.clock, self.steady_at = meter, clock, steady_at
        self.count, self.last_change = 0, None
        self.level_s: dict[int, float] = {}  # seconds at each count, between changes
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.intervals: list[tuple[float, float, object]] = []  # (from, to, Measurement)
        self.t0 = 0.0
        self.monitor = threading.Thread(target=self._monitor, daemon=True)
        self.monitor.start()

    def change(self, delta: int) -> None:
        now = self.clock()
        if self.last_change is not None:
            self.level_s[self.count] = self.level_s.get(self.count, 0.0) + (
                now - self.last_change)
        self.count += delta
        self.last_change = now
        self.events.put((now, self.count))

    def _monitor(self) -> None:
        window = opened = None
        while True:
            event = self.events.get()
            if event is None:
                break
            now, count = event
            if self.steady_at is None:
                continue
            if window is None and count >= self.steady_at:
                window, opened = self.meter.start("steady"), now
            elif window is not None and count < self.steady_at:
                self.intervals.append((opened, now, window.stop()))
                window = None
        if window is not None:
            self.intervals.append((opened, self.clock(), window.stop()))

    def finish(self) -> None:
        self.events.put(None)
        self.monitor.join(30)


def serve_online(endpoint: Endpoint, meter: Meter, trace: Trace, requests: np.ndarray,
                 prompts: Callable[[int], list[int]], *, arrivals: np.ndarray | None = None,
                 concurrency: int | None = None, label: str, max_requests: int | None = None,
                 duration_s: float | None = None, steady_inflight: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> OnlineResult:
    """Send the requests (at `arrivals`, or `concurrency` at a time), measure the run. On
    Ctrl-C no more are sent, those in flight get `endpoint.timeout_s` to end (a second
    Ctrl-C cuts that short), and the result holds what was answered. `endpoint`: an
    `Endpoint`, or any object with its interface (`infergy.run.servers.PagedServer`)."""
    if (arrivals is None) == (concurrency is None):
        raise ServeError("give arrival times or a concurrency, not both")
    if concurrency is not None and concurrency < 1:
        raise ServeError(f"--concurrency must be at least 1, got {concurrency}")
    if duration_s is not None and duration_s <= 0:
        raise ServeError(f"--duration must be positive, got {duration_s:g}")
    result = OnlineResult(trace.name, endpoint.model, endpoint.url, label)
    result.request_form = {"fields": getattr(endpoint, "fields", "in process"),
                           "prompt": getattr(endpoint, "prompt_format", "ids")}
    chosen = requests[:max_requests] if max_requests else requests
    stopped = []
    if max_requests and max_requests < len(requests):
        stopped.append(f"--max-requests {max_requests} of {len(requests)}")
    records = [RequestRecord(int(r), int(trace.input_tokens[r]), int(trace.output_tokens[r]))
               for r in chosen]
    payloads = [prompts(rec.request) for rec in records]  # made before the clock starts
    allow_connections(min(concurrency or len(records), len(records)))
    flight = _InFlight(meter, time.perf_counter, steady_inflight or concurrency)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    run = _Run(endpoint, flight, records, payloads, progress)
    window = meter.start("online", record_state=True)
    try:
        run_to_end(run.main(arrivals, concurrency, duration_s))
    except KeyboardInterrupt:  # a second Ctrl-C, or one the event loop did not catch
        run.interrupted = True
    finally:
        (whole,) = meter.stop(window)
        flight.finish()
    if run.interrupted:
        result.status, result.error = "interrupted", "stopped by Ctrl-C"
    sent = [r for r in records if r.sent_s is not None]
    if duration_s and len(sent) < len(records) and result.status == "ok":
        stopped.append(f"--duration {duration_s:g} s: {len(sent)} of {len(records)} sent")
    result.stopped = "; ".join(stopped) or None
    _summarize(result, sent, whole, flight, records)
    result.provenance = {**run_metadata(meter), "time": started}
    return result


class _Run:
    """One online run on an event loop: each request a task, sent at its arrival or when one
    of `concurrency` closed-loop clients is free, its chunks timed as they arrive."""

    def __init__(self, endpoint, flight: _InFlight, records: list[RequestRecord],
                 payloads: list, progress: Callable[[int, int], None] | None):
        self.endpoint, self.flight, self.records = endpoint, flight, records
        self.payloads, self.progress = payloads, progress
        self.clock, self.t0 = flight.clock, 0.0
        self.answered, self.stop, self.interrupted = 0, False, False

    async def main(self, arrivals, concurrency: int | None, duration_s: float | None) -> None:
        """Every request sent and answered, or on Ctrl-C (the event loop cancels this task)
        those in flight given until their timeout; any still unanswered stay "in flight"."""
        tasks: list[asyncio.Task] = []
        async with self.endpoint.session():
            self.t0 = self.flight.t0 = self.clock()
            try:
                if concurrency is not None:
                    pending = iter(range(len(self.records)))
                    tasks = [asyncio.create_task(self._client(pending, duration_s))
                             for _ in range(min(concurrency, len(self.records)))]
                else:
                    await self._send_at(arrivals, duration_s, tasks)
                if tasks:
                    await asyncio.wait(tasks)  # cancelling this wait leaves them running
            except asyncio.CancelledError:  # Ctrl-C: send no more, wait for those in flight
                asyncio.current_task().uncancel()
                self.stop = self.interrupted = True
                live = [t for t in tasks if not t.done()]
                if live:
                    _, live = await asyncio.wait(live, timeout=self.endpoint.timeout_s + 5)
                for t in live:
                    t.cancel()
                await asyncio.gather(*live, return_exceptions=True)

    async def _client(self, pending, duration_s: float | None) -> None:
        """A closed-loop client: the next request when its last one is answered."""
        while not self.stop:
            k = next(pending, None)
            if k is None or (duration_s and self.clock() - self.t0 > duration_s):
                return
            await self._send(k)

    async def _send_at(self, arrivals, duration_s: float | None, tasks: list) -> None:
        """Each request sent at its arrival time (in the order of their times), as a task of
        its own."""
        times = np.asarray(arrivals[:len(self.records)], dtype=float)
        for k in np.argsort(times, kind="stable").tolist():
            at = float(times[k])
            if duration_s and at > duration_s:
                break
            if (wait := at - (self.clock() - self.t0)) > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(self._send(k)))

    async def _send(self, k: int) -> None:
        rec, clock, t0 = self.records[k], self.clock, self.t0
        self.flight.change(+1)
        begin = clock()
        rec.sent_s, rec.status = begin - t0, "in flight"
        try:
            rec.output_tokens = await self.endpoint.stream(
                self.payloads[k], rec.output_asked,
                lambda n, at=None: rec.chunks.append(((clock() if at is None else at) - t0, n)))
            rec.status = "ok"
        except RequestFailed as err:
            rec.status, rec.error = err.kind, str(err)
        except Exception as err:  # one request's fault never ends the run
            rec.status, rec.error = "client", f"{type(err).__name__}: {err}"
        # (cancelled: still unanswered when the run stopped, it stays "in flight")
        end = clock()
        self.flight.change(-1)
        rec.e2e_s = end - begin
        if rec.chunks:
            rec.ttft_s = t0 + rec.chunks[0][0] - begin
            if rec.status == "ok" and rec.output_tokens > 1:
                rec.tpot_s = (end - t0 - rec.chunks[0][0]) / (rec.output_tokens - 1)
        self.answered += 1
        if self.progress:
            self.progress(self.answered, len(self.records))


def _percentiles(values) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "n": len(values)}


def _summarize(result: OnlineResult, sent, whole, flight: _InFlight, records) -> None:
    ok = [r for r in sent if r.status == "ok"]
    result.records = records
    result.requests, result.completed = len(sent), len(ok)
    for r in sent:
        if r.status != "ok":
            result.failed[r.status] = result.failed.get(r.status, 0) + 1
    result.output_tokens = sum(r.output_tokens for r in ok)
    result.time_s = whole.duration_s
    result.energy_j, result.active_energy_j = whole.energy_j, whole.active_energy_j
    result.energy_reason = whole.reason
    result.divide(len(ok))
    if whole.duration_s > 0:
        result.throughput_tok_s = result.output_tokens / whole.duration_s
        result.requests_per_s = len(ok) / whole.duration_s
        result.idle_share = min(1.0, flight.level_s.get(0, 0.0) / whole.duration_s)
    result.inflight_s = dict(sorted(flight.level_s.items()))
    gaps = []
    for r in ok:
        if len(r.chunks) > 1:
            gaps.append(np.diff([t for t, _ in r.chunks]))
            r.itl_max_s = float(gaps[-1].max())
    result.latency = {
        "ttft_s": _percentiles(r.ttft_s for r in ok), "tpot_s": _percentiles(
            r.tpot_s for r in ok), "itl_s": _percentiles(np.concatenate(gaps) if gaps else []),
        "e2e_s": _percentiles(r.e2e_s for r in ok)}
    result.steady = _steady(flight, sent)
    for r in records:
        r.chunks = []


def _steady(flight: _InFlight, sent) -> dict:
    """The steady state: the stretches with the level of requests in flight, summed; the
    tokens streamed inside them."""
    if flight.steady_at is None:
        return {"none": "no steady-state level: give --steady-inflight N (the batch the "
                        "server keeps full), or serve at a --concurrency"}
    if not flight.intervals:
        return {"none": f"the run never had {flight.steady_at} requests in flight"}
    # The stretches follow one another: each chunk's stretch is the last one opened by then.
    starts = np.array([a - flight.t0 for a, _, _ in flight.intervals])
    ends = np.array([b - flight.t0 for _, b, _ in flight.intervals])
    chunks = np.array([c for r in sent for c in r.chunks]).reshape(-1, 2)
    at = np.searchsorted(starts, chunks[:, 0], side="right") - 1
    inside = (at >= 0) & (chunks[:, 0] <= ends[np.maximum(at, 0)])
    tokens = int(chunks[inside, 1].sum())
    energies = [m.energy_j for _, _, m in flight.intervals]
    energy = None if None in energies else sum(energies)
    return {"inflight": flight.steady_at, "stretches": len(starts),
            "time_s": sum(m.duration_s for _, _, m in flight.intervals), "energy_j": energy,
            "tokens": tokens, "j_per_output_token": energy / tokens
            if energy is not None and tokens else None}
