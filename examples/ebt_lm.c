/* ebt_lm.c - a byte-level toy language model (V = 256, one token per byte)
   on the ebt library: train an EBT or a transformer++ baseline on a text
   file, sample from it, and measure how validation cross-entropy improves
   with thinking steps and restarts.

     ebt_lm train  [options]   train (EBT by default, --recipe NAME, --arch transformer)
     ebt_lm sample [options]   generate text, streamed (--trace: the model thinking)
     ebt_lm eval   [options]   CE vs thinking steps / restarts, uncertainty, out of
                               distribution, compute/quality of the stopping rules
     ebt_lm export [options]   re-write a checkpoint (--weights-only)
     ebt_lm help [command], ebt_lm <command> --help, ebt_lm --version

   EXAMPLES (from the repository root, after building build/ebt_lm)
     ./build/ebt_lm train --data data/tinyshakespeare.txt --minutes 8
     ./build/ebt_lm train --data data/tinyshakespeare.txt --minutes 8 \
         --arch transformer --out transformer.safetensors
     ./build/ebt_lm eval --ckpt ebt.safetensors --baseline transformer.safetensors \
         --data data/tinyshakespeare.txt --plot thinking.png --ood /usr/share/common-licenses/GPL-3
     ./build/ebt_lm sample --ckpt ebt.safetensors --prompt "ROMEO:" --trace --trace-png think.png
     ./build/ebt_lm train --data data/tinyshakespeare.txt --steps 5000 --resume

   NOTES
   - Corpus: --data FILE, or else every regular file of
     /usr/share/games/fortunes (Debian package `fortunes`) not ending in .dat
     or .u8, in sorted name order. The first 90% of the bytes train, the
     last 10% validate.
   - Budget: --minutes M (default 5; the final validation included) and/or
     --steps N (the total number of optimiser steps; a resumed run continues
     up to it). With --minutes alone the cosine schedule follows the elapsed
     time (ebt_train_opts.progress); with --steps it ends at N, and a resume
     is bit-exact.
   - Batch k is drawn from (seed, k) alone, so a resumed run sees the same
     batches as an uninterrupted one; the optimiser state and replay
     buffer come with the checkpoint.
   - Validation: the same windows every time (a fixed seed), B windows of
     S bytes per batch. EBT: CE = -log p(target) of the answer of
     ebt_think at every position; transformer++: log-softmax of the logits.
   - Several processes: `make mpi` builds ebt_lm_mpi, whose train runs on
     every rank of `mpirun -np N build/ebt_lm_mpi train ...`: --batch is
     the batch of all ranks together, each computes its share (in --accum
     micro-batches), the gradients are summed in a fixed order, rank 0
     validates, prints and saves (README, "Beyond one machine: MPI").

   Exit status: 0 ok, 1 library or i/o failure, 2 bad usage or no corpus,
   3 (ebt_lm_mpi) a rank stopped answering or MPI failed.
*/
#define _POSIX_C_SOURCE 200809L
#ifdef EBT_LM_OPENBLAS   /* the library's products run on OpenBLAS (make GEMM=cblas) */
#include <cblas.h>
#endif
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

/* ==== Model size and recipes ============================================
 * The model size of `train` (RECIPE_*) and the named training recipes
 * (--recipe NAME): each a set of ebt_train_opts and step-embedding choices,
 * printed at the start and saved in the checkpoint's metadata (user.recipe,
 * user.recipe.options, and user.think.steps / user.think.noise, how eval and
 * sample think by default). Options given on the command line override the
 * recipe. Where each value comes from, and what the experiments showed:
 * README.md, "Recipes". */
#define RECIPE_D           128      /* d_model */
#define RECIPE_LAYERS      4
#define RECIPE_HEADS       4
#define RECIPE_SEQ         128      /* context S (= max_seq_len) */
#define RECIPE_BATCH       16       /* B */
#define RECIPE_LR          1e-3
#define RECIPE_WARMUP      100

typedef struct {
    const char *name, *about;
    ebt_mode mode;
    int k_min, k_max;        /* thinking steps per batch */
    double alpha;            /* initial step size (V = 256: 0.3 keeps the first CE near ln 256) */
    int learn_alpha;
    double alpha_lr_mult, alpha_rand, noise;
    int replay;              /* replay capacity (sequences) */
    double replay_frac;
    int step_embed;          /* n_step_embed */
    double think_noise;      /* Langevin noise when the trained model thinks in eval / sample (it
                                thinks k_max steps by default) */
} recipe;

static const recipe RECIPES[] = {
    { "default", "this library's recipe for short runs: truncate, 2-3 steps, a step embedding per step, "
      "alpha learnt, x[1/2, 2], noise 1, replay 256 x 1/4",
      EBT_MODE_TRUNCATE, 2, 3, 0.3, 1, 10, 2, 1.0, 256, 0.25, 3, 0 },
    { "s1", "the published System 1 recipe (alexiglad/EBT job_scripts/nlp/pretrain/ebt_s1.sh): detach, "
      "2 steps, a step embedding per step, alpha learnt with a large learning rate, no noise, no replay",
      EBT_MODE_DETACH, 2, 2, 0.3, 1, 10, 1, 0, 0, 0, 2, 0 },
    { "s2", "the published System 2 recipe (ebt_s2.sh): truncate, 2-3 steps, one step embedding, "
      "alpha fixed x[1/2, 2], Langevin noise 3 (also when thinking later), replay 192 x 1/3",
      EBT_MODE_TRUNCATE, 2, 3, 0.3, 0, 1, 2, 3.0, 192, 0.33, 1, 3.0 },
    { "s3", "this library's earlier default: full (back-propagation through every step), 2-4 steps, "
      "alpha learnt x[1/2, 2], noise 0.3, replay 256 x 1/4, no step embedding",
      EBT_MODE_FULL, 2, 4, 0.3, 1, 1, 2, 0.3, 256, 0.25, 0, 0 },
};
#define N_RECIPES ((int)(sizeof RECIPES / sizeof RECIPES[0]))

static const recipe *recipe_find(const char *name)
{
    for (int i = 0; i < N_RECIPES; i++)
        if (!strcmp(RECIPES[i].name, name)) return &RECIPES[i];
    return NULL;
}
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

typedef enum { OPT_FLAG, OPT_STR, OPT_TEXT, OPT_INT, OPT_LONG, OPT_DBL, OPT_U64 } opt_kind;   /* STR non-empty, TEXT any */
typedef struct { const char *name; opt_kind kind; void *dst; double lo, hi; } opt_spec;

/* the value v (text) of option o stored into its destination; 0 if invalid */
static int opt_store(const opt_spec *o, const char *v)
{
    char *end = (char *)v;
    int str = o->kind == OPT_STR || o->kind == OPT_TEXT;
    double x = str ? 0 : strtod(v, &end);
    int ok = (str && (*v || o->kind == OPT_TEXT)) ||
             (end != v && !*end && x >= o->lo && x <= o->hi && (o->kind == OPT_DBL || x == floor(x)));
    unsigned long long u = 0;
    if (o->kind == OPT_U64) {   /* digits only, and no silent clamping to ULLONG_MAX */
        errno = 0;
        u = strtoull(v, NULL, 10);
        ok = *v && !v[strspn(v, "0123456789")] && errno != ERANGE;
    }
    if (!ok) return 0;
    if (str) *(const char **)o->dst = v;
    else if (o->kind == OPT_INT) *(int *)o->dst = (int)x;
    else if (o->kind == OPT_LONG) *(long *)o->dst = (long)x;
    else if (o->kind == OPT_DBL) *(double *)o->dst = x;
    else *(uint64_t *)o->dst = (uint64_t)u;
    return 1;
}

/* Parses argv[1..] against o[n]: `--name value` or `--name=value`; numbers
 * must lie in [lo, hi]; a flag sets its int to 1 (`--flag=0|1` too).
 * seen[k] (if seen) is set for every option given. Returns -1 when all is
 * well, else the exit code: 0 after --help (usage on stdout), 2 for a bad
 * option (usage on stderr). */
static int parse_opts(int argc, char **argv, const opt_spec *o, int n, const char *usage, unsigned char *seen)
{
    if (seen) memset(seen, 0, (size_t)n);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '='), *v;
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        int k = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        while (k < n && (strlen(o[k].name) != len || strncmp(a, o[k].name, len))) k++;
        v = eq ? eq + 1 : o[k < n ? k : 0].kind == OPT_FLAG ? NULL : i + 1 < argc ? argv[i + 1] : NULL;
        if (k == n || (o[k].kind != OPT_FLAG && !v)) {
            fprintf(stderr, "ebt_lm: unknown or incomplete option '%s'\n\n%s", a, usage);
            return 2;
        }
        if (seen) seen[k] = 1;
        if (o[k].kind == OPT_FLAG) {
            if (v && strcmp(v, "0") && strcmp(v, "1")) { fprintf(stderr, "ebt_lm: %s takes no value (or =0, =1)\n\n%s", o[k].name, usage); return 2; }
            *(int *)o[k].dst = !v || *v == '1';
            continue;
        }
        if (!eq) i++;
        if (!opt_store(&o[k], v)) { fprintf(stderr, "ebt_lm: invalid value '%s' for %s\n\n%s", v, o[k].name, usage); return 2; }
    }
    return -1;
}

/* index of option name in o[n] (it must be there) */
static int opt_index(const opt_spec *o, int n, const char *name)
{
    for (int k = 0; k < n; k++)
        if (!strcmp(o[k].name, name)) return k;
    return -1;
}

/* the first of the names (a NULL-terminated list) given on the command line, or NULL */
static const char *opt_first_seen(const opt_spec *o, int n, const unsigned char *seen, const char *const *names)
{
    for (; *names; names++) {
        int k = opt_index(o, n, *names);
        if (k >= 0 && seen[k]) return *names;
    }
    return NULL;
}

#define N_OPTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- corpus ------------------------------------------------------------ */

typedef struct { unsigned char *buf; size_t n, cap, n_train; } corpus;  /* val = buf[n_train, n) */

/* appends the bytes of path; -1 with errno set on failure */
static int append_file(corpus *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t k;
    do {
        if (c->cap - c->n < 65536) {
            size_t cap = c->cap ? 2 * c->cap : 1 << 20;
            unsigned char *nb = realloc(c->buf, cap);
            if (!nb) { fclose(f); errno = ENOMEM; return -1; }
            c->buf = nb; c->cap = cap;
        }
        k = fread(c->buf + c->n, 1, c->cap - c->n, f);
        c->n += k;
    } while (k > 0);
    int bad = ferror(f), e = errno;
    fclose(f);
    if (bad) errno = e ? e : EIO;
    return bad ? -1 : 0;
}

/* length of the valid UTF-8 sequence at s[0..n) (1 for ASCII), or 0 */
static int utf8_len(const unsigned char *s, size_t n)
{
    int len = s[0] < 0x80 ? 1 : s[0] >= 0xC2 && s[0] <= 0xDF ? 2 : s[0] >= 0xE0 && s[0] <= 0xEF ? 3 :
              s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : 0;
    if (!len || (size_t)len > n) return 0;
    for (int i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] > 0x9F) ||   /* overlong, surrogates */
        (s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] > 0x8F)) return 0;
    return len;
}

/* fraction of buf[n] that is text: printable ASCII, tab/newline/CR, valid UTF-8 */
static double text_fraction(const unsigned char *buf, size_t n)
{
    size_t ok = 0;
    for (size_t i = 0; i < n;) {
        int len = utf8_len(buf + i, n - i);
        if (len > 1 || (len == 1 && (buf[i] >= 32 || buf[i] == '\n' || buf[i] == '\t' || buf[i] == '\r') && buf[i] != 127))
            ok += (size_t)len;
        i += len ? (size_t)len : 1;
    }
    return n ? (double)ok / (double)n : 1;
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
        if (append_file(c, path) != 0) {
            fprintf(stderr, "ebt_lm: cannot read %s: %s\n", path, strerror(errno));
            free(c->buf); c->buf = NULL;
            return 1;
        }
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
                fprintf(stderr, "ebt_lm: cannot read %s: %s\n", path_buf, strerror(errno));
                bad = 1;
            }
            free(names[i]);
        }
        free(names);
        if (bad) { free(c->buf); c->buf = NULL; return 1; }
    }
    double tf = text_fraction(c->buf, c->n);
    if (tf < 0.95)
        fprintf(stderr, "ebt_lm: warning: %s is mostly not text (%.0f%% of its bytes are printable ASCII or UTF-8)\n",
                path ? path : FORTUNE_DIR, 100 * tf);
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
/* means over the windows: CE (nats/byte), final energy, the fraction of
 * positions won by a start other than 0, and row evaluations per position */
typedef struct { double ce, energy, switched, rows; } eval_out;
/* per-position results of an EBT evaluation (evaluate fills the arrays given) */
typedef struct {
    float *ce, *e_first, *e_final, *curv;   /* [nb*B*S] each, or NULL */
    int *steps;                              /* [nb*B*S], or NULL */
} eval_detail;

/* CE of position i of batch results: -log p(target) (EBT) or from the logits */
static double position_ce(const ebt_real *row, int t, int V, int is_ebt)
{
    if (is_ebt) { double q = row[t]; return -log(q > 1e-30 ? q : 1e-30); }
    double mx = row[0], s = 0;   /* CE = logsumexp(row) - row[target] */
    for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
    for (int j = 0; j < V; j++) s += exp(row[j] - mx);
    return log(s) + mx - row[t];
}

/* Validation over w's windows. EBT: thinks with th on ws (made for B x S)
 * at every position; transformer++: from the logits. det (or NULL) gets
 * the per-position numbers (EBT). */
static ebt_status evaluate(ebt_model *m, ebt_workspace *ws, const windows *w, const ebt_think_opts *th,
                           eval_out *out, const eval_detail *det)
{
    const ebt_config *cfg = ebt_model_config(m);
    const int V = cfg->vocab_size, N = w->B * w->S, is_ebt = cfg->arch == EBT_ARCH_EBT, K1 = th->steps + 1;
    int32_t *tok = malloc((size_t)N * sizeof *tok), *tgt = malloc((size_t)N * sizeof *tgt);
    ebt_real *p = malloc((size_t)N * V * sizeof *p), *fe = malloc((size_t)N * sizeof *fe);
    ebt_real *hist = malloc((size_t)N * K1 * sizeof *hist), *cv = malloc((size_t)N * sizeof *cv);
    int *win = malloc((size_t)N * sizeof *win), *stp = malloc((size_t)N * sizeof *stp);
    ebt_status st = (tok && tgt && p && fe && hist && cv && win && stp) ? EBT_OK : EBT_ERR_NOMEM;
    double ce = 0, en = 0, sw = 0, rows = 0;
    for (int b = 0; b < w->nb && st == EBT_OK; b++) {
        size_t o = (size_t)b * N;
        fill_batch(w->val, w->n, w->B, w->S, batch_key(EVAL_SEED, (uint64_t)b, 0), tok, tgt);
        if (is_ebt) {
            ebt_think_result r;
            memset(&r, 0, sizeof r);
            r.probs = p; r.final_energy = fe; r.winner = win; r.energy = hist; r.steps_taken = stp;
            r.curvature = det && det->curv ? cv : NULL;
            if ((st = ebt_think(ws, m, tok, w->B, w->S, th, &r)) != EBT_OK) break;
            rows += (double)r.rows_evaluated;
        } else if ((st = ebt_lm_logits(m, tok, w->B, w->S, p)) != EBT_OK) {
            break;
        }
        for (int i = 0; i < N; i++) {
            double c = position_ce(p + (size_t)i * V, tgt[i], V, is_ebt);
            ce += c;
            if (!is_ebt) continue;
            en += fe[i];
            sw += win[i] != 0;
            if (!det) continue;
            if (det->ce) det->ce[o + i] = (float)c;
            if (det->e_first) det->e_first[o + i] = (float)hist[(size_t)i * K1];
            if (det->e_final) det->e_final[o + i] = (float)fe[i];
            if (det->curv) det->curv[o + i] = (float)cv[i];
            if (det->steps) det->steps[o + i] = stp[i];
        }
    }
    double total = (double)w->nb * N;
    out->ce = ce / total;
    out->energy = is_ebt ? en / total : NAN;
    out->switched = is_ebt ? sw / total : NAN;
    out->rows = is_ebt ? rows / total : NAN;
    free(tok); free(tgt); free(p); free(fe); free(hist); free(cv); free(win); free(stp);
    return st;
}

/* ---- processes: train on one or several --------------------------------
 * `train` can compute each optimiser step on several processes (ranks),
 * each on its share of the batch; `make mpi` builds ebt_lm_mpi, whose
 * examples/lm_mpi.h implements this interface with MPI. This build is one
 * process (rank 0 of 1), for which every call is trivial.
 *   lm_comm_init(c, &argc, &argv)   0, or an exit code
 *   lm_comm_sum(c, buf, n, ctl, nctl, wait, ctx)
 *       buf[n] (reals) and ctl[nctl] (doubles) become their sums over the
 *       ranks, added in rank order: the same bits on every rank and in
 *       every run with the same number of ranks. Rank 0 waits up to
 *       c->timeout seconds for the others, the others c->timeout + wait;
 *       then every rank is stopped with a message naming ctx (the step)
 *       and the ranks that did not answer. Returns only on success.
 *   lm_comm_abort(c, code)          stops every rank (several); returns here (one)
 *   lm_comm_finalize(c, rc)         the exit code */
#ifdef EBT_LM_MPI
#include "lm_mpi.h"
#else
typedef struct { int rank, size; double timeout; } lm_comm;
static void lm_comm_sum(lm_comm *c, ebt_real *buf, size_t n, double *ctl, int nctl, double wait, const char *ctx)
{
    (void)c; (void)buf; (void)n; (void)ctl; (void)nctl; (void)wait; (void)ctx;   /* one process: the sum is its own */
}
static void lm_comm_abort(lm_comm *c, int code) { (void)c; (void)code; }
#ifndef EBT_LM_NO_MAIN
static int lm_comm_init(lm_comm *c, int *argc, char ***argv)
{
    (void)argc; (void)argv;
    c->rank = 0; c->size = 1; c->timeout = 0;
    return 0;
}
static int lm_comm_finalize(lm_comm *c, int rc) { (void)c; return rc; }
#endif
#endif

/* ---- train ---------------------------------------------------------------- */

static const char TRAIN_USAGE[] =
    "usage: ebt_lm train [options]      (--opt value or --opt=value)\n"
    "corpus and budget:\n"
    "  --data FILE          text corpus (default: the fortunes in " FORTUNE_DIR ")\n"
    "  --minutes M          wall-clock budget, final validation included (default 5; none if only\n"
    "                       --steps is given); the cosine schedule follows the elapsed time\n"
    "  --steps N            total optimiser steps (default: none); the cosine schedule ends there\n"
    "  --out FILE           checkpoint (default ebt.safetensors, or transformer.safetensors)\n"
    "  --resume             continue from --out if it exists (weights, optimiser, replay)\n"
    "  --save-every N       checkpoint every N steps (default 500) and at the end\n"
    "  --eval-every N       validation every N steps (default -1: four times per run; 0: only at the end)\n"
    "  --eval-batches N     batches of B windows for the final validation (default 8; interim ones use 2)\n"
    "  --eval-steps K       thinking steps for validation (default --k-max)\n"
    "model (ignored with --resume when the checkpoint exists):\n"
    "  --arch ebt|transformer (default ebt)\n"
    "  --d D (default 128)  --layers L (4)  --heads H (4)  --ff F (default D)\n"
    "  --seq S (context, default 128)  --batch B (16)  --tie (candidate embedding = tok_embed; default off)\n"
    "  --alpha A (initial step size)  --step-embed N (step tokens)       (defaults: the recipe's)\n"
    "training (ebt_train_opts; EBT only unless marked):\n"
    "  --recipe NAME        default | s1 | s2 | s3 (default: default; `--recipe list` describes them)\n"
    "  --mode detach|truncate|full  --k-min K  --k-max K  --alpha-rand R  --noise SIGMA\n"
    "  --replay CAP  --replay-frac F  --learn-alpha | --no-learn-alpha  --alpha-lr-mult X\n"
    "                       (defaults: the recipe's; each overrides it)\n"
    "  both archs: --lr LR (1e-3)  --min-lr LR (1e-4)  --warmup N (100)  --clip NORM (1)  --wd DECAY (0.01)\n"
    "  --seed S             model init, batches, thinking (default 1)\n"
    "processes (ebt_lm_mpi under mpirun: README, \"Beyond one machine: MPI\"):\n"
    "  --accum M            micro-batches per step (and per process; default 1): the same step\n"
    "                       (up to float rounding) in less memory\n"
    "  --mpi-timeout SEC    stop every rank when one has not answered for SEC seconds (default 120)\n"
    "  --check-sync         compare a hash of the parameters across the ranks at every step\n"
    "  --fault-nan STEP[:RANK] (testing) the gradient of rank RANK (default 0) is NaN at the first\n"
    "                       try of step STEP: every rank must refuse it and retry alike\n";

/* train's options, parsed and checked (no i/o) */
typedef struct {
    ebt_config cfg;
    ebt_train_opts to;
    const char *data, *out, *arch;
    int B, S, seq_set, resume, eval_steps;
    long steps, eval_every, save_every, eval_batches;
    double minutes;
    int accum, check_sync, fault_rank;   /* --accum, --check-sync, --fault-nan STEP:RANK */
    long fault_step;                     /* 0: no fault */
    double mpi_timeout;
    const char *model_opt;   /* the first model option given (ignored when resuming), or NULL */
    const char *ebt_opt;     /* the first EBT-only option given, or NULL */
    const recipe *rec;       /* the recipe (--recipe, default "default") */
} train_args;

static const char *const EBT_ONLY_TRAIN[] = { "--mode", "--k-min", "--k-max", "--alpha-rand", "--noise", "--replay",
    "--replay-frac", "--no-learn-alpha", "--learn-alpha", "--alpha-lr-mult", "--alpha", "--step-embed", "--tie",
    "--eval-steps", "--recipe", NULL };
static const char *const MODEL_OPTS[] = { "--d", "--layers", "--heads", "--ff", "--alpha", "--step-embed", "--tie",
                                          "--arch", NULL };

/* the recipe's choices over the library's defaults */
static void train_defaults(const recipe *r, ebt_config *cfg, ebt_train_opts *to)
{
    *cfg = ebt_config_default();
    *to = ebt_train_default();
    cfg->d_model = RECIPE_D; cfg->n_layers = RECIPE_LAYERS; cfg->n_heads = RECIPE_HEADS;
    cfg->alpha = r->alpha; cfg->n_step_embed = r->step_embed;
    to->mode = r->mode; to->k_min = r->k_min; to->k_max = r->k_max; to->learn_alpha = r->learn_alpha;
    to->alpha_lr_mult = r->alpha_lr_mult; to->alpha_rand = r->alpha_rand; to->noise = r->noise;
    to->replay_capacity = r->replay; to->replay_frac = r->replay_frac;
    to->lr = RECIPE_LR; to->warmup_steps = RECIPE_WARMUP;
    to->seed = 1;
}

/* the --recipe named on the command line (before the other options are
 * parsed over it); NULL after printing why if it is unknown */
static const recipe *train_recipe(int argc, char **argv)
{
    const char *name = "default";
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--recipe=", 9)) name = argv[i] + 9;
        else if (!strcmp(argv[i], "--recipe") && i + 1 < argc) name = argv[++i];
    }
    const recipe *r = recipe_find(name);
    if (!r) {
        FILE *f = strcmp(name, "list") ? stderr : stdout;
        if (f == stderr) fprintf(f, "ebt_lm: unknown recipe '%s'; ", name);
        fprintf(f, "the recipes:\n");
        for (int i = 0; i < N_RECIPES; i++) fprintf(f, "  %-8s %s\n", RECIPES[i].name, RECIPES[i].about);
    }
    return r;
}

/* --fault-nan STEP[:RANK]: STEP >= 1, RANK >= 0; 0 if malformed */
static int parse_fault(const char *v, long *step, int *rank)
{
    char *end;
    long s = strtol(v, &end, 10), r = 0;
    if (end == v || s < 1 || (*end && *end != ':')) return 0;
    if (*end == ':') {
        const char *v2 = end + 1;
        r = strtol(v2, &end, 10);
        if (end == v2 || *end || r < 0 || r > 1 << 24) return 0;
    }
    *step = s;
    *rank = (int)r;
    return 1;
}

/* Returns -1 when *a is ready, else the exit code (0 after --help, 2 for bad usage). */
static int train_parse(int argc, char **argv, train_args *a)
{
    ebt_config cfg;
    ebt_train_opts to;
    const recipe *rec = train_recipe(argc, argv);
    for (int i = 1; !rec && i < argc; i++)
        if (!strcmp(argv[i], "--recipe=list") || (!strcmp(argv[i], "--recipe") && i + 1 < argc && !strcmp(argv[i + 1], "list"))) return 0;
    if (!rec) return 2;
    train_defaults(rec, &cfg, &to);
    const char *data = NULL, *out = NULL, *arch = NULL, *mode = NULL, *recipe_name = NULL;
    int B = RECIPE_BATCH, S = 0, ff = 0, resume = 0, tie = 0, fixed_alpha = !rec->learn_alpha, learn_alpha = 0, eval_steps = 0;
    long steps = 0, eval_every = -1, save_every = 500, eval_batches = 8;
    double minutes = -1, mpi_timeout = 120;
    int accum = 1, check_sync = 0;
    const char *fault = NULL;
    const opt_spec spec[] = {
        {"--data", OPT_STR, &data, 0, 0}, {"--out", OPT_STR, &out, 0, 0}, {"--arch", OPT_STR, &arch, 0, 0},
        {"--resume", OPT_FLAG, &resume, 0, 0}, {"--minutes", OPT_DBL, &minutes, 1e-3, 1e7},
        {"--steps", OPT_LONG, &steps, 1, 1e12}, {"--save-every", OPT_LONG, &save_every, 1, 1e12},
        {"--eval-every", OPT_LONG, &eval_every, -1, 1e12}, {"--eval-batches", OPT_LONG, &eval_batches, 1, 1e6},
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
        {"--seed", OPT_U64, &to.seed, 0, 0}, {"--recipe", OPT_STR, &recipe_name, 0, 0},
        {"--learn-alpha", OPT_FLAG, &learn_alpha, 0, 0},
        {"--accum", OPT_INT, &accum, 1, 1 << 20},
        {"--mpi-timeout", OPT_DBL, &mpi_timeout, 0.1, 1e7}, {"--check-sync", OPT_FLAG, &check_sync, 0, 0},
        {"--fault-nan", OPT_STR, &fault, 0, 0},
    };
    unsigned char seen[N_OPTS(spec)];
    int rc = parse_opts(argc, argv, spec, N_OPTS(spec), TRAIN_USAGE, seen);
    if (rc >= 0) return rc;
    if (arch && strcmp(arch, "ebt") && strcmp(arch, "transformer") && strcmp(arch, "transformer++"))
        { fprintf(stderr, "ebt_lm: --arch is ebt or transformer\n"); return 2; }
    if (mode && strcmp(mode, "detach") && strcmp(mode, "truncate") && strcmp(mode, "full"))
        { fprintf(stderr, "ebt_lm: --mode is detach, truncate or full\n"); return 2; }
    cfg.arch = arch && strcmp(arch, "ebt") ? EBT_ARCH_TRANSFORMER : EBT_ARCH_EBT;
    const char *ebt_only = opt_first_seen(spec, N_OPTS(spec), seen, EBT_ONLY_TRAIN);
    if (cfg.arch == EBT_ARCH_TRANSFORMER && ebt_only)
        { fprintf(stderr, "ebt_lm: %s applies to EBT models only, not to --arch transformer\n", ebt_only); return 2; }
    if (mode) to.mode = mode[0] == 'f' ? EBT_MODE_FULL : mode[0] == 't' ? EBT_MODE_TRUNCATE : EBT_MODE_DETACH;
    cfg.tie_pred_embed = tie;
    if (fixed_alpha && learn_alpha) { fprintf(stderr, "ebt_lm: --learn-alpha and --no-learn-alpha together\n"); return 2; }
    to.learn_alpha = learn_alpha || !fixed_alpha;
    const int seq_set = S > 0;
    if (!seq_set) S = RECIPE_SEQ;
    if (to.k_min > to.k_max) { fprintf(stderr, "ebt_lm: --k-min > --k-max\n"); return 2; }
    long fault_step = 0;
    int fault_rank = 0;
    if (fault && !parse_fault(fault, &fault_step, &fault_rank)) { fprintf(stderr, "ebt_lm: --fault-nan is STEP or STEP:RANK\n"); return 2; }
    if (minutes < 0 && steps == 0) minutes = 5;
    cfg.d_ff = ff ? ff : cfg.d_model;
    cfg.max_seq_len = S;
    if (!out) out = cfg.arch == EBT_ARCH_TRANSFORMER ? "transformer.safetensors" : "ebt.safetensors";
    *a = (train_args){ .cfg = cfg, .to = to, .data = data, .out = out, .arch = arch, .B = B, .S = S,
                       .seq_set = seq_set, .resume = resume, .eval_steps = eval_steps, .steps = steps,
                       .eval_every = eval_every, .save_every = save_every, .eval_batches = eval_batches,
                       .minutes = minutes, .model_opt = opt_first_seen(spec, N_OPTS(spec), seen, MODEL_OPTS),
                       .ebt_opt = ebt_only, .accum = accum, .check_sync = check_sync, .fault_rank = fault_rank,
                       .fault_step = fault_step, .mpi_timeout = mpi_timeout, .rec = rec };
    return -1;
}

/* the state of a training run */
typedef struct {
    train_args a;
    ebt_model *m;
    ebt_workspace *ws;
    corpus c;
    int32_t *tok, *tgt;
    windows w;
    ebt_think_opts th;
    int is_ebt, tty, interim_done;
    long step0, step, last_save, last_eval;
    double t0, deadline, train_time, eval_per_batch;
    eval_out ev;
    ebt_train_stats ts;
    lm_comm *comm;           /* the processes of the run (one unless ebt_lm_mpi) */
    double *ctl;             /* [CTL_HASH + 2 size] control values of lm_comm_sum */
    double busy;             /* rank 0's latest estimate of its time between two sums */
    double save_time;        /* duration of rank 0's last save */
    double steady_time, steady_comm;   /* step time and its summing time, steps after the first */
    long steady_n;
    int stopped;             /* rank 0 ended the run (its time budget) */
} trainer;

/* the effective training options in a line (the recipe with the command line's changes) */
static void recipe_line(const train_args *a, char *buf, size_t n)
{
    const ebt_train_opts *o = &a->to;
    snprintf(buf, n, "%s k=%d-%d alpha=%.3g%s rand=%.3g noise=%.3g replay=%dx%.2g step_embed=%d",
             o->mode == EBT_MODE_DETACH ? "detach" : o->mode == EBT_MODE_TRUNCATE ? "truncate" : "full", o->k_min, o->k_max,
             a->cfg.alpha, o->learn_alpha ? "(learnt)" : "(fixed)", o->alpha_rand, o->noise, o->replay_capacity,
             o->replay_frac, a->cfg.n_step_embed);
}

/* a new EBT keeps its recipe and how it should think in its metadata */
static int train_record_recipe(trainer *T)
{
    char line[160], num[32];
    const recipe *r = T->a.rec;
    ebt_status st;
    recipe_line(&T->a, line, sizeof line);
    line[89] = 0;   /* a metadata value is under 90 bytes */
    st = ebt_meta_set(T->m, "recipe", r->name);
    if (st == EBT_OK) st = ebt_meta_set(T->m, "recipe.options", line);
    snprintf(num, sizeof num, "%d", T->a.eval_steps ? T->a.eval_steps : T->a.to.k_max);
    if (st == EBT_OK) st = ebt_meta_set(T->m, "think.steps", num);
    snprintf(num, sizeof num, "%.6g", r->think_noise);
    if (st == EBT_OK) st = ebt_meta_set(T->m, "think.noise", num);
    return st == EBT_OK ? 0 : fail("ebt_meta_set", st, T->m, NULL);
}

/* how a checkpoint's model thinks by default (its think.steps and think.noise metadata) */
static void think_defaults(const ebt_model *m, int *steps, double *noise)
{
    const char *s = ebt_meta_get(m, "think.steps"), *z = ebt_meta_get(m, "think.noise");
    char *end;
    long k = s ? strtol(s, &end, 10) : 0;
    double x = z ? strtod(z, &end) : -1;
    if (s && k >= 0 && k <= 1000) *steps = (int)k;
    if (z && x >= 0 && isfinite(x)) *noise = x;
}

/* What the ranks add to each step's sum besides the gradients: rank 0's
 * learning-rate progress (time budget), its stop signal and its time
 * between sums, every rank's non-finite flag and, with --check-sync, its
 * parameter hash (CTL_HASH + rank) */
enum { CTL_PROGRESS, CTL_STOP, CTL_NONFINITE, CTL_BUSY, CTL_HASH };

/* the model of a run: the checkpoint (--resume) or a new one; an exit code */
static int train_model(trainer *T)
{
    train_args *a = &T->a;
    struct stat sb;
    if (a->resume && stat(a->out, &sb) == 0) {
        if (load_model(a->out, &T->m)) return 1;
        const ebt_config *mc = ebt_model_config(T->m);
        if (a->arch && mc->arch != a->cfg.arch) { fprintf(stderr, "ebt_lm: %s holds a different arch than --arch\n", a->out); return 2; }
        if (mc->arch != EBT_ARCH_EBT && a->ebt_opt) {
            fprintf(stderr, "ebt_lm: %s applies to EBT models only; %s is a transformer++ checkpoint\n", a->ebt_opt, a->out);
            return 2;
        }
        if (a->seq_set && a->S > mc->max_seq_len) {
            fprintf(stderr, "ebt_lm: --seq %d exceeds the checkpoint's max_seq_len %d\n", a->S, mc->max_seq_len);
            return 2;
        }
        if (a->model_opt && T->comm->rank == 0) fprintf(stderr, "ebt_lm: warning: %s is ignored: the checkpoint fixes the model\n", a->model_opt);
        if (!a->seq_set) a->S = mc->max_seq_len;
        a->cfg = *mc;
        if (T->comm->rank == 0) fprintf(stderr, "ebt_lm: resuming %s at step %ld\n", a->out, ebt_train_steps_done(T->m));
        return 0;
    }
    char err[256];
    if (ebt_config_check(&a->cfg, err, sizeof err) != EBT_OK) { fprintf(stderr, "ebt_lm: bad model options: %s\n", err); return 2; }
    ebt_status st = ebt_create(&a->cfg, a->to.seed, &T->m);
    if (st != EBT_OK) return fail("ebt_create", st, NULL, NULL);
    return a->cfg.arch == EBT_ARCH_EBT ? train_record_recipe(T) : 0;
}

/* model, corpus, batch buffers, workspace, validation windows; an exit code */
static int train_open(trainer *T)
{
    train_args *a = &T->a;
    int rc = train_model(T);
    if (rc) return rc;
    T->is_ebt = a->cfg.arch == EBT_ARCH_EBT;
    if (!batch_fits(a->B, a->S)) return 2;
    if ((rc = load_corpus(a->data, &T->c, a->S)) != 0) return rc;
    T->tok = malloc((size_t)a->B * a->S * sizeof *T->tok);
    T->tgt = malloc((size_t)a->B * a->S * sizeof *T->tgt);
    T->ctl = calloc(CTL_HASH + 2 * (size_t)T->comm->size, sizeof *T->ctl);
    if (!T->tok || !T->tgt || !T->ctl) { fprintf(stderr, "ebt_lm: out of memory\n"); return 1; }
    ebt_status st;   /* the workspace serves validation, which rank 0 does */
    if (T->is_ebt && T->comm->rank == 0 && (st = ebt_workspace_create(T->m, a->B, a->S, &T->ws)) != EBT_OK)
        return fail("ebt_workspace_create", st, T->m, NULL);
    T->th = ebt_think_default();
    T->th.steps = a->to.k_max;
    T->th.noise = 0;
    think_defaults(T->m, &T->th.steps, &T->th.noise);   /* the recipe's (or the checkpoint's) */
    if (a->eval_steps) T->th.steps = a->eval_steps;
    T->th.seed = EVAL_SEED;
    T->th.init_scale = a->to.init_scale;
    T->w = (windows){T->c.buf + T->c.n_train, T->c.n - T->c.n_train, (int)a->eval_batches, a->B, a->S};
    const ebt_config *cfg = &a->cfg;
    if (T->comm->rank != 0) return 0;
    fprintf(stderr, "ebt_lm: %s, %.2fM params (D=%d L=%d H=%d F=%d), S=%d B=%d, corpus %zu bytes "
            "(%zu train, %zu val)", T->is_ebt ? "ebt" : "transformer++", ebt_n_params(T->m) / 1e6,
            cfg->d_model, cfg->n_layers, cfg->n_heads, cfg->d_ff, a->S, a->B, T->c.n, T->c.n_train, T->c.n - T->c.n_train);
    if (T->comm->size > 1 || a->accum > 1)
        fprintf(stderr, ", %d process%s x %d micro-batch%s", T->comm->size, T->comm->size > 1 ? "es" : "",
                a->accum, a->accum > 1 ? "es" : "");
    fputc('\n', stderr);
    if ((long long)T->comm->size * a->accum > a->B)   /* shares of 0 sequences are skipped */
        fprintf(stderr, "ebt_lm: warning: %d process%s x %d micro-batch%s split a batch of only %d sequences\n",
                T->comm->size, T->comm->size > 1 ? "es" : "", a->accum, a->accum > 1 ? "es" : "", a->B);
    if (T->is_ebt) {
        char line[160];
        const char *rname = ebt_meta_get(T->m, "recipe");
        recipe_line(a, line, sizeof line);
        fprintf(stderr, "ebt_lm: recipe %s (%s): %s; validation thinks %d steps%s\n", rname ? rname : a->rec->name,
                rname && strcmp(rname, a->rec->name) ? "from the checkpoint" : a->rec->about, line, T->th.steps,
                T->th.noise > 0 ? " with noise" : "");
    }
    return 0;
}

/* seconds per training step so far (a guess before the first) */
static double train_per_step(const trainer *T)
{
    return T->step > T->step0 ? T->train_time / (double)(T->step - T->step0) : 0;
}

/* the expected cost of the final validation */
static double train_final_cost(const trainer *T)
{
    double per_batch = T->eval_per_batch > 0 ? T->eval_per_batch : train_per_step(T);
    return per_batch * (double)T->a.eval_batches;
}

/* the wall-clock time training may use (the final validation is reserved) */
static double train_end_time(const trainer *T) { return T->deadline - train_final_cost(T); }

/* validates on nb batches and prints the line; an exit code */
static int train_validate(trainer *T, int nb, int final)
{
    double te = now_s();
    windows w = T->w;
    ebt_status st;
    w.nb = nb;
    if ((st = evaluate(T->m, T->ws, &w, &T->th, &T->ev, NULL)) != EBT_OK) return fail("validation", st, T->m, T->ws);
    T->eval_per_batch = (now_s() - te) / nb;
    T->last_eval = T->step;
    if (T->tty) fputs("\r\033[K", stderr);
    printf(exp(T->ev.ce) < 1e6 ? "step %ld  val %.4f nats/byte  ppl %.2f" : "step %ld  val %.4f nats/byte  ppl %.3g",
           T->step, T->ev.ce, exp(T->ev.ce));
    if (T->is_ebt) printf("  energy %.4f  (think %d steps)", T->ev.energy, T->th.steps);
    printf("  [%s, %d positions]\n", final ? "final" : "interim", nb * w.B * w.S);
    fflush(stdout);
    return 0;
}

/* 1 if an interim validation is due: every --eval-every steps, or (the
 * default) at a quarter, half and three quarters of the budget */
static int train_interim_due(const trainer *T)
{
    const train_args *a = &T->a;
    if (a->eval_every == 0 || T->step == T->last_eval) return 0;
    if (a->eval_every > 0) return T->step % a->eval_every == 0;
    if (T->interim_done >= 3) return 0;
    double frac = a->steps > 0 ? (double)(T->step - T->step0) / (double)(a->steps - T->step0) : 0;
    if (T->deadline < HUGE_VAL) {
        double tf = (now_s() - T->t0) / (train_end_time(T) - T->t0);
        frac = tf > frac ? tf : frac;
    }
    return frac >= 0.25 * (T->interim_done + 1);
}

/* sequences [*first, *first + *n) of n_all: part j of parts (sizes differ by at most one) */
static void split_range(int n_all, int j, int parts, int *first, int *n)
{
    *first = (int)((long long)n_all * j / parts);
    *n = (int)((long long)n_all * (j + 1) / parts) - *first;
}

/* This rank's share of the batch in --accum micro-batches, gradients and
 * sums from zero. Sequence b of the batch is b on every rank (the whole
 * batch is drawn everywhere), so its randomness does not depend on the
 * split; each micro-batch weighs its share of the batch. An ebt_status. */
static ebt_status train_accumulate(trainer *T)
{
    const train_args *a = &T->a;
    int first, n;
    ebt_status st = EBT_OK;
    split_range(a->B, T->comm->rank, T->comm->size, &first, &n);
    ebt_zero_grad(T->m);
    for (int j = 0; j < a->accum && st == EBT_OK; j++) {
        int f, k;
        split_range(n, j, a->accum, &f, &k);
        f += first;
        if (k > 0)
            st = ebt_train_accumulate(T->m, &a->to, T->tok + (size_t)f * a->S, T->tgt + (size_t)f * a->S, k, a->S,
                                      f, (double)k / a->B, NULL, NULL);
    }
    return st;
}

/* a 48-bit hash of the parameters' bits (exact in a double) */
static double param_hash(ebt_model *m)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int t = 0; t < ebt_n_tensors(m); t++) {
        size_t n;
        const unsigned char *b = (const unsigned char *)ebt_param(m, ebt_tensor_name(m, t), &n);
        for (size_t i = 0; i < n * sizeof(ebt_real); i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    }
    return (double)(h >> 16);
}

/* rank 0's time between two sums beyond its step: a validation of 2
 * batches and a save, doubled (the others wait that much longer) */
static double train_busy(const trainer *T)
{
    double per_batch = T->eval_per_batch > 0 ? T->eval_per_batch : train_per_step(T);
    return 2 * (2 * per_batch + T->save_time);
}

/* this rank's control values for the next sum (see CTL_*) */
static void train_ctl(trainer *T, int nonfinite, int stop)
{
    const lm_comm *c = T->comm;
    memset(T->ctl, 0, sizeof(double) * (CTL_HASH + (size_t)c->size));
    if (c->rank == 0) {
        T->ctl[CTL_PROGRESS] = T->a.to.progress;
        T->ctl[CTL_STOP] = stop;
        T->ctl[CTL_BUSY] = train_busy(T);
    }
    T->ctl[CTL_NONFINITE] = nonfinite;
    if (T->a.check_sync && c->size > 1) T->ctl[CTL_HASH + c->rank] = param_hash(T->m);
}

/* The step's sums over the ranks: the library's buffer (gradients, then
 * the statistic sums) and the control values; n = 0 sums only these */
static void train_reduce(trainer *T, size_t n)
{
    char ctx[160 + 4096];
    ebt_real *buf = ebt_train_buffer(T->m, NULL);
    double t = now_s();
    if (T->comm->size == 1) return;
    snprintf(ctx, sizeof ctx, "step %ld (last checkpoint: %s at step %ld)", T->step + 1, T->a.out, T->last_save);
    lm_comm_sum(T->comm, buf, n, T->ctl, CTL_HASH + T->comm->size, T->busy, ctx);
    T->steady_comm += T->step > T->step0 ? now_s() - t : 0;
}

/* --check-sync: every rank's parameter hash (before this step) is rank 0's; an exit code */
static int train_check_sync(const trainer *T)
{
    const double *h = T->ctl + CTL_HASH;
    for (int r = 1; T->a.check_sync && r < T->comm->size; r++)
        if (h[r] != h[0]) {
            if (T->comm->rank == 0)
                fprintf(stderr, "ebt_lm: before step %ld the parameters of rank %d differ from rank 0's (hash %012llx, not %012llx)\n",
                        T->step + 1, r, (unsigned long long)h[r], (unsigned long long)h[0]);
            return 1;
        }
    return 0;
}

/* The first sum: every rank must start from the same model (parameter
 * hash and step count compared); an exit code, the same on every rank */
static int train_agree(trainer *T)
{
    const int N = T->comm->size;
    double *h = T->ctl, *s = T->ctl + N;
    if (N == 1) return 0;
    memset(T->ctl, 0, sizeof(double) * 2 * (size_t)N);
    h[T->comm->rank] = param_hash(T->m);
    s[T->comm->rank] = (double)ebt_train_steps_done(T->m);
    lm_comm_sum(T->comm, NULL, 0, T->ctl, 2 * N, 0, "start");
    for (int r = 1; r < N; r++)
        if (h[r] != h[0] || s[r] != s[0]) {
            if (T->comm->rank == 0)
                fprintf(stderr, "ebt_lm: rank %d starts from another model than rank 0 (step %.0f, not %.0f; parameter hash "
                        "%012llx, not %012llx): every rank needs the same options and, with --resume, the same %s\n",
                        r, s[r], s[0], (unsigned long long)h[r], (unsigned long long)h[0], T->a.out);
            return 2;
        }
    return 0;
}

/* rank 0 ends the run on its time budget, which the others cannot know:
 * one last sum with the stop signal, received instead of their next step's */
static int train_farewell(trainer *T)
{
    size_t n;
    ebt_train_buffer(T->m, &n);
    train_ctl(T, 0, 1);
    train_reduce(T, n);
    return train_check_sync(T);
}

/* --check-sync at the end of a run every rank knows has ended (--steps) */
static int train_final_sync(trainer *T)
{
    if (!T->a.check_sync || T->comm->size == 1) return 0;
    train_ctl(T, 0, 0);
    train_reduce(T, 0);
    return train_check_sync(T);
}

/* One optimiser step on the next batch, on every rank: each accumulates
 * its share, the sums make every rank's buffer the same bits, so every
 * rank applies the same update, or refuses the same non-finite step and
 * retries on the same other batch. An exit code; T->stopped is set (and
 * nothing done) when the sum brings rank 0's stop signal. */
static int train_step(trainer *T)
{
    train_args *a = &T->a;
    size_t n;
    ebt_real *buf = ebt_train_buffer(T->m, &n);
    for (int retry = 0;; retry++) {
        double t1 = now_s();
        ebt_status st;
        fill_batch(T->c.buf, T->c.n_train, a->B, a->S, batch_key(a->to.seed, (uint64_t)T->step, (uint64_t)retry), T->tok, T->tgt);
        if (a->steps <= 0 && T->deadline < HUGE_VAL) {   /* the cosine follows the elapsed time (rank 0's) */
            double p = (t1 - T->t0) / (train_end_time(T) - T->t0);
            a->to.progress = p < 0 ? 0 : p > 1 ? 1 : p;
        }
        if ((st = train_accumulate(T)) != EBT_OK && st != EBT_ERR_NONFINITE) return fail("ebt_train_accumulate", st, T->m, NULL);
        if (a->fault_step == T->step + 1 && retry == 0 && a->fault_rank == T->comm->rank) buf[0] = NAN;
        train_ctl(T, st == EBT_ERR_NONFINITE, 0);
        train_reduce(T, n);
        if (T->ctl[CTL_STOP] > 0) { T->stopped = 1; return train_check_sync(T); }
        if (train_check_sync(T)) return 1;
        a->to.progress = T->ctl[CTL_PROGRESS];
        T->busy = T->ctl[CTL_BUSY];
        st = T->ctl[CTL_NONFINITE] > 0 ? EBT_ERR_NONFINITE : ebt_train_apply(T->m, &a->to, &T->ts);
        T->train_time += now_s() - t1;
        if (T->step > T->step0) { T->steady_time += now_s() - t1; T->steady_n += retry == 0; }
        if (st == EBT_OK) break;
        ebt_zero_grad(T->m);
        if (st != EBT_ERR_NONFINITE || retry == 9) return fail("ebt_train_apply", st, T->m, NULL);
        if (T->comm->rank == 0)
            fprintf(stderr, "%sebt_lm: step %ld was non-finite (nothing changed), trying another batch\n",
                    T->tty ? "\r\033[K" : "", T->step + 1);
    }
    T->step = ebt_train_steps_done(T->m);
    return 0;
}

/* the progress line (stderr; redrawn in place on a terminal, every 10 s otherwise) */
static void train_progress(trainer *T, double *last_print)
{
    const train_args *a = &T->a;
    double t = now_s(), per_step = train_per_step(T), left = T->deadline - t, frac = (t - T->t0) / (T->deadline - T->t0);
    if (t - *last_print < (T->tty ? 0.25 : 10.0)) return;
    if (a->steps > 0) {
        double l2 = (double)(a->steps - T->step) * per_step, f2 = (double)(T->step - T->step0) / (double)(a->steps - T->step0);
        left = l2 < left ? l2 : left;
        frac = f2 > frac || !(T->deadline < HUGE_VAL) ? f2 : frac;
    }
    char el[24], lf[24], bar[21], ce[64] = "";
    fmt_time(t - T->t0, el, sizeof el);
    fmt_time(left, lf, sizeof lf);
    for (int j = 0; j < 20; j++) bar[j] = j < (int)(frac * 20 + 0.5) ? '#' : '.';
    bar[20] = 0;
    if (T->is_ebt) snprintf(ce, sizeof ce, "  ce %.3f->%.3f  alpha %.3g", T->ts.ce_first, T->ts.ce_last, T->ts.alpha);
    fprintf(stderr, "%sstep %ld  loss %.4f%s  lr %.2g  %.0f tok/s  %s  left %s [%s]%s", T->tty ? "\r" : "",
            T->step, T->ts.loss, ce, T->ts.lr, (double)a->B * a->S / per_step, el, lf, bar, T->tty ? "\033[K" : "\n");
    fflush(stderr);
    *last_print = t;
}

static void train_close(trainer *T)
{
    ebt_workspace_free(T->ws);
    ebt_free(T->m);
    free(T->tok); free(T->tgt); free(T->c.buf); free(T->ctl);
}

/* rank 0 writes the checkpoint (atomically); the others keep count */
static int train_save(trainer *T)
{
    char err[256] = "";
    double t = now_s();
    ebt_status st = T->comm->rank == 0 ? ebt_save_ex(T->m, T->a.out, err, sizeof err) : EBT_OK;
    if (st != EBT_OK) {
        fprintf(stderr, "%sebt_lm: cannot save %s: %s: %s\n", T->tty ? "\r\033[K" : "", T->a.out, ebt_status_str(st), err);
        return 1;
    }
    T->save_time = now_s() - t;
    T->last_save = T->step;
    return 0;
}

/* Steps until the budget is spent, with interim validations and saves
 * (rank 0), then the final save and validation; an exit code. Every rank
 * ends at --steps; only rank 0 sees the time budget end, and tells the
 * others with its last sum (train_farewell). */
static int train_loop(trainer *T)
{
    const train_args *a = &T->a;
    const int rank = T->comm->rank;
    double last_print = -1e9;
    int rc = 0;
    for (;;) {
        double t = now_s();
        int steps_end = a->steps > 0 && T->step >= a->steps;
        int at_end = steps_end || T->stopped ||
                     (rank == 0 && T->deadline < HUGE_VAL && t + train_per_step(T) > train_end_time(T));
        if (rank == 0 && !at_end && train_interim_due(T)) {
            long nb = a->eval_batches < 2 ? a->eval_batches : 2;
            if ((rc = train_validate(T, (int)nb, 0)) != 0) break;
            T->interim_done++;
        }
        if (T->step > T->last_save && (at_end || T->step % a->save_every == 0) && (rc = train_save(T)) != 0) break;
        if (at_end) {
            rc = steps_end ? train_final_sync(T) : !T->stopped && T->comm->size > 1 ? train_farewell(T) : 0;
            if (rc == 0 && rank == 0) rc = train_validate(T, (int)a->eval_batches, 1);
            break;
        }
        if ((rc = train_step(T)) != 0) break;
        if (rank == 0 && !T->stopped) train_progress(T, &last_print);
    }
    return rc;
}

static int cmd_train(int argc, char **argv, lm_comm *comm)
{
    trainer T;
    memset(&T, 0, sizeof T);
    T.comm = comm;
    int rc = train_parse(argc, argv, &T.a);
    if (rc >= 0) return rc;
    comm->timeout = T.a.mpi_timeout;
    if ((rc = train_open(&T)) != 0 || (rc = train_agree(&T)) != 0) {
        train_close(&T);
        lm_comm_abort(comm, rc);   /* ranks that opened fine would wait for this one */
        return rc;
    }
    train_args *a = &T.a;
    T.tty = isatty(fileno(stderr));
    T.step0 = T.step = T.last_save = ebt_train_steps_done(T.m);
    T.last_eval = -1;
    T.t0 = now_s();
    T.deadline = a->minutes > 0 ? T.t0 + 60 * a->minutes : HUGE_VAL;
    if (a->steps > 0) a->to.total_steps = a->steps;
    rc = train_loop(&T);
    if (rc == 0 && comm->rank == 0) {
        if (T.tty) fputs("\r\033[K", stderr);
        if (T.steady_n > 0)
            fprintf(stderr, "ebt_lm: %d process%s x %d micro-batch%s: %.1f ms per step (%.2f ms of it summing across "
                    "processes; steps after the first)\n", comm->size, comm->size > 1 ? "es" : "", a->accum,
                    a->accum > 1 ? "es" : "", 1e3 * T.steady_time / T.steady_n, 1e3 * T.steady_comm / T.steady_n);
        printf("done: arch %s  steps %ld  tokens %.3gM  wall %.1f s  val %.4f nats/byte  ppl %.3g  -> %s\n",
               T.is_ebt ? "ebt" : "transformer++", T.step, (double)T.step * a->B * a->S / 1e6, now_s() - T.t0,
               T.ev.ce, exp(T.ev.ce), a->out);
    }
    train_close(&T);
    if (rc != 0) lm_comm_abort(comm, rc);   /* a failure on one rank stops them all */
    return rc;
}

/* ---- sample --------------------------------------------------------------- */

static const char SAMPLE_USAGE[] =
    "usage: ebt_lm sample [options]     (--opt value or --opt=value)\n"
    "  --ckpt FILE          checkpoint (default ebt.safetensors)\n"
    "  --prompt TEXT        (default \"ROMEO:\")\n"
    "  --n N                bytes to generate (default 300)\n"
    "  --temperature T      (default 0.6; 0 = argmax)\n"
    "  --top-p P            nucleus sampling (default 0.9; 1 = off)\n"
    "  --seed S             (default 1)\n"
    "  --trace              one line per generated byte: its final energy, the energy at every\n"
    "                       thinking step, steps taken, winning start (coloured on a terminal)\n"
    "  --trace-png FILE     heat map of the energy of every generated byte at every thinking step\n"
    "thinking (EBT only):\n"
    "  --steps K            thinking steps per byte (default: the checkpoint's think.steps, else 4)\n"
    "  --restarts R         starts per byte, the lowest final energy wins (default 1)\n"
    "  --step-size A        thinking step size (default 0: the model's alpha)\n"
    "  --noise SIGMA        Langevin noise while thinking (default: the checkpoint's think.noise, else 0)\n"
    "  --init-scale X       spread of the random starts, y0 ~ N(0, X^2) (default 1)\n"
    "  --clamp C            limit each entry of a thinking step to [-C, C] (default 0: off)\n"
    "  --threshold E  --tol T  --rel-drop R  --grad-tol G  --keep-best\n"
    "                       stop thinking about a byte early (energy <= E, change <= T, relative drop\n"
    "                       <= R, gradient RMS <= G), answer with the lowest energy seen (default off)\n"
    "The text is streamed as it is generated (UTF-8 passed through); bytes/s and the mean\n"
    "final energy follow on stderr.\n";

typedef struct { const char *ckpt, *prompt, *png; int n, trace, set; ebt_gen_opts g; const char *think_opt; } sample_args;

static const char *const THINK_OPTS[] = { "--steps", "--restarts", "--step-size", "--noise", "--init-scale", "--clamp",
    "--threshold", "--tol", "--rel-drop", "--grad-tol", "--keep-best", NULL };

/* Returns -1 when *a is ready, else the exit code (0 after --help, 2 for bad usage). */
static int sample_parse(int argc, char **argv, sample_args *a)
{
    const char *ckpt = "ebt.safetensors", *prompt = "ROMEO:", *png = NULL;
    int n = 300, trace = 0, keep = 0;
    ebt_gen_opts g = ebt_gen_default();
    g.think.steps = 4; g.think.restarts = 1; g.temperature = 0.6; g.top_p = 0.9; g.seed = 1;
    const opt_spec spec[] = {
        {"--ckpt", OPT_STR, &ckpt, 0, 0}, {"--prompt", OPT_TEXT, &prompt, 0, 0}, {"--n", OPT_INT, &n, 1, 1 << 24},
        {"--steps", OPT_INT, &g.think.steps, 0, 1000}, {"--restarts", OPT_INT, &g.think.restarts, 1, 1000},
        {"--step-size", OPT_DBL, &g.think.step_size, 0, 1e9}, {"--temperature", OPT_DBL, &g.temperature, 0, 100},
        {"--top-p", OPT_DBL, &g.top_p, 0, 1}, {"--seed", OPT_U64, &g.seed, 0, 0},
        {"--noise", OPT_DBL, &g.think.noise, 0, 1e6}, {"--init-scale", OPT_DBL, &g.think.init_scale, 0, 1e6},
        {"--trace", OPT_FLAG, &trace, 0, 0}, {"--trace-png", OPT_STR, &png, 0, 0},
        {"--clamp", OPT_DBL, &g.think.clamp, 0, 1e9}, {"--threshold", OPT_DBL, &g.think.energy_threshold, -1e30, 1e30},
        {"--tol", OPT_DBL, &g.think.tol, 0, 1e30}, {"--rel-drop", OPT_DBL, &g.think.rel_drop, -1e30, 1e30},
        {"--grad-tol", OPT_DBL, &g.think.grad_tol, 0, 1e30}, {"--keep-best", OPT_FLAG, &keep, 0, 0},
    };
    unsigned char seen[N_OPTS(spec)];
    int rc = parse_opts(argc, argv, spec, N_OPTS(spec), SAMPLE_USAGE, seen);
    if (rc >= 0) return rc;
    g.think.seed = g.seed ^ 0x7417c0deULL;
    g.think.keep_best = keep;
    *a = (sample_args){ .ckpt = ckpt, .prompt = prompt, .png = png, .n = n, .trace = trace, .g = g,
                        .set = seen[opt_index(spec, N_OPTS(spec), "--steps")] | seen[opt_index(spec, N_OPTS(spec), "--noise")] << 1,
                        .think_opt = opt_first_seen(spec, N_OPTS(spec), seen, THINK_OPTS) };
    return -1;
}

/* Bytes to a terminal or file: valid UTF-8 passes through, tab/newline
 * too; other control bytes and invalid sequences print as U+FFFD. A
 * multi-byte character is held until it is complete. */
typedef struct { unsigned char buf[4]; int n; FILE *f; } utf8_out;

#define UTF8_REPL "\xEF\xBF\xBD"
/* bytes a character starting with lead has (0: lead cannot start one) */
static int utf8_want(int lead)
{
    return lead < 0x80 ? 1 : lead >= 0xC2 && lead <= 0xDF ? 2 : lead >= 0xE0 && lead <= 0xEF ? 3 :
           lead >= 0xF0 && lead <= 0xF4 ? 4 : 0;
}
static void utf8_put(utf8_out *u, int byte)
{
    unsigned char b = (unsigned char)byte;
    if (u->n > 0 && (b & 0xC0) != 0x80) { fputs(UTF8_REPL, u->f); u->n = 0; }  /* cut short */
    u->buf[u->n++] = b;
    int want = utf8_want(u->buf[0]);
    if (u->n < want) return;                                                    /* wait for the rest */
    if (want && utf8_len(u->buf, (size_t)u->n) == want && (want > 1 || b >= 32 || b == '\n' || b == '\t') && b != 127)
        fwrite(u->buf, 1, (size_t)u->n, u->f);
    else
        fputs(UTF8_REPL, u->f);
    u->n = 0;
}
static void utf8_flush(utf8_out *u) { if (u->n) fputs(UTF8_REPL, u->f); u->n = 0; }

/* what sample keeps of each generated byte (for --trace and --trace-png) */
typedef struct {
    utf8_out out;
    int trace, tty, K, n;
    double t0, first;        /* start, time of the first byte */
    int32_t *tok;            /* [n] */
    ebt_real *energy;        /* [n * (K+1)] */
    int *steps, *winner;     /* [n] */
    ebt_real *pchosen;       /* [n] probability of the chosen byte */
} sample_log;

/* floor(f * n) clamped to [0, n - 1]; a NaN (a diverged energy) gives 0
 * (clamped before the conversion: a NaN or huge double to int is undefined) */
static int bucket(double f, int n)
{
    double x = f * n;
    return x >= 1 ? (x < n - 1 ? (int)x : n - 1) : 0;
}

/* 256-colour terminal background for an energy relative to [lo, hi] (green low, red high) */
static int energy_colour(double e, double lo, double hi)
{
    static const int ramp[6] = { 22, 28, 100, 136, 130, 124 };
    return ramp[bucket(hi > lo ? (e - lo) / (hi - lo) : 0.5, 6)];
}

static void print_byte_escaped(FILE *f, int b)
{
    if (b >= 32 && b < 127 && b != '\'' && b != '\\') fprintf(f, "'%c' ", b);
    else if (b == '\n') fputs("'\\n'", f);
    else fprintf(f, "%02x  ", b);
}

/* ebt_gen_opts.on_token: stream the byte (or a trace line) and keep its numbers */
static int sample_on_token(void *user, const ebt_gen_token *t)
{
    sample_log *L = (sample_log *)user;
    int i = t->index, K = L->K;
    L->tok[i] = t->token;
    L->pchosen[i] = t->probs[t->token];
    L->steps[i] = t->steps_taken;
    L->winner[i] = t->winner;
    for (int k = 0; k <= K; k++) L->energy[(size_t)i * (K + 1) + k] = t->energies ? t->energies[k] : (ebt_real)NAN;
    if (i == 0) L->first = now_s();
    if (!L->trace) {
        utf8_put(&L->out, t->token);
        fflush(L->out.f);
        return 0;
    }
    printf("%5d  ", i);
    print_byte_escaped(stdout, t->token);
    printf("  p %.3f", (double)L->pchosen[i]);
    if (t->energies) {
        printf("  E %+9.4f  steps %d  start %d  E_k:", (double)t->energy, t->steps_taken, t->winner);
        double lo = t->energies[0], hi = t->energies[0];   /* colours: this byte's own descent */
        for (int k = 0; k <= K; k++) { lo = fmin(lo, t->energies[k]); hi = fmax(hi, t->energies[k]); }
        for (int k = 0; k <= K; k++) {
            if (L->tty) printf(" \033[48;5;%dm%+8.3f\033[0m", energy_colour(t->energies[k], lo, hi), (double)t->energies[k]);
            else printf(" %+8.3f", (double)t->energies[k]);
        }
    }
    putchar('\n');
    fflush(stdout);
    return 0;
}

/* viridis-like colour for f in [0, 1] */
static unsigned long heat_colour(double f)
{
    static const unsigned char a[5][3] = { {68,1,84}, {59,82,139}, {33,145,140}, {94,201,98}, {253,231,37} };
    f = f > 0 ? (f < 1 ? f : 1) : 0;        /* NaN -> 0 */
    int i = bucket(f, 4);
    double u = f * 4 - i;
    unsigned long c = 0;
    for (int ch = 0; ch < 3; ch++) c = c << 8 | (unsigned long)(a[i][ch] + u * (a[i + 1][ch] - a[i][ch]) + 0.5);
    return c;
}

/* --trace-png: rows of up to 96 generated bytes; per row, one strip per
 * thinking step k = 0..K (cells coloured by E_k), the bytes below, a
 * colour bar with the energy range at the bottom. 0 on success. */
static int trace_png(const char *path, const sample_log *L, const char *title)
{
    enum { PER = 96, CW = 8, CH = 10, X0 = 60 };
    int K = L->K, rows = (L->n + PER - 1) / PER, rowh = (K + 1) * CH + 24, W = X0 + PER * CW + 20;
    int H = 40 + rows * rowh + 50;
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    char buf[64];
    png_img im;
    for (size_t i = 0; i < (size_t)L->n * (K + 1); i++) { lo = fmin(lo, L->energy[i]); hi = fmax(hi, L->energy[i]); }
    if (!(hi > lo)) hi = lo + 1;
    if (png_init(&im, W, H)) return -1;
    png_text(&im, 10, 10, title, 1, 0x000000);
    png_text(&im, 10, 22, "ENERGY OF EACH GENERATED BYTE (COLUMNS) AT EACH THINKING STEP (ROWS K=0 TOP)", 1, 0x000000);
    for (int r = 0; r < rows; r++) {
        int y0 = 40 + r * rowh;
        for (int k = 0; k <= K; k++) {
            snprintf(buf, sizeof buf, "K=%d", k);
            if (k == 0 || k == K || K <= 8) png_text(&im, 10, y0 + k * CH + 1, buf, 1, 0x000000);
            for (int j = 0; j < PER && r * PER + j < L->n; j++) {
                size_t i = (size_t)(r * PER + j);
                double e = L->energy[i * (K + 1) + k];
                png_rect(&im, X0 + j * CW, y0 + k * CH, X0 + j * CW + CW - 2, y0 + k * CH + CH - 2, heat_colour((e - lo) / (hi - lo)));
            }
        }
        for (int j = 0; j < PER && r * PER + j < L->n; j++) {
            int b = L->tok[r * PER + j];
            char ch[2] = { (char)(b > 32 && b < 127 ? b : b == ' ' ? '_' : '.'), 0 };
            png_text(&im, X0 + j * CW + 1, y0 + (K + 1) * CH + 4, ch, 1, b == ' ' ? 0xaaaaaa : 0x000000);
        }
    }
    int yb = 40 + rows * rowh + 10;
    for (int x = 0; x < 300; x++) png_rect(&im, X0 + x, yb, X0 + x, yb + 12, heat_colour(x / 299.0));
    snprintf(buf, sizeof buf, "%.3f", lo);
    png_text(&im, X0 - png_text_w(buf, 1) - 6, yb + 3, buf, 1, 0x000000);
    snprintf(buf, sizeof buf, "%.3f  ENERGY (LOW = CONFIDENT)", hi);
    png_text(&im, X0 + 306, yb + 3, buf, 1, 0x000000);
    int rc = png_save(&im, path);
    png_free(&im);
    return rc;
}

/* after generation: the text coloured by final energy (trace on a terminal) and the summary on stderr */
static void sample_summary(const sample_log *L, int is_ebt, double secs, const ebt_gen_opts *g)
{
    double lo = HUGE_VAL, hi = -HUGE_VAL, s = 0;
    int k = 0, K = L->K;
    for (int i = 0; i < L->n; i++) {
        double e = L->energy[(size_t)i * (K + 1) + K];
        if (isfinite(e)) { lo = fmin(lo, e); hi = fmax(hi, e); s += e; k++; }
    }
    if (L->trace) {
        utf8_out u = { {0}, 0, stdout };
        printf("\n");
        for (int i = 0; i < L->n; i++) {
            double e = L->energy[(size_t)i * (K + 1) + K];
            if (L->tty && is_ebt) printf("\033[48;5;%dm", energy_colour(e, lo, hi));
            utf8_put(&u, L->tok[i]);
            if (L->tty && is_ebt && L->tok[i] != '\n') printf("\033[0m");
        }
        utf8_flush(&u);
        printf(L->tty ? "\033[0m\n" : "\n");
        if (L->tty && is_ebt) printf("(background: final energy, green %.3f (confident) .. red %.3f)\n", lo, hi);
    }
    fprintf(stderr, "ebt_lm: %d bytes in %.2f s (%.1f bytes/s", L->n, secs, secs > 0 ? L->n / secs : 0.0);
    if (L->n > 1 && L->first > L->t0) fprintf(stderr, "; first byte after %.3f s", L->first - L->t0);
    fprintf(stderr, ")");
    if (is_ebt) fprintf(stderr, ", mean final energy %.4f (%d think steps, %d restarts)", k ? s / k : NAN, g->think.steps, g->think.restarts);
    fputc('\n', stderr);
}

static int cmd_sample(int argc, char **argv)
{
    sample_args a;
    int rc = sample_parse(argc, argv, &a);
    if (rc >= 0) return rc;
    ebt_model *m = NULL;
    ebt_workspace *ws = NULL;
    if (load_model(a.ckpt, &m)) return 1;
    const ebt_config *cfg = ebt_model_config(m);
    const int is_ebt = cfg->arch == EBT_ARCH_EBT, n = a.n;
    int np = (int)strlen(a.prompt), keep, K;
    if (!is_ebt && a.think_opt) fprintf(stderr, "ebt_lm: warning: %s is ignored: %s is a transformer++ (it does not think)\n", a.think_opt, a.ckpt);
    if (is_ebt) {   /* the checkpoint's way of thinking unless --steps / --noise say otherwise */
        int k = a.g.think.steps;
        double z = a.g.think.noise;
        think_defaults(m, &k, &z);
        if (!(a.set & 1)) a.g.think.steps = k;
        if (!(a.set & 2)) a.g.think.noise = z;
    }
    K = is_ebt ? a.g.think.steps : 0;
    if (!is_ebt && a.png) { fprintf(stderr, "ebt_lm: --trace-png needs an EBT checkpoint (%s is a transformer++)\n", a.ckpt); ebt_free(m); return 2; }
    sample_log L = { { {0}, 0, stdout }, a.trace, isatty(fileno(stdout)), K, n, 0, 0, NULL, NULL, NULL, NULL, NULL };
    int32_t *pt = malloc(((size_t)np + 1) * sizeof *pt), *gen = malloc((size_t)n * sizeof *gen);
    L.tok = malloc((size_t)n * sizeof *L.tok);
    L.energy = malloc((size_t)n * (K + 1) * sizeof *L.energy);
    L.steps = malloc((size_t)n * sizeof *L.steps);
    L.winner = malloc((size_t)n * sizeof *L.winner);
    L.pchosen = malloc((size_t)n * sizeof *L.pchosen);
    ebt_status st;
    rc = 1;
    if (!pt || !gen || !L.tok || !L.energy || !L.steps || !L.winner || !L.pchosen) { fprintf(stderr, "ebt_lm: out of memory\n"); goto done; }
    if (np == 0) pt[np++] = '\n';                 /* generation needs a prompt of >= 1 byte */
    else for (int i = 0; i < np; i++) pt[i] = (unsigned char)a.prompt[i];
    /* a prompt longer than the context is cut to its last half-context */
    keep = np < cfg->max_seq_len ? np : cfg->max_seq_len / 2 > 0 ? cfg->max_seq_len / 2 : 1;
    if ((st = ebt_workspace_create(m, 1, cfg->max_seq_len, &ws)) != EBT_OK) { rc = fail("ebt_workspace_create", st, m, NULL); goto done; }
    if (!a.trace) { fputs(a.prompt, stdout); fflush(stdout); }
    else printf("prompt: %s\n  pos  byte     p(byte)%s\n", a.prompt, is_ebt ? "  final E   steps  start  energy at step k = 0..K" : "");
    a.g.on_token = sample_on_token;
    a.g.user = &L;
    L.t0 = now_s();
    if ((st = ebt_generate(ws, m, pt + np - keep, keep, n, &a.g, gen, NULL, NULL)) != EBT_OK) { rc = fail("ebt_generate", st, m, ws); goto done; }
    double secs = now_s() - L.t0;
    utf8_flush(&L.out);
    if (!a.trace) putchar('\n');
    fflush(stdout);
    sample_summary(&L, is_ebt, secs, &a.g);
    if (a.png) {
        char title[128];
        snprintf(title, sizeof title, "EBT D=%d L=%d  K=%d  RESTARTS=%d", cfg->d_model, cfg->n_layers, K, a.g.think.restarts);
        if (trace_png(a.png, &L, title) != 0) { fprintf(stderr, "ebt_lm: cannot write %s: %s\n", a.png, strerror(errno)); goto done; }
        fprintf(stderr, "ebt_lm: wrote %s\n", a.png);
    }
    rc = 0;
done:
    ebt_workspace_free(ws);
    ebt_free(m);
    free(pt); free(gen); free(L.tok); free(L.energy); free(L.steps); free(L.winner); free(L.pchosen);
    return rc;
}

/* ---- eval: in examples/lm_eval.h ------------------------------------------ */

#define OOD_DEFAULT "/usr/share/common-licenses/GPL-3"
#include "lm_eval.h"

/* ---- export -------------------------------------------------------------- */

static const char EXPORT_USAGE[] =
    "usage: ebt_lm export [options]     (--opt value or --opt=value)\n"
    "  --ckpt FILE          checkpoint to read (default ebt.safetensors)\n"
    "  --out FILE           checkpoint to write (required; written atomically)\n"
    "  --weights-only       leave out the optimiser state and the replay buffer (default: keep them)\n";

static int cmd_export(int argc, char **argv)
{
    const char *ckpt = "ebt.safetensors", *out = NULL;
    int weights_only = 0;
    const opt_spec spec[] = { {"--ckpt", OPT_STR, &ckpt, 0, 0}, {"--out", OPT_STR, &out, 0, 0},
                              {"--weights-only", OPT_FLAG, &weights_only, 0, 0} };
    int rc = parse_opts(argc, argv, spec, N_OPTS(spec), EXPORT_USAGE, NULL);
    if (rc >= 0) return rc;
    if (!out) { fprintf(stderr, "ebt_lm: export needs --out FILE\n\n%s", EXPORT_USAGE); return 2; }
    ebt_model *m = NULL;
    char err[256] = "";
    struct stat sb;
    if (load_model(ckpt, &m)) return 1;
    if (weights_only) ebt_train_reset(m);
    ebt_status st = ebt_save_ex(m, out, err, sizeof err);
    ebt_free(m);
    if (st != EBT_OK) { fprintf(stderr, "ebt_lm: cannot save %s: %s: %s\n", out, ebt_status_str(st), err); return 1; }
    if (stat(out, &sb) == 0) fprintf(stderr, "ebt_lm: wrote %s (%.2f MB)\n", out, sb.st_size / 1e6);
    return 0;
}

/* ---- main ----------------------------------------------------------------- */

#ifndef EBT_LM_NO_MAIN   /* tests/fuzz/fuzz_lm_*.c include this file without main */
static const char MAIN_USAGE[] =
    "usage: ebt_lm <command> [options]   (ebt_lm help <command>, or ebt_lm <command> --help)\n"
    "  train    train an EBT (or --arch transformer) byte-level language model\n"
    "  sample   generate text from a checkpoint, streamed; --trace shows the model think\n"
    "  eval     validation CE against thinking steps and restarts, optional PNG plot\n"
    "  export   re-write a checkpoint, e.g. --weights-only for a small file to share\n"
    "  help     this text, or the options of a command\n"
    "  --version\n"
    "threads: ebt's kernels use OMP_NUM_THREADS threads (default: every core) and\n"
    "OpenBLAS runs single-threaded, unless OPENBLAS_NUM_THREADS is set.\n";

static void print_version(void)
{
#ifdef EBT_VERSION
    printf("ebt_lm (ebt %s, library %s)\n", EBT_VERSION, ebt_version());
#else
    printf("ebt_lm\n");
#endif
}

static int lm_main(int argc, char **argv, lm_comm *comm)
{
    /* run: one process; run_comm: train, on every process of comm */
    static const struct { const char *name; int (*run)(int, char **); int (*run_comm)(int, char **, lm_comm *);
                          const char *usage; } cmds[] = {
        {"train", NULL, cmd_train, TRAIN_USAGE}, {"sample", cmd_sample, NULL, SAMPLE_USAGE},
        {"eval", cmd_eval, NULL, EVAL_USAGE}, {"export", cmd_export, NULL, EXPORT_USAGE},
    };
    const int nc = (int)(sizeof cmds / sizeof cmds[0]);
#ifdef EBT_LM_OPENBLAS
    /* ebt splits products and kernels over its own threads; OpenBLAS
     * threading its products at the same time would compete for the cores */
    if (!getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
#endif
    if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) { print_version(); return 0; }
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
        for (int i = 0; argc >= 3 && i < nc; i++)
            if (!strcmp(argv[2], cmds[i].name)) { fputs(cmds[i].usage, stdout); return 0; }
        if (argc >= 3) { fprintf(stderr, "ebt_lm: unknown command '%s'\n\n%s", argv[2], MAIN_USAGE); return 2; }
        fputs(MAIN_USAGE, stdout);
        return 0;
    }
    for (int i = 0; argc >= 2 && i < nc; i++) {
        if (strcmp(argv[1], cmds[i].name)) continue;
        if (cmds[i].run_comm) return cmds[i].run_comm(argc - 1, argv + 1, comm);
        if (comm->size == 1) return cmds[i].run(argc - 1, argv + 1);
        if (comm->rank == 0) fprintf(stderr, "ebt_lm: only train runs on several processes; run %s as one\n", argv[1]);
        return 2;
    }
    if (argc >= 2) fprintf(stderr, "ebt_lm: unknown command '%s'\n\n", argv[1]);
    fputs(MAIN_USAGE, stderr);
    return 2;
}

int main(int argc, char **argv)
{
    lm_comm comm;
    int rc = lm_comm_init(&comm, &argc, &argv);
    if (rc == 0) rc = lm_main(argc, argv, &comm);
    return lm_comm_finalize(&comm, rc);
}
#endif
