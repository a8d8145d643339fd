/* report_page.h — what the files of unet report share about one page: the training runs it
 * shows (their record, log and model), its evaluations and its notes.  Internal to
 * src/cli/report*.c (report.h lists them); report.h is what the commands use.
 */
#ifndef UNET_CLI_REPORT_PAGE_H
#define UNET_CLI_REPORT_PAGE_H

#include "cli/report.h"

#include <cjson/cJSON.h>

#define MAX_CHART_RUNS 16
#define MAX_MARKS 40            /* events of a kind a run may mark; more are only counted */

/* A training log (STEM.log.csv), columns by header name. */
struct page_log {
    int     n_cols, n_rows;
    char  **cols;
    double *v;          /* (n_rows, n_cols), NaN where empty or not a number */
    char  **event;      /* (n_rows): the event column's text, or NULL */
    double *time;       /* (n_rows): seconds, made continuous across resumed runs */
    struct {            /* the kinds of events ("rollback" of "rollback:spike;to=120") */
        char name[24];
        int  count;
    } kinds[8];
    int n_kinds;
};

/* A training run: STEM.run.json, STEM.log.csv and STEM.safetensors, any of them missing. */
struct page_run {
    char           *stem, *name, *record_path, *log_path, *model_path;
    const char     *color;
    cJSON          *record;
    struct page_log log;
    bool            have_log, have_model, model_ok;
    double          model_bytes, model_mtime, log_mtime;
    size_t          params;
    unet_config     cfg;
    cJSON          *meta;   /* the model's metadata as a JSON object */
};

struct report_page {
    struct page_run     *runs;
    int                  n_runs;
    struct report_eval **evals;
    int                  n_evals;
    char               **notes;
    int                  n_notes;
    bool                 oom;
};

/* ---- inputs (report_log.c) ---- */

/* A folder (its runs and evaluations), a run's file or an evaluation's JSON; notes otherwise. */
void report_add_input(struct report_page *pg, const char *path);
/* unet eval's JSON (source: its file, NULL for unet eval itself). */
void report_add_eval(struct report_page *pg, const char *source, const char *json);
/* Labels and colours of the runs: the stem's file name, with its folder when two share it. */
void report_name_runs(struct report_page *pg);
/* Reads what there is of a run: record, log, model. */
void report_load_run(struct report_page *pg, struct page_run *r);
void report_page_free(struct report_page *pg);
/* The index of column name, or -1. */
int report_log_col(const struct page_log *l, const char *name);
/* Whether the event of row is marked on the charts: not when its kind happens more than
 * MAX_MARKS times (unet train --clip logs a clip at every step it clips). */
bool report_log_marked(const struct page_log *l, int row);

/* ---- the training section and the settings (report_train.c) ---- */

void report_training_section(struct report_buf *b, struct report_page *pg);
void report_settings_section(struct report_buf *b, struct report_page *pg);

/* ---- assets (report_assets.c) ---- */

/* NULL-terminated pieces of the page's style sheet and script. */
extern const char *const report_css[];
extern const char *const report_js[];

/* ---- report.c ---- */

/* "12.5 KB" into buf. */
const char *report_human_bytes(char *buf, size_t size, double n);

#endif /* UNET_CLI_REPORT_PAGE_H */
