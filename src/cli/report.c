/* report.c — unet report: training runs and evaluations on one self-contained HTML page.
 *
 * Inputs.  A run is a STEM (a model path without ".safetensors"): STEM.run.json (the
 * settings, written by unet train), STEM.log.csv (one row per step; columns are found by
 * their header names, so logs with more or fewer columns read the same) and the model file.
 * Any of them may be missing; the page says which.  An evaluation is the JSON of
 * `unet eval --json`, which names its prediction, truth and image folders; the pictures are
 * made from those folders.  A folder argument stands for every run and evaluation in it
 * (*.run.json, *.log.csv, eval.json, *.eval.json).
 *
 * The page: a "What is missing" box (first, when there is anything to say), a card per run
 * (status, progress, best validation score, model), the curves of every numeric log column
 * against steps or wall-clock time with all runs on each chart (events of an "event" column
 * marked), the settings side by side with the values that differ between runs marked, and a
 * section per evaluation (report_eval.c).  It is built in memory and written atomically.
 */
#include "cli/report.h"

#include "io/file.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_INPUT_BYTES ((size_t)1 << 30)
#define MAX_CHART_RUNS 16
#define MAX_MARKS 40            /* events of a kind a run may mark; more are only counted */

static const char *COLORS[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1",
                               "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"};

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

/* s without suffix (when it ends with it), malloc'd. */
static char *cut(const char *s, const char *suffix) {
    size_t n = strlen(s);
    if (report_ends_with(s, suffix)) n -= strlen(suffix);
    return strndup(s, n);
}

static bool file_exists(const char *path) {
    struct stat sb;
    return path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static char *read_text(const char *path, size_t *size, char *why, size_t why_size) {
    unet_ctx *ctx = unet_ctx_create();
    unsigned char *buf = NULL;
    size_t n = 0;
    unet_status s = ctx ? unet__read_file(ctx, path, MAX_INPUT_BYTES, &buf, &n) : UNET_STATUS_NOMEM;
    if (s != UNET_STATUS_OK)
        snprintf(why, why_size, "%s", ctx ? unet_ctx_errmsg(ctx) : "out of memory");
    unet_ctx_free(ctx);
    if (size) *size = n;
    return (char *)buf;
}

static const char *human_bytes(char *buf, size_t size, double n) {
    if (n < 1024) snprintf(buf, size, "%.0f B", n);
    else if (n < 1048576) snprintf(buf, size, "%.1f KB", n / 1024);
    else if (n < 1073741824.0) snprintf(buf, size, "%.1f MB", n / 1048576);
    else snprintf(buf, size, "%.2f GB", n / 1073741824.0);
    return buf;
}

static const char *ago(char *buf, size_t size, double seconds) {
    char d[32];
    snprintf(buf, size, "%s ago", cli_duration(seconds < 0 ? 0 : seconds, d, sizeof d));
    return buf;
}

/* ---- the page's state ---- */

struct log_data {
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

struct run {
    char           *stem, *name, *record_path, *log_path, *model_path;
    const char     *color;
    cJSON          *record;
    struct log_data log;
    bool            have_log, have_model, model_ok;
    double          model_bytes, model_mtime, log_mtime;
    size_t          params;
    unet_config     cfg;
    cJSON          *meta;   /* the model's metadata as a JSON object */
};


struct report_page {
    struct run  *runs;
    int          n_runs;
    struct report_eval **evals;
    int                  n_evals;
    char       **notes;
    int          n_notes;
    bool         oom;
};

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

static void log_free(struct log_data *l) {
    for (int i = 0; i < l->n_cols; i++) free(l->cols[i]);
    for (int i = 0; l->event && i < l->n_rows; i++) free(l->event[i]);
    free(l->cols), free(l->v), free(l->event), free(l->time);
    memset(l, 0, sizeof *l);
}

static void page_free(struct report_page *pg) {
    for (int i = 0; i < pg->n_runs; i++) {
        struct run *r = &pg->runs[i];
        free(r->stem), free(r->name), free(r->record_path), free(r->log_path), free(r->model_path);
        cJSON_Delete(r->record);
        cJSON_Delete(r->meta);
        log_free(&r->log);
    }
    for (int i = 0; i < pg->n_evals; i++) report_eval_free(pg->evals[i]);
    for (int i = 0; i < pg->n_notes; i++) free(pg->notes[i]);
    free(pg->runs), free(pg->evals), free(pg->notes);
}

/* ---- the training log ---- */

/* Splits one CSV line in place into at most max fields (quotes with "" escapes). */
static int csv_split(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    while (n < max) {
        char *out = p;
        f[n++] = p;
        if (*p == '"') {
            char *q = p + 1;
            for (;;) {
                if (!*q) break;
                if (*q == '"' && q[1] == '"') *out++ = '"', q += 2;
                else if (*q == '"') {
                    q++;
                    break;
                } else *out++ = *q++;
            }
            p = q;
            while (*p && *p != ',') p++;
        } else {
            while (*p && *p != ',') p++;
            out = p;
        }
        bool more = *p == ',';
        *out = 0;
        if (!more) break;
        p++;
    }
    return n;
}

static int col_index(const struct log_data *l, const char *name) {
    for (int i = 0; i < l->n_cols; i++)
        if (strcmp(l->cols[i], name) == 0) return i;
    return -1;
}

/* The word an event starts with: "rollback" of "rollback:spike;to=120;lr=5e-4". */
static void event_kind(const char *e, char *kind, size_t size) {
    size_t n = strcspn(e, ":;=, ");
    snprintf(kind, size, "%.*s", (int)(n < size ? n : size - 1), e);
}

static int kind_index(const struct log_data *l, const char *kind) {
    for (int k = 0; k < l->n_kinds; k++)
        if (strcmp(l->kinds[k].name, kind) == 0) return k;
    return -1;
}

/* Counts the events of each kind (the first 8 kinds; later ones count as the last). */
static void count_kinds(struct log_data *l) {
    for (int row = 0; row < l->n_rows; row++) {
        if (!l->event[row]) continue;
        char kind[24];
        event_kind(l->event[row], kind, sizeof kind);
        int k = kind_index(l, kind);
        if (k < 0 && l->n_kinds < 8) {
            k = l->n_kinds++;
            snprintf(l->kinds[k].name, sizeof l->kinds[k].name, "%s", kind);
        }
        l->kinds[k < 0 ? 7 : k].count++;
    }
}

/* Whether the event of row is marked on the charts: not when its kind happens more than
 * MAX_MARKS times (unet train --clip logs a clip at every step it clips). */
static bool marked(const struct log_data *l, int row) {
    char kind[24];
    if (!l->event[row]) return false;
    event_kind(l->event[row], kind, sizeof kind);
    int k = kind_index(l, kind);
    return k >= 0 && l->kinds[k].count <= MAX_MARKS;
}

/* Room for one more row; false when memory runs out.  Rows grow by doubling, so memory follows
 * the rows kept, not the lines of a damaged file. */
static bool log_grow(struct log_data *l, int *cap) {
    if (l->n_rows < *cap) return true;
    int n = *cap ? 2 * *cap : 1024;
    double *v = realloc(l->v, sizeof(double) * (size_t)n * (size_t)l->n_cols);
    if (v) l->v = v;
    char **e = realloc(l->event, sizeof(char *) * (size_t)n);
    if (e) l->event = e;
    double *t = realloc(l->time, sizeof(double) * (size_t)n);
    if (t) l->time = t;
    if (!v || !e || !t) return false;
    *cap = n;
    return true;
}

/* Parses text (NUL-terminated, modified) into l; notes what is wrong with it under `name`. */
static bool log_parse(struct report_page *pg, const char *name, char *text, struct log_data *l) {
    memset(l, 0, sizeof *l);
    char *end = text + strlen(text);
    bool torn = end > text && end[-1] != '\n';
    char *line = text, *next;
    /* The header: the first line. */
    next = strchr(line, '\n');
    if (next) *next = 0;
    if (!*line || next == NULL) {
        report_note(pg, "%s: the log is empty or has no complete header line (the run may not have "
                        "started its first step yet)", name);
        return false;
    }
    char **f = malloc(sizeof(char *) * 256);
    if (!f) return false;
    int nc = csv_split(line, f, 256);
    l->cols = calloc((size_t)nc, sizeof(char *));
    if (!l->cols) {
        free(f);
        report_oom(pg);
        return false;
    }
    for (int i = 0; i < nc; i++) {
        char *c = f[i];
        c[strcspn(c, "\r")] = 0;
        l->cols[i] = strdup(c);
        l->n_cols++;
        if (!l->cols[i]) report_oom(pg);
    }
    int c_step = col_index(l, "step"), c_event = col_index(l, "event");
    int c_sec = col_index(l, "seconds");
    if (c_step < 0) {
        report_note(pg, "%s: no 'step' column in the header; not a unet training log", name);
        free(f);
        return false;
    }
    int bad = 0, first_bad = 0, cap = 0;
    double offset = 0, prev_sec = -1;
    for (int ln = 2; next && (line = next + 1) < end; ln++) {
        next = strchr(line, '\n');
        if (!next) break; /* the torn last line */
        *next = 0;
        line[strcspn(line, "\r")] = 0;
        if (!*line) continue;
        int n = csv_split(line, f, 256);
        /* Extra fields belong to a last "event" column whose text held commas. */
        if (n > nc && c_event == nc - 1) {
            for (int k = nc; k < n; k++) f[k][-1] = ',';
            n = nc;
        }
        if (n != nc) {
            if (!bad++) first_bad = ln;
            continue;
        }
        if (!log_grow(l, &cap)) {
            report_oom(pg);
            break;
        }
        int r = l->n_rows;
        l->event[r] = NULL;
        for (int k = 0; k < nc; k++) {
            char *e;
            double v = strtod(f[k], &e);
            l->v[(size_t)r * nc + k] = e != f[k] && *e == 0 ? v : NAN;
        }
        if (isnan(l->v[(size_t)r * nc + c_step])) {
            if (!bad++) first_bad = ln;
            continue;
        }
        if (c_event >= 0 && f[c_event][0] && !(l->event[r] = strdup(f[c_event]))) report_oom(pg);
        double s = c_sec >= 0 ? l->v[(size_t)r * nc + c_sec] : NAN;
        if (isfinite(s) && s < prev_sec) offset += prev_sec; /* a resumed run starts at 0 */
        if (isfinite(s)) prev_sec = s;
        l->time[r] = isfinite(s) ? s + offset : NAN;
        l->n_rows++;
    }
    free(f);
    if (bad)
        report_note(pg, "%s: %d line%s could not be read (the first at line %d: a wrong number of "
                        "fields or no step)", name, bad, bad > 1 ? "s" : "", first_bad);
    if (torn)
        report_note(pg, "%s: the last line is incomplete (the run is writing it, or stopped in the "
                        "middle of it); it is left out", name);
    if (l->n_rows == 0) report_note(pg, "%s: no rows yet (the first step has not finished)", name);
    count_kinds(l);
    return true;
}

/* ---- runs ---- */

static void load_run(struct report_page *pg, struct run *r) {
    char why[512] = "";
    size_t n;
    if (file_exists(r->record_path)) {
        char *t = read_text(r->record_path, &n, why, sizeof why);
        r->record = t ? cJSON_Parse(t) : NULL;
        if (!t) report_note(pg, "%s", why);
        else if (!cJSON_IsObject(r->record))
            report_note(pg, "%s: not a valid run record (damaged JSON); settings are not shown",
                        r->record_path);
        free(t);
        if (r->record && !cJSON_IsObject(r->record)) cJSON_Delete(r->record), r->record = NULL;
    } else {
        report_note(pg, "%s: no run record (an older unet train, or the log of another "
                        "program); the settings are not known", r->record_path);
    }
    /* The log beside the record, else where the record says (unet train --log); the model is
     * always STEM.safetensors (the record is named after it), so a copied or moved run folder
     * reads its own files. */
    const cJSON *lg = cJSON_GetObjectItemCaseSensitive(r->record, "log");
    if (!file_exists(r->log_path) && cJSON_IsString(lg))
        free(r->log_path), r->log_path = report_strdup(lg->valuestring);

    struct stat sb;
    if (r->log_path && stat(r->log_path, &sb) == 0) {
        r->log_mtime = (double)sb.st_mtime;
        char *t = read_text(r->log_path, &n, why, sizeof why);
        if (!t) report_note(pg, "%s", why);
        else r->have_log = log_parse(pg, r->log_path, t, &r->log);
        free(t);
    } else {
        report_note(pg, "%s: the training log is missing; no curves for %s",
                    r->log_path ? r->log_path : "?", r->name);
    }

    if (r->model_path && stat(r->model_path, &sb) == 0) {
        r->have_model = true;
        r->model_bytes = (double)sb.st_size;
        r->model_mtime = (double)sb.st_mtime;
        unet_ctx *ctx = unet_ctx_create();
        unet_model *m = NULL;
        unet_status s = ctx ? unet_model_load(ctx, r->model_path, &m) : UNET_STATUS_NOMEM;
        if (s == UNET_STATUS_OK) {
            r->model_ok = true;
            r->cfg = *unet_model_config(m);
            r->params = unet_model_param_count(m);
            /* What the checkpoint says of itself beyond its architecture. */
            static const char *keys[] = {"selected", "train_steps", "unet_version", "format"};
            r->meta = cJSON_CreateObject();
            for (size_t k = 0; r->meta && k < sizeof keys / sizeof keys[0]; k++)
                if (unet_model_meta(m, keys[k]))
                    cJSON_AddStringToObject(r->meta, keys[k], unet_model_meta(m, keys[k]));
        } else {
            report_note(pg, "%s: the model cannot be loaded: %s", r->model_path,
                        ctx ? unet_ctx_errmsg(ctx) : "out of memory");
        }
        unet_model_free(m);
        unet_ctx_free(ctx);
    } else {
        report_note(pg, "%s: no model file (the run has not written one)", r->model_path ? r->model_path : "?");
    }
}

static void add_run(struct report_page *pg, const char *stem) {
    for (int i = 0; i < pg->n_runs; i++)
        if (strcmp(pg->runs[i].stem, stem) == 0) return;
    struct run *rs = realloc(pg->runs, sizeof *rs * (size_t)(pg->n_runs + 1));
    if (!rs) {
        report_oom(pg);
        return;
    }
    pg->runs = rs;
    struct run *r = &rs[pg->n_runs++];
    memset(r, 0, sizeof *r);
    size_t n = strlen(stem) + 32;
    r->stem = strdup(stem);
    r->record_path = malloc(n), r->log_path = malloc(n), r->model_path = malloc(n);
    if (!r->stem || !r->record_path || !r->log_path || !r->model_path) {
        report_oom(pg);
        pg->n_runs--;
        free(r->stem), free(r->record_path), free(r->log_path), free(r->model_path);
        return;
    }
    snprintf(r->record_path, n, "%s.run.json", stem);
    snprintf(r->log_path, n, "%s.log.csv", stem);
    snprintf(r->model_path, n, "%s.safetensors", stem);
}

/* ---- inputs ---- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_eval(struct report_page *pg, const char *source, const char *json) {
    struct report_eval *e = report_eval_parse(pg, source, json);
    struct report_eval **es = e ? realloc(pg->evals, sizeof *es * (size_t)(pg->n_evals + 1)) : NULL;
    if (e && !es) report_eval_free(e), report_oom(pg);
    if (!es) return;
    pg->evals = es;
    es[pg->n_evals++] = e;
}

static void add_eval_file(struct report_page *pg, const char *path) {
    char why[512];
    char *t = read_text(path, NULL, why, sizeof why);
    if (!t) report_note(pg, "%s", why);
    else add_eval(pg, path, t);
    free(t);
}

static void add_input(struct report_page *pg, const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        report_note(pg, "%s: %s", path, strerror(errno));
        return;
    }
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        if (!d) {
            report_note(pg, "%s: cannot list: %s", path, strerror(errno));
            return;
        }
        char **names = NULL;
        int n = 0, cap = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
            const char *s = de->d_name;
            if (!report_ends_with(s, ".run.json") && !report_ends_with(s, ".log.csv") &&
                strcmp(s, "eval.json") != 0 && !report_ends_with(s, ".eval.json"))
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                char **nn = realloc(names, sizeof(char *) * (size_t)cap);
                if (!nn) break;
                names = nn;
            }
            if ((names[n] = cli_join(path, s))) n++;
        }
        closedir(d);
        if (names) qsort(names, (size_t)n, sizeof(char *), cmp_str);
        int before = pg->n_runs + pg->n_evals;
        for (int i = 0; i < n; i++) {
            if (report_ends_with(names[i], ".json") && !report_ends_with(names[i], ".run.json")) {
                add_eval_file(pg, names[i]);
            } else {
                bool log = report_ends_with(names[i], ".log.csv");
                char *stem = cut(names[i], log ? ".log.csv" : ".run.json");
                if (stem) add_run(pg, stem);
                free(stem);
            }
            free(names[i]);
        }
        free(names);
        if (pg->n_runs + pg->n_evals == before)
            report_note(pg, "%s: no training run (STEM.run.json, STEM.log.csv) or evaluation "
                            "(eval.json, NAME.eval.json) in this folder", path);
        return;
    }
    char *stem = NULL;
    if (report_ends_with(path, ".run.json")) stem = cut(path, ".run.json");
    else if (report_ends_with(path, ".log.csv")) stem = cut(path, ".log.csv");
    else if (report_ends_with(path, ".safetensors")) {
        char *s = cut(path, ".safetensors");
        stem = s ? cut(s, report_ends_with(s, ".last") ? ".last" : ".resume") : NULL;
        free(s);
    } else if (report_ends_with(path, ".json")) {
        add_eval_file(pg, path);
        return;
    } else {
        report_note(pg, "%s: not a run (.run.json, .log.csv, .safetensors), an evaluation "
                        "(.json) or a folder of them", path);
        return;
    }
    if (stem) add_run(pg, stem);
    else report_oom(pg);
    free(stem);
}

/* Run labels: the stem's file name, with its folder when two runs share it. */
static void name_runs(struct report_page *pg) {
    for (int i = 0; i < pg->n_runs; i++) {
        struct run *r = &pg->runs[i];
        const char *base = cli_basename(r->stem);
        bool clash = false;
        for (int k = 0; k < pg->n_runs; k++)
            clash |= k != i && strcmp(cli_basename(pg->runs[k].stem), base) == 0;
        const char *label = base;
        if (clash) {
            label = r->stem;
            for (const char *p = r->stem; p < base - 1; p++)
                if (*p == '/') label = p + 1;
        }
        r->name = report_strdup(label);
        r->color = COLORS[i % (sizeof COLORS / sizeof COLORS[0])];
        if (!r->name) report_oom(pg);
    }
}

/* ---- the page: head ---- */

static const char *const CSS[] = {
    ":root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f4f5f7;--card:#fff;--accent:#3b6fd8}",
    "*{box-sizing:border-box}",
    "body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',",
    "Arial,sans-serif;color:var(--fg);background:var(--bg)}",
    "header{background:#1f2937;color:#fff;padding:16px 32px 14px}",
    "header h1{margin:0;font-size:20px;font-weight:600;letter-spacing:.2px}",
    "header .sub{color:#cbd5e1;font-size:12.5px;margin-top:3px}",
    "nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);",
    "padding:7px 32px;font-size:13px}",
    "nav a{color:var(--accent);text-decoration:none;margin-right:18px}",
    "main{max-width:1320px;margin:0 auto;padding:8px 32px 40px}",
    "section{background:var(--card);border:1px solid var(--line);border-radius:10px;",
    "padding:16px 22px 18px;margin:16px 0;box-shadow:0 1px 2px rgba(16,24,40,.05)}",
    "h2{font-size:17px;margin:0 0 12px}h3{font-size:14px;margin:16px 0 8px;color:#344054}",
    ".muted{color:var(--muted)}code,.mono{font:12.5px ui-monospace,SFMono-Regular,Menlo,",
    "Consolas,monospace}",
    "section.warn{background:#fffbeb;border-color:#f5d37a}",
    "section.warn ul{margin:4px 0 0;padding-left:20px}section.warn li{margin:2px 0}",
    ".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}",
    ".card{border:1px solid var(--line);border-left:5px solid var(--c);border-radius:8px;",
    "padding:10px 14px}",
    ".card .t{font-weight:600;font-size:15px;margin-bottom:4px;word-break:break-all}",
    ".card dl{display:grid;grid-template-columns:auto 1fr;gap:2px 12px;margin:6px 0 0;",
    "font-size:13px}.card dt{color:var(--muted)}.card dd{margin:0;word-break:break-all}",
    ".bar{height:6px;background:#eef0f3;border-radius:3px;margin:6px 0 2px;overflow:hidden}",
    ".bar i{display:block;height:100%;background:var(--c)}",
    ".badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;",
    "font-weight:600;vertical-align:1px;margin-left:6px}",
    ".finished{background:#dcfce7;color:#166534}.running{background:#dbeafe;color:#1e40af}",
    ".interrupted{background:#fef3c7;color:#92400e}.failed,.diverged{background:#fee2e2;"
    "color:#991b1b}",
    ".unknown{background:#eef0f3;color:#475467}",
    ".toolbar{margin:4px 0 10px;font-size:13px}",
    ".seg{display:inline-flex;border:1px solid #cfd4dc;border-radius:6px;overflow:hidden;",
    "margin-left:6px}.seg button{border:0;background:#fff;padding:3px 12px;cursor:pointer;",
    "font:inherit}.seg button.on{background:var(--accent);color:#fff}",
    ".charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:10px}",
    ".charts>div{border:1px solid var(--line);border-radius:8px;padding:6px 4px 0}",
    "svg.chart{width:100%;height:auto;display:block}",
    ".bytime{display:none}body.time .bytime{display:grid}body.time .bystep{display:none}",
    "table{border-collapse:collapse;width:100%;font-size:13px}",
    "th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;",
    "vertical-align:middle}",
    "th{background:#f8f9fb;font-weight:600;color:#344054;white-space:nowrap}",
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}",
    "table.set td:first-child{color:var(--muted);white-space:nowrap}",
    "table.set td{word-break:break-all}table.set tr.sec td{background:#f8f9fb;font-weight:600;",
    "color:#344054;padding-top:9px}table.set td.diff{background:#fff4d6;font-weight:600}",
    "pre.paper{background:#f6f8fa;border:1px solid var(--line);border-radius:8px;padding:10px ",
    "14px;white-space:pre-wrap;margin:6px 0;font-size:13px}",
    "button.copy{font:inherit;font-size:12px;padding:2px 10px;border:1px solid #cfd4dc;",
    "border-radius:6px;background:#fff;cursor:pointer}",
    "table.imgs th[data-k]{cursor:pointer;user-select:none}table.imgs th[data-k]:hover",
    "{background:#eef2f8}table.imgs th.asc:after{content:' \\25B2';font-size:10px}",
    "table.imgs th.desc:after{content:' \\25BC';font-size:10px}",
    "td.nm{min-width:110px;max-width:240px;overflow-wrap:anywhere}th.m{white-space:normal}",
    ".scroll{overflow-x:auto}table.stats{width:auto}table.stats td{padding:3px 10px}",
    "svg.strip{display:block}",
    ".trio{display:flex;gap:6px;cursor:zoom-in}",
    ".pic{position:relative;flex:none;background-color:#2b2b2b;background-size:100% 100%;",
    "image-rendering:pixelated;border-radius:3px;overflow:hidden}",
    ".pic img{position:absolute;left:0;top:0;width:100%;height:100%;image-rendering:pixelated}",
    ".pic span{position:absolute;left:0;right:0;top:40%;text-align:center;color:#aaa;",
    "font-size:11px}",
    ".legend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:12.5px;color:#475467;",
    "margin:8px 0}.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;",
    "vertical-align:-2px;margin-right:5px}",
    ".pager{margin:10px 0;display:flex;align-items:center;gap:6px;font-size:13px}",
    ".pager button{font:inherit;padding:2px 10px;border:1px solid #cfd4dc;border-radius:6px;",
    "background:#fff;cursor:pointer}.pager input{font:inherit;padding:2px 6px;border:1px solid",
    " #cfd4dc;border-radius:6px;width:200px;margin-left:auto}",
    "#lb{position:fixed;inset:0;background:rgba(10,12,16,.88);display:none;z-index:9;",
    "align-items:center;justify-content:center;flex-direction:column;color:#eee;cursor:zoom-out}",
    "#lb.on{display:flex}#lb .trio{gap:12px;cursor:zoom-out}#lb .cap{margin-top:10px;font-size:",
    "13px}",
    "footer{color:var(--muted);font-size:12px;text-align:center;margin:20px 0}",
    NULL};

/* Sorting, paging and filtering the image table, the x-axis switch, the picture viewer and
 * the copy button.  The page reads fine without it: all rows show, curves against steps. */
static const char *const JS[] = {
    "(function(){",
    "var $=function(s,e){return (e||document).querySelectorAll(s)};",
    "$('.seg button').forEach(function(b){b.onclick=function(){",
    "document.body.classList.toggle('time',b.dataset.x=='time');",
    "$('.seg button').forEach(function(o){o.classList.toggle('on',o.dataset.x==b.dataset.x)})}});",
    "$('button.copy').forEach(function(b){b.onclick=function(){",
    "var t=document.getElementById(b.dataset.for).innerText,done=function(){b.textContent=",
    "'copied'};if(navigator.clipboard)navigator.clipboard.writeText(t).then(done,function(){});",
    "var r=document.createRange();r.selectNodeContents(document.getElementById(b.dataset.for));",
    "var s=getSelection();s.removeAllRanges();s.addRange(r);try{document.execCommand('copy');",
    "done()}catch(e){}}});",
    "$('table.imgs').forEach(function(tb){",
    "var body=tb.tBodies[0],rows=[].slice.call(body.rows),per=25,page=0,shown=rows,",
    "pg=document.getElementById(tb.id+'-pager'),info=pg.querySelector('.info'),",
    "q=pg.querySelector('input');",
    "function val(r,k){var v=r.cells[k].dataset.v;return v===undefined?r.cells[k].textContent:",
    "v===''?NaN:+v}",
    "function draw(){var n=Math.max(1,Math.ceil(shown.length/per));if(page>=n)page=n-1;",
    "if(page<0)page=0;rows.forEach(function(r){r.hidden=true});",
    "shown.forEach(function(r,i){r.hidden=i<page*per||i>=(page+1)*per;body.appendChild(r)});",
    "info.textContent='page '+(page+1)+' of '+n+' ('+shown.length+' images)'}",
    "function sort(k,dir){rows.sort(function(a,b){var x=val(a,k),y=val(b,k);",
    "if(typeof x=='string')return dir*x.localeCompare(y);",
    "if(isNaN(x))return isNaN(y)?0:1;if(isNaN(y))return -1;return dir*(x-y)});",
    "$('th',tb).forEach(function(h){h.classList.remove('asc','desc')});",
    "var h=tb.tHead.rows[0].cells[k];h.classList.add(dir>0?'asc':'desc');h.dataset.dir=dir;",
    "filter()}",
    "function filter(){var s=q.value.toLowerCase();shown=rows.filter(function(r){",
    "return !s||r.cells[1].textContent.toLowerCase().indexOf(s)>=0});draw()}",
    "$('th[data-k]',tb).forEach(function(h){h.onclick=function(){var d=h.dataset.dir?-h.dataset",
    ".dir:+h.dataset.first;page=0;sort(+h.dataset.k,d)}});",
    "q.oninput=function(){page=0;filter()};",
    "pg.querySelectorAll('button').forEach(function(b){b.onclick=function(){",
    "var n=Math.ceil(shown.length/per);page=b.dataset.p=='first'?0:b.dataset.p=='last'?n-1:",
    "page+(+b.dataset.p);draw()}});",
    "var h0=tb.tHead.rows[0].querySelector('th[data-sort]');",
    "if(h0)sort(+h0.dataset.k,+h0.dataset.first);else draw()});",
    "var lb=document.getElementById('lb');",
    "$('table.imgs .trio').forEach(function(t){t.onclick=function(){",
    "var c=t.cloneNode(true),w=+t.dataset.w,h=+t.dataset.h,",
    "s=Math.min((innerWidth-80)/(3*w+24),(innerHeight-90)/h);",
    "c.querySelectorAll('.pic').forEach(function(p){p.style.width=w*s+'px';p.style.height=h*s",
    "+'px'});lb.innerHTML='';lb.appendChild(c);var cap=document.createElement('div');",
    "cap.className='cap';cap.textContent=t.dataset.name+'  \\u2014  input \\u00b7 prediction ",
    "\\u00b7 truth';lb.appendChild(cap);lb.classList.add('on')}});",
    "if(lb)lb.onclick=function(){lb.classList.remove('on')};",
    "document.addEventListener('keydown',function(e){if(e.key=='Escape'&&lb)"
    "lb.classList.remove('on')});",
    "})();",
    NULL};

/* ---- the page: runs ---- */

static const cJSON *rec(const struct run *r, const char *section, const char *key) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(r->record, section);
    return key ? cJSON_GetObjectItemCaseSensitive(s, key) : s;
}

static double rec_num(const struct run *r, const char *section, const char *key) {
    const cJSON *v = rec(r, section, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *status_of(const struct run *r, char *detail, size_t size) {
    detail[0] = 0;
    const char *s = report_json_str(r->record, "status");
    double age = (double)time(NULL) - r->log_mtime;
    if (s && strcmp(s, "running") == 0) {
        char a[48];
        if (r->have_log)
            snprintf(detail, size, "last log row written %s%s", ago(a, sizeof a, age),
                     age > 600 ? "; if no unet train is running, it stopped without a clean "
                                 "ending (killed, power loss)"
                               : "");
        return "running";
    }
    static const char *endings[] = {"finished", "interrupted", "diverged", "failed"};
    for (size_t i = 0; s && i < sizeof endings / sizeof endings[0]; i++)
        if (strcmp(s, endings[i]) == 0) return endings[i];
    snprintf(detail, size, "no run record: the ending is not known");
    return "unknown";
}

/* The last value of column c (NaN when none), and the row of the best value of a score. */
static double last_value(const struct log_data *l, int c) {
    for (int i = l->n_rows - 1; c >= 0 && i >= 0; i--)
        if (isfinite(l->v[(size_t)i * l->n_cols + c])) return l->v[(size_t)i * l->n_cols + c];
    return NAN;
}

const char *report_metric_name(const char *col, char *buf, size_t size) {
    static const char *known[][2] = {
        {"loss", "training loss"},     {"lr", "learning rate"},
        {"val_loss", "validation loss"}, {"val_dice", "validation Dice"},
        {"val_iou", "validation IoU"}, {"val_pixel_error", "validation pixel error"},
        {"val_rand_error", "validation Rand error"}, {"dice", "Dice"}, {"iou", "IoU"},
        {"seg", "SEG"}, {"ap50", "AP50"}, {"pixel_error", "pixel error"},
        {"rand_error", "Rand error"}, {"objects_true", "objects (truth)"},
        {"objects_pred", "objects (predicted)"}, {"v_rand", "V_rand"}, {"v_info", "V_info"},
        {"grad_norm", "gradient norm"},
        {"prob.v_rand_at_05", "V_rand of the probabilities at 0.5"},
        {"prob.v_info_at_05", "V_info of the probabilities at 0.5"},
        {"prob.best_v_rand", "best V_rand of the probabilities"},
        {"prob.best_v_info", "best V_info of the probabilities"},
        {"prob.best_v_rand_threshold", "threshold of the best V_rand"},
        {"prob.best_v_info_threshold", "threshold of the best V_info"}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(col, known[i][0]) == 0) {
            snprintf(buf, size, "%s", known[i][1]);
            return buf;
        }
    snprintf(buf, size, "%s", strncmp(col, "val_", 4) == 0 ? col + 4 : col);
    for (char *p = buf; *p; p++)
        if (*p == '_') *p = ' ';
    if (strncmp(col, "val_", 4) == 0) {
        char t[128];
        snprintf(t, sizeof t, "validation %s", buf);
        snprintf(buf, size, "%s", t);
    }
    return buf;
}

static bool lower_is_better(const char *col) {
    return strstr(col, "loss") || strstr(col, "error") || strstr(col, "dist");
}

static void run_card(struct report_buf *b, const struct run *r) {
    char detail[256], t[64], u[64];
    const char *st = status_of(r, detail, sizeof detail);
    report_printf(b, "<div class=card style='--c:%s'><div class=t>", r->color);
    report_html(b, r->name);
    report_printf(b, "<span class='badge %s'>%s</span></div>", st, st);
    const struct log_data *l = &r->log;
    int c_step = r->have_log ? col_index(l, "step") : -1;
    double step = last_value(l, c_step), total = rec_num(r, "recipe", "steps");
    if (isfinite(step) && isfinite(total) && total > 0)
        report_printf(b, "<div class=bar><i style='width:%.1f%%'></i></div>",
                      fmin(100, 100 * step / total));
    report_puts(b, "<dl>");
    if (isfinite(step)) {
        report_printf(b, "<dt>step</dt><dd>%.0f", step);
        if (isfinite(total)) report_printf(b, " of %.0f", total);
        double epoch = last_value(l, r->have_log ? col_index(l, "epoch") : -1);
        if (isfinite(epoch)) report_printf(b, " (epoch %.0f)", epoch);
        report_puts(b, "</dd>");
    }
    if (r->have_log && l->n_rows && isfinite(l->time[l->n_rows - 1]))
        report_printf(b, "<dt>time</dt><dd>%s</dd>",
                      cli_duration(l->time[l->n_rows - 1], t, sizeof t));
    /* The best validation score: Dice when logged, else the first val_ column. */
    int best_c = r->have_log ? col_index(l, "val_dice") : -1;
    for (int c = 0; r->have_log && best_c < 0 && c < l->n_cols; c++)
        if (strncmp(l->cols[c], "val_", 4) == 0 && strcmp(l->cols[c], "val_loss") != 0) best_c = c;
    if (best_c >= 0) {
        bool low = lower_is_better(l->cols[best_c]);
        int bi = -1;
        for (int i = 0; i < l->n_rows; i++) {
            double v = l->v[(size_t)i * l->n_cols + best_c];
            if (isfinite(v) && (bi < 0 || (low ? v < l->v[(size_t)bi * l->n_cols + best_c]
                                               : v > l->v[(size_t)bi * l->n_cols + best_c])))
                bi = i;
        }
        if (bi >= 0)
            report_printf(b, "<dt>best</dt><dd>%s %.4f at step %.0f</dd>",
                          report_metric_name(l->cols[best_c], u, sizeof u),
                          l->v[(size_t)bi * l->n_cols + best_c],
                          l->v[(size_t)bi * l->n_cols + c_step]);
    }
    double loss = last_value(l, r->have_log ? col_index(l, "loss") : -1);
    if (isfinite(loss)) report_printf(b, "<dt>last loss</dt><dd>%.4g</dd>", loss);
    if (detail[0]) {
        report_puts(b, "<dt>status</dt><dd>");
        report_html(b, detail);
        report_puts(b, "</dd>");
    }
    report_puts(b, "<dt>model</dt><dd>");
    if (r->have_model) {
        report_html(b, r->model_path);
        report_printf(b, " <span class=muted>(%s%s)</span>",
                      human_bytes(t, sizeof t, r->model_bytes),
                      r->model_ok ? "" : ", cannot be loaded");
        const char *sel = report_json_str(r->meta, "selected");
        if (sel) {
            report_puts(b, "<br><span class=muted>selected:</span> ");
            report_html(b, sel);
        }
    } else {
        report_puts(b, "<span class=muted>none yet</span>");
    }
    report_puts(b, "</dd></dl></div>");
}

/* Exponential moving average, debiased (TensorBoard's smoothing), over a window of about a
 * thirtieth of the points; NaN values are skipped. */
static void smooth(const double *y, int n, double *out) {
    double a = 1 - 1.0 / fmax(1, n / 30.0), m = 0, wsum = 0;
    for (int i = 0; i < n; i++) {
        if (isfinite(y[i])) m = a * m + (1 - a) * y[i], wsum = a * wsum + (1 - a);
        out[i] = wsum > 0 ? m / wsum : NAN;
    }
}

/* The column's values of one run against step or time: rows of the training phase for the
 * loss and other step columns, rows that hold a value for validation columns. */
struct xy {
    double *x, *y, *ys;
    int     n;
};

static bool series_of(const struct run *r, int c, bool by_time, struct xy *s) {
    const struct log_data *l = &r->log;
    int c_step = col_index(l, "step");
    bool val = strncmp(l->cols[c], "val_", 4) == 0;
    /* A training row has no validation values (the epoch-end rows of today's log repeat the
     * step with the epoch's mean loss): unless every row has them. */
    int n_plain = 0;
    bool *plain = malloc((size_t)l->n_rows + 1);
    s->x = malloc(sizeof(double) * ((size_t)l->n_rows + 1));
    s->y = malloc(sizeof(double) * ((size_t)l->n_rows + 1));
    s->ys = malloc(sizeof(double) * ((size_t)l->n_rows + 1));
    s->n = 0;
    if (!plain || !s->x || !s->y || !s->ys) {
        free(plain);
        return false;
    }
    for (int i = 0; i < l->n_rows; i++) {
        plain[i] = true;
        for (int k = 0; k < l->n_cols; k++)
            if (strncmp(l->cols[k], "val_", 4) == 0 && isfinite(l->v[(size_t)i * l->n_cols + k]))
                plain[i] = false;
        n_plain += plain[i];
    }
    for (int i = 0; i < l->n_rows; i++) {
        double v = l->v[(size_t)i * l->n_cols + c];
        if (val ? !isfinite(v) : (n_plain && !plain[i])) continue;
        s->x[s->n] = by_time ? l->time[i] : l->v[(size_t)i * l->n_cols + c_step];
        s->y[s->n++] = v;
    }
    free(plain);
    return true;
}

static void xy_free(struct xy *s) {
    free(s->x), free(s->y), free(s->ys);
}

static bool skip_column(const char *c) {
    return strcmp(c, "step") == 0 || strcmp(c, "epoch") == 0 || strcmp(c, "seconds") == 0 ||
           strcmp(c, "event") == 0;
}

static const char *event_color(const char *e, bool *line) {
    *line = true;
    if (!strncmp(e, "rollback", 8) || !strncmp(e, "diverge", 7) || !strncmp(e, "nan", 3))
        return "#d62728";
    *line = false;
    if (!strncmp(e, "best", 4)) return "#2ca02c";
    if (!strncmp(e, "clip", 4)) return "#98a2b3";
    *line = true;
    return "#7a5af8";
}

/* Charts of every numeric column that any run logs, all runs on each. */
static void training_charts(struct report_buf *b, struct report_page *pg, bool by_time) {
    const char *cols[64];
    int n_cols = 0;
    for (int i = 0; i < pg->n_runs; i++)
        for (int c = 0; pg->runs[i].have_log && c < pg->runs[i].log.n_cols; c++) {
            const char *name = pg->runs[i].log.cols[c];
            bool seen = skip_column(name);
            for (int k = 0; k < n_cols; k++) seen |= strcmp(cols[k], name) == 0;
            if (!seen && n_cols < 64) cols[n_cols++] = name;
        }
    /* loss first, validation loss and scores next, lr and the rest after. */
    const char *order[64];
    int n = 0;
    for (int pass = 0; pass < 3; pass++)
        for (int k = 0; k < n_cols; k++) {
            bool v = strncmp(cols[k], "val_", 4) == 0, loss = strcmp(cols[k], "loss") == 0;
            if ((pass == 0 && loss) || (pass == 1 && v) || (pass == 2 && !v && !loss))
                order[n++] = cols[k];
        }
    /* One x range for all charts, so that validation points line up with the loss curve. */
    double x_hi = NAN;
    for (int i = 0; i < pg->n_runs; i++) {
        const struct log_data *l = &pg->runs[i].log;
        int c_step = pg->runs[i].have_log ? col_index(l, "step") : -1;
        for (int row = 0; c_step >= 0 && row < l->n_rows; row++) {
            double x = by_time ? l->time[row] : l->v[(size_t)row * l->n_cols + c_step];
            if (isfinite(x) && !(x <= x_hi)) x_hi = x;
        }
    }
    report_printf(b, "<div class='charts %s'>", by_time ? "bytime" : "bystep");
    for (int k = 0; k < n; k++) {
        struct chart_series ser[2 * MAX_CHART_RUNS];
        struct xy xys[MAX_CHART_RUNS];
        struct chart_mark *marks = NULL;
        int ns = 0, nx = 0, nm = 0;
        bool any = false, varies = false;
        for (int i = 0; i < pg->n_runs && nx < MAX_CHART_RUNS; i++) {
            struct run *r = &pg->runs[i];
            int c = r->have_log ? col_index(&r->log, order[k]) : -1;
            if (c < 0) continue;
            struct xy *s = &xys[nx];
            if (!series_of(r, c, by_time, s)) {
                xy_free(s);
                report_oom(pg);
                continue;
            }
            nx++;
            for (int p = 1; p < s->n; p++) varies |= s->y[p] != s->y[0];
            any |= s->n > 0;
            bool noisy = strcmp(order[k], "loss") == 0 && s->n >= 100;
            if (noisy) {
                smooth(s->y, s->n, s->ys);
                ser[ns++] = (struct chart_series){s->x, s->y, s->n, r->color, CHART_FAINT, NULL};
                ser[ns++] = (struct chart_series){s->x, s->ys, s->n, r->color, CHART_LINE, r->name};
            } else {
                ser[ns++] =
                    (struct chart_series){s->x, s->y, s->n, r->color, CHART_POINTS, r->name};
            }
            /* Events of this run. */
            const struct log_data *l = &r->log;
            int c_step = col_index(l, "step");
            for (int row = 0; row < l->n_rows; row++) {
                if (!marked(l, row)) continue;
                struct chart_mark *nmk = realloc(marks, sizeof *marks * (size_t)(nm + 1));
                if (!nmk) break;
                marks = nmk;
                bool line;
                const char *col = event_color(l->event[row], &line);
                marks[nm++] = (struct chart_mark){
                    by_time ? l->time[row] : l->v[(size_t)row * l->n_cols + c_step], col,
                    l->event[row], line};
            }
        }
        bool lr = strcmp(order[k], "lr") == 0;
        if (any && (!lr || varies)) {
            char title[128], note_text[160] = "";
            report_metric_name(order[k], title, sizeof title);
            title[0] = (char)(title[0] >= 'a' && title[0] <= 'z' ? title[0] - 32 : title[0]);
            if (strcmp(order[k], "loss") == 0 && ns > nx)
                snprintf(note_text, sizeof note_text, "pale: every step; line: smoothed");
            else if (strncmp(order[k], "val_", 4) == 0)
                snprintf(note_text, sizeof note_text, "%s is better",
                         lower_is_better(order[k]) ? "lower" : "higher");
            struct chart ch = {title, by_time ? "wall-clock time" : "step", order[k], by_time,
                               strstr(order[k], "loss") || lr ? -1 : 0, ser, ns, marks, nm,
                               note_text[0] ? note_text : NULL, 0, x_hi};
            report_puts(b, "<div>");
            report_chart_svg(b, &ch);
            report_puts(b, "</div>");
        }
        for (int i = 0; i < nx; i++) xy_free(&xys[i]);
        free(marks);
    }
    report_puts(b, "</div>");
}

/* The events of the logs: how many of each kind per run, and a table of the marked ones. */
static void events_list(struct report_buf *b, const struct report_page *pg) {
    int total = 0, rows = 0;
    for (int i = 0; i < pg->n_runs; i++)
        for (int k = 0; pg->runs[i].have_log && k < pg->runs[i].log.n_kinds; k++)
            total += pg->runs[i].log.kinds[k].count;
    if (!total) return;
    report_printf(b, "<details><summary>%d event%s in the log%s: ", total, total > 1 ? "s" : "",
                  pg->n_runs > 1 ? "s" : "");
    for (int i = 0, first = 1; i < pg->n_runs; i++) {
        const struct log_data *l = &pg->runs[i].log;
        for (int k = 0; pg->runs[i].have_log && k < l->n_kinds; k++, first = 0) {
            report_puts(b, first ? "" : ", ");
            if (pg->n_runs > 1) report_html(b, pg->runs[i].name), report_puts(b, " ");
            report_html(b, l->kinds[k].name);
            report_printf(b, " %d", l->kinds[k].count);
        }
    }
    report_printf(b, " (the marks on the top edge of the charts; red: rollback or divergence; "
                     "a kind logged over %d times is only counted)</summary><table><tr>"
                     "<th>run</th><th class=n>step</th><th>event</th></tr>", MAX_MARKS);
    for (int i = 0; i < pg->n_runs; i++) {
        const struct log_data *l = &pg->runs[i].log;
        int c_step = pg->runs[i].have_log ? col_index(l, "step") : -1;
        for (int row = 0; c_step >= 0 && row < l->n_rows; row++) {
            if (!marked(l, row)) continue;
            report_puts(b, "<tr><td>");
            report_html(b, pg->runs[i].name);
            report_printf(b, "</td><td class=n>%.0f</td><td class=mono>",
                          l->v[(size_t)row * l->n_cols + c_step]);
            report_html(b, l->event[row]);
            report_puts(b, "</td></tr>");
            rows++;
        }
    }
    if (!rows) report_puts(b, "<tr><td colspan=3 class=muted>none marked</td></tr>");
    report_puts(b, "</table></details>");
}

/* ---- the page: settings ---- */

static void value_text(const cJSON *v, char *buf, size_t size) {
    buf[0] = 0;
    if (!v) return;
    if (cJSON_IsString(v)) snprintf(buf, size, "%s", v->valuestring);
    else if (cJSON_IsBool(v)) snprintf(buf, size, "%s", cJSON_IsTrue(v) ? "yes" : "no");
    else if (cJSON_IsNumber(v)) snprintf(buf, size, "%.10g", v->valuedouble);
    else if (cJSON_IsNull(v)) snprintf(buf, size, "none");
    else {
        char *s = cJSON_PrintUnformatted(v);
        snprintf(buf, size, "%s", s ? s : "");
        free(s);
    }
}

static void settings_row(struct report_buf *b, const char *label, char (*vals)[512], int n) {
    bool diff = false;
    for (int i = 1; i < n; i++) diff |= strcmp(vals[i], vals[0]) != 0;
    report_puts(b, "<tr><td>");
    report_html(b, label);
    report_puts(b, "</td>");
    for (int i = 0; i < n; i++) {
        report_puts(b, diff ? "<td class=diff>" : "<td>");
        report_html(b, vals[i]);
        report_puts(b, "</td>");
    }
    report_puts(b, "</tr>");
}

static void settings(struct report_buf *b, struct report_page *pg) {
    int n = pg->n_runs;
    char(*vals)[512] = malloc(sizeof *vals * (size_t)(n ? n : 1));
    if (!vals) {
        report_oom(pg);
        return;
    }
    report_puts(b, "<section id=settings><h2>Settings</h2><p class=muted>From each run's "
                   "STEM.run.json and its model file.");
    if (n > 1) report_puts(b, " Values that differ between the runs are marked.");
    report_puts(b, "</p><table class=set><tr><th></th>");
    for (int i = 0; i < n; i++) {
        report_printf(b, "<th><span style='color:%s'>&#9632;</span> ", pg->runs[i].color);
        report_html(b, pg->runs[i].name);
        report_puts(b, "</th>");
    }
    report_puts(b, "</tr>");
    static const char *sections[][2] = {{"architecture", "Architecture"}, {"recipe", "Recipe"},
                                        {"data", "Data"}, {"time", "Time"},
                                        {"machine", "Machine"}};
    for (size_t s = 0; s < 5; s++) {
        /* The keys of this section over all runs, in first-seen order. */
        const char *keys[64];
        int nk = 0;
        for (int i = 0; i < n; i++) {
            const cJSON *sec = rec(&pg->runs[i], sections[s][0], NULL);
            for (const cJSON *v = sec ? sec->child : NULL; v && nk < 64; v = v->next) {
                bool seen = false;
                for (int k = 0; k < nk; k++) seen |= strcmp(keys[k], v->string) == 0;
                if (!seen) keys[nk++] = v->string;
            }
        }
        if (!nk) continue;
        report_printf(b, "<tr class=sec><td colspan=%d>%s</td></tr>", n + 1, sections[s][1]);
        for (int k = 0; k < nk; k++) {
            for (int i = 0; i < n; i++) value_text(rec(&pg->runs[i], sections[s][0], keys[k]),
                                                   vals[i], sizeof vals[i]);
            char label[128];
            snprintf(label, sizeof label, "%s", keys[k]);
            for (char *p = label; *p; p++)
                if (*p == '_') *p = ' ';
            settings_row(b, label, vals, n);
        }
    }
    /* The model file: what it is, as its checkpoint says. */
    report_printf(b, "<tr class=sec><td colspan=%d>Model file</td></tr>", n + 1);
    for (int row = 0; row < 5; row++) {
        static const char *labels[] = {"path", "size", "written", "architecture", "metadata"};
        for (int i = 0; i < n; i++) {
            const struct run *r = &pg->runs[i];
            char *v = vals[i];
            v[0] = 0;
            if (!r->have_model) {
                snprintf(v, 512, "%s", row == 0 ? "(none)" : "");
                continue;
            }
            char t[64];
            if (row == 0) snprintf(v, 512, "%s", r->model_path);
            else if (row == 1) snprintf(v, 512, "%s", human_bytes(t, sizeof t, r->model_bytes));
            else if (row == 2)
                report_time(v, 512, "%Y-%m-%d %H:%M:%S", (time_t)r->model_mtime);
            else if (row == 3 && r->model_ok) {
                char depth[32] = "";
                if (r->cfg.arch == UNET_ARCH_UNET || r->cfg.arch == UNET_ARCH_UNET_PAPER)
                    snprintf(depth, sizeof depth, ", depth %d", r->cfg.depth);
                snprintf(v, 512, "%s, base %d%s, %d classes, %d input channel%s, %zu parameters",
                         unet_arch_name(r->cfg.arch), r->cfg.base, depth, r->cfg.classes,
                         r->cfg.in_channels, r->cfg.in_channels == 1 ? "" : "s", r->params);
            } else if (row == 3) {
                snprintf(v, 512, "cannot be loaded (see above)");
            } else if (row == 4 && r->meta) {
                size_t len = 0;
                for (const cJSON *m = r->meta->child; m && len < 480; m = m->next)
                    len += (size_t)snprintf(v + len, 512 - len, "%s%s=%s", len ? ", " : "",
                                            m->string, m->valuestring);
            }
        }
        settings_row(b, labels[row], vals, n);
    }
    /* The command lines. */
    report_printf(b, "<tr class=sec><td colspan=%d>Command</td></tr><tr><td></td>", n + 1);
    for (int i = 0; i < n; i++) {
        const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(pg->runs[i].record, "command");
        report_puts(b, "<td class=mono>");
        for (const cJSON *a = cJSON_IsArray(cmd) ? cmd->child : NULL; a; a = a->next) {
            if (!cJSON_IsString(a)) continue;
            bool quote = strpbrk(a->valuestring, " \t\"'$*?") != NULL || !*a->valuestring;
            report_puts(b, quote ? "'" : "");
            report_html(b, a->valuestring);
            report_puts(b, quote ? "' " : " ");
        }
        report_puts(b, "</td>");
    }
    report_puts(b, "</tr></table></section>");
    free(vals);
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
    for (int i = 0; CSS[i]; i++) report_puts(b, CSS[i]);
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
    if (pg->n_runs) {
        report_puts(&body, "<section id=training><h2>Training</h2><div class=cards>");
        for (int i = 0; i < pg->n_runs; i++) run_card(&body, &pg->runs[i]);
        report_puts(&body, "</div>");
        bool any_log = false;
        for (int i = 0; i < pg->n_runs; i++)
            any_log |= pg->runs[i].have_log && pg->runs[i].log.n_rows;
        if (any_log) {
            report_puts(&body, "<div class=toolbar><span class=muted>x axis</span><span class=seg>"
                               "<button class=on data-x=step>steps</button><button data-x=time>"
                               "wall-clock time</button></span></div>");
            training_charts(&body, pg, false);
            training_charts(&body, pg, true);
            events_list(&body, pg);
        }
        report_puts(&body, "</section>");
    }
    for (int i = 0; i < pg->n_evals; i++)
        report_eval_section(&body, pg, pg->evals[i], i, pg->n_evals);
    if (pg->n_runs) settings(&body, pg); /* the details last */
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
    for (int i = 0; JS[i]; i++) report_puts(b, JS[i]);
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
        cli_note("wrote %s (%s)", out, human_bytes(sz, sizeof sz, (double)b.len));
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
    for (int i = 0; i < n_inputs; i++) add_input(&pg, inputs[i]);
    if (pg.n_runs == 0 && pg.n_evals == 0) {
        for (int i = 0; i < pg.n_notes; i++) cli_note("note: %s", pg.notes[i]);
        cli_error("report: nothing to report (give run folders, STEM.run.json, STEM.log.csv, "
                  "model files or evaluation JSON)");
        page_free(&pg);
        return CLI_EXIT_FAIL;
    }
    name_runs(&pg);
    for (int i = 0; i < pg.n_runs; i++) load_run(&pg, &pg.runs[i]);
    if (pg.n_runs > MAX_CHART_RUNS)
        report_note(&pg, "%d runs: the charts show the first %d", pg.n_runs, MAX_CHART_RUNS);
    int rc = finish(&pg, inputs, n_inputs, out);
    page_free(&pg);
    return rc;
}

int report_eval(const char *out, const char *json, bool print_json) {
    if (print_json) fputs(json, stdout);
    if (!report_check_out(out)) return CLI_EXIT_FAIL;
    struct report_page pg = {0};
    add_eval(&pg, NULL, json);
    if (pg.n_evals == 0 || report_eval_images(pg.evals[0]) == 0) {
        for (int i = 0; i < pg.n_notes; i++) cli_note("note: %s", pg.notes[i]);
        cli_error("%s: no image was scored; no report", out);
        page_free(&pg);
        return CLI_EXIT_FAIL;
    }
    if (!print_json) report_eval_summary(pg.evals[0], stdout);
    const char *in[] = {"unet eval"};
    int rc = finish(&pg, in, 1, out);
    page_free(&pg);
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
