/* lm_mpi.h - `ebt_lm train` on several processes: the communication
   interface of examples/ebt_lm.c (section "processes") implemented with
   MPI. Built only by `make mpi` (mpicc -DEBT_LM_MPI examples/ebt_lm.c ...,
   the binary build/ebt_lm_mpi), which includes this file in place of the
   one-process implementation; the plain build needs no MPI.

   lm_comm_sum(c, buf, n, ctl, nctl, wait, ctx) is an allreduce in a fixed
   order, made of point-to-point messages:
   - reduce-scatter: rank r owns part r of N nearly equal parts of buf;
     every rank sends part q to rank q, and the owner adds the N copies in
     rank order 0, 1, ..., N-1 (in double, rounded once). An element's sum
     is therefore the same bits in every run, on every rank, whatever the
     timing (MPI_Allreduce leaves its order to the implementation);
   - allgather: every owner sends its summed part to every rank.
   Each rank sends and receives 2 (N-1)/N of the buffer, as a ring
   allreduce does, in 2 (N-1) messages per phase. The control values ctl
   (a few doubles) are summed by rank 0 (in rank order) and sent back in
   the same two phases.

   Faults: every message is nonblocking and polled (MPI_Testsome) against
   a deadline, c->timeout seconds after the call began (plus wait + 1 on
   ranks other than 0, so that rank 0, which holds the checkpoint, usually
   reports first). When it passes, the rank prints the step (ctx) and the
   ranks it has not heard from, and calls MPI_Abort: every rank stops and
   mpirun exits with status 3. MPI errors (MPI_ERRORS_RETURN) stop the job
   the same way. A rank killed outright is usually noticed sooner by
   mpirun itself, which then ends the job with its own message. */
#ifndef LM_MPI_H
#define LM_MPI_H

#include <limits.h>
#include <mpi.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int rank, size;
    double timeout;          /* seconds a sum may wait for the other ranks */
    double t_start;          /* when the current sum began */
    ebt_real *part;          /* [size * mine]: every rank's copy of this rank's part */
    size_t part_n;
    double *cpart;           /* [size * nctl]: every rank's control values (rank 0) */
    int cpart_n;
    MPI_Request *req;        /* [3 size] pending messages ... */
    int *peer;               /* ... and the rank each one is with */
    int *idx;                /* [3 size] MPI_Testsome's output */
} lm_comm;

#define LM_TAG_PART 11       /* part q to its owner */
#define LM_TAG_SUM  12       /* the owner's summed part to every rank */
#define LM_TAG_CTL  13       /* control values to rank 0 and back */
#define LM_MPI_REAL (sizeof(ebt_real) == sizeof(float) ? MPI_FLOAT : MPI_DOUBLE)

/* part r of n elements over N ranks: offset and length */
static size_t lm_part_off(size_t n, int r, int N)
{
    size_t q = n / (size_t)N, m = n % (size_t)N;
    return (size_t)r * q + ((size_t)r < m ? (size_t)r : m);
}
static size_t lm_part_len(size_t n, int r, int N) { return lm_part_off(n, r + 1, N) - lm_part_off(n, r, N); }

static void lm_comm_abort(lm_comm *c, int code)
{
    if (c->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

/* prints what failed on which step with which ranks (those of the pending
 * requests), then stops every rank */
static void lm_mpi_die(lm_comm *c, int nreq, const char *ctx, const char *why, int err)
{
    char ranks[256] = "", es[MPI_MAX_ERROR_STRING] = "";
    size_t used = 0;
    int listed = 0, len = 0;
    for (int q = 0; q < c->size && used + 16 < sizeof ranks; q++) {
        int pending = 0;
        for (int i = 0; i < nreq; i++) pending |= c->req[i] != MPI_REQUEST_NULL && c->peer[i] == q;
        if (pending) used += (size_t)snprintf(ranks + used, sizeof ranks - used, "%s%d", listed++ ? ", " : "", q);
    }
    if (err != MPI_SUCCESS) MPI_Error_string(err, es, &len);
    fprintf(stderr, "\nebt_lm: rank %d of %d: %s: %s%s%s%s%s%s%s; stopping every rank\n", c->rank, c->size, ctx, why,
            listed ? " rank" : "", listed > 1 ? "s" : "", listed ? " " : "", ranks, err != MPI_SUCCESS ? ": " : "", es);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 3);
    exit(3);   /* not reached */
}

/* waits for the nreq pending messages until deadline; a rank that waits
 * spins briefly, then sleeps 50 us between polls (cores are shared) */
static void lm_mpi_wait(lm_comm *c, int nreq, double deadline, const char *ctx)
{
    long idle = 0;
    for (;;) {
        int out = 0, rc = MPI_Testsome(nreq, c->req, &out, c->idx, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) lm_mpi_die(c, nreq, ctx, "a message failed with", rc);
        if (out == MPI_UNDEFINED) return;                   /* all done */
        if (out > 0) { idle = 0; continue; }
        if (MPI_Wtime() > deadline) {
            char why[96];
            snprintf(why, sizeof why, "nothing for %.1f s (dead, hung or far behind) from", MPI_Wtime() - c->t_start);
            lm_mpi_die(c, nreq, ctx, why, MPI_SUCCESS);
        }
        if (++idle > 200) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
}

/* one nonblocking send (send = 1) or receive of count elements with rank q */
static void lm_mpi_post(lm_comm *c, int *k, int send, void *p, size_t count, MPI_Datatype type, int q, int tag,
                        const char *ctx)
{
    int rc = send ? MPI_Isend(p, (int)count, type, q, tag, MPI_COMM_WORLD, &c->req[*k])
                  : MPI_Irecv(p, (int)count, type, q, tag, MPI_COMM_WORLD, &c->req[*k]);
    c->peer[*k] = q;
    if (rc != MPI_SUCCESS) { c->req[*k] = MPI_REQUEST_NULL; lm_mpi_die(c, *k, ctx, "cannot post a message with", rc); }
    (*k)++;
}

/* the scratch for a part of mine elements and nctl control values */
static void lm_mpi_reserve(lm_comm *c, size_t mine, int nctl, const char *ctx)
{
    size_t need = mine * (size_t)c->size;
    if (need > c->part_n) {
        free(c->part);
        if (!(c->part = malloc(need * sizeof *c->part))) lm_mpi_die(c, 0, ctx, "out of memory for the sum", 0);
        c->part_n = need;
    }
    if (nctl > c->cpart_n) {
        free(c->cpart);
        if (!(c->cpart = malloc((size_t)nctl * (size_t)c->size * sizeof *c->cpart)))
            lm_mpi_die(c, 0, ctx, "out of memory for the sum", 0);
        c->cpart_n = nctl;
    }
}

/* own[mine] = the sum of the N copies of this rank's part, in rank order */
static void lm_mpi_add(lm_comm *c, ebt_real *own, size_t mine)
{
    const ebt_real *p = c->part;
    const int N = c->size;
    if (mine == 0) return;
    memcpy(c->part + (size_t)c->rank * mine, own, mine * sizeof *own);
#ifdef _OPENMP
    #pragma omp parallel for schedule(static) if (mine > 65536)
#endif
    for (long i = 0; i < (long)mine; i++) {
        double s = p[i];
        for (int q = 1; q < N; q++) s += p[(size_t)q * mine + (size_t)i];
        own[i] = (ebt_real)s;
    }
}

static void lm_comm_sum(lm_comm *c, ebt_real *buf, size_t n, double *ctl, int nctl, double wait, const char *ctx)
{
    const int N = c->size, me = c->rank;
    const size_t mine = lm_part_len(n, me, N);
    double deadline;
    int k = 0;
    if (N == 1) return;
    c->t_start = MPI_Wtime();
    deadline = c->t_start + c->timeout + (me ? wait + 1 : 0);
    if (n / (size_t)N + 1 > INT_MAX) lm_mpi_die(c, 0, ctx, "the buffer is too large for one message per rank", 0);
    lm_mpi_reserve(c, mine, nctl, ctx);
    for (int q = 0; q < N && n > 0; q++)        /* reduce-scatter: part q to rank q */
        if (q != me) {
            lm_mpi_post(c, &k, 0, c->part + (size_t)q * mine, mine, LM_MPI_REAL, q, LM_TAG_PART, ctx);
            lm_mpi_post(c, &k, 1, buf + lm_part_off(n, q, N), lm_part_len(n, q, N), LM_MPI_REAL, q, LM_TAG_PART, ctx);
        }
    for (int q = 1; q < N && nctl > 0; q++)     /* the control values to rank 0 */
        if (me == 0) lm_mpi_post(c, &k, 0, c->cpart + (size_t)q * nctl, (size_t)nctl, MPI_DOUBLE, q, LM_TAG_CTL, ctx);
    if (me != 0 && nctl > 0) lm_mpi_post(c, &k, 1, ctl, (size_t)nctl, MPI_DOUBLE, 0, LM_TAG_CTL, ctx);
    lm_mpi_wait(c, k, deadline, ctx);
    if (n > 0) lm_mpi_add(c, buf + lm_part_off(n, me, N), mine);
    for (int j = 0; me == 0 && j < nctl; j++)
        for (int q = 1; q < N; q++) ctl[j] += c->cpart[(size_t)q * nctl + j];
    k = 0;
    for (int q = 0; q < N && n > 0; q++)        /* allgather: every summed part to every rank */
        if (q != me) {
            lm_mpi_post(c, &k, 0, buf + lm_part_off(n, q, N), lm_part_len(n, q, N), LM_MPI_REAL, q, LM_TAG_SUM, ctx);
            lm_mpi_post(c, &k, 1, buf + lm_part_off(n, me, N), mine, LM_MPI_REAL, q, LM_TAG_SUM, ctx);
        }
    for (int q = 1; q < N && nctl > 0; q++)
        if (me == 0) lm_mpi_post(c, &k, 1, ctl, (size_t)nctl, MPI_DOUBLE, q, LM_TAG_CTL, ctx);
    if (me != 0 && nctl > 0) lm_mpi_post(c, &k, 0, ctl, (size_t)nctl, MPI_DOUBLE, 0, LM_TAG_CTL, ctx);
    lm_mpi_wait(c, k, deadline, ctx);
}

#ifndef EBT_LM_NO_MAIN
/* MPI with one thread calling it; errors returned, not fatal. Without
 * OMP_NUM_THREADS, the ranks on one machine share its cores. */
static int lm_comm_init(lm_comm *c, int *argc, char ***argv)
{
    int provided = 0, local = 1;
    MPI_Comm node;
    memset(c, 0, sizeof *c);
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fputs("ebt_lm: MPI_Init failed\n", stderr);
        return 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    c->timeout = 120;
    c->req = malloc(3 * (size_t)c->size * sizeof *c->req);
    c->peer = malloc(3 * (size_t)c->size * sizeof *c->peer);
    c->idx = malloc(3 * (size_t)c->size * sizeof *c->idx);
    if (!c->req || !c->peer || !c->idx) { fputs("ebt_lm: out of memory\n", stderr); MPI_Abort(MPI_COMM_WORLD, 1); }
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_size(node, &local);
        MPI_Comm_free(&node);
    }
#ifdef _OPENMP
    if (local > 1 && !getenv("OMP_NUM_THREADS")) {
        int t = omp_get_num_procs() / local;
        omp_set_num_threads(t > 1 ? t : 1);
    }
#endif
    return 0;
}

static int lm_comm_finalize(lm_comm *c, int rc)
{
    free(c->part); free(c->cpart); free(c->req); free(c->peer); free(c->idx);
    MPI_Finalize();
    return rc;
}
#endif

#endif /* LM_MPI_H */
