/* kernels.h — the kernel table: which compiled copy of each hot kernel runs.
 *
 * A row of the table is one backend, precision and instruction set: the Winograd passes, the
 * GEMM micro-kernel (Winograd's products and the 2x2 up-convolution), the direct convolution's
 * row kernel and the optimizers' update loops (float32 in every row) compiled together for that
 * instruction set.  unet__kernels_pick
 * returns the first row of the asked precision that this CPU runs (cpu.h, with its UNET_CPU
 * cap): this is the one place where kernels are chosen at run time; conv2d.c and winograd.c
 * call through the row they get.  The BLAS-backed GEMM (gemm.c) is not in the table: OpenBLAS
 * dispatches on its own, and the NO_BLAS build's loop is portable C.
 *
 * Precision.  A bf16 row (AVX512_BF16, winograd_avx512_bf16.c) runs the products of the Winograd
 * convolutions and of the 2x2 up-convolution (forward, input and weight gradient, both) on
 * operands rounded to bf16, two per 32-bit word (pack 2; ops/winograd.h), with float32 sums;
 * everything else (the transforms, the epilogue, the direct first layer, the GEMMs of OpenBLAS:
 * the final 1x1 convolution, other transposed convolutions) is float32,
 * and so is a whole bf16 request on a CPU without the instructions: unet__kernels_for falls back
 * to the best float32 row.  The model holds the precision (unet_model_set_precision) and passes
 * its row to the ops (struct unet__conv_how); a NULL row is float32.
 * Where the next ones slot in: a GPU backend would be rows with backend UNET__BACKEND_GPU whose
 * entries take device pointers; the memory planner, not the ops, decides where values live.
 * Alternative rejected: #if / if (cpu_has) ladders in each kernel file (what there was): every
 * new precision or instruction set would touch every one of them.
 */
#ifndef UNET_OPS_KERNELS_H
#define UNET_OPS_KERNELS_H

#include "cpu.h"
#include "ops/ops.h"

#include <string.h>

enum unet__backend { UNET__BACKEND_CPU };
enum unet__precision { UNET__PRECISION_F32, UNET__PRECISION_BF16 };

struct unet__wino_kernels; /* ops/winograd.h */

struct unet__kernels {
    const char                      *name;        /* "avx512-f32", for messages and tests */
    enum unet__backend               backend;
    enum unet__precision             precision;
    enum unet__cpu_level             level;       /* the instruction set the row needs */
    int                              pack;        /* values of K per GEMM operand word: 1, 2 */
    const struct unet__wino_kernels *winograd;    /* Winograd F(4x4, 3x3) passes */
    unet__micro_gemm_fn              micro_gemm;  /* 8 x 16/32/48 register-blocked GEMM on words */
    unet__pack_words_fn              pack_words;  /* floats into the micro-kernel's words */
    unet__conv2d_rows_fn             direct_rows; /* direct convolution, one output row */
    unet__convt_scatter_fn           convt_scatter; /* 2x2 up-convolution: products to outputs */
    unet__sgd_fn                     sgd;         /* optimizer updates (float32 in every row) */
    unet__adam_fn                    adam;
};

/* The best row for precision p that this CPU runs; NULL when there is none (never for F32: its
 * portable row runs anywhere). */
const struct unet__kernels *unet__kernels_pick(enum unet__precision p);
/* The row that runs precision p here: unet__kernels_pick(p), or float32's best when this CPU
 * has no row for p.  How the ops resolve a request (NULL in struct unet__conv_how is F32). */
const struct unet__kernels *unet__kernels_for(enum unet__precision p);

/* x rounded to bf16 (round to nearest, ties to even; NaN stays NaN), as the bf16 rows'
 * vcvtne2ps2bf16 rounds it, as its 16 bits: the top half of a float's. */
static inline uint16_t unet__bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
/* The float with those bf16 bits. */
static inline float unet__bf16_float(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
/* A word of two bf16 (ops/winograd.h): lo in the low half, hi in the high half. */
static inline uint32_t unet__bf16_pair(float lo, float hi) {
    return (uint32_t)unet__bf16_bits(lo) | (uint32_t)unet__bf16_bits(hi) << 16;
}
/* The whole table, best rows first (tests walk it). */
const struct unet__kernels *unet__kernels_table(int *count);

#endif /* UNET_OPS_KERNELS_H */
