/* safetensors.h — reading and writing the safetensors format (huggingface/safetensors):
 * 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
 * "__metadata__": {str: str}}, then the raw little-endian tensor bytes.  Used for checkpoints
 * (PyTorch's state_dict names) and for the golden test files.
 */
#ifndef UNET_IO_SAFETENSORS_H
#define UNET_IO_SAFETENSORS_H

#include "internal.h"

enum unet__dtype {
    UNET__DTYPE_F32,
    UNET__DTYPE_F64,
    UNET__DTYPE_F16,
    UNET__DTYPE_BF16,
    UNET__DTYPE_I64,
    UNET__DTYPE_I32,
    UNET__DTYPE_I16,
    UNET__DTYPE_I8,
    UNET__DTYPE_U8,
    UNET__DTYPE_U16,
    UNET__DTYPE_BOOL,
};
/* "F32" etc.; element size in bytes. */
const char *unet__dtype_name(enum unet__dtype t);
size_t unet__dtype_size(enum unet__dtype t);

#define UNET__ST_MAX_DIMS 8

struct unet__st_tensor {
    char            *name;
    enum unet__dtype dtype;
    int              ndim;
    int64_t          shape[UNET__ST_MAX_DIMS];
    size_t           offset;    /* from the start of the data section */
    size_t           nbytes;
};

struct unet__safetensors {
    char                   *path;       /* for messages */
    unsigned char          *buf;        /* the whole file */
    size_t                  size;
    bool                    mapped;     /* buf is mapped (unet__map_file), not malloc'd */
    bool                    kept;       /* the mapping was handed on (a model's weights point
                                         * into it, checkpoint.c): close leaves it */
    size_t                  data_start; /* 8 + header length */
    struct unet__st_tensor *tensors;
    int                     count;
    char                  **meta;       /* key, value, key, value, ... */
    int                     meta_count;
};

/* Maps (or reads) and validates a whole file: every offset and size is checked against the file before
 * use, so a corrupt or truncated file gives UNET_STATUS_FORMAT (or IO) naming the file. */
unet_status unet__st_open(unet_ctx *ctx, const char *path, struct unet__safetensors **out);
/* The same from memory (the fuzz target's entry); takes ownership of buf (malloc'd) on success
 * and on failure.  name labels messages. */
unet_status unet__st_parse(unet_ctx *ctx, const char *name, unsigned char *buf, size_t size,
                           struct unet__safetensors **out);
void unet__st_close(struct unet__safetensors *st);

const struct unet__st_tensor *unet__st_find(const struct unet__safetensors *st, const char *name);
size_t unet__st_numel(const struct unet__st_tensor *t);
const void *unet__st_data(const struct unet__safetensors *st, const struct unet__st_tensor *t);
/* Converts any dtype to float32 / int64 (numel elements into out). */
void unet__st_to_f32(const struct unet__safetensors *st, const struct unet__st_tensor *t, float *out);
void unet__st_to_f64(const struct unet__safetensors *st, const struct unet__st_tensor *t, double *out);
void unet__st_to_i64(const struct unet__safetensors *st, const struct unet__st_tensor *t, int64_t *out);
/* The __metadata__ value for key, or NULL. */
const char *unet__st_meta(const struct unet__safetensors *st, const char *key);

/* Checks that tensor `name` exists with exactly this shape and a float dtype, then converts it
 * into out (out NULL: only the checks).  Messages name the tensor and both shapes:
 * "model.safetensors: down1.maxpool_conv.1.double_conv.0.weight: expected (128, 64, 3, 3), got (128, 64, 1, 1)". */
unet_status unet__st_read_f32(unet_ctx *ctx, const struct unet__safetensors *st, const char *name,
                              const int64_t *shape, int ndim, float *out);

/* ---- writing ---- */
/* The data section of a file unet__st_write writes starts at a multiple of this many bytes
 * (the header is padded with spaces), so a float32 tensor written first can be used in place
 * from a mapping of the file with the alignment of unet__alloc. */
#define UNET__ST_DATA_ALIGN 64
struct unet__st_entry {
    const char      *name;
    enum unet__dtype dtype;
    int              ndim;
    int64_t          shape[UNET__ST_MAX_DIMS];
    const void      *data;
};
/* Writes atomically: a temporary file in the same directory, fsync, rename over path, fsync of
 * the directory.  On failure the previous file at path is untouched and the temporary removed.
 * meta_kv: key, value pairs (meta_count pairs), may be NULL. */
unet_status unet__st_write(unet_ctx *ctx, const char *path, const struct unet__st_entry *entries,
                           int count, const char *const *meta_kv, int meta_count);

/* Formats a shape as "(a, b, c)" into buf. */
const char *unet__shape_str(char *buf, size_t size, const int64_t *shape, int ndim);

#endif /* UNET_IO_SAFETENSORS_H */
