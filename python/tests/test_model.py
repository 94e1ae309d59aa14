"""Model: create, load, save, description, parameter/gradient views and their
lifetimes, energy and derivatives, transformer++, threads."""
import gc
import os
import re

import numpy as np
import pytest

import ebt
from conftest import REPO, TINY


def test_version_and_library():
    hdr = open(os.path.join(REPO, "ebt.h")).read()
    v = ".".join(re.search(r"#define EBT_VERSION_%s +(\d+)" % k, hdr).group(1) for k in ("MAJOR", "MINOR", "PATCH"))
    assert ebt.LIB_VERSION == v == ebt.__version__
    assert ebt.DTYPE == np.float32 and os.path.exists(ebt.LIB_PATH)


def test_create_config_and_names(model):
    c = model.config
    assert {k: c[k] for k in TINY} == TINY and c["arch"] == "ebt" and c["alpha"] == 5.0
    names = model.tensor_names()
    assert names[:2] == ["tok_embed.weight", "pred_embed.weight"] and names[-1] == "alpha"
    assert model.n_params == sum(model.param(n).size for n in names)
    assert repr(model).startswith("<ebt.Model ebt V=37")
    # the same seed gives the same weights
    with ebt.Model.create(TINY, seed=7) as m2:
        assert all(np.array_equal(model.param(n), m2.param(n)) for n in names)
    # arch by name, config from a dict and keywords
    with ebt.Model.create(dict(TINY, arch="transformer"), seed=1) as t:
        assert t.config["arch"] == "transformer++" and "lm_head.weight" in t.tensor_names()


def test_save_load_round_trip(model, tmp_path, batch):
    p = tmp_path / "m.safetensors"
    model.save(p)
    with ebt.Model.load(str(p)) as m2:
        assert m2.config == model.config
        for n in model.tensor_names():
            assert np.array_equal(model.param(n), m2.param(n))
        e1 = model.energy(batch["tokens"], batch["probs"])
        e2 = m2.energy(batch["tokens"], batch["probs"])
        assert np.array_equal(e1, e2)


def test_param_views_write_through_and_outlive_close(batch):
    m = ebt.Model.create(TINY, seed=3)
    w = m.param("final_norm.weight")
    g = m.grad("energy_head.weight")
    assert w.shape == (32,) and g.shape == (1, 32) and w.dtype == ebt.DTYPE
    e0 = m.energy(batch["tokens"], batch["probs"])
    w *= 2.0                                     # writes change the model (RMSNorm gain of the energy head)
    assert not np.array_equal(m.energy(batch["tokens"], batch["probs"]), e0)
    w /= 2.0
    assert np.array_equal(m.energy(batch["tokens"], batch["probs"]), e0)
    # the view keeps the model's memory alive after close() and after the Model object is gone
    m.close()
    with pytest.raises(ebt.StateError):
        m.param("alpha")
    del m
    gc.collect()
    assert np.all(w == 1.0) and np.all(g == 0.0)
    w[0] = 3.0                                   # still valid memory
    assert w[0] == 3.0
    assert isinstance(w.base, object) and w.base.owner is not None


def test_params_grads_dicts(model, batch):
    P, G = model.params(), model.grads()
    assert list(P) == model.tensor_names() == list(G)
    assert all(P[n].shape == G[n].shape for n in P)
    model.energy_backward(batch["tokens"], batch["probs"])
    assert any(np.any(G[n] != 0) for n in G)
    model.zero_grad()
    assert all(np.all(G[n] == 0) for n in G)
    with pytest.raises(KeyError):
        model.param("no.such.tensor")


def test_energy_1d_and_2d(model, batch):
    t, p = batch["tokens"], batch["probs"]
    E, g = model.energy(t, p, grad=True)
    assert E.shape == (2, 6) and g.shape == p.shape
    E0, g0 = model.energy(t[0], p[0], grad=True)          # 1-D tokens: no batch axis
    assert E0.shape == (6,) and np.allclose(E0, E[0], atol=1e-5) and np.allclose(g0, g[0], atol=1e-4)
    # lists and other integer dtypes are accepted for tokens
    assert np.array_equal(model.energy(t[0].tolist(), p[0]), model.energy(t[0].astype(np.int64), p[0]))


def test_energy_gradient_matches_finite_difference(model, batch):
    t, p, v = batch["tokens"], batch["probs"], batch["v"]
    E, g = model.energy(t, p, grad=True)
    h = 1e-4                                    # float32: truncation and rounding both ~1e-4 here
    p64 = p.astype(np.float64)
    ep = model.energy(t, (p64 + h * v).astype(np.float32)).astype(np.float64).sum()
    em = model.energy(t, (p64 - h * v).astype(np.float32)).astype(np.float64).sum()
    fd = (ep - em) / (2 * h)
    assert abs(fd - float((g.astype(np.float64) * v).sum())) < 2e-3 * abs(fd)


def test_hvp_and_mixed_backward_agree(model, batch):
    t, p, v = batch["tokens"], batch["probs"], batch["v"]
    hv = model.hvp(t, p, v)
    model.zero_grad()
    hv2, g2 = model.mixed_backward(t, p, v)
    _, g = model.energy(t, p, grad=True)
    assert np.array_equal(hv, hv2) and np.allclose(g, g2, rtol=1e-5, atol=1e-6)
    assert np.any(model.grad("layers.0.attn.wq.weight") != 0)
    # H v is the derivative of dE/dp along v
    h = 1e-4
    gp = model.energy(t, (p + h * v).astype(np.float32), grad=True)[1]
    gm = model.energy(t, (p - h * v).astype(np.float32), grad=True)[1]
    fd = (gp.astype(np.float64) - gm) / (2 * h)
    assert np.abs(fd - hv).max() < 5e-3 * np.abs(hv).max()


def test_energy_backward_weight(model, batch):
    t, p = batch["tokens"], batch["probs"]
    model.zero_grad()
    E = model.energy_backward(t, p)
    g1 = model.grad("energy_head.weight").copy()
    model.zero_grad()
    model.energy_backward(t, p, weight=np.full((2, 6), 2.0, ebt.DTYPE))
    assert np.allclose(model.grad("energy_head.weight"), 2 * g1, rtol=1e-6)
    assert np.array_equal(E, model.energy(t, p))


def test_step_token_changes_energy(step_model, batch):
    t, p = batch["tokens"], batch["probs"]
    assert not np.array_equal(step_model.energy(t, p, step=0), step_model.energy(t, p, step=1))
    assert np.array_equal(step_model.energy(t, p, step=2), step_model.energy(t, p, step=9))  # min(step, n-1)


def test_transformer(tf_model, batch):
    t, tg = batch["tokens"], batch["targets"]
    logits = tf_model.lm_logits(t)
    assert logits.shape == (2, 6, 37)
    ls = logits.astype(np.float64)
    ce = np.log(np.exp(ls).sum(-1)) - np.take_along_axis(ls, tg[..., None].astype(int), -1)[..., 0]
    loss = tf_model.lm_backward(t, tg)
    assert abs(loss - ce.mean()) < 1e-5
    assert np.any(tf_model.grad("lm_head.weight") != 0)
    with pytest.raises(ebt.UnsupportedError, match="arch ebt"):
        tf_model.energy(t, batch["probs"])


def test_threads_give_the_same_bits(model, batch):
    t, p = batch["tokens"], batch["probs"]
    model.set_threads(1)
    e1 = model.energy(t, p, grad=True)
    model.set_threads(2)
    e2 = model.energy(t, p, grad=True)
    model.set_threads(0)
    assert all(np.array_equal(a, b) for a, b in zip(e1, e2))
    with model.workspace(2, 6) as ws:
        ws.threads = 2
        assert ws.threads == 2


def test_set_blas_threads():
    assert ebt.set_blas_threads(1) in (True, False)
