#!/usr/bin/python3
"""Agreement of the C library (float32) with ebt.torch (PyTorch, float64 and
float32) on the same checkpoint, in both directions: a checkpoint written by
the library read by PyTorch, and one written by PyTorch read by the library.
Prints max |C - torch| / max |torch| per quantity.

    /usr/bin/python3 tools/compare_torch.py [--B 4] [--S 128]

Sizes: config A (V=256 D=128 L=4 H=4 F=128; a step embedding of 4 rows and
tied embeddings in a second model), B x S tokens, 4 thinking steps from the
same y_0 (noise off), with the model's step size alpha (5 at initialisation:
the steps jump to nearly one-hot candidates, and float32 rounding grows
along the chain in either implementation) and with step_size 0.1. The
float32 PyTorch column shows the same growth: it is float32, not the C code.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import ebt                                    # noqa: E402
from ebt.torch import EBTModel                # noqa: E402

CFG_A = dict(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=128, max_seq_len=256)


def rel(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return np.abs(a - ref).max() / np.abs(ref).max()


def compare(m, tm64, tm32, B, S, seed):
    rng = np.random.default_rng(seed)
    V = m.vocab_size
    tok = rng.integers(0, V, (B, S)).astype(np.int32)
    y = 1.5 * rng.standard_normal((B, S, V))
    p = (np.exp(y - y.max(-1, keepdims=True)) / np.exp(y - y.max(-1, keepdims=True)).sum(-1, keepdims=True))
    p = p.astype(np.float32)
    v = rng.standard_normal((B, S, V)).astype(np.float32)
    tt, tp, tv = torch.from_numpy(tok).long(), torch.from_numpy(p).double(), torch.from_numpy(v).double()
    out = {}
    step = 1
    E, g = m.energy(tok, p, step=step, grad=True)
    E64, g64 = tm64.energy_grad(tt, tp, step)
    E32, g32 = tm32.energy_grad(tt, tp.float(), step)
    out["energy"] = (rel(E, E64), rel(E32.numpy(), E64))
    out["dE/dp"] = (rel(g, g64), rel(g32.numpy(), g64))
    hv64 = tm64.hvp(tt, tp, tv, step)
    out["H_pp v"] = (rel(m.hvp(tok, p, v, step=step), hv64), rel(tm32.hvp(tt, tp.float(), tv.float(), step), hv64))
    y0 = rng.standard_normal((B, S, V)).astype(np.float32)
    for ss in (0.0, 0.1):
        what = "alpha %g" % max(float(m.param("alpha")[0]), 1e-4) if ss == 0 else "step_size %g" % ss
        r = m.think(tok, steps=4, step_size=ss, init_logits=y0)
        r64 = tm64.think(tt, steps=4, step_size=ss, init_logits=torch.from_numpy(y0))
        r32 = tm32.think(tt, steps=4, step_size=ss, init_logits=torch.from_numpy(y0))
        out["think %s: E_1" % what] = (rel(r.energy[..., 1], r64.energy[..., 1]),
                                       rel(r32.energy[..., 1], r64.energy[..., 1]))
        out["think %s: E_0..E_4" % what] = (rel(r.energy, r64.energy), rel(r32.energy, r64.energy))
        out["think %s: answer p_4" % what] = (rel(r.probs, r64.probs), rel(r32.probs, r64.probs))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--S", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ebt.set_blas_threads(1)
    d = tempfile.mkdtemp()
    rows = []
    for label, kw in (("A", {}), ("A, step embedding 4 + tied", dict(n_step_embed=4, tie_pred_embed=1))):
        # C -> torch: a C model after 3 training steps (optimiser state, replay buffer in the file)
        m = ebt.Model.create(CFG_A, seed=1, **kw)
        rng = np.random.default_rng(0)
        for _ in range(3):
            seq = rng.integers(0, 256, (4, 33)).astype(np.int32)
            m.train_step(np.ascontiguousarray(seq[:, :-1]), np.ascontiguousarray(seq[:, 1:]),
                         replay_capacity=8, replay_frac=0.25)
        path = os.path.join(d, "c.safetensors")
        m.save(path)
        rows.append(("C-written, " + label, compare(m, EBTModel.load(path, torch.float64), EBTModel.load(path),
                                                     a.B, a.S, 2)))
        # torch -> C: a PyTorch-initialised model saved by ebt.torch
        tm = EBTModel(dict(CFG_A, **kw), generator=torch.Generator().manual_seed(3))
        path = os.path.join(d, "t.safetensors")
        tm.save(path)
        rows.append(("torch-written, " + label, compare(ebt.Model.load(path), EBTModel.load(path, torch.float64),
                                                         tm, a.B, a.S, 4)))
    print("B=%d S=%d; max|x - torch float64| / max|torch float64|  (x = C float32 ; torch float32)" % (a.B, a.S))
    for label, out in rows:
        print(label)
        for k, (c, t) in out.items():
            print("  %-30s C %.2e   torch32 %.2e" % (k, c, t))


if __name__ == "__main__":
    main()
