/* model_cache.c — the inference cache (model.h): transformed Winograd weights and folded
 * batch-norms, made once per generation of the weights and kernel row, reused by every forward.
 *
 * Before it, every inference forward transformed every Winograd convolution's weights again
 * (and the 512- and 1024-channel layers once per tile block): about 9% of a 512x512 forward.
 * The price is memory: the transformed weights of a 3x3 convolution hold 36 values per 9
 * weights, so the cache is 4x the convolutions' weights in float32 and 2x in bf16 (two values
 * per word); docs/performance.md has the numbers.
 *
 * An entry is made when a convolution asks for it the second time in a generation and row, so
 * work of one forward (predict of one image that fits one tile) never pays the memory.
 *
 * Validity is one comparison per forward: the generation (unet__model_weights_changed, called
 * by every writer of the weights and running statistics) and the kernel row the entries were
 * made for.  Anything else drops the entries and they are remade on use.
 */
#include "model.h"

#include <math.h>
#include <stdlib.h>

struct unet__wcache {
    const struct unet__kernels *row; /* the row the weight entries were made for */
    uint64_t                    gen; /* the weights' generation all entries were made from */
    float                     **u;   /* per node: transformed weights, or NULL */
    float                     **fold;/* per node: scale, shift of its folded batch-norm */
    unsigned char              *seen;/* per node: asked for once in this generation and row */
    size_t                      bytes;
};

void unet_model_set_cache(unet_model *m, int on) {
    if (!m) return;
    m->cache_off = !on;
    if (m->cache_off) unet__wcache_free(m);
}

int unet_model_cache(const unet_model *m) {
    return m && !m->cache_off;
}

/* What current() and unet__wcache_weights/_fold would make for every node: the transformed
 * weights on the model's row, and a fold (2 C_out floats) per convolution (more than the
 * folds made: only a convolution followed by a batch-norm gets one). */
uint64_t unet_model_cache_bytes(const unet_model *m) {
    if (!m) return 0;
    const struct unet__kernels *k = unet__kernels_for(m->precision);
    uint64_t floats = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        if (nd->op != UNET__NODE_CONV || nd->w < 0) continue;
        /* The dims a plan would give it (its sizes do not matter here), from the weights'
         * shape (C_out, C_in, k, k): this works before any plan. */
        const int64_t *sh = m->params[nd->w].shape;
        const struct unet__conv2d_dims d = {
            .N = 1, .C_in = (int)sh[1], .H_in = 64, .W_in = 64, .C_out = (int)sh[0],
            .K_h = nd->k, .K_w = nd->k, .stride_h = nd->stride, .stride_w = nd->stride,
            .pad_h = nd->pad, .pad_w = nd->pad};
        if (unet__winograd_applies(&d)) floats += unet__winograd_weights_floats(&d, k);
        floats += 2 * (uint64_t)d.C_out;
    }
    return floats * sizeof(float);
}

static void drop_entries(unet_model *m) {
    struct unet__wcache *c = m->wcache;
    for (int i = 0; i < m->n_nodes; i++) {
        unet__free(c->u[i]);
        free(c->fold[i]);
        c->u[i] = c->fold[i] = NULL;
        c->seen[i] = 0;
    }
    c->bytes = 0;
}

void unet__wcache_free(unet_model *m) {
    if (!m->wcache) return;
    drop_entries(m);
    free(m->wcache->u);
    free(m->wcache->fold);
    free(m->wcache->seen);
    free(m->wcache);
    m->wcache = NULL;
}

/* The cache for the current generation (its entries dropped when they belong to another), or
 * NULL when it cannot be allocated. */
static struct unet__wcache *current(unet_model *m) {
    struct unet__wcache *c = m->wcache;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (c) c->u = calloc((size_t)m->n_nodes, sizeof *c->u);
        if (c && c->u) c->fold = calloc((size_t)m->n_nodes, sizeof *c->fold);
        if (c && c->fold) c->seen = calloc((size_t)m->n_nodes, sizeof *c->seen);
        if (!c || !c->u || !c->fold || !c->seen) {
            if (c) free(c->u), free(c->fold), free(c);
            return NULL;
        }
        c->gen = m->weights_gen;
        m->wcache = c;
    }
    if (c->gen != m->weights_gen) {
        drop_entries(m);
        c->gen = m->weights_gen;
    }
    return c;
}

const float *unet__wcache_weights(unet_model *m, int i, const struct unet__kernels *k) {
    const struct unet__node *nd = &m->nodes[i];
    if (m->cache_off || nd->op != UNET__NODE_CONV || !unet__winograd_applies(&nd->d.conv))
        return NULL;
    struct unet__wcache *c = current(m);
    if (!c) return NULL;
    if (c->row != k) {
        for (int j = 0; j < m->n_nodes; j++) {
            if (c->u[j]) c->bytes -= unet__winograd_weights_floats(&m->nodes[j].d.conv, c->row) *
                                     sizeof(float);
            unet__free(c->u[j]);
            c->u[j] = NULL;
            c->seen[j] = 0;
        }
        c->row = k;
    }
    if (!c->u[i]) {
        /* The entry is made at the second use: a single forward (one image in one tile, one
         * validation batch) transforms in the call as it would anyway, and holds no memory
         * for an entry nobody reads again. */
        if (!c->seen[i]) {
            c->seen[i] = 1;
            return NULL;
        }
        const size_t n = unet__winograd_weights_floats(&nd->d.conv, k);
        c->u[i] = unet__alloc(n * sizeof(float));
        if (!c->u[i]) return NULL;
        unet__winograd_weights(c->u[i], unet__model_param_data(m, &m->params[nd->w]), &nd->d.conv,
                               k);
        c->bytes += n * sizeof(float);
    }
    return c->u[i];
}

void unet__model_fold(const unet_model *m, int i, float *f) {
    const struct unet__node *cv = &m->nodes[i], *bn = &m->nodes[cv->fuse.bn];
    const int C = cv->d.conv.C_out;
    const struct unet__param *p = m->params;
    const float *gamma = bn->w >= 0 ? unet__model_param_data(m, &p[bn->w]) : NULL;
    const float *beta = bn->b >= 0 ? unet__model_param_data(m, &p[bn->b]) : NULL;
    const float *bias = cv->b >= 0 ? unet__model_param_data(m, &p[cv->b]) : NULL;
    const float *mean = unet__model_param_data(m, &p[bn->rmean]);
    const float *var = unet__model_param_data(m, &p[bn->rvar]);
    for (int co = 0; co < C; co++) {
        double a = (gamma ? gamma[co] : 1.0) / sqrt((double)var[co] + (double)bn->d.bn.eps);
        f[co] = (float)a;
        f[C + co] = (float)((beta ? beta[co] : 0.0) + ((bias ? bias[co] : 0.0) - mean[co]) * a);
    }
}

const float *unet__wcache_fold(unet_model *m, int i) {
    if (m->cache_off) return NULL;
    struct unet__wcache *c = current(m);
    if (!c) return NULL;
    if (!c->fold[i]) {
        const size_t n = 2 * (size_t)m->nodes[i].d.conv.C_out;
        c->fold[i] = malloc(n * sizeof(float));
        if (!c->fold[i]) return NULL;
        unet__model_fold(m, i, c->fold[i]);
        c->bytes += n * sizeof(float);
    }
    return c->fold[i];
}

size_t unet__wcache_bytes(const unet_model *m) {
    return m->wcache ? m->wcache->bytes : 0;
}
