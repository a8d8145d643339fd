/* test_image_io.c — images and masks: PNG, TIFF and .npy round trips for every dtype and channel
 * count, files written by libpng/libtiff directly in every layout the readers claim (palette,
 * alpha, interlaced, 1-bit, tiles, separate planes, big-endian, LZW/deflate/PackBits,
 * predictors, multi-page, signed and 32-bit samples), .npy files in every accepted dtype and
 * header version, the header parser, percentile normalisation against a brute-force sort,
 * mask rules, the corrupt files in tests/data/corrupt/ plus truncated and mutated files made
 * here, size limits, atomic saving, and (when /work/shared is there) the real datasets.
 *
 * Files are written to a temporary directory that is removed at the end.
 * `test_image_io --write-corrupt DIR` rewrites the committed corrupt files (image_*) into DIR.
 */
#include "harness.h"
#include "io/file.h"
#include "io/image_formats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

/* ---- small helpers ---- */

static size_t image_bytes(const unet_image *img) {
    return (size_t)img->w * img->h * img->c * unet_dtype_size(img->dtype);
}

/* Random samples over the dtype's whole range (finite floats of both signs for F32). */
static unet_image random_image(int w, int h, int c, unet_dtype dtype, uint64_t seed) {
    unet_image img;
    if (unet_image_alloc(NULL, &img, w, h, c, dtype) != UNET_STATUS_OK) {
        fprintf(stderr, "test: out of memory\n");
        exit(2);
    }
    struct unet__rng r;
    unet__rng_seed(&r, seed);
    size_t n = (size_t)w * h * c;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = unet__rng_u64(&r);
        switch (dtype) {
        case UNET_DTYPE_U8: ((uint8_t *)img.data)[i] = (uint8_t)v; break;
        case UNET_DTYPE_U16: ((uint16_t *)img.data)[i] = (uint16_t)v; break;
        case UNET_DTYPE_I32: ((int32_t *)img.data)[i] = (int32_t)(uint32_t)v; break;
        case UNET_DTYPE_F32:
            ((float *)img.data)[i] = (float)((unet__rng_uniform(&r) - 0.5) * pow(10.0, (int)(v % 13) - 6));
            break;
        }
    }
    return img;
}

static bool same_image(const unet_image *a, const unet_image *b) {
    return a->w == b->w && a->h == b->h && a->c == b->c && a->dtype == b->dtype && a->data &&
           b->data && memcmp(a->data, b->data, image_bytes(a)) == 0;
}

#define CHECK_SAME_IMAGE(got, want)                                                            \
    do {                                                                                       \
        const unet_image *g_ = (got), *w_ = (want);                                            \
        if (!same_image(g_, w_))                                                               \
            HARNESS_FAIL_AT(__FILE__, __LINE__,                                                \
                            "images differ: got %dx%dx%d dtype %d, want %dx%dx%d dtype %d",    \
                            g_->w, g_->h, g_->c, (int)g_->dtype, w_->w, w_->h, w_->c,          \
                            (int)w_->dtype);                                                   \
    } while (0)

/* Loads path (page) expecting failure with status want and a message naming the file. */
static void check_load_fails_at(const char *file, int line, const char *path, int page,
                                unet_status want) {
    unet_ctx *ctx = unet_ctx_create();
    unet_image img;
    memset(&img, 0xab, sizeof img);
    unet_status s = unet_image_load(ctx, path, page, &img);
    if (s != want)
        HARNESS_FAIL_AT(file, line, "%s: got status '%s', want '%s' (%s)", path,
                        unet_status_str(s), unet_status_str(want), unet_ctx_errmsg(ctx));
    else if (!strstr(unet_ctx_errmsg(ctx), path))
        HARNESS_FAIL_AT(file, line, "message does not name %s: '%s'", path, unet_ctx_errmsg(ctx));
    if (img.data || img.w || img.h || img.c)
        HARNESS_FAIL_AT(file, line, "%s: *out not zeroed after a failed load", path);
    if (s == UNET_STATUS_OK) unet_image_free(&img);
    unet_ctx_free(ctx);
}
#define CHECK_LOAD_FAILS(path, page, want) check_load_fails_at(__FILE__, __LINE__, path, page, want)

/* Saves img to tmp/name, loads it back (page) and returns the loaded image. */
static unet_image save_load(const char *name, const unet_image *img, int page) {
    char path[512];
    tmp_path(path, sizeof path, name);
    unet_ctx *ctx = unet_ctx_create();
    unet_image got = {0};
    unet_status s = unet_image_save(ctx, path, img);
    if (s != UNET_STATUS_OK) {
        printf("  save %s: %s\n", name, unet_ctx_errmsg(ctx));
        harness_cur_failed++;
    } else if ((s = unet_image_load(ctx, path, page, &got)) != UNET_STATUS_OK) {
        printf("  load %s: %s\n", name, unet_ctx_errmsg(ctx));
        harness_cur_failed++;
    }
    unet_ctx_free(ctx);
    return got;
}

/* ---- PNG written by libpng directly (samples big-endian, as in the file) ---- */

static bool write_png_raw(const char *path, int w, int h, int color, int depth, int interlace,
                          const unsigned char *packed, size_t row_bytes, const png_color *palette,
                          int n_palette, const unsigned char *trns, int n_trns) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    bool ok = false;
    if (setjmp(png_jmpbuf(png)) == 0) {
        png_init_io(png, f);
        png_set_check_for_invalid_index(png, 0); /* a file with an index past its palette */
        png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color, interlace,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        if (palette) png_set_PLTE(png, info, palette, n_palette);
        if (trns) png_set_tRNS(png, info, trns, n_trns, NULL);
        png_write_info(png, info);
        png_bytep *rows = malloc((size_t)h * sizeof *rows);
        for (int y = 0; y < h; y++) rows[y] = (png_bytep)(uintptr_t)(packed + (size_t)y * row_bytes);
        png_write_image(png, rows);
        png_write_end(png, NULL);
        free(rows);
        ok = true;
    }
    png_destroy_write_struct(&png, &info);
    return fclose(f) == 0 && ok;
}

TEST(dtype_and_alloc) {
    CHECK_EQ(unet_dtype_size(UNET_DTYPE_U8), 1);
    CHECK_EQ(unet_dtype_size(UNET_DTYPE_U16), 2);
    CHECK_EQ(unet_dtype_size(UNET_DTYPE_I32), 4);
    CHECK_EQ(unet_dtype_size(UNET_DTYPE_F32), 4);
    CHECK_EQ(unet_dtype_size((unet_dtype)0), 0);
    unet_ctx *ctx = unet_ctx_create();
    unet_image img;
    CHECK_STATUS(unet_image_alloc(ctx, &img, 5, 3, 2, UNET_DTYPE_U16), UNET_STATUS_OK);
    CHECK(img.w == 5 && img.h == 3 && img.c == 2 && img.dtype == UNET_DTYPE_U16 && img.data);
    bool zero = true;
    for (int i = 0; i < 30; i++) zero = zero && ((uint16_t *)img.data)[i] == 0;
    CHECK(zero);
    unet_image_free(&img);
    CHECK(img.data == NULL && img.w == 0);
    unet_image_free(&img);
    unet_image_free(NULL);
    CHECK_STATUS(unet_image_alloc(ctx, &img, 0, 3, 1, UNET_DTYPE_U8), UNET_STATUS_ARG);
    CHECK(img.data == NULL);
    CHECK_STATUS(unet_image_alloc(ctx, &img, 3, 3, 1, (unet_dtype)9), UNET_STATUS_ARG);
    CHECK_STATUS(unet_image_alloc(ctx, &img, INT32_MAX, INT32_MAX, INT32_MAX, UNET_DTYPE_F32),
                 UNET_STATUS_NOMEM);
    CHECK_STATUS(unet_image_alloc(ctx, NULL, 1, 1, 1, UNET_DTYPE_U8), UNET_STATUS_ARG);
    unet_ctx_free(ctx);
}

TEST(png_roundtrip) {
    const unet_dtype dtypes[] = {UNET_DTYPE_U8, UNET_DTYPE_U16};
    for (int d = 0; d < 2; d++) {
        for (int c = 1; c <= 3; c += 2) {
            unet_image img = random_image(37, 23, c, dtypes[d], (uint64_t)(10 * d + c));
            unet_image got = save_load("rt.png", &img, 0);
            CHECK_SAME_IMAGE(&got, &img);
            unet_image_free(&got);
            unet_image_free(&img);
        }
    }
    /* The file holds 16-bit samples big-endian: read it back with libpng, unswapped. */
    unet_image img;
    unet_image_alloc(NULL, &img, 2, 1, 1, UNET_DTYPE_U16);
    ((uint16_t *)img.data)[0] = 0x0102;
    ((uint16_t *)img.data)[1] = 0xfffe;
    unet_image got = save_load("be.png", &img, 0);
    CHECK_SAME_IMAGE(&got, &img);
    char path[512];
    FILE *f = fopen(tmp_path(path, sizeof path, "be.png"), "rb");
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    unsigned char row[4] = {0};
    if (f && setjmp(png_jmpbuf(png)) == 0) {
        png_init_io(png, f);
        png_read_info(png, info);
        png_read_row(png, row, NULL);
    }
    png_destroy_read_struct(&png, &info, NULL);
    if (f) fclose(f);
    CHECK(row[0] == 0x01 && row[1] == 0x02 && row[2] == 0xff && row[3] == 0xfe);
    unet_image_free(&got);
    unet_image_free(&img);
}

/* PNG variants the reader must handle, written with libpng directly. */
TEST(png_variants) {
    char path[512];
    unet_ctx *ctx = unet_ctx_create();
    const int w = 13, h = 7;
    unet_image got = {0};
    unsigned char raw[13 * 7 * 8];
    for (size_t i = 0; i < sizeof raw; i++) raw[i] = (unsigned char)(i * 37 + 11);

    /* 16-bit gray: values are raw[2i] << 8 | raw[2i+1]. */
    tmp_path(path, sizeof path, "g16.png");
    CHECK(write_png_raw(path, w, h, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE, raw, w * 2, NULL,
                        0, NULL, 0));
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK(got.c == 1 && got.dtype == UNET_DTYPE_U16 && got.w == w && got.h == h);
    if (got.data) {
        int bad = 0;
        for (int i = 0; i < w * h; i++)
            bad += ((uint16_t *)got.data)[i] != (raw[2 * i] << 8 | raw[2 * i + 1]);
        CHECK_EQ(bad, 0);
    }
    unet_image_free(&got);

    /* Gray + alpha, 8-bit: alpha dropped. */
    tmp_path(path, sizeof path, "ga8.png");
    CHECK(write_png_raw(path, w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE, raw, w * 2,
                        NULL, 0, NULL, 0));
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK(got.c == 1 && got.dtype == UNET_DTYPE_U8);
    if (got.data) {
        int bad = 0;
        for (int i = 0; i < w * h; i++) bad += ((uint8_t *)got.data)[i] != raw[2 * i];
        CHECK_EQ(bad, 0);
    }
    unet_image_free(&got);

    /* RGBA 16-bit: alpha dropped, planes split, big-endian samples. */
    tmp_path(path, sizeof path, "rgba16.png");
    CHECK(write_png_raw(path, w, h, PNG_COLOR_TYPE_RGB_ALPHA, 16, PNG_INTERLACE_NONE, raw, w * 8,
                        NULL, 0, NULL, 0));
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK(got.c == 3 && got.dtype == UNET_DTYPE_U16);
    if (got.data) {
        int bad = 0;
        for (int i = 0; i < w * h; i++)
            for (int ch = 0; ch < 3; ch++) {
                const unsigned char *s = raw + (size_t)i * 8 + ch * 2;
                bad += ((uint16_t *)got.data)[ch * w * h + i] != (s[0] << 8 | s[1]);
            }
        CHECK_EQ(bad, 0);
    }
    unet_image_free(&got);

    /* Palette with transparency: expanded to RGB, no alpha. */
    png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {10, 200, 30}, {1, 2, 3}};
    unsigned char trns[4] = {0, 255, 128, 7};
    unsigned char idx[13 * 7];
    for (int i = 0; i < w * h; i++) idx[i] = (unsigned char)(i % 4);
    tmp_path(path, sizeof path, "pal.png");
    CHECK(write_png_raw(path, w, h, PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE, idx, w, pal, 4,
                        trns, 4));
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK(got.c == 3 && got.dtype == UNET_DTYPE_U8);
    if (got.data) {
        int bad = 0;
        const uint8_t *p = got.data;
        for (int i = 0; i < w * h; i++)
            bad += p[i] != pal[i % 4].red || p[w * h + i] != pal[i % 4].green ||
                   p[2 * w * h + i] != pal[i % 4].blue;
        CHECK_EQ(bad, 0);
    }
    unet_image_free(&got);

    /* 1-bit gray: expanded to 0/255. */
    unsigned char bits[7 * 2];
    for (int i = 0; i < 14; i++) bits[i] = (unsigned char)(0xa5 ^ (i * 29));
    tmp_path(path, sizeof path, "g1.png");
    CHECK(write_png_raw(path, w, h, PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, bits, 2, NULL, 0,
                        NULL, 0));
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK(got.c == 1 && got.dtype == UNET_DTYPE_U8);
    if (got.data) {
        int bad = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int bit = (bits[y * 2 + x / 8] >> (7 - x % 8)) & 1;
                bad += ((uint8_t *)got.data)[y * w + x] != (bit ? 255 : 0);
            }
        CHECK_EQ(bad, 0);
    }
    unet_image_free(&got);

    /* Interlaced (Adam7) RGB 8-bit. */
    tmp_path(path, sizeof path, "adam7.png");
    CHECK(write_png_raw(path, w, h, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, raw, w * 3, NULL,
                        0, NULL, 0));
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK(got.c == 3 && got.dtype == UNET_DTYPE_U8);
    if (got.data) {
        int bad = 0;
        for (int i = 0; i < w * h; i++)
            for (int ch = 0; ch < 3; ch++)
                bad += ((uint8_t *)got.data)[ch * w * h + i] != raw[i * 3 + ch];
        CHECK_EQ(bad, 0);
    }
    unet_image_free(&got);
    unet_ctx_free(ctx);
}

/* ---- TIFF written by libtiff directly ---- */

struct tiff_spec {
    int      w, h, spp, bps, format;     /* format: SAMPLEFORMAT_* */
    int      planar, compression, predictor;
    int      tile;                       /* tile side (multiple of 16), 0 for strips */
    int      rps;                        /* rows per strip */
    int      photometric;
    int      n_alpha;                    /* trailing alpha extra samples */
    int      pages;
    bool     big_endian;
    bool     bigtiff;
};

static void set_tiff_tags(TIFF *tif, const struct tiff_spec *t) {
    TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, (uint32_t)t->w);
    TIFFSetField(tif, TIFFTAG_IMAGELENGTH, (uint32_t)t->h);
    TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, (uint16_t)t->bps);
    TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, (uint16_t)t->spp);
    TIFFSetField(tif, TIFFTAG_SAMPLEFORMAT, (uint16_t)t->format);
    TIFFSetField(tif, TIFFTAG_PLANARCONFIG, (uint16_t)t->planar);
    TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, (uint16_t)t->photometric);
    TIFFSetField(tif, TIFFTAG_COMPRESSION, (uint16_t)t->compression);
    if (t->predictor) TIFFSetField(tif, TIFFTAG_PREDICTOR, (uint16_t)t->predictor);
    if (t->n_alpha) {
        uint16_t extra[2] = {EXTRASAMPLE_UNASSALPHA, EXTRASAMPLE_ASSOCALPHA};
        TIFFSetField(tif, TIFFTAG_EXTRASAMPLES, (uint16_t)t->n_alpha, extra);
    }
    if (t->photometric == PHOTOMETRIC_PALETTE) {
        static uint16_t map[3][256];
        TIFFSetField(tif, TIFFTAG_COLORMAP, map[0], map[1], map[2]);
    }
    if (t->pages > 1) TIFFSetField(tif, TIFFTAG_SUBFILETYPE, FILETYPE_PAGE);
    if (t->tile) {
        TIFFSetField(tif, TIFFTAG_TILEWIDTH, (uint32_t)t->tile);
        TIFFSetField(tif, TIFFTAG_TILELENGTH, (uint32_t)t->tile);
    } else {
        TIFFSetField(tif, TIFFTAG_ROWSPERSTRIP, (uint32_t)t->rps);
    }
}

/* planar: pages * spp planes of h * w samples of bps/8 bytes, host order. */
static bool write_tiff_raw(const char *path, const struct tiff_spec *t, const unsigned char *planar) {
    TIFF *tif = TIFFOpen(path, t->bigtiff ? (t->big_endian ? "wb8" : "wl8") : t->big_endian ? "wb" : "wl");
    if (!tif) return false;
    size_t bs = (size_t)t->bps / 8, w = (size_t)t->w, h = (size_t)t->h, spp = (size_t)t->spp;
    size_t plane = w * h;
    bool separate = t->planar == PLANARCONFIG_SEPARATE;
    size_t spb = separate ? 1 : spp;
    bool ok = true;
    for (int page = 0; page < t->pages && ok; page++) {
        const unsigned char *src = planar + (size_t)page * spp * plane * bs;
        set_tiff_tags(tif, t);
        size_t bw = t->tile ? (size_t)t->tile : w, bh = t->tile ? (size_t)t->tile : (size_t)t->rps;
        unsigned char *buf = calloc(bw * bh * spb, bs);
        size_t planes = separate ? spp : 1;
        for (size_t p = 0; p < planes && ok; p++) {
            for (size_t y0 = 0; y0 < h && ok; y0 += bh) {
                for (size_t x0 = 0; x0 < w && ok; x0 += bw) {
                    size_t rows = h - y0 < bh ? h - y0 : bh, cols = w - x0 < bw ? w - x0 : bw;
                    memset(buf, 0, bw * bh * spb * bs);
                    for (size_t yy = 0; yy < rows; yy++)
                        for (size_t xx = 0; xx < cols; xx++)
                            for (size_t s = 0; s < spb; s++) {
                                size_t ch = separate ? p : s;
                                memcpy(buf + ((yy * bw + xx) * spb + s) * bs,
                                       src + (ch * plane + (y0 + yy) * w + x0 + xx) * bs, bs);
                            }
                    if (t->tile) {
                        uint32_t tile = TIFFComputeTile(tif, (uint32_t)x0, (uint32_t)y0, 0, (uint16_t)p);
                        ok = TIFFWriteEncodedTile(tif, tile, buf, (tmsize_t)(bw * bh * spb * bs)) >= 0;
                    } else {
                        uint32_t strip = TIFFComputeStrip(tif, (uint32_t)y0, (uint16_t)p);
                        ok = TIFFWriteEncodedStrip(tif, strip, buf, (tmsize_t)(rows * w * spb * bs)) >= 0;
                    }
                }
            }
        }
        free(buf);
        ok = ok && TIFFWriteDirectory(tif);
    }
    TIFFClose(tif);
    return ok;
}

/* Rewrites the single-page little-endian file `le` (made by write_tiff_raw with spec t) as a
 * big-endian file `be` by copying the compressed strips or tiles unchanged.  For the
 * floating-point predictor the encoded bytes do not depend on the file's byte order, and
 * libtiff 4.5 encodes big-endian predictor-3 files wrongly when asked to (it swaps the samples
 * before the predictor), so this is how a correct big-endian predictor-3 file is made. */
static bool rewrite_big_endian(const char *le, const char *be, const struct tiff_spec *t) {
    TIFF *in = TIFFOpen(le, "r");
    TIFF *out = TIFFOpen(be, "wb");
    bool ok = in && out;
    if (ok) {
        set_tiff_tags(out, t);
        uint32_t n = t->tile ? TIFFNumberOfTiles(in) : TIFFNumberOfStrips(in);
        unsigned char *raw = malloc((size_t)1 << 20);
        for (uint32_t i = 0; i < n && ok; i++) {
            tmsize_t k = t->tile ? TIFFReadRawTile(in, i, raw, (tmsize_t)1 << 20)
                                 : TIFFReadRawStrip(in, i, raw, (tmsize_t)1 << 20);
            ok = k > 0 && (t->tile ? TIFFWriteRawTile(out, i, raw, k) : TIFFWriteRawStrip(out, i, raw, k)) == k;
        }
        free(raw);
        ok = ok && TIFFWriteDirectory(out);
    }
    if (in) TIFFClose(in);
    if (out) TIFFClose(out);
    return ok;
}

TEST(tiff_roundtrip) {
    const unet_dtype dtypes[] = {UNET_DTYPE_U8, UNET_DTYPE_U16, UNET_DTYPE_F32, UNET_DTYPE_I32};
    char path[512];
    unet_ctx *ctx = unet_ctx_create();
    for (int d = 0; d < 4; d++) {
        for (int c = 1; c <= 3; c += 2) {
            unet_image img = random_image(37, 23, c, dtypes[d], (uint64_t)(100 + 10 * d + c));
            unet_image got = save_load("rt.tif", &img, 0);
            CHECK_SAME_IMAGE(&got, &img);
            int pages = 0;
            CHECK_STATUS(unet_image_pages(ctx, tmp_path(path, sizeof path, "rt.tif"), &pages),
                         UNET_STATUS_OK);
            CHECK_EQ(pages, 1);
            unet_image_free(&got);
            unet_image_free(&img);
        }
    }
    /* Channel counts other than 1 and 3 become one page per channel (.tiff works too). */
    for (int c = 2; c <= 4; c += 2) {
        unet_image img = random_image(19, 300, c, UNET_DTYPE_U16, (uint64_t)(200 + c));
        CHECK_STATUS(unet_image_save(ctx, tmp_path(path, sizeof path, "pages.tiff"), &img),
                     UNET_STATUS_OK);
        int pages = 0;
        CHECK_STATUS(unet_image_pages(ctx, path, &pages), UNET_STATUS_OK);
        CHECK_EQ(pages, c);
        for (int p = 0; p < c; p++) {
            unet_image got = {0};
            CHECK_STATUS(unet_image_load(ctx, path, p, &got), UNET_STATUS_OK);
            unet_image want = img;
            want.c = 1;
            want.data = (uint16_t *)img.data + (size_t)p * 19 * 300;
            CHECK_SAME_IMAGE(&got, &want);
            unet_image_free(&got);
        }
        CHECK_LOAD_FAILS(path, c, UNET_STATUS_ARG);
        unet_image_free(&img);
    }
    unet_ctx_free(ctx);
}

/* Loads a TIFF written by write_tiff_raw and compares it with the planar samples it was made
 * from: the first c_out planes of page `page`, converted to `dtype`. */
static void check_tiff_case(const char *name, const struct tiff_spec *t, const unsigned char *planar,
                            int page, int c_out, unet_dtype dtype) {
    char path[512];
    tmp_path(path, sizeof path, name);
    bool written;
    if (t->big_endian && t->predictor == 3) {
        char le[512];
        struct tiff_spec t_le = *t;
        t_le.big_endian = false;
        written = write_tiff_raw(tmp_path(le, sizeof le, "le.tif"), &t_le, planar) &&
                  rewrite_big_endian(le, path, t);
    } else {
        written = write_tiff_raw(path, t, planar);
    }
    if (!written) {
        printf("  %s: libtiff could not write the test file\n", name);
        harness_cur_failed++;
        return;
    }
    unet_ctx *ctx = unet_ctx_create();
    unet_image got = {0};
    unet_status s = unet_image_load(ctx, path, page, &got);
    if (s != UNET_STATUS_OK) {
        printf("  %s: %s\n", name, unet_ctx_errmsg(ctx));
        harness_cur_failed++;
        unet_ctx_free(ctx);
        return;
    }
    size_t plane = (size_t)t->w * t->h, bs = (size_t)t->bps / 8, bad = 0;
    const unsigned char *src = planar + (size_t)page * t->spp * plane * bs;
    CHECK(got.w == t->w && got.h == t->h && got.c == c_out && got.dtype == dtype);
    for (size_t i = 0; got.data && got.c == c_out && got.dtype == dtype && i < plane * c_out; i++) {
        const unsigned char *p = src + i * bs;
        double want = 0, have = 0;
        if (t->format == SAMPLEFORMAT_IEEEFP) {
            float v;
            memcpy(&v, p, 4);
            want = v;
        } else if (t->format == SAMPLEFORMAT_INT) {
            int32_t v32;
            int16_t v16;
            if (bs == 1) want = (int8_t)p[0];
            else if (bs == 2) memcpy(&v16, p, 2), want = v16;
            else memcpy(&v32, p, 4), want = v32;
        } else {
            uint32_t v32;
            uint16_t v16;
            if (bs == 1) want = p[0];
            else if (bs == 2) memcpy(&v16, p, 2), want = v16;
            else memcpy(&v32, p, 4), want = v32;
        }
        switch (got.dtype) {
        case UNET_DTYPE_U8: have = ((uint8_t *)got.data)[i]; break;
        case UNET_DTYPE_U16: have = ((uint16_t *)got.data)[i]; break;
        case UNET_DTYPE_I32: have = ((int32_t *)got.data)[i]; break;
        case UNET_DTYPE_F32: have = ((float *)got.data)[i]; break;
        }
        if (have != want && bad++ < 3) printf("  %s[%zu]: got %g, want %g\n", name, i, have, want);
    }
    if (bad) {
        printf("  %s: %zu samples differ\n", name, bad);
        harness_cur_failed++;
    }
    unet_image_free(&got);
    unet_ctx_free(ctx);
}

static unsigned char *random_bytes(size_t n, uint64_t seed) {
    unsigned char *b = malloc(n);
    struct unet__rng r;
    unet__rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)unet__rng_u64(&r);
    return b;
}

TEST(tiff_variants) {
    const int W = 37, H = 23;
    size_t plane = (size_t)W * H;
    unsigned char *u8 = random_bytes(plane * 4 * 3, 1);
    unsigned char *u16 = random_bytes(plane * 4 * 2 * 3, 2);
    /* Floats: finite values from the RNG, not random bit patterns (no NaN). */
    unet_image fimg = random_image(W, H, 3, UNET_DTYPE_F32, 3);
    const unsigned char *f32 = fimg.data;
    struct tiff_spec base = {.w = W, .h = H, .spp = 1, .bps = 8, .format = SAMPLEFORMAT_UINT,
                             .planar = PLANARCONFIG_CONTIG, .compression = COMPRESSION_NONE,
                             .rps = 5, .photometric = PHOTOMETRIC_MINISBLACK, .pages = 1};
    struct tiff_spec t;

    const int comps[] = {COMPRESSION_NONE, COMPRESSION_LZW, COMPRESSION_ADOBE_DEFLATE,
                         COMPRESSION_PACKBITS};
    for (int i = 0; i < 4; i++) {
        t = base;
        t.compression = comps[i];
        check_tiff_case("gray8.tif", &t, u8, 0, 1, UNET_DTYPE_U8);
        t.spp = 3;
        t.photometric = PHOTOMETRIC_RGB;
        check_tiff_case("rgb8.tif", &t, u8, 0, 3, UNET_DTYPE_U8);
        t.bps = 16;
        check_tiff_case("rgb16.tif", &t, u16, 0, 3, UNET_DTYPE_U16);
    }
    t = base;
    t.compression = COMPRESSION_LZW;
    t.predictor = PREDICTOR_HORIZONTAL;
    t.bps = 16;
    check_tiff_case("lzw_pred16.tif", &t, u16, 0, 1, UNET_DTYPE_U16);
    t.big_endian = true;
    check_tiff_case("big_endian16.tif", &t, u16, 0, 1, UNET_DTYPE_U16);
    t.bigtiff = true;
    check_tiff_case("bigtiff_be16.tif", &t, u16, 0, 1, UNET_DTYPE_U16);
    t.big_endian = false;
    check_tiff_case("bigtiff16.tif", &t, u16, 0, 1, UNET_DTYPE_U16);

    /* Tiles (37x23 with 16x16 tiles: partial tiles on the right and bottom). */
    t = base;
    t.tile = 16;
    t.spp = 3;
    t.bps = 16;
    t.photometric = PHOTOMETRIC_RGB;
    t.compression = COMPRESSION_ADOBE_DEFLATE;
    check_tiff_case("tiled_rgb16.tif", &t, u16, 0, 3, UNET_DTYPE_U16);
    t.planar = PLANARCONFIG_SEPARATE;
    t.bps = 32;
    t.format = SAMPLEFORMAT_IEEEFP;
    t.predictor = 3; /* floating-point predictor */
    check_tiff_case("tiled_separate_f32.tif", &t, f32, 0, 3, UNET_DTYPE_F32);
    t.big_endian = true;
    check_tiff_case("tiled_separate_f32_be.tif", &t, f32, 0, 3, UNET_DTYPE_F32);

    /* Separate planes in strips. */
    t = base;
    t.spp = 3;
    t.planar = PLANARCONFIG_SEPARATE;
    t.photometric = PHOTOMETRIC_RGB;
    t.compression = COMPRESSION_LZW;
    check_tiff_case("separate_rgb8.tif", &t, u8, 0, 3, UNET_DTYPE_U8);
    t.rps = H; /* one strip per plane */
    check_tiff_case("separate_rgb8_1strip.tif", &t, u8, 0, 3, UNET_DTYPE_U8);

    /* Alpha dropped: RGBA contiguous, gray + alpha separate. */
    t = base;
    t.spp = 4;
    t.n_alpha = 1;
    t.photometric = PHOTOMETRIC_RGB;
    check_tiff_case("rgba8.tif", &t, u8, 0, 3, UNET_DTYPE_U8);
    t.spp = 2;
    t.photometric = PHOTOMETRIC_MINISBLACK;
    t.planar = PLANARCONFIG_SEPARATE;
    check_tiff_case("gray_alpha8.tif", &t, u8, 0, 1, UNET_DTYPE_U8);
    /* Two samples without alpha are two channels. */
    t.n_alpha = 0;
    t.planar = PLANARCONFIG_CONTIG;
    check_tiff_case("two_samples8.tif", &t, u8, 0, 2, UNET_DTYPE_U8);

    /* Signed and 32-bit integers become I32. */
    t = base;
    t.format = SAMPLEFORMAT_INT;
    check_tiff_case("i8.tif", &t, u8, 0, 1, UNET_DTYPE_I32);
    t.bps = 16;
    check_tiff_case("i16.tif", &t, u16, 0, 1, UNET_DTYPE_I32);
    t.bps = 32;
    check_tiff_case("i32.tif", &t, u16, 0, 1, UNET_DTYPE_I32);
    t.format = SAMPLEFORMAT_UINT;
    uint32_t *u32 = malloc(plane * 4);
    for (size_t i = 0; i < plane; i++) u32[i] = (uint32_t)(i * 2654435761u) & 0x7fffffffu;
    check_tiff_case("u32.tif", &t, (const unsigned char *)u32, 0, 1, UNET_DTYPE_I32);

    /* A 3-page stack of 16-bit gray pages, each page different. */
    t = base;
    t.bps = 16;
    t.pages = 3;
    t.compression = COMPRESSION_ADOBE_DEFLATE;
    for (int p = 0; p < 3; p++) check_tiff_case("stack16.tif", &t, u16, p, 1, UNET_DTYPE_U16);
    char path[512];
    tmp_path(path, sizeof path, "stack16.tif");
    int pages = 0;
    unet_ctx *ctx = unet_ctx_create();
    CHECK_STATUS(unet_image_pages(ctx, path, &pages), UNET_STATUS_OK);
    CHECK_EQ(pages, 3);
    CHECK_LOAD_FAILS(path, 3, UNET_STATUS_ARG);
    CHECK_LOAD_FAILS(path, -1, UNET_STATUS_ARG);

    /* Refused layouts, each with a message naming the file. */
    t = base;
    t.bps = 32;
    u32[5] = 0x80000000u; /* does not fit in int32 */
    tmp_path(path, sizeof path, "u32_big.tif");
    CHECK(write_tiff_raw(path, &t, (const unsigned char *)u32));
    CHECK_LOAD_FAILS(path, 0, UNET_STATUS_FORMAT);
    t = base;
    t.photometric = PHOTOMETRIC_PALETTE;
    CHECK(write_tiff_raw(tmp_path(path, sizeof path, "palette.tif"), &t, u8));
    CHECK_LOAD_FAILS(path, 0, UNET_STATUS_FORMAT);
    t = base;
    t.bps = 64;
    t.format = SAMPLEFORMAT_IEEEFP;
    unsigned char *zeros = calloc(plane, 8);
    CHECK(write_tiff_raw(tmp_path(path, sizeof path, "f64.tif"), &t, zeros));
    CHECK_LOAD_FAILS(path, 0, UNET_STATUS_FORMAT);
    free(zeros);

    unet_ctx_free(ctx);
    free(u8);
    free(u16);
    free(u32);
    unet_image_free(&fimg);
}

/* ---- .npy ---- */

/* Writes a .npy file with the given version, header dict text and data. */
static bool write_npy_raw(const char *path, int major, const char *dict, const void *data,
                          size_t bytes) {
    size_t prefix = major == 1 ? 10 : 12;
    size_t len = strlen(dict);
    char hdr[512];
    memcpy(hdr, dict, len);
    while ((prefix + len + 1) % 64) hdr[len++] = ' ';
    hdr[len++] = '\n';
    unsigned char pre[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
    pre[8] = (unsigned char)len;
    pre[9] = (unsigned char)(len >> 8);
    pre[10] = pre[11] = 0;
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(pre, 1, prefix, f) == prefix && fwrite(hdr, 1, len, f) == len &&
              (bytes == 0 || fwrite(data, 1, bytes, f) == bytes);
    return fclose(f) == 0 && ok;
}

TEST(npy_roundtrip) {
    const unet_dtype dtypes[] = {UNET_DTYPE_U8, UNET_DTYPE_U16, UNET_DTYPE_I32, UNET_DTYPE_F32};
    for (int d = 0; d < 4; d++) {
        for (int c = 1; c <= 4; c++) {
            unet_image img = random_image(37, 23, c, dtypes[d], (uint64_t)(300 + 10 * d + c));
            unet_image got = save_load("rt.npy", &img, 0);
            CHECK_SAME_IMAGE(&got, &img);
            unet_image_free(&got);
            unet_image_free(&img);
        }
    }
    /* The header is exactly what numpy writes (numpy.save of a float32 (23, 37) array). */
    unet_image img = random_image(37, 23, 1, UNET_DTYPE_F32, 7);
    char path[512];
    unet_ctx *ctx = unet_ctx_create();
    CHECK_STATUS(unet_image_save(ctx, tmp_path(path, sizeof path, "hdr.npy"), &img), UNET_STATUS_OK);
    size_t size = 0;
    unsigned char *buf = read_all(path, &size);
    const char *want = "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
                       "'shape': (23, 37), }";
    CHECK(buf && size == 128 + 37 * 23 * 4 && memcmp(buf, want, strlen(want)) == 0 &&
          buf[127] == '\n' && buf[126] == ' ');
    free(buf);
    unet_image_free(&img);
    unet_ctx_free(ctx);
}

TEST(npy_inputs) {
    char path[512];
    unet_ctx *ctx = unet_ctx_create();
    unet_image got = {0};
    tmp_path(path, sizeof path, "in.npy");

    /* float64 (2, 3, 4) -> F32, in a version 2.0 header. */
    double f64[24];
    for (int i = 0; i < 24; i++) f64[i] = i * 0.25 - 3.0 + (i == 5 ? 1e-20 : 0.0);
    CHECK(write_npy_raw(path, 2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3, 4), }",
                        f64, sizeof f64));
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK(got.w == 4 && got.h == 3 && got.c == 2 && got.dtype == UNET_DTYPE_F32);
    for (int i = 0; got.data && i < 24; i++) CHECK_EQ(((float *)got.data)[i] == (float)f64[i], 1);
    unet_image_free(&got);

    /* int64 -> I32 with a range check; version 3.0 and double quotes, odd spacing. */
    int64_t i64[6] = {-5, 0, 7, INT32_MAX, INT32_MIN, 42};
    CHECK(write_npy_raw(path, 3, "{\"descr\":\"<i8\",\"fortran_order\":False,\"shape\":(2,3)}",
                        i64, sizeof i64));
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK(got.w == 3 && got.h == 2 && got.c == 1 && got.dtype == UNET_DTYPE_I32);
    for (int i = 0; got.data && i < 6; i++) CHECK_EQ(((int32_t *)got.data)[i], i64[i]);
    unet_image_free(&got);
    i64[4] = (int64_t)INT32_MIN - 1;
    CHECK(write_npy_raw(path, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }",
                        i64, sizeof i64));
    CHECK_LOAD_FAILS(path, 0, UNET_STATUS_FORMAT);

    /* A finite float64 outside the float32 range is refused, Inf and NaN pass. */
    f64[3] = 1e300;
    CHECK(write_npy_raw(path, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 6), }",
                        f64, sizeof f64));
    CHECK_LOAD_FAILS(path, 0, UNET_STATUS_FORMAT);
    f64[3] = INFINITY;
    f64[4] = NAN;
    CHECK(write_npy_raw(path, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 6), }",
                        f64, sizeof f64));
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK(got.data && isinf(((float *)got.data)[3]) && isnan(((float *)got.data)[4]));
    unet_image_free(&got);

    /* Every other accepted dtype, with Python 2's 3L integers for good measure. */
    static const struct {
        const char *descr;
        int         itemsize;
        unet_dtype  dtype;
    } cases[] = {{"|b1", 1, UNET_DTYPE_U8},  {"|u1", 1, UNET_DTYPE_U8},  {"|i1", 1, UNET_DTYPE_I32},
                 {"<u2", 2, UNET_DTYPE_U16}, {"<i2", 2, UNET_DTYPE_I32}, {"<u4", 4, UNET_DTYPE_I32},
                 {"<i4", 4, UNET_DTYPE_I32}, {"<u8", 8, UNET_DTYPE_I32}, {"<f4", 4, UNET_DTYPE_F32}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        unsigned char data[5 * 3 * 8];
        double want[15];
        for (int i = 0; i < 15; i++) {
            int64_t v = (cases[k].descr[1] == 'i' ? -7 : 0) + i * 3;
            if (cases[k].descr[1] == 'b') v = i % 2;
            want[i] = (double)v;
            if (cases[k].descr[1] == 'f') {
                float fv = (float)v * 0.5f;
                want[i] = fv;
                memcpy(data + 4 * i, &fv, 4);
            } else {
                memcpy(data + (size_t)i * cases[k].itemsize, &v, (size_t)cases[k].itemsize);
            }
        }
        char dict[128];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (3L, 5L), }",
                 cases[k].descr);
        CHECK(write_npy_raw(path, 1, dict, data, (size_t)15 * cases[k].itemsize));
        unet_status s = unet_image_load(ctx, path, 0, &got);
        if (s != UNET_STATUS_OK) printf("  %s: %s\n", cases[k].descr, unet_ctx_errmsg(ctx));
        CHECK_STATUS(s, UNET_STATUS_OK);
        CHECK(got.w == 5 && got.h == 3 && got.c == 1 && got.dtype == cases[k].dtype);
        int bad = 0;
        for (int i = 0; got.data && got.dtype == cases[k].dtype && i < 15; i++) {
            double v = got.dtype == UNET_DTYPE_U8    ? ((uint8_t *)got.data)[i]
                       : got.dtype == UNET_DTYPE_U16 ? ((uint16_t *)got.data)[i]
                       : got.dtype == UNET_DTYPE_I32 ? ((int32_t *)got.data)[i]
                                                     : ((float *)got.data)[i];
            bad += v != want[i];
        }
        CHECK_EQ(bad, 0);
        unet_image_free(&got);
    }

    /* Refused: Fortran order, big-endian, 1-D, 4-D, size mismatch, unknown dtype. */
    float f32[6] = {0};
    static const char *bad_dicts[] = {
        "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
        "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0), }",
        "{'descr': '<c8', 'fortran_order': False, 'shape': (3, 1), }",
        "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2), }",
    };
    for (size_t k = 0; k < sizeof bad_dicts / sizeof bad_dicts[0]; k++) {
        CHECK(write_npy_raw(path, 1, bad_dicts[k], f32, sizeof f32));
        CHECK_LOAD_FAILS(path, 0, UNET_STATUS_FORMAT);
    }
    /* page must be 0 for .npy */
    CHECK(write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                        f32, sizeof f32));
    CHECK_LOAD_FAILS(path, 1, UNET_STATUS_ARG);
    int pages = 0;
    CHECK_STATUS(unet_image_pages(ctx, path, &pages), UNET_STATUS_OK);
    CHECK_EQ(pages, 1);
    unet_ctx_free(ctx);
}

/* The header parser on its own: what numpy writes is accepted, anything else refused. */
TEST(npy_header_parser) {
    static const struct {
        const char *text;
        bool        ok;
        int         ndim;
    } cases[] = {
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }   \n", true, 2},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (), }", true, 0},
        {"{'shape': (1, 2, 3), 'fortran_order': True, 'descr': '<i8'}", true, 3},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }", true, 1},
        {"  {'descr':'<f4','fortran_order':False,'shape':(3,4)}", true, 2},
        {"{'descr': '<f4', 'fortran_order': False}", false, 0},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'x': 1}", false, 0},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}", false, 0},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (3, 4)}", false, 0},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, -4)}", false, 0},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)", false, 0},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)} x", false, 0},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3 4)}", false, 0},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (3, 4)}", false, 0},
        {"{'descr': 'a\\'b', 'fortran_order': False, 'shape': (3, 4)}", false, 0},
        {"{'descr': '<f4444444', 'fortran_order': False, 'shape': (3, 4)}", false, 0},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", false, 0},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1)}", true, 8},
        {"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (3, 4)}", false, 0},
        {"", false, 0},
        {"{", false, 0},
        {"{,}", false, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct unet__npy_header h;
        char err[128] = "";
        bool ok = unet__npy_parse_header(cases[k].text, strlen(cases[k].text), &h, err, sizeof err);
        if (ok != cases[k].ok)
            printf("  case %zu '%s': got %d (%s)\n", k, cases[k].text, ok, err);
        CHECK_EQ(ok, cases[k].ok);
        if (ok && cases[k].ok) CHECK_EQ(h.ndim, cases[k].ndim);
        if (!ok) CHECK(err[0] != 0);
    }
    struct unet__npy_header h;
    char err[128];
    const char *t = "{'descr': '<i8', 'fortran_order': True, 'shape': (10, 20L, 30), }";
    CHECK(unet__npy_parse_header(t, strlen(t), &h, err, sizeof err));
    CHECK(strcmp(h.descr, "<i8") == 0 && h.fortran_order && h.ndim == 3 && h.shape[0] == 10 &&
          h.shape[1] == 20 && h.shape[2] == 30);
    /* Bounds: the parser never reads past hlen (the text continues past the given length). */
    const char *cut = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)}";
    for (size_t n = 0; n < strlen(cut); n++) CHECK(!unet__npy_parse_header(cut, n, &h, err, sizeof err));
}

/* Real .npy files written by numpy 1.24 (tests/data/images/, each made by the command quoted
 * above its check), so the reader is not only tested against our own writer. */
TEST(npy_from_numpy) {
    unet_ctx *ctx = unet_ctx_create();
    unet_image got = {0};
    /* numpy.save('np_f8_chw.npy', numpy.arange(24, dtype=numpy.float64).reshape(2, 3, 4) * 0.5 - 3) */
    CHECK_STATUS(unet_image_load(ctx, "tests/data/images/np_f8_chw.npy", 0, &got), UNET_STATUS_OK);
    CHECK(got.w == 4 && got.h == 3 && got.c == 2 && got.dtype == UNET_DTYPE_F32);
    for (int i = 0; got.data && i < 24; i++) CHECK_EQ(((float *)got.data)[i] == i * 0.5f - 3, 1);
    unet_image_free(&got);
    /* numpy.save('np_bool.npy', numpy.arange(12).reshape(3, 4) % 3 == 0) */
    CHECK_STATUS(unet_image_load(ctx, "tests/data/images/np_bool.npy", 0, &got), UNET_STATUS_OK);
    CHECK(got.w == 4 && got.h == 3 && got.c == 1 && got.dtype == UNET_DTYPE_U8);
    for (int i = 0; got.data && i < 12; i++) CHECK_EQ(((uint8_t *)got.data)[i], i % 3 == 0);
    unet_image_free(&got);
    /* numpy.save('np_u2.npy', (numpy.arange(6, dtype=numpy.uint16) * 10000).reshape(2, 3)) */
    CHECK_STATUS(unet_image_load(ctx, "tests/data/images/np_u2.npy", 0, &got), UNET_STATUS_OK);
    CHECK(got.w == 3 && got.h == 2 && got.c == 1 && got.dtype == UNET_DTYPE_U16);
    for (int i = 0; got.data && i < 6; i++) CHECK_EQ(((uint16_t *)got.data)[i], i * 10000);
    unet_image_free(&got);
    unet_ctx_free(ctx);
}

/* ---- float conversion ---- */

/* ---- channel layouts (docs/images.md#channels) ---- */

/* The planar image a (A, B, C) array of dtype u8 gives with the channel axis k. */
static void expect_planar(const uint8_t *arr, const size_t s[3], int k, uint8_t *out) {
    for (size_t a = 0; a < s[0]; a++)
        for (size_t b = 0; b < s[1]; b++)
            for (size_t c = 0; c < s[2]; c++) {
                size_t at = k == 0   ? (a * s[1] + b) * s[2] + c
                            : k == 1 ? (b * s[0] + a) * s[2] + c
                                     : (c * s[0] + a) * s[1] + b;
                out[at] = arr[(a * s[1] + b) * s[2] + c];
            }
}

/* Loads path under channel_axis (page 0) and checks its size against the header-only answer. */
static unet_image load_axis(unet_ctx *ctx, const char *path, int axis, int page, unet_status want) {
    unet_image_opts o = unet_image_defaults();
    o.channel_axis = axis;
    unet_image got = {0}, info = {0};
    unet_status s = unet_image_load_with(ctx, path, page, &o, &got);
    if (s != want) {
        printf("  %s axis %d page %d: got '%s' (%s), want '%s'\n", path, axis, page,
               unet_status_str(s), unet_ctx_errmsg(ctx), unet_status_str(want));
        harness_cur_failed++;
    }
    if (s == UNET_STATUS_OK) {
        CHECK_STATUS(unet_image_info_with(ctx, path, page, &o, &info), UNET_STATUS_OK);
        CHECK(info.w == got.w && info.h == got.h && info.c == got.c && info.data == NULL);
    }
    return got;
}

/* The rule for 3-D .npy files and every explicit axis, through the copy path (u8), a
 * converting path (float64, int64) and pages of a stack; the same for the header alone. */
TEST(channel_layouts) {
    unet_ctx *ctx = unet_ctx_create();
    char path[512];
    static const struct {
        size_t s[3];
        int    rule;    /* the axis the rule picks */
    } shapes[] = {{{6, 5, 3}, 2}, {{6, 5, 4}, 2}, {{3, 6, 5}, 0}, {{6, 5, 5}, 0},
                  {{3, 6, 3}, 0}, {{4, 4, 4}, 0}, {{2, 7, 1}, 2}, {{1, 6, 5}, 0}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const size_t *s = shapes[i].s;
        size_t n = s[0] * s[1] * s[2];
        uint8_t *arr = malloc(n), *want = malloc(n);
        double *f8 = malloc(n * sizeof *f8);
        int64_t *i8 = malloc(n * sizeof *i8);
        for (size_t k = 0; k < n; k++) arr[k] = (uint8_t)(k * 7 + 3), f8[k] = arr[k], i8[k] = arr[k];
        const int64_t shape[3] = {(int64_t)s[0], (int64_t)s[1], (int64_t)s[2]};
        int axis = -9;
        CHECK_STATUS(unet_channel_axis_of(ctx, 3, shape, UNET_CHANNEL_AXIS_AUTO, &axis), UNET_STATUS_OK);
        CHECK_EQ(axis, shapes[i].rule);
        char dict[160];
        snprintf(dict, sizeof dict, "{'descr': '%%s', 'fortran_order': False, 'shape': (%zu, %zu, %zu), }",
                 s[0], s[1], s[2]);
        const char *descr[3] = {"|u1", "<f8", "<i8"};
        const void *data[3] = {arr, f8, i8};
        const size_t size[3] = {1, 8, 8};
        for (int d = 0; d < 3; d++) {
            char hdr[200];
            snprintf(hdr, sizeof hdr, dict, descr[d]);
            tmp_path(path, sizeof path, "layout.npy");
            CHECK(write_npy_raw(path, d == 1 ? 2 : 1, hdr, data[d], n * size[d]));
            const int axes[] = {UNET_CHANNEL_AXIS_AUTO, 0, 1, 2, -1, -2, -3};
            for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++) {
                int k = axes[a] == UNET_CHANNEL_AXIS_AUTO ? shapes[i].rule
                                                          : (axes[a] + 3) % 3;
                unet_image got = load_axis(ctx, path, axes[a], 0, UNET_STATUS_OK);
                expect_planar(arr, s, k, want);
                size_t ch = s[k], hh = s[k == 0 ? 1 : 0], ww = s[k == 2 ? 1 : 2];
                CHECK(got.c == (int)ch && got.h == (int)hh && got.w == (int)ww);
                size_t bad = 0;
                for (size_t j = 0; got.data && j < n; j++) {
                    double v = got.dtype == UNET_DTYPE_U8    ? ((uint8_t *)got.data)[j]
                               : got.dtype == UNET_DTYPE_F32 ? ((float *)got.data)[j]
                                                             : ((int32_t *)got.data)[j];
                    bad += v != want[j];
                }
                if (bad) printf("  shape (%zu, %zu, %zu) %s axis %d: %zu samples misplaced\n", s[0],
                                s[1], s[2], descr[d], axes[a], bad);
                CHECK_EQ(bad, 0);
                unet_image_free(&got);
            }
            /* No channel axis: s[0] one-channel pages. */
            unet_image_opts none = {UNET_CHANNEL_AXIS_NONE, 0};
            int pages = 0;
            CHECK_STATUS(unet_image_pages_with(ctx, path, &none, &pages), UNET_STATUS_OK);
            CHECK_EQ(pages, (int)s[0]);
            CHECK_STATUS(unet_image_pages(ctx, path, &pages), UNET_STATUS_OK);
            CHECK_EQ(pages, 1);
            for (int p = 0; p < (int)s[0]; p++) {
                unet_image got = load_axis(ctx, path, UNET_CHANNEL_AXIS_NONE, p, UNET_STATUS_OK);
                CHECK(got.c == 1 && got.h == (int)s[1] && got.w == (int)s[2]);
                size_t bad = 0;
                for (size_t j = 0; got.data && j < s[1] * s[2]; j++) {
                    double v = got.dtype == UNET_DTYPE_U8    ? ((uint8_t *)got.data)[j]
                               : got.dtype == UNET_DTYPE_F32 ? ((float *)got.data)[j]
                                                             : ((int32_t *)got.data)[j];
                    bad += v != arr[(size_t)p * s[1] * s[2] + j];
                }
                CHECK_EQ(bad, 0);
                unet_image_free(&got);
            }
            load_axis(ctx, path, UNET_CHANNEL_AXIS_NONE, (int)s[0], UNET_STATUS_ARG);
            CHECK(strstr(unet_ctx_errmsg(ctx), path) != NULL);
            load_axis(ctx, path, 0, 1, UNET_STATUS_ARG);
            load_axis(ctx, path, 3, 0, UNET_STATUS_ARG);
            load_axis(ctx, path, -4, 0, UNET_STATUS_ARG);
        }
        free(arr), free(want), free(f8), free(i8);
    }
    /* A 2-D array has no open axis: one channel whatever is asked. */
    unet_image img = random_image(7, 5, 1, UNET_DTYPE_U16, 3);
    tmp_path(path, sizeof path, "two_d.npy");
    CHECK_STATUS(unet_image_save(ctx, path, &img), UNET_STATUS_OK);
    const int axes[] = {UNET_CHANNEL_AXIS_AUTO, UNET_CHANNEL_AXIS_NONE, 0, 1, 2, -1};
    for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++) {
        unet_image got = load_axis(ctx, path, axes[a], 0, UNET_STATUS_OK);
        CHECK_SAME_IMAGE(&got, &img);
        unet_image_free(&got);
    }
    unet_image_free(&img);
    /* Names. */
    static const struct {
        const char *text;
        int         axis;
        const char *name;
    } names[] = {{"auto", UNET_CHANNEL_AXIS_AUTO, "auto"}, {"none", UNET_CHANNEL_AXIS_NONE, "none"},
                 {"first", 0, "first"}, {"last", -1, "last"}, {"0", 0, "first"},
                 {"-1", -1, "last"}, {"1", 1, "1"}, {"2", 2, "2"}, {"-3", -3, "-3"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int a = 77;
        char buf[8];
        CHECK_STATUS(unet_channel_axis_parse(ctx, names[i].text, &a), UNET_STATUS_OK);
        CHECK_EQ(a, names[i].axis);
        CHECK(strcmp(unet_channel_axis_name(a, buf), names[i].name) == 0);
    }
    const char *bad[] = {"", "3", "-4", "middle", "1x", "Last"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int a = 77;
        CHECK_STATUS(unet_channel_axis_parse(ctx, bad[i], &a), UNET_STATUS_ARG);
        CHECK_EQ(a, 77);
    }
    unet_ctx_free(ctx);
}

/* A TIFF's pages as the channels of one image (channel axis first); pages that differ are
 * refused, and axis 1 is no TIFF axis. */
TEST(tiff_pages_as_channels) {
    unet_ctx *ctx = unet_ctx_create();
    char path[512];
    tmp_path(path, sizeof path, "pages3.tif");
    struct tiff_spec t = {.w = 9, .h = 7, .spp = 1, .bps = 16, .format = SAMPLEFORMAT_UINT,
                          .planar = PLANARCONFIG_CONTIG, .compression = COMPRESSION_ADOBE_DEFLATE,
                          .rps = 3, .photometric = PHOTOMETRIC_MINISBLACK, .pages = 3};
    unsigned char *planes = random_bytes(9 * 7 * 2 * 3, 21);
    CHECK(write_tiff_raw(path, &t, planes));
    int pages = 0;
    unet_image_opts first = {0, 0};
    CHECK_STATUS(unet_image_pages_with(ctx, path, &first, &pages), UNET_STATUS_OK);
    CHECK_EQ(pages, 1);
    CHECK_STATUS(unet_image_pages(ctx, path, &pages), UNET_STATUS_OK);
    CHECK_EQ(pages, 3);
    unet_image got = load_axis(ctx, path, 0, 0, UNET_STATUS_OK);
    CHECK(got.c == 3 && got.w == 9 && got.h == 7 && got.dtype == UNET_DTYPE_U16);
    CHECK(got.data && memcmp(got.data, planes, 9 * 7 * 2 * 3) == 0);
    unet_image_free(&got);
    got = load_axis(ctx, path, -3, 0, UNET_STATUS_OK);
    CHECK_EQ(got.c, 3);
    unet_image_free(&got);
    /* last, none and auto: samples are channels, pages are images. */
    const int axes[] = {UNET_CHANNEL_AXIS_AUTO, UNET_CHANNEL_AXIS_NONE, -1, 2};
    for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++) {
        got = load_axis(ctx, path, axes[a], 2, UNET_STATUS_OK);
        CHECK(got.c == 1 && got.data && memcmp(got.data, planes + 2 * 9 * 7 * 2, 9 * 7 * 2) == 0);
        unet_image_free(&got);
    }
    load_axis(ctx, path, 1, 0, UNET_STATUS_ARG);
    CHECK(strstr(unet_ctx_errmsg(ctx), "a TIFF's channels are its samples") != NULL);
    load_axis(ctx, path, 0, 1, UNET_STATUS_ARG);
    /* RGB pages: their samples in page order. */
    struct tiff_spec rgb = t;
    rgb.spp = 3, rgb.pages = 2, rgb.photometric = PHOTOMETRIC_RGB, rgb.bps = 8;
    unsigned char *rgbp = random_bytes(9 * 7 * 3 * 2, 22);
    tmp_path(path, sizeof path, "rgb2.tif");
    CHECK(write_tiff_raw(path, &rgb, rgbp));
    got = load_axis(ctx, path, 0, 0, UNET_STATUS_OK);
    CHECK(got.c == 6 && got.data && memcmp(got.data, rgbp, 9 * 7 * 6) == 0);
    unet_image_free(&got);
    /* Pages of different sizes cannot be channels. */
    tmp_path(path, sizeof path, "mixed.tif");
    TIFF *tif = TIFFOpen(path, "w");
    for (int p = 0; p < 2; p++) {
        struct tiff_spec q = t;
        q.w = 9 + p, q.pages = 2;
        set_tiff_tags(tif, &q);
        uint16_t row[16] = {0};
        for (int y = 0; y < q.h; y++) TIFFWriteScanline(tif, row, (uint32_t)y, 0);
        TIFFWriteDirectory(tif);
    }
    TIFFClose(tif);
    load_axis(ctx, path, 0, 0, UNET_STATUS_FORMAT);
    CHECK(strstr(unet_ctx_errmsg(ctx), "page 1 is 10x7 U16, page 0 9x7 U16") != NULL);
    got = load_axis(ctx, path, UNET_CHANNEL_AXIS_AUTO, 1, UNET_STATUS_OK);
    CHECK_EQ(got.w, 10);
    unet_image_free(&got);
    free(planes);
    free(rgbp);
    unet_ctx_free(ctx);
}

/* Palette PNGs: a gray palette is one channel of its gray levels, a colour palette RGB; with
 * palette_indices (masks) both give their indices.  1-, 2-, 4- and 8-bit indices, an index past
 * the palette (black, as libpng expands it). */
TEST(palette_pngs) {
    unet_ctx *ctx = unet_ctx_create();
    char path[512];
    const int w = 11, h = 5;
    for (int depth = 1; depth <= 8; depth *= 2) {
        int n_pal = 1 << depth < 6 ? 1 << depth : 6;
        png_color gray[6], color[6];
        for (int i = 0; i < n_pal; i++) {
            uint8_t v = (uint8_t)(17 + 40 * i);
            gray[i] = (png_color){v, v, v};
            color[i] = (png_color){v, (uint8_t)(255 - v), (uint8_t)(i * 3)};
        }
        uint8_t idx[11 * 5];
        for (int i = 0; i < w * h; i++)
            idx[i] = (uint8_t)((i * 5 + 1) % (depth == 8 ? 8 : 1 << depth)); /* 8-bit: past 6 too */
        size_t row_bytes = ((size_t)w * depth + 7) / 8;
        unsigned char packed[11 * 5];
        memset(packed, 0, sizeof packed);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int bit = x * depth;
                packed[y * row_bytes + bit / 8] |=
                    (unsigned char)(idx[y * w + x] << (8 - depth - bit % 8));
            }
        for (int colored = 0; colored < 2; colored++) {
            tmp_path(path, sizeof path, colored ? "pal_color.png" : "pal_gray.png");
            CHECK(write_png_raw(path, w, h, PNG_COLOR_TYPE_PALETTE, depth, PNG_INTERLACE_NONE,
                                packed, row_bytes, colored ? color : gray, n_pal, NULL, 0));
            for (int indices = 0; indices < 2; indices++) {
                unet_image_opts o = {UNET_CHANNEL_AXIS_AUTO, indices};
                unet_image got = {0}, info = {0};
                CHECK_STATUS(unet_image_load_with(ctx, path, 0, &o, &got), UNET_STATUS_OK);
                CHECK_STATUS(unet_image_info_with(ctx, path, 0, &o, &info), UNET_STATUS_OK);
                int c = indices || !colored ? 1 : 3;
                CHECK(got.c == c && info.c == c && got.dtype == UNET_DTYPE_U8);
                size_t bad = 0;
                for (int i = 0; got.data && i < w * h; i++)
                    for (int ch = 0; ch < c; ch++) {
                        int k = idx[i];
                        png_color e = k < n_pal ? (colored ? color[k] : gray[k]) : (png_color){0, 0, 0};
                        int want = indices ? k : ch == 0 ? e.red : ch == 1 ? e.green : e.blue;
                        bad += ((uint8_t *)got.data)[(size_t)ch * w * h + i] != want;
                    }
                if (bad) printf("  depth %d colored %d indices %d: %zu wrong\n", depth, colored,
                                indices, bad);
                CHECK_EQ(bad, 0);
                unet_image_free(&got);
            }
        }
    }
    unet_ctx_free(ctx);
}

/* unet_image_select_channels: BT.601 luma of RGB, the mean of other counts, index lists;
 * errors leave the image as it was. */
TEST(select_channels) {
    unet_ctx *ctx = unet_ctx_create();
    const unet_dtype dtypes[] = {UNET_DTYPE_U8, UNET_DTYPE_U16, UNET_DTYPE_I32, UNET_DTYPE_F32};
    for (size_t d = 0; d < 4; d++) {
        for (int c = 1; c <= 4; c++) {
            unet_image img = random_image(6, 4, c, dtypes[d], 40 + (uint64_t)c);
            unet_image gray = random_image(6, 4, c, dtypes[d], 40 + (uint64_t)c);
            CHECK_STATUS(unet_image_select_channels(ctx, &gray, "gray", "x.png"), UNET_STATUS_OK);
            CHECK(gray.c == 1 && gray.dtype == dtypes[d]);
            size_t plane = 24, bad = 0;
            for (size_t i = 0; i < plane; i++) {
                double v = 0, got;
                for (int k = 0; k < c; k++) {
                    double x;
                    switch (dtypes[d]) {
                    case UNET_DTYPE_U8: x = ((uint8_t *)img.data)[k * plane + i]; break;
                    case UNET_DTYPE_U16: x = ((uint16_t *)img.data)[k * plane + i]; break;
                    case UNET_DTYPE_I32: x = ((int32_t *)img.data)[k * plane + i]; break;
                    default: x = ((float *)img.data)[k * plane + i]; break;
                    }
                    v += c == 3 ? (k == 0 ? 0.299 : k == 1 ? 0.587 : 0.114) * x : x / c;
                }
                switch (dtypes[d]) {
                case UNET_DTYPE_U8: got = ((uint8_t *)gray.data)[i]; v = floor(v + 0.5); break;
                case UNET_DTYPE_U16: got = ((uint16_t *)gray.data)[i]; v = floor(v + 0.5); break;
                case UNET_DTYPE_I32: got = ((int32_t *)gray.data)[i]; v = v < 0 ? -floor(-v + 0.5) : floor(v + 0.5); break;
                default: got = ((float *)gray.data)[i]; v = (float)v; break;
                }
                bad += got != v;
            }
            if (bad) printf("  gray of %d channels, dtype %d: %zu wrong\n", c, (int)dtypes[d], bad);
            CHECK_EQ(bad, 0);
            unet_image_free(&gray);
            /* "c-1,0": the last channel then the first; repeats are allowed. */
            char spec[16];
            snprintf(spec, sizeof spec, "%d,0,0", c - 1);
            unet_image sel = random_image(6, 4, c, dtypes[d], 40 + (uint64_t)c);
            int count = 0;
            CHECK_STATUS(unet_channels_count(ctx, spec, c, "x.png", &count), UNET_STATUS_OK);
            CHECK_EQ(count, 3);
            CHECK_STATUS(unet_image_select_channels(ctx, &sel, spec, "x.png"), UNET_STATUS_OK);
            size_t bs = unet_dtype_size(dtypes[d]);
            const unsigned char *a = img.data, *b = sel.data;
            CHECK(sel.c == 3 && memcmp(b, a + (size_t)(c - 1) * plane * bs, plane * bs) == 0 &&
                  memcmp(b + plane * bs, a, plane * bs) == 0 &&
                  memcmp(b + 2 * plane * bs, a, plane * bs) == 0);
            unet_image_free(&sel);
            /* all and NULL: unchanged. */
            sel = random_image(6, 4, c, dtypes[d], 40 + (uint64_t)c);
            CHECK_STATUS(unet_image_select_channels(ctx, &sel, "all", "x.png"), UNET_STATUS_OK);
            CHECK_STATUS(unet_image_select_channels(ctx, &sel, NULL, "x.png"), UNET_STATUS_OK);
            CHECK_SAME_IMAGE(&sel, &img);
            /* A channel the image lacks: SHAPE naming the file; the image is unchanged. */
            snprintf(spec, sizeof spec, "0,%d", c);
            CHECK_STATUS(unet_image_select_channels(ctx, &sel, spec, "x.png"), UNET_STATUS_SHAPE);
            CHECK(strstr(unet_ctx_errmsg(ctx), "x.png has") != NULL);
            CHECK_SAME_IMAGE(&sel, &img);
            unet_image_free(&sel);
            unet_image_free(&img);
        }
    }
    /* RGB 8-bit: the luma of pure colours is PIL's convert("L"). */
    unet_image rgb;
    CHECK_STATUS(unet_image_alloc(ctx, &rgb, 3, 1, 3, UNET_DTYPE_U8), UNET_STATUS_OK);
    uint8_t *px = rgb.data;
    px[0] = 255, px[3 + 1] = 255, px[6 + 2] = 255;      /* red, green, blue */
    CHECK_STATUS(unet_image_select_channels(ctx, &rgb, "gray", NULL), UNET_STATUS_OK);
    px = rgb.data;
    CHECK(px[0] == 76 && px[1] == 150 && px[2] == 29);  /* PIL: 76, 150, 29 */
    unet_image_free(&rgb);
    /* The last: 65 channels, one over the limit. */
    static const char too_many[] = "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
                                   "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0";
    const char *bad[] = {"", "grey2", "0,", ",1", "1,,2", "a", "-1", "4096", "1;2", " 1", too_many};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int count = 9;
        CHECK_STATUS(unet_channels_count(ctx, bad[i], 0, NULL, &count), UNET_STATUS_ARG);
        CHECK_EQ(count, 0);
    }
    int count = 0;
    CHECK_STATUS(unet_channels_count(ctx, "4095,0", 0, NULL, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 2);
    CHECK_STATUS(unet_channels_count(ctx, "grey", 7, NULL, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 1);
    CHECK_STATUS(unet_channels_count(ctx, NULL, 7, NULL, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 7);
    unet_ctx_free(ctx);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy.percentile(v, q) with the default linear method, by sorting. */
static double brute_percentile(const double *v, size_t n, double q) {
    double *s = malloc(n * sizeof *s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    double pos = (double)(n - 1) * q / 100.0;
    size_t i = (size_t)floor(pos);
    double f = pos - floor(pos);
    double r = i + 1 < n ? s[i] + f * (s[i + 1] - s[i]) : s[n - 1];
    free(s);
    return r;
}

/* Checks unet_image_to_float(norm) against (x - p1) / (p99.8 - p1) computed by sorting. */
static void check_percentile_norm(const unet_image *img, unet_norm norm, const char *what) {
    size_t plane = (size_t)img->w * img->h, n = plane * img->c;
    float *out = test_alloc(n), *want = test_alloc(n);
    double *v = malloc(plane * sizeof *v);
    CHECK_STATUS(unet_image_to_float(NULL, img, norm, out), UNET_STATUS_OK);
    for (int ch = 0; ch < img->c; ch++) {
        size_t m = 0;
        for (size_t i = 0; i < plane; i++) {
            size_t k = (size_t)ch * plane + i;
            double x = img->dtype == UNET_DTYPE_U8    ? ((uint8_t *)img->data)[k]
                       : img->dtype == UNET_DTYPE_U16 ? ((uint16_t *)img->data)[k]
                       : img->dtype == UNET_DTYPE_I32 ? ((int32_t *)img->data)[k]
                                                      : ((float *)img->data)[k];
            if (isfinite(x)) v[m++] = x;
        }
        double lo = m ? brute_percentile(v, m, 1.0) : 0, hi = m ? brute_percentile(v, m, 99.8) : 0;
        for (size_t i = 0; i < plane; i++) {
            size_t k = (size_t)ch * plane + i;
            double x = img->dtype == UNET_DTYPE_U8    ? ((uint8_t *)img->data)[k]
                       : img->dtype == UNET_DTYPE_U16 ? ((uint16_t *)img->data)[k]
                       : img->dtype == UNET_DTYPE_I32 ? ((int32_t *)img->data)[k]
                                                      : ((float *)img->data)[k];
            want[k] = hi > lo ? (float)((x - lo) / (hi - lo)) : 0.0f;
        }
    }
    /* Both sides are computed in double and rounded once to float; allow one float ulp. */
    CHECK_TENSOR(what, out, want, n, 1e-7, 2e-7);
    free(out);
    free(want);
    free(v);
}

TEST(to_float_percentile) {
    /* numpy.percentile(numpy.arange(100), [1, 99.8]) == [0.99, 98.802] */
    unet_image img;
    unet_image_alloc(NULL, &img, 10, 10, 1, UNET_DTYPE_U16);
    for (int i = 0; i < 100; i++) ((uint16_t *)img.data)[(i * 37) % 100] = (uint16_t)(i * 7 % 100);
    float out[100];
    CHECK_STATUS(unet_image_to_float(NULL, &img, UNET_NORM_AUTO, out), UNET_STATUS_OK);
    for (int i = 0; i < 100; i++) {
        double x = ((uint16_t *)img.data)[i];
        CHECK_CLOSE(out[i], (x - 0.99) / (98.802 - 0.99), 1e-6, 0);
    }
    unet_image_free(&img);
    /* numpy.percentile([5, 1, 9, 3, 3, 7, 2], [1, 99.8]) == [1.06, 8.976], as int32 */
    unet_image_alloc(NULL, &img, 7, 1, 1, UNET_DTYPE_I32);
    const int32_t vals[7] = {5, 1, 9, 3, 3, 7, 2};
    memcpy(img.data, vals, sizeof vals);
    CHECK_STATUS(unet_image_to_float(NULL, &img, UNET_NORM_PERCENTILE, out), UNET_STATUS_OK);
    for (int i = 0; i < 7; i++) CHECK_CLOSE(out[i], (vals[i] - 1.06) / (8.976 - 1.06), 1e-6, 0);
    unet_image_free(&img);

    /* Random images of every dtype, several channels and sizes, against a sort. */
    const int sizes[][2] = {{1, 1}, {2, 1}, {7, 3}, {37, 23}, {128, 96}};
    for (int k = 0; k < 5; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        img = random_image(w, h, 2, UNET_DTYPE_U16, (uint64_t)(400 + k));
        /* Narrow the second channel's range so that channels get different percentiles. */
        for (int i = 0; i < w * h; i++) ((uint16_t *)img.data)[w * h + i] %= 1000;
        check_percentile_norm(&img, UNET_NORM_AUTO, "u16 auto");
        check_percentile_norm(&img, UNET_NORM_PERCENTILE, "u16 percentile");
        unet_image_free(&img);
        img = random_image(w, h, 3, UNET_DTYPE_U8, (uint64_t)(500 + k));
        check_percentile_norm(&img, UNET_NORM_PERCENTILE, "u8 percentile");
        unet_image_free(&img);
        img = random_image(w, h, 2, UNET_DTYPE_I32, (uint64_t)(600 + k));
        for (int i = 0; i < w * h; i++) ((int32_t *)img.data)[i] %= 50; /* many duplicates */
        check_percentile_norm(&img, UNET_NORM_PERCENTILE, "i32 percentile");
        unet_image_free(&img);
        img = random_image(w, h, 2, UNET_DTYPE_F32, (uint64_t)(700 + k));
        check_percentile_norm(&img, UNET_NORM_PERCENTILE, "f32 percentile");
        unet_image_free(&img);
    }
    /* Orderings that break naive quickselects: sorted, reversed, constant runs, organ pipe. */
    const int n = 20011;
    unet_image_alloc(NULL, &img, n, 1, 4, UNET_DTYPE_F32);
    float *x = img.data;
    for (int i = 0; i < n; i++) {
        x[i] = (float)i;
        x[n + i] = (float)(n - i);
        x[2 * n + i] = (float)(i / 1000);
        x[3 * n + i] = (float)(i < n / 2 ? i : n - i);
    }
    check_percentile_norm(&img, UNET_NORM_PERCENTILE, "f32 adversarial orders");
    /* NaN and Inf are left out of the percentiles; NaN stays NaN. */
    x[17] = NAN;
    x[18] = INFINITY;
    x[n + 5] = -INFINITY;
    check_percentile_norm(&img, UNET_NORM_PERCENTILE, "f32 with non-finite values");
    unet_image_free(&img);

    /* The histogram path (U16) and the selection path (I32) agree. */
    unet_image a = random_image(61, 41, 1, UNET_DTYPE_U16, 9), b;
    unet_image_alloc(NULL, &b, 61, 41, 1, UNET_DTYPE_I32);
    for (int i = 0; i < 61 * 41; i++) ((int32_t *)b.data)[i] = ((uint16_t *)a.data)[i];
    float *oa = test_alloc(61 * 41), *ob = test_alloc(61 * 41);
    unet_image_to_float(NULL, &a, UNET_NORM_PERCENTILE, oa);
    unet_image_to_float(NULL, &b, UNET_NORM_PERCENTILE, ob);
    CHECK_TENSOR("histogram vs selection", oa, ob, 61 * 41, 0, 0);
    free(oa);
    free(ob);
    unet_image_free(&a);
    unet_image_free(&b);

    /* A flat channel gives 0, not NaN. */
    unet_image_alloc(NULL, &img, 4, 4, 1, UNET_DTYPE_U16);
    for (int i = 0; i < 16; i++) ((uint16_t *)img.data)[i] = 1234;
    CHECK_STATUS(unet_image_to_float(NULL, &img, UNET_NORM_AUTO, out), UNET_STATUS_OK);
    for (int i = 0; i < 16; i++) CHECK_EQ(out[i] == 0.0f, 1);
    unet_image_free(&img);
}

TEST(to_float_fixed) {
    float out[12];
    unet_image img;
    unet_ctx *ctx = unet_ctx_create();
    unet_image_alloc(NULL, &img, 3, 2, 2, UNET_DTYPE_U8);
    for (int i = 0; i < 12; i++) ((uint8_t *)img.data)[i] = (uint8_t)(i * 23);
    CHECK_STATUS(unet_image_to_float(ctx, &img, UNET_NORM_AUTO, out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_CLOSE(out[i], i * 23 / 255.0, 1e-7, 0);
    CHECK_STATUS(unet_image_to_float(ctx, &img, UNET_NORM_MAX, out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_CLOSE(out[i], i * 23 / 255.0, 1e-7, 0);
    CHECK_STATUS(unet_image_to_float(ctx, &img, UNET_NORM_NONE, out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_EQ(out[i], i * 23);
    unet_image_free(&img);

    unet_image_alloc(NULL, &img, 3, 2, 2, UNET_DTYPE_U16);
    for (int i = 0; i < 12; i++) ((uint16_t *)img.data)[i] = (uint16_t)(i * 5957);
    CHECK_STATUS(unet_image_to_float(ctx, &img, UNET_NORM_MAX, out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_CLOSE(out[i], i * 5957 / 65535.0, 1e-7, 0);
    CHECK_STATUS(unet_image_to_float(ctx, &img, UNET_NORM_NONE, out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_EQ(out[i], i * 5957);
    unet_image_free(&img);

    unet_image_alloc(NULL, &img, 3, 2, 2, UNET_DTYPE_F32);
    for (int i = 0; i < 12; i++) ((float *)img.data)[i] = (float)i * -1.5f + 0.25f;
    for (unet_norm nm = UNET_NORM_AUTO; nm <= UNET_NORM_NONE; nm++) {
        if (nm == UNET_NORM_PERCENTILE) continue;
        CHECK_STATUS(unet_image_to_float(ctx, &img, nm, out), UNET_STATUS_OK);
        for (int i = 0; i < 12; i++) CHECK_EQ(out[i] == (float)i * -1.5f + 0.25f, 1);
    }
    unet_image_free(&img);

    unet_image_alloc(NULL, &img, 3, 2, 2, UNET_DTYPE_I32);
    for (int i = 0; i < 12; i++) ((int32_t *)img.data)[i] = i * 1000 - 5000;
    CHECK_STATUS(unet_image_to_float(ctx, &img, UNET_NORM_AUTO, out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_EQ(out[i], i * 1000 - 5000);
    CHECK_STATUS(unet_image_to_float(ctx, &img, (unet_norm)7, out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_image_to_float(ctx, &img, UNET_NORM_AUTO, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_image_to_float(ctx, NULL, UNET_NORM_AUTO, out), UNET_STATUS_ARG);
    unet_image_free(&img);
    unet_ctx_free(ctx);
}

/* ---- masks ---- */

TEST(mask_to_classes) {
    unet_ctx *ctx = unet_ctx_create();
    int32_t out[12];
    unet_image m;
    /* Binary 0/255 masks -> 0/1. */
    unet_image_alloc(NULL, &m, 4, 3, 1, UNET_DTYPE_U8);
    for (int i = 0; i < 12; i++) ((uint8_t *)m.data)[i] = i % 3 ? 255 : 0;
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 2, "bin.png", out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_EQ(out[i], i % 3 ? 1 : 0);
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 1, "bin.png", out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_EQ(out[i], i % 3 ? 1 : 0);
    /* ... but 255 is not a class id when classes > 2. */
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 3, "bin.png", out), UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "bin.png");
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "255");
    unet_image_free(&m);

    /* 16-bit instance labels -> foreground 1. */
    unet_image_alloc(NULL, &m, 4, 3, 1, UNET_DTYPE_U16);
    for (int i = 0; i < 12; i++) ((uint16_t *)m.data)[i] = (uint16_t)(i % 4 == 0 ? 0 : 1000 + i * 3000);
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 2, "labels.tif", out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_EQ(out[i], i % 4 != 0);
    unet_image_free(&m);

    /* Class ids: 0..2 accepted with classes = 3, value 3 refused naming file and value. */
    unet_image_alloc(NULL, &m, 4, 3, 1, UNET_DTYPE_U8);
    for (int i = 0; i < 12; i++) ((uint8_t *)m.data)[i] = (uint8_t)(i % 3);
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 3, "cls.png", out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_EQ(out[i], i % 3);
    ((uint8_t *)m.data)[7] = 3;
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 3, "cls.png", out), UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "cls.png");
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "value 3");
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "x=3, y=1");
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 0, "cls.png", out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, UNET_MAX_CLASSES + 1, "cls.png", out),
                 UNET_STATUS_ARG);
    unet_image_free(&m);

    /* Negative int32 ids are refused with classes > 2, foreground with classes <= 2. */
    unet_image_alloc(NULL, &m, 4, 3, 1, UNET_DTYPE_I32);
    ((int32_t *)m.data)[2] = -1;
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 2, "neg.npy", out), UNET_STATUS_OK);
    CHECK_EQ(out[2], 1);
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 4, "neg.npy", out), UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "-1");
    unet_image_free(&m);

    /* Float masks must hold integers. */
    unet_image_alloc(NULL, &m, 4, 3, 1, UNET_DTYPE_F32);
    for (int i = 0; i < 12; i++) ((float *)m.data)[i] = (float)(i % 3);
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 3, "f.npy", out), UNET_STATUS_OK);
    for (int i = 0; i < 12; i++) CHECK_EQ(out[i], i % 3);
    ((float *)m.data)[4] = 1.5f;
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 3, "f.npy", out), UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "f.npy");
    ((float *)m.data)[4] = NAN;
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 2, "f.npy", out), UNET_STATUS_FORMAT);
    unet_image_free(&m);

    /* A mask has one channel. */
    unet_image_alloc(NULL, &m, 4, 3, 3, UNET_DTYPE_U8);
    CHECK_STATUS(unet_mask_to_classes(ctx, &m, 2, "rgb.png", out), UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "rgb.png");
    unet_image_free(&m);
    unet_ctx_free(ctx);
}

/* ---- corrupt files ---- */

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void put_le16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8);
}

static void put_le32(unsigned char *p, uint32_t v) {
    put_le16(p, v);
    put_le16(p + 2, v >> 16);
}

/* A classic little-endian TIFF IFD entry. */
static unsigned char *tiff_entry(unsigned char *p, uint16_t tag, uint16_t type, uint32_t count,
                                 uint32_t value) {
    put_le16(p, tag);
    put_le16(p + 2, type);
    put_le32(p + 4, count);
    if (type == 3 && count == 1) put_le32(p + 8, value & 0xffff);
    else put_le32(p + 8, value);
    return p + 12;
}

/* A little-endian TIFF: header, one IFD of 8 entries at offset 8 (the header points to
 * `ifd`), one data byte at the end. */
#define MINIMAL_TIFF_BYTES (8 + 2 + 8 * 12 + 4 + 1)
static void minimal_tiff(unsigned char *t, uint32_t ifd, uint32_t w, uint32_t h,
                         uint32_t strip_offset, uint32_t rps, uint32_t strip_bytes) {
    memset(t, 0, MINIMAL_TIFF_BYTES);
    t[0] = 'I', t[1] = 'I', t[2] = 42;
    put_le32(t + 4, ifd);
    put_le16(t + 8, 8);
    unsigned char *p = t + 10;
    p = tiff_entry(p, 256, 4, 1, w);            /* ImageWidth */
    p = tiff_entry(p, 257, 4, 1, h);            /* ImageLength */
    p = tiff_entry(p, 258, 3, 1, 8);            /* BitsPerSample */
    p = tiff_entry(p, 259, 3, 1, 1);            /* Compression: none */
    p = tiff_entry(p, 262, 3, 1, 1);            /* PhotometricInterpretation: MinIsBlack */
    p = tiff_entry(p, 273, 4, 1, strip_offset); /* StripOffsets */
    p = tiff_entry(p, 278, 4, 1, rps);          /* RowsPerStrip */
    p = tiff_entry(p, 279, 4, 1, strip_bytes);  /* StripByteCounts */
    put_le32(p, 0);                             /* no next IFD */
}

static unsigned char *find_bytes(unsigned char *hay, size_t n, const char *needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return hay + i;
    return NULL;
}

/* A little-endian TIFF header of w x h with spp samples of bps bits (format, compression), one
 * strip of 4 bytes: about 160 bytes that claim a large image. */
static bool forged_tiff(const char *path, uint32_t w, uint32_t h, int spp, int bps, int format,
                        int compression) {
    unsigned char t[256] = {'I', 'I', 42, 0};
    const uint32_t arrays = 8 + 2 + 10 * 12 + 4, fmt_at = arrays + 2 * (uint32_t)spp;
    const uint32_t strip = fmt_at + 2 * (uint32_t)spp;
    put_le32(t + 4, 8);
    put_le16(t + 8, 10);
    unsigned char *p = t + 10;
    p = tiff_entry(p, 256, 4, 1, w);                            /* ImageWidth */
    p = tiff_entry(p, 257, 4, 1, h);                            /* ImageLength */
    p = tiff_entry(p, 258, 3, (uint32_t)spp, arrays);           /* BitsPerSample */
    p = tiff_entry(p, 259, 3, 1, (uint32_t)compression);        /* Compression */
    p = tiff_entry(p, 262, 3, 1, 1);                            /* MinIsBlack */
    p = tiff_entry(p, 273, 4, 1, strip);                        /* StripOffsets */
    p = tiff_entry(p, 277, 3, 1, (uint32_t)spp);                /* SamplesPerPixel */
    p = tiff_entry(p, 278, 4, 1, h);                            /* RowsPerStrip */
    p = tiff_entry(p, 279, 4, 1, 4);                            /* StripByteCounts */
    p = tiff_entry(p, 339, 3, (uint32_t)spp, fmt_at);           /* SampleFormat */
    put_le32(p, 0);
    for (int i = 0; i < spp; i++) {
        put_le16(t + arrays + 2 * i, (uint32_t)bps);
        put_le16(t + fmt_at + 2 * i, (uint32_t)format);
    }
    return write_all(path, t, strip + 4);
}

/* A PNG header of w x h (bit depth, color type) with an empty IDAT, so that libpng reaches
 * the image data: 57 bytes. */
static bool forged_png(const char *path, uint32_t w, uint32_t h, int depth, int color) {
    unsigned char png[8 + 25 + 12 + 12] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char *p = png + 8;
    put_be32(p, 13);
    memcpy(p + 4, "IHDR", 4);
    put_be32(p + 8, w);
    put_be32(p + 12, h);
    p[16] = (unsigned char)depth, p[17] = (unsigned char)color, p[18] = 0, p[19] = 0, p[20] = 0;
    put_be32(p + 21, crc32_of(p + 4, 17));
    p += 25;
    put_be32(p, 0);
    memcpy(p + 4, "IDAT", 4);
    put_be32(p + 8, crc32_of(p + 4, 4));
    p += 12;
    put_be32(p, 0);
    memcpy(p + 4, "IEND", 4);
    put_be32(p + 8, crc32_of(p + 4, 4));
    return write_all(path, png, sizeof png);
}

/* The committed corrupt files: name, how they are made, the status they must give. */
static const struct {
    const char *name;
    unet_status want;
} corrupt_table[] = {
    {"image_truncated.png", UNET_STATUS_FORMAT},   /* a valid PNG cut in the middle of IDAT */
    {"image_bad_crc.png", UNET_STATUS_FORMAT},     /* one IDAT byte changed */
    {"image_wrong_magic.png", UNET_STATUS_FORMAT}, /* a text file named .png */
    {"image_empty.png", UNET_STATUS_FORMAT},       /* zero bytes */
    {"image_absurd_dims.png", UNET_STATUS_FORMAT}, /* IHDR 2^31-1 x 2^31-1, valid CRC */
    {"image_absurd_dims.tif", UNET_STATUS_FORMAT}, /* IFD 1000000 x 1000000, one strip */
    {"image_truncated.tif", UNET_STATUS_FORMAT},   /* a valid TIFF cut before its IFD */
    {"image_bad_strip.tif", UNET_STATUS_FORMAT},   /* StripOffsets past the end of the file */
    {"image_bad_ifd.tif", UNET_STATUS_FORMAT},     /* first IFD offset past the end */
    {"image_truncated.npy", UNET_STATUS_FORMAT},   /* (100, 100) <f4 with 16 bytes of data */
    {"image_bad_header.npy", UNET_STATUS_FORMAT},  /* unterminated dict */
    {"image_huge_header.npy", UNET_STATUS_FORMAT}, /* version 2.0, header length 2^32-1 */
    {"image_fortran.npy", UNET_STATUS_FORMAT},     /* fortran_order True */
    {"image_forged_f32x4.tif", UNET_STATUS_FORMAT},  /* 16384^2 x 4 floats, a 4-byte strip */
    {"image_forged_rgb16.png", UNET_STATUS_FORMAT},  /* 16384^2 RGB 16-bit, an empty IDAT */
};
#define N_CORRUPT (sizeof corrupt_table / sizeof corrupt_table[0])

static bool write_corrupt_files(const char *dir) {
    char path[512], tmp[512];
    bool ok = true;
    unet_ctx *ctx = unet_ctx_create();
    size_t size = 0;
    unsigned char *buf;

    /* PNGs from a valid 32x32 random gray image. */
    unet_image img = random_image(32, 32, 1, UNET_DTYPE_U8, 77);
    snprintf(tmp, sizeof tmp, "%s/valid.png", tmp_dir);
    ok = ok && unet_image_save(ctx, tmp, &img) == UNET_STATUS_OK;
    buf = read_all(tmp, &size);
    ok = ok && buf && size > 200;
    if (buf) {
        snprintf(path, sizeof path, "%s/image_truncated.png", dir);
        ok = ok && write_all(path, buf, size / 2);
        unsigned char *idat = find_bytes(buf, size, "IDAT");
        ok = ok && idat;
        if (idat) idat[40] ^= 0x55;
        snprintf(path, sizeof path, "%s/image_bad_crc.png", dir);
        ok = ok && write_all(path, buf, size);
        free(buf);
    }
    snprintf(path, sizeof path, "%s/image_wrong_magic.png", dir);
    ok = ok && write_all(path, "GIF89a: this is not a PNG\n", 26);
    snprintf(path, sizeof path, "%s/image_empty.png", dir);
    ok = ok && write_all(path, "", 0);
    snprintf(path, sizeof path, "%s/image_absurd_dims.png", dir);
    ok = ok && forged_png(path, 0x7fffffff, 0x7fffffff, 8, 0);
    /* Minimal uncompressed 8-bit TIFFs: absurd dimensions, a bad IFD offset, a bad strip. */
    {
        unsigned char t[MINIMAL_TIFF_BYTES];
        minimal_tiff(t, 8, 1000000, 1000000, MINIMAL_TIFF_BYTES - 1, 0xffffffffu, 1);
        snprintf(path, sizeof path, "%s/image_absurd_dims.tif", dir);
        ok = ok && write_all(path, t, sizeof t);
        minimal_tiff(t, 0x10000000u, 1, 1, MINIMAL_TIFF_BYTES - 1, 1, 1);
        snprintf(path, sizeof path, "%s/image_bad_ifd.tif", dir);
        ok = ok && write_all(path, t, sizeof t);
        minimal_tiff(t, 8, 4, 4, 0x7ffffff0u, 4, 16);
        snprintf(path, sizeof path, "%s/image_bad_strip.tif", dir);
        ok = ok && write_all(path, t, sizeof t);
    }
    /* Headers that claim 4 GiB and 1.5 GiB images in 158 and 57 bytes. */
    snprintf(path, sizeof path, "%s/image_forged_f32x4.tif", dir);
    ok = ok && forged_tiff(path, 16384, 16384, 4, 32, SAMPLEFORMAT_IEEEFP, COMPRESSION_NONE);
    snprintf(path, sizeof path, "%s/image_forged_rgb16.png", dir);
    ok = ok && forged_png(path, 16384, 16384, 16, 2);
    /* A valid deflate TIFF cut at 60%: the IFD, written last, is lost. */
    unet_image_free(&img);
    img = random_image(32, 32, 1, UNET_DTYPE_U16, 78);
    snprintf(tmp, sizeof tmp, "%s/valid.tif", tmp_dir);
    ok = ok && unet_image_save(ctx, tmp, &img) == UNET_STATUS_OK;
    buf = read_all(tmp, &size);
    ok = ok && buf;
    if (buf) {
        snprintf(path, sizeof path, "%s/image_truncated.tif", dir);
        ok = ok && write_all(path, buf, size * 6 / 10);
        free(buf);
    }
    unet_image_free(&img);
    /* .npy */
    float f32[4] = {1, 2, 3, 4};
    snprintf(path, sizeof path, "%s/image_truncated.npy", dir);
    ok = ok && write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (100, 100), }",
                             f32, sizeof f32);
    snprintf(path, sizeof path, "%s/image_bad_header.npy", dir);
    ok = ok && write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2",
                             f32, sizeof f32);
    snprintf(path, sizeof path, "%s/image_fortran.npy", dir);
    ok = ok && write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                             f32, sizeof f32);
    {
        unsigned char h[16] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0xff, 0xff, 0xff, 0xff, '{', '}'};
        snprintf(path, sizeof path, "%s/image_huge_header.npy", dir);
        ok = ok && write_all(path, h, sizeof h);
    }
    unet_ctx_free(ctx);
    return ok;
}

/* Runs fn with fd 2 redirected to a file and returns how many bytes were written to it. */
static long stderr_bytes_during(void (*fn)(void)) {
    char path[512];
    tmp_path(path, sizeof path, "stderr.txt");
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (saved < 0 || fd < 0) return -1;
    dup2(fd, 2);
    close(fd);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static const char *corrupt_dir;

static void load_corrupt_dir(void) {
    for (size_t i = 0; i < N_CORRUPT; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", corrupt_dir, corrupt_table[i].name);
        if (access(path, R_OK) != 0) {
            printf("  %s is missing (regenerate: test_image_io --write-corrupt "
                   "tests/data/corrupt)\n", path);
            harness_cur_failed++;
            continue;
        }
        unet_ctx *ctx = unet_ctx_create();
        unet_image img = {0};
        unet_status s = unet_image_load(ctx, path, 0, &img);
        if (strcmp(corrupt_dir, "tests/data/corrupt") == 0)
            printf("       %-32s %s: %s\n", corrupt_table[i].name, unet_status_str(s),
                   unet_ctx_errmsg(ctx));
        unet_image_free(&img);
        unet_ctx_free(ctx);
        CHECK_LOAD_FAILS(path, 0, corrupt_table[i].want);
        int pages = -1;
        ctx = unet_ctx_create();
        s = unet_image_pages(ctx, path, &pages);
        if (s != UNET_STATUS_OK) CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), path);
        unet_ctx_free(ctx);
    }
}

/* The committed files and a fresh set made by write_corrupt_files (not compared byte for byte:
 * the PNG and TIFF ones depend on the zlib build): each gives its status, its message names
 * the file, and nothing reaches stderr. */
TEST(corrupt_files) {
    char dir[384];
    tmp_path(dir, sizeof dir, "corrupt");
    mkdir(dir, 0755);
    CHECK(write_corrupt_files(dir));
    corrupt_dir = "tests/data/corrupt";
    CHECK_EQ(stderr_bytes_during(load_corrupt_dir), 0);
    corrupt_dir = dir;
    CHECK_EQ(stderr_bytes_during(load_corrupt_dir), 0);
}

/* Small valid files of every layout the readers take, for truncate_and_mutate; false when one
 * could not be written. */
static const char *const cut_names[] = {
    "fz.png", "fz16.png", "fz.tif", "fz_lzw_tiled.tif", "fz.npy", "fz_pal_gray.png",
    "fz_pal_color.png", "fz_adam7.png", "fz_hwc.npy", "fz_stack.npy", "fz_planar.tif",
    "fz_be.tif", "fz_bigtiff.tif"};
#define N_CUT_FILES (sizeof cut_names / sizeof cut_names[0])

static bool write_cut_files(unet_ctx *ctx) {
    char path[512];
    bool ok = true;
    unet_image img = random_image(9, 7, 3, UNET_DTYPE_U8, 5);
    unet_image img16 = random_image(9, 7, 1, UNET_DTYPE_U16, 6);
    ok &= unet_image_save(ctx, tmp_path(path, sizeof path, cut_names[0]), &img) == UNET_STATUS_OK;
    ok &= unet_image_save(ctx, tmp_path(path, sizeof path, cut_names[1]), &img16) == UNET_STATUS_OK;
    ok &= unet_image_save(ctx, tmp_path(path, sizeof path, cut_names[2]), &img) == UNET_STATUS_OK;
    struct tiff_spec t = {.w = 9, .h = 7, .spp = 1, .bps = 16, .format = SAMPLEFORMAT_UINT,
                          .planar = PLANARCONFIG_CONTIG, .compression = COMPRESSION_LZW,
                          .tile = 16, .photometric = PHOTOMETRIC_MINISBLACK, .pages = 2};
    unsigned char *bytes = random_bytes(9 * 7 * 4 * 3 * 2, 8);
    ok &= write_tiff_raw(tmp_path(path, sizeof path, cut_names[3]), &t, bytes);
    ok &= unet_image_save(ctx, tmp_path(path, sizeof path, cut_names[4]), &img16) == UNET_STATUS_OK;
    png_color pal[6];
    unsigned char trns[6] = {0, 40, 80, 120, 160, 200};
    for (int i = 0; i < 6; i++) pal[i] = (png_color){(uint8_t)(i * 50), (uint8_t)(i * 50), (uint8_t)(i * 50)};
    unsigned char packed[9 * 7 * 6];
    for (size_t i = 0; i < sizeof packed; i++) packed[i] = (unsigned char)(bytes[i] & 0x55);
    ok &= write_png_raw(tmp_path(path, sizeof path, cut_names[5]), 9, 7, PNG_COLOR_TYPE_PALETTE, 2,
                        PNG_INTERLACE_NONE, packed, 3, pal, 4, NULL, 0);
    for (int i = 0; i < 6; i++) pal[i].green = (uint8_t)(255 - i * 30);
    for (size_t i = 0; i < 9 * 7; i++) packed[i] = (unsigned char)(bytes[i] % 6);
    ok &= write_png_raw(tmp_path(path, sizeof path, cut_names[6]), 9, 7, PNG_COLOR_TYPE_PALETTE, 8,
                        PNG_INTERLACE_NONE, packed, 9, pal, 6, trns, 6);
    ok &= write_png_raw(tmp_path(path, sizeof path, cut_names[7]), 9, 7, PNG_COLOR_TYPE_RGB, 16,
                        PNG_INTERLACE_ADAM7, bytes, 9 * 6, NULL, 0, NULL, 0);
    ok &= write_npy_raw(tmp_path(path, sizeof path, cut_names[8]), 1,
                        "{'descr': '|u1', 'fortran_order': False, 'shape': (7, 9, 3), }", bytes,
                        7 * 9 * 3);
    double f8[3 * 7 * 9];
    for (size_t i = 0; i < 3 * 7 * 9; i++) f8[i] = (double)bytes[i] / 7.0 - 3.0;
    ok &= write_npy_raw(tmp_path(path, sizeof path, cut_names[9]), 2,
                        "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 7, 9), }", f8,
                        sizeof f8);
    struct tiff_spec planar = {.w = 9, .h = 7, .spp = 3, .bps = 32, .format = SAMPLEFORMAT_IEEEFP,
                               .planar = PLANARCONFIG_SEPARATE,
                               .compression = COMPRESSION_ADOBE_DEFLATE, .rps = 4,
                               .photometric = PHOTOMETRIC_RGB, .pages = 1};
    float fl[9 * 7 * 3];
    for (size_t i = 0; i < 9 * 7 * 3; i++) fl[i] = (float)bytes[i] - 100.0f;
    ok &= write_tiff_raw(tmp_path(path, sizeof path, cut_names[10]), &planar, (unsigned char *)fl);
    struct tiff_spec be = {.w = 9, .h = 7, .spp = 1, .bps = 16, .format = SAMPLEFORMAT_UINT,
                           .planar = PLANARCONFIG_CONTIG, .compression = COMPRESSION_NONE,
                           .rps = 2, .photometric = PHOTOMETRIC_MINISBLACK, .pages = 1,
                           .big_endian = true};
    ok &= write_tiff_raw(tmp_path(path, sizeof path, cut_names[11]), &be, bytes);
    struct tiff_spec big = be;
    big.big_endian = false, big.bigtiff = true, big.pages = 2, big.bps = 8;
    ok &= write_tiff_raw(tmp_path(path, sizeof path, cut_names[12]), &big, bytes);
    free(bytes);
    unet_image_free(&img);
    unet_image_free(&img16);
    return ok;
}

/* Every truncation of small valid files of every layout, under every channel layout (the
 * rule, no channel axis, the first axis: a TIFF's pages as channels, palette indices), and
 * random byte changes: no crash, no leak; a cut file fails naming itself, or loads a page whose
 * data it kept whole (the first page of a multi-page TIFF) exactly as the whole file does; the
 * header-only answer is never more permissive than the load. */
static const unet_image_opts cut_layouts[] = {{UNET_CHANNEL_AXIS_AUTO, 0}, {UNET_CHANNEL_AXIS_NONE, 0},
                                              {0, 0}, {UNET_CHANNEL_AXIS_AUTO, 1}};
#define N_LAYOUTS (sizeof cut_layouts / sizeof cut_layouts[0])
#define CUT_PAGES 3
static int cut_loads, cut_wrong;

static void load_cut(unet_ctx *ctx, const char *cut, const char *name, size_t n,
                     unet_image full[N_LAYOUTS][CUT_PAGES]) {
    for (size_t l = 0; l < N_LAYOUTS; l++) {
        int pages;
        unet_image_pages_with(ctx, cut, &cut_layouts[l], &pages);
        unet_image info;
        unet_status si = unet_image_info_with(ctx, cut, 0, &cut_layouts[l], &info);
        for (int page = 0; page < CUT_PAGES; page++) {
            unet_image got = {0};
            unet_status s = unet_image_load_with(ctx, cut, page, &cut_layouts[l], &got);
            if (s == UNET_STATUS_OK) {
                cut_loads++;
                if ((!same_image(&got, &full[l][page]) || (page == 0 && si != UNET_STATUS_OK)) &&
                    cut_wrong++ < 3)
                    printf("  %s cut to %zu bytes loads page %d (layout %zu) wrongly\n", name, n,
                           page, l);
            } else if (!strstr(unet_ctx_errmsg(ctx), cut) || got.data) {
                cut_wrong++;
            }
            unet_image_free(&got);
        }
    }
}

static void truncate_and_mutate(void) {
    char path[512], cut[512];
    unet_ctx *ctx = unet_ctx_create();
    unet_ctx_set_max_pixels(ctx, 1 << 16);
    if (!write_cut_files(ctx)) {
        printf("  the files to cut could not be written\n");
        harness_cur_failed++;
    }
    struct unet__rng r;
    unet__rng_seed(&r, 99);
    tmp_path(cut, sizeof cut, "fuzz.bin");
    long cuts = 0, mutations = 0;
    for (size_t f = 0; f < N_CUT_FILES; f++) {
        size_t size = 0;
        unsigned char *buf = read_all(tmp_path(path, sizeof path, cut_names[f]), &size);
        if (!buf) {
            printf("  %s was not written\n", cut_names[f]);
            harness_cur_failed++;
            continue;
        }
        unet_image full[N_LAYOUTS][CUT_PAGES];
        memset(full, 0, sizeof full);
        for (size_t l = 0; l < N_LAYOUTS; l++)
            for (int page = 0; page < CUT_PAGES; page++)
                unet_image_load_with(ctx, path, page, &cut_layouts[l], &full[l][page]);
        CHECK(full[0][0].data != NULL);
        cut_loads = cut_wrong = 0;
        for (size_t n = 0; n < size; n++, cuts++) {
            write_all(cut, buf, n);
            load_cut(ctx, cut, cut_names[f], n, full);
        }
        printf("       %-20s %4zu truncations, %d page loads succeeded (complete pages)\n",
               cut_names[f], size, cut_loads);
        CHECK_EQ(cut_wrong, 0);
        for (size_t l = 0; l < N_LAYOUTS; l++)
            for (int page = 0; page < CUT_PAGES; page++) unet_image_free(&full[l][page]);
        unsigned char *mut = malloc(size);
        for (int k = 0; k < 40; k++, mutations++) {
            memcpy(mut, buf, size);
            int changes = 1 + (int)unet__rng_below(&r, 4);
            for (int j = 0; j < changes; j++) {
                size_t at = (size_t)unet__rng_below(&r, size);
                mut[at] = unet__rng_below(&r, 2) ? (unsigned char)unet__rng_u64(&r)
                                                 : (unsigned char)(mut[at] ^ (1u << unet__rng_below(&r, 8)));
            }
            write_all(cut, mut, size);
            for (size_t l = 0; l < N_LAYOUTS; l++)
                for (int page = 0; page < 2; page++) {
                    unet_image got = {0};
                    unet_status s = unet_image_load_with(ctx, cut, page, &cut_layouts[l], &got);
                    if (s == UNET_STATUS_OK) {
                        CHECK((uint64_t)got.w * got.h <= (1 << 16) && got.c >= 1 && got.data);
                        float *fl = test_alloc((size_t)got.w * got.h * got.c);
                        unet_image_to_float(ctx, &got, UNET_NORM_PERCENTILE, fl);
                        free(fl);
                        CHECK_STATUS(unet_image_select_channels(ctx, &got, "gray", cut), UNET_STATUS_OK);
                    } else {
                        CHECK(got.data == NULL);
                        CHECK(strstr(unet_ctx_errmsg(ctx), cut) != NULL);
                    }
                    unet_image_free(&got);
                }
        }
        free(mut);
        free(buf);
    }
    printf("       %zu files: %ld truncations and %ld mutations, each under %zu layouts\n",
           N_CUT_FILES, cuts, mutations, N_LAYOUTS);
    unet_ctx_free(ctx);
}

TEST(truncated_and_mutated_files) {
    CHECK_EQ(stderr_bytes_during(truncate_and_mutate), 0);
}

TEST(size_limits) {
    char path[512];
    const char *names[] = {"lim.png", "lim.tif", "lim.npy"};
    unet_image img = random_image(37, 23, 1, UNET_DTYPE_U16, 11);
    unet_ctx *ctx = unet_ctx_create();
    for (int i = 0; i < 3; i++) {
        tmp_path(path, sizeof path, names[i]);
        CHECK_STATUS(unet_image_save(ctx, path, &img), UNET_STATUS_OK);
        unet_ctx_set_max_pixels(ctx, 37 * 23);
        unet_image got = {0};
        CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
        unet_image_free(&got);
        unet_ctx_set_max_pixels(ctx, 37 * 23 - 1);
        CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_FORMAT);
        CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), path);
        CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "over the limit");
        CHECK(got.data == NULL);
        unet_ctx_set_max_pixels(ctx, (uint64_t)1 << 28);
        /* The decoded bytes (pixels x channels x bytes per sample) have their own limit. */
        unet_ctx_set_max_image_bytes(ctx, 37 * 23 * 2 - 1);
        CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_FORMAT);
        CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "decodes to 1702 bytes, over the limit of 1701");
        CHECK_STATUS(unet_image_info(ctx, path, 0, &got), UNET_STATUS_FORMAT);
        unet_ctx_set_max_image_bytes(ctx, 37 * 23 * 2);
        CHECK_STATUS(unet_image_info(ctx, path, 0, &got), UNET_STATUS_OK);
        CHECK(got.w == 37 && got.h == 23 && got.c == 1 && got.dtype == UNET_DTYPE_U16 && !got.data);
    }
    unet_image_free(&img);
    unet_ctx_free(ctx);
}

/* ---- memory bounded by what the file holds (issue 19) ---- */

struct load_job {
    const char *path;
    bool        pixels;   /* unet_image_load, else unet_image_info */
    unet_status want;
    const char *msg;      /* a fragment of the message (NULL: none checked) */
};

static int load_job_run(void *arg) {
    const struct load_job *j = arg;
    if (!j) return 0; /* the baseline: a child that loads nothing */
    unet_ctx *ctx = unet_ctx_create();
    unet_image img = {0};
    unet_status s = j->pixels ? unet_image_load(ctx, j->path, 0, &img)
                              : unet_image_info(ctx, j->path, 0, &img);
    int bad = s != j->want || (j->msg && !strstr(unet_ctx_errmsg(ctx), j->msg));
    if (bad)
        printf("  %s: %s '%s', want %s '%s'\n", j->path, unet_status_str(s), unet_ctx_errmsg(ctx),
               unet_status_str(j->want), j->msg ? j->msg : "");
    unet_image_free(&img);
    unet_ctx_free(ctx);
    return bad;
}

/* The peak memory (KiB) one load adds to a child process, its outcome checked there. */
static long load_peak_kb(const struct load_job *j) {
    int code;
    long base = child_peak_kb(load_job_run, NULL, &code);
    long peak = child_peak_kb(load_job_run, (void *)(uintptr_t)j, &code);
    CHECK_EQ(code, 0);
    printf("       %-22s %s: %s, peak +%ld KiB\n", strrchr(j->path, '/') + 1,
           j->pixels ? "load" : "info", unet_status_str(j->want), peak - base);
    return peak - base;
}

/* Headers that claim huge images in a few bytes are refused from what the file holds, before
 * any allocation (they used to make unet touch 4.2 GB and 1.6 GB); a .npy header is read
 * without its 1 GiB of data; a decoder fills buffers that were never zeroed, so a file that
 * fails halfway touches only what it decoded; RGB PNG rows need no second image buffer. */
TEST(memory_bounded_by_the_file) {
    char path[512];
    tmp_path(path, sizeof path, "forged_f32x4.tif");
    CHECK(forged_tiff(path, 16384, 16384, 4, 32, SAMPLEFORMAT_IEEEFP, COMPRESSION_NONE));
    const char *tiff_msg = "needs 4294967296 bytes, but its strips hold 4 bytes of the file";
    for (int pixels = 0; pixels < 2; pixels++) {
        struct load_job j = {path, pixels, UNET_STATUS_FORMAT, tiff_msg};
        CHECK(load_peak_kb(&j) < 16 << 10);
    }
    tmp_path(path, sizeof path, "forged_deflate.tif");
    CHECK(forged_tiff(path, 16384, 16384, 4, 32, SAMPLEFORMAT_IEEEFP, COMPRESSION_ADOBE_DEFLATE));
    struct load_job jd = {path, true, UNET_STATUS_FORMAT, "(compression 8 expands at most 1032"};
    CHECK(load_peak_kb(&jd) < 16 << 10);
    tmp_path(path, sizeof path, "forged_rgb16.png");
    CHECK(forged_png(path, 16384, 16384, 16, 2));
    struct load_job jp = {path, true, UNET_STATUS_FORMAT, "its IDAT chunks hold 0 compressed bytes"};
    CHECK(load_peak_kb(&jp) < 16 << 10);

    /* A consistent .npy of (4096, 256, 256) float32, sparse on disk: its header says what it
     * is without reading the data. */
    tmp_path(path, sizeof path, "sparse_4096ch.npy");
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4096, 256, 256), }";
    CHECK(write_npy_raw(path, 1, dict, NULL, 0));
    struct stat sb;
    CHECK_EQ(stat(path, &sb), 0);
    CHECK_EQ(truncate(path, sb.st_size + ((off_t)4096 << 18)), 0);
    struct load_job jn = {path, false, UNET_STATUS_OK, NULL};
    CHECK(load_peak_kb(&jn) < 16 << 10);
    unet_image info;
    CHECK_STATUS(unet_image_info(NULL, path, 0, &info), UNET_STATUS_OK);
    CHECK(info.c == 4096 && info.h == 256 && info.w == 256 && info.data == NULL);
    unlink(path);

    /* A valid 2048 x 2048 16-bit deflate TIFF (8 MiB decoded), and a copy whose strips from
     * 20% of the file on are zeroed (an invalid zlib header): that load fails at the first of
     * them, having touched only the rows before it, so its peak is at least 4 MiB below the
     * intact file's (with a zeroed buffer the two would be the same). */
    tmp_path(path, sizeof path, "intact.tif");
    unet_image img = random_image(2048, 2048, 1, UNET_DTYPE_U16, 21);
    CHECK_STATUS(unet_image_save(NULL, path, &img), UNET_STATUS_OK);
    unet_image_free(&img);
    struct load_job ji = {path, true, UNET_STATUS_OK, NULL};
    long intact = load_peak_kb(&ji);
    size_t size;
    unsigned char *b = read_all(path, &size);
    CHECK(b != NULL);
    tmp_path(path, sizeof path, "half_broken.tif");
    if (b) {
        memset(b + size * 2 / 10, 0, size * 7 / 10);
        CHECK(write_all(path, b, size));
        free(b);
    }
    struct load_job jh = {path, true, UNET_STATUS_FORMAT, "cannot decode the TIFF strip"};
    CHECK(load_peak_kb(&jh) < intact - (4 << 10));

    /* An RGB PNG of 2048 x 2048 at 16 bits (24 MiB decoded) loads in about its own size, not
     * twice it (the image and a second, interleaved copy). */
    tmp_path(path, sizeof path, "rgb16.png");
    CHECK_STATUS(unet_image_alloc(NULL, &img, 2048, 2048, 3, UNET_DTYPE_U16), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_save(NULL, path, &img), UNET_STATUS_OK);
    unet_image_free(&img);
    struct load_job jr = {path, true, UNET_STATUS_OK, NULL};
    CHECK(load_peak_kb(&jr) < 36 << 10);
}

/* ---- saving ---- */

static int count_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

TEST(save_errors_and_atomicity) {
    char path[512], dir[384];
    unet_ctx *ctx = unet_ctx_create();
    unet_image small = random_image(4, 4, 1, UNET_DTYPE_U8, 12);
    unet_image big = random_image(128, 128, 3, UNET_DTYPE_U16, 13);
    unet_image f = random_image(4, 4, 1, UNET_DTYPE_F32, 14);

    /* Arguments: unknown extension, PNG of floats or 2 channels, NULLs; no file is left. */
    CHECK_STATUS(unet_image_save(ctx, tmp_path(path, sizeof path, "x.jpg"), &small), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "x.jpg");
    CHECK_STATUS(unet_image_save(ctx, tmp_path(path, sizeof path, "noext"), &small), UNET_STATUS_ARG);
    CHECK_STATUS(unet_image_save(ctx, tmp_path(path, sizeof path, "f.png"), &f), UNET_STATUS_ARG);
    CHECK(access(path, F_OK) != 0);
    unet_image two = random_image(4, 4, 2, UNET_DTYPE_U8, 15);
    CHECK_STATUS(unet_image_save(ctx, path, &two), UNET_STATUS_ARG);
    unet_image_free(&two);
    CHECK_STATUS(unet_image_save(ctx, NULL, &small), UNET_STATUS_ARG);
    CHECK_STATUS(unet_image_save(ctx, path, NULL), UNET_STATUS_ARG);
    unet_image bad = small;
    bad.data = NULL;
    CHECK_STATUS(unet_image_save(ctx, path, &bad), UNET_STATUS_ARG);

    /* The extension is case-insensitive. */
    unet_image got = {0};
    CHECK_STATUS(unet_image_save(ctx, tmp_path(path, sizeof path, "UPPER.PNG"), &small), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
    CHECK_SAME_IMAGE(&got, &small);
    unet_image_free(&got);

    /* A path in a missing directory is IO. */
    CHECK_STATUS(unet_image_save(ctx, "/nonexistent-unet-dir/x.png", &small), UNET_STATUS_IO);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "/nonexistent-unet-dir/x.png");

    /* A write that fails midway (file size limit: works as root too) leaves the old file intact
     * and no temporary behind, for every format. */
    const char *names[] = {"keep.png", "keep.tif", "keep.npy"};
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    for (int i = 0; i < 3; i++) {
        tmp_path(path, sizeof path, names[i]);
        CHECK_STATUS(unet_image_save(ctx, path, &small), UNET_STATUS_OK);
        size_t n0 = 0;
        unsigned char *before = read_all(path, &n0);
        struct rlimit old, lim;
        getrlimit(RLIMIT_FSIZE, &old);
        lim = old;
        lim.rlim_cur = 2000;
        setrlimit(RLIMIT_FSIZE, &lim);
        unet_status s = unet_image_save(ctx, path, &big);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK_STATUS(s, UNET_STATUS_IO);
        CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), path);
        size_t n1 = 0;
        unsigned char *after = read_all(path, &n1);
        CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
        CHECK_EQ(count_temporaries(tmp_dir), 0);
        free(before);
        free(after);
        /* And the same save without the limit replaces it. */
        CHECK_STATUS(unet_image_save(ctx, path, &big), UNET_STATUS_OK);
        CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
        CHECK_SAME_IMAGE(&got, &big);
        unet_image_free(&got);
    }
    signal(SIGXFSZ, old_handler);

    /* A read-only directory (meaningless for root, who may write anyway). */
    tmp_path(dir, sizeof dir, "readonly");
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/old.png", dir);
    CHECK_STATUS(unet_image_save(ctx, path, &small), UNET_STATUS_OK);
    if (geteuid() != 0) {
        chmod(dir, 0555);
        CHECK_STATUS(unet_image_save(ctx, path, &big), UNET_STATUS_IO);
        chmod(dir, 0755);
        CHECK_STATUS(unet_image_load(ctx, path, 0, &got), UNET_STATUS_OK);
        CHECK_SAME_IMAGE(&got, &small);
        unet_image_free(&got);
    } else {
        printf("       note: running as root, read-only directory case skipped "
               "(the file size limit case above covers atomicity)\n");
    }
    unet_image_free(&small);
    unet_image_free(&big);
    unet_image_free(&f);
    unet_ctx_free(ctx);
}

/* A FIFO is refused at once by every reader (opening it for reading would wait for a writer
 * forever); alarm() turns a regression into a failure instead of a hang. */
TEST(fifo_is_not_read) {
    char path[512];
    tmp_path(path, sizeof path, "pipe.tif");
    CHECK_EQ(mkfifo(path, 0644), 0);
    unet_ctx *ctx = unet_ctx_create();
    unet_image img;
    int pages;
    unet_model *m = NULL;
    alarm(20);
    CHECK_STATUS(unet_image_load(ctx, path, 0, &img), UNET_STATUS_IO);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "pipe.tif: a FIFO (named pipe), not a regular file");
    CHECK_STATUS(unet_image_pages(ctx, path, &pages), UNET_STATUS_IO);
    CHECK_STATUS(unet_image_info(ctx, path, 0, &img), UNET_STATUS_IO);
    CHECK_STATUS(unet__tiff_load(ctx, path, 0, true, &img), UNET_STATUS_IO);
    CHECK_STATUS(unet__png_load(ctx, path, false, true, &img), UNET_STATUS_IO);
    CHECK_STATUS(unet__npy_load(ctx, path, 0, UNET_CHANNEL_AXIS_AUTO, true, &img), UNET_STATUS_IO);
    CHECK_STATUS(unet_model_load(ctx, path, &m), UNET_STATUS_IO);
    alarm(0);
    unlink(path);
    unet_ctx_free(ctx);
}

TEST(load_errors) {
    unet_ctx *ctx = unet_ctx_create();
    unet_image img;
    CHECK_STATUS(unet_image_load(ctx, NULL, 0, &img), UNET_STATUS_ARG);
    CHECK_STATUS(unet_image_load(ctx, "x.png", 0, NULL), UNET_STATUS_ARG);
    CHECK_LOAD_FAILS("/nonexistent-unet-dir/x.png", 0, UNET_STATUS_IO);
    CHECK_LOAD_FAILS(tmp_dir, 0, UNET_STATUS_IO); /* a directory */
    int pages = 5;
    CHECK_STATUS(unet_image_pages(ctx, "/nonexistent-unet-dir/x.tif", &pages), UNET_STATUS_IO);
    CHECK_EQ(pages, 0);
    CHECK_STATUS(unet_image_pages(ctx, "x.tif", NULL), UNET_STATUS_ARG);
    /* Content, not the extension, decides: a PNG named .tif loads. */
    char path[512];
    unet_image small = random_image(5, 4, 3, UNET_DTYPE_U8, 16);
    tmp_path(path, sizeof path, "really_png.png");
    CHECK_STATUS(unet_image_save(ctx, path, &small), UNET_STATUS_OK);
    char renamed[512];
    tmp_path(renamed, sizeof renamed, "really_png.tif");
    CHECK(rename(path, renamed) == 0);
    unet_image got = {0};
    CHECK_STATUS(unet_image_load(ctx, renamed, 0, &got), UNET_STATUS_OK);
    CHECK_SAME_IMAGE(&got, &small);
    unet_image_free(&got);
    CHECK_LOAD_FAILS(renamed, 1, UNET_STATUS_ARG);
    unet_image_free(&small);
    unet_ctx_free(ctx);
}

/* The real datasets' files (not in CI: skipped with a note when /work/shared is absent).
 * The sums are those PIL + numpy give for the same files. */
TEST(real_datasets) {
    static const struct {
        const char *path;
        int         w, h;
        unet_dtype  dtype;
        double      sum;
    } files[] = {
        {"/work/shared/data/isbi2012/train/images/00.png", 512, 512, UNET_DTYPE_U8, 35971420.0},
        {"/work/shared/data/dic-c2dh-hela/train/masks/01_t002.tif", 512, 512, UNET_DTYPE_U16,
         510060.0},
        {"/work/shared/data/fluo-n2dl-hela/train/images/01_t013.tif", 1100, 700, UNET_DTYPE_U16,
         25480306626.0},
    };
    unet_ctx *ctx = unet_ctx_create();
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (access(files[i].path, R_OK) != 0) {
            printf("       note: %s absent, skipped\n", files[i].path);
            continue;
        }
        unet_image img = {0};
        CHECK_STATUS(unet_image_load(ctx, files[i].path, 0, &img), UNET_STATUS_OK);
        CHECK(img.w == files[i].w && img.h == files[i].h && img.c == 1 &&
              img.dtype == files[i].dtype);
        double sum = 0;
        for (size_t k = 0; img.data && k < (size_t)img.w * img.h; k++)
            sum += img.dtype == UNET_DTYPE_U8 ? ((uint8_t *)img.data)[k] : ((uint16_t *)img.data)[k];
        CHECK_EQ(sum, files[i].sum);
        unet_image_free(&img);
    }
    unet_ctx_free(ctx);
}

int main(int argc, char **argv) {
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/unet_test_image_io.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        fprintf(stderr, "test_image_io: cannot create %s: %s\n", tmp_dir, strerror(errno));
        return 2;
    }
    if (argc == 3 && strcmp(argv[1], "--write-corrupt") == 0) {
        bool ok = write_corrupt_files(argv[2]);
        remove_tree(tmp_dir);
        printf("%s\n", ok ? "written" : "FAILED");
        return ok ? 0 : 1;
    }
    RUN(dtype_and_alloc);
    RUN(png_roundtrip);
    RUN(png_variants);
    RUN(tiff_roundtrip);
    RUN(tiff_variants);
    RUN(npy_roundtrip);
    RUN(npy_inputs);
    RUN(npy_header_parser);
    RUN(npy_from_numpy);
    RUN(channel_layouts);
    RUN(tiff_pages_as_channels);
    RUN(palette_pngs);
    RUN(select_channels);
    RUN(to_float_percentile);
    RUN(to_float_fixed);
    RUN(mask_to_classes);
    RUN(corrupt_files);
    RUN(truncated_and_mutated_files);
    RUN(size_limits);
    RUN(memory_bounded_by_the_file);
    RUN(save_errors_and_atomicity);
    RUN(fifo_is_not_read);
    RUN(load_errors);
    RUN(real_datasets);
    remove_tree(tmp_dir);
    return harness_finish();
}
