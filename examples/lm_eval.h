/* lm_eval.h - the `eval` command of examples/ebt_lm.c (included there once):
 * validation CE against thinking steps and restarts, the energy as an
 * uncertainty score (Spearman correlations and a calibration table and
 * plot), the same on an out-of-distribution text, and the compute/quality
 * curve of the stopping rules. */

static const char EVAL_USAGE[] =
    "usage: ebt_lm eval [options]       (--opt value or --opt=value)\n"
    "  --ckpt FILE          checkpoint (default ebt.safetensors)\n"
    "  --baseline FILE      a transformer++ checkpoint, evaluated on the same windows (default none)\n"
    "  --data FILE          corpus (default: the fortunes; validation = last 10%)\n"
    "  --ood FILE           an out-of-distribution text, evaluated whole with the same protocol\n"
    "                       (default none; e.g. " OOD_DEFAULT ")\n"
    "  --batches N          validation batches (default 16)\n"
    "  --batch B            windows per batch (default 16)\n"
    "  --eval-steps K       thinking steps of the restarts and uncertainty tables (default: the\n"
    "                       checkpoint's think.steps, else 4)\n"
    "  --plot FILE.png      CE against thinking steps and restarts (default none)\n"
    "  --calibration FILE.png  CE by final-energy decile, and the other uncertainty scores (default none)\n"
    "  --compute FILE.png   CE against row evaluations for every stopping rule (default none; the\n"
    "                       table is printed with --compute or --rules)\n"
    "  --rules              print the compute/quality table without a plot (default off)\n"
    "thinking (every table except the compute sweep):\n"
    "  --noise SIGMA (the checkpoint's think.noise, else 0)  --init-scale X (1)  --step-size A (0: the model's alpha)  --clamp C (0: off)\n"
    "  --threshold E  --tol T  --rel-drop R  --grad-tol G  --row-budget N  --keep-best\n"
    "                       (stopping rules; default all off: see ebt.h, ebt_think_opts)\n";

#define N_KS 5
#define N_RS 3

typedef struct {
    const char *ckpt, *base_path, *data, *ood, *plot_path, *cal_path, *compute_path;
    long nb;
    int B, eval_steps, rules;
    ebt_think_opts th;       /* the thinking options of the tables */
    const char *think_opt;   /* the first thinking option given, or NULL */
    int set;                 /* 1: --eval-steps given, 2: --noise given */
} eval_args;

/* Returns -1 when *a is ready, else the exit code (0 after --help, 2 for bad usage). */
static int eval_parse(int argc, char **argv, eval_args *a)
{
    eval_args e = { "ebt.safetensors", NULL, NULL, NULL, NULL, NULL, NULL, 16, 16, 4, 0, ebt_think_default(), NULL, 0 };
    double budget = 0;
    int keep = 0;
    e.th.seed = EVAL_SEED;
    const opt_spec spec[] = {
        {"--ckpt", OPT_STR, &e.ckpt, 0, 0}, {"--baseline", OPT_STR, &e.base_path, 0, 0}, {"--data", OPT_STR, &e.data, 0, 0},
        {"--ood", OPT_STR, &e.ood, 0, 0}, {"--plot", OPT_STR, &e.plot_path, 0, 0}, {"--calibration", OPT_STR, &e.cal_path, 0, 0},
        {"--compute", OPT_STR, &e.compute_path, 0, 0}, {"--rules", OPT_FLAG, &e.rules, 0, 0},
        {"--batches", OPT_LONG, &e.nb, 1, 1e6}, {"--batch", OPT_INT, &e.B, 1, 1 << 20},
        {"--eval-steps", OPT_INT, &e.eval_steps, 0, 1000}, {"--noise", OPT_DBL, &e.th.noise, 0, 1e6},
        {"--init-scale", OPT_DBL, &e.th.init_scale, 0, 1e6}, {"--step-size", OPT_DBL, &e.th.step_size, 0, 1e9},
        {"--clamp", OPT_DBL, &e.th.clamp, 0, 1e9}, {"--threshold", OPT_DBL, &e.th.energy_threshold, -1e30, 1e30},
        {"--tol", OPT_DBL, &e.th.tol, 0, 1e30}, {"--rel-drop", OPT_DBL, &e.th.rel_drop, -1e30, 1e30},
        {"--grad-tol", OPT_DBL, &e.th.grad_tol, 0, 1e30}, {"--row-budget", OPT_DBL, &budget, 0, 1e15},
        {"--keep-best", OPT_FLAG, &keep, 0, 0},
    };
    static const char *const think_opts[] = { "--eval-steps", "--noise", "--init-scale", "--step-size", "--clamp",
        "--threshold", "--tol", "--rel-drop", "--grad-tol", "--row-budget", "--keep-best", "--calibration", "--compute",
        "--rules", "--ood", NULL };
    unsigned char seen[N_OPTS(spec)];
    int rc = parse_opts(argc, argv, spec, N_OPTS(spec), EVAL_USAGE, seen);
    if (rc >= 0) return rc;
    e.th.row_budget = (long long)budget;
    e.th.keep_best = keep;
    e.think_opt = opt_first_seen(spec, N_OPTS(spec), seen, think_opts);
    e.set = seen[opt_index(spec, N_OPTS(spec), "--eval-steps")] | seen[opt_index(spec, N_OPTS(spec), "--noise")] << 1;
    *a = e;
    return -1;
}

/* ---- statistics ------------------------------------------------------ */

typedef struct { float v; int i; } rank_pair;
static int rank_cmp(const void *a, const void *b)
{
    float x = ((const rank_pair *)a)->v, y = ((const rank_pair *)b)->v;
    return (x > y) - (x < y);
}

/* ranks (1..n, ties averaged) of x[n]; NULL if out of memory */
static double *ranks(const float *x, size_t n)
{
    rank_pair *p = malloc(n * sizeof *p);
    double *r = malloc(n * sizeof *r);
    if (!p || !r) { free(p); free(r); return NULL; }
    for (size_t i = 0; i < n; i++) { p[i].v = x[i]; p[i].i = (int)i; }
    qsort(p, n, sizeof *p, rank_cmp);
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && p[j].v == p[i].v; j++) {}
        for (size_t k = i; k < j; k++) r[p[k].i] = 0.5 * (double)(i + j - 1) + 1;
    }
    free(p);
    return r;
}

/* Spearman rank correlation of x and y over the n positions where both are finite */
static double spearman(const float *x, const float *y, size_t n)
{
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    size_t m = 0;
    double *ra = NULL, *rb = NULL, mean, sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; a && b && i < n; i++)
        if (isfinite(x[i]) && isfinite(y[i])) { a[m] = x[i]; b[m++] = y[i]; }
    if (m > 1 && (ra = ranks(a, m)) && (rb = ranks(b, m))) {
        mean = 0.5 * (double)(m + 1);
        for (size_t i = 0; i < m; i++) {
            sab += (ra[i] - mean) * (rb[i] - mean);
            saa += (ra[i] - mean) * (ra[i] - mean);
            sbb += (rb[i] - mean) * (rb[i] - mean);
        }
    }
    free(a); free(b); free(ra); free(rb);
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : NAN;
}

/* per decile of score (1/10 of the positions each, lowest score first):
 * mean score, mean CE; returns 0, or -1 if out of memory */
static int deciles(const float *score, const float *ce, size_t n, double ms[10], double mce[10])
{
    rank_pair *p = malloc(n * sizeof *p);
    if (!p) return -1;
    for (size_t i = 0; i < n; i++) { p[i].v = score[i]; p[i].i = (int)i; }
    qsort(p, n, sizeof *p, rank_cmp);
    for (int d = 0; d < 10; d++) {
        size_t lo = n * d / 10, hi = n * (d + 1) / 10;
        ms[d] = mce[d] = 0;
        for (size_t k = lo; k < hi; k++) { ms[d] += p[k].v; mce[d] += ce[p[k].i]; }
        if (hi > lo) { ms[d] /= (double)(hi - lo); mce[d] /= (double)(hi - lo); }
    }
    free(p);
    return 0;
}

/* ---- tables ------------------------------------------------------------- */

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

/* CE at thinking steps ks and (K = eval_steps) restarts rs on windows w */
typedef struct { eval_out ek[N_KS], er[N_RS]; } think_table;
static const int KS[N_KS] = {1, 2, 3, 4, 8}, RS[N_RS] = {1, 2, 4};

static ebt_status think_table_run(ebt_model *m, ebt_workspace *ws, const windows *w, ebt_think_opts th, int eval_steps,
                                  think_table *t, const char *what)
{
    const int tty = isatty(fileno(stderr));
    ebt_status st = EBT_OK;
    for (int i = 0; i < N_KS + N_RS && st == EBT_OK; i++) {
        eval_out *e = i < N_KS ? &t->ek[i] : &t->er[i - N_KS];
        int same = -1;   /* already measured in the steps table? */
        th.steps = i < N_KS ? KS[i] : eval_steps;
        th.restarts = i < N_KS ? 1 : RS[i - N_KS];
        for (int j = 0; i >= N_KS && th.restarts == 1 && j < N_KS; j++)
            if (KS[j] == eval_steps) same = j;
        if (same >= 0) { *e = t->ek[same]; continue; }
        if (tty) fprintf(stderr, "\rebt_lm: %s: thinking %d steps, %d restarts ...\033[K", what, th.steps, th.restarts);
        st = evaluate(m, ws, w, &th, e, NULL);
    }
    if (tty) fputs("\r\033[K", stderr);
    return st;
}

static void think_table_print(const think_table *t, int eval_steps, const eval_out *base)
{
    char label[32];
    printf("| think steps   | val CE (nats/byte) |        ppl | mean final energy |\n");
    printf("|--------------:|-------------------:|-----------:|------------------:|\n");
    for (int i = 0; i < N_KS; i++) {
        snprintf(label, sizeof label, "%d", KS[i]);
        table_row(label, &t->ek[i], 0);
    }
    if (base) table_row("transformer++", base, 0);
    snprintf(label, sizeof label, "restarts K=%d", eval_steps);
    printf("\n| %13s | val CE (nats/byte) |        ppl | mean final energy | won by start != 0 |\n", label);
    printf("|--------------:|-------------------:|-----------:|------------------:|------------------:|\n");
    for (int i = 0; i < N_RS; i++) {
        snprintf(label, sizeof label, "%d", RS[i]);
        table_row(label, &t->er[i], 1);
    }
    if (base) table_row("transformer++", base, 1);
}

/* thinking gain: CE at 1 step minus the best CE over steps and restarts */
static double think_gain(const think_table *t, double *best)
{
    *best = t->ek[0].ce;
    for (int i = 0; i < N_KS; i++) *best = t->ek[i].ce < *best ? t->ek[i].ce : *best;
    for (int i = 0; i < N_RS; i++) *best = t->er[i].ce < *best ? t->er[i].ce : *best;
    return t->ek[0].ce - *best;
}

/* ---- plots ------------------------------------------------------------- */

/* the plot: CE against thinking steps (left) and restarts (right), the
 * baseline (NAN if none) dashed in both */
static int plot_steps(const char *path, const int *ks, const double *ce_k, const int *rs, const double *ce_r,
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
        #define PX(x) (X0 + 15 + png_coord(((x) - xmin) / (xmax - xmin) * (X1 - X0 - 30)))
        #define PY(y) (Y1 - png_coord(((y) - lo) / (hi - lo) * (Y1 - Y0)))
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

/* one line of a line plot: points (x[i], y[i]), its colour and legend name */
typedef struct { const char *name; const double *x, *y; int n; unsigned long rgb; } series;

/* a line plot of ns series with axes fitted to the data; 0 on success */
static int lineplot(const char *path, const char *title, const char *xl, const char *yl, const series *s, int ns)
{
    const int X0 = 90, X1 = 700, Y0 = 60, Y1 = 380;
    double xlo = HUGE_VAL, xhi = -HUGE_VAL, ylo = HUGE_VAL, yhi = -HUGE_VAL;
    char buf[48];
    png_img im;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            if (!isfinite(s[k].x[i]) || !isfinite(s[k].y[i])) continue;
            xlo = fmin(xlo, s[k].x[i]); xhi = fmax(xhi, s[k].x[i]); ylo = fmin(ylo, s[k].y[i]); yhi = fmax(yhi, s[k].y[i]);
        }
    if (!(xhi > xlo)) { xlo -= 1; xhi += 1; }
    if (!(yhi > ylo)) { ylo -= 0.05; yhi += 0.05; }
    { double px = 0.05 * (xhi - xlo), py = 0.08 * (yhi - ylo); xlo -= px; xhi += px; ylo -= py; yhi += py; }
    if (png_init(&im, 900, 440)) return -1;
    #define LX(x) (X0 + png_coord(((x) - xlo) / (xhi - xlo) * (X1 - X0)))
    #define LY(y) (Y1 - png_coord(((y) - ylo) / (yhi - ylo) * (Y1 - Y0)))
    png_text(&im, 20, 14, title, 2, 0x000000);
    for (int t = 0; t <= 4; t++) {   /* grid and tick labels */
        double x = xlo + (xhi - xlo) * t / 4, y = ylo + (yhi - ylo) * t / 4;
        png_line(&im, X0, LY(y), X1, LY(y), 0xdddddd, 0);
        snprintf(buf, sizeof buf, "%.3g", y);
        png_text(&im, X0 - 8 - png_text_w(buf, 1), LY(y) - 3, buf, 1, 0x000000);
        png_line(&im, LX(x), Y1, LX(x), Y1 + 5, 0x000000, 0);
        snprintf(buf, sizeof buf, "%.3g", x);
        png_text(&im, LX(x) - png_text_w(buf, 1) / 2, Y1 + 9, buf, 1, 0x000000);
    }
    png_line(&im, X0, Y0, X0, Y1, 0x000000, 0);
    png_line(&im, X0, Y1, X1, Y1, 0x000000, 0);
    png_text(&im, (X0 + X1) / 2 - png_text_w(xl, 1) / 2, Y1 + 26, xl, 1, 0x000000);
    png_text(&im, 10, Y0 - 16, yl, 1, 0x000000);
    for (int k = 0; k < ns; k++) {
        for (int i = 0; i < s[k].n; i++) {
            if (!isfinite(s[k].x[i]) || !isfinite(s[k].y[i])) continue;
            png_rect(&im, LX(s[k].x[i]) - 3, LY(s[k].y[i]) - 3, LX(s[k].x[i]) + 3, LY(s[k].y[i]) + 3, s[k].rgb);
            for (int d = 0; i + 1 < s[k].n && isfinite(s[k].y[i + 1]) && d < 4; d++)
                png_line(&im, LX(s[k].x[i]) + d % 2, LY(s[k].y[i]) + d / 2, LX(s[k].x[i + 1]) + d % 2,
                         LY(s[k].y[i + 1]) + d / 2, s[k].rgb, 0);
        }
        png_rect(&im, X1 + 20, Y0 + 16 * k + 2, X1 + 40, Y0 + 16 * k + 5, s[k].rgb);
        png_text(&im, X1 + 46, Y0 + 16 * k, s[k].name, 1, 0x000000);
    }
    #undef LX
    #undef LY
    int r = png_save(&im, path);
    png_free(&im);
    return r;
}

static const unsigned long PALETTE[7] = { 0x1f5fbf, 0xc03030, 0x2a9d3a, 0x9467bd, 0xff7f0e, 0x17becf, 0x7f7f7f };

/* ---- uncertainty: is the energy a confidence signal? --------------------- */

enum { U_FINAL, U_DROP, U_CURV, U_FIRST, NU };
static const char *const U_NAME[NU] = { "final energy E_K", "energy drop E_0 - E_K", "curvature v.Hv/v.v",
                                        "start energy E_0" };

/* per-position numbers of thinking K steps (1 start) on w: CE and the scores */
typedef struct { size_t n; float *ce, *score[NU]; } unc_data;

static void unc_free(unc_data *u)
{
    free(u->ce);
    for (int s = 0; s < NU; s++) free(u->score[s]);
}

static ebt_status unc_collect(ebt_model *m, ebt_workspace *ws, const windows *w, ebt_think_opts th, unc_data *u)
{
    eval_out out;
    eval_detail det;
    memset(u, 0, sizeof *u);
    u->n = (size_t)w->nb * w->B * w->S;
    u->ce = malloc(u->n * sizeof(float));
    for (int s = 0; s < NU; s++) u->score[s] = malloc(u->n * sizeof(float));
    for (int s = 0; s < NU; s++)
        if (!u->score[s]) return EBT_ERR_NOMEM;
    if (!u->ce) return EBT_ERR_NOMEM;
    det = (eval_detail){ u->ce, u->score[U_FIRST], u->score[U_FINAL], u->score[U_CURV], NULL };
    th.restarts = 1;
    ebt_status st = evaluate(m, ws, w, &th, &out, &det);
    for (size_t i = 0; i < u->n; i++) u->score[U_DROP][i] = u->score[U_FIRST][i] - u->score[U_FINAL][i];
    return st;
}

/* the Spearman table, the CE by decile of every score, and its plot */
static int unc_report(const unc_data *u, int K, const char *cal_path)
{
    double ms[NU][10], mce[NU][10], xs[10], rho[NU];
    int best = 0;
    for (int s = 0; s < NU; s++) {
        if (deciles(u->score[s], u->ce, u->n, ms[s], mce[s]) != 0) return 1;
        rho[s] = spearman(u->score[s], u->ce, u->n);
        best = fabs(rho[s]) > fabs(rho[best]) || isnan(rho[best]) ? s : best;
    }
    printf("\nuncertainty (%zu positions, %d think steps, 1 start): does a score rank the positions by the\n"
           "cross-entropy of their answer? (Spearman correlation; CE in the score's lowest and highest tenth)\n\n", u->n, K);
    printf("| score                          | Spearman(score, CE) | CE, lowest 10%% | CE, highest 10%% |\n");
    printf("|--------------------------------|--------------------:|---------------:|----------------:|\n");
    for (int s = 0; s < NU; s++)
        printf("| %-30s | %19.3f | %14.3f | %15.3f |\n", U_NAME[s], rho[s], mce[s][0], mce[s][9]);
    printf("\nbest predictor of error: %s (|Spearman| %.3f)\n", U_NAME[best], fabs(rho[best]));
    printf("\ncalibration: CE by decile of the final energy\n\n| decile | mean E_K | mean CE (nats/byte) |\n|-------:|---------:|--------------------:|\n");
    for (int d = 0; d < 10; d++) printf("| %6d | %8.4f | %19.4f |\n", d + 1, ms[U_FINAL][d], mce[U_FINAL][d]);
    if (!cal_path) return 0;
    series sr[NU];
    for (int d = 0; d < 10; d++) xs[d] = d + 1;
    for (int s = 0; s < NU; s++) sr[s] = (series){ U_NAME[s], xs, mce[s], 10, PALETTE[s] };
    if (lineplot(cal_path, "CE BY DECILE OF EACH UNCERTAINTY SCORE", "DECILE OF THE SCORE (1 = LOWEST)",
                 "CE (NATS/BYTE)", sr, NU) != 0) {
        fprintf(stderr, "ebt_lm: cannot write %s: %s\n", cal_path, strerror(errno));
        return 1;
    }
    fprintf(stderr, "ebt_lm: wrote %s\n", cal_path);
    return 0;
}

/* ---- compute/quality: what each stopping rule buys --------------------- */

/* the median RMS of dE/dp over V at the random starts of the first batch */
static ebt_status start_grad_rms(ebt_model *m, ebt_workspace *ws, const windows *w, ebt_think_opts th, double *med)
{
    const int V = ebt_model_config(m)->vocab_size, N = w->B * w->S;
    int32_t *tok = malloc((size_t)N * 2 * sizeof *tok);
    ebt_real *y = malloc((size_t)N * V * 2 * sizeof *y), *p = y + (size_t)N * V;
    float *rms = malloc((size_t)N * sizeof *rms);
    ebt_think_result r;
    ebt_status st = tok && y && rms ? EBT_OK : EBT_ERR_NOMEM;
    memset(&r, 0, sizeof r);
    r.probs = p;
    th.steps = 0; th.restarts = 1;
    if (st == EBT_OK) {
        fill_batch(w->val, w->n, w->B, w->S, batch_key(EVAL_SEED, 0, 0), tok, tok + N);
        st = ebt_think(ws, m, tok, w->B, w->S, &th, &r);
    }
    if (st == EBT_OK) st = ebt_ws_energy(ws, p, NULL, y);
    for (int i = 0; st == EBT_OK && i < N; i++) {
        double ss = 0;
        for (int j = 0; j < V; j++) ss += (double)y[(size_t)i * V + j] * y[(size_t)i * V + j];
        rms[i] = (float)sqrt(ss / V);
    }
    if (st == EBT_OK) {
        double ms[10], dummy[10];
        if (deciles(rms, rms, (size_t)N, ms, dummy) != 0) st = EBT_ERR_NOMEM;
        *med = 0.5 * (ms[4] + ms[5]);
    }
    free(tok); free(y); free(rms);
    return st;
}

enum { R_STEPS, R_THRESH, R_TOL, R_REL, R_GRAD, R_BUDGET, R_KEEP, NR };
static const char *const R_NAME[NR] = { "steps K", "threshold", "tol", "rel_drop", "grad_tol", "row_budget", "keep_best" };
#define R_POINTS 5

/* the thinking options of point i of rule r (K = 8 for every rule but steps) */
static int rule_point(int r, int i, const unc_data *u, double g0, int BS, ebt_think_opts *th, char *lab, size_t nl)
{
    static const double q[R_POINTS] = { 0.1, 0.3, 0.5, 0.7, 0.9 }, tf[R_POINTS] = { 1, 0.3, 0.1, 0.03, 0.01 },
                        rf[R_POINTS] = { 0.1, 0.03, 0.01, 0.003, 0.001 }, gf[R_POINTS] = { 1, 0.5, 0.25, 0.1, 0.05 },
                        bf[R_POINTS] = { 1.5, 2, 3, 5, 7 };
    double ms[10], mc[10], sd = 0, mean = 0;
    th->steps = 8;
    if (r == R_STEPS) { th->steps = KS[i]; snprintf(lab, nl, "%d", KS[i]); return 1; }
    if (r == R_KEEP) { th->keep_best = 1; snprintf(lab, nl, "on"); return i == 0; }
    if (r == R_THRESH) {
        deciles(u->score[U_FINAL], u->ce, u->n, ms, mc);
        th->energy_threshold = ms[(int)(q[i] * 10)];
        snprintf(lab, nl, "%.4g (%d%% quantile)", th->energy_threshold, (int)(q[i] * 100));
    } else if (r == R_TOL) {
        for (size_t k = 0; k < u->n; k++) mean += u->score[U_FINAL][k] / (double)u->n;
        for (size_t k = 0; k < u->n; k++) sd += (u->score[U_FINAL][k] - mean) * (u->score[U_FINAL][k] - mean) / (double)u->n;
        th->tol = tf[i] * sqrt(sd);
        snprintf(lab, nl, "%.4g (%.2g sd of E)", th->tol, tf[i]);
    } else if (r == R_REL) {
        th->rel_drop = rf[i];
        snprintf(lab, nl, "%.3g", rf[i]);
    } else if (r == R_GRAD) {
        th->grad_tol = gf[i] * g0;
        snprintf(lab, nl, "%.4g (%.2g x start)", th->grad_tol, gf[i]);
    } else {
        th->row_budget = (long long)(bf[i] * BS);
        snprintf(lab, nl, "%.3g rows/position", bf[i]);
    }
    return 1;
}

/* every rule at its points: CE against row evaluations per position */
static int compute_report(ebt_model *m, ebt_workspace *ws, const windows *w, ebt_think_opts base, const unc_data *u,
                          const char *path)
{
    double xs[NR][R_POINTS], ys[NR][R_POINTS], g0 = 0;
    int np[NR] = { 0 };
    char lab[64];
    ebt_status st = start_grad_rms(m, ws, w, base, &g0);
    if (st != EBT_OK) return fail("gradient at the start", st, m, ws);
    printf("\ncompute/quality (no restarts): CE against row evaluations (energy + gradient) per position\n\n"
           "| rule       | setting                          | rows/position | val CE (nats/byte) |\n"
           "|------------|----------------------------------|--------------:|-------------------:|\n");
    base.energy_threshold = -INFINITY; base.tol = -1; base.rel_drop = -INFINITY; base.grad_tol = -1;
    base.row_budget = 0; base.keep_best = 0; base.restarts = 1;
    for (int r = 0; r < NR; r++)
        for (int i = 0; i < R_POINTS; i++) {
            ebt_think_opts th = base;
            eval_out e;
            if (!rule_point(r, i, u, g0, w->B * w->S, &th, lab, sizeof lab)) continue;
            if (isatty(fileno(stderr))) fprintf(stderr, "\rebt_lm: compute sweep: %s %s ...\033[K", R_NAME[r], lab);
            if ((st = evaluate(m, ws, w, &th, &e, NULL)) != EBT_OK) return fail("validation", st, m, ws);
            if (isatty(fileno(stderr))) fputs("\r\033[K", stderr);
            printf("| %-10s | %-32s | %13.3f | %18.4f |\n", R_NAME[r], lab, e.rows, e.ce);
            xs[r][np[r]] = e.rows; ys[r][np[r]++] = e.ce;
        }
    if (!path) return 0;
    series sr[NR];
    for (int r = 0; r < NR; r++) {   /* each rule's points by compute */
        for (int i = 1; i < np[r]; i++)
            for (int j = i; j > 0 && xs[r][j] < xs[r][j - 1]; j--) {
                double tx = xs[r][j], ty = ys[r][j];
                xs[r][j] = xs[r][j - 1]; ys[r][j] = ys[r][j - 1]; xs[r][j - 1] = tx; ys[r][j - 1] = ty;
            }
        sr[r] = (series){ R_NAME[r], xs[r], ys[r], np[r], PALETTE[r] };
    }
    if (lineplot(path, "VALIDATION CE AGAINST THINKING COMPUTE", "ROW EVALUATIONS PER POSITION", "CE (NATS/BYTE)", sr, NR) != 0) {
        fprintf(stderr, "ebt_lm: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(stderr, "ebt_lm: wrote %s\n", path);
    return 0;
}

/* ---- out of distribution ------------------------------------------------ */

/* the whole of path as windows of S + 1 bytes; an exit code */
static int load_ood(const char *path, corpus *c, int S)
{
    memset(c, 0, sizeof *c);
    if (append_file(c, path) != 0) {
        fprintf(stderr, "ebt_lm: cannot read %s: %s\n", path, strerror(errno));
        free(c->buf); c->buf = NULL;
        return 1;
    }
    if (c->n <= (size_t)S + 1) {
        fprintf(stderr, "ebt_lm: %s is too small (%zu bytes) for windows of %d bytes\n", path, c->n, S + 1);
        free(c->buf); c->buf = NULL;
        return 2;
    }
    return 0;
}

/* the thinking gain in and out of distribution, side by side */
static void ood_report(const think_table *in, const think_table *out, const eval_out *bin, const eval_out *bout,
                       const char *ood)
{
    double bi, bo, gi = think_gain(in, &bi), go = think_gain(out, &bo);
    printf("\nout of distribution: %s (whole file) against the validation text\n\n", ood);
    printf("| nats/byte                                  | in-distribution | out-of-distribution |\n");
    printf("|--------------------------------------------|----------------:|--------------------:|\n");
    printf("| EBT, 1 thinking step                       | %15.4f | %19.4f |\n", in->ek[0].ce, out->ek[0].ce);
    printf("| EBT, best over steps 1-8 and restarts 1-4  | %15.4f | %19.4f |\n", bi, bo);
    printf("| thinking gain (1 step minus best)          | %15.4f | %19.4f |\n", gi, go);
    printf("| relative gain (gain / CE at 1 step)        | %14.1f%% | %18.1f%% |\n", 100 * gi / in->ek[0].ce, 100 * go / out->ek[0].ce);
    if (bin && bout) printf("| transformer++                              | %15.4f | %19.4f |\n", bin->ce, bout->ce);
}

/* ---- the command ---------------------------------------------------------- */

typedef struct {
    eval_args a;
    ebt_model *m, *base;
    ebt_workspace *ws;
    corpus c, oc;
    windows w, wo;
    int S;
} evaluator;

static void eval_close(evaluator *E)
{
    ebt_workspace_free(E->ws);
    ebt_free(E->m);
    ebt_free(E->base);
    free(E->c.buf);
    free(E->oc.buf);
}

/* models, corpora and windows; an exit code */
static int eval_open(evaluator *E)
{
    const eval_args *a = &E->a;
    int rc;
    if (load_model(a->ckpt, &E->m) || (a->base_path && load_model(a->base_path, &E->base))) return 1;
    E->S = ebt_model_config(E->m)->max_seq_len;
    if (E->base && ebt_model_config(E->base)->max_seq_len < E->S) E->S = ebt_model_config(E->base)->max_seq_len;
    if (E->base && ebt_model_config(E->base)->arch != EBT_ARCH_TRANSFORMER)
        fprintf(stderr, "ebt_lm: note: --baseline %s is not a transformer++\n", a->base_path);
    {   /* the checkpoint's way of thinking unless --eval-steps / --noise say otherwise */
        int k = E->a.eval_steps;
        double z = E->a.th.noise;
        think_defaults(E->m, &k, &z);
        if (!(a->set & 1)) E->a.eval_steps = k;
        if (!(a->set & 2)) E->a.th.noise = z;
    }
    if (!batch_fits(a->B, E->S)) return 2;
    if ((rc = load_corpus(a->data, &E->c, E->S)) != 0) return rc;
    if (a->ood && (rc = load_ood(a->ood, &E->oc, E->S)) != 0) return rc;
    E->w = (windows){E->c.buf + E->c.n_train, E->c.n - E->c.n_train, (int)a->nb, a->B, E->S};
    E->wo = (windows){E->oc.buf, E->oc.n, (int)a->nb, a->B, E->S};
    return 0;
}

/* a transformer++ checkpoint: its CE (and the baseline's, and out of distribution) */
static int eval_transformer(evaluator *E, const eval_out *base_ev)
{
    eval_out e, eo;
    ebt_status st;
    if (E->a.think_opt) fprintf(stderr, "ebt_lm: warning: %s is ignored: %s is a transformer++ (it does not think)\n", E->a.think_opt, E->a.ckpt);
    if ((st = evaluate(E->m, NULL, &E->w, &E->a.th, &e, NULL)) != EBT_OK) return fail("validation", st, E->m, NULL);
    printf("| model         | val CE (nats/byte) |        ppl | mean final energy |\n");
    printf("|--------------:|-------------------:|-----------:|------------------:|\n");
    table_row(E->a.ckpt, &e, 0);
    if (E->base) table_row(E->a.base_path, base_ev, 0);
    if (E->a.ood) {
        if ((st = evaluate(E->m, NULL, &E->wo, &E->a.th, &eo, NULL)) != EBT_OK) return fail("validation", st, E->m, NULL);
        printf("\nout of distribution (%s): %.4f nats/byte\n", E->a.ood, eo.ce);
    }
    return 0;
}

static int cmd_eval(int argc, char **argv)
{
    evaluator E;
    think_table tin, tout;
    eval_out base_ev = {NAN, NAN, NAN, NAN}, base_ood = {NAN, NAN, NAN, NAN};
    unc_data u;
    ebt_status st;
    int rc;
    memset(&E, 0, sizeof E);
    memset(&u, 0, sizeof u);
    if ((rc = eval_parse(argc, argv, &E.a)) >= 0) return rc;
    if ((rc = eval_open(&E)) != 0) goto done;
    const eval_args *a = &E.a;
    rc = 1;
    printf("validation: %ld batches x %d windows x %d bytes = %ld positions\n\n", a->nb, a->B, E.S, a->nb * a->B * E.S);
    if (E.base && (st = evaluate(E.base, NULL, &E.w, &a->th, &base_ev, NULL)) != EBT_OK) { rc = fail("baseline", st, E.base, NULL); goto done; }
    if (E.base && a->ood && (st = evaluate(E.base, NULL, &E.wo, &a->th, &base_ood, NULL)) != EBT_OK) { rc = fail("baseline", st, E.base, NULL); goto done; }
    if (ebt_model_config(E.m)->arch != EBT_ARCH_EBT) { rc = eval_transformer(&E, &base_ev); goto done; }
    if ((st = ebt_workspace_create(E.m, a->B, E.S, &E.ws)) != EBT_OK) { rc = fail("ebt_workspace_create", st, E.m, NULL); goto done; }
    if ((st = think_table_run(E.m, E.ws, &E.w, a->th, a->eval_steps, &tin, "validation")) != EBT_OK) { rc = fail("validation", st, E.m, E.ws); goto done; }
    think_table_print(&tin, a->eval_steps, E.base ? &base_ev : NULL);
    if (a->plot_path) {
        double ce_k[N_KS], ce_r[N_RS];
        for (int i = 0; i < N_KS; i++) ce_k[i] = tin.ek[i].ce;
        for (int i = 0; i < N_RS; i++) ce_r[i] = tin.er[i].ce;
        if (plot_steps(a->plot_path, KS, ce_k, RS, ce_r, a->eval_steps, base_ev.ce) != 0) {
            fprintf(stderr, "ebt_lm: cannot write %s: %s\n", a->plot_path, strerror(errno));
            goto done;
        }
        fprintf(stderr, "ebt_lm: wrote %s\n", a->plot_path);
    }
    {
        ebt_think_opts th = a->th;
        th.steps = a->eval_steps;
        if ((st = unc_collect(E.m, E.ws, &E.w, th, &u)) != EBT_OK) { rc = fail("validation", st, E.m, E.ws); goto done; }
        if (unc_report(&u, a->eval_steps, a->cal_path) != 0) goto done;
    }
    if (a->ood) {
        if ((st = think_table_run(E.m, E.ws, &E.wo, a->th, a->eval_steps, &tout, "out of distribution")) != EBT_OK) { rc = fail("validation", st, E.m, E.ws); goto done; }
        ood_report(&tin, &tout, E.base ? &base_ev : NULL, E.base ? &base_ood : NULL, a->ood);
    }
    if ((a->compute_path || a->rules) && compute_report(E.m, E.ws, &E.w, a->th, &u, a->compute_path) != 0) goto done;
    rc = 0;
done:
    unc_free(&u);
    eval_close(&E);
    return rc;
}
