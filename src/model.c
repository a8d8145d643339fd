/* model.c — building U-Net (and FCN) as a node list: the configuration, the parameter table,
 * the node list, initialisation, create and free.
 *
 * A unet_config becomes a parameter table and a node list, written once by the builders below
 * in the order and with the names of the PyTorch modules they mirror:
 *     DoubleConv  "<prefix>.double_conv.{0,1,3,4}"  conv, BN, (ReLU), conv, BN, (ReLU)
 *     Down        "downK.maxpool_conv.1..."         max-pool then DoubleConv
 *     Up          "upK.up" (transposed conv) / bilinear, then concat [skip, up], "upK.conv..."
 *     OutConv     "outc.conv"                       1x1 conv to class scores
 * which is milesial/Pytorch-UNet's state_dict for the seed architecture, so its checkpoints load
 * as they are.  The paper's architecture uses the same names (without the batch-norm indices).
 * FCN's builder is fcn.c.  ReLU is a flag on the conv or batch-norm node before it (the node
 * applies it in place).  Planning is model_plan.c; running forward and backward model_run.c.
 */
#include "model.h"

#include "io/file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------------------- */

static const char *arch_names[] = {"unet", "unet-paper", "fcn32s", "fcn16s", "fcn8s"};

const char *unet_arch_name(unet_arch a) {
    if ((int)a < 0 || (size_t)a >= sizeof arch_names / sizeof arch_names[0]) return "?";
    return arch_names[a];
}

unet_status unet_arch_parse(unet_ctx *ctx, const char *name, unet_arch *out) {
    for (size_t i = 0; name && i < sizeof arch_names / sizeof arch_names[0]; i++)
        if (strcmp(name, arch_names[i]) == 0) {
            *out = (unet_arch)i;
            return UNET_STATUS_OK;
        }
    return unet__fail(ctx, UNET_STATUS_ARG,
                      "unknown architecture '%s' (expected unet, unet-paper, fcn32s, fcn16s, fcn8s)",
                      name ? name : "(null)");
}

/* The seed U-Net (milesial/Pytorch-UNet); the paper's (valid convolutions with biases, no
 * BatchNorm, dropout 0.5, He initialisation); the reference VGG16 FCN (fcn.c: biased convs
 * without BatchNorm, conv1_1 padded by 100, dropout 0.5 after fc6 and fc7, a fixed bilinear
 * final upsampling; depth is informational, five pools). */
unet_config unet_config_default(unet_arch arch) {
    const bool paper = arch == UNET_ARCH_UNET_PAPER, fcn = arch >= UNET_ARCH_FCN32S;
    const unet_config c = {
        .arch = arch, .in_channels = 1, .classes = 2, .base = 64, .depth = fcn ? 5 : 4,
        .up = UNET_UP_TRANSPOSE, .conv_bias = paper || fcn, .batchnorm = !(paper || fcn),
        .padding = fcn ? 100 : paper ? 0 : 1, .dropout = paper || fcn ? 0.5f : 0.0f,
        .init = paper ? UNET_INIT_HE : UNET_INIT_PYTORCH,
    };
    return c;
}

unet_status unet_config_check(unet_ctx *ctx, const unet_config *c) {
    if (!c) return unet__fail(ctx, UNET_STATUS_ARG, "config: NULL");
    if (c->arch < UNET_ARCH_UNET || c->arch > UNET_ARCH_FCN8S)
        return unet__fail(ctx, UNET_STATUS_ARG, "arch: unknown architecture %d", (int)c->arch);
    if (c->in_channels < 1 || c->in_channels > 64)
        return unet__fail(ctx, UNET_STATUS_ARG, "in_channels: expected 1..64, got %d", c->in_channels);
    if (c->classes < 1 || c->classes > UNET_MAX_CLASSES)
        return unet__fail(ctx, UNET_STATUS_ARG, "classes: expected 1..%d, got %d", UNET_MAX_CLASSES,
                          c->classes);
    if (c->base < 1 || c->base > 1024)
        return unet__fail(ctx, UNET_STATUS_ARG, "base: expected 1..1024 channels, got %d", c->base);
    bool fcn = c->arch >= UNET_ARCH_FCN32S;
    int max_depth = fcn ? 5 : 8;
    if (!fcn && (c->depth < 1 || c->depth > max_depth))
        return unet__fail(ctx, UNET_STATUS_ARG, "depth: expected 1..%d, got %d", max_depth, c->depth);
    if ((long long)c->base << (fcn ? 4 : c->depth) > 65536)
        return unet__fail(ctx, UNET_STATUS_ARG, "base %d at depth %d gives over 65536 channels",
                          c->base, c->depth);
    if (!fcn && c->up == UNET_UP_BILINEAR && c->base < 2)
        return unet__fail(ctx, UNET_STATUS_ARG, "base: bilinear upsampling needs base >= 2");
    if (c->up != UNET_UP_TRANSPOSE && c->up != UNET_UP_BILINEAR)
        return unet__fail(ctx, UNET_STATUS_ARG, "up: unknown upsampling mode %d", (int)c->up);
    if (fcn) {
        if (c->padding < 0 || c->padding > 1024)
            return unet__fail(ctx, UNET_STATUS_ARG,
                              "padding: expected 0..1024 for conv1_1 of an FCN (100 = the "
                              "reference's), got %d", c->padding);
        if (c->fc_channels < 0 || c->fc_channels > 65536)
            return unet__fail(ctx, UNET_STATUS_ARG,
                              "fc_channels: expected 1..65536 (0 = 64 * base), got %d",
                              c->fc_channels);
        if (c->learn_final_up != 0 && c->learn_final_up != 1)
            return unet__fail(ctx, UNET_STATUS_ARG, "learn_final_up: expected 0 or 1, got %d",
                              c->learn_final_up);
    } else if (c->padding != 0 && c->padding != 1) {
        return unet__fail(ctx, UNET_STATUS_ARG, "padding: expected 0 (valid) or 1 (same), got %d",
                          c->padding);
    }
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return unet__fail(ctx, UNET_STATUS_ARG, "dropout: expected 0 <= p < 1, got %g",
                          (double)c->dropout);
    if (c->init != UNET_INIT_PYTORCH && c->init != UNET_INIT_HE)
        return unet__fail(ctx, UNET_STATUS_ARG, "init: unknown scheme %d", (int)c->init);
    return UNET_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------
 * Builder: dynamic arrays of params, nodes and values
 * ------------------------------------------------------------------------------------- */


static void *grow(void *p, int *cap, int need, size_t elem, bool *oom) {
    if (need <= *cap) return p;
    int nc = *cap ? *cap * 2 : 32;
    while (nc < need) nc *= 2;
    void *q = realloc(p, (size_t)nc * elem);
    if (!q) {
        *oom = true;
        return p;
    }
    memset((char *)q + (size_t)*cap * elem, 0, (size_t)(nc - *cap) * elem);
    *cap = nc;
    return q;
}

int unet__add_param(struct unet__builder *B, const char *prefix, const char *suffix,
                     enum unet__param_kind kind, int ndim, int64_t d0, int64_t d1, int64_t d2,
                     int64_t d3) {
    unet_model *m = B->m;
    m->params = grow(m->params, &B->cap_params, m->n_params + 1, sizeof *m->params, &B->oom);
    if (B->oom) return -1;
    struct unet__param *p = &m->params[m->n_params];
    snprintf(p->name, sizeof p->name, "%s.%s", prefix, suffix);
    p->kind = kind;
    p->ndim = ndim;
    int64_t dims[4] = {d0, d1, d2, d3};
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = dims[i];
        p->numel *= (size_t)dims[i];
    }
    if (kind == UNET__PARAM_WEIGHT) {
        p->offset = m->n_weights;
        m->n_weights += p->numel;
    } else if (kind == UNET__PARAM_BUFFER) {
        p->offset = m->n_buffers;
        m->n_buffers += p->numel;
    } else {
        p->offset = (size_t)m->n_counters++;
    }
    return m->n_params++;
}

int unet__add_value(struct unet__builder *B, int producer) {
    unet_model *m = B->m;
    m->values = grow(m->values, &B->cap_values, m->n_values + 1, sizeof *m->values, &B->oom);
    if (B->oom) return -1;
    m->values[m->n_values].producer = producer;
    return m->n_values++;
}

/* Appends a node reading in (and in2) and returns its output value. */
int unet__add_node(struct unet__builder *B, struct unet__node nd) {
    unet_model *m = B->m;
    m->nodes = grow(m->nodes, &B->cap_nodes, m->n_nodes + 1, sizeof *m->nodes, &B->oom);
    if (B->oom) return -1;
    nd.out = unet__add_value(B, m->n_nodes);
    if (B->oom) return -1;
    m->nodes[m->n_nodes++] = nd;
    return nd.out;
}

struct unet__node unet__node_init(enum unet__node_op op, const char *name, int in) {
    struct unet__node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = op;
    snprintf(nd.name, sizeof nd.name, "%s", name);
    nd.in = in;
    nd.in2 = -1;
    nd.w = nd.b = nd.rmean = nd.rvar = nd.nbt = nd.ref = -1;
    return nd;
}

/* conv k x k (+ bias) (+ BN) + ReLU, as modules prefix.<idx>, prefix.<idx+1>, ...; advances *idx
 * past the ReLU module index so the next block continues the Sequential's numbering. */
static int conv_bn_relu(struct unet__builder *B, const char *prefix, int *idx, int x, int c_in,
                        int c_out, int k, int pad) {
    const unet_config *c = &B->m->cfg;
    char name[64];
    snprintf(name, sizeof name, "%s.%d", prefix, (*idx)++);
    struct unet__node cv = unet__node_init(UNET__NODE_CONV, name, x);
    cv.c_out = c_out;
    cv.k = k;
    cv.stride = 1;
    cv.pad = pad;
    cv.w = unet__add_param(B, name, "weight", UNET__PARAM_WEIGHT, 4, c_out, c_in, k, k);
    if (c->conv_bias) cv.b = unet__add_param(B, name, "bias", UNET__PARAM_WEIGHT, 1, c_out, 0, 0, 0);
    cv.relu = !c->batchnorm;
    x = unet__add_node(B, cv);
    if (c->batchnorm) {
        snprintf(name, sizeof name, "%s.%d", prefix, (*idx)++);
        struct unet__node bn = unet__node_init(UNET__NODE_BN, name, x);
        bn.w = unet__add_param(B, name, "weight", UNET__PARAM_WEIGHT, 1, c_out, 0, 0, 0);
        bn.b = unet__add_param(B, name, "bias", UNET__PARAM_WEIGHT, 1, c_out, 0, 0, 0);
        bn.rmean = unet__add_param(B, name, "running_mean", UNET__PARAM_BUFFER, 1, c_out, 0, 0, 0);
        bn.rvar = unet__add_param(B, name, "running_var", UNET__PARAM_BUFFER, 1, c_out, 0, 0, 0);
        bn.nbt = unet__add_param(B, name, "num_batches_tracked", UNET__PARAM_COUNTER, 0, 0, 0, 0, 0);
        bn.relu = true;
        x = unet__add_node(B, bn);
    }
    (*idx)++; /* the ReLU module */
    return x;
}

static int double_conv(struct unet__builder *B, const char *prefix, int x, int c_in, int c_mid, int c_out) {
    char p[64];
    snprintf(p, sizeof p, "%s.double_conv", prefix);
    int idx = 0;
    int pad = B->m->cfg.padding;
    x = conv_bn_relu(B, p, &idx, x, c_in, c_mid, 3, pad);
    return conv_bn_relu(B, p, &idx, x, c_mid, c_out, 3, pad);
}

static int dropout_node(struct unet__builder *B, const char *name, int x) {
    struct unet__node d = unet__node_init(UNET__NODE_DROPOUT, name, x);
    d.p = B->m->cfg.dropout;
    return unet__add_node(B, d);
}

/* U-Net: milesial's UNet generalised to any depth and base width.
 *   inc = DoubleConv(in, b); downK = Down(b 2^(K-1), b 2^K) (the last / factor);
 *   upK = Up(b 2^(D-K+1), b 2^(D-K) / factor) (the last: b); outc = 1x1 conv.
 * factor = 2 with bilinear upsampling, whose DoubleConv takes mid = in / 2. */
static void build_unet(struct unet__builder *B) {
    const unet_config *c = &B->m->cfg;
    const int D = c->depth, b = c->base;
    const int factor = c->up == UNET_UP_BILINEAR ? 2 : 1;
    int skip[9];
    char name[64];
    int x = unet__add_value(B, -1); /* value 0: the input */
    x = double_conv(B, "inc", x, c->in_channels, b, b);
    skip[0] = x;
    for (int k = 1; k <= D; k++) {
        int c_in = b << (k - 1), c_out = (b << k) / (k == D ? factor : 1);
        snprintf(name, sizeof name, "down%d.maxpool_conv.0", k);
        struct unet__node pool = unet__node_init(UNET__NODE_POOL, name, x);
        x = unet__add_node(B, pool);
        snprintf(name, sizeof name, "down%d.maxpool_conv.1", k);
        x = double_conv(B, name, x, c_in, c_out, c_out);
        /* The paper's dropout "at the end of the contracting path": after the last two levels,
         * as the Keras/Caffe ports place it (drop4, drop5). */
        if (c->dropout > 0.0f && k >= D - 1) {
            snprintf(name, sizeof name, "down%d.dropout", k);
            x = dropout_node(B, name, x);
        }
        skip[k] = x;
    }
    for (int k = 1; k <= D; k++) {
        int c_in = b << (D - k + 1);
        int c_out = k == D ? b : (b << (D - k)) / factor;
        int up;
        if (c->up == UNET_UP_BILINEAR) {
            snprintf(name, sizeof name, "up%d.up", k);
            struct unet__node u = unet__node_init(UNET__NODE_UPSAMPLE, name, x);
            u.align_corners = true;
            up = unet__add_node(B, u);
        } else {
            snprintf(name, sizeof name, "up%d.up", k);
            struct unet__node u = unet__node_init(UNET__NODE_CONVT, name, x);
            u.c_out = c_in / 2;
            u.k = 2;
            u.stride = 2;
            u.w = unet__add_param(B, name, "weight", UNET__PARAM_WEIGHT, 4, c_in, c_in / 2, 2, 2);
            u.b = unet__add_param(B, name, "bias", UNET__PARAM_WEIGHT, 1, c_in / 2, 0, 0, 0);
            up = unet__add_node(B, u);
        }
        snprintf(name, sizeof name, "up%d.cat", k);
        struct unet__node cat = unet__node_init(UNET__NODE_CONCAT, name, skip[D - k]);
        cat.in2 = up;
        /* Same padding: the upsampled map is zero-padded to the skip's size (F.pad).  Valid
         * convolutions: the skip is centre-cropped to the upsampled map (crop_and_concat). */
        cat.center = c->padding == 1;
        x = unet__add_node(B, cat);
        snprintf(name, sizeof name, "up%d.conv", k);
        x = double_conv(B, name, x, c_in, c->up == UNET_UP_BILINEAR ? c_in / 2 : c_out, c_out);
    }
    struct unet__node out = unet__node_init(UNET__NODE_CONV, "outc.conv", x);
    out.c_out = c->classes;
    out.k = 1;
    out.stride = 1;
    out.w = unet__add_param(B, "outc.conv", "weight", UNET__PARAM_WEIGHT, 4, c->classes, b, 1, 1);
    out.b = unet__add_param(B, "outc.conv", "bias", UNET__PARAM_WEIGHT, 1, c->classes, 0, 0, 0);
    B->m->out_value = unet__add_node(B, out);
}

/* ---------------------------------------------------------------------------------------
 * Initialisation
 * ------------------------------------------------------------------------------------- */

void unet__init_conv_pytorch(unet_model *m, const struct unet__node *nd, struct unet__rng *rng) {
    const struct unet__param *w = &m->params[nd->w];
    /* PyTorch's fan_in is weight.size(1) * k * k for both layers (for ConvTranspose2d that is
     * C_out * k * k: torch's _calculate_fan_in_and_fan_out reads dimension 1).
     * kaiming_uniform_(a = sqrt(5)): bound = sqrt(6 / ((1 + 5) fan_in)) = 1/sqrt(fan_in); the
     * bias uses the same bound. */
    double fan_in = (double)w->shape[1] * w->shape[2] * w->shape[3];
    float bound = (float)(1.0 / sqrt(fan_in));
    float *wd = unet__model_param_data(m, w);
    for (size_t j = 0; j < w->numel; j++) wd[j] = bound * (2.0f * unet__rng_uniform(rng) - 1.0f);
    if (nd->b >= 0) {
        float *bd = unet__model_param_data(m, &m->params[nd->b]);
        for (size_t j = 0; j < m->params[nd->b].numel; j++)
            bd[j] = bound * (2.0f * unet__rng_uniform(rng) - 1.0f);
    }
}

/* U-Net: batch-norms at the identity (gamma 1, beta 0, running statistics 0 and 1), convolutions
 * by He et al. or PyTorch's defaults (cfg.init). */
static void init_unet(unet_model *m, struct unet__rng *rng) {
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        if (nd->op == UNET__NODE_BN) {
            const struct unet__param *g = &m->params[nd->w], *bt = &m->params[nd->b];
            for (size_t j = 0; j < g->numel; j++) unet__model_param_data(m, g)[j] = 1.0f;
            memset(unet__model_param_data(m, bt), 0, bt->numel * sizeof(float));
            const struct unet__param *rm = &m->params[nd->rmean], *rv = &m->params[nd->rvar];
            memset(m->buffers + rm->offset, 0, rm->numel * sizeof(float));
            for (size_t j = 0; j < rv->numel; j++) m->buffers[rv->offset + j] = 1.0f;
            m->counters[m->params[nd->nbt].offset] = 0;
            continue;
        }
        if (nd->op != UNET__NODE_CONV && nd->op != UNET__NODE_CONVT) continue;
        const struct unet__param *w = &m->params[nd->w];
        float *wd = unet__model_param_data(m, w);
        float *bd = nd->b >= 0 ? unet__model_param_data(m, &m->params[nd->b]) : NULL;
        size_t nb = nd->b >= 0 ? m->params[nd->b].numel : 0;
        if (m->cfg.init == UNET_INIT_HE) {
            /* He et al.: std sqrt(2 / N), N = incoming connections of one output unit:
             * k*k*C_in for a convolution; C_in * (k/stride)^2 for the up-convolution, where each
             * output pixel sees one kernel tap per input channel when k == stride. */
            double n_in = nd->op == UNET__NODE_CONV
                              ? (double)w->shape[1] * w->shape[2] * w->shape[3]
                              : (double)w->shape[0] * (double)(nd->k * nd->k) / (nd->stride * nd->stride);
            double std = sqrt(2.0 / (n_in < 1.0 ? 1.0 : n_in));
            for (size_t j = 0; j < w->numel; j++) wd[j] = (float)(std * unet__rng_normal(rng));
            if (bd) memset(bd, 0, nb * sizeof(float));
        } else {
            unet__init_conv_pytorch(m, nd, rng);
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * The U-Net family: a checkpoint's configuration from its tensors, the size bound
 * ------------------------------------------------------------------------------------- */

static int shape_of(const struct unet__shapes *t, const char *name, int64_t shape[4]) {
    return t->find(t->src, name, shape);
}

static bool has(const struct unet__shapes *t, const char *fmt, int k) {
    char    name[128];
    int64_t shape[4];
    snprintf(name, sizeof name, fmt, k);
    return shape_of(t, name, shape) >= 0;
}

static bool claims_unet(const struct unet__shapes *t) {
    return has(t, "inc.double_conv.0.weight", 0);
}

/* Infers a U-Net configuration from a state_dict without metadata (a PyTorch checkpoint):
 *   in_channels, base     inc.double_conv.0.weight (base, in, 3, 3)
 *   batchnorm             inc.double_conv.1.weight exists (else conv, ReLU, conv, ReLU)
 *   conv_bias             inc.double_conv.0.bias exists
 *   depth                 the largest K with downK.maxpool_conv.1.double_conv.0.weight
 *   up                    up1.up.weight exists: transposed; else bilinear
 *   classes               outc.conv.weight (classes, base, 1, 1)
 * With BatchNorm the padding is "same" (milesial); without, the paper's valid convolutions.
 * The padding cannot be seen in the weights: add metadata to say otherwise. */
static unet_status infer_unet(unet_ctx *ctx, const struct unet__shapes *t, unet_config *c) {
    int64_t inc[4], out[4];
    if (shape_of(t, "inc.double_conv.0.weight", inc) != 4 ||
        shape_of(t, "outc.conv.weight", out) != 4)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: no unet metadata and no U-Net tensors (inc.double_conv.0.weight, "
                          "outc.conv.weight): not a U-Net checkpoint",
                          t->path);
    bool bn = has(t, "inc.double_conv.1.weight", 0);
    *c = unet_config_default(bn ? UNET_ARCH_UNET : UNET_ARCH_UNET_PAPER);
    c->in_channels = unet__dim_int(inc[1]);
    c->base = unet__dim_int(inc[0]);
    c->conv_bias = has(t, "inc.double_conv.0.bias", 0);
    int depth = 0;
    while (depth < 16 && has(t, "down%d.maxpool_conv.1.double_conv.0.weight", depth + 1)) depth++;
    c->depth = depth;
    c->up = has(t, "up1.up.weight", 0) ? UNET_UP_TRANSPOSE : UNET_UP_BILINEAR;
    c->classes = unet__dim_int(out[0]);
    return UNET_STATUS_OK;
}

/* The deepest double convolution starts with a 3x3 convolution from base 2^(depth-1) channels
 * to at least as many (base <= 1024, depth <= 8: nothing overflows). */
static uint64_t min_weights_unet(const unet_config *c) {
    uint64_t ch = (uint64_t)c->base << (c->depth - 1);
    return 9 * ch * ch;
}

const struct unet__family unet__unet_family = {build_unet,       init_unet, claims_unet,
                                               infer_unet,       min_weights_unet, false};

const struct unet__family *unet__family_of(unet_arch arch) {
    return arch >= UNET_ARCH_FCN32S ? &unet__fcn_family : &unet__unet_family;
}

unet_status unet__config_infer(unet_ctx *ctx, const struct unet__shapes *t, unet_config *c) {
    const struct unet__family *f = unet__fcn_family.claims(t) ? &unet__fcn_family
                                                              : &unet__unet_family;
    unet_status s = f->infer(ctx, t, c);
    if (s == UNET_STATUS_OK && unet_config_check(ctx, c) != UNET_STATUS_OK)
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: inferred architecture is invalid: %s",
                       t->path, unet_ctx_errmsg(ctx));
    return s;
}

/* ---------------------------------------------------------------------------------------
 * Create / free / accessors
 * ------------------------------------------------------------------------------------- */

void unet_model_free(unet_model *m) {
    if (!m) return;
    unet__model_plan_free(m);
    unet__wcache_free(m);
    if (m->map) { /* the weights lie in the mapped checkpoint */
        unet__unmap_file(m->map, m->map_bytes);
        m->weights = NULL;
    }
    /* The aligned blocks (unet__alloc), then the malloc'd ones. */
    void *blocks[] = {m->weights, m->buffers, m->grads,    m->opt_m,
                      m->opt_v,   m->snapshot, m->ema_w, m->ema_b};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) unet__free(blocks[i]);
    void *arrays[] = {m->meta, m->counters, m->params, m->nodes, m->values, m->bn_sync.buf, m};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) free(arrays[i]);
}

unet_status unet__model_build(unet_ctx *ctx, const unet_config *cfg, unet_model **out) {
    *out = NULL;
    unet_status s = unet_config_check(ctx, cfg);
    if (s != UNET_STATUS_OK) return s;
    unet_model *m = calloc(1, sizeof *m);
    if (!m) return unet__fail(ctx, UNET_STATUS_NOMEM, "model: out of memory");
    m->cfg = *cfg;
    struct unet__builder B = {.m = m};
    unet__family_of(cfg->arch)->build(&B);
    if (B.oom) {
        unet_model_free(m);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "model: out of memory building the graph");
    }
    if (m->n_nodes == 0) {
        unet_model_free(m);
        return unet__fail(ctx, UNET_STATUS_ARG, "arch: %s is not available in this build",
                          unet_arch_name(cfg->arch));
    }
    m->weights = unet__calloc(m->n_weights, sizeof(float));
    m->buffers = unet__calloc(m->n_buffers ? m->n_buffers : 1, sizeof(float));
    m->counters = calloc(m->n_counters ? (size_t)m->n_counters : 1, sizeof(int64_t));
    if (!m->weights || !m->buffers || !m->counters) {
        size_t mb = m->n_weights * sizeof(float) >> 20;
        unet_model_free(m);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "model: cannot allocate %zu MiB of parameters", mb);
    }
    *out = m;
    return UNET_STATUS_OK;
}

unet_status unet_model_create(unet_ctx *ctx, const unet_config *cfg, uint64_t seed, unet_model **out) {
    if (!out) return unet__fail(ctx, UNET_STATUS_ARG, "unet_model_create: out is NULL");
    unet_status s = unet__model_build(ctx, cfg, out);
    if (s != UNET_STATUS_OK) return s;
    struct unet__rng rng;
    unet__rng_seed(&rng, seed);
    unet__family_of(cfg->arch)->init(*out, &rng);
    unet__rng_seed(&(*out)->rng, seed ^ 0x5eed5eed5eedULL);
    return UNET_STATUS_OK;
}

static const char *const precision_names[] = {"fp32", "bf16"};

const char *unet_precision_name(unet_precision p) {
    return p == UNET_PRECISION_FP32 || p == UNET_PRECISION_BF16 ? precision_names[p] : "?";
}

unet_status unet_precision_parse(unet_ctx *ctx, const char *name, unet_precision *out) {
    for (int i = 0; name && i < 2; i++)
        if (strcmp(name, precision_names[i]) == 0) {
            *out = (unet_precision)i;
            return UNET_STATUS_OK;
        }
    return unet__fail(ctx, UNET_STATUS_ARG, "precision: expected fp32 or bf16, got '%s'",
                      name ? name : "(null)");
}

int unet_precision_native(unet_precision p) {
    return p == UNET_PRECISION_FP32 ||
           (p == UNET_PRECISION_BF16 && unet__kernels_pick(UNET__PRECISION_BF16) != NULL);
}

unet_status unet_model_set_precision(unet_ctx *ctx, unet_model *m, unet_precision p) {
    if (!m) return unet__fail(ctx, UNET_STATUS_ARG, "set_precision: model is NULL");
    if (p != UNET_PRECISION_FP32 && p != UNET_PRECISION_BF16)
        return unet__fail(ctx, UNET_STATUS_ARG, "precision: unknown value %d", (int)p);
    m->precision = p == UNET_PRECISION_BF16 ? UNET__PRECISION_BF16 : UNET__PRECISION_F32;
    return UNET_STATUS_OK;
}

unet_precision unet_model_precision(const unet_model *m) {
    return m && m->precision == UNET__PRECISION_BF16 ? UNET_PRECISION_BF16 : UNET_PRECISION_FP32;
}

const unet_config *unet_model_config(const unet_model *m) {
    return m ? &m->cfg : NULL;
}

size_t unet_model_param_count(const unet_model *m) {
    return m ? m->n_weights : 0;
}

long unet_train_steps(const unet_model *m) {
    return m ? m->opt_step : 0;
}

const struct unet__param *unet__model_find_param(const unet_model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

unet_status unet__model_own_weights(unet_ctx *ctx, unet_model *m) {
    if (!m->map) return UNET_STATUS_OK;
    float *w = unet__alloc(m->n_weights * sizeof(float));
    if (!w)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "model: cannot allocate %zu MiB of parameters",
                          m->n_weights * sizeof(float) >> 20);
    memcpy(w, m->weights, m->n_weights * sizeof(float));
    unet__unmap_file(m->map, m->map_bytes);
    m->map = NULL;
    m->map_bytes = 0;
    m->weights = w;
    return UNET_STATUS_OK;
}

float *unet__model_param_data(const unet_model *m, const struct unet__param *p) {
    switch (p->kind) {
    case UNET__PARAM_WEIGHT: return m->weights + p->offset;
    case UNET__PARAM_BUFFER: return m->buffers + p->offset;
    case UNET__PARAM_COUNTER: return NULL;
    }
    return NULL;
}
