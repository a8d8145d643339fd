/* cmd_eval.c — unet eval: predicted masks against ground truth, per image and on average.
 *
 * Pairs files by name (NAME.png in --pred matches NAME.tif in --truth).  Masks are read with the
 * training rules (two classes: any non-zero value is foreground).  Instances: the truth's own
 * labels when it is an instance label image (several distinct non-zero values), else connected
 * components; the prediction's NAME_instances.tif when present, else connected components.
 */
#include "cli/cli.h"
#include "cli/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A mask's class ids (training rules) and, when inst is non-NULL and the mask is an instance
 * label image, its labels (*inst NULL otherwise).  On failure nothing is left allocated. */
static bool load_classes(unet_ctx *ctx, const char *path, int classes, int32_t **cls,
                         int32_t **inst, int *h, int *w) {
    unet_image m = {0};
    *cls = NULL;
    if (inst) *inst = NULL;
    unet_status s = unet_image_load(ctx, path, 0, &m);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    size_t P = (size_t)m.h * m.w;
    int mh = m.h, mw = m.w;
    int32_t *c = malloc(sizeof(int32_t) * P), *l = inst ? malloc(sizeof(int32_t) * P) : NULL;
    int several = 0;
    if (!c || (inst && !l)) {
        cli_error("%s: out of memory", path);
        free(c);
        free(l);
        unet_image_free(&m);
        return false;
    }
    s = unet_mask_to_classes(ctx, &m, classes, path, c);
    if (s == UNET_STATUS_OK && inst) s = unet_mask_labels(ctx, &m, path, l, &several);
    unet_image_free(&m);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        free(c);
        free(l);
        return false;
    }
    if (inst && !several) {
        free(l);
        l = NULL;
    }
    *cls = c;
    if (inst) *inst = l;
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

int cmd_eval(int argc, char **argv) {
    const char *pred_dir = NULL, *truth_dir = NULL, *report = NULL, *image_dir = NULL;
    int classes = 2;
    bool json = false;
    const struct cli_opt opts[] = {
        {"--pred", CLI_STR, &pred_dir, "DIR", "predicted masks (unet predict's output)"},
        {"--truth", CLI_STR, &truth_dir, "DIR", "ground-truth masks with the same names"},
        {"--classes", CLI_INT, &classes, "K", "classes (2)"},
        {"--json", CLI_FLAG, &json, NULL, "print JSON instead of a table"},
        {"--report", CLI_STR, &report, "FILE", "write an HTML report (docs/report.md)"},
        {"--images", CLI_STR, &image_dir, "DIR", "the input images, for the report's pictures"},
    };
    if (!cli_parse("eval", "--pred DIR --truth DIR [--classes K] [--json] [--report FILE.html "
                           "[--images DIR]]", argc, argv, 2, opts,
                   (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL))
        return CLI_EXIT_USAGE;
    if (report && !report_check_out(report)) return CLI_EXIT_USAGE;
    if (!pred_dir || !truth_dir) {
        cli_error("eval: --pred and --truth are required");
        return CLI_EXIT_USAGE;
    }
    if (classes < 2 || classes > UNET_MAX_CLASSES) {
        cli_error("eval: --classes must be 2..%d", UNET_MAX_CLASSES);
        return CLI_EXIT_USAGE;
    }
    struct cli_files truth;
    if (!cli_list_images(truth_dir, &truth)) return CLI_EXIT_FAIL;
    unet_ctx *ctx = unet_ctx_create();
    int n = 0, failed = 0;
    double sum_px = 0, sum_iou = 0, sum_dice = 0, sum_rand = 0, sum_seg = 0, sum_ap = 0;
    int n_rand = 0, n_seg = 0, n_iou = 0;
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
    else fprintf(o, "%-28s %9s %8s %8s %9s %7s %7s\n", "image", "pixel err", "IoU", "Dice",
                 "Rand err", "SEG", "AP50");
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
        bool ok = load_classes(ctx, tp, classes, &tc, &ti, &h, &w) &&
                  load_classes(ctx, pp, classes, &pc, NULL, &ph, &pw);
        if (ok && (ph != h || pw != w)) {
            cli_error("%s is %dx%d but the truth %s is %dx%d", pp, pw, ph, tp, w, h);
            ok = false;
        }
        if (ok) {
            /* The prediction's instances, when unet predict --instances wrote them; a file
             * that is there but cannot be used fails the image. */
            char *stem = cli_stem(tp);
            size_t len = stem ? strlen(stem) + 32 : 0;
            char *iname = stem ? malloc(len) : NULL;
            char *ip = NULL;
            if (iname) {
                snprintf(iname, len, "%s_instances.tif", stem);
                ip = cli_join(pred_dir, iname);
            }
            if (ip && access(ip, R_OK) == 0) {
                int ih, iw;
                int32_t *tmp = NULL;
                ok = load_classes(ctx, ip, 2, &tmp, &pi, &ih, &iw);
                if (ok && (ih != h || iw != w)) {
                    cli_error("%s is %dx%d but the truth %s is %dx%d", ip, iw, ih, tp, w, h);
                    ok = false;
                }
                free(tmp);
            }
            free(ip);
            free(iname);
            free(stem);
        }
        unet_metrics mt;
        if (ok) {
            unet_status s = unet_evaluate(ctx, pc, tc, pi, ti, h, w, classes, &mt);
            if (s != UNET_STATUS_OK) {
                cli_lib_error(ctx, s);
                ok = false;
            }
        }
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
            fprintf(o, ", \"objects_true\": %d, \"objects_pred\": %d}", mt.n_true, mt.n_pred);
        } else {
            fprintf(o, "%-28s %9.4f %8.4f %8.4f %9.4f %7.4f %7.4f\n", cli_basename(tp),
                    mt.pixel_error, iou, dice, mt.rand_error, mt.seg, mt.ap50);
        }
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
        fprintf(o, "}, \"failed\": %d}\n", failed);
    } else {
        fprintf(o, "%-28s %9.4f %8.4f %8.4f %9.4f %7.4f %7.4f\n", "mean", mpx, miou, mdice, mrand,
                mseg, map);
        fprintf(o, "(IoU and Dice of the foreground class%s; Rand error: ISBI 2012, foreground-"
                   "restricted; SEG: Cell Tracking Challenge; AP50: IoU >= 0.5)\n",
                classes > 2 ? "es, averaged" : "");
    }
    if (failed) cli_error("%d of %d images could not be scored", failed, truth.count);
    if (o != stdout && (fclose(o) || report_eval(report, report_json, print_json))) failed++;
    free(report_json);
    cli_files_free(&truth);
    unet_ctx_free(ctx);
    return failed ? CLI_EXIT_FAIL : 0;
}
