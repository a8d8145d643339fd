/* file.c — bounded whole-file reads and atomic file replacement (see file.h). */
#include "io/file.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

unet_status unet__read_file(unet_ctx *ctx, const char *path, size_t max_bytes,
                            unsigned char **buf, size_t *size) {
    *buf = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return unet__fail(ctx, UNET_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return unet__fail(ctx, UNET_STATUS_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)max_bytes) {
        fclose(f);
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: file is %lld bytes, over the limit of %zu",
                          path, (long long)sb.st_size, max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    unsigned char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    size_t got = fread(b, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (err || got != n) {
        free(b);
        return unet__fail(ctx, UNET_STATUS_IO, "%s: read failed (%zu of %zu bytes)", path, got, n);
    }
    b[n] = 0;
    *buf = b;
    *size = n;
    return UNET_STATUS_OK;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

unet_status unet__atomic_begin(unet_ctx *ctx, struct unet__atomic *a, const char *path) {
    a->path = dup_str(path);
    size_t n = strlen(path) + 16;
    a->tmp = malloc(n);
    if (!a->path || !a->tmp) {
        free(a->path);
        free(a->tmp);
        a->path = a->tmp = NULL;
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
    }
    snprintf(a->tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(a->tmp);
    if (fd < 0) {
        unet_status s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot create a temporary file: %s",
                                   path, strerror(errno));
        free(a->path);
        free(a->tmp);
        a->path = a->tmp = NULL;
        return s;
    }
    /* mkstemp makes the file 0600; outputs are ordinary files, so honour the umask. */
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    close(fd);
    return UNET_STATUS_OK;
}

void unet__atomic_abort(struct unet__atomic *a) {
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    a->tmp = a->path = NULL;
}

static void fsync_dir_of(const char *path) {
    char *dir = dup_str(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash) {
        if (slash == dir) slash[1] = 0;
        else *slash = 0;
        d = dir;
    }
    int fd = open(d, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

unet_status unet__atomic_commit(unet_ctx *ctx, struct unet__atomic *a) {
    int fd = open(a->tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        unet_status s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot sync %s: %s", a->path, a->tmp,
                                   strerror(errno));
        if (fd >= 0) close(fd);
        unet__atomic_abort(a);
        return s;
    }
    close(fd);
    if (rename(a->tmp, a->path) != 0) {
        unet_status s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot rename the temporary file: %s",
                                   a->path, strerror(errno));
        unet__atomic_abort(a);
        return s;
    }
    fsync_dir_of(a->path);
    free(a->tmp);
    free(a->path);
    a->tmp = a->path = NULL;
    return UNET_STATUS_OK;
}

const char *unet__path_ext(const char *path, char *ext, size_t size) {
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(path, '.');
    size_t k = 0;
    if (dot && (!slash || dot > slash) && dot[1]) {
        for (const char *p = dot + 1; *p && k + 1 < size; p++)
            ext[k++] = (char)tolower((unsigned char)*p);
    }
    if (size) ext[k] = 0;
    return ext;
}
