/* fcn.c — FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer, Darrell 2015) on a VGG-style backbone:
 * the FCN family (model.h, struct unet__family) of graph, initialisation and checkpoint
 * inference.  The convolutionalization of a VGG classifier into one is convolutionalize.c.
 *
 * The graph is the reference net's (fcn.berkeleyvision.org, voc-fcn{32,16,8}s/net.py) with
 * wkentaro/pytorch-fcn's module names, so a PyTorch state_dict loads by name (docs/fcn.md):
 *     conv1_1 .. conv5_3   five VGG blocks of 2, 2, 3, 3, 3 convs (3x3, pad 1, + ReLU) with
 *                          b, 2b, 4b, 8b, 8b channels, each closed by a 2x2 max-pool (pool1..5);
 *                          conv1_1 is padded by cfg.padding (100), so that any input leaves a
 *                          map at pool5 and the crops below can realign the result
 *     fc6, fc7             the classifier's fully connected layers as convolutions: 7x7 (pad 0)
 *                          and 1x1 to F channels, each + ReLU + dropout
 *     score_fr             1x1 conv to class scores, one per 32 input pixels
 *   32s: upscore (deconvolution k64 s32) of score_fr, cropped to the input.
 *   16s: upscore2 (k4 s2) of score_fr + score_pool4 (1x1 on pool4) cropped to it; upscore16
 *        (k32 s16) of the sum, cropped to the input.
 *   8s:  16s's sum -> upscore_pool4 (k4 s2) + score_pool3 (1x1 on pool3) cropped; upscore8
 *        (k16 s8), cropped to the input.
 * Fusion is a sum (the paper: max fusion "made learning difficult"): an ADD node adds the
 * window of the finer score map to the upsampled coarser one.  Deconvolutions have no bias and
 * one bilinear kernel per class; the final one is a frozen buffer unless cfg.learn_final_up.
 *
 * Crop offsets are derived from the layer geometry, not written down, so they stay right for
 * any conv1_1 padding: pixel i of a map sits at input coordinate a i + b (Caffe's coord_map);
 * a conv or pool (k, stride s, pad p) maps (a, b) to (a s, b + a ((k - 1) / 2 - p)), a
 * deconvolution (k, s) to (a / s, b - a (k - 1) / (2 s)), and map A is cropped at
 * (b_B - b_A) / a_A to align with B.  With padding 100 this gives the reference's 5
 * (score_pool4), 9 (score_pool3) and 19 / 27 / 31 (the final crop of 32s / 16s / 8s).  A
 * final offset below zero (a padding under 81 / 73 / 69, e.g. the plain VGG padding 1 of a
 * convolutionalized classifier) means the upsampled map lies inside the input: it is then the
 * output as it is, smaller than the input, its pixel (0, 0) at input pixel (-o, -o).
 *
 * Max-pooling floors odd sizes (ops/maxpool.c) where Caffe and pytorch-fcn round up (ceil
 * mode).  Offsets are unchanged (they are top-left alignments), but the maps can be one pixel
 * shorter at the bottom and right, so with padding 100 the final crop of 32s and 16s does not
 * fit every input size: those sizes are refused by unet_model_prepare (docs/fcn.md lists them;
 * FCN-8s takes every size from 26 up).  tools/fcn_torch.py pools the same way.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Coordinates: where a map's pixels sit in the input (one dimension; both are alike)
 * ------------------------------------------------------------------------------------- */

struct coord {
    double scale;   /* input pixels per map pixel */
    double offset;  /* input coordinate of map pixel 0 (the centre of its window) */
};

/* A convolution or pooling window k with stride s and padding p: output pixel i covers inputs
 * s i - p .. s i - p + k - 1, centred on s i - p + (k - 1) / 2. */
static struct coord after_conv(struct coord c, int k, int s, int p) {
    return (struct coord){c.scale * s, c.offset + c.scale * ((k - 1) / 2.0 - p)};
}

/* A deconvolution k, stride s (no padding): input pixel i spreads over outputs s i .. s i + k - 1,
 * so output pixel j is centred on input pixel (j - (k - 1) / 2) / s. */
static struct coord after_deconv(struct coord c, int k, int s) {
    return (struct coord){c.scale / s, c.offset - c.scale * (k - 1) / (2.0 * s)};
}

/* The offset at which map `big` is cropped so that its pixel o + i sits where pixel i of `small`
 * does.  Both have the same scale; the result is an integer for these nets (the values are
 * dyadic fractions, exact in double). */
static int crop_offset(struct coord big, struct coord small) {
    double o = (small.offset - big.offset) / big.scale;
    UNET_ASSERT(big.scale == small.scale && o == floor(o));
    return (int)floor(o);
}

/* ---------------------------------------------------------------------------------------
 * Building
 * ------------------------------------------------------------------------------------- */

struct map {
    int          v;     /* value id */
    int          c;     /* channels */
    struct coord at;
};

static struct map conv(struct unet__builder *B, const char *name, struct map x, int c_out, int k,
                       int pad, bool relu) {
    struct unet__node nd = unet__node_init(UNET__NODE_CONV, name, x.v);
    nd.c_out = c_out;
    nd.k = k;
    nd.stride = 1;
    nd.pad = pad;
    nd.relu = relu;
    nd.w = unet__add_param(B, name, "weight", UNET__PARAM_WEIGHT, 4, c_out, x.c, k, k);
    nd.b = unet__add_param(B, name, "bias", UNET__PARAM_WEIGHT, 1, c_out, 0, 0, 0);
    return (struct map){unet__add_node(B, nd), c_out, after_conv(x.at, k, 1, pad)};
}

static struct map pool(struct unet__builder *B, const char *name, struct map x) {
    struct unet__node nd = unet__node_init(UNET__NODE_POOL, name, x.v);
    nd.ceil_mode = true; /* Caffe's pooling, as the reference and pytorch-fcn: any input size fits */
    return (struct map){unet__add_node(B, nd), x.c, after_conv(x.at, 2, 2, 0)};
}

static struct map dropout(struct unet__builder *B, const char *name, struct map x) {
    if (B->m->cfg.dropout <= 0.0f) return x;
    struct unet__node nd = unet__node_init(UNET__NODE_DROPOUT, name, x.v);
    nd.p = B->m->cfg.dropout;
    x.v = unet__add_node(B, nd);
    return x;
}

/* ConvTranspose2d(C, C, k, stride s, bias=False); frozen (a buffer) unless learned. */
static struct map deconv(struct unet__builder *B, const char *name, struct map x, int k, int s,
                         bool learned) {
    struct unet__node nd = unet__node_init(UNET__NODE_CONVT, name, x.v);
    nd.c_out = x.c;
    nd.k = k;
    nd.stride = s;
    nd.w = unet__add_param(B, name, "weight", learned ? UNET__PARAM_WEIGHT : UNET__PARAM_BUFFER, 4,
                           x.c, x.c, k, k);
    return (struct map){unet__add_node(B, nd), x.c, after_deconv(x.at, k, s)};
}

/* up + score cropped to up's size at the offset that aligns them (net.py's crop + Eltwise SUM). */
static struct map fuse(struct unet__builder *B, const char *name, struct map up, struct map score) {
    struct unet__node nd = unet__node_init(UNET__NODE_ADD, name, up.v);
    nd.in2 = score.v;
    nd.crop_h = nd.crop_w = crop_offset(score.at, up.at);
    up.v = unet__add_node(B, nd);
    return up;
}

static void build_fcn(struct unet__builder *B) {
    const unet_config *c = &B->m->cfg;
    static const int convs[5] = {2, 2, 3, 3, 3};
    const int F = c->fc_channels > 0 ? c->fc_channels : 64 * c->base;
    const int K = c->classes;
    const bool learn_final = c->learn_final_up != 0;
    char name[64];
    struct map input = {unet__add_value(B, -1), c->in_channels, {1.0, 0.0}}; /* value 0 */
    struct map x = input, pool3 = {0}, pool4 = {0};
    for (int blk = 1; blk <= 5; blk++) {
        int width = c->base << (blk < 4 ? blk - 1 : 3);
        for (int j = 1; j <= convs[blk - 1]; j++) {
            snprintf(name, sizeof name, "conv%d_%d", blk, j);
            x = conv(B, name, x, width, 3, blk == 1 && j == 1 ? c->padding : 1, true);
        }
        snprintf(name, sizeof name, "pool%d", blk);
        x = pool(B, name, x);
        if (blk == 3) pool3 = x;
        if (blk == 4) pool4 = x;
    }
    x = dropout(B, "drop6", conv(B, "fc6", x, F, 7, 0, true));
    x = dropout(B, "drop7", conv(B, "fc7", x, F, 1, 0, true));
    x = conv(B, "score_fr", x, K, 1, 0, false);
    if (c->arch == UNET_ARCH_FCN32S) {
        x = deconv(B, "upscore", x, 64, 32, learn_final);
    } else {
        x = deconv(B, "upscore2", x, 4, 2, true);
        x = fuse(B, "fuse_pool4", x, conv(B, "score_pool4", pool4, K, 1, 0, false));
        if (c->arch == UNET_ARCH_FCN16S) {
            x = deconv(B, "upscore16", x, 32, 16, learn_final);
        } else {
            x = deconv(B, "upscore_pool4", x, 4, 2, true);
            x = fuse(B, "fuse_pool3", x, conv(B, "score_pool3", pool3, K, 1, 0, false));
            x = deconv(B, "upscore8", x, 16, 8, learn_final);
        }
    }
    int off = crop_offset(x.at, input.at);
    if (off >= 0) {
        struct unet__node nd = unet__node_init(UNET__NODE_CROP, "score", x.v);
        nd.ref = input.v;
        nd.crop_h = nd.crop_w = off;
        x.v = unet__add_node(B, nd);
    }
    B->m->out_value = x.v;
}

/* ---------------------------------------------------------------------------------------
 * Initialisation
 * ------------------------------------------------------------------------------------- */

static bool is_score_pool(const struct unet__node *nd) {
    return strncmp(nd->name, "score_pool", 10) == 0;
}

/* surgery.upsample_filt for a (C_in, C_out, k, k) deconvolution weight: the separable bilinear
 * kernel on each channel's own map (c -> c), zero between channels. */
static void bilinear_kernel(float *w, int c_in, int c_out, int k) {
    const int    factor = (k + 1) / 2;
    const double center = k % 2 == 1 ? factor - 1 : factor - 0.5;
    memset(w, 0, sizeof(float) * (size_t)c_in * c_out * k * k);
    for (int c = 0; c < c_in && c < c_out; c++) {
        float *wc = w + ((size_t)c * c_out + c) * k * k;
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
                wc[i * k + j] = (float)((1.0 - fabs(i - center) / factor) *
                                        (1.0 - fabs(j - center) / factor));
    }
}

/* What needs no random numbers: the score_pool layers at zero (the paper's staged training:
 * the 16s/8s predictions start as the coarser net's), every deconvolution bilinear. */
void unet__fcn_init_new_layers(unet_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        if (nd->op == UNET__NODE_CONV && is_score_pool(nd)) {
            const struct unet__param *w = &m->params[nd->w], *b = &m->params[nd->b];
            memset(unet__model_param_data(m, w), 0, w->numel * sizeof(float));
            memset(unet__model_param_data(m, b), 0, b->numel * sizeof(float));
        } else if (nd->op == UNET__NODE_CONVT) {
            const struct unet__param *w = &m->params[nd->w];
            bilinear_kernel(unet__model_param_data(m, w), (int)w->shape[0], (int)w->shape[1],
                            (int)w->shape[2]);
        }
    }
}

/* PyTorch defaults for the backbone, then the fixed layers above. */
static void init_fcn(unet_model *m, struct unet__rng *rng) {
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        if (nd->op == UNET__NODE_CONV && !is_score_pool(nd)) unet__init_conv_pytorch(m, nd, rng);
    }
    unet__fcn_init_new_layers(m);
}

/* ---------------------------------------------------------------------------------------
 * A checkpoint's configuration from its tensors, the size bound
 * ------------------------------------------------------------------------------------- */

static bool claims_fcn(const struct unet__shapes *t) {
    int64_t shape[4];
    return t->find(t->src, "score_fr.weight", shape) >= 0;
}

/* Infers an FCN configuration (docs/fcn.md) from a state_dict without metadata:
 *   arch                  score_pool3.weight exists: fcn8s; else score_pool4.weight: fcn16s;
 *                         else fcn32s
 *   in_channels, base     conv1_1.weight (base, in, 3, 3)
 *   fc_channels           fc6.weight (fc, 8 base, 7, 7)
 *   classes               score_fr.weight (classes, fc, 1, 1)
 * conv1_1's padding (100) and whether the final upsampling was learned (no: a fixed buffer)
 * cannot be seen in the weights and take the defaults. */
static unet_status infer_fcn(unet_ctx *ctx, const struct unet__shapes *t, unet_config *c) {
    int64_t c11[4], fc6[4], score[4], any[4];
    if (t->find(t->src, "conv1_1.weight", c11) != 4 || t->find(t->src, "fc6.weight", fc6) != 4 ||
        t->find(t->src, "score_fr.weight", score) != 4)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: no unet metadata and no FCN tensors (conv1_1.weight, fc6.weight as "
                          "a 7x7 convolution, score_fr.weight): not an FCN checkpoint",
                          t->path);
    unet_arch arch = t->find(t->src, "score_pool3.weight", any) >= 0   ? UNET_ARCH_FCN8S
                     : t->find(t->src, "score_pool4.weight", any) >= 0 ? UNET_ARCH_FCN16S
                                                                       : UNET_ARCH_FCN32S;
    *c = unet_config_default(arch);
    c->in_channels = unet__dim_int(c11[1]);
    c->base = unet__dim_int(c11[0]);
    c->fc_channels = unet__dim_int(fc6[0]);
    c->classes = unet__dim_int(score[0]);
    return UNET_STATUS_OK;
}

/* fc6 is a 7x7 convolution from 8 base channels to fc_channels. */
static uint64_t min_weights_fcn(const unet_config *c) {
    uint64_t fc = c->fc_channels ? (uint64_t)c->fc_channels : 64 * (uint64_t)c->base;
    return 49 * fc * 8 * (uint64_t)c->base;
}

const struct unet__family unet__fcn_family = {build_fcn, init_fcn,        claims_fcn,
                                              infer_fcn, min_weights_fcn, true};
