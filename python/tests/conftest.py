"""pytest setup: the package from this checkout (python/), the library from
$EBT_LIB (the Makefile sets it to its build) or the repository's build/."""
import hashlib
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)
REPO = os.path.dirname(PYDIR)
sys.path.insert(0, PYDIR)

import ebt  # noqa: E402

TINY = dict(vocab_size=37, d_model=32, n_layers=2, n_heads=2, d_ff=48, max_seq_len=16)


def softmax(y):
    e = np.exp(y - y.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(ebt.DTYPE)


def model_hash(m):
    """A hash of everything a failed call must leave unchanged: parameters,
    gradients and the training buffer, the step count."""
    h = hashlib.sha256()
    for n in m.tensor_names():
        h.update(m.param(n).tobytes())
    h.update(m.train_buffer().tobytes())
    h.update(str(m.train_steps_done).encode())
    return h.hexdigest()


@pytest.fixture
def model():
    """A tiny EBT (untied, no step embedding)."""
    with ebt.Model.create(TINY, seed=7) as m:
        yield m


@pytest.fixture
def step_model():
    """A tiny EBT with a step embedding and tied candidate embedding."""
    with ebt.Model.create(TINY, seed=8, n_step_embed=3, tie_pred_embed=1) as m:
        yield m


@pytest.fixture
def tf_model():
    """A tiny transformer++."""
    with ebt.Model.create(TINY, seed=9, arch="transformer++") as m:
        yield m


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def batch(rng):
    """tokens [2, 6], targets [2, 6], probs [2, 6, V], v [2, 6, V]."""
    V = TINY["vocab_size"]
    tok = rng.integers(0, V, (2, 7)).astype(np.int32)
    return dict(tokens=np.ascontiguousarray(tok[:, :6]), targets=np.ascontiguousarray(tok[:, 1:]),
                probs=softmax(rng.standard_normal((2, 6, V))),
                v=rng.standard_normal((2, 6, V)).astype(ebt.DTYPE))
