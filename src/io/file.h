/* file.h — whole-file reads with a size limit, opening regular files only, and atomic
 * replacement of output files.
 *
 * Every file unet writes (checkpoints, masks, probability maps, logs) goes through
 * unet__atomic_begin/commit: the bytes go to a temporary file beside the target, which is
 * fsync'ed and renamed over it, then the directory is fsync'ed.  A crash or a full disk leaves
 * either the old file or the new one, never a torn one.
 *
 * Temporaries are named TARGET.tmp.PID.XXXXXX (the writer's process id and 6 random hex digits)
 * and the writer holds an exclusive flock on the temporary from its creation to its rename.
 * unet_remove_stale_temporaries removes only temporaries whose writer is gone: the lock is free
 * AND no process with that id exists, so a writer that is still running (in this process, in
 * another one, or on another host of a shared file system) never loses its temporary.
 */
#ifndef UNET_IO_FILE_H
#define UNET_IO_FILE_H

#include "internal.h"

#include <stdio.h>

/* Reads all of path into a malloc'd buffer (one extra NUL byte after the end).  Files larger
 * than max_bytes are refused with UNET_STATUS_FORMAT before reading. */
unet_status unet__read_file(unet_ctx *ctx, const char *path, size_t max_bytes,
                            unsigned char **buf, size_t *size);

/* Maps all of path read-only (mmap, pages populated up front): no copy and no allocation, for
 * files read once from start to end (checkpoints).  *mapped tells how to release it: true,
 * unet__unmap_file; false (mmap failed, or an empty file), a malloc'd buffer from
 * unet__read_file, free().  The same size limit as unet__read_file.  The file must not be
 * truncated while mapped (reading beyond its new end raises SIGBUS); unet writes files by
 * rename, which leaves a mapped file intact. */
unet_status unet__map_file(unet_ctx *ctx, const char *path, size_t max_bytes,
                           unsigned char **buf, size_t *size, bool *mapped);
void unet__unmap_file(unsigned char *buf, size_t size);
/* Makes a mapping from unet__map_file writable in this process only (a write copies the page
 * it touches; the file is never written).  False when the system refuses. */
bool unet__map_writable(unsigned char *buf, size_t size);

/* Opens path for reading if it is a regular file: O_NONBLOCK while opening, so a FIFO never
 * blocks, then fstat.  A FIFO, device, socket or directory is UNET_STATUS_IO "not a regular
 * file".  Returns the descriptor in *fd (blocking mode restored) or a status with a message. */
unet_status unet__open_regular(unet_ctx *ctx, const char *path, int *fd);
/* The same as a stdio stream ("rb"); *size gets the file's size when size is not NULL. */
unet_status unet__fopen_regular(unet_ctx *ctx, const char *path, FILE **f, uint64_t *size);

struct unet__atomic {
    char *path;     /* the final name */
    char *tmp;      /* the temporary file, created empty by begin; write to it by name */
    int   fd;       /* open on tmp, holding its flock until commit or abort (-1: none) */
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
