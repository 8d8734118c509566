"""Every script in examples/ runs in quick mode (as CI does) and prints its result."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lrfast

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# the scripts import the same lrfast as the tests (in-place build or installed wheel)
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(lrfast.__file__)))

CASES = {
    "mlp_numpy.py": ["final test accuracy", "checkpoint reloaded: step_count 200"],
    "torch_inplace.py": [],  # checked below: the result or the "not installed" message
    "compare_optimizers.py": ["lrfast.Adam", "numpy Adam loop", "us / step"],
    "lowp_quality.py": [],  # checked below: the table or the "not installed" message
}


def _run(script):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [PKG_PARENT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(EXAMPLES / script), "--quick"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/ is not next to the tests")
@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs_in_quick_mode(script):
    r = _run(script)
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert r.stdout.strip(), f"{script} printed nothing"
    for text in CASES[script]:
        assert text in r.stdout, f"{script}: {text!r} not in output:\n{r.stdout}"
    if script == "lowp_quality.py":
        assert "int8 state" in r.stdout or "ml_dtypes is not installed" in r.stdout, r.stdout
    if script == "torch_inplace.py":
        assert ("max relative difference lrfast vs torch.optim.AdamW" in r.stdout
                or "torch is not installed" in r.stdout), r.stdout


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/ is not next to the tests")
def test_the_documented_examples_exist():
    present = {p.name for p in EXAMPLES.glob("*.py")}
    assert set(CASES) <= present
