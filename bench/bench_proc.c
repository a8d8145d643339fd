/* bench_proc.c — the whole `unet` process against the in-process forward it wraps (issue 14,
 * item 1): what loading, decoding, writing and process start cost on top of the kernels.
 *
 *     bench_proc UNET IMAGES THREADS RUNS FOLDER_RUNS [N_FOLDER]
 *
 * UNET is the CLI binary, IMAGES a folder of 512x512 images (data/sample/train/images).  In a
 * temporary folder it writes the seed U-Net (bench_unet's: base 64, depth 4, BatchNorm, seed
 * 1234; 124 MB) and a folder of N_FOLDER (50) links to those images.  Then, after one warm-up
 * round, RUNS rounds each time, one after the other (so machine noise hits them alike):
 *
 *   forward   unet_model_forward of one 1x1x512x512 input in this process (the peer)
 *   load      unet_model_load of the 124 MB model + unet_model_free, in this process
 *   info      the process `unet info MODEL`
 *   predict   the process `unet predict --model MODEL --input IMAGE --output DIR --threads T`
 *
 * and FOLDER_RUNS rounds of `unet predict` over the folder (folder), each after one more
 * in-process forward.  Prints RESULT lines (median, min, max seconds) and the ratios:
 * predict / forward (issue: <= 1.25), folder rate / forward rate = N_FOLDER * forward / folder
 * (issue: >= 0.9).  Run it with OMP_WAIT_POLICY=passive (bench/proc does): a spinning OpenMP
 * pool in this process would take the CPU from the child it waits for.
 */
#include "unet.h"

#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

#define MAX_RUNS 64

static double cpu_of(const struct rusage *ru) {
    return (double)ru->ru_utime.tv_sec + 1e-6 * (double)ru->ru_utime.tv_usec +
           (double)ru->ru_stime.tv_sec + 1e-6 * (double)ru->ru_stime.tv_usec;
}

/* CPU seconds (user + system, all threads) this process has used. */
static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return cpu_of(&ru);
}

/* Runs argv with stdout and stderr to /dev/null; returns its wall time (and its CPU time in
 * *cpu), or -1 when it failed. */
static double spawn_time(char *const argv[], double *cpu) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    double t0 = bench_now();
    pid_t  pid;
    int    status = 0;
    int    e = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    struct rusage ru;
    if (e != 0 || wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_proc: %s %s failed (status %d)\n", argv[0], argv[1], status);
        return -1.0;
    }
    double t = bench_now() - t0;
    *cpu = cpu_of(&ru);
    return t;
}

/* Wall and CPU seconds of repeated runs of one thing. */
struct series {
    const char *name;
    double      t[2][2 * MAX_RUNS]; /* [0] wall, [1] CPU */
    int         n;
};

static void add(struct series *s, double wall, double cpu) {
    s->t[0][s->n] = wall;
    s->t[1][s->n++] = cpu;
}

static double median_of(struct series *s, int cpu) {
    return bench_median(s->t[cpu], s->n);
}

/* Prints the RESULT line of s's wall (cpu 0) or CPU (cpu 1) times; returns the median. */
static double report(struct series *s, int cpu) {
    double med = median_of(s, cpu);
    printf("RESULT impl=unet mode=%s clock=%s runs=%d median_s=%.4f min_s=%.4f max_s=%.4f\n",
           s->name, cpu ? "cpu" : "wall", s->n, med, s->t[cpu][0], s->t[cpu][s->n - 1]);
    return med;
}

/* One in-process forward, timed into s (when not NULL); 0 or 1 on failure. */
static int forward_once(unet_ctx *ctx, unet_model *m, const float *x, int size, float *logits,
                        struct series *s) {
    double t0 = bench_now(), c0 = self_cpu();
    if (unet_model_forward(ctx, m, x, 1, size, size, logits) != UNET_STATUS_OK) {
        fprintf(stderr, "bench_proc: %s\n", unet_ctx_errmsg(ctx));
        return 1;
    }
    if (s) add(s, bench_now() - t0, self_cpu() - c0);
    return 0;
}

/* The first file of dir whose name ends in .png (sorted), into out. */
static int first_png(const char *dir, char *out, size_t n, char names[][256], int *count) {
    struct dirent **list = NULL;
    int k = scandir(dir, &list, NULL, alphasort);
    *count = 0;
    for (int i = 0; i < k; i++) {
        size_t len = strlen(list[i]->d_name);
        if (len > 4 && strcmp(list[i]->d_name + len - 4, ".png") == 0 && *count < 64)
            snprintf(names[(*count)++], 256, "%s", list[i]->d_name);
        free(list[i]);
    }
    free(list);
    if (*count == 0) return -1;
    int len = snprintf(out, n, "%s/%s", dir, names[0]);
    return len > 0 && (size_t)len < n ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: bench_proc UNET IMAGES THREADS RUNS FOLDER_RUNS [N_FOLDER]\n");
        return 2;
    }
    char *unet = argv[1];
    const char *images = argv[2];
    char *threads = argv[3];
    const int runs = atoi(argv[4]), folder_runs = atoi(argv[5]);
    const int n_folder = argc > 6 ? atoi(argv[6]) : 50;
    if (runs < 1 || runs > MAX_RUNS || folder_runs < 0 || folder_runs > MAX_RUNS || n_folder < 1 ||
        atoi(threads) < 1)
        return 2;

    char dir[] = "/tmp/bench_proc.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char model_path[512], image[512], folder[512], out1[512], outn[512], link[1024], target[1024];
    char names[64][256];
    int  n_names = 0;
    if (first_png(images, image, sizeof image, names, &n_names) != 0) {
        fprintf(stderr, "bench_proc: no .png in %s\n", images);
        return 1;
    }
    snprintf(model_path, sizeof model_path, "%s/seed.safetensors", dir);
    snprintf(folder, sizeof folder, "%s/in", dir);
    snprintf(out1, sizeof out1, "%s/out1", dir);
    snprintf(outn, sizeof outn, "%s/outn", dir);
    mkdir(folder, 0700);
    char *abs_images = realpath(images, NULL);
    for (int i = 0; i < n_folder && abs_images; i++) {
        snprintf(link, sizeof link, "%s/img%03d.png", folder, i);
        snprintf(target, sizeof target, "%s/%s", abs_images, names[i % n_names]);
        if (symlink(target, link) != 0) return 1;
    }
    free(abs_images);

    unet_ctx   *ctx = unet_ctx_create();
    unet_model *m = NULL;
    unet_config cfg = unet_config_default(UNET_ARCH_UNET);
    if (!ctx || unet_ctx_set_threads(ctx, atoi(threads)) != UNET_STATUS_OK ||
        unet_model_create(ctx, &cfg, 1234, &m) != UNET_STATUS_OK ||
        unet_model_save(ctx, m, model_path) != UNET_STATUS_OK) {
        fprintf(stderr, "bench_proc: %s\n", ctx ? unet_ctx_errmsg(ctx) : "out of memory");
        return 1;
    }
    unet_model_free(m);
    m = NULL;
    struct stat sb;
    stat(model_path, &sb);
    printf("# model %.1f MB, image %s, folder of %d links, threads %s\n", sb.st_size / 1e6, image,
           n_folder, threads);

    const int size = 512;
    float *x = malloc((size_t)size * size * sizeof *x);
    float *logits = malloc((size_t)size * size * (size_t)cfg.classes * sizeof *logits);
    if (!x || !logits) return 1;
    for (size_t i = 0; i < (size_t)size * size; i++) x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;

    char *info_argv[] = {unet, "info", model_path, NULL};
    char *pred_argv[] = {unet,   "predict", "--model", model_path, "--input", image, "--output",
                         out1,   "--threads", threads, "--quiet",  NULL};
    char *fold_argv[] = {unet,   "predict", "--model", model_path, "--input", folder, "--output",
                         outn,   "--threads", threads, "--quiet",  NULL};

    struct series fwd = {.name = "forward"}, load = {.name = "load"}, info = {.name = "info"},
                  pred = {.name = "predict"}, fold = {.name = "folder"};
    for (int r = -1; r < runs; r++) {
        double t0 = bench_now(), c0 = self_cpu();
        unet_model *lm = NULL;
        if (unet_model_load(ctx, model_path, &lm) != UNET_STATUS_OK) {
            fprintf(stderr, "bench_proc: %s\n", unet_ctx_errmsg(ctx));
            return 1;
        }
        double tl = bench_now() - t0, cl = self_cpu() - c0;
        if (!m) m = lm; /* the warm-up's model stays for the forwards */
        else unet_model_free(lm);
        if (forward_once(ctx, m, x, size, logits, r >= 0 ? &fwd : NULL) != 0) return 1;
        double ci, cp, ti = spawn_time(info_argv, &ci), tp = spawn_time(pred_argv, &cp);
        if (ti < 0 || tp < 0) return 1;
        if (r >= 0) {
            add(&load, tl, cl);
            add(&info, ti, ci);
            add(&pred, tp, cp);
        }
    }
    for (int r = 0; r < folder_runs; r++) {
        double cf, tf;
        if (forward_once(ctx, m, x, size, logits, &fwd) != 0 || (tf = spawn_time(fold_argv, &cf)) < 0)
            return 1;
        add(&fold, tf, cf);
    }

    /* Wall and CPU seconds: on a machine shared with other jobs the wall-clock ratios move
     * with the load; the CPU ones (user + system, all threads) say what the process adds. */
    double fw = report(&fwd, 0), fc = report(&fwd, 1);
    report(&load, 0), report(&load, 1), report(&info, 0), report(&info, 1);
    double pw = report(&pred, 0), pc = report(&pred, 1);
    printf("RATIO predict/forward wall=%.3f cpu=%.3f (issue: <= 1.25)\n", pw / fw, pc / fc);
    printf("RATIO load_s=%.4f (issue: < 0.1)\n", median_of(&load, 0));
    if (folder_runs > 0) {
        double dw = report(&fold, 0), dc = report(&fold, 1);
        printf("RATIO folder_rate/forward_rate wall=%.3f cpu=%.3f (%d images in %.2f s; issue: "
               ">= 0.9)\n",
               n_folder * fw / dw, n_folder * fc / dc, n_folder, dw);
    }
    unet_model_free(m);
    unet_ctx_free(ctx);
    free(x);
    free(logits);
    /* The temporary folder: its links, the outputs, the model. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
