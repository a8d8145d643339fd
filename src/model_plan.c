/* model_plan.c — shapes and memory for a batch and image size (unet_model_prepare), and the
 * inference fusion plan.
 *
 * unet_model_prepare propagates shapes for a batch size and image size and lays out one block
 * of memory.  Inference keeps a value only from its producer to its last consumer and places
 * values by first fit (so peak memory is the largest live set, mostly the skip connections,
 * not the sum of all layers).  Training keeps the activations backward needs and plans the
 * activation gradients the same way over the backward pass.  A batch-norm's output (half of
 * the activations of a conv-BN-ReLU network) is not kept: backward recomputes it from the
 * stored convolution output and the saved mean and rstd, one cheap element-wise pass, into a
 * buffer that lives only as long as its gradient.
 *
 * Fusion.  An inference plan folds a batch-norm (and its ReLU) into the convolution that is its
 * only input's producer: y = relu(conv(x) * a + (beta - mean * a)), a = gamma / sqrt(var +
 * eps); the convolution writes the batch-norm's output and its own output value gets no
 * memory.  A max-pool after a folded conv-BN-ReLU is written by the convolution's epilogue; a
 * concatenation that only feeds a convolution is never formed: the convolution reads its two
 * inputs; a dropout is the identity.  Which nodes are fused is decided once per plan
 * (plan_fusion) and recorded on the nodes (struct unet__fusion): the memory planner below and
 * the forward pass (model_run.c) read that record.
 */
#include "model.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Shapes
 * ------------------------------------------------------------------------------------- */

/* The dims of a convolution or transposed-convolution node (the two structs share these fields)
 * on a batch of n inputs x; the derived output size is left to the type's dims_init. */
#define LAYER_DIMS(type, nd, x, n)                                                             \
    ((type){.N = (n), .C_in = (x)->c, .H_in = (x)->h, .W_in = (x)->w, .C_out = (nd)->c_out,     \
            .K_h = (nd)->k, .K_w = (nd)->k, .stride_h = (nd)->stride, .stride_w = (nd)->stride, \
            .pad_h = (nd)->pad, .pad_w = (nd)->pad})

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
        case UNET__NODE_CONV:
            nd->d.conv = LAYER_DIMS(struct unet__conv2d_dims, nd, x, n);
            s = unet__conv2d_dims_init(ctx, &nd->d.conv, nd->name);
            y->c = nd->d.conv.C_out, y->h = nd->d.conv.H_out, y->w = nd->d.conv.W_out;
            break;
        case UNET__NODE_CONVT:
            nd->d.convt = LAYER_DIMS(struct unet__convt2d_dims, nd, x, n);
            s = unet__convt2d_dims_init(ctx, &nd->d.convt, nd->name);
            y->c = nd->d.convt.C_out, y->h = nd->d.convt.H_out, y->w = nd->d.convt.W_out;
            break;
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

/* The lowest offset for iv[i] that does not overlap, in memory, any of iv[0..i) that overlaps
 * it in time. */
static size_t lowest_fit(const struct interval *iv, int i) {
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
    return off;
}

/* Greedy by size (largest first), each at its lowest fit.  Returns the total floats. */
static size_t place_intervals(struct interval *iv, int n) {
    qsort(iv, (size_t)n, sizeof *iv, cmp_interval_size);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        iv[i].offset = lowest_fit(iv, i);
        if (iv[i].offset + iv[i].size > total) total = iv[i].offset + iv[i].size;
    }
    return total;
}

/* Inference: room for the transformed weights of each Winograd convolution during its step
 * (ids 4 NV + node after iv[0..k)), where it fits within the total the activations already
 * take: the arena does not grow for them.  A first forward (predict of one image) then
 * transforms each convolution's weights once into it, as the inference cache does, instead of
 * once per tile block for the large layers (the cache makes its entries only at the second
 * use: model_cache.c).  Largest first; the size for float32 words, the largest row.  Returns
 * the new count. */
static int place_weight_room(const unet_model *m, struct interval *iv, int k, size_t total) {
    const struct unet__kernels *f32 = unet__kernels_pick(UNET__PRECISION_F32);
    const int first = k;
    for (int i = 0; f32 && i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        if (nd->op != UNET__NODE_CONV || !unet__conv2d_fusable(&nd->d.conv)) continue;
        iv[k++] = (struct interval){.size = unet__round16(unet__winograd_weights_floats(&nd->d.conv, f32)),
                                    .start = i, .end = i, .id = 4 * m->n_values + i};
    }
    qsort(iv + first, (size_t)(k - first), sizeof *iv, cmp_interval_size);
    int n = first;
    for (int i = first; i < k; i++) {
        iv[n] = iv[i];
        iv[n].offset = lowest_fit(iv, n);
        if (iv[n].offset + iv[n].size <= total) n++;
    }
    return n;
}

/* Fills last_use of every value (the last node reading it; NN for the output) and reads. */
static void compute_last_use(const unet_model *m, const struct unet__node *nodes,
                             struct unet__value *values) {
    for (int v = 0; v < m->n_values; v++) values[v].last_use = values[v].producer;
    for (int v = 0; v < m->n_values; v++) values[v].reads = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        values[nodes[i].in].last_use = i;
        values[nodes[i].in].reads++;
        if (nodes[i].in2 >= 0) {
            values[nodes[i].in2].last_use = i;
            values[nodes[i].in2].reads++;
        }
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

/* The scratch floats node nd needs: forward and backward (training), or only forward. */
static size_t node_scratch(const struct unet__node *nd, bool training) {
    if (nd->op == UNET__NODE_CONV)
        return training ? unet__conv2d_scratch_floats(&nd->d.conv)
                        : unet__conv2d_forward_scratch_floats(&nd->d.conv);
    if (nd->op == UNET__NODE_CONVT) return unet__convt2d_scratch_floats(&nd->d.convt);
    return 0;
}

/* The lifetimes of activations (and, training, their gradients) on one timeline: forward
 * steps 0..NN, backward steps NN+1.. (backward of node i at NN + 1 + (NN - 1 - i)).
 * Inference: a value lives from its producer to its last consumer, and dropout's output is its
 * input; each convolution's scratch lives for its own step (id 3 NV + node), so
 * it takes memory the activations leave free then instead of a block of its own, which a
 * fresh process would touch for the first time too.  Training: activations live through the
 * whole step; a gradient lives from the backward of the value's last consumer (the first to
 * accumulate into it) to the backward of its producer.  iv needs 3 * n_values + n_nodes
 * entries; returns the count. */
static int lifetimes(const unet_model *m, const struct unet__node *nodes,
                     const struct unet__value *values, int n, bool training,
                     struct interval *iv) {
    const int NV = m->n_values, NN = m->n_nodes;
    int k = 0;
    for (int i = 0; !training && i < NN; i++) {
        size_t f = node_scratch(&nodes[i], false);
        if (f == 0) continue;
        iv[k++] = (struct interval){.size = unet__round16(f), .start = i, .end = i, .id = 3 * NV + i};
    }
    for (int v = 1; v < NV; v++) {
        const struct unet__value *x = &values[v];
        const struct unet__fusion *f = &nodes[x->producer].fuse;
        if (f->alias) continue;             /* a dropout's output is its input */
        if (f->bn >= 0) continue;           /* a folding convolution's output: never written */
        if (nodes[x->producer].op == UNET__NODE_CONCAT && f->into >= 0)
            continue;                       /* a concat read in place: never formed */
        iv[k].size = unet__round16((size_t)n * x->c * x->h * x->w);
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
            iv[k].size = unet__round16((size_t)n * x->c * x->h * x->w);
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

/* The first part of an arena, which inference and training share: the placed values (and
 * gradients), and for inference the pools' one argmax buffer (nobody reads it back) and the
 * scale and shift of the batch-norm being folded.  Sized from nodes and values (the model's
 * own, or unet_model_cost's copies at another size); iv gets the placed intervals (3 n_values
 * + 2 n_nodes + 1 entries) and *k their count. */
struct arena_head {
    size_t values_floats, pool_bytes, fold_floats;
};

static struct arena_head arena_head(const unet_model *m, struct unet__node *nodes,
                                    struct unet__value *values, int n, bool training,
                                    struct interval *iv, int *k) {
    struct arena_head h = {0};
    compute_last_use(m, nodes, values);
    plan_fusion(m, nodes, values, training);
    *k = lifetimes(m, nodes, values, n, training, iv);
    h.values_floats = place_intervals(iv, *k);
    for (int i = 0; i < m->n_nodes; i++) {
        if (nodes[i].fuse.bn >= 0 && 2 * unet__round16((size_t)nodes[i].c_out) > h.fold_floats)
            h.fold_floats = 2 * unet__round16((size_t)nodes[i].c_out);
        if (!training && nodes[i].op == UNET__NODE_POOL) {
            const struct unet__value *x = &values[nodes[i].out];
            size_t b = unet__round16((size_t)n * x->c * x->h * x->w);
            if (b > h.pool_bytes) h.pool_bytes = b;
        }
    }
    return h;
}

/* Reserves the head in a (counting, before commit; handing out, after). */
static float *reserve_head(struct unet__arena *a, const struct arena_head *h, uint8_t **pool,
                           float **fold) {
    float *base = unet__arena_floats(a, h->values_floats);
    *pool = unet__arena_bytes(a, h->pool_bytes);
    *fold = h->fold_floats ? unet__arena_floats(a, h->fold_floats) : NULL;
    return base;
}

/* Plans one arena: values (and gradients and saved statistics when training). */
static unet_status plan(unet_ctx *ctx, unet_model *m, int n, bool training) {
    const int NV = m->n_values, NN = m->n_nodes;
    unet_status s = UNET_STATUS_OK;
    struct interval *iv = calloc((size_t)NV * 3 + 2 * (size_t)NN + 1, sizeof *iv);
    if (!iv) return unet__fail(ctx, UNET_STATUS_NOMEM, "plan: out of memory");
    int k = 0;
    const struct arena_head head = arena_head(m, m->nodes, m->values, n, training, iv, &k);
    if (!training) k = place_weight_room(m, iv, k, head.values_floats);

    unet__model_plan_free(m);
    struct unet__arena *a = &m->act;
    unet__arena_init(a);
    for (int pass = 0; pass < 2; pass++) {
        uint8_t *pool_mask;
        float *base = reserve_head(a, &head, &pool_mask, &m->fold);
        /* Every pointer is reset: a value that gets no memory in this plan (a fused concat, a
         * folded convolution's output, the input's gradient) must not keep pointing into the
         * previous plan's freed block. */
        for (int v = 0; v < NV; v++) {
            m->values[v].data = m->values[v].grad = NULL;
            m->values[v].data_fw = m->values[v].data_bw = NULL;
            m->values[v].bw_ready = false;
        }
        for (int i = 0; i < NN; i++) {
            m->nodes[i].scratch = m->nodes[i].wino_u = NULL;
            m->nodes[i].wino_u_floats = 0;
        }
        for (int i = 0; i < k; i++) {
            int v = iv[i].id;
            float *p = base ? base + iv[i].offset : NULL;
            if (v >= 4 * NV) {
                m->nodes[v - 4 * NV].wino_u = p;
                m->nodes[v - 4 * NV].wino_u_floats = iv[i].size;
            } else if (v >= 3 * NV) m->nodes[v - 3 * NV].scratch = p;
            else if (v < NV) m->values[v].data = p;
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
                nd->mask = training ? unet__arena_bytes(a, unet__round16(unet__value_floats(m, nd->out, n)))
                                    : pool_mask;
            if (nd->op == UNET__NODE_DROPOUT && training)
                nd->mask = unet__arena_bytes(a, unet__round16(unet__value_floats(m, nd->out, n)));
            if (nd->op == UNET__NODE_BN && training) {
                nd->save_mean = unet__arena_floats(a, unet__round16((size_t)nd->d.bn.C));
                nd->save_rstd = unet__arena_floats(a, unet__round16((size_t)nd->d.bn.C));
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
    size_t scratch = 0; /* training: one block for the largest; inference: in the arena */
    for (int i = 0; training && i < m->n_nodes; i++) {
        size_t f = node_scratch(&m->nodes[i], true);
        if (f > scratch) scratch = f;
    }
    if (scratch) {
        m->scratch = unet__alloc(scratch * sizeof(float));
        if (!m->scratch) {
            unet__model_plan_free(m);
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

void unet__model_plan_free(unet_model *m) {
    unet__arena_deinit(&m->act);
    m->fold = NULL;
    unet__free(m->scratch);
    m->scratch = NULL;
    m->scratch_floats = 0;
    m->planned = false;
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
        /* The inference arena's size: plan()'s placement and reservations, counted only. */
        iv = calloc((size_t)m->n_values * 3 + 2 * (size_t)m->n_nodes + 1, sizeof *iv);
        if (!iv) {
            s = unet__fail(ctx, UNET_STATUS_NOMEM, "cost: out of memory");
            goto done;
        }
        int k = 0;
        const struct arena_head head = arena_head(m, nodes, values, n, false, iv, &k);
        struct unet__arena a;
        unet__arena_init(&a);
        uint8_t *pool;
        float *fold;
        reserve_head(&a, &head, &pool, &fold);
        *act_bytes = a.size;
    }
done:
    free(iv);
    free(nodes);
    free(values);
    return s;
}
