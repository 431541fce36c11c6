"""Serve a trace's requests online through any OpenAI-compatible HTTP server (vLLM, SGLang,
TGI, transformers serve), this host's GPUs measured over the run (issue 9).

Arrivals: the trace's own timestamps (scaled by `time_scale`), a Poisson process at `rate`
requests per second (seeded), or a fixed concurrency (closed loop: each of N clients sends its
next request when the last one ends). Each request streams its completion (`/v1/completions`,
the prompt as token ids of the request's own input length, exactly its own output length,
greedy): its time to first token (TTFT), the gaps between streamed chunks (ITL), time per
output token after the first (TPOT) and end-to-end latency.

A request the server refuses, fails, cuts off or stalls on is counted with its reason and the
run goes on; every read has a timeout, so nothing hangs. Only the standard library talks HTTP:
the GPU machines reach no package index.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from infergy.bench.point import run_metadata
from infergy.meter import Meter
from infergy.workloads import Trace

ARRIVALS = ("trace", "poisson", "concurrency")


class ServeError(ValueError):
    """An online run that cannot be made as asked; raised before any request is sent."""


class RequestFailed(RuntimeError):
    """One request that did not complete: `kind` is http, connection, timeout or cut off."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def arrival_times(trace: Trace, requests: np.ndarray, process: str, *, rate: float | None = None,
                  time_scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """Seconds from the run's start at which each request is sent, in order."""
    if process == "trace":
        if trace.arrival_s is None:
            raise ServeError(f"{trace.name} has no arrival times: use --rate or --concurrency")
        if time_scale <= 0:
            raise ServeError(f"--time-scale must be positive, got {time_scale}")
        times = np.sort(trace.arrival_s[requests])
        return (times - times[0]) / time_scale
    if process == "poisson":
        if rate is None or rate <= 0:
            raise ServeError(f"--rate must be a positive number of requests a second, got "
                             f"{rate}")
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=len(requests))
        return np.concatenate([[0.0], np.cumsum(gaps[1:])])
    raise ServeError(f"arrivals must be one of {', '.join(ARRIVALS[:2])}, got {process!r}")


class Endpoint:
    """An OpenAI-compatible server's `/v1/completions`, streamed."""

    def __init__(self, url: str, model: str, *, timeout_s: float = 60.0,
                 api_key: str | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServeError(f"--endpoint {url!r}: expected http://HOST:PORT or https://...")
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self._parts = parts
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"  # never printed or stored
        self._path = parts.path.rstrip("/") + "/v1/completions"

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else \
            http.client.HTTPConnection
        return cls(self._parts.hostname, self._parts.port, timeout=self.timeout_s)

    def stream(self, prompt: list[int], output_tokens: int, on_chunk: Callable[[], None]) -> int:
        """Send one request and read its stream, calling `on_chunk` at every chunk that
        carries text; the output tokens the server reports (or the chunks counted)."""
        body = json.dumps({
            "model": self.model, "prompt": prompt, "max_tokens": output_tokens,
            "min_tokens": output_tokens, "ignore_eos": True, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}})
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            if response.status != 200:
                text = response.read(300).decode(errors="replace").strip()
                raise RequestFailed("http", f"HTTP {response.status}: {text}")
            chunks, usage, done = 0, None, False
            for raw in response:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if event.get("usage"):
                    usage = event["usage"].get("completion_tokens")
                if any("text" in c for c in event.get("choices") or []):
                    chunks += 1
                    on_chunk()
            if not done:
                raise RequestFailed("cut off", f"the stream ended after {chunks} chunks "
                                               f"without [DONE]")
            return usage if usage is not None else chunks
        except TimeoutError:
            raise RequestFailed("timeout", f"no data for {self.timeout_s:g} s") from None
        except (ConnectionError, http.client.HTTPException, OSError) as err:
            raise RequestFailed("connection", f"{type(err).__name__}: {err}") from None
        except json.JSONDecodeError as err:
            raise RequestFailed("cut off", f"a malformed chunk: {err}") from None
        finally:
            conn.close()


@dataclass
class RequestRecord:
    request: int  # index into the trace
    input_tokens: int
    output_asked: int
    status: str = "not sent"  # ok, http, connection, timeout, cut off, not sent
    error: str | None = None
    sent_s: float | None = None  # from the run's start
    output_tokens: int = 0
    ttft_s: float | None = None
    e2e_s: float | None = None
    tpot_s: float | None = None
    itl_max_s: float | None = None  # the longest gap between its chunks
    chunk_s: list[float] = field(default_factory=list)  # when each chunk came (from the
    # run's start); summarized, then emptied before the result is kept


@dataclass
class OnlineResult:
    """A served run. `energy_j` covers the whole run (first send to last answer); the
    steady-state window, where the run kept at least `steady_inflight` requests in flight
    (the batch full, as the ML.ENERGY benchmark defines it), has its own figures."""

    trace: str
    model: str
    engine: str  # the endpoint's URL (host and path only)
    batching: str  # the arrival process: trace x0.5, poisson 4/s, concurrency 16
    decoding: str = "greedy"
    mode: str = "online"
    status: str = "ok"  # ok; interrupted (Ctrl-C); failed requests are counted, not fatal
    error: str | None = None
    requests: int = 0  # sent
    completed: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason -> requests
    stopped: str | None = None  # why fewer requests were sent than the trace holds
    output_tokens: int = 0
    energy_j: float | None = None
    active_energy_j: float | None = None
    time_s: float = 0.0
    j_per_output_token: float | None = None
    j_per_request: float | None = None
    energy_reason: str | None = None
    throughput_tok_s: float | None = None
    requests_per_s: float | None = None
    idle_share: float | None = None  # share of the run with no request in flight
    latency: dict = field(default_factory=dict)  # ttft/tpot/itl/e2e -> p50, p90, p99 (s)
    steady: dict | None = None  # the steady-state window's figures, or why there is none
    server: dict | None = None  # a server infergy started: its command, start-up time, energy
    records: list[RequestRecord] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class _InFlight:
    """Requests in flight over time, and the steady-state window opened and closed on it."""

    def __init__(self, meter: Meter, clock, steady_at: int | None):
        self.meter, self.clock, self.steady_at = meter, clock, steady_at
        self.lock = threading.Lock()
        self.count, self.last_change, self.idle_s = 0, None, 0.0
        self.steady_window, self.steady = None, None
        self.sending = True

    def change(self, delta: int) -> None:
        with self.lock:
            now = self.clock()
            if self.count == 0 and self.last_change is not None:
                self.idle_s += now - self.last_change
            self.count += delta
            self.last_change = now
            if self.steady_at is None:
                return
            if self.steady_window is None and self.steady is None and \
                    self.count >= self.steady_at:
                self.steady_window = self.meter.start("steady")
                self.steady_from = now
            elif self.steady_window is not None and self.count < self.steady_at and \
                    not self.sending:
                self.close()

    def close(self) -> None:
        if self.steady_window is not None:
            self.steady = self.steady_window.stop()
            self.steady_until = self.clock()
            self.steady_window = None


def serve_online(endpoint: Endpoint, meter: Meter, trace: Trace, requests: np.ndarray,
                 prompts: Callable[[int], list[int]], *, arrivals: np.ndarray | None = None,
                 concurrency: int | None = None, label: str, max_requests: int | None = None,
                 duration_s: float | None = None, steady_inflight: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> OnlineResult:
    """Send the requests (at `arrivals`, or `concurrency` at a time), measure the run."""
    if (arrivals is None) == (concurrency is None):
        raise ServeError("give arrival times or a concurrency, not both")
    if concurrency is not None and concurrency < 1:
        raise ServeError(f"--concurrency must be at least 1, got {concurrency}")
    split = urllib.parse.urlsplit(endpoint.url)
    result = OnlineResult(trace.name, endpoint.model, f"{split.netloc}{split.path}", label)
    chosen = requests[:max_requests] if max_requests else requests
    if max_requests and max_requests < len(requests):
        result.stopped = f"--max-requests {max_requests} of {len(requests)}"
    records = [RequestRecord(int(r), int(trace.input_tokens[r]), int(trace.output_tokens[r]))
               for r in chosen]
    payloads = [prompts(rec.request) for rec in records]  # made before the clock starts
    clock = time.perf_counter
    flight = _InFlight(meter, clock, steady_inflight or concurrency)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    done = threading.Semaphore(0)
    finished = [0]

    def send(k: int) -> None:
        rec = records[k]
        begin = clock()
        rec.sent_s = begin - t0
        flight.change(+1)
        try:
            rec.output_tokens = endpoint.stream(payloads[k], rec.output_asked,
                                                lambda: rec.chunk_s.append(clock() - t0))
            rec.status = "ok"
        except RequestFailed as err:
            rec.status, rec.error = err.kind, str(err)
        finally:
            end = clock()
            flight.change(-1)
            rec.e2e_s = end - begin
            if rec.chunk_s:
                rec.ttft_s = rec.chunk_s[0] - rec.sent_s
                if rec.output_tokens > 1 and rec.status == "ok":
                    rec.tpot_s = (end - t0 - rec.chunk_s[0]) / (rec.output_tokens - 1)
            finished[0] += 1
            if progress:
                progress(finished[0], len(records))
            done.release()

    window = meter.start("online", record_state=True)
    t0 = flight.t0 = clock()
    threads: list[threading.Thread] = []
    try:
        if concurrency is not None:
            queue = iter(range(len(records)))
            queue_lock = threading.Lock()

            def client():
                while True:
                    with queue_lock:
                        k = next(queue, None)
                    if k is None or (duration_s and clock() - t0 > duration_s):
                        flight.sending = False  # no more sends: the steady state may end
                        return
                    send(k)

            threads = [threading.Thread(target=client, daemon=True)
                       for _ in range(min(concurrency, len(records)))]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        else:
            for k, at in enumerate(arrivals[:len(records)]):
                if duration_s and at > duration_s:
                    break
                while (wait := at - (clock() - t0)) > 0:
                    time.sleep(min(wait, 0.2))
                thread = threading.Thread(target=send, args=(k,), daemon=True)
                thread.start()
                threads.append(thread)
            flight.sending = False
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
    except KeyboardInterrupt:
        result.status, result.error = "interrupted", "stopped by Ctrl-C"
    finally:
        flight.sending = False
        with flight.lock:
            flight.close()
        (whole,) = meter.stop(window)
    sent = [r for r in records if r.sent_s is not None]
    if duration_s and len(sent) < len(records):
        result.stopped = f"--duration {duration_s:g} s: {len(sent)} of {len(records)} sent"
    _summarize(result, sent, whole, flight, records)
    result.provenance = {**run_metadata(meter), "time": started}
    return result


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
    if result.energy_j is not None and result.output_tokens:
        result.j_per_output_token = result.energy_j / result.output_tokens
        result.j_per_request = result.energy_j / len(ok)
    if whole.duration_s > 0:
        result.throughput_tok_s = result.output_tokens / whole.duration_s
        result.requests_per_s = len(ok) / whole.duration_s
        result.idle_share = min(1.0, flight.idle_s / whole.duration_s)
    gaps = [np.diff(r.chunk_s) for r in ok if len(r.chunk_s) > 1]
    for r in ok:
        r.itl_max_s = float(np.max(np.diff(r.chunk_s))) if len(r.chunk_s) > 1 else None
    result.latency = {
        "ttft_s": _percentiles(r.ttft_s for r in ok), "tpot_s": _percentiles(
            r.tpot_s for r in ok), "itl_s": _percentiles(np.concatenate(gaps) if gaps else []),
        "e2e_s": _percentiles(r.e2e_s for r in ok)}
    steady = flight.steady
    if flight.steady_at is None:
        result.steady = {"none": "no steady-state level: give --steady-inflight N (the batch "
                                 "the server keeps full), or serve at a --concurrency"}
    elif steady is None:
        result.steady = {"none": f"the run never had {flight.steady_at} requests in flight"}
    else:
        # Chunks streamed inside the window (one token each from vLLM; the server's usage
        # counts are per request, not per window).
        t0 = flight.steady_from - flight.t0
        t1 = flight.steady_until - flight.t0
        chunks = sum(int(np.sum((np.asarray(r.chunk_s) >= t0) & (np.asarray(r.chunk_s) <= t1)))
                     for r in sent)
        result.steady = {"inflight": flight.steady_at, "from_s": t0, "time_s": steady.duration_s,
                         "energy_j": steady.energy_j, "chunks": chunks,
                         "j_per_chunk": steady.energy_j / chunks
                         if steady.energy_j is not None and chunks else None}
    for r in records:
        r.chunk_s = []
