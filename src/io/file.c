/* file.c — bounded whole-file reads and atomic file replacement (see file.h). */
#include "io/file.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *file_type(mode_t mode) {
    return S_ISFIFO(mode)   ? "a FIFO (named pipe)"
           : S_ISDIR(mode)  ? "a directory"
           : S_ISCHR(mode)  ? "a character device"
           : S_ISBLK(mode)  ? "a block device"
           : S_ISSOCK(mode) ? "a socket"
                            : "not a regular file";
}

unet_status unet__open_regular(unet_ctx *ctx, const char *path, int *fd) {
    *fd = -1;
    /* O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, forever. */
    int d = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (d < 0) return unet__fail(ctx, UNET_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(d, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        const char *what = fstat(d, &sb) != 0 ? "cannot stat" : file_type(sb.st_mode);
        close(d);
        return unet__fail(ctx, UNET_STATUS_IO, "%s: %s, not a regular file: not read", path,
                          what);
    }
    int flags = fcntl(d, F_GETFL);
    if (flags >= 0) fcntl(d, F_SETFL, flags & ~O_NONBLOCK);
    *fd = d;
    return UNET_STATUS_OK;
}

unet_status unet__fopen_regular(unet_ctx *ctx, const char *path, FILE **f, uint64_t *size) {
    *f = NULL;
    int fd;
    unet_status s = unet__open_regular(ctx, path, &fd);
    if (s != UNET_STATUS_OK) return s;
    struct stat sb;
    if (size) *size = fstat(fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    *f = fdopen(fd, "rb");
    if (!*f) {
        close(fd);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: cannot open a stream", path);
    }
    return UNET_STATUS_OK;
}

unet_status unet__read_file(unet_ctx *ctx, const char *path, size_t max_bytes,
                            unsigned char **buf, size_t *size) {
    *buf = NULL;
    *size = 0;
    FILE *f;
    uint64_t file_size;
    unet_status s = unet__fopen_regular(ctx, path, &f, &file_size);
    if (s != UNET_STATUS_OK) return s;
    if (file_size > (uint64_t)max_bytes) {
        fclose(f);
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: file is %llu bytes, over the limit of %zu",
                          path, (unsigned long long)file_size, max_bytes);
    }
    size_t n = (size_t)file_size;
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

unet_status unet__map_file(unet_ctx *ctx, const char *path, size_t max_bytes,
                           unsigned char **buf, size_t *size, bool *mapped) {
    *buf = NULL;
    *size = 0;
    *mapped = false;
    int fd;
    unet_status s = unet__open_regular(ctx, path, &fd);
    if (s != UNET_STATUS_OK) return s;
    struct stat sb;
    if (fstat(fd, &sb) != 0) sb.st_size = 0;
    if ((uint64_t)sb.st_size > (uint64_t)max_bytes) {
        close(fd);
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: file is %llu bytes, over the limit of %zu",
                          path, (unsigned long long)sb.st_size, max_bytes);
    }
    void *p = MAP_FAILED;
#ifdef MAP_POPULATE
    if (sb.st_size > 0)
        p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
#endif
    close(fd);
    if (p == MAP_FAILED) return unet__read_file(ctx, path, max_bytes, buf, size);
    *buf = p;
    *size = (size_t)sb.st_size;
    *mapped = true;
    return UNET_STATUS_OK;
}

void unet__unmap_file(unsigned char *buf, size_t size) {
    if (buf) munmap(buf, size);
}

bool unet__map_writable(unsigned char *buf, size_t size) {
    return buf && mprotect(buf, size, PROT_READ | PROT_WRITE) == 0;
}

unet_status unet__atomic_begin(unet_ctx *ctx, struct unet__atomic *a, const char *path) {
    a->fd = -1;
    a->path = unet__strdup(path);
    size_t n = strlen(path) + 40;
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
    const long pid = (long)getpid();
    uint64_t seed = ((uint64_t)pid << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                    (uint64_t)(uintptr_t)&counter;
    int fd = -1;
    for (int attempt = 0; attempt < 64 && fd < 0; attempt++) {
        uint64_t x = seed + 0x9e3779b97f4a7c15ULL * ++counter;
        x ^= x >> 31;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 29;
        snprintf(a->tmp, n, "%s.tmp.%ld.%06llx", path, pid, (unsigned long long)(x & 0xffffff));
        fd = open(a->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
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
    /* The lock tells unet_remove_stale_temporaries that the writer is alive.  Between open and
     * flock a sweeper can see the file unlocked, but the process id in its name is ours and
     * alive, so the sweeper leaves it alone. */
    flock(fd, LOCK_EX);
    a->fd = fd;
    return UNET_STATUS_OK;
}

void unet__atomic_abort(struct unet__atomic *a) {
    /* A zeroed struct (begin never called) has no temporary and no descriptor of its own. */
    if (a->tmp) {
        unlink(a->tmp);
        if (a->fd >= 0) close(a->fd);
    }
    free(a->tmp);
    free(a->path);
    a->tmp = a->path = NULL;
    a->fd = -1;
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
    /* The writer wrote through its own stream; fsync of any descriptor syncs the file. */
    if (a->fd < 0 || fsync(a->fd) != 0) {
        unet_status s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot sync %s: %s", a->path, a->tmp,
                                   a->fd < 0 ? "no descriptor" : strerror(errno));
        unet__atomic_abort(a);
        return s;
    }
    if (rename(a->tmp, a->path) != 0) {
        unet_status s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot rename the temporary file: %s",
                                   a->path, strerror(errno));
        unet__atomic_abort(a);
        return s;
    }
    fsync_dir_of(a->path);
    close(a->fd);
    free(a->tmp);
    free(a->path);
    a->tmp = a->path = NULL;
    a->fd = -1;
    return UNET_STATUS_OK;
}

/* ---- stale temporaries ---- */

/* The writer's process id when name is "TARGET.tmp.PID.XXXXXX" (6 lower-case hex digits) with a
 * TARGET of target_len bytes (0: any non-empty one), else 0. */
static long temp_owner(const char *name, size_t target_len) {
    size_t n = strlen(name);
    if (n < target_len + 13) return 0; /* ".tmp." + a digit + "." + 6 hex digits */
    const char *hex = name + n - 6;
    for (int i = 0; i < 6; i++)
        if (!isdigit((unsigned char)hex[i]) && !(hex[i] >= 'a' && hex[i] <= 'f')) return 0;
    if (hex[-1] != '.') return 0;
    const char *end = hex - 1, *p = end;
    while (p > name && isdigit((unsigned char)p[-1])) p--;
    if (p == end || end - p > 9 || p - name < 6 || memcmp(p - 5, ".tmp.", 5) != 0) return 0;
    if (target_len && (size_t)(p - 5 - name) != target_len) return 0;
    long pid = 0;
    for (const char *q = p; q < end; q++) pid = pid * 10 + (*q - '0');
    return pid;
}

/* Removes path (a temporary of pid) when its writer is gone: no process pid, and its lock free. */
static int remove_if_orphan(const char *path, long pid) {
    if (pid <= 0 || pid == (long)getpid()) return 0;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) return 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat sb;
    int removed = 0;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
        removed = unlink(path) == 0;
    close(fd);
    return removed;
}

int unet_remove_stale_temporaries(const char *path) {
    if (!path || !*path) return 0;
    struct stat sb;
    bool is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    char *dir = unet__strdup(is_dir ? path : ".");
    const char *base = NULL;
    if (!dir) return 0;
    if (!is_dir) {
        const char *slash = strrchr(path, '/');
        if (slash) {
            free(dir);
            dir = unet__strdup(path);
            if (!dir) return 0;
            dir[slash == path ? 1 : slash - path] = 0;
        }
        base = slash ? slash + 1 : path;
    }
    DIR *d = opendir(dir);
    int removed = 0;
    size_t blen = base ? strlen(base) : 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (base && strncmp(e->d_name, base, blen) != 0) continue;
        long pid = temp_owner(e->d_name, blen);
        if (!pid) continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) break;
        snprintf(p, n, "%s/%s", dir, e->d_name);
        removed += remove_if_orphan(p, pid);
        free(p);
    }
    if (d) closedir(d);
    free(dir);
    return removed;
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
