/* cmd_eval.c — unet eval: predicted masks against ground truth, per image and on average.
 *
 * Pairs files by name (NAME.png in --pred matches NAME.tif in --truth).  Masks are read with the
 * training rules (two classes: any non-zero value is foreground).  Instances: the truth's own
 * labels when it is an instance label image (several distinct non-zero values), else connected
 * components; the prediction's NAME_instances.tif when present (its labels as they are, one
 * object or none included), else connected components.
 * SEG's mean is also given as the Cell Tracking Challenge computes it over a sequence: the
 * mean over all reference objects of all images (seg_ctc), beside the mean of the images' SEG.
 * V_rand and V_info (ISBI 2012, unet_vscores, borders thinned unless --no-thin) of the mask as a
 * binary proposal; with --prob, of NAME_prob.tif (unet predict --probabilities: the cells'
 * plane, page 1, or the only page) at the challenge's thresholds 0.0..1.0: per image at 0.5 and
 * the best, and for the set the best threshold of the mean over images, as the challenge
 * ranked a stack.
 */
#include "cli/cli.h"
#include "cli/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A mask file read once: its class ids by the training rules (cls; NULL: not wanted) and its
 * labels as stored (inst; NULL: not wanted), *several set when they are an instance label
 * image (more than one distinct non-zero value).  On failure nothing is left allocated. */
static bool load_mask(unet_ctx *ctx, const char *path, int classes, int32_t **cls,
                      int32_t **inst, int *several, int *h, int *w) {
    unet_image m = {0};
    if (cls) *cls = NULL;
    if (inst) *inst = NULL;
    const unet_image_opts mask = {UNET_CHANNEL_AXIS_AUTO, 1}; /* palette PNGs: their indices */
    unet_status s = unet_image_load_with(ctx, path, 0, &mask, &m);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    size_t P = (size_t)m.h * m.w;
    int mh = m.h, mw = m.w, n_inst = 0;
    int32_t *c = cls ? malloc(sizeof(int32_t) * P) : NULL;
    int32_t *l = inst ? malloc(sizeof(int32_t) * P) : NULL;
    if ((cls && !c) || (inst && !l)) {
        cli_error("%s: out of memory", path);
        free(c);
        free(l);
        unet_image_free(&m);
        return false;
    }
    if (cls) s = unet_mask_to_classes(ctx, &m, classes, path, c);
    if (s == UNET_STATUS_OK && inst) s = unet_mask_labels(ctx, &m, path, l, &n_inst);
    unet_image_free(&m);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        free(c);
        free(l);
        return false;
    }
    if (cls) *cls = c;
    if (inst) *inst = l;
    if (several) *several = n_inst;
    *h = mh;
    *w = mw;
    return true;
}

/* A JSON string: quotes, backslashes and control characters escaped. */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v) {
    if (isnan(v)) fprintf(f, "null");
    else fprintf(f, "%.6g", v);
}

/* pred_dir/STEM<suffix> for the truth file tp (malloc'd), or NULL when out of memory. */
static char *pred_file(const char *pred_dir, const char *tp, const char *suffix) {
    char  *stem = cli_stem(tp), *path = NULL;
    size_t len = stem ? strlen(stem) + strlen(suffix) + 1 : 0;
    char  *name = stem ? malloc(len) : NULL;
    if (name) {
        snprintf(name, len, "%s%s", stem, suffix);
        path = cli_join(pred_dir, name);
    }
    free(name);
    free(stem);
    return path;
}

/* The cells' probability plane of a NAME_prob.tif (page 1, or page 0 of a one-page file), h x w
 * like the truth; NULL on failure (reported). */
static float *load_prob(unet_ctx *ctx, const char *path, const char *tp, int h, int w) {
    int         pages = 0;
    unet_image  im = {0};
    float      *p = NULL;
    unet_status s = unet_image_pages(ctx, path, &pages);
    if (s == UNET_STATUS_OK) s = unet_image_load(ctx, path, pages > 1 ? 1 : 0, &im);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return NULL;
    }
    if (im.c != 1 || im.h != h || im.w != w) {
        cli_error("%s is %dx%d with %d channels; the truth %s is %dx%d", path, im.w, im.h, im.c,
                  tp, w, h);
    } else if (!(p = malloc(sizeof(float) * (size_t)h * w))) {
        cli_error("%s: out of memory", path);
    } else if ((s = unet_image_to_float(ctx, &im, UNET_NORM_NONE, p)) != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        free(p);
        p = NULL;
    }
    unet_image_free(&im);
    return p;
}

static void json_nums(FILE *f, const double *v, int n) {
    fputc('[', f);
    for (int k = 0; k < n; k++) fprintf(f, k ? ", " : ""), json_num(f, v[k]);
    fputc(']', f);
}

/* The best value of v[0..n) (NaN ignored, the first of equals) and its index; -1 if all NaN. */
static int best_of(const double *v, int n) {
    int b = -1;
    for (int k = 0; k < n; k++)
        if (!isnan(v[k]) && (b < 0 || v[k] > v[b])) b = k;
    return b;
}

/* JSON object of probability-map scores: the curves over thresholds, at 0.5, the best; pf is
 * the pixel similarity's F-score (the challenge's pixel error is 1 - its best). */
static void json_prob(FILE *f, const double *thr, const double *vr, const double *vi,
                      const double *pf) {
    const int T = UNET_VSCORE_THRESHOLDS, h = 5; /* thr[5] == 0.5 */
    int       br = best_of(vr, T), bi = best_of(vi, T), bp = best_of(pf, T);
    fprintf(f, "{\"thresholds\": ");
    json_nums(f, thr, T);
    fprintf(f, ", \"v_rand\": ");
    json_nums(f, vr, T);
    fprintf(f, ", \"v_info\": ");
    json_nums(f, vi, T);
    fprintf(f, ", \"v_rand_at_05\": ");
    json_num(f, vr[h]);
    fprintf(f, ", \"v_info_at_05\": ");
    json_num(f, vi[h]);
    fprintf(f, ", \"best_v_rand\": ");
    json_num(f, br < 0 ? NAN : vr[br]);
    fprintf(f, ", \"best_v_rand_threshold\": ");
    json_num(f, br < 0 ? NAN : thr[br]);
    fprintf(f, ", \"best_v_info\": ");
    json_num(f, bi < 0 ? NAN : vi[bi]);
    fprintf(f, ", \"best_v_info_threshold\": ");
    json_num(f, bi < 0 ? NAN : thr[bi]);
    fprintf(f, ", \"pixel_f\": ");
    json_nums(f, pf, T);
    fprintf(f, ", \"best_pixel_error\": ");
    json_num(f, bp < 0 ? NAN : 1.0 - pf[bp]);
    fprintf(f, ", \"best_pixel_error_threshold\": ");
    json_num(f, bp < 0 ? NAN : thr[bp]);
    fputc('}', f);
}

enum { PROW = 8 }; /* values per image of the probability table */

int cmd_eval(int argc, char **argv) {
    const char *pred_dir = NULL, *truth_dir = NULL, *report = NULL, *image_dir = NULL;
    int classes;
    bool json = false, prob = false, no_thin = false;
    const struct cli_option opts[] = {
        {"--pred", CLI_STR, &pred_dir, "DIR", .help = "predicted masks (unet predict's output)"},
        {"--truth", CLI_STR, &truth_dir, "DIR", .help = "ground-truth masks with the same names"},
        {"--classes", CLI_INT, &classes, "K", .help = "classes", .def = "2", .lo = 2,
         .hi = UNET_MAX_CLASSES},
        {"--prob", CLI_FLAG, &prob, NULL,
         .help = "also score NAME_prob.tif (predict --probabilities): ISBI 2012 V_rand, V_info "
                 "over thresholds 0.0..1.0"},
        {"--no-thin", CLI_FLAG, &no_thin, NULL,
         .help = "V_rand, V_info without the challenge's border thinning"},
        {"--json", CLI_FLAG, &json, NULL, .help = "print JSON instead of a table"},
        {"--report", CLI_STR, &report, "FILE", .help = "write an HTML report (docs/report.md)"},
        {"--images", CLI_STR, &image_dir, "DIR",
         .help = "the input images, for the report's pictures"},
    };
    const struct cli_command cmd = {"eval", "--pred DIR --truth DIR [--classes K] [--prob] "
                                            "[--no-thin] [--json] [--report FILE.html "
                                            "[--images DIR]]",
                                    opts, CLI_COUNT(opts)};
    if (!cli_options_parse(&cmd, argc, argv, NULL, 0, NULL)) return CLI_EXIT_USAGE;
    if (report && !report_check_out(report)) return CLI_EXIT_USAGE;
    if (!pred_dir || !truth_dir) {
        cli_error("eval: --pred and --truth are required");
        return CLI_EXIT_USAGE;
    }
    struct cli_files truth;
    if (!cli_list_images(truth_dir, &truth)) return CLI_EXIT_FAIL;
    unet_ctx *ctx = unet_ctx_create();
    int n = 0, failed = 0;
    double sum_px = 0, sum_iou = 0, sum_dice = 0, sum_rand = 0, sum_seg = 0, sum_ap = 0;
    double seg_objects_sum = 0, sum_vr = 0, sum_vi = 0;
    int n_rand = 0, n_seg = 0, n_iou = 0, seg_objects = 0, n_v = 0;
    const int T = UNET_VSCORE_THRESHOLDS;
    double thr[UNET_VSCORE_THRESHOLDS], curve_r[UNET_VSCORE_THRESHOLDS] = {0},
           curve_i[UNET_VSCORE_THRESHOLDS] = {0}, curve_p[UNET_VSCORE_THRESHOLDS];
    double sum_tp[UNET_VSCORE_THRESHOLDS] = {0}, sum_fp[UNET_VSCORE_THRESHOLDS] = {0},
           sum_fn[UNET_VSCORE_THRESHOLDS] = {0}; /* the stack's pixel counts */
    int n_curve = 0;
    unet_vscore_thresholds(thr);
    /* Per image, for the table printed after the first: V at 0.5, the best V over thresholds,
     * the best pixel error. */
    double *prow = prob ? calloc((size_t)truth.count * PROW, sizeof *prow) : NULL;
    char  **pname = prob ? calloc((size_t)truth.count, sizeof *pname) : NULL;
    if (prob && (!prow || !pname)) {
        cli_error("eval: out of memory");
        free(prow), free(pname);
        cli_files_free(&truth);
        unet_ctx_free(ctx);
        return CLI_EXIT_FAIL;
    }
    FILE *o = stdout;
    /* --report: the JSON goes to memory for the page (report.c), which prints it or a summary. */
    char *report_json = NULL;
    size_t report_len = 0;
    bool print_json = json;
    if (report) {
        json = true;
        o = open_memstream(&report_json, &report_len);
        if (!o) cli_error("out of memory for the report"), o = stdout, report = NULL, failed++;
    }
    if (json) fprintf(o, "{"), report_eval_dirs_json(o, pred_dir, truth_dir, image_dir, classes);
    if (json) fprintf(o, "\"images\": [");
    else fprintf(o, "%-28s %9s %8s %8s %9s %7s %7s %7s %7s\n", "image", "pixel err", "IoU",
                 "Dice", "Rand err", "SEG", "AP50", "V_rand", "V_info");
    for (int i = 0; i < truth.count; i++) {
        const char *tp = truth.paths[i];
        char *pp = cli_find_match(pred_dir, tp);
        int32_t *pc = NULL, *tc = NULL, *ti = NULL, *pi = NULL;
        int h, w, ph, pw;
        if (!pp) {
            cli_error("%s: no prediction with this name in %s", tp, pred_dir);
            failed++;
            continue;
        }
        int several = 0;
        bool ok = load_mask(ctx, tp, classes, &tc, &ti, &several, &h, &w) &&
                  load_mask(ctx, pp, classes, &pc, NULL, NULL, &ph, &pw);
        if (ok && !several) free(ti), ti = NULL; /* a binary truth: its connected components */
        if (ok && (ph != h || pw != w)) {
            cli_error("%s is %dx%d but the truth %s is %dx%d", pp, pw, ph, tp, w, h);
            ok = false;
        }
        if (ok) {
            /* The prediction's instances, when unet predict --instances wrote them: their
             * labels as they are, however many (one cell, or none, is an answer too); a file
             * that is there but cannot be used fails the image. */
            char *ip = pred_file(pred_dir, tp, "_instances.tif");
            if (ip && access(ip, R_OK) == 0) {
                int ih, iw;
                ok = load_mask(ctx, ip, 0, NULL, &pi, NULL, &ih, &iw);
                if (ok && (ih != h || iw != w)) {
                    cli_error("%s is %dx%d but the truth %s is %dx%d", ip, iw, ih, tp, w, h);
                    ok = false;
                }
            }
            free(ip);
        }
        unet_metrics mt;
        if (ok) {
            unet_status s = unet_evaluate(ctx, pc, tc, pi, ti, h, w, classes, &mt);
            if (s != UNET_STATUS_OK) {
                cli_lib_error(ctx, s);
                ok = false;
            }
        }
        /* V_rand, V_info: the mask as a binary proposal (Fiji's "binary proposal": threshold
         * 0), and with --prob the probability map at the challenge's thresholds. */
        unet_vscore vm = {0}, vp[UNET_VSCORE_THRESHOLDS];
        float *pf = ok ? malloc(sizeof(float) * (size_t)h * w) : NULL;
        if (ok && !pf) {
            cli_error("%s: out of memory", tp);
            ok = false;
        }
        if (ok) {
            const double zero = 0.0;
            for (size_t q = 0; q < (size_t)h * w; q++) pf[q] = pc[q] > 0;
            unet_status s = unet_vscores(ctx, pf, ti ? ti : tc, ti != NULL, h, w, !no_thin,
                                         &zero, 1, &vm);
            free(pf);
            pf = NULL;
            if (s == UNET_STATUS_OK && prob) {
                char *fp = pred_file(pred_dir, tp, "_prob.tif");
                pf = fp ? load_prob(ctx, fp, tp, h, w) : NULL;
                if (!fp) cli_error("%s: out of memory", tp);
                free(fp);
                s = pf ? unet_vscores(ctx, pf, ti ? ti : tc, ti != NULL, h, w, !no_thin, thr, T,
                                      vp)
                       : UNET_STATUS_IO; /* already reported */
                if (!pf) ok = false;
            }
            if (s != UNET_STATUS_OK && ok) {
                cli_lib_error(ctx, s);
                ok = false;
            }
        }
        free(pf);
        free(pc), free(tc), free(ti), free(pi), free(pp);
        if (!ok) {
            failed++;
            continue;
        }
        double iou = classes == 2 ? mt.iou[1] : mt.mean_iou;
        double dice = classes == 2 ? mt.dice[1] : mt.mean_dice;
        if (json) {
            fprintf(o, "%s\n  {\"name\": ", n ? "," : "");
            json_str(o, cli_basename(tp));
            fprintf(o, ", \"pixel_error\": ");
            json_num(o, mt.pixel_error);
            fprintf(o, ", \"iou\": [");
            for (int k = 0; k < classes; k++) fprintf(o, k ? ", " : ""), json_num(o, mt.iou[k]);
            fprintf(o, "], \"dice\": [");
            for (int k = 0; k < classes; k++) fprintf(o, k ? ", " : ""), json_num(o, mt.dice[k]);
            fprintf(o, "], \"rand_error\": ");
            json_num(o, mt.rand_error);
            fprintf(o, ", \"seg\": ");
            json_num(o, mt.seg);
            fprintf(o, ", \"ap50\": ");
            json_num(o, mt.ap50);
            fprintf(o, ", \"objects_true\": %d, \"objects_pred\": %d", mt.n_true, mt.n_pred);
            fprintf(o, ", \"v_rand\": ");
            json_num(o, vm.v_rand);
            fprintf(o, ", \"v_info\": ");
            json_num(o, vm.v_info);
            if (prob) {
                double vr[UNET_VSCORE_THRESHOLDS], vi[UNET_VSCORE_THRESHOLDS],
                    pxf[UNET_VSCORE_THRESHOLDS];
                for (int k = 0; k < T; k++)
                    vr[k] = vp[k].v_rand, vi[k] = vp[k].v_info, pxf[k] = vp[k].pixel_f;
                fprintf(o, ", \"prob\": ");
                json_prob(o, thr, vr, vi, pxf);
            }
            fputc('}', o);
        } else {
            fprintf(o, "%-28s %9.4f %8.4f %8.4f %9.4f %7.4f %7.4f %7.4f %7.4f\n",
                    cli_basename(tp), mt.pixel_error, iou, dice, mt.rand_error, mt.seg, mt.ap50,
                    vm.v_rand, vm.v_info);
        }
        if (prob) {
            double vr[UNET_VSCORE_THRESHOLDS], vi[UNET_VSCORE_THRESHOLDS],
                pxf[UNET_VSCORE_THRESHOLDS];
            for (int k = 0; k < T; k++) {
                vr[k] = vp[k].v_rand, vi[k] = vp[k].v_info, pxf[k] = vp[k].pixel_f;
                sum_tp[k] += vp[k].tp, sum_fp[k] += vp[k].fp, sum_fn[k] += vp[k].fn;
            }
            int br = best_of(vr, T), bi = best_of(vi, T), bp = best_of(pxf, T);
            double *row = prow + (size_t)n * PROW;
            row[0] = vr[5], row[1] = vi[5];
            row[2] = br < 0 ? NAN : vr[br], row[3] = br < 0 ? NAN : thr[br];
            row[4] = bi < 0 ? NAN : vi[bi], row[5] = bi < 0 ? NAN : thr[bi];
            row[6] = bp < 0 ? NAN : 1.0 - pxf[bp], row[7] = bp < 0 ? NAN : thr[bp];
            pname[n] = strdup(cli_basename(tp));
            if (!isnan(vr[0])) {
                for (int k = 0; k < T; k++) curve_r[k] += vr[k], curve_i[k] += vi[k];
                n_curve++;
            }
        }
        if (!isnan(vm.v_rand)) sum_vr += vm.v_rand, sum_vi += vm.v_info, n_v++;
        if (!isnan(mt.seg)) seg_objects_sum += mt.seg * mt.n_true, seg_objects += mt.n_true;
        n++;
        sum_px += mt.pixel_error;
        if (!isnan(iou)) sum_iou += iou, sum_dice += dice, n_iou++;
        if (!isnan(mt.rand_error)) sum_rand += mt.rand_error, n_rand++;
        if (!isnan(mt.seg)) sum_seg += mt.seg, n_seg++;
        sum_ap += mt.ap50;
    }
    double mpx = n ? sum_px / n : NAN, miou = n_iou ? sum_iou / n_iou : NAN;
    double mdice = n_iou ? sum_dice / n_iou : NAN, mrand = n_rand ? sum_rand / n_rand : NAN;
    double mseg = n_seg ? sum_seg / n_seg : NAN, map = n ? sum_ap / n : NAN;
    double seg_ctc = seg_objects ? seg_objects_sum / seg_objects : NAN;
    double mvr = n_v ? sum_vr / n_v : NAN, mvi = n_v ? sum_vi / n_v : NAN;
    for (int k = 0; k < T; k++) {
        curve_r[k] = n_curve ? curve_r[k] / n_curve : NAN;
        curve_i[k] = n_curve ? curve_i[k] / n_curve : NAN;
        curve_p[k] = n ? unet_pixel_f(sum_tp[k], sum_fp[k], sum_fn[k]) : NAN;
    }
    if (json) {
        fprintf(o, "\n], \"mean\": {\"images\": %d, \"pixel_error\": ", n);
        json_num(o, mpx);
        fprintf(o, ", \"iou\": ");
        json_num(o, miou);
        fprintf(o, ", \"dice\": ");
        json_num(o, mdice);
        fprintf(o, ", \"rand_error\": ");
        json_num(o, mrand);
        fprintf(o, ", \"seg\": ");
        json_num(o, mseg);
        fprintf(o, ", \"ap50\": ");
        json_num(o, map);
        fprintf(o, ", \"seg_ctc\": ");
        json_num(o, seg_ctc);
        fprintf(o, ", \"objects_true\": %d, \"v_rand\": ", seg_objects);
        json_num(o, mvr);
        fprintf(o, ", \"v_info\": ");
        json_num(o, mvi);
        if (prob) {
            fprintf(o, ", \"prob\": ");
            json_prob(o, thr, curve_r, curve_i, curve_p);
        }
        fprintf(o, "}, \"thinned\": %s, \"failed\": %d}\n", no_thin ? "false" : "true", failed);
    } else {
        fprintf(o, "%-28s %9.4f %8.4f %8.4f %9.4f %7.4f %7.4f %7.4f %7.4f\n", "mean", mpx, miou,
                mdice, mrand, mseg, map, mvr, mvi);
        fprintf(o, "(IoU and Dice of the foreground class%s; Rand error: ISBI 2012, foreground-"
                   "restricted; SEG: Cell Tracking Challenge; AP50: IoU >= 0.5; V_rand, V_info: "
                   "ISBI 2012 scores of the mask%s, 1 = perfect)\n",
                classes > 2 ? "es, averaged" : "", no_thin ? ", not thinned" : "");
        fprintf(o, "SEG as the CTC computes it, over all %d reference objects: %.4f\n",
                seg_objects, seg_ctc);
        if (prob) {
            fprintf(o, "\nprobability maps (NAME_prob.tif), ISBI 2012 scores%s at thresholds "
                       "0.0, 0.1, ..., 1.0:\n", no_thin ? " (not thinned)" : " after thinning");
            fprintf(o, "%-28s %10s %10s %17s %17s %17s\n", "image", "V_rand@0.5", "V_info@0.5",
                    "best V_rand (t)", "best V_info (t)", "pixel error (t)");
            for (int i = 0; i < n; i++) {
                const double *row = prow + (size_t)i * PROW;
                fprintf(o, "%-28s %10.4f %10.4f %10.4f (%.1f) %10.4f (%.1f) %10.4f (%.1f)\n",
                        pname[i] ? pname[i] : "?", row[0], row[1], row[2], row[3], row[4],
                        row[5], row[6], row[7]);
            }
            int br = best_of(curve_r, T), bi = best_of(curve_i, T), bp = best_of(curve_p, T);
            fprintf(o, "%-28s %10.4f %10.4f %10.4f (%.1f) %10.4f (%.1f) %10.4f (%.1f)\n", "mean",
                    curve_r[5], curve_i[5], br < 0 ? NAN : curve_r[br], br < 0 ? NAN : thr[br],
                    bi < 0 ? NAN : curve_i[bi], bi < 0 ? NAN : thr[bi],
                    bp < 0 ? NAN : 1.0 - curve_p[bp], bp < 0 ? NAN : thr[bp]);
            fprintf(o, "(mean: the best threshold of the mean over images, as the challenge "
                       "ranked a stack; errors are 1 - V; pixel error: the challenge's, 1 - the "
                       "best F-score of pixel similarity, the images' pixels counted together)\n");
        }
    }
    for (int i = 0; prob && i < truth.count; i++) free(pname[i]);
    free(pname);
    free(prow);
    if (failed) cli_error("%d of %d images could not be scored", failed, truth.count);
    if (o != stdout && (fclose(o) || report_eval(report, report_json, print_json))) failed++;
    free(report_json);
    cli_files_free(&truth);
    unet_ctx_free(ctx);
    return failed ? CLI_EXIT_FAIL : 0;
}
