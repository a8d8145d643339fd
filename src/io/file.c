/* file.c — bounded whole-file reads and atomic file replacement (see file.h). */
#include "io/file.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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

unet_status unet__atomic_begin(unet_ctx *ctx, struct unet__atomic *a, const char *path) {
    a->path = unet__strdup(path);
    size_t n = strlen(path) + 16;
    a->tmp = malloc(n);
    if (!a->path || !a->tmp) {
        free(a->path);
        free(a->tmp);
        a->path = a->tmp = NULL;
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
    }
    /* open(O_CREAT | O_EXCL, 0666) with our own unique suffix, so the kernel applies the umask:
     * mkstemp makes 0600 files, and reading the umask (umask(0); umask(old)) would change it
     * for the whole process for a moment, under other threads' feet. */
    static _Thread_local uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                    (uint64_t)(uintptr_t)&counter;
    int fd = -1;
    for (int attempt = 0; attempt < 64 && fd < 0; attempt++) {
        uint64_t x = seed + 0x9e3779b97f4a7c15ULL * ++counter;
        x ^= x >> 31;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 29;
        snprintf(a->tmp, n, "%s.tmp.%06llx", path, (unsigned long long)(x & 0xffffff));
        fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        unet_status s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot create a temporary file: %s",
                                   path, strerror(errno));
        free(a->path);
        free(a->tmp);
        a->path = a->tmp = NULL;
        return s;
    }
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
    char *dir = unet__strdup(path);
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
