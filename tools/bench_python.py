#!/usr/bin/python3
"""The cost of calling libebt from Python: one think call timed in one
process, on the same model, workspace and tokens (medians of --reps calls
each, the ways interleaved in rounds):

  C        a loop in C (a helper compiled here, linked to the same libebt.so)
           timing each ebt_think with clock_gettime: the library's own time
  ctypes   the bare ctypes call of ebt_think with prebuilt structs and
           preallocated outputs (no checks): C + the ctypes crossing
  wrapper  Workspace.think(tokens, steps=4): options built, arrays checked,
           the six result arrays allocated, a ThinkResult returned
  wrapper+ the same with prebuilt options and the arrays of the previous
           result reused (opts=ebt.think_options(...), out=result)

On a shared machine the timings of a large call vary by more than the
overhead, so the overhead is also measured without the computation: the
same two Python paths with ebt_think replaced by a C stand-in that only
writes the six outputs as the library would (memset):

  py overhead  wrapper(stand-in) - ctypes(stand-in): checks, options,
               allocating (and first touching) the result arrays, the
               ThinkResult; the ctypes crossing is in both
  (reused)     the same for wrapper+

Sizes: tiny (V=32 D=16 L=1 H=2 F=16, B=1 S=8) and config A (V=256 D=128 L=4
H=4 F=128, B=16 S=128), 4 thinking steps, OpenBLAS on one thread, the
workspace on --threads threads. Needs a C compiler and libebt.so ($EBT_LIB or
build/libebt.so.0).

    /usr/bin/python3 tools/bench_python.py [--reps 31] [--threads 2]
"""
import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import ebt                                    # noqa: E402
from ebt import _lib, _structs as S            # noqa: E402

HELPER = r"""
#include <string.h>
#include <time.h>
#include "ebt.h"
/* times[i] = seconds of the i-th of reps ebt_think calls; returns the last status */
int bench_think(ebt_workspace *ws, const ebt_model *m, const int32_t *tok, int B, int S,
                const ebt_think_opts *o, ebt_think_result *r, int reps, double *times)
{
    int st = 0;
    for (int i = 0; i < reps; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        st = ebt_think(ws, m, tok, B, S, o, r);
        clock_gettime(CLOCK_MONOTONIC, &b);
        times[i] = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    }
    return st;
}
/* writes the outputs of ebt_think as the library would, and nothing else */
int touch_think(ebt_workspace *ws, const ebt_model *m, const int32_t *tok, int B, int S,
                const ebt_think_opts *o, ebt_think_result *r)
{
    size_t NP = (size_t)B * (o->last_only ? 1 : S), V = (size_t)ebt_model_config(m)->vocab_size;
    (void)ws; (void)tok;
    if (r->probs) memset(r->probs, 0, NP * V * sizeof(ebt_real));
    if (r->logits) memset(r->logits, 0, NP * V * sizeof(ebt_real));
    if (r->energy) memset(r->energy, 0, NP * (size_t)(o->steps + 1) * sizeof(ebt_real));
    if (r->final_energy) memset(r->final_energy, 0, NP * sizeof(ebt_real));
    if (r->steps_taken) memset(r->steps_taken, 0, NP * sizeof(int));
    if (r->winner) memset(r->winner, 0, NP * sizeof(int));
    return 0;
}
"""

SIZES = {"tiny": (dict(vocab_size=32, d_model=16, n_layers=1, n_heads=2, d_ff=16, max_seq_len=8), 1, 8),
         "A": (dict(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=128, max_seq_len=128), 16, 128)}


def helper():
    d = tempfile.mkdtemp(prefix="ebt_bench_")
    src, so = os.path.join(d, "helper.c"), os.path.join(d, "helper.so")
    with open(src, "w") as fh:
        fh.write(HELPER)
    libdir = os.path.dirname(_lib.PATH)
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-I", os.path.join(HERE, ".."), src,
                    "-o", so, _lib.PATH], check=True)
    h = ctypes.CDLL(so)
    h.bench_think.restype = ctypes.c_int
    h.bench_think.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 2 + [ctypes.POINTER(S.ThinkOpts),
                                                                            ctypes.POINTER(S.ThinkResult),
                                                                            ctypes.c_int, ctypes.c_void_p]
    h.touch_think.restype, h.touch_think.argtypes = _lib.PROTOTYPES["ebt_think"]
    return h, libdir


def bench(name, reps, threads, h, rounds=5):
    cfg, B, S_ = SIZES[name]
    m = ebt.Model.create(cfg, seed=1)
    ws = m.workspace(B, S_)
    ws.threads = threads
    tok = (np.arange(B * S_, dtype=np.int32).reshape(B, S_) * 7) % cfg["vocab_size"]
    V, K = cfg["vocab_size"], 4
    opts = ebt.think_options(steps=K)
    outs = dict(probs=np.empty((B, S_, V), ebt.DTYPE), logits=np.empty((B, S_, V), ebt.DTYPE),
                energy=np.empty((B, S_, K + 1), ebt.DTYPE), final_energy=np.empty((B, S_), ebt.DTYPE),
                steps_taken=np.empty((B, S_), np.intc), winner=np.empty((B, S_), np.intc))
    res = S.ThinkResult(**{k: a.ctypes.data for k, a in outs.items()})
    wsp, mp, tp = ws._h.ptr, m._h.ptr, tok.ctypes.data
    think = _lib.LIB.ebt_think
    per = max(1, reps // rounds)
    times = {"C": [], "ctypes": [], "wrapper": [], "wrapper+": []}
    ctimes = np.empty(per)
    for _ in range(2):                                   # warm-up: scratch allocated, caches warm
        ws.think(tok, steps=K)
    for _ in range(rounds):
        assert h.bench_think(wsp, mp, tp, B, S_, ctypes.byref(opts), ctypes.byref(res), per, ctimes.ctypes.data) == 0
        times["C"] += list(ctimes)
        for _ in range(per):
            t0 = time.perf_counter()
            think(wsp, mp, tp, B, S_, ctypes.byref(opts), ctypes.byref(res))
            times["ctypes"].append(time.perf_counter() - t0)
        for _ in range(per):
            t0 = time.perf_counter()
            ws.think(tok, steps=K)
            times["wrapper"].append(time.perf_counter() - t0)
        prev = ws.think(tok, opts=opts)
        for _ in range(per):
            t0 = time.perf_counter()
            ws.think(tok, opts=opts, out=prev)
            times["wrapper+"].append(time.perf_counter() - t0)
    r = ws.think(tok, steps=K)
    assert np.array_equal(r.probs, outs["probs"]) and np.array_equal(r.energy, outs["energy"])
    # the Python paths around a stand-in that only writes the outputs
    real = _lib.LIB.ebt_think
    _lib.LIB.ebt_think = h.touch_think
    try:
        stand = {"ctypes": [], "wrapper": [], "wrapper+": []}
        for _ in range(rounds):
            for _ in range(4 * per):
                t0 = time.perf_counter()
                h.touch_think(wsp, mp, tp, B, S_, ctypes.byref(opts), ctypes.byref(res))
                stand["ctypes"].append(time.perf_counter() - t0)
            for _ in range(4 * per):
                t0 = time.perf_counter()
                ws.think(tok, steps=K)
                stand["wrapper"].append(time.perf_counter() - t0)
            prev = ws.think(tok, opts=opts)
            for _ in range(4 * per):
                t0 = time.perf_counter()
                ws.think(tok, opts=opts, out=prev)
                stand["wrapper+"].append(time.perf_counter() - t0)
    finally:
        _lib.LIB.ebt_think = real
    ws.close()
    m.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    med.update({"stand-in " + k: statistics.median(v) for k, v in stand.items()})
    return med, per * rounds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=31)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    ebt.set_blas_threads(1)
    h, _ = helper()
    print("libebt %s (%s), ebt_real %s, workspace threads %d, OpenBLAS 1 thread" %
          (ebt.LIB_VERSION, _lib.PATH, ebt.DTYPE, a.threads))
    print("medians in microseconds; py overhead = wrapper(stand-in) - ctypes(stand-in), and its share of C")
    print("%-5s %5s %11s %11s %11s %11s | %9s %9s %9s | %11s %11s" % (
        "size", "calls", "C", "ctypes", "wrapper", "wrapper+", "ctypes", "wrapper", "wrapper+", "py overhead",
        "(reused)"))
    for name in SIZES:
        t, n = bench(name, a.reps, a.threads, h)
        us = {k: 1e6 * v for k, v in t.items()}
        ov, ov2 = us["stand-in wrapper"] - us["stand-in ctypes"], us["stand-in wrapper+"] - us["stand-in ctypes"]
        print("%-5s %5d %11.1f %11.1f %11.1f %11.1f | %9.1f %9.1f %9.1f | %5.1f %4.1f%% %5.1f %4.1f%%" % (
            name, n, us["C"], us["ctypes"], us["wrapper"], us["wrapper+"], us["stand-in ctypes"],
            us["stand-in wrapper"], us["stand-in wrapper+"], ov, 100 * ov / us["C"], ov2, 100 * ov2 / us["C"]))


if __name__ == "__main__":
    main()
