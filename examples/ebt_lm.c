/* ebt_lm.c - a byte-level toy language model (V = 256, one token per byte)
   on the ebt library: train an EBT or a transformer++ baseline on a text
   file, sample from it, and measure how validation cross-entropy improves
   with thinking steps and restarts.

     ebt_lm train  [options]   train (EBT by default, --arch transformer)
     ebt_lm sample [options]   generate text from a checkpoint
     ebt_lm eval   [options]   CE vs thinking steps / restarts (+ PNG plot)
     ebt_lm <command> --help   options of a command

   EXAMPLES (from the repository root, after building build/ebt_lm)
     ./build/ebt_lm train --data data/tinyshakespeare.txt --minutes 20
     ./build/ebt_lm train --data data/tinyshakespeare.txt --minutes 20 \
         --arch transformer --out transformer.safetensors
     ./build/ebt_lm eval --ckpt ebt.safetensors --baseline transformer.safetensors \
         --data data/tinyshakespeare.txt --plot thinking.png
     ./build/ebt_lm sample --ckpt ebt.safetensors --prompt "ROMEO:"
     ./build/ebt_lm train --data data/tinyshakespeare.txt --steps 5000 --resume

   NOTES
   - Corpus: --data FILE, or else every regular file of
     /usr/share/games/fortunes (Debian package `fortunes`) not ending in .dat
     or .u8, in sorted name order. The first 90% of the bytes train, the
     last 10% validate.
   - Budget: --minutes M (default 5) and/or --steps N. --steps is the total
     number of optimiser steps (a resumed run continues up to it). With
     --steps alone there is no time limit. The cosine schedule ends at
     --steps; with only --minutes it ends at an estimate made after this
     run's first 10 steps from their speed and the time of the validation
     at the start (those 10 steps use the library's default total_steps;
     for a fresh run they are in warm-up).
     For a bit-exact resume give --steps (the estimate depends on speed).
   - Batch k is drawn from (seed, k) alone, so a resumed run sees the same
     batches as an uninterrupted one; the optimiser state and replay
     buffer come with the checkpoint.
   - Validation: the same windows every time (a fixed seed), B windows of
     S bytes per batch. EBT: CE = -log p(target) of the answer of
     ebt_think at every position; transformer++: log-softmax of the logits.

   Exit status: 0 ok, 1 library or i/o failure, 2 bad usage or no corpus.
*/
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "ebt.h"
#include "png.h"

/* ==== Recipe defaults ===================================================
 * The example's training recipe in one place (tune here). Everything not
 * listed comes from ebt_config_default() and ebt_train_default().
 * Evidence (tinyshakespeare, 19 min each, README "Does thinking pay?"):
 * fixed K = 2 in mode detach ("S1") got worse with every extra thinking
 * step; randomised K in [2, 4], randomised step size (r = 2), Langevin
 * noise 0.3 and the replay buffer ("S2") made 2-4 steps beat 1 step but
 * oscillated between even and odd steps in mode detach; the same recipe
 * in mode full (back-propagating through the unrolled steps, same cost
 * here) converged without oscillating, so it is the default. */
#define RECIPE_D           128      /* d_model */
#define RECIPE_LAYERS      4
#define RECIPE_HEADS       4
#define RECIPE_SEQ         128      /* context S (= max_seq_len) */
#define RECIPE_BATCH       16       /* B */
#define RECIPE_MODE        EBT_MODE_FULL
#define RECIPE_K_MIN       2        /* thinking steps per batch, uniform in [k_min, k_max] */
#define RECIPE_K_MAX       4
#define RECIPE_ALPHA_RAND  2.0      /* alpha_i ~ U[alpha/r, alpha*r] */
#define RECIPE_NOISE       0.3      /* Langevin sigma */
#define RECIPE_REPLAY      256      /* replay buffer capacity, sequences */
#define RECIPE_REPLAY_FRAC 0.25     /* fraction of each batch restarted from it */
#define RECIPE_LR          1e-3
#define RECIPE_WARMUP      100
/* ======================================================================= */

#ifndef FORTUNE_DIR                   /* overridable for tests: -DFORTUNE_DIR=... */
#define FORTUNE_DIR "/usr/share/games/fortunes"
#endif
#define EVAL_SEED   0x5eed0fe7a1ULL   /* validation windows and thinking noise */

/* ---- small helpers ---------------------------------------------------- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* splitmix64: the only RNG; its state always lives in the caller */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t batch_key(uint64_t seed, uint64_t step, uint64_t retry)
{
    uint64_t s = seed ^ 0xb47c4e5d1a2f3e71ULL;
    s = splitmix64(&s) ^ step;
    s = splitmix64(&s) ^ retry;
    return splitmix64(&s);
}

/* B windows of S+1 bytes of data[n] (n > S) drawn from key: the inputs
 * tok[B*S] are the first S bytes of each, the targets tgt[B*S] the next S */
static void fill_batch(const unsigned char *data, size_t n, int B, int S, uint64_t key,
                       int32_t *tok, int32_t *tgt)
{
    for (int b = 0; b < B; b++) {
        size_t off = (size_t)(splitmix64(&key) % (uint64_t)(n - (size_t)S));
        for (int i = 0; i < S; i++) {
            tok[b * S + i] = data[off + i];
            tgt[b * S + i] = data[off + i + 1];
        }
    }
}

static void fmt_time(double s, char *buf, size_t n)
{
    int t = !(s > 0) ? 0 : s < 3.6e7 ? (int)(s + 0.5) : 35999999;
    if (t >= 3600) snprintf(buf, n, "%dh%02dm", t / 3600 % 10000, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%dm%02ds", t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ds", t % 60);
}

/* prints a failed library call with its status and messages; returns 1 */
static int fail(const char *what, ebt_status st, const ebt_model *m, const ebt_workspace *ws)
{
    const char *e1 = m ? ebt_last_error(m) : NULL, *e2 = ws ? ebt_ws_last_error(ws) : NULL;
    fprintf(stderr, "\nebt_lm: %s failed: %s", what, ebt_status_str(st));
    if (e1 && *e1) fprintf(stderr, ": %s", e1);
    if (e2 && *e2) fprintf(stderr, ": %s", e2);
    fputc('\n', stderr);
    return 1;
}

/* B windows of S bytes: the library's limit on rows (B (S+1) <= 2^31/4),
 * which also keeps every B*S product below in int range */
static int batch_fits(int B, int S)
{
    if ((long long)B * ((long long)S + 1) <= INT32_MAX / 4) return 1;
    fprintf(stderr, "ebt_lm: a batch of %d windows of %d bytes is too large\n", B, S);
    return 0;
}

static int load_model(const char *path, ebt_model **m)
{
    char err[256] = "";
    ebt_status st = ebt_load_ex(path, m, err, sizeof err);
    if (st == EBT_OK) return 0;
    fprintf(stderr, "ebt_lm: cannot load %s: %s%s%s\n", path, ebt_status_str(st), *err ? ": " : "", err);
    return 1;
}

/* ---- options: one table per command --------------------------------- */

typedef enum { OPT_FLAG, OPT_STR, OPT_INT, OPT_LONG, OPT_DBL, OPT_U64 } opt_kind;
typedef struct { const char *name; opt_kind kind; void *dst; double lo, hi; } opt_spec;

/* Parses argv[1..] against o[n] (numbers must lie in [lo, hi]; a flag sets
 * its int to 1). Returns -1 when all is well, else the exit code: 0 after
 * --help (usage on stdout), 2 for a bad option (usage on stderr). */
static int parse_opts(int argc, char **argv, const opt_spec *o, int n, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int k = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        while (k < n && strcmp(a, o[k].name)) k++;
        if (k == n || (o[k].kind != OPT_FLAG && !v)) {
            fprintf(stderr, "ebt_lm: unknown or incomplete option '%s'\n\n%s", a, usage);
            return 2;
        }
        if (o[k].kind == OPT_FLAG) { *(int *)o[k].dst = 1; continue; }
        i++;
        char *end = (char *)v;
        double x = o[k].kind == OPT_STR ? 0 : strtod(v, &end);
        int ok = o[k].kind == OPT_STR ||
                 (end != v && !*end && x >= o[k].lo && x <= o[k].hi && (o[k].kind == OPT_DBL || x == floor(x)));
        unsigned long long u = 0;
        if (o[k].kind == OPT_U64) {   /* digits only, and no silent clamping to ULLONG_MAX */
            errno = 0;
            u = strtoull(v, NULL, 10);
            ok = *v && !v[strspn(v, "0123456789")] && errno != ERANGE;
        }
        if (!ok) { fprintf(stderr, "ebt_lm: invalid value '%s' for %s\n\n%s", v, a, usage); return 2; }
        if (o[k].kind == OPT_STR) *(const char **)o[k].dst = v;
        else if (o[k].kind == OPT_INT) *(int *)o[k].dst = (int)x;
        else if (o[k].kind == OPT_LONG) *(long *)o[k].dst = (long)x;
        else if (o[k].kind == OPT_DBL) *(double *)o[k].dst = x;
        else *(uint64_t *)o[k].dst = (uint64_t)u;
    }
    return -1;
}

#define N_OPTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- corpus ------------------------------------------------------------ */

typedef struct { unsigned char *buf; size_t n, cap, n_train; } corpus;  /* val = buf[n_train, n) */

static int append_file(corpus *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t k;
    do {
        if (c->cap - c->n < 65536) {
            size_t cap = c->cap ? 2 * c->cap : 1 << 20;
            unsigned char *nb = realloc(c->buf, cap);
            if (!nb) { fclose(f); return -1; }
            c->buf = nb; c->cap = cap;
        }
        k = fread(c->buf + c->n, 1, c->cap - c->n, f);
        c->n += k;
    } while (k > 0);
    int bad = ferror(f);
    fclose(f);
    return bad ? -1 : 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* reads --data or the fortunes; returns an exit code (0 ok) */
static int load_corpus(const char *path, corpus *c, int S)
{
    memset(c, 0, sizeof *c);
    if (path) {
        if (append_file(c, path) != 0) { fprintf(stderr, "ebt_lm: cannot read %s\n", path); return 1; }
    } else {
        DIR *d = opendir(FORTUNE_DIR);
        if (!d) {
            fprintf(stderr, "ebt_lm: no corpus: %s is missing; `apt-get install fortunes` or pass --data FILE\n",
                    FORTUNE_DIR);
            return 2;
        }
        char **names = NULL, path_buf[4096];
        size_t nn = 0, cap = 0;
        int bad = 0;
        struct dirent *e;
        while (!bad && (e = readdir(d))) {
            size_t L = strlen(e->d_name);
            if ((L >= 4 && !strcmp(e->d_name + L - 4, ".dat")) || (L >= 3 && !strcmp(e->d_name + L - 3, ".u8")))
                continue;
            if (nn == cap) {
                char **nb = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
                if (!nb) { bad = 1; break; }
                names = nb;
            }
            if (!(names[nn++] = strdup(e->d_name))) bad = 1;
        }
        closedir(d);
        if (!bad) qsort(names, nn, sizeof *names, cmp_str);
        for (size_t i = 0; i < nn; i++) {
            struct stat sb;
            snprintf(path_buf, sizeof path_buf, "%s/%s", FORTUNE_DIR, names[i] ? names[i] : "");
            if (!bad && names[i] && stat(path_buf, &sb) == 0 && S_ISREG(sb.st_mode) && append_file(c, path_buf) != 0) {
                fprintf(stderr, "ebt_lm: cannot read %s\n", path_buf);
                bad = 1;
            }
            free(names[i]);
        }
        free(names);
        if (bad) { free(c->buf); c->buf = NULL; return 1; }
    }
    c->n_train = c->n / 10 * 9 + c->n % 10 * 9 / 10;
    if (c->n_train <= (size_t)S + 1 || c->n - c->n_train <= (size_t)S + 1) {
        fprintf(stderr, "ebt_lm: corpus too small (%zu bytes) for windows of %d bytes\n", c->n, S + 1);
        free(c->buf); c->buf = NULL;
        return 2;
    }
    return 0;
}

/* ---- evaluation --------------------------------------------------------- */

typedef struct { const unsigned char *val; size_t n; int nb, B, S; } windows;   /* nb batches of B x S */
typedef struct { double ce, energy, switched; } eval_out;

/* Validation cross-entropy (nats/byte) over w's windows. EBT: thinks with th
 * on ws (made for B x S) at every position; transformer++: from the logits.
 * energy: mean final energy, switched: fraction of positions whose winning
 * start is not start 0 (both EBT only). */
static ebt_status evaluate(ebt_model *m, ebt_workspace *ws, const windows *w,
                           const ebt_think_opts *th, eval_out *out)
{
    const ebt_config *cfg = ebt_model_config(m);
    const int V = cfg->vocab_size, N = w->B * w->S, is_ebt = cfg->arch == EBT_ARCH_EBT;
    int32_t *tok = malloc((size_t)N * sizeof *tok), *tgt = malloc((size_t)N * sizeof *tgt);
    ebt_real *p = malloc((size_t)N * V * sizeof *p), *fe = malloc((size_t)N * sizeof *fe);
    int *win = malloc((size_t)N * sizeof *win);
    ebt_status st = (tok && tgt && p && fe && win) ? EBT_OK : EBT_ERR_NOMEM;
    double ce = 0, en = 0, sw = 0;
    for (int b = 0; b < w->nb && st == EBT_OK; b++) {
        fill_batch(w->val, w->n, w->B, w->S, batch_key(EVAL_SEED, (uint64_t)b, 0), tok, tgt);
        if (is_ebt) {
            ebt_think_result r;
            memset(&r, 0, sizeof r);
            r.probs = p; r.final_energy = fe; r.winner = win;
            if ((st = ebt_think(ws, m, tok, w->B, w->S, th, &r)) != EBT_OK) break;
            for (int i = 0; i < N; i++) {
                double q = p[(size_t)i * V + tgt[i]];
                ce -= log(q > 1e-30 ? q : 1e-30);
                en += fe[i];
                sw += win[i] != 0;
            }
        } else {
            if ((st = ebt_lm_logits(m, tok, w->B, w->S, p)) != EBT_OK) break;
            for (int i = 0; i < N; i++) {           /* CE = logsumexp(row) - row[target] */
                const ebt_real *row = p + (size_t)i * V;
                double mx = row[0], s = 0;
                for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
                for (int j = 0; j < V; j++) s += exp(row[j] - mx);
                ce += log(s) + mx - row[tgt[i]];
            }
        }
    }
    double total = (double)w->nb * N;
    out->ce = ce / total;
    out->energy = is_ebt ? en / total : NAN;
    out->switched = is_ebt ? sw / total : NAN;
    free(tok); free(tgt); free(p); free(fe); free(win);
    return st;
}

/* ---- train ---------------------------------------------------------------- */

static const char TRAIN_USAGE[] =
    "usage: ebt_lm train [options]\n"
    "corpus and budget:\n"
    "  --data FILE        text corpus (default: the fortunes in " FORTUNE_DIR ")\n"
    "  --minutes M        wall-clock limit (default 5; none if only --steps is given)\n"
    "  --steps N          total optimiser steps, also the end of the cosine schedule\n"
    "  --out FILE         checkpoint (default ebt.safetensors / transformer.safetensors)\n"
    "  --resume           continue from --out if it exists (weights, optimiser, replay)\n"
    "  --save-every N     checkpoint every N steps (default 500) and at the end\n"
    "  --eval-every N     validation every N steps (default 200; 0 = only at the end)\n"
    "  --eval-batches N   validation batches of B windows (default 8)\n"
    "  --eval-steps K     thinking steps for validation (default --k-max)\n"
    "model (ignored with --resume when the checkpoint exists):\n"
    "  --arch ebt|transformer   (default ebt)\n"
    "  --d D (128)  --layers L (4)  --heads H (4)  --ff F (default D)\n"
    "  --seq S (context, 128)  --batch B (16)  --alpha A (initial step size)\n"
    "  --step-embed N (step tokens, default 0)  --tie (candidate embedding = tok_embed)\n"
    "training (ebt_train_opts):\n"
    "  --mode detach|truncate|full (full)  --k-min K (2)  --k-max K (4)\n"
    "  --alpha-rand R (2)  --noise SIGMA (0.3)  --replay CAP (256)  --replay-frac F (0.25)\n"
    "  --lr LR (1e-3)  --min-lr LR  --warmup N (100)  --no-learn-alpha  --alpha-lr-mult X\n"
    "  --clip NORM  --wd DECAY  --seed S (model init, batches, thinking; default 1)\n";

/* train's options, parsed and checked (no i/o) */
typedef struct {
    ebt_config cfg;
    ebt_train_opts to;
    const char *data, *out, *arch;
    int B, S, seq_set, resume, eval_steps;
    long steps, eval_every, save_every, eval_batches;
    double minutes;
} train_args;

/* Returns -1 when *a is ready, else the exit code (0 after --help, 2 for bad usage). */
static int train_parse(int argc, char **argv, train_args *a)
{
    ebt_config cfg = ebt_config_default();
    ebt_train_opts to = ebt_train_default();
    cfg.d_model = RECIPE_D; cfg.n_layers = RECIPE_LAYERS; cfg.n_heads = RECIPE_HEADS;
    to.mode = RECIPE_MODE; to.k_min = RECIPE_K_MIN; to.k_max = RECIPE_K_MAX;
    to.alpha_rand = RECIPE_ALPHA_RAND; to.noise = RECIPE_NOISE; to.replay_capacity = RECIPE_REPLAY;
    to.replay_frac = RECIPE_REPLAY_FRAC; to.lr = RECIPE_LR; to.warmup_steps = RECIPE_WARMUP;
    to.seed = 1;
    const char *data = NULL, *out = NULL, *arch = NULL, *mode = NULL;
    int B = RECIPE_BATCH, S = 0, ff = 0, resume = 0, tie = 0, fixed_alpha = 0, eval_steps = 0;
    long steps = 0, eval_every = 200, save_every = 500, eval_batches = 8;
    double minutes = -1;
    const opt_spec spec[] = {
        {"--data", OPT_STR, &data, 0, 0}, {"--out", OPT_STR, &out, 0, 0}, {"--arch", OPT_STR, &arch, 0, 0},
        {"--resume", OPT_FLAG, &resume, 0, 0}, {"--minutes", OPT_DBL, &minutes, 1e-3, 1e7},
        {"--steps", OPT_LONG, &steps, 1, 1e12}, {"--save-every", OPT_LONG, &save_every, 1, 1e12},
        {"--eval-every", OPT_LONG, &eval_every, 0, 1e12}, {"--eval-batches", OPT_LONG, &eval_batches, 1, 1e6},
        {"--eval-steps", OPT_INT, &eval_steps, 1, 1000}, {"--d", OPT_INT, &cfg.d_model, 2, 65536},
        {"--layers", OPT_INT, &cfg.n_layers, 1, 1024}, {"--heads", OPT_INT, &cfg.n_heads, 1, 65536},
        {"--ff", OPT_INT, &ff, 1, 1 << 20}, {"--seq", OPT_INT, &S, 1, 1 << 20},
        {"--batch", OPT_INT, &B, 1, 1 << 20}, {"--alpha", OPT_DBL, &cfg.alpha, 0, 1e9},
        {"--step-embed", OPT_INT, &cfg.n_step_embed, 0, 65536}, {"--tie", OPT_FLAG, &tie, 0, 0},
        {"--mode", OPT_STR, &mode, 0, 0}, {"--k-min", OPT_INT, &to.k_min, 1, 1000},
        {"--k-max", OPT_INT, &to.k_max, 1, 1000}, {"--alpha-rand", OPT_DBL, &to.alpha_rand, 1, 1e6},
        {"--noise", OPT_DBL, &to.noise, 0, 1e6}, {"--replay", OPT_INT, &to.replay_capacity, 0, 1 << 24},
        {"--replay-frac", OPT_DBL, &to.replay_frac, 0, 1}, {"--lr", OPT_DBL, &to.lr, 0, 10},
        {"--min-lr", OPT_DBL, &to.min_lr, 0, 10}, {"--warmup", OPT_LONG, &to.warmup_steps, 0, 1e12},
        {"--no-learn-alpha", OPT_FLAG, &fixed_alpha, 0, 0}, {"--alpha-lr-mult", OPT_DBL, &to.alpha_lr_mult, 0, 1e6},
        {"--clip", OPT_DBL, &to.grad_clip, 0, 1e9}, {"--wd", OPT_DBL, &to.weight_decay, 0, 10},
        {"--seed", OPT_U64, &to.seed, 0, 0},
    };
    int rc = parse_opts(argc, argv, spec, N_OPTS(spec), TRAIN_USAGE);
    if (rc >= 0) return rc;
    if (arch && strcmp(arch, "ebt") && strcmp(arch, "transformer") && strcmp(arch, "transformer++"))
        { fprintf(stderr, "ebt_lm: --arch is ebt or transformer\n"); return 2; }
    if (mode && strcmp(mode, "detach") && strcmp(mode, "truncate") && strcmp(mode, "full"))
        { fprintf(stderr, "ebt_lm: --mode is detach, truncate or full\n"); return 2; }
    cfg.arch = arch && strcmp(arch, "ebt") ? EBT_ARCH_TRANSFORMER : EBT_ARCH_EBT;
    if (mode) to.mode = mode[0] == 'f' ? EBT_MODE_FULL : mode[0] == 't' ? EBT_MODE_TRUNCATE : EBT_MODE_DETACH;
    cfg.tie_pred_embed = tie;
    to.learn_alpha = !fixed_alpha;
    const int seq_set = S > 0;
    if (!seq_set) S = RECIPE_SEQ;
    if (to.k_min > to.k_max) { fprintf(stderr, "ebt_lm: --k-min > --k-max\n"); return 2; }
    if (minutes < 0 && steps == 0) minutes = 5;
    cfg.d_ff = ff ? ff : cfg.d_model;
    cfg.max_seq_len = S;
    if (!out) out = cfg.arch == EBT_ARCH_TRANSFORMER ? "transformer.safetensors" : "ebt.safetensors";
    *a = (train_args){ .cfg = cfg, .to = to, .data = data, .out = out, .arch = arch, .B = B, .S = S,
                       .seq_set = seq_set, .resume = resume, .eval_steps = eval_steps, .steps = steps,
                       .eval_every = eval_every, .save_every = save_every, .eval_batches = eval_batches,
                       .minutes = minutes };
    return -1;
}

static int cmd_train(int argc, char **argv)
{
    train_args a;
    int rc = train_parse(argc, argv, &a);
    if (rc >= 0) return rc;
    ebt_config cfg = a.cfg;
    ebt_train_opts to = a.to;
    const char *data = a.data, *out = a.out, *arch = a.arch;
    int B = a.B, S = a.S, eval_steps = a.eval_steps;
    const int seq_set = a.seq_set, resume = a.resume;
    const long steps = a.steps, eval_every = a.eval_every, save_every = a.save_every, eval_batches = a.eval_batches;
    const double minutes = a.minutes;

    ebt_model *m = NULL;
    ebt_workspace *ws = NULL;
    int32_t *tok = NULL, *tgt = NULL;
    corpus c = {0};
    struct stat sb;
    rc = 1;
    if (resume && stat(out, &sb) == 0) {
        if (load_model(out, &m)) return 1;
        const ebt_config *mc = ebt_model_config(m);
        if (arch && mc->arch != cfg.arch) {
            fprintf(stderr, "ebt_lm: %s holds a different arch than --arch\n", out);
            ebt_free(m);
            return 2;
        }
        if (seq_set && S > mc->max_seq_len) {
            fprintf(stderr, "ebt_lm: --seq %d exceeds the checkpoint's max_seq_len %d\n", S, mc->max_seq_len);
            ebt_free(m);
            return 2;
        }
        if (!seq_set) S = mc->max_seq_len;
        cfg = *mc;
        fprintf(stderr, "ebt_lm: resuming %s at step %ld\n", out, ebt_train_steps_done(m));
    } else {
        char err[256];
        if (ebt_config_check(&cfg, err, sizeof err) != EBT_OK) {
            fprintf(stderr, "ebt_lm: bad model options: %s\n", err);
            return 2;
        }
        ebt_status st = ebt_create(&cfg, to.seed, &m);
        if (st != EBT_OK) return fail("ebt_create", st, NULL, NULL);
    }
    const int is_ebt = cfg.arch == EBT_ARCH_EBT;
    if (!batch_fits(B, S)) { rc = 2; goto done; }
    if ((rc = load_corpus(data, &c, S)) != 0) goto done;
    rc = 1;
    tok = malloc((size_t)B * S * sizeof *tok);
    tgt = malloc((size_t)B * S * sizeof *tgt);
    if (!tok || !tgt) { fprintf(stderr, "ebt_lm: out of memory\n"); goto done; }
    ebt_status st;
    if (is_ebt && (st = ebt_workspace_create(m, B, S, &ws)) != EBT_OK) {
        rc = fail("ebt_workspace_create", st, m, NULL);
        goto done;
    }
    ebt_think_opts th = ebt_think_default();
    th.steps = eval_steps ? eval_steps : to.k_max;
    th.restarts = 1;
    th.seed = EVAL_SEED;
    th.init_scale = to.init_scale;
    windows w = {c.buf + c.n_train, c.n - c.n_train, (int)eval_batches, B, S};

    fprintf(stderr, "ebt_lm: %s, %.2fM params (D=%d L=%d H=%d F=%d), S=%d B=%d, corpus %zu bytes "
            "(%zu train, %zu val)", is_ebt ? "ebt" : "transformer++", ebt_n_params(m) / 1e6,
            cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, S, B, c.n, c.n_train, c.n - c.n_train);
    if (is_ebt)
        fprintf(stderr, ", mode %s, k %d-%d, alpha %.3g", to.mode == EBT_MODE_DETACH ? "detach" :
                to.mode == EBT_MODE_TRUNCATE ? "truncate" : "full", to.k_min, to.k_max, cfg.alpha);
    fputc('\n', stderr);

    const int tty = isatty(fileno(stderr));
    const long step0 = ebt_train_steps_done(m);
    const double t0 = now_s(), deadline = minutes > 0 ? t0 + 60 * minutes : HUGE_VAL;
    double train_time = 0, eval_time = 0, last_print = -1e9;
    long step = step0, last_eval = -1, last_save = step0;
    int retries = 0, estimated = steps > 0;
    eval_out ev = {NAN, NAN, NAN};
    ebt_train_stats ts;
    memset(&ts, 0, sizeof ts);
    if (steps > 0) to.total_steps = steps;

    for (;;) {
        int at_end = (steps > 0 && step >= steps) || now_s() >= deadline;
        if (step > last_eval && (at_end || step == step0 || (eval_every > 0 && step % eval_every == 0))) {
            double te = now_s();
            if ((st = evaluate(m, ws, &w, &th, &ev)) != EBT_OK) { rc = fail("validation", st, m, ws); goto done; }
            eval_time = now_s() - te;
            if (tty) fputs("\r\033[K", stderr);
            printf(exp(ev.ce) < 1e6 ? "step %ld  val %.4f nats/byte  ppl %.2f" : "step %ld  val %.4f nats/byte  ppl %.3g",
                   step, ev.ce, exp(ev.ce));
            if (is_ebt) printf("  energy %.4f  (think %d steps)", ev.energy, th.steps);
            printf("\n");
            fflush(stdout);
            last_eval = step;
        }
        if (step > last_save && (at_end || step % save_every == 0)) {
            char err[256] = "";
            if ((st = ebt_save_ex(m, out, err, sizeof err)) != EBT_OK) {
                fprintf(stderr, "\nebt_lm: cannot save %s: %s: %s\n", out, ebt_status_str(st), err);
                goto done;
            }
            last_save = step;
        }
        if (at_end) break;

        double t1 = now_s();
        fill_batch(c.buf, c.n_train, B, S, batch_key(to.seed, (uint64_t)step, (uint64_t)retries), tok, tgt);
        st = ebt_train_step(m, &to, tok, tgt, B, S, NULL, &ts);
        train_time += now_s() - t1;
        if (st == EBT_ERR_NONFINITE && ++retries < 10) {   /* nothing changed: try another batch */
            fprintf(stderr, "\nebt_lm: step %ld was non-finite, skipped\n", step + 1);
            continue;
        }
        if (st != EBT_OK) { rc = fail("ebt_train_step", st, m, NULL); goto done; }
        retries = 0;
        step = ebt_train_steps_done(m);

        double t = now_s(), per_step = train_time / (double)(step - step0);
        if (!estimated && step - step0 >= 10) {   /* fix the cosine schedule's end, evals included */
            double cost = per_step + (eval_every > 0 ? eval_time / (double)eval_every : 0);
            to.total_steps = step + (long)((deadline - t - eval_time) / cost);
            estimated = 1;
            if (tty) fputs("\r\033[K", stderr);
            fprintf(stderr, "ebt_lm: %.3f s/step, cosine schedule set to end at step %ld\n",
                    per_step, to.total_steps);
        }
        if (t - last_print >= (tty ? 0.25 : 10.0)) {
            double left = deadline - t, frac = (t - t0) / (deadline - t0);
            if (steps > 0) {
                double l2 = (double)(steps - step) * per_step, f2 = (double)(step - step0) / (double)(steps - step0);
                left = l2 < left ? l2 : left;
                frac = f2 > frac || !(deadline < HUGE_VAL) ? f2 : frac;
            }
            char el[24], lf[24], bar[21], ce[64] = "";
            fmt_time(t - t0, el, sizeof el);
            fmt_time(left, lf, sizeof lf);
            for (int j = 0; j < 20; j++) bar[j] = j < (int)(frac * 20 + 0.5) ? '#' : '.';
            bar[20] = 0;
            if (is_ebt) snprintf(ce, sizeof ce, "  ce %.3f->%.3f  alpha %.3g", ts.ce_first, ts.ce_last, ts.alpha);
            fprintf(stderr, "%sstep %ld  loss %.4f%s  %.0f tok/s  %s  left %s [%s]%s", tty ? "\r" : "",
                    step, ts.loss, ce, (double)B * S / per_step, el, lf, bar, tty ? "\033[K" : "\n");
            fflush(stderr);
            last_print = t;
        }
    }
    if (tty) fputs("\r\033[K", stderr);
    printf("done: arch %s  steps %ld  tokens %.3gM  wall %.1f s  val %.4f nats/byte  ppl %.3g  -> %s\n",
           is_ebt ? "ebt" : "transformer++", step, (double)step * B * S / 1e6, now_s() - t0, ev.ce,
           exp(ev.ce), out);
    rc = 0;
done:
    ebt_workspace_free(ws);
    ebt_free(m);
    free(tok); free(tgt); free(c.buf);
    return rc;
}

/* ---- sample --------------------------------------------------------------- */

static const char SAMPLE_USAGE[] =
    "usage: ebt_lm sample [options]\n"
    "  --ckpt FILE         checkpoint (default ebt.safetensors)\n"
    "  --prompt TEXT       (default \"ROMEO:\")\n"
    "  --n N               bytes to generate (default 300)\n"
    "  --steps K           thinking steps per token (default 4; EBT only)\n"
    "  --restarts R        thinking starts per token, lowest energy wins (default 1)\n"
    "  --step-size A       thinking step size (default 0: the model's alpha)\n"
    "  --temperature T     (default 0.8; 0 = argmax)\n"
    "  --top-p P           nucleus sampling (default 0.95; 1 = off)\n"
    "  --seed S            (default 1)\n"
    "  --noise SIGMA       Langevin noise while thinking (default 0)\n"
    "  --init-scale X      spread of the random starts, y0 ~ N(0, X^2) (default 1)\n";

static void put_bytes(const int32_t *t, int n)
{
    for (int i = 0; i < n; i++) {
        int ch = t[i];
        putchar(ch == '\n' || ch == '\t' || (ch >= 32 && ch < 127) ? ch : '?');
    }
}

typedef struct { const char *ckpt, *prompt; int n; ebt_gen_opts g; } sample_args;

/* Returns -1 when *a is ready, else the exit code (0 after --help, 2 for bad usage). */
static int sample_parse(int argc, char **argv, sample_args *a)
{
    const char *ckpt = "ebt.safetensors", *prompt = "ROMEO:";
    int n = 300;
    ebt_gen_opts g = ebt_gen_default();
    g.think.steps = 4; g.think.restarts = 1; g.temperature = 0.8; g.top_p = 0.95; g.seed = 1;
    const opt_spec spec[] = {
        {"--ckpt", OPT_STR, &ckpt, 0, 0}, {"--prompt", OPT_STR, &prompt, 0, 0}, {"--n", OPT_INT, &n, 1, 1 << 24},
        {"--steps", OPT_INT, &g.think.steps, 0, 1000}, {"--restarts", OPT_INT, &g.think.restarts, 1, 1000},
        {"--step-size", OPT_DBL, &g.think.step_size, 0, 1e9}, {"--temperature", OPT_DBL, &g.temperature, 0, 100},
        {"--top-p", OPT_DBL, &g.top_p, 0, 1}, {"--seed", OPT_U64, &g.seed, 0, 0},
        {"--noise", OPT_DBL, &g.think.noise, 0, 1e6}, {"--init-scale", OPT_DBL, &g.think.init_scale, 0, 1e6},
    };
    int rc = parse_opts(argc, argv, spec, N_OPTS(spec), SAMPLE_USAGE);
    if (rc >= 0) return rc;
    g.think.seed = g.seed ^ 0x7417c0deULL;
    *a = (sample_args){ .ckpt = ckpt, .prompt = prompt, .n = n, .g = g };
    return -1;
}

static int cmd_sample(int argc, char **argv)
{
    sample_args a;
    int rc = sample_parse(argc, argv, &a);
    if (rc >= 0) return rc;
    const char *ckpt = a.ckpt, *prompt = a.prompt;
    const int n = a.n;
    ebt_gen_opts g = a.g;

    ebt_model *m = NULL;
    ebt_workspace *ws = NULL;
    if (load_model(ckpt, &m)) return 1;
    const ebt_config *cfg = ebt_model_config(m);
    int np = (int)strlen(prompt), keep;
    rc = 1;
    int32_t *pt = malloc(((size_t)np + 1) * sizeof *pt), *gen = malloc((size_t)n * sizeof *gen);
    ebt_real *en = malloc((size_t)n * sizeof *en);
    ebt_status st;
    if (!pt || !gen || !en) { fprintf(stderr, "ebt_lm: out of memory\n"); goto done; }
    if (np == 0) pt[np++] = '\n';                 /* generation needs a prompt of >= 1 byte */
    else for (int i = 0; i < np; i++) pt[i] = (unsigned char)prompt[i];
    /* a prompt longer than the context is cut to its last half-context */
    keep = np < cfg->max_seq_len ? np : cfg->max_seq_len / 2 > 0 ? cfg->max_seq_len / 2 : 1;
    if ((st = ebt_workspace_create(m, 1, cfg->max_seq_len, &ws)) != EBT_OK) {
        rc = fail("ebt_workspace_create", st, m, NULL);
        goto done;
    }
    if ((st = ebt_generate(ws, m, pt + np - keep, keep, n, &g, gen, en, NULL)) != EBT_OK) {
        rc = fail("ebt_generate", st, m, ws);
        goto done;
    }
    put_bytes(pt, np);
    put_bytes(gen, n);
    putchar('\n');
    if (cfg->arch == EBT_ARCH_EBT) {
        double s = 0;
        int k = 0;
        for (int i = 0; i < n; i++)
            if (isfinite(en[i])) { s += en[i]; k++; }
        fprintf(stderr, "ebt_lm: mean final energy per generated byte %.4f (%d think steps, %d restarts)\n",
                k ? s / k : NAN, g.think.steps, g.think.restarts);
    }
    rc = 0;
done:
    ebt_workspace_free(ws);
    ebt_free(m);
    free(pt); free(gen); free(en);
    return rc;
}

/* ---- eval ----------------------------------------------------------------- */

static const char EVAL_USAGE[] =
    "usage: ebt_lm eval [options]\n"
    "  --ckpt FILE         checkpoint (default ebt.safetensors)\n"
    "  --baseline FILE     a transformer++ checkpoint, evaluated on the same windows\n"
    "  --data FILE         corpus (default: the fortunes; validation = last 10%)\n"
    "  --batches N         validation batches (default 16)\n"
    "  --batch B           windows per batch (default 16)\n"
    "  --eval-steps K      thinking steps of the restarts table (default 4)\n"
    "  --noise SIGMA       Langevin noise while thinking (default 0)\n"
    "  --init-scale X      spread of the random starts, y0 ~ N(0, X^2) (default 1)\n"
    "  --step-size A       thinking step size (default 0: the model's alpha)\n"
    "  --plot FILE.png     line plot of CE against thinking steps and restarts\n";

#define N_KS 5
#define N_RS 3

/* the plot: CE against thinking steps (left) and restarts (right), the
 * baseline (NAN if none) dashed in both */
static int plot(const char *path, const int *ks, const double *ce_k, const int *rs, const double *ce_r,
                int eval_steps, double base)
{
    const unsigned long BLACK = 0x000000, GRAY = 0xdddddd, BLUE = 0x1f5fbf, GREEN = 0x2a9d3a, RED = 0xc03030;
    png_img im;
    char buf[32];
    double lo = base, hi = base;
    for (int i = 0; i < N_KS + N_RS; i++) {
        double y = i < N_KS ? ce_k[i] : ce_r[i - N_KS];
        if (!(y >= lo)) lo = y;
        if (!(y <= hi)) hi = y;
    }
    if (!(hi - lo > 1e-4)) { lo -= 0.05; hi += 0.05; }
    double pad = 0.08 * (hi - lo);
    lo -= pad; hi += pad;
    if (png_init(&im, 840, 420)) return -1;
    png_text(&im, 20, 12, "VALIDATION CE (NATS/BYTE)", 2, BLACK);
    for (int panel = 0; panel < 2; panel++) {
        const int *xs = panel ? rs : ks, n = panel ? N_RS : N_KS;
        const double *ys = panel ? ce_r : ce_k;
        int X0 = panel ? 600 : 80, X1 = panel ? 810 : 520, Y0 = 50, Y1 = 350;
        double xmin = xs[0], xmax = xs[n - 1];
        #define PX(x) (X0 + 15 + (int)(((x) - xmin) / (xmax - xmin) * (X1 - X0 - 30) + 0.5))
        #define PY(y) (Y1 - (int)(((y) - lo) / (hi - lo) * (Y1 - Y0) + 0.5))
        for (int t = 0; t <= 4; t++) {          /* y grid, ticks and labels */
            double y = lo + (hi - lo) * t / 4;
            png_line(&im, X0 + 1, PY(y), X1, PY(y), GRAY, 0);
            png_line(&im, X0 - 5, PY(y), X0, PY(y), BLACK, 0);
            snprintf(buf, sizeof buf, "%.3f", y);
            png_text(&im, X0 - 8 - png_text_w(buf, 1), PY(y) - 3, buf, 1, BLACK);
        }
        png_line(&im, X0, Y0, X0, Y1, BLACK, 0);
        png_line(&im, X0, Y1, X1, Y1, BLACK, 0);
        for (int i = 0; i < n; i++) {           /* x ticks at the measured points */
            png_line(&im, PX(xs[i]), Y1, PX(xs[i]), Y1 + 5, BLACK, 0);
            snprintf(buf, sizeof buf, "%d", xs[i]);
            png_text(&im, PX(xs[i]) - png_text_w(buf, 2) / 2, Y1 + 9, buf, 2, BLACK);
        }
        if (panel) snprintf(buf, sizeof buf, "RESTARTS (K=%d)", eval_steps);
        png_text(&im, (X0 + X1) / 2 - png_text_w(panel ? buf : "THINK STEPS", 2) / 2, Y1 + 32,
                 panel ? buf : "THINK STEPS", 2, BLACK);
        if (!isnan(base))
            for (int d = 0; d < 2; d++) png_line(&im, X0 + 1, PY(base) + d, X1, PY(base) + d, RED, 6);
        for (int i = 0; i < n; i++) {
            for (int d = 0; i + 1 < n && d < 9; d++)  /* 3 pixels thick */
                png_line(&im, PX(xs[i]) + d % 3 - 1, PY(ys[i]) + d / 3 - 1, PX(xs[i + 1]) + d % 3 - 1,
                         PY(ys[i + 1]) + d / 3 - 1, panel ? GREEN : BLUE, 0);
            png_rect(&im, PX(xs[i]) - 3, PY(ys[i]) - 3, PX(xs[i]) + 3, PY(ys[i]) + 3, panel ? GREEN : BLUE);
        }
        #undef PX
        #undef PY
    }
    png_rect(&im, 560, 14, 580, 16, BLUE);
    png_text(&im, 588, 12, "EBT", 1, BLACK);
    png_rect(&im, 620, 14, 640, 16, GREEN);
    png_text(&im, 648, 12, "EBT RESTARTS", 1, BLACK);
    if (!isnan(base)) {
        png_line(&im, 560, 27, 580, 27, RED, 6);
        png_text(&im, 588, 24, "TRANSFORMER++", 1, BLACK);
    }
    int r = png_save(&im, path);
    png_free(&im);
    return r;
}

/* one markdown row: label, CE, perplexity, energy [, won by start != 0] */
static void table_row(const char *label, const eval_out *e, int with_switch)
{
    char ppl[32], en[32], sw[32];
    snprintf(ppl, sizeof ppl, exp(e->ce) < 1e6 ? "%.3f" : "%.3g", exp(e->ce));
    snprintf(en, sizeof en, isnan(e->energy) ? "-" : "%.4f", e->energy);
    snprintf(sw, sizeof sw, isnan(e->switched) ? "-" : "%.1f%%", 100 * e->switched);
    printf("| %13s | %18.4f | %10s | %17s |", label, e->ce, ppl, en);
    printf(with_switch ? " %17s |\n" : "\n", sw);
}

typedef struct {
    const char *ckpt, *base_path, *data, *plot_path;
    long nb;
    int B, eval_steps;
    double noise, init_scale, step_size;
} eval_args;

/* Returns -1 when *a is ready, else the exit code (0 after --help, 2 for bad usage). */
static int eval_parse(int argc, char **argv, eval_args *a)
{
    const char *ckpt = "ebt.safetensors", *base_path = NULL, *data = NULL, *plot_path = NULL;
    long nb = 16;
    int B = 16, eval_steps = 4;
    double noise = 0, init_scale = 1, step_size = 0;
    const opt_spec spec[] = {
        {"--ckpt", OPT_STR, &ckpt, 0, 0}, {"--baseline", OPT_STR, &base_path, 0, 0}, {"--data", OPT_STR, &data, 0, 0},
        {"--plot", OPT_STR, &plot_path, 0, 0}, {"--batches", OPT_LONG, &nb, 1, 1e6}, {"--batch", OPT_INT, &B, 1, 1 << 20},
        {"--eval-steps", OPT_INT, &eval_steps, 0, 1000}, {"--noise", OPT_DBL, &noise, 0, 1e6},
        {"--init-scale", OPT_DBL, &init_scale, 0, 1e6}, {"--step-size", OPT_DBL, &step_size, 0, 1e9},
    };
    int rc = parse_opts(argc, argv, spec, N_OPTS(spec), EVAL_USAGE);
    if (rc >= 0) return rc;
    *a = (eval_args){ .ckpt = ckpt, .base_path = base_path, .data = data, .plot_path = plot_path, .nb = nb, .B = B,
                      .eval_steps = eval_steps, .noise = noise, .init_scale = init_scale, .step_size = step_size };
    return -1;
}

static int cmd_eval(int argc, char **argv)
{
    eval_args a;
    int rc = eval_parse(argc, argv, &a);
    if (rc >= 0) return rc;
    const char *ckpt = a.ckpt, *base_path = a.base_path, *data = a.data, *plot_path = a.plot_path;
    const long nb = a.nb;
    const int B = a.B, eval_steps = a.eval_steps;
    const double noise = a.noise, init_scale = a.init_scale, step_size = a.step_size;
    ebt_model *m = NULL, *base = NULL;
    ebt_workspace *ws = NULL;
    corpus c = {0};
    rc = 1;
    if (load_model(ckpt, &m) || (base_path && load_model(base_path, &base))) goto done;
    const ebt_config *cfg = ebt_model_config(m);
    int S = cfg->max_seq_len;
    if (base && ebt_model_config(base)->max_seq_len < S) S = ebt_model_config(base)->max_seq_len;
    if (base && ebt_model_config(base)->arch != EBT_ARCH_TRANSFORMER)
        fprintf(stderr, "ebt_lm: note: --baseline %s is not a transformer++\n", base_path);
    if (!batch_fits(B, S)) { rc = 2; goto done; }
    if ((rc = load_corpus(data, &c, S)) != 0) goto done;
    rc = 1;
    windows w = {c.buf + c.n_train, c.n - c.n_train, (int)nb, B, S};
    ebt_think_opts th = ebt_think_default();
    th.restarts = 1;
    th.seed = EVAL_SEED;
    th.noise = noise;
    th.init_scale = init_scale;
    th.step_size = step_size;
    eval_out base_ev = {NAN, NAN, NAN}, ek[N_KS], er[N_RS];
    const int ks[N_KS] = {1, 2, 3, 4, 8}, rs[N_RS] = {1, 2, 4};
    double ce_k[N_KS], ce_r[N_RS];
    char label[16];
    const int tty = isatty(fileno(stderr));
    ebt_status st;
    printf("validation: %ld batches x %d windows x %d bytes = %ld positions\n\n", nb, B, S, nb * B * S);
    if (base && (st = evaluate(base, NULL, &w, &th, &base_ev)) != EBT_OK) { rc = fail("baseline", st, base, NULL); goto done; }
    if (cfg->arch != EBT_ARCH_EBT) {
        eval_out e;
        if ((st = evaluate(m, NULL, &w, &th, &e)) != EBT_OK) { rc = fail("validation", st, m, NULL); goto done; }
        printf("| model         | val CE (nats/byte) |        ppl | mean final energy |\n");
        printf("|--------------:|-------------------:|-----------:|------------------:|\n");
        table_row(ckpt, &e, 0);
        if (base) table_row(base_path, &base_ev, 0);
        if (plot_path) fprintf(stderr, "ebt_lm: --plot needs an EBT checkpoint; no plot written\n");
        rc = 0;
        goto done;
    }
    if ((st = ebt_workspace_create(m, B, S, &ws)) != EBT_OK) { rc = fail("ebt_workspace_create", st, m, NULL); goto done; }
    for (int i = 0; i < N_KS + N_RS; i++) {
        th.steps = i < N_KS ? ks[i] : eval_steps;
        th.restarts = i < N_KS ? 1 : rs[i - N_KS];
        eval_out *e = i < N_KS ? &ek[i] : &er[i - N_KS];
        int same = -1;                            /* already measured in the steps table? */
        for (int j = 0; i >= N_KS && th.restarts == 1 && j < N_KS; j++)
            if (ks[j] == eval_steps) same = j;
        if (same >= 0) {
            *e = ek[same];
        } else {
            if (tty) fprintf(stderr, "\rebt_lm: thinking %d steps, %d restarts ...\033[K", th.steps, th.restarts);
            if ((st = evaluate(m, ws, &w, &th, e)) != EBT_OK) { rc = fail("validation", st, m, ws); goto done; }
        }
        if (i < N_KS) ce_k[i] = e->ce; else ce_r[i - N_KS] = e->ce;
    }
    if (tty) fputs("\r\033[K", stderr);
    printf("| think steps   | val CE (nats/byte) |        ppl | mean final energy |\n");
    printf("|--------------:|-------------------:|-----------:|------------------:|\n");
    for (int i = 0; i < N_KS; i++) {
        snprintf(label, sizeof label, "%d", ks[i]);
        table_row(label, &ek[i], 0);
    }
    if (base) table_row("transformer++", &base_ev, 0);
    snprintf(label, sizeof label, "restarts K=%d", eval_steps);
    printf("\n| %13s | val CE (nats/byte) |        ppl | mean final energy | won by start != 0 |\n", label);
    printf("|--------------:|-------------------:|-----------:|------------------:|------------------:|\n");
    for (int i = 0; i < N_RS; i++) {
        snprintf(label, sizeof label, "%d", rs[i]);
        table_row(label, &er[i], 1);
    }
    if (base) table_row("transformer++", &base_ev, 1);
    if (plot_path) {
        if (plot(plot_path, ks, ce_k, rs, ce_r, eval_steps, base_ev.ce) != 0) {
            fprintf(stderr, "ebt_lm: cannot write %s\n", plot_path);
            goto done;
        }
        fprintf(stderr, "ebt_lm: wrote %s\n", plot_path);
    }
    rc = 0;
done:
    ebt_workspace_free(ws);
    ebt_free(m);
    ebt_free(base);
    free(c.buf);
    return rc;
}

/* ---- main ----------------------------------------------------------------- */

#ifndef EBT_LM_NO_MAIN   /* tests/fuzz/fuzz_lm_*.c include this file without main */
static const char MAIN_USAGE[] =
    "usage: ebt_lm <command> [options]   (ebt_lm <command> --help for its options)\n"
    "  train    train an EBT (or --arch transformer) byte-level language model\n"
    "  sample   generate text from a checkpoint\n"
    "  eval     validation CE against thinking steps and restarts, optional PNG plot\n"
    "threads: ebt's kernels use OMP_NUM_THREADS threads (default: every core) and\n"
    "OpenBLAS runs single-threaded, unless OPENBLAS_NUM_THREADS is set.\n";

int main(int argc, char **argv)
{
    /* ebt splits products and kernels over its own threads; OpenBLAS
     * threading its products at the same time would compete for the cores */
    if (!getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { fputs(MAIN_USAGE, stdout); return 0; }
    if (argc >= 2 && !strcmp(argv[1], "train")) return cmd_train(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "sample")) return cmd_sample(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "eval")) return cmd_eval(argc - 1, argv + 1);
    if (argc >= 2) fprintf(stderr, "ebt_lm: unknown command '%s'\n\n", argv[1]);
    fputs(MAIN_USAGE, stderr);
    return 2;
}
#endif
