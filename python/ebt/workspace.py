"""ebt.Workspace: the activations of up to max_B sequences of max_S tokens
for one model (ebt_workspace), and what runs in it: observe, energy and HVP
against a cached observation, thinking and generation.

Each Python thread may use its own workspace over one shared model at the
same time (the GIL is released during the C calls), as long as no thread
changes the model meanwhile (training, writes through parameter views).
A workspace serves one call at a time: a second call while one runs (from
another thread, or from an on_token callback) raises StateError.
"""
import ctypes
import functools
import threading
from ctypes import byref
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _arrays as A
from . import _structs as S
from ._lib import DTYPE, LIB, GenToken as _CGenToken
from .errors import ArgError, ArgTypeError, StateError, error
from .model import Model, _bs, _Handle

RESULT_ARRAYS = ("probs", "logits", "energy", "final_energy", "steps_taken", "winner", "curvature")
DEFAULT_OUTPUTS = RESULT_ARRAYS[:-1]     # the curvature costs an extra HVP pass: ask for it
INT = np.dtype(np.intc)


def think_options(opts=None, **kw):
    """An ebt_think_opts: ebt_think_default() updated with opts (a dict or an
    ebt_think_opts) and keyword fields (steps, step_size, alpha_rand, noise,
    init_scale, energy_threshold, tol, restarts, last_only, seed, rel_drop,
    grad_tol, row_budget, clamp, keep_best; ebt.h documents each)."""
    o = S.options(LIB.ebt_think_default(), opts, kw, "think option", skip=("init_logits",))
    o.init_logits = None                 # (think() sets it from its init_logits argument)
    return o


def gen_options(opts=None, think=None, **kw):
    """An ebt_gen_opts: ebt_gen_default() updated with opts / keyword fields
    (temperature, top_p, seed, no_cache) and think (the thinking options
    per token, as for think_options)."""
    o = S.options(LIB.ebt_gen_default(), opts, kw, "generate option", skip=("think", "on_token", "user"))
    if think is not None:
        o.think = think_options(think)
    o.on_token, o.user = S.GenCallback(), None     # (generate() sets its own trampoline)
    return o


def _short_repr(self):
    """Arrays as dtype[shape], the rest as values."""
    def r(v):
        return "%s%s" % (v.dtype, list(v.shape)) if isinstance(v, np.ndarray) else repr(v)
    return "%s(%s)" % (type(self).__name__, ", ".join("%s=%s" % (k, r(v)) for k, v in vars(self).items()))


@dataclass(repr=False)
class ThinkResult:
    """What ebt_think reports. Arrays are [B, P, ...] (P = S, or 1 with
    last_only; no B axis for 1-D tokens); a field not asked for in
    `outputs` is None (curvature is only computed when asked for)."""
    probs: Optional[np.ndarray]          # [B, P, V] answer softmax(y) of the winning start
    logits: Optional[np.ndarray]         # [B, P, V] its logits y
    energy: Optional[np.ndarray]         # [B, P, K+1] E_k of the winning start, k = 0..K
    final_energy: Optional[np.ndarray]   # [B, P]
    steps_taken: Optional[np.ndarray]    # [B, P] updates the winning start made (int)
    winner: Optional[np.ndarray]         # [B, P] index of the winning start (int)
    curvature: Optional[np.ndarray]      # [B, P] v.(H_pp v)/v.v along the answer's last move (NaN: never moved)
    rows_evaluated: int                  # predicted-row evaluations done, all starts
    rows_budget: int                     # the same without stopping: restarts * B*P * (K+1)
    diverged: int                        # positions stopped by a non-finite value
    __repr__ = _short_repr


@dataclass(repr=False)
class GenToken:
    """One generated token, as passed to on_token (copies: keep them freely)."""
    index: int                           # position among the new tokens
    token: int                           # the token chosen
    probs: np.ndarray                    # [V] distribution it was sampled from
    energy: float                        # final energy of its thinking (NaN for transformer++)
    energies: Optional[np.ndarray]       # [steps+1] E_k of the winning start (None for transformer++)
    steps: int                           # the thinking budget K
    steps_taken: int                     # updates the winning start made
    winner: int                          # index of the winning start
    __repr__ = _short_repr


@dataclass(repr=False)
class GenResult:
    """What ebt_generate wrote: n tokens (n < n_new if on_token stopped it)."""
    tokens: np.ndarray                   # [n] int32
    energy: Optional[np.ndarray]         # [n] final energy per token (NaN for transformer++)
    probs: Optional[np.ndarray]          # [n, V] distribution each token was sampled from
    __repr__ = _short_repr


def _one_call(method):
    """A Workspace method that uses the C workspace: one at a time, else
    StateError (the library's workspaces are not shared; see the module
    docstring). close() takes the same guard, so a running call keeps the
    workspace alive."""
    @functools.wraps(method)
    def guarded(self, *args, **kw):
        if not self._busy.acquire(False):
            raise StateError("the workspace is in use by another call (one call at a time; give each thread "
                             "its own workspace, and do not use it from its own on_token callback)")
        try:
            return method(self, *args, **kw)
        finally:
            self._busy.release()
    return guarded


class Workspace:
    """Activations for up to max_B sequences of up to max_S tokens of one model."""

    def __init__(self, model, max_B=1, max_S=None):
        if not isinstance(model, Model):
            raise ArgError("model must be an ebt.Model, got %r" % (model,))
        mh = model._handle()
        max_S = model.max_seq_len if max_S is None else max_S
        max_B, max_S = A.integer(max_B, "max_B"), A.integer(max_S, "max_S")
        if max_B < 1 or not 1 <= max_S <= model.max_seq_len:
            raise ArgError("need max_B >= 1 and 1 <= max_S <= max_seq_len = %d, got max_B=%d max_S=%d"
                           % (model.max_seq_len, max_B, max_S))
        p = ctypes.c_void_p()
        st = LIB.ebt_workspace_create(mh.ptr, max_B, max_S, byref(p))
        if st:
            raise error(st, "ebt_workspace_create(max_B=%d, max_S=%d) failed" % (max_B, max_S))
        self._h = _Handle(p.value, LIB.ebt_workspace_free)
        self.model, self._mh = model, mh            # the C model outlives the workspace
        self._busy = threading.Lock()
        self.max_B, self.max_S = max_B, max_S
        self._obs = None                            # (B, S, batch axis?) of the current observation

    # ---- lifetime ------------------------------------------------------
    @_one_call
    def close(self):
        """Frees the workspace (later calls raise StateError); StateError
        while a call runs on it."""
        self._h = self._mh = None

    @property
    def closed(self):
        """True after close()."""
        return self._h is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<ebt.Workspace %s max_B=%d max_S=%d>" % ("closed" if self.closed else "open", self.max_B, self.max_S)

    @property
    def _ptr(self):
        if self._h is None:
            raise StateError("the workspace is closed")
        if self.model.closed:
            raise StateError("the workspace's model is closed")
        return self._h.ptr

    def _model_ptr(self, model):
        if model is not None and model is not self.model:
            raise StateError("this workspace was created for another model")
        self._ptr                                   # (checks that neither is closed)
        return self._mh.ptr

    def _check(self, st):
        if st:
            raise error(st, LIB.ebt_ws_last_error(self._h.ptr).decode(errors="replace"))

    @property
    @_one_call
    def last_error(self):
        """The message of the last failed call on this workspace ("" if none)."""
        return LIB.ebt_ws_last_error(self._ptr).decode(errors="replace")

    @property
    @_one_call
    def threads(self):
        """Threads of this workspace's kernels (ebt_workspace_threads); assign
        to set them (0 = OpenMP's default)."""
        return LIB.ebt_workspace_threads(self._ptr)

    @threads.setter
    @_one_call
    def threads(self, n):
        ws = self._ptr
        n = A.integer(n, "threads")
        if not 0 <= n <= 1024:       # (the library refuses these without a message)
            raise ArgError("threads must be in [0, 1024], got %d" % n)
        self._check(LIB.ebt_workspace_set_threads(ws, n))

    # ---- observation, energy, HVP ----------------------------------------
    def _tokens(self, tokens):
        t = A.tokens(tokens, self.model.vocab_size)
        B, S_ = _bs(t)
        if B > self.max_B or S_ > self.max_S:
            raise ArgError("tokens %s exceed the workspace's max_B=%d x max_S=%d" % (t.shape, self.max_B, self.max_S))
        return t, B, S_

    @_one_call
    def observe(self, tokens, step=0, model=None):
        """Computes the observed stream of tokens[B, S] at thinking step `step`
        once (ebt_observe); energy/hvp/think_observed then reuse it."""
        ws, mp = self._ptr, self._model_ptr(model)
        t, B, S_ = self._tokens(tokens)
        self._obs = None
        self._check(LIB.ebt_observe(ws, mp, A.ptr(t), B, S_, A.cint(step, "step")))
        self._obs = (B, S_, t.ndim == 2)

    @_one_call
    def observe_append(self, tokens):
        """Appends tokens[n] to the observation of a single sequence (the KV
        cache; ebt_observe_append)."""
        ws = self._ptr
        t = A.tokens(tokens, self.model.vocab_size, ndim=(1,))
        if self._obs is None:
            raise StateError("call observe() first")
        self._check(LIB.ebt_observe_append(ws, A.ptr(t), t.shape[0]))
        B, S_, batch = self._obs
        self._obs = (B, S_ + t.shape[0], batch)

    def _observed(self, what):
        if self._obs is None:
            raise StateError("%s needs an observation: call observe() (or think()) first" % what)
        B, S_, batch = self._obs
        return (B, S_) if batch else (S_,)

    @_one_call
    def energy(self, probs, grad=False):
        """E of probs [B, S, V] against the current observation (ebt_ws_energy);
        with grad=True returns (E, dE/dp)."""
        ws = self._ptr
        shape = self._observed("energy")
        p = A.reals(probs, shape + (self.model.vocab_size,), "probs")
        E = np.empty(shape, DTYPE)
        G = np.empty(p.shape, DTYPE) if grad else None
        self._check(LIB.ebt_ws_energy(ws, A.ptr(p), A.ptr(E), A.ptr(G)))
        return (E, G) if grad else E

    @_one_call
    def hvp(self, probs, v, energy=False, grad=False):
        """H_pp v against the current observation (ebt_ws_hvp); with energy /
        grad also returns E and dE/dp: (hv, E, g) with None for those not asked."""
        ws = self._ptr
        shape = self._observed("hvp")
        full = shape + (self.model.vocab_size,)
        p, v = A.reals(probs, full, "probs"), A.reals(v, full, "v")
        hv = np.empty(full, DTYPE)
        E = np.empty(shape, DTYPE) if energy else None
        G = np.empty(full, DTYPE) if grad else None
        self._check(LIB.ebt_ws_hvp(ws, A.ptr(p), A.ptr(v), A.ptr(hv), A.ptr(E), A.ptr(G)))
        return (hv, E, G) if (energy or grad) else hv

    # ---- thinking ------------------------------------------------------
    @_one_call
    def think(self, tokens, init_logits=None, outputs=None, out=None, model=None, opts=None, **kw):
        """Observes tokens[B, S] and thinks (ebt_think; docs/model.md section 5).

        Options: opts (dict or ebt_think_opts) and keywords: steps, step_size,
        alpha_rand, noise, init_scale, energy_threshold, tol, restarts,
        last_only, seed, rel_drop, grad_tol, row_budget, clamp, keep_best.
        init_logits: the caller's y_0, shape [restarts, B, P, V] (or
        [B, P, V] for one start). outputs: names of the arrays wanted
        (default all of RESULT_ARRAYS but "curvature", which costs one more
        H_pp v pass). out: a ThinkResult
        of an earlier call of the same shapes whose arrays are written again
        (no new memory; its None fields stay None) and returned. Returns a
        ThinkResult."""
        ws, mp = self._ptr, self._model_ptr(model)
        t, B, S_ = self._tokens(tokens)
        o = think_options(opts, **kw)
        res, keep = self._think_prep(o, B, S_, t.ndim == 2, init_logits, outputs, out)
        self._obs = None
        st = LIB.ebt_think(ws, mp, A.ptr(t), B, S_, byref(o), byref(res))
        self._obs = (B, S_, t.ndim == 2) if st == 0 else None
        self._check(st)
        return self._think_result(res, keep, out)

    @_one_call
    def think_observed(self, init_logits=None, outputs=None, out=None, opts=None, **kw):
        """Thinks about the current observation without recomputing it
        (ebt_think_observed); options and result as think()."""
        ws = self._ptr
        shape = self._observed("think_observed")
        B, S_ = (1,) + shape if len(shape) == 1 else shape
        o = think_options(opts, **kw)
        res, keep = self._think_prep(o, B, S_, len(shape) == 2, init_logits, outputs, out)
        self._check(LIB.ebt_think_observed(ws, byref(o), byref(res)))
        return self._think_result(res, keep, out)

    def _think_prep(self, o, B, S_, batch, init_logits, outputs, out):
        V = self.model.vocab_size
        P = 1 if o.last_only == 1 else S_
        rows = (B, P) if batch else (P,)
        K = o.steps
        outputs = DEFAULT_OUTPUTS if outputs is None else tuple(outputs)
        for name in outputs:
            if name not in RESULT_ARRAYS:
                raise ArgError("unknown output %r (known: %s)" % (name, ", ".join(RESULT_ARRAYS)))
        if K < 0 or o.restarts < 1:     # (upper bounds: the library's)
            raise ArgError("think steps must be >= 0 and restarts >= 1, got %d, %d" % (K, o.restarts))
        shapes = {"probs": rows + (V,), "logits": rows + (V,), "energy": rows + (K + 1,), "final_energy": rows,
                  "steps_taken": rows, "winner": rows, "curvature": rows}
        dtypes = {n: INT if n in ("steps_taken", "winner") else DTYPE for n in RESULT_ARRAYS}
        if out is None:
            keep = {n: np.empty(shapes[n], dtypes[n]) for n in outputs}
        elif not isinstance(out, ThinkResult):
            raise ArgTypeError("out must be a ThinkResult, got %r" % (out,))
        else:
            keep = {}
            for n in RESULT_ARRAYS:
                a = getattr(out, n)
                if a is not None:
                    if not isinstance(a, np.ndarray) or a.dtype != dtypes[n] or a.shape != shapes[n] or \
                            not a.flags.c_contiguous or not a.flags.writeable:
                        raise ArgError("out.%s must be a writable C-contiguous %s array of shape %s"
                                       % (n, np.dtype(dtypes[n]), shapes[n]))
                    keep[n] = a
        if init_logits is not None:
            if o.restarts == 1 and np.ndim(init_logits) == len(rows) + 1:
                init = A.reals(init_logits, rows + (V,), "init_logits")
            else:
                init = A.reals(init_logits, (o.restarts,) + rows + (V,), "init_logits")
            o.init_logits = A.ptr(init)
            keep["_init"] = init                       # alive during the call
        res = S.ThinkResult(**{n: A.ptr(a) for n, a in keep.items() if n in RESULT_ARRAYS})
        return res, keep

    @staticmethod
    def _think_result(res, keep, out=None):
        if out is not None:
            out.rows_evaluated, out.rows_budget, out.diverged = res.rows_evaluated, res.rows_budget, res.diverged
            return out
        return ThinkResult(**{n: keep.get(n) for n in RESULT_ARRAYS}, rows_evaluated=res.rows_evaluated,
                           rows_budget=res.rows_budget, diverged=res.diverged)

    # ---- generation ----------------------------------------------------
    @_one_call
    def generate(self, prompt, n_new, on_token=None, think=None, outputs=("energy", "probs"), model=None,
                 opts=None, **kw):
        """Continues prompt (1-D tokens) by n_new tokens (ebt_generate;
        docs/model.md section 5.5).

        Options: opts / keywords temperature, top_p, seed, no_cache; think: a
        dict of thinking options per token (see think()). on_token: a callable
        receiving a GenToken after each token; a true return value stops the
        generation; an exception raised in it stops it and is re-raised here.
        outputs: which of "energy", "probs" to return. Returns GenResult.
        The workspace's observation is consumed (observe again after)."""
        ws, mp = self._ptr, self._model_ptr(model)
        V = self.model.vocab_size
        t = A.tokens(prompt, V, "prompt", ndim=(1,))
        n_new = A.integer(n_new, "n_new", 0, 2**31 - 1 - t.shape[0])
        o = gen_options(opts, think, **kw)
        for name in outputs:
            if name not in ("energy", "probs"):
                raise ArgError("unknown output %r (known: energy, probs)" % (name,))
        out = np.zeros(n_new, np.int32)
        energy = np.empty(n_new, DTYPE) if "energy" in outputs else None
        probs = np.empty((n_new, V), DTYPE) if "probs" in outputs else None
        count, failure = [n_new], []
        if on_token is not None:
            if not callable(on_token):
                raise ArgError("on_token must be callable, got %r" % (on_token,))
            count[0] = 0

            def trampoline(user, ptr):
                try:
                    tk = _CGenToken.from_address(ptr)
                    count[0] = tk.index + 1
                    K = tk.steps
                    py = GenToken(tk.index, tk.token, np.ctypeslib.as_array(tk.probs, (V,)).copy(), float(tk.energy),
                                  np.ctypeslib.as_array(tk.energies, (K + 1,)).copy() if tk.energies else None,
                                  K, tk.steps_taken, tk.winner)
                    return 1 if on_token(py) else 0
                except BaseException as e:          # noqa: B902 -- re-raised after the C call
                    failure.append(e)
                    return 1
            o.on_token = S.GenCallback(trampoline)
        self._obs = None
        st = LIB.ebt_generate(ws, mp, A.ptr(t), t.shape[0], n_new, byref(o), A.ptr(out), A.ptr(energy), A.ptr(probs))
        if failure:
            raise failure[0]
        self._check(st)
        n = count[0]
        return GenResult(out[:n], None if energy is None else energy[:n], None if probs is None else probs[:n])
