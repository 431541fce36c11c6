"""Measuring one point on a CPU: the tiny model through the real engines, energy from a
simulated GPU of constant power, and failures (out of memory, engine errors) as results."""

from __future__ import annotations

import pytest
import torch

from infergy.engines.decoding import Decoding, DecodingError
from infergy.run.point import (
    Point,
    PointError,
    PointResult,
    measure_point,
    runs_per_window,
    validate_point,
)
from infergy.store.quality import unsteady_repeats
from simulated import SimulatedGpu
from simulated_engines import (
    OutOfMemoryEngine,
    OutOfMemoryError,
    PhasedPowerEngine,
    SimulatedFailureEngine,
    SlowPrefillRunEngine,
)

CPU_ENGINES = ("hf-eager", "hf-compiled", "hf-paged")
WINDOW_ENGINES = ("hf-eager", "hf-compiled")  # prefill and decode in windows of their own
BATCH, INPUT, OUTPUT = 2, 8, 4
REPEATS = 2


def point(engine: str, **kwargs) -> Point:
    fields = {"batch": BATCH, "input_tokens": INPUT, "output_tokens": OUTPUT,
              "dtype": "float32", **kwargs}
    return Point("tiny", engine, **fields)


def gpu_meter(make_meter):
    return make_meter([SimulatedGpu(power_w=200.0, update_s=1e-4)])


# -- a measured point --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CPU_ENGINES)
def test_a_point_on_a_simulated_gpu_is_measured_in_full(engines, make_meter, name):
    meter = gpu_meter(make_meter)
    result = measure_point(engines[name], point(name), meter, repeats=REPEATS, warmup=1)

    assert isinstance(result, PointResult)
    assert result.status == "ok", result.error
    assert result.error is None
    assert len(result.repeats) == REPEATS
    assert result.energy_j > 0
    assert result.prefill_energy_j > 0
    assert result.meter_method == "counter"
    assert result.energy_reason is None
    assert result.j_per_output_token == pytest.approx(result.energy_j / (BATCH * OUTPUT))
    assert result.j_per_request == pytest.approx(result.energy_j / BATCH)
    assert result.time_s > 0
    assert result.throughput_tok_s == pytest.approx(BATCH * OUTPUT / result.time_s)
    assert result.ttft_s > 0
    assert result.avg_power_w > 0
    assert result.prepare is not None and result.warmup is not None
    assert result.point == point(name)
    assert result.provenance["gpus"][0]["name"] == "gpu0"
    assert meter._windows == []  # nothing left open


@pytest.mark.parametrize("name", WINDOW_ENGINES)
def test_prefill_and_decode_windows_tile_the_request(engines, make_meter, name):
    """The two windows share the request's edges: their sum is the request, not about it."""
    result = measure_point(engines[name], point(name), gpu_meter(make_meter),
                           repeats=REPEATS, warmup=1)
    assert result.status == "ok", result.error
    assert result.prefill_method == "window"
    assert result.tpot_s > 0
    for r in result.repeats:
        assert r.prefill.method == "window" and r.decode.method == "window"
        assert r.prefill.energy_j > 0 and r.decode.energy_j > 0
        assert r.prefill.energy_j + r.decode.energy_j == pytest.approx(r.request.energy_j,
                                                                        rel=1e-9)
        assert r.prefill.time_s + r.decode.time_s == pytest.approx(r.request.time_s, rel=1e-9)
    assert result.prefill_energy_j + result.decode_energy_j == pytest.approx(result.energy_j,
                                                                             rel=0.02)


def test_a_prefill_read_by_sampled_power_and_its_decode_still_add_up_to_the_request(
        tiny, make_meter):
    """A 30 ms prefill on a counter of 100 ms updates is read by sampled power, the decode and
    the request by the counter: the decode's counter step held what the prefill's window did
    not see (prefill + decode 189.6 J against a request of 213.9 J, a helper's review). The
    decode is what the request leaves."""
    gpu = SimulatedGpu(power_w=100.0, update_s=0.1)
    meter = make_meter([gpu], sample_period_s=0.05)
    meter.measure_idle(0.5)  # which sees the counter's update period
    engine = PhasedPowerEngine(tiny, device="cpu", gpu=gpu, prefill_s=0.03, decode_s=0.4,
                               prefill_w=500.0, decode_w=300.0, rest_w=100.0)
    result = measure_point(engine, Point("tiny", "x", batch=1, input_tokens=8,
                                         output_tokens=4, dtype="float32"), meter,
                           repeats=2, warmup=1)
    assert result.status == "ok", result.error
    for r in result.repeats:
        assert r.decode.method == "request - prefill"
        assert r.prefill.energy_j + r.decode.energy_j == pytest.approx(r.request.energy_j,
                                                                        rel=1e-9)


def test_a_repeat_that_measured_no_energy_is_said_in_the_point_s_warnings(tiny, make_meter):
    """A counter that restarts during the second repeat (a driver reload) leaves that repeat
    without energy: the point's figures are the other repeats', and a warning says so (they
    were, silently)."""
    gpu = SimulatedGpu(power_w=200.0, update_s=1e-4, counter_start_j=5e6, power_sources=())

    class Restarting(SlowPrefillRunEngine):  # a test double: the counter restarts in call 4
        def generate(self, prompts, output_tokens, decoding, on_first_token=None):
            out = super().generate(prompts, output_tokens, decoding, on_first_token)
            if len(self.calls) == 4:  # warm-up, prefill run, repeat 1, then repeat 2
                gpu.counter_start_j -= 1e6
            return out

    engine = Restarting(tiny, device="cpu", prefill_run_s=0.01, request_s=0.1)
    result = measure_point(engine, Point("tiny", "x", batch=1, input_tokens=8,
                                         output_tokens=4, dtype="float32"),
                           make_meter([gpu]), repeats=3, warmup=1)
    assert [r.request.energy_j is None for r in result.repeats] == [False, True, False]
    assert result.energy_j is not None
    assert any("repeat 2 of 3 measured no energy" in w and "went backwards" in w
               for w in result.warnings), result.warnings


def test_hf_paged_measures_prefill_by_a_separate_run(engines, make_meter):
    result = measure_point(engines["hf-paged"], point("hf-paged"), gpu_meter(make_meter),
                           repeats=REPEATS, warmup=1)
    assert result.status == "ok", result.error
    assert result.prefill_method == "separate run"
    for r in result.repeats:
        assert r.prefill.method == "separate run"
        # TTFT is the engine's own time stamp of the batch's first token in the request run.
        assert 0 < r.ttft_s < r.request.time_s
        if r.decode.method == "request - prefill":
            assert r.decode.energy_j == pytest.approx(r.request.energy_j - r.prefill.energy_j)
        else:
            # On a CPU the 1-token run of a tiny model can take as long as the whole request
            # (noise): then decode is not made up by subtraction but reported unmeasurable.
            assert r.decode.method == "request - prefill (unmeasurable)"
            assert r.decode.energy_j is None
            assert any("decode not measurable" in w for w in r.warnings)


@pytest.mark.parametrize("name", ["hf-eager", "hf-paged"])
def test_without_a_gpu_sensor_energy_is_none_with_a_reason_and_time_is_measured(
    engines, make_meter, name
):
    meter = make_meter([])
    result = measure_point(engines[name], point(name), meter, repeats=REPEATS, warmup=0)
    assert result.status == "ok", result.error
    for value in (result.energy_j, result.prefill_energy_j, result.decode_energy_j,
                  result.active_energy_j, result.j_per_output_token, result.j_per_request,
                  result.avg_power_w):
        assert value is None  # null, not zero
    assert "no GPU" in result.energy_reason
    assert result.time_s > 0
    assert result.ttft_s > 0
    assert result.throughput_tok_s == pytest.approx(BATCH * OUTPUT / result.time_s)
    assert all(r.request.time_s > 0 for r in result.repeats)
    assert result.warmup is None
    assert meter._windows == []


def test_sampling_points_are_measured(engines, make_meter):
    p = point("hf-eager", decoding="sample:temperature=0.7,top_p=0.9")
    result = measure_point(engines["hf-eager"], p, gpu_meter(make_meter), repeats=1, warmup=0)
    assert result.status == "ok", result.error
    assert result.point.decoding == "sample:temperature=0.7,top_p=0.9"


def test_one_output_token_has_no_time_per_output_token(engines, make_meter):
    result = measure_point(engines["hf-eager"], point("hf-eager", output_tokens=1),
                           gpu_meter(make_meter), repeats=1, warmup=0)
    assert result.status == "ok", result.error
    assert result.tpot_s is None
    assert result.j_per_output_token == pytest.approx(result.energy_j / BATCH)


def test_the_1_token_prefill_run_is_measured_once_a_point_and_shared_by_the_repeats(
        tiny, make_meter):
    engine = SlowPrefillRunEngine(tiny, device="cpu", prefill_run_s=0.01, request_s=0.05)
    result = measure_point(engine, point("hf-paged"), gpu_meter(make_meter), repeats=3,
                           warmup=1)
    assert result.status == "ok", result.error
    assert engine.calls == [4, 1, 4, 4, 4]  # warm-up, the prefill run, 3 repeats
    prefills = {(r.prefill.energy_j, r.prefill.time_s, r.prefill.method) for r in result.repeats}
    assert len(prefills) == 1 and next(iter(prefills))[2] == "separate run"
    for r in result.repeats:
        assert r.decode.energy_j == pytest.approx(r.request.energy_j - r.prefill.energy_j)


def test_a_run_shorter_than_the_minimum_window_is_repeated_in_each_window(tiny, make_meter):
    """Short points: each window holds back-to-back runs until it lasts min_window_s (the
    count timed by the warm-up), and every figure is per run, as one run would give."""
    engine = SlowPrefillRunEngine(tiny, device="cpu", prefill_run_s=0.01, request_s=0.05)
    result = measure_point(engine, point("hf-paged"), gpu_meter(make_meter), repeats=2,
                           warmup=1, min_window_s=0.2)
    assert result.status == "ok", result.error
    runs = result.runs_per_window
    assert 3 <= runs <= 5  # ceil(1.25 x 0.2 / a run of 0.05 s and a little more)
    # The warm-up, runs timing it warm (a quarter of the window: one or two); the prefill's
    # lone run, its timing runs, its window of runs; then the repeats' windows.
    timing = next(i for i, n in enumerate(engine.calls) if n == 1) - 1
    assert engine.calls[:1 + timing] == [4] * (1 + timing) and 1 <= timing <= 2
    assert engine.calls[-2 * runs:] == [4] * (2 * runs)
    prefill_runs = engine.calls[1 + timing:-2 * runs]
    assert prefill_runs == [1] * len(prefill_runs) and len(prefill_runs) >= 6  # 1 + 5 + ~20
    for r in result.repeats:
        # The count comes from the fastest timed run, a quarter more: a window lasts about
        # min_window_s or longer (a busy machine's slower windows longer still).
        assert r.request.runs == runs and r.request.time_s * runs >= 0.5 * 0.2
        assert 0.05 <= r.request.time_s < 0.2  # one run's time, not the window's
        # A constant 200 W: each figure is the power times one run's time.
        assert r.request.energy_j == pytest.approx(200.0 * r.request.time_s, rel=0.05)
        assert r.prefill.method == "separate run" and r.prefill.runs > 1
        assert r.prefill.time_s * r.prefill.runs >= 0.5 * 0.2 and r.prefill.time_s < 0.05
        assert r.decode.energy_j == pytest.approx(r.request.energy_j - r.prefill.energy_j)
        assert r.gpu_energy_j["gpu0"] == pytest.approx(r.request.energy_j, rel=0.01)
    assert result.j_per_output_token == pytest.approx(result.energy_j / (BATCH * OUTPUT))


def test_a_window_holds_a_quarter_more_runs_than_its_timed_run_says():
    """Timed runs ran up to 20% slower than the windows' own on an H100 (windows of 1.67 s
    asked to last 2 s): a window is sized a quarter past its minimum."""
    assert runs_per_window(0.5, 2.0) == 5  # not 4, whose window would fall short
    assert runs_per_window(1.9, 2.0) == 2
    assert runs_per_window(2.0, 2.0) == runs_per_window(None, 2.0) == runs_per_window(
        0.1, 0) == 1


def test_a_slow_first_run_does_not_make_a_short_point_long(tiny, make_meter):
    """A warm-up longer than the window (a new shape's one-off seconds: hf-eager's first run
    of an input length took 2.7 s on an H100, its runs 0.19 s) still has the runs timed."""
    engine = SlowPrefillRunEngine(tiny, device="cpu", prefill_run_s=0.01, request_s=0.05,
                                  first_run_s=0.3)
    result = measure_point(engine, point("hf-paged"), gpu_meter(make_meter), repeats=1,
                           warmup=1, min_window_s=0.2)
    assert result.status == "ok", result.error
    assert result.warmup.time_s >= 0.3 and 3 <= result.runs_per_window <= 5


def test_repeats_far_apart_are_flagged_with_their_likely_cause(tiny, make_meter):
    """A GPU drawing 200 W and 300 W by turns: the repeats' energies differ by a third at the
    same time, and the point says so (the sweep counts such points)."""
    gpu = SimulatedGpu(power_w=200.0, update_s=1e-4)
    engine = SlowPrefillRunEngine(tiny, device="cpu", prefill_run_s=0.01, request_s=0.05)
    generate = engine.generate

    def by_turns(*args, **kwargs):  # test double: the power changes with every run
        gpu.set_power(300.0 if len(engine.calls) % 2 else 200.0)
        return generate(*args, **kwargs)

    engine.generate = by_turns
    result = measure_point(engine, point("hf-paged"), make_meter([gpu]), repeats=3, warmup=1)
    assert result.status == "ok", result.error
    assert result.energy_cv > 0.1
    (warning,) = [w for w in result.warnings if "apart" in w]
    assert "windows of 0.05" in warning and "min_window_s" in warning


@pytest.mark.parametrize("time_s, runs, time_cv, cause", [
    (0.2, 20, 0.12, "the host"),  # windows of 4 s whose runs' times varied as much
    (3.0, 1, 0.004, "the GPU's power varied"),
    (0.5, 1, 0.0, "windows of 0.5 s"),
])
def test_the_cause_named_for_repeats_far_apart(time_s, runs, time_cv, cause):
    result = PointResult(point=point("hf-eager"), status="ok", energy_cv=0.1, time_s=time_s,
                         time_cv=time_cv, runs_per_window=runs)
    assert cause in unsteady_repeats(result)
    assert "10.0% apart" in unsteady_repeats(result)
    steady = PointResult(point=point("hf-eager"), status="ok", energy_cv=0.05, time_s=3.0)
    assert unsteady_repeats(steady) is None


def test_a_run_as_long_as_the_minimum_window_is_measured_alone(engines, make_meter):
    """Long points are measured as without min_window_s, prefill and decode windows too."""
    result = measure_point(engines["hf-eager"], point("hf-eager"), gpu_meter(make_meter),
                           repeats=1, warmup=1, min_window_s=1e-6)
    assert result.status == "ok", result.error
    assert result.runs_per_window == 1 and result.prefill_method == "window"


def test_an_engine_with_a_first_token_hook_loops_by_1_token_prefill_runs(engines, make_meter):
    result = measure_point(engines["hf-eager"], point("hf-eager"), gpu_meter(make_meter),
                           repeats=1, warmup=1, min_window_s=1.0)
    assert result.status == "ok", result.error
    assert result.runs_per_window > 1
    assert result.prefill_method == "separate run"  # a window of several runs: no one first
    assert result.tpot_s > 0 and result.ttft_s > 0


@pytest.mark.parametrize("min_window_s, warmup, error", [
    (-1.0, 1, "min_window_s must be seconds >= 0"),
    (2.0, 0, "needs a warm-up run"),
])
def test_a_minimum_window_needs_seconds_and_a_warm_up(engines, make_meter, min_window_s,
                                                       warmup, error):
    with pytest.raises(PointError, match=error):
        measure_point(engines["hf-eager"], point("hf-eager"), gpu_meter(make_meter),
                      warmup=warmup, min_window_s=min_window_s)


def test_decode_by_subtraction_is_never_reported_negative(tiny, make_meter):
    engine = SlowPrefillRunEngine(tiny, device="cpu", prefill_run_s=0.2, request_s=0.02)
    result = measure_point(engine, point("hf-paged"), gpu_meter(make_meter), repeats=1,
                           warmup=0)
    assert result.status == "ok", result.error
    assert result.prefill_method == "separate run"
    flagged = any("decode" in w for w in result.warnings)
    assert flagged or result.decode_energy_j is None or result.decode_energy_j >= 0
    assert flagged or result.tpot_s is None or result.tpot_s > 0


# -- failures are results ----------------------------------------------------------------------


@pytest.mark.parametrize("when", ["start", "after first token"])
@pytest.mark.parametrize("error_class", [OutOfMemoryError, torch.OutOfMemoryError])
def test_out_of_memory_is_a_result_and_leaves_no_window_open(
    tiny, engines, make_meter, error_class, when
):
    engine = OutOfMemoryEngine(tiny, device="cpu", dtype="float32", when=when,
                               error=error_class("CUDA out of memory. Tried to allocate 2 GiB"))
    engine.load()
    meter = gpu_meter(make_meter)
    result = measure_point(engine, point("hf-eager"), meter, repeats=REPEATS, warmup=1)
    assert engine.calls == 2  # the warm-up ran; the first measured run failed
    assert result.status == "oom"
    assert "OutOfMemoryError" in result.error and "out of memory" in result.error
    assert result.energy_j is None and result.j_per_output_token is None
    assert meter._windows == []

    # The meter goes on measuring the next point of a sweep.
    ok = measure_point(engines["hf-eager"], point("hf-eager"), meter, repeats=1, warmup=0)
    assert ok.status == "ok", ok.error
    assert ok.energy_j > 0
    assert meter._windows == []


def test_out_of_memory_in_the_warm_up_is_a_result(tiny, make_meter):
    engine = OutOfMemoryEngine(tiny, device="cpu", dtype="float32", fail_from_call=1)
    engine.load()
    meter = gpu_meter(make_meter)
    result = measure_point(engine, point("hf-eager"), meter, repeats=REPEATS, warmup=1)
    assert result.status == "oom"
    assert result.repeats == []
    assert meter._windows == []


def test_an_engine_message_saying_out_of_memory_is_oom(tiny, make_meter):
    engine = SimulatedFailureEngine(
        tiny, device="cpu", dtype="float32",
        error=RuntimeError("engine core: Out of memory while allocating KV cache blocks"),
    )
    engine.load()
    result = measure_point(engine, point("hf-eager"), gpu_meter(make_meter), repeats=1)
    assert result.status == "oom"


@pytest.mark.parametrize("when", ["start", "after first token"])
def test_another_engine_error_is_a_failed_result(tiny, make_meter, when):
    engine = SimulatedFailureEngine(tiny, device="cpu", dtype="float32", when=when,
                                    error=ValueError("shapes do not match"))
    engine.load()
    meter = gpu_meter(make_meter)
    result = measure_point(engine, point("hf-eager"), meter, repeats=REPEATS, warmup=1)
    assert result.status == "failed"
    assert result.error == "ValueError: shapes do not match"
    assert result.energy_j is None
    assert meter._windows == []


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"batch": 0}, "batch must be a positive integer, got 0"),
        ({"input_tokens": -1}, "input_tokens must be a positive integer, got -1"),
        ({"output_tokens": -5}, "output_tokens must be a positive integer, got -5"),
        ({"output_tokens": 0}, "output_tokens must be a positive integer, got 0"),
        ({"batch": 2.5}, "batch must be a positive integer"),
        ({"input_tokens": 2000, "output_tokens": 49}, "2049 tokens is beyond tiny's context of "
                                                      "2048"),
        ({"input_tokens": 3000}, "beyond tiny's context"),
    ],
)
def test_validate_point_rejects_what_cannot_be_measured(tiny, fields, match):
    with pytest.raises(PointError, match=match):
        validate_point(point("hf-eager", **fields), tiny)


def test_validate_point_accepts_the_whole_context_and_returns_the_decoding(tiny):
    decoding = validate_point(
        point("hf-eager", input_tokens=2040, output_tokens=8, decoding="sample:top_p=0.5"), tiny
    )
    assert decoding == Decoding("sample", top_p=0.5)


def test_validate_point_rejects_a_bad_decoding(tiny):
    with pytest.raises(DecodingError, match="beam"):
        validate_point(point("hf-eager", decoding="beam:1"), tiny)


def test_a_beam_search_point_measures_its_prefill_by_a_separate_run(engines, make_meter):
    result = measure_point(engines["hf-eager"], point("hf-eager", decoding="beam:2"),
                           gpu_meter(make_meter), repeats=REPEATS, warmup=1)
    assert result.status == "ok", result.error
    assert result.prefill_method == "separate run"
    assert result.point.decoding == "beam:2"


def test_measure_point_refuses_a_bad_point_before_any_work(tiny, make_meter):
    engine = OutOfMemoryEngine(tiny, device="cpu", dtype="float32", fail_from_call=1)
    meter = gpu_meter(make_meter)
    with pytest.raises(PointError, match="beyond"):
        measure_point(engine, point("hf-eager", input_tokens=2048), meter)
    with pytest.raises(PointError, match="repeats must be at least 1"):
        measure_point(engine, point("hf-eager"), meter, repeats=0)
    assert engine.calls == 0
    assert meter._windows == []


@pytest.mark.parametrize(("ttft_s", "warns"), [(0.117, True), (1.88, False)])
def test_a_prefill_faster_than_any_gpu_is_flagged_as_a_prompt_cache(ttft_s, warns):
    """Figures of an H100 run: vLLM with its prefix cache on reported a 0.117 s TTFT for
    128 x 512 tokens of llama-3.1-8b (about 9 PFLOP/s); the real prefill took 1.88 s."""
    from infergy.models import get_model
    from infergy.run.point import _check_prefill

    result = PointResult(point=Point("llama-3.1-8b", "vllm", 128, 512, 128), status="ok",
                         provenance={}, ttft_s=ttft_s)
    _check_prefill(result, get_model("llama-3.1-8b"), gpus=1)
    assert any("prefix" in w for w in result.warnings) == warns


@pytest.mark.parametrize(("err", "oom"), [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 4294967296 bytes."), True),
    (MemoryError(), True),
    (RuntimeError("shape mismatch"), False)])
def test_out_of_memory_is_known_on_a_cpu_too(err, oom):
    """torch on a CPU raises a RuntimeError of its allocator's words: it was stored as failed,
    and every resume tried the same batch again (a helper's review)."""
    from infergy.run.point import is_out_of_memory
    assert is_out_of_memory(err) is oom
