/* kernels.h — the kernel table: which compiled copy of each hot kernel runs.
 *
 * A row of the table is one backend, precision and instruction set: the Winograd passes, the
 * GEMM micro-kernel (Winograd's products and the 2x2 up-convolution) and the direct
 * convolution's row kernel compiled together for that instruction set.  unet__kernels_pick
 * returns the first row of the asked precision that this CPU runs (cpu.h, with its UNET_CPU
 * cap): this is the one place where kernels are chosen at run time; conv2d.c and winograd.c
 * call through the row they get.  The BLAS-backed GEMM (gemm.c) is not in the table: OpenBLAS
 * dispatches on its own, and the NO_BLAS build's loop is portable C.
 *
 * Where the next ones slot in:
 *   - bf16 (issue: the bf16 kernels): rows with precision UNET__PRECISION_BF16 and level
 *     AVX512_BF16 (a new cpu.h level), whose winograd and micro_gemm read bf16 weights and
 *     inputs and accumulate in fp32; the model picks the precision when it is prepared and
 *     passes the row to the ops instead of their picking F32 themselves.
 *   - a GPU backend: rows with backend UNET__BACKEND_GPU whose entries take device pointers;
 *     the memory planner, not the ops, decides where values live.
 * Alternative rejected: #if / if (cpu_has) ladders in each kernel file (what there was): every
 * new precision or instruction set would touch every one of them.
 */
#ifndef UNET_OPS_KERNELS_H
#define UNET_OPS_KERNELS_H

#include "cpu.h"
#include "ops/ops.h"

enum unet__backend { UNET__BACKEND_CPU };
enum unet__precision { UNET__PRECISION_F32 };

struct unet__wino_kernels; /* ops/winograd.h */

struct unet__kernels {
    const char                      *name;        /* "avx512-f32", for messages and tests */
    enum unet__backend               backend;
    enum unet__precision             precision;
    enum unet__cpu_level             level;       /* the instruction set the row needs */
    const struct unet__wino_kernels *winograd;    /* Winograd F(4x4, 3x3) passes */
    unet__micro_gemm_fn              micro_gemm;  /* 8 x 16/32/48 register-blocked GEMM */
    unet__conv2d_rows_fn             direct_rows; /* direct convolution, one output row */
};

/* The best row for precision p that this CPU runs; NULL when there is none (never for F32: its
 * portable row runs anywhere). */
const struct unet__kernels *unet__kernels_pick(enum unet__precision p);
/* The whole table, best rows first (tests walk it). */
const struct unet__kernels *unet__kernels_table(int *count);

#endif /* UNET_OPS_KERNELS_H */
