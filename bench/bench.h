/* bench.h — what every bench program shares: a monotonic clock and the sorted statistics of
 * repeated runs.  Header-only (each bench is one program built from one file, Makefile's
 * $(BUILD)/bench/% rule); include it after the system headers.
 *
 * Times are the median of several runs, reported with the minimum and maximum: on a shared
 * machine one slow run says nothing, and a mean lets it say too much (README's "Performance").
 */
#ifndef UNET_BENCH_H
#define UNET_BENCH_H

#include <stdlib.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static inline double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Seconds of CPU time of the whole process (all its threads): on a shared machine, the work a
 * call did, whatever share of the cores it got (waiting threads that spin count too). */
static inline double bench_cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts t[0..n) in place (so t[0] is the minimum and t[n - 1] the maximum) and returns the
 * median: the middle value, or the mean of the two middle values when n is even. */
static inline double bench_median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

#endif /* UNET_BENCH_H */
