/* export_onnx.c — a model as an ONNX file (docs/export.md), written by a small protobuf writer.
 *
 * The graph is read from the model's node list and parameter table (model.h), one ONNX node per
 * unet node, with the PyTorch parameter names as initializer names:
 *     CONV      Conv (+ Relu)                  CONVT     ConvTranspose (+ Relu)
 *     BN        BatchNormalization (+ Relu)    POOL      MaxPool 2x2 (ceil_mode as the node)
 *     UPSAMPLE  Resize linear, align_corners   DROPOUT   nothing (inference)
 *     CONCAT    Concat of the skip and the upsampled map, after Pad (same padding: F.pad's
 *               diff // 2 zeros first) or Slice (valid: the skip centre-cropped)
 *     ADD       Add of the map and a Slice of the finer score map at the node's fixed offset
 *     CROP      Slice at the node's fixed offset to the size of the reference value
 * Batch-norm is kept (not folded): the file holds the checkpoint's numbers unchanged, and ONNX
 * Runtime folds it into the convolution itself when it optimises the graph.
 * Pads and crops whose amounts depend on the image size are computed in the graph from the
 * Shape of the maps (Shape, Slice, Sub, Div, Add, Concat on int64), so height, width and batch
 * are all dynamic: the file runs at every size unet_model_forward accepts.
 *
 * Protobuf.  Each message is written by a body function called twice through pb_msg: once
 * with a counting writer for its length, then for real.  Counting skips the tensor data, so the
 * cost is a few passes over the node list and one write of the parameters, straight to the file
 * (no copy of them in memory).  Fields are emitted unpacked except raw_data; all integers are
 * varints.  ONNX stores tensor data little-endian, as x86-64 and AArch64 lay out floats.
 */
#include "io/file.h"
#include "model.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "export_onnx.c writes tensor data in host order, which ONNX requires to be little-endian"
#endif

#define ONNX_IR_VERSION 7   /* ONNX 1.8, the first with opset 13 */
#define ONNX_OPSET      13
#define ONNX_FLOAT      1   /* TensorProto.DataType */
#define ONNX_INT64      7

/* ---------------------------------------------------------------------------------------
 * Protobuf wire format
 * ------------------------------------------------------------------------------------- */

struct pb {
    FILE    *f;         /* NULL: count bytes only */
    uint64_t n;         /* bytes written (or counted) */
    bool     err;
};

static void pb_raw(struct pb *w, const void *p, size_t n) {
    w->n += n;
    if (w->f && n && fwrite(p, 1, n, w->f) != n) w->err = true;
}

static void pb_varint(struct pb *w, uint64_t v) {
    unsigned char b[10];
    int k = 0;
    do {
        b[k] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) b[k] |= 0x80;
        k++;
    } while (v);
    pb_raw(w, b, (size_t)k);
}

static void pb_key(struct pb *w, int field, int wire) {
    pb_varint(w, (uint64_t)field << 3 | (uint64_t)wire);
}

static void pb_int(struct pb *w, int field, int64_t v) {
    pb_key(w, field, 0);
    pb_varint(w, (uint64_t)v);
}

static void pb_bytes(struct pb *w, int field, const void *p, size_t n) {
    pb_key(w, field, 2);
    pb_varint(w, n);
    pb_raw(w, p, n);
}

static void pb_str(struct pb *w, int field, const char *s) {
    pb_bytes(w, field, s, strlen(s));
}

static void pb_float(struct pb *w, int field, float f) {
    unsigned char b[4];
    memcpy(b, &f, 4);
    pb_key(w, field, 5);
    pb_raw(w, b, 4);
}

typedef void (*pb_body)(struct pb *w, const void *arg);

/* An embedded message: its length (counted by a dry run of body), then body. */
static void pb_msg(struct pb *w, int field, pb_body body, const void *arg) {
    struct pb count = {0};
    body(&count, arg);
    pb_key(w, field, 2);
    pb_varint(w, count.n);
    body(w, arg);
}

/* ---------------------------------------------------------------------------------------
 * The graph in memory
 * ------------------------------------------------------------------------------------- */

#define NAME_LEN 112

enum attr_type { ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_STRING = 3, ATTR_INTS = 7 };

struct attr {
    const char    *name;
    enum attr_type type;
    float          f;
    int64_t        i;
    const char    *s;
    int64_t        ints[8];
    int            n_ints;
};

struct onode {
    const char *op;
    char        name[NAME_LEN];
    char        in[5][NAME_LEN];    /* "" for an omitted optional input */
    int         n_in;
    char        out[NAME_LEN];
    struct attr attrs[4];
    int         n_attrs;
};

struct init {
    char        name[NAME_LEN];
    int         dtype;
    int         ndim;
    int64_t     dims[4];
    const void *data;           /* the model's parameter, or NULL: small */
    size_t      bytes;
    union {
        int64_t i[8];
        float   f[8];
    } small;
};

struct dim {
    int64_t     value;          /* > 0: fixed */
    const char *param;          /* non-NULL: a named dynamic dimension; neither: unknown */
};

struct value_info {
    const char *name;
    struct dim  dims[4];
};

struct graph {
    const unet_model *m;
    struct onode     *nodes;
    int               n_nodes, cap_nodes;
    struct init      *inits;
    int               n_inits, cap_inits;
    char            (*vname)[NAME_LEN];  /* ONNX tensor name of each unet value */
    bool              oom;
    unsigned          have_const;         /* enum shared_const bits already added */
    struct value_info input, output;
    const char       *doc;
    struct kv {
        char key[64], value[64];
    } meta[12];                           /* metadata_props */
    int               n_meta;
};

/* dst = a b, cut to NAME_LEN - 1 bytes (names are at most 64 + 96 bytes of the model's own
 * node and parameter names, never cut in practice). */
static void name_cat(char *dst, const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > NAME_LEN - 1) na = NAME_LEN - 1;
    if (nb > NAME_LEN - 1 - na) nb = NAME_LEN - 1 - na;
    memmove(dst, a, na);
    memmove(dst + na, b, nb);
    dst[na + nb] = 0;
}

static void *grow(void *p, int *cap, int need, size_t elem, bool *oom) {
    if (need <= *cap) return p;
    int nc = *cap ? *cap * 2 : 64;
    void *q = realloc(p, (size_t)nc * elem);
    if (!q) {
        *oom = true;
        return p;
    }
    *cap = nc;
    return q;
}

/* A new node op named "<base><suffix>" with output the same name; NULL when out of memory.
 * The pointer is valid until the next add_node. */
static struct onode *add_node(struct graph *g, const char *op, const char *base, const char *suffix) {
    g->nodes = grow(g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes, &g->oom);
    if (g->oom) return NULL;
    struct onode *n = &g->nodes[g->n_nodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    name_cat(n->name, base, suffix);
    name_cat(n->out, n->name, "");
    return n;
}

static void node_in(struct onode *n, const char *name) {
    name_cat(n->in[n->n_in++], name, "");
}

static void attr_ints(struct onode *n, const char *name, int count, int64_t a, int64_t b,
                      int64_t c, int64_t d) {
    struct attr *t = &n->attrs[n->n_attrs++];
    int64_t v[4] = {a, b, c, d};
    t->name = name;
    t->type = ATTR_INTS;
    t->n_ints = count;
    memcpy(t->ints, v, sizeof(int64_t) * (size_t)count);
}

static void attr_int(struct onode *n, const char *name, int64_t v) {
    struct attr *t = &n->attrs[n->n_attrs++];
    t->name = name;
    t->type = ATTR_INT;
    t->i = v;
}

static void attr_float(struct onode *n, const char *name, float v) {
    struct attr *t = &n->attrs[n->n_attrs++];
    t->name = name;
    t->type = ATTR_FLOAT;
    t->f = v;
}

static void attr_str(struct onode *n, const char *name, const char *v) {
    struct attr *t = &n->attrs[n->n_attrs++];
    t->name = name;
    t->type = ATTR_STRING;
    t->s = v;
}

static struct init *add_init(struct graph *g, const char *name) {
    g->inits = grow(g->inits, &g->cap_inits, g->n_inits + 1, sizeof *g->inits, &g->oom);
    if (g->oom) return NULL;
    struct init *t = &g->inits[g->n_inits++];
    memset(t, 0, sizeof *t);
    name_cat(t->name, name, "");
    return t;
}

/* Parameter p of the model as an initializer named as in the checkpoint; returns its name. */
static const char *param_init(struct graph *g, int p) {
    const struct unet__param *q = &g->m->params[p];
    struct init *t = add_init(g, q->name);
    if (!t) return q->name;
    t->dtype = ONNX_FLOAT;
    t->ndim = q->ndim;
    for (int d = 0; d < q->ndim; d++) t->dims[d] = q->shape[d];
    t->data = unet__model_param_data(g->m, q);
    t->bytes = q->numel * sizeof(float);
    return q->name;
}

/* A small 1-D int64 constant named name. */
static void const_i64(struct graph *g, const char *name, int count, const int64_t *v) {
    struct init *t = add_init(g, name);
    if (!t) return;
    t->dtype = ONNX_INT64;
    t->ndim = 1;
    t->dims[0] = count;
    memcpy(t->small.i, v, sizeof(int64_t) * (size_t)count);
    t->bytes = sizeof(int64_t) * (size_t)count;
}

/* Constants shared by the shape computations, added to the graph on first use. */
enum shared_const { C_TWO, C_ZERO2, C_HW_LO, C_HW_HI, C_AXES, C_SCALE, C_COUNT };

static const char *shared(struct graph *g, enum shared_const k) {
    static const char *const names[C_COUNT] = {
        "unet_const.two", "unet_const.zeros2", "unet_const.hw_lo", "unet_const.hw_hi",
        "unet_const.axes_hw", "unet_const.scale2"};
    static const int64_t values[C_COUNT - 1][2] = {{2, 2}, {0, 0}, {2, 0}, {4, 0}, {2, 3}};
    static const int counts[C_COUNT - 1] = {2, 2, 1, 1, 2};
    if (g->have_const & 1u << k) return names[k];
    g->have_const |= 1u << k;
    if (k != C_SCALE) {
        const_i64(g, names[k], counts[k], values[k]);
        return names[k];
    }
    struct init *t = add_init(g, names[k]); /* Resize's scales: x2 in height and width */
    if (!t) return names[k];
    const float s[4] = {1.0f, 1.0f, 2.0f, 2.0f};
    t->dtype = ONNX_FLOAT;
    t->ndim = 1;
    t->dims[0] = 4;
    memcpy(t->small.f, s, sizeof s);
    t->bytes = sizeof s;
    return names[k];
}

/* A node "<base><suffix>" of op reading in1 and in2 (either may be NULL); returns its output
 * name (valid until the node array grows: copy it). */
static struct onode *op2(struct graph *g, const char *op, const char *base, const char *suffix,
                         const char *in1, const char *in2) {
    struct onode *n = add_node(g, op, base, suffix);
    if (!n) return NULL;
    if (in1) node_in(n, in1);
    if (in2) node_in(n, in2);
    return n;
}

/* The (height, width) of tensor x as an int64 [2], named "<base><suffix>". */
static void spatial_size(struct graph *g, const char *x, const char *base, const char *suffix,
                         char *out) {
    char shape[NAME_LEN];
    name_cat(out, base, suffix);
    struct onode *n = op2(g, "Shape", out, ".shape", x, NULL);
    if (!n) return;
    name_cat(shape, n->out, "");
    n = op2(g, "Slice", base, suffix, shape, shared(g, C_HW_LO));
    if (n) node_in(n, shared(g, C_HW_HI));
}

/* Slice of x over height and width from start (an int64 [2] tensor name) for size (another),
 * named name. */
static void crop_hw(struct graph *g, const char *name, const char *x, const char *start,
                    const char *size) {
    char end[NAME_LEN];
    struct onode *n = op2(g, "Add", name, ".end", start, size);
    if (!n) return;
    name_cat(end, n->out, "");
    n = op2(g, "Slice", name, "", x, start);
    if (!n) return;
    node_in(n, end);
    node_in(n, shared(g, C_AXES));
}

static void relu_after(struct graph *g, const struct unet__node *nd, char *vname) {
    if (!nd->relu) return;
    struct onode *n = op2(g, "Relu", nd->name, ".relu", vname, NULL);
    if (n) name_cat(vname, n->out, "");
}

/* One unet node as ONNX nodes; writes the name of its output value. */
static void convert_node(struct graph *g, const struct unet__node *nd) {
    const char *x = g->vname[nd->in];
    char *y = g->vname[nd->out];
    char a[NAME_LEN], b[NAME_LEN], c[NAME_LEN];
    struct onode *n = NULL;
    name_cat(y, nd->name, "");
    switch (nd->op) {
    case UNET__NODE_CONV:
    case UNET__NODE_CONVT: {
        const char *w = param_init(g, nd->w), *bias = nd->b >= 0 ? param_init(g, nd->b) : NULL;
        n = op2(g, nd->op == UNET__NODE_CONV ? "Conv" : "ConvTranspose", nd->name, "", x, w);
        if (!n) return;
        if (bias) node_in(n, bias);
        attr_ints(n, "kernel_shape", 2, nd->k, nd->k, 0, 0);
        attr_ints(n, "strides", 2, nd->stride, nd->stride, 0, 0);
        attr_ints(n, "pads", 4, nd->pad, nd->pad, nd->pad, nd->pad);
        relu_after(g, nd, y);
        return;
    }
    case UNET__NODE_BN: {
        const int ids[4] = {nd->w, nd->b, nd->rmean, nd->rvar};
        const char *names[4];
        for (int i = 0; i < 4; i++) names[i] = param_init(g, ids[i]);
        n = op2(g, "BatchNormalization", nd->name, "", x, NULL);
        if (!n) return;
        for (int i = 0; i < 4; i++) node_in(n, names[i]);
        attr_float(n, "epsilon", 1e-5f); /* model.c's bn dims */
        relu_after(g, nd, y);
        return;
    }
    case UNET__NODE_POOL:
        n = op2(g, "MaxPool", nd->name, "", x, NULL);
        if (!n) return;
        attr_ints(n, "kernel_shape", 2, 2, 2, 0, 0);
        attr_ints(n, "strides", 2, 2, 2, 0, 0);
        if (nd->ceil_mode) attr_int(n, "ceil_mode", 1);
        return;
    case UNET__NODE_UPSAMPLE:
        n = op2(g, "Resize", nd->name, "", x, "");
        if (!n) return;
        node_in(n, shared(g, C_SCALE));
        attr_str(n, "mode", "linear");
        /* PyTorch's align_corners=False is ONNX's pytorch_half_pixel (upsample.c's formulas). */
        attr_str(n, "coordinate_transformation_mode",
                 nd->align_corners ? "align_corners" : "pytorch_half_pixel");
        return;
    case UNET__NODE_DROPOUT:
        name_cat(y, x, ""); /* the identity at inference */
        return;
    case UNET__NODE_CONCAT: {
        /* diff = size(skip) - size(up); same padding pads up by diff // 2 before and the rest
         * after; valid convolutions crop the skip from diff // 2 to the up map's size. */
        const char *up = g->vname[nd->in2];
        char diff[NAME_LEN], lo[NAME_LEN], placed[NAME_LEN];
        spatial_size(g, x, nd->name, ".skip_hw", a);
        spatial_size(g, up, nd->name, ".up_hw", b);
        if (!(n = op2(g, "Sub", nd->name, ".diff", a, b))) return;
        name_cat(diff, n->out, "");
        if (!(n = op2(g, "Div", nd->name, ".lo", diff, shared(g, C_TWO)))) return;
        name_cat(lo, n->out, "");
        if (nd->center) {
            if (!(n = op2(g, "Sub", nd->name, ".hi", diff, lo))) return;
            name_cat(c, n->out, "");
            const char *zeros = shared(g, C_ZERO2);
            if (!(n = op2(g, "Concat", nd->name, ".pads", zeros, lo))) return;
            node_in(n, zeros);
            node_in(n, c);
            attr_int(n, "axis", 0);
            name_cat(c, n->out, "");
            if (!(n = op2(g, "Pad", nd->name, ".pad", up, c))) return;
            name_cat(placed, n->out, "");
            n = op2(g, "Concat", nd->name, "", x, placed);
        } else {
            name_cat(placed, nd->name, ".crop");
            crop_hw(g, placed, x, lo, b);
            n = op2(g, "Concat", nd->name, "", placed, up);
        }
        if (n) attr_int(n, "axis", 1);
        return;
    }
    case UNET__NODE_ADD:
    case UNET__NODE_CROP: {
        /* ADD: x + in2[..., off:off+size(x)]; CROP: x[..., off:off+size(ref)]. */
        const bool add = nd->op == UNET__NODE_ADD;
        const int64_t off[2] = {nd->crop_h, nd->crop_w};
        char start[NAME_LEN], cropped[NAME_LEN];
        name_cat(start, nd->name, ".offset");
        const_i64(g, start, 2, off);
        spatial_size(g, add ? x : g->vname[nd->ref], nd->name, ".size", a);
        name_cat(cropped, nd->name, add ? ".crop" : "");
        crop_hw(g, cropped, add ? g->vname[nd->in2] : x, start, a);
        if (add) op2(g, "Add", nd->name, "", x, cropped);
        return;
    }
    }
}

/* Builds the whole graph; false when out of memory. */
static bool build(struct graph *g, unet_output output, int same_size) {
    const unet_model *m = g->m;
    name_cat(g->vname[0], "input", "");
    for (int i = 0; i < m->n_nodes && !g->oom; i++) convert_node(g, &m->nodes[i]);
    if (g->oom) return false;
    const int K = m->cfg.classes;
    const bool prob = output == UNET_OUTPUT_PROBABILITIES;
    const char *out = prob ? "probabilities" : "logits";
    struct onode *n = add_node(g, prob ? (K == 1 ? "Sigmoid" : "Softmax") : "Identity", out, "");
    if (!n) return false;
    node_in(n, g->vname[m->out_value]);
    if (prob && K > 1) attr_int(n, "axis", 1);
    g->input = (struct value_info){"input", {{0, "batch"}, {m->cfg.in_channels, NULL},
                                             {0, "height"}, {0, "width"}}};
    g->output = (struct value_info){out, {{0, "batch"}, {K, NULL},
                                          {0, same_size ? "height" : NULL},
                                          {0, same_size ? "width" : NULL}}};
    return !g->oom;
}

/* ---------------------------------------------------------------------------------------
 * Serialisation
 * ------------------------------------------------------------------------------------- */

static void body_attr(struct pb *w, const void *arg) {
    const struct attr *a = arg;
    pb_str(w, 1, a->name);
    switch (a->type) {
    case ATTR_FLOAT: pb_float(w, 2, a->f); break;
    case ATTR_INT: pb_int(w, 3, a->i); break;
    case ATTR_STRING: pb_str(w, 4, a->s); break;
    case ATTR_INTS:
        for (int i = 0; i < a->n_ints; i++) pb_int(w, 8, a->ints[i]);
        break;
    }
    pb_int(w, 20, a->type);
}

static void body_node(struct pb *w, const void *arg) {
    const struct onode *n = arg;
    for (int i = 0; i < n->n_in; i++) pb_str(w, 1, n->in[i]);
    pb_str(w, 2, n->out);
    pb_str(w, 3, n->name);
    pb_str(w, 4, n->op);
    for (int i = 0; i < n->n_attrs; i++) pb_msg(w, 5, body_attr, &n->attrs[i]);
}

static void body_tensor(struct pb *w, const void *arg) {
    const struct init *t = arg;
    for (int d = 0; d < t->ndim; d++) pb_int(w, 1, t->dims[d]);
    pb_int(w, 2, t->dtype);
    pb_str(w, 8, t->name);
    pb_bytes(w, 9, t->data ? t->data : (const void *)&t->small, t->bytes);
}

static void body_dim(struct pb *w, const void *arg) {
    const struct dim *d = arg;
    if (d->value > 0) pb_int(w, 1, d->value);
    else if (d->param) pb_str(w, 2, d->param);
}

static void body_shape(struct pb *w, const void *arg) {
    const struct value_info *v = arg;
    for (int d = 0; d < 4; d++) pb_msg(w, 1, body_dim, &v->dims[d]);
}

static void body_tensor_type(struct pb *w, const void *arg) {
    pb_int(w, 1, ONNX_FLOAT);
    pb_msg(w, 2, body_shape, arg);
}

static void body_type(struct pb *w, const void *arg) {
    pb_msg(w, 1, body_tensor_type, arg);
}

static void body_value_info(struct pb *w, const void *arg) {
    const struct value_info *v = arg;
    pb_str(w, 1, v->name);
    pb_msg(w, 2, body_type, arg);
}

static void body_graph(struct pb *w, const void *arg) {
    const struct graph *g = arg;
    for (int i = 0; i < g->n_nodes; i++) pb_msg(w, 1, body_node, &g->nodes[i]);
    pb_str(w, 2, unet_arch_name(g->m->cfg.arch));
    for (int i = 0; i < g->n_inits; i++) pb_msg(w, 5, body_tensor, &g->inits[i]);
    pb_msg(w, 11, body_value_info, &g->input);
    pb_msg(w, 12, body_value_info, &g->output);
}

static void body_opset(struct pb *w, const void *arg) {
    (void)arg;
    pb_str(w, 1, "");
    pb_int(w, 2, ONNX_OPSET);
}

static void body_kv(struct pb *w, const void *arg) {
    const struct kv *kv = arg;
    pb_str(w, 1, kv->key);
    pb_str(w, 2, kv->value);
}

static void body_model(struct pb *w, const void *arg) {
    const struct graph *g = arg;
    pb_int(w, 1, ONNX_IR_VERSION);
    pb_str(w, 2, "unet");
    pb_str(w, 3, UNET_VERSION);
    pb_str(w, 6, g->doc);
    pb_msg(w, 7, body_graph, g);
    pb_msg(w, 8, body_opset, NULL);
    for (int i = 0; i < g->n_meta; i++) pb_msg(w, 14, body_kv, &g->meta[i]);
}

static void meta(struct graph *g, const char *key, const char *fmt, ...) {
    if (g->n_meta >= (int)(sizeof g->meta / sizeof g->meta[0])) return;
    snprintf(g->meta[g->n_meta].key, sizeof g->meta[0].key, "%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->meta[g->n_meta].value, sizeof g->meta[0].value, fmt, ap);
    va_end(ap);
    g->n_meta++;
}

/* ---------------------------------------------------------------------------------------
 * The public entry point
 * ------------------------------------------------------------------------------------- */

unet_status unet_export_onnx(unet_ctx *ctx, const unet_model *m, const char *path,
                             unet_output output) {
    if (!m || !path)
        return unet__fail(ctx, UNET_STATUS_ARG, "export_onnx: NULL %s", m ? "path" : "model");
    if (output != UNET_OUTPUT_LOGITS && output != UNET_OUTPUT_PROBABILITIES)
        return unet__fail(ctx, UNET_STATUS_ARG, "export_onnx: unknown output kind %d", (int)output);
    /* Does the output keep the input's size?  Probed at a valid tile near 64 (quietly: a
     * network without one there, e.g. an FCN with conv1_1 padding 1, just gets unnamed
     * output dimensions). */
    int probe = 0, oh = -1, ow = -1;
    unet_ctx *quiet = unet_ctx_create();
    if (unet_model_round_size(quiet, m, 64, &probe) != UNET_STATUS_OK ||
        unet_model_output_size(quiet, m, probe, probe, &oh, &ow) != UNET_STATUS_OK)
        oh = ow = -1;
    unet_ctx_free(quiet);
    unet_status s = UNET_STATUS_OK;
    struct graph g = {.m = m, .doc = "U-Net / FCN exported by unet (docs/export.md); input: "
                                     "images normalised as unet predict does"};
    struct unet__atomic at = {0};
    FILE *f = NULL;
    g.vname = calloc((size_t)m->n_values, sizeof *g.vname);
    if (!g.vname || !build(&g, output, oh == probe && ow == probe)) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory building the ONNX graph", path);
        goto done;
    }
    const unet_config *c = &m->cfg;
    meta(&g, "unet.arch", "%s", unet_arch_name(c->arch));
    meta(&g, "unet.in_channels", "%d", c->in_channels);
    meta(&g, "unet.classes", "%d", c->classes);
    meta(&g, "unet.base", "%d", c->base);
    meta(&g, "unet.depth", "%d", c->depth);
    meta(&g, "unet.padding", "%d", c->padding);
    meta(&g, "unet.up", "%s", c->up == UNET_UP_BILINEAR ? "bilinear" : "transpose");
    meta(&g, "unet.output", "%s", output == UNET_OUTPUT_LOGITS ? "logits" : "probabilities");
    s = unet__atomic_begin(ctx, &at, path);
    if (s != UNET_STATUS_OK) goto done;
    f = fopen(at.tmp, "wb");
    if (!f) {
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot write: %s", path, strerror(errno));
        goto done;
    }
    errno = 0;
    struct pb w = {.f = f};
    body_model(&w, &g);
    int err = w.err ? errno : 0;
    if (fflush(f) != 0 && !w.err) w.err = true, err = errno;
    if (fclose(f) != 0 && !w.err) w.err = true, err = errno;
    f = NULL;
    if (w.err) {
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: write failed (%s); the previous file is untouched",
                       path, err ? strerror(err) : "disk full?");
        goto done;
    }
    s = unet__atomic_commit(ctx, &at);
done:
    if (f) fclose(f);
    if (s != UNET_STATUS_OK) unet__atomic_abort(&at);
    free(g.vname);
    free(g.nodes);
    free(g.inits);
    return s;
}
