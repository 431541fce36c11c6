"""Online serving on a CPU: arrival processes, and requests streamed from a test double of an
OpenAI-compatible server on loopback that also fails, stalls and cuts off, with a simulated
GPU measured over the run."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fake_openai_server import (
    CUT_LEN,
    ERROR_LEN,
    FAIL_LEN,
    SHORT_LEN,
    STALL_LEN,
    FakeOpenAIServer,
)
from infergy.run.online import Endpoint, ServeError, arrival_times, serve_online
from infergy.run.parallel import free_port
from infergy.workloads import Trace
from simulated import SimulatedGpu


def trace(inputs, outputs, times=None) -> Trace:
    return Trace("t", np.array(inputs, dtype=np.int64), np.array(outputs, dtype=np.int64),
                 None if times is None else np.array(times, dtype=float))


def prompts(t: Trace):
    return lambda r: list(range(1, int(t.input_tokens[r]) + 1))


def meter_of(make_meter):
    return make_meter([SimulatedGpu(power_w=100.0, update_s=1e-4)])


def test_arrivals_follow_the_trace_scaled_or_a_seeded_poisson_process():
    t = trace([8] * 4, [4] * 4, [10.0, 12.0, 11.0, 16.0])
    # Each request keeps its own time: the trace file need not be sorted by time.
    assert list(arrival_times(t, np.arange(4), "trace", time_scale=2.0)) == [0, 1, 0.5, 3]
    assert list(arrival_times(t, np.array([3, 2]), "trace")) == [5, 0]
    gaps = np.diff(arrival_times(trace([8] * 2001, [4] * 2001), np.arange(2001), "poisson",
                                 rate=50.0, seed=3))
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.1) and (gaps > 0).all()
    with pytest.raises(ServeError, match="no arrival times"):
        arrival_times(trace([8], [4]), np.arange(1), "trace")
    with pytest.raises(ServeError, match="--rate must be a positive"):
        arrival_times(t, np.arange(4), "poisson", rate=0)


def test_a_run_at_fixed_concurrency_streams_every_request_and_is_measured(make_meter):
    t = trace([8, 9, 10, 11, 12, 18, 19, 20], [20, 5, 12, 8, 30, 6, 9, 10])
    with FakeOpenAIServer(chunk_s=0.003) as server:
        endpoint = Endpoint(server.url, "tiny", timeout_s=5)
        result = serve_online(endpoint, meter_of(make_meter), t, np.arange(8), prompts(t),
                              concurrency=3, label="concurrency 3")
    assert result.status == "ok" and result.completed == result.requests == 8
    assert result.failed == {} and server.peak_in_flight <= 3
    assert result.output_tokens == sum(t.output_tokens)
    assert [b["max_tokens"] for b in sorted(server.seen, key=lambda b: len(b["prompt"]))] == \
        list(t.output_tokens)  # each request its own lengths, prompt as token ids
    assert all(b["stream"] and b["ignore_eos"] and b["min_tokens"] == b["max_tokens"]
               and b["return_token_ids"] for b in server.seen)
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        stats = result.latency[key]
        assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"], key
    assert result.latency["itl_s"]["n"] == sum(t.output_tokens) - 8
    assert result.energy_j == pytest.approx(100.0 * result.time_s, rel=0.05)
    assert result.j_per_output_token == pytest.approx(result.energy_j / result.output_tokens)
    assert result.throughput_tok_s == pytest.approx(result.output_tokens / result.time_s)
    steady = result.steady
    assert steady["inflight"] == 3 and 0 < steady["time_s"] < result.time_s
    assert 0 < steady["tokens"] < result.output_tokens
    assert steady["energy_j"] == pytest.approx(100.0 * steady["time_s"], rel=0.05)
    assert steady["j_per_output_token"] == pytest.approx(steady["energy_j"] / steady["tokens"])
    assert all(r.chunks == [] for r in result.records)  # summarized, not kept


def test_failed_stalled_and_cut_off_requests_are_counted_and_the_run_goes_on(make_meter):
    lengths = [8, FAIL_LEN, STALL_LEN, CUT_LEN, ERROR_LEN, SHORT_LEN, 9]
    t = trace(lengths, [6] * 7, [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    with FakeOpenAIServer(stall_s=3.0) as server:
        endpoint = Endpoint(server.url, "tiny", timeout_s=0.5)
        start = time.perf_counter()
        result = serve_online(endpoint, meter_of(make_meter), t, np.arange(7), prompts(t),
                              arrivals=arrival_times(t, np.arange(7), "trace"),
                              label="trace x1")
        took = time.perf_counter() - start
    assert took < 2.5  # the stalled request timed out; nothing waited for the server
    assert result.requests == 7 and result.completed == 2
    assert result.failed == {"http": 1, "timeout": 1, "cut off": 1, "server": 1, "short": 1}
    errors = {r.input_tokens: r.error for r in result.records}
    assert "HTTP 500" in errors[FAIL_LEN] and "without [DONE]" in errors[CUT_LEN]
    assert "simulated engine failure" in errors[ERROR_LEN]
    assert errors[SHORT_LEN] == "3 of 6 tokens"
    assert result.output_tokens == 12  # only the completed requests' tokens
    assert result.steady == {"none": result.steady["none"]}  # no level was given


def test_an_unreachable_server_fails_every_request_clearly(make_meter):
    t = trace([8, 9], [4, 4])
    endpoint = Endpoint("http://127.0.0.1:9", "tiny", timeout_s=1)
    result = serve_online(endpoint, meter_of(make_meter), t, np.arange(2), prompts(t),
                          concurrency=2, label="concurrency 2")
    assert result.failed == {"connection": 2} and result.completed == 0
    assert result.j_per_output_token is None


def test_max_requests_stops_the_run_and_says_so_and_the_api_key_stays_out(make_meter):
    t = trace([8] * 6, [3] * 6)
    with FakeOpenAIServer() as server:
        endpoint = Endpoint(server.url, "tiny", timeout_s=5, api_key="secret-key")
        result = serve_online(endpoint, meter_of(make_meter), t, np.arange(6), prompts(t),
                              arrivals=arrival_times(t, np.arange(6), "poisson", rate=200.0),
                              label="poisson 200/s", max_requests=4, steady_inflight=1)
    assert result.requests == 4 and result.stopped == "--max-requests 4 of 6"
    assert {b["auth"] for b in server.seen} == {"Bearer secret-key"}
    assert "secret-key" not in json.dumps(result.to_dict(), default=str)
    sent = sorted(r.sent_s for r in result.records if r.sent_s is not None)
    assert sent == sorted(sent) and sent[-1] < 1.0


def test_a_bad_endpoint_is_refused_before_any_request():
    with pytest.raises(ServeError, match="expected http://HOST:PORT"):
        Endpoint("localhost:8000", "tiny")
    with FakeOpenAIServer(models=("llama",)) as server:
        Endpoint(server.url + "/v1/", "llama").check()  # an OpenAI-style base URL is fine
        with pytest.raises(ServeError, match=r"does not serve 'tiny' \(it serves llama\)"):
            Endpoint(server.url, "tiny").check()
    with pytest.raises(ServeError, match="a test request failed: ConnectionRefused"):
        Endpoint("http://127.0.0.1:9", "tiny", timeout_s=1).check()
    assert Endpoint("http://user:pw@h:8000/v1", "m").url == "http://h:8000"


def test_in_trace_arrivals_the_steady_state_leaves_out_quiet_stretches(make_meter):
    # Four requests at once, a quiet second, one more: the level of 4 held only at first.
    t = trace([8] * 5, [12] * 5, [0, 0, 0, 0, 1.0])
    with FakeOpenAIServer(chunk_s=0.01) as server:
        result = serve_online(Endpoint(server.url, "tiny", timeout_s=5), meter_of(make_meter),
                              t, np.arange(5), prompts(t),
                              arrivals=arrival_times(t, np.arange(5), "trace"),
                              label="trace x1", steady_inflight=4)
    assert result.completed == 5 and result.steady["stretches"] == 1
    assert result.steady["time_s"] < 0.5 < result.time_s
    assert result.idle_share > 0.3
    # the time at each level of requests in flight: four at first, none in the quiet second
    assert max(result.inflight_s) == 4 and result.inflight_s[0] > 0.3
    assert sum(result.inflight_s.values()) == pytest.approx(result.time_s, abs=0.1)


# -- the command ---------------------------------------------------------------------------


def test_the_command_serves_a_trace_online_and_records_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from infergy.cli import app
    from infergy.store import Store

    path = tmp_path / "t.csv"
    path.write_text("in,out,at\n8,4,0\n9,6,0.01\n10,3,0.02\n")
    monkeypatch.setenv("MY_KEY", "k-123")
    with FakeOpenAIServer() as server:
        res = CliRunner().invoke(app, [
            "replay", "-t", str(path), "--input-col", "in", "--output-col", "out",
            "--time-col", "at", "--mode", "online", "-m", "tiny", "--endpoint", server.url,
            "--api-key-env", "MY_KEY", "--time-scale", "2", "--idle-s", "0", "--db",
            str(tmp_path / "r.db")])
    assert res.exit_code == 0, res.output
    assert "served online" in res.output and "3 of 3" in res.output
    assert {b["auth"] for b in server.seen} == {"Bearer k-123"}
    assert all(b["model"] == "tiny" for b in server.seen)
    with Store(tmp_path / "r.db") as store:
        (row,) = store.replays()
        assert row["mode"] == "online" and row["batching"] == "trace x2"
        assert "k-123" not in row["result"] and "k-123" not in json.dumps(store.runs())


@pytest.mark.parametrize(("args", "message"), [
    ([], "--mode online needs --endpoint URL"),
    (["--serve", "sglang"], "--serve must be one of vllm, vllm-eager"),
    (["--endpoint", "http://127.0.0.1:9", "--weights", "."], "--weights: for --serve"),
    (["--endpoint", "http://127.0.0.1:9", "--rate", "2", "--concurrency", "2"],
     "--rate and --concurrency: give one"),
    (["--endpoint", "http://127.0.0.1:9"], "has no arrival times"),
    (["--endpoint", "127.0.0.1:9", "--rate", "1"], "expected http://HOST:PORT"),
    (["--endpoint", "http://127.0.0.1:9", "--engine-option", "max_num_seqs=16"],
     "--engine-option online: the settings of a vLLM server started here"),
    (["--serve", "vllm", "--engine-option", "max_num_seqs"], "--engine-option"),
])
def test_bad_online_runs_fail_before_any_request(tmp_path, args, message):
    from typer.testing import CliRunner

    from infergy.cli import app

    path = tmp_path / "t.csv"
    path.write_text("in,out\n8,4\n")
    res = CliRunner().invoke(app, ["replay", "-t", str(path), "--input-col", "in",
                                   "--output-col", "out", "--mode", "online", "-m", "tiny",
                                   "--idle-s", "0", *args])
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())  # as one line, however the terminal wrapped it
    assert message in said and "Traceback" not in said


# -- a server started for the run --------------------------------------------------------------


def test_a_started_server_is_waited_on_used_and_stopped(tmp_path, make_meter):
    import sys
    from pathlib import Path

    from infergy.run.parallel import free_port
    from infergy.run.servers import ServerProcess

    port = free_port()
    script = Path(__file__).parent / "fake_openai_server.py"
    server = ServerProcess([sys.executable, str(script), str(port), "0.5"],
                           f"http://127.0.0.1:{port}", ready_timeout_s=20,
                           log_path=tmp_path / "server.log")
    t = trace([8, 9], [3, 4])
    with server:
        assert server.ready_s >= 0.5  # it waited for the slow start-up
        result = serve_online(Endpoint(server.url, "tiny", timeout_s=5),
                              meter_of(make_meter), t, np.arange(2), prompts(t),
                              concurrency=1, label="concurrency 1")
    assert result.completed == 2 and server.process.poll() is not None  # stopped after
    assert "serving on" in (tmp_path / "server.log").read_text()


def test_many_streams_in_flight_are_tasks_of_one_event_loop_not_threads(make_meter):
    """200 requests at concurrency 200, the server in a process of its own: every request
    answered, all in flight at once, and this process no more threads for them than for
    one request at a time."""
    import sys
    import threading
    import urllib.request
    from pathlib import Path

    from infergy.run.parallel import free_port
    from infergy.run.servers import ServerProcess

    port = free_port()
    script = Path(__file__).parent / "fake_openai_server.py"
    n = 200
    t = trace([8] * n, [40] * n)
    threads = {1: [], n: []}  # concurrency -> the threads alive at each answer
    with ServerProcess([sys.executable, str(script), str(port), "0", "0.01"],
                       f"http://127.0.0.1:{port}", ready_timeout_s=20) as server:
        for concurrency in (1, n):
            result = serve_online(
                Endpoint(server.url, "tiny", timeout_s=30), meter_of(make_meter), t,
                np.arange(concurrency), prompts(t),
                concurrency=concurrency, label=f"concurrency {concurrency}",
                progress=lambda *_, c=concurrency: threads[c].append(threading.active_count()))
        with urllib.request.urlopen(f"{server.url}/stats") as response:
            stats = json.loads(response.read())
    errors = [(r.status, r.error) for r in result.records if r.status != "ok"][:5]
    assert result.failed == {}, errors
    assert result.completed == result.requests == n
    assert result.output_tokens == 40 * n
    assert max(result.inflight_s) == n  # all sent at once
    assert stats["peak_in_flight"] > n // 2  # and most held by the server at once (the
    # first may end before its last threads have accepted the last connections)
    assert max(threads[n]) <= max(threads[1]), threads


@pytest.mark.parametrize(("code", "message"), [
    ("import sys; print('no GPU here'); sys.exit(3)", "exited with status 3"),
    ("import time; time.sleep(60)", "did not answer"),
])
def test_a_server_that_dies_or_never_answers_is_an_error_with_its_log(tmp_path, code, message):
    import sys

    from infergy.run.parallel import free_port
    from infergy.run.servers import ServerProcess

    server = ServerProcess([sys.executable, "-c", code], f"http://127.0.0.1:{free_port()}",
                           ready_timeout_s=1.5, stop_timeout_s=2)
    with pytest.raises(ServeError, match=message) as caught:
        server.__enter__()
    assert server.process.poll() is not None  # nothing left running
    if "exit" in code:
        assert "no GPU here" in str(caught.value)


def test_the_synthetic_tokenizer_decodes_every_token_id(tmp_path):
    from transformers import AutoTokenizer

    from infergy.models import get_model
    from infergy.run.servers import synthetic_tokenizer

    spec = get_model("tiny")
    synthetic_tokenizer(spec, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == spec.config["vocab_size"]
    assert tok("t5 t17", add_special_tokens=False)["input_ids"] == [5, 17]
    assert tok.eos_token_id == spec.config["eos_token_id"]
    assert tok.decode([5, 17]) == "t5 t17"


def test_hf_paged_serves_an_online_run_in_process(tiny, make_meter):
    from infergy.engines import engine_class
    from infergy.run.servers import PagedServer

    engine = engine_class("hf-paged")(tiny, device="cpu", dtype="float32")
    engine.load()
    t = trace([8, 12, 9, 16], [5, 3, 6, 4], [0.0, 0.01, 0.02, 0.03])
    server = PagedServer(engine, max_batch=4, max_input=16, max_output=6, timeout_s=60)
    try:
        result = serve_online(server, meter_of(make_meter), t, np.arange(4), prompts(t),
                              arrivals=arrival_times(t, np.arange(4), "trace"),
                              label="trace x1", steady_inflight=2)
    finally:
        server.close()
        engine.close()
    assert result.completed == 4 and result.failed == {}, result.records
    assert result.output_tokens == 18 and result.engine == "in-process hf-paged"
    assert result.latency["itl_s"]["n"] == 18 - 4  # every token's own time
    assert all(r.ttft_s > 0 and r.tpot_s > 0 for r in result.records)


def test_the_command_serves_in_process_with_hf_paged(tmp_path):
    from typer.testing import CliRunner

    from infergy.cli import app
    from infergy.store import Store

    path = tmp_path / "t.csv"
    path.write_text("in,out\n8,4\n9,6\n10,3\n")
    res = CliRunner().invoke(app, [
        "replay", "-t", str(path), "--input-col", "in", "--output-col", "out", "--mode",
        "online", "-m", "tiny", "--serve", "hf-paged", "--concurrency", "2", "--idle-s", "0",
        "--db", str(tmp_path / "r.db")])
    assert res.exit_code == 0, res.output
    with Store(tmp_path / "r.db") as store:
        (row,) = store.replays()
    result = json.loads(row["result"])
    assert result["completed"] == 3 and result["server"]["in_process"] == "hf-paged"
    assert result["engine"] == "in-process hf-paged" and row["batching"] == "concurrency 2"
    # what the report pairs it by: the server's engine and which requests ran
    assert result["served_by"] == "hf-paged"
    assert result["selection"] == {"sample": None, "seed": 0}


def test_a_real_openai_compatible_server_transformers_serve(tmp_path, make_meter, monkeypatch):
    """transformers serve on loopback with the tiny model: a server of its own making, strict
    about fields it does not know and taking text prompts only, found out by `check`."""
    import sys
    from pathlib import Path

    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from infergy.models import get_model
    from infergy.models.build import build_model
    from infergy.run.parallel import free_port
    from infergy.run.servers import ServerProcess, synthetic_tokenizer

    spec = get_model("tiny")
    folder = tmp_path / "tiny"
    build_model(spec, device="cpu", dtype="float32").save_pretrained(folder)
    synthetic_tokenizer(spec, folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    port = free_port()
    cli = Path(sys.executable).parent / "transformers"
    t = trace([8, 12, 10], [4, 3, 4])
    with ServerProcess([str(cli), "serve", str(folder), "--port", str(port)],
                       f"http://127.0.0.1:{port}", ready_timeout_s=120,
                       log_path=tmp_path / "serve.log") as server:
        endpoint = Endpoint(server.url, str(folder), timeout_s=60)
        endpoint.check()
        assert (endpoint.fields, endpoint.prompt_format) == ("openai", "text")
        result = serve_online(endpoint, meter_of(make_meter), t, np.arange(3), prompts(t),
                              concurrency=2, label="concurrency 2")
    assert result.completed == 3 and result.failed == {}, result.records
    assert 0 < result.output_tokens <= 11  # lengths not enforced: one may end at EOS
    assert result.request_form == {"fields": "openai", "prompt": "text"}
    assert all(r.ttft_s > 0 for r in result.records)


def test_a_vllm_server_started_here_takes_its_settings_as_flags(tmp_path):
    """`replay --serve vllm --engine-option max_num_seqs=16 ...`: vLLM's own flags."""
    from infergy.models import get_model
    from infergy.run.servers import vllm_server

    command = vllm_server(get_model("llama-3.1-8b"), kind="vllm-eager", port=8000,
                          served_name="llama", folder=tmp_path,
                          options={"max_num_seqs": 16, "max_num_batched_tokens": 2048,
                                   "async_scheduling": True, "enable_chunked_prefill": False,
                                   "compilation_config": {"mode": 0}})
    flags = command[command.index("--max-model-len") + 2:]
    assert flags == ["--load-format", "dummy", "--max-num-seqs", "16",
                     "--max-num-batched-tokens", "2048", "--async-scheduling",
                     "--no-enable-chunked-prefill", "--compilation-config", '{"mode": 0}',
                     "--enforce-eager"]


def test_a_replay_sent_to_a_server_infergy_serve_started_records_its_command(tmp_path):
    """`infergy serve` leaves how it started vLLM in the model folder that the server lists:
    a replay to it by --endpoint records the server and its caps, as `--serve` does."""
    from typer.testing import CliRunner

    from infergy.cli import app
    from infergy.estimate.replays import replay_engine, server_caps
    from infergy.models import get_model
    from infergy.run.servers import vllm_server
    from infergy.store import Store

    command = vllm_server(get_model("tiny"), kind="vllm-eager", port=8000, served_name="tiny",
                          folder=tmp_path, options={"max_num_batched_tokens": 2048})
    path = tmp_path / "t.csv"
    path.write_text("in,out,at\n8,4,0\n9,6,0.01\n")
    with FakeOpenAIServer(roots={"tiny": str(tmp_path)}) as server:
        res = CliRunner().invoke(app, [
            "replay", "-t", str(path), "--input-col", "in", "--output-col", "out",
            "--time-col", "at", "--mode", "online", "-m", "tiny", "--endpoint", server.url,
            "--idle-s", "0", "--db", str(tmp_path / "r.db")])
    assert res.exit_code == 0, res.output
    with Store(tmp_path / "r.db") as store:
        (row,) = store.replays()
    replay = json.loads(row["result"])
    assert replay["server"] == {"command": command, "started_by": "infergy serve"}
    assert replay_engine(replay) == "vllm-eager"
    assert server_caps(replay["server"]["command"]) == {"max_num_batched_tokens": 2048}


def test_an_endpoint_infergy_did_not_start_records_no_server(tmp_path):
    from infergy.run.servers import started_here

    assert started_here(None) is None and started_here(str(tmp_path)) is None
    (tmp_path / "infergy-server.json").write_text('{"served_by": "sglang", "command": []}')
    assert started_here(str(tmp_path)) is None  # not one infergy starts
    with FakeOpenAIServer() as server:  # lists no folder
        assert Endpoint(server.url, "tiny").model_root() is None


def test_infergy_serve_keeps_the_server_until_it_ends_and_says_how_it_ended(monkeypatch):
    """`infergy serve` waits for the server, prints where it answers and the replay to send
    it, and stays until the server ends (here a test double that exits with status 3)."""
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    import infergy.run.serving as serving
    from infergy.cli import app

    script = Path(__file__).parent / "fake_openai_server.py"
    monkeypatch.setattr(serving, "vllm_server", lambda spec, *, port, **kw: [
        sys.executable, str(script), str(port), "0.3", "0.002", "1.5"])
    res = CliRunner().invoke(app, ["serve", "-m", "tiny", "--port", str(free_port())])
    said = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "serving tiny at http://127.0.0.1:" in said and "--endpoint http://" in said
    assert "the server exited with status 3" in said and "Traceback" not in said


def test_infergy_serve_refuses_a_port_something_else_listens_on():
    """Its /health would answer for the server's: refused before any start."""
    from typer.testing import CliRunner

    from infergy.cli import app

    with FakeOpenAIServer() as server:
        port = server.url.rsplit(":", 1)[1]
        res = CliRunner().invoke(app, ["serve", "-m", "tiny", "--port", port])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and f"port {port} on 127.0.0.1 is taken" in said, res.output


@pytest.mark.parametrize(("args", "message"), [
    (["-m", "tiny", "-e", "hf-eager"], "--engine must be one of vllm, vllm-eager"),
    (["-m", "nope"], "unknown model 'nope'"),
    (["-m", "tiny", "--engine-option", "max_num_seqs"], "--engine-option"),
])
def test_bad_serve_commands_are_refused_before_a_server_starts(args, message):
    from typer.testing import CliRunner

    from infergy.cli import app

    res = CliRunner().invoke(app, ["serve", *args])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and message in said and "Traceback" not in said, res.output


def test_a_server_started_here_has_its_waiting_power_measured_and_used(tmp_path, make_meter,
                                                                      monkeypatch):
    """`replay --serve vllm` measures the card with the server up and no request sent (a
    window as long as the idle one), after the server's start; the simulator charges the
    time with no request in flight at it (here a test double of vLLM's server, a card
    simulated at 120 W)."""
    import sys
    from pathlib import Path

    import infergy.run.serving as serving
    from infergy.models import get_model
    from infergy.profile.points import serving_idle_powers
    from infergy.run import Serving, replay_online
    from infergy.store import Store
    from simulated import SimulatedGpu

    script = Path(__file__).parent / "fake_openai_server.py"
    monkeypatch.setattr(serving, "vllm_server", lambda spec, *, port, **kw: [
        sys.executable, str(script), str(port)])
    monkeypatch.setattr(serving, "open_meter", lambda limit, idle_s: make_meter(
        [SimulatedGpu(power_w=120.0)]))
    t = trace([8, 9], [3, 4], [0.0, 0.1])
    result = replay_online(t, np.arange(2), get_model("tiny"), Serving(serve="vllm"),
                           sample=None, seed=0, db=tmp_path / "r.db", idle_s=0.3)
    assert result.completed == 2
    assert result.server["waiting_w"]["gpu0"] == pytest.approx(120.0, rel=0.05)
    with Store(tmp_path / "r.db") as store:
        (row,) = store.replays()
    gpu = json.loads(row["result"])["provenance"]["gpus"][0]["model"]
    found = serving_idle_powers([tmp_path / "r.db"], "tiny", "vllm-eager", gpu)
    assert [w.engine for w in found] == ["vllm"]
    assert found[0].watts == pytest.approx(120.0, rel=0.05)


def test_an_online_option_given_to_an_offline_replay_is_refused_not_ignored(tmp_path):
    from typer.testing import CliRunner

    from infergy.cli import app

    res = CliRunner().invoke(app, ["replay", "-t", "azure-code-2023", "-m", "tiny", "--idle-s",
                                   "0", "--rate", "2", "--time-scale", "4"])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "--rate, --time-scale: for --mode online" in said
