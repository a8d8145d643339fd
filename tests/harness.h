/* harness.h — the test harness: checks that print file:line and both values, tensor comparison
 * with max error and the first mismatches, finite-difference gradient checks and golden-file
 * access.  Each tests/test_<module>.c is one program:
 *
 *     TEST(conv_forward) { CHECK_EQ(1 + 1, 2); }
 *     int main(void) { RUN(conv_forward); return harness_finish(); }
 *
 * harness_finish prints "N passed, N failed" (tests, not checks) and returns the exit code;
 * tests/run.sh adds the counts of all programs.
 */
#ifndef UNET_TEST_HARNESS_H
#define UNET_TEST_HARNESS_H

#include "cpu.h"
#include "io/checkpoint.h"
#include "io/file.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HARNESS_FN static __attribute__((unused))

static int harness_passed, harness_failed, harness_cur_failed;
static const char *harness_cur_name = "";

#define TEST(name) static void name(void)

HARNESS_FN void harness_run(const char *name, void (*fn)(void)) {
    harness_cur_failed = 0;
    harness_cur_name = name;
    fn();
    if (harness_cur_failed) {
        harness_failed++;
        printf("FAIL %s\n", name);
    } else {
        harness_passed++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}
#define RUN(name) harness_run(#name, name)

/* The instruction-set levels this CPU has, whatever the cap (cpu.h): tests of the dispatched
 * kernels run once per level under unet__cpu_limit(level).  Returns how many (1 to 4). */
HARNESS_FN int harness_cpu_levels(enum unet__cpu_level levels[UNET__CPU_LEVELS]) {
    enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_TOP);
    int n = 0;
    for (int l = 0; l < UNET__CPU_LEVELS; l++)
        if (unet__cpu_has((enum unet__cpu_level)l)) levels[n++] = (enum unet__cpu_level)l;
    unet__cpu_limit(cap);
    return n;
}
/* The levels with a float32 row of their own: harness_cpu_levels up to AVX-512F (the
 * AVX512_BF16 level runs AVX-512F's float32 row; its bf16 row is tested on its own). */
HARNESS_FN int harness_f32_levels(enum unet__cpu_level levels[UNET__CPU_LEVELS]) {
    int n = harness_cpu_levels(levels);
    while (n > 0 && levels[n - 1] > UNET__CPU_AVX512) n--;
    return n;
}

HARNESS_FN int harness_finish(void) {
    printf("%d passed, %d failed\n", harness_passed, harness_failed);
    return harness_failed ? 1 : 0;
}

#define HARNESS_FAIL_AT(file, line, ...)                                                       \
    do {                                                                                       \
        printf("  %s:%d: ", file, line);                                                       \
        printf(__VA_ARGS__);                                                                   \
        printf("\n");                                                                          \
        harness_cur_failed++;                                                                  \
    } while (0)

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) HARNESS_FAIL_AT(__FILE__, __LINE__, "CHECK(%s) failed", #cond);           \
    } while (0)

#define CHECK_EQ(got, want)                                                                    \
    do {                                                                                       \
        long long g_ = (long long)(got), w_ = (long long)(want);                               \
        if (g_ != w_)                                                                          \
            HARNESS_FAIL_AT(__FILE__, __LINE__, "CHECK_EQ(%s, %s): got %lld, want %lld", #got, \
                            #want, g_, w_);                                                    \
    } while (0)

#define CHECK_STATUS(got, want)                                                                \
    do {                                                                                       \
        unet_status g_ = (got), w_ = (want);                                                   \
        if (g_ != w_)                                                                          \
            HARNESS_FAIL_AT(__FILE__, __LINE__, "%s: got status '%s', want '%s'", #got,        \
                            unet_status_str(g_), unet_status_str(w_));                         \
    } while (0)

#define CHECK_CLOSE(got, want, atol, rtol)                                                     \
    do {                                                                                       \
        double g_ = (double)(got), w_ = (double)(want);                                        \
        if (!(fabs(g_ - w_) <= (atol) + (rtol)*fabs(w_)))                                      \
            HARNESS_FAIL_AT(__FILE__, __LINE__, "CHECK_CLOSE(%s, %s): got %.9g, want %.9g",    \
                            #got, #want, g_, w_);                                              \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                                        \
    do {                                                                                       \
        const char *h_ = (hay), *n_ = (needle);                                                \
        if (!h_ || !strstr(h_, n_))                                                            \
            HARNESS_FAIL_AT(__FILE__, __LINE__, "'%s' does not contain '%s'", h_ ? h_ : "(null)", \
                            n_);                                                               \
    } while (0)

/* Compares n floats with |got - ref| <= atol + rtol |ref|; prints the max abs error (always)
 * and the first 5 mismatches.  Returns the number of mismatches. */
HARNESS_FN size_t check_tensor_at(const char *file, int line, const char *what, const float *got,
                              const float *ref, size_t n, double atol, double rtol) {
    size_t bad = 0;
    double max_abs = 0.0, max_rel = 0.0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i];
        /* NaN matches NaN and an infinity matches itself; otherwise the usual bound. */
        bool same = (isnan(g) && isnan(r)) || g == r;
        double e = same ? 0.0 : fabs(g - r);
        if (isnan(e)) e = INFINITY;
        if (e > max_abs) max_abs = e;
        if (isfinite(r) && fabs(r) > 1e-6 && e / fabs(r) > max_rel) max_rel = e / fabs(r);
        if (!same && !(e <= atol + rtol * fabs(r))) {
            if (bad < 5)
                printf("  %s:%d: %s[%zu]: got %.9g, want %.9g (diff %.3g)\n", file, line, what, i,
                       g, r, e);
            bad++;
        }
    }
    printf("       %-40s n=%-8zu max abs err %.3g, max rel err %.3g%s\n", what, n, max_abs,
           max_rel, bad ? "  MISMATCH" : "");
    if (bad) {
        printf("  %s:%d: %s: %zu of %zu elements outside atol %.g + rtol %.g\n", file, line, what,
               bad, n, atol, rtol);
        harness_cur_failed++;
    }
    return bad;
}
#define CHECK_TENSOR(what, got, ref, n, atol, rtol)                                            \
    check_tensor_at(__FILE__, __LINE__, what, got, ref, n, atol, rtol)

/* ---- random data ---- */
HARNESS_FN void fill_uniform(struct unet__rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * unet__rng_uniform(r);
}

HARNESS_FN float *test_alloc(size_t n) {
    /* Zeroed and 64-byte aligned, as the model's arena aligns its values: the kernels' aligned
     * paths (the streaming stores of winograd.c) run in the tests as they run in a model. */
    const size_t bytes = ((n ? n : 1) * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    if (!p) {
        fprintf(stderr, "test: out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- finite-difference gradient check ----
 * loss(ud) computes a scalar in double from the current contents of x (the op's forward
 * followed by sum(y * r) with a fixed random r).  grad holds the analytic dloss/dx.  Checks up to
 * max_points elements of x (all when n <= max_points, else an even spread) by central
 * differences with steps h and h/2, combined by Richardson extrapolation (4 c(h/2) - c(h)) / 3,
 * which removes the h^2 curvature term.  Where the two central differences disagree by more
 * than curvature can explain, a kink lies inside the step (ReLU at 0, a max-pool tie): the point
 * is skipped and counted.  Prints the max error; fails when nothing could be checked. */
typedef double (*gradcheck_loss_fn)(void *ud);

HARNESS_FN double central_difference(float *x, size_t i, float h, gradcheck_loss_fn loss, void *ud) {
    float orig = x[i];
    x[i] = orig + h;
    double fp = loss(ud);
    double hp = (double)x[i] - orig;
    x[i] = orig - h;
    double fm = loss(ud);
    double hm = (double)orig - x[i];
    x[i] = orig;
    return (fp - fm) / (hp + hm);
}

HARNESS_FN void gradcheck_at(const char *file, int line, const char *what, float *x,
                             const float *grad, size_t n, gradcheck_loss_fn loss, void *ud,
                             float h, double atol, double rtol, size_t max_points) {
    size_t stride = n <= max_points ? 1 : n / max_points;
    size_t checked = 0, skipped = 0, bad = 0;
    double max_err = 0.0;
    for (size_t i = 0; i < n; i += stride) {
        double c1 = central_difference(x, i, h, loss, ud);
        double c2 = central_difference(x, i, h / 2, loss, ud);
        if (fabs(c1 - c2) > 0.05 * (fabs(c1) + fabs(c2)) + atol) {
            skipped++;
            continue;
        }
        double num = (4.0 * c2 - c1) / 3.0;
        double err = fabs(num - grad[i]);
        if (err > max_err) max_err = err;
        checked++;
        if (!(err <= atol + rtol * fabs(num))) {
            if (bad < 5)
                printf("  %s:%d: %s[%zu]: analytic %.7g, numeric %.7g\n", file, line, what, i,
                       grad[i], num);
            bad++;
        }
    }
    printf("       gradcheck %-30s %zu points, %zu kinks skipped, max abs err %.3g%s\n", what,
           checked, skipped, max_err, bad ? "  MISMATCH" : "");
    if (bad || checked == 0) {
        if (checked == 0) printf("  %s:%d: %s: no point could be checked\n", file, line, what);
        harness_cur_failed++;
    }
}
#define GRADCHECK(what, x, grad, n, loss, ud, h, atol, rtol)                                   \
    gradcheck_at(__FILE__, __LINE__, what, x, grad, n, loss, ud, h, atol, rtol, 400)

/* sum(y * r) in double: the scalar the gradient checks differentiate. */
HARNESS_FN double dot_double(const float *y, const float *r, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

/* ---- golden files (tests/golden/<name>.safetensors, written by tools/make_golden.py) ---- */
#ifndef GOLDEN_DIR
#define GOLDEN_DIR "tests/golden"
#endif

HARNESS_FN struct unet__safetensors *golden_open(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", GOLDEN_DIR, name);
    unet_ctx *ctx = unet_ctx_create();
    struct unet__safetensors *st = NULL;
    unet_status s = unet__st_open(ctx, path, &st);
    if (s != UNET_STATUS_OK) {
        printf("  cannot open golden file %s: %s\n", path, unet_ctx_errmsg(ctx));
        harness_cur_failed++;
        st = NULL;
    }
    unet_ctx_free(ctx);
    return st;
}

/* Returns a malloc'd float copy of tensor `key` (any float or integer dtype converted),
 * with its element count in *n (may be NULL); NULL and a failure when missing. */
HARNESS_FN float *golden_get(const struct unet__safetensors *st, const char *key, size_t *n) {
    const struct unet__st_tensor *t = unet__st_find(st, key);
    if (!t) {
        printf("  golden tensor '%s' missing\n", key);
        harness_cur_failed++;
        return NULL;
    }
    size_t count = unet__st_numel(t);
    float *out = test_alloc(count);
    unet__st_to_f32(st, t, out);
    if (n) *n = count;
    return out;
}

/* Float64 values (hyperparameters stored in double); up to max values. */
HARNESS_FN int golden_doubles(const struct unet__safetensors *st, const char *key, double *out, int max) {
    const struct unet__st_tensor *t = unet__st_find(st, key);
    if (!t) {
        printf("  golden tensor '%s' missing\n", key);
        harness_cur_failed++;
        return 0;
    }
    size_t count = unet__st_numel(t);
    double *tmp = malloc(sizeof(double) * (count ? count : 1));
    unet__st_to_f64(st, t, tmp);
    int k = 0;
    for (size_t i = 0; i < count && k < max; i++) out[k++] = tmp[i];
    free(tmp);
    return k;
}

/* Integer tensor values (a case's configuration, e.g. "case0.cfg"); up to max values. */
HARNESS_FN int golden_ints(const struct unet__safetensors *st, const char *key, long long *out, int max) {
    const struct unet__st_tensor *t = unet__st_find(st, key);
    if (!t) {
        printf("  golden tensor '%s' missing\n", key);
        harness_cur_failed++;
        return 0;
    }
    size_t count = unet__st_numel(t);
    float *tmp = test_alloc(count);
    unet__st_to_f32(st, t, tmp);
    int k = 0;
    for (size_t i = 0; i < count && k < max; i++) out[k++] = (long long)llround(tmp[i]);
    free(tmp);
    return k;
}

/* ---- temporary files: each test program makes its own tmp_dir and removes it at the end ---- */

static __attribute__((unused)) char tmp_dir[256];

HARNESS_FN const char *tmp_path(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmp_dir, name);
    return buf;
}

HARNESS_FN bool write_all(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = size == 0 || fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

/* The whole file (up to 1 GiB), or NULL; free it. */
HARNESS_FN unsigned char *read_all(const char *path, size_t *size) {
    unsigned char *buf = NULL;
    *size = 0;
    return unet__read_file(NULL, path, (size_t)1 << 30, &buf, size) == UNET_STATUS_OK ? buf : NULL;
}

/* Removes dir and everything under it (read-only subdirectories included). */
HARNESS_FN void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[768];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            chmod(p, 0755);
            remove_tree(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

/* Runs fn(arg) in a child process and returns the child's peak resident memory in KiB (its
 * ru_maxrss, not inflated by what this process touched before), or -1; *code gets fn's
 * return value (or -1 when the child did not exit normally). */
HARNESS_FN long child_peak_kb(int (*fn)(void *), void *arg, int *code) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) _exit(fn(arg) & 0xff);
    int st = 0;
    struct rusage ru;
    *code = -1;
    if (pid < 0 || wait4(pid, &st, 0, &ru) != pid) return -1;
    if (WIFEXITED(st)) *code = WEXITSTATUS(st);
    return ru.ru_maxrss;
}

#endif /* UNET_TEST_HARNESS_H */
