/* test_export.c — the ONNX and bioimage.io writers (src/export_onnx.c, src/export_bioimageio.c)
 * without Python: the ONNX file parsed back by a small protobuf reader (every parameter present
 * once with its shape and bytes, every node input defined before use), the package's files and
 * zip directory, and the refusals.  Numerical agreement with ONNX Runtime and the bioimage.io
 * spec checks are python/tests/test_export.py and test_bioimageio.py (they need python3-onnx and
 * node); this program also runs under ASan and the other builds. */
#include "harness.h"
#include "model.h"

#include <unistd.h>

/* ---- a protobuf reader: the fields of one message ---- */

struct field {
    int            num, wire;
    uint64_t       v;           /* varint / fixed32 value */
    const uint8_t *data;        /* length-delimited: bytes */
    size_t         len;
};

/* Reads the next field of [*p, end); false at the end or on malformed input (*bad set). */
static bool next_field(const uint8_t **p, const uint8_t *end, struct field *f, bool *bad) {
    if (*p >= end) return false;
    uint64_t key = 0;
    for (int s = 0;; s += 7) {
        if (*p >= end || s > 63) return !(*bad = true);
        uint8_t b = *(*p)++;
        key |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) break;
    }
    f->num = (int)(key >> 3);
    f->wire = (int)(key & 7);
    f->v = 0;
    if (f->wire == 0 || f->wire == 2) {
        for (int s = 0;; s += 7) {
            if (*p >= end || s > 63) return !(*bad = true);
            uint8_t b = *(*p)++;
            f->v |= (uint64_t)(b & 0x7f) << s;
            if (!(b & 0x80)) break;
        }
        if (f->wire == 2) {
            if (f->v > (uint64_t)(end - *p)) return !(*bad = true);
            f->data = *p;
            f->len = (size_t)f->v;
            *p += f->len;
        }
    } else if (f->wire == 5) {
        if (end - *p < 4) return !(*bad = true);
        memcpy(&f->v, *p, 4);
        *p += 4;
    } else {
        return !(*bad = true);
    }
    return true;
}

/* ---- the ONNX file of a model, parsed back ---- */

#define MAX_NAMES 4096

struct names {
    char *s[MAX_NAMES];
    int   n;
};

static bool has(const struct names *t, const uint8_t *s, size_t len) {
    for (int i = 0; i < t->n; i++)
        if (strlen(t->s[i]) == len && memcmp(t->s[i], s, len) == 0) return true;
    return false;
}

static void add(struct names *t, const uint8_t *s, size_t len) {
    if (t->n < MAX_NAMES) t->s[t->n++] = strndup((const char *)s, len);
}

static void clear(struct names *t) {
    for (int i = 0; i < t->n; i++) free(t->s[i]);
    t->n = 0;
}

/* Checks one initializer (TensorProto) against the model: a checkpoint tensor with the same
 * name, shape and bytes, or a small constant of the graph's own.  Returns 1 for a parameter. */
static int check_initializer(const unet_model *m, const uint8_t *d, size_t len) {
    struct field f;
    bool bad = false;
    const uint8_t *p = d;
    char name[128] = "";
    int64_t dims[8];
    int nd = 0, dtype = 0;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    while (next_field(&p, d + len, &f, &bad)) {
        if (f.num == 1 && nd < 8) dims[nd++] = (int64_t)f.v;
        if (f.num == 2) dtype = (int)f.v;
        if (f.num == 8) snprintf(name, sizeof name, "%.*s", (int)f.len, (const char *)f.data);
        if (f.num == 9) raw = f.data, raw_len = f.len;
    }
    CHECK(!bad);
    const struct unet__param *q = unet__model_find_param(m, name);
    if (!q) { /* the graph's constants: int64 index vectors, Resize's float scales */
        CHECK(strncmp(name, "unet_const.", 11) == 0 || strstr(name, ".offset") != NULL);
        CHECK(raw_len <= 64);
        return 0;
    }
    CHECK_EQ(dtype, 1);
    CHECK_EQ(nd, q->ndim);
    for (int i = 0; i < nd && i < q->ndim; i++) CHECK_EQ(dims[i], q->shape[i]);
    CHECK_EQ(raw_len, q->numel * sizeof(float));
    if (raw && raw_len == q->numel * sizeof(float))
        CHECK(memcmp(raw, unet__model_param_data(m, q), raw_len) == 0);
    return 1;
}

/* Parses path and checks it against m: IR 7, opset 13, one initializer per checkpoint tensor
 * (counters aside), nodes in an order where every input is defined before it is read, the
 * output named `output`.  Returns the number of nodes. */
static int check_onnx(const unet_model *m, const char *path, const char *output) {
    size_t size;
    unsigned char *buf = read_all(path, &size);
    CHECK(buf != NULL);
    if (!buf) return 0;
    struct field f, g, h;
    bool bad = false;
    const uint8_t *p = buf, *graph = NULL;
    size_t graph_len = 0;
    int64_t ir = 0, opset = 0;
    while (next_field(&p, buf + size, &f, &bad)) {
        if (f.num == 1) ir = (int64_t)f.v;
        if (f.num == 7) graph = f.data, graph_len = f.len;
        if (f.num == 8) {
            const uint8_t *q = f.data;
            while (next_field(&q, f.data + f.len, &g, &bad))
                if (g.num == 2) opset = (int64_t)g.v;
        }
    }
    CHECK(!bad);
    CHECK_EQ(ir, 7);
    CHECK_EQ(opset, 13);
    CHECK(graph != NULL);
    static struct names defined;
    clear(&defined);
    int params = 0, nodes = 0, outputs = 0;
    /* Initializers and the graph input first: they are defined before any node runs. */
    for (const uint8_t *q = graph; graph && next_field(&q, graph + graph_len, &g, &bad);) {
        if (g.num == 5) {
            params += check_initializer(m, g.data, g.len);
            const uint8_t *r = g.data;
            while (next_field(&r, g.data + g.len, &h, &bad))
                if (h.num == 8) add(&defined, h.data, h.len);
        }
        if (g.num == 11 || g.num == 12) {
            const uint8_t *r = g.data;
            while (next_field(&r, g.data + g.len, &h, &bad))
                if (h.num == 1 && g.num == 11) add(&defined, h.data, h.len);
                else if (h.num == 1) CHECK(h.len == strlen(output) && memcmp(h.data, output, h.len) == 0);
        }
    }
    for (const uint8_t *q = graph; graph && next_field(&q, graph + graph_len, &g, &bad);) {
        if (g.num != 1) continue;
        nodes++;
        const uint8_t *r = g.data;
        while (next_field(&r, g.data + g.len, &h, &bad)) {
            if (h.num == 1 && h.len > 0 && !has(&defined, h.data, h.len)) {
                HARNESS_FAIL_AT(__FILE__, __LINE__, "node %d reads '%.*s' before it is defined",
                                nodes, (int)h.len, (const char *)h.data);
            }
            if (h.num == 2) {
                CHECK(!has(&defined, h.data, h.len)); /* single assignment */
                add(&defined, h.data, h.len);
                outputs += h.len == strlen(output) && memcmp(h.data, output, h.len) == 0;
            }
        }
    }
    CHECK(!bad);
    CHECK_EQ(outputs, 1);
    CHECK_EQ(params, m->n_params - m->n_counters);
    clear(&defined);
    free(buf);
    return nodes;
}

TEST(onnx_files_hold_every_architecture) {
    static const struct {
        unet_arch arch;
        unet_up   up;
    } cases[] = {{UNET_ARCH_UNET, UNET_UP_TRANSPOSE}, {UNET_ARCH_UNET, UNET_UP_BILINEAR},
                 {UNET_ARCH_UNET_PAPER, UNET_UP_TRANSPOSE}, {UNET_ARCH_FCN32S, UNET_UP_TRANSPOSE},
                 {UNET_ARCH_FCN16S, UNET_UP_TRANSPOSE}, {UNET_ARCH_FCN8S, UNET_UP_TRANSPOSE}};
    unet_ctx *ctx = unet_ctx_create();
    char path[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unet_config c = unet_config_default(cases[i].arch);
        c.base = cases[i].arch >= UNET_ARCH_FCN32S ? 2 : 4;
        if (cases[i].arch <= UNET_ARCH_UNET_PAPER) c.depth = 3;
        c.up = cases[i].up;
        unet_model *m = NULL;
        CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
        if (!m) continue;
        tmp_path(path, sizeof path, "m.onnx");
        CHECK_STATUS(unet_export_onnx(ctx, m, path, UNET_OUTPUT_LOGITS), UNET_STATUS_OK);
        int n = check_onnx(m, path, "logits");
        CHECK_STATUS(unet_export_onnx(ctx, m, path, UNET_OUTPUT_PROBABILITIES), UNET_STATUS_OK);
        CHECK_EQ(check_onnx(m, path, "probabilities"), n);
        printf("     %-10s %-9s %3d ONNX nodes for %d unet nodes\n", unet_arch_name(c.arch),
               c.up == UNET_UP_BILINEAR ? "bilinear" : "", n, m->n_nodes);
        unet_model_free(m);
    }
    unlink(path);
    unet_ctx_free(ctx);
}

TEST(onnx_export_refusals) {
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 2, c.depth = 2;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
    char path[512];
    CHECK_STATUS(unet_export_onnx(ctx, m, tmp_path(path, sizeof path, "none/x.onnx"),
                                  UNET_OUTPUT_LOGITS), UNET_STATUS_IO);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "none/x.onnx");
    CHECK_STATUS(unet_export_onnx(ctx, m, path, (unet_output)7), UNET_STATUS_ARG);
    CHECK_STATUS(unet_export_onnx(ctx, NULL, path, UNET_OUTPUT_LOGITS), UNET_STATUS_ARG);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* ---- bioimage.io packages ---- */

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static unsigned rd16(const unsigned char *p) {
    return (unsigned)p[0] | (unsigned)p[1] << 8;
}

/* Entries of tmp_dir whose name contains s. */
static int count_entries(const char *s) {
    DIR *d = opendir(tmp_dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, s) != NULL;
    if (d) closedir(d);
    return n;
}

#define SAMPLE "data/sample/test/images/24.png"

TEST(bioimageio_folder_and_zip) {
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 2, c.depth = 2;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
    unet_bioimageio_opts o = unet_bioimageio_defaults();
    o.sample = SAMPLE;
    o.training_data = "ISBI 2012";
    char dir[512], zip[512], f[600];
    tmp_path(dir, sizeof dir, "pkg");
    tmp_path(zip, sizeof zip, "pkg.zip");
    CHECK_STATUS(unet_export_bioimageio(ctx, m, dir, &o), UNET_STATUS_OK);
    static const char *const files[] = {"rdf.yaml", "README.md", "weights.onnx", "test_input.npy",
                                        "test_output.npy", "cover.png", "model.safetensors"};
    for (int i = 0; i < 7; i++) {
        snprintf(f, sizeof f, "%s/%s", dir, files[i]);
        CHECK(access(f, R_OK) == 0);
    }
    snprintf(f, sizeof f, "%s/weights.onnx", dir);
    check_onnx(m, f, "probabilities");
    unet_image t = {0};
    snprintf(f, sizeof f, "%s/test_output.npy", dir);
    CHECK_STATUS(unet_image_load(ctx, f, 0, &t), UNET_STATUS_FORMAT); /* 4-D: not an image */
    /* An existing folder is refused and left alone. */
    CHECK_STATUS(unet_export_bioimageio(ctx, m, dir, &o), UNET_STATUS_IO);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "exists");
    /* The zip: its central directory lists the seven files, stored, at their local headers. */
    o.checkpoint = 1;
    CHECK_STATUS(unet_export_bioimageio(ctx, m, zip, &o), UNET_STATUS_OK);
    size_t size;
    unsigned char *z = read_all(zip, &size);
    CHECK(z != NULL && size > 22);
    if (z && size > 22) {
        const unsigned char *eocd = z + size - 22;
        CHECK_EQ(rd32(eocd), 0x06054b50u);
        CHECK_EQ(rd16(eocd + 10), 7);
        size_t cd = rd32(eocd + 16);
        for (int i = 0; i < 7 && cd + 46 <= size; i++) {
            const unsigned char *e = z + cd;
            CHECK_EQ(rd32(e), 0x02014b50u);
            CHECK_EQ(rd16(e + 10), 0); /* stored */
            unsigned nl = rd16(e + 28);
            CHECK(nl == strlen(files[i]) && memcmp(e + 46, files[i], nl) == 0);
            size_t local = rd32(e + 42);
            CHECK(local + 30 <= size && rd32(z + local) == 0x04034b50u);
            CHECK(rd32(z + local + 18) == rd32(e + 20)); /* sizes agree */
            cd += 46 + nl;
        }
    }
    free(z);
    /* Refusals leave nothing behind. */
    o.name = "no/slashes";
    CHECK_STATUS(unet_export_bioimageio(ctx, m, zip, &o), UNET_STATUS_ARG);
    o.name = NULL;
    o.sample = "tests/data/corrupt/image_bad_crc.png";
    CHECK(unet_export_bioimageio(ctx, m, tmp_path(f, sizeof f, "bad"), &o) != UNET_STATUS_OK);
    CHECK_EQ(count_entries(".tmp."), 0);
    CHECK_EQ(count_entries("bad"), 0);
    remove_tree(dir);
    unlink(zip);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/unet_test_export_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(onnx_files_hold_every_architecture);
    RUN(onnx_export_refusals);
    RUN(bioimageio_folder_and_zip);
    remove_tree(tmp_dir);
    return harness_finish();
}
