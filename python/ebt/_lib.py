"""Finding and loading libebt, and the ctypes prototypes of every function.

The library is searched for in this order (the first that loads and has
the expected major version wins):

1. ``$EBT_LIB``: a path to the shared library (or to a directory holding
   libebt.so.0); when set, nothing else is tried.
2. Next to this file: the copy ``pip install ./python`` bundles when the
   repository's build/ holds a built library.
3. The repository's build/ directory (running from a checkout:
   python/ebt/../../build/libebt.so.0).
4. ``ctypes.util.find_library("ebt")`` (ldconfig's cache, LD_LIBRARY_PATH),
   then the lib directories of the usual ``make install`` prefixes:
   sys.prefix, ~/.local, /usr/local, /usr.

ctypes.CDLL releases the GIL during every call, so Python threads with
their own workspaces run in parallel as ebt.h's THREADS section allows.
ebt_real (float, or double in a -DEBT_DOUBLE build) is detected at load
time: REAL is c_float or c_double, DTYPE the matching numpy dtype.
"""
import ctypes
import ctypes.util
import os
import sys
from ctypes import POINTER, c_char_p, c_double, c_float, c_int, c_long, c_size_t, c_uint64, c_void_p

import numpy as np

from . import _structs as S

MAJOR = 0                                   # the SONAME's major version this package speaks
SONAME = "libebt.so.%d" % MAJOR

P = c_void_p        # every ebt_model *, ebt_workspace *, ebt_real * and int32_t * argument
_int, _st = c_int, c_int

# name: (restype, argtypes), in the order of ebt.h
PROTOTYPES = {
    "ebt_version": (c_char_p, []),
    "ebt_status_str": (c_char_p, [c_int]),
    "ebt_config_default": (S.Config, []),
    "ebt_config_check": (_st, [POINTER(S.Config), c_char_p, c_size_t]),
    "ebt_create": (_st, [POINTER(S.Config), c_uint64, POINTER(P)]),
    "ebt_load": (_st, [c_char_p, POINTER(P)]),
    "ebt_load_ex": (_st, [c_char_p, POINTER(P), c_char_p, c_size_t]),
    "ebt_save": (_st, [P, c_char_p]),
    "ebt_save_ex": (_st, [P, c_char_p, c_char_p, c_size_t]),
    "ebt_free": (None, [P]),
    "ebt_model_config": (POINTER(S.Config), [P]),
    "ebt_last_error": (c_char_p, [P]),
    "ebt_param": (P, [P, c_char_p, POINTER(c_size_t)]),
    "ebt_grad": (P, [P, c_char_p, POINTER(c_size_t)]),
    "ebt_zero_grad": (None, [P]),
    "ebt_n_tensors": (c_int, [P]),
    "ebt_tensor_name": (c_char_p, [P, c_int]),
    "ebt_n_params": (c_size_t, [P]),
    "ebt_energy": (_st, [P, P, P, _int, _int, _int, P, P]),
    "ebt_hvp": (_st, [P, P, P, _int, _int, _int, P, P]),
    "ebt_energy_backward": (_st, [P, P, P, _int, _int, _int, P, P]),
    "ebt_mixed_backward": (_st, [P, P, P, _int, _int, _int, P, P, P]),
    "ebt_workspace_create": (_st, [P, _int, _int, POINTER(P)]),
    "ebt_workspace_free": (None, [P]),
    "ebt_observe": (_st, [P, P, P, _int, _int, _int]),
    "ebt_ws_energy": (_st, [P, P, P, P]),
    "ebt_ws_hvp": (_st, [P, P, P, P, P, P]),
    "ebt_ws_last_error": (c_char_p, [P]),
    "ebt_workspace_set_threads": (_st, [P, _int]),
    "ebt_workspace_threads": (c_int, [P]),
    "ebt_set_threads": (_st, [P, _int]),
    "ebt_lm_logits": (_st, [P, P, _int, _int, P]),
    "ebt_lm_backward": (_st, [P, P, P, _int, _int, P]),
    "ebt_think_default": (S.ThinkOpts, []),
    "ebt_think": (_st, [P, P, P, _int, _int, POINTER(S.ThinkOpts), POINTER(S.ThinkResult)]),
    "ebt_think_observed": (_st, [P, POINTER(S.ThinkOpts), POINTER(S.ThinkResult)]),
    "ebt_observe_append": (_st, [P, P, _int]),
    "ebt_gen_default": (S.GenOpts, []),
    "ebt_generate": (_st, [P, P, P, _int, _int, POINTER(S.GenOpts), P, P, P]),
    "ebt_train_default": (S.TrainOpts, []),
    "ebt_train_grad": (_st, [P, POINTER(S.TrainOpts), P, P, _int, _int, P, P, POINTER(S.TrainStats)]),
    "ebt_train_step": (_st, [P, POINTER(S.TrainOpts), P, P, _int, _int, P, POINTER(S.TrainStats)]),
    "ebt_train_accumulate": (_st, [P, POINTER(S.TrainOpts), P, P, _int, _int, c_long, c_double, P, P]),
    "ebt_train_buffer": (P, [P, POINTER(c_size_t)]),
    "ebt_train_apply": (_st, [P, POINTER(S.TrainOpts), POINTER(S.TrainStats)]),
    "ebt_train_steps_done": (c_long, [P]),
    "ebt_train_reset": (None, [P]),
}


def candidates():
    """The paths tried, in order (see the module docstring)."""
    env = os.environ.get("EBT_LIB")
    if env:
        return [os.path.join(env, SONAME) if os.path.isdir(env) else env]
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [os.path.join(here, SONAME), os.path.normpath(os.path.join(here, "..", "..", "build", SONAME))]
    found = ctypes.util.find_library("ebt")
    if found:
        paths.append(found)
    multiarch = getattr(sys.implementation, "_multiarch", "")
    for prefix in (sys.prefix, os.path.expanduser("~/.local"), "/usr/local", "/usr"):
        for sub in ("lib", os.path.join("lib", multiarch) if multiarch else None):
            if sub:
                paths.append(os.path.join(prefix, sub, SONAME))
    return paths


def _load():
    tried = []
    for path in candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append("%s (absent)" % path)
            continue
        try:
            lib = ctypes.CDLL(path)
            lib.ebt_version.restype = c_char_p
            version = lib.ebt_version().decode()
        except (OSError, AttributeError) as e:
            tried.append("%s (%s)" % (path, e))
            continue
        if version.split(".")[0] != str(MAJOR):
            tried.append("%s (version %s, need %d.x)" % (path, version, MAJOR))
            continue
        return lib, path, version
    raise ImportError("ebt: cannot load libebt (run `make` in the repository, or set EBT_LIB to the "
                      "library's path); tried:\n  " + "\n  ".join(tried))


def _declare(lib):
    for name, (restype, argtypes) in PROTOTYPES.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = restype, argtypes


def _detect_real(lib):
    """ebt_real is float or double: read the tensor `alpha` (5) of a tiny model."""
    cfg = S.Config(arch=0, vocab_size=1, d_model=2, n_layers=1, n_heads=1, d_ff=1, max_seq_len=1,
                   n_step_embed=0, tie_pred_embed=0, rope_theta=1e4, norm_eps=1e-5, alpha=5.0)
    m = P()
    if lib.ebt_create(ctypes.byref(cfg), 0, ctypes.byref(m)) != 0:
        raise ImportError("ebt: cannot create a tiny model to detect ebt_real")
    try:
        n = c_size_t()
        ptr = lib.ebt_param(m, b"alpha", ctypes.byref(n))
        if c_float.from_address(ptr).value == 5.0:
            return c_float
        if c_double.from_address(ptr).value == 5.0:
            return c_double
        raise ImportError("ebt: cannot tell whether ebt_real is float or double")
    finally:
        lib.ebt_free(m)


LIB, PATH, VERSION = _load()
_declare(LIB)
REAL = _detect_real(LIB)                          # ctypes type of ebt_real
DTYPE = np.dtype(np.float32 if REAL is c_float else np.float64)
GenToken = S.GEN_TOKEN[REAL]


def status_name(status):
    """The C name of a status code (ebt_status_str)."""
    s = LIB.ebt_status_str(status)
    return s.decode() if s else "status %d" % status


def set_blas_threads(n):
    """Sets OpenBLAS's thread count (openblas_set_num_threads), if libebt links
    OpenBLAS. One BLAS thread lets ebt split the products over its own
    threads (ebt.h THREADS, the fast setting); the library never changes it.
    Returns False when the symbol is not found."""
    try:
        f = LIB.openblas_set_num_threads
    except AttributeError:
        return False
    f.restype, f.argtypes = None, [c_int]
    f(int(n))
    return True
