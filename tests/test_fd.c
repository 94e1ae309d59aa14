/* Finite-difference checks in double precision: the library is compiled
 * into this file with EBT_DOUBLE, and every analytic derivative (dE/dp,
 * dE/dtheta for every tensor, H_pp v, the mixed term, transformer++
 * gradients) is compared with central differences. */
#ifndef EBT_DOUBLE
#error "build this test with -DEBT_DOUBLE"
#endif
#include "../ebt.c"
#include "test_util.h"

#define TOL 1e-6

/* a small model with every parameter perturbed so that no path is trivial */
static ebt_model *make_model(ebt_arch arch, int step_embed, int tied)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.arch = arch;
    c.vocab_size = 7; c.d_model = 8; c.n_heads = 2; c.d_ff = 12; c.n_layers = 2; c.max_seq_len = 6;
    c.n_step_embed = step_embed; c.tie_pred_embed = tied;
    assert_int_equal(ebt_create(&c, 7, &m), EBT_OK);
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        size_t n;
        ebt_real *p = ebt_param(m, ebt_tensor_name(m, t), &n);
        for (size_t i = 0; i < n; i++) p[i] += 0.2 * test_normal();
    }
    return m;
}

static double total_energy(ebt_model *m, const int32_t *tok, const ebt_real *p, int B, int S, int step)
{
    ebt_real E[64];
    double s = 0;
    assert_int_equal(ebt_energy(m, tok, p, B, S, step, E, NULL), EBT_OK);
    for (int i = 0; i < B * S; i++) s += E[i];
    return s;
}

static void check_ebt(int step_embed, int tied)
{
    const int B = 2, S = 4, step = 1, V = 7;
    const double h = 1e-5;
    ebt_model *m = make_model(EBT_ARCH_EBT, step_embed, tied);
    int32_t tok[8];
    size_t n = (size_t)B * S * V, np = ebt_n_params(m);
    ebt_real *p = malloc(n * sizeof *p), *v = malloc(n * sizeof *v), *g = malloc(n * sizeof *g);
    ebt_real *hv = malloc(n * sizeof *hv), *hv2 = malloc(n * sizeof *hv2), *gp = malloc(n * sizeof *gp), *gm = malloc(n * sizeof *gm);
    ebt_real *grad = malloc(np * sizeof *grad), *mixed = malloc(np * sizeof *mixed);
    double *ref = malloc((n > np ? n : np) * sizeof *ref);
    int ok = 1;
    printf("ebt: step_embed=%d tied=%d\n", step_embed, tied);
    for (int i = 0; i < B * S; i++) tok[i] = (int32_t)(test_unif() * V);
    test_random_probs(p, B * S, V, 1.5);
    for (size_t i = 0; i < n; i++) v[i] = test_normal();

    /* dE/dp */
    assert_int_equal(ebt_energy(m, tok, p, B, S, step, NULL, g), EBT_OK);
    for (size_t i = 0; i < n; i++) {
        ebt_real s = p[i];
        p[i] = s + h; double ep = total_energy(m, tok, p, B, S, step);
        p[i] = s - h; double em = total_energy(m, tok, p, B, S, step);
        p[i] = s;
        ref[i] = (ep - em) / (2 * h);
    }
    ok &= check_close("dE/dp", g, ref, n, TOL);

    /* H_pp v = d/dh dE/dp(p + h v) */
    assert_int_equal(ebt_hvp(m, tok, p, B, S, step, v, hv), EBT_OK);
    for (size_t i = 0; i < n; i++) p[i] += h * v[i];
    assert_int_equal(ebt_energy(m, tok, p, B, S, step, NULL, gp), EBT_OK);
    for (size_t i = 0; i < n; i++) p[i] -= 2 * h * v[i];
    assert_int_equal(ebt_energy(m, tok, p, B, S, step, NULL, gm), EBT_OK);
    for (size_t i = 0; i < n; i++) { p[i] += h * v[i]; ref[i] = (gp[i] - gm[i]) / (2 * h); }
    ok &= check_close("H_pp v", hv, ref, n, TOL);

    /* dE/dtheta for every tensor */
    ebt_zero_grad(m);
    assert_int_equal(ebt_energy_backward(m, tok, p, B, S, step, NULL, NULL), EBT_OK);
    memcpy(grad, m->grads, np * sizeof *grad);
    for (size_t i = 0; i < np; i++) {
        ebt_real s = m->params[i];
        m->params[i] = s + h; double ep = total_energy(m, tok, p, B, S, step);
        m->params[i] = s - h; double em = total_energy(m, tok, p, B, S, step);
        m->params[i] = s;
        ref[i] = (ep - em) / (2 * h);
    }
    for (int t = 0; t < m->nt; t++) {
        char what[96];
        if (strcmp(m->t[t].name, "alpha") == 0) continue;
        snprintf(what, sizeof what, "dE/d %s", m->t[t].name);
        ok &= check_close(what, grad + m->t[t].off, ref + m->t[t].off, m->t[t].count, TOL);
    }

    /* mixed term grad_theta(v . dE/dp) = d/dh dE/dtheta(p + h v); H v again as a by-product */
    ebt_zero_grad(m);
    assert_int_equal(ebt_mixed_backward(m, tok, p, B, S, step, v, hv2, NULL), EBT_OK);
    memcpy(mixed, m->grads, np * sizeof *mixed);
    for (size_t i = 0; i < n; i++) p[i] += h * v[i];
    ebt_zero_grad(m);
    assert_int_equal(ebt_energy_backward(m, tok, p, B, S, step, NULL, NULL), EBT_OK);
    memcpy(ref, m->grads, np * sizeof *ref);
    for (size_t i = 0; i < n; i++) p[i] -= 2 * h * v[i];
    ebt_zero_grad(m);
    assert_int_equal(ebt_energy_backward(m, tok, p, B, S, step, NULL, NULL), EBT_OK);
    for (size_t i = 0; i < np; i++) ref[i] = (ref[i] - m->grads[i]) / (2 * h);
    for (int t = 0; t < m->nt; t++) {
        char what[96];
        if (strcmp(m->t[t].name, "alpha") == 0) continue;
        snprintf(what, sizeof what, "mixed %s", m->t[t].name);
        ok &= check_close(what, mixed + m->t[t].off, ref + m->t[t].off, m->t[t].count, TOL);
    }
    for (size_t i = 0; i < n; i++) ref[i] = hv[i];
    ok &= check_close("H v from mixed == H v", hv2, ref, n, 1e-12);

    free(p); free(v); free(g); free(hv); free(hv2); free(gp); free(gm); free(grad); free(mixed); free(ref);
    ebt_free(m);
    assert_true(ok);
}

static void test_fd_ebt_step_tied(void **state) { (void)state; check_ebt(3, 1); }
static void test_fd_ebt_plain(void **state) { (void)state; check_ebt(0, 0); }

static double lm_loss(ebt_model *m, const int32_t *tok, const int32_t *tgt, int B, int S)
{
    ebt_real logits[2 * 5 * 7];
    double s = 0;
    assert_int_equal(ebt_lm_logits(m, tok, B, S, logits), EBT_OK);
    for (int n = 0; n < B * S; n++) {
        double mx = -1e300, z = 0;
        for (int j = 0; j < 7; j++) mx = logits[n * 7 + j] > mx ? logits[n * 7 + j] : mx;
        for (int j = 0; j < 7; j++) z += exp(logits[n * 7 + j] - mx);
        s += log(z) + mx - logits[n * 7 + tgt[n]];
    }
    return s / (B * S);
}

static void test_fd_transformer(void **state)
{
    const int B = 2, S = 5;
    const double h = 1e-5;
    ebt_model *m = make_model(EBT_ARCH_TRANSFORMER, 0, 0);
    int32_t tok[10], tgt[10];
    size_t np = ebt_n_params(m);
    ebt_real loss, *grad = malloc(np * sizeof *grad);
    double *ref = malloc(np * sizeof *ref);
    int ok = 1;
    (void)state;
    printf("transformer++\n");
    for (int i = 0; i < B * S; i++) { tok[i] = (int32_t)(test_unif() * 7); tgt[i] = (int32_t)(test_unif() * 7); }
    ebt_zero_grad(m);
    assert_int_equal(ebt_lm_backward(m, tok, tgt, B, S, &loss), EBT_OK);
    assert_true(fabs(loss - lm_loss(m, tok, tgt, B, S)) < 1e-12);
    memcpy(grad, m->grads, np * sizeof *grad);
    for (size_t i = 0; i < np; i++) {
        ebt_real s = m->params[i];
        m->params[i] = s + h; double lp = lm_loss(m, tok, tgt, B, S);
        m->params[i] = s - h; double lm = lm_loss(m, tok, tgt, B, S);
        m->params[i] = s;
        ref[i] = (lp - lm) / (2 * h);
    }
    for (int t = 0; t < m->nt; t++) {
        char what[96];
        snprintf(what, sizeof what, "dloss/d %s", m->t[t].name);
        ok &= check_close(what, grad + m->t[t].off, ref + m->t[t].off, m->t[t].count, TOL);
    }
    free(grad); free(ref);
    ebt_free(m);
    assert_true(ok);
}


/* ---- training gradients (docs/model.md section 6.2) against finite differences
 * full: the true loss through the whole chain. detach: the surrogate with
 * every p_k frozen at its unperturbed value. truncate: the surrogate with
 * g_0..g_{K-2} frozen (the chain through softmax stays live). */
enum { TB = 2, TS = 4, TV = 7, TK = 3 };

static double ce_mean(const ebt_real *y, const int32_t *tgt, int N, int V)
{
    double s = 0;
    for (int n = 0; n < N; n++) {
        double mx = -1e300, z = 0;
        for (int j = 0; j < V; j++) mx = fmax(mx, y[n * V + j]);
        for (int j = 0; j < V; j++) z += exp(y[n * V + j] - mx);
        s += log(z) + mx - y[n * V + tgt[n]];
    }
    return s / N;
}

static void softmax_into(ebt_real *p, const ebt_real *y, int N, int V)
{
    for (int n = 0; n < N; n++) {
        double mx = -1e300, z = 0;
        for (int j = 0; j < V; j++) mx = fmax(mx, y[n * V + j]);
        for (int j = 0; j < V; j++) z += exp(y[n * V + j] - mx);
        for (int j = 0; j < V; j++) p[n * V + j] = exp(y[n * V + j] - mx) / z;
    }
}

/* the loss of mode md; record (if not NULL) stores p_k and g_k of this run,
 * frozen (if not NULL) supplies them as the surrogate needs */
static double chain_loss(ebt_model *m, int md, const int32_t *tok, const int32_t *tgt, const ebt_real *y0,
                         const ebt_real *u, ebt_real *record_p, ebt_real *record_g, const ebt_real *fp, const ebt_real *fg)
{
    enum { N = TB * TS, NV = TB * TS * TV };
    ebt_real y[NV], p[NV], g[NV];
    double alpha = fmax(m->w.alpha[0], 1e-4), loss = 0;
    memcpy(y, y0, sizeof y);
    for (int k = 0; k < TK; k++) {
        if (md == EBT_MODE_DETACH && fp) memcpy(p, fp + k * NV, sizeof p);
        else softmax_into(p, y, N, TV);
        if (md == EBT_MODE_TRUNCATE && fg && k < TK - 1) memcpy(g, fg + k * NV, sizeof g);
        else assert_int_equal(ebt_energy(m, tok, p, TB, TS, k, NULL, g), EBT_OK);
        if (record_p) { memcpy(record_p + k * NV, p, sizeof p); memcpy(record_g + k * NV, g, sizeof g); }
        for (int n = 0; n < N; n++)
            for (int j = 0; j < TV; j++) y[n * TV + j] = p[n * TV + j] - alpha * u[n] * g[n * TV + j];
        if (md != EBT_MODE_TRUNCATE) loss += ce_mean(y, tgt, N, TV) / TK;
    }
    if (md == EBT_MODE_TRUNCATE) loss = ce_mean(y, tgt, N, TV);
    return loss;
}

static void check_train_fd(int step_embed, int tied)
{
    static const char *names[] = { "detach", "truncate", "full" };
    enum { N = TB * TS, NV = TB * TS * TV };
    const double h = 1e-5;
    ebt_model *m = make_model(EBT_ARCH_EBT, step_embed, tied);
    int32_t tok[N], tgt[N];
    ebt_real y0[NV], u[N], fp[TK * NV], fg[TK * NV];
    size_t np = ebt_n_params(m);
    double *ref = malloc(np * sizeof *ref);
    int ok = 1;
    m->w.alpha[0] = 0.7;
    for (int i = 0; i < N; i++) { tok[i] = (int32_t)(test_unif() * TV); tgt[i] = (int32_t)(test_unif() * TV); u[i] = 0.5 + test_unif(); }
    for (int i = 0; i < NV; i++) y0[i] = test_normal();
    for (int md = 0; md < 3; md++) {
        ebt_train_opts o = ebt_train_default();
        ebt_train_stats st;
        o.mode = (ebt_mode)md;
        o.k_min = o.k_max = TK;
        printf("training, mode %s: step_embed=%d tied=%d\n", names[md], step_embed, tied);
        double l0 = chain_loss(m, md, tok, tgt, y0, u, fp, fg, NULL, NULL);
        assert_int_equal(ebt_train_grad(m, &o, tok, tgt, TB, TS, y0, u, &st), EBT_OK);
        assert_true(fabs(st.loss - l0) <= 1e-12 * (1 + fabs(l0)));
        for (size_t i = 0; i < np; i++) {   /* 4-point central stencil: the chained loss is strongly curved */
            ebt_real s = m->params[i];
            double f[4], off[4] = { -2, -1, 1, 2 };
            for (int q = 0; q < 4; q++) {
                m->params[i] = s + off[q] * h;
                f[q] = chain_loss(m, md, tok, tgt, y0, u, NULL, NULL, fp, fg);
            }
            m->params[i] = s;
            ref[i] = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h);
        }
        for (int t = 0; t < m->nt; t++) {
            char what[96];
            snprintf(what, sizeof what, "%s d loss/d %s", names[md], m->t[t].name);
            ok &= check_close(what, m->grads + m->t[t].off, ref + m->t[t].off, m->t[t].count, TOL);
        }
    }
    free(ref);
    ebt_free(m);
    assert_true(ok);
}

static void test_fd_train_step_tied(void **state) { (void)state; check_train_fd(3, 1); }
static void test_fd_train_plain(void **state) { (void)state; check_train_fd(0, 0); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_ebt_step_tied),
        cmocka_unit_test(test_fd_ebt_plain),
        cmocka_unit_test(test_fd_transformer),
        cmocka_unit_test(test_fd_train_step_tied),
        cmocka_unit_test(test_fd_train_plain),
    };
    return cmocka_run_group_tests_name("finite differences (double)", tests, NULL, NULL);
}
