"""A test double of an OpenAI-compatible server: `/v1/completions`, streamed, on loopback.

Nothing here is used by the product. It streams one chunk per requested token (`max_tokens`),
`chunk_s` apart (with its token ids, as vLLM's `return_token_ids`), then usage and [DONE];
`/v1/models` lists `models` (with the folder each is loaded from, where `roots` names one).
Some prompts misbehave, chosen by their length: `FAIL_LEN` answers HTTP 500, `STALL_LEN`
sends nothing for `stall_s`, `CUT_LEN` stops mid-stream without [DONE], `ERROR_LEN` sends an
error event mid-stream then [DONE] (as vLLM does), `SHORT_LEN` ends early with [DONE]. Every
request it saw is kept in `seen` (its JSON body); `/stats` answers the most requests it held
at once. Its backlog of connections takes a thousand at once.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAIL_LEN, STALL_LEN, CUT_LEN, ERROR_LEN, SHORT_LEN = 13, 14, 15, 16, 17


class FakeOpenAIServer:
    def __init__(self, chunk_s: float = 0.002, stall_s: float = 3.0, port: int = 0,
                 models: tuple[str, ...] = ("tiny",), roots: dict[str, str] | None = None):
        self.chunk_s, self.stall_s, self.models = chunk_s, stall_s, models
        self.roots = roots or {}
        self.seen: list[dict] = []
        self.in_flight = self.peak_in_flight = 0
        server = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # readiness (/health), the models served (as vLLM's), /stats
                answers = {"/health": {}, "/v1/models": {"data": [
                    {"id": m, **({"root": server.roots[m]} if m in server.roots else {})}
                    for m in server.models]}, "/stats": {
                    "peak_in_flight": server.peak_in_flight, "requests": len(server.seen)}}
                answer = answers.get(self.path)
                body = json.dumps(answer).encode() if answer else b""
                self.send_response(200 if answer is not None else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.seen.append({**body, "auth": self.headers.get("Authorization")})
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                self.counted = True
                try:
                    self._answer(body)
                finally:
                    self._leave()

            def _leave(self):
                """No longer in flight: before the last bytes go out (the client may send its
                next request the moment it reads them), or on any other way out."""
                with lock:
                    if self.counted:
                        server.in_flight -= 1
                        self.counted = False

            def _answer(self, body):
                length = len(body["prompt"])
                if body["model"] not in server.models:  # as vLLM answers
                    text = json.dumps({"error": {"message": f"The model `{body['model']}` "
                                                            f"does not exist."}}).encode()
                    self.send_response(404)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                if length == FAIL_LEN:
                    text = b'{"error": "simulated failure"}'
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                if length == STALL_LEN:
                    time.sleep(server.stall_s)
                    return
                tokens = body["max_tokens"]
                sent = tokens // 2 if length in (CUT_LEN, ERROR_LEN, SHORT_LEN) else tokens
                for n in range(sent):
                    time.sleep(server.chunk_s)
                    self._event({"choices": [{"index": 0, "text": f" t{n}",
                                              "token_ids": [n]}]})
                if length == CUT_LEN:
                    return
                if length == ERROR_LEN:
                    self._event({"error": {"message": "simulated engine failure"}})
                else:
                    self._event({"choices": [], "usage": {"completion_tokens": sent}})
                self._leave()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, payload):
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # many clients connecting at once wait, not retry

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":  # fake_openai_server.py PORT [DELAY_S [CHUNK_S [LIFETIME_S]]]
    import sys  # after LIFETIME_S serving, it exits with status 3

    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)  # a slow start-up
    chunk_s = float(sys.argv[3]) if len(sys.argv) > 3 else 0.002
    with FakeOpenAIServer(chunk_s=chunk_s, port=int(sys.argv[1])) as fake:
        print(f"serving on {fake.url}", flush=True)
        end = time.monotonic() + (float(sys.argv[4]) if len(sys.argv) > 4 else float("inf"))
        while time.monotonic() < end:
            time.sleep(0.1)
    sys.exit(3)
