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

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct pargs {
    const char *model, *input, *output, *logits, *norm, *max_pixels, *max_memory, *instance_method;
    const char *channel_axis, *channels;
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

static int progress_cb(int done, int total, void *user) {
    struct cli_progress *p = user;
    if (total > 1) cli_progress_line(p, "  tile %d/%d", done, total);
    return 0;
}

/* The memory predicting page `page` of path takes, from its header, against the budget; and
 * its channels against the model's.  Both before any pixel is decoded (a sparse .npy of 4096
 * channels used to be loaded, 1.3 GB, before this was noticed). */
static bool fits(unet_ctx *ctx, unet_model *m, const struct pargs *a, const char *path, int page) {
    const unet_config *cfg = unet_model_config(m);
    unet_image info;
    int channels;
    if (!cli_image_channels(ctx, &a->in, path, page, &info, &channels)) return false;
    if (channels != cfg->in_channels) {
        cli_channels_mismatch(&a->in, path, &info, channels, cfg->in_channels, "the model takes");
        return false;
    }
    const double P = (double)info.w * info.h, C = info.c, K = cfg->classes;
    int side = info.h > info.w ? info.h : info.w, T = a->tile;
    if (T <= 0 && unet_model_round_size(ctx, m, side < 1024 ? side : 1024, &T) != UNET_STATUS_OK)
        T = 1024;
    /* Batches never hold more tiles than the image has. */
    double tiles = ceil((double)info.h / T) * ceil((double)info.w / T);
    int B = (double)a->batch < tiles ? a->batch : (int)tiles;
    size_t act = 0;
    unet_model_cost(ctx, m, B, T, T, NULL, &act);
    double need = P * C * (double)unet_dtype_size(info.dtype)  /* the decoded image */
                  + 4 * C * P + 4 * K * P + 5 * P               /* floats, output, labels, mask */
                  + (a->instances ? 6 * P : 0) + (a->overlay ? 3 * P : 0) +
                  (a->tta ? 4 * (C + K) * P : 0) + (double)act +
                  4.0 * B * (C + K) * (double)T * T             /* tiles in and out */
                  + 4.0 * (double)unet_model_param_count(m);
    char what[4200];
    snprintf(what, sizeof what, "%s: predicting this %dx%d image with %d channels", path, info.w,
             info.h, info.c);
    return cli_within_budget(what, need, a->budget);
}

/* Predicts one image (page) and writes the requested outputs; false on failure (reported). */
static bool predict_one(unet_ctx *ctx, unet_model *m, const struct pargs *a, const char *path,
                        int page, int pages, struct cli_progress *prog) {
    const unet_config *cfg = unet_model_config(m);
    float *img = NULL, *out = NULL;
    int32_t *labels = NULL;
    int c, h, w;
    bool ok = false;
    static char name[N_OUT][OUT_NAME_MAX];
    unet_image mask = {0}, extra = {0};
    if (!output_names(a, path, page, pages, name) || !fits(ctx, m, a, path, page)) goto done;
    if (!cli_load_image(ctx, &a->in, path, page, &img, &c, &h, &w)) goto done;
    const int K = cfg->classes;
    const size_t P = (size_t)h * w;
    out = malloc(sizeof(float) * P * (size_t)K);
    labels = malloc(sizeof(int32_t) * P);
    if (!out || !labels) {
        cli_error("%s: out of memory (%dx%d)", path, w, h);
        goto done;
    }
    unet_predict_opts po = unet_predict_defaults();
    po.tile = a->tile;
    if (a->overlap != INT_MIN) po.overlap = a->overlap; /* the library rejects negatives */
    po.tta = a->tta;
    po.batch = a->batch;
    /* Logits first when asked for (probabilities follow from them exactly, without TTA). */
    po.output = a->logits && !a->tta ? UNET_OUTPUT_LOGITS : UNET_OUTPUT_PROBABILITIES;
    unet_status s = unet_predict(ctx, m, img, h, w, &po, out, a->quiet ? NULL : progress_cb, prog);
    if (s != UNET_STATUS_OK) {
        cli_error("%s: %s: %s", path, unet_status_str(s), unet_ctx_errmsg(ctx));
        goto done;
    }
    size_t bad = unet_count_nonfinite(out, P * (size_t)K);
    if (bad)
        cli_note("warning: %s: %zu of %zu output values are NaN or infinite (the network "
                 "overflowed there); those pixels get class 0", path, bad, P * (size_t)K);
    if (a->logits) {
        unet_image li = {.w = w, .h = h, .c = K, .dtype = UNET_DTYPE_F32, .data = out};
        if (!save(ctx, name[OUT_LOGITS], &li)) goto done;
    }
    unet_argmax(out, K, h, w, po.output, labels);
    /* The mask in the input's format family (TIFF for TIFF, .npy for .npy, else PNG): 0/255 for
     * two classes (visible, and read back as binary), class ids otherwise and in .npy. */
    bool npy = has_ext(path, ".npy");
    if (unet_image_alloc(ctx, &mask, w, h, 1, UNET_DTYPE_U8) != UNET_STATUS_OK) {
        cli_error("%s: out of memory", path);
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
        if (po.output == UNET_OUTPUT_LOGITS) {
            if ((s = unet_probabilities(ctx, out, K, h, w)) != UNET_STATUS_OK) {
                cli_lib_error(ctx, s);
                goto done;
            }
            po.output = UNET_OUTPUT_PROBABILITIES;
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
        if (po.output == UNET_OUTPUT_LOGITS) {
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
            cli_error("%s: out of memory", path);
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
    free(img), free(out), free(labels);
    unet_image_free(&mask);
    unet_image_free(&extra);
    return ok;
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

/* What every rank of an mpirun must agree on: the build and arguments, the model, the files. */
static uint64_t predict_hash(int argc, char **argv, unet_model *m, const struct cli_files *files) {
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
                      .instance_method = "watershed"};
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
    struct cli_progress prog;
    cli_progress_init(&prog);
    for (int i = dist_rank(); i < files.count; i += dist_size()) {
        const char *path = files.paths[i];
        int pages = 1;
        if (!cli_image_pages(ctx, &a.in, path, &pages)) {
            failed++;
            continue;
        }
        for (int p = 0; p < pages; p++) {
            double t = cli_now();
            bool ok = predict_one(ctx, m, &a, path, p, pages, &prog);
            cli_progress_done(&prog);
            if (!ok) {
                failed++;
                continue;
            }
            done++;
            if (!a.quiet)
                fprintf(stderr, "[%d/%d] %s%s  %.2f s\n", i + 1, files.count, cli_basename(path),
                        pages > 1 ? " (page)" : "", cli_now() - t);
        }
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
