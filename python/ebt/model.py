"""ebt.Model: a model of libebt (create, load, save, energy, derivatives,
parameters and gradients as numpy views, thinking and generation).

Lifetimes. The C model is freed when nothing in Python needs it any more:
not the Model object, nor a Workspace made for it, nor a numpy view of its
parameters or gradients (each view's ``base`` holds the model's memory).
``close()`` (or leaving a ``with`` block) ends the Model object's use: every
later call on it, or on its workspaces, raises StateError; views taken
before stay valid (the memory is freed when the last one goes).

Threads: calls on a Model (energy, hvp, *_backward, lm_*, training,
set_threads, save) use the model's own workspace or change the model: they
run one at a time (a lock; other threads wait). Workspaces (ebt.Workspace)
let many threads evaluate one model at once. Writes through parameter views
and training while other threads evaluate the model are the caller's to
avoid (ebt.h THREADS); they give wrong numbers, not crashes.
"""
import ctypes
import threading
from ctypes import byref, c_size_t

import numpy as np

from . import _arrays as A
from ._arrays import view
from . import _structs as S
from ._lib import DTYPE, LIB
from .errors import ArgError, ArgTypeError, StateError, error
from .checkpoint import tensor_specs
from .training import TrainingMixin, exclusive

ARCH_NAMES = {0: "ebt", 1: "transformer++"}
_NONE = object()            # "argument not passed" (None is a bad array)
ERRLEN = 512


class _Handle:
    """Owns one C object and frees it when the last Python reference goes."""
    __slots__ = ("ptr", "_free")

    def __init__(self, ptr, free):
        self.ptr, self._free = ptr, free

    def __del__(self):
        if self.ptr:
            self._free(self.ptr)
            self.ptr = None


def _bs(t):
    """(B, S) of a 1-D ([S], B = 1) or 2-D ([B, S]) token array."""
    if t.shape[0] > 2**31 - 1 or t.shape[-1] > 2**31 - 1:
        raise ArgError("tokens too large: %s" % (t.shape,))
    return (1, t.shape[0]) if t.ndim == 1 else t.shape


def config_struct(config=None, **fields):
    """An ebt_config from ebt_config_default(), a dict (or ebt_config) and
    keyword overrides; arch may be "ebt", "transformer++" (or "transformer")."""
    if isinstance(config, S.Config):
        c, config = S.Config.from_buffer_copy(config), None
    else:
        c = LIB.ebt_config_default()
    if config is not None and not isinstance(config, dict):
        raise ArgTypeError("config must be a dict of ebt_config fields or an ebt_config, got %r" % (config,))
    values = dict(config or {}, **fields)
    if "arch" in values:
        a = values["arch"]
        a = {"ebt": 0, "transformer++": 1, "transformer": 1}.get(a, a) if isinstance(a, str) else a
        if a not in (0, 1):
            raise ArgError("arch must be 'ebt' or 'transformer++', got %r" % (values["arch"],))
        values["arch"] = a
    return S.set_fields(c, values, "config field")


class Model(TrainingMixin):
    """A libebt model. Make one with Model.create(...) or Model.load(path)."""

    def __init__(self, ptr, _token=None):
        if _token is not _PRIVATE:
            raise TypeError("use ebt.Model.create(...) or ebt.Model.load(path)")
        self._h = _Handle(ptr, LIB.ebt_free)
        self._lock = threading.RLock()      # (see training.exclusive)
        cfg = LIB.ebt_model_config(ptr).contents
        self.vocab_size, self.max_seq_len, self.arch = cfg.vocab_size, cfg.max_seq_len, ARCH_NAMES[cfg.arch]

    # ---- lifetime ------------------------------------------------------
    @classmethod
    def create(cls, config=None, seed=0, **fields):
        """A new model from ebt_config_default() updated with config (a dict
        of ebt_config fields) and keyword fields, weights drawn from seed
        (docs/model.md section 2). Example: Model.create(d_model=64, n_layers=2)."""
        c = config_struct(config, **fields)
        seed = A.integer(seed, "seed", 0, 2**64 - 1)
        err = ctypes.create_string_buffer(ERRLEN)
        st = LIB.ebt_config_check(byref(c), err, ERRLEN)
        if st:
            raise error(st, err.value.decode(errors="replace"))
        p = ctypes.c_void_p()
        st = LIB.ebt_create(byref(c), seed, byref(p))
        if st:
            raise error(st, "ebt_create failed")
        return cls(p.value, _PRIVATE)

    @classmethod
    def load(cls, path):
        """Loads a checkpoint written by ebt_save (or ebt.torch / ebt.checkpoint)."""
        b = A.path(path)
        err = ctypes.create_string_buffer(ERRLEN)
        p = ctypes.c_void_p()
        st = LIB.ebt_load_ex(b, byref(p), err, ERRLEN)
        if st:
            raise error(st, err.value.decode(errors="replace"))
        return cls(p.value, _PRIVATE)

    @exclusive
    def save(self, path):
        """Saves atomically (ebt_save): weights, and the optimiser state and
        replay buffer when training made them."""
        b = A.path(path)
        err = ctypes.create_string_buffer(ERRLEN)
        st = LIB.ebt_save_ex(self._ptr, b, err, ERRLEN)
        if st:
            raise error(st, err.value.decode(errors="replace"))

    def close(self):
        """Ends the use of this object (see the module docstring); waits for
        a call running in another thread."""
        with self._lock:
            self._h = None

    @property
    def closed(self):
        """True after close()."""
        return self._h is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.closed:
            return "<ebt.Model closed>"
        c = self.config
        return "<ebt.Model %s V=%d D=%d L=%d H=%d F=%d max_seq_len=%d, %d parameters>" % (
            c["arch"], c["vocab_size"], c["d_model"], c["n_layers"], c["n_heads"], c["d_ff"],
            c["max_seq_len"], self.n_params)

    def _handle(self):
        """The live handle; a local reference to it keeps the C model alive."""
        h = self._h
        if h is None:
            raise StateError("the model is closed")
        return h

    @property
    def _ptr(self):
        """The C model (for calls made under the model's lock)."""
        return self._handle().ptr

    def _check(self, st):
        if st:
            raise error(st, LIB.ebt_last_error(self._h.ptr).decode(errors="replace"))

    # ---- description ---------------------------------------------------
    @property
    def config(self):
        """The configuration as a dict of ebt_config fields (arch as a name)."""
        h = self._handle()
        c = S.to_dict(LIB.ebt_model_config(h.ptr).contents)
        c["arch"] = ARCH_NAMES[c["arch"]]
        return c

    @property
    def n_params(self):
        """Number of parameters (ebt_n_params)."""
        return LIB.ebt_n_params(self._handle().ptr)

    @property
    def last_error(self):
        """The message of the last failed call on this model ("" if none)."""
        with self._lock:
            return LIB.ebt_last_error(self._ptr).decode(errors="replace")

    def tensor_names(self):
        """Tensor names in checkpoint order (ebt_tensor_name)."""
        h = self._handle()
        return [LIB.ebt_tensor_name(h.ptr, i).decode() for i in range(LIB.ebt_n_tensors(h.ptr))]

    @exclusive
    def set_threads(self, n):
        """Threads of the model's own workspace (ebt_set_threads; 0 = default)."""
        self._check(LIB.ebt_set_threads(self._ptr, A.cint(n, "n")))

    # ---- parameters and gradients as numpy views -----------------------
    def _tensor(self, fn, name):
        h = self._handle()
        if not isinstance(name, str):
            raise ArgTypeError("tensor name must be a str, got %r" % (name,))
        n = c_size_t()
        ptr = fn(h.ptr, name.encode(), byref(n))
        if not ptr:
            raise KeyError("no tensor %r in this model (see tensor_names())" % name)
        shape = dict(tensor_specs(self.config))[name]
        assert int(np.prod(shape)) == n.value, name
        return view(h, ptr, shape)

    def param(self, name):
        """A writable numpy view of parameter `name` (valid as long as it lives;
        writes change the model: not while other threads evaluate it)."""
        return self._tensor(LIB.ebt_param, name)

    def grad(self, name):
        """A numpy view of the gradient of `name` (accumulated by the
        *_backward and train_* calls until zero_grad)."""
        return self._tensor(LIB.ebt_grad, name)

    def params(self):
        """{name: view} of every parameter, in checkpoint order."""
        return {n: self.param(n) for n in self.tensor_names()}

    def grads(self):
        """{name: view} of every gradient, in checkpoint order."""
        return {n: self.grad(n) for n in self.tensor_names()}

    # ---- energy and derivatives (model's own workspace) ------------------
    def _seq(self, tokens, probs=_NONE, v=_NONE):
        """Checked tokens, probs, v (each required when passed) and (B, S)."""
        t = A.tokens(tokens, self.vocab_size)
        shape = t.shape + (self.vocab_size,)
        p = None if probs is _NONE else A.reals(probs, shape, "probs")
        v = None if v is _NONE else A.reals(v, shape, "v")
        return t, p, v, _bs(t)

    @exclusive
    def energy(self, tokens, probs, step=0, grad=False):
        """E[B, S] of candidates probs[B, S, V] after tokens[B, S] (ebt_energy);
        with grad=True returns (E, dE/dp). 1-D tokens [S] mean B = 1 and drop
        the batch axis of every array."""
        p0 = self._ptr
        t, p, _, (B, S_) = self._seq(tokens, probs)
        E = np.empty(t.shape, DTYPE)
        G = np.empty(p.shape, DTYPE) if grad else None
        self._check(LIB.ebt_energy(p0, A.ptr(t), A.ptr(p), B, S_, A.cint(step, "step"), A.ptr(E), A.ptr(G)))
        return (E, G) if grad else E

    @exclusive
    def hvp(self, tokens, probs, v, step=0):
        """H_pp v = (d^2 sum E / dp^2) v, shape of probs (ebt_hvp)."""
        p0 = self._ptr
        t, p, v, (B, S_) = self._seq(tokens, probs, v)
        hv = np.empty(p.shape, DTYPE)
        self._check(LIB.ebt_hvp(p0, A.ptr(t), A.ptr(p), B, S_, A.cint(step, "step"), A.ptr(v), A.ptr(hv)))
        return hv

    @exclusive
    def energy_backward(self, tokens, probs, step=0, weight=None):
        """Adds d(sum_i w_i E_i)/dtheta to the gradients (w = weight[B, S], or
        ones); returns E (ebt_energy_backward)."""
        p0 = self._ptr
        t, p, _, (B, S_) = self._seq(tokens, probs)
        w = None if weight is None else A.reals(weight, t.shape, "weight")
        E = np.empty(t.shape, DTYPE)
        self._check(LIB.ebt_energy_backward(p0, A.ptr(t), A.ptr(p), B, S_, A.cint(step, "step"),
                                            A.ptr(w), A.ptr(E)))
        return E

    @exclusive
    def mixed_backward(self, tokens, probs, v, step=0):
        """Adds grad_theta(v . dE/dp) to the gradients; returns (H_pp v, dE/dp)
        (ebt_mixed_backward)."""
        p0 = self._ptr
        t, p, v, (B, S_) = self._seq(tokens, probs, v)
        hv, g = np.empty(p.shape, DTYPE), np.empty(p.shape, DTYPE)
        self._check(LIB.ebt_mixed_backward(p0, A.ptr(t), A.ptr(p), B, S_, A.cint(step, "step"),
                                           A.ptr(v), A.ptr(hv), A.ptr(g)))
        return hv, g

    # ---- transformer++ --------------------------------------------------
    @exclusive
    def lm_logits(self, tokens):
        """logits[B, S, V] of the next tokens (arch transformer++; ebt_lm_logits)."""
        p0 = self._ptr
        t, _, _, (B, S_) = self._seq(tokens)
        out = np.empty(t.shape + (self.vocab_size,), DTYPE)
        self._check(LIB.ebt_lm_logits(p0, A.ptr(t), B, S_, A.ptr(out)))
        return out

    @exclusive
    def lm_backward(self, tokens, targets):
        """Mean cross-entropy against targets; adds its gradient (ebt_lm_backward)."""
        p0 = self._ptr
        t, _, _, (B, S_) = self._seq(tokens)
        g = A.tokens(targets, self.vocab_size, "targets")
        if g.shape != t.shape:
            raise ArgError("targets must have the shape of tokens %s, got %s" % (t.shape, g.shape))
        loss = np.empty(1, DTYPE)
        self._check(LIB.ebt_lm_backward(p0, A.ptr(t), A.ptr(g), B, S_, A.ptr(loss)))
        return float(loss[0])

    # ---- workspaces, thinking, generation ---------------------------------
    def workspace(self, max_B=1, max_S=None):
        """A new Workspace for up to max_B sequences of max_S tokens
        (default: the model's max_seq_len)."""
        from .workspace import Workspace
        return Workspace(self, max_B, max_S)

    def think(self, tokens, workspace=None, **kw):
        """Thinks about tokens[B, S] (ebt_think) in `workspace`, or in a new
        one sized for them; see Workspace.think for the options and result."""
        if workspace is not None:
            return workspace.think(tokens, model=self, **kw)
        t = A.tokens(tokens, self.vocab_size)
        B, S_ = _bs(t)
        with self.workspace(B, S_) as ws:
            return ws.think(t, **kw)

    def generate(self, prompt, n_new, workspace=None, **kw):
        """Continues prompt by n_new tokens (ebt_generate) in `workspace`, or in
        a new one of max_S = max_seq_len; see Workspace.generate."""
        if workspace is not None:
            return workspace.generate(prompt, n_new, model=self, **kw)
        with self.workspace(1, None) as ws:
            return ws.generate(prompt, n_new, **kw)


_PRIVATE = object()
