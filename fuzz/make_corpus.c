/* make_corpus.c — writes the fuzzers' seed corpora: small real files of every layout each
 * loader supports, so the fuzzers start from deep inside the formats instead of guessing magic
 * numbers.  `make fuzz-corpus` runs it as  make_corpus fuzz/corpus  (the output is committed;
 * a few KB per file).
 *
 *   png/          gray 1/8/16-bit, gray+alpha, RGB(A) 8/16-bit, palette with tRNS, Adam7
 *   tiff/         8/16-bit, float, signed and unsigned 32-bit, RGB contiguous and planar, RGBA,
 *                 tiles, multi-page, big-endian, BigTIFF, deflate/LZW/PackBits/none,
 *                 one row per strip
 *   npy/          every dtype the reader takes, (H, W) and (C, H, W), versions 1.0 and 2.0
 *   image/        one of each format, including a crop of a real ISBI 2012 slice and its mask
 *                 when data/sample is there
 *   safetensors/  every dtype, 0-d and empty tensors, metadata
 *   resume/       resumable checkpoints: U-Net, paper, bilinear sigmoid; with the epoch sums;
 *                 with step counters at 2^40 (accepted) and 2^63 - 2 (refused)
 *   checkpoint/   U-Net (transpose, bilinear, paper), FCN-8s, a resumable checkpoint, and a
 *                 PyTorch-style file without metadata
 */
#include "internal.h"
#include "io/safetensors.h"
#include "io/checkpoint.h"
#include "model.h"

#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>

static int failures;

static void fail(const char *what) {
    fprintf(stderr, "make_corpus: %s\n", what);
    failures++;
}

static void path_of(char *buf, size_t size, const char *dir, const char *sub, const char *name) {
    snprintf(buf, size, "%s/%s/%s", dir, sub, name);
}

/* ---- PNG with libpng directly (the library writes only 8/16-bit gray and RGB) ---- */

static void write_png(const char *path, int w, int h, int depth, int color, int interlace,
                      bool trns) {
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    unsigned char *row = NULL;
    if (!f || !png || !info || setjmp(png_jmpbuf(png))) {
        fail(path);
        goto done;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
        png_set_PLTE(png, info, pal, 4);
        if (trns) {
            png_byte alpha[2] = {0, 128};
            png_set_tRNS(png, info, alpha, 2, NULL);
        }
    }
    png_write_info(png, info);
    int channels = color == PNG_COLOR_TYPE_RGB         ? 3
                   : color == PNG_COLOR_TYPE_RGB_ALPHA ? 4
                   : color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                                                        : 1;
    size_t row_bytes = ((size_t)w * channels * depth + 7) / 8;
    row = calloc(row_bytes, 1);
    if (!row) {
        fail(path);
        goto done;
    }
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++) {
            for (size_t i = 0; i < row_bytes; i++) row[i] = (unsigned char)(i * 37 + y * 11 + p);
            png_write_row(png, row);
        }
    png_write_end(png, NULL);
done:
    png_destroy_write_struct(&png, &info);
    free(row);
    if (f) fclose(f);
}

/* ---- TIFF with libtiff directly ---- */

struct tiff_spec {
    const char *name;
    const char *mode;       /* "w", "wb" (big-endian), "w8" (BigTIFF) */
    int         w, h, spp, bps, format, planar, compression, pages, tile, rows_per_strip;
    bool        alpha;
};

static void write_tiff(const char *dir, const struct tiff_spec *t) {
    char path[512];
    path_of(path, sizeof path, dir, "tiff", t->name);
    TIFF *tif = TIFFOpen(path, t->mode);
    if (!tif) {
        fail(path);
        return;
    }
    size_t bs = (size_t)t->bps / 8;
    for (int page = 0; page < t->pages; page++) {
        TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, (uint32_t)t->w);
        TIFFSetField(tif, TIFFTAG_IMAGELENGTH, (uint32_t)t->h);
        TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, (uint16_t)t->spp);
        TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, (uint16_t)t->bps);
        TIFFSetField(tif, TIFFTAG_SAMPLEFORMAT, (uint16_t)t->format);
        TIFFSetField(tif, TIFFTAG_PHOTOMETRIC,
                     t->spp >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
        TIFFSetField(tif, TIFFTAG_PLANARCONFIG, (uint16_t)t->planar);
        TIFFSetField(tif, TIFFTAG_COMPRESSION, (uint16_t)t->compression);
        if (t->alpha) {
            uint16_t extra[1] = {EXTRASAMPLE_UNASSALPHA};
            TIFFSetField(tif, TIFFTAG_EXTRASAMPLES, 1, extra);
        }
        if (t->pages > 1) TIFFSetField(tif, TIFFTAG_SUBFILETYPE, FILETYPE_PAGE);
        bool separate = t->planar == PLANARCONFIG_SEPARATE;
        size_t spb = separate ? 1 : (size_t)t->spp;
        int planes = separate ? t->spp : 1;
        if (t->tile) {
            TIFFSetField(tif, TIFFTAG_TILEWIDTH, (uint32_t)t->tile);
            TIFFSetField(tif, TIFFTAG_TILELENGTH, (uint32_t)t->tile);
            size_t n = (size_t)t->tile * t->tile * spb * bs;
            unsigned char *buf = malloc(n);
            if (!buf) {
                fail(path);
                break;
            }
            for (int p = 0; p < planes; p++)
                for (int y = 0; y < t->h; y += t->tile)
                    for (int x = 0; x < t->w; x += t->tile) {
                        for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i + x + 3 * y + p);
                        if (TIFFWriteTile(tif, buf, (uint32_t)x, (uint32_t)y, 0, (uint16_t)p) < 0)
                            fail(path);
                    }
            free(buf);
        } else {
            int rps = t->rows_per_strip ? t->rows_per_strip : t->h;
            TIFFSetField(tif, TIFFTAG_ROWSPERSTRIP, (uint32_t)rps);
            size_t row = (size_t)t->w * spb * bs;
            unsigned char *buf = malloc(row * (size_t)rps);
            if (!buf) {
                fail(path);
                break;
            }
            for (int p = 0; p < planes; p++)
                for (int y = 0, s = 0; y < t->h; y += rps, s++) {
                    int rows = t->h - y < rps ? t->h - y : rps;
                    for (size_t i = 0; i < row * (size_t)rows; i++) {
                        buf[i] = (unsigned char)(i * 7 + (size_t)y + (size_t)p * 50 + (size_t)page);
                        /* Keep floats finite and 32-bit unsigned samples within int32. */
                        if ((t->format == SAMPLEFORMAT_IEEEFP || t->bps == 32) && i % 4 == 3)
                            buf[i] = 0x3f;
                    }
                    uint32_t strip = (uint32_t)p * (uint32_t)((t->h + rps - 1) / rps) + (uint32_t)s;
                    if (TIFFWriteEncodedStrip(tif, strip, buf, (tmsize_t)(row * (size_t)rows)) < 0)
                        fail(path);
                }
            free(buf);
        }
        if (!TIFFWriteDirectory(tif)) fail(path);
    }
    TIFFClose(tif);
}

/* ---- .npy by hand (every dtype and version the reader accepts) ---- */

static void write_npy(const char *path, int major, const char *descr, const char *shape,
                      size_t nbytes) {
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     descr, shape);
    size_t pre = major == 1 ? 10 : 12, len = (size_t)n;
    while ((pre + len + 1) % 64 != 0) hdr[len++] = ' ';
    hdr[len++] = '\n';
    FILE *f = fopen(path, "wb");
    if (!f) {
        fail(path);
        return;
    }
    unsigned char p[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0,
                           (unsigned char)(len & 0xff), (unsigned char)(len >> 8), 0, 0};
    fwrite(p, 1, pre, f);
    fwrite(hdr, 1, len, f);
    for (size_t i = 0; i < nbytes; i++) {
        /* Small values: every conversion (int64 -> int32, float64 -> float32) succeeds. */
        unsigned char b = (unsigned char)(i % 8 == 0 ? i / 8 % 100 : 0);
        if (descr[1] == 'f') b = (unsigned char)(i % 4 == 3 ? 0x3f : 0); /* 0.5-ish floats */
        fputc(b, f);
    }
    if (fclose(f) != 0) fail(path);
}

/* ---- models ---- */

/* A model of c under dir/sub/name; training: a resumable checkpoint after one step, with
 * train_steps (the optimizer's counter) set to steps when it is > 0 and the metadata meta
 * (n_meta pairs; NULL: the CLI's usual keys). */
static void save_model(unet_ctx *ctx, const char *dir, const char *sub, const char *name,
                       unet_config c, bool training, long steps, const char *const *meta,
                       int n_meta) {
    char path[512];
    path_of(path, sizeof path, dir, sub, name);
    unet_model *m = NULL;
    if (unet_model_create(ctx, &c, 7, &m) != UNET_STATUS_OK) {
        fail(unet_ctx_errmsg(ctx));
        return;
    }
    unet_status s;
    if (training) {
        /* One step so the optimizer state exists. */
        int size = 0, oh, ow;
        unet_model_round_size(ctx, m, 8, &size);
        unet_model_output_size(ctx, m, size, size, &oh, &ow);
        float *x = calloc((size_t)c.in_channels * size * size, sizeof *x);
        int32_t *t = calloc((size_t)oh * ow, sizeof *t);
        for (int i = 0; x && i < size * size; i++) x[i] = (float)(i % 5) / 5.0f;
        for (int i = 0; t && i < oh * ow; i++) t[i] = i % 3 == 0;
        unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
        double L;
        s = x && t ? unet_train_step(ctx, m, &o, UNET_LOSS_CE, x, t, NULL, 1, size, size, &L)
                   : UNET_STATUS_NOMEM;
        free(x);
        free(t);
        static const char *const usual[] = {"train.step", "1", "train.sampler", "1",
                                            "train.seed", "1", "train.tile", "8",
                                            "train.batch", "1", "train.best", "-1"};
        if (steps > 0) m->opt_step = steps;
        if (s == UNET_STATUS_OK)
            s = unet_model_save_training(ctx, m, path, meta ? meta : usual, meta ? n_meta : 6);
    } else {
        s = unet_model_save(ctx, m, path);
    }
    if (s != UNET_STATUS_OK) fail(unet_ctx_errmsg(ctx));
    unet_model_free(m);
}

/* A state_dict as a PyTorch conversion writes it: no metadata, the architecture inferred. */
static void save_torch_style(unet_ctx *ctx, const char *dir) {
    char path[512];
    path_of(path, sizeof path, dir, "checkpoint", "torch_style.safetensors");
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 2;
    c.depth = 1;
    unet_model *m = NULL;
    if (unet_model_create(ctx, &c, 3, &m) != UNET_STATUS_OK) {
        fail(unet_ctx_errmsg(ctx));
        return;
    }
    struct unet__st_entry *e = calloc((size_t)m->n_params, sizeof *e);
    if (!e) {
        fail("out of memory");
        unet_model_free(m);
        return;
    }
    for (int i = 0; i < m->n_params; i++)
        unet__st_entry_of_param(m, &m->params[i], &e[i]);
    if (unet__st_write(ctx, path, e, m->n_params, NULL, 0) != UNET_STATUS_OK)
        fail(unet_ctx_errmsg(ctx));
    free(e);
    unet_model_free(m);
}

static void write_safetensors(unet_ctx *ctx, const char *dir) {
    static const float f32[6] = {0.5f, -1.0f, 2.0f, 0.0f, 1e-3f, 7.0f};
    static const double f64[2] = {1.5, -2.5};
    static const uint16_t f16[3] = {0x3c00, 0xc000, 0x7bff};
    static const int64_t i64[2] = {-3, 1LL << 40};
    static const int32_t i32[2] = {5, -6};
    static const uint8_t u8[4] = {1, 2, 3, 4};
    static const int64_t scalar = 42;
    const struct unet__st_entry e[] = {
        {"weight", UNET__DTYPE_F32, 2, {2, 3}, f32},
        {"double", UNET__DTYPE_F64, 1, {2}, f64},
        {"half", UNET__DTYPE_F16, 1, {3}, f16},
        {"bhalf", UNET__DTYPE_BF16, 1, {3}, f16},
        {"long", UNET__DTYPE_I64, 1, {2}, i64},
        {"int", UNET__DTYPE_I32, 2, {1, 2}, i32},
        {"bytes", UNET__DTYPE_U8, 1, {4}, u8},
        {"flags", UNET__DTYPE_BOOL, 1, {4}, u8},
        {"count", UNET__DTYPE_I64, 0, {0}, &scalar},
        {"empty", UNET__DTYPE_F32, 2, {0, 3}, f32},
    };
    const char *meta[] = {"format", "pt", "note", "seed corpus"};
    char path[512];
    path_of(path, sizeof path, dir, "safetensors", "dtypes.safetensors");
    if (unet__st_write(ctx, path, e, (int)(sizeof e / sizeof e[0]), meta, 2) != UNET_STATUS_OK)
        fail(unet_ctx_errmsg(ctx));
    path_of(path, sizeof path, dir, "safetensors", "one.safetensors");
    if (unet__st_write(ctx, path, e, 1, NULL, 0) != UNET_STATUS_OK) fail(unet_ctx_errmsg(ctx));
}

/* ---- images through the library's writers, and a crop of real data ---- */

static void save_image(unet_ctx *ctx, const char *dir, const char *sub, const char *name, int w,
                       int h, int c, unet_dtype dtype) {
    char path[512];
    path_of(path, sizeof path, dir, sub, name);
    unet_image img;
    if (unet_image_alloc(ctx, &img, w, h, c, dtype) != UNET_STATUS_OK) {
        fail(unet_ctx_errmsg(ctx));
        return;
    }
    size_t n = (size_t)w * h * c;
    for (size_t i = 0; i < n; i++) {
        switch (dtype) {
        case UNET_DTYPE_U8: ((uint8_t *)img.data)[i] = (uint8_t)(i * 13 % 251); break;
        case UNET_DTYPE_U16: ((uint16_t *)img.data)[i] = (uint16_t)(i * 977 % 65521); break;
        case UNET_DTYPE_I32: ((int32_t *)img.data)[i] = (int32_t)(i % 7) - 3; break;
        case UNET_DTYPE_F32: ((float *)img.data)[i] = (float)(i % 11) / 10.0f; break;
        }
    }
    if (unet_image_save(ctx, path, &img) != UNET_STATUS_OK) fail(unet_ctx_errmsg(ctx));
    unet_image_free(&img);
}

static void crop_real(unet_ctx *ctx, const char *dir, const char *src, const char *name) {
    unet_image in, out;
    if (unet_image_load(ctx, src, 0, &in) != UNET_STATUS_OK) return; /* no sample data: skip */
    int s = 32;
    if (in.w >= s && in.h >= s && in.c == 1 && in.dtype == UNET_DTYPE_U8 &&
        unet_image_alloc(ctx, &out, s, s, 1, UNET_DTYPE_U8) == UNET_STATUS_OK) {
        for (int y = 0; y < s; y++)
            memcpy((uint8_t *)out.data + (size_t)y * s, (uint8_t *)in.data + (size_t)y * in.w, (size_t)s);
        char path[512];
        path_of(path, sizeof path, dir, "image", name);
        if (unet_image_save(ctx, path, &out) != UNET_STATUS_OK) fail(unet_ctx_errmsg(ctx));
        unet_image_free(&out);
    }
    unet_image_free(&in);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    const char *subs[] = {"png", "tiff", "npy", "image", "safetensors", "checkpoint", "resume"};
    char path[512];
    mkdir(dir, 0755);
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subs[i]);
        mkdir(path, 0755);
    }
    unet_ctx *ctx = unet_ctx_create();
    unet_ctx_set_threads(ctx, 1);

    static const struct {
        const char *name;
        int         w, h, depth, color, interlace;
        bool        trns;
    } pngs[] = {
        {"gray8.png", 12, 9, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, false},
        {"gray16.png", 7, 5, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, false},
        {"gray1.png", 13, 3, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, false},
        {"gray4.png", 5, 4, 4, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, false},
        {"gray_alpha.png", 6, 6, 8, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_INTERLACE_NONE, false},
        {"rgb8.png", 6, 4, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, false},
        {"rgb16.png", 3, 3, 16, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, false},
        {"rgba8.png", 4, 5, 8, PNG_COLOR_TYPE_RGB_ALPHA, PNG_INTERLACE_NONE, false},
        {"rgba16.png", 2, 3, 16, PNG_COLOR_TYPE_RGB_ALPHA, PNG_INTERLACE_NONE, false},
        {"palette.png", 8, 8, 2, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, true},
        {"adam7.png", 11, 10, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_ADAM7, false},
    };
    for (size_t i = 0; i < sizeof pngs / sizeof pngs[0]; i++) {
        path_of(path, sizeof path, dir, "png", pngs[i].name);
        write_png(path, pngs[i].w, pngs[i].h, pngs[i].depth, pngs[i].color, pngs[i].interlace,
                  pngs[i].trns);
    }

    const int U = SAMPLEFORMAT_UINT, I = SAMPLEFORMAT_INT, F = SAMPLEFORMAT_IEEEFP;
    const int C = PLANARCONFIG_CONTIG, S = PLANARCONFIG_SEPARATE;
    const int NONE = COMPRESSION_NONE, DEFL = COMPRESSION_ADOBE_DEFLATE, LZW = COMPRESSION_LZW,
              PB = COMPRESSION_PACKBITS;
    const struct tiff_spec tiffs[] = {
        {"u8_deflate.tif", "w", 10, 7, 1, 8, U, C, DEFL, 1, 0, 3, false},
        {"u16_lzw.tif", "w", 9, 6, 1, 16, U, C, LZW, 1, 0, 0, false},
        {"f32_none.tif", "w", 5, 4, 1, 32, F, C, NONE, 1, 0, 0, false},
        {"i16_packbits.tif", "w", 6, 5, 1, 16, I, C, PB, 1, 0, 2, false},
        {"u32.tif", "w", 4, 4, 1, 32, U, C, NONE, 1, 0, 0, false},
        {"i8.tif", "w", 4, 3, 1, 8, I, C, NONE, 1, 0, 0, false},
        {"rgb_contig.tif", "w", 5, 5, 3, 8, U, C, DEFL, 1, 0, 0, false},
        {"rgb_planar.tif", "w", 5, 4, 3, 8, U, S, NONE, 1, 0, 2, false},
        {"rgba_alpha.tif", "w", 4, 4, 4, 8, U, C, NONE, 1, 0, 0, true},
        {"tiled.tif", "w", 20, 18, 1, 8, U, C, DEFL, 1, 16, 0, false},
        {"tiled_planar16.tif", "w", 17, 16, 3, 16, U, S, NONE, 1, 16, 0, false},
        {"stack3.tif", "w", 6, 5, 1, 8, U, C, NONE, 3, 0, 0, false},
        {"bigendian16.tif", "wb", 7, 3, 1, 16, U, C, NONE, 1, 0, 0, false},
        {"bigtiff.tif", "w8", 6, 4, 1, 8, U, C, LZW, 2, 0, 0, false},
        {"row_strips.tif", "w", 8, 6, 1, 8, U, C, NONE, 1, 0, 1, false},
    };
    for (size_t i = 0; i < sizeof tiffs / sizeof tiffs[0]; i++) write_tiff(dir, &tiffs[i]);

    static const struct {
        const char *name, *descr, *shape;
        int         major;
        size_t      nbytes;
    } npys[] = {
        {"u1.npy", "|u1", "(4, 5)", 1, 20},     {"b1.npy", "|b1", "(3, 3)", 1, 9},
        {"i1.npy", "|i1", "(2, 3)", 1, 6},      {"u2.npy", "<u2", "(3, 2)", 1, 12},
        {"i2.npy", "<i2", "(2, 2)", 1, 8},      {"u4.npy", "<u4", "(2, 2)", 1, 16},
        {"i4_chw.npy", "<i4", "(2, 2, 3)", 1, 48}, {"u8.npy", "<u8", "(1, 3)", 1, 24},
        {"i8.npy", "<i8", "(2, 1)", 1, 16},     {"f4.npy", "<f4", "(3, 4)", 1, 48},
        {"f8_chw.npy", "<f8", "(3, 2, 2)", 1, 96}, {"v2_f4.npy", "<f4", "(2, 2)", 2, 16},
    };
    for (size_t i = 0; i < sizeof npys / sizeof npys[0]; i++) {
        path_of(path, sizeof path, dir, "npy", npys[i].name);
        write_npy(path, npys[i].major, npys[i].descr, npys[i].shape, npys[i].nbytes);
    }

    save_image(ctx, dir, "image", "gray8.png", 9, 7, 1, UNET_DTYPE_U8);
    save_image(ctx, dir, "image", "rgb16.png", 4, 3, 3, UNET_DTYPE_U16);
    save_image(ctx, dir, "image", "f32.tif", 6, 5, 1, UNET_DTYPE_F32);
    save_image(ctx, dir, "image", "i32_4ch.tif", 3, 3, 4, UNET_DTYPE_I32);
    save_image(ctx, dir, "image", "u16.npy", 5, 4, 1, UNET_DTYPE_U16);
    save_image(ctx, dir, "image", "f32_chw.npy", 3, 2, 2, UNET_DTYPE_F32);
    crop_real(ctx, dir, "data/sample/train/images/00.png", "isbi_crop.png");
    crop_real(ctx, dir, "data/sample/train/masks/00.png", "isbi_mask_crop.png");

    write_safetensors(ctx, dir);

    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 2;
    c.depth = 1;
    save_model(ctx, dir, "checkpoint", "unet.safetensors", c, false, 0, NULL, 0);
    c.up = UNET_UP_BILINEAR;
    c.depth = 2;
    save_model(ctx, dir, "checkpoint", "unet_bilinear.safetensors", c, false, 0, NULL, 0);
    c = unet_config_default(UNET_ARCH_UNET_PAPER);
    c.base = 2;
    c.depth = 1;
    save_model(ctx, dir, "checkpoint", "unet_paper.safetensors", c, false, 0, NULL, 0);
    save_model(ctx, dir, "resume", "paper.safetensors", c, true, 0, NULL, 0);
    c = unet_config_default(UNET_ARCH_UNET);
    c.base = 2;
    c.depth = 1;
    save_model(ctx, dir, "checkpoint", "resume.safetensors", c, true, 0, NULL, 0);
    /* Resumable checkpoints: the usual one, one with the epoch sums, and counters near the
     * limits (train_steps = 2^40, the largest accepted; 2^63 - 2, refused). */
    save_model(ctx, dir, "resume", "resume.safetensors", c, true, 0, NULL, 0);
    static const char *const epoch[] = {"train.step", "7", "train.sampler", "7",
                                        "train.seed", "3", "train.tile", "16",
                                        "train.batch", "2", "train.best", "0.5",
                                        "train.epoch_loss", "4.25", "train.epoch_steps", "7"};
    save_model(ctx, dir, "resume", "epoch_sums.safetensors", c, true, 7, epoch, 8);
    save_model(ctx, dir, "resume", "steps_limit.safetensors", c, true, UNET_MAX_STEPS, NULL, 0);
    save_model(ctx, dir, "resume", "steps_int64.safetensors", c, true, 9223372036854775806L, NULL, 0);
    c.up = UNET_UP_BILINEAR;
    c.classes = 1;
    save_model(ctx, dir, "resume", "bilinear_sigmoid.safetensors", c, true, 0, NULL, 0);
    c = unet_config_default(UNET_ARCH_FCN8S);
    c.base = 1;
    c.fc_channels = 2;
    c.padding = 1;
    save_model(ctx, dir, "checkpoint", "fcn8s.safetensors", c, false, 0, NULL, 0);
    save_torch_style(ctx, dir);

    unet_ctx_free(ctx);
    if (failures) fprintf(stderr, "make_corpus: %d failures\n", failures);
    return failures ? 1 : 0;
}
