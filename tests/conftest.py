import numpy as np
import pytest

import lrfast


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
