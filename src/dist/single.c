/* single.c — the process group of one process (the build without MPI; dist.h). */
#include "cli/dist.h"

void dist_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
}

int dist_exit(int rc) {
    return rc;
}

int dist_rank(void) {
    return 0;
}

int dist_size(void) {
    return 1;
}

int dist_local_size(void) {
    return 1;
}

const char *dist_host(void) {
    return "localhost";
}

void dist_sum_f64(double *v, size_t n, void *user) {
    (void)v, (void)n, (void)user;
}

void dist_sum_f32(float *v, size_t n, void *user) {
    (void)v, (void)n, (void)user;
}

double dist_sum_seconds(void) {
    return 0;
}

bool dist_any(bool flag) {
    return flag;
}

bool dist_start(bool ok, uint64_t hash, const char *what) {
    (void)hash, (void)what;
    return ok;
}

void dist_agreed_end(void) {}
