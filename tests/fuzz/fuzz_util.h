/* fuzz_util.h - helpers shared by the libFuzzer harnesses in tests/fuzz.
 *
 * The code under test reads files by path, so each input is written to one
 * scratch file per process: an anonymous in-memory file (memfd_create,
 * reached as /proc/self/fd/N), truncated and rewritten for every input.
 * Where memfd is unavailable, a file in a per-process directory under
 * /dev/shm (else $TMPDIR, else /tmp) is used instead. That directory also
 * holds files the harnesses write (fuzz_scratch_path); it is removed at
 * exit. Include after defining _GNU_SOURCE (for memfd_create). */
#ifndef EBT_FUZZ_UTIL_H
#define EBT_FUZZ_UTIL_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static int fuzz_fd = -1;
static char fuzz_in_path[PATH_MAX];   /* the input file */
static char fuzz_dir[PATH_MAX];       /* per-process scratch directory */
static char fuzz_scratch[PATH_MAX];   /* a scratch file in it */
static int fuzz_in_is_file;           /* 1: fuzz_in_path is a real file in fuzz_dir */

static void fuzz_die(const char *what)
{
    perror(what);
    abort();
}

static void fuzz_cleanup(void)
{
    if (!fuzz_dir[0]) return;
    unlink(fuzz_scratch);
    if (fuzz_in_is_file) unlink(fuzz_in_path);
    rmdir(fuzz_dir);
}

/* creates the input file and the scratch directory; call once */
static void fuzz_files_init(const char *name)
{
    const char *base = getenv("TMPDIR");
    if (access("/dev/shm", W_OK | X_OK) == 0) base = "/dev/shm";
    else if (!base || !*base) base = "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/%s.XXXXXX", base, name);
    if (!mkdtemp(fuzz_dir)) fuzz_die("mkdtemp");
    snprintf(fuzz_scratch, sizeof fuzz_scratch, "%s/scratch", fuzz_dir);
    atexit(fuzz_cleanup);
#ifdef MFD_CLOEXEC
    fuzz_fd = memfd_create(name, MFD_CLOEXEC);
#endif
    if (fuzz_fd >= 0) {
        snprintf(fuzz_in_path, sizeof fuzz_in_path, "/proc/self/fd/%d", fuzz_fd);
        if (access(fuzz_in_path, R_OK) != 0) { close(fuzz_fd); fuzz_fd = -1; }  /* no /proc */
    }
    if (fuzz_fd < 0) {
        snprintf(fuzz_in_path, sizeof fuzz_in_path, "%s/input", fuzz_dir);
        fuzz_fd = open(fuzz_in_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fuzz_fd < 0) fuzz_die("open input");
        fuzz_in_is_file = 1;
    }
}

/* makes the input file hold exactly data[size] */
static void fuzz_write_input(const uint8_t *data, size_t size)
{
    size_t done = 0;
    if (ftruncate(fuzz_fd, 0) != 0) fuzz_die("ftruncate");
    while (done < size) {
        ssize_t k = pwrite(fuzz_fd, data + done, size - done, (off_t)done);
        if (k <= 0) fuzz_die("pwrite");
        done += (size_t)k;
    }
}

#endif /* EBT_FUZZ_UTIL_H */
