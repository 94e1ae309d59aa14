/* make_corpus.c - writes the seed corpus of tests/fuzz/fuzz_load.c: small
 * valid checkpoints (a few KB each) of every arch and option, some with
 * optimiser state and a replay buffer.
 *   usage: make_corpus DIR     (DIR must exist; files are overwritten)
 * Exit status 0 on success, 1 on any failure (with a message). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ebt.h"

typedef struct {
    const char *name;
    ebt_arch arch;
    int V, D, L, H, F, max_seq, n_step, tie;
    int train_steps, B, S, replay_cap; /* train_steps > 0: train before saving */
    double replay_frac;
} seed_spec;

static const seed_spec seeds[] = {
    /* name                   arch                  V   D  L  H   F seq st tie  steps B S cap frac */
    { "ebt_plain",            EBT_ARCH_EBT,         16, 8, 1, 2,  8, 8, 0, 0,   0, 0, 0, 0, 0 },
    { "ebt_step_embed",       EBT_ARCH_EBT,         16, 8, 1, 2,  8, 8, 3, 0,   0, 0, 0, 0, 0 },
    { "ebt_tied",             EBT_ARCH_EBT,         16, 8, 1, 2,  8, 8, 0, 1,   0, 0, 0, 0, 0 },
    { "ebt_2layers",          EBT_ARCH_EBT,         32, 16, 2, 4, 12, 4, 2, 1,  0, 0, 0, 0, 0 },
    { "transformer",          EBT_ARCH_TRANSFORMER, 16, 8, 1, 2,  8, 8, 0, 0,   0, 0, 0, 0, 0 },
    { "transformer_2layers",  EBT_ARCH_TRANSFORMER, 32, 16, 2, 2, 16, 4, 0, 0,  0, 0, 0, 0, 0 },
    /* optimiser state and a wrapped replay ring (3 entries, next != count) */
    { "ebt_train_replay_ring", EBT_ARCH_EBT,        16, 8, 1, 2,  8, 4, 0, 0,   2, 2, 4, 3, 0.5 },
    /* a partly filled ring, with step embedding and tied embeddings */
    { "ebt_train_replay_part", EBT_ARCH_EBT,        16, 8, 1, 2,  8, 4, 2, 1,   1, 2, 2, 8, 0.5 },
    /* transformer++ keeps optimiser state only (the library has no replay for it) */
    { "transformer_train",    EBT_ARCH_TRANSFORMER, 16, 8, 1, 2,  8, 4, 0, 0,   2, 2, 4, 4, 0.5 },
};

static int make_one(const char *dir, const seed_spec *s, unsigned seed)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    char path[4096], err[256] = "";
    ebt_status st;
    int rc = 1;
    c.arch = s->arch; c.vocab_size = s->V; c.d_model = s->D; c.n_layers = s->L; c.n_heads = s->H;
    c.d_ff = s->F; c.max_seq_len = s->max_seq; c.n_step_embed = s->n_step; c.tie_pred_embed = s->tie;
    c.alpha = 2.0;
    if ((st = ebt_config_check(&c, err, sizeof err)) != EBT_OK || (st = ebt_create(&c, seed, &m)) != EBT_OK) {
        fprintf(stderr, "make_corpus: %s: create: %s %s\n", s->name, ebt_status_str(st), err);
        return 1;
    }
    if (s->train_steps > 0) {
        ebt_train_opts o = ebt_train_default();
        int n = s->B * s->S;
        int32_t *tok = malloc((size_t)n * sizeof *tok), *tgt = malloc((size_t)n * sizeof *tgt);
        unsigned r = seed * 2654435761u + 1;
        if (!tok || !tgt) { fprintf(stderr, "make_corpus: out of memory\n"); free(tok); free(tgt); goto done; }
        o.replay_capacity = s->replay_cap;
        o.replay_frac = s->replay_frac;
        o.warmup_steps = 1;
        o.total_steps = 10;
        o.seed = seed;
        for (int k = 0; k < s->train_steps; k++) {
            for (int i = 0; i < n; i++) {
                r = r * 1103515245u + 12345u;
                tok[i] = (int32_t)((r >> 16) % (unsigned)s->V);
                tgt[i] = (int32_t)((r >> 8) % (unsigned)s->V);
            }
            if ((st = ebt_train_step(m, &o, tok, tgt, s->B, s->S, NULL, NULL)) != EBT_OK) {
                fprintf(stderr, "make_corpus: %s: train step %d: %s: %s\n", s->name, k + 1, ebt_status_str(st),
                        ebt_last_error(m));
                free(tok); free(tgt);
                goto done;
            }
        }
        free(tok); free(tgt);
    }
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, s->name);
    if ((st = ebt_save_ex(m, path, err, sizeof err)) != EBT_OK) {
        fprintf(stderr, "make_corpus: %s: %s: %s\n", path, ebt_status_str(st), err);
        goto done;
    }
    rc = 0;
done:
    ebt_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    int fails = 0;
    if (argc != 2) { fprintf(stderr, "usage: make_corpus DIR\n"); return 1; }
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) fails += make_one(argv[1], &seeds[i], 11u + (unsigned)i);
    if (!fails) printf("make_corpus: %d checkpoints in %s\n", (int)(sizeof seeds / sizeof seeds[0]), argv[1]);
    return fails ? 1 : 0;
}
