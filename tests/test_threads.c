/* Threads (ebt.h THREADS): 4 threads share one model, each with its own
 * workspace, and run ebt_think (restarts, Langevin noise, random step
 * sizes; seeded), ebt_observe + ebt_ws_energy, ebt_ws_hvp and ebt_generate
 * at the same time, several times each, on an ebt model without and with a
 * step embedding and (generation) a transformer++ model. Every result must
 * be bit-for-bit (memcmp) the result of the same call made single-threaded
 * beforehand. The threads' workspaces also use different kernel thread
 * counts (ebt_workspace_set_threads), which must not change a bit either.
 * test_kernel_threads sets OpenBLAS to one thread, so that ebt splits the
 * products and kernels over its own threads (sizes large enough for every
 * parallel loop to run split), and checks energy, HVP, thinking and train
 * steps of both archs give the same bits on 1, 2 and 3 threads. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <cblas.h>
#include "../ebt.h"
#include "test_util.h"

enum { NT = 4, REPS = 5, NJOB = 6, B = 2, S = 6, V = 29, K = 3, NPROMPT = 4, NNEW = 8, GEN_S = 8, NMODEL = 3 };

typedef struct {
    /* ebt_think */
    ebt_real t_probs[B * S * V], t_logits[B * S * V], t_energy[B * S * (K + 1)], t_fin[B * S];
    int t_steps[B * S], t_win[B * S];
    long long t_rows, t_budget;
    int t_div;
    /* ebt_observe + ebt_ws_energy */
    ebt_real e_E[B * S], e_g[B * S * V];
    /* ebt_ws_hvp */
    ebt_real h_hv[B * S * V], h_E[B * S], h_g[B * S * V];
    /* ebt_generate */
    int32_t g_out[NNEW];
    ebt_real g_E[NNEW], g_p[NNEW * V];
    ebt_status st[4];
} result;

typedef struct {
    int32_t tok[B * S], prompt[NPROMPT];
    ebt_real probs[B * S * V], v[B * S * V];
} job;

static ebt_model *models[NMODEL];   /* ebt, ebt with step embedding (tied), transformer++ */
static job jobs[NJOB];
static result ref[NMODEL][NJOB];

static ebt_model *make(ebt_arch arch, int step, int tied)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.arch = arch; c.vocab_size = V; c.d_model = 16; c.n_heads = 2; c.d_ff = 24; c.n_layers = 2; c.max_seq_len = 16;
    c.n_step_embed = step; c.tie_pred_embed = tied; c.alpha = 0.7;
    assert_int_equal(ebt_create(&c, 31 + (uint64_t)step, &m), EBT_OK);
    return m;
}

/* every call of one job on model mi, through ws (energy) and gws (generation) */
static void run_job(ebt_workspace *ws, ebt_workspace *gws, int mi, int j, result *r)
{
    const ebt_model *m = models[mi];
    const job *J = &jobs[j];
    ebt_gen_opts g = ebt_gen_default();
    memset(r, 0, sizeof *r);
    if (ebt_model_config(m)->arch == EBT_ARCH_EBT) {
        ebt_think_opts o = ebt_think_default();
        ebt_think_result tr;
        o.steps = K; o.restarts = 2; o.noise = 0.3; o.alpha_rand = 1.3; o.seed = 100 + (uint64_t)j;
        memset(&tr, 0, sizeof tr);
        tr.probs = r->t_probs; tr.logits = r->t_logits; tr.energy = r->t_energy; tr.final_energy = r->t_fin;
        tr.steps_taken = r->t_steps; tr.winner = r->t_win;
        r->st[0] = ebt_think(ws, m, J->tok, B, S, &o, &tr);
        r->t_rows = tr.rows_evaluated; r->t_budget = tr.rows_budget; r->t_div = tr.diverged;
        r->st[1] = ebt_observe(ws, m, J->tok, B, S, j % 3);
        if (r->st[1] == EBT_OK) r->st[1] = ebt_ws_energy(ws, J->probs, r->e_E, r->e_g);
        if (r->st[1] == EBT_OK) r->st[2] = ebt_ws_hvp(ws, J->probs, J->v, r->h_hv, r->h_E, r->h_g);
    }
    g.think.steps = 2; g.think.restarts = 2; g.think.noise = 0.1; g.think.seed = (uint64_t)j;
    g.temperature = 1; g.top_p = 0.9; g.seed = 1000 + (uint64_t)j;
    r->st[3] = ebt_generate(gws, m, J->prompt, NPROMPT, NNEW, &g, r->g_out, r->g_E, r->g_p);
}

/* which part of a result differs from the reference ("" if none) */
static const char *diff(const result *a, const result *b)
{
#define CMP(f) if (memcmp(&a->f, &b->f, sizeof a->f) != 0) return #f
    CMP(st);
    CMP(t_probs); CMP(t_logits); CMP(t_energy); CMP(t_fin); CMP(t_steps); CMP(t_win);
    CMP(t_rows); CMP(t_budget); CMP(t_div);
    CMP(e_E); CMP(e_g);
    CMP(h_hv); CMP(h_E); CMP(h_g);
    CMP(g_out); CMP(g_E); CMP(g_p);
#undef CMP
    return "";
}

typedef struct {
    int id;
    ebt_workspace *ws[NMODEL], *gws[NMODEL];
    pthread_barrier_t *bar;
    int compared, mismatched;
    char first[160];
    result r;
} worker;

static void *work(void *arg)
{
    worker *w = (worker *)arg;
    pthread_barrier_wait(w->bar);   /* all threads start together */
    for (int rep = 0; rep < REPS; rep++)
        for (int k = 0; k < NJOB * NMODEL; k++) {
            /* each thread walks the (model, job) pairs in its own order */
            int idx = (k * 5 + w->id * 7 + rep * 4) % (NJOB * NMODEL), mi = idx % NMODEL, j = idx / NMODEL;
            const char *d;
            run_job(w->ws[mi], w->gws[mi], mi, j, &w->r);
            d = diff(&w->r, &ref[mi][j]);
            w->compared++;
            if (*d) {
                if (!w->mismatched)
                    snprintf(w->first, sizeof w->first, "thread %d rep %d model %d job %d: %s differs", w->id, rep, mi, j, d);
                w->mismatched++;
            }
        }
    return NULL;
}

static void test_threads(void **state)
{
    static worker w[NT];
    static result single;
    pthread_t th[NT];
    pthread_barrier_t bar;
    ebt_workspace *ws, *gws;
    int compared = 0, mismatched = 0, generated_differ = 0;
    (void)state;
    models[0] = make(EBT_ARCH_EBT, 0, 0);
    models[1] = make(EBT_ARCH_EBT, 3, 1);
    models[2] = make(EBT_ARCH_TRANSFORMER, 0, 0);
    for (int j = 0; j < NJOB; j++) {
        for (int i = 0; i < B * S; i++) jobs[j].tok[i] = (int32_t)(test_unif() * V);
        for (int i = 0; i < NPROMPT; i++) jobs[j].prompt[i] = (int32_t)(test_unif() * V);
        test_random_probs(jobs[j].probs, B * S, V, 1.0 + j);
        for (int i = 0; i < B * S * V; i++) jobs[j].v[i] = (ebt_real)test_normal();
    }
    /* the references, single-threaded, each job in fresh workspaces */
    for (int mi = 0; mi < NMODEL; mi++)
        for (int j = 0; j < NJOB; j++) {
            assert_int_equal(ebt_workspace_create(models[mi], B, S, &ws), EBT_OK);
            assert_int_equal(ebt_workspace_create(models[mi], 1, GEN_S, &gws), EBT_OK);
            run_job(ws, gws, mi, j, &ref[mi][j]);
            for (int c = 0; c < 4; c++) {   /* (transformer++ runs generation only) */
                if (ref[mi][j].st[c] != EBT_OK) printf("  model %d job %d call %d: %s\n", mi, j, c, ebt_status_str(ref[mi][j].st[c]));
                assert_int_equal(ref[mi][j].st[c], EBT_OK);
            }
            /* the same calls again in the same workspaces: deterministic */
            run_job(ws, gws, mi, j, &single);
            assert_string_equal(diff(&single, &ref[mi][j]), "");
            if (j > 0 && memcmp(ref[mi][j].g_out, ref[mi][0].g_out, sizeof single.g_out) != 0) generated_differ++;
            ebt_workspace_free(ws);
            ebt_workspace_free(gws);
        }
    assert_true(generated_differ > 0);   /* the jobs are not all alike */
    /* 4 threads at once; each has its own workspaces, with 1..3 kernel threads */
    assert_int_equal(pthread_barrier_init(&bar, NULL, NT), 0);
    for (int t = 0; t < NT; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].id = t;
        w[t].bar = &bar;
        for (int mi = 0; mi < NMODEL; mi++) {
            assert_int_equal(ebt_workspace_create(models[mi], B, S, &w[t].ws[mi]), EBT_OK);
            assert_int_equal(ebt_workspace_create(models[mi], 1, GEN_S, &w[t].gws[mi]), EBT_OK);
            assert_int_equal(ebt_workspace_set_threads(w[t].ws[mi], 1 + t % 3), EBT_OK);
            assert_int_equal(ebt_workspace_set_threads(w[t].gws[mi], 1 + (t + 1) % 3), EBT_OK);
        }
    }
    for (int t = 0; t < NT; t++) assert_int_equal(pthread_create(&th[t], NULL, work, &w[t]), 0);
    for (int t = 0; t < NT; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
    pthread_barrier_destroy(&bar);
    for (int t = 0; t < NT; t++) {
        compared += w[t].compared;
        mismatched += w[t].mismatched;
        if (w[t].mismatched) printf("  %s (%d mismatches in this thread)\n", w[t].first, w[t].mismatched);
        for (int mi = 0; mi < NMODEL; mi++) { ebt_workspace_free(w[t].ws[mi]); ebt_workspace_free(w[t].gws[mi]); }
    }
    printf("  %d threads: %d (model, job) runs compared (%d calls), %d differ from single-threaded\n", NT, compared,
           NT * REPS * NJOB * (4 + 4 + 1), mismatched);
    assert_int_equal(compared, NT * REPS * NJOB * NMODEL);
    assert_int_equal(mismatched, 0);
    for (int mi = 0; mi < NMODEL; mi++) ebt_free(models[mi]);
}

/* ebt's own threads (OpenBLAS single-threaded): 1, 2, 3 threads, same bits */
enum { KB = 8, KS = 40, KV = 64 };
typedef struct {
    ebt_real E[KB * KS], g[KB * KS * KV], hv[KB * KS * KV], tp[KB * KS * KV], te[KB * KS * 3];
    uint64_t h_ebt, h_tf;
    double loss_ebt, loss_tf;
} kresult;

static void kernel_run(int threads, const int32_t *tok, const int32_t *tgt, const ebt_real *p, const ebt_real *v, kresult *r)
{
    ebt_config c = ebt_config_default();
    ebt_model *m, *tf;
    ebt_workspace *ws;
    ebt_think_opts o = ebt_think_default();
    ebt_think_result tr;
    ebt_train_opts to = ebt_train_default();
    ebt_train_stats st;
    c.vocab_size = KV; c.d_model = 32; c.n_heads = 2; c.d_ff = 48; c.n_layers = 2; c.max_seq_len = KS;
    assert_int_equal(ebt_create(&c, 5, &m), EBT_OK);
    c.arch = EBT_ARCH_TRANSFORMER;
    assert_int_equal(ebt_create(&c, 6, &tf), EBT_OK);
    assert_int_equal(ebt_workspace_create(m, KB, KS, &ws), EBT_OK);
    assert_int_equal(ebt_workspace_set_threads(ws, threads), EBT_OK);
    assert_int_equal(ebt_workspace_threads(ws), threads);
    assert_int_equal(ebt_observe(ws, m, tok, KB, KS, 0), EBT_OK);
    assert_int_equal(ebt_ws_energy(ws, p, r->E, r->g), EBT_OK);
    assert_int_equal(ebt_ws_hvp(ws, p, v, r->hv, NULL, NULL), EBT_OK);
    o.steps = 2; o.noise = 0.2; o.alpha_rand = 2; o.seed = 9;
    memset(&tr, 0, sizeof tr);
    tr.probs = r->tp; tr.energy = r->te;
    assert_int_equal(ebt_think(ws, m, tok, KB, KS, &o, &tr), EBT_OK);
    assert_int_equal(ebt_set_threads(m, threads), EBT_OK);
    assert_int_equal(ebt_set_threads(tf, threads), EBT_OK);
    to.k_min = 1; to.k_max = 3; to.noise = 0.3; to.alpha_rand = 2; to.replay_capacity = 16; to.replay_frac = 0.25;
    for (int mode = 0; mode < 3; mode++) {
        to.mode = (ebt_mode)mode;
        assert_int_equal(ebt_train_step(m, &to, tok, tgt, KB, KS, NULL, &st), EBT_OK);
    }
    r->loss_ebt = st.loss;
    for (int i = 0; i < 2; i++) assert_int_equal(ebt_train_step(tf, &to, tok, tgt, KB, KS, NULL, &st), EBT_OK);
    r->loss_tf = st.loss;
    r->h_ebt = test_hash_params(m);
    r->h_tf = test_hash_params(tf);
    ebt_workspace_free(ws);
    ebt_free(m);
    ebt_free(tf);
}

static void test_kernel_threads(void **state)
{
    static int32_t tok[KB * KS], tgt[KB * KS];
    static ebt_real p[KB * KS * KV], v[KB * KS * KV];
    static kresult r[3];
    int saved = openblas_get_num_threads();
    (void)state;
    for (int i = 0; i < KB * KS; i++) { tok[i] = (int32_t)(test_unif() * KV); tgt[i] = (int32_t)(test_unif() * KV); }
    test_random_probs(p, KB * KS, KV, 1.0);
    for (int i = 0; i < KB * KS * KV; i++) v[i] = (ebt_real)test_normal();
    openblas_set_num_threads(1);
    for (int t = 0; t < 3; t++) kernel_run(t + 1, tok, tgt, p, v, &r[t]);
    openblas_set_num_threads(saved);
    for (int t = 1; t < 3; t++) {
        assert_memory_equal(r[t].E, r[0].E, sizeof r[0].E);
        assert_memory_equal(r[t].g, r[0].g, sizeof r[0].g);
        assert_memory_equal(r[t].hv, r[0].hv, sizeof r[0].hv);
        assert_memory_equal(r[t].tp, r[0].tp, sizeof r[0].tp);
        assert_memory_equal(r[t].te, r[0].te, sizeof r[0].te);
        assert_true(r[t].loss_ebt == r[0].loss_ebt && r[t].loss_tf == r[0].loss_tf);
        assert_true(r[t].h_ebt == r[0].h_ebt && r[t].h_tf == r[0].h_tf);
    }
    printf("  ebt kernels on 1, 2, 3 threads (OpenBLAS 1): energy, dE/dp, H v, thinking, 3+2 train steps identical\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_kernel_threads),
    };
    return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
