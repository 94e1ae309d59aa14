/* bench: speed and memory of the EBT library's calls, with achieved GFLOP/s
 * against the machine's own sgemm. Every figure is the median over
 * --repeats runs (default 7; train steps ceil(repeats/2), at least 3) after
 * warm-up. Every configuration, and every train step kind, runs in its own
 * child process (fork), so each peak RSS (ru_maxrss, reported by the
 * child) is its own plus the small parent it was forked from (~7 MB).
 *
 *   bench [--quick] [--repeats N] [--threads N] [--blas-threads] [--growth | --all]
 *
 *   --quick         tiny sizes (A: D=32 L=1 S=16 B=2; B: D=64 L=2 S=32 B=2),
 *                   repeats 3: a smoke test
 *   --threads N     threads (default: the number of cores)
 *   --blas-threads  OpenBLAS threads the matrix products and ebt's kernels
 *                   run serially; the default is the opposite: OpenBLAS on
 *                   one thread, ebt splitting products and kernels itself
 *   --growth        add the growth section (time and peak RSS of an EBT detach
 *                   train step as S, D, V, K grow); --all is the same
 *
 * A "thread settings" section times config A's energy + dE/dp and train
 * steps with ebt's threads, with OpenBLAS's threads and on one thread.
 *
 * FLOP model (multiply-adds x 2 of every matrix product; elementwise work,
 * softmax, RMSNorm, RoPE and AdamW are not counted). Per layer and row:
 * q,k,v,o projections 4*D*D and SwiGLU 3*D*F; attention over nk keys
 * 2*2*(nk+1)*D (scores and weighted sum; queries in chunks of 32 that stop
 * at the keys their last row sees, as the code computes it). Fo = observed stream forward (EBT skips the last
 * layer's attention output and FFN; only its keys and values are used),
 * Fp = predicted stream forward incl. p @ pred_embed (B*S*V*D) and the
 * energy head. Multipliers, read off the GEMMs in ebt.c:
 *   backward for dE/dp only (data gradients, weights constant) = 1 x fwd
 *   backward with weight gradients                              = 2 x fwd
 *   tangent (forward mode along v)                              = 1 x fwd
 *   tangent of the data backward (H_pp v)                       = 1 x fwd
 *   backward + its tangent with weight terms (mixed term)       = 4 x fwd
 *       (linear: dX, tdX, 2 tdW; attention: dP, dq, tdP, tdq, 2 tdk, 2 tdv)
 * with Fe = 2*B*S*V*D (p @ pred_embed), whose data backward is skipped
 * when dE/dp is not asked for: energy = Fp; energy+dE/dp = 2 Fp;
 * hvp = 4 Fp - Fe; observe = Fo; train detach = 3 Fo + 7K Fp - K Fe (per
 * step: fwd, dE/dp, tangent, mixed reverse; observed backward with weights
 * 2 Fo); full = 3 Fo + (8K-1) Fp - K Fe (the backward over the steps
 * re-runs the forward of all steps but the last);
 * truncate = 3 Fo + (2K+5) Fp - Fe;
 * transformer++ = 3 x its forward (incl. lm_head B*S*V*D);
 * generation per token = (2K+1) Fp of one row + one appended observed row
 * (KV cache) or a re-observed prefix (no cache). Checked against the FLOPs
 * of every cblas_sgemm call the library makes (an interposed counter):
 * within 1% for every call here (checked at S = 32 and S = 100). */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include "../ebt.h"

#define MAXREP 63

typedef struct { int V, D, L, H, F, S, B, K; } shape;

enum { OP_OBS, OP_EN, OP_ENG, OP_HVP, OP_DET, OP_TRU, OP_FULL, OP_TPP, NOP };
static const char *const op_name[NOP] = {
    "ebt_observe (observed stream)", "energy forward (predicted)", "energy + dE/dp", "hvp (H_pp v)",
    "train step EBT detach", "train step EBT truncate", "train step EBT full", "train step transformer++",
};
static const char *const op_key[NOP] = { "observe", "energy", "energy_grad", "hvp", "train_detach",
                                         "train_truncate", "train_full", "train_tpp" };
/* generation results per context: ms/token with cache, without, then GFLOP of each */
enum { G_CACHE, G_NOCACHE, NG };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n)
{
    qsort(t, n, sizeof *t, cmp_dbl);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static void check(ebt_status st, const char *what, const char *msg)
{
    if (st == EBT_OK) return;
    fprintf(stderr, "bench: %s failed: %s (%s)\n", what, ebt_status_str(st), msg ? msg : "");
    exit(1);
}

static uint64_t rng_next(uint64_t *s)   /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static float rng_unif(uint64_t *s) { return (float)((rng_next(s) >> 40) * (1.0 / 16777216.0)); }

/* ---- FLOP model (see the comment at the top) ---------------------------- */
/* attention of rows queries over keys keys: whole sequences (rows a multiple
 * of keys) go in chunks of 32 queries that stop at the keys their last row
 * sees, as ebt.c computes them; single rows see every key; +1 the self key */
static double f_attn(const shape *s, double rows, double keys)
{
    double t = 0;
    int S = (int)keys;
    if (rows < keys) return 4.0 * rows * (keys + 1) * s->D;
    for (int i0 = 0; i0 < S; i0 += 32) {
        int i1 = i0 + 32 < S ? i0 + 32 : S;
        t += (double)(i1 - i0) * (i1 + 1);
    }
    return 4.0 * (rows / keys) * t * s->D;
}
static double f_lin_row(const shape *s) { return 2.0 * (4.0 * s->D * s->D + 3.0 * s->D * s->F); }

/* observed stream: rows rows attending to keys keys; all_layers = transformer++ */
static double f_obs(const shape *s, double rows, double keys, int all_layers)
{
    int La = all_layers ? s->L : s->L - 1;
    return s->L * 2.0 * rows * 3 * s->D * s->D +
           La * (2.0 * rows * ((double)s->D * s->D + 3.0 * s->D * s->F) + f_attn(s, rows, keys));
}
static double f_pred(const shape *s, double rows, double keys)
{
    return 2.0 * rows * s->V * s->D + s->L * (rows * f_lin_row(s) + f_attn(s, rows, keys)) + 2.0 * rows * s->D;
}
static void op_flops(const shape *s, double *f)
{
    double N = (double)s->B * s->S, Fo = f_obs(s, N, s->S, 0), Fp = f_pred(s, N, s->S);
    double Fe = 2.0 * N * s->V * s->D;   /* p @ pred_embed; its data backward is skipped without dE/dp */
    f[OP_OBS] = Fo;
    f[OP_EN] = Fp;
    f[OP_ENG] = 2 * Fp;
    f[OP_HVP] = 4 * Fp - Fe;
    f[OP_DET] = 3 * Fo + s->K * (7.0 * Fp - Fe);
    f[OP_FULL] = 3 * Fo + (8.0 * s->K - 1) * Fp - s->K * Fe;
    f[OP_TRU] = 3 * Fo + (2.0 * s->K + 5) * Fp - Fe;
    f[OP_TPP] = 3 * (f_obs(s, N, s->S, 1) + 2.0 * N * s->V * s->D);
}
/* one generated token at context length len: think (K updates, K+1 energies
 * of one row) plus one appended observed row, or the whole prefix re-observed */
static double f_gen(const shape *s, double len, int cache)
{
    return (2.0 * s->K + 1) * f_pred(s, 1, len) + (cache ? f_obs(s, 1, len, 0) : f_obs(s, len, len, 0));
}

/* ---- the timed calls ---------------------------------------------------- */
typedef struct {
    shape s;
    ebt_model *m, *tm;   /* arch ebt, arch transformer */
    ebt_workspace *ws;
    int32_t *tok, *tgt;
    float *p, *v, *E, *g, *hv;
    ebt_train_opts to;
} bench;

static void call(bench *b, int op)
{
    ebt_status st = EBT_OK;
    int B = b->s.B, S = b->s.S;
    if (op < 0 || op >= NOP) return;
    switch (op) {
    case OP_OBS: st = ebt_observe(b->ws, b->m, b->tok, B, S, 0); break;
    case OP_EN: st = ebt_ws_energy(b->ws, b->p, b->E, NULL); break;
    case OP_ENG: st = ebt_ws_energy(b->ws, b->p, b->E, b->g); break;
    case OP_HVP: st = ebt_ws_hvp(b->ws, b->p, b->v, b->hv, NULL, NULL); break;
    case OP_DET: case OP_TRU: case OP_FULL:
        b->to.mode = op == OP_DET ? EBT_MODE_DETACH : op == OP_TRU ? EBT_MODE_TRUNCATE : EBT_MODE_FULL;
        st = ebt_train_step(b->m, &b->to, b->tok, b->tgt, B, S, NULL, NULL);
        check(st, op_name[op], ebt_last_error(b->m));
        return;
    case OP_TPP:
        st = ebt_train_step(b->tm, &b->to, b->tok, b->tgt, B, S, NULL, NULL);
        check(st, op_name[op], ebt_last_error(b->tm));
        return;
    }
    check(st, op_name[op], ebt_ws_last_error(b->ws));
}

static double time_op(bench *b, int op, int warm, int reps)
{
    double t[MAXREP];
    for (int i = 0; i < warm; i++) call(b, op);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        call(b, op);
        t[r] = now() - t0;
    }
    return median(t, reps);
}

static ebt_config make_cfg(const shape *s, ebt_arch arch, int max_seq)
{
    ebt_config c = ebt_config_default();
    c.arch = arch;
    c.vocab_size = s->V; c.d_model = s->D; c.n_layers = s->L; c.n_heads = s->H; c.d_ff = s->F;
    c.max_seq_len = max_seq;
    return c;
}

/* sets up models, workspace and data for shape s; tpp: also a transformer++ */
static void bench_init(bench *b, const shape *s, int tpp)
{
    ebt_config c = make_cfg(s, EBT_ARCH_EBT, s->S);
    size_t N = (size_t)s->B * s->S, n = N * s->V;
    uint64_t seed = 42;
    memset(b, 0, sizeof *b);
    b->s = *s;
    check(ebt_create(&c, 1, &b->m), "ebt_create", "");
    check(ebt_workspace_create(b->m, s->B, s->S, &b->ws), "ebt_workspace_create", "");
    if (tpp) {
        c.arch = EBT_ARCH_TRANSFORMER;
        check(ebt_create(&c, 1, &b->tm), "ebt_create (transformer++)", "");
    }
    b->tok = malloc(2 * N * sizeof(int32_t));
    b->p = malloc(4 * n * sizeof(float));
    b->E = malloc(N * sizeof(float));
    if (!b->tok || !b->p || !b->E) check(EBT_ERR_NOMEM, "malloc", "");
    b->tgt = b->tok + N;
    b->v = b->p + n; b->g = b->v + n; b->hv = b->g + n;
    for (size_t i = 0; i < N; i++) b->tok[i] = (int32_t)(rng_next(&seed) % (uint64_t)s->V);
    for (size_t i = 0; i < N; i++) b->tgt[i] = i + 1 < N ? b->tok[i + 1] : b->tok[0];
    for (size_t r = 0; r < N; r++) {   /* random distributions p, random directions v */
        float sum = 0, *pr = b->p + r * s->V;
        for (int j = 0; j < s->V; j++) sum += pr[j] = 0.05f + rng_unif(&seed);
        for (int j = 0; j < s->V; j++) pr[j] /= sum;
    }
    for (size_t i = 0; i < n; i++) b->v[i] = rng_unif(&seed) - 0.5f;
    b->to = ebt_train_default();
    b->to.k_min = b->to.k_max = s->K;
    b->to.noise = 0; b->to.alpha_rand = 1; b->to.replay_capacity = 0; b->to.replay_frac = 0;
    b->to.seed = 7;
}

static void bench_free(bench *b)
{
    free(b->tok); free(b->p); free(b->E);
    ebt_workspace_free(b->ws);
    ebt_free(b->m);
    ebt_free(b->tm);
}

/* ---- jobs run in a child process; out[] gets the medians (seconds) ----- */
typedef struct { shape s; int reps, gen_n, gen_ctx, op, ebt_threads, blas_threads; } job;

/* a child's thread settings: OpenBLAS's own count, and ebt's for its kernels */
static void apply_threads(const job *j, bench *b)
{
    openblas_set_num_threads(j->blas_threads);
    if (b->m) check(ebt_set_threads(b->m, j->ebt_threads), "ebt_set_threads", "");
    if (b->tm) check(ebt_set_threads(b->tm, j->ebt_threads), "ebt_set_threads", "");
    if (b->ws) check(ebt_workspace_set_threads(b->ws, j->ebt_threads), "ebt_workspace_set_threads", "");
}

/* the energy calls (observe, energy, energy + dE/dp, hvp) in one child */
static void job_config(const job *j, double *out)
{
    bench b;
    bench_init(&b, &j->s, 0);
    apply_threads(j, &b);
    for (int op = OP_OBS; op <= OP_HVP; op++) {
        if (op == OP_EN) call(&b, OP_OBS);   /* energy calls reuse one observation */
        out[op] = time_op(&b, op, 2, j->reps);
    }
    bench_free(&b);
}

/* one train step kind alone in its child, so that its peak RSS is its own */
static void job_train(const job *j, double *out)
{
    bench b;
    shape s = j->s;
    bench_init(&b, &s, j->op == OP_TPP);
    if (j->op == OP_TPP) { ebt_workspace_free(b.ws); b.ws = NULL; ebt_free(b.m); b.m = NULL; }
    else { ebt_workspace_free(b.ws); b.ws = NULL; }   /* training uses the model's own workspace */
    free(b.p); free(b.E); b.p = b.E = NULL;             /* nor the energy calls' inputs */
    apply_threads(j, &b);
    out[0] = time_op(&b, j->op, j->op == OP_TPP ? 2 : 1, j->reps);
    bench_free(&b);
}

static void job_growth(const job *j, double *out)
{
    job t = *j;
    t.op = OP_DET;
    job_train(&t, out);
}

/* per generated token: (T(n tokens) - T(1 token)) / (n - 1), so the prompt's
 * observation (and the first think) is excluded */
static void job_gen(const job *j, double *out)
{
    ebt_config c = make_cfg(&j->s, EBT_ARCH_EBT, j->gen_ctx > 1024 ? j->gen_ctx : 1024);
    ebt_model *m;
    ebt_workspace *ws;
    int np = j->gen_ctx - j->gen_n - 1;
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)(np + j->gen_n)), *outt = prompt + np;
    uint64_t seed = 99;
    if (!prompt) check(EBT_ERR_NOMEM, "malloc", "");
    check(ebt_create(&c, 1, &m), "ebt_create (generation)", "");
    check(ebt_workspace_create(m, 1, j->gen_ctx, &ws), "ebt_workspace_create (generation)", "");
    openblas_set_num_threads(j->blas_threads);
    check(ebt_workspace_set_threads(ws, j->ebt_threads), "ebt_workspace_set_threads", "");
    for (int i = 0; i < np; i++) prompt[i] = (int32_t)(rng_next(&seed) % (uint64_t)c.vocab_size);
    for (int nc = 0; nc < 2; nc++) {
        ebt_gen_opts go = ebt_gen_default();
        double tt[2];
        go.think.steps = j->s.K;
        go.temperature = 0;
        go.seed = go.think.seed = 5;
        go.no_cache = nc;
        for (int k = 0; k < 2; k++) {
            int n = k ? j->gen_n : 1;
            double t[MAXREP];
            for (int r = -2; r < j->reps; r++) {
                double t0 = now();
                check(ebt_generate(ws, m, prompt, np, n, &go, outt, NULL, NULL), "ebt_generate", ebt_ws_last_error(ws));
                if (r >= 0) t[r] = now() - t0;
            }
            tt[k] = median(t, j->reps);
        }
        out[nc] = (tt[1] - tt[0]) / (j->gen_n - 1);
    }
    ebt_workspace_free(ws);
    ebt_free(m);
    free(prompt);
}

/* runs fn in a child; out[0..n-1] its results, *rss_mb its peak RSS */
static void in_child(void (*fn)(const job *, double *), const job *j, double *out, int n, double *rss_mb)
{
    int fd[2], status;
    double buf[32];
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    if (pipe(fd) != 0 || (pid = fork()) < 0) { perror("bench: pipe/fork"); exit(1); }
    if (pid == 0) {
        struct rusage ru;
        close(fd[0]);
        fn(j, buf);
        getrusage(RUSAGE_SELF, &ru);
        buf[n] = ru.ru_maxrss / 1024.0;   /* KiB -> MiB */
        if (write(fd[1], buf, sizeof(double) * (n + 1)) != (ssize_t)(sizeof(double) * (n + 1))) _exit(2);
        _exit(0);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], buf, sizeof(double) * (n + 1));
    close(fd[0]);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        got != (ssize_t)(sizeof(double) * (n + 1))) {
        fprintf(stderr, "bench: child process failed\n");
        exit(1);
    }
    memcpy(out, buf, sizeof(double) * n);
    *rss_mb = buf[n];
}

/* one M x N x K product with OpenBLAS (dnnl 0) or oneDNN (dnnl 1) on nthr threads */
static void sgemm_call(int dnnl, int M, int N, int K, const float *A, const float *B, float *C)
{
    if (dnnl) dnnl_sgemm('N', 'N', M, N, K, 1, A, K, B, N, 0, C, N);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, A, K, B, N, 0, C, N);
}

/* median seconds of one sgemm M x N x K, each sample >= ~min_s, on nthr threads */
static double time_sgemm(int dnnl, int nthr, int M, int N, int K, int reps, double min_s)
{
    float *A = malloc(sizeof(float) * ((size_t)M * K + (size_t)K * N + (size_t)M * N)), *B = A + (size_t)M * K,
          *C = B + (size_t)K * N;
    double t[MAXREP];
    int iters = 1;
    if (!A) check(EBT_ERR_NOMEM, "malloc", "");
    openblas_set_num_threads(nthr);
    omp_set_num_threads(nthr);
    for (size_t i = 0; i < (size_t)M * K + (size_t)K * N; i++) A[i] = (float)(i % 7) * 0.1f - 0.3f;
    for (int w = 0; w < 2; w++) sgemm_call(dnnl, M, N, K, A, B, C);
    for (;;) {   /* calibrate */
        double t0 = now(), dt;
        for (int i = 0; i < iters; i++) sgemm_call(dnnl, M, N, K, A, B, C);
        dt = now() - t0;
        if (dt >= min_s || iters >= 1 << 20) break;
        iters *= dt > 0 && min_s / dt < 64 ? (int)(min_s / dt) + 1 : 64;
    }
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        for (int i = 0; i < iters; i++) sgemm_call(dnnl, M, N, K, A, B, C);
        t[r] = (now() - t0) / iters;
    }
    free(A);
    return median(t, reps);
}

/* the machine's float32 peak at 1 and nthr threads: the best of OpenBLAS's
 * and oneDNN's sgemm on 512^3 and 2048x128x128 (GFLOP/s) */
static void measure_peak(int nthr, int reps, double min_s, double peak[2])
{
    static const int sh[2][3] = { { 512, 512, 512 }, { 2048, 128, 128 } };
    const char *lib[2] = { "OpenBLAS", "oneDNN" };
    printf("sgemm GFLOP/s (the peak below is the best of these):\n");
    for (int ti = 0; ti < 2; ti++) {
        int t = ti ? nthr : 1;
        peak[ti] = 0;
        if (ti && nthr == 1) { peak[1] = peak[0]; break; }
        for (int l = 0; l < 2; l++)
            for (int k = 0; k < 2; k++) {
                double g = 2.0 * sh[k][0] * sh[k][1] * sh[k][2] / time_sgemm(l, t, sh[k][0], sh[k][1], sh[k][2], reps, min_s) * 1e-9;
                printf("  %-8s %d thread%s %4dx%dx%d: %7.1f\n", lib[l], t, t > 1 ? "s" : " ", sh[k][0], sh[k][1], sh[k][2], g);
                peak[ti] = g > peak[ti] ? g : peak[ti];
            }
    }
    omp_set_num_threads(nthr);
    printf("peak: %.1f GFLOP/s on 1 thread, %.1f on %d\n", peak[0], peak[1], nthr);
}

/* in a child: measure_peak with the job's reps and threads (op = quick) */
static void job_peak(const job *j, double *out)
{
    measure_peak(j->ebt_threads, j->reps, j->op ? 0.005 : 0.05, out);
    fflush(stdout);
}

static void machine_facts(int threads_arg)
{
    char line[256], cpu[128] = "?", load[64] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            snprintf(cpu, sizeof cpu, "%.100s", c ? c + 2 : line);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
    if ((f = fopen("/proc/loadavg", "r"))) {
        if (fgets(load, sizeof load, f)) load[strcspn(load, "\n")] = 0;
        fclose(f);
    }
    printf("machine: nproc %ld | cpu %s | load avg %s\n", sysconf(_SC_NPROCESSORS_ONLN), cpu, load);
    {
        char info[256];
        ebt_gemm_info(info, sizeof info);
        printf("ebt's matrix products: %s (backend \"%s\") | OpenBLAS on this machine: %s, core %s%s\n", info,
               ebt_gemm_backend(), openblas_get_config(), openblas_get_corename(),
               threads_arg > 0 ? " (--threads: OPENBLAS_NUM_THREADS set)" : "");
    }
}

static void print_shape(const char *name, const shape *s)
{
    printf("%s: V=%d D=%d L=%d H=%d F=%d S=%d B=%d K=%d", name, s->V, s->D, s->L, s->H, s->F, s->S, s->B, s->K);
}

int main(int argc, char **argv)
{
    int quick = 0, reps = -1, threads = 0, growth = 0, blas_mode = 0;
    double t_start = now();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--growth") || !strcmp(argv[i], "--all")) growth = 1;
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--blas-threads")) blas_mode = 1;
        else {
            fprintf(stderr, "usage: %s [--quick] [--repeats N] [--threads N] [--blas-threads] [--growth | --all]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    if (reps < 1) reps = quick ? 3 : 7;
    if (reps > MAXREP) reps = MAXREP;
    /* default: OpenBLAS single-threaded and ebt's own threads on every kernel;
     * --blas-threads: OpenBLAS threads the products, ebt's kernels serial */
    int eth = blas_mode ? 1 : threads, bth = blas_mode ? threads : 1;
    openblas_set_num_threads(bth);

    shape cfg[2] = { { 256, 128, 4, 4, 128, 128, 16, 2 }, { 256, 384, 6, 6, 384, 256, 8, 2 } };
    const char *cname[2] = { "A", "B" };
    int gen_ctx[2] = { 128, 1024 }, gen_n = 16;
    if (quick)
        for (int c = 0; c < 2; c++) {   /* B quick keeps L > 1 so observed attention runs */
            cfg[c].D = cfg[c].F = 32 * (c + 1); cfg[c].L = c + 1; cfg[c].H = 2; cfg[c].S = 16 * (c + 1); cfg[c].B = 2;
        }
    if (quick) { gen_ctx[0] = 64; gen_ctx[1] = 256; }

    printf("EBT benchmark%s: median of %d runs after warm-up (ms); tokens/s = B*S per call\n",
           quick ? " (--quick: tiny sizes, numbers are not representative)" : "", reps);
    machine_facts(0);
    printf("threads: ebt kernels %d, OpenBLAS %d%s\n", eth, bth,
           blas_mode ? " (--blas-threads)" : " (OpenBLAS set to 1 thread; ebt splits the products itself)");

    /* the machine's peak: the best product available, at 1 and `threads` threads,
     * measured in a child like everything else (the parent never starts an
     * OpenMP thread pool: a child forked after one would hang in libgomp) */
    double peak[2], prss;
    {
        job pj = { cfg[0], reps, 0, 0, quick, threads, 0 };
        in_child(job_peak, &pj, peak, 2, &prss);
    }
    printf("FLOP model: matrix products only, 2 x multiply-adds; Fo observed, Fp predicted stream forward;\n"
           "  Fe = p @ pred_embed (2BSVD); energy Fp, energy+dE/dp 2Fp, hvp 4Fp-Fe (fwd 1, dE/dp bwd 1, tangent 1,\n"
           "  tangent of bwd 1), train detach 3Fo+7K*Fp-K*Fe (per step: fwd, dE/dp, tangent, mixed reverse),\n"
           "  full 3Fo+(8K-1)Fp-K*Fe (+ re-forward of K-1 steps), truncate 3Fo+(2K+5)Fp-Fe (mixed reverse =\n"
           "  4x fwd: dX, tdX, 2 tdW; observed bwd with weights = 2x fwd),\n"
           "  transformer++ 3 x fwd; %%peak = GFLOP/s relative to the peak at the same thread count;\n"
           "  each train step kind runs alone in a child process: RSS MB is its peak resident memory\n");

    double med[2][NOP], fl[2][NOP], rss[2][NOP];
    for (int c = 0; c < 2; c++) {
        job j = { cfg[c], reps, 0, 0, 0, eth, bth };
        double r;
        in_child(job_config, &j, med[c], NOP, &r);
        for (int op = OP_OBS; op <= OP_HVP; op++) rss[c][op] = r;
        for (int op = OP_DET; op < NOP; op++) {
            job t = j;
            t.op = op;
            t.reps = op == OP_TPP ? reps : (reps + 1) / 2 > 3 ? (reps + 1) / 2 : (reps < 3 ? reps : 3);
            in_child(job_train, &t, &med[c][op], 1, &rss[c][op]);
        }
        op_flops(&cfg[c], fl[c]);
        printf("\n");
        print_shape(c == 0 ? "config A" : "config B", &cfg[c]);
        printf("\n  %-32s %10s %12s %11s %9s %7s %8s\n", "call", "ms", "tokens/s", "GFLOP/call", "GFLOP/s", "%peak", "RSS MB");
        for (int op = 0; op < NOP; op++) {
            double gfs = fl[c][op] / med[c][op] * 1e-9;
            printf("  %-32s %10.3f %12.0f %11.3f %9.2f %6.0f%% %8.1f\n", op_name[op], 1e3 * med[c][op],
                   cfg[c].B * cfg[c].S / med[c][op], fl[c][op] * 1e-9, gfs, 100 * gfs / peak[eth > 1 || bth > 1],
                   rss[c][op]);
        }
    }
    printf("\n  %-32s %11s %9s %11s %9s\n", "ratio (time)", "A measured", "A model", "B measured", "B model");
    {
        const char *rn[4] = { "hvp / (energy + dE/dp)", "(energy + dE/dp) / energy", "EBT detach / transformer++",
                              "EBT full / transformer++" };
        int num[4] = { OP_HVP, OP_ENG, OP_DET, OP_FULL }, den[4] = { OP_ENG, OP_EN, OP_TPP, OP_TPP };
        for (int r = 0; r < 4; r++)
            printf("  %-32s %11.2f %9.2f %11.2f %9.2f\n", rn[r], med[0][num[r]] / med[0][den[r]],
                   fl[0][num[r]] / fl[0][den[r]], med[1][num[r]] / med[1][den[r]], fl[1][num[r]] / fl[1][den[r]]);
    }

    /* thread settings, config A: what each pool of threads buys */
    if (threads > 1) {
        const int set[3][2] = { { threads, 1 }, { 1, threads }, { 1, 1 } };
        const char *sname[3] = { "ebt threads, OpenBLAS 1", "ebt 1, OpenBLAS threads", "1 thread" };
        const int cblas = !strcmp(ebt_gemm_backend(), "cblas");
        const int tops[3] = { OP_ENG, OP_DET, OP_TPP };
        double tt[3][3];
        printf("\nthread settings, config A (ms; ebt threads = %d):\n  %-26s", threads, "setting");
        for (int o = 0; o < 3; o++) printf(" %26s", op_name[tops[o]]);
        printf("\n");
        for (int si = 0; si < 3; si++) {
            if (si == 1 && !cblas) { printf("  %-26s (OpenBLAS's threads do not apply: ebt's products are oneDNN's)\n", sname[si]); continue; }
            printf("  %-26s", sname[si]);
            for (int o = 0; o < 3; o++) {
                job t = { cfg[0], reps < 5 ? reps : 5, 0, 0, tops[o], set[si][0], set[si][1] };
                double r;
                if (tops[o] == OP_ENG) {
                    double all[NOP];
                    in_child(job_config, &t, all, NOP, &r);
                    tt[si][o] = all[OP_ENG];
                } else {
                    in_child(job_train, &t, &tt[si][o], 1, &r);
                }
                {
                    double f[NOP];
                    op_flops(&cfg[0], f);
                    printf(" %17.1f (%3.0f%%)", 1e3 * tt[si][o], 100 * f[tops[o]] / tt[si][o] * 1e-9 / peak[si == 0]);
                }
            }
            printf("\n");
        }
        printf("  (%%peak of the peak at the same thread count)\n");
        printf("  %-26s", "speed-up of ebt threads");
        for (int o = 0; o < 3; o++) printf(" %25.2fx", tt[2][o] / tt[0][o]);
        if (cblas) {
            printf("\n  %-26s", "speed-up of OpenBLAS's");
            for (int o = 0; o < 3; o++) printf(" %25.2fx", tt[2][o] / tt[1][o]);
        }
        printf("\n");
    }

    /* generation with the KV cache against recomputing the prefix */
    shape gs = cfg[0];
    double gen[2][NG], grss[2];
    printf("\ngeneration (config A sizes, max_seq_len >= 1024, B=1, think steps %d, temperature 0):\n"
           "  ms per generated token = (T(%d tokens) - T(1 token)) / %d after a prompt of ctx-%d tokens\n",
           gs.K, gen_n, gen_n - 1, gen_n + 1);
    printf("  %-6s %-10s %10s %10s %12s %9s %10s %8s\n", "ctx", "mode", "ms/token", "tokens/s", "GFLOP/token",
           "GFLOP/s", "cache gain", "RSS MB");
    for (int c = 0; c < 2; c++) {
        job j = { gs, reps, gen_n, gen_ctx[c], 0, eth, bth };
        double len = gen_ctx[c] - gen_n - 1 + gen_n / 2.0;   /* mean context length while generating */
        in_child(job_gen, &j, gen[c], NG, &grss[c]);
        for (int nc = 0; nc < 2; nc++) {
            double f = f_gen(&gs, len, !nc);
            printf("  %-6d %-10s %10.3f %10.1f %12.4f %9.2f %9.1fx %8.1f\n", gen_ctx[c], nc ? "no cache" : "KV cache",
                   1e3 * gen[c][nc], 1 / gen[c][nc], f * 1e-9, f / gen[c][nc] * 1e-9,
                   gen[c][G_NOCACHE] / gen[c][nc], grss[c]);
        }
    }

    /* growth: EBT detach train step as one size grows, others as config A */
    enum { NGP = 14 };
    shape gp[NGP];
    char gax[NGP];
    int ngp = 0;
    double gt[NGP], grs[NGP];
    if (growth) {
        shape base = cfg[0];
        int qd = quick ? 4 : 1;   /* --quick divides S, D by 4..8 */
        for (int i = 0; i < 4; i++) {   /* S: B = 1 */
            gp[ngp] = base; gp[ngp].B = 1; gp[ngp].S = (128 / (quick ? 8 : 1)) << i; gax[ngp++] = 'S';
        }
        for (int i = 0; i < 3; i++) {   /* D: H = D/32, F = D */
            gp[ngp] = base; gp[ngp].D = gp[ngp].F = (128 / qd) << i; gp[ngp].H = gp[ngp].D / 32; gax[ngp++] = 'D';
        }
        for (int i = 0; i < 3; i++) {   /* V: B = 4, S = 64 */
            static const int vs[3] = { 256, 4096, 32768 };
            gp[ngp] = base; gp[ngp].V = vs[i];
            if (!quick) { gp[ngp].B = 4; gp[ngp].S = 64; }
            gax[ngp++] = 'V';
        }
        for (int i = 0; i < 4; i++) { gp[ngp] = base; gp[ngp].K = 1 << i; gax[ngp++] = 'K'; }
        printf("\ngrowth: EBT detach train step (median of %d after 1 warm-up), one child process per point;\n"
               "  x = ratio to the smallest setting; model = FLOP model 3Fo+7K*Fp-K*Fe; order = naive\n",
               reps < 3 ? reps : 3);
        printf("  %-4s %6s  %-28s %10s %8s %8s %8s %9s %7s\n", "axis", "value", "shape (V D L H F S B K)", "ms/step",
               "x time", "x model", "order", "RSS MB", "x RSS");
        for (int i = 0; i < ngp; i++) {
            job j = { gp[i], reps < 3 ? reps : 3, 0, 0, OP_DET, eth, bth };
            int first = i == 0 || gax[i - 1] != gax[i], i0 = i;
            char sh[96], ord[40], ax[2] = { gax[i], 0 };
            double f[NOP], f0[NOP], r;
            in_child(job_growth, &j, &gt[i], 1, &grs[i]);
            while (i0 > 0 && gax[i0 - 1] == gax[i]) i0--;
            op_flops(&gp[i], f);
            op_flops(&gp[i0], f0);
            switch (gax[i]) {
            case 'S': r = (double)gp[i].S / gp[i0].S; snprintf(ord, sizeof ord, "%g..%g", r, r * r); break;
            case 'D': r = (double)gp[i].D / gp[i0].D; snprintf(ord, sizeof ord, "%g", r * r); break;
            case 'V': snprintf(ord, sizeof ord, "%g", (double)gp[i].V / gp[i0].V); break;
            default: snprintf(ord, sizeof ord, "%g", (double)gp[i].K / gp[i0].K); break;
            }
            snprintf(sh, sizeof sh, "%d %d %d %d %d %d %d %d", gp[i].V, gp[i].D, gp[i].L, gp[i].H, gp[i].F, gp[i].S,
                     gp[i].B, gp[i].K);
            printf("  %-4s %6d  %-28s %10.2f %8.2f %8.2f %8s %9.1f %7.2f\n", first ? ax : "",
                   gax[i] == 'S' ? gp[i].S : gax[i] == 'D' ? gp[i].D : gax[i] == 'V' ? gp[i].V : gp[i].K, sh,
                   1e3 * gt[i], gt[i] / gt[i0], f[OP_DET] / f0[OP_DET], ord, grs[i], grs[i] / grs[i0]);
        }
    }

    printf("\ntotal wall time %.1f s\n", now() - t_start);
    /* everything again, for scripts */
    printf("\nJSON: {\"quick\":%d,\"repeats\":%d,\"ebt_threads\":%d,\"blas_threads\":%d,\"nproc\":%ld,"
           "\"peak_gflops\":[%.1f,%.1f],\"backend\":\"%s\"", quick, reps, eth, bth,
           sysconf(_SC_NPROCESSORS_ONLN), peak[0], peak[1], ebt_gemm_backend());
    for (int c = 0; c < 2; c++) {
        printf(",\"%s\":{\"shape\":[%d,%d,%d,%d,%d,%d,%d,%d]", cname[c], cfg[c].V, cfg[c].D,
               cfg[c].L, cfg[c].H, cfg[c].F, cfg[c].S, cfg[c].B, cfg[c].K);
        for (int op = 0; op < NOP; op++)
            printf(",\"%s_ms\":%.4f,\"%s_gflops\":%.3f,\"%s_rss_mb\":%.1f", op_key[op], 1e3 * med[c][op], op_key[op],
                   fl[c][op] / med[c][op] * 1e-9, op_key[op], rss[c][op]);
        printf("}");
    }
    printf(",\"gen\":[");
    for (int c = 0; c < 2; c++)
        printf("%s{\"ctx\":%d,\"cache_ms_per_token\":%.4f,\"nocache_ms_per_token\":%.4f,\"rss_mb\":%.1f}", c ? "," : "",
               gen_ctx[c], 1e3 * gen[c][G_CACHE], 1e3 * gen[c][G_NOCACHE], grss[c]);
    printf("],\"growth\":[");
    for (int i = 0; i < ngp; i++)
        printf("%s{\"axis\":\"%c\",\"shape\":[%d,%d,%d,%d,%d,%d,%d,%d],\"train_detach_ms\":%.3f,\"rss_mb\":%.1f}",
               i ? "," : "", gax[i], gp[i].V, gp[i].D, gp[i].L, gp[i].H, gp[i].F, gp[i].S, gp[i].B, gp[i].K,
               1e3 * gt[i], grs[i]);
    printf("]}\n");
    return 0;
}
