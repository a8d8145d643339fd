/* checkpoint.h — the internal entries of checkpoint.c, models to and from safetensors files
 * (the public ones, unet_model_load and unet_model_save, are in unet.h).
 *
 * Every loader reads parameters the same way (unet__model_read_weights): by name and exact
 * shape, strictly, like PyTorch's load_state_dict(strict=True).  A converter whose file names
 * or shapes some tensors differently (convolutionalize.c: a classifier's fc6 is a Linear)
 * says so through a map instead of reading the file itself.
 */
#ifndef UNET_IO_CHECKPOINT_H
#define UNET_IO_CHECKPOINT_H

#include "model.h"

struct unet__safetensors; /* io/safetensors.h */
struct unet__st_entry;    /* io/safetensors.h */

/* Fills e with parameter p of m as a checkpoint holds it: name, shape, float32 data (int64 for
 * counters), pointing into m. */
void unet__st_entry_of_param(const unet_model *m, const struct unet__param *p,
                             struct unet__st_entry *e);

/* Where parameters come from in a weights file. */
struct unet__weights_map {
    /* Parameter p is read from the tensor *name with ndim dimensions shape (p's own name and
     * shape when called); returning false leaves p as it is.  NULL: every parameter by its own
     * name and shape. */
    bool (*source)(void *user, const struct unet__param *p, const char **name, int64_t shape[4],
                   int *ndim);
    /* Whether a tensor that no parameter reads belongs in the file all the same (NULL: none). */
    bool (*extra)(void *user, const char *name);
    void *user;
};

/* Reads every parameter of m from st through map (NULL: by name), as unet_model_load does: a
 * missing, misshapen or non-float tensor is UNET_STATUS_FORMAT naming it and both shapes, and
 * so is a tensor of st that nothing read and map->extra does not accept ("<file>: unexpected
 * tensor '<name>' for <what>").  On failure some parameters may have been overwritten. */
unet_status unet__model_read_weights(unet_ctx *ctx, const struct unet__safetensors *st,
                                     unet_model *m, const struct unet__weights_map *map,
                                     const char *what);

/* unet_model_load (training: unet_model_load_training, meta_fn may be NULL) from a copy of
 * size bytes at data, name labelling messages: the fuzz targets' entry. */
unet_status unet__model_load_mem(unet_ctx *ctx, const char *name, const void *data, size_t size,
                                 bool training, unet_meta_fn meta_fn, void *user,
                                 unet_model **out);

#endif /* UNET_IO_CHECKPOINT_H */
