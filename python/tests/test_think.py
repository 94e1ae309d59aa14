"""Workspaces, thinking and generation: every option and result field, the
on_token callback, and Python threads over one model."""
import threading
import time

import numpy as np
import pytest

import ebt
from conftest import TINY, softmax

V = TINY["vocab_size"]


def test_workspace_energy_matches_model(model, batch):
    t, p, v = batch["tokens"], batch["probs"], batch["v"]
    with model.workspace(2, 8) as ws:
        ws.observe(t)
        E, g = ws.energy(p, grad=True)
        E2, g2 = model.energy(t, p, grad=True)
        assert np.array_equal(E, E2) and np.array_equal(g, g2)
        hv, E3, g3 = ws.hvp(p, v, energy=True, grad=True)
        assert np.array_equal(hv, model.hvp(t, p, v)) and np.array_equal(E3, E)
        assert np.allclose(g3, g, rtol=1e-5, atol=1e-6)
        assert ws.hvp(p, v).shape == p.shape
        assert ws.last_error == ""


def test_observe_append_is_the_kv_cache(model, rng):
    t = rng.integers(0, V, 9).astype(np.int32)
    p = softmax(rng.standard_normal((9, V)))
    with model.workspace(1, 12) as ws:
        ws.observe(t[:5])
        ws.observe_append(t[5:7])
        ws.observe_append(t[7:])
        E = ws.energy(p)
    assert E.shape == (9,)
    assert np.allclose(E, model.energy(t, p), atol=1e-5)


def test_think_fields(model, batch):
    t = batch["tokens"]
    r = model.think(t, steps=3, restarts=2, seed=5)
    assert r.probs.shape == r.logits.shape == (2, 6, V)
    assert r.energy.shape == (2, 6, 4) and r.final_energy.shape == r.steps_taken.shape == r.winner.shape == (2, 6)
    assert np.allclose(r.probs.sum(-1), 1, atol=1e-5) and np.allclose(r.probs, softmax(r.logits), atol=1e-6)
    assert np.array_equal(r.final_energy, r.energy[..., -1]) and np.all(r.steps_taken == 3)
    assert set(np.unique(r.winner)) <= {0, 1}
    assert r.rows_evaluated == r.rows_budget == 2 * 2 * 6 * 4 and r.diverged == 0
    # the answer's energy is the final energy
    assert np.allclose(model.energy(t, r.probs, step=3), r.final_energy, atol=1e-5)
    # same seed, same result; outputs subset
    r2 = model.think(t, steps=3, restarts=2, seed=5, outputs=("final_energy",))
    assert np.array_equal(r2.final_energy, r.final_energy) and r2.probs is None and r2.winner is None
    # out=: the arrays of an earlier result are written again
    r3 = model.think(t, steps=3, restarts=2, seed=5, outputs=("probs", "winner"))
    probs = r3.probs
    r4 = model.think(t, steps=3, restarts=2, seed=5, out=r3)
    assert r4 is r3 and r4.probs is probs and np.array_equal(probs, r.probs) and r4.logits is None
    with pytest.raises(ebt.ArgError):
        model.think(t, steps=2, out=r)                  # energy has K+1 = 4 columns, not 3
    # the curvature only when asked for; NaN where the answer never moved
    assert r.curvature is None
    rc = model.think(t, steps=3, seed=5, outputs=("final_energy", "curvature"))
    assert rc.curvature.shape == (2, 6) and np.all(np.isfinite(rc.curvature))
    assert np.all(np.isnan(model.think(t, steps=0, outputs=("curvature",)).curvature))
    # 1-D tokens: no batch axis
    r1 = model.think(t[0], steps=3, seed=5)
    assert r1.probs.shape == (6, V) and r1.energy.shape == (6, 4)


def test_think_options(model, batch):
    t = batch["tokens"]
    base = dict(steps=4, seed=3)
    # energy threshold +inf: every position stops at step 0
    r = model.think(t, energy_threshold=float("inf"), **base)
    assert np.all(r.steps_taken == 0) and r.rows_evaluated == 12 and np.all(r.energy == r.energy[..., :1])
    # tol: stopping saves rows
    r = model.think(t, tol=1e9, **base)
    assert np.all(r.steps_taken == 1) and r.rows_evaluated == 24
    # init_logits are y_0: steps 0 gives their softmax
    y0 = np.random.default_rng(0).standard_normal((2, 6, V)).astype(np.float32)
    r = model.think(t, steps=0, init_logits=y0)
    assert np.array_equal(r.logits, y0) and r.energy.shape == (2, 6, 1)
    assert np.allclose(r.final_energy, model.energy(t, softmax(y0)), atol=1e-5)
    # restarts with init_logits [restarts, B, S, V]: the lower final energy wins
    y1 = np.random.default_rng(1).standard_normal((2, 2, 6, V)).astype(np.float32)
    ra = model.think(t, steps=2, init_logits=y1[0])
    rb = model.think(t, steps=2, init_logits=y1[1])
    rr = model.think(t, steps=2, restarts=2, init_logits=y1)
    assert np.array_equal(rr.final_energy, np.minimum(ra.final_energy, rb.final_energy))
    assert np.array_equal(rr.winner, (rb.final_energy < ra.final_energy).astype(int))
    assert rr.rows_evaluated == ra.rows_evaluated + rb.rows_evaluated
    # step_size, alpha_rand, noise, init_scale change the result; last_only thinks at the last position
    r0 = model.think(t, **base)
    for kw in (dict(step_size=0.5), dict(alpha_rand=2.0), dict(noise=0.3), dict(init_scale=0.1)):
        assert not np.array_equal(model.think(t, **base, **kw).final_energy, r0.final_energy), kw
    rf = model.think(t, steps=3, init_logits=y0)
    rl = model.think(t, steps=3, last_only=1, init_logits=np.ascontiguousarray(y0[:, -1:]))
    assert rl.probs.shape == (2, 1, V) and np.allclose(rl.final_energy[:, 0], rf.final_energy[:, -1], atol=1e-5)
    # options as a dict or a struct
    o = ebt.think_options(steps=4, seed=3)
    assert np.array_equal(model.think(t, opts=o).final_energy, r0.final_energy)
    assert np.array_equal(model.think(t, opts=dict(base)).final_energy, r0.final_energy)


def test_think_diverged_is_reported(model, batch):
    r = model.think(batch["tokens"], steps=3, step_size=1e38, seed=1)
    assert r.diverged > 0 and np.all(np.isfinite(r.logits))


def test_think_observed_reuses_the_observation(step_model, batch):
    t = batch["tokens"]
    with step_model.workspace(2, 6) as ws:
        r = ws.think(t, steps=3, seed=2)
        r2 = ws.think_observed(steps=3, seed=2)
        assert np.array_equal(r.final_energy, r2.final_energy) and np.array_equal(r.probs, r2.probs)
        ws.observe(t, step=1)
        assert ws.think_observed(steps=3, seed=2).final_energy.shape == (2, 6)


def test_generate(model):
    prompt = np.array([1, 2, 3], np.int32)
    g = model.generate(prompt, 6, seed=4, think=dict(steps=2))
    assert g.tokens.shape == (6,) and g.tokens.dtype == np.int32 and np.all((g.tokens >= 0) & (g.tokens < V))
    assert g.energy.shape == (6,) and g.probs.shape == (6, V) and np.allclose(g.probs.sum(-1), 1, atol=1e-5)
    assert np.array_equal(model.generate(prompt, 6, seed=4, think=dict(steps=2)).tokens, g.tokens)
    # argmax sampling takes the most probable token; no_cache gives the same tokens
    a = model.generate(prompt, 5, temperature=0, think=dict(steps=2, seed=1))
    assert np.array_equal(a.tokens, a.probs.argmax(-1))
    b = model.generate(prompt, 5, temperature=0, no_cache=1, think=dict(steps=2, seed=1))
    assert np.array_equal(a.tokens, b.tokens)
    assert model.generate(prompt, 0).tokens.shape == (0,)
    g2 = model.generate(prompt, 4, top_p=0.5, outputs=())
    assert g2.energy is None and g2.probs is None and g2.tokens.shape == (4,)
    # a prompt longer than the workspace: its last max_S tokens are seen
    with model.workspace(1, 4) as ws:
        assert ws.generate(np.arange(10) % V, 6, think=dict(steps=1)).tokens.shape == (6,)


def test_generate_callback(model):
    seen = []

    def on_token(tok):
        seen.append(tok)
        return tok.index == 2                   # stop after the third token

    g = model.generate([5, 6], 10, on_token=on_token, think=dict(steps=3, restarts=2), seed=9)
    assert len(seen) == 3 and g.tokens.shape == (3,) and g.energy.shape == (3,)
    for i, tk in enumerate(seen):
        assert tk.index == i and tk.token == g.tokens[i] and tk.steps == 3
        assert tk.energies.shape == (4,) and tk.energy == g.energy[i] == tk.energies[-1]
        assert np.array_equal(tk.probs, g.probs[i]) and 0 <= tk.winner < 2 and 0 <= tk.steps_taken <= 3
    # an exception in the callback stops generation and comes out of generate()
    with pytest.raises(ZeroDivisionError):
        model.generate([5, 6], 10, on_token=lambda tok: 1 / 0)
    # and the model still works
    assert model.generate([5, 6], 2).tokens.shape == (2,)


def test_generate_transformer(tf_model):
    seen = []
    g = tf_model.generate([1, 2], 4, on_token=seen.append, temperature=0)
    assert g.tokens.shape == (4,) and np.all(np.isnan(g.energy))
    assert seen[0].energies is None and seen[0].steps == 0
    logits = tf_model.lm_logits(np.array([1, 2], np.int32))
    assert g.tokens[0] == logits[-1].argmax()


def test_threads_share_a_model(model, rng):
    """Two Python threads, one workspace each, think on one model at the same
    time: the same results as one after the other."""
    toks = [rng.integers(0, V, (2, 12)).astype(np.int32) for _ in range(2)]
    opts = dict(steps=3, restarts=2, noise=0.1, seed=11)
    sequential = [[model.think(t, **opts).probs for _ in range(3)] for t in toks]
    results = [None, None]

    def worker(i):
        with model.workspace(2, 12) as ws:
            results[i] = [ws.think(toks[i], **opts).probs for _ in range(3)]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i in range(2):
        assert all(np.array_equal(a, b) for a, b in zip(results[i], sequential[i]))


def test_gil_is_released_during_calls():
    """While a long think runs in one thread, Python code runs in another."""
    with ebt.Model.create(vocab_size=256, d_model=64, n_layers=2, n_heads=2, d_ff=64, max_seq_len=64, seed=1) as m, \
            m.workspace(2, 64) as ws:
        ws.threads = 1                                # one core for the call, one for the counting loop
        t = np.arange(2 * 64, dtype=np.int32).reshape(2, 64) % 256
        done = threading.Event()

        def long_call():
            ws.think(t, steps=4)
            done.set()

        th = threading.Thread(target=long_call)
        t0 = time.perf_counter()
        th.start()
        time.sleep(0.002)
        count = 0
        while not done.is_set():
            count += 1
        th.join()
        assert count > 1000, (count, time.perf_counter() - t0)


def test_one_call_at_a_time_per_workspace(model):
    """A workspace used while a call runs on it, from its own on_token
    callback or from another thread, raises StateError (no race)."""
    with model.workspace(1, 16) as ws:
        with pytest.raises(ebt.StateError, match="in use"):
            ws.generate([1, 2], 3, on_token=lambda t: ws.think([1, 2]))
        with pytest.raises(ebt.StateError, match="in use"):
            ws.generate([1, 2], 3, on_token=lambda t: ws.close())
        assert not ws.closed and ws.generate([1, 2], 2).tokens.shape == (2,)
        inside, release, errors = threading.Event(), threading.Event(), []

        def hold(tok):
            inside.set()
            release.wait(10)

        th = threading.Thread(target=lambda: ws.generate([1, 2], 1, on_token=hold))
        th.start()
        assert inside.wait(10)
        for call in (lambda: ws.think([3, 4]), lambda: ws.observe([3]), ws.close, lambda: ws.threads):
            try:
                call()
            except ebt.StateError as e:
                errors.append(e)
        release.set()
        th.join()
        assert len(errors) == 4 and not ws.closed
    # the model's own calls from two threads wait for each other
    t = np.arange(12, dtype=np.int32).reshape(2, 6) % V
    p = softmax(np.random.default_rng(0).standard_normal((2, 6, V)))
    ref = model.energy(t, p, grad=True)
    out = []
    ths = [threading.Thread(target=lambda: out.append([model.energy(t, p, grad=True) for _ in range(20)]))
           for _ in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert all(np.array_equal(a[0], ref[0]) and np.array_equal(a[1], ref[1]) for run in out for a in run)


def test_close_while_in_use_elsewhere():
    """Closing a model while one of its workspaces generates in another
    thread: the call completes on the C model the workspace holds, and
    later calls raise StateError."""
    m = ebt.Model.create(TINY, seed=1)
    ws = m.workspace(1, 16)
    inside, release, result = threading.Event(), threading.Event(), []

    def hold(tok):
        inside.set()
        release.wait(10)

    th = threading.Thread(target=lambda: result.append(ws.generate([1, 2], 3, on_token=hold)))
    th.start()
    assert inside.wait(10)
    m.close()                       # returns at once: the running call is on the workspace
    release.set()
    th.join()
    assert result and result[0].tokens.shape == (3,)
    with pytest.raises(ebt.StateError, match="model is closed"):
        ws.think([1])
    ws.close()
