"""ctypes mirrors of the public enums and structs of ebt.h: the one place to
extend when ebt.h grows.

Each ``_fields_`` list must name the C fields in the order of ebt.h with the
same C types (int -> c_int, long -> c_long, uint64_t -> c_uint64, enums ->
c_int, ...). tests/test_structs.py compiles a C program that prints the
sizeof and offsetof of every struct and field of ebt.h, in the float and the
double build, and compares them with these mirrors; it also reads the field
names out of ebt.h, so a field added there and not here fails the test.

Pointers to ebt_real are declared c_void_p, so that the layouts do not depend
on ebt_real (float, or double with -DEBT_DOUBLE); the wrappers pass numpy
arrays by address. The only struct holding an ebt_real by value is
ebt_gen_token, hence ``gen_token_struct(real)``.
"""
from ctypes import (CFUNCTYPE, POINTER, Structure, c_double, c_float, c_int, c_int32, c_long,
                    c_longlong, c_uint64, c_void_p)

# ebt_status: EBT_OK = 0, then these in order (ebt.h)
STATUS_NAMES = ("EBT_OK", "EBT_ERR_ARG", "EBT_ERR_TOKEN", "EBT_ERR_NONFINITE", "EBT_ERR_NOMEM",
                "EBT_ERR_IO", "EBT_ERR_FORMAT", "EBT_ERR_UNSUPPORTED", "EBT_ERR_STATE")
ARCHS = {"ebt": 0, "transformer++": 1}                    # ebt_arch
MODES = {"detach": 0, "truncate": 1, "full": 2}           # ebt_mode
TRAIN_NSUMS = 6                                           # EBT_TRAIN_NSUMS


class Config(Structure):
    """ebt_config"""
    _fields_ = [("arch", c_int), ("vocab_size", c_int), ("d_model", c_int), ("n_layers", c_int),
                ("n_heads", c_int), ("d_ff", c_int), ("max_seq_len", c_int), ("n_step_embed", c_int),
                ("tie_pred_embed", c_int), ("rope_theta", c_double), ("norm_eps", c_double),
                ("alpha", c_double)]


class ThinkOpts(Structure):
    """ebt_think_opts (init_logits: const ebt_real *)"""
    _fields_ = [("steps", c_int), ("step_size", c_double), ("alpha_rand", c_double), ("noise", c_double),
                ("init_scale", c_double), ("energy_threshold", c_double), ("tol", c_double),
                ("restarts", c_int), ("last_only", c_int), ("seed", c_uint64), ("init_logits", c_void_p),
                ("rel_drop", c_double), ("grad_tol", c_double), ("row_budget", c_longlong), ("clamp", c_double),
                ("keep_best", c_int)]


class ThinkResult(Structure):
    """ebt_think_result (probs, logits, energy, final_energy, curvature: ebt_real *; steps_taken, winner: int *)"""
    _fields_ = [("probs", c_void_p), ("logits", c_void_p), ("energy", c_void_p), ("final_energy", c_void_p),
                ("steps_taken", c_void_p), ("winner", c_void_p), ("curvature", c_void_p), ("rows_evaluated", c_longlong),
                ("rows_budget", c_longlong), ("diverged", c_int)]


def gen_token_struct(real):
    """ebt_gen_token for ebt_real = real (c_float or c_double)."""
    class GenToken(Structure):
        """ebt_gen_token"""
        _fields_ = [("index", c_int), ("token", c_int32), ("probs", POINTER(real)), ("energy", real),
                    ("energies", POINTER(real)), ("steps", c_int), ("steps_taken", c_int), ("winner", c_int)]
    GenToken.__name__ = GenToken.__qualname__ = "GenToken_" + real.__name__
    return GenToken


GEN_TOKEN = {c_float: gen_token_struct(c_float), c_double: gen_token_struct(c_double)}

# ebt_gen_callback: int (*)(void *user, const ebt_gen_token *tok)
GenCallback = CFUNCTYPE(c_int, c_void_p, c_void_p)


class GenOpts(Structure):
    """ebt_gen_opts"""
    _fields_ = [("think", ThinkOpts), ("temperature", c_double), ("top_p", c_double), ("seed", c_uint64),
                ("no_cache", c_int), ("on_token", GenCallback), ("user", c_void_p)]


class TrainOpts(Structure):
    """ebt_train_opts (mode: ebt_mode)"""
    _fields_ = [("mode", c_int), ("k_min", c_int), ("k_max", c_int), ("alpha_rand", c_double),
                ("noise", c_double), ("init_scale", c_double), ("replay_capacity", c_int),
                ("replay_frac", c_double), ("learn_alpha", c_int), ("alpha_lr_mult", c_double),
                ("lr", c_double), ("min_lr", c_double), ("warmup_steps", c_long), ("total_steps", c_long),
                ("progress", c_double), ("weight_decay", c_double), ("beta1", c_double), ("beta2", c_double),
                ("eps", c_double), ("grad_clip", c_double), ("seed", c_uint64)]


class TrainStats(Structure):
    """ebt_train_stats"""
    _fields_ = [("loss", c_double), ("ce_first", c_double), ("ce_last", c_double), ("energy_first", c_double),
                ("energy_last", c_double), ("grad_norm", c_double), ("lr", c_double), ("alpha", c_double),
                ("k", c_int), ("step", c_long)]


def structs(real):
    """C struct name -> mirror, for ebt_real = real (what the layout test checks)."""
    return {"ebt_config": Config, "ebt_think_opts": ThinkOpts, "ebt_think_result": ThinkResult,
            "ebt_gen_token": GEN_TOKEN[real], "ebt_gen_opts": GenOpts, "ebt_train_opts": TrainOpts,
            "ebt_train_stats": TrainStats}


def options(s, opts, kw, what, skip=()):
    """Sets the struct s from opts (None, a dict, or a struct of s's type,
    copied) and the keyword dict kw; see set_fields. Returns the struct."""
    from .errors import ArgTypeError
    if isinstance(opts, type(s)):
        s = type(s).from_buffer_copy(opts)
        opts = None
    elif opts is not None and not isinstance(opts, dict):
        raise ArgTypeError("%ss must be a dict or %s, got %r" % (what, type(s).__name__, opts))
    return set_fields(s, dict(opts or {}, **kw), what, skip)


def set_fields(s, values, what, skip=()):
    """Sets fields of the struct s from the dict values, refusing unknown
    names (and those in skip: pointers the wrappers set themselves) and
    values their C type cannot hold. Raises ArgTypeError / ArgError."""
    from .errors import ArgError, ArgTypeError
    import numbers
    types = dict(s._fields_)
    for k, v in values.items():
        if k not in types or k in skip:
            known = ", ".join(n for n, _ in s._fields_ if n not in skip)
            raise ArgTypeError("unknown %s %r (known: %s)" % (what, k, known))
        t = types[k]
        if issubclass(t, c_double):
            if not isinstance(v, numbers.Real):
                raise ArgTypeError("%s %s must be a number, got %r" % (what, k, v))
            setattr(s, k, float(v))
        elif issubclass(t, (c_int, c_long, c_longlong, c_uint64)):
            if not isinstance(v, numbers.Integral):
                raise ArgTypeError("%s %s must be an integer, got %r" % (what, k, v))
            setattr(s, k, int(v))
            if getattr(s, k) != int(v):
                raise ArgError("%s %s = %d does not fit its C type %s" % (what, k, v, t.__name__))
        else:
            raise ArgTypeError("%s %s cannot be set here" % (what, k))
    return s


def to_dict(s):
    """The fields of a struct as a dict (nested structs and pointers as they are)."""
    return {k: getattr(s, k) for k, _ in s._fields_}
