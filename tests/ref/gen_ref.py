#!/usr/bin/env python3
"""Independent PyTorch (float64, autograd) reference for the EBT spec
(docs/model.md sections 1-4, 8, 9); writes small test vectors for the C library.
The energy and transformer++ functions are those of the Python package
(python/ebt/torch.py: energy, lm_logits), run in float64.

Run from the repo root:   /usr/bin/python3 tests/ref/gen_ref.py
(/usr/bin/python3 is the Debian interpreter with python3-torch installed.)
Writes tests/ref/{a,b,c,d,e,f}.safetensors (checkpoints, docs/model.md section 9) and
tests/ref/{a,b,c}.txt, tests/ref/{d,e,f}.bin (vectors), and prints the
finite-difference and causality self-checks.  a, b, c are small (S <= 6);
d, e, f have S = 70, more than two of the library's 32-row attention query
chunks, with several heads (d also has a step embedding).

Reproducible: fixed torch.manual_seed per configuration, and the float64
kernels pinned below (OpenBLAS's Haswell kernels, ATen's AVX2 code), so that
every machine with AVX2 writes the same bytes (unpinned, the last bits of
the float64 results depend on the kernels the machine picks).

.txt format: '#' lines are comments; each record is a line '<name> <count>'
followed by one line of <count> numbers ('%.17g'; integers for B, S, step,
tokens, targets).  .bin format (smaller for the large configurations): a
line 'EBTREF-BIN 1', '#' comment lines, then per record a line
'<name> <count>' followed by <count> little-endian float64 (8 bytes each).
Arrays are row-major: (b, i, vocab) and parameters [out, in].
"""
import os
os.environ['OPENBLAS_CORETYPE'] = 'Haswell'      # before torch loads OpenBLAS
os.environ['ATEN_CPU_CAPABILITY'] = 'avx2'
import json, math, struct, sys
import torch

torch.set_default_dtype(torch.float64)
OUT = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True     # leave no __pycache__ in tests/ref or python/ebt
sys.path.insert(0, os.path.join(OUT, '..', '..', 'python'))
import ebt.torch as ebt_torch      # the model's math (needs torch, not libebt)

CFGS = {
    'a': dict(arch='ebt', V=11, D=16, H=2, F=24, L=2, max_seq_len=8, n_step_embed=3,
              tie=1, theta=10000.0, eps=1e-5, B=2, S=5, step=1, seed=1),
    'b': dict(arch='ebt', V=13, D=12, H=3, F=20, L=2, max_seq_len=8, n_step_embed=0,
              tie=0, theta=10000.0, eps=1e-5, B=2, S=6, step=0, seed=2),
    'c': dict(arch='transformer++', V=13, D=12, H=3, F=20, L=2, max_seq_len=8,
              theta=10000.0, eps=1e-5, B=2, S=6, seed=3),
    # S = 70: three query chunks of the observed and predicted streams (71 observed rows
    # with d's step token); d uses max_seq_len = S, the largest RoPE position S + 1
    'd': dict(arch='ebt', V=11, D=16, H=2, F=20, L=2, max_seq_len=70, n_step_embed=3,
              tie=0, theta=10000.0, eps=1e-5, B=2, S=70, step=2, seed=4, fmt='bin'),
    'e': dict(arch='ebt', V=13, D=16, H=4, F=12, L=2, max_seq_len=80, n_step_embed=0,
              tie=1, theta=10000.0, eps=1e-5, B=1, S=70, step=0, seed=5, fmt='bin'),
    'f': dict(arch='transformer++', V=13, D=16, H=4, F=24, L=2, max_seq_len=70,
              theta=10000.0, eps=1e-5, B=2, S=70, seed=6, fmt='bin'),
}

def f32(t):                       # round once to float32, keep as float64 values
    return t.float().double()

# ---------------------------------------------------------------- parameters
def param_specs(c):
    """(name, shape, kind) in checkpoint order (docs/model.md section 2)."""
    V, D, F = c['V'], c['D'], c['F']
    ps = [('tok_embed.weight', [V, D], 'normal')]
    if c['arch'] == 'ebt' and not c['tie']:
        ps.append(('pred_embed.weight', [V, D], 'xavier'))
    if c['arch'] == 'ebt' and c['n_step_embed'] > 0:
        ps.append(('step_embed.weight', [c['n_step_embed'], D], 'normal'))
    for l in range(c['L']):
        p = 'layers.%d.' % l
        ps.append((p + 'attn_norm.weight', [D], 'gain'))
        for w in ('wq', 'wk', 'wv', 'wo'):
            ps.append((p + 'attn.%s.weight' % w, [D, D], 'xavier'))
        ps.append((p + 'ffn_norm.weight', [D], 'gain'))
        ps += [(p + 'ffn.w1.weight', [F, D], 'xavier'), (p + 'ffn.w2.weight', [D, F], 'xavier'),
               (p + 'ffn.w3.weight', [F, D], 'xavier')]
    ps.append(('final_norm.weight', [D], 'gain'))
    if c['arch'] == 'ebt':
        ps += [('energy_head.weight', [1, D], 'head'), ('alpha', [1], 'alpha')]
    else:
        ps.append(('lm_head.weight', [V, D], 'xavier'))
    return ps

def init_params(c):
    P = {}
    for name, shape, kind in param_specs(c):
        z = torch.randn(shape)
        if kind == 'xavier':      # pred_embed [V,D] is a map V->D: in+out = V+D either way
            t = z * math.sqrt(2.0 / (shape[0] + shape[1]))
        elif kind == 'normal':
            t = z
        elif kind == 'gain':
            t = 1.0 + 0.1 * z
        elif kind == 'head':
            t = 0.3 * z
        else:
            t = torch.full(shape, 5.0)
        P[name] = f32(t)
    return P

# ---------------------------------------------------------------- model
# The math lives in the package (python/ebt/torch.py, functional and
# dtype-agnostic); this script runs it in float64 with its own configs.
def lib_cfg(c):
    """gen_ref's config keys -> the ebt_config field names ebt.torch uses."""
    return dict(arch=c['arch'], vocab_size=c['V'], d_model=c['D'], n_heads=c['H'], d_ff=c['F'],
                n_layers=c['L'], max_seq_len=c.get('max_seq_len', 0), n_step_embed=c.get('n_step_embed', 0),
                tie_pred_embed=c.get('tie', 0), rope_theta=c['theta'], norm_eps=c['eps'])

def energy(P, c, tokens, probs, step):
    """tokens [B,S] long, probs [B,S,V] -> E [B,S]."""
    return ebt_torch.energy(P, lib_cfg(c), tokens, probs, step)

def ar_forward(P, c, tokens, targets):
    """transformer++: logits [B,S,V], mean CE loss."""
    B, S = tokens.shape
    logits = ebt_torch.lm_logits(P, lib_cfg(c), tokens)
    loss = torch.nn.functional.cross_entropy(logits.reshape(B * S, -1), targets.reshape(-1))
    return logits, loss

# ---------------------------------------------------------------- derivatives
def ebt_derivs(P, c, tokens, probs, v, step, names):
    """E, dE/dp, H_pp v, dE/dtheta, grad_theta(v . dE/dp) for theta in names."""
    P = {n: t.clone().requires_grad_(n in names) for n, t in P.items()}
    p = probs.clone().requires_grad_(True)
    E = energy(P, c, tokens, p, step)
    ws = [p] + [P[n] for n in names]
    g1 = torch.autograd.grad(E.sum(), ws, create_graph=True, allow_unused=True)
    s = (g1[0] * v).sum()
    g2 = torch.autograd.grad(s, ws, allow_unused=True)
    z = lambda g, w: torch.zeros_like(w) if g is None else g.detach()
    grads = {n: z(g, P[n]) for n, g in zip(names, g1[1:])}
    mixed = {n: z(g, P[n]) for n, g in zip(names, g2[1:])}
    return E.detach(), g1[0].detach(), z(g2[0], p), grads, mixed

def grad_p(P, c, tokens, probs, step):
    p = probs.clone().requires_grad_(True)
    return torch.autograd.grad(energy(P, c, tokens, p, step).sum(), p)[0]

# ---------------------------------------------------------------- self checks
def relerr(fd, ag):
    fd, ag = fd.flatten(), ag.flatten()
    den = torch.clamp(ag.abs(), min=1e-3 * ag.abs().max().item())   # floor for near-zero entries
    return ((fd - ag).abs() / den).max().item()

def cdiff(f, h=1e-5):
    """4th-order central difference of f(t) at t=0 (truncation O(h^4))."""
    return (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)

def bump(P, name, e, d):
    Q = dict(P); Q[name] = P[name].clone(); Q[name].view(-1)[e] += d
    return Q

def pick_entries(t, n=3):
    flat = t.flatten(); idx = torch.argsort(flat.abs(), descending=True)
    return [idx[0].item(), idx[len(idx) // 3].item(), idx[len(idx) // 2].item()][:n]

def check_ebt(P, c, tokens, probs, v, step, out):
    Ef = lambda Q, pr: energy(Q, c, tokens, pr, step).sum().item()
    gp, hv, grads, mixed = out['grad_probs'], out['hvp'], out['grads'], out['mixed']
    n = probs.numel()                 # every entry, or 64 seeded ones (with the first and last)
    ents = list(range(n)) if n <= 256 else \
        sorted({0, n - 1} | set(torch.randperm(n, generator=torch.Generator().manual_seed(7))[:62].tolist()))
    fd = torch.zeros(len(ents))
    for r, e in enumerate(ents):
        d = torch.zeros(n); d[e] = 1.0; d = d.view_as(probs)
        fd[r] = cdiff(lambda t: Ef(P, probs + t * d))
    res = {'grad_probs (%d entries)' % len(ents): relerr(fd, gp.flatten()[ents])}
    res['hvp'] = relerr(cdiff(lambda t: grad_p(P, c, tokens, probs + t * v, step)), hv)
    sv = lambda Q: (grad_p(Q, c, tokens, probs, step) * v).sum().item()
    for name in [n for n in ('tok_embed.weight', 'pred_embed.weight', 'step_embed.weight',
                             'layers.0.attn.wq.weight', 'layers.1.attn.wk.weight',
                             'layers.0.ffn.w2.weight', 'layers.1.attn_norm.weight',
                             'final_norm.weight', 'energy_head.weight') if n in grads]:
        eg, em = [], []
        for e in pick_entries(grads[name]):
            fg = cdiff(lambda t: Ef(bump(P, name, e, t), probs))
            fm = cdiff(lambda t: sv(bump(P, name, e, t)))
            ag, am = grads[name].view(-1)[e].item(), mixed[name].view(-1)[e].item()
            eg.append(abs(fg - ag) / max(abs(ag), 1e-12)); em.append(abs(fm - am) / max(abs(am), 1e-12))
        res['grad.' + name] = max(eg); res['mixed.' + name] = max(em)
    # causality: E_i must not depend on x_{i+1..} nor on p_j (j != i)
    g = torch.Generator().manual_seed(99)
    E0 = energy(P, c, tokens, probs, step); B, S = tokens.shape
    worst, moved = 0.0, 0.0
    for i in range(S):
        t2 = tokens.clone(); t2[:, i + 1:] = (t2[:, i + 1:] + 1 + torch.randint(0, c['V'] - 1, t2[:, i + 1:].shape, generator=g)) % c['V']
        p2 = torch.softmax(torch.randn(probs.shape, generator=g), -1); p2[:, i] = probs[:, i]
        worst = max(worst, (energy(P, c, t2, p2, step)[:, i] - E0[:, i]).abs().max().item())
        p3 = probs.clone(); p3[:, i] = torch.softmax(torch.randn(B, c['V'], generator=g), -1)
        moved = max(moved, (energy(P, c, tokens, p3, step)[:, i] - E0[:, i]).abs().min().item())
    res['causality max|dE_i| (x_{>i}, p_{j!=i} changed)'] = worst
    res['sanity min|dE_i| (p_i changed, must be > 0)'] = moved
    return res

def check_ar(P, c, tokens, targets, grads, logits):
    res = {}
    L = lambda Q: ar_forward(Q, c, tokens, targets)[1].item()
    for name in ('tok_embed.weight', 'layers.0.attn.wq.weight', 'layers.1.ffn.w1.weight',
                 'layers.0.ffn_norm.weight', 'lm_head.weight'):
        errs = []
        for e in pick_entries(grads[name]):
            fg = cdiff(lambda t: L(bump(P, name, e, t))); ag = grads[name].view(-1)[e].item()
            errs.append(abs(fg - ag) / max(abs(ag), 1e-12))
        res['grad.' + name] = max(errs)
    S = tokens.shape[1]; worst = 0.0
    for i in range(S - 1):
        t2 = tokens.clone(); t2[:, i + 1:] = (t2[:, i + 1:] + 1) % c['V']
        worst = max(worst, (ar_forward(P, c, t2, targets)[0][:, i] - logits[:, i]).abs().max().item())
    res['causality max|dlogits_i| (x_{>i} changed)'] = worst
    return res

# ---------------------------------------------------------------- output
def write_safetensors(path, c, P):
    meta = {'format': 'ebt', 'version': '1', 'arch': c['arch'], 'vocab_size': str(c['V']),
            'd_model': str(c['D']), 'n_layers': str(c['L']), 'n_heads': str(c['H']),
            'd_ff': str(c['F']), 'max_seq_len': str(c['max_seq_len']),
            'rope_theta': '%.9g' % c['theta'], 'norm_eps': '%.9g' % c['eps']}
    if c['arch'] == 'ebt':
        meta['n_step_embed'] = str(c['n_step_embed']); meta['tie_pred_embed'] = str(c['tie'])
    header, data, off = {'__metadata__': meta}, b'', 0
    for name, shape, _ in param_specs(c):
        vals = P[name].flatten().tolist()
        blob = struct.pack('<%df' % len(vals), *vals)
        header[name] = {'dtype': 'F32', 'shape': shape, 'data_offsets': [off, off + len(blob)]}
        data += blob; off += len(blob)
    hj = json.dumps(header, separators=(',', ':')).encode()
    hj += b' ' * (-len(hj) % 8)
    with open(path, 'wb') as fh:
        fh.write(struct.pack('<Q', len(hj)) + hj + data)
    # read back with an independent little parser
    raw = open(path, 'rb').read(); n = struct.unpack('<Q', raw[:8])[0]; hd = json.loads(raw[8:8 + n])
    for name, shape, _ in param_specs(c):
        a, b = hd[name]['data_offsets']
        got = torch.tensor(struct.unpack('<%df' % ((b - a) // 4), raw[8 + n + a:8 + n + b]))
        assert hd[name]['shape'] == shape and torch.equal(got, P[name].flatten()), name

def write_txt(path, c, recs):
    with open(path, 'w') as fh:
        fh.write('# EBT reference vectors, cfg: %s\n' % json.dumps({k: v for k, v in c.items() if k != 'seed'}))
        fh.write('# generated by tests/ref/gen_ref.py (PyTorch float64 autograd)\n')
        for name, vals, is_int in recs:
            vals = [vals] if isinstance(vals, (int, float)) else vals.flatten().tolist()
            fmt = (lambda x: '%d' % x) if is_int else (lambda x: '%.17g' % x)
            fh.write('%s %d\n%s\n' % (name, len(vals), ' '.join(fmt(x) for x in vals)))

def write_bin(path, c, recs):
    with open(path, 'wb') as fh:
        fh.write(b'EBTREF-BIN 1\n')
        fh.write(('# EBT reference vectors, cfg: %s\n' % json.dumps(
            {k: v for k, v in c.items() if k not in ('seed', 'fmt')})).encode())
        fh.write(b'# generated by tests/ref/gen_ref.py (PyTorch float64 autograd)\n')
        for name, vals, _ in recs:
            vals = [vals] if isinstance(vals, (int, float)) else vals.flatten().tolist()
            fh.write(('%s %d\n' % (name, len(vals))).encode() + struct.pack('<%dd' % len(vals), *vals))

def main():
    for key, c in CFGS.items():
        torch.manual_seed(c['seed'])
        c.setdefault('tie', 0); c.setdefault('n_step_embed', 0)
        P = init_params(c)
        B, S, V = c['B'], c['S'], c['V']
        tokens = torch.randint(0, V, (B, S))
        names = [n for n, _, _ in param_specs(c) if n != 'alpha']
        recs = [('B', B, True), ('S', S, True)]
        if c['arch'] == 'ebt':
            probs = f32(torch.softmax(torch.randn(B, S, V) * 1.5, dim=-1))
            v = f32(torch.randn(B, S, V))
            E, gp, hv, grads, mixed = ebt_derivs(P, c, tokens, probs, v, c['step'], names)
            recs += [('step', c['step'], True), ('tokens', tokens, True), ('probs', probs, False),
                     ('v', v, False), ('energy', E, False), ('grad_probs', gp, False), ('hvp', hv, False)]
            for n in names:
                recs += [('grad.' + n, grads[n], False), ('mixed.' + n, mixed[n], False)]
            res = check_ebt(P, c, tokens, probs, v, c['step'],
                            dict(grad_probs=gp, hvp=hv, grads=grads, mixed=mixed))
        else:
            targets = torch.randint(0, V, (B, S))
            Q = {n: t.clone().requires_grad_(n in names) for n, t in P.items()}
            logits, loss = ar_forward(Q, c, tokens, targets)
            gs = torch.autograd.grad(loss, [Q[n] for n in names])
            grads = {n: g.detach() for n, g in zip(names, gs)}
            logits, loss = logits.detach(), loss.detach()
            recs += [('tokens', tokens, True), ('targets', targets, True),
                     ('logits', logits, False), ('loss', loss.reshape(1), False)]
            recs += [('grad.' + n, grads[n], False) for n in names]
            res = check_ar(P, c, tokens, targets, grads, logits)
        write_safetensors(os.path.join(OUT, key + '.safetensors'), c, P)
        if c.get('fmt') == 'bin':
            write_bin(os.path.join(OUT, key + '.bin'), c, recs)
        else:
            write_txt(os.path.join(OUT, key + '.txt'), c, recs)
        print('cfg %s (%s): self-checks (relative errors vs 4th-order central FD, h=1e-5)' % (key, c['arch']))
        for k, e in res.items():
            print('  %-55s %.3g' % (k, e))

if __name__ == '__main__':
    main()
