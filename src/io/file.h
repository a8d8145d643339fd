/* file.h — whole-file reads with a size limit, and atomic replacement of output files.
 *
 * Every file unet writes (checkpoints, masks, probability maps, logs it rewrites) goes through
 * unet__atomic_begin/commit: the bytes go to a temporary file beside the target, which is
 * fsync'ed and renamed over it, then the directory is fsync'ed.  A crash or a full disk leaves
 * either the old file or the new one, never a torn one.
 */
#ifndef UNET_IO_FILE_H
#define UNET_IO_FILE_H

#include "internal.h"

/* Reads all of path into a malloc'd buffer (one extra NUL byte after the end).  Files larger
 * than max_bytes are refused with UNET_STATUS_FORMAT before reading. */
unet_status unet__read_file(unet_ctx *ctx, const char *path, size_t max_bytes,
                            unsigned char **buf, size_t *size);

struct unet__atomic {
    char *path;     /* the final name */
    char *tmp;      /* the temporary file, created empty by begin; write to it by name */
};
unet_status unet__atomic_begin(unet_ctx *ctx, struct unet__atomic *a, const char *path);
/* fsync + rename + directory fsync; on failure removes the temporary.  Frees a's strings. */
unet_status unet__atomic_commit(unet_ctx *ctx, struct unet__atomic *a);
/* Removes the temporary; the target is untouched.  Safe after a failed commit. */
void unet__atomic_abort(struct unet__atomic *a);

/* The extension of path in lower case without the dot ("tif"), or "" (static buffer per call
 * site is not used: writes into ext, size bytes). */
const char *unet__path_ext(const char *path, char *ext, size_t size);

#endif /* UNET_IO_FILE_H */
