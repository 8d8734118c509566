"""Schedules at the largest steps: the array path equals the scalar path (no
int64 overflow, no offset lost past 2**53)."""
import numpy as np

from lrfast.schedules import StepDecay

MAX = 2 ** 63 - 1


def test_step_decay_array_at_max_step():
    for every in (1, 3):
        s = StepDecay(0.1, drop=0.5, every=every)
        n = np.array([0, 2, 3, MAX - 1, MAX], dtype=np.int64)
        np.testing.assert_array_equal(s(n), [s(int(k)) for k in n])
        assert s(np.array([MAX]))[0] == 0.0


def test_polynomial_decay_cycle_array_at_max_step():
    from lrfast.schedules import PolynomialDecay
    s = PolynomialDecay(0.1, decay_steps=5, end_lr=0.01, power=0.5, cycle=True)
    n = np.array([0, 1, 4, 5, 6, 10, 11, MAX - 1, MAX], dtype=np.int64)
    got = s(n)
    want = np.array([s(int(k)) for k in n])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


def test_cosine_restarts_t_mul_1_array_past_2_53():
    from lrfast.schedules import CosineRestarts
    s = CosineRestarts(0.1, first_decay_steps=3, t_mul=1.0)
    n = np.array([0, 1, 2, 3, 4, 2 ** 62, 2 ** 62 + 1, MAX], dtype=np.int64)
    np.testing.assert_allclose(s(n), [s(int(k)) for k in n], rtol=1e-14, atol=0)
