import os

import numpy as np
import pytest

import lrfast

try:
    from hypothesis import settings as _hsettings
except ImportError:  # hypothesis is a test extra
    _hsettings = None
if _hsettings is not None:
    # CI runs the property tests with a fixed derivation of examples, so a CI
    # run is reproducible; locally they explore new examples every run.
    _hsettings.register_profile("ci", derandomize=True)
    if os.environ.get("CI"):
        _hsettings.load_profile("ci")


@pytest.fixture
def parallel_always():
    """Run every step through the OpenMP path, however small."""
    old = lrfast.get_parallel_threshold()
    lrfast.set_parallel_threshold(0)
    try:
        yield
    finally:
        lrfast.set_parallel_threshold(old)


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    lrfast.set_num_threads(0)


def bits_equal(a, b):
    """Bit-identical (NaNs equal by position)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
