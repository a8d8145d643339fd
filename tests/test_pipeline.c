/* test_pipeline.c — the predict pipeline (src/cli/pipeline.c): jobs and their messages keep
 * their order, the stages overlap (the next job is read and the last one written while one is
 * computed), memory reservations stay within the budget, and a job alone over it still runs.
 * The CLI is not part of libunet, so its files are compiled in here (cli.c calls the option
 * parser, options.c, and the process group: dist.c and the one-process single.c). */
#include "harness.h"

#include "cli/cli.c"
#include "cli/dist.c"
#include "cli/options.c"
#include "cli/pipeline.c"
#include "dist/single.c"

#include <time.h>

#define N_JOBS 12

struct events {
    pthread_mutex_t mu;
    pthread_cond_t  changed;
    int             read, computing, computed, written;  /* counts of stage starts / ends */
    int             order[N_JOBS], n_written;
    bool            overlap_read, overlap_write;         /* seen while a job was computed */
    double          reserve, budget, in_use, max_in_use;
    bool            fail_every_third;
};

struct tjob {
    int    id;
    double bytes;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Waits (mutex held) up to 2 s until *count >= target; whether it came. */
static bool wait_for_count(struct events *ev, const int *count, int target) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 2;
    int rc = 0;
    while (*count < target && rc == 0) rc = pthread_cond_timedwait(&ev->changed, &ev->mu, &dl);
    return *count >= target;
}

static void *t_read(struct cli_pipeline *pl, void *user) {
    struct events *ev = user;
    pthread_mutex_lock(&ev->mu);
    int id = ev->read;
    pthread_mutex_unlock(&ev->mu);
    if (id == N_JOBS) return NULL;
    struct tjob *j = calloc(1, sizeof *j);
    j->id = id;
    j->bytes = id == 5 ? 10 * ev->budget : ev->reserve; /* job 5 alone is over the budget */
    cli_pipeline_reserve(pl, j->bytes);
    pthread_mutex_lock(&ev->mu);
    ev->in_use += j->bytes;
    if (id != 5 && ev->in_use > ev->max_in_use) ev->max_in_use = ev->in_use;
    if (id == 5 && ev->in_use != j->bytes) ev->max_in_use = 1e30; /* not alone */
    ev->read++;
    pthread_cond_broadcast(&ev->changed);
    pthread_mutex_unlock(&ev->mu);
    cli_note("read %d", id);
    return j;
}

static void t_compute(void *user, void *job) {
    struct events *ev = user;
    struct tjob *j = job;
    pthread_mutex_lock(&ev->mu);
    ev->computing++;
    pthread_cond_broadcast(&ev->changed);
    /* While job 1 computes, job 2 is read and job 0 written (unless memory forbids it). */
    if (j->id == 1) {
        ev->overlap_read = wait_for_count(ev, &ev->read, 3);
        ev->overlap_write = wait_for_count(ev, &ev->written, 1);
    }
    ev->computed++;
    pthread_cond_broadcast(&ev->changed);
    pthread_mutex_unlock(&ev->mu);
    if (ev->fail_every_third && j->id % 3 == 2) cli_error("job %d failed", j->id);
    cli_note("computed %d", j->id);
}

static void t_write(void *user, void *job) {
    struct events *ev = user;
    struct tjob *j = job;
    cli_note("written %d", j->id);
    cli_message("[%d]\n", j->id);
    pthread_mutex_lock(&ev->mu);
    ev->in_use -= j->bytes;
    ev->order[ev->n_written++] = j->id;
    ev->written++;
    pthread_cond_broadcast(&ev->changed);
    pthread_mutex_unlock(&ev->mu);
    free(j);
}

/* Runs the pipeline with stderr into a file; returns what it printed (malloc'd). */
static char *run_pipeline(struct events *ev) {
    pthread_mutex_init(&ev->mu, NULL);
    pthread_cond_init(&ev->changed, NULL);
    char path[512];
    tmp_path(path, sizeof path, "pipeline_stderr.txt");
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(path, "w");
    dup2(fileno(f), 2);
    const struct cli_stages st = {t_read, t_compute, t_write, ev};
    cli_pipeline_run(&st, ev->budget, NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(f);
    pthread_cond_destroy(&ev->changed);
    pthread_mutex_destroy(&ev->mu);
    size_t n;
    return (char *)read_all(path, &n); /* NUL-terminated */
}

TEST(order_and_messages) {
    struct events ev = {.reserve = 1, .budget = 100, .fail_every_third = true};
    double t0 = now_s();
    char *out = run_pipeline(&ev);
    CHECK_EQ(ev.n_written, N_JOBS);
    for (int i = 0; i < ev.n_written; i++) CHECK_EQ(ev.order[i], i);
    /* Each job's lines together, in job order, as one job after the other would print them. */
    char want[4096] = "";
    size_t k = 0;
    for (int i = 0; i < N_JOBS; i++) {
        k += (size_t)snprintf(want + k, sizeof want - k, "unet: read %d\n", i);
        if (i % 3 == 2) k += (size_t)snprintf(want + k, sizeof want - k, "unet: error: job %d failed\n", i);
        k += (size_t)snprintf(want + k, sizeof want - k, "unet: computed %d\nunet: written %d\n[%d]\n",
                              i, i, i);
    }
    CHECK(out && strcmp(out, want) == 0);
    if (out && strcmp(out, want) != 0) printf("  got:\n%s\n  want:\n%s\n", out, want);
    /* The stages ran at the same time: job 2 was read and job 0 written while job 1 computed. */
    CHECK(ev.overlap_read);
    CHECK(ev.overlap_write);
    printf("       %d jobs in order, stages overlapping, %.3f s\n", N_JOBS, now_s() - t0);
    free(out);
}

/* Each job needs 40 of a budget of 100: at most two at once.  Job 5 needs 1000: it runs alone. */
TEST(memory_stays_in_budget) {
    struct events ev = {.reserve = 40, .budget = 100};
    char *out = run_pipeline(&ev);
    CHECK_EQ(ev.n_written, N_JOBS);
    CHECK(ev.max_in_use <= 100);
    CHECK(ev.max_in_use >= 80); /* and two did run at once */
    printf("       most memory in flight: %g of 100 (job 5, 1000 alone)\n", ev.max_in_use);
    free(out);
}

int main(void) {
    RUN(order_and_messages);
    RUN(memory_stays_in_budget);
    return harness_finish();
}
