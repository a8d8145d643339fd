/* single.c — the process group of one process (the build without MPI; dist.h). */
#include "cli/dist.h"

#include <stdio.h>
#include <stdlib.h>

/* Started by mpirun (Open MPI, MPICH and Slurm's PMI say so in the environment) with several
 * processes: each would run alone, N trainings racing for the same files.  Refused. */
void dist_init(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1) {
            fprintf(stderr, "unet: error: this unet was built without MPI, so under mpirun each of "
                            "the %s processes would run alone; build it with make MPI=1 "
                            "(docs/scaling.md)\n", v);
            exit(1);
        }
    }
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

int dist_max(int v) {
    return v;
}

bool dist_same(uint64_t h) {
    (void)h;
    return true;
}

bool dist_start(bool ok, uint64_t hash, const char *what) {
    (void)hash, (void)what;
    return ok;
}

void dist_agreed_end(void) {}
