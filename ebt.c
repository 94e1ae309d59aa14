/* ebt.c - Energy-Based Transformers in C. See ebt.h for the API and docs,
   docs/model.md for the model it computes.

   Dimension legend (used in every shape comment):
     B  batch                      S  predicted positions per sequence
     So observed rows per sequence (S, or S+1 with a step token)
     N  rows of a stream (B*S predicted, B*So observed)
     V  vocabulary   D  width   H  heads   Dh = D/H   F  SwiGLU width
     L  layers       K  thinking steps
   Notation: dX is the cotangent (gradient) of X, tX its tangent along the
   direction v of the Hessian-vector product, tdX the tangent of dX.

   Layout of this file (search for the banners):
     UTILITIES, GEMM, RNG, TENSOR TABLE, MODEL, OP: EMBEDDING, OP: RMSNORM,
     OP: ROPE, OP: LINEAR, OP: ATTENTION, OP: SWIGLU, OP: ENERGY HEAD,
     WORKSPACE, BLOCK HALVES, OBSERVED STREAM, PREDICTED STREAM,
     PUBLIC ENERGY API, THINKING, TRANSFORMER++, GENERATION, TRAINING,
     SAFETENSORS, CHECKPOINT
*/
#if !defined(_POSIX_C_SOURCE) && !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif
#include "ebt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The matrix-product backend, chosen at build time (make GEMM=onednn|cblas):
 *   -DEBT_GEMM_ONEDNN  oneDNN's dnnl_sgemm for float32 (it generates its
 *                      kernels for the CPU it runs on); the double build
 *                      (-DEBT_DOUBLE) still uses CBLAS's dgemm
 *   (default)          CBLAS: OpenBLAS or any CBLAS
 *   -DEBT_NO_BLAS      the naive loops of ebt__gemm (no library) */
#if defined(EBT_GEMM_ONEDNN) && !defined(EBT_DOUBLE) && !defined(EBT_NO_BLAS)
#define EBT__ONEDNN 1
#include <oneapi/dnnl/dnnl.h>
#elif !defined(EBT_NO_BLAS)
#define EBT__CBLAS 1
#include <cblas.h>
#endif

/* Threads: with -fopenmp the row-wise kernels and the per-head attention
 * blocks are split over the workspace's thread count (ebt_workspace_set_threads);
 * every split keeps each output's arithmetic in one thread and in the serial
 * order, so results are bit-identical for any thread count. Matrix products
 * use OpenBLAS's own threads. Without OpenMP everything runs on the caller. */
#ifdef _OPENMP
#include <omp.h>
#define EBT__PRAGMA(x) _Pragma(#x)
/* EBT__FOR_ROWS(nt, work, init, cond, step, { body }): the loop
 * for (init; cond; step) body, split over nt threads when nt > 1 and the
 * work is big enough (rows in chunks of 32; EBT__FOR_BLOCKS: one block at a
 * time), else a plain loop that never enters the OpenMP runtime (whose
 * entry costs about 0.4 us, which adds up over the many small calls of
 * generation). Dynamic schedules: a thread the OS delays does not hold the
 * others back for its share. */
#define EBT__PAR(nt, work) ((nt) > 1 && (work) >= 8192)
#define EBT__FOR_ROWS(nt, work, init, cond, step, ...) do {                              \
        if (EBT__PAR(nt, work)) {                                                         \
            EBT__PRAGMA(omp parallel for num_threads(nt) schedule(dynamic, 32))           \
            for (init; cond; step) __VA_ARGS__                                            \
        } else for (init; cond; step) __VA_ARGS__                                         \
    } while (0)
#define EBT__FOR_BLOCKS(nt, work, init, cond, step, ...) do {                            \
        if (EBT__PAR(nt, work)) {                                                         \
            EBT__PRAGMA(omp parallel for num_threads(nt) schedule(dynamic, 1))            \
            for (init; cond; step) __VA_ARGS__                                            \
        } else for (init; cond; step) __VA_ARGS__                                         \
    } while (0)
/* the same with an OR-reduction into the int flag var (order-independent) */
#define EBT__PARFOR_OR(nt, work, var) EBT__PRAGMA(omp parallel for num_threads((nt) > 1 ? (nt) : 1) schedule(dynamic, 1) if(EBT__PAR(nt, work)) reduction(|:var))
static int ebt__tid(void) { return omp_get_thread_num(); }
static int ebt__default_threads(void) { int n = omp_get_max_threads(); return n < 1 ? 1 : n > 64 ? 64 : n; }
#else
#define EBT__FOR_ROWS(nt, work, init, cond, step, ...) do { (void)(nt); for (init; cond; step) __VA_ARGS__ } while (0)
#define EBT__FOR_BLOCKS(nt, work, init, cond, step, ...) do { (void)(nt); for (init; cond; step) __VA_ARGS__ } while (0)
#define EBT__PARFOR_OR(nt, work, var) (void)(nt);
static int ebt__tid(void) { return 0; }
static int ebt__default_threads(void) { return 1; }
#endif

#if defined(EBT_MALLOC) + defined(EBT_REALLOC) + defined(EBT_FREE) != 0 && \
    defined(EBT_MALLOC) + defined(EBT_REALLOC) + defined(EBT_FREE) != 3
#error "define all of EBT_MALLOC, EBT_REALLOC and EBT_FREE, or none"
#endif
#ifndef EBT_MALLOC
#define EBT_MALLOC(sz) malloc(sz)
#define EBT_REALLOC(p, sz) realloc(p, sz)
#define EBT_FREE(p) free(p)
#endif

/* ======================================================================
 * UTILITIES
 * ====================================================================== */

#define EBT__ERRLEN 256
#define EBT__MAX_V (1 << 24)
#define EBT__MAX_D (1 << 16)
#define EBT__MAX_F (1 << 20)
#define EBT__MAX_L 1024
#define EBT__MAX_SEQ (1 << 20)
#define EBT__MAX_STEP_EMBED (1 << 16)
#define EBT__MAX_PARAMS ((size_t)1 << 34)

static void ebt__seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0) return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* a*b, or sets *ovf and returns 0 on size_t overflow */
static size_t ebt__mul(size_t a, size_t b, int *ovf)
{
    if (a != 0 && b > SIZE_MAX / a) { *ovf = 1; return 0; }
    return a * b;
}

/* The scratch buffer *buf grown to at least bytes (its contents are not
 * kept): the one way the library keeps scratch between calls. NULL (and
 * *buf unchanged) when out of memory. */
static void *ebt__grow(void **buf, size_t *cap, size_t bytes)
{
    if (bytes > *cap || !*buf) {
        void *p = EBT_MALLOC(bytes ? bytes : 1);
        if (!p) return NULL;
        EBT_FREE(*buf);
        *buf = p;
        *cap = bytes;
    }
    return *buf;
}

/* ======================================================================
 * SIMD: element-wise kernels written so that the compiler vectorises them
 * (EBT__SIMD: one clone per x86 vector width, picked at load time) and
 * gives the same bits at every width: no fused multiply-adds
 * (-ffp-contract=off), and every reduction in EBT__LANES fixed lanes
 * (lane l takes elements l, l + LANES, ...) combined in a fixed order.
 * ====================================================================== */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__linux__) && !defined(EBT_NO_CLONES) && \
    !defined(__clang__) && __GNUC__ >= 8
#define EBT__SIMD __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EBT__SIMD
#endif
#define EBT__LANES 16

/* sum_j a_j b_j */
static inline ebt_real ebt__dot(const ebt_real *a, const ebt_real *b, int n)
{
    ebt_real acc[EBT__LANES] = { 0 }, s = 0;
    int j = 0;
    for (; j + EBT__LANES <= n; j += EBT__LANES)
        for (int l = 0; l < EBT__LANES; l++) acc[l] += a[j + l] * b[j + l];
    for (int l = 0; j + l < n; l++) acc[l] += a[j + l] * b[j + l];
    for (int l = 0; l < EBT__LANES; l++) s += acc[l];
    return s;
}
/* sum_j a_j b_j in double */
static inline double ebt__dot_d(const ebt_real *a, const ebt_real *b, int n)
{
    double acc[EBT__LANES] = { 0 }, s = 0;
    int j = 0;
    for (; j + EBT__LANES <= n; j += EBT__LANES)
        for (int l = 0; l < EBT__LANES; l++) acc[l] += (double)a[j + l] * b[j + l];
    for (int l = 0; j + l < n; l++) acc[l] += (double)a[j + l] * b[j + l];
    for (int l = 0; l < EBT__LANES; l++) s += acc[l];
    return s;
}
/* sum_j a_j b_j c_j */
static inline ebt_real ebt__dot3(const ebt_real *a, const ebt_real *b, const ebt_real *c, int n)
{
    ebt_real acc[EBT__LANES] = { 0 }, s = 0;
    int j = 0;
    for (; j + EBT__LANES <= n; j += EBT__LANES)
        for (int l = 0; l < EBT__LANES; l++) acc[l] += a[j + l] * b[j + l] * c[j + l];
    for (int l = 0; j + l < n; l++) acc[l] += a[j + l] * b[j + l] * c[j + l];
    for (int l = 0; l < EBT__LANES; l++) s += acc[l];
    return s;
}
/* max_j a_j (n >= 1; NaN entries are skipped unless all are NaN) */
static inline ebt_real ebt__max(const ebt_real *a, int n)
{
    ebt_real acc[EBT__LANES], m;
    int j = 0;
    for (int l = 0; l < EBT__LANES; l++) acc[l] = a[0];
    for (; j + EBT__LANES <= n; j += EBT__LANES)
        for (int l = 0; l < EBT__LANES; l++) acc[l] = a[j + l] > acc[l] ? a[j + l] : acc[l];
    for (int l = 0; j + l < n; l++) acc[l] = a[j + l] > acc[l] ? a[j + l] : acc[l];
    m = acc[0];
    for (int l = 1; l < EBT__LANES; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}
static inline void ebt__axpy(ebt_real *y, ebt_real a, const ebt_real *x, int n)
{
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

#ifdef EBT_DOUBLE
static inline double ebt__exp(double x) { return exp(x); }
#else
/* exp(x) for float x without calls or branches (vectorisable): x = n ln2 + r,
 * |r| <= ln2/2, exp(r) by the minimax polynomial of Cephes' expf, 2^n by
 * the exponent bits. Relative error <= 2 float ulps (2.4e-7) against the
 * correctly rounded exp on [-87.3, 88.3] (tests/test_kernels.c measures
 * it); exactly 0 below -87.33 (no denormals), exp(88.376) = 2.4e38 above
 * 88.376 (callers pass max-subtracted arguments <= 0, or -z in a sigmoid). */
static inline float ebt__exp(float x)
{
    /* clamp so that n is in [-126, 127]; a NaN goes to the top (converting
     * a NaN to an integer is undefined behaviour) and comes back below */
    float xc = x < 88.3762626f ? x : 88.3762626f;
    xc = xc > -87.33654f ? xc : -87.33654f;
    float n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;   /* round(x / ln2) */
    float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;      /* x - n ln2, in two parts */
    float p = 1.9875691500e-4f, sc;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    memcpy(&sc, &bits, sizeof sc);
    return x != x ? x : x < -87.33654f ? 0.0f : p * sc;
}
#endif

/* 1 / (1 + exp(-z)) */
static inline ebt_real ebt__sigmoid(ebt_real z) { return 1 / (1 + ebt__exp(-z)); }

/* 1 if every x[i] is finite (x - x is 0 for them, NaN for Inf and NaN) */
EBT__SIMD static int ebt__all_finite(const ebt_real *x, size_t n)
{
    ebt_real acc[EBT__LANES] = { 0 };
    size_t i = 0;
    for (; i + EBT__LANES <= n; i += EBT__LANES)
        for (int l = 0; l < EBT__LANES; l++) acc[l] += x[i + l] - x[i + l];
    for (int l = 0; i + (size_t)l < n; l++) acc[l] += x[i + l] - x[i + l];
    for (int l = 0; l < EBT__LANES; l++)
        if (acc[l] != 0) return 0;
    return 1;
}

/* (value, index) pairs sorted by value, largest first (ties: index order) */
typedef struct { ebt_real w; int i; } ebt__pair;
static int ebt__pair_desc(const void *a, const void *b)
{
    ebt_real x = ((const ebt__pair *)a)->w, y = ((const ebt__pair *)b)->w;
    if (x != y) return x < y ? 1 : -1;
    return ((const ebt__pair *)a)->i - ((const ebt__pair *)b)->i;
}

const char *ebt_version(void) { return EBT_VERSION; }
size_t ebt_real_size(void) { return sizeof(ebt_real); }

const char *ebt_status_str(ebt_status s)
{
    switch (s) {
    case EBT_OK: return "ok";
    case EBT_ERR_ARG: return "invalid argument";
    case EBT_ERR_TOKEN: return "token id out of range";
    case EBT_ERR_NONFINITE: return "non-finite value";
    case EBT_ERR_NOMEM: return "out of memory";
    case EBT_ERR_IO: return "i/o error";
    case EBT_ERR_FORMAT: return "malformed checkpoint";
    case EBT_ERR_UNSUPPORTED: return "unsupported for this model";
    case EBT_ERR_STATE: return "workspace not prepared";
    }
    return "unknown status";
}

/* ======================================================================
 * GEMM: the one wrapper every matrix product goes through.
 * C(M,N) = alpha * op(A)(M,K) @ op(B)(K,N) + beta * C, row-major;
 * ta/tb = 1 means the stored matrix is transposed.
 * ====================================================================== */

#ifdef EBT__ONEDNN
/* dnnl_sgemm on the calling thread only: outside an OpenMP parallel region
 * oneDNN would spread the product over every core, so the calling thread's
 * thread count is set to 1 for the call and restored (inside ebt's own
 * parallel loops oneDNN runs single-threaded by itself) */
static void ebt__dnnl(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
#ifdef _OPENMP
    int top = !omp_in_parallel(), saved = top ? omp_get_max_threads() : 1;
    if (saved != 1) omp_set_num_threads(1);
#endif
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#ifdef _OPENMP
    if (saved != 1) omp_set_num_threads(saved);
#endif
}
#endif

static void ebt__gemm(int ta, int tb, int M, int N, int K, ebt_real alpha,
                      const ebt_real *A, int lda, const ebt_real *B, int ldb,
                      ebt_real beta, ebt_real *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K > 0) {
#if defined(EBT__ONEDNN)
        ebt__dnnl(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
#elif defined(EBT__CBLAS) && defined(EBT_DOUBLE)
        cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
#elif defined(EBT__CBLAS)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
#endif
    }
    /* naive reference (also the K == 0 case) */
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            ebt_real acc = 0;
            for (int k = 0; k < K; k++) {
                ebt_real a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                ebt_real b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += a * b;
            }
            ebt_real *c = &C[(size_t)i * ldc + j];
            *c = alpha * acc + (beta == 0 ? 0 : beta * *c);
        }
}

/* The thread count of a call's kernels: the workspace's count, unless
 * OpenBLAS threads the products itself (then 0: OpenBLAS runs the products
 * whole and every other kernel stays on the caller's thread, so that two
 * pools of spinning threads never compete for the cores). With oneDNN,
 * ebt always splits the products itself. */
static int ebt__nt(int threads)
{
#if defined(EBT__CBLAS) && defined(OPENBLAS_VERSION) && defined(_OPENMP)
    if (openblas_get_num_threads() > 1) return 0;
#endif
    return threads;
}

const char *ebt_gemm_backend(void)
{
#if defined(EBT__ONEDNN)
    return "onednn";
#elif defined(EBT__CBLAS)
    return "cblas";
#else
    return "naive";
#endif
}

void ebt_gemm_info(char *buf, size_t n)
{
    if (!buf || n == 0) return;
#if defined(EBT__ONEDNN)
    {
        const dnnl_version_t *v = dnnl_version();
        int isa = (int)dnnl_get_effective_cpu_isa();
        const char *name = isa == dnnl_cpu_isa_avx512_core_amx ? "avx512_core_amx" : isa == dnnl_cpu_isa_avx512_core_bf16 ? "avx512_core_bf16" :
                           isa == dnnl_cpu_isa_avx512_core_vnni ? "avx512_core_vnni" : isa == dnnl_cpu_isa_avx512_core ? "avx512_core" :
                           isa == dnnl_cpu_isa_avx2_vnni ? "avx2_vnni" : isa == dnnl_cpu_isa_avx2 ? "avx2" :
                           isa == dnnl_cpu_isa_avx ? "avx" : "sse41 or other";
        snprintf(buf, n, "oneDNN %d.%d.%d dnnl_sgemm, ISA %s", v->major, v->minor, v->patch, name);
    }
#elif defined(EBT__CBLAS) && defined(OPENBLAS_VERSION)
    snprintf(buf, n, "CBLAS: OpenBLAS%s(core %s, %d threads)", OPENBLAS_VERSION, openblas_get_corename(), openblas_get_num_threads());
#elif defined(EBT__CBLAS)
    snprintf(buf, n, "CBLAS");
#else
    snprintf(buf, n, "naive loops (EBT_NO_BLAS)");
#endif
}

/* A large product (nt >= 1) split by rows of C into blocks of
 * EBT__GEMM_ROWS (or, with one row block, by columns into blocks of
 * EBT__GEMM_COLS) spread over nt threads; the blocks do not depend on nt,
 * so neither do the results. nt == 0: one call, threaded by the BLAS. */
#define EBT__GEMM_ROWS 128
#define EBT__GEMM_COLS 64
static void ebt__gemm_par(int nt, int ta, int tb, int M, int N, int K, ebt_real alpha,
                          const ebt_real *A, int lda, const ebt_real *B, int ldb,
                          ebt_real beta, ebt_real *C, int ldc)
{
    int nb = (M + EBT__GEMM_ROWS - 1) / EBT__GEMM_ROWS, nc = (N + EBT__GEMM_COLS - 1) / EBT__GEMM_COLS;
    if (nb <= 1 && (size_t)M * N * K < ((size_t)1 << 20)) nc = 1;   /* small: one call */
    if (nt == 0 || (nb <= 1 && nc <= 1)) { ebt__gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); return; }
    if (nb <= 1) {   /* few rows (a weight gradient D x D): split the columns instead */
        EBT__FOR_BLOCKS(nt, (size_t)M * N * K, int bj = 0, bj < nc, bj++, {
            int j0 = bj * EBT__GEMM_COLS, n = N - j0 < EBT__GEMM_COLS ? N - j0 : EBT__GEMM_COLS;
            ebt__gemm(ta, tb, M, n, K, alpha, A, lda, tb ? B + (size_t)j0 * ldb : B + j0, ldb, beta, C + j0, ldc);
        });
        return;
    }
    EBT__FOR_BLOCKS(nt, (size_t)M * N * K, int bi = 0, bi < nb, bi++, {
        int i0 = bi * EBT__GEMM_ROWS, m = M - i0 < EBT__GEMM_ROWS ? M - i0 : EBT__GEMM_ROWS;
        ebt__gemm(ta, tb, m, N, K, alpha, ta ? A + i0 : A + (size_t)i0 * lda, lda, B, ldb, beta,
                  C + (size_t)i0 * ldc, ldc);
    });
}

/* ======================================================================
 * RNG: xoshiro256** seeded by splitmix64; normals by Box-Muller.
 * ====================================================================== */

typedef struct { uint64_t s[4]; int has_spare; double spare; } ebt__rng;

static uint64_t ebt__splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void ebt__rng_seed(ebt__rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = ebt__splitmix(&seed);
    r->has_spare = 0;
    r->spare = 0;
}

static uint64_t ebt__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t ebt__rng_u64(ebt__rng *r)
{
    uint64_t *s = r->s, res = ebt__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = ebt__rotl(s[3], 45);
    return res;
}

/* uniform in (0, 1) */
static double ebt__rng_unif(ebt__rng *r) { return ((double)(ebt__rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static double ebt__rng_normal(ebt__rng *r)
{
    if (r->has_spare) { r->has_spare = 0; return r->spare; }
    double u = ebt__rng_unif(r), v = ebt__rng_unif(r);
    double rad = sqrt(-2.0 * log(u)), th = 6.283185307179586476925 * v;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

/* ======================================================================
 * TENSOR TABLE: checkpoint names, shapes and offsets into one flat array.
 * Memory order is table order; wq,wk,wv are adjacent (one [3D,D] matrix)
 * and so are w1,w3 (one [2F,D] matrix), which fuses their GEMMs.
 * ====================================================================== */

#define EBT__NAME_MAX 64
typedef struct {
    char name[EBT__NAME_MAX];
    int ndim;
    int shape[2];
    size_t off, count;
    int decay;      /* AdamW weight decay applies (not on gains or alpha) */
    double init_std; /* <0: constant init_val */
    double init_val;
} ebt__tensor;

typedef struct {
    ebt_real *attn_norm; /* (D) */
    ebt_real *wqkv;      /* (3D,D) = wq; wk; wv */
    ebt_real *wo;        /* (D,D) */
    ebt_real *ffn_norm;  /* (D) */
    ebt_real *w13;       /* (2F,D) = w1; w3 */
    ebt_real *w2;        /* (D,F) */
} ebt__layer_w;

typedef struct {
    ebt_real *tok;        /* (V,D) */
    ebt_real *pred;       /* (V,D) (= tok when tied) */
    ebt_real *step;       /* (n_step_embed,D) or NULL */
    ebt_real *final_norm; /* (D) */
    ebt_real *ehead;      /* (D) ebt only */
    ebt_real *alpha;      /* (1) ebt only */
    ebt_real *lm_head;    /* (V,D) transformer++ only */
    ebt__layer_w *layer;  /* [L] */
} ebt__weights;

/* AdamW state: moments (NULL before the first step) and steps taken */
typedef struct { ebt_real *m, *v; long step; } ebt__optim;

/* Sequences with their final logits: the replay ring (rows allocated as it
 * fills, doubling up to cap; next = the row the next push writes) or the
 * pending sequences of the current step (cap = rows allocated, next unused) */
typedef struct {
    int cap, count, next, S, rows;
    int32_t *tok, *tgt;   /* (rows, S) each, one allocation (tok) */
    ebt_real *y;          /* (rows, S, V) */
} ebt__replay;

/* a key/value pair of the caller's metadata (saved as "user.<key>") */
#define EBT__META_MAX 64
#define EBT__META_KEY 64
#define EBT__META_VAL 90
typedef struct { char key[EBT__META_KEY], val[EBT__META_VAL]; } ebt__meta;

/* the sums that ebt_train_accumulate adds after the gradients (one buffer
 * for an allreduce): weight, then weight times loss, ce_first, ce_last,
 * energy_first, energy_last */
#define EBT__NSUMS EBT_TRAIN_NSUMS

struct ebt_model {
    ebt_config cfg;
    int nt;
    ebt__tensor *t;       /* [nt] */
    size_t n_params;
    ebt_real *params, *grads;
    ebt__weights w, g;    /* pointers into params and grads */
    ebt_real *rope_cos, *rope_sin; /* (max_seq_len+2, Dh/2) */
    ebt_workspace *ws;    /* the model's own workspace, grown on demand */
    int threads;          /* its thread count (0: default) */
    ebt__optim opt;       /* AdamW state (saved with the model) */
    ebt__replay rb;       /* the replay ring of past sequences (saved) */
    ebt__replay pend;     /* sequences accumulated since the last optimiser step: the
                             ring takes them when the step is applied */
    int train_K;          /* thinking steps of the current optimiser step (0: none drawn) */
    ebt__meta *meta;      /* [EBT__META_MAX] the caller's metadata (ebt_meta_set), or NULL */
    int nmeta;
    void *tbuf;           /* training scratch (ebt__grow) */
    size_t tbuf_bytes;
    char err[EBT__ERRLEN];
};

static int ebt__add_tensor(ebt__tensor *t, int *nt, size_t *off, const char *name, int r, int c,
                           int decay, double std, double val, int *ovf)
{
    ebt__tensor *x = &t[(*nt)++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->ndim = c > 0 ? 2 : 1;
    x->shape[0] = r;
    x->shape[1] = c > 0 ? c : 0;
    x->count = ebt__mul((size_t)r, (size_t)(c > 0 ? c : 1), ovf);
    x->off = *off;
    x->decay = decay;
    x->init_std = std;
    x->init_val = val;
    *off += x->count;
    return *nt - 1;
}

static int ebt__max_tensors(const ebt_config *c) { return 8 + 9 * c->n_layers; }

/* Fills t (capacity ebt__max_tensors) with the tensors of config c. */
static int ebt__build_table(const ebt_config *c, ebt__tensor *t, size_t *total)
{
    int nt = 0, ovf = 0, V = c->vocab_size, D = c->d_model, F = c->d_ff;
    size_t off = 0;
    char nm[EBT__NAME_MAX];
    int ebt = c->arch == EBT_ARCH_EBT;
    ebt__add_tensor(t, &nt, &off, "tok_embed.weight", V, D, 1, 1.0, 0, &ovf);
    if (ebt && !c->tie_pred_embed)
        ebt__add_tensor(t, &nt, &off, "pred_embed.weight", V, D, 1, sqrt(2.0 / (V + D)), 0, &ovf);
    if (ebt && c->n_step_embed > 0)
        ebt__add_tensor(t, &nt, &off, "step_embed.weight", c->n_step_embed, D, 1, 1.0, 0, &ovf);
    for (int l = 0; l < c->n_layers; l++) {
        static const char *sub[] = { "attn.wq", "attn.wk", "attn.wv", "attn.wo" };
        snprintf(nm, sizeof nm, "layers.%d.attn_norm.weight", l);
        ebt__add_tensor(t, &nt, &off, nm, D, 0, 0, -1, 1.0, &ovf);
        for (int i = 0; i < 4; i++) {
            snprintf(nm, sizeof nm, "layers.%d.%s.weight", l, sub[i]);
            ebt__add_tensor(t, &nt, &off, nm, D, D, 1, sqrt(2.0 / (D + D)), 0, &ovf);
        }
        snprintf(nm, sizeof nm, "layers.%d.ffn_norm.weight", l);
        ebt__add_tensor(t, &nt, &off, nm, D, 0, 0, -1, 1.0, &ovf);
        snprintf(nm, sizeof nm, "layers.%d.ffn.w1.weight", l);
        ebt__add_tensor(t, &nt, &off, nm, F, D, 1, sqrt(2.0 / (D + F)), 0, &ovf);
        snprintf(nm, sizeof nm, "layers.%d.ffn.w3.weight", l);
        ebt__add_tensor(t, &nt, &off, nm, F, D, 1, sqrt(2.0 / (D + F)), 0, &ovf);
        snprintf(nm, sizeof nm, "layers.%d.ffn.w2.weight", l);
        ebt__add_tensor(t, &nt, &off, nm, D, F, 1, sqrt(2.0 / (D + F)), 0, &ovf);
    }
    ebt__add_tensor(t, &nt, &off, "final_norm.weight", D, 0, 0, -1, 1.0, &ovf);
    if (ebt) {
        ebt__add_tensor(t, &nt, &off, "energy_head.weight", 1, D, 1, sqrt(2.0 / (D + 1)), 0, &ovf);
        ebt__add_tensor(t, &nt, &off, "alpha", 1, 0, 0, -1, c->alpha, &ovf);
    } else {
        ebt__add_tensor(t, &nt, &off, "lm_head.weight", V, D, 1, sqrt(2.0 / (V + D)), 0, &ovf);
    }
    *total = off;
    return ovf ? -1 : nt;
}

static const ebt__tensor *ebt__find_tensor(const ebt_model *m, const char *name)
{
    if (!m || !name) return NULL;
    for (int i = 0; i < m->nt; i++)
        if (strcmp(m->t[i].name, name) == 0) return &m->t[i];
    return NULL;
}

/* Sets the pointer struct w over base (params or grads). */
static void ebt__point(const ebt_model *m, ebt_real *base, ebt__weights *w)
{
    const ebt_config *c = &m->cfg;
    char nm[EBT__NAME_MAX];
#define EBT__P(name) (base + ebt__find_tensor(m, name)->off)
    w->tok = EBT__P("tok_embed.weight");
    w->pred = w->tok;
    w->step = NULL;
    w->ehead = w->alpha = w->lm_head = NULL;
    if (c->arch == EBT_ARCH_EBT) {
        if (!c->tie_pred_embed) w->pred = EBT__P("pred_embed.weight");
        if (c->n_step_embed > 0) w->step = EBT__P("step_embed.weight");
        w->ehead = EBT__P("energy_head.weight");
        w->alpha = EBT__P("alpha");
    } else {
        w->lm_head = EBT__P("lm_head.weight");
    }
    w->final_norm = EBT__P("final_norm.weight");
    for (int l = 0; l < c->n_layers; l++) {
        ebt__layer_w *lw = &w->layer[l];
        snprintf(nm, sizeof nm, "layers.%d.attn_norm.weight", l); lw->attn_norm = EBT__P(nm);
        snprintf(nm, sizeof nm, "layers.%d.attn.wq.weight", l);   lw->wqkv = EBT__P(nm);
        snprintf(nm, sizeof nm, "layers.%d.attn.wo.weight", l);   lw->wo = EBT__P(nm);
        snprintf(nm, sizeof nm, "layers.%d.ffn_norm.weight", l);  lw->ffn_norm = EBT__P(nm);
        snprintf(nm, sizeof nm, "layers.%d.ffn.w1.weight", l);    lw->w13 = EBT__P(nm);
        snprintf(nm, sizeof nm, "layers.%d.ffn.w2.weight", l);    lw->w2 = EBT__P(nm);
    }
#undef EBT__P
}

/* ======================================================================
 * MODEL: config, create, free, parameter access.
 * ====================================================================== */

ebt_config ebt_config_default(void)
{
    ebt_config c;
    memset(&c, 0, sizeof c);
    c.arch = EBT_ARCH_EBT;
    c.vocab_size = 256;
    c.d_model = 128;
    c.n_layers = 4;
    c.n_heads = 4;
    c.d_ff = 128;
    c.max_seq_len = 256;
    c.n_step_embed = 0;
    c.tie_pred_embed = 0;
    c.rope_theta = 10000.0;
    c.norm_eps = 1e-5;
    c.alpha = 5.0;
    return c;
}

ebt_status ebt_config_check(const ebt_config *c, char *err, size_t errlen)
{
#define EBT__BAD(...) do { ebt__seterr(err, errlen, __VA_ARGS__); return EBT_ERR_ARG; } while (0)
    if (!c) EBT__BAD("config is NULL");
    if (c->arch != EBT_ARCH_EBT && c->arch != EBT_ARCH_TRANSFORMER) EBT__BAD("unknown arch %d", (int)c->arch);
    if (c->vocab_size < 1 || c->vocab_size > EBT__MAX_V) EBT__BAD("vocab_size %d out of range [1, %d]", c->vocab_size, EBT__MAX_V);
    if (c->d_model < 2 || c->d_model > EBT__MAX_D) EBT__BAD("d_model %d out of range [2, %d]", c->d_model, EBT__MAX_D);
    if (c->n_heads < 1 || c->n_heads > c->d_model) EBT__BAD("n_heads %d out of range [1, d_model]", c->n_heads);
    if (c->d_model % c->n_heads != 0) EBT__BAD("d_model %d not divisible by n_heads %d", c->d_model, c->n_heads);
    if ((c->d_model / c->n_heads) % 2 != 0) EBT__BAD("head width d_model/n_heads = %d is odd", c->d_model / c->n_heads);
    if (c->n_layers < 1 || c->n_layers > EBT__MAX_L) EBT__BAD("n_layers %d out of range [1, %d]", c->n_layers, EBT__MAX_L);
    if (c->d_ff < 1 || c->d_ff > EBT__MAX_F) EBT__BAD("d_ff %d out of range [1, %d]", c->d_ff, EBT__MAX_F);
    if (c->max_seq_len < 1 || c->max_seq_len > EBT__MAX_SEQ) EBT__BAD("max_seq_len %d out of range [1, %d]", c->max_seq_len, EBT__MAX_SEQ);
    if ((size_t)(c->max_seq_len + 2) * (size_t)(c->d_model / c->n_heads / 2) > ((size_t)1 << 27))
        EBT__BAD("max_seq_len %d too large for head width %d (RoPE tables)", c->max_seq_len, c->d_model / c->n_heads);
    if (!isfinite(c->rope_theta) || c->rope_theta <= 0) EBT__BAD("rope_theta must be finite and positive");
    if (!isfinite(c->norm_eps) || c->norm_eps <= 0) EBT__BAD("norm_eps must be finite and positive");
    if (c->arch == EBT_ARCH_EBT) {
        if (c->n_step_embed < 0 || c->n_step_embed > EBT__MAX_STEP_EMBED) EBT__BAD("n_step_embed %d out of range [0, %d]", c->n_step_embed, EBT__MAX_STEP_EMBED);
        if (c->tie_pred_embed != 0 && c->tie_pred_embed != 1) EBT__BAD("tie_pred_embed must be 0 or 1");
        if (!isfinite(c->alpha)) EBT__BAD("alpha must be finite");
    }
    {
        /* the whole model must be addressable */
        ebt_config cc = *c;
        ebt__tensor *t;
        size_t total = 0;
        int nt;
        if (cc.arch != EBT_ARCH_EBT) { cc.n_step_embed = 0; cc.tie_pred_embed = 0; }
        t = (ebt__tensor *)EBT_MALLOC(sizeof(ebt__tensor) * (size_t)ebt__max_tensors(&cc));
        if (!t) { ebt__seterr(err, errlen, "out of memory"); return EBT_ERR_NOMEM; }
        nt = ebt__build_table(&cc, t, &total);
        EBT_FREE(t);
        if (nt < 0 || total > EBT__MAX_PARAMS) EBT__BAD("model too large (%zu parameters)", total);
    }
    return EBT_OK;
#undef EBT__BAD
}

void ebt_workspace_free(ebt_workspace *ws);

void ebt_free(ebt_model *m)
{
    if (!m) return;
    ebt_workspace_free(m->ws);
    EBT_FREE(m->t);
    EBT_FREE(m->params);
    EBT_FREE(m->grads);
    EBT_FREE(m->w.layer);
    EBT_FREE(m->g.layer);
    EBT_FREE(m->rope_cos);
    EBT_FREE(m->rope_sin);
    EBT_FREE(m->opt.m);
    EBT_FREE(m->opt.v);
    EBT_FREE(m->rb.tok);
    EBT_FREE(m->rb.y);
    EBT_FREE(m->pend.tok);
    EBT_FREE(m->pend.y);
    EBT_FREE(m->tbuf);
    EBT_FREE(m->meta);
    EBT_FREE(m);
}

/* Allocates a zeroed model for a checked config (no init). */
static ebt_status ebt__alloc_model(const ebt_config *cfg, ebt_model **out, char *err, size_t errlen)
{
    ebt_status st = ebt_config_check(cfg, err, errlen);
    ebt_model *m;
    size_t total = 0, npos, half, L;
    int ovf = 0;
    *out = NULL;
    if (st != EBT_OK) return st;
    m = (ebt_model *)EBT_MALLOC(sizeof *m);
    if (!m) goto nomem;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    if (m->cfg.arch != EBT_ARCH_EBT) { m->cfg.n_step_embed = 0; m->cfg.tie_pred_embed = 0; }
    L = (size_t)cfg->n_layers;
    m->t = (ebt__tensor *)EBT_MALLOC(sizeof(ebt__tensor) * (size_t)ebt__max_tensors(&m->cfg));
    if (!m->t) goto nomem;
    m->nt = ebt__build_table(&m->cfg, m->t, &total);
    m->n_params = total;
    m->params = (ebt_real *)EBT_MALLOC(ebt__mul(total, sizeof(ebt_real), &ovf));
    m->grads = (ebt_real *)EBT_MALLOC(ebt__mul(total + EBT__NSUMS, sizeof(ebt_real), &ovf));
    m->w.layer = (ebt__layer_w *)EBT_MALLOC(L * sizeof(ebt__layer_w));
    m->g.layer = (ebt__layer_w *)EBT_MALLOC(L * sizeof(ebt__layer_w));
    half = (size_t)(cfg->d_model / cfg->n_heads / 2);
    npos = (size_t)cfg->max_seq_len + 2;
    m->rope_cos = (ebt_real *)EBT_MALLOC(ebt__mul(npos * half, sizeof(ebt_real), &ovf));
    m->rope_sin = (ebt_real *)EBT_MALLOC(ebt__mul(npos * half, sizeof(ebt_real), &ovf));
    if (ovf || !m->params || !m->grads || !m->w.layer || !m->g.layer || !m->rope_cos || !m->rope_sin) goto nomem;
    memset(m->params, 0, total * sizeof(ebt_real));
    memset(m->grads, 0, (total + EBT__NSUMS) * sizeof(ebt_real));
    ebt__point(m, m->params, &m->w);
    ebt__point(m, m->grads, &m->g);
    {
        /* RoPE tables: angles in double, cos/sin rounded once to float
         * (docs/model.md section 3.4) */
        int Dh = cfg->d_model / cfg->n_heads;
        for (size_t p = 0; p < npos; p++)
            for (size_t i = 0; i < half; i++) {
                double f = pow(cfg->rope_theta, -2.0 * (double)i / Dh), ang = (double)p * f;
                m->rope_cos[p * half + i] = (ebt_real)(float)cos(ang);
                m->rope_sin[p * half + i] = (ebt_real)(float)sin(ang);
            }
    }
    *out = m;
    return EBT_OK;
nomem:
    ebt_free(m);
    ebt__seterr(err, errlen, "out of memory allocating the model");
    return EBT_ERR_NOMEM;
}

ebt_status ebt_create(const ebt_config *cfg, uint64_t seed, ebt_model **out)
{
    ebt_model *m;
    ebt__rng rng;
    ebt_status st;
    if (!out) return EBT_ERR_ARG;
    *out = NULL;
    st = ebt__alloc_model(cfg, &m, NULL, 0);
    if (st != EBT_OK) return st;
    ebt__rng_seed(&rng, seed);
    for (int i = 0; i < m->nt; i++) {
        const ebt__tensor *t = &m->t[i];
        ebt_real *p = m->params + t->off;
        for (size_t j = 0; j < t->count; j++)
            p[j] = (ebt_real)(float)(t->init_std < 0 ? t->init_val : t->init_std * ebt__rng_normal(&rng));
    }
    *out = m;
    return EBT_OK;
}

const ebt_config *ebt_model_config(const ebt_model *m) { return m ? &m->cfg : NULL; }
const char *ebt_last_error(const ebt_model *m) { return m ? m->err : "model is NULL"; }
size_t ebt_n_params(const ebt_model *m) { return m ? m->n_params : 0; }

/* 1 if key is 1..EBT__META_KEY-1 bytes of [A-Za-z0-9_.-] and value (if not
 * NULL) fewer than EBT__META_VAL printable ASCII bytes */
static int ebt__meta_ok(const char *key, const char *value)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n >= EBT__META_KEY || key[strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")]) return 0;
    if (!value) return 1;
    if (strlen(value) >= EBT__META_VAL) return 0;
    for (const char *c = value; *c; c++)
        if (*c < 32 || *c > 126) return 0;
    return 1;
}

ebt_status ebt_meta_set(ebt_model *m, const char *key, const char *value)
{
    int i = 0;
    if (!m) return EBT_ERR_ARG;
    m->err[0] = 0;
    if (!ebt__meta_ok(key, value)) {
        ebt__seterr(m->err, EBT__ERRLEN, "metadata key must be 1-%d bytes of [A-Za-z0-9_.-], the value under %d printable bytes",
                    EBT__META_KEY - 1, EBT__META_VAL);
        return EBT_ERR_ARG;
    }
    while (i < m->nmeta && strcmp(m->meta[i].key, key)) i++;
    if (!value) {   /* remove */
        if (i < m->nmeta) m->meta[i] = m->meta[--m->nmeta];
        return EBT_OK;
    }
    if (i == m->nmeta && m->nmeta == EBT__META_MAX) { ebt__seterr(m->err, EBT__ERRLEN, "more than %d metadata entries", EBT__META_MAX); return EBT_ERR_ARG; }
    if (!m->meta && !(m->meta = (ebt__meta *)EBT_MALLOC(EBT__META_MAX * sizeof *m->meta))) {
        ebt__seterr(m->err, EBT__ERRLEN, "out of memory");
        return EBT_ERR_NOMEM;
    }
    snprintf(m->meta[i].key, EBT__META_KEY, "%s", key);
    snprintf(m->meta[i].val, EBT__META_VAL, "%s", value);
    if (i == m->nmeta) m->nmeta++;
    return EBT_OK;
}

const char *ebt_meta_get(const ebt_model *m, const char *key)
{
    for (int i = 0; m && key && i < m->nmeta; i++)
        if (!strcmp(m->meta[i].key, key)) return m->meta[i].val;
    return NULL;
}

int ebt_meta_count(const ebt_model *m) { return m ? m->nmeta : 0; }
const char *ebt_meta_key(const ebt_model *m, int i) { return m && i >= 0 && i < m->nmeta ? m->meta[i].key : NULL; }
int ebt_n_tensors(const ebt_model *m) { return m ? m->nt : 0; }
const char *ebt_tensor_name(const ebt_model *m, int i) { return (m && i >= 0 && i < m->nt) ? m->t[i].name : NULL; }

ebt_real *ebt_param(ebt_model *m, const char *name, size_t *count)
{
    const ebt__tensor *t = ebt__find_tensor(m, name);
    if (count) *count = t ? t->count : 0;
    return t ? m->params + t->off : NULL;
}

ebt_real *ebt_grad(ebt_model *m, const char *name, size_t *count)
{
    const ebt__tensor *t = ebt__find_tensor(m, name);
    if (count) *count = t ? t->count : 0;
    return t ? m->grads + t->off : NULL;
}

void ebt_zero_grad(ebt_model *m)
{
    if (!m) return;
    memset(m->grads, 0, (m->n_params + EBT__NSUMS) * sizeof(ebt_real));
    m->pend.count = 0;
    m->train_K = 0;
}

/* ======================================================================
 * OP: EMBEDDING
 *   tokens:      h[n] = W[x_n]                     fwd gather, bwd scatter-add
 *   candidates:  h = p @ W   (N,V)@(V,D)           a GEMM; p does have a tangent
 * ====================================================================== */

/* h(N,D) = W[tokens] ; W (V,D) */
static void ebt__tokemb_fwd(ebt_real *h, const int32_t *tok, const ebt_real *W, int N, int D)
{
    for (int n = 0; n < N; n++) memcpy(h + (size_t)n * D, W + (size_t)tok[n] * D, sizeof(ebt_real) * D);
}
/* dW[tokens] += dh(N,D) */
static void ebt__tokemb_bwd(ebt_real *dW, const ebt_real *dh, const int32_t *tok, int N, int D)
{
    for (int n = 0; n < N; n++) {
        ebt_real *d = dW + (size_t)tok[n] * D;
        const ebt_real *s = dh + (size_t)n * D;
        for (int j = 0; j < D; j++) d[j] += s[j];
    }
}
/* fwd: h(N,D) = p(N,V) @ W(V,D).  Tangent: th = v @ W (same call with v). */
static void ebt__pemb_fwd(ebt_real *h, const ebt_real *p, const ebt_real *W, int N, int V, int D, int nt)
{
    ebt__gemm_par(nt, 0, 0, N, D, V, 1, p, V, W, D, 0, h, D);          /* h = p @ W */
}
/* bwd: dp(N,V) = dh @ W^T (if dp); dW(V,D) += p^T @ dh (if dW) */
static void ebt__pemb_bwd(ebt_real *dp, ebt_real *dW, const ebt_real *dh, const ebt_real *p,
                          const ebt_real *W, int N, int V, int D, int nt)
{
    if (dp) ebt__gemm_par(nt, 0, 1, N, V, D, 1, dh, D, W, D, 0, dp, V); /* dp = dh @ W^T */
    if (dW) ebt__gemm_par(nt, 1, 0, V, D, N, 1, p, V, dh, D, 1, dW, D); /* dW += p^T @ dh */
}
/* tangent of bwd: tdp(N,V) = tdh @ W^T (this is H v); tdW += p^T tdh + v^T dh */
static void ebt__pemb_tbwd(ebt_real *tdp, ebt_real *tdW, const ebt_real *tdh, const ebt_real *dh,
                           const ebt_real *p, const ebt_real *v, const ebt_real *W, int N, int V, int D, int nt)
{
    if (tdp) ebt__gemm_par(nt, 0, 1, N, V, D, 1, tdh, D, W, D, 0, tdp, V); /* tdp = tdh @ W^T */
    if (tdW) {
        ebt__gemm_par(nt, 1, 0, V, D, N, 1, p, V, tdh, D, 1, tdW, D);      /* tdW += p^T @ tdh */
        ebt__gemm_par(nt, 1, 0, V, D, N, 1, v, V, dh, D, 1, tdW, D);       /* tdW += v^T @ dh */
    }
}

/* ======================================================================
 * OP: RMSNORM   y = g * x * r,  r = 1/sqrt(mean(x^2) + eps)    per row
 *   dr/dx = -r^3 x / D
 * ====================================================================== */

/* y = g * x * r with the cached r (the backward recomputes y with it) */
EBT__SIMD static void ebt__rmsnorm_apply(ebt_real *y, const ebt_real *x, const ebt_real *rs, const ebt_real *g, int N, int D, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * D, int n = 0, n < N, n++, {
        const ebt_real *xr = x + (size_t)n * D;
        ebt_real *yr = y + (size_t)n * D, r = rs[n];
        for (int j = 0; j < D; j++) yr[j] = g[j] * xr[j] * r;
    });
}
/* y(N,D), rs(N) cached r; x(N,D); g(D) */
EBT__SIMD static void ebt__rmsnorm_fwd(ebt_real *y, ebt_real *rs, const ebt_real *x, const ebt_real *g,
                                       int N, int D, ebt_real eps, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * D, int n = 0, n < N, n++, {
        const ebt_real *xr = x + (size_t)n * D;
        ebt_real *yr = y + (size_t)n * D, r = 1 / sqrt(ebt__dot(xr, xr, D) / D + eps);
        rs[n] = r;
        for (int j = 0; j < D; j++) yr[j] = g[j] * xr[j] * r;
    });
}
/* dg(D) += sum_n dy(n,j) x(n,j) r_n, split by column blocks (each column
 * summed in row order, as a serial loop would) */
EBT__SIMD static void ebt__colsum(ebt_real *dg, const ebt_real *dy, const ebt_real *x, const ebt_real *r,
                                  int N, int D, int nt)
{
    int nb = (D + 63) / 64;
    EBT__FOR_BLOCKS(nt, (size_t)N * D, int blk = 0, blk < nb, blk++, {
        int j0 = blk * 64, j1 = j0 + 64 < D ? j0 + 64 : D;
        for (int n = 0; n < N; n++) {
            const ebt_real *dyr = dy + (size_t)n * D, *xr = x + (size_t)n * D;
            ebt_real rn = r[n];
            for (int j = j0; j < j1; j++) dg[j] += dyr[j] * xr[j] * rn;
        }
    });
}
/* bwd: c = g*dy;  dx(N,D) += r c - (r^3/D)(c.x) x ;  dg(D) += sum_n dy * x * r (if dg) */
EBT__SIMD static void ebt__rmsnorm_bwd(ebt_real *dx, ebt_real *dg, const ebt_real *dy, const ebt_real *x,
                                       const ebt_real *rs, const ebt_real *g, int N, int D, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * D, int n = 0, n < N, n++, {
        const ebt_real *xr = x + (size_t)n * D, *dyr = dy + (size_t)n * D;
        ebt_real *dxr = dx + (size_t)n * D, r = rs[n], k = r * r * r * ebt__dot3(g, dyr, xr, D) / D;
        for (int j = 0; j < D; j++) dxr[j] += r * g[j] * dyr[j] - k * xr[j];
    });
    if (dg) ebt__colsum(dg, dy, x, rs, N, D, nt);
}
/* tangent: tr = -r^3 (x.tx)/D ;  ty(N,D) = g (tx r + x tr) */
EBT__SIMD static void ebt__rmsnorm_tan(ebt_real *ty, const ebt_real *tx, const ebt_real *x, const ebt_real *rs,
                                       const ebt_real *g, int N, int D, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * D, int n = 0, n < N, n++, {
        const ebt_real *xr = x + (size_t)n * D, *txr = tx + (size_t)n * D;
        ebt_real *tyr = ty + (size_t)n * D, r = rs[n];
        ebt_real tr = -r * r * r * ebt__dot(xr, txr, D) / D;
        for (int j = 0; j < D; j++) tyr[j] = g[j] * (txr[j] * r + xr[j] * tr);
    });
}
/* the three sums of a row of the RMSNorm tangent-of-backward:
 * x.tx, c.x and tc.x + c.tx with c = g dy, tc = g tdy (tdy may be NULL) */
static inline void ebt__rms_tbwd_sums(const ebt_real *x, const ebt_real *tx, const ebt_real *dy, const ebt_real *tdy,
                                      const ebt_real *g, int D, ebt_real out[3])
{
    ebt_real a[EBT__LANES] = { 0 }, b[EBT__LANES] = { 0 }, c[EBT__LANES] = { 0 };
    int j = 0;
    for (; j + EBT__LANES <= D; j += EBT__LANES)
        for (int l = 0; l < EBT__LANES; l++) {
            a[l] += x[j + l] * tx[j + l];
            b[l] += g[j + l] * dy[j + l] * x[j + l];
            c[l] += g[j + l] * dy[j + l] * tx[j + l];
        }
    for (int l = 0; j + l < D; l++) {
        a[l] += x[j + l] * tx[j + l];
        b[l] += g[j + l] * dy[j + l] * x[j + l];
        c[l] += g[j + l] * dy[j + l] * tx[j + l];
    }
    out[0] = out[1] = out[2] = 0;
    for (int l = 0; l < EBT__LANES; l++) { out[0] += a[l]; out[1] += b[l]; out[2] += c[l]; }
    if (tdy) out[2] += ebt__dot3(g, tdy, x, D);
}
/* tangent of bwd (tdy may be NULL = 0):
 *   tdx += tr c + r tc - (3 r^2 tr/D)(c.x) x - (r^3/D)(tc.x + c.tx) x - (r^3/D)(c.x) tx
 *   tdg += tdy x r + dy (tx r + x tr)          (if tdg; trs (N) is scratch for tr) */
EBT__SIMD static void ebt__rmsnorm_tbwd(ebt_real *tdx, ebt_real *tdg, const ebt_real *tdy, const ebt_real *dy,
                                        const ebt_real *tx, const ebt_real *x, const ebt_real *rs,
                                        const ebt_real *g, ebt_real *trs, int N, int D, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * D, int n = 0, n < N, n++, {
        size_t o = (size_t)n * D;
        const ebt_real *xr = x + o, *txr = tx + o, *dyr = dy + o, *tdyr = tdy ? tdy + o : NULL;
        ebt_real *tdxr = tdx + o, r = rs[n], sums[3];
        ebt__rms_tbwd_sums(xr, txr, dyr, tdyr, g, D, sums);
        ebt_real r3 = r * r * r, tr = -r3 * sums[0] / D;
        ebt_real kx = (3 * r * r * tr * sums[1] + r3 * sums[2]) / D, ktx = r3 * sums[1] / D;
        trs[n] = tr;
        if (tdyr) for (int j = 0; j < D; j++) tdxr[j] += tr * g[j] * dyr[j] + r * g[j] * tdyr[j] - kx * xr[j] - ktx * txr[j];
        else for (int j = 0; j < D; j++) tdxr[j] += tr * g[j] * dyr[j] - kx * xr[j] - ktx * txr[j];
    });
    if (tdg) {   /* tdg += tdy x r + dy (tx r + x tr), by column blocks */
        int nb = (D + 63) / 64;
        EBT__FOR_BLOCKS(nt, (size_t)N * D, int blk = 0, blk < nb, blk++, {
            int j0 = blk * 64, j1 = j0 + 64 < D ? j0 + 64 : D;
            for (int n = 0; n < N; n++) {
                size_t o = (size_t)n * D;
                ebt_real r = rs[n], tr = trs[n];
                if (tdy) for (int j = j0; j < j1; j++) tdg[j] += tdy[o + j] * x[o + j] * r + dy[o + j] * (tx[o + j] * r + x[o + j] * tr);
                else for (int j = j0; j < j1; j++) tdg[j] += dy[o + j] * (tx[o + j] * r + x[o + j] * tr);
            }
        });
    }
}

/* ======================================================================
 * OP: ROPE  interleaved pairs (u0,u1) -> (u0 c - u1 s, u0 s + u1 c)
 *   A rotation R: fwd and tangent apply R, bwd and tangent-of-bwd apply R^T.
 * ====================================================================== */

/* x: N rows, row stride ld, columns [0,D) = H heads of Dh. Row r sits at
 * position pos[r], or (pos NULL) pos0 + r % T (blocks of T rows).
 * inverse=1 applies R^T. */
EBT__SIMD static void ebt__rope(ebt_real *x, int ld, int N, const int *pos, int T, int pos0, int H, int Dh,
                                const ebt_real *cosv, const ebt_real *sinv, int inverse, int nt)
{
    int half = Dh / 2;
    ebt_real sg = inverse ? -1 : 1;
    EBT__FOR_ROWS(nt, (size_t)N * H * Dh, int r = 0, r < N, r++, {
        int p = pos ? pos[r] : pos0 + r % T;
        ebt_real *row = x + (size_t)r * ld;
        const ebt_real *c = cosv + (size_t)p * half, *s = sinv + (size_t)p * half;
        for (int h = 0; h < H; h++) {
            ebt_real *u = row + h * Dh;
            for (int m = 0; m < half; m++) {
                ebt_real u0 = u[2 * m], u1 = u[2 * m + 1], sn = sg * s[m];
                u[2 * m] = u0 * c[m] - u1 * sn;
                u[2 * m + 1] = u0 * sn + u1 * c[m];
            }
        }
    });
}
/* q and k column blocks of a qkv buffer (N, 3D) */
static void ebt__rope_qk(const ebt_model *m, ebt_real *qkv, int N, const int *pos, int T, int pos0, int inverse, int nt)
{
    int D = m->cfg.d_model, H = m->cfg.n_heads;
    /* q and k are adjacent: one pass over 2H heads of each row */
    ebt__rope(qkv, 3 * D, N, pos, T, pos0, 2 * H, D / H, m->rope_cos, m->rope_sin, inverse, nt);
}

/* ======================================================================
 * OP: LINEAR   y(N,O) = x(N,I) @ W(O,I)^T      (no bias)
 *   tangent:  ty = tx @ W^T            (ebt__lin_fwd on tx)
 *   bwd:      dx = dy @ W ;  dW += dy^T x       (In, Out: the widths of x, y)
 *   tbwd:     tdx = tdy @ W ;  tdW += tdy^T x + dy^T tx
 * ====================================================================== */

static void ebt__lin_fwd(ebt_real *y, const ebt_real *x, const ebt_real *W, int N, int In, int Out, ebt_real beta, int nt)
{
    ebt__gemm_par(nt, 0, 1, N, Out, In, 1, x, In, W, In, beta, y, Out);       /* y = x @ W^T (+ beta y) */
}
static void ebt__lin_bwd_x(ebt_real *dx, const ebt_real *dy, const ebt_real *W, int N, int In, int Out, int nt)
{
    ebt__gemm_par(nt, 0, 0, N, In, Out, 1, dy, Out, W, In, 0, dx, In);        /* dx = dy @ W */
}
static void ebt__lin_bwd_w(ebt_real *dW, const ebt_real *dy, const ebt_real *x, int N, int In, int Out, int nt)
{
    ebt__gemm_par(nt, 1, 0, Out, In, N, 1, dy, Out, x, In, 1, dW, In);        /* dW += dy^T @ x */
}

/* ======================================================================
 * OP: ATTENTION (one batch row b, one head h)
 *   Queries q_i attend to keys k_j with j <= lim_i (i + shift, or lims[i]; j < nk) and, when
 *   `self` is set, to their own key ks_i / value vs_i. One softmax:
 *     P = softmax(scale * [q_i.k_j ..., q_i.ks_i]),  o_i = sum_j P_ij v_j + P_is vs_i
 *   P is stored (nq, nk+1) with the self column last.
 *   The observed stream uses shift 0, no self (causal). The predicted
 *   stream uses shift = offset, self on; its keys k, v (observed) are
 *   constants w.r.t. p, so tangents exist only for q, ks, vs. Query limits
 *   never decrease with the row (rows are in position order).
 * ====================================================================== */

typedef struct {
    int nq, nk, shift, self, Dh, ld, ldo; /* ld: row stride of q,k,v,ks,vs; ldo: of o */
    const int *lims;  /* if set, query i sees keys j <= lims[i] (instead of i + shift) */
    ebt_real scale;
} ebt__attn_dims;

static int ebt__attn_lim(const ebt__attn_dims *d, int i)
{
    int lim = d->lims ? d->lims[i] : i + d->shift;
    return lim < d->nk - 1 ? lim : d->nk - 1;
}

/* Queries go in chunks of EBT__QC rows; a chunk's products stop at the keys
 * its last row sees (limits grow with the row), so the masked upper
 * triangle is mostly never computed. Columns of P beyond a chunk's kc are
 * never written nor read. */
#define EBT__QC 32
static int ebt__attn_chunk(const ebt__attn_dims *d, int i0, int *i1)
{
    *i1 = i0 + EBT__QC < d->nq ? i0 + EBT__QC : d->nq;
    return ebt__attn_lim(d, *i1 - 1) + 1;
}


/* row helpers of the attention kernels (each a pass over one row of P) */
/* p[j] = exp(p[j] - mx) for j < n; returns their sum */
static inline ebt_real ebt__exp_sum(ebt_real *p, int n, ebt_real mx)
{
    ebt_real acc[EBT__LANES] = { 0 }, s = 0;
    int j = 0;
    for (; j + EBT__LANES <= n; j += EBT__LANES)
        for (int l = 0; l < EBT__LANES; l++) { p[j + l] = ebt__exp(p[j + l] - mx); acc[l] += p[j + l]; }
    for (int l = 0; j + l < n; l++) { p[j + l] = ebt__exp(p[j + l] - mx); acc[l] += p[j + l]; }
    for (int l = 0; l < EBT__LANES; l++) s += acc[l];
    return s;
}
/* t[j] = P[j] (t[j] - m) for j < n */
static inline void ebt__softmax_jvp(ebt_real *t, const ebt_real *P, ebt_real m, int n)
{
    for (int j = 0; j < n; j++) t[j] = P[j] * (t[j] - m);
}
/* G[j] -= m; dS[j] = P[j] G[j] for j < n */
static inline void ebt__softmax_vjp(ebt_real *G, ebt_real *dS, const ebt_real *P, ebt_real m, int n)
{
    for (int j = 0; j < n; j++) { G[j] -= m; dS[j] = P[j] * G[j]; }
}
/* sum_j tP_j (G_j + mu) + P_j T_j for j < n */
static inline ebt_real ebt__tmu(const ebt_real *tP, const ebt_real *G, const ebt_real *P, const ebt_real *T, ebt_real mu, int n)
{
    ebt_real acc[EBT__LANES] = { 0 }, s = 0;
    int j = 0;
    for (; j + EBT__LANES <= n; j += EBT__LANES)
        for (int l = 0; l < EBT__LANES; l++) acc[l] += tP[j + l] * (G[j + l] + mu) + P[j + l] * T[j + l];
    for (int l = 0; j + l < n; l++) acc[l] += tP[j + l] * (G[j + l] + mu) + P[j + l] * T[j + l];
    for (int l = 0; l < EBT__LANES; l++) s += acc[l];
    return s;
}
/* T[j] = tP[j] G[j] + P[j] (T[j] - tm) for j < n */
static inline void ebt__softmax_tvjp(ebt_real *T, const ebt_real *tP, const ebt_real *G, const ebt_real *P, ebt_real tm, int n)
{
    for (int j = 0; j < n; j++) T[j] = tP[j] * G[j] + P[j] * (T[j] - tm);
}

/* fwd: o(nq,Dh), P(nq,nk+1) from q(nq,Dh) k,v(nk,Dh) ks,vs(nq,Dh) */
EBT__SIMD static void ebt__attn_fwd(ebt_real *o, ebt_real *P, const ebt_real *q, const ebt_real *k,
                          const ebt_real *v, const ebt_real *ks, const ebt_real *vs,
                          const ebt__attn_dims *d)
{
    int nk = d->nk, lp = nk + 1, Dh = d->Dh;
    for (int i0 = 0, i1, kc; i0 < d->nq; i0 = i1) {
        kc = ebt__attn_chunk(d, i0, &i1);
        ebt__gemm(0, 1, i1 - i0, kc, Dh, d->scale, q + (size_t)i0 * d->ld, d->ld, k, d->ld, 0,
                  P + (size_t)i0 * lp, lp);                                    /* P = scale q @ k^T */
        for (int i = i0; i < i1; i++) {
            ebt_real *Pi = P + (size_t)i * lp, mx, sum;
            int lim = ebt__attn_lim(d, i);
            Pi[nk] = d->self ? d->scale * ebt__dot(q + (size_t)i * d->ld, ks + (size_t)i * d->ld, Dh) : 0;
            mx = ebt__max(Pi, lim + 1);
            mx = d->self && Pi[nk] > mx ? Pi[nk] : mx;
            sum = ebt__exp_sum(Pi, lim + 1, mx);
            if (d->self) { Pi[nk] = ebt__exp(Pi[nk] - mx); sum += Pi[nk]; }
            for (int j = 0; j <= lim; j++) Pi[j] /= sum;
            for (int j = lim + 1; j < kc; j++) Pi[j] = 0;
            Pi[nk] = d->self ? Pi[nk] / sum : 0;
        }
        ebt__gemm(0, 0, i1 - i0, Dh, kc, 1, P + (size_t)i0 * lp, lp, v, d->ld, 0,
                  o + (size_t)i0 * d->ldo, d->ldo);                          /* o = P @ v */
    }
    if (d->self)
        for (int i = 0; i < d->nq; i++)
            ebt__axpy(o + (size_t)i * d->ldo, P[(size_t)i * lp + nk], vs + (size_t)i * d->ld, Dh);
}

/* tangent: to(nq,Dh), tP(nq,nk+1) from tq, tks, tvs (k, v constant)
 *   tA = scale [tq.k_j, tq.ks + q.tks] ; tP = P (tA - sum P tA) ; to = tP v + tP_s vs + P_s tvs */
EBT__SIMD static void ebt__attn_tan(ebt_real *to, ebt_real *tP, const ebt_real *tq, const ebt_real *tks,
                          const ebt_real *tvs, const ebt_real *P, const ebt_real *q,
                          const ebt_real *k, const ebt_real *v, const ebt_real *ks,
                          const ebt_real *vs, const ebt__attn_dims *d)
{
    int nk = d->nk, lp = nk + 1, Dh = d->Dh;
    for (int i0 = 0, i1, kc; i0 < d->nq; i0 = i1) {
        kc = ebt__attn_chunk(d, i0, &i1);
        ebt__gemm(0, 1, i1 - i0, kc, Dh, d->scale, tq + (size_t)i0 * d->ld, d->ld, k, d->ld, 0,
                  tP + (size_t)i0 * lp, lp);                                   /* tA = scale tq @ k^T */
        for (int i = i0; i < i1; i++) {
            const ebt_real *Pi = P + (size_t)i * lp;
            ebt_real *tPi = tP + (size_t)i * lp, m;
            size_t r = (size_t)i * d->ld;
            tPi[nk] = d->self ? d->scale * (ebt__dot(tq + r, ks + r, Dh) + ebt__dot(q + r, tks + r, Dh)) : 0;
            m = ebt__dot(Pi, tPi, kc) + Pi[nk] * tPi[nk];
            ebt__softmax_jvp(tPi, Pi, m, kc);
            tPi[nk] = Pi[nk] * (tPi[nk] - m);
        }
        ebt__gemm(0, 0, i1 - i0, Dh, kc, 1, tP + (size_t)i0 * lp, lp, v, d->ld, 0,
                  to + (size_t)i0 * d->ldo, d->ldo);                          /* to = tP @ v */
    }
    if (d->self)
        for (int i = 0; i < d->nq; i++) {
            size_t r = (size_t)i * d->ld;
            ebt__axpy(to + (size_t)i * d->ldo, tP[(size_t)i * lp + nk], vs + r, Dh);
            ebt__axpy(to + (size_t)i * d->ldo, P[(size_t)i * lp + nk], tvs + r, Dh);
        }
}

/* bwd, from do(nq,Dh):
 *   dP = do v^T (self: do.vs) ; G = dP - mu, mu_i = sum_j P dP ; dS = P G
 *   dq += scale (dS k + dS_s ks) ; dks += scale dS_s q ; dvs += P_s do
 *   dk += scale dS^T q (if dk) ; dv += P^T do (if dv)
 * Saves G, dS (nq,nk+1) and mu (nq) for the tangent of bwd. */
EBT__SIMD static void ebt__attn_bwd(ebt_real *dq, ebt_real *dk, ebt_real *dv, ebt_real *dks, ebt_real *dvs,
                          ebt_real *G, ebt_real *dS, ebt_real *mu, const ebt_real *dout,
                          const ebt_real *P, const ebt_real *q, const ebt_real *k,
                          const ebt_real *v, const ebt_real *ks, const ebt_real *vs,
                          const ebt__attn_dims *d)
{
    int nk = d->nk, lp = nk + 1, Dh = d->Dh, nq = d->nq;
    for (int i0 = 0, i1, kc; i0 < nq; i0 = i1) {
        size_t c0 = (size_t)i0 * lp;
        int nr;
        kc = ebt__attn_chunk(d, i0, &i1);
        nr = i1 - i0;
        ebt__gemm(0, 1, nr, kc, Dh, 1, dout + (size_t)i0 * d->ldo, d->ldo, v, d->ld, 0, G + c0, lp); /* dP = do @ v^T */
        for (int i = i0; i < i1; i++) {
            const ebt_real *Pi = P + (size_t)i * lp;
            ebt_real *Gi = G + (size_t)i * lp, *dSi = dS + (size_t)i * lp, m;
            Gi[nk] = d->self ? ebt__dot(dout + (size_t)i * d->ldo, vs + (size_t)i * d->ld, Dh) : 0;
            m = ebt__dot(Pi, Gi, kc) + Pi[nk] * Gi[nk];
            mu[i] = m;
            ebt__softmax_vjp(Gi, dSi, Pi, m, kc);
            Gi[nk] -= m;
            dSi[nk] = Pi[nk] * Gi[nk];
        }
        ebt__gemm(0, 0, nr, Dh, kc, d->scale, dS + c0, lp, k, d->ld, 1, dq + (size_t)i0 * d->ld, d->ld); /* dq += scale dS @ k */
        if (dk) ebt__gemm(1, 0, kc, Dh, nr, d->scale, dS + c0, lp, q + (size_t)i0 * d->ld, d->ld, 1, dk, d->ld); /* dk += scale dS^T @ q */
        if (dv) ebt__gemm(1, 0, kc, Dh, nr, 1, P + c0, lp, dout + (size_t)i0 * d->ldo, d->ldo, 1, dv, d->ld);  /* dv += P^T @ do */
    }
    if (d->self)
        for (int i = 0; i < nq; i++) {
            size_t r = (size_t)i * d->ld;
            ebt_real dss = dS[(size_t)i * lp + nk];
            ebt__axpy(dq + r, d->scale * dss, ks + r, Dh);
            ebt__axpy(dks + r, d->scale * dss, q + r, Dh);
            ebt__axpy(dvs + r, P[(size_t)i * lp + nk], dout + (size_t)i * d->ldo, Dh);
        }
}

/* tangent of bwd, from tdo(nq,Dh) and the tangents tP (from ebt__attn_tan), tq, tks, tvs (k, v constant):
 *   tdP = tdo v^T (self: tdo.vs + do.tvs) ; tmu = sum tP (G + mu) + P tdP
 *   tdS = tP G + P (tdP - tmu)   (computed in place in T (nq,nk+1))
 *   tdq += scale (tdS k + tdS_s ks + dS_s tks) ; tdks += scale (tdS_s q + dS_s tq)
 *   tdvs += tP_s do + P_s tdo ; tdk += scale (tdS^T q + dS^T tq) ; tdv += tP^T do + P^T tdo */
EBT__SIMD static void ebt__attn_tbwd(ebt_real *tdq, ebt_real *tdk, ebt_real *tdv, ebt_real *tdks,
                           ebt_real *tdvs, ebt_real *T, const ebt_real *G, const ebt_real *dS,
                           const ebt_real *mu, const ebt_real *tdout, const ebt_real *dout,
                           const ebt_real *tP, const ebt_real *tq, const ebt_real *tks,
                           const ebt_real *tvs, const ebt_real *P, const ebt_real *q,
                           const ebt_real *k, const ebt_real *v, const ebt_real *ks,
                           const ebt_real *vs, const ebt__attn_dims *d)
{
    int nk = d->nk, lp = nk + 1, Dh = d->Dh, nq = d->nq;
    for (int i0 = 0, i1, kc; i0 < nq; i0 = i1) {
        size_t c0 = (size_t)i0 * lp, q0 = (size_t)i0 * d->ld, o0 = (size_t)i0 * d->ldo;
        int nr;
        kc = ebt__attn_chunk(d, i0, &i1);
        nr = i1 - i0;
        ebt__gemm(0, 1, nr, kc, Dh, 1, tdout + o0, d->ldo, v, d->ld, 0, T + c0, lp);   /* tdP = tdo @ v^T */
        for (int i = i0; i < i1; i++) {
            const ebt_real *Pi = P + (size_t)i * lp, *tPi = tP + (size_t)i * lp, *Gi = G + (size_t)i * lp;
            ebt_real *Ti = T + (size_t)i * lp, tm;
            size_t r = (size_t)i * d->ld;
            Ti[nk] = d->self ? ebt__dot(tdout + (size_t)i * d->ldo, vs + r, Dh) +
                               ebt__dot(dout + (size_t)i * d->ldo, tvs + r, Dh) : 0;
            tm = ebt__tmu(tPi, Gi, Pi, Ti, mu[i], kc) + tPi[nk] * (Gi[nk] + mu[i]) + Pi[nk] * Ti[nk];
            ebt__softmax_tvjp(Ti, tPi, Gi, Pi, tm, kc);
            Ti[nk] = tPi[nk] * Gi[nk] + Pi[nk] * (Ti[nk] - tm);
        }
        ebt__gemm(0, 0, nr, Dh, kc, d->scale, T + c0, lp, k, d->ld, 1, tdq + q0, d->ld);       /* tdq += scale tdS @ k */
        if (tdk) {
            ebt__gemm(1, 0, kc, Dh, nr, d->scale, T + c0, lp, q + q0, d->ld, 1, tdk, d->ld);   /* tdk += scale tdS^T @ q */
            ebt__gemm(1, 0, kc, Dh, nr, d->scale, dS + c0, lp, tq + q0, d->ld, 1, tdk, d->ld); /* tdk += scale dS^T @ tq */
        }
        if (tdv) {
            ebt__gemm(1, 0, kc, Dh, nr, 1, tP + c0, lp, dout + o0, d->ldo, 1, tdv, d->ld);     /* tdv += tP^T @ do */
            ebt__gemm(1, 0, kc, Dh, nr, 1, P + c0, lp, tdout + o0, d->ldo, 1, tdv, d->ld);     /* tdv += P^T @ tdo */
        }
    }
    if (d->self)
        for (int i = 0; i < nq; i++) {
            size_t r = (size_t)i * d->ld, c = (size_t)i * lp + nk;
            ebt__axpy(tdq + r, d->scale * T[c], ks + r, Dh);
            ebt__axpy(tdq + r, d->scale * dS[c], tks + r, Dh);
            ebt__axpy(tdks + r, d->scale * T[c], q + r, Dh);
            ebt__axpy(tdks + r, d->scale * dS[c], tq + r, Dh);
            ebt__axpy(tdvs + r, tP[c], dout + (size_t)i * d->ldo, Dh);
            ebt__axpy(tdvs + r, P[c], tdout + (size_t)i * d->ldo, Dh);
        }
}

/* ======================================================================
 * OP: SWIGLU   u = silu(z1) * z3,  z13 = [z1 | z3] per row (N,2F)
 *   silu(z) = z s, s = sigmoid(z);  silu' = s (1 + z (1 - s));
 *   silu'' = s (1 - s) (2 + z (1 - 2 s))
 * ====================================================================== */


/* u(N,F) */
EBT__SIMD static void ebt__swiglu_fwd(ebt_real *u, const ebt_real *z13, int N, int F, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * F, int n = 0, n < N, n++, {
        const ebt_real *z1 = z13 + (size_t)n * 2 * F, *z3 = z1 + F;
        ebt_real *ur = u + (size_t)n * F;
        for (int j = 0; j < F; j++) ur[j] = z1[j] * ebt__sigmoid(z1[j]) * z3[j];
    });
}
/* tangent: tu = silu'(z1) tz1 z3 + silu(z1) tz3 */
EBT__SIMD static void ebt__swiglu_tan(ebt_real *tu, const ebt_real *tz13, const ebt_real *z13, int N, int F, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * F, int n = 0, n < N, n++, {
        const ebt_real *z1 = z13 + (size_t)n * 2 * F, *z3 = z1 + F;
        const ebt_real *t1 = tz13 + (size_t)n * 2 * F, *t3 = t1 + F;
        ebt_real *tur = tu + (size_t)n * F;
        for (int j = 0; j < F; j++) {
            ebt_real s = ebt__sigmoid(z1[j]);
            tur[j] = s * (1 + z1[j] * (1 - s)) * t1[j] * z3[j] + z1[j] * s * t3[j];
        }
    });
}
/* The reverse of the SwiGLU in one pass (one sigmoid per element):
 *   bwd:  dz1 = du z3 silu'(z1) ; dz3 = du silu(z1)
 *   tangent of bwd (if tdz13):
 *     tdz1 = tdu z3 silu' + du tz3 silu' + du z3 silu'' tz1 ;  tdz3 = tdu silu + du silu' tz1
 * dz13 from du (bwd), tdz13 from tdu (tangent of bwd, if tdz13); with
 * want_u, du and tdu are then overwritten with u and tu, which the weight
 * gradients of W2 need (they are not stored by the forward). */
/* one row of the backward: d1, d3 from g = du; with want_u, du = u after */
static inline void ebt__swiglu_bwd_row(ebt_real *restrict d1, ebt_real *restrict d3, ebt_real *restrict du,
                                       const ebt_real *restrict z1, const ebt_real *restrict z3, int F, int want_u)
{
    for (int j = 0; j < F; j++) {
        ebt_real z = z1[j], s = ebt__sigmoid(z), s1 = s * (1 + z * (1 - s)), g = du[j];
        d1[j] = g * z3[j] * s1;
        d3[j] = g * z * s;
        du[j] = want_u ? z * s * z3[j] : g;
    }
}
/* one row of the backward and its tangent: d1, d3 from g = du; e1, e3 from
 * tg = tdu; with want_u, du = u and tdu = tu after */
static inline void ebt__swiglu_tbwd_row(ebt_real *restrict d1, ebt_real *restrict d3, ebt_real *restrict e1,
                                        ebt_real *restrict e3, ebt_real *restrict du, ebt_real *restrict tdu,
                                        const ebt_real *restrict z1, const ebt_real *restrict z3,
                                        const ebt_real *restrict t1, const ebt_real *restrict t3, int F, int want_u)
{
    for (int j = 0; j < F; j++) {
        ebt_real z = z1[j], s = ebt__sigmoid(z), s1 = s * (1 + z * (1 - s)), g = du[j], tg = tdu[j];
        ebt_real s2 = s * (1 - s) * (2 + z * (1 - 2 * s));
        d1[j] = g * z3[j] * s1;
        d3[j] = g * z * s;
        e1[j] = tg * z3[j] * s1 + g * (t3[j] * s1 + z3[j] * s2 * t1[j]);
        e3[j] = tg * z * s + g * s1 * t1[j];
        tdu[j] = want_u ? s1 * t1[j] * z3[j] + z * s * t3[j] : tg;
        du[j] = want_u ? z * s * z3[j] : g;
    }
}
EBT__SIMD static void ebt__swiglu_rev(ebt_real *dz13, ebt_real *tdz13, ebt_real *du, ebt_real *tdu,
                                      const ebt_real *z13, const ebt_real *tz13, int N, int F, int want_u, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * F, int n = 0, n < N, n++, {
        size_t o2 = (size_t)n * 2 * F, o1 = (size_t)n * F;
        if (tdz13)
            ebt__swiglu_tbwd_row(dz13 + o2, dz13 + o2 + F, tdz13 + o2, tdz13 + o2 + F, du + o1, tdu + o1,
                                 z13 + o2, z13 + o2 + F, tz13 + o2, tz13 + o2 + F, F, want_u);
        else
            ebt__swiglu_bwd_row(dz13 + o2, dz13 + o2 + F, du + o1, z13 + o2, z13 + o2 + F, F, want_u);
    });
}

/* ======================================================================
 * OP: ENERGY HEAD   E_n = nf_n . we,  nf = rmsnorm(h) * final_norm
 *   bwd: dnf_n = dE_n we ; dwe += sum_n dE_n nf_n
 *   tangent: tE_n = tnf_n . we (unused: thinking needs H v, not tE)
 *   tbwd (dE a constant seed, tdE = 0): tdnf = 0 ; tdwe += sum_n dE_n tnf_n
 * ====================================================================== */

static void ebt__ehead_fwd(ebt_real *E, const ebt_real *nf, const ebt_real *we, int N, int D)
{
    for (int n = 0; n < N; n++) E[n] = ebt__dot(nf + (size_t)n * D, we, D);
}
/* dnf(N,D) = dE_n we (dE NULL: ones); dwe(D) += sum dE_n nf_n (if dwe). The
 * tangent of bwd is this call's dwe part with tnf in place of nf. */
static void ebt__ehead_bwd(ebt_real *dnf, ebt_real *dwe, const ebt_real *dE, const ebt_real *nf,
                           const ebt_real *we, int N, int D)
{
    for (int n = 0; n < N; n++) {
        ebt_real s = dE ? dE[n] : 1;
        if (dnf) for (int j = 0; j < D; j++) dnf[(size_t)n * D + j] = s * we[j];
        if (dwe) ebt__axpy(dwe, s, nf + (size_t)n * D, D);
    }
}

/* ======================================================================
 * WORKSPACE: every activation of both streams, the tangents of the
 * predicted stream, and the scratch of the reverse sweeps; one allocation
 * sized for (max_B, max_S), addressed through structs of pointers.
 * ====================================================================== */

typedef struct {
    ebt_real *x;    /* (N,D) layer input */
    ebt_real *rs1;  /* (N) attn rmsnorm 1/rms */
                    /* (the attn_norm and ffn_norm outputs a, f are recomputed) */
    ebt_real *qkv;  /* (N,3D) q, k after RoPE; v */
    ebt_real *P;    /* (B,H,T,So+1) attention probabilities */
    ebt_real *o;    /* (N,D) attention output, heads concatenated */
    ebt_real *h1;   /* (N,D) after the attention residual */
    ebt_real *rs2;  /* (N) */
    ebt_real *z13;  /* (N,2F); u = swiglu(z13) is recomputed where needed */
} ebt__acts;

/* the cotangent (d*) and its tangent (td*) buffers of a reverse sweep */
typedef struct {
    ebt_real *dh, *tdh;     /* (N,D) running cotangent of the residual stream */
    ebt_real *dx, *tdx;     /* (N,D) scratch: dnf, df, da */
    ebt_real *dout, *tdout; /* (N,D) cotangent of the attention output */
    ebt_real *dqkv, *tdqkv; /* (N,3D) */
    ebt_real *dz, *tdz;     /* (N,2F) */
    ebt_real *du, *tdu;     /* (N,F) */
    ebt_real *trs;          /* (N) scratch of the RMSNorm tangent-of-backward */
} ebt__rev;

struct ebt_workspace {
    const ebt_model *m;
    int max_B, max_S;
    int B, S, step, off, So, observed; /* the current observation */
    int32_t *tokens;   /* (B,S) copy */
    /* The predicted rows being evaluated: np rows (b, i), grouped by b (rows
     * of sequence b are [pgrp[b], pgrp[b+1])). All B*S after ebt_observe;
     * thinking shrinks the list to the positions still moving. */
    int np;
    int *prow_i;     /* position index i of each row */
    int *prow_lim;   /* last visible observed row, i + off */
    int *prow_pos;   /* RoPE position, i + off + 1 */
    int *pgrp;       /* (max_B+1) */
    ebt__acts *oa, *pa, *ta;  /* [L] observed, predicted, predicted tangents */
    ebt_real *o_hL, *o_rsf, *o_nf, *logits; /* observed top (transformer++) */
    ebt_real *p_hL, *p_rsf, *p_nf, *energy; /* predicted top */
    ebt_real *t_hL, *t_nf;                  /* their tangents */
    ebt_real *acc;     /* (L, B*So, 3D) cotangents of observed q,k,v from the predicted side */
    ebt__rev rp, ro;   /* reverse scratch, predicted and observed */
    int threads;       /* threads of the row-wise and attention kernels */
    size_t scr_bytes;
    void *scr;         /* attention scratch per thread: G, dS, T (So,So+1) and mu (So) */
    void *xscr;        /* thinking scratch, grown on demand (both with ebt__grow) */
    size_t xscr_bytes;
    ebt_real *mem;
    char err[EBT__ERRLEN];
};

typedef struct { ebt_real *base; size_t used; int ovf; } ebt__arena;

/* n1*n2 reals from the arena (base NULL: only counts), 64-byte aligned */
static ebt_real *ebt__take(ebt__arena *a, size_t n1, size_t n2)
{
    size_t n = ebt__mul(n1, n2, &a->ovf), pad = (64 / sizeof(ebt_real));
    ebt_real *p = a->base ? a->base + a->used : NULL;
    if (n > SIZE_MAX / 4 - a->used) { a->ovf = 1; return NULL; }
    a->used += (n + pad - 1) / pad * pad;
    return p;
}
static int *ebt__take_int(ebt__arena *a, size_t n)
{
    return (int *)(void *)ebt__take(a, n, (sizeof(int) + sizeof(ebt_real) - 1) / sizeof(ebt_real));
}

/* kv_only: the attention input half only (the last observed layer of arch
 * ebt, whose keys and values are all that is read) */
static void ebt__take_acts(ebt__arena *a, ebt__acts *A, size_t N, size_t D, size_t F, size_t Pn, int tangent, int kv_only)
{
    A->x = ebt__take(a, N, D);
    A->rs1 = tangent ? NULL : ebt__take(a, N, 1);
    A->qkv = ebt__take(a, N, 3 * D);
    if (kv_only) { A->P = A->o = A->h1 = A->rs2 = A->z13 = NULL; return; }
    A->P = ebt__take(a, Pn, 1);   /* tangents: tP, kept for the tangent of the backward */
    A->o = ebt__take(a, N, D);
    A->h1 = ebt__take(a, N, D);
    A->rs2 = tangent ? NULL : ebt__take(a, N, 1);
    A->z13 = ebt__take(a, N, 2 * F);
}

/* the activations of rows r0.. of A (the attention probabilities P are
 * addressed separately, per head) */
static ebt__acts ebt__acts_at(const ebt__acts *A, size_t r0, size_t D, size_t F)
{
    ebt__acts v = *A;
    v.x += r0 * D; v.qkv += r0 * 3 * D;
    if (v.rs1) v.rs1 += r0;
    if (v.o) { v.o += r0 * D; v.h1 += r0 * D; v.z13 += r0 * 2 * F; v.rs2 += r0; }
    return v;
}

static void ebt__take_rev(ebt__arena *a, ebt__rev *R, size_t N, size_t D, size_t F, int tangent)
{
    R->dh = ebt__take(a, N, D);
    R->dx = ebt__take(a, N, D);
    R->dout = ebt__take(a, N, D);
    R->dqkv = ebt__take(a, N, 3 * D);
    R->dz = ebt__take(a, N, 2 * F);
    R->du = ebt__take(a, N, F);
    R->tdh = tangent ? ebt__take(a, N, D) : NULL;
    R->tdx = tangent ? ebt__take(a, N, D) : NULL;
    R->tdout = tangent ? ebt__take(a, N, D) : NULL;
    R->tdqkv = tangent ? ebt__take(a, N, 3 * D) : NULL;
    R->tdz = tangent ? ebt__take(a, N, 2 * F) : NULL;
    R->tdu = tangent ? ebt__take(a, N, F) : NULL;
    R->trs = tangent ? ebt__take(a, N, 1) : NULL;
}

/* the attention scratch of one thread (sized by ebt__scr_alloc) */
typedef struct { ebt_real *G, *dS, *T, *mu; } ebt__ascr;
static size_t ebt__scr_stride(size_t So) { return (3 * So * (So + 1) + So + 15) / 16 * 16; }
static ebt__ascr ebt__scr(const ebt_workspace *ws, int tid)
{
    size_t So = (size_t)ws->max_S + (ws->m->cfg.n_step_embed > 0 ? 1 : 0), n = So * (So + 1);
    ebt__ascr r;
    r.G = (ebt_real *)ws->scr + (size_t)tid * ebt__scr_stride(So);
    r.dS = r.G + n; r.T = r.dS + n; r.mu = r.T + n;
    return r;
}
/* sizes the attention scratch for n threads */
static ebt_status ebt__scr_alloc(ebt_workspace *ws, int n)
{
    size_t So = (size_t)ws->max_S + (ws->m->cfg.n_step_embed > 0 ? 1 : 0), bytes;
    int ovf = 0;
    bytes = ebt__mul(ebt__mul(ebt__scr_stride(So), (size_t)n, &ovf), sizeof(ebt_real), &ovf);
    return !ovf && ebt__grow(&ws->scr, &ws->scr_bytes, bytes) ? EBT_OK : EBT_ERR_NOMEM;
}

/* assigns every pointer of ws from a->base (or only counts when NULL) */
static void ebt__ws_layout(ebt_workspace *ws, ebt__arena *a)
{
    const ebt_config *c = &ws->m->cfg;
    size_t L = (size_t)c->n_layers, D = (size_t)c->d_model, F = (size_t)c->d_ff, V = (size_t)c->vocab_size;
    size_t H = (size_t)c->n_heads, B = (size_t)ws->max_B, S = (size_t)ws->max_S;
    size_t So = S + (c->n_step_embed > 0 ? 1 : 0), Np = B * S, No = B * So;
    int ebt = c->arch == EBT_ARCH_EBT;
    ws->tokens = (int32_t *)(void *)ebt__take_int(a, B * S);
    for (size_t l = 0; l < L; l++)
        ebt__take_acts(a, &ws->oa[l], No, D, F, ebt__mul(B * H * So, So + 1, &a->ovf), 0, ebt && l == L - 1);
    ebt__take_rev(a, &ws->ro, No, D, F, 0);
    ws->acc = ebt__take(a, L * No, 3 * D);
    if (ebt) {
        for (size_t l = 0; l < L; l++) {
            ebt__take_acts(a, &ws->pa[l], Np, D, F, ebt__mul(H * Np, So + 1, &a->ovf), 0, 0);
            ebt__take_acts(a, &ws->ta[l], Np, D, F, ebt__mul(H * Np, So + 1, &a->ovf), 1, 0);
        }
        ebt__take_rev(a, &ws->rp, Np, D, F, 1);
        ws->p_hL = ebt__take(a, Np, D);
        ws->p_rsf = ebt__take(a, Np, 1);
        ws->p_nf = ebt__take(a, Np, D);
        ws->energy = ebt__take(a, Np, 1);
        ws->t_hL = ebt__take(a, Np, D);
        ws->t_nf = ebt__take(a, Np, D);
        ws->prow_i = ebt__take_int(a, Np);
        ws->prow_lim = ebt__take_int(a, Np);
        ws->prow_pos = ebt__take_int(a, Np);
        ws->pgrp = ebt__take_int(a, B + 1);
    } else {
        ws->o_hL = ebt__take(a, No, D);
        ws->o_rsf = ebt__take(a, No, 1);
        ws->o_nf = ebt__take(a, No, D);
        ws->logits = ebt__take(a, No, V);
    }
}

void ebt_workspace_free(ebt_workspace *ws)
{
    if (!ws) return;
    EBT_FREE(ws->mem);
    EBT_FREE(ws->scr);
    EBT_FREE(ws->xscr);
    EBT_FREE(ws->oa);
    EBT_FREE(ws->pa);
    EBT_FREE(ws->ta);
    EBT_FREE(ws);
}

ebt_status ebt_workspace_create(const ebt_model *m, int max_B, int max_S, ebt_workspace **out)
{
    ebt_workspace *ws;
    ebt__arena a = { NULL, 0, 0 };
    size_t L;
    if (!out) return EBT_ERR_ARG;
    *out = NULL;
    if (!m || max_B < 1 || max_S < 1 || max_S > m->cfg.max_seq_len) return EBT_ERR_ARG;
    if ((size_t)max_B * (size_t)(max_S + 1) > (size_t)INT32_MAX / 4) return EBT_ERR_ARG; /* rows must fit GEMM ints */
    L = (size_t)m->cfg.n_layers;
    ws = (ebt_workspace *)EBT_MALLOC(sizeof *ws);
    if (!ws) return EBT_ERR_NOMEM;
    memset(ws, 0, sizeof *ws);
    ws->m = m;
    ws->max_B = max_B;
    ws->max_S = max_S;
    ws->oa = (ebt__acts *)EBT_MALLOC(L * sizeof(ebt__acts));
    ws->pa = (ebt__acts *)EBT_MALLOC(L * sizeof(ebt__acts));
    ws->ta = (ebt__acts *)EBT_MALLOC(L * sizeof(ebt__acts));
    if (!ws->oa || !ws->pa || !ws->ta) { ebt_workspace_free(ws); return EBT_ERR_NOMEM; }
    ebt__ws_layout(ws, &a);  /* count */
    if (a.ovf || a.used > SIZE_MAX / sizeof(ebt_real) - 64) { ebt_workspace_free(ws); return EBT_ERR_NOMEM; }
    ws->mem = (ebt_real *)EBT_MALLOC(a.used * sizeof(ebt_real) + 64);
    if (!ws->mem) { ebt_workspace_free(ws); return EBT_ERR_NOMEM; }
    a.base = (ebt_real *)(((uintptr_t)ws->mem + 63) & ~(uintptr_t)63);
    a.used = 0;
    ebt__ws_layout(ws, &a);  /* assign */
    ws->threads = ebt__default_threads();
    if (ebt__scr_alloc(ws, ws->threads) != EBT_OK) { ebt_workspace_free(ws); return EBT_ERR_NOMEM; }
    *out = ws;
    return EBT_OK;
}

const char *ebt_ws_last_error(const ebt_workspace *ws) { return ws ? ws->err : "workspace is NULL"; }

ebt_status ebt_workspace_set_threads(ebt_workspace *ws, int n)
{
    if (!ws) return EBT_ERR_ARG;
    ws->err[0] = 0;
    if (n < 0 || n > 1024) { ebt__seterr(ws->err, EBT__ERRLEN, "threads must be in [0, 1024], got %d", n); return EBT_ERR_ARG; }
    if (n == 0) n = ebt__default_threads();
#ifndef _OPENMP
    n = 1;
#endif
    if (ebt__scr_alloc(ws, n) != EBT_OK) {
        ebt__seterr(ws->err, EBT__ERRLEN, "out of memory for the scratch of %d threads", n);
        return EBT_ERR_NOMEM;
    }
    ws->threads = n;
    return EBT_OK;
}

int ebt_workspace_threads(const ebt_workspace *ws) { return ws ? ws->threads : 0; }

/* attention dims of either stream (lims and nq are set per block) */
static ebt__attn_dims ebt__dims(const ebt_workspace *ws, int predicted)
{
    const ebt_config *c = &ws->m->cfg;
    ebt__attn_dims d;
    d.Dh = c->d_model / c->n_heads;
    d.nq = predicted ? ws->S : ws->So;
    d.nk = ws->So;
    d.shift = predicted ? ws->off : 0;
    d.self = predicted;
    d.lims = NULL;
    d.ld = 3 * c->d_model;
    d.ldo = c->d_model;
    d.scale = (ebt_real)(1.0 / sqrt((double)d.Dh));
    return d;
}

/* zeroes the observed-stream cotangents the predicted side accumulates */
static void ebt__zero_acc(ebt_workspace *ws)
{
    const ebt_config *c = &ws->m->cfg;
    memset(ws->acc, 0, sizeof(ebt_real) * (size_t)c->n_layers * ws->B * ws->So * 3 * c->d_model);
}

/* Sets the predicted rows to the n positions rows[k] = b*S + i (sorted
 * ascending), or to all B*S positions when rows is NULL. */
static void ebt__pred_rows(ebt_workspace *ws, const int *rows, int n)
{
    int B = ws->B, S = ws->S, b = 0;
    if (!rows) n = B * S;
    ws->np = n;
    for (int r = 0; r < n; r++) {
        int id = rows ? rows[r] : r, bi = id / S, i = id % S;
        while (b <= bi) ws->pgrp[b++] = r;
        ws->prow_i[r] = i;
        ws->prow_lim[r] = i + ws->off;
        ws->prow_pos[r] = i + ws->off + 1;
    }
    while (b <= B) ws->pgrp[b++] = n;
}

/* Which parameter gradients a reverse sweep accumulates. */
typedef enum {
    EBT__GRAD_NONE = 0,   /* none: the sweep only gives dE/dp (and H v) */
    EBT__GRAD_FIRST,      /* grads += d(sum w E)/dtheta        (the d terms) */
    EBT__GRAD_MIXED       /* grads += grad_theta(v . dE/dp)    (the td terms) */
} ebt__gradmode;

/* ======================================================================
 * BLOCK HALVES shared by both streams.
 *   attention input:  a = rmsnorm(x)*attn_norm ; qkv = a Wqkv^T ; rope(q,k)
 *   attention output + FFN:
 *     h1 = x + o Wo^T ; f = rmsnorm(h1)*ffn_norm ; z13 = f W13^T
 *     u = swiglu(z13) ; out = h1 + u W2^T
 * The residuals are the identity in every mode: the forward and tangent
 * add (GEMMs with beta = 1), the backward and its tangent pass dh through
 * and add the branch's contribution into it.
 * The reverse of each half runs the backward (d) and, when R->tdh is set,
 * the tangent of the backward (td) together. gmode selects which
 * parameter gradients are accumulated into gw (ebt__gradmode).
 * Rows: N rows; RoPE positions pos[r], or pos0 + r % T when pos is NULL.
 * ====================================================================== */

static void ebt__attn_in_fwd(const ebt_model *m, const ebt__layer_w *w, ebt__acts *A, ebt_real *a, int N, const int *pos,
                             int T, int pos0, int nt)
{
    int D = m->cfg.d_model;
    ebt__rmsnorm_fwd(a, A->rs1, A->x, w->attn_norm, N, D, (ebt_real)m->cfg.norm_eps, nt);
    ebt__lin_fwd(A->qkv, a, w->wqkv, N, D, 3 * D, 0, nt);           /* qkv = a @ Wqkv^T */
    ebt__rope_qk(m, A->qkv, N, pos, T, pos0, 0, nt);
}

static void ebt__attn_out_ffn_fwd(const ebt_model *m, const ebt__layer_w *w, ebt__acts *A, ebt_real *out, ebt_real *f,
                                  ebt_real *u, int N, int nt)
{
    int D = m->cfg.d_model, F = m->cfg.d_ff;
    memcpy(A->h1, A->x, sizeof(ebt_real) * (size_t)N * D);
    ebt__lin_fwd(A->h1, A->o, w->wo, N, D, D, 1, nt);               /* h1 = x + o @ Wo^T */
    ebt__rmsnorm_fwd(f, A->rs2, A->h1, w->ffn_norm, N, D, (ebt_real)m->cfg.norm_eps, nt);
    ebt__lin_fwd(A->z13, f, w->w13, N, D, 2 * F, 0, nt);            /* z13 = f @ W13^T */
    ebt__swiglu_fwd(u, A->z13, N, F, nt);
    memcpy(out, A->h1, sizeof(ebt_real) * (size_t)N * D);
    ebt__lin_fwd(out, u, w->w2, N, F, D, 1, nt);                    /* out = h1 + u @ W2^T */
}

/* tangents of the two halves (Tg holds tangents; A the primal activations) */
static void ebt__attn_in_tan(const ebt_model *m, const ebt__layer_w *w, ebt__acts *Tg, const ebt__acts *A, ebt_real *ta,
                             int N, const int *pos, int T, int pos0, int nt)
{
    int D = m->cfg.d_model;
    ebt__rmsnorm_tan(ta, Tg->x, A->x, A->rs1, w->attn_norm, N, D, nt);
    ebt__lin_fwd(Tg->qkv, ta, w->wqkv, N, D, 3 * D, 0, nt);         /* tqkv = ta @ Wqkv^T */
    ebt__rope_qk(m, Tg->qkv, N, pos, T, pos0, 0, nt);
}

static void ebt__attn_out_ffn_tan(const ebt_model *m, const ebt__layer_w *w, ebt__acts *Tg, const ebt__acts *A, ebt_real *tout,
                                  ebt_real *tf, ebt_real *tu, int N, int nt)
{
    int D = m->cfg.d_model, F = m->cfg.d_ff;
    memcpy(Tg->h1, Tg->x, sizeof(ebt_real) * (size_t)N * D);
    ebt__lin_fwd(Tg->h1, Tg->o, w->wo, N, D, D, 1, nt);             /* th1 = tx + to @ Wo^T */
    ebt__rmsnorm_tan(tf, Tg->h1, A->h1, A->rs2, w->ffn_norm, N, D, nt);
    ebt__lin_fwd(Tg->z13, tf, w->w13, N, D, 2 * F, 0, nt);          /* tz13 = tf @ W13^T */
    ebt__swiglu_tan(tu, Tg->z13, A->z13, N, F, nt);
    memcpy(tout, Tg->h1, sizeof(ebt_real) * (size_t)N * D);
    ebt__lin_fwd(tout, tu, w->w2, N, F, D, 1, nt);                  /* tout = th1 + tu @ W2^T */
}

/* reverse of the FFN half and the Wo projection: on entry R->dh is the
 * cotangent of the block output; on exit it is that of the block input's
 * residual path (dh1 before the attention), and R->dout that of o. */
static void ebt__attn_out_ffn_rev(const ebt_model *m, const ebt__layer_w *w, ebt__layer_w *gw, ebt__gradmode gmode,
                                  ebt__rev *R, const ebt__acts *A, const ebt__acts *Tg, int N, int nt)
{
    int D = m->cfg.d_model, F = m->cfg.d_ff, tan = R->tdh != NULL;
    /* out = h1 + u @ W2^T ; u = swiglu(z13). u and tu are not stored: the
     * SwiGLU reverse leaves them in du and tdu once dz, tdz are computed. */
    ebt__lin_bwd_x(R->du, R->dh, w->w2, N, F, D, nt);                    /* du = dh @ W2 */
    if (tan) ebt__lin_bwd_x(R->tdu, R->tdh, w->w2, N, F, D, nt);         /* tdu = tdh @ W2 */
    ebt__swiglu_rev(R->dz, tan ? R->tdz : NULL, R->du, tan ? R->tdu : NULL, A->z13, tan ? Tg->z13 : NULL,
                    N, F, gmode != EBT__GRAD_NONE, nt);
    if (gmode == EBT__GRAD_FIRST) ebt__lin_bwd_w(gw->w2, R->dh, R->du, N, F, D, nt);   /* dW2 += dh^T u */
    if (gmode == EBT__GRAD_MIXED) {
        ebt__lin_bwd_w(gw->w2, R->tdh, R->du, N, F, D, nt);              /* tdW2 += tdh^T u */
        ebt__lin_bwd_w(gw->w2, R->dh, R->tdu, N, F, D, nt);              /*       + dh^T tu */
    }
    /* z13 = f @ W13^T */
    ebt__lin_bwd_x(R->dx, R->dz, w->w13, N, D, 2 * F, nt);               /* df = dz @ W13 */
    /* f and tf are not stored: recomputed into dout and tdout (free until
     * the Wo backward below) */
    if (gmode != EBT__GRAD_NONE) ebt__rmsnorm_apply(R->dout, A->h1, A->rs2, w->ffn_norm, N, D, nt);
    if (gmode == EBT__GRAD_FIRST) ebt__lin_bwd_w(gw->w13, R->dz, R->dout, N, D, 2 * F, nt);
    if (tan) {
        ebt__lin_bwd_x(R->tdx, R->tdz, w->w13, N, D, 2 * F, nt);         /* tdf = tdz @ W13 */
        if (gmode == EBT__GRAD_MIXED) {
            ebt__rmsnorm_tan(R->tdout, Tg->h1, A->h1, A->rs2, w->ffn_norm, N, D, nt);
            ebt__lin_bwd_w(gw->w13, R->tdz, R->dout, N, D, 2 * F, nt);
            ebt__lin_bwd_w(gw->w13, R->dz, R->tdout, N, D, 2 * F, nt);
        }
    }
    /* f = rmsnorm(h1) * ffn_norm ; residual: dh1 = dh + (this) */
    ebt__rmsnorm_bwd(R->dh, gmode == EBT__GRAD_FIRST ? gw->ffn_norm : NULL, R->dx, A->h1, A->rs2, w->ffn_norm, N, D, nt);
    if (tan) ebt__rmsnorm_tbwd(R->tdh, gmode == EBT__GRAD_MIXED ? gw->ffn_norm : NULL, R->tdx, R->dx, Tg->h1, A->h1, A->rs2, w->ffn_norm, R->trs, N, D, nt);
    /* h1 = x + o @ Wo^T */
    ebt__lin_bwd_x(R->dout, R->dh, w->wo, N, D, D, nt);                  /* do = dh1 @ Wo */
    if (gmode == EBT__GRAD_FIRST) ebt__lin_bwd_w(gw->wo, R->dh, A->o, N, D, D, nt);
    if (tan) {
        ebt__lin_bwd_x(R->tdout, R->tdh, w->wo, N, D, D, nt);            /* tdo = tdh1 @ Wo */
        if (gmode == EBT__GRAD_MIXED) {
            ebt__lin_bwd_w(gw->wo, R->tdh, A->o, N, D, D, nt);
            ebt__lin_bwd_w(gw->wo, R->dh, Tg->o, N, D, D, nt);
        }
    }
}

/* reverse of the attention input half: from dqkv (and tdqkv), post-RoPE;
 * adds into R->dh (and R->tdh) the cotangent of the layer input. dqkv is
 * rotated back in place. */
static void ebt__attn_in_rev(const ebt_model *m, const ebt__layer_w *w, ebt__layer_w *gw, ebt__gradmode gmode,
                             ebt__rev *R, ebt_real *dqkv, ebt_real *tdqkv,
                             const ebt__acts *A, const ebt__acts *Tg, int N, const int *pos, int T, int pos0, int nt)
{
    int D = m->cfg.d_model;
    ebt__rope_qk(m, dqkv, N, pos, T, pos0, 1, nt);
    ebt__lin_bwd_x(R->dx, dqkv, w->wqkv, N, D, 3 * D, nt);               /* da = dqkv @ Wqkv */
    /* a and ta are not stored: recomputed into dout and tdout (free after
     * the attention backward) */
    if (gmode != EBT__GRAD_NONE) ebt__rmsnorm_apply(R->dout, A->x, A->rs1, w->attn_norm, N, D, nt);
    if (gmode == EBT__GRAD_FIRST) ebt__lin_bwd_w(gw->wqkv, dqkv, R->dout, N, D, 3 * D, nt);
    if (tdqkv) {
        ebt__rope_qk(m, tdqkv, N, pos, T, pos0, 1, nt);
        ebt__lin_bwd_x(R->tdx, tdqkv, w->wqkv, N, D, 3 * D, nt);         /* tda = tdqkv @ Wqkv */
        if (gmode == EBT__GRAD_MIXED) {
            ebt__rmsnorm_tan(R->tdout, Tg->x, A->x, A->rs1, w->attn_norm, N, D, nt);
            ebt__lin_bwd_w(gw->wqkv, tdqkv, R->dout, N, D, 3 * D, nt);
            ebt__lin_bwd_w(gw->wqkv, dqkv, R->tdout, N, D, 3 * D, nt);
        }
    }
    ebt__rmsnorm_bwd(R->dh, gmode == EBT__GRAD_FIRST ? gw->attn_norm : NULL, R->dx, A->x, A->rs1, w->attn_norm, N, D, nt);
    if (tdqkv) ebt__rmsnorm_tbwd(R->tdh, gmode == EBT__GRAD_MIXED ? gw->attn_norm : NULL, R->tdx, R->dx, Tg->x, A->x, A->rs1, w->attn_norm, R->trs, N, D, nt);
}

/* ======================================================================
 * OBSERVED STREAM: tokens (and the step token) through the layers, causal.
 * Independent of p: computed once per (tokens, step) by ebt_observe and
 * reused for every candidate p. For arch ebt the last layer's attention
 * output and FFN are never used (only its keys and values are), so they
 * are skipped. With j0 > 0 (one sequence, B == 1) only rows j0..So-1 are
 * computed, attending to the cached keys and values of rows 0..j0-1: the
 * KV cache of generation.
 * ====================================================================== */

static int ebt__step_row(const ebt_workspace *ws)
{
    int n = ws->m->cfg.n_step_embed;
    return ws->step < n - 1 ? ws->step : n - 1;
}

static void ebt__obs_forward(ebt_workspace *ws, int j0)
{
    const ebt_model *m = ws->m;
    const ebt_config *c = &m->cfg;
    int B = ws->B, So = ws->So, D = c->d_model, F = c->d_ff, H = c->n_heads, L = c->n_layers;
    int N = j0 > 0 ? So - j0 : B * So;   /* rows computed (j0 > 0 needs B == 1) */
    int nt = ebt__nt(ws->threads);
    ebt__attn_dims d = ebt__dims(ws, 0);
    d.nq = j0 > 0 ? N : So;
    d.shift = j0;
    for (int b = 0; b < B; b++) {
        ebt_real *row = ws->oa[0].x + (size_t)b * So * D;
        int first = j0;
        if (ws->off && j0 == 0) {
            memcpy(row, m->w.step + (size_t)ebt__step_row(ws) * D, sizeof(ebt_real) * D);
            first = 1;
        }
        ebt__tokemb_fwd(row + (size_t)first * D, ws->tokens + (size_t)b * ws->S + (first - ws->off), m->w.tok,
                        So - first, D);
    }
    for (int l = 0; l < L; l++) {
        const ebt__layer_w *w = &m->w.layer[l];
        ebt__acts A = ebt__acts_at(&ws->oa[l], (size_t)j0, (size_t)D, (size_t)F);
        int last = l == L - 1;
        ebt__attn_in_fwd(m, w, &A, ws->ro.dout, N, NULL, j0 > 0 ? N : So, j0, nt);
        if (last && c->arch == EBT_ARCH_EBT) break;
        EBT__FOR_BLOCKS(nt, (size_t)B * H * N * So, int bh = 0, bh < B * H, bh++, {
            int b = bh / H, h = bh % H;
            const ebt_real *k = ws->oa[l].qkv + (size_t)b * So * 3 * D + D + (size_t)h * d.Dh;
            ebt__attn_fwd(A.o + (size_t)b * So * D + (size_t)h * d.Dh,
                          ws->oa[l].P + ((size_t)(b * H + h) * So + j0) * (So + 1),
                          A.qkv + (size_t)b * So * 3 * D + (size_t)h * d.Dh, k, k + D, NULL, NULL, &d);
        });
        ebt__attn_out_ffn_fwd(m, w, &A, (last ? ws->o_hL : ws->oa[l + 1].x) + (size_t)j0 * D, ws->ro.dout, ws->ro.du, N, nt);
    }
}

/* Backward of the observed stream from ws->acc (the cotangents of each
 * layer's post-RoPE q,k,v, filled by the predicted side) and, for
 * transformer++, dh_top (cotangent of the last layer's output). The stream
 * has no tangent (it does not depend on p), so the same routine serves the
 * mixed term when acc holds tangents of cotangents. Adds into gm's grads. */
static void ebt__obs_backward(ebt_workspace *ws, ebt_model *gm, const ebt_real *dh_top)
{
    const ebt_model *m = ws->m;
    const ebt_config *c = &m->cfg;
    int B = ws->B, So = ws->So, D = c->d_model, H = c->n_heads, L = c->n_layers, N = B * So, nt = ebt__nt(ws->threads);
    ebt__attn_dims d = ebt__dims(ws, 0);
    ebt__rev *R = &ws->ro;
    if (dh_top) memcpy(R->dh, dh_top, sizeof(ebt_real) * (size_t)N * D);
    else memset(R->dh, 0, sizeof(ebt_real) * (size_t)N * D);
    for (int l = L - 1; l >= 0; l--) {
        const ebt__layer_w *w = &m->w.layer[l];
        ebt__layer_w *gw = &gm->g.layer[l];
        const ebt__acts *A = &ws->oa[l];
        ebt_real *dqkv = ws->acc + (size_t)l * N * 3 * D;
        if (!(l == L - 1 && c->arch == EBT_ARCH_EBT)) {
            ebt__attn_out_ffn_rev(m, w, gw, EBT__GRAD_FIRST, R, A, NULL, N, nt);
            EBT__FOR_BLOCKS(nt, (size_t)B * H * So * So, int bh = 0, bh < B * H, bh++, {
                int b = bh / H, h = bh % H;
                size_t qo = (size_t)b * So * 3 * D + (size_t)h * d.Dh;
                const ebt_real *q = A->qkv + qo;
                ebt__ascr sc = ebt__scr(ws, ebt__tid());
                ebt__attn_bwd(dqkv + qo, dqkv + qo + D, dqkv + qo + 2 * D, NULL, NULL, sc.G, sc.dS, sc.mu,
                              R->dout + (size_t)b * So * D + (size_t)h * d.Dh,
                              A->P + (size_t)(b * H + h) * So * (So + 1), q, q + D, q + 2 * D, NULL, NULL, &d);
            });
        }
        ebt__attn_in_rev(m, w, gw, EBT__GRAD_FIRST, R, dqkv, NULL, A, NULL, N, NULL, So, 0, nt);
    }
    for (int b = 0; b < B; b++) {
        const ebt_real *row = R->dh + (size_t)b * So * D;
        if (ws->off) {
            ebt__axpy(gm->g.step + (size_t)ebt__step_row(ws) * D, 1, row, D);
            row += D;
        }
        ebt__tokemb_bwd(gm->g.tok, row, ws->tokens + (size_t)b * ws->S, ws->S, D);
    }
}

/* ======================================================================
 * PREDICTED STREAM: candidate embeddings p @ pred_embed through the same
 * layers; row (b, i) attends to observed rows 0..i+off of sequence b and
 * to itself. Only the ws->np rows set by ebt__pred_rows are computed;
 * probs, v and every output hold those rows in that order. Forward,
 * tangent along v (forward mode), and one reverse sweep that produces
 * dE/dp, H_pp v and the parameter gradients (first order or mixed).
 * ====================================================================== */

/* the attention block of sequence b, head h, at layer l: dims and offsets */
typedef struct { ebt__attn_dims d; size_t q, k, o, P; } ebt__pblock;

static ebt__pblock ebt__pred_block(const ebt_workspace *ws, int b, int h)
{
    const ebt_config *c = &ws->m->cfg;
    int D = c->d_model, g0 = ws->pgrp[b];
    ebt__pblock pb;
    pb.d = ebt__dims(ws, 1);
    pb.d.nq = ws->pgrp[b + 1] - g0;
    pb.d.lims = ws->prow_lim + g0;
    pb.q = (size_t)g0 * 3 * D + (size_t)h * pb.d.Dh;
    pb.k = (size_t)b * ws->So * 3 * D + D + (size_t)h * pb.d.Dh;
    pb.o = (size_t)g0 * D + (size_t)h * pb.d.Dh;
    pb.P = ((size_t)h * ws->np + g0) * (ws->So + 1);
    return pb;
}

static void ebt__pred_forward(ebt_workspace *ws, const ebt_real *probs)
{
    const ebt_model *m = ws->m;
    const ebt_config *c = &m->cfg;
    int D = c->d_model, H = c->n_heads, L = c->n_layers, N = ws->np, nt = ebt__nt(ws->threads);
    ebt__pemb_fwd(ws->pa[0].x, probs, m->w.pred, N, c->vocab_size, D, nt);
    for (int l = 0; l < L; l++) {
        const ebt__layer_w *w = &m->w.layer[l];
        ebt__acts *A = &ws->pa[l];
        const ebt__acts *O = &ws->oa[l];
        ebt__attn_in_fwd(m, w, A, ws->rp.dout, N, ws->prow_pos, 1, 0, nt);
        EBT__FOR_BLOCKS(nt, (size_t)H * N * ws->So, int bh = 0, bh < ws->B * H, bh++, {
            ebt__pblock pb = ebt__pred_block(ws, bh / H, bh % H);
            const ebt_real *q = A->qkv + pb.q, *k = O->qkv + pb.k;
            if (pb.d.nq == 0) continue;
            ebt__attn_fwd(A->o + pb.o, A->P + pb.P, q, k, k + D, q + D, q + 2 * D, &pb.d);
        });
        ebt__attn_out_ffn_fwd(m, w, A, l + 1 < L ? ws->pa[l + 1].x : ws->p_hL, ws->rp.dout, ws->rp.du, N, nt);
    }
    ebt__rmsnorm_fwd(ws->p_nf, ws->p_rsf, ws->p_hL, m->w.final_norm, N, D, (ebt_real)c->norm_eps, nt);
    ebt__ehead_fwd(ws->energy, ws->p_nf, m->w.ehead, N, D);
}

static void ebt__pred_tangent(ebt_workspace *ws, const ebt_real *v)
{
    const ebt_model *m = ws->m;
    const ebt_config *c = &m->cfg;
    int D = c->d_model, H = c->n_heads, L = c->n_layers, N = ws->np, nt = ebt__nt(ws->threads);
    ebt__pemb_fwd(ws->ta[0].x, v, m->w.pred, N, c->vocab_size, D, nt);  /* th0 = v @ Wpe */
    for (int l = 0; l < L; l++) {
        const ebt__layer_w *w = &m->w.layer[l];
        const ebt__acts *A = &ws->pa[l], *O = &ws->oa[l];
        ebt__acts *Tg = &ws->ta[l];
        ebt__attn_in_tan(m, w, Tg, A, ws->rp.tdout, N, ws->prow_pos, 1, 0, nt);
        EBT__FOR_BLOCKS(nt, (size_t)H * N * ws->So, int bh = 0, bh < ws->B * H, bh++, {
            ebt__pblock pb = ebt__pred_block(ws, bh / H, bh % H);
            const ebt_real *q = A->qkv + pb.q, *tq = Tg->qkv + pb.q, *k = O->qkv + pb.k;
            if (pb.d.nq == 0) continue;
            ebt__attn_tan(Tg->o + pb.o, Tg->P + pb.P, tq, tq + D, tq + 2 * D,
                          A->P + pb.P, q, k, k + D, q + D, q + 2 * D, &pb.d);
        });
        ebt__attn_out_ffn_tan(m, w, Tg, A, l + 1 < L ? ws->ta[l + 1].x : ws->t_hL, ws->rp.tdout, ws->rp.tdu, N, nt);
    }
    ebt__rmsnorm_tan(ws->t_nf, ws->t_hL, ws->p_hL, ws->p_rsf, m->w.final_norm, N, D, nt);
}

/* What one reverse sweep of the predicted stream computes (every output
 * optional): dp = d(sum w E)/dp; with tangent (after ebt__pred_tangent
 * along v), hv = H_pp v; with gm, parameter gradients into gm's grads by
 * grad (the predicted-side terms; the observed-side cotangents are added
 * into ws->acc for ebt__obs_backward). */
typedef struct {
    ebt_model *gm;            /* receives parameter gradients, or NULL */
    ebt__gradmode grad;       /* which ones (NONE without gm) */
    int tangent;              /* 1: also the tangent of the sweep (needs ebt__pred_tangent) */
    const ebt_real *weight;   /* (np) seeds of the energies; NULL: ones */
    const ebt_real *probs;    /* (np,V) the candidates of the forward */
    const ebt_real *v;        /* (np,V) the tangent direction (tangent only) */
    ebt_real *dp, *hv;        /* (np,V) outputs, or NULL */
} ebt__rev_args;

static void ebt__pred_reverse(ebt_workspace *ws, const ebt__rev_args *ra)
{
    const ebt_model *m = ws->m;
    const ebt_config *c = &m->cfg;
    int D = c->d_model, H = c->n_heads, L = c->n_layers, N = ws->np, nt = ebt__nt(ws->threads);
    ebt__rev R = ws->rp;
    ebt__weights *g = ra->gm ? &ra->gm->g : NULL;
    ebt__gradmode gmode = g ? ra->grad : EBT__GRAD_NONE;
    int tangent = ra->tangent;
    const ebt_real *weight = ra->weight, *probs = ra->probs, *v = ra->v;
    if (!tangent) R.tdh = NULL;
    /* E = rmsnorm(hL) * final_norm . we */
    ebt__ehead_bwd(R.dx, gmode == EBT__GRAD_FIRST ? g->ehead : NULL, weight, ws->p_nf, m->w.ehead, N, D);
    if (gmode == EBT__GRAD_MIXED) ebt__ehead_bwd(NULL, g->ehead, weight, ws->t_nf, m->w.ehead, N, D); /* tdwe += dE tnf */
    memset(R.dh, 0, sizeof(ebt_real) * (size_t)N * D);
    ebt__rmsnorm_bwd(R.dh, gmode == EBT__GRAD_FIRST ? g->final_norm : NULL, R.dx, ws->p_hL, ws->p_rsf, m->w.final_norm, N, D, nt);
    if (tangent) {
        memset(R.tdh, 0, sizeof(ebt_real) * (size_t)N * D);
        ebt__rmsnorm_tbwd(R.tdh, gmode == EBT__GRAD_MIXED ? g->final_norm : NULL, NULL, R.dx, ws->t_hL, ws->p_hL,
                          ws->p_rsf, m->w.final_norm, R.trs, N, D, nt);
    }
    for (int l = L - 1; l >= 0; l--) {
        const ebt__layer_w *w = &m->w.layer[l];
        ebt__layer_w *gw = g ? &g->layer[l] : NULL;
        const ebt__acts *A = &ws->pa[l], *O = &ws->oa[l], *Tg = tangent ? &ws->ta[l] : NULL;
        ebt_real *acc = ws->acc + (size_t)l * ws->B * ws->So * 3 * D;
        ebt__attn_out_ffn_rev(m, w, gw, gmode, &R, A, Tg, N, nt);
        memset(R.dqkv, 0, sizeof(ebt_real) * (size_t)N * 3 * D);
        if (tangent) memset(R.tdqkv, 0, sizeof(ebt_real) * (size_t)N * 3 * D);
        EBT__FOR_BLOCKS(nt, (size_t)H * N * ws->So, int bh = 0, bh < ws->B * H, bh++, {
            ebt__pblock pb = ebt__pred_block(ws, bh / H, bh % H);
            const ebt_real *q = A->qkv + pb.q, *k = O->qkv + pb.k;
            ebt_real *dq = R.dqkv + pb.q;
            ebt__ascr sc;
            if (pb.d.nq == 0) continue;
            sc = ebt__scr(ws, ebt__tid());
            ebt__attn_bwd(dq, gmode == EBT__GRAD_FIRST ? acc + pb.k : NULL, gmode == EBT__GRAD_FIRST ? acc + pb.k + D : NULL, dq + D, dq + 2 * D,
                          sc.G, sc.dS, sc.mu, R.dout + pb.o, A->P + pb.P, q, k, k + D, q + D, q + 2 * D, &pb.d);
            if (tangent) {
                const ebt_real *tq = Tg->qkv + pb.q;
                ebt_real *tdq = R.tdqkv + pb.q;
                ebt__attn_tbwd(tdq, gmode == EBT__GRAD_MIXED ? acc + pb.k : NULL, gmode == EBT__GRAD_MIXED ? acc + pb.k + D : NULL, tdq + D, tdq + 2 * D,
                               sc.T, sc.G, sc.dS, sc.mu, R.tdout + pb.o, R.dout + pb.o, Tg->P + pb.P, tq, tq + D, tq + 2 * D,
                               A->P + pb.P, q, k, k + D, q + D, q + 2 * D, &pb.d);
            }
        });
        ebt__attn_in_rev(m, w, gw, gmode, &R, R.dqkv, tangent ? R.tdqkv : NULL, A, Tg, N, ws->prow_pos, 1, 0, nt);
    }
    /* h0 = p @ Wpe */
    ebt__pemb_bwd(ra->dp, gmode == EBT__GRAD_FIRST ? g->pred : NULL, R.dh, probs, m->w.pred, N, c->vocab_size, D, nt);
    if (tangent) ebt__pemb_tbwd(ra->hv, gmode == EBT__GRAD_MIXED ? g->pred : NULL, R.tdh, R.dh, probs, v, m->w.pred, N, c->vocab_size, D, nt);
}

/* dp = dE/dp of the forward at probs (no parameter gradients) */
static void ebt__pred_dEdp(ebt_workspace *ws, const ebt_real *probs, ebt_real *dp)
{
    ebt__rev_args ra = { NULL, EBT__GRAD_NONE, 0, NULL, probs, NULL, dp, NULL };
    ebt__pred_reverse(ws, &ra);
}

/* ======================================================================
 * PUBLIC ENERGY API
 * ====================================================================== */

/* every id of ids[n] in [0, V), or EBT_ERR_TOKEN naming the first that is not */
static ebt_status ebt__check_ids(const int32_t *ids, size_t n, int V, const char *what, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            ebt__seterr(err, errlen, "%s %d at index %zu outside [0, %d)", what, (int)ids[i], i, V);
            return EBT_ERR_TOKEN;
        }
    return EBT_OK;
}

/* validates tokens[B*S] and sizes for model m */
static ebt_status ebt__check_seq(const ebt_model *m, const int32_t *tokens, int B, int S, int step,
                                 char *err, size_t errlen)
{
    const ebt_config *c = &m->cfg;
    int ovf = 0;
    if (!tokens) { ebt__seterr(err, errlen, "tokens is NULL"); return EBT_ERR_ARG; }
    if (B < 1 || S < 1) { ebt__seterr(err, errlen, "B=%d S=%d: both must be >= 1", B, S); return EBT_ERR_ARG; }
    if (S > c->max_seq_len) { ebt__seterr(err, errlen, "S=%d exceeds max_seq_len %d", S, c->max_seq_len); return EBT_ERR_ARG; }
    if (step < 0) { ebt__seterr(err, errlen, "step %d is negative", step); return EBT_ERR_ARG; }
    if ((size_t)B * (size_t)(S + 1) > (size_t)INT32_MAX / 4 ||
        ebt__mul((size_t)B * (size_t)(S + 1), (size_t)c->vocab_size * 4 * sizeof(ebt_real), &ovf) > (SIZE_MAX >> 2) || ovf) {
        ebt__seterr(err, errlen, "B=%d S=%d too large", B, S);
        return EBT_ERR_ARG;
    }
    return ebt__check_ids(tokens, (size_t)B * S, c->vocab_size, "token", err, errlen);
}

/* an array of the current B*S*V (or B*S) reals given by the caller */
static ebt_status ebt__check_vec(const ebt_real *x, size_t n, const char *what, int need, char *err, size_t errlen)
{
    if (!x) {
        if (!need) return EBT_OK;
        ebt__seterr(err, errlen, "%s is NULL", what);
        return EBT_ERR_ARG;
    }
    if (!ebt__all_finite(x, n)) { ebt__seterr(err, errlen, "%s contains NaN or Inf", what); return EBT_ERR_NONFINITE; }
    return EBT_OK;
}

/* observes checked tokens (either arch): the observed stream, all rows */
static void ebt__observe(ebt_workspace *ws, const int32_t *tokens, int B, int S, int step)
{
    ws->B = B;
    ws->S = S;
    ws->step = step;
    ws->off = ws->m->cfg.n_step_embed > 0 ? 1 : 0;
    ws->So = S + ws->off;
    if (tokens != ws->tokens) memcpy(ws->tokens, tokens, sizeof(int32_t) * (size_t)B * S);
    ebt__obs_forward(ws, 0);
    if (ws->m->cfg.arch == EBT_ARCH_EBT) ebt__pred_rows(ws, NULL, 0);
    ws->observed = 1;
}

ebt_status ebt_observe(ebt_workspace *ws, const ebt_model *m, const int32_t *tokens, int B, int S, int step)
{
    ebt_status st;
    if (!ws) return EBT_ERR_ARG;
    ws->err[0] = 0;
    if (!m || m != ws->m) { ebt__seterr(ws->err, EBT__ERRLEN, "workspace was created for another model"); return m ? EBT_ERR_STATE : EBT_ERR_ARG; }
    if (m->cfg.arch != EBT_ARCH_EBT) { ebt__seterr(ws->err, EBT__ERRLEN, "energy calls need arch ebt"); return EBT_ERR_UNSUPPORTED; }
    ws->observed = 0;
    if (B > ws->max_B || S > ws->max_S) {
        ebt__seterr(ws->err, EBT__ERRLEN, "B=%d S=%d exceed the workspace's %d x %d", B, S, ws->max_B, ws->max_S);
        return EBT_ERR_ARG;
    }
    st = ebt__check_seq(m, tokens, B, S, step, ws->err, EBT__ERRLEN);
    if (st != EBT_OK) return st;
    ebt__observe(ws, tokens, B, S, step);
    return EBT_OK;
}

static ebt_status ebt__ws_ready(ebt_workspace *ws)
{
    if (!ws) return EBT_ERR_ARG;
    ws->err[0] = 0;
    if (ws->m->cfg.arch != EBT_ARCH_EBT) { ebt__seterr(ws->err, EBT__ERRLEN, "energy calls need arch ebt"); return EBT_ERR_UNSUPPORTED; }
    if (!ws->observed) { ebt__seterr(ws->err, EBT__ERRLEN, "call ebt_observe first"); return EBT_ERR_STATE; }
    ebt__pred_rows(ws, NULL, 0);
    return EBT_OK;
}

ebt_status ebt_ws_energy(ebt_workspace *ws, const ebt_real *probs, ebt_real *energy, ebt_real *grad_probs)
{
    ebt_status st = ebt__ws_ready(ws);
    size_t n;
    if (st != EBT_OK) return st;
    n = (size_t)ws->B * ws->S * ws->m->cfg.vocab_size;
    if ((st = ebt__check_vec(probs, n, "probs", 1, ws->err, EBT__ERRLEN)) != EBT_OK) return st;
    ebt__pred_forward(ws, probs);
    if (energy) memcpy(energy, ws->energy, sizeof(ebt_real) * (size_t)ws->B * ws->S);
    if (grad_probs) ebt__pred_dEdp(ws, probs, grad_probs);
    return EBT_OK;
}

ebt_status ebt_ws_hvp(ebt_workspace *ws, const ebt_real *probs, const ebt_real *v, ebt_real *hv,
                      ebt_real *energy, ebt_real *grad_probs)
{
    ebt_status st = ebt__ws_ready(ws);
    size_t n;
    if (st != EBT_OK) return st;
    n = (size_t)ws->B * ws->S * ws->m->cfg.vocab_size;
    if (!hv) { ebt__seterr(ws->err, EBT__ERRLEN, "hv is NULL"); return EBT_ERR_ARG; }
    if ((st = ebt__check_vec(probs, n, "probs", 1, ws->err, EBT__ERRLEN)) != EBT_OK) return st;
    if ((st = ebt__check_vec(v, n, "v", 1, ws->err, EBT__ERRLEN)) != EBT_OK) return st;
    ebt__pred_forward(ws, probs);
    ebt__pred_tangent(ws, v);
    if (energy) memcpy(energy, ws->energy, sizeof(ebt_real) * (size_t)ws->B * ws->S);
    {
        ebt__rev_args ra = { NULL, EBT__GRAD_NONE, 1, NULL, probs, v, grad_probs, hv };
        ebt__pred_reverse(ws, &ra);
    }
    return EBT_OK;
}

/* the model's own workspace, large enough for B x S (grown if needed) */
static ebt_status ebt__model_ws(ebt_model *m, int B, int S)
{
    ebt_workspace *ws;
    ebt_status st;
    if (m->ws && m->ws->max_B >= B && m->ws->max_S >= S) return EBT_OK;
    if (m->ws) { B = B > m->ws->max_B ? B : m->ws->max_B; S = S > m->ws->max_S ? S : m->ws->max_S; }
    st = ebt_workspace_create(m, B, S, &ws);
    if (st != EBT_OK) { ebt__seterr(m->err, EBT__ERRLEN, "cannot allocate a workspace for B=%d S=%d", B, S); return st; }
    if ((st = ebt_workspace_set_threads(ws, m->threads)) != EBT_OK) {
        ebt__seterr(m->err, EBT__ERRLEN, "%s", ws->err);
        ebt_workspace_free(ws);
        return st;
    }
    ebt_workspace_free(m->ws);
    m->ws = ws;
    return EBT_OK;
}

ebt_status ebt_set_threads(ebt_model *m, int n)
{
    ebt_status st;
    if (!m) return EBT_ERR_ARG;
    m->err[0] = 0;
    if (n < 0 || n > 1024) { ebt__seterr(m->err, EBT__ERRLEN, "threads must be in [0, 1024], got %d", n); return EBT_ERR_ARG; }
    if (m->ws && (st = ebt_workspace_set_threads(m->ws, n)) != EBT_OK) {
        ebt__seterr(m->err, EBT__ERRLEN, "%s", m->ws->err);
        return st;
    }
    m->threads = n;
    return EBT_OK;
}

/* common entry of the model-workspace energy calls: checks, then observes */
static ebt_status ebt__model_begin(ebt_model *m, const int32_t *tokens, const ebt_real *probs, const ebt_real *v,
                                   int need_v, int B, int S, int step)
{
    ebt_status st;
    size_t n;
    if (!m) return EBT_ERR_ARG;
    m->err[0] = 0;
    if (m->cfg.arch != EBT_ARCH_EBT) { ebt__seterr(m->err, EBT__ERRLEN, "energy calls need arch ebt"); return EBT_ERR_UNSUPPORTED; }
    if ((st = ebt__check_seq(m, tokens, B, S, step, m->err, EBT__ERRLEN)) != EBT_OK) return st;
    n = (size_t)B * S * m->cfg.vocab_size;
    if ((st = ebt__check_vec(probs, n, "probs", 1, m->err, EBT__ERRLEN)) != EBT_OK) return st;
    if ((st = ebt__check_vec(v, n, "v", need_v, m->err, EBT__ERRLEN)) != EBT_OK) return st;
    if ((st = ebt__model_ws(m, B, S)) != EBT_OK) return st;
    st = ebt_observe(m->ws, m, tokens, B, S, step);
    if (st != EBT_OK) snprintf(m->err, EBT__ERRLEN, "%s", m->ws->err);
    return st;
}

ebt_status ebt_energy(ebt_model *m, const int32_t *tokens, const ebt_real *probs,
                      int B, int S, int step, ebt_real *energy, ebt_real *grad_probs)
{
    ebt_status st = ebt__model_begin(m, tokens, probs, NULL, 0, B, S, step);
    if (st != EBT_OK) return st;
    if (!energy && !grad_probs) return EBT_OK;
    return ebt_ws_energy(m->ws, probs, energy, grad_probs);
}

ebt_status ebt_hvp(ebt_model *m, const int32_t *tokens, const ebt_real *probs,
                   int B, int S, int step, const ebt_real *v, ebt_real *hv)
{
    ebt_status st;
    if (m && !hv) { ebt__seterr(m->err, EBT__ERRLEN, "hv is NULL"); return EBT_ERR_ARG; }
    st = ebt__model_begin(m, tokens, probs, v, 1, B, S, step);
    if (st != EBT_OK) return st;
    return ebt_ws_hvp(m->ws, probs, v, hv, NULL, NULL);
}

ebt_status ebt_energy_backward(ebt_model *m, const int32_t *tokens, const ebt_real *probs,
                               int B, int S, int step, const ebt_real *weight, ebt_real *energy)
{
    ebt_status st = ebt__model_begin(m, tokens, probs, NULL, 0, B, S, step);
    ebt_workspace *ws;
    if (st != EBT_OK) return st;
    if ((st = ebt__check_vec(weight, (size_t)B * S, "weight", 0, m->err, EBT__ERRLEN)) != EBT_OK) return st;
    ws = m->ws;
    ebt__pred_forward(ws, probs);
    if (energy) memcpy(energy, ws->energy, sizeof(ebt_real) * (size_t)B * S);
    ebt__zero_acc(ws);
    {
        ebt__rev_args ra = { m, EBT__GRAD_FIRST, 0, weight, probs, NULL, NULL, NULL };
        ebt__pred_reverse(ws, &ra);
    }
    ebt__obs_backward(ws, m, NULL);
    return EBT_OK;
}

ebt_status ebt_mixed_backward(ebt_model *m, const int32_t *tokens, const ebt_real *probs,
                              int B, int S, int step, const ebt_real *v, ebt_real *hv, ebt_real *grad_probs)
{
    ebt_status st = ebt__model_begin(m, tokens, probs, v, 1, B, S, step);
    ebt_workspace *ws;
    if (st != EBT_OK) return st;
    ws = m->ws;
    ebt__pred_forward(ws, probs);
    ebt__pred_tangent(ws, v);
    ebt__zero_acc(ws);
    {
        ebt__rev_args ra = { m, EBT__GRAD_MIXED, 1, NULL, probs, v, grad_probs, hv };
        ebt__pred_reverse(ws, &ra);
    }
    ebt__obs_backward(ws, m, NULL);
    return EBT_OK;
}

/* ======================================================================
 * THINKING (docs/model.md section 5): gradient descent on E w.r.t. p, per
 * position, with stopping rules, Langevin noise and several starts. Only
 * the rows still moving are evaluated (ebt__pred_rows); the observed stream
 * is computed once (once per step index for step-token models).
 * ====================================================================== */

ebt_think_opts ebt_think_default(void)
{
    ebt_think_opts o;
    memset(&o, 0, sizeof o);
    o.steps = 4;
    o.step_size = 0;
    o.alpha_rand = 1;
    o.noise = 0;
    o.init_scale = 1;
    o.energy_threshold = -INFINITY;
    o.tol = -1;
    o.restarts = 1;
    o.seed = 0x5eed;
    o.rel_drop = -INFINITY;
    o.grad_tol = -1;
    return o;
}

/* row-wise softmax of y(N,V) into p */
EBT__SIMD static void ebt__softmax_rows(ebt_real *p, const ebt_real *y, size_t N, int V, int nt)
{
    EBT__FOR_ROWS(nt, N * (size_t)V, size_t n = 0, n < N, n++, {
        const ebt_real *yr = y + n * V;
        ebt_real *pr = p + n * V, mx = ebt__max(yr, V), s;
        if (pr != yr) memcpy(pr, yr, sizeof(ebt_real) * V);
        s = ebt__exp_sum(pr, V, mx);
        for (int j = 0; j < V; j++) pr[j] /= s;
    });
}

static double ebt__alpha_eff(const ebt_model *m) { double a = m->w.alpha[0]; return a > 1e-4 ? a : 1e-4; }

/* an independent RNG stream for (seed, a, b) */
static void ebt__rng_stream(ebt__rng *r, uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t s = seed;
    s ^= ebt__splitmix(&a) + 0x632be59bd9b4e019ULL * (b + 1);
    ebt__rng_seed(r, s);
}

static ebt_status ebt__check_think_opts(const ebt_think_opts *o, char *err)
{
#define EBT__BAD(...) do { ebt__seterr(err, EBT__ERRLEN, __VA_ARGS__); return EBT_ERR_ARG; } while (0)
    if (o->steps < 0 || o->steps > 100000) EBT__BAD("think steps %d out of range [0, 100000]", o->steps);
    if (o->restarts < 1 || o->restarts > 100000) EBT__BAD("restarts %d out of range [1, 100000]", o->restarts);
    if (!isfinite(o->step_size)) EBT__BAD("step_size must be finite");
    if (!isfinite(o->alpha_rand) || o->alpha_rand < 1) EBT__BAD("alpha_rand must be finite and >= 1");
    if (!isfinite(o->noise) || o->noise < 0) EBT__BAD("noise must be finite and >= 0");
    if (!isfinite(o->init_scale) || o->init_scale < 0) EBT__BAD("init_scale must be finite and >= 0");
    if (isnan(o->energy_threshold)) EBT__BAD("energy_threshold is NaN");
    if (isnan(o->tol)) EBT__BAD("tol is NaN");
    if (o->last_only != 0 && o->last_only != 1) EBT__BAD("last_only must be 0 or 1");
    if (isnan(o->rel_drop) || o->rel_drop == INFINITY) EBT__BAD("rel_drop must be a number below +Inf");
    if (isnan(o->grad_tol) || o->grad_tol == INFINITY) EBT__BAD("grad_tol must be a number below +Inf");
    if (o->row_budget < 0) EBT__BAD("row_budget must be >= 0");
    if (!isfinite(o->clamp) || o->clamp < 0) EBT__BAD("clamp must be finite and >= 0");
    if (o->keep_best != 0 && o->keep_best != 1) EBT__BAD("keep_best must be 0 or 1");
    return EBT_OK;
#undef EBT__BAD
}

/* re-observes the current tokens at step k when that changes the step
 * token (models with a step embedding; a no-op otherwise) */
static void ebt__observe_step(ebt_workspace *ws, int k)
{
    int n = ws->m->cfg.n_step_embed;
    if (n > 0 && (k < n - 1 ? k : n - 1) != ebt__step_row(ws)) ebt__observe(ws, ws->tokens, ws->B, ws->S, k);
    ws->step = k;
}

/* One thinking call: options, sizes and the scratch (one block kept in
 * ws->xscr, laid out by ebt__think_begin). Rows r = 0..NP-1 are the
 * positions thought about ((b, i), or (b, S-1) with last_only); the
 * moving rows of a step are compacted into pa, ga in row order. Each row's
 * states are logits: y (being evaluated, then updated), yeval (the last one
 * evaluated with a finite energy and gradient), yprev (the one before it,
 * for the curvature), ykeep/ykprev (keep_best: the lowest-energy one and
 * its predecessor), best_y/best_prev (the answer of the best start). */
typedef struct {
    ebt_workspace *ws;
    ebt_think_opts o;
    ebt_think_result *res;
    int NP, S, V, K, n_active, curv;
    size_t nv;                     /* NP * V */
    ebt__rng rng;                  /* the current start's stream */
    ebt_real *y, *yeval, *yprev, *ykeep, *ykprev, *best_y, *best_prev;   /* (NP,V); some NULL when unused */
    ebt_real *pa, *ga;             /* (n,V) p and dE/dp of the moving rows */
    ebt_real *hist, *best_hist;    /* (NP,K+1) E_k of this start, of the best start */
    ebt_real *best_E, *alpha_i, *keep_E;   /* (NP) */
    int *rows, *done_k, *best_k, *best_w, *keep_k, *order;   /* (NP) */
    ebt__pair *pairs;              /* (NP) row_budget's sort */
    unsigned char *active, *moved, *kmoved, *best_moved;      /* (NP) */
} ebt__thinker;

/* lays out the scratch: the (NP,V) blocks the options need, then the rest */
static ebt_status ebt__think_scratch(ebt__thinker *t)
{
    ebt_workspace *ws = t->ws;
    size_t NP = (size_t)t->NP, nh, bytes, nblk = 5 + (t->o.keep_best ? 1 : 0) + (t->curv ? 2 + t->o.keep_best : 0);
    int ovf = 0;
    ebt_real *mem, *b;
    nh = ebt__mul(NP, (size_t)t->K + 1, &ovf);
    bytes = ebt__mul(t->nv, nblk * sizeof(ebt_real), &ovf) + ebt__mul(nh, 2 * sizeof(ebt_real), &ovf) +
            NP * (3 * sizeof(ebt_real) + 6 * sizeof(int) + sizeof(ebt__pair) + 4) + 64 + 16;
    mem = ovf ? NULL : (ebt_real *)ebt__grow(&ws->xscr, &ws->xscr_bytes, bytes);
    if (!mem) { ebt__seterr(ws->err, EBT__ERRLEN, "out of memory for thinking scratch"); return EBT_ERR_NOMEM; }
    b = mem;
    t->y = b; b += t->nv; t->yeval = b; b += t->nv; t->pa = b; b += t->nv; t->ga = b; b += t->nv;
    t->best_y = b; b += t->nv;
    t->ykeep = t->o.keep_best ? b : NULL; b += t->o.keep_best ? t->nv : 0;
    t->yprev = t->curv ? b : NULL; b += t->curv ? t->nv : 0;
    t->best_prev = t->curv ? b : NULL; b += t->curv ? t->nv : 0;
    t->ykprev = t->curv && t->o.keep_best ? b : NULL; b += t->curv && t->o.keep_best ? t->nv : 0;
    t->hist = b; t->best_hist = t->hist + nh; t->best_E = t->best_hist + nh; t->alpha_i = t->best_E + NP;
    t->keep_E = t->alpha_i + NP;
    t->rows = (int *)(void *)(t->keep_E + NP); t->done_k = t->rows + NP; t->best_k = t->done_k + NP;
    t->best_w = t->best_k + NP; t->keep_k = t->best_w + NP; t->order = t->keep_k + NP;
    t->pairs = (ebt__pair *)(void *)(((uintptr_t)(t->order + NP) + 15) & ~(uintptr_t)15);
    t->active = (unsigned char *)(t->pairs + NP); t->moved = t->active + NP; t->kmoved = t->moved + NP;
    t->best_moved = t->kmoved + NP;
    return EBT_OK;
}

/* checks the call and lays out the scratch (grown on demand) */
static ebt_status ebt__think_begin(ebt__thinker *t, ebt_workspace *ws, const ebt_think_opts *opts, ebt_think_result *res)
{
    ebt_status st = ebt__ws_ready(ws);
    if (st != EBT_OK) return st;
    if (!opts || !res) { ebt__seterr(ws->err, EBT__ERRLEN, "opts or res is NULL"); return EBT_ERR_ARG; }
    memset(t, 0, sizeof *t);
    t->ws = ws; t->o = *opts; t->res = res;
    if ((st = ebt__check_think_opts(&t->o, ws->err)) != EBT_OK) return st;
    t->S = ws->S; t->V = ws->m->cfg.vocab_size; t->K = t->o.steps;
    t->NP = ws->B * (t->o.last_only ? 1 : t->S);
    t->nv = (size_t)t->NP * t->V;
    t->curv = res->curvature != NULL;
    if (t->o.init_logits && !ebt__all_finite(t->o.init_logits, t->nv * t->o.restarts)) {
        ebt__seterr(ws->err, EBT__ERRLEN, "init_logits contain NaN or Inf");
        return EBT_ERR_NONFINITE;
    }
    if ((st = ebt__think_scratch(t)) != EBT_OK) return st;
    res->rows_evaluated = 0;
    res->rows_budget = (long long)t->o.restarts * t->NP * (t->K + 1);
    res->diverged = 0;
    return EBT_OK;
}

/* start s: y_0 (given or N(0, init_scale^2)), per-position step sizes, every row moving */
static void ebt__think_start(ebt__thinker *t, int s)
{
    const ebt_think_opts *o = &t->o;
    double alpha = o->step_size > 0 ? o->step_size : ebt__alpha_eff(t->ws->m);
    ebt__rng_stream(&t->rng, o->seed, 0x7468696e6bULL, (uint64_t)s);
    for (size_t i = 0; i < t->nv; i++)
        t->y[i] = o->init_logits ? o->init_logits[(size_t)s * t->nv + i] : (ebt_real)(o->init_scale * ebt__rng_normal(&t->rng));
    for (int r = 0; r < t->NP; r++) {
        double u = o->alpha_rand > 1 ? 1 / o->alpha_rand + ebt__rng_unif(&t->rng) * (o->alpha_rand - 1 / o->alpha_rand) : 1;
        t->alpha_i[r] = (ebt_real)(alpha * u);
        t->active[r] = 1;
        t->moved[r] = t->kmoved[r] = 0;
        t->done_k[r] = t->keep_k[r] = t->K;
    }
    t->n_active = t->NP;
}

/* row r leaves the moving set at the state it evaluated at step `steps` */
static void ebt__think_stop(ebt__thinker *t, int r, int steps)
{
    t->active[r] = 0;
    t->done_k[r] = steps;
    t->n_active--;
}

/* row_budget: before step k >= 1, if the moving rows would overrun what is
 * left, the highest-energy ones (E_{k-1}) go on and the others stop at k-1 */
static void ebt__think_budget(ebt__thinker *t, int k)
{
    long long left = t->o.row_budget - t->res->rows_evaluated;
    int n = 0;
    if (t->o.row_budget <= 0 || k == 0 || left >= t->n_active) return;
    for (int r = 0; r < t->NP; r++)
        if (t->active[r]) { t->pairs[n].w = t->hist[(size_t)r * (t->K + 1) + k - 1]; t->pairs[n++].i = r; }
    qsort(t->pairs, (size_t)n, sizeof *t->pairs, ebt__pair_desc);
    for (int i = left > 0 ? (int)left : 0; i < n; i++) {
        int r = t->pairs[i].i;
        memcpy(t->y + (size_t)r * t->V, t->yeval + (size_t)r * t->V, sizeof(ebt_real) * t->V);
        ebt__think_stop(t, r, k - 1);
    }
}

/* step k: Langevin noise into the moving rows' logits, their softmax, the
 * energies and (before the last step) dE/dp; returns the rows evaluated */
static int ebt__think_eval(ebt__thinker *t, int k)
{
    ebt_workspace *ws = t->ws;
    int n = 0, V = t->V, last = k == t->K;
    ebt__observe_step(ws, k);   /* step-token models: the step token is k */
    for (int r = 0; r < t->NP; r++) {
        ebt_real *yr = t->y + (size_t)r * V;
        if (!t->active[r]) continue;
        if (!last && t->o.noise > 0)
            for (int j = 0; j < V; j++) yr[j] += (ebt_real)(t->o.noise * ebt__rng_normal(&t->rng));
        ebt__softmax_rows(t->pa + (size_t)n * V, yr, 1, V, 1);
        t->rows[n++] = t->o.last_only ? (r * t->S + t->S - 1) : r;
    }
    ebt__pred_rows(ws, t->rows, n);
    ebt__pred_forward(ws, t->pa);
    if (!last) ebt__pred_dEdp(ws, t->pa, t->ga);
    t->res->rows_evaluated += n;
    return n;
}

/* 1 if a stopping rule holds for row r after evaluating E_k (hr its history, gq its gradient) */
static int ebt__think_rules(const ebt__thinker *t, const ebt_real *hr, const ebt_real *gq, int k)
{
    const ebt_think_opts *o = &t->o;
    double E = hr[k], Ep = k >= 1 ? hr[k - 1] : 0;
    if (k == t->K || E <= o->energy_threshold) return 1;
    if (k >= 1 && (fabs(E - Ep) <= o->tol || Ep - E <= o->rel_drop * fabs(Ep))) return 1;
    return o->grad_tol >= 0 && sqrt(ebt__dot_d(gq, gq, t->V) / t->V) <= o->grad_tol;
}

/* a finite state evaluated at step k: it becomes yeval (its predecessor
 * yprev), and with keep_best the kept state if its energy is the lowest */
static void ebt__think_record(ebt__thinker *t, int r, int k, ebt_real E)
{
    size_t o = (size_t)r * t->V, sz = sizeof(ebt_real) * t->V;
    if (t->curv && k > 0) { memcpy(t->yprev + o, t->yeval + o, sz); t->moved[r] = 1; }
    memcpy(t->yeval + o, t->y + o, sz);
    t->hist[(size_t)r * (t->K + 1) + k] = E;
    if (t->o.keep_best && (k == 0 || E < t->keep_E[r])) {
        t->keep_E[r] = E;
        t->keep_k[r] = k;
        memcpy(t->ykeep + o, t->y + o, sz);
        if (t->curv) { t->kmoved[r] = t->moved[r]; if (t->moved[r]) memcpy(t->ykprev + o, t->yprev + o, sz); }
    }
}

/* y_{k+1} = p_k - alpha_i g_k for row r (each entry of alpha_i g_k clamped
 * to [-clamp, clamp] when clamp > 0); 0 if the result is not finite */
static int ebt__think_update(ebt__thinker *t, int r, const ebt_real *pq, const ebt_real *gq)
{
    ebt_real *yr = t->y + (size_t)r * t->V, a = t->alpha_i[r], c = (ebt_real)t->o.clamp;
    if (c > 0)
        for (int j = 0; j < t->V; j++) { ebt_real d = a * gq[j]; yr[j] = pq[j] - (d > c ? c : d < -c ? -c : d); }
    else
        for (int j = 0; j < t->V; j++) yr[j] = pq[j] - a * gq[j];
    return ebt__all_finite(yr, (size_t)t->V);
}

/* after ebt__think_eval(k): per moving row, record E_k, then stop (the
 * rules, or a non-finite value: back to the last finite state) or update */
static void ebt__think_scatter(ebt__thinker *t, int k)
{
    int V = t->V, K = t->K;
    for (int r = 0, q = 0; r < t->NP; r++) {
        ebt_real *yr = t->y + (size_t)r * V, *hr = t->hist + (size_t)r * (K + 1);
        const ebt_real *pq = t->pa + (size_t)q * V, *gq = t->ga + (size_t)q * V;
        ebt_real E;
        if (!t->active[r]) continue;
        E = t->ws->energy[q++];
        if (!isfinite(E) || (k < K && !ebt__all_finite(gq, (size_t)V))) {   /* blew up */
            if (k > 0) memcpy(yr, t->yeval + (size_t)r * V, sizeof(ebt_real) * V);
            else hr[0] = (ebt_real)NAN;                                       /* no finite state */
            if (k == 0 && t->o.keep_best) {   /* no finite state: the start answers, as without keep_best */
                t->keep_E[r] = (ebt_real)NAN;
                t->keep_k[r] = 0;
                t->kmoved[r] = 0;
                memcpy(t->ykeep + (size_t)r * V, yr, sizeof(ebt_real) * V);
            }
            t->res->diverged++;
            ebt__think_stop(t, r, k > 0 ? k - 1 : 0);
            continue;
        }
        ebt__think_record(t, r, k, E);
        if (ebt__think_rules(t, hr, gq, k)) { ebt__think_stop(t, r, k); continue; }
        if (!ebt__think_update(t, r, pq, gq)) {   /* the step overflowed: stay at the state of E_k */
            memcpy(yr, t->yeval + (size_t)r * V, sizeof(ebt_real) * V);
            t->res->diverged++;
            ebt__think_stop(t, r, k);
        }
    }
}

/* after start s: the history held after each stop; keep the start whose
 * answer has the lowest energy (a finite energy beats NaN) */
static void ebt__think_keep(ebt__thinker *t, int s)
{
    int V = t->V, K = t->K, kb = t->o.keep_best;
    size_t sz = sizeof(ebt_real) * V;
    for (int r = 0; r < t->NP; r++) {
        ebt_real *h = t->hist + (size_t)r * (K + 1), E;
        size_t o = (size_t)r * V;
        for (int k = t->done_k[r] + 1; k <= K; k++) h[k] = h[t->done_k[r]];
        E = kb ? t->keep_E[r] : h[K];
        if (s == 0 || E < t->best_E[r] || (isnan(t->best_E[r]) && !isnan(E))) {
            t->best_E[r] = E;
            t->best_k[r] = kb ? t->keep_k[r] : t->done_k[r];
            t->best_w[r] = s;
            memcpy(t->best_y + o, (kb ? t->ykeep : t->y) + o, sz);
            memcpy(t->best_hist + (size_t)r * (K + 1), h, sizeof(ebt_real) * (K + 1));
            if (t->curv) {
                t->best_moved[r] = kb ? t->kmoved[r] : t->moved[r];
                if (t->best_moved[r]) memcpy(t->best_prev + o, (kb ? t->ykprev : t->yprev) + o, sz);
            }
        }
    }
}

/* res->curvature: v.(H v)/v.v at each answer p with v = p - p_prev, one
 * forward, tangent and reverse over the rows that moved (observed at the
 * last step, which step-embedding models still hold) */
static void ebt__think_curvature(ebt__thinker *t)
{
    ebt_workspace *ws = t->ws;
    int n = 0, V = t->V;
    ebt_real *p = t->pa, *v = t->ga, *hv = t->yeval;   /* free now: (n,V) each */
    for (int r = 0; r < t->NP; r++) {
        t->res->curvature[r] = (ebt_real)NAN;
        if (!t->best_moved[r]) continue;
        ebt__softmax_rows(p + (size_t)n * V, t->best_y + (size_t)r * V, 1, V, 1);
        ebt__softmax_rows(v + (size_t)n * V, t->best_prev + (size_t)r * V, 1, V, 1);
        for (int j = 0; j < V; j++) v[(size_t)n * V + j] = p[(size_t)n * V + j] - v[(size_t)n * V + j];
        t->order[n] = r;
        t->rows[n++] = t->o.last_only ? (r * t->S + t->S - 1) : r;
    }
    if (n == 0) return;
    ebt__pred_rows(ws, t->rows, n);
    ebt__pred_forward(ws, p);
    ebt__pred_tangent(ws, v);
    {
        ebt__rev_args ra = { NULL, EBT__GRAD_NONE, 1, NULL, p, v, NULL, hv };
        ebt__pred_reverse(ws, &ra);
    }
    for (int i = 0; i < n; i++) {
        double vv = ebt__dot_d(v + (size_t)i * V, v + (size_t)i * V, V);
        t->res->curvature[t->order[i]] = (ebt_real)(vv > 0 ? ebt__dot_d(v + (size_t)i * V, hv + (size_t)i * V, V) / vv : NAN);
    }
}

/* the result fields the caller asked for */
static void ebt__think_output(ebt__thinker *t)
{
    ebt_think_result *res = t->res;
    size_t NP = (size_t)t->NP;
    if (t->curv) ebt__think_curvature(t);
    if (res->probs) ebt__softmax_rows(res->probs, t->best_y, NP, t->V, 1);
    if (res->logits) memcpy(res->logits, t->best_y, sizeof(ebt_real) * t->nv);
    if (res->energy) memcpy(res->energy, t->best_hist, sizeof(ebt_real) * NP * (t->K + 1));
    if (res->final_energy) memcpy(res->final_energy, t->best_E, sizeof(ebt_real) * NP);
    if (res->steps_taken) memcpy(res->steps_taken, t->best_k, sizeof(int) * NP);
    if (res->winner) memcpy(res->winner, t->best_w, sizeof(int) * NP);
}

/* thinking on the current observation; restore: leave a step-token model's
 * workspace observed at the step it had (generation re-observes anyway) */
static ebt_status ebt__think(ebt_workspace *ws, const ebt_think_opts *opts, ebt_think_result *res, int restore)
{
    ebt__thinker t;
    ebt_status st = ebt__think_begin(&t, ws, opts, res);
    int step0 = ws ? ws->step : 0;
    if (st != EBT_OK) return st;
    for (int s = 0; s < t.o.restarts; s++) {
        ebt__think_start(&t, s);
        for (int k = 0; k <= t.K && t.n_active > 0; k++) {
            ebt__think_budget(&t, k);
            if (t.n_active == 0) break;
            ebt__think_eval(&t, k);
            ebt__think_scatter(&t, k);
        }
        ebt__think_keep(&t, s);
    }
    ebt__think_output(&t);
    if (restore) ebt__observe_step(ws, step0);
    ebt__pred_rows(ws, NULL, 0);
    return EBT_OK;
}

ebt_status ebt_think_observed(ebt_workspace *ws, const ebt_think_opts *opts, ebt_think_result *res)
{
    return ws ? ebt__think(ws, opts, res, 1) : EBT_ERR_ARG;   /* (checked here too: gcc -O3 otherwise
                                                                  warns about a NULL clone of ebt__think) */
}

ebt_status ebt_think(ebt_workspace *ws, const ebt_model *m, const int32_t *tokens, int B, int S,
                     const ebt_think_opts *opts, ebt_think_result *res)
{
    ebt_status st = ebt_observe(ws, m, tokens, B, S, 0);
    if (st != EBT_OK) return st;
    return ebt_think_observed(ws, opts, res);
}

ebt_status ebt_observe_append(ebt_workspace *ws, const int32_t *tokens, int n)
{
    const ebt_model *m;
    int j0;
    if (!ws) return EBT_ERR_ARG;
    ws->err[0] = 0;
    m = ws->m;
    if (!ws->observed) { ebt__seterr(ws->err, EBT__ERRLEN, "call ebt_observe first"); return EBT_ERR_STATE; }
    if (m->cfg.n_step_embed > 0) { ebt__seterr(ws->err, EBT__ERRLEN, "step-token models re-observe per step; append is not supported"); return EBT_ERR_UNSUPPORTED; }
    if (!tokens || n < 1) { ebt__seterr(ws->err, EBT__ERRLEN, "tokens is NULL or n < 1"); return EBT_ERR_ARG; }
    if (ws->B != 1) { ebt__seterr(ws->err, EBT__ERRLEN, "append needs a single sequence (B == 1)"); return EBT_ERR_ARG; }
    if (n > ws->max_S - ws->S) { ebt__seterr(ws->err, EBT__ERRLEN, "S=%d + %d exceeds the workspace's max_S %d", ws->S, n, ws->max_S); return EBT_ERR_ARG; }
    if (ebt__check_ids(tokens, (size_t)n, m->cfg.vocab_size, "token", ws->err, EBT__ERRLEN) != EBT_OK) return EBT_ERR_TOKEN;
    memcpy(ws->tokens + ws->S, tokens, sizeof(int32_t) * (size_t)n);
    j0 = ws->So;
    ws->S += n;
    ws->So += n;
    ebt__obs_forward(ws, j0);
    if (m->cfg.arch == EBT_ARCH_EBT) ebt__pred_rows(ws, NULL, 0);
    return EBT_OK;
}

/* mean over N rows of the cross-entropy of logits y against tgt; if lam,
 * lam = w (softmax(y) - onehot) / N (its gradient times w); lam may be y */
/* one row: the cross-entropy, and lr = w (softmax - onehot) / N (lr may be yr;
 * the exponentials are kept in lr between the two passes) */
static inline double ebt__ce_row(const ebt_real *yr, int t, int V, int N, double w, ebt_real *lr)
{
    ebt_real mx = ebt__max(yr, V), acc[EBT__LANES] = { 0 }, sum = 0, a;
    double ce = (double)mx - yr[t];
    if (!lr) {
        int j = 0;
        for (; j + EBT__LANES <= V; j += EBT__LANES)
            for (int l = 0; l < EBT__LANES; l++) acc[l] += ebt__exp(yr[j + l] - mx);
        for (int l = 0; j + l < V; l++) acc[l] += ebt__exp(yr[j + l] - mx);
        for (int l = 0; l < EBT__LANES; l++) sum += acc[l];
        return ce + log((double)sum);
    }
    if (lr != yr) memcpy(lr, yr, sizeof(ebt_real) * V);
    sum = ebt__exp_sum(lr, V, mx);
    a = (ebt_real)(w / ((double)sum * N));
    for (int j = 0; j < V; j++) lr[j] *= a;
    lr[t] -= (ebt_real)(w / N);
    return ce + log((double)sum);
}
/* rowbuf (N doubles) lets the rows run on nt threads; the sum stays in row order */
EBT__SIMD static double ebt__ce_rows(const ebt_real *y, const int32_t *tgt, int N, int V, double w, ebt_real *lam,
                                     double *rowbuf, int nt)
{
    double total = 0;
    if (!rowbuf) {
        for (int n = 0; n < N; n++)
            total += ebt__ce_row(y + (size_t)n * V, tgt[n], V, N, w, lam ? lam + (size_t)n * V : NULL);
        return total / N;
    }
    EBT__FOR_ROWS(nt, (size_t)N * V, int n = 0, n < N, n++, {
        rowbuf[n] = ebt__ce_row(y + (size_t)n * V, tgt[n], V, N, w, lam ? lam + (size_t)n * V : NULL);
    });
    for (int n = 0; n < N; n++) total += rowbuf[n];
    return total / N;
}

/* ======================================================================
 * TRANSFORMER++: the observed stream alone, all layers, then
 * logits = rmsnorm(h) * final_norm @ lm_head^T and mean cross-entropy.
 * ====================================================================== */

static ebt_status ebt__lm_forward(ebt_model *m, const int32_t *tokens, int B, int S)
{
    ebt_status st;
    ebt_workspace *ws;
    const ebt_config *c;
    int N;
    if (!m) return EBT_ERR_ARG;
    m->err[0] = 0;
    c = &m->cfg;
    if (c->arch != EBT_ARCH_TRANSFORMER) { ebt__seterr(m->err, EBT__ERRLEN, "lm calls need arch transformer++"); return EBT_ERR_UNSUPPORTED; }
    if ((st = ebt__check_seq(m, tokens, B, S, 0, m->err, EBT__ERRLEN)) != EBT_OK) return st;
    if ((st = ebt__model_ws(m, B, S)) != EBT_OK) return st;
    ws = m->ws;
    ebt__observe(ws, tokens, B, S, 0);
    N = B * S;
    ebt__rmsnorm_fwd(ws->o_nf, ws->o_rsf, ws->o_hL, m->w.final_norm, N, c->d_model, (ebt_real)c->norm_eps, ebt__nt(ws->threads));
    ebt__lin_fwd(ws->logits, ws->o_nf, m->w.lm_head, N, c->d_model, c->vocab_size, 0, ebt__nt(ws->threads)); /* logits = nf @ lm_head^T */
    return EBT_OK;
}

ebt_status ebt_lm_logits(ebt_model *m, const int32_t *tokens, int B, int S, ebt_real *logits)
{
    ebt_status st;
    if (!logits) { if (m) ebt__seterr(m->err, EBT__ERRLEN, "logits is NULL"); return EBT_ERR_ARG; }
    if ((st = ebt__lm_forward(m, tokens, B, S)) != EBT_OK) return st;
    memcpy(logits, m->ws->logits, sizeof(ebt_real) * (size_t)B * S * m->cfg.vocab_size);
    return EBT_OK;
}

/* grads += weight * d(mean CE)/dtheta of transformer++; *loss = the mean CE */
static ebt_status ebt__lm_backward(ebt_model *m, const int32_t *tokens, const int32_t *targets, int B, int S,
                                   double weight, ebt_real *loss)
{
    ebt_status st;
    ebt_workspace *ws;
    int N, V, D, nt;
    double total;
    if ((st = ebt__lm_forward(m, tokens, B, S)) != EBT_OK) return st;  /* checks B, S and tokens */
    if ((st = ebt__check_ids(targets, (size_t)B * S, m->cfg.vocab_size, "target", m->err, EBT__ERRLEN)) != EBT_OK) return st;
    ws = m->ws;
    N = B * S; V = m->cfg.vocab_size; D = m->cfg.d_model; nt = ebt__nt(ws->threads);
    total = ebt__ce_rows(ws->logits, targets, N, V, weight, ws->logits, NULL, 1);  /* logits become dlogits */
    if (!isfinite(total)) { ebt__seterr(m->err, EBT__ERRLEN, "loss is not finite"); return EBT_ERR_NONFINITE; }
    *loss = (ebt_real)total;
    ebt__lin_bwd_w(m->g.lm_head, ws->logits, ws->o_nf, N, D, V, nt);       /* dlm_head += dlogits^T nf */
    ebt__lin_bwd_x(ws->ro.dx, ws->logits, m->w.lm_head, N, D, V, nt);      /* dnf = dlogits @ lm_head */
    memset(ws->ro.dout, 0, sizeof(ebt_real) * (size_t)N * D);
    ebt__rmsnorm_bwd(ws->ro.dout, m->g.final_norm, ws->ro.dx, ws->o_hL, ws->o_rsf, m->w.final_norm, N, D, nt);
    ebt__zero_acc(ws);
    ebt__obs_backward(ws, m, ws->ro.dout);
    return EBT_OK;
}

ebt_status ebt_lm_backward(ebt_model *m, const int32_t *tokens, const int32_t *targets,
                           int B, int S, ebt_real *loss)
{
    if (m && (!targets || !loss)) { ebt__seterr(m->err, EBT__ERRLEN, "targets or loss is NULL"); return EBT_ERR_ARG; }
    return m ? ebt__lm_backward(m, tokens, targets, B, S, 1.0, loss) : EBT_ERR_ARG;
}

/* ======================================================================
 * GENERATION: think (or take the logits) for the next token, sample it,
 * extend the observed stream by that one token (KV cache).
 * ====================================================================== */

ebt_gen_opts ebt_gen_default(void)
{
    ebt_gen_opts o;
    memset(&o, 0, sizeof o);
    o.think = ebt_think_default();
    o.temperature = 1;
    o.top_p = 1;
    o.seed = 0x9e3779b9;
    o.on_token = NULL;
    o.user = NULL;
    return o;
}

/* logits[V] of the last observed row of sequence 0 (transformer++) */
static void ebt__lm_last_logits(ebt_workspace *ws, ebt_real *logits)
{
    const ebt_model *m = ws->m;
    int D = m->cfg.d_model;
    size_t r = (size_t)ws->So - 1;
    ebt__rmsnorm_fwd(ws->o_nf + r * D, ws->o_rsf + r, ws->o_hL + r * D, m->w.final_norm, 1, D, (ebt_real)m->cfg.norm_eps, 1);
    ebt__lin_fwd(logits, ws->o_nf + r * D, m->w.lm_head, 1, D, m->cfg.vocab_size, 0, 1); /* logits = nf @ lm_head^T */
}


/* a token from distribution q[V]: argmax (temperature 0), or sampled from
 * q^(1/T) renormalised and cut to its top-p nucleus; pr (V pairs) is scratch */
static int ebt__sample(const ebt_real *q, int V, double temp, double top_p, ebt__rng *rng, ebt__pair *pr)
{
    double s = 0, mx = -INFINITY, cum = 0, u;
    int n = V, best = 0;
    if (temp <= 0) {
        for (int j = 1; j < V; j++) best = q[j] > q[best] ? j : best;
        return best;
    }
    for (int j = 0; j < V; j++) {
        double l = log(q[j] > 1e-37 ? (double)q[j] : 1e-37) / temp;
        pr[j].w = (ebt_real)l; pr[j].i = j;
        mx = l > mx ? l : mx;
    }
    for (int j = 0; j < V; j++) { pr[j].w = (ebt_real)exp(pr[j].w - mx); s += pr[j].w; }
    qsort(pr, (size_t)V, sizeof *pr, ebt__pair_desc);
    if (top_p < 1) {
        for (n = 0; n < V && cum < top_p * s; n++) cum += pr[n].w;
        s = cum;
    }
    u = ebt__rng_unif(rng) * s;
    for (int j = 0; j < n; j++) {
        u -= pr[j].w;
        if (u <= 0) return pr[j].i;
    }
    return pr[n - 1].i;
}

/* the next token's distribution q[V] (thinking, or the transformer++
 * logits) with its report in *t (energies: K+1 reals of scratch) */
static ebt_status ebt__gen_next(ebt_workspace *ws, const ebt_gen_opts *o, int pos, ebt_real *q,
                                ebt_real *energies, ebt_gen_token *t)
{
    ebt_think_result r;
    ebt_think_opts th = o->think;
    t->probs = q;
    t->energy = (ebt_real)NAN;
    t->energies = NULL;
    t->steps = t->steps_taken = t->winner = 0;
    if (ws->m->cfg.arch != EBT_ARCH_EBT) {
        ebt__lm_last_logits(ws, q);
        ebt__softmax_rows(q, q, 1, ws->m->cfg.vocab_size, 1);
        return EBT_OK;
    }
    memset(&r, 0, sizeof r);
    r.probs = q;
    r.final_energy = &t->energy;
    r.energy = energies;
    r.steps_taken = &t->steps_taken;
    r.winner = &t->winner;
    th.seed = o->think.seed + 0x9e3779b97f4a7c15ULL * (uint64_t)pos;
    t->energies = energies;
    t->steps = th.steps;
    return ebt__think(ws, &th, &r, 0);
}

/* checks ebt_generate's arguments; o gets the options as generation uses them */
static ebt_status ebt__check_gen(ebt_workspace *ws, const ebt_model *m, const int32_t *prompt, int n_prompt,
                                 int n_new, const ebt_gen_opts *opts, const int32_t *out, ebt_gen_opts *o)
{
    ebt_status st;
    ws->err[0] = 0;
    if (!m || m != ws->m) { ebt__seterr(ws->err, EBT__ERRLEN, "model is NULL or not the workspace's"); return m ? EBT_ERR_STATE : EBT_ERR_ARG; }
    if (!opts) { ebt__seterr(ws->err, EBT__ERRLEN, "opts is NULL"); return EBT_ERR_ARG; }
    *o = *opts;
    if (!prompt || n_prompt < 1 || n_new < 0 || (n_new > 0 && !out) || n_new > INT32_MAX - n_prompt) {
        ebt__seterr(ws->err, EBT__ERRLEN, "need a prompt of >= 1 tokens, n_new >= 0 and out");
        return EBT_ERR_ARG;
    }
    if (!isfinite(o->temperature) || o->temperature < 0 || !(o->top_p > 0 && o->top_p <= 1) ||
        (o->no_cache != 0 && o->no_cache != 1)) {
        ebt__seterr(ws->err, EBT__ERRLEN, "temperature must be finite and >= 0, top_p in (0, 1], no_cache 0 or 1");
        return EBT_ERR_ARG;
    }
    o->think.last_only = 1;
    o->think.init_logits = NULL;
    if ((st = ebt__check_think_opts(&o->think, ws->err)) != EBT_OK) return st;
    return ebt__check_ids(prompt, (size_t)n_prompt, m->cfg.vocab_size, "prompt token", ws->err, EBT__ERRLEN);
}

ebt_status ebt_generate(ebt_workspace *ws, const ebt_model *m, const int32_t *prompt, int n_prompt,
                        int n_new, const ebt_gen_opts *opts, int32_t *out, ebt_real *energy, ebt_real *probs)
{
    ebt_gen_opts o;
    ebt_status st;
    ebt__rng rng;
    int V, maxS, start, len, cache;
    int32_t *ctx;
    ebt_real *q, *hist;
    ebt__pair *pr;
    if (!ws) return EBT_ERR_ARG;
    if ((st = ebt__check_gen(ws, m, prompt, n_prompt, n_new, opts, out, &o)) != EBT_OK) return st;
    V = m->cfg.vocab_size;
    cache = !o.no_cache && m->cfg.n_step_embed == 0;
    maxS = ws->max_S;
    /* scratch: the context, V sampling pairs, q[V] and the energies of one thinking (K+1) */
    ctx = (int32_t *)EBT_MALLOC(sizeof(int32_t) * ((size_t)n_prompt + n_new) + sizeof(ebt__pair) * (size_t)V +
                                sizeof(ebt_real) * ((size_t)V + o.think.steps + 1) + 16);
    if (!ctx) { ebt__seterr(ws->err, EBT__ERRLEN, "out of memory"); return EBT_ERR_NOMEM; }
    pr = (ebt__pair *)(void *)(((uintptr_t)(ctx + n_prompt + n_new) + 15) & ~(uintptr_t)15);
    q = (ebt_real *)(void *)(pr + V);
    hist = q + V;
    if (prompt && n_prompt > 0) memcpy(ctx, prompt, sizeof(int32_t) * (size_t)n_prompt);   /* prompt: checked above; gcc -O3 wants to see it */
    ebt__rng_stream(&rng, o.seed, 0x73616d706c65ULL, 0);
    start = n_prompt > maxS ? n_prompt - maxS : 0;
    len = n_prompt - start;
    ebt__observe(ws, ctx + start, 1, len, 0);
    for (int t = 0; t < n_new; t++) {
        ebt_gen_token tk;
        if ((st = ebt__gen_next(ws, &o, n_prompt + t, q, hist, &tk)) != EBT_OK) break;
        if (energy) energy[t] = tk.energy;
        if (probs) memcpy(probs + (size_t)t * V, q, sizeof(ebt_real) * V);
        out[t] = ctx[n_prompt + t] = tk.token = ebt__sample(q, V, o.temperature, o.top_p, &rng, pr);
        tk.index = t;
        if ((o.on_token && o.on_token(o.user, &tk)) || t == n_new - 1) break;
        if (len + 1 > maxS) {            /* window full: keep the newest half */
            len = maxS / 2 > 0 ? maxS / 2 : 1;
            start = n_prompt + t + 1 - len;
            ebt__observe(ws, ctx + start, 1, len, 0);
        } else if (cache) {
            ebt_observe_append(ws, &out[t], 1);
            len++;
        } else {
            len++;
            ebt__observe(ws, ctx + start, 1, len, 0);
        }
    }
    EBT_FREE(ctx);
    return st;
}

/* ======================================================================
 * TRAINING (docs/model.md sections 6, 7): think K steps from y_0,
 * cross-entropy of the thoughts, gradients by the modes detach / truncate /
 * full (second order through ebt__pred_reverse with tangents: the mixed
 * term and H_pp v), AdamW with clipping and a warm-up + cosine schedule;
 * replay buffer.
 * ====================================================================== */

ebt_train_opts ebt_train_default(void)
{
    ebt_train_opts o;
    memset(&o, 0, sizeof o);
    o.mode = EBT_MODE_DETACH;
    o.k_min = o.k_max = 2;
    o.alpha_rand = 1;
    o.init_scale = 1;
    o.learn_alpha = 1;
    o.alpha_lr_mult = 1;
    o.lr = 1e-3;
    o.min_lr = 1e-4;
    o.warmup_steps = 100;
    o.total_steps = 10000;
    o.progress = -1;
    o.weight_decay = 0.01;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8;
    o.grad_clip = 1;
    o.seed = 1234;
    return o;
}

long ebt_train_steps_done(const ebt_model *m) { return m ? m->opt.step : 0; }

void ebt_train_reset(ebt_model *m)
{
    if (!m) return;
    EBT_FREE(m->opt.m); EBT_FREE(m->opt.v); EBT_FREE(m->rb.y); EBT_FREE(m->rb.tok);
    m->opt.m = m->opt.v = m->rb.y = NULL;
    m->rb.tok = m->rb.tgt = NULL;
    m->opt.step = 0;
    m->rb.cap = m->rb.count = m->rb.next = m->rb.S = m->rb.rows = 0;
}

static ebt_status ebt__check_train_opts(const ebt_train_opts *o, char *err)
{
#define EBT__BAD(...) do { ebt__seterr(err, EBT__ERRLEN, __VA_ARGS__); return EBT_ERR_ARG; } while (0)
    if (!o) EBT__BAD("training options are NULL");
    if (o->mode != EBT_MODE_DETACH && o->mode != EBT_MODE_TRUNCATE && o->mode != EBT_MODE_FULL) EBT__BAD("unknown mode %d", (int)o->mode);
    if (o->k_min < 1 || o->k_max < o->k_min || o->k_max > 1000) EBT__BAD("need 1 <= k_min <= k_max <= 1000 (got %d, %d)", o->k_min, o->k_max);
    if (!isfinite(o->alpha_rand) || o->alpha_rand < 1) EBT__BAD("alpha_rand must be finite and >= 1");
    if (!isfinite(o->noise) || o->noise < 0) EBT__BAD("noise must be finite and >= 0");
    if (!isfinite(o->init_scale) || o->init_scale < 0) EBT__BAD("init_scale must be finite and >= 0");
    if (o->replay_capacity < 0 || o->replay_capacity > (1 << 20)) EBT__BAD("replay_capacity out of range");
    if (!(o->replay_frac >= 0 && o->replay_frac <= 1)) EBT__BAD("replay_frac must be in [0, 1]");
    if (!isfinite(o->alpha_lr_mult) || o->alpha_lr_mult < 0) EBT__BAD("alpha_lr_mult must be finite and >= 0");
    if (!isfinite(o->lr) || o->lr < 0 || !isfinite(o->min_lr) || o->min_lr < 0) EBT__BAD("lr and min_lr must be finite and >= 0");
    if (o->warmup_steps < 0 || o->total_steps < 0) EBT__BAD("warmup_steps and total_steps must be >= 0");
    if (!(o->progress <= 1)) EBT__BAD("progress must be <= 1 (negative: follow the step count)");
    if (!isfinite(o->weight_decay) || o->weight_decay < 0) EBT__BAD("weight_decay must be finite and >= 0");
    if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1)) EBT__BAD("betas must be in [0, 1)");
    if (!isfinite(o->eps) || o->eps <= 0) EBT__BAD("eps must be finite and > 0");
    if (isnan(o->grad_clip) || isinf(o->grad_clip)) EBT__BAD("grad_clip must be finite");
    if (o->learn_alpha != 0 && o->learn_alpha != 1) EBT__BAD("learn_alpha must be 0 or 1");
    return EBT_OK;
#undef EBT__BAD
}

/* The training scratch of one ebt_train_accumulate (one block, m->tbuf): a
 * row buffer (N doubles), y_0..y_K, p_0..p_{K-1}, g_0..g_{K-1}, ybar, hv,
 * v, each (N,V); u (N); a copy of the gradients and sums (restored if the
 * call fails after they changed); the micro-batch's tokens and targets. */
typedef struct { ebt_real *ys, *ps, *gs, *ybar, *hv, *vv, *u, *gsave; double *rowbuf; int32_t *tok, *tgt; } ebt__tscratch;

static size_t ebt__tscratch_size(int K, size_t N, size_t nv, size_t ng, int *ovf)
{
    return ebt__mul(nv, 3 * (size_t)K + 4, ovf) + N + ng + (N * sizeof(double) + sizeof(ebt_real) - 1) / sizeof(ebt_real) +
           (2 * N * sizeof(int32_t) + sizeof(ebt_real) - 1) / sizeof(ebt_real);
}

static ebt__tscratch ebt__tscratch_at(ebt_real *buf, int K, size_t N, size_t nv, size_t ng)
{
    ebt__tscratch t;
    t.rowbuf = (double *)(void *)buf;   /* first: aligned for doubles */
    t.ys = buf + (N * sizeof(double) + sizeof(ebt_real) - 1) / sizeof(ebt_real);
    t.ps = t.ys + (K + 1) * nv; t.gs = t.ps + K * nv; t.ybar = t.gs + K * nv;
    t.hv = t.ybar + nv; t.vv = t.hv + nv; t.u = t.vv + nv; t.gsave = t.u + N;
    t.tok = (int32_t *)(void *)(t.gsave + ng); t.tgt = t.tok + N;
    return t;
}

/* galpha += d/dalpha of -alpha_i g_k . ybar = -sum_n u_n (ybar_n . g_n) */
EBT__SIMD static void ebt__alpha_grad(const ebt_real *ybar, const ebt_real *gk, const ebt_real *u, int N, int V, double *galpha,
                                      double *rowbuf, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * V, int n = 0, n < N, n++, {
        rowbuf[n] = ebt__dot_d(ybar + (size_t)n * V, gk + (size_t)n * V, V);
    });
    for (int n = 0; n < N; n++) *galpha -= u[n] * rowbuf[n];
}

/* y(N,V) = add + scale N(0,1); row n from its own stream (seed, row0 + n),
 * so rows can be drawn on nt threads, and in any split of the batch, with
 * the same numbers */
static void ebt__normal_rows(ebt_real *y, const ebt_real *add, double scale, uint64_t seed, long row0, int N, int V, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * V, int n = 0, n < N, n++, {
        ebt__rng r;
        ebt_real *yr = y + (size_t)n * V;
        ebt__rng_stream(&r, seed, 0x726f7773ULL, (uint64_t)(row0 + n));
        for (int j = 0; j < V; j++) yr[j] = (add ? add[(size_t)n * V + j] : 0) + (ebt_real)(scale * ebt__rng_normal(&r));
    });
}

/* y(N,V) = add + (a u_n) x, row by row (add may be NULL: 0) */
EBT__SIMD static void ebt__scale_rows(ebt_real *y, const ebt_real *add, const ebt_real *x, const ebt_real *u, double a,
                                      int N, int V, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * V, int n = 0, n < N, n++, {
        ebt_real an = (ebt_real)(a * u[n]), *yr = y + (size_t)n * V;
        const ebt_real *xr = x + (size_t)n * V;
        if (add) for (int j = 0; j < V; j++) yr[j] = add[(size_t)n * V + j] + an * xr[j];
        else for (int j = 0; j < V; j++) yr[j] = an * xr[j];
    });
}

/* one thinking step back through the softmax: pbar = ybar (+ hv when
 * second); ybar = softmax'(y_k)^T pbar = p (pbar - p.pbar), row by row */
EBT__SIMD static void ebt__softmax_back_rows(ebt_real *ybar, const ebt_real *p, const ebt_real *hv, int second,
                                             int N, int V, int nt)
{
    EBT__FOR_ROWS(nt, (size_t)N * V, int n = 0, n < N, n++, {
        ebt_real *yb = ybar + (size_t)n * V;
        const ebt_real *pr = p + (size_t)n * V;
        ebt_real dot;
        if (second) for (int j = 0; j < V; j++) yb[j] += hv[(size_t)n * V + j];
        dot = (ebt_real)ebt__dot_d(pr, yb, V);
        for (int j = 0; j < V; j++) yb[j] = pr[j] * (yb[j] - dot);
    });
}

/* The second-order term of one thinking step whose forward (at p_k) is in
 * ws: alpha's gradient, then grads += grad_theta(v . g_k) and hv = H_k v
 * with v = -alpha_i ybar (ybar = d loss / d y_{k+1}). */
static void ebt__mixed_step(ebt_workspace *ws, ebt_model *m, const ebt_real *pk, const ebt_real *gk,
                            const ebt_real *ybar, ebt_real *vv, ebt_real *hv, const ebt_real *u,
                            double alpha_eff, double *galpha, double *rowbuf)
{
    int N = ws->np, V = m->cfg.vocab_size, nt = ebt__nt(ws->threads);
    ebt__rev_args ra = { m, EBT__GRAD_MIXED, 1, NULL, pk, vv, NULL, hv };
    ebt__alpha_grad(ybar, gk, u, N, V, galpha, rowbuf, nt);
    ebt__scale_rows(vv, NULL, ybar, u, -alpha_eff, N, V, nt);   /* v = -alpha_i ybar */
    ebt__pred_tangent(ws, vv);
    ebt__pred_reverse(ws, &ra);
    if (m->cfg.n_step_embed > 0) {   /* each step has its own observed stream */
        ebt__obs_backward(ws, m, NULL);
        ebt__zero_acc(ws);
    }
}

/* every check of a training call, made before anything is allocated or changed */
static ebt_status ebt__check_train(ebt_model *m, const ebt_train_opts *opts, const int32_t *tokens,
                                   const int32_t *targets, int B, int S, const ebt_real *init_logits,
                                   const ebt_real *alpha_mult)
{
    ebt_status st;
    size_t N;
    if (!m) return EBT_ERR_ARG;
    m->err[0] = 0;
    if ((st = ebt__check_train_opts(opts, m->err)) != EBT_OK) return st;
    if ((st = ebt__check_seq(m, tokens, B, S, 0, m->err, EBT__ERRLEN)) != EBT_OK) return st;
    if (!targets) { ebt__seterr(m->err, EBT__ERRLEN, "targets is NULL"); return EBT_ERR_ARG; }
    N = (size_t)B * S;
    if ((st = ebt__check_ids(targets, N, m->cfg.vocab_size, "target", m->err, EBT__ERRLEN)) != EBT_OK) return st;
    if (m->cfg.arch != EBT_ARCH_EBT) return EBT_OK;   /* transformer++ does not think: no logits, no step sizes */
    if ((st = ebt__check_vec(init_logits, N * m->cfg.vocab_size, "init_logits", 0, m->err, EBT__ERRLEN)) != EBT_OK) return st;
    return ebt__check_vec(alpha_mult, N, "alpha_mult", 0, m->err, EBT__ERRLEN);
}

/* The randomness of the current optimiser step: K, drawn per step, and the
 * seeds of the per-sequence streams (y_0, step sizes, replay picks, noise) */
typedef struct { int K; uint64_t y0, u, rep, noise; } ebt__train_draw;

static ebt__train_draw ebt__draw_step(const ebt_model *m, const ebt_train_opts *o)
{
    ebt__train_draw d;
    ebt__rng rng;
    uint64_t k;
    ebt__rng_stream(&rng, o->seed, 0x747261696eULL, (uint64_t)m->opt.step);
    k = ebt__rng_u64(&rng);
    d.K = o->k_min + (o->k_max > o->k_min ? (int)(k % (uint64_t)(o->k_max - o->k_min + 1)) : 0);
    d.y0 = ebt__rng_u64(&rng); d.u = ebt__rng_u64(&rng); d.rep = ebt__rng_u64(&rng); d.noise = ebt__rng_u64(&rng);
    return d;
}

/* the seed of the Langevin noise of thinking step k */
static uint64_t ebt__noise_seed(const ebt__train_draw *d, int k)
{
    uint64_t x = d->noise + (uint64_t)k * 0x632be59bd9b4e019ULL;
    return ebt__splitmix(&x);
}

/* Grows what a micro-batch of B x S needs (the model's workspace, the
 * training scratch for K steps, the pending replay rows) without changing
 * the model; EBT_ERR_NOMEM if it cannot */
static ebt_status ebt__train_reserve(ebt_model *m, const ebt_train_opts *o, int B, int S, int K)
{
    size_t N = (size_t)B * S, nv = N * m->cfg.vocab_size, n;
    int ovf = 0, V = m->cfg.vocab_size;
    ebt_status st = ebt__model_ws(m, B, S);
    if (st != EBT_OK || m->cfg.arch != EBT_ARCH_EBT) return st;
    n = ebt__tscratch_size(K, N, nv, m->n_params + EBT__NSUMS, &ovf);
    if (ovf || n > SIZE_MAX / sizeof(ebt_real) || !ebt__grow(&m->tbuf, &m->tbuf_bytes, n * sizeof(ebt_real))) {
        ebt__seterr(m->err, EBT__ERRLEN, "out of memory for the training scratch");
        return EBT_ERR_NOMEM;
    }
    if (o->replay_capacity > 0 && (m->pend.count + B > m->pend.rows || m->pend.S != S)) {   /* pending rows for the ring */
        /* pending rows of another S are dropped: ebt_train_accumulate refuses
         * them before this, ebt_train_step/grad start the step afresh */
        int keep = m->pend.S == S ? m->pend.count : 0, have = m->pend.S == S ? m->pend.rows : 0;
        int rows = keep + B > 2 * have ? keep + B : 2 * have;
        ebt_real *y = (ebt_real *)EBT_MALLOC(ebt__mul(ebt__mul((size_t)rows, (size_t)S * V, &ovf), sizeof(ebt_real), &ovf));
        int32_t *t = (int32_t *)EBT_MALLOC(ebt__mul((size_t)rows * 2, (size_t)S * sizeof(int32_t), &ovf));
        if (ovf || !y || !t) {
            EBT_FREE(y); EBT_FREE(t);
            ebt__seterr(m->err, EBT__ERRLEN, "out of memory for the pending replay sequences");
            return EBT_ERR_NOMEM;
        }
        if (keep) {
            memcpy(y, m->pend.y, sizeof(ebt_real) * (size_t)keep * S * V);
            memcpy(t, m->pend.tok, sizeof(int32_t) * (size_t)keep * S);
            memcpy(t + (size_t)rows * S, m->pend.tgt, sizeof(int32_t) * (size_t)keep * S);
        }
        m->pend.count = keep;
        EBT_FREE(m->pend.y); EBT_FREE(m->pend.tok);
        m->pend.y = y; m->pend.tok = t; m->pend.tgt = t + (size_t)rows * S; m->pend.rows = rows; m->pend.S = S;
    }
    return EBT_OK;
}

/* One ebt_train_accumulate on arch ebt: sizes, scratch and the running sums */
typedef struct {
    ebt_model *m;
    const ebt_train_opts *o;
    ebt_workspace *ws;
    ebt__train_draw d;
    ebt__tscratch t;
    int B, S, V, N, K, nt;
    size_t nv;
    long first_seq;
    double weight, alpha_eff, galpha, loss, ce_first, ce_last, e_first, e_last;
} ebt__trainer;

/* setup: the batch (with replayed sequences), y_0, step sizes, the observation */
static void ebt__train_setup(ebt__trainer *T, const int32_t *tokens, const int32_t *targets, const ebt_real *init_logits,
                             const ebt_real *alpha_mult)
{
    ebt_model *m = T->m;
    const ebt_train_opts *o = T->o;
    int B = T->B, S = T->S, V = T->V, nrep = 0;
    long row0 = T->first_seq * S;
    memcpy(T->t.tok, tokens, sizeof(int32_t) * (size_t)T->N);
    memcpy(T->t.tgt, targets, sizeof(int32_t) * (size_t)T->N);
    if (init_logits) memcpy(T->t.ys, init_logits, sizeof(ebt_real) * T->nv);
    else ebt__normal_rows(T->t.ys, NULL, o->init_scale, T->d.y0, row0, T->N, V, T->nt);
    /* replay: the last round(replay_frac G) sequences of the global batch of
     * G = B / weight sequences continue past ones from their final logits
     * (decided by global index, so a split of the batch replays the same
     * sequences, from this model's own ring) */
    if (o->replay_capacity > 0 && o->replay_frac > 0 && m->rb.count > 0 && m->rb.S == S) {
        long G = (long)(B / T->weight + 0.5), first = T->first_seq;
        nrep = (int)(o->replay_frac * (double)G + 0.5);
        nrep = nrep < m->rb.count ? nrep : m->rb.count;
        for (int b = 0; b < B; b++) {
            int e;
            ebt__rng r;
            if (first + b < G - nrep) continue;
            ebt__rng_stream(&r, T->d.rep, 0x7265706cULL, (uint64_t)(T->first_seq + b));
            e = (int)(ebt__rng_u64(&r) % (uint64_t)m->rb.count);
            memcpy(T->t.tok + (size_t)b * S, m->rb.tok + (size_t)e * S, sizeof(int32_t) * S);
            memcpy(T->t.tgt + (size_t)b * S, m->rb.tgt + (size_t)e * S, sizeof(int32_t) * S);
            memcpy(T->t.ys + (size_t)b * S * V, m->rb.y + (size_t)e * S * V, sizeof(ebt_real) * S * V);
        }
    }
    for (int n = 0; n < T->N; n++) {
        double r = o->alpha_rand;
        ebt__rng rr;
        if (!alpha_mult && r > 1) ebt__rng_stream(&rr, T->d.u, 0x616c7068ULL, (uint64_t)(row0 + n));
        T->t.u[n] = alpha_mult ? alpha_mult[n] : (ebt_real)(r > 1 ? 1 / r + ebt__rng_unif(&rr) * (r - 1 / r) : 1);
    }
    ebt__observe(T->ws, T->t.tok, B, S, 0);
}

/* detach mode differentiates each step on its own (p_k is a constant), so
 * its mixed term is taken right after the step, while the step's
 * activations are still in the workspace; the other modes run the backward
 * over the steps afterwards */
static int ebt__train_early(const ebt__trainer *T) { return T->o->mode == EBT_MODE_DETACH; }

/* forward: y_{k+1} = p_k - alpha_i g_k for k < K, the cross-entropies, and
 * (detach) each step's second-order term; EBT_ERR_NONFINITE (message set) if
 * an energy, gradient or the loss is not finite */
static ebt_status ebt__train_forward(ebt__trainer *T)
{
    const ebt_train_opts *o = T->o;
    ebt__tscratch *t = &T->t;
    int N = T->N, V = T->V, K = T->K, nt = T->nt, early = ebt__train_early(T);
    size_t nv = T->nv;
    for (int k = 0; k < K; k++) {
        ebt_real *yk = t->ys + k * nv, *pk = t->ps + k * nv, *gk = t->gs + k * nv, *y1 = t->ys + (k + 1) * nv;
        double esum = 0, ce;
        if (o->noise > 0) {   /* Langevin: p_k = softmax(y_k + sigma N(0,1)); y_k itself stays */
            ebt__normal_rows(t->hv, yk, o->noise, ebt__noise_seed(&T->d, k), T->first_seq * T->S, N, V, nt);
            ebt__softmax_rows(pk, t->hv, (size_t)N, V, nt);
        } else {
            ebt__softmax_rows(pk, yk, (size_t)N, V, nt);
        }
        ebt__observe_step(T->ws, k);
        ebt__pred_forward(T->ws, pk);
        ebt__pred_dEdp(T->ws, pk, gk);
        for (int n = 0; n < N; n++) esum += T->ws->energy[n];
        if (!isfinite(esum) || !ebt__all_finite(gk, nv)) {
            ebt__seterr(T->m->err, EBT__ERRLEN, "energy or its gradient is not finite at thinking step %d", k);
            return EBT_ERR_NONFINITE;
        }
        if (k == 0) T->e_first = esum / N;
        T->e_last = esum / N;
        ebt__scale_rows(y1, pk, gk, t->u, -T->alpha_eff, N, V, nt);   /* y_{k+1} = p_k - alpha_i g_k */
        /* loss: mean over steps (detach, full) or the last step (truncate) */
        ce = ebt__ce_rows(y1, t->tgt, N, V, T->weight / K, early ? t->ybar : NULL, t->rowbuf, nt);
        if (k == 0) T->ce_first = ce;
        T->ce_last = ce;
        T->loss += o->mode == EBT_MODE_TRUNCATE ? (k == K - 1 ? ce : 0) : ce / K;
        if (!isfinite(T->loss)) { ebt__seterr(T->m->err, EBT__ERRLEN, "loss is not finite"); return EBT_ERR_NONFINITE; }
        if (early) ebt__mixed_step(T->ws, T->m, pk, gk, t->ybar, t->vv, t->hv, t->u, T->alpha_eff, &T->galpha, t->rowbuf);
    }
    return EBT_OK;
}

/* backward through the steps (truncate, full); ybar = d loss / d y_{k+1} */
static void ebt__train_backward(ebt__trainer *T)
{
    const ebt_train_opts *o = T->o;
    ebt__tscratch *t = &T->t;
    int N = T->N, V = T->V, K = T->K, nt = T->nt;
    size_t nv = T->nv;
    ebt__ce_rows(t->ys + K * nv, t->tgt, N, V, T->weight * (o->mode == EBT_MODE_TRUNCATE ? 1.0 : 1.0 / K), t->ybar, t->rowbuf, nt);
    ebt__zero_acc(T->ws);
    for (int k = K - 1; k >= 0; k--) {
        ebt_real *pk = t->ps + k * nv, *gk = t->gs + k * nv, *ybar = t->ybar;
        const ebt_real *hv = t->hv;
        int second = o->mode != EBT_MODE_TRUNCATE || k == K - 1;
        if (second) {
            ebt__observe_step(T->ws, k);
            if (k < K - 1) ebt__pred_forward(T->ws, pk);  /* step K-1's activations are still in ws */
            ebt__mixed_step(T->ws, T->m, pk, gk, ybar, t->vv, t->hv, t->u, T->alpha_eff, &T->galpha, t->rowbuf);
        } else {
            ebt__alpha_grad(ybar, gk, t->u, N, V, &T->galpha, t->rowbuf, nt);
        }
        /* pbar = ybar (I - alpha H) ; ybar_k = softmax'(y_k)^T pbar + lambda_k */
        ebt__softmax_back_rows(ybar, pk, hv, second, N, V, nt);
        if (k >= 1 && o->mode == EBT_MODE_FULL) {
            ebt__ce_rows(t->ys + k * nv, t->tgt, N, V, T->weight / K, t->vv, t->rowbuf, nt);
            for (size_t i = 0; i < nv; i++) ybar[i] += t->vv[i];
        }
    }
}

/* the micro-batch's sequences and final logits join the pending replay rows */
static void ebt__pend_push(ebt_model *m, const ebt__trainer *T)
{
    ebt__replay *p = &m->pend;
    size_t sv = (size_t)T->S * T->V;
    if (T->o->replay_capacity <= 0) return;
    memcpy(p->tok + (size_t)p->count * T->S, T->t.tok, sizeof(int32_t) * (size_t)T->N);
    memcpy(p->tgt + (size_t)p->count * T->S, T->t.tgt, sizeof(int32_t) * (size_t)T->N);
    memcpy(p->y + (size_t)p->count * sv, T->t.ys + (size_t)T->K * T->nv, sizeof(ebt_real) * T->nv);
    p->S = T->S;
    p->count += T->B;
}

/* weight * (1, loss, ce_first, ce_last, energy_first, energy_last) into the sums */
static void ebt__add_sums(ebt_model *m, double w, double loss, double ce1, double ce2, double e1, double e2)
{
    ebt_real *s = m->grads + m->n_params;
    s[0] += (ebt_real)w; s[1] += (ebt_real)(w * loss); s[2] += (ebt_real)(w * ce1);
    s[3] += (ebt_real)(w * ce2); s[4] += (ebt_real)(w * e1); s[5] += (ebt_real)(w * e2);
}

/* ebt_train_accumulate on arch ebt, after the checks and ebt__train_reserve */
static ebt_status ebt__accumulate_ebt(ebt_model *m, const ebt_train_opts *opts, const int32_t *tokens, const int32_t *targets,
                                      int B, int S, long first_seq, double weight, const ebt_real *init_logits,
                                      const ebt_real *alpha_mult)
{
    ebt__trainer T;
    ebt_status st;
    size_t ng = m->n_params + EBT__NSUMS;
    memset(&T, 0, sizeof T);
    T.m = m; T.o = opts; T.ws = m->ws; T.d = ebt__draw_step(m, opts);
    T.B = B; T.S = S; T.V = m->cfg.vocab_size; T.N = B * S; T.K = T.d.K; T.nt = ebt__nt(T.ws->threads);
    T.nv = (size_t)T.N * T.V; T.first_seq = first_seq; T.weight = weight; T.alpha_eff = ebt__alpha_eff(m);
    T.t = ebt__tscratch_at((ebt_real *)m->tbuf, T.K, (size_t)T.N, T.nv, ng);
    ebt__train_setup(&T, tokens, targets, init_logits, alpha_mult);
    if (ebt__train_early(&T)) {   /* gradients change during the forward: keep a copy */
        memcpy(T.t.gsave, m->grads, sizeof(ebt_real) * ng);
        ebt__zero_acc(T.ws);
    }
    if ((st = ebt__train_forward(&T)) != EBT_OK) {
        if (ebt__train_early(&T)) memcpy(m->grads, T.t.gsave, sizeof(ebt_real) * ng);
        return st;
    }
    if (!ebt__train_early(&T)) ebt__train_backward(&T);
    if (m->cfg.n_step_embed == 0) ebt__obs_backward(T.ws, m, NULL);
    if (opts->learn_alpha && m->w.alpha[0] > 1e-4) m->g.alpha[0] += (ebt_real)T.galpha;
    ebt__add_sums(m, weight, T.loss, T.ce_first, T.ce_last, T.e_first, T.e_last);
    ebt__pend_push(m, &T);
    m->train_K = T.K;
    return EBT_OK;
}

/* the checks of ebt_train_accumulate beyond ebt__check_train */
static ebt_status ebt__check_accumulate(ebt_model *m, const ebt_train_opts *o, int S, long first_seq, double weight)
{
    if (!(weight > 0) || !isfinite(weight) || first_seq < 0 || first_seq > (LONG_MAX >> 24)) {
        ebt__seterr(m->err, EBT__ERRLEN, "weight must be finite and > 0, first_seq in [0, 2^39)");
        return EBT_ERR_ARG;
    }
    if (o->replay_capacity > 0 && m->pend.count > 0 && m->pend.S != S) {
        ebt__seterr(m->err, EBT__ERRLEN, "S=%d differs from the step's earlier micro-batches (%d) while the replay buffer is on", S, m->pend.S);
        return EBT_ERR_ARG;
    }
    return EBT_OK;
}

/* after every check and ebt__train_reserve: the gradients of either arch */
static ebt_status ebt__accumulate(ebt_model *m, const ebt_train_opts *opts, const int32_t *tokens, const int32_t *targets,
                                  int B, int S, long first_seq, double weight, const ebt_real *init_logits,
                                  const ebt_real *alpha_mult)
{
    ebt_real loss;
    ebt_status st;
    if (m->cfg.arch == EBT_ARCH_EBT)
        return ebt__accumulate_ebt(m, opts, tokens, targets, B, S, first_seq, weight, init_logits, alpha_mult);
    if ((st = ebt__lm_backward(m, tokens, targets, B, S, weight, &loss)) != EBT_OK) return st;
    ebt__add_sums(m, weight, loss, loss, loss, 0, 0);
    m->train_K = 0;
    return EBT_OK;
}

ebt_status ebt_train_accumulate(ebt_model *m, const ebt_train_opts *opts, const int32_t *tokens,
                                const int32_t *targets, int B, int S, long first_seq, double weight,
                                const ebt_real *init_logits, const ebt_real *alpha_mult)
{
    ebt_status st = ebt__check_train(m, opts, tokens, targets, B, S, init_logits, alpha_mult);
    if (st != EBT_OK || (st = ebt__check_accumulate(m, opts, S, first_seq, weight)) != EBT_OK) return st;
    if ((st = ebt__train_reserve(m, opts, B, S, ebt__draw_step(m, opts).K)) != EBT_OK) return st;
    return ebt__accumulate(m, opts, tokens, targets, B, S, first_seq, weight, init_logits, alpha_mult);
}

ebt_real *ebt_train_buffer(ebt_model *m, size_t *count)
{
    if (count) *count = m ? m->n_params + EBT__NSUMS : 0;
    return m ? m->grads : NULL;
}

/* stats from the sums (means over the accumulated weight) */
static void ebt__sums_stats(const ebt_model *m, ebt_train_stats *ts)
{
    const ebt_real *s = m->grads + m->n_params;
    double w = s[0] > 0 ? s[0] : 1;
    memset(ts, 0, sizeof *ts);
    ts->loss = s[1] / w; ts->ce_first = s[2] / w; ts->ce_last = s[3] / w;
    ts->energy_first = s[4] / w; ts->energy_last = s[5] / w;
    ts->k = m->train_K;
    ts->alpha = m->cfg.arch == EBT_ARCH_EBT ? m->w.alpha[0] : 0;
    ts->step = m->opt.step;
}

ebt_status ebt_train_grad(ebt_model *m, const ebt_train_opts *opts, const int32_t *tokens,
                          const int32_t *targets, int B, int S, const ebt_real *init_logits,
                          const ebt_real *alpha_mult, ebt_train_stats *stats)
{
    ebt_status st = ebt__check_train(m, opts, tokens, targets, B, S, init_logits, alpha_mult);
    if (st != EBT_OK) return st;
    if ((st = ebt__train_reserve(m, opts, B, S, ebt__draw_step(m, opts).K)) != EBT_OK) return st;
    ebt_zero_grad(m);
    st = ebt__accumulate(m, opts, tokens, targets, B, S, 0, 1.0, init_logits, alpha_mult);
    if (st != EBT_OK) { ebt_zero_grad(m); return st; }
    if (stats) ebt__sums_stats(m, stats);
    return EBT_OK;
}

/* AdamW on parameters [i0, i1) in blocks over nt threads: apply 0 only
 * checks that the update stays finite (returns 1 if not), apply 1 writes it */
EBT__SIMD static int ebt__adamw(ebt_model *m, ebt_real *M, ebt_real *Vs, size_t i0, size_t i1, double scale,
                      const ebt_train_opts *o, double tlr, double wd, double b1t, double b2t, int apply, int nt)
{
    int bad = 0;
    long nb = (long)((i1 - i0 + 4095) / 4096);
    EBT__PARFOR_OR(nt, i1 - i0, bad)
    for (long b = 0; b < nb; b++) {
        size_t e = i0 + (size_t)(b + 1) * 4096 < i1 ? i0 + (size_t)(b + 1) * 4096 : i1;
        for (size_t i = i0 + (size_t)b * 4096; i < e; i++) {
            double g = m->grads[i] * scale;
            double mm = o->beta1 * M[i] + (1 - o->beta1) * g;
            double vv = o->beta2 * Vs[i] + (1 - o->beta2) * g * g;
            double p = m->params[i] * (1 - tlr * wd) - tlr * (mm / b1t) / (sqrt(vv / b2t) + o->eps);
            if (!apply) {
                if (!isfinite(p) || !isfinite(mm) || !isfinite(vv) || !isfinite((ebt_real)p) || !isfinite((ebt_real)vv)) bad = 1;
            } else {
                M[i] = (ebt_real)mm;
                Vs[i] = (ebt_real)vv;
                m->params[i] = (ebt_real)p;
            }
        }
    }
    return bad;
}

/* learning rate at optimiser step t: linear warm-up, then cosine to min_lr
 * (over the steps, or over the caller's progress) */
static double ebt__lr_at(const ebt_train_opts *o, long t)
{
    double prog;
    if (t < o->warmup_steps) return o->lr * (double)(t + 1) / (double)o->warmup_steps;
    if (o->progress >= 0) prog = o->progress;
    else if (o->total_steps <= o->warmup_steps) return o->min_lr;
    else prog = (double)(t - o->warmup_steps) / (double)(o->total_steps - o->warmup_steps);
    if (prog > 1) prog = 1;
    return o->min_lr + 0.5 * (1 + cos(3.14159265358979323846 * prog)) * (o->lr - o->min_lr);
}

/* 1 if the current replay ring is the options' (capacity and length S) */
static int ebt__replay_same(const ebt_model *m, const ebt_train_opts *o, int S)
{
    return m->rb.y && m->rb.cap == o->replay_capacity && m->rb.S == S;
}

/* What an optimiser step allocates before anything changes: the AdamW
 * moments of a first step, and the replay ring grown (or renewed) for the
 * pending sequences. The ring holds only the rows it has filled and grows
 * (doubling, up to its capacity); a ring of another capacity or length S
 * starts again, empty. */
typedef struct { ebt_real *om, *ov, *ry; int32_t *rt; int rrows; } ebt__step_alloc;

static void ebt__step_alloc_free(ebt__step_alloc *a)
{
    EBT_FREE(a->om); EBT_FREE(a->ov); EBT_FREE(a->ry); EBT_FREE(a->rt);
    memset(a, 0, sizeof *a);
}

static ebt_status ebt__step_allocate(const ebt_model *m, const ebt_train_opts *o, int npend, int S, ebt__step_alloc *a)
{
    int V = m->cfg.vocab_size, ovf = 0, cap = o->replay_capacity, same = ebt__replay_same(m, o, S);
    int have = same ? m->rb.rows : 0, count = same ? m->rb.count : 0;
    int need = count + npend < cap ? count + npend : cap, r;
    size_t np = m->n_params;
    memset(a, 0, sizeof *a);
    if (!m->opt.m) {
        a->om = (ebt_real *)EBT_MALLOC(np * sizeof(ebt_real));
        a->ov = (ebt_real *)EBT_MALLOC(np * sizeof(ebt_real));
        if (!a->om || !a->ov) goto nomem;
        memset(a->om, 0, np * sizeof(ebt_real));
        memset(a->ov, 0, np * sizeof(ebt_real));
    }
    if (cap <= 0 || npend <= 0 || m->cfg.arch != EBT_ARCH_EBT || (same && need <= have)) return EBT_OK;
    r = need > 2 * have ? need : 2 * have < cap ? 2 * have : cap;
    a->ry = (ebt_real *)EBT_MALLOC(ebt__mul(ebt__mul((size_t)r, (size_t)S * V, &ovf), sizeof(ebt_real), &ovf));
    a->rt = (int32_t *)EBT_MALLOC(ebt__mul((size_t)r * 2, (size_t)S * sizeof(int32_t), &ovf));
    if (ovf || !a->ry || !a->rt) goto nomem;
    if (have) {   /* keep the filled rows */
        memcpy(a->ry, m->rb.y, sizeof(ebt_real) * (size_t)have * S * V);
        memcpy(a->rt, m->rb.tok, sizeof(int32_t) * (size_t)have * S);
        memcpy(a->rt + (size_t)r * S, m->rb.tgt, sizeof(int32_t) * (size_t)have * S);
    }
    a->rrows = r;
    return EBT_OK;
nomem:
    ebt__step_alloc_free(a);
    return EBT_ERR_NOMEM;
}

/* installs what ebt__step_allocate made (the step happens): new moments, a
 * new ring (starting empty) or a grown one (keeping its ring order) */
static void ebt__step_install(ebt_model *m, const ebt_train_opts *o, int S, ebt__step_alloc *a)
{
    if (a->om) { m->opt.m = a->om; m->opt.v = a->ov; }
    if (a->ry) {
        if (!ebt__replay_same(m, o, S)) { m->rb.cap = o->replay_capacity; m->rb.S = S; m->rb.count = 0; m->rb.next = 0; }
        EBT_FREE(m->rb.y); EBT_FREE(m->rb.tok);
        m->rb.y = a->ry; m->rb.tok = a->rt; m->rb.tgt = a->rt + (size_t)a->rrows * S; m->rb.rows = a->rrows;
    }
    memset(a, 0, sizeof *a);
}

/* the pending sequences into the replay ring */
static void ebt__replay_push(ebt_model *m, const ebt_train_opts *o)
{
    int S = m->pend.S, V = m->cfg.vocab_size;
    if (o->replay_capacity <= 0 || m->cfg.arch != EBT_ARCH_EBT || !m->rb.y) return;
    for (int b = 0; b < m->pend.count; b++) {
        int e = m->rb.next;
        memcpy(m->rb.tok + (size_t)e * S, m->pend.tok + (size_t)b * S, sizeof(int32_t) * S);
        memcpy(m->rb.tgt + (size_t)e * S, m->pend.tgt + (size_t)b * S, sizeof(int32_t) * S);
        memcpy(m->rb.y + (size_t)e * S * V, m->pend.y + (size_t)b * S * V, sizeof(ebt_real) * S * V);
        m->rb.next = (e + 1) % m->rb.cap;
        if (m->rb.count < m->rb.cap) m->rb.count++;
    }
}

/* ebt_train_apply with its allocations made: clip, AdamW (pass 0 checks
 * that the update stays finite, pass 1 applies it), replay push */
static ebt_status ebt__apply(ebt_model *m, const ebt_train_opts *opts, ebt__step_alloc *al, ebt_train_stats *stats)
{
    ebt_train_stats ts;
    double norm2 = 0, scale = 1, lr, b1t, b2t;
    int nt = ebt__nt(m->ws ? m->ws->threads : m->threads);
    ebt__sums_stats(m, &ts);
    for (size_t i = 0; i < m->n_params; i++) norm2 += (double)m->grads[i] * m->grads[i];
    if (!isfinite(norm2)) { ebt__seterr(m->err, EBT__ERRLEN, "gradients are not finite; step refused"); goto refuse; }
    ts.grad_norm = sqrt(norm2);
    if (opts->grad_clip > 0 && ts.grad_norm > opts->grad_clip) scale = opts->grad_clip / ts.grad_norm;
    lr = ebt__lr_at(opts, m->opt.step);
    b1t = 1 - pow(opts->beta1, (double)(m->opt.step + 1));
    b2t = 1 - pow(opts->beta2, (double)(m->opt.step + 1));
    for (int pass = 0; pass < 2; pass++) {
        ebt_real *M = al->om ? al->om : m->opt.m, *Vs = al->ov ? al->ov : m->opt.v;
        if (pass == 1) ebt__step_install(m, opts, m->pend.S, al);   /* the step happens */
        for (int t = 0; t < m->nt; t++) {
            const ebt__tensor *T = &m->t[t];
            int is_alpha = m->cfg.arch == EBT_ARCH_EBT && m->params + T->off == m->w.alpha;
            double tlr = is_alpha ? lr * opts->alpha_lr_mult : lr, wd = T->decay ? opts->weight_decay : 0;
            if (is_alpha && !opts->learn_alpha) continue;
            if (ebt__adamw(m, M, Vs, T->off, T->off + T->count, scale, opts, tlr, wd, b1t, b2t, pass, nt)) {
                ebt__seterr(m->err, EBT__ERRLEN, "the update of %s is not finite; step refused", T->name);
                goto refuse;
            }
        }
    }
    m->opt.step++;
    ebt__replay_push(m, opts);
    m->pend.count = 0;
    ts.lr = lr;
    ts.alpha = m->cfg.arch == EBT_ARCH_EBT ? m->w.alpha[0] : 0;
    ts.step = m->opt.step;
    if (stats) *stats = ts;
    return EBT_OK;
refuse:
    ebt__step_alloc_free(al);
    ebt_zero_grad(m);
    return EBT_ERR_NONFINITE;
}

ebt_status ebt_train_apply(ebt_model *m, const ebt_train_opts *opts, ebt_train_stats *stats)
{
    ebt__step_alloc al;
    ebt_status st;
    if (!m) return EBT_ERR_ARG;
    m->err[0] = 0;
    if ((st = ebt__check_train_opts(opts, m->err)) != EBT_OK) return st;
    if (ebt__step_allocate(m, opts, m->pend.count, m->pend.S, &al) != EBT_OK) {
        ebt__seterr(m->err, EBT__ERRLEN, "out of memory for the optimiser state or the replay buffer");
        return EBT_ERR_NOMEM;
    }
    return ebt__apply(m, opts, &al, stats);
}

ebt_status ebt_train_step(ebt_model *m, const ebt_train_opts *opts, const int32_t *tokens,
                          const int32_t *targets, int B, int S, const ebt_real *init_logits,
                          ebt_train_stats *stats)
{
    ebt__step_alloc al;
    ebt_status st = ebt__check_train(m, opts, tokens, targets, B, S, init_logits, NULL);
    if (st != EBT_OK) return st;
    /* everything the step allocates, before anything changes: on
     * EBT_ERR_NOMEM the model is as it was, gradients included */
    if ((st = ebt__train_reserve(m, opts, B, S, ebt__draw_step(m, opts).K)) != EBT_OK) return st;
    if (ebt__step_allocate(m, opts, opts->replay_capacity > 0 ? B : 0, S, &al) != EBT_OK) {
        ebt__seterr(m->err, EBT__ERRLEN, "out of memory for the optimiser state or the replay buffer");
        return EBT_ERR_NOMEM;
    }
    ebt_zero_grad(m);
    if ((st = ebt__accumulate(m, opts, tokens, targets, B, S, 0, 1.0, init_logits, NULL)) != EBT_OK) {
        ebt__step_alloc_free(&al);
        ebt_zero_grad(m);
        return st;
    }
    return ebt__apply(m, opts, &al, stats);
}

/* ======================================================================
 * SAFETENSORS: a strict reader (every header byte validated, nothing sized
 * by the file allocated before it is checked against the file's size) and
 * an atomic writer (temporary file, fsync, rename).
 * ====================================================================== */
#define EBT__ST_MAX_DIMS 4
#define EBT__ST_NAME_MAX 96      /* tensor name or metadata key, incl. NUL */
#define EBT__ST_VAL_MAX 96       /* metadata value, incl. NUL */
#define EBT__ST_HEADER_MAX (64u << 20)  /* largest JSON header accepted / written */
#define EBT__ST_MAX_DEPTH 32            /* JSON nesting limit (bounds skip recursion) */
#define EBT__ST_MAX_TENSORS 65536       /* bound memory: a 64 MiB header could name ~1M tensors */
#define EBT__ST_MAX_META 4096
#define EBT__ST_DIM_MAX ((uint64_t)1 << 31)

typedef struct { char name[EBT__ST_NAME_MAX]; int ndim; int64_t shape[EBT__ST_MAX_DIMS];
                 uint64_t begin, end; /* data_offsets, relative to data start */ } ebt__st_tensor;
typedef struct { char key[EBT__ST_NAME_MAX]; char val[EBT__ST_VAL_MAX]; } ebt__st_meta;
typedef struct { ebt__st_tensor *t; int nt; ebt__st_meta *meta; int nmeta;
                 uint64_t data_start; /* = 8 + header length */ uint64_t data_len; /* file size - data_start */ } ebt__st_header;
typedef struct { const char *name; int ndim; int64_t shape[EBT__ST_MAX_DIMS]; const ebt_real *data; } ebt__st_out;

/* F32 data is moved through uint32_t with memcpy: needs a 4-byte IEEE float (all targets we support). */
typedef char ebt__st_float_is_32bit[sizeof(float) == 4 ? 1 : -1];

typedef unsigned long long ebt__st_ull; /* for printf */

/* ---- strict JSON scanner over a length-delimited buffer (never relies on NUL) ---- */
typedef struct { const unsigned char *s; size_t n, i; int depth; uint64_t data_len;
                 char *err; size_t errlen; ebt_status st; } ebt__st_js;

/* semantic error: formats message, returns -1 (status stays EBT_ERR_FORMAT) */
#define EBT__ST_BAD(p, ...) (ebt__seterr((p)->err, (p)->errlen, __VA_ARGS__), -1)

static int ebt__st_syn(ebt__st_js *p, const char *why)
{
    ebt__seterr(p->err, p->errlen, "safetensors: invalid JSON header at byte %zu: %s", p->i, why);
    return -1;
}
static void ebt__st_ws(ebt__st_js *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}
static int ebt__st_at(ebt__st_js *p, char c) { ebt__st_ws(p); return p->i < p->n && p->s[p->i] == (unsigned char)c; }
static int ebt__st_expect(ebt__st_js *p, char c)
{
    char why[16];
    if (ebt__st_at(p, c)) { p->i++; return 0; }
    snprintf(why, sizeof why, "expected '%c'", c);
    return ebt__st_syn(p, why);
}
/* consumes '{' or '[' and enters one nesting level */
static int ebt__st_open(ebt__st_js *p, char c)
{
    if (ebt__st_expect(p, c)) return -1;
    if (++p->depth > EBT__ST_MAX_DEPTH) return ebt__st_syn(p, "nesting too deep");
    return 0;
}
/* container iteration after ebt__st_open: 1 = another element follows, 0 = closed, -1 = error.
 * A ',' always returns 1, so a trailing comma fails when the caller parses the next element. */
static int ebt__st_next(ebt__st_js *p, char close, int *first)
{
    if (ebt__st_at(p, close)) { p->i++; p->depth--; return 0; }
    if (*first) { *first = 0; return 1; }
    if (ebt__st_at(p, ',')) { p->i++; return 1; }
    return ebt__st_syn(p, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}
static int ebt__st_hex4(ebt__st_js *p, unsigned *v)
{
    int k;
    *v = 0;
    if (p->n - p->i < 4) return ebt__st_syn(p, "truncated \\u escape");
    for (k = 0; k < 4; k++) {
        unsigned c = p->s[p->i++], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') d = (c | 0x20) - 'a' + 10;
        else return ebt__st_syn(p, "bad hex digit in \\u escape");
        *v = *v << 4 | d;
    }
    return 0;
}
/* Parses a string. Copies at most cap-1 bytes into out (if out), always NUL-terminated, and stores
 * the full decoded length in *len so callers can detect values too long for their buffer.
 * \uXXXX (incl. surrogate pairs) is decoded to UTF-8; \u0000 and lone surrogates are rejected so
 * that a C string can never be cut short ("a\u0000b" must not alias "a"). Raw bytes >= 0x80 are
 * copied as-is (not UTF-8-validated). */
static int ebt__st_str(ebt__st_js *p, char *out, size_t cap, size_t *len)
{
    size_t k = 0;
    if (ebt__st_expect(p, '"')) return -1;
    for (;;) {
        unsigned char u[4]; int nu = 1, j; unsigned c, lo;
        if (p->i >= p->n) return ebt__st_syn(p, "unterminated string");
        c = p->s[p->i++];
        if (c == '"') break;
        if (c < 0x20) return ebt__st_syn(p, "control character in string");
        if (c == '\\') {
            if (p->i >= p->n) return ebt__st_syn(p, "unterminated string");
            switch (c = p->s[p->i++]) {
            case '"': case '\\': case '/': break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u':
                if (ebt__st_hex4(p, &c)) return -1;
                if (c == 0) return ebt__st_syn(p, "\\u0000 not allowed");
                if (c >= 0xDC00 && c <= 0xDFFF) return ebt__st_syn(p, "lone low surrogate");
                if (c >= 0xD800 && c <= 0xDBFF) {
                    if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
                        return ebt__st_syn(p, "lone high surrogate");
                    p->i += 2;
                    if (ebt__st_hex4(p, &lo)) return -1;
                    if (lo < 0xDC00 || lo > 0xDFFF) return ebt__st_syn(p, "bad surrogate pair");
                    c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (c >= 0x10000) { u[0] = (unsigned char)(0xF0 | c >> 18); nu = 4; }
                else if (c >= 0x800) { u[0] = (unsigned char)(0xE0 | c >> 12); nu = 3; }
                else if (c >= 0x80) { u[0] = (unsigned char)(0xC0 | c >> 6); nu = 2; }
                for (j = 1; j < nu; j++) u[j] = (unsigned char)(0x80 | ((c >> (6 * (nu - 1 - j))) & 0x3F));
                break;
            default: p->i--; return ebt__st_syn(p, "bad escape in string");
            }
        }
        if (nu == 1) u[0] = (unsigned char)c;
        for (j = 0; j < nu; j++, k++)
            if (out && k + 1 < cap) out[k] = (char)u[j];
    }
    if (out && cap) out[k < cap ? k : cap - 1] = '\0';
    *len = k;
    return 0;
}
static size_t ebt__st_digits(ebt__st_js *p)
{
    size_t st = p->i;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    return p->i - st;
}
/* Non-negative integer <= max: digits only (no sign, fraction or exponent), no leading zeros,
 * overflow checked per digit. Returns 0, or 1 on anything else (caller names the field). */
static int ebt__st_uint(ebt__st_js *p, uint64_t max, uint64_t *v)
{
    size_t st;
    uint64_t x = 0;
    ebt__st_ws(p);
    st = p->i;
    for (; p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9'; p->i++) {
        unsigned d = p->s[p->i] - '0';
        if (x > (max - d) / 10) return 1;
        x = x * 10 + d;
    }
    if (p->i == st || (p->i - st > 1 && p->s[st] == '0')) return 1;
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E')) return 1;
    *v = x;
    return 0;
}
/* validates and skips any JSON value; recursion is bounded by EBT__ST_MAX_DEPTH */
static int ebt__st_skip(ebt__st_js *p)
{
    static const char *const lit[3] = { "true", "false", "null" };
    size_t len, k;
    int first = 1, r;
    unsigned char c;
    ebt__st_ws(p);
    if (p->i >= p->n) return ebt__st_syn(p, "unexpected end of header");
    c = p->s[p->i];
    if (c == '"') return ebt__st_str(p, NULL, 0, &len);
    if (c == '{' || c == '[') {
        if (ebt__st_open(p, (char)c)) return -1;
        while ((r = ebt__st_next(p, c == '{' ? '}' : ']', &first)) == 1) {
            if (c == '{' && (ebt__st_str(p, NULL, 0, &len) || ebt__st_expect(p, ':'))) return -1;
            if (ebt__st_skip(p)) return -1;
        }
        return r;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {  /* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
        if (c == '-') p->i++;
        if (p->i < p->n && p->s[p->i] == '0') p->i++;
        else if (!ebt__st_digits(p)) return ebt__st_syn(p, "bad number");
        if (p->i < p->n && p->s[p->i] == '.') {
            p->i++;
            if (!ebt__st_digits(p)) return ebt__st_syn(p, "bad number");
        }
        if (p->i < p->n && (p->s[p->i] | 0x20) == 'e') {
            p->i++;
            if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
            if (!ebt__st_digits(p)) return ebt__st_syn(p, "bad number");
        }
        if (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') return ebt__st_syn(p, "leading zero");
        return 0;
    }
    for (k = 0; k < 3; k++) {
        len = strlen(lit[k]);
        if (p->n - p->i >= len && !memcmp(p->s + p->i, lit[k], len)) { p->i += len; return 0; }
    }
    return ebt__st_syn(p, "unexpected character");
}

/* ---- header semantics ---- */
static void *ebt__st_grow(ebt__st_js *p, void *arr, int *cap, int n, size_t elsz, int max, const char *what)
{
    void *q;
    int nc;
    if (n < *cap) return arr;
    if (n >= max) { ebt__seterr(p->err, p->errlen, "safetensors: more than %d %s in header", max, what); return NULL; }
    nc = *cap ? (*cap > max / 2 ? max : *cap * 2) : 16;
    if (!(q = EBT_REALLOC(arr, (size_t)nc * elsz))) {
        p->st = EBT_ERR_NOMEM;
        ebt__seterr(p->err, p->errlen, "safetensors: out of memory reading header");
        return NULL;
    }
    *cap = nc;
    return q;
}
static int ebt__st_cmpstr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }
/* Sorts v in place and returns a string occurring twice, or NULL. O(n log n): an O(n^2) scan
 * would be a DoS with tens of thousands of names. */
static const char *ebt__st_dup(const char **v, int n)
{
    int i;
    if (n > 1) qsort(v, (size_t)n, sizeof *v, ebt__st_cmpstr);
    for (i = 1; i < n; i++) if (!strcmp(v[i - 1], v[i])) return v[i];
    return NULL;
}
static int ebt__st_cmprange(const void *a, const void *b)
{
    const ebt__st_tensor *x = *(const ebt__st_tensor *const *)a, *y = *(const ebt__st_tensor *const *)b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* one tensor entry: {"dtype":"F32","shape":[...],"data_offsets":[b,e], ...ignored fields} */
static int ebt__st_entry(ebt__st_js *p, ebt__st_tensor *t)
{
    char key[16], dt[8];
    size_t len;
    int first = 1, r, seen = 0, bit, k;
    uint64_t v, cnt = 1;
    if (!ebt__st_at(p, '{')) return EBT__ST_BAD(p, "safetensors: tensor '%s': entry is not an object", t->name);
    if (ebt__st_open(p, '{')) return -1;
    while ((r = ebt__st_next(p, '}', &first)) == 1) {
        if (ebt__st_str(p, key, sizeof key, &len) || ebt__st_expect(p, ':')) return -1;
        bit = len >= sizeof key ? 0 : !strcmp(key, "dtype") ? 1 : !strcmp(key, "shape") ? 2 : !strcmp(key, "data_offsets") ? 4 : 0;
        if (bit & seen) return EBT__ST_BAD(p, "safetensors: tensor '%s': duplicate key '%s'", t->name, key);
        seen |= bit;
        if (bit == 1) {
            if (!ebt__st_at(p, '"')) return EBT__ST_BAD(p, "safetensors: tensor '%s': dtype is not a string", t->name);
            if (ebt__st_str(p, dt, sizeof dt, &len)) return -1;
            if (len >= sizeof dt || strcmp(dt, "F32"))
                return EBT__ST_BAD(p, "safetensors: tensor '%s': dtype '%s' not supported (only F32)", t->name, dt);
        } else if (bit == 2 || bit == 4) {
            int n = 0, f2 = 1;
            if (!ebt__st_at(p, '['))
                return EBT__ST_BAD(p, "safetensors: tensor '%s': %s is not an array", t->name, key);
            if (ebt__st_open(p, '[')) return -1;
            while ((r = ebt__st_next(p, ']', &f2)) == 1) {
                if (n == (bit == 2 ? EBT__ST_MAX_DIMS : 2))
                    return EBT__ST_BAD(p, "safetensors: tensor '%s': %s has too many entries", t->name, key);
                if (ebt__st_uint(p, bit == 2 ? EBT__ST_DIM_MAX : UINT64_MAX, &v))
                    return EBT__ST_BAD(p, "safetensors: tensor '%s': %s entries must be non-negative integers%s",
                                       t->name, key, bit == 2 ? " <= 2^31" : " < 2^64");
                if (bit == 2) t->shape[n++] = (int64_t)v;
                else if (n++) t->end = v;
                else t->begin = v;
            }
            if (r < 0) return -1;
            if (bit == 2) t->ndim = n;
            else if (n != 2) return EBT__ST_BAD(p, "safetensors: tensor '%s': data_offsets must be [begin, end]", t->name);
        } else if (ebt__st_skip(p)) return -1;  /* unknown fields are ignored (but must be valid JSON) */
    }
    if (r < 0) return -1;
    if (seen != 7)
        return EBT__ST_BAD(p, "safetensors: tensor '%s': missing %s", t->name,
                           !(seen & 1) ? "dtype" : !(seen & 2) ? "shape" : "data_offsets");
    if (t->begin > t->end || t->end > p->data_len)
        return EBT__ST_BAD(p, "safetensors: tensor '%s': data_offsets [%llu, %llu] outside data region of %llu bytes",
                           t->name, (ebt__st_ull)t->begin, (ebt__st_ull)t->end, (ebt__st_ull)p->data_len);
    /* element count; any zero dim makes it 0 (so [2^31,2^31,2^31,0] is a valid empty tensor) */
    for (k = 0; k < t->ndim; k++) if (t->shape[k] == 0) cnt = 0;
    for (k = 0; k < t->ndim && cnt; k++) {
        if (cnt > UINT64_MAX / 4 / (uint64_t)t->shape[k])
            return EBT__ST_BAD(p, "safetensors: tensor '%s': shape product overflows", t->name);
        cnt *= (uint64_t)t->shape[k];
    }
    if (t->end - t->begin != cnt * 4)  /* cnt*4 cannot overflow: checked above */
        return EBT__ST_BAD(p, "safetensors: tensor '%s': data_offsets span %llu bytes but shape needs %llu",
                           t->name, (ebt__st_ull)(t->end - t->begin), (ebt__st_ull)(cnt * 4));
    return 0;
}

static int ebt__st_metaobj(ebt__st_js *p, ebt__st_header *h, int *cap)
{
    size_t len;
    int first = 1, r;
    void *q;
    if (!ebt__st_at(p, '{')) return EBT__ST_BAD(p, "safetensors: '__metadata__' is not an object");
    if (ebt__st_open(p, '{')) return -1;
    while ((r = ebt__st_next(p, '}', &first)) == 1) {
        ebt__st_meta *m;
        if (!(q = ebt__st_grow(p, h->meta, cap, h->nmeta, sizeof *h->meta, EBT__ST_MAX_META, "metadata entries"))) return -1;
        h->meta = (ebt__st_meta *)q;
        m = &h->meta[h->nmeta];
        if (ebt__st_str(p, m->key, sizeof m->key, &len) || ebt__st_expect(p, ':')) return -1;
        if (len >= sizeof m->key)
            return EBT__ST_BAD(p, "safetensors: metadata key '%s...' too long (max %d bytes)", m->key, EBT__ST_NAME_MAX - 1);
        if (!ebt__st_at(p, '"')) return EBT__ST_BAD(p, "safetensors: metadata '%s': value is not a string", m->key);
        if (ebt__st_str(p, m->val, sizeof m->val, &len)) return -1;
        if (len >= sizeof m->val)
            return EBT__ST_BAD(p, "safetensors: metadata '%s': value too long (max %d bytes)", m->key, EBT__ST_VAL_MAX - 1);
        h->nmeta++;
    }
    return r;
}

static int ebt__st_parse(ebt__st_js *p, ebt__st_header *h)
{
    char name[EBT__ST_NAME_MAX];
    const char **names;
    const char *d;
    ebt__st_tensor **rs;
    size_t len;
    int first = 1, r, have_meta = 0, cap_t = 0, cap_m = 0, i, nr = 0;
    void *q;
    if (!ebt__st_at(p, '{')) return EBT__ST_BAD(p, "safetensors: header is not a JSON object");
    if (ebt__st_open(p, '{')) return -1;
    while ((r = ebt__st_next(p, '}', &first)) == 1) {
        if (ebt__st_str(p, name, sizeof name, &len) || ebt__st_expect(p, ':')) return -1;
        if (len >= sizeof name)
            return EBT__ST_BAD(p, "safetensors: tensor name '%s...' too long (max %d bytes)", name, EBT__ST_NAME_MAX - 1);
        if (!strcmp(name, "__metadata__")) {
            if (have_meta++) return EBT__ST_BAD(p, "safetensors: duplicate key '__metadata__'");
            if (ebt__st_metaobj(p, h, &cap_m)) return -1;
            continue;
        }
        if (!(q = ebt__st_grow(p, h->t, &cap_t, h->nt, sizeof *h->t, EBT__ST_MAX_TENSORS, "tensors"))) return -1;
        h->t = (ebt__st_tensor *)q;
        memset(&h->t[h->nt], 0, sizeof *h->t);
        memcpy(h->t[h->nt].name, name, len + 1);
        if (ebt__st_entry(p, &h->t[h->nt++])) return -1;
    }
    if (r < 0) return -1;
    ebt__st_ws(p);
    if (p->i != p->n) return ebt__st_syn(p, "trailing data after header object");

    /* duplicate tensor names / metadata keys; the two share one scratch array */
    i = h->nt > h->nmeta ? h->nt : h->nmeta;
    if (!(names = (const char **)EBT_MALLOC((size_t)(i ? i : 1) * sizeof *names))) goto nomem;
    for (i = 0; i < h->nt; i++) names[i] = h->t[i].name;
    if (!(d = ebt__st_dup(names, h->nt))) {
        for (i = 0; i < h->nmeta; i++) names[i] = h->meta[i].key;
        r = (d = ebt__st_dup(names, h->nmeta)) != NULL;
    }
    EBT_FREE(names);
    if (d) return EBT__ST_BAD(p, "safetensors: duplicate %s '%s'", r ? "metadata key" : "tensor", d);

    /* overlap: sort non-empty ranges by begin; each must start at or after the previous end
     * (sorted + pairwise-disjoint so far means the previous end is the furthest end). */
    if (!(rs = (ebt__st_tensor **)EBT_MALLOC((size_t)(h->nt ? h->nt : 1) * sizeof *rs))) goto nomem;
    for (i = 0; i < h->nt; i++) if (h->t[i].end > h->t[i].begin) rs[nr++] = &h->t[i];
    qsort(rs, (size_t)nr, sizeof *rs, ebt__st_cmprange);
    for (i = 1; i < nr && rs[i]->begin >= rs[i - 1]->end; i++) {}
    if (i < nr) {
        r = EBT__ST_BAD(p, "safetensors: tensors '%s' and '%s' have overlapping data_offsets", rs[i - 1]->name, rs[i]->name);
        EBT_FREE(rs);
        return r;
    }
    EBT_FREE(rs);
    return 0;
nomem:
    p->st = EBT_ERR_NOMEM;
    return EBT__ST_BAD(p, "safetensors: out of memory reading header");
}

static void ebt__st_header_free(ebt__st_header *h)
{
    if (!h) return;
    EBT_FREE(h->t);
    EBT_FREE(h->meta);
    memset(h, 0, sizeof *h);
}

static ebt_status ebt__st_read_header(FILE *f, uint64_t file_size, ebt__st_header *h, char *err, size_t errlen)
{
    unsigned char b8[8];
    uint64_t n = 0;
    ebt__st_js p;
    char *buf;
    int k;
    if (!h) return EBT_ERR_ARG;
    memset(h, 0, sizeof *h);
    if (!f) { ebt__seterr(err, errlen, "safetensors: no file"); return EBT_ERR_ARG; }
    if (file_size < 8) {
        ebt__seterr(err, errlen, "safetensors: file too short (%llu bytes)", (ebt__st_ull)file_size);
        return EBT_ERR_FORMAT;
    }
    if (fseek(f, 0, SEEK_SET) != 0 || fread(b8, 1, 8, f) != 8) {
        int io = ferror(f) || errno == ESPIPE;
        ebt__seterr(err, errlen, "safetensors: cannot %s header length", io ? "read" : "read (truncated)");
        return io ? EBT_ERR_IO : EBT_ERR_FORMAT;
    }
    for (k = 8; k-- > 0;) n = n << 8 | b8[k];
    /* size checks come before the allocation, so the buffer is bounded by the real file */
    if (n == 0 || n > file_size - 8 || n > EBT__ST_HEADER_MAX) {
        ebt__seterr(err, errlen, "safetensors: header length %llu invalid (file %llu bytes, max %u)",
                    (ebt__st_ull)n, (ebt__st_ull)file_size, EBT__ST_HEADER_MAX);
        return EBT_ERR_FORMAT;
    }
    if (!(buf = (char *)EBT_MALLOC((size_t)n + 1))) {
        ebt__seterr(err, errlen, "safetensors: out of memory for %llu-byte header", (ebt__st_ull)n);
        return EBT_ERR_NOMEM;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        ebt__seterr(err, errlen, "safetensors: %s reading %llu-byte header", ferror(f) ? "read error" : "truncated file", (ebt__st_ull)n);
        EBT_FREE(buf);
        return ferror(f) ? EBT_ERR_IO : EBT_ERR_FORMAT;
    }
    buf[n] = '\0';
    h->data_start = 8 + n;
    h->data_len = file_size - h->data_start;
    memset(&p, 0, sizeof p);
    p.s = (const unsigned char *)buf; p.n = (size_t)n; p.data_len = h->data_len;
    p.err = err; p.errlen = errlen; p.st = EBT_ERR_FORMAT;
    k = ebt__st_parse(&p, h);
    EBT_FREE(buf);
    if (k) { ebt__st_header_free(h); return p.st; }
    return EBT_OK;
}

static const char *ebt__st_meta_get(const ebt__st_header *h, const char *key)
{
    int i;
    if (h && key) for (i = 0; i < h->nmeta; i++) if (!strcmp(h->meta[i].key, key)) return h->meta[i].val;
    return NULL;
}
static const ebt__st_tensor *ebt__st_find(const ebt__st_header *h, const char *name)
{
    int i;
    if (h && name) for (i = 0; i < h->nt; i++) if (!strcmp(h->t[i].name, name)) return &h->t[i];
    return NULL;
}

static ebt_status ebt__st_read_tensor(FILE *f, const ebt__st_header *h, const ebt__st_tensor *t,
                                      ebt_real *dst, size_t count, char *err, size_t errlen)
{
    unsigned char buf[4096];
    const uint64_t offmax = sizeof(off_t) >= 8 ? (uint64_t)INT64_MAX : (uint64_t)INT32_MAX;
    uint64_t cnt = 1, pos, left;
    size_t i, j, got;
    int k, ok = 1;
    if (!f || !h || !t || (!dst && count) || t->ndim < 0 || t->ndim > EBT__ST_MAX_DIMS) {
        ebt__seterr(err, errlen, "safetensors: bad arguments to read_tensor");
        return EBT_ERR_ARG;
    }
    /* re-derive the byte range rather than trusting that t came from a validated header */
    for (k = 0; k < t->ndim; k++) {
        if (t->shape[k] < 0) ok = 0;
        else if (t->shape[k] == 0) cnt = 0;
    }
    for (k = 0; k < t->ndim && cnt && ok; k++) {
        if (cnt > UINT64_MAX / 4 / (uint64_t)t->shape[k]) ok = 0;
        else cnt *= (uint64_t)t->shape[k];
    }
    if (!ok || cnt != (uint64_t)count || t->begin > t->end || t->end - t->begin != cnt * 4 || t->end > h->data_len ||
        h->data_start > offmax || t->begin > offmax - h->data_start) {
        ebt__seterr(err, errlen, "safetensors: tensor '%.*s': expected %zu elements, file range [%llu, %llu] does not match",
                    EBT__ST_NAME_MAX - 1, t->name, count, (ebt__st_ull)t->begin, (ebt__st_ull)t->end);
        return EBT_ERR_FORMAT;
    }
    pos = h->data_start + t->begin;
    if (fseeko(f, (off_t)pos, SEEK_SET) != 0) {
        ebt__seterr(err, errlen, "safetensors: tensor '%.*s': seek failed", EBT__ST_NAME_MAX - 1, t->name);
        return EBT_ERR_IO;
    }
    for (i = 0, left = cnt * 4; left; left -= got) {
        got = left < sizeof buf ? (size_t)left : sizeof buf;
        if (fread(buf, 1, got, f) != got) {
            ebt__seterr(err, errlen, "safetensors: tensor '%.*s': %s", EBT__ST_NAME_MAX - 1, t->name,
                        ferror(f) ? "read error" : "data truncated");
            return ferror(f) ? EBT_ERR_IO : EBT_ERR_FORMAT;
        }
        for (j = 0; j < got; j += 4) {
            uint32_t u = (uint32_t)buf[j] | (uint32_t)buf[j + 1] << 8 | (uint32_t)buf[j + 2] << 16 | (uint32_t)buf[j + 3] << 24;
            float fv;
            memcpy(&fv, &u, 4);
            dst[i++] = (ebt_real)fv;
        }
    }
    return EBT_OK;
}

/* ---- writer ---- */
typedef struct { char *p; size_t n, cap; int oom; } ebt__st_buf;
static void ebt__st_put(ebt__st_buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (n > b->cap - b->n) {
        size_t nc = b->cap ? b->cap : 256;
        char *q;
        while (nc - b->n < n) nc *= 2;  /* bounded: names/values are length-checked first */
        if (!(q = (char *)EBT_REALLOC(b->p, nc))) { b->oom = 1; return; }
        b->p = q; b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void ebt__st_puts(ebt__st_buf *b, const char *s) { ebt__st_put(b, s, strlen(s)); }
static void ebt__st_putq(ebt__st_buf *b, const char *s)  /* quoted, JSON-escaped */
{
    char e[8];
    ebt__st_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { e[0] = '\\'; e[1] = (char)c; ebt__st_put(b, e, 2); }
        else if (c < 0x20) { snprintf(e, sizeof e, "\\u%04x", c); ebt__st_put(b, e, 6); }
        else ebt__st_put(b, s, 1);
    }
    ebt__st_put(b, "\"", 1);
}

/* After the rename: flush the directory entry too, so that the new name
 * survives a power loss (best effort: some file systems refuse; the save
 * itself has succeeded). buf has room for path. */
static void ebt__fsync_dir(const char *path, char *buf)
{
#ifndef _WIN32
    const char *slash = strrchr(path, '/');
    int fd;
    if (!slash) strcpy(buf, ".");
    else if (slash == path) strcpy(buf, "/");
    else { memcpy(buf, path, (size_t)(slash - path)); buf[slash - path] = 0; }
    fd = open(buf, O_RDONLY);
    if (fd >= 0) { (void)fsync(fd); close(fd); }
#else
    (void)path; (void)buf;
#endif
}

/* what is wrong with a write's arguments, or NULL (*nomem set if the
 * duplicate check ran out of memory): never write a file our own reader
 * would reject */
static const char *ebt__st_check_out(const char *path, const char *const *meta_kv, int n_meta,
                                     const ebt__st_out *t, int nt, int *nomem)
{
    const char *bad = NULL;
    uint64_t off = 0, cnt;
    int k, d;
    if (!path || !*path || n_meta < 0 || nt < 0 || nt > EBT__ST_MAX_TENSORS || n_meta > EBT__ST_MAX_META ||
        (n_meta && !meta_kv) || (nt && !t)) return "bad arguments";
    for (k = 0; k < 2 * n_meta; k++)
        if (!meta_kv[k] || strlen(meta_kv[k]) >= (size_t)(k & 1 ? EBT__ST_VAL_MAX : EBT__ST_NAME_MAX)) return "metadata key/value NULL or too long";
    for (k = 0; !bad && k < nt; k++) {
        if (!t[k].name || strlen(t[k].name) >= EBT__ST_NAME_MAX || !strcmp(t[k].name, "__metadata__") ||
            t[k].ndim < 0 || t[k].ndim > EBT__ST_MAX_DIMS) return "tensor name or ndim invalid";
        for (cnt = 1, d = 0; d < t[k].ndim; d++) {
            if (t[k].shape[d] < 0 || (uint64_t)t[k].shape[d] > EBT__ST_DIM_MAX) bad = "shape entry out of range";
            else if (t[k].shape[d] && cnt > UINT64_MAX / 4 / (uint64_t)t[k].shape[d]) bad = "shape too large";
            else cnt *= (uint64_t)t[k].shape[d];
        }
        if (!bad && (cnt > SIZE_MAX || cnt * 4 > UINT64_MAX - off || (cnt && !t[k].data))) bad = "tensor too large or data NULL";
        if (!bad) off += cnt * 4;
    }
    if (!bad && (nt > 1 || n_meta > 1)) {  /* duplicates would make the file unreadable */
        const char **v = (const char **)EBT_MALLOC((size_t)(nt > n_meta ? nt : n_meta) * sizeof *v);
        if (!v) { *nomem = 1; return "out of memory"; }
        for (k = 0; k < n_meta; k++) v[k] = meta_kv[2 * k];
        if (ebt__st_dup(v, n_meta)) bad = "duplicate metadata key";
        for (k = 0; k < nt; k++) v[k] = t[k].name;
        if (!bad && ebt__st_dup(v, nt)) bad = "duplicate tensor name";
        EBT_FREE(v);
    }
    return bad;
}

/* the header JSON into b, space-padded so the data start 8-byte aligned */
static void ebt__st_header_json(ebt__st_buf *b, const char *const *meta_kv, int n_meta, const ebt__st_out *t, int nt)
{
    char num[64];
    uint64_t off = 0, cnt;
    ebt__st_puts(b, "{");
    if (n_meta) {
        ebt__st_puts(b, "\"__metadata__\":{");
        for (int k = 0; k < n_meta; k++) {
            if (k) ebt__st_puts(b, ",");
            ebt__st_putq(b, meta_kv[2 * k]); ebt__st_puts(b, ":"); ebt__st_putq(b, meta_kv[2 * k + 1]);
        }
        ebt__st_puts(b, nt ? "}," : "}");
    }
    for (int k = 0; k < nt; k++) {
        if (k) ebt__st_puts(b, ",");
        ebt__st_putq(b, t[k].name);
        ebt__st_puts(b, ":{\"dtype\":\"F32\",\"shape\":[");
        cnt = 1;
        for (int d = 0; d < t[k].ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t[k].shape[d]);
            ebt__st_puts(b, num);
            cnt *= (uint64_t)t[k].shape[d];
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (ebt__st_ull)off, (ebt__st_ull)(off + cnt * 4));
        ebt__st_puts(b, num);
        off += cnt * 4;
    }
    ebt__st_puts(b, "}");
    while (!b->oom && b->n % 8) ebt__st_puts(b, " ");
}

/* header length, header and the tensors' little-endian float32 bytes to f; 0 or -1 (errno) */
static int ebt__st_write_data(FILE *f, const ebt__st_buf *b, const ebt__st_out *t, int nt)
{
    unsigned char out[4096], b8[8];
    uint64_t e = b->n, cnt;
    size_t i, j;
    for (int k = 0; k < 8; k++, e >>= 8) b8[k] = (unsigned char)(e & 0xFF);
    if (fwrite(b8, 1, 8, f) != 8 || fwrite(b->p, 1, b->n, f) != b->n) return -1;
    for (int k = 0; k < nt; k++) {
        cnt = 1;
        for (int d = 0; d < t[k].ndim; d++) cnt *= (uint64_t)t[k].shape[d];
        for (i = 0; i < (size_t)cnt;) {
            for (j = 0; j < sizeof out && i < (size_t)cnt; j += 4, i++) {
                float fv = (float)t[k].data[i];
                uint32_t u;
                memcpy(&u, &fv, 4);
                out[j] = (unsigned char)u; out[j + 1] = (unsigned char)(u >> 8);
                out[j + 2] = (unsigned char)(u >> 16); out[j + 3] = (unsigned char)(u >> 24);
            }
            if (fwrite(out, 1, j, f) != j) return -1;
        }
    }
    return 0;
}

static ebt_status ebt__st_write(const char *path, const char *const *meta_kv, int n_meta,
                                const ebt__st_out *t, int nt, char *err, size_t errlen)
{
    ebt__st_buf b = { NULL, 0, 0, 0 };
    char *tmp = NULL;
    int k, fd = -1, saved, nomem = 0;
    FILE *f = NULL;
    const char *bad = ebt__st_check_out(path, meta_kv, n_meta, t, nt, &nomem);
    if (nomem) { ebt__seterr(err, errlen, "safetensors: out of memory"); return EBT_ERR_NOMEM; }
    if (bad) { ebt__seterr(err, errlen, "safetensors write '%s': %s", path ? path : "(null)", bad); return EBT_ERR_ARG; }
    ebt__st_header_json(&b, meta_kv, n_meta, t, nt);
    if (b.oom || b.n > EBT__ST_HEADER_MAX) {
        EBT_FREE(b.p);
        ebt__seterr(err, errlen, "safetensors write '%s': header too large or out of memory", path);
        return b.oom ? EBT_ERR_NOMEM : EBT_ERR_ARG;
    }
    /* temp file in the same directory; O_EXCL never clobbers (or follows) an existing name */
    if (!(tmp = (char *)EBT_MALLOC(strlen(path) + 48))) { EBT_FREE(b.p); ebt__seterr(err, errlen, "safetensors: out of memory"); return EBT_ERR_NOMEM; }
    for (k = 0; k < 100; k++) {
        snprintf(tmp, strlen(path) + 48, "%s.tmp.%ld.%d", path, (long)getpid(), k);
        if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644)) >= 0 || errno != EEXIST) break;
    }
    if (fd < 0) { saved = errno; goto fail_notmp; }
    if (!(f = fdopen(fd, "wb"))) { saved = errno; close(fd); goto fail; }
    if (ebt__st_write_data(f, &b, t, nt) != 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) goto fail_errno;
    k = fclose(f);
    f = NULL;
    if (k != 0 || rename(tmp, path) != 0) goto fail_errno;
    ebt__fsync_dir(path, tmp);
    EBT_FREE(tmp);
    EBT_FREE(b.p);
    return EBT_OK;
fail_errno:
    saved = errno;
fail:
    if (f) fclose(f);
    remove(tmp);
fail_notmp:
    ebt__seterr(err, errlen, "safetensors: cannot write '%s': %s", path, strerror(saved));
    EBT_FREE(tmp);
    EBT_FREE(b.p);
    return EBT_ERR_IO;
}

/* ======================================================================
 * CHECKPOINT: docs/model.md section 9 on top of the safetensors
 * reader/writer above. Everything is validated (metadata, the full tensor
 * set and shapes, data ranges inside the file) before the model is
 * allocated.
 * ====================================================================== */

/* strict decimal integer in [lo, hi] */
static int ebt__parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    long v;
    if (!s || !*s) return 0;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

static int ebt__parse_double(const char *s, double *out)
{
    char *end;
    double v;
    if (!s || !*s) return 0;
    errno = 0;
    v = strtod(s, &end);
    if (*end || end == s) return 0;
    *out = v;
    return 1;
}

/* config from the checkpoint's metadata */
static ebt_status ebt__meta_config(const ebt__st_header *h, ebt_config *c, char *err, size_t errlen)
{
    const char *s;
    static const struct { const char *key; size_t off; long lo, hi; } ints[] = {
        { "vocab_size", offsetof(ebt_config, vocab_size), 1, EBT__MAX_V },
        { "d_model", offsetof(ebt_config, d_model), 2, EBT__MAX_D },
        { "n_layers", offsetof(ebt_config, n_layers), 1, EBT__MAX_L },
        { "n_heads", offsetof(ebt_config, n_heads), 1, EBT__MAX_D },
        { "d_ff", offsetof(ebt_config, d_ff), 1, EBT__MAX_F },
        { "max_seq_len", offsetof(ebt_config, max_seq_len), 1, EBT__MAX_SEQ },
        { "n_step_embed", offsetof(ebt_config, n_step_embed), 0, EBT__MAX_STEP_EMBED },
        { "tie_pred_embed", offsetof(ebt_config, tie_pred_embed), 0, 1 },
    };
    memset(c, 0, sizeof *c);
    if (!(s = ebt__st_meta_get(h, "format")) || strcmp(s, "ebt") != 0) {
        ebt__seterr(err, errlen, "metadata format is %s%s%s, expected \"ebt\"", s ? "\"" : "", s ? s : "missing", s ? "\"" : "");
        return EBT_ERR_FORMAT;
    }
    if (!(s = ebt__st_meta_get(h, "version")) || strcmp(s, "1") != 0) {
        ebt__seterr(err, errlen, "metadata version is %s, expected 1", s ? s : "missing");
        return EBT_ERR_FORMAT;
    }
    s = ebt__st_meta_get(h, "arch");
    if (s && strcmp(s, "ebt") == 0) c->arch = EBT_ARCH_EBT;
    else if (s && strcmp(s, "transformer++") == 0) c->arch = EBT_ARCH_TRANSFORMER;
    else { ebt__seterr(err, errlen, "unknown arch %s", s ? s : "(missing)"); return EBT_ERR_FORMAT; }
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int *dst = (int *)(void *)((char *)c + ints[i].off);
        if (c->arch != EBT_ARCH_EBT && i >= 6) continue;
        s = ebt__st_meta_get(h, ints[i].key);
        if (!ebt__parse_int(s, ints[i].lo, ints[i].hi, dst)) {
            ebt__seterr(err, errlen, "metadata %s = %s: expected an integer in [%ld, %ld]", ints[i].key,
                        s ? s : "(missing)", ints[i].lo, ints[i].hi);
            return EBT_ERR_FORMAT;
        }
    }
    if (!ebt__parse_double(s = ebt__st_meta_get(h, "rope_theta"), &c->rope_theta) || !isfinite(c->rope_theta) || c->rope_theta <= 0) {
        ebt__seterr(err, errlen, "metadata rope_theta = %s: expected a finite positive number", s ? s : "(missing)");
        return EBT_ERR_FORMAT;
    }
    if (!ebt__parse_double(s = ebt__st_meta_get(h, "norm_eps"), &c->norm_eps) || !isfinite(c->norm_eps) || c->norm_eps <= 0) {
        ebt__seterr(err, errlen, "metadata norm_eps = %s: expected a finite positive number", s ? s : "(missing)");
        return EBT_ERR_FORMAT;
    }
    c->alpha = 0; /* read from the tensor */
    {
        ebt_status st = ebt_config_check(c, err, errlen);
        if (st == EBT_ERR_NOMEM) return st;   /* out of memory is not a malformed file */
        if (st != EBT_OK) return EBT_ERR_FORMAT;
    }
    return EBT_OK;
}

/* the checkpoint's tensors must be exactly the model's (optimiser state,
 * optim.m.<name> / optim.v.<name> with the same shape, is also accepted) */
static ebt_status ebt__check_tensors(const ebt__st_header *h, const ebt__tensor *t, int nt, char *err, size_t errlen)
{
    for (int i = 0; i < nt; i++) {
        const ebt__st_tensor *s = ebt__st_find(h, t[i].name);
        int ok;
        if (!s) { ebt__seterr(err, errlen, "tensor %s is missing", t[i].name); return EBT_ERR_FORMAT; }
        ok = s->ndim == t[i].ndim && s->shape[0] == t[i].shape[0] && (t[i].ndim == 1 || s->shape[1] == t[i].shape[1]);
        if (!ok) {
            ebt__seterr(err, errlen, "tensor %s has shape [%lld%s%lld], expected [%d%s%d]", t[i].name, (long long)s->shape[0],
                        s->ndim > 1 ? ", " : "", s->ndim > 1 ? (long long)s->shape[1] : 0LL, t[i].shape[0],
                        t[i].ndim > 1 ? ", " : "", t[i].ndim > 1 ? t[i].shape[1] : 0);
            if (s->ndim == 1) { /* drop the bogus second number in the message */
                ebt__seterr(err, errlen, "tensor %s has shape [%lld] (%d dims), expected %d dims", t[i].name,
                            (long long)s->shape[0], s->ndim, t[i].ndim);
            }
            return EBT_ERR_FORMAT;
        }
    }
    for (int j = 0; j < h->nt; j++) {
        const char *name = h->t[j].name;
        int known = 0;
        if (strncmp(name, "optim.replay.", 13) == 0) {
            const char *w = name + 13;
            known = !strcmp(w, "tokens") || !strcmp(w, "targets") || !strcmp(w, "logits");
        } else if (strncmp(name, "optim.m.", 8) == 0 || strncmp(name, "optim.v.", 8) == 0) {
            for (int i = 0; i < nt && !known; i++)
                if (strcmp(name + 8, t[i].name) == 0) {
                    known = 1;
                    if (h->t[j].ndim != t[i].ndim || h->t[j].shape[0] != t[i].shape[0] ||
                        (t[i].ndim == 2 && h->t[j].shape[1] != t[i].shape[1])) {
                        ebt__seterr(err, errlen, "optimiser tensor %s does not match the shape of %s", name, t[i].name);
                        return EBT_ERR_FORMAT;
                    }
                }
        } else {
            for (int i = 0; i < nt && !known; i++) known = strcmp(name, t[i].name) == 0;
        }
        if (!known) { ebt__seterr(err, errlen, "unknown tensor %s", name); return EBT_ERR_FORMAT; }
    }
    return EBT_OK;
}

/* the optimiser moments (all or none) and optim.step */
static ebt_status ebt__load_moments(FILE *f, const ebt__st_header *h, ebt_model *m, char *err, size_t errlen)
{
    char nm[EBT__NAME_MAX + 8];
    int nfound = 0;
    ebt_status st = EBT_OK;
    for (int j = 0; j < h->nt; j++) nfound += strncmp(h->t[j].name, "optim.m.", 8) == 0 || strncmp(h->t[j].name, "optim.v.", 8) == 0;
    if (nfound > 0) {
        long step;
        const char *s = ebt__st_meta_get(h, "optim.step");
        char *end;
        if (nfound != 2 * m->nt) { ebt__seterr(err, errlen, "optimiser state is incomplete (%d of %d moment tensors)", nfound, 2 * m->nt); return EBT_ERR_FORMAT; }
        errno = 0;
        step = s ? strtol(s, &end, 10) : -1;
        if (!s || errno || *end || step < 0 || step == LONG_MAX) { ebt__seterr(err, errlen, "metadata optim.step = %s: expected an integer in [0, LONG_MAX)", s ? s : "(missing)"); return EBT_ERR_FORMAT; }
        m->opt.m = (ebt_real *)EBT_MALLOC(m->n_params * sizeof(ebt_real));
        m->opt.v = (ebt_real *)EBT_MALLOC(m->n_params * sizeof(ebt_real));
        if (!m->opt.m || !m->opt.v) { ebt__seterr(err, errlen, "out of memory"); return EBT_ERR_NOMEM; }
        for (int i = 0; i < m->nt && st == EBT_OK; i++)
            for (int w = 0; w < 2 && st == EBT_OK; w++) {
                ebt_real *dst = (w ? m->opt.v : m->opt.m) + m->t[i].off;
                snprintf(nm, sizeof nm, "optim.%c.%s", w ? 'v' : 'm', m->t[i].name);
                st = ebt__st_read_tensor(f, h, ebt__st_find(h, nm), dst, m->t[i].count, err, errlen);
                if (st == EBT_OK && !ebt__all_finite(dst, m->t[i].count)) { ebt__seterr(err, errlen, "tensor %s contains NaN or Inf", nm); st = EBT_ERR_FORMAT; }
                for (size_t k = 0; w && st == EBT_OK && k < m->t[i].count; k++)
                    if (dst[k] < 0) { ebt__seterr(err, errlen, "tensor %s has a negative second moment", nm); st = EBT_ERR_FORMAT; }
            }
        if (st != EBT_OK) return st;
        m->opt.step = step;
    }
    return EBT_OK;
}

/* the replay buffer (its three tensors and metadata, all or none) */
static ebt_status ebt__load_replay(FILE *f, const ebt__st_header *h, ebt_model *m, char *err, size_t errlen)
{
    int V = m->cfg.vocab_size;
    const ebt__st_tensor *rt = ebt__st_find(h, "optim.replay.tokens"), *rg = ebt__st_find(h, "optim.replay.targets"),
                         *rl = ebt__st_find(h, "optim.replay.logits");
    ebt_status st = EBT_OK;
    if (rt || rg || rl) {
        int cap, next, cnt, S;
        size_t n;
        ebt_real *tmp;
        if (!rt || !rg || !rl || rt->ndim != 2 || rg->ndim != 2 || rl->ndim != 3 || rt->shape[0] < 1 || rt->shape[1] < 1 ||
            rt->shape[0] > (1 << 20) || rt->shape[1] > m->cfg.max_seq_len || rg->shape[0] != rt->shape[0] ||
            rg->shape[1] != rt->shape[1] || rl->shape[0] != rt->shape[0] || rl->shape[1] != rt->shape[1] || rl->shape[2] != V) {
            ebt__seterr(err, errlen, "replay buffer tensors missing or with inconsistent shapes");
            return EBT_ERR_FORMAT;
        }
        cnt = (int)rt->shape[0];
        S = (int)rt->shape[1];
        if (!ebt__parse_int(ebt__st_meta_get(h, "optim.replay.capacity"), cnt, 1 << 20, &cap) ||
            !ebt__parse_int(ebt__st_meta_get(h, "optim.replay.next"), 0, cap - 1, &next) || (cnt < cap && next != cnt)) {
            ebt__seterr(err, errlen, "metadata optim.replay.capacity/next missing or inconsistent");
            return EBT_ERR_FORMAT;
        }
        n = (size_t)cnt * S;   /* the filled rows only (bounded by the file); the ring grows as it fills */
        m->rb.y = (ebt_real *)EBT_MALLOC(n * V * sizeof(ebt_real));
        m->rb.tok = (int32_t *)EBT_MALLOC(2 * n * sizeof(int32_t));
        tmp = (ebt_real *)EBT_MALLOC(2 * n * sizeof(ebt_real));
        if (!m->rb.y || !m->rb.tok || !tmp) { EBT_FREE(tmp); ebt__seterr(err, errlen, "out of memory"); return EBT_ERR_NOMEM; }
        m->rb.tgt = m->rb.tok + n;
        st = ebt__st_read_tensor(f, h, rt, tmp, n, err, errlen);
        if (st == EBT_OK) st = ebt__st_read_tensor(f, h, rg, tmp + n, n, err, errlen);
        if (st == EBT_OK) st = ebt__st_read_tensor(f, h, rl, m->rb.y, n * V, err, errlen);
        for (size_t i = 0; st == EBT_OK && i < 2 * n; i++) {
            if (!(tmp[i] >= 0 && tmp[i] < V && tmp[i] == (ebt_real)(int32_t)tmp[i])) {
                ebt__seterr(err, errlen, "replay buffer token %g is not an id in [0, %d)", (double)tmp[i], V);
                st = EBT_ERR_FORMAT;
            } else {
                (i < n ? m->rb.tok : m->rb.tgt)[i % n] = (int32_t)tmp[i];
            }
        }
        if (st == EBT_OK && !ebt__all_finite(m->rb.y, n * V)) { ebt__seterr(err, errlen, "replay logits contain NaN or Inf"); st = EBT_ERR_FORMAT; }
        EBT_FREE(tmp);
        if (st != EBT_OK) return st;
        m->rb.cap = cap; m->rb.rows = m->rb.count = cnt; m->rb.next = next; m->rb.S = S;
    }
    return EBT_OK;
}

/* optimiser moments, optim.step and the replay buffer */
static ebt_status ebt__load_train_state(FILE *f, const ebt__st_header *h, ebt_model *m, char *err, size_t errlen)
{
    ebt_status st = ebt__load_moments(f, h, m, err, errlen);
    return st == EBT_OK ? ebt__load_replay(f, h, m, err, errlen) : st;
}

/* the caller's metadata ("user.<key>" entries) */
static ebt_status ebt__load_meta(const ebt__st_header *h, ebt_model *m, char *err, size_t errlen)
{
    for (int i = 0; i < h->nmeta; i++) {
        const char *k = h->meta[i].key;
        ebt_status st;
        if (strncmp(k, "user.", 5) != 0) continue;
        if (!ebt__meta_ok(k + 5, h->meta[i].val)) {
            ebt__seterr(err, errlen, "metadata %s: key or value not allowed (see ebt_meta_set)", k);
            return EBT_ERR_FORMAT;
        }
        if ((st = ebt_meta_set(m, k + 5, h->meta[i].val)) != EBT_OK) {
            ebt__seterr(err, errlen, "metadata %s: %s", k, st == EBT_ERR_NOMEM ? "out of memory" : "too many entries");
            return st == EBT_ERR_NOMEM ? st : EBT_ERR_FORMAT;
        }
    }
    return EBT_OK;
}

ebt_status ebt_load_ex(const char *path, ebt_model **out, char *err, size_t errlen)
{
    FILE *f;
    ebt__st_header h;
    ebt_config c;
    ebt__tensor *t = NULL;
    ebt_model *m = NULL;
    ebt_status st;
    long long size;
    size_t total;
    int nt;
    if (err && errlen) err[0] = 0;
    if (!out) { ebt__seterr(err, errlen, "out is NULL"); return EBT_ERR_ARG; }
    *out = NULL;
    if (!path) { ebt__seterr(err, errlen, "path is NULL"); return EBT_ERR_ARG; }
    f = fopen(path, "rb");
    if (!f) { ebt__seterr(err, errlen, "cannot open %s: %s", path, strerror(errno)); return EBT_ERR_IO; }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        ebt__seterr(err, errlen, "cannot determine the size of %s", path);
        return EBT_ERR_IO;
    }
    st = ebt__st_read_header(f, (uint64_t)size, &h, err, errlen);
    if (st != EBT_OK) { fclose(f); return st; }
    if ((st = ebt__meta_config(&h, &c, err, errlen)) != EBT_OK) goto done;
    t = (ebt__tensor *)EBT_MALLOC(sizeof(ebt__tensor) * (size_t)ebt__max_tensors(&c));
    if (!t) { st = EBT_ERR_NOMEM; ebt__seterr(err, errlen, "out of memory"); goto done; }
    nt = ebt__build_table(&c, t, &total);
    if ((st = ebt__check_tensors(&h, t, nt, err, errlen)) != EBT_OK) goto done;
    /* every tensor now lies inside the file: the model is no larger than it */
    if ((st = ebt__alloc_model(&c, &m, err, errlen)) != EBT_OK) goto done;
    for (int i = 0; i < m->nt && st == EBT_OK; i++) {
        const ebt__tensor *mt = &m->t[i];
        st = ebt__st_read_tensor(f, &h, ebt__st_find(&h, mt->name), m->params + mt->off, mt->count, err, errlen);
        if (st == EBT_OK && !ebt__all_finite(m->params + mt->off, mt->count)) {
            ebt__seterr(err, errlen, "tensor %s contains NaN or Inf", mt->name);
            st = EBT_ERR_FORMAT;
        }
    }
    if (st == EBT_OK && c.arch == EBT_ARCH_EBT) m->cfg.alpha = (double)m->w.alpha[0];
    if (st == EBT_OK) st = ebt__load_train_state(f, &h, m, err, errlen);
    if (st == EBT_OK) st = ebt__load_meta(&h, m, err, errlen);
done:
    fclose(f);
    ebt__st_header_free(&h);
    EBT_FREE(t);
    if (st != EBT_OK) { ebt_free(m); return st; }
    *out = m;
    return EBT_OK;
}

ebt_status ebt_load(const char *path, ebt_model **out) { return ebt_load_ex(path, out, NULL, 0); }

/* shortest %g form that reads back as the same double */
static void ebt__fmt_double(char *buf, size_t n, double v)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* the metadata of m's checkpoint (docs/model.md section 9.2) as key/value
 * pairs in kv (strings in vals and ukeys); returns the number of strings */
static int ebt__save_meta(const ebt_model *m, char vals[13][32], char ukeys[][EBT__META_KEY + 8], const char **kv)
{
    static const char *names[] = { "vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len", "n_step_embed", "tie_pred_embed" };
    const ebt_config *c = &m->cfg;
    int v[8] = { c->vocab_size, c->d_model, c->n_layers, c->n_heads, c->d_ff, c->max_seq_len, c->n_step_embed, c->tie_pred_embed };
    int nkv = 0;
    kv[nkv++] = "format"; kv[nkv++] = "ebt";
    kv[nkv++] = "version"; kv[nkv++] = "1";
    kv[nkv++] = "arch"; kv[nkv++] = c->arch == EBT_ARCH_EBT ? "ebt" : "transformer++";
    for (int i = 0; i < (c->arch == EBT_ARCH_EBT ? 8 : 6); i++) {
        snprintf(vals[i], sizeof vals[i], "%d", v[i]);
        kv[nkv++] = names[i]; kv[nkv++] = vals[i];
    }
    ebt__fmt_double(vals[8], sizeof vals[8], c->rope_theta);
    kv[nkv++] = "rope_theta"; kv[nkv++] = vals[8];
    ebt__fmt_double(vals[9], sizeof vals[9], c->norm_eps);
    kv[nkv++] = "norm_eps"; kv[nkv++] = vals[9];
    if (m->opt.m) {   /* optimiser state and the replay buffer (section 9.3) */
        snprintf(vals[10], sizeof vals[10], "%ld", m->opt.step);
        kv[nkv++] = "optim.step"; kv[nkv++] = vals[10];
    }
    if (m->rb.count > 0) {
        snprintf(vals[11], sizeof vals[11], "%d", m->rb.cap);
        kv[nkv++] = "optim.replay.capacity"; kv[nkv++] = vals[11];
        snprintf(vals[12], sizeof vals[12], "%d", m->rb.next);
        kv[nkv++] = "optim.replay.next"; kv[nkv++] = vals[12];
    }
    for (int i = 0; i < m->nmeta; i++) {   /* the caller's metadata */
        snprintf(ukeys[i], sizeof ukeys[i], "user.%s", m->meta[i].key);
        kv[nkv++] = ukeys[i]; kv[nkv++] = m->meta[i].val;
    }
    return nkv;
}

/* the tensors of m's checkpoint into o (capacity 3 nt + 3): the parameters,
 * the moments of each (names into names), the replay ring (ids as reals in
 * rtok); returns their number */
static int ebt__save_tensors(const ebt_model *m, ebt__st_out *o, char (*names)[EBT__NAME_MAX + 8], ebt_real *rtok)
{
    int no = m->nt;
    for (int i = 0; i < m->nt; i++) {
        memset(&o[i], 0, sizeof o[i]);
        o[i].name = m->t[i].name;
        o[i].ndim = m->t[i].ndim;
        o[i].shape[0] = m->t[i].shape[0];
        o[i].shape[1] = m->t[i].shape[1];
        o[i].data = m->params + m->t[i].off;
        for (int w = 0; m->opt.m && w < 2; w++) {
            o[no] = o[i];
            snprintf(names[2 * i + w], sizeof names[0], "optim.%c.%s", w ? 'v' : 'm', m->t[i].name);
            o[no].name = names[2 * i + w];
            o[no++].data = (w ? m->opt.v : m->opt.m) + m->t[i].off;
        }
    }
    if (m->rb.count > 0) {
        size_t n = (size_t)m->rb.count * m->rb.S;
        static const char *rn[3] = { "optim.replay.tokens", "optim.replay.targets", "optim.replay.logits" };
        for (size_t i = 0; i < n; i++) { rtok[i] = (ebt_real)m->rb.tok[i]; rtok[n + i] = (ebt_real)m->rb.tgt[i]; }
        for (int w = 0; w < 3; w++) {
            memset(&o[no], 0, sizeof o[no]);
            o[no].name = rn[w];
            o[no].ndim = w == 2 ? 3 : 2;
            o[no].shape[0] = m->rb.count;
            o[no].shape[1] = m->rb.S;
            o[no].shape[2] = m->cfg.vocab_size;
            o[no++].data = w == 2 ? m->rb.y : rtok + (size_t)w * n;
        }
    }
    return no;
}

ebt_status ebt_save_ex(const ebt_model *m, const char *path, char *err, size_t errlen)
{
    char vals[13][32], (*names)[EBT__NAME_MAX + 8] = NULL, ukeys[EBT__META_MAX][EBT__META_KEY + 8];
    const char *kv[32 + 2 * EBT__META_MAX];
    ebt_real *rtok = NULL;
    ebt__st_out *o;
    ebt_status st;
    int nkv, no;
    if (err && errlen) err[0] = 0;
    if (!m || !path) { ebt__seterr(err, errlen, "model or path is NULL"); return EBT_ERR_ARG; }
    if (!ebt__all_finite(m->params, m->n_params)) { ebt__seterr(err, errlen, "parameters contain NaN or Inf; not saved"); return EBT_ERR_NONFINITE; }
    nkv = ebt__save_meta(m, vals, ukeys, kv);
    o = (ebt__st_out *)EBT_MALLOC(sizeof(ebt__st_out) * (3 * (size_t)m->nt + 3));
    names = (char (*)[EBT__NAME_MAX + 8])EBT_MALLOC(sizeof *names * 2 * (size_t)m->nt);
    if (m->rb.count > 0) rtok = (ebt_real *)EBT_MALLOC(sizeof(ebt_real) * 2 * (size_t)m->rb.count * m->rb.S);
    if (!o || !names || (m->rb.count > 0 && !rtok)) {
        EBT_FREE(o); EBT_FREE(names); EBT_FREE(rtok);
        ebt__seterr(err, errlen, "out of memory");
        return EBT_ERR_NOMEM;
    }
    no = ebt__save_tensors(m, o, names, rtok);
    st = ebt__st_write(path, kv, nkv / 2, o, no, err, errlen);
    EBT_FREE(o);
    EBT_FREE(names);
    EBT_FREE(rtok);
    return st;
}

ebt_status ebt_save(const ebt_model *m, const char *path) { return ebt_save_ex(m, path, NULL, 0); }
