/* Shared helpers of the cmocka tests. */
#ifndef EBT_TEST_UTIL_H
#define EBT_TEST_UTIL_H
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <setjmp.h>
#include <cmocka.h>

/* Relative error of got against ref: max|got - ref| / max|ref| (the scale
 * of the whole tensor, so tiny entries do not dominate). Prints the worst
 * entry and returns 1 if the error is <= tol. */
static inline int check_close(const char *what, const ebt_real *got, const double *ref, size_t n, double tol)
{
    double maxerr = 0, scale = 0;
    size_t worst = 0, firstbad = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (!(e <= maxerr)) { maxerr = e; worst = i; }   /* NaN counts as worst */
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    }
    if (scale == 0) scale = 1;
    for (size_t i = 0; i < n && firstbad == (size_t)-1; i++)
        if (!(fabs((double)got[i] - ref[i]) <= tol * scale)) firstbad = i;
    double rel = maxerr / scale;
    int ok = rel <= tol;
    printf("  %-36s n=%-6zu rel err %.3e (tol %.0e)%s", what, n, rel, tol, ok ? "\n" : "");
    if (!ok)
        printf("  FAIL: worst [%zu] got %.9g ref %.9g; first mismatch [%zu] got %.9g ref %.9g\n", worst,
               (double)got[worst], ref[worst], firstbad, (double)got[firstbad], ref[firstbad]);
    return ok;
}

/* Per-entry check: fails when any entry has |got - ref| > rtol |ref| + atol.
 * Unlike check_close, a wrong small entry cannot hide behind a large one.
 * Prints the share of the bound the worst entry uses ("bound use", fails
 * above 1) and max|got - ref|/max|ref|; on failure, the first mismatch and
 * the worst entry. NaN fails. */
static inline int check_entries_atol(const char *what, const ebt_real *got, const double *ref, size_t n,
                                     double rtol, double atol)
{
    double scale = 0, use = 0, maxerr = 0;
    size_t worst = 0, firstbad = (size_t)-1;
    for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]), bound = rtol * fabs(ref[i]) + atol;
        double u = bound > 0 ? e / bound : (e > 0 ? INFINITY : 0);
        if (!(e <= maxerr)) maxerr = e;
        if (!(u <= use)) { use = u; worst = i; }                    /* NaN counts as worst */
        if (!(e <= bound) && firstbad == (size_t)-1) firstbad = i;
    }
    int ok = firstbad == (size_t)-1;
    printf("  %-40s n=%-6zu bound use %8.2e (rtol %.0e atol %.1e)  max err/max|ref| %.2e\n", what, n, use, rtol,
           atol, scale > 0 ? maxerr / scale : maxerr);
    if (!ok)
        printf("  FAIL %s: first mismatch [%zu] got %.17g ref %.17g; worst [%zu] got %.17g ref %.17g\n", what,
               firstbad, (double)got[firstbad], ref[firstbad], worst, (double)got[worst], ref[worst]);
    return ok;
}
/* the same with atol = afloor * max|ref|: a floor set per quantity, so that
 * entries much smaller than the tensor's largest are held to the floor and
 * the others to rtol */
static inline int check_entries(const char *what, const ebt_real *got, const double *ref, size_t n, double rtol,
                                double afloor)
{
    double scale = 0;
    for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    return check_entries_atol(what, got, ref, n, rtol, afloor * scale);
}

/* splitmix-based deterministic test randomness */
static uint64_t test_rng_state = 12345;
static inline double test_unif(void)
{
    uint64_t z = (test_rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}
static inline double test_normal(void)
{
    double u = test_unif(), v = test_unif();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}
/* rows of softmax(scale * N(0,1)) */
static inline void test_random_probs(ebt_real *p, int rows, int V, double scale)
{
    for (int r = 0; r < rows; r++) {
        double mx = -1e300, sum = 0, y[4096];
        for (int j = 0; j < V; j++) { y[j] = scale * test_normal(); if (y[j] > mx) mx = y[j]; }
        for (int j = 0; j < V; j++) { y[j] = exp(y[j] - mx); sum += y[j]; }
        for (int j = 0; j < V; j++) p[(size_t)r * V + j] = (ebt_real)(y[j] / sum);
    }
}

/* FNV-1a over n bytes, continuing from h (start with TEST_FNV0) */
#define TEST_FNV0 0xcbf29ce484222325ULL
static inline uint64_t test_fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}
/* the parameters of a model, through the public API */
static inline uint64_t test_hash_params(ebt_model *m)
{
    uint64_t h = TEST_FNV0;
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        size_t n;
        const ebt_real *p = ebt_param(m, ebt_tensor_name(m, t), &n);
        h = test_fnv(h, p, n * sizeof(ebt_real));
    }
    return h;
}
/* the bytes of a file (malloc'd, *n of them), or NULL if it cannot be opened */
static inline unsigned char *test_slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long sz;
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END); sz = ftell(f); fseek(f, 0, SEEK_SET);
    b = (unsigned char *)malloc((size_t)sz + 1);
    *n = b ? fread(b, 1, (size_t)sz, f) : 0;
    fclose(f);
    return b;
}
/* FNV-1a of a file's bytes; 0 if it cannot be read */
static inline uint64_t test_hash_file(const char *path)
{
    size_t n;
    unsigned char *b = test_slurp(path, &n);
    uint64_t h = b ? test_fnv(TEST_FNV0, b, n) : 0;
    free(b);
    return h;
}
/* entries of a directory other than "." and "..", or -1 */
static inline int test_count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d))) if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}
#endif
