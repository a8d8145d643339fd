/* checkpoint.c — models to and from safetensors, with PyTorch's state_dict names.
 *
 * A checkpoint holds every entry of the parameter table (weights and running statistics as F32,
 * num_batches_tracked as a 0-dimensional I64, exactly as torch.save of a state_dict converted by
 * safetensors.torch.save_file) and the architecture as __metadata__ strings:
 *     format=unet arch=unet|unet-paper|fcn8s.. in_channels classes base depth
 *     up=transpose|bilinear conv_bias batchnorm padding dropout init train_steps
 * A checkpoint converted from PyTorch has no metadata; the architecture is then inferred from
 * the names and shapes (see infer_config) and every tensor is still checked against it.
 * Loading is strict, like load_state_dict(strict=True): a missing, unexpected, misshapen or
 * non-float tensor is an error naming the tensor.
 */
#include "io/safetensors.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: metadata: %s", st->path, unet_ctx_errmsg(ctx));
    *c = unet_config_default(c->arch);
    struct {
        const char *key;
        int        *dst;
    } ints[] = {{"in_channels", &c->in_channels}, {"classes", &c->classes}, {"base", &c->base},
                {"depth", &c->depth}, {"conv_bias", &c->conv_bias}, {"batchnorm", &c->batchnorm},
                {"padding", &c->padding}};
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

static const struct unet__st_tensor *find(const struct unet__safetensors *st, const char *fmt, int k) {
    char name[128];
    snprintf(name, sizeof name, fmt, k);
    return unet__st_find(st, name);
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
static unet_status infer_config(unet_ctx *ctx, const struct unet__safetensors *st, unet_config *c) {
    const struct unet__st_tensor *inc = unet__st_find(st, "inc.double_conv.0.weight");
    const struct unet__st_tensor *out = unet__st_find(st, "outc.conv.weight");
    if (!inc || !out || inc->ndim != 4 || out->ndim != 4)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: no unet metadata and no U-Net tensors (inc.double_conv.0.weight, "
                          "outc.conv.weight): not a U-Net checkpoint",
                          st->path);
    bool bn = unet__st_find(st, "inc.double_conv.1.weight") != NULL;
    *c = unet_config_default(bn ? UNET_ARCH_UNET : UNET_ARCH_UNET_PAPER);
    c->in_channels = (int)inc->shape[1];
    c->base = (int)inc->shape[0];
    c->conv_bias = unet__st_find(st, "inc.double_conv.0.bias") != NULL;
    int depth = 0;
    while (depth < 16 && find(st, "down%d.maxpool_conv.1.double_conv.0.weight", depth + 1)) depth++;
    c->depth = depth;
    c->up = unet__st_find(st, "up1.up.weight") ? UNET_UP_TRANSPOSE : UNET_UP_BILINEAR;
    c->classes = (int)out->shape[0];
    if (unet_config_check(ctx, c) != UNET_STATUS_OK)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: inferred architecture is invalid: %s",
                          st->path, unet_ctx_errmsg(ctx));
    return UNET_STATUS_OK;
}

unet_status unet_model_load(unet_ctx *ctx, const char *path, unet_model **out) {
    if (!path || !out) return unet__fail(ctx, UNET_STATUS_ARG, "model_load: NULL argument");
    *out = NULL;
    struct unet__safetensors *st = NULL;
    unet_model *m = NULL;
    unet_status s = unet__st_open(ctx, path, &st);
    if (s != UNET_STATUS_OK) return s;
    unet_config cfg;
    s = unet__st_meta(st, "arch") ? config_from_meta(ctx, st, &cfg) : infer_config(ctx, st, &cfg);
    if (s != UNET_STATUS_OK) goto fail;
    s = unet__model_build(ctx, &cfg, &m);
    if (s != UNET_STATUS_OK) {
        unet__fail(ctx, s == UNET_STATUS_NOMEM ? s : UNET_STATUS_FORMAT, "%s: %s", path,
                   unet_ctx_errmsg(ctx));
        s = s == UNET_STATUS_NOMEM ? s : UNET_STATUS_FORMAT;
        goto fail;
    }
    int matched = 0;
    for (int i = 0; i < m->n_params; i++) {
        const struct unet__param *p = &m->params[i];
        if (p->kind == UNET__PARAM_COUNTER) {
            const struct unet__st_tensor *t = unet__st_find(st, p->name);
            if (!t) {
                s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s' is missing", path, p->name);
                goto fail;
            }
            if (unet__st_numel(t) != 1 || t->ndim > 1 ||
                (t->dtype != UNET__DTYPE_I64 && t->dtype != UNET__DTYPE_I32)) {
                s = unet__fail(ctx, UNET_STATUS_FORMAT,
                               "%s: %s: expected an int64 scalar, got %s with %zu elements", path,
                               p->name, unet__dtype_name(t->dtype), unet__st_numel(t));
                goto fail;
            }
            unet__st_to_i64(st, t, &m->counters[p->offset]);
        } else {
            s = unet__st_read_f32(ctx, st, p->name, p->shape, p->ndim, unet__model_param_data(m, p));
            if (s != UNET_STATUS_OK) goto fail;
        }
        matched++;
    }
    if (matched != st->count) {
        for (int i = 0; i < st->count; i++)
            if (!unet__model_find_param(m, st->tensors[i].name)) {
                s = unet__fail(ctx, UNET_STATUS_FORMAT,
                               "%s: unexpected tensor '%s' for a %s (base %d, depth %d): the "
                               "architecture does not match",
                               path, st->tensors[i].name, unet_arch_name(cfg.arch), cfg.base,
                               cfg.depth);
                goto fail;
            }
    }
    /* Non-finite weights would silently produce NaN masks: refuse them here. */
    for (size_t i = 0; i < m->n_weights; i++)
        if (!(m->weights[i] - m->weights[i] == 0.0f)) {
            for (int j = 0; j < m->n_params; j++) {
                const struct unet__param *p = &m->params[j];
                if (p->kind == UNET__PARAM_WEIGHT && i >= p->offset && i < p->offset + p->numel) {
                    s = unet__fail(ctx, UNET_STATUS_NUMERIC, "%s: %s holds NaN or Inf at index %zu",
                                   path, p->name, i - p->offset);
                    goto fail;
                }
            }
        }
    const char *steps = unet__st_meta(st, "train_steps");
    if (steps) m->opt_step = strtol(steps, NULL, 10);
    unet__rng_seed(&m->rng, 0x5eed5eed5eedULL);
    unet__st_close(st);
    *out = m;
    return UNET_STATUS_OK;
fail:
    unet_model_free(m);
    unet__st_close(st);
    return s;
}

unet_status unet_model_save(unet_ctx *ctx, const unet_model *m, const char *path) {
    if (!m || !path) return unet__fail(ctx, UNET_STATUS_ARG, "model_save: NULL argument");
    struct unet__st_entry *e = calloc((size_t)m->n_params, sizeof *e);
    if (!e) return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < m->n_params; i++) {
        const struct unet__param *p = &m->params[i];
        e[i].name = p->name;
        e[i].ndim = p->ndim;
        memcpy(e[i].shape, p->shape, sizeof p->shape);
        if (p->kind == UNET__PARAM_COUNTER) {
            e[i].dtype = UNET__DTYPE_I64;
            e[i].data = &m->counters[p->offset];
        } else {
            e[i].dtype = UNET__DTYPE_F32;
            e[i].data = unet__model_param_data(m, p);
        }
    }
    const unet_config *c = &m->cfg;
    char v[10][32];
    snprintf(v[0], sizeof v[0], "%d", c->in_channels);
    snprintf(v[1], sizeof v[1], "%d", c->classes);
    snprintf(v[2], sizeof v[2], "%d", c->base);
    snprintf(v[3], sizeof v[3], "%d", c->depth);
    snprintf(v[4], sizeof v[4], "%d", c->conv_bias);
    snprintf(v[5], sizeof v[5], "%d", c->batchnorm);
    snprintf(v[6], sizeof v[6], "%d", c->padding);
    snprintf(v[7], sizeof v[7], "%g", (double)c->dropout);
    snprintf(v[8], sizeof v[8], "%ld", m->opt_step);
    const char *meta[] = {
        "format", "unet", "unet_version", UNET_VERSION, "arch", unet_arch_name(c->arch),
        "in_channels", v[0], "classes", v[1], "base", v[2], "depth", v[3],
        "up", c->up == UNET_UP_BILINEAR ? "bilinear" : "transpose", "conv_bias", v[4],
        "batchnorm", v[5], "padding", v[6], "dropout", v[7],
        "init", c->init == UNET_INIT_HE ? "he" : "pytorch", "train_steps", v[8],
    };
    unet_status s = unet__st_write(ctx, path, e, m->n_params, meta, (int)(sizeof meta / sizeof meta[0] / 2));
    free(e);
    return s;
}
