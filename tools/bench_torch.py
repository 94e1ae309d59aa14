#!/usr/bin/env python3
"""bench_torch.py -- PyTorch (float32, CPU) timings of the EBT of docs/model.md,
to be read side by side with the C library's bench (bench/bench.c).

Run with the Debian interpreter that has python3-torch (1.13):
  /usr/bin/python3 tools/bench_torch.py                  # all workloads, 1 thread, 5 repeats
  /usr/bin/python3 tools/bench_torch.py --threads 2 --repeats 9
  /usr/bin/python3 tools/bench_torch.py --only A_energy  # one workload, in this process
  /usr/bin/python3 tools/bench_torch.py --tiny --check   # seconds: self test vs tests/ref (float64)

What is measured (seconds per call; 2 warm-ups, then --repeats timed calls; median and min):
  A        EBT train step V=256 D=128 L=4 H=4 F=128 S=128 B=16, K=2, mode detach (docs/model.md section 6):
           p_k detached, g_k = dE/dp_k with create_graph, y_{k+1} = p_k - max(alpha,1e-4) g_k,
           loss = mean_k CE(y_{k+1}), backward, clip_grad_norm_(1.0), AdamW (wd 0.01, none on
           norm gains/alpha). y0 ~ N(0,1), alpha = 5 learnable, no noise/step randomisation.
  A_full   the same, mode full (nothing detached: BPTT through the thinking loop, H_pp v inside)
  A_tf     transformer++ train step at the A sizes (docs/model.md section 8): CE of rmsnorm(h)*g @ lm_head^T
  A_energy at A sizes, no parameter grads: observe (observed stream -> per-layer K/V cache),
           energy forward (predicted stream, no_grad), energy + dE/dp, H_pp v by double
           backward, and observe+energy (= ebt_energy) -- the rows of bench/bench.c
  B        EBT train step D=384 L=6 H=6 F=384 S=256 B=8 K=2 V=256, detach
Every workload runs in a fresh subprocess (--only NAME) so peak RSS (ru_maxrss) is per
workload; 'base MB' is the RSS right after import+setup of the process, before the workload.
Implementation: the observed stream does not depend on p, so it runs once per call and its
per-layer rotated K/V are shared by all thinking steps; the predicted stream attends to them
with one [S, S+1] softmax (causal mask over observed keys + its own key), masks and RoPE
tables built once. Defaults as ebt_config_default(): no step token, untied pred_embed.
"""
import argparse, json, math, os, resource, statistics, subprocess, sys, time
import torch
import torch.nn.functional as F

CFG_A = dict(V=256, D=128, L=4, H=4, F=128, S=128, B=16)
CFG_B = dict(V=256, D=384, L=6, H=6, F=384, S=256, B=8)
TINY = dict(V=32, D=16, L=1, H=2, F=16, S=8, B=2)
WORKLOADS = {'A': ('A', 'ebt', 'detach'), 'A_full': ('A', 'ebt', 'full'), 'A_tf': ('A', 'tf', None),
             'A_energy': ('A', 'energy', None), 'B': ('B', 'ebt', 'detach')}
EPS, THETA, ALPHA = 1e-5, 10000.0, 5.0

def param_specs(c, arch):
    V, D, Fd = c['V'], c['D'], c['F']
    ps = [('tok_embed.weight', [V, D], 'normal')]
    if arch == 'ebt':
        ps.append(('pred_embed.weight', [V, D], 'xavier'))
    for l in range(c['L']):
        p = 'layers.%d.' % l
        ps += [(p + 'attn_norm.weight', [D], 'one')]
        ps += [(p + 'attn.%s.weight' % w, [D, D], 'xavier') for w in ('wq', 'wk', 'wv', 'wo')]
        ps += [(p + 'ffn_norm.weight', [D], 'one'), (p + 'ffn.w1.weight', [Fd, D], 'xavier'),
               (p + 'ffn.w2.weight', [D, Fd], 'xavier'), (p + 'ffn.w3.weight', [Fd, D], 'xavier')]
    ps.append(('final_norm.weight', [D], 'one'))
    ps += ([('energy_head.weight', [1, D], 'xavier'), ('alpha', [1], 'alpha')] if arch == 'ebt'
           else [('lm_head.weight', [V, D], 'xavier')])
    return ps

def init_params(c, arch):              # docs/model.md section 2: Xavier normal, embeddings N(0,1), gains 1
    P = {}
    for name, shape, kind in param_specs(c, arch):
        if kind == 'xavier':
            t = torch.randn(shape) * math.sqrt(2.0 / (shape[0] + shape[1]))
        elif kind == 'normal':
            t = torch.randn(shape)
        else:
            t = torch.full(shape, ALPHA if kind == 'alpha' else 1.0)
        P[name] = t.requires_grad_(True)
    return P

def rmsnorm(h, g):
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS) * g

def rope(x, cos, sin):                 # x [B,H,N,Dh], interleaved pairs; cos/sin [N, Dh/2]
    u = x.unflatten(-1, (-1, 2))
    u0, u1 = u[..., 0], u[..., 1]
    return torch.stack((u0 * cos - u1 * sin, u0 * sin + u1 * cos), -1).flatten(-2)

class Model:
    def __init__(self, c, arch, P=None):
        self.c, self.H, self.Dh = c, c['H'], c['D'] // c['H']
        self.P = P if P is not None else init_params(c, arch)
        S, Dh = c['S'], self.Dh
        f = THETA ** (-2.0 * torch.arange(Dh // 2, dtype=torch.float64) / Dh)
        ang = torch.arange(S + 1, dtype=torch.float64)[:, None] * f        # double, rounded once
        cos, sin = ang.cos().float(), ang.sin().float()
        self.co, self.so, self.cp, self.sp = cos[:S], sin[:S], cos[1:], sin[1:]   # obs j: j, pred i: i+1
        self.mask = torch.full((S, S), float('-inf')).triu(1)          # key j <= query i allowed
        self.scale = 1.0 / math.sqrt(Dh)
        self.W = [[self.P['layers.%d.%s.weight' % (l, n)] for n in ('attn_norm', 'attn.wq', 'attn.wk',
                   'attn.wv', 'attn.wo', 'ffn_norm', 'ffn.w1', 'ffn.w2', 'ffn.w3')] for l in range(c['L'])]

    def heads(self, x):                # [B,N,D] -> [B,H,N,Dh]
        return x.unflatten(-1, (self.H, self.Dh)).transpose(1, 2)

    def qkv(self, h, w, cos, sin):
        a = rmsnorm(h, w[0])
        return (rope(self.heads(F.linear(a, w[1])), cos, sin), rope(self.heads(F.linear(a, w[2])), cos, sin),
                self.heads(F.linear(a, w[3])))

    def out_ffn(self, h, o, w):
        h = h + F.linear(o.transpose(1, 2).flatten(2), w[4])
        f = rmsnorm(h, w[5])
        return h + F.linear(F.silu(F.linear(f, w[6])) * F.linear(f, w[8]), w[7])

    def observe(self, tok, full=False):
        """Observed stream -> (final h or None, per-layer (k, v)); EBT needs only the K/V."""
        h, kv = F.embedding(tok, self.P['tok_embed.weight']), []
        for l, w in enumerate(self.W):
            q, k, v = self.qkv(h, w, self.co, self.so)
            kv.append((k, v))
            if l == len(self.W) - 1 and not full:
                return None, kv
            att = torch.softmax(q @ k.transpose(-1, -2) * self.scale + self.mask, -1)
            h = self.out_ffn(h, att @ v, w)
        return h, kv

    def energy(self, kv, p):           # p [B,S,V] -> E [B,S]
        h, S = p @ self.P['pred_embed.weight'], self.c['S']
        for (ko, vo), w in zip(kv, self.W):
            q, k, v = self.qkv(h, w, self.cp, self.sp)
            s = torch.cat((q @ ko.transpose(-1, -2) * self.scale + self.mask,
                           (q * k).sum(-1, keepdim=True) * self.scale), -1)
            att = torch.softmax(s, -1)
            h = self.out_ffn(h, att[..., :S] @ vo + att[..., S:] * v, w)
        return F.linear(rmsnorm(h, self.P['final_norm.weight']), self.P['energy_head.weight'])[..., 0]

    def tf_loss(self, tok, tgt):
        h, _ = self.observe(tok, full=True)
        logits = F.linear(rmsnorm(h, self.P['final_norm.weight']), self.P['lm_head.weight'])
        return F.cross_entropy(logits.flatten(0, 1), tgt.flatten())

def ebt_loss(m, tok, tgt, y0, K, mode):
    _, kv = m.observe(tok)
    alpha, y, loss = m.P['alpha'].clamp(min=1e-4), y0, 0.0
    for k in range(K):                 # thinking steps (all positions batched)
        p = torch.softmax(y, -1)
        if mode == 'detach' or not p.requires_grad:
            p = p.detach().requires_grad_(True)
        g, = torch.autograd.grad(m.energy(kv, p).sum(), p, create_graph=True)
        y = p - alpha * g
        loss = loss + F.cross_entropy(y.flatten(0, 1), tgt.flatten())
    return loss / K

def make_opt(P):
    nd = [t for n, t in P.items() if n == 'alpha' or 'norm' in n]
    dc = [t for n, t in P.items() if not (n == 'alpha' or 'norm' in n)]
    return torch.optim.AdamW([{'params': dc, 'weight_decay': 0.01}, {'params': nd, 'weight_decay': 0.0}],
                             lr=1e-3, betas=(0.9, 0.999), eps=1e-8, foreach=True)

def inputs(c, seed=1):
    g = torch.Generator().manual_seed(seed)
    B, S, V = c['B'], c['S'], c['V']
    seq = torch.randint(0, V, (B, S + 1), generator=g)
    return seq[:, :S], seq[:, 1:], torch.randn(B, S, V, generator=g), torch.randn(B, S, V, generator=g)

def timeit(fn, reps):
    for _ in range(2):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return ts

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

def run_workload(name, a):
    cname, kind, mode = WORKLOADS[name]
    c = dict(TINY if a.tiny else CFG_A if cname == 'A' else CFG_B)
    m = Model(c, 'tf' if kind == 'tf' else 'ebt')
    tok, tgt, y0, v = inputs(c)
    params = list(m.P.values())
    opt = make_opt(m.P)
    def train_step(lossf):
        def step():
            opt.zero_grad(set_to_none=True)
            lossf().backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        return step
    base, ops = rss_mb(), []
    if kind == 'ebt':
        ops.append(('train step K=%d %s' % (a.K, mode), train_step(lambda: ebt_loss(m, tok, tgt, y0, a.K, mode))))
    elif kind == 'tf':
        ops.append(('train step transformer++', train_step(lambda: m.tf_loss(tok, tgt))))
    else:
        for t in params:
            t.requires_grad_(False)
        with torch.no_grad():
            _, kv = m.observe(tok)
        p = torch.softmax(y0, -1).requires_grad_(True)
        obs = torch.no_grad()(lambda: m.observe(tok))
        fwd = torch.no_grad()(lambda: m.energy(kv, p))
        fwd_full = torch.no_grad()(lambda: m.energy(m.observe(tok)[1], p))
        def grad():
            torch.autograd.grad(m.energy(kv, p).sum(), p)
        def hvp():
            g, = torch.autograd.grad(m.energy(kv, p).sum(), p, create_graph=True)
            torch.autograd.grad((g * v).sum(), p)
        ops += [('observe', obs), ('energy', fwd), ('energy+dE/dp', grad), ('hvp', hvp),
                ('observe+energy', fwd_full)]
    rows = []
    for op, fn in ops:
        ts = timeit(fn, a.repeats)
        med = statistics.median(ts)
        rows.append(dict(workload=name, op=op, median_s=med, min_s=min(ts),
                         tokens_per_s=c['B'] * c['S'] / med))
    for r in rows:
        r.update(peak_rss_mb=rss_mb(), base_rss_mb=base, cfg=c)
    return rows

def check():
    """Tiny sizes: float32 fast code vs tests/ref float64 reference on the same weights."""
    sys.dont_write_bytecode = True     # leave no __pycache__ in tests/ref
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'ref'))
    import gen_ref, gen_train_ref      # gen_ref sets the default dtype to float64
    torch.set_default_dtype(torch.float32)
    c = dict(TINY, L=2); c64 = dict(arch='ebt', n_step_embed=0, tie=0, theta=THETA, eps=EPS, **c)
    err = lambda a, b: ((a.double() - b).abs().max() / b.abs().max()).item()
    def gworst(label, gr, g64):        # (label naming the worst tensor, its error)
        e, n = max((err(gr[n], g64[n]), n) for n in gr)
        return ('%s grads (worst %s)' % (label, n.replace('.weight', '')), e)
    worst, res = 0.0, []
    m = Model(c, 'ebt'); P64 = {n: t.detach().double() for n, t in m.P.items()}
    tok, tgt, y0, v = inputs(c, seed=7)
    p = torch.softmax(1.5 * y0, -1).requires_grad_(True)
    E = m.energy(m.observe(tok)[1], p)
    g, = torch.autograd.grad(E.sum(), p, create_graph=True)
    hv, = torch.autograd.grad((g * v).sum(), p)
    E64, g64, hv64, _, _ = gen_ref.ebt_derivs(P64, c64, tok, p.detach().double(), v.double(), 0, [])
    res += [('energy', err(E, E64)), ('dE/dp', err(g, g64)), ('H_pp v', err(hv, hv64))]
    K, u = gen_train_ref.K, torch.ones(c['B'], c['S'], dtype=torch.float64)
    for mode in ('detach', 'full'):
        loss = ebt_loss(m, tok, tgt, y0, K, mode)
        gr = dict(zip(m.P, torch.autograd.grad(loss, list(m.P.values()))))
        l64, _, _, _, _, gr64 = gen_train_ref.grads_of(P64, c64, tok, tgt, y0.double(), u, mode)
        res += [('%s K=%d loss' % (mode, K), err(loss, torch.tensor(l64, dtype=torch.float64))),
                gworst('%s K=%d' % (mode, K), gr, gr64)]
    mt = Model(c, 'tf'); Pt = {n: t.detach().double() for n, t in mt.P.items()}
    loss = mt.tf_loss(tok, tgt); gr = dict(zip(mt.P, torch.autograd.grad(loss, list(mt.P.values()))))
    Q = {n: t.clone().requires_grad_(True) for n, t in Pt.items()}
    _, l64 = gen_ref.ar_forward(Q, dict(c64, arch='transformer++'), tok, tgt)
    g64 = dict(zip(Q, torch.autograd.grad(l64, list(Q.values()))))
    res += [('transformer++ loss', err(loss, l64.detach())),
            gworst('transformer++', gr, g64)]
    print('check at %s: max|f32 - f64 ref| / max|f64 ref| (must be < 1e-4)' % c)
    for n, e in res:
        print('  %-44s %.2e %s' % (n, e, 'ok' if e < 1e-4 else 'FAIL'))
        worst = max(worst, e)
    return worst < 1e-4

def report(rows, a):
    print('threads=%d repeats=%d (median/min of timed calls after 2 warm-ups)%s'
          % (a.threads, a.repeats, ' TINY SIZES' if a.tiny else ''))
    print('%-9s %-26s %11s %11s %12s %9s %8s' % ('workload', 'op', 'median ms', 'min ms',
                                                'tokens/s', 'peak MB', 'base MB'))
    for r in rows:
        print('%-9s %-26s %11.3f %11.3f %12.0f %9.1f %8.1f' % (r['workload'], r['op'], 1e3 * r['median_s'],
              1e3 * r['min_s'], r['tokens_per_s'], r['peak_rss_mb'], r['base_rss_mb']))
    med = {(r['workload'], r['op']): r['median_s'] for r in rows}
    ratios = {}
    a_step = [t for (w, _), t in med.items() if w == 'A']; tf = [t for (w, _), t in med.items() if w == 'A_tf']
    if a_step and tf:
        ratios['A_over_A_tf'] = a_step[0] / tf[0]
    if ('A_energy', 'hvp') in med:
        ratios['hvp_over_energy_grad'] = med[('A_energy', 'hvp')] / med[('A_energy', 'energy+dE/dp')]
    for k, x in ratios.items():
        print('ratio %-22s %.2f' % (k, x))
    print('JSON: ' + json.dumps(dict(torch=torch.__version__, threads=a.threads, repeats=a.repeats,
                                     K=a.K, tiny=a.tiny, rows=rows, ratios=ratios)))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--only', help='comma list of ' + ','.join(WORKLOADS))
    ap.add_argument('--threads', default='1,2',
                    help='torch thread count, or a comma list: each runs in turn, then the best per workload '
                         '(default 1,2)')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--K', type=int, default=2, help='thinking steps in the EBT train steps')
    ap.add_argument('--tiny', action='store_true', help='V=32 D=16 L=1 H=2 F=16 S=8 B=2 for every workload')
    ap.add_argument('--check', action='store_true', help='correctness check vs tests/ref, then exit')
    a = ap.parse_args()
    if ',' in a.threads:               # each thread count in its own run, then PyTorch's best setting
        best = {}
        for t in a.threads.split(','):
            cmd = [sys.executable, os.path.abspath(__file__), '--threads', t, '--repeats', str(a.repeats),
                   '--K', str(a.K)] + (['--tiny'] if a.tiny else []) + (['--only', a.only] if a.only else [])
            out = subprocess.run(cmd, stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
            print('==== torch threads %s\n%s' % (t, out))
            for r in json.loads([l for l in out.splitlines() if l.startswith('JSON: ')][-1][6:])['rows']:
                key = '%s %s' % (r['workload'], r['op'])
                med = r.get('median_s', r.get('median'))
                if med is not None and (key not in best or med < best[key][0]):
                    best[key] = (med, t)
        print('==== PyTorch best setting per row (median s, threads)')
        for k, (med, t) in best.items():
            print('  %-34s %9.4f s  (%s thread%s)' % (k, med, t, '' if t == '1' else 's'))
        return
    a.threads = int(a.threads)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.check:
        sys.exit(0 if check() else 1)
    names = a.only.split(',') if a.only else list(WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            ap.error('unknown workload %r' % n)
    if len(names) == 1:
        return report(run_workload(names[0], a), a)
    rows = []
    for n in names:                    # fresh process per workload: per-workload peak RSS
        cmd = [sys.executable, os.path.abspath(__file__), '--only', n, '--threads', str(a.threads),
               '--repeats', str(a.repeats), '--K', str(a.K)] + (['--tiny'] if a.tiny else [])
        out = subprocess.run(cmd, stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
        rows += json.loads([l for l in out.splitlines() if l.startswith('JSON: ')][-1][6:])['rows']
    report(rows, a)

if __name__ == '__main__':
    main()
