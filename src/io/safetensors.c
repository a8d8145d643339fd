/* safetensors.c — the safetensors reader and writer.
 *
 * The reader maps the whole file (checkpoints are at most a few hundred MB; one mapping costs
 * no copy and is simpler to validate than scattered seeks), parses the JSON header with cJSON (Debian's
 * libcjson, maintained and fuzzed upstream, instead of a hand-written parser), and checks every
 * entry before anything uses it: known dtype, at most 8 non-negative dimensions, offsets inside
 * the data section, byte size == product of the shape (overflow-checked) times the element size,
 * no duplicate names.  Data is little-endian; unet targets little-endian hosts (asserted below).
 */
#include "io/safetensors.h"
#include "io/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "unet reads and writes little-endian tensor data and needs a little-endian host"
#endif

/* Headers larger than this are refused: real ones are a few hundred bytes per tensor. */
#define MAX_HEADER_BYTES ((uint64_t)100 << 20)
/* Largest file accepted: 16 GiB. */
#define MAX_FILE_BYTES ((size_t)16 << 30)

static const struct {
    const char      *name;
    enum unet__dtype t;
    size_t           size;
} dtypes[] = {
    {"F32", UNET__DTYPE_F32, 4}, {"F64", UNET__DTYPE_F64, 8}, {"F16", UNET__DTYPE_F16, 2},
    {"BF16", UNET__DTYPE_BF16, 2}, {"I64", UNET__DTYPE_I64, 8}, {"I32", UNET__DTYPE_I32, 4},
    {"I16", UNET__DTYPE_I16, 2}, {"I8", UNET__DTYPE_I8, 1}, {"U8", UNET__DTYPE_U8, 1},
    {"U16", UNET__DTYPE_U16, 2}, {"BOOL", UNET__DTYPE_BOOL, 1},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

const char *unet__dtype_name(enum unet__dtype t) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtypes[i].t == t) return dtypes[i].name;
    return "?";
}

size_t unet__dtype_size(enum unet__dtype t) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (dtypes[i].t == t) return dtypes[i].size;
    return 0;
}

const char *unet__shape_str(char *buf, size_t size, const int64_t *shape, int ndim) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, size - k, "(");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < size) snprintf(buf + k, size - k, ndim == 1 ? ",)" : ")");
    return buf;
}

void unet__st_close(struct unet__safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->count; i++) free(st->tensors[i].name);
    for (int i = 0; i < 2 * st->meta_count; i++) free(st->meta[i]);
    free(st->tensors);
    free(st->meta);
    if (st->mapped) {
        if (!st->kept) unet__unmap_file(st->buf, st->size);
    } else {
        free(st->buf);
    }
    free(st->path);
    free(st);
}

static unet_status parse_entry(unet_ctx *ctx, const char *name, const cJSON *e, size_t data_size,
                               struct unet__st_tensor *t) {
    if (!cJSON_IsObject(e))
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s': header entry is not an object",
                          name, e->string);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of))
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: tensor '%s': needs string dtype, array shape, array data_offsets",
                          name, e->string);
    size_t i;
    for (i = 0; i < N_DTYPES; i++)
        if (strcmp(dt->valuestring, dtypes[i].name) == 0) break;
    if (i == N_DTYPES)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s': unsupported dtype '%s'", name,
                          e->string, dt->valuestring);
    t->dtype = dtypes[i].t;
    int nd = cJSON_GetArraySize(sh);
    if (nd > UNET__ST_MAX_DIMS)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s': %d dimensions (max %d)", name,
                          e->string, nd, UNET__ST_MAX_DIMS);
    t->ndim = nd;
    size_t numel = 1;
    int k = 0;
    for (const cJSON *d = sh->child; d; d = d->next, k++) {
        /* valuedouble holds the exact integer for anything below 2^53. */
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 9007199254740992.0 ||
            d->valuedouble != floor(d->valuedouble))
            return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s': bad shape entry", name,
                              e->string);
        t->shape[k] = (int64_t)d->valuedouble;
        if ((uint64_t)t->shape[k] > SIZE_MAX || !unet__mul_size(numel, (size_t)t->shape[k], &numel))
            return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s': shape overflows", name,
                              e->string);
    }
    if (cJSON_GetArraySize(of) != 2)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s': data_offsets needs 2 numbers",
                          name, e->string);
    double b = of->child->valuedouble, en = of->child->next->valuedouble;
    if (!cJSON_IsNumber(of->child) || !cJSON_IsNumber(of->child->next) || b < 0 || en < b ||
        b != floor(b) || en != floor(en) || en > (double)data_size)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: tensor '%s': data_offsets [%.0f, %.0f] outside the %zu data bytes "
                          "(truncated file?)",
                          name, e->string, b, en, data_size);
    size_t nbytes;
    if (!unet__mul_size(numel, dtypes[i].size, &nbytes) || nbytes != (size_t)(en - b))
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: tensor '%s': %.0f data bytes do not match shape and dtype %s", name,
                          e->string, en - b, dt->valuestring);
    t->offset = (size_t)b;
    t->nbytes = nbytes;
    t->name = unet__strdup(e->string);
    if (!t->name) return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", name);
    return UNET_STATUS_OK;
}

/* cJSON's parser stores the position of its last error in a process-global variable (for
 * cJSON_GetErrorPtr, which unet does not use), written on every parse: two threads loading
 * checkpoints at once would race on it, so parses take turns (helgrind found it; tests/
 * test_threads.c loads checkpoints from several threads).  Parsing a header is microseconds. */
static pthread_mutex_t json_lock = PTHREAD_MUTEX_INITIALIZER;

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const struct unet__st_tensor *)a)->name,
                  ((const struct unet__st_tensor *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const struct unet__st_tensor *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* The data section as the safetensors format defines it (and its reference loader checks):
 * the tensors' byte ranges, in offset order, follow each other without gap or overlap from 0
 * to the end of the file.  Two tensors sharing bytes, or bytes no tensor owns, are refused. */
static unet_status check_layout(unet_ctx *ctx, const char *name, struct unet__safetensors *st) {
    qsort(st->tensors, (size_t)st->count, sizeof *st->tensors, cmp_tensor_offset);
    size_t end = 0;
    for (int i = 0; i < st->count; i++) {
        const struct unet__st_tensor *t = &st->tensors[i];
        if (t->offset != end)
            return unet__fail(ctx, UNET_STATUS_FORMAT,
                              "%s: tensor '%s' starts at data byte %zu, where %s (overlapping or "
                              "missing tensor data)", name, t->name, t->offset,
                              t->offset < end ? "the previous tensor's data still runs"
                                              : "no tensor's data ends");
        end = t->offset + t->nbytes;
    }
    if (end != st->size - st->data_start)
        return unet__fail(ctx, UNET_STATUS_FORMAT,
                          "%s: the tensors hold %zu data bytes, the file %zu (truncated, or bytes "
                          "no tensor owns)", name, end, st->size - st->data_start);
    qsort(st->tensors, (size_t)st->count, sizeof *st->tensors, cmp_tensor_name); /* for find */
    return UNET_STATUS_OK;
}

/* unet__st_parse of a malloc'd or (mapped) a mapped buffer, released as it was made. */
static unet_status parse(unet_ctx *ctx, const char *name, unsigned char *buf, size_t size,
                         bool mapped, struct unet__safetensors **out) {
    *out = NULL;
    unet_status s = UNET_STATUS_OK;
    cJSON *root = NULL;
    struct unet__safetensors *st = calloc(1, sizeof *st);
    if (!st) {
        if (mapped) unet__unmap_file(buf, size);
        else free(buf);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", name);
    }
    st->buf = buf;
    st->size = size;
    st->mapped = mapped;
    st->path = unet__strdup(name);
    if (!st->path) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    if (size < 8) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: %zu bytes, too short for a safetensors file",
                       name, size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > MAX_HEADER_BYTES || hlen > size - 8 || hlen < 2) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT,
                       "%s: header length %llu does not fit the %zu-byte file (not safetensors, "
                       "or truncated)",
                       name, (unsigned long long)hlen, size);
        goto fail;
    }
    st->data_start = 8 + (size_t)hlen;
    pthread_mutex_lock(&json_lock);
    root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
    pthread_mutex_unlock(&json_lock);
    if (!root || !cJSON_IsObject(root)) {
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: header is not a JSON object", name);
        goto fail;
    }
    int n = cJSON_GetArraySize(root);
    st->tensors = calloc(n > 0 ? (size_t)n : 1, sizeof *st->tensors);
    if (!st->tensors) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    size_t data_size = size - st->data_start;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!e->string) continue;
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e) || st->meta) {
                s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: __metadata__ %s", name,
                               st->meta ? "appears twice" : "is not an object");
                goto fail;
            }
            int m = cJSON_GetArraySize(e);
            st->meta = calloc(2 * (size_t)(m > 0 ? m : 1), sizeof(char *));
            if (!st->meta) {
                s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", name);
                goto fail;
            }
            for (const cJSON *kv = e->child; kv; kv = kv->next) {
                if (!cJSON_IsString(kv) || !kv->string) {
                    s = unet__fail(ctx, UNET_STATUS_FORMAT,
                                   "%s: __metadata__ values must be strings", name);
                    goto fail;
                }
                /* JSON allows a key twice; which value counts would be the parser's choice. */
                for (int k = 0; k < st->meta_count; k++)
                    if (strcmp(st->meta[2 * k], kv->string) == 0) {
                        s = unet__fail(ctx, UNET_STATUS_FORMAT,
                                       "%s: __metadata__ key '%s' appears twice", name, kv->string);
                        goto fail;
                    }
                st->meta[2 * st->meta_count] = unet__strdup(kv->string);
                st->meta[2 * st->meta_count + 1] = unet__strdup(kv->valuestring);
                st->meta_count++;
                if (!st->meta[2 * st->meta_count - 2] || !st->meta[2 * st->meta_count - 1]) {
                    s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", name);
                    goto fail;
                }
            }
            continue;
        }
        s = parse_entry(ctx, name, e, data_size, &st->tensors[st->count]);
        if (s != UNET_STATUS_OK) goto fail;
        st->count++;
    }
    /* Sorted by name for binary search; duplicates are a format error. */
    qsort(st->tensors, (size_t)st->count, sizeof *st->tensors, cmp_tensor_name);
    for (int i = 1; i < st->count; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            s = unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s' appears twice", name,
                           st->tensors[i].name);
            goto fail;
        }
    s = check_layout(ctx, name, st);
    if (s != UNET_STATUS_OK) goto fail;
    cJSON_Delete(root);
    *out = st;
    return UNET_STATUS_OK;
fail:
    cJSON_Delete(root);
    unet__st_close(st);
    return s;
}

unet_status unet__st_parse(unet_ctx *ctx, const char *name, unsigned char *buf, size_t size,
                           struct unet__safetensors **out) {
    return parse(ctx, name, buf, size, false, out);
}

unet_status unet__st_open(unet_ctx *ctx, const char *path, struct unet__safetensors **out) {
    unsigned char *buf;
    size_t size;
    bool mapped;
    *out = NULL;
    unet_status s = unet__map_file(ctx, path, MAX_FILE_BYTES, &buf, &size, &mapped);
    if (s != UNET_STATUS_OK) return s;
    return parse(ctx, path, buf, size, mapped, out);
}

unet_status unet_model_probe(unet_ctx *ctx, const char *path, int *is_unet) {
    if (!path || !is_unet) return unet__fail(ctx, UNET_STATUS_ARG, "model_probe: NULL argument");
    *is_unet = 0;
    FILE *f;
    uint64_t size;
    unet_status s = unet__fopen_regular(ctx, path, &f, &size);
    if (s != UNET_STATUS_OK) return s;
    unsigned char len8[8];
    uint64_t hlen = 0;
    if (fread(len8, 1, 8, f) == 8)
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | len8[i];
    char *hdr = hlen >= 2 && hlen <= MAX_HEADER_BYTES && hlen <= size - 8 ? malloc(hlen) : NULL;
    if (hdr && fread(hdr, 1, (size_t)hlen, f) == hlen) {
        pthread_mutex_lock(&json_lock);
        cJSON *root = cJSON_ParseWithLength(hdr, (size_t)hlen);
        pthread_mutex_unlock(&json_lock);
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(meta, "format");
        *is_unet = cJSON_IsString(fmt) && strcmp(fmt->valuestring, "unet") == 0;
        cJSON_Delete(root);
    }
    free(hdr);
    fclose(f);
    return UNET_STATUS_OK;
}

const struct unet__st_tensor *unet__st_find(const struct unet__safetensors *st, const char *name) {
    int lo = 0, hi = st->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return &st->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

size_t unet__st_numel(const struct unet__st_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i]; /* checked at parse time */
    return n;
}

const void *unet__st_data(const struct unet__safetensors *st, const struct unet__st_tensor *t) {
    return st->buf + st->data_start + t->offset;
}

const char *unet__st_meta(const struct unet__safetensors *st, const char *key) {
    for (int i = 0; i < st->meta_count; i++)
        if (strcmp(st->meta[2 * i], key) == 0) return st->meta[2 * i + 1];
    return NULL;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)man, -24); /* zero or subnormal */
        return sign ? -f : f;
    }
    uint32_t bits = exp == 31 ? sign | 0x7f800000u | (man << 13)
                              : sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}

/* Element i of a tensor as double; memcpy because the data section has no alignment. */
static double elem(const unsigned char *p, enum unet__dtype t, size_t i) {
    switch (t) {
    case UNET__DTYPE_F32: { float v; memcpy(&v, p + 4 * i, 4); return v; }
    case UNET__DTYPE_F64: { double v; memcpy(&v, p + 8 * i, 8); return v; }
    case UNET__DTYPE_F16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return half_to_float(v); }
    case UNET__DTYPE_BF16: {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        uint32_t bits = (uint32_t)v << 16;
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    case UNET__DTYPE_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); return (double)v; }
    case UNET__DTYPE_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case UNET__DTYPE_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case UNET__DTYPE_I8: return (int8_t)p[i];
    case UNET__DTYPE_U8: return p[i];
    case UNET__DTYPE_U16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case UNET__DTYPE_BOOL: return p[i] != 0;
    }
    return 0.0;
}

void unet__st_to_f32(const struct unet__safetensors *st, const struct unet__st_tensor *t, float *out) {
    const unsigned char *p = unet__st_data(st, t);
    size_t n = unet__st_numel(t);
    if (t->dtype == UNET__DTYPE_F32) {
        /* In 2 MiB chunks over the threads: this copy is where a load first touches the
         * parameters' pages, each of which the kernel zeroes first; two threads fault and
         * zero two at a time. */
        const size_t chunk = (size_t)1 << 19;
        const long   nc = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static) if (nc > 1)
        for (long c = 0; c < nc; c++) {
            size_t a = (size_t)c * chunk, k = n - a < chunk ? n - a : chunk;
            memcpy(out + a, p + a * sizeof(float), k * sizeof(float));
        }
        return;
    }
    for (size_t i = 0; i < n; i++) out[i] = (float)elem(p, t->dtype, i);
}

void unet__st_to_f64(const struct unet__safetensors *st, const struct unet__st_tensor *t, double *out) {
    const unsigned char *p = unet__st_data(st, t);
    size_t n = unet__st_numel(t);
    for (size_t i = 0; i < n; i++) out[i] = elem(p, t->dtype, i);
}

void unet__st_to_i64(const struct unet__safetensors *st, const struct unet__st_tensor *t, int64_t *out) {
    const unsigned char *p = unet__st_data(st, t);
    size_t n = unet__st_numel(t);
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == UNET__DTYPE_I64) {
            memcpy(&out[i], p + 8 * i, 8);
            continue;
        }
        /* A float outside the int64 range (or NaN) would be undefined behaviour to convert:
         * saturate instead (NaN as 0). */
        double v = elem(p, t->dtype, i);
        out[i] = v != v ? 0 : v >= 9223372036854775807.0 ? INT64_MAX
                          : v <= -9223372036854775808.0 ? INT64_MIN : (int64_t)v;
    }
}

unet_status unet__st_read_f32(unet_ctx *ctx, const struct unet__safetensors *st, const char *name,
                              const int64_t *shape, int ndim, float *out) {
    char want[128], got[128];
    const struct unet__st_tensor *t = unet__st_find(st, name);
    if (!t)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: tensor '%s' %s is missing", st->path, name,
                          unet__shape_str(want, sizeof want, shape, ndim));
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same)
        return unet__fail(ctx, UNET_STATUS_SHAPE, "%s: %s: expected %s, got %s", st->path, name,
                          unet__shape_str(want, sizeof want, shape, ndim),
                          unet__shape_str(got, sizeof got, t->shape, t->ndim));
    if (t->dtype != UNET__DTYPE_F32 && t->dtype != UNET__DTYPE_F64 && t->dtype != UNET__DTYPE_F16 &&
        t->dtype != UNET__DTYPE_BF16)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: %s: expected a float dtype, got %s",
                          st->path, name, unet__dtype_name(t->dtype));
    if (out) unet__st_to_f32(st, t, out);
    return UNET_STATUS_OK;
}

/* ---- writing ---- */

unet_status unet__st_write(unet_ctx *ctx, const char *path, const struct unet__st_entry *entries,
                           int count, const char *const *meta_kv, int meta_count) {
    unet_status s = UNET_STATUS_OK;
    char *json = NULL;
    FILE *f = NULL;
    struct unet__atomic at = {0};
    cJSON *root = cJSON_CreateObject();
    if (!root) return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
    if (meta_count > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; meta && i < meta_count; i++)
            if (!cJSON_AddStringToObject(meta, meta_kv[2 * i], meta_kv[2 * i + 1])) meta = NULL;
        if (!meta) {
            s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
            goto done;
        }
    }
    size_t offset = 0;
    for (int i = 0; i < count; i++) {
        const struct unet__st_entry *e = &entries[i];
        size_t n = 1, nbytes;
        for (int d = 0; d < e->ndim; d++) n *= (size_t)e->shape[d];
        nbytes = n * unet__dtype_size(e->dtype);
        cJSON *o = cJSON_AddObjectToObject(root, e->name);
        cJSON *sh = o ? cJSON_AddArrayToObject(o, "shape") : NULL;
        cJSON *of = o ? cJSON_AddArrayToObject(o, "data_offsets") : NULL;
        if (!o || !sh || !of || !cJSON_AddStringToObject(o, "dtype", unet__dtype_name(e->dtype))) {
            s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
            goto done;
        }
        for (int d = 0; d < e->ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[d]));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(offset + nbytes)));
        offset += nbytes;
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) {
        s = unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    /* Pad the header with spaces so that the data section starts UNET__ST_DATA_ALIGN-byte
     * aligned (the reference implementation pads to 8; a multiple of 8 is both). */
    size_t hlen = strlen(json);
    size_t padded = (8 + hlen + UNET__ST_DATA_ALIGN - 1) / UNET__ST_DATA_ALIGN * UNET__ST_DATA_ALIGN - 8;
    s = unet__atomic_begin(ctx, &at, path);
    if (s != UNET_STATUS_OK) goto done;
    f = fopen(at.tmp, "wb");
    if (!f) {
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: cannot write", path);
        goto done;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(((uint64_t)padded >> (8 * i)) & 0xff);
    errno = 0;
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(json, 1, hlen, f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < count; i++) {
        const struct unet__st_entry *e = &entries[i];
        size_t n = 1;
        for (int d = 0; d < e->ndim; d++) n *= (size_t)e->shape[d];
        size_t nbytes = n * unet__dtype_size(e->dtype);
        ok = nbytes == 0 || fwrite(e->data, 1, nbytes, f) == nbytes;
    }
    int err = ok ? 0 : errno;   /* the first failure's reason (ENOSPC, EFBIG, EIO) */
    if (fflush(f) != 0 && ok) ok = false, err = errno;
    if (fclose(f) != 0 && ok) ok = false, err = errno;
    f = NULL;
    if (!ok) {
        s = unet__fail(ctx, UNET_STATUS_IO, "%s: write failed (%s); the previous file is "
                       "untouched", path, err ? strerror(err) : "disk full?");
        goto done;
    }
    s = unet__atomic_commit(ctx, &at);
done:
    if (f) fclose(f);
    if (s != UNET_STATUS_OK) unet__atomic_abort(&at);
    free(json);
    cJSON_Delete(root);
    return s;
}
