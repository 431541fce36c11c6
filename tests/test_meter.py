"""Meter and windows over simulated sensors whose true energy is known exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from infergy.meter import Meter, Unavailable, run_command
from simulated import SimulatedGpu, SimulatedRaplZone

# Edge reads and the sampler contend for the GIL; allow this much timing slop (s) at the edges.
SLOP_S = 0.02


def tolerance_j(power_w: float, update_s: float) -> float:
    """How far a quantised counter may be from power x duration: one update plus slop."""
    return power_w * (update_s + SLOP_S)


def run_window(meter: Meter, seconds: float, name: str = "work"):
    with meter.window(name) as w:
        time.sleep(seconds)
    return w.measurement


# -- energy ------------------------------------------------------------------------------------


def test_counter_energy_is_power_times_duration(make_meter):
    gpu = SimulatedGpu(power_w=200.0, update_s=0.01)
    m = run_window(make_meter([gpu]), 0.3)
    d = m.device("gpu0")
    assert d.method == "counter"
    assert m.method == "counter"
    assert d.energy_j == d.counter_energy_j
    assert d.energy_j == pytest.approx(200.0 * m.duration_s, abs=tolerance_j(200.0, 0.01))
    assert m.energy_j == d.energy_j
    assert m.avg_power_w == pytest.approx(m.energy_j / m.duration_s)
    assert not m.failed
    assert m.errors == ()


def test_sampled_energy_agrees_with_the_counter_at_constant_power(make_meter):
    gpu = SimulatedGpu(power_w=150.0, update_s=0.01)
    d = run_window(make_meter([gpu]), 0.3).device("gpu0")
    assert d.sampled_source == "instant"
    assert d.sampled_energy_j == pytest.approx(d.counter_energy_j, abs=tolerance_j(150.0, 0.01))
    assert d.disagreement == pytest.approx(d.sampled_energy_j / d.counter_energy_j - 1)
    # the other offered source is integrated too, for comparison
    assert d.other_sampled_j["average"] == pytest.approx(d.sampled_energy_j, rel=0.1)
    assert d.samples >= 10  # the sampler read it between the edges


def test_gpu_without_counter_is_measured_by_sampled_instant_power(make_meter):
    gpu = SimulatedGpu(power_w=120.0, has_counter=False, power_sources=("average", "instant"))
    m = run_window(make_meter([gpu]), 0.3)
    d = m.device("gpu0")
    assert d.method == "sampled:instant"
    assert m.method == "sampled:instant"
    assert d.counter_energy_j is None
    assert d.disagreement is None
    assert d.energy_j == pytest.approx(120.0 * m.duration_s, abs=120.0 * SLOP_S)
    assert d.counter_update_s is None  # no counter: no counter resolution to speak of


def test_gpu_with_only_nvml_usage_power_is_sampled_from_usage(make_meter):
    gpu = SimulatedGpu(power_w=90.0, has_counter=False, power_sources=("usage",))
    m = run_window(make_meter([gpu]), 0.2)
    assert m.method == "sampled:usage"
    assert m.energy_j == pytest.approx(90.0 * m.duration_s, abs=90.0 * SLOP_S)


def test_counter_is_read_at_the_edges_and_power_at_every_tick_by_default(make_meter):
    # An NVML counter read costs milliseconds; power reads are cheap. In a window shorter
    # than the counter period (1 s by default) only the edges read the counter.
    gpu = SimulatedGpu(power_w=100.0)
    meter = make_meter([gpu])
    m = run_window(meter, 0.2)
    assert gpu.reads["energy"] == 2
    assert gpu.reads["power"] >= 10
    assert m.device("gpu0").method == "counter"


def test_measure_idle_leaves_the_meter_settings_as_they_were(make_meter):
    meter = make_meter([SimulatedGpu()], sample_period_s=0.05, counter_period_s=0.7)
    meter.measure_idle(0.05)
    assert (meter.sample_period_s, meter.counter_period_s) == (0.05, 0.7)


def test_sampled_power_without_sampler_uses_the_two_edge_readings(make_meter):
    gpu = SimulatedGpu(power_w=80.0, has_counter=False, power_sources=("instant",))
    m = run_window(make_meter([gpu], sample_period_s=None), 0.2)
    d = m.device("gpu0")
    assert d.samples == 2
    assert d.energy_j == pytest.approx(80.0 * m.duration_s, abs=80.0 * SLOP_S)


def test_idle_power_is_measured_and_subtracted(make_meter):
    gpu = SimulatedGpu(power_w=50.0, update_s=0.01)
    meter = make_meter([gpu])
    idle = meter.measure_idle(0.3)
    assert meter.idle is idle
    assert idle.name == "idle"
    assert meter.idle_w["gpu0"] == pytest.approx(50.0, abs=tolerance_j(50.0, 0.01) / 0.3)
    gpu.set_power(150.0)
    m = run_window(meter, 0.3)
    d = m.device("gpu0")
    assert d.idle_w == meter.idle_w["gpu0"]
    assert d.active_energy_j == pytest.approx(d.energy_j - d.idle_w * m.duration_s)
    assert m.active_energy_j == d.active_energy_j
    # the work drew 100 W above the idle 50 W
    assert d.active_energy_j == pytest.approx(
        100.0 * m.duration_s, abs=tolerance_j(150.0, 0.01) + tolerance_j(50.0, 0.01)
    )


def test_without_idle_measurement_there_is_no_energy_above_idle(make_meter):
    m = run_window(make_meter([SimulatedGpu()]), 0.1)
    assert m.energy_j is not None
    assert m.active_energy_j is None
    assert m.device("gpu0").idle_w is None


def test_idle_measured_on_a_busy_gpu_is_flagged(make_meter):
    gpu = SimulatedGpu(power_w=60.0, state={"utilization_pct": 30})
    meter = make_meter([gpu])
    meter.measure_idle(0.1)
    assert any("gpu0 was 30% busy" in w for w in meter.warnings)


def test_idle_on_a_busy_gpu_without_power_reading_does_not_crash(make_meter):
    # A GPU with neither energy counter nor power reading, busy with another process.
    gpu = SimulatedGpu(has_counter=False, power_sources=(), state={"utilization_pct": 30})
    meter = make_meter([gpu])
    idle = meter.measure_idle(0.05)
    assert idle.energy_j is None
    assert "gpu0" not in meter.idle_w
    assert any("gpu0 was 30% busy" in w for w in meter.warnings)


# -- precision ---------------------------------------------------------------------------------


def test_counter_update_period_is_observed_while_measuring_idle(make_meter):
    # The sampler polls the counter at every tick during idle, fast enough to see its period.
    gpu = SimulatedGpu(update_s=0.05)
    meter = make_meter([gpu])
    idle = meter.measure_idle(0.4)
    assert meter.counter_update_s["gpu0"] == pytest.approx(0.05, abs=0.015)
    assert idle.device("gpu0").counter_update_s == meter.counter_update_s["gpu0"]


def test_short_window_is_flagged_too_short_for_precision(make_meter):
    gpu = SimulatedGpu(update_s=0.05)
    meter = make_meter([gpu])
    meter.measure_idle(0.4)
    m = run_window(meter, 0.2)
    d = m.device("gpu0")
    assert d.counter_update_s == meter.counter_update_s["gpu0"]
    assert d.resolution == pytest.approx(d.counter_update_s / m.duration_s)
    assert any(w.startswith("gpu0:") and "too short for 1.0% precision" in w for w in m.warnings)


def test_window_long_enough_for_the_precision_asked_is_not_flagged(make_meter):
    gpu = SimulatedGpu(update_s=0.05)
    meter = make_meter([gpu], precision=0.5)
    meter.measure_idle(0.4)
    m = run_window(meter, 0.2)
    assert m.device("gpu0").resolution < 0.5
    assert not any("too short" in w for w in m.warnings)


@pytest.mark.parametrize("kwargs", [{"precision": 0}, {"precision": 1.5},
                                    {"sample_period_s": 0}, {"sample_period_s": -0.1}])
def test_meter_rejects_nonsense_settings(kwargs):
    with pytest.raises(ValueError):
        Meter([], **kwargs)


def test_counter_and_power_disagreement_is_flagged_on_long_windows(make_meter):
    # A power sensor that reads 20% high. The warning needs a window of 2 s or more; run the
    # meter and sensor on a clock 10x faster than real time to get there in 0.25 s.
    t0 = time.perf_counter()

    def fast_clock():
        return t0 + 10 * (time.perf_counter() - t0)

    gpu = SimulatedGpu(power_w=100.0, power_scale=1.2, update_s=0.01, clock=fast_clock)
    m = run_window(make_meter([gpu], clock=fast_clock, precision=0.5), 0.25)
    assert m.duration_s >= 2.0
    assert m.device("gpu0").disagreement == pytest.approx(0.2, abs=0.05)
    assert any("gpu0: counter and sampled instant power disagree by +" in w for w in m.warnings)


def test_short_window_disagreement_is_not_flagged(make_meter):
    gpu = SimulatedGpu(power_w=100.0, power_scale=1.2, update_s=0.01)
    m = run_window(make_meter([gpu]), 0.2)
    assert m.device("gpu0").disagreement == pytest.approx(0.2, abs=0.15)
    assert not any("disagree" in w for w in m.warnings)


# -- wrap-around ---------------------------------------------------------------------------------


def test_counter_wrapping_several_times_in_a_window_gives_the_right_energy(make_meter):
    # 100 W into a 10 J counter: it wraps every 0.1 s, 4 times in the window; the sampler
    # reads the counter every 10 ms (by default only once a second), at least once per wrap.
    gpu = SimulatedGpu(power_w=100.0, update_s=0.001, counter_range_j=10.0, counter_start_j=7.0)
    m = run_window(make_meter([gpu], counter_period_s=0.01), 0.4)
    d = m.device("gpu0")
    assert d.method == "counter"
    assert d.energy_j == pytest.approx(100.0 * m.duration_s, abs=tolerance_j(100.0, 0.001))
    assert d.sampled_energy_j == pytest.approx(d.energy_j, abs=tolerance_j(100.0, 0.001))


def test_counter_going_backwards_without_wrap_range_gives_no_energy(make_meter):
    gpu = SimulatedGpu(power_w=100.0, counter_start_j=1000.0, power_sources=())
    meter = make_meter([gpu], sample_period_s=None)
    w = meter.start("driver reload")
    gpu.counter_start_j = 0.0  # the driver reloaded: the counter restarts
    m = w.stop()
    d = m.device("gpu0")
    assert d.energy_j is None
    assert "went backwards" in d.reason
    assert m.energy_j is None
    assert "gpu0" in m.reason and "went backwards" in m.reason


def test_a_counter_going_backwards_beside_power_readings_is_said_not_passed_over(make_meter):
    """Sampled power then gives the energy, and a warning says why the counter was not used
    (it was silent: a helper's review)."""
    gpu = SimulatedGpu(power_w=100.0, counter_start_j=1000.0)
    meter = make_meter([gpu])
    w = meter.start("driver reload")
    time.sleep(0.05)
    gpu.counter_start_j = 0.0
    time.sleep(0.05)
    m = w.stop()
    d = m.device("gpu0")
    assert d.method == "sampled:instant" and d.energy_j is not None
    assert "went backwards" in d.counter_reason
    assert any("went backwards" in w and "sampled instant power instead" in w
               for w in m.warnings)


# -- failures ------------------------------------------------------------------------------------


def test_sensor_failing_mid_window_marks_the_measurement_failed(make_meter):
    gpu = SimulatedGpu(power_w=100.0)
    meter = make_meter([gpu])
    w = meter.start("work")
    time.sleep(0.1)
    gpu.fail()
    time.sleep(0.1)
    m = w.stop()  # no exception escapes
    assert m.failed
    assert any(e.startswith("gpu0:") and "simulated failure" in e for e in m.errors)
    d = m.device("gpu0")
    assert d.counter_energy_j is None  # the counter was not read at the end edge
    assert d.energy_j != 0.0
    assert m.energy_j != 0.0


def test_counter_only_gpu_failing_mid_window_has_no_energy_and_a_reason(make_meter):
    gpu = SimulatedGpu(power_w=100.0, power_sources=(), fail_after_s=0.1)
    meter = make_meter([gpu])
    w = meter.start("work")
    time.sleep(0.15)
    m = w.stop()
    d = m.device("gpu0")
    assert m.failed
    assert d.energy_j is None and d.method is None
    assert d.active_energy_j is None and d.avg_power_w is None
    assert "both window edges" in d.reason
    assert m.energy_j is None and m.avg_power_w is None
    assert "gpu0" in m.reason
    assert m.duration_s == pytest.approx(0.15, abs=0.1)


def test_sensor_failing_for_the_whole_window_has_no_energy(make_meter):
    gpu = SimulatedGpu(power_w=100.0)
    gpu.fail()
    m = run_window(make_meter([gpu]), 0.1)
    d = m.device("gpu0")
    assert m.failed
    assert d.energy_j is None
    assert d.reason
    assert m.energy_j is None
    assert m.reason.startswith("gpu0: ")


def test_transient_failure_keeps_the_counter_energy_but_flags_the_window(make_meter):
    gpu = SimulatedGpu(power_w=100.0, update_s=0.01)
    meter = make_meter([gpu])
    w = meter.start("work")
    time.sleep(0.1)
    gpu.fail()
    time.sleep(0.05)
    gpu.recover()
    time.sleep(0.1)
    m = w.stop()
    assert m.failed  # do not use it as a data point ...
    assert m.errors
    # ... though the counter, read at both edges, still tells the energy
    assert m.energy_j == pytest.approx(100.0 * m.duration_s, abs=tolerance_j(100.0, 0.01))


def test_gpu_that_stops_answering_mid_window_reports_no_made_up_energy(make_meter):
    gpu = SimulatedGpu(power_w=100.0)
    meter = make_meter([gpu])
    w = meter.start("work")
    time.sleep(0.05)
    gpu.fail()
    time.sleep(0.25)  # 5/6 of the window is never read
    m = w.stop()
    assert m.failed
    assert m.device("gpu0").energy_j is None
    assert m.device("gpu0").reason


# -- no sensor, several sensors --------------------------------------------------------------------


def test_meter_without_sensors_still_measures_time(make_meter):
    meter = make_meter([], unavailable=[Unavailable("gpu", "NVML library not found: no driver")])
    m = run_window(meter, 0.1)
    assert m.duration_s == pytest.approx(0.1, abs=0.05)
    assert m.start_unix_s == pytest.approx(time.time(), abs=5)
    assert m.devices == ()
    assert m.energy_j is None and m.active_energy_j is None and m.avg_power_w is None
    assert m.cpu_energy_j is None and m.dram_energy_j is None
    assert m.method is None
    assert m.reason == "no GPU measured: NVML library not found: no driver"
    assert not m.failed


def test_meter_without_any_gpu_selected_says_so(make_meter):
    m = run_window(make_meter([]), 0.01)
    assert m.energy_j is None
    assert m.reason == "no GPU measured: none selected"


def test_several_gpus_each_measured_and_total_is_their_sum(make_meter):
    gpus = [SimulatedGpu(i, power_w=100.0 * (i + 1), update_s=0.01) for i in range(3)]
    m = run_window(make_meter(gpus), 0.3)
    assert [d.device for d in m.devices] == ["gpu0", "gpu1", "gpu2"]
    for i, d in enumerate(m.devices):
        watts = 100.0 * (i + 1)
        assert d.energy_j == pytest.approx(watts * m.duration_s, abs=tolerance_j(watts, 0.01))
    assert m.energy_j == pytest.approx(sum(d.energy_j for d in m.devices))
    assert m.samples == sum(d.samples for d in m.devices)


def test_one_unmeasurable_gpu_makes_the_total_unknown_not_smaller(make_meter):
    good = SimulatedGpu(0, power_w=100.0)
    blind = SimulatedGpu(1, has_counter=False, power_sources=())
    m = run_window(make_meter([good, blind]), 0.1)
    assert m.device("gpu0").energy_j > 0
    assert m.device("gpu1").energy_j is None
    assert m.energy_j is None
    assert m.reason.startswith("gpu1: ")


def test_cpu_and_dram_are_reported_apart_from_gpu_energy(make_meter):
    gpu = SimulatedGpu(power_w=200.0, update_s=0.01)
    cpu = SimulatedRaplZone("cpu0", "cpu", power_w=40.0)
    dram = SimulatedRaplZone("dram0", "dram", power_w=10.0)
    meter = make_meter([gpu, cpu, dram])
    meter.measure_idle(0.1)
    m = run_window(meter, 0.3)
    g = m.device("gpu0")
    assert m.energy_j == g.energy_j
    assert m.active_energy_j == g.active_energy_j
    assert m.avg_power_w == pytest.approx(g.energy_j / m.duration_s)
    assert m.method == "counter"
    assert m.cpu_energy_j == pytest.approx(40.0 * m.duration_s, abs=tolerance_j(40.0, 0.001))
    assert m.dram_energy_j == pytest.approx(10.0 * m.duration_s, abs=tolerance_j(10.0, 0.001))
    assert m.device("cpu0").kind == "cpu" and m.device("dram0").kind == "dram"


def test_cpu_only_meter_has_cpu_energy_but_no_gpu_energy(make_meter):
    m = run_window(make_meter([SimulatedRaplZone("cpu0", "cpu", power_w=30.0)]), 0.1)
    assert m.cpu_energy_j == pytest.approx(30.0 * m.duration_s, abs=tolerance_j(30.0, 0.001))
    assert m.energy_j is None
    assert m.reason.startswith("no GPU measured")


# -- windows ---------------------------------------------------------------------------------------


def test_nested_windows_each_get_their_own_energy(make_meter):
    gpu = SimulatedGpu(power_w=100.0, update_s=0.005)
    meter = make_meter([gpu])
    outer = meter.start("outer")
    with meter.window("prefill") as first:
        time.sleep(0.2)
    gpu.set_power(300.0)
    with meter.window("decode") as second:
        time.sleep(0.2)
    m = outer.stop()
    a, b = first.measurement, second.measurement
    assert (a.name, b.name, m.name) == ("prefill", "decode", "outer")
    assert a.energy_j == pytest.approx(100.0 * a.duration_s, abs=tolerance_j(100.0, 0.005))
    assert b.energy_j == pytest.approx(300.0 * b.duration_s, abs=tolerance_j(300.0, 0.005))
    assert m.duration_s > a.duration_s + b.duration_s
    assert m.energy_j >= a.energy_j + b.energy_j - tolerance_j(300.0, 0.005)
    assert m.energy_j == pytest.approx(
        gpu.energy_between(outer.start_s, outer.start_s + m.duration_s),
        abs=tolerance_j(300.0, 0.005),
    )


def test_overlapping_windows_are_independent(make_meter):
    gpu = SimulatedGpu(power_w=100.0, update_s=0.005)
    meter = make_meter([gpu])
    first = meter.start("first")
    time.sleep(0.1)
    second = meter.start("second")
    time.sleep(0.1)
    m1 = first.stop()
    time.sleep(0.1)
    m2 = second.stop()
    for m in (m1, m2):
        assert m.energy_j == pytest.approx(100.0 * m.duration_s, abs=tolerance_j(100.0, 0.005))


def test_sync_is_called_at_each_window_edge_before_reading_the_sensors(make_meter):
    gpu = SimulatedGpu()
    calls = []
    meter = make_meter([gpu], sample_period_s=None, sync=lambda: calls.append(gpu.reads["energy"]))
    w = meter.start("work")
    assert calls == [0]  # at the start, before the first counter read
    m = w.stop()
    assert calls == [0, 1]  # at the end, before the last counter read
    assert gpu.reads["energy"] == 2
    assert w.stop() is m
    assert calls == [0, 1]  # stopping again reads nothing and waits for nothing


def test_sync_with_the_window_context_manager(make_meter):
    calls = []
    meter = make_meter([SimulatedGpu()], sync=lambda: calls.append(1))
    with meter.window("work") as w:
        assert len(calls) == 1
        assert w.measurement is None
    assert len(calls) == 2
    assert w.measurement is not None
    assert w.measurement.name == "work"


def test_start_stop_and_stopping_twice_returns_the_same_measurement(make_meter):
    meter = make_meter([SimulatedGpu()])
    w = meter.start("work")
    time.sleep(0.05)
    m = w.stop()
    time.sleep(0.05)
    assert w.stop() is m
    assert w.measurement is m


def test_window_closes_even_when_the_work_raises(make_meter):
    meter = make_meter([SimulatedGpu()])
    with pytest.raises(RuntimeError, match="boom"), meter.window("work") as w:
        raise RuntimeError("boom")
    assert w.measurement is not None
    assert w.measurement.energy_j is not None


def test_record_state_keeps_sensor_state_at_both_edges(make_meter):
    gpu = SimulatedGpu(state={"temperature_c": 41})
    meter = make_meter([gpu])
    with meter.window("plain") as plain:
        pass
    with meter.window("stateful", record_state=True) as stateful:
        pass
    assert plain.measurement.device("gpu0").state_start == {}
    d = stateful.measurement.device("gpu0")
    assert d.state_start == {"temperature_c": 41}
    assert d.state_end == {"temperature_c": 41}


def test_measurement_to_dict_is_plain_data(make_meter):
    import json

    m = run_window(make_meter([SimulatedGpu()]), 0.05)
    data = json.loads(json.dumps(m.to_dict()))
    assert data["name"] == "work"
    assert data["devices"][0]["device"] == "gpu0"
    assert data["energy_j"] == pytest.approx(m.energy_j)


def test_sampler_stops_when_no_window_is_open(make_meter):
    gpu = SimulatedGpu()
    meter = make_meter([gpu])
    run_window(meter, 0.1)
    time.sleep(0.05)  # let a tick in flight finish
    reads = gpu.reads["power"]
    time.sleep(0.1)
    assert gpu.reads["power"] == reads


def test_closing_the_meter_stops_open_windows_and_closes_sensors(make_meter):
    gpu = SimulatedGpu()
    meter = make_meter([gpu])
    w = meter.start("left open")
    meter.close()
    assert w.measurement is not None
    assert gpu.closed


@pytest.mark.parametrize(
    "sensor",
    [
        {"power_sources": ()},  # NVML-like: no energy at all for the window
        {"power_sources": (), "counter_range_j": 1000.0},  # RAPL-like: a whole range too much
    ],
    ids=["no-wrap", "wrapping"],
)
def test_sampler_reading_racing_a_window_start_does_not_corrupt_it(make_meter, sensor):
    # A sampler tick that reads the counter while a nested window reads its start edge, and
    # hands its reading over just after the window registered (a preempted thread, a slow
    # read). Events order the two threads deterministically.
    edge_started = threading.Event()  # the window's start edge read has begun
    sampler_read = threading.Event()  # the sampler read the counter after that
    edge_done = threading.Event()  # the window's start edge read is over
    armed = threading.Event()
    captured = threading.Event()

    def before_read(op: str) -> None:
        if not armed.is_set():
            return
        sampler = threading.current_thread().name == "infergy-sampler"
        if not sampler and op == "energy" and not edge_started.is_set():
            edge_started.set()
            sampler_read.wait(2)  # the sampler reads the counter meanwhile
        elif not sampler and op == "power" and edge_started.is_set():
            edge_done.set()
        elif sampler and op == "energy" and edge_started.is_set() and not captured.is_set():
            captured.set()
        elif sampler and op == "power" and captured.is_set() and not sampler_read.is_set():
            sampler_read.set()
            edge_done.wait(2)
            time.sleep(0.05)  # the window registers meanwhile

    gpu = SimulatedGpu(power_w=100.0, update_s=0.0, before_read=before_read, **sensor)
    # the sampler reads the counter at every tick here (default: once a second)
    meter = make_meter([gpu], sample_period_s=0.005, counter_period_s=0.0)
    with meter.window("outer"):
        time.sleep(0.02)
        armed.set()
        inner = meter.start("inner")
        armed.clear()
        time.sleep(0.1)
        m = inner.stop()
    assert sampler_read.is_set()  # the race did happen
    assert m.energy_j == pytest.approx(100.0 * m.duration_s, abs=tolerance_j(100.0, 0.0))


# -- phases sharing edges ------------------------------------------------------------------------


def test_split_fork_and_stop_together_share_edges(make_meter):
    # A request window with prefill then decode inside it, as the point runner opens them.
    gpu = SimulatedGpu(power_w=100.0, update_s=0.0)
    meter = make_meter([gpu])
    request = meter.start("request")
    prefill = request.fork("prefill")
    time.sleep(0.1)
    gpu.set_power(300.0)
    decode = prefill.split("decode")
    time.sleep(0.2)
    m_decode, m_request = meter.stop(decode, request)
    m_prefill = prefill.measurement
    assert m_prefill.start_unix_s == m_request.start_unix_s  # fork: the same start edge
    # split and stop together: phases tile the request exactly, in time and energy
    assert m_prefill.duration_s + m_decode.duration_s == pytest.approx(m_request.duration_s)
    assert m_prefill.energy_j + m_decode.energy_j == pytest.approx(m_request.energy_j)
    assert m_prefill.avg_power_w == pytest.approx(100.0, rel=0.1)
    assert m_decode.avg_power_w == pytest.approx(300.0, rel=0.1)
    assert meter.stop(decode) == [m_decode]  # stopping again returns the same result


def test_window_shorter_than_the_counter_period_trusts_instant_power(make_meter):
    # A 100 ms counter may not step at all in a 30 ms prefill: 0 J would be made up.
    gpu = SimulatedGpu(power_w=200.0, update_s=0.1)
    meter = make_meter([gpu])
    meter.counter_update_s["gpu0"] = 0.1  # as measure_idle would have observed
    m = run_window(meter, 0.03)
    d = m.device("gpu0")
    assert d.method == "sampled:instant"
    assert d.energy_j == pytest.approx(200.0 * m.duration_s, rel=0.05)
    assert d.counter_energy_j is not None  # still reported, not trusted
    assert any("shorter than two updates" in w for w in m.warnings)
    # a window long enough for the counter goes back to it
    assert run_window(meter, 0.3).device("gpu0").method == "counter"


def test_several_gpus_too_coarse_for_a_window_get_one_warning_naming_them_all(make_meter):
    """A window of TP 4 named its four GPUs' counters in four warnings alike: now in one."""
    meter = make_meter([SimulatedGpu(i, update_s=0.05) for i in range(3)])
    meter.measure_idle(0.4)
    m = run_window(meter, 0.2)
    coarse = [w for w in m.warnings if "too short" in w]
    assert len(coarse) == 1 and coarse[0].startswith("gpu0, gpu1, gpu2: window of ")
    assert "their energy counters update every" in coarse[0]


# -- run_command: a command run to its end, signals passed on ---------------------------------


def signal_self_when(ready, sig: int, then: float = 0.0) -> threading.Thread:
    """Send this process `sig` once `ready()` holds (a terminal's Ctrl-C, a scheduler's
    SIGTERM), and again `then` seconds later where `then` is given."""
    def send():
        deadline = time.monotonic() + 10
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), sig)
        if then:
            time.sleep(then)
            os.kill(os.getpid(), sig)
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_run_command_returns_the_status_and_128_plus_the_signal_that_ended_it():
    assert run_command(["sh", "-c", "exit 3"]) == (3, False)
    assert run_command(["sh", "-c", "kill -KILL $$"]) == (137, False)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_run_command_passes_the_signal_on_to_the_command(tmp_path, sig, code):
    ready = tmp_path / "ready"
    signal_self_when(ready.exists, sig)
    assert run_command(["sh", "-c", f"touch {ready}; exec sleep 10"]) == (code, True)


def test_run_command_escalates_when_the_command_ignores_the_signal(tmp_path):
    """SIGINT ignored: SIGTERM after the grace time ends it."""
    ready = tmp_path / "ready"
    signal_self_when(ready.exists, signal.SIGINT)
    start = time.monotonic()
    code = run_command(["sh", "-c", f"trap '' INT; touch {ready}; sleep 10"], grace_s=0.3)
    assert code == (143, True)
    assert time.monotonic() - start < 5


def test_run_command_a_second_signal_moves_on_at_once(tmp_path):
    """Ctrl-C ignored, Ctrl-C again: SIGTERM, then SIGKILL for a command that ignores both,
    without waiting for the grace time."""
    ready = tmp_path / "ready"
    signal_self_when(ready.exists, signal.SIGINT, then=0.3)
    start = time.monotonic()
    code = run_command(["sh", "-c", f"trap '' INT; touch {ready}; sleep 10"], grace_s=30)
    assert code == (143, True)
    assert time.monotonic() - start < 5


def test_run_command_signal_before_the_command_starts_still_reaches_it(monkeypatch):
    popen = subprocess.Popen

    def slow_popen(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # while it is being started
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", slow_popen)
    start = time.monotonic()
    assert run_command(["sleep", "10"]) == (143, True)
    assert time.monotonic() - start < 5


def test_run_command_passes_on_a_signal_the_kernel_gave_another_thread(tmp_path):
    """A process's signal may reach any of its threads (the meter's sampler, say): Python runs
    the handler on the main thread, which must not sit in one blocking wait meanwhile."""
    ready = tmp_path / "ready"

    def send():
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # to this thread only

    threading.Thread(target=send, daemon=True).start()
    start = time.monotonic()
    assert run_command(["sh", "-c", f"touch {ready}; exec sleep 10"]) == (130, True)
    assert time.monotonic() - start < 5


def test_run_command_leaves_the_signal_handlers_as_they_were():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    run_command(["true"])
    with pytest.raises(FileNotFoundError):
        run_command(["infergy-no-such-command-here"])
    assert {s: signal.getsignal(s) for s in before} == before
