/* png.c — PNG reading and writing with libpng.
 *
 * libpng reports errors by calling an error function that must not return; ours stores the
 * message and longjmps back to the setjmp in read_body/write_body.  Everything those bodies
 * acquire lives in a struct png_job owned by the caller, so nothing on their stack has to
 * survive the longjmp (no volatile locals) and the caller frees it on either path.  The
 * warning function stores nothing and prints nothing: the library never prints.
 *
 * Reading asks libpng for 8- or 16-bit gray or RGB rows (a palette expanded to RGB, or read as
 * indices that are mapped to gray when every entry is gray or kept for masks; sub-byte gray
 * expanded, alpha and tRNS dropped, 16-bit samples swapped from the file's big-endian to the
 * host's little-endian) and checks the size against unet_ctx_max_pixels and
 * unet_ctx_max_image_bytes right after the header, and against the IDAT bytes the file holds
 * (deflate expands at most 1032 times), before libpng or we allocate anything per row.
 * Non-interlaced images are read row by row (RGB through one row buffer); interlaced ones
 * need the whole image per pass.  libpng's own width/height limits
 * are lifted so that ours is the one that applies, with our message.
 */
#include "io/file.h"
#include "io/image_formats.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct png_job {
    unet_ctx      *ctx;
    const char    *path;        /* for messages */
    bool           indices;     /* a palette image gives its indices, not its colours */
    char           msg[256];    /* libpng's error message */
    int            err;         /* errno when libpng failed (a write's reason), or 0 */
    FILE          *f;
    unet_image     img;         /* the result while reading */
    unsigned char *buf;         /* interleaved pixels (reading RGB) or one row (writing) */
    png_bytep     *rows;        /* (h) row pointers while reading */
};

static void on_error(png_structp png, png_const_charp msg) {
    struct png_job *j = png_get_error_ptr(png);
    j->err = errno;
    snprintf(j->msg, sizeof j->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* zlib's deflate cannot expand its input more than 1032 times (a 258-byte match costs at least
 * 2 bits); with the zlib header and block overheads a little less.  1032 bounds every IDAT. */
#define DEFLATE_MAX_RATIO 1032

/* The IDAT payload bytes of the PNG in f (its chunks walked by their lengths, no decoding),
 * capped by what the file holds; f is left at offset 0. */
static uint64_t idat_bytes(FILE *f, uint64_t file_size) {
    uint64_t sum = 0, pos = 8;
    unsigned char h[8];
    while (pos + 12 <= file_size && fseek(f, (long)pos, SEEK_SET) == 0 && fread(h, 1, 8, f) == 8) {
        uint64_t len = (uint64_t)h[0] << 24 | (uint64_t)h[1] << 16 | (uint64_t)h[2] << 8 | h[3];
        if (len > 0x7fffffff) break; /* invalid: libpng refuses it */
        uint64_t avail = file_size - pos - 8;
        if (memcmp(h + 4, "IDAT", 4) == 0) sum += len < avail ? len : avail;
        if (memcmp(h + 4, "IEND", 4) == 0) break;
        pos += 12 + len;
    }
    fseek(f, 0, SEEK_SET);
    return sum;
}

/* Splits one interleaved RGB row into row y of the planar image. */
static void split_row(unet_image *img, const unsigned char *row, size_t y) {
    size_t w = (size_t)img->w, plane = w * (size_t)img->h;
    if (img->dtype == UNET_DTYPE_U8) {
        uint8_t *out = (uint8_t *)img->data + y * w;
        for (size_t x = 0; x < w; x++)
            for (size_t ch = 0; ch < 3; ch++) out[ch * plane + x] = row[x * 3 + ch];
    } else {
        uint16_t *out = (uint16_t *)img->data + y * w;
        for (size_t x = 0; x < w; x++)
            for (size_t ch = 0; ch < 3; ch++) memcpy(&out[ch * plane + x], row + (x * 3 + ch) * 2, 2);
    }
}

static unet_status read_body(png_structp png, png_infop info, struct png_job *j, bool pixels,
                             uint64_t file_size) {
    if (setjmp(png_jmpbuf(png)))
        return unet__fail(j->ctx, UNET_STATUS_FORMAT, "%s: invalid PNG: %s", j->path, j->msg);
    uint64_t idat = idat_bytes(j->f, file_size);
    png_init_io(png, j->f);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_read_info(png, info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    int c = (color & PNG_COLOR_MASK_COLOR) ? 3 : 1;
    /* A palette image: its indices when asked for, one gray channel when every entry is gray
     * (r = g = b), else RGB.  (PLTE comes before IDAT, so png_read_info has read it.) */
    uint8_t gray[256] = {0}; /* index -> gray; an index past the palette is black, as libpng's */
    bool map_gray = false;
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_colorp pal = NULL;
        int n_pal = 0;
        if (png_get_PLTE(png, info, &pal, &n_pal) != 0 && n_pal > 0 && n_pal <= 256) {
            map_gray = !j->indices;
            for (int i = 0; i < n_pal && map_gray; i++) {
                map_gray = pal[i].red == pal[i].green && pal[i].green == pal[i].blue;
                gray[i] = pal[i].red;
            }
        }
        if (j->indices || map_gray) c = 1;
    }
    unet_dtype dtype = depth == 16 ? UNET_DTYPE_U16 : UNET_DTYPE_U8;
    unet_status s = unet__image_create(j->ctx, j->path, w, h, (uint64_t)c, dtype, &j->img);
    if (s != UNET_STATUS_OK) return s;
    /* The file must hold the compressed image: at least one bit per sample as stored, shrunk
     * at most DEFLATE_MAX_RATIO times.  (A 168-byte header claiming 16384 x 16384 RGB at 16 bits
     * is refused here instead of allocating 1.6 GB.) */
    double raw = (double)h * ceil((double)w * png_get_channels(png, info) * depth / 8.0);
    if (raw > ((double)idat + 64.0) * DEFLATE_MAX_RATIO)
        return unet__fail(j->ctx, UNET_STATUS_FORMAT,
                          "%s: PNG of %ux%u needs %.0f bytes of pixel data, but its IDAT chunks "
                          "hold %llu compressed bytes (deflate expands at most %d times): a "
                          "truncated or forged file",
                          j->path, (unsigned)w, (unsigned)h, raw, (unsigned long long)idat,
                          DEFLATE_MAX_RATIO);
    if (!pixels) return UNET_STATUS_OK;
    s = unet__image_alloc_pixels(j->ctx, j->path, &j->img);
    if (s != UNET_STATUS_OK) return s;

    if (color == PNG_COLOR_TYPE_PALETTE) {
        if (c == 3) png_set_palette_to_rgb(png);
        else if (depth < 8) png_set_packing(png); /* one index per byte */
    }
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_strip_alpha(png);   /* also the alpha a tRNS chunk would become */
    if (depth == 16) png_set_swap(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);

    size_t bs = unet_dtype_size(dtype);
    size_t row_bytes = (size_t)w * (size_t)c * bs;
    if (png_get_channels(png, info) != c || png_get_bit_depth(png, info) != bs * 8 ||
        png_get_rowbytes(png, info) != row_bytes)
        return unet__fail(j->ctx, UNET_STATUS_FORMAT,
                          "%s: unsupported PNG layout (color type %d, bit depth %d)", j->path,
                          color, depth);
    unsigned char *dst = j->img.data;
    if (passes == 1) {
        /* Row by row: gray rows straight into the image, RGB rows through one row buffer. */
        if (c == 3 && !(j->buf = malloc(row_bytes)))
            return unet__fail(j->ctx, UNET_STATUS_NOMEM, "%s: cannot allocate a PNG row", j->path);
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(png, c == 3 ? j->buf : dst + (size_t)y * row_bytes, NULL);
            if (c == 3) split_row(&j->img, j->buf, y);
        }
    } else {
        /* Interlaced (Adam7): every pass revisits every row, so the whole image is decoded
         * first (RGB interleaved in a second buffer, then split). */
        j->rows = malloc((size_t)h * sizeof *j->rows);
        if (c == 3) dst = j->buf = malloc((size_t)h * row_bytes);
        if (!j->rows || !dst)
            return unet__fail(j->ctx, UNET_STATUS_NOMEM, "%s: cannot allocate PNG rows", j->path);
        for (png_uint_32 y = 0; y < h; y++) j->rows[y] = dst + (size_t)y * row_bytes;
        png_read_image(png, j->rows);
        if (c == 3)
            for (png_uint_32 y = 0; y < h; y++) split_row(&j->img, j->rows[y], y);
    }
    png_read_end(png, NULL);
    if (map_gray) {
        uint8_t *px = j->img.data;
        for (size_t i = 0, n = (size_t)w * h; i < n; i++) px[i] = gray[px[i]];
    }
    return UNET_STATUS_OK;
}

unet_status unet__png_load(unet_ctx *ctx, const char *path, bool palette_indices, bool pixels,
                           unet_image *out) {
    memset(out, 0, sizeof *out);
    struct png_job j;
    memset(&j, 0, sizeof j);
    j.ctx = ctx;
    j.path = path;
    j.indices = palette_indices;
    uint64_t file_size = 0;
    unet_status s = unet__fopen_regular(ctx, path, &j.f, &file_size);
    if (s != UNET_STATUS_OK) return s;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &j, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    s = UNET_STATUS_NOMEM;
    if (png && info) s = read_body(png, info, &j, pixels, file_size);
    else unet__fail(ctx, s, "%s: cannot create the libpng reader", path);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(j.f);
    free(j.rows);
    free(j.buf);
    if (s != UNET_STATUS_OK) {
        unet_image_free(&j.img);
        return s;
    }
    *out = j.img;
    return UNET_STATUS_OK;
}

/* What to write: a planar unet_image (img), or 8-bit rows of interleaved samples (px,
 * channels 1 or 3) or palette indices (channels 0, pal: n_pal RGBA entries). */
struct png_pixels {
    const unet_image *img;
    const uint8_t    *px;
    int               w, h, channels, n_pal;
    const uint8_t (*pal)[4];
};

static unet_status write_body(png_structp png, png_infop info, struct png_job *j,
                              const struct png_pixels *p) {
    if (setjmp(png_jmpbuf(png)))
        return unet__fail(j->ctx, UNET_STATUS_IO, "%s: writing the PNG failed (%s): %s", j->path,
                          j->err ? strerror(j->err) : "libpng", j->msg);
    png_init_io(png, j->f);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    const unet_image *img = p->img;
    int depth = img && img->dtype == UNET_DTYPE_U16 ? 16 : 8, c = img ? img->c : p->channels;
    png_set_IHDR(png, info, (png_uint_32)(img ? img->w : p->w), (png_uint_32)(img ? img->h : p->h),
                 depth, c == 3 ? PNG_COLOR_TYPE_RGB : c == 0 ? PNG_COLOR_TYPE_PALETTE
                                                             : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (c == 0) {
        png_color rgb[256];
        png_byte alpha[256];
        for (int i = 0; i < p->n_pal; i++)
            rgb[i].red = p->pal[i][0], rgb[i].green = p->pal[i][1], rgb[i].blue = p->pal[i][2],
            alpha[i] = p->pal[i][3];
        png_set_PLTE(png, info, rgb, p->n_pal);
        png_set_tRNS(png, info, alpha, p->n_pal, NULL);
        png_set_filter(png, 0, PNG_FILTER_NONE); /* the best filter for palette images */
    }
    png_write_info(png, info);
    if (!img) { /* rows as they are */
        size_t row = (size_t)p->w * (size_t)(c ? c : 1);
        for (int y = 0; y < p->h; y++) png_write_row(png, p->px + (size_t)y * row);
        png_write_end(png, NULL);
        return UNET_STATUS_OK;
    }
    if (depth == 16) png_set_swap(png);
    size_t w = (size_t)img->w, plane = w * (size_t)img->h, nc = (size_t)img->c;
    size_t bs = (size_t)depth / 8;
    j->buf = malloc(w * nc * bs);
    if (!j->buf)
        return unet__fail(j->ctx, UNET_STATUS_NOMEM, "%s: cannot allocate a PNG row", j->path);
    const unsigned char *src = img->data;
    for (size_t y = 0; y < (size_t)img->h; y++) {
        for (size_t x = 0; x < w; x++)
            for (size_t ch = 0; ch < nc; ch++)
                memcpy(j->buf + (x * nc + ch) * bs, src + (ch * plane + y * w + x) * bs, bs);
        png_write_row(png, j->buf);
    }
    png_write_end(png, NULL);
    return UNET_STATUS_OK;
}

/* Writes p to the open file f (name labels messages). */
static unet_status write_file(unet_ctx *ctx, FILE *f, const char *name,
                              const struct png_pixels *p) {
    struct png_job j;
    memset(&j, 0, sizeof j);
    j.ctx = ctx;
    j.path = name;
    j.f = f;
    errno = 0;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &j, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    unet_status s = UNET_STATUS_NOMEM;
    if (png && info) s = write_body(png, info, &j, p);
    else unet__fail(ctx, s, "%s: cannot create the libpng writer", name);
    png_destroy_write_struct(&png, &info);
    free(j.buf);
    return s;
}

unet_status unet__png_save(unet_ctx *ctx, const char *path, const char *tmp,
                           const unet_image *img) {
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return unet__fail(ctx, UNET_STATUS_IO, "%s: cannot open %s: %s", path, tmp,
                          strerror(errno));
    struct png_pixels p = {.img = img};
    unet_status s = write_file(ctx, f, path, &p);
    if (fclose(f) != 0 && s == UNET_STATUS_OK)
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: writing the PNG failed: %s", path,
                       strerror(errno));
    return s;
}

unet_status unet__png_write_rows(unet_ctx *ctx, FILE *f, const char *name, const uint8_t *px,
                                 int w, int h, int channels, const uint8_t (*pal)[4], int n_pal) {
    if (!f || !px || w < 1 || h < 1 || (channels != 0 && channels != 1 && channels != 3) ||
        (channels == 0 && (!pal || n_pal < 1 || n_pal > 256)))
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: png_write_rows: bad arguments", name);
    struct png_pixels p = {NULL, px, w, h, channels, n_pal, pal};
    return write_file(ctx, f, name, &p);
}
