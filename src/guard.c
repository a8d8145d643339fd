/* guard.c — the divergence guard: detects a training run going wrong and returns the model to
 * its last good state with a lower learning rate (docs/training.md, "Divergence").
 *
 * Detection works on what every step reports anyway (unet_step_stats): the loss, whether it and
 * the gradient were finite, and the class counts of the prediction and the truth.
 *   - Spikes use robust statistics of the loss: the median of the last `window` steps against
 *     the median and the MAD of up to `history` steps before them.  A median ignores the odd
 *     hard tile (batch-1 training with weight maps has heavy-tailed losses), a MAD measures the
 *     noise without being inflated by it, and both thresholds must be passed (k MADs above and
 *     a ratio above the reference), so neither a plateau (MAD near 0) nor a noisy phase alone
 *     trips it.  An EMA of the loss was the alternative: one outlier moves it, and its
 *     threshold needs a variance estimate that the outliers inflate.
 *   - A blow-up compares each step's loss with the loss a uniform prediction (all logits
 *     equal) would get on the same batch, which the step reports: a model far worse than
 *     knowing nothing has diverged, whatever the loss's scale (weights, summed reduction).  It
 *     needs no history, so it catches a run that diverges from the start (an absurd learning
 *     rate) before the spike test is armed, and a history that starts diverged cannot hide it.
 *   - A collapse to one class is judged on moving averages of the class shares (weight
 *     1/window) and only once the model has shown it learned, so the all-background phase at
 *     the start of many runs is not mistaken for one.
 * The last good state is a copy in memory (weights, batch-norm statistics and counters,
 * optimizer moments and step, dropout generator, the moving average) together with the
 * guard's own statistics, so after a rollback the reference is the one of the good state.
 * Everything is a function of the step statistics: the same run detects the same events, and
 * unet_guard_state carries the statistics through a resumable checkpoint.
 */
#include "model.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WINDOW 100
#define MAX_HISTORY 1000
#define RING (MAX_WINDOW + MAX_HISTORY)
#define MIN_REFERENCE 20    /* reference steps before the spike test is armed */
#define MAD_SCALE 1.4826    /* MAD to a normal distribution's standard deviation */

struct stats {
    int    n, head;                 /* losses in the ring (<= RING) and the next slot */
    float  loss[RING];
    int    n_ratio, ratio_head;     /* the last `window` losses / uniform-prediction losses */
    float  ratio[MAX_WINDOW];
    long   avg_steps;               /* steps in the moving averages below */
    int    classes;
    double pred[UNET_MAX_CLASSES], truth[UNET_MAX_CLASSES], acc;
    int    armed_train, armed_val;  /* the model has shown that it learned */
    long   fresh;                   /* steps since the last rollback (or the start) */
};

struct unet_guard {
    unet_guard_opts  o;
    struct stats     cur, saved;
    double           lr_scale;
    int              rollbacks;
    long             snap_step;     /* -1: no snapshot */
    /* The last good model state. */
    float           *w, *b, *m1, *m2, *ew, *eb;
    int64_t         *counters;
    size_t           n_w, n_b;
    int              n_c;
    bool             has_opt, has_ema;
    long             opt_step, ema_updates;
    struct unet__rng rng;
    char             detail[320];
};

unet_guard_opts unet_guard_defaults(void) {
    unet_guard_opts o = {.detect = 1, .max_rollbacks = 3, .lr_factor = 0.5, .window = 10,
                         .history = 200, .spike_mads = 3.0, .spike_ratio = 2.0, .blowup = 5.0,
                         .collapse_share = 0.95, .collapse_truth = 0.8};
    return o;
}

const char *unet_guard_event_name(unet_guard_event e) {
    switch (e) {
    case UNET_GUARD_NONFINITE: return "nonfinite";
    case UNET_GUARD_SPIKE: return "spike";
    case UNET_GUARD_BLOWUP: return "blowup";
    case UNET_GUARD_COLLAPSE: return "collapse";
    default: return "none";
    }
}

unet_status unet_guard_create(unet_ctx *ctx, const unet_guard_opts *o, unet_guard **out) {
    if (!o || !out) return unet__fail(ctx, UNET_STATUS_ARG, "guard: NULL argument");
    *out = NULL;
    if (o->max_rollbacks < 0 || o->max_rollbacks > 1000)
        return unet__fail(ctx, UNET_STATUS_ARG, "guard: max rollbacks %d, expected 0..1000",
                          o->max_rollbacks);
    if (!(o->lr_factor > 0 && o->lr_factor <= 1))
        return unet__fail(ctx, UNET_STATUS_ARG, "guard: lr factor %g, expected (0, 1]", o->lr_factor);
    if (o->window < 1 || o->window > MAX_WINDOW || o->history < MIN_REFERENCE ||
        o->history > MAX_HISTORY)
        return unet__fail(ctx, UNET_STATUS_ARG, "guard: window %d (1..%d), history %d (%d..%d)",
                          o->window, MAX_WINDOW, o->history, MIN_REFERENCE, MAX_HISTORY);
    if (!(o->spike_mads >= 0 && o->spike_ratio >= 1 && o->blowup > 1 && o->collapse_share > 0.5 &&
          o->collapse_share <= 1 && o->collapse_truth > 0 && o->collapse_truth < o->collapse_share))
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "guard: thresholds out of range (spike_mads >= 0, spike_ratio >= 1, "
                          "blowup > 1, 0.5 < collapse_share <= 1, 0 < collapse_truth < "
                          "collapse_share)");
    unet_guard *g = calloc(1, sizeof *g);
    if (!g) return unet__fail(ctx, UNET_STATUS_NOMEM, "guard: out of memory");
    g->o = *o;
    g->lr_scale = 1.0;
    g->snap_step = -1;
    *out = g;
    return UNET_STATUS_OK;
}

static void free_state(unet_guard *g) {
    unet__free(g->w), unet__free(g->b), unet__free(g->m1), unet__free(g->m2);
    unet__free(g->ew), unet__free(g->eb);
    free(g->counters);
    g->w = g->b = g->m1 = g->m2 = g->ew = g->eb = NULL;
    g->counters = NULL;
    g->n_w = g->n_b = 0;
    g->n_c = 0;
}

void unet_guard_free(unet_guard *g) {
    if (!g) return;
    free_state(g);
    free(g);
}

const char *unet_guard_detail(const unet_guard *g) {
    return g ? g->detail : "";
}
double unet_guard_lr_scale(const unet_guard *g) {
    return g ? g->lr_scale : 1.0;
}
int unet_guard_rollbacks(const unet_guard *g) {
    return g ? g->rollbacks : 0;
}
long unet_guard_snapshot_step(const unet_guard *g) {
    return g ? g->snap_step : -1;
}

/* ---- statistics ---- */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median of a[0..n) (n >= 1), sorted in a copy. */
static double median(float *tmp, const float *a, int n) {
    memcpy(tmp, a, sizeof(float) * (size_t)n);
    qsort(tmp, (size_t)n, sizeof(float), cmp_float);
    return n % 2 ? tmp[n / 2] : 0.5 * ((double)tmp[n / 2 - 1] + tmp[n / 2]);
}

/* The last k losses in order, oldest first, into dst; skip the newest `skip`. */
static void last_losses(const struct stats *s, int k, int skip, float *dst) {
    for (int i = 0; i < k; i++) {
        int age = skip + k - i; /* 1 = newest */
        dst[i] = s->loss[((s->head - age) % RING + RING) % RING];
    }
}

struct loss_view {
    bool   spike_ready, blowup_ready;
    double recent, ref, mad, ratio;
};

static struct loss_view view(const unet_guard *g) {
    struct loss_view v = {0};
    const struct stats *s = &g->cur;
    const int W = g->o.window;
    float buf[RING], tmp[RING];
    if (s->n >= W) {
        last_losses(s, W, 0, buf);
        v.recent = median(tmp, buf, W);
        if (s->n_ratio >= W) {
            v.ratio = median(tmp, s->ratio, W);
            v.blowup_ready = true;
        }
    }
    int k = s->n - W;
    if (k > g->o.history) k = g->o.history;
    if (k >= MIN_REFERENCE) {
        last_losses(s, k, W, buf);
        v.ref = median(tmp, buf, k);
        for (int i = 0; i < k; i++) buf[i] = (float)fabs((double)buf[i] - v.ref);
        v.mad = MAD_SCALE * median(tmp, buf, k);
        v.spike_ready = true;
    }
    return v;
}

/* The collapse test on class shares: the most predicted class's share and its true share. */
static bool collapsed(const unet_guard *g, const double *pred, const double *truth, int K,
                      double *p_out, double *t_out, int *c_out) {
    int c = 0;
    for (int i = 1; i < K; i++)
        if (pred[i] > pred[c]) c = i;
    *p_out = pred[c], *t_out = truth[c], *c_out = c;
    return pred[c] >= g->o.collapse_share && truth[c] <= g->o.collapse_truth;
}

/* COLLAPSE, explained, when the shares of `where` ("training", "validation") say so. */
static unet_guard_event collapse_event(unet_guard *g, const double *pred, const double *truth,
                                       int K, const char *where) {
    double p, t;
    int c;
    if (!collapsed(g, pred, truth, K, &p, &t, &c)) return UNET_GUARD_NONE;
    snprintf(g->detail, sizeof g->detail,
             "collapse to one class: %.1f%% of the %s pixels predicted as class %d, which is "
             "%.1f%% of the truth",
             100 * p, where, c, 100 * t);
    return UNET_GUARD_COLLAPSE;
}

/* Has the model learned: accuracy at least halfway from the constant prediction of the
 * commonest true class to perfect? */
static bool learned(const double *truth, int K, double acc) {
    double base = 0;
    for (int i = 0; i < K; i++)
        if (truth[i] > base) base = truth[i];
    return base < 1.0 && acc >= base + 0.5 * (1.0 - base);
}

unet_guard_event unet_guard_observe(unet_guard *g, unet_status s, const unet_step_stats *st) {
    if (!g) return UNET_GUARD_NONE;
    g->detail[0] = 0;
    if (s == UNET_STATUS_NUMERIC) {
        if (st && !isfinite(st->loss))
            snprintf(g->detail, sizeof g->detail, "the loss is %s",
                     isnan(st->loss) ? "NaN" : st->loss > 0 ? "Inf" : "-Inf");
        else if (st && !isfinite(st->grad_norm))
            snprintf(g->detail, sizeof g->detail, "the gradient is not finite (loss %.4g)", st->loss);
        else
            snprintf(g->detail, sizeof g->detail,
                     "a value of the step is not finite (batch-norm statistics overflowed)");
        return UNET_GUARD_NONFINITE;
    }
    if (s != UNET_STATUS_OK || !st) return UNET_GUARD_NONE;
    struct stats *c = &g->cur;
    const int W = g->o.window;
    /* Kept as float (the text state round-trips it exactly); beyond float's range it is the
     * largest float, still far above any threshold. */
    float L = st->loss > FLT_MAX ? FLT_MAX : st->loss < -FLT_MAX ? -FLT_MAX : (float)st->loss;
    c->loss[c->head] = L;
    c->head = (c->head + 1) % RING;
    if (c->n < RING) c->n++;
    c->fresh++;
    if (st->baseline > 0 && isfinite(st->baseline)) {
        double r = st->loss / st->baseline;
        c->ratio[c->ratio_head] = r > FLT_MAX ? FLT_MAX : (float)r;
        c->ratio_head = (c->ratio_head + 1) % W;
        if (c->n_ratio < W) c->n_ratio++;
    }

    int64_t labeled = 0;
    int K = st->classes > 0 && st->classes <= UNET_MAX_CLASSES ? st->classes : 0;
    for (int i = 0; i < K; i++) labeled += st->truth[i];
    if (labeled > 0) {
        const double a = c->avg_steps ? 1.0 / W : 1.0;
        if (c->classes != K) c->classes = K, c->avg_steps = 0;
        for (int i = 0; i < K; i++) {
            c->pred[i] += a * ((double)st->pred[i] / labeled - c->pred[i]);
            c->truth[i] += a * ((double)st->truth[i] / labeled - c->truth[i]);
        }
        c->acc += a * ((double)st->correct / labeled - c->acc);
        c->avg_steps++;
    }
    if (!g->o.detect) return UNET_GUARD_NONE;

    struct loss_view v = view(g);
    if (v.blowup_ready && v.ratio > g->o.blowup) {
        snprintf(g->detail, sizeof g->detail,
                 "loss blow-up: over the last %d steps the loss is a median %.3g times that of a "
                 "uniform prediction (> %g)",
                 W, v.ratio, g->o.blowup);
        return UNET_GUARD_BLOWUP;
    }
    if (v.spike_ready && v.recent > v.ref + g->o.spike_mads * v.mad &&
        v.recent > g->o.spike_ratio * v.ref) {
        snprintf(g->detail, sizeof g->detail,
                 "loss spike: median of the last %d steps %.4g > %.4g + %g x MAD %.4g and > %g x "
                 "%.4g",
                 W, v.recent, v.ref, g->o.spike_mads, v.mad, g->o.spike_ratio, v.ref);
        return UNET_GUARD_SPIKE;
    }
    if (c->avg_steps >= W && c->classes > 0) {
        if (learned(c->truth, c->classes, c->acc)) c->armed_train = 1;
        if (c->armed_train) return collapse_event(g, c->pred, c->truth, c->classes, "training");
    }
    return UNET_GUARD_NONE;
}

unet_guard_event unet_guard_observe_validation(unet_guard *g, const unet_step_stats *val) {
    if (!g) return UNET_GUARD_NONE;
    g->detail[0] = 0;
    const int K = val ? val->classes : 0;
    if (K < 1 || K > UNET_MAX_CLASSES) return UNET_GUARD_NONE;
    if (g->o.detect && val->baseline > 0 && !(val->loss <= g->o.blowup * val->baseline)) {
        snprintf(g->detail, sizeof g->detail,
                 "validation loss blow-up: %.4g, over %g times the %.4g of a uniform prediction",
                 val->loss, g->o.blowup, val->baseline);
        return UNET_GUARD_BLOWUP;
    }
    int64_t labeled = 0;
    for (int i = 0; i < K; i++) labeled += val->truth[i];
    if (labeled <= 0) return UNET_GUARD_NONE;
    double ps[UNET_MAX_CLASSES], ts[UNET_MAX_CLASSES];
    for (int i = 0; i < K; i++) {
        ps[i] = (double)val->pred[i] / labeled;
        ts[i] = (double)val->truth[i] / labeled;
    }
    const double acc = (double)val->correct / labeled;
    bool armed = g->cur.armed_val;
    if (learned(ts, K, acc)) g->cur.armed_val = 1;
    return g->o.detect && armed ? collapse_event(g, ps, ts, K, "validation") : UNET_GUARD_NONE;
}

int unet_guard_healthy(const unet_guard *g) {
    if (!g) return 1;
    if (!g->o.detect) return 1;
    const struct stats *c = &g->cur;
    struct loss_view v = view(g);
    /* The blow-up ratio over the steps since the last rollback (up to a window): right after
     * one, older steps say nothing about the state. */
    int k = c->fresh < c->n_ratio ? (int)c->fresh : c->n_ratio;
    if (k >= 1) {
        float buf[MAX_WINDOW], tmp[MAX_WINDOW];
        for (int i = 0; i < k; i++) buf[i] = c->ratio[((c->ratio_head - 1 - i) % g->o.window + g->o.window) % g->o.window];
        if (median(tmp, buf, k) > 0.5 * g->o.blowup) return 0;
    }
    if (v.spike_ready && v.recent > v.ref + 0.5 * g->o.spike_mads * v.mad &&
        v.recent > (1.0 + 0.5 * (g->o.spike_ratio - 1.0)) * v.ref)
        return 0;
    double p, t;
    int cls;
    if (c->armed_train && c->avg_steps >= g->o.window &&
        collapsed(g, c->pred, c->truth, c->classes, &p, &t, &cls))
        return 0;
    return 1;
}

int unet_guard_trusted(const unet_guard *g) {
    if (!g || !g->o.detect) return 1;
    return g->cur.fresh >= g->o.window && unet_guard_healthy(g);
}

/* ---- snapshot and rollback ---- */

static bool copy_into(float **dst, const float *src, size_t n) {
    if (!*dst) *dst = unet__alloc((n ? n : 1) * sizeof(float));
    if (!*dst) return false;
    memcpy(*dst, src, n * sizeof(float));
    return true;
}

unet_status unet_guard_snapshot(unet_ctx *ctx, unet_guard *g, const unet_model *m, long step) {
    if (!g || !m) return unet__fail(ctx, UNET_STATUS_ARG, "guard_snapshot: NULL argument");
    if (g->w && (g->n_w != m->n_weights || g->n_b != m->n_buffers || g->n_c != m->n_counters))
        free_state(g); /* another model */
    g->n_w = m->n_weights, g->n_b = m->n_buffers, g->n_c = m->n_counters;
    if (!g->counters) g->counters = calloc((size_t)(g->n_c ? g->n_c : 1), sizeof(int64_t));
    bool ok = g->counters && copy_into(&g->w, m->weights, g->n_w) &&
              copy_into(&g->b, m->buffers, g->n_b);
    g->has_opt = m->opt_m != NULL;
    if (ok && g->has_opt)
        ok = copy_into(&g->m1, m->opt_m, g->n_w) && copy_into(&g->m2, m->opt_v, g->n_w);
    g->has_ema = m->ema_w != NULL;
    if (ok && g->has_ema)
        ok = copy_into(&g->ew, m->ema_w, g->n_w) && copy_into(&g->eb, m->ema_b, g->n_b);
    if (!ok) {
        free_state(g);
        g->snap_step = -1;
        return unet__fail(ctx, UNET_STATUS_NOMEM,
                          "guard: cannot keep a copy of the training state (%zu MiB) in memory",
                          (g->n_w * 5 + g->n_b * 2) * sizeof(float) >> 20);
    }
    memcpy(g->counters, m->counters, (size_t)g->n_c * sizeof(int64_t));
    g->opt_step = m->opt_step;
    g->ema_updates = m->ema_updates;
    g->rng = m->rng;
    g->saved = g->cur;
    g->snap_step = step;
    return UNET_STATUS_OK;
}

unet_status unet_guard_rollback(unet_ctx *ctx, unet_guard *g, unet_model *m) {
    if (!g || !m) return unet__fail(ctx, UNET_STATUS_ARG, "guard_rollback: NULL argument");
    if (g->snap_step < 0 || g->n_w != m->n_weights || g->n_b != m->n_buffers ||
        g->n_c != m->n_counters)
        return unet__fail(ctx, UNET_STATUS_ARG, "guard_rollback: no snapshot of this model");
    memcpy(m->weights, g->w, g->n_w * sizeof(float));
    memcpy(m->buffers, g->b, g->n_b * sizeof(float));
    unet__model_weights_changed(m);
    memcpy(m->counters, g->counters, (size_t)g->n_c * sizeof(int64_t));
    if (m->opt_m) {
        if (g->has_opt) {
            memcpy(m->opt_m, g->m1, g->n_w * sizeof(float));
            memcpy(m->opt_v, g->m2, g->n_w * sizeof(float));
        } else {
            memset(m->opt_m, 0, g->n_w * sizeof(float));
            memset(m->opt_v, 0, g->n_w * sizeof(float));
        }
    }
    m->opt_step = g->opt_step;
    m->rng = g->rng;
    if (m->ema_w) {
        /* An average enabled after the snapshot restarts from the restored weights. */
        memcpy(m->ema_w, g->has_ema ? g->ew : g->w, g->n_w * sizeof(float));
        memcpy(m->ema_b, g->has_ema ? g->eb : g->b, g->n_b * sizeof(float));
        m->ema_updates = g->has_ema ? g->ema_updates : 0;
    }
    g->cur = g->saved;
    g->cur.fresh = 0;
    g->rollbacks++;
    g->lr_scale *= g->o.lr_factor;
    if (g->rollbacks > g->o.max_rollbacks)
        return unet__fail(ctx, UNET_STATUS_NUMERIC,
                          "training diverged: %s%s after %d rollback%s to the last good state "
                          "(step %ld)",
                          g->detail[0] ? g->detail : "detected again",
                          g->detail[0] ? "," : "", g->rollbacks - 1,
                          g->rollbacks - 1 == 1 ? "" : "s", g->snap_step);
    return UNET_STATUS_OK;
}

/* ---- the state as text (a resumable checkpoint's metadata) ---- */

/* Appends to a growing string; false when out of memory. */
struct text {
    char  *s;
    size_t len, cap;
    bool   oom;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...) {
    if (t->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->oom = true;
            return;
        }
        if (t->s && t->len + (size_t)k < t->cap) {
            t->len += (size_t)k;
            return;
        }
        size_t cap = (t->cap ? 2 * t->cap : 1024) + (size_t)k;
        char *ns = realloc(t->s, cap);
        if (!ns) {
            t->oom = true;
            return;
        }
        t->s = ns, t->cap = cap;
    }
}

char *unet_guard_state(const unet_guard *g) {
    if (!g) return NULL;
    const struct stats *c = &g->cur;
    struct text t = {0};
    float buf[RING];
    /* Only the losses a test can still read: the window and the history before it. */
    int n = c->n < g->o.window + g->o.history ? c->n : g->o.window + g->o.history;
    last_losses(c, n, 0, buf);
    put(&t, "v1 scale=%.17g rollbacks=%d armed=%d,%d avg_steps=%ld fresh=%ld acc=%.17g loss=",
        g->lr_scale, g->rollbacks, c->armed_train, c->armed_val, c->avg_steps, c->fresh, c->acc);
    for (int i = 0; i < n; i++) put(&t, "%s%.9g", i ? "," : "", (double)buf[i]);
    put(&t, " ratio=");
    for (int i = 0; i < c->n_ratio; i++) put(&t, "%s%.9g", i ? "," : "", (double)c->ratio[i]);
    put(&t, " ratio_head=%d", c->ratio_head);
    put(&t, " pred=");
    for (int i = 0; i < c->classes; i++) put(&t, "%s%.17g", i ? "," : "", c->pred[i]);
    put(&t, " truth=");
    for (int i = 0; i < c->classes; i++) put(&t, "%s%.17g", i ? "," : "", c->truth[i]);
    if (t.oom) {
        free(t.s);
        return NULL;
    }
    return t.s;
}

/* The value of "key=" in state as a list of up to max numbers; -1 when malformed or absent.
 * An empty list is 0 numbers. */
static int numbers(const char *state, const char *key, double *out, int max) {
    size_t k = strlen(key);
    const char *p = state;
    while ((p = strstr(p, key)) && !((p == state || p[-1] == ' ') && p[k] == '=')) p += k;
    if (!p) return -1;
    p += k + 1;
    int n = 0;
    if (*p == ' ' || *p == 0) return 0;
    for (;;) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !isfinite(v) || n >= max) return -1;
        out[n++] = v;
        if (*end == ',') p = end + 1;
        else if (*end == ' ' || *end == 0) return n;
        else return -1;
    }
}

unet_status unet_guard_set_state(unet_ctx *ctx, unet_guard *g, const char *state) {
    if (!g || !state) return unet__fail(ctx, UNET_STATUS_ARG, "guard_set_state: NULL argument");
    double one[2];
    struct stats c = {0};
    double *v = malloc(sizeof(double) * RING);
    if (!v) return unet__fail(ctx, UNET_STATUS_NOMEM, "guard state: out of memory");
    bool ok = strncmp(state, "v1 ", 3) == 0;
    double scale = 0, rollbacks = 0;
    ok = ok && numbers(state, "scale", one, 1) == 1 && (scale = one[0]) > 0 && scale <= 1;
    ok = ok && numbers(state, "rollbacks", one, 1) == 1 && (rollbacks = one[0]) >= 0 &&
         rollbacks <= 1000 && rollbacks == floor(rollbacks);
    ok = ok && numbers(state, "armed", one, 2) == 2 && (one[0] == 0 || one[0] == 1) &&
         (one[1] == 0 || one[1] == 1);
    if (ok) c.armed_train = (int)one[0], c.armed_val = (int)one[1];
    ok = ok && numbers(state, "avg_steps", one, 1) == 1 && one[0] >= 0 && one[0] < 1e15;
    if (ok) c.avg_steps = (long)one[0];
    ok = ok && numbers(state, "fresh", one, 1) == 1 && one[0] >= 0 && one[0] < 1e15;
    if (ok) c.fresh = (long)one[0];
    ok = ok && numbers(state, "acc", one, 1) == 1 && one[0] >= 0 && one[0] <= 1;
    if (ok) c.acc = one[0];
    int n = ok ? numbers(state, "loss", v, RING) : -1;
    ok = ok && n >= 0;
    for (int i = 0; ok && i < n; i++) c.loss[i] = (float)v[i];
    if (ok) c.n = n, c.head = n % RING;
    n = ok ? numbers(state, "ratio", v, MAX_WINDOW) : -1;
    ok = ok && n >= 0 && n <= g->o.window;
    for (int i = 0; ok && i < n; i++) c.ratio[i] = (float)v[i];
    if (ok) c.n_ratio = n;
    ok = ok && numbers(state, "ratio_head", one, 1) == 1 && one[0] >= 0 &&
         one[0] < g->o.window && one[0] == floor(one[0]);
    if (ok) c.ratio_head = (int)one[0];
    n = ok ? numbers(state, "pred", c.pred, UNET_MAX_CLASSES) : -1;
    int nt = ok ? numbers(state, "truth", c.truth, UNET_MAX_CLASSES) : -1;
    ok = ok && n >= 0 && n == nt && (n == 0 || n >= 2);
    if (ok) c.classes = n;
    free(v);
    if (!ok)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "guard state: malformed (%.60s...)", state);
    g->cur = c;
    g->lr_scale = scale;
    g->rollbacks = (int)rollbacks;
    return UNET_STATUS_OK;
}
