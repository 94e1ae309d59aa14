/* The energy calls beyond E and dE/dp: ebt_observe + ebt_observe_append
 * equals observing the whole sequence at once (energy, dE/dp and H v,
 * through ebt_ws_energy / ebt_ws_hvp, and thinking); ebt_energy_backward
 * with weights is the weighted sum of per-position gradients;
 * ebt_mixed_backward's by-products equal ebt_hvp's H v and ebt_energy's
 * dE/dp; gradients accumulate across calls until ebt_zero_grad.
 *
 * Appended rows are computed by matrix products of other shapes than the
 * whole sequence's, and the sums of single-position gradients add in
 * another order than one weighted call: no BLAS promises the same
 * rounding, so these are compared within TOL relative to each tensor's
 * largest entry. Measured in float32 (oneDNN and CBLAS backends, OpenBLAS
 * Haswell, SkylakeX and Sandybridge kernels): appends up to 5.5e-7,
 * weighted sums 2.4e-7, two calls against twice one call 3.3e-7; TOL =
 * 1e-5. The double build (test_energy_double) checks the same at 1e-12
 * (measured at most 7e-16). The by-products of
 * ebt_mixed_backward measure identical bits, within TOL all the same. Calls
 * that make the same computations (one call after ebt_zero_grad against
 * the first; weight NULL against all ones) are compared bit for bit. */
#include "../ebt.h"
#include "test_util.h"

enum { T = 10, B = 2, S = 5, V = 17, N = B * S };
#ifdef EBT_DOUBLE
#define TOL 1e-12
#else
#define TOL 1e-5
#endif

static ebt_model *make(void)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.vocab_size = V; c.d_model = 16; c.n_heads = 2; c.d_ff = 24; c.n_layers = 2; c.max_seq_len = 12; c.alpha = 0.5;
    assert_int_equal(ebt_create(&c, 41, &m), EBT_OK);
    return m;
}

/* check_close against an ebt_real reference */
static int close_to(const char *what, const ebt_real *got, const ebt_real *ref, size_t n, double tol)
{
    static double r[T * V * 64];
    assert_true(n <= sizeof r / sizeof r[0]);
    for (size_t i = 0; i < n; i++) r[i] = ref[i];
    return check_close(what, got, r, n, tol);
}

/* energy, dE/dp and H v of probs/v over the workspace's observation */
typedef struct { ebt_real E[T], g[T * V], hv[T * V]; } evals;
static void evaluate(ebt_workspace *ws, const ebt_real *p, const ebt_real *v, evals *e)
{
    ebt_real E2[T];
    assert_int_equal(ebt_ws_energy(ws, p, e->E, e->g), EBT_OK);
    assert_int_equal(ebt_ws_hvp(ws, p, v, e->hv, E2, NULL), EBT_OK);
    assert_memory_equal(E2, e->E, sizeof E2);   /* the by-product of the same forward pass */
}

/* observe 4 tokens, append 3, 2 and 1: as observing all 10 */
static void test_append(void **state)
{
    static const int parts[] = { 4, 3, 2, 1 };
    ebt_model *m = make();
    ebt_workspace *whole, *grown;
    int32_t tok[T];
    static ebt_real p[T * V], v[T * V];
    static evals a, b;
    int ok = 1;
    (void)state;
    test_rng_state = 201;
    for (int i = 0; i < T; i++) tok[i] = (int32_t)(test_unif() * V);
    test_random_probs(p, T, V, 1.5);
    for (int i = 0; i < T * V; i++) v[i] = (ebt_real)test_normal();
    assert_int_equal(ebt_workspace_create(m, 1, T, &whole), EBT_OK);
    assert_int_equal(ebt_workspace_create(m, 1, T, &grown), EBT_OK);
    assert_int_equal(ebt_observe(whole, m, tok, 1, T, 0), EBT_OK);
    evaluate(whole, p, v, &a);
    assert_int_equal(ebt_observe(grown, m, tok, 1, parts[0], 0), EBT_OK);
    for (int i = 1, at = parts[0]; i < 4; at += parts[i++])
        assert_int_equal(ebt_observe_append(grown, tok + at, parts[i]), EBT_OK);
    evaluate(grown, p, v, &b);
    ok &= close_to("appended: energy", b.E, a.E, T, TOL);
    ok &= close_to("appended: dE/dp", b.g, a.g, T * V, TOL);
    ok &= close_to("appended: H v", b.hv, a.hv, T * V, TOL);
    assert_true(ok);
    ebt_workspace_free(whole);
    ebt_workspace_free(grown);
    ebt_free(m);
}

/* every gradient of m, in tensor order (n entries into out, or just counted) */
static size_t grads(ebt_model *m, ebt_real *out)
{
    size_t total = 0, n;
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        const ebt_real *g = ebt_grad(m, ebt_tensor_name(m, t), &n);
        if (out) memcpy(out + total, g, n * sizeof *g);
        total += n;
    }
    return total;
}

/* every tensor's gradient of got against ref, relative to that tensor's largest entry */
static int grads_close(ebt_model *m, const char *what, const ebt_real *got, const ebt_real *ref, double tol)
{
    static double r[1 << 16];
    size_t off = 0, n;
    double worst = 0;
    int ok = 1;
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        double scale = 0, e = 0;
        ebt_grad(m, ebt_tensor_name(m, t), &n);
        for (size_t i = off; i < off + n; i++) { scale = fmax(scale, fabs(ref[i])); r[i - off] = ref[i]; }
        for (size_t i = off; i < off + n; i++) e = fmax(e, fabs((double)got[i] - ref[i]));
        if (!(e <= tol * (scale > 0 ? scale : 1))) ok &= check_close(ebt_tensor_name(m, t), got + off, r, n, tol);
        worst = fmax(worst, e / (scale > 0 ? scale : 1));
        off += n;
    }
    printf("  %-44s every tensor within %.1e of its scale (tol %.0e)\n", what, worst, tol);
    return ok && worst <= tol;
}

typedef struct { int32_t tok[N]; ebt_real p[N * V], v[N * V], w[N]; } inputs;
static void make_inputs(inputs *in)
{
    for (int i = 0; i < N; i++) { in->tok[i] = (int32_t)(test_unif() * V); in->w[i] = (ebt_real)(2 * test_unif() - 0.5); }
    in->w[3] = 0;
    test_random_probs(in->p, N, V, 1.5);
    for (int i = 0; i < N * V; i++) in->v[i] = (ebt_real)test_normal();
}

/* weights: one call with w = the sum of N calls with w_i at position i only */
static void test_backward_weights(void **state)
{
    ebt_model *m = make();
    static inputs in;
    ebt_real E[N], E2[N], one[N], wi[N];
    ebt_real *gw, *gsum, *g1;
    size_t np;
    (void)state;
    test_rng_state = 202;
    make_inputs(&in);
    np = grads(m, NULL);
    gw = malloc(np * sizeof *gw); gsum = malloc(np * sizeof *gw); g1 = malloc(np * sizeof *gw);
    ebt_zero_grad(m);
    assert_int_equal(ebt_energy_backward(m, in.tok, in.p, B, S, 0, in.w, E), EBT_OK);
    grads(m, gw);
    assert_int_equal(ebt_energy(m, in.tok, in.p, B, S, 0, E2, NULL), EBT_OK);
    assert_memory_equal(E, E2, sizeof E);
    ebt_zero_grad(m);
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < N; j++) wi[j] = i == j ? in.w[i] : 0;
        assert_int_equal(ebt_energy_backward(m, in.tok, in.p, B, S, 0, wi, NULL), EBT_OK);
    }
    grads(m, gsum);
    assert_true(grads_close(m, "weighted = sum of single positions", gw, gsum, TOL));
    /* no weight means all ones */
    for (int i = 0; i < N; i++) one[i] = 1;
    ebt_zero_grad(m);
    assert_int_equal(ebt_energy_backward(m, in.tok, in.p, B, S, 0, NULL, NULL), EBT_OK);
    grads(m, g1);
    ebt_zero_grad(m);
    assert_int_equal(ebt_energy_backward(m, in.tok, in.p, B, S, 0, one, NULL), EBT_OK);
    grads(m, gsum);
    assert_memory_equal(g1, gsum, np * sizeof *g1);
    free(gw); free(gsum); free(g1);
    ebt_free(m);
}

/* ebt_mixed_backward's H v and dE/dp are ebt_hvp's and ebt_energy's */
static void test_mixed_byproducts(void **state)
{
    ebt_model *m = make();
    static inputs in;
    static ebt_real hv[N * V], gp[N * V], hv2[N * V], gp2[N * V];
    int ok = 1;
    (void)state;
    test_rng_state = 203;
    make_inputs(&in);
    assert_int_equal(ebt_mixed_backward(m, in.tok, in.p, B, S, 1, in.v, hv, gp), EBT_OK);
    assert_int_equal(ebt_hvp(m, in.tok, in.p, B, S, 1, in.v, hv2), EBT_OK);
    assert_int_equal(ebt_energy(m, in.tok, in.p, B, S, 1, NULL, gp2), EBT_OK);
    ok &= close_to("mixed_backward H v = ebt_hvp", hv, hv2, N * V, TOL);
    ok &= close_to("mixed_backward dE/dp = ebt_energy", gp, gp2, N * V, TOL);
    assert_true(ok);
    ebt_free(m);
}

/* gradients accumulate: two calls give twice one call; ebt_zero_grad
 * clears them, and the next call gives the first call's bits */
typedef ebt_status (*grad_call)(ebt_model *, const inputs *);
static ebt_status call_energy(ebt_model *m, const inputs *in)
{
    return ebt_energy_backward(m, in->tok, in->p, B, S, 0, in->w, NULL);
}
static ebt_status call_mixed(ebt_model *m, const inputs *in)
{
    return ebt_mixed_backward(m, in->tok, in->p, B, S, 0, in->v, NULL, NULL);
}

static void check_accumulate(grad_call f, const char *what)
{
    ebt_model *m = make();
    static inputs in;
    ebt_real *g1, *g2;
    size_t np = grads(m, NULL), nonzero = 0;
    char label[96];
    make_inputs(&in);
    g1 = malloc(np * sizeof *g1); g2 = malloc(np * sizeof *g2);
    assert_int_equal(f(m, &in), EBT_OK);
    grads(m, g1);
    assert_int_equal(f(m, &in), EBT_OK);
    grads(m, g2);
    for (size_t i = 0; i < np; i++) { nonzero += g1[i] != 0; g1[i] *= 2; }
    assert_true(nonzero > np / 2);
    snprintf(label, sizeof label, "%s: two calls = twice one", what);
    assert_true(grads_close(m, label, g2, g1, TOL));
    ebt_zero_grad(m);
    grads(m, g2);
    for (size_t i = 0; i < np; i++) { assert_true(g2[i] == 0); g1[i] /= 2; }
    assert_int_equal(f(m, &in), EBT_OK);
    grads(m, g2);
    assert_memory_equal(g1, g2, np * sizeof *g1);
    free(g1); free(g2);
    ebt_free(m);
}

static void test_accumulate_energy(void **s) { (void)s; test_rng_state = 204; check_accumulate(call_energy, "energy_backward"); }
static void test_accumulate_mixed(void **s) { (void)s; test_rng_state = 205; check_accumulate(call_mixed, "mixed_backward"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append),
        cmocka_unit_test(test_backward_weights),
        cmocka_unit_test(test_mixed_byproducts),
        cmocka_unit_test(test_accumulate_energy),
        cmocka_unit_test(test_accumulate_mixed),
    };
    return cmocka_run_group_tests_name("energy calls: append, weights, by-products, accumulation", tests, NULL, NULL);
}
