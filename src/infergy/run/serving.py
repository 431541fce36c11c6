"""An online replay, as `infergy replay --mode online` runs it: a trace's requests sent to an
OpenAI-compatible server (given by its URL, or started here: vLLM's, or hf-paged in this
process) at their arrivals, this host's GPUs measured, the run recorded where a store is
given."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infergy.engines import EngineError, engine_class
from infergy.meter import open_meter
from infergy.models.catalog import ModelSpec
from infergy.run.device import RunError, torch_device
from infergy.run.online import (
    Endpoint,
    OnlineResult,
    ServeError,
    arrival_times,
    serve_online,
)
from infergy.run.parallel import free_port
from infergy.run.replay import request_prompt
from infergy.run.servers import (
    SERVE_CHOICES,
    SERVERS,
    PagedServer,
    ServerProcess,
    started_here,
    vllm_server,
)
from infergy.store import Store
from infergy.workloads import Trace


@dataclass
class Serving:
    """How the requests are served and sent (the `replay --mode online` options)."""

    endpoint: str | None = None  # a server's URL, or None with `serve`
    serve: str | None = None  # a server started here: one of SERVE_CHOICES
    weights: Path | None = None  # with `serve`: a checkpoint instead of random weights
    served_model: str | None = None  # the model's name on the server (default: the model)
    rate: float | None = None  # Poisson arrivals, requests a second
    concurrency: int | None = None  # N requests in flight
    time_scale: float = 1.0  # the trace's own arrivals, this many times faster
    max_requests: int | None = None
    duration: float | None = None  # seconds after which no request is sent
    timeout: float = 60.0  # seconds a request may wait for its next data
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key (never stored)
    steady_inflight: int | None = None
    tp: int | None = None  # GPUs of a server started here; those measured otherwise
    options: dict = field(default_factory=dict)  # a vLLM server started here: its settings

    def check(self) -> None:
        """ServeError for options that do not go together, before any work."""
        if (self.endpoint is None) == (self.serve is None):
            raise ServeError("--mode online needs --endpoint URL (an OpenAI-compatible server "
                             "serving the model) or --serve vllm (infergy starts one), not "
                             "both")
        if self.weights is not None and self.serve is None:
            raise ServeError("--weights: for --serve (a server given by --endpoint has its "
                             "own)")
        if self.serve is not None and self.serve not in SERVE_CHOICES:
            raise ServeError(f"--serve must be one of {', '.join(SERVE_CHOICES)}, got "
                             f"{self.serve!r}")
        if self.options and self.serve not in SERVERS:
            raise ServeError("--engine-option online: the settings of a vLLM server started "
                             "here (--serve vllm or vllm-eager); a server given by --endpoint "
                             "has its own, and hf-paged takes none")
        if self.rate is not None and self.concurrency is not None:
            raise ServeError("--rate and --concurrency: give one (or neither: the trace's own "
                             "times)")

    @property
    def label(self) -> str:
        return (f"concurrency {self.concurrency}" if self.concurrency is not None else
                f"poisson {self.rate:g}/s" if self.rate is not None else
                f"trace x{self.time_scale:g}")

    def stored(self) -> dict:
        """The options as the run's spec records them (no endpoint, no key's variable)."""
        return {k: getattr(self, k) for k in (
            "serve", "weights", "served_model", "rate", "concurrency", "time_scale",
            "max_requests", "duration", "timeout", "steady_inflight", "tp", "options")}


def replay_online(workload: Trace, requests: np.ndarray, spec: ModelSpec, s: Serving, *,
                  sample: int | None, seed: int, db: Path | None, idle_s: float,
                  notes: Callable[..., None] = lambda text, style="dim": None,
                  status: Callable[[str], object] = lambda text: contextlib.nullcontext(),
                  ) -> OnlineResult:
    """Serve `requests` of `workload` as `s` says, measuring this host's GPUs; the result is
    recorded in `db` where given. ServeError or StoreError before any request where it cannot
    be run; `notes(text, style)` is told what cannot be measured and a server that died; `status(
    text)` gives a context whose `update(text)` shows progress."""
    s.check()
    endpoint_url = s.endpoint if s.serve is None else f"http://127.0.0.1:{free_port()}"
    endpoint = Endpoint(endpoint_url, s.served_model or spec.name, timeout_s=s.timeout,
                        api_key=os.environ.get(s.api_key_env))
    arrivals = None
    if s.concurrency is None:
        process = "poisson" if s.rate is not None else "trace"
        if process == "trace" and workload.arrival_s is not None:  # in their arrival order
            requests = requests[np.argsort(workload.arrival_s[requests], kind="stable")]
        arrivals = arrival_times(workload, requests, process, rate=s.rate,
                                 time_scale=s.time_scale, seed=seed)
    longest = int((workload.input_tokens[requests] + workload.output_tokens[requests]).max())
    if longest > spec.max_context:
        raise ServeError(f"requests of up to {longest} tokens (input + output), past "
                         f"{spec.name}'s context of {spec.max_context}")
    recorded = None
    if s.serve is None:
        endpoint.check()  # the server answers and serves the model, before any work
        recorded = started_here(endpoint.model_root())
    store = Store(db) if db is not None else None  # before any request
    # The GPUs measured: a server started here uses the first --tp (1); one given by
    # --endpoint, the first --tp where given, else every visible GPU (its own are unknown).
    limit = s.tp if s.serve is None else s.tp or 1
    with status(f"infergy: measuring idle power for {idle_s:g} s ..."):
        m = open_meter(limit=limit, idle_s=idle_s)
    with m, contextlib.ExitStack() as stack:
        for u in m.unavailable:
            notes(f"not measurable: {u.what}: {u.reason}", "dim")
        server = started = None
        if s.serve == "hf-paged":  # in process: its load and cache set-up measured
            window = m.start("server start")
            try:
                with status("infergy: loading hf-paged ..."):
                    try:
                        endpoint = _paged_server(spec, s, workload, requests)
                    except (EngineError, OSError, ValueError) as e:  # the engine refused
                        raise RunError(str(e)) from None
                stack.callback(endpoint.engine.close)
                stack.callback(endpoint.close)
            finally:
                (started,) = m.stop(window)
        elif s.serve is not None:  # after the idle power: the server's start is measured
            window = m.start("server start")
            try:
                server = stack.enter_context(started_server(
                    spec, s.serve, port=int(endpoint_url.rsplit(":", 1)[1]),
                    served_name=endpoint.model, weights=s.weights, max_model_len=longest,
                    tp=s.tp or 1, options=s.options, status=status))
                endpoint.check()
            finally:
                (started,) = m.stop(window)
            waiting = _waiting_power(m, idle_s, status)
        with status(f"infergy: serving {workload.name} ({s.label}) ...") as st:
            result = serve_online(
                endpoint, m, workload, requests,
                lambda r: request_prompt(spec, int(workload.input_tokens[r]), seed, r),
                arrivals=arrivals, concurrency=s.concurrency, label=s.label,
                max_requests=s.max_requests, duration_s=s.duration,
                steady_inflight=s.steady_inflight,
                progress=lambda n, total: st.update(
                    f"infergy: serving {workload.name} ({s.label}): {n} of {total} answered"))
        result.selection, result.served_by = {"sample": sample, "seed": seed}, s.serve
        if recorded is not None:  # a server `infergy serve` started on this host
            result.served_by = recorded["served_by"]
            result.server = {"command": recorded["command"], "started_by": "infergy serve"}
        result.tp = len(m.gpus) if s.serve is None else s.tp or 1
        if s.serve == "hf-paged":
            result.server = {"in_process": "hf-paged", "start_energy_j": started.energy_j,
                             "start_time_s": started.duration_s}
        if server is not None:
            result.server = {"command": server.command, "ready_s": server.ready_s,
                             "log": str(server.log_path),
                             "start_energy_j": started.energy_j,
                             "start_time_s": started.duration_s, "waiting_w": waiting}
            if server.process.poll() is not None:
                notes(f"the server exited during the run; its log ({server.log_path}) ends:\n"
                      f"{server.log_tail()}", "red")
    if store is not None:
        with store:
            store.record_run(result.provenance, {"replay": workload.name, "mode": "online",
                                                 "endpoint": result.engine, **s.stored()},
                             replays=[result.to_dict()],
                             status="finished" if result.status == "ok" else "interrupted")
    return result


@contextlib.contextmanager
def started_server(spec: ModelSpec, kind: str, *, port: int, served_name: str | None = None,
                   weights: Path | None = None, max_model_len: int | None = None,
                   tp: int = 1, options: dict | None = None,
                   status: Callable[[str], object] = lambda text: contextlib.nullcontext(),
                   ) -> Iterator[ServerProcess]:
    """vLLM's OpenAI server (`kind`: vllm or vllm-eager) for `spec` on 127.0.0.1:`port`,
    random weights unless `weights`, running inside; stopped after, whatever happened.
    ServeError where it cannot start (its log's end in the message)."""
    if kind not in SERVERS:
        raise ServeError(f"a server is one of {', '.join(SERVERS)}, got {kind!r}")
    _check_port(port)
    with tempfile.TemporaryDirectory(prefix="infergy-") as folder:
        command = vllm_server(spec, kind=kind, port=port, served_name=served_name or spec.name,
                              weights=weights, folder=Path(folder),
                              max_model_len=max_model_len, tp=tp, options=options)
        log = Path(tempfile.mkstemp(prefix="infergy-server-", suffix=".log")[1])
        server = ServerProcess(command, f"http://127.0.0.1:{port}", log_path=log)
        with status(f"infergy: starting {kind}'s server (log: {log}) ..."):
            server.__enter__()  # stops what it started where it fails
        try:
            yield server
        finally:
            server.stop()


def _check_port(port: int) -> None:
    """ServeError where something listens on 127.0.0.1:`port` already: its /health would pass
    for the server's."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past a stopped one's
        try:  # connections in TIME_WAIT; a listener still refuses it
            sock.bind(("127.0.0.1", port))
        except OSError as e:
            raise ServeError(f"port {port} on 127.0.0.1 is taken ({e.strerror}): give another "
                             f"with --port") from None


def _waiting_power(m, seconds: float, status) -> dict[str, float | None]:
    """Each measured GPU's power with the server up, its model loaded, no request sent (what
    the simulator charges the time with no request in flight), over `seconds`: {} for 0;
    None for a GPU whose energy could not be read."""
    if seconds <= 0:
        return {}
    with status(f"infergy: measuring the server's waiting power for {seconds:g} s ..."):
        window = m.start("server waiting")
        time.sleep(seconds)
        (w,) = m.stop(window)
    return {d.device: d.avg_power_w for d in w.devices if d.kind == "gpu"}


def _paged_server(spec: ModelSpec, s: Serving, workload: Trace,
                  requests: np.ndarray) -> PagedServer:
    """hf-paged loaded here, its batch manager started for the run's largest shape."""
    engine = engine_class("hf-paged")(spec, device=torch_device("auto"), weights=s.weights)
    engine.load()
    return PagedServer(engine, max_batch=s.concurrency or s.steady_inflight or 64,
                       max_input=int(workload.input_tokens[requests].max()),
                       max_output=int(workload.output_tokens[requests].max()),
                       timeout_s=s.timeout)
