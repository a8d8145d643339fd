/* image.c — the image API: allocation, format dispatch, float normalisation and masks.
 *
 * Loading recognises the format by its first bytes (PNG signature, TIFF byte-order mark, .npy
 * magic), never by extension, so a mislabelled file still loads or fails with a clear message.
 * Saving goes by extension and always through unet__atomic_begin/commit: the writer fills a
 * temporary beside the target, which replaces it only once complete.
 *
 * Percentile normalisation (Cellpose's 1st / 99.8th percentile per channel) is defined as
 * numpy.percentile's default "linear" method on the sorted values v[0..n-1]:
 *     pos = (n - 1) * q / 100,  i = floor(pos),  p = v[i] + (pos - i) * (v[i+1] - v[i]).
 * 8- and 16-bit images find v[i] with a histogram (O(n), 65536 bins), float and int32 images
 * with a quickselect on a copy (expected O(n)); a full sort would be O(n log n) and sorting
 * 16-bit data is wasted work when a histogram is exact.
 */
#include "io/file.h"
#include "io/image_formats.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PERCENTILE_LO 1.0
#define PERCENTILE_HI 99.8

size_t unet_dtype_size(unet_dtype dtype) {
    switch (dtype) {
    case UNET_DTYPE_U8:  return 1;
    case UNET_DTYPE_U16: return 2;
    case UNET_DTYPE_I32: return 4;
    case UNET_DTYPE_F32: return 4;
    }
    return 0;
}

static bool dtype_valid(unet_dtype dtype) {
    return unet_dtype_size(dtype) != 0;
}

static const char *dtype_name(unet_dtype dtype) {
    switch (dtype) {
    case UNET_DTYPE_U8:  return "U8";
    case UNET_DTYPE_U16: return "U16";
    case UNET_DTYPE_I32: return "I32";
    case UNET_DTYPE_F32: return "F32";
    }
    return "?";
}

unet_status unet_image_alloc(unet_ctx *ctx, unet_image *img, int w, int h, int c,
                             unet_dtype dtype) {
    if (!img) return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_alloc: img is NULL");
    memset(img, 0, sizeof *img);
    if (w < 1 || h < 1 || c < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_alloc: size %dx%d with %d channels",
                          w, h, c);
    if (!dtype_valid(dtype))
        return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_alloc: unknown dtype %d", (int)dtype);
    size_t dims[4] = {(size_t)w, (size_t)h, (size_t)c, unet_dtype_size(dtype)};
    size_t bytes;
    if (!unet__prod_size(dims, 4, &bytes))
        return unet__fail(ctx, UNET_STATUS_NOMEM, "unet_image_alloc: %dx%dx%d overflows", w, h, c);
    void *data = unet__calloc(bytes, 1);
    if (!data)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "unet_image_alloc: cannot allocate %zu bytes",
                          bytes);
    img->w = w;
    img->h = h;
    img->c = c;
    img->dtype = dtype;
    img->data = data;
    return UNET_STATUS_OK;
}

void unet_image_free(unet_image *img) {
    if (!img) return;
    unet__free(img->data);
    memset(img, 0, sizeof *img);
}

unet_status unet__image_create(unet_ctx *ctx, const char *path, uint64_t w, uint64_t h,
                               uint64_t c, unet_dtype dtype, unet_image *out) {
    memset(out, 0, sizeof *out);
    if (w < 1 || h < 1 || c < 1 || w > INT_MAX || h > INT_MAX || c > INT_MAX)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: invalid image size %llux%llu with %llu channels", path,
                          (unsigned long long)w, (unsigned long long)h, (unsigned long long)c);
    /* Both factors are below 2^31, so the product fits in 64 bits. */
    uint64_t pixels = w * h;
    uint64_t max = unet_ctx_max_pixels(ctx);
    if (pixels > max)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: image %llux%llu has %llu pixels, over the limit of %llu "
                          "(unet_ctx_set_max_pixels)",
                          path, (unsigned long long)w, (unsigned long long)h,
                          (unsigned long long)pixels, (unsigned long long)max);
    /* pixels < 2^62 and c * size < 2^34: the product in double is exact enough to compare. */
    const size_t bs = unet_dtype_size(dtype);
    const double bytes = (double)pixels * (double)c * (double)bs;
    const uint64_t budget = unet_ctx_max_image_bytes(ctx);
    if (bytes > (double)budget || bytes > (double)SIZE_MAX / 2)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: image %llux%llu with %llu channels of %zu-byte samples decodes to "
                          "%.0f bytes, over the limit of %llu (unet_ctx_set_max_image_bytes)",
                          path, (unsigned long long)w, (unsigned long long)h,
                          (unsigned long long)c, bs, bytes, (unsigned long long)budget);
    out->w = (int)w;
    out->h = (int)h;
    out->c = (int)c;
    out->dtype = dtype;
    return UNET_STATUS_OK;
}

unet_status unet__image_alloc_pixels(unet_ctx *ctx, const char *path, unet_image *img) {
    /* Not zeroed: the decoder writes every sample, and untouched pages of a large allocation
     * cost nothing until then (a file that fails halfway never touched the rest). */
    size_t bytes = (size_t)img->w * (size_t)img->h * (size_t)img->c * unet_dtype_size(img->dtype);
    img->data = unet__alloc(bytes);
    if (!img->data)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: cannot allocate an image of %dx%d with %d "
                          "channels (%zu bytes)", path, img->w, img->h, img->c, bytes);
    return UNET_STATUS_OK;
}

static unet_status check_image(unet_ctx *ctx, const char *what, const unet_image *img);
static double sample_at(const unet_image *img, size_t i);

/* ---- format dispatch ---- */

enum format { FORMAT_UNKNOWN, FORMAT_PNG, FORMAT_TIFF, FORMAT_NPY };

static unet_status sniff(unet_ctx *ctx, const char *path, enum format *fmt) {
    *fmt = FORMAT_UNKNOWN;
    unsigned char m[8] = {0};
    FILE *f;
    unet_status s = unet__fopen_regular(ctx, path, &f, NULL);
    if (s != UNET_STATUS_OK) return s;
    size_t n = fread(m, 1, sizeof m, f);
    int err = ferror(f);
    fclose(f);
    if (err) return unet__fail(ctx, UNET_STATUS_IO, "%s: read failed", path);
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 8 && memcmp(m, png, 8) == 0) *fmt = FORMAT_PNG;
    /* Classic TIFF (42) and BigTIFF (43), either byte order. */
    else if (n >= 4 && ((m[0] == 'I' && m[1] == 'I' && (m[2] == 42 || m[2] == 43) && m[3] == 0) ||
                        (m[0] == 'M' && m[1] == 'M' && m[2] == 0 && (m[3] == 42 || m[3] == 43))))
        *fmt = FORMAT_TIFF;
    else if (n >= 6 && memcmp(m, "\x93NUMPY", 6) == 0) *fmt = FORMAT_NPY;
    if (*fmt == FORMAT_UNKNOWN)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: not a PNG, TIFF or .npy file (unrecognised first bytes%s)", path,
                          n == 0 ? ": the file is empty" : "");
    return UNET_STATUS_OK;
}

/* ---- channel layouts ---- */

unet_image_opts unet_image_defaults(void) {
    unet_image_opts o = {.channel_axis = UNET_CHANNEL_AXIS_AUTO, .palette_indices = 0};
    return o;
}

static bool axis_valid(int axis) {
    return axis == UNET_CHANNEL_AXIS_AUTO || axis == UNET_CHANNEL_AXIS_NONE ||
           (axis >= -3 && axis <= 2);
}

unet_status unet_channel_axis_of(unet_ctx *ctx, int ndim, const int64_t *shape, int channel_axis,
                                 int *axis) {
    if (!axis || (ndim == 3 && !shape))
        return unet__fail(ctx, UNET_STATUS_ARG, "unet_channel_axis_of: NULL argument");
    *axis = -1;
    if (ndim != 2 && ndim != 3)
        return unet__fail(ctx, UNET_STATUS_ARG, "channel axis: an image has 2 or 3 dimensions, "
                          "not %d", ndim);
    if (!axis_valid(channel_axis))
        return unet__fail(ctx, UNET_STATUS_ARG, "channel axis %d: expected -3..2, auto or none",
                          channel_axis);
    if (ndim == 2 || channel_axis == UNET_CHANNEL_AXIS_NONE) return UNET_STATUS_OK;
    if (channel_axis == UNET_CHANNEL_AXIS_AUTO) {
        /* Colour last (numpy, scikit-image, PIL, tifffile) when the last axis is small and both
         * others are larger; else channels first, as unet writes and PyTorch keeps them. */
        bool last = shape[2] <= 4 && shape[0] > shape[2] && shape[1] > shape[2];
        *axis = last ? 2 : 0;
        return UNET_STATUS_OK;
    }
    *axis = channel_axis < 0 ? channel_axis + 3 : channel_axis;
    return UNET_STATUS_OK;
}

unet_status unet_channel_axis_parse(unet_ctx *ctx, const char *text, int *channel_axis) {
    static const struct {
        const char *name;
        int         axis;
    } names[] = {{"auto", UNET_CHANNEL_AXIS_AUTO}, {"none", UNET_CHANNEL_AXIS_NONE},
                 {"first", 0}, {"last", -1}};
    if (!text || !channel_axis)
        return unet__fail(ctx, UNET_STATUS_ARG, "unet_channel_axis_parse: NULL argument");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(text, names[i].name) == 0) {
            *channel_axis = names[i].axis;
            return UNET_STATUS_OK;
        }
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (text[0] && !*end && !errno && v >= -3 && v <= 2) {
        *channel_axis = (int)v;
        return UNET_STATUS_OK;
    }
    return unet__fail(ctx, UNET_STATUS_ARG, "channel axis '%s' (expected first, last, none, auto "
                      "or an axis -3..2)", text);
}

const char *unet_channel_axis_name(int channel_axis, char buf[8]) {
    if (channel_axis == UNET_CHANNEL_AXIS_AUTO) return "auto";
    if (channel_axis == UNET_CHANNEL_AXIS_NONE) return "none";
    if (channel_axis == 0) return "first";
    if (channel_axis == -1) return "last";
    if (!axis_valid(channel_axis)) return "?";
    snprintf(buf, 8, "%d", channel_axis);
    return buf;
}

/* A TIFF's pages as the channels of one image (channel axis first): every page of one size and
 * sample type, their samples in page order.  Sized from the headers before anything is
 * decoded; each page is then decoded on its own and copied into its planes. */
#define MAX_PAGE_CHANNELS 4096
static unet_status tiff_pages_as_channels(unet_ctx *ctx, const char *path, bool pixels,
                                          unet_image *out) {
    int pages = 0;
    unet_status s = unet__tiff_pages(ctx, path, &pages);
    if (s != UNET_STATUS_OK) return s;
    if (pages > MAX_PAGE_CHANNELS)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: %d pages as channels (channel axis "
                          "first): over the limit of %d", path, pages, MAX_PAGE_CHANNELS);
    unet_image first = {0}, info;
    uint64_t c = 0;
    for (int p = 0; p < pages; p++) {
        s = unet__tiff_load(ctx, path, p, false, &info);
        if (s != UNET_STATUS_OK) return s;
        if (p == 0) first = info;
        if (info.w != first.w || info.h != first.h || info.dtype != first.dtype)
            return unet__fail(ctx, UNET_STATUS_FORMAT,
                              "%s: page %d is %dx%d %s, page 0 %dx%d %s: pages of different "
                              "sizes or sample types cannot be the channels of one image (channel "
                              "axis first)", path, p, info.w, info.h, dtype_name(info.dtype),
                              first.w, first.h, dtype_name(first.dtype));
        c += (uint64_t)info.c;
    }
    s = unet__image_create(ctx, path, (uint64_t)first.w, (uint64_t)first.h, c, first.dtype, out);
    if (s != UNET_STATUS_OK || !pixels) return s;
    s = unet__image_alloc_pixels(ctx, path, out);
    if (s != UNET_STATUS_OK) {
        memset(out, 0, sizeof *out);
        return s;
    }
    size_t plane = (size_t)out->w * (size_t)out->h * unet_dtype_size(out->dtype), at = 0;
    for (int p = 0; p < pages; p++) {
        unet_image page;
        s = unet__tiff_load(ctx, path, p, true, &page);
        /* The headers were read once already; a file changed in between is refused too. */
        if (s == UNET_STATUS_OK && (page.w != out->w || page.h != out->h ||
                                    page.dtype != out->dtype || at + (size_t)page.c > (size_t)out->c))
            s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: page %d changed while reading", path, p);
        if (s != UNET_STATUS_OK) {
            unet_image_free(&page);
            unet_image_free(out);
            return s;
        }
        memcpy((unsigned char *)out->data + at * plane, page.data, (size_t)page.c * plane);
        at += (size_t)page.c;
        unet_image_free(&page);
    }
    return UNET_STATUS_OK;
}

static unet_status tiff_axis(unet_ctx *ctx, const char *path, int axis, bool *pages_as_channels) {
    *pages_as_channels = axis == 0 || axis == -3;
    if (axis == 1 || axis == -2)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: channel axis %d: a TIFF's channels are its "
                          "samples (last) or, with the channel axis first, its pages", path, axis);
    return UNET_STATUS_OK;
}

static unet_status load(unet_ctx *ctx, const char *path, int page, const unet_image_opts *opts,
                        bool pixels, unet_image *out) {
    if (!out) return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_load: path is NULL");
    if (page < 0) return unet__fail(ctx, UNET_STATUS_ARG, "%s: page %d is negative", path, page);
    const unet_image_opts o = opts ? *opts : unet_image_defaults();
    if (!axis_valid(o.channel_axis))
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: channel axis %d: expected -3..2, auto or "
                          "none", path, o.channel_axis);
    enum format fmt;
    unet_status s = sniff(ctx, path, &fmt);
    if (s != UNET_STATUS_OK) return s;
    bool joined = false;
    if (fmt == FORMAT_TIFF && (s = tiff_axis(ctx, path, o.channel_axis, &joined)) != UNET_STATUS_OK)
        return s;
    if ((fmt == FORMAT_PNG || joined) && page != 0)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: page %d requested, the file has one image%s",
                          path, page, joined ? " (its pages are the channels)" : "");
    switch (fmt) {
    case FORMAT_PNG:  return unet__png_load(ctx, path, o.palette_indices != 0, pixels, out);
    case FORMAT_TIFF:
        return joined ? tiff_pages_as_channels(ctx, path, pixels, out)
                      : unet__tiff_load(ctx, path, page, pixels, out);
    case FORMAT_NPY:  return unet__npy_load(ctx, path, page, o.channel_axis, pixels, out);
    case FORMAT_UNKNOWN: break;
    }
    return UNET_STATUS_FORMAT;
}

unet_status unet_image_load_with(unet_ctx *ctx, const char *path, int page,
                                 const unet_image_opts *opts, unet_image *out) {
    return load(ctx, path, page, opts, true, out);
}

unet_status unet_image_info_with(unet_ctx *ctx, const char *path, int page,
                                 const unet_image_opts *opts, unet_image *info) {
    return load(ctx, path, page, opts, false, info);
}

unet_status unet_image_load(unet_ctx *ctx, const char *path, int page, unet_image *out) {
    return load(ctx, path, page, NULL, true, out);
}

unet_status unet_image_info(unet_ctx *ctx, const char *path, int page, unet_image *info) {
    return load(ctx, path, page, NULL, false, info);
}

unet_status unet_image_pages_with(unet_ctx *ctx, const char *path, const unet_image_opts *opts,
                                  int *pages) {
    if (!pages) return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_pages: pages is NULL");
    *pages = 0;
    if (!path) return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_pages: path is NULL");
    const unet_image_opts o = opts ? *opts : unet_image_defaults();
    if (!axis_valid(o.channel_axis))
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: channel axis %d: expected -3..2, auto or "
                          "none", path, o.channel_axis);
    enum format fmt;
    unet_status s = sniff(ctx, path, &fmt);
    if (s != UNET_STATUS_OK) return s;
    bool joined = false;
    switch (fmt) {
    case FORMAT_TIFF:
        if ((s = tiff_axis(ctx, path, o.channel_axis, &joined)) != UNET_STATUS_OK) return s;
        if (!joined) return unet__tiff_pages(ctx, path, pages);
        break;
    case FORMAT_NPY: return unet__npy_pages(ctx, path, o.channel_axis, pages);
    case FORMAT_PNG:
    case FORMAT_UNKNOWN: break;
    }
    *pages = 1;
    return UNET_STATUS_OK;
}

unet_status unet_image_pages(unet_ctx *ctx, const char *path, int *pages) {
    return unet_image_pages_with(ctx, path, NULL, pages);
}

/* ---- choosing and converting channels ---- */

#define MAX_SELECT 64
#define MAX_SPEC_INDEX 4095

/* spec -> gray, or n indices; false with a message on a malformed spec. */
static bool parse_channels(unet_ctx *ctx, const char *spec, bool *gray, int *idx, int *n) {
    *gray = false;
    *n = 0;
    if (!spec || strcmp(spec, "all") == 0) return true;
    if (strcmp(spec, "gray") == 0 || strcmp(spec, "grey") == 0) {
        *gray = true;
        return true;
    }
    const char *p = spec;
    for (;;) {
        if (*p < '0' || *p > '9') break;
        long v = 0;
        while (*p >= '0' && *p <= '9' && v <= MAX_SPEC_INDEX) v = v * 10 + (*p++ - '0');
        if (v > MAX_SPEC_INDEX || *n == MAX_SELECT) break;
        idx[(*n)++] = (int)v;
        if (*p == 0) return true;
        if (*p++ != ',') break;
    }
    unet__fail(ctx, UNET_STATUS_ARG, "channels '%.80s' (expected gray, all, or up to %d channel "
               "numbers 0..%d separated by commas, like 0 or 1,2)", spec, MAX_SELECT, MAX_SPEC_INDEX);
    return false;
}

unet_status unet_channels_count(unet_ctx *ctx, const char *spec, int c, const char *name,
                                int *out) {
    if (!out) return unet__fail(ctx, UNET_STATUS_ARG, "unet_channels_count: out is NULL");
    *out = 0;
    bool gray;
    int idx[MAX_SELECT], n;
    if (!parse_channels(ctx, spec, &gray, idx, &n)) return UNET_STATUS_ARG;
    if (!name) name = "image";
    for (int i = 0; i < n && c > 0; i++)
        if (idx[i] >= c)
            return unet__fail(ctx, UNET_STATUS_SHAPE, "%s has %d channel%s (0..%d): it has no "
                              "channel %d (--channels %s)", name, c, c == 1 ? "" : "s", c - 1,
                              idx[i], spec);
    *out = gray ? 1 : n ? n : c;
    return UNET_STATUS_OK;
}

unet_status unet_image_select_channels(unet_ctx *ctx, unet_image *img, const char *spec,
                                       const char *name) {
    if (!name) name = "image";
    unet_status s = check_image(ctx, name, img);
    if (s != UNET_STATUS_OK) return s;
    bool gray;
    int idx[MAX_SELECT], n, c_out;
    if ((s = unet_channels_count(ctx, spec, img->c, name, &c_out)) != UNET_STATUS_OK) return s;
    parse_channels(ctx, spec, &gray, idx, &n);
    if ((!gray && n == 0) || (gray && img->c == 1)) return UNET_STATUS_OK;
    const size_t plane = (size_t)img->w * img->h, bs = unet_dtype_size(img->dtype);
    unsigned char *dst = unet__alloc(plane * (size_t)c_out * bs);
    if (!dst)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: cannot allocate %d channels of %dx%d", name,
                          c_out, img->w, img->h);
    const unsigned char *src = img->data;
    if (!gray) {
        for (int k = 0; k < n; k++)
            memcpy(dst + (size_t)k * plane * bs, src + (size_t)idx[k] * plane * bs, plane * bs);
    } else {
        /* BT.601 luma for RGB, else the plain mean. */
        static const double bt601[3] = {0.299, 0.587, 0.114};
        const int c = img->c;
        for (size_t i = 0; i < plane; i++) {
            double v = 0.0;
            for (int k = 0; k < c; k++) {
                double x = sample_at(img, (size_t)k * plane + i);
                v += c == 3 ? bt601[k] * x : x;
            }
            if (c != 3) v /= c;
            switch (img->dtype) {
            case UNET_DTYPE_U8: ((uint8_t *)dst)[i] = (uint8_t)lround(v); break;
            case UNET_DTYPE_U16: ((uint16_t *)dst)[i] = (uint16_t)lround(v); break;
            case UNET_DTYPE_I32: ((int32_t *)dst)[i] = (int32_t)lround(v); break;
            case UNET_DTYPE_F32: ((float *)dst)[i] = (float)v; break;
            }
        }
    }
    unet__free(img->data);
    img->data = dst;
    img->c = c_out;
    return UNET_STATUS_OK;
}

static unet_status check_image(unet_ctx *ctx, const char *what, const unet_image *img) {
    if (!img || !img->data)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: image or its data is NULL", what);
    if (img->w < 1 || img->h < 1 || img->c < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: invalid image size %dx%d with %d channels",
                          what, img->w, img->h, img->c);
    if (!dtype_valid(img->dtype))
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: unknown dtype %d", what, (int)img->dtype);
    size_t dims[4] = {(size_t)img->w, (size_t)img->h, (size_t)img->c, 4};
    size_t bytes;
    if (!unet__prod_size(dims, 4, &bytes))
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: image size overflows", what);
    return UNET_STATUS_OK;
}

unet_status unet_image_save(unet_ctx *ctx, const char *path, const unet_image *img) {
    if (!path) return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_save: path is NULL");
    unet_status s = check_image(ctx, path, img);
    if (s != UNET_STATUS_OK) return s;
    char ext[8];
    unet__path_ext(path, ext, sizeof ext);
    enum format fmt = FORMAT_UNKNOWN;
    if (strcmp(ext, "png") == 0) fmt = FORMAT_PNG;
    else if (strcmp(ext, "tif") == 0 || strcmp(ext, "tiff") == 0) fmt = FORMAT_TIFF;
    else if (strcmp(ext, "npy") == 0) fmt = FORMAT_NPY;
    if (fmt == FORMAT_UNKNOWN)
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "%s: unknown extension (expected .png, .tif, .tiff or .npy)", path);
    if (fmt == FORMAT_PNG && ((img->dtype != UNET_DTYPE_U8 && img->dtype != UNET_DTYPE_U16) ||
                              (img->c != 1 && img->c != 3)))
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "%s: PNG holds U8 or U16 with 1 or 3 channels, not %s with %d", path,
                          dtype_name(img->dtype), img->c);
    struct unet__atomic a;
    s = unet__atomic_begin(ctx, &a, path);
    if (s != UNET_STATUS_OK) return s;
    switch (fmt) {
    case FORMAT_PNG:  s = unet__png_save(ctx, path, a.tmp, img); break;
    case FORMAT_TIFF: s = unet__tiff_save(ctx, path, a.tmp, img); break;
    case FORMAT_NPY:  s = unet__npy_save(ctx, path, a.tmp, img); break;
    case FORMAT_UNKNOWN: break;
    }
    if (s != UNET_STATUS_OK) {
        unet__atomic_abort(&a);
        return s;
    }
    return unet__atomic_commit(ctx, &a);
}

/* ---- percentiles ---- */

/* Position of percentile q among n sorted values: index i and fraction f of the way to i+1. */
static void percentile_pos(size_t n, double q, size_t *i, double *f) {
    double pos = (double)(n - 1) * q / 100.0;
    double fl = floor(pos);
    *i = (size_t)fl;
    *f = pos - fl;
    if (*i >= n - 1) {
        *i = n - 1;
        *f = 0.0;
    }
}

/* The k-th smallest value (0-based) counted in a histogram of n values. */
static size_t hist_kth(const size_t *counts, size_t bins, size_t k) {
    size_t cum = 0;
    for (size_t v = 0; v < bins; v++) {
        cum += counts[v];
        if (cum > k) return v;
    }
    return bins - 1;
}

static double hist_percentile(const size_t *counts, size_t bins, size_t n, double q) {
    size_t i;
    double f;
    percentile_pos(n, q, &i, &f);
    double lo = (double)hist_kth(counts, bins, i);
    if (f == 0.0) return lo;
    double hi = (double)hist_kth(counts, bins, i + 1);
    return lo + f * (hi - lo);
}

static void swap_d(double *a, double *b) {
    double t = *a;
    *a = *b;
    *b = t;
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* Reorders a[0..n) so that a[k] is the k-th smallest, everything before it <= a[k] and
 * everything after it >= a[k] (no NaN in a).  Three-way partitions around a median-of-three
 * pivot, so runs of equal values (flat background) cost one pass; after a generous number of
 * rounds it sorts the remaining range, which bounds the worst case by O(n log n). */
static void select_kth(double *a, size_t n, size_t k) {
    size_t lo = 0, hi = n; /* the k-th element lies in [lo, hi) */
    int rounds = 0;
    while (hi - lo > 1) {
        if (++rounds > 64) {
            qsort(a + lo, hi - lo, sizeof *a, cmp_double);
            return;
        }
        size_t mid = lo + (hi - lo) / 2;
        double x = a[lo], y = a[mid], z = a[hi - 1];
        double pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        /* Dutch flag: [lo, lt) < pivot, [lt, i) == pivot, (gt, hi) > pivot. */
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            if (a[i] < pivot) swap_d(&a[lt++], &a[i++]);
            else if (a[i] > pivot) swap_d(&a[i], &a[--gt]);
            else i++;
        }
        if (k < lt) hi = lt;
        else if (k >= gt) lo = gt;
        else return;
    }
}

static double select_percentile(double *a, size_t n, double q) {
    size_t i;
    double f;
    percentile_pos(n, q, &i, &f);
    select_kth(a, n, i);
    double lo = a[i];
    if (f == 0.0) return lo;
    /* After selection everything past i is >= a[i]: the next order statistic is their min. */
    double hi = a[i + 1];
    for (size_t j = i + 2; j < n; j++)
        if (a[j] < hi) hi = a[j];
    return lo + f * (hi - lo);
}

/* The PERCENTILE_LO and PERCENTILE_HI percentiles of channel ch.  Float images use their
 * finite values only (a channel without any gives 0, 0).  scratch: NULL for U8/U16, else
 * h * w doubles; counts: 256 (U8) or 65536 (U16) entries. */
static void channel_percentiles(const unet_image *img, int ch, size_t *counts, double *scratch,
                                double *p_lo, double *p_hi) {
    size_t plane = (size_t)img->w * img->h;
    *p_lo = *p_hi = 0.0;
    if (img->dtype == UNET_DTYPE_U8 || img->dtype == UNET_DTYPE_U16) {
        size_t bins = img->dtype == UNET_DTYPE_U8 ? 256 : 65536;
        memset(counts, 0, bins * sizeof *counts);
        if (img->dtype == UNET_DTYPE_U8) {
            const uint8_t *x = (const uint8_t *)img->data + (size_t)ch * plane;
            for (size_t i = 0; i < plane; i++) counts[x[i]]++;
        } else {
            const uint16_t *x = (const uint16_t *)img->data + (size_t)ch * plane;
            for (size_t i = 0; i < plane; i++) counts[x[i]]++;
        }
        *p_lo = hist_percentile(counts, bins, plane, PERCENTILE_LO);
        *p_hi = hist_percentile(counts, bins, plane, PERCENTILE_HI);
        return;
    }
    size_t n = 0;
    if (img->dtype == UNET_DTYPE_I32) {
        const int32_t *x = (const int32_t *)img->data + (size_t)ch * plane;
        for (size_t i = 0; i < plane; i++) scratch[n++] = x[i];
    } else {
        const float *x = (const float *)img->data + (size_t)ch * plane;
        for (size_t i = 0; i < plane; i++)
            if (isfinite(x[i])) scratch[n++] = x[i];
    }
    if (n == 0) return;
    /* The lower percentile first: selecting the upper one reorders within the range above it,
     * which does not disturb what the lower one needs (it is already computed). */
    *p_lo = select_percentile(scratch, n, PERCENTILE_LO);
    *p_hi = select_percentile(scratch, n, PERCENTILE_HI);
}

static double sample_at(const unet_image *img, size_t i) {
    switch (img->dtype) {
    case UNET_DTYPE_U8:  return ((const uint8_t *)img->data)[i];
    case UNET_DTYPE_U16: return ((const uint16_t *)img->data)[i];
    case UNET_DTYPE_I32: return ((const int32_t *)img->data)[i];
    case UNET_DTYPE_F32: return ((const float *)img->data)[i];
    }
    return 0.0;
}

unet_status unet_image_to_float(unet_ctx *ctx, const unet_image *img, unet_norm norm,
                                float *out) {
    unet_status s = check_image(ctx, "unet_image_to_float", img);
    if (s != UNET_STATUS_OK) return s;
    if (!out) return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_to_float: out is NULL");
    if (norm < UNET_NORM_AUTO || norm > UNET_NORM_NONE)
        return unet__fail(ctx, UNET_STATUS_ARG, "unet_image_to_float: unknown norm %d", (int)norm);
    bool integer8_16 = img->dtype == UNET_DTYPE_U8 || img->dtype == UNET_DTYPE_U16;
    bool percentile = norm == UNET_NORM_PERCENTILE ||
                      (norm == UNET_NORM_AUTO && img->dtype == UNET_DTYPE_U16);
    size_t plane = (size_t)img->w * img->h;
    size_t *counts = NULL;
    double *scratch = NULL;
    if (percentile) {
        if (integer8_16)
            counts = malloc((img->dtype == UNET_DTYPE_U8 ? 256 : 65536) * sizeof *counts);
        else scratch = malloc(plane * sizeof *scratch);
        if (!counts && !scratch)
            return unet__fail(ctx, UNET_STATUS_NOMEM,
                              "unet_image_to_float: cannot allocate percentile scratch");
    }
    for (int ch = 0; ch < img->c; ch++) {
        size_t off = (size_t)ch * plane;
        float *y = out + off;
        if (percentile) {
            double lo, hi;
            channel_percentiles(img, ch, counts, scratch, &lo, &hi);
            if (!(hi > lo)) {
                /* A flat channel has no contrast to stretch: 0 instead of 0 / 0. */
                memset(y, 0, plane * sizeof *y);
                continue;
            }
            double scale = 1.0 / (hi - lo);
            for (size_t i = 0; i < plane; i++) y[i] = (float)((sample_at(img, off + i) - lo) * scale);
            continue;
        }
        float div = 1.0f;
        if ((norm == UNET_NORM_AUTO || norm == UNET_NORM_MAX) && img->dtype == UNET_DTYPE_U8)
            div = 255.0f;
        else if (norm == UNET_NORM_MAX && img->dtype == UNET_DTYPE_U16)
            div = 65535.0f;
        switch (img->dtype) {
        case UNET_DTYPE_U8: {
            const uint8_t *x = (const uint8_t *)img->data + off;
            for (size_t i = 0; i < plane; i++) y[i] = (float)x[i] / div;
            break;
        }
        case UNET_DTYPE_U16: {
            const uint16_t *x = (const uint16_t *)img->data + off;
            for (size_t i = 0; i < plane; i++) y[i] = (float)x[i] / div;
            break;
        }
        case UNET_DTYPE_I32: {
            const int32_t *x = (const int32_t *)img->data + off;
            for (size_t i = 0; i < plane; i++) y[i] = (float)x[i];
            break;
        }
        case UNET_DTYPE_F32:
            memcpy(y, (const float *)img->data + off, plane * sizeof *y);
            break;
        }
    }
    free(counts);
    free(scratch);
    return UNET_STATUS_OK;
}

/* ---- masks ---- */

unet_status unet_mask_to_classes(unet_ctx *ctx, const unet_image *mask, int classes,
                                 const char *name, int32_t *out) {
    if (!name) name = "mask";
    unet_status s = check_image(ctx, name, mask);
    if (s != UNET_STATUS_OK) return s;
    if (!out) return unet__fail(ctx, UNET_STATUS_ARG, "%s: out is NULL", name);
    if (classes < 1 || classes > UNET_MAX_CLASSES)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: classes must be 1..%d, got %d", name,
                          UNET_MAX_CLASSES, classes);
    if (mask->c != 1)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: a mask has 1 channel, this image has %d", name, mask->c);
    size_t n = (size_t)mask->w * mask->h;
    for (size_t i = 0; i < n; i++) {
        double v = sample_at(mask, i);
        if (mask->dtype == UNET_DTYPE_F32 && !(isfinite(v) && floor(v) == v))
            return unet__fail(ctx, UNET_STATUS_FORMAT,
                              "%s: mask value %g at (x=%zu, y=%zu) is not an integer", name, v,
                              i % (size_t)mask->w, i / (size_t)mask->w);
        if (classes <= 2) {
            out[i] = v != 0.0;
            continue;
        }
        if (v < 0 || v >= classes)
            return unet__fail(ctx, UNET_STATUS_FORMAT,
                              "%s: mask value %.0f at (x=%zu, y=%zu) is not a class id in 0..%d",
                              name, v, i % (size_t)mask->w, i / (size_t)mask->w, classes - 1);
        out[i] = (int32_t)v;
    }
    return UNET_STATUS_OK;
}

unet_status unet_mask_labels(unet_ctx *ctx, const unet_image *mask, const char *name,
                             int32_t *labels, int *instances) {
    if (!name) name = "mask";
    unet_status s = check_image(ctx, name, mask);
    if (s != UNET_STATUS_OK) return s;
    if (!labels) return unet__fail(ctx, UNET_STATUS_ARG, "%s: labels is NULL", name);
    if (mask->c != 1)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: a mask has 1 channel, this image has %d", name, mask->c);
    size_t n = (size_t)mask->w * mask->h;
    int32_t first = 0;
    bool several = false;
    for (size_t i = 0; i < n; i++) {
        double v = sample_at(mask, i);
        if (!(v >= 0 && v <= 2147483647.0 && floor(v) == v))
            return unet__fail(ctx, UNET_STATUS_FORMAT,
                              "%s: mask value %g at (x=%zu, y=%zu): labels are integers "
                              "0..2147483647", name, v, i % (size_t)mask->w, i / (size_t)mask->w);
        labels[i] = (int32_t)v;
        if (labels[i]) {
            if (!first) first = labels[i];
            else if (labels[i] != first) several = true;
        }
    }
    if (instances) *instances = several;
    return UNET_STATUS_OK;
}
