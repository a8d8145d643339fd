/* dist.c — what both builds of the process group share (dist.h). */
#include "cli/cli.h"
#include "cli/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint64_t dist_hash(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

uint64_t dist_hash_args(int argc, char **argv) {
    uint64_t h = dist_hash(DIST_HASH0, UNET_VERSION, sizeof UNET_VERSION);
    h = dist_hash(h, __DATE__ __TIME__, sizeof __DATE__ __TIME__);
    for (int i = 1; i < argc; i++) h = dist_hash(h, argv[i], strlen(argv[i]) + 1);
    return h;
}

int dist_threads(int current) {
    if (dist_size() < 2 || getenv("OMP_NUM_THREADS") || getenv("UNET_THREADS")) return 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long t = cores / dist_local_size();
    if (t > current) t = current;
    return t < 1 ? 1 : (int)t;
}

const char *dist_who(void) {
    static char who[320];
    if (dist_size() < 2) return "";
    if (!who[0]) snprintf(who, sizeof who, "rank %d on %s: ", dist_rank(), dist_host());
    return who;
}
