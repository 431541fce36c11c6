"""The HTTP client of an online run: an OpenAI-compatible server's `/v1/completions`, streamed
over aiohttp (as `vllm bench serve` does), every request of a run in flight on one event loop
and one connection pool, without a thread of its own.

An endpoint of `infergy.run.online.serve_online` has `model`, `url`, `timeout_s`, an async
context `session()` that a run's requests are sent inside, and `async stream(prompt,
output_tokens, on_chunk)`; `infergy.run.servers.PagedServer` is the other one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # aiohttp is imported where a run sends requests: every command
    import aiohttp  # would pay its 0.15 s start otherwise


class ServeError(ValueError):
    """An online run that cannot be made as asked; raised before any request is sent."""


class RequestFailed(RuntimeError):
    """One request that did not complete: `kind` is http, server, short, connection, timeout,
    cut off or malformed."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Endpoint:
    """An OpenAI-compatible server's `/v1/completions`, streamed. `url` is the server's base
    (a trailing /v1 is taken off); credentials in it are never shown (a key goes in
    `api_key`, sent as a bearer token)."""

    def __init__(self, url: str, model: str, *, timeout_s: float = 60.0,
                 api_key: str | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServeError(f"--endpoint {url!r}: expected http://HOST:PORT or https://...")
        if timeout_s <= 0:
            raise ServeError(f"--timeout must be positive, got {timeout_s:g}")
        self.model, self.timeout_s = model, timeout_s
        base = parts.path.rstrip("/").removesuffix("/v1")
        self.url = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else "") + base  # shown: no credentials
        # where requests go: the host as written (an IPv6 one keeps its brackets)
        self._root = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{base}"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"  # never printed or stored
        # What the server takes, found by `check`: vLLM's exact-length fields (min_tokens,
        # ignore_eos, return_token_ids) or plain OpenAI ones; token ids or text as the prompt.
        self.fields, self.prompt_format = "vllm", "ids"
        self._session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Endpoint]:
        """One connection pool for the requests sent inside: no limit on connections (as
        many as requests in flight), `timeout_s` on connecting and on every read, none on a
        whole stream. Straight to the server: no proxy from the environment."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s,
                                        sock_read=self.timeout_s)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=timeout, headers=self._headers) as session:
            outer, self._session = self._session, session
            try:
                yield self
            finally:
                self._session = outer

    def check(self) -> None:
        """Before any work: a one-token request, which finds what the server takes (vLLM's
        exact-length fields or plain OpenAI ones, token ids or text) and that it serves
        `model`. ServeError otherwise, naming the models it serves where it lists them."""
        run_to_end(self._check())

    async def _check(self) -> None:
        async with self.session():
            for _ in range(3):
                try:
                    await self.stream([1, 2, 3], 1, lambda *_: None)
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
                        raise ServeError(f"{self.url} does not serve {self.model!r}"
                                         f"{await self._listed()}: give --served-model NAME "
                                         f"({text})") from None
                    else:
                        raise ServeError(f"{self.url}: a test request failed: {text}") from None
            raise ServeError(f"{self.url}: no request form it accepts")

    def model_root(self) -> str | None:
        """Where the server loads the model from (`root` of its entry in /v1/models, as vLLM
        gives it), or None where it does not say."""
        return run_to_end(self._model_root())

    async def _model_root(self) -> str | None:
        import aiohttp

        async with self.session():
            try:
                async with self._session.get(f"{self._root}/v1/models") as response:
                    models = json.loads(await response.read()).get("data") or []
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, AttributeError):
                return None
        return next((m.get("root") for m in models if isinstance(m, dict)
                     and m.get("id") == self.model), None)

    async def _listed(self) -> str:
        """`(it serves a, b)` from /v1/models, where the server lists them."""
        import aiohttp

        try:
            async with self._session.get(f"{self._root}/v1/models") as response:
                served = [m.get("id") for m in json.loads(await response.read()).get(
                    "data") or []]
            return f" (it serves {', '.join(map(str, served))})" if served else ""
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, AttributeError):
            return ""

    async def stream(self, prompt: list[int], output_tokens: int,
                     on_chunk: Callable[..., None]) -> int:
        """Send one request and read its stream, calling `on_chunk(tokens, at)` at every
        chunk that carries output, `at` the perf_counter time its bytes were read; the output
        tokens the server reports (or the chunks' own). Inside `session()`, or in a session
        of its own."""
        if self._session is None:
            async with self.session():
                return await self.stream(prompt, output_tokens, on_chunk)
        import aiohttp  # loaded by session(): a look-up

        request = {"model": self.model, "max_tokens": output_tokens, "temperature": 0.0,
                   "stream": True, "stream_options": {"include_usage": True},
                   # token ids, or as text the words of infergy's synthetic tokenizer
                   "prompt": prompt if self.prompt_format == "ids" else " ".join(
                       f"t{i}" for i in prompt)}
        if self.fields == "vllm":  # exactly the asked length; each chunk's tokens counted
            request.update(min_tokens=output_tokens, ignore_eos=True, return_token_ids=True)
        try:
            async with self._session.post(f"{self._root}/v1/completions",
                                          data=json.dumps(request)) as response:
                if response.status != 200:
                    text = (await response.content.read(300)).decode(errors="replace").strip()
                    raise RequestFailed("http", f"HTTP {response.status}: {text}")
                tokens, usage = await _read_events(response, on_chunk)
        except TimeoutError:  # aiohttp's read and connect timeouts included
            raise RequestFailed("timeout", f"no data for {self.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as err:
            cause = getattr(err, "os_error", None) or err  # the refusal, not aiohttp's wrapper
            said = (f"[Errno {cause.errno}] {os.strerror(cause.errno)}"  # as the OS says it
                    if isinstance(cause, OSError) and cause.errno else str(cause))
            raise RequestFailed("connection", f"{type(cause).__name__}: {said}") from None
        except (ValueError, AttributeError, TypeError) as err:  # JSON errors included
            raise RequestFailed("malformed", f"a malformed chunk: {err}") from None
        got = usage if usage is not None else tokens
        if got < output_tokens and self.fields == "vllm":  # lengths were enforced
            raise RequestFailed("short", f"{got} of {output_tokens} tokens")
        return got


async def _read_events(response: aiohttp.ClientResponse,
                       on_chunk: Callable[..., None]) -> tuple[int, int | None]:
    """The server-sent events of a completion stream, read as their bytes arrive: the output
    tokens its chunks carried and the count its usage reported (None without one)."""
    tokens, usage, done = 0, None, False
    async with contextlib.aclosing(_lines(response)) as lines:
        async for raw, at in lines:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                return tokens, usage
            event = json.loads(payload)
            if event.get("error"):  # vLLM reports a failure mid-stream, then [DONE]
                raise RequestFailed("server", f"error mid-stream: {event['error']}")
            if event.get("usage"):
                usage = event["usage"].get("completion_tokens")
            for choice in event.get("choices") or []:
                ids = choice.get("token_ids")
                n = len(ids) if isinstance(ids, list) else 1 if choice.get("text") else 0
                if n:
                    tokens += n
                    on_chunk(n, at)
                done = done or choice.get("finish_reason") is not None  # no [DONE] sent
    if not done:
        raise RequestFailed("cut off", f"the stream ended after {tokens} tokens without "
                                       f"[DONE] or a finish reason")
    return tokens, usage


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[bytes, float]]:
    """The body's lines, each with the perf_counter time its last bytes were read (however
    long a line is: no limit of a line reader's buffer)."""
    buffer = b""
    async for data in response.content.iter_any():
        at = time.perf_counter()
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            yield line, at
    if buffer:
        yield buffer, time.perf_counter()


def run_to_end(coroutine):
    """What `coroutine` returns, run on an event loop of its own: this thread's, or where
    this thread already runs one (a notebook), a thread's."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def allow_connections(n: int) -> None:
    """Raise this process's limit of open files (its soft limit, up to the hard one) so that
    `n` connections can be open at once besides what it already holds."""
    try:
        import resource
    except ImportError:  # not on this platform: its own limit stands
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (
                want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
