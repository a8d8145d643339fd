/* convolutionalize.c — a VGG classifier into an FCN checkpoint (Long et al. 2015, section 3.1):
 * its fully connected layers become convolutions, its convolutions stay as they are.
 *
 * The classifier is a safetensors state_dict with wkentaro/pytorch-fcn's VGG names: conv1_1 ..
 * conv5_3, fc6 (Linear F x 8b*7*7), fc7 (F x F), fc8 (K x F).  The FCN of the asked arch is
 * built (fcn.c) with the classifier's base, input channels and F, and its parameters are read
 * through the checkpoint loader (unet__model_read_weights, the reading unet_model_load does) with
 * a map: fc6 and fc7 are read as the Linear weights they are (a Linear on the flattened
 * (C, 7, 7) features is the 7x7 convolution with the same numbers), score_fr from fc8 when the
 * class count is kept, and the layers the classifier does not have (score_pool*, upscore*) keep
 * fcn.c's initial values (zero, bilinear).  With another class count fc8 is discarded and
 * score_fr starts at zero (the paper's new score layer).
 */
#include "io/checkpoint.h"
#include "io/safetensors.h"

#include <stdio.h>
#include <string.h>

struct classifier {
    int64_t F, C5, K;  /* fc channels, channels into fc6 (8 base), classes of fc8 */
    bool    keep_fc8;  /* the FCN has fc8's classes: score_fr is fc8 */
};

static bool from_classifier(void *user, const struct unet__param *p, const char **name,
                            int64_t shape[4], int *ndim) {
    const struct classifier *c = user;
    if (strncmp(p->name, "score_pool", 10) == 0 || strncmp(p->name, "upscore", 7) == 0)
        return false; /* new layers */
    if (strcmp(p->name, "fc6.weight") == 0) {
        /* Linear (F, C*7*7) on the flattened (C, 7, 7) features = conv (F, C, 7, 7). */
        *ndim = 2, shape[0] = c->F, shape[1] = c->C5 * 49;
    } else if (strcmp(p->name, "fc7.weight") == 0) {
        *ndim = 2, shape[0] = c->F, shape[1] = c->F;
    } else if (strcmp(p->name, "score_fr.weight") == 0) {
        if (!c->keep_fc8) return false; /* zero */
        *name = "fc8.weight", *ndim = 2, shape[0] = c->K, shape[1] = c->F;
    } else if (strcmp(p->name, "score_fr.bias") == 0) {
        if (!c->keep_fc8) return false;
        *name = "fc8.bias", *ndim = 1, shape[0] = c->K;
    }
    return true; /* convolutions, fc biases: the same name and shape */
}

/* The discarded class-score layer still belongs to the classifier. */
static bool discarded(void *user, const char *name) {
    const struct classifier *c = user;
    return !c->keep_fc8 && (strcmp(name, "fc8.weight") == 0 || strcmp(name, "fc8.bias") == 0);
}

unet_status unet_convolutionalize(unet_ctx *ctx, const char *classifier_path,
                                  const unet_config *cfg, const char *fcn_path) {
    if (!classifier_path || !cfg || !fcn_path)
        return unet__fail(ctx, UNET_STATUS_ARG, "convolutionalize: NULL argument");
    if (cfg->arch < UNET_ARCH_FCN32S || cfg->arch > UNET_ARCH_FCN8S)
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "convolutionalize: arch must be fcn32s, fcn16s or fcn8s, not %s",
                          unet_arch_name(cfg->arch));
    struct unet__safetensors *st = NULL;
    unet_model *m = NULL;
    unet_status s = unet__st_open(ctx, classifier_path, &st);
    if (s != UNET_STATUS_OK) return s;
    const struct unet__st_tensor *c11 = unet__st_find(st, "conv1_1.weight");
    const struct unet__st_tensor *fc6 = unet__st_find(st, "fc6.weight");
    const struct unet__st_tensor *fc8 = unet__st_find(st, "fc8.weight");
    if (!c11 || !fc6 || !fc8 || c11->ndim != 4 || fc6->ndim != 2 || fc8->ndim != 2 ||
        c11->shape[0] > 1024 || c11->shape[1] > 64 || fc6->shape[0] > 65536 ||
        fc8->shape[0] > 65536) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT,
                       "%s: not a VGG classifier: expected conv1_1.weight (b, in, 3, 3), "
                       "fc6.weight (F, 8b*7*7), fc8.weight (K, F) of sensible sizes",
                       classifier_path);
        goto done;
    }
    unet_config c = *cfg;
    const int K = (int)fc8->shape[0];
    c.in_channels = (int)c11->shape[1];
    c.base = (int)c11->shape[0];
    c.fc_channels = (int)fc6->shape[0];
    if (c.classes == 0) c.classes = K;
    s = unet__model_build(ctx, &c, &m);
    if (s != UNET_STATUS_OK) {
        unet__fail(ctx, s, "%s: %s", classifier_path, unet_ctx_errmsg(ctx));
        goto done;
    }
    unet__fcn_init_new_layers(m);
    struct classifier cl = {.F = c.fc_channels, .C5 = 8 * (int64_t)c.base, .K = K,
                            .keep_fc8 = c.classes == K};
    const struct unet__weights_map map = {from_classifier, discarded, &cl};
    char what[96];
    snprintf(what, sizeof what, "a VGG classifier (base %d, fc %d)", c.base, c.fc_channels);
    s = unet__model_read_weights(ctx, st, m, &map, what);
    if (s == UNET_STATUS_OK) s = unet_model_save(ctx, m, fcn_path);
done:
    unet_model_free(m);
    unet__st_close(st);
    return s;
}
