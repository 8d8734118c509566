"""8-bit blockwise quantization: the maps against bitsandbytes, the kernels'
encoder/decoder against the plain-numpy twin (bit for bit), nearest codes by
brute force, and agreement with bitsandbytes' own CPU quantizer."""
import numpy as np
import pytest

from lrfast import _quant as Q
from lrfast._dispatch import available_isas, load

ISAS = available_isas()


def brute_codes(y, signed):
    """Nearest map value by exhaustive search, ties to the larger value; on the
    unsigned map a positive value never takes the code of 0.0 (the floor)."""
    m = Q.dynamic_map(signed).astype(np.float64)
    d = np.abs(y.astype(np.float64)[:, None] - m[None, :])
    if not signed:
        d[:, 0] = np.where(y > 0, np.inf, d[:, 0])
    best = d.min(axis=1, keepdims=True)
    # the LAST index among the minima: ties go to the larger map value
    return 255 - np.argmax((d == best)[:, ::-1], axis=1)


def adam_like(n, seed, signed):
    # first-step Adam moments of a Gaussian grad (on heavy-tailed grads, whose
    # codes sit in the small decades, bnb's search misses far more often)
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(n).astype(np.float32)
    return (np.float32(0.1) * g) if signed else (np.float32(0.001) * g * g)


def inputs():
    rng = np.random.default_rng(7)
    tiny = (rng.standard_normal(1000) * 1e-30).astype(np.float32)
    denorm = (rng.standard_normal(700) * 1e-42).astype(np.float32)      # subnormal float32
    huge = (rng.standard_normal(900) * 1e37).astype(np.float32)
    mixed = (rng.standard_normal(5000) * np.exp(rng.uniform(-30, 30, 5000))).astype(np.float32)
    zeros = np.zeros(600, np.float32)
    zeros[300] = -0.0
    spike = np.zeros(513, np.float32)
    spike[[3, 260, 512]] = [1e-3, -2.0, 7.0]
    return {"random": rng.standard_normal(10 ** 5).astype(np.float32), "tiny": tiny,
            "denormal": denorm, "huge": huge, "mixed": mixed, "zeros": zeros, "spike": spike,
            "short_last": rng.standard_normal(256 * 3 + 17).astype(np.float32),
            "one": np.array([-3.5], np.float32), "empty": np.zeros(0, np.float32),
            "2d": rng.standard_normal((37, 29)).astype(np.float32)}


def test_map_shape_and_order():
    for signed in (True, False):
        m = Q.dynamic_map(signed)
        assert m.dtype == np.float32 and m.shape == (256,)
        assert np.all(np.diff(m) > 0)
        assert m[-1] == 1.0 and (m[0] == 0.0) == (not signed)
        assert m[Q.zero_code(signed)] == 0.0
    assert Q.zero_code(True) == 127 and Q.zero_code(False) == 0


def test_maps_equal_bitsandbytes():
    F = pytest.importorskip("bitsandbytes.functional")
    torch = pytest.importorskip("torch")
    cap = torch.backends.cpu.get_cpu_capability()
    for signed in (True, False):
        theirs = F.create_dynamic_map(signed=signed).numpy()
        if cap == "DEFAULT":       # torch's generic kernels: linspace without fused multiply-add
            np.testing.assert_array_equal(Q._build_map(signed, fma=False), theirs)
        else:
            np.testing.assert_array_equal(Q.dynamic_map(signed), theirs)


def test_linspace_twin_equals_torch():
    torch = pytest.importorskip("torch")
    fma = torch.backends.cpu.get_cpu_capability() != "DEFAULT"
    for n in (2, 3, 5, 9, 17, 33, 65, 129):
        np.testing.assert_array_equal(Q._linspace32(n, fma),
                                      torch.linspace(0.1, 1, n, dtype=torch.float32).numpy())


@pytest.mark.parametrize("signed", [True, False])
def test_twin_codes_are_nearest(signed):
    # every code the twin gives is the nearest map value (brute force), incl. ties
    m = Q.dynamic_map(signed).astype(np.float64)
    mids32 = ((m[:-1] + m[1:]) / 2).astype(np.float32)
    near = np.concatenate([mids32, np.nextafter(mids32, np.float32(2)),
                           np.nextafter(mids32, np.float32(-2)), Q.dynamic_map(signed)])
    rng = np.random.default_rng(3)
    y = np.concatenate([near, rng.uniform(-1, 1, 20000), np.exp(rng.uniform(-25, 0, 20000))
                        * rng.choice([-1, 1], 20000)]).astype(np.float32)
    if not signed:
        y = np.abs(y)
    y = y[np.abs(y) <= 1]
    # put 1.0 in every block: absmax 1, so x / absmax == x exactly
    blocks = np.array_split(y, -(-y.size // 255))
    x = np.concatenate([np.append(b, np.float32(1.0)) for b in blocks]).astype(np.float32)
    codes, absmax = Q.quantize_blockwise_ref(x, signed)
    assert np.all(absmax == 1.0)
    np.testing.assert_array_equal(codes, brute_codes(x, signed))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("signed", [True, False])
def test_kernel_equals_twin(isa, signed):
    K = load(isa)
    for name, x in inputs().items():
        if not signed:
            x = np.abs(x)
        c, a = K.quantize_blockwise(x, signed)
        c2, a2 = Q.quantize_blockwise_ref(x, signed)
        assert c.shape == x.shape and c.dtype == np.uint8, name
        assert a.shape == (Q.n_blocks(x.size),) and a.dtype == np.float32, name
        np.testing.assert_array_equal(c, c2, err_msg=name)
        np.testing.assert_array_equal(a.view(np.uint32), a2.view(np.uint32), err_msg=name)
        d = K.dequantize_blockwise(c, a, signed)
        d2 = Q.dequantize_blockwise_ref(c2, a2, signed)
        np.testing.assert_array_equal(d.view(np.uint32), d2.view(np.uint32), err_msg=name)
        if x.size:
            # absmax is the largest |x| of its block, decoded values stay within it
            assert np.all(np.abs(d.reshape(-1)) <= np.repeat(a, 256)[:x.size])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("signed", [True, False])
def test_kernel_codes_are_nearest_everywhere(isa, signed):
    # the encoder's table: every key edge and every midpoint neighbourhood, against
    # brute force (absmax 1 in every block, so the codes see these exact values)
    K = load(isa)
    keys = np.arange(Q.N_KEYS + 1, dtype=np.int64) + Q.KEY_MIN
    edges = (keys << Q.KEY_SHIFT).astype(np.uint32).view(np.float32)
    edges = np.concatenate([edges, np.nextafter(edges, np.float32(0))])
    m = Q.dynamic_map(signed).astype(np.float64)
    mids32 = ((m[:-1] + m[1:]) / 2).astype(np.float32)
    near, up, down = [mids32], mids32, mids32
    for _ in range(3):                      # three float32 steps either side
        up, down = np.nextafter(up, np.float32(2)), np.nextafter(down, np.float32(-2))
        near += [up, down]
    y = np.concatenate([edges, -edges, np.concatenate(near), np.float32([0, -0.0, 1e-45, -1e-45])])
    y = y[np.abs(y) <= 1].astype(np.float32)
    if not signed:
        y = y[y >= 0]
    blocks = np.array_split(y, -(-y.size // 255))
    x = np.concatenate([np.append(b, np.float32(1.0)) for b in blocks]).astype(np.float32)
    codes, absmax = K.quantize_blockwise(x, signed)
    assert np.all(absmax == 1.0)
    np.testing.assert_array_equal(codes, brute_codes(x, signed))


@pytest.mark.parametrize("isa", ISAS)
def test_special_blocks(isa):
    K = load(isa)
    x = np.ones(256 * 4 + 5, np.float32)
    x[10] = np.nan
    x[300] = np.inf
    x[600] = -np.inf
    x[256 * 3:] = 0.0
    for signed in (True, False):
        c, a = K.quantize_blockwise(x, signed)
        z = Q.zero_code(signed)
        assert np.isnan(a[:3]).all() and a[3] == 0.0 and a[4] == 0.0
        assert np.all(c == z)
        d = K.dequantize_blockwise(c, a, signed)
        assert np.isnan(d[:768]).all() and np.all(d[768:] == 0.0)
        c2, a2 = Q.quantize_blockwise_ref(x, signed)
        np.testing.assert_array_equal(c, c2)
        np.testing.assert_array_equal(a.view(np.uint32), a2.view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
def test_bad_input(isa):
    K = load(isa)
    x = np.ones(10, np.float32)
    with pytest.raises(TypeError, match="float32"):
        K.quantize_blockwise(np.ones(10), True)
    with pytest.raises(TypeError, match="numpy array"):
        K.quantize_blockwise([1.0, 2.0], True)
    with pytest.raises(TypeError, match="bool"):
        K.quantize_blockwise(x, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        K.quantize_blockwise(np.ones((4, 4), np.float32)[:, 1], True)
    c, a = K.quantize_blockwise(x, True)
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        K.dequantize_blockwise(c, np.ones(2, np.float32), True)
    with pytest.raises(TypeError, match="uint8"):
        K.dequantize_blockwise(c.astype(np.int8), a, True)
    with pytest.raises(TypeError, match="float32"):
        K.dequantize_blockwise(c, a.astype(np.float64), True)
    with pytest.raises(ValueError, match="absmax"):
        Q.dequantize_blockwise_ref(c, np.ones(3, np.float32), True)


def _bnb_quantize(x, signed):
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    code = F.create_dynamic_map(signed=signed)
    out, state = F.quantize_blockwise(torch.from_numpy(x), code=code, blocksize=256)
    return out.numpy(), state.absmax.numpy(), code.numpy()


@pytest.mark.parametrize("signed,want", [(True, 0.995), (False, 0.90)])
def test_agreement_with_bitsandbytes(signed, want):
    x = adam_like(256 * 4000 + 100, 11, signed)
    ours, am = Q.quantize_blockwise_ref(x, signed)
    theirs, tam, code = _bnb_quantize(x, signed)
    np.testing.assert_allclose(am, tam, rtol=1e-5, atol=0)
    same = np.mean(ours == theirs)
    assert same >= want, same
    # where bnb differs, ours is the nearer (or equally near) value of bnb's map
    y = x / np.repeat(am, 256)[:x.size]
    diff = ours != theirs
    e_ours = np.abs(code[ours[diff]].astype(np.float64) - y[diff])
    e_theirs = np.abs(code[theirs[diff]].astype(np.float64) - y[diff])
    assert np.all(e_ours <= e_theirs)
