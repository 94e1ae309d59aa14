/* Thinking options by behaviour (ebt.h, ebt_think_opts; docs/model.md section 5): the
 * energy threshold and the tolerance with several starts (each start stops
 * per position, the winner is the start with the lowest final energy),
 * Langevin noise (changes the answer, deterministic for a seed, not
 * applied at the last evaluation), alpha_rand (per-position step sizes in
 * [alpha/r, alpha r]), init_scale, step_size (overrides the model's
 * alpha), ebt_think_observed = ebt_think, and a thought whose energy
 * becomes non-finite (or whose step overflows) stops at its last finite
 * state.
 *
 * Two kinds of comparison: runs that make the same computations on the
 * same rows (a start run alone and inside a multi-start run; a run and the
 * shorter run it must agree with) are compared bit for bit; values from
 * other calls (ebt_ws_energy's gradient against a thinking step) are
 * compared within TOL, and stop decisions are only checked where the
 * threshold lies in a wide gap of the energies (as in test_think.c). */
#include "../ebt.h"
#include "test_util.h"

enum { B = 2, S = 6, V = 13, K = 6, R = 3, N = B * S };
#define TOL 1e-5   /* float: a thinking step recomputed from ebt_ws_energy's gradient */

static ebt_model *make(int step_embed, uint64_t seed)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.vocab_size = V; c.d_model = 16; c.n_heads = 2; c.d_ff = 24; c.n_layers = 2; c.max_seq_len = 12;
    c.n_step_embed = step_embed; c.alpha = 0.5;
    assert_int_equal(ebt_create(&c, seed, &m), EBT_OK);
    return m;
}

typedef struct {
    ebt_real probs[N * V], logits[N * V], energy[N * (K + 1)], fin[N];
    int steps[N], win[N];
    ebt_think_result r;
} run;

static void think(ebt_workspace *ws, ebt_model *m, const int32_t *tok, const ebt_think_opts *o, run *out)
{
    memset(out, 0, sizeof *out);
    out->r.probs = out->probs; out->r.logits = out->logits; out->r.energy = out->energy;
    out->r.final_energy = out->fin; out->r.steps_taken = out->steps; out->r.winner = out->win;
    assert_int_equal(ebt_think(ws, m, tok, B, S, o, &out->r), EBT_OK);
}

/* two runs gave the same bits in every output */
static int same_run(const run *a, const run *b, int K1)
{
    return !memcmp(a->probs, b->probs, sizeof a->probs) && !memcmp(a->logits, b->logits, sizeof a->logits) &&
           !memcmp(a->fin, b->fin, sizeof a->fin) && !memcmp(a->steps, b->steps, sizeof a->steps) &&
           !memcmp(a->energy, b->energy, sizeof(ebt_real) * N * (K1 + 1)) && !memcmp(a->win, b->win, sizeof a->win);
}

static ebt_workspace *prepare(ebt_model *m, int32_t *tok, ebt_real *y0, int n_starts)
{
    ebt_workspace *ws = NULL;
    assert_int_equal(ebt_workspace_create(m, B, S, &ws), EBT_OK);
    for (int i = 0; i < N; i++) tok[i] = (int32_t)(test_unif() * V);
    for (int i = 0; i < n_starts * N * V; i++) y0[i] = (ebt_real)test_normal();
    return ws;
}

/* the middle of the widest gap between sorted values x[lo-1] and x[hi-1]
 * (x is sorted); *half gets its half-width */
static double widest_gap(double *x, int n, int lo, int hi, double *half)
{
    double best = 0, mid = 0;
    for (int i = 1; i < n; i++) for (int j = i; j > 0 && x[j] < x[j - 1]; j--) { double t = x[j]; x[j] = x[j - 1]; x[j - 1] = t; }
    for (int i = lo; i < hi && i < n; i++)
        if (x[i] - x[i - 1] > best) { best = x[i] - x[i - 1]; mid = 0.5 * (x[i] + x[i - 1]); }
    *half = 0.5 * best;
    return mid;
}

/* the step at which a row of a full (never stopping) run, energies E[K+1],
 * stops under the threshold x (kind 0) or the tolerance x (kind 1) */
static int stop_step(const ebt_real *E, double x, int kind)
{
    int k = kind ? 1 : 0;
    while (k < K && !(kind ? fabs((double)E[k] - E[k - 1]) <= x : E[k] <= x)) k++;
    return k;
}

/* Stopping with R starts (kind 0: energy threshold, 1: tolerance): each
 * start stops per position where it stops alone (and where its full run's
 * energies say it must), and each position keeps the start whose final
 * energy is lowest, with that start's answer, energies and step count.
 * The stopped runs evaluate fewer (compacted) rows than the full runs:
 * their energies agree within THINK_TOL (test_think.c), so a full run only
 * predicts the stops of positions with no value within 10 THINK_TOL of the
 * threshold (tolerance) up to the stop; the rest are skipped there. */
#define THINK_TOL 1e-3
/* the middle of the widest gap in the middle half of every start's energies (kind 0) or changes (1) */
static double stop_value(run *full, int kind, double *half)
{
    static double vals[R * N * (K + 1)];
    int n = 0;
    for (int s = 0; s < R; s++)
        for (int i = 0; i < N * (K + 1); i++) {
            const ebt_real *E = full[s].energy;
            if (kind == 0) vals[n++] = E[i];
            else if (i % (K + 1)) vals[n++] = fabs((double)E[i] - E[i - 1]);
        }
    return widest_gap(vals, n, n / 4, 3 * n / 4, half);
}

/* some decision of a full run's row up to step `upto` is within rounding of x */
static int ambiguous(const ebt_real *E, int upto, double x, int kind)
{
    for (int k = kind; k <= upto; k++) {
        double v = kind ? fabs((double)E[k] - E[k - 1]) : E[k];
        if (fabs(v - x) <= 10 * THINK_TOL * (1 + fabs(E[k]))) return 1;
    }
    return 0;
}

/* each start alone: steps and final energies as its full run predicts
 * (where that is not within rounding); *checked counts those positions */
static int check_alone(run *full, run *one, double x, int kind, int *checked)
{
    int stopped = 0;
    *checked = 0;
    for (int s = 0; s < R; s++)
        for (int r = 0; r < N; r++) {
            const ebt_real *E = full[s].energy + r * (K + 1);
            int k = stop_step(E, x, kind);
            if (ambiguous(E, k, x, kind)) continue;
            assert_int_equal(one[s].steps[r], k);
            assert_true(fabs(one[s].fin[r] - E[k]) <= THINK_TOL * (1 + fabs(E[k])));
            stopped += k < K;
            ++*checked;
        }
    return stopped;
}

static void check_restarts(int kind)
{
    ebt_model *m = make(0, 21);
    int32_t tok[N];
    static ebt_real y0[R * N * V];
    static run full[R], one[R], all;
    ebt_think_opts o = ebt_think_default();
    ebt_workspace *ws = prepare(m, tok, y0, R);
    double half, x;
    long long evals = 0;
    int stopped, switched = 0, checked;
    o.steps = K;
    for (int s = 0; s < R; s++) { o.init_logits = y0 + (size_t)s * N * V; think(ws, m, tok, &o, &full[s]); }
    x = stop_value(full, kind, &half);
    if (kind == 0) o.energy_threshold = x; else o.tol = x;
    for (int s = 0; s < R; s++) {
        o.init_logits = y0 + (size_t)s * N * V;
        think(ws, m, tok, &o, &one[s]);
        evals += one[s].r.rows_evaluated;
    }
    stopped = check_alone(full, one, x, kind, &checked);
    o.restarts = R; o.init_logits = y0;
    think(ws, m, tok, &o, &all);
    for (int r = 0; r < N; r++) {
        int best = 0;
        for (int s = 1; s < R; s++) if (one[s].fin[r] < one[best].fin[r]) best = s;
        assert_int_equal(all.win[r], best);
        assert_int_equal(all.steps[r], one[best].steps[r]);
        assert_true(all.fin[r] == one[best].fin[r]);
        assert_memory_equal(all.energy + r * (K + 1), one[best].energy + r * (K + 1), sizeof(ebt_real) * (K + 1));
        assert_memory_equal(all.probs + r * V, one[best].probs + r * V, sizeof(ebt_real) * V);
        assert_memory_equal(all.logits + r * V, one[best].logits + r * V, sizeof(ebt_real) * V);
        switched += best != 0;
    }
    printf("  %s %.4g (gap +-%.2g), %d starts: %d of %d start-positions predicted (%d stopped early), %d positions won "
           "by a later start, %lld of %lld row evaluations\n", kind ? "tolerance" : "threshold", x, half, R, checked, R * N,
           stopped, switched, all.r.rows_evaluated, all.r.rows_budget);
    assert_true(checked >= R * N / 2 && stopped > 0 && stopped < checked && switched > 0);
    assert_true(all.r.rows_evaluated == evals && evals < all.r.rows_budget);
    assert_true(all.r.rows_budget == (long long)R * N * (K + 1));
    ebt_workspace_free(ws);
    ebt_free(m);
}

static void test_threshold_restarts(void **s) { (void)s; test_rng_state = 101; check_restarts(0); }
static void test_tol_restarts(void **s) { (void)s; test_rng_state = 102; check_restarts(1); }

static double max_diff(const ebt_real *a, const ebt_real *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* p0 = softmax(y0) as thinking computes it (the answer of 0 steps) and g0 = dE/dp there */
static void start_point(ebt_workspace *ws, ebt_model *m, const int32_t *tok, const ebt_real *y0, ebt_real *p0, ebt_real *g0)
{
    static run z;
    ebt_think_opts o = ebt_think_default();
    o.steps = 0; o.init_logits = y0;
    think(ws, m, tok, &o, &z);
    memcpy(p0, z.probs, sizeof z.probs);
    assert_int_equal(ebt_observe(ws, m, tok, B, S, 0), EBT_OK);
    assert_int_equal(ebt_ws_energy(ws, p0, NULL, g0), EBT_OK);
}

/* Langevin noise changes the answer, is deterministic for a seed, and is
 * not applied at the last evaluation */
static void test_noise(void **state)
{
    ebt_model *m = make(0, 22);
    int32_t tok[N];
    static ebt_real y0[N * V];
    static run a, b, c, d;
    ebt_real E[N];
    ebt_think_opts o = ebt_think_default();
    ebt_workspace *ws;
    (void)state;
    test_rng_state = 103;
    ws = prepare(m, tok, y0, 1);
    o.steps = 4; o.init_logits = y0; o.noise = 0.3; o.seed = 7;
    think(ws, m, tok, &o, &a);
    think(ws, m, tok, &o, &b);
    assert_true(same_run(&a, &b, 4));                            /* deterministic */
    o.seed = 8;
    think(ws, m, tok, &o, &c);
    assert_true(max_diff(a.probs, c.probs, N * V) > 1e-2);      /* another seed, other noise */
    o.noise = 0;
    think(ws, m, tok, &o, &d);
    printf("  noise 0.3: answer moves by %.2g (other seed: %.2g)\n", max_diff(a.probs, d.probs, N * V),
           max_diff(a.probs, c.probs, N * V));
    assert_true(max_diff(a.probs, d.probs, N * V) > 1e-2);      /* noise changes the answer */
    /* the final energy is the energy of the answer softmax(y_K) itself */
    assert_int_equal(ebt_observe(ws, m, tok, B, S, 0), EBT_OK);
    assert_int_equal(ebt_ws_energy(ws, a.probs, E, NULL), EBT_OK);
    for (int r = 0; r < N; r++) assert_true(fabs(E[r] - a.fin[r]) <= TOL * (1 + fabs(E[r])));
    /* 0 steps: the only evaluation is the last; noise must not matter at all */
    o.steps = 0; o.noise = 0.3;
    think(ws, m, tok, &o, &b);
    o.noise = 0;
    think(ws, m, tok, &o, &c);
    assert_true(same_run(&b, &c, 0));
    /* a tiny step: y_K = p_{K-1} - 1e-7 g is a probability vector up to 1e-7 |g|;
     * noise added after the last update would move it by ~0.3 */
    o.steps = 4; o.step_size = 1e-7; o.noise = 0.3;
    think(ws, m, tok, &o, &b);
    o.noise = 0;
    think(ws, m, tok, &o, &c);
    assert_true(max_diff(b.probs, c.probs, N * V) > 1e-3);      /* the noise still acts */
    for (int r = 0; r < N; r++) {
        double sum = 0, mn = 1;
        for (int j = 0; j < V; j++) { sum += b.logits[r * V + j]; mn = fmin(mn, b.logits[r * V + j]); }
        assert_true(fabs(sum - 1) < 1e-3 && mn > -1e-3);
    }
    ebt_workspace_free(ws);
    ebt_free(m);
}

/* the step size of position r in a 1-step thought: y_1 = p_0 - a_r g_0
 * (least squares); *resid gets the largest residual of that fit */
static double fitted_step(const ebt_real *y1, const ebt_real *p0, const ebt_real *g0, double *resid)
{
    double num = 0, den = 0, a, e = 0, scale = 0;
    for (int j = 0; j < V; j++) { num += ((double)p0[j] - y1[j]) * g0[j]; den += (double)g0[j] * g0[j]; }
    a = num / den;
    for (int j = 0; j < V; j++) {
        e = fmax(e, fabs(y1[j] - (p0[j] - a * g0[j])));
        scale = fmax(scale, fabs(y1[j]));
    }
    *resid = e / (1 + scale);
    return a;
}

/* 1-step thoughts: the fitted step of every position (into a[N]); max residual returned */
static double one_step(ebt_workspace *ws, ebt_model *m, const int32_t *tok, ebt_think_opts o, const ebt_real *p0,
                       const ebt_real *g0, double *a)
{
    static run one;
    double worst = 0, res;
    o.steps = 1;
    think(ws, m, tok, &o, &one);
    for (int r = 0; r < N; r++) {
        a[r] = fitted_step(one.logits + r * V, p0 + r * V, g0 + r * V, &res);
        worst = fmax(worst, res);
    }
    return worst;
}

/* alpha_rand r: per-position step sizes within [alpha/r, alpha r], spread
 * over that range, drawn by the seed; r = 1: every position uses alpha */
static void test_alpha_rand(void **state)
{
    ebt_model *m = make(0, 23);
    int32_t tok[N];
    static ebt_real y0[N * V], p0[N * V], g0[N * V];
    double a[N], a2[N], lo = INFINITY, hi = 0, moved = 0;
    ebt_think_opts o = ebt_think_default();
    ebt_workspace *ws;
    (void)state;
    test_rng_state = 104;
    ws = prepare(m, tok, y0, 1);
    start_point(ws, m, tok, y0, p0, g0);
    o.init_logits = y0; o.alpha_rand = 4; o.seed = 5;
    assert_true(one_step(ws, m, tok, o, p0, g0, a) <= TOL);
    o.seed = 6;
    assert_true(one_step(ws, m, tok, o, p0, g0, a2) <= TOL);
    for (int r = 0; r < N; r++) {
        assert_true(a[r] >= 0.5 / 4 * (1 - TOL) && a[r] <= 0.5 * 4 * (1 + TOL));
        lo = fmin(lo, a[r]); hi = fmax(hi, a[r]);
        moved = fmax(moved, fabs(a[r] - a2[r]));
    }
    printf("  alpha 0.5, alpha_rand 4: per-position steps in [%.3f, %.3f]\n", lo, hi);
    assert_true(lo < 0.5 && hi > 0.5 && hi / lo > 2 && moved > 1e-2);   /* steps on both sides of alpha */
    o.alpha_rand = 1;
    assert_true(one_step(ws, m, tok, o, p0, g0, a) <= TOL);
    for (int r = 0; r < N; r++) assert_true(fabs(a[r] - 0.5) <= TOL);
    ebt_workspace_free(ws);
    ebt_free(m);
}

/* step_size overrides the model's alpha; <= 0 means max(alpha, 1e-4) */
static void test_step_size(void **state)
{
    static const double sizes[] = { 0.37, 0, -2, 0 }, want[] = { 0.37, 0.5, 0.5, 1e-4 };
    ebt_model *m = make(0, 27);
    int32_t tok[N];
    static ebt_real y0[N * V], p0[N * V], g0[N * V];
    ebt_real *alpha = ebt_param(m, "alpha", NULL);
    double a[N];
    ebt_think_opts o = ebt_think_default();
    ebt_workspace *ws;
    (void)state;
    test_rng_state = 105;
    ws = prepare(m, tok, y0, 1);
    start_point(ws, m, tok, y0, p0, g0);
    o.init_logits = y0;
    for (int i = 0; i < 4; i++) {
        if (i == 3) *alpha = (ebt_real)1e-6;   /* below the clamp */
        o.step_size = sizes[i];
        assert_true(one_step(ws, m, tok, o, p0, g0, a) <= TOL);
        for (int r = 0; r < N; r++) assert_true(fabs(a[r] - want[i]) <= 1e-6 + TOL * want[i]);
    }
    ebt_workspace_free(ws);
    ebt_free(m);
}

/* init_scale s: y_0 ~ N(0, s^2) (s = 2 doubles the draws of s = 1); s = 0
 * makes every start the same, so restarts change nothing */
static void test_init_scale(void **state)
{
    ebt_model *m = make(0, 24);
    int32_t tok[N];
    static ebt_real unused[N * V];
    static run a1, a2, one, all;
    double sd = 0;
    ebt_think_opts o = ebt_think_default();
    ebt_workspace *ws;
    (void)state;
    test_rng_state = 106;
    ws = prepare(m, tok, unused, 0);
    o.steps = 0; o.seed = 3;
    think(ws, m, tok, &o, &a1);
    o.init_scale = 2;
    think(ws, m, tok, &o, &a2);
    for (int i = 0; i < N * V; i++) { assert_true(a2.logits[i] == 2 * a1.logits[i]); sd += (double)a1.logits[i] * a1.logits[i]; }
    sd = sqrt(sd / (N * V));
    assert_true(sd > 0.8 && sd < 1.2);
    o.init_scale = 0;
    think(ws, m, tok, &o, &a1);
    for (int i = 0; i < N * V; i++) assert_true(a1.logits[i] == 0 && a1.probs[i] == (ebt_real)1 / V);
    o.steps = K;
    think(ws, m, tok, &o, &one);
    o.restarts = R;
    think(ws, m, tok, &o, &all);
    assert_true(same_run(&all, &one, K));   /* winner 0 everywhere: equal energies keep the first start */
    assert_true(all.r.rows_evaluated == R * one.r.rows_evaluated);
    ebt_workspace_free(ws);
    ebt_free(m);
}

static void think_observed(ebt_workspace *ws, const ebt_think_opts *o, run *out)
{
    memset(out, 0, sizeof *out);
    out->r.probs = out->probs; out->r.logits = out->logits; out->r.energy = out->energy;
    out->r.final_energy = out->fin; out->r.steps_taken = out->steps; out->r.winner = out->win;
    assert_int_equal(ebt_think_observed(ws, o, &out->r), EBT_OK);
}

/* ebt_observe + ebt_think_observed is ebt_think, bit for bit, also twice
 * in a row (a step-token model's workspace is left at the step it had) */
static void check_observed(int step_embed)
{
    ebt_model *m = make(step_embed, 25);
    int32_t tok[N];
    static ebt_real y0[R * N * V];
    static run a, b;
    ebt_think_opts o = ebt_think_default();
    ebt_workspace *ws = prepare(m, tok, y0, R);
    o.steps = 3; o.init_logits = y0; o.restarts = R; o.noise = 0.1; o.alpha_rand = 2;
    think(ws, m, tok, &o, &a);
    assert_int_equal(ebt_observe(ws, m, tok, B, S, 0), EBT_OK);
    for (int i = 0; i < 2; i++) {
        think_observed(ws, &o, &b);
        assert_true(same_run(&a, &b, 3));
        assert_true(a.r.rows_evaluated == b.r.rows_evaluated && a.r.diverged == b.r.diverged);
    }
    ebt_workspace_free(ws);
    ebt_free(m);
}

static void test_observed_plain(void **s) { (void)s; test_rng_state = 107; check_observed(0); }
static void test_observed_step_embed(void **s) { (void)s; test_rng_state = 108; check_observed(2); }

/* A thought whose energy becomes non-finite at step 2 (the step token of
 * step 2 made infinite) stops at its last finite state: its answer,
 * logits, step count and energies are those of the same thought with 1
 * step, bit for bit. */
static void test_diverged_state(void **state)
{
    ebt_model *m = make(4, 26);
    int32_t tok[N];
    static ebt_real y0[N * V];
    static run shorter, longer;
    size_t n;
    ebt_real *step_row = ebt_param(m, "step_embed.weight", &n);
    ebt_think_opts o = ebt_think_default();
    ebt_workspace *ws;
    (void)state;
    test_rng_state = 109;
    ws = prepare(m, tok, y0, 1);
    for (size_t j = 0; j < n / 4; j++) step_row[2 * (n / 4) + j] = (ebt_real)INFINITY;
    o.init_logits = y0; o.steps = 1;
    think(ws, m, tok, &o, &shorter);
    o.steps = 3;
    think(ws, m, tok, &o, &longer);
    assert_int_equal(shorter.r.diverged, 0);
    assert_int_equal(longer.r.diverged, N);
    for (int r = 0; r < N; r++) {
        assert_int_equal(longer.steps[r], 1);
        assert_true(longer.fin[r] == shorter.fin[r]);
        for (int k = 0; k <= 3; k++) assert_true(longer.energy[r * 4 + k] == shorter.energy[r * 2 + (k < 1 ? k : 1)]);
    }
    assert_memory_equal(longer.probs, shorter.probs, sizeof longer.probs);
    assert_memory_equal(longer.logits, shorter.logits, sizeof longer.logits);
    ebt_workspace_free(ws);
    ebt_free(m);
}

/* A step that overflows (step_size 1e38) keeps the state before it: the
 * thought of 0 steps, bit for bit. */
static void test_overflow_state(void **state)
{
    ebt_model *m = make(0, 28);
    int32_t tok[N];
    static ebt_real y0[N * V];
    static run zero, big;
    ebt_think_opts o = ebt_think_default();
    ebt_workspace *ws;
    (void)state;
    test_rng_state = 110;
    ws = prepare(m, tok, y0, 1);
    o.init_logits = y0; o.steps = 0;
    think(ws, m, tok, &o, &zero);
    o.steps = 3; o.step_size = sizeof(ebt_real) == sizeof(float) ? 3.4e38 : 1.7e308;
    think(ws, m, tok, &o, &big);
    assert_int_equal(big.r.diverged, N);
    for (int r = 0; r < N; r++) {
        assert_int_equal(big.steps[r], 0);
        assert_true(big.fin[r] == zero.fin[r]);
        for (int k = 0; k <= 3; k++) assert_true(big.energy[r * 4 + k] == zero.fin[r]);
    }
    assert_memory_equal(big.probs, zero.probs, sizeof big.probs);
    assert_memory_equal(big.logits, zero.logits, sizeof big.logits);
    ebt_workspace_free(ws);
    ebt_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threshold_restarts),
        cmocka_unit_test(test_tol_restarts),
        cmocka_unit_test(test_noise),
        cmocka_unit_test(test_alpha_rand),
        cmocka_unit_test(test_step_size),
        cmocka_unit_test(test_init_scale),
        cmocka_unit_test(test_observed_plain),
        cmocka_unit_test(test_observed_step_embed),
        cmocka_unit_test(test_diverged_state),
        cmocka_unit_test(test_overflow_state),
    };
    return cmocka_run_group_tests_name("thinking options", tests, NULL, NULL);
}
