"""Checkpoints survive crashes, and bad files change nothing (issue 7).

``lrfast.save`` writes a temp file in the same directory, fsyncs it and
renames it over the target: a process killed mid-save (SIGKILL, no cleanup)
leaves the previous checkpoint intact and loadable. Loading a truncated,
corrupted, foreign or mismatched file raises a clear ValueError and leaves the
optimizer exactly as it was.
"""
import errno
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import lrfast

from _snap import assert_same, snapshot
from conftest import bits_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(lrfast.__file__)))
WAIT = 60.0


def make(seed=0, name="Adam", steps=3):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((5, 4)), rng.standard_normal(7).astype(np.float32)]
    opt = getattr(lrfast, name)([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}])
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
    return opt, params


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["step_count"] == sb["step_count"]
    for i in sb["state"]:
        for k, v in sb["state"][i].items():
            if isinstance(v, np.ndarray):
                assert bits_equal(sa["state"][i][k], v)
            else:
                assert sa["state"][i][k] == v


# ---------------------------------------------------------------------------
# a process killed mid-save
# ---------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import lrfast
    path, where = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(123)
    params = [rng.standard_normal((5, 4)), rng.standard_normal(7).astype(np.float32)]
    opt = lrfast.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}])
    for _ in range(9):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])

    def hang(*a, **k):
        print("ready", flush=True)
        time.sleep(600)

    if where == "fsync":             # the temp file is complete, not yet renamed
        os.fsync = hang
    elif where == "write":           # half of the archive is on disk
        real = np.savez
        def partial(f, **arrays):
            import io
            buf = io.BytesIO()
            real(buf, **arrays)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            hang()
        np.savez = partial
    elif where == "replace":         # fsync'ed, about to rename
        os.replace = hang
    lrfast.save(opt, path)
    print("finished", flush=True)
""")


def _kill_mid_save(path, where):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), where], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None
                                         else "child still running")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_killed_mid_save_leaves_previous_checkpoint_intact(tmp_path, where):
    path = tmp_path / "ckpt.npz"
    opt, _ = make()
    lrfast.save(opt, path)
    before = path.read_bytes()

    _kill_mid_save(path, where)

    assert path.read_bytes() == before
    fresh, _ = make(seed=5, steps=1)
    lrfast.load(fresh, path)
    same_state(fresh, opt)
    # the killed save's temp file is the only other thing there, never at `path`
    others = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(n.startswith(".lrfast-") and n.endswith(".tmp") for n in others), others


def test_killed_first_save_leaves_no_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    _kill_mid_save(path, "fsync")
    assert not path.exists()


# ---------------------------------------------------------------------------
# fault injection in-process: a failed save raises, cleans up, keeps the old file
# ---------------------------------------------------------------------------
def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("target", ["np.savez", "os.fsync", "os.replace"])
def test_failed_save_keeps_old_file_and_cleans_up(tmp_path, monkeypatch, target):
    path = tmp_path / "ckpt.npz"
    opt, _ = make()
    lrfast.save(opt, path)
    before = path.read_bytes()
    opt.step([np.ones((5, 4)), np.ones(7, np.float32)])
    mod, attr = target.split(".")
    monkeypatch.setattr({"np": np, "os": os}[mod], attr, _enospc)
    with pytest.raises(OSError):
        lrfast.save(opt, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]   # temp removed


def test_save_is_a_rename_in_the_same_directory(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(os.path.abspath(src)), os.path.abspath(dst)))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    opt, _ = make()
    path = tmp_path / "ckpt.npz"
    lrfast.save(opt, path)
    assert seen == [(str(tmp_path), str(path))]


def test_save_never_pickles(tmp_path):
    opt, _ = make()
    path = tmp_path / "ckpt.npz"
    lrfast.save(opt, path)
    with np.load(path, allow_pickle=False) as z:       # would raise on object arrays
        for k in z.files:
            assert z[k].dtype != object


# ---------------------------------------------------------------------------
# bad files: ValueError, nothing changed
# ---------------------------------------------------------------------------
def _rejects_file(opt, path, match=None):
    before = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        lrfast.load(opt, path)
    assert_same(before, snapshot(opt))


@pytest.fixture
def saved(tmp_path):
    opt, _ = make(seed=1, steps=5)
    path = tmp_path / "good.npz"
    lrfast.save(opt, path)
    return opt, path, path.read_bytes()


@pytest.mark.parametrize("frac", [0.0, 0.01, 0.25, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, saved, frac):
    _, _, data = saved
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data[: int(len(data) * frac)])
    opt, _ = make()
    _rejects_file(opt, bad, match="truncated, corrupted or not an lrfast checkpoint")


def test_every_single_byte_corruption_loads_exactly_or_is_rejected(tmp_path, saved):
    """Flip each byte (a stride through the file): the load either gives the
    saved state exactly (the byte was in an unchecked zip field) or raises
    ValueError with the optimizer unchanged. zipfile's CRC guards the data."""
    src, _, data = saved
    bad = tmp_path / "bad.npz"
    opt, _ = make()
    loaded = rejected = 0
    for pos in range(0, len(data), 3):
        b = bytearray(data)
        b[pos] ^= 0xA5
        bad.write_bytes(bytes(b))
        before = snapshot(opt)
        try:
            lrfast.load(opt, bad)
        except ValueError:
            assert_same(before, snapshot(opt))
            rejected += 1
        else:
            same_state(opt, src)
            loaded += 1
            opt, _ = make()
    assert rejected > loaded > 0


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    bad = tmp_path / "bad.npz"
    n = int(rng.integers(0, 5000))
    head = [b"", b"PK\x03\x04", b"\x93NUMPY", b"\x80\x04"][seed % 4]   # zip, npy, pickle
    bad.write_bytes(head + rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    opt, _ = make()
    _rejects_file(opt, bad)


def test_foreign_npz(tmp_path):
    opt, _ = make()
    f = tmp_path / "foreign.npz"
    np.savez(f, weights=np.ones(3), bias=np.zeros(2))
    _rejects_file(opt, f, match="not an lrfast checkpoint")
    np.save(tmp_path / "array.npy", np.ones(3))
    _rejects_file(opt, tmp_path / "array.npy", match="npy")
    (tmp_path / "text.npz").write_text("hello, not a checkpoint\n")
    _rejects_file(opt, tmp_path / "text.npz")
    _rejects_file(opt, tmp_path)                        # a directory


def _rewrite_meta(src, dst, fn):
    """Replace the metadata, keeping only the arrays the new metadata names (a
    file whose other members are unnamed is refused for that alone)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = fn(str(arrays["__lrfast_meta__"]))
    arrays = {k: v for k, v in arrays.items() if f'"{k}"' in meta}
    arrays["__lrfast_meta__"] = np.array(meta)
    np.savez(dst, **arrays)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m[: len(m) // 2], "corrupted"),                        # not JSON
    (lambda m: "[1, 2, 3]", "not an lrfast optimizer checkpoint"),
    (lambda m: "5", "not an lrfast optimizer checkpoint"),
    (lambda m: '{"__array__": "a999"}', "corrupted"),                   # missing array
    (lambda m: '{"__dict__": 5}', "corrupted"),
    (lambda m: '{"__float__": "x"}', "corrupted"),
    (lambda m: '{"__what__": 1}', "corrupted"),
    (lambda m: json.dumps({"format": "other"}), "corrupted"),        # not our encoding
    (lambda m: m.replace('"Adam"', '"SGD"'), "optimizer"),
    (lambda m: m.replace('"lrfast.optim/1"', '"lrfast.optim/9"'), "format"),
    (lambda m: "[" * 100000 + "]" * 100000, "corrupted"),               # deep nesting
], ids=["not_json", "list", "number", "missing_array", "bad_dict", "bad_float", "unknown_node",
        "other_format_dict", "other_optimizer", "other_version", "deep_nesting"])
def test_corrupted_metadata(tmp_path, saved, edit, match):
    _, path, _ = saved
    bad = tmp_path / "bad.npz"
    _rewrite_meta(path, bad, edit)
    opt, _ = make()
    _rejects_file(opt, bad, match=match)


def test_mismatched_checkpoints(tmp_path):
    opt, _ = make()
    other, _ = make(name="AdamW")
    lrfast.save(other, tmp_path / "adamw.npz")
    _rejects_file(opt, tmp_path / "adamw.npz", match="AdamW")
    params = [np.zeros((4, 5)), np.zeros(7, np.float32)]          # other shapes
    o2 = lrfast.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}])
    o2.step([np.ones((4, 5)), np.ones(7, np.float32)])
    lrfast.save(o2, tmp_path / "shapes.npz")
    _rejects_file(opt, tmp_path / "shapes.npz", match=r"group 0, param 0.*shape")
    params = [np.zeros((5, 4), np.float32), np.zeros(7, np.float32)]   # other dtypes
    o3 = lrfast.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}])
    o3.step([np.ones((5, 4), np.float32), np.ones(7, np.float32)])
    lrfast.save(o3, tmp_path / "dtypes.npz")
    _rejects_file(opt, tmp_path / "dtypes.npz", match=r"group 0, param 0.*dtype")
    o4 = lrfast.Adam(make()[1])                                    # one group, not two
    lrfast.save(o4, tmp_path / "groups.npz")
    _rejects_file(opt, tmp_path / "groups.npz", match="param groups")


def test_array_swapped_inside_archive(tmp_path, saved):
    """A well-formed archive whose state array has the wrong shape."""
    _, path, _ = saved
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    key = next(k for k in arrays if k != "__lrfast_meta__" and arrays[k].ndim == 2)
    arrays[key] = arrays[key].T.copy()
    np.savez(tmp_path / "bad.npz", **arrays)
    opt, _ = make()
    _rejects_file(opt, tmp_path / "bad.npz", match="shape")


def test_missing_file_is_file_not_found(tmp_path):
    opt, _ = make()
    before = snapshot(opt)
    with pytest.raises(FileNotFoundError):
        lrfast.load(opt, tmp_path / "nope.npz")
    assert_same(before, snapshot(opt))


def test_zip_bomb_like_member_names_do_not_escape(tmp_path, saved):
    """Extra members (an attacker-added file) are ignored or rejected; nothing
    outside the archive is touched and no code runs."""
    _, path, _ = saved
    bad = tmp_path / "extra.npz"
    bad.write_bytes(path.read_bytes())
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr("../../evil.npy", b"not an array")
    opt, _ = make()
    before = snapshot(opt)
    try:
        lrfast.load(opt, bad)
    except ValueError:
        assert_same(before, snapshot(opt))
    assert not (tmp_path.parent.parent / "evil.npy").exists()
