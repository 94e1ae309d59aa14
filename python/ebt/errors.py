"""Exceptions: one class per ebt_status, all derived from EbtError.

Every failed library call raises the class of its status with the library's
message (ebt_last_error, ebt_ws_last_error, or the err buffer of the *_ex
calls). Arguments the library cannot check itself (array dtypes, shapes,
contiguity, closed objects) are checked in Python first and raise the same
classes: a wrong dtype is an ArgError (and a TypeError), a token outside
[0, V) a TokenError, a closed model or workspace a StateError.
"""


class EbtError(Exception):
    """Base class. ``status`` is the ebt_status code, ``name`` its C name,
    ``message`` the library's (or the Python check's) explanation."""
    status = -1
    name = "EBT_ERR"

    def __init__(self, message="", status=None):
        if status is not None:
            self.status = status
        self.message = message
        super().__init__("%s: %s" % (self.name, message) if message else self.name)


class ArgError(EbtError, ValueError):
    """EBT_ERR_ARG: NULL pointer, size out of range, bad option, wrong shape."""
    status, name = 1, "EBT_ERR_ARG"


class ArgTypeError(ArgError, TypeError):
    """EBT_ERR_ARG raised in Python for an argument of the wrong type or dtype."""


class TokenError(EbtError, ValueError):
    """EBT_ERR_TOKEN: token id outside [0, V)."""
    status, name = 2, "EBT_ERR_TOKEN"


class NonFiniteError(EbtError, ValueError):
    """EBT_ERR_NONFINITE: NaN or Inf in an input (or a result)."""
    status, name = 3, "EBT_ERR_NONFINITE"


class NoMemError(EbtError, MemoryError):
    """EBT_ERR_NOMEM: allocation failed."""
    status, name = 4, "EBT_ERR_NOMEM"


class IoError(EbtError, OSError):
    """EBT_ERR_IO: open, read, write, flush or rename failed."""
    status, name = 5, "EBT_ERR_IO"


class FormatError(EbtError, ValueError):
    """EBT_ERR_FORMAT: checkpoint malformed or inconsistent."""
    status, name = 6, "EBT_ERR_FORMAT"


class UnsupportedError(EbtError):
    """EBT_ERR_UNSUPPORTED: call not valid for this model's arch."""
    status, name = 7, "EBT_ERR_UNSUPPORTED"


class StateError(EbtError, RuntimeError):
    """EBT_ERR_STATE: workspace not prepared or prepared for another model;
    also raised in Python for a closed model or workspace."""
    status, name = 8, "EBT_ERR_STATE"


BY_STATUS = {c.status: c for c in (ArgError, TokenError, NonFiniteError, NoMemError, IoError, FormatError,
                                   UnsupportedError, StateError)}


# ebt_status_str(): the message when a call fails without one of its own
DESCRIPTIONS = {1: "invalid argument", 2: "token id out of range", 3: "non-finite value", 4: "out of memory",
                5: "i/o error", 6: "malformed checkpoint", 7: "unsupported for this model", 8: "workspace not prepared"}


def error(status, message):
    """The exception for a non-zero ebt_status (message: the library's, or
    the status's description when the library gave none)."""
    cls = BY_STATUS.get(status)
    if cls is None:
        return EbtError("%s (unknown status %d)" % (message, status), status)
    return cls(message or DESCRIPTIONS[status])
