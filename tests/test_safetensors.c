/* The safetensors reader and writer inside ebt.c: round trips (bit-exact,
 * including NaN, -0, inf, denormals), 79 hostile headers each rejected with
 * EBT_ERR_FORMAT and a message, and write failures that leave the old file.
 * libFuzzer harness (same file, see `make fuzz`):
 *   clang -std=c99 -DEBT_ST_FUZZ -g -fsanitize=fuzzer,address,undefined tests/test_safetensors.c -lopenblas -lm */
#include "../ebt.c"
#include "test_util.h"
#include <float.h>
#include <math.h>
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#ifdef EBT_ST_FUZZ
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ebt__st_header h;
    char err[256];
    FILE *f;
    int i;
    (void)ebt__st_write;  /* not fuzzed here (fsync per input is too slow) */
    if (!size || !(f = fmemopen((void *)data, size, "rb"))) return 0;
    err[0] = 0;
    if (ebt__st_read_header(f, size, &h, err, sizeof err) == EBT_OK) {
        for (i = 0; i < h.nt; i++) {
            const ebt__st_tensor *t = &h.t[i];
            size_t cnt = (size_t)((t->end - t->begin) / 4), k;
            ebt_real *dst;
            if (t->end > h.data_len || t->begin > t->end || ebt__st_find(&h, t->name) != t) abort();
            dst = (ebt_real *)malloc(cnt ? cnt * sizeof *dst : 1);
            if (ebt__st_read_tensor(f, &h, t, dst, cnt, err, sizeof err) != EBT_OK) abort();
            for (k = 0; k < cnt; k++) (void)dst[k];
            free(dst);
        }
        for (i = 0; i < h.nmeta; i++) if (ebt__st_meta_get(&h, h.meta[i].key) != h.meta[i].val) abort();
        ebt__st_header_free(&h);
    } else if (!err[0]) abort();  /* every failure must say why */
    fclose(f);
    return 0;
}
#else

static int fails, checks;
#define CHECK(c) do { checks++; if (!(c)) { fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); fails++; } } while (0)

/* parses raw bytes as a file of claimed size `claimed` */
static ebt_status parse_raw(const unsigned char *buf, size_t n, uint64_t claimed, char *err, size_t errlen, ebt__st_header *out)
{
    ebt__st_header h;
    ebt_status st;
    static const unsigned char one[1] = { 0 };
    FILE *f = fmemopen((void *)(n ? buf : one), n ? n : 1, "rb");
    if (!f) { perror("fmemopen"); exit(2); }
    err[0] = 0;
    st = ebt__st_read_header(f, claimed, &h, err, errlen);
    fclose(f);
    if (st != EBT_OK) { CHECK(h.t == NULL && h.meta == NULL && h.nt == 0); }
    if (out) *out = h; else if (st == EBT_OK) ebt__st_header_free(&h);
    return st;
}
/* builds 8-byte length + json + dlen zero bytes */
static ebt_status parse_json(const char *json, size_t jlen, size_t dlen, char *err, size_t errlen, ebt__st_header *out)
{
    size_t n = 8 + jlen + dlen, k;
    unsigned char *buf = (unsigned char *)calloc(1, n);
    ebt_status st;
    for (k = 0; k < 8; k++) buf[k] = (unsigned char)((uint64_t)jlen >> (8 * k));
    memcpy(buf + 8, json, jlen);
    st = parse_raw(buf, n, n, err, errlen, out);
    free(buf);
    return st;
}
static void expect_format(const char *json, size_t dlen, const char *what)
{
    char err[256];
    ebt_status st = parse_json(json, strlen(json), dlen, err, sizeof err, NULL);
    if (st != EBT_ERR_FORMAT || !err[0]) {
        fprintf(stderr, "FAIL: %s: not rejected (status %d) json=%.120s\n", what, (int)st, json);
        fails++;
    }
    checks++;
    if (getenv("VERBOSE")) printf("  %-28s -> %s\n", what, err);
}
static void expect_ok(const char *json, size_t dlen, const char *what)
{
    char err[256];
    ebt_status st = parse_json(json, strlen(json), dlen, err, sizeof err, NULL);
    if (st != EBT_OK) { fprintf(stderr, "FAIL: %s: rejected: %s\n", what, err); fails++; }
    checks++;
}

#define T1 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
static const struct { const char *json; size_t dlen; const char *what; } bad[] = {
    { "{\"a\":", 64, "unterminated object" },
    { "{\"a\" 1}", 64, "missing colon" },
    { "{'a':1}", 64, "single quotes" },
    { "{\"a\":{\"dtype\":\"F32\",}}", 64, "trailing comma (object)" },
    { "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}", 64, "trailing comma (array)" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":[1,]}}", 64, "trailing comma (skipped)" },
    { "{,}", 64, "lone comma" },
    { "{\"a", 64, "unterminated string" },
    { "{\"a\\x\":1}", 64, "bad escape" },
    { "{\"a\\u12\":1}", 64, "short \\u" },
    { "{\"a\\u12g4\":1}", 64, "bad hex" },
    { "{\"a\\ud800\":1}", 64, "lone high surrogate" },
    { "{\"a\\udc00\":1}", 64, "lone low surrogate" },
    { "{\"a\\ud800\\u0041\":1}", 64, "bad surrogate pair" },
    { "{\"a\\u0000\":{}}", 64, "\\u0000 in key" },
    { "{\"a\tb\":{}}", 64, "raw control char" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":01}}", 64, "leading zero" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":1.}}", 64, "bad fraction" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":1e}}", 64, "bad exponent" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":-}}", 64, "bare minus" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":+1}}", 64, "plus sign" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":tru}}", 64, "bad literal" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":NaN}}", 64, "NaN literal" },
    { "[1]", 64, "top-level array" },
    { "\"x\"", 64, "top-level string" },
    { "1", 64, "top-level number" },
    { "", 64, "empty (N=0 via json)" },
    { "   ", 64, "whitespace only" },
    { "{} x", 64, "trailing garbage" },
    { "{}{}", 64, "two objects" },
    { "{\"a\":1}", 64, "entry not object" },
    { "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 64, "wrong dtype" },
    { "{\"a\":{\"dtype\":\"F32x\",\"shape\":[2],\"data_offsets\":[0,8]}}", 64, "dtype prefix" },
    { "{\"a\":{\"dtype\":\"F32\\u0000\",\"shape\":[2],\"data_offsets\":[0,8]}}", 64, "dtype with NUL" },
    { "{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 64, "dtype not string" },
    { "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 64, "missing dtype" },
    { "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 64, "missing shape" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 64, "missing data_offsets" },
    { "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 64, "duplicate dtype" },
    { "{" T1 "," T1 "}", 64, "duplicate tensor" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 64, "overlapping offsets" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 64, "contained range" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[60,68]}}", 64, "offsets past end" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[65,65]}}", 64, "empty tensor past end" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 64, "begin > end" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 64, "shape/size mismatch" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 64, "offsets one entry" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 64, "offsets three entries" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551616]}}", 64, "offset > 2^64" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-0,8]}}", 64, "offset -0" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\"0,8\"}}", 64, "offsets not array" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 64, "negative shape" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 64, "fractional shape" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", 64, "exponent shape" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 64, "leading-zero shape" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 64, "string shape" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 64, "shape not array" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483649],\"data_offsets\":[0,8]}}", 64, "shape > 2^31" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 64, "five dims" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648,2147483648,2147483648],\"data_offsets\":[0,0]}}", 64, "product overflow" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648,4],\"data_offsets\":[0,0]}}", 64, "bytes overflow (4*2^64)" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1073741824,1073741824,4],\"data_offsets\":[0,0]}}", 64, "bytes == 2^64 wraps to 0" },
    { "{\"__metadata__\":{\"k\":1}}", 64, "metadata non-string" },
    { "{\"__metadata__\":{\"k\":null}}", 64, "metadata null value" },
    { "{\"__metadata__\":[\"k\"]}", 64, "metadata not object" },
    { "{\"__metadata__\":{},\"__metadata__\":{}}", 64, "duplicate __metadata__" },
    { "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 64, "duplicate metadata key" },
    { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":{\"x\":1,}}}", 64, "bad JSON in ignored field" },
};

static void hostile(void)
{
    char err[256], *s;
    unsigned char raw[64];
    size_t k, n;
    ebt__st_header h;
    for (k = 0; k < sizeof bad / sizeof bad[0]; k++) expect_format(bad[k].json, bad[k].dlen, bad[k].what);

    /* raw-length cases */
    memset(raw, 0, sizeof raw);
    CHECK(parse_raw(raw, 5, 5, err, sizeof err, NULL) == EBT_ERR_FORMAT && err[0]);     /* < 8 bytes */
    CHECK(parse_raw(raw, 0, 0, err, sizeof err, NULL) == EBT_ERR_FORMAT && err[0]);     /* empty */
    CHECK(parse_raw(raw, 8, 8, err, sizeof err, NULL) == EBT_ERR_FORMAT && err[0]);     /* N = 0 */
    raw[0] = 100;                                                                       /* N = 100 > 64-8 */
    CHECK(parse_raw(raw, 64, 64, err, sizeof err, NULL) == EBT_ERR_FORMAT && err[0]);
    raw[0] = 0; raw[3] = 0x05;                                                          /* N = 80 MiB, file "claims" 200 MiB */
    CHECK(parse_raw(raw, 64, 200u << 20, err, sizeof err, NULL) == EBT_ERR_FORMAT && err[0]);
    memset(raw, 0xFF, 8);                                                               /* N = 2^64-1 */
    CHECK(parse_raw(raw, 64, 64, err, sizeof err, NULL) == EBT_ERR_FORMAT && err[0]);
    memset(raw, 0, sizeof raw); raw[0] = 40;                                            /* header truncated: claimed size lies */
    memcpy(raw + 8, "{}", 2);
    CHECK(parse_raw(raw, 20, 64, err, sizeof err, NULL) == EBT_ERR_FORMAT && err[0]);
    CHECK(parse_json("{}\0  ", 5, 0, err, sizeof err, NULL) == EBT_ERR_FORMAT && err[0]);  /* NUL inside header */
    CHECK(parse_json("{\"__metadata__\":{\"k\":\"\0\"}}", 24, 0, err, sizeof err, NULL) == EBT_ERR_FORMAT);

    /* deep nesting: 100 000 '[' must not blow the stack */
    n = 100000;
    s = (char *)malloc(n + 128);
    strcpy(s, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":");
    k = strlen(s);
    memset(s + k, '[', n); s[k + n] = 0;
    expect_format(s, 64, "deeply nested arrays");
    strcpy(s, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":");
    for (k = strlen(s); k + 5 < n; k += 5) memcpy(s + k, "{\"a\":", 5);
    s[k] = 0;
    expect_format(s, 64, "deeply nested objects");
    /* moderate nesting in an ignored field is fine */
    strcpy(s, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"u\":");
    k = strlen(s);
    memset(s + k, '[', 20); memset(s + k + 20, ']', 20); strcpy(s + k + 40, "}}");
    expect_ok(s, 64, "depth 20 in ignored field");

    /* name / key / value length limits (95 ok, 96 too long) */
    sprintf(s, "{\"%095d\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 0);
    expect_ok(s, 64, "95-byte name");
    sprintf(s, "{\"%096d\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 0);
    expect_format(s, 64, "96-byte name");
    sprintf(s, "{\"__metadata__\":{\"%096d\":\"v\"}}", 0);
    expect_format(s, 64, "96-byte metadata key");
    sprintf(s, "{\"__metadata__\":{\"k\":\"%096d\"}}", 0);
    expect_format(s, 64, "96-byte metadata value");
    sprintf(s, "{\"__metadata__\":{\"k\":\"%093d\\u00e9\"}}", 0);  /* 93 + 2 UTF-8 bytes = 95: ok */
    expect_ok(s, 64, "95-byte value with \\u00e9");
    sprintf(s, "{\"__metadata__\":{\"k\":\"%094d\\u00e9\"}}", 0);  /* 96: too long */
    expect_format(s, 64, "96-byte value with \\u00e9");
    free(s);

    /* too many tensors: 65537 zero-size entries (also exercises the O(n log n) duplicate check) */
    {
        size_t cap = 70000 * 64, len = 1, i;
        char *big = (char *)malloc(cap);
        big[0] = '{';
        for (i = 0; i < 65536; i++)
            len += (size_t)sprintf(big + len, "%s\"t%zu\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}", i ? "," : "", i);
        strcpy(big + len, "}");
        CHECK(parse_json(big, len + 1, 0, err, sizeof err, &h) == EBT_OK && h.nt == 65536);
        if (h.nt) { CHECK(ebt__st_find(&h, "t65535") == &h.t[65535]); ebt__st_header_free(&h); }
        sprintf(big + len, ",\"t65536\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}");
        expect_format(big, 0, "65537 tensors");
        sprintf(big + len, ",\"t7\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}");
        memcpy(big + 1, "\"t7\":", 5);  /* rename t0 -> t7 (same length): duplicate among 65536 */
        big[len] = '}'; big[len + 1] = 0;
        expect_format(big, 0, "duplicate among 65536");
        free(big);
    }
}

static void good_headers(void)
{
    char err[256];
    ebt__st_header h;
    static const char *js = "{\"b\":{\"data_offsets\":[16,24],\"shape\":[1,2],\"dtype\":\"F32\",\"x\":{\"y\":[true,false,null,-1.5e+3,\"s\",0,-0.0,1E-2]}},"
        "\"z1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
        "\"z2\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648,2147483648,0],\"data_offsets\":[4,4]},"
        "\"a\\u0062\\/\":{\"dtype\":\"F\\u0033\\u0032\",\"shape\":[],\"data_offsets\":[0,4]},"
        "\"__metadata__\":{\"k\":\"\\ud83d\\ude00\\\"\\\\\\n\"}}";
    expect_ok("{}", 0, "empty object");
    expect_ok("  {}  \n\t\r", 0, "surrounding whitespace");
    expect_ok("{\"__metadata__\":{}}", 0, "empty metadata");
    /* gaps, zero-size tensors sharing an offset, unknown fields, a zero dim beside huge dims */
    CHECK(parse_json(js, strlen(js), 32, err, sizeof err, &h) == EBT_OK);
    if (h.nt == 4) {
        const ebt__st_tensor *t = ebt__st_find(&h, "ab/");
        CHECK(t && t->ndim == 0 && t->begin == 0 && t->end == 4);
        t = ebt__st_find(&h, "b");
        CHECK(t && t->ndim == 2 && t->shape[0] == 1 && t->shape[1] == 2 && t->begin == 16 && t->end == 24);
        CHECK(h.data_start == 8 + strlen(js) && h.data_len == 32);
        CHECK(ebt__st_meta_get(&h, "k") && !strcmp(ebt__st_meta_get(&h, "k"), "\xF0\x9F\x98\x80\"\\\n"));
        CHECK(ebt__st_meta_get(&h, "nope") == NULL && ebt__st_find(&h, "nope") == NULL);
        ebt__st_header_free(&h);
    } else fprintf(stderr, "good header: %s\n", err), fails++;
}

static void roundtrip(const char *dir)
{
    char path[512], err[256];
    ebt_real a[12], b[1], c[8];
    const ebt_real *srcs[3] = { a, b, c };
    float special[8];
    const char *meta[] = { "format", "ebt", "version", "1", "weird", "q\"b\\n\nt\tc\x01 \xC3\xA9/" };
    ebt__st_out t[3];
    ebt__st_header h;
    unsigned char *fb;
    size_t fn;
    FILE *f;
    int i, k;
    special[0] = NAN; special[1] = -0.0f; special[2] = INFINITY; special[3] = -INFINITY;
    special[4] = FLT_MIN / 8; special[5] = FLT_MAX; special[6] = -FLT_MIN; special[7] = 1.0f / 3.0f;
    for (i = 0; i < 12; i++) a[i] = (ebt_real)(float)(i * 0.1 - 0.55);  /* float-representable even if ebt_real is double */
    b[0] = (ebt_real)500;
    for (i = 0; i < 8; i++) c[i] = (ebt_real)special[i];
    memset(t, 0, sizeof t);
    t[0].name = "tok_embed.weight"; t[0].ndim = 2; t[0].shape[0] = 3; t[0].shape[1] = 4; t[0].data = a;
    t[1].name = "alpha"; t[1].ndim = 1; t[1].shape[0] = 1; t[1].data = b;
    t[2].name = "x\"y\\z"; t[2].ndim = 3; t[2].shape[0] = 2; t[2].shape[1] = 2; t[2].shape[2] = 2; t[2].data = c;
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    CHECK(ebt__st_write(path, meta, 3, t, 3, err, sizeof err) == EBT_OK);
    CHECK(test_count_entries(dir) == 1);

    CHECK((fb = test_slurp(path, &fn)) != NULL);
    {
        uint64_t n = 0;
        for (k = 8; k-- > 0;) n = n << 8 | fb[k];
        CHECK(n % 8 == 0 && fb[8] == '{' && fn == 8 + n + 4 * (12 + 1 + 8));
        if (getenv("VERBOSE")) printf("  header: %.*s\n", (int)n, (const char *)fb + 8);
        free(fb);
    }
    f = fopen(path, "rb");
    CHECK(ebt__st_read_header(f, (uint64_t)fn, &h, err, sizeof err) == EBT_OK);
    CHECK(h.nt == 3 && h.nmeta == 3 && h.data_start % 8 == 0);
    for (i = 0; i < 3 && h.nt == 3; i++) {
        const ebt__st_tensor *r = ebt__st_find(&h, t[i].name);
        ebt_real got[12];
        size_t cnt = 1;
        CHECK(r == &h.t[i] && r->ndim == t[i].ndim);
        if (!r) continue;
        for (k = 0; k < r->ndim; k++) { CHECK(r->shape[k] == t[i].shape[k]); cnt *= (size_t)r->shape[k]; }
        CHECK(ebt__st_read_tensor(f, &h, r, got, cnt, err, sizeof err) == EBT_OK);
        CHECK(memcmp(got, srcs[i], cnt * sizeof(ebt_real)) == 0);  /* bit-exact (incl. NaN, -0, denormal) */
        CHECK(ebt__st_read_tensor(f, &h, r, got, cnt - 1, err, sizeof err) == EBT_ERR_FORMAT && err[0]);
    }
    for (i = 0; i < 3; i++) CHECK(ebt__st_meta_get(&h, meta[2 * i]) && !strcmp(ebt__st_meta_get(&h, meta[2 * i]), meta[2 * i + 1]));
    CHECK(h.t[0].begin == 0 && h.t[1].begin == 48 && h.t[2].begin == 52 && h.t[2].end == 84);  /* contiguous, in order */
    ebt__st_header_free(&h);
    /* claimed size larger than the real file: header fine, last tensor truncated */
    {
        ebt_real got[8];
        fclose(f);
        f = fopen(path, "rb");
        CHECK(ebt__st_read_header(f, (uint64_t)fn + 4, &h, err, sizeof err) == EBT_OK);
        h.t[2].begin += 4; h.t[2].end += 4;  /* shift into the missing bytes */
        CHECK(ebt__st_read_tensor(f, &h, &h.t[2], got, 8, err, sizeof err) == EBT_ERR_FORMAT && err[0]);
        h.t[2].shape[1] = -2;
        CHECK(ebt__st_read_tensor(f, &h, &h.t[2], got, 8, err, sizeof err) == EBT_ERR_FORMAT);
        ebt__st_header_free(&h);
    }
    fclose(f);

    /* empty file: no tensors, no metadata */
    CHECK(ebt__st_write(path, NULL, 0, NULL, 0, err, sizeof err) == EBT_OK);
    CHECK((fb = test_slurp(path, &fn)) != NULL && fn == 16 && !memcmp(fb + 8, "{}      ", 8));
    free(fb);
}

static void write_failures(const char *dir)
{
    char path[512], sub[512], err[256];
    static ebt_real big[100000];
    ebt__st_out t[2];
    unsigned char *old, *now;
    size_t on, nn;
    struct rlimit rl, lim;
    const char *dupmeta[] = { "k", "a", "k", "b" };

    memset(t, 0, sizeof t);
    t[0].name = "w"; t[0].ndim = 1; t[0].shape[0] = 4; t[0].data = big;
    /* non-existent directory */
    err[0] = 0;
    CHECK(ebt__st_write("/nonexistent-dir-ebt/x.safetensors", NULL, 0, t, 1, err, sizeof err) == EBT_ERR_IO && err[0]);
    if (getenv("VERBOSE")) printf("  nodir: %s\n", err);

    /* old file survives a write that fails midway (RLIMIT_FSIZE -> EFBIG) */
    snprintf(path, sizeof path, "%s/old.safetensors", dir);
    CHECK(ebt__st_write(path, NULL, 0, t, 1, err, sizeof err) == EBT_OK);
    CHECK((old = test_slurp(path, &on)) != NULL);
    t[0].shape[0] = 100000;
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &rl);
    lim = rl; lim.rlim_cur = 65536;
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    err[0] = 0;
    CHECK(ebt__st_write(path, NULL, 0, t, 1, err, sizeof err) == EBT_ERR_IO && err[0]);
    setrlimit(RLIMIT_FSIZE, &rl);
    if (getenv("VERBOSE")) printf("  fsize: %s\n", err);
    CHECK((now = test_slurp(path, &nn)) != NULL && nn == on && !memcmp(old, now, on));
    free(old); free(now);

    /* rename failure: target is a directory -> error, directory untouched, temp file removed */
    snprintf(sub, sizeof sub, "%s/adir", dir);
    CHECK(mkdir(sub, 0755) == 0);
    CHECK(ebt__st_write(sub, NULL, 0, t, 1, err, sizeof err) == EBT_ERR_IO && err[0]);
    CHECK(test_count_entries(sub) == 0);
    rmdir(sub);
    CHECK(test_count_entries(dir) == 2);  /* m.safetensors, old.safetensors: no leftover temp files */

    /* argument errors: would produce files our reader rejects */
    t[0].shape[0] = 4;
    t[1] = t[0];
    CHECK(ebt__st_write(path, NULL, 0, t, 2, err, sizeof err) == EBT_ERR_ARG && err[0]);   /* duplicate name */
    t[1].name = "__metadata__";
    CHECK(ebt__st_write(path, NULL, 0, t, 2, err, sizeof err) == EBT_ERR_ARG);
    t[1].name = "v"; t[1].ndim = 5;
    CHECK(ebt__st_write(path, NULL, 0, t, 2, err, sizeof err) == EBT_ERR_ARG);
    t[1].ndim = 1; t[1].shape[0] = -1;
    CHECK(ebt__st_write(path, NULL, 0, t, 2, err, sizeof err) == EBT_ERR_ARG);
    t[1].shape[0] = 3; t[1].data = NULL;
    CHECK(ebt__st_write(path, NULL, 0, t, 2, err, sizeof err) == EBT_ERR_ARG);
    t[1].shape[0] = 0;  /* empty tensor needs no data */
    CHECK(ebt__st_write(path, dupmeta, 2, t, 2, err, sizeof err) == EBT_ERR_ARG);
    CHECK(ebt__st_write(path, dupmeta, 1, t, 2, err, sizeof err) == EBT_OK);
    CHECK(ebt__st_write(NULL, NULL, 0, t, 1, err, sizeof err) == EBT_ERR_ARG);
    CHECK(ebt__st_write(path, NULL, -1, t, 1, NULL, 0) == EBT_ERR_ARG);
    CHECK(test_count_entries(dir) == 2);
}

int main(void)
{
    char dir[] = "/tmp/st_part_test.XXXXXX", cmd[600];
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 2; }
    hostile();
    good_headers();
    roundtrip(dir);
    write_failures(dir);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    printf("%d passed, %d failed\n", checks - fails, fails);
    return fails != 0;
}
#endif
