/* A failed save never loses data. ebt_save writes a temporary file next to
 * the target, fsyncs it and renames it over the target, so whatever goes
 * wrong the file at the path is either the old checkpoint or the new one,
 * byte for byte, and loadable:
 *   (a) the directory is not writable: EBT_ERR_IO, old file unchanged;
 *   (b) the disk fills up (RLIMIT_FSIZE in a child, SIGXFSZ ignored) at
 *       many points of the write: EBT_ERR_IO, old file unchanged, no
 *       temporary file left; with the limit at the exact size it succeeds;
 *   (c) the saving process is SIGKILLed at 20 different moments while it
 *       keeps saving a ~3 MB model over the path: the file is always one
 *       of the two complete versions. A kill can leave the temporary file
 *       "<path>.tmp.<pid>.<k>" behind (nothing can remove it); that is the
 *       only debris allowed, and it is counted and reported;
 *   (d) the target is a read-only file (replaced, like mv, or refused with
 *       the old file intact) or a directory (EBT_ERR_IO, left as it was).
 * Missing directories and non-finite parameters are covered by test_ckpt. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "../ebt.h"
#include "test_util.h"

static char dir[64];

/* 1 if the file at path has exactly the n bytes of want */
static int file_is(const char *path, const unsigned char *want, size_t n)
{
    size_t got_n = 0;
    unsigned char *got = test_slurp(path, &got_n);
    int same = got && got_n == n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

static int loadable(const char *path)
{
    ebt_model *m = NULL;
    char err[256];
    ebt_status st = ebt_load_ex(path, &m, err, sizeof err);
    if (st != EBT_OK) printf("  %s does not load: %s\n", path, err);
    ebt_free(m);
    return st == EBT_OK;
}

/* entries of d other than "." and ".."; the name of the last one not
 * equal to keep (or "") goes to other */
static int entries(const char *d, const char *keep, char *other, size_t cap)
{
    DIR *h = opendir(d);
    struct dirent *e;
    int n = 0;
    if (other) other[0] = 0;
    if (!h) return -1;
    while ((e = readdir(h))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        n++;
        if (other && (!keep || strcmp(e->d_name, keep))) snprintf(other, cap, "%s", e->d_name);
    }
    closedir(h);
    return n;
}

static ebt_model *make(int big, uint64_t seed)
{
    ebt_config c = ebt_config_default();
    ebt_model *m = NULL;
    if (big) {   /* ~720k parameters: a 2.9 MB file */
        c.vocab_size = 256; c.d_model = 128; c.n_heads = 4; c.d_ff = 256; c.n_layers = 4; c.max_seq_len = 16;
    } else {
        c.vocab_size = 17; c.d_model = 16; c.n_heads = 2; c.d_ff = 24; c.n_layers = 2; c.max_seq_len = 8;
    }
    assert_int_equal(ebt_create(&c, seed, &m), EBT_OK);
    if (!big) {   /* with optimiser state and a replay buffer, as a real checkpoint has */
        ebt_train_opts o = ebt_train_default();
        int32_t tok[8], tgt[8];
        o.replay_capacity = 4; o.replay_frac = 0.5; o.seed = seed;
        for (int i = 0; i < 8; i++) { tok[i] = (int32_t)((seed + 3 * i) % 17); tgt[i] = (int32_t)((seed + 5 * i) % 17); }
        assert_int_equal(ebt_train_step(m, &o, tok, tgt, 2, 4, NULL, NULL), EBT_OK);
    }
    return m;
}

/* path <- the bytes of m (un-failed save), returned */
static unsigned char *put(const ebt_model *m, const char *path, size_t *n)
{
    unsigned char *b;
    assert_int_equal(ebt_save(m, path), EBT_OK);
    assert_non_null(b = test_slurp(path, n));
    return b;
}

/* runs ebt_save(m, path) in a child (uid nobody if drop and we are root;
 * file size limit fsize if >= 0) and returns its status (-1: child died) */
static int save_in_child(const ebt_model *m, const char *path, int drop, long fsize)
{
    pid_t pid = fork();
    int ws;
    assert_true(pid >= 0);
    if (pid == 0) {
        if (drop && geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(100);
        if (fsize >= 0) {
            struct rlimit rl;
            signal(SIGXFSZ, SIG_IGN);
            getrlimit(RLIMIT_FSIZE, &rl);
            rl.rlim_cur = (rlim_t)fsize;
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(101);
        }
        _exit((int)ebt_save(m, path));
    }
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (!WIFEXITED(ws)) return -1;
    if (WEXITSTATUS(ws) == 100 || WEXITSTATUS(ws) == 101) { printf("  child setup failed (%d)\n", WEXITSTATUS(ws)); fail(); }
    return WEXITSTATUS(ws);
}

/* (a) */
static void test_unwritable_dir(void **state)
{
    char sub[128], path[160], other[256];
    ebt_model *old = make(0, 1), *neu = make(0, 2);
    unsigned char *ob;
    size_t on;
    int st;
    (void)state;
    snprintf(sub, sizeof sub, "%s/ro", dir);
    snprintf(path, sizeof path, "%s/m.safetensors", sub);
    assert_int_equal(mkdir(sub, 0755), 0);
    ob = put(old, path, &on);
    assert_int_equal(chmod(sub, 0555), 0);
    assert_int_equal(chmod(dir, 0755), 0);   /* a dropped-privilege child must reach sub */
    st = save_in_child(neu, path, 1, -1);
    printf("  read-only directory%s: %s\n", geteuid() == 0 ? " (saved as uid 65534)" : "", st < 0 ? "child died" : ebt_status_str((ebt_status)st));
    assert_int_equal(st, EBT_ERR_IO);
    assert_true(file_is(path, ob, on));
    assert_true(loadable(path));
    assert_int_equal(entries(sub, "m.safetensors", other, sizeof other), 1);
    /* the same save with the directory writable again succeeds (the test can tell) */
    assert_int_equal(chmod(sub, 0755), 0);
    assert_int_equal(save_in_child(neu, path, 0, -1), EBT_OK);
    assert_false(file_is(path, ob, on));
    assert_true(loadable(path));
    remove(path);
    rmdir(sub);
    free(ob);
    ebt_free(old); ebt_free(neu);
}

/* (b) */
static void test_disk_full(void **state)
{
    char path[160], other[256], probe[160];
    ebt_model *old = make(0, 3), *neu = make(0, 4);
    unsigned char *ob, *nb;
    size_t on, nn;
    long limits[16];
    int nl = 0;
    (void)state;
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    snprintf(probe, sizeof probe, "%s/probe.safetensors", dir);
    nb = put(neu, probe, &nn);   /* the size of the new file */
    remove(probe);
    ob = put(old, path, &on);
    assert_true(nn > 8192);
    limits[nl++] = 0; limits[nl++] = 1; limits[nl++] = 8; limits[nl++] = 100; limits[nl++] = 4095;
    limits[nl++] = 4096; limits[nl++] = 4097; limits[nl++] = (long)nn / 3; limits[nl++] = (long)nn / 2;
    limits[nl++] = (long)nn - 4096; limits[nl++] = (long)nn - 8; limits[nl++] = (long)nn - 1;
    for (int i = 0; i < nl; i++) {
        int st = save_in_child(neu, path, 0, limits[i]);
        if (st != EBT_ERR_IO) printf("  file size limit %ld of %zu: %s\n", limits[i], nn, st < 0 ? "child died" : ebt_status_str((ebt_status)st));
        assert_int_equal(st, EBT_ERR_IO);
        assert_true(file_is(path, ob, on));
        assert_true(loadable(path));
        if (entries(dir, "m.safetensors", other, sizeof other) != 1) printf("  left behind: %s\n", other);
        assert_int_equal(entries(dir, "m.safetensors", other, sizeof other), 1);
    }
    /* exactly enough room: the save succeeds and the file is the new one */
    assert_int_equal(save_in_child(neu, path, 0, (long)nn), EBT_OK);
    assert_true(file_is(path, nb, nn));
    assert_int_equal(entries(dir, NULL, NULL, 0), 1);
    printf("  %d disk-full points (file size limits 0..%zu) each refused with the old file intact\n", nl, nn - 1);
    remove(path);
    free(ob); free(nb);
    ebt_free(old); ebt_free(neu);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* (c) */
static void test_killed_mid_write(void **state)
{
    enum { KILLS = 20 };
    char path[160], other[256], tmpname[400];
    ebt_model *a = make(1, 5), *b = make(1, 6);
    unsigned char *ab, *bb;
    size_t an, bn;
    double t0, t_save = 1e9;
    int saw_a = 0, saw_b = 0, debris = 0;
    (void)state;
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    bb = put(b, path, &bn);
    for (int i = 0; i < 3; i++) {   /* how long one save takes here */
        t0 = now();
        free(put(a, path, &an));
        if (now() - t0 < t_save) t_save = now() - t0;
    }
    ab = put(a, path, &an);
    assert_true(an > 2000000 && an == bn && memcmp(ab, bb, an) != 0);
    for (int k = 0; k < KILLS; k++) {
        /* kill after 0 .. 3 saves' time, spread over the phases of a save */
        double delay = t_save * 3.0 * k / (KILLS - 1);
        struct timespec d;
        pid_t pid;
        int ws, n;
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (long i = 0;; i++)   /* the file starts as a; save b, a, b, ... */
                if (ebt_save(i % 2 ? a : b, path) != EBT_OK) _exit(3);
        }
        d.tv_sec = (time_t)delay;
        d.tv_nsec = (long)((delay - (double)d.tv_sec) * 1e9);
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &ws, 0), pid);
        assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);   /* the saves themselves never failed */
        if (file_is(path, ab, an)) saw_a++;
        else if (file_is(path, bb, bn)) saw_b++;
        else { printf("  kill %d after %.1f ms: the file is neither version\n", k, delay * 1e3); fail(); }
        assert_true(loadable(path));
        /* debris: only the killed child's temporary file */
        n = entries(dir, "m.safetensors", other, sizeof other);
        assert_true(n == 1 || n == 2);
        if (n == 2) {
            snprintf(tmpname, sizeof tmpname, "m.safetensors.tmp.%ld.", (long)pid);
            if (strncmp(other, tmpname, strlen(tmpname)) != 0) printf("  unexpected entry %s\n", other);
            assert_true(strncmp(other, tmpname, strlen(tmpname)) == 0);
            snprintf(tmpname, sizeof tmpname, "%s/%s", dir, other);
            assert_int_equal(remove(tmpname), 0);
            debris++;
        }
    }
    printf("  %d kills (after 0..%.0f ms; one save takes %.1f ms): file complete every time (%d x old/a, %d x b), "
           "%d stale temporary files left by a kill\n", KILLS, t_save * 3e3, t_save * 1e3, saw_a, saw_b, debris);
    assert_int_equal(saw_a + saw_b, KILLS);
    remove(path);
    free(ab); free(bb);
    ebt_free(a); ebt_free(b);
}

/* (d) */
static void test_readonly_file_and_directory(void **state)
{
    char path[160], other[256], inner[200];
    ebt_model *old = make(0, 7), *neu = make(0, 8);
    unsigned char *ob, *nb;
    size_t on, nn;
    int st;
    struct stat sb;
    (void)state;
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    nb = put(neu, path, &nn);
    ob = put(old, path, &on);
    assert_int_equal(chmod(path, 0444), 0);
    st = (int)ebt_save(neu, path);
    /* the directory is writable: rename replaces the file (as mv does), or
     * the library refuses; either way nothing is lost or half-written */
    printf("  read-only target file: %s\n", st == EBT_OK ? "replaced by the new checkpoint" : ebt_status_str((ebt_status)st));
    assert_true(st == EBT_OK || st == EBT_ERR_IO);
    assert_true(st == EBT_OK ? file_is(path, nb, nn) : file_is(path, ob, on));
    assert_true(loadable(path));
    assert_int_equal(entries(dir, "m.safetensors", other, sizeof other), 1);
    remove(path);
    /* the target is a directory (with something in it) */
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(inner, sizeof inner, "%s/keep", path);
    free(put(old, inner, &on));
    assert_int_equal(ebt_save(neu, path), EBT_ERR_IO);
    assert_true(stat(path, &sb) == 0 && S_ISDIR(sb.st_mode));
    assert_int_equal(entries(path, NULL, NULL, 0), 1);
    assert_true(loadable(inner));
    assert_int_equal(entries(dir, "m.safetensors", other, sizeof other), 1);   /* no temporary file */
    remove(inner);
    rmdir(path);
    free(ob); free(nb);
    ebt_free(old); ebt_free(neu);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/ebt_savefail.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(dir) == 0 ? 0 : (printf("  %s not empty\n", dir), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unwritable_dir),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_killed_mid_write),
        cmocka_unit_test(test_readonly_file_and_directory),
    };
    return cmocka_run_group_tests_name("failed saves never lose data", tests, setup, teardown);
}
