/* export_bioimageio.c — a model as a bioimage.io model package (model spec 0.5.3; docs/export.md).
 *
 * The package is a folder, or a zip of it, holding
 *     rdf.yaml          the description: tensors and their axes, preprocessing, weights, files
 *     weights.onnx      unet_export_onnx with softmax (sigmoid) probabilities as the output
 *     test_input.npy    a crop of the sample image as stored (1, C, H, W): uint8, uint16, int32
 *                       or float32, the dtype the preprocessing is written for
 *     test_output.npy   unet's probabilities for it (1, K, H', W') float32: one forward pass of
 *                       the crop normalised as the preprocessing says
 *     cover.png         the crop and its predicted outlines side by side (2:1)
 *     README.md         what the model is, the training data and command given, the limits
 *     model.safetensors the checkpoint itself, attached (opts->checkpoint)
 * Sizes: the input axes are min + n * step with step the pooling factor (2^depth, 32 for FCN)
 * and min the smallest valid size with room for the halo; outputs refer to the input size
 * with the offset valid convolutions lose, and same-padding networks declare the halo that
 * unet predict discards between tiles (its default overlap / 2, rounded to the step).
 *
 * Writing: every file goes into a temporary folder beside the target; a folder target is then
 * renamed into place (an existing path is never replaced), a zip target is written (stored,
 * CRC-32) through an atomic file.  A failure leaves nothing behind.
 */
#include "io/file.h"
#include "io/image_formats.h"
#include "model.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BIO_FORMAT "0.5.3"
#define BIO_MAX_TEST 512        /* largest test tensor side */
#define BIO_COVER 256          /* cover side */
#define BIO_TOLERANCE "1.0e-4"  /* absolute, ONNX Runtime against unet (docs/export.md) */

/* ---------------------------------------------------------------------------------------
 * SHA-256 (FIPS 180-4) and CRC-32 (zip) of files
 * ------------------------------------------------------------------------------------- */

struct sha256 {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t  buf[64];
    size_t   fill;
};

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) {
    return x >> n | x << (32 - n);
}

static void sha256_block(struct sha256 *s, const uint8_t *p) {
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ w[i - 2] >> 10;
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, s->h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25)) +
                      ((v[4] & v[5]) ^ (~v[4] & v[6])) + sha_k[i] + w[i];
        uint32_t t2 = (ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22)) +
                      ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof v[0]);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) s->h[i] += v[i];
}

static void sha256_init(struct sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->bytes = 0;
    s->fill = 0;
}

static void sha256_update(struct sha256 *s, const uint8_t *p, size_t n) {
    s->bytes += n;
    while (n > 0) {
        size_t k = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->buf + s->fill, p, k);
        s->fill += k, p += k, n -= k;
        if (s->fill == 64) {
            sha256_block(s, s->buf);
            s->fill = 0;
        }
    }
}

/* The digest as 64 lower-case hex digits into hex[65]. */
static void sha256_final(struct sha256 *s, char *hex) {
    uint64_t bits = s->bytes * 8;
    uint8_t pad[72] = {0x80};
    size_t n = (s->fill < 56 ? 56 : 120) - s->fill;
    for (int i = 0; i < 8; i++) pad[n + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, pad, n + 8);
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", (unsigned)s->h[i]);
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    static uint32_t table[256];
    static int ready; /* filled identically by any thread that races here */
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* Reads path once: its size, SHA-256 (hex, may be NULL) and CRC-32 (may be NULL). */
static unet_status digest_file(unet_ctx *ctx, const char *path, uint64_t *size, char *hex,
                               uint32_t *crc) {
    FILE *f = fopen(path, "rb");
    if (!f) return unet__fail(ctx, UNET_STATUS_IO, "%s: cannot read: %s", path, strerror(errno));
    uint8_t buf[1 << 14];
    struct sha256 s;
    sha256_init(&s);
    uint32_t c = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        sha256_update(&s, buf, n);
        c = crc32_update(c, buf, n);
    }
    /* Written by this package: on disk before the folder is renamed or zipped. */
    bool bad = ferror(f) != 0 || fsync(fileno(f)) != 0;
    fclose(f);
    if (bad) return unet__fail(ctx, UNET_STATUS_IO, "%s: read or sync failed", path);
    *size = s.bytes;
    if (hex) sha256_final(&s, hex);
    if (crc) *crc = c;
    return UNET_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------
 * The zip archive (stored entries, no compression: ONNX weights hardly compress)
 * ------------------------------------------------------------------------------------- */

static void le16(uint8_t *p, unsigned v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint32_t v) {
    le16(p, v & 0xffff), le16(p + 2, v >> 16);
}

/* Writes the files dir/names[i] as a zip to out (names at the archive's root). */
static unet_status write_zip(unet_ctx *ctx, const char *dir, const char *const *names, int n,
                             const char *out, const char *target) {
    struct entry {
        uint32_t crc, size, offset;
    } e[16];
    UNET_ASSERT(n <= 16);
    time_t now = time(NULL);
    struct tm t;
    gmtime_r(&now, &t);
    unsigned dos_time = (unsigned)(t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec / 2);
    unsigned dos_date = (unsigned)((t.tm_year - 80) << 9 | (t.tm_mon + 1) << 5 | t.tm_mday);
    FILE *z = fopen(out, "wb");
    if (!z) return unet__fail(ctx, UNET_STATUS_IO, "%s: cannot write: %s", target, strerror(errno));
    unet_status s = UNET_STATUS_OK;
    uint64_t offset = 0;
    char path[4096];
    uint8_t buf[1 << 14];
    bool ok = true;
    for (int i = 0; i < n && ok && s == UNET_STATUS_OK; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        uint64_t size;
        s = digest_file(ctx, path, &size, NULL, &e[i].crc);
        if (s != UNET_STATUS_OK) break;
        size_t nl = strlen(names[i]);
        if (size > 0xffffffffu || offset + size + 30 + nl > 0xffffffffu) {
            s = unet__fail(ctx, UNET_STATUS_ARG, "%s: over 4 GiB, which a zip without the zip64 "
                           "extension cannot hold; export to a folder instead", target);
            break;
        }
        e[i].size = (uint32_t)size;
        e[i].offset = (uint32_t)offset;
        uint8_t h[30] = {0};
        le32(h, 0x04034b50);
        le16(h + 4, 20);
        le16(h + 10, dos_time), le16(h + 12, dos_date);
        le32(h + 14, e[i].crc), le32(h + 18, e[i].size), le32(h + 22, e[i].size);
        le16(h + 26, (unsigned)nl);
        ok = fwrite(h, 1, 30, z) == 30 && fwrite(names[i], 1, nl, z) == nl;
        FILE *f = ok ? fopen(path, "rb") : NULL;
        uint64_t copied = 0;
        size_t k;
        while (f && ok && (k = fread(buf, 1, sizeof buf, f)) > 0) {
            ok = fwrite(buf, 1, k, z) == k;
            copied += k;
        }
        if (f) fclose(f);
        ok = ok && copied == size; /* the file as digested */
        offset += 30 + nl + size;
    }
    uint64_t cd_start = offset;
    for (int i = 0; i < n && ok && s == UNET_STATUS_OK; i++) {
        size_t nl = strlen(names[i]);
        uint8_t h[46] = {0};
        le32(h, 0x02014b50);
        le16(h + 4, 3 << 8 | 20); /* made by: unix, 2.0 */
        le16(h + 6, 20);
        le16(h + 12, dos_time), le16(h + 14, dos_date);
        le32(h + 16, e[i].crc), le32(h + 20, e[i].size), le32(h + 24, e[i].size);
        le16(h + 28, (unsigned)nl);
        le32(h + 38, (uint32_t)0100644 << 16); /* -rw-r--r-- */
        le32(h + 42, e[i].offset);
        ok = fwrite(h, 1, 46, z) == 46 && fwrite(names[i], 1, nl, z) == nl;
        offset += 46 + nl;
    }
    if (ok && s == UNET_STATUS_OK) {
        uint8_t h[22] = {0};
        le32(h, 0x06054b50);
        le16(h + 8, (unsigned)n), le16(h + 10, (unsigned)n);
        le32(h + 12, (uint32_t)(offset - cd_start)), le32(h + 16, (uint32_t)cd_start);
        ok = fwrite(h, 1, 22, z) == 22;
    }
    int err = ok ? 0 : errno;
    if (fclose(z) != 0 && ok) ok = false, err = errno;
    if (s == UNET_STATUS_OK && !ok)
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: write failed (%s)", target,
                       err ? strerror(err) : "disk full?");
    return s;
}

/* ---------------------------------------------------------------------------------------
 * Text files
 * ------------------------------------------------------------------------------------- */

/* A YAML double-quoted scalar of s (escapes ", \ and control characters). */
static void yaml_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p < 0x20) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* Closes f (opened on path) and reports a failed write. */
static unet_status close_text(unet_ctx *ctx, FILE *f, const char *path) {
    bool ok = !ferror(f) && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = ok ? 0 : errno;
    if (fclose(f) != 0 && ok) ok = false, err = errno;
    if (!ok)
        return unet__fail(ctx, UNET_STATUS_IO, "%s: write failed (%s)", path,
                          err ? strerror(err) : "disk full?");
    return UNET_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------
 * The package
 * ------------------------------------------------------------------------------------- */

struct geometry {
    int min, step;      /* valid input sides: min + n * step */
    int offset;         /* output side = input side + offset */
    int halo;           /* output pixels a consumer discards on each side (0: none) */
};

/* The smallest valid input side >= from (unet_model_round_size looks a limited way ahead, so
 * this asks again further on, up to 4096). */
static unet_status first_valid(unet_ctx *ctx, unet_model *m, int from, int *out) {
    unet_status s = UNET_STATUS_ARG;
    for (int at = from; at <= 4096 && s != UNET_STATUS_OK; at += 64)
        s = unet_model_round_size(ctx, m, at, out);
    return s;
}

/* Valid sizes of m as bioimage.io can state them, or UNET_STATUS_ARG naming what cannot be. */
static unet_status geometry_of(unet_ctx *ctx, unet_model *m, struct geometry *g) {
    int step = 1, probe = 0, oh = 0, ow = 0;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == UNET__NODE_POOL) step *= 2;
    unet_status s = first_valid(ctx, m, 64, &probe);
    if (s == UNET_STATUS_OK) s = unet_model_output_size(ctx, m, probe, probe, &oh, &ow);
    if (s != UNET_STATUS_OK) return s;
    const bool same = oh == probe;
    /* unet predict's default overlap (64) halved and rounded up to the pooling step: the
     * margin it discards around each tile of a same-padding network (predict.c). */
    g->halo = same ? (32 + step - 1) / step * step : 0;
    s = first_valid(ctx, m, same ? 2 * g->halo + step : 1, &g->min);
    if (s != UNET_STATUS_OK) return s;
    g->step = step;
    for (int k = 0; k <= 4; k++) {
        int in = g->min + k * step, r = 0;
        s = unet_model_round_size(ctx, m, in, &r);
        if (s == UNET_STATUS_OK && r == in) s = unet_model_output_size(ctx, m, in, in, &oh, &ow);
        if (s != UNET_STATUS_OK || r != in || (k > 0 && oh - in != g->offset))
            return unet__fail(ctx, UNET_STATUS_ARG,
                              "bioimage.io: the valid input sizes of this %s are not min + n * %d "
                              "with a constant output offset (%d is not valid or changes it)",
                              unet_arch_name(m->cfg.arch), step, in);
        g->offset = oh - in;
    }
    return UNET_STATUS_OK;
}

/* The largest valid side <= n, or 0. */
static int fit(const struct geometry *g, int n) {
    if (n < g->min) return 0;
    int k = (n - g->min) / g->step;
    int side = g->min + k * g->step;
    while (side > BIO_MAX_TEST && side - g->step >= g->min) side -= g->step;
    return side;
}

/* img (c, h, w) cropped to (c, ch, cw) at (y0, x0) into out (allocated). */
static unet_status crop(unet_ctx *ctx, const unet_image *img, int y0, int x0, int ch, int cw,
                        unet_image *out) {
    unet_status s = unet_image_alloc(ctx, out, cw, ch, img->c, img->dtype);
    if (s != UNET_STATUS_OK) return s;
    size_t es = unet_dtype_size(img->dtype);
    for (int c = 0; c < img->c; c++)
        for (int y = 0; y < ch; y++)
            memcpy((char *)out->data + (((size_t)c * ch + y) * cw) * es,
                   (const char *)img->data + (((size_t)c * img->h + y0 + y) * img->w + x0) * es,
                   (size_t)cw * es);
    return UNET_STATUS_OK;
}

static const char *dtype_name(unet_dtype d) {
    switch (d) {
    case UNET_DTYPE_U8: return "uint8";
    case UNET_DTYPE_U16: return "uint16";
    case UNET_DTYPE_I32: return "int32";
    case UNET_DTYPE_F32: return "float32";
    }
    return "float32";
}

/* A file of the package: its name and, once written, its SHA-256. */
struct pfile {
    const char *name;
    char        sha[65];
};

enum { F_RDF, F_README, F_ONNX, F_IN, F_OUT, F_COVER, F_CKPT, F_COUNT };

struct package {
    unet_model                 *m;
    const unet_bioimageio_opts *o;
    char                       *dir;            /* the temporary folder */
    struct pfile                files[F_COUNT];
    int                         n_files;        /* F_CKPT included or not */
    struct geometry             g;
    unet_image                  sample;         /* the test input (cropped) */
    int                         oh, ow;         /* test output size */
    const char                 *sample_name;    /* basename of the sample file */
    int                         sample_h, sample_w;
};

static char *file_path(const struct package *p, int f) {
    size_t n = strlen(p->dir) + strlen(p->files[f].name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", p->dir, p->files[f].name);
    return s;
}

static void axis(FILE *f, const char *id, const struct geometry *g, bool output) {
    fprintf(f, "      - type: space\n        id: %s\n", id);
    if (!output) {
        fprintf(f, "        size: {min: %d, step: %d}\n", g->min, g->step);
        return;
    }
    fprintf(f, "        size: {tensor_id: input, axis_id: %s, offset: %d}\n", id, g->offset);
    if (g->halo > 0) fprintf(f, "        halo: %d\n", g->halo);
}

static void channel_names(FILE *f, const char *prefix, int n) {
    fprintf(f, "      - type: channel\n        channel_names: [");
    for (int i = 0; i < n; i++) fprintf(f, "%s%s%d", i ? ", " : "", prefix, i);
    fprintf(f, "]\n");
}

static const char *arch_paper(unet_arch a) {
    return a >= UNET_ARCH_FCN32S
               ? "Long, J., Shelhamer, E., Darrell, T. Fully Convolutional Networks for Semantic "
                 "Segmentation. CVPR 2015."
               : "Ronneberger, O., Fischer, P., Brox, T. U-Net: Convolutional Networks for "
                 "Biomedical Image Segmentation. MICCAI 2015.";
}

static unet_status write_rdf(unet_ctx *ctx, const struct package *p, const char *path) {
    const unet_config *c = &p->m->cfg;
    const unet_bioimageio_opts *o = p->o;
    FILE *f = fopen(path, "w");
    if (!f) return unet__fail(ctx, UNET_STATUS_IO, "%s: cannot write: %s", path, strerror(errno));
    char stamp[32];
    time_t now = time(NULL);
    struct tm t;
    gmtime_r(&now, &t);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &t);
    fprintf(f, "# bioimage.io model description written by unet %s (unet export --bioimageio; "
               "docs/export.md)\ntype: model\nformat_version: %s\nname: ", UNET_VERSION, BIO_FORMAT);
    yaml_str(f, o->name);
    fprintf(f, "\ndescription: ");
    yaml_str(f, o->description);
    fprintf(f, "\nversion: 0.1.0\ntimestamp: %s\nauthors:\n", stamp);
    const char *a = o->authors;
    do { /* "Name; Name" */
        const char *end = strchr(a, ';');
        size_t n = end ? (size_t)(end - a) : strlen(a);
        while (n > 0 && (*a == ' ')) a++, n--;
        while (n > 0 && a[n - 1] == ' ') n--;
        if (n > 0) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(n < 255 ? n : 255), a);
            fprintf(f, "  - name: ");
            yaml_str(f, name);
            fputc('\n', f);
        }
        a = end ? end + 1 : NULL;
    } while (a);
    fprintf(f, "cite:\n  - text: ");
    yaml_str(f, arch_paper(c->arch));
    fprintf(f, "\n    doi: %s\nlicense: %s\n",
            c->arch >= UNET_ARCH_FCN32S ? "10.1109/CVPR.2015.7298965" : "10.1007/978-3-319-24574-4_28",
            o->license);
    fprintf(f, "tags: [%s, segmentation, 2d, onnx, unet-c]\ndocumentation: %s\ncovers: [%s]\n",
            unet_arch_name(c->arch), p->files[F_README].name, p->files[F_COVER].name);
    /* inputs */
    const unet_dtype dt = p->sample.dtype;
    fprintf(f, "inputs:\n  - id: input\n    description: ");
    yaml_str(f, dt == UNET_DTYPE_U8    ? "8-bit image, scaled by 1/255 as unet predict does"
                : dt == UNET_DTYPE_U16 ? "16-bit image, scaled by its 1 and 99.8 percentiles"
                                       : "image used as stored (float or integer)");
    fprintf(f, "\n    axes:\n      - type: batch\n");
    channel_names(f, "channel", c->in_channels);
    axis(f, "y", &p->g, false);
    axis(f, "x", &p->g, false);
    fprintf(f, "    data:\n      type: %s\n    test_tensor:\n      source: %s\n      sha256: %s\n",
            dtype_name(dt), p->files[F_IN].name, p->files[F_IN].sha);
    fprintf(f, "    preprocessing:\n      - id: ensure_dtype\n        kwargs: {dtype: float32}\n");
    if (dt == UNET_DTYPE_U8)
        fprintf(f, "      - id: scale_linear\n        kwargs: {gain: %.17g}\n", 1.0 / 255.0);
    else if (dt == UNET_DTYPE_U16)
        fprintf(f, "      - id: scale_range\n        kwargs: {axes: [y, x], min_percentile: 1.0, "
                   "max_percentile: 99.8}\n");
    if (dt == UNET_DTYPE_U8 || dt == UNET_DTYPE_U16)
        fprintf(f, "      - id: ensure_dtype\n        kwargs: {dtype: float32}\n");
    /* outputs */
    fprintf(f, "outputs:\n  - id: probabilities\n    description: ");
    yaml_str(f, c->classes == 1 ? "foreground probability (sigmoid)"
                                : "class probabilities (softmax over the channel axis)");
    fprintf(f, "\n    axes:\n      - type: batch\n");
    channel_names(f, "class", c->classes);
    axis(f, "y", &p->g, true);
    axis(f, "x", &p->g, true);
    fprintf(f, "    data:\n      type: float32\n      range: [0.0, 1.0]\n    test_tensor:\n"
               "      source: %s\n      sha256: %s\n",
            p->files[F_OUT].name, p->files[F_OUT].sha);
    fprintf(f, "weights:\n  onnx:\n    source: %s\n    sha256: %s\n    opset_version: 13\n",
            p->files[F_ONNX].name, p->files[F_ONNX].sha);
    if (p->n_files > F_CKPT)
        fprintf(f, "attachments:\n  - source: %s\n    sha256: %s\n", p->files[F_CKPT].name,
                p->files[F_CKPT].sha);
    fprintf(f, "config:\n  bioimageio:\n    reproducibility_tolerance:\n"
               "      - {absolute_tolerance: %s, relative_tolerance: 0.0, "
               "mismatched_elements_per_million: 0}\n", BIO_TOLERANCE);
    fprintf(f, "  unet:\n    version: %s\n    arch: %s\n    in_channels: %d\n    classes: %d\n"
               "    base: %d\n    depth: %d\n    padding: %d\n    up: %s\n    batchnorm: %s\n",
            UNET_VERSION, unet_arch_name(c->arch), c->in_channels, c->classes, c->base, c->depth,
            c->padding, c->up == UNET_UP_BILINEAR ? "bilinear" : "transpose",
            c->batchnorm ? "true" : "false");
    return close_text(ctx, f, path);
}

static void readme_text(FILE *f, const char *text, const char *missing) {
    fprintf(f, "%s\n", text && *text ? text : missing);
}

static unet_status write_readme(unet_ctx *ctx, const struct package *p, const char *path) {
    const unet_config *c = &p->m->cfg;
    const unet_bioimageio_opts *o = p->o;
    FILE *f = fopen(path, "w");
    if (!f) return unet__fail(ctx, UNET_STATUS_IO, "%s: cannot write: %s", path, strerror(errno));
    const bool unet = c->arch <= UNET_ARCH_UNET_PAPER;
    fprintf(f, "# %s: model card and validation\n\n%s\n\n", o->name, o->description);
    fprintf(f, "Exported by unet %s (`unet export --bioimageio`) from a `%s` model: "
               "%d input channel%s, %d class%s, base width %d, ",
            UNET_VERSION, unet_arch_name(c->arch), c->in_channels, c->in_channels > 1 ? "s" : "",
            c->classes, c->classes > 1 ? "es" : "", c->base);
    if (unet)
        fprintf(f, "depth %d, %s convolutions%s, %s upsampling; %zu parameters.\n\n", c->depth,
                c->padding ? "same-padded" : "valid (unpadded)", c->batchnorm ? " with batch-norm" : "",
                c->up == UNET_UP_BILINEAR ? "bilinear" : "transposed-convolution",
                unet_model_param_count(p->m));
    else
        fprintf(f, "VGG backbone with conv1_1 padding %d; %zu parameters.\n\n", c->padding,
                unet_model_param_count(p->m));
    fprintf(f, "## Training data\n\n");
    readme_text(f, o->training_data, "Not stated when the package was made (`unet export "
                                     "--training-data TEXT` records it).");
    fprintf(f, "\n## Training command\n\n");
    if (o->training_command && *o->training_command)
        fprintf(f, "```sh\n%s\n```\n", o->training_command);
    else
        readme_text(f, NULL, "Not stated when the package was made (`unet export "
                             "--training-command TEXT` records it).");
    fprintf(f, "\n## Input and output\n\n"
               "Input `input` (batch, channel, y, x): %s images; y and x take %d + n x %d pixels. "
               "Output `probabilities` (batch, class, y, x): %s, %s.\n",
            dtype_name(p->sample.dtype), p->g.min, p->g.step,
            c->classes == 1 ? "the sigmoid of the single logit" : "softmax over the classes",
            p->g.offset ? "smaller than the input by the context valid convolutions use"
                        : "the input's size");
    if (p->g.halo)
        fprintf(f, "When predicting in tiles, discard %d output pixels on each side of a tile "
                   "(the halo), as `unet predict` does with its default overlap.\n", p->g.halo);
    fprintf(f, "\nNormalisation, as `unet predict` does it for this dtype: %s\n",
            p->sample.dtype == UNET_DTYPE_U8
                ? "x / 255 (rdf: scale_linear)."
                : p->sample.dtype == UNET_DTYPE_U16
                      ? "per image and channel (x - p1) / (p99.8 - p1) with numpy's linear "
                        "percentiles (rdf: scale_range, whose eps of 1e-6 is the only difference)."
                      : "none, the values as they are.");
    fprintf(f, "\n## Validation\n\n"
               "`test_input.npy` is a %dx%d crop of `%s`; `test_output.npy` is what unet computes "
               "for it, and `weights.onnx` reproduces it within %s (absolute) in ONNX Runtime "
               "(unet's tests check every package they make). To score the model on annotated "
               "images of your own: `unet predict --model model.safetensors --input images/ "
               "--output masks/` then `unet eval --pred masks/ --truth truth/` (pixel error, "
               "IoU, Dice, Rand error, SEG).\n",
            p->sample.w, p->sample.h, p->sample_name, BIO_TOLERANCE);
    fprintf(f, "\n## Limits\n\n"
               "- The preprocessing is written for %s input, the dtype of the sample: images of "
               "another dtype need another package (unet predict picks the normalisation by "
               "dtype, the bioimage.io description cannot).\n"
               "- The ONNX file is one forward pass; unet predict's overlap-tile with mirrored "
               "borders and test-time augmentation are the consumer's tiling here.\n",
            dtype_name(p->sample.dtype));
    return close_text(ctx, f, path);
}

/* The sample's crop, its probabilities, test tensors and the cover. */
static unet_status write_tensors(unet_ctx *ctx, struct package *p) {
    unet_model *m = p->m;
    const int C = m->cfg.in_channels, K = m->cfg.classes;
    unet_image full = {0}, rgb = {0};
    float *x = NULL, *prob = NULL, *gray = NULL;
    int32_t *labels = NULL;
    char *path = NULL;
    unet_status s = unet_image_load(ctx, p->o->sample, 0, &full);
    if (s != UNET_STATUS_OK) goto done;
    if (full.c != C) {
        s = unet__fail(ctx, UNET_STATUS_ARG, "%s has %d channels; the model takes %d", p->o->sample,
                       full.c, C);
        goto done;
    }
    const int H = fit(&p->g, full.h), W = fit(&p->g, full.w);
    p->sample_h = full.h, p->sample_w = full.w;
    if (H == 0 || W == 0) {
        s = unet__fail(ctx, UNET_STATUS_ARG, "%s: the sample (%dx%d) is smaller than the model's "
                       "smallest input in the package (%dx%d)", p->o->sample, full.w, full.h,
                       p->g.min, p->g.min);
        goto done;
    }
    s = crop(ctx, &full, (full.h - H) / 2, (full.w - W) / 2, H, W, &p->sample);
    if (s != UNET_STATUS_OK) goto done;
    const int OH = H + p->g.offset, OW = W + p->g.offset;
    p->oh = OH, p->ow = OW;
    const size_t P = (size_t)OH * OW;
    x = malloc(sizeof(float) * (size_t)C * H * W);
    prob = malloc(sizeof(float) * (size_t)K * P);
    labels = malloc(sizeof(int32_t) * P);
    gray = malloc(sizeof(float) * P);
    if (!x || !prob || !labels || !gray) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "bioimage.io: out of memory for the test tensors");
        goto done;
    }
    if ((s = unet_image_to_float(ctx, &p->sample, UNET_NORM_AUTO, x)) != UNET_STATUS_OK ||
        (s = unet_model_forward(ctx, m, x, 1, H, W, prob)) != UNET_STATUS_OK ||
        (s = unet_probabilities(ctx, prob, K, OH, OW)) != UNET_STATUS_OK)
        goto done;
    const int64_t in_shape[4] = {1, C, H, W}, out_shape[4] = {1, K, OH, OW};
    const struct {
        int f;
        unet_dtype dt;
        const int64_t *shape;
        const void *data;
    } tensors[2] = {{F_IN, p->sample.dtype, in_shape, p->sample.data},
                    {F_OUT, UNET_DTYPE_F32, out_shape, prob}};
    for (int i = 0; i < 2 && s == UNET_STATUS_OK; i++) {
        free(path);
        if (!(path = file_path(p, tensors[i].f))) {
            s = unet__fail(ctx, UNET_STATUS_NOMEM, "bioimage.io: out of memory");
            break;
        }
        s = unet__npy_save_nd(ctx, path, path, tensors[i].dt, 4, tensors[i].shape, tensors[i].data);
    }
    if (s != UNET_STATUS_OK) goto done;
    /* Cover: the first channel (min-max stretched) and its outlines side by side, on the
     * output's central square of at most BIO_COVER pixels (a 2:1 picture under 500 KB). */
    unet_argmax(prob, K, OH, OW, UNET_OUTPUT_PROBABILITIES, labels);
    const int S = OH < OW ? (OH < BIO_COVER ? OH : BIO_COVER) : (OW < BIO_COVER ? OW : BIO_COVER);
    const int oy = (OH - S) / 2, ox = (OW - S) / 2;             /* in the output */
    const int iy = (H - OH) / 2 + oy, ix = (W - OW) / 2 + ox;   /* in the input */
    const size_t SS = (size_t)S * S;
    float lo = x[(size_t)iy * W + ix], hi = lo;
    for (int y = 0; y < S; y++)
        for (int i = 0; i < S; i++) {
            float v = x[(size_t)(y + iy) * W + i + ix];
            gray[(size_t)y * S + i] = v;
            lo = v < lo ? v : lo, hi = v > hi ? v : hi;
            labels[(size_t)y * S + i] = labels[(size_t)(y + oy) * OW + i + ox]; /* in place: */
        }                                                  /* row y reads row y + oy >= y */
    for (size_t i = 0; i < SS; i++) gray[i] = hi > lo ? (gray[i] - lo) / (hi - lo) : 0.0f;
    if ((s = unet_image_alloc(ctx, &rgb, 2 * S, S, 3, UNET_DTYPE_U8)) != UNET_STATUS_OK) goto done;
    uint8_t *over = malloc(3 * SS);
    if (!over) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "bioimage.io: out of memory for the cover");
        goto done;
    }
    s = unet_overlay(ctx, gray, labels, S, S, over);
    for (int ch = 0; ch < 3 && s == UNET_STATUS_OK; ch++)
        for (int y = 0; y < S; y++) {
            uint8_t *row = (uint8_t *)rgb.data + ((size_t)ch * S + y) * 2 * S;
            for (int i = 0; i < S; i++) {
                row[i] = (uint8_t)(gray[(size_t)y * S + i] * 255.0f + 0.5f);
                row[S + i] = over[((size_t)ch * S + y) * S + i];
            }
        }
    free(over);
    free(path);
    path = NULL;
    if (s == UNET_STATUS_OK && !(path = file_path(p, F_COVER)))
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "bioimage.io: out of memory");
    if (s == UNET_STATUS_OK) s = unet_image_save(ctx, path, &rgb);
done:
    free(path);
    free(x), free(prob), free(labels), free(gray);
    unet_image_free(&full);
    unet_image_free(&rgb);
    return s;
}

/* Removes the temporary folder and the package's files in it. */
static void remove_dir(const struct package *p) {
    if (!p->dir) return;
    for (int f = 0; f < F_COUNT; f++) {
        char *path = file_path(p, f);
        if (path) unlink(path);
        free(path);
    }
    rmdir(p->dir);
}

static bool valid_name(const char *s) {
    size_t n = strlen(s);
    if (n < 5 || n > 128) return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("_- ()", *c)))
            return false;
    return true;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

unet_bioimageio_opts unet_bioimageio_defaults(void) {
    unet_bioimageio_opts o = {.authors = "unknown", .license = "CC-BY-4.0", .checkpoint = 1};
    return o;
}

unet_status unet_export_bioimageio(unet_ctx *ctx, unet_model *m, const char *path,
                                   const unet_bioimageio_opts *opts) {
    if (!m || !path || !opts || !opts->sample)
        return unet__fail(ctx, UNET_STATUS_ARG, "export_bioimageio: NULL %s",
                          !m ? "model" : !path ? "path" : !opts ? "options" : "sample image");
    unet_bioimageio_opts o = *opts;
    static const char *const titles[] = {"U-Net", "U-Net (paper)", "FCN-32s", "FCN-16s",
                                         "FCN-8s"};
    const char *title = titles[m->cfg.arch];
    char name[160], desc[300];
    snprintf(name, sizeof name, "%s segmentation (unet)", title);
    snprintf(desc, sizeof desc, "%s for %d-class segmentation of %d-channel images, trained "
             "and exported with unet (U-Net and FCN in C).", title, m->cfg.classes,
             m->cfg.in_channels);
    if (!o.name) o.name = name;
    if (!o.description) o.description = desc;
    if (!o.authors || !*o.authors) o.authors = "unknown";
    if (!o.license || !*o.license) o.license = "CC-BY-4.0";
    if (!valid_name(o.name))
        return unet__fail(ctx, UNET_STATUS_ARG, "bioimage.io: name '%s' must be 5 to 128 letters, "
                          "digits, spaces and _-()", o.name);
    if (strlen(o.description) > 1024)
        return unet__fail(ctx, UNET_STATUS_ARG, "bioimage.io: description over 1024 characters");
    for (const char *c = o.license; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '.' || *c == '+'))
            return unet__fail(ctx, UNET_STATUS_ARG, "bioimage.io: license '%s' is not an SPDX "
                              "identifier (e.g. MIT, CC-BY-4.0)", o.license);
    const bool zip = has_suffix(path, ".zip") || has_suffix(path, ".ZIP");
    struct stat st;
    if (!zip && lstat(path, &st) == 0)
        return unet__fail(ctx, UNET_STATUS_IO, "%s exists; the package goes to a new folder (or "
                          "to FILE.zip)", path);
    struct package p = {.m = m, .o = &o};
    static const char *const names[F_COUNT] = {"rdf.yaml", "README.md", "weights.onnx",
                                               "test_input.npy", "test_output.npy", "cover.png",
                                               "model.safetensors"};
    for (int f = 0; f < F_COUNT; f++) p.files[f].name = names[f];
    p.n_files = o.checkpoint ? F_COUNT : F_CKPT;
    const char *slash = strrchr(o.sample, '/');
    p.sample_name = slash ? slash + 1 : o.sample;
    struct unet__atomic at = {0};
    char *fp = NULL;
    unet_status s = geometry_of(ctx, m, &p.g);
    if (s != UNET_STATUS_OK) return s;
    size_t n = strlen(path) + 16;
    p.dir = malloc(n);
    if (!p.dir) return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
    /* mkdir (not mkdtemp, which makes it 0700): the kernel applies the umask, and the folder
     * becomes the package as it is. */
    uint64_t x = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 20 ^ (uint64_t)(uintptr_t)&p;
    int made = -1;
    for (int attempt = 0; attempt < 64 && made != 0; attempt++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        snprintf(p.dir, n, "%s.tmp.%06llx", path, (unsigned long long)(x >> 40));
        made = mkdir(p.dir, 0777);
        if (made != 0 && errno != EEXIST) break;
    }
    if (made != 0) {
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot create a temporary folder beside it: %s",
                       path, strerror(errno));
        free(p.dir);
        return s;
    }
    s = write_tensors(ctx, &p);
    for (int f = F_ONNX; f < p.n_files && s == UNET_STATUS_OK; f++) {
        free(fp);
        if (!(fp = file_path(&p, f))) {
            s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
            break;
        }
        if (f == F_ONNX) s = unet_export_onnx(ctx, m, fp, UNET_OUTPUT_PROBABILITIES);
        if (f == F_CKPT) s = unet_model_save(ctx, m, fp);
        uint64_t size;
        if (s == UNET_STATUS_OK) s = digest_file(ctx, fp, &size, p.files[f].sha, NULL);
    }
    for (int f = F_RDF; f <= F_README && s == UNET_STATUS_OK; f++) {
        free(fp);
        if (!(fp = file_path(&p, f))) {
            s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
            break;
        }
        s = f == F_RDF ? write_rdf(ctx, &p, fp) : write_readme(ctx, &p, fp);
    }
    if (s == UNET_STATUS_OK && zip) {
        const char *list[F_COUNT];
        for (int f = 0; f < p.n_files; f++) list[f] = p.files[f].name;
        s = unet__atomic_begin(ctx, &at, path);
        if (s == UNET_STATUS_OK) s = write_zip(ctx, p.dir, list, p.n_files, at.tmp, path);
        if (s == UNET_STATUS_OK) s = unet__atomic_commit(ctx, &at);
        else unet__atomic_abort(&at);
    } else if (s == UNET_STATUS_OK && rename(p.dir, path) != 0) {
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot move the package into place: %s", path,
                       strerror(errno));
    } else if (s == UNET_STATUS_OK) {
        free(p.dir);
        p.dir = NULL; /* it is the package now */
    }
    free(fp);
    remove_dir(&p);
    free(p.dir);
    unet_image_free(&p.sample);
    return s;
}
