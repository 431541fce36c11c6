"""Shared fixtures. This file also puts tests/ on sys.path, so tests import the doubles in
`simulated` and `fake_pynvml` directly."""

from __future__ import annotations

import pytest

from infergy.meter import Meter


@pytest.fixture
def make_meter():
    """Build Meters that are closed (sampler thread joined) at the end of the test.

    Defaults suit simulated sensors: a 10 ms sampler and no CUDA sync."""
    meters: list[Meter] = []

    def make(sensors, **kwargs) -> Meter:
        kwargs.setdefault("sample_period_s", 0.01)
        kwargs.setdefault("sync", lambda: None)
        meter = Meter(sensors, **kwargs)
        meters.append(meter)
        return meter

    yield make
    for meter in meters:
        meter.close()
