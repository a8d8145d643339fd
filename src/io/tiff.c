/* tiff.c — TIFF reading and writing with libtiff.
 *
 * Messages: every TIFF is opened with TIFFOpenExt and per-handle error and warning handlers
 * (libtiff >= 4.5) that store the first error in a struct on our stack and return 1, which
 * keeps libtiff from calling its process-global handlers (that print to stderr).  The global
 * handlers stay untouched: a program that uses libtiff itself keeps its own.
 *
 * Reading decodes raw samples strip by strip (or tile by tile) with TIFFReadEncodedStrip/Tile
 * and copies them into the planar image.  TIFFReadRGBAImage would be simpler but squeezes every
 * sample into 8 bits, which destroys 16-bit microscopy data.  Supported samples: 8/16-bit
 * unsigned (U8/U16), 8/16/32-bit signed and 32-bit unsigned (I32, the latter range-checked),
 * 32-bit IEEE float (F32); contiguous or separate planes; photometric MinIsBlack or RGB;
 * trailing alpha extra samples dropped (RGBA -> RGB, gray+alpha -> gray), like PNG.
 * Sizes are checked against unet_ctx_max_pixels before any buffer is allocated, and libtiff's
 * own allocations are capped through TIFFOpenOptionsSetMaxSingleMemAlloc.
 *
 * Writing uses strips of about 128 KiB, contiguous samples, deflate (LZW when the libtiff
 * build lacks zlib) with horizontal differencing for integer samples.  Images with 1 or 3
 * channels are one page (gray or RGB); any other channel count is written as one gray page
 * per channel, the layout ImageJ and tifffile read as a stack.
 */
#include "io/file.h"
#include "io/image_formats.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#define STRIP_TARGET_BYTES ((size_t)128 << 10)
#define MAX_SAMPLES_PER_PIXEL 16
/* A tile may be larger than the image, but not absurdly: at most this or the image's size. */
#define MAX_TILE_BYTES ((uint64_t)64 << 20)

struct tiff_err {
    const char *path;
    char        msg[512];
};

static int on_error(TIFF *tif, void *ud, const char *module, const char *fmt, va_list ap) {
    (void)tif;
    struct tiff_err *e = ud;
    if (e->msg[0]) return 1; /* the first error is the cause; later ones are consequences */
    size_t k = 0;
    if (module && module[0] && strcmp(module, e->path) != 0) {
        int n = snprintf(e->msg, sizeof e->msg, "%s: ", module);
        if (n > 0) k = (size_t)n < sizeof e->msg ? (size_t)n : sizeof e->msg - 1;
    }
    vsnprintf(e->msg + k, sizeof e->msg - k, fmt, ap);
    return 1;
}

static int on_warning(TIFF *tif, void *ud, const char *module, const char *fmt, va_list ap) {
    (void)tif;
    (void)ud;
    (void)module;
    (void)fmt;
    (void)ap;
    return 1;
}

static const char *err_text(const struct tiff_err *e) {
    return e->msg[0] ? e->msg : "libtiff reported no detail";
}

/* Opens name for writing (fd < 0) or the descriptor fd for reading (libtiff closes it). */
static TIFF *open_tiff(unet_ctx *ctx, const char *name, int fd, const char *mode,
                       struct tiff_err *e) {
    TIFFOpenOptions *opts = TIFFOpenOptionsAlloc();
    if (!opts) {
        if (fd >= 0) close(fd);
        return NULL;
    }
    TIFFOpenOptionsSetErrorHandlerExtR(opts, on_error, e);
    TIFFOpenOptionsSetWarningHandlerExtR(opts, on_warning, NULL);
    /* The largest buffer a valid supported image needs: max_pixels * 4 samples * 4 bytes. */
    uint64_t cap = unet_ctx_max_pixels(ctx);
    cap = cap > ((uint64_t)1 << 40) ? ((uint64_t)1 << 44) : cap * 16 + MAX_TILE_BYTES;
    if (cap > (uint64_t)(SIZE_MAX / 2)) cap = (uint64_t)(SIZE_MAX / 2);
    TIFFOpenOptionsSetMaxSingleMemAlloc(opts, (tmsize_t)cap);
    TIFF *tif = fd >= 0 ? TIFFFdOpenExt(fd, name, mode, opts) : TIFFOpenExt(name, mode, opts);
    TIFFOpenOptionsFree(opts);
    if (!tif && fd >= 0) close(fd);
    return tif;
}

/* Opens path for reading, a regular file only (a FIFO would block libtiff's open). */
static unet_status open_read(unet_ctx *ctx, const char *path, struct tiff_err *e, TIFF **tif,
                             uint64_t *file_size) {
    int fd;
    unet_status s = unet__open_regular(ctx, path, &fd);
    if (s != UNET_STATUS_OK) return s;
    struct stat sb;
    *file_size = fstat(fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    *tif = open_tiff(ctx, path, fd, "r", e);
    if (!*tif)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: invalid TIFF: %s", path, err_text(e));
    return UNET_STATUS_OK;
}

/* How many times a codec can expand what the file stores, at most; 0 when the format sets no
 * bound (JPEG, ZSTD, LZMA, ...: only unet_ctx_max_image_bytes applies). */
static uint64_t codec_ratio(uint16_t compression) {
    switch (compression) {
    case COMPRESSION_NONE: return 1;
    case COMPRESSION_PACKBITS: return 64;      /* 2 bytes repeat one byte 128 times */
    case COMPRESSION_ADOBE_DEFLATE:
    case COMPRESSION_DEFLATE: return 1032;     /* deflate's largest ratio */
    case COMPRESSION_LZW: return 4096;         /* a 9..12-bit code stands for <= 4096 bytes */
    default: return 0;
    }
}

/* The bytes of the strips (or tiles) first..first+n-1 that lie inside the file, summed; each
 * capped by what remains of the file after its offset. */
static uint64_t stored_bytes(TIFF *tif, uint32_t first, uint32_t n, uint64_t file_size) {
    uint64_t sum = 0;
    for (uint32_t i = first; i < first + n; i++) {
        uint64_t off = TIFFGetStrileOffset(tif, i), len = TIFFGetStrileByteCount(tif, i);
        if (off < file_size) sum += len < file_size - off ? len : file_size - off;
    }
    return sum;
}

/* ---- reading ---- */

enum kind { KIND_U8, KIND_U16, KIND_I8, KIND_I16, KIND_I32, KIND_U32, KIND_F32 };

/* Copies n samples, `stride` samples apart in src, to dst[off ..] of an image of dtype.
 * False when a 32-bit unsigned sample does not fit in int32. */
static bool copy_samples(void *dst, size_t off, const unsigned char *src, size_t stride,
                         size_t n, enum kind k) {
    switch (k) {
    case KIND_U8: {
        uint8_t *d = (uint8_t *)dst + off;
        for (size_t i = 0; i < n; i++) d[i] = src[i * stride];
        return true;
    }
    case KIND_U16: {
        uint16_t *d = (uint16_t *)dst + off;
        for (size_t i = 0; i < n; i++) memcpy(&d[i], src + i * stride * 2, 2);
        return true;
    }
    case KIND_I8:
    case KIND_I16:
    case KIND_I32:
    case KIND_U32: {
        int32_t *d = (int32_t *)dst + off;
        const size_t size = k == KIND_I8 ? 1 : k == KIND_I16 ? 2 : 4;
        for (size_t i = 0; i < n; i++)
            if (!unet__int_sample(src + i * stride * size, size, k != KIND_U32, &d[i]))
                return false;
        return true;
    }
    case KIND_F32: {
        float *d = (float *)dst + off;
        for (size_t i = 0; i < n; i++) memcpy(&d[i], src + i * stride * 4, 4);
        return true;
    }
    }
    return false;
}

static bool sample_kind(uint16_t format, uint16_t bps, enum kind *k, unet_dtype *dtype) {
    *dtype = UNET_DTYPE_I32;
    if (format == SAMPLEFORMAT_UINT && bps == 8) *k = KIND_U8, *dtype = UNET_DTYPE_U8;
    else if (format == SAMPLEFORMAT_UINT && bps == 16) *k = KIND_U16, *dtype = UNET_DTYPE_U16;
    else if (format == SAMPLEFORMAT_UINT && bps == 32) *k = KIND_U32;
    else if (format == SAMPLEFORMAT_INT && bps == 8) *k = KIND_I8;
    else if (format == SAMPLEFORMAT_INT && bps == 16) *k = KIND_I16;
    else if (format == SAMPLEFORMAT_INT && bps == 32) *k = KIND_I32;
    else if (format == SAMPLEFORMAT_IEEEFP && bps == 32) *k = KIND_F32, *dtype = UNET_DTYPE_F32;
    else return false;
    return true;
}

/* Reads the current directory into *out (only its description when pixels is false). */
static unet_status read_page(unet_ctx *ctx, const char *path, TIFF *tif, struct tiff_err *e,
                             bool pixels, uint64_t file_size, unet_image *out) {
    uint32_t w = 0, h = 0;
    uint16_t spp = 1, bps = 1, format = SAMPLEFORMAT_UINT, planar = PLANARCONFIG_CONTIG;
    uint16_t photometric = PHOTOMETRIC_MINISBLACK;
    if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w) || !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h))
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: TIFF without ImageWidth/ImageLength",
                          path);
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bps);
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &format);
    TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
    TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photometric);
    if (photometric != PHOTOMETRIC_MINISBLACK && photometric != PHOTOMETRIC_RGB)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: TIFF PhotometricInterpretation %u is not supported "
                          "(only MinIsBlack and RGB)",
                          path, (unsigned)photometric);
    enum kind kind;
    unet_dtype dtype;
    if (!sample_kind(format, bps, &kind, &dtype))
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: TIFF samples of %u bits with SampleFormat %u are not supported "
                          "(8/16-bit unsigned, 8/16/32-bit integer, 32-bit float)",
                          path, (unsigned)bps, (unsigned)format);
    if (spp < 1 || spp > MAX_SAMPLES_PER_PIXEL)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: TIFF with %u samples per pixel", path,
                          (unsigned)spp);
    if (planar != PLANARCONFIG_CONTIG && planar != PLANARCONFIG_SEPARATE)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: TIFF PlanarConfiguration %u", path,
                          (unsigned)planar);
    /* Drop trailing alpha samples; unspecified extra samples stay channels. */
    int c = spp;
    uint16_t n_extra = 0;
    uint16_t *extra = NULL;
    if (TIFFGetField(tif, TIFFTAG_EXTRASAMPLES, &n_extra, &extra) && extra) {
        for (int i = (int)n_extra - 1; i >= 0 && c > 1; i--) {
            if (extra[i] != EXTRASAMPLE_ASSOCALPHA && extra[i] != EXTRASAMPLE_UNASSALPHA) break;
            c--;
        }
    }
    unet_status s = unet__image_create(ctx, path, w, h, (uint64_t)c, dtype, out);
    if (s != UNET_STATUS_OK) return s;

    bool separate = planar == PLANARCONFIG_SEPARATE && spp > 1;
    size_t spb = separate ? 1 : spp;              /* samples per pixel in a decoded block */
    size_t bs = (size_t)bps / 8;
    size_t plane = (size_t)w * h;
    int planes = separate ? c : 1;                /* planes we need to read */
    unsigned char *buf = NULL;
    bool tiled = TIFFIsTiled(tif);
    /* What the file can hold: the strips (tiles) of the planes we read, inside the file, times
     * the codec's largest ratio, must cover the samples we decode (a 226-byte header claiming
     * 16384 x 16384 x 4 floats is refused here instead of allocating 4 GB). */
    uint16_t compression = COMPRESSION_NONE;
    TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &compression);
    uint64_t ratio = codec_ratio(compression);
    if (ratio) {
        uint32_t n_all = tiled ? TIFFNumberOfTiles(tif) : TIFFNumberOfStrips(tif);
        uint32_t n = separate ? n_all / spp * (uint32_t)planes : n_all;
        uint64_t held = stored_bytes(tif, 0, n, file_size);
        if (held > file_size) held = file_size;
        double need = (double)plane * (double)(separate ? planes : spp) * (double)bs;
        if (need > (double)held * (double)ratio) {
            s = unet__fail(ctx, UNET_STATUS_FORMAT,
                           "%s: TIFF of %ux%u with %u samples of %u bits needs %.0f bytes, but "
                           "its %s hold %llu bytes of the file (compression %u expands at most "
                           "%llu times): a truncated or forged file",
                           path, (unsigned)w, (unsigned)h, (unsigned)spp, (unsigned)bps, need,
                           tiled ? "tiles" : "strips", (unsigned long long)held,
                           (unsigned)compression, (unsigned long long)ratio);
            goto fail;
        }
    }
    if (!pixels) return UNET_STATUS_OK;
    s = unet__image_alloc_pixels(ctx, path, out);
    if (s != UNET_STATUS_OK) goto fail;
    uint32_t bw = w, bh = 0;                      /* block (tile or strip) width and height */
    if (tiled) {
        TIFFGetField(tif, TIFFTAG_TILEWIDTH, &bw);
        TIFFGetField(tif, TIFFTAG_TILELENGTH, &bh);
    } else {
        bh = h;
        TIFFGetFieldDefaulted(tif, TIFFTAG_ROWSPERSTRIP, &bh);
        if (bh > h) bh = h;
    }
    /* bw * bh < 2^64; once it is below 2^40, times spb * bs <= 64 cannot overflow either. */
    uint64_t block_px = (uint64_t)bw * bh;
    uint64_t block_bytes = block_px < ((uint64_t)1 << 40) ? block_px * spb * bs : UINT64_MAX;
    uint64_t image_bytes = (uint64_t)plane * spp * bs;
    if (bw == 0 || bh == 0 ||
        block_bytes > (image_bytes > MAX_TILE_BYTES ? image_bytes : MAX_TILE_BYTES) ||
        block_bytes > SIZE_MAX) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: TIFF %s of %ux%u for a %ux%u image", path,
                       tiled ? "tiles" : "strips", (unsigned)bw, (unsigned)bh, (unsigned)w,
                       (unsigned)h);
        goto fail;
    }
    buf = malloc((size_t)block_bytes);
    if (!buf) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: cannot allocate a TIFF %s of %llu bytes",
                       path, tiled ? "tile" : "strip", (unsigned long long)block_bytes);
        goto fail;
    }
    for (int p = 0; p < planes; p++) {
        for (uint32_t y0 = 0; y0 < h; y0 += bh) {
            for (uint32_t x0 = 0; x0 < w; x0 += bw) {
                uint32_t rows = h - y0 < bh ? h - y0 : bh;
                uint32_t cols = w - x0 < bw ? w - x0 : bw;
                /* A strip holds whole rows (bw == w); a tile is always complete in the file. */
                size_t need = tiled ? (size_t)block_bytes : (size_t)rows * w * spb * bs;
                tmsize_t got;
                if (tiled) {
                    uint32_t t = TIFFComputeTile(tif, x0, y0, 0, (uint16_t)p);
                    got = TIFFReadEncodedTile(tif, t, buf, (tmsize_t)need);
                } else {
                    uint32_t t = TIFFComputeStrip(tif, y0, (uint16_t)p);
                    got = TIFFReadEncodedStrip(tif, t, buf, (tmsize_t)need);
                }
                if (got < 0 || (size_t)got < need) {
                    s = unet__fail(ctx, UNET_STATUS_FORMAT,
                                   "%s: cannot decode the TIFF %s at (x=%u, y=%u): %s", path,
                                   tiled ? "tile" : "strip", (unsigned)x0, (unsigned)y0,
                                   got < 0 ? err_text(e) : "short data");
                    goto fail;
                }
                for (uint32_t yy = 0; yy < rows; yy++) {
                    size_t dst = (size_t)(y0 + yy) * w + x0;
                    const unsigned char *row = buf + (size_t)yy * bw * spb * bs;
                    bool ok = true;
                    if (separate) {
                        ok = copy_samples(out->data, (size_t)p * plane + dst, row, 1, cols, kind);
                    } else {
                        for (int ch = 0; ch < c && ok; ch++)
                            ok = copy_samples(out->data, (size_t)ch * plane + dst,
                                              row + (size_t)ch * bs, spb, cols, kind);
                    }
                    if (!ok) {
                        s = unet__fail(ctx, UNET_STATUS_FORMAT,
                                       "%s: 32-bit unsigned TIFF sample in row %u is over "
                                       "2^31 - 1 (does not fit I32)",
                                       path, (unsigned)(y0 + yy));
                        goto fail;
                    }
                }
            }
        }
    }
    free(buf);
    return UNET_STATUS_OK;
fail:
    free(buf);
    unet_image_free(out);
    return s;
}

/* The directories (pages) of tif.  A chain that breaks (the next directory's offset points
 * past the end of a truncated file, or at garbage) is an error, not a shorter stack: a stack
 * cut after its first pages would otherwise pass for a complete one with fewer pages. */
static unet_status count_pages(unet_ctx *ctx, const char *path, TIFF *tif, struct tiff_err *e,
                               int *pages) {
    e->msg[0] = 0;
    tdir_t n = TIFFNumberOfDirectories(tif);
    if (n < 1 || n > INT32_MAX)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: TIFF with %llu directories", path,
                          (unsigned long long)n);
    if (e->msg[0])
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: the TIFF's directory after page %llu "
                          "cannot be read (a truncated or damaged file): %s", path,
                          (unsigned long long)n - 1, e->msg);
    *pages = (int)n;
    return UNET_STATUS_OK;
}

unet_status unet__tiff_load(unet_ctx *ctx, const char *path, int page, bool pixels,
                            unet_image *out) {
    memset(out, 0, sizeof *out);
    struct tiff_err e = {.path = path};
    TIFF *tif;
    uint64_t file_size;
    unet_status s = open_read(ctx, path, &e, &tif, &file_size);
    if (s != UNET_STATUS_OK) return s;
    if (page > 0 && !TIFFSetDirectory(tif, (tdir_t)page)) {
        int pages = 0;
        s = count_pages(ctx, path, tif, &e, &pages);
        if (s == UNET_STATUS_OK && page >= pages)
            s = unet__fail(ctx, UNET_STATUS_ARG, "%s: page %d requested, the TIFF has %d", path,
                           page, pages);
        else if (s == UNET_STATUS_OK)
            s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: cannot read TIFF page %d: %s", path,
                           page, err_text(&e));
    }
    if (s == UNET_STATUS_OK) s = read_page(ctx, path, tif, &e, pixels, file_size, out);
    TIFFClose(tif);
    return s;
}

unet_status unet__tiff_pages(unet_ctx *ctx, const char *path, int *pages) {
    *pages = 0;
    struct tiff_err e = {.path = path};
    TIFF *tif;
    uint64_t file_size;
    unet_status s = open_read(ctx, path, &e, &tif, &file_size);
    if (s != UNET_STATUS_OK) return s;
    s = count_pages(ctx, path, tif, &e, pages);
    TIFFClose(tif);
    return s;
}

/* ---- writing ---- */

/* A failed write: the system's reason (a full disk, a file size limit) when there is one, and
 * libtiff's message. */
static unet_status write_failed(unet_ctx *ctx, const char *path, const char *what,
                                const struct tiff_err *e) {
    int err = errno;
    return unet__fail(ctx, UNET_STATUS_IO, "%s: writing %s failed (%s): %s", path, what,
                      err ? strerror(err) : "libtiff", err_text(e));
}

unet_status unet__tiff_save(unet_ctx *ctx, const char *path, const char *tmp,
                            const unet_image *img) {
    size_t w = (size_t)img->w, h = (size_t)img->h, plane = w * h;
    size_t bs = unet_dtype_size(img->dtype);
    int pages = (img->c == 1 || img->c == 3) ? 1 : img->c;
    int spp = pages == 1 ? img->c : 1;
    uint16_t format = img->dtype == UNET_DTYPE_F32   ? SAMPLEFORMAT_IEEEFP
                      : img->dtype == UNET_DTYPE_I32 ? SAMPLEFORMAT_INT
                                                     : SAMPLEFORMAT_UINT;
    uint16_t compression = TIFFIsCODECConfigured(COMPRESSION_ADOBE_DEFLATE)
                               ? COMPRESSION_ADOBE_DEFLATE
                           : TIFFIsCODECConfigured(COMPRESSION_LZW) ? COMPRESSION_LZW
                                                                    : COMPRESSION_NONE;
    /* Classic TIFF offsets are 32-bit: BigTIFF once the raw data nears 4 GiB. */
    bool big = (uint64_t)plane * (uint64_t)img->c * bs > ((uint64_t)7 << 29);
    size_t row_bytes = w * (size_t)spp * bs;
    size_t rps = STRIP_TARGET_BYTES / row_bytes;
    if (rps < 1) rps = 1;
    if (rps > h) rps = h;

    struct tiff_err e = {.path = path};
    unet_status s = UNET_STATUS_OK;
    unsigned char *buf = malloc(rps * row_bytes);
    if (!buf) return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: cannot allocate a TIFF strip", path);
    TIFF *tif = open_tiff(ctx, tmp, -1, big ? "w8" : "w", &e);
    if (!tif) {
        free(buf);
        return unet__fail(ctx, UNET_STATUS_IO, "%s: cannot create %s: %s", path, tmp, err_text(&e));
    }
    const unsigned char *src = img->data;
    for (int page = 0; page < pages; page++) {
        TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, (uint32_t)w);
        TIFFSetField(tif, TIFFTAG_IMAGELENGTH, (uint32_t)h);
        TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, (uint16_t)(bs * 8));
        TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, (uint16_t)spp);
        TIFFSetField(tif, TIFFTAG_SAMPLEFORMAT, format);
        TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, spp == 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
        TIFFSetField(tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
        TIFFSetField(tif, TIFFTAG_ORIENTATION, ORIENTATION_TOPLEFT);
        TIFFSetField(tif, TIFFTAG_COMPRESSION, compression);
        if (compression != COMPRESSION_NONE && format != SAMPLEFORMAT_IEEEFP)
            TIFFSetField(tif, TIFFTAG_PREDICTOR, PREDICTOR_HORIZONTAL);
        TIFFSetField(tif, TIFFTAG_ROWSPERSTRIP, (uint32_t)rps);
        if (pages > 1) {
            TIFFSetField(tif, TIFFTAG_SUBFILETYPE, FILETYPE_PAGE);
            if (pages <= 65535) TIFFSetField(tif, TIFFTAG_PAGENUMBER, (uint16_t)page, (uint16_t)pages);
        }
        for (size_t y0 = 0, strip = 0; y0 < h; y0 += rps, strip++) {
            size_t rows = h - y0 < rps ? h - y0 : rps;
            if (spp == 1) {
                memcpy(buf, src + ((size_t)page * plane + y0 * w) * bs, rows * w * bs);
            } else {
                for (size_t i = 0; i < rows * w; i++)
                    for (int ch = 0; ch < spp; ch++)
                        memcpy(buf + (i * (size_t)spp + (size_t)ch) * bs,
                               src + ((size_t)ch * plane + y0 * w + i) * bs, bs);
            }
            errno = 0;
            if (TIFFWriteEncodedStrip(tif, (uint32_t)strip, buf, (tmsize_t)(rows * row_bytes)) < 0) {
                s = write_failed(ctx, path, "the TIFF", &e);
                goto done;
            }
        }
        errno = 0;
        if (!TIFFWriteDirectory(tif)) {
            s = write_failed(ctx, path, "the TIFF directory", &e);
            goto done;
        }
    }
done:
    TIFFClose(tif);
    free(buf);
    return s;
}
