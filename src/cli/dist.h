/* dist.h — the processes of an `mpirun -np N unet train|predict` run (docs/scaling.md).
 *
 * src/dist/mpi.c implements it over MPI (make MPI=1); src/dist/single.c is the one-process
 * build, where every call is trivial.  Only train and predict use the group; the other
 * commands run as N independent copies.  The rules that keep N processes from waiting on each
 * other forever:
 *   - Before the work, every rank calls dist_start once: all ranks exchange whether they got
 *     there and a hash of what they are about to do (the build, the arguments, the model's
 *     shape, the data); any failure or difference stops every rank with exit 1, the message
 *     printed once (by the failing rank, or rank 0 for a difference).  A rank that fails
 *     before dist_start takes part in it from dist_exit.
 *   - After dist_start, the collectives are alike on every rank (the trainer's hooks, one
 *     dist_max per training event).  A rank that fails there alone prints its message and ends
 *     the whole job (MPI_Abort) from dist_exit, unless the command marked the end as agreed
 *     (dist_agreed_end: every rank ended the same way at the same point).
 */
#ifndef UNET_CLI_DIST_H
#define UNET_CLI_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void dist_init(int *argc, char ***argv);
/* The command's exit status, after the group has ended (see above). */
int  dist_exit(int rc);
int  dist_rank(void);
int  dist_size(void);
/* Ranks on this machine (MPI_COMM_TYPE_SHARED); 1 for one process. */
int  dist_local_size(void);
const char *dist_host(void);
/* In place sums over the ranks (the unet_dp functions; user unused).  dist_sum_f32 adds its
 * time to dist_sum_seconds. */
void dist_sum_f64(double *v, size_t n, void *user);
void dist_sum_f32(float *v, size_t n, void *user);
double dist_sum_seconds(void);
/* The largest v over the ranks, on every rank. */
int  dist_max(int v);
/* True on every rank when h is the same on all. */
bool dist_same(uint64_t h);
/* The start check: false (exit 1) when a rank is not ok or the hashes differ; what names the
 * command for the message. */
bool dist_start(bool ok, uint64_t hash, const char *what);
void dist_agreed_end(void);

/* ---- dist.c: both builds ---- */
/* FNV-1a over n bytes, continuing h (start: DIST_HASH0). */
#define DIST_HASH0 1469598103934665603ull
uint64_t dist_hash(uint64_t h, const void *p, size_t n);
/* The build and the arguments after the command name. */
uint64_t dist_hash_args(int argc, char **argv);
/* With several ranks on a machine and no thread count asked (--threads, OMP_NUM_THREADS,
 * UNET_THREADS): the cores divided among them, at most `current`; else 0 (keep the default). */
int  dist_threads(int current);
/* "rank R on HOST: " on a run of several ranks, else "". */
const char *dist_who(void);

#endif
