/* npy.c — NumPy .npy reading and writing.
 *
 * Format (numpy/lib/format.py): "\x93NUMPY", major and minor version bytes, the header length
 * (uint16 little-endian in 1.0, uint32 in 2.0 and 3.0), then a Python dict literal such as
 * {'descr': '<f4', 'fortran_order': False, 'shape': (3, 256, 256), } padded with spaces and a
 * newline, then the raw array in C order.
 *
 * The dict is parsed by a small bounded parser (unet__npy_parse_header) that accepts exactly
 * the subset numpy writes: string keys, a type-string descr, True/False and a tuple of
 * non-negative integers; anything else (structured dtypes, unknown keys, duplicates, trailing
 * text) is UNET_STATUS_FORMAT.  Evaluating Python syntax in general is not needed and a
 * general parser is more attack surface.  The data size must equal product(shape) * itemsize
 * exactly (overflow-checked) before anything is allocated; the array is read in 64 KiB chunks
 * when its dtype needs converting (float64 -> F32, int64 -> I32 with a range check), so the
 * peak memory is the image plus one chunk.
 */
#include "io/file.h"
#include "io/image_formats.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c reads little-endian arrays and needs a little-endian host"
#endif

/* Real headers are under 200 bytes; numpy itself refuses more than 10000 by default. */
#define MAX_HEADER_BYTES ((uint32_t)1 << 20)
#define CHUNK_BYTES ((size_t)64 << 10)

/* ---- header parser ---- */

struct cursor {
    const char *p, *start, *end;
};

static void skip_ws(struct cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool accept(struct cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

static bool accept_word(struct cursor *c, const char *word) {
    skip_ws(c);
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return false;
    c->p += n;
    return true;
}

/* A quoted string without escapes, shorter than size. */
static bool parse_string(struct cursor *c, char *out, size_t size) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
    char quote = *c->p++;
    size_t k = 0;
    while (c->p < c->end && *c->p != quote) {
        if (*c->p == '\\' || k + 1 >= size) return false;
        out[k++] = *c->p++;
    }
    if (c->p >= c->end) return false;
    c->p++;
    out[k] = 0;
    return true;
}

/* A non-negative decimal integer <= INT64_MAX / 2 (Python 2 numpy wrote a trailing L). */
static bool parse_int(struct cursor *c, int64_t *v) {
    skip_ws(c);
    int64_t x = 0;
    const char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (x > INT64_MAX / 20) return false;
        x = x * 10 + (*c->p - '0');
        c->p++;
    }
    if (c->p == start) return false;
    if (c->p < c->end && *c->p == 'L') c->p++;
    *v = x;
    return true;
}

static bool parse_shape(struct cursor *c, struct unet__npy_header *h) {
    h->ndim = 0;
    if (!accept(c, '(')) return false;
    if (accept(c, ')')) return true;
    for (;;) {
        if (h->ndim == UNET__NPY_MAX_DIMS) return false;
        if (!parse_int(c, &h->shape[h->ndim])) return false;
        h->ndim++;
        if (accept(c, ')')) return true;
        if (!accept(c, ',')) return false;
        if (accept(c, ')')) return true;
    }
}

static bool parse_fail(struct cursor *c, char *err, size_t err_size, const char *what) {
    snprintf(err, err_size, "%s at byte %zu of the header", what, (size_t)(c->p - c->start));
    return false;
}

bool unet__npy_parse_header(const char *hdr, size_t hlen, struct unet__npy_header *out,
                            char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    struct cursor c = {hdr, hdr, hdr + hlen};
    bool has_descr = false, has_order = false, has_shape = false;
    if (!accept(&c, '{')) return parse_fail(&c, err, err_size, "expected '{'");
    for (;;) {
        if (accept(&c, '}')) break;
        char key[16];
        if (!parse_string(&c, key, sizeof key))
            return parse_fail(&c, err, err_size, "expected a quoted key");
        if (!accept(&c, ':')) return parse_fail(&c, err, err_size, "expected ':'");
        bool dup;
        if (strcmp(key, "descr") == 0) {
            dup = has_descr;
            has_descr = true;
            if (!parse_string(&c, out->descr, sizeof out->descr))
                return parse_fail(&c, err, err_size,
                                  "expected a simple dtype string for 'descr' (like '<f4')");
        } else if (strcmp(key, "fortran_order") == 0) {
            dup = has_order;
            has_order = true;
            if (accept_word(&c, "True")) out->fortran_order = true;
            else if (accept_word(&c, "False")) out->fortran_order = false;
            else return parse_fail(&c, err, err_size, "expected True or False");
        } else if (strcmp(key, "shape") == 0) {
            dup = has_shape;
            has_shape = true;
            if (!parse_shape(&c, out))
                return parse_fail(&c, err, err_size,
                                  "expected a tuple of at most 8 non-negative integers");
        } else {
            return parse_fail(&c, err, err_size, "unknown key");
        }
        if (dup) return parse_fail(&c, err, err_size, "duplicate key");
        if (accept(&c, ',')) continue;
        if (accept(&c, '}')) break;
        return parse_fail(&c, err, err_size, "expected ',' or '}'");
    }
    skip_ws(&c);
    if (c.p != c.end) return parse_fail(&c, err, err_size, "unexpected text after the dictionary");
    if (!has_descr || !has_order || !has_shape) {
        snprintf(err, err_size, "the header lacks '%s'",
                 !has_descr ? "descr" : !has_order ? "fortran_order" : "shape");
        return false;
    }
    return true;
}

/* ---- dtypes ---- */

/* How items become unet's: read in place, integers (signed or not, itemsize bytes) to int32,
 * doubles to float. */
enum conv { CONV_COPY, CONV_INT, CONV_UINT, CONV_F64 };

static const struct {
    const char *descr;
    size_t      itemsize;
    unet_dtype  dtype;
    enum conv   conv;
} dtypes[] = {
    {"|b1", 1, UNET_DTYPE_U8, CONV_COPY},   {"|u1", 1, UNET_DTYPE_U8, CONV_COPY},
    {"|i1", 1, UNET_DTYPE_I32, CONV_INT},   {"<u2", 2, UNET_DTYPE_U16, CONV_COPY},
    {"<i2", 2, UNET_DTYPE_I32, CONV_INT},   {"<u4", 4, UNET_DTYPE_I32, CONV_UINT},
    {"<i4", 4, UNET_DTYPE_I32, CONV_COPY},  {"<u8", 8, UNET_DTYPE_I32, CONV_UINT},
    {"<i8", 8, UNET_DTYPE_I32, CONV_INT},   {"<f4", 4, UNET_DTYPE_F32, CONV_COPY},
    {"<f8", 8, UNET_DTYPE_F32, CONV_F64},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

/* Converts n items of itemsize bytes of src into dst (from index 0); returns the index of the
 * first item that does not fit, or n. */
static size_t convert(void *dst, const unsigned char *src, size_t n, size_t itemsize,
                      enum conv conv) {
    int32_t *d32 = dst;
    float *df = dst;
    for (size_t i = 0; i < n; i++) {
        switch (conv) {
        case CONV_COPY: return n; /* not used: copies are read in place */
        case CONV_INT:
        case CONV_UINT:
            if (!unet__int_sample(src + itemsize * i, itemsize, conv == CONV_INT, &d32[i]))
                return i;
            break;
        case CONV_F64: {
            double v;
            memcpy(&v, src + 8 * i, 8);
            /* Out-of-range double -> float conversion is undefined behaviour in C. */
            if (isfinite(v) && fabs(v) > FLT_MAX) return i;
            df[i] = (float)v;
            break;
        }
        }
    }
    return n;
}

static const char *shape_str(char *buf, size_t size, const struct unet__npy_header *h) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < h->ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, i ? ", %lld" : "(%lld", (long long)h->shape[i]);
    if (k < size) snprintf(buf + k, size - k, h->ndim == 0 ? "()" : h->ndim == 1 ? ",)" : ")");
    return buf;
}

/* ---- reading ---- */

/* An open .npy file whose header is parsed and checked: dtype t, shape, and data that is
 * exactly product(shape) * itemsize bytes from data_start. */
struct npy_file {
    FILE                   *f;
    uint64_t                data_start;
    struct unet__npy_header h;
    size_t                  t;        /* index in dtypes[] */
    char                    shape[160];
};

static unet_status npy_open(unet_ctx *ctx, const char *path, struct npy_file *n) {
    memset(n, 0, sizeof *n);
    uint64_t file_size;
    unet_status s = unet__fopen_regular(ctx, path, &n->f, &file_size);
    if (s != UNET_STATUS_OK) return s;
    char *hdr = NULL;
    unsigned char pre[12];
    if (fread(pre, 1, 10, n->f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: not a .npy file (truncated magic)", path);
        goto done;
    }
    int major = pre[6], minor = pre[7];
    uint64_t prefix = 10, hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
    if (major == 2 || major == 3) {
        if (fread(pre + 10, 1, 2, n->f) != 2) {
            s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: truncated .npy header", path);
            goto done;
        }
        prefix = 12;
        hlen |= (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
    } else if (major != 1) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: .npy version %d.%d is not supported", path,
                       major, minor);
        goto done;
    }
    if (hlen > MAX_HEADER_BYTES || prefix + hlen > file_size) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT,
                       "%s: .npy header of %llu bytes does not fit the file (%llu bytes)", path,
                       (unsigned long long)hlen, (unsigned long long)file_size);
        goto done;
    }
    hdr = malloc((size_t)hlen + 1);
    if (!hdr) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: cannot allocate the .npy header", path);
        goto done;
    }
    if (fread(hdr, 1, (size_t)hlen, n->f) != (size_t)hlen) {
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot read the .npy header", path);
        goto done;
    }
    hdr[hlen] = 0;
    struct unet__npy_header *h = &n->h;
    char err[128];
    if (!unet__npy_parse_header(hdr, (size_t)hlen, h, err, sizeof err)) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: invalid .npy header: %s", path, err);
        goto done;
    }
    shape_str(n->shape, sizeof n->shape, h);
    while (n->t < N_DTYPES && strcmp(dtypes[n->t].descr, h->descr) != 0) n->t++;
    if (n->t == N_DTYPES) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT,
                       "%s: .npy dtype '%s' is not supported (little-endian bool, (u)int8..64, "
                       "float32, float64)",
                       path, h->descr);
        goto done;
    }
    if (h->fortran_order) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT,
                       "%s: .npy array is in Fortran order; save it in C order "
                       "(numpy.ascontiguousarray)",
                       path);
        goto done;
    }
    if (h->ndim != 2 && h->ndim != 3) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT,
                       "%s: .npy shape %s is not (H, W), (C, H, W) or (H, W, C)", path, n->shape);
        goto done;
    }
    size_t dims[UNET__NPY_MAX_DIMS + 1];
    for (int i = 0; i < h->ndim; i++) dims[i] = (size_t)h->shape[i];
    dims[h->ndim] = dtypes[n->t].itemsize;
    size_t nbytes = 0;
    bool fits = unet__prod_size(dims, h->ndim + 1, &nbytes);
    uint64_t data_size = file_size - prefix - hlen;
    if (!fits || (uint64_t)nbytes != data_size) {
        char need[32];
        snprintf(need, sizeof need, fits ? "%zu bytes" : "over 2^64 bytes", nbytes);
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: .npy data is %llu bytes, shape %s of '%s' "
                       "needs %s", path, (unsigned long long)data_size, n->shape, h->descr, need);
        goto done;
    }
    n->data_start = prefix + hlen;
done:
    free(hdr);
    if (s != UNET_STATUS_OK) {
        fclose(n->f);
        n->f = NULL;
    }
    return s;
}

/* Which part of the array is the image, and how: the array's three axes s (a 2-D array is
 * (1, H, W)), the channel axis among them (0, 1, 2; 0 with s[0] = 1 for one channel), and for
 * an array without one (UNET_CHANNEL_AXIS_NONE) its s[0] pages, page `page` being the image. */
struct npy_layout {
    size_t s[3];
    int    axis;
    bool   stack;     /* no channel axis: s[0] one-channel pages */
    int    pages;
};

static unet_status npy_layout(unet_ctx *ctx, const char *path, const struct npy_file *n,
                              int channel_axis, struct npy_layout *L) {
    const struct unet__npy_header *h = &n->h;
    memset(L, 0, sizeof *L);
    L->pages = 1;
    L->s[0] = h->ndim == 3 ? (size_t)h->shape[0] : 1;
    L->s[1] = (size_t)h->shape[h->ndim - 2];
    L->s[2] = (size_t)h->shape[h->ndim - 1];
    int axis;
    unet_status s = unet_channel_axis_of(ctx, h->ndim, h->shape, channel_axis, &axis);
    if (s != UNET_STATUS_OK)
        return unet__fail(ctx, s, "%s: %s", path, unet_ctx_errmsg(ctx));
    if (h->ndim == 3 && axis < 0) {
        if (L->s[0] < 1 || L->s[0] > INT_MAX)
            return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: .npy shape %s: %zu images (no channel "
                              "axis) is not a valid stack", path, n->shape, L->s[0]);
        L->pages = (int)L->s[0];
        L->stack = true;
    }
    L->axis = axis < 0 ? 0 : axis;
    return UNET_STATUS_OK;
}

/* Where the next item of the file goes in a planar (c, h, w) image: counters over the array's
 * axes (a, b, k) of sizes s, in C order. */
struct walk {
    size_t s[3], a, b, k;
    int    axis;
};

static size_t walk_pos(const struct walk *w) {
    switch (w->axis) {
    case 1: return (w->b * w->s[0] + w->a) * w->s[2] + w->k;   /* (H, C, W) */
    case 2: return (w->k * w->s[0] + w->a) * w->s[1] + w->b;   /* (H, W, C) */
    default: return (w->a * w->s[1] + w->b) * w->s[2] + w->k;  /* (C, H, W) */
    }
}

static void walk_next(struct walk *w) {
    if (++w->k < w->s[2]) return;
    w->k = 0;
    if (++w->b < w->s[1]) return;
    w->b = 0;
    w->a++;
}

/* n items of bs bytes from src to their places in dst. */
static void scatter(unsigned char *dst, const unsigned char *src, size_t n, size_t bs,
                    struct walk *w) {
    for (size_t i = 0; i < n; i++, walk_next(w)) {
        size_t at = walk_pos(w);
        switch (bs) {
        case 1: dst[at] = src[i]; break;
        case 2: memcpy(dst + 2 * at, src + 2 * i, 2); break;
        default: memcpy(dst + 4 * at, src + 4 * i, 4); break;
        }
    }
}

unet_status unet__npy_pages(unet_ctx *ctx, const char *path, int channel_axis, int *pages) {
    *pages = 0;
    struct npy_file n;
    unet_status s = npy_open(ctx, path, &n);
    if (s != UNET_STATUS_OK) return s;
    struct npy_layout L;
    s = npy_layout(ctx, path, &n, channel_axis, &L);
    fclose(n.f);
    if (s == UNET_STATUS_OK) *pages = L.pages;
    return s;
}

unet_status unet__npy_load(unet_ctx *ctx, const char *path, int page, int channel_axis,
                           bool pixels, unet_image *out) {
    memset(out, 0, sizeof *out);
    struct npy_file n;
    unet_status s = npy_open(ctx, path, &n);
    if (s != UNET_STATUS_OK) return s;
    unsigned char *chunk = NULL, *conv = NULL;
    struct npy_layout L;
    s = npy_layout(ctx, path, &n, channel_axis, &L);
    if (s != UNET_STATUS_OK) goto done;
    if (page >= L.pages) {
        s = unet__fail(ctx, UNET_STATUS_ARG, "%s: page %d requested, the file has %d image%s",
                       path, page, L.pages, L.pages == 1 ? "" : "s");
        goto done;
    }
    /* The image: one plane of a stack, or the whole array with its channel axis. */
    struct walk w = {{L.s[0], L.s[1], L.s[2]}, 0, 0, 0, L.axis};
    if (L.stack) w.s[0] = 1;
    size_t ch = w.axis == 0 ? w.s[0] : w.axis == 1 ? w.s[1] : w.s[2];
    size_t ih = w.axis == 0 ? w.s[1] : w.s[0], iw = w.axis == 2 ? w.s[1] : w.s[2];
    s = unet__image_create(ctx, path, (uint64_t)iw, (uint64_t)ih, (uint64_t)ch,
                           dtypes[n.t].dtype, out);
    if (s != UNET_STATUS_OK || !pixels) goto done;
    s = unet__image_alloc_pixels(ctx, path, out);
    if (s != UNET_STATUS_OK) goto done;
    const size_t itemsize = dtypes[n.t].itemsize, out_size = unet_dtype_size(dtypes[n.t].dtype);
    const size_t items = w.s[0] * w.s[1] * w.s[2];
    const uint64_t offset = n.data_start + (uint64_t)page * items * itemsize;
    if (fseeko(n.f, (off_t)offset, SEEK_SET) != 0) {
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot seek to the .npy data", path);
        goto done;
    }
    const bool copy = dtypes[n.t].conv == CONV_COPY;
    if (copy && w.axis == 0) { /* the file's order is the image's */
        if (fread(out->data, itemsize, items, n.f) != items)
            s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot read the .npy data", path);
        goto done;
    }
    chunk = malloc(CHUNK_BYTES);
    conv = copy || w.axis == 0 ? NULL : malloc(CHUNK_BYTES);
    if (!chunk || (!copy && w.axis != 0 && !conv)) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: cannot allocate a read buffer", path);
        goto done;
    }
    size_t per_chunk = CHUNK_BYTES / itemsize;
    for (size_t i = 0; i < items; i += per_chunk) {
        size_t k = items - i < per_chunk ? items - i : per_chunk;
        if (fread(chunk, itemsize, k, n.f) != k) {
            s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot read the .npy data", path);
            goto done;
        }
        /* Converted in place when the order is the image's, else through conv. */
        unsigned char *dst = w.axis == 0 ? (unsigned char *)out->data + i * out_size : conv;
        size_t bad = copy ? k : convert(dst, chunk, k, itemsize, dtypes[n.t].conv);
        if (bad != k) {
            s = unet__fail(ctx, UNET_STATUS_FORMAT,
                           "%s: .npy element %zu does not fit in %s", path,
                           (size_t)page * items + i + bad,
                           dtypes[n.t].dtype == UNET_DTYPE_F32 ? "float32" : "int32");
            goto done;
        }
        if (w.axis != 0) scatter(out->data, copy ? chunk : conv, k, out_size, &w);
    }
done:
    fclose(n.f);
    free(chunk);
    free(conv);
    if (s != UNET_STATUS_OK) unet_image_free(out);
    return s;
}

/* ---- writing ---- */

unet_status unet__npy_save(unet_ctx *ctx, const char *path, const char *tmp,
                           const unet_image *img) {
    const int64_t shape[3] = {img->c, img->h, img->w};
    return img->c == 1 ? unet__npy_save_nd(ctx, path, tmp, img->dtype, 2, shape + 1, img->data)
                       : unet__npy_save_nd(ctx, path, tmp, img->dtype, 3, shape, img->data);
}

unet_status unet__npy_save_nd(unet_ctx *ctx, const char *path, const char *tmp, unet_dtype dtype,
                              int ndim, const int64_t *shape, const void *data) {
    const char *descr = dtype == UNET_DTYPE_U8    ? "|u1"
                        : dtype == UNET_DTYPE_U16 ? "<u2"
                        : dtype == UNET_DTYPE_I32 ? "<i4"
                                                  : "<f4";
    char hdr[256], dims[160] = "";
    size_t bytes = unet_dtype_size(dtype);
    for (int d = 0, k = 0; d < ndim && d < UNET__NPY_MAX_DIMS; d++) {
        k += snprintf(dims + k, sizeof dims - (size_t)k, "%s%lld", d ? ", " : "", (long long)shape[d]);
        bytes *= (size_t)shape[d];
    }
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%s%s), }",
                     descr, dims, ndim == 1 ? "," : "");
    /* Pad with spaces so that magic + length + header + '\n' is a multiple of 64, as numpy does
     * (it keeps the data aligned for memory mapping). */
    size_t len = (size_t)n;
    while ((10 + len + 1) % 64 != 0) hdr[len++] = ' ';
    hdr[len++] = '\n';
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(len & 0xff),
                             (unsigned char)(len >> 8)};
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return unet__fail(ctx, UNET_STATUS_IO, "%s: cannot open %s: %s", path, tmp,
                          strerror(errno));
    bool ok = fwrite(pre, 1, sizeof pre, f) == sizeof pre && fwrite(hdr, 1, len, f) == len &&
              fwrite(data, 1, bytes, f) == bytes;
    int err = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (!ok)
        return unet__fail(ctx, UNET_STATUS_IO, "%s: writing the .npy file failed: %s", path,
                          strerror(err));
    return UNET_STATUS_OK;
}
