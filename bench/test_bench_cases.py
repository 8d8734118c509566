"""Multi-tensor cases: 200 small tensors (100..1e4 elements, log-uniform) and
the parameter list of a ~10.6M-param model (token/position embeddings + one
d=768 transformer block, 16 tensors), for every optimizer at 1 and 2 threads."""
import pytest

from lrfast.cli.bench import make_case


@pytest.mark.parametrize("case", ["many-small", "model"])
def test_case(benchmark, bench, make_lrfast, bench_quick, opt_name, case, nthreads):
    c = make_case(case, quick=bench_quick)
    step, n, bpe = make_lrfast(opt_name, c["shapes"], "float32")
    benchmark.extra_info["n_tensors"] = c["n_tensors"]
    bench(benchmark, step, n, bpe, group=f"{case}-float32-{nthreads}t")
