/* cmd_predict.c — unet predict: segment one image or a folder, any size, with tiles.
 *
 * For each input NAME.ext (each page of a stack: NAME_pN) it writes to --output:
 *   NAME.png (.tif for TIFF input,      the class mask: 0/255 for two classes, class ids for more
 *   .npy for .npy input)                (.npy: always class ids)
 *   NAME_instances.tif                  16-bit instance labels (--instances; watershed or cc)
 *   NAME_prob.tif                       float probabilities, one page per class (--probabilities)
 *   NAME_overlay.png                    the image with the predicted outlines (--overlay)
 *   NAME_logits.npy or --logits FILE    raw logits, float32 (classes, H, W)     (--logits)
 * A file that cannot be read is reported and skipped; the others are still predicted, and the
 * exit status counts the failures.  Outputs are written atomically.  Before any work, no output
 * may be an input or another output (guard below), and the output folder is locked (flock)
 * against a second predict writing into it.
 */
#include "cli/cli.h"
#include "cli/dist.h"
#include "cli/pipeline.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct pargs {
    const char *model, *input, *output, *logits, *norm, *max_pixels, *max_memory, *instance_method;
    const char *channel_axis, *channels, *cache;
    struct cli_input in;    /* layout, channels and normalisation of the inputs */
    uint64_t    budget;
    int         tile, overlap, threads, batch, grow, erode, min_size;
    float       seed_threshold;
    bool        probabilities, overlay, tta, instances, quiet;
};

static bool has_ext(const char *path, const char *ext) {
    size_t n = strlen(path), k = strlen(ext);
    if (n < k) return false;
    for (size_t i = 0; i < k; i++)
        if ((path[n - k + i] | 0x20) != (ext[i] | 0x20)) return false;
    return true;
}

/* An output path into buf; false (reported) when it does not fit: never a silently cut name. */
static bool out_name(char *buf, size_t size, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static bool out_name(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        cli_error("output path too long: %.80s...", buf);
        return false;
    }
    return true;
}

/* The files written for one image (page), in the order of the header comment. */
enum { OUT_MASK, OUT_INSTANCES, OUT_PROB, OUT_OVERLAY, OUT_LOGITS, N_OUT };
static const char *const out_role[N_OUT] = {"the mask", "the instance labels", "the probabilities",
                                            "the overlay", "the logits"};
#define OUT_NAME_MAX 4096

/* The names of the outputs of page `page` (of `pages`) of path; "" for an output not asked
 * for.  False (reported) when a name does not fit. */
static bool output_names(const struct pargs *a, const char *path, int page, int pages,
                         char names[N_OUT][OUT_NAME_MAX]) {
    char *stem = cli_stem(path), base[2048];
    bool ok = stem && (pages > 1 ? out_name(base, sizeof base, "%s_p%d", stem, page)
                                 : out_name(base, sizeof base, "%s", stem));
    free(stem);
    if (!ok) return false;
    for (int k = 0; k < N_OUT; k++) names[k][0] = 0;
    bool tif = has_ext(path, ".tif") || has_ext(path, ".tiff"), npy = has_ext(path, ".npy");
    ok = out_name(names[OUT_MASK], OUT_NAME_MAX, "%s/%s.%s", a->output, base,
                  tif ? "tif" : npy ? "npy" : "png");
    if (ok && a->instances)
        ok = out_name(names[OUT_INSTANCES], OUT_NAME_MAX, "%s/%s_instances.tif", a->output, base);
    if (ok && a->probabilities)
        ok = out_name(names[OUT_PROB], OUT_NAME_MAX, "%s/%s_prob.tif", a->output, base);
    if (ok && a->overlay)
        ok = out_name(names[OUT_OVERLAY], OUT_NAME_MAX, "%s/%s_overlay.png", a->output, base);
    if (ok && a->logits)
        ok = has_ext(a->logits, ".npy")
                 ? out_name(names[OUT_LOGITS], OUT_NAME_MAX, "%s", a->logits)
                 : out_name(names[OUT_LOGITS], OUT_NAME_MAX, "%s/%s_logits.npy", a->logits, base);
    return ok;
}

static bool save(unet_ctx *ctx, const char *path, const unet_image *img) {
    unet_status s = unet_image_save(ctx, path, img);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    return true;
}

/* One image (page) on its way through the pipeline (cli/pipeline.h): decoded by the reader,
 * predicted by the main thread, written by the writer.  ok false: it failed (reported). */
struct job {
    const char *path;
    int         file, page, pages;
    bool        ok;
    char      (*name)[OUT_NAME_MAX];    /* N_OUT output names */
    float      *img, *out;
    int32_t    *labels;
    int         c, h, w;
    unet_output output;                 /* what out holds */
    double      start;
};

/* What the stages share.  The model is the main thread's while it predicts: the reader's
 * questions about it (tile size, activation memory) hold model_lock, and their answers are
 * kept, so that a folder of images of one size asks once, before the first forward. */
struct run {
    const struct pargs     *a;
    unet_model             *m;
    unet_ctx               *ctx[3];     /* reader, main thread, writer */
    const struct cli_files *files;
    int                     file, page, pages;  /* the reader's position */
    int                     stride;     /* files file, file + stride, ...: this rank's (dist.h) */
    pthread_mutex_t         model_lock;
    int                     memo_side, memo_T, memo_B, memo_cost_T;
    size_t                  memo_act;
    struct cli_progress     prog;
    int                     done, failed;       /* counted by the writer */
    /* The inference cache (unet_model_set_cache) against the budget: its bytes while it is on
     * (the reader's view), and the reader's word to the main thread that it is to go. */
    double                  cache_bytes;
    atomic_bool             cache_drop;
};

static int progress_cb(int done, int total, void *user) {
    struct cli_progress *p = user;
    flockfile(stderr); /* the writer prints between status lines */
    if (total > 1) cli_progress_line(p, "  tile %d/%d", done, total);
    funlockfile(stderr);
    return 0;
}

/* The default tile of an image whose longer side is side, and the activation memory of a
 * batch of B tiles of T, as the model says (asked under model_lock, remembered). */
static int default_tile(struct run *r, unet_ctx *ctx, int side) {
    if (r->memo_side != side) {
        int T;
        pthread_mutex_lock(&r->model_lock);
        if (unet_model_round_size(ctx, r->m, side < 1024 ? side : 1024, &T) != UNET_STATUS_OK)
            T = 1024;
        pthread_mutex_unlock(&r->model_lock);
        r->memo_side = side, r->memo_T = T;
    }
    return r->memo_T;
}

static size_t activations(struct run *r, unet_ctx *ctx, int B, int T) {
    if (r->memo_B != B || r->memo_cost_T != T) {
        size_t act = 0;
        pthread_mutex_lock(&r->model_lock);
        unet_model_cost(ctx, r->m, B, T, T, NULL, &act);
        pthread_mutex_unlock(&r->model_lock);
        r->memo_B = B, r->memo_cost_T = T, r->memo_act = act;
    }
    return r->memo_act;
}

/* The memory predicting page `page` of path takes, from its header, against the budget; and
 * its channels against the model's.  Both before any pixel is decoded (a sparse .npy of 4096
 * channels used to be loaded, 1.3 GB, before this was noticed).  *need: the bytes. */
static bool fits(struct run *r, unet_ctx *ctx, const char *path, int page, double *need) {
    const struct pargs *a = r->a;
    const unet_config *cfg = unet_model_config(r->m);
    unet_image info;
    int channels;
    if (!cli_image_channels(ctx, &a->in, path, page, &info, &channels)) return false;
    if (channels != cfg->in_channels) {
        cli_channels_mismatch(&a->in, path, &info, channels, cfg->in_channels, "the model takes");
        return false;
    }
    const double P = (double)info.w * info.h, C = info.c, K = cfg->classes;
    int side = info.h > info.w ? info.h : info.w, T = a->tile;
    if (T <= 0) T = default_tile(r, ctx, side);
    /* Batches never hold more tiles than the image has. */
    double tiles = ceil((double)info.h / T) * ceil((double)info.w / T);
    int B = (double)a->batch < tiles ? a->batch : (int)tiles;
    size_t act = activations(r, ctx, B, T);
    *need = P * C * (double)unet_dtype_size(info.dtype)  /* the decoded image */
            + 4 * C * P + 4 * K * P + 5 * P               /* floats, output, labels, mask */
            + (a->instances ? 6 * P : 0) + (a->overlay ? 3 * P : 0) +
            (a->tta ? 4 * (C + K) * P : 0) + (double)act +
            4.0 * B * (C + K) * (double)T * T;            /* tiles in and out */
    /* Held once for all images: the weights and, while it is on, the inference cache. */
    const double weights = 4.0 * (double)unet_model_param_count(r->m);
    char mb[2][32], what[4200];
    const double base = *need + weights + CLI_PROGRAM_BYTES;
    if (r->cache_bytes > 0 && base + r->cache_bytes > (double)a->budget &&
        base <= (double)a->budget && strcmp(a->cache, "auto") == 0) {
        cli_bytes_str(r->cache_bytes, mb[0], sizeof mb[0]);
        cli_bytes_str((double)a->budget, mb[1], sizeof mb[1]);
        if (!a->quiet)
            cli_note("%s: the %s inference cache of transformed weights does not fit the budget "
                     "of %s beside this %dx%d image: predicting without it from here (about "
                     "1.1x slower; --max-memory raises the budget)", path, mb[0], mb[1], info.w,
                     info.h);
        r->cache_bytes = 0;
        atomic_store(&r->cache_drop, true);
    }
    snprintf(what, sizeof what, "%s: predicting this %dx%d image with %d channel%s", path,
             info.w, info.h, info.c, info.c == 1 ? "" : "s");
    if (cli_within_budget(what, *need + weights + r->cache_bytes, a->budget)) return true;
    if (r->cache_bytes > 0)
        cli_note("  %s of it is the inference cache of transformed weights: --cache off saves it",
                 cli_bytes_str(r->cache_bytes, mb[0], sizeof mb[0]));
    return false;
}

static void job_free(struct job *j) {
    free(j->name), free(j->img), free(j->out), free(j->labels);
    free(j);
}

/* Reader: the next page of the next file, decoded (ok false when it could not be). */
static void *read_stage(struct cli_pipeline *pl, void *user) {
    struct run *r = user;
    unet_ctx *ctx = r->ctx[0];
    if (r->page >= r->pages) {
        if ((r->file += r->stride) >= r->files->count) return NULL;
        r->page = 0, r->pages = 1;
    }
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        cli_error("out of memory");
        r->page = r->pages;
        return NULL;
    }
    j->path = r->files->paths[r->file];
    j->file = r->file;
    if (r->page == 0 && !cli_image_pages(ctx, &r->a->in, j->path, &r->pages)) {
        r->page = r->pages = 0; /* the whole file failed: on to the next */
        return j;
    }
    j->page = r->page++;
    j->pages = r->pages;
    double need = 0;
    j->name = malloc(sizeof *j->name * N_OUT);
    if (!j->name) {
        cli_error("out of memory");
        return j;
    }
    if (!output_names(r->a, j->path, j->page, j->pages, j->name) ||
        !fits(r, ctx, j->path, j->page, &need))
        return j;
    cli_pipeline_reserve(pl, need);
    j->ok = cli_load_image(ctx, &r->a->in, j->path, j->page, &j->img, &j->c, &j->h, &j->w);
    return j;
}

/* Main thread: the forward passes, then the classes. */
static void compute_stage(void *user, void *job) {
    struct run *r = user;
    struct job *j = job;
    unet_ctx *ctx = r->ctx[1];
    const struct pargs *a = r->a;
    j->start = cli_now();
    if (j->ok) {
        j->ok = false;
        const int K = unet_model_config(r->m)->classes;
        const size_t P = (size_t)j->h * j->w;
        j->out = malloc(sizeof(float) * P * (size_t)K);
        j->labels = malloc(sizeof(int32_t) * P);
        if (!j->out || !j->labels) {
            cli_error("%s: out of memory (%dx%d)", j->path, j->w, j->h);
        } else {
            unet_predict_opts po = unet_predict_defaults();
            po.tile = a->tile;
            if (a->overlap != INT_MIN) po.overlap = a->overlap; /* the library rejects negatives */
            po.tta = a->tta;
            po.batch = a->batch;
            /* Logits first when asked for (probabilities follow from them exactly, without TTA). */
            po.output = a->logits && !a->tta ? UNET_OUTPUT_LOGITS : UNET_OUTPUT_PROBABILITIES;
            pthread_mutex_lock(&r->model_lock);
            if (atomic_load(&r->cache_drop)) unet_model_set_cache(r->m, 0);
            unet_status s = unet_predict(ctx, r->m, j->img, j->h, j->w, &po, j->out,
                                         a->quiet ? NULL : progress_cb, &r->prog);
            pthread_mutex_unlock(&r->model_lock);
            if (s != UNET_STATUS_OK) {
                cli_error("%s: %s: %s", j->path, unet_status_str(s), unet_ctx_errmsg(ctx));
            } else {
                size_t bad = unet_count_nonfinite(j->out, P * (size_t)K);
                if (bad)
                    cli_note("warning: %s: %zu of %zu output values are NaN or infinite (the "
                             "network overflowed there); those pixels get class 0",
                             j->path, bad, P * (size_t)K);
                unet_argmax(j->out, K, j->h, j->w, po.output, j->labels);
                j->output = po.output;
                j->ok = true;
            }
        }
    }
    flockfile(stderr);
    cli_progress_done(&r->prog);
    funlockfile(stderr);
}

/* Writer: the requested outputs of one image; false on failure (reported). */
static bool write_outputs(struct run *r, struct job *j) {
    unet_ctx *ctx = r->ctx[2];
    const struct pargs *a = r->a;
    const int K = unet_model_config(r->m)->classes, h = j->h, w = j->w;
    const size_t P = (size_t)h * w;
    float *img = j->img, *out = j->out;
    int32_t *labels = j->labels;
    char (*name)[OUT_NAME_MAX] = j->name;
    unet_image mask = {0}, extra = {0};
    unet_status s;
    bool ok = false;
    if (a->logits) {
        unet_image li = {.w = w, .h = h, .c = K, .dtype = UNET_DTYPE_F32, .data = out};
        if (!save(ctx, name[OUT_LOGITS], &li)) goto done;
    }
    /* The mask in the input's format family (TIFF for TIFF, .npy for .npy, else PNG): 0/255 for
     * two classes (visible, and read back as binary), class ids otherwise and in .npy. */
    bool npy = has_ext(j->path, ".npy");
    if (unet_image_alloc(ctx, &mask, w, h, 1, UNET_DTYPE_U8) != UNET_STATUS_OK) {
        cli_error("%s: out of memory", j->path);
        goto done;
    }
    uint8_t *mk = mask.data;
    for (size_t i = 0; i < P; i++)
        mk[i] = (uint8_t)(K <= 2 && !npy ? (labels[i] ? 255 : 0) : labels[i]);
    if (!save(ctx, name[OUT_MASK], &mask)) goto done;
    if (a->instances) {
        int count;
        /* The watershed floods by the cells' probability (plane 1; the only plane for one
         * class); logits, already written, become probabilities here. */
        if (j->output == UNET_OUTPUT_LOGITS) {
            if ((s = unet_probabilities(ctx, out, K, h, w)) != UNET_STATUS_OK) {
                cli_lib_error(ctx, s);
                goto done;
            }
            j->output = UNET_OUTPUT_PROBABILITIES;
        }
        unet_instance_opts io = {strcmp(a->instance_method, "cc") == 0 ? UNET_INSTANCES_CC
                                                                        : UNET_INSTANCES_WATERSHED,
                                 a->grow, a->erode, a->min_size, a->seed_threshold};
        int32_t *inst = malloc(sizeof(int32_t) * P);
        s = !inst ? UNET_STATUS_NOMEM
                  : unet_segment_instances(ctx, labels, out + (K > 1 ? P : 0), h, w, &io, inst,
                                           &count);
        if (s != UNET_STATUS_OK) {
            free(inst);
            cli_lib_error(ctx, s);
            goto done;
        }
        if (count > 65535) {
            unet_image li = {.w = w, .h = h, .c = 1, .dtype = UNET_DTYPE_I32, .data = inst};
            ok = save(ctx, name[OUT_INSTANCES], &li);
        } else {
            unet_image li = {0};
            ok = unet_image_alloc(ctx, &li, w, h, 1, UNET_DTYPE_U16) == UNET_STATUS_OK;
            for (size_t i = 0; ok && i < P; i++) ((uint16_t *)li.data)[i] = (uint16_t)inst[i];
            ok = ok && save(ctx, name[OUT_INSTANCES], &li);
            unet_image_free(&li);
        }
        free(inst);
        if (!ok) goto done;
        ok = false;
    }
    if (a->probabilities) {
        if (j->output == UNET_OUTPUT_LOGITS) {
            /* Softmax (sigmoid) of the logits already written. */
            s = unet_probabilities(ctx, out, K, h, w);
            if (s != UNET_STATUS_OK) {
                cli_lib_error(ctx, s);
                goto done;
            }
        }
        unet_image pi = {.w = w, .h = h, .c = K, .dtype = UNET_DTYPE_F32, .data = out};
        if (!save(ctx, name[OUT_PROB], &pi)) goto done;
    }
    if (a->overlay) {
        /* The first channel, min-max stretched for display. */
        float lo = img[0], hi = img[0];
        for (size_t i = 0; i < P; i++) {
            if (img[i] < lo) lo = img[i];
            if (img[i] > hi) hi = img[i];
        }
        for (size_t i = 0; i < P; i++) img[i] = hi > lo ? (img[i] - lo) / (hi - lo) : 0.0f;
        if (unet_image_alloc(ctx, &extra, w, h, 3, UNET_DTYPE_U8) != UNET_STATUS_OK) {
            cli_error("%s: out of memory", j->path);
            goto done;
        }
        s = unet_overlay(ctx, img, labels, h, w, extra.data);
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            goto done;
        }
        if (!save(ctx, name[OUT_OVERLAY], &extra)) goto done;
    }
    ok = true;
done:
    unet_image_free(&mask);
    unet_image_free(&extra);
    return ok;
}

static void write_stage(void *user, void *job) {
    struct run *r = user;
    struct job *j = job;
    if (j->ok && write_outputs(r, j)) {
        r->done++;
        if (!r->a->quiet)
            cli_message("[%d/%d] %s%s  %.2f s\n", j->file + 1, r->files->count,
                        cli_basename(j->path), j->pages > 1 ? " (page)" : "",
                        cli_now() - j->start);
    } else {
        r->failed++;
    }
    job_free(j);
}

/* Before any image is predicted: the path rule over every output of every input (each page of
 * a stack), then the lock on the output folder and the removal of temporaries that runs killed
 * mid-write left there.  0 with *lock_fd held, or the exit status (message printed). */
static int guard(unet_ctx *ctx, const struct pargs *a, const struct cli_files *files, int *lock_fd) {
    static char names[N_OUT][OUT_NAME_MAX];
    struct cli_uses us = {0};
    int rc = 0;
    cli_uses_read(&us, a->model, "--model", 0);
    for (int i = 0; i < files->count; i++) cli_uses_read(&us, files->paths[i], "an input image", 0);
    for (int i = 0; i < files->count && !rc; i++) {
        int pages = 1;
        if (unet_image_pages_with(ctx, files->paths[i], &a->in.opts, &pages) != UNET_STATUS_OK)
            continue; /* reported later */
        for (int p = 0; p < pages && !rc; p++) {
            if (!output_names(a, files->paths[i], p, pages, names)) rc = CLI_EXIT_FAIL;
            for (int k = 0; k < N_OUT && !rc; k++)
                if (names[k][0])
                    cli_uses_write(&us, names[k], out_role[k], files->paths[i], CLI_OUT_ANY, 0);
        }
    }
    if (!rc) rc = cli_uses_check(&us, false);
    cli_uses_free(&us);
    if (rc) return rc;
    *lock_fd = cli_lock(a->output, "--output");
    if (*lock_fd < 0) return CLI_EXIT_FAIL;
    unet_remove_stale_temporaries(a->output);
    if (a->logits) unet_remove_stale_temporaries(a->logits);
    return 0;
}

/* A context for a pipeline thread with the main one's limits and thread count. */
static unet_ctx *stage_ctx(const struct pargs *a, uint64_t max_pixels) {
    unet_ctx *ctx = unet_ctx_create();
    if (!ctx) return NULL;
    if (max_pixels) unet_ctx_set_max_pixels(ctx, max_pixels);
    if (a->budget < unet_ctx_max_image_bytes(ctx)) unet_ctx_set_max_image_bytes(ctx, a->budget);
    if (a->threads) unet_ctx_set_threads(ctx, a->threads);
    return ctx;
}

/* What every rank of an mpirun must agree on: the build and arguments, the model, the files. */
static uint64_t predict_hash(int argc, char **argv, unet_model *m, const struct cli_files *files) {
    if (dist_size() == 1) return 0; /* nobody to agree with: no pass over the weights */
    uint64_t h = dist_hash_args(argc, argv);
    size_t n = 0;
    const float *w = unet_model_block(m, UNET_BLOCK_WEIGHTS, &n);
    h = dist_hash(h, unet_model_config(m), sizeof(unet_config));
    h = dist_hash(h, w, n * sizeof(float));
    for (int i = 0; i < files->count; i++)
        h = dist_hash(h, files->paths[i], strlen(files->paths[i]) + 1);
    return h;
}

int cmd_predict(int argc, char **argv) {
    const unet_instance_opts idef = unet_instance_defaults();
    struct pargs a = {.tile = 0, .overlap = INT_MIN, .batch = 1, .grow = idef.grow,
                      .erode = idef.erode, .min_size = idef.min_size,
                      .seed_threshold = idef.seed_threshold,
                      .instance_method = "watershed", .cache = "auto"};
    const char *precision = "fp32";
    unet_precision prec = UNET_PRECISION_FP32;
    const struct cli_option opts[] = {
        {"--model", CLI_STR, &a.model, "FILE", .help = "the trained model (.safetensors)"},
        {"--input", CLI_STR, &a.input, "FILE|DIR",
         .help = "an image, a stack or a folder of images"},
        {"--output", CLI_STR, &a.output, "DIR", .help = "where the masks go (created if missing)"},
        {"--probabilities", CLI_FLAG, &a.probabilities, NULL, .help = "also write NAME_prob.tif"},
        {"--overlay", CLI_FLAG, &a.overlay, NULL, .help = "also write NAME_overlay.png"},
        {"--instances", CLI_FLAG, &a.instances, NULL, .help = "also write 16-bit instance labels"},
        {"--grow", CLI_INT, &a.grow, "N", .help = "grow instances back over N border pixels (2)",
         .lo = 0, .hi = HUGE_VAL},
        {"--instance-method", CLI_WORD, &a.instance_method, "watershed|cc",
         .help = "watershed (default: seeds from the eroded cells) or cc (connected components)"},
        {"--erode", CLI_INT, &a.erode, "N", .help = "watershed seeds: cells eroded by N pixels (8)",
         .lo = 0, .hi = HUGE_VAL},
        {"--min-size", CLI_INT, &a.min_size, "N", .help = "remove instances under N pixels (256)",
         .lo = 0, .hi = HUGE_VAL},
        {"--seed-threshold", CLI_FLOAT, &a.seed_threshold, "P",
         .help = "watershed seeds: cells with probability above P (0.8)"},
        {"--logits", CLI_STR, &a.logits, "FILE.npy|DIR",
         .help = "raw logits (classes, H, W) float32"},
        {"--tile", CLI_INT, &a.tile, "T",
         .help = "input tile side (default: whole image up to 1024)", .lo = 0, .hi = HUGE_VAL},
        {"--overlap", CLI_INT, &a.overlap, "O", .help = "output overlap between tiles (64)"},
        {"--batch", CLI_INT, &a.batch, "B", .help = "tiles per forward pass (1)", .lo = 1,
         .hi = HUGE_VAL},
        {"--tta", CLI_FLAG, &a.tta, NULL, .help = "average the 8 flips/rotations"},
        {"--norm", CLI_WORD, &a.norm, "auto|percentile|max|none",
         .help = "auto (default), percentile, max, none"},
        {"--precision", CLI_WORD, &precision, "fp32|bf16",
         .help = "fp32 (default) or bf16: bf16 products where the CPU has AVX512_BF16"},
        {"--channel-axis", CLI_STR, &a.channel_axis, "AXIS", .help = CLI_CHANNEL_AXIS_HELP},
        {"--channels", CLI_STR, &a.channels, "SPEC",
         .help = CLI_CHANNELS_HELP " (default: the model's)"},
        {"--cache", CLI_WORD, &a.cache, "auto|on|off",
         .help = "the inference cache of transformed weights: faster, 4x the weights' memory; "
                 "auto (default: on while it fits --max-memory), on, off"},
        {"--threads", CLI_INT, &a.threads, "T", .help = "threads (all cores)"},
        {"--max-pixels", CLI_STR, &a.max_pixels, "N", .help = CLI_MAX_PIXELS_HELP},
        {"--max-memory", CLI_STR, &a.max_memory, "SIZE", .help = CLI_MAX_MEMORY_HELP},
        {"--quiet", CLI_FLAG, &a.quiet, NULL, .help = "no progress lines"},
    };
    const struct cli_command cmd = {
        "predict", "--model FILE --input FILE|DIR --output DIR [options]", opts, CLI_COUNT(opts)};
    if (!cli_options_parse(&cmd, argc, argv, NULL, 0, NULL)) return CLI_EXIT_USAGE;
    if (!a.model || !a.input || !a.output) {
        cli_error("predict: --model, --input and --output are required (see unet predict --help)");
        return CLI_EXIT_USAGE;
    }
    if (!cli_input_parse(&a.in, a.channel_axis, a.channels, a.norm)) return CLI_EXIT_USAGE;
    if (!cli_parse_precision(precision, &prec)) return CLI_EXIT_USAGE;
    uint64_t max_pixels = 0;
    if (a.max_pixels && !cli_parse_max_pixels(a.max_pixels, &max_pixels)) return CLI_EXIT_USAGE;
    a.budget = cli_memory_default();
    if (a.max_memory && !cli_parse_bytes("--max-memory", a.max_memory, &a.budget))
        return CLI_EXIT_USAGE;
    if (!(a.seed_threshold >= 0 && a.seed_threshold < 1)) { /* [0, 1): not a table range */
        cli_error("predict: 0 <= --seed-threshold < 1");
        return CLI_EXIT_USAGE;
    }
    unet_ctx *ctx = unet_ctx_create();
    if (!ctx) return CLI_EXIT_FAIL;
    if (max_pixels) unet_ctx_set_max_pixels(ctx, max_pixels);
    if (a.budget < unet_ctx_max_image_bytes(ctx)) unet_ctx_set_max_image_bytes(ctx, a.budget);
    if (!a.threads) a.threads = dist_threads(unet_ctx_threads(ctx));
    if (a.threads && unet_ctx_set_threads(ctx, a.threads) != UNET_STATUS_OK) {
        cli_lib_error(ctx, UNET_STATUS_ARG);
        unet_ctx_free(ctx);
        return CLI_EXIT_USAGE;
    }
    unet_model *m = NULL;
    struct cli_files files = {0};
    int failed = 0, done = 0, lock_fd = -1, rc = 0;
    unet_status s = unet_model_load(ctx, a.model, &m);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        unet_ctx_free(ctx);
        return CLI_EXIT_FAIL;
    }
    cli_set_precision(ctx, m, prec, a.quiet);
    /* Which model of a training run this is (unet train writes "best ..." or "last ..."). */
    const char *selected = unet_model_meta(m, "selected");
    if (selected && !a.quiet) cli_note("model %s: %s", a.model, selected);
    cli_input_from_model(&a.in, m, a.model, false, a.quiet);
    if (!cli_mkdir(a.output) || !cli_list_images(a.input, &files)) {
        unet_model_free(m);
        unet_ctx_free(ctx);
        return CLI_EXIT_FAIL;
    }
    int first_pages = 1;
    if (files.count == 1) unet_image_pages_with(ctx, files.paths[0], &a.in.opts, &first_pages);
    if (a.logits && has_ext(a.logits, ".npy") && (files.count > 1 || first_pages > 1)) {
        cli_error("--logits FILE.npy takes one input image; give a directory for several");
        failed = 1;
        goto out;
    }
    if (a.logits && !has_ext(a.logits, ".npy") && !cli_mkdir(a.logits)) {
        failed = 1;
        goto out;
    }
    /* Under mpirun rank 0 checks the paths, locks the folder and clears it of temporaries
     * before any rank writes there (dist_start waits for it); rank r predicts files r, r + N,
     * r + 2 N... */
    if (dist_rank() == 0 && (rc = guard(ctx, &a, &files, &lock_fd)) != 0) goto out;
    if (!dist_start(true, predict_hash(argc, argv, m, &files), "predict")) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    (void)dist_who(); /* its text made once here, before the stage threads print errors */
    { /* Decoding the next image and writing the last overlap the forward of this one. */
        if (strcmp(a.cache, "off") == 0) unet_model_set_cache(m, 0);
        struct run run = {.a = &a, .m = m, .ctx = {NULL, ctx, NULL}, .files = &files,
                          .file = dist_rank() - dist_size(), .stride = dist_size(),
                          .memo_side = -1, .memo_B = -1,
                          .cache_bytes = (double)(unet_model_cache(m) ? unet_model_cache_bytes(m) : 0)};
        atomic_init(&run.cache_drop, false);
        run.ctx[0] = stage_ctx(&a, max_pixels);
        run.ctx[2] = stage_ctx(&a, max_pixels);
        if (run.ctx[0] && run.ctx[2]) {
            pthread_mutex_init(&run.model_lock, NULL);
            cli_progress_init(&run.prog);
            const struct cli_stages stages = {read_stage, compute_stage, write_stage, &run};
            /* The jobs share what the weights and the cache leave of the budget. */
            const double held = 4.0 * (double)unet_model_param_count(m) + run.cache_bytes;
            cli_pipeline_run(&stages, (double)a.budget > held ? (double)a.budget - held : 1.0,
                             &run.prog);
            pthread_mutex_destroy(&run.model_lock);
            failed = run.failed, done = run.done;
        } else {
            cli_error("out of memory");
            rc = CLI_EXIT_FAIL;
        }
        unet_ctx_free(run.ctx[0]);
        unet_ctx_free(run.ctx[2]);
    }
    double counts[2] = {failed, done};   /* over the ranks */
    dist_sum_f64(counts, 2, NULL);
    dist_agreed_end();
    failed = (int)counts[0], done = (int)counts[1];
    if (failed && dist_rank() == 0)
        cli_error("%d of %d images failed (see above); %d written to %s", failed, done + failed,
                  done, a.output);
out:
    cli_unlock(lock_fd, NULL);
    cli_files_free(&files);
    unet_model_free(m);
    unet_ctx_free(ctx);
    return rc ? rc : failed ? CLI_EXIT_FAIL : 0;
}
