/* cli.c — option parsing, messages, file lists and progress lines for the subcommands. */
#include "cli/cli.h"
#include "cli/dist.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
    const char *who = *prefix ? dist_who() : "";
    if (capture) cli_log_printf(capture, "unet: %s%s%s\n", prefix, who, buf);
    else fprintf(stderr, "unet: %s%s%s\n", prefix, who, buf);
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

/* Ranks other than 0 of an MPI run keep their notes to themselves (rank 0 says them); their
 * errors name the rank and the host (dist_who). */
static bool notes_off(void) {
    return dist_rank() > 0;
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

void cli_silence(void) {
    fflush(stderr);
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0) dup2(fd, STDERR_FILENO), close(fd);
}

void cli_note(const char *fmt, ...) {
    if (notes_off()) return;
    va_list ap;
    va_start(ap, fmt);
    print_line("", fmt, ap);
    va_end(ap);
}

/* ---- files ---- */

bool cli_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool has_ext_ci(const char *path, const char *ext) {
    size_t n = strlen(path), k = strlen(ext);
    if (n < k) return false;
    for (size_t i = 0; i < k; i++)
        if (tolower((unsigned char)path[n - k + i]) != tolower((unsigned char)ext[i])) return false;
    return true;
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

bool cli_parse_precision(const char *s, unet_precision *out) {
    unet_ctx *ctx = unet_ctx_create();
    bool ok = ctx && unet_precision_parse(ctx, s, out) == UNET_STATUS_OK;
    if (!ok) cli_error("--precision: '%s' (expected fp32 or bf16)", s);
    unet_ctx_free(ctx);
    return ok;
}

/* The precision a model runs at, said once on stderr for bf16 (unless quiet): it runs, or falls
 * back to fp32 on a CPU without AVX512_BF16. */
void cli_set_precision(unet_ctx *ctx, unet_model *m, unet_precision p, bool quiet) {
    unet_model_set_precision(ctx, m, p);
    cli_precision_note(p, quiet);
}

void cli_precision_note(unet_precision p, bool quiet) {
    if (quiet || p == UNET_PRECISION_FP32) return;
    if (unet_precision_native(p)) cli_note("bf16 products (AVX512_BF16), float32 elsewhere");
    else cli_note("--precision bf16: this CPU lacks AVX512_BF16 (or UNET_CPU caps it); fp32");
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

bool cli_input_parse(struct cli_input *in, const char *axis, const char *channels,
                     const char *norm) {
    memset(in, 0, sizeof *in);
    in->opts = unet_image_defaults();
    in->norm = UNET_NORM_AUTO;
    in->axis_arg = axis;
    in->channels_arg = channels;
    unet_ctx *ctx = unet_ctx_create();
    bool ok = ctx != NULL;
    int c;
    if (ok && axis && unet_channel_axis_parse(ctx, axis, &in->opts.channel_axis) != UNET_STATUS_OK) {
        cli_error("--channel-axis: %s", unet_ctx_errmsg(ctx));
        ok = false;
    }
    if (ok && channels && unet_channels_count(ctx, channels, 0, NULL, &c) != UNET_STATUS_OK) {
        cli_error("--channels: %s", unet_ctx_errmsg(ctx));
        ok = false;
    }
    unet_ctx_free(ctx);
    if (ok && channels && strcmp(channels, "all") != 0) in->channels = channels;
    return ok && (!norm || cli_parse_norm(norm, &in->norm));
}

bool cli_input_from_model(struct cli_input *in, const unet_model *m, const char *from,
                          bool strict, bool quiet) {
    int axis;
    const char *channels;
    unet_model_input(m, &axis, &channels);
    char a[8], b[8];
    const char *have = unet_channel_axis_name(in->opts.channel_axis, a);
    const char *rec = unet_channel_axis_name(axis, b);
    if (strict && ((in->axis_arg && strcmp(have, rec) != 0) ||
                   (in->channels_arg && strcmp(in->channels ? in->channels : "all",
                                               channels ? channels : "all") != 0))) {
        cli_error("%s was trained with --channel-axis %s --channels %s; a resumed run reads its "
                  "data the same way (drop the options, or give these)", from, rec,
                  channels ? channels : "all");
        return false;
    }
    if (!in->axis_arg && axis != UNET_CHANNEL_AXIS_AUTO) {
        in->opts.channel_axis = axis;
        if (!quiet) cli_note("%s: reading images with --channel-axis %s (as it was trained)", from, rec);
    }
    if (!in->channels_arg && channels) {
        in->channels = channels;
        if (!quiet) cli_note("%s: using --channels %s (as it was trained)", from, channels);
    }
    return true;
}

bool cli_input_done(unet_ctx *ctx, const struct cli_input *in, unet_model *m) {
    unet_status s = unet_model_set_input(ctx, m, in->opts.channel_axis, in->channels);
    if (s != UNET_STATUS_OK) cli_lib_error(ctx, s);
    return s == UNET_STATUS_OK;
}

bool cli_image_pages(unet_ctx *ctx, const struct cli_input *in, const char *path, int *pages) {
    unet_status s = unet_image_pages_with(ctx, path, &in->opts, pages);
    if (s != UNET_STATUS_OK) cli_lib_error(ctx, s);
    return s == UNET_STATUS_OK;
}

bool cli_image_channels(unet_ctx *ctx, const struct cli_input *in, const char *path, int page,
                        unet_image *info, int *channels) {
    unet_status s = unet_image_info_with(ctx, path, page, &in->opts, info);
    if (s == UNET_STATUS_OK) s = unet_channels_count(ctx, in->channels, info->c, path, channels);
    if (s != UNET_STATUS_OK) cli_lib_error(ctx, s);
    return s == UNET_STATUS_OK;
}

void cli_channels_mismatch(const struct cli_input *in, const char *path, const unet_image *info,
                           int channels, int want, const char *want_what) {
    char hint[256] = "";
    if (in->channels)
        snprintf(hint, sizeof hint, " (after --channels %s)", in->channels);
    else if (want == 1 && info->c == 3)
        snprintf(hint, sizeof hint, ": --channels gray converts RGB to its luminance, "
                 "--channels N takes channel N");
    else if (want == 1 && has_ext_ci(path, ".npy"))
        snprintf(hint, sizeof hint, ": --channel-axis none reads a (N, H, W) array as N images, "
                 "--channels gray averages them, --channels N takes one");
    else if (want < info->c)
        snprintf(hint, sizeof hint, ": choose %d with --channels (like --channels 0%s)", want,
                 want > 1 ? ",1" : "");
    else if (has_ext_ci(path, ".npy") || has_ext_ci(path, ".tif") || has_ext_ci(path, ".tiff"))
        snprintf(hint, sizeof hint, ": --channel-axis says where the channels are "
                 "(docs/images.md)");
    cli_error("%s has %d channel%s; %s %d%s", path, channels, channels == 1 ? "" : "s",
              want_what, want, hint);
}

bool cli_load_image(unet_ctx *ctx, const struct cli_input *in, const char *path, int page,
                    float **data, int *c, int *h, int *w) {
    unet_image img = {0};
    unet_status s = unet_image_load_with(ctx, path, page, &in->opts, &img);
    if (s == UNET_STATUS_OK) s = unet_image_select_channels(ctx, &img, in->channels, path);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        unet_image_free(&img);
        return false;
    }
    size_t n = (size_t)img.c * img.h * img.w;
    float *f = malloc(sizeof(float) * (n ? n : 1));
    if (!f) {
        cli_error("%s: out of memory", path);
        unet_image_free(&img);
        return false;
    }
    s = unet_image_to_float(ctx, &img, in->norm, f);
    *c = img.c;
    *h = img.h;
    *w = img.w;
    unet_image_free(&img);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        free(f);
        return false;
    }
    if (!cli_nonfinite_to_zero(path, f, n)) {
        free(f);
        return false;
    }
    *data = f;
    return true;
}

static const char *const mask_exts[] = {".png", ".tif", ".tiff", ".npy", ".PNG", ".TIF", ".TIFF",
                                        ".NPY"};

char *cli_find_mask(const char *dir, const char *path) {
    char *p = cli_join(dir, cli_basename(path));
    if (!p) return NULL;
    if (access(p, R_OK) == 0) return p;
    free(p);
    char *stem = cli_stem(path), *found = NULL, *other = NULL;
    struct stat first = {0}, sb;
    for (size_t i = 0; stem && i < sizeof mask_exts / sizeof mask_exts[0]; i++) {
        size_t n = strlen(stem) + strlen(mask_exts[i]) + 1;
        char name[4096];
        if (n > sizeof name) break;
        snprintf(name, sizeof name, "%s%s", stem, mask_exts[i]);
        p = cli_join(dir, name);
        if (!p || stat(p, &sb) != 0 || access(p, R_OK) != 0 ||
            (found && sb.st_dev == first.st_dev && sb.st_ino == first.st_ino)) {
            free(p);   /* missing, or the same file again (a directory that ignores case) */
            continue;
        }
        if (!found) found = p, first = sb;
        else if (!other) other = p;
        else free(p);
    }
    free(stem);
    if (!found) {
        cli_error("%s: no mask with the same name in %s", path, dir);
        return NULL;
    }
    if (other) {
        cli_error("%s: several masks in %s have its name (%s, %s): which one is its mask is "
                  "ambiguous; rename them", path, dir, cli_basename(found), cli_basename(other));
        free(found), free(other);
        return NULL;
    }
    /* An image with the mask's full name exists beside path: the mask is that image's. */
    char *img_dir = strdup(path);
    char *slash = img_dir ? strrchr(img_dir, '/') : NULL;
    if (img_dir) {
        if (slash) *slash = 0;
        char *sibling = slash ? cli_join(img_dir, cli_basename(found)) : strdup(cli_basename(found));
        if (sibling && strcmp(sibling, path) != 0 && access(sibling, F_OK) == 0) {
            cli_error("%s and %s have the same name: the mask %s is %s's (the same file name); "
                      "give each image a mask of its own name", path, sibling, found, sibling);
            free(sibling), free(img_dir), free(found);
            return NULL;
        }
        free(sibling);
    }
    free(img_dir);
    return found;
}

