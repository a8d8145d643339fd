/* mpi.c — the process group over MPI (make MPI=1; dist.h, docs/scaling.md).
 *
 * MPI_THREAD_FUNNELED: only the main thread calls MPI (the OpenMP threads and the sampler's
 * workers never do).  The sums are MPI_Allreduce in place on MPI_COMM_WORLD, in chunks of at
 * most 2^27 elements (MPI counts are ints); Open MPI gives every rank the same bits (each
 * element is reduced once and the result distributed, or the same commutative pairs on every
 * rank), which keeps the ranks' models equal.  Errors in MPI calls abort the job (MPI's
 * default handler), which is what a failed collective must do.
 */
#include "cli/dist.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int  rank_, size_ = 1, local_size = 1;
static bool active, started, agreed;
static char host[MPI_MAX_PROCESSOR_NAME + 1] = "localhost";
static double sum_seconds;

#define CHUNK ((size_t)1 << 27)

void dist_init(int *argc, char ***argv) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    active = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    int len = 0;
    MPI_Get_processor_name(host, &len);
    host[len] = 0;
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &local_size);
    MPI_Comm_free(&local);
}

int dist_exit(int rc) {
    if (!active) return rc;
    if (size_ > 1 && !started) {
        dist_start(false, 0, NULL);     /* the others learn it at their start check */
    } else if (size_ > 1 && rc != 0 && !agreed) {
        /* Alone in this ending while the others go on: end them all now. */
        fflush(stdout), fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc);
    }
    /* An ending all ranks agreed on: the others wait for rank 0 to finish writing and saying
     * it, since mpirun ends the job when any rank exits non-zero (an interrupted run: 143). */
    if (size_ > 1) MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    active = false;
    return rc;
}

int dist_rank(void) {
    return rank_;
}

int dist_size(void) {
    return size_;
}

int dist_local_size(void) {
    return local_size;
}

const char *dist_host(void) {
    return host;
}

void dist_sum_f64(double *v, size_t n, void *user) {
    (void)user;
    for (size_t i = 0; size_ > 1 && i < n; i += CHUNK)
        MPI_Allreduce(MPI_IN_PLACE, v + i, (int)(n - i < CHUNK ? n - i : CHUNK), MPI_DOUBLE,
                      MPI_SUM, MPI_COMM_WORLD);
}

void dist_sum_f32(float *v, size_t n, void *user) {
    (void)user;
    double t0 = MPI_Wtime();
    for (size_t i = 0; size_ > 1 && i < n; i += CHUNK)
        MPI_Allreduce(MPI_IN_PLACE, v + i, (int)(n - i < CHUNK ? n - i : CHUNK), MPI_FLOAT,
                      MPI_SUM, MPI_COMM_WORLD);
    sum_seconds += MPI_Wtime() - t0;
}

double dist_sum_seconds(void) {
    return sum_seconds;
}

int dist_max(int v) {
    int max = v;
    if (size_ > 1) MPI_Allreduce(&v, &max, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return max;
}

bool dist_same(uint64_t h) {
    if (size_ < 2) return true;
    uint64_t v[2] = {h, ~h}, max[2];
    MPI_Allreduce(v, max, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return max[0] == ~max[1];   /* the largest h is also the smallest */
}

struct card {
    int      ok;
    uint64_t hash;
    char     host[64];
};

bool dist_start(bool ok, uint64_t hash, const char *what) {
    if (size_ < 2 || started) return ok;
    started = true;
    struct card mine, *cards = calloc((size_t)size_, sizeof *cards);
    if (!cards) {
        fprintf(stderr, "unet: error: %sout of memory\n", dist_who());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    memset(&mine, 0, sizeof mine);
    mine.ok = ok, mine.hash = hash;
    memcpy(mine.host, host, strnlen(host, sizeof mine.host - 1));   /* zero-filled: ends */
    MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, cards, (int)sizeof mine, MPI_BYTE,
                  MPI_COMM_WORLD);
    bool all_ok = true;
    for (int r = 0; r < size_; r++) all_ok &= cards[r].ok != 0;
    int differs = 0;
    for (int r = 1; r < size_ && all_ok && !differs; r++)
        if (cards[r].hash != cards[0].hash) differs = r;
    if (differs && rank_ == 0) {
        const int r = differs;
        fprintf(stderr,
                "unet: error: %s: rank %d on %s differs from rank 0 on %s: another unet "
                "build, other arguments, another model or other data (hash %016llx, rank 0: "
                "%016llx); every rank must run the same command on the same files\n",
                what ? what : "start", r, cards[r].host, cards[0].host,
                (unsigned long long)cards[r].hash, (unsigned long long)cards[0].hash);
    }
    free(cards);
    /* On failure every rank stops here: a failing one said why, rank 0 a difference. */
    agreed = !all_ok || differs;
    return !agreed;
}

void dist_agreed_end(void) {
    agreed = true;
}
