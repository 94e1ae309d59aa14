/* The thinking options of issue 12, by behaviour on a small model:
 * relative-drop and gradient-norm stopping at exactly the step an
 * unstopped run predicts, a row budget spent on the highest-energy
 * positions, the clamped update, keep_best answering with the lowest
 * energy seen, and the curvature v.Hv/v.v against ebt_ws_hvp. Values
 * computed through differently shaped products are compared within
 * THINK_TOL (see test_think.c); decisions only where they are not within
 * rounding of a threshold (thresholds sit in wide gaps). */
#include "../ebt.h"
#include "test_util.h"

enum { B = 2, S = 6, V = 13, K = 5, NP = B * S };

#ifdef EBT_DOUBLE
#define THINK_TOL 1e-10
#else
#define THINK_TOL 1e-3
#endif

static ebt_model *make(int step_embed)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.vocab_size = V; c.d_model = 16; c.n_heads = 2; c.d_ff = 24; c.n_layers = 2; c.max_seq_len = 12;
    c.n_step_embed = step_embed; c.alpha = 0.5;
    assert_int_equal(ebt_create(&c, 21, &m), EBT_OK);
    return m;
}

typedef struct {
    ebt_real probs[NP * V], logits[NP * V], energy[NP * (K + 1)], fin[NP], curv[NP];
    int steps[NP], win[NP];
    ebt_think_result r;
} run;

static void think(ebt_workspace *ws, ebt_model *m, const int32_t *tok, const ebt_think_opts *o, run *out, int curv)
{
    memset(&out->r, 0, sizeof out->r);
    out->r.probs = out->probs; out->r.logits = out->logits; out->r.energy = out->energy;
    out->r.final_energy = out->fin; out->r.steps_taken = out->steps; out->r.winner = out->win;
    out->r.curvature = curv ? out->curv : NULL;
    assert_int_equal(ebt_think(ws, m, tok, B, S, o, &out->r), EBT_OK);
}

static int close_rel(double a, double b) { return fabs(a - b) <= THINK_TOL * (1 + fabs(b)); }

/* the middle of the widest gap of sorted x[n] with >= lo values below and >= n - hi above */
static double widest_gap(double *x, int n, int lo, int hi, double *half)
{
    double best = 0, mid = 0;
    for (int i = 1; i < n; i++) for (int j = i; j > 0 && x[j] < x[j - 1]; j--) { double t = x[j]; x[j] = x[j - 1]; x[j - 1] = t; }
    for (int i = lo; i < hi && i < n; i++)
        if (x[i] - x[i - 1] > best) { best = x[i] - x[i - 1]; mid = 0.5 * (x[i] + x[i - 1]); }
    *half = 0.5 * best;
    return mid;
}

typedef struct { ebt_model *m; ebt_workspace *ws; int32_t tok[NP]; ebt_real y0[NP * V]; ebt_think_opts o; run full; } fixture;

static void setup(fixture *f, int step_embed)
{
    f->m = make(step_embed);
    assert_int_equal(ebt_workspace_create(f->m, B, S, &f->ws), EBT_OK);
    for (int i = 0; i < NP; i++) f->tok[i] = (int32_t)(test_unif() * V);
    for (int i = 0; i < NP * V; i++) f->y0[i] = (ebt_real)test_normal();
    f->o = ebt_think_default();
    f->o.steps = K; f->o.init_logits = f->y0;
    think(f->ws, f->m, f->tok, &f->o, &f->full, 0);
}
static void teardown(fixture *f) { ebt_workspace_free(f->ws); ebt_free(f->m); }

/* rel_drop: stop at the first k >= 1 with E_{k-1} - E_k <= rel_drop |E_{k-1}| */
static void check_rel_drop(int step_embed)
{
    static fixture f;
    static run rd;
    double x[NP * K], half;
    int n = 0, early = 0;
    setup(&f, step_embed);
    for (int r = 0; r < NP; r++)
        for (int k = 1; k <= K; k++) {
            const ebt_real *h = f.full.energy + r * (K + 1);
            x[n++] = (h[k - 1] - h[k]) / fabs(h[k - 1]);
        }
    f.o.rel_drop = widest_gap(x, n, n / 4, 3 * n / 4, &half);
    assert_true(half > 10 * THINK_TOL);
    think(f.ws, f.m, f.tok, &f.o, &rd, 0);
    for (int r = 0; r < NP; r++) {
        const ebt_real *h = f.full.energy + r * (K + 1);
        int k = 1;
        while (k < K && !(h[k - 1] - h[k] <= f.o.rel_drop * fabs(h[k - 1]))) k++;
        assert_int_equal(rd.steps[r], k);
        assert_true(close_rel(rd.fin[r], h[k]));
        early += k < K;
    }
    assert_true(early > 0);
    printf("  rel_drop %.4g (gap +-%.2g): %d of %d positions stopped early, %lld of %lld rows\n", f.o.rel_drop, half,
           early, NP, rd.r.rows_evaluated, rd.r.rows_budget);
    teardown(&f);
}
static void test_rel_drop(void **s) { (void)s; check_rel_drop(0); }
static void test_rel_drop_step_embed(void **s) { (void)s; check_rel_drop(3); }

/* the RMS of dE/dp at the state reached after k updates, per position */
static void grad_rms(fixture *f, int k, double *rms)
{
    static run part;
    static ebt_real g[NP * V];
    ebt_think_opts o = f->o;
    o.steps = k;
    think(f->ws, f->m, f->tok, &o, &part, 0);
    assert_int_equal(ebt_observe(f->ws, f->m, f->tok, B, S, k), EBT_OK);
    assert_int_equal(ebt_ws_energy(f->ws, part.probs, NULL, g), EBT_OK);
    for (int r = 0; r < NP; r++) {
        double ss = 0;
        for (int j = 0; j < V; j++) ss += (double)g[r * V + j] * g[r * V + j];
        rms[r] = sqrt(ss / V);
    }
}

/* grad_tol: stop at the first k < K whose gradient RMS is <= grad_tol */
static void test_grad_tol(void **state)
{
    static fixture f;
    static run gt;
    double rms[K][NP], x[K * NP], half;
    int early = 0;
    (void)state;
    setup(&f, 0);
    for (int k = 0; k < K; k++) {
        grad_rms(&f, k, rms[k]);
        for (int r = 0; r < NP; r++) x[k * NP + r] = rms[k][r];
    }
    f.o.grad_tol = widest_gap(x, K * NP, K * NP / 4, 3 * K * NP / 4, &half);
    assert_true(half > 10 * THINK_TOL * f.o.grad_tol);
    think(f.ws, f.m, f.tok, &f.o, &gt, 0);
    for (int r = 0; r < NP; r++) {
        int k = 0;
        while (k < K && !(rms[k][r] <= f.o.grad_tol)) k++;
        assert_int_equal(gt.steps[r], k);
        assert_true(close_rel(gt.fin[r], f.full.energy[r * (K + 1) + k]));
        early += k < K;
    }
    assert_true(early > 0);
    printf("  grad_tol %.4g (gap +-%.2g): %d of %d positions stopped early\n", f.o.grad_tol, half, early, NP);
    teardown(&f);
}

/* row_budget: NP + m evaluations let exactly the m highest-energy positions make one step */
static void test_row_budget(void **state)
{
    static fixture f;
    static run rb;
    double e0[NP], cut, half;
    int m = 0, moved = 0;
    (void)state;
    setup(&f, 0);
    for (int r = 0; r < NP; r++) e0[r] = f.full.energy[r * (K + 1)];
    cut = widest_gap(e0, NP, 2, NP - 1, &half);   /* m = the positions above the widest gap of E_0 */
    assert_true(half > 10 * THINK_TOL * (1 + fabs(cut)));
    for (int r = 0; r < NP; r++) m += e0[r] > cut;
    f.o.row_budget = NP + m;
    think(f.ws, f.m, f.tok, &f.o, &rb, 0);
    assert_true(rb.r.rows_evaluated == NP + m);
    for (int r = 0; r < NP; r++) {
        int hi = f.full.energy[r * (K + 1)] > cut;
        assert_int_equal(rb.steps[r], hi ? 1 : 0);
        moved += rb.steps[r];
        if (!hi) assert_true(close_rel(rb.fin[r], f.full.energy[r * (K + 1)]));
    }
    assert_int_equal(moved, m);
    f.o.row_budget = 1;   /* below NP: only step 0 */
    think(f.ws, f.m, f.tok, &f.o, &rb, 0);
    assert_true(rb.r.rows_evaluated == NP);
    teardown(&f);
}

/* clamp: one step is p - clamp(alpha dE/dp, +-c), from ebt_energy by hand */
static void test_clamp(void **state)
{
    static fixture f;
    static run cl;
    static ebt_real p0[NP * V], g[NP * V];
    double c = 0.05, a;
    int clamped = 0;
    (void)state;
    setup(&f, 0);
    a = 0.5;   /* the model's alpha */
    for (int r = 0; r < NP; r++) {
        double mx = -1e300, sum = 0;
        for (int j = 0; j < V; j++) mx = fmax(mx, f.y0[r * V + j]);
        for (int j = 0; j < V; j++) sum += exp(f.y0[r * V + j] - mx);
        for (int j = 0; j < V; j++) p0[r * V + j] = (ebt_real)(exp(f.y0[r * V + j] - mx) / sum);
    }
    assert_int_equal(ebt_energy(f.m, f.tok, p0, B, S, 0, NULL, g), EBT_OK);
    f.o.steps = 1; f.o.clamp = c;
    think(f.ws, f.m, f.tok, &f.o, &cl, 0);
    for (int i = 0; i < NP * V; i++) {
        double d = a * g[i], want = p0[i] - (d > c ? c : d < -c ? -c : d);
        clamped += fabs(d) > c;
        assert_true(fabs(cl.logits[i] - want) <= THINK_TOL * (1 + fabs(want)));
    }
    assert_true(clamped > 0 && clamped < NP * V);
    teardown(&f);
}

/* keep_best: the answer is the lowest-energy state of the history, as a run stopped there gives */
static void test_keep_best(void **state)
{
    static fixture f;
    static run kb, part;
    int not_last = 0;
    (void)state;
    setup(&f, 0);
    f.o.keep_best = 1;
    think(f.ws, f.m, f.tok, &f.o, &kb, 0);
    for (int r = 0; r < NP; r++) {
        const ebt_real *h = f.full.energy + r * (K + 1);
        int kmin = 0;
        for (int k = 1; k <= K; k++) kmin = h[k] < h[kmin] ? k : kmin;
        assert_int_equal(kb.steps[r], kmin);
        assert_true(close_rel(kb.fin[r], h[kmin]));
        not_last += kmin < K;
    }
    assert_true(not_last > 0);
    f.o.keep_best = 0; f.o.steps = kb.steps[0];   /* position 0's answer equals a run of that many steps */
    think(f.ws, f.m, f.tok, &f.o, &part, 0);
    for (int j = 0; j < V; j++) assert_true(fabs(part.probs[j] - kb.probs[j]) <= THINK_TOL);
    printf("  keep_best: %d of %d positions answer with an earlier state than the last\n", not_last, NP);
    teardown(&f);
}

/* curvature: v.Hv/v.v with v = p_K - p_{K-1}, against ebt_ws_hvp */
static void test_curvature(void **state)
{
    static fixture f;
    static run cv, prev;
    static ebt_real v[NP * V], hv[NP * V];
    double worst = 0;
    (void)state;
    setup(&f, 0);
    think(f.ws, f.m, f.tok, &f.o, &cv, 1);
    f.o.steps = K - 1;
    think(f.ws, f.m, f.tok, &f.o, &prev, 0);
    for (int i = 0; i < NP * V; i++) v[i] = cv.probs[i] - prev.probs[i];
    assert_int_equal(ebt_observe(f.ws, f.m, f.tok, B, S, 0), EBT_OK);
    assert_int_equal(ebt_ws_hvp(f.ws, cv.probs, v, hv, NULL, NULL), EBT_OK);
    for (int r = 0; r < NP; r++) {
        double vv = 0, vhv = 0;
        for (int j = 0; j < V; j++) { vv += (double)v[r * V + j] * v[r * V + j]; vhv += (double)v[r * V + j] * hv[r * V + j]; }
        assert_true(isfinite(cv.curv[r]) && vv > 0);
        worst = fmax(worst, fabs(cv.curv[r] - vhv / vv) / (1 + fabs(vhv / vv)));
    }
    printf("  curvature against ebt_ws_hvp: max rel diff %.2e (tol %.0e)\n", worst, THINK_TOL);
    assert_true(worst <= THINK_TOL);
    f.o.steps = 0;   /* never moved: NaN */
    think(f.ws, f.m, f.tok, &f.o, &cv, 1);
    for (int r = 0; r < NP; r++) assert_true(isnan(cv.curv[r]));
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rel_drop), cmocka_unit_test(test_rel_drop_step_embed), cmocka_unit_test(test_grad_tol),
        cmocka_unit_test(test_row_budget), cmocka_unit_test(test_clamp), cmocka_unit_test(test_keep_best),
        cmocka_unit_test(test_curvature),
    };
    return cmocka_run_group_tests_name("thinking rules", tests, NULL, NULL);
}
