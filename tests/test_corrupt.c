/* test_corrupt.c — every file in tests/data/corrupt/ through the loader of its kind, and the
 * kinds of damage each loader must survive: the outcome is always a status other than OK with
 * a message naming the file, never a crash, a hang, a leak or a giant allocation.
 *
 * Files are named by kind (the prefix says which loader reads them):
 *   image_*    unet_image_pages + unet_image_load of every page: some call fails (FORMAT)
 *   st_*       the safetensors parser (unet__st_open): FORMAT
 *   model_*    unet_model_load: FORMAT, SHAPE or NUMERIC
 *   resume_*   unet_model_load_training: FORMAT, SHAPE or NUMERIC
 * A file with another prefix is a test failure, so every regression file is checked.  The
 * image_* files of test_image_io.c's table are checked there too (with their exact status);
 * fuzz-found crashes are added here under the prefix of their loader (docs/robustness.md).
 *
 * The st_*, model_*, resume_* and the newer image_* files are made by write_corrupt_files below:
 * `test_corrupt --write-corrupt DIR` writes them (the committed copies came from it).  The test
 * checks the committed files by kind and a fresh set against the exact status and message
 * fragment of its table, so a change in the loaders shows up as a changed message here.
 */
#include "harness.h"
#include "io/file.h"
#include "io/image_formats.h"
#include "model.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#define CORRUPT_DIR "tests/data/corrupt"

/* ---- writing the corrupt files ---------------------------------------------------------- */

static int write_failures;

static void wfail(const char *name, const char *why) {
    printf("  cannot write %s: %s\n", name, why);
    write_failures++;
}

static void put_file(const char *dir, const char *name, const void *data, size_t size) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!write_all(path, data, size)) wfail(name, "write failed");
}

/* A safetensors file from a header string and n data bytes (0x3f: small positive floats). */
static void put_st(const char *dir, const char *name, const char *header, size_t data_bytes) {
    size_t h = strlen(header), size = 8 + h + data_bytes;
    unsigned char *b = malloc(size);
    if (!b) {
        wfail(name, "out of memory");
        return;
    }
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(((uint64_t)h >> (8 * i)) & 0xff);
    memcpy(b + 8, header, h);
    memset(b + 8 + h, 0x3f, data_bytes);
    put_file(dir, name, b, size);
    free(b);
}

/* ---- models: a valid tiny U-Net's entries and metadata, mutated one way per file ---- */

struct model_file {
    struct unet__st_entry e[80];
    int                   n;
    const char           *meta[64];
    char                  meta_buf[32][64];
    int                   n_meta;   /* pairs */
    float                *scratch;  /* replacement data (owned) */
};

/* The entries and metadata unet_model_save writes for m (metadata read back from a save). */
static bool model_file_init(struct model_file *f, unet_model *m, bool training, const char *tmp) {
    memset(f, 0, sizeof *f);
    unet_ctx *ctx = unet_ctx_create();
    unet_status s = training ? unet_model_save_training(ctx, m, tmp, NULL, 0)
                             : unet_model_save(ctx, m, tmp);
    struct unet__safetensors *st = NULL;
    if (s == UNET_STATUS_OK) s = unet__st_open(ctx, tmp, &st);
    unet_ctx_free(ctx);
    if (s != UNET_STATUS_OK) return false;
    /* Keys go to a static table (the same keys every time), values to f->meta_buf. */
    static char keys[32][32];
    for (int i = 0; i < st->meta_count && i < 32; i++) {
        snprintf(keys[i], sizeof keys[i], "%s", st->meta[2 * i]);
        snprintf(f->meta_buf[i], sizeof f->meta_buf[i], "%s", st->meta[2 * i + 1]);
        f->meta[2 * i] = keys[i];
        f->meta[2 * i + 1] = f->meta_buf[i];
        f->n_meta++;
    }
    unet__st_close(st);
    for (int i = 0; i < m->n_params; i++) {
        const struct unet__param *p = &m->params[i];
        struct unet__st_entry *e = &f->e[f->n++];
        e->name = p->name;
        e->ndim = p->ndim;
        memcpy(e->shape, p->shape, sizeof p->shape);
        e->dtype = p->kind == UNET__PARAM_COUNTER ? UNET__DTYPE_I64 : UNET__DTYPE_F32;
        e->data = p->kind == UNET__PARAM_COUNTER ? (const void *)&m->counters[p->offset]
                                                 : (const void *)unet__model_param_data(m, p);
    }
    if (training) {
        static const char *names[2] = {"optimizer.exp_avg", "optimizer.exp_avg_sq"};
        const float *data[2] = {m->opt_m, m->opt_v};
        for (int k = 0; k < 2; k++) {
            struct unet__st_entry *e = &f->e[f->n++];
            e->name = names[k];
            e->dtype = UNET__DTYPE_F32;
            e->ndim = 1;
            e->shape[0] = (int64_t)m->n_weights;
            e->data = data[k];
        }
    }
    return true;
}

static struct unet__st_entry *model_entry(struct model_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0) return &f->e[i];
    return NULL;
}

static void model_set_meta(struct model_file *f, const char *key, const char *value) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) {
            snprintf(f->meta_buf[i], sizeof f->meta_buf[i], "%s", value);
            return;
        }
    snprintf(f->meta_buf[f->n_meta], sizeof f->meta_buf[0], "%s", value);
    f->meta[2 * f->n_meta] = key;
    f->meta[2 * f->n_meta + 1] = f->meta_buf[f->n_meta];
    f->n_meta++;
}

/* Appends key = value even when key is there already (JSON lets a key appear twice). */
static void model_add_meta(struct model_file *f, const char *key, const char *value) {
    snprintf(f->meta_buf[f->n_meta], sizeof f->meta_buf[0], "%s", value);
    f->meta[2 * f->n_meta] = key;
    f->meta[2 * f->n_meta + 1] = f->meta_buf[f->n_meta];
    f->n_meta++;
}

static void model_drop(struct model_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0) {
            memmove(&f->e[i], &f->e[i + 1], sizeof f->e[0] * (size_t)(f->n - i - 1));
            f->n--;
            return;
        }
}

/* Replaces the data of entry `name` by a copy with element k set to v. */
static void model_poke(struct model_file *f, const char *name, size_t k, float v) {
    struct unet__st_entry *e = model_entry(f, name);
    if (!e) return;
    size_t n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (size_t)e->shape[d];
    free(f->scratch);
    f->scratch = malloc(n * sizeof(float));
    memcpy(f->scratch, e->data, n * sizeof(float));
    f->scratch[k] = v;
    e->data = f->scratch;
}

static void model_write(struct model_file *f, const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unet_ctx *ctx = unet_ctx_create();
    if (unet__st_write(ctx, path, f->e, f->n, f->meta, f->n_meta) != UNET_STATUS_OK)
        wfail(name, unet_ctx_errmsg(ctx));
    unet_ctx_free(ctx);
    free(f->scratch);
    f->scratch = NULL;
}

static unet_model *tiny_model(bool training) {
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 2;
    c.depth = 1;
    unet_model *m = NULL;
    unet_ctx *ctx = unet_ctx_create();
    unet_ctx_set_threads(ctx, 1);
    if (unet_model_create(ctx, &c, 5, &m) != UNET_STATUS_OK) m = NULL;
    if (m && training) {
        float x[64];
        int32_t t[64];
        for (int i = 0; i < 64; i++) x[i] = (float)(i % 7) / 7.0f, t[i] = i % 3 == 0;
        unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
        double L;
        if (unet_train_step(ctx, m, &o, UNET_LOSS_CE, x, t, NULL, 1, 8, 8, &L) != UNET_STATUS_OK) {
            unet_model_free(m);
            m = NULL;
        }
    }
    unet_ctx_free(ctx);
    return m;
}

static void write_model_files(const char *dir) {
    char tmp[512];
    tmp_path(tmp, sizeof tmp, "valid.safetensors");
    unet_model *m = tiny_model(false), *mt = tiny_model(true);
    struct model_file f;
    if (!m || !mt || !model_file_init(&f, m, false, tmp)) {
        unet_model_free(m);
        unet_model_free(mt);
        wfail("model_*", "cannot make the tiny model");
        return;
    }
    const char *w_inc = "inc.double_conv.0.weight";
    struct unet__st_entry saved;

#define VARIANT(name, ...)                                                                     \
    do {                                                                                       \
        model_file_init(&f, m, false, tmp);                                                    \
        __VA_ARGS__;                                                                           \
        model_write(&f, dir, name);                                                            \
    } while (0)

    VARIANT("model_missing_tensor.safetensors", model_drop(&f, "outc.conv.weight"));
    VARIANT("model_wrong_shape.safetensors", model_entry(&f, w_inc)->shape[2] = 1;
            model_entry(&f, w_inc)->shape[3] = 9);
    VARIANT("model_wrong_dtype.safetensors", model_entry(&f, w_inc)->dtype = UNET__DTYPE_I32);
    VARIANT("model_unexpected_tensor.safetensors", saved = *model_entry(&f, w_inc);
            saved.name = "extra.weight"; f.e[f.n++] = saved);
    VARIANT("model_nan_weight.safetensors", model_poke(&f, w_inc, 3, NAN));
    VARIANT("model_inf_weight.safetensors", model_poke(&f, "outc.conv.bias", 0, -INFINITY));
    VARIANT("model_nan_running_mean.safetensors",
            model_poke(&f, "inc.double_conv.1.running_mean", 1, NAN));
    VARIANT("model_negative_running_var.safetensors",
            model_poke(&f, "inc.double_conv.4.running_var", 0, -1.0f));
    /* Finite, but batch-norm folds to a scale of 3e39 for inference (every output Inf). */
    static const float small_var[2] = {0.01f, 1.0f};
    VARIANT("model_bn_folds_beyond_float.safetensors",
            model_poke(&f, "inc.double_conv.1.weight", 0, 3e38f);
            model_entry(&f, "inc.double_conv.1.running_var")->data = small_var);
    VARIANT("model_unknown_arch.safetensors", model_set_meta(&f, "arch", "resnet50"));
    VARIANT("model_init_unknown.safetensors", model_set_meta(&f, "init", "xavier"));
    VARIANT("model_batchnorm_7.safetensors", model_set_meta(&f, "batchnorm", "7"));
    VARIANT("model_duplicate_meta_key.safetensors", model_add_meta(&f, "depth", "9"));
    VARIANT("model_huge_base_metadata.safetensors", model_set_meta(&f, "base", "1024");
            model_set_meta(&f, "depth", "6"));
    VARIANT("model_huge_fcn_metadata.safetensors", model_set_meta(&f, "arch", "fcn8s");
            model_set_meta(&f, "base", "64"); model_set_meta(&f, "fc_channels", "65536"));
    VARIANT("model_depth_not_integer.safetensors", model_set_meta(&f, "depth", "two"));
    VARIANT("model_zero_base.safetensors", model_set_meta(&f, "base", "0"));
    VARIANT("model_dropout_nan.safetensors", model_set_meta(&f, "dropout", "nan"));
    VARIANT("model_train_steps_garbage.safetensors", model_set_meta(&f, "train_steps", "-5x"));
    /* Versions and the input layout (docs/checkpoints.md): a newer checkpoint format is
     * refused naming the unet that wrote it; bad layout values are refused like the
     * architecture's. */
    VARIANT("model_format_newer.safetensors", model_set_meta(&f, "format_version", "2");
            model_set_meta(&f, "unet_version", "9.0.0"));
    VARIANT("model_format_version_garbage.safetensors", model_set_meta(&f, "format_version", "1.5"));
    VARIANT("model_channels_bad.safetensors", model_set_meta(&f, "channels", "red"));
    VARIANT("model_channels_count_mismatch.safetensors", model_set_meta(&f, "channels", "0,1"));
    VARIANT("model_channel_axis_bad.safetensors", model_set_meta(&f, "channel_axis", "sideways"));
    VARIANT("model_counter_wrong_dtype.safetensors",
            model_entry(&f, "inc.double_conv.1.num_batches_tracked")->dtype = UNET__DTYPE_F64);
    VARIANT("model_counter_not_scalar.safetensors",
            model_entry(&f, "inc.double_conv.1.num_batches_tracked")->ndim = 1;
            model_entry(&f, "inc.double_conv.1.num_batches_tracked")->shape[0] = 1;
            model_entry(&f, "inc.double_conv.1.num_batches_tracked")->dtype = UNET__DTYPE_F32);
    /* A PyTorch-style file (no metadata) whose names are not a U-Net or FCN. */
    VARIANT("model_no_metadata_unknown.safetensors", f.n_meta = 0;
            for (int i = 0; i < f.n; i++) f.e[i].name = i % 2 ? "layer.bias" : "layer.weight";
            f.n = 1);

    /* A PyTorch-style file whose inferred architecture is huge (base 512, depth 7: billions of
     * parameters) though the file holds a few tensors: refused before allocating. */
    {
        static uint16_t bf16[512 * 9];
        static float one[1] = {1.0f};
        struct unet__st_entry e[9];
        static char names[8][64];
        int n = 0;
        e[n++] = (struct unet__st_entry){"inc.double_conv.0.weight", UNET__DTYPE_BF16, 4,
                                         {512, 1, 3, 3}, bf16};
        e[n++] = (struct unet__st_entry){"outc.conv.weight", UNET__DTYPE_F32, 4, {1, 1, 1, 1}, one};
        for (int k = 1; k <= 7; k++) {
            snprintf(names[k], sizeof names[k], "down%d.maxpool_conv.1.double_conv.0.weight", k);
            e[n++] = (struct unet__st_entry){names[k], UNET__DTYPE_F32, 1, {1}, one};
        }
        char path[512];
        snprintf(path, sizeof path, "%s/model_inferred_huge.safetensors", dir);
        unet_ctx *ctx = unet_ctx_create();
        if (unet__st_write(ctx, path, e, n, NULL, 0) != UNET_STATUS_OK)
            wfail("model_inferred_huge", unet_ctx_errmsg(ctx));
        unet_ctx_free(ctx);
    }

    /* A valid checkpoint cut in the middle of its data. */
    {
        model_file_init(&f, m, false, tmp);
        model_write(&f, dir, "model_truncated.safetensors");
        char path[512];
        snprintf(path, sizeof path, "%s/model_truncated.safetensors", dir);
        size_t size;
        unsigned char *b = read_all(path, &size);
        if (b) put_file(dir, "model_truncated.safetensors", b, size / 2 + 3);
        free(b);
    }

    /* Resumable checkpoints. */
    VARIANT("resume_no_optimizer.safetensors", (void)0);
#undef VARIANT
#define VARIANT(name, ...)                                                                     \
    do {                                                                                       \
        model_file_init(&f, mt, true, tmp);                                                    \
        __VA_ARGS__;                                                                           \
        model_write(&f, dir, name);                                                            \
    } while (0)
    VARIANT("resume_bad_rng.safetensors", model_set_meta(&f, "rng0", "not hex"));
    VARIANT("resume_nan_exp_avg.safetensors", model_poke(&f, "optimizer.exp_avg", 5, NAN));
    VARIANT("resume_negative_exp_avg_sq.safetensors",
            model_poke(&f, "optimizer.exp_avg_sq", 2, -1e-3f));
    VARIANT("resume_optimizer_wrong_size.safetensors",
            model_entry(&f, "optimizer.exp_avg_sq")->shape[0] -= 1);
#undef VARIANT
    unet_model_free(m);
    unet_model_free(mt);
}

/* ---- raw safetensors damage ---- */

static void write_st_files(const char *dir) {
    put_file(dir, "st_empty.safetensors", "", 0);
    put_file(dir, "st_short.safetensors", "\x10\0\0\0\0", 5);
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    {
        /* Header length far past the end of a 100-byte file, and one of 2^63. */
        unsigned char b[100] = {0};
        b[0] = 0x40, b[1] = 0x42, b[2] = 0x0f; /* 1000000 */
        memcpy(b + 8, ok, strlen(ok));
        put_file(dir, "st_header_past_end.safetensors", b, sizeof b);
        memset(b, 0, 8);
        b[7] = 0x80;
        put_file(dir, "st_header_len_2e63.safetensors", b, sizeof b);
    }
    put_st(dir, "st_header_not_json.safetensors", "{\"a\": {\"dtype\": F32", 8);
    put_st(dir, "st_header_array.safetensors", "[1, 2, 3]", 0);
    put_st(dir, "st_header_truncated.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]", 8);
    put_st(dir, "st_entry_not_object.safetensors", "{\"a\": 5}", 0);
    put_st(dir, "st_missing_fields.safetensors", "{\"a\": {\"dtype\": \"F32\"}}", 0);
    put_st(dir, "st_bad_dtype.safetensors",
           "{\"a\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,32]}}", 32);
    put_st(dir, "st_too_many_dims.safetensors",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1);
    put_st(dir, "st_negative_dim.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8);
    put_st(dir, "st_fractional_dim.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,6]}}", 6);
    put_st(dir, "st_string_dim.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8);
    put_st(dir, "st_shape_overflow.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[4503599627370496,4503599627370496,16],"
           "\"data_offsets\":[0,0]}}", 0);
    put_st(dir, "st_offsets_past_end.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1000],\"data_offsets\":[0,4000]}}", 40);
    put_st(dir, "st_offsets_reversed.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8);
    put_st(dir, "st_offsets_negative.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8);
    put_st(dir, "st_offsets_huge.safetensors",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1e300,1.0000000000000002e300]}}",
           8);
    put_st(dir, "st_offsets_one_number.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8);
    put_st(dir, "st_offsets_strings.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", 8);
    put_st(dir, "st_size_mismatch.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    put_st(dir, "st_duplicate_name.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    put_st(dir, "st_overlapping_offsets.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    put_st(dir, "st_trailing_bytes.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16);
    put_st(dir, "st_metadata_not_object.safetensors", "{\"__metadata__\": [1]}", 0);
    put_st(dir, "st_metadata_not_string.safetensors", "{\"__metadata__\": {\"base\": 64}}", 0);
}

/* ---- images: damage the loaders of test_image_io.c's table do not cover ---- */

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* A PNG of an IHDR (with a correct CRC), an IDAT of `idat_len` claimed bytes and IEND. */
static void put_png(const char *dir, const char *name, uint32_t w, uint32_t h, int depth,
                    int color, uint32_t idat_len) {
    unsigned char b[96] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t k = 8;
    be32(b + k, 13), memcpy(b + k + 4, "IHDR", 4);
    be32(b + k + 8, w), be32(b + k + 12, h);
    b[k + 16] = (unsigned char)depth, b[k + 17] = (unsigned char)color;
    be32(b + k + 21, crc32_of(b + k + 4, 17));
    k += 25;
    /* A tiny zlib stream of zeros, its length possibly a lie. */
    static const unsigned char z[] = {0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01};
    be32(b + k, idat_len), memcpy(b + k + 4, "IDAT", 4), memcpy(b + k + 8, z, sizeof z);
    be32(b + k + 8 + sizeof z, crc32_of(b + k + 4, 4 + sizeof z));
    k += 12 + sizeof z;
    be32(b + k, 0), memcpy(b + k + 4, "IEND", 4), be32(b + k + 8, crc32_of(b + k + 4, 4));
    k += 12;
    put_file(dir, name, b, k);
}

/* A .npy from a header dict and raw data. */
static void put_npy(const char *dir, const char *name, int major, const char *dict,
                    const void *data, size_t n) {
    unsigned char b[512];
    size_t len = strlen(dict), pre = major >= 2 ? 12 : 10;
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major, b[7] = 0;
    b[8] = (unsigned char)(len & 0xff), b[9] = (unsigned char)(len >> 8), b[10] = b[11] = 0;
    memcpy(b + pre, dict, len);
    if (n) memcpy(b + pre + len, data, n);
    put_file(dir, name, b, pre + len + n);
}

/* Writes a small uncompressed (or deflate) TIFF with libtiff into memory. */
static unsigned char *make_tiff(const char *tmpname, int w, int h, int bps, int format,
                                int compression, int tile, int pages, const void *pixels,
                                size_t *size) {
    char path[512];
    tmp_path(path, sizeof path, tmpname);
    TIFF *t = TIFFOpen(path, "w");
    if (!t) return NULL;
    size_t bytes = (size_t)w * h * (size_t)bps / 8;
    for (int p = 0; p < pages; p++) {
        TIFFSetField(t, TIFFTAG_IMAGEWIDTH, (uint32_t)w);
        TIFFSetField(t, TIFFTAG_IMAGELENGTH, (uint32_t)h);
        TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, (uint16_t)bps);
        TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, (uint16_t)1);
        TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, (uint16_t)format);
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
        TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
        TIFFSetField(t, TIFFTAG_COMPRESSION, (uint16_t)compression);
        if (pages > 1) TIFFSetField(t, TIFFTAG_SUBFILETYPE, FILETYPE_PAGE);
        if (tile) {
            TIFFSetField(t, TIFFTAG_TILEWIDTH, (uint32_t)tile);
            TIFFSetField(t, TIFFTAG_TILELENGTH, (uint32_t)tile);
            size_t tb = (size_t)tile * tile * (size_t)bps / 8;
            unsigned char *buf = calloc(tb, 1);
            if (buf) TIFFWriteEncodedTile(t, 0, buf, (tmsize_t)tb);
            free(buf);
        } else {
            TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, (uint32_t)h);
            TIFFWriteEncodedStrip(t, 0, (void *)(uintptr_t)pixels, (tmsize_t)bytes);
        }
        TIFFWriteDirectory(t);
    }
    TIFFClose(t);
    return read_all(path, size);
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The value field of `tag` in IFD number `ifd` of a little-endian classic TIFF, or NULL. */
static unsigned char *tiff_tag(unsigned char *b, size_t size, int ifd, uint16_t tag,
                               uint16_t *type) {
    uint32_t off = le32(b + 4);
    for (int k = 0; off && off + 2 <= size; k++) {
        unsigned n = (unsigned)b[off] | (unsigned)b[off + 1] << 8;
        if (off + 2 + 12 * (size_t)n + 4 > size) return NULL;
        if (k == ifd) {
            for (unsigned i = 0; i < n; i++) {
                unsigned char *e = b + off + 2 + 12 * i;
                if (((unsigned)e[0] | (unsigned)e[1] << 8) == tag) {
                    *type = (uint16_t)(e[2] | e[3] << 8);
                    return e + 8;
                }
            }
            return NULL;
        }
        off = le32(b + off + 2 + 12 * n);
    }
    return NULL;
}

static bool tiff_patch(unsigned char *b, size_t size, int ifd, uint16_t tag, uint32_t v) {
    uint16_t type;
    unsigned char *p = tiff_tag(b, size, ifd, tag, &type);
    if (!p) return false;
    if (type == TIFF_SHORT) p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8);
    else p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8), p[2] = (unsigned char)(v >> 16),
         p[3] = (unsigned char)(v >> 24);
    return true;
}

static void put_tiff_patched(const char *dir, const char *name, int tile, int pages, int ifd,
                             uint16_t tag, uint32_t v) {
    uint8_t px[16];
    for (int i = 0; i < 16; i++) px[i] = (uint8_t)(i * 9);
    size_t size;
    unsigned char *b = make_tiff("base.tif", 4, 4, 8, SAMPLEFORMAT_UINT, COMPRESSION_NONE, tile,
                                 pages, px, &size);
    if (!b || !tiff_patch(b, size, ifd, tag, v)) wfail(name, "cannot patch the TIFF");
    else put_file(dir, name, b, size);
    free(b);
}

static void write_image_files(const char *dir) {
    put_png(dir, "image_png_zero_width.png", 0, 4, 8, 0, 10);
    put_png(dir, "image_png_bad_depth.png", 4, 4, 3, 0, 10);
    put_png(dir, "image_png_idat_length_huge.png", 4, 4, 8, 0, 0x7ffffff0u);
    put_png(dir, "image_png_palette_without_plte.png", 4, 4, 8, 3, 10);

    static const float f4[4] = {1, 2, 3, 4};
    static const double big[4] = {1e300, 0, 0, 0};
    static const int64_t wide[4] = {(int64_t)1 << 40, 0, 0, 0};
    put_npy(dir, "image_npy_zero_dim.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }\n", NULL, 0);
    put_npy(dir, "image_npy_huge_dims.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }\n", f4, 16);
    put_npy(dir, "image_npy_shape_overflow.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }\n", f4, 16);
    put_npy(dir, "image_npy_big_endian.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }\n", f4, 16);
    put_npy(dir, "image_npy_object_dtype.npy", 1, "{'descr': '|O', 'fortran_order': False, 'shape': (2, 2), }\n", f4, 16);
    put_npy(dir, "image_npy_structured_dtype.npy", 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 2), }\n", f4, 16);
    put_npy(dir, "image_npy_1d.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", f4, 16);
    put_npy(dir, "image_npy_4d.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 2), }\n", f4, 16);
    put_npy(dir, "image_npy_version9.npy", 9, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n", f4, 16);
    put_npy(dir, "image_npy_unknown_key.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'x': 1}\n", f4, 16);
    put_npy(dir, "image_npy_f8_out_of_range.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }\n", big, 32);
    put_npy(dir, "image_npy_i8_out_of_range.npy", 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }\n", wide, 32);
    put_npy(dir, "image_npy_extra_data.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }\n", f4, 16);

    put_tiff_patched(dir, "image_tiff_zero_width.tif", 0, 1, 0, TIFFTAG_IMAGEWIDTH, 0);
    put_tiff_patched(dir, "image_tiff_strip_past_end.tif", 0, 1, 0, TIFFTAG_STRIPOFFSETS, 0x7fff0000u);
    put_tiff_patched(dir, "image_tiff_12bit.tif", 0, 1, 0, TIFFTAG_BITSPERSAMPLE, 12);
    put_tiff_patched(dir, "image_tiff_ycbcr.tif", 0, 1, 0, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR);
    put_tiff_patched(dir, "image_tiff_spp_17.tif", 0, 1, 0, TIFFTAG_SAMPLESPERPIXEL, 17);
    put_tiff_patched(dir, "image_tiff_unknown_compression.tif", 0, 1, 0, TIFFTAG_COMPRESSION, 60000);
    put_tiff_patched(dir, "image_tiff_huge_tiles.tif", 16, 1, 0, TIFFTAG_TILEWIDTH, 0x7fff0000u);
    put_tiff_patched(dir, "image_tiff_tile_offset_past_end.tif", 16, 1, 0, TIFFTAG_TILEOFFSETS, 0x7fff0000u);
    put_tiff_patched(dir, "image_tiff_stack_bad_page2.tif", 0, 3, 1, TIFFTAG_STRIPOFFSETS, 0x7fff0000u);
    put_tiff_patched(dir, "image_tiff_stack_huge_page3.tif", 0, 3, 2, TIFFTAG_IMAGELENGTH, 0x7fffffffu);
    {
        /* A stack cut right after its first page's directory, whose next-directory offset now
         * points past the end: not a one-page TIFF. */
        uint8_t px[16] = {0};
        size_t size;
        unsigned char *b = make_tiff("stack.tif", 4, 4, 8, SAMPLEFORMAT_UINT, COMPRESSION_NONE, 0,
                                     3, px, &size);
        uint32_t ifd = b && size > 8 ? le32(b + 4) : 0;
        size_t end = ifd + 2 + 12 * (size_t)(b && ifd + 2 <= size ? b[ifd] | b[ifd + 1] << 8 : 0) + 4;
        if (!b || ifd == 0 || end >= size) wfail("image_tiff_stack_cut_after_page1.tif", "layout");
        else put_file(dir, "image_tiff_stack_cut_after_page1.tif", b, end);
        free(b);
    }
    {
        /* Deflate data replaced by garbage. */
        uint8_t px[64];
        for (int i = 0; i < 64; i++) px[i] = (uint8_t)(i * 5);
        size_t size;
        unsigned char *b = make_tiff("deflate.tif", 8, 8, 8, SAMPLEFORMAT_UINT,
                                     COMPRESSION_ADOBE_DEFLATE, 0, 1, px, &size);
        uint16_t type;
        unsigned char *off = b ? tiff_tag(b, size, 0, TIFFTAG_STRIPOFFSETS, &type) : NULL;
        unsigned char *cnt = b ? tiff_tag(b, size, 0, TIFFTAG_STRIPBYTECOUNTS, &type) : NULL;
        if (!off || !cnt) {
            wfail("image_tiff_bad_deflate.tif", "cannot find the strip");
        } else {
            uint32_t o = le32(off), n = type == TIFF_SHORT ? (uint32_t)(cnt[0] | cnt[1] << 8) : le32(cnt);
            for (uint32_t i = 0; i < n && o + i < size; i++) b[o + i] = (unsigned char)(0xa5 ^ i);
            put_file(dir, "image_tiff_bad_deflate.tif", b, size);
        }
        free(b);
        /* A palette image (with its colormap): a layout the reader does not take. */
        char path[512];
        tmp_path(path, sizeof path, "palette.tif");
        TIFF *t = TIFFOpen(path, "w");
        if (t) {
            static uint16_t map[3][256];
            TIFFSetField(t, TIFFTAG_IMAGEWIDTH, (uint32_t)4);
            TIFFSetField(t, TIFFTAG_IMAGELENGTH, (uint32_t)2);
            TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, (uint16_t)8);
            TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, (uint16_t)1);
            TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_PALETTE);
            TIFFSetField(t, TIFFTAG_COLORMAP, map[0], map[1], map[2]);
            TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, (uint32_t)2);
            TIFFWriteEncodedStrip(t, 0, px, 8);
            TIFFWriteDirectory(t);
            TIFFClose(t);
        }
        b = read_all(path, &size);
        if (b) put_file(dir, "image_tiff_palette.tif", b, size);
        else wfail("image_tiff_palette.tif", "libtiff");
        free(b);
        /* A 32-bit unsigned sample over INT32_MAX. */
        uint32_t u[4] = {1, 2, 0xffffffffu, 3};
        b = make_tiff("u32.tif", 2, 2, 32, SAMPLEFORMAT_UINT, COMPRESSION_NONE, 0, 1, u, &size);
        if (b) put_file(dir, "image_tiff_u32_over_int32.tif", b, size);
        else wfail("image_tiff_u32_over_int32.tif", "libtiff");
        free(b);
    }
}

static bool write_corrupt_files(const char *dir) {
    write_failures = 0;
    mkdir(dir, 0755);
    write_st_files(dir);
    write_model_files(dir);
    write_image_files(dir);
    return write_failures == 0;
}

/* ---- checking ------------------------------------------------------------------------- */

/* The outcome every damaged file must have: not OK, and a message naming the file.  (Messages
 * may quote a file's bytes, newlines included; the CLI prints them on one line, test_cli.c.) */
static bool names_file(unet_ctx *ctx, unet_status s, const char *path) {
    return s != UNET_STATUS_OK && strstr(unet_ctx_errmsg(ctx), path);
}

/* Loads path by its kind; returns the status (OK for an image whose every page loads). */
static unet_status load_by_kind(unet_ctx *ctx, const char *path, const char *name) {
    if (strncmp(name, "image_", 6) == 0) {
        int pages = 0;
        unet_status s = unet_image_pages(ctx, path, &pages);
        if (s != UNET_STATUS_OK) return s;
        for (int p = 0; p < pages; p++) {
            unet_image img;
            s = unet_image_load(ctx, path, p, &img);
            if (s != UNET_STATUS_OK) return s;
            unet_image_free(&img);
        }
        return UNET_STATUS_OK;
    }
    if (strncmp(name, "st_", 3) == 0) {
        struct unet__safetensors *st = NULL;
        unet_status s = unet__st_open(ctx, path, &st);
        unet__st_close(st);
        return s;
    }
    unet_model *m = NULL;
    unet_status s = UNET_STATUS_ARG;
    if (strncmp(name, "model_", 6) == 0) s = unet_model_load(ctx, path, &m);
    else if (strncmp(name, "resume_", 7) == 0) s = unet_model_load_training(ctx, path, &m, NULL, NULL);
    else unet__fail(ctx, s, "%s: unknown kind of corrupt file (prefix image_, st_, model_, resume_)", path);
    unet_model_free(m);
    return s;
}

static bool status_fits_kind(const char *name, unet_status s) {
    if (strncmp(name, "image_", 6) == 0) return s == UNET_STATUS_FORMAT;
    if (strncmp(name, "st_", 3) == 0) return s == UNET_STATUS_FORMAT;
    return s == UNET_STATUS_FORMAT || s == UNET_STATUS_SHAPE || s == UNET_STATUS_NUMERIC;
}

/* Every file of the directory, by kind; returns the number checked. */
static int check_dir(const char *dir, bool verbose) {
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unet_ctx *ctx = unet_ctx_create();
        unet_status s = load_by_kind(ctx, path, e->d_name);
        if (verbose) printf("       %-44s %s: %s\n", e->d_name, unet_status_str(s), unet_ctx_errmsg(ctx));
        if (!status_fits_kind(e->d_name, s) || !names_file(ctx, s, path)) {
            printf("  %s: got '%s': %s\n", path, unet_status_str(s), unet_ctx_errmsg(ctx));
            harness_cur_failed++;
        }
        unet_ctx_free(ctx);
        n++;
    }
    closedir(d);
    return n;
}

/* The exact outcome of each generated file: status and a fragment of the message. */
static const struct {
    const char *name;
    unet_status want;
    const char *says;
} expected[] = {
    {"st_empty.safetensors", UNET_STATUS_FORMAT, "too short"},
    {"st_short.safetensors", UNET_STATUS_FORMAT, "too short"},
    {"st_header_past_end.safetensors", UNET_STATUS_FORMAT, "header length 1000000"},
    {"st_header_len_2e63.safetensors", UNET_STATUS_FORMAT, "header length"},
    {"st_header_not_json.safetensors", UNET_STATUS_FORMAT, "not a JSON object"},
    {"st_header_array.safetensors", UNET_STATUS_FORMAT, "not a JSON object"},
    {"st_header_truncated.safetensors", UNET_STATUS_FORMAT, "not a JSON object"},
    {"st_entry_not_object.safetensors", UNET_STATUS_FORMAT, "'a': header entry is not an object"},
    {"st_missing_fields.safetensors", UNET_STATUS_FORMAT, "needs string dtype"},
    {"st_bad_dtype.safetensors", UNET_STATUS_FORMAT, "unsupported dtype 'F128'"},
    {"st_too_many_dims.safetensors", UNET_STATUS_FORMAT, "9 dimensions"},
    {"st_negative_dim.safetensors", UNET_STATUS_FORMAT, "bad shape entry"},
    {"st_fractional_dim.safetensors", UNET_STATUS_FORMAT, "bad shape entry"},
    {"st_string_dim.safetensors", UNET_STATUS_FORMAT, "bad shape entry"},
    {"st_shape_overflow.safetensors", UNET_STATUS_FORMAT, "shape overflows"},
    {"st_offsets_past_end.safetensors", UNET_STATUS_FORMAT, "outside the 40 data bytes"},
    {"st_offsets_reversed.safetensors", UNET_STATUS_FORMAT, "data_offsets"},
    {"st_offsets_negative.safetensors", UNET_STATUS_FORMAT, "data_offsets"},
    {"st_offsets_huge.safetensors", UNET_STATUS_FORMAT, "data_offsets"},
    {"st_offsets_one_number.safetensors", UNET_STATUS_FORMAT, "needs 2 numbers"},
    {"st_offsets_strings.safetensors", UNET_STATUS_FORMAT, "data_offsets"},
    {"st_size_mismatch.safetensors", UNET_STATUS_FORMAT, "do not match shape and dtype"},
    {"st_duplicate_name.safetensors", UNET_STATUS_FORMAT, "appears twice"},
    {"st_overlapping_offsets.safetensors", UNET_STATUS_FORMAT,
     "tensor 'b' starts at data byte 4, where the previous tensor's data still runs"},
    {"st_trailing_bytes.safetensors", UNET_STATUS_FORMAT, "the tensors hold 8 data bytes, the file 16"},
    {"st_metadata_not_object.safetensors", UNET_STATUS_FORMAT, "__metadata__"},
    {"st_metadata_not_string.safetensors", UNET_STATUS_FORMAT, "__metadata__ values"},
    {"model_missing_tensor.safetensors", UNET_STATUS_FORMAT, "'outc.conv.weight' (2, 2, 1, 1) is missing"},
    {"model_wrong_shape.safetensors", UNET_STATUS_SHAPE,
     "inc.double_conv.0.weight: expected (2, 1, 3, 3), got (2, 1, 1, 9)"},
    {"model_wrong_dtype.safetensors", UNET_STATUS_FORMAT,
     "inc.double_conv.0.weight: expected a float dtype, got I32"},
    {"model_unexpected_tensor.safetensors", UNET_STATUS_FORMAT, "unexpected tensor 'extra.weight'"},
    {"model_nan_weight.safetensors", UNET_STATUS_NUMERIC, "inc.double_conv.0.weight holds nan at index 3"},
    {"model_inf_weight.safetensors", UNET_STATUS_NUMERIC, "outc.conv.bias holds -inf at index 0"},
    {"model_nan_running_mean.safetensors", UNET_STATUS_NUMERIC,
     "inc.double_conv.1.running_mean holds nan at index 1"},
    {"model_negative_running_var.safetensors", UNET_STATUS_NUMERIC,
     "inc.double_conv.4.running_var holds -1 at index 0 (a variance must be >= 0)"},
    {"model_bn_folds_beyond_float.safetensors", UNET_STATUS_NUMERIC,
     "inc.double_conv.1 folds to a scale of 2.9985e+39 and a shift of 0 at channel 0"},
    {"model_unknown_arch.safetensors", UNET_STATUS_FORMAT, "unknown architecture 'resnet50'"},
    {"model_init_unknown.safetensors", UNET_STATUS_FORMAT,
     "metadata init='xavier' (expected 'he' or 'pytorch')"},
    {"model_batchnorm_7.safetensors", UNET_STATUS_FORMAT, "metadata batchnorm='7' (expected '0' or '1')"},
    {"model_duplicate_meta_key.safetensors", UNET_STATUS_FORMAT,
     "__metadata__ key 'depth' appears twice"},
    {"model_huge_base_metadata.safetensors", UNET_STATUS_FORMAT, "base 1024 and depth 6 has over"},
    {"model_huge_fcn_metadata.safetensors", UNET_STATUS_FORMAT, "a fcn8s with base 64"},
    {"model_depth_not_integer.safetensors", UNET_STATUS_FORMAT, "depth='two' is not an integer"},
    {"model_zero_base.safetensors", UNET_STATUS_FORMAT, "base: expected 1..1024 channels, got 0"},
    {"model_dropout_nan.safetensors", UNET_STATUS_FORMAT, "dropout"},
    {"model_train_steps_garbage.safetensors", UNET_STATUS_FORMAT, "train_steps='-5x'"},
    {"model_format_newer.safetensors", UNET_STATUS_FORMAT,
     "checkpoint format 2 (written by unet 9.0.0), but this unet (" UNET_VERSION ") reads formats "
     "up to 1: update unet to load it"},
    {"model_format_version_garbage.safetensors", UNET_STATUS_FORMAT,
     "metadata format_version='1.5' is not a positive integer"},
    {"model_channels_bad.safetensors", UNET_STATUS_FORMAT, "metadata: channels 'red' (expected gray"},
    {"model_channels_count_mismatch.safetensors", UNET_STATUS_FORMAT,
     "metadata: channels='0,1' gives 2 channels, but the model takes 1"},
    {"model_channel_axis_bad.safetensors", UNET_STATUS_FORMAT, "metadata channel_axis='sideways'"},
    {"model_counter_wrong_dtype.safetensors", UNET_STATUS_FORMAT, "expected an int64 scalar, got F64"},
    {"model_counter_not_scalar.safetensors", UNET_STATUS_FORMAT, "expected an int64 scalar, got F32"},
    {"model_no_metadata_unknown.safetensors", UNET_STATUS_FORMAT, "not a U-Net checkpoint"},
    {"model_inferred_huge.safetensors", UNET_STATUS_FORMAT, "base 512 and depth 7 has over"},
    {"model_truncated.safetensors", UNET_STATUS_FORMAT, "truncated"},
    {"resume_no_optimizer.safetensors", UNET_STATUS_FORMAT,
     "'optimizer.exp_avg' (450,) is missing (not a resumable checkpoint?)"},
    {"resume_bad_rng.safetensors", UNET_STATUS_FORMAT, "rng0/rng1 missing or malformed"},
    {"resume_nan_exp_avg.safetensors", UNET_STATUS_NUMERIC, "optimizer.exp_avg holds nan at index 5"},
    {"resume_negative_exp_avg_sq.safetensors", UNET_STATUS_NUMERIC,
     "optimizer.exp_avg_sq holds -0.001 at index 2"},
    {"resume_optimizer_wrong_size.safetensors", UNET_STATUS_SHAPE,
     "optimizer.exp_avg_sq: expected (450,), got (449,)"},
    {"image_png_zero_width.png", UNET_STATUS_FORMAT, "invalid PNG: Invalid IHDR data"},
    {"image_png_bad_depth.png", UNET_STATUS_FORMAT, "invalid PNG"},
    {"image_png_idat_length_huge.png", UNET_STATUS_FORMAT, "invalid PNG"},
    {"image_png_palette_without_plte.png", UNET_STATUS_FORMAT, "invalid PNG"},
    {"image_npy_zero_dim.npy", UNET_STATUS_FORMAT, "invalid image size 5x0"},
    {"image_npy_huge_dims.npy", UNET_STATUS_FORMAT, "needs 40000000000 bytes"},
    {"image_npy_shape_overflow.npy", UNET_STATUS_FORMAT, "over 2^64 bytes"},
    {"image_npy_big_endian.npy", UNET_STATUS_FORMAT, "dtype '>f4' is not supported"},
    {"image_npy_object_dtype.npy", UNET_STATUS_FORMAT, "dtype '|O' is not supported"},
    {"image_npy_structured_dtype.npy", UNET_STATUS_FORMAT, "simple dtype string"},
    {"image_npy_1d.npy", UNET_STATUS_FORMAT, "shape (4,) is not (H, W), (C, H, W) or (H, W, C)"},
    {"image_npy_4d.npy", UNET_STATUS_FORMAT, "shape (1, 1, 2, 2)"},
    {"image_npy_version9.npy", UNET_STATUS_FORMAT, "version 9.0 is not supported"},
    {"image_npy_unknown_key.npy", UNET_STATUS_FORMAT, "unknown key"},
    {"image_npy_f8_out_of_range.npy", UNET_STATUS_FORMAT, "element 0 does not fit in float32"},
    {"image_npy_i8_out_of_range.npy", UNET_STATUS_FORMAT, "element 0 does not fit in int32"},
    {"image_npy_extra_data.npy", UNET_STATUS_FORMAT, ".npy data is 16 bytes"},
    {"image_tiff_zero_width.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_strip_past_end.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_12bit.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_palette.tif", UNET_STATUS_FORMAT, "PhotometricInterpretation 3 is not supported"},
    {"image_tiff_ycbcr.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_spp_17.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_unknown_compression.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_huge_tiles.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_tile_offset_past_end.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_stack_bad_page2.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_stack_huge_page3.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_bad_deflate.tif", UNET_STATUS_FORMAT, ""},
    {"image_tiff_u32_over_int32.tif", UNET_STATUS_FORMAT, "does not fit I32"},
    {"image_tiff_stack_cut_after_page1.tif", UNET_STATUS_FORMAT,
     "the TIFF's directory after page 0 cannot be read (a truncated or damaged file)"},
};
#define N_EXPECTED (sizeof expected / sizeof expected[0])

static long stderr_bytes;

/* Runs fn with stderr redirected to a file; the bytes written go to stderr_bytes. */
static void quietly(void (*fn)(void)) {
    char path[512];
    tmp_path(path, sizeof path, "stderr.txt");
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (saved < 0 || fd < 0) {
        stderr_bytes = -1;
        return;
    }
    dup2(fd, 2);
    close(fd);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    struct stat sb;
    stderr_bytes = stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static int committed_checked;

static void check_committed(void) {
    committed_checked = check_dir(CORRUPT_DIR, true);
}

/* The committed files: every one fails by its kind, naming the file, printing nothing. */
TEST(committed_corrupt_files) {
    quietly(check_committed);
    printf("       %d files in %s\n", committed_checked, CORRUPT_DIR);
    CHECK(committed_checked >= (int)N_EXPECTED);
    CHECK_EQ(stderr_bytes, 0);
    for (size_t i = 0; i < N_EXPECTED; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", CORRUPT_DIR, expected[i].name);
        if (access(path, R_OK) != 0) {
            printf("  %s is missing (regenerate: test_corrupt --write-corrupt %s)\n", path,
                   CORRUPT_DIR);
            harness_cur_failed++;
        }
    }
}

static char fresh_dir[300];

static void check_fresh(void) {
    for (size_t i = 0; i < N_EXPECTED; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", fresh_dir, expected[i].name);
        unet_ctx *ctx = unet_ctx_create();
        unet_status s = load_by_kind(ctx, path, expected[i].name);
        const char *msg = unet_ctx_errmsg(ctx);
        if (s != expected[i].want || !names_file(ctx, s, path) || !strstr(msg, expected[i].says)) {
            printf("  %s: got '%s': %s\n      want '%s' saying '%s'\n", expected[i].name,
                   unet_status_str(s), msg, unet_status_str(expected[i].want), expected[i].says);
            harness_cur_failed++;
        }
        unet_ctx_free(ctx);
    }
}

/* A fresh set from the generator: each file gives exactly its status and message. */
TEST(generated_files_exact) {
    tmp_path(fresh_dir, sizeof fresh_dir, "fresh");
    CHECK(write_corrupt_files(fresh_dir));
    quietly(check_fresh);
    CHECK_EQ(stderr_bytes, 0);
    remove_tree(fresh_dir);
}

/* ---- damage made on the fly ---- */

/* Caller metadata may not shadow a key the save writes, including the keys written only for
 * FCNs or resumable checkpoints: a U-Net's plain save refuses "fc_channels" and "rng0" too. */
TEST(reserved_metadata_keys) {
    unet_model *m = tiny_model(true);
    CHECK(m != NULL);
    if (!m) return;
    char path[512];
    tmp_path(path, sizeof path, "meta.safetensors");
    const char *const keys[] = {"arch", "fc_channels", "learn_final_up", "rng1"};
    for (int i = 0; i < 4; i++) {
        const char *kv[2] = {keys[i], "1"};
        CHECK_STATUS(unet_model_save_training(NULL, m, path, kv, 1), UNET_STATUS_ARG);
    }
    const char *ok[2] = {"note", "1"};
    CHECK_STATUS(unet_model_save_training(NULL, m, path, ok, 1), UNET_STATUS_OK);
    unet_model_free(m);
}

/* Every cut of a valid checkpoint and of a resumable one, and random byte changes: no crash,
 * cuts always fail, and failures name the file (through the in-memory loader, which the fuzz
 * target uses too, so the file-based loader must agree with it on the full file). */
TEST(checkpoint_truncations_and_mutations) {
    unet_model *m = tiny_model(true);
    CHECK(m != NULL);
    if (!m) return;
    char path[512];
    tmp_path(path, sizeof path, "resume.safetensors");
    unet_ctx *ctx = unet_ctx_create();
    CHECK_STATUS(unet_model_save_training(ctx, m, path, NULL, 0), UNET_STATUS_OK);
    size_t size;
    unsigned char *b = read_all(path, &size);
    CHECK(b != NULL);
    if (!b) goto done;
    unet_model *got = NULL;
    CHECK_STATUS(unet__model_load_mem(ctx, "mem.safetensors", b, size, true, NULL, NULL, &got),
                 UNET_STATUS_OK);
    unet_model_free(got);
    int cut_fail = 0, cuts = 0;
    for (size_t n = 0; n < size; n++) {
        for (int training = 0; training < 2; training++) {
            got = NULL;
            unet_status s =
                unet__model_load_mem(ctx, "cut.safetensors", b, n, training, NULL, NULL, &got);
            cuts++;
            if (s != UNET_STATUS_OK && names_file(ctx, s, "cut.safetensors")) cut_fail++;
            else printf("  cut at %zu (training %d): %s: %s\n", n, training, unet_status_str(s),
                        unet_ctx_errmsg(ctx));
            unet_model_free(got);
        }
    }
    CHECK_EQ(cut_fail, cuts);
    struct unet__rng r;
    unet__rng_seed(&r, 11);
    int loaded = 0, failed = 0;
    for (int k = 0; k < 400; k++) {
        unsigned char *c = malloc(size);
        memcpy(c, b, size);
        int flips = 1 + (int)unet__rng_below(&r, 4);
        for (int j = 0; j < flips; j++) {
            /* Half the changes in the header, where they matter most. */
            size_t at = unet__rng_below(&r, 2) ? unet__rng_below(&r, 600) : unet__rng_below(&r, size);
            c[at] = (unsigned char)unet__rng_u64(&r);
        }
        got = NULL;
        unet_status s =
            unet__model_load_mem(ctx, "mut.safetensors", c, size, k % 2, NULL, NULL, &got);
        if (s == UNET_STATUS_OK) loaded++;
        else if (names_file(ctx, s, "mut.safetensors")) failed++;
        else printf("  mutation %d: %s: %s\n", k, unet_status_str(s), unet_ctx_errmsg(ctx));
        unet_model_free(got);
        free(c);
    }
    printf("       %d cuts all fail; 400 mutations: %d load, %d fail naming the file\n", cuts,
           loaded, failed);
    CHECK_EQ(loaded + failed, 400);
    free(b);
done:
    unet_ctx_free(ctx);
    unet_model_free(m);
}

/* Checkpoints of other unet versions (docs/checkpoints.md): a file without format_version
 * (unet before the key, or PyTorch) and one of an older or newer unet of the same format, with
 * keys this unet does not know, load; a newer format is refused (generated_files_exact).  The
 * input layout is saved only when set, round-trips, and is checked when set. */
TEST(checkpoint_versions_and_input_layout) {
    unet_model *m = tiny_model(false);
    CHECK(m != NULL);
    if (!m) return;
    char tmp[512], path[512];
    tmp_path(tmp, sizeof tmp, "v.safetensors");
    tmp_path(path, sizeof path, "variant.safetensors");
    unet_ctx *ctx = unet_ctx_create();
    struct model_file f;
    CHECK(model_file_init(&f, m, false, tmp));
    bool has_version = false, has_layout = false;
    for (int i = 0; i < f.n_meta; i++) {
        has_version |= strcmp(f.meta[2 * i], "format_version") == 0 && strcmp(f.meta[2 * i + 1], "1") == 0;
        has_layout |= strcmp(f.meta[2 * i], "channels") == 0 || strcmp(f.meta[2 * i], "channel_axis") == 0;
    }
    CHECK(has_version && !has_layout);
    static const struct {
        const char *key, *value;
    } accepted[][2] = {
        {{"format_version", NULL}, {NULL, NULL}},              /* written before the key */
        {{"unet_version", "0.0.1"}, {"format_version", "1"}},  /* an older unet */
        {{"unet_version", "7.3.0"}, {"future_key", "x"}},      /* a newer unet, same format */
        {{"channel_axis", "last"}, {"channels", "0"}},
        {{"channel_axis", "none"}, {"channels", "gray"}},
    };
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        model_file_init(&f, m, false, tmp);
        for (int k = 0; k < 2 && accepted[i][k].key; k++) {
            if (accepted[i][k].value) {
                model_set_meta(&f, accepted[i][k].key, accepted[i][k].value);
                continue;
            }
            for (int j = 0; j < f.n_meta; j++)   /* drop the key */
                if (strcmp(f.meta[2 * j], accepted[i][k].key) == 0) {
                    memmove(&f.meta[2 * j], &f.meta[2 * j + 2], sizeof f.meta[0] * 2 * (size_t)(f.n_meta - j - 1));
                    f.n_meta--;
                }
        }
        model_write(&f, tmp_dir, "variant.safetensors");
        unet_model *got = NULL;
        unet_status s = unet_model_load(ctx, path, &got);
        if (s != UNET_STATUS_OK) printf("  variant %zu: %s\n", i, unet_ctx_errmsg(ctx));
        CHECK_STATUS(s, UNET_STATUS_OK);
        unet_model_free(got);
    }
    /* The layout: set, saved, loaded back; a plain model has none. */
    int axis = 0;
    const char *channels = "x";
    unet_model_input(m, &axis, &channels);
    CHECK(axis == UNET_CHANNEL_AXIS_AUTO && channels == NULL);
    CHECK_STATUS(unet_model_set_input(ctx, m, -1, "gray"), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_save(ctx, m, path), UNET_STATUS_OK);
    unet_model *got = NULL;
    CHECK_STATUS(unet_model_load(ctx, path, &got), UNET_STATUS_OK);
    unet_model_input(got, &axis, &channels);
    CHECK(axis == -1 && channels && strcmp(channels, "gray") == 0);
    CHECK(unet_model_meta(got, "channel_axis") && strcmp(unet_model_meta(got, "channel_axis"), "last") == 0);
    unet_model_free(got);
    CHECK_STATUS(unet_model_set_input(ctx, m, UNET_CHANNEL_AXIS_NONE, "2"), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_set_input(ctx, m, 5, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_model_set_input(ctx, m, 0, "0,1"), UNET_STATUS_ARG);  /* 2 for 1 channel */
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "gives 2 channels, but the model takes 1");
    CHECK_STATUS(unet_model_set_input(ctx, m, 0, "rgb"), UNET_STATUS_ARG);
    unet_model_input(m, &axis, &channels);
    CHECK(axis == UNET_CHANNEL_AXIS_NONE && channels && strcmp(channels, "2") == 0);
    CHECK_STATUS(unet_model_set_input(ctx, m, UNET_CHANNEL_AXIS_AUTO, "all"), UNET_STATUS_OK);
    unet_model_input(m, &axis, &channels);
    CHECK(axis == UNET_CHANNEL_AXIS_AUTO && channels == NULL);
    /* Caller metadata may not shadow the layout keys. */
    const char *kv[2] = {"channels", "gray"};
    CHECK_STATUS(unet_model_save_meta(ctx, m, path, kv, 1), UNET_STATUS_ARG);
    unet_ctx_free(ctx);
    unet_model_free(m);
}

/* Every cut of a safetensors file with metadata, through the parser alone, and byte changes:
 * cuts fail naming the file; changed files parse or fail naming it. */
TEST(safetensors_every_cut) {
    const char *hdr = "{\"__metadata__\":{\"format\":\"unet\",\"note\":\"x\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,32]}}";
    size_t h = strlen(hdr), size = 8 + h + 32;
    unsigned char *b = calloc(size, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, hdr, h);
    unet_ctx *ctx = unet_ctx_create();
    int fails = 0, cuts = 0, parsed = 0, failed = 0;
    for (size_t n = 0; n <= size; n++) {
        unsigned char *c = malloc(n ? n : 1);
        memcpy(c, b, n);
        struct unet__safetensors *st = NULL;
        unet_status s = unet__st_parse(ctx, "cut.safetensors", c, n, &st);
        if (n == size) CHECK_STATUS(s, UNET_STATUS_OK);
        else cuts++, fails += names_file(ctx, s, "cut.safetensors");
        unet__st_close(st);
    }
    CHECK_EQ(fails, cuts);
    struct unet__rng r;
    unet__rng_seed(&r, 5);
    for (int k = 0; k < 300; k++) {
        unsigned char *c = malloc(size);
        memcpy(c, b, size);
        for (int j = 1 + (int)unet__rng_below(&r, 3); j > 0; j--)
            c[unet__rng_below(&r, size)] = (unsigned char)unet__rng_u64(&r);
        struct unet__safetensors *st = NULL;
        unet_status s = unet__st_parse(ctx, "mut.safetensors", c, size, &st);
        if (s == UNET_STATUS_OK) parsed++;
        else failed += names_file(ctx, s, "mut.safetensors");
        unet__st_close(st);
    }
    CHECK_EQ(parsed + failed, 300);
    printf("       %d cuts all fail; 300 changes: %d parse, %d fail naming the file\n", cuts, parsed,
           failed);
    free(b);
    unet_ctx_free(ctx);
}

/* Fuzz finding: converting a float tensor outside the int64 range to int64 was undefined
 * behaviour (UBSan: "2.6e36 is outside the range of representable values of type 'long'"). */
TEST(float_to_int64_saturates) {
    const uint16_t bf16[4] = {0x7bff, 0xfbff, 0x7fc0, 0x3f80}; /* 2.6e36, -2.6e36, NaN, 1 */
    struct unet__st_entry e = {"x", UNET__DTYPE_BF16, 1, {4}, bf16};
    char path[512];
    tmp_path(path, sizeof path, "bf16.safetensors");
    unet_ctx *ctx = unet_ctx_create();
    CHECK_STATUS(unet__st_write(ctx, path, &e, 1, NULL, 0), UNET_STATUS_OK);
    struct unet__safetensors *st = NULL;
    CHECK_STATUS(unet__st_open(ctx, path, &st), UNET_STATUS_OK);
    if (st) {
        int64_t v[4];
        unet__st_to_i64(st, unet__st_find(st, "x"), v);
        CHECK(v[0] == INT64_MAX);
        CHECK(v[1] == INT64_MIN);
        CHECK_EQ(v[2], 0);
        CHECK_EQ(v[3], 1);
    }
    unet__st_close(st);
    unet_ctx_free(ctx);
}

/* Fuzz finding: a message that wraps an earlier one ("... (not a resumable checkpoint?)") was
 * formatted from the context's buffer into itself and lost the file name. */
TEST(wrapped_messages_keep_the_file_name) {
    unet_model *m = tiny_model(false);
    CHECK(m != NULL);
    if (!m) return;
    char path[512];
    tmp_path(path, sizeof path, "plain.safetensors");
    unet_ctx *ctx = unet_ctx_create();
    CHECK_STATUS(unet_model_save(ctx, m, path), UNET_STATUS_OK);
    unet_model *got = NULL;
    unet_status s = unet_model_load_training(ctx, path, &got, NULL, NULL);
    CHECK_STATUS(s, UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), path);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "optimizer.exp_avg");
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "(not a resumable checkpoint?)");
    unet_model_free(got);
    unet_ctx_free(ctx);
    unet_model_free(m);
}

/* A consistent .npy (header and file size agree) of 70000 x 70000 bytes, stored sparse so it
 * costs no disk: refused by the pixel limit before anything is allocated, and loadable after
 * raising the limit only as far as memory allows (not tried: 4.9 GB). */
TEST(absurd_but_consistent_dimensions) {
    char path[512];
    tmp_path(path, sizeof path, "huge.npy");
    const char *dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (70000, 70000), }";
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    size_t len = strlen(dict) + 1;
    pre[8] = (unsigned char)len;
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fwrite(pre, 1, 10, f);
    fwrite(dict, 1, len - 1, f);
    fputc('\n', f);
    fclose(f);
    CHECK_EQ(truncate(path, (off_t)(10 + len) + (off_t)70000 * 70000), 0);
    unet_ctx *ctx = unet_ctx_create();
    unet_image img;
    unet_status s = unet_image_load(ctx, path, 0, &img);
    CHECK_STATUS(s, UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "over the limit of 268435456");
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), path);
    /* The limit is an option: below the image size it still refuses, with the new limit. */
    unet_ctx_set_max_pixels(ctx, (uint64_t)1 << 30);
    s = unet_image_load(ctx, path, 0, &img);
    CHECK_STATUS(s, UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "over the limit of 1073741824");
    unlink(path);
    /* A small real image loads under a limit just above its size and not below it. */
    tmp_path(path, sizeof path, "small.png");
    CHECK_STATUS(unet_image_alloc(ctx, &img, 10, 10, 1, UNET_DTYPE_U8), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_save(ctx, path, &img), UNET_STATUS_OK);
    unet_image_free(&img);
    unet_ctx_set_max_pixels(ctx, 100);
    CHECK_STATUS(unet_image_load(ctx, path, 0, &img), UNET_STATUS_OK);
    unet_image_free(&img);
    unet_ctx_set_max_pixels(ctx, 99);
    CHECK_STATUS(unet_image_load(ctx, path, 0, &img), UNET_STATUS_FORMAT);
    unet_ctx_free(ctx);
}

int main(int argc, char **argv) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/unet_test_corrupt_%d", (int)getpid());
    mkdir(tmp_dir, 0755);
    if (argc == 3 && strcmp(argv[1], "--write-corrupt") == 0) {
        bool ok = write_corrupt_files(argv[2]);
        remove_tree(tmp_dir);
        printf("%s\n", ok ? "written" : "FAILED");
        return ok ? 0 : 1;
    }
    RUN(committed_corrupt_files);
    RUN(generated_files_exact);
    RUN(checkpoint_truncations_and_mutations);
    RUN(reserved_metadata_keys);
    RUN(checkpoint_versions_and_input_layout);
    RUN(safetensors_every_cut);
    RUN(float_to_int64_saturates);
    RUN(wrapped_messages_keep_the_file_name);
    RUN(absurd_but_consistent_dimensions);
    remove_tree(tmp_dir);
    return harness_finish();
}
