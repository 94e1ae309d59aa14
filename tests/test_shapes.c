/* Finite-difference checks at real shapes, in double precision (the
 * library built with -DEBT_DOUBLE): S = 70, more than two of the library's
 * 32-row attention query chunks (71 observed rows with a step token), with
 * 2 and 4 heads, a step embedding, tied and untied embeddings, B = 2 and 1.
 * tests/test_fd.c checks the same quantities at S <= 6, within one chunk;
 * tests/test_ref.c and test_train.c compare the same kinds of quantities
 * at S = 70 with the PyTorch reference.
 *
 * Checked against central differences: dE/dp (every entry), H_pp v and the
 * mixed term grad_theta(v . dE/dp) (every entry: differences of dE/dp and
 * dE/dtheta along v), dE/dtheta (ebt_energy_backward), the transformer++
 * loss gradients and the training gradients of every mode (ebt_train_grad
 * with caller-given initial logits and step multipliers, large steps) on a
 * sample of NSAMP entries per tensor: the first, the last and random ones
 * from a fixed seed per tensor. Sums over positions are taken as sums of per-position
 * differences, so rounding in the total does not swamp the differences.
 *
 * Every entry: |analytic - fd| <= rtol |fd| + floor max|g| (check_entries;
 * g the analytic tensor for sampled checks, else the differences). */
#ifndef EBT_DOUBLE
#error "build this test with -DEBT_DOUBLE"
#endif
#include "../ebt.h"
#include "test_util.h"

enum { S = 70, NSAMP = 8 };

typedef struct { int V, D, H, F, B, step_embed, tied; } shape;
static const shape SH_STEP = { 11, 16, 2, 20, 2, 3, 0 };   /* 2 heads, step token, untied */
static const shape SH_TIED4 = { 13, 16, 4, 12, 1, 0, 1 };  /* 4 heads (Dh = 4), tied, B = 1 */

/* rtol and floor. With both at 1e-7 and 1e-8 the worst entries used, over
 * OPENBLAS_CORETYPE = Prescott, Core2, Nehalem, Sandybridge, Haswell, Zen,
 * SkylakeX and Cooperlake, these shares of the bound (max err/max|fd| in
 * brackets for the full checks): dE/dp 0.023 (2.0e-9: two points),
 * dE/dtheta 0.006, transformer++ 0.015, training detach 0.036, truncate
 * 0.054, full 0.123 (the chain with large steps is strongly curved: h^4
 * truncation dominates above h = 3e-6); H v 0.0002 (1.1e-11), mixed term
 * 0.003 (5.3e-11). The bounds below leave at least 2x. */
#define TOL_R 3e-8    /* dE/dp, dE/dtheta, transformer++, training */
#define TOL_F 3e-9
#define TOL2_R 1e-9   /* H v, mixed term */
#define TOL2_F 1e-10

/* a model with every parameter perturbed so that no path is trivial */
static ebt_model *make_model(ebt_arch arch, const shape *sh, uint64_t seed)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.arch = arch;
    c.vocab_size = sh->V; c.d_model = sh->D; c.n_heads = sh->H; c.d_ff = sh->F; c.n_layers = 2;
    c.max_seq_len = S; c.n_step_embed = sh->step_embed; c.tie_pred_embed = sh->tied;
    assert_int_equal(ebt_create(&c, seed, &m), EBT_OK);
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        size_t n;
        ebt_real *p = ebt_param(m, ebt_tensor_name(m, t), &n);
        for (size_t i = 0; i < n; i++) p[i] += 0.2 * test_normal();
    }
    return m;
}

/* NSAMP distinct entries of n (all if n <= NSAMP): 0, n-1 and random ones
 * drawn from seed (the test's other draws are not disturbed); returns the count */
static size_t sample(size_t n, uint64_t seed, size_t *idx)
{
    uint64_t saved = test_rng_state;
    size_t k = 0;
    if (n <= NSAMP) { for (size_t i = 0; i < n; i++) idx[i] = i; return n; }
    test_rng_state = seed;
    idx[k++] = 0;
    idx[k++] = n - 1;
    while (k < NSAMP) {
        size_t c = (size_t)(test_unif() * (double)n), j = 0;
        while (j < k && idx[j] != c) j++;
        if (j == k) idx[k++] = c;
    }
    test_rng_state = saved;
    return k;
}

/* d/dt at 0 of out(t) (n values, written by f) by the central stencil of
 * npts = 2 (truncation O(h^2)) or 4 points (O(h^4)); d[n] receives them */
typedef void (*fd_fn)(void *ctx, double t, double *out);
static void fd_central(fd_fn f, void *ctx, size_t n, int npts, double h, double *d, double *tmp)
{
    static const double off4[4] = { -2, -1, 1, 2 }, w4[4] = { 1, -8, 8, -1 };
    static const double off2[2] = { -1, 1 }, w2[2] = { -6, 6 };
    const double *off = npts == 4 ? off4 : off2, *w = npts == 4 ? w4 : w2;
    for (size_t i = 0; i < n; i++) d[i] = 0;
    for (int q = 0; q < npts; q++) {
        f(ctx, off[q] * h, tmp);
        for (size_t i = 0; i < n; i++) d[i] += w[q] * tmp[i];
    }
    for (size_t i = 0; i < n; i++) d[i] /= 12 * h;
}
static double sum(const double *x, size_t n) { double s = 0; for (size_t i = 0; i < n; i++) s += x[i]; return s; }

/* sampled entries idx[ns] of a gradient g[cnt] against their differences
 * ref[ns]; the floor is relative to the largest entry of the whole tensor
 * (a sample may hold only entries that are zero up to difference noise) */
static int check_sampled(const char *what, const ebt_real *g, size_t cnt, const size_t *idx, size_t ns,
                         const double *ref)
{
    ebt_real got[NSAMP];
    double mx = 0;
    for (size_t i = 0; i < cnt; i++) mx = fmax(mx, fabs(g[i]));
    for (size_t j = 0; j < ns; j++) got[j] = g[idx[j]];
    return check_entries_atol(what, got, ref, ns, TOL_R, TOL_F * mx);
}

/* ---- the energy: dE/dp, H v, dE/dtheta, mixed term -------------------- */
typedef struct {
    ebt_model *m;
    ebt_workspace *ws;       /* observed tokens (for moves of p) */
    const int32_t *tok;
    ebt_real *p, *pt;        /* probabilities, scratch for p + t v */
    const ebt_real *v;
    ebt_real *x;             /* the entry moved (of p or of a parameter) */
    size_t n, np;            /* B*S*V, parameters */
    int B, step;
} ectx;

static void f_energy_p(void *c, double t, double *out)    /* E(p + t e_x), observed stream cached */
{
    ectx *e = c;
    ebt_real x0 = *e->x;
    *e->x = x0 + t;
    assert_int_equal(ebt_ws_energy(e->ws, e->p, out, NULL), EBT_OK);
    *e->x = x0;
}
static void f_energy_theta(void *c, double t, double *out) /* E with parameter entry x moved */
{
    ectx *e = c;
    ebt_real x0 = *e->x;
    *e->x = x0 + t;
    assert_int_equal(ebt_energy(e->m, e->tok, e->p, e->B, S, e->step, out, NULL), EBT_OK);
    *e->x = x0;
}
static void f_dEdp_v(void *c, double t, double *out)      /* dE/dp at p + t v */
{
    ectx *e = c;
    for (size_t i = 0; i < e->n; i++) e->pt[i] = e->p[i] + t * e->v[i];
    assert_int_equal(ebt_energy(e->m, e->tok, e->pt, e->B, S, e->step, NULL, out), EBT_OK);
}
static void f_dEdtheta_v(void *c, double t, double *out)  /* dE/dtheta (every tensor, in order) at p + t v */
{
    ectx *e = c;
    size_t at = 0, cnt;
    for (size_t i = 0; i < e->n; i++) e->pt[i] = e->p[i] + t * e->v[i];
    ebt_zero_grad(e->m);
    assert_int_equal(ebt_energy_backward(e->m, e->tok, e->pt, e->B, S, e->step, NULL, NULL), EBT_OK);
    for (int k = 0; k < ebt_n_tensors(e->m); k++) {
        const ebt_real *g = ebt_grad(e->m, ebt_tensor_name(e->m, k), &cnt);
        memcpy(out + at, g, cnt * sizeof *g);
        at += cnt;
    }
}

/* dE/dp, every entry, from per-position energy differences (2 points, to
 * halve the cost; h = 1e-6 balances truncation and rounding) */
static int fd_dEdp(ectx *e, double *ref, double *d, double *tmp)
{
    const double h = 1e-6;
    ebt_real *g = malloc(e->n * sizeof *g);
    int BS = e->B * S;
    assert_int_equal(ebt_energy(e->m, e->tok, e->p, e->B, S, e->step, NULL, g), EBT_OK);
    for (size_t i = 0; i < e->n; i++) {
        e->x = &e->p[i];
        fd_central(f_energy_p, e, (size_t)BS, 2, h, d, tmp);
        ref[i] = sum(d, (size_t)BS);
    }
    int ok = check_entries("dE/dp (every entry)", g, ref, e->n, TOL_R, TOL_F);
    free(g);
    return ok;
}

/* H v and the mixed term, every entry: differences of dE/dp and of dE/dtheta along v */
static int fd_second_order(ectx *e, double *ref, double *tmp)
{
    const double h = 1e-5;
    ebt_real *hv = malloc(e->n * sizeof *hv), *mixed = malloc(e->np * sizeof *mixed);
    size_t at = 0, cnt;
    int ok;
    ebt_zero_grad(e->m);
    assert_int_equal(ebt_mixed_backward(e->m, e->tok, e->p, e->B, S, e->step, e->v, hv, NULL), EBT_OK);
    for (int k = 0; k < ebt_n_tensors(e->m); k++) {
        const ebt_real *g = ebt_grad(e->m, ebt_tensor_name(e->m, k), &cnt);
        memcpy(mixed + at, g, cnt * sizeof *g);
        at += cnt;
    }
    fd_central(f_dEdp_v, e, e->n, 4, h, ref, tmp);
    ok = check_entries("H_pp v (every entry)", hv, ref, e->n, TOL2_R, TOL2_F);
    fd_central(f_dEdtheta_v, e, e->np, 4, h, ref, tmp);
    at = 0;
    for (int k = 0; k < ebt_n_tensors(e->m); k++) {
        const char *name = ebt_tensor_name(e->m, k);
        char what[96];
        ebt_grad(e->m, name, &cnt);
        snprintf(what, sizeof what, "mixed %s", name);
        if (strcmp(name, "alpha")) ok &= check_entries(what, mixed + at, ref + at, cnt, TOL2_R, TOL2_F);
        at += cnt;
    }
    free(hv); free(mixed);
    return ok;
}

/* dE/dtheta (ebt_energy_backward), NSAMP entries per tensor */
static int fd_dEdtheta(ectx *e, double *d, double *tmp)
{
    const double h = 1e-5;
    int ok = 1, BS = e->B * S;
    size_t cnt, idx[NSAMP];
    ebt_zero_grad(e->m);
    assert_int_equal(ebt_energy_backward(e->m, e->tok, e->p, e->B, S, e->step, NULL, NULL), EBT_OK);
    for (int k = 0; k < ebt_n_tensors(e->m); k++) {
        const char *name = ebt_tensor_name(e->m, k);
        ebt_real *w = ebt_param(e->m, name, &cnt), *g = ebt_grad(e->m, name, &cnt);
        double ref[NSAMP];
        char what[96];
        if (strcmp(name, "alpha") == 0) continue;
        size_t ns = sample(cnt, 1000 + (uint64_t)k, idx);
        for (size_t j = 0; j < ns; j++) {
            e->x = &w[idx[j]];
            fd_central(f_energy_theta, e, (size_t)BS, 4, h, d, tmp);
            ref[j] = sum(d, (size_t)BS);
        }
        snprintf(what, sizeof what, "dE/d %s (%zu entries)", name, ns);
        ok &= check_sampled(what, g, cnt, idx, ns, ref);
    }
    return ok;
}

static void check_energy_fd(const shape *sh, int step)
{
    ebt_model *m = make_model(EBT_ARCH_EBT, sh, 70);
    ectx e = { 0 };
    int ok = 1;
    e.m = m; e.B = sh->B; e.step = step;
    e.n = (size_t)sh->B * S * sh->V; e.np = ebt_n_params(m);
    size_t big = e.n > e.np ? e.n : e.np;
    int32_t *tok = malloc(sizeof *tok * (size_t)sh->B * S);
    ebt_real *v = malloc(e.n * sizeof *v);
    double *ref = malloc(big * sizeof *ref), *d = malloc(big * sizeof *d), *tmp = malloc(big * sizeof *tmp);
    e.p = malloc(e.n * sizeof *e.p); e.pt = malloc(e.n * sizeof *e.pt); e.tok = tok; e.v = v;
    printf("ebt V=%d D=%d H=%d F=%d L=2 step_embed=%d tied=%d, B=%d S=%d step=%d\n", sh->V, sh->D, sh->H, sh->F,
           sh->step_embed, sh->tied, sh->B, S, step);
    for (int i = 0; i < sh->B * S; i++) tok[i] = (int32_t)(test_unif() * sh->V);
    test_random_probs(e.p, sh->B * S, sh->V, 1.5);
    for (size_t i = 0; i < e.n; i++) v[i] = test_normal();
    assert_int_equal(ebt_workspace_create(m, sh->B, S, &e.ws), EBT_OK);
    assert_int_equal(ebt_observe(e.ws, m, tok, sh->B, S, step), EBT_OK);

    ok &= fd_dEdp(&e, ref, d, tmp);
    ok &= fd_second_order(&e, ref, tmp);
    ok &= fd_dEdtheta(&e, d, tmp);
    ebt_workspace_free(e.ws);
    free(tok); free(v); free(ref); free(d); free(tmp); free(e.p); free(e.pt);
    ebt_free(m);
    assert_true(ok);
}

static void test_fd70_energy_step(void **state) { (void)state; check_energy_fd(&SH_STEP, 2); }
static void test_fd70_energy_tied_4heads(void **state) { (void)state; check_energy_fd(&SH_TIED4, 0); }

/* ---- transformer++: the loss gradients ------------------------------- */
static void test_softmax_rows(ebt_real *p, const ebt_real *y, int N, int V)
{
    for (int n = 0; n < N; n++) {
        const ebt_real *yr = y + (size_t)n * V;
        double mx = -1e300, z = 0;
        for (int j = 0; j < V; j++) mx = fmax(mx, yr[j]);
        for (int j = 0; j < V; j++) z += exp(yr[j] - mx);
        for (int j = 0; j < V; j++) p[(size_t)n * V + j] = exp(yr[j] - mx) / z;
    }
}
static double test_ce_row(const ebt_real *y, int V, int target)
{
    double mx = -1e300, z = 0;
    for (int j = 0; j < V; j++) mx = fmax(mx, y[j]);
    for (int j = 0; j < V; j++) z += exp(y[j] - mx);
    return log(z) + mx - y[target];
}

typedef struct {
    ebt_model *m;
    const int32_t *tok, *tgt;
    ebt_real *logits, *x;
    int B, V;
} lctx;

static void f_lm_loss(void *c, double t, double *out)   /* per-position CE / N with entry x moved */
{
    lctx *l = c;
    ebt_real x0 = *l->x;
    int N = l->B * S;
    *l->x = x0 + t;
    assert_int_equal(ebt_lm_logits(l->m, l->tok, l->B, S, l->logits), EBT_OK);
    *l->x = x0;
    for (int n = 0; n < N; n++) {
        const ebt_real *z = l->logits + (size_t)n * l->V;
        out[n] = test_ce_row(z, l->V, l->tgt[n]) / N;
    }
}

static void test_fd70_transformer(void **state)
{
    static const shape sh = { 13, 16, 4, 24, 2, 0, 0 };
    ebt_model *m = make_model(EBT_ARCH_TRANSFORMER, &sh, 71);
    int N = sh.B * S, ok = 1;
    int32_t tok[2 * S], tgt[2 * S];
    double d[2 * S], tmp[2 * S];
    ebt_real loss;
    lctx l = { m, tok, tgt, malloc(sizeof(ebt_real) * (size_t)N * sh.V), NULL, sh.B, sh.V };
    (void)state;
    printf("transformer++ V=%d D=%d H=%d F=%d L=2, B=%d S=%d\n", sh.V, sh.D, sh.H, sh.F, sh.B, S);
    for (int i = 0; i < N; i++) { tok[i] = (int32_t)(test_unif() * sh.V); tgt[i] = (int32_t)(test_unif() * sh.V); }
    ebt_zero_grad(m);
    assert_int_equal(ebt_lm_backward(m, tok, tgt, sh.B, S, &loss), EBT_OK);
    for (int k = 0; k < ebt_n_tensors(m); k++) {
        const char *name = ebt_tensor_name(m, k);
        size_t cnt, idx[NSAMP];
        ebt_real *w = ebt_param(m, name, &cnt), *g = ebt_grad(m, name, &cnt);
        double ref[NSAMP];
        char what[96];
        size_t ns = sample(cnt, 1000 + (uint64_t)k, idx);
        for (size_t j = 0; j < ns; j++) {
            l.x = &w[idx[j]];
            fd_central(f_lm_loss, &l, (size_t)N, 4, 1e-5, d, tmp);
            ref[j] = sum(d, (size_t)N);
        }
        snprintf(what, sizeof what, "dloss/d %s (%zu entries)", name, ns);
        ok &= check_sampled(what, g, cnt, idx, ns, ref);
    }
    free(l.logits);
    ebt_free(m);
    assert_true(ok);
}

/* ---- training through the thinking loop (docs/model.md section 6) ----------------------
 * full: the true loss through the whole chain. detach: the surrogate with
 * every p_k frozen at its unperturbed value. truncate: the surrogate with
 * g_0..g_{K-2} frozen (the chain through softmax stays live). */
typedef struct {
    ebt_model *m;
    const int32_t *tok, *tgt;
    const ebt_real *y0, *u;
    int md, K, B, V, record;  /* record: store p_k, g_k in fp, fg (else use them as the mode freezes) */
    ebt_real *y, *p, *g, *fp, *fg, *x;
} tctx;

static void f_chain(void *c, double t, double *out)   /* per-position loss contributions, entry x moved */
{
    tctx *a = c;
    int N = a->B * S;
    size_t nv = (size_t)N * a->V;
    ebt_real x0 = a->x ? *a->x : 0;
    if (a->x) *a->x = x0 + t;
    double alpha = fmax(ebt_param(a->m, "alpha", NULL)[0], 1e-4);
    memcpy(a->y, a->y0, nv * sizeof *a->y);
    for (int n = 0; n < N; n++) out[n] = 0;
    for (int k = 0; k < a->K; k++) {
        if (a->md == EBT_MODE_DETACH && !a->record) memcpy(a->p, a->fp + k * nv, nv * sizeof *a->p);
        else test_softmax_rows(a->p, a->y, N, a->V);
        if (a->md == EBT_MODE_TRUNCATE && !a->record && k < a->K - 1)
            memcpy(a->g, a->fg + k * nv, nv * sizeof *a->g);
        else
            assert_int_equal(ebt_energy(a->m, a->tok, a->p, a->B, S, k, NULL, a->g), EBT_OK);
        if (a->record) {
            memcpy(a->fp + k * nv, a->p, nv * sizeof *a->p);
            memcpy(a->fg + k * nv, a->g, nv * sizeof *a->g);
        }
        for (size_t i = 0; i < nv; i++) a->y[i] = a->p[i] - alpha * a->u[i / a->V] * a->g[i];
        if (a->md == EBT_MODE_TRUNCATE && k < a->K - 1) continue;   /* truncate: loss = L_K */
        double w = 1.0 / (N * (a->md == EBT_MODE_TRUNCATE ? 1 : a->K));
        for (int n = 0; n < N; n++) out[n] += w * test_ce_row(a->y + (size_t)n * a->V, a->V, a->tgt[n]);
    }
    if (a->x) *a->x = x0;
}

/* the training gradients of every tensor (ebt_grad, from ebt_train_grad) on NSAMP entries each */
static int check_train_tensors(tctx *a, const char *mode, double *d, double *tmp)
{
    int ok = 1, N = a->B * S;
    for (int k = 0; k < ebt_n_tensors(a->m); k++) {
        const char *name = ebt_tensor_name(a->m, k);
        size_t cnt, idx[NSAMP];
        ebt_real *w = ebt_param(a->m, name, &cnt), *g = ebt_grad(a->m, name, &cnt);
        double ref[NSAMP];
        char what[128];
        size_t ns = sample(cnt, 1000 + (uint64_t)k, idx);
        for (size_t j = 0; j < ns; j++) {
            a->x = &w[idx[j]];
            fd_central(f_chain, a, (size_t)N, 4, 3e-6, d, tmp);
            ref[j] = sum(d, (size_t)N);
        }
        a->x = NULL;
        snprintf(what, sizeof what, "%s d loss/d %s (%zu entries)", mode, name, ns);
        ok &= check_sampled(what, g, cnt, idx, ns, ref);
    }
    return ok;
}

static void check_train_fd(const shape *sh, int K)
{
    static const char *names[] = { "detach", "truncate", "full" };
    ebt_model *m = make_model(EBT_ARCH_EBT, sh, 72);
    int N = sh->B * S, ok = 1;
    size_t nv = (size_t)N * sh->V;
    int32_t *tok = malloc(sizeof *tok * N), *tgt = malloc(sizeof *tgt * N);
    ebt_real *y0 = malloc(nv * sizeof *y0), *u = malloc(N * sizeof *u);
    double *d = malloc(N * sizeof *d), *tmp = malloc(N * sizeof *tmp);
    tctx a = { m, tok, tgt, y0, u, 0, K, sh->B, sh->V, 0, NULL, NULL, NULL, NULL, NULL, NULL };
    a.y = malloc(nv * sizeof *a.y); a.p = malloc(nv * sizeof *a.p); a.g = malloc(nv * sizeof *a.g);
    a.fp = malloc(K * nv * sizeof *a.fp); a.fg = malloc(K * nv * sizeof *a.fg);
    ebt_param(m, "alpha", NULL)[0] = 0.7;   /* large steps: alpha_i = 0.7 u_i, u_i in [0.5, 1.5] */
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)(test_unif() * sh->V);
        tgt[i] = (int32_t)(test_unif() * sh->V);
        u[i] = 0.5 + test_unif();
    }
    for (size_t i = 0; i < nv; i++) y0[i] = test_normal();
    for (int md = 0; md < 3; md++) {
        ebt_train_opts o = ebt_train_default();
        ebt_train_stats st;
        o.mode = (ebt_mode)md;
        o.k_min = o.k_max = K;
        printf("training, mode %s: V=%d D=%d H=%d step_embed=%d tied=%d, B=%d S=%d K=%d\n", names[md], sh->V, sh->D,
               sh->H, sh->step_embed, sh->tied, sh->B, S, K);
        a.md = md; a.record = 1; a.x = NULL;
        f_chain(&a, 0, d);
        a.record = 0;
        double l0 = sum(d, (size_t)N);
        assert_int_equal(ebt_train_grad(m, &o, tok, tgt, sh->B, S, y0, u, &st), EBT_OK);
        assert_true(fabs(st.loss - l0) <= 1e-12 * (1 + fabs(l0)));
        ok &= check_train_tensors(&a, names[md], d, tmp);
    }
    free(tok); free(tgt); free(y0); free(u); free(d); free(tmp);
    free(a.y); free(a.p); free(a.g); free(a.fp); free(a.fg);
    ebt_free(m);
    assert_true(ok);
}

/* 2 heads, step token (steps 0 and 1), untied, B = 1, K = 2 */
static void test_fd70_train_step(void **state)
{
    static const shape sh = { 11, 16, 2, 20, 1, 3, 0 };
    (void)state;
    check_train_fd(&sh, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd70_energy_step),
        cmocka_unit_test(test_fd70_energy_tied_4heads),
        cmocka_unit_test(test_fd70_transformer),
        cmocka_unit_test(test_fd70_train_step),
    };
    return cmocka_run_group_tests_name("finite differences at S = 70 (double)", tests, NULL, NULL);
}
