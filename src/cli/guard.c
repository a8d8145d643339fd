/* guard.c — what keeps the user's files safe from the unet command (docs/robustness.md):
 *
 *   - the path rule: before any work, no file a run writes may be a file it reads, or a file
 *     another output of the same run writes (compared by device and inode after following
 *     links, so hard links, symbolic links and other spellings of a path are caught; writes
 *     that do not exist yet by their resolved directory and name, case-insensitively where the
 *     directory folds case).  An existing target that is not a unet file of its kind (a model,
 *     a training log, a lock file) is refused unless --force.
 *   - one writer: an advisory lock (flock) on a lock file or an output directory.
 *   - the training log: created and cut back through a temporary file and a rename, never by
 *     truncating what is there.
 */
#include "cli/cli.h"
#include "io/file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the path rule ---- */

static void uses_add(struct cli_uses *us, const char *path, const char *role, const char *of,
                     bool write, enum cli_out_kind kind, int group) {
    if (us->oom || !path) return;
    if (us->n == us->cap) {
        int cap = us->cap ? 2 * us->cap : 32;
        struct cli_use *nu = realloc(us->u, sizeof *nu * (size_t)cap);
        if (!nu) {
            us->oom = true;
            return;
        }
        us->u = nu;
        us->cap = cap;
    }
    struct cli_use *u = &us->u[us->n];
    memset(u, 0, sizeof *u);
    u->path = strdup(path);
    if (!u->path) {
        us->oom = true;
        return;
    }
    u->role = role;
    u->of = of;
    u->write = write;
    u->kind = kind;
    u->group = group;
    us->n++;
}

void cli_uses_read(struct cli_uses *us, const char *path, const char *role, int group) {
    uses_add(us, path, role, NULL, false, CLI_OUT_ANY, group);
}

void cli_uses_write(struct cli_uses *us, const char *path, const char *role, const char *of,
                    enum cli_out_kind kind, int group) {
    uses_add(us, path, role, of, true, kind, group);
}

void cli_uses_read_images(struct cli_uses *us, const char *path, const char *role) {
    struct cli_files f;
    if (!path || !cli_list_images_quiet(path, &f)) return;
    for (int i = 0; i < f.count; i++) cli_uses_read(us, f.paths[i], role, 0);
    cli_files_free(&f);
}

void cli_uses_free(struct cli_uses *us) {
    for (int i = 0; i < us->n; i++) {
        free(us->u[i].path);
        free(us->u[i].canon);
    }
    free(us->u);
    memset(us, 0, sizeof *us);
}

/* "PATH (ROLE of OF)" into buf. */
static const char *describe(char *buf, size_t size, const struct cli_use *u) {
    snprintf(buf, size, "%s (%s%s%s)", u->path, u->role, u->of ? " of " : "", u->of ? u->of : "");
    return buf;
}

/* The resolved directory of path and its last component: "realpath(dir)/name".  NULL when the
 * directory does not exist (the caller created the directories it writes into first). */
static char *canonical(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    const char *name = slash ? slash + 1 : path;
    char *real = dir ? realpath(dir, NULL) : NULL;
    char *out = NULL;
    if (real) {
        size_t n = strlen(real) + strlen(name) + 2;
        out = malloc(n);
        if (out) snprintf(out, n, "%s%s%s", real, strcmp(real, "/") ? "/" : "", name);
    }
    free(dir);
    free(real);
    return out;
}

/* Does the directory of canonical path p fold case (vfat, exFAT, ext4 casefold, macOS)?  Asked
 * only when two outputs differ in case alone: a probe file is created and looked up under the
 * other case.  When the directory cannot be written the answer is yes (the outputs could not be
 * written anyway, and refusing is the safe side). */
static bool folds_case(const char *p) {
    const char *slash = strrchr(p, '/');
    char probe[PATH_MAX], upper[PATH_MAX];
    int dl = (int)(slash - p);
    snprintf(probe, sizeof probe, "%.*s/.unet-case-probe-%ld", dl, p, (long)getpid());
    snprintf(upper, sizeof upper, "%.*s/.UNET-CASE-PROBE-%ld", dl, p, (long)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return true;
    close(fd);
    struct stat sb;
    bool folds = stat(upper, &sb) == 0;
    unlink(probe);
    return folds;
}

static int cmp_inode(const void *a, const void *b) {
    const struct cli_use *x = *(const struct cli_use *const *)a, *y = *(const struct cli_use *const *)b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
    return x->write - y->write;
}

static int cmp_canon(const void *a, const void *b) {
    const struct cli_use *x = *(const struct cli_use *const *)a, *y = *(const struct cli_use *const *)b;
    int c = strcasecmp(x->canon, y->canon);
    return c ? c : strcmp(x->canon, y->canon);
}

static const char *kind_name(enum cli_out_kind k) {
    switch (k) {
    case CLI_OUT_MODEL: return "a checkpoint written by unet";
    case CLI_OUT_LOG: return "a unet training log";
    case CLI_OUT_LOCK: return "an empty unet lock file";
    case CLI_OUT_ANY: break;
    }
    return "a unet output";
}

/* Is the existing file at u->path a unet file of u->kind? */
static bool is_own(const struct cli_use *u, off_t size) {
    switch (u->kind) {
    case CLI_OUT_ANY: return true;
    case CLI_OUT_LOCK: return size == 0;
    case CLI_OUT_MODEL: {
        int own = 0;
        unet_ctx *ctx = unet_ctx_create();
        bool ok = ctx && unet_model_probe(ctx, u->path, &own) == UNET_STATUS_OK && own;
        unet_ctx_free(ctx);
        return ok;
    }
    case CLI_OUT_LOG: {
        FILE *f = fopen(u->path, "rb");
        char line[16] = {0};
        bool ok = f && (size == 0 || (fgets(line, sizeof line, f) && strncmp(line, "step,", 5) == 0));
        if (f) fclose(f);
        return ok;
    }
    }
    return false;
}

int cli_uses_check(struct cli_uses *us, bool force) {
    if (us->oom) {
        cli_error("out of memory checking the files of this run");
        return CLI_EXIT_FAIL;
    }
    int rc = 0;
    struct cli_use **v = malloc(sizeof *v * (size_t)(us->n ? us->n : 1));
    if (!v) {
        cli_error("out of memory checking the files of this run");
        return CLI_EXIT_FAIL;
    }
    char a[PATH_MAX + 160], b[PATH_MAX + 160];
    int ne = 0, nw = 0;
    for (int i = 0; i < us->n; i++) {
        struct cli_use *u = &us->u[i];
        struct stat sb;
        u->exists = stat(u->path, &sb) == 0;
        if (u->exists) {
            u->dev = (unsigned long long)sb.st_dev;
            u->ino = (unsigned long long)sb.st_ino;
            v[ne++] = u;
        }
    }
    /* Existing files: one inode read and written, or written twice. */
    qsort(v, (size_t)ne, sizeof *v, cmp_inode);
    for (int i = 1; i < ne && !rc; i++) {
        const struct cli_use *x = v[i - 1], *y = v[i];
        if (x->dev != y->dev || x->ino != y->ino || !y->write) continue;
        if (x->group && x->group == y->group) continue;
        if (x->write)
            cli_error("%s and %s are the same file: one output would overwrite the other; choose "
                      "other names", describe(a, sizeof a, x), describe(b, sizeof b, y));
        else
            cli_error("%s is %s: unet never writes over a file it reads; choose another output "
                      "name", describe(a, sizeof a, y), describe(b, sizeof b, x));
        rc = CLI_EXIT_USAGE;
    }
    /* Each output: a regular file of unet's own (or none yet), in a directory that exists. */
    for (int i = 0; i < us->n && !rc; i++) {
        struct cli_use *u = &us->u[i];
        struct stat sb;
        if (!u->write) continue;
        bool exists = u->exists && stat(u->path, &sb) == 0;
        if (exists && !S_ISREG(sb.st_mode)) {
            cli_error("%s exists and is not a regular file (%s); choose another name",
                      describe(a, sizeof a, u), S_ISDIR(sb.st_mode) ? "a directory" : "a special file");
            rc = CLI_EXIT_USAGE;
        } else if (exists && !force && !is_own(u, sb.st_size)) {
            cli_error("%s exists and is not %s; unet does not replace it: choose another name, "
                      "or add --force", describe(a, sizeof a, u), kind_name(u->kind));
            rc = CLI_EXIT_USAGE;
        } else if (!(u->canon = canonical(u->path))) {
            cli_error("%s: cannot resolve its directory: %s", describe(a, sizeof a, u),
                      strerror(errno));
            rc = CLI_EXIT_FAIL;
        }
    }
    /* Outputs by resolved name: two that do not exist yet may still be one file. */
    for (int i = 0; i < us->n && !rc; i++)
        if (us->u[i].write) v[nw++] = &us->u[i];
    if (!rc) qsort(v, (size_t)nw, sizeof *v, cmp_canon);
    for (int i = 1; i < nw && !rc; i++) {
        const struct cli_use *x = v[i - 1], *y = v[i];
        if (strcasecmp(x->canon, y->canon) != 0) continue;
        if (x->group && x->group == y->group) continue;
        if (strcmp(x->canon, y->canon) != 0 && !folds_case(x->canon)) continue;
        cli_error("%s and %s are the same file%s: one output would overwrite the other; choose "
                  "other names", describe(a, sizeof a, x), describe(b, sizeof b, y),
                  strcmp(x->canon, y->canon) ? " (this directory ignores case)" : "");
        rc = CLI_EXIT_USAGE;
    }
    free(v);
    return rc;
}

int cli_guard_io(const char *in, const char *in_role, const char *const out[2],
                 const char *const out_role[2]) {
    for (int i = 0; i < 2; i++)
        if (out[i] && !cli_mkdirs_for(out[i])) return CLI_EXIT_FAIL;
    struct cli_uses us = {0};
    cli_uses_read(&us, in, in_role, 0);
    for (int i = 0; i < 2; i++)
        if (out[i]) cli_uses_write(&us, out[i], out_role[i], NULL, CLI_OUT_ANY, 0);
    int rc = cli_uses_check(&us, false);
    cli_uses_free(&us);
    return rc;
}

/* ---- one writer ---- */

int cli_lock(const char *path, const char *what) {
    for (int attempt = 0; attempt < 16; attempt++) {
        struct stat sa, sb;
        bool dir = stat(path, &sa) == 0 && S_ISDIR(sa.st_mode);
        int fd = dir ? open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                     : open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0) {
            cli_error("%s: cannot open the lock %s: %s", what, path, strerror(errno));
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int err = errno;
            close(fd);
            if (err == EWOULDBLOCK)
                cli_error("%s: another unet process is writing it (%s is locked); wait for it to "
                          "finish, or choose another name", what, path);
            else
                cli_error("%s: cannot lock %s: %s", what, path, strerror(err));
            return -1;
        }
        /* The lock file may have been removed (and made again) by its previous holder between
         * our open and our flock: then we hold a lock nobody else sees; try again. */
        if (dir || (fstat(fd, &sa) == 0 && stat(path, &sb) == 0 && sa.st_ino == sb.st_ino &&
                    sa.st_dev == sb.st_dev))
            return fd;
        close(fd);
    }
    cli_error("%s: the lock %s keeps changing", what, path);
    return -1;
}

void cli_unlock(int fd, const char *remove_path) {
    if (fd < 0) return;
    if (remove_path) unlink(remove_path); /* while still holding it: see cli_lock */
    close(fd);
}

/* ---- directories ---- */

bool cli_mkdirs_for(const char *file) {
    const char *slash = strrchr(file, '/');
    if (!slash || slash == file) return true;
    char *dir = strndup(file, (size_t)(slash - file));
    bool ok = dir && cli_mkdir(dir);
    if (!dir) cli_error("out of memory");
    free(dir);
    return ok;
}

/* ---- memory ---- */

bool cli_parse_bytes(const char *opt, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double unit = 1;
    switch (*end == 0 ? 0 : (*end | 0x20)) {
    case 'k': unit = 1024.0; end++; break;
    case 'm': unit = 1048576.0; end++; break;
    case 'g': unit = 1073741824.0; end++; break;
    case 't': unit = 1099511627776.0; end++; break;
    default: break;
    }
    if (unit > 1 && (*end | 0x20) == 'i') end++;
    if (*end && (*end | 0x20) == 'b') end++;
    v *= unit;
    if (end == s || *end || errno || !(v >= 1) || v > 1.8e19) {
        cli_error("%s: '%s' (expected a size such as 512M, 8G or 1000000)", opt, s);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

uint64_t cli_memory_default(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    uint64_t phys = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : (uint64_t)1 << 34;
    /* A container's limit (cgroup v2) when it is lower: past it the OOM killer ends the run. */
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
    unsigned long long cg = 0;
    if (f) {
        if (fscanf(f, "%llu", &cg) == 1 && cg > 0 && cg < phys) phys = cg;
        fclose(f);
    }
    return phys;
}

const char *cli_bytes_str(double b, char *buf, size_t size) {
    if (b >= 1073741824.0) snprintf(buf, size, "%.1f GiB", b / 1073741824.0);
    else if (b >= 1048576.0) snprintf(buf, size, "%.1f MiB", b / 1048576.0);
    else snprintf(buf, size, "%.0f KiB", ceil(b / 1024.0));
    return buf;
}

bool cli_within_budget(const char *what, double need, uint64_t budget) {
    need += CLI_PROGRAM_BYTES;
    if (need <= (double)budget) return true;
    char a[32], b[32];
    cli_error("%s needs about %s of memory, over the budget of %s (--max-memory; the default is "
              "the machine's memory)", what, cli_bytes_str(need, a, sizeof a),
              cli_bytes_str((double)budget, b, sizeof b));
    return false;
}

bool cli_train_memory(unet_ctx *ctx, const char *const dirs[4], bool weights, uint64_t budget) {
    double keep = 0, largest = 0, largest_px = 0;
    long n = 0;
    unet_status s = UNET_STATUS_OK;
    for (int d = 0; d < 4 && s == UNET_STATUS_OK; d++) {
        struct cli_files f;
        if (!dirs[d] || !cli_list_images_quiet(dirs[d], &f)) continue;
        for (int i = 0; i < f.count && s == UNET_STATUS_OK; i++) {
            int pages = 1;
            s = unet_image_pages(ctx, f.paths[i], &pages);
            for (int p = 0; p < pages && s == UNET_STATUS_OK; p++) {
                unet_image info;
                /* A file that fails here would fail to load: say so now. */
                if ((s = unet_image_info(ctx, f.paths[i], p, &info)) != UNET_STATUS_OK) break;
                double P = (double)info.w * info.h;
                double decoded = P * info.c * (double)unet_dtype_size(info.dtype);
                /* Images are kept as floats; masks as class ids (and a weight map). */
                keep += d % 2 == 0 ? 4.0 * P * info.c : P * (4.0 + (weights ? 4.0 : 0.0));
                if (decoded > largest) largest = decoded;
                if (P > largest_px) largest_px = P;
                n++;
            }
        }
        cli_files_free(&f);
    }
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    /* While one pair loads: its decoded image and mask (at most the largest decoded image each)
     * and three int32 maps for labels, separated cells and their work. */
    double need = keep + 2 * largest + 12 * largest_px;
    char what[64];
    snprintf(what, sizeof what, "loading the %ld images and masks", n);
    return cli_within_budget(what, need, budget);
}

bool cli_train_model_memory(unet_ctx *ctx, const unet_model *m, int batch, int tile,
                            uint64_t budget) {
    const unet_config *c = unet_model_config(m);
    size_t act = 0;
    int oh = tile, ow = tile;
    unet_model_output_size(ctx, m, tile, tile, &oh, &ow);
    unet_model_cost(ctx, m, batch, tile, tile, NULL, &act);
    const double T2 = (double)tile * tile, O2 = (double)oh * ow;
    /* Weights, gradients and two moments; the activations kept for backward and their
     * gradients (about 6 times the inference arena of unet_model_cost: at base 64, depth 4,
     * 4 x 256^2 this estimate without the inference cache is 1695 MiB, against the 1747-1768
     * MiB peak RSS of bench_unet's training process, which makes no cache and counts the
     * libraries, OpenBLAS's buffers and the weight gradient's per-part sums: bench/run,
     * 2026-12-05 13:27);
     * the batch being trained and the sampler's batches in flight (about 4), each tiles in,
     * targets and weights out; the inference cache that validation makes (model_cache.c). */
    double need = 16.0 * (double)unet_model_param_count(m) + 6.0 * (double)act +
                  (double)unet_model_cache_bytes(m) +
                  5.0 * batch * (4.0 * c->in_channels * T2 + 8.0 * O2);
    char what[96];
    snprintf(what, sizeof what, "training with batches of %d tiles of %dx%d", batch, tile, tile);
    return cli_within_budget(what, need, budget);
}

/* ---- train ---- */

int cli_train_guard(const struct cli_train_files *f, bool force, int *lock_fd) {
    *lock_fd = -1;
    const char *outs[] = {f->out, f->last, f->resume_out, f->log, f->lock, f->run_json,
                          f->report};
    for (int i = 0; i < 7; i++)
        if (outs[i] && !cli_mkdirs_for(outs[i])) return CLI_EXIT_FAIL;
    struct cli_uses us = {0};
    cli_uses_read_images(&us, f->images, "a training image");
    cli_uses_read_images(&us, f->masks, "a training mask");
    cli_uses_read_images(&us, f->val_images, "a validation image");
    cli_uses_read_images(&us, f->val_masks, "a validation mask");
    cli_uses_read(&us, f->init, "--init", 0);
    /* Resuming from STEM.resume.safetensors replaces it with newer checkpoints: it is read
     * whole before any of them is written. */
    cli_uses_read(&us, f->resume, "--resume", 1);
    cli_uses_write(&us, f->out, "--out", NULL, CLI_OUT_MODEL, 0);
    cli_uses_write(&us, f->last, "the model of the latest epoch", NULL, CLI_OUT_MODEL, 0);
    cli_uses_write(&us, f->resume_out, "the resumable checkpoint", NULL, CLI_OUT_MODEL, 1);
    cli_uses_write(&us, f->log, "the training log", NULL, CLI_OUT_LOG, 0);
    cli_uses_write(&us, f->lock, "the lock file", NULL, CLI_OUT_LOCK, 0);
    cli_uses_write(&us, f->run_json, "the run record", NULL, CLI_OUT_ANY, 0);
    cli_uses_write(&us, f->report, "--report", NULL, CLI_OUT_ANY, 0);
    int rc = cli_uses_check(&us, force);
    cli_uses_free(&us);
    if (rc) return rc;
    *lock_fd = cli_lock(f->lock, f->out);
    if (*lock_fd < 0) return CLI_EXIT_FAIL;
    /* Now that no other run writes these files: the temporaries of runs killed mid-write. */
    for (int i = 0; i < 4; i++) unet_remove_stale_temporaries(outs[i]);
    /* Every output can be written (its directory takes a new file), before any work: a bad
     * --out or --log is found now, not after an epoch of training. */
    unet_ctx *ctx = unet_ctx_create();
    for (int i = 0; i < 4 && !rc; i++) {
        struct unet__atomic at;
        if (!ctx || unet__atomic_begin(ctx, &at, outs[i]) != UNET_STATUS_OK) {
            cli_error("%s", ctx ? unet_ctx_errmsg(ctx) : "out of memory");
            rc = CLI_EXIT_FAIL;
        } else {
            unet__atomic_abort(&at);
        }
    }
    unet_ctx_free(ctx);
    if (rc) {
        cli_unlock(*lock_fd, f->lock);
        *lock_fd = -1;
    }
    return rc;
}

/* ---- the training log ---- */

FILE *cli_log_open(const char *path, const char *header, bool resume, long step) {
    struct unet__atomic at;
    unet_ctx *ctx = unet_ctx_create();
    FILE *in = NULL, *out = NULL;
    char *line = NULL;
    size_t cap = 0;
    bool ok = ctx && unet__atomic_begin(ctx, &at, path) == UNET_STATUS_OK;
    if (!ok) {
        cli_error("%s: cannot write the log: %s", path, ctx ? unet_ctx_errmsg(ctx) : "out of memory");
        unet_ctx_free(ctx);
        return NULL;
    }
    out = fopen(at.tmp, "w");
    ok = out != NULL;
    if (resume) {
        in = fopen(path, "r");
        if (!in && errno != ENOENT) {
            cli_error("%s: cannot read the log: %s", path, strerror(errno));
            ok = false;
        }
    }
    /* Resuming: the rows of steps <= step.  Rows after the checkpoint were written by the
     * interrupted run (kill -9 between two checkpoints) and are written again by the resumed
     * one; a torn last line is dropped too. */
    ssize_t len;
    bool first = true;
    while (ok && in && (len = getline(&line, &cap, in)) > 0) {
        if (line[len - 1] != '\n') break; /* torn by a crash */
        char *end;
        long k = strtol(line, &end, 10);
        bool keep = first ? strncmp(line, "step,", 5) == 0 : end != line && *end == ',' && k <= step;
        /* The header is always today's (an older one may lack columns); a log without one gets
         * it too. */
        bool old_header = first && keep;
        if (first) ok = fputs(header, out) != EOF;
        first = false;
        if (keep && !old_header && fputs(line, out) == EOF) ok = false;
    }
    if (ok && first) ok = fputs(header, out) != EOF; /* a new or empty log */
    free(line);
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = false;
    if (ok && unet__atomic_commit(ctx, &at) != UNET_STATUS_OK) {
        cli_error("%s: cannot write the log: %s", path, unet_ctx_errmsg(ctx));
        unet_ctx_free(ctx);
        return NULL;
    }
    if (!ok) {
        cli_error("%s: cannot write the log%s: %s", path, resume ? " for resuming" : "",
                  strerror(errno));
        unet__atomic_abort(&at);
        unet_ctx_free(ctx);
        return NULL;
    }
    unet_ctx_free(ctx);
    FILE *f = fopen(path, "a");
    if (!f) {
        cli_error("%s: cannot write the log: %s", path, strerror(errno));
        return NULL;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    return f;
}
