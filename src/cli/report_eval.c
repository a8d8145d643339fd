/* report_eval.c — an evaluation on the report page: unet eval's JSON read by key, the
 * summary lines for a paper, a strip of each metric's values, and the table of every image with
 * its pictures (report_image.c), worst first.
 *
 * Columns are the keys of the per-image objects, so metrics a newer unet eval adds appear
 * without a change here: numbers and nulls as they are, a per-class array as its foreground
 * (index 1 of two classes) or one column per class, an object one level deep as "key.sub".
 * Keys with "error", "loss", "dist", "false", "split" or "merge" are lower-is-better,
 * "objects*" and "n_*" counts, the others higher-is-better.  Rows start sorted by Dice (else
 * IoU, SEG, AP50, else the first score), worst first.
 *
 * Pictures get a share of an 18 MB budget: each image may use what is left divided by the
 * images still to come, and its thumbnails shrink by whole factors until they fit (a running
 * estimate of bytes per pixel picks the first factor), so a page of 1000 images stays under
 * 20 MB and a page of 20 shows them at full size, up to 512 pixels a side.  The input is a CSS
 * background that the three pictures of a row share, and a browser decodes it only when the
 * row is shown (the table shows 25 rows a page).
 */
#include "cli/report.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COLS 64             /* metrics per image; more are left out */
#define MAX_SHRINK 64           /* the smallest thumbnail: 1/64 of the image's side */


struct report_eval {
    char   *source;
    cJSON  *json;
    char   *pred_dir, *truth_dir, *image_dir;
    int     classes, n, n_cols, failed, primary;
    char  **names, **cols;
    int    *better;         /* +1 higher is better, -1 lower, 0 a count */
    double *v;              /* (n, MAX_COLS) */
};


static int eval_col(struct report_eval *e, const char *name, bool add) {
    for (int i = 0; i < e->n_cols; i++)
        if (strcmp(e->cols[i], name) == 0) return i;
    if (!add || e->n_cols >= MAX_COLS) return -1;
    char *c = strdup(name);
    if (!c) return -1;
    e->cols[e->n_cols] = c;
    const char *lower[] = {"error", "loss", "dist", "false", "_fp", "_fn", "split", "merge"};
    int b = 1;
    for (size_t k = 0; k < sizeof lower / sizeof lower[0]; k++)
        if (strstr(name, lower[k])) b = -1;
    /* Counts and thresholds: shown, not scored. */
    if (!strncmp(name, "objects", 7) || !strncmp(name, "n_", 2) || strstr(name, "threshold")) b = 0;
    e->better[e->n_cols] = b;
    return e->n_cols++;
}

/* The per-image values of e->json: numbers, nulls, arrays (per class: index 1 is the
 * foreground of two classes) and objects one level deep, each a column by its key. */
static bool eval_read(struct report_page *pg, struct report_eval *e) {
    const cJSON *imgs = cJSON_GetObjectItemCaseSensitive(e->json, "images");
    if (!cJSON_IsArray(imgs)) {
        report_note(pg, "%s: not an evaluation (no \"images\" list; made by unet eval --json?)",
                    e->source);
        return false;
    }
    e->pred_dir = report_strdup(report_json_str(e->json, "pred_dir"));
    e->truth_dir = report_strdup(report_json_str(e->json, "truth_dir"));
    e->image_dir = report_strdup(report_json_str(e->json, "image_dir"));
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(e->json, "classes");
    e->classes = cJSON_IsNumber(k) ? k->valueint : 2;
    if (e->classes < 2 || e->classes > UNET_MAX_CLASSES) {
        report_note(pg, "%s: classes %d is not 2..%d; the pictures use 2", e->source, e->classes,
                    UNET_MAX_CLASSES);
        e->classes = 2;
    }
    const cJSON *fl = cJSON_GetObjectItemCaseSensitive(e->json, "failed");
    e->failed = cJSON_IsNumber(fl) ? fl->valueint : 0;
    int n = cJSON_GetArraySize(imgs);
    e->names = calloc((size_t)n + 1, sizeof(char *));
    e->cols = calloc(MAX_COLS, sizeof(char *));
    e->better = calloc(MAX_COLS, sizeof(int));
    e->v = malloc(sizeof(double) * MAX_COLS * ((size_t)n + 1));
    if (!e->names || !e->cols || !e->better || !e->v) {
        report_oom(pg);
        return false;
    }
    for (size_t i = 0; i < MAX_COLS * ((size_t)n + 1); i++) e->v[i] = NAN;
    int skipped = 0;
    for (const cJSON *im = imgs->child; im; im = im->next) {
        const char *name = report_json_str(im, "name");
        if (!cJSON_IsObject(im) || !name) {
            skipped++;
            continue;
        }
        int r = e->n;
        if (!(e->names[r] = strdup(name))) {
            report_oom(pg);
            break;
        }
        e->n++;
        for (const cJSON *f = im->child; f; f = f->next) {
            char key[128];
            if (!f->string || strcmp(f->string, "name") == 0) continue;
            if (cJSON_IsNumber(f) || cJSON_IsNull(f)) {
                int c = eval_col(e, f->string, true);
                if (c >= 0) e->v[(size_t)r * MAX_COLS + c] = cJSON_IsNumber(f) ? f->valuedouble : NAN;
            } else if (cJSON_IsArray(f) || cJSON_IsObject(f)) {
                int len = cJSON_GetArraySize(f), idx = 0;
                for (const cJSON *x = f->child; x; x = x->next, idx++) {
                    if (cJSON_IsArray(f) && idx == 0 && len > 1) continue; /* background */
                    if (cJSON_IsArray(f) && len == 2) snprintf(key, sizeof key, "%s", f->string);
                    else if (cJSON_IsArray(f)) snprintf(key, sizeof key, "%s[%d]", f->string, idx);
                    else snprintf(key, sizeof key, "%s.%s", f->string, x->string ? x->string : "");
                    if (!cJSON_IsNumber(x) && !cJSON_IsNull(x)) continue;
                    int c = eval_col(e, key, true);
                    if (c >= 0) e->v[(size_t)r * MAX_COLS + c] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
                }
            }
        }
    }
    if (skipped)
        report_note(pg, "%s: %d image entries without a name were left out", e->source, skipped);
    /* Worst first by Dice, else IoU, SEG, AP, else the first score. */
    static const char *prefer[] = {"dice", "iou", "seg", "ap50"};
    e->primary = -1;
    for (size_t p = 0; p < 4 && e->primary < 0; p++) e->primary = eval_col(e, prefer[p], false);
    for (int c = 0; c < e->n_cols && e->primary < 0; c++)
        if (e->better[c]) e->primary = c;
    return true;
}

struct report_eval *report_eval_parse(struct report_page *pg, const char *source,
                                      const char *json) {
    cJSON *j = cJSON_Parse(json);
    if (!cJSON_IsObject(j)) {
        report_note(pg, "%s: not valid JSON (an evaluation record is what unet eval --json "
                        "prints)", source ? source : "unet eval");
        cJSON_Delete(j);
        return NULL;
    }
    struct report_eval *e = calloc(1, sizeof *e);
    if (!e) {
        cJSON_Delete(j);
        report_oom(pg);
        return NULL;
    }
    e->json = j;
    e->source = strdup(source ? source : "unet eval");
    if (!eval_read(pg, e)) e->n = 0;
    return e;
}

int report_eval_images(const struct report_eval *e) {
    return e->n;
}

void report_eval_free(struct report_eval *e) {
    if (!e) return;
    free(e->source), free(e->pred_dir), free(e->truth_dir), free(e->image_dir);
    cJSON_Delete(e->json);
    for (int k = 0; k < e->n; k++) free(e->names[k]);
    for (int k = 0; k < e->n_cols; k++) free(e->cols[k]);
    free(e->names), free(e->cols), free(e->better), free(e->v);
    free(e);
}


struct stats {
    double mean, sd, median, min, max;
    int    n;
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Over the finite values of column c; sd is the sample standard deviation (n - 1). */
static struct stats stats_of(const struct report_eval *e, int c, double *sorted) {
    struct stats s = {NAN, NAN, NAN, NAN, NAN, 0};
    for (int i = 0; i < e->n; i++) {
        double v = e->v[(size_t)i * MAX_COLS + c];
        if (isfinite(v)) sorted[s.n++] = v;
    }
    if (!s.n) return s;
    qsort(sorted, (size_t)s.n, sizeof(double), cmp_double);
    double sum = 0, ss = 0;
    for (int i = 0; i < s.n; i++) sum += sorted[i];
    s.mean = sum / s.n;
    for (int i = 0; i < s.n; i++) ss += (sorted[i] - s.mean) * (sorted[i] - s.mean);
    s.sd = s.n > 1 ? sqrt(ss / (s.n - 1)) : NAN;
    s.median = s.n % 2 ? sorted[s.n / 2] : 0.5 * (sorted[s.n / 2 - 1] + sorted[s.n / 2]);
    s.min = sorted[0], s.max = sorted[s.n - 1];
    return s;
}

/* "Dice 0.874 ± 0.052 (mean ± s.d., n = 30 images)" */
static void paper_line(char *buf, size_t size, const struct report_eval *e, int c,
                       const struct stats *s) {
    char name[128], n[96];
    report_metric_name(e->cols[c], name, sizeof name);
    if (s->n < e->n)
        snprintf(n, sizeof n, "n = %d of %d images; the others have no value", s->n, e->n);
    else
        snprintf(n, sizeof n, "n = %d image%s", s->n, s->n == 1 ? "" : "s");
    if (s->n == 0) snprintf(buf, size, "%s: no values (%s)", name, n);
    else if (s->n == 1) snprintf(buf, size, "%s %.3f (%s)", name, s->mean, n);
    else
        snprintf(buf, size, "%s %.3f \xc2\xb1 %.3f (mean \xc2\xb1 s.d., %s)", name, s->mean, s->sd,
                 n);
}

/* The summary lines of every score, and the Cell Tracking Challenge's SEG over all reference
 * objects when unet eval gave it (its "mean" object), as text. */
static void summary_lines(const struct report_eval *e, struct report_buf *out) {
    double *sorted = malloc(sizeof(double) * ((size_t)e->n + 1));
    char line[512];
    for (int c = 0; sorted && c < e->n_cols; c++) {
        if (!e->better[c]) continue;
        struct stats s = stats_of(e, c, sorted);
        paper_line(line, sizeof line, e, c, &s);
        report_printf(out, "%s\n", line);
    }
    free(sorted);
    const cJSON *mean = cJSON_GetObjectItemCaseSensitive(e->json, "mean");
    const cJSON *seg = cJSON_GetObjectItemCaseSensitive(mean, "seg_ctc");
    const cJSON *objects = cJSON_GetObjectItemCaseSensitive(mean, "objects_true");
    if (cJSON_IsNumber(seg) && cJSON_IsNumber(objects))
        report_printf(out, "SEG %.3f (Cell Tracking Challenge: over all %d reference objects)\n",
                      seg->valuedouble, objects->valueint);
}

/* The folder paths of e resolved: as written, else relative to the record's own folder. */
static char *resolve(const struct report_eval *e, const char *dir) {
    if (!dir) return NULL;
    if (dir[0] == '/' || cli_is_dir(dir) || !e->source) return strdup(dir);
    char *base = strdup(e->source);
    if (!base) return NULL;
    char *slash = strrchr(base, '/');
    char *p = NULL;
    if (slash) {
        *slash = 0;
        p = cli_join(base, dir);
    }
    free(base);
    if (p && cli_is_dir(p)) return p;
    free(p);
    return strdup(dir);
}

/* A mask file as unet eval reads it, once: with cls, its class ids and its objects (the labels
 * of an instance label image, else the components of a binary mask); without (a
 * NAME_instances.tif), its labels as they are.  false with a note. */
static bool load_mask(struct report_page *pg, unet_ctx *ctx, const char *path, int classes,
                      int32_t **cls, int32_t **inst, int *h, int *w) {
    unet_image m = {0};
    int32_t *c = NULL;
    *inst = NULL;
    unet_status s = unet_image_load(ctx, path, 0, &m);
    size_t P = (size_t)m.w * m.h;
    int several = 0;
    if (s == UNET_STATUS_OK) {
        c = cls ? malloc(sizeof(int32_t) * P) : NULL, *inst = malloc(sizeof(int32_t) * P);
        s = !*inst || (cls && !c) ? UNET_STATUS_NOMEM
            : cls                 ? unet_mask_to_classes(ctx, &m, classes, path, c)
                                  : UNET_STATUS_OK;
    }
    if (s == UNET_STATUS_OK) s = unet_mask_labels(ctx, &m, path, *inst, &several);
    if (s == UNET_STATUS_OK && cls && !several) {
        int count;
        for (size_t i = 0; i < P; i++) (*inst)[i] = c[i] != 0;
        s = unet_connected_components(ctx, *inst, m.h, m.w, 1, 4, *inst, &count);
    }
    *h = m.h, *w = m.w;
    unet_image_free(&m);
    if (s != UNET_STATUS_OK) {
        report_note(pg, "%s", unet_ctx_errmsg(ctx));
        free(c), free(*inst);
        c = *inst = NULL;
    }
    if (cls) *cls = c;
    return s == UNET_STATUS_OK;
}

/* The three pictures of image i, made to fit in `budget` bytes of base64. */
static bool image_views(struct report_page *pg, unet_ctx *ctx, const struct report_eval *e,
                        const char *pred_dir, const char *truth_dir, const char *image_dir, int i,
                        double budget, double *bytes_per_px, struct report_views *v,
                        char *missing, size_t missing_size) {
    missing[0] = 0;
    char *tp = cli_join(truth_dir, e->names[i]);
    char *pp = pred_dir ? cli_find_match(pred_dir, e->names[i]) : NULL;
    char *stem = cli_stem(e->names[i]);
    char *ip = image_dir ? cli_find_match(image_dir, e->names[i]) : NULL;
    int32_t *tc = NULL, *ti = NULL, *pc = NULL, *pi = NULL;
    uint8_t *img = NULL;
    int h = 0, w = 0, ph = 0, pw = 0, c = 1;
    bool ok = false;
    if (!tp || !stem) goto done;
    if (!pp) {
        snprintf(missing, missing_size, "no prediction file");
        goto done;
    }
    if (!load_mask(pg, ctx, tp, e->classes, &tc, &ti, &h, &w) ||
        !load_mask(pg, ctx, pp, e->classes, &pc, &pi, &ph, &pw))
        goto done;
    if (ph != h || pw != w) {
        report_note(pg, "%s is %dx%d but its truth %s is %dx%d", pp, pw, ph, tp, w, h);
        goto done;
    }
    /* unet predict --instances: the prediction's own instance labels. */
    size_t n = strlen(stem) + 32;
    char *iname = malloc(n);
    char *instp = iname ? (snprintf(iname, n, "%s_instances.tif", stem), cli_join(pred_dir, iname))
                        : NULL;
    free(iname);
    if (instp && access(instp, R_OK) == 0) {
        int32_t *il = NULL;
        int ih, iw;
        if (load_mask(pg, ctx, instp, 2, NULL, &il, &ih, &iw) && ih == h && iw == w)
            free(pi), pi = il, il = NULL;
        free(il);
    }
    free(instp);
    if (ip) {
        unet_image im = {0};
        unet_status s = unet_image_load(ctx, ip, 0, &im);
        if (s == UNET_STATUS_OK && (im.w != w || im.h != h))
            report_note(pg, "%s is %dx%d but its masks are %dx%d; shown without it", ip, im.w,
                        im.h, w, h);
        else if (s == UNET_STATUS_OK) img = report_display_image(ctx, &im, &c);
        else report_note(pg, "%s", unet_ctx_errmsg(ctx));
        unet_image_free(&im);
    } else if (image_dir) {
        snprintf(missing, missing_size, "no input image");
    }
    struct report_masks m = {pc, tc, pi, ti, h, w, img, c};
    /* The largest thumbnail (512 pixels a side at most) whose estimated size fits, then
     * smaller ones while the real size does not (a few tries; the last one stays). */
    int side = w > h ? w : h, f = side > 512 ? (side + 511) / 512 : 1;
    double px = (double)w * h;
    while (f < MAX_SHRINK && px / ((double)f * f) * *bytes_per_px * 4 / 3 > budget) f++;
    for (int tries = 0;; tries++) {
        if (!report_views_make(&m, f, v)) goto done;
        double got = (double)(v->input.len + v->pred.len + v->truth.len) * 4 / 3;
        *bytes_per_px = 0.7 * *bytes_per_px + 0.3 * got * 3 / 4 / ((double)v->w * v->h);
        if (got <= budget || f >= MAX_SHRINK || tries == 5) break;
        report_views_free(v);
        f = (int)fmin(MAX_SHRINK, ceil(f * sqrt(got / budget) * 1.05));
    }
    ok = true;
done:
    free(tp), free(pp), free(stem), free(ip);
    free(tc), free(ti), free(pc), free(pi), free(img);
    return ok;
}

/* What the table's picture cells share: the budget spent so far and what was missing. */
struct gallery {
    struct report_page       *pg;
    unet_ctx                 *ctx;
    const struct report_eval *e;
    const char               *pred_dir, *truth_dir, *image_dir;
    int                       index;            /* the evaluation's, for CSS class names */
    double                    budget, bytes_per_px, used;
    int                       no_pred, no_img;
    struct report_buf         no_pred_names, no_img_names;   /* the first 10 of each */
};

static void add_name(struct report_buf *names, int count, const char *name) {
    if (count > 10) return;
    report_puts(names, count > 1 ? ", " : "");
    report_puts(names, name);
}

/* The cell with image i's pictures: input, prediction and truth side by side.  The input is
 * stored once, as the background of a CSS class the three pictures share (a browser decodes it
 * only when the row is shown). */
static void picture_cell(struct report_buf *b, struct gallery *g, int i) {
    struct report_views v;
    char missing[64] = "";
    double budget = (g->budget - g->used) / (g->e->n - i);
    if (!g->ctx || !image_views(g->pg, g->ctx, g->e, g->pred_dir, g->truth_dir, g->image_dir, i,
                                budget, &g->bytes_per_px, &v, missing, sizeof missing)) {
        if (strcmp(missing, "no prediction file") == 0)
            add_name(&g->no_pred_names, ++g->no_pred, g->e->names[i]);
        report_puts(b, "<td class=muted>");
        report_html(b, missing[0] ? missing : "cannot draw (see the notes above)");
        report_puts(b, "</td>");
        return;
    }
    if (missing[0]) add_name(&g->no_img_names, ++g->no_img, g->e->names[i]);
    size_t before = b->len;
    report_printf(b, "<td><div class=trio data-w=%d data-h=%d data-name='", v.w, v.h);
    report_html(b, g->e->names[i]);
    report_puts(b, "'>");
    if (v.have_input) {
        report_printf(b, "<style>.q%d_%d{background-image:url(data:image/png;base64,", g->index,
                      i);
        report_base64(b, v.input.data, v.input.len);
        report_puts(b, ")}</style>");
    }
    /* Shown 150 pixels high (220 wide at most) in the table, small images enlarged. */
    double s = fmin(150.0 / v.h, 220.0 / v.w);
    for (int k = 0; k < 3; k++) {
        report_printf(b, "<div class='pic q%d_%d' style='width:%.0fpx;height:%.0fpx'>", g->index,
                      i, v.w * s, v.h * s);
        const struct report_buf *png = k == 1 ? &v.pred : k == 2 ? &v.truth : NULL;
        if (png) {
            report_puts(b, "<img alt='' src='data:image/png;base64,");
            report_base64(b, png->data, png->len);
            report_puts(b, "'>");
        } else if (!v.have_input) {
            report_puts(b, "<span>no image</span>");
        }
        report_puts(b, "</div>");
    }
    report_puts(b, "</div></td>");
    g->used += (double)(b->len - before);
    report_views_free(&v);
}

void report_eval_section(struct report_buf *b, struct report_page *pg, struct report_eval *e,
                         int index, int count) {
    char buf[512], t[64];
    report_printf(b, "<section id=eval%d><h2>Evaluation", index);
    if (count > 1) report_printf(b, " %d", index + 1);
    report_puts(b, "</h2><p class=muted>");
    report_printf(b, "%d image%s", e->n, e->n == 1 ? "" : "s");
    if (e->pred_dir) {
        report_puts(b, " &middot; predictions <code>");
        report_html(b, e->pred_dir);
        report_puts(b, "</code>");
    }
    if (e->truth_dir) {
        report_puts(b, " &middot; truth <code>");
        report_html(b, e->truth_dir);
        report_puts(b, "</code>");
    }
    if (e->image_dir) {
        report_puts(b, " &middot; images <code>");
        report_html(b, e->image_dir);
        report_puts(b, "</code>");
    }
    report_printf(b, " &middot; %d classes</p>", e->classes);

    /* Summary lines for a paper. */
    double *sorted = malloc(sizeof(double) * ((size_t)e->n + 1));
    if (!sorted) {
        report_oom(pg);
        report_puts(b, "</section>");
        return;
    }
    report_printf(b, "<h3>Summary <button class=copy data-for=paper%d>copy</button></h3>"
                     "<pre class=paper id=paper%d>", index, index);
    struct report_buf lines = {0};
    summary_lines(e, &lines);
    report_html(b, lines.data);
    report_buf_free(&lines);
    report_puts(b, "</pre><table class=stats><tr><th>metric</th><th class=n>mean</th>"
                   "<th class=n>s.d.</th><th class=n>median</th><th class=n>min</th>"
                   "<th class=n>max</th><th class=n>n</th><th>each image (&#9670; mean, bar "
                   "&plusmn; s.d.)</th><th></th></tr>");
    for (int c = 0; c < e->n_cols; c++) {
        struct stats s = stats_of(e, c, sorted);
        double step = e->better[c] ? 1e-4 : 0.1;
        char v[6][32];
        double x[5] = {s.mean, s.sd, s.median, s.min, s.max};
        for (int k = 0; k < 5; k++)
            if (isfinite(x[k])) report_chart_number(v[k], sizeof v[k], x[k], step);
            else snprintf(v[k], sizeof v[k], "&ndash;");
        report_puts(b, "<tr><td>");
        report_html(b, report_metric_name(e->cols[c], buf, sizeof buf));
        report_printf(b, "</td><td class=n>%s</td><td class=n>%s</td><td class=n>%s</td>"
                         "<td class=n>%s</td><td class=n>%s</td><td class=n>%d</td><td>", v[0],
                      v[1], v[2], v[3], v[4], s.n);
        report_strip_svg(b, sorted, s.n, s.mean, s.sd);
        report_printf(b, "</td><td class=muted>%s</td></tr>",
                      e->better[c] > 0            ? "higher is better"
                      : e->better[c] < 0          ? "lower is better"
                      : strstr(e->cols[c], "thr") ? "threshold"
                                                  : "count");
    }
    report_puts(b, "</table>");
    free(sorted);

    /* The images. */
    char *pred_dir = resolve(e, e->pred_dir), *truth_dir = resolve(e, e->truth_dir);
    char *image_dir = resolve(e, e->image_dir);
    bool pictures = pred_dir && truth_dir && cli_is_dir(pred_dir) && cli_is_dir(truth_dir);
    if (!e->pred_dir || !e->truth_dir)
        report_note(pg, "%s: the evaluation does not name its prediction and truth folders "
                        "(made by an older unet eval?); no pictures",
                    e->source);
    else if (!pictures)
        report_note(pg, "%s or %s: folder not found; no pictures", e->pred_dir, e->truth_dir);
    if (pictures && !e->image_dir)
        report_note(pg, "%s: no image folder (unet eval --images DIR); the pictures show the masks "
                        "without the input images", e->source);
    else if (pictures && !cli_is_dir(image_dir))
        report_note(pg, "%s: image folder not found; the pictures show the masks only",
                    e->image_dir);
    if (image_dir && !cli_is_dir(image_dir)) free(image_dir), image_dir = NULL;

    report_puts(b, "<h3>Images</h3>");
    if (pictures)
        report_puts(b, "<div class=legend><span><i style='background:#eb1e2d'></i>false positive "
                       "(predicted, not in the truth)</span><span><i style='background:#1e64ff'>"
                       "</i>false negative (missed)</span>"
                       "<span><i style='background:linear-gradient(90deg,#f5b942,#4fd17a,#b86bf0)"
                       "'></i>objects: one colour each; a predicted object that matches a true "
                       "one (IoU &gt; 0.5) has its colour</span>"
                       "<span class=muted>click the pictures to enlarge</span></div>");
    report_printf(b, "<div class=pager id=imgs%d-pager><button data-p=first>&laquo;</button>"
                     "<button data-p=-1>&lsaquo;</button><span class=info></span><button "
                     "data-p=1>&rsaquo;</button><button data-p=last>&raquo;</button><input "
                     "placeholder='filter by name'></div>", index);
    report_printf(b, "<div class=scroll><table class=imgs id=imgs%d><thead><tr><th class=n "
                     "data-k=0 data-first=1>#</th><th data-k=1 data-first=1>image</th>%s", index,
                  pictures ? "<th>input &middot; prediction &middot; truth</th>" : "");
    for (int c = 0, k0 = pictures ? 3 : 2; c < e->n_cols; c++) {
        report_printf(b, "<th class='n m' data-k=%d data-first=%d%s title='", c + k0,
                      e->better[c] < 0 ? -1 : 1, c == e->primary ? " data-sort" : "");
        report_html(b, report_metric_name(e->cols[c], buf, sizeof buf));
        report_puts(b, "'>");
        /* Long names wrap after their underscores. */
        for (const char *p = e->cols[c]; *p; p++) {
            char ch[2] = {*p, 0};
            report_html(b, ch);
            if (*p == '_') report_puts(b, "<wbr>");
        }
        report_puts(b, "</th>");
    }
    report_puts(b, "</tr></thead><tbody>");

    struct gallery g = {pg, unet_ctx_create(), e, pred_dir, truth_dir, image_dir, index,
                        REPORT_PICTURE_BYTES / count, 1.0, 0, 0, 0, {0}, {0}};
    for (int i = 0; i < e->n; i++) {
        report_printf(b, "<tr><td class=n data-v=%d>%d</td><td class=nm>", i + 1, i + 1);
        report_html(b, e->names[i]);
        report_puts(b, "</td>");
        if (pictures) picture_cell(b, &g, i);
        for (int c = 0; c < e->n_cols; c++) {
            double v = e->v[(size_t)i * MAX_COLS + c];
            if (!isfinite(v)) report_puts(b, "<td class=n data-v=''>&ndash;</td>");
            else if (e->better[c]) report_chart_number(t, sizeof t, v, 1e-4);
            else snprintf(t, sizeof t, "%.4g", v); /* counts, thresholds */
            if (isfinite(v)) report_printf(b, "<td class=n data-v='%.9g'>%s</td>", v, t);
        }
        report_puts(b, "</tr>");
    }
    unet_ctx_free(g.ctx);
    report_puts(b, "</tbody></table></div>");
    if (g.no_pred)
        report_note(pg, "%d scored image%s no prediction file in %s any more: %s%s", g.no_pred,
                    g.no_pred > 1 ? "s have" : " has", pred_dir, g.no_pred_names.data,
                    g.no_pred > 10 ? ", ..." : "");
    if (g.no_img)
        report_note(pg, "%d image%s no input image in %s: %s%s", g.no_img,
                    g.no_img > 1 ? "s have" : " has", image_dir, g.no_img_names.data,
                    g.no_img > 10 ? ", ..." : "");
    report_buf_free(&g.no_pred_names);
    report_buf_free(&g.no_img_names);

    /* Truth masks that were not scored: no prediction, or a file unet eval could not read. */
    if (pictures) {
        DIR *d = opendir(truth_dir);
        int unscored = 0;
        struct report_buf names = {0};
        for (struct dirent *de; d && (de = readdir(d));) {
            const char *s = de->d_name;
            char *lower = strdup(s);
            if (!lower) break;
            for (char *p = lower; *p; p++) *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            bool image = report_ends_with(lower, ".png") || report_ends_with(lower, ".tif") ||
                         report_ends_with(lower, ".tiff") || report_ends_with(lower, ".npy");
            free(lower);
            if (!image) continue;
            bool found = false;
            for (int i = 0; i < e->n && !found; i++) found = strcmp(e->names[i], s) == 0;
            if (found) continue;
            char *pp = cli_find_match(pred_dir, s);
            if (++unscored <= 20) {
                report_puts(&names, unscored > 1 ? ", " : "");
                report_puts(&names, s);
                report_puts(&names, pp ? "" : " (no prediction)");
            }
            free(pp);
        }
        if (d) closedir(d);
        if (unscored) {
            report_note(pg, "%d truth mask%s in %s %s not scored: %s%s", unscored,
                        unscored > 1 ? "s" : "", truth_dir, unscored > 1 ? "were" : "was",
                        names.data, unscored > 20 ? ", ..." : "");
            report_printf(b, "<p class=muted>Not scored: %d truth mask%s without a usable "
                             "prediction (listed in the notes at the top).</p>", unscored,
                          unscored > 1 ? "s" : "");
        }
        report_buf_free(&names);
    } else if (e->failed) {
        report_note(pg, "%d image%s could not be scored by unet eval", e->failed,
                    e->failed > 1 ? "s" : "");
    }
    free(pred_dir), free(truth_dir), free(image_dir);
    report_puts(b, "</section>");
}

void report_eval_summary(const struct report_eval *e, FILE *f) {
    struct report_buf lines = {0};
    summary_lines(e, &lines);
    if (lines.data) fputs(lines.data, f);
    report_buf_free(&lines);
}
