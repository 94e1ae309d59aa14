"""The ebt model in PyTorch: an nn.Module that reads and writes the library's
checkpoints and computes the same energy, dE/dp (autograd), H_pp v (double
backward), thinking and transformer++ logits (docs/model.md sections 2-5, 8).

    from ebt.torch import EBTModel
    m = EBTModel.load("model.safetensors")               # any checkpoint ebt_save writes
    E = m.energy(tokens, probs)                          # tokens [B,S] long, probs [B,S,V]
    E, g = m.energy_grad(tokens, probs)                  # dE/dp by autograd
    r = m.think(tokens, steps=4, init_logits=y0)         # docs/model.md section 5
    m.save("edited.safetensors")                         # ebt_load reads it

Parameter names (state_dict keys) are the checkpoint names of section 2.
The module works in float32 (default) or float64 (dtype=torch.float64); the
RoPE tables are computed as ebt.c does (angles in double with libm, cos and
sin rounded once to float32) in both. The random parts (initial weights,
y_0 when not given, Langevin noise, alpha_rand) use torch's generator, not
the library's: give init_logits (and noise 0, alpha_rand 1) to reproduce a
C thinking run. Needs torch only (not libebt); tests/ref/gen_ref.py uses the
same functions in float64 as the independent reference of the C library.
"""
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import torch
from torch import nn

from . import checkpoint as ck

# ebt_config_default() (ebt.h); tests check that these agree with the library
DEFAULT_CONFIG = dict(arch="ebt", vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=128, max_seq_len=256,
                      n_step_embed=0, tie_pred_embed=0, rope_theta=10000.0, norm_eps=1e-5, alpha=5.0)


# ---------------------------------------------------------------- the math (functional)
def rmsnorm(h, g, eps):
    """h / sqrt(mean(h^2) + eps) * g over the last axis (section 3.2)."""
    return h / torch.sqrt((h * h).mean(-1, keepdim=True) + eps) * g


@lru_cache(maxsize=64)
def _rope_f32(pos, Dh, theta):
    cos = [[0.0] * (Dh // 2) for _ in pos]
    sin = [[0.0] * (Dh // 2) for _ in pos]
    for r, p in enumerate(pos):
        for m in range(Dh // 2):
            ang = p * math.pow(theta, -2.0 * m / Dh)        # double, libm (as ebt.c)
            cos[r][m], sin[r][m] = math.cos(ang), math.sin(ang)
    return torch.tensor(cos, dtype=torch.float32), torch.tensor(sin, dtype=torch.float32)


def rope_tables(pos, Dh, theta, dtype):
    """cos/sin [len(pos), Dh/2] of section 3.4: float32 values, in dtype."""
    c, s = _rope_f32(tuple(int(p) for p in pos), int(Dh), float(theta))
    return c.to(dtype), s.to(dtype)


def rope(x, cos, sin):
    """x [B, N, H, Dh] rotated in interleaved pairs (x[2m], x[2m+1])."""
    u0, u1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((u0 * c - u1 * s, u0 * s + u1 * c), dim=-1).reshape(x.shape)


def run_layers(P, cfg, X, pos, allowed):
    """All rows of both streams through the L layers (section 3.2-3.3).
    P: {name: tensor}; X [B, N, D]; pos: N RoPE positions; allowed [N, N]
    bool: row r may attend to key column c."""
    B, N, D = X.shape
    H = cfg["n_heads"]
    Dh, eps = D // H, cfg["norm_eps"]
    cos, sin = rope_tables(pos, Dh, cfg["rope_theta"], X.dtype)
    for l in range(cfg["n_layers"]):
        def W(n):
            return P["layers.%d.%s" % (l, n)]
        a = rmsnorm(X, W("attn_norm.weight"), eps)
        q = rope((a @ W("attn.wq.weight").T).reshape(B, N, H, Dh), cos, sin)
        k = rope((a @ W("attn.wk.weight").T).reshape(B, N, H, Dh), cos, sin)
        v = (a @ W("attn.wv.weight").T).reshape(B, N, H, Dh)
        sc = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(Dh)
        sc = sc.masked_fill(~allowed[None, None], float("-inf"))
        att = torch.softmax(sc, dim=-1)
        o = torch.einsum("bhnm,bmhd->bnhd", att, v).reshape(B, N, D)
        X = X + o @ W("attn.wo.weight").T
        f = rmsnorm(X, W("ffn_norm.weight"), eps)
        g = f @ W("ffn.w1.weight").T
        X = X + (g * torch.sigmoid(g) * (f @ W("ffn.w3.weight").T)) @ W("ffn.w2.weight").T
    return X


@lru_cache(maxsize=64)
def _masks(S, off):
    So, N = S + off, S + off + S
    allowed = torch.zeros(N, N, dtype=torch.bool)
    for r in range(So):                       # observed row r: observed rows 0..r
        allowed[r, :r + 1] = True
    for i in range(S):                        # predicted row i: observed rows 0..i+off, and itself
        allowed[So + i, :i + off + 1] = True
        allowed[So + i, So + i] = True
    pos = tuple(range(So)) + tuple(i + 1 + off for i in range(S))
    return allowed, pos


def energy(P, cfg, tokens, probs, step=0):
    """E [B, S] of candidates probs [B, S, V] after tokens [B, S] (long) at
    thinking step `step` (section 3): both streams through the layers, the
    energy head on the predicted rows."""
    B, S = tokens.shape
    ns = cfg.get("n_step_embed", 0)
    off = 1 if ns > 0 else 0
    obs = P["tok_embed.weight"][tokens]                                    # [B, S, D]
    if off:
        st = P["step_embed.weight"][min(step, ns - 1)]
        obs = torch.cat((st.expand(B, 1, -1), obs), dim=1)                 # the step token first
    pe = P["tok_embed.weight"] if cfg.get("tie_pred_embed", 0) else P["pred_embed.weight"]
    X = torch.cat((obs, probs @ pe), dim=1)                                # So observed + S predicted rows
    allowed, pos = _masks(S, off)
    X = run_layers(P, cfg, X, pos, allowed)
    hp = rmsnorm(X[:, S + off:], P["final_norm.weight"], cfg["norm_eps"])
    return (hp @ P["energy_head.weight"].T)[..., 0]


def lm_logits(P, cfg, tokens):
    """transformer++ logits [B, S, V] (section 8)."""
    B, S = tokens.shape
    allowed = torch.tril(torch.ones(S, S, dtype=torch.bool))
    X = run_layers(P, cfg, P["tok_embed.weight"][tokens], list(range(S)), allowed)
    return rmsnorm(X, P["final_norm.weight"], cfg["norm_eps"]) @ P["lm_head.weight"].T


# ---------------------------------------------------------------- the module
class RMSNorm(nn.Module):
    """Holds an RMSNorm gain `weight` [D] (the math is rmsnorm())."""
    def __init__(self, D, **kw):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(D, **kw))


class Attention(nn.Module):
    """Holds wq, wk, wv, wo [D, D] (the math is run_layers())."""
    def __init__(self, D, **kw):
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(D, D, bias=False, **kw) for _ in range(4))


class FeedForward(nn.Module):
    """Holds the SwiGLU weights w1, w3 [F, D] and w2 [D, F]."""
    def __init__(self, D, F, **kw):
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(D, F, bias=False, **kw), nn.Linear(F, D, bias=False, **kw), \
            nn.Linear(D, F, bias=False, **kw)


class Block(nn.Module):
    """One layer's parameters, named as in the checkpoint (layers.{l}.*)."""
    def __init__(self, D, F, **kw):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(D, **kw), Attention(D, **kw)
        self.ffn_norm, self.ffn = RMSNorm(D, **kw), FeedForward(D, F, **kw)


@dataclass
class ThinkOutput:
    """Thinking's results, named as ebt.ThinkResult (torch tensors)."""
    probs: torch.Tensor             # [B, P, V]
    logits: torch.Tensor            # [B, P, V]
    energy: torch.Tensor            # [B, P, K+1]
    final_energy: torch.Tensor      # [B, P]
    steps_taken: torch.Tensor       # [B, P] long
    winner: torch.Tensor            # [B, P] long
    curvature: Optional[torch.Tensor]   # [B, P] (with curvature=True), NaN where the answer never moved
    rows_evaluated: int
    rows_budget: int
    diverged: int


class EBTModel(nn.Module):
    """The ebt model (arch "ebt" or "transformer++") with the checkpoint's
    parameter names. EBTModel(config dict or keyword ebt_config fields;
    defaults of ebt_config_default()), dtype float32 or float64; weights
    drawn as docs/model.md section 2 says, from torch's generator."""

    def __init__(self, config=None, dtype=torch.float32, generator=None, **fields):
        super().__init__()
        c = dict(DEFAULT_CONFIG, **dict(config or {}, **fields))
        c["arch"] = {0: "ebt", 1: "transformer++", "transformer": "transformer++"}.get(c["arch"], c["arch"])
        if c["arch"] not in ("ebt", "transformer++"):
            raise ValueError("arch must be 'ebt' or 'transformer++', got %r" % (c["arch"],))
        if c["d_model"] % c["n_heads"] or (c["d_model"] // c["n_heads"]) % 2:
            raise ValueError("d_model must be divisible by n_heads, with an even head width")
        if c["arch"] != "ebt":
            c["n_step_embed"] = c["tie_pred_embed"] = 0
        self.config = c
        V, D, F, kw = c["vocab_size"], c["d_model"], c["d_ff"], dict(dtype=dtype)
        ebt = c["arch"] == "ebt"
        self.tok_embed = nn.Embedding(V, D, **kw)
        if ebt and not c["tie_pred_embed"]:
            self.pred_embed = nn.Embedding(V, D, **kw)
        if ebt and c["n_step_embed"] > 0:
            self.step_embed = nn.Embedding(c["n_step_embed"], D, **kw)
        self.layers = nn.ModuleList(Block(D, F, **kw) for _ in range(c["n_layers"]))
        self.final_norm = RMSNorm(D, **kw)
        if ebt:
            self.energy_head = nn.Linear(D, 1, bias=False, **kw)
            self.alpha = nn.Parameter(torch.full((1,), float(c["alpha"]), **kw))
        else:
            self.lm_head = nn.Linear(D, V, bias=False, **kw)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator=None):
        """Initial values of section 2 (normal / Xavier / ones / alpha), rounded to float32."""
        for name, t in self.tensors().items():
            if name.endswith("norm.weight"):
                t.fill_(1.0)
            elif name == "alpha":
                t.fill_(float(self.config["alpha"]))
            elif name in ("tok_embed.weight", "step_embed.weight"):
                t.normal_(0.0, 1.0, generator=generator)
            else:                                    # Xavier(in, out): std sqrt(2 / (in + out))
                t.normal_(0.0, math.sqrt(2.0 / (t.shape[0] + t.shape[1])), generator=generator)
            t.copy_(t.float())

    def tensors(self):
        """{checkpoint name: parameter}, in checkpoint order (section 2)."""
        P = dict(self.named_parameters())
        return {name: P[name] for name, _ in ck.tensor_specs(self.config)}

    @property
    def dtype(self):
        """torch.float32 or torch.float64."""
        return self.tok_embed.weight.dtype

    # ---- checkpoints ----------------------------------------------------
    @classmethod
    def from_checkpoint(cls, c, dtype=torch.float32):
        """A module holding the weights of an ebt.checkpoint.Checkpoint."""
        m = cls(c.config, dtype=dtype)
        with torch.no_grad():
            for name, t in m.tensors().items():
                t.copy_(torch.from_numpy(np.array(c.tensors[name], dtype=np.float32)))
        return m

    @classmethod
    def load(cls, path, dtype=torch.float32, with_state=False):
        """Loads any checkpoint the library writes (tensors in any order,
        optim.* accepted). with_state=True returns (model, optim, replay):
        optim None or {"step": int, "m": {name: tensor}, "v": {name: tensor}}
        (the AdamW moments), replay None or {"capacity", "next", "tokens",
        "targets" (long [n, S]), "logits" ([n, S, V])}."""
        c = ck.read(path)
        m = cls.from_checkpoint(c, dtype)
        if not with_state:
            return m
        optim = replay = None
        if c.optim is not None:
            optim = {"step": c.optim["step"],
                     "m": {k: torch.from_numpy(v.copy()) for k, v in c.optim["m"].items()},
                     "v": {k: torch.from_numpy(v.copy()) for k, v in c.optim["v"].items()}}
        if c.replay is not None:
            r = c.replay
            replay = {"capacity": r["capacity"], "next": r["next"],
                      "tokens": torch.from_numpy(r["tokens"].astype(np.int64)),
                      "targets": torch.from_numpy(r["targets"].astype(np.int64)),
                      "logits": torch.from_numpy(r["logits"].copy())}
        return m, optim, replay

    def to_checkpoint(self, optim=None, replay=None):
        """An ebt.checkpoint.Checkpoint of the weights (float32), with the
        optimiser state and replay buffer in the form load() returns."""
        def np32(t):
            return np.asarray(t.detach().cpu().to(torch.float32).numpy(), dtype=np.float32)
        tensors = {k: np32(t) for k, t in self.tensors().items()}
        cfg = dict(self.config)
        if "alpha" in tensors:
            cfg["alpha"] = float(tensors["alpha"][0])
        o = None if optim is None else {"step": int(optim["step"]),
                                         "m": {k: np32(torch.as_tensor(v)) for k, v in optim["m"].items()},
                                         "v": {k: np32(torch.as_tensor(v)) for k, v in optim["v"].items()}}
        r = None
        if replay is not None:
            r = {"capacity": int(replay["capacity"]), "next": int(replay["next"]),
                 "tokens": np.asarray(torch.as_tensor(replay["tokens"]).cpu().numpy(), dtype=np.int32),
                 "targets": np.asarray(torch.as_tensor(replay["targets"]).cpu().numpy(), dtype=np.int32),
                 "logits": np32(torch.as_tensor(replay["logits"]))}
        return ck.Checkpoint(cfg, tensors, o, r)

    def save(self, path, optim=None, replay=None):
        """Writes a checkpoint ebt_load accepts (safetensors, section 9)."""
        ck.write(path, self.to_checkpoint(optim, replay))

    # ---- evaluation -----------------------------------------------------
    def _tok(self, tokens):
        t = torch.as_tensor(tokens).long()
        return t[None] if t.dim() == 1 else t

    def forward(self, tokens, probs, step=0):
        """The energies E [B, S] (same as energy())."""
        return self.energy(tokens, probs, step)

    def energy(self, tokens, probs, step=0):
        """E [B, S] of probs [B, S, V] after tokens [B, S] (differentiable)."""
        if self.config["arch"] != "ebt":
            raise RuntimeError("energy needs arch ebt")
        t = self._tok(tokens)
        p = torch.as_tensor(probs, dtype=self.dtype).reshape(t.shape + (self.config["vocab_size"],))
        return energy(self.tensors(), self.config, t, p, step)

    def energy_grad(self, tokens, probs, step=0, create_graph=False):
        """(E, dE/dp) by autograd; dE_i/dp_i = d(sum E)/dp_i (section 3.5)."""
        with torch.enable_grad():
            p = torch.as_tensor(probs, dtype=self.dtype).detach().requires_grad_(True)
            E = self.energy(tokens, p, step)
            g, = torch.autograd.grad(E.sum(), p, create_graph=create_graph)
        return E if create_graph else E.detach(), g

    def hvp(self, tokens, probs, v, step=0):
        """H_pp v = d/de dE/dp(p + e v) by double backward (section 4.2)."""
        with torch.enable_grad():
            p = torch.as_tensor(probs, dtype=self.dtype).detach().requires_grad_(True)
            g, = torch.autograd.grad(self.energy(tokens, p, step).sum(), p, create_graph=True)
            hv, = torch.autograd.grad((g * torch.as_tensor(v, dtype=self.dtype)).sum(), p)
        return hv

    def lm_logits(self, tokens):
        """transformer++ logits [B, S, V]."""
        if self.config["arch"] != "transformer++":
            raise RuntimeError("lm_logits needs arch transformer++")
        return lm_logits(self.tensors(), self.config, self._tok(tokens))

    # ---- thinking (section 5) -------------------------------------------------
    def _rows(self, t, p, last_only):
        """The full [B, S, V] candidates for rows p [B, P, V] (P = 1: the last
        position; the others are uniform and do not affect its energy)."""
        if not last_only:
            return p
        V = self.config["vocab_size"]
        return torch.cat((torch.full(t.shape[:1] + (t.shape[1] - 1, V), 1.0 / V, dtype=p.dtype), p), 1)

    def _energy_grad_rows(self, t, y, step, last_only):
        """p = softmax(y), E and dE/dp for rows [B, P] (P = S, or 1: the last position)."""
        with torch.enable_grad():
            p = torch.softmax(y, -1).detach().requires_grad_(True)
            E = energy(self.tensors(), self.config, t, self._rows(t, p, last_only), step)[:, -p.shape[1]:]
            g, = torch.autograd.grad(E.sum(), p)
        return p.detach(), E.detach(), g

    def _hvp_rows(self, t, p, v, step, last_only):
        """H_pp v for rows [B, P] at p."""
        with torch.enable_grad():
            p = p.detach().requires_grad_(True)
            E = energy(self.tensors(), self.config, t, self._rows(t, p, last_only), step)[:, -p.shape[1]:]
            g, = torch.autograd.grad(E.sum(), p, create_graph=True)
            hv, = torch.autograd.grad((g * v).sum(), p)
        return hv

    @torch.no_grad()
    def think(self, tokens, steps=4, step_size=0.0, alpha_rand=1.0, noise=0.0, init_scale=1.0,
              energy_threshold=-math.inf, tol=-1.0, restarts=1, last_only=False, init_logits=None,
              rel_drop=-math.inf, grad_tol=-1.0, row_budget=0, clamp=0.0, keep_best=False, curvature=False,
              generator=None):
        """Gradient descent on the energy over the candidates, as ebt_think
        (ebt.h documents every option): y <- y + noise N(0,1); p = softmax(y);
        y <- p - alpha_i dE/dp (each entry of alpha_i dE/dp within +-clamp
        when clamp > 0). A position stops at energy_threshold, when the
        energy changes by <= tol or falls by <= rel_drop |E_{k-1}|, when the
        RMS of dE/dp is <= grad_tol, or when row_budget (row evaluations per
        call, all starts) runs out for it (the highest-energy positions go
        on); a non-finite value stops it at its last finite state. The lowest
        final energy over `restarts` starts wins (the earlier on ties);
        keep_best answers with the lowest-energy state evaluated. curvature:
        v.(H v)/v.v at the answer along its last move. init_logits:
        [restarts, B, P, V] or [B, P, V]. Returns ThinkOutput."""
        t = self._tok(tokens)
        B, S = t.shape
        V, K, dt = self.config["vocab_size"], int(steps), self.dtype
        P, ns = (1 if last_only else S), self.config["n_step_embed"]
        alpha = float(step_size) if step_size > 0 else max(float(self.alpha.detach()[0]), 1e-4)
        init = None if init_logits is None else torch.as_tensor(init_logits, dtype=dt).reshape(restarts, B, P, V)
        nan = torch.tensor(float("nan"), dtype=dt)
        col = torch.arange(K + 1)
        rows_eval = diverged = last_k = 0
        best = None

        def where(mask, a, b):                        # per-row choice of [B, P, ...] states
            return torch.where(mask.reshape(mask.shape + (1,) * (a.dim() - 2)), a, b)

        for s in range(restarts):
            y = init[s].clone() if init is not None else \
                init_scale * torch.randn(B, P, V, generator=generator, dtype=dt)
            u = torch.ones(B, P, 1, dtype=dt)
            if alpha_rand > 1:
                u = 1 / alpha_rand + torch.rand(B, P, 1, generator=generator, dtype=dt) * (alpha_rand - 1 / alpha_rand)
            a_i = (alpha * u).to(torch.float32).to(dt)
            active = torch.ones(B, P, dtype=torch.bool)
            done = torch.full((B, P), K, dtype=torch.long)
            hist = torch.zeros(B, P, K + 1, dtype=dt)
            y_eval, y_prev, moved = y.clone(), y.clone(), torch.zeros(B, P, dtype=torch.bool)
            keep_E, keep_k, y_keep = torch.full((B, P), float("nan"), dtype=dt), done.clone(), y.clone()
            y_kprev, kmoved = y.clone(), moved.clone()
            for k in range(K + 1):
                if row_budget > 0 and k > 0:          # the budget: the highest-energy rows go on
                    left = row_budget - rows_eval
                    if left < int(active.sum()):
                        idx = torch.nonzero(active.flatten()).flatten()
                        e = hist[..., k - 1].flatten()[idx].tolist()
                        order = sorted(range(len(idx)), key=lambda i: (-e[i], int(idx[i])))
                        cut = torch.zeros(B * P, dtype=torch.bool)
                        cut[idx[[order[i] for i in range(max(left, 0), len(idx))]]] = True
                        cut = cut.reshape(B, P)
                        y = where(cut, y_eval, y)
                        done = torch.where(cut, torch.tensor(k - 1), done)
                        active &= ~cut
                if not active.any():
                    break
                if k < K and noise > 0:
                    y = where(active, y + noise * torch.randn(y.shape, generator=generator, dtype=dt), y)
                step = min(k, ns - 1) if ns > 0 else 0
                p, E, g = self._energy_grad_rows(t, y, step, last_only)
                rows_eval += int(active.sum())
                last_k = k
                bad = ~torch.isfinite(E)
                if k < K:
                    bad |= ~torch.isfinite(g).all(-1)
                bad &= active
                if bad.any():                          # back to the last finite state
                    diverged += int(bad.sum())
                    if k > 0:
                        y = where(bad, y_eval, y)
                    else:
                        hist[..., 0] = torch.where(bad, nan, hist[..., 0])
                        keep_E = torch.where(bad, nan, keep_E)
                    done = torch.where(bad, torch.tensor(max(k - 1, 0)), done)
                    active &= ~bad
                # record the finite states of E_k
                if curvature and k > 0:
                    y_prev, moved = where(active, y_eval, y_prev), moved | active
                y_eval = where(active, y, y_eval)
                hist[..., k] = torch.where(active, E, hist[..., k])
                if keep_best:
                    better = active & ((k == 0) | (E < keep_E))
                    keep_E, keep_k = torch.where(better, E, keep_E), torch.where(better, torch.tensor(k), keep_k)
                    y_keep = where(better, y, y_keep)
                    if curvature:
                        kmoved = torch.where(better, moved, kmoved)
                        y_kprev = where(better & moved, y_prev, y_kprev)
                # the stopping rules
                stop = (E <= energy_threshold) | torch.tensor(k == K)
                if k >= 1:
                    Ep = hist[..., k - 1].double()
                    stop |= ((E.double() - Ep).abs() <= tol) | (Ep - E.double() <= rel_drop * Ep.abs())
                if grad_tol >= 0 and k < K:
                    stop |= g.double().pow(2).mean(-1).sqrt() <= grad_tol
                stop &= active
                done = torch.where(stop, torch.tensor(k), done)
                active &= ~stop
                # the update of the moving rows
                d = a_i * g
                if clamp > 0:
                    d = d.clamp(-clamp, clamp)
                y_new = p - d
                over = active & ~torch.isfinite(y_new).all(-1)
                if over.any():                         # the step overflowed: stay at E_k's state
                    diverged += int(over.sum())
                    done = torch.where(over, torch.tensor(k), done)
                    active &= ~over
                y = where(active, y_new, y)
            hist = torch.where(col > done[..., None], hist.gather(-1, done[..., None]), hist)   # held after a stop
            E_ans = keep_E if keep_best else hist[..., K]
            k_ans, y_ans = (keep_k, y_keep) if keep_best else (done, y)
            m_ans, prev_ans = (kmoved, y_kprev) if keep_best else (moved, y_prev)
            if best is None:
                win = torch.ones(B, P, dtype=torch.bool)
                best = dict(y=y_ans, hist=hist, E=E_ans, k=k_ans, w=torch.zeros(B, P, dtype=torch.long),
                            moved=m_ans, prev=prev_ans)
                continue
            win = (E_ans < best["E"]) | (torch.isnan(best["E"]) & ~torch.isnan(E_ans))
            for key, new in (("y", y_ans), ("hist", hist), ("E", E_ans), ("k", k_ans), ("moved", m_ans),
                             ("prev", prev_ans)):
                best[key] = where(win, new, best[key])
            best["w"] = torch.where(win, torch.tensor(s), best["w"])
        curv = None
        if curvature:                                 # v.(H v)/v.v along the answer's last move
            p = torch.softmax(best["y"], -1)
            v = p - torch.softmax(best["prev"], -1)
            hv = self._hvp_rows(t, p, v, min(last_k, ns - 1) if ns > 0 else 0, last_only)
            vv = (v.double() * v.double()).sum(-1)
            c = (v.double() * hv.double()).sum(-1) / vv
            curv = torch.where(best["moved"] & (vv > 0), c, torch.tensor(float("nan"), dtype=torch.float64)).to(dt)
        return ThinkOutput(torch.softmax(best["y"], -1), best["y"], best["hist"], best["E"], best["k"], best["w"],
                           curv, rows_eval, restarts * B * P * (K + 1), diverged)


def load(path, dtype=torch.float32, with_state=False):
    """EBTModel.load."""
    return EBTModel.load(path, dtype, with_state)
