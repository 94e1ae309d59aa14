/* fuzz_lm_args.c - libFuzzer harness for the command-line parsing of
 * examples/ebt_lm.c (train_parse, sample_parse, eval_parse: the option
 * tables, parse_opts and the checks after it; no i/o).
 *
 * The input is split on NUL and whitespace into argv[1..]; argv[1] names
 * the command ("train", "sample" or "eval"). A parse must return -1 (ok),
 * 0 (--help) or 2 (bad usage), and an accepted one must hold values inside
 * the documented ranges; for train, ebt_config_check runs on the model
 * options. Seeds: tests/fuzz/lm_args/. Built by `make fuzz`:
 *   clang -std=c99 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_lm_args.c ebt.c -lopenblas -lm
 * Run with -close_fd_mask=3: every refused option prints the usage. */
#define _GNU_SOURCE
#define EBT_LM_NO_MAIN
#include "../../examples/ebt_lm.c"
#include <ctype.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_ARGS 512
#define FAIL(...) do { fprintf(stderr, "fuzz_lm_args: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    /* the commands themselves are not run here */
    (void)cmd_train; (void)cmd_sample; (void)cmd_eval; (void)cmd_export;
    return 0;
}

/* an accepted --seed must be its own decimal digits (no silent clamping) */
static void check_seed(int argc, char **argv, uint64_t seed)
{
    const char *v = NULL;
    char buf[32];
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--seed=", 7)) v = argv[i] + 7;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) v = argv[++i];
        else if (strchr(argv[i], '=') || !strcmp(argv[i], "--resume") || !strcmp(argv[i], "--tie") ||
                 !strcmp(argv[i], "--no-learn-alpha") || !strcmp(argv[i], "--trace") ||
                 !strcmp(argv[i], "--keep-best") || !strcmp(argv[i], "--rules")) continue;
        else i++;  /* every other option takes a value */
    if (!v) return;
    while (v[0] == '0' && v[1]) v++;
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)seed);
    if (strcmp(buf, v) != 0) FAIL("--seed %s became %s", v, buf);
}

static void check_train(int argc, char **argv, const train_args *a)
{
    char err[256];
    const ebt_config *c = &a->cfg;
    if (c->arch != EBT_ARCH_EBT && c->arch != EBT_ARCH_TRANSFORMER) FAIL("train: arch %d", (int)c->arch);
    if (a->B < 1 || a->B > (1 << 20) || a->S < 1 || a->S > (1 << 20) || c->max_seq_len != a->S) FAIL("train: B %d S %d", a->B, a->S);
    if (a->to.k_min < 1 || a->to.k_min > a->to.k_max || a->to.k_max > 1000) FAIL("train: k %d..%d", a->to.k_min, a->to.k_max);
    if (a->to.mode != EBT_MODE_DETACH && a->to.mode != EBT_MODE_TRUNCATE && a->to.mode != EBT_MODE_FULL) FAIL("train: mode");
    if (!(a->minutes > 0) && a->steps <= 0) FAIL("train: no budget (minutes %g, steps %ld)", a->minutes, a->steps);
    if (!a->out || !*a->out) FAIL("train: no output path");
    if (c->d_ff < 1 || c->d_model < 2 || c->n_heads < 1 || c->n_layers < 1) FAIL("train: model size");
    if (!(a->to.replay_frac >= 0 && a->to.replay_frac <= 1) || a->to.replay_capacity < 0) FAIL("train: replay");
    if (a->save_every < 1 || a->eval_every < -1 || a->eval_batches < 1 || a->eval_steps < 0) FAIL("train: schedule");
    check_seed(argc, argv, a->to.seed);
    /* the library's own check of the model options must not misbehave */
    err[0] = 0;
    if (ebt_config_check(c, err, sizeof err) != EBT_OK && !err[0]) FAIL("train: config refused without a message");
}

static void check_sample(int argc, char **argv, const sample_args *a)
{
    if (!a->ckpt || !a->prompt) FAIL("sample: NULL string");
    if (a->n < 1 || a->n > (1 << 24)) FAIL("sample: n %d", a->n);
    if (a->g.think.steps < 0 || a->g.think.steps > 1000 || a->g.think.restarts < 1 || a->g.think.restarts > 1000)
        FAIL("sample: steps %d restarts %d", a->g.think.steps, a->g.think.restarts);
    if (!(a->g.top_p >= 0 && a->g.top_p <= 1) || !(a->g.temperature >= 0 && a->g.temperature <= 100)) FAIL("sample: sampling");
    if (!isfinite(a->g.think.step_size) || !isfinite(a->g.think.noise) || !isfinite(a->g.think.init_scale)) FAIL("sample: nan");
    if (a->g.think.seed != (a->g.seed ^ 0x7417c0deULL)) FAIL("sample: think seed");
    check_seed(argc, argv, a->g.seed);
}

static void check_eval(const eval_args *a)
{
    if (!a->ckpt) FAIL("eval: no checkpoint");
    if (a->nb < 1 || a->nb > 1000000 || a->B < 1 || a->B > (1 << 20)) FAIL("eval: batches %ld x %d", a->nb, a->B);
    if (a->eval_steps < 0 || a->eval_steps > 1000) FAIL("eval: eval_steps %d", a->eval_steps);
    if (!(a->th.noise >= 0) || !(a->th.init_scale >= 0) || !(a->th.step_size >= 0) ||
        !isfinite(a->th.noise + a->th.init_scale + a->th.step_size + a->th.clamp) || a->th.row_budget < 0 ||
        (a->th.keep_best != 0 && a->th.keep_best != 1))
        FAIL("eval: thinking options");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = (char *)malloc(size + 1), *argv[MAX_ARGS + 1];
    int argc = 0, rc;
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    argv[argc++] = (char *)"ebt_lm";
    for (size_t i = 0; i < size; i++) if (isspace((unsigned char)buf[i])) buf[i] = 0;
    for (size_t i = 0; i < size && argc < MAX_ARGS; i++)
        if (buf[i] && (i == 0 || !buf[i - 1])) argv[argc++] = buf + i;
    argv[argc] = NULL;
    if (argc >= 2) {
        char **av = argv + 1;
        int ac = argc - 1;
        if (!strcmp(argv[1], "train")) {
            train_args a;
            rc = train_parse(ac, av, &a);
            if (rc == -1) check_train(ac, av, &a);
        } else if (!strcmp(argv[1], "sample")) {
            sample_args a;
            rc = sample_parse(ac, av, &a);
            if (rc == -1) check_sample(ac, av, &a);
        } else if (!strcmp(argv[1], "eval")) {
            eval_args a;
            rc = eval_parse(ac, av, &a);
            if (rc == -1) check_eval(&a);
        } else {
            rc = 2;
        }
        if (rc != -1 && rc != 0 && rc != 2) FAIL("parse returned %d", rc);
    }
    free(buf);
    return 0;
}
