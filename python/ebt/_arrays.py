"""Checks of the arrays passed to the library, made in Python before any C
call: the library sees only pointers and cannot tell a short array, a wrong
dtype or a strided view from a good one.

Rules: real arrays (probabilities, directions, logits, weights) must be
numpy arrays of the library's ebt_real dtype (float32 unless built with
-DEBT_DOUBLE) or Python sequences (converted); token arrays may have any
integer dtype (converted to int32 after a range check). Numpy arrays must be
C-contiguous and aligned (no silent copy of a strided view). Shapes must
match exactly. NaN/Inf are left to the library (EBT_ERR_NONFINITE).
"""
import os

import numpy as np

from ._lib import DTYPE
from .errors import ArgError, ArgTypeError, TokenError

INT32 = np.dtype(np.int32)


def _layout(a, name):
    if not a.flags.c_contiguous:
        raise ArgError("%s is not C-contiguous (strides %s); pass np.ascontiguousarray(%s)"
                       % (name, a.strides, name))
    if not a.flags.aligned:
        raise ArgError("%s is not aligned" % name)


def tokens(x, V, name="tokens", ndim=(1, 2)):
    """An int32 C-contiguous array of token ids in [0, V) with ndim in `ndim`."""
    if x is None:
        raise ArgError("%s is None" % name)
    if isinstance(x, (bytes, bytearray)):
        x = np.frombuffer(x, dtype=np.uint8)
    if isinstance(x, np.ndarray):
        _layout(x, name)
        a = x
    else:
        try:
            a = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise ArgTypeError("%s: %s" % (name, e)) from None
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ArgTypeError("%s must be integers, got dtype %s" % (name, a.dtype))
    if a.ndim not in ndim:
        raise ArgError("%s must have %s dimension(s), got shape %s" % (name, " or ".join(map(str, ndim)), a.shape))
    if a.size == 0:
        raise ArgError("%s is empty (shape %s)" % (name, a.shape))
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= V:
        bad = np.flatnonzero((a < 0) | (a >= V))[0]
        raise TokenError("%s[%s] = %d is outside [0, %d)" % (name, ", ".join(map(str, np.unravel_index(bad, a.shape))),
                                                            int(a.flat[bad]), V))
    if a.dtype != INT32:
        a = a.astype(INT32)
    return a


def reals(x, shape, name):
    """A C-contiguous array of ebt_real with exactly this shape."""
    if x is None:
        raise ArgError("%s is None" % name)
    if isinstance(x, np.ndarray):
        if x.dtype != DTYPE:
            raise ArgTypeError("%s must have dtype %s (the library's ebt_real), got %s; convert with "
                               "%s.astype(np.%s)" % (name, DTYPE, x.dtype, name, DTYPE))
        _layout(x, name)
        a = x
    else:
        try:
            a = np.asarray(x, dtype=DTYPE)
        except (TypeError, ValueError) as e:
            raise ArgTypeError("%s: %s" % (name, e)) from None
    if a.shape != tuple(shape):
        raise ArgError("%s must have shape %s, got %s" % (name, tuple(shape), a.shape))
    return a


def ptr(a):
    """The address of an array's data (None for None: a NULL pointer)."""
    return None if a is None else a.ctypes.data


def integer(x, name, lo=None, hi=None):
    """A Python int in [lo, hi] (bools and floats refused)."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise ArgTypeError("%s must be an integer, got %r" % (name, x))
    x = int(x)
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise ArgError("%s = %d is outside [%s, %s]" % (name, x, lo, hi))
    return x


def cint(x, name):
    """A Python int that fits a C int (ctypes would silently wrap it)."""
    return integer(x, name, -2**31, 2**31 - 1)


def path(p, name="path"):
    """A filesystem path as bytes for the C calls."""
    if p is None:
        raise ArgError("%s is None" % name)
    try:
        b = os.fsencode(p)
    except TypeError:
        raise ArgTypeError("%s must be a str, bytes or os.PathLike, got %r" % (name, p)) from None
    if b"\0" in b:
        raise ArgError("%s contains a NUL byte" % name)
    return b


class _View:
    """The base of a numpy view into library memory; keeps `owner` alive."""

    def __init__(self, owner, ptr, shape, dtype, readonly=False):
        self.owner = owner
        self.__array_interface__ = {"data": (ptr, readonly), "shape": tuple(shape),
                                    "typestr": np.dtype(dtype).str, "version": 3}


def view(owner, ptr, shape, dtype=DTYPE):
    """A numpy array over library memory at ptr whose base keeps owner alive."""
    return np.asarray(_View(owner, ptr, shape, dtype))
