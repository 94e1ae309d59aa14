/* The float32 library against the independent PyTorch reference
 * (tests/ref/gen_ref.py, float64 autograd with double backward). Each
 * configuration's checkpoint was written by the Python script, so this also
 * checks that a PyTorch-written checkpoint loads and gives the same
 * energies. Tolerance: relative error max|got-ref|/max|ref| per tensor. */
#include "../ebt.h"
#include "test_util.h"
#include "ref_vectors.h"

#define TOL_E 1e-5   /* energies, dE/dp, dE/dtheta, logits, loss */
#define TOL_2 1e-5   /* second order: H v and the mixed term */

/* the model's gradients against records "<prefix>.<tensor name>" (alpha has none) */
static int check_grads(ebt_model *m, const ref_file *f, const char *prefix, double tol)
{
    int ok = 1;
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        const char *name = ebt_tensor_name(m, t);
        char key[128];
        size_t cnt;
        if (strcmp(name, "alpha") == 0) continue;
        snprintf(key, sizeof key, "%s.%s", prefix, name);
        ebt_real *gr = ebt_grad(m, name, &cnt);
        ok &= check_close(key, gr, ref_need(f, key, cnt)->x, cnt, tol);
    }
    return ok;
}

static void to_real(ebt_real *dst, const ref_rec *r) { for (size_t i = 0; i < r->n; i++) dst[i] = (ebt_real)r->x[i]; }

static void check_ebt_cfg(const char *cfg)
{
    char name[32];
    ref_file f;
    int ok = 1;
    snprintf(name, sizeof name, "%s.txt", cfg);
    ebt_model *m = ref_open(name, cfg, &f);
    const ebt_config *c = ebt_model_config(m);
    int B = (int)ref_need(&f, "B", 1)->x[0], S = (int)ref_need(&f, "S", 1)->x[0], step = (int)ref_need(&f, "step", 1)->x[0];
    size_t n = (size_t)B * S * c->vocab_size;
    const ref_rec *rt = ref_need(&f, "tokens", (size_t)B * S);
    int32_t *tok = malloc(sizeof *tok * (size_t)B * S);
    ebt_real *p = malloc(n * sizeof *p), *v = malloc(n * sizeof *v), *g = malloc(n * sizeof *g), *hv = malloc(n * sizeof *hv);
    ebt_real *E = malloc(sizeof *E * (size_t)B * S);
    for (int i = 0; i < B * S; i++) tok[i] = (int32_t)rt->x[i];
    to_real(p, ref_need(&f, "probs", n));
    to_real(v, ref_need(&f, "v", n));
    printf("config %s: V=%d D=%d L=%d H=%d F=%d step_embed=%d tied=%d B=%d S=%d\n", cfg, c->vocab_size, c->d_model,
           c->n_layers, c->n_heads, c->d_ff, c->n_step_embed, c->tie_pred_embed, B, S);

    assert_int_equal(ebt_energy(m, tok, p, B, S, step, E, g), EBT_OK);
    ok &= check_close("energy", E, ref_need(&f, "energy", (size_t)B * S)->x, (size_t)B * S, TOL_E);
    ok &= check_close("dE/dp", g, ref_need(&f, "grad_probs", n)->x, n, TOL_E);
    assert_int_equal(ebt_hvp(m, tok, p, B, S, step, v, hv), EBT_OK);
    ok &= check_close("H_pp v", hv, ref_need(&f, "hvp", n)->x, n, TOL_2);

    ebt_zero_grad(m);
    assert_int_equal(ebt_energy_backward(m, tok, p, B, S, step, NULL, NULL), EBT_OK);
    ok &= check_grads(m, &f, "grad", TOL_E);
    ebt_zero_grad(m);
    assert_int_equal(ebt_mixed_backward(m, tok, p, B, S, step, v, NULL, NULL), EBT_OK);
    ok &= check_grads(m, &f, "mixed", TOL_2);
    free(tok); free(p); free(v); free(g); free(hv); free(E);
    ebt_free(m);
    ref_free(&f);
    assert_true(ok);
}

static void test_ref_step_tied(void **state) { (void)state; check_ebt_cfg("a"); }
static void test_ref_plain(void **state) { (void)state; check_ebt_cfg("b"); }

static void test_ref_transformer(void **state)
{
    ref_file f;
    int ok = 1;
    (void)state;
    ebt_model *m = ref_open("c.txt", "c", &f);
    const ebt_config *c = ebt_model_config(m);
    int B = (int)ref_need(&f, "B", 1)->x[0], S = (int)ref_need(&f, "S", 1)->x[0], V = c->vocab_size;
    size_t n = (size_t)B * S * V;
    const ref_rec *rt = ref_need(&f, "tokens", (size_t)B * S), *rg = ref_need(&f, "targets", (size_t)B * S);
    int32_t tok[64], tgt[64];
    ebt_real *logits = malloc(n * sizeof *logits), loss;
    assert_true(B * S <= 64);
    for (int i = 0; i < B * S; i++) { tok[i] = (int32_t)rt->x[i]; tgt[i] = (int32_t)rg->x[i]; }
    printf("config c (transformer++): V=%d D=%d L=%d B=%d S=%d\n", V, c->d_model, c->n_layers, B, S);
    assert_int_equal(ebt_lm_logits(m, tok, B, S, logits), EBT_OK);
    ok &= check_close("logits", logits, ref_need(&f, "logits", n)->x, n, TOL_E);
    ebt_zero_grad(m);
    assert_int_equal(ebt_lm_backward(m, tok, tgt, B, S, &loss), EBT_OK);
    ok &= check_close("loss", &loss, ref_need(&f, "loss", 1)->x, 1, TOL_E);
    ok &= check_grads(m, &f, "grad", TOL_E);
    free(logits);
    ebt_free(m);
    ref_free(&f);
    assert_true(ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_step_tied),
        cmocka_unit_test(test_ref_plain),
        cmocka_unit_test(test_ref_transformer),
    };
    return cmocka_run_group_tests_name("PyTorch reference vectors (float32)", tests, NULL, NULL);
}
