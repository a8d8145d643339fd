/* model.h — the network as a list of nodes over values, its parameter table and its memory plan.
 *
 * A model is built once from a unet_config into
 *   - a parameter table {name, shape} in PyTorch's state_dict order and names: it yields the
 *     checkpoint keys, the golden keys and the offsets into the parameter block;
 *   - a node list in execution order (conv, batch-norm, pool, up-conv, concat, ...), each node
 *     reading one or two values and writing one.  Backward walks it in reverse.
 * unet_model_prepare(n, h, w) propagates shapes through the nodes and plans memory: activations,
 * their gradients (training) and scratch each come from one block; no allocation happens inside
 * forward or backward.
 */
#ifndef UNET_MODEL_H
#define UNET_MODEL_H

#include "internal.h"
#include "ops/kernels.h"
#include "ops/ops.h"

/* The longest channel spec a model keeps (unet_model_set_input): 64 indices of 4 digits. */
#define UNET__CHANNELS_MAX 320

enum unet__param_kind {
    UNET__PARAM_WEIGHT,     /* trainable: in the parameter block, has a gradient */
    UNET__PARAM_BUFFER,     /* running_mean / running_var: in the buffer block */
    UNET__PARAM_COUNTER     /* num_batches_tracked: int64, one per batch-norm */
};

struct unet__param {
    char                  name[96];
    enum unet__param_kind kind;
    int                   ndim;
    int64_t               shape[4];
    size_t                numel;
    size_t                offset;   /* floats into params/buffers, or index into counters */
};

enum unet__node_op {
    UNET__NODE_CONV,        /* conv2d (+ bias) (+ relu when no batch-norm follows) */
    UNET__NODE_BN,          /* batch-norm (+ relu) */
    UNET__NODE_POOL,        /* max-pool 2x2 */
    UNET__NODE_CONVT,       /* transposed conv (+ bias) (+ relu) */
    UNET__NODE_UPSAMPLE,    /* bilinear */
    UNET__NODE_CONCAT,      /* [place(in), place(in2)] */
    UNET__NODE_DROPOUT,
    UNET__NODE_ADD,         /* in + place(in2) (FCN skip fusion) */
    UNET__NODE_CROP,        /* place(in) to a given size (FCN's final crop) */
};

/* The inference fusion plan of a node: made once per plan by unet_model_prepare (plan_fusion,
 * model_plan.c), then read by the forward pass and the memory planner, which never ask again.
 * A training plan fuses nothing: every field is -1 or false. */
struct unet__fusion {
    int  into;      /* BN, POOL, CONCAT: the convolution that runs this node in its kernel */
    int  bn;        /* CONV: the batch-norm node folded (with its ReLU) into its epilogue; the
                     * convolution writes that node's output and its own output has no memory */
    int  pool;      /* CONV (folding bn): the floor-mode max-pool node its epilogue also writes */
    int  cat;       /* CONV: the concat node whose two inputs it reads in place (never formed) */
    bool alias;     /* DROPOUT: the identity, its output is its input's memory */
};

struct unet__node {
    enum unet__node_op op;
    char               name[64];        /* module path, e.g. "down1.maxpool_conv.1.double_conv.0" */
    int                in, in2, out;    /* value ids (in2 = -1 when unused) */
    int                w, b;            /* param ids: conv/convt weight and bias, bn gamma and beta */
    int                rmean, rvar, nbt;/* bn buffers and counter */
    int                c_out;           /* output channels (conv/convt) */
    int                k, stride, pad;  /* conv/convt/pool geometry */
    bool               relu;            /* fused ReLU on the output */
    bool               align_corners;   /* upsample */
    float              p;               /* dropout probability */
    int                crop_h, crop_w;  /* CROP: offsets into the input; ADD: offsets of in2 */
    bool               center;          /* CONCAT: centre crop / F.pad; ADD/CROP: fixed offsets */
    bool               ceil_mode;       /* POOL: PyTorch's ceil_mode (FCN) */
    int                ref;             /* CROP: value whose size the output takes */
    /* Filled by prepare: */
    union {
        struct unet__conv2d_dims   conv;
        struct unet__convt2d_dims  convt;
        struct unet__bn_dims       bn;
        struct unet__pool_dims     pool;
        struct unet__upsample_dims up;
        struct unet__concat_dims   cat;
        struct unet__dropout_dims  drop;
        struct unet__add_dims      add;
    } d;
    float   *save_mean, *save_rstd;     /* bn, training */
    uint8_t *mask;                      /* pool argmax or dropout mask, training */
    struct unet__fusion fuse;           /* inference plans: what runs inside what */
    float              *scratch;        /* inference plans: a conv or transposed conv's scratch,
                                         * in the arena for the node's step (NULL: m->scratch) */
    float              *wino_u;         /* inference plans: room in the arena, free during the
                                         * node's step, for a Winograd convolution's transformed
                                         * weights when the cache has none (NULL: no room) */
    size_t              wino_u_floats;
};

struct unet__value {
    int    c, h, w;                     /* per image; the batch is the plan's n */
    float *data;                        /* (n, c, h, w) */
    float *grad;                        /* training only */
    /* Training: a batch-norm's output is kept only for the forward pass (data_fw) and
     * recomputed for backward into data_bw, which lives as long as its gradient; data points
     * to whichever is current.  NULL otherwise. */
    float *data_fw, *data_bw;
    bool   bw_ready;                    /* data_bw holds the recomputed output (in backward) */
    int    producer;                    /* node id, -1 for the input */
    int    last_use;                    /* last node reading it (n_nodes for the output) */
    int    reads;                       /* nodes' reads of it (in and in2 count one each) */
};

struct unet_model {
    unet_config         cfg;
    struct unet__param *params;
    int                 n_params;
    size_t              n_weights, n_buffers;   /* floats */
    int                 n_counters;
    float              *weights;                /* the parameter block */
    /* When the parameter block lies in the mapped checkpoint (an inference load of a file
     * whose float32 weights are one aligned run in the block's order, checkpoint.c): that
     * mapping (the whole file, private and writable: a write copies the page it touches,
     * the file never changes), unmapped with the model; weights points into it.  NULL when
     * the block is the model's own (unet__alloc). */
    unsigned char      *map;
    size_t              map_bytes;
    float              *buffers;                /* running statistics */
    int64_t            *counters;               /* num_batches_tracked */

    struct unet__node  *nodes;
    int                 n_nodes;
    struct unet__value *values;
    int                 n_values;
    int                 out_value;

    /* Memory plan for (plan_n, plan_h, plan_w). */
    bool                planned, plan_training;
    int                 plan_n, plan_h, plan_w;
    struct unet__arena  act;            /* activations (and their gradients when training) */
    float              *scratch;        /* im2col tiles, Winograd blocks */
    float              *fold;           /* inference: room for one folded batch-norm (2, C),
                                         * when the cache cannot hold it */
    size_t              scratch_floats;

    /* The precision of the products (unet_model_set_precision); each call runs on
     * unet__kernels_for(precision), so a bf16 model runs float32 where the CPU (or a UNET_CPU
     * cap) lacks AVX512_BF16. */
    enum unet__precision precision;
    /* The weights' generation: bumped by unet__model_weights_changed whenever the weights or
     * the running statistics change.  The inference cache below is valid for one generation
     * and one kernel row. */
    uint64_t             weights_gen;
    struct unet__wcache *wcache;        /* model_cache.c; NULL until the first inference */
    bool                 cache_off;     /* unet_model_set_cache(m, 0): no cache, as before it */

    /* Training state: gradients and optimizer moments share the parameter block's layout. */
    float              *grads, *opt_m, *opt_v;
    void               *snapshot;       /* running statistics and counters before a step */
    long                opt_step;
    struct unet__rng    rng;            /* dropout */
    bool                training_mode;  /* batch statistics and dropout on */
    /* The moving average of the weights (ema_w, n_weights) and of the running statistics
     * (ema_b, n_buffers), NULL when off (ema.c). */
    float              *ema_w, *ema_b;
    double              ema_decay;
    long                ema_updates;
    /* The __metadata__ pairs of the file the model was loaded from: meta[2 i] = key,
     * meta[2 i + 1] = value, one malloc'd block (checkpoint.c); NULL otherwise. */
    char              **meta;
    int                 n_meta;
    /* The input layout it was trained on (unet_model_set_input; metadata channel_axis and
     * channels, checkpoint.c): unset (zeroed) means the channel rule and every channel. */
    bool                has_input_axis;
    int                 input_axis;
    char                input_channels[UNET__CHANNELS_MAX];
    /* Optional per-node profile (bench/bench_unet.c): when non-NULL, forward adds node i's
     * seconds to prof[2 i] and backward to prof[2 i + 1] (wall clock, or the process's CPU time
     * when prof_cpu: steadier on a shared machine).  Owned by the caller. */
    double             *prof;
    bool                prof_cpu;
    /* Synchronised batch-norm (unet_model_set_bn_sum): bn_sync.fn NULL when off; its buf holds
     * 2 C + 1 doubles for the widest batch-norm (malloc'd). */
    struct unet__bn_sync bn_sync;
};

/* ---- building (model.c): the parameter table and node list, in PyTorch's module order ---- */
struct unet__builder {
    unet_model *m;
    int         cap_params, cap_nodes, cap_values;
    bool        oom;        /* an allocation failed; the build is abandoned */
};
/* Appends parameter "<prefix>.<suffix>" of ndim dimensions (d0..d3) and returns its id. */
int unet__add_param(struct unet__builder *B, const char *prefix, const char *suffix,
                    enum unet__param_kind kind, int ndim, int64_t d0, int64_t d1, int64_t d2,
                    int64_t d3);
/* Appends a value produced by node `producer` (-1: the input) and returns its id. */
int unet__add_value(struct unet__builder *B, int producer);
/* Appends a node (its out is set here) and returns its output value. */
int unet__add_node(struct unet__builder *B, struct unet__node nd);
/* A node of kind op named name reading value in; params and in2 unset (-1). */
struct unet__node unet__node_init(enum unet__node_op op, const char *name, int in);
/* PyTorch's default initialisation of a conv or transposed-conv node's weight and bias. */
void unet__init_conv_pytorch(unet_model *m, const struct unet__node *nd, struct unet__rng *rng);

/* ---- network families: what U-Net (model.c) and FCN (fcn.c) each provide ----
 * The layers above (the checkpoint loader, the converters) ask the family of a configuration
 * instead of knowing any architecture: a new family is one more of these. */

/* A checkpoint's tensor shapes by name, for inferring a configuration from a file without
 * metadata (checkpoint.c provides it): find returns the number of dimensions of tensor `name`
 * and its first four in shape, or -1 when there is no such tensor.  path labels messages. */
struct unet__shapes {
    int (*find)(const void *src, const char *name, int64_t shape[4]);
    const void *src;
    const char *path;
};
/* A dimension read from a file as an int for a configuration; -1 (invalid for every field) when
 * it is beyond any sensible size, so that a huge value cannot wrap into a valid-looking one. */
static inline int unet__dim_int(int64_t d) {
    return d >= 0 && d <= (1 << 20) ? (int)d : -1;
}

struct unet__family {
    /* The graph: input value 0, then nodes and parameters, and B->m->out_value. */
    void (*build)(struct unet__builder *B);
    /* The parameters' initial values (unet_model_create), from rng. */
    void (*init)(unet_model *m, struct unet__rng *rng);
    /* Whether a checkpoint without metadata holds this family's tensors, and its configuration
     * then (UNET_STATUS_FORMAT naming the file when a tensor it needs is missing; whether the
     * result is valid is unet__config_infer's check). */
    bool (*claims)(const struct unet__shapes *t);
    unet_status (*infer)(unet_ctx *ctx, const struct unet__shapes *t, unet_config *c);
    /* A lower bound on the trainable parameters of c (checked by unet_config_check), from its
     * largest layer: the loader refuses a small file that claims a huge network before it
     * allocates the parameter block. */
    uint64_t (*min_weights)(const unet_config *c);
    /* Whether cfg.fc_channels and cfg.learn_final_up apply (a checkpoint carries them). */
    bool fc_config;
};
extern const struct unet__family unet__unet_family; /* model.c: unet, unet-paper */
extern const struct unet__family unet__fcn_family;  /* fcn.c: fcn32s, fcn16s, fcn8s */
/* The family of arch (which unet_config_check accepted). */
const struct unet__family *unet__family_of(unet_arch arch);
/* The configuration of a checkpoint without metadata: the family that claims its tensors
 * infers it (U-Net when none does, whose message then says what is missing). */
unet_status unet__config_infer(unet_ctx *ctx, const struct unet__shapes *t, unet_config *c);
/* FCN's layers that convolutionalization adds to a classifier (fcn.c): the score_pool layers
 * at zero, every deconvolution bilinear. */
void unet__fcn_init_new_layers(unet_model *m);

/* Builds the graph and parameter table for cfg with zeroed parameters (load fills them). */
unet_status unet__model_build(unet_ctx *ctx, const unet_config *cfg, unet_model **out);
const struct unet__param *unet__model_find_param(const unet_model *m, const char *name);
/* Gives the model its own parameter block when it points into a mapped checkpoint (a copy,
 * then the mapping is released); nothing otherwise.  Training calls it before its first step:
 * it writes every weight at each step. */
unet_status unet__model_own_weights(unet_ctx *ctx, unet_model *m);
/* Pointer to a parameter's data (weights or buffers block); NULL for counters. */
float *unet__model_param_data(const unet_model *m, const struct unet__param *p);

/* ---- planning (model_plan.c; unet_model_prepare is public) ---- */
/* Frees the memory plan (activations, scratch); the model is unplanned after it. */
void unet__model_plan_free(unet_model *m);
/* n rounded up to 16 floats (64 bytes): the unit the plan places buffers in. */
static inline size_t unet__round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}
/* Floats of value v for a batch of n. */
static inline size_t unet__value_floats(const unet_model *m, int v, int n) {
    const struct unet__value *x = &m->values[v];
    return (size_t)n * x->c * x->h * x->w;
}

/* ---- the inference cache (model_cache.c) ----
 * What inference derives from the weights alone, made once and kept while they do not change:
 * each Winograd convolution's transformed weights (in the word format of the kernel row that
 * reads them) and each folded batch-norm's scale and shift.  Entries are made on first use, for
 * the generation and row of the moment; a forward with another generation or row drops them
 * all first.  Training never reads the cache: a training-mode forward and every backward
 * transform the weights of the moment in the call, and each step bumps the generation, so
 * an inference after any change (a step, a rollback, an EMA swap, a load into the model)
 * cannot see transformed weights of an older state.  Every function that writes m->weights or
 * m->buffers calls unet__model_weights_changed; tests/test_model.c's weight_cache_follows_the_
 * weights checks each of them against a fresh model.  A failed allocation leaves the entry
 * out: that convolution transforms its weights in the call, as without a cache. */
static inline void unet__model_weights_changed(unet_model *m) {
    m->weights_gen++;
}
/* Convolution node i's transformed weights for row k (NULL: its forward is not Winograd, or
 * the cache could not be allocated), valid until the next generation or row change. */
const float *unet__wcache_weights(unet_model *m, int i, const struct unet__kernels *k);
/* Convolution node i's folded batch-norm (its fusion record's bn) into f: scale (C_out) then
 * shift (C_out), from the running statistics: a = gamma / sqrt(var + eps), shift = beta +
 * (bias - mean) a, in double.  unet__wcache_fold keeps it (NULL when out of memory: the caller
 * folds into the plan's m->fold instead). */
void unet__model_fold(const unet_model *m, int i, float *f);
const float *unet__wcache_fold(unet_model *m, int i);
/* The cache's bytes (transformed weights and folds), for tests and benchmarks. */
size_t unet__wcache_bytes(const unet_model *m);
void unet__wcache_free(unet_model *m);

/* ---- running (model_run.c) ---- */
/* Forward over the planned batch: x (n, in_channels, h, w) -> returns the output value's data. */
const float *unet__model_forward(unet_model *m, const float *x);
/* Backward from dlogits (n, classes, out_h, out_w): accumulates parameter gradients into
 * m->grads (zeroed by the caller).  Needs a training plan and a training-mode forward first. */
void unet__model_backward(unet_model *m, const float *dlogits);
/* The output value (logits) of the planned batch. */
const struct unet__value *unet__model_output(const unet_model *m);
/* One update of the moving average after an optimizer step (ema.c); nothing when it is off. */
void unet__model_ema_step(unet_model *m);

#endif /* UNET_MODEL_H */
