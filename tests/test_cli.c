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

static void arg(struct cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(struct cmd *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->pool[c->n], sizeof c->pool[0], fmt, ap);
    va_end(ap);
    c->v[c->n] = c->pool[c->n];
    c->n++;
    c->v[c->n] = NULL;
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
    static const char *cases[][6] = {
        {NULL},
        {"frobnicate", NULL},
        {"train", NULL},
        {"train", "--bogus", NULL},
        {"train", "--images", "a", "--masks", "b", NULL},
        {"train", "--steps", "abc", NULL},
        {"predict", "--model", NULL},
        {"predict", "--model", "m", "--input", "i", NULL},
        {"eval", "--classes", "1", NULL},
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
    CHECK_STR_CONTAINS(last_err, "img0.png: predicting this 96x96 image with 1 channels needs "
                                 "about");
    CHECK_STR_CONTAINS(last_err, "over the budget of 64 KiB (--max-memory");
    snprintf(c.pool[c.n - 1], sizeof c.pool[0], "1x");
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

/* unet eval --prob: the ISBI 2012 scores of NAME_prob.tif beside those of the mask, thinned and
 * not (the 1 x 7 row of test_metrics' vscores_hand: thinned, every score 1; unthinned V_rand
 * 7/8; below the gap's 0.2f everything is one cell, and 0.2f = 0.20000000298 > 0.2 since Fiji
 * compares the float pixel as a double, so the best threshold is the first that separates,
 * 0.30000000000000004, printed 0.3), the CTC's pooled SEG, and a missing NAME_prob.tif failing
 * its image.  Also predict's --instance-method takes only its two names. */
TEST(eval_prob_scores) {
    char pd[300], td[300], p[600];
    tmp_path(pd, sizeof pd, "evpred");
    tmp_path(td, sizeof td, "evtruth");
    mkdir(pd, 0755);
    mkdir(td, 0755);
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
    struct cmd c;
    for (int thin = 1; thin >= 0; thin--) {
        cmd_init(&c, "eval");
        arg(&c, "--pred");
        arg(&c, "%s", pd);
        arg(&c, "--truth");
        arg(&c, "%s", td);
        arg(&c, "--prob");
        arg(&c, "--json");
        if (!thin) arg(&c, "--no-thin");
        CHECK_RUN(run(&c, 0), 0);
        CHECK_STR_CONTAINS(last_err, thin ? "\"v_rand\": 1," : "\"v_rand\": 0.875,");
        CHECK_STR_CONTAINS(last_err, thin ? "\"v_rand_at_05\": 1," : "\"v_rand_at_05\": 0.875,");
        CHECK_STR_CONTAINS(last_err, "\"best_v_rand_threshold\": 0.3,");
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
    RUN(fifos_never_block);
    RUN(predict_nonfinite_values);
    RUN(one_writer_per_model);
    RUN(honest_endings);
    RUN(eval_prob_scores);
    RUN(forced_divergence_is_caught);
    RUN(best_and_last_are_selected);
    RUN(minutes_budget_stops_cleanly);
    RUN(resume_keeps_epoch_sums_and_ema);
    RUN(resume_edges);
    RUN(held_back_set);
    RUN(sighup_exit_129_and_resume);
    RUN(sigpipe_exit_141_and_resume);
    RUN(openmp_waits_passively);
    remove_tree(tmp_dir);
    return harness_finish();
}
