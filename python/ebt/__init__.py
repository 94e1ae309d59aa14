"""ebt: Python bindings of libebt (Energy-Based Transformers in C) over ctypes.

    import numpy as np, ebt
    m = ebt.Model.create(seed=42)                 # or ebt.Model.load("model.safetensors")
    r = m.think(np.frombuffer(b"Hello", np.uint8), steps=4, restarts=2)
    r.final_energy, r.probs.argmax(-1)            # per-position energies, guesses

Modules: model (Model: create/load/save, energy and derivatives, parameter
and gradient views), workspace (Workspace: observe, energy, HVP, think,
generate), training (the train_* methods), errors (one exception class per
ebt_status), checkpoint (the file format in numpy, no library needed),
torch (a PyTorch nn.Module of the same model; needs torch).

The library is loaded on first use of anything but `checkpoint`, `errors`
and `torch` (see ebt._lib for where it is searched: EBT_LIB first).
"""
__version__ = "0.2.0"       # the libebt release these bindings follow (ebt.h EBT_VERSION)

from .errors import (ArgError, ArgTypeError, EbtError, FormatError, IoError, NoMemError,  # noqa: F401
                     NonFiniteError, StateError, TokenError, UnsupportedError)

_LAZY = {
    "Model": ".model", "config_struct": ".model",
    "Workspace": ".workspace", "ThinkResult": ".workspace", "GenToken": ".workspace", "GenResult": ".workspace",
    "think_options": ".workspace", "gen_options": ".workspace",
    "TrainStats": ".training", "train_options": ".training",
    "DTYPE": "._lib", "REAL": "._lib", "LIB_PATH": "._lib", "LIB_VERSION": "._lib", "set_blas_threads": "._lib",
}
_RENAMED = {"LIB_PATH": "PATH", "LIB_VERSION": "VERSION"}


def __getattr__(name):
    """Loads libebt on first use of a name that needs it (PEP 562)."""
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name], __name__), _RENAMED.get(name, name))
        globals()[name] = value
        return value
    raise AttributeError("module 'ebt' has no attribute %r" % name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["Model", "Workspace", "ThinkResult", "GenToken", "GenResult", "TrainStats", "think_options",
           "gen_options", "train_options", "config_struct", "DTYPE", "REAL", "LIB_PATH", "LIB_VERSION",
           "set_blas_threads", "EbtError", "ArgError", "ArgTypeError", "TokenError", "NonFiniteError",
           "NoMemError", "IoError", "FormatError", "UnsupportedError", "StateError"]
