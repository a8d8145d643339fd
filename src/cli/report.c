/* report.c — unet report: training runs and evaluations on one self-contained HTML page.
 *
 * The page: a "What is missing" box (first, when there is anything to say), the training
 * section (report_train.c), a section per evaluation (report_eval.c) and the settings.  The
 * inputs are read by report_log.c.  It is built in memory and written atomically.  This file
 * holds the page buffer, the notes and the page's frame.
 */
#include "cli/report_page.h"

#include "io/file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the buffer ---- */

/* Room for n more bytes and the NUL after them; false (and oom set) when there is none. */
static bool reserve(struct report_buf *b, size_t n) {
    if (b->oom) return false;
    if (b->len + n + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = true;
        return false;
    }
    b->data = d, b->cap = cap;
    return true;
}

void report_write_bytes(struct report_buf *b, const void *p, size_t n) {
    if (!reserve(b, n)) return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void report_puts(struct report_buf *b, const char *s) {
    report_write_bytes(b, s, strlen(s));
}

/* Formats straight into the buffer: a first pass measures. */
void report_printf(struct report_buf *b, const char *fmt, ...) {
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n >= 0 && reserve(b, (size_t)n)) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
        b->len += (size_t)n;
    }
    va_end(again);
    va_end(ap);
}

void report_html(struct report_buf *b, const char *s) {
    for (const char *p = s; p && *p; p++) {
        switch (*p) {
        case '&': report_puts(b, "&amp;"); break;
        case '<': report_puts(b, "&lt;"); break;
        case '>': report_puts(b, "&gt;"); break;
        case '"': report_puts(b, "&quot;"); break;
        case '\'': report_puts(b, "&#39;"); break;
        default:
            if ((unsigned char)*p < 0x20 && *p != '\n' && *p != '\t') report_puts(b, "?");
            else report_write_bytes(b, p, 1);
        }
    }
}

void report_base64(struct report_buf *b, const void *data, size_t n) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        q[0] = A[v >> 18], q[1] = A[(v >> 12) & 63];
        q[2] = i + 1 < n ? A[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? A[v & 63] : '=';
        report_write_bytes(b, q, 4);
    }
}

void report_buf_free(struct report_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

bool report_save(const char *path, const void *data, size_t n) {
    unet_ctx *ctx = unet_ctx_create();
    struct unet__atomic a;
    unet_status s = ctx ? unet__atomic_begin(ctx, &a, path) : UNET_STATUS_NOMEM;
    if (s == UNET_STATUS_OK) {
        FILE *f = fopen(a.tmp, "wb");
        bool ok = f && fwrite(data, 1, n, f) == n;
        if (f && fclose(f) != 0) ok = false;
        if (!ok) {
            cli_error("%s: cannot write: %s", path, strerror(errno));
            unet__atomic_abort(&a);
            unet_ctx_free(ctx);
            return false;
        }
        s = unet__atomic_commit(ctx, &a);
    }
    if (s != UNET_STATUS_OK) {
        if (ctx) cli_lib_error(ctx, s);
        else cli_error("%s: out of memory", path);
    }
    unet_ctx_free(ctx);
    return s == UNET_STATUS_OK;
}

/* ---- small helpers ---- */

char *report_strdup(const char *s) {
    return s ? strdup(s) : NULL;
}

const char *report_json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

const char *report_time(char *buf, size_t size, const char *fmt, time_t t) {
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, size, fmt, &tm);
    return buf;
}

bool report_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

const char *report_human_bytes(char *buf, size_t size, double n) {
    if (n < 1024) snprintf(buf, size, "%.0f B", n);
    else if (n < 1048576) snprintf(buf, size, "%.1f KB", n / 1024);
    else if (n < 1073741824.0) snprintf(buf, size, "%.1f MB", n / 1048576);
    else snprintf(buf, size, "%.2f GB", n / 1073741824.0);
    return buf;
}

/* ---- the page's notes ---- */

void report_oom(struct report_page *pg) {
    pg->oom = true;
}

void report_note(struct report_page *pg, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **n = realloc(pg->notes, sizeof(char *) * (size_t)(pg->n_notes + 1));
    if (!n || !(n[pg->n_notes] = strdup(buf))) {
        if (n) pg->notes = n;
        report_oom(pg);
        return;
    }
    pg->notes = n;
    pg->n_notes++;
}

/* ---- the page ---- */

static void render(struct report_buf *b, struct report_page *pg, const char *const *inputs,
                   int n_in, const char *out) {
    char when[64];
    report_time(when, sizeof when, "%Y-%m-%d %H:%M", time(NULL));
    report_puts(b, "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
                   "content='width=device-width,initial-scale=1'><title>unet report: ");
    report_html(b, cli_basename(out));
    report_puts(b, "</title><style>");
    for (int i = 0; report_css[i]; i++) report_puts(b, report_css[i]);
    report_printf(b, "</style></head><body><header><h1>unet report</h1><div class=sub>%s "
                     "&middot; unet %s &middot; ", when, UNET_VERSION);
    for (int i = 0; i < n_in; i++) {
        report_puts(b, i ? ", " : "");
        report_html(b, inputs[i]);
    }
    report_puts(b, "</div></header><nav>");
    if (pg->n_runs) report_puts(b, "<a href='#training'>Training</a>");
    for (int i = 0; i < pg->n_evals; i++) {
        report_printf(b, "<a href='#eval%d'>Evaluation", i);
        if (pg->n_evals > 1) report_printf(b, " %d", i + 1);
        report_puts(b, "</a>");
    }
    if (pg->n_runs) report_puts(b, "<a href='#settings'>Settings</a>");
    report_puts(b, "</nav><main>");

    /* The sections first (they add notes), then the notes box in front of them. */
    struct report_buf body = {0};
    if (pg->n_runs) report_training_section(&body, pg);
    for (int i = 0; i < pg->n_evals; i++)
        report_eval_section(&body, pg, pg->evals[i], i, pg->n_evals);
    if (pg->n_runs) report_settings_section(&body, pg); /* the details last */
    if (body.oom) report_oom(pg);
    if (pg->oom) report_note(pg, "out of memory: parts of this page are missing");

    if (pg->n_notes) {
        report_printf(b, "<section class=warn id=missing><h2>What is missing</h2><ul>");
        for (int i = 0; i < pg->n_notes; i++) {
            report_puts(b, "<li>");
            report_html(b, pg->notes[i]);
            report_puts(b, "</li>");
        }
        report_puts(b, "</ul></section>");
    }
    report_write_bytes(b, body.data ? body.data : "", body.len);
    report_buf_free(&body);
    report_puts(b, "</main><div id=lb></div><footer>Made by <code>unet report</code>; "
                   "everything on this page is inside this one file.</footer><script>");
    for (int i = 0; report_js[i]; i++) report_puts(b, report_js[i]);
    report_puts(b, "</script></body></html>\n");
}

static int finish(struct report_page *pg, const char *const *inputs, int n_in, const char *out) {
    struct report_buf b = {0};
    render(&b, pg, inputs, n_in, out);
    for (int i = 0; i < pg->n_notes; i++) cli_note("note: %s", pg->notes[i]);
    int rc = 0;
    if (b.oom) {
        cli_error("%s: out of memory building the page", out);
        rc = CLI_EXIT_FAIL;
    } else if (!report_save(out, b.data, b.len)) {
        rc = CLI_EXIT_FAIL;
    } else {
        char sz[32];
        cli_note("wrote %s (%s)", out, report_human_bytes(sz, sizeof sz, (double)b.len));
    }
    report_buf_free(&b);
    return rc;
}

bool report_check_out(const char *out) {
    if (report_ends_with(out, ".html") || report_ends_with(out, ".htm")) return true;
    cli_error("report: %s: the page's name must end in .html (so that it never replaces a log, "
              "a record or a model)", out);
    return false;
}

int report_write(const char *out, const char *const *inputs, int n_inputs) {
    struct report_page pg = {0};
    for (int i = 0; i < n_inputs; i++) report_add_input(&pg, inputs[i]);
    if (pg.n_runs == 0 && pg.n_evals == 0) {
        for (int i = 0; i < pg.n_notes; i++) cli_note("note: %s", pg.notes[i]);
        cli_error("report: nothing to report (give run folders, STEM.run.json, STEM.log.csv, "
                  "model files or evaluation JSON)");
        report_page_free(&pg);
        return CLI_EXIT_FAIL;
    }
    report_name_runs(&pg);
    for (int i = 0; i < pg.n_runs; i++) report_load_run(&pg, &pg.runs[i]);
    if (pg.n_runs > MAX_CHART_RUNS)
        report_note(&pg, "%d runs: the charts show the first %d", pg.n_runs, MAX_CHART_RUNS);
    int rc = finish(&pg, inputs, n_inputs, out);
    report_page_free(&pg);
    return rc;
}

int report_eval(const char *out, const char *json, bool print_json) {
    if (print_json) fputs(json, stdout);
    if (!report_check_out(out)) return CLI_EXIT_FAIL;
    struct report_page pg = {0};
    report_add_eval(&pg, NULL, json);
    if (pg.n_evals == 0 || report_eval_images(pg.evals[0]) == 0) {
        for (int i = 0; i < pg.n_notes; i++) cli_note("note: %s", pg.notes[i]);
        cli_error("%s: no image was scored; no report", out);
        report_page_free(&pg);
        return CLI_EXIT_FAIL;
    }
    if (!print_json) report_eval_summary(pg.evals[0], stdout);
    const char *in[] = {"unet eval"};
    int rc = finish(&pg, in, 1, out);
    report_page_free(&pg);
    return rc;
}

void report_eval_dirs_json(FILE *f, const char *pred_dir, const char *truth_dir,
                           const char *image_dir, int classes) {
    const char *keys[] = {"pred_dir", "truth_dir", "image_dir"};
    const char *vals[] = {pred_dir, truth_dir, image_dir};
    for (int i = 0; i < 3; i++) {
        /* Absolute paths, so that the record finds its folders from anywhere. */
        char *abs = vals[i] ? realpath(vals[i], NULL) : NULL;
        cJSON *s = vals[i] ? cJSON_CreateString(abs ? abs : vals[i]) : cJSON_CreateNull();
        char *text = s ? cJSON_PrintUnformatted(s) : NULL;
        fprintf(f, "\"%s\": %s, ", keys[i], text ? text : "null");
        free(text);
        free(abs);
        cJSON_Delete(s);
    }
    fprintf(f, "\"classes\": %d, ", classes);
}
