"""Every optimizer x dtype x size x threads, one tensor, through the public API
(``opt.step(grads)``, validation included)."""


def test_step(benchmark, bench, make_lrfast, opt_name, dtype, size, nthreads):
    step, n, bpe = make_lrfast(opt_name, [(size,)], dtype)
    bench(benchmark, step, n, bpe, group=f"{opt_name}-{dtype}-{nthreads}t")
