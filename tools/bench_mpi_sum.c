/* bench_mpi_sum.c - the time of lm_comm_sum (examples/lm_mpi.h: the sum of
 * `ebt_lm train` over MPI, in a fixed order) against MPI_Allreduce on the
 * same buffer, each call between barriers; medians of REPS calls after 2.
 *   mpicc -O2 -fopenmp -o build/bench_mpi_sum tools/bench_mpi_sum.c
 *   mpirun -np 2 build/bench_mpi_sum [N_FLOATS [REPS]]
 * (config A: 525575 floats, B: 6395143; tools/bench_mpi.sh runs both) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
typedef float ebt_real;
#include "../examples/lm_mpi.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill(float *b, size_t n, int rank)
{
    for (size_t i = 0; i < n; i++) b[i] = 1e-3f * (float)(i % 1000) + (float)rank;
}

int main(int argc, char **argv)
{
    lm_comm c;
    if (lm_comm_init(&c, &argc, &argv)) return 1;
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 525575;
    int reps = argc > 2 ? atoi(argv[2]) : 50;
    reps = reps < 1 ? 1 : reps;
    float *b = malloc(n * sizeof *b), *b2 = malloc(n * sizeof *b2);
    double ctl[8], *tm = calloc((size_t)reps, sizeof *tm), *ta = calloc((size_t)reps, sizeof *ta);
    if (!b || !b2 || !tm || !ta) { lm_comm_abort(&c, 1); return 1; }
    for (int r = 0; r < reps + 2; r++) {
        double t0;
        fill(b, n, c.rank);
        memset(ctl, 0, sizeof ctl);
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        lm_comm_sum(&c, b, n, ctl, 8, 0, "bench");
        if (r >= 2) tm[r - 2] = MPI_Wtime() - t0;
        fill(b, n, c.rank);
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        MPI_Allreduce(b, b2, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (r >= 2) ta[r - 2] = MPI_Wtime() - t0;
    }
    qsort(tm, (size_t)reps, sizeof *tm, cmp);
    qsort(ta, (size_t)reps, sizeof *ta, cmp);
    if (c.rank == 0)
        printf("%d ranks, %zu floats: lm_comm_sum %.3f ms, MPI_Allreduce %.3f ms (medians of %d)\n", c.size, n,
               1e3 * tm[reps / 2], 1e3 * ta[reps / 2], reps);
    free(b); free(b2); free(tm); free(ta);
    return lm_comm_finalize(&c, 0);
}
