"""Adam float32 against its peers, grouped per (case, threads) so that
pytest-benchmark's table compares them: lrfast, the bandwidth ceiling (same
bytes, trivial arithmetic, lrfast's Engine and threads), numpy in place (one
thread), torch.optim for-loop / foreach / fused (skipped without torch).

For ratios measured in ONE interleaved run use ``python -m lrfast bench``."""
import numpy as np
import pytest

from lrfast.cli.bench import (OPTIMIZERS, Ceiling, _numpy_contender, _Skip, _torch_contender,
                          make_case, make_inputs, optimizer_bytes_per_element)

PEERS = ["lrfast", "ceiling", "numpy", "torch-forloop", "torch-foreach", "torch-fused"]


def _peer(impl, shapes, make_lrfast, nthreads):
    if impl == "lrfast":
        return make_lrfast("adam", shapes, "float32")[0]
    cls, hp = OPTIMIZERS["adam"]
    params, grads = make_inputs(shapes, np.float32)
    if impl == "ceiling":
        return Ceiling(params, grads, 2).step
    try:
        if impl == "numpy":
            return _numpy_contender(cls, hp, params, grads)
        fn = _torch_contender(impl, cls, hp, params, grads)
    except _Skip as e:
        pytest.skip(str(e))
    import torch                       # imported by the contender: now set its threads
    torch.set_num_threads(nthreads)
    return fn


@pytest.mark.parametrize("impl", PEERS)
def test_adam_peer(benchmark, bench, make_lrfast, impl, size, nthreads):
    if impl == "numpy" and nthreads != 1:
        pytest.skip("numpy runs on one thread")
    fn = _peer(impl, [(size,)], make_lrfast, nthreads)
    bench(benchmark, fn, size, optimizer_bytes_per_element(2, 4),
          group=f"adam-peers-{size}-{nthreads}t")


@pytest.mark.parametrize("impl", PEERS)
def test_adam_peer_many_small(benchmark, bench, make_lrfast, bench_quick, impl, nthreads):
    if impl == "numpy" and nthreads != 1:
        pytest.skip("numpy runs on one thread")
    c = make_case("many-small", quick=bench_quick)
    fn = _peer(impl, c["shapes"], make_lrfast, nthreads)
    bench(benchmark, fn, c["n_elements"], optimizer_bytes_per_element(2, 4),
          group=f"adam-peers-many-small-{nthreads}t")
