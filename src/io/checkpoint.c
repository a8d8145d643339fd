/* checkpoint.c — models to and from safetensors, with PyTorch's state_dict names.
 *
 * A checkpoint holds every entry of the parameter table (weights and running statistics as F32,
 * num_batches_tracked as a 0-dimensional I64, exactly as torch.save of a state_dict converted by
 * safetensors.torch.save_file) and the architecture as __metadata__ strings:
 *     format=unet format_version unet_version arch=unet|unet-paper|fcn8s.. in_channels classes
 *     base depth up=transpose|bilinear conv_bias batchnorm padding dropout init train_steps
 * and, for FCN only, fc_channels learn_final_up; when set, the input layout channel_axis and
 * channels (unet_model_set_input); a caller may add keys (unet train's `selected`),
 * and every key of a loaded file is kept on the model (unet_model_meta).  A resumable checkpoint
 * adds optimizer.* tensors (the moments, and the moving average with ema_decay, ema_updates).
 * A checkpoint converted from PyTorch has no metadata; the architecture is then inferred from
 * the names and shapes by the network families (unet__config_infer, model.h) and every tensor
 * is still checked against it.
 * Loading is strict, like load_state_dict(strict=True): a missing, unexpected, misshapen or
 * non-float tensor is an error naming the tensor.
 */
#include "io/checkpoint.h"
#include "io/file.h"
#include "io/safetensors.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool parse_int(const char *s, int *out) {
    if (!s || !*s) return false;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < -1000000 || v > 1000000) return false;
    *out = (int)v;
    return true;
}

/* The architecture from __metadata__; UNET_STATUS_FORMAT naming the key when a value is bad. */
static unet_status config_from_meta(unet_ctx *ctx, const struct unet__safetensors *st,
                                    unet_config *c) {
    unet_status s = unet_arch_parse(ctx, unet__st_meta(st, "arch"), &c->arch);
    if (s != UNET_STATUS_OK)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata: %s", st->path,
                          unet_ctx_errmsg(ctx));
    *c = unet_config_default(c->arch);
    struct {
        const char *key;
        int        *dst;
    } ints[] = {{"in_channels", &c->in_channels}, {"classes", &c->classes}, {"base", &c->base},
                {"depth", &c->depth}, {"conv_bias", &c->conv_bias}, {"batchnorm", &c->batchnorm},
                {"padding", &c->padding}, {"fc_channels", &c->fc_channels},
                {"learn_final_up", &c->learn_final_up}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        const char *v = unet__st_meta(st, ints[i].key);
        if (v && !parse_int(v, ints[i].dst))
            return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata %s='%s' is not an integer",
                              st->path, ints[i].key, v);
    }
    const char *up = unet__st_meta(st, "up");
    if (up) {
        if (strcmp(up, "bilinear") == 0) c->up = UNET_UP_BILINEAR;
        else if (strcmp(up, "transpose") == 0) c->up = UNET_UP_TRANSPOSE;
        else return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata up='%s'", st->path, up);
    }
    const char *drop = unet__st_meta(st, "dropout");
    if (drop) {
        char *end;
        c->dropout = strtof(drop, &end);
        if (*end) return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata dropout='%s'", st->path, drop);
    }
    const char *init = unet__st_meta(st, "init");
    if (init) c->init = strcmp(init, "he") == 0 ? UNET_INIT_HE : UNET_INIT_PYTORCH;
    return UNET_STATUS_OK;
}

/* The metadata keys with a fixed set of values: a value outside it is refused, never read as
 * something else (batchnorm="7" used to mean 7; an unknown init meant PyTorch's). */
static unet_status check_meta_values(unet_ctx *ctx, const struct unet__safetensors *st) {
    static const struct {
        const char *key, *values[3];
    } known[] = {{"batchnorm", {"0", "1"}},     {"conv_bias", {"0", "1"}},
                 {"learn_final_up", {"0", "1"}}, {"init", {"he", "pytorch"}},
                 {"up", {"transpose", "bilinear"}}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        const char *v = unet__st_meta(st, known[i].key);
        if (!v) continue;
        bool ok = false;
        for (int k = 0; k < 3 && known[i].values[k]; k++) ok |= strcmp(v, known[i].values[k]) == 0;
        if (!ok)
            return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata %s='%s' (expected '%s' or '%s')",
                              st->path, known[i].key, v, known[i].values[0], known[i].values[1]);
    }
    return UNET_STATUS_OK;
}

/* The checkpoint format: format_version counts changes to what the keys and tensors mean.  A
 * unet reads every format up to its own (a file without the key is format 1: unet before the
 * key, or PyTorch); a newer unet may add keys within a format, which an older one keeps and
 * ignores; a change an older unet would misread raises the format, and the older one refuses
 * the file, naming the version that wrote it.  unet_version is informational. */
#define FORMAT_VERSION 1

static unet_status check_format_version(unet_ctx *ctx, const struct unet__safetensors *st) {
    const char *v = unet__st_meta(st, "format_version");
    if (!v) return UNET_STATUS_OK;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (v[0] < '1' || v[0] > '9' || *end || errno)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata format_version='%s' is not a "
                          "positive integer", st->path, v);
    if (n > FORMAT_VERSION) {
        const char *by = unet__st_meta(st, "unet_version");
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: checkpoint format %ld (written by unet "
                          "%s), but this unet (%s) reads formats up to %d: update unet to load it",
                          st->path, n, by ? by : "of an unknown version", UNET_VERSION,
                          FORMAT_VERSION);
    }
    return UNET_STATUS_OK;
}

/* The input layout keys (unet_model_set_input), checked as strictly as the architecture. */
static unet_status load_input(unet_ctx *ctx, const struct unet__safetensors *st, unet_model *m) {
    const char *axis = unet__st_meta(st, "channel_axis"), *ch = unet__st_meta(st, "channels");
    int a = UNET_CHANNEL_AXIS_AUTO;
    if (axis && unet_channel_axis_parse(ctx, axis, &a) != UNET_STATUS_OK)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata channel_axis='%s' (expected "
                          "first, last, none, auto or an axis -3..2)", st->path, axis);
    if (unet_model_set_input(ctx, m, a, ch) != UNET_STATUS_OK)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata: %s", st->path,
                          unet_ctx_errmsg(ctx));
    return UNET_STATUS_OK;
}

unet_status unet_model_set_input(unet_ctx *ctx, unet_model *m, int channel_axis,
                                 const char *channels) {
    if (!m) return unet__fail(ctx, UNET_STATUS_ARG, "unet_model_set_input: model is NULL");
    char name[8];
    if (strcmp(unet_channel_axis_name(channel_axis, name), "?") == 0)
        return unet__fail(ctx, UNET_STATUS_ARG, "channel_axis %d: expected -3..2, auto or none",
                          channel_axis);
    int c = 0;
    if (channels && strcmp(channels, "all") == 0) channels = NULL;
    if (channels && strlen(channels) >= sizeof m->input_channels)
        return unet__fail(ctx, UNET_STATUS_ARG, "channels: a spec of %zu characters is too long",
                          strlen(channels));
    unet_status s = unet_channels_count(ctx, channels, 0, NULL, &c);
    if (s != UNET_STATUS_OK) return s;
    if (channels && c != m->cfg.in_channels)
        return unet__fail(ctx, UNET_STATUS_ARG, "channels='%s' gives %d channel%s, but the model "
                          "takes %d", channels, c, c == 1 ? "" : "s", m->cfg.in_channels);
    m->has_input_axis = channel_axis != UNET_CHANNEL_AXIS_AUTO;
    m->input_axis = channel_axis;
    snprintf(m->input_channels, sizeof m->input_channels, "%s", channels ? channels : "");
    return UNET_STATUS_OK;
}

void unet_model_input(const unet_model *m, int *channel_axis, const char **channels) {
    if (channel_axis)
        *channel_axis = m && m->has_input_axis ? m->input_axis : UNET_CHANNEL_AXIS_AUTO;
    if (channels) *channels = m && m->input_channels[0] ? m->input_channels : NULL;
}

/* Tensor shapes for unet__config_infer (model.h, struct unet__shapes). */
static int st_shape(const void *src, const char *name, int64_t shape[4]) {
    const struct unet__st_tensor *t = unet__st_find(src, name);
    if (!t) return -1;
    for (int i = 0; i < 4; i++) shape[i] = i < t->ndim ? t->shape[i] : 0;
    return t->ndim;
}

/* The strict reading of m's parameters from st, the one every loader goes through
 * (unet_model_load, unet__model_read_weights): each parameter from the tensor map names (by
 * default its own name and shape), a missing, misshapen or non-float tensor an error naming
 * it; then every tensor of st must have been read or be one the map expects all the same.
 * `what` ends the message about an unexpected tensor ("for <what>"). */
static unet_status read_params(unet_ctx *ctx, const struct unet__safetensors *st, const char *path,
                               unet_model *m, const struct unet__weights_map *map,
                               const char *what) {
    bool *used = calloc((size_t)st->count + 1, sizeof *used);
    if (!used) return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
    unet_status s = UNET_STATUS_OK;
    for (int i = 0; i < m->n_params && s == UNET_STATUS_OK; i++) {
        const struct unet__param *p = &m->params[i];
        const char *name = p->name;
        int64_t     shape[4];
        int         ndim = p->ndim;
        memcpy(shape, p->shape, sizeof shape);
        if (map && map->source && !map->source(map->user, p, &name, shape, &ndim)) continue;
        const struct unet__st_tensor *t = unet__st_find(st, name);
        if (t) used[t - st->tensors] = true;
        if (p->kind != UNET__PARAM_COUNTER) /* weights in the mapped file: only checked */
            s = unet__st_read_f32(ctx, st, name, shape, ndim,
                                  p->kind == UNET__PARAM_WEIGHT && m->map
                                      ? NULL
                                      : unet__model_param_data(m, p));
        else if (!t)
            s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s' is missing", path, name);
        else if (unet__st_numel(t) != 1 || t->ndim > 1 ||
                 (t->dtype != UNET__DTYPE_I64 && t->dtype != UNET__DTYPE_I32))
            s = unet__fail(ctx, UNET_STATUS_FORMAT,
                           "%s: %s: expected an int64 scalar, got %s with %zu elements", path, name,
                           unet__dtype_name(t->dtype), unet__st_numel(t));
        else
            unet__st_to_i64(st, t, &m->counters[p->offset]);
    }
    for (int i = 0; i < st->count && s == UNET_STATUS_OK; i++)
        if (!used[i] && !(map && map->extra && map->extra(map->user, st->tensors[i].name)))
            s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: unexpected tensor '%s' for %s", path,
                           st->tensors[i].name, what);
    free(used);
    return s;
}

static bool parse_hex64(const char *s, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

/* Is parameter j a batch-norm node's running variance (as the graph records it, whatever its
 * name)? */
static bool is_running_var(const unet_model *m, int j) {
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == UNET__NODE_BN && m->nodes[i].rvar == j) return true;
    return false;
}

/* Inference folds each batch-norm into the convolution before it (model.c, conv_bn_forward):
 * scale a = gamma / sqrt(var + eps), shift = beta + (bias - mean) * a.  Finite weights can
 * still fold to values beyond float (a weight of 3e38 over a small variance): every output
 * would then be Inf or NaN, so such a checkpoint is refused, naming the layer and channel. */
static unet_status check_folded_bn(unet_ctx *ctx, const char *path, const unet_model *m) {
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *bn = &m->nodes[i];
        if (bn->op != UNET__NODE_BN) continue;
        const int prod = m->values[bn->in].producer;
        const struct unet__param *rm = &m->params[bn->rmean];
        const float *gamma = bn->w >= 0 ? unet__model_param_data(m, &m->params[bn->w]) : NULL;
        const float *beta = bn->b >= 0 ? unet__model_param_data(m, &m->params[bn->b]) : NULL;
        const float *bias = prod >= 0 && m->nodes[prod].op == UNET__NODE_CONV && m->nodes[prod].b >= 0
                                ? unet__model_param_data(m, &m->params[m->nodes[prod].b])
                                : NULL;
        const float *mean = unet__model_param_data(m, rm);
        const float *var = unet__model_param_data(m, &m->params[bn->rvar]);
        for (size_t c = 0; c < rm->numel; c++) {
            double a = (gamma ? gamma[c] : 1.0) / sqrt((double)var[c] + 1e-5);
            double shift = (beta ? beta[c] : 0.0) + ((bias ? bias[c] : 0.0) - mean[c]) * a;
            if (!(fabs(a) <= FLT_MAX && fabs(shift) <= FLT_MAX))
                return unet__fail(ctx, UNET_STATUS_NUMERIC,
                                  "%s: %s folds to a scale of %g and a shift of %g at channel %zu "
                                  "for inference, beyond float range (weight %g, running variance "
                                  "%g): every output would be Inf or NaN",
                                  path, bn->name, a, shift, c, gamma ? (double)gamma[c] : 1.0,
                                  (double)var[c]);
        }
    }
    return UNET_STATUS_OK;
}

/* The moving average of a resumable checkpoint (ema.c), when it has one: metadata ema_decay
 * (0 < d < 1) and ema_updates (>= 0), tensors optimizer.ema (the weights' layout) and
 * optimizer.ema_buffers (the running statistics'; absent without batch-norm), finite. */
static unet_status load_ema(unet_ctx *ctx, const struct unet__safetensors *st, unet_model *m) {
    const char *dv = unet__st_meta(st, "ema_decay"), *uv = unet__st_meta(st, "ema_updates");
    if (!dv && !uv) return UNET_STATUS_OK;
    char *end = NULL;
    double decay = dv ? strtod(dv, &end) : NAN;
    if (!dv || end == dv || *end || !(decay > 0 && decay < 1))
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata ema_decay='%s' is not in (0, 1)",
                          st->path, dv ? dv : "(missing)");
    long updates = uv ? strtol(uv, &end, 10) : -1;
    if (!uv || end == uv || *end || updates < 0 || updates == LONG_MAX)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: metadata ema_updates='%s' is not a non-negative integer", st->path,
                          uv ? uv : "(missing)");
    unet_status s = unet_model_ema_enable(ctx, m, decay);
    if (s != UNET_STATUS_OK) return s;
    int64_t shape[1] = {(int64_t)m->n_weights};
    s = unet__st_read_f32(ctx, st, "optimizer.ema", shape, 1, m->ema_w);
    if (s == UNET_STATUS_OK && m->n_buffers) {
        shape[0] = (int64_t)m->n_buffers;
        s = unet__st_read_f32(ctx, st, "optimizer.ema_buffers", shape, 1, m->ema_b);
    }
    if (s != UNET_STATUS_OK) return s;
    size_t i = unet__first_nonfinite(m->ema_w, m->n_weights, false);
    if (i < m->n_weights)
        return unet__fail(ctx, UNET_STATUS_NUMERIC, "%s: optimizer.ema holds %g at index %zu",
                          st->path, (double)m->ema_w[i], i);
    i = unet__first_nonfinite(m->ema_b, m->n_buffers, false);
    if (i < m->n_buffers)
        return unet__fail(ctx, UNET_STATUS_NUMERIC, "%s: optimizer.ema_buffers holds %g at index %zu",
                          st->path, (double)m->ema_b[i], i);
    m->ema_updates = updates;
    return UNET_STATUS_OK;
}

/* A copy of the file's metadata pairs on the model, one block (unet_model_meta). */
static unet_status keep_meta(unet_ctx *ctx, const struct unet__safetensors *st, unet_model *m) {
    size_t bytes = sizeof(char *) * 2 * (size_t)st->meta_count;
    for (int i = 0; i < 2 * st->meta_count; i++) bytes += strlen(st->meta[i]) + 1;
    m->meta = malloc(bytes ? bytes : 1);
    if (!m->meta) return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", st->path);
    char *p = (char *)(m->meta + 2 * st->meta_count);
    for (int i = 0; i < 2 * st->meta_count; i++) {
        size_t k = strlen(st->meta[i]) + 1;
        memcpy(p, st->meta[i], k);
        m->meta[i] = p;
        p += k;
    }
    m->n_meta = st->meta_count;
    return UNET_STATUS_OK;
}

const char *unet_model_meta(const unet_model *m, const char *key) {
    if (!m || !key) return NULL;
    for (int i = 0; i < m->n_meta; i++)
        if (strcmp(m->meta[2 * i], key) == 0) return m->meta[2 * i + 1];
    return NULL;
}

/* The optimizer state of a resumable checkpoint into m (allocated here).  The moments must be
 * finite and the second moment non-negative: Adam divides by its square root, so a corrupt
 * value would turn every later step into NaN. */
static unet_status load_optimizer(unet_ctx *ctx, const struct unet__safetensors *st, unet_model *m) {
    int64_t shape[1] = {(int64_t)m->n_weights};
    m->grads = unet__calloc(m->n_weights, sizeof(float));
    m->opt_m = unet__calloc(m->n_weights, sizeof(float));
    m->opt_v = unet__calloc(m->n_weights, sizeof(float));
    if (!m->grads || !m->opt_m || !m->opt_v)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory for the optimizer state", st->path);
    unet_status s = unet__st_read_f32(ctx, st, "optimizer.exp_avg", shape, 1, m->opt_m);
    if (s == UNET_STATUS_OK) s = unet__st_read_f32(ctx, st, "optimizer.exp_avg_sq", shape, 1, m->opt_v);
    if (s != UNET_STATUS_OK)
        return unet__fail(ctx, s, "%s (not a resumable checkpoint?)", unet_ctx_errmsg(ctx));
    size_t i = unet__first_nonfinite(m->opt_m, m->n_weights, false);
    if (i < m->n_weights)
        return unet__fail(ctx, UNET_STATUS_NUMERIC, "%s: optimizer.exp_avg holds %g at index %zu",
                          st->path, (double)m->opt_m[i], i);
    i = unet__first_nonfinite(m->opt_v, m->n_weights, true);
    if (i < m->n_weights)
        return unet__fail(ctx, UNET_STATUS_NUMERIC,
                          "%s: optimizer.exp_avg_sq holds %g at index %zu (must be finite and >= 0)",
                          st->path, (double)m->opt_v[i], i);
    const char *r0 = unet__st_meta(st, "rng0"), *r1 = unet__st_meta(st, "rng1");
    uint64_t w[4];
    if (!r0 || !r1 || strlen(r0) != 32 || strlen(r1) != 32 || !parse_hex64(r0, &w[0]) ||
        !parse_hex64(r0 + 16, &w[1]) || !parse_hex64(r1, &w[2]) || !parse_hex64(r1 + 16, &w[3]))
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata rng0/rng1 missing or malformed",
                          st->path);
    memcpy(m->rng.s, w, sizeof w);
    return load_ema(ctx, st, m);
}

/* A resumable checkpoint's optimizer state, read by load_optimizer (the parameters' reading
 * leaves it). */
static bool is_optimizer_tensor(void *user, const char *name) {
    (void)user;
    return strncmp(name, "optimizer.", 10) == 0;
}

void unet__st_entry_of_param(const unet_model *m, const struct unet__param *p,
                             struct unet__st_entry *e) {
    e->name = p->name;
    e->ndim = p->ndim;
    memcpy(e->shape, p->shape, sizeof p->shape);
    if (p->kind == UNET__PARAM_COUNTER) {
        e->dtype = UNET__DTYPE_I64;
        e->data = &m->counters[p->offset];
    } else {
        e->dtype = UNET__DTYPE_F32;
        e->data = unet__model_param_data(m, p);
    }
}

/* Where m's parameter block lies in st's mapping, or NULL: every trainable parameter a
 * float32 tensor of its own name and size, one after the other in the block's order (as
 * save() writes them), from an address with unet__alloc's alignment. */
static float *weights_in_file(const struct unet__safetensors *st, const unet_model *m) {
    if (!st->mapped || m->n_weights == 0) return NULL;
    const unsigned char *base = NULL;
    for (int i = 0; i < m->n_params; i++) {
        const struct unet__param     *p = &m->params[i];
        const struct unet__st_tensor *t;
        if (p->kind != UNET__PARAM_WEIGHT) continue;
        if (!(t = unet__st_find(st, p->name)) || t->dtype != UNET__DTYPE_F32 ||
            t->nbytes != p->numel * sizeof(float))
            return NULL;
        const unsigned char *d = unet__st_data(st, t);
        if (!base) base = d; /* the first trainable parameter is at offset 0 */
        if (d != base + p->offset * sizeof(float)) return NULL;
    }
    return (uintptr_t)base % UNET__ST_DATA_ALIGN ? NULL : (float *)(uintptr_t)base;
}

/* An inference load points the model's weights into the mapped file instead of copying them
 * (124 MB of memory the process would touch for the first time: the kernel zeroes every page
 * of it).  The mapping becomes the model's and private-writable: whatever writes the weights
 * later (a training step, an EMA swap) writes its own copy of a page, never the file.  The
 * parse checked every tensor against the file's size; the file must then not be truncated or
 * rewritten in place while the model lives (unet writes files by rename, which leaves it
 * intact; docs/checkpoints.md).  Any other file, or a system that refuses, gets the copy. */
static void use_mapped_weights(struct unet__safetensors *st, unet_model *m) {
    float *w = weights_in_file(st, m);
    if (!w || !unet__map_writable(st->buf, st->size)) return;
    unet__free(m->weights);
    m->weights = w;
    m->map = st->buf;
    m->map_bytes = st->size;
    st->kept = true;
}

/* The model in st (opened from `path`, a name for messages). */
static unet_status load_st(unet_ctx *ctx, struct unet__safetensors *st, const char *path,
                           unet_model **out, bool training, unet_meta_fn meta_fn, void *user) {
    unet_model *m = NULL;
    size_t     *bad = NULL; /* per parameter: its first non-finite element, or its size */
    unet_config cfg;
    const struct unet__shapes shapes = {st_shape, st, st->path};
    unet__use_threads(unet__threads(ctx)); /* the copy and the scan of the parameters */
    unet_status s = check_format_version(ctx, st);
    if (s == UNET_STATUS_OK) s = check_meta_values(ctx, st);
    if (s == UNET_STATUS_OK)
        s = unet__st_meta(st, "arch") ? config_from_meta(ctx, st, &cfg)
                                      : unet__config_infer(ctx, &shapes, &cfg);
    if (s != UNET_STATUS_OK) goto fail;
    if (unet_config_check(ctx, &cfg) != UNET_STATUS_OK) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata: %s", path,
                       unet_ctx_errmsg(ctx));
        goto fail;
    }
    /* Every parameter takes at least 2 bytes (F16/BF16) in a file: refuse a small file that
     * claims a huge network before its parameter block is allocated. */
    uint64_t need = unet__family_of(cfg.arch)->min_weights(&cfg);
    if (need > (st->size - st->data_start) / 2) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT,
                       "%s: a %s with base %d and depth %d has over %llu parameters, but the file "
                       "holds only %zu bytes of tensor data (wrong metadata or truncated file)",
                       path, unet_arch_name(cfg.arch), cfg.base, cfg.depth,
                       (unsigned long long)need, st->size - st->data_start);
        goto fail;
    }
    s = unet__model_build(ctx, &cfg, &m);
    if (s != UNET_STATUS_OK) {
        unet__fail(ctx, s == UNET_STATUS_NOMEM ? s : UNET_STATUS_FORMAT, "%s: %s", path,
                   unet_ctx_errmsg(ctx));
        s = s == UNET_STATUS_NOMEM ? s : UNET_STATUS_FORMAT;
        goto fail;
    }
    char what[160];
    snprintf(what, sizeof what, "a %s (base %d, depth %d): the architecture does not match",
             unet_arch_name(cfg.arch), cfg.base, cfg.depth);
    if (!training) use_mapped_weights(st, m);
    const struct unet__weights_map keep_optimizer = {.extra = is_optimizer_tensor};
    s = read_params(ctx, st, path, m, &keep_optimizer, what);
    if (s != UNET_STATUS_OK) goto fail;
    /* Non-finite weights or running statistics (or a negative running variance, whose square
     * root batch-norm takes) would silently produce NaN masks: refuse them here.  The scan
     * of the parameters runs over the threads; the first bad one is reported. */
    if (!(bad = malloc(sizeof *bad * (size_t)m->n_params))) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
        goto fail;
    }
#pragma omp parallel for schedule(dynamic)
    for (int j = 0; j < m->n_params; j++) {
        const struct unet__param *p = &m->params[j];
        bad[j] = p->kind == UNET__PARAM_COUNTER
                     ? p->numel
                     : unet__first_nonfinite(unet__model_param_data(m, p), p->numel,
                                             is_running_var(m, j));
    }
    for (int j = 0; j < m->n_params; j++) {
        const struct unet__param *p = &m->params[j];
        if (p->kind == UNET__PARAM_COUNTER) continue;
        bool var = is_running_var(m, j);
        const float *d = unet__model_param_data(m, p);
        size_t i = bad[j];
        if (i < p->numel) {
            s = unet__fail(ctx, UNET_STATUS_NUMERIC, "%s: %s holds %g at index %zu%s", path,
                           p->name, (double)d[i], i, var ? " (a variance must be >= 0)" : "");
            goto fail;
        }
    }
    s = check_folded_bn(ctx, path, m);
    if (s != UNET_STATUS_OK) goto fail;
    const char *steps = unet__st_meta(st, "train_steps");
    if (steps) {
        char *end;
        long v = strtol(steps, &end, 10);
        if (end == steps || *end || v < 0 || v > UNET_MAX_STEPS) {
            s = unet__fail(ctx, UNET_STATUS_FORMAT,
                           "%s: metadata train_steps='%s' is not an integer in 0..%ld", path,
                           steps, UNET_MAX_STEPS);
            goto fail;
        }
        m->opt_step = v;
    }
    unet__rng_seed(&m->rng, 0x5eed5eed5eedULL);
    s = keep_meta(ctx, st, m);
    if (s == UNET_STATUS_OK) s = load_input(ctx, st, m);
    if (s != UNET_STATUS_OK) goto fail;
    if (training) {
        s = load_optimizer(ctx, st, m);
        if (s != UNET_STATUS_OK) goto fail;
        if (meta_fn)
            for (int i = 0; i < st->meta_count; i++) meta_fn(st->meta[2 * i], st->meta[2 * i + 1], user);
    }
    free(bad);
    *out = m;
    return UNET_STATUS_OK;
fail:
    free(bad);
    unet_model_free(m);
    return s;
}

static unet_status load(unet_ctx *ctx, const char *path, unet_model **out, bool training,
                        unet_meta_fn meta_fn, void *user) {
    if (!path || !out) return unet__fail(ctx, UNET_STATUS_ARG, "model_load: NULL argument");
    *out = NULL;
    struct unet__safetensors *st = NULL;
    unet_status s = unet__st_open(ctx, path, &st);
    if (s != UNET_STATUS_OK) return s;
    s = load_st(ctx, st, path, out, training, meta_fn, user);
    unet__st_close(st);
    return s;
}

unet_status unet__model_load_mem(unet_ctx *ctx, const char *name, const void *data, size_t size,
                                 bool training, unet_meta_fn meta_fn, void *user,
                                 unet_model **out) {
    if (!name || !out || (!data && size)) return unet__fail(ctx, UNET_STATUS_ARG, "model_load: NULL argument");
    *out = NULL;
    unsigned char *buf = malloc(size + 1);
    if (!buf) return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", name);
    if (size) memcpy(buf, data, size);
    struct unet__safetensors *st = NULL;
    unet_status s = unet__st_parse(ctx, name, buf, size, &st);
    if (s != UNET_STATUS_OK) return s;
    s = load_st(ctx, st, name, out, training, meta_fn, user);
    unet__st_close(st);
    return s;
}

unet_status unet__model_read_weights(unet_ctx *ctx, const struct unet__safetensors *st,
                                     unet_model *m, const struct unet__weights_map *map,
                                     const char *what) {
    return read_params(ctx, st, st->path, m, map, what);
}

unet_status unet_model_load(unet_ctx *ctx, const char *path, unet_model **out) {
    return load(ctx, path, out, false, NULL, NULL);
}

unet_status unet_model_load_training(unet_ctx *ctx, const char *path, unet_model **out,
                                     unet_meta_fn meta_fn, void *user) {
    return load(ctx, path, out, true, meta_fn, user);
}

static unet_status save(unet_ctx *ctx, const unet_model *m, const char *path, bool training,
                        const char *const *extra, int n_extra) {
    if (!m || !path) return unet__fail(ctx, UNET_STATUS_ARG, "model_save: NULL argument");
    if (training && !m->opt_m)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: no optimizer state yet (no training step)", path);
    if (n_extra < 0 || (n_extra > 0 && !extra))
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: bad metadata list", path);
    const bool ema = training && m->ema_w;
    const int n_ema = ema ? (m->n_buffers ? 2 : 1) : 0;
    int n = m->n_params + (training ? 2 + n_ema : 0);
    struct unet__st_entry *e = calloc((size_t)n, sizeof *e);
    const char **meta = calloc(2 * (size_t)(32 + n_extra), sizeof *meta);
    if (!e || !meta) {
        free(e);
        free(meta);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
    }
    /* The trainable parameters first, one after the other in the order of the parameter
     * block, at the start of the (aligned) data section: an inference load uses them in place
     * from the mapped file (weights_in_file).  Then the running statistics and counters. */
    static const enum unet__param_kind kinds[] = {UNET__PARAM_WEIGHT, UNET__PARAM_BUFFER,
                                                  UNET__PARAM_COUNTER};
    int ne = 0;
    for (size_t kind = 0; kind < sizeof kinds / sizeof kinds[0]; kind++)
        for (int j = 0; j < m->n_params; j++) {
            if (m->params[j].kind == kinds[kind]) unet__st_entry_of_param(m, &m->params[j], &e[ne++]);
        }
    if (training) {
        const char *names[4] = {"optimizer.exp_avg", "optimizer.exp_avg_sq", "optimizer.ema",
                                "optimizer.ema_buffers"};
        const float *data[4] = {m->opt_m, m->opt_v, m->ema_w, m->ema_b};
        for (int k = 0; k < 2 + n_ema; k++) {
            struct unet__st_entry *t = &e[m->n_params + k];
            t->name = names[k];
            t->dtype = UNET__DTYPE_F32;
            t->ndim = 1;
            t->shape[0] = (int64_t)(k == 3 ? m->n_buffers : m->n_weights);
            t->data = data[k];
        }
    }
    const unet_config *c = &m->cfg;
    char v[15][40];
    snprintf(v[0], sizeof v[0], "%d", c->in_channels);
    snprintf(v[1], sizeof v[1], "%d", c->classes);
    snprintf(v[2], sizeof v[2], "%d", c->base);
    snprintf(v[3], sizeof v[3], "%d", c->depth);
    snprintf(v[4], sizeof v[4], "%d", c->conv_bias);
    snprintf(v[5], sizeof v[5], "%d", c->batchnorm);
    snprintf(v[6], sizeof v[6], "%d", c->padding);
    snprintf(v[7], sizeof v[7], "%g", (double)c->dropout);
    snprintf(v[8], sizeof v[8], "%ld", m->opt_step);
    snprintf(v[14], sizeof v[14], "%d", FORMAT_VERSION);
    const char *fixed[] = {
        "format", "unet", "format_version", v[14], "unet_version", UNET_VERSION,
        "arch", unet_arch_name(c->arch),
        "in_channels", v[0], "classes", v[1], "base", v[2], "depth", v[3],
        "up", c->up == UNET_UP_BILINEAR ? "bilinear" : "transpose", "conv_bias", v[4],
        "batchnorm", v[5], "padding", v[6], "dropout", v[7],
        "init", c->init == UNET_INIT_HE ? "he" : "pytorch", "train_steps", v[8],
    };
    int k = (int)(sizeof fixed / sizeof fixed[0]);
    memcpy(meta, fixed, sizeof fixed);
    if (unet__family_of(c->arch)->fc_config) { /* FCN's keys: U-Net checkpoints lack them */
        snprintf(v[11], sizeof v[11], "%d", c->fc_channels);
        meta[k++] = "fc_channels", meta[k++] = v[11];
        meta[k++] = "learn_final_up", meta[k++] = c->learn_final_up ? "1" : "0";
    }
    if (training) {
        /* The dropout generator, so a resumed run draws the same masks. */
        for (int i = 0; i < 2; i++)
            snprintf(v[9 + i], sizeof v[9 + i], "%016llx%016llx",
                     (unsigned long long)m->rng.s[2 * i], (unsigned long long)m->rng.s[2 * i + 1]);
        meta[k++] = "rng0", meta[k++] = v[9], meta[k++] = "rng1", meta[k++] = v[10];
    }
    if (ema) {
        snprintf(v[12], sizeof v[12], "%.17g", m->ema_decay);
        snprintf(v[13], sizeof v[13], "%ld", m->ema_updates);
        meta[k++] = "ema_decay", meta[k++] = v[12], meta[k++] = "ema_updates", meta[k++] = v[13];
    }
    char axis_name[8];
    if (m->has_input_axis)
        meta[k++] = "channel_axis", meta[k++] = unet_channel_axis_name(m->input_axis, axis_name);
    if (m->input_channels[0]) meta[k++] = "channels", meta[k++] = m->input_channels;
    /* Keys written only for some models or saves: reserved for every save all the same. */
    static const char *const sometimes[] = {"fc_channels", "learn_final_up", "rng0", "rng1",
                                            "ema_decay", "ema_updates", "channel_axis",
                                            "channels"};
    const int n_sometimes = (int)(sizeof sometimes / sizeof sometimes[0]);
    for (int i = 0; i < 2 * n_extra; i++) {
        /* Caller keys may not be NULL nor shadow any key this function writes. */
        bool reserved = !extra[i];
        for (int j = 0; !reserved && i % 2 == 0 && j < (int)(sizeof fixed / sizeof fixed[0]); j += 2)
            reserved = strcmp(extra[i], fixed[j]) == 0;
        for (int j = 0; !reserved && i % 2 == 0 && j < n_sometimes; j++)
            reserved = strcmp(extra[i], sometimes[j]) == 0;
        if (reserved) {
            free(e);
            free(meta);
            return unet__fail(ctx, UNET_STATUS_ARG, "%s: metadata key %s is NULL or reserved", path,
                              extra[i] ? extra[i] : "(null)");
        }
        meta[k++] = extra[i];
    }
    unet_status s = unet__st_write(ctx, path, e, n, meta, k / 2);
    free(e);
    free(meta);
    return s;
}

unet_status unet_model_save(unet_ctx *ctx, const unet_model *m, const char *path) {
    return save(ctx, m, path, false, NULL, 0);
}

unet_status unet_model_save_meta(unet_ctx *ctx, const unet_model *m, const char *path,
                                 const char *const *meta, int n_meta) {
    return save(ctx, m, path, false, meta, n_meta);
}

unet_status unet_model_save_training(unet_ctx *ctx, const unet_model *m, const char *path,
                                     const char *const *meta, int n_meta) {
    return save(ctx, m, path, true, meta, n_meta);
}

int unet_model_tensors(const unet_model *m) {
    return m ? m->n_params : 0;
}

unet_status unet_model_tensor(const unet_model *m, int i, const char **name, int *ndim,
                              int64_t shape[4], int *trainable) {
    if (!m || i < 0 || i >= m->n_params) return UNET_STATUS_ARG;
    const struct unet__param *p = &m->params[i];
    if (name) *name = p->name;
    if (ndim) *ndim = p->ndim;
    if (shape) memcpy(shape, p->shape, sizeof p->shape);
    if (trainable) *trainable = p->kind == UNET__PARAM_WEIGHT;
    return UNET_STATUS_OK;
}
