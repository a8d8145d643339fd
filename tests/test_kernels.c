/* test_kernels.c — the CPU-feature module and the kernel table (src/cpu.h, src/ops/kernels.h):
 * capping the instruction-set level, by unet__cpu_limit and by the UNET_CPU environment
 * variable, selects that level's row of the table; every row's GEMM micro-kernel equals the
 * naive product (the Winograd passes and the direct convolution of each row are checked in
 * test_winograd.c and test_conv.c). */
#include "harness.h"
#include "ops/kernels.h"

/* `test_kernels --pick`: prints the name of the F32 row this process picks (for the UNET_CPU
 * test below, which runs this program again with the variable set). */
static int print_pick(void) {
    printf("%s\n", unet__kernels_pick(UNET__PRECISION_F32)->name);
    return 0;
}

TEST(cpu_cap_selects_the_row) {
    enum unet__cpu_level levels[UNET__CPU_LEVELS];
    const int            n = harness_cpu_levels(levels);
    CHECK(n >= 1 && levels[0] == UNET__CPU_PORTABLE);
    const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_AVX512);
    for (int i = 0; i < n; i++) {
        unet__cpu_limit(levels[i]);
        CHECK_EQ(unet__cpu_best(), levels[i]);
        const struct unet__kernels *k = unet__kernels_pick(UNET__PRECISION_F32);
        CHECK(k != NULL);
        if (!k) continue;
        CHECK_EQ(k->level, levels[i]);
        CHECK_EQ(k->precision, UNET__PRECISION_F32);
        CHECK(k->winograd && k->micro_gemm && k->direct_rows);
        printf("     cap %s: %s\n", unet__cpu_level_name(levels[i]), k->name);
    }
    unet__cpu_limit(cap);
    enum unet__cpu_level l;
    for (int i = 0; i < UNET__CPU_LEVELS; i++) {
        CHECK(unet__cpu_level_parse(unet__cpu_level_name((enum unet__cpu_level)i), &l));
        CHECK_EQ(l, i);
    }
    CHECK(!unet__cpu_level_parse("avx1024", &l));
    CHECK(!unet__cpu_level_parse(NULL, &l));
}

/* UNET_CPU=<level> in the environment caps a fresh process at that level. */
TEST(unet_cpu_environment_variable) {
    enum unet__cpu_level levels[UNET__CPU_LEVELS];
    const int            n = harness_cpu_levels(levels);
    char                 self[512];
    ssize_t              len = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(len > 0);
    if (len <= 0) return;
    self[len] = '\0';
    for (int i = 0; i < n; i++) {
        char cmd[700], got[64] = "";
        snprintf(cmd, sizeof cmd, "UNET_CPU=%s '%s' --pick", unet__cpu_level_name(levels[i]),
                 self);
        FILE *p = popen(cmd, "r");
        CHECK(p != NULL);
        if (!p) continue;
        if (!fgets(got, sizeof got, p)) got[0] = '\0';
        CHECK_EQ(pclose(p), 0);
        got[strcspn(got, "\n")] = '\0';
        char want[64];
        snprintf(want, sizeof want, "%s-f32", unet__cpu_level_name(levels[i]));
        printf("     UNET_CPU=%s: %s\n", unet__cpu_level_name(levels[i]), got);
        CHECK(strcmp(got, want) == 0);
    }
}

/* C (8 x width) = (or += when acc) A^T B over K, for every row this CPU runs. */
TEST(micro_gemm_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 31);
    int                         rows;
    const struct unet__kernels *table = unet__kernels_table(&rows);
    const enum unet__cpu_level  cap = unet__cpu_limit(UNET__CPU_AVX512);
    enum { MR = UNET__MICRO_MR, NR = UNET__MICRO_NR, LDC = NR + 5 };
    for (int r = 0; r < rows; r++) {
        if (!unet__cpu_has(table[r].level)) continue;
        for (int width = 16; width <= NR; width += 16)
            for (int K = 1; K <= 37; K += 12)
                for (int acc = 0; acc < 2; acc++) {
                    float A[37 * MR], B[37 * NR], C[MR * LDC];
                    double want[MR * LDC];
                    fill_uniform(&rng, A, (size_t)K * MR, -1.0f, 1.0f);
                    fill_uniform(&rng, B, (size_t)K * width, -1.0f, 1.0f);
                    fill_uniform(&rng, C, MR * LDC, -1.0f, 1.0f);
                    for (int i = 0; i < MR; i++)
                        for (int j = 0; j < LDC; j++) {
                            double s = acc || j >= width ? C[i * LDC + j] : 0.0;
                            for (int k = 0; k < K && j < width; k++)
                                s += (double)A[k * MR + i] * B[k * width + j];
                            want[i * LDC + j] = s;
                        }
                    table[r].micro_gemm(A, B, K, width, C, LDC, acc);
                    double err = 0.0;
                    for (int i = 0; i < MR * LDC; i++)
                        err = fmax(err, fabs(C[i] - want[i]));
                    /* K float32 products summed in order: a few ulps of values up to K. */
                    if (err > 1e-5 * (K + 1)) {
                        printf("     %s width %d K %d acc %d: max error %.3g\n", table[r].name,
                               width, K, acc, err);
                        CHECK(err <= 1e-5 * (K + 1));
                    }
                }
        printf("     %s: micro-kernel matches\n", table[r].name);
    }
    unet__cpu_limit(cap);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--pick") == 0) return print_pick();
    RUN(cpu_cap_selects_the_row);
    RUN(unet_cpu_environment_variable);
    RUN(micro_gemm_vs_ref);
    return harness_finish();
}
