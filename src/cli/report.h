/* report.h — unet report: one self-contained HTML page for training runs and evaluations
 * (docs/report.md), and the run record (STEM.run.json) that unet train writes for it.
 *
 * The page is built in memory (struct report_buf) and written once, atomically.  Everything it
 * shows is inside the file: CSS and a little JavaScript inline, charts as inline SVG, pictures
 * as base64 PNG data: URIs.  Nothing is fetched.  Bad input never stops it: a missing or torn
 * log, a run still going, a prediction without its image become lines in the page's
 * "What is missing" box.
 *
 *   report.c        the page buffer, its notes and its frame; report_write, report_eval
 *   report_log.c    inputs: folders, runs (record, log, model), evaluations; the log parser
 *   report_train.c  the training section (run cards, curves, events) and the settings table
 *   report_assets.c the page's CSS and JavaScript
 *   report_eval.c   an evaluation's section: summary, metrics, the table of images
 *   report_chart.c  line charts as SVG: ticks, log scale, legend, event marks
 *   report_image.c  thumbnails and overlays, PNG in memory (libpng), base64
 *   report_run.c    STEM.run.json: the settings, data, machine and ending of a training run
 */
#ifndef UNET_CLI_REPORT_H
#define UNET_CLI_REPORT_H

#include "cli/cli.h"

#include <stdint.h>
#include <time.h>

/* ---- the page buffer ---- */

struct report_buf {
    char  *data;
    size_t len, cap;
    bool   oom;     /* an allocation failed: the page is incomplete (reported when writing) */
};

void report_write_bytes(struct report_buf *b, const void *p, size_t n);
void report_puts(struct report_buf *b, const char *s);
void report_printf(struct report_buf *b, const char *fmt, ...) CLI_PRINTF(2, 3);
/* s with & < > " ' escaped, for text and attribute values. */
void report_html(struct report_buf *b, const char *s);
void report_base64(struct report_buf *b, const void *p, size_t n);
void report_buf_free(struct report_buf *b);
/* Writes n bytes to path atomically (a temporary file renamed over it); false with a message. */
bool report_save(const char *path, const void *data, size_t n);

/* ---- charts (report_chart.c) ---- */

enum { CHART_LINE, CHART_FAINT, CHART_POINTS };

struct chart_series {
    const double *x, *y;    /* n points; NaN y is a gap; a decreasing x starts a new piece */
    int           n;
    const char   *color;    /* "#4e79a7" */
    int           style;    /* CHART_LINE, CHART_FAINT (thin, pale: raw values under a
                             * smoothed line), CHART_POINTS (line with markers) */
    const char   *legend;   /* NULL: not in the legend */
};

struct chart_mark {         /* an event: a tick on the top edge, a dashed line when `line` */
    double      x;
    const char *color;
    const char *text;       /* tooltip */
    bool        line;
};

struct chart {
    const char                *title, *x_label, *y_label;
    bool                       x_time;     /* x in seconds: ticks in s, min or h */
    int                        log_y;      /* 1 log, 0 linear, -1 log when the data spans
                                            * over a decade and is positive */
    const struct chart_series *series;
    int                        n_series;
    const struct chart_mark   *marks;
    int                        n_marks;
    const char                *note;       /* a line under the title, or NULL */
    double                     x_lo, x_hi;  /* the x axis covers at least this (NaN: data) */
};

/* Appends <svg ...>...</svg> (600 x 300 user units, scales to its container's width). */
void report_chart_svg(struct report_buf *b, const struct chart *c);
/* A strip 180 x 22 for a table cell: a tick per value on [lo, hi], the mean and the mean
 * +- sd as a bar. */
void report_strip_svg(struct report_buf *b, const double *v, int n, double mean, double sd);
/* "1.5e-4", "0.25", "1200": a value at the precision of a tick step. */
void report_chart_number(char *buf, size_t size, double v, double step);

/* ---- pictures (report_image.c) ---- */

/* One image of an evaluation as three pictures of the same size: the input (gray or RGB), and
 * transparent overlays of the prediction and the truth that the page stacks on the input. */
struct report_views {
    int                 w, h;           /* thumbnail size */
    struct report_buf   input, pred, truth;     /* PNG files */
    bool                have_input;
    int                 n_true, n_pred, n_matched;  /* objects; matched at IoU > 0.5 */
};

struct report_masks {
    const int32_t *pred, *truth;            /* class ids (h, w) */
    const int32_t *pred_inst, *truth_inst;  /* instance labels (h, w) */
    int            h, w;
    const uint8_t *image;                   /* (c, h, w) 8-bit display values, or NULL */
    int            c;                       /* 1 or 3 */
};

/* Renders the views at an integer reduction factor (1 = full size).  false when out of
 * memory or libpng fails (message printed). */
bool report_views_make(const struct report_masks *m, int factor, struct report_views *out);
void report_views_free(struct report_views *v);
/* 8-bit display values (c, h, w) of an image, c = 3 for RGB and 1 otherwise (the first
 * channel): 8-bit images as they are, others stretched between their 1st and 99.8th
 * percentiles.  malloc'd; NULL with a message on failure. */
uint8_t *report_display_image(unet_ctx *ctx, const unet_image *img, int *c);

/* ---- the run record (report_run.c) ---- */

struct report_run {
    /* set by the caller (unet train) */
    int               argc;
    char            **argv;
    const char       *model, *log;          /* paths of the model file and the CSV log */
    const char       *images, *masks, *val_images, *val_masks, *recipe, *loss, *augment;
    float             val_split;
    int               n_train, n_val, batch, tile, out_tile, seed, threads;
    long              steps, per_epoch, resumed_at;     /* resumed_at: -1 for a fresh run */
    const unet_model *m;
    const unet_optim *opt;
    struct {                                /* kept by report_run_begin for the end */
        char  *path;                        /* STEM.run.json */
        char   started[40];
        double t0;
    } kept;
};

/* Writes STEM.run.json (STEM: model without ".safetensors") with status "running": the
 * settings, the data, the machine and the start time.  A failure to write is a note, never
 * an error: the record helps the report, the run does not need it.  Returns false (with a
 * message) only when report, the page unet train --report will write, is not a .html name. */
bool report_run_begin(struct report_run *r, const char *report);
/* Rewrites it with the ending: status "finished" (rc 0), "interrupted" (rc > 128) or "failed",
 * the last step and the end time; then, when report is not NULL, writes the report page for
 * this run there (unet train --report).  Frees what begin allocated.  Returns 0, or
 * CLI_EXIT_FAIL when the page could not be written. */
int report_run_end(struct report_run *r, int rc, long step, const char *report);

/* ---- between the report files ---- */

struct report_page;     /* report_page.h: what the page holds, and its notes */
struct report_eval;     /* report_eval.c: one evaluation */
struct cJSON;

/* A line for the page's "What is missing" box (and stderr). */
void report_note(struct report_page *pg, const char *fmt, ...) CLI_PRINTF(2, 3);
/* An allocation failed: the page says that parts of it are missing. */
void report_oom(struct report_page *pg);
/* "validation Dice" for "val_dice", "pixel error" for "pixel_error", into buf. */
const char *report_metric_name(const char *col, char *buf, size_t size);
const char *report_json_str(const struct cJSON *o, const char *key);  /* NULL: not a string */
bool report_ends_with(const char *s, const char *suffix);
/* Local time t formatted by strftime's fmt into buf. */
const char *report_time(char *buf, size_t size, const char *fmt, time_t t);
char *report_strdup(const char *s);                                    /* NULL stays NULL */

/* unet eval's JSON (source names it in notes; NULL: from unet eval itself); NULL with a note
 * when it is not an evaluation. */
struct report_eval *report_eval_parse(struct report_page *pg, const char *source,
                                      const char *json);
int report_eval_images(const struct report_eval *e);
/* The evaluation's section: summary, metrics, and the table of images with their pictures.
 * The evaluations of a page (count) share REPORT_PICTURE_BYTES for their pictures. */
#define REPORT_PICTURE_BYTES (18.0 * 1048576)
void report_eval_section(struct report_buf *b, struct report_page *pg, struct report_eval *e,
                         int index, int count);
/* The summary lines for a paper ("Dice 0.874 +- 0.052 (mean +- s.d., n = 30 images)"). */
void report_eval_summary(const struct report_eval *e, FILE *f);
void report_eval_free(struct report_eval *e);

/* ---- writing a report (report.c) ---- */

/* A page's name must end in .html or .htm, so that a slip never replaces a log, a record or a
 * model; false with a message otherwise. */
bool report_check_out(const char *out);

/* unet report: the page for the inputs (run folders, STEM.run.json, STEM.log.csv, model
 * files, eval records) written atomically to out.  Problems with the inputs go into the page
 * and to stderr as notes; returns 0, or CLI_EXIT_FAIL when nothing could be read or the page
 * could not be written. */
int report_write(const char *out, const char *const *inputs, int n_inputs);

/* unet eval --report: json is what unet eval --json printed (it names the folders).  Writes
 * the page for it, prints the JSON (print_json) or the summary lines to stdout, and returns
 * 0 or CLI_EXIT_FAIL. */
int report_eval(const char *out, const char *json, bool print_json);

/* The folders of an evaluation as the first members of unet eval's JSON object:
 * "pred_dir": ..., "truth_dir": ..., "image_dir": ... (null when none), "classes": K, */
void report_eval_dirs_json(FILE *f, const char *pred_dir, const char *truth_dir,
                           const char *image_dir, int classes);

#endif /* UNET_CLI_REPORT_H */
