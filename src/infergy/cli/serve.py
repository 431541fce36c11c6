"""`infergy serve`: vLLM's OpenAI server started as `replay --serve` starts it (random weights
unless --weights), kept until Ctrl-C, so that several online replays share one start."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer

from infergy.cli.app import MODEL_HELP, app, err, fail, out, status
from infergy.engines import engine_class
from infergy.models import UnknownModelError, get_model
from infergy.plan import ParallelError, check_tp, check_tp_gpus
from infergy.run import SERVERS, RunError, ServeError, engine_options, started_server

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each stops the server, then infergy


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # even where SIGINT came ignored (a shell's background job)


@app.command()
def serve(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    engine: str = typer.Option("vllm", "--engine", "-e", help=f"{' or '.join(SERVERS)}."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="The port on 127.0.0.1."),
    tp: int = typer.Option(1, "--tp", min=1, help="Tensor parallelism: the first N GPUs."),
    max_model_len: int | None = typer.Option(None, "--max-model-len", min=1,
                                             help="The longest request, input and output "
                                             "(default: the model's context, at most 8192)."),
    weights: Path | None = typer.Option(None, "--weights", help="A checkpoint directory "
                                        "instead of random weights."),
    engine_option: list[str] | None = typer.Option(None, "--engine-option",
                                                   help="key=value for the server: "
                                                   "max_num_seqs=16 as --max-num-seqs 16."),
) -> None:
    """Start vLLM's OpenAI server on a model and keep it until Ctrl-C. Online replays sent to
    it (`infergy replay --mode online --endpoint URL`, on this host) share its start and record
    its command, so that the simulated run beside each uses its batch caps."""
    previous = {s: signal.signal(s, _stop) for s in STOPS}
    try:
        spec = get_model(model)
        if engine not in SERVERS:
            raise ServeError(f"--engine must be one of {', '.join(SERVERS)}, got {engine!r}")
        check_tp(tp, spec, engine_class(engine))
        check_tp_gpus(tp)
        options = engine_options(engine_option or [])
        with started_server(spec, engine, port=port, weights=weights, tp=tp,
                            max_model_len=max_model_len, options=options,
                            status=lambda text: status(True, text)) as server:
            out.print(f"serving {spec.name} at {server.url} ({engine}, ready in "
                      f"{server.ready_s:.0f} s; log: {server.log_path}); Ctrl-C stops it.\n"
                      f"  infergy replay -t TRACE -m {spec.name} --mode online --endpoint "
                      f"{server.url}", soft_wrap=True)
            while server.process.poll() is None:
                time.sleep(1)
            err.print(server.log_tail(), markup=False, highlight=False)
            raise fail(f"the server exited with status {server.process.returncode}", 1)
    except KeyboardInterrupt:
        err.print("infergy: the server is stopped")
    except (UnknownModelError, ParallelError, RunError, ServeError) as e:
        raise fail(str(e)) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
