/* model.c — building U-Net (and FCN) as a node list, planning its memory, running it.
 *
 * Building.  A unet_config becomes a parameter table and a node list, written once by the
 * builders below in the order and with the names of the PyTorch modules they mirror:
 *     DoubleConv  "<prefix>.double_conv.{0,1,3,4}"  conv, BN, (ReLU), conv, BN, (ReLU)
 *     Down        "downK.maxpool_conv.1..."         max-pool then DoubleConv
 *     Up          "upK.up" (transposed conv) / bilinear, then concat [skip, up], "upK.conv..."
 *     OutConv     "outc.conv"                       1x1 conv to class scores
 * which is milesial/Pytorch-UNet's state_dict for the seed architecture, so its checkpoints load
 * as they are.  The paper's architecture uses the same names (without the batch-norm indices).
 *
 * Planning.  unet_model_prepare propagates shapes for a batch size and image size and lays out
 * one block of memory.  Inference keeps a value only from its producer to its last consumer and
 * places values by first fit (so peak memory is the largest live set, mostly the skip
 * connections, not the sum of all layers).  Training keeps the activations backward needs and
 * plans the activation gradients the same way over the backward pass.  A batch-norm's output
 * (half of the activations of a conv-BN-ReLU network) is not kept: backward recomputes it from
 * the stored convolution output and the saved mean and rstd, one cheap element-wise pass, into
 * a buffer that lives only as long as its gradient.  Inference does not form a concatenation
 * that only feeds a convolution: the convolution reads its two inputs; and a max-pool after a
 * folded conv-BN-ReLU is written by the convolution's epilogue.  Which nodes are fused is
 * decided once per plan (plan_fusion) and recorded on the nodes (struct unet__fusion): the
 * memory planner and the forward pass read that record.
 *
 * Fusion.  ReLU is a flag on the conv or batch-norm node before it, applied in place; its
 * backward masks the incoming gradient in place (dy *= y > 0) before the node's own backward.
 * In inference, a convolution whose only reader is a batch-norm folds it (and its ReLU) into
 * its epilogue: y = relu(conv(x) * a + (beta - mean * a)), a = gamma / sqrt(var + eps), with
 * the running statistics of the moment (computed per forward: a few floats per channel, so
 * weights changed by training are always seen); the convolution writes the batch-norm's
 * output and its own output value gets no memory.
 */
#include "model.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------------------- */

unet_config unet_config_default(unet_arch arch) {
    unet_config c = {
        .arch = arch, .in_channels = 1, .classes = 2, .base = 64, .depth = 4,
        .up = UNET_UP_TRANSPOSE, .conv_bias = 0, .batchnorm = 1, .padding = 1,
        .dropout = 0.0f, .init = UNET_INIT_PYTORCH,
    };
    if (arch == UNET_ARCH_UNET_PAPER) {
        c.conv_bias = 1;
        c.batchnorm = 0;
        c.padding = 0;
        c.dropout = 0.5f;
        c.init = UNET_INIT_HE;
    }
    if (arch >= UNET_ARCH_FCN32S) {
        /* The reference VGG16 FCN (fcn.c): biased convs without BatchNorm, conv1_1 padded by
         * 100, dropout 0.5 after fc6 and fc7, a fixed bilinear final upsampling.  depth is
         * informational (five pools). */
        c.depth = 5;
        c.conv_bias = 1;
        c.batchnorm = 0;
        c.padding = 100;
        c.dropout = 0.5f;
    }
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

static void init_params(unet_model *m, uint64_t seed) {
    struct unet__rng rng;
    unet__rng_seed(&rng, seed);
    if (m->cfg.arch >= UNET_ARCH_FCN32S) {
        unet__init_fcn(m, &rng);
        return;
    }
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
            for (size_t j = 0; j < w->numel; j++) wd[j] = (float)(std * unet__rng_normal(&rng));
            if (bd) memset(bd, 0, nb * sizeof(float));
        } else {
            unet__init_conv_pytorch(m, nd, &rng);
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Create / free / accessors
 * ------------------------------------------------------------------------------------- */

static void plan_free(unet_model *m) {
    unet__arena_deinit(&m->act);
    m->fold = NULL;
    unet__free(m->scratch);
    m->scratch = NULL;
    m->scratch_floats = 0;
    m->planned = false;
}

void unet_model_free(unet_model *m) {
    if (!m) return;
    plan_free(m);
    unet__free(m->weights);
    unet__free(m->buffers);
    unet__free(m->grads);
    unet__free(m->opt_m);
    unet__free(m->opt_v);
    unet__free(m->snapshot);
    free(m->counters);
    free(m->params);
    free(m->nodes);
    free(m->values);
    free(m);
}

unet_status unet__model_build(unet_ctx *ctx, const unet_config *cfg, unet_model **out) {
    *out = NULL;
    unet_status s = unet_config_check(ctx, cfg);
    if (s != UNET_STATUS_OK) return s;
    unet_model *m = calloc(1, sizeof *m);
    if (!m) return unet__fail(ctx, UNET_STATUS_NOMEM, "model: out of memory");
    m->cfg = *cfg;
    struct unet__builder B = {.m = m};
    if (cfg->arch == UNET_ARCH_UNET || cfg->arch == UNET_ARCH_UNET_PAPER) build_unet(&B);
    else unet__build_fcn(&B);
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
    init_params(*out, seed);
    unet__rng_seed(&(*out)->rng, seed ^ 0x5eed5eed5eedULL);
    return UNET_STATUS_OK;
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

float *unet__model_param_data(const unet_model *m, const struct unet__param *p) {
    switch (p->kind) {
    case UNET__PARAM_WEIGHT: return m->weights + p->offset;
    case UNET__PARAM_BUFFER: return m->buffers + p->offset;
    case UNET__PARAM_COUNTER: return NULL;
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Shapes
 * ------------------------------------------------------------------------------------- */

/* Propagates per-image shapes from an n x in_channels x h x w input through nodes/values
 * (the model's own arrays, or copies) and fills each node's dims. */
static unet_status propagate(unet_ctx *ctx, const unet_model *m, struct unet__node *nodes,
                             struct unet__value *values, int n, int h, int w) {
    values[0].c = m->cfg.in_channels;
    values[0].h = h;
    values[0].w = w;
    for (int i = 0; i < m->n_nodes; i++) {
        struct unet__node *nd = &nodes[i];
        const struct unet__value *x = &values[nd->in];
        struct unet__value *y = &values[nd->out];
        unet_status s = UNET_STATUS_OK;
        switch (nd->op) {
        case UNET__NODE_CONV: {
            struct unet__conv2d_dims d = {.N = n, .C_in = x->c, .H_in = x->h, .W_in = x->w,
                                          .C_out = nd->c_out, .K_h = nd->k, .K_w = nd->k,
                                          .stride_h = nd->stride, .stride_w = nd->stride,
                                          .pad_h = nd->pad, .pad_w = nd->pad};
            s = unet__conv2d_dims_init(ctx, &d, nd->name);
            nd->d.conv = d;
            y->c = d.C_out, y->h = d.H_out, y->w = d.W_out;
            break;
        }
        case UNET__NODE_CONVT: {
            struct unet__convt2d_dims d = {.N = n, .C_in = x->c, .H_in = x->h, .W_in = x->w,
                                           .C_out = nd->c_out, .K_h = nd->k, .K_w = nd->k,
                                           .stride_h = nd->stride, .stride_w = nd->stride,
                                           .pad_h = nd->pad, .pad_w = nd->pad};
            s = unet__convt2d_dims_init(ctx, &d, nd->name);
            nd->d.convt = d;
            y->c = d.C_out, y->h = d.H_out, y->w = d.W_out;
            break;
        }
        case UNET__NODE_BN:
            nd->d.bn = (struct unet__bn_dims){.N = n, .C = x->c, .H = x->h, .W = x->w,
                                              .eps = 1e-5f, .momentum = 0.1f};
            *y = *x;
            break;
        case UNET__NODE_POOL:
            if (x->h < 2 || x->w < 2) {
                s = unet__fail(ctx, UNET_STATUS_SHAPE,
                               "%s: a %dx%d map cannot be max-pooled 2x2 (input too small for "
                               "depth %d)", nd->name, x->h, x->w, m->cfg.depth);
                break;
            }
            nd->d.pool = (struct unet__pool_dims){
                .N = n, .C = x->c, .H_in = x->h, .W_in = x->w,
                .H_out = nd->ceil_mode ? (x->h + 1) / 2 : x->h / 2,
                .W_out = nd->ceil_mode ? (x->w + 1) / 2 : x->w / 2};
            y->c = x->c, y->h = nd->d.pool.H_out, y->w = nd->d.pool.W_out;
            break;
        case UNET__NODE_UPSAMPLE:
            nd->d.up = (struct unet__upsample_dims){.N = n, .C = x->c, .H_in = x->h, .W_in = x->w,
                                                    .H_out = 2 * x->h, .W_out = 2 * x->w,
                                                    .align_corners = nd->align_corners};
            y->c = x->c, y->h = 2 * x->h, y->w = 2 * x->w;
            break;
        case UNET__NODE_CONCAT: {
            const struct unet__value *u = &values[nd->in2];
            /* center: output has the skip's size (the upsampled map is padded or cropped to it);
             * otherwise the upsampled map's size (the skip is centre-cropped). */
            int H = nd->center ? x->h : u->h, W = nd->center ? x->w : u->w;
            if (!nd->center && (x->h < u->h || x->w < u->w)) {
                s = unet__fail(ctx, UNET_STATUS_SHAPE,
                               "%s: skip map %dx%d is smaller than the upsampled map %dx%d", nd->name,
                               x->h, x->w, u->h, u->w);
                break;
            }
            struct unet__concat_dims d = {.N = n, .H = H, .W = W};
            unet__place_center(&d.a, x->c, x->h, x->w, H, W);
            unet__place_center(&d.b, u->c, u->h, u->w, H, W);
            nd->d.cat = d;
            y->c = x->c + u->c, y->h = H, y->w = W;
            break;
        }
        case UNET__NODE_DROPOUT:
            nd->d.drop = (struct unet__dropout_dims){.N = n, .C = x->c, .H = x->h, .W = x->w,
                                                     .p = nd->p, .channelwise = false};
            *y = *x;
            break;
        case UNET__NODE_ADD: {
            const struct unet__value *u = &values[nd->in2];
            struct unet__add_dims d = {.N = n, .C = x->c, .H = x->h, .W = x->w};
            d.b = (struct unet__place){.C = u->c, .H = u->h, .W = u->w, .off_h = nd->crop_h,
                                       .off_w = nd->crop_w};
            if (u->c != x->c || nd->crop_h < 0 || nd->crop_w < 0 || u->h < nd->crop_h + x->h ||
                u->w < nd->crop_w + x->w) {
                s = unet__fail(ctx, UNET_STATUS_SHAPE,
                               "%s: cannot crop %dx%dx%d at offset (%d, %d) to %dx%dx%d", nd->name,
                               u->c, u->h, u->w, nd->crop_h, nd->crop_w, x->c, x->h, x->w);
                break;
            }
            nd->d.add = d;
            *y = *x;
            break;
        }
        case UNET__NODE_CROP: {
            const struct unet__value *r = &values[nd->ref];
            if (nd->crop_h < 0 || nd->crop_w < 0 || x->h < nd->crop_h + r->h ||
                x->w < nd->crop_w + r->w) {
                s = unet__fail(ctx, UNET_STATUS_SHAPE,
                               "%s: cannot crop %dx%d at offset (%d, %d) to %dx%d", nd->name, x->h,
                               x->w, nd->crop_h, nd->crop_w, r->h, r->w);
                break;
            }
            y->c = x->c, y->h = r->h, y->w = r->w;
            break;
        }
        }
        if (s != UNET_STATUS_OK) return s;
        y->producer = i;
    }
    return UNET_STATUS_OK;
}

/* Shapes for (n, h, w) into copies of the node and value tables (the plan stays untouched).
 * The caller frees *nodes and *values. */
static unet_status shapes_of(unet_ctx *ctx, const unet_model *m, int n, int h, int w,
                             struct unet__node **nodes, struct unet__value **values) {
    *nodes = malloc(sizeof **nodes * (size_t)m->n_nodes);
    *values = malloc(sizeof **values * (size_t)m->n_values);
    if (!*nodes || !*values) return unet__fail(ctx, UNET_STATUS_NOMEM, "model: out of memory");
    memcpy(*nodes, m->nodes, sizeof **nodes * (size_t)m->n_nodes);
    memcpy(*values, m->values, sizeof **values * (size_t)m->n_values);
    return propagate(ctx, m, *nodes, *values, n, h, w);
}

unet_status unet_model_round_size(unet_ctx *ctx, const unet_model *m, int size, int *rounded) {
    if (!m || !rounded || size < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "round_size: bad arguments");
    bool unet = m->cfg.arch == UNET_ARCH_UNET || m->cfg.arch == UNET_ARCH_UNET_PAPER;
    /* The tile rule repeats with period 2^depth; look a few periods ahead for the first size
     * whose output exists (valid convolutions need a minimum size). */
    int period = unet ? 1 << m->cfg.depth : 1;
    for (long s = size; s <= (long)size + 64L * period && s < (1L << 24); s++) {
        struct unet__node *nodes = NULL;
        struct unet__value *values = NULL;
        unet_ctx *quiet = unet_ctx_create();
        bool ok = shapes_of(quiet, m, 1, (int)s, (int)s, &nodes, &values) == UNET_STATUS_OK;
        unet_ctx_free(quiet);
        for (int i = 0; ok && unet && i < m->n_nodes; i++)
            if (nodes[i].op == UNET__NODE_POOL && (values[nodes[i].in].h % 2 != 0))
                ok = false;
        free(nodes);
        free(values);
        if (ok) {
            *rounded = (int)s;
            return UNET_STATUS_OK;
        }
    }
    return unet__fail(ctx, UNET_STATUS_ARG, "no valid tile size at or above %d for this network", size);
}

unet_status unet_model_output_size(unet_ctx *ctx, const unet_model *m, int h, int w, int *out_h,
                                   int *out_w) {
    if (!m || !out_h || !out_w) return unet__fail(ctx, UNET_STATUS_ARG, "output_size: NULL argument");
    if (h < 1 || w < 1) return unet__fail(ctx, UNET_STATUS_ARG, "image size %dx%d", h, w);
    struct unet__node *nodes = NULL;
    struct unet__value *values = NULL;
    unet_status s = shapes_of(ctx, m, 1, h, w, &nodes, &values);
    if (s == UNET_STATUS_OK) {
        *out_h = values[m->out_value].h;
        *out_w = values[m->out_value].w;
    }
    free(nodes);
    free(values);
    return s;
}

/* ---------------------------------------------------------------------------------------
 * Memory planning
 * ------------------------------------------------------------------------------------- */

struct interval {
    size_t size;        /* floats, rounded to 16 */
    int    start, end;  /* inclusive, in node steps */
    size_t offset;
    int    id;
};

static int cmp_interval_size(const void *a, const void *b) {
    const struct interval *x = a, *y = b;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    return x->id - y->id;
}

/* Greedy by size (largest first), each at the lowest offset that does not overlap, in memory,
 * any already placed interval that overlaps it in time.  Returns the total floats. */
static size_t place_intervals(struct interval *iv, int n) {
    qsort(iv, (size_t)n, sizeof *iv, cmp_interval_size);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t off = 0;
        bool moved = true;
        while (moved) {
            moved = false;
            for (int j = 0; j < i; j++) {
                if (iv[j].end < iv[i].start || iv[i].end < iv[j].start) continue;
                if (off < iv[j].offset + iv[j].size && iv[j].offset < off + iv[i].size) {
                    off = iv[j].offset + iv[j].size;
                    moved = true;
                }
            }
        }
        iv[i].offset = off;
        if (off + iv[i].size > total) total = off + iv[i].size;
    }
    return total;
}

static size_t round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

static size_t value_floats(const unet_model *m, int v, int n) {
    const struct unet__value *x = &m->values[v];
    return (size_t)n * x->c * x->h * x->w;
}

/* Fills last_use of every value (the last node reading it; NN for the output). */
static void compute_last_use(const unet_model *m, const struct unet__node *nodes,
                             struct unet__value *values) {
    for (int v = 0; v < m->n_values; v++) values[v].last_use = values[v].producer;
    for (int i = 0; i < m->n_nodes; i++) {
        values[nodes[i].in].last_use = i;
        if (nodes[i].in2 >= 0) values[nodes[i].in2].last_use = i;
    }
    values[m->out_value].last_use = m->n_nodes;
}

/* Inference: does conv node i fold the batch-norm node i + 1 (the conv output's only reader)?
 * last_use must be computed. */
static bool folds_bn(const unet_model *m, const struct unet__node *nodes,
                     const struct unet__value *values, int i) {
    const struct unet__node *c = &nodes[i];
    return c->op == UNET__NODE_CONV && !c->relu && i + 1 < m->n_nodes &&
           nodes[i + 1].op == UNET__NODE_BN && nodes[i + 1].in == c->out &&
           values[c->out].last_use == i + 1;
}

/* Inference: is concat node i read only by convolution i + 1, with both inputs at the output's
 * size (no crop, no padding) and a convolution that reads two inputs?  Then the convolution
 * reads the two inputs directly and the concatenation is never formed. */
static bool fuses_cat(const unet_model *m, const struct unet__node *nodes,
                      const struct unet__value *values, int i) {
    const struct unet__node *c = &nodes[i];
    if (c->op != UNET__NODE_CONCAT || i + 1 >= m->n_nodes || c->in2 < 0 || c->in == c->in2)
        return false;
    const struct unet__node        *cv = &nodes[i + 1];
    const struct unet__concat_dims *d = &c->d.cat;
    return cv->op == UNET__NODE_CONV && cv->in == c->out && values[c->out].last_use == i + 1 &&
           d->a.H == d->H && d->a.W == d->W && d->b.H == d->H && d->b.W == d->W &&
           d->a.off_h == 0 && d->a.off_w == 0 && d->b.off_h == 0 && d->b.off_w == 0 &&
           unet__conv2d_fusable(&cv->d.conv);
}

/* Inference: does conv node i, folding batch-norm i + 1, also write the output of max-pool node
 * i + 2 (floor mode) that reads the batch-norm's output?  Then the pool is the convolution's
 * epilogue too and the batch-norm output is not read back for it. */
static bool fuses_pool(const unet_model *m, const struct unet__node *nodes, int i) {
    return i + 2 < m->n_nodes && nodes[i + 2].op == UNET__NODE_POOL &&
           nodes[i + 2].in == nodes[i + 1].out && !nodes[i + 2].ceil_mode &&
           unet__conv2d_fusable(&nodes[i].d.conv);
}

/* The fusion plan (model.h, struct unet__fusion) of every node, decided here once: nothing
 * for training; for inference, batch-norms folded into their convolutions, pools written by
 * their epilogues, concats read in place, dropouts as the identity.  last_use must be
 * computed. */
static void plan_fusion(const unet_model *m, struct unet__node *nodes,
                        const struct unet__value *values, bool training) {
    for (int i = 0; i < m->n_nodes; i++)
        nodes[i].fuse = (struct unet__fusion){.into = -1, .bn = -1, .pool = -1, .cat = -1};
    if (training) return;
    for (int i = 0; i < m->n_nodes; i++) {
        struct unet__node *nd = &nodes[i];
        nd->fuse.alias = nd->op == UNET__NODE_DROPOUT;
        if (fuses_cat(m, nodes, values, i)) {
            nd->fuse.into = i + 1;
            nodes[i + 1].fuse.cat = i;
        }
        if (!folds_bn(m, nodes, values, i)) continue;
        nd->fuse.bn = i + 1;
        nodes[i + 1].fuse.into = i;
        if (fuses_pool(m, nodes, i)) {
            nd->fuse.pool = i + 2;
            nodes[i + 2].fuse.into = i;
        }
    }
}

/* Training: is value v a batch-norm output that backward recomputes (recompute_bn_output)? */
static bool recomputed(const unet_model *m, const struct unet__node *nodes,
                       const struct unet__value *values, int v) {
    return v > 0 && v != m->out_value && nodes[values[v].producer].op == UNET__NODE_BN;
}

/* The lifetimes of activations (and, training, their gradients) on one timeline: forward
 * steps 0..NN, backward steps NN+1.. (backward of node i at NN + 1 + (NN - 1 - i)).
 * Inference: a value lives from its producer to its last consumer, and dropout's output is its
 * input.  Training: activations live through the whole step; a gradient lives from the
 * backward of the value's last consumer (the first to accumulate into it) to the backward of
 * its producer.  iv needs 3 * n_values entries; returns the count. */
static int lifetimes(const unet_model *m, const struct unet__node *nodes,
                     const struct unet__value *values, int n, bool training, struct interval *iv) {
    const int NV = m->n_values, NN = m->n_nodes;
    int k = 0;
    for (int v = 1; v < NV; v++) {
        const struct unet__value *x = &values[v];
        const struct unet__fusion *f = &nodes[x->producer].fuse;
        if (f->alias) continue;             /* a dropout's output is its input */
        if (f->bn >= 0) continue;           /* a folding convolution's output: never written */
        if (nodes[x->producer].op == UNET__NODE_CONCAT && f->into >= 0)
            continue;                       /* a concat read in place: never formed */
        iv[k].size = round16((size_t)n * x->c * x->h * x->w);
        if (training && recomputed(m, nodes, values, v)) {
            /* The forward copy, from its producer to its last reader; the backward copy below. */
            iv[k].start = x->producer;
            iv[k].end = x->last_use;
            iv[k].id = v;
            k++;
            continue;
        }
        /* The output of a folded batch-norm or a fused pool is written by the convolution that
         * runs it, earlier, while the convolution's input is still being read. */
        iv[k].start = training ? 0 : f->into >= 0 ? f->into : x->producer;
        iv[k].end = training ? 2 * NN + 1 : x->last_use;
        iv[k].id = v;
        for (int i = 0; i < NN; i++) {
            const struct unet__fusion *g = &nodes[i].fuse;
            /* A dropout's output, being its input, extends the input's life. */
            if (g->alias && nodes[i].in == v && values[nodes[i].out].last_use > iv[k].end)
                iv[k].end = values[nodes[i].out].last_use;
            /* A fused concat's inputs are read by the convolution that runs it. */
            if (nodes[i].op == UNET__NODE_CONCAT && g->into > iv[k].end &&
                (nodes[i].in == v || nodes[i].in2 == v))
                iv[k].end = g->into;
        }
        k++;
    }
    if (training) {
        for (int v = 1; v < NV; v++) {
            const struct unet__value *x = &values[v];
            iv[k].size = round16((size_t)n * x->c * x->h * x->w);
            iv[k].start = v == m->out_value ? NN : NN + 1 + (NN - 1 - x->last_use);
            iv[k].end = NN + 1 + (NN - 1 - x->producer);
            iv[k].id = NV + v;
            k++;
            if (recomputed(m, nodes, values, v)) {
                /* The recomputed copy: from its last reader's backward to its producer's. */
                iv[k] = iv[k - 1];
                iv[k].id = 2 * NV + v;
                k++;
            }
        }
    }
    return k;
}

/* Plans one arena: values (and gradients and saved statistics when training). */
static unet_status plan(unet_ctx *ctx, unet_model *m, int n, bool training) {
    const int NV = m->n_values, NN = m->n_nodes;
    unet_status s = UNET_STATUS_OK;
    struct interval *iv = calloc((size_t)NV * 3 + 1, sizeof *iv);
    if (!iv) return unet__fail(ctx, UNET_STATUS_NOMEM, "plan: out of memory");
    compute_last_use(m, m->nodes, m->values);
    plan_fusion(m, m->nodes, m->values, training);
    int k = lifetimes(m, m->nodes, m->values, n, training, iv);
    size_t values_floats = place_intervals(iv, k);

    /* Inference: the scale and shift of the batch-norm being folded. */
    size_t fold_floats = 0;
    for (int i = 0; i < NN; i++)
        if (m->nodes[i].fuse.bn >= 0 && 2 * round16((size_t)m->nodes[i].c_out) > fold_floats)
            fold_floats = 2 * round16((size_t)m->nodes[i].c_out);

    /* Inference: pools share one argmax buffer (nobody reads it back). */
    size_t pool_scratch = 0;
    if (!training)
        for (int i = 0; i < NN; i++)
            if (m->nodes[i].op == UNET__NODE_POOL) {
                size_t b = round16(value_floats(m, m->nodes[i].out, n));
                if (b > pool_scratch) pool_scratch = b;
            }

    plan_free(m);
    struct unet__arena *a = &m->act;
    unet__arena_init(a);
    for (int pass = 0; pass < 2; pass++) {
        float *base = unet__arena_floats(a, values_floats);
        uint8_t *pool_mask = unet__arena_bytes(a, pool_scratch);
        m->fold = fold_floats ? unet__arena_floats(a, fold_floats) : NULL;
        /* Every pointer is reset: a value that gets no memory in this plan (a fused concat, a
         * folded convolution's output, the input's gradient) must not keep pointing into the
         * previous plan's freed block. */
        for (int v = 0; v < NV; v++) {
            m->values[v].data = m->values[v].grad = NULL;
            m->values[v].data_fw = m->values[v].data_bw = NULL;
            m->values[v].bw_ready = false;
        }
        for (int i = 0; i < k; i++) {
            int v = iv[i].id;
            float *p = base ? base + iv[i].offset : NULL;
            if (v < NV) m->values[v].data = p;
            else if (v < 2 * NV) m->values[v - NV].grad = p;
            else m->values[v - 2 * NV].data_bw = p;
        }
        for (int v = 0; v < NV; v++)
            if (m->values[v].data_bw) m->values[v].data_fw = m->values[v].data;
        for (int i = 0; i < NN; i++) {
            struct unet__node *nd = &m->nodes[i];
            nd->save_mean = nd->save_rstd = NULL;
            nd->mask = NULL;
            if (nd->op == UNET__NODE_POOL)
                nd->mask = training ? unet__arena_bytes(a, round16(value_floats(m, nd->out, n)))
                                    : pool_mask;
            if (nd->op == UNET__NODE_DROPOUT && training)
                nd->mask = unet__arena_bytes(a, round16(value_floats(m, nd->out, n)));
            if (nd->op == UNET__NODE_BN && training) {
                nd->save_mean = unet__arena_floats(a, round16((size_t)nd->d.bn.C));
                nd->save_rstd = unet__arena_floats(a, round16((size_t)nd->d.bn.C));
            }
        }
        if (pass == 0) {
            s = unet__arena_commit(ctx, a, training ? "training activations" : "activations");
            if (s != UNET_STATUS_OK) break;
        }
    }
    if (s == UNET_STATUS_OK) /* dropout outputs are their inputs in inference */
        for (int i = 0; i < NN; i++)
            if (m->nodes[i].fuse.alias)
                m->values[m->nodes[i].out].data = m->values[m->nodes[i].in].data;
    free(iv);
    return s;
}

unet_status unet_model_prepare(unet_ctx *ctx, unet_model *m, int n, int h, int w, int training) {
    if (!m) return unet__fail(ctx, UNET_STATUS_ARG, "prepare: model is NULL");
    if (n < 1 || h < 1 || w < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "prepare: batch %d of %dx%d images", n, h, w);
    if (m->planned && m->plan_n == n && m->plan_h == h && m->plan_w == w &&
        m->plan_training == (training != 0))
        return UNET_STATUS_OK;
    m->planned = false;
    uint64_t pixels = (uint64_t)h * (uint64_t)w;
    if (pixels > unet_ctx_max_pixels(ctx))
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "prepare: %dx%d image exceeds the %llu-pixel limit (use tiles)", h, w,
                          (unsigned long long)unet_ctx_max_pixels(ctx));
    unet_status s = propagate(ctx, m, m->nodes, m->values, n, h, w);
    if (s != UNET_STATUS_OK) return s;
    /* Sizes must fit the ops' int arithmetic and size_t in bytes. */
    for (int v = 0; v < m->n_values; v++) {
        const struct unet__value *x = &m->values[v];
        size_t f[4] = {(size_t)n, (size_t)x->c, (size_t)x->h, (size_t)x->w}, total;
        if (!unet__prod_size(f, 4, &total) || total > SIZE_MAX / 16)
            return unet__fail(ctx, UNET_STATUS_NOMEM, "prepare: activation size overflows");
    }
    if (training)
        for (int i = 0; i < m->n_nodes; i++)
            if (m->nodes[i].op == UNET__NODE_BN) {
                const struct unet__bn_dims *d = &m->nodes[i].d.bn;
                if ((long long)d->N * d->H * d->W < 2)
                    return unet__fail(ctx, UNET_STATUS_SHAPE,
                                      "%s: batch-norm training needs more than 1 value per channel "
                                      "(batch %d of %dx%d maps); use a larger tile or batch",
                                      m->nodes[i].name, d->N, d->H, d->W);
            }
    s = plan(ctx, m, n, training != 0);
    if (s != UNET_STATUS_OK) return s;
    size_t scratch = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        size_t f = 0;
        if (nd->op == UNET__NODE_CONV) f = unet__conv2d_scratch_floats(&nd->d.conv);
        if (nd->op == UNET__NODE_CONVT) f = unet__convt2d_scratch_floats(&nd->d.convt);
        if (f > scratch) scratch = f;
    }
    if (scratch) {
        m->scratch = unet__alloc(scratch * sizeof(float));
        if (!m->scratch) {
            plan_free(m);
            return unet__fail(ctx, UNET_STATUS_NOMEM, "prepare: cannot allocate %zu MiB of scratch",
                              scratch * sizeof(float) >> 20);
        }
        m->scratch_floats = scratch;
    }
    m->planned = true;
    m->plan_training = training != 0;
    m->plan_n = n, m->plan_h = h, m->plan_w = w;
    return UNET_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------
 * Forward and backward
 * ------------------------------------------------------------------------------------- */

/* Parameter data by id (NULL for -1): trainable weights live in the parameter block, frozen
 * ones (e.g. FCN's fixed bilinear deconvolution) and running statistics in the buffer block. */
static float *P(const unet_model *m, int id) {
    return id >= 0 ? unet__model_param_data(m, &m->params[id]) : NULL;
}
/* Gradient by id: NULL for -1, for frozen parameters, or when no gradients are allocated. */
static float *G(const unet_model *m, int id) {
    if (id < 0 || !m->grads || m->params[id].kind != UNET__PARAM_WEIGHT) return NULL;
    return m->grads + m->params[id].offset;
}
static float *Bf(const unet_model *m, int id) {
    return m->buffers + m->params[id].offset;
}

static size_t numel(const unet_model *m, int v) {
    return value_floats(m, v, m->plan_n);
}

/* Seconds for the optional per-node profile: monotonic, or the process's CPU time. */
static double prof_now(const unet_model *m) {
    struct timespec t;
    clock_gettime(m->prof_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Convolution node i, as its fusion record says (inference plans): with a folded batch-norm
 * (+ its ReLU) in the epilogue it writes the batch-norm's output, and with a fused pool the
 * pool's output too; after a fused concat it reads the concat's two inputs.  The statistics
 * are folded in double: a = gamma / sqrt(var + eps), shift = beta + (bias - mean) * a, from
 * the running statistics of the moment (a few floats per channel, so weights changed by
 * training are always seen). */
static void conv_forward(unet_model *m, int i) {
    const struct unet__node   *c = &m->nodes[i];
    struct unet__conv_epilogue ep = {.shift = P(m, c->b)};
    float                     *y = m->values[c->out].data;
    if (c->fuse.bn >= 0) {
        const struct unet__node *bn = &m->nodes[c->fuse.bn];
        const int                C = c->d.conv.C_out;
        float *scale = m->fold, *shift = m->fold + round16((size_t)C);
        const float *gamma = P(m, bn->w), *beta = P(m, bn->b), *bias = P(m, c->b);
        const float *mean = Bf(m, bn->rmean), *var = Bf(m, bn->rvar);
        for (int co = 0; co < C; co++) {
            double a = (gamma ? gamma[co] : 1.0) / sqrt((double)var[co] + (double)bn->d.bn.eps);
            scale[co] = (float)a;
            shift[co] = (float)((beta ? beta[co] : 0.0) + ((bias ? bias[co] : 0.0) - mean[co]) * a);
        }
        ep = (struct unet__conv_epilogue){.scale = scale, .shift = shift, .relu = bn->relu};
        if (c->fuse.pool >= 0) ep.pool = m->values[m->nodes[c->fuse.pool].out].data;
        y = m->values[bn->out].data;
    }
    if (c->fuse.cat >= 0) {
        const struct unet__node *cat = &m->nodes[c->fuse.cat];
        unet__conv2d_forward_cat(y, m->values[cat->in].data, m->values[cat->in2].data,
                                 m->values[cat->in].c, P(m, c->w), &c->d.conv, &ep, m->scratch);
        return;
    }
    unet__conv2d_forward_ep(y, m->values[c->in].data, P(m, c->w), &c->d.conv, &ep, m->scratch);
}

const float *unet__model_forward(unet_model *m, const float *x) {
    /* The input is only ever read; values[0].data is not const to keep one value type. */
    memcpy(&m->values[0].data, &x, sizeof x);
    const bool train = m->training_mode;
    for (int i = 0; i < m->n_nodes; i++) {
        struct unet__node *nd = &m->nodes[i];
        /* A folded batch-norm (and its ReLU), a fused pool, a concat read in place: their
         * convolution ran them (conv_forward). */
        if (nd->fuse.into >= 0) continue;
        double t0 = m->prof ? prof_now(m) : 0.0;
        const float *in = m->values[nd->in].data;
        float *y = m->values[nd->out].data;
        switch (nd->op) {
        case UNET__NODE_CONV:
            conv_forward(m, i);
            break;
        case UNET__NODE_CONVT:
            unet__convt2d_forward(y, in, P(m, nd->w), P(m, nd->b), &nd->d.convt, m->scratch);
            break;
        case UNET__NODE_BN:
            if (train) {
                unet__batchnorm_forward_train(y, nd->save_mean, nd->save_rstd, Bf(m, nd->rmean),
                                              Bf(m, nd->rvar), in, P(m, nd->w), P(m, nd->b),
                                              &nd->d.bn);
                m->counters[m->params[nd->nbt].offset]++;
            } else {
                unet__batchnorm_forward_eval(y, in, P(m, nd->w), P(m, nd->b), Bf(m, nd->rmean),
                                             Bf(m, nd->rvar), &nd->d.bn);
            }
            break;
        case UNET__NODE_POOL:
            unet__maxpool2_forward(y, nd->mask, in, &nd->d.pool);
            break;
        case UNET__NODE_UPSAMPLE:
            unet__upsample_bilinear_forward(y, in, &nd->d.up);
            break;
        case UNET__NODE_CONCAT:
            unet__concat_forward(y, in, m->values[nd->in2].data, &nd->d.cat);
            break;
        case UNET__NODE_DROPOUT:
            /* Inference: the identity.  An inference plan gives y the input's buffer; a
             * training plan run in inference mode (validation) has its own, so copy. */
            if (train) unet__dropout_forward(y, nd->mask, in, &nd->d.drop, &m->rng);
            else if (y != in) memcpy(y, in, numel(m, nd->out) * sizeof(float));
            break;
        case UNET__NODE_ADD:
            unet__add_place_forward(y, in, m->values[nd->in2].data, &nd->d.add);
            break;
        case UNET__NODE_CROP: {
            struct unet__place p = {.C = m->values[nd->in].c, .H = m->values[nd->in].h,
                                    .W = m->values[nd->in].w, .off_h = nd->crop_h,
                                    .off_w = nd->crop_w};
            unet__crop_forward(y, in, m->plan_n, m->values[nd->out].h, m->values[nd->out].w, &p);
            break;
        }
        }
        if (nd->relu) unet__relu_forward(y, y, numel(m, nd->out));
        if (m->prof) m->prof[2 * i] += prof_now(m) - t0;
    }
    return m->values[m->out_value].data;
}

/* Training: before the backward of node i, the first to need batch-norm output v (its last
 * reader in forward order, or the batch-norm itself when nothing reads it), recompute v from
 * the stored input and the saved statistics: y = (x - mean) * (rstd * gamma) + beta (+ ReLU),
 * the forward's formula with rstd as saved in float (the forward used it before rounding, so
 * values may differ in the last bit). */
static void recompute_bn_output(unet_model *m, int v, int i) {
    struct unet__value *val = &m->values[v];
    if (!val->data_bw || val->bw_ready || (val->last_use != i && val->producer != i)) return;
    const struct unet__node *bn = &m->nodes[val->producer];
    const struct unet__bn_dims *d = &bn->d.bn;
    const float *x = m->values[bn->in].data, *gamma = P(m, bn->w), *beta = P(m, bn->b);
    float *y = val->data_bw;
    const size_t HW = (size_t)d->H * d->W;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            const float mean = bn->save_mean[c];
            const float a = (float)((double)bn->save_rstd[c] * (gamma ? gamma[c] : 1.0f));
            const float b = beta ? beta[c] : 0.0f;
            const size_t o = ((size_t)n * d->C + c) * HW;
            if (bn->relu) {
#pragma omp simd
                for (size_t p = 0; p < HW; p++) {
                    float t = (x[o + p] - mean) * a + b;
                    y[o + p] = t < 0.0f ? 0.0f : t;
                }
            } else {
#pragma omp simd
                for (size_t p = 0; p < HW; p++) y[o + p] = (x[o + p] - mean) * a + b;
            }
        }
    val->data = y;
    val->bw_ready = true;
}

/* dy *= (y > 0): ReLU's backward, in place on a gradient nobody else reads afterwards.  A
 * select rather than a conditional store, so that it vectorizes (`omp simd`) instead of
 * branching on the sign of every element. */
void unet__model_backward(unet_model *m, const float *dlogits) {
    const int NN = m->n_nodes;
    struct unet__value *out = &m->values[m->out_value];
    memcpy(out->grad, dlogits, numel(m, m->out_value) * sizeof(float));
    /* A value's gradient is zeroed when the backward of its last consumer (the first to
     * accumulate into it) is about to run. */
    for (int i = NN - 1; i >= 0; i--) {
        double t0 = m->prof ? prof_now(m) : 0.0;
        struct unet__node *nd = &m->nodes[i];
        if (nd->in > 0 && m->values[nd->in].last_use == i)
            memset(m->values[nd->in].grad, 0, numel(m, nd->in) * sizeof(float));
        if (nd->in2 > 0 && nd->in2 != nd->in && m->values[nd->in2].last_use == i)
            memset(m->values[nd->in2].grad, 0, numel(m, nd->in2) * sizeof(float));
        recompute_bn_output(m, nd->in, i);
        if (nd->in2 > 0) recompute_bn_output(m, nd->in2, i);
        recompute_bn_output(m, nd->out, i);
        float *dy = m->values[nd->out].grad;
        const float *y = m->values[nd->out].data;
        const float *x = m->values[nd->in].data;
        float *dx = nd->in > 0 ? m->values[nd->in].grad : NULL;
        if (nd->relu) unet__relu_mask_grad(dy, y, numel(m, nd->out));
        switch (nd->op) {
        case UNET__NODE_CONV:
            unet__conv2d_backward(dx, G(m, nd->w), G(m, nd->b), dy, x, P(m, nd->w), &nd->d.conv,
                                  m->scratch);
            break;
        case UNET__NODE_CONVT:
            unet__convt2d_backward(dx, G(m, nd->w), G(m, nd->b), dy, x, P(m, nd->w), &nd->d.convt,
                                   m->scratch);
            break;
        case UNET__NODE_BN:
            if (dx || m->grads)
                unet__batchnorm_backward(dx, G(m, nd->w), G(m, nd->b), dy, x, P(m, nd->w),
                                         nd->save_mean, nd->save_rstd, &nd->d.bn);
            break;
        case UNET__NODE_POOL:
            if (dx) unet__maxpool2_backward(dx, dy, nd->mask, &nd->d.pool);
            break;
        case UNET__NODE_UPSAMPLE:
            if (dx) unet__upsample_bilinear_backward(dx, dy, &nd->d.up);
            break;
        case UNET__NODE_CONCAT:
            unet__concat_backward(dx, nd->in2 > 0 ? m->values[nd->in2].grad : NULL, dy, &nd->d.cat);
            break;
        case UNET__NODE_DROPOUT:
            if (dx) unet__dropout_backward(dx, dy, nd->mask, &nd->d.drop);
            break;
        case UNET__NODE_ADD:
            unet__add_place_backward(dx, nd->in2 > 0 ? m->values[nd->in2].grad : NULL, dy, &nd->d.add);
            break;
        case UNET__NODE_CROP: {
            struct unet__place p = {.C = m->values[nd->in].c, .H = m->values[nd->in].h,
                                    .W = m->values[nd->in].w, .off_h = nd->crop_h,
                                    .off_w = nd->crop_w};
            if (dx) unet__crop_backward(dx, dy, m->plan_n, m->values[nd->out].h, m->values[nd->out].w, &p);
            break;
        }
        }
        if (m->prof) m->prof[2 * i + 1] += prof_now(m) - t0;
    }
    for (int v = 0; v < m->n_values; v++)
        if (m->values[v].data_bw) {
            m->values[v].data = m->values[v].data_fw;
            m->values[v].bw_ready = false;
        }
}

const struct unet__value *unet__model_output(const unet_model *m) {
    return &m->values[m->out_value];
}

unet_status unet_model_forward(unet_ctx *ctx, unet_model *m, const float *x, int n, int h, int w,
                               float *logits) {
    if (!m || !x || !logits) return unet__fail(ctx, UNET_STATUS_ARG, "forward: NULL argument");
    unet_status s = unet_model_prepare(ctx, m, n, h, w, 0);
    if (s != UNET_STATUS_OK) return s;
    unet__use_threads(unet__threads(ctx));
    m->training_mode = false;
    const float *y = unet__model_forward(m, x);
    memcpy(logits, y, numel(m, m->out_value) * sizeof(float));
    return UNET_STATUS_OK;
}

unet_status unet_model_cost(unet_ctx *ctx, const unet_model *m, int n, int h, int w,
                            double *flops, size_t *act_bytes) {
    if (!m) return unet__fail(ctx, UNET_STATUS_ARG, "cost: model is NULL");
    struct unet__node *nodes = NULL;
    struct unet__value *values = NULL;
    struct interval *iv = NULL;
    unet_status s = shapes_of(ctx, m, n, h, w, &nodes, &values);
    if (s != UNET_STATUS_OK) goto done;
    double f = 0.0;
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &nodes[i];
        if (nd->op == UNET__NODE_CONV) {
            const struct unet__conv2d_dims *d = &nd->d.conv;
            f += 2.0 * d->N * d->C_out * d->C_in * d->K_h * d->K_w * (double)d->H_out * d->W_out;
        } else if (nd->op == UNET__NODE_CONVT) {
            const struct unet__convt2d_dims *d = &nd->d.convt;
            f += 2.0 * d->N * d->C_out * d->C_in * d->K_h * d->K_w * (double)d->H_in * d->W_in;
        }
    }
    if (flops) *flops = f;
    if (act_bytes) {
        /* The inference plan's size: the same placement as plan(), without allocating. */
        iv = calloc((size_t)m->n_values * 3 + 1, sizeof *iv);
        if (!iv) {
            s = unet__fail(ctx, UNET_STATUS_NOMEM, "cost: out of memory");
            goto done;
        }
        compute_last_use(m, nodes, values);
        plan_fusion(m, nodes, values, false);
        int k = lifetimes(m, nodes, values, n, false, iv);
        *act_bytes = place_intervals(iv, k) * sizeof(float);
    }
done:
    free(iv);
    free(nodes);
    free(values);
    return s;
}
