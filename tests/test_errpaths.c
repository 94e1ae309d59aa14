/* Error paths that no other test reaches:
 *  - a non-finite energy (the step token of thinking step 1 made infinite)
 *    or loss (one position's step size so large that y_2 overflows while
 *    y_1 does not) inside the training chain, in every mode: every
 *    training call returns EBT_ERR_NONFINITE; parameters, optimiser state
 *    and replay buffer are unchanged, and ebt_train_accumulate leaves the
 *    gradients too (detach mode has already replaced them by step 0's when
 *    step 1 fails: they must be restored);
 *  - a non-finite loss at the first step and a non-finite transformer++
 *    loss (also ebt_lm_backward);
 *  - read errors while loading: a directory, an unreadable file, and a
 *    read failure injected at every fread the loader makes (full and
 *    partial reads): EBT_ERR_IO, no model, no leaked allocation.
 * The file includes ebt.c to hash the training state and to route the
 * loader's fread/ferror and allocations through test hooks. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <float.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* fread fails at its fail_at-th call (returning nothing, or half when
 * partial) and ferror then reports an error on that stream */
static long tr_calls, tr_fail_at;
static int tr_partial;
static FILE *tr_failed;
static size_t tr_fread(void *p, size_t sz, size_t n, FILE *f)
{
    if (tr_fail_at > 0 && ++tr_calls == tr_fail_at) {
        tr_failed = f;
        return tr_partial ? fread(p, sz, n / 2, f) : 0;
    }
    return fread(p, sz, n, f);
}
static int tr_ferror(FILE *f) { return f == tr_failed || ferror(f); }

/* allocations still live */
static long ta_live;
static void *ta_malloc(size_t n) { void *p = malloc(n); ta_live += p != NULL; return p; }
static void *ta_realloc(void *p, size_t n) { void *q = realloc(p, n); ta_live += !p && q; return q; }
static void ta_free(void *p) { ta_live -= p != NULL; free(p); }

#define fread tr_fread
#define ferror tr_ferror
#define EBT_MALLOC(sz) ta_malloc(sz)
#define EBT_REALLOC(p, sz) ta_realloc(p, sz)
#define EBT_FREE(p) ta_free(p)
#include "../ebt.c"
#undef fread
#undef ferror
#include "test_util.h"

enum { B = 2, S = 5, V = 11, N = B * S };

/* parameters, and (with_grads) the gradients and the statistic sums
 * behind them; optimiser moments and step, the replay ring and the
 * pending sequences of the current step */
static uint64_t replay_hash(uint64_t h, const ebt__replay *r)
{
    int head[4] = { r->cap, r->count, r->next, r->S };
    size_t n = (size_t)r->count * (size_t)(r->S > 0 ? r->S : 0);
    h = test_fnv(h, head, sizeof head);
    if (n) {
        h = test_fnv(h, r->tok, n * sizeof(int32_t));
        h = test_fnv(h, r->tgt, n * sizeof(int32_t));
        h = test_fnv(h, r->y, n * (size_t)V * sizeof(ebt_real));
    }
    return h;
}

static uint64_t state_hash(ebt_model *m, int with_grads)
{
    uint64_t h = test_fnv(TEST_FNV0, m->params, m->n_params * sizeof(ebt_real));
    size_t n;
    const ebt_real *buf = ebt_train_buffer(m, &n);   /* the gradients, then the statistic sums */
    if (with_grads) h = test_fnv(h, buf, n * sizeof(ebt_real));
    h = test_fnv(h, &m->opt.step, sizeof m->opt.step);
    if (m->opt.m) {
        h = test_fnv(h, m->opt.m, m->n_params * sizeof(ebt_real));
        h = test_fnv(h, m->opt.v, m->n_params * sizeof(ebt_real));
    }
    return replay_hash(replay_hash(h, &m->rb), &m->pend);
}

static void batch(int32_t *tok, int32_t *tgt, ebt_real *y0)
{
    for (int i = 0; i < N; i++) { tok[i] = (int32_t)(test_unif() * V); tgt[i] = (int32_t)(test_unif() * V); }
    for (int i = 0; i < N * V; i++) y0[i] = (ebt_real)test_normal();
}

/* a model with training state worth protecting: two steps with replay */
static ebt_model *trained(ebt_arch arch, int step_embed, ebt_train_opts *o)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    int32_t tok[N], tgt[N];
    static ebt_real y0[N * V];
    c.arch = arch; c.vocab_size = V; c.d_model = 8; c.n_heads = 2; c.d_ff = 12; c.n_layers = 2; c.max_seq_len = 8;
    c.n_step_embed = step_embed; c.alpha = 0.5;
    assert_int_equal(ebt_create(&c, 61 + (uint64_t)step_embed, &m), EBT_OK);
    *o = ebt_train_default();
    o->replay_capacity = 4; o->replay_frac = 0.5; o->warmup_steps = 1;
    for (int s = 0; s < 2; s++) {
        batch(tok, tgt, y0);
        assert_int_equal(ebt_train_step(m, o, tok, tgt, B, S, NULL, NULL), EBT_OK);
    }
    assert_true(m->opt.step == 2 && (arch != EBT_ARCH_EBT || m->rb.count == 4));
    return m;
}

static const char *const modes[] = { "detach", "truncate", "full" };

/* a fixed non-zero pattern in the gradients and the sums behind them */
static void fill_buffer(ebt_model *m)
{
    size_t n;
    ebt_real *b = ebt_train_buffer(m, &n);
    for (size_t i = 0; i < n; i++) b[i] = (ebt_real)(1e-3 * (double)(i % 7 + 1));
}

/* A batch whose training chain is not finite, refused by every training
 * call with EBT_ERR_NONFINITE and an error naming `why`:
 * ebt_train_accumulate leaves the gradients and the sums behind them as
 * they were (detach mode has replaced them with step 0's by the time step
 * 1 fails: they are restored) and everything else too; ebt_train_grad
 * (documented as ebt_zero_grad + ebt_train_accumulate) leaves zero
 * gradients, and it and ebt_train_step (when there are no caller step
 * multipliers u) leave parameters, moments, replay ring and pending
 * sequences unchanged. */
static void check_refused(ebt_model *m, const ebt_train_opts *o, const int32_t *tok, const int32_t *tgt,
                          const ebt_real *y0, const ebt_real *u, const char *why)
{
    uint64_t all, model;
    size_t n;
    const ebt_real *g;
    fill_buffer(m);
    all = state_hash(m, 1);
    model = state_hash(m, 0);
    assert_int_equal(ebt_train_accumulate(m, o, tok, tgt, B, S, 0, 1.0, y0, u), EBT_ERR_NONFINITE);
    assert_non_null(strstr(ebt_last_error(m), why));
    assert_true(state_hash(m, 1) == all);
    assert_int_equal(ebt_train_grad(m, o, tok, tgt, B, S, y0, u, NULL), EBT_ERR_NONFINITE);
    assert_non_null(strstr(ebt_last_error(m), why));
    assert_true(state_hash(m, 0) == model);
    g = ebt_train_buffer(m, &n);
    for (size_t i = 0; i < n; i++) assert_true(g[i] == 0);
    if (u) return;
    fill_buffer(m);
    assert_int_equal(ebt_train_step(m, o, tok, tgt, B, S, y0, NULL), EBT_ERR_NONFINITE);
    assert_non_null(strstr(ebt_last_error(m), why));
    assert_true(state_hash(m, 0) == model);
}

/* Non-finite energy at thinking step 1 (step 0 is finite): refused in
 * every mode; with one step (only step 0) the same batch trains. */
static void test_chain_energy(void **state)
{
    ebt_train_opts o;
    ebt_model *m;
    int32_t tok[N], tgt[N];
    static ebt_real y0[N * V];
    size_t n;
    ebt_real *row;
    (void)state;
    test_rng_state = 301;
    m = trained(EBT_ARCH_EBT, 2, &o);
    batch(tok, tgt, y0);
    row = ebt_param(m, "step_embed.weight", &n);
    for (size_t j = n / 2; j < n; j++) row[j] = (ebt_real)INFINITY;   /* the step token of step 1 */
    for (int md = 0; md < 3; md++) {
        o.mode = (ebt_mode)md; o.k_min = o.k_max = 2;
        check_refused(m, &o, tok, tgt, y0, NULL, "step 1");
        printf("  %-8s energy not finite at step 1: refused, model unchanged\n", modes[md]);
    }
    o.k_min = o.k_max = 1;
    assert_int_equal(ebt_train_grad(m, &o, tok, tgt, B, S, y0, NULL, NULL), EBT_OK);   /* step 0 is finite */
    ebt_free(m);
}

/* the largest |x| of row r of a (N, V) array */
static double row_max(const ebt_real *x, int r)
{
    double mx = 0;
    for (int j = 0; j < V; j++) mx = fmax(mx, fabs(x[r * V + j]));
    return mx;
}

/* A start and step-size multipliers u[N] (1 but at one position) for
 * which y_1 is finite and y_2 has an entry +Inf (so that its cross-entropy
 * is not finite). The chosen position starts one-hot at some token j
 * (y_0 = 200 e_j) and takes a step a so large that p_1 is one-hot at the
 * token j' where g_0 is least; u makes |a g_0| < FLT_MAX < -a g_1 for the
 * (position, j) where max(-g_1) / max|g_0| is largest (returned). The
 * model has no step embedding: g at a one-hot p is the same at step 0 and
 * 1, and a position's gradient depends on its own p alone. */
static double overflow_at_step_1(ebt_model *m, const int32_t *tok, ebt_real *y0, ebt_real *u)
{
    static ebt_real p[N * V], g[V][N * V];
    double best = 0, m0 = 0, m1 = 0, alpha = fmax(*ebt_param(m, "alpha", NULL), 1e-4);
    int at = 0, from = 0;
    for (int j = 0; j < V; j++) {   /* g[j]: every position one-hot at j */
        memset(p, 0, sizeof p);
        for (int r = 0; r < N; r++) p[r * V + j] = 1;
        assert_int_equal(ebt_energy(m, tok, p, B, S, 0, NULL, g[j]), EBT_OK);
    }
    for (int r = 0; r < N; r++)
        for (int j = 0; j < V; j++) {
            int jmin = 0;
            double neg = 0;
            for (int i = 1; i < V; i++) jmin = g[j][r * V + i] < g[j][r * V + jmin] ? i : jmin;
            for (int i = 0; i < V; i++) neg = fmax(neg, -g[jmin][r * V + i]);
            if (neg / row_max(g[j], r) > best) { best = neg / row_max(g[j], r); at = r; from = j; m0 = row_max(g[j], r); m1 = neg; }
        }
    for (int r = 0; r < N; r++) u[r] = 1;
    for (int i = 0; i < V; i++) y0[at * V + i] = i == from ? 200 : 0;   /* softmax: exactly one-hot in float */
    u[at] = (ebt_real)(FLT_MAX / sqrt(m0 * m1) / alpha);
    return best;
}

/* Non-finite loss at step 1 (y_2 overflows; y_1 and the loss of step 0
 * are finite): refused in every mode. */
static void test_chain_loss(void **state)
{
    ebt_train_opts o;
    ebt_model *m;
    int32_t tok[N], tgt[N];
    static ebt_real y0[N * V];
    ebt_real u[N];
    double ratio;
    (void)state;
    test_rng_state = 302;
    m = trained(EBT_ARCH_EBT, 0, &o);
    o.replay_frac = 0;   /* the batch as given: no sequence replaced by a replayed one */
    batch(tok, tgt, y0);
    ratio = overflow_at_step_1(m, tok, y0, u);
    printf("  one position's huge step: max(-g_1) / max|g_0| = %.3f there\n", ratio);
    assert_true(ratio > 1.05);   /* -a g_1 exceeds FLT_MAX by 2.5% at least: no rounding question */
    for (int md = 0; md < 3; md++) {
        o.mode = (ebt_mode)md; o.k_min = o.k_max = 2;
        check_refused(m, &o, tok, tgt, y0, u, "loss");
        printf("  %-8s loss not finite at step 1: refused, model unchanged\n", modes[md]);
    }
    o.k_min = o.k_max = 1;
    assert_int_equal(ebt_train_grad(m, &o, tok, tgt, B, S, y0, u, NULL), EBT_OK);   /* y_1 and its loss are finite */
    ebt_free(m);
}

/* y_1 overflows (alpha 1e38): a non-finite loss at the first step (or,
 * in truncate mode, whose loss is the last step's, a non-finite energy at
 * step 1) is refused in every mode. */
static void test_first_loss(void **state)
{
    ebt_train_opts o;
    ebt_model *m;
    int32_t tok[N], tgt[N];
    static ebt_real y0[N * V];
    (void)state;
    test_rng_state = 303;
    m = trained(EBT_ARCH_EBT, 0, &o);
    batch(tok, tgt, y0);
    *ebt_param(m, "alpha", NULL) = (ebt_real)1e38;
    for (int md = 0; md < 3; md++) {   /* (truncate mode has no loss at step 0: p_1 is NaN there) */
        o.mode = (ebt_mode)md;
        check_refused(m, &o, tok, tgt, y0, NULL, "not finite");
    }
    ebt_free(m);
}

/* A transformer++ whose logits overflow: ebt_lm_backward refuses with
 * the gradients as they were; the training calls as above. */
static void test_transformer_loss(void **state)
{
    ebt_train_opts o;
    ebt_model *m;
    int32_t tok[N], tgt[N];
    static ebt_real y0[N * V];
    size_t n;
    ebt_real *w, loss = 0;
    uint64_t all;
    (void)state;
    test_rng_state = 304;
    m = trained(EBT_ARCH_TRANSFORMER, 0, &o);
    batch(tok, tgt, y0);
    w = ebt_param(m, "lm_head.weight", &n);
    for (size_t j = 0; j < n; j++) w[j] = FLT_MAX;
    fill_buffer(m);
    all = state_hash(m, 1);
    assert_int_equal(ebt_lm_backward(m, tok, tgt, B, S, &loss), EBT_ERR_NONFINITE);
    assert_true(ebt_last_error(m)[0] != 0);
    assert_true(state_hash(m, 1) == all);
    check_refused(m, &o, tok, tgt, NULL, NULL, "loss");
    assert_int_equal(ebt_train_steps_done(m), 2);
    ebt_free(m);
}

/* a checkpoint with optimiser state and replay buffer at path */
static void save_trained(const char *path)
{
    ebt_train_opts o;
    ebt_model *m = trained(EBT_ARCH_EBT, 0, &o);
    assert_int_equal(ebt_save(m, path), EBT_OK);
    ebt_free(m);
}

/* a directory is not a checkpoint: EBT_ERR_IO, no model */
static void test_load_directory(void **state)
{
    char dir[256], err[256] = "";
    ebt_model *x = (ebt_model *)&x;
    (void)state;
    test_tmpdir(dir, sizeof dir, "errpaths");
    assert_int_equal(ebt_load_ex(dir, &x, err, sizeof err), EBT_ERR_IO);
    assert_null(x);
    printf("  directory: %s\n", err);
    assert_true(err[0] != 0);
    test_rmdir(dir);
}

/* ebt_load of path in a child (as uid 65534 if we are root): 0 if it gives want and no model */
static int load_in_child(const char *path, ebt_status want)
{
    pid_t pid = fork();
    int ws;
    assert_true(pid >= 0);
    if (pid == 0) {
        ebt_model *x = (ebt_model *)&x;
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(100);
        _exit(ebt_load(path, &x) == want && (want != EBT_OK) == (x == NULL) ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

/* a file without read permission: EBT_ERR_IO (readable again, it loads) */
static void test_load_unreadable(void **state)
{
    char dir[256], path[300];
    (void)state;
    test_rng_state = 306;
    test_tmpdir(dir, sizeof dir, "errpaths");
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    save_trained(path);
    assert_int_equal(chmod(dir, 0755), 0);   /* a dropped-privilege child must reach the file */
    assert_int_equal(chmod(path, 0), 0);
    assert_int_equal(load_in_child(path, EBT_ERR_IO), 0);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(load_in_child(path, EBT_OK), 0);
    test_rmdir(dir);
}

/* a read failure at each fread of a load, full or partial: EBT_ERR_IO,
 * no model, every allocation freed */
static int read_failures(const char *path, int partial)
{
    long base = ta_live;
    int points = 0;
    for (long k = 1;; k++) {
        ebt_model *x = (ebt_model *)&x;
        char err[256] = "";
        ebt_status st;
        tr_calls = 0; tr_fail_at = k; tr_partial = partial; tr_failed = NULL;
        st = ebt_load_ex(path, &x, err, sizeof err);
        tr_fail_at = 0; tr_failed = NULL;
        if (tr_calls < k) {   /* no failure reached: the load is complete */
            assert_int_equal(st, EBT_OK);
            ebt_free(x);
            return points;
        }
        if (st != EBT_ERR_IO) printf("  read %ld failed%s: %s (%s)\n", k, partial ? " (partial)" : "", ebt_status_str(st), err);
        assert_int_equal(st, EBT_ERR_IO);
        assert_null(x);
        assert_true(err[0] != 0);
        assert_int_equal(ta_live, base);
        points++;
    }
}

static void test_load_read_errors(void **state)
{
    char dir[256], path[300];
    int full, part;
    (void)state;
    test_rng_state = 307;
    test_tmpdir(dir, sizeof dir, "errpaths");
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    save_trained(path);
    full = read_failures(path, 0);
    part = read_failures(path, 1);
    printf("  %d reads of a checkpoint with optimiser state and replay buffer: each failing read (full or partial) "
           "gives EBT_ERR_IO, no model, nothing allocated\n", full);
    assert_true(full == part && full > 2 * 20);   /* header, weights, both moments of every tensor, replay */
    test_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_energy),
        cmocka_unit_test(test_chain_loss),
        cmocka_unit_test(test_first_loss),
        cmocka_unit_test(test_transformer_loss),
        cmocka_unit_test(test_load_directory),
        cmocka_unit_test(test_load_unreadable),
        cmocka_unit_test(test_load_read_errors),
    };
    return cmocka_run_group_tests_name("error paths", tests, NULL, NULL);
}
