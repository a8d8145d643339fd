/* test_cli.c — the unet command under faults: it runs the built binary ($UNET_BIN, which
 * `make test` sets; the test skips with a note when it is unset) on a tiny generated dataset
 * (4 PNG images of 96x96 with masks, a U-Net of base 4 and depth 2) and checks what a user
 * sees: exit codes, one-line messages naming the file, and the files left on disk.
 * (The images are 96x96 so that an epoch is 18 steps: the checkpoint cadence is --save-every,
 * not the epoch end, which also writes the resumable checkpoint.)
 *
 *   - usage errors exit 2; library failures exit 1 with "unet: error: ..." on one line
 *   - train end to end; kill -9 at random moments (also in the middle of checkpoint writes)
 *     never leaves a torn checkpoint, loses at most --save-every steps, and --resume gives
 *     exactly the per-step losses of an uninterrupted run with the same seed and threads
 *   - SIGINT / SIGTERM: exit 130 / 143 with the resume hint, and the resumed run matches too
 *   - a diverging run (NaN loss) rolls back, then stops naming the cause with exit 3
 *   - a write failure (RLIMIT_FSIZE, which binds root too, unlike a read-only directory) is a
 *     clear error and leaves the previous checkpoint byte for byte
 *   - predict over a folder with damaged files writes the others, keeps existing outputs
 *     whole and exits 1 with the count of failures
 *   - missing masks, size mismatches, NaN pixels and damaged checkpoints name the file
 *   - nothing the user has is lost (issue 19, docs/robustness.md): no output is an input or
 *     another output; foreign --out/--log need --force; forged headers cost no memory; FIFOs
 *     never block; step counters near INT64_MAX are refused; non-finite values are reported;
 *     one writer per model; every ending says what was written
 *
 * Each child's stderr goes to a file in the temporary directory; tests read it back.
 */
#include "harness.h"

#include "io/image_formats.h"
#include "model.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *unet_bin;
static char data_dir[280];      /* images/ and masks/ of the tiny dataset */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = s && n > 0 ? fread(s, 1, (size_t)n, f) : 0;
    if (s) s[got] = 0;
    fclose(f);
    return s;
}

static bool same_bytes(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int x = fgetc(fa), y = fgetc(fb);
        if (x != y) same = false;
        if (x == EOF || y == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static bool copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    bool ok = a && b;
    int c;
    while (ok && (c = fgetc(a)) != EOF) ok = fputc(c, b) != EOF;
    if (a) fclose(a);
    if (b && fclose(b) != 0) ok = false;
    return ok;
}

/* Files in dir whose name contains `part`. */
static int count_files(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

/* ---- running the binary ---- */

struct cmd {
    const char *v[64];
    char        pool[64][512];
    int         n;
};

static void cmd_init(struct cmd *c, const char *sub) {
    c->n = 0;
    c->v[c->n++] = unet_bin;
    if (sub) c->v[c->n++] = sub;
    c->v[c->n] = NULL;
}

static void varg(struct cmd *c, const char *fmt, va_list ap) {
    vsnprintf(c->pool[c->n], sizeof c->pool[0], fmt, ap);
    c->v[c->n] = c->pool[c->n];
    c->n++;
    c->v[c->n] = NULL;
}

static void arg(struct cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(struct cmd *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    varg(c, fmt, ap);
    va_end(ap);
}

/* The dataset and model options every training run here shares. */
static void train_args(struct cmd *c, const char *out, int steps, int save_every) {
    cmd_init(c, "train");
    arg(c, "--images");
    arg(c, "%s/images", data_dir);
    arg(c, "--masks");
    arg(c, "%s/masks", data_dir);
    arg(c, "--out");
    arg(c, "%s", out);
    arg(c, "--base");
    arg(c, "4");
    arg(c, "--depth");
    arg(c, "2");
    arg(c, "--tile");
    arg(c, "32");
    arg(c, "--batch");
    arg(c, "2");
    arg(c, "--val-split");
    arg(c, "0");
    arg(c, "--seed");
    arg(c, "5");
    arg(c, "--threads");
    arg(c, "1");
    arg(c, "--quiet");
    arg(c, "--steps");
    arg(c, "%d", steps);
    if (save_every) {
        arg(c, "--save-every");
        arg(c, "%d", save_every);
    }
}

/* train_args on the dataset in dir (dir/images, dir/masks), writing dir/m.safetensors. */
static void train_on(struct cmd *c, const char *dir, int steps) {
    char out[512];
    snprintf(out, sizeof out, "%s/m.safetensors", dir);
    train_args(c, out, steps, 0);
    snprintf(c->pool[3], sizeof c->pool[0], "%s/images", dir);
    snprintf(c->pool[5], sizeof c->pool[0], "%s/masks", dir);
}

/* unet predict --model model --input input --output output; more options may follow. */
static void predict_args(struct cmd *c, const char *model, const char *input, const char *output) {
    cmd_init(c, "predict");
    arg(c, "--model");
    arg(c, "%s", model);
    arg(c, "--input");
    arg(c, "%s", input);
    arg(c, "--output");
    arg(c, "%s", output);
}

/* Starts the command with stderr (and stdout) into err_path; fsize > 0 sets RLIMIT_FSIZE. */
static pid_t spawn(const struct cmd *c, const char *err_path, long fsize) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        if (fsize > 0) {
            struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execv(c->v[0], (char *const *)(uintptr_t)c->v);
        _exit(127);
    }
    return pid;
}

static long last_peak_kb; /* the peak resident memory of the last child waited for */
static double run_timeout_s; /* > 0: a child still running after this long is killed (a hang) */

/* Exit status, or 128 + signal when the child was killed by one (as a shell reports it). */
static int wait_for(pid_t pid) {
    int st = 0;
    struct rusage ru;
    if (pid < 0) return -1;
    bool alive = run_timeout_s > 0;
    for (double t0 = now(); alive && now() - t0 < run_timeout_s;) {
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == pid)
            alive = false;
        else
            sleep_s(0.01);
    }
    if (alive) {
        printf("  child %d still runs after %.0f s: killed\n", (int)pid, run_timeout_s);
        kill(pid, SIGKILL);
    }
    if (wait4(pid, &st, 0, &ru) != pid) return -1;
    last_peak_kb = ru.ru_maxrss;
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

static char last_err[8192];

/* Runs the command to completion; its output is in last_err afterwards. */
static int run(const struct cmd *c, long fsize) {
    char path[512];
    tmp_path(path, sizeof path, "stderr.txt");
    int rc = wait_for(spawn(c, path, fsize));
    char *s = read_text(path);
    snprintf(last_err, sizeof last_err, "%s", s ? s : "");
    free(s);
    return rc;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Prints the command's output when a check about it fails. */
#define CHECK_RUN(rc_expr, want)                                                               \
    do {                                                                                       \
        int rc_ = (rc_expr);                                                                   \
        if (rc_ != (want)) {                                                                   \
            HARNESS_FAIL_AT(__FILE__, __LINE__, "exit %d, want %d; output:\n%s", rc_, (want),  \
                            last_err);                                                         \
        }                                                                                      \
    } while (0)

/* ---- the tiny dataset ---- */

/* n_images of S x S: bright disks on a dark noisy background; the mask is the disks. */
static bool write_dataset(const char *dir, int n_images, int S) {
    char p[512];
    snprintf(p, sizeof p, "%s/images", dir);
    mkdir(dir, 0755);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/masks", dir);
    mkdir(p, 0755);
    struct unet__rng r;
    unet__rng_seed(&r, 99);
    bool ok = true;
    for (int k = 0; k < n_images && ok; k++) {
        unet_image img, mask;
        ok = unet_image_alloc(NULL, &img, S, S, 1, UNET_DTYPE_U8) == UNET_STATUS_OK &&
             unet_image_alloc(NULL, &mask, S, S, 1, UNET_DTYPE_U8) == UNET_STATUS_OK;
        if (!ok) break;
        uint8_t *x = img.data, *m = mask.data;
        for (int i = 0; i < S * S; i++) x[i] = (uint8_t)(20 + unet__rng_below(&r, 40));
        for (int d = 0; d < S * S / 300; d++) {
            int cx = 4 + (int)unet__rng_below(&r, (uint64_t)S - 8);
            int cy = 4 + (int)unet__rng_below(&r, (uint64_t)S - 8);
            int rad = 3 + (int)unet__rng_below(&r, 4);
            for (int y = 0; y < S; y++)
                for (int xx = 0; xx < S; xx++)
                    if ((xx - cx) * (xx - cx) + (y - cy) * (y - cy) <= rad * rad) {
                        x[y * S + xx] = (uint8_t)(180 + unet__rng_below(&r, 60));
                        m[y * S + xx] = 255;
                    }
        }
        snprintf(p, sizeof p, "%s/images/img%d.png", dir, k);
        ok = unet_image_save(NULL, p, &img) == UNET_STATUS_OK;
        snprintf(p, sizeof p, "%s/masks/img%d.png", dir, k);
        ok = ok && unet_image_save(NULL, p, &mask) == UNET_STATUS_OK;
        unet_image_free(&img);
        unet_image_free(&mask);
    }
    return ok;
}

/* ---- the log and checkpoints ---- */

#define MAX_ROWS 512

/* Rows of a training log, one string each: the step rows as "step,loss", or the validation
 * rows (val_loss given) with every column but `seconds`; rows is max strings of width chars. */
static int read_rows(const char *log, bool validation, char *rows, size_t width, int max) {
    FILE *f = fopen(log, "r");
    if (!f) return -1;
    char line[512];
    int n = 0;
    bool header = true;
    while (fgets(line, sizeof line, f) && n < max) {
        if (header) {
            header = false;
            continue;
        }
        line[strcspn(line, "\n")] = 0;
        char *fields[16];
        int k = 0;
        for (char *t = line; k < 16;) {
            fields[k++] = t;
            char *c = strchr(t, ',');
            if (!c) break;
            *c = 0;
            t = c + 1;
        }
        if (k < 5 || !fields[4][0] != !validation) continue;
        char *row = rows + (size_t)n++ * width;
        if (!validation) {
            snprintf(row, width, "%s,%s", fields[0], fields[2]);
            continue;
        }
        row[0] = 0;
        for (int i = 0; i < k; i++)
            if (i != 9) {
                size_t len = strlen(row);
                snprintf(row + len, width - len, "%s%s", i ? "," : "", fields[i]);
            }
    }
    fclose(f);
    return n;
}

static int read_losses(const char *log, char rows[][48]) {
    return read_rows(log, false, rows[0], sizeof rows[0], MAX_ROWS);
}

struct meta_probe {
    long step;
};

static void probe_meta(const char *key, const char *value, void *user) {
    if (strcmp(key, "train.step") == 0) ((struct meta_probe *)user)->step = strtol(value, NULL, 10);
}

/* Loads a resumable checkpoint with the library; its train.step, or -1 when it does not load. */
static long checkpoint_step(const char *path) {
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = NULL;
    struct meta_probe mp = {-1};
    unet_status s = unet_model_load_training(ctx, path, &m, probe_meta, &mp);
    if (s != UNET_STATUS_OK) printf("       %s: %s\n", path, unet_ctx_errmsg(ctx));
    unet_model_free(m);
    unet_ctx_free(ctx);
    return s == UNET_STATUS_OK ? mp.step : -1;
}

/* The reference: an uninterrupted run of REF_STEPS steps, its losses and its duration. */
#define REF_STEPS 60
static char ref_rows[MAX_ROWS][48];
static int ref_n = -1;
static double ref_seconds;

static void make_reference(void) {
    if (ref_n >= 0) return;
    char out[512];
    struct cmd c;
    tmp_path(out, sizeof out, "ref/model.safetensors");
    char dir[512];
    mkdir(tmp_path(dir, sizeof dir, "ref"), 0755);
    train_args(&c, out, REF_STEPS, 0);
    double t0 = now();
    int rc = run(&c, 0);
    ref_seconds = now() - t0;
    CHECK_RUN(rc, 0);
    char log[512];
    tmp_path(log, sizeof log, "ref/model.log.csv");
    ref_n = read_losses(log, ref_rows);
    CHECK_EQ(ref_n, REF_STEPS);
}

/* The losses of a finished run against the reference, row by row (the same strings: the
 * losses are printed with 6 decimals, and a resumed run must reproduce them exactly). */
static void check_same_losses(const char *log) {
    static char rows[MAX_ROWS][48];
    int n = read_losses(log, rows);
    CHECK_EQ(n, ref_n);
    int diff = 0;
    for (int i = 0; i < n && i < ref_n; i++)
        if (strcmp(rows[i], ref_rows[i]) != 0) {
            if (diff++ < 3) printf("  %s: row %d is %s, uninterrupted %s\n", log, i + 1, rows[i], ref_rows[i]);
        }
    CHECK_EQ(diff, 0);
}

/* Copies a checkpoint with one metadata value replaced (key NULL: none) and every element of
 * the named F32 tensors set to value. */
static bool copy_checkpoint(const char *src, const char *dst, const char *key, const char *kval,
                            const char *const *tensors, int n_tensors, float value) {
    unet_ctx *ctx = unet_ctx_create();
    struct unet__safetensors *st = NULL;
    bool ok = unet__st_open(ctx, src, &st) == UNET_STATUS_OK;
    struct unet__st_entry *e = ok ? calloc((size_t)st->count, sizeof *e) : NULL;
    const char **meta = ok ? calloc(2 * (size_t)st->meta_count + 1, sizeof *meta) : NULL;
    float *bufs[8] = {0};
    ok = ok && e && meta;
    for (int i = 0; ok && i < st->count; i++) {
        const struct unet__st_tensor *t = &st->tensors[i];
        e[i] = (struct unet__st_entry){t->name, t->dtype, t->ndim, {0}, unet__st_data(st, t)};
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        for (int k = 0; k < n_tensors && k < 8; k++)
            if (strcmp(t->name, tensors[k]) == 0 && t->dtype == UNET__DTYPE_F32) {
                size_t n = unet__st_numel(t);
                bufs[k] = malloc(n * sizeof(float) + 1);
                for (size_t j = 0; bufs[k] && j < n; j++) bufs[k][j] = value;
                if (bufs[k]) e[i].data = bufs[k];
            }
    }
    for (int i = 0; ok && i < st->meta_count; i++) {
        meta[2 * i] = st->meta[2 * i];
        meta[2 * i + 1] = key && strcmp(st->meta[2 * i], key) == 0 ? kval : st->meta[2 * i + 1];
    }
    ok = ok && unet__st_write(ctx, dst, e, st->count, meta, st->meta_count) == UNET_STATUS_OK;
    for (int k = 0; k < 8; k++) free(bufs[k]);
    free(e);
    free(meta);
    unet__st_close(st);
    unet_ctx_free(ctx);
    return ok;
}

/* ---- tests ---- */

TEST(usage_errors_exit_2) {
    static const char *cases[][10] = {
        {NULL},
        {"frobnicate", NULL},
        {"train", NULL},
        {"train", "--bogus", NULL},
        {"train", "--images", "a", "--masks", "b", NULL},
        {"train", "--steps", "abc", NULL},
        {"predict", "--model", NULL},
        {"predict", "--model", "m", "--input", "i", NULL},
        {"eval", "--classes", "1", NULL},
        {"predict", "--model", "m", "--input", "i", "--output", "o", "--precision", "fp16", NULL},
        {"train", "--images", "a", "--masks", "b", "--out", "o.safetensors", "--precision", "bf8",
         NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cmd c;
        cmd_init(&c, NULL);
        for (int k = 0; cases[i][k]; k++) arg(&c, "%s", cases[i][k]);
        int rc = run(&c, 0);
        if (rc != 2) printf("  case %zu: exit %d, want 2: %s\n", i, rc, last_err);
        CHECK_EQ(rc, 2);
        if (i > 0) {
            CHECK_STR_CONTAINS(last_err, "unet: error: ");
            CHECK_EQ(count_lines(last_err), 1);
        }
    }
    /* A bad value is rejected, not clamped. */
    struct cmd c;
    char out[512];
    train_args(&c, tmp_path(out, sizeof out, "usage.safetensors"), 0, 0);
    arg(&c, "--epochs");
    arg(&c, "0");
    CHECK_RUN(run(&c, 0), 2);
}

TEST(train_end_to_end) {
    make_reference();
    char p[512];
    const char *files[] = {"ref/model.safetensors", "ref/model.last.safetensors",
                           "ref/model.resume.safetensors", "ref/model.log.csv"};
    for (int i = 0; i < 4; i++) CHECK(access(tmp_path(p, sizeof p, files[i]), R_OK) == 0);
    CHECK_EQ(checkpoint_step(tmp_path(p, sizeof p, "ref/model.resume.safetensors")), REF_STEPS);
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_load(ctx, tmp_path(p, sizeof p, "ref/model.safetensors"), &m),
                 UNET_STATUS_OK);
    if (m) CHECK_EQ(unet_train_steps(m), REF_STEPS);
    unet_model_free(m);
    unet_ctx_free(ctx);
    /* No temporary files are left behind by a clean run. */
    CHECK_EQ(count_files(tmp_path(p, sizeof p, "ref"), ".tmp"), 0);
    printf("       %d steps in %.2f s; first loss %s, last %s\n", ref_n, ref_seconds,
           ref_n > 0 ? ref_rows[0] : "-", ref_n > 0 ? ref_rows[ref_n - 1] : "-");
}

/* kill -9 at random moments, with checkpoints every 1, 3 and 7 steps (every step: the kill
 * usually lands inside a checkpoint write).  After each kill the checkpoint on disk loads,
 * at most save-every steps were lost, and --resume reproduces the uninterrupted losses. */
TEST(kill9_then_resume_matches) {
    make_reference();
    if (ref_n != REF_STEPS) return;
    struct unet__rng r;
    unet__rng_seed(&r, (uint64_t)time(NULL));
    const int cadence[] = {1, 3, 7, 3};
    int torn_tmp = 0, resumed = 0;
    for (int k = 0; k < 4; k++) {
        char dir[300], out[512], ck[512], log[512], err[512];
        snprintf(dir, sizeof dir, "%s/kill%d", tmp_dir, k);
        mkdir(dir, 0755);
        snprintf(out, sizeof out, "%s/model.safetensors", dir);
        snprintf(ck, sizeof ck, "%s/model.resume.safetensors", dir);
        snprintf(log, sizeof log, "%s/model.log.csv", dir);
        snprintf(err, sizeof err, "%s/stderr.txt", dir);
        struct cmd c;
        train_args(&c, out, REF_STEPS, cadence[k]);
        /* A moment anywhere in the run, start-up included (then nothing is saved yet).  Runs
         * that save less often than the reference finish sooner: when the run is already over
         * at the kill, start again (from scratch) and kill earlier. */
        double delay = ref_seconds * (0.15 + 0.8 * unet__rng_uniform(&r));
        int rc = 0;
        for (int attempt = 0; attempt < 6; attempt++, delay *= 0.5) {
            char cmdline[700];
            snprintf(cmdline, sizeof cmdline, "rm -f %s/model*", dir);
            if (system(cmdline) != 0) break;
            pid_t pid = spawn(&c, err, 0);
            sleep_s(delay);
            kill(pid, SIGKILL);
            rc = wait_for(pid);
            if (rc != 0) break;
        }
        CHECK_EQ(rc, 128 + SIGKILL);
        static char rows[MAX_ROWS][48];
        int logged = read_losses(log, rows);
        long step = access(ck, F_OK) == 0 ? checkpoint_step(ck) : 0;
        torn_tmp += count_files(dir, ".tmp.");
        printf("       kill -9 after %.3f s: %d steps logged, checkpoint at step %ld "
               "(every %d)\n", delay, logged < 0 ? 0 : logged, step, cadence[k]);
        CHECK(step >= 0); /* a checkpoint that exists always loads */
        if (logged > 0) CHECK(logged - step <= cadence[k]);
        if (step == REF_STEPS) { /* killed after its last checkpoint: nothing left to resume */
            check_same_losses(log);
            continue;
        }
        train_args(&c, out, REF_STEPS, cadence[k]);
        if (step > 0) {
            arg(&c, "--resume");
            arg(&c, "%s", ck);
            resumed++;
        }
        CHECK_RUN(run(&c, 0), 0);
        check_same_losses(log);
        CHECK_EQ(count_files(dir, ".tmp"), 0); /* the resumed run removed torn temporaries */
    }
    printf("       %d of 4 runs resumed from a checkpoint; %d kills left the temporary file of "
           "a torn write (removed by the resumed run)\n", resumed, torn_tmp);
}

static void interrupt_with(int sig, int want_rc) {
    make_reference();
    if (ref_n != REF_STEPS) return;
    char dir[300], out[512], ck[512], log[512], err[512];
    snprintf(dir, sizeof dir, "%s/sig%d", tmp_dir, sig);
    mkdir(dir, 0755);
    snprintf(out, sizeof out, "%s/model.safetensors", dir);
    snprintf(ck, sizeof ck, "%s/model.resume.safetensors", dir);
    snprintf(log, sizeof log, "%s/model.log.csv", dir);
    snprintf(err, sizeof err, "%s/stderr.txt", dir);
    struct cmd c;
    train_args(&c, out, REF_STEPS, 0);
    pid_t pid = spawn(&c, err, 0);
    /* Wait until training runs (rows reach the log line by line), then interrupt. */
    static char rows[MAX_ROWS][48];
    double t0 = now();
    while (read_losses(log, rows) < 3 && now() - t0 < 60) sleep_s(0.002);
    kill(pid, sig);
    int rc = wait_for(pid);
    char *text = read_text(err);
    snprintf(last_err, sizeof last_err, "%s", text ? text : "");
    free(text);
    CHECK_RUN(rc, want_rc);
    CHECK_STR_CONTAINS(last_err, "interrupted at step");
    CHECK_STR_CONTAINS(last_err, "--resume");
    CHECK_STR_CONTAINS(last_err, ck);
    long step = checkpoint_step(ck);
    int logged = read_losses(log, rows);
    printf("       signal %d: exit %d at step %ld (%d rows logged)\n", sig, rc, step, logged);
    CHECK(step >= 3);
    CHECK_EQ(logged, step); /* the step in flight was finished and saved: nothing lost */
    train_args(&c, out, REF_STEPS, 0);
    arg(&c, "--resume");
    arg(&c, "%s", ck);
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "resuming at step");
    check_same_losses(log);
}

TEST(sigint_exit_130_and_resume) {
    interrupt_with(SIGINT, 130);
}

TEST(sigterm_exit_143_and_resume) {
    interrupt_with(SIGTERM, 143);
}

/* Training that turns non-finite: 4 good steps (checkpoint every 2), then the output layer of
 * the checkpoint is set to 3.4e38 (finite, so it loads): every step's logits overflow and the
 * loss is NaN.  Each NaN step rolls back to the state the run started from with half the
 * learning rate; after the third rollback the run stops with exit 3 naming the cause, and the
 * checkpoint it resumed from stays as it was. */
TEST(nan_loss_rolls_back_then_stops) {
    char dir[300], out[512], ck[512], bad[512], saved[600], log[512];
    mkdir(tmp_path(dir, sizeof dir, "nan"), 0755);
    snprintf(out, sizeof out, "%s/model.safetensors", dir);
    snprintf(ck, sizeof ck, "%s/model.resume.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/huge.resume.safetensors", dir);
    snprintf(saved, sizeof saved, "%s/saved.safetensors", dir);
    snprintf(log, sizeof log, "%s/model.log.csv", dir);
    struct cmd c;
    train_args(&c, out, 4, 2);
    CHECK_RUN(run(&c, 0), 0);
    const char *outc[] = {"outc.conv.weight", "outc.conv.bias"};
    CHECK(copy_checkpoint(ck, bad, NULL, NULL, outc, 2, 3.4e38f));
    CHECK(copy_file(bad, saved));
    train_args(&c, out, 20, 2);
    arg(&c, "--resume");
    arg(&c, "%s", bad);
    CHECK_RUN(run(&c, 0), 3);
    CHECK_STR_CONTAINS(last_err, "warning: step 5: the loss is NaN; rolled back to step 4 with the "
                                 "learning rate x0.5");
    CHECK_STR_CONTAINS(last_err, "error: training diverged: the loss is NaN, after 3 rollbacks to "
                                 "the last good state (step 4); stopped at step 8 of 20");
    CHECK(same_bytes(bad, saved));
    CHECK_EQ(checkpoint_step(ck), 8);
    char *text = read_text(log);
    CHECK_STR_CONTAINS(text, "\n5,1,nan,0.001,,,,,,");
    CHECK_STR_CONTAINS(text, ",rollback:nonfinite;to=4;lr=0.0005\n");
    CHECK_STR_CONTAINS(text, ",diverged:nonfinite;to=4\n");
    free(text);
}

/* A NaN pixel in a float image is refused before training, naming the image. */
TEST(nan_pixel_names_the_image) {
    char dir[300], p[600];
    tmp_path(dir, sizeof dir, "nanpix");
    CHECK(write_dataset(dir, 2, 32));
    unet_image img;
    CHECK_STATUS(unet_image_alloc(NULL, &img, 32, 32, 1, UNET_DTYPE_F32), UNET_STATUS_OK);
    ((float *)img.data)[5 * 32 + 7] = NAN;
    snprintf(p, sizeof p, "%s/images/img1.png", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/images/img1.npy", dir);
    CHECK_STATUS(unet_image_save(NULL, p, &img), UNET_STATUS_OK);
    unet_image_free(&img);
    struct cmd c;
    train_on(&c, dir, 2);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "img1.npy");
    CHECK_STR_CONTAINS(last_err, "non-finite value nan at channel 0, pixel (y 5, x 7)");
    CHECK_EQ(count_lines(last_err), 1);
}

/* The previous checkpoint survives a failed write byte for byte: RLIMIT_FSIZE below the
 * checkpoint's size makes every checkpoint write fail with EFBIG (as a full disk would). */
TEST(write_failure_keeps_previous_checkpoint) {
    char dir[300], out[512], ck[512], saved[512];
    mkdir(tmp_path(dir, sizeof dir, "full"), 0755);
    snprintf(out, sizeof out, "%s/model.safetensors", dir);
    snprintf(ck, sizeof ck, "%s/model.resume.safetensors", dir);
    snprintf(saved, sizeof saved, "%s/saved.safetensors", dir);
    struct cmd c;
    train_args(&c, out, 6, 3);
    CHECK_RUN(run(&c, 0), 0);
    CHECK(copy_file(ck, saved));
    struct stat sb;
    CHECK_EQ(stat(ck, &sb), 0);
    train_args(&c, out, 20, 3);
    arg(&c, "--resume");
    arg(&c, "%s", ck);
    CHECK_RUN(run(&c, (long)sb.st_size / 2), 1);
    CHECK_STR_CONTAINS(last_err, "write failed (File too large); the previous file is untouched");
    printf("       %s", last_err);
    CHECK(same_bytes(ck, saved));
    CHECK_EQ(checkpoint_step(ck), 6);
    CHECK_EQ(count_files(dir, ".tmp."), 0);
    /* A directory that cannot be written (effective for non-root users only). */
    if (geteuid() != 0) {
        chmod(dir, 0555);
        CHECK_RUN(run(&c, 0), 1);
        CHECK_STR_CONTAINS(last_err, "Permission denied");
        chmod(dir, 0755);
        CHECK(same_bytes(ck, saved));
    } else {
        printf("       (running as root: the read-only directory case is skipped)\n");
    }
}

static long file_pages(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)((sb.st_size + 4095) / 4096) : 0;
}

/* A real full disk: the run's files on a tmpfs with room for everything but a second copy of
 * the resumable checkpoint, so writing the next one fails with ENOSPC.  Needs root (mount);
 * skipped otherwise. */
TEST(disk_full_keeps_previous_checkpoint) {
    char dir[300], fs[300], out[512], ck[512], saved[512], p[600];
    mkdir(tmp_path(dir, sizeof dir, "pre_full"), 0755);
    tmp_path(fs, sizeof fs, "tmpfs");
    mkdir(fs, 0755);
    snprintf(out, sizeof out, "%s/model.safetensors", dir);
    struct cmd c;
    train_args(&c, out, 6, 3);
    CHECK_RUN(run(&c, 0), 0);
    const char *names[] = {"model.safetensors", "model.last.safetensors",
                           "model.resume.safetensors", "model.log.csv"};
    long pages = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        pages += file_pages(p);
    }
    snprintf(p, sizeof p, "%s/model.resume.safetensors", dir);
    long room = pages + file_pages(p) / 2;
    char opts[64];
    snprintf(opts, sizeof opts, "size=%ldk,mode=0755", room * 4);
    if (mount("tmpfs", fs, "tmpfs", 0, opts) != 0) {
        printf("       (cannot mount a tmpfs: %s; the full-disk case is skipped)\n", strerror(errno));
        return;
    }
    for (int i = 0; i < 4; i++) {
        char from[700];
        snprintf(from, sizeof from, "%s/%s", dir, names[i]);
        snprintf(p, sizeof p, "%s/%s", fs, names[i]);
        CHECK(copy_file(from, p));
    }
    snprintf(out, sizeof out, "%s/model.safetensors", fs);
    snprintf(ck, sizeof ck, "%s/model.resume.safetensors", fs);
    snprintf(saved, sizeof saved, "%s/model.resume.safetensors", dir);
    train_args(&c, out, 20, 3);
    arg(&c, "--resume");
    arg(&c, "%s", ck);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "model.resume.safetensors: write failed (No space left on "
                                 "device); the previous file is untouched");
    printf("       tmpfs of %ld KB: %s", room * 4, strstr(last_err, "unet: error") ? strstr(last_err, "unet: error") : last_err);
    CHECK(same_bytes(ck, saved));
    CHECK_EQ(checkpoint_step(ck), 6);
    CHECK_EQ(count_files(fs, ".tmp."), 0);
    CHECK_EQ(umount(fs), 0);
}

/* --max-pixels lowers (or raises) the image size limit; a bad value is a usage error. */
TEST(max_pixels_option) {
    make_reference();
    char model[512], outd[300];
    tmp_path(model, sizeof model, "ref/model.safetensors");
    tmp_path(outd, sizeof outd, "maxpx");
    struct cmd c;
    char img0[512];
    snprintf(img0, sizeof img0, "%s/images/img0.png", data_dir);
    predict_args(&c, model, img0, outd);
    arg(&c, "--quiet");
    arg(&c, "--max-pixels");
    arg(&c, "9215");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "image 96x96 has 9216 pixels, over the limit of 9215");
    snprintf(c.pool[c.n - 1], sizeof c.pool[0], "9216");
    CHECK_RUN(run(&c, 0), 0);
    snprintf(c.pool[c.n - 1], sizeof c.pool[0], "-5");
    CHECK_RUN(run(&c, 0), 2);
}

/* A damaged resumable checkpoint: metadata that would size buffers, with a control character
 * in the value; refused with one line. */
/* train --steps 70 --resume a copy of the reference's resumable checkpoint with metadata
 * key = value. */
static void resume_with_meta(struct cmd *c, const char *key, const char *value) {
    char src[512], bad[512], out[512];
    tmp_path(src, sizeof src, "ref/model.resume.safetensors");
    tmp_path(bad, sizeof bad, "bad_meta.resume.safetensors");
    CHECK(copy_checkpoint(src, bad, key, value, NULL, 0, 0));
    train_args(c, tmp_path(out, sizeof out, "bad_meta.safetensors"), 70, 0);
    arg(c, "--resume");
    arg(c, "%s", bad);
}

TEST(damaged_resume_metadata) {
    make_reference();
    struct cmd c;
    resume_with_meta(&c, "train.batch", "2000000000\nX");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "train.batch='2000000000?X' is not valid");
    CHECK_EQ(count_lines(last_err), 1);
    /* A damaged model for predict: one line naming the file. */
    char images[512], never[512];
    snprintf(images, sizeof images, "%s/images", data_dir);
    predict_args(&c, "tests/data/corrupt/model_nan_weight.safetensors", images,
                 tmp_path(never, sizeof never, "never"));
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "model_nan_weight.safetensors: inc.double_conv.0.weight holds nan");
    CHECK_EQ(count_lines(last_err), 1);
}

/* Step counters near INT64_MAX in a resumable checkpoint (the optimizer's train_steps, the
 * run's train.step): refused when loading, naming the key (one of them used to pass and end
 * in an assertion, SIGABRT, after a signed overflow). */
TEST(resume_step_counter_at_the_limit) {
    make_reference();
    struct cmd c;
    resume_with_meta(&c, "train_steps", "9223372036854775806");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "train_steps='9223372036854775806' is not an integer in "
                                 "0..1099511627776");
    resume_with_meta(&c, "train.step", "4611686018427387903");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "train.step='4611686018427387903' is not valid");
    resume_with_meta(&c, "train.step", "1099511627776"); /* the limit: loads, past --steps 70 */
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "is at step 1099511627776 and the run has 70 steps: nothing to "
                                 "train, nothing written");
}

/* predict over a folder with damaged files: each is reported and skipped, the others are
 * written, an existing output of a damaged input stays whole, and the exit status is 1 with
 * the count. */
TEST(predict_folder_keeps_going) {
    make_reference();
    char in[300], outd[300], p[600], model[512], keep[512];
    tmp_path(in, sizeof in, "pin");
    tmp_path(outd, sizeof outd, "pout");
    tmp_path(model, sizeof model, "ref/model.safetensors");
    mkdir(in, 0755);
    mkdir(outd, 0755);
    for (int k = 0; k < 3; k++) {
        char from[512];
        snprintf(from, sizeof from, "%s/images/img%d.png", data_dir, k);
        snprintf(p, sizeof p, "%s/good%d.png", in, k);
        CHECK(copy_file(from, p));
    }
    snprintf(p, sizeof p, "%s/bad_truncated.png", in);
    CHECK(copy_file("tests/data/corrupt/image_truncated.png", p));
    snprintf(p, sizeof p, "%s/bad_empty.tif", in);
    CHECK(copy_file("tests/data/corrupt/image_empty.png", p));
    snprintf(p, sizeof p, "%s/bad_header.npy", in);
    CHECK(copy_file("tests/data/corrupt/image_bad_header.npy", p));
    /* An output from an earlier run for one of the damaged inputs. */
    snprintf(keep, sizeof keep, "%s/bad_truncated.png", outd);
    CHECK(copy_file("tests/data/corrupt/image_bad_crc.png", keep));
    struct cmd c;
    predict_args(&c, model, in, outd);
    arg(&c, "--threads");
    arg(&c, "1");
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "bad_truncated.png");
    CHECK_STR_CONTAINS(last_err, "bad_empty.tif");
    CHECK_STR_CONTAINS(last_err, "bad_header.npy");
    CHECK_STR_CONTAINS(last_err, "3 of 6 images failed");
    CHECK_EQ(count_lines(last_err), 4);
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/good%d.png", outd, k);
        unet_image img;
        CHECK_STATUS(unet_image_load(NULL, p, 0, &img), UNET_STATUS_OK);
        if (img.data) CHECK(img.w == 96 && img.h == 96);
        unet_image_free(&img);
    }
    CHECK(same_bytes(keep, "tests/data/corrupt/image_bad_crc.png"));
    CHECK_EQ(count_files(outd, ".tmp"), 0);
    CHECK_EQ(count_files(outd, "bad_"), 1);
}

/* Masks: a missing one, one of another size, one with several channels: a line naming files. */
TEST(mask_problems_name_the_file) {
    char dir[300], p[600], q[700];
    struct cmd c;
    tmp_path(dir, sizeof dir, "masks1");
    CHECK(write_dataset(dir, 2, 32));
    snprintf(p, sizeof p, "%s/masks/img1.png", dir);
    unlink(p);
    train_on(&c, dir, 2);
    CHECK_RUN(run(&c, 0), 1);
    snprintf(q, sizeof q, "unet: error: %s/images/img1.png: no mask with the same name", dir);
    CHECK_STR_CONTAINS(last_err, q);
    CHECK_EQ(count_lines(last_err), 1);

    unet_image m;
    CHECK_STATUS(unet_image_alloc(NULL, &m, 31, 32, 1, UNET_DTYPE_U8), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_save(NULL, p, &m), UNET_STATUS_OK);
    unet_image_free(&m);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "img1.png is 32x32 but its mask");
    CHECK_STR_CONTAINS(last_err, "is 31x32");
    CHECK_EQ(count_lines(last_err), 1);

    CHECK_STATUS(unet_image_alloc(NULL, &m, 32, 32, 3, UNET_DTYPE_U8), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_save(NULL, p, &m), UNET_STATUS_OK);
    unet_image_free(&m);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "with several channels");
    CHECK_EQ(count_lines(last_err), 1);

    /* A damaged mask file. */
    CHECK(copy_file("tests/data/corrupt/image_truncated.png", p));
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, p);
    CHECK_EQ(count_lines(last_err), 1);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* examples/segment.c, the header's example as a program: its mask equals unet predict's for
 * the same model and image (an odd size: padded by mirroring and cropped back), and its errors
 * name the file. */
TEST(api_example_matches_predict) {
    const char *ex_dir = getenv("UNET_EXAMPLES");
    if (!ex_dir || !*ex_dir) {
        printf("       UNET_EXAMPLES is not set (make test sets it); skipped\n");
        return;
    }
    char ex[512], model[512], in[300], outd[300], img_path[600], mine[600], theirs[600];
    snprintf(ex, sizeof ex, "%s/segment", ex_dir);
    tmp_path(in, sizeof in, "exin");
    tmp_path(outd, sizeof outd, "exout");
    mkdir(in, 0755);
    mkdir(outd, 0755);
    /* A 75x61 crop of a training image. */
    enum { W = 75, H = 61 };
    snprintf(img_path, sizeof img_path, "%s/images/img1.png", data_dir);
    unet_image src, crop;
    CHECK_STATUS(unet_image_load(NULL, img_path, 0, &src), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_alloc(NULL, &crop, W, H, 1, UNET_DTYPE_U8), UNET_STATUS_OK);
    if (src.data && crop.data)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                ((uint8_t *)crop.data)[y * W + x] =
                    ((const uint8_t *)src.data)[(y + 7) * 96 + x + 11];
    snprintf(img_path, sizeof img_path, "%s/odd.png", in);
    CHECK_STATUS(unet_image_save(NULL, img_path, &crop), UNET_STATUS_OK);
    unet_image_free(&src);

    /* A freshly initialised U-Net, its class-1 bias shifted so that the median pixel's logits
     * tie: about half of the crop is foreground.  (Untrained or briefly trained models predict
     * one class everywhere, which would make the comparison weak.) */
    tmp_path(model, sizeof model, "example_model.safetensors");
    unet_config cfg = unet_config_default(UNET_ARCH_UNET);
    cfg.base = 4;
    cfg.depth = 2;
    static float xf[W * H], logits[2 * W * H], d[W * H];
    unet_model *m = NULL;
    unet_predict_opts po = unet_predict_defaults();
    po.output = UNET_OUTPUT_LOGITS;
    CHECK_STATUS(unet_image_to_float(NULL, &crop, UNET_NORM_AUTO, xf), UNET_STATUS_OK);
    unet_image_free(&crop);
    CHECK_STATUS(unet_model_create(NULL, &cfg, 1, &m), UNET_STATUS_OK);
    CHECK_STATUS(unet_predict(NULL, m, xf, H, W, &po, logits, NULL, NULL), UNET_STATUS_OK);
    for (int i = 0; i < W * H; i++) d[i] = logits[W * H + i] - logits[i];
    qsort(d, W * H, sizeof *d, cmp_float);
    const struct unet__param *bias = m ? unet__model_find_param(m, "outc.conv.bias") : NULL;
    CHECK(bias != NULL);
    if (!bias) {
        unet_model_free(m);
        return;
    }
    unet__model_param_data(m, bias)[1] -= d[W * H / 2];
    CHECK_STATUS(unet_model_save(NULL, m, model), UNET_STATUS_OK);
    unet_model_free(m);

    struct cmd c;
    snprintf(mine, sizeof mine, "%s/example.png", outd);
    c.n = 0;
    c.v[c.n++] = ex;
    arg(&c, "%s", model);
    arg(&c, "%s", img_path);
    arg(&c, "%s", mine);
    CHECK_RUN(run(&c, 0), 0);
    predict_args(&c, model, img_path, outd);
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 0);
    snprintf(theirs, sizeof theirs, "%s/odd.png", outd);
    unet_image a, b;
    CHECK_STATUS(unet_image_load(NULL, mine, 0, &a), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_load(NULL, theirs, 0, &b), UNET_STATUS_OK);
    if (a.data && b.data) {
        CHECK(a.w == W && a.h == H && b.w == W && b.h == H);
        size_t fg = 0, diff = 0;
        for (size_t i = 0; i < W * H; i++) {
            const uint8_t va = ((const uint8_t *)a.data)[i], vb = ((const uint8_t *)b.data)[i];
            fg += va != 0;
            diff += va != vb;
            CHECK(va == 0 || va == 255);
        }
        printf("       example vs predict: %zu of %d pixels differ; foreground %zu\n", diff,
               W * H, fg);
        CHECK_EQ(diff, 0);
        /* Both classes present, so the comparison means something. */
        CHECK(fg > W * H / 4 && fg < W * H * 3 / 4);
    }
    unet_image_free(&a);
    unet_image_free(&b);

    /* Errors: usage exits 2; a missing model is one line naming it, exit 1, no output. */
    c.n = 0;
    c.v[c.n++] = ex;
    arg(&c, "%s", model);
    CHECK_RUN(run(&c, 0), 2);
    c.n = 0;
    c.v[c.n++] = ex;
    arg(&c, "%s/no_such_model.safetensors", tmp_dir);
    arg(&c, "%s", img_path);
    arg(&c, "%s/never.png", outd);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "no_such_model.safetensors");
    CHECK_EQ(count_lines(last_err), 1);
    CHECK_EQ(count_files(outd, "never"), 0);
}

/* ---- issue 19: nothing the user has is lost ---- */

/* Copies the training images into dir (made here), as img0.png ... */
static void copy_images(const char *dir, int n) {
    mkdir(dir, 0755);
    for (int k = 0; k < n; k++) {
        char from[512], to[700];
        snprintf(from, sizeof from, "%s/images/img%d.png", data_dir, k);
        snprintf(to, sizeof to, "%s/img%d.png", dir, k);
        CHECK(copy_file(from, to));
    }
}

/* Runs c, which must be refused as a usage error with a message holding want (and also). */
static void check_refused(const struct cmd *c, const char *want, const char *also) {
    CHECK_RUN(run(c, 0), 2);
    CHECK_STR_CONTAINS(last_err, want);
    if (also) CHECK_STR_CONTAINS(last_err, also);
}

/* Every file predict or train writes is checked against what it reads and against the other
 * outputs before any work: `--output` = `--input` (which used to replace the images with masks,
 * exit 0), two inputs with one output name, an overlay name that is another input's mask,
 * --logits naming the input, an output that is a link to an input. */
TEST(outputs_never_overwrite_inputs) {
    make_reference();
    char model[512], d[300], p[1200], q[1600], keep[600];
    tmp_path(model, sizeof model, "ref/model.safetensors");
    struct cmd c;
    /* --output is --input: refused, the images stay byte for byte. */
    tmp_path(d, sizeof d, "same");
    copy_images(d, 2);
    snprintf(keep, sizeof keep, "%s/images/img0.png", data_dir);
    predict_args(&c, model, d, d);
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 2);
    CHECK_STR_CONTAINS(last_err, "unet never writes over a file it reads");
    snprintf(p, sizeof p, "%s/img0.png (the mask of %s/img0.png) is %s/img0.png (an input image)",
             d, d, d);
    CHECK_STR_CONTAINS(last_err, p);
    snprintf(p, sizeof p, "%s/img0.png", d);
    CHECK(same_bytes(p, keep));
    /* The same folder spelled another way (a symbolic link to it). */
    char alias[300];
    tmp_path(alias, sizeof alias, "same_alias");
    CHECK_EQ(symlink(d, alias), 0);
    predict_args(&c, model, d, alias);
    CHECK_RUN(run(&c, 0), 2);
    CHECK(same_bytes(p, keep));

    /* Two inputs, one output name: a.png and a.PNG (both masks are a.png). */
    char in[300], outd[300];
    tmp_path(in, sizeof in, "two_in");
    tmp_path(outd, sizeof outd, "two_out");
    mkdir(in, 0755);
    snprintf(p, sizeof p, "%s/a.png", in);
    CHECK(copy_file(keep, p));
    snprintf(p, sizeof p, "%s/a.PNG", in);
    CHECK(copy_file(keep, p));
    predict_args(&c, model, in, outd);
    CHECK_RUN(run(&c, 0), 2);
    snprintf(q, sizeof q, "%s/a.png (the mask of %s/a.PNG) and %s/a.png (the mask of %s/a.png) "
             "are the same file", outd, in, outd, in);
    CHECK_STR_CONTAINS(last_err, q);
    CHECK_EQ(count_files(outd, ".png"), 0); /* refused before any work */
    unlink(p);
    /* An overlay name that is another input's mask: c.png --overlay and c_overlay.png. */
    snprintf(p, sizeof p, "%s/a_overlay.png", in);
    CHECK(copy_file(keep, p));
    predict_args(&c, model, in, outd);
    arg(&c, "--overlay");
    check_refused(&c, "(the overlay of", "are the same file");
    predict_args(&c, model, in, outd); /* without --overlay both names are free */
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 0);

    /* --logits naming the input. */
    unet_image img;
    char npy[700];
    CHECK_STATUS(unet_image_load(NULL, keep, 0, &img), UNET_STATUS_OK);
    snprintf(npy, sizeof npy, "%s/x.npy", in);
    CHECK_STATUS(unet_image_save(NULL, npy, &img), UNET_STATUS_OK);
    unet_image_free(&img);
    CHECK(copy_file(npy, p));
    predict_args(&c, model, npy, outd);
    arg(&c, "--logits");
    arg(&c, "%s", npy);
    CHECK_RUN(run(&c, 0), 2);
    CHECK_STR_CONTAINS(last_err, "(the logits of");
    CHECK(same_bytes(npy, p));

    /* An existing output that is a hard link to an input. */
    snprintf(p, sizeof p, "%s/img1.png", outd);
    snprintf(q, sizeof q, "%s/img1.png", d);
    CHECK_EQ(link(q, p), 0);
    predict_args(&c, model, d, outd);
    CHECK_RUN(run(&c, 0), 2);
    CHECK_STR_CONTAINS(last_err, "unet never writes over a file it reads");
    snprintf(p, sizeof p, "%s/images/img1.png", data_dir);
    CHECK(same_bytes(q, p));
    /* weightmap and convolutionalize follow the same rule. */
    static const char *const subs[2][3] = {{"weightmap", "--mask", "--output"},
                                           {"convolutionalize", "--in", "--out"}};
    for (int k = 0; k < 2; k++) {
        cmd_init(&c, subs[k][0]);
        arg(&c, "%s", subs[k][1]);
        arg(&c, "%s", k ? model : q);
        arg(&c, "%s", subs[k][2]);
        arg(&c, "%s", k ? model : q);
        check_refused(&c, "unet never writes over a file it reads", subs[k][1]);
    }
    CHECK(same_bytes(q, p));
}

/* train: --out or --log naming an input, --init = --out, a foreign file at --log (refused;
 * replaced, never truncated, with --force), --init with --resume. */
TEST(train_outputs_never_overwrite_inputs) {
    make_reference();
    char d[300], out[600], mask[600], keep[600], p[1300], log[600];
    struct cmd c;
    tmp_path(d, sizeof d, "train_rule");
    mkdir(d, 0755);
    snprintf(mask, sizeof mask, "%s/masks/img2.png", data_dir);
    snprintf(keep, sizeof keep, "%s/keep.png", d);
    CHECK(copy_file(mask, keep));
    /* --out is a mask. */
    train_args(&c, mask, 2, 0);
    CHECK_RUN(run(&c, 0), 2);
    snprintf(p, sizeof p, "%s (--out) is %s (a training mask)", mask, mask);
    CHECK_STR_CONTAINS(last_err, p);
    CHECK(same_bytes(mask, keep));
    /* --log is an image. */
    snprintf(out, sizeof out, "%s/m.safetensors", d);
    train_args(&c, out, 2, 0);
    arg(&c, "--log");
    arg(&c, "%s/images/img1.png", data_dir);
    check_refused(&c, "(the training log) is", "(a training image)");
    CHECK_EQ(count_files(d, "m."), 0); /* nothing written, no lock left */
    /* --init and --out are one file: the original would be replaced after the first epoch. */
    char model[600];
    snprintf(model, sizeof model, "%s/init.safetensors", d);
    CHECK(copy_file(tmp_path(p, sizeof p, "ref/model.safetensors"), model));
    train_args(&c, model, 2, 0);
    arg(&c, "--init");
    arg(&c, "%s", model);
    check_refused(&c, "(--out) is", "(--init)");
    /* --init with --resume: refused, not silently ignored. */
    train_args(&c, out, 2, 0);
    arg(&c, "--init");
    arg(&c, "%s", model);
    arg(&c, "--resume");
    arg(&c, "%s", model);
    check_refused(&c, "--init and --resume exclude each other", NULL);
    /* A file that is not a unet log at --log: refused; with --force replaced by a new file (a
     * hard link to the old one keeps its content: it was not truncated). */
    snprintf(log, sizeof log, "%s/notes.txt", d);
    FILE *f = fopen(log, "w");
    if (f) fputs("my notes\n", f), fclose(f);
    snprintf(p, sizeof p, "%s/notes_link.txt", d);
    CHECK_EQ(link(log, p), 0);
    train_args(&c, out, 2, 0);
    arg(&c, "--log");
    arg(&c, "%s", log);
    check_refused(&c, "exists and is not a unet training log", "--force");
    arg(&c, "--force");
    CHECK_RUN(run(&c, 0), 0);
    char *text = read_text(p), *now_log = read_text(log);
    CHECK(text && strcmp(text, "my notes\n") == 0);
    CHECK(now_log && strncmp(now_log, "step,", 5) == 0);
    free(text);
    free(now_log);
    /* An --out that is not a unet model (an image named .safetensors): refused. */
    snprintf(p, sizeof p, "%s/foreign.safetensors", d);
    CHECK(copy_file(keep, p));
    train_args(&c, p, 2, 0);
    check_refused(&c, "exists and is not a checkpoint written by unet", NULL);
    CHECK(same_bytes(p, keep));
    /* A directory as --out. */
    train_args(&c, d, 2, 0);
    check_refused(&c, "exists and is not a regular file (a directory)", NULL);
    /* --out and --log in folders that do not exist yet: created (issue 18). */
    snprintf(out, sizeof out, "%s/new/dir/m.safetensors", d);
    train_args(&c, out, 2, 0);
    arg(&c, "--log");
    arg(&c, "%s/other/logs/m.csv", d);
    CHECK_RUN(run(&c, 0), 0);
    CHECK(access(out, R_OK) == 0);
    snprintf(p, sizeof p, "%s/other/logs/m.csv", d);
    CHECK(access(p, R_OK) == 0);
}

/* Files that claim huge images in a few bytes (a 154-byte TIFF of 16384^2 x 4 floats, a
 * 57-byte PNG of 16384^2 RGB at 16 bits) and a sparse .npy of 4096 channels: predict refuses
 * each from its header, naming it, and stays small (they used to cost 4.2 GB, 1.6 GB and
 * 1.3 GB).  --max-memory refuses an image whose estimate is over the budget, with the number. */
TEST(predict_memory_from_nothing) {
    make_reference();
    char model[512], in[300], outd[300], p[700];
    tmp_path(model, sizeof model, "ref/model.safetensors");
    tmp_path(in, sizeof in, "forged");
    tmp_path(outd, sizeof outd, "forged_out");
    mkdir(in, 0755);
    snprintf(p, sizeof p, "%s/a.tif", in);
    CHECK(copy_file("tests/data/corrupt/image_forged_f32x4.tif", p));
    snprintf(p, sizeof p, "%s/b.png", in);
    CHECK(copy_file("tests/data/corrupt/image_forged_rgb16.png", p));
    snprintf(p, sizeof p, "%s/c.npy", in);
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4096, 256, 256), }";
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 118, 0};
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(pre, 1, 10, f);
        fprintf(f, "%-117s\n", dict);
        fclose(f);
    }
    CHECK_EQ(truncate(p, 128 + ((off_t)4096 << 18)), 0);
    struct cmd c;
    predict_args(&c, model, in, outd);
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "a.tif: TIFF of 16384x16384 with 4 samples of 32 bits needs "
                                 "4294967296 bytes, but its strips hold 4 bytes");
    CHECK_STR_CONTAINS(last_err, "b.png: PNG of 16384x16384 needs");
    CHECK_STR_CONTAINS(last_err, "c.npy has 4096 channels; the model takes 1");
    CHECK_STR_CONTAINS(last_err, "3 of 3 images failed");
    printf("       peak memory of predict over the three: %ld KiB\n", last_peak_kb);
    CHECK(last_peak_kb < 400 << 10);
    /* The estimate against --max-memory, before loading. */
    snprintf(p, sizeof p, "%s/images/img0.png", data_dir);
    predict_args(&c, model, p, outd);
    arg(&c, "--max-memory");
    arg(&c, "64K");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "img0.png: predicting this 96x96 image with 1 channel needs "
                                 "about");
    CHECK_STR_CONTAINS(last_err, "over the budget of 64 KiB (--max-memory");
    snprintf(c.pool[c.n - 1], sizeof c.pool[0], "1x");
    CHECK_RUN(run(&c, 0), 2);
}

/* The inference cache of transformed weights counts against --max-memory: under a budget that
 * holds the image and the model but not the cache too, the default (--cache auto) predicts
 * without it and says so; --cache on refuses the image, naming the cache; --cache off predicts
 * with no note.  All three write the same mask. */
TEST(predict_cache_within_the_budget) {
    make_reference();
    char model[512], img[700], outd[3][300], budget[32];
    tmp_path(model, sizeof model, "cache_model.safetensors");
    snprintf(img, sizeof img, "%s/images/img0.png", data_dir);
    /* A model whose cache (about 30 MB) is large beside the rest of the estimate. */
    unet_config cfg = unet_config_default(UNET_ARCH_UNET);
    cfg.base = 32, cfg.depth = 3;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(NULL, &cfg, 5, &m), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_save(NULL, m, model), UNET_STATUS_OK);
    const double cache = (double)unet_model_cache_bytes(m);
    unet_model_free(m);
    /* The estimate with the cache, from the message of a budget far too small. */
    struct cmd c;
    tmp_path(outd[0], sizeof outd[0], "cache_auto");
    predict_args(&c, model, img, outd[0]);
    arg(&c, "--max-memory");
    arg(&c, "64K");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "of it is the inference cache of transformed weights: --cache "
                                 "off saves it");
    const char *at = strstr(last_err, "needs about ");
    double need = 0;
    CHECK(at && sscanf(at, "needs about %lf MiB", &need) == 1);
    need *= 1048576;
    printf("       estimate %.1f MiB with the cache of %.1f MiB\n", need / 1048576,
           cache / 1048576);
    CHECK(cache > 4 * 1048576); /* half of it is well over the message's rounding */
    snprintf(budget, sizeof budget, "%.0fK", (need - cache / 2) / 1024);
    const char *modes[3] = {"auto", "on", "off"};
    for (int k = 0; k < 3; k++) {
        const char *dirs[3] = {"cache_auto", "cache_on", "cache_off"};
        tmp_path(outd[k], sizeof outd[k], dirs[k]);
        predict_args(&c, model, img, outd[k]);
        arg(&c, "--max-memory");
        arg(&c, "%s", budget);
        arg(&c, "--cache");
        arg(&c, "%s", modes[k]);
        CHECK_RUN(run(&c, 0), k == 1 ? 1 : 0);
        if (k == 0) CHECK_STR_CONTAINS(last_err, "inference cache of transformed weights does not "
                                                 "fit the budget");
        if (k == 1) CHECK_STR_CONTAINS(last_err, "over the budget");
        if (k == 1) CHECK_STR_CONTAINS(last_err, "--cache off saves it");
        if (k == 2) CHECK(strstr(last_err, "inference cache") == NULL);
    }
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/img0.png", outd[0]);
    snprintf(b, sizeof b, "%s/img0.png", outd[2]);
    CHECK(same_bytes(a, b));
    predict_args(&c, model, img, outd[2]);
    arg(&c, "--cache");
    arg(&c, "sometimes");
    CHECK_RUN(run(&c, 0), 2);
}

/* A FIFO (named pipe) among the images, as a mask, as the model or as the input: never opened
 * (opening one for reading blocks until a writer comes, which used to hang unet forever);
 * skipped with a note in a folder, refused naming it otherwise. */
TEST(fifos_never_block) {
    make_reference();
    char model[512], in[300], outd[300], p[700], dir[300];
    tmp_path(model, sizeof model, "ref/model.safetensors");
    tmp_path(in, sizeof in, "fifo_in");
    tmp_path(outd, sizeof outd, "fifo_out");
    copy_images(in, 2);
    snprintf(p, sizeof p, "%s/pipe.png", in);
    CHECK_EQ(mkfifo(p, 0644), 0);
    run_timeout_s = 20;
    struct cmd c;
    predict_args(&c, model, in, outd);
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "pipe.png: not a regular file (a FIFO, device or socket); skipped");
    CHECK_EQ(count_files(outd, "img"), 2);
    predict_args(&c, model, p, outd); /* the FIFO as the input */
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "pipe.png: a FIFO (named pipe), not a regular file: not read");
    predict_args(&c, p, in, outd); /* ... as the model */
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "pipe.png: a FIFO (named pipe), not a regular file: not read");
    /* A mask that is a FIFO: training stops naming it. */
    tmp_path(dir, sizeof dir, "fifo_train");
    CHECK(write_dataset(dir, 2, 32));
    snprintf(p, sizeof p, "%s/masks/img1.png", dir);
    unlink(p);
    CHECK_EQ(mkfifo(p, 0644), 0);
    train_on(&c, dir, 2);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "masks/img1.png: a FIFO (named pipe), not a regular file");
    run_timeout_s = 0;
}

/* Writes the w x h crop (at most 96 x 96) of training image 0 as float32 .npy (values /255),
 * with value v at the first n_bad pixels (n_bad < 0: every pixel). */
static void write_float_crop(const char *path, int w, int h, int n_bad, float v) {
    char src[512];
    snprintf(src, sizeof src, "%s/images/img0.png", data_dir);
    unet_image a, f;
    CHECK_STATUS(unet_image_load(NULL, src, 0, &a), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_alloc(NULL, &f, w, h, 1, UNET_DTYPE_F32), UNET_STATUS_OK);
    for (int i = 0; a.data && f.data && i < w * h; i++)
        ((float *)f.data)[i] = n_bad < 0 || i < n_bad
                                   ? v
                                   : ((const uint8_t *)a.data)[(i / w) * 96 + i % w] / 255.0f;
    CHECK_STATUS(unet_image_save(NULL, path, &f), UNET_STATUS_OK);
    unet_image_free(&a);
    unet_image_free(&f);
}

/* Non-finite values in predict: one NaN pixel in a 30x40 image (it used to turn half the
 * logits into NaN and the mask into background, exit 0) is a warning with the count, and the
 * pixel is 0 after normalisation: the mask equals that of the image with a 0 there.  An image
 * of NaN is refused; so is an image of 3e38 (every logit overflows); a checkpoint whose
 * batch-norm weight of 3e38 folds beyond float range is refused when loading. */
TEST(predict_nonfinite_values) {
    make_reference();
    char model[512], d[300], p[600], q[600], od[400], a_out[700], b_out[700], bad[512];
    tmp_path(model, sizeof model, "ref/model.safetensors");
    tmp_path(d, sizeof d, "nonfinite");
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/nan1.npy", d);
    write_float_crop(p, 40, 30, 1, NAN);
    snprintf(q, sizeof q, "%s/zero1.npy", d);
    write_float_crop(q, 40, 30, 1, 0.0f);
    struct cmd c;
    snprintf(od, sizeof od, "%s/o", d);
    predict_args(&c, model, p, od);
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "nan1.npy: 1 of 1200 values are NaN or infinite; they are set "
                                 "to 0 (after normalisation)");
    predict_args(&c, model, q, od);
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 0);
    snprintf(a_out, sizeof a_out, "%s/o/nan1.npy", d);
    snprintf(b_out, sizeof b_out, "%s/o/zero1.npy", d);
    unet_image ma, mb;
    CHECK_STATUS(unet_image_load(NULL, a_out, 0, &ma), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_load(NULL, b_out, 0, &mb), UNET_STATUS_OK);
    if (ma.data && mb.data) CHECK(memcmp(ma.data, mb.data, 40 * 30) == 0);
    unet_image_free(&ma);
    unet_image_free(&mb);
    /* All NaN; all 3e38. */
    snprintf(p, sizeof p, "%s/allnan.npy", d);
    write_float_crop(p, 40, 30, -1, NAN);
    predict_args(&c, model, p, od);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "allnan.npy: every value is NaN or infinite: nothing to predict");
    snprintf(p, sizeof p, "%s/huge.npy", d);
    write_float_crop(p, 40, 30, -1, 3e38f);
    predict_args(&c, model, p, od);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "huge.npy: non-finite value: predict: every output value is NaN "
                                 "or infinite");
    /* The top 10 rows of 96 at 3e38: the outputs near them overflow, the others do not. */
    snprintf(p, sizeof p, "%s/top_huge.npy", d);
    write_float_crop(p, 96, 96, 960, 3e38f);
    predict_args(&c, model, p, od);
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "top_huge.npy: ");
    CHECK_STR_CONTAINS(last_err, "of 18432 output values are NaN or infinite (the network "
                                 "overflowed there); those pixels get class 0");
    /* Batch-norm weights that fold beyond float range. */
    tmp_path(bad, sizeof bad, "bn_huge.safetensors");
    const char *gamma[] = {"inc.double_conv.1.weight"};
    CHECK(copy_checkpoint(model, bad, NULL, NULL, gamma, 1, 3e38f));
    snprintf(p, sizeof p, "%s/zero1.npy", d);
    predict_args(&c, bad, p, od);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "bn_huge.safetensors: inc.double_conv.1 folds to a scale of");
    CHECK_STR_CONTAINS(last_err, "beyond float range");
}

/* A process id that no process has: a child that has exited and been waited for. */
static long dead_pid(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    return (long)pid;
}

/* Creates the empty file "path.tmp.PID.SUFFIX" (a temporary as unet names them). */
static void fake_temp(char *out, size_t size, const char *path, long pid, const char *suffix) {
    snprintf(out, size, "%s.tmp.%ld.%s", path, pid, suffix);
    FILE *f = fopen(out, "w");
    if (f) fclose(f);
}

/* One writer per model: a second train with the same --out while the first runs is refused
 * (it used to run too, both exiting 0 with their logs interleaved); the first finishes with a
 * clean log.  A predict into a folder another process has locked is refused.  The stale
 * temporary sweep removes only temporaries whose writer is gone: of a dead process, unlocked;
 * never those of a live process, nor a locked one (a writer on another host). */
TEST(one_writer_per_model) {
    make_reference();
    char dir[300], out[512], log[512], err[512], p[1100];
    tmp_path(dir, sizeof dir, "writers");
    mkdir(dir, 0755);
    snprintf(out, sizeof out, "%s/model.safetensors", dir);
    snprintf(log, sizeof log, "%s/model.log.csv", dir);
    snprintf(err, sizeof err, "%s/first.txt", dir);
    /* Temporaries of three owners, next to the checkpoint the runs will write. */
    char live[800], dead[800], locked[800];
    fake_temp(live, sizeof live, out, (long)getpid(), "aaaaaa");
    fake_temp(dead, sizeof dead, out, dead_pid(), "bbbbbb");
    fake_temp(locked, sizeof locked, out, dead_pid(), "cccccc");
    int lfd = open(locked, O_RDONLY);
    CHECK(lfd >= 0 && flock(lfd, LOCK_EX) == 0);
    struct cmd c;
    train_args(&c, out, 2 * REF_STEPS, 0);
    pid_t first = spawn(&c, err, 0);
    static char rows[MAX_ROWS][48];
    double t0 = now();
    while (read_losses(log, rows) < 3 && now() - t0 < 60) sleep_s(0.002);
    CHECK_RUN(run(&c, 0), 1);
    snprintf(p, sizeof p, "%s: another unet process is writing it (%s/model.lock is locked)", out,
             dir);
    CHECK_STR_CONTAINS(last_err, p);
    int rc = wait_for(first);
    char *text = read_text(err);
    snprintf(last_err, sizeof last_err, "%s", text ? text : "");
    free(text);
    CHECK_RUN(rc, 0);
    int n = read_losses(log, rows);
    CHECK_EQ(n, 2 * REF_STEPS);
    for (int i = 0; i < n; i++) CHECK_EQ(strtol(rows[i], NULL, 10), i + 1); /* not interleaved */
    CHECK(access(live, F_OK) == 0);
    CHECK(access(dead, F_OK) != 0);
    CHECK(access(locked, F_OK) == 0);
    close(lfd);
    CHECK_EQ(count_files(dir, "model.lock"), 0); /* removed at the end */

    /* predict: the output folder is locked while it writes. */
    char model[512], outd[300], img[512];
    tmp_path(model, sizeof model, "ref/model.safetensors");
    tmp_path(outd, sizeof outd, "writers_out");
    mkdir(outd, 0755);
    snprintf(img, sizeof img, "%s/images/img0.png", data_dir);
    int dfd = open(outd, O_RDONLY | O_DIRECTORY);
    CHECK(dfd >= 0 && flock(dfd, LOCK_EX) == 0);
    predict_args(&c, model, img, outd);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "--output: another unet process is writing it");
    close(dfd);
    /* kill -9 during predict leaves a temporary; the next predict into the folder removes it. */
    char mask[600];
    snprintf(mask, sizeof mask, "%s/img0.png", outd);
    fake_temp(dead, sizeof dead, mask, dead_pid(), "dddddd");
    CHECK_RUN(run(&c, 0), 0);
    CHECK(access(dead, F_OK) != 0);
    CHECK_EQ(count_files(outd, ".tmp."), 0);
}

/* The validation row of step `step` in a training log, its first 9 columns (step, epoch, loss,
 * lr and the validation scores; not the seconds), into row; false when there is none. */
static bool val_row(const char *log, long step, char *row, size_t size) {
    FILE *f = fopen(log, "r");
    char line[512];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f)) {
        char *comma[9];
        int k = 0;
        for (char *q = line; *q && k < 9; q++)
            if (*q == ',') comma[k++] = q;
        /* A step row has no val_loss (the fifth column). */
        if (k < 9 || strtol(line, NULL, 10) != step || comma[3][1] == ',') continue;
        *comma[8] = 0;
        snprintf(row, size, "%s", line);
        found = true;
    }
    if (f) fclose(f);
    return found;
}

/* Honest endings: a resumed run already past --steps says so (it used to print "wrote X" and
 * exit 0 without writing X); a bad --log is found before any file is written (no stray
 * .last/.log files); an error in info exits 1; the epoch row after a run that stopped in the
 * middle of an epoch (--steps) and was resumed averages the whole epoch, like the
 * uninterrupted run.  (SIGHUP and SIGPIPE: sighup_exit_129_and_resume, sigpipe_exit_141_...) */
TEST(honest_endings) {
    make_reference();
    char d[300], out[480], p[400], ck[512];
    struct cmd c;
    tmp_path(d, sizeof d, "honest");
    mkdir(d, 0755);
    tmp_path(ck, sizeof ck, "ref/model.resume.safetensors");
    snprintf(out, sizeof out, "%s/b.safetensors", d);
    train_args(&c, out, 10, 0);
    arg(&c, "--resume");
    arg(&c, "%s", ck);
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "is at step 60 and the run has 10 steps: nothing to train, "
                                 "nothing written");
    CHECK(access(out, F_OK) != 0);
    /* --log below a regular file: refused before anything is written. */
    snprintf(p, sizeof p, "%s/file.txt", d);
    CHECK(write_all(p, "x", 1));
    snprintf(out, sizeof out, "%s/m.safetensors", d);
    snprintf(c.pool[7], sizeof c.pool[0], "%s", out);
    snprintf(c.pool[c.n - 2], sizeof c.pool[0], "--log");
    snprintf(c.pool[c.n - 1], sizeof c.pool[0], "%s/log.csv", p);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "file.txt exists and is not a directory");
    CHECK_EQ(count_files(d, "m."), 0);
    /* info. */
    cmd_init(&c, "info");
    arg(&c, "--arch");
    arg(&c, "unet-paper");
    arg(&c, "--size");
    arg(&c, "1048576");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "unet: error: ");

    /* The epoch mean across a resume: run A uninterrupted; run B stops at step 7 (--steps) and
     * resumes to the same end.  The validation rows of the epoch ends are the same. */
    char a_out[480], b_out[480], a_log[600], b_log[600], ra[512], rb[512];
    snprintf(a_out, sizeof a_out, "%s/ea.safetensors", d);
    snprintf(b_out, sizeof b_out, "%s/eb.safetensors", d);
    snprintf(a_log, sizeof a_log, "%s/ea.log.csv", d);
    snprintf(b_log, sizeof b_log, "%s/eb.log.csv", d);
    train_args(&c, a_out, 28, 0);
    arg(&c, "--val-split");
    arg(&c, "0.25");
    CHECK_RUN(run(&c, 0), 0);
    snprintf(c.pool[7], sizeof c.pool[0], "%s", b_out);
    snprintf(c.pool[c.n - 3], sizeof c.pool[0], "7");
    CHECK_RUN(run(&c, 0), 0);
    snprintf(c.pool[c.n - 3], sizeof c.pool[0], "28");
    arg(&c, "--resume");
    arg(&c, "%s/eb.resume.safetensors", d);
    CHECK_RUN(run(&c, 0), 0);
    CHECK(val_row(a_log, 14, ra, sizeof ra) && val_row(b_log, 14, rb, sizeof rb));
    printf("       epoch 1 uninterrupted: %s\n       epoch 1 resumed at 7:  %s\n", ra, rb);
    CHECK(strcmp(ra, rb) == 0);
}

/* Outputs that differ only in case are one file where the directory folds case: checked on a
 * case-folding tmpfs when the kernel has one (root and CONFIG_UNICODE), else skipped. */
TEST(case_folding_outputs_collide) {
    make_reference();
    char fs[300], in[300], model[512], keep[600], p[700];
    tmp_path(fs, sizeof fs, "casefold");
    mkdir(fs, 0755);
    if (mount("tmpfs", fs, "tmpfs", 0, "casefold,size=1m") != 0) {
        printf("       (no case-folding tmpfs here: %s; skipped)\n", strerror(errno));
        return;
    }
    /* The case-folding attribute applies to empty directories made below the root. */
    snprintf(p, sizeof p, "%s/out", fs);
    mkdir(p, 0755);
    int fd = open(p, O_RDONLY);
    int attr = 0x40000000; /* FS_CASEFOLD_FL */
    if (fd >= 0) ioctl(fd, 0x40086602 /* FS_IOC_SETFLAGS */, &attr), close(fd);
    tmp_path(in, sizeof in, "case_in");
    mkdir(in, 0755);
    snprintf(keep, sizeof keep, "%s/images/img0.png", data_dir);
    snprintf(p, sizeof p, "%s/cell.png", in);
    CHECK(copy_file(keep, p));
    snprintf(p, sizeof p, "%s/CELL.png", in);
    CHECK(copy_file(keep, p));
    tmp_path(model, sizeof model, "ref/model.safetensors");
    struct cmd c;
    snprintf(p, sizeof p, "%s/out", fs);
    predict_args(&c, model, in, p);
    CHECK_RUN(run(&c, 0), 2);
    CHECK_STR_CONTAINS(last_err, "(this directory ignores case)");
    CHECK_EQ(umount(fs), 0);
}

/* Folders pd and td (tmp_dir/pred_name, tmp_dir/truth_name, made here) and c set to
 * `unet eval --pred pd --truth td`. */
static void eval_args(struct cmd *c, char pd[300], char td[300], const char *pred_name,
                      const char *truth_name) {
    mkdir(tmp_path(pd, 300, pred_name), 0755);
    mkdir(tmp_path(td, 300, truth_name), 0755);
    cmd_init(c, "eval");
    arg(c, "--pred");
    arg(c, "%s", pd);
    arg(c, "--truth");
    arg(c, "%s", td);
}

/* unet eval --prob: the ISBI 2012 scores of NAME_prob.tif beside those of the mask, thinned and
 * not (the 1 x 7 row of test_metrics' vscores_hand: thinned, every score 1; unthinned V_rand
 * 7/8; below the gap's 0.2f everything is one cell, and 0.2f = 0.20000000298 > 0.2 since Fiji
 * compares the float pixel as a double, so the best threshold is the first that separates,
 * 0.30000000000000004, printed 0.3), the CTC's pooled SEG, and a missing NAME_prob.tif failing
 * its image.  Also predict's --instance-method takes only its two names. */
TEST(eval_prob_scores) {
    char pd[300], td[300], p[600];
    struct cmd c;
    eval_args(&c, pd, td, "evpred", "evtruth");
    const uint8_t truth[7] = {255, 255, 255, 0, 255, 255, 255}, mask[7] = {255, 255, 0, 0, 255, 255, 255};
    const float   pr[7] = {.9f, .9f, .2f, .2f, .9f, .9f, .9f};
    float         planes[14];
    for (int i = 0; i < 7; i++) planes[i] = 1 - pr[i], planes[7 + i] = pr[i];
    unet_image t = {.w = 7, .h = 1, .c = 1, .dtype = UNET_DTYPE_U8, .data = (void *)(uintptr_t)truth};
    unet_image m = {.w = 7, .h = 1, .c = 1, .dtype = UNET_DTYPE_U8, .data = (void *)(uintptr_t)mask};
    unet_image pi = {.w = 7, .h = 1, .c = 2, .dtype = UNET_DTYPE_F32, .data = planes};
    CHECK_STATUS(unet_image_save(NULL, tmp_path(p, sizeof p, "evtruth/row.png"), &t), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_save(NULL, tmp_path(p, sizeof p, "evpred/row.png"), &m), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_save(NULL, tmp_path(p, sizeof p, "evpred/row_prob.tif"), &pi),
                 UNET_STATUS_OK);
    for (int thin = 1; thin >= 0; thin--) {
        eval_args(&c, pd, td, "evpred", "evtruth");
        arg(&c, "--prob");
        arg(&c, "--json");
        if (!thin) arg(&c, "--no-thin");
        CHECK_RUN(run(&c, 0), 0);
        CHECK_STR_CONTAINS(last_err, thin ? "\"v_rand\": 1," : "\"v_rand\": 0.875,");
        CHECK_STR_CONTAINS(last_err, thin ? "\"v_rand_at_05\": 1," : "\"v_rand_at_05\": 0.875,");
        CHECK_STR_CONTAINS(last_err, "\"best_v_rand_threshold\": 0.3,");
        /* The challenge's pixel error: at t 0.0 and 0.1 all 7 pixels are positive (tp 6, fp 1:
         * F 12/13), from 0.2 five (tp 5, fn 1: F 10/11): 1 - 12/13 = 1/13 at t = 0. */
        CHECK_STR_CONTAINS(last_err, "\"best_pixel_error\": 0.0769231, "
                                     "\"best_pixel_error_threshold\": 0}");
        CHECK_STR_CONTAINS(last_err, "\"seg_ctc\": ");
        CHECK_STR_CONTAINS(last_err, thin ? "\"thinned\": true" : "\"thinned\": false");
    }
    remove(tmp_path(p, sizeof p, "evpred/row_prob.tif"));
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "row_prob.tif");
    cmd_init(&c, "predict");
    for (int k = 0; k < 3; k++) arg(&c, k == 0 ? "--model" : k == 1 ? "--input" : "--output"), arg(&c, "x");
    arg(&c, "--instance-method");
    arg(&c, "voronoi");
    CHECK_RUN(run(&c, 0), 2);
    CHECK_STR_CONTAINS(last_err, "voronoi");
}

/* unet eval reads a prediction's NAME_instances.tif once, for its labels, and uses them as
 * they are, however many objects they hold: two blobs labelled 1 are one predicted object
 * (the connected components of the mask would be two), an empty file is no object, two
 * labels are two; the truth, a binary mask, is its connected components.  A file of another
 * size fails its image, naming it. */
TEST(eval_instances_file) {
    char pd[300], td[300], p[600];
    struct cmd c;
    eval_args(&c, pd, td, "evipred", "evitruth");
    arg(&c, "--json");
    const uint8_t  mask[7] = {255, 255, 0, 0, 0, 255, 255};
    const uint16_t one[7] = {1, 1, 0, 0, 0, 1, 1}, two[7] = {1, 1, 0, 0, 0, 2, 2}, none[7] = {0};
    unet_image m = {.w = 7, .h = 1, .c = 1, .dtype = UNET_DTYPE_U8, .data = (void *)(uintptr_t)mask};
    CHECK_STATUS(unet_image_save(NULL, tmp_path(p, sizeof p, "evitruth/row.png"), &m), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_save(NULL, tmp_path(p, sizeof p, "evipred/row.png"), &m), UNET_STATUS_OK);
    CHECK_RUN(run(&c, 0), 0); /* no instances file: connected components on both sides */
    CHECK_STR_CONTAINS(last_err, "\"objects_true\": 2, \"objects_pred\": 2");
    const uint16_t *labels[3] = {one, two, none};
    const char *want[3] = {"\"objects_true\": 2, \"objects_pred\": 1",
                           "\"objects_true\": 2, \"objects_pred\": 2",
                           "\"objects_true\": 2, \"objects_pred\": 0"};
    tmp_path(p, sizeof p, "evipred/row_instances.tif");
    for (int k = 0; k < 3; k++) {
        unet_image im = {.w = 7, .h = 1, .c = 1, .dtype = UNET_DTYPE_U16,
                         .data = (void *)(uintptr_t)labels[k]};
        CHECK_STATUS(unet_image_save(NULL, p, &im), UNET_STATUS_OK);
        CHECK_RUN(run(&c, 0), 0);
        CHECK_STR_CONTAINS(last_err, want[k]);
    }
    unet_image wide = {.w = 6, .h = 1, .c = 1, .dtype = UNET_DTYPE_U16,
                       .data = (void *)(uintptr_t)two};
    CHECK_STATUS(unet_image_save(NULL, p, &wide), UNET_STATUS_OK);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "row_instances.tif is 6x1 but the truth");
}

/* The commands on option tables (src/cli/options.h): --help lists each default from the
 * table, the defaults reach the command, a range and a choice are refused in one line. */
TEST(option_tables) {
    static const char *helps[][3] = {
        {"eval", "--classes K", "classes (2)"},
        {"report", "--out FILE", "the page to write (.html)"},
        {"export", "--onnx FILE.onnx", "bioimage.io: license (CC-BY-4.0)"},
        {"info", "--size HxW", "image size for FLOPs and memory (512x512)"},
        {"weightmap", "--wc balance|none", "class-balancing term (balance)"},
        {"convolutionalize", "--arch NAME", "fcn32s, fcn16s or fcn8s (fcn32s)"},
        {"train", "--base N", "channels of the first level (64; 16 with --minutes)"},
        {"train", "--loss ce|ce+dice|dice|wce\n", "ce, ce+dice (default), dice, wce (weight map"},
        {"train", "--max-rollbacks N", "up to N times, then stop with exit 3 (3)\n"},
        {"predict", "--instance-method watershed|cc", "or cc (connected components)\n"},
        {"predict", "--precision fp32|bf16", "fp32 (default) or bf16"},
    };
    struct cmd c;
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        char usage[64];
        cmd_init(&c, helps[i][0]);
        arg(&c, "--help");
        CHECK_RUN(run(&c, 0), 0);
        snprintf(usage, sizeof usage, "usage: unet %s ", helps[i][0]);
        const char *want[3] = {usage, helps[i][1], helps[i][2]};
        for (int k = 0; k < 3; k++) CHECK_STR_CONTAINS(last_err, want[k]);
    }
    static const char *info_defaults[] = {"architecture   unet (", "in 1, classes 2, base 64\n",
                                          "depth          4 ",
                                          "input          512x512 -> output 512x512\n"};
    cmd_init(&c, "info");
    CHECK_RUN(run(&c, 0), 0);
    for (int k = 0; k < 4; k++) CHECK_STR_CONTAINS(last_err, info_defaults[k]);
    arg(&c, "--base=8");
    arg(&c, "--size=64");
    CHECK_RUN(run(&c, 0), 0);
    const char *info_set[] = {"base 8\n", "input          64x64 -> output 64x64\n"};
    for (int k = 0; k < 2; k++) CHECK_STR_CONTAINS(last_err, info_set[k]);
    static const char *refused[][8] = {
        {"eval", "--pred", "a", "--truth", "b", "--classes", "65", "eval: --classes must be 2..64"},
        {"weightmap", "--mask", "a", "--output", "b", "--wc", "nope",
         "--wc: 'nope' (expected balance or none)"},
        {"convolutionalize", "--in", "a", "--out", "b", "--classes", "x",
         "convolutionalize: --classes: 'x' is not a valid integer"},
        {"export", "m.safetensors", "--onnx", NULL, NULL, NULL, NULL,
         "export: --onnx needs a value (FILE.onnx)"},
        {"train", "--images", "a", "--masks", "b", "--batch", "-1", "train: --batch must be >= 0"},
        {"train", "--classes", "0", NULL, NULL, NULL, NULL, "train: --classes must be >= 1"},
        {"train", "--loss", "focal", NULL, NULL, NULL, NULL,
         "--loss: 'focal' (expected ce, ce+dice, dice or wce)"},
        {"train", "--recipe", "papers", NULL, NULL, NULL, NULL,
         "--recipe: 'papers' (expected seed, paper or paper-sgd)"},
        {"train", "--images=a", "--masks=b", "--out=o.safetensors", "--val-split", "1", NULL,
         "train: 0 <= --val-split < 1"},
        {"predict", "--model", "m", "--input", "i", "--min-size", "-5",
         "predict: --min-size must be >= 0"},
        {"predict", "--batch", "0", NULL, NULL, NULL, NULL, "predict: --batch must be >= 1"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        cmd_init(&c, NULL);
        for (int k = 0; k < 7 && refused[i][k]; k++) arg(&c, "%s", refused[i][k]);
        CHECK_RUN(run(&c, 0), 2);
        CHECK_STR_CONTAINS(last_err, refused[i][7]);
        CHECK_EQ(count_lines(last_err), 1);
    }
}

/* ---- guarded training (docs/training.md) ---- */

/* The `selected` metadata of a model file, or "" when it has none or does not load. */
static void selected_of(const char *path, char *buf, size_t size) {
    unet_model *m = NULL;
    buf[0] = 0;
    if (unet_model_load(NULL, path, &m) == UNET_STATUS_OK && unet_model_meta(m, "selected"))
        snprintf(buf, size, "%s", unet_model_meta(m, "selected"));
    unet_model_free(m);
}

/* A run's folder under tmp_dir and its files: model.safetensors, model.last.safetensors,
 * model.resume.safetensors, model.log.csv. */
struct run_files {
    char dir[300], out[512], last[512], ck[512], log[512];
};

static void run_files(struct run_files *f, const char *name) {
    mkdir(tmp_path(f->dir, sizeof f->dir, name), 0755);
    snprintf(f->out, sizeof f->out, "%s/model.safetensors", f->dir);
    snprintf(f->last, sizeof f->last, "%s/model.last.safetensors", f->dir);
    snprintf(f->ck, sizeof f->ck, "%s/model.resume.safetensors", f->dir);
    snprintf(f->log, sizeof f->log, "%s/model.log.csv", f->dir);
}

static int read_val_rows(const char *log, char rows[][256], int max) {
    return read_rows(log, true, rows[0], sizeof rows[0], max);
}

/* An absurd learning rate (Adam, lr 100): the guard catches it, rolls back to the state the
 * run started from with half the rate, and past --max-rollbacks stops with exit 3, the event
 * in the log's `event` column and on stderr, and the last good state as the last model.  With
 * a rollback factor that brings the rate back to sense, the same run recovers and ends 0. */
TEST(forced_divergence_is_caught) {
    struct run_files f, g;
    char sel[256];
    run_files(&f, "diverge");
    struct cmd c;
    train_args(&c, f.out, 60, 0);
    arg(&c, "--lr");
    arg(&c, "100");
    arg(&c, "--max-rollbacks");
    arg(&c, "1");
    CHECK_RUN(run(&c, 0), 3);
    CHECK_STR_CONTAINS(last_err, "rolled back to step 0 with the learning rate x0.5 (now 50)");
    CHECK_STR_CONTAINS(last_err, "unet: error: training diverged: ");
    CHECK_STR_CONTAINS(last_err, "after 1 rollback to the last good state (step 0)");
    CHECK_STR_CONTAINS(last_err, "hold the last good state (step 0)");
    char *text = read_text(f.log);
    CHECK_STR_CONTAINS(text, ",rollback:");
    CHECK_STR_CONTAINS(text, ";to=0;lr=50\n");
    CHECK_STR_CONTAINS(text, ",diverged:");
    free(text);
    selected_of(f.last, sel, sizeof sel);
    CHECK_STR_CONTAINS(sel, "last good step=0");
    /* OUT, when an epoch ended before the divergence, is a model the guard trusted. */
    if (access(f.out, F_OK) == 0) {
        selected_of(f.out, sel, sizeof sel);
        CHECK_STR_CONTAINS(sel, "last step=");
    }
    printf("       %s", strstr(last_err, "unet: error") ? strstr(last_err, "unet: error") : last_err);

    run_files(&g, "recover");
    train_args(&c, g.out, 36, 0);
    arg(&c, "--lr");
    arg(&c, "100");
    arg(&c, "--rollback-lr");
    arg(&c, "1e-5");
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "rolled back to step 0 with the learning rate x1e-05 (now 0.001)");
    text = read_text(g.log);
    int rollbacks = 0;
    for (const char *p = text; p && (p = strstr(p, ",rollback:")); p++) rollbacks++;
    CHECK_EQ(rollbacks, 1);
    CHECK_STR_CONTAINS(text, "\n36,2,");
    free(text);
    selected_of(g.out, sel, sizeof sel);
    CHECK_STR_CONTAINS(sel, "last step=36");
}

/* With validation, OUT is the best validation Dice (the first of equals) and says so; the last
 * model says it is the last; info and predict print which one they load (predict --quiet
 * says nothing). */
TEST(best_and_last_are_selected) {
    struct run_files f;
    char sel[256], want[256];
    run_files(&f, "best");
    struct cmd c;
    train_args(&c, f.out, 50, 0);
    snprintf(c.pool[17], sizeof c.pool[0], "0.25"); /* --val-split */
    CHECK(strcmp(c.v[16], "--val-split") == 0);
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "holding back 1 of 4 images for validation");
    static char rows[16][256];
    int n = read_val_rows(f.log, rows, 16);
    CHECK_EQ(n, 4); /* 14 steps per epoch: 14, 28, 42 and the end */
    double best = -1;
    long best_step = -1;
    for (int i = 0; i < n; i++) {
        long step = strtol(rows[i], NULL, 10);
        const char *p = rows[i];
        for (int k = 0; k < 5; k++) p = strchr(p, ',') + 1;
        double dice = strtod(p, NULL);
        if (dice > best) best = dice, best_step = step;
        bool marked = strstr(rows[i], ",best:val_dice=") != NULL;
        CHECK_EQ(marked, best_step == step);
    }
    selected_of(f.out, sel, sizeof sel);
    snprintf(want, sizeof want, "best val_dice=%.4f step=%ld", best, best_step);
    CHECK_STR_CONTAINS(sel, want);
    selected_of(f.last, sel, sizeof sel);
    CHECK_STR_CONTAINS(sel, "last step=50");
    CHECK_STR_CONTAINS(last_err, want);
    printf("       OUT: %s; last: %s\n", want, sel);
    cmd_init(&c, "info");
    arg(&c, "%s", f.out);
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "selected       best val_dice=");
    char img[512], pout[512];
    snprintf(img, sizeof img, "%s/images/img0.png", data_dir);
    predict_args(&c, f.out, img, tmp_path(pout, sizeof pout, "best_pred"));
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, want);
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 0);
    CHECK_EQ(strlen(last_err), 0);
}

/* --minutes: the budget ends the run after the step in flight, which is validated and written
 * as best and last; exit 0 with a line that says so. */
TEST(minutes_budget_stops_cleanly) {
    struct run_files f;
    char sel[256];
    run_files(&f, "budget");
    struct cmd c;
    train_args(&c, f.out, 100000, 0);
    snprintf(c.pool[17], sizeof c.pool[0], "0.25"); /* --val-split */
    arg(&c, "--minutes");
    arg(&c, "0.00001");
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "the time budget of 1e-05 minutes ended the run at step 1 of 100000");
    selected_of(f.out, sel, sizeof sel);
    CHECK_STR_CONTAINS(sel, "best val_dice=");
    CHECK_STR_CONTAINS(sel, " step=1");
    selected_of(f.last, sel, sizeof sel);
    CHECK_STR_CONTAINS(sel, "last step=1");
    CHECK_EQ(checkpoint_step(f.ck), 1);
}

/* Interrupted in the middle of an epoch and resumed: the epoch rows (mean loss over the whole
 * epoch, validation) and the saved models, moving average included, are those of the run
 * that was never interrupted. */
TEST(resume_keeps_epoch_sums_and_ema) {
    struct run_files r, f;
    char err[512];
    run_files(&r, "ema_ref");
    run_files(&f, "ema_int");
    snprintf(err, sizeof err, "%s/stderr.txt", f.dir);
    struct cmd c;
    train_args(&c, r.out, 30, 0);
    snprintf(c.pool[17], sizeof c.pool[0], "0.25");
    arg(&c, "--ema");
    arg(&c, "0.9");
    CHECK_RUN(run(&c, 0), 0);
    train_args(&c, f.out, 30, 0);
    snprintf(c.pool[17], sizeof c.pool[0], "0.25");
    arg(&c, "--ema");
    arg(&c, "0.9");
    pid_t pid = spawn(&c, err, 0);
    static char rows[MAX_ROWS][48];
    double t0 = now();
    while (read_losses(f.log, rows) < 3 && now() - t0 < 60) sleep_s(0.002);
    kill(pid, SIGTERM);
    CHECK_EQ(wait_for(pid), 143);
    long step = checkpoint_step(f.ck);
    printf("       interrupted at step %ld of 30 (epochs of 14 steps)\n", step);
    arg(&c, "--resume");
    arg(&c, "%s", f.ck);
    CHECK_RUN(run(&c, 0), 0);
    static char want_rows[16][256], got_rows[16][256];
    int n_ref = read_val_rows(r.log, want_rows, 16), n = read_val_rows(f.log, got_rows, 16);
    CHECK_EQ(n_ref, 3);
    CHECK_EQ(n, n_ref);
    for (int i = 0; i < n && i < n_ref; i++)
        if (strcmp(want_rows[i], got_rows[i]) != 0)
            HARNESS_FAIL_AT(__FILE__, __LINE__, "epoch row %d: resumed '%s', uninterrupted '%s'", i,
                            got_rows[i], want_rows[i]);
    if (!same_bytes(r.out, f.out)) HARNESS_FAIL_AT(__FILE__, __LINE__, "OUT differs after the resume");
    if (!same_bytes(r.last, f.last))
        HARNESS_FAIL_AT(__FILE__, __LINE__, "the last model differs after the resume");
    char sel[256];
    selected_of(f.last, sel, sizeof sel);
    CHECK_STR_CONTAINS(sel, "last step=30 ema=0.9");
}

/* Ends of a run that issue 19 found dishonest: --init with --resume is a usage error; a
 * resumed run already at its last step trains nothing, writes nothing and says so. */
TEST(resume_edges) {
    struct run_files f;
    char keep[600];
    run_files(&f, "edges");
    snprintf(keep, sizeof keep, "%s/keep.safetensors", f.dir);
    const char *out = f.out, *ck = f.ck;
    struct cmd c;
    train_args(&c, out, 4, 2);
    CHECK_RUN(run(&c, 0), 0);
    CHECK(copy_file(out, keep));
    train_args(&c, out, 4, 2);
    arg(&c, "--resume");
    arg(&c, "%s", ck);
    arg(&c, "--init");
    arg(&c, "%s", out);
    CHECK_RUN(run(&c, 0), 2);
    CHECK_STR_CONTAINS(last_err, "--init and --resume exclude each other");
    CHECK_EQ(count_lines(last_err), 1);
    train_args(&c, out, 4, 2);
    arg(&c, "--resume");
    arg(&c, "%s", ck);
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "is at step 4 and the run has 4 steps: nothing to train, nothing written");
    CHECK(strstr(last_err, "wrote") == NULL);
    CHECK(same_bytes(out, keep));
    unlink(out);
    CHECK_RUN(run(&c, 0), 0);
    CHECK(access(out, F_OK) != 0);
    /* Damaged guard statistics are refused with one line naming the file. */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/bad_guard.resume.safetensors", f.dir);
    CHECK(copy_checkpoint(ck, bad, "train.guard", "v1 scale=7", NULL, 0, 0));
    train_args(&c, out, 8, 2);
    arg(&c, "--resume");
    arg(&c, "%s", bad);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "bad_guard.resume.safetensors: metadata train.guard is not valid");
    CHECK_EQ(count_lines(last_err), 1);
}

/* The held-back set without --val-images: a band of each of 1-3 images, a warning when the
 * images are too small for one, the last pages of a stack. */
TEST(held_back_set) {
    char dir[300], out[512], p[600];
    struct cmd c;
    for (int k = 1; k <= 3; k++) {
        snprintf(dir, sizeof dir, "%s/hold%d", tmp_dir, k);
        CHECK(write_dataset(dir, k, 96));
        snprintf(out, sizeof out, "%s/m.safetensors", dir);
        train_args(&c, out, 2, 0);
        snprintf(c.pool[3], sizeof c.pool[0], "%s/images", dir);
        snprintf(c.pool[5], sizeof c.pool[0], "%s/masks", dir);
        snprintf(c.pool[17], sizeof c.pool[0], "0.2");
        CHECK_RUN(run(&c, 0), 0);
        CHECK_STR_CONTAINS(last_err, "holding back the bottom 20% of the rows of");
        snprintf(p, sizeof p, "on %d images, validating on %d", k, k);
        CHECK_STR_CONTAINS(last_err, p);
    }
    snprintf(dir, sizeof dir, "%s/hold_small", tmp_dir);
    CHECK(write_dataset(dir, 2, 40));
    snprintf(out, sizeof out, "%s/m.safetensors", dir);
    train_args(&c, out, 2, 0);
    snprintf(c.pool[3], sizeof c.pool[0], "%s/images", dir);
    snprintf(c.pool[5], sizeof c.pool[0], "%s/masks", dir);
    snprintf(c.pool[17], sizeof c.pool[0], "0.1");
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "warning: no validation data: the images are too small");
    /* A 6-page stack: its last page. */
    snprintf(dir, sizeof dir, "%s/hold_stack", tmp_dir);
    CHECK(write_dataset(dir, 6, 48));
    unet_image stack, mstack;
    CHECK_STATUS(unet_image_alloc(NULL, &stack, 48, 48, 6, UNET_DTYPE_U8), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_alloc(NULL, &mstack, 48, 48, 6, UNET_DTYPE_U8), UNET_STATUS_OK);
    for (int k = 0; k < 6; k++) {
        unet_image a, b;
        snprintf(p, sizeof p, "%s/images/img%d.png", dir, k);
        CHECK_STATUS(unet_image_load(NULL, p, 0, &a), UNET_STATUS_OK);
        unlink(p);
        snprintf(p, sizeof p, "%s/masks/img%d.png", dir, k);
        CHECK_STATUS(unet_image_load(NULL, p, 0, &b), UNET_STATUS_OK);
        unlink(p);
        if (a.data && b.data) {
            memcpy((uint8_t *)stack.data + k * 48 * 48, a.data, 48 * 48);
            memcpy((uint8_t *)mstack.data + k * 48 * 48, b.data, 48 * 48);
        }
        unet_image_free(&a);
        unet_image_free(&b);
    }
    snprintf(p, sizeof p, "%s/images/stack.tif", dir);
    CHECK_STATUS(unet_image_save(NULL, p, &stack), UNET_STATUS_OK);
    snprintf(p, sizeof p, "%s/masks/stack.tif", dir);
    CHECK_STATUS(unet_image_save(NULL, p, &mstack), UNET_STATUS_OK);
    unet_image_free(&stack);
    unet_image_free(&mstack);
    snprintf(out, sizeof out, "%s/m.safetensors", dir);
    train_args(&c, out, 2, 0);
    snprintf(c.pool[3], sizeof c.pool[0], "%s/images", dir);
    snprintf(c.pool[5], sizeof c.pool[0], "%s/masks", dir);
    snprintf(c.pool[17], sizeof c.pool[0], "0.1");
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "holding back 1 of 6 images for validation (--val-split 0.1): the "
                                 "last pages of the stack");
}

TEST(sighup_exit_129_and_resume) {
    interrupt_with(SIGHUP, 129);
}

TEST(sigpipe_exit_141_and_resume) {
    interrupt_with(SIGPIPE, 141);
}

/* The CLI's OpenMP threads wait passively unless OMP_WAIT_POLICY says otherwise (main.c
 * restarts itself with it set).  libgomp's OMP_DISPLAY_ENV=verbose prints the spin count it
 * starts with: 0 when passive, 300000 when the variable is unset (it spins a while). */
TEST(openmp_waits_passively) {
#if defined(_OPENMP) && !defined(__clang__)
    const char *saved = getenv("OMP_WAIT_POLICY");
    char keep[64];
    snprintf(keep, sizeof keep, "%s", saved ? saved : "");
    static const char *set[] = {NULL, "active", "passive"};
    static const char *want[] = {"GOMP_SPINCOUNT = '0'", "OMP_WAIT_POLICY = 'ACTIVE'",
                                 "GOMP_SPINCOUNT = '0'"};
    setenv("OMP_DISPLAY_ENV", "verbose", 1);
    for (int i = 0; i < 3; i++) {
        if (set[i]) setenv("OMP_WAIT_POLICY", set[i], 1);
        else unsetenv("OMP_WAIT_POLICY");
        struct cmd c;
        cmd_init(&c, "--version");
        CHECK_RUN(run(&c, 0), 0);
        /* The runtime this process ran with: the last of its displays (a restart shows two). */
        const char *last = last_err, *p;
        while ((p = strstr(last + 1, "OPENMP DISPLAY ENVIRONMENT BEGIN"))) last = p;
        CHECK_STR_CONTAINS(last, want[i]);
    }
    unsetenv("OMP_DISPLAY_ENV");
    if (saved) setenv("OMP_WAIT_POLICY", keep, 1);
    else unsetenv("OMP_WAIT_POLICY");
#else
    printf("  (not libgomp: OMP_DISPLAY_ENV's format differs; nothing checked)\n");
#endif
}

/* ---- issue 18: inputs real users have, faults of long runs ---- */

/* dir/images and dir/masks as copies of the tiny dataset's first n images, made RGB (g, g/2,
 * 255-g) when rgb, or as (H, W, 3) uint8 .npy arrays when npy; masks copied as they are. */
static bool channel_set(const char *dir, int n, bool rgb, bool npy) {
    char p[700], q[700];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/images", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/masks", dir);
    mkdir(p, 0755);
    bool ok = true;
    for (int k = 0; k < n && ok; k++) {
        unet_image g = {0}, c = {0};
        snprintf(p, sizeof p, "%s/images/img%d.png", data_dir, k);
        ok = unet_image_load(NULL, p, 0, &g) == UNET_STATUS_OK &&
             unet_image_alloc(NULL, &c, g.w, g.h, 3, UNET_DTYPE_U8) == UNET_STATUS_OK;
        size_t P = ok ? (size_t)g.w * g.h : 0;
        uint8_t *x = g.data, *y = c.data;
        for (size_t i = 0; i < P; i++)
            y[i] = x[i], y[P + i] = (uint8_t)(x[i] / 2), y[2 * P + i] = (uint8_t)(255 - x[i]);
        if (ok && npy) {
            uint8_t *hwc = malloc(3 * P);
            for (size_t i = 0; hwc && i < P; i++)
                for (int ch = 0; ch < 3; ch++) hwc[3 * i + (size_t)ch] = y[(size_t)ch * P + i];
            const int64_t shape[3] = {g.h, g.w, 3};
            snprintf(q, sizeof q, "%s/images/img%d.npy", dir, k);
            ok = hwc && unet__npy_save_nd(NULL, q, q, UNET_DTYPE_U8, 3, shape, hwc) == UNET_STATUS_OK;
            free(hwc);
        } else if (ok) {
            snprintf(q, sizeof q, "%s/images/img%d.png", dir, k);
            ok = unet_image_save(NULL, q, rgb ? &c : &g) == UNET_STATUS_OK;
        }
        snprintf(p, sizeof p, "%s/masks/img%d.png", data_dir, k);
        snprintf(q, sizeof q, "%s/masks/img%d.png", dir, k);
        ok = ok && copy_file(p, q);
        unet_image_free(&g);
        unet_image_free(&c);
    }
    return ok;
}

/* A metadata value of a checkpoint ("" when absent, "?" when it does not load). */
static const char *model_key(const char *path, const char *key) {
    static char v[128];
    unet_model *m = NULL;
    snprintf(v, sizeof v, "?");
    if (unet_model_load(NULL, path, &m) == UNET_STATUS_OK)
        snprintf(v, sizeof v, "%s", unet_model_meta(m, key) ? unet_model_meta(m, key) : "");
    unet_model_free(m);
    return v;
}

/* --channels and --channel-axis (docs/images.md): an RGB PNG given to a one-channel model is
 * refused with the options that fix it; --channels gray converts as the library does; train
 * records the choice and predict applies it; .npy arrays (H, W, 3) follow the rule; (N, H, W)
 * stacks with --channel-axis none; a resumed run keeps the layout it began with. */
TEST(channel_options) {
    make_reference();
    char dir[300], set[400], p[800], q[800], model[600], out[600], ref[512];
    tmp_path(dir, sizeof dir, "chan");
    mkdir(dir, 0755);
    tmp_path(ref, sizeof ref, "ref/model.safetensors");
    snprintf(set, sizeof set, "%s/rgb", dir);
    CHECK(channel_set(set, 3, true, false));
    struct cmd c;
    /* An RGB PNG and a one-channel model. */
    snprintf(p, sizeof p, "%s/images/img0.png", set);
    snprintf(out, sizeof out, "%s/o1", dir);
    predict_args(&c, ref, p, out);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "img0.png has 3 channels; the model takes 1: --channels gray "
                                 "converts RGB to its luminance, --channels N takes channel N");
    /* --channels gray: the mask of the luminance image itself. */
    arg(&c, "--channels");
    arg(&c, "gray");
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 0);
    unet_image img = {0};
    CHECK_STATUS(unet_image_load(NULL, p, 0, &img), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_select_channels(NULL, &img, "gray", p), UNET_STATUS_OK);
    snprintf(q, sizeof q, "%s/luma/img0.png", dir);
    mkdir(strcat(strcpy(model, dir), "/luma"), 0755);
    CHECK_STATUS(unet_image_save(NULL, q, &img), UNET_STATUS_OK);
    unet_image_free(&img);
    snprintf(model, sizeof model, "%s/o2", dir);
    predict_args(&c, ref, q, model);
    CHECK_RUN(run(&c, 0), 0);
    char a[900], b[900];
    snprintf(a, sizeof a, "%s/img0.png", out);
    snprintf(b, sizeof b, "%s/img0.png", model);
    CHECK(same_bytes(a, b));
    /* train --channels gray records it; predict applies it without being told. */
    train_on(&c, set, 2);
    arg(&c, "--channels");
    arg(&c, "gray");
    CHECK_RUN(run(&c, 0), 0);
    snprintf(model, sizeof model, "%s/m.safetensors", set);
    CHECK(strcmp(model_key(model, "channels"), "gray") == 0);
    CHECK(strcmp(model_key(model, "in_channels"), "1") == 0);
    CHECK(strcmp(model_key(model, "channel_axis"), "") == 0);
    cmd_init(&c, "info");
    arg(&c, "%s", model);
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "layout         --channel-axis auto --channels gray");
    snprintf(out, sizeof out, "%s/o3", dir);
    predict_args(&c, model, p, out);
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "m.safetensors: using --channels gray (as it was trained)");
    /* A resumed run reads its data as it began. */
    train_on(&c, set, 4);
    snprintf(q, sizeof q, "%s/m.resume.safetensors", set);
    arg(&c, "--resume");
    arg(&c, "%s", q);
    arg(&c, "--channels");
    arg(&c, "0");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "was trained with --channel-axis auto --channels gray; a resumed "
                                 "run reads its data the same way");
    /* A channel the images lack; bad values are usage errors. */
    train_on(&c, set, 2);
    arg(&c, "--channels");
    arg(&c, "1,5");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "img0.png has 3 channels (0..2): it has no channel 5 (--channels 1,5)");
    CHECK_EQ(count_lines(last_err), 1);
    const char *bad[][2] = {{"--channels", "red"}, {"--channels", "1,"}, {"--channel-axis", "sideways"},
                            {"--channel-axis", "3"}};
    for (int i = 0; i < 4; i++) {
        train_on(&c, set, 2);
        arg(&c, "%s", bad[i][0]);
        arg(&c, "%s", bad[i][1]);
        CHECK_RUN(run(&c, 0), 2);
        CHECK_STR_CONTAINS(last_err, bad[i][0]);
    }
    /* --channels 1,2: two of the three. */
    train_on(&c, set, 2);
    arg(&c, "--channels");
    arg(&c, "1,2");
    CHECK_RUN(run(&c, 0), 0);
    CHECK(strcmp(model_key(model, "in_channels"), "2") == 0);
    /* A folder of one-channel and RGB images: the hint. */
    snprintf(q, sizeof q, "%s/images/img1.png", set);
    snprintf(p, sizeof p, "%s/images/img1.png", data_dir);
    CHECK(copy_file(p, q));
    train_on(&c, set, 2);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "img1.png has 1 channels, the other images 3 (--channels gray or "
                                 "--channels N makes them alike)");
    /* (H, W, 3) arrays: three channels by the rule. */
    snprintf(set, sizeof set, "%s/npy", dir);
    CHECK(channel_set(set, 2, true, true));
    train_on(&c, set, 2);
    CHECK_RUN(run(&c, 0), 0);
    snprintf(model, sizeof model, "%s/m.safetensors", set);
    CHECK(strcmp(model_key(model, "in_channels"), "3") == 0);
    /* (N, H, W) stacks: N channels by the rule (refused for masks), N images with none, which
     * the model records and predict applies (one output per page). */
    snprintf(set, sizeof set, "%s/stack", dir);
    CHECK(channel_set(set, 3, false, false));
    const char *kinds[2] = {"images", "masks"};
    for (int k = 0; k < 2; k++) {
        uint8_t *planes = NULL;
        int w = 0, h = 0;
        for (int i = 0; i < 3; i++) {
            unet_image g = {0};
            snprintf(p, sizeof p, "%s/%s/img%d.png", set, kinds[k], i);
            CHECK_STATUS(unet_image_load(NULL, p, 0, &g), UNET_STATUS_OK);
            w = g.w, h = g.h;
            if (!planes) planes = malloc((size_t)3 * w * h);
            if (planes && g.data) memcpy(planes + (size_t)i * w * h, g.data, (size_t)w * h);
            unet_image_free(&g);
            unlink(p);
        }
        const int64_t shape[3] = {3, h, w};
        snprintf(p, sizeof p, "%s/%s/s.npy", set, kinds[k]);
        CHECK(planes && unet__npy_save_nd(NULL, p, p, UNET_DTYPE_U8, 3, shape, planes) == UNET_STATUS_OK);
        free(planes);
    }
    train_on(&c, set, 2);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "with several channels");
    arg(&c, "--channel-axis");
    arg(&c, "none");
    CHECK_RUN(run(&c, 0), 0);
    snprintf(model, sizeof model, "%s/m.safetensors", set);
    CHECK(strcmp(model_key(model, "channel_axis"), "none") == 0);
    snprintf(p, sizeof p, "%s/images/s.npy", set);
    snprintf(out, sizeof out, "%s/o4", dir);
    predict_args(&c, model, p, out);
    arg(&c, "--quiet");
    CHECK_RUN(run(&c, 0), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(q, sizeof q, "%s/s_p%d.npy", out, i);
        CHECK(access(q, R_OK) == 0);
    }
    /* A checkpoint of a newer format is refused on one line naming the file. */
    predict_args(&c, "tests/data/corrupt/model_format_newer.safetensors", p, out);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "model_format_newer.safetensors: checkpoint format 2 (written by "
                                 "unet 9.0.0), but this unet");
    CHECK_EQ(count_lines(last_err), 1);
}

/* Writes a one-channel float image (.npy or .tif by the name) of S x S with value v at
 * (y, x) (none when y < 0) and a gradient elsewhere, or zeros (a mask) when !gradient. */
static bool float_image(const char *path, int S, int y, int x, float v, bool gradient) {
    unet_image img;
    if (unet_image_alloc(NULL, &img, S, S, 1, UNET_DTYPE_F32) != UNET_STATUS_OK) return false;
    float *f = img.data;
    for (int i = 0; i < S * S; i++) f[i] = gradient ? (float)(i % S) / (float)S : 0.0f;
    if (y >= 0) f[y * S + x] = v;
    bool ok = unet_image_save(NULL, path, &img) == UNET_STATUS_OK;
    unet_image_free(&img);
    return ok;
}

/* Trains on set (train_on, 2 steps): exit rc, the output saying `says`. */
static void train_expect(const char *set, int rc, const char *says) {
    struct cmd c;
    train_on(&c, set, 2);
    CHECK_RUN(run(&c, 0), rc);
    CHECK_STR_CONTAINS(last_err, says);
}

/* Replaces set/name.png by name+ext, a float image (float_image) with v at (y 5, x 6); the
 * training on set fails on one line saying `says`. */
static void train_refuses_float(const char *set, const char *name, const char *ext, float v,
                                bool gradient, const char *says) {
    char p[800];
    snprintf(p, sizeof p, "%s/%s.png", set, name);
    unlink(p);
    snprintf(p, sizeof p, "%s/%s%s", set, name, ext);
    CHECK(float_image(p, 96, 5, 6, v, gradient));
    train_expect(set, 1, says);
    CHECK_EQ(count_lines(last_err), 1);
}

/* Bad training data is named before training starts: non-finite values in an image (a
 * validation image too, which used to fail only at the first validation) or a mask, labels
 * outside the classes, masks that are all background (a warning), empty and one-image
 * folders, and names that make the mask of an image ambiguous. */
TEST(training_data_faults) {
    char dir[300], set[400], p[800], q[800];
    tmp_path(dir, sizeof dir, "faults");
    mkdir(dir, 0755);
    snprintf(set, sizeof set, "%s/a", dir);
    CHECK(channel_set(set, 2, false, false));
    struct cmd c;
    /* A validation image with Inf: refused before the first step. */
    snprintf(p, sizeof p, "%s/val", dir);
    CHECK(channel_set(p, 1, false, false));
    snprintf(q, sizeof q, "%s/val/images/img0.png", dir);
    unlink(q);
    snprintf(q, sizeof q, "%s/val/images/img0.npy", dir);
    CHECK(float_image(q, 96, 3, 4, INFINITY, true));
    train_on(&c, set, 2);
    arg(&c, "--val-images");
    arg(&c, "%s/images", p);
    arg(&c, "--val-masks");
    arg(&c, "%s/masks", p);
    CHECK_RUN(run(&c, 0), 1);
    snprintf(q, sizeof q, "%s/val/images/img0.npy: non-finite value inf at channel 0, pixel (y 3, x 4); "
             "1 of 9216 values are NaN or infinite: training data must be finite", dir);
    CHECK_STR_CONTAINS(last_err, q);
    CHECK(strstr(last_err, "steps of") == NULL); /* no training started */
    /* A float TIFF training image with NaN; a float mask with NaN. */
    train_refuses_float(set, "images/img1", ".tif", NAN, true,
                        "img1.tif: non-finite value nan at channel 0, pixel (y 5, x 6)");
    snprintf(q, sizeof q, "%s/images/img1.tif", set);
    CHECK(float_image(q, 96, -1, 0, 0, true));
    train_refuses_float(set, "masks/img1", ".npy", NAN, false,
                        "masks/img1.npy: mask value nan at (x=6, y=5) is not an integer");
    snprintf(q, sizeof q, "%s/masks/img1.npy", set);
    /* A label outside the classes (class-id masks 0..2, and a 7). */
    unet_image m;
    CHECK_STATUS(unet_image_alloc(NULL, &m, 96, 96, 1, UNET_DTYPE_U8), UNET_STATUS_OK);
    ((uint8_t *)m.data)[0] = 2;
    snprintf(q, sizeof q, "%s/masks/img0.png", set);
    CHECK_STATUS(unet_image_save(NULL, q, &m), UNET_STATUS_OK);
    ((uint8_t *)m.data)[7 * 96 + 8] = 7;
    snprintf(q, sizeof q, "%s/masks/img1.npy", set);
    unlink(q);
    snprintf(q, sizeof q, "%s/masks/img1.png", set);
    CHECK_STATUS(unet_image_save(NULL, q, &m), UNET_STATUS_OK);
    train_on(&c, set, 2);
    arg(&c, "--classes");
    arg(&c, "3");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "masks/img1.png: mask value 7 at (x=8, y=7) is not a class id in 0..2");
    /* Every mask all background: trained, with a warning. */
    memset(m.data, 0, 96 * 96);
    for (int i = 0; i < 2; i++) {
        snprintf(q, sizeof q, "%s/masks/img%d.png", set, i);
        CHECK_STATUS(unet_image_save(NULL, q, &m), UNET_STATUS_OK);
    }
    unet_image_free(&m);
    train_expect(set, 0, "warning: every mask in");
    CHECK_STR_CONTAINS(last_err, "is all background (0): the model can only learn to predict background");
    /* An empty folder; a folder of one image (held back as a band, trained). */
    snprintf(set, sizeof set, "%s/empty", dir);
    CHECK(channel_set(set, 0, false, false));
    train_expect(set, 1, "/images: no images (.png, .tif, .tiff, .npy) in this directory");
    snprintf(set, sizeof set, "%s/one", dir);
    CHECK(channel_set(set, 1, false, false));
    train_on(&c, set, 2);
    for (int i = 0; i < c.n; i++)
        if (strcmp(c.v[i], "--val-split") == 0) snprintf(c.pool[i + 1], sizeof c.pool[0], "0.2");
    CHECK_RUN(run(&c, 0), 0);
    snprintf(p, sizeof p, "%s/m.safetensors", set);
    CHECK(strcmp(model_key(p, "in_channels"), "1") == 0);
    /* a.png and a.tif side by side: the mask a.png is a.png's, not a.tif's. */
    snprintf(set, sizeof set, "%s/dup", dir);
    CHECK(channel_set(set, 1, false, false));
    snprintf(p, sizeof p, "%s/images/img0.png", set);
    snprintf(q, sizeof q, "%s/images/img0.tif", set);
    unet_image g = {0};
    CHECK_STATUS(unet_image_load(NULL, p, 0, &g), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_save(NULL, q, &g), UNET_STATUS_OK);
    unet_image_free(&g);
    train_expect(set, 1, "img0.tif and ");
    CHECK_STR_CONTAINS(last_err, "images/img0.png have the same name: the mask");
    CHECK_EQ(count_lines(last_err), 1);
    /* Two masks for one image name (img0.png and img0.tif for img0.npy): ambiguous. */
    unlink(p), unlink(q);
    snprintf(p, sizeof p, "%s/images/img0.npy", set);
    CHECK(float_image(p, 96, -1, 0, 0, true));
    snprintf(p, sizeof p, "%s/masks/img0.png", set);
    snprintf(q, sizeof q, "%s/masks/img0.tif", set);
    CHECK(copy_file(p, q));
    train_expect(set, 1, "img0.npy: several masks in");
    CHECK_STR_CONTAINS(last_err, "have its name (img0.png, img0.tif)");
}

/* One kind of output per run fails to be written (RLIMIT_FSIZE just below its size, above
 * every output written before it): the run exits 1 naming the file, the file's previous
 * version is left byte for byte, and no temporary stays. */
struct output_case {
    const char *what;
    const char *cmd;          /* predict, weightmap, export, eval */
    const char *target;       /* the output that fails, in the case's folder */
};

/* An option and its value. */
static void opt(struct cmd *c, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void opt(struct cmd *c, const char *name, const char *fmt, ...) {
    arg(c, "%s", name);
    va_list ap;
    va_start(ap, fmt);
    varg(c, fmt, ap);
    va_end(ap);
}

static void output_case_args(struct cmd *c, const struct output_case *k, const char *d,
                             const char *model) {
    char img[400];
    snprintf(img, sizeof img, "%s/images/img0.png", data_dir);
    if (strcmp(k->cmd, "predict") == 0) {
        const char *in = strstr(k->target, ".tif") && !strstr(k->target, "_")   ? "in.tif"
                         : strstr(k->target, ".npy") && !strstr(k->target, "_") ? "in.npy"
                                                                                 : NULL;
        char p[700];
        snprintf(p, sizeof p, "%s_in", d);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s_in/%s", d, in ? in : "img0.png");
        if (in) {
            unet_image g = {0};
            unet_image_load(NULL, img, 0, &g);
            unet_image_save(NULL, p, &g);
            unet_image_free(&g);
        } else {
            copy_file(img, p);
        }
        predict_args(c, model, p, d);
        arg(c, "--quiet");
        if (strstr(k->target, "_instances")) arg(c, "--instances");
        if (strstr(k->target, "_prob")) arg(c, "--probabilities");
        if (strstr(k->target, "_overlay")) arg(c, "--overlay");
        if (strstr(k->target, "_logits")) {
            opt(c, "--logits", "%s/%s", d, k->target);
        }
    } else if (strcmp(k->cmd, "weightmap") == 0) {
        cmd_init(c, "weightmap");
        opt(c, "--mask", "%s/masks/img0.png", data_dir);
        opt(c, "--output", "%s/%s", d, k->target);
    } else if (strcmp(k->cmd, "export") == 0) {
        cmd_init(c, "export");
        arg(c, strstr(k->target, ".onnx") ? "--onnx" : "--bioimageio");
        arg(c, "%s/%s", d, k->target);
        if (!strstr(k->target, ".onnx")) {
            opt(c, "--sample", "%s", img);
        }
        arg(c, "%s", model);
    } else {
        cmd_init(c, "eval");
        opt(c, "--pred", "%s/masks", data_dir);
        opt(c, "--truth", "%s/masks", data_dir);
        opt(c, "--report", "%s/%s", d, k->target);
    }
}

/* The largest file of dir other than `except` (a full path) and the saved copies. */
static long largest_other(const char *dir, const char *except) {
    DIR *dd = opendir(dir);
    long big = 0;
    struct dirent *e;
    while (dd && (e = readdir(dd))) {
        char p[1200];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || strcmp(p, except) == 0 || stat(p, &sb) != 0 ||
            !S_ISREG(sb.st_mode) || strstr(e->d_name, ".saved"))
            continue;
        if (sb.st_size > big) big = (long)sb.st_size;
    }
    if (dd) closedir(dd);
    return big;
}

TEST(full_disk_each_output) {
    make_reference();
    char model[512];
    tmp_path(model, sizeof model, "ref/model.safetensors");
    static const struct output_case cases[] = {
        {"predict mask (PNG)", "predict", "img0.png"},
        {"predict mask (TIFF)", "predict", "in.tif"},
        {"predict mask (.npy)", "predict", "in.npy"},
        {"predict instances", "predict", "img0_instances.tif"},
        {"predict probabilities", "predict", "img0_prob.tif"},
        {"predict overlay", "predict", "img0_overlay.png"},
        {"predict logits", "predict", "img0_logits.npy"},
        {"weight map", "weightmap", "w.tif"},
        {"ONNX export", "export", "m.onnx"},
        {"bioimage.io package", "export", "pkg.zip"},
        {"eval report", "eval", "r.html"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct output_case *k = &cases[i];
        char d[400], target[700], saved[800], name[32];
        snprintf(name, sizeof name, "full_out%zu", i);
        tmp_path(d, sizeof d, name);
        mkdir(d, 0755);
        snprintf(target, sizeof target, "%s/%s", d, k->target);
        struct cmd c;
        output_case_args(&c, k, d, model);
        CHECK_RUN(run(&c, 0), 0);
        struct stat sb;
        if (stat(target, &sb) != 0) {
            printf("  %s: %s was not written\n", k->what, target);
            harness_cur_failed++;
            continue;
        }
        snprintf(saved, sizeof saved, "%s.saved", target);
        CHECK(copy_file(target, saved));
        char folder[700];
        snprintf(folder, sizeof folder, "%s", target);
        *strrchr(folder, '/') = 0;
        long limit = (long)sb.st_size - 1, before = strcmp(k->cmd, "predict") == 0 &&
                                                           !strstr(k->target, "_logits")
                                                       ? largest_other(folder, target) : 0;
        if (before >= limit) {
            printf("  %s: an output written before it (%ld bytes) is not smaller (%ld)\n",
                   k->what, before, limit);
            harness_cur_failed++;
        }
#if defined(__clang__) && defined(_OPENMP)
        /* LLVM's OpenMP runtime (clang's -fopenmp) sizes a 1 KB file in /dev/shm as the program
         * starts, and dies there (SIGXFSZ, or SIGBUS when that is ignored) under a smaller
         * file-size limit: nothing linked with it runs under one.  gcc's builds test these. */
        if (limit < 1024) {
            printf("       %-22s limit %6ld: not testable under LLVM's libomp (it needs 1024)\n",
                   k->what, limit);
            continue;
        }
#endif
        unlink(saved);
        CHECK(copy_file(target, saved));
        int rc = run(&c, limit);
        const char *line = strstr(last_err, "unet: error:");
        printf("       %-22s limit %6ld: exit %d: %.*s\n", k->what, limit, rc,
               line ? (int)strcspn(line, "\n") : 0, line ? line : "");
        CHECK_RUN(rc, 1);
        CHECK_STR_CONTAINS(last_err, target);
        CHECK_STR_CONTAINS(last_err, "File too large");
        CHECK(same_bytes(target, saved));
        CHECK_EQ(count_files(folder, ".tmp."), 0);
    }
}

/* A real full disk (ENOSPC) for the training log and the report, each on a full tmpfs while
 * the checkpoints are elsewhere: the log's failure stops the run after the resumable
 * checkpoint is written; the report's leaves the models written.  Needs root (mount). */
TEST(full_disk_log_and_report) {
    char dir[300], fs[300], out[512], p[700];
    mkdir(tmp_path(dir, sizeof dir, "fulllog"), 0755);
    tmp_path(fs, sizeof fs, "fulllog_fs");
    mkdir(fs, 0755);
    if (mount("tmpfs", fs, "tmpfs", 0, "size=16k,mode=0755") != 0) {
        printf("       (cannot mount a tmpfs: %s; skipped)\n", strerror(errno));
        return;
    }
    /* Fill all but one page. */
    static char filler[12288];
    snprintf(p, sizeof p, "%s/filler", fs);
    CHECK(write_all(p, filler, sizeof filler));
    snprintf(out, sizeof out, "%s/model.safetensors", dir);
    struct cmd c;
    train_args(&c, out, 150, 50);
    arg(&c, "--log");
    arg(&c, "%s/log.csv", fs);
    CHECK_RUN(run(&c, 0), 1);
    printf("       %s", strstr(last_err, "unet: error") ? strstr(last_err, "unet: error") : last_err);
    CHECK_STR_CONTAINS(last_err, "log.csv");
    CHECK_STR_CONTAINS(last_err, "cannot write the log");
    snprintf(p, sizeof p, "%s/model.resume.safetensors", dir);
    long step = checkpoint_step(p);
    CHECK(step > 0 && step < 150);
    CHECK_EQ(count_files(fs, ".tmp."), 0);
    /* The report: --log back in the run's folder, the page on the full tmpfs. */
    snprintf(p, sizeof p, "%s/log.csv", fs);
    unlink(p);
    CHECK(write_all(p, filler, 4096)); /* the freed page taken again */
    train_args(&c, out, 2, 0);
    arg(&c, "--force");
    arg(&c, "--report");
    arg(&c, "%s/r.html", fs);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "r.html");
    CHECK_STR_CONTAINS(last_err, "No space left on device");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(strcmp(model_key(p, "train_steps"), "2") == 0);
    CHECK_EQ(count_files(fs, ".tmp."), 0);
    CHECK_EQ(umount(fs), 0);
}

/* Outputs on a read-only file system (a read-only tmpfs, which binds root too; chmod binds
 * only other users): every command refuses before any work, naming the file or folder. */
TEST(read_only_outputs) {
    make_reference();
    char ro[300], model[512], img[400];
    tmp_path(ro, sizeof ro, "readonly");
    mkdir(ro, 0755);
    if (mount("tmpfs", ro, "tmpfs", MS_RDONLY, "size=64k") != 0) {
        printf("       (cannot mount a read-only tmpfs: %s; skipped)\n", strerror(errno));
        return;
    }
    tmp_path(model, sizeof model, "ref/model.safetensors");
    snprintf(img, sizeof img, "%s/images/img0.png", data_dir);
    struct cmd c;
    char out[600];
    snprintf(out, sizeof out, "%s/model.safetensors", ro);
    train_args(&c, out, 2, 0);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "Read-only file system");
    CHECK(strstr(last_err, "steps of") == NULL);
    snprintf(out, sizeof out, "%s/sub/model.safetensors", ro);
    train_args(&c, out, 2, 0);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "/sub: cannot create the directory: Read-only file system");
    predict_args(&c, model, img, ro);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "Read-only file system");
    snprintf(out, sizeof out, "%s/masks", ro);
    predict_args(&c, model, img, out);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "/masks: cannot create the directory: Read-only file system");
    cmd_init(&c, "export");
    arg(&c, "--onnx");
    arg(&c, "%s/m.onnx", ro);
    arg(&c, "%s", model);
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "m.onnx");
    CHECK_STR_CONTAINS(last_err, "Read-only file system");
    CHECK_EQ(umount(ro), 0);
}

/* Several processes writing one folder: two trainings with their own --out and a prediction,
 * all at once, all succeed, each log in order, each checkpoint whole.  (Two writers of one
 * model, or of one predict folder, are refused: one_writer_per_model.) */
TEST(two_processes_one_folder) {
    make_reference();
    char dir[300], out[2][512], err[3][512], model[512], img[400];
    tmp_path(dir, sizeof dir, "shared");
    mkdir(dir, 0755);
    tmp_path(model, sizeof model, "ref/model.safetensors");
    snprintf(img, sizeof img, "%s/images", data_dir);
    pid_t pid[3];
    struct cmd c;
    for (int i = 0; i < 2; i++) {
        snprintf(out[i], sizeof out[i], "%s/m%d.safetensors", dir, i);
        snprintf(err[i], sizeof err[i], "%s/err%d.txt", dir, i);
        train_args(&c, out[i], 30, 5);
        pid[i] = spawn(&c, err[i], 0);
    }
    snprintf(err[2], sizeof err[2], "%s/err2.txt", dir);
    predict_args(&c, model, img, dir);
    arg(&c, "--quiet");
    pid[2] = spawn(&c, err[2], 0);
    for (int i = 0; i < 3; i++) {
        int rc = wait_for(pid[i]);
        char *t = read_text(err[i]);
        if (rc != 0) printf("  process %d: exit %d: %s\n", i, rc, t ? t : "");
        CHECK_EQ(rc, 0);
        free(t);
    }
    static char rows[MAX_ROWS][48];
    for (int i = 0; i < 2; i++) {
        char log[600], ck[600];
        snprintf(log, sizeof log, "%s/m%d.log.csv", dir, i);
        int n = read_losses(log, rows);
        CHECK_EQ(n, 30);
        for (int r = 0; r < n; r++) CHECK_EQ(strtol(rows[r], NULL, 10), r + 1);
        snprintf(ck, sizeof ck, "%s/m%d.resume.safetensors", dir, i);
        CHECK_EQ(checkpoint_step(ck), 30);
    }
    for (int i = 0; i < 4; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/img%d.png", dir, i);
        CHECK(access(p, R_OK) == 0);
    }
    CHECK_EQ(count_files(dir, ".tmp."), 0);
    CHECK_EQ(count_files(dir, ".lock"), 0);
}

/* --save-minutes for cluster schedulers (docs/training.md): a job killed without warning (the
 * SIGKILL after a scheduler's grace period) loses at most M minutes of work.  Killed in its
 * first epoch (18 steps) after 6 logged steps, a run with --save-minutes 0.0001 (6 ms) has a
 * resumable checkpoint of a step it logged; with the default (10 minutes) it has none yet. */
TEST(save_minutes_bounds_a_hard_kill) {
    char dir[300], out[512], ck[512], log[512], err[512];
    mkdir(tmp_path(dir, sizeof dir, "save_minutes"), 0755);
    static char rows[MAX_ROWS][48];
    for (int timed = 1; timed >= 0; timed--) {
        snprintf(out, sizeof out, "%s/m%d.safetensors", dir, timed);
        snprintf(ck, sizeof ck, "%s/m%d.resume.safetensors", dir, timed);
        snprintf(log, sizeof log, "%s/m%d.log.csv", dir, timed);
        snprintf(err, sizeof err, "%s/err%d.txt", dir, timed);
        struct cmd c;
        train_args(&c, out, 200, 0);
        if (timed) opt(&c, "--save-minutes", "0.0001");
        pid_t pid = spawn(&c, err, 0);
        double t0 = now();
        while (read_losses(log, rows) < 6 && now() - t0 < 60) sleep_s(0.001);
        kill(pid, SIGKILL);
        CHECK_EQ(wait_for(pid), 128 + SIGKILL);
        int logged = read_losses(log, rows);
        long step = access(ck, F_OK) == 0 ? checkpoint_step(ck) : 0;
        printf("       --save-minutes %s: killed after %d steps; resumable checkpoint at step %ld\n",
               timed ? "0.0001" : "10 (default)", logged, step);
        CHECK(logged < 18); /* still in the first epoch, whose end also writes one */
        if (timed) CHECK(step >= 1 && step <= logged);
        else CHECK_EQ(step, 0);
    }
}

/* dir (write_dataset's) with masks that label two touching cells 7 and 300, as the Cell
 * Tracking Challenge's masks do, instead of its binary ones. */
static bool instance_label_masks(const char *dir) {
    char p[600];
    bool ok = write_dataset(dir, 2, 32);
    for (int k = 0; k < 2 && ok; k++) {
        unet_image m;
        ok = unet_image_alloc(NULL, &m, 32, 32, 1, UNET_DTYPE_U16) == UNET_STATUS_OK;
        if (!ok) break;
        uint16_t *v = m.data;
        for (int y = 8; y < 24; y++)
            for (int x = 4; x < 28; x++) v[y * 32 + x] = x < 16 ? 7 : 300; /* two touching cells */
        snprintf(p, sizeof p, "%s/masks/img%d.png", dir, k);
        unlink(p);
        snprintf(p, sizeof p, "%s/masks/img%d.tif", dir, k);
        ok = unet_image_save(NULL, p, &m) == UNET_STATUS_OK;
        unet_image_free(&m);
    }
    return ok;
}

/* --classes 3 --separate-cells on instance label masks (the Cell Tracking Challenge's: ids of
 * any size) trains the border class; the ids are not class ids.  Without --separate-cells an id
 * of 3 or more is still an error for 3 classes. */
TEST(border_class_from_instance_labels) {
    char dir[300], out[512];
    tmp_path(dir, sizeof dir, "inst3");
    CHECK(instance_label_masks(dir));
    snprintf(out, sizeof out, "%s/m.safetensors", dir);
    struct cmd c;
    train_on(&c, dir, 2);
    arg(&c, "--classes");
    arg(&c, "3");
    CHECK_RUN(run(&c, 0), 1);
    CHECK_STR_CONTAINS(last_err, "is not a class id in 0..2");
    arg(&c, "--separate-cells");
    CHECK_RUN(run(&c, 0), 0);
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_load(NULL, out, &m), UNET_STATUS_OK);
    if (m) CHECK_EQ(unet_model_config(m)->classes, 3);
    unet_model_free(m);
}

/* The default recipe plans from the masks (docs/results.md, "The default recipe"): masks of
 * cell ids train with separated cells and the border-weighted loss; binary masks, an explicit
 * --loss and --recipe seed keep cross entropy + Dice. */
TEST(default_recipe_from_masks) {
    char dir[300], out[512], rj[512];
    tmp_path(dir, sizeof dir, "plan");
    CHECK(instance_label_masks(dir));
    snprintf(out, sizeof out, "%s/m.safetensors", dir);
    snprintf(rj, sizeof rj, "%s/m.run.json", dir);
    struct cmd c;
    train_on(&c, dir, 1);
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "the masks label each cell with its own id and many cells "
                                 "touch: training with --separate-cells --loss wce");
    char *text = read_text(rj);
    CHECK_STR_CONTAINS(text, "\"loss\":\t\"wce\"");
    free(text);
    const char *keep[][2] = {{"--loss", "ce+dice"}, {"--recipe", "seed"}};
    for (int k = 0; k < 2; k++) {
        train_on(&c, dir, 1);
        arg(&c, "--force");
        arg(&c, "%s", keep[k][0]);
        arg(&c, "%s", keep[k][1]);
        CHECK_RUN(run(&c, 0), 0);
        text = read_text(rj);
        CHECK_STR_CONTAINS(text, "\"loss\":\t\"ce+dice\"");
        free(text);
    }
    train_args(&c, out, 1, 0);  /* data_dir's binary masks */
    arg(&c, "--force");
    CHECK_RUN(run(&c, 0), 0);
    CHECK(!strstr(last_err, "its own id"));
    text = read_text(rj);
    CHECK_STR_CONTAINS(text, "\"loss\":\t\"ce+dice\"");
    free(text);
}

/* A time budget plans the run (docs/training.md, "The default recipe"): base 16, batch 8, the
 * tile from the images (96 x 96), no end but the budget, said in a note; the run's record has
 * no step count; a decaying schedule needs the run's length. */
TEST(time_budget_plans_the_run) {
    char dir[300], rj[512];
    tmp_path(dir, sizeof dir, "budget");
    mkdir(dir, 0755);
    snprintf(rj, sizeof rj, "%s/m.run.json", dir);
    struct cmd c;
    cmd_init(&c, "train");
    arg(&c, "--images");
    arg(&c, "%s/images", data_dir);
    arg(&c, "--masks");
    arg(&c, "%s/masks", data_dir);
    arg(&c, "--out");
    arg(&c, "%s/m.safetensors", dir);
    arg(&c, "--val-split");
    arg(&c, "0");
    arg(&c, "--threads");
    arg(&c, "1");
    arg(&c, "--minutes");
    arg(&c, "0.02");
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "the time budget of 0.02 minutes plans the run "
                                 "(docs/training.md): --base 16, --batch 8, until the budget");
    CHECK_STR_CONTAINS(last_err, "(base 16, depth 4,");
    CHECK_STR_CONTAINS(last_err, "of 8 tiles 96x96 -> 96x96");
    CHECK_STR_CONTAINS(last_err, "until the time budget of 0.02 minutes, adam");
    CHECK_STR_CONTAINS(last_err, "unet: the time budget of 0.02 minutes ended the run at step ");
    CHECK(!strstr(last_err, "1099511627776"));
    char *text = read_text(rj);
    CHECK_STR_CONTAINS(text, "\"steps\":\tnull");
    free(text);
    arg(&c, "--schedule");
    arg(&c, "cosine");
    arg(&c, "--force");
    CHECK_RUN(run(&c, 0), 2);
    CHECK_STR_CONTAINS(last_err, "schedule cosine decays over the run's length");
    arg(&c, "--steps");
    arg(&c, "3");
    CHECK_RUN(run(&c, 0), 0);
    CHECK_STR_CONTAINS(last_err, "3 steps of 8 tiles 96x96");
}

int main(void) {
    unet_bin = getenv("UNET_BIN");
    if (!unet_bin || !*unet_bin) {
        printf("test_cli: UNET_BIN is not set (make test sets it to $(BUILD)/unet); skipped\n");
        return harness_finish();
    }
    if (access(unet_bin, X_OK) != 0) {
        printf("test_cli: UNET_BIN=%s is not executable\n", unet_bin);
        harness_failed++;
        return harness_finish();
    }
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/unet_test_cli_%d", (int)getpid());
    mkdir(tmp_dir, 0755);
    tmp_path(data_dir, sizeof data_dir, "data");
    if (!write_dataset(data_dir, 4, 96)) {
        printf("test_cli: cannot write the dataset in %s\n", data_dir);
        harness_failed++;
        return harness_finish();
    }
    RUN(usage_errors_exit_2);
    RUN(train_end_to_end);
    RUN(kill9_then_resume_matches);
    RUN(sigint_exit_130_and_resume);
    RUN(sigterm_exit_143_and_resume);
    RUN(nan_loss_rolls_back_then_stops);
    RUN(nan_pixel_names_the_image);
    RUN(write_failure_keeps_previous_checkpoint);
    RUN(disk_full_keeps_previous_checkpoint);
    RUN(max_pixels_option);
    RUN(damaged_resume_metadata);
    RUN(resume_step_counter_at_the_limit);
    RUN(predict_folder_keeps_going);
    RUN(mask_problems_name_the_file);
    RUN(api_example_matches_predict);
    RUN(outputs_never_overwrite_inputs);
    RUN(train_outputs_never_overwrite_inputs);
    RUN(case_folding_outputs_collide);
    RUN(predict_memory_from_nothing);
    RUN(predict_cache_within_the_budget);
    RUN(fifos_never_block);
    RUN(predict_nonfinite_values);
    RUN(one_writer_per_model);
    RUN(honest_endings);
    RUN(eval_prob_scores);
    RUN(eval_instances_file);
    RUN(option_tables);
    RUN(forced_divergence_is_caught);
    RUN(best_and_last_are_selected);
    RUN(minutes_budget_stops_cleanly);
    RUN(resume_keeps_epoch_sums_and_ema);
    RUN(resume_edges);
    RUN(held_back_set);
    RUN(sighup_exit_129_and_resume);
    RUN(sigpipe_exit_141_and_resume);
    RUN(openmp_waits_passively);
    RUN(channel_options);
    RUN(training_data_faults);
    RUN(full_disk_each_output);
    RUN(full_disk_log_and_report);
    RUN(read_only_outputs);
    RUN(two_processes_one_folder);
    RUN(save_minutes_bounds_a_hard_kill);
    RUN(border_class_from_instance_labels);
    RUN(default_recipe_from_masks);
    RUN(time_budget_plans_the_run);
    remove_tree(tmp_dir);
    return harness_finish();
}
