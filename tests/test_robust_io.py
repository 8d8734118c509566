"""Checkpoint files under hostile use (issue 14, items 6, 16, 17 and 19).

- A crafted archive never makes ``read``/``load`` allocate more than the file
  holds: a header declaring a huge shape, an unnamed (or compressed) member,
  a member whose size disagrees with its header: clear ValueError, optimizer
  unchanged, and members the metadata does not name are never decompressed.
- ``save`` keeps an existing file's mode, gives a new one ``0o666 & ~umask``,
  writes through a symlink to its target, cleans up after any failure (no temp
  file, no leaked descriptor), and never stores an array it could not read
  back without pickle.
- The torch conversions refuse wrong types with TypeError and malformed dicts
  or unknown optimizers with ValueError.
"""
import io
import os
import stat
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

import lrfast
from lrfast import io as lio

from _snap import assert_same, snapshot


def make(seed=0, steps=3):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((5, 4)), rng.standard_normal(7).astype(np.float32)]
    opt = lrfast.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}])
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
    return opt


def members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def write_members(path, ms, compress=None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in ms.items():
            ct = (compress or {}).get(name, zipfile.ZIP_STORED)
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=ct)


def npy_header(shape, dtype="<f8"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def rejects(path, match):
    opt = make(seed=7)
    before = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        lrfast.load(opt, path)
    assert_same(before, snapshot(opt))


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.npz"
    lrfast.save(make(), path)
    return path


# ---------------------------------------------------------------------------
# item 6 (single process): a header declaring a huge shape
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(10**13,), (10**7, 10**7), (2**62, 4)])
def test_huge_declared_shape_is_value_error_not_memory_error(tmp_path, good, shape):
    ms = members(good)
    key = next(k for k in ms if k != "__lrfast_meta__.npy")
    ms[key] = npy_header(shape) + b"\0" * 64        # a 3 KB file claiming terabytes
    bad = tmp_path / "huge.npz"
    write_members(bad, ms)
    assert bad.stat().st_size < 8192
    rejects(bad, r"declares shape")


def test_huge_declared_metadata_string(tmp_path, good):
    ms = members(good)
    ms["__lrfast_meta__.npy"] = npy_header((), "<U200000000") + b"\0" * 64
    bad = tmp_path / "meta.npz"
    write_members(bad, ms)
    rejects(bad, r"declares shape")


def test_member_with_more_data_than_declared(tmp_path, good):
    ms = members(good)
    key = next(k for k in ms if k != "__lrfast_meta__.npy")
    ms[key] = ms[key] + b"\0" * 800
    bad = tmp_path / "long.npz"
    write_members(bad, ms)
    rejects(bad, r"declares shape")


@pytest.mark.parametrize("descr", ["|O", [("a", "<f8")], "|V8"])
def test_member_of_foreign_dtype(tmp_path, good, descr):
    ms = members(good)
    key = next(k for k in ms if k != "__lrfast_meta__.npy")
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": (1,)})
    ms[key] = buf.getvalue() + b"\0" * 8
    bad = tmp_path / "dtype.npz"
    write_members(bad, ms)
    rejects(bad, r"dtype|corrupted")


# ---------------------------------------------------------------------------
# item 16: zip bomb; only named members are read
# ---------------------------------------------------------------------------
def _bomb(path, good, name="bomb.npy", nbytes=64 << 20, named=False):
    ms = members(good)
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in ms.items():
            if named and k == name:
                continue
            zf.writestr(zipfile.ZipInfo(k), v)
        with zf.open(zipfile.ZipInfo(name), "w", force_zip64=True) as f:
            f.write(npy_header((nbytes // 8,)))
            chunk = b"\0" * (1 << 20)
            for _ in range(nbytes >> 20):
                f.write(chunk)
    # (zf.open(..., "w") compresses with the ZipInfo's default: stored) -> recompress
    with zipfile.ZipFile(path) as zf:
        data = {i.filename: zf.read(i) for i in zf.infolist()}
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in data.items():
            zf.writestr(k, v, compress_type=zipfile.ZIP_DEFLATED if k == name
                        else zipfile.ZIP_STORED)


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("bomb")
    good = d / "good.npz"
    lrfast.save(make(), good)
    path = d / "bomb.npz"
    _bomb(path, good)
    assert path.stat().st_size < (1 << 20)          # 64 MiB of data in < 1 MiB
    return path


def test_unnamed_member_is_refused_without_being_read(bomb_file, monkeypatch):
    opened = []
    real = zipfile.ZipFile.open

    def spy(self, name, *a, **k):
        opened.append(getattr(name, "filename", name))
        return real(self, name, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    tracemalloc.start()
    try:
        rejects(bomb_file, r"unexpected archive member.*bomb\.npy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "bomb.npy" not in opened
    assert peak < (16 << 20)


def test_named_member_compressed_is_refused(tmp_path, good):
    ms = members(good)
    key = next(k for k in ms if k != "__lrfast_meta__.npy")
    bad = tmp_path / "deflated.npz"
    write_members(bad, ms, {key: zipfile.ZIP_DEFLATED})
    rejects(bad, r"compressed")


def test_duplicate_member_names_are_refused(tmp_path, good):
    ms = members(good)
    key = next(k for k in ms if k != "__lrfast_meta__.npy")
    bad = tmp_path / "dup.npz"
    write_members(bad, ms)
    with pytest.warns(UserWarning):
        with zipfile.ZipFile(bad, "a") as zf:
            zf.writestr(zipfile.ZipInfo(key), ms[key])
    rejects(bad, r"twice")


def test_extra_small_member_is_refused(tmp_path, good):
    bad = tmp_path / "extra.npz"
    bad.write_bytes(good.read_bytes())
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr("notes.txt", b"hello")
    rejects(bad, r"unexpected archive member.*notes\.txt")


def test_good_file_still_loads_exactly(good):
    src = make()
    opt = make(seed=9, steps=1)
    lrfast.load(opt, good)
    a, b = src.state_dict(), opt.state_dict()
    assert a["step_count"] == b["step_count"]
    for i in a["state"]:
        for k, v in a["state"][i].items():
            if isinstance(v, np.ndarray):
                assert v.tobytes() == b["state"][i][k].tobytes() and v.dtype == b["state"][i][k].dtype
            else:
                assert v == b["state"][i][k]


# ---------------------------------------------------------------------------
# item 19: mode, temp file, kill -9 leftovers, symlinks
# ---------------------------------------------------------------------------
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and symlinks")


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o600, 0o666])
def test_save_keeps_an_existing_files_mode(tmp_path, mode):
    path = tmp_path / "ckpt.npz"
    lrfast.save(make(), path)
    os.chmod(path, mode)
    lrfast.save(make(seed=1), path)
    assert stat.S_IMODE(path.stat().st_mode) == mode


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_file_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        lrfast.save(make(), tmp_path / "new.npz")
        with open(tmp_path / "ref", "wb"):
            pass
    finally:
        os.umask(old)
    got = stat.S_IMODE((tmp_path / "new.npz").stat().st_mode)
    assert got == 0o666 & ~umask == stat.S_IMODE((tmp_path / "ref").stat().st_mode)


def _fds():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:                                  # pragma: no cover
        return None


def _boom(*a, **k):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("target", ["os.fdopen", "os.fchmod", "np.savez", "os.fsync",
                                    "os.replace"])
def test_failed_save_removes_temp_and_leaks_nothing(tmp_path, monkeypatch, target):
    path = tmp_path / "ckpt.npz"
    lrfast.save(make(), path)
    before, fds = path.read_bytes(), _fds()
    mod, attr = target.split(".")
    if not hasattr({"np": np, "os": os}[mod], attr):
        pytest.skip(f"no {target} here")
    monkeypatch.setattr({"np": np, "os": os}[mod], attr, _boom)
    with pytest.raises(OSError):
        lrfast.save(make(seed=1), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]
    assert _fds() == fds


def test_unsaveable_arrays_are_refused_before_any_file(tmp_path):
    for bad in (np.array([object()]), np.zeros(2, [("a", "f8")]), np.ma.array([1.0], mask=[1]),
                np.array(["text"])):
        with pytest.raises(TypeError, match="save"):
            lrfast.save({"format": "x", "a": bad}, tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []


def test_leftover_temp_file_is_never_taken_for_a_checkpoint(tmp_path, monkeypatch):
    """What a kill -9 between write and rename leaves: a complete temp file
    named after the destination. ``load`` refuses it by name."""
    path = tmp_path / "ckpt.npz"
    lrfast.save(make(), path)
    monkeypatch.setattr(os, "replace", lambda *a: os.kill(os.getpid(), 0) or 1 / 0)
    monkeypatch.setattr(lio, "_unlink_quietly", lambda p: None)   # as if killed: no cleanup
    with pytest.raises(ZeroDivisionError):
        lrfast.save(make(seed=3), path)
    monkeypatch.undo()
    left = [p for p in tmp_path.iterdir() if p.name != "ckpt.npz"]
    assert len(left) == 1
    name = left[0].name
    assert name.startswith(".lrfast-ckpt.npz-") and name.endswith(".tmp")
    rejects(left[0], r"interrupted lrfast\.save")
    opt = make(seed=8)
    lrfast.load(opt, path)              # the destination is whole, and loads
    assert opt.step_count == 3


@posix_only
def test_save_writes_through_a_symlink(tmp_path):
    real = tmp_path / "store" / "real.npz"
    real.parent.mkdir()
    link = tmp_path / "ckpt.npz"
    os.symlink(real, link)
    lrfast.save(make(), link)                   # dangling link: creates the target
    assert link.is_symlink() and real.is_file()
    os.chmod(real, 0o640)
    lrfast.save(make(seed=2, steps=5), link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    opt = make(seed=9, steps=1)
    lrfast.load(opt, link)
    assert opt.step_count == 5
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz", "store"]


def test_save_to_a_directory_is_refused_cleanly(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        lrfast.save(make(), tmp_path / "d")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert list((tmp_path / "d").iterdir()) == []


# ---------------------------------------------------------------------------
# item 17: the torch conversions
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("sd", [None, 5, "Adam", [1, 2]])
def test_to_torch_state_dict_wrong_type(sd):
    with pytest.raises(TypeError, match="to_torch_state_dict"):
        lrfast.to_torch_state_dict(sd)


@pytest.mark.parametrize("edit", [
    lambda sd: sd.update(state=5), lambda sd: sd.update(state={"x": {}}),
    lambda sd: sd.update(state={0: 5}), lambda sd: sd.update(param_groups=5),
    lambda sd: sd.update(param_groups=[5]), lambda sd: sd["state"][0].update(step=None),
    lambda sd: sd["state"][0].update(step=np.ones(3)), lambda sd: sd.update(optimizer=None),
])
def test_to_torch_state_dict_malformed(edit):
    sd = make().state_dict()
    edit(sd)
    with pytest.raises(ValueError, match="to_torch_state_dict"):
        lrfast.to_torch_state_dict(sd)


def _tsd():
    return lrfast.to_torch_state_dict(make().state_dict())


@pytest.mark.parametrize("optimizer", [5, None, 1.5, object(), ["Adam"]])
def test_from_torch_state_dict_wrong_optimizer_type(optimizer):
    with pytest.raises(TypeError, match="optimizer"):
        lrfast.from_torch_state_dict(_tsd(), optimizer)


@pytest.mark.parametrize("optimizer", ["Nope", "adam", "", "Optimizer", int, dict])
def test_from_torch_state_dict_unknown_optimizer(optimizer):
    with pytest.raises(ValueError, match="unknown optimizer"):
        lrfast.from_torch_state_dict(_tsd(), optimizer)


@pytest.mark.parametrize("tsd", [None, 5, [1]])
def test_from_torch_state_dict_wrong_tsd_type(tsd):
    with pytest.raises(TypeError, match="tsd"):
        lrfast.from_torch_state_dict(tsd, "Adam")


@pytest.mark.parametrize("edit", [
    lambda t: t.clear(), lambda t: t.pop("state"), lambda t: t.pop("param_groups"),
    lambda t: t.update(state=[1]), lambda t: t.update(state={-1: {}}),
    lambda t: t.update(state={0: 3}), lambda t: t.update(param_groups=[3]),
    lambda t: t["state"][0].update(step=float("nan")),
    lambda t: t["state"][0].update(step=float("inf")),
    lambda t: t["state"][0].update(step=-1.0), lambda t: t["state"][0].update(step="3"),
    lambda t: t["state"][0].update(step=np.ones(2)),
    lambda t: t["param_groups"][0].update(betas=0.9),
])
def test_from_torch_state_dict_malformed(edit):
    t = _tsd()
    edit(t)
    with pytest.raises(ValueError, match="from_torch_state_dict"):
        lrfast.from_torch_state_dict(t, "Adam")


@pytest.mark.parametrize("step_count", [-1, 1.5, "3", True])
def test_from_torch_state_dict_bad_step_count(step_count):
    with pytest.raises(ValueError, match="step_count"):
        lrfast.from_torch_state_dict(_tsd(), "Adam", step_count=step_count)


def test_from_torch_state_dict_accepts_class_and_name():
    opt = make()
    t = lrfast.to_torch_state_dict(opt.state_dict())
    for o in ("Adam", lrfast.Adam):
        back = lrfast.from_torch_state_dict(t, o)
        assert back["optimizer"] == "Adam" and back["step_count"] == 3
        fresh = make(seed=4, steps=0)
        fresh.load_state_dict(back)
        assert fresh.step_count == 3
