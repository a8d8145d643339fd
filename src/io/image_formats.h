/* image_formats.h — the per-format image readers and writers behind unet_image_load/save
 * (src/io/image.c dispatches to them by content magic on load and by extension on save).
 *
 * Every reader takes the path for its messages ("path: ..."), opens it only when it is a
 * regular file (unet__fopen_regular: a FIFO never blocks), validates the header before
 * allocating (unet__image_create, then its own check that the file can hold the pixels),
 * stops there when pixels is false (unet_image_info), leaves *out zeroed on failure and never
 * prints: libpng and libtiff get handlers that store their message for the context instead.  Every writer
 * writes the file `tmp` (the temporary of an atomic replacement, see io/file.h) and names
 * `path` in its messages; write failures are UNET_STATUS_IO.
 */
#ifndef UNET_IO_IMAGE_FORMATS_H
#define UNET_IO_IMAGE_FORMATS_H

#include "internal.h"

#include <stdio.h>
#include <string.h>

/* Validates an image size read from a header and describes it in *out (data NULL):
 * UNET_STATUS_FORMAT naming path when w, h or c is < 1 or over INT_MAX, when w * h is over
 * unet_ctx_max_pixels or the decoded bytes over unet_ctx_max_image_bytes.  *out is zeroed on
 * failure. */
unet_status unet__image_create(unet_ctx *ctx, const char *path, uint64_t w, uint64_t h,
                               uint64_t c, unet_dtype dtype, unet_image *out);
/* The pixel block of an image that unet__image_create described: not zeroed, for a decoder that
 * fills every sample. */
unet_status unet__image_alloc_pixels(unet_ctx *ctx, const char *path, unet_image *img);

/* An integer sample of size bytes (1 to 8, little-endian like the host; sign-extended when
 * is_signed) as an int32: false when it does not fit.  The .npy and TIFF readers' one integer
 * conversion. */
static inline bool unet__int_sample(const unsigned char *x, size_t size, bool is_signed,
                                    int32_t *out) {
    uint64_t u = 0;
    memcpy(&u, x, size);
    if (is_signed && size < 8 && (u >> (8 * size - 1) & 1)) u |= ~(uint64_t)0 << (8 * size);
    int64_t v;
    memcpy(&v, &u, sizeof v); /* the two's complement bits: no implementation-defined cast */
    if ((!is_signed && u > INT32_MAX) || v < INT32_MIN || v > INT32_MAX) return false;
    *out = (int32_t)v;
    return true;
}

/* PNG (libpng): 8/16-bit, gray, gray+alpha, RGB, RGBA, palette; alpha is dropped.  A palette
 * image gives its colours (gray when every entry is gray, else RGB), or with palette_indices
 * its indices (one U8 channel). */
unet_status unet__png_load(unet_ctx *ctx, const char *path, bool palette_indices, bool pixels,
                           unet_image *out);
/* U8 or U16 with 1 or 3 channels (checked by the caller). */
unet_status unet__png_save(unet_ctx *ctx, const char *path, const char *tmp,
                           const unet_image *img);
/* An 8-bit PNG to the open file f (name labels messages): rows of interleaved samples
 * (channels 1 gray or 3 RGB) or, channels 0, palette indices with pal's n_pal RGBA entries
 * (alpha through tRNS).  For pictures made in memory (unet report's thumbnails and overlays:
 * f from open_memstream).  UNET_STATUS_ARG for bad arguments, IO when libpng fails. */
unet_status unet__png_write_rows(unet_ctx *ctx, FILE *f, const char *name, const uint8_t *px,
                                 int w, int h, int channels, const uint8_t (*pal)[4], int n_pal);

/* TIFF (libtiff): page is the directory index (0 = first). */
unet_status unet__tiff_load(unet_ctx *ctx, const char *path, int page, bool pixels,
                            unet_image *out);
unet_status unet__tiff_pages(unet_ctx *ctx, const char *path, int *pages);
/* U8, U16, I32 or F32; 1 or 3 channels in one page, any other count as one page per channel. */
unet_status unet__tiff_save(unet_ctx *ctx, const char *path, const char *tmp,
                            const unet_image *img);

/* NumPy .npy, versions 1.0, 2.0 and 3.0, C order, shape (H, W) or 3-D with its channel axis
 * by unet_channel_axis_of (channel_axis: UNET_CHANNEL_AXIS_AUTO, _NONE or an index); with no
 * channel axis a 3-D array (N, H, W) has N pages. */
unet_status unet__npy_load(unet_ctx *ctx, const char *path, int page, int channel_axis,
                           bool pixels, unet_image *out);
unet_status unet__npy_pages(unet_ctx *ctx, const char *path, int channel_axis, int *pages);
unet_status unet__npy_save(unet_ctx *ctx, const char *path, const char *tmp,
                           const unet_image *img);
/* Any C-order shape of ndim (1..8) dimensions: what unet__npy_save writes for (H, W) and
 * (C, H, W), e.g. (N, C, H, W) test tensors of a bioimage.io package. */
unet_status unet__npy_save_nd(unet_ctx *ctx, const char *path, const char *tmp, unet_dtype dtype,
                              int ndim, const int64_t *shape, const void *data);

/* The .npy header parser on its own (a fuzz target can call it on arbitrary bytes): parses the
 * dictionary text `hdr` (hlen bytes, the part after the length field).  On success fills the
 * descr string (NUL-terminated, at most 7 characters), fortran_order and the shape (at most
 * UNET__NPY_MAX_DIMS dimensions, each <= INT64_MAX / 2).  On failure returns false with a
 * reason in err. */
#define UNET__NPY_MAX_DIMS 8
struct unet__npy_header {
    char    descr[8];
    bool    fortran_order;
    int     ndim;
    int64_t shape[UNET__NPY_MAX_DIMS];
};
bool unet__npy_parse_header(const char *hdr, size_t hlen, struct unet__npy_header *out,
                            char *err, size_t err_size);

#endif /* UNET_IO_IMAGE_FORMATS_H */
