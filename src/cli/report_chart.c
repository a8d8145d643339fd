/* report_chart.c — line charts as inline SVG for the report page.
 *
 * One chart is a 600 x 300 viewBox that the page scales to its column: a title, the plot with
 * grid lines at "nice" ticks (1, 2, 5 x 10^k; seconds, minutes or hours on a time axis;
 * decades on a log axis), axis labels, a legend in the top right corner and event marks on
 * the top edge.  Long series are thinned to the minimum and maximum of each half-pixel column,
 * which keeps every spike while the path stays a few thousand points long whatever the run's
 * length.  The alternative, a plotting library in JavaScript, would put hundreds of kilobytes
 * of code in every page and draw nothing with scripts off.
 */
#include "cli/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { W = 600, H = 300, ML = 62, MR = 14, MT = 40, MB = 44 };
#define PW ((double)(W - ML - MR))
#define PH ((double)(H - MT - MB))

struct axis {
    double lo, hi;          /* the domain */
    bool   log;
    double unit;            /* time axis: 1, 60 or 3600 seconds per label unit */
    double ticks[64];
    int    n_ticks;
    double minor[64];       /* log axis: 2..9 x 10^k without labels */
    int    n_minor;
    double step;            /* linear tick step (in label units) for the label precision */
};

static double nice_step(double range, int target) {
    double raw = range / target;
    double p = pow(10, floor(log10(raw)));
    double f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

void report_chart_number(char *buf, size_t size, double v, double step) {
    double a = fabs(v);
    if (v == 0) {
        snprintf(buf, size, "0");
    } else if (a >= 1e4 && fmod(a, 1000) == 0) {
        snprintf(buf, size, "%gk", v / 1000);
    } else if (a >= 1e6 || a < 1e-3) {
        snprintf(buf, size, "%.2g", v);
    } else {
        int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        if (dec > 6) dec = 6;
        snprintf(buf, size, "%.*f", dec, v);
    }
}

/* Linear ticks over [lo, hi] in units of u; the domain grows to the outer ticks when pad. */
static void linear_axis(struct axis *a, double lo, double hi, double u, bool pad) {
    a->log = false;
    a->unit = u;
    /* A span of at least 5 % of the values' size: two validation scores of 0.9214 and 0.9217
     * should look alike, not like a fall from the top of the chart to its bottom. */
    double min_span = 0.05 * fmax(fabs(lo), fabs(hi));
    if (!(hi - lo >= min_span)) {
        double d = min_span > 0 ? (min_span - (hi - lo)) / 2 : 1;
        lo -= d, hi += d;
    }
    double step = nice_step((hi - lo) / u, 5);
    double t0 = floor(lo / u / step + 1e-9) * step, t1 = ceil(hi / u / step - 1e-9) * step;
    if (pad) a->lo = t0 * u, a->hi = t1 * u;
    else a->lo = lo - 0.015 * (hi - lo), a->hi = hi + 0.015 * (hi - lo); /* end points clear */
    a->step = step;
    a->n_ticks = a->n_minor = 0;
    for (double t = t0; t <= t1 + step * 1e-6 && a->n_ticks < 64; t += step)
        if (t * u >= a->lo - 1e-9 * (a->hi - a->lo) && t * u <= a->hi + 1e-9 * (a->hi - a->lo))
            a->ticks[a->n_ticks++] = fabs(t) < step * 1e-9 ? 0 : t * u;
}

static void log_axis(struct axis *a, double lo, double hi) {
    a->log = true;
    a->unit = 1;
    a->step = 0;
    double l0 = log10(lo), l1 = log10(hi), m = (l1 - l0) * 0.04 + 0.02;
    a->lo = pow(10, l0 - m), a->hi = pow(10, l1 + m);
    a->n_ticks = a->n_minor = 0;
    int d0 = (int)floor(log10(a->lo)), d1 = (int)ceil(log10(a->hi));
    int decades_inside = 0;
    for (int d = d0; d <= d1; d++)
        if (pow(10, d) >= a->lo && pow(10, d) <= a->hi) decades_inside++;
    for (int d = d0; d <= d1; d++)
        for (int k = 1; k <= 9; k++) {
            double v = k * pow(10, d);
            if (v < a->lo || v > a->hi) continue;
            bool label = k == 1 || (decades_inside < 2 && (k == 2 || k == 5)) ||
                         (decades_inside == 0 && (k == 3 || k == 4 || k == 7));
            if (label && a->n_ticks < 64) a->ticks[a->n_ticks++] = v;
            else if (!label && a->n_minor < 64) a->minor[a->n_minor++] = v;
        }
}

static double map(const struct axis *a, double v, double px0, double px1) {
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo))
                      : (v - a->lo) / (a->hi - a->lo);
    return px0 + t * (px1 - px0);
}

static void tick_label(char *buf, size_t size, const struct axis *a, double v) {
    if (a->log) snprintf(buf, size, "%g", v);
    else report_chart_number(buf, size, v / a->unit, a->step);
}

/* The points of s to draw: all of them, or, when there are many, the lowest and the highest of
 * each run of points in one half-pixel column (a gap or a restart ends a run). */
static int thin(const struct chart_series *s, const struct axis *x, int *idx) {
    int n = 0;
    if (s->n <= 1200) {
        for (int i = 0; i < s->n; i++) idx[n++] = i;
        return n;
    }
    double buckets = 2 * PW / (x->hi - x->lo);
    for (int i = 0; i < s->n;) {
        if (!isfinite(s->y[i])) {
            idx[n++] = i++; /* keeps the gap */
            continue;
        }
        long b = (long)floor((s->x[i] - x->lo) * buckets);
        int lo = i, hi = i, j = i + 1;
        for (; j < s->n && isfinite(s->y[j]) && s->x[j] >= s->x[j - 1] &&
               (long)floor((s->x[j] - x->lo) * buckets) == b;
             j++) {
            if (s->y[j] < s->y[lo]) lo = j;
            if (s->y[j] > s->y[hi]) hi = j;
        }
        idx[n++] = lo < hi ? lo : hi;
        if (lo != hi) idx[n++] = lo < hi ? hi : lo;
        i = j;
    }
    return n;
}

static void path(struct report_buf *b, const struct chart_series *s, const struct axis *x,
                 const struct axis *y, const int *idx, int n) {
    bool pen = false;
    double prev_x = -INFINITY;
    for (int k = 0; k < n; k++) {
        int i = idx[k];
        double vx = s->x[i], vy = s->y[i];
        if (!isfinite(vx) || !isfinite(vy) || (y->log && vy <= 0)) {
            pen = false;
            continue;
        }
        if (vx < prev_x) pen = false;
        prev_x = vx;
        report_printf(b, "%c%.1f %.1f", pen ? 'L' : 'M', map(x, vx, ML, ML + PW),
                      map(y, vy, MT + PH, MT));
        pen = true;
    }
}

/* Width in user units of s at 11 px (UTF-8 aware; an estimate for a sans-serif font). */
static double text_width(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
    return n * 6.7;
}

/* The legend above the plot, right-aligned: one entry per named series (the first 6), in rows
 * that start at the right edge and stop short of the title. */
static void legend(struct report_buf *b, const struct chart *c) {
    const char *names[7];
    const char *colors[7];
    int n = 0, more = 0;
    for (int i = 0; i < c->n_series; i++) {
        const char *l = c->series[i].legend;
        if (!l) continue;
        bool seen = false;
        for (int k = 0; k < n; k++) seen |= strcmp(names[k], l) == 0;
        if (seen) continue;
        if (n < 6) names[n] = l, colors[n++] = c->series[i].color;
        else more++;
    }
    if (n == 0) return;
    double left = ML - 50 + text_width(c->title) * 13 / 11 + 24, right = W - MR, x = right;
    int row = 0;
    report_puts(b, "<g class=legend>");
    for (int k = n - 1; k >= 0; k--) {
        double w = 22 + text_width(names[k]) + 16;
        if (x - w < left && x < right && row == 0) x = right, row = 1;
        x -= w;
        double y = 16 + 15 * row;
        report_printf(b, "<line x1='%.0f' x2='%.0f' y1='%.0f' y2='%.0f' stroke='%s' "
                         "stroke-width='2.5'/><text x='%.0f' y='%.0f'>", x, x + 16, y - 4, y - 4,
                      colors[k], x + 21, y);
        report_html(b, names[k]);
        report_puts(b, "</text>");
    }
    if (more) report_printf(b, "<text x='%d' y='%d' text-anchor='end'>+%d more</text>", W - MR,
                            16 + 15 * (row + 1), more);
    report_puts(b, "</g>");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The 1st and 99th percentiles of s's finite values (left as they are when it has none or
 * memory runs out). */
static void robust_range(const struct chart_series *s, double *lo, double *hi) {
    double *v = malloc(sizeof(double) * (size_t)(s->n ? s->n : 1));
    int n = 0;
    for (int i = 0; v && i < s->n; i++)
        if (isfinite(s->y[i])) v[n++] = s->y[i];
    if (n > 0) {
        qsort(v, (size_t)n, sizeof(double), cmp_double);
        *lo = v[(size_t)n / 100], *hi = v[(size_t)(n - 1) - (size_t)n / 100];
    }
    free(v);
}

void report_chart_svg(struct report_buf *b, const struct chart *c) {
    /* Domains from the finite values (positive ones for a log axis).  A faint series (every
     * step's loss under its smoothed line) counts from its 1st to its 99th percentile, so a
     * few spikes run off the top instead of flattening the curve (TensorBoard does the same). */
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY, ypos = INFINITY;
    int max_n = 0;
    for (int k = 0; k < c->n_series; k++) {
        const struct chart_series *s = &c->series[k];
        if (s->n > max_n) max_n = s->n;
        double lo = -INFINITY, hi = INFINITY;
        if (s->style == CHART_FAINT) robust_range(s, &lo, &hi);
        for (int i = 0; i < s->n; i++) {
            if (!isfinite(s->x[i]) || !isfinite(s->y[i])) continue;
            x0 = fmin(x0, s->x[i]), x1 = fmax(x1, s->x[i]);
            if (s->y[i] < lo || s->y[i] > hi) continue;
            y0 = fmin(y0, s->y[i]), y1 = fmax(y1, s->y[i]);
            if (s->y[i] > 0) ypos = fmin(ypos, s->y[i]);
        }
    }
    for (int k = 0; k < c->n_marks; k++)
        if (isfinite(c->marks[k].x)) x0 = fmin(x0, c->marks[k].x), x1 = fmax(x1, c->marks[k].x);
    if (y1 >= y0 && isfinite(c->x_lo)) x0 = fmin(x0, c->x_lo);
    if (y1 >= y0 && isfinite(c->x_hi)) x1 = fmax(x1, c->x_hi);
    report_printf(b, "<svg class=chart viewBox='0 0 %d %d' role='img' aria-label='", W, H);
    report_html(b, c->title);
    report_printf(b, "' font-size='11' fill='#555'><text x='%d' y='17' font-size='13' "
                     "font-weight='600' fill='#222'>", ML - 50);
    report_html(b, c->title);
    report_puts(b, "</text>");
    if (c->note) {
        report_printf(b, "<text x='%d' y='32' fill='#888'>", ML - 50);
        report_html(b, c->note);
        report_puts(b, "</text>");
    }
    if (!(x1 >= x0) || !(y1 >= y0)) {
        report_printf(b, "<text x='%d' y='%d' text-anchor='middle' fill='#999'>no values yet"
                         "</text></svg>", W / 2, H / 2);
        return;
    }
    struct axis ax, ay;
    double xu = 1;
    if (c->x_time) xu = x1 < 180 ? 1 : x1 < 3 * 3600 ? 60 : 3600;
    linear_axis(&ax, x0 > 0 && x0 < 0.1 * (x1 - x0) ? 0 : x0, x1, xu, false);
    bool log_y = c->log_y == 1 ? ypos < INFINITY
                               : c->log_y == -1 && y0 > 0 && y1 / y0 >= 10;
    if (log_y) log_axis(&ay, ypos, y1);
    else linear_axis(&ay, y0, y1, 1, true);

    /* Grid and tick labels. */
    report_puts(b, "<g stroke='#ececec'>");
    for (int i = 0; i < ay.n_minor; i++) {
        double py = map(&ay, ay.minor[i], MT + PH, MT);
        report_printf(b, "<line x1='%d' x2='%.0f' y1='%.1f' y2='%.1f' stroke='#f5f5f5'/>", ML,
                      ML + PW, py, py);
    }
    for (int i = 0; i < ay.n_ticks; i++) {
        double py = map(&ay, ay.ticks[i], MT + PH, MT);
        report_printf(b, "<line x1='%d' x2='%.0f' y1='%.1f' y2='%.1f'/>", ML, ML + PW, py, py);
    }
    for (int i = 0; i < ax.n_ticks; i++) {
        double px = map(&ax, ax.ticks[i], ML, ML + PW);
        report_printf(b, "<line x1='%.1f' x2='%.1f' y1='%d' y2='%.0f'/>", px, px, MT, MT + PH);
    }
    report_printf(b, "</g><rect x='%d' y='%d' width='%.0f' height='%.0f' fill='none' "
                     "stroke='#bbb'/>", ML, MT, PW, PH);
    char t[48];
    for (int i = 0; i < ay.n_ticks; i++) {
        tick_label(t, sizeof t, &ay, ay.ticks[i]);
        report_printf(b, "<text x='%d' y='%.1f' text-anchor='end'>%s</text>", ML - 6,
                      map(&ay, ay.ticks[i], MT + PH, MT) + 4, t);
    }
    for (int i = 0; i < ax.n_ticks; i++) {
        tick_label(t, sizeof t, &ax, ax.ticks[i]);
        report_printf(b, "<text x='%.1f' y='%.0f' text-anchor='middle'>%s</text>",
                      map(&ax, ax.ticks[i], ML, ML + PW), MT + PH + 16, t);
    }
    const char *unit = xu == 3600 ? " (h)" : xu == 60 ? " (min)" : c->x_time ? " (s)" : "";
    report_printf(b, "<text x='%.0f' y='%d' text-anchor='middle' fill='#333'>", ML + PW / 2,
                  H - 8);
    report_html(b, c->x_label);
    report_printf(b, "%s</text><text transform='translate(14 %.0f) rotate(-90)' "
                     "text-anchor='middle' fill='#333'>", unit, MT + PH / 2);
    report_html(b, c->y_label);
    report_puts(b, log_y ? " (log)</text>" : "</text>");

    /* Series: faint ones first, so the lines over them stay visible. */
    int *idx = malloc(sizeof(int) * (size_t)(max_n ? 2 * max_n + 2 : 1));
    if (!idx) {
        b->oom = true;
        report_puts(b, "</svg>");
        return;
    }
    /* The clip path's id only has to be unique in the page: the chart's offset in it is. */
    size_t id = b->len;
    report_printf(b, "<clipPath id='c%zu'><rect x='%d' y='%d' width='%.0f' height='%.0f'/>"
                     "</clipPath><g clip-path='url(#c%zu)' fill='none' stroke-linejoin='round'>",
                  id, ML, MT - 2, PW, PH + 4, id);
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < c->n_series; k++) {
            const struct chart_series *s = &c->series[k];
            if ((s->style == CHART_FAINT) != (pass == 0) || s->n == 0) continue;
            int n = thin(s, &ax, idx);
            report_printf(b, "<path stroke='%s' stroke-width='%s'%s d='", s->color,
                          s->style == CHART_FAINT ? "1" : "2",
                          s->style == CHART_FAINT ? " stroke-opacity='0.3'" : "");
            path(b, s, &ax, &ay, idx, n);
            report_puts(b, "'/>");
            if (s->style != CHART_POINTS || s->n > 80) continue;
            report_printf(b, "<g fill='%s' stroke='#fff'>", s->color);
            for (int i = 0; i < s->n; i++)
                if (isfinite(s->x[i]) && isfinite(s->y[i]) && !(log_y && s->y[i] <= 0))
                    report_printf(b, "<circle cx='%.1f' cy='%.1f' r='3'/>",
                                  map(&ax, s->x[i], ML, ML + PW), map(&ay, s->y[i], MT + PH, MT));
            report_puts(b, "</g>");
        }
    free(idx);
    report_puts(b, "</g>");

    /* Events: a dashed line for the rare important ones, a tick on the top edge for all. */
    for (int k = 0; k < c->n_marks; k++) {
        const struct chart_mark *m = &c->marks[k];
        if (!isfinite(m->x)) continue;
        double px = map(&ax, m->x, ML, ML + PW);
        report_printf(b, "<g class=ev><title>");
        report_html(b, m->text);
        report_puts(b, "</title>");
        if (m->line)
            report_printf(b, "<line x1='%.1f' x2='%.1f' y1='%d' y2='%.0f' stroke='%s' "
                             "stroke-dasharray='4 3' stroke-opacity='0.7'/>", px, px, MT,
                          MT + PH, m->color);
        report_printf(b, "<path d='M%.1f %dl-4.5 -7h9z' fill='%s'/></g>", px, MT, m->color);
    }
    legend(b, c);
    report_puts(b, "</svg>");
}

void report_strip_svg(struct report_buf *b, const double *v, int n, double mean, double sd) {
    enum { SW = 180, SH = 22 };
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) lo = fmin(lo, v[i]), hi = fmax(hi, v[i]);
    report_printf(b, "<svg class=strip width=%d height=%d viewBox='0 0 %d %d'>", SW, SH, SW, SH);
    if (!(hi >= lo)) {
        report_puts(b, "</svg>");
        return;
    }
    if (hi == lo) lo -= 0.5, hi += 0.5;
    struct axis a = {.lo = lo - 0.03 * (hi - lo), .hi = hi + 0.03 * (hi - lo)};
    /* Many values: thinner, paler ticks, so that density shows. */
    double op = n > 200 ? 0.15 : n > 30 ? 0.35 : 0.7;
    report_printf(b, "<line x1='0' x2='%d' y1='11' y2='11' stroke='#e4e7ec'/><g stroke='#3b6fd8' "
                     "stroke-opacity='%.2f'>", SW, op);
    for (int i = 0; i < n; i++)
        if (isfinite(v[i]))
            report_printf(b, "<line x1='%.1f' x2='%.1f' y1='4' y2='18'/>", map(&a, v[i], 1, SW - 1),
                          map(&a, v[i], 1, SW - 1));
    report_puts(b, "</g>");
    if (isfinite(sd))
        report_printf(b, "<line x1='%.1f' x2='%.1f' y1='11' y2='11' stroke='#111' "
                         "stroke-width='2'/>",
                      map(&a, fmax(mean - sd, a.lo), 1, SW - 1),
                      map(&a, fmin(mean + sd, a.hi), 1, SW - 1));
    if (isfinite(mean))
        report_printf(b, "<path d='M%.1f 6l4 5-4 5-4-5z' fill='#111'/>", map(&a, mean, 1, SW - 1));
    report_puts(b, "</svg>");
}
