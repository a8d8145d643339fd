/* report_image.c — the pictures of an evaluation: an input thumbnail and two transparent
 * overlays, as PNG files in memory (png.c's writer into an open_memstream file).
 *
 * The overlays are palette PNGs with per-entry alpha (tRNS): each object a pale fill and an
 * opaque outline in its own colour, and on the prediction's overlay the error pixels: false
 * positives (predicted foreground where the truth has background) red, false negatives (truth
 * foreground predicted as background) blue, and, with several classes, foreground of the
 * wrong class orange.  The page stacks each overlay on the input thumbnail, which is stored
 * once: a flat palette image compresses to a few kilobytes, where an RGB picture of the image
 * with the overlay drawn in would cost as much as the image again, twice.
 *
 * Colours: a true object gets a colour from its label, and a predicted object that matches it
 * (IoU > 0.5, at most one can) takes the same colour, so one cell looks the same in both
 * pictures and a split, a merge or a miss shows as a change of colour.  The match is found
 * in two passes: the majority truth label under each predicted object (Boyer-Moore vote),
 * then its overlap; IoU > 0.5 needs an overlap of more than half the predicted object, so the
 * majority label is the only candidate.  Instance colours avoid the red and blue hues of the
 * error pixels.
 *
 * Thumbnails shrink by an integer factor: the input by the mean of each block, labels by the
 * block's centre pixel, errors by their share of the block (a third or more), and outlines are
 * drawn at the thumbnail's own resolution so that they stay one pixel wide and closed.
 */
#include "cli/report.h"

#include "io/image_formats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NC = 40 };                       /* instance colours */
enum { P_FILL = 1, P_LINE = P_FILL + NC, P_FP = P_LINE + NC, P_FN, P_WRONG, N_PAL };

/* ---- PNG in memory ---- */

/* Encodes through png.c's writer into out: an open_memstream file, copied once at the end. */
static bool png_encode(struct report_buf *out, const uint8_t *px, int w, int h, int channels,
                       const uint8_t (*pal)[4]) {
    char *mem = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&mem, &n);
    unet_ctx *ctx = unet_ctx_create();
    unet_status s = UNET_STATUS_NOMEM;
    if (f && ctx)
        s = unet__png_write_rows(ctx, f, "report picture", px, w, h, channels, pal, N_PAL);
    bool closed = f && fclose(f) == 0;
    if (s == UNET_STATUS_OK && closed) report_write_bytes(out, mem, n);
    else if (s != UNET_STATUS_OK && s != UNET_STATUS_NOMEM) cli_lib_error(ctx, s);
    else cli_error("report: out of memory for a picture");
    free(mem);
    unet_ctx_free(ctx);
    return s == UNET_STATUS_OK && closed && !out->oom;
}

/* ---- colours ---- */

static void hsv(double hue, double s, double v, uint8_t *rgb) {
    double c = v * s, hp = fmod(hue, 360) / 60, x = c * (1 - fabs(fmod(hp, 2) - 1)), m = v - c;
    double r = 0, g = 0, b = 0;
    int k = (int)hp;
    if (k == 0) r = c, g = x;
    else if (k == 1) r = x, g = c;
    else if (k == 2) g = c, b = x;
    else if (k == 3) g = x, b = c;
    else if (k == 4) r = x, b = c;
    else r = c, b = x;
    rgb[0] = (uint8_t)lround((r + m) * 255);
    rgb[1] = (uint8_t)lround((g + m) * 255);
    rgb[2] = (uint8_t)lround((b + m) * 255);
}

/* Hues 35-175 (orange to cyan) and 270-330 (violet to pink), spread by the golden ratio. */
static void palette(uint8_t (*pal)[4]) {
    memset(pal, 0, sizeof(uint8_t) * 4 * N_PAL);
    for (int k = 0; k < NC; k++) {
        double u = fmod(k * 0.6180339887, 1.0) * 200;
        double hue = u < 140 ? 35 + u : 270 + (u - 140);
        uint8_t rgb[3];
        hsv(hue, k % 3 == 2 ? 0.55 : 0.85, k % 2 ? 0.85 : 1.0, rgb);
        memcpy(pal[P_FILL + k], rgb, 3);
        pal[P_FILL + k][3] = 72;
        memcpy(pal[P_LINE + k], rgb, 3);
        pal[P_LINE + k][3] = 255;
    }
    static const uint8_t err[3][4] = {{235, 30, 45, 215}, {30, 100, 255, 215}, {255, 140, 0, 215}};
    memcpy(pal[P_FP], err, sizeof err);
}

static int color_of(uint32_t label) {
    return (int)(((label * 2654435761u) >> 8) % NC);
}

/* ---- labels ---- */

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Instance labels as 0..n (0 background) in out: a lookup table when the largest label is
 * small, else a sort of the distinct values.  Returns n, or -1 when out of memory. */
static int compact(const int32_t *lab, size_t P, int32_t *out) {
    int32_t mx = 0;
    for (size_t i = 0; i < P; i++)
        if (lab[i] > mx) mx = lab[i];
    if ((size_t)mx <= P + 65536) {
        int32_t *map = calloc((size_t)mx + 1, sizeof(int32_t));
        if (!map) return -1;
        int n = 0;
        for (size_t i = 0; i < P; i++)
            if (lab[i] > 0 && !map[lab[i]]) map[lab[i]] = ++n;
        for (size_t i = 0; i < P; i++) out[i] = lab[i] > 0 ? map[lab[i]] : 0;
        free(map);
        return n;
    }
    int32_t *v = malloc(sizeof(int32_t) * P);
    if (!v) return -1;
    size_t k = 0;
    for (size_t i = 0; i < P; i++)
        if (lab[i] > 0) v[k++] = lab[i];
    qsort(v, k, sizeof(int32_t), cmp_i32);
    size_t n = 0;
    for (size_t i = 0; i < k; i++)
        if (n == 0 || v[i] != v[n - 1]) v[n++] = v[i];
    for (size_t i = 0; i < P; i++) {
        if (lab[i] <= 0) {
            out[i] = 0;
            continue;
        }
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (v[mid] < lab[i]) lo = mid + 1;
            else hi = mid;
        }
        out[i] = (int32_t)lo + 1;
    }
    free(v);
    return (int)n;
}

/* For each predicted object 1..np, the true object it matches at IoU > 0.5, or 0. */
static bool match(const int32_t *pl, int np, const int32_t *tl, int nt, size_t P, int32_t *to) {
    int32_t *cand = calloc((size_t)np + 1, sizeof(int32_t));
    long *votes = calloc((size_t)np + 1, sizeof(long));
    long *pa = calloc((size_t)np + 1, sizeof(long));
    long *ta = calloc((size_t)nt + 1, sizeof(long));
    long *both = calloc((size_t)np + 1, sizeof(long));
    bool ok = cand && votes && pa && ta && both;
    for (size_t i = 0; ok && i < P; i++) {
        int p = pl[i], t = tl[i];
        ta[t]++;
        if (!p) continue;
        pa[p]++;
        if (votes[p] == 0) cand[p] = t, votes[p] = 1;
        else votes[p] += cand[p] == t ? 1 : -1;
    }
    for (size_t i = 0; ok && i < P; i++)
        if (pl[i] && tl[i] && tl[i] == cand[pl[i]]) both[pl[i]]++;
    for (int p = 0; ok && p <= np; p++) {
        int t = cand[p];
        to[p] = p && t && 2 * both[p] > pa[p] + ta[t] - both[p] ? t : 0;
    }
    free(cand), free(votes), free(pa), free(ta), free(both);
    return ok;
}

/* ---- the views ---- */

static bool edge(const int32_t *l, int w, int h, int x, int y) {
    const int32_t *p = l + (size_t)y * w + x;
    return *p && ((x > 0 && p[-1] != *p) || (x + 1 < w && p[1] != *p) ||
                  (y > 0 && p[-w] != *p) || (y + 1 < h && p[w] != *p));
}

bool report_views_make(const struct report_masks *m, int f, struct report_views *out) {
    memset(out, 0, sizeof *out);
    size_t P = (size_t)m->h * m->w;
    int tw = (m->w + f - 1) / f, th = (m->h + f - 1) / f;
    size_t T = (size_t)tw * th;
    int32_t *pl = malloc(sizeof(int32_t) * P), *tl = malloc(sizeof(int32_t) * P);
    int32_t *tp = malloc(sizeof(int32_t) * T), *tt = malloc(sizeof(int32_t) * T);
    uint8_t *err = malloc(T), *img = malloc(T * (size_t)(m->image ? m->c : 1));
    uint8_t *po = malloc(T), *to = malloc(T);
    int32_t *pmatch = NULL;
    bool ok = pl && tl && tp && tt && err && img && po && to;
    int np = ok ? compact(m->pred_inst, P, pl) : -1, nt = ok ? compact(m->truth_inst, P, tl) : -1;
    ok = ok && np >= 0 && nt >= 0 && (pmatch = malloc(sizeof(int32_t) * ((size_t)np + 1)));
    ok = ok && match(pl, np, tl, nt, P, pmatch);
    if (!ok) {
        cli_error("report: out of memory for the pictures of a %dx%d image", m->w, m->h);
        goto done;
    }
    out->w = tw, out->h = th, out->n_true = nt, out->n_pred = np;
    for (int p = 1; p <= np; p++) out->n_matched += pmatch[p] != 0;

    for (int y = 0; y < th; y++)
        for (int x = 0; x < tw; x++) {
            int y0 = y * f, x0 = x * f, y1 = y0 + f < m->h ? y0 + f : m->h;
            int x1 = x0 + f < m->w ? x0 + f : m->w;
            size_t c = (size_t)((y0 + y1) / 2) * m->w + (x0 + x1) / 2, k = (size_t)y * tw + x;
            int n_fp = 0, n_fn = 0, n_wrong = 0, n = (y1 - y0) * (x1 - x0);
            double sum[3] = {0, 0, 0};
            for (int yy = y0; yy < y1; yy++)
                for (int xx = x0; xx < x1; xx++) {
                    size_t i = (size_t)yy * m->w + xx;
                    int a = m->pred[i], b = m->truth[i];
                    n_fp += a && !b, n_fn += !a && b, n_wrong += a && b && a != b;
                    for (int ch = 0; m->image && ch < m->c; ch++) sum[ch] += m->image[ch * P + i];
                }
            for (int ch = 0; m->image && ch < m->c; ch++)
                img[(size_t)k * m->c + ch] = (uint8_t)lround(sum[ch] / n);
            int e = 0, most = 0;
            if (n_fp > most) e = P_FP, most = n_fp;
            if (n_fn > most) e = P_FN, most = n_fn;
            if (n_wrong > most) e = P_WRONG, most = n_wrong;
            err[k] = 3 * most >= n ? (uint8_t)e : 0;
            /* A predicted object keeps the colour of the true object it matches; others get
             * colours of their own (offset so they rarely equal a neighbour's). */
            tp[k] = pl[c] ? (pmatch[pl[c]] ? pmatch[pl[c]] : pl[c] + 7919) : 0;
            tt[k] = tl[c];
        }
    for (int y = 0; y < th; y++)
        for (int x = 0; x < tw; x++) {
            size_t k = (size_t)y * tw + x;
            int cp = color_of((uint32_t)tp[k]), ct = color_of((uint32_t)tt[k]);
            po[k] = edge(tp, tw, th, x, y) ? (uint8_t)(P_LINE + cp)
                    : err[k]               ? err[k]
                    : tp[k]                ? (uint8_t)(P_FILL + cp)
                                           : 0;
            to[k] = edge(tt, tw, th, x, y) ? (uint8_t)(P_LINE + ct)
                    : tt[k]                ? (uint8_t)(P_FILL + ct)
                                           : 0;
        }
    uint8_t pal[N_PAL][4];
    palette(pal);
    out->have_input = m->image != NULL;
    ok = (!m->image || png_encode(&out->input, img, tw, th, m->c, NULL)) &&
         png_encode(&out->pred, po, tw, th, 0, (const uint8_t(*)[4])pal) &&
         png_encode(&out->truth, to, tw, th, 0, (const uint8_t(*)[4])pal);
done:
    free(pl), free(tl), free(tp), free(tt), free(err), free(img), free(po), free(to);
    free(pmatch);
    if (!ok) report_views_free(out);
    return ok;
}

void report_views_free(struct report_views *v) {
    report_buf_free(&v->input);
    report_buf_free(&v->pred);
    report_buf_free(&v->truth);
}

uint8_t *report_display_image(unet_ctx *ctx, const unet_image *img, int *channels) {
    int c = img->c == 3 ? 3 : 1;
    size_t P = (size_t)img->w * img->h;
    uint8_t *out = malloc(P * (size_t)c);
    float *f = img->dtype == UNET_DTYPE_U8 ? NULL : malloc(sizeof(float) * P * (size_t)img->c);
    if (!out || (img->dtype != UNET_DTYPE_U8 && !f)) {
        free(out), free(f);
        cli_error("report: out of memory for a %dx%d image", img->w, img->h);
        return NULL;
    }
    if (!f) {
        memcpy(out, img->data, P * (size_t)c);
    } else {
        unet_status s = unet_image_to_float(ctx, img, UNET_NORM_PERCENTILE, f);
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            free(out), free(f);
            return NULL;
        }
        for (size_t i = 0; i < P * (size_t)c; i++) {
            float v = f[i];
            out[i] = !(v > 0) ? 0 : v >= 1 ? 255 : (uint8_t)lroundf(v * 255);
        }
    }
    free(f);
    *channels = c;
    return out;
}
