"""Training: train_step, the composable calls (grad, accumulate, buffer,
apply, zero_grad, reset), checkpoints with optimiser state, exact resume."""
import numpy as np
import pytest

import ebt
from conftest import TINY, model_hash


def test_train_step_lowers_the_loss(model, rng):
    seq = rng.integers(0, 8, (4, 9)).astype(np.int32)     # a small sub-vocabulary: learnable
    tok, tgt = np.ascontiguousarray(seq[:, :-1]), np.ascontiguousarray(seq[:, 1:])
    opts = dict(lr=3e-3, warmup_steps=1, mode="full", k_min=2, k_max=2)
    first = model.train_step(tok, tgt, **opts)
    for _ in range(15):
        last = model.train_step(tok, tgt, **opts)
    assert isinstance(first, ebt.TrainStats) and first.step == 1 and last.step == 16 == model.train_steps_done
    assert last.loss < first.loss and last.k == 2 and last.lr > 0 and np.isfinite(last.grad_norm)


@pytest.mark.parametrize("mode", ["detach", "truncate", "full"])
def test_grad_is_accumulate_of_the_whole_batch(model, batch, rng, mode):
    t, g = batch["tokens"], batch["targets"]
    y0 = rng.standard_normal(t.shape + (TINY["vocab_size"],)).astype(ebt.DTYPE)
    u = np.full(t.shape, 0.1, ebt.DTYPE)                          # small steps, as tests/ref/gen_train_ref.py
    opts = dict(mode=mode, k_min=3, k_max=3)
    stats = model.train_grad(t, g, init_logits=y0, alpha_mult=u, **opts)
    buf = model.train_buffer().copy()
    model.zero_grad()
    assert np.all(model.train_buffer() == 0)
    model.train_accumulate(t[:1], g[:1], first_seq=0, weight=0.5, init_logits=y0[:1], alpha_mult=u[:1], **opts)
    model.train_accumulate(t[1:], g[1:], first_seq=1, weight=0.5, init_logits=y0[1:], alpha_mult=u[1:], **opts)
    # only the summation order differs (B = 1 products instead of B = 2), which
    # the thinking chain amplifies in float32: measured <= 7e-5 per tensor
    off = 0
    for n in model.tensor_names():
        a, b = buf[off:off + model.param(n).size], model.train_buffer()[off:off + model.param(n).size]
        off += a.size
        assert np.abs(a - b).max() <= 5e-4 * np.abs(a).max(), n
    assert stats.k == 3 and np.isfinite(stats.loss)
    # the buffer is the gradients in checkpoint order, then the 6 sums
    grads = np.concatenate([model.grad(n).ravel() for n in model.tensor_names()])
    assert np.array_equal(model.train_buffer()[:-6], grads) and model.train_buffer().size == model.n_params + 6
    assert model.train_buffer()[-6] == pytest.approx(1.0)          # sum of weights


def test_step_equals_accumulate_then_apply(batch):
    t, g = batch["tokens"], batch["targets"]
    opts = dict(mode="detach", noise=0.1, alpha_rand=2.0, replay_capacity=4, replay_frac=0.5, seed=3)
    with ebt.Model.create(TINY, seed=1) as a, ebt.Model.create(TINY, seed=1) as b:
        for _ in range(3):
            sa = a.train_step(t, g, **opts)
            b.zero_grad()
            b.train_accumulate(t, g, **opts)
            buf = b.train_buffer()
            buf *= 1.0                                             # (an allreduce would write here)
            sb = b.train_apply(**opts)
            assert sa == sb
        assert model_hash(a) == model_hash(b)


def test_resume_from_checkpoint_is_exact(batch, tmp_path):
    t, g = batch["tokens"], batch["targets"]
    opts = dict(mode="full", noise=0.2, alpha_rand=1.5, replay_capacity=8, replay_frac=0.5, k_min=1, k_max=3)
    with ebt.Model.create(TINY, seed=2) as a:
        for _ in range(2):
            a.train_step(t, g, **opts)
        a.save(tmp_path / "a.safetensors")
        losses_a = [a.train_step(t, g, **opts).loss for _ in range(3)]
    with ebt.Model.load(tmp_path / "a.safetensors") as b:
        assert b.train_steps_done == 2
        losses_b = [b.train_step(t, g, **opts).loss for _ in range(3)]
    assert losses_a == losses_b


def test_train_reset(model, batch):
    model.train_step(batch["tokens"], batch["targets"])
    assert model.train_steps_done == 1
    w = model.param("alpha").copy()
    model.train_reset()
    assert model.train_steps_done == 0 and np.array_equal(model.param("alpha"), w)


def test_transformer_training(tf_model, batch):
    s1 = tf_model.train_step(batch["tokens"], batch["targets"], lr=1e-2, warmup_steps=1)
    s2 = tf_model.train_step(batch["tokens"], batch["targets"], lr=1e-2, warmup_steps=1)
    assert s2.loss < s1.loss and s2.step == 2


def test_nonfinite_step_is_refused(model, batch):
    model.train_step(batch["tokens"], batch["targets"])
    model.zero_grad()           # (a refused step zeroes the gradients and changes nothing else)
    h = model_hash(model)
    with pytest.raises(ebt.NonFiniteError) as e:                   # an update that overflows
        model.train_step(batch["tokens"], batch["targets"], lr=1e300, min_lr=1e300, grad_clip=0)
    assert e.value.message
    y0 = np.zeros(batch["tokens"].shape + (TINY["vocab_size"],), ebt.DTYPE)
    y0[0, 0, 0] = np.nan                                           # a poisoned input
    with pytest.raises(ebt.NonFiniteError):
        model.train_step(batch["tokens"], batch["targets"], init_logits=y0)
    model.zero_grad()
    assert model_hash(model) == h and model.train_steps_done == 1


def test_train_options():
    o = ebt.train_options(mode="truncate", lr=0.1, total_steps=2**40)
    assert o.mode == 1 and o.lr == 0.1 and o.total_steps == 2**40 and o.beta2 == 0.999
    assert ebt.train_options(o, lr=0.2).mode == 1
