/* The optimiser, exactly. One ebt_train_step against a hand AdamW in
 * double computed from the gradients ebt_train_grad produced for the same
 * inputs (init_logits given, every source of randomness off): which
 * tensors decay (not the norm gains *norm.weight, not alpha), bias
 * correction of both moments, global-norm clipping with alpha's gradient
 * in the norm, learn_alpha = 0, alpha_lr_mult, the learning rate of the
 * warm-up and the cosine (over the steps or the caller's progress), and
 * several steps in a row (moments carried). Also the statistics of a step
 * (loss, ce_first/last, energy_first/last, grad_norm, lr, k, step, alpha)
 * against the thinking chain recomputed with ebt_energy and a hand
 * cross-entropy.
 *
 * The update is elementwise: the hand computation (the same double
 * expression, moments kept in ebt_real as the library keeps them) must
 * agree to ULP_TOL units in the last place of ebt_real for every
 * parameter (measured: identical bits, 0 ulps, with the oneDNN and CBLAS
 * backends under OpenBLAS's Haswell, SkylakeX and Sandybridge kernels).
 * The chain is recomputed with the library's softmax and energy on the
 * same shapes, and summed by hand: measured within 3.8e-8 of the
 * statistics in float32, 2.5e-16 in double; compared at CHAIN_TOL. */
#include "../ebt.h"
#include "test_util.h"
#include <float.h>

enum { B = 2, S = 5, V = 11, NSTEP = 3 };
#define ULP_TOL 2
#ifdef EBT_DOUBLE
#define EPS_REAL DBL_EPSILON
#define CHAIN_TOL 1e-12
#else
#define EPS_REAL FLT_EPSILON
#define CHAIN_TOL 1e-6
#endif
static const double PI = 3.14159265358979323846;

static ebt_model *make(ebt_arch arch, uint64_t seed)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.arch = arch; c.vocab_size = V; c.d_model = 8; c.n_heads = 2; c.d_ff = 12; c.n_layers = 2; c.max_seq_len = 8;
    c.alpha = 0.5;
    assert_int_equal(ebt_create(&c, seed, &m), EBT_OK);
    return m;
}

static void batch(int32_t *tok, int32_t *tgt, ebt_real *y0)
{
    for (int i = 0; i < B * S; i++) { tok[i] = (int32_t)(test_unif() * V); tgt[i] = (int32_t)(test_unif() * V); }
    for (int i = 0; i < B * S * V; i++) y0[i] = (ebt_real)test_normal();
}

/* every parameter (grads 0) or gradient (grads 1), in tensor order */
static void flat(ebt_model *m, int grads, ebt_real *out)
{
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        size_t n;
        const char *name = ebt_tensor_name(m, t);
        const ebt_real *x = grads ? ebt_grad(m, name, &n) : ebt_param(m, name, &n);
        memcpy(out, x, n * sizeof *x);
        out += n;
    }
}

/* the schedule as ebt.h states it: linear warm-up lr (t+1)/warmup over
 * steps t < warmup_steps, then min_lr + (lr - min_lr)(1 + cos(pi q))/2 with
 * q the caller's progress, or (t - warmup)/(total - warmup) capped at 1 */
static double hand_lr(const ebt_train_opts *o, long t)
{
    double q;
    if (t < o->warmup_steps) return o->lr * (double)(t + 1) / (double)o->warmup_steps;
    if (o->progress >= 0) q = o->progress;
    else if (o->total_steps <= o->warmup_steps) q = 1;
    else q = fmin(1.0, (double)(t - o->warmup_steps) / (double)(o->total_steps - o->warmup_steps));
    return o->min_lr + (o->lr - o->min_lr) * (1 + cos(PI * q)) / 2;
}

static int is_gain(const char *name)
{
    size_t n = strlen(name), k = strlen("norm.weight");
    return n >= k && strcmp(name + n - k, "norm.weight") == 0;
}

/* the hand optimiser: AdamW moments (kept in ebt_real, as the library's) and the step count */
typedef struct { ebt_real *m, *v; long t; } hand_adam;

/* the global gradient norm over every tensor (alpha's included), in tensor order */
static double hand_norm(const ebt_real *g, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

/* want = the parameters p after one AdamW step with gradients g */
static void hand_step(ebt_model *m, const ebt_train_opts *o, hand_adam *h, const ebt_real *p, const ebt_real *g,
                      ebt_real *want)
{
    double norm = hand_norm(g, ebt_n_params(m)), lr = hand_lr(o, h->t);
    double scale = o->grad_clip > 0 && norm > o->grad_clip ? o->grad_clip / norm : 1;
    double b1t = 1 - pow(o->beta1, (double)(h->t + 1)), b2t = 1 - pow(o->beta2, (double)(h->t + 1));
    size_t off = 0;
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        size_t cnt;
        const char *name = ebt_tensor_name(m, t);
        int alpha = strcmp(name, "alpha") == 0;
        double tlr = alpha ? lr * o->alpha_lr_mult : lr, wd = alpha || is_gain(name) ? 0 : o->weight_decay;
        ebt_param(m, name, &cnt);
        for (size_t i = off; i < off + cnt; i++) {
            double gi = g[i] * scale, mm, vv;
            if (alpha && !o->learn_alpha) { want[i] = p[i]; continue; }
            mm = o->beta1 * h->m[i] + (1 - o->beta1) * gi;
            vv = o->beta2 * h->v[i] + (1 - o->beta2) * gi * gi;
            h->m[i] = (ebt_real)mm;
            h->v[i] = (ebt_real)vv;
            want[i] = (ebt_real)(p[i] * (1 - tlr * wd) - tlr * (mm / b1t) / (sqrt(vv / b2t) + o->eps));
        }
        off += cnt;
    }
    h->t++;
}

/* the largest difference between got and want in units of want's last place;
 * *worst names the tensor */
static double max_ulps(ebt_model *m, const ebt_real *got, const ebt_real *want, const char **worst)
{
    double e = 0;
    size_t off = 0;
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        size_t cnt;
        ebt_param(m, ebt_tensor_name(m, t), &cnt);
        for (size_t i = off; i < off + cnt; i++) {
            double ulp = fmax(fabs((double)want[i]), 1e-30) * EPS_REAL;
            double d = fabs((double)got[i] - want[i]) / ulp;
            if (!(d <= e)) { e = d; *worst = ebt_tensor_name(m, t); }
        }
        off += cnt;
    }
    return e;
}

/* alpha's share of the global norm: |norm - norm without alpha| / norm */
static double alpha_share(ebt_model *m, const ebt_real *g)
{
    size_t n = ebt_n_params(m);
    double all = hand_norm(g, n), rest = hand_norm(g, n - 1);   /* alpha is the last tensor */
    assert_string_equal(ebt_tensor_name(m, ebt_n_tensors(m) - 1), "alpha");
    return (all - rest) / all;
}

typedef struct {
    const char *what;
    ebt_arch arch;
    ebt_train_opts o;
    int clipped;      /* the configuration's clipping is active at every step */
    int alpha_off;    /* learn_alpha is 0 from this step on (after learnt steps: moments exist) */
} exact_case;

/* one step's checks beyond the parameters: statistics and alpha */
static void check_step_extras(ebt_model *m, const exact_case *c, const ebt_train_opts *o, long s, const ebt_real *p,
                              const ebt_real *g, const ebt_real *got, const ebt_train_stats *st)
{
    size_t n = ebt_n_params(m);
    double norm = hand_norm(g, n), lr = hand_lr(o, s);
    assert_true(fabs(st->grad_norm - norm) <= 1e-12 * norm);
    assert_true(fabs(st->lr - lr) <= 1e-15 * lr);
    assert_int_equal(st->step, s + 1);
    assert_int_equal(ebt_train_steps_done(m), s + 1);
    if (o->grad_clip > 0) assert_int_equal(norm > o->grad_clip, c->clipped);
    if (c->arch != EBT_ARCH_EBT) return;
    assert_true(st->alpha == got[n - 1]);   /* alpha after the step */
    if (!o->learn_alpha) {
        /* the library reports alpha's gradient as 0 when alpha is not learnt
         * (so it does not enter the clipping norm) and leaves alpha alone */
        assert_true(g[n - 1] == 0);
        assert_true(got[n - 1] == p[n - 1]);
    } else {
        assert_true(g[n - 1] != 0);
        assert_true(o->alpha_lr_mult > 0 ? got[n - 1] != p[n - 1] : got[n - 1] == p[n - 1]);
        if (c->clipped) assert_true(alpha_share(m, g) > 1e-4);   /* the norm visibly includes alpha */
    }
}

/* NSTEP steps on fresh batches: every parameter after each ebt_train_step
 * is the hand update of the gradients ebt_train_grad gave at the same
 * parameters for the same inputs */
static void check_exact(const exact_case *c)
{
    ebt_model *m = make(c->arch, 7);
    size_t n = ebt_n_params(m);
    ebt_real *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g), *g2 = malloc(n * sizeof *g);
    ebt_real *want = malloc(n * sizeof *p), *got = malloc(n * sizeof *p);
    hand_adam h = { calloc(n, sizeof(ebt_real)), calloc(n, sizeof(ebt_real)), 0 };
    int32_t tok[B * S], tgt[B * S];
    static ebt_real y0[B * S * V];
    double worst_ulps = 0, share = 0;
    const char *worst = "-";
    for (long s = 0; s < NSTEP; s++) {
        ebt_train_stats gs, st;
        ebt_train_opts o = c->o;
        if (s >= c->alpha_off) o.learn_alpha = 0;
        batch(tok, tgt, y0);
        flat(m, 0, p);
        assert_int_equal(ebt_train_grad(m, &o, tok, tgt, B, S, y0, NULL, &gs), EBT_OK);
        flat(m, 1, g);
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, B, S, y0, &st), EBT_OK);
        flat(m, 1, g2);
        assert_memory_equal(g, g2, n * sizeof *g);   /* the step computed the same gradients */
        hand_step(m, &o, &h, p, g, want);
        flat(m, 0, got);
        worst_ulps = fmax(worst_ulps, max_ulps(m, got, want, &worst));
        if (worst_ulps > ULP_TOL) printf("  %s, step %ld: %.1f ulps (%s)\n", c->what, s, worst_ulps, worst);
        assert_true(worst_ulps <= ULP_TOL);
        if (c->arch == EBT_ARCH_EBT && o.learn_alpha) share = fmax(share, alpha_share(m, g));
        check_step_extras(m, c, &o, s, p, g, got, &st);
    }
    printf("  %-44s %d steps, %zu parameters: max %.1f ulps (%s)", c->what, NSTEP, n, worst_ulps, worst);
    if (share > 0) printf(", alpha's share of the norm %.1e", share);
    printf("\n");
    free(p); free(g); free(g2); free(want); free(got); free(h.m); free(h.v);
    ebt_free(m);
}

static ebt_train_opts base_opts(ebt_mode mode)
{
    ebt_train_opts o = ebt_train_default();
    o.mode = mode;
    o.lr = 0.05; o.min_lr = 0.01; o.warmup_steps = 2; o.total_steps = 5;
    o.weight_decay = 0.1;   /* large, so that decay on a gain (0.005 of 1) is ~40000 ulps */
    return o;
}

/* clipping active at every step (grad_clip far below the norm); eps of the
 * order of the clipped gradients, so that the update depends on the scale */
static void test_exact_clipped(void **state)
{
    exact_case c = { "ebt detach, clipped, warm-up + cosine", EBT_ARCH_EBT, base_opts(EBT_MODE_DETACH), 1, NSTEP };
    (void)state;
    test_rng_state = 142542;
    c.o.grad_clip = 1e-3; c.o.eps = 1e-5;
    check_exact(&c);
    c.what = "transformer++, clipped, warm-up + cosine"; c.arch = EBT_ARCH_TRANSFORMER;
    check_exact(&c);
}

/* no clipping; alpha learnt at step 0, not after (its moments are then
 * non-zero: a zero gradient would still move it); other betas; cosine from
 * step 0 */
static void test_exact_fixed_alpha(void **state)
{
    exact_case c = { "ebt truncate, no clip, learn_alpha 1, 0, 0", EBT_ARCH_EBT, base_opts(EBT_MODE_TRUNCATE), 0, 1 };
    (void)state;
    test_rng_state = 174218;
    c.o.grad_clip = 0; c.o.weight_decay = 0.2; c.o.lr = 0.02;
    c.o.warmup_steps = 0; c.o.total_steps = 3; c.o.beta1 = 0.8; c.o.beta2 = 0.95;
    check_exact(&c);
}

/* alpha's own learning rate; clipping inactive (grad_clip above the norm);
 * the cosine set by the caller's progress after a 1-step warm-up */
static void test_exact_alpha_lr(void **state)
{
    exact_case c = { "ebt full, alpha_lr_mult 3, progress 0.25", EBT_ARCH_EBT, base_opts(EBT_MODE_FULL), 0, NSTEP };
    (void)state;
    test_rng_state = 150461;
    c.o.grad_clip = 1e6; c.o.alpha_lr_mult = 3; c.o.lr = 0.01; c.o.min_lr = 0.002; c.o.warmup_steps = 1;
    c.o.progress = 0.25;
    c.o.weight_decay = 0.05;
    check_exact(&c);
    c.what = "ebt detach, alpha_lr_mult 0"; c.o.mode = EBT_MODE_DETACH; c.o.alpha_lr_mult = 0;
    check_exact(&c);
}

/* stats.lr over the warm-up, the cosine, past total_steps, with the
 * caller's progress, and with total_steps <= warmup_steps */
static void test_lr_schedule(void **state)
{
    /* warm-up (progress ignored), the caller's progress, the step count (8; 10, 11 past the end) */
    static const double prog[] = { -1, 0.3, 0.6, 0.5, 0, 0.25, 0.75, 1, -1, 0.9, -1, -1, -1, -1 };
    ebt_model *m = make(EBT_ARCH_EBT, 3);
    ebt_train_opts o = ebt_train_default();
    ebt_train_stats st;
    int32_t tok[B * S], tgt[B * S];
    static ebt_real y0[B * S * V];
    double worst = 0;
    (void)state;
    test_rng_state = 126704;
    o.lr = 1e-3; o.min_lr = 2e-4; o.warmup_steps = 3; o.total_steps = 9; o.k_min = o.k_max = 1;
    batch(tok, tgt, y0);
    for (long t = 0; t < 14; t++) {
        o.progress = prog[t];
        if (t >= 12) o.total_steps = 2;    /* the cosine has ended: min_lr */
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, 1, S, y0, &st), EBT_OK);
        double want = hand_lr(&o, t);
        if (t == 3) assert_true(fabs(want - (o.min_lr + o.lr) / 2) < 1e-18);   /* progress 0.5: the middle */
        if (t == 4) assert_true(want == o.lr);
        if (t == 7 || t >= 10) assert_true(fabs(want - o.min_lr) < 1e-18);
        worst = fmax(worst, fabs(st.lr - want) / want);
    }
    printf("  14 steps (warm-up 3, cosine to 9, progress 0..1): max rel error of stats.lr %.1e\n", worst);
    assert_true(worst <= 1e-15);
    ebt_free(m);
}

/* the thinking chain of a training step recomputed with public calls:
 * p_k = softmax(y_k) (the library's own softmax, as ebt_think's answer for
 * 0 steps from y_k), dE/dp_k by ebt_energy, y_{k+1} = p_k - max(alpha,
 * 1e-4) dE/dp_k, and by hand the mean cross-entropies of y_1..y_K and the
 * mean energies of p_0..p_{K-1} */
static void hand_chain(ebt_model *m, const int32_t *tok, const int32_t *tgt, const ebt_real *y0, int K,
                       ebt_mode mode, ebt_train_stats *want)
{
    static ebt_real y[B * S * V], p[B * S * V], g[B * S * V];
    ebt_real E[B * S], a = (ebt_real)fmax(*ebt_param(m, "alpha", NULL), 1e-4);
    ebt_workspace *ws;
    ebt_think_opts to = ebt_think_default();
    ebt_think_result r;
    assert_int_equal(ebt_workspace_create(m, B, S, &ws), EBT_OK);
    memset(want, 0, sizeof *want);
    memcpy(y, y0, sizeof y);
    to.steps = 0; to.init_logits = y;
    for (int k = 0; k < K; k++) {
        double esum = 0, ce = 0;
        memset(&r, 0, sizeof r);
        r.probs = p;
        assert_int_equal(ebt_think(ws, m, tok, B, S, &to, &r), EBT_OK);
        assert_int_equal(ebt_energy(m, tok, p, B, S, k, E, g), EBT_OK);
        for (int n = 0; n < B * S; n++) esum += E[n] / (B * S);
        for (int i = 0; i < B * S * V; i++) y[i] = p[i] - a * g[i];
        for (int n = 0; n < B * S; n++) ce += test_ce(y + n * V, tgt[n], V) / (B * S);
        if (k == 0) { want->energy_first = esum; want->ce_first = ce; }
        want->energy_last = esum;   /* the energy of the last step's start p_{K-1} */
        want->ce_last = ce;
        want->loss += mode == EBT_MODE_TRUNCATE ? (k == K - 1 ? ce : 0) : ce / K;
    }
    want->k = K;
    ebt_workspace_free(ws);
}

static double stat_err(const ebt_train_stats *a, const ebt_train_stats *b)
{
    double x[5] = { a->loss, a->ce_first, a->ce_last, a->energy_first, a->energy_last };
    double y[5] = { b->loss, b->ce_first, b->ce_last, b->energy_first, b->energy_last };
    double e = 0;
    for (int i = 0; i < 5; i++) e = fmax(e, fabs(x[i] - y[i]) / (1 + fabs(y[i])));
    return isnan(e) ? INFINITY : e;
}

/* the statistics of ebt_train_grad and ebt_train_step against the chain
 * recomputed by hand (K = 3, each mode), and the step's own fields */
static void test_stats(void **state)
{
    (void)state;
    test_rng_state = 79190;
    for (int md = 0; md < 3; md++) {
        ebt_model *m = make(EBT_ARCH_EBT, 11);
        ebt_train_opts o = base_opts((ebt_mode)md);
        ebt_train_stats want, gs, st;
        int32_t tok[B * S], tgt[B * S];
        static ebt_real y0[B * S * V], g[4096];
        size_t n = ebt_n_params(m);
        double alpha0;
        o.k_min = o.k_max = 3;
        batch(tok, tgt, y0);
        alpha0 = *ebt_param(m, "alpha", NULL);
        hand_chain(m, tok, tgt, y0, 3, (ebt_mode)md, &want);
        assert_int_equal(ebt_train_grad(m, &o, tok, tgt, B, S, y0, NULL, &gs), EBT_OK);
        printf("  mode %d: loss %.6f ce %.6f -> %.6f energy %.6f -> %.6f; rel error vs the chain %.1e (tol %.0e)\n", md,
               gs.loss, gs.ce_first, gs.ce_last, gs.energy_first, gs.energy_last, stat_err(&gs, &want), CHAIN_TOL);
        assert_true(stat_err(&gs, &want) <= CHAIN_TOL);
        assert_true(fabs(gs.ce_last - gs.ce_first) > 10 * CHAIN_TOL);   /* first and last are told apart */
        assert_true(fabs(gs.energy_last - gs.energy_first) > 10 * CHAIN_TOL);
        assert_int_equal(gs.k, 3);
        assert_int_equal(gs.step, 0);
        assert_true(gs.alpha == alpha0);
        assert_true(n <= sizeof g / sizeof g[0]);
        flat(m, 1, g);
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, B, S, y0, &st), EBT_OK);
        assert_true(stat_err(&st, &gs) == 0);   /* the step's own thinking: the same computation */
        assert_int_equal(st.k, 3);
        assert_int_equal(st.step, 1);
        assert_true(fabs(st.grad_norm - hand_norm(g, n)) <= 1e-12 * st.grad_norm);
        assert_true(st.lr == hand_lr(&o, 0));
        assert_true(st.alpha == *ebt_param(m, "alpha", NULL) && st.alpha != alpha0);
        ebt_free(m);
    }
}

/* a random number of steps: k in [k_min, k_max], every value drawn, and
 * ebt_train_grad draws the same k as the step at the same step count */
static void test_random_k(void **state)
{
    ebt_model *m = make(EBT_ARCH_EBT, 5);
    ebt_train_opts o = base_opts(EBT_MODE_DETACH);
    ebt_train_stats gs, st;
    int32_t tok[B * S], tgt[B * S];
    static ebt_real y0[B * S * V];
    int seen[4] = { 0 };
    (void)state;
    test_rng_state = 102947;
    o.k_min = 1; o.k_max = 3;
    batch(tok, tgt, y0);
    for (int s = 0; s < 16; s++) {
        assert_int_equal(ebt_train_grad(m, &o, tok, tgt, 1, S, y0, NULL, &gs), EBT_OK);
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, 1, S, y0, &st), EBT_OK);
        assert_int_equal(gs.k, st.k);
        assert_true(st.k >= 1 && st.k <= 3);
        seen[st.k]++;
    }
    printf("  k over 16 steps: 1 x%d, 2 x%d, 3 x%d\n", seen[1], seen[2], seen[3]);
    assert_true(seen[1] > 0 && seen[2] > 0 && seen[3] > 0);
    ebt_free(m);
}

/* transformer++: loss = ce_first = ce_last = the mean cross-entropy of ebt_lm_logits */
static void test_stats_transformer(void **state)
{
    ebt_model *m = make(EBT_ARCH_TRANSFORMER, 13);
    ebt_train_opts o = base_opts(EBT_MODE_DETACH);
    ebt_train_stats st;
    int32_t tok[B * S], tgt[B * S];
    static ebt_real y0[B * S * V], logits[B * S * V];
    double ce = 0;
    (void)state;
    test_rng_state = 174218;
    batch(tok, tgt, y0);
    assert_int_equal(ebt_lm_logits(m, tok, B, S, logits), EBT_OK);
    for (int r = 0; r < B * S; r++) ce += test_ce(logits + r * V, tgt[r], V) / (B * S);
    assert_int_equal(ebt_train_step(m, &o, tok, tgt, B, S, NULL, &st), EBT_OK);
    assert_true(fabs(st.loss - ce) <= CHAIN_TOL * (1 + ce));
    assert_true(st.ce_first == st.loss && st.ce_last == st.loss);
    assert_int_equal(st.step, 1);
    ebt_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_clipped),
        cmocka_unit_test(test_exact_fixed_alpha),
        cmocka_unit_test(test_exact_alpha_lr),
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_random_k),
        cmocka_unit_test(test_stats_transformer),
    };
    return cmocka_run_group_tests_name("optimiser and step statistics", tests, NULL, NULL);
}
