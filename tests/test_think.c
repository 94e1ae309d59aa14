/* Thinking (docs/model.md section 5) and generation: stopping on the energy threshold and
 * the convergence tolerance, self-verification picks the lowest-energy
 * start, stopped positions are not recomputed, a blow-up stops cleanly,
 * last-position thinking equals the same row of full thinking, and
 * KV-cached generation equals uncached generation. */
#include "../ebt.h"
#include "test_util.h"

enum { B = 2, S = 6, V = 13, K = 6 };

static ebt_model *make(ebt_arch arch, int step_embed)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.arch = arch; c.vocab_size = V; c.d_model = 16; c.n_heads = 2; c.d_ff = 24; c.n_layers = 2; c.max_seq_len = 12;
    c.n_step_embed = step_embed; c.alpha = 0.5;
    assert_int_equal(ebt_create(&c, 21, &m), EBT_OK);
    return m;
}

typedef struct {
    ebt_real probs[B * S * V], energy[B * S * (K + 1)], fin[B * S];
    int steps[B * S], win[B * S];
    ebt_think_result r;
} run;

static void think(ebt_workspace *ws, ebt_model *m, const int32_t *tok, const ebt_think_opts *o, run *out)
{
    memset(&out->r, 0, sizeof out->r);
    out->r.probs = out->probs; out->r.energy = out->energy; out->r.final_energy = out->fin;
    out->r.steps_taken = out->steps; out->r.winner = out->win;
    assert_int_equal(ebt_think(ws, m, tok, B, S, o, &out->r), EBT_OK);
}

/* a workspace for m, random tokens and n_starts sets of initial logits */
static ebt_workspace *prepare(ebt_model *m, int32_t *tok, ebt_real *y0, int n_starts)
{
    ebt_workspace *ws = NULL;
    assert_int_equal(ebt_workspace_create(m, B, S, &ws), EBT_OK);
    for (int i = 0; i < B * S; i++) tok[i] = (int32_t)(test_unif() * V);
    for (int i = 0; i < n_starts * B * S * V; i++) y0[i] = (ebt_real)test_normal();
    return ws;
}

/* Energies of the stopped run are computed in compacted (differently
 * shaped) matrix products, which no BLAS promises to round like the full
 * run's. Thinking amplifies rounding: the double build (test_think_double)
 * measures last-only against full thinking after 6 steps at 1.3e-13 in p,
 * about 1000 ulps, and checks everything at THINK_TOL = 1e-10; float32
 * (ulp 6e-8) then needs 1e-3 (OpenBLAS's Haswell kernels: 3.3e-4; its
 * SkylakeX kernels: identical bits). Thresholds are put in the middle of a
 * wide gap between the full run's values, so that no stop decision is
 * within rounding of its threshold. */
#ifdef EBT_DOUBLE
#define THINK_TOL 1e-10
#else
#define THINK_TOL 1e-3
#endif
static int close_rel(double a, double b) { return fabs(a - b) <= THINK_TOL * (1 + fabs(b)); }

/* The middle of the widest gap between consecutive sorted values of x[n]
 * that has at least lo values below it and at least n - hi above it;
 * *half gets the gap's half-width. */
static double widest_gap(double *x, int n, int lo, int hi, double *half)
{
    double best = 0, mid = 0;
    for (int i = 1; i < n; i++) for (int j = i; j > 0 && x[j] < x[j - 1]; j--) { double t = x[j]; x[j] = x[j - 1]; x[j - 1] = t; }
    for (int i = lo; i < hi && i < n; i++)
        if (x[i] - x[i - 1] > best) { best = x[i] - x[i - 1]; mid = 0.5 * (x[i] + x[i - 1]); }
    *half = 0.5 * best;
    return mid;
}

static void check_stopping(int step_embed)
{
    enum { NE = B * S * (K + 1) };
    ebt_model *m = make(EBT_ARCH_EBT, step_embed);
    ebt_workspace *ws;
    int32_t tok[B * S];
    static ebt_real y0[B * S * V];
    static run full, thr, tol;
    double vals[NE], half;
    ebt_think_opts o = ebt_think_default();
    ws = prepare(m, tok, y0, 1);
    o.steps = K; o.init_logits = y0;
    think(ws, m, tok, &o, &full);
    assert_true(full.r.rows_evaluated == (long long)B * S * (K + 1));
    assert_true(full.r.rows_budget == full.r.rows_evaluated);
    for (int r = 0; r < B * S; r++) assert_int_equal(full.steps[r], K);
    /* energy threshold in a wide gap of all energies (a quarter to three quarters of them below) */
    for (int i = 0; i < NE; i++) vals[i] = full.energy[i];
    o.energy_threshold = widest_gap(vals, NE, NE / 4, 3 * NE / 4, &half);
    assert_true(half > 10 * THINK_TOL * (1 + fabs(o.energy_threshold)));
    think(ws, m, tok, &o, &thr);
    long long evals = 0;
    int stopped_early = 0;
    for (int r = 0; r < B * S; r++) {
        int k = 0;
        while (k < K && !(full.energy[r * (K + 1) + k] <= o.energy_threshold)) k++;
        assert_int_equal(thr.steps[r], k);
        assert_true(close_rel(thr.fin[r], full.energy[r * (K + 1) + k]));
        for (int j = k; j <= K; j++) assert_true(thr.energy[r * (K + 1) + j] == thr.fin[r]);   /* stays */
        evals += k + 1;
        stopped_early += k < K;
    }
    assert_true(stopped_early > 0);
    assert_true(thr.r.rows_evaluated == evals);          /* stopped rows cost nothing more */
    assert_true(thr.r.rows_evaluated < thr.r.rows_budget);
    printf("  threshold %.6g (gap +-%.2g): %lld of %lld row evaluations (%.0f%% saved)\n", o.energy_threshold, half,
           thr.r.rows_evaluated, thr.r.rows_budget, 100.0 * (1 - (double)thr.r.rows_evaluated / thr.r.rows_budget));
    /* convergence tolerance in a wide gap of all |E_k - E_{k-1}| */
    o.energy_threshold = -INFINITY;
    for (int r = 0, i = 0; r < B * S; r++)
        for (int k = 1; k <= K; k++, i++) vals[i] = fabs((double)full.energy[r * (K + 1) + k] - full.energy[r * (K + 1) + k - 1]);
    o.tol = widest_gap(vals, B * S * K, B * S * K / 4, 3 * B * S * K / 4, &half);
    assert_true(half > 10 * THINK_TOL * (1 + fabs(full.energy[0])));
    think(ws, m, tok, &o, &tol);
    stopped_early = 0;
    for (int r = 0; r < B * S; r++) {
        int k = 1;
        while (k < K && !(fabs((double)full.energy[r * (K + 1) + k] - full.energy[r * (K + 1) + k - 1]) <= o.tol)) k++;
        assert_int_equal(tol.steps[r], k);
        assert_true(close_rel(tol.fin[r], full.energy[r * (K + 1) + k]));
        stopped_early += k < K;
    }
    assert_true(stopped_early > 0);
    printf("  tolerance %.4g (gap +-%.2g): %d of %d positions stopped early\n", o.tol, half, stopped_early, B * S);
    ebt_workspace_free(ws);
    ebt_free(m);
}

static void test_stop_plain(void **s) { (void)s; check_stopping(0); }
static void test_stop_step_embed(void **s) { (void)s; check_stopping(3); }

/* with 4 starts, every position keeps the start whose final energy is lowest */
static void test_self_verification(void **state)
{
    ebt_model *m = make(EBT_ARCH_EBT, 0);
    ebt_workspace *ws;
    int32_t tok[B * S];
    static ebt_real y0[4 * B * S * V];
    static run all, one[4];
    ebt_think_opts o = ebt_think_default();
    int nonzero = 0;
    (void)state;
    ws = prepare(m, tok, y0, 4);
    o.steps = 3; o.restarts = 4; o.init_logits = y0;
    think(ws, m, tok, &o, &all);
    o.restarts = 1;
    for (int s = 0; s < 4; s++) { o.init_logits = y0 + (size_t)s * B * S * V; think(ws, m, tok, &o, &one[s]); }
    for (int r = 0; r < B * S; r++) {
        int best = 0;
        for (int s = 1; s < 4; s++) if (one[s].fin[r] < one[best].fin[r]) best = s;
        assert_int_equal(all.win[r], best);
        assert_true(all.fin[r] == one[best].fin[r]);
        assert_memory_equal(&all.probs[r * V], &one[best].probs[r * V], sizeof(ebt_real) * V);
        nonzero += best != 0;
    }
    assert_true(nonzero > 0);   /* the choice mattered */
    assert_true(all.r.rows_evaluated == 4LL * B * S * 4);
    ebt_workspace_free(ws);
    ebt_free(m);
}

/* thinking at the last position only equals that row of thinking everywhere */
static void test_last_only(void **state)
{
    ebt_model *m = make(EBT_ARCH_EBT, 0);
    ebt_workspace *ws;
    int32_t tok[B * S];
    static ebt_real y0[B * S * V], ylast[B * V];
    static run full;
    ebt_real probs[B * V], en[B * (K + 1)];
    ebt_think_result r;
    ebt_think_opts o = ebt_think_default();
    (void)state;
    ws = prepare(m, tok, y0, 1);
    for (int b = 0; b < B; b++) memcpy(ylast + b * V, y0 + ((size_t)b * S + S - 1) * V, sizeof(ebt_real) * V);
    o.steps = K; o.init_logits = y0;
    think(ws, m, tok, &o, &full);
    memset(&r, 0, sizeof r);
    r.probs = probs; r.energy = en;
    o.last_only = 1; o.init_logits = ylast;
    assert_int_equal(ebt_think(ws, m, tok, B, S, &o, &r), EBT_OK);
    assert_true(r.rows_evaluated == (long long)B * (K + 1));
    double dp = 0, de = 0;
    for (int b = 0; b < B; b++) {
        int row = b * S + S - 1;
        for (int j = 0; j < V; j++) dp = fmax(dp, fabs(probs[b * V + j] - full.probs[row * V + j]));
        for (int k = 0; k <= K; k++) {
            de = fmax(de, fabs(en[b * (K + 1) + k] - full.energy[row * (K + 1) + k]) / (1 + fabs(full.energy[row * (K + 1) + k])));
        }
    }
    printf("  last-only vs full after %d steps: max |dp| %.2e, max rel |dE| %.2e (tol %.0e)\n", K, dp, de, THINK_TOL);
    assert_true(dp <= THINK_TOL && de <= THINK_TOL);
    ebt_workspace_free(ws);
    ebt_free(m);
}

/* a step size that blows the energy up stops cleanly and is reported */
static void test_blow_up(void **state)
{
    ebt_model *m = make(EBT_ARCH_EBT, 0);
    ebt_workspace *ws;
    int32_t tok[B * S];
    static ebt_real y0[B * S * V];
    static run r;
    ebt_think_opts o = ebt_think_default();
    (void)state;
    ws = prepare(m, tok, y0, 1);
    o.steps = 3; o.init_logits = y0; o.step_size = sizeof(ebt_real) == sizeof(float) ? 1e38 : 1e308;
    think(ws, m, tok, &o, &r);
    assert_true(r.r.diverged > 0);
    for (int i = 0; i < B * S * V; i++) assert_true(isfinite(r.probs[i]));
    for (int i = 0; i < B * S; i++) assert_true(isfinite(r.fin[i]));
    printf("  step size %g: %d of %d positions diverged and stopped at their last finite state\n", o.step_size, r.r.diverged, B * S);
    ebt_workspace_free(ws);
    ebt_free(m);
}

/* Generation with the KV cache equals re-running the whole prefix: the
 * distributions agree within 1e-5 (the cached rows are computed by other
 * products; measured up to 3.9e-6) and so do the tokens. The tokens are argmax
 * choices (temperature 0) whose top-two gap is asserted to exceed 100x
 * the 1e-5 bound at every step, so that no choice depends on rounding
 * (sampling at a temperature could flip a token where the cumulative
 * weights meet the uniform draw within rounding). */
static void check_cache(ebt_arch arch)
{
    enum { NP = 5, NN = 14 };   /* 5 + 14 > max_S 12: the window slides too */
    ebt_model *m = make(arch, 0);
    ebt_workspace *ws;
    int32_t prompt[NP] = { 1, 5, 7, 2, 11 }, a[NN], b[NN];
    static ebt_real pa[NN * V], pb[NN * V];
    ebt_real ea[NN], eb[NN];
    double maxd = 0, gap = INFINITY;
    ebt_gen_opts o = ebt_gen_default();
    assert_int_equal(ebt_workspace_create(m, 1, 12, &ws), EBT_OK);
    o.temperature = 0; o.think.steps = 3;
    assert_int_equal(ebt_generate(ws, m, prompt, NP, NN, &o, a, ea, pa), EBT_OK);
    o.no_cache = 1;
    assert_int_equal(ebt_generate(ws, m, prompt, NP, NN, &o, b, eb, pb), EBT_OK);
    for (int i = 0; i < NN * V; i++) maxd = fmax(maxd, fabs(pa[i] - pb[i]));
    for (int t = 0; t < NN; t++) {
        double top = 0, second = 0;
        for (int j = 0; j < V; j++) {
            double q = pb[t * V + j];
            if (q > top) { second = top; top = q; } else if (q > second) second = q;
        }
        gap = fmin(gap, top - second);
    }
    printf("  %s: cached vs uncached max |dp| = %.2e, smallest top-two gap %.2e\n",
           arch == EBT_ARCH_EBT ? "ebt" : "transformer++", maxd, gap);
    assert_true(maxd <= 1e-5);
    assert_true(gap > 100 * 1e-5);
    assert_memory_equal(a, b, sizeof a);
    for (int i = 0; i < NN; i++) assert_true(arch != EBT_ARCH_EBT || fabs(ea[i] - eb[i]) <= 1e-4 * (1 + fabs(eb[i])));
    ebt_workspace_free(ws);
    ebt_free(m);
}

static void test_cache_ebt(void **s) { (void)s; check_cache(EBT_ARCH_EBT); }
static void test_cache_transformer(void **s) { (void)s; check_cache(EBT_ARCH_TRANSFORMER); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_plain),
        cmocka_unit_test(test_stop_step_embed),
        cmocka_unit_test(test_self_verification),
        cmocka_unit_test(test_last_only),
        cmocka_unit_test(test_blow_up),
        cmocka_unit_test(test_cache_ebt),
        cmocka_unit_test(test_cache_transformer),
    };
    return cmocka_run_group_tests_name("thinking and generation", tests, NULL, NULL);
}
