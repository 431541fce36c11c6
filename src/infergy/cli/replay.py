"""`infergy replay`: a trace's own requests run through an engine, the energy measured, and the
estimator's figure for the same requests beside it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from infergy.cli.app import (
    MODEL_HELP,
    LogsToStderr,
    app,
    argv,
    err,
    fail,
    fmt,
    idle_seconds,
    note,
    out,
    status,
)
from infergy.engines import Decoding, EngineError, UnknownEngineError, engine_class
from infergy.estimate import EstimateError, predict_replay, replay_estimate
from infergy.meter import visible_gpu_models
from infergy.models import UnknownGpuError, UnknownModelError, get_model
from infergy.plan import (
    ParallelError,
    ReplayError,
    check_tp,
    check_tp_gpus,
    plan_replay,
    replay_options,
    replay_requests,
)
from infergy.run import (
    SERVE_CHOICES,
    OfflineReplay,
    RunError,
    ServeError,
    Serving,
    engine_options,
    replay_online,
    replay_trace,
    torch_device,
)
from infergy.store import StoreError
from infergy.workloads import BinGrid, TraceError, get_trace


@app.command()
def replay(
    ctx: typer.Context,
    trace: str = typer.Option(..., "--trace", "-t", help="A built-in trace or a trace file."),
    mode: str = typer.Option("offline", "--mode", help="offline (static batches through an "
                                                       "engine) or online (an HTTP server)."),
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
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
    idle_s: float = typer.Option(5.0, "--idle-s", callback=idle_seconds,
                                 help="Idle power measured first (s)."),
    warmup: str | None = typer.Option(None, "--warmup", help="Offline: which batches run "
                                      "once before their measured run, outside the replay's "
                                      "energy: first (the default), each (as each profile "
                                      "point runs its shape first; each batch's first run "
                                      "kept as 'cold'), or none."),
    engine_option: list[str] | None = typer.Option(None, "--engine-option",
                                                   help="key=value passed to the engine "
                                                        "(online: to the vLLM server started "
                                                        "by --serve, max_num_seqs=16 as "
                                                        "--max-num-seqs 16)."),
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
    serving = Serving(endpoint=endpoint, serve=serve, weights=weights,
                      served_model=served_model or (model if "/" in model else None),  # an HF id
                      rate=rate, concurrency=concurrency,
                      time_scale=time_scale, max_requests=max_requests, duration=duration,
                      timeout=timeout, api_key_env=api_key_env,
                      steady_inflight=steady_inflight, tp=tp)
    online_only = [name for name, given in (
        ("--endpoint", endpoint is not None), ("--serve", serve is not None),
        ("--rate", rate is not None), ("--concurrency", concurrency is not None),
        ("--time-scale", time_scale != 1)) if given]
    if mode == "offline" and online_only:  # else ignored, silently
        raise fail(f"{', '.join(online_only)}: for --mode online (offline, the requests run "
                   f"in batches through the engine, not at arrival times)")
    try:
        kinds, warmup = replay_options(mode, batching, warmup)
        spec = get_model(model)
        model = spec.name  # a Hugging Face id: its catalog name
        engine_cls = engine_class(engine)
        if mode == "offline":  # online, the server is the engine
            engine_cls.check_support(spec, Decoding.parse("greedy"))
        runs = engine_cls if mode == "offline" else engine_class(serve) \
            if serve in SERVE_CHOICES else None
        if runs is not None:  # with --endpoint, --tp only says which GPUs to measure
            check_tp(tp or 1, spec, runs)
        if mode == "online":  # offline, once the device is known (a CPU run counts none)
            check_tp_gpus(tp or 1)
            serving.options = engine_options(engine_option or [])  # checked by replay_online
        workload = get_trace(trace, fmt=fmt, input_col=input_col, output_col=output_col,
                             time_col=time_col)
        binned, requests = replay_requests(workload, BinGrid.named("paper"), sample, seed,
                                           trace, spec)
    except (UnknownModelError, UnknownEngineError, EngineError, TraceError,
            ReplayError, ParallelError, RunError) as e:
        raise fail(str(e)) from None
    if mode == "online":  # --tp None there: an --endpoint's GPUs are every visible one
        return _online(workload, requests, spec, serving, sample, seed, db, idle_s, as_json,
                       profile)
    how = OfflineReplay(model, engine, device=device, tp=tp or 1, dtype=dtype,
                        engine_options=engine_option or [], idle_s=idle_s, seed=seed,
                        warmup=warmup, db=db, stored={
                            "replay": trace, "mode": mode, "model": model, "engine": engine,
                            "batching": kinds, "batch": batch, "sample": sample, "seed": seed,
                            "warmup": warmup})
    # With --json, standard output is the JSON alone: engines' log lines go to stderr.
    with LogsToStderr(as_json) as logs:
        results = _offline(ctx, workload, binned, requests, spec, how, kinds, batch, profile,
                           gpu, {"sample": sample, "seed": seed}, logs.status)
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in results], default=str))
    else:
        _print(results, workload.name, model, engine)
    if any(r.status == "interrupted" for r in results):
        raise typer.Exit(130)
    if any(r.status != "ok" for r in results):
        raise typer.Exit(1)


def _offline(ctx, workload, binned, requests, spec, how: OfflineReplay, kinds: list[str],
             batch: int | None, profile: list[Path] | None, gpu: str | None,
             selection: dict, show=status) -> list:
    """`--mode offline`: the replays of `requests`, each batching's B from the profile of the
    card this replay runs on (or `gpu`'s, or --batch), their estimate beside them."""
    try:
        how.device = torch_device(how.device, how.tp)
        # The card this replay runs on (as NVML names it; none on a CPU): its profile, not
        # another card's, by default: a profile's B = max is its own card's.
        here = _cards_here(how.device, how.tp) if gpu is None else []
        estimator, why_none = replay_estimate(workload, requests, BinGrid.named("paper"),
                                              how.model, how.engine, profile or None,
                                              here[0] if here else None, gpu)
        if estimator is None and batch is None:
            raise ReplayError(f"no profile to take B from: give --batch B, or measure one "
                              f"({why_none})")
        bins_b = (lambda edge: estimator.profile.points[edge]["batch"]) if estimator \
            else (lambda edge: batch)
        plans = plan_replay(workload, binned, requests, kinds, bins_b, spec, batch)
        # One process a GPU (hf-eager): this command runs again as `tp` ranks, each making
        # the same plan (the trace, the profile, --sample and --seed decide it; checked once
        # they meet); rank 0 alone measures, records and speaks.
        results = replay_trace(
            workload, plans, how, selection=selection,
            estimate=estimator.compare if estimator else lambda r: {"none": why_none},
            profile_gpu=estimator.profile.gpu if estimator else None, argv=argv(ctx),
            notes=note, status=show)
    except (ReplayError, EstimateError, StoreError, UnknownGpuError, ParallelError,
            RunError, EngineError) as e:
        raise fail(str(e)) from None
    if isinstance(results, int):  # launched the ranks, or a rank other than 0
        raise typer.Exit(results)
    return results


def _online(workload, requests, spec, serving: Serving, sample: int | None, seed: int,
            db: Path | None, idle_s: float, as_json: bool,
            profile: list[Path] | None = None) -> None:
    """`--mode online`: the requests sent to the endpoint, this host's GPUs measured."""
    try:
        with LogsToStderr(as_json) as logs:  # a server started here logs to stderr too
            logs.on()
            result = replay_online(workload, requests, spec, serving, sample=sample,
                                   seed=seed, db=db, idle_s=idle_s, notes=note,
                                   status=err.status)
    except (ServeError, StoreError, RunError) as e:
        raise fail(str(e)) from None
    measured = result.to_dict()
    predicted, why = (predict_replay(measured, spec.name, profile or None)
                      if result.status == "ok" and result.completed else (None, None))
    if as_json:
        simulated = {"simulated": predicted.to_dict() if predicted else {"none": why}}
        out.print_json(json.dumps({**measured, **simulated}, default=str))
    else:
        _print_online(result)
        _print_predicted(result, predicted, why)
    if result.status != "ok":
        raise typer.Exit(130)


def _print_predicted(r, predicted, why: str | None) -> None:
    """The simulator's prediction of the same requests at the same send times, beside what
    was measured."""
    if predicted is None:
        if why:
            err.print(f"infergy: no simulated estimate: {escape(why)}")
        return
    error = (f" ({predicted.energy_j / r.energy_j - 1:+.1%} against the measured)"
             if r.energy_j else "")
    p = predicted.latency()["ttft_s"] or {}
    out.print(f"Simulated (predicted, the step-cost model of {predicted.engine} on "
              f"{predicted.gpu}): {predicted.energy_j:.4g} J{error} in {predicted.time_s:.1f} "
              f"s, TTFT p50 {p.get('p50', float('nan')) * 1000:.1f} ms, idle "
              f"{predicted.idle_share:.0%}.")


def _print_online(r) -> None:
    table = Table(title=f"{r.trace} served online by {r.engine} ({r.batching})",
                  title_justify="left")
    table.add_column("")
    table.add_column("whole run", justify="right")
    table.add_column("steady state", justify="right")
    st = r.steady if r.steady and "none" not in r.steady else {}
    failed = ", ".join(f"{n} {why}" for why, n in r.failed.items()) or "none"
    table.add_row("requests", f"{r.completed} of {r.requests} (failed: {failed})", "")
    table.add_row("time", f"{r.time_s:.1f} s", f"{st['time_s']:.1f} s" if st else "-")
    table.add_row("GPU energy", fmt(r.energy_j, "J", 4), fmt(st.get("energy_j"), "J", 4))
    table.add_row("J per output token", fmt(r.j_per_output_token, "", 3),
                  fmt(st.get("j_per_output_token"), "", 3))
    table.add_row("output tokens / s", fmt(r.throughput_tok_s, "", 4), "")
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
    for text in notes:
        err.print(f"infergy: {escape(text)}")
    out.print("[dim]steady state: the stretches of the run with its level of requests in "
              "flight, summed; its J per output token counts the tokens streamed inside them[/]")


def _cards_here(device: str, tp: int) -> list[str]:
    """The models (NVML names) of the GPUs a replay on `device` over `tp` GPUs runs on; none
    on a CPU, or where NVML cannot list them."""
    if device != "cuda":
        return []
    return visible_gpu_models(tp)


def _print(results, trace: str, model: str, engine: str) -> None:
    def kj(joules: float | None) -> str:
        return "n/a" if joules is None else f"{joules / 1000:.4g}"

    # Without the outer border: its nine columns fit a terminal of 80. A replay that stopped
    # early is starred, its status in the notes below: in the cell it would cut it short.
    table = Table(title=f"{trace} replayed offline on {model}, {engine}", title_justify="left",
                  show_edge=False)
    for col in ("batching", "req.", "time", "pad", "kJ", "sim. kJ", "error", "study",
                "whole"):
        table.add_column(col, justify="left" if col == "batching" else "right", no_wrap=True)
    for r in results:
        est = r.estimate or {}
        errors = est.get("errors") or {}
        generated = r.output_tokens + r.padding_tokens
        table.add_row(
            r.batching + ("" if r.status == "ok" else "*"), str(r.requests),
            f"{r.time_s:.1f} s",
            f"{r.padding_tokens / generated:.0%}" if generated else "-",
            kj(r.energy_j), kj(est.get("simulated_j")),
            _pct(errors.get("simulated")), _pct(errors.get("binned")),
            _pct(errors.get("whole_batches")))
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
    for text in dict.fromkeys(notes):
        err.print(f"infergy: {escape(text)}")
    out.print("[dim]req.: requests replayed; pad: generated tokens past a request's own "
              "length (static batches); kJ: GPU energy of the whole replay; sim.: the same "
              "batches simulated over the step-cost model fitted to the profile (predicted); "
              "error: simulated / measured - 1; study: the error of the study's formula (N / "
              "B); whole: of it with every partial batch charged as a full one[/]")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"
