/* bench: cost of the energy function's calls, medians over repeats after a
 * warm-up, and their ratios to a plain energy forward (ratios are what we
 * trust on a shared, noisy machine). Usage: bench [repeats] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../ebt.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    ebt_model *m;
    ebt_workspace *ws;
    int32_t *tok;
    float *p, *v, *E, *g, *hv;
    int B, S;
} ctx;

enum { OBSERVE, ENERGY, ENERGY_GRAD, HVP, ENERGY_FULL, MIXED, NOPS };
static const char *names[NOPS] = {
    "observed stream (ebt_observe)", "energy forward (predicted)", "energy + dE/dp", "ebt_ws_hvp (H v)",
    "ebt_energy (observe+forward)", "ebt_mixed_backward",
};

static void run(ctx *c, int op)
{
    switch (op) {
    case OBSERVE: ebt_observe(c->ws, c->m, c->tok, c->B, c->S, 0); break;
    case ENERGY: ebt_ws_energy(c->ws, c->p, c->E, NULL); break;
    case ENERGY_GRAD: ebt_ws_energy(c->ws, c->p, c->E, c->g); break;
    case HVP: ebt_ws_hvp(c->ws, c->p, c->v, c->hv, NULL, NULL); break;
    case ENERGY_FULL: ebt_energy(c->m, c->tok, c->p, c->B, c->S, 0, c->E, NULL); break;
    case MIXED: ebt_mixed_backward(c->m, c->tok, c->p, c->B, c->S, 0, c->v, NULL, NULL); break;
    }
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 15;
    ebt_config cfg = ebt_config_default();
    ctx c;
    double med[NOPS];
    cfg.vocab_size = 256; cfg.d_model = 128; cfg.n_layers = 4; cfg.n_heads = 4; cfg.d_ff = 128; cfg.max_seq_len = 128;
    c.B = 16; c.S = 128;
    if (reps < 3) reps = 3;
    size_t n = (size_t)c.B * c.S * cfg.vocab_size;
    if (ebt_create(&cfg, 1, &c.m) != EBT_OK || ebt_workspace_create(c.m, c.B, c.S, &c.ws) != EBT_OK) return 1;
    c.tok = malloc(sizeof(int32_t) * c.B * c.S);
    c.p = malloc(n * sizeof(float)); c.v = malloc(n * sizeof(float)); c.g = malloc(n * sizeof(float));
    c.hv = malloc(n * sizeof(float)); c.E = malloc(sizeof(float) * c.B * c.S);
    srand(1);
    for (int i = 0; i < c.B * c.S; i++) c.tok[i] = rand() % cfg.vocab_size;
    for (size_t i = 0; i < n; i++) { c.p[i] = 1.0f / cfg.vocab_size; c.v[i] = (float)rand() / RAND_MAX - 0.5f; }
    if (ebt_observe(c.ws, c.m, c.tok, c.B, c.S, 0) != EBT_OK) return 1;
    printf("config A: V=%d D=%d L=%d H=%d F=%d, B=%d S=%d; median of %d runs after 2 warm-ups\n",
           cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, c.B, c.S, reps);
    double *t = malloc(sizeof(double) * reps);
    for (int op = 0; op < NOPS; op++) {
        for (int w = 0; w < 2; w++) run(&c, op);
        for (int r = 0; r < reps; r++) { double t0 = now(); run(&c, op); t[r] = now() - t0; }
        qsort(t, reps, sizeof *t, cmp);
        med[op] = t[reps / 2];
    }
    printf("%-34s %10s %12s %10s\n", "call", "ms", "tokens/s", "x energy");
    for (int op = 0; op < NOPS; op++)
        printf("%-34s %10.2f %12.0f %10.2f\n", names[op], 1e3 * med[op], c.B * c.S / med[op], med[op] / med[ENERGY]);
    printf("ratio hvp / (energy + dE/dp):      %.2f\n", med[HVP] / med[ENERGY_GRAD]);
    printf("ratio (energy + dE/dp) / energy:   %.2f\n", med[ENERGY_GRAD] / med[ENERGY]);
    printf("ratio hvp / energy:                %.2f\n", med[HVP] / med[ENERGY]);
    free(t); free(c.tok); free(c.p); free(c.v); free(c.g); free(c.hv); free(c.E);
    ebt_workspace_free(c.ws);
    ebt_free(c.m);
    return 0;
}
