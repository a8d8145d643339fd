/* bench_allreduce.c — MPI_Allreduce (sum, in place) of the seed U-Net's gradient block: n floats
 * (31,037,698 for base 64, 124 MB), as unet's data-parallel step does it (src/dist/mpi.c).
 * Prints the median of RUNS timed calls after one warm-up, on rank 0:
 *     mpicc -O2 bench/bench_allreduce.c -o build/bench_allreduce
 *     mpirun -np 2 build/bench_allreduce [n] [runs]
 * (bench/mpi.sh builds and runs it.)  Not a unet program: it measures the interconnect (here
 * shared memory) that the step's allreduce uses. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long n = argc > 1 ? atol(argv[1]) : 31037698;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    float *v = malloc((size_t)n * sizeof(float));
    double *t = malloc((size_t)(runs + 1) * sizeof(double));
    if (!v || !t || runs < 1) MPI_Abort(MPI_COMM_WORLD, 1);
    for (long i = 0; i < n; i++) v[i] = 1e-3f * (float)(i % 1000);
    for (int r = 0; r <= runs; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        for (long i = 0; i < n; i += 1L << 27)
            MPI_Allreduce(MPI_IN_PLACE, v + i, (int)(n - i < (1L << 27) ? n - i : (1L << 27)),
                          MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        t[r] = MPI_Wtime() - t0;
    }
    qsort(t + 1, (size_t)runs, sizeof(double), cmp);
    if (rank == 0)
        printf("allreduce %d ranks %ld floats (%.1f MB): median %.4f s (%.2f GB/s algorithm "
               "bandwidth)\n", size, n, 4e-6 * (double)n, t[1 + runs / 2],
               4e-9 * (double)n / t[1 + runs / 2]);
    free(v), free(t);
    MPI_Finalize();
    return 0;
}
