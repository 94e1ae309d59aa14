/* Bad input: every public function of ebt.h, given NULL pointers (each
 * pointer argument separately), zero, negative or overflowing sizes, token
 * ids outside [0, V) (tokens, targets, prompts, appended tokens), sequences
 * longer than max_seq_len or the workspace, B above the workspace, NaN/Inf
 * in its inputs, options out of range (think, generation, training,
 * config), workspaces not prepared or of another model, or the wrong arch,
 * returns the specific error code the header documents (no crash, no
 * abort) and leaves every model unchanged: parameters, gradients and the
 * training state (AdamW moments, step count, replay buffer).
 *
 * The file includes ebt.c to hash that training state, which the public
 * API does not expose. A case that fails is reported with its line and the
 * test fails at the end of its group, so one bug does not hide the others.
 *
 * The library allocates through a hook that refuses any single request
 * above 1 GiB: the ~1 TB workspace below then fails on every machine (with
 * memory overcommit a real malloc of that size can succeed). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#define BI_ALLOC_CAP ((size_t)1 << 30)
static void *bi_malloc(size_t n) { return n > BI_ALLOC_CAP ? NULL : malloc(n); }
static void *bi_realloc(void *p, size_t n) { return n > BI_ALLOC_CAP ? NULL : realloc(p, n); }
#define EBT_MALLOC(sz) bi_malloc(sz)
#define EBT_REALLOC(p, sz) bi_realloc(p, sz)
#define EBT_FREE(p) free(p)
#include "../ebt.c"
#include <limits.h>
#include "test_util.h"

enum { B = 2, S = 4, V = 9, MAXS = 6, R = 2, NGEN = 3 };

static ebt_model *m;     /* arch ebt with a step embedding */
static ebt_model *m0;    /* arch ebt without one (tied candidate embedding): appends, KV cache */
static ebt_model *lm;    /* transformer++ */
static ebt_workspace *ws, *ws0, *ws1, *wslm, *wsfresh;
static ebt_train_opts topt;  /* the options of the setup's training steps */
static int32_t tok[B * S], tgt[B * S], badtok[B * S];
static ebt_real p[B * S * V], pnan[B * S * V], pinf[B * S * V], pninf[B * S * V];
static ebt_real out[R * B * S * V], out2[R * B * S * V];
static ebt_real w[B * S], wnan[B * S], winf[B * S];
static ebt_real y0[R * B * S * V], y0nan[R * B * S * V], y0inf[R * B * S * V];
static ebt_real am[B * S], amnan[B * S], aminf[B * S];
static int ncases, nfail;
static char desc[256];

/* ---- the state every case must leave unchanged ------------------------ */

/* config, parameters, gradients (unless with_grads is 0), AdamW moments,
 * step count and the filled entries of the replay ring */
static uint64_t hash_model(const ebt_model *x, int with_grads)
{
    const ebt_config *c = &x->cfg;
    int ci[9] = { (int)c->arch, c->vocab_size, c->d_model, c->n_layers, c->n_heads, c->d_ff,
                  c->max_seq_len, c->n_step_embed, c->tie_pred_embed };
    double cd[3] = { c->rope_theta, c->norm_eps, c->alpha };
    int rb[4] = { x->rb.cap, x->rb.count, x->rb.next, x->rb.S };
    size_t nrb = (size_t)x->rb.count * (size_t)x->rb.S;
    uint64_t h = TEST_FNV0;
    h = test_fnv(h, ci, sizeof ci);
    h = test_fnv(h, cd, sizeof cd);
    h = test_fnv(h, x->params, x->n_params * sizeof(ebt_real));
    if (with_grads) h = test_fnv(h, x->grads, x->n_params * sizeof(ebt_real));
    h = test_fnv(h, &x->opt.step, sizeof x->opt.step);
    h = test_fnv(h, rb, sizeof rb);
    if (x->opt.m) {
        h = test_fnv(h, x->opt.m, x->n_params * sizeof(ebt_real));
        h = test_fnv(h, x->opt.v, x->n_params * sizeof(ebt_real));
    } else {
        h = test_fnv(h, "no optimiser state", 18);
    }
    if (nrb) {
        h = test_fnv(h, x->rb.tok, nrb * sizeof(int32_t));
        h = test_fnv(h, x->rb.tgt, nrb * sizeof(int32_t));
        h = test_fnv(h, x->rb.y, nrb * (size_t)c->vocab_size * sizeof(ebt_real));
    }
    return h;
}

enum { NMODELS = 3 };
static ebt_model **const models[NMODELS] = { &m, &m0, &lm };
static const char *const model_names[NMODELS] = { "m (ebt, step embed)", "m0 (ebt)", "lm (transformer++)" };

/* hashes of all models; the gradients of `grads_may_change` are left out */
static void hash_all(uint64_t h[NMODELS], const ebt_model *grads_may_change)
{
    for (int i = 0; i < NMODELS; i++) h[i] = hash_model(*models[i], *models[i] != grads_may_change);
}

/* is_cond: `got` is a condition's truth (EBT_OK if it holds) */
static void check_case(const char *what, int line, ebt_status got, ebt_status want,
                       const uint64_t before[NMODELS], const ebt_model *grads_may_change, int is_cond)
{
    uint64_t after[NMODELS];
    ncases++;
    hash_all(after, grads_may_change);
    if (got != want) {
        nfail++;
        fflush(stderr);
        if (is_cond) printf("  FAIL line %d: %s does not hold\n", line, what);
        else printf("  FAIL line %d: %s -> %s, expected %s\n", line, what, ebt_status_str(got), ebt_status_str(want));
    }
    for (int i = 0; i < NMODELS; i++)
        if (after[i] != before[i]) {
            nfail++;
            printf("  FAIL line %d: %s changed model %s\n", line, what, model_names[i]);
        }
    fflush(stdout);
}

/* Gradients that a call zeroes must be seen to change: a model whose
 * gradients are all zero (after a case that zeroed them) gets a fixed
 * non-zero pattern before the next case. */
static void refill_zero_grads(void)
{
    for (int i = 0; i < NMODELS; i++) {
        ebt_model *x = *models[i];
        size_t j = 0;
        while (j < x->n_params && x->grads[j] == 0) j++;
        if (j < x->n_params) continue;
        for (j = 0; j < x->n_params; j++) x->grads[j] = (ebt_real)(1e-3 * (double)(j % 7 + 1));
    }
}

/* evaluates call, checks its status and that no model changed */
#define CASE_X(what, call, want, grads_may_change) do {                        \
        uint64_t h_[NMODELS];                                                  \
        refill_zero_grads();                                                   \
        hash_all(h_, (grads_may_change));                                      \
        check_case((what), __LINE__, (call), (want), h_, (grads_may_change), 0);  \
    } while (0)
#define CASE(call, want) CASE_X(#call, call, want, NULL)
#define CASED(what, call, want) CASE_X(what, call, want, NULL)
/* a condition about a call that returns no status (the models must not change either) */
#define CHECK(cond) do {                                                       \
        uint64_t h_[NMODELS];                                                  \
        hash_all(h_, NULL);                                                    \
        check_case(#cond, __LINE__, (cond) ? EBT_OK : EBT_ERR_ARG, EBT_OK, h_, NULL, 1); \
    } while (0)
/* every case of a group ran; fail the group if any did not hold */
static int group_start;
#define END_GROUP() do { int f_ = nfail; nfail = 0;                            \
        printf("  %d cases\n", ncases - group_start); group_start = ncases;    \
        assert_int_equal(f_, 0); } while (0)

/* ---- fixtures ---------------------------------------------------------- */

static int setup(void **state)
{
    ebt_config c = ebt_config_default();
    ebt_train_stats ts;
    (void)state;
    c.vocab_size = V; c.d_model = 8; c.n_heads = 2; c.d_ff = 8; c.n_layers = 2; c.max_seq_len = MAXS;
    c.n_step_embed = 2;
    if (ebt_create(&c, 1, &m) != EBT_OK) return -1;
    c.n_step_embed = 0; c.tie_pred_embed = 1;
    if (ebt_create(&c, 3, &m0) != EBT_OK) return -1;
    c.arch = EBT_ARCH_TRANSFORMER;
    if (ebt_create(&c, 2, &lm) != EBT_OK) return -1;
    if (ebt_workspace_create(m, B, S, &ws) != EBT_OK || ebt_workspace_create(m0, B, S, &ws0) != EBT_OK ||
        ebt_workspace_create(m0, 1, MAXS, &ws1) != EBT_OK || ebt_workspace_create(lm, 1, MAXS, &wslm) != EBT_OK ||
        ebt_workspace_create(m0, B, S, &wsfresh) != EBT_OK)
        return -1;
    for (int i = 0; i < B * S; i++) {
        tok[i] = (int32_t)(i % V); badtok[i] = tok[i]; tgt[i] = (int32_t)((i * 5 + 1) % V);
        w[i] = wnan[i] = winf[i] = 1; am[i] = amnan[i] = aminf[i] = 1;
    }
    test_random_probs(p, B * S, V, 1.0);
    memcpy(pnan, p, sizeof p);
    memcpy(pinf, p, sizeof p);
    memcpy(pninf, p, sizeof p);
    pnan[5] = NAN;
    pinf[B * S * V - 1] = INFINITY;
    pninf[0] = -INFINITY;
    wnan[3] = NAN;
    winf[B * S - 1] = -INFINITY;
    amnan[B * S - 1] = NAN;
    aminf[0] = INFINITY;
    for (int i = 0; i < R * B * S * V; i++) y0[i] = y0nan[i] = y0inf[i] = (ebt_real)test_normal();
    y0nan[R * B * S * V - 1] = NAN;   /* in the last start's block */
    y0inf[3] = INFINITY;
    /* non-trivial training state to protect: two AdamW steps with replay on
     * (the second replays one sequence), so moments, step count, replay ring
     * and gradients are all non-zero */
    topt = ebt_train_default();
    topt.replay_capacity = 5;
    topt.replay_frac = 0.5;
    topt.warmup_steps = 1;
    for (int k = 0; k < 2; k++) {
        if (ebt_train_step(m, &topt, tok, tgt, B, S, NULL, &ts) != EBT_OK) return -1;
        if (ebt_train_step(m0, &topt, tok, tgt, B, S, NULL, &ts) != EBT_OK) return -1;
        if (ebt_train_step(lm, &topt, tok, tgt, B, S, NULL, &ts) != EBT_OK) return -1;
    }
    if (m->rb.count != 4 || m0->rb.count != 4 || m->opt.step != 2 || lm->opt.step != 2 || !lm->opt.m) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ebt_workspace_free(ws);
    ebt_workspace_free(ws0);
    ebt_workspace_free(ws1);
    ebt_workspace_free(wslm);
    ebt_workspace_free(wsfresh);
    ebt_free(m);
    ebt_free(m0);
    ebt_free(lm);
    return 0;
}

/* ---- config, create ---------------------------------------------------- */

static void test_config_and_create(void **state)
{
    ebt_config c = ebt_config_default(), ct = ebt_config_default(), bad;
    ebt_model *x = (ebt_model *)&x;
    char err[256];
    (void)state;
    ct.arch = EBT_ARCH_TRANSFORMER;
    CASE(ebt_config_check(&c, err, sizeof err), EBT_OK);
    CASE(ebt_config_check(&ct, err, sizeof err), EBT_OK);
    CASE(ebt_config_check(NULL, err, sizeof err), EBT_ERR_ARG);
    CASE(ebt_config_check(NULL, NULL, 0), EBT_ERR_ARG);
    CASE(ebt_create(NULL, 1, &x), EBT_ERR_ARG);
    CHECK(x == NULL);
    CASE(ebt_create(&c, 1, NULL), EBT_ERR_ARG);
    CASE(ebt_create(NULL, 1, NULL), EBT_ERR_ARG);
    /* each field of c0 set to val: ebt_config_check and ebt_create refuse it */
#define BADCFG(c0, field, val) do { bad = c0; bad.field = val; x = (ebt_model *)&x; err[0] = 0;  \
        snprintf(desc, sizeof desc, "config (%s) %s = %s", bad.arch == EBT_ARCH_EBT ? "ebt" : "transformer++", \
                 #field, #val);                                                                   \
        CASED(desc, ebt_config_check(&bad, err, sizeof err), EBT_ERR_ARG);                        \
        CHECK(err[0] != 0);                                                                       \
        CASED(desc, ebt_config_check(&bad, NULL, 0), EBT_ERR_ARG);                                \
        CASED(desc, ebt_create(&bad, 1, &x), EBT_ERR_ARG);                                        \
        CHECK(x == NULL); } while (0)
    BADCFG(c, arch, (ebt_arch)7); BADCFG(c, arch, (ebt_arch)-1);
    BADCFG(c, vocab_size, 0); BADCFG(c, vocab_size, -3); BADCFG(c, vocab_size, INT_MAX); BADCFG(c, vocab_size, INT_MIN);
    BADCFG(c, d_model, 0); BADCFG(c, d_model, 1); BADCFG(c, d_model, -128); BADCFG(c, d_model, 1 << 30);
    BADCFG(c, n_heads, 0); BADCFG(c, n_heads, -4); BADCFG(c, n_heads, 3);   /* 128 % 3 != 0 */
    BADCFG(c, n_heads, 128);                                                 /* Dh = 1, odd */
    BADCFG(c, n_heads, 256);                                                 /* more heads than width */
    BADCFG(c, n_layers, 0); BADCFG(c, n_layers, -1); BADCFG(c, n_layers, 1 << 20);
    BADCFG(c, d_ff, 0); BADCFG(c, d_ff, -1); BADCFG(c, d_ff, INT_MAX);
    BADCFG(c, max_seq_len, 0); BADCFG(c, max_seq_len, -1); BADCFG(c, max_seq_len, INT_MAX);
    BADCFG(c, n_step_embed, -1); BADCFG(c, n_step_embed, INT_MAX); BADCFG(c, n_step_embed, INT_MIN);
    BADCFG(c, tie_pred_embed, 2); BADCFG(c, tie_pred_embed, -1);
    BADCFG(c, rope_theta, 0); BADCFG(c, rope_theta, -1); BADCFG(c, rope_theta, NAN);
    BADCFG(c, rope_theta, INFINITY); BADCFG(c, rope_theta, -INFINITY);
    BADCFG(c, norm_eps, 0); BADCFG(c, norm_eps, -1e-5); BADCFG(c, norm_eps, NAN);
    BADCFG(c, norm_eps, INFINITY); BADCFG(c, norm_eps, -INFINITY);
    BADCFG(c, alpha, NAN); BADCFG(c, alpha, INFINITY); BADCFG(c, alpha, -INFINITY);
    /* the fields shared by transformer++ */
    BADCFG(ct, vocab_size, 0); BADCFG(ct, vocab_size, INT_MAX);
    BADCFG(ct, d_model, -2); BADCFG(ct, n_heads, 0); BADCFG(ct, n_heads, 3);
    BADCFG(ct, n_layers, 0); BADCFG(ct, d_ff, -1); BADCFG(ct, max_seq_len, 0);
    BADCFG(ct, rope_theta, NAN); BADCFG(ct, norm_eps, 0);
    /* a model too large to address, and RoPE tables too large */
    bad = c; bad.vocab_size = 1 << 24; bad.d_model = 1 << 16; bad.n_heads = 1 << 10;
    CASE(ebt_config_check(&bad, err, sizeof err), EBT_ERR_ARG);
    CASE(ebt_create(&bad, 1, &x), EBT_ERR_ARG);
    bad = c; bad.max_seq_len = 1 << 20; bad.d_model = 1 << 16; bad.n_heads = 1; bad.vocab_size = 2;
    bad.d_ff = 1; bad.n_layers = 1;
    CASE(ebt_config_check(&bad, err, sizeof err), EBT_ERR_ARG);
#undef BADCFG
    END_GROUP();
}

/* ---- functions that return no status ----------------------------------- */

static void test_accessors(void **state)
{
    size_t n = 99;
    (void)state;
    CHECK((n = 99, ebt_param(NULL, "alpha", &n) == NULL && n == 0));
    CHECK((n = 99, ebt_grad(NULL, "alpha", &n) == NULL && n == 0));
    CHECK((n = 99, ebt_param(m, NULL, &n) == NULL && n == 0));
    CHECK((n = 99, ebt_grad(m, NULL, &n) == NULL && n == 0));
    CHECK((n = 99, ebt_param(m, "no.such.tensor", &n) == NULL && n == 0));
    CHECK((n = 99, ebt_grad(lm, "", &n) == NULL && n == 0));
    CHECK(ebt_grad(m, "lm_head.weight", &n) == NULL);       /* not in an ebt model */
    CHECK(ebt_param(lm, "energy_head.weight", &n) == NULL);
    CHECK(ebt_param(lm, "alpha", NULL) == NULL);
    CHECK(ebt_param(m0, "pred_embed.weight", &n) == NULL);  /* tied */
    CHECK(ebt_param(m0, "step_embed.weight", &n) == NULL);  /* no step embedding */
    CHECK(ebt_param(m, "alpha", NULL) != NULL);
    CHECK(ebt_grad(m, "alpha", NULL) != NULL);
    CHECK(ebt_tensor_name(m, -1) == NULL);
    CHECK(ebt_tensor_name(m, INT_MIN) == NULL);
    CHECK(ebt_tensor_name(m, ebt_n_tensors(m)) == NULL);
    CHECK(ebt_tensor_name(NULL, 0) == NULL);
    CHECK(ebt_n_tensors(NULL) == 0);
    CHECK(ebt_n_params(NULL) == 0);
    CHECK(ebt_model_config(NULL) == NULL);
    CHECK(ebt_last_error(NULL) != NULL);
    CHECK(ebt_ws_last_error(NULL) != NULL);
    CHECK(ebt_train_steps_done(NULL) == 0);
    CHECK(ebt_status_str((ebt_status)-1) != NULL);
    CHECK(ebt_status_str((ebt_status)99) != NULL);
    ebt_zero_grad(NULL);
    ebt_free(NULL);
    ebt_workspace_free(NULL);
    END_GROUP();
}

/* ---- energy calls on the model's own workspace ------------------------- */

/* bad token ids at a few positions: every call reading tokens refuses them */
static void bad_tokens_energy(ebt_model *x)
{
    static const int32_t bad[] = { -1, V, INT32_MIN, INT32_MAX, V + 100 };
    static const int at[] = { 0, 3, B * S - 1 };
    for (size_t a = 0; a < sizeof at / sizeof at[0]; a++)
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            badtok[at[a]] = bad[b];
            snprintf(desc, sizeof desc, "tokens[%d] = %d", at[a], (int)bad[b]);
            CASED(desc, ebt_energy(x, badtok, p, B, S, 0, out, out2), EBT_ERR_TOKEN);
            CASED(desc, ebt_hvp(x, badtok, p, B, S, 0, p, out), EBT_ERR_TOKEN);
            CASED(desc, ebt_energy_backward(x, badtok, p, B, S, 0, w, out), EBT_ERR_TOKEN);
            CASED(desc, ebt_mixed_backward(x, badtok, p, B, S, 0, p, out, out2), EBT_ERR_TOKEN);
            badtok[at[a]] = tok[at[a]];
        }
}

/* sizes: zero, negative, S above max_seq_len, products that overflow, negative step */
#define BAD_SIZES(call4) do {                                             \
        static const int bs_[][3] = { { 0, S, 0 }, { -1, S, 0 }, { INT_MIN, S, 0 }, { B, 0, 0 }, \
            { B, -5, 0 }, { B, INT_MIN, 0 }, { B, MAXS + 1, 0 }, { B, INT_MAX, 0 }, \
            { INT_MAX, S, 0 }, { INT_MAX, MAXS, 0 }, { 1 << 28, MAXS, 0 }, { B, S, -1 }, { B, S, INT_MIN } }; \
        for (size_t i_ = 0; i_ < sizeof bs_ / sizeof bs_[0]; i_++) {         \
            int Bx = bs_[i_][0], Sx = bs_[i_][1], stx = bs_[i_][2];          \
            snprintf(desc, sizeof desc, "%s B=%d S=%d step=%d", #call4, Bx, Sx, stx); \
            CASED(desc, call4, EBT_ERR_ARG);                                 \
        }                                                                    \
    } while (0)

static void test_energy_calls(void **state)
{
    (void)state;
    for (int which = 0; which < 2; which++) {
        ebt_model *x = which ? m0 : m;
        /* ebt_energy: NULL model, tokens, probs (energy and grad_probs may be NULL) */
        CASE(ebt_energy(NULL, tok, p, B, S, 0, out, NULL), EBT_ERR_ARG);
        CASE(ebt_energy(x, NULL, p, B, S, 0, out, NULL), EBT_ERR_ARG);
        CASE(ebt_energy(x, tok, NULL, B, S, 0, out, NULL), EBT_ERR_ARG);
        CASE(ebt_energy(x, tok, NULL, B, S, 0, NULL, NULL), EBT_ERR_ARG);
        BAD_SIZES(ebt_energy(x, tok, p, Bx, Sx, stx, out, NULL));
        CASE(ebt_energy(x, tok, pnan, B, S, 0, out, out2), EBT_ERR_NONFINITE);
        CASE(ebt_energy(x, tok, pinf, B, S, 0, out, NULL), EBT_ERR_NONFINITE);
        CASE(ebt_energy(x, tok, pninf, B, S, 0, NULL, out2), EBT_ERR_NONFINITE);
        CASE(ebt_energy(x, tok, pnan, B, S, 0, NULL, NULL), EBT_ERR_NONFINITE);
        /* ebt_hvp: NULL model, tokens, probs, v, hv */
        CASE(ebt_hvp(NULL, tok, p, B, S, 0, p, out), EBT_ERR_ARG);
        CASE(ebt_hvp(x, NULL, p, B, S, 0, p, out), EBT_ERR_ARG);
        CASE(ebt_hvp(x, tok, NULL, B, S, 0, p, out), EBT_ERR_ARG);
        CASE(ebt_hvp(x, tok, p, B, S, 0, NULL, out), EBT_ERR_ARG);
        CASE(ebt_hvp(x, tok, p, B, S, 0, p, NULL), EBT_ERR_ARG);
        BAD_SIZES(ebt_hvp(x, tok, p, Bx, Sx, stx, p, out));
        CASE(ebt_hvp(x, tok, pnan, B, S, 0, p, out), EBT_ERR_NONFINITE);
        CASE(ebt_hvp(x, tok, pninf, B, S, 0, p, out), EBT_ERR_NONFINITE);
        CASE(ebt_hvp(x, tok, p, B, S, 0, pinf, out), EBT_ERR_NONFINITE);
        CASE(ebt_hvp(x, tok, p, B, S, 0, pnan, out), EBT_ERR_NONFINITE);
        /* ebt_energy_backward: NULL model, tokens, probs (weight, energy may be NULL) */
        CASE(ebt_energy_backward(NULL, tok, p, B, S, 0, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_energy_backward(x, NULL, p, B, S, 0, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_energy_backward(x, tok, NULL, B, S, 0, w, out), EBT_ERR_ARG);
        BAD_SIZES(ebt_energy_backward(x, tok, p, Bx, Sx, stx, w, out));
        CASE(ebt_energy_backward(x, tok, pnan, B, S, 0, w, NULL), EBT_ERR_NONFINITE);
        CASE(ebt_energy_backward(x, tok, pinf, B, S, 0, NULL, out), EBT_ERR_NONFINITE);
        CASE(ebt_energy_backward(x, tok, p, B, S, 0, wnan, NULL), EBT_ERR_NONFINITE);
        CASE(ebt_energy_backward(x, tok, p, B, S, 0, winf, out), EBT_ERR_NONFINITE);
        /* ebt_mixed_backward: NULL model, tokens, probs, v (hv, grad_probs may be NULL) */
        CASE(ebt_mixed_backward(NULL, tok, p, B, S, 0, p, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_mixed_backward(x, NULL, p, B, S, 0, p, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_mixed_backward(x, tok, NULL, B, S, 0, p, out, NULL), EBT_ERR_ARG);
        CASE(ebt_mixed_backward(x, tok, p, B, S, 0, NULL, NULL, NULL), EBT_ERR_ARG);
        BAD_SIZES(ebt_mixed_backward(x, tok, p, Bx, Sx, stx, p, out, out2));
        CASE(ebt_mixed_backward(x, tok, pnan, B, S, 0, p, NULL, NULL), EBT_ERR_NONFINITE);
        CASE(ebt_mixed_backward(x, tok, pinf, B, S, 0, p, out, out2), EBT_ERR_NONFINITE);
        CASE(ebt_mixed_backward(x, tok, p, B, S, 0, pnan, NULL, NULL), EBT_ERR_NONFINITE);
        CASE(ebt_mixed_backward(x, tok, p, B, S, 0, pninf, out, NULL), EBT_ERR_NONFINITE);
        bad_tokens_energy(x);
    }
    /* a transformer++ model has no energy */
    CASE(ebt_energy(lm, tok, p, B, S, 0, out, NULL), EBT_ERR_UNSUPPORTED);
    CASE(ebt_hvp(lm, tok, p, B, S, 0, p, out), EBT_ERR_UNSUPPORTED);
    CASE(ebt_energy_backward(lm, tok, p, B, S, 0, NULL, NULL), EBT_ERR_UNSUPPORTED);
    CASE(ebt_mixed_backward(lm, tok, p, B, S, 0, p, NULL, NULL), EBT_ERR_UNSUPPORTED);
    CHECK(ebt_last_error(lm)[0] != 0);
    CHECK(ebt_last_error(m)[0] != 0);
    END_GROUP();
}

/* ---- explicit workspaces ----------------------------------------------- */

static void test_workspace_calls(void **state)
{
    ebt_workspace *x = (ebt_workspace *)&x, *other = NULL;
    ebt_model *m2 = NULL;
    ebt_config c = *ebt_model_config(m);
    (void)state;
    /* ebt_workspace_create: NULL model or out, sizes */
    CASE(ebt_workspace_create(NULL, B, S, &x), EBT_ERR_ARG);
    CHECK(x == NULL);
    CASE(ebt_workspace_create(m, B, S, NULL), EBT_ERR_ARG);
    CASE(ebt_workspace_create(lm, B, S, NULL), EBT_ERR_ARG);
    x = (ebt_workspace *)&x;
    CASE(ebt_workspace_create(m, 0, S, &x), EBT_ERR_ARG);
    CHECK(x == NULL);
    CASE(ebt_workspace_create(m, -1, S, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, INT_MIN, S, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, B, 0, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, B, -1, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, B, INT_MIN, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, B, MAXS + 1, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, B, INT_MAX, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(lm, B, MAXS + 1, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, INT_MAX, MAXS, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, 1 << 28, MAXS, &x), EBT_ERR_ARG);   /* B*S overflows the GEMM ints */
    CASE(ebt_workspace_create(lm, INT_MAX, MAXS, &x), EBT_ERR_ARG);
    CASE(ebt_workspace_create(m, 1 << 26, MAXS, &x), EBT_ERR_NOMEM);  /* about 1 TB: above the hook's cap */
    CHECK(x == NULL);
    /* ebt_observe: NULL workspace, model, tokens; sizes; beyond the workspace */
    CASE(ebt_observe(NULL, m, tok, B, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, NULL, tok, B, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, NULL, B, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B + 1, S, 0), EBT_ERR_ARG);   /* B above the workspace's max_B */
    CASE(ebt_observe(ws, m, tok, B, S + 1, 0), EBT_ERR_ARG);   /* S above its max_S */
    CASE(ebt_observe(ws, m, tok, B, MAXS + 1, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, INT_MAX, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B, INT_MAX, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, 0, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, -1, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, INT_MIN, S, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B, 0, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B, -3, 0), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B, S, -1), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B, S, INT_MIN), EBT_ERR_ARG);
    CASE(ebt_observe(ws0, m0, tok, B, S, -1), EBT_ERR_ARG);
    for (int i = 0; i < B * S; i += 7) {
        badtok[i] = -7;
        CASE(ebt_observe(ws, m, badtok, B, S, 0), EBT_ERR_TOKEN);
        badtok[i] = V;
        CASE(ebt_observe(ws0, m0, badtok, B, S, 0), EBT_ERR_TOKEN);
        badtok[i] = INT32_MAX;
        CASE(ebt_observe(ws, m, badtok, B, S, 0), EBT_ERR_TOKEN);
        badtok[i] = tok[i];
    }
    /* a failed observe leaves the workspace unprepared */
    CASE(ebt_ws_energy(ws, p, out, NULL), EBT_ERR_STATE);
    CHECK(ebt_ws_last_error(ws)[0] != 0);
    CASE(ebt_ws_hvp(ws, p, p, out, NULL, NULL), EBT_ERR_STATE);
    CASE(ebt_ws_energy(ws0, p, out, NULL), EBT_ERR_STATE);
    /* a workspace never observed */
    CASE(ebt_ws_energy(wsfresh, p, out, out2), EBT_ERR_STATE);
    CASE(ebt_ws_energy(wsfresh, p, NULL, NULL), EBT_ERR_STATE);
    CASE(ebt_ws_hvp(wsfresh, p, p, out, NULL, NULL), EBT_ERR_STATE);
    /* a workspace of another model (same config) */
    assert_int_equal(ebt_create(&c, 5, &m2), EBT_OK);
    CASE(ebt_observe(ws, m2, tok, B, S, 0), EBT_ERR_STATE);
    CASE(ebt_observe(ws0, m, tok, B, S, 0), EBT_ERR_STATE);
    CASE(ebt_observe(ws, lm, tok, B, S, 0), EBT_ERR_STATE);
    CASE(ebt_observe(wslm, m0, tok, 1, S, 0), EBT_ERR_STATE);
    ebt_free(m2);
    /* ebt_ws_energy / ebt_ws_hvp: NULL workspace, probs, v, hv; NaN/Inf */
    CASE(ebt_ws_energy(NULL, p, out, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_hvp(NULL, p, p, out, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_observe(ws, m, tok, B, S, 0), EBT_OK);
    CASE(ebt_ws_energy(ws, NULL, out, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_energy(ws, NULL, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_energy(ws, pnan, out, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_ws_energy(ws, pinf, out, out2), EBT_ERR_NONFINITE);
    CASE(ebt_ws_energy(ws, pninf, NULL, out2), EBT_ERR_NONFINITE);
    CASE(ebt_ws_hvp(ws, NULL, p, out, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_hvp(ws, p, NULL, out, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_hvp(ws, p, p, NULL, NULL, NULL), EBT_ERR_ARG);
    CASE(ebt_ws_hvp(ws, p, p, NULL, out, out2), EBT_ERR_ARG);
    CASE(ebt_ws_hvp(ws, p, pinf, out, NULL, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_ws_hvp(ws, p, pnan, out, out2, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_ws_hvp(ws, pinf, p, out, NULL, NULL), EBT_ERR_NONFINITE);
    CASE(ebt_ws_hvp(ws, pninf, p, out, NULL, out2), EBT_ERR_NONFINITE);
    CASE(ebt_ws_energy(ws, p, out, out2), EBT_OK);   /* still prepared after the refusals */
    CASE(ebt_ws_hvp(ws, p, p, out, NULL, NULL), EBT_OK);
    /* transformer++ models have no energy workspace calls */
    assert_int_equal(ebt_workspace_create(lm, B, S, &other), EBT_OK);
    CASE(ebt_observe(other, lm, tok, B, S, 0), EBT_ERR_UNSUPPORTED);
    CASE(ebt_ws_energy(other, p, out, NULL), EBT_ERR_UNSUPPORTED);
    CASE(ebt_ws_hvp(other, p, p, out, NULL, NULL), EBT_ERR_UNSUPPORTED);
    ebt_workspace_free(other);
    END_GROUP();
}

/* ---- thread counts ----------------------------------------------------- */

static void test_thread_calls(void **state)
{
    int before = ebt_workspace_threads(ws), mbefore = m->threads;
    (void)state;
    CASE(ebt_workspace_set_threads(NULL, 1), EBT_ERR_ARG);
    CASE(ebt_workspace_set_threads(ws, -1), EBT_ERR_ARG);
    CASE(ebt_workspace_set_threads(ws, INT_MIN), EBT_ERR_ARG);
    CASE(ebt_workspace_set_threads(ws, 1025), EBT_ERR_ARG);
    CASE(ebt_workspace_set_threads(wslm, INT_MAX), EBT_ERR_ARG);
    CHECK(ebt_workspace_threads(ws) == before);   /* a refused count changes nothing */
    CHECK(ebt_workspace_threads(NULL) == 0);
    CASE(ebt_set_threads(NULL, 1), EBT_ERR_ARG);
    CASE(ebt_set_threads(m, -1), EBT_ERR_ARG);
    CASE(ebt_set_threads(m, INT_MIN), EBT_ERR_ARG);
    CASE(ebt_set_threads(m0, 1025), EBT_ERR_ARG);
    CASE(ebt_set_threads(lm, INT_MAX), EBT_ERR_ARG);
    CHECK(m->threads == mbefore);
    CHECK(ebt_last_error(lm)[0] != 0);
    END_GROUP();
}

/* ---- thinking ---------------------------------------------------------- */

static void test_think_calls(void **state)
{
    ebt_think_result res, resout;
    ebt_think_opts o = ebt_think_default(), o2;
    ebt_model *m2 = NULL;
    ebt_config c = *ebt_model_config(m);
    (void)state;
    memset(&res, 0, sizeof res);        /* every output pointer may be NULL */
    memset(&resout, 0, sizeof resout);
    resout.probs = out; resout.logits = out2;
    CASE(ebt_think(ws, m, tok, B, S, &o, &res), EBT_OK);   /* the control */
    /* NULL workspace, model, tokens, options, result */
    CASE(ebt_think(NULL, m, tok, B, S, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws, NULL, tok, B, S, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, NULL, B, S, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, B, S, NULL, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, B, S, &o, NULL), EBT_ERR_ARG);
    CASE(ebt_think_observed(NULL, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think_observed(ws, NULL, &res), EBT_ERR_ARG);
    CASE(ebt_think_observed(ws, &o, NULL), EBT_ERR_ARG);
    /* sizes: zero, negative, above the workspace, overflowing */
    CASE(ebt_think(ws, m, tok, 0, S, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, -1, S, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, B, 0, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, B, -2, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, B + 1, S, &o, &resout), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, B, S + 1, &o, &resout), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, B, MAXS + 1, &o, &resout), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, INT_MAX, S, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws, m, tok, B, INT_MAX, &o, &res), EBT_ERR_ARG);
    CASE(ebt_think(ws0, m0, tok, B + 1, S, &o, &resout), EBT_ERR_ARG);
    /* token ids */
    for (int i = 0; i < B * S; i += 5) {
        badtok[i] = -1;
        CASE(ebt_think(ws, m, badtok, B, S, &o, &res), EBT_ERR_TOKEN);
        badtok[i] = V;
        CASE(ebt_think(ws0, m0, badtok, B, S, &o, &resout), EBT_ERR_TOKEN);
        badtok[i] = INT32_MIN;
        CASE(ebt_think(ws0, m0, badtok, B, S, &o, &res), EBT_ERR_TOKEN);
        badtok[i] = tok[i];
    }
    /* not observed (the failed think above left ws0 unprepared; wsfresh never was) */
    CASE(ebt_think_observed(ws0, &o, &res), EBT_ERR_STATE);
    CASE(ebt_think_observed(wsfresh, &o, &res), EBT_ERR_STATE);
    /* another model's workspace; the wrong arch */
    assert_int_equal(ebt_create(&c, 5, &m2), EBT_OK);
    CASE(ebt_think(ws, m2, tok, B, S, &o, &res), EBT_ERR_STATE);
    CASE(ebt_think(ws0, m, tok, B, S, &o, &res), EBT_ERR_STATE);
    CASE(ebt_think(wslm, m0, tok, 1, S, &o, &res), EBT_ERR_STATE);
    ebt_free(m2);
    CASE(ebt_think(wslm, lm, tok, 1, S, &o, &res), EBT_ERR_UNSUPPORTED);
    CASE(ebt_think_observed(wslm, &o, &res), EBT_ERR_UNSUPPORTED);
    /* options out of range, in ebt_think, ebt_think_observed and (as
     * ebt_gen_opts.think) ebt_generate, on both ebt models */
    CASE(ebt_observe(ws0, m0, tok, B, S, 0), EBT_OK);
#define BADTHINK(field, val, in_generate) do {                                           \
        int32_t g_[NGEN];                                                                \
        ebt_gen_opts go_ = ebt_gen_default();                                            \
        o2 = o; o2.field = val;                                                          \
        snprintf(desc, sizeof desc, "think opts.%s = %s", #field, #val);                 \
        CASED(desc, ebt_think(ws, m, tok, B, S, &o2, &res), EBT_ERR_ARG);                \
        CASED(desc, ebt_think_observed(ws, &o2, &resout), EBT_ERR_ARG);                  \
        CASED(desc, ebt_think(ws0, m0, tok, B, S, &o2, &resout), EBT_ERR_ARG);           \
        CASED(desc, ebt_think_observed(ws0, &o2, &res), EBT_ERR_ARG);                    \
        if (in_generate) {                                                               \
            go_.think = o2;                                                              \
            snprintf(desc, sizeof desc, "gen opts.think.%s = %s", #field, #val);         \
            CASED(desc, ebt_generate(ws1, m0, tok, 3, NGEN, &go_, g_, NULL, NULL), EBT_ERR_ARG); \
            CASED(desc, ebt_generate(ws, m, tok, 3, NGEN, &go_, g_, out, out2), EBT_ERR_ARG); \
        }                                                                                \
    } while (0)
    /* "huge": the header gives no bound; these would overflow the result's int counts or need
     * gigabytes of scratch */
    BADTHINK(steps, -1, 1); BADTHINK(steps, INT_MIN, 1); BADTHINK(steps, 1 << 30, 1); BADTHINK(steps, INT_MAX, 1);
    BADTHINK(step_size, NAN, 1); BADTHINK(step_size, INFINITY, 1); BADTHINK(step_size, -INFINITY, 1);
    BADTHINK(alpha_rand, 0.5, 1); BADTHINK(alpha_rand, 0, 1); BADTHINK(alpha_rand, -2, 1);
    BADTHINK(alpha_rand, NAN, 1); BADTHINK(alpha_rand, INFINITY, 1);
    BADTHINK(noise, -0.1, 1); BADTHINK(noise, NAN, 1); BADTHINK(noise, INFINITY, 1);
    BADTHINK(init_scale, -1, 1); BADTHINK(init_scale, NAN, 1); BADTHINK(init_scale, INFINITY, 1);
    BADTHINK(energy_threshold, NAN, 1);
    BADTHINK(tol, NAN, 1);
    BADTHINK(rel_drop, NAN, 1); BADTHINK(rel_drop, INFINITY, 1);
    BADTHINK(grad_tol, NAN, 1); BADTHINK(grad_tol, INFINITY, 1);
    BADTHINK(row_budget, -1, 1); BADTHINK(row_budget, LLONG_MIN, 1);
    BADTHINK(clamp, -0.5, 1); BADTHINK(clamp, NAN, 1); BADTHINK(clamp, INFINITY, 1);
    BADTHINK(keep_best, 2, 1); BADTHINK(keep_best, -1, 1);
    BADTHINK(restarts, 0, 1); BADTHINK(restarts, -1, 1); BADTHINK(restarts, INT_MIN, 1);
    BADTHINK(restarts, 1 << 30, 1); BADTHINK(restarts, INT_MAX, 1);
    /* a flag: 0 or 1, as config.tie_pred_embed (generation implies last_only) */
    BADTHINK(last_only, 2, 0); BADTHINK(last_only, -1, 0);
#undef BADTHINK
    /* init_logits [restarts * B*P*V] with NaN or Inf, in any start's block */
    o2 = o; o2.restarts = R; o2.init_logits = y0nan;
    CASE(ebt_think(ws, m, tok, B, S, &o2, &resout), EBT_ERR_NONFINITE);
    CASE(ebt_think_observed(ws0, &o2, &res), EBT_ERR_NONFINITE);
    o2.init_logits = y0inf;
    CASE(ebt_think(ws0, m0, tok, B, S, &o2, &res), EBT_ERR_NONFINITE);
    CASE(ebt_think_observed(ws, &o2, &resout), EBT_ERR_NONFINITE);
    o2.restarts = 1; o2.last_only = 1;
    y0nan[B * V - 1] = NAN;          /* the last entry of the B*1*V block */
    o2.init_logits = y0nan;
    CASE(ebt_think(ws, m, tok, B, S, &o2, &res), EBT_ERR_NONFINITE);
    CASE(ebt_think_observed(ws0, &o2, &resout), EBT_ERR_NONFINITE);
    y0nan[B * V - 1] = y0[B * V - 1];
    o2.init_logits = y0;
    CASE(ebt_think_observed(ws0, &o2, &resout), EBT_OK);   /* still prepared */
    END_GROUP();
}

/* ---- ebt_observe_append -------------------------------------------------- */

static void test_append_calls(void **state)
{
    int32_t one[1] = { 0 }, more[MAXS];
    (void)state;
    for (int i = 0; i < MAXS; i++) more[i] = (int32_t)(i % V);
    CASE(ebt_observe_append(NULL, one, 1), EBT_ERR_ARG);
    /* not observed: never, or after a failed observe */
    CASE(ebt_observe_append(wsfresh, one, 1), EBT_ERR_STATE);
    badtok[1] = V;
    CASE(ebt_observe(ws1, m0, badtok, 1, 2, 0), EBT_ERR_TOKEN);
    badtok[1] = tok[1];
    CASE(ebt_observe_append(ws1, one, 1), EBT_ERR_STATE);
    /* a step-embedding model re-observes per thinking step */
    CASE(ebt_observe(ws, m, tok, 1, 2, 0), EBT_OK);
    CASE(ebt_observe_append(ws, one, 1), EBT_ERR_UNSUPPORTED);
    /* a multi-sequence observation */
    CASE(ebt_observe(ws0, m0, tok, B, 2, 0), EBT_OK);
    CASE(ebt_observe_append(ws0, one, 1), EBT_ERR_ARG);
    /* one sequence of 2 tokens in a workspace of max_S MAXS */
    CASE(ebt_observe(ws1, m0, tok, 1, 2, 0), EBT_OK);
    CASE(ebt_observe_append(ws1, NULL, 1), EBT_ERR_ARG);
    CASE(ebt_observe_append(ws1, one, 0), EBT_ERR_ARG);
    CASE(ebt_observe_append(ws1, one, -1), EBT_ERR_ARG);
    CASE(ebt_observe_append(ws1, one, INT_MIN), EBT_ERR_ARG);
    CASE(ebt_observe_append(ws1, more, MAXS - 1), EBT_ERR_ARG);   /* 2 + 5 > max_S */
    CASE(ebt_observe_append(ws1, more, INT_MAX), EBT_ERR_ARG);
    one[0] = -1;
    CASE(ebt_observe_append(ws1, one, 1), EBT_ERR_TOKEN);
    one[0] = V;
    CASE(ebt_observe_append(ws1, one, 1), EBT_ERR_TOKEN);
    one[0] = INT32_MIN;
    CASE(ebt_observe_append(ws1, one, 1), EBT_ERR_TOKEN);
    more[MAXS - 3] = V + 1;
    CASE(ebt_observe_append(ws1, more, MAXS - 2), EBT_ERR_TOKEN);   /* the last of 4 */
    more[MAXS - 3] = 0;
    /* none of the refusals grew the sequence: exactly max_S - 2 still fit */
    CASE(ebt_observe_append(ws1, more, MAXS - 2), EBT_OK);
    CASE(ebt_observe_append(ws1, more, 1), EBT_ERR_ARG);           /* now full */
    END_GROUP();
}

/* ---- generation -------------------------------------------------------- */

static void test_generate_calls(void **state)
{
    ebt_gen_opts o = ebt_gen_default(), o2;
    int32_t g[NGEN], prompt[MAXS + 4];
    ebt_model *m2 = NULL;
    ebt_config c = *ebt_model_config(m0);
    (void)state;
    for (int i = 0; i < MAXS + 4; i++) prompt[i] = (int32_t)((i * 2) % V);
    o.think.steps = 1;
    CASE(ebt_generate(ws1, m0, prompt, 3, NGEN, &o, g, out, out2), EBT_OK);   /* the controls */
    CASE(ebt_generate(wslm, lm, prompt, 3, NGEN, &o, g, out, out2), EBT_OK);
    for (int which = 0; which < 3; which++) {
        ebt_workspace *x = which == 0 ? ws1 : which == 1 ? wslm : ws;
        ebt_model *xm = which == 0 ? m0 : which == 1 ? lm : m;
        /* NULL workspace, model, prompt, options, out (energy, probs may be NULL) */
        CASE(ebt_generate(NULL, xm, prompt, 3, NGEN, &o, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, NULL, prompt, 3, NGEN, &o, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, xm, NULL, 3, NGEN, &o, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, xm, prompt, 3, NGEN, NULL, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, xm, prompt, 3, NGEN, &o, NULL, out, out2), EBT_ERR_ARG);
        /* n_prompt < 1, n_new < 0, n_prompt + n_new overflowing */
        CASE(ebt_generate(x, xm, prompt, 0, NGEN, &o, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, xm, prompt, -1, NGEN, &o, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, xm, prompt, INT_MIN, NGEN, &o, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, xm, prompt, 3, -1, &o, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, xm, prompt, 3, INT_MIN, &o, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, xm, prompt, 3, INT_MAX, &o, g, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_generate(x, xm, prompt, 3, INT_MAX - 2, &o, g, NULL, NULL), EBT_ERR_ARG);
        /* prompt ids, anywhere in the prompt (also before the last max_S tokens) */
        for (int i = 0; i < MAXS + 4; i += 3) {
            static const int32_t bad[] = { -1, V, INT32_MIN, INT32_MAX };
            for (int b = 0; b < 4; b++) {
                prompt[i] = bad[b];
                snprintf(desc, sizeof desc, "ebt_generate(%d) prompt[%d] = %d", which, i, (int)bad[b]);
                CASED(desc, ebt_generate(x, xm, prompt, MAXS + 4, NGEN, &o, g, out, NULL), EBT_ERR_TOKEN);
            }
            prompt[i] = (int32_t)((i * 2) % V);
        }
        /* options */
#define BADGEN(field, val) do {                                                          \
        o2 = o; o2.field = val;                                                          \
        snprintf(desc, sizeof desc, "ebt_generate(%d) opts.%s = %s", which, #field, #val); \
        CASED(desc, ebt_generate(x, xm, prompt, 3, NGEN, &o2, g, out, out2), EBT_ERR_ARG); \
    } while (0)
        BADGEN(temperature, -0.5); BADGEN(temperature, NAN); BADGEN(temperature, INFINITY);
        BADGEN(temperature, -INFINITY);
        BADGEN(top_p, 0); BADGEN(top_p, -0.1); BADGEN(top_p, 1.5); BADGEN(top_p, NAN);
        BADGEN(top_p, INFINITY); BADGEN(top_p, -INFINITY);
        BADGEN(no_cache, 2); BADGEN(no_cache, -1);   /* a flag: 0 or 1 */
#undef BADGEN
    }
    /* another model's workspace */
    assert_int_equal(ebt_create(&c, 5, &m2), EBT_OK);
    CASE(ebt_generate(ws1, m2, prompt, 3, NGEN, &o, g, NULL, NULL), EBT_ERR_STATE);
    CASE(ebt_generate(ws1, lm, prompt, 3, NGEN, &o, g, NULL, NULL), EBT_ERR_STATE);
    CASE(ebt_generate(wslm, m0, prompt, 3, NGEN, &o, g, NULL, NULL), EBT_ERR_STATE);
    ebt_free(m2);
    CASE(ebt_generate(ws1, m0, prompt, 3, 0, &o, NULL, NULL, NULL), EBT_OK);   /* nothing to write */
    END_GROUP();
}

/* ---- transformer++ ----------------------------------------------------- */

static void test_lm_calls(void **state)
{
    int32_t badtgt[B * S];
    ebt_real loss = 0;
    (void)state;
    memcpy(badtgt, tgt, sizeof tgt);
    /* NULL model, tokens, logits / targets, loss */
    CASE(ebt_lm_logits(NULL, tok, B, S, out), EBT_ERR_ARG);
    CASE(ebt_lm_logits(lm, NULL, B, S, out), EBT_ERR_ARG);
    CASE(ebt_lm_logits(lm, tok, B, S, NULL), EBT_ERR_ARG);
    CASE(ebt_lm_backward(NULL, tok, tgt, B, S, &loss), EBT_ERR_ARG);
    CASE(ebt_lm_backward(lm, NULL, tgt, B, S, &loss), EBT_ERR_ARG);
    CASE(ebt_lm_backward(lm, tok, NULL, B, S, &loss), EBT_ERR_ARG);
    CASE(ebt_lm_backward(lm, tok, tgt, B, S, NULL), EBT_ERR_ARG);
    /* sizes (there is no step: pass 0 to the shared table) */
    BAD_SIZES(ebt_lm_logits(lm, tok, Bx, stx == 0 ? Sx : -1, out));
    BAD_SIZES(ebt_lm_backward(lm, tok, tgt, Bx, stx == 0 ? Sx : -1, &loss));
    /* token and target ids */
    for (int i = 0; i < B * S; i += 3) {
        static const int32_t bad[] = { -1, V, INT32_MIN, INT32_MAX };
        for (int b = 0; b < 4; b++) {
            badtok[i] = bad[b];
            badtgt[i] = bad[b];
            snprintf(desc, sizeof desc, "tokens[%d] = %d", i, (int)bad[b]);
            CASED(desc, ebt_lm_logits(lm, badtok, B, S, out), EBT_ERR_TOKEN);
            CASED(desc, ebt_lm_backward(lm, badtok, tgt, B, S, &loss), EBT_ERR_TOKEN);
            snprintf(desc, sizeof desc, "targets[%d] = %d", i, (int)bad[b]);
            CASED(desc, ebt_lm_backward(lm, tok, badtgt, B, S, &loss), EBT_ERR_TOKEN);
            badtok[i] = tok[i];
            badtgt[i] = tgt[i];
        }
    }
    /* the wrong arch */
    CASE(ebt_lm_logits(m, tok, B, S, out), EBT_ERR_UNSUPPORTED);
    CASE(ebt_lm_logits(m0, tok, B, S, out), EBT_ERR_UNSUPPORTED);
    CASE(ebt_lm_backward(m, tok, tgt, B, S, &loss), EBT_ERR_UNSUPPORTED);
    CASE(ebt_lm_backward(m0, tok, tgt, B, S, &loss), EBT_ERR_UNSUPPORTED);
    CHECK(ebt_last_error(m0)[0] != 0);
    END_GROUP();
}

/* ---- training ---------------------------------------------------------- */

static void test_train_calls(void **state)
{
    ebt_train_opts o = topt, o2;
    ebt_train_stats st;
    int32_t badtgt[B * S];
    (void)state;
    memcpy(badtgt, tgt, sizeof tgt);
    for (int which = 0; which < 3; which++) {
        ebt_model *x = *models[which];
        int ebt = x->cfg.arch == EBT_ARCH_EBT;
        /* NULL model, options, tokens, targets (init_logits, alpha_mult, stats may be NULL) */
        CASE(ebt_train_grad(NULL, &o, tok, tgt, B, S, NULL, NULL, &st), EBT_ERR_ARG);
        CASE(ebt_train_grad(x, NULL, tok, tgt, B, S, NULL, NULL, &st), EBT_ERR_ARG);
        CASE(ebt_train_grad(x, &o, NULL, tgt, B, S, NULL, NULL, &st), EBT_ERR_ARG);
        CASE(ebt_train_grad(x, &o, tok, NULL, B, S, NULL, NULL, NULL), EBT_ERR_ARG);
        CASE(ebt_train_step(NULL, &o, tok, tgt, B, S, NULL, &st), EBT_ERR_ARG);
        CASE(ebt_train_step(x, NULL, tok, tgt, B, S, NULL, &st), EBT_ERR_ARG);
        CASE(ebt_train_step(x, &o, NULL, tgt, B, S, NULL, &st), EBT_ERR_ARG);
        CASE(ebt_train_step(x, &o, tok, NULL, B, S, NULL, NULL), EBT_ERR_ARG);
        /* sizes */
        BAD_SIZES(ebt_train_grad(x, &o, tok, tgt, Bx, stx == 0 ? Sx : -1, NULL, NULL, &st));
        BAD_SIZES(ebt_train_step(x, &o, tok, tgt, Bx, stx == 0 ? Sx : -1, NULL, &st));
        /* token and target ids */
        for (int i = 0; i < B * S; i += 3) {
            static const int32_t bad[] = { -1, V, INT32_MIN, INT32_MAX };
            for (int b = 0; b < 4; b++) {
                badtok[i] = bad[b];
                badtgt[i] = bad[b];
                snprintf(desc, sizeof desc, "model %d tokens[%d] = %d", which, i, (int)bad[b]);
                CASED(desc, ebt_train_grad(x, &o, badtok, tgt, B, S, NULL, NULL, &st), EBT_ERR_TOKEN);
                CASED(desc, ebt_train_step(x, &o, badtok, tgt, B, S, NULL, &st), EBT_ERR_TOKEN);
                snprintf(desc, sizeof desc, "model %d targets[%d] = %d", which, i, (int)bad[b]);
                CASED(desc, ebt_train_grad(x, &o, tok, badtgt, B, S, NULL, NULL, &st), EBT_ERR_TOKEN);
                CASED(desc, ebt_train_step(x, &o, tok, badtgt, B, S, NULL, &st), EBT_ERR_TOKEN);
                badtok[i] = tok[i];
                badtgt[i] = tgt[i];
            }
        }
        /* NaN/Inf in init_logits [B*S*V] and alpha_mult [B*S] (arch ebt: transformer++ has no thinking) */
        if (ebt) {
            y0nan[7] = NAN;
            CASE(ebt_train_grad(x, &o, tok, tgt, B, S, y0nan, NULL, &st), EBT_ERR_NONFINITE);
            CASE(ebt_train_step(x, &o, tok, tgt, B, S, y0nan, &st), EBT_ERR_NONFINITE);
            y0nan[7] = y0[7];
            y0inf[3] = y0[3];
            y0inf[B * S * V - 1] = -INFINITY;   /* only the last entry */
            CASE(ebt_train_grad(x, &o, tok, tgt, B, S, y0inf, am, NULL), EBT_ERR_NONFINITE);
            CASE(ebt_train_step(x, &o, tok, tgt, B, S, y0inf, NULL), EBT_ERR_NONFINITE);
            y0inf[B * S * V - 1] = y0[B * S * V - 1];
            y0inf[3] = INFINITY;
            CASE(ebt_train_grad(x, &o, tok, tgt, B, S, NULL, amnan, &st), EBT_ERR_NONFINITE);
            CASE(ebt_train_grad(x, &o, tok, tgt, B, S, y0, aminf, &st), EBT_ERR_NONFINITE);
        }
        /* options out of range (the thinking ones are refused by both archs, as the
         * library validates every field) */
#define BADTRAIN(field, val) do {                                                        \
        o2 = o; o2.field = val;                                                          \
        snprintf(desc, sizeof desc, "model %d train opts.%s = %s", which, #field, #val); \
        CASED(desc, ebt_train_grad(x, &o2, tok, tgt, B, S, NULL, NULL, &st), EBT_ERR_ARG); \
        CASED(desc, ebt_train_step(x, &o2, tok, tgt, B, S, NULL, &st), EBT_ERR_ARG);     \
    } while (0)
        BADTRAIN(mode, (ebt_mode)3); BADTRAIN(mode, (ebt_mode)-1);
        BADTRAIN(k_min, 0); BADTRAIN(k_min, -1); BADTRAIN(k_min, INT_MIN);
        BADTRAIN(k_min, 3);                        /* > k_max = 2 */
        BADTRAIN(k_max, 1);                        /* < k_min = 2 */
        BADTRAIN(k_max, 1 << 30); BADTRAIN(k_max, INT_MAX); BADTRAIN(k_max, -1);
        BADTRAIN(alpha_rand, 0.5); BADTRAIN(alpha_rand, -1); BADTRAIN(alpha_rand, NAN); BADTRAIN(alpha_rand, INFINITY);
        BADTRAIN(noise, -0.1); BADTRAIN(noise, NAN); BADTRAIN(noise, INFINITY);
        BADTRAIN(init_scale, -1); BADTRAIN(init_scale, NAN); BADTRAIN(init_scale, INFINITY);
        BADTRAIN(replay_capacity, -1); BADTRAIN(replay_capacity, INT_MIN); BADTRAIN(replay_capacity, INT_MAX);
        BADTRAIN(replay_frac, -0.1); BADTRAIN(replay_frac, 1.5); BADTRAIN(replay_frac, NAN);
        BADTRAIN(replay_frac, INFINITY); BADTRAIN(replay_frac, -INFINITY);
        BADTRAIN(learn_alpha, 2); BADTRAIN(learn_alpha, -1);   /* a flag: 0 or 1 */
        BADTRAIN(alpha_lr_mult, -1); BADTRAIN(alpha_lr_mult, NAN); BADTRAIN(alpha_lr_mult, INFINITY);
        BADTRAIN(lr, -1e-3); BADTRAIN(lr, NAN); BADTRAIN(lr, INFINITY);
        BADTRAIN(min_lr, -1e-4); BADTRAIN(min_lr, NAN); BADTRAIN(min_lr, INFINITY);
        BADTRAIN(warmup_steps, -1); BADTRAIN(warmup_steps, LONG_MIN);
        BADTRAIN(total_steps, -1); BADTRAIN(total_steps, LONG_MIN);
        BADTRAIN(weight_decay, -0.01); BADTRAIN(weight_decay, NAN); BADTRAIN(weight_decay, INFINITY);
        BADTRAIN(beta1, -0.1); BADTRAIN(beta1, 1); BADTRAIN(beta1, 1.5); BADTRAIN(beta1, NAN);
        BADTRAIN(beta2, -0.1); BADTRAIN(beta2, 1); BADTRAIN(beta2, 2); BADTRAIN(beta2, NAN);
        BADTRAIN(eps, 0); BADTRAIN(eps, -1e-8); BADTRAIN(eps, NAN); BADTRAIN(eps, INFINITY);
        BADTRAIN(grad_clip, NAN); BADTRAIN(grad_clip, INFINITY); BADTRAIN(grad_clip, -INFINITY);
#undef BADTRAIN
        /* a refused step (its update overflows float): EBT_ERR_NONFINITE with the
         * parameters, optimiser state and replay buffer unchanged (the gradients
         * were recomputed: they may change) -- also when the step would have
         * resized the replay buffer (other capacity, other S) */
        o2 = o; o2.lr = 1e300;
        CASE_X("train_step lr = 1e300", ebt_train_step(x, &o2, tok, tgt, B, S, NULL, &st), EBT_ERR_NONFINITE, x);
        o2.replay_capacity = o.replay_capacity + 2;
        CASE_X("train_step lr = 1e300, other replay capacity", ebt_train_step(x, &o2, tok, tgt, B, S, NULL, &st),
               EBT_ERR_NONFINITE, x);
        o2.replay_capacity = o.replay_capacity;
        CASE_X("train_step lr = 1e300, S - 1", ebt_train_step(x, &o2, tok, tgt, B, S - 1, NULL, &st),
               EBT_ERR_NONFINITE, x);
    }
    CHECK(ebt_last_error(m)[0] != 0);
    CHECK(ebt_train_steps_done(m) == 2 && ebt_train_steps_done(m0) == 2 && ebt_train_steps_done(lm) == 2);
    END_GROUP();
}

/* ---- files ------------------------------------------------------------- */

static void test_file_calls(void **state)
{
    ebt_model *x = (ebt_model *)&x, *mnan = NULL;
    char err[256], dir[256], path[300], junk[300];
    FILE *f;
    long size = 0;
    ebt_real *a;
    (void)state;
    test_tmpdir(dir, sizeof dir, "badinput");
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    snprintf(junk, sizeof junk, "%s/junk", dir);
    /* ebt_load / ebt_load_ex: NULL path or out; files that are missing or malformed */
    CASE(ebt_load(NULL, &x), EBT_ERR_ARG);
    CHECK(x == NULL);
    CASE(ebt_load(path, NULL), EBT_ERR_ARG);
    x = (ebt_model *)&x;
    CASE(ebt_load_ex(NULL, &x, err, sizeof err), EBT_ERR_ARG);
    CHECK(x == NULL && err[0] != 0);
    CASE(ebt_load_ex(path, NULL, err, sizeof err), EBT_ERR_ARG);
    CASE(ebt_load_ex(NULL, NULL, NULL, 0), EBT_ERR_ARG);
    CASE(ebt_load_ex(NULL, &x, NULL, sizeof err), EBT_ERR_ARG);
    x = (ebt_model *)&x;
    CASE(ebt_load_ex("/nonexistent/dir/x.safetensors", &x, err, sizeof err), EBT_ERR_IO);
    CHECK(x == NULL);
    CHECK(strstr(err, "/nonexistent/dir/x.safetensors") != NULL);
    CASE(ebt_load("/nonexistent/dir/x.safetensors", &x), EBT_ERR_IO);
    f = fopen(junk, "wb");
    assert_non_null(f);
    fclose(f);                                               /* empty */
    CASE(ebt_load_ex(junk, &x, err, sizeof err), EBT_ERR_FORMAT);
    CHECK(x == NULL && err[0] != 0);
    f = fopen(junk, "wb");
    assert_non_null(f);
    fputs("this is not a checkpoint at all, just some text", f);
    fclose(f);
    CASE(ebt_load_ex(junk, &x, err, sizeof err), EBT_ERR_FORMAT);
    CHECK(x == NULL);
    /* ebt_save / ebt_save_ex: NULL model or path; a directory that does not exist */
    CASE(ebt_save(NULL, path), EBT_ERR_ARG);
    CASE(ebt_save(m, NULL), EBT_ERR_ARG);
    CASE(ebt_save_ex(NULL, path, err, sizeof err), EBT_ERR_ARG);
    CHECK(err[0] != 0);
    CASE(ebt_save_ex(lm, NULL, err, sizeof err), EBT_ERR_ARG);
    CASE(ebt_save_ex(NULL, NULL, NULL, 0), EBT_ERR_ARG);
    CASE(ebt_save_ex(m, "/nonexistent/dir/x.safetensors", err, sizeof err), EBT_ERR_IO);
    CHECK(err[0] != 0);
    CASE(ebt_save(lm, "/nonexistent/dir/x.safetensors"), EBT_ERR_IO);
    /* a truncated checkpoint (with optimiser state and replay buffer) */
    CASE(ebt_save(m, path), EBT_OK);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
    assert_int_equal(truncate(path, size / 2), 0);
    x = (ebt_model *)&x;
    CASE(ebt_load_ex(path, &x, err, sizeof err), EBT_ERR_FORMAT);
    CHECK(x == NULL && err[0] != 0);
    /* NaN in the weights: not saved, and the file at path is left as it was */
    assert_int_equal(ebt_create(ebt_model_config(m0), 9, &mnan), EBT_OK);
    a = ebt_param(mnan, "final_norm.weight", NULL);
    assert_non_null(a);
    a[1] = NAN;
    CASE(ebt_save_ex(mnan, path, err, sizeof err), EBT_ERR_NONFINITE);
    CHECK(err[0] != 0);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    CHECK(ftell(f) == size / 2);
    fclose(f);
    ebt_free(mnan);
    test_rmdir(dir);
    END_GROUP();
}

static void test_summary(void **state)
{
    (void)state;
    printf("  %d bad-input cases, each with every model's parameters, gradients and training state unchanged\n",
           ncases);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_and_create),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_energy_calls),
        cmocka_unit_test(test_workspace_calls),
        cmocka_unit_test(test_thread_calls),
        cmocka_unit_test(test_think_calls),
        cmocka_unit_test(test_append_calls),
        cmocka_unit_test(test_generate_calls),
        cmocka_unit_test(test_lm_calls),
        cmocka_unit_test(test_train_calls),
        cmocka_unit_test(test_file_calls),
        cmocka_unit_test(test_summary),
    };
    return cmocka_run_group_tests_name("bad input", tests, setup, teardown);
}
