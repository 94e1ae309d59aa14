/* Reader of the reference vectors written by tests/ref/gen_ref.py and
 * gen_train_ref.py. Text files (.txt): records "<name> <count>" followed by
 * count numbers; '#' lines are comments. Binary files (.bin, the larger
 * S = 70 configurations): a first line "EBTREF-BIN 1", '#' comment lines,
 * then records "<name> <count>\n" each followed by count little-endian
 * IEEE-754 doubles (8 bytes each). */
#ifndef EBT_REF_VECTORS_H
#define EBT_REF_VECTORS_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char name[96]; size_t n; double *x; } ref_rec;
typedef struct { ref_rec *r; int nr; } ref_file;

static inline void ref_free(ref_file *f)
{
    for (int i = 0; i < f->nr; i++) free(f->r[i].x);
    free(f->r);
    f->r = NULL;
    f->nr = 0;
}

/* a new record in f (NULL if out of memory) */
static inline ref_rec *ref_add(ref_file *f, int *cap, const char *name, size_t n)
{
    if (f->nr == *cap) {
        int c = *cap ? 2 * *cap : 64;
        ref_rec *r = realloc(f->r, sizeof *r * (size_t)c);
        if (!r) return NULL;
        f->r = r;
        *cap = c;
    }
    ref_rec *r = &f->r[f->nr];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->n = n;
    r->x = malloc(sizeof(double) * (n ? n : 1));
    if (!r->x) return NULL;
    f->nr++;
    return r;
}

/* the binary records after the magic line; 0 on success */
static inline int ref_load_bin(FILE *fp, ref_file *f)
{
    char line[256], name[96];
    int cap = 0;
    size_t n;
    while (fgets(line, sizeof line, fp)) {
        if (line[0] == '#') { while (!strchr(line, '\n') && fgets(line, sizeof line, fp)) {} continue; }
        if (sscanf(line, "%95s %zu", name, &n) != 2 || n > ((size_t)1 << 28)) return -1;
        ref_rec *r = ref_add(f, &cap, name, n);
        if (!r) return -1;
        for (size_t i = 0; i < n; i++) {
            unsigned char b[8];
            uint64_t u = 0;
            if (fread(b, 1, 8, fp) != 8) return -1;
            for (int k = 7; k >= 0; k--) u = u << 8 | b[k];
            memcpy(&r->x[i], &u, sizeof u);
        }
    }
    return ferror(fp) ? -1 : 0;
}

/* 0 on success */
static inline int ref_load(const char *path, ref_file *f)
{
    FILE *fp = fopen(path, "rb");
    char line[256];
    int cap = 0;
    f->r = NULL;
    f->nr = 0;
    if (!fp) return -1;
    if (fgets(line, sizeof line, fp) && strcmp(line, "EBTREF-BIN 1\n") == 0) {
        if (ref_load_bin(fp, f) != 0) goto bad;
        fclose(fp);
        return 0;
    }
    rewind(fp);
    for (;;) {
        char name[96];
        size_t n;
        int c = fgetc(fp);
        if (c == EOF) break;
        if (c == '#') { if (!fgets(line, sizeof line, fp)) break; while (!strchr(line, '\n') && fgets(line, sizeof line, fp)) {} continue; }
        if (c == '\n' || c == ' ') continue;
        ungetc(c, fp);
        if (fscanf(fp, "%95s %zu", name, &n) != 2) goto bad;
        ref_rec *r = ref_add(f, &cap, name, n);
        if (!r) goto bad;
        for (size_t i = 0; i < n; i++)
            if (fscanf(fp, "%lf", &r->x[i]) != 1) goto bad;
    }
    fclose(fp);
    return 0;
bad:
    fclose(fp);
    ref_free(f);
    return -1;
}

static inline const ref_rec *ref_get(const ref_file *f, const char *name)
{
    for (int i = 0; i < f->nr; i++)
        if (strcmp(f->r[i].name, name) == 0) return &f->r[i];
    return NULL;
}
/* loads the vectors ref/<vectors> and the checkpoint ref/<ckpt>.safetensors
 * (both must load; needs cmocka and ebt.h) */
static inline ebt_model *ref_open(const char *vectors, const char *ckpt, ref_file *f)
{
    char path[256], err[256];
    ebt_model *m = NULL;
    snprintf(path, sizeof path, "ref/%s", vectors);
    assert_int_equal(ref_load(path, f), 0);
    snprintf(path, sizeof path, "ref/%s.safetensors", ckpt);
    ebt_status st = ebt_load_ex(path, &m, err, sizeof err);
    if (st != EBT_OK) printf("  load %s: %s\n", path, err);
    assert_int_equal(st, EBT_OK);
    return m;
}

/* the record, which must exist (and hold n values if n != 0); needs cmocka */
static inline const ref_rec *ref_need(const ref_file *f, const char *name, size_t n)
{
    const ref_rec *r = ref_get(f, name);
    if (!r) printf("  missing record %s\n", name);
    assert_non_null(r);
    if (n) assert_int_equal(r->n, n);
    return r;
}
#endif
