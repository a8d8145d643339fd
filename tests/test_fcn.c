/* test_fcn.c — FCN-32s/16s/8s (src/fcn.c): crop offsets derived from the geometry, the bilinear
 * deconvolution kernels, forward and every parameter gradient of a small FCN-8s against PyTorch
 * (tools/golden/fcn.py with tools/fcn_torch.py), 16s/32s forward, a finite-difference check
 * through whole tiny networks, checkpoints (metadata and inference from a PyTorch state_dict),
 * VGG16-FCN-8s's parameter count and the convolutionalization of a classifier. */
#include "harness.h"
#include "model.h"

#include <unistd.h>

/* Whole-model tolerances.  The reference runs in float64 from the same float32 numbers, so the
 * difference is our float32 rounding: sums of ~10^4 products per value through 20 layers.
 * Gradients span four orders of magnitude between tensors (the first convs get ~1e-5, the
 * score layers ~1e-2), so each tensor's absolute bound scales with its largest entry. */
#define FWD_ATOL 2e-5
#define FWD_RTOL 1e-4
#define GRAD_REL_ATOL 1e-4  /* times max |ref| of the tensor */
#define GRAD_RTOL 1e-3

static unet_config small_cfg(unet_arch arch) {
    unet_config c = unet_config_default(arch);
    c.in_channels = 1, c.classes = 3, c.base = 2, c.fc_channels = 8;
    c.dropout = 0.0f; /* the golden's: our dropout masks cannot be PyTorch's */
    return c;
}

static const struct unet__node *find_node(const unet_model *m, const char *name) {
    for (int i = 0; i < m->n_nodes; i++)
        if (strcmp(m->nodes[i].name, name) == 0) return &m->nodes[i];
    return NULL;
}

/* Copies every parameter that st holds by name into m (shapes checked); returns the count. */
static int load_by_name(unet_model *m, const struct unet__safetensors *st) {
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        const struct unet__param *p = &m->params[i];
        const struct unet__st_tensor *t = unet__st_find(st, p->name);
        if (!t) continue;
        CHECK_EQ(unet__st_numel(t), p->numel);
        if (unet__st_numel(t) != p->numel) continue;
        unet__st_to_f32(st, t, unet__model_param_data(m, p));
        n++;
    }
    return n;
}

static float max_abs(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

/* ---------------------------------------------------------------------------------------- */

/* The crop offsets come from the coordinate mapping in fcn.c: with conv1_1's padding 100 they
 * are the reference prototxts' (and the golden's, computed by the Python twin of the mapping). */
TEST(crop_offsets_from_geometry) {
    unet_ctx *ctx = unet_ctx_create();
    struct unet__safetensors *st = golden_open("fcn");
    long long want[5] = {5, 9, 31, 27, 19};
    if (st) CHECK_EQ(golden_ints(st, "offsets", want, 5), 5);
    const struct {
        unet_arch arch;
        int       padding;
        int       pool4, pool3, final; /* -1: no such crop */
    } cases[] = {
        {UNET_ARCH_FCN8S, 100, (int)want[0], (int)want[1], (int)want[2]},
        {UNET_ARCH_FCN16S, 100, (int)want[0], -1, (int)want[3]},
        {UNET_ARCH_FCN32S, 100, -1, -1, (int)want[4]},
        {UNET_ARCH_FCN8S, 1, 5, 9, -1},   /* plain VGG padding: the output lies inside the input */
        {UNET_ARCH_FCN8S, 69, 5, 9, 0},   /* the least padding whose output covers the input */
        {UNET_ARCH_FCN32S, 90, -1, -1, 9},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unet_config c = small_cfg(cases[i].arch);
        c.padding = cases[i].padding;
        unet_model *m = NULL;
        CHECK_STATUS(unet__model_build(ctx, &c, &m), UNET_STATUS_OK);
        if (!m) continue;
        const struct unet__node *p4 = find_node(m, "fuse_pool4"), *p3 = find_node(m, "fuse_pool3");
        const struct unet__node *fin = find_node(m, "score");
        printf("       %s padding %3d: score_pool4 %2d, score_pool3 %2d, final %2d\n",
               unet_arch_name(c.arch), c.padding, p4 ? p4->crop_h : -1, p3 ? p3->crop_h : -1,
               fin ? fin->crop_h : -1);
        CHECK_EQ(p4 ? p4->crop_h : -1, cases[i].pool4);
        CHECK_EQ(p3 ? p3->crop_h : -1, cases[i].pool3);
        CHECK_EQ(fin ? fin->crop_h : -1, cases[i].final);
        if (p4) CHECK_EQ(p4->crop_w, p4->crop_h);
        if (fin) CHECK_EQ(fin->crop_w, fin->crop_h);
        unet_model_free(m);
    }
    if (st) unet__st_close(st);
    unet_ctx_free(ctx);
}

/* Which input sizes each net takes: with conv1_1's padding of 100 and ceil-mode pooling (the
 * reference's Caffe pooling), every size from 1 up, output = input, 500x500 included.
 * Plain VGG padding: a 224x224 image gives an 88x88 output (input pixels 68..155). */
TEST(input_sizes) {
    unet_ctx *ctx = unet_ctx_create();
    for (unet_arch a = UNET_ARCH_FCN32S; a <= UNET_ARCH_FCN8S; a++) {
        unet_config c = small_cfg(a);
        unet_model *m = NULL;
        CHECK_STATUS(unet__model_build(ctx, &c, &m), UNET_STATUS_OK);
        if (!m) continue;
        int refused = 0, oh = 0, ow = 0;
        for (int h = 1; h < 1 + 128; h++) {
            unet_status s = unet_model_output_size(ctx, m, h, 29, &oh, &ow);
            CHECK_STATUS(s, UNET_STATUS_OK);
            if (s == UNET_STATUS_OK) {
                CHECK_EQ(oh, h);
                CHECK_EQ(ow, 29);
            } else {
                refused++;
            }
        }
        CHECK_STATUS(unet_model_output_size(ctx, m, 500, 500, &oh, &ow), UNET_STATUS_OK);
        CHECK_EQ(oh, 500);
        printf("       %s: %d of the sizes 1..128 refused\n", unet_arch_name(a), refused);
        unet_model_free(m);
    }
    unet_config c = small_cfg(UNET_ARCH_FCN8S);
    c.padding = 1;
    unet_model *m = NULL;
    CHECK_STATUS(unet__model_build(ctx, &c, &m), UNET_STATUS_OK);
    int oh = 0, ow = 0;
    CHECK_STATUS(unet_model_output_size(ctx, m, 224, 256, &oh, &ow), UNET_STATUS_OK);
    CHECK_EQ(oh, 88);
    CHECK_EQ(ow, 120);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* The initialisation: bilinear deconvolutions (surgery.upsample_filt; size 4 gives the taps
 * 0.25 0.75 0.75 0.25), channel to channel only; zero score_pool layers; the final
 * deconvolution frozen (a buffer, not counted as trainable) unless learned. */
TEST(initialisation) {
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = small_cfg(UNET_ARCH_FCN8S);
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
    if (!m) return;
    const struct unet__param *up2 = unet__model_find_param(m, "upscore2.weight");
    const struct unet__param *up8 = unet__model_find_param(m, "upscore8.weight");
    CHECK(up2 && up2->kind == UNET__PARAM_WEIGHT && up8 && up8->kind == UNET__PARAM_BUFFER);
    if (up2 && up8) {
        const float taps4[4] = {0.25f, 0.75f, 0.75f, 0.25f};
        const float *w = unet__model_param_data(m, up2);
        int bad = 0;
        for (int ci = 0; ci < 3; ci++)
            for (int co = 0; co < 3; co++)
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) {
                        float want = ci == co ? taps4[i] * taps4[j] : 0.0f;
                        bad += w[((ci * 3 + co) * 4 + i) * 4 + j] != want;
                    }
        CHECK_EQ(bad, 0);
        /* size 16 (x8): factor 8, centre 7.5, taps (1 - |i - 7.5| / 8) = 1/16, 3/16, ..., 15/16. */
        w = unet__model_param_data(m, up8);
        bad = 0;
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) {
                double ti = 1.0 - fabs(i - 7.5) / 8, tj = 1.0 - fabs(j - 7.5) / 8;
                bad += w[((2 * 3 + 2) * 16 + i) * 16 + j] != (float)(ti * tj);
                bad += w[((2 * 3 + 1) * 16 + i) * 16 + j] != 0.0f;
            }
        CHECK_EQ(bad, 0);
        CHECK_CLOSE(w[((0 * 3 + 0) * 16 + 0) * 16 + 0], 1.0 / 256, 0, 1e-7);
    }
    const char *zero[] = {"score_pool4.weight", "score_pool4.bias", "score_pool3.weight",
                          "score_pool3.bias"};
    for (int k = 0; k < 4; k++) {
        const struct unet__param *p = unet__model_find_param(m, zero[k]);
        CHECK(p != NULL);
        if (p) CHECK_EQ(max_abs(unet__model_param_data(m, p), p->numel) == 0.0f, 1);
    }
    const struct unet__param *fc6 = unet__model_find_param(m, "fc6.weight");
    if (fc6) {
        /* PyTorch's default: uniform with bound 1/sqrt(fan_in), fan_in = 16 * 7 * 7. */
        float mx = max_abs(unet__model_param_data(m, fc6), fc6->numel);
        CHECK(mx > 0.9f / 28.0f && mx <= 1.0f / 28.0f);
    }
    size_t fixed = unet_model_param_count(m);
    unet_model_free(m);
    c.learn_final_up = 1;
    CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
    CHECK_EQ(unet_model_param_count(m), fixed + 3 * 3 * 16 * 16);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* ---------------------------------------------------------------------------------------- */

/* A small FCN-8s (base 2, fc 8, 3 classes, conv1_1 padding 100) on 2 x 37 x 45 against
 * PyTorch: training-mode logits, the cross-entropy loss and every parameter gradient, then the
 * same with a learned final deconvolution. */
TEST(fcn8s_matches_pytorch) {
    unet_ctx *ctx = unet_ctx_create();
    struct unet__safetensors *st = golden_open("fcn"), *ms = golden_open("fcn8s.model");
    if (!st || !ms) return;
    const int N = 2, H = 37, W = 45;
    size_t nx, nt, nl;
    float *x = golden_get(st, "x", &nx);
    float *tf = golden_get(st, "target", &nt);
    float *ref_logits = golden_get(st, "fcn8s.logits", &nl);
    float *ref_loss = golden_get(st, "fcn8s.loss", NULL);
    CHECK_EQ(nx, (size_t)N * H * W);
    int32_t *t = malloc(sizeof(int32_t) * nt);
    for (size_t i = 0; i < nt; i++) t[i] = (int32_t)tf[i];
    for (int learned = 0; learned <= 1; learned++) {
        unet_config c = small_cfg(UNET_ARCH_FCN8S);
        c.learn_final_up = learned;
        unet_model *m = NULL;
        CHECK_STATUS(unet__model_build(ctx, &c, &m), UNET_STATUS_OK);
        if (!m) continue;
        CHECK_EQ(load_by_name(m, ms), m->n_params);
        /* lr 0: the step leaves the weights, and the gradients stay readable in m->grads. */
        unet_optim zero = unet_optim_default(UNET_OPTIM_SGD);
        zero.lr = 0.0f;
        double loss = 0;
        CHECK_STATUS(unet_train_step(ctx, m, &zero, UNET_LOSS_CE, x, t, NULL, N, H, W, &loss),
                     UNET_STATUS_OK);
        printf("     %s final deconvolution: loss %.9f (PyTorch %.9f)\n",
               learned ? "learned" : "fixed", loss, ref_loss[0]);
        CHECK_CLOSE(loss, ref_loss[0], 1e-6, 1e-5);
        CHECK_EQ(unet__model_output(m)->h, H);
        CHECK_EQ(unet__model_output(m)->w, W);
        CHECK_TENSOR("logits (training mode)", unet__model_output(m)->data, ref_logits, nl,
                     FWD_ATOL, FWD_RTOL);
        char key[160];
        int compared = 0;
        for (int i = 0; i < m->n_params; i++) {
            const struct unet__param *p = &m->params[i];
            if (p->kind != UNET__PARAM_WEIGHT) continue;
            snprintf(key, sizeof key, "fcn8s.grad.%s", p->name);
            float *ref = golden_get(st, key, NULL);
            if (!ref) continue;
            /* Every tensor, in the first pass; the second adds the learned upscore8. */
            if (!learned || strcmp(p->name, "upscore8.weight") == 0) {
                double atol = GRAD_REL_ATOL * max_abs(ref, p->numel);
                CHECK(max_abs(ref, p->numel) > 0.0f); /* a path without gradient tests nothing */
                CHECK_TENSOR(key, m->grads + p->offset, ref, p->numel, atol, GRAD_RTOL);
                compared++;
            }
            free(ref);
        }
        CHECK_EQ(compared, learned ? 1 : m->n_params - 1); /* all but the frozen upscore8 */
        /* No batch-norm and no dropout: inference gives the same logits. */
        float *logits = test_alloc(nl);
        CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, logits), UNET_STATUS_OK);
        CHECK_TENSOR("logits (inference)", logits, ref_logits, nl, FWD_ATOL, FWD_RTOL);
        free(logits);
        unet_model_free(m);
    }
    free(x), free(tf), free(t), free(ref_logits), free(ref_loss);
    unet__st_close(st);
    unet__st_close(ms);
    unet_ctx_free(ctx);
}

/* FCN-16s and FCN-32s share the 8s model's layers by name; their final deconvolutions are our
 * own bilinear initialisation, so this also checks the kernels of size 32 and 64 against
 * surgery.upsample_filt. */
TEST(fcn16s_fcn32s_forward_match_pytorch) {
    unet_ctx *ctx = unet_ctx_create();
    struct unet__safetensors *st = golden_open("fcn"), *ms = golden_open("fcn8s.model");
    if (!st || !ms) return;
    const int N = 2, H = 37, W = 45;
    float *x = golden_get(st, "x", NULL);
    const unet_arch archs[2] = {UNET_ARCH_FCN16S, UNET_ARCH_FCN32S};
    for (int k = 0; k < 2; k++) {
        unet_config c = small_cfg(archs[k]);
        unet_model *m = NULL;
        CHECK_STATUS(unet_model_create(ctx, &c, 1, &m), UNET_STATUS_OK);
        if (!m) continue;
        CHECK_EQ(load_by_name(m, ms), m->n_params - 1); /* all but the final deconvolution */
        char key[64];
        snprintf(key, sizeof key, "%s.logits", unet_arch_name(archs[k]));
        size_t nl;
        float *ref = golden_get(st, key, &nl);
        float *logits = test_alloc((size_t)N * 3 * H * W);
        CHECK_EQ(nl, (size_t)N * 3 * H * W);
        CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, logits), UNET_STATUS_OK);
        if (ref) CHECK_TENSOR(key, logits, ref, nl, FWD_ATOL, FWD_RTOL);
        free(ref), free(logits);
        unet_model_free(m);
    }
    free(x);
    unet__st_close(st);
    unet__st_close(ms);
    unet_ctx_free(ctx);
}

/* ---------------------------------------------------------------------------------------- */

/* Finite differences through whole tiny networks in training mode (dropout on, one fixed
 * mask): backward order, the skip sums with their crops, the final crop, fused ReLUs and the
 * memory plan, every parameter tensor.
 *
 * The regime (make_smooth): a kink inside a difference step (a ReLU input crossing 0) shifts the
 * numeric slope by percents, and PyTorch's default init shrinks the signal ~10x per layer here,
 * so the first convolutions' gradients (~1e-13 through 20 layers) would drown in float32 noise.
 * So the convolutions followed by a ReLU get positive weights averaging to 1 over their fan-in
 * and bias 0.1, the input and the upstream gradient r are positive: every ReLU input is > 0.1,
 * every layer passes the signal on at about its size, and the loss is linear in each single
 * weight (exact central differences).  The score layers keep signed weights.  Max-pool ties left
 * are detected and skipped by the harness.  Exact values with PyTorch's init: the golden test. */
struct whole {
    unet_model      *m;
    float           *x, *r;
    size_t           n_out;
    struct unet__rng rng0;
};

static double whole_loss(void *ud) {
    struct whole *k = ud;
    k->m->rng = k->rng0; /* the same dropout mask every evaluation */
    const float *y = unet__model_forward(k->m, k->x);
    return dot_double(y, k->r, k->n_out);
}

static void make_smooth(unet_model *m, struct unet__rng *rng) {
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        if (nd->op != UNET__NODE_CONV) continue;
        const struct unet__param *w = &m->params[nd->w], *b = &m->params[nd->b];
        float fan_in = (float)(w->shape[1] * w->shape[2] * w->shape[3]);
        if (nd->relu) {
            fill_uniform(rng, m->weights + w->offset, w->numel, 0.5f / fan_in, 1.5f / fan_in);
            for (size_t j = 0; j < b->numel; j++) m->weights[b->offset + j] = 0.1f;
        } else {
            fill_uniform(rng, m->weights + w->offset, w->numel, -1.0f / fan_in, 1.0f / fan_in);
        }
    }
}

/* Checks up to `points` entries of every trainable tensor (all == false: only those from
 * fc6 on: the part that differs between the three nets, and what flows into it). */
static void whole_gradcheck(unet_config c, int H, int W, int points, bool all) {
    unet_ctx *ctx = unet_ctx_create();
    struct whole k = {0};
    CHECK_STATUS(unet_model_create(ctx, &c, 3, &k.m), UNET_STATUS_OK);
    if (!k.m) return;
    /* One thread: ~1000 passes of a tiny net, where a thread team's start-up dominates (the
     * result does not depend on the count). */
    const int threads = unet__threads(NULL);
    unet__use_threads(1);
    struct unet__rng rng;
    unet__rng_seed(&rng, 11);
    make_smooth(k.m, &rng);
    CHECK_STATUS(unet_model_prepare(ctx, k.m, 2, H, W, 1), UNET_STATUS_OK);
    k.m->training_mode = true;
    k.x = test_alloc((size_t)2 * c.in_channels * H * W);
    fill_uniform(&rng, k.x, (size_t)2 * c.in_channels * H * W, 0, 1);
    const struct unet__value *o = unet__model_output(k.m);
    CHECK_EQ(o->h, H);
    k.n_out = (size_t)2 * o->c * o->h * o->w;
    k.r = test_alloc(k.n_out);
    fill_uniform(&rng, k.r, k.n_out, 0, 1);
    k.rng0 = k.m->rng;
    k.m->grads = unet__calloc(k.m->n_weights, sizeof(float));
    whole_loss(&k);
    unet__model_backward(k.m, k.r);
    bool on = all;
    for (int i = 0; i < k.m->n_params; i++) {
        const struct unet__param *p = &k.m->params[i];
        on = on || strcmp(p->name, "fc6.weight") == 0;
        if (p->kind != UNET__PARAM_WEIGHT || !on) continue;
        char what[140];
        snprintf(what, sizeof what, "%s %s", unet_arch_name(c.arch), p->name);
        const float *g = k.m->grads + p->offset;
        /* Float32 noise of the loss (~1e-7 |L| / h) against gradients of 1e-3..10: an absolute
         * floor per tensor, 1e-3 of its largest entry. */
        gradcheck_at(__FILE__, __LINE__, what, k.m->weights + p->offset, g, p->numel, whole_loss,
                     &k, 1e-2f, 1e-3 * max_abs(g, p->numel), 5e-3, (size_t)points);
    }
    free(k.x), free(k.r);
    unet_model_free(k.m);
    unet_ctx_free(ctx);
    unet__use_threads(threads);
}

TEST(whole_fcn_gradcheck) {
    unet_config c = unet_config_default(UNET_ARCH_FCN8S);
    c.base = 1, c.fc_channels = 4, c.classes = 2, c.learn_final_up = 1; /* dropout 0.5 */
    whole_gradcheck(c, 27, 30, 2, true);
    c.arch = UNET_ARCH_FCN16S, c.learn_final_up = 0;
    whole_gradcheck(c, 27, 30, 2, false);
    c.arch = UNET_ARCH_FCN32S;
    whole_gradcheck(c, 26, 29, 2, false);
}

/* ---------------------------------------------------------------------------------------- */

/* A PyTorch state_dict without metadata loads as the FCN it is (arch from the score layers,
 * widths from the shapes); saved checkpoints keep fc_channels and learn_final_up. */
TEST(checkpoints) {
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = NULL, *b = NULL;
    CHECK_STATUS(unet_model_load(ctx, GOLDEN_DIR "/fcn8s.model.safetensors", &m), UNET_STATUS_OK);
    if (!m) {
        printf("  %s\n", unet_ctx_errmsg(ctx));
        return;
    }
    CHECK_EQ(m->cfg.arch, UNET_ARCH_FCN8S);
    CHECK_EQ(m->cfg.in_channels, 1);
    CHECK_EQ(m->cfg.base, 2);
    CHECK_EQ(m->cfg.fc_channels, 8);
    CHECK_EQ(m->cfg.classes, 3);
    CHECK_EQ(m->cfg.padding, 100);
    CHECK_EQ(m->cfg.learn_final_up, 0);
    struct unet__safetensors *st = golden_open("fcn");
    if (st) {
        size_t nl;
        float *x = golden_get(st, "x", NULL), *ref = golden_get(st, "fcn8s.logits", &nl);
        float *y = test_alloc(nl);
        CHECK_STATUS(unet_model_forward(ctx, m, x, 2, 37, 45, y), UNET_STATUS_OK);
        CHECK_TENSOR("logits of the inferred model", y, ref, nl, FWD_ATOL, FWD_RTOL);
        free(x), free(ref), free(y);
        unet__st_close(st);
    }
    unet_model_free(m);
    m = NULL;

    char dir[] = "/tmp/unet-fcn-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[300];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    for (unet_arch a = UNET_ARCH_FCN32S; a <= UNET_ARCH_FCN8S; a++) {
        unet_config c = small_cfg(a);
        c.padding = 96, c.fc_channels = 6, c.dropout = 0.25f;
        c.learn_final_up = a == UNET_ARCH_FCN16S;
        CHECK_STATUS(unet_model_create(ctx, &c, 5, &m), UNET_STATUS_OK);
        if (!m) continue;
        /* With metadata: the configuration round-trips exactly. */
        CHECK_STATUS(unet_model_save(ctx, m, path), UNET_STATUS_OK);
        CHECK_STATUS(unet_model_load(ctx, path, &b), UNET_STATUS_OK);
        if (b) {
            CHECK(memcmp(&b->cfg, &m->cfg, sizeof c) == 0);
            CHECK(memcmp(b->weights, m->weights, m->n_weights * sizeof(float)) == 0);
            CHECK(memcmp(b->buffers, m->buffers, m->n_buffers * sizeof(float)) == 0);
        }
        unet_model_free(b);
        b = NULL;
        /* Without: the architecture is inferred from the names. */
        struct unet__st_entry *e = calloc((size_t)m->n_params, sizeof *e);
        for (int i = 0; i < m->n_params; i++) {
            const struct unet__param *p = &m->params[i];
            e[i] = (struct unet__st_entry){.name = p->name, .dtype = UNET__DTYPE_F32,
                                           .ndim = p->ndim, .data = unet__model_param_data(m, p)};
            memcpy(e[i].shape, p->shape, sizeof p->shape);
        }
        CHECK_STATUS(unet__st_write(ctx, path, e, m->n_params, NULL, 0), UNET_STATUS_OK);
        free(e);
        CHECK_STATUS(unet_model_load(ctx, path, &b), UNET_STATUS_OK);
        if (b) {
            CHECK_EQ(b->cfg.arch, a);
            CHECK_EQ(b->cfg.fc_channels, 6);
            CHECK_EQ(b->cfg.classes, 3);
            /* 16s's learned final deconvolution (the table's last entry) loads as a buffer:
             * the trainable block is the same up to it. */
            CHECK(memcmp(b->weights, m->weights, b->n_weights * sizeof(float)) == 0);
        }
        unet_model_free(b);
        b = NULL;
        unet_model_free(m);
        m = NULL;
    }
    /* A U-Net state_dict is not taken for an FCN, nor the reverse. */
    CHECK_STATUS(unet_model_load(ctx, GOLDEN_DIR "/unet_t.model.safetensors", &m), UNET_STATUS_OK);
    if (m) CHECK_EQ(m->cfg.arch, UNET_ARCH_UNET);
    unet_model_free(m);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
    unet_ctx_free(ctx);
}

TEST(config_checks) {
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(UNET_ARCH_FCN8S);
    CHECK_EQ(c.padding, 100);
    CHECK_EQ(c.base, 64);
    CHECK_EQ(c.fc_channels, 0);
    CHECK_EQ(c.learn_final_up, 0);
    CHECK_CLOSE(c.dropout, 0.5, 0, 0);
    CHECK_STATUS(unet_config_check(ctx, &c), UNET_STATUS_OK);
    c.padding = 2000;
    CHECK_STATUS(unet_config_check(ctx, &c), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "padding");
    c = unet_config_default(UNET_ARCH_FCN16S);
    c.fc_channels = -3;
    CHECK_STATUS(unet_config_check(ctx, &c), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "fc_channels");
    c = unet_config_default(UNET_ARCH_FCN32S);
    c.learn_final_up = 2;
    CHECK_STATUS(unet_config_check(ctx, &c), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "learn_final_up");
    /* U-Net ignores the FCN fields and keeps its own padding rule. */
    c = unet_config_default(UNET_ARCH_UNET);
    c.fc_channels = -3, c.learn_final_up = 7;
    CHECK_STATUS(unet_config_check(ctx, &c), UNET_STATUS_OK);
    c.padding = 100;
    CHECK_STATUS(unet_config_check(ctx, &c), UNET_STATUS_ARG);
    unet_ctx_free(ctx);
}

/* VGG16-FCN-8s (base 64, fc 4096, RGB, 21 classes): PyTorch's sum(p.numel()) over the reference
 * module, about 134M (the fixed upscore8 is a parameter there, a buffer here). */
TEST(vgg16_param_count) {
    unet_ctx *ctx = unet_ctx_create();
    struct unet__safetensors *st = golden_open("fcn");
    double want[2] = {0, 0};
    if (st) CHECK_EQ(golden_doubles(st, "vgg16.params", want, 2), 2);
    unet_config c = unet_config_default(UNET_ARCH_FCN8S);
    c.in_channels = 3, c.classes = 21;
    unet_model *m = NULL;
    CHECK_STATUS(unet__model_build(ctx, &c, &m), UNET_STATUS_OK);
    if (m) {
        size_t trainable = unet_model_param_count(m), total = m->n_weights + m->n_buffers;
        printf("       VGG16 FCN-8s, 21 classes: %zu parameters (%zu trainable); PyTorch "
               "(tools/fcn_torch.py): %.0f (%.0f)\n", total, trainable, want[0], want[1]);
        CHECK_EQ(total, (long long)want[0]);
        CHECK_EQ(trainable, (long long)want[1]);
    }
    unet_model_free(m);
    if (st) unet__st_close(st);
    unet_ctx_free(ctx);
}

/* ---------------------------------------------------------------------------------------- */

/* The value a node named `name` writes, after a forward pass. */
static const struct unet__value *value_of(const unet_model *m, const char *name) {
    const struct unet__node *nd = find_node(m, name);
    return nd ? &m->values[nd->out] : NULL;
}

/* Convolutionalization (section 3.1): a tiny VGG classifier (base 2, fc 8, 3 classes, PyTorch)
 * becomes an FCN whose score_fr on the same 224x224 image is a 1x1 map holding the classifier's
 * logits; on 256x256 it is a 2x2 map of class scores, each the classifier's head (fc6, fc7, fc8)
 * on one 7x7 window of the pool5 features: the classifier slid over the image in 32-pixel
 * steps.  (Not exactly the classifier run on each 224x224 crop: the padded 3x3 convolutions of
 * a crop see zeros at its border where the whole image has pixels; printed for reference.) */
TEST(convolutionalization) {
    unet_ctx *ctx = unet_ctx_create();
    struct unet__safetensors *st = golden_open("convolutionalize");
    if (!st) return;
    char dir[] = "/tmp/unet-conv-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[300];
    snprintf(path, sizeof path, "%s/fcn.safetensors", dir);
    size_t nu;
    float *u8 = golden_get(st, "x_u8", &nu);
    float *ref224 = golden_get(st, "logits224", NULL), *ref256 = golden_get(st, "map256", NULL);
    CHECK_EQ(nu, (size_t)256 * 256);
    float *x256 = test_alloc(nu), *x224 = test_alloc((size_t)224 * 224);
    for (size_t i = 0; i < nu; i++) x256[i] = u8[i] / 64.0f - 2.0f;
    for (int i = 0; i < 224; i++) memcpy(x224 + i * 224, x256 + i * 256, 224 * sizeof(float));

    for (unet_arch a = UNET_ARCH_FCN32S; a <= UNET_ARCH_FCN8S; a++) {
        unet_config c = unet_config_default(a);
        c.padding = 1;  /* the classifier's own */
        c.classes = 0;  /* keep fc8 */
        /* Dropout is the identity in inference, but the training plan used below (it keeps
         * score_fr's value readable) would leave a dropout node's output unwritten in
         * inference mode: model.c's forward relies on the inference plan's aliasing. */
        c.dropout = 0.0f;
        CHECK_STATUS(unet_convolutionalize(ctx, GOLDEN_DIR "/classifier.safetensors", &c, path),
                     UNET_STATUS_OK);
        unet_model *m = NULL;
        CHECK_STATUS(unet_model_load(ctx, path, &m), UNET_STATUS_OK);
        if (!m) {
            printf("  %s\n", unet_ctx_errmsg(ctx));
            continue;
        }
        CHECK_EQ(m->cfg.arch, a);
        CHECK_EQ(m->cfg.base, 2);
        CHECK_EQ(m->cfg.fc_channels, 8);
        CHECK_EQ(m->cfg.classes, 3);
        CHECK_EQ(m->cfg.padding, 1);
        const struct unet__param *fc6 = unet__model_find_param(m, "fc6.weight");
        CHECK(fc6 && fc6->ndim == 4 && fc6->shape[1] == 16 && fc6->shape[2] == 7);

        /* A training plan keeps every value (an inference plan reuses score_fr's memory). */
        CHECK_STATUS(unet_model_prepare(ctx, m, 1, 224, 224, 1), UNET_STATUS_OK);
        m->training_mode = false;
        unet__model_forward(m, x224);
        const struct unet__value *s = value_of(m, "score_fr");
        CHECK(s && s->c == 3 && s->h == 1 && s->w == 1);
        if (s && ref224) {
            printf("       %s score_fr on 224x224: %.7f %.7f %.7f, classifier %.7f %.7f %.7f\n",
                   unet_arch_name(a), s->data[0], s->data[1], s->data[2], ref224[0], ref224[1],
                   ref224[2]);
            CHECK_TENSOR("score_fr 1x1 vs classifier logits", s->data, ref224, 3, 1e-5, 1e-4);
        }
        CHECK_STATUS(unet_model_prepare(ctx, m, 1, 256, 256, 1), UNET_STATUS_OK);
        unet__model_forward(m, x256);
        s = value_of(m, "score_fr");
        CHECK(s && s->c == 3 && s->h == 2 && s->w == 2);
        if (s && ref256) {
            CHECK_TENSOR("score_fr 2x2 vs sliding classifier head", s->data, ref256, 12, 1e-5,
                         1e-4);
            if (a == UNET_ARCH_FCN8S)
                printf("       map(0,0) - classifier(top-left 224 crop): %.3g %.3g %.3g "
                       "(border effects of the padded convolutions)\n",
                       s->data[0] - ref224[0], s->data[4] - ref224[1], s->data[8] - ref224[2]);
        }
        unet_model_free(m);
    }

    /* Other class counts discard fc8: score_fr starts at zero (the paper's new score layer). */
    unet_config c = unet_config_default(UNET_ARCH_FCN8S);
    c.classes = 5;
    CHECK_STATUS(unet_convolutionalize(ctx, GOLDEN_DIR "/classifier.safetensors", &c, path),
                 UNET_STATUS_OK);
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_load(ctx, path, &m), UNET_STATUS_OK);
    if (m) {
        const struct unet__param *p = unet__model_find_param(m, "score_fr.weight");
        CHECK(p && p->shape[0] == 5 && max_abs(unet__model_param_data(m, p), p->numel) == 0.0f);
        CHECK_EQ(m->cfg.padding, 100);
        p = unet__model_find_param(m, "conv5_3.bias");
        CHECK(p && max_abs(unet__model_param_data(m, p), p->numel) > 0.0f);
    }
    unet_model_free(m);

    /* Refusals: not a classifier, an unexpected tensor, a U-Net arch. */
    CHECK_STATUS(unet_convolutionalize(ctx, GOLDEN_DIR "/conv.safetensors", &c, path),
                 UNET_STATUS_FORMAT);
    printf("       %s\n", unet_ctx_errmsg(ctx));
    CHECK_STATUS(unet_convolutionalize(ctx, GOLDEN_DIR "/fcn8s.model.safetensors", &c, path),
                 UNET_STATUS_FORMAT);
    printf("       %s\n", unet_ctx_errmsg(ctx));
    c.arch = UNET_ARCH_UNET;
    CHECK_STATUS(unet_convolutionalize(ctx, GOLDEN_DIR "/classifier.safetensors", &c, path),
                 UNET_STATUS_ARG);
    c.arch = UNET_ARCH_FCN32S;
    c.classes = 0;
    /* A classifier with an extra tensor. */
    struct unet__safetensors *cl = NULL;
    CHECK_STATUS(unet__st_open(ctx, GOLDEN_DIR "/classifier.safetensors", &cl), UNET_STATUS_OK);
    if (cl) {
        struct unet__st_entry *e = calloc((size_t)cl->count + 1, sizeof *e);
        for (int i = 0; i < cl->count; i++) {
            const struct unet__st_tensor *t = &cl->tensors[i];
            e[i] = (struct unet__st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim,
                                           .data = unet__st_data(cl, t)};
            memcpy(e[i].shape, t->shape, sizeof t->shape);
        }
        e[cl->count] = e[cl->count - 1];
        e[cl->count].name = "classifier.extra";
        char bad[300];
        snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
        CHECK_STATUS(unet__st_write(ctx, bad, e, cl->count + 1, NULL, 0), UNET_STATUS_OK);
        CHECK_STATUS(unet_convolutionalize(ctx, bad, &c, path), UNET_STATUS_FORMAT);
        CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "classifier.extra");
        free(e);
        unet__st_close(cl);
    }
    free(u8), free(ref224), free(ref256), free(x224), free(x256);
    unet__st_close(st);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
    unet_ctx_free(ctx);
}

int main(void) {
    RUN(crop_offsets_from_geometry);
    RUN(input_sizes);
    RUN(initialisation);
    RUN(config_checks);
    RUN(vgg16_param_count);
    RUN(fcn8s_matches_pytorch);
    RUN(fcn16s_fcn32s_forward_match_pytorch);
    RUN(checkpoints);
    RUN(convolutionalization);
    RUN(whole_fcn_gradcheck);
    return harness_finish();
}
