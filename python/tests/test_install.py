"""Packaging and library discovery: `pip install ./python` offline into a
venv that sees Debian's packages, then `import ebt` from elsewhere finds the
bundled library; and the bindings on a double-precision (-DEBT_DOUBLE)
build of the library."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ebt
from conftest import PYDIR, REPO

CC = os.environ.get("CC", "cc")


def py(exe, code, env, cwd):
    return subprocess.run([exe, "-c", code], env=env, cwd=cwd, check=True, stdout=subprocess.PIPE,
                          universal_newlines=True, timeout=120).stdout


@pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import venv, pip"]).returncode != 0,
                    reason="python3-venv / python3-pip are not installed")
def test_pip_install_offline(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    exe = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EBT_LIB")}
    # the build bundles the library under test ($EBT_LIB if the Makefile set it, else ../build)
    build_env = dict(env, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    if "EBT_LIB" in os.environ:
        build_env["EBT_LIB"] = os.environ["EBT_LIB"]
    subprocess.run([exe, "-m", "pip", "install", "-q", "--no-index", PYDIR], env=build_env, check=True, timeout=300)
    out = py(exe, "import ebt, numpy as np; r = ebt.Model.create(seed=1).think(b'abc', steps=2); "
                  "print(ebt.__file__); print(ebt.LIB_PATH); print(r.final_energy.shape)", env, str(tmp_path))
    mod, lib, shape = out.splitlines()
    assert mod.startswith(str(venv)) and lib.startswith(str(venv)) and lib.endswith("ebt/libebt.so.0")
    assert shape == "(3,)"
    # the source tree is left as it was (no build/ or egg-info in python/)
    assert not [n for n in os.listdir(PYDIR) if n == "build" or n.endswith((".egg-info", ".whl", ".dist-info"))]


def test_library_search_order(tmp_path):
    import ebt._lib as L
    env = dict(os.environ, EBT_LIB=str(tmp_path / "nowhere.so"))
    r = subprocess.run([sys.executable, "-c", "import ebt; ebt.Model"], env=dict(env, PYTHONPATH=PYDIR),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert r.returncode != 0 and "cannot load libebt" in r.stderr and "nowhere.so (absent)" in r.stderr
    # without EBT_LIB: next to the package, the checkout's build/, find_library, install prefixes
    saved = os.environ.pop("EBT_LIB", None)
    try:
        c = L.candidates()
    finally:
        if saved is not None:
            os.environ["EBT_LIB"] = saved
    assert c[0] == os.path.join(PYDIR, "ebt", "libebt.so.0") and c[1] == os.path.join(REPO, "build", "libebt.so.0")
    assert "/usr/local/lib/libebt.so.0" in c
    # ebt.checkpoint and ebt.torch import without loading the library
    r = subprocess.run([sys.executable, "-c", "import sys, ebt, ebt.checkpoint, ebt.errors; "
                        "assert 'ebt._lib' not in sys.modules"], env=dict(env, PYTHONPATH=PYDIR))
    assert r.returncode == 0


@pytest.mark.skipif(shutil.which(CC) is None, reason="no C compiler")
def test_double_precision_library(tmp_path):
    lib = tmp_path / "libebt.so.0"
    subprocess.run([CC, "-std=c99", "-O1", "-fopenmp", "-fPIC", "-shared", "-DEBT_DOUBLE",
                    os.path.join(REPO, "ebt.c"), "-o", str(lib), "-lopenblas", "-lm"], check=True)
    code = """
import numpy as np, ebt
assert ebt.DTYPE == np.float64, ebt.DTYPE
m = ebt.Model.create(vocab_size=11, d_model=8, n_layers=1, n_heads=2, d_ff=8, max_seq_len=8, seed=3)
t = np.arange(6) % 11
p = np.full((6, 11), 1 / 11)
E, g = m.energy(t, p, grad=True)
r = m.think(t, steps=2, seed=1)
gen = m.generate([1, 2], 3, think=dict(steps=2), on_token=lambda tk: None)
assert gen.energy.dtype == np.float64 and r.probs.dtype == np.float64
try:
    m.energy(t, p.astype(np.float32))
    raise SystemExit('float32 accepted')
except ebt.ArgTypeError:
    pass
np.save('out.npy', np.concatenate([E, g.ravel(), r.final_energy]))
"""
    env = dict(os.environ, EBT_LIB=str(lib), PYTHONPATH=PYDIR)
    subprocess.run([sys.executable, "-c", code], env=env, cwd=str(tmp_path), check=True, timeout=120)
    d = np.load(tmp_path / "out.npy")
    with ebt.Model.create(vocab_size=11, d_model=8, n_layers=1, n_heads=2, d_ff=8, max_seq_len=8, seed=3) as m:
        t = np.arange(6) % 11
        E, g = m.energy(t, np.full((6, 11), 1 / 11, np.float32), grad=True)
        f = np.concatenate([E, g.ravel()])
    assert np.abs(d[:f.size] - f).max() < 1e-5 * np.abs(f).max()      # same weights (seeded), same math
