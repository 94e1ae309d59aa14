"""Checkpoint files (docs/model.md sections 2 and 9) in plain Python + numpy:
the tensor list of a configuration, and a safetensors reader and writer
that agree with ebt_load / ebt_save. Needs neither libebt nor torch.

    ck = read("model.safetensors")      # any tensor order; optim.* accepted
    ck.config                           # ebt_config fields as a dict (alpha from the tensor)
    ck.tensors["layers.0.attn.wq.weight"]   # float32 numpy arrays, shapes of section 2
    ck.optim                            # None, or {"step", "m": {name: array}, "v": {...}}
    ck.replay                           # None, or {"capacity", "next", "tokens", "targets", "logits"}
    write("copy.safetensors", ck)       # what ebt_load accepts (atomic rename)
"""
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

REPLAY_NAMES = ("optim.replay.tokens", "optim.replay.targets", "optim.replay.logits")
INT_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len")
EBT_INT_KEYS = ("n_step_embed", "tie_pred_embed")


def tensor_specs(config):
    """[(name, shape)] of a configuration's tensors in checkpoint order
    (docs/model.md section 2). config: a dict with the ebt_config field names
    (arch "ebt" / "transformer++" or 0 / 1)."""
    c = config
    ebt = c["arch"] in ("ebt", 0)
    V, D, F = c["vocab_size"], c["d_model"], c["d_ff"]
    specs = [("tok_embed.weight", (V, D))]
    if ebt and not c.get("tie_pred_embed", 0):
        specs.append(("pred_embed.weight", (V, D)))
    if ebt and c.get("n_step_embed", 0) > 0:
        specs.append(("step_embed.weight", (c["n_step_embed"], D)))
    for l in range(c["n_layers"]):
        p = "layers.%d." % l
        specs.append((p + "attn_norm.weight", (D,)))
        specs += [(p + "attn.%s.weight" % w, (D, D)) for w in ("wq", "wk", "wv", "wo")]
        specs += [(p + "ffn_norm.weight", (D,)), (p + "ffn.w1.weight", (F, D)), (p + "ffn.w3.weight", (F, D)),
                  (p + "ffn.w2.weight", (D, F))]
    specs.append(("final_norm.weight", (D,)))
    if ebt:
        specs += [("energy_head.weight", (1, D)), ("alpha", (1,))]
    else:
        specs.append(("lm_head.weight", (V, D)))
    return specs


@dataclass
class Checkpoint:
    """The contents of a checkpoint file."""
    config: dict                                   # ebt_config fields; arch as "ebt" / "transformer++"
    tensors: dict                                  # name -> float32 array, in checkpoint order
    optim: Optional[dict] = None                   # {"step": int, "m": {name: arr}, "v": {name: arr}}
    replay: Optional[dict] = None                  # {"capacity", "next", "tokens" int32 [n,S],
    #                                                 "targets" int32 [n,S], "logits" float32 [n,S,V]}
    metadata: dict = field(default_factory=dict)   # the raw __metadata__ strings


class CheckpointError(ValueError):
    """A file that is not a checkpoint docs/model.md section 9 describes."""


def _int(meta, key):
    try:
        return int(meta[key], 10)
    except KeyError:
        raise CheckpointError("metadata %r missing" % key) from None
    except ValueError:
        raise CheckpointError("metadata %r = %r is not an integer" % (key, meta[key])) from None


def read(path):
    """Reads a checkpoint (any tensor order; optimiser state and replay
    buffer optional). Raises CheckpointError on anything unexpected."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 8:
        raise CheckpointError("%s: shorter than 8 bytes" % path)
    n = struct.unpack("<Q", raw[:8])[0]
    if n > len(raw) - 8:
        raise CheckpointError("%s: header length %d beyond the file" % (path, n))
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError("%s: bad JSON header: %s" % (path, e)) from None
    data = memoryview(raw)[8 + n:]
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != "ebt" or meta.get("version") != "1":
        raise CheckpointError("%s: metadata format/version is not ebt/1" % path)
    if meta.get("arch") not in ("ebt", "transformer++"):
        raise CheckpointError("%s: unknown arch %r" % (path, meta.get("arch")))
    cfg = {"arch": meta["arch"]}
    for k in INT_KEYS:
        cfg[k] = _int(meta, k)
    for k in EBT_INT_KEYS:
        cfg[k] = _int(meta, k) if meta["arch"] == "ebt" else 0
    for k in ("rope_theta", "norm_eps"):
        try:
            cfg[k] = float(meta[k])
        except (KeyError, ValueError):
            raise CheckpointError("metadata %r missing or not a number" % k) from None

    arrays = {}
    for name, e in header.items():
        if not isinstance(e, dict) or e.get("dtype") != "F32":
            raise CheckpointError("%s: tensor %r is not F32" % (path, name))
        shape, (a, b) = tuple(e["shape"]), e["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= a <= b <= len(data) or b - a != 4 * count:
            raise CheckpointError("%s: tensor %r has bad data_offsets %s" % (path, name, [a, b]))
        arrays[name] = np.frombuffer(data[a:b], dtype="<f4").astype(np.float32).reshape(shape)

    specs = tensor_specs(cfg)
    tensors = {}
    for name, shape in specs:
        if name not in arrays:
            raise CheckpointError("%s: tensor %r missing" % (path, name))
        if arrays[name].shape != shape:
            raise CheckpointError("%s: tensor %r has shape %s, expected %s" % (path, name, arrays[name].shape, shape))
        tensors[name] = arrays.pop(name)
    if cfg["arch"] == "ebt":
        cfg["alpha"] = float(tensors["alpha"][0])

    optim = None
    moments = {k: arrays.pop(k) for k in list(arrays) if k.startswith(("optim.m.", "optim.v."))}
    if moments:
        m = {name: moments.pop("optim.m." + name, None) for name, _ in specs}
        v = {name: moments.pop("optim.v." + name, None) for name, _ in specs}
        if moments or any(x is None for x in list(m.values()) + list(v.values())):
            raise CheckpointError("%s: optimiser moments incomplete or for unknown tensors" % path)
        for name, shape in specs:
            if m[name].shape != shape or v[name].shape != shape:
                raise CheckpointError("%s: moments of %r have the wrong shape" % (path, name))
        optim = {"step": _int(meta, "optim.step"), "m": m, "v": v}

    replay = None
    if any(k in arrays for k in REPLAY_NAMES):
        if not all(k in arrays for k in REPLAY_NAMES):
            raise CheckpointError("%s: replay buffer tensors incomplete" % path)
        tok, tgt, lg = (arrays.pop(k) for k in REPLAY_NAMES)
        replay = {"capacity": _int(meta, "optim.replay.capacity"), "next": _int(meta, "optim.replay.next"),
                  "tokens": tok.astype(np.int32), "targets": tgt.astype(np.int32), "logits": lg}
    if arrays:
        raise CheckpointError("%s: unexpected tensors %s" % (path, sorted(arrays)))
    return Checkpoint(cfg, tensors, optim, replay, dict(meta))


def fmt_real(x):
    """The shortest %g form, from 6 digits up, that reads back to the same
    double (as ebt_save)."""
    for prec in range(6, 18):
        s = "%.*g" % (prec, x)
        if float(s) == x:
            return s
    return repr(float(x))


def write(path, ck):
    """Writes a checkpoint as ebt_save does (metadata first, then the tensors
    of section 2, their moments, the replay tensors; header padded to 8
    bytes; written to a temporary file and renamed over path)."""
    cfg = ck.config
    arch = {0: "ebt", 1: "transformer++"}.get(cfg["arch"], cfg["arch"])
    meta = {"format": "ebt", "version": "1", "arch": arch}
    for k in INT_KEYS + (EBT_INT_KEYS if arch == "ebt" else ()):
        meta[k] = "%d" % int(cfg.get(k, 0))
    meta["rope_theta"], meta["norm_eps"] = fmt_real(cfg["rope_theta"]), fmt_real(cfg["norm_eps"])
    specs = tensor_specs(dict(cfg, arch=arch))
    out = []                                       # (name, float32 array)
    for name, shape in specs:
        if name not in ck.tensors:
            raise CheckpointError("tensor %r missing" % name)
        a = np.ascontiguousarray(ck.tensors[name], dtype="<f4")
        if a.shape != shape:
            raise CheckpointError("tensor %r has shape %s, expected %s" % (name, a.shape, shape))
        if not np.all(np.isfinite(a)):
            raise CheckpointError("tensor %r has NaN or Inf" % name)
        out.append((name, a))
    if ck.optim is not None:
        meta["optim.step"] = "%d" % int(ck.optim["step"])
        for name, _ in specs:
            out += [("optim.m." + name, np.ascontiguousarray(ck.optim["m"][name], dtype="<f4")),
                    ("optim.v." + name, np.ascontiguousarray(ck.optim["v"][name], dtype="<f4"))]
    if ck.replay is not None:
        r = ck.replay
        meta["optim.replay.capacity"], meta["optim.replay.next"] = "%d" % r["capacity"], "%d" % r["next"]
        out += [(k, np.ascontiguousarray(r[k.split(".")[-1]], dtype="<f4")) for k in REPLAY_NAMES]
    header, off = {"__metadata__": meta}, 0
    for name, a in out:
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    tmp = "%s.tmp.%d" % (os.fspath(path), os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(hj)))
        fh.write(hj)
        for _, a in out:
            fh.write(a.tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
