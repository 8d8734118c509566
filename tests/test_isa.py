"""Both ISA builds give bit-identical results; LRFAST_ISA selects the build."""
import os
import subprocess
import sys

import numpy as np

from lrfast.optim import TABLE
from lrfast.optim._rules import build_row

import lrfast
from lrfast import _dispatch

SCRIPT = r"""
import hashlib, numpy as np, lrfast
lrfast.set_parallel_threshold(0)
h = hashlib.sha256()
for name, hp in [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)), ("Adam", dict(lr=0.01, amsgrad=True)),
                 ("AdamW", dict(lr=0.01)), ("RMSprop", dict(centered=True, momentum=0.5)),
                 ("Adagrad", dict()), ("Adadelta", dict()), ("Adamax", dict()), ("NAdam", dict()),
                 ("RAdam", dict(weight_decay=0.1))]:
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(0)
        ps = [rng.standard_normal(n).astype(dtype) for n in (1, 33, 20000, 70001)]
        opt = getattr(lrfast, name)(ps, **hp)
        for _ in range(4):
            opt.step([rng.standard_normal(p.shape).astype(dtype) for p in ps])
        for p in ps:
            h.update(p.tobytes())
# 16-bit arrays: Adam in one pass on AVX2, staged on the baseline build
try:
    import ml_dtypes
    BF16 = ml_dtypes.bfloat16
except ImportError:
    BF16 = None
LOWP = []              # bfloat16 arrays need ml_dtypes (an optional dependency)
if BF16 is not None:  # bfloat16 state; bfloat16 params, with or without a master copy
    LOWP = [("Adam", dict(lr=0.01, weight_decay=0.01, state_dtype="bfloat16"), np.float32),
            ("AdamW", dict(lr=0.01, state_dtype="bfloat16"), np.float32),
            ("Adam", dict(lr=0.01, maximize=True, max_grad_norm=1.0, state_dtype="bfloat16"),
             np.float32)]
    LOWP += [("AdamW", dict(lr=0.01, weight_decay=0.1, master_weights=m, state_dtype=sd), BF16)
             for m, sd in ((False, "float32"), (True, "float32"), (True, "bfloat16"))]
for name, hp, dtype in LOWP:
    rng = np.random.default_rng(1)
    ps = [rng.standard_normal(n).astype(dtype) for n in (33, 4096, 70001)]
    opt = getattr(lrfast, name)(ps, **hp)
    for _ in range(4):
        opt.step([rng.standard_normal(p.shape).astype(dtype) for p in ps])
    for p in ps:
        h.update(p.tobytes())
    for st in opt.state_dict()["state"].values():
        h.update(b"".join(np.asarray(v).tobytes() for k, v in sorted(st.items())))
print(lrfast.config()["isa"], h.hexdigest())
"""


def _run(env_isa):
    env = dict(os.environ)
    if env_isa is None:
        env.pop("LRFAST_ISA", None)
    else:
        env["LRFAST_ISA"] = env_isa
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_baseline_and_best_isa_bit_identical():
    best_isa, best = _run(None)
    base_isa, base = _run("baseline")
    assert base_isa == "baseline"
    assert best_isa == _dispatch.available_isas()[-1]
    assert base == best


def test_forced_isa_bad_value_fails_clearly():
    env = dict(os.environ, LRFAST_ISA="sse9")
    out = subprocess.run([sys.executable, "-c", "import lrfast"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "LRFAST_ISA" in out.stderr


def test_isa_never_selects_unsupported():
    if "avx2" in _dispatch.available_isas():
        assert _dispatch.kernels.cpu_supports_x86_64_v3()
    assert lrfast.config()["isa"] in _dispatch.available_isas()


def test_engines_of_both_builds_agree_in_process():
    mods = [_dispatch.load(n) for n in _dispatch.available_isas()]
    rng = np.random.default_rng(1)
    outs = []
    for K in mods:
        r = np.random.default_rng(1)
        p = r.standard_normal(50000).astype(np.float32)
        m, v = np.zeros_like(p), np.zeros_like(p)
        eng = K.Engine(K.KINDS["adam"], [p], [[m, v, None]], [0])
        for t in range(1, 4):
            g = r.standard_normal(p.shape).astype(np.float32)
            row, _ = build_row("Adam", {**TABLE["Adam"].defaults, "lr": 0.01}, t - 1)
            eng.step([g], [row])
        outs.append(p.tobytes())
    assert len(set(outs)) == 1
    assert rng is not None
