/* Training through the thinking loop (SPEC 5) against the PyTorch
 * reference (tests/ref/gen_train_ref.py): loss and every gradient,
 * including alpha's, in the modes detach, truncate and full. Also: a
 * short real training run lowers the loss; a stopped and resumed run gives
 * the same losses bit for bit; a non-finite step is refused and leaves the
 * model and optimiser unchanged. */
#define _POSIX_C_SOURCE 200809L
#include "../ebt.h"
#include "test_util.h"
#include "ref_vectors.h"

/* The double build (make: build/test_train_double, -DEBT_DOUBLE) matches
 * the float64 reference to about 1e-12: the math is exact. The float32
 * build loses more than the energy tests: the thinking chain amplifies
 * rounding (H_pp v entries reach ~1e3 against gradients ~10, and
 * pbar = ybar + H v cancels), by an amount that depends on the BLAS
 * kernels. Measured in float32 (weights; alpha, one scalar summed over
 * every position and step): OpenBLAS SkylakeX kernels 2.5e-5, 4.7e-5;
 * Haswell 3.1e-5, 5.2e-5; Sandybridge (no FMA) 2.6e-4, 5.2e-4. The float
 * bounds, 1e-3 and 2e-3, leave a factor 4 over the worst of these;
 * exactness is what the double build checks. */
#ifdef EBT_DOUBLE
#define TOL 1e-9
#define TOL_ALPHA 1e-9
#else
#define TOL 1e-3
#define TOL_ALPHA 2e-3
#endif

static void check_train_cfg(const char *cfg)
{
    static const char *modes[] = { "detach", "truncate", "full" };
    char name[32];
    ref_file f;
    int ok = 1;
    snprintf(name, sizeof name, "train_%s.txt", cfg);
    ebt_model *m = ref_open(name, cfg, &f);
    int B = (int)ref_need(&f, "B", 1)->x[0], S = (int)ref_need(&f, "S", 1)->x[0], K = (int)ref_need(&f, "K", 1)->x[0];
    int V = ebt_model_config(m)->vocab_size, N = B * S;
    int32_t *tok = malloc(sizeof *tok * N), *tgt = malloc(sizeof *tgt * N);
    ebt_real *y0 = malloc(sizeof *y0 * N * V), *u = malloc(sizeof *u * N);
    const ref_rec *r;
    r = ref_need(&f, "tokens", N); for (int i = 0; i < N; i++) tok[i] = (int32_t)r->x[i];
    r = ref_need(&f, "targets", N); for (int i = 0; i < N; i++) tgt[i] = (int32_t)r->x[i];
    r = ref_need(&f, "init_logits", (size_t)N * V); for (int i = 0; i < N * V; i++) y0[i] = (ebt_real)r->x[i];
    r = ref_need(&f, "alpha_mult", N); for (int i = 0; i < N; i++) u[i] = (ebt_real)r->x[i];
    for (int md = 0; md < 3; md++) {
        ebt_train_opts o = ebt_train_default();
        ebt_train_stats st;
        char key[160];
        o.mode = (ebt_mode)md;
        o.k_min = o.k_max = K;
        printf("config %s, mode %s (B=%d S=%d K=%d)\n", cfg, modes[md], B, S, K);
        assert_int_equal(ebt_train_grad(m, &o, tok, tgt, B, S, y0, u, &st), EBT_OK);
        ebt_real loss = (ebt_real)st.loss, ce[2] = { (ebt_real)st.ce_first, (ebt_real)st.ce_last };
        ebt_real en[2] = { (ebt_real)st.energy_first, (ebt_real)st.energy_last };
        double ref_ce[2], ref_en[2];
        snprintf(key, sizeof key, "%s.loss", modes[md]);
        ok &= check_close(key, &loss, ref_need(&f, key, 1)->x, 1, TOL);
        /* the statistics: cross-entropy after step 1 and K, mean energy at p_0 and p_{K-1} */
        snprintf(key, sizeof key, "%s.ce", modes[md]);
        r = ref_need(&f, key, (size_t)K); ref_ce[0] = r->x[0]; ref_ce[1] = r->x[K - 1];
        ok &= check_close("ce_first, ce_last", ce, ref_ce, 2, TOL);
        snprintf(key, sizeof key, "%s.energy_mean", modes[md]);
        r = ref_need(&f, key, (size_t)K); ref_en[0] = r->x[0]; ref_en[1] = r->x[K - 1];
        ok &= check_close("energy_first, energy_last", en, ref_en, 2, TOL);
        ok &= st.k == K && st.step == 0 && st.alpha == *ebt_param(m, "alpha", NULL);
        for (int t = 0; t < ebt_n_tensors(m); t++) {
            const char *name = ebt_tensor_name(m, t);
            size_t cnt;
            ebt_real *g = ebt_grad(m, name, &cnt);
            snprintf(key, sizeof key, "%s.grad.%s", modes[md], name);
            ok &= check_close(key, g, ref_need(&f, key, cnt)->x, cnt, strcmp(name, "alpha") ? TOL : TOL_ALPHA);
        }
    }
    free(tok); free(tgt); free(y0); free(u);
    ebt_free(m);
    ref_free(&f);
    assert_true(ok);
}

static void test_train_ref_step_tied(void **s) { (void)s; check_train_cfg("a"); }
static void test_train_ref_plain(void **s) { (void)s; check_train_cfg("b"); }

/* a tiny byte-level corpus and batches drawn from it */
static const char corpus[] =
    "the quick brown fox jumps over the lazy dog. the lazy dog sleeps. the fox runs away. "
    "a quick brown dog jumps over the lazy fox. the dog and the fox are friends now. ";

static void batch(int32_t *tok, int32_t *tgt, int B, int S, unsigned seed)
{
    int n = (int)strlen(corpus);
    for (int b = 0; b < B; b++) {
        int at = (int)((seed * 2654435761u + (unsigned)b * 40503u) % (unsigned)(n - S - 1));
        for (int i = 0; i < S; i++) {
            tok[b * S + i] = (unsigned char)corpus[at + i] % 64;
            tgt[b * S + i] = (unsigned char)corpus[at + i + 1] % 64;
        }
    }
}

static ebt_model *small(ebt_arch arch)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.arch = arch; c.vocab_size = 64; c.d_model = 32; c.n_heads = 2; c.d_ff = 32; c.n_layers = 2; c.max_seq_len = 16;
    c.alpha = 2;
    assert_int_equal(ebt_create(&c, 3, &m), EBT_OK);
    return m;
}

/* a short real run lowers the loss (EBT: cross-entropy after the last thinking step) */
static void check_learns(ebt_arch arch)
{
    ebt_model *m = small(arch);
    ebt_train_opts o = ebt_train_default();
    ebt_train_stats st;
    int32_t tok[8 * 16], tgt[8 * 16];
    double first = 0, last = 0;
    o.lr = 3e-3; o.warmup_steps = 10; o.total_steps = 150; o.k_min = 2; o.k_max = 3; o.alpha_rand = 2;
    o.replay_capacity = 32; o.replay_frac = 0.25;
    for (int s = 0; s < 150; s++) {
        batch(tok, tgt, 8, 16, (unsigned)s);
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, 8, 16, NULL, &st), EBT_OK);
        if (s < 10) first += st.ce_last / 10;
        if (s >= 140) last += st.ce_last / 10;
    }
    printf("  %s: cross-entropy %.3f -> %.3f nats over 150 steps (alpha %.3f)\n",
           arch == EBT_ARCH_EBT ? "ebt" : "transformer++", first, last, st.alpha);
    assert_true(last < first - 0.5);
    /* the printed alpha: learnt (moved from its initial 2) for ebt, 0 for transformer++ */
    if (arch == EBT_ARCH_EBT) assert_true(isfinite(st.alpha) && st.alpha > 0 && fabs(st.alpha - 2) > 1e-3);
    else assert_true(st.alpha == 0);
    assert_int_equal(ebt_train_steps_done(m), 150);
    ebt_free(m);
}

static void test_learns_ebt(void **s) { (void)s; check_learns(EBT_ARCH_EBT); }
static void test_learns_transformer(void **s) { (void)s; check_learns(EBT_ARCH_TRANSFORMER); }

#ifndef EBT_DOUBLE
/* stopped after 4 steps, saved, loaded and resumed: the same losses, bit for
 * bit, as an uninterrupted run, with every source of randomness on */
static void check_resume(ebt_arch arch)
{
    ebt_train_opts o = ebt_train_default();
    ebt_train_stats st;
    int32_t tok[4 * 16], tgt[4 * 16];
    double a[8], b[8];
    char dir[256], path[300];
    ebt_model *m = small(arch), *r = NULL;
    test_tmpdir(dir, sizeof dir, "train");
    snprintf(path, sizeof path, "%s/resume.safetensors", dir);
    o.k_min = 1; o.k_max = 3; o.alpha_rand = 2; o.noise = 0.1; o.replay_capacity = 6; o.replay_frac = 0.5;
    o.warmup_steps = 2; o.total_steps = 8; o.mode = EBT_MODE_TRUNCATE;
    for (int s = 0; s < 8; s++) {
        batch(tok, tgt, 4, 16, (unsigned)s);
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, 4, 16, NULL, &st), EBT_OK);
        a[s] = st.loss;
    }
    ebt_free(m);
    m = small(arch);
    for (int s = 0; s < 4; s++) {
        batch(tok, tgt, 4, 16, (unsigned)s);
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, 4, 16, NULL, &st), EBT_OK);
        b[s] = st.loss;
    }
    assert_int_equal(ebt_save(m, path), EBT_OK);
    ebt_free(m);
    assert_int_equal(ebt_load(path, &r), EBT_OK);
    assert_int_equal(ebt_train_steps_done(r), 4);
    for (int s = 4; s < 8; s++) {
        batch(tok, tgt, 4, 16, (unsigned)s);
        assert_int_equal(ebt_train_step(r, &o, tok, tgt, 4, 16, NULL, &st), EBT_OK);
        b[s] = st.loss;
    }
    assert_memory_equal(a, b, sizeof a);
    ebt_free(r);
    test_rmdir(dir);
}

static void test_resume_ebt(void **s) { (void)s; check_resume(EBT_ARCH_EBT); }
static void test_resume_transformer(void **s) { (void)s; check_resume(EBT_ARCH_TRANSFORMER); }

/* a step whose update is not finite is refused; the model, its optimiser
 * state and replay buffer are unchanged (the saved file is the same) and
 * training goes on */
static void test_nonfinite_refused(void **state)
{
    ebt_model *m = small(EBT_ARCH_EBT);
    ebt_train_opts o = ebt_train_default(), huge;
    ebt_train_stats st;
    int32_t tok[4 * 16], tgt[4 * 16];
    static ebt_real y0[4 * 16 * 64];
    char dir[256], path[300];
    (void)state;
    test_tmpdir(dir, sizeof dir, "train");
    snprintf(path, sizeof path, "%s/nonfinite.safetensors", dir);
    o.replay_capacity = 8; o.replay_frac = 0.5; o.warmup_steps = 0;
    for (int s = 0; s < 3; s++) {
        batch(tok, tgt, 4, 16, (unsigned)s);
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, 4, 16, NULL, &st), EBT_OK);
    }
    assert_int_equal(ebt_save(m, path), EBT_OK);
    uint64_t before = test_hash_file(path);
    assert_true(before != 0);   /* the file is there */
    huge = o;
    huge.lr = 1e300; huge.min_lr = 1e300; huge.grad_clip = 0;
    assert_int_equal(ebt_train_step(m, &huge, tok, tgt, 4, 16, NULL, &st), EBT_ERR_NONFINITE);
    assert_true(ebt_last_error(m)[0] != 0);
    for (int i = 0; i < 4 * 16 * 64; i++) y0[i] = (ebt_real)test_normal();
    y0[77] = (ebt_real)NAN;   /* poisoned input */
    assert_int_equal(ebt_train_step(m, &o, tok, tgt, 4, 16, y0, &st), EBT_ERR_NONFINITE);
    assert_int_equal(ebt_save(m, path), EBT_OK);
    assert_true(test_hash_file(path) == before);
    assert_int_equal(ebt_train_steps_done(m), 3);
    assert_int_equal(ebt_train_step(m, &o, tok, tgt, 4, 16, NULL, &st), EBT_OK);   /* training goes on */
    assert_int_equal(ebt_train_steps_done(m), 4);
    ebt_free(m);
    test_rmdir(dir);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_ref_step_tied),
        cmocka_unit_test(test_train_ref_plain),
        cmocka_unit_test(test_learns_ebt),
        cmocka_unit_test(test_learns_transformer),
#ifndef EBT_DOUBLE /* checkpoints hold float32: resume and refusal are properties of the float build */
        cmocka_unit_test(test_resume_ebt),
        cmocka_unit_test(test_resume_transformer),
        cmocka_unit_test(test_nonfinite_refused),
#endif
    };
    return cmocka_run_group_tests_name("training (SPEC 5)", tests, NULL, NULL);
}
