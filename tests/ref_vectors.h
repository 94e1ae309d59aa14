/* Reader of the reference vectors written by tests/ref/gen_ref.py:
 * records "<name> <count>" followed by count numbers; '#' lines are comments. */
#ifndef EBT_REF_VECTORS_H
#define EBT_REF_VECTORS_H
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

/* 0 on success */
static inline int ref_load(const char *path, ref_file *f)
{
    FILE *fp = fopen(path, "r");
    char line[256];
    int cap = 0;
    f->r = NULL;
    f->nr = 0;
    if (!fp) return -1;
    for (;;) {
        char name[96];
        size_t n;
        int c = fgetc(fp);
        if (c == EOF) break;
        if (c == '#') { if (!fgets(line, sizeof line, fp)) break; while (!strchr(line, '\n') && fgets(line, sizeof line, fp)) {} continue; }
        if (c == '\n' || c == ' ') continue;
        ungetc(c, fp);
        if (fscanf(fp, "%95s %zu", name, &n) != 2) goto bad;
        if (f->nr == cap) {
            cap = cap ? 2 * cap : 64;
            ref_rec *r = realloc(f->r, sizeof *r * (size_t)cap);
            if (!r) goto bad;
            f->r = r;
        }
        ref_rec *r = &f->r[f->nr];
        snprintf(r->name, sizeof r->name, "%s", name);
        r->n = n;
        r->x = malloc(sizeof(double) * (n ? n : 1));
        if (!r->x) goto bad;
        f->nr++;
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
