/* Generation (ebt_generate) by behaviour, for both archs: temperature 0
 * takes the argmax of the returned distribution; top-p never samples a
 * token outside the nucleus (over many seeds); transformer++ reports NaN
 * energies; a prompt longer than the workspace's max_S works and only its
 * last max_S tokens matter.
 *
 * The sampler's nucleus is recomputed in double from the returned
 * distribution; a token counts as outside (inside) it only when the mass
 * before it is above (below) top_p by more than MARGIN of the total, far
 * beyond the sampler's float rounding (~1e-7), so no check rests on a
 * decision within rounding. */
#include "../ebt.h"
#include "test_util.h"

enum { V = 13, MAXS = 8, NSEED = 400 };
#define MARGIN 1e-5

static ebt_model *make(ebt_arch arch)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.arch = arch; c.vocab_size = V; c.d_model = 16; c.n_heads = 2; c.d_ff = 24; c.n_layers = 2; c.max_seq_len = 12;
    c.alpha = 0.5;
    assert_int_equal(ebt_create(&c, arch == EBT_ARCH_EBT ? 51 : 52, &m), EBT_OK);
    return m;
}

static const char *arch_name(ebt_arch a) { return a == EBT_ARCH_EBT ? "ebt" : "transformer++"; }

/* temperature 0: every token is the (first) argmax of its returned distribution */
static void check_argmax(ebt_arch arch)
{
    enum { NN = 12 };
    ebt_model *m = make(arch);
    ebt_workspace *ws;
    int32_t prompt[3] = { 4, 1, 9 }, out[NN];
    static ebt_real q[NN * V];
    ebt_real e[NN];
    ebt_gen_opts o = ebt_gen_default();
    assert_int_equal(ebt_workspace_create(m, 1, MAXS, &ws), EBT_OK);
    o.temperature = 0; o.think.steps = 2;
    for (int pass = 0; pass < 2; pass++) {
        o.top_p = pass ? 0.3 : 1;   /* top-p does not change an argmax */
        assert_int_equal(ebt_generate(ws, m, prompt, 3, NN, &o, out, e, q), EBT_OK);
        for (int t = 0; t < NN; t++) {
            int best = 0;
            for (int j = 1; j < V; j++) best = q[t * V + j] > q[t * V + best] ? j : best;
            assert_int_equal(out[t], best);
            assert_true(arch == EBT_ARCH_EBT ? isfinite(e[t]) : isnan(e[t]));   /* transformer++: NaN */
        }
    }
    ebt_workspace_free(ws);
    ebt_free(m);
}

static void test_argmax_ebt(void **s) { (void)s; check_argmax(EBT_ARCH_EBT); }
static void test_argmax_transformer(void **s) { (void)s; check_argmax(EBT_ARCH_TRANSFORMER); }

/* the nucleus of q[V] at temperature T and top_p: side[j] = 1 surely
 * inside, -1 surely outside, 0 within MARGIN of the edge; returns the
 * q-mass surely outside */
static double nucleus(const ebt_real *q, double T, double top_p, int *side)
{
    double w[V], tot = 0, cum = 0, mx = -INFINITY, out = 0;
    int order[V];
    for (int j = 0; j < V; j++) { w[j] = log(fmax(q[j], 1e-37)) / T; mx = fmax(mx, w[j]); order[j] = j; }
    for (int j = 0; j < V; j++) { w[j] = exp(w[j] - mx); tot += w[j]; }
    for (int i = 1; i < V; i++)   /* by weight, descending; ties by index */
        for (int k = i; k > 0 && (w[order[k]] > w[order[k - 1]] ||
                                  (w[order[k]] == w[order[k - 1]] && order[k] < order[k - 1])); k--) {
            int t = order[k]; order[k] = order[k - 1]; order[k - 1] = t;
        }
    for (int i = 0; i < V; i++) {
        int j = order[i];
        side[j] = cum < (top_p - MARGIN) * tot ? 1 : cum >= (top_p + MARGIN) * tot ? -1 : 0;
        if (side[j] < 0) out += q[j];
        cum += w[j];
    }
    return out;
}

/* top-p: over NSEED sampling seeds no token outside the nucleus is drawn;
 * the same seeds with top_p = 1 do draw outside it (the check has power) */
static void check_top_p(ebt_arch arch, double T, double top_p)
{
    ebt_model *m = make(arch);
    ebt_workspace *ws;
    int32_t prompt[4] = { 3, 7, 2, 5 }, out[1];
    ebt_real q[V], q0[V];
    int count[2][V], side[V], distinct = 0, control_out = 0;
    double mass_out;
    ebt_gen_opts o = ebt_gen_default();
    memset(count, 0, sizeof count);
    assert_int_equal(ebt_workspace_create(m, 1, MAXS, &ws), EBT_OK);
    o.temperature = T; o.think.steps = 1;
    for (int pass = 0; pass < 2; pass++) {
        o.top_p = pass ? top_p : 1;
        for (int s = 0; s < NSEED; s++) {
            o.seed = 1000 + (uint64_t)s;
            assert_int_equal(ebt_generate(ws, m, prompt, 4, 1, &o, out, NULL, q), EBT_OK);
            if (pass == 0 && s == 0) memcpy(q0, q, sizeof q);
            assert_memory_equal(q, q0, sizeof q);   /* the distribution does not depend on the sampling seed */
            count[pass][out[0]]++;
        }
    }
    mass_out = nucleus(q0, T, top_p, side);
    for (int j = 0; j < V; j++) {
        if (side[j] < 0) assert_int_equal(count[1][j], 0);
        if (side[j] < 0) control_out += count[0][j];
        distinct += count[1][j] > 0;
    }
    printf("  %s, temperature %.1f, top_p %.2f: %d tokens drawn, none of the %.2f of the mass outside the nucleus "
           "(top_p 1: %d of %d draws outside)\n", arch_name(arch), T, top_p, distinct, mass_out, control_out, NSEED);
    assert_true(mass_out >= 0.05 && distinct >= 2 && control_out > 0);
    ebt_workspace_free(ws);
    ebt_free(m);
}

static void test_top_p_ebt(void **s) { (void)s; check_top_p(EBT_ARCH_EBT, 0.8, 0.6); }
static void test_top_p_transformer(void **s) { (void)s; check_top_p(EBT_ARCH_TRANSFORMER, 1.0, 0.7); }

typedef struct { int32_t out[10]; ebt_real e[10], q[10 * V]; } gen;
static void generate(ebt_workspace *ws, ebt_model *m, const int32_t *prompt, int n, const ebt_gen_opts *o, gen *g)
{
    assert_int_equal(ebt_generate(ws, m, prompt, n, 10, o, g->out, g->e, g->q), EBT_OK);
}
static int same_gen(const gen *a, const gen *b)
{
    return !memcmp(a->out, b->out, sizeof a->out) && !memcmp(a->q, b->q, sizeof a->q) &&
           !memcmp(a->e, b->e, sizeof a->e);   /* (memcmp: NaN energies of transformer++ compare equal) */
}

/* A prompt of 14 tokens in a workspace of max_S 8: prompts that differ
 * only before their last 8 tokens give the same generation (default,
 * random thinking), and those last 8 tokens alone give it too when
 * thinking does not depend on its seed (init_scale 0; with a random start
 * each token's thinking seed follows its absolute position, n_prompt + t).
 * Changing one of the last 8 tokens changes the generation. */
static void check_long_prompt(ebt_arch arch)
{
    ebt_model *m = make(arch);
    ebt_workspace *ws;
    int32_t p1[14], p2[14];
    static gen a, b, c;
    ebt_gen_opts o = ebt_gen_default();
    assert_int_equal(ebt_workspace_create(m, 1, MAXS, &ws), EBT_OK);
    for (int i = 0; i < 14; i++) { p1[i] = (int32_t)((5 * i + 2) % V); p2[i] = i < 6 ? (int32_t)((p1[i] + 1 + i) % V) : p1[i]; }
    o.think.steps = 2;
    generate(ws, m, p1, 14, &o, &a);
    generate(ws, m, p2, 14, &o, &b);
    assert_true(same_gen(&a, &b));
    o.think.init_scale = 0;
    generate(ws, m, p1, 14, &o, &a);
    generate(ws, m, p1 + 6, 8, &o, &c);
    assert_true(same_gen(&a, &c));
    p2[6] = (int32_t)((p1[6] + 1) % V);   /* the first of the last 8 tokens does matter */
    generate(ws, m, p2, 14, &o, &b);
    assert_false(same_gen(&a, &b));
    ebt_workspace_free(ws);
    ebt_free(m);
}

static void test_long_prompt_ebt(void **s) { (void)s; check_long_prompt(EBT_ARCH_EBT); }
static void test_long_prompt_transformer(void **s) { (void)s; check_long_prompt(EBT_ARCH_TRANSFORMER); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax_ebt),
        cmocka_unit_test(test_argmax_transformer),
        cmocka_unit_test(test_top_p_ebt),
        cmocka_unit_test(test_top_p_transformer),
        cmocka_unit_test(test_long_prompt_ebt),
        cmocka_unit_test(test_long_prompt_transformer),
    };
    return cmocka_run_group_tests_name("generation", tests, NULL, NULL);
}
