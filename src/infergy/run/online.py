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
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from infergy.meter import Meter
from infergy.run.point import run_metadata
from infergy.run.replay import ReplayFigures
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
    """An OpenAI-compatible server's `/v1/completions`, streamed. `url` is the server's base
    (a trailing /v1 is taken off); credentials in it are used, never shown."""

    def __init__(self, url: str, model: str, *, timeout_s: float = 60.0,
                 api_key: str | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServeError(f"--endpoint {url!r}: expected http://HOST:PORT or https://...")
        if timeout_s <= 0:
            raise ServeError(f"--timeout must be positive, got {timeout_s:g}")
        self.model, self.timeout_s = model, timeout_s
        self._parts = parts
        base = parts.path.rstrip("/").removesuffix("/v1")
        self.url = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else "") + base  # shown: no credentials
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"  # never printed or stored
        self._base = base
        # What the server takes, found by `check`: vLLM's exact-length fields (min_tokens,
        # ignore_eos, return_token_ids) or plain OpenAI ones; token ids or text as the prompt.
        self.fields, self.prompt_format = "vllm", "ids"

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else \
            http.client.HTTPConnection
        return cls(self._parts.hostname, self._parts.port, timeout=self.timeout_s)

    def check(self) -> None:
        """Before any work: a one-token request, which finds what the server takes (vLLM's
        exact-length fields or plain OpenAI ones, token ids or text) and that it serves
        `model`. ServeError otherwise, naming the models it serves where it lists them."""
        for _ in range(3):
            try:
                self.stream([1, 2, 3], 1, lambda *_: None)
                return
            except RequestFailed as err:
                text = str(err)
                if err.kind == "http" and self.fields == "vllm" and (
                        "min_tokens" in text or "ignore_eos" in text
                        or "return_token_ids" in text):
                    self.fields = "openai"  # strict about fields it does not know
                elif err.kind == "http" and self.prompt_format == "ids" and "string" in text:
                    self.prompt_format = "text"
                elif err.kind == "http" and ("404" in text or "does not exist" in text):
                    raise ServeError(f"{self.url} does not serve {self.model!r}{self._listed()}: "
                                     f"give --served-model NAME ({text})") from None
                else:
                    raise ServeError(f"{self.url}: a test request failed: {text}") from None
        raise ServeError(f"{self.url}: no request form it accepts")

    def _listed(self) -> str:
        """`(it serves a, b)` from /v1/models, where the server lists them."""
        conn = self._connection()
        try:
            conn.request("GET", f"{self._base}/v1/models", headers=self._headers)
            response = conn.getresponse()
            served = [m.get("id") for m in json.loads(response.read()).get("data") or []]
            return f" (it serves {', '.join(map(str, served))})" if served else ""
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            return ""
        finally:
            conn.close()

    def stream(self, prompt: list[int], output_tokens: int,
               on_chunk: Callable[..., None]) -> int:
        """Send one request and read its stream, calling `on_chunk(tokens)` at every chunk
        that carries output (an in-process server passes the chunk's time too); the output
        tokens the server reports (or the chunks' own)."""
        request = {"model": self.model, "max_tokens": output_tokens, "temperature": 0.0,
                   "stream": True, "stream_options": {"include_usage": True},
                   # token ids, or as text the words of infergy's synthetic tokenizer
                   "prompt": prompt if self.prompt_format == "ids" else " ".join(
                       f"t{i}" for i in prompt)}
        if self.fields == "vllm":  # exactly the asked length; each chunk's tokens counted
            request.update(min_tokens=output_tokens, ignore_eos=True, return_token_ids=True)
        body = json.dumps(request)
        conn = self._connection()
        try:
            conn.request("POST", f"{self._base}/v1/completions", body=body,
                         headers=self._headers)
            response = conn.getresponse()
            if response.status != 200:
                text = response.read(300).decode(errors="replace").strip()
                raise RequestFailed("http", f"HTTP {response.status}: {text}")
            tokens, usage, done = 0, None, False
            for raw in response:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if event.get("error"):  # vLLM reports a failure mid-stream, then [DONE]
                    raise RequestFailed("server", f"error mid-stream: {event['error']}")
                if event.get("usage"):
                    usage = event["usage"].get("completion_tokens")
                for choice in event.get("choices") or []:
                    ids = choice.get("token_ids")
                    n = len(ids) if isinstance(ids, list) else 1 if choice.get("text") else 0
                    if n:
                        tokens += n
                        on_chunk(n)
                    done = done or choice.get("finish_reason") is not None  # no [DONE] sent
            if not done:
                raise RequestFailed("cut off", f"the stream ended after {tokens} tokens "
                                               f"without [DONE] or a finish reason")
            got = usage if usage is not None else tokens
            if got < output_tokens and self.fields == "vllm":  # lengths were enforced
                raise RequestFailed("short", f"{got} of {output_tokens} tokens")
            return got
        except TimeoutError:
            raise RequestFailed("timeout", f"no data for {self.timeout_s:g} s") from None
        except (ConnectionError, http.client.HTTPException, OSError) as err:
            raise RequestFailed("connection", f"{type(err).__name__}: {err}") from None
        except (ValueError, AttributeError, TypeError) as err:  # JSON errors included
            raise RequestFailed("malformed", f"a malformed chunk: {err}") from None
        finally:
            conn.close()


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
    """Requests in flight over time. A monitor thread of its own opens a steady-state window
    whenever the count reaches the level and closes it when the count falls below: sensor
    reads never hold up a request's thread."""

    def __init__(self, meter: Meter, clock, steady_at: int | None):
        self.meter, self.clock, self.steady_at = meter, clock, steady_at
        self.lock = threading.Lock()
        self.count, self.last_change = 0, None
        self.level_s: dict[int, float] = {}  # seconds at each count, between changes
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.intervals: list[tuple[float, float, object]] = []  # (from, to, Measurement)
        self.t0 = 0.0
        self.monitor = threading.Thread(target=self._monitor, daemon=True)
        self.monitor.start()

    def change(self, delta: int) -> None:
        with self.lock:
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


def _join(threads, deadline_s: float | None = None) -> None:
    """Wait for the threads, in short joins (Ctrl-C stays responsive), until `deadline_s`."""
    for t in threads:
        while t.is_alive() and (deadline_s is None or time.perf_counter() < deadline_s):
            t.join(0.2)


def serve_online(endpoint: Endpoint, meter: Meter, trace: Trace, requests: np.ndarray,
                 prompts: Callable[[int], list[int]], *, arrivals: np.ndarray | None = None,
                 concurrency: int | None = None, label: str, max_requests: int | None = None,
                 duration_s: float | None = None, steady_inflight: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> OnlineResult:
    """Send the requests (at `arrivals`, or `concurrency` at a time), measure the run. On
    Ctrl-C no more are sent, those in flight get `endpoint.timeout_s` to end, and the result
    holds what was answered."""
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
    clock = time.perf_counter
    flight = _InFlight(meter, clock, steady_inflight or concurrency)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    stop = threading.Event()
    answered, answered_lock = [0], threading.Lock()

    def send(k: int) -> None:
        rec = records[k]
        flight.change(+1)
        begin = clock()
        rec.sent_s, rec.status = begin - t0, "in flight"
        try:
            rec.output_tokens = endpoint.stream(
                payloads[k], rec.output_asked,
                lambda n, at=None: rec.chunks.append(((clock() if at is None else at) - t0, n)))
            rec.status = "ok"
        except RequestFailed as err:
            rec.status, rec.error = err.kind, str(err)
        except Exception as err:  # one request's fault never ends the run
            rec.status, rec.error = "client", f"{type(err).__name__}: {err}"
        finally:
            end = clock()
            flight.change(-1)
            rec.e2e_s = end - begin
            if rec.chunks:
                rec.ttft_s = t0 + rec.chunks[0][0] - begin
                if rec.status == "ok" and rec.output_tokens > 1:
                    rec.tpot_s = (end - t0 - rec.chunks[0][0]) / (rec.output_tokens - 1)
            with answered_lock:
                answered[0] += 1
                n = answered[0]
            if progress:
                progress(n, len(records))

    window = meter.start("online", record_state=True)
    t0 = flight.t0 = clock()
    threads: list[threading.Thread] = []
    try:
        if concurrency is not None:
            pending = iter(range(len(records)))
            pending_lock = threading.Lock()

            def client():
                while not stop.is_set():
                    with pending_lock:
                        k = next(pending, None)
                    if k is None or (duration_s and clock() - t0 > duration_s):
                        return
                    send(k)

            threads = [threading.Thread(target=client, daemon=True)
                       for _ in range(min(concurrency, len(records)))]
            for t in threads:
                t.start()
        else:
            for k, at in enumerate(arrivals[:len(records)]):
                if duration_s and at > duration_s:
                    break
                while (wait := at - (clock() - t0)) > 0:
                    time.sleep(min(wait, 0.2))
                threads.append(threading.Thread(target=send, args=(k,), daemon=True))
                threads[-1].start()
        _join(threads)
    except KeyboardInterrupt:
        stop.set()
        result.status, result.error = "interrupted", "stopped by Ctrl-C"
        _join(threads, clock() + endpoint.timeout_s + 5)  # in flight: until their timeout
    finally:
        stop.set()
        (whole,) = meter.stop(window)
        flight.finish()
    sent = [r for r in records if r.sent_s is not None]
    if duration_s and len(sent) < len(records) and result.status == "ok":
        stopped.append(f"--duration {duration_s:g} s: {len(sent)} of {len(records)} sent")
    result.stopped = "; ".join(stopped) or None
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
