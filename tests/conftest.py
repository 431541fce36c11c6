"""Shared fixtures. This file also puts tests/ on sys.path, so tests import the doubles in
`simulated` and `fake_pynvml` directly."""

from __future__ import annotations

import pytest

from infergy.engines import engine_class, engine_names
from infergy.meter import Meter
from infergy.models import get_model


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


@pytest.fixture(scope="module")
def tiny():
    """The tiny test model's spec (2 layers, hidden 64)."""
    return get_model("tiny")


@pytest.fixture(scope="module")
def engines(tiny):
    """Every engine that runs on a CPU, with the tiny model loaded once, float32."""
    loaded = {}
    for name in engine_names():
        cls = engine_class(name)
        if not cls.needs_gpu:
            loaded[name] = cls(tiny, device="cpu", dtype="float32")
            loaded[name].load()
    yield loaded
    for engine in loaded.values():
        engine.close()
