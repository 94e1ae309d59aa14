#define _POSIX_C_SOURCE 200809L
/* Training in parts: ebt_train_step is ebt_zero_grad + ebt_train_accumulate
 * + ebt_train_apply bit for bit; a batch split into micro-batches gives the
 * gradients of the whole (within float rounding), with every source of
 * randomness on, replay included; and the model's metadata survives a
 * save and a load. */
#include "../ebt.h"
#include "test_util.h"
#include <unistd.h>

enum { V = 11, B = 6, S = 5, N = B * S };

static ebt_model *make(void)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.vocab_size = V; c.d_model = 16; c.n_heads = 2; c.d_ff = 16; c.n_layers = 2; c.max_seq_len = 8; c.alpha = 0.3;
    c.n_step_embed = 2;
    assert_int_equal(ebt_create(&c, 5, &m), EBT_OK);
    return m;
}

static void batch(int32_t *tok, int32_t *tgt, unsigned seed)
{
    for (int i = 0; i < N; i++) { tok[i] = (int32_t)((seed * 7 + i * 3) % V); tgt[i] = (int32_t)((seed * 5 + i * 2 + 1) % V); }
}

static ebt_train_opts opts(void)
{
    ebt_train_opts o = ebt_train_default();
    o.mode = EBT_MODE_TRUNCATE; o.k_min = 2; o.k_max = 3; o.noise = 0.5; o.alpha_rand = 2;
    o.replay_capacity = 8; o.replay_frac = 0.25;
    return o;
}

/* train_step == zero_grad + accumulate + apply, bit for bit, over 3 steps */
static void test_step_is_composition(void **state)
{
    ebt_model *a = make(), *b = make();
    ebt_train_opts o = opts();
    int32_t tok[N], tgt[N];
    (void)state;
    for (int k = 0; k < 3; k++) {
        ebt_train_stats sa, sb;
        batch(tok, tgt, (unsigned)k);
        assert_int_equal(ebt_train_step(a, &o, tok, tgt, B, S, NULL, &sa), EBT_OK);
        ebt_zero_grad(b);
        assert_int_equal(ebt_train_accumulate(b, &o, tok, tgt, B, S, 0, 1.0, NULL, NULL), EBT_OK);
        assert_int_equal(ebt_train_apply(b, &o, &sb), EBT_OK);
        assert_true(test_hash_params(a) == test_hash_params(b));
        assert_true(sa.loss == sb.loss && sa.grad_norm == sb.grad_norm && sa.k == sb.k && sa.step == sb.step);
    }
    ebt_free(a); ebt_free(b);
}

/* three micro-batches of 2 = the batch of 6, replay on (the ring filled by two steps) */
static void test_split_with_replay(void **state)
{
    ebt_model *m = make();
    ebt_train_opts o = opts();
    int32_t tok[N], tgt[N];
    size_t n;
    double worst = 0, scale = 0;
    (void)state;
    for (int k = 0; k < 2; k++) {
        batch(tok, tgt, 10u + (unsigned)k);
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, B, S, NULL, NULL), EBT_OK);
    }
    batch(tok, tgt, 20);
    assert_int_equal(ebt_train_grad(m, &o, tok, tgt, B, S, NULL, NULL, NULL), EBT_OK);
    ebt_real *g = ebt_train_buffer(m, &n), *whole = malloc(n * sizeof *whole);
    memcpy(whole, g, n * sizeof *whole);
    ebt_zero_grad(m);
    for (int p = 0; p < 3; p++)
        assert_int_equal(ebt_train_accumulate(m, &o, tok + 2 * p * S, tgt + 2 * p * S, 2, S, 2 * p, 1.0 / 3, NULL, NULL), EBT_OK);
    for (size_t i = 0; i < n; i++) { worst = fmax(worst, fabs((double)g[i] - whole[i])); scale = fmax(scale, fabs(whole[i])); }
    printf("  3 micro-batches of 2 against the batch of 6 (replay on): max |dg| / max |g| = %.2e\n", worst / scale);
    assert_true(worst <= 1e-5 * scale);
    free(whole);
    ebt_free(m);
}

/* metadata: set, replace, remove, refused keys and values, saved and loaded */
static void test_metadata(void **state)
{
    ebt_model *m = make(), *r = NULL;
    char dir[] = "/tmp/ebt_meta.XXXXXX", path[64];
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    assert_int_equal(ebt_meta_set(m, "recipe", "s1"), EBT_OK);
    assert_int_equal(ebt_meta_set(m, "recipe", "s2"), EBT_OK);
    assert_int_equal(ebt_meta_set(m, "think.steps", "3"), EBT_OK);
    assert_int_equal(ebt_meta_set(m, "gone", "x"), EBT_OK);
    assert_int_equal(ebt_meta_set(m, "gone", NULL), EBT_OK);
    assert_int_equal(ebt_meta_set(m, "bad key", "x"), EBT_ERR_ARG);
    assert_int_equal(ebt_meta_set(m, "k", "line\nbreak"), EBT_ERR_ARG);
    assert_int_equal(ebt_meta_set(m, "", "x"), EBT_ERR_ARG);
    assert_int_equal(ebt_meta_set(NULL, "k", "x"), EBT_ERR_ARG);
    assert_int_equal(ebt_meta_count(m), 2);
    assert_int_equal(ebt_save(m, path), EBT_OK);
    assert_int_equal(ebt_load(path, &r), EBT_OK);
    assert_string_equal(ebt_meta_get(r, "recipe"), "s2");
    assert_string_equal(ebt_meta_get(r, "think.steps"), "3");
    assert_null(ebt_meta_get(r, "gone"));
    assert_null(ebt_meta_key(r, 2));
    unlink(path); rmdir(dir);
    ebt_free(m); ebt_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_is_composition), cmocka_unit_test(test_split_with_replay), cmocka_unit_test(test_metadata),
    };
    return cmocka_run_group_tests_name("training in parts", tests, NULL, NULL);
}
