/* cli.c — option parsing, messages, file lists and progress lines for the subcommands. */
#include "cli/cli.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- messages ---- */

/* Prints "unet: <prefix><message>" as one line: messages can quote bytes from a damaged file
 * (a tensor name, a metadata value), and a control character there must not split the line
 * or drive the terminal, so each becomes '?'. */
static _Thread_local struct cli_log *capture; /* cli_capture */

static void print_line(const char *prefix, const char *fmt, va_list ap) {
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    if (capture) cli_log_printf(capture, "unet: %s%s\n", prefix, buf);
    else fprintf(stderr, "unet: %s%s\n", prefix, buf);
}

void cli_capture(struct cli_log *log) {
    capture = log;
}

void cli_log_printf(struct cli_log *log, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (log->len + (size_t)n + 1 > log->cap) {
        size_t cap = 2 * (log->len + (size_t)n + 1);
        char *t = realloc(log->text, cap);
        if (!t) { /* out of memory: said now rather than never */
            va_start(ap, fmt);
            vfprintf(stderr, fmt, ap);
            va_end(ap);
            return;
        }
        log->text = t, log->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(log->text + log->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    log->len += (size_t)n;
}

void cli_message(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char buf[4096];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (capture) cli_log_printf(capture, "%s", buf);
    else fputs(buf, stderr);
}

void cli_log_flush(struct cli_log *log) {
    if (log->len) fwrite(log->text, 1, log->len, stderr);
    free(log->text);
    memset(log, 0, sizeof *log);
}

void cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_line("error: ", fmt, ap);
    va_end(ap);
}

void cli_lib_error(unet_ctx *ctx, unet_status s) {
    cli_error("%s: %s", unet_status_str(s), unet_ctx_errmsg(ctx));
}

void cli_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_line("", fmt, ap);
    va_end(ap);
}

/* ---- options ---- */

void cli_usage(FILE *f, const char *cmd, const char *synopsis, const struct cli_opt *opts, int n) {
    fprintf(f, "usage: unet %s %s\n\noptions:\n", cmd, synopsis);
    for (int i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", opts[i].name, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        fprintf(f, "  %-24s %s\n", left, opts[i].help);
    }
}

static bool parse_int(const char *s, int *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno || v < -2147483647L || v > 2147483647L) return false;
    *out = (int)v;
    return true;
}

static bool parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float *out) {
    double v;
    if (!parse_double(s, &v) || fabs(v) > 3.4e38) return false;
    *out = (float)v;
    return true;
}

bool cli_parse(const char *cmd, const char *synopsis, int argc, char **argv, int first,
               const struct cli_opt *opts, int n_opts, const char **pos, int max_pos, int *n_pos) {
    int np = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_usage(stdout, cmd, synopsis, opts, n_opts);
            exit(0);
        }
        if (strcmp(a, "--") == 0) { /* the end of the options: the rest is positional */
            for (i++; i < argc; i++) {
                if (np >= max_pos || !pos) {
                    cli_error("%s: unexpected argument '%s' (see unet %s --help)", cmd, argv[i], cmd);
                    return false;
                }
                pos[np++] = argv[i];
            }
            break;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (np >= max_pos || !pos) {
                cli_error("%s: unexpected argument '%s' (see unet %s --help)", cmd, a, cmd);
                return false;
            }
            pos[np++] = a;
            continue;
        }
        /* --name=value is accepted too. */
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        int k;
        for (k = 0; k < n_opts; k++)
            if (strlen(opts[k].name) == len && strncmp(opts[k].name, a, len) == 0) break;
        if (k == n_opts) {
            cli_error("%s: unknown option '%.*s' (see unet %s --help)", cmd, (int)len, a, cmd);
            return false;
        }
        const struct cli_opt *o = &opts[k];
        if (o->kind == CLI_FLAG) {
            if (eq) {
                cli_error("%s: %s takes no value", cmd, o->name);
                return false;
            }
            *(bool *)o->dst = true;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) {
            cli_error("%s: %s needs a value (%s)", cmd, o->name, o->arg ? o->arg : "value");
            return false;
        }
        bool ok = true;
        switch (o->kind) {
        case CLI_INT: ok = parse_int(v, o->dst); break;
        case CLI_FLOAT: ok = parse_float(v, o->dst); break;
        case CLI_DOUBLE: ok = parse_double(v, o->dst); break;
        case CLI_STR: *(const char **)o->dst = v; break;
        case CLI_FLAG: break;
        }
        if (!ok) {
            cli_error("%s: %s: '%s' is not a valid %s", cmd, o->name, v,
                      o->kind == CLI_INT ? "integer" : "number");
            return false;
        }
    }
    if (n_pos) *n_pos = np;
    return true;
}

/* ---- files ---- */

bool cli_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || name[0] == '.') return false;
    char ext[8];
    size_t n = strlen(dot + 1);
    if (n >= sizeof ext) return false;
    for (size_t i = 0; i <= n; i++) ext[i] = (char)tolower((unsigned char)dot[1 + i]);
    return strcmp(ext, "png") == 0 || strcmp(ext, "tif") == 0 || strcmp(ext, "tiff") == 0 ||
           strcmp(ext, "npy") == 0;
}

char *cli_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) return NULL;
    size_t dl = strlen(dir);
    snprintf(p, n, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", name);
    return p;
}

const char *cli_basename(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

char *cli_stem(const char *path) {
    const char *b = cli_basename(path);
    const char *dot = strrchr(b, '.');
    size_t n = dot && dot != b ? (size_t)(dot - b) : strlen(b);
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, b, n);
    s[n] = 0;
    return s;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void cli_files_free(struct cli_files *f) {
    for (int i = 0; i < f->count; i++) free(f->paths[i]);
    free(f->paths);
    f->paths = NULL;
    f->count = 0;
}

/* quiet: no messages at all (a listing for the path rule). */
static bool list_images(const char *path, struct cli_files *out, bool quiet) {
    out->paths = NULL;
    out->count = 0;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (!quiet) cli_error("%s: %s", path, strerror(errno));
        return false;
    }
    if (!S_ISDIR(sb.st_mode)) {
        out->paths = malloc(sizeof(char *));
        if (!out->paths || !(out->paths[0] = strdup(path))) {
            free(out->paths);
            out->paths = NULL;
            if (!quiet) cli_error("out of memory");
            return false;
        }
        out->count = 1;
        return true;
    }
    DIR *d = opendir(path);
    if (!d) {
        if (!quiet) cli_error("%s: cannot list: %s", path, strerror(errno));
        return false;
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_image_name(e->d_name)) continue;
        char *p = cli_join(path, e->d_name);
        if (!p || cli_is_dir(p)) {
            free(p);
            continue;
        }
        /* A FIFO would block the reader forever, a device is no image: only regular files. */
        if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            if (!quiet) cli_note("%s: not a regular file (a FIFO, device or socket); skipped", p);
            free(p);
            continue;
        }
        if (out->count == cap) {
            cap = cap ? 2 * cap : 64;
            char **np = realloc(out->paths, sizeof(char *) * (size_t)cap);
            if (!np) {
                free(p);
                closedir(d);
                cli_files_free(out);
                if (!quiet) cli_error("out of memory listing %s", path);
                return false;
            }
            out->paths = np;
        }
        out->paths[out->count++] = p;
    }
    closedir(d);
    if (out->count == 0) {
        if (!quiet) cli_error("%s: no images (.png, .tif, .tiff, .npy) in this directory", path);
        return false;
    }
    qsort(out->paths, (size_t)out->count, sizeof(char *), cmp_str);
    return true;
}

bool cli_list_images(const char *path, struct cli_files *out) {
    return list_images(path, out, false);
}

bool cli_list_images_quiet(const char *path, struct cli_files *out) {
    return list_images(path, out, true);
}

char *cli_find_match(const char *dir, const char *path) {
    char *p = cli_join(dir, cli_basename(path));
    if (!p) return NULL;
    if (access(p, R_OK) == 0) return p;
    free(p);
    char *stem = cli_stem(path);
    if (!stem) return NULL;
    static const char *exts[] = {".png", ".tif", ".tiff", ".npy", ".PNG", ".TIF", ".TIFF"};
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        size_t n = strlen(stem) + strlen(exts[i]) + 1;
        char *name = malloc(n);
        if (!name) break;
        snprintf(name, n, "%s%s", stem, exts[i]);
        p = cli_join(dir, name);
        free(name);
        if (p && access(p, R_OK) == 0) {
            free(stem);
            return p;
        }
        free(p);
    }
    free(stem);
    return NULL;
}

bool cli_mkdir(const char *dir) {
    if (cli_is_dir(dir)) return true;
    /* mkdir -p: each missing level from the top. */
    char *p = strdup(dir);
    if (!p) {
        cli_error("out of memory");
        return false;
    }
    bool ok = true;
    for (char *s = p + 1; ok; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (!cli_is_dir(p) && mkdir(p, 0777) != 0 && errno != EEXIST) {
            cli_error("%s: cannot create the directory: %s", p, strerror(errno));
            ok = false;
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    if (ok && !cli_is_dir(dir)) {
        cli_error("%s exists and is not a directory", dir);
        ok = false;
    }
    return ok;
}

/* ---- values ---- */

bool cli_parse_norm(const char *s, unet_norm *out) {
    static const struct {
        const char *name;
        unet_norm   norm;
    } names[] = {{"auto", UNET_NORM_AUTO}, {"percentile", UNET_NORM_PERCENTILE},
                 {"max", UNET_NORM_MAX}, {"none", UNET_NORM_NONE}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].norm;
            return true;
        }
    cli_error("--norm: '%s' (expected auto, percentile, max or none)", s);
    return false;
}

bool cli_parse_max_pixels(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!isdigit((unsigned char)s[0]) || *end || errno || v == 0) {
        cli_error("--max-pixels: '%s' (expected a positive number of pixels)", s);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

bool cli_parse_size(const char *s, int *h, int *w) {
    char *end;
    long a = strtol(s, &end, 10);
    long b = a;
    if (*end == 'x' || *end == 'X') b = strtol(end + 1, &end, 10);
    if (*end || a < 1 || b < 1 || a > 1 << 20 || b > 1 << 20) {
        cli_error("size '%s': expected HxW or N (positive)", s);
        return false;
    }
    *h = (int)a;
    *w = (int)b;
    return true;
}

/* ---- progress ---- */

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *cli_duration(double s, char *buf, size_t size) {
    if (!(s >= 0)) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, size, "%lds", t);
    return buf;
}

void cli_progress_init(struct cli_progress *p) {
    p->tty = isatty(fileno(stderr));
    p->start = cli_now();
    p->last_len = 0;
}

void cli_progress_line(struct cli_progress *p, const char *fmt, ...) {
    if (!p->tty) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    fprintf(stderr, "\r%s%*s", line, p->last_len > n ? p->last_len - n : 0, "");
    fflush(stderr);
    p->last_len = n;
}

void cli_progress_done(struct cli_progress *p) {
    if (p->tty && p->last_len) fputc('\n', stderr);
    p->last_len = 0;
}

/* ---- images ---- */

bool cli_nonfinite_to_zero(const char *path, float *x, size_t n) {
    size_t k = unet_count_nonfinite(x, n);
    if (k == 0) return true;
    if (k == n) {
        cli_error("%s: every value is NaN or infinite: nothing to predict", path);
        return false;
    }
    cli_note("warning: %s: %zu of %zu values are NaN or infinite; they are set to 0 (after "
             "normalisation)", path, k, n);
    for (size_t i = 0; i < n; i++)
        if (!(x[i] - x[i] == 0.0f)) x[i] = 0.0f;
    return true;
}

bool cli_load_image(unet_ctx *ctx, const char *path, int page, unet_norm norm, float **data,
                    int *c, int *h, int *w) {
    unet_image img = {0};
    unet_status s = unet_image_load(ctx, path, page, &img);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    size_t n = (size_t)img.c * img.h * img.w;
    float *f = malloc(sizeof(float) * (n ? n : 1));
    if (!f) {
        cli_error("%s: out of memory", path);
        unet_image_free(&img);
        return false;
    }
    s = unet_image_to_float(ctx, &img, norm, f);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        free(f);
        unet_image_free(&img);
        return false;
    }
    *data = f;
    *c = img.c;
    *h = img.h;
    *w = img.w;
    unet_image_free(&img);
    return true;
}
