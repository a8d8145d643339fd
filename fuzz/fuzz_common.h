/* fuzz_common.h — what the libFuzzer targets in fuzz/ share.
 *
 * The image loaders take a path, so each input is written to one memfd per process (a file in
 * memory: no disk traffic, nothing left behind) and the loader opens it by the name
 * /proc/self/fd/N, which reopens the file at offset 0 on every call.  The context lowers the
 * pixel limit to 2^20 so that a small input claiming a large image is refused the way a real
 * one is, instead of spending the fuzzer's time decoding megapixels of padding.
 *
 * Besides the sanitizers, every target checks the loaders' contract on each input: a failure
 * returns a status other than OK with a message that names the file, and a success returns an
 * image (or model) that is consistent.  A broken contract is reported like a crash (abort), so
 * the fuzzer keeps the input.
 */
#ifndef UNET_FUZZ_COMMON_H
#define UNET_FUZZ_COMMON_H

#define _GNU_SOURCE
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline unet_ctx *fuzz_ctx(void) {
    static unet_ctx *ctx;
    if (!ctx) {
        ctx = unet_ctx_create();
        if (!ctx) abort();
        unet_ctx_set_max_pixels(ctx, (uint64_t)1 << 20);
        unet_ctx_set_max_image_bytes(ctx, (uint64_t)1 << 26);
        unet_ctx_set_threads(ctx, 1);
    }
    return ctx;
}

/* Writes data to the process's memfd; its name goes to path (at least 64 bytes). */
static inline int fuzz_file(const uint8_t *data, size_t size, char *path) {
    static int fd = -1;
    if (fd < 0) {
        fd = memfd_create("unet-fuzz", 0);
        if (fd < 0) abort();
    }
    if (ftruncate(fd, 0) != 0) abort();
    size_t off = 0;
    while (off < size) {
        ssize_t n = pwrite(fd, data + off, size - off, (off_t)off);
        if (n <= 0) abort();
        off += (size_t)n;
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return 1;
}

/* The contract on failure: a real status and a message naming the file. */
static inline void fuzz_check_failure(unet_ctx *ctx, unet_status s, const char *name) {
    const char *msg = unet_ctx_errmsg(ctx);
    if (s == UNET_STATUS_OK || !msg[0] || !strstr(msg, name)) {
        fprintf(stderr, "fuzz: contract broken: status %d, message '%s' (file %s)\n", (int)s, msg,
                name);
        abort();
    }
}

/* Uses a loaded image the way training and prediction do. */
static inline void fuzz_use_image(unet_ctx *ctx, const unet_image *img) {
    if (img->w < 1 || img->h < 1 || img->c < 1 || !img->data ||
        (uint64_t)img->w * (uint64_t)img->h > unet_ctx_max_pixels(ctx))
        abort();
    size_t n = (size_t)img->w * img->h * img->c;
    float *f = malloc(n * sizeof *f);
    int32_t *cls = malloc((size_t)img->w * img->h * sizeof *cls);
    if (f && unet_image_to_float(ctx, img, UNET_NORM_PERCENTILE, f) != UNET_STATUS_OK) abort();
    if (f && unet_image_to_float(ctx, img, UNET_NORM_AUTO, f) != UNET_STATUS_OK) abort();
    if (cls) {
        (void)unet_mask_to_classes(ctx, img, 2, "mask", cls);
        (void)unet_mask_to_classes(ctx, img, 5, "mask", cls);
    }
    free(f);
    free(cls);
}

/* The outcome of a loader: an image that is used and freed, or a failure that keeps the
 * contract and leaves *img zeroed. */
static inline void fuzz_check_load(unet_ctx *ctx, unet_status s, const char *path,
                                   unet_image *img) {
    if (s == UNET_STATUS_OK) {
        fuzz_use_image(ctx, img);
        unet_image_free(img);
    } else {
        fuzz_check_failure(ctx, s, path);
        if (img->data) abort();
    }
}

/* A reader's header-only answer (unet_image_info) against its full load of the same file:
 * no pixels, and never more permissive (a file whose header is refused does not load), and a
 * loaded image has the size and dtype the header gave.  Then the load's own contract. */
static inline void fuzz_check_info_load(unet_ctx *ctx, unet_status si, const unet_image *info,
                                        unet_status sl, unet_image *img, const char *path) {
    if (info->data || (si != UNET_STATUS_OK && sl == UNET_STATUS_OK)) abort();
    if (sl == UNET_STATUS_OK && (info->w != img->w || info->h != img->h || info->c != img->c ||
                                 info->dtype != img->dtype))
        abort();
    if (si != UNET_STATUS_OK) fuzz_check_failure(ctx, si, path);
    fuzz_check_load(ctx, sl, path, img);
}

#endif /* UNET_FUZZ_COMMON_H */
