#!/usr/bin/env python3
"""Independent PyTorch (float64, autograd) reference for training through the
thinking loop (docs/model.md section 6), modes detach / truncate / full.

Run from the repo root:   /usr/bin/python3 tests/ref/gen_train_ref.py
(/usr/bin/python3 is the Debian interpreter with python3-torch installed.)
Reads the checkpoints tests/ref/{a,b,d,e}.safetensors and vectors written by
gen_ref.py (never modifies them), reuses gen_ref.energy() for E(x, p), and
writes tests/ref/train_{a,b}.txt and train_{d,e}.bin (S = 70).  Prints
finite-difference self-checks.  Reproducible as gen_ref.py is: fixed seeds,
float64 kernels pinned (OpenBLAS Haswell, ATen AVX2).

Setup (all randomness off): B, S from the configuration's vectors, K = 3
(2 for e), seeded inputs rounded to float32: tokens, targets ~ U{0..V-1},
initial logits y0 ~ N(0,1), per-position step multipliers u_i ~ U[0.0002, 0.0008].
alpha_i = max(alpha, 1e-4) * u_i  (alpha = 5 in the checkpoints: alpha_i in [0.001, 0.004]).
For k = 0..K-1:  p_k = softmax(y_k);  E_k = E(x, p_k) at step index k;
g_k = d(sum E_k)/dp_k;  y_{k+1} = p_k - alpha_i g_k.
L_k = mean over B*S positions of CE(log_softmax(y_k), target), k = 1..K.
  detach:   p_k constant (detached), g_k differentiated;  loss = mean_k L_k
  truncate: chain kept, g_0..g_{K-2} constants, g_{K-1} differentiated; loss = L_K
  full:     everything differentiated;                      loss = mean_k L_k

Why so small a step: the chain y_k -> y_{k+1} = p_k - alpha_i g_k has the
Jacobian (I - alpha_i H_pp) J_softmax, and these small random models have
positions with |H_pp J_softmax| up to ~200 (S <= 6) and ~3500 (d, S = 70).
With the earlier alpha_i in [0.25, 1] every step multiplied rounding errors
by up to ~100: a float32 computation of the gradients (the library, or
PyTorch itself in float32) was off by up to 5e-4 of the largest entry, by an
amount that depended on the BLAS kernel.  At alpha_i <= 0.004 the chain
amplifies little, the float32 library agrees to < 1e-5 of the largest entry
on every kernel, and the modes still differ by 1.9% or more in every tensor.
Large steps are covered in double precision by tests/test_fd.c and
tests/test_shapes.c (finite differences).

M.grad_alpha_abs is the sum over positions of |d loss/d alpha_i| (alpha as one
variable per position): alpha's gradient is the sum of these contributions,
which largely cancel (1e-3 of their magnitudes in d's truncate mode), so a
float sum errs in proportion to M.grad_alpha_abs, not to the gradient.

.txt format (as gen_ref.py): '#' lines are comments; each record is a line
'<name> <count>' followed by one line of <count> numbers; .bin: gen_ref.py's
binary records.  Records: B S K tokens targets init_logits (b,i,v) alpha_mult
(b,i), then per mode M: M.loss, M.ce (L_1..L_K), M.energy_mean (mean E_k,
k = 0..K-1), M.grad_alpha_abs, M.grad.<tensor> for every checkpoint tensor
(incl. alpha; row-major as in the checkpoint).  Text: inputs and
loss/ce/energy use '%.17g'; gradients '%.17g' for b, '%.13g' for a (to keep
train_a.txt under 300 KB).
"""
import os, sys
os.environ['OPENBLAS_CORETYPE'] = 'Haswell'      # before torch loads OpenBLAS (see gen_ref.py)
os.environ['ATEN_CPU_CAPABILITY'] = 'avx2'
import json, struct
import torch
import torch.nn.functional as F

OUT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, OUT)
sys.dont_write_bytecode = True     # leave no __pycache__ in tests/ref
import gen_ref                   # energy(), f32(), cdiff(); sets default dtype float64
from gen_ref import energy, f32, cdiff
import ebt.checkpoint as ebt_checkpoint   # python/ (gen_ref put it on sys.path)

MODES = ('detach', 'truncate', 'full')
U_RANGE = (0.0002, 0.0008)
# vectors to read B, S from; seed of the inputs; K; output file; gradient format (text only)
CFGS = {
    'a': dict(src='a.txt', seed=1001, K=3, out='train_a.txt', gfmt='%.13g'),
    'b': dict(src='b.txt', seed=1002, K=3, out='train_b.txt', gfmt='%.17g'),
    'd': dict(src='d.bin', seed=1004, K=3, out='train_d.bin'),
    'e': dict(src='e.bin', seed=1005, K=2, out='train_e.bin'),
}

# ---------------------------------------------------------------- inputs
def read_safetensors(path):
    """-> (config dict as gen_ref uses it, {name: float64 tensor}) in gen_ref's order.
    Any checkpoint the library writes (tensor order, optim.* and replay tensors
    are the reader's business: python/ebt/checkpoint.py)."""
    ck = ebt_checkpoint.read(path)
    m = ck.config
    c = dict(arch=m['arch'], V=m['vocab_size'], D=m['d_model'], H=m['n_heads'], F=m['d_ff'],
             L=m['n_layers'], theta=m['rope_theta'], eps=m['norm_eps'], n_step_embed=m['n_step_embed'],
             tie=m['tie_pred_embed'])
    names = [s[0] for s in gen_ref.param_specs(c)]       # gen_ref's order (that of the .txt records)
    assert sorted(names) == sorted(ck.tensors), 'unexpected tensor set'
    return c, {name: torch.tensor(ck.tensors[name], dtype=torch.float64) for name in names}

def read_vectors(path):
    """gen_ref.py's .txt or .bin records -> {name: [float]}"""
    raw, recs = open(path, 'rb').read(), {}
    if raw.startswith(b'EBTREF-BIN 1\n'):
        at = raw.index(b'\n') + 1
        while at < len(raw):
            nl = raw.index(b'\n', at); line = raw[at:nl].decode(); at = nl + 1
            if line.startswith('#'):
                continue
            name, cnt = line.split(); cnt = int(cnt)
            recs[name] = list(struct.unpack('<%dd' % cnt, raw[at:at + 8 * cnt])); at += 8 * cnt
        return recs
    lines = [l for l in raw.decode().splitlines() if not l.startswith('#')]
    for hdr, body in zip(lines[0::2], lines[1::2]):
        name, cnt = hdr.split(); vals = [float(x) for x in body.split()]
        assert len(vals) == int(cnt), name
        recs[name] = vals
    return recs

# ---------------------------------------------------------------- the unrolled loop
def need_grad(p):
    return p if p.requires_grad else p.detach().requires_grad_(True)

def unroll(P, c, tok, tgt, y0, u, mode, K, frozen_p=None, frozen_g=None, alpha_pos=None):
    """Returns loss, [L_1..L_K], [mean E_0..E_{K-1}], [p_k], [g_k] (the last two detached).
    frozen_p (detach) / frozen_g (truncate): surrogates for the finite-difference checks.
    alpha_pos [B,S]: alpha as one variable per position (all equal to P['alpha'])."""
    V = c['V']
    a = P['alpha'] if alpha_pos is None else alpha_pos
    ai = (torch.clamp(a, min=1e-4) * u)[..., None]                   # [B,S,1]
    y, ces, ems, ps, gs = y0, [], [], [], []
    for k in range(K):
        p = torch.softmax(y, dim=-1)
        if mode == 'detach':                                          # p_k a constant input
            p = (frozen_p[k] if frozen_p is not None else p).detach().requires_grad_(True)
        if mode == 'truncate' and k < K - 1:                          # g_k a constant
            pd = p.detach().requires_grad_(True)
            E = energy(P, c, tok, pd, k)
            g = frozen_g[k] if frozen_g is not None else torch.autograd.grad(E.sum(), pd)[0]
        else:                                                         # g_k differentiated
            p = need_grad(p)
            E = energy(P, c, tok, p, k)
            g = torch.autograd.grad(E.sum(), p, create_graph=True)[0]
        ems.append(E.mean().item()); ps.append(p.detach().clone()); gs.append(g.detach().clone())
        y = p - ai * g
        ces.append(F.cross_entropy(y.reshape(-1, V), tgt.reshape(-1)))
    loss = ces[-1] if mode == 'truncate' else sum(ces) / K
    return loss, [l.item() for l in ces], ems, ps, gs

def grads_of(P, c, tok, tgt, y0, u, mode, K):
    Q = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    loss, ces, ems, ps, gs = unroll(Q, c, tok, tgt, y0, u, mode, K)
    gr = torch.autograd.grad(loss, list(Q.values()), allow_unused=True)
    gr = {n: torch.zeros_like(t) if g is None else g.detach() for (n, t), g in zip(Q.items(), gr)}
    return loss.item(), ces, ems, ps, gs, gr

def alpha_abs(P, c, tok, tgt, y0, u, mode, K, galpha):
    """sum over positions of |d loss/d alpha_i|, alpha_i the per-position copies of alpha:
    the scale of alpha's gradient before the positions' contributions cancel (a float
    sum of them errs in proportion to it, not to their sum)."""
    A = P['alpha'].expand(u.shape).clone().requires_grad_(True)
    loss = unroll(P, c, tok, tgt, y0, u, mode, K, alpha_pos=A)[0]
    ca = torch.autograd.grad(loss, A)[0]
    assert abs(ca.sum().item() - galpha) <= 1e-12 * ca.abs().sum().item(), (ca.sum().item(), galpha)
    return ca.abs().sum().item()

# ---------------------------------------------------------------- self checks
def bump(P, name, e, d):
    Q = dict(P); Q[name] = P[name].clone(); Q[name].view(-1)[e] += d
    return Q

def fd_check(P, c, tok, tgt, y0, u, mode, K, gr, ps, gs):
    """Max relative error of autograd vs 4th-order central FD (h=1e-5) over a few entries."""
    fz = dict(frozen_p=ps) if mode == 'detach' else dict(frozen_g=gs) if mode == 'truncate' else {}
    Lf = lambda Q: unroll(Q, c, tok, tgt, y0, u, mode, K, **fz)[0].item()
    names = ['alpha', 'tok_embed.weight', 'pred_embed.weight', 'step_embed.weight',
             'layers.0.attn.wq.weight', 'layers.1.ffn.w2.weight', 'layers.0.attn_norm.weight',
             'final_norm.weight', 'energy_head.weight']
    res = {}
    for name in [n for n in names if n in P]:
        flat = gr[name].flatten(); idx = torch.argsort(flat.abs(), descending=True)
        errs = []
        for e in sorted({idx[0].item(), idx[len(idx) // 3].item(), idx[len(idx) // 2].item()}):
            ag = flat[e].item()
            fd = cdiff(lambda t: Lf(bump(P, name, e, t)))
            errs.append(abs(fd - ag) / max(abs(ag), 1e-12))
        res[name] = max(errs)
    return res

# ---------------------------------------------------------------- output
def write_txt(path, c, recs):
    with open(path, 'w') as fh:
        fh.write('# EBT training-through-thinking reference, cfg: %s\n' % json.dumps(c))
        fh.write('# generated by tests/ref/gen_train_ref.py (PyTorch float64 autograd), docs/model.md section 6\n')
        for name, vals, fmt in recs:
            vals = [vals] if isinstance(vals, (int, float)) else \
                vals if isinstance(vals, list) else vals.flatten().tolist()
            fh.write('%s %d\n%s\n' % (name, len(vals), ' '.join(fmt % x for x in vals)))

def write_bin(path, c, recs):
    with open(path, 'wb') as fh:
        fh.write(b'EBTREF-BIN 1\n')
        fh.write(('# EBT training-through-thinking reference, cfg: %s\n' % json.dumps(c)).encode())
        fh.write(b'# generated by tests/ref/gen_train_ref.py (PyTorch float64 autograd), docs/model.md section 6\n')
        for name, vals, _ in recs:
            vals = [vals] if isinstance(vals, (int, float)) else \
                vals if isinstance(vals, list) else vals.flatten().tolist()
            fh.write(('%s %d\n' % (name, len(vals))).encode() + struct.pack('<%dd' % len(vals), *vals))

def main():
    for key, tc in CFGS.items():
        c, P = read_safetensors(os.path.join(OUT, key + '.safetensors'))
        ref = read_vectors(os.path.join(OUT, tc['src']))
        B, S, V, K = int(ref['B'][0]), int(ref['S'][0]), c['V'], tc['K']
        # weights sanity: our reader + gen_ref.energy reproduce the recorded energies
        t0 = torch.tensor(ref['tokens'], dtype=torch.long).reshape(B, S)
        E0 = energy(P, c, t0, torch.tensor(ref['probs']).reshape(B, S, V), int(ref['step'][0]))
        e_chk = (E0.flatten() - torch.tensor(ref['energy'])).abs().max().item()

        g = torch.Generator().manual_seed(tc['seed'])
        tok = torch.randint(0, V, (B, S), generator=g)
        tgt = torch.randint(0, V, (B, S), generator=g)
        y0 = f32(torch.randn(B, S, V, generator=g))
        u = f32(U_RANGE[0] + (U_RANGE[1] - U_RANGE[0]) * torch.rand(B, S, generator=g))
        recs = [('B', B, '%d'), ('S', S, '%d'), ('K', K, '%d'), ('tokens', tok, '%d'),
                ('targets', tgt, '%d'), ('init_logits', y0, '%.17g'), ('alpha_mult', u, '%.17g')]
        print('cfg %s: V=%d B=%d S=%d K=%d alpha=%g u in [%g, %g]; max|E - %s energy| = %.3g'
              % (key, V, B, S, K, P['alpha'].item(), U_RANGE[0], U_RANGE[1], tc['src'], e_chk))
        for mode in MODES:
            loss, ces, ems, ps, gs, gr = grads_of(P, c, tok, tgt, y0, u, mode, K)
            aabs = alpha_abs(P, c, tok, tgt, y0, u, mode, K, gr['alpha'].item())
            recs += [(mode + '.loss', loss, '%.17g'), (mode + '.ce', ces, '%.17g'),
                     (mode + '.energy_mean', ems, '%.17g'), (mode + '.grad_alpha_abs', aabs, '%.17g')]
            recs += [('%s.grad.%s' % (mode, n), gr[n], tc.get('gfmt', '%.17g')) for n in P]
            res = fd_check(P, c, tok, tgt, y0, u, mode, K, gr, ps, gs)
            print('  %-8s loss %.10g  ce %s  energy_mean %s  d loss/d alpha %.4g (sum of |per position| %.4g)'
                  % (mode, loss, ' '.join('%.6g' % x for x in ces), ' '.join('%.6g' % x for x in ems),
                     gr['alpha'].item(), aabs))
            print('           FD rel. err (4th-order central, h=1e-5, 3 entries each): '
                  + ', '.join('%s %.2g' % (n.replace('.weight', ''), e) for n, e in res.items()))
        path = os.path.join(OUT, tc['out'])
        meta = dict(c, B=B, S=S, K=K, seed=tc['seed'], alpha_mult=list(U_RANGE))
        (write_bin if path.endswith('.bin') else write_txt)(path, meta, recs)
        print('  wrote %s (%d bytes)' % (path, os.path.getsize(path)))

if __name__ == '__main__':
    main()
