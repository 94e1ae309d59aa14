"""Training (docs/model.md sections 6, 7): the ebt_train_* calls as methods
of ebt.Model (mixed in from TrainingMixin).

    m.train_step(tokens, targets, mode="full", lr=3e-4)      # one optimiser step
    # or in parts (gradient accumulation / data parallelism):
    m.zero_grad()
    for first, (tok, tgt) in micro_batches:
        m.train_accumulate(tok, tgt, first_seq=first, weight=len(tok) / G, **opts)
    buf = m.train_buffer()        # gradients + sums as one array (allreduce it in place)
    stats = m.train_apply(**opts)

Options: opts (a dict or an ebt_train_opts) and keyword fields of
ebt_train_opts (mode "detach" / "truncate" / "full", k_min, k_max, lr, ...),
starting from ebt_train_default(). Training calls use the model's own
workspace: one thread per model, and not while workspaces evaluate it.
"""
import functools
from ctypes import byref, c_size_t
from dataclasses import dataclass

import numpy as np

from . import _arrays as A
from . import _structs as S
from ._lib import DTYPE, LIB
from .errors import ArgError


def exclusive(method):
    """Runs a Model method that uses the model's own workspace or changes the
    model under the model's lock: such calls from several Python threads
    wait for each other (ebt.h THREADS: one thread per model at a time), and
    close() waits for them."""
    @functools.wraps(method)
    def locked(self, *args, **kw):
        with self._lock:
            return method(self, *args, **kw)
    return locked


def train_options(opts=None, **kw):
    """An ebt_train_opts: ebt_train_default() updated with opts (a dict or an
    ebt_train_opts) and keyword fields; mode may be a name."""
    kw = dict(kw)
    if isinstance(opts, dict) and isinstance(opts.get("mode"), str):
        opts = dict(opts, mode=_mode(opts["mode"]))
    if isinstance(kw.get("mode"), str):
        kw["mode"] = _mode(kw["mode"])
    return S.options(LIB.ebt_train_default(), opts, kw, "train option")


def _mode(name):
    if name not in S.MODES:
        raise ArgError("mode must be one of %s, got %r" % (", ".join(S.MODES), name))
    return S.MODES[name]


@dataclass
class TrainStats:
    """ebt_train_stats."""
    loss: float            # the loss that was optimised
    ce_first: float        # mean cross-entropy after step 1 (nats)
    ce_last: float         # ... after the last step
    energy_first: float    # mean energy at step 0
    energy_last: float     # ... at the last step
    grad_norm: float       # global gradient norm before clipping
    lr: float              # learning rate used
    alpha: float           # alpha after the step
    k: int                 # thinking steps used
    step: int              # optimiser steps taken so far

    @classmethod
    def _from(cls, s):
        return cls(**S.to_dict(s))


class TrainingMixin:
    """The training calls of ebt.Model."""

    def _batch(self, tokens, targets, init_logits=None, alpha_mult=None):
        V = self.vocab_size
        t = A.tokens(tokens, V)
        g = A.tokens(targets, V, "targets")
        if g.shape != t.shape:
            raise ArgError("targets must have the shape of tokens %s, got %s" % (t.shape, g.shape))
        y0 = None if init_logits is None else A.reals(init_logits, t.shape + (V,), "init_logits")
        u = None if alpha_mult is None else A.reals(alpha_mult, t.shape, "alpha_mult")
        B, S_ = (1, t.shape[0]) if t.ndim == 1 else t.shape
        return t, g, y0, u, B, S_

    @exclusive
    def train_step(self, tokens, targets, init_logits=None, opts=None, **kw):
        """One optimiser step on tokens[B, S] -> targets[B, S] (ebt_train_step):
        zero_grad, accumulate, apply. Returns TrainStats. A non-finite step
        raises NonFiniteError and changes nothing."""
        p = self._ptr
        o = train_options(opts, **kw)
        t, g, y0, _, B, S_ = self._batch(tokens, targets, init_logits)
        st = S.TrainStats()
        self._check(LIB.ebt_train_step(p, byref(o), A.ptr(t), A.ptr(g), B, S_, A.ptr(y0), byref(st)))
        return TrainStats._from(st)

    @exclusive
    def train_grad(self, tokens, targets, init_logits=None, alpha_mult=None, opts=None, **kw):
        """Zeroes and computes the gradients without updating (ebt_train_grad);
        init_logits [B, S, V] and alpha_mult [B, S] may fix the randomness.
        Returns TrainStats (the step fields as they stand)."""
        p = self._ptr
        o = train_options(opts, **kw)
        t, g, y0, u, B, S_ = self._batch(tokens, targets, init_logits, alpha_mult)
        st = S.TrainStats()
        self._check(LIB.ebt_train_grad(p, byref(o), A.ptr(t), A.ptr(g), B, S_, A.ptr(y0), A.ptr(u), byref(st)))
        return TrainStats._from(st)

    @exclusive
    def train_accumulate(self, tokens, targets, first_seq=0, weight=1.0, init_logits=None, alpha_mult=None,
                         opts=None, **kw):
        """Adds weight * the gradient of this micro-batch (sequences first_seq..
        first_seq+B-1 of the step's global batch) to the gradients and sums
        (ebt_train_accumulate)."""
        p = self._ptr
        o = train_options(opts, **kw)
        t, g, y0, u, B, S_ = self._batch(tokens, targets, init_logits, alpha_mult)
        first_seq = A.integer(first_seq, "first_seq", -2**63, 2**63 - 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating, np.integer)):
            raise ArgError("weight must be a number, got %r" % (weight,))
        self._check(LIB.ebt_train_accumulate(p, byref(o), A.ptr(t), A.ptr(g), B, S_, first_seq, float(weight),
                                             A.ptr(y0), A.ptr(u)))

    def train_buffer(self):
        """The gradients of every tensor in checkpoint order then the
        EBT_TRAIN_NSUMS (6) statistic sums, as one writable numpy view of
        n_params + 6 reals (ebt_train_buffer; valid as long as it lives)."""
        h = self._handle()
        n = c_size_t()
        ptr = LIB.ebt_train_buffer(h.ptr, byref(n))
        return A.view(h, ptr, (n.value,), DTYPE)

    @exclusive
    def train_apply(self, opts=None, **kw):
        """The optimiser step on the gradients as they stand (ebt_train_apply).
        Returns TrainStats."""
        p = self._ptr
        o = train_options(opts, **kw)
        st = S.TrainStats()
        self._check(LIB.ebt_train_apply(p, byref(o), byref(st)))
        return TrainStats._from(st)

    @exclusive
    def zero_grad(self):
        """Zeroes the gradients and the statistic sums (ebt_zero_grad)."""
        LIB.ebt_zero_grad(self._ptr)

    @exclusive
    def train_reset(self):
        """Forgets the AdamW moments, step count and replay buffer (ebt_train_reset)."""
        LIB.ebt_train_reset(self._ptr)

    @property
    def train_steps_done(self):
        """Optimiser steps taken (ebt_train_steps_done)."""
        return LIB.ebt_train_steps_done(self._handle().ptr)
