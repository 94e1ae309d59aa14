/* Allocation-failure sweep. EBT_MALLOC/EBT_REALLOC/EBT_FREE point at a
 * counting allocator that fails the N-th allocation (or, "sticky", the N-th
 * and every later one). For each operation N runs 1, 2, ... until the call
 * succeeds without reaching an injected failure, and for every N:
 *   - the call returns EBT_ERR_NOMEM (and returns no object: *out is NULL);
 *   - no leak: a failed call that would return an object leaves nothing
 *     allocated, and once the test frees what it holds (model, workspace)
 *     the live allocation count and bytes are back at the baseline;
 *   - no file descriptor is leaked;
 *   - the state the call must not change on failure is bit-identical: the
 *     model's parameters, gradients, optimiser state + replay buffer + step
 *     count (hashed from the internals: this file includes ebt.c), the
 *     model's workspace, the old file at a save path and its directory;
 *   - the same call made again with the allocator restored succeeds and
 *     gives bit-for-bit the result of a run that never saw a failure
 *     (outputs, model state after the call, bytes of a saved file). */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static long ta_calls, ta_fail_at, ta_injected, ta_live;
static int ta_sticky;
static size_t ta_bytes;
typedef union { size_t n; long double ld; void *p; long long ll; double d; } ta_hdr;

static int ta_should_fail(void)
{
    ta_calls++;
    if (ta_fail_at > 0 && (ta_calls == ta_fail_at || (ta_sticky && ta_calls > ta_fail_at))) {
        ta_injected++;
        return 1;
    }
    return 0;
}

static void *ta_malloc(size_t n)
{
    ta_hdr *h;
    if (ta_should_fail() || n > SIZE_MAX / 2) return NULL;
    if (!(h = (ta_hdr *)malloc(sizeof *h + n))) return NULL;
    h->n = n;
    memset(h + 1, 0xA5, n);  /* garbage, so reliance on zeroed memory shows up as a mismatch */
    ta_live++;
    ta_bytes += n;
    return h + 1;
}

static void *ta_realloc(void *p, size_t n)
{
    ta_hdr *h, *q;
    size_t old;
    if (!p) return ta_malloc(n);
    if (ta_should_fail() || n > SIZE_MAX / 2) return NULL;
    h = (ta_hdr *)p - 1;
    old = h->n;
    if (!(q = (ta_hdr *)realloc(h, sizeof *q + n))) return NULL;
    q->n = n;
    ta_bytes = ta_bytes - old + n;
    return q + 1;
}

static void ta_free(void *p)
{
    ta_hdr *h;
    if (!p) return;
    h = (ta_hdr *)p - 1;
    ta_live--;
    ta_bytes -= h->n;
    free(h);
}

#define EBT_MALLOC(sz) ta_malloc(sz)
#define EBT_REALLOC(p, sz) ta_realloc(p, sz)
#define EBT_FREE(p) ta_free(p)
#include "../ebt.c"
#include "test_util.h"
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

static void ta_arm(long n, int sticky) { ta_calls = 0; ta_fail_at = n; ta_sticky = sticky; ta_injected = 0; }
static long ta_disarm(void) { ta_fail_at = 0; return ta_injected; }

/* ---- hashing ---- */
#define HV(h, x) ((h) = test_fnv((h), &(x), sizeof(x)))

/* what a failed call must leave as it was: parameters, gradients, training
 * state (optimiser moments, step count, replay buffer), other (the old file
 * at a save path and its directory), and the model's own workspace, which
 * may have grown (it is a cache) but must not be lost or shrunk */
typedef struct { uint64_t params, grads, train, other; int wsB, wsS; } snap;

static uint64_t hash_train(const ebt_model *m)
{
    uint64_t h = TEST_FNV0;
    size_t S = m->rb.S > 0 ? (size_t)m->rb.S : 0, cnt = m->rb.count > 0 ? (size_t)m->rb.count : 0;
    int have = m->opt.m != NULL;
    HV(h, have);
    if (m->opt.m) h = test_fnv(h, m->opt.m, m->n_params * sizeof(ebt_real));
    if (m->opt.v) h = test_fnv(h, m->opt.v, m->n_params * sizeof(ebt_real));
    HV(h, m->opt.step); HV(h, m->rb.count); HV(h, m->cfg.alpha);
    if (cnt) {  /* an empty buffer holds nothing; else the filled slots 0..count-1 */
        HV(h, m->rb.cap); HV(h, m->rb.next); HV(h, m->rb.S);
        h = test_fnv(h, m->rb.tok, cnt * S * sizeof(int32_t));
        h = test_fnv(h, m->rb.tgt, cnt * S * sizeof(int32_t));
        h = test_fnv(h, m->rb.y, cnt * S * (size_t)m->cfg.vocab_size * sizeof(ebt_real));
    }
    return h;
}

static snap model_snap(const ebt_model *m)
{
    snap s;
    memset(&s, 0, sizeof s);
    if (!m) return s;
    s.params = test_fnv(TEST_FNV0, m->params, m->n_params * sizeof(ebt_real));
    s.grads = test_fnv(TEST_FNV0, m->grads, m->n_params * sizeof(ebt_real));
    s.train = hash_train(m);
    s.wsB = m->ws ? m->ws->max_B : 0;
    s.wsS = m->ws ? m->ws->max_S : 0;
    return s;
}

/* the lowest free descriptor: grows if one leaked */
static int probe_fd(void)
{
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0) close(fd);
    return fd;
}

/* ---- models and inputs ---- */
enum { V = 11, B = 2, S = 4, S2 = 6, B2 = 3, NP = 3, NNEW = 5, K = 3, R = 3 };

static ebt_config small_cfg(ebt_arch arch, int step, int tied)
{
    ebt_config c = ebt_config_default();
    c.arch = arch; c.vocab_size = V; c.d_model = 8; c.n_heads = 2; c.d_ff = 12; c.n_layers = 2; c.max_seq_len = 8;
    c.n_step_embed = step; c.tie_pred_embed = tied; c.alpha = 0.7;
    return c;
}

static int32_t tok[B2 * S2], tgt[B2 * S2];
static ebt_real probs[B2 * S2 * V], vdir[B2 * S2 * V];

static ebt_train_opts train_opts(void)
{
    ebt_train_opts o = ebt_train_default();
    o.k_min = 2; o.k_max = 3; o.noise = 0.1; o.alpha_rand = 1.5;
    o.replay_capacity = 4; o.replay_frac = 0.5;
    o.warmup_steps = 2; o.lr = 1e-2; o.seed = 77;
    return o;
}

/* a model (allocator not failing) after `steps` training steps on B x S */
static ebt_model *build(ebt_arch arch, int step, int tied, int steps)
{
    ebt_config c = small_cfg(arch, step, tied);
    ebt_train_opts o = train_opts();
    ebt_model *m = NULL;
    assert_int_equal(ebt_create(&c, 7, &m), EBT_OK);
    for (int i = 0; i < steps; i++) {
        ebt_status st = ebt_train_step(m, &o, tok + i, tgt + i, B, S, NULL, NULL);
        if (st != EBT_OK) printf("  pretrain step: %s\n", ebt_last_error(m));
        assert_int_equal(st, EBT_OK);
    }
    return m;
}

/* ---- the operations ---- */
typedef struct op op;
struct op {
    const char *name;
    ebt_arch arch;
    int step, tied;   /* model options */
    int variant;      /* per-kind variant, see setup */
    void (*setup)(const op *o);
    ebt_status (*call)(const op *o);
    uint64_t (*result)(const op *o);     /* digest of everything the call produced */
    snap (*state)(const op *o);          /* what must be unchanged after a failed call */
    void (*on_fail)(const op *o);        /* extra checks right after a failed call */
    int returns_object;                  /* 1: the call returns a new object (NULL on failure) */
    void (*teardown)(const op *o);
    int may_not_allocate;                /* 1: zero failure points is fine */
};
#ifdef _OPENMP
#define NO_OMP 0
#else
#define NO_OMP 1   /* thread counts are always 1: setting them allocates nothing */
#endif

static struct {
    ebt_model *m;
    ebt_workspace *ws;
    char err[256];
    char dir[64], path[128], ckpt_ebt[128], ckpt_tr[128];
    unsigned char *old;  /* bytes of the previous file at path */
    size_t old_n;
    /* outputs */
    ebt_real E[B2 * S2], g[B2 * S2 * V], hv[B2 * S2 * V], logits[B2 * S2 * V], loss;
    ebt_real t_probs[B * S * V], t_logits[B * S * V], t_energy[B * S * (K + 1)], t_fin[B * S], t_curv[B * S];
    int t_steps[B * S], t_win[B * S];
    ebt_think_result tr;
    int32_t out[NNEW];
    ebt_real gen_E[NNEW], gen_p[NNEW * V];
    ebt_train_stats stats;
} G;

static const char *cur_op;
static long cur_n;
static int cur_sticky, op_fails, total_fails;
#define CHECK(c) do { if (!(c)) { op_fails++; total_fails++; if (op_fails <= 6) \
    printf("  FAIL %s, allocation %ld%s failing: %s (line %d)\n", cur_op, cur_n, cur_sticky ? " and later" : "", #c, __LINE__); } } while (0)

static void snap_check(snap a, snap b)
{
    CHECK(a.params == b.params);   /* parameters unchanged */
    CHECK(a.grads == b.grads);     /* gradients unchanged */
    CHECK(a.train == b.train);     /* optimiser state, step count, replay buffer unchanged */
    CHECK(a.other == b.other);     /* old file and its directory unchanged */
    CHECK(b.wsB >= a.wsB && b.wsS >= a.wsS);  /* model workspace kept */
}

static snap state_m(const op *o) { (void)o; return model_snap(G.m); }
static void teardown_all(const op *o)
{
    (void)o;
    ebt_workspace_free(G.ws); G.ws = NULL;
    ebt_free(G.m); G.m = NULL;
}
static uint64_t digest_model(uint64_t h, const ebt_model *m)
{
    snap s = model_snap(m);
    HV(h, s.params); HV(h, s.grads); HV(h, s.train);
    return h;
}

/* create */
static void setup_none(const op *o) { (void)o; G.m = NULL; G.ws = NULL; }
static ebt_status call_create(const op *o)
{
    ebt_config c = small_cfg(o->arch, o->step, o->tied);
    G.m = (ebt_model *)&G;  /* must become NULL on failure */
    return ebt_create(&c, 7, &G.m);
}
static snap state_none(const op *o) { snap s; (void)o; memset(&s, 0, sizeof s); return s; }
static void fail_no_model(const op *o)
{
    (void)o;
    CHECK(G.m == NULL);
    if (G.m == (ebt_model *)&G) G.m = NULL;
}
static uint64_t result_model(const op *o) { (void)o; CHECK(G.m != NULL); return G.m ? digest_model(TEST_FNV0, G.m) : 0; }

/* load */
static ebt_status call_load(const op *o)
{
    G.m = (ebt_model *)&G;
    G.err[0] = 0;
    return ebt_load_ex(o->arch == EBT_ARCH_EBT ? G.ckpt_ebt : G.ckpt_tr, &G.m, G.err, sizeof G.err);
}
static void fail_load(const op *o) { fail_no_model(o); CHECK(G.err[0] != 0); }
static uint64_t result_load(const op *o)
{
    uint64_t h = TEST_FNV0;
    (void)o;
    CHECK(G.m != NULL);
    if (!G.m) return 0;
    { snap s = model_snap(G.m); HV(h, s.params); HV(h, s.train); }
    return h;
}

/* workspace create */
static void setup_model(const op *o) { G.m = build(o->arch, o->step, o->tied, o->variant); G.ws = NULL; }
static ebt_status call_ws_create(const op *o)
{
    (void)o;
    G.ws = (ebt_workspace *)&G;
    return ebt_workspace_create(G.m, B, S2, &G.ws);
}
static void fail_no_ws(const op *o)
{
    (void)o;
    CHECK(G.ws == NULL);
    if (G.ws == (ebt_workspace *)&G) G.ws = NULL;
}
static uint64_t result_ws(const op *o)
{
    uint64_t h = TEST_FNV0;
    (void)o;
    CHECK(G.ws != NULL);
    if (G.ws) { HV(h, G.ws->max_B); HV(h, G.ws->max_S); }
    return h;
}

/* think */
static void setup_model_ws(const op *o)
{
    setup_model(o);
    assert_int_equal(ebt_workspace_create(G.m, B, S2, &G.ws), EBT_OK);
}
/* ebt_think into G's result arrays (curvature too when asked for) */
static ebt_status think_into(const ebt_think_opts *t, int with_curvature)
{
    memset(&G.tr, 0, sizeof G.tr);
    G.tr.probs = G.t_probs; G.tr.logits = G.t_logits; G.tr.energy = G.t_energy; G.tr.final_energy = G.t_fin;
    G.tr.steps_taken = G.t_steps; G.tr.winner = G.t_win;
    G.tr.curvature = with_curvature ? G.t_curv : NULL;
    return ebt_think(G.ws, G.m, tok, B, S, t, &G.tr);
}
static ebt_status call_think(const op *o)
{
    ebt_think_opts t = ebt_think_default();
    (void)o;
    t.steps = K; t.restarts = R; t.noise = 0.2; t.alpha_rand = 1.5; t.seed = 5;
    return think_into(&t, 0);
}
/* the stopping rules of issue 12, keep_best and the curvature output
 * (which computes H_pp v at the answers) */
static ebt_status call_think_rules(const op *o)
{
    ebt_think_opts t = ebt_think_default();
    (void)o;
    t.steps = K; t.restarts = R; t.noise = 0.2; t.seed = 5;
    t.rel_drop = 1e-3; t.grad_tol = 1e-4; t.row_budget = (long long)B * S * 3; t.clamp = 0.5; t.keep_best = 1;
    return think_into(&t, 1);
}
static uint64_t result_think(const op *o)
{
    uint64_t h = TEST_FNV0;
    (void)o;
    h = test_fnv(h, G.t_probs, sizeof G.t_probs); h = test_fnv(h, G.t_logits, sizeof G.t_logits);
    h = test_fnv(h, G.t_energy, sizeof G.t_energy); h = test_fnv(h, G.t_fin, sizeof G.t_fin);
    h = test_fnv(h, G.t_steps, sizeof G.t_steps); h = test_fnv(h, G.t_win, sizeof G.t_win);
    h = test_fnv(h, G.t_curv, sizeof G.t_curv);
    HV(h, G.tr.rows_evaluated); HV(h, G.tr.rows_budget); HV(h, G.tr.diverged);
    return digest_model(h, G.m);
}
static void fail_ws_msg(const op *o) { (void)o; CHECK(ebt_ws_last_error(G.ws)[0] != 0); }

/* generate: a window of 6 for 3 + 5 tokens, so it also slides */
static void setup_gen(const op *o)
{
    setup_model(o);
    assert_int_equal(ebt_workspace_create(G.m, 1, S2, &G.ws), EBT_OK);
}
static ebt_status call_generate(const op *o)
{
    ebt_gen_opts g = ebt_gen_default();
    (void)o;
    g.think.steps = 2; g.think.restarts = 2; g.think.noise = 0.1; g.temperature = 0.9; g.top_p = 0.95; g.seed = 3;
    return ebt_generate(G.ws, G.m, tok, NP, NNEW, &g, G.out, G.gen_E, G.gen_p);
}
static uint64_t result_gen(const op *o)
{
    uint64_t h = TEST_FNV0;
    (void)o;
    h = test_fnv(h, G.out, sizeof G.out); h = test_fnv(h, G.gen_E, sizeof G.gen_E); h = test_fnv(h, G.gen_p, sizeof G.gen_p);
    return digest_model(h, G.m);
}

/* model-workspace calls. variant 0: fresh model (no workspace yet);
 * 1: the workspace exists for 1 x 2 and grows to B2 x S2; gradients made
 * non-zero first so "unchanged" means something */
static void setup_grow(const op *o)
{
    G.m = build(o->arch, o->step, o->tied, 0);
    G.ws = NULL;
    if (o->variant == 1) {
        if (o->arch == EBT_ARCH_EBT) assert_int_equal(ebt_energy_backward(G.m, tok, probs, 1, 2, 0, NULL, NULL), EBT_OK);
        else assert_int_equal(ebt_lm_backward(G.m, tok, tgt, 1, 2, &G.loss), EBT_OK);
        assert_non_null(G.m->ws);
    }
}
static void fail_model_msg(const op *o) { (void)o; CHECK(ebt_last_error(G.m)[0] != 0); }
static ebt_status call_energy(const op *o) { (void)o; return ebt_energy(G.m, tok, probs, B2, S2, 1, G.E, G.g); }
static ebt_status call_hvp(const op *o) { (void)o; return ebt_hvp(G.m, tok, probs, B2, S2, 1, vdir, G.hv); }
static ebt_status call_energy_bwd(const op *o) { (void)o; return ebt_energy_backward(G.m, tok, probs, B2, S2, 1, NULL, G.E); }
static ebt_status call_mixed_bwd(const op *o) { (void)o; return ebt_mixed_backward(G.m, tok, probs, B2, S2, 1, vdir, G.hv, G.g); }
static ebt_status call_lm_logits(const op *o) { (void)o; return ebt_lm_logits(G.m, tok, B2, S2, G.logits); }
static ebt_status call_lm_bwd(const op *o) { (void)o; return ebt_lm_backward(G.m, tok, tgt, B2, S2, &G.loss); }
static uint64_t result_outputs(const op *o)
{
    uint64_t h = TEST_FNV0;
    (void)o;
    h = test_fnv(h, G.E, sizeof G.E); h = test_fnv(h, G.g, sizeof G.g); h = test_fnv(h, G.hv, sizeof G.hv);
    h = test_fnv(h, G.logits, sizeof G.logits); HV(h, G.loss);
    return digest_model(h, G.m);
}

/* training. variant 0: fresh model (allocates workspace, scratch, replay
 * buffer, optimiser state); 1: after 2 steps on B x S, a step on B2 x S
 * (grows workspace and scratch; the replay buffer is used); 2: after 2 steps,
 * a step on B x S2 (grows, and re-sizes the replay buffer) */
static void setup_train(const op *o)
{
    G.m = build(o->arch, o->step, o->tied, o->variant ? 2 : 0);
    G.ws = NULL;
}
static ebt_status call_train_step(const op *o)
{
    ebt_train_opts t = train_opts();
    memset(&G.stats, 0, sizeof G.stats);
    return ebt_train_step(G.m, &t, tok, tgt, o->variant == 1 ? B2 : B, o->variant == 2 ? S2 : S, NULL, &G.stats);
}
static ebt_status call_train_grad(const op *o)
{
    ebt_train_opts t = train_opts();
    memset(&G.stats, 0, sizeof G.stats);
    return ebt_train_grad(G.m, &t, tok, tgt, o->variant == 1 ? B2 : B, o->variant == 2 ? S2 : S, NULL, NULL, &G.stats);
}
static uint64_t result_train(const op *o)
{
    uint64_t h = TEST_FNV0;
    (void)o;
    HV(h, G.stats.loss); HV(h, G.stats.ce_first); HV(h, G.stats.ce_last); HV(h, G.stats.energy_first);
    HV(h, G.stats.energy_last); HV(h, G.stats.grad_norm); HV(h, G.stats.lr); HV(h, G.stats.alpha);
    HV(h, G.stats.k); HV(h, G.stats.step);
    return digest_model(h, G.m);
}

/* thread counts: more threads than the workspace was sized for re-size its
 * attention scratch (with OpenMP) */
static ebt_status call_ws_threads(const op *o) { (void)o; return ebt_workspace_set_threads(G.ws, 5); }
static ebt_status call_model_threads(const op *o) { (void)o; return ebt_set_threads(G.m, 5); }
static snap state_threads(const op *o)
{
    snap s = model_snap(G.m);
    int a = ebt_workspace_threads(G.ws), b = G.m->ws ? ebt_workspace_threads(G.m->ws) : -1, c = G.m->threads;
    (void)o;
    s.other = TEST_FNV0;
    HV(s.other, a); HV(s.other, b); HV(s.other, c);
    return s;
}
static uint64_t result_threads(const op *o)
{
    snap s = state_threads(o);
    uint64_t h = digest_model(s.other, G.m);
    /* the workspaces still work, with the same bits */
    CHECK(ebt_energy(G.m, tok, probs, B, S, 1, G.E, G.g) == EBT_OK);
    h = test_fnv(h, G.E, sizeof(ebt_real) * B * S);
    if (G.ws) {
        CHECK(call_think(o) == EBT_OK);
        h = result_think(o) ^ h;
    }
    return h;
}

/* save over an existing file (an older checkpoint) */
static void setup_save(const op *o)
{
    FILE *f;
    G.m = build(o->arch, o->step, o->tied, 2);
    G.ws = NULL;
    assert_non_null(f = fopen(G.path, "wb"));
    assert_int_equal(fwrite(G.old, 1, G.old_n, f), G.old_n);
    fclose(f);
}
static ebt_status call_save(const op *o) { (void)o; G.err[0] = 0; return ebt_save_ex(G.m, G.path, G.err, sizeof G.err); }
static snap state_save(const op *o)
{
    snap s = model_snap(G.m);
    int n = test_count_entries(G.dir);
    (void)o;
    s.other = test_hash_file(G.path);
    HV(s.other, n);   /* no temporary file left behind */
    return s;
}
static void fail_save(const op *o) { (void)o; CHECK(G.err[0] != 0); }
static uint64_t result_save(const op *o)
{
    uint64_t h = test_hash_file(G.path);
    int n = test_count_entries(G.dir);
    (void)o;
    HV(h, n);
    return digest_model(h, G.m);
}

/* ---- the sweep ---- */
static long run_sweep(const op *o, uint64_t ref, int sticky)
{
    long base = ta_live;
    size_t base_b = ta_bytes;
    int fd0 = probe_fd();
    cur_sticky = sticky;
    for (long n = 1;; n++) {
        ebt_status st;
        long inj, held;
        snap before;
        cur_n = n;
        o->setup(o);
        before = o->state(o);
        held = ta_live;
        ta_arm(n, sticky);
        st = o->call(o);
        inj = ta_disarm();
        if (inj && o->on_fail) o->on_fail(o);   /* first: returned no object */
        if (inj && o->returns_object) CHECK(ta_live == held);  /* the failed call left nothing allocated */
        if (!inj) {
            CHECK(st == EBT_OK);
            if (st == EBT_OK) CHECK(o->result(o) == ref);
            o->teardown(o);
            CHECK(ta_live == base && ta_bytes == base_b);
            CHECK(probe_fd() == fd0);
            return n - 1;
        }
        if (st != EBT_ERR_NOMEM) {
            CHECK(st == EBT_ERR_NOMEM);
            printf("    (got %s)\n", ebt_status_str(st));
        }
        snap_check(before, o->state(o));
        CHECK(probe_fd() == fd0);
        /* allocator restored: the same call succeeds, with the same result */
        st = o->call(o);
        CHECK(st == EBT_OK);
        if (st == EBT_OK) CHECK(o->result(o) == ref);
        o->teardown(o);
        CHECK(ta_live == base && ta_bytes == base_b);
        CHECK(probe_fd() == fd0);
        if (n > 10000) { CHECK(!"sweep does not terminate"); return n; }
    }
}

static int sweep(const op *o)
{
    uint64_t ref;
    long n1, n2, base = ta_live;
    ebt_status st;
    cur_op = o->name;
    cur_n = 0;
    cur_sticky = 0;
    op_fails = 0;
    o->setup(o);   /* reference: nothing fails */
    st = o->call(o);
    if (st != EBT_OK) printf("  %s: reference run failed: %s\n", o->name, ebt_status_str(st));
    assert_int_equal(st, EBT_OK);
    ref = o->result(o);
    o->teardown(o);
    assert_int_equal(ta_live, base);
    n1 = run_sweep(o, ref, 0);
    n2 = run_sweep(o, ref, 1);
    printf("  %-42s %3ld failure points (%ld sticky)%s\n", o->name, n1, n2, op_fails ? "  <-- FAILED" : "");
    CHECK((n1 >= 1 || o->may_not_allocate) && n1 == n2);  /* the call does allocate, and stops at its first failure */
    return (int)n1;
}

static int sweep_all(const op *ops, int n)
{
    int total = 0, fails0 = total_fails;
    for (int i = 0; i < n; i++) total += sweep(&ops[i]);
    printf("  %d failure points, %d check failures\n", total, total_fails - fails0);
    return total_fails - fails0;
}

static void test_create_load(void **state)
{
    const op ops[] = {
        { "ebt_create (ebt)", EBT_ARCH_EBT, 0, 0, 0, setup_none, call_create, result_model, state_none, fail_no_model, 1, teardown_all, 0 },
        { "ebt_create (ebt, step embed, tied)", EBT_ARCH_EBT, 3, 1, 0, setup_none, call_create, result_model, state_none, fail_no_model, 1, teardown_all, 0 },
        { "ebt_create (transformer++)", EBT_ARCH_TRANSFORMER, 0, 0, 0, setup_none, call_create, result_model, state_none, fail_no_model, 1, teardown_all, 0 },
        { "ebt_load_ex (ebt, optimiser + replay)", EBT_ARCH_EBT, 0, 0, 0, setup_none, call_load, result_load, state_none, fail_load, 1, teardown_all, 0 },
        { "ebt_load_ex (transformer++, optimiser)", EBT_ARCH_TRANSFORMER, 0, 0, 0, setup_none, call_load, result_load, state_none, fail_load, 1, teardown_all, 0 },
        { "ebt_workspace_create (ebt, step embed)", EBT_ARCH_EBT, 3, 0, 0, setup_model, call_ws_create, result_ws, state_m, fail_no_ws, 1, teardown_all, 0 },
        { "ebt_workspace_create (transformer++)", EBT_ARCH_TRANSFORMER, 0, 0, 0, setup_model, call_ws_create, result_ws, state_m, fail_no_ws, 1, teardown_all, 0 },
    };
    ebt_model *m;
    (void)state;
    /* checkpoints with optimiser state (and, for ebt, a replay buffer) */
    m = build(EBT_ARCH_EBT, 2, 0, 3);
    assert_true(m->opt.m != NULL && m->rb.count > 0);
    assert_int_equal(ebt_save(m, G.ckpt_ebt), EBT_OK);
    ebt_free(m);
    m = build(EBT_ARCH_TRANSFORMER, 0, 0, 2);
    assert_true(m->opt.m != NULL);
    assert_int_equal(ebt_save(m, G.ckpt_tr), EBT_OK);
    ebt_free(m);
    assert_int_equal(sweep_all(ops, (int)(sizeof ops / sizeof ops[0])), 0);
}

static void test_think_generate(void **state)
{
    const op ops[] = {
        { "ebt_think (restarts 3, noise)", EBT_ARCH_EBT, 0, 0, 0, setup_model_ws, call_think, result_think, state_m, fail_ws_msg, 0, teardown_all, 0 },
        { "ebt_think (step embed, restarts 3, noise)", EBT_ARCH_EBT, 3, 1, 0, setup_model_ws, call_think, result_think, state_m, fail_ws_msg, 0, teardown_all, 0 },
        { "ebt_think (stopping rules, keep_best, curvature)", EBT_ARCH_EBT, 3, 1, 0, setup_model_ws, call_think_rules, result_think, state_m, fail_ws_msg, 0, teardown_all, 0 },
        { "ebt_generate (ebt, KV cache)", EBT_ARCH_EBT, 0, 0, 0, setup_gen, call_generate, result_gen, state_m, fail_ws_msg, 0, teardown_all, 0 },
        { "ebt_generate (ebt, step embed)", EBT_ARCH_EBT, 2, 0, 0, setup_gen, call_generate, result_gen, state_m, fail_ws_msg, 0, teardown_all, 0 },
        { "ebt_generate (transformer++)", EBT_ARCH_TRANSFORMER, 0, 0, 0, setup_gen, call_generate, result_gen, state_m, fail_ws_msg, 0, teardown_all, 0 },
    };
    (void)state;
    assert_int_equal(sweep_all(ops, (int)(sizeof ops / sizeof ops[0])), 0);
}

static void test_model_workspace(void **state)
{
    const op ops[] = {
        { "ebt_energy (first use)", EBT_ARCH_EBT, 0, 0, 0, setup_grow, call_energy, result_outputs, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_energy (grows, step embed)", EBT_ARCH_EBT, 3, 0, 1, setup_grow, call_energy, result_outputs, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_hvp (first use)", EBT_ARCH_EBT, 0, 0, 0, setup_grow, call_hvp, result_outputs, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_hvp (grows)", EBT_ARCH_EBT, 0, 1, 1, setup_grow, call_hvp, result_outputs, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_energy_backward (grows)", EBT_ARCH_EBT, 0, 0, 1, setup_grow, call_energy_bwd, result_outputs, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_mixed_backward (grows)", EBT_ARCH_EBT, 2, 0, 1, setup_grow, call_mixed_bwd, result_outputs, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_lm_logits (first use)", EBT_ARCH_TRANSFORMER, 0, 0, 0, setup_grow, call_lm_logits, result_outputs, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_workspace_set_threads (5)", EBT_ARCH_EBT, 0, 0, 0, setup_model_ws, call_ws_threads, result_threads, state_threads, fail_ws_msg, 0, teardown_all, NO_OMP },
        { "ebt_set_threads (5)", EBT_ARCH_EBT, 2, 0, 1, setup_grow, call_model_threads, result_threads, state_threads, fail_model_msg, 0, teardown_all, NO_OMP },
        { "ebt_lm_backward (grows)", EBT_ARCH_TRANSFORMER, 0, 0, 1, setup_grow, call_lm_bwd, result_outputs, state_m, fail_model_msg, 0, teardown_all, 0 },
    };
    (void)state;
    assert_int_equal(sweep_all(ops, (int)(sizeof ops / sizeof ops[0])), 0);
}

static void test_train(void **state)
{
    const op ops[] = {
        { "ebt_train_grad (ebt, first use)", EBT_ARCH_EBT, 0, 0, 0, setup_train, call_train_grad, result_train, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_train_grad (ebt step, grows S)", EBT_ARCH_EBT, 2, 0, 2, setup_train, call_train_grad, result_train, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_train_grad (transformer++, grows S)", EBT_ARCH_TRANSFORMER, 0, 0, 2, setup_train, call_train_grad, result_train, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_train_step (ebt, first step)", EBT_ARCH_EBT, 0, 0, 0, setup_train, call_train_step, result_train, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_train_step (ebt step+tied, first step)", EBT_ARCH_EBT, 3, 1, 0, setup_train, call_train_step, result_train, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_train_step (ebt, grows B, replays)", EBT_ARCH_EBT, 0, 0, 1, setup_train, call_train_step, result_train, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_train_step (ebt step, grows S)", EBT_ARCH_EBT, 2, 0, 2, setup_train, call_train_step, result_train, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_train_step (transformer++, first step)", EBT_ARCH_TRANSFORMER, 0, 0, 0, setup_train, call_train_step, result_train, state_m, fail_model_msg, 0, teardown_all, 0 },
        { "ebt_train_step (transformer++, grows S)", EBT_ARCH_TRANSFORMER, 0, 0, 2, setup_train, call_train_step, result_train, state_m, fail_model_msg, 0, teardown_all, 0 },
    };
    (void)state;
    assert_int_equal(sweep_all(ops, (int)(sizeof ops / sizeof ops[0])), 0);
}

static void test_save(void **state)
{
    const op ops[] = {
        { "ebt_save (ebt, optimiser + replay)", EBT_ARCH_EBT, 2, 0, 0, setup_save, call_save, result_save, state_save, fail_save, 0, teardown_all, 0 },
        { "ebt_save (transformer++, optimiser)", EBT_ARCH_TRANSFORMER, 0, 0, 0, setup_save, call_save, result_save, state_save, fail_save, 0, teardown_all, 0 },
    };
    ebt_model *m = build(EBT_ARCH_EBT, 1, 1, 0);  /* the old file: another model */
    FILE *f;
    long sz;
    (void)state;
    assert_int_equal(ebt_save(m, G.path), EBT_OK);
    ebt_free(m);
    assert_non_null(f = fopen(G.path, "rb"));
    fseek(f, 0, SEEK_END); sz = ftell(f); fseek(f, 0, SEEK_SET);
    G.old_n = (size_t)sz;
    G.old = (unsigned char *)malloc(G.old_n);
    assert_int_equal(fread(G.old, 1, G.old_n, f), G.old_n);
    fclose(f);
    assert_int_equal(test_count_entries(G.dir), 1);
    assert_int_equal(sweep_all(ops, (int)(sizeof ops / sizeof ops[0])), 0);
    free(G.old);
    G.old = NULL;
    remove(G.path);
}

/* Not an allocation failure, but the same promise: a step refused as
 * non-finite (here an update that overflows float: lr 1e300) leaves the
 * parameters, optimiser state and replay buffer unchanged (ebt.h), also when
 * the batch has a new shape that needs a re-sized replay buffer. */
static void test_refused_step(void **state)
{
    ebt_model *m = build(EBT_ARCH_EBT, 0, 0, 2);
    ebt_train_opts o = train_opts();
    snap before, after;
    ebt_status st;
    (void)state;
    o.lr = 1e300;
    o.warmup_steps = 0;
    before = model_snap(m);
    assert_true(m->rb.count > 0 && m->rb.S == S);
    for (int s2 = 0; s2 < 2; s2++) {
        st = ebt_train_step(m, &o, tok, tgt, B, s2 ? S2 : S, NULL, NULL);
        if (st != EBT_ERR_NONFINITE) printf("  S=%d: %s (%s)\n", s2 ? S2 : S, ebt_status_str(st), ebt_last_error(m));
        assert_int_equal(st, EBT_ERR_NONFINITE);
        after = model_snap(m);
        assert_true(after.params == before.params);
        if (after.train != before.train)
            printf("  refused step on B=%d S=%d changed the training state (replay buffer: %d sequences of %d, was %d of %d)\n",
                   B, s2 ? S2 : S, m->rb.count, m->rb.S, 4, S);
        assert_true(after.train == before.train);
    }
    ebt_free(m);
    assert_int_equal(ta_live, 0);
}

static int group_setup(void **state)
{
    char ck[64];
    (void)state;
    for (int i = 0; i < B2 * S2; i++) { tok[i] = (int32_t)(test_unif() * V); tgt[i] = (int32_t)(test_unif() * V); }
    test_random_probs(probs, B2 * S2, V, 1.5);
    for (int i = 0; i < B2 * S2 * V; i++) vdir[i] = (ebt_real)test_normal();
    /* the save target in a directory of its own (to see leftover temporary files) */
    snprintf(G.dir, sizeof G.dir, "/tmp/ebt_alloc.XXXXXX");
    snprintf(ck, sizeof ck, "/tmp/ebt_alloc_ck.XXXXXX");
    if (!mkdtemp(G.dir) || !mkdtemp(ck)) return -1;
    snprintf(G.path, sizeof G.path, "%s/m.safetensors", G.dir);
    snprintf(G.ckpt_ebt, sizeof G.ckpt_ebt, "%s/e.safetensors", ck);
    snprintf(G.ckpt_tr, sizeof G.ckpt_tr, "%s/t.safetensors", ck);
    return 0;
}

static int group_teardown(void **state)
{
    char ck[128];
    (void)state;
    remove(G.path);
    rmdir(G.dir);
    remove(G.ckpt_ebt);
    remove(G.ckpt_tr);
    snprintf(ck, sizeof ck, "%s", G.ckpt_ebt);
    *strrchr(ck, '/') = 0;
    rmdir(ck);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_load),
        cmocka_unit_test(test_think_generate),
        cmocka_unit_test(test_model_workspace),
        cmocka_unit_test(test_train),
        cmocka_unit_test(test_save),
        cmocka_unit_test(test_refused_step),
    };
    return cmocka_run_group_tests_name("allocation failures", tests, group_setup, group_teardown);
}
