/* kernels.c — the kernel table (kernels.h) and the pick: rows best first, so the first row of
 * the asked precision whose instruction set the CPU has (under the UNET_CPU cap) wins.
 * Tested by tests/test_kernels.c (each cap picks its row, in-process and through UNET_CPU, and
 * a bf16 request below AVX512_BF16 gets float32's; every row's micro-kernel against the naive
 * product on its words); each row's Winograd passes and direct convolution are tested at their
 * level by test_winograd.c and test_conv.c, the bf16 row against the float32 one. */
#include "ops/kernels.h"
#include "ops/winograd.h"

static const struct unet__kernels table[] = {
#ifdef UNET__X86
    /* The direct first layer stays float32 in the bf16 row (ops/kernels.h). */
    {"avx512bf16-bf16", UNET__BACKEND_CPU, UNET__PRECISION_BF16, UNET__CPU_AVX512_BF16, 2,
     &unet__wino_avx512_bf16, unet__micro_gemm_avx512_bf16, unet__pack_words_bf16,
     unet__conv2d_direct_rows_avx512, unet__convt_scatter_avx512, unet__sgd_range_avx512,
     unet__adam_range_avx512},
    {"avx512-f32", UNET__BACKEND_CPU, UNET__PRECISION_F32, UNET__CPU_AVX512, 1,
     &unet__wino_avx512, unet__micro_gemm_avx512, unet__pack_words_f32,
     unet__conv2d_direct_rows_avx512, unet__convt_scatter_avx512, unet__sgd_range_avx512,
     unet__adam_range_avx512},
    {"avx2-f32", UNET__BACKEND_CPU, UNET__PRECISION_F32, UNET__CPU_AVX2, 1, &unet__wino_avx2,
     unet__micro_gemm_avx2, unet__pack_words_f32, unet__conv2d_direct_rows_avx2,
     unet__convt_scatter_avx2, unet__sgd_range_avx2, unet__adam_range_avx2},
#endif
    {"portable-f32", UNET__BACKEND_CPU, UNET__PRECISION_F32, UNET__CPU_PORTABLE, 1,
     &unet__wino_portable, unet__micro_gemm_portable, unet__pack_words_f32,
     unet__conv2d_direct_rows_portable, unet__convt_scatter_portable, unet__sgd_range_portable,
     unet__adam_range_portable},
};
enum { ROWS = sizeof table / sizeof table[0] };

void unet__pack_words_f32(void *dst, const float *lo, const float *hi, int n) {
    (void)hi;
    memcpy(dst, lo, sizeof(float) * (size_t)n);
}

const struct unet__kernels *unet__kernels_pick(enum unet__precision p) {
    for (int i = 0; i < ROWS; i++)
        if (table[i].backend == UNET__BACKEND_CPU && table[i].precision == p &&
            unet__cpu_has(table[i].level))
            return &table[i];
    return NULL;
}

const struct unet__kernels *unet__kernels_for(enum unet__precision p) {
    const struct unet__kernels *k = unet__kernels_pick(p);
    return k ? k : unet__kernels_pick(UNET__PRECISION_F32);
}

const struct unet__kernels *unet__kernels_table(int *count) {
    *count = ROWS;
    return table;
}
