/* test_model.c — the whole U-Net: PyTorch checkpoints load by name (architecture inferred),
 * forward/loss/gradients and ten SGD and Adam steps reproduce PyTorch (tools/golden/unet_model.py),
 * a finite-difference check through the whole network, parameter counts of the full-size
 * architectures, the memory plan, checkpoint round trips and bad checkpoints. */
#include "harness.h"
#include "io/file.h"
#include "io/checkpoint.h"
#include "model.h"

#include <unistd.h>

/* Whole-model tolerances: one pass sums ~10^3 float32 products per value over 13 layers, and
 * ten optimizer steps feed those differences back through the weights; Adam divides by
 * sqrt(v) and amplifies tiny gradients, hence its looser bound. */
#define FWD_TOL 1e-4
#define GRAD_ATOL 2e-5
#define GRAD_RTOL 1e-3

static int32_t *to_i32(const float *f, size_t n) {
    int32_t *t = malloc(sizeof(int32_t) * n);
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)f[i];
    return t;
}

static void compare_params(unet_model *m, const struct unet__safetensors *st, const char *prefix,
                           double atol, double rtol) {
    char key[160];
    for (int i = 0; i < m->n_params; i++) {
        const struct unet__param *p = &m->params[i];
        if (p->kind == UNET__PARAM_COUNTER) continue;
        snprintf(key, sizeof key, "%s%s", prefix, p->name);
        float *ref = golden_get(st, key, NULL);
        if (!ref) continue;
        CHECK_TENSOR(key, unet__model_param_data(m, p), ref, p->numel, atol, rtol);
        free(ref);
    }
}

static void golden_variant(const char *name) {
    char path[256];
    snprintf(path, sizeof path, GOLDEN_DIR "/%s.model.safetensors", name);
    unet_ctx *ctx = unet_ctx_create();
    struct unet__safetensors *st = golden_open(name);
    if (!st) return;
    size_t nx, nt;
    float *x = golden_get(st, "x", &nx);
    float *tf = golden_get(st, "target", &nt);
    int32_t *t = to_i32(tf, nt);
    const int N = 2, H = 21, W = 19;
    CHECK_EQ(nx, (size_t)N * H * W);

    /* 1. A PyTorch state_dict without metadata: the architecture is inferred. */
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_load(ctx, path, &m), UNET_STATUS_OK);
    if (!m) {
        printf("  %s\n", unet_ctx_errmsg(ctx));
        return;
    }
    CHECK_EQ(m->cfg.base, 4);
    CHECK_EQ(m->cfg.depth, 2);
    CHECK_EQ(m->cfg.batchnorm, 1);

    /* 2. First training-mode pass: logits, CE loss, every parameter gradient.  lr = 0 keeps
     * the weights, so the gradients stay readable in m->grads. */
    unet_optim zero = unet_optim_default(UNET_OPTIM_SGD);
    zero.lr = 0.0;
    double loss = 0;
    CHECK_STATUS(unet_train_step(ctx, m, &zero, UNET_LOSS_CE, x, t, NULL, N, H, W, &loss),
                 UNET_STATUS_OK);
    float *ref = golden_get(st, "loss", NULL);
    printf("     %s: loss %.9f (PyTorch %.9f)\n", name, loss, ref ? ref[0] : 0.0);
    if (ref) CHECK_CLOSE(loss, ref[0], 1e-6, 1e-5);
    free(ref);
    size_t nl;
    ref = golden_get(st, "logits_train", &nl);
    if (ref) CHECK_TENSOR("logits (train mode)", unet__model_output(m)->data, ref, nl, FWD_TOL, FWD_TOL);
    free(ref);
    char key[160];
    for (int i = 0; i < m->n_params; i++) {
        const struct unet__param *p = &m->params[i];
        if (p->kind != UNET__PARAM_WEIGHT) continue;
        snprintf(key, sizeof key, "grad.%s", p->name);
        ref = golden_get(st, key, NULL);
        if (ref) CHECK_TENSOR(key, m->grads + p->offset, ref, p->numel, GRAD_ATOL, GRAD_RTOL);
        free(ref);
    }
    unet_model_free(m);

    /* 3. Ten SGD steps (momentum, weight decay), then eval-mode logits with the learned
     * running statistics. */
    m = NULL;
    CHECK_STATUS(unet_model_load(ctx, path, &m), UNET_STATUS_OK);
    unet_optim sgd = unet_optim_default(UNET_OPTIM_SGD);
    sgd.lr = 0.02, sgd.momentum = 0.9, sgd.weight_decay = 1e-4;
    float *losses = golden_get(st, "sgd.losses", NULL);
    for (int k = 0; k < 10 && m && losses; k++) {
        CHECK_STATUS(unet_train_step(ctx, m, &sgd, UNET_LOSS_CE, x, t, NULL, N, H, W, &loss),
                     UNET_STATUS_OK);
        printf("     sgd step %d: loss %.7f (PyTorch %.7f)\n", k + 1, loss, losses[k]);
        CHECK_CLOSE(loss, losses[k], 1e-5, 1e-4);
        if (k == 0) compare_params(m, st, "sgd1.", 1e-5, 1e-4);
    }
    free(losses);
    if (m) {
        compare_params(m, st, "sgd.", 1e-4, 1e-3);
        float *logits = test_alloc(nl);
        CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, logits), UNET_STATUS_OK);
        ref = golden_get(st, "sgd.logits_eval", NULL);
        if (ref) CHECK_TENSOR("logits (eval, after SGD)", logits, ref, nl, 1e-3, 1e-3);
        free(ref);
        free(logits);
        CHECK_EQ(m->counters[0], 10); /* num_batches_tracked */
    }
    unet_model_free(m);

    /* 4. Ten Adam steps on CE + Dice. */
    m = NULL;
    CHECK_STATUS(unet_model_load(ctx, path, &m), UNET_STATUS_OK);
    unet_optim adam = unet_optim_default(UNET_OPTIM_ADAM);
    adam.lr = 1e-2, adam.eps = 1e-4;
    losses = golden_get(st, "adam.losses", NULL);
    for (int k = 0; k < 10 && m && losses; k++) {
        CHECK_STATUS(unet_train_step(ctx, m, &adam, UNET_LOSS_CE_DICE, x, t, NULL, N, H, W, &loss),
                     UNET_STATUS_OK);
        printf("     adam step %d: loss %.7f (PyTorch %.7f)\n", k + 1, loss, losses[k]);
        CHECK_CLOSE(loss, losses[k], 1e-5, 1e-4);
        if (k == 0) compare_params(m, st, "adam1.", 1e-5, 1e-4);
    }
    free(losses);
    if (m) compare_params(m, st, "adam.", 1e-4, 1e-3);
    unet_model_free(m);

    /* 5. A checkpoint trained in PyTorch gives PyTorch's eval-mode logits.  Bound: 1e-4 of the
     * largest logit plus 1e-4 relative (the 1e-4 relative error, made meaningful for
     * logits near zero). */
    snprintf(path, sizeof path, GOLDEN_DIR "/%s_trained.model.safetensors", name);
    m = NULL;
    CHECK_STATUS(unet_model_load(ctx, path, &m), UNET_STATUS_OK);
    size_t n2, nl2;
    float *x2 = golden_get(st, "trained.x", &n2), *ref2 = golden_get(st, "trained.logits_eval", &nl2);
    if (m && x2 && ref2) {
        float *y2 = test_alloc(nl2);
        CHECK_STATUS(unet_model_forward(ctx, m, x2, 1, 40, 36, y2), UNET_STATUS_OK);
        double mx = 0;
        for (size_t i = 0; i < nl2; i++) mx = fabs(ref2[i]) > mx ? fabs(ref2[i]) : mx;
        CHECK_TENSOR("PyTorch-trained checkpoint, eval logits", y2, ref2, nl2, 1e-4 * mx, 1e-4);
        free(y2);
    }
    free(x2), free(ref2);
    unet_model_free(m);

    free(x), free(tf), free(t);
    unet__st_close(st);
    unet_ctx_free(ctx);
}

TEST(unet_transposed_matches_pytorch) {
    golden_variant("unet_t");
}

TEST(unet_bilinear_matches_pytorch) {
    golden_variant("unet_b");
}

/* Parameter counts of the full-size networks: milesial's UNet(1, 2) (sum(p.numel()) of its
 * master branch: bias-free convs before BatchNorm) and the paper's
 * 31,030,658 (PAPERS.md 1.2, 1 input channel, 2 classes). */
TEST(param_counts) {
    unet_ctx *ctx = unet_ctx_create();
    struct {
        unet_arch arch;
        unet_up   up;
        size_t    want;
        const char *what;
    } cases[] = {
        {UNET_ARCH_UNET, UNET_UP_TRANSPOSE, 31036546, "milesial UNet(1, 2, bilinear=False)"},
        {UNET_ARCH_UNET, UNET_UP_BILINEAR, 17261890, "milesial UNet(1, 2, bilinear=True)"},
        {UNET_ARCH_UNET_PAPER, UNET_UP_TRANSPOSE, 31030658, "Ronneberger et al. 2015"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unet_config c = unet_config_default(cases[i].arch);
        c.up = cases[i].up;
        unet_model *m = NULL;
        CHECK_STATUS(unet__model_build(ctx, &c, &m), UNET_STATUS_OK);
        if (!m) continue;
        printf("     %-40s %zu parameters\n", cases[i].what, unet_model_param_count(m));
        CHECK_EQ(unet_model_param_count(m), cases[i].want);
        unet_model_free(m);
    }
    unet_ctx_free(ctx);
}

/* Output sizes: same padding keeps the size; the paper's 572 -> 388; bad sizes are refused. */
TEST(output_sizes) {
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(UNET_ARCH_UNET_PAPER);
    unet_model *m = NULL;
    CHECK_STATUS(unet__model_build(ctx, &c, &m), UNET_STATUS_OK);
    int oh = 0, ow = 0;
    CHECK_STATUS(unet_model_output_size(ctx, m, 572, 572, &oh, &ow), UNET_STATUS_OK);
    CHECK_EQ(oh, 388);
    CHECK_EQ(ow, 388);
    CHECK_STATUS(unet_model_output_size(ctx, m, 188, 204, &oh, &ow), UNET_STATUS_OK);
    CHECK_EQ(oh, 4);
    CHECK_EQ(ow, 20);
    CHECK(unet_model_output_size(ctx, m, 100, 100, &oh, &ow) != UNET_STATUS_OK);
    printf("       100x100 into the paper's U-Net: %s\n", unet_ctx_errmsg(ctx));
    unet_model_free(m);
    c = unet_config_default(UNET_ARCH_UNET);
    CHECK_STATUS(unet__model_build(ctx, &c, &m), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_output_size(ctx, m, 333, 101, &oh, &ow), UNET_STATUS_OK);
    CHECK_EQ(oh, 333);
    CHECK_EQ(ow, 101);
    double flops = 0;
    size_t act = 0;
    CHECK_STATUS(unet_model_cost(ctx, m, 1, 256, 256, &flops, &act), UNET_STATUS_OK);
    printf("       seed U-Net at 256x256: %.1f GFLOP, %.1f MiB of activations and scratch planned\n",
           flops / 1e9, (double)act / (1 << 20));
    CHECK_CLOSE(flops / 1e9, 96.2, 0.1, 0); /* the 96.2 GFLOP per 256x256 forward */
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* The inference plan keeps only live values: far less than the sum of all activations. */
TEST(inference_plan_reuses_memory) {
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 8;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_prepare(ctx, m, 1, 64, 64, 0), UNET_STATUS_OK);
    size_t sum = 0;
    for (int v = 1; v < m->n_values; v++)
        sum += (size_t)m->values[v].c * m->values[v].h * m->values[v].w * sizeof(float);
    size_t cost = 0; /* unet_model_cost's estimate is the arena planned, scratch included */
    CHECK_STATUS(unet_model_cost(ctx, m, 1, 64, 64, NULL, &cost), UNET_STATUS_OK);
    printf("       planned %.2f MiB (unet_model_cost %.2f MiB) for %.2f MiB of activations\n",
           (double)m->act.size / (1 << 20), (double)cost / (1 << 20), (double)sum / (1 << 20));
    CHECK_EQ(cost, m->act.size);
    CHECK(m->act.size < sum * 2);
    for (int k = 0; k < 2; k++) { /* another size and batch, with the model planned at 64 */
        const int n = k ? 3 : 2, h = k ? 96 : 48, w = k ? 40 : 80;
        CHECK_STATUS(unet_model_cost(ctx, m, n, h, w, NULL, &cost), UNET_STATUS_OK);
        unet_model *m2 = NULL;
        CHECK_STATUS(unet_model_create(ctx, &c, 1, &m2), UNET_STATUS_OK);
        CHECK_STATUS(unet_model_prepare(ctx, m2, n, h, w, 0), UNET_STATUS_OK);
        CHECK_EQ(cost, m2->act.size);
        unet_model_free(m2);
    }
    /* Each convolution's scratch is in the arena (no block of its own), where the activations
     * leave room during its step: the logits below check that nothing alive is overwritten. */
    CHECK(m->scratch == NULL);
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        if (nd->op != UNET__NODE_CONV && nd->op != UNET__NODE_CONVT) continue;
        size_t f = nd->op == UNET__NODE_CONV ? unet__conv2d_forward_scratch_floats(&nd->d.conv)
                                             : unet__convt2d_scratch_floats(&nd->d.convt);
        const unsigned char *p = (const unsigned char *)nd->scratch;
        CHECK(f == 0 || (p && p >= m->act.base && p + f * sizeof(float) <= m->act.base + m->act.size));
    }
    /* No two values alive at once overlap: run forward and compare against a training plan
     * (which keeps everything). */
    float *x = test_alloc(64 * 64), *y1 = test_alloc(2 * 64 * 64), *y2 = test_alloc(2 * 64 * 64);
    struct unet__rng rng;
    unet__rng_seed(&rng, 9);
    fill_uniform(&rng, x, 64 * 64, 0, 1);
    CHECK_STATUS(unet_model_forward(ctx, m, x, 1, 64, 64, y1), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_prepare(ctx, m, 1, 64, 64, 1), UNET_STATUS_OK);
    m->training_mode = false;
    memcpy(y2, unet__model_forward(m, x), sizeof(float) * 2 * 64 * 64);
    CHECK_TENSOR("planned vs unplanned logits", y1, y2, 2 * 64 * 64, 0, 0);
    free(x), free(y1), free(y2);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* Finite differences through the whole network (training mode, batch statistics): the sum of
 * every op's backward in the right order, fused ReLUs and the memory plan included. */
struct whole {
    unet_model *m;
    float      *x, *r;
    size_t      n_out;
    struct unet__rng rng0;
};

static double whole_loss(void *ud) {
    struct whole *k = ud;
    k->m->rng = k->rng0; /* the same dropout mask every evaluation */
    const float *y = unet__model_forward(k->m, k->x);
    return dot_double(y, k->r, k->n_out);
}

/* Moves every ReLU input away from 0 (batch-norm shift +8, beyond the most negative normalised
 * value in these small batches; without batch-norm, small weights
 * and bias +1), so the network is smooth where it is checked: a kink inside a finite-difference
 * step would otherwise shift the numeric slope by several percent (measured in PyTorch float64:
 * 7% at h = 1e-3 on a 2-channel U-Net).  The ReLU masks themselves are exercised by the op tests
 * and the PyTorch comparison above. */
static void make_smooth(unet_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        if (nd->op == UNET__NODE_BN) {
            const struct unet__param *beta = &m->params[nd->b];
            for (size_t j = 0; j < beta->numel; j++) m->weights[beta->offset + j] = 8.0f;
        } else if (nd->relu) {
            const struct unet__param *w = &m->params[nd->w];
            for (size_t j = 0; j < w->numel; j++) m->weights[w->offset + j] *= 0.2f;
            if (nd->b >= 0)
                for (size_t j = 0; j < m->params[nd->b].numel; j++)
                    m->weights[m->params[nd->b].offset + j] = 1.0f;
        }
    }
}

static void whole_gradcheck(unet_config c, const char *label, int H, int W) {
    unet_ctx *ctx = unet_ctx_create();
    struct whole k = {0};
    CHECK_STATUS(unet_model_create(ctx, &c, 3, &k.m), UNET_STATUS_OK);
    if (!k.m) return;
    make_smooth(k.m);
    CHECK_STATUS(unet_model_prepare(ctx, k.m, 2, H, W, 1), UNET_STATUS_OK);
    k.m->training_mode = true;
    struct unet__rng rng;
    unet__rng_seed(&rng, 11);
    k.x = test_alloc((size_t)2 * c.in_channels * H * W);
    fill_uniform(&rng, k.x, (size_t)2 * c.in_channels * H * W, -1, 1);
    const struct unet__value *o = unet__model_output(k.m);
    k.n_out = (size_t)2 * o->c * o->h * o->w;
    k.r = test_alloc(k.n_out);
    fill_uniform(&rng, k.r, k.n_out, -1, 1);
    k.rng0 = k.m->rng;
    k.m->grads = unet__calloc(k.m->n_weights, sizeof(float));
    whole_loss(&k);
    unet__model_backward(k.m, k.r);
    /* Check a spread of entries of every parameter tensor. */
    for (int i = 0; i < k.m->n_params; i++) {
        const struct unet__param *p = &k.m->params[i];
        if (p->kind != UNET__PARAM_WEIGHT) continue;
        char what[140];
        snprintf(what, sizeof what, "%s %s", label, p->name);
        /* Smooth but curved through batch-norm: h = 1e-2 keeps float32 noise (~1e-7 |L| / h)
         * small; the second-order term of a central difference is below 1%. */
        gradcheck_at(__FILE__, __LINE__, what, k.m->weights + p->offset, k.m->grads + p->offset,
                     p->numel, whole_loss, &k, 1e-2f, 3e-3, 1e-2, 6);
    }
    free(k.x), free(k.r);
    unet_model_free(k.m);
    unet_ctx_free(ctx);
}

/* The composition: backward order, fused ReLUs, gradient zeroing and memory reuse over the whole
 * network, every parameter tensor (the exact values are checked against PyTorch above). */
/* An inference plan gives Winograd convolutions room in the arena, free during their step, for
 * their transformed weights (model_plan.c place_weight_room): a forward without cache entries
 * (the first, or any with the cache off) transforms each convolution's weights once into it.
 * The logits are those of the transform in the call, bit for bit, and the arena is no larger
 * than the plan without the room. */
TEST(weight_room_in_the_arena) {
    enum { S = 160 };
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 16, c.depth = 2;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 3, &m), UNET_STATUS_OK);
    if (!m) goto done;
    unet_model_set_cache(m, 0);
    /* A small Winograd budget: the layers of this small network then keep no weights in the
     * call and transform them per tile block and chunk, as the large layers of a full size
     * network do. */
    unet__winograd_set_budget(36 * 40 * 16);
    CHECK_STATUS(unet_model_prepare(ctx, m, 1, S, S, 0), UNET_STATUS_OK);
    int rooms = 0, winograd = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        winograd += nd->op == UNET__NODE_CONV && unet__conv2d_fusable(&nd->d.conv);
        if (!nd->wino_u) continue;
        rooms++;
        CHECK(nd->wino_u_floats >= unet__winograd_weights_floats(&nd->d.conv, unet__kernels_for(m->precision)));
        CHECK((const unsigned char *)(nd->wino_u + nd->wino_u_floats) <= m->act.base + m->act.size);
    }
    printf("       %d of %d Winograd convolutions with room for their transformed weights, arena "
           "%.2f MiB\n", rooms, winograd, (double)m->act.size / (1 << 20));
    CHECK(rooms > 0 && rooms == winograd); /* this size leaves room for every one */
    float *x = test_alloc(S * S), *y1 = test_alloc(2 * S * S), *y2 = test_alloc(2 * S * S);
    struct unet__rng rng;
    unet__rng_seed(&rng, 4);
    fill_uniform(&rng, x, S * S, 0, 1);
    CHECK_STATUS(unet_model_forward(ctx, m, x, 1, S, S, y1), UNET_STATUS_OK);
    for (int i = 0; i < m->n_nodes; i++) m->nodes[i].wino_u = NULL;
    /* The cache's transform (its entries made at the second forward) is the same, and so are
     * the logits, bit for bit. */
    unet_model_set_cache(m, 1);
    for (int k = 0; k < 2; k++)
        CHECK_STATUS(unet_model_forward(ctx, m, x, 1, S, S, y2), UNET_STATUS_OK);
    CHECK(unet__wcache_bytes(m) > 0);
    CHECK(memcmp(y1, y2, sizeof *y1 * 2 * S * S) == 0);
    /* Transformed per tile block and chunk in the call: the same sums in another grouping. */
    unet_model_set_cache(m, 0);
    CHECK_STATUS(unet_model_forward(ctx, m, x, 1, S, S, y2), UNET_STATUS_OK);
    CHECK_TENSOR("room vs in the call", y1, y2, 2 * S * S, 1e-5, 1e-4);
    free(x), free(y1), free(y2);
done:
    unet__winograd_set_budget(0);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

TEST(whole_unet_gradcheck) {
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 2, c.depth = 2, c.conv_bias = 1;
    whole_gradcheck(c, "unet", 8, 8);
    c.up = UNET_UP_BILINEAR;
    whole_gradcheck(c, "unet-bilinear", 8, 8);
    c = unet_config_default(UNET_ARCH_UNET_PAPER);
    c.base = 2, c.depth = 1, c.dropout = 0.3f;
    whole_gradcheck(c, "unet-paper", 18, 18);
}

TEST(checkpoint_round_trip) {
    unet_ctx *ctx = unet_ctx_create();
    char dir[] = "/tmp/unet-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[300], bad[300];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 3, c.depth = 3, c.up = UNET_UP_BILINEAR, c.classes = 3, c.in_channels = 2;
    unet_model *a = NULL, *b = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 5, &a), UNET_STATUS_OK);
    a->counters[1] = 42;
    CHECK_STATUS(unet_model_save(ctx, a, path), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_load(ctx, path, &b), UNET_STATUS_OK);
    if (a && b) {
        CHECK(memcmp(&a->cfg, &b->cfg, sizeof c) == 0);
        CHECK(memcmp(a->weights, b->weights, a->n_weights * sizeof(float)) == 0);
        CHECK(memcmp(a->buffers, b->buffers, a->n_buffers * sizeof(float)) == 0);
        CHECK_EQ(b->counters[1], 42);
    }
    unet_model_free(b);
    b = NULL;

    /* A truncated copy: the offsets run past the end. */
    unsigned char *buf;
    size_t size;
    CHECK_STATUS(unet__read_file(ctx, path, 1 << 30, &buf, &size), UNET_STATUS_OK);
    snprintf(bad, sizeof bad, "%s/truncated.safetensors", dir);
    FILE *f = fopen(bad, "wb");
    fwrite(buf, 1, size - 100, f);
    fclose(f);
    CHECK_STATUS(unet_model_load(ctx, bad, &b), UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "truncated.safetensors");
    printf("       %s\n", unet_ctx_errmsg(ctx));
    CHECK(b == NULL);
    free(buf);

    /* A checkpoint of another architecture: a shape mismatch names the tensor. */
    unet_config c2 = c;
    c2.base = 4;
    unet_model *other = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c2, 5, &other), UNET_STATUS_OK);
    snprintf(bad, sizeof bad, "%s/other.safetensors", dir);
    CHECK_STATUS(unet_model_save(ctx, other, bad), UNET_STATUS_OK);
    unet_model_free(other);

    /* Overwriting a checkpoint with save is atomic: the old file stays until the new is done;
     * a save into a missing directory fails and leaves nothing behind. */
    snprintf(bad, sizeof bad, "%s/missing/dir/m.safetensors", dir);
    CHECK_STATUS(unet_model_save(ctx, a, bad), UNET_STATUS_IO);
    printf("       %s\n", unet_ctx_errmsg(ctx));
    unet_model_free(a);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
    unet_ctx_free(ctx);
}

TEST(bad_checkpoints) {
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_load(ctx, "/nonexistent/model.safetensors", &m), UNET_STATUS_IO);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "/nonexistent/model.safetensors");
    /* A golden data file is valid safetensors but no model. */
    CHECK_STATUS(unet_model_load(ctx, GOLDEN_DIR "/conv.safetensors", &m), UNET_STATUS_FORMAT);
    printf("       %s\n", unet_ctx_errmsg(ctx));
    CHECK(m == NULL);
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.depth = 0;
    CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "depth");
    c = unet_config_default(UNET_ARCH_UNET);
    CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_prepare(ctx, m, 1, 8, 8, 0), UNET_STATUS_SHAPE); /* 8 -> 4 -> 2 -> 1 -> 0 */
    printf("       %s\n", unet_ctx_errmsg(ctx));
    CHECK_STATUS(unet_model_prepare(ctx, m, 1, 16, 16, 1), UNET_STATUS_SHAPE); /* BN on 1x1, batch 1 */
    printf("       %s\n", unet_ctx_errmsg(ctx));
    CHECK_STATUS(unet_model_prepare(ctx, m, 0, 16, 16, 0), UNET_STATUS_ARG);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* A target that is not a class id is an error naming the pixel, never an abort (the losses
 * assume valid ids); -1 marks unlabeled pixels. */
TEST(bad_targets_are_errors) {
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 2, c.depth = 1;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
    float x[2 * 8 * 8];
    int32_t t[2 * 8 * 8];
    for (int i = 0; i < 128; i++) x[i] = (float)(i % 7) / 7.0f, t[i] = i % 3 == 0 ? -1 : i % 2;
    unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
    double L;
    CHECK_STATUS(unet_train_step(ctx, m, &o, UNET_LOSS_CE_DICE, x, t, NULL, 2, 8, 8, &L),
                 UNET_STATUS_OK);
    t[77] = 7;
    CHECK_STATUS(unet_train_step(ctx, m, &o, UNET_LOSS_CE, x, t, NULL, 2, 8, 8, &L), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "pixel 13 holds 7");
    CHECK_STATUS(unet_eval_loss(ctx, m, UNET_LOSS_CE, x, t, NULL, 2, 8, 8, &L), UNET_STATUS_ARG);
    t[77] = -2;
    CHECK_STATUS(unet_train_step(ctx, m, &o, UNET_LOSS_DICE, x, t, NULL, 2, 8, 8, &L), UNET_STATUS_ARG);
    printf("       %s\n", unet_ctx_errmsg(ctx));
    CHECK_EQ(unet_train_steps(m), 1); /* the refused steps changed nothing */
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* A plain checkpoint carries no optimizer moments: training it again starts a fresh optimizer
 * at step 1 (Adam's bias correction), as a new PyTorch optimizer would. */
TEST(fresh_optimizer_after_load) {
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 2, c.depth = 1;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
    float x[8 * 8];
    int32_t t[8 * 8];
    for (int i = 0; i < 64; i++) x[i] = (float)(i % 5), t[i] = i % 2;
    unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
    double L;
    for (int k = 0; k < 3; k++)
        CHECK_STATUS(unet_train_step(ctx, m, &o, UNET_LOSS_CE, x, t, NULL, 1, 8, 8, &L), UNET_STATUS_OK);
    CHECK_EQ(unet_train_steps(m), 3);
    char dir[] = "/tmp/unet-test-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    CHECK_STATUS(unet_model_save(ctx, m, path), UNET_STATUS_OK);
    unet_model *n = NULL;
    CHECK_STATUS(unet_model_load(ctx, path, &n), UNET_STATUS_OK);
    if (n) {
        CHECK_EQ(unet_train_steps(n), 3);
        CHECK_STATUS(unet_train_step(ctx, n, &o, UNET_LOSS_CE, x, t, NULL, 1, 8, 8, &L), UNET_STATUS_OK);
        CHECK_EQ(unet_train_steps(n), 1);
    }
    unet_model_free(n);
    unet_model_free(m);
    unlink(path);
    rmdir(dir);
    unet_ctx_free(ctx);
}

/* Logits of m on a fixed 1 x in_channels x 20 x 20 input into out (malloc'd), or NULL. */
static float *logits_of(unet_ctx *ctx, unet_model *m) {
    const unet_config *c = unet_model_config(m);
    float *x = malloc(sizeof *x * (size_t)c->in_channels * 400);
    float *y = malloc(sizeof *y * (size_t)c->classes * 400);
    for (int i = 0; i < c->in_channels * 400; i++) x[i] = (float)((i * 37) % 101) / 101.0f;
    if (unet_model_forward(ctx, m, x, 1, 20, 20, y) != UNET_STATUS_OK) {
        free(y);
        y = NULL;
    }
    free(x);
    return y;
}

/* An inference load of a checkpoint unet wrote uses the weights where they lie in the mapped
 * file (checkpoint.c, use_mapped_weights): the same logits, bit for bit, as the copy that every
 * other load makes; a write to the weights never reaches the file; the model outlives the file
 * being replaced (by rename, as unet writes); a file of another layout takes the copy; a
 * truncated file or a non-finite weight in the mapping is refused with an error. */
TEST(weights_used_in_place) {
    unet_ctx *ctx = unet_ctx_create();
    char dir[] = "/tmp/unet-test-XXXXXX", path[64], old[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    snprintf(old, sizeof old, "%s/old.safetensors", dir);
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 4, c.depth = 2, c.classes = 3;
    unet_model *a = NULL, *b = NULL, *copy = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 7, &a), UNET_STATUS_OK);
    for (size_t i = 0; a && i < a->n_buffers; i++) a->buffers[i] += 0.01f * (float)(i % 7);
    CHECK_STATUS(unet_model_save(ctx, a, path), UNET_STATUS_OK);
    unsigned char *file = NULL;
    size_t size = 0;
    CHECK_STATUS(unet__read_file(ctx, path, 1 << 30, &file, &size), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_load(ctx, path, &b), UNET_STATUS_OK);
    CHECK_STATUS(unet__model_load_mem(ctx, "copy", file, size, false, NULL, NULL, &copy),
                 UNET_STATUS_OK);
    if (!a || !b || !copy || !file) goto done;
    /* The header is padded so that the data section, weights first, is 64-byte aligned. */
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | file[i];
    CHECK_EQ((8 + hlen) % 64, 0);
    CHECK(b->map != NULL);
    CHECK(copy->map == NULL);
    CHECK((unsigned char *)b->weights == b->map + 8 + hlen);
    CHECK(memcmp(b->weights, a->weights, a->n_weights * sizeof(float)) == 0);
    float *ya = logits_of(ctx, a), *yb = logits_of(ctx, b), *yc = logits_of(ctx, copy);
    CHECK(ya && yb && yc);
    if (ya && yb && yc) {
        CHECK(memcmp(yb, yc, sizeof *yb * 3 * 400) == 0);
        CHECK(memcmp(yb, ya, sizeof *yb * 3 * 400) == 0);
    }

    /* The file replaced by another model (save renames over it): b keeps its weights. */
    unet_model *other = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 8, &other), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_save(ctx, other, path), UNET_STATUS_OK);
    unet_model_free(other);
    float *yb2 = logits_of(ctx, b);
    CHECK(yb2 && yb && memcmp(yb2, yb, sizeof *yb * 3 * 400) == 0);
    free(yb2);
    unet_model_free(b);
    b = NULL;

    /* Writes to the weights stay in the process: the file keeps its bytes. */
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(file, 1, size, f) == size);
    if (f) fclose(f);
    CHECK_STATUS(unet_model_load(ctx, path, &b), UNET_STATUS_OK);
    if (b) {
        CHECK(b->map != NULL);
        b->weights[0] += 1.0f;
        unet__model_weights_changed(b);
        float x[20 * 20];
        int32_t t[20 * 20];
        for (int i = 0; i < 400; i++) x[i] = (float)(i % 9) / 9.0f, t[i] = i % 3;
        unet_optim o = unet_optim_default(UNET_OPTIM_SGD);
        double L;
        CHECK_STATUS(unet_train_step(ctx, b, &o, UNET_LOSS_CE, x, t, NULL, 1, 20, 20, &L),
                     UNET_STATUS_OK);
        CHECK(b->map == NULL); /* training took its own copy of the weights */
        unsigned char *now = NULL;
        size_t now_size = 0;
        CHECK_STATUS(unet__read_file(ctx, path, 1 << 30, &now, &now_size), UNET_STATUS_OK);
        CHECK(now && now_size == size && memcmp(now, file, size) == 0);
        free(now);
    }
    unet_model_free(b);
    b = NULL;

    /* A file whose weights are not one run in the block's order (as unet wrote them before,
     * and PyTorch's writer does): the copy, with the same logits. */
    struct unet__st_entry *e = calloc((size_t)a->n_params, sizeof *e);
    for (int i = 0; e && i < a->n_params; i++)
        unet__st_entry_of_param(a, &a->params[i], &e[i]);
    const char *meta[] = {"arch", "unet", "base", "4", "depth", "2", "classes", "3"};
    CHECK_STATUS(unet__st_write(ctx, old, e, a->n_params, meta, 4), UNET_STATUS_OK);
    free(e);
    CHECK_STATUS(unet_model_load(ctx, old, &b), UNET_STATUS_OK);
    if (b) {
        CHECK(b->map == NULL);
        float *yo = logits_of(ctx, b);
        CHECK(yo && yb && memcmp(yo, yb, sizeof *yb * 3 * 400) == 0);
        free(yo);
    }
    unet_model_free(b);
    b = NULL;

    /* Truncated inside the weights: refused before anything reads the mapping. */
    f = fopen(path, "wb");
    CHECK(f && fwrite(file, 1, 8 + hlen + 1000, f) == 8 + hlen + 1000);
    if (f) fclose(f);
    CHECK_STATUS(unet_model_load(ctx, path, &b), UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "m.safetensors");
    printf("       %s\n", unet_ctx_errmsg(ctx));
    CHECK(b == NULL);
    /* A NaN among the mapped weights: the finite check reads the mapping. */
    const float nan = NAN;
    memcpy(file + 8 + hlen + 4 * 5, &nan, sizeof nan);
    f = fopen(path, "wb");
    CHECK(f && fwrite(file, 1, size, f) == size);
    if (f) fclose(f);
    CHECK_STATUS(unet_model_load(ctx, path, &b), UNET_STATUS_NUMERIC);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "inc.double_conv.0.weight holds nan at index 5");
    CHECK(b == NULL);
    free(ya);
    free(yb);
    free(yc);
done:
    free(file);
    unet_model_free(b);
    unet_model_free(copy);
    unet_model_free(a);
    unlink(path);
    unlink(old);
    rmdir(dir);
    unet_ctx_free(ctx);
}

int main(void) {
    RUN(param_counts);
    RUN(output_sizes);
    RUN(unet_transposed_matches_pytorch);
    RUN(unet_bilinear_matches_pytorch);
    RUN(whole_unet_gradcheck);
    RUN(inference_plan_reuses_memory);
    RUN(weight_room_in_the_arena);
    RUN(checkpoint_round_trip);
    RUN(bad_checkpoints);
    RUN(bad_targets_are_errors);
    RUN(fresh_optimizer_after_load);
    RUN(weights_used_in_place);
    return harness_finish();
}
