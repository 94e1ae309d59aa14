/* fuzz_lm_text.c - libFuzzer harness for the corpus reader of
 * examples/ebt_lm.c (load_corpus with --data FILE) and the batch windows
 * drawn from it (fill_batch), plus fmt_time.
 *
 * Input: 2 bytes choosing the window length S (1..4096, big endian,
 * modulo 4096, plus 1), 8 bytes of batch key, then the text file itself.
 * A corpus too small for S must be refused (exit code 2); an accepted one
 * must hold exactly the file's bytes, split 90/10 with both parts longer
 * than S+1, and every window drawn from either part must lie inside it
 * (each part is copied into a buffer of its exact size, so AddressSanitizer
 * sees a window that runs past it) with targets = inputs shifted by one.
 * Built by `make fuzz`:
 *   clang -std=c99 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_lm_text.c ebt.c -lopenblas -lm */
#define _GNU_SOURCE
#define EBT_LM_NO_MAIN
#include "../../examples/ebt_lm.c"
#include "fuzz_util.h"

#define B_WIN 3
#define FAIL(...) do { fprintf(stderr, "fuzz_lm_text: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    (void)cmd_train; (void)cmd_sample; (void)cmd_eval; (void)cmd_export;  /* not run here */
    fuzz_files_init("ebt_fuzz_lm_text");
    return 0;
}

/* draws B_WIN windows of part[n] (copied to an exact-size buffer) and checks them */
static void check_windows(const unsigned char *part, size_t n, int S, uint64_t key)
{
    unsigned char *exact = (unsigned char *)malloc(n);
    int32_t *tok = (int32_t *)malloc(sizeof(int32_t) * B_WIN * (size_t)S);
    int32_t *tgt = (int32_t *)malloc(sizeof(int32_t) * B_WIN * (size_t)S);
    if (!exact || !tok || !tgt) FAIL("out of memory");
    memcpy(exact, part, n);
    fill_batch(exact, n, B_WIN, S, key, tok, tgt);
    for (int i = 0; i < B_WIN * S; i++) {
        if (tok[i] < 0 || tok[i] > 255 || tgt[i] < 0 || tgt[i] > 255) FAIL("token out of byte range");
        if (i % S != S - 1 && tgt[i] != tok[i + 1]) FAIL("targets are not the inputs shifted by one");
    }
    free(exact); free(tok); free(tgt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    corpus c;
    int S, rc;
    uint64_t key = 0;
    char t[32];
    double secs;
    if (size < 10) return 0;
    S = 1 + (int)(((unsigned)data[0] << 8 | data[1]) % 4096);
    for (int i = 0; i < 8; i++) key = key << 8 | data[2 + i];
    memcpy(&secs, data + 2, sizeof secs);
    fmt_time(secs, t, sizeof t);
    if (!memchr(t, 0, sizeof t)) FAIL("fmt_time: unterminated");
    data += 10;
    size -= 10;
    fuzz_write_input(data, size);
    rc = load_corpus(fuzz_in_path, &c, S);
    if (rc != 0) {
        if (rc != 2) FAIL("load_corpus returned %d", rc);
        if (c.buf) FAIL("refused corpus not freed");
        if (size / 10 * 9 + size % 10 * 9 / 10 > (size_t)S + 1 && size - (size / 10 * 9 + size % 10 * 9 / 10) > (size_t)S + 1)
            FAIL("a corpus of %zu bytes refused for S=%d", size, S);
        return 0;
    }
    if (c.n != size || memcmp(c.buf, data, size) != 0) FAIL("corpus differs from the file");
    if (c.n_train > c.n || c.n_train <= (size_t)S + 1 || c.n - c.n_train <= (size_t)S + 1) FAIL("bad split %zu/%zu", c.n_train, c.n);
    if (c.n_train + 1 < c.n / 10 * 9 || c.n_train > c.n / 10 * 9 + 9) FAIL("split is not 90%%");
    check_windows(c.buf, c.n_train, S, batch_key(key, 1, 0));
    check_windows(c.buf + c.n_train, c.n - c.n_train, S, batch_key(EVAL_SEED, 0, 0));
    free(c.buf);
    return 0;
}
