"""The arithmetic that turns counter and power readings into joules."""

from __future__ import annotations

import pytest

from infergy.meter.window import counter_step, trapezoid_j, update_period_s

# -- counter_step ------------------------------------------------------------------------------


def test_counter_step_is_the_difference_when_the_counter_goes_up():
    assert counter_step(100.0, 112.5, None) == pytest.approx(12.5)
    assert counter_step(100.0, 112.5, 1000.0) == pytest.approx(12.5)


def test_counter_step_unchanged_counter_is_zero_energy():
    assert counter_step(42.0, 42.0, None) == 0.0


def test_counter_step_wraps_at_the_range():
    # 262143 J RAPL range: read 262000 then 100 -> 100 + 262143 - 262000
    assert counter_step(262_000.0, 100.0, 262_143.0) == pytest.approx(243.0)


def test_counter_step_backwards_without_range_is_unknown_not_negative_or_zero():
    assert counter_step(500.0, 10.0, None) is None
    assert counter_step(500.0, 10.0, 0.0) is None  # a zero range is no range


# -- trapezoid_j ---------------------------------------------------------------------------------


def test_trapezoid_constant_power_is_exact():
    times = [0.0, 0.1, 0.25, 0.7, 1.0]
    assert trapezoid_j(times, [200.0] * 5, 0.0, 1.0) == pytest.approx(200.0)


def test_trapezoid_linear_ramp_is_exact():
    # P(t) = 100 + 50 t over [0, 2]: integral 200 + 100 = 300 J
    times = [0.0, 0.3, 0.5, 1.2, 2.0]
    power = [100 + 50 * t for t in times]
    assert trapezoid_j(times, power, 0.0, 2.0) == pytest.approx(300.0)


def test_trapezoid_holds_first_and_last_reading_beyond_them():
    # readings at 1 s (100 W) and 2 s (300 W) in a window [0, 4]:
    # 100 W held over [0, 1] + 200 W mean over [1, 2] + 300 W held over [2, 4]
    assert trapezoid_j([1.0, 2.0], [100.0, 300.0], 0.0, 4.0) == pytest.approx(100 + 200 + 600)


def test_trapezoid_single_reading_is_held_over_the_window():
    assert trapezoid_j([0.5], [80.0], 0.0, 2.0) == pytest.approx(160.0)


def test_trapezoid_stops_at_the_window_s_end_however_late_its_last_reading():
    """The end edge reads power after the counter: its reading (at 1.004 s) sets the power
    up to the end (1 s), never the window past it; two windows sharing the edge add up to
    the whole (the slice between the edge and its reading was counted by both: +10% on a
    41 ms window at 300 W, a helper's review measured)."""
    times, power = [0.0, 0.5, 1.004, 1.5, 2.004], [100.0, 200.0, 300.4, 300.4, 300.4]
    # P(t) = 100 + 200 t up to 1.002 s, so the first second holds 100 + 100 = 200 J
    assert trapezoid_j(times[:3], power[:3], 0.0, 1.0) == pytest.approx(200.0, rel=1e-3)
    first = trapezoid_j(times[:3], power[:3], 0.0, 1.0)
    second = trapezoid_j(times[2:], power[2:], 1.0, 2.0)
    assert first + second == pytest.approx(trapezoid_j(times, power, 0.0, 2.0), rel=1e-5)
    assert trapezoid_j([0.5], [80.0], 1.0, 1.0) == 0.0


def test_trapezoid_without_readings_raises():
    with pytest.raises(ValueError, match="no power readings"):
        trapezoid_j([], [], 0.0, 1.0)


# -- update_period_s -------------------------------------------------------------------------------


def test_update_period_is_the_median_time_between_changes():
    # polled every 10 ms, the counter changes every 100 ms
    times = [i * 0.01 for i in range(60)]
    values = [float(i // 10) for i in range(60)]
    assert update_period_s(times, values) == pytest.approx(0.1)


def test_update_period_of_a_jittery_counter():
    # polled every 10 ms; the counter changes about every 50 ms
    times = [i * 0.01 for i in range(40)]
    change_at = {5, 10, 16, 20, 25, 30}
    values, v = [], 0.0
    for i in range(40):
        v += i in change_at
        values.append(v)
    assert update_period_s(times, values) == pytest.approx(0.05)


def test_update_period_unknown_when_the_counter_changes_at_most_polls():
    # a counter that changes between most readings is polled too slowly to see its period:
    # the gaps would be the polling period
    times = [i * 0.1 for i in range(10)]
    assert update_period_s(times, [float(i) for i in range(10)]) is None


@pytest.mark.parametrize(
    "values",
    [
        [5.0, 5.0, 5.0, 5.0, 5.0],  # never changes
        [5.0, 6.0, 6.0, 6.0, 6.0],  # one change
        [5.0, 6.0, 6.0, 7.0, 7.0],  # two changes: one interval, not enough
    ],
)
def test_update_period_unknown_with_fewer_than_three_changes(values):
    assert update_period_s([0.0, 0.1, 0.2, 0.3, 0.4], values) is None


def test_update_period_of_no_readings_is_unknown():
    assert update_period_s([], []) is None
