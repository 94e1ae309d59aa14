"""ebt.torch against the C library, both directions: checkpoints the library
writes load in PyTorch (any tensor order, optimiser state, replay buffer) and
give the same energy, dE/dp, H_pp v, thinking and transformer++ logits;
checkpoints PyTorch writes load in the library and give the same numbers
(and the library saves them back byte for byte).

Tolerances (float32 library against the module in float64, max |difference|
/ max |reference| per array): 1e-5 for E, dE/dp and logits, 3e-5 for H_pp v,
1e-4 for the energies along a thinking run. Measured on these tiny models:
see the figures printed with `pytest -s`."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="python3-torch is not installed")

import ebt                               # noqa: E402
from ebt import checkpoint as ck         # noqa: E402
from ebt.torch import DEFAULT_CONFIG, EBTModel   # noqa: E402
from conftest import REPO, TINY, softmax  # noqa: E402

V = TINY["vocab_size"]
MEASURED = {}


def rel(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def check(name, a, ref, tol):
    e = rel(a, ref)
    MEASURED[name] = max(e, MEASURED.get(name, 0.0))
    assert e < tol, (name, e)


def T(x, dtype=torch.float64):
    return torch.from_numpy(np.asarray(x)).to(dtype)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nC (float32) vs ebt.torch (float64), max|diff| / max|ref|:")
    for k, v in sorted(MEASURED.items()):
        print("  %-40s %.2e" % (k, v))


def trained(tmp_path, seed, **kw):
    """A C model after 2 training steps with a replay buffer, saved."""
    m = ebt.Model.create(TINY, seed=seed, **kw)
    rng = np.random.default_rng(seed)
    opts = dict(replay_capacity=4, replay_frac=0.5, lr=1e-2, warmup_steps=1)
    if m.arch == "transformer++":
        opts = dict(lr=1e-2, warmup_steps=1)
    for _ in range(2):
        seq = rng.integers(0, V, (3, 9))
        m.train_step(np.ascontiguousarray(seq[:, :-1]), np.ascontiguousarray(seq[:, 1:]), **opts)
    path = tmp_path / ("c_%d.safetensors" % seed)
    m.save(path)
    return m, path


def inputs(seed, B=3, S=10):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, V, (B, S)).astype(np.int32), softmax(1.5 * rng.standard_normal((B, S, V))),
            rng.standard_normal((B, S, V)).astype(np.float32))


@pytest.mark.parametrize("kw", [dict(), dict(n_step_embed=3, tie_pred_embed=1)], ids=["plain", "step_tied"])
def test_c_checkpoint_in_torch(tmp_path, kw):
    m, path = trained(tmp_path, 11, **kw)
    tm, optim, replay = EBTModel.load(path, dtype=torch.float64, with_state=True)
    tm32 = EBTModel.load(path)
    # weights, optimiser state and replay buffer as the library holds them
    assert list(tm.tensors()) == m.tensor_names()
    for n in m.tensor_names():
        assert np.array_equal(tm32.tensors()[n].detach().numpy(), m.param(n))
    assert optim["step"] == m.train_steps_done == 2 and set(optim["m"]) == set(m.tensor_names())
    assert all(torch.all(v >= 0) for v in optim["v"].values())
    assert replay["capacity"] == 4 and replay["tokens"].shape == (4, 8) and replay["logits"].shape == (4, 8, V)  # 6 pushed, ring of 4
    assert replay["tokens"].max() < V
    tok, p, v = inputs(1)
    for step in ([0, 1, 2, 5] if kw else [0]):
        E, g = m.energy(tok, p, step=step, grad=True)
        E64, g64 = tm.energy_grad(T(tok, torch.long), T(p), step)
        check("energy", E, E64, 1e-5)
        check("dE/dp", g, g64, 1e-5)
        E32, g32 = tm32.energy_grad(T(tok, torch.long), T(p, torch.float32), step)
        check("energy (torch float32)", E, E32, 1e-5)
        check("dE/dp (torch float32)", g, g32, 1e-5)
        check("H_pp v", m.hvp(tok, p, v, step=step), tm.hvp(T(tok, torch.long), T(p), T(v), step), 3e-5)


def test_c_transformer_checkpoint_in_torch(tmp_path):
    m, path = trained(tmp_path, 12, arch="transformer++")
    tm, optim, replay = EBTModel.load(path, dtype=torch.float64, with_state=True)
    assert optim["step"] == 2 and replay is None and "lm_head.weight" in tm.tensors()
    tok, _, _ = inputs(2)
    check("transformer++ logits", m.lm_logits(tok), tm.lm_logits(T(tok, torch.long)).detach(), 1e-5)


@pytest.mark.parametrize("kw", [dict(), dict(n_step_embed=2, tie_pred_embed=1), dict(arch="transformer++")],
                         ids=["plain", "step_tied", "transformer"])
def test_torch_checkpoint_in_c(tmp_path, kw):
    g = torch.Generator().manual_seed(5)
    tm = EBTModel(dict(TINY, **kw), dtype=torch.float64, generator=g)
    names = list(tm.tensors())
    optim = {"step": 7, "m": {n: 0.01 * torch.randn(t.shape, generator=g) for n, t in tm.tensors().items()},
             "v": {n: 1e-4 * torch.rand(t.shape, generator=g) for n, t in tm.tensors().items()}}
    replay = None
    if tm.config["arch"] == "ebt":
        replay = {"capacity": 5, "next": 2, "tokens": torch.randint(0, V, (2, 6), generator=g),
                  "targets": torch.randint(0, V, (2, 6), generator=g), "logits": torch.randn(2, 6, V, generator=g)}
    path = tmp_path / "torch.safetensors"
    tm.save(path, optim=optim, replay=replay)
    with ebt.Model.load(path) as m:
        assert m.tensor_names() == names and m.train_steps_done == 7
        assert m.config["arch"] == tm.config["arch"]
        # the library writes the same bytes back: same format, same order, same numbers
        m.save(tmp_path / "again.safetensors")
        assert (tmp_path / "again.safetensors").read_bytes() == path.read_bytes()
        tok, p, v = inputs(3)
        if tm.config["arch"] == "ebt":
            E, dEdp = m.energy(tok, p, step=1, grad=True)
            E64, g64 = tm.energy_grad(T(tok, torch.long), T(p), 1)
            check("energy (torch-written)", E, E64, 1e-5)
            check("dE/dp (torch-written)", dEdp, g64, 1e-5)
        else:
            check("logits (torch-written)", m.lm_logits(tok), tm.lm_logits(T(tok, torch.long)).detach(), 1e-5)
        # and it trains from the saved optimiser state
        m.train_step(tok, tok)
        assert m.train_steps_done == 8


def test_writer_matches_library_bytes(tmp_path):
    """ebt.checkpoint reads a C checkpoint (moments and replay included) and
    writes it back byte for byte."""
    m, path = trained(tmp_path, 13, n_step_embed=2)
    c = ck.read(path)
    assert c.optim["step"] == 2 and c.replay["capacity"] == 4
    ck.write(tmp_path / "copy.safetensors", c)
    assert (tmp_path / "copy.safetensors").read_bytes() == path.read_bytes()


def test_reader_accepts_any_tensor_order(tmp_path):
    """A checkpoint with the tensors shuffled (as other writers may order them)."""
    m, path = trained(tmp_path, 14)
    c = ck.read(path)
    rng = np.random.default_rng(0)
    names = list(c.tensors)
    order = [names[i] for i in rng.permutation(len(names))]
    c2 = ck.Checkpoint(c.config, {n: c.tensors[n] for n in order}, c.optim, c.replay)
    p2 = tmp_path / "shuffled.safetensors"
    ck.write(p2, c2)              # the writer puts them back in order; shuffle the file itself:
    raw = p2.read_bytes()
    import json
    import struct
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    items = [(k, header[k]) for k in header if k != "__metadata__"]
    items = [items[i] for i in rng.permutation(len(items))]
    new_header, blob, off = {"__metadata__": header["__metadata__"]}, b"", 0
    for k, e in items:
        a, b = e["data_offsets"]
        new_header[k] = dict(e, data_offsets=[off, off + b - a])
        blob += data[a:b]
        off += b - a
    hj = json.dumps(new_header).encode()
    p3 = tmp_path / "shuffled2.safetensors"
    p3.write_bytes(struct.pack("<Q", len(hj)) + hj + blob)
    tm = EBTModel.load(p3)
    for k in names:
        assert np.array_equal(tm.tensors()[k].detach().numpy(), m.param(k))
    with ebt.Model.load(p3) as m3:                      # the library agrees
        assert all(np.array_equal(m3.param(k), m.param(k)) for k in names)


def test_reader_rejects_bad_files(tmp_path):
    m, path = trained(tmp_path, 15)
    raw = path.read_bytes()
    bad = {"short": raw[:5], "truncated": raw[:len(raw) // 2], "not_json": raw[:8] + b"x" * (len(raw) - 8)}
    c = ck.read(path)
    del c.tensors["final_norm.weight"]
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ck.CheckpointError):
            EBTModel.load(tmp_path / name)
    with pytest.raises(ck.CheckpointError, match="missing"):
        ck.write(tmp_path / "missing", c)
    assert not (tmp_path / "missing").exists()


def test_thinking_agrees(tmp_path):
    """C thinking from given y_0 (noise off) against EBTModel.think: every
    energy of the run, the answers, the steps taken, and the winner where
    the starts' final energies are not a near-tie."""
    for kw in (dict(), dict(n_step_embed=3, tie_pred_embed=1)):
        m, path = trained(tmp_path, 16, **kw)
        tm = EBTModel.load(path, dtype=torch.float64)
        tok, _, _ = inputs(4, B=2, S=8)
        y0 = np.random.default_rng(5).standard_normal((2, 2, 8, V)).astype(np.float32)
        for s in range(2):
            r = m.think(tok, steps=4, init_logits=y0[s])
            rt = tm.think(T(tok, torch.long), steps=4, init_logits=T(y0[s]))
            check("thinking energies E_0..E_4", r.energy, rt.energy, 1e-4)
            check("thinking answers p_4", r.probs, rt.probs, 1e-4)
            assert np.array_equal(r.steps_taken, rt.steps_taken.numpy())
            assert r.rows_evaluated == rt.rows_evaluated
        r = m.think(tok, steps=4, restarts=2, init_logits=y0)
        rt = tm.think(T(tok, torch.long), steps=4, restarts=2, init_logits=T(y0))
        check("thinking final energy, 2 restarts", r.final_energy, rt.final_energy, 1e-4)
        ra, rb = (m.think(tok, steps=4, init_logits=y0[s]).final_energy for s in range(2))
        clear = np.abs(ra - rb) > 1e-4 * np.abs(ra).max()
        assert np.array_equal(r.winner[clear], rt.winner.numpy()[clear])
        # stopping rules: a threshold between the energies, and a tolerance
        thr = float(np.median(r.energy[..., 1]))
        r = m.think(tok, steps=4, energy_threshold=thr, init_logits=y0[0])
        rt = tm.think(T(tok, torch.long), steps=4, energy_threshold=thr, init_logits=T(y0[0]))
        assert np.array_equal(r.steps_taken, rt.steps_taken.numpy()) and r.rows_evaluated == rt.rows_evaluated
        # last position only
        r = m.think(tok, steps=3, last_only=1, init_logits=np.ascontiguousarray(y0[0][:, -1:]))
        rt = tm.think(T(tok, torch.long), steps=3, last_only=True, init_logits=T(y0[0][:, -1:]))
        check("thinking last_only energies", r.energy, rt.energy, 1e-4)


def test_same_math_as_the_reference_vectors():
    """ebt.torch in float64 reproduces tests/ref/a.txt and b.txt (the vectors
    test_ref checks the C library against)."""
    for key in ("a", "b"):
        recs, lines = {}, [l for l in open(os.path.join(REPO, "tests", "ref", key + ".txt")) if not l.startswith("#")]
        for h, body in zip(lines[0::2], lines[1::2]):
            recs[h.split()[0]] = np.array(body.split(), dtype=np.float64)
        tm = EBTModel.load(os.path.join(REPO, "tests", "ref", key + ".safetensors"), dtype=torch.float64)
        B, S = int(recs["B"][0]), int(recs["S"][0])
        tok = torch.tensor(recs["tokens"].astype(np.int64)).reshape(B, S)
        p = torch.tensor(recs["probs"]).reshape(B, S, -1)
        E, g = tm.energy_grad(tok, p, int(recs["step"][0]))
        assert rel(E.numpy().ravel(), recs["energy"]) < 1e-13
        assert rel(g.numpy().ravel(), recs["grad_probs"]) < 1e-13
        hv = tm.hvp(tok, p, torch.tensor(recs["v"]).reshape(B, S, -1), int(recs["step"][0]))
        assert rel(hv.numpy().ravel(), recs["hvp"]) < 1e-12


def test_defaults_match_the_library():
    with ebt.Model.create() as m:
        assert m.config == DEFAULT_CONFIG
    tm = EBTModel(vocab_size=11, d_model=8, n_layers=1, n_heads=2, d_ff=8)
    assert list(tm.tensors()) == [s[0] for s in ck.tensor_specs(tm.config)]
    assert set(tm.state_dict()) == set(tm.tensors())          # state_dict keys are the checkpoint names


THINK_OPTIONS = [dict(clamp=0.05), dict(keep_best=1), dict(keep_best=1, restarts=2), dict(rel_drop=0.05),
                 dict(grad_tol="mid"), dict(row_budget=40), dict(row_budget=40, restarts=2),
                 dict(clamp=0.02, keep_best=1, row_budget=50, restarts=2), dict(last_only=1, keep_best=1)]


@pytest.mark.parametrize("kw", [dict(), dict(n_step_embed=3, tie_pred_embed=1)], ids=["plain", "step_tied"])
def test_thinking_options_agree(tmp_path, kw):
    """Every thinking option of ebt_think_opts, and the curvature, in C and in
    EBTModel.think from the same y_0: the same stops, winners and row counts,
    the same numbers to float32 rounding."""
    from ebt.workspace import RESULT_ARRAYS
    with ebt.Model.create(TINY, seed=16, **kw) as m:
        m.save(tmp_path / "m.safetensors")
        tm = EBTModel.load(tmp_path / "m.safetensors", dtype=torch.float64)
        rng = np.random.default_rng(4)
        tok = rng.integers(0, V, (2, 8)).astype(np.int32)
        y0 = rng.standard_normal((2, 2, 8, V)).astype(np.float32)
        _, g = m.energy(tok, softmax(y0[0]), grad=True)
        rms = np.sort(np.sqrt((g.astype(np.float64) ** 2).mean(-1)).ravel())
        for opts in THINK_OPTIONS:
            opts = dict(opts)
            if opts.get("grad_tol") == "mid":           # half the positions stop at step 0
                opts["grad_tol"] = float(rms[len(rms) // 2 - 1] + rms[len(rms) // 2]) / 2
            R = opts.get("restarts", 1)
            y = y0[:R] if R > 1 else y0[0]
            if opts.get("last_only"):
                y = np.ascontiguousarray(y[..., -1:, :])
            r = m.think(tok, steps=4, init_logits=y, outputs=RESULT_ARRAYS, **opts)
            to = dict(opts, last_only=bool(opts.get("last_only")), keep_best=bool(opts.get("keep_best")))
            rt = tm.think(T(tok, torch.long), steps=4, init_logits=T(y), curvature=True, **to)
            name = ",".join(sorted(opts))
            # near-ties are float32's to break: a keep_best choice between two steps, or a
            # winner between two starts, whose energies are within 1e-4 (of the largest)
            sure = ~near_tie(tm, tok, y, to)
            assert np.array_equal(r.steps_taken[sure], rt.steps_taken.numpy()[sure]), name
            assert np.array_equal(r.winner[sure], rt.winner.numpy()[sure]), name
            assert r.rows_evaluated == rt.rows_evaluated and r.diverged == rt.diverged, name
            check("think options: energies", r.energy[sure], rt.energy.numpy()[sure], 1e-4)
            check("think options: answers", r.probs[sure], rt.probs.numpy()[sure], 1e-4)
            c, ct = r.curvature[sure], rt.curvature.numpy()[sure]
            assert np.array_equal(np.isnan(c), np.isnan(ct)), name
            check("think curvature", c[~np.isnan(c)], ct[~np.isnan(c)], 1e-3)


def near_tie(tm, tok, y, opts, rel_gap=1e-4):
    """[B, P] mask of the positions where a keep_best or restart choice is a near-tie."""
    R = opts.get("restarts", 1)
    runs = [tm.think(T(tok, torch.long), steps=4, init_logits=T(y[s] if R > 1 else y), **dict(opts, restarts=1))
            for s in range(R)]
    scale = max(float(r.energy.abs().max()) for r in runs)
    tie = np.zeros(runs[0].final_energy.shape, bool)
    if opts.get("keep_best"):
        for r in runs:                                  # the best two states each position evaluated
            E = r.energy.numpy()
            for ix in np.ndindex(tie.shape):
                e = np.unique(E[ix])                        # (held values repeat: distinct states only)
                tie[ix] |= len(e) > 1 and e[1] - e[0] < rel_gap * scale
    if R > 1:
        f = np.sort(np.stack([r.final_energy.numpy() for r in runs]), 0)
        tie |= f[1] - f[0] < rel_gap * scale
    return tie
