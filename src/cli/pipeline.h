/* pipeline.h — a sequence of jobs through three stages that overlap: a reader thread makes
 * each job (unet predict: decodes the image), the calling thread computes it (the forward
 * pass), a writer thread writes its results.  While the forward of image i runs, image i + 1
 * is decoded and image i - 1 written.
 *
 * Jobs keep their order through every stage, and the messages each stage prints for a job
 * (cli_error, cli_note, cli_message: captured per job, cli.h) reach stderr in job order, from
 * the writer after the job's last stage: the output is the same as one image after the other.
 * Memory stays bounded: a job reserves what it needs (cli_pipeline_reserve) before it
 * allocates, and waits until the jobs in flight leave room for it in the budget (a job alone
 * over the budget waits for an empty pipeline); at most CLI_PIPELINE_DEPTH jobs are in flight.
 */
#ifndef UNET_CLI_PIPELINE_H
#define UNET_CLI_PIPELINE_H

#include "cli/cli.h"

#define CLI_PIPELINE_DEPTH 4

struct cli_pipeline;

struct cli_stages {
    /* Reader thread: the next job, or NULL when there is none left. */
    void *(*read)(struct cli_pipeline *pl, void *user);
    /* The calling thread. */
    void (*compute)(void *user, void *job);
    /* Writer thread: writes the job's results and frees it. */
    void (*write)(void *user, void *job);
    void *user;
};

/* Runs every job through the stages and returns when the last one is written.  prog (may be
 * NULL): the status line that the compute stage rewrites (cli_progress_line, under
 * flockfile(stderr)), cleared before a job's messages are printed.  When a thread cannot be
 * started, the stages run one after the other in the calling thread. */
void cli_pipeline_run(const struct cli_stages *st, double budget, struct cli_progress *prog);

/* Called by the read stage before it allocates a job's memory: waits until bytes fit in the
 * budget beside the jobs in flight (or none is in flight); released when the job is written. */
void cli_pipeline_reserve(struct cli_pipeline *pl, double bytes);

#endif /* UNET_CLI_PIPELINE_H */
