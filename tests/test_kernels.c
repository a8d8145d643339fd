/* test_kernels.c — the CPU-feature module and the kernel table (src/cpu.h, src/ops/kernels.h):
 * capping the instruction-set level, by unet__cpu_limit and by the UNET_CPU environment
 * variable, selects that level's row of the table, and a bf16 request below AVX512_BF16 gets
 * the float32 row; every row's GEMM micro-kernel equals the naive product on its words (bf16
 * pairs: the products of the rounded values, summed in float32); bf16 rounding is round to
 * nearest even (the Winograd passes and the direct convolution of each row are checked in
 * test_winograd.c and test_conv.c). */
#include "harness.h"
#include "ops/kernels.h"

/* `test_kernels --pick`: prints the names of the rows this process runs for float32 and for
 * bf16 (for the UNET_CPU test below, which runs this program again with the variable set). */
static int print_pick(void) {
    printf("%s %s\n", unet__kernels_for(UNET__PRECISION_F32)->name,
           unet__kernels_for(UNET__PRECISION_BF16)->name);
    return 0;
}

/* The float32 level a cap leaves: the cap itself, AVX-512F for the bf16 level. */
static enum unet__cpu_level f32_level(enum unet__cpu_level cap) {
    return cap > UNET__CPU_AVX512 ? UNET__CPU_AVX512 : cap;
}

TEST(cpu_cap_selects_the_row) {
    enum unet__cpu_level levels[UNET__CPU_LEVELS];
    const int            n = harness_cpu_levels(levels);
    CHECK(n >= 1 && levels[0] == UNET__CPU_PORTABLE);
    const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_TOP);
    for (int i = 0; i < n; i++) {
        unet__cpu_limit(levels[i]);
        CHECK_EQ(unet__cpu_best(), levels[i]);
        const struct unet__kernels *k = unet__kernels_pick(UNET__PRECISION_F32);
        CHECK(k != NULL);
        if (!k) continue;
        CHECK_EQ(k->level, f32_level(levels[i]));
        CHECK_EQ(k->precision, UNET__PRECISION_F32);
        CHECK_EQ(k->pack, 1);
        CHECK(k->winograd && k->micro_gemm && k->direct_rows);
        /* bf16: its own row at the AVX512_BF16 level, else none, and float32's runs instead. */
        const struct unet__kernels *b = unet__kernels_pick(UNET__PRECISION_BF16);
        const bool has_bf16 = levels[i] >= UNET__CPU_AVX512_BF16;
        CHECK_EQ(b != NULL, has_bf16);
        CHECK(unet__kernels_for(UNET__PRECISION_BF16) == (has_bf16 ? b : k));
        CHECK_EQ(unet_precision_native(UNET_PRECISION_BF16), has_bf16);
        if (b) CHECK(b->precision == UNET__PRECISION_BF16 && b->pack == 2 && b->winograd);
        printf("     cap %s: %s, bf16 runs %s\n", unet__cpu_level_name(levels[i]), k->name,
               unet__kernels_for(UNET__PRECISION_BF16)->name);
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
        const char *f32 = unet__cpu_level_name(f32_level(levels[i]));
        if (levels[i] >= UNET__CPU_AVX512_BF16)
            snprintf(want, sizeof want, "%s-f32 %s-bf16", f32, unet__cpu_level_name(levels[i]));
        else
            snprintf(want, sizeof want, "%s-f32 %s-f32", f32, f32);
        printf("     UNET_CPU=%s: %s\n", unet__cpu_level_name(levels[i]), got);
        CHECK(strcmp(got, want) == 0);
    }
}

/* C (8 x width) = (or += when acc) A^T B over K values, for every row this CPU runs, on its
 * words: K values in (K + pack - 1) / pack words, the last one zero-padded.  A bf16 row's
 * operands are the values rounded to bf16 (unet__bf16_bits); their products are exact in
 * float32 (8 + 8 significant bits), so the reference is the naive product of the rounded values
 * and the tolerance the float32 one: a few ulps of sums of K terms of |value| <= 1. */
TEST(micro_gemm_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 31);
    int                         rows;
    const struct unet__kernels *table = unet__kernels_table(&rows);
    const enum unet__cpu_level  cap = unet__cpu_limit(UNET__CPU_TOP);
    enum { MR = UNET__MICRO_MR, NR = UNET__MICRO_NR, LDC = NR + 5 };
    for (int r = 0; r < rows; r++) {
        if (!unet__cpu_has(table[r].level)) continue;
        const int pack = table[r].pack;
        double worst = 0.0;
        for (int width = 16; width <= NR; width += 16)
            for (int K = 1; K <= 37; K += 12)
                for (int acc = 0; acc < 2; acc++) {
                    float A[37 * MR], B[37 * NR], C[MR * LDC];
                    uint32_t Aw[37 * MR], Bw[37 * NR];
                    double want[MR * LDC];
                    fill_uniform(&rng, A, (size_t)K * MR, -1.0f, 1.0f);
                    fill_uniform(&rng, B, (size_t)K * width, -1.0f, 1.0f);
                    fill_uniform(&rng, C, MR * LDC, -1.0f, 1.0f);
                    const int kw = (K + pack - 1) / pack;
                    if (pack == 2) {
                        for (int i = 0; i < K * MR; i++)
                            A[i] = unet__bf16_float(unet__bf16_bits(A[i]));
                        for (int i = 0; i < K * width; i++)
                            B[i] = unet__bf16_float(unet__bf16_bits(B[i]));
                        for (int i = 0; i < kw; i++) {
                            for (int c = 0; c < MR; c++)
                                Aw[i * MR + c] = unet__bf16_pair(
                                    A[2 * i * MR + c], 2 * i + 1 < K ? A[(2 * i + 1) * MR + c] : 0);
                            for (int c = 0; c < width; c++)
                                Bw[i * width + c] = unet__bf16_pair(
                                    B[2 * i * width + c],
                                    2 * i + 1 < K ? B[(2 * i + 1) * width + c] : 0);
                        }
                    }
                    for (int i = 0; i < MR; i++)
                        for (int j = 0; j < LDC; j++) {
                            double s = acc || j >= width ? C[i * LDC + j] : 0.0;
                            for (int k = 0; k < K && j < width; k++)
                                s += (double)A[k * MR + i] * B[k * width + j];
                            want[i * LDC + j] = s;
                        }
                    if (pack == 2) table[r].micro_gemm(Aw, Bw, kw, width, C, LDC, acc);
                    else table[r].micro_gemm(A, B, K, width, C, LDC, acc);
                    double err = 0.0;
                    for (int i = 0; i < MR * LDC; i++)
                        err = fmax(err, fabs(C[i] - want[i]));
                    worst = fmax(worst, err / (K + 1));
                    /* K float32 products summed in order: a few ulps of values up to K. */
                    if (err > 1e-5 * (K + 1)) {
                        printf("     %s width %d K %d acc %d: max error %.3g\n", table[r].name,
                               width, K, acc, err);
                        CHECK(err <= 1e-5 * (K + 1));
                    }
                }
        printf("     %s: micro-kernel matches (max error / (K + 1): %.2g)\n", table[r].name,
               worst);
    }
    unet__cpu_limit(cap);
}

/* Round to nearest, ties to even, in the top 16 bits; NaN stays a (quiet) NaN, infinities
 * stay, and values past the largest bf16 round to infinity as the hardware rounds them. */
TEST(bf16_rounding) {
    const struct {
        float    x;
        uint16_t bits;
    } cases[] = {
        {1.0f, 0x3f80},          {-2.0f, 0xc000},         {0.0f, 0x0000},
        {1.00390625f, 0x3f80},   /* 1 + 2^-8: a tie, to the even 1 */
        {1.01171875f, 0x3f82},   /* 1 + 3 * 2^-8: a tie, to the even 1 + 2^-6 */
        {3.4028235e38f, 0x7f80}, /* FLT_MAX rounds to infinity */
        {INFINITY, 0x7f80},      {-INFINITY, 0xff80},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_EQ(unet__bf16_bits(cases[i].x), cases[i].bits);
    CHECK_EQ(unet__bf16_bits(nextafterf(1.00390625f, 2.0f)), 0x3f81); /* past the tie: up */
    const float nan = unet__bf16_float(unet__bf16_bits(NAN));
    CHECK(nan != nan);
    CHECK_EQ(unet__bf16_pair(1.0f, -2.0f), 0xc0003f80u);
    /* 8 significant bits: the relative error of a rounding is at most 2^-8 (half the 2^-7 gap
     * between 1 and the next bf16). */
    struct unet__rng rng;
    unet__rng_seed(&rng, 5);
    double worst = 0.0;
    for (int i = 0; i < 100000; i++) {
        const float x = ldexpf(unet__rng_uniform(&rng) + 0.5f, (int)unet__rng_below(&rng, 60) - 30);
        worst = fmax(worst, fabs(unet__bf16_float(unet__bf16_bits(x)) - x) / x);
    }
    printf("     max relative rounding error %.3g (2^-8 = %.3g)\n", worst, ldexp(1, -8));
    CHECK(worst <= ldexp(1, -8) && worst > ldexp(1, -9));
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--pick") == 0) return print_pick();
    RUN(cpu_cap_selects_the_row);
    RUN(unet_cpu_environment_variable);
    RUN(micro_gemm_vs_ref);
    RUN(bf16_rounding);
    return harness_finish();
}
