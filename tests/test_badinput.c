/* Bad input: every public function, given NULL pointers, zero or negative
 * sizes, sizes that overflow, token ids outside [0, V), S above
 * max_seq_len, or NaN/Inf in its inputs, returns a specific error code
 * (no crash, no abort) and leaves the model's parameters and gradients
 * unchanged. */
#include <limits.h>
#include "../ebt.h"
#include "test_util.h"

enum { B = 2, S = 4, V = 9, MAXS = 6 };

static ebt_model *m, *lm;
static ebt_workspace *ws;
static int32_t tok[B * S], badtok[B * S];
static ebt_real p[B * S * V], pnan[B * S * V], pinf[B * S * V], out[B * S * V], out2[B * S * V], w[B * S], wnan[B * S];
static int ncases;

static uint64_t hash_model(ebt_model *x)
{
    uint64_t h = 1469598103934665603ULL;
    for (int t = 0; t < ebt_n_tensors(x); t++) {
        size_t n;
        const unsigned char *a = (const unsigned char *)ebt_param(x, ebt_tensor_name(x, t), &n);
        const unsigned char *g = (const unsigned char *)ebt_grad(x, ebt_tensor_name(x, t), &n);
        for (size_t i = 0; i < n * sizeof(ebt_real); i++) h = (h ^ a[i]) * 1099511628211ULL;
        for (size_t i = 0; i < n * sizeof(ebt_real); i++) h = (h ^ g[i]) * 1099511628211ULL;
    }
    return h;
}

/* evaluates call, checks its status and that neither model changed */
#define CASE(call, want) do {                                                  \
        uint64_t h1 = hash_model(m), h2 = hash_model(lm);                      \
        ebt_status got_ = (call);                                              \
        ncases++;                                                              \
        if (got_ != (want)) printf("  %s -> %s, expected %s\n", #call,         \
                                   ebt_status_str(got_), ebt_status_str(want)); \
        assert_int_equal(got_, (want));                                        \
        assert_true(hash_model(m) == h1 && hash_model(lm) == h2);              \
    } while (0)

static int setup(void **state)
{
    ebt_config c = ebt_config_default();
    (void)state;
    c.vocab_size = V; c.d_model = 8; c.n_heads = 2; c.d_ff = 8; c.n_layers = 2; c.max_seq_len = MAXS;
    c.n_step_embed = 2;
    if (ebt_create(&c, 1, &m) != EBT_OK) return -1;
    c.arch = EBT_ARCH_TRANSFORMER;
    if (ebt_create(&c, 2, &lm) != EBT_OK) return -1;
    if (ebt_workspace_create(m, B, S, &ws) != EBT_OK) return -1;
    for (int i = 0; i < B * S; i++) { tok[i] = i % V; badtok[i] = tok[i]; w[i] = 1; wnan[i] = 1; }
    test_random_probs(p, B * S, V, 1.0);
    memcpy(pnan, p, sizeof p);
    memcpy(pinf, p, sizeof p);
    pnan[5] = NAN;
    pinf[B * S * V - 1] = INFINITY;
    wnan[3] = NAN;
    /* give the gradients a non-trivial state to protect */
    ebt_energy_backward(m, tok, p, B, S, 0, NULL, NULL);
    ebt_lm_backward(lm, tok, tok, B, S, out);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ebt_workspace_free(ws);
    ebt_free(m);
    ebt_free(lm);
    return 0;
}

static void test_config_and_create(void **state)
{
    ebt_config c = ebt_config_default(), bad;
    ebt_model *x = (ebt_model *)&x;
    char err[256];
    (void)state;
    CASE(ebt_config_check(NULL, err, sizeof err), EBT_ERR_ARG);
    CASE(ebt_create(NULL, 1, &x), EBT_ERR_ARG);
    assert_null(x);
    CASE(ebt_create(&c, 1, NULL), EBT_ERR_ARG);
#define BADCFG(field, val) do { bad = c; bad.field = val; x = (ebt_model *)&x;                 \
        CASE(ebt_config_check(&bad, err, sizeof err), EBT_ERR_ARG); assert_true(err[0] != 0); \
        CASE(ebt_create(&bad, 1, &x), EBT_ERR_ARG); assert_null(x); } while (0)
    BADCFG(arch, (ebt_arch)7);
    BADCFG(vocab_size, 0); BADCFG(vocab_size, -3); BADCFG(vocab_size, INT_MAX);
    BADCFG(d_model, 0); BADCFG(d_model, -128); BADCFG(d_model, 1 << 30);
    BADCFG(n_heads, 0); BADCFG(n_heads, -4); BADCFG(n_heads, 3);   /* 128 % 3 != 0 */
    BADCFG(n_heads, 128);                                           /* Dh = 1, odd */
    BADCFG(n_layers, 0); BADCFG(n_layers, -1); BADCFG(n_layers, 1 << 20);
    BADCFG(d_ff, 0); BADCFG(d_ff, -1); BADCFG(d_ff, INT_MAX);
    BADCFG(max_seq_len, 0); BADCFG(max_seq_len, -1); BADCFG(max_seq_len, INT_MAX);
    BADCFG(n_step_embed, -1); BADCFG(n_step_embed, INT_MAX);
    BADCFG(tie_pred_embed, 2); BADCFG(tie_pred_embed, -1);
    BADCFG(rope_theta, 0); BADCFG(rope_theta, -1); BADCFG(rope_theta, NAN); BADCFG(rope_theta, INFINITY);
    BADCFG(norm_eps, 0); BADCFG(norm_eps, -1e-5); BADCFG(norm_eps, NAN); BADCFG(norm_eps, INFINITY);
    BADCFG(alpha, NAN); BADCFG(alpha, INFINITY);
    /* a model too large to address */
    bad = c; bad.vocab_size = 1 << 24; bad.d_model = 1 << 16; bad.n_heads = 1 << 10;
    CASE(ebt_config_check(&bad, err, sizeof err), EBT_ERR_ARG);
#undef BADCFG
    ebt_free(NULL);
    ebt_workspace_free(NULL);
}

static void test_params(void **state)
{
    size_t n = 99;
    (void)state;
    ncases += 6;
    assert_null(ebt_param(NULL, "alpha", &n)); assert_int_equal(n, 0);
    assert_null(ebt_param(m, NULL, &n));
    assert_null(ebt_param(m, "no.such.tensor", &n)); assert_int_equal(n, 0);
    assert_null(ebt_grad(m, "lm_head.weight", &n));     /* not in an ebt model */
    assert_null(ebt_param(lm, "energy_head.weight", &n));
    assert_null(ebt_tensor_name(m, -1));
    assert_null(ebt_tensor_name(m, ebt_n_tensors(m)));
    assert_null(ebt_model_config(NULL));
    assert_non_null(ebt_param(m, "alpha", NULL));
    ebt_zero_grad(NULL);
}

static void test_energy_calls(void **state)
{
    (void)state;
    /* ebt_energy */
    CASE(ebt_energy(NULL, tok, p, B, S, 0, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, NULL, p, B, S, 0, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, tok, NULL, B, S, 0, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, tok, p, 0, S, 0, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, tok, p, -1, S, 0, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, tok, p, B, 0, 0, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, tok, p, B, -5, 0, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, tok, p, B, MAXS + 1, 0, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, tok, p, INT_MAX, S, 0, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, tok, p, B, S, -1, out, NULL), EBT_ERR_ARG);
    CASE(ebt_energy(m, tok, pnan, B, S, 0, out, out2), EBT_ERR_NONFINITE);
    CASE(ebt_energy(m, tok, pinf, B, S, 0, out, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_energy(lm, tok, p, B, S, 0, out, NULL), EBT_ERR_UNSUPPORTED);
    for (int i = 0; i < B * S; i += 3) {
        badtok[i] = -1;
        CASE(ebt_energy(m, badtok, p, B, S, 0, out, NULL), EBT_ERR_TOKEN);
        badtok[i] = V;
        CASE(ebt_energy(m, badtok, p, B, S, 0, out, NULL), EBT_ERR_TOKEN);
        badtok[i] = INT32_MIN;
        CASE(ebt_hvp(m, badtok, p, B, S, 0, p, out), EBT_ERR_TOKEN);
        badtok[i] = tok[i];
    }
    /* ebt_hvp */
    CASE(ebt_hvp(NULL, tok, p, B, S, 0, p, out), EBT_ERR_ARG);
    CASE(ebt_hvp(m, tok, p, B, S, 0, NULL, out), EBT_ERR_ARG);
    CASE(ebt_hvp(m, tok, p, B, S, 0, p, NULL), EBT_ERR_ARG);
    CASE(ebt_hvp(m, tok, p, 0, S, 0, p, out), EBT_ERR_ARG);
    CASE(ebt_hvp(m, tok, p, B, MAXS + 1, 0, p, out), EBT_ERR_ARG);
    CASE(ebt_hvp(m, tok, pnan, B, S, 0, p, out), EBT_ERR_NONFINITE);
    CASE(ebt_hvp(m, tok, p, B, S, 0, pinf, out), EBT_ERR_NONFINITE);
    CASE(ebt_hvp(lm, tok, p, B, S, 0, p, out), EBT_ERR_UNSUPPORTED);
    /* ebt_energy_backward / ebt_mixed_backward: the gradients must not move */
    CASE(ebt_energy_backward(NULL, tok, p, B, S, 0, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_energy_backward(m, NULL, p, B, S, 0, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_energy_backward(m, tok, pnan, B, S, 0, w, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_energy_backward(m, tok, p, B, S, 0, wnan, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_energy_backward(m, tok, p, -2, S, 0, w, NULL), EBT_ERR_ARG);
    CASE(ebt_energy_backward(m, badtok, p, B, MAXS + 1, 0, w, NULL), EBT_ERR_ARG);
    CASE(ebt_mixed_backward(NULL, tok, p, B, S, 0, p, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_mixed_backward(m, tok, p, B, S, 0, NULL, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_mixed_backward(m, tok, p, B, S, 0, pnan, NULL, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_mixed_backward(m, tok, pinf, B, S, 0, p, NULL, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_mixed_backward(m, tok, p, B, 0, 0, p, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_mixed_backward(lm, tok, p, B, S, 0, p, NULL, NULL), EBT_ERR_UNSUPPORTED);
    badtok[1] = V + 100;
    CASE(ebt_mixed_backward(m, badtok, p, B, S, 0, p, NULL, NULL), EBT_ERR_TOKEN);
    CASE(ebt_energy_backward(m, badtok, p, B, S, 0, NULL, NULL), EBT_ERR_TOKEN);
    badtok[1] = tok[1];
    assert_true(ebt_last_error(m)[0] != 0);
}

static void test_workspace_calls(void **state)
{
    ebt_workspace *x = (ebt_workspace *)&x, *other = NULL;
    ebt_model *m2 = NULL;
    ebt_config c = *ebt_model_config(m);
    (void)state;
    CASE(ebt_workspace_create(NULL, B, S, &x), EBT_ERR_ARG);
    assert_null(x);
    CASE(ebt_workspace_create(m, B, S, NULL), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, 0, S, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, B, -1, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, B, MAXS + 1, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, INT_MAX, MAXS, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, 1 << 26, MAXS, &x), EBT_ERR_NOMEM);  /* about 1 TB */
    CASE(ebt_observe(NULL, m, tok, B, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, NULL, tok, B, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, NULL, B, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B + 1, S, 0), EBT_ERR_ARG);   /* larger than the workspace */
    CASE(ebt_observe(ws, m, tok, B, S + 1, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B, S, -1), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, badtok, 0, S, 0), EBT_ERR_ARG);
    badtok[0] = -7;
    CASE(ebt_observe(ws, m, badtok, B, S, 0), EBT_ERR_TOKEN);
    badtok[0] = tok[0];
    /* a failed observe leaves the workspace unprepared */
    CASE(ebt_ws_energy(ws, p, out, NULL), EBT_ERR_STATE);
    assert_true(ebt_ws_last_error(ws)[0] != 0);
    assert_int_equal(ebt_create(&c, 5, &m2), EBT_OK);
    CASE(ebt_observe(ws, m2, tok, B, S, 0), EBT_ERR_STATE);   /* workspace of another model */
    ebt_free(m2);
    CASE(ebt_ws_energy(NULL, p, out, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_hvp(NULL, p, p, out, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B, S, 0), EBT_OK);
    CASE(ebt_ws_energy(ws, NULL, out, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_energy(ws, pnan, out, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_ws_hvp(ws, p, NULL, out, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_hvp(ws, p, p, NULL, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_hvp(ws, p, pinf, out, NULL, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_ws_hvp(ws, pinf, p, out, NULL, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_ws_energy(ws, p, out, out2), EBT_OK);
    /* transformer++ models have no energy workspace calls */
    assert_int_equal(ebt_workspace_create(lm, B, S, &other), EBT_OK);
    CASE(ebt_observe(other, lm, tok, B, S, 0), EBT_ERR_UNSUPPORTED);
    ebt_workspace_free(other);
}

static void test_lm_calls(void **state)
{
    int32_t badtgt[B * S];
    (void)state;
    memcpy(badtgt, tok, sizeof tok);
    CASE(ebt_lm_logits(NULL, tok, B, S, out), EBT_ERR_ARG);
    CASE(ebt_lm_logits(lm, NULL, B, S, out), EBT_ERR_ARG);
    CASE(ebt_lm_logits(lm, tok, B, S, NULL), EBT_ERR_ARG);
    CASE(ebt_lm_logits(lm, tok, 0, S, out), EBT_ERR_ARG);
    CASE(ebt_lm_logits(lm, tok, B, -S, out), EBT_ERR_ARG);
    CASE(ebt_lm_logits(lm, tok, B, MAXS + 1, out), EBT_ERR_ARG);
    CASE(ebt_lm_logits(m, tok, B, S, out), EBT_ERR_UNSUPPORTED);
    badtok[2] = V;
    CASE(ebt_lm_logits(lm, badtok, B, S, out), EBT_ERR_TOKEN);
    CASE(ebt_lm_backward(lm, badtok, tok, B, S, out), EBT_ERR_TOKEN);
    badtok[2] = tok[2];
    CASE(ebt_lm_backward(NULL, tok, tok, B, S, out), EBT_ERR_ARG);
    CASE(ebt_lm_backward(lm, tok, NULL, B, S, out), EBT_ERR_ARG);
    CASE(ebt_lm_backward(lm, tok, tok, B, S, NULL), EBT_ERR_ARG);
    CASE(ebt_lm_backward(lm, tok, tok, 0, S, out), EBT_ERR_ARG);
    badtgt[B * S - 1] = -1;
    CASE(ebt_lm_backward(lm, tok, badtgt, B, S, out), EBT_ERR_TOKEN);
    badtgt[B * S - 1] = V;
    CASE(ebt_lm_backward(lm, tok, badtgt, B, S, out), EBT_ERR_TOKEN);
    CASE(ebt_lm_backward(m, tok, tok, B, S, out), EBT_ERR_UNSUPPORTED);
}

static void test_file_calls(void **state)
{
    ebt_model *x = (ebt_model *)&x;
    char err[256];
    (void)state;
    CASE(ebt_load(NULL, &x), EBT_ERR_ARG);
    CASE(ebt_load("ref/a.safetensors", NULL), EBT_ERR_ARG);
    CASE(ebt_load_ex("/nonexistent/dir/x.safetensors", &x, err, sizeof err), EBT_ERR_IO);
    assert_null(x);
    assert_true(strstr(err, "/nonexistent/dir/x.safetensors") != NULL);
    CASE(ebt_save(NULL, "x.safetensors"), EBT_ERR_ARG);
    CASE(ebt_save(m, NULL), EBT_ERR_ARG);
    CASE(ebt_save_ex(m, "/nonexistent/dir/x.safetensors", err, sizeof err), EBT_ERR_IO);
    assert_true(err[0] != 0);
    printf("  %d bad-argument cases, each with the models' hash unchanged\n", ncases);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_and_create),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_energy_calls),
        cmocka_unit_test(test_workspace_calls),
        cmocka_unit_test(test_lm_calls),
        cmocka_unit_test(test_file_calls),
    };
    return cmocka_run_group_tests_name("bad input", tests, setup, teardown);
}
