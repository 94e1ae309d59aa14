/* fuzz_load.c - libFuzzer harness for the checkpoint loader (ebt_load_ex).
 *
 * Each input is written to an in-memory file and loaded. A refused input
 * must leave *out NULL and say why in err. A loaded model must
 *   - have a config that ebt_config_check accepts and finite parameters,
 *   - save (ebt_save_ex) and load back identical: config, every parameter,
 *     optimiser state and replay buffer, bit for bit,
 *   - if small (<= 200k parameters, V <= 4096), evaluate: ebt_energy with
 *     B=1, S=min(2, max_seq_len) and uniform probs (arch ebt) or
 *     ebt_lm_logits (transformer++); if tiny (<= 20k parameters, V <= 256)
 *     with optimiser state or a replay buffer, take one ebt_train_step
 *     that uses them,
 * and everything is freed (LeakSanitizer checks). Built by `make fuzz`:
 *   clang -std=c99 -fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_load.c -lopenblas -lm
 * Seeds: tests/fuzz/make_corpus.c.
 *
 * ebt.c is included to compare the internal state (optimiser moments,
 * replay ring) of the two models. */
#define _GNU_SOURCE
#include "../../ebt.c"
#include "fuzz_util.h"

#define SMALL_PARAMS 200000
#define SMALL_V 4096
#define TINY_PARAMS 20000
#define TINY_V 256


#define FAIL(...) do { fprintf(stderr, "fuzz_load: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fuzz_files_init("ebt_fuzz_load");
    return 0;
}

static int same_config(const ebt_config *a, const ebt_config *b)
{
    return a->arch == b->arch && a->vocab_size == b->vocab_size && a->d_model == b->d_model &&
           a->n_layers == b->n_layers && a->n_heads == b->n_heads && a->d_ff == b->d_ff &&
           a->max_seq_len == b->max_seq_len && a->n_step_embed == b->n_step_embed &&
           a->tie_pred_embed == b->tie_pred_embed && a->rope_theta == b->rope_theta &&
           a->norm_eps == b->norm_eps && memcmp(&a->alpha, &b->alpha, sizeof a->alpha) == 0;
}

static int same_bits(const void *a, const void *b, size_t n)
{
    return (!a && !b) || (a && b && memcmp(a, b, n) == 0);
}

/* saves m, loads it back and compares */
static void check_round_trip(const ebt_model *m)
{
    char err[256] = "";
    ebt_model *r = NULL;
    ebt_status st = ebt_save_ex(m, fuzz_scratch, err, sizeof err);
    if (st != EBT_OK) FAIL("a loaded model does not save: %s: %s", ebt_status_str(st), err);
    st = ebt_load_ex(fuzz_scratch, &r, err, sizeof err);
    if (st != EBT_OK) FAIL("a saved model does not load: %s: %s", ebt_status_str(st), err);
    unlink(fuzz_scratch);
    if (!same_config(&m->cfg, &r->cfg)) FAIL("config changed by save + load");
    if (m->n_params != r->n_params || m->nt != r->nt) FAIL("parameter count changed by save + load");
    for (int i = 0; i < m->nt; i++)
        if (strcmp(m->t[i].name, r->t[i].name) != 0) FAIL("tensor %d renamed by save + load", i);
    if (!same_bits(m->params, r->params, m->n_params * sizeof(ebt_real))) FAIL("parameters changed by save + load");
    if (m->opt.step != r->opt.step) FAIL("optim.step changed by save + load");
    if (!same_bits(m->opt.m, r->opt.m, m->opt.m ? m->n_params * sizeof(ebt_real) : 0) ||
        !same_bits(m->opt.v, r->opt.v, m->opt.v ? m->n_params * sizeof(ebt_real) : 0))
        FAIL("optimiser moments changed by save + load");
    if (m->rb.count != r->rb.count || (m->rb.count && (m->rb.cap != r->rb.cap || m->rb.next != r->rb.next || m->rb.S != r->rb.S)))
        FAIL("replay buffer shape changed by save + load");
    if (m->rb.count) {
        size_t n = (size_t)m->rb.count * m->rb.S;
        if (memcmp(m->rb.tok, r->rb.tok, n * sizeof(int32_t)) != 0 || memcmp(m->rb.tgt, r->rb.tgt, n * sizeof(int32_t)) != 0 ||
            memcmp(m->rb.y, r->rb.y, n * (size_t)m->cfg.vocab_size * sizeof(ebt_real)) != 0)
            FAIL("replay buffer contents changed by save + load");
    }
    ebt_free(r);
}

static void check_ok_or_nonfinite(ebt_status st, const ebt_model *m, const char *what)
{
    if (st != EBT_OK && st != EBT_ERR_NONFINITE) FAIL("%s on a loaded model: %s: %s", what, ebt_status_str(st), ebt_last_error(m));
}

/* a little evaluation, and a training step when there is state to resume */
static void exercise(ebt_model *m)
{
    const ebt_config *c = ebt_model_config(m);
    const int V = c->vocab_size, is_ebt = c->arch == EBT_ARCH_EBT;
    const int S = c->max_seq_len < 2 ? c->max_seq_len : 2;
    int32_t tok[4], tgt[4];
    ebt_real energy[2], *buf;
    ebt_status st;
    if (ebt_n_params(m) > SMALL_PARAMS || V > SMALL_V) return;
    for (int i = 0; i < 4; i++) { tok[i] = (i * 7 + 1) % V; tgt[i] = (i * 5 + 3) % V; }
    buf = (ebt_real *)malloc(2 * (size_t)S * V * sizeof *buf);
    if (!buf) FAIL("out of memory");
    if (is_ebt) {
        for (size_t i = 0; i < (size_t)S * V; i++) buf[i] = (ebt_real)1 / V;
        st = ebt_energy(m, tok, buf, 1, S, 1, energy, buf + (size_t)S * V);
        check_ok_or_nonfinite(st, m, "ebt_energy");
    } else {
        st = ebt_lm_logits(m, tok, 1, S, buf);
        check_ok_or_nonfinite(st, m, "ebt_lm_logits");
    }
    free(buf);
    if (ebt_n_params(m) <= TINY_PARAMS && V <= TINY_V && (m->opt.m || m->rb.count)) {
        ebt_train_opts o = ebt_train_default();
        int Str = S;
        o.k_min = o.k_max = 1;
        o.warmup_steps = 2;
        o.total_steps = 4;
        o.seed = 7;
        if (is_ebt && m->rb.count > 0 && m->rb.S <= 4) {  /* replay from the loaded ring */
            Str = m->rb.S;
            o.replay_capacity = m->rb.cap;
            o.replay_frac = 1;
        }
        st = ebt_train_step(m, &o, tok, tgt, 1, Str, NULL, NULL);
        check_ok_or_nonfinite(st, m, "ebt_train_step");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ebt_model sentinel;
    ebt_model *m = &sentinel;
    char err[256];
    ebt_status st;
    fuzz_write_input(data, size);
    memset(err, 0, sizeof err);
    st = ebt_load_ex(fuzz_in_path, &m, err, sizeof err);
    if (st != EBT_OK) {
        if (m != NULL) FAIL("failed load (%s) left *out set", ebt_status_str(st));
        if (!err[0]) FAIL("failed load (%s) without a message", ebt_status_str(st));
        if (!memchr(err, 0, sizeof err)) FAIL("error message not terminated");
        return 0;
    }
    if (!m) FAIL("EBT_OK with *out NULL");
    if (ebt_config_check(ebt_model_config(m), err, sizeof err) != EBT_OK) FAIL("loaded config fails its check: %s", err);
    if (!ebt__all_finite(m->params, m->n_params)) FAIL("loaded parameters are not finite");
    check_round_trip(m);
    exercise(m);
    ebt_free(m);
    return 0;
}
