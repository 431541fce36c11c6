"""`infergy replay`: a trace's own requests run through an engine, the energy measured, and the
estimator's figure for the same requests beside it. Registered on the main app by cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from infergy.cli.app import (
    _fail,
    _launch,
    _options,
    _process_of,
    _run_meter,
    _status,
    _told,
    _torch_device,
    app,
    err,
    out,
)


@app.command()
def replay(
    trace: str = typer.Option(..., "--trace", "-t", help="A built-in trace or a trace file."),
    mode: str = typer.Option("offline", "--mode", help="offline (static batches through an "
                                                       "engine) or online (an HTTP server)."),
    model: str = typer.Option(..., "--model", "-m", help="A catalog model (infergy models)."),
    engine: str = typer.Option("hf-eager", "--engine", "-e",
                               help="hf-eager, hf-compiled, hf-paged, vllm or vllm-eager."),
    batching: str = typer.Option("binned,natural", "--batching",
                                 help="binned (each bin's requests, B of the profile's bin), "
                                      "natural (arrival order, B at a time), or both."),
    batch: int | None = typer.Option(None, "--batch", "-b", min=1,
                                     help="B of the natural batches (default: the smallest "
                                          "B of the profile's bins replayed), and of the "
                                          "binned ones where no profile is used."),
    sample: int | None = typer.Option(None, "--sample", "-n", min=1,
                                      help="Replay a seeded sample of N requests (default: "
                                           "every request inside the bins)."),
    seed: int = typer.Option(0, "--seed", help="The sample's and the prompts' seed."),
    profile: list[Path] | None = typer.Option(None, "--profile", "-p",
                                              help="Results stores with B = max points of this "
                                                   "model and engine (default: the shipped "
                                                   "profiles): the binned B and the estimate."),
    gpu: str | None = typer.Option(None, "--gpu", help="The profile's GPU (h100, h200, ...); "
                                                       "default: the card this replay runs "
                                                       "on (on a CPU: the only one the "
                                                       "profiles hold)."),
    db: Path | None = typer.Option(None, "--db", help="Results store to record the replays in."),
    fmt: str | None = typer.Option(None, "--format", help="Trace file format: azure, burstgpt "
                                                          "or table."),
    input_col: str | None = typer.Option(None, "--input-col", help="Input tokens column."),
    output_col: str | None = typer.Option(None, "--output-col", help="Output tokens column."),
    time_col: str | None = typer.Option(None, "--time-col", help="Arrival time column."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    dtype: str = typer.Option("bfloat16", "--dtype"),
    tp: int | None = typer.Option(None, "--tp", min=1, help="Tensor parallelism: the model "
                                  "over the first N visible GPUs (offline: vllm, vllm-eager, "
                                  "hf-eager: one process a GPU; online: --serve vllm), those "
                                  "measured. With --endpoint: measure the first N (default: "
                                  "every visible GPU)."),
    idle_s: float = typer.Option(5.0, "--idle-s", min=0, help="Idle power measured first (s)."),
    warmup: str | None = typer.Option(None, "--warmup", help="Offline: which batches run "
                                      "once before their measured run, outside the replay's "
                                      "energy: first (the default), each (as each profile "
                                      "point runs its shape first; each batch's first run "
                                      "kept as 'cold'), or none."),
    engine_option: list[str] | None = typer.Option(None, "--engine-option",
                                                   help="key=value passed to the engine."),
    endpoint: str | None = typer.Option(None, "--endpoint", help="Online: an OpenAI-"
                                        "compatible server (http://HOST:PORT) serving the "
                                        "model; this host's GPUs are measured."),
    serve: str | None = typer.Option(None, "--serve", help="Online: start vLLM's OpenAI "
                                     "server here (vllm or vllm-eager) for the run and stop "
                                     "it after, or serve in process (hf-paged); random "
                                     "weights unless --weights."),
    weights: Path | None = typer.Option(None, "--weights", help="Online with --serve: a "
                                        "checkpoint directory instead of random weights."),
    served_model: str | None = typer.Option(None, "--served-model",
                                            help="Online: the model's name on the server "
                                                 "(default: --model)."),
    rate: float | None = typer.Option(None, "--rate", help="Online: Poisson arrivals at this "
                                                           "many requests a second."),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1,
                                           help="Online: N requests in flight, each client "
                                                "sending its next when one ends."),
    time_scale: float = typer.Option(1.0, "--time-scale", help="Online, the trace's own "
                                     "arrivals (the default): 2 sends them twice as fast."),
    max_requests: int | None = typer.Option(None, "--max-requests", min=1,
                                            help="Online: send at most N requests."),
    duration: float | None = typer.Option(None, "--duration", min=0.001,
                                          help="Online: send no request after S seconds."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.001,
                                  help="Online: seconds a request may wait for its next "
                                       "data."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env",
                                    help="Online: the environment variable holding the "
                                         "server's API key, if it needs one (never printed "
                                         "or stored)."),
    steady_inflight: int | None = typer.Option(None, "--steady-inflight", min=1,
                                               help="Online: the steady state is while at "
                                                    "least N requests are in flight (default "
                                                    "with --concurrency: N)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
):
    """Replay a trace. Offline: its requests with their own lengths in static batches, the
    energy of the whole run measured, beside the estimate for the same requests and its error.
    Online: the requests sent to an OpenAI-compatible server at the trace's times, a Poisson
    rate or a fixed concurrency, streamed; energy, latency percentiles and throughput.
    """
    serving = {"endpoint": endpoint, "serve": serve, "weights": weights,
               "served_model": served_model, "rate": rate,
               "concurrency": concurrency, "time_scale": time_scale,
               "max_requests": max_requests, "duration": duration, "timeout": timeout,
               "api_key_env": api_key_env, "steady_inflight": steady_inflight, "tp": tp}
    from infergy.engines import EngineError, UnknownEngineError, engine_class, new_engine
    from infergy.engines.decoding import Decoding
    from infergy.estimate import (
        EstimateError,
        MissingPoints,
        load_card_profile,
        load_profile,
        shipped_profiles,
    )
    from infergy.models import UnknownModelError, get_model
    from infergy.models.gpus import UnknownGpuError
    from infergy.run.parallel import ParallelError, check_tp, check_tp_gpus
    from infergy.run.replay import (
        BATCHINGS,
        WARMUPS,
        ReplayError,
        plan_binned,
        plan_natural,
        replay_offline,
        select_requests,
    )
    from infergy.run.servers import SERVE_CHOICES
    from infergy.store import Store, StoreError
    from infergy.workloads import BinGrid, TraceError, get_trace

    if mode not in ("offline", "online"):
        raise _fail(f"--mode must be offline or online, got {mode!r}")
    kinds = [b.strip() for b in batching.split(",") if b.strip()]
    if not kinds or any(b not in BATCHINGS for b in kinds):
        raise _fail(f"--batching must be binned, natural or both, got {batching!r}")
    if warmup is not None and mode == "online":  # None: not given, so offline's default
        raise _fail("--warmup: for --mode offline (online, the requests go to a server as "
                    "they arrive: there are no batches to run first)")
    warmup = "first" if warmup is None else warmup
    if warmup not in WARMUPS:
        raise _fail(f"--warmup must be {', '.join(WARMUPS)}, got {warmup!r}")
    decoding = Decoding.parse("greedy")
    try:
        spec = get_model(model)
        engine_cls = engine_class(engine)
        if mode == "offline":  # online, the server is the engine
            engine_cls.check_support(spec, decoding)
        runs = engine_cls if mode == "offline" else engine_class(serve) \
            if serve in SERVE_CHOICES else None
        if runs is not None:  # with --endpoint, --tp only says which GPUs to measure
            check_tp(tp or 1, spec, runs)
        if mode == "online":  # offline, once the device is known (a CPU run counts none)
            check_tp_gpus(tp or 1)
        workload = get_trace(trace, fmt=fmt, input_col=input_col, output_col=output_col,
                             time_col=time_col)
        grid = BinGrid.named("paper")
        binned = grid.assign(workload.input_tokens, workload.output_tokens)
        requests = select_requests(binned, sample, seed)
        if not len(requests):
            raise ReplayError(f"{workload.name}: none of its {len(workload)} requests falls "
                              f"inside the study's bins")
        empty = int(((workload.input_tokens[requests] < 1)
                     | (workload.output_tokens[requests] < 1)).sum())
        if empty:
            raise ReplayError(f"{empty} of the requests have no input or no output tokens: "
                              f"drop them from {trace}")
    except (UnknownModelError, UnknownEngineError, EngineError, TraceError,
            ReplayError, ParallelError) as e:
        raise _fail(str(e)) from None
    if mode == "online":  # --tp None there: an --endpoint's GPUs are every visible one
        return _online(workload, requests, spec, serving, sample, seed, db, idle_s, as_json)
    tp = tp or 1
    try:
        device = _torch_device(device, tp)
        # The card this replay runs on (as NVML names it; none on a CPU): its profile, not
        # another card's, by default: a profile's B = max is its own card's.
        here = _cards_here(device, tp) if gpu is None else []
        stores = profile or shipped_profiles()  # a missing one: the store's own error
        prof, why_none = None, None
        try:
            prof = (load_card_profile(stores, model, engine, here[0], shipped=not profile)
                    if here else load_profile(stores, model, engine, gpu))
        except MissingPoints as e:
            why_none = str(e)
        estimator = _Estimator(workload, requests, grid, prof) if prof else None
        if estimator is not None and estimator.missing:
            why_none = estimator.missing
            prof = estimator = None
        if prof is None and batch is None:
            raise ReplayError(f"no profile to take B from ({why_none}); give --batch B")
        bins_b = (lambda edge: prof.points[edge]["batch"]) if prof else (lambda edge: batch)
        by_bin = plan_binned(workload, binned, requests, bins_b)
        natural_b = batch or min(bins_b(b.bin) for b in by_bin)  # fits the longest requests
        plans = {kind: by_bin if kind == "binned" else plan_natural(workload, requests,
                                                                    natural_b)
                 for kind in kinds}
        for kind, batches in plans.items():  # a static batch holds its longest of each
            too_long = [b for b in batches
                        if max(b.input_tokens) + b.generated_per_prompt > spec.max_context]
            if too_long:
                raise ReplayError(
                    f"{len(too_long)} {kind} batches need more than {model}'s context of "
                    f"{spec.max_context} tokens (longest prompt + longest output), e.g. "
                    f"{max(too_long[0].input_tokens)} + {too_long[0].generated_per_prompt}: "
                    f"choose a model with a longer context, or a smaller --batch")
        options = _options(engine_option)
        # One process a GPU (hf-eager): this command runs again as `tp` ranks, each making
        # the same plan (the trace, the profile, --sample and --seed decide it; checked once
        # they meet); rank 0 alone measures, records and speaks.
        split, rank, speaks = _process_of(tp, engine_cls)
        store = Store(db) if db is not None and speaks else None  # before any GPU work
    except (ReplayError, EstimateError, StoreError, UnknownGpuError, ParallelError) as e:
        raise _fail(str(e)) from None
    if split and rank is None:  # the launching process: every check above passed once
        raise _launch(tp, store)

    from infergy.run.point import run_metadata
    from infergy.run.sweep.worker import device_identity

    m, ranks = _run_meter(device, tp, idle_s, rank)
    results = []
    with m:
        if ranks is not None:
            try:
                ranks.agree([(kind, [b.requests for b in batches])
                             for kind, batches in plans.items()], "the replay's batches")
            except ParallelError as e:
                raise _fail(str(e)) from None
        for u in m.unavailable if speaks else ():
            err.print(f"[dim]infergy: not measurable: {u.what}: {u.reason}[/]")
        cards = {s.info.model for s in m.gpus}
        if prof is not None and cards and cards != {prof.gpu}:
            err.print(f"[yellow]infergy: the profile was measured on {prof.gpu}, this replay "
                      f"runs on {', '.join(sorted(cards))}: the estimate's error mixes the "
                      f"cards[/]")
        try:
            eng = new_engine(engine_cls, spec, device=device, dtype=dtype, options=options,
                             tp=tp)
            eng = _told(eng, ranks)
            with _status(speaks, f"infergy: loading {model} in {engine} ..."):
                eng.load()
        except (EngineError, OSError, ValueError) as e:
            raise _fail(str(e)) from None
        def start_run():
            meta = run_metadata(m)
            return store.start_run(device=device_identity(meta), meta=meta,
                                   spec={"replay": trace, "mode": mode, "model": model,
                                         "engine": engine, "batching": kinds, "batch": batch,
                                         "sample": sample, "seed": seed, "warmup": warmup})

        # One process: each replay stored as it ends. Ranks store theirs at the end, run and
        # all: rank 0 may be stopped with the others (one failing alone), which would leave
        # a run begun and never ended.
        run = start_run() if store is not None and ranks is None else None
        try:
            for kind, batches in plans.items():
                with _status(speaks, f"infergy: {kind} replay ...") as st:
                    r = replay_offline(eng, m, workload, batches, decoding, batching=kind,
                                       seed=seed, warmup=warmup,
                                       progress=lambda n, total, k=kind: st.update(
                                           f"infergy: {k} replay, batch {n} of {total}"))
                r.estimate = {"none": f"the estimate is of one GPU's work (TP 1), this "
                                      f"replay ran over {tp}"} if tp > 1 else \
                    estimator.compare(r) if estimator else {"none": why_none}
                r.selection, r.tp = {"sample": sample, "seed": seed}, tp
                results.append(r)
                if run is not None:
                    store.add_replay(run, device_identity(r.provenance), r.to_dict())
                if r.status != "ok":
                    break
        finally:  # Ctrl-C ends a replay as a result, recorded with its batches
            eng.close()
            if store is not None:
                if ranks is not None and results:
                    run = start_run()
                    for r in results:
                        store.add_replay(run, device_identity(r.provenance), r.to_dict())
                if run is not None:
                    store.end_run(run, _run_status(results, len(plans)))
                store.close()
    if ranks is not None:  # after the meter's last edge
        ranks.close()
    if not speaks:  # rank 0 reports for all, its status the command's
        raise typer.Exit(0)
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in results], default=str))
    else:
        _print(results, workload.name, model, engine)
    if any(r.status == "interrupted" for r in results):
        raise typer.Exit(130)
    if any(r.status != "ok" for r in results):
        raise typer.Exit(1)


def _online(workload, requests, spec, serving: dict, sample: int | None, seed: int,
            db: Path | None, idle_s: float, as_json: bool) -> None:
    """`--mode online`: the requests sent to the endpoint, this host's GPUs measured."""
    import contextlib
    import os
    import tempfile

    import numpy as np

    from infergy.engines import EngineError
    from infergy.meter import open_meter
    from infergy.run.online import Endpoint, ServeError, arrival_times, serve_online
    from infergy.run.parallel import free_port
    from infergy.run.replay import request_prompt
    from infergy.run.servers import SERVE_CHOICES, ServerProcess, vllm_server
    from infergy.run.sweep.worker import device_identity
    from infergy.store import Store, StoreError

    s = serving
    if (s["endpoint"] is None) == (s["serve"] is None):
        raise _fail("--mode online needs --endpoint URL (an OpenAI-compatible server serving "
                    "the model) or --serve vllm (infergy starts one), not both")
    if s["weights"] is not None and s["serve"] is None:
        raise _fail("--weights: for --serve (a server given by --endpoint has its own)")
    if s["serve"] is not None and s["serve"] not in SERVE_CHOICES:
        raise _fail(f"--serve must be one of {', '.join(SERVE_CHOICES)}, got {s['serve']!r}")
    if s["serve"] is not None:
        s = {**s, "endpoint": f"http://127.0.0.1:{free_port()}"}
    if s["rate"] is not None and s["concurrency"] is not None:
        raise _fail("--rate and --concurrency: give one (or neither: the trace's own times)")
    try:
        endpoint = Endpoint(s["endpoint"], s["served_model"] or spec.name,
                            timeout_s=s["timeout"], api_key=os.environ.get(s["api_key_env"]))
        arrivals = None
        if s["concurrency"] is None:
            process = "poisson" if s["rate"] is not None else "trace"
            arrivals = arrival_times(workload, requests, process, rate=s["rate"],
                                     time_scale=s["time_scale"], seed=seed)
            if process == "trace":  # sent in their arrival order
                requests = requests[np.argsort(workload.arrival_s[requests], kind="stable")]
        longest = int((workload.input_tokens[requests] + workload.output_tokens[requests])
                      .max())
        if longest > spec.max_context:
            raise ServeError(f"requests of up to {longest} tokens (input + output), past "
                             f"{spec.name}'s context of {spec.max_context}")
        if s["serve"] is None:
            endpoint.check()  # the server answers and serves the model, before any work
        label = (f"concurrency {s['concurrency']}" if s["concurrency"] is not None else
                 f"poisson {s['rate']:g}/s" if s["rate"] is not None else
                 f"trace x{s['time_scale']:g}")
        store = Store(db) if db is not None else None  # before any request
    except (ServeError, StoreError) as e:
        raise _fail(str(e)) from None
    # The GPUs measured: a server started here uses the first --tp (1); one given by
    # --endpoint, the first --tp where given, else every visible GPU (its own are unknown).
    limit = s["tp"] if s["serve"] is None else s["tp"] or 1
    with err.status(f"infergy: measuring idle power for {idle_s:g} s ..."):
        m = open_meter(limit=limit, idle_s=idle_s)
    with m, contextlib.ExitStack() as stack:
        for u in m.unavailable:
            err.print(f"[dim]infergy: not measurable: {u.what}: {u.reason}[/]")
        server = None
        if s["serve"] == "hf-paged":  # in process: its load and cache set-up measured
            window = m.start("server start")
            try:
                with err.status("infergy: loading hf-paged ..."):
                    endpoint = _paged_server(spec, s, workload, requests)
                stack.callback(endpoint.engine.close)
                stack.callback(endpoint.close)
            except (EngineError, OSError, ValueError) as e:
                raise _fail(str(e)) from None
            finally:
                (started,) = m.stop(window)
        elif s["serve"] is not None:  # after the idle power: the server's start is measured
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="infergy-")))
            command = vllm_server(spec, kind=s["serve"], port=int(s["endpoint"].rsplit(
                ":", 1)[1]), served_name=endpoint.model, weights=s["weights"], folder=folder,
                max_model_len=longest, tp=s["tp"] or 1)
            log = Path(tempfile.mkstemp(prefix="infergy-server-", suffix=".log")[1])
            window = m.start("server start")
            try:
                with err.status(f"infergy: starting {s['serve']}'s server (log: {log}) ..."):
                    server = stack.enter_context(ServerProcess(command, s["endpoint"],
                                                               log_path=log))
                endpoint.check()
            except ServeError as e:
                raise _fail(str(e)) from None
            finally:
                (started,) = m.stop(window)
        with err.status(f"infergy: serving {workload.name} ({label}) ...") as st:
            result = serve_online(
                endpoint, m, workload, requests,
                lambda r: request_prompt(spec, int(workload.input_tokens[r]), seed, r),
                arrivals=arrivals, concurrency=s["concurrency"], label=label,
                max_requests=s["max_requests"], duration_s=s["duration"],
                steady_inflight=s["steady_inflight"],
                progress=lambda n, total: st.update(
                    f"infergy: serving {workload.name} ({label}): {n} of {total} answered"))
        result.selection, result.served_by = {"sample": sample, "seed": seed}, s["serve"]
        result.tp = len(m.gpus) if s["serve"] is None else s["tp"] or 1
        if s["serve"] == "hf-paged":
            result.server = {"in_process": "hf-paged", "start_energy_j": started.energy_j,
                             "start_time_s": started.duration_s}
        if server is not None:
            result.server = {"command": command, "ready_s": server.ready_s, "log": str(log),
                             "start_energy_j": started.energy_j,
                             "start_time_s": started.duration_s}
            if server.process.poll() is not None:
                err.print(f"[red]infergy: the server exited during the run; its log "
                          f"({log}) ends:[/]\n{server.log_tail()}")
    if store is not None:
        with store:
            device = device_identity(result.provenance)
            run = store.start_run(device=device,
                                  meta=result.provenance,
                                  spec={"replay": workload.name, "mode": "online",
                                        "endpoint": result.engine, **{
                                            k: v for k, v in s.items()
                                            if k not in ("endpoint", "api_key_env")}})
            store.add_replay(run, device, result.to_dict())
            store.end_run(run, "finished" if result.status == "ok" else "interrupted")
    if as_json:
        out.print_json(json.dumps(result.to_dict(), default=str))
    else:
        _print_online(result)
    if result.status != "ok":
        raise typer.Exit(130)


def _paged_server(spec, s: dict, workload, requests):
    """hf-paged loaded here, its batch manager started for the run's largest shape."""
    from infergy.engines import engine_class
    from infergy.engines.paged import PagedServer

    engine = engine_class("hf-paged")(spec, device=_torch_device("auto"),
                                      weights=s["weights"])
    engine.load()
    return PagedServer(engine, max_batch=s["concurrency"] or s["steady_inflight"] or 64,
                       max_input=int(workload.input_tokens[requests].max()),
                       max_output=int(workload.output_tokens[requests].max()),
                       timeout_s=s["timeout"])


def _print_online(r) -> None:
    from infergy.cli.app import _fmt

    table = Table(title=f"{r.trace} served online by {r.engine} ({r.batching})",
                  title_justify="left")
    table.add_column("")
    table.add_column("whole run", justify="right")
    table.add_column("steady state", justify="right")
    st = r.steady if r.steady and "none" not in r.steady else {}
    failed = ", ".join(f"{n} {why}" for why, n in r.failed.items()) or "none"
    table.add_row("requests", f"{r.completed} of {r.requests} (failed: {failed})", "")
    table.add_row("time", f"{r.time_s:.1f} s", f"{st['time_s']:.1f} s" if st else "-")
    table.add_row("GPU energy", _fmt(r.energy_j, "J", 4), _fmt(st.get("energy_j"), "J", 4))
    table.add_row("J per output token", _fmt(r.j_per_output_token, "", 3),
                  _fmt(st.get("j_per_output_token"), "", 3))
    table.add_row("output tokens / s", _fmt(r.throughput_tok_s, "", 4), "")
    table.add_row("no request in flight", "-" if r.idle_share is None
                  else f"{r.idle_share:.0%}", "")
    run_s = sum(r.inflight_s.values())
    mean = sum(n * t for n, t in r.inflight_s.items()) / run_s if run_s else None
    table.add_row("requests in flight, mean", "-" if mean is None else f"{mean:.1f}", "")
    for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"),
                      ("e2e_s", "end to end")):
        p = r.latency.get(key)
        table.add_row(f"{name} p50 / p90 / p99", "-" if not p else " / ".join(
            f"{p[q] * 1000:.1f}" for q in ("p50", "p90", "p99")) + " ms", "")
    out.print(table)
    notes = [f"stopped: {r.stopped}"] if r.stopped else []
    if r.request_form.get("fields") == "openai":
        notes.append("the server takes no exact-length fields (vLLM's min_tokens, ignore_eos): "
                     "a request may end before its own output length")
    if r.request_form.get("prompt") == "text":
        notes.append("the server takes text prompts: sent as the words of infergy's synthetic "
                     "tokenizer, exact only for a server running it (--serve, random weights)")
    if r.energy_j is None:
        notes.append(f"no energy measured: {r.energy_reason}")
    if r.steady and "none" in r.steady:
        notes.append(f"no steady state: {r.steady['none']}")
    for note in notes:
        err.print(f"infergy: {note}")
    out.print("[dim]steady state: the stretches of the run with its level of requests in "
              "flight, summed; its J per output token counts the tokens streamed inside them[/]")


def _cards_here(device: str, tp: int) -> list[str]:
    """The models (NVML names) of the GPUs a replay on `device` over `tp` GPUs runs on; none
    on a CPU, or where NVML cannot list them."""
    if device != "cuda":
        return []
    from infergy.meter.nvml import visible_gpu_models

    return visible_gpu_models(tp)


def _run_status(results, planned: int) -> str:
    statuses = {r.status for r in results}
    if statuses <= {"ok"} and len(results) == planned:
        return "finished"
    return "failed" if statuses & {"failed", "oom"} else "interrupted"


class _Estimator:
    """The estimator on the replayed requests, from the profile that gave the binned B."""

    def __init__(self, workload, requests, grid, profile):
        from infergy.estimate import MissingPoints, estimate
        from infergy.workloads import Trace

        sub = Trace(workload.name, workload.input_tokens[requests],
                    workload.output_tokens[requests])
        self.profile, self.missing, self.estimate = profile, None, None
        try:
            self.estimate = estimate(sub, grid.assign(sub.input_tokens, sub.output_tokens),
                                     profile)
        except MissingPoints as e:
            self.missing = str(e)

    def compare(self, result) -> dict:
        e = self.estimate
        figures = {"binned_j": e.energy_j, "whole_batches_j": e.energy_whole_batches_j,
                   "interpolated_j": e.interpolated_j}
        measured = result.energy_j if result.status == "ok" else None
        return {"profile_gpu": self.profile.gpu, "profiles": self.profile.sources, **figures,
                "errors": {k.removesuffix("_j"): (None if v is None or not measured
                                                  else v / measured - 1)
                           for k, v in figures.items()}}


def _print(results, trace: str, model: str, engine: str) -> None:
    def kj(joules: float | None) -> str:
        return "n/a" if joules is None else f"{joules / 1000:.4g}"

    # Without the outer border: its nine columns fit a terminal of 80. A replay that stopped
    # early is starred, its status in the notes below: in the cell it would cut it short.
    table = Table(title=f"{trace} replayed offline on {model}, {engine}", title_justify="left",
                  show_edge=False)
    for col in ("batching", "req.", "time", "pad", "kJ", "est. kJ", "error", "whole",
                "interp."):
        table.add_column(col, justify="left" if col == "batching" else "right", no_wrap=True)
    for r in results:
        est = r.estimate or {}
        errors = est.get("errors") or {}
        generated = r.output_tokens + r.padding_tokens
        table.add_row(
            r.batching + ("" if r.status == "ok" else "*"), str(r.requests),
            f"{r.time_s:.1f} s",
            f"{r.padding_tokens / generated:.0%}" if generated else "-",
            kj(r.energy_j), kj(est.get("binned_j")),
            _pct(errors.get("binned")), _pct(errors.get("whole_batches")),
            _pct(errors.get("interpolated")))
    out.print(table)
    notes = []
    for r in results:
        if r.energy_j is None:
            notes.append(f"no energy measured: {r.energy_reason}")
        if r.status != "ok":
            notes.append(f"{r.batching}*: {r.status} after {len(r.batches)} batches; its row "
                         f"is of those" + (f" ({r.error})" if r.error else ""))
        if r.estimate and r.estimate.get("none"):
            notes.append(f"no estimate: {r.estimate['none']}")
    for note in dict.fromkeys(notes):
        err.print(f"infergy: {note}")
    out.print("[dim]req.: requests replayed; pad: generated tokens past a request's own "
              "length (static batches); kJ: GPU energy of the whole replay; est.: the estimate "
              "by the study's formula (N / B) for the same requests; error: estimate / measured - "
              "1; whole: the error with every partial batch charged as a full one; interp.: "
              "the error of infergy's interpolation[/]")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"
