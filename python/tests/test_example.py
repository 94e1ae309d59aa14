"""python/examples/think.py runs end to end (untrained, and on a checkpoint)."""
import os
import subprocess
import sys

import ebt
from conftest import PYDIR

EXAMPLE = os.path.join(PYDIR, "examples", "think.py")


def run(*args):
    env = dict(os.environ, PYTHONPATH=PYDIR)
    return subprocess.run([sys.executable, EXAMPLE] + list(args), env=env, check=True, stdout=subprocess.PIPE,
                          universal_newlines=True, timeout=120).stdout


def test_example_untrained():
    out = run()
    lines = out.splitlines()
    assert sum(l.startswith("after ") for l in lines) == len("ROMEO: But soft")
    assert sum(l.startswith("token ") for l in lines) == 40
    assert lines[-1].startswith("continued: ") and lines[-1][12:].startswith("ROMEO: But soft")


def test_example_checkpoint(tmp_path):
    with ebt.Model.create(seed=3, d_model=32, n_layers=1, n_heads=2, d_ff=32, max_seq_len=64) as m:
        m.save(tmp_path / "m.safetensors")
    out = run(str(tmp_path / "m.safetensors"), "Hi!")
    assert sum(l.startswith("after ") for l in out.splitlines()) == 3
