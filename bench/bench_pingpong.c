/* bench_pingpong.c — how far apart the caches of two threads are: the round trip of one cache
 * line between them.  Two OpenMP threads hand a flag back and forth (each waits for the other's
 * store, then stores); a round trip is two line transfers.  Cores that share an L3 hand a line
 * over in tens of nanoseconds, cores of different L3s (chiplets) or sockets in hundreds; the
 * farther apart, the more it costs a parallel loop to read what the other thread just wrote
 * (docs/performance.md, "Issue 14's targets, session 9").
 *
 *     bench_pingpong [ROUNDS]      (default 7; each round 200000 round trips)
 *
 * Prints one line, the median, minimum and maximum over the rounds:
 *
 *     PINGPONG threads=2 round_trip_ns=... min_ns=... max_ns=...
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench.h"

enum { TRIPS = 200000, MAX_ROUNDS = 64 };

/* The flag alone in its cache line: 1 = the second thread's turn, 0 = the first's. */
static _Alignas(64) atomic_int flag;

int main(int argc, char **argv) {
#ifndef _OPENMP
    (void)argc, (void)argv;
    fprintf(stderr, "bench_pingpong: built without OpenMP\n");
    return 1;
#else
    const int rounds = argc > 1 ? atoi(argv[1]) : 7;
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "bench_pingpong: ROUNDS must be 1..%d\n", MAX_ROUNDS);
        return 1;
    }
    if (omp_get_num_procs() < 2) {
        fprintf(stderr, "bench_pingpong: one processor: the two threads would take turns\n");
        return 1;
    }
    double ns[MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        double t0 = 0.0;
        atomic_store(&flag, 0);
#pragma omp parallel num_threads(2)
        {
            const int me = omp_get_thread_num();
#pragma omp barrier
            if (me == 0) t0 = bench_now();
            for (int i = 0; i < TRIPS; i++) {
                while (atomic_load_explicit(&flag, memory_order_acquire) != me)
                    ;
                atomic_store_explicit(&flag, !me, memory_order_release);
            }
        }
        ns[r] = (bench_now() - t0) * 1e9 / TRIPS;
    }
    const double med = bench_median(ns, rounds); /* sorts ns */
    printf("PINGPONG threads=2 round_trip_ns=%.1f min_ns=%.1f max_ns=%.1f\n", med, ns[0],
           ns[rounds - 1]);
    return 0;
#endif
}
