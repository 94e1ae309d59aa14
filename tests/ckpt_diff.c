/* ckpt_diff.c - compares the parameters of two checkpoints tensor by
 * tensor (tests/mpi_test.sh).
 *
 *   ckpt_diff A B [TOL]   prints the largest absolute difference, the
 *                         largest relative one (per tensor: max |a - b| /
 *                         max |a|) with its tensor, and whether every bit is
 *                         the same; exit 1 if the relative difference is
 *                         above TOL (default 0: identical bits required),
 *                         or the models differ in shape or step count
 *   ckpt_diff --step A    prints the optimiser steps A has taken
 *
 * Exit 2 on bad usage or a file that does not load. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ebt.h"

static ebt_model *load(const char *path)
{
    ebt_model *m = NULL;
    char err[256] = "";
    if (ebt_load_ex(path, &m, err, sizeof err) != EBT_OK) {
        fprintf(stderr, "ckpt_diff: cannot load %s: %s\n", path, err);
        return NULL;
    }
    return m;
}

/* the relative difference of tensor t of a and b; *abs_max, *same updated */
static double tensor_diff(ebt_model *a, ebt_model *b, const char *name, double *abs_max, int *same)
{
    size_t na, nb;
    const ebt_real *x = ebt_param(a, name, &na), *y = ebt_param(b, name, &nb);
    double d = 0, s = 0;
    if (!y || na != nb) return INFINITY;
    for (size_t i = 0; i < na; i++) {
        double e = fabs((double)x[i] - (double)y[i]);
        d = e > d || isnan(e) ? e : d;
        s = fabs((double)x[i]) > s ? fabs((double)x[i]) : s;
    }
    if (memcmp(x, y, na * sizeof *x)) *same = 0;
    *abs_max = d > *abs_max || isnan(d) ? d : *abs_max;
    return s > 0 ? d / s : d;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--step")) {
        ebt_model *m = load(argv[2]);
        if (!m) return 2;
        printf("%ld\n", ebt_train_steps_done(m));
        ebt_free(m);
        return 0;
    }
    if (argc != 3 && argc != 4) { fputs("usage: ckpt_diff A B [TOL] | ckpt_diff --step A\n", stderr); return 2; }
    double tol = argc == 4 ? atof(argv[3]) : 0, abs_max = 0, rel_max = 0;
    const char *worst = "-";
    int same = 1, rc;
    ebt_model *a = load(argv[1]), *b = a ? load(argv[2]) : NULL;
    if (!a || !b) { ebt_free(a); return 2; }
    int shape = ebt_n_tensors(a) == ebt_n_tensors(b) && ebt_n_params(a) == ebt_n_params(b);
    int steps = ebt_train_steps_done(a) == ebt_train_steps_done(b);
    for (int t = 0; shape && t < ebt_n_tensors(a); t++) {
        const char *name = ebt_tensor_name(a, t);
        double r = tensor_diff(a, b, name, &abs_max, &same);
        if (r > rel_max || isnan(r)) { rel_max = r; worst = name; }
    }
    rc = !shape || !steps || !(rel_max <= tol);
    printf("max abs %.3g  max rel %.3g (%s)  bits %s  steps %ld %ld%s\n", abs_max, rel_max, worst,
           shape && same ? "identical" : "differ", ebt_train_steps_done(a), ebt_train_steps_done(b),
           shape ? "" : "  SHAPES DIFFER");
    ebt_free(a);
    ebt_free(b);
    return rc;
}
