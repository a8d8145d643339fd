/* report_log.c — unet report's inputs: folders, training runs and evaluations, and the
 * training-log parser.
 *
 * A run is a STEM (a model path without ".safetensors"): STEM.run.json (the settings, written
 * by unet train), STEM.log.csv (one row per step; columns are found by their header names, so
 * logs with more or fewer columns read the same) and the model file.  Any of them may be
 * missing; the page says which.  An evaluation is the JSON of `unet eval --json`, which names
 * its prediction, truth and image folders.  A folder argument stands for every run and
 * evaluation in it (*.run.json, *.log.csv, eval.json, *.eval.json).
 */
#include "cli/report_page.h"

#include "io/file.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_INPUT_BYTES ((size_t)1 << 30)

static const char *COLORS[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1",
                               "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"};

/* ---- files ---- */

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

static void log_free(struct page_log *l) {
    for (int i = 0; i < l->n_cols; i++) free(l->cols[i]);
    for (int i = 0; l->event && i < l->n_rows; i++) free(l->event[i]);
    free(l->cols), free(l->v), free(l->event), free(l->time);
    memset(l, 0, sizeof *l);
}

void report_page_free(struct report_page *pg) {
    for (int i = 0; i < pg->n_runs; i++) {
        struct page_run *r = &pg->runs[i];
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

int report_log_col(const struct page_log *l, const char *name) {
    for (int i = 0; i < l->n_cols; i++)
        if (strcmp(l->cols[i], name) == 0) return i;
    return -1;
}

/* The word an event starts with: "rollback" of "rollback:spike;to=120;lr=5e-4". */
static void event_kind(const char *e, char *kind, size_t size) {
    size_t n = strcspn(e, ":;=, ");
    snprintf(kind, size, "%.*s", (int)(n < size ? n : size - 1), e);
}

static int kind_index(const struct page_log *l, const char *kind) {
    for (int k = 0; k < l->n_kinds; k++)
        if (strcmp(l->kinds[k].name, kind) == 0) return k;
    return -1;
}

/* Counts the events of each kind (the first 8 kinds; later ones count as the last). */
static void count_kinds(struct page_log *l) {
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

bool report_log_marked(const struct page_log *l, int row) {
    char kind[24];
    if (!l->event[row]) return false;
    event_kind(l->event[row], kind, sizeof kind);
    int k = kind_index(l, kind);
    return k >= 0 && l->kinds[k].count <= MAX_MARKS;
}

/* Room for one more row; false when memory runs out.  Rows grow by doubling, so memory follows
 * the rows kept, not the lines of a damaged file. */
static bool log_grow(struct page_log *l, int *cap) {
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
static bool log_parse(struct report_page *pg, const char *name, char *text, struct page_log *l) {
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
    int c_step = report_log_col(l, "step"), c_event = report_log_col(l, "event");
    int c_sec = report_log_col(l, "seconds");
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

void report_load_run(struct report_page *pg, struct page_run *r) {
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
    struct page_run *rs = realloc(pg->runs, sizeof *rs * (size_t)(pg->n_runs + 1));
    if (!rs) {
        report_oom(pg);
        return;
    }
    pg->runs = rs;
    struct page_run *r = &rs[pg->n_runs++];
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

void report_add_eval(struct report_page *pg, const char *source, const char *json) {
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
    else report_add_eval(pg, path, t);
    free(t);
}

void report_add_input(struct report_page *pg, const char *path) {
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

void report_name_runs(struct report_page *pg) {
    for (int i = 0; i < pg->n_runs; i++) {
        struct page_run *r = &pg->runs[i];
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
