#!/usr/bin/env python3
"""Independent PyTorch (float64, autograd) reference for training through the
thinking loop (docs/model.md section 6), modes detach / truncate / full.

Run from the repo root:   /usr/bin/python3 tests/ref/gen_train_ref.py
(/usr/bin/python3 is the Debian interpreter with python3-torch installed.)
Reads the checkpoints tests/ref/{a,b}.safetensors written by gen_ref.py (never
modifies them), reuses gen_ref.energy() for E(x, p), and writes
tests/ref/train_{a,b}.txt.  Prints finite-difference self-checks.

Setup (all randomness off): B, S from {a,b}.txt, K = 3, seeded inputs rounded
to float32: tokens, targets ~ U{0..V-1}, initial logits y0 ~ N(0,1), per-position
step multipliers u_i ~ U[0.05, 0.2].  alpha_i = max(alpha, 1e-4) * u_i.
For k = 0..K-1:  p_k = softmax(y_k);  E_k = E(x, p_k) at step index k;
g_k = d(sum E_k)/dp_k;  y_{k+1} = p_k - alpha_i g_k.
L_k = mean over B*S positions of CE(log_softmax(y_k), target), k = 1..K.
  detach:   p_k constant (detached), g_k differentiated;  loss = mean_k L_k
  truncate: chain kept, g_0..g_{K-2} constants, g_{K-1} differentiated; loss = L_K
  full:     everything differentiated;                      loss = mean_k L_k

.txt format (as gen_ref.py): '#' lines are comments; each record is a line
'<name> <count>' followed by one line of <count> numbers.  Records: B S K tokens
targets init_logits (b,i,v) alpha_mult (b,i), then per mode M: M.loss, M.ce (L_1..L_K),
M.energy_mean (mean E_k, k = 0..K-1), M.grad.<tensor> for every checkpoint tensor
(incl. alpha; row-major as in the checkpoint).  Inputs and loss/ce/energy use '%.17g';
gradients use GFMT[cfg]: '%.17g' for b, '%.13g' for a (to keep train_a.txt under 250 KB).
"""
import json, os, sys
import torch
import torch.nn.functional as F

OUT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, OUT)
sys.dont_write_bytecode = True     # leave no __pycache__ in tests/ref
import gen_ref                   # energy(), f32(), cdiff(); sets default dtype float64
from gen_ref import energy, f32, cdiff
import ebt.checkpoint as ebt_checkpoint   # python/ (gen_ref put it on sys.path)

K = 3
SEEDS = {'a': 1001, 'b': 1002}
MODES = ('detach', 'truncate', 'full')
GFMT = {'a': '%.13g', 'b': '%.17g'}   # gradient records only

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

def read_txt(path):
    recs, lines = {}, [l for l in open(path) if not l.startswith('#')]
    for hdr, body in zip(lines[0::2], lines[1::2]):
        name, cnt = hdr.split(); vals = [float(x) for x in body.split()]
        assert len(vals) == int(cnt), name
        recs[name] = vals
    return recs

# ---------------------------------------------------------------- the unrolled loop
def need_grad(p):
    return p if p.requires_grad else p.detach().requires_grad_(True)

def unroll(P, c, tok, tgt, y0, u, mode, frozen_p=None, frozen_g=None):
    """Returns loss, [L_1..L_K], [mean E_0..E_{K-1}], [p_k], [g_k] (the last two detached).
    frozen_p (detach) / frozen_g (truncate): surrogates for the finite-difference checks."""
    V = c['V']
    ai = (torch.clamp(P['alpha'], min=1e-4) * u)[..., None]          # [B,S,1]
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

def grads_of(P, c, tok, tgt, y0, u, mode):
    Q = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    loss, ces, ems, ps, gs = unroll(Q, c, tok, tgt, y0, u, mode)
    gr = torch.autograd.grad(loss, list(Q.values()), allow_unused=True)
    gr = {n: torch.zeros_like(t) if g is None else g.detach() for (n, t), g in zip(Q.items(), gr)}
    return loss.item(), ces, ems, ps, gs, gr

# ---------------------------------------------------------------- self checks
def bump(P, name, e, d):
    Q = dict(P); Q[name] = P[name].clone(); Q[name].view(-1)[e] += d
    return Q

def fd_check(P, c, tok, tgt, y0, u, mode, gr, ps, gs):
    """Max relative error of autograd vs 4th-order central FD (h=1e-5) over a few entries."""
    fz = dict(frozen_p=ps) if mode == 'detach' else dict(frozen_g=gs) if mode == 'truncate' else {}
    Lf = lambda Q: unroll(Q, c, tok, tgt, y0, u, mode, **fz)[0].item()
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

def main():
    for key in ('a', 'b'):
        c, P = read_safetensors(os.path.join(OUT, key + '.safetensors'))
        ref = read_txt(os.path.join(OUT, key + '.txt'))
        B, S, V = int(ref['B'][0]), int(ref['S'][0]), c['V']
        # weights sanity: our reader + gen_ref.energy reproduce the recorded energies
        t0 = torch.tensor(ref['tokens'], dtype=torch.long).reshape(B, S)
        E0 = energy(P, c, t0, torch.tensor(ref['probs']).reshape(B, S, V), int(ref['step'][0]))
        e_chk = (E0.flatten() - torch.tensor(ref['energy'])).abs().max().item()

        g = torch.Generator().manual_seed(SEEDS[key])
        tok = torch.randint(0, V, (B, S), generator=g)
        tgt = torch.randint(0, V, (B, S), generator=g)
        y0 = f32(torch.randn(B, S, V, generator=g))
        u = f32(0.05 + 0.15 * torch.rand(B, S, generator=g))
        recs = [('B', B, '%d'), ('S', S, '%d'), ('K', K, '%d'), ('tokens', tok, '%d'),
                ('targets', tgt, '%d'), ('init_logits', y0, '%.17g'), ('alpha_mult', u, '%.17g')]
        print('cfg %s: V=%d B=%d S=%d K=%d alpha=%g; max|E - %s.txt energy| = %.3g'
              % (key, V, B, S, K, P['alpha'].item(), key, e_chk))
        for mode in MODES:
            loss, ces, ems, ps, gs, gr = grads_of(P, c, tok, tgt, y0, u, mode)
            recs += [(mode + '.loss', loss, '%.17g'), (mode + '.ce', ces, '%.17g'),
                     (mode + '.energy_mean', ems, '%.17g')]
            recs += [('%s.grad.%s' % (mode, n), gr[n], GFMT[key]) for n in P]
            res = fd_check(P, c, tok, tgt, y0, u, mode, gr, ps, gs)
            print('  %-8s loss %.10g  ce %s  energy_mean %s' % (mode, loss,
                  ' '.join('%.6g' % x for x in ces), ' '.join('%.6g' % x for x in ems)))
            print('           FD rel. err (4th-order central, h=1e-5, 3 entries each): '
                  + ', '.join('%s %.2g' % (n.replace('.weight', ''), e) for n, e in res.items()))
        path = os.path.join(OUT, 'train_%s.txt' % key)
        write_txt(path, dict(c, B=B, S=S, K=K, seed=SEEDS[key]), recs)
        print('  wrote %s (%d bytes)' % (path, os.path.getsize(path)))

if __name__ == '__main__':
    main()
