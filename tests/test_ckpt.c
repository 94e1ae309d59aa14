/* Checkpoints: bit-exact round trips for every arch/option; corrupted,
 * truncated or mislabelled files rejected with a message; a failed save
 * leaves the previous file intact. */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>
#include "../ebt.h"
#include "test_util.h"

/* every file of this test lives in a fresh directory (make test and make
 * asan may run at once) */
static char tmpdir[256], tmppath[300];
#define TMP tmppath

static ebt_model *make(ebt_arch arch, int step_embed, int tied)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    c.arch = arch; c.vocab_size = 10; c.d_model = 12; c.n_heads = 3; c.d_ff = 20; c.n_layers = 2; c.max_seq_len = 9;
    c.n_step_embed = step_embed; c.tie_pred_embed = tied; c.alpha = 3.25; c.norm_eps = 1e-6; c.rope_theta = 500000;
    assert_int_equal(ebt_create(&c, 99, &m), EBT_OK);
    return m;
}

static void spill(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void assert_same_model(ebt_model *a, ebt_model *b)
{
    const ebt_config *ca = ebt_model_config(a), *cb = ebt_model_config(b);
    assert_int_equal(ca->arch, cb->arch);
    assert_int_equal(ca->vocab_size, cb->vocab_size);
    assert_int_equal(ca->d_model, cb->d_model);
    assert_int_equal(ca->n_layers, cb->n_layers);
    assert_int_equal(ca->n_heads, cb->n_heads);
    assert_int_equal(ca->d_ff, cb->d_ff);
    assert_int_equal(ca->max_seq_len, cb->max_seq_len);
    assert_int_equal(ca->n_step_embed, cb->n_step_embed);
    assert_int_equal(ca->tie_pred_embed, cb->tie_pred_embed);
    assert_true(ca->rope_theta == cb->rope_theta && ca->norm_eps == cb->norm_eps);
    assert_int_equal(ebt_n_tensors(a), ebt_n_tensors(b));
    for (int t = 0; t < ebt_n_tensors(a); t++) {
        size_t na, nb;
        const char *name = ebt_tensor_name(a, t);
        ebt_real *pa = ebt_param(a, name, &na), *pb = ebt_param(b, name, &nb);
        assert_string_equal(name, ebt_tensor_name(b, t));
        assert_int_equal(na, nb);
        assert_memory_equal(pa, pb, na * sizeof(ebt_real));
    }
}

static void round_trip(ebt_arch arch, int step_embed, int tied)
{
    ebt_model *m = make(arch, step_embed, tied), *m2 = NULL;
    char err[256];
    size_t n1, n2;
    assert_int_equal(ebt_save_ex(m, TMP, err, sizeof err), EBT_OK);
    unsigned char *f1 = test_slurp(TMP, &n1);
    assert_non_null(f1);
    assert_int_equal(ebt_load_ex(TMP, &m2, err, sizeof err), EBT_OK);
    assert_same_model(m, m2);
    if (arch == EBT_ARCH_EBT) {
        int32_t tok[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
        ebt_real p[80], e1[8], e2[8];
        test_random_probs(p, 8, 10, 1.0);
        assert_int_equal(ebt_energy(m, tok, p, 2, 4, 1, e1, NULL), EBT_OK);
        assert_int_equal(ebt_energy(m2, tok, p, 2, 4, 1, e2, NULL), EBT_OK);
        assert_memory_equal(e1, e2, sizeof e1);
        assert_true(ebt_model_config(m2)->alpha == 3.25);
    }
    /* saving the loaded model gives the same bytes */
    assert_int_equal(ebt_save(m2, TMP), EBT_OK);
    unsigned char *f2 = test_slurp(TMP, &n2);
    assert_non_null(f2);
    assert_int_equal(n1, n2);
    assert_memory_equal(f1, f2, n1);
    free(f1); free(f2);
    ebt_free(m); ebt_free(m2);
    remove(TMP);
}

static void test_round_trip_ebt_step_tied(void **s) { (void)s; round_trip(EBT_ARCH_EBT, 3, 1); }
static void test_round_trip_ebt_plain(void **s) { (void)s; round_trip(EBT_ARCH_EBT, 0, 0); }
static void test_round_trip_transformer(void **s) { (void)s; round_trip(EBT_ARCH_TRANSFORMER, 0, 0); }

/* the PyTorch-written checkpoints load, and save again bit-exactly */
static void test_pytorch_checkpoints(void **state)
{
    static const char *files[] = { "ref/a.safetensors", "ref/b.safetensors", "ref/c.safetensors" };
    (void)state;
    for (int i = 0; i < 3; i++) {
        ebt_model *m = NULL, *m2 = NULL;
        char err[256];
        ebt_status st = ebt_load_ex(files[i], &m, err, sizeof err);
        if (st != EBT_OK) printf("  %s: %s\n", files[i], err);
        assert_int_equal(st, EBT_OK);
        assert_int_equal(ebt_save(m, TMP), EBT_OK);
        assert_int_equal(ebt_load(TMP, &m2), EBT_OK);
        assert_same_model(m, m2);
        ebt_free(m); ebt_free(m2);
    }
    remove(TMP);
}

/* a checkpoint rebuilt from a header string and the data of a valid file */
static ebt_status load_with_header(const char *hdr, const unsigned char *data, size_t ndata, char *err)
{
    size_t hl = strlen(hdr), n = 8 + hl + ndata;
    unsigned char *b = malloc(n);
    ebt_model *m = (ebt_model *)&m;
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)hl >> (8 * k));
    memcpy(b + 8, hdr, hl);
    memcpy(b + 8 + hl, data, ndata);
    spill(TMP, b, n);
    free(b);
    err[0] = 0;
    ebt_status st = ebt_load_ex(TMP, &m, err, 256);
    if (st == EBT_OK) ebt_free(m);
    else assert_null(m);
    return st;
}

/* replaces the first occurrence of from by to in s (into out) */
static int subst(char *out, size_t cap, const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    if (!at) return 0;
    snprintf(out, cap, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return 1;
}

static void test_corrupted(void **state)
{
    ebt_model *m = make(EBT_ARCH_EBT, 2, 0);
    size_t n, hl = 0;
    char err[256], hdr[16384], bad[16400];
    int cases = 0;
    (void)state;
    assert_int_equal(ebt_save(m, TMP), EBT_OK);
    unsigned char *f = test_slurp(TMP, &n);
    assert_non_null(f);
    for (int k = 0; k < 8; k++) hl |= (size_t)f[k] << (8 * k);
    assert_true(hl < sizeof hdr);
    memcpy(hdr, f + 8, hl);
    hdr[hl] = 0;
    const unsigned char *data = f + 8 + hl;
    size_t ndata = n - 8 - hl;
    assert_int_equal(load_with_header(hdr, data, ndata, err), EBT_OK);  /* the rebuild itself is valid */

    /* truncations at many lengths */
    size_t cuts[] = { 0, 1, 7, 8, 9, 8 + hl / 2, 8 + hl - 1, 8 + hl, 8 + hl + 1, n / 2, n - 4, n - 1 };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        ebt_model *x = NULL;
        spill(TMP, f, cuts[i]);
        assert_int_equal(ebt_load_ex(TMP, &x, err, sizeof err), EBT_ERR_FORMAT);
        assert_null(x);
        assert_true(err[0] != 0);
        cases++;
    }
    /* header length larger than the file */
    {
        unsigned char *g = malloc(n);
        ebt_model *x = NULL;
        memcpy(g, f, n);
        g[6] = 0x7f;
        spill(TMP, g, n);
        assert_int_equal(ebt_load_ex(TMP, &x, err, sizeof err), EBT_ERR_FORMAT);
        free(g);
        cases++;
    }
    /* mislabelled headers: each substitution must be rejected with a message */
    static const char *mut[][2] = {
        { "\"F32\"", "\"F16\"" },
        { "\"arch\":\"ebt\"", "\"arch\":\"gpt\"" },
        { "\"format\":\"ebt\"", "\"format\":\"gguf\"" },
        { "\"version\":\"1\"", "\"version\":\"2\"" },
        { "\"d_model\":\"12\"", "\"d_model\":\"13\"" },      /* not divisible by H */
        { "\"n_heads\":\"3\"", "\"n_heads\":\"4\"" },        /* Dh = 3 odd */
        { "\"d_model\":\"12\"", "\"d_model\":\"0\"" },
        { "\"vocab_size\":\"10\"", "\"vocab_size\":\"-10\"" },
        { "\"vocab_size\":\"10\"", "\"vocab_size\":\"99999999999\"" },
        { "\"vocab_size\":\"10\"", "\"vocab_size\":\"10x\"" },
        { "\"vocab_size\":\"10\"", "\"vocab_size\":\"11\"" },  /* shapes no longer match */
        { "\"n_layers\":\"2\"", "\"n_layers\":\"3\"" },        /* missing tensors */
        { "\"n_layers\":\"2\"", "\"n_layers\":\"1\"" },        /* unknown tensors */
        { "\"max_seq_len\":\"9\"", "\"max_seq_len\":\"0\"" },
        { "\"max_seq_len\":\"9\"", "\"max_seq_len\":\"2000000000\"" },
        { "\"norm_eps\":\"1e-06\"", "\"norm_eps\":\"nan\"" },
        { "\"norm_eps\":\"1e-06\"", "\"norm_eps\":\"-1e-06\"" },
        { "\"norm_eps\":\"1e-06\"", "\"norm_eps\":\"0\"" },
        { "\"rope_theta\":\"500000\"", "\"rope_theta\":\"inf\"" },
        { "\"rope_theta\":\"500000\"", "\"rope_theta\":\"-3\"" },
        { "\"n_step_embed\":\"2\"", "\"n_step_embed\":\"0\"" }, /* step_embed becomes unknown */
        { "\"tie_pred_embed\":\"0\"", "\"tie_pred_embed\":\"1\"" }, /* pred_embed becomes unknown */
        { "\"tie_pred_embed\":\"0\"", "\"tie_pred_embed\":\"2\"" },
        { "\"alpha\"", "\"alpha2\"" },
        { "\"final_norm.weight\"", "\"final_norm.weights\"" },
        { "\"shape\":[10,12]", "\"shape\":[12,10]" },
        { "\"shape\":[10,12]", "\"shape\":[120]" },
        { "\"shape\":[10,12]", "\"shape\":[10,12,1]" },
        { "\"shape\":[10,12]", "\"shape\":[10,-12]" },
        { "\"shape\":[12]", "\"shape\":[]" },
        { "\"data_offsets\":[0,", "\"data_offsets\":[4," },
        { ",\"data_offsets\":[0,480]", ",\"data_offsets\":[0,484]" },
        { "\"dtype\":\"F32\",", "" },
        { "\"__metadata__\":{", "\"__metadata__\":{\"x\":1," },
        { "{", "[" },
        { "}", "}}" },
        { "\"", "'" },
    };
    for (size_t i = 0; i < sizeof mut / sizeof mut[0]; i++) {
        if (!subst(bad, sizeof bad, hdr, mut[i][0], mut[i][1])) { printf("  mutation %zu: '%s' not in header\n", i, mut[i][0]); fail(); }
        ebt_status st = load_with_header(bad, data, ndata, err);
        if (st != EBT_ERR_FORMAT) printf("  mutation %s -> %s: %s (%s)\n", mut[i][0], mut[i][1], ebt_status_str(st), err);
        assert_int_equal(st, EBT_ERR_FORMAT);
        assert_true(err[0] != 0);
        cases++;
    }
    /* overlapping tensors: point the second tensor at the first one's bytes */
    {
        char *second = strstr(strstr(hdr, "\"data_offsets\":[") + 1, "\"data_offsets\":[");
        unsigned long long b0, e0;
        assert_non_null(second);
        assert_int_equal(sscanf(second, "\"data_offsets\":[%llu,%llu]", &b0, &e0), 2);
        char from[64], to[64];
        snprintf(from, sizeof from, "[%llu,%llu]", b0, e0);
        snprintf(to, sizeof to, "[%llu,%llu]", b0 - 4, e0 - 4);
        char tmp[16400];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(second - hdr), hdr);
        subst(bad, sizeof bad, second, from, to);
        strncat(tmp, bad, sizeof tmp - strlen(tmp) - 1);
        assert_int_equal(load_with_header(tmp, data, ndata, err), EBT_ERR_FORMAT);
        cases++;
    }
    /* a NaN weight */
    {
        unsigned char *g = malloc(n);
        ebt_model *x = NULL;
        memcpy(g, f, n);
        memset(g + 8 + hl + 4, 0xff, 4);
        spill(TMP, g, n);
        assert_int_equal(ebt_load_ex(TMP, &x, err, sizeof err), EBT_ERR_FORMAT);
        assert_non_null(strstr(err, "NaN"));
        free(g);
        cases++;
    }
    printf("  %d corrupted checkpoints rejected\n", cases);
    free(f);
    ebt_free(m);
    remove(TMP);
}

/* a failed save leaves the previous checkpoint loadable and unchanged */
static void test_failed_save(void **state)
{
    ebt_model *m = make(EBT_ARCH_EBT, 0, 0), *x = NULL;
    size_t n1, n2;
    char err[256];
    (void)state;
    assert_int_equal(ebt_save(m, TMP), EBT_OK);
    unsigned char *before = test_slurp(TMP, &n1);
    assert_non_null(before);
    /* non-finite parameters are refused */
    size_t cnt;
    ebt_real *w = ebt_param(m, "layers.1.ffn.w2.weight", &cnt), keep = w[3];
    w[3] = NAN;
    assert_int_equal(ebt_save_ex(m, TMP, err, sizeof err), EBT_ERR_NONFINITE);
    w[3] = keep;
    /* the rename target is a directory: the write fails after the temporary file is complete */
    char other[400];
    snprintf(other, sizeof other, "%s/dir.safetensors", tmpdir);
    assert_int_equal(mkdir(other, 0755), 0);
    assert_int_equal(ebt_save_ex(m, other, err, sizeof err), EBT_ERR_IO);
    assert_true(err[0] != 0);
    assert_int_equal(rmdir(other), 0);
    /* a missing directory */
    snprintf(other, sizeof other, "%s/no_such_dir/x.safetensors", tmpdir);
    assert_int_equal(ebt_save_ex(m, other, err, sizeof err), EBT_ERR_IO);
    unsigned char *after = test_slurp(TMP, &n2);
    assert_non_null(after);
    assert_int_equal(n1, n2);
    assert_memory_equal(before, after, n1);
    assert_int_equal(ebt_load(TMP, &x), EBT_OK);
    ebt_free(x);
    free(before); free(after);
    ebt_free(m);
    remove(TMP);
}

static int setup(void **state)
{
    const char *base = getenv("TMPDIR");
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "%s/ebt_ckpt.XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(tmppath, sizeof tmppath, "%s/m.safetensors", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_rmdir(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_ebt_step_tied),
        cmocka_unit_test(test_round_trip_ebt_plain),
        cmocka_unit_test(test_round_trip_transformer),
        cmocka_unit_test(test_pytorch_checkpoints),
        cmocka_unit_test(test_corrupted),
        cmocka_unit_test(test_failed_save),
    };
    return cmocka_run_group_tests_name("checkpoints", tests, setup, teardown);
}
