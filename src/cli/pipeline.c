/* pipeline.c — reader, compute and writer stages over a sequence of jobs (pipeline.h).
 *
 * A job travels in a slot, which also holds the messages printed for it and the memory it
 * reserved.  Two FIFO queues (read -> compute, compute -> write) keep the order; the reader
 * ends the sequence with a slot without a job, which passes through both queues and stops the
 * others.  One mutex and one condition variable cover the queues and the counts (three
 * threads, a few changes per image).
 */
#include "cli/pipeline.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct slot {
    void          *job;     /* NULL: the end of the sequence */
    struct cli_log log;     /* its messages, printed by the writer */
    double         bytes;   /* reserved (cli_pipeline_reserve) */
    struct slot   *next;
};

struct queue {
    struct slot *head, *tail;
};

struct cli_pipeline {
    const struct cli_stages *st;
    struct cli_progress     *prog;
    pthread_mutex_t          mu;
    pthread_cond_t           changed;
    struct queue             to_compute, to_write;
    int                      in_flight;     /* slots made and not yet written */
    double                   reserved, budget;
    struct slot             *reading;       /* the reader's current slot */
};

static void push(struct queue *q, struct slot *s) {
    s->next = NULL;
    if (q->tail) q->tail->next = s;
    else q->head = s;
    q->tail = s;
}

static struct slot *pop(struct queue *q) {
    struct slot *s = q->head;
    q->head = s->next;
    if (!q->head) q->tail = NULL;
    return s;
}

/* Waits (mutex held) until q has a slot, and takes it. */
static struct slot *take(struct cli_pipeline *pl, struct queue *q) {
    while (!q->head) pthread_cond_wait(&pl->changed, &pl->mu);
    return pop(q);
}

void cli_pipeline_reserve(struct cli_pipeline *pl, double bytes) {
    pthread_mutex_lock(&pl->mu);
    while (pl->reserved > 0 && pl->reserved + bytes > pl->budget)
        pthread_cond_wait(&pl->changed, &pl->mu);
    pl->reserved += bytes;
    pl->reading->bytes += bytes;
    pthread_mutex_unlock(&pl->mu);
}

/* The end of the sequence when not even a slot can be allocated (one pipeline at a time). */
static struct slot end_oom;

/* Makes the next slot (its job NULL at the end). */
static struct slot *read_one(struct cli_pipeline *pl) {
    struct slot *s = calloc(1, sizeof *s);
    if (!s) {
        cli_error("out of memory");
        memset(&end_oom, 0, sizeof end_oom);
        return &end_oom;
    }
    pl->reading = s;
    cli_capture(&s->log);
    s->job = pl->st->read(pl, pl->st->user);
    cli_capture(NULL);
    return s;
}

static void compute_one(struct cli_pipeline *pl, struct slot *s) {
    if (!s->job) return;
    cli_capture(&s->log);
    pl->st->compute(pl->st->user, s->job);
    cli_capture(NULL);
}

/* Writes a slot's job, prints its messages (clearing the status line first) and releases it.
 * Returns false for the end of the sequence. */
static bool write_one(struct cli_pipeline *pl, struct slot *s) {
    const bool job = s->job != NULL;
    if (job) {
        cli_capture(&s->log);
        pl->st->write(pl->st->user, s->job);
        cli_capture(NULL);
    }
    flockfile(stderr);
    if (s->log.len && pl->prog && pl->prog->tty && pl->prog->last_len) {
        fprintf(stderr, "\r%*s\r", pl->prog->last_len, "");
        pl->prog->last_len = 0;
    }
    cli_log_flush(&s->log);
    funlockfile(stderr);
    pthread_mutex_lock(&pl->mu);
    pl->reserved -= s->bytes;
    if (pl->reserved < 0.5) pl->reserved = 0; /* sums of doubles: no residue keeps it above 0 */
    pl->in_flight--;
    pthread_cond_broadcast(&pl->changed);
    pthread_mutex_unlock(&pl->mu);
    if (s != &end_oom) free(s);
    return job;
}

static void *reader(void *arg) {
    struct cli_pipeline *pl = arg;
    for (bool more = true; more;) {
        pthread_mutex_lock(&pl->mu);
        while (pl->in_flight >= CLI_PIPELINE_DEPTH) pthread_cond_wait(&pl->changed, &pl->mu);
        pl->in_flight++;
        pthread_mutex_unlock(&pl->mu);
        struct slot *s = read_one(pl);
        more = s->job != NULL;
        pthread_mutex_lock(&pl->mu);
        push(&pl->to_compute, s);
        pthread_cond_broadcast(&pl->changed);
        pthread_mutex_unlock(&pl->mu);
    }
    return NULL;
}

static void *writer(void *arg) {
    struct cli_pipeline *pl = arg;
    for (bool more = true; more;) {
        pthread_mutex_lock(&pl->mu);
        struct slot *s = take(pl, &pl->to_write);
        pthread_mutex_unlock(&pl->mu);
        more = write_one(pl, s);
    }
    return NULL;
}

void cli_pipeline_run(const struct cli_stages *st, double budget, struct cli_progress *prog) {
    struct cli_pipeline pl = {.st = st, .prog = prog, .budget = budget};
    pthread_mutex_init(&pl.mu, NULL);
    pthread_cond_init(&pl.changed, NULL);
    pthread_t rt, wt;
    bool have_reader = pthread_create(&rt, NULL, reader, &pl) == 0;
    bool have_writer = have_reader && pthread_create(&wt, NULL, writer, &pl) == 0;
    if (have_reader && have_writer) {
        for (bool more = true; more;) {
            pthread_mutex_lock(&pl.mu);
            struct slot *s = take(&pl, &pl.to_compute);
            pthread_mutex_unlock(&pl.mu);
            compute_one(&pl, s);
            more = s->job != NULL;
            pthread_mutex_lock(&pl.mu);
            push(&pl.to_write, s);
            pthread_cond_broadcast(&pl.changed);
            pthread_mutex_unlock(&pl.mu);
        }
        pthread_join(wt, NULL);
        pthread_join(rt, NULL);
    } else {
        if (have_reader) { /* the reader started alone: let it finish, then go on in order */
            for (bool more = true; more;) {
                pthread_mutex_lock(&pl.mu);
                struct slot *s = take(&pl, &pl.to_compute);
                pthread_mutex_unlock(&pl.mu);
                compute_one(&pl, s);
                more = write_one(&pl, s);
            }
            pthread_join(rt, NULL);
        } else {
            for (bool more = true; more;) {
                pl.in_flight++;
                struct slot *s = read_one(&pl);
                compute_one(&pl, s);
                more = write_one(&pl, s);
            }
        }
    }
    pthread_cond_destroy(&pl.changed);
    pthread_mutex_destroy(&pl.mu);
}
