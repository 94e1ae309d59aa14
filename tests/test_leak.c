/* No leakage: E_i (and dE/dp_i) depend only on x_0..x_i and p_i, bit for
 * bit. And the observed stream, computed once by ebt_observe, gives the
 * same bits for every p as a fresh evaluation does. */
#include "../ebt.h"
#include "test_util.h"

enum { B = 2, S = 7, V = 19 };

static ebt_model *make(int step_embed, int tied)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.vocab_size = V; c.d_model = 16; c.n_heads = 2; c.d_ff = 24; c.n_layers = 3; c.max_seq_len = 8;
    c.n_step_embed = step_embed; c.tie_pred_embed = tied;
    assert_int_equal(ebt_create(&c, 11, &m), EBT_OK);
    return m;
}

static void check_leak(int step_embed, int tied)
{
    ebt_model *m = make(step_embed, tied);
    int32_t tok[B * S], tok2[B * S];
    ebt_real p[B * S * V], p2[B * S * V], E[B * S], E2[B * S], g[B * S * V], g2[B * S * V];
    int changed_control = 0;
    for (int i = 0; i < B * S; i++) tok[i] = (int32_t)(test_unif() * V);
    test_random_probs(p, B * S, V, 2.0);
    assert_int_equal(ebt_energy(m, tok, p, B, S, 2, E, g), EBT_OK);
    for (int i = 0; i < S; i++) {
        /* change every later token and every other candidate */
        memcpy(tok2, tok, sizeof tok);
        memcpy(p2, p, sizeof p);
        for (int b = 0; b < B; b++) {
            for (int j = i + 1; j < S; j++) tok2[b * S + j] = (tok[b * S + j] + 1 + (int)(test_unif() * (V - 1))) % V;
            for (int j = 0; j < S; j++)
                if (j != i) test_random_probs(p2 + (size_t)(b * S + j) * V, 1, V, 3.0);
        }
        assert_int_equal(ebt_energy(m, tok2, p2, B, S, 2, E2, g2), EBT_OK);
        for (int b = 0; b < B; b++) {
            int n = b * S + i;
            assert_memory_equal(&E[n], &E2[n], sizeof(ebt_real));
            assert_memory_equal(&g[(size_t)n * V], &g2[(size_t)n * V], sizeof(ebt_real) * V);
            for (int j = 0; j < S; j++)   /* the other rows did change: the test can fail */
                if (j != i && E2[b * S + j] != E[b * S + j]) changed_control++;
        }
        /* control: changing p_i itself or x_i does change E_i */
        memcpy(p2, p, sizeof p);
        test_random_probs(p2 + (size_t)i * V, 1, V, 3.0);
        assert_int_equal(ebt_energy(m, tok, p2, B, S, 2, E2, NULL), EBT_OK);
        assert_true(E2[i] != E[i]);
        memcpy(tok2, tok, sizeof tok);
        tok2[i] = (tok[i] + 1) % V;
        assert_int_equal(ebt_energy(m, tok2, p, B, S, 2, E2, NULL), EBT_OK);
        assert_true(E2[i] != E[i]);
    }
    assert_true(changed_control > 0);
    ebt_free(m);
}

static void test_leak_plain(void **state) { (void)state; check_leak(0, 0); }
static void test_leak_step_tied(void **state) { (void)state; check_leak(4, 1); }

/* one ebt_observe, many candidates: same bits as ebt_energy / ebt_hvp each time */
static void test_observed_cache(void **state)
{
    ebt_model *m = make(3, 0);
    ebt_workspace *ws = NULL;
    int32_t tok[B * S];
    ebt_real p[B * S * V], v[B * S * V], E[B * S], E2[B * S], g[B * S * V], g2[B * S * V], hv[B * S * V], hv2[B * S * V];
    (void)state;
    for (int i = 0; i < B * S; i++) tok[i] = (int32_t)(test_unif() * V);
    test_random_probs(p, B * S, V, 1.0);
    assert_int_equal(ebt_workspace_create(m, B, S, &ws), EBT_OK);
    assert_int_equal(ebt_ws_energy(ws, p, E, NULL), EBT_ERR_STATE);  /* not observed yet */
    assert_int_equal(ebt_observe(ws, m, tok, B, S, 1), EBT_OK);
    for (int round = 0; round < 4; round++) {
        test_random_probs(p, B * S, V, 1.0 + round);
        for (int i = 0; i < B * S * V; i++) v[i] = (ebt_real)test_normal();
        assert_int_equal(ebt_ws_energy(ws, p, E, g), EBT_OK);
        assert_int_equal(ebt_energy(m, tok, p, B, S, 1, E2, g2), EBT_OK);
        assert_memory_equal(E, E2, sizeof E);
        assert_memory_equal(g, g2, sizeof g);
        assert_int_equal(ebt_ws_hvp(ws, p, v, hv, E2, g2), EBT_OK);
        assert_memory_equal(E, E2, sizeof E);
        assert_memory_equal(g, g2, sizeof g);
        assert_int_equal(ebt_hvp(m, tok, p, B, S, 1, v, hv2), EBT_OK);
        assert_memory_equal(hv, hv2, sizeof hv);
    }
    /* a smaller batch in the same workspace */
    assert_int_equal(ebt_observe(ws, m, tok, 1, S - 2, 0), EBT_OK);
    assert_int_equal(ebt_ws_energy(ws, p, E, NULL), EBT_OK);
    assert_int_equal(ebt_energy(m, tok, p, 1, S - 2, 0, E2, NULL), EBT_OK);
    assert_memory_equal(E, E2, sizeof(ebt_real) * (S - 2));
    ebt_workspace_free(ws);
    ebt_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leak_plain),
        cmocka_unit_test(test_leak_step_tied),
        cmocka_unit_test(test_observed_cache),
    };
    return cmocka_run_group_tests_name("no leakage, observed-stream cache", tests, NULL, NULL);
}
