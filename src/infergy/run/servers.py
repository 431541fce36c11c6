"""The servers of an online run that infergy starts: vLLM's OpenAI server (`infergy replay
--serve vllm`), its command run in a session of its own, waited on until `/health` answers,
stopped after the run, whatever happened; or hf-paged's continuous batching in this process
(`--serve hf-paged`). Start-up is measured apart, as an engine's load is."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from infergy.engines.decoding import Decoding
from infergy.engines.vllm import without_multicast
from infergy.run.client import RequestFailed, ServeError

if TYPE_CHECKING:  # the engine imports torch and transformers: only where a model runs
    from infergy.engines.paged import HFPaged

SERVERS = ("vllm", "vllm-eager")
# In the model folder of a server on random weights: how infergy started it (`served_by`,
# `command`), so that a replay sent to it (--endpoint) records what served it.
SERVER_RECORD = "infergy-server.json"
SERVE_CHOICES = (*SERVERS, "hf-paged")  # --serve: vLLM's OpenAI server, or hf-paged in process


class ServerProcess:
    """`with ServerProcess(command, url) as server:` the server answers at `url` inside."""

    def __init__(self, command: list[str], url: str, *, ready_timeout_s: float = 900.0,
                 log_path: Path | None = None, stop_timeout_s: float = 30.0):
        self.command, self.url = command, url.rstrip("/")
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self._log_file = None
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.ready_s: float | None = None  # seconds from start to the first healthy answer

    def __enter__(self) -> ServerProcess:
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="infergy-server-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log_file = self.log_path.open("wb")
        start = time.perf_counter()
        try:
            self.process = subprocess.Popen(self.command, stdout=self._log_file,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            self._log_file.close()
            program = next((a for a in self.command if a != "env" and "=" not in a),
                           self.command[0])  # past an `env NAME=VALUE` prefix
            raise ServeError(f"cannot start the server ({program}): {err}") from None
        try:
            self._wait_ready(start)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - start
        return self

    def _wait_ready(self, start: float) -> None:
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServeError(f"the server exited with status {code} before it answered; "
                                 f"its log ends:\n{self.log_tail()}")
            if self._healthy():
                return
            if time.perf_counter() - start > self.ready_timeout_s:
                raise ServeError(f"the server did not answer {self.url}/health within "
                                 f"{self.ready_timeout_s:g} s; its log ends:\n{self.log_tail()}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        """GET /health answers 200 (straight to the server: no proxy in between)."""
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
        try:
            conn.request("GET", f"{parts.path}/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Ctrl-C to the server's whole session, `stop_timeout_s` to end (a second Ctrl-C
        cuts it short), then a kill of whatever is left of the session (engine workers)."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGINT)
                self.process.wait(self.stop_timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired, KeyboardInterrupt):
            pass
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            if self._log_file is not None:
                self._log_file.close()

    def __exit__(self, *exc) -> None:
        self.stop()


def vllm_server(spec, *, kind: str = "vllm", port: int, served_name: str,
                weights: Path | None = None, dtype: str = "bfloat16",
                max_model_len: int | None = None, folder: Path, tp: int = 1,
                options: dict | None = None) -> list[str]:
    """The command of vLLM's OpenAI server for a catalog model: random weights (vLLM's dummy
    load format over the catalog's config, written to `folder` with a synthetic tokenizer) or
    a checkpoint; `vllm-eager` without CUDA graphs or compile. `options`: the server's own
    settings, `max_num_seqs=16` as `--max-num-seqs 16` (True: the flag alone; False:
    `--no-` the flag; a list or a dict as JSON)."""
    if weights is None:
        (folder / "config.json").write_text(json.dumps(spec.config))
        synthetic_tokenizer(spec, folder)
        model, extra = str(folder), ["--load-format", "dummy"]
    else:
        model, extra = str(weights), []
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
               "--dtype", dtype, "--seed", "0", "--max-model-len",
               str(max_model_len or min(spec.max_context, 8192)), *extra]
    if tp > 1:
        command += ["--tensor-parallel-size", str(tp)]
        settings = {}
        env = without_multicast(tp, settings)
        if env:  # in the command itself, so that the run records it
            command = ["env", *(f"{k}={v}" for k, v in env.items()), *command,
                       "--compilation-config", json.dumps(settings["compilation_config"])]
    for key, value in (options or {}).items():
        flag = key.replace("_", "-")
        command += ([f"--{flag}"] if value is True else [f"--no-{flag}"] if value is False else
                    [f"--{flag}", json.dumps(value) if isinstance(value, (dict, list))
                     else str(value)])
    command += ["--enforce-eager"] if kind == "vllm-eager" else []
    if weights is None:
        (folder / SERVER_RECORD).write_text(json.dumps({"served_by": kind, "command": command}))
    return command


def started_here(root: str | None) -> dict | None:
    """What a server that infergy started on this host recorded in its model folder (`root`,
    as the server lists it): {"served_by", "command"}; None for any other server."""
    if not root:
        return None
    try:
        record = json.loads((Path(root) / SERVER_RECORD).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and record.get("served_by") in SERVERS and isinstance(
        record.get("command"), list)
    return record if ok else None


def synthetic_tokenizer(spec, folder: Path) -> None:
    """A tokenizer of the model's vocabulary size written to `folder`: token i is the word
    `t<i>` (`<t<i>>` for the special ones), so any token id decodes. Random weights come
    without a tokenizer, and a server detokenizes what it streams, as it would a real
    model's text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    size = int(spec.config["vocab_size"])
    special = {k: spec.config[k + "_id"] for k in ("bos_token", "eos_token")
               if isinstance(spec.config.get(k + "_id"), int)}
    words = [f"<t{i}>" if i in special.values() else f"t{i}" for i in range(size)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)},
                                           unk_token=words[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=words[0], **{
        k: words[i] for k, i in special.items()}).save_pretrained(folder)


class PagedServer:
    """hf-paged's continuous batching as the server of an online run, in this process:
    requests join the running batch as they arrive, and each token's timestamp (transformers'
    `record_timestamps`, on the same perf_counter clock) gives the stream. The interface of
    `infergy.run.client.Endpoint`: `model`, `url`, `timeout_s`, `session()`, async
    `stream()`. Here `timeout_s` bounds a request's whole time, since no token is seen before
    it ends. One thread hands the batch manager's results to the requests' event loop."""

    def __init__(self, engine: HFPaged, *, max_batch: int, max_input: int, max_output: int,
                 timeout_s: float = 600.0):
        engine._start(max_batch, max_input, max_output, Decoding())  # sizes cache and graphs
        self.engine, self.manager = engine, engine._manager
        self.model, self.url, self.timeout_s = engine.spec.name, "in-process hf-paged", timeout_s
        self._waiting: dict[str, tuple] = {}  # request id -> (event loop, future)
        self._stopped: str | None = None  # why the batch manager stopped, once it has
        self._lock = threading.Lock()
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True)
        self._dispatcher.start()

    def _dispatch(self) -> None:
        while self.manager.is_running():
            result = self.manager.get_result(timeout=0.2)
            if result is not None and result.is_finished():
                with self._lock:
                    waiting = self._waiting.pop(result.request_id, None)
                if waiting is not None:
                    _settle(*waiting, result)
        with self._lock:  # stopped: every request still waiting fails now, not at its timeout
            self._stopped = ("the batch manager stopped: "
                             f"{self.manager.background_thread_status.fatal_error}")
            waiting, self._waiting = self._waiting, {}
        for loop, future in waiting.values():
            _settle(loop, future, RequestFailed("server", self._stopped))

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[PagedServer]:
        """Nothing to open: the batch manager runs from the start."""
        yield self

    async def stream(self, prompt: list[int], output_tokens: int, on_chunk) -> int:
        """Add one request to the running batch and wait for it, calling `on_chunk(1, at)`
        for each of its tokens (`at` when the manager produced it); its output tokens."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:  # registered before the request can finish
            if self._stopped:
                raise RequestFailed("server", self._stopped)
            request_id = self.manager.add_request(prompt, max_new_tokens=output_tokens,
                                                  record_timestamps=True)
            if request_id is None:
                raise RequestFailed("server", "the batch manager refused the request")
            self._waiting[request_id] = (loop, future)
        try:
            result = await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise RequestFailed("timeout", f"no answer in {self.timeout_s:g} s") from None
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
        if result.error is not None:
            raise RequestFailed("server", f"{result.error}")
        for at in result.timestamps or []:
            on_chunk(1, at)
        got = len(result.generated_tokens)
        if got < output_tokens:
            raise RequestFailed("short", f"{got} of {output_tokens} tokens")
        return got

    def close(self) -> None:
        self.engine._stop()
        self._dispatcher.join(5)


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future, outcome) -> None:
    """From another thread: `future` resolved with `outcome` (an exception: raised), unless it
    is done already (timed out, cancelled) or its event loop has ended."""

    def settle() -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(settle)
