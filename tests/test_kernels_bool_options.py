"""The functional adam_step takes a numpy bool for amsgrad: np.True_ selects
the max state, as True does."""
import numpy as np

from lrfast import kernels


def test_adam_step_numpy_bool_amsgrad_uses_max_state():
    args = [np.ones(4), np.full(4, 0.5), np.zeros(4), np.zeros(4), np.zeros(4)]
    ref = [a.copy() for a in args]
    kernels.adam_step(*ref[:4], lr=0.1, step=1, amsgrad=True, max_exp_avg_sq=ref[4])
    kernels.adam_step(*args[:4], lr=0.1, step=1, amsgrad=np.True_, max_exp_avg_sq=args[4])
    for a, b in zip(args, ref):
        np.testing.assert_array_equal(a, b)
