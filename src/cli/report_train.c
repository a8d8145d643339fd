/* report_train.c — unet report's training section and settings table.
 *
 * A card per run (status, progress, best validation score, model), the curves of every numeric
 * log column against steps or wall-clock time with all runs on each chart (events of an
 * "event" column marked), the list of events, and the settings side by side with the values
 * that differ between runs marked.
 */
#include "cli/report_page.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *ago(char *buf, size_t size, double seconds) {
    char d[32];
    snprintf(buf, size, "%s ago", cli_duration(seconds < 0 ? 0 : seconds, d, sizeof d));
    return buf;
}

/* ---- the page: runs ---- */

static const cJSON *rec(const struct page_run *r, const char *section, const char *key) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(r->record, section);
    return key ? cJSON_GetObjectItemCaseSensitive(s, key) : s;
}

static double rec_num(const struct page_run *r, const char *section, const char *key) {
    const cJSON *v = rec(r, section, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *status_of(const struct page_run *r, char *detail, size_t size) {
    detail[0] = 0;
    const char *s = report_json_str(r->record, "status");
    double age = (double)time(NULL) - r->log_mtime;
    if (s && strcmp(s, "running") == 0) {
        char a[48];
        if (r->have_log)
            snprintf(detail, size, "last log row written %s%s", ago(a, sizeof a, age),
                     age > 600 ? "; if no unet train is running, it stopped without a clean "
                                 "ending (killed, power loss)"
                               : "");
        return "running";
    }
    static const char *endings[] = {"finished", "interrupted", "diverged", "failed"};
    for (size_t i = 0; s && i < sizeof endings / sizeof endings[0]; i++)
        if (strcmp(s, endings[i]) == 0) return endings[i];
    snprintf(detail, size, "no run record: the ending is not known");
    return "unknown";
}

/* The last value of column c (NaN when none), and the row of the best value of a score. */
static double last_value(const struct page_log *l, int c) {
    for (int i = l->n_rows - 1; c >= 0 && i >= 0; i--)
        if (isfinite(l->v[(size_t)i * l->n_cols + c])) return l->v[(size_t)i * l->n_cols + c];
    return NAN;
}

const char *report_metric_name(const char *col, char *buf, size_t size) {
    static const char *known[][2] = {
        {"loss", "training loss"},     {"lr", "learning rate"},
        {"val_loss", "validation loss"}, {"val_dice", "validation Dice"},
        {"val_iou", "validation IoU"}, {"val_pixel_error", "validation pixel error"},
        {"val_rand_error", "validation Rand error"}, {"dice", "Dice"}, {"iou", "IoU"},
        {"seg", "SEG"}, {"ap50", "AP50"}, {"pixel_error", "pixel error"},
        {"rand_error", "Rand error"}, {"objects_true", "objects (truth)"},
        {"objects_pred", "objects (predicted)"}, {"v_rand", "V_rand"}, {"v_info", "V_info"},
        {"grad_norm", "gradient norm"},
        {"prob.v_rand_at_05", "V_rand of the probabilities at 0.5"},
        {"prob.v_info_at_05", "V_info of the probabilities at 0.5"},
        {"prob.best_v_rand", "best V_rand of the probabilities"},
        {"prob.best_v_info", "best V_info of the probabilities"},
        {"prob.best_v_rand_threshold", "threshold of the best V_rand"},
        {"prob.best_v_info_threshold", "threshold of the best V_info"}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(col, known[i][0]) == 0) {
            snprintf(buf, size, "%s", known[i][1]);
            return buf;
        }
    snprintf(buf, size, "%s", strncmp(col, "val_", 4) == 0 ? col + 4 : col);
    for (char *p = buf; *p; p++)
        if (*p == '_') *p = ' ';
    if (strncmp(col, "val_", 4) == 0) {
        char t[128];
        snprintf(t, sizeof t, "validation %s", buf);
        snprintf(buf, size, "%s", t);
    }
    return buf;
}

static bool lower_is_better(const char *col) {
    return strstr(col, "loss") || strstr(col, "error") || strstr(col, "dist");
}

static void run_card(struct report_buf *b, const struct page_run *r) {
    char detail[256], t[64], u[64];
    const char *st = status_of(r, detail, sizeof detail);
    report_printf(b, "<div class=card style='--c:%s'><div class=t>", r->color);
    report_html(b, r->name);
    report_printf(b, "<span class='badge %s'>%s</span></div>", st, st);
    const struct page_log *l = &r->log;
    int c_step = r->have_log ? report_log_col(l, "step") : -1;
    double step = last_value(l, c_step), total = rec_num(r, "recipe", "steps");
    if (isfinite(step) && isfinite(total) && total > 0)
        report_printf(b, "<div class=bar><i style='width:%.1f%%'></i></div>",
                      fmin(100, 100 * step / total));
    report_puts(b, "<dl>");
    if (isfinite(step)) {
        report_printf(b, "<dt>step</dt><dd>%.0f", step);
        if (isfinite(total)) report_printf(b, " of %.0f", total);
        double epoch = last_value(l, r->have_log ? report_log_col(l, "epoch") : -1);
        if (isfinite(epoch)) report_printf(b, " (epoch %.0f)", epoch);
        report_puts(b, "</dd>");
    }
    if (r->have_log && l->n_rows && isfinite(l->time[l->n_rows - 1]))
        report_printf(b, "<dt>time</dt><dd>%s</dd>",
                      cli_duration(l->time[l->n_rows - 1], t, sizeof t));
    /* The best validation score: Dice when logged, else the first val_ column. */
    int best_c = r->have_log ? report_log_col(l, "val_dice") : -1;
    for (int c = 0; r->have_log && best_c < 0 && c < l->n_cols; c++)
        if (strncmp(l->cols[c], "val_", 4) == 0 && strcmp(l->cols[c], "val_loss") != 0) best_c = c;
    if (best_c >= 0) {
        bool low = lower_is_better(l->cols[best_c]);
        int bi = -1;
        for (int i = 0; i < l->n_rows; i++) {
            double v = l->v[(size_t)i * l->n_cols + best_c];
            if (isfinite(v) && (bi < 0 || (low ? v < l->v[(size_t)bi * l->n_cols + best_c]
                                               : v > l->v[(size_t)bi * l->n_cols + best_c])))
                bi = i;
        }
        if (bi >= 0)
            report_printf(b, "<dt>best</dt><dd>%s %.4f at step %.0f</dd>",
                          report_metric_name(l->cols[best_c], u, sizeof u),
                          l->v[(size_t)bi * l->n_cols + best_c],
                          l->v[(size_t)bi * l->n_cols + c_step]);
    }
    double loss = last_value(l, r->have_log ? report_log_col(l, "loss") : -1);
    if (isfinite(loss)) report_printf(b, "<dt>last loss</dt><dd>%.4g</dd>", loss);
    if (detail[0]) {
        report_puts(b, "<dt>status</dt><dd>");
        report_html(b, detail);
        report_puts(b, "</dd>");
    }
    report_puts(b, "<dt>model</dt><dd>");
    if (r->have_model) {
        report_html(b, r->model_path);
        report_printf(b, " <span class=muted>(%s%s)</span>",
                      report_human_bytes(t, sizeof t, r->model_bytes),
                      r->model_ok ? "" : ", cannot be loaded");
        const char *sel = report_json_str(r->meta, "selected");
        if (sel) {
            report_puts(b, "<br><span class=muted>selected:</span> ");
            report_html(b, sel);
        }
    } else {
        report_puts(b, "<span class=muted>none yet</span>");
    }
    report_puts(b, "</dd></dl></div>");
}

/* Exponential moving average, debiased (TensorBoard's smoothing), over a window of about a
 * thirtieth of the points; NaN values are skipped. */
static void smooth(const double *y, int n, double *out) {
    double a = 1 - 1.0 / fmax(1, n / 30.0), m = 0, wsum = 0;
    for (int i = 0; i < n; i++) {
        if (isfinite(y[i])) m = a * m + (1 - a) * y[i], wsum = a * wsum + (1 - a);
        out[i] = wsum > 0 ? m / wsum : NAN;
    }
}

/* The column's values of one run against step or time: rows of the training phase for the
 * loss and other step columns, rows that hold a value for validation columns. */
struct xy {
    double *x, *y, *ys;
    int     n;
};

static bool series_of(const struct page_run *r, int c, bool by_time, struct xy *s) {
    const struct page_log *l = &r->log;
    int c_step = report_log_col(l, "step");
    bool val = strncmp(l->cols[c], "val_", 4) == 0;
    /* A training row has no validation values (the epoch-end rows of today's log repeat the
     * step with the epoch's mean loss): unless every row has them. */
    int n_plain = 0;
    bool *plain = malloc((size_t)l->n_rows + 1);
    s->x = malloc(sizeof(double) * ((size_t)l->n_rows + 1));
    s->y = malloc(sizeof(double) * ((size_t)l->n_rows + 1));
    s->ys = malloc(sizeof(double) * ((size_t)l->n_rows + 1));
    s->n = 0;
    if (!plain || !s->x || !s->y || !s->ys) {
        free(plain);
        return false;
    }
    for (int i = 0; i < l->n_rows; i++) {
        plain[i] = true;
        for (int k = 0; k < l->n_cols; k++)
            if (strncmp(l->cols[k], "val_", 4) == 0 && isfinite(l->v[(size_t)i * l->n_cols + k]))
                plain[i] = false;
        n_plain += plain[i];
    }
    for (int i = 0; i < l->n_rows; i++) {
        double v = l->v[(size_t)i * l->n_cols + c];
        if (val ? !isfinite(v) : (n_plain && !plain[i])) continue;
        s->x[s->n] = by_time ? l->time[i] : l->v[(size_t)i * l->n_cols + c_step];
        s->y[s->n++] = v;
    }
    free(plain);
    return true;
}

static void xy_free(struct xy *s) {
    free(s->x), free(s->y), free(s->ys);
}

static bool skip_column(const char *c) {
    return strcmp(c, "step") == 0 || strcmp(c, "epoch") == 0 || strcmp(c, "seconds") == 0 ||
           strcmp(c, "event") == 0;
}

static const char *event_color(const char *e, bool *line) {
    *line = true;
    if (!strncmp(e, "rollback", 8) || !strncmp(e, "diverge", 7) || !strncmp(e, "nan", 3))
        return "#d62728";
    *line = false;
    if (!strncmp(e, "best", 4)) return "#2ca02c";
    if (!strncmp(e, "clip", 4)) return "#98a2b3";
    *line = true;
    return "#7a5af8";
}

/* Charts of every numeric column that any run logs, all runs on each. */
static void training_charts(struct report_buf *b, struct report_page *pg, bool by_time) {
    const char *cols[64];
    int n_cols = 0;
    for (int i = 0; i < pg->n_runs; i++)
        for (int c = 0; pg->runs[i].have_log && c < pg->runs[i].log.n_cols; c++) {
            const char *name = pg->runs[i].log.cols[c];
            bool seen = skip_column(name);
            for (int k = 0; k < n_cols; k++) seen |= strcmp(cols[k], name) == 0;
            if (!seen && n_cols < 64) cols[n_cols++] = name;
        }
    /* loss first, validation loss and scores next, lr and the rest after. */
    const char *order[64];
    int n = 0;
    for (int pass = 0; pass < 3; pass++)
        for (int k = 0; k < n_cols; k++) {
            bool v = strncmp(cols[k], "val_", 4) == 0, loss = strcmp(cols[k], "loss") == 0;
            if ((pass == 0 && loss) || (pass == 1 && v) || (pass == 2 && !v && !loss))
                order[n++] = cols[k];
        }
    /* One x range for all charts, so that validation points line up with the loss curve. */
    double x_hi = NAN;
    for (int i = 0; i < pg->n_runs; i++) {
        const struct page_log *l = &pg->runs[i].log;
        int c_step = pg->runs[i].have_log ? report_log_col(l, "step") : -1;
        for (int row = 0; c_step >= 0 && row < l->n_rows; row++) {
            double x = by_time ? l->time[row] : l->v[(size_t)row * l->n_cols + c_step];
            if (isfinite(x) && !(x <= x_hi)) x_hi = x;
        }
    }
    report_printf(b, "<div class='charts %s'>", by_time ? "bytime" : "bystep");
    for (int k = 0; k < n; k++) {
        struct chart_series ser[2 * MAX_CHART_RUNS];
        struct xy xys[MAX_CHART_RUNS];
        struct chart_mark *marks = NULL;
        int ns = 0, nx = 0, nm = 0;
        bool any = false, varies = false;
        for (int i = 0; i < pg->n_runs && nx < MAX_CHART_RUNS; i++) {
            struct page_run *r = &pg->runs[i];
            int c = r->have_log ? report_log_col(&r->log, order[k]) : -1;
            if (c < 0) continue;
            struct xy *s = &xys[nx];
            if (!series_of(r, c, by_time, s)) {
                xy_free(s);
                report_oom(pg);
                continue;
            }
            nx++;
            for (int p = 1; p < s->n; p++) varies |= s->y[p] != s->y[0];
            any |= s->n > 0;
            bool noisy = strcmp(order[k], "loss") == 0 && s->n >= 100;
            if (noisy) {
                smooth(s->y, s->n, s->ys);
                ser[ns++] = (struct chart_series){s->x, s->y, s->n, r->color, CHART_FAINT, NULL};
                ser[ns++] = (struct chart_series){s->x, s->ys, s->n, r->color, CHART_LINE, r->name};
            } else {
                ser[ns++] =
                    (struct chart_series){s->x, s->y, s->n, r->color, CHART_POINTS, r->name};
            }
            /* Events of this run. */
            const struct page_log *l = &r->log;
            int c_step = report_log_col(l, "step");
            for (int row = 0; row < l->n_rows; row++) {
                if (!report_log_marked(l, row)) continue;
                struct chart_mark *nmk = realloc(marks, sizeof *marks * (size_t)(nm + 1));
                if (!nmk) break;
                marks = nmk;
                bool line;
                const char *col = event_color(l->event[row], &line);
                marks[nm++] = (struct chart_mark){
                    by_time ? l->time[row] : l->v[(size_t)row * l->n_cols + c_step], col,
                    l->event[row], line};
            }
        }
        bool lr = strcmp(order[k], "lr") == 0;
        if (any && (!lr || varies)) {
            char title[128], note_text[160] = "";
            report_metric_name(order[k], title, sizeof title);
            title[0] = (char)(title[0] >= 'a' && title[0] <= 'z' ? title[0] - 32 : title[0]);
            if (strcmp(order[k], "loss") == 0 && ns > nx)
                snprintf(note_text, sizeof note_text, "pale: every step; line: smoothed");
            else if (strncmp(order[k], "val_", 4) == 0)
                snprintf(note_text, sizeof note_text, "%s is better",
                         lower_is_better(order[k]) ? "lower" : "higher");
            struct chart ch = {title, by_time ? "wall-clock time" : "step", order[k], by_time,
                               strstr(order[k], "loss") || lr ? -1 : 0, ser, ns, marks, nm,
                               note_text[0] ? note_text : NULL, 0, x_hi};
            report_puts(b, "<div>");
            report_chart_svg(b, &ch);
            report_puts(b, "</div>");
        }
        for (int i = 0; i < nx; i++) xy_free(&xys[i]);
        free(marks);
    }
    report_puts(b, "</div>");
}

/* The events of the logs: how many of each kind per run, and a table of the marked ones. */
static void events_list(struct report_buf *b, const struct report_page *pg) {
    int total = 0, rows = 0;
    for (int i = 0; i < pg->n_runs; i++)
        for (int k = 0; pg->runs[i].have_log && k < pg->runs[i].log.n_kinds; k++)
            total += pg->runs[i].log.kinds[k].count;
    if (!total) return;
    report_printf(b, "<details><summary>%d event%s in the log%s: ", total, total > 1 ? "s" : "",
                  pg->n_runs > 1 ? "s" : "");
    for (int i = 0, first = 1; i < pg->n_runs; i++) {
        const struct page_log *l = &pg->runs[i].log;
        for (int k = 0; pg->runs[i].have_log && k < l->n_kinds; k++, first = 0) {
            report_puts(b, first ? "" : ", ");
            if (pg->n_runs > 1) report_html(b, pg->runs[i].name), report_puts(b, " ");
            report_html(b, l->kinds[k].name);
            report_printf(b, " %d", l->kinds[k].count);
        }
    }
    report_printf(b, " (the marks on the top edge of the charts; red: rollback or divergence; "
                     "a kind logged over %d times is only counted)</summary><table><tr>"
                     "<th>run</th><th class=n>step</th><th>event</th></tr>", MAX_MARKS);
    for (int i = 0; i < pg->n_runs; i++) {
        const struct page_log *l = &pg->runs[i].log;
        int c_step = pg->runs[i].have_log ? report_log_col(l, "step") : -1;
        for (int row = 0; c_step >= 0 && row < l->n_rows; row++) {
            if (!report_log_marked(l, row)) continue;
            report_puts(b, "<tr><td>");
            report_html(b, pg->runs[i].name);
            report_printf(b, "</td><td class=n>%.0f</td><td class=mono>",
                          l->v[(size_t)row * l->n_cols + c_step]);
            report_html(b, l->event[row]);
            report_puts(b, "</td></tr>");
            rows++;
        }
    }
    if (!rows) report_puts(b, "<tr><td colspan=3 class=muted>none marked</td></tr>");
    report_puts(b, "</table></details>");
}
/* The training section: a card per run, the curves against steps and wall-clock time, the
 * events. */
void report_training_section(struct report_buf *b, struct report_page *pg) {
    report_puts(b, "<section id=training><h2>Training</h2><div class=cards>");
    for (int i = 0; i < pg->n_runs; i++) run_card(b, &pg->runs[i]);
    report_puts(b, "</div>");
    bool any_log = false;
    for (int i = 0; i < pg->n_runs; i++)
        any_log |= pg->runs[i].have_log && pg->runs[i].log.n_rows;
    if (any_log) {
        report_puts(b, "<div class=toolbar><span class=muted>x axis</span><span class=seg>"
                       "<button class=on data-x=step>steps</button><button data-x=time>"
                       "wall-clock time</button></span></div>");
        training_charts(b, pg, false);
        training_charts(b, pg, true);
        events_list(b, pg);
    }
    report_puts(b, "</section>");
}

/* ---- the page: settings ---- */

static void value_text(const cJSON *v, char *buf, size_t size) {
    buf[0] = 0;
    if (!v) return;
    if (cJSON_IsString(v)) snprintf(buf, size, "%s", v->valuestring);
    else if (cJSON_IsBool(v)) snprintf(buf, size, "%s", cJSON_IsTrue(v) ? "yes" : "no");
    else if (cJSON_IsNumber(v)) snprintf(buf, size, "%.10g", v->valuedouble);
    else if (cJSON_IsNull(v)) snprintf(buf, size, "none");
    else {
        char *s = cJSON_PrintUnformatted(v);
        snprintf(buf, size, "%s", s ? s : "");
        free(s);
    }
}

static void settings_row(struct report_buf *b, const char *label, char (*vals)[512], int n) {
    bool diff = false;
    for (int i = 1; i < n; i++) diff |= strcmp(vals[i], vals[0]) != 0;
    report_puts(b, "<tr><td>");
    report_html(b, label);
    report_puts(b, "</td>");
    for (int i = 0; i < n; i++) {
        report_puts(b, diff ? "<td class=diff>" : "<td>");
        report_html(b, vals[i]);
        report_puts(b, "</td>");
    }
    report_puts(b, "</tr>");
}

void report_settings_section(struct report_buf *b, struct report_page *pg) {
    int n = pg->n_runs;
    char(*vals)[512] = malloc(sizeof *vals * (size_t)(n ? n : 1));
    if (!vals) {
        report_oom(pg);
        return;
    }
    report_puts(b, "<section id=settings><h2>Settings</h2><p class=muted>From each run's "
                   "STEM.run.json and its model file.");
    if (n > 1) report_puts(b, " Values that differ between the runs are marked.");
    report_puts(b, "</p><table class=set><tr><th></th>");
    for (int i = 0; i < n; i++) {
        report_printf(b, "<th><span style='color:%s'>&#9632;</span> ", pg->runs[i].color);
        report_html(b, pg->runs[i].name);
        report_puts(b, "</th>");
    }
    report_puts(b, "</tr>");
    static const char *sections[][2] = {{"architecture", "Architecture"}, {"recipe", "Recipe"},
                                        {"data", "Data"}, {"time", "Time"},
                                        {"machine", "Machine"}};
    for (size_t s = 0; s < 5; s++) {
        /* The keys of this section over all runs, in first-seen order. */
        const char *keys[64];
        int nk = 0;
        for (int i = 0; i < n; i++) {
            const cJSON *sec = rec(&pg->runs[i], sections[s][0], NULL);
            for (const cJSON *v = sec ? sec->child : NULL; v && nk < 64; v = v->next) {
                bool seen = false;
                for (int k = 0; k < nk; k++) seen |= strcmp(keys[k], v->string) == 0;
                if (!seen) keys[nk++] = v->string;
            }
        }
        if (!nk) continue;
        report_printf(b, "<tr class=sec><td colspan=%d>%s</td></tr>", n + 1, sections[s][1]);
        for (int k = 0; k < nk; k++) {
            for (int i = 0; i < n; i++) value_text(rec(&pg->runs[i], sections[s][0], keys[k]),
                                                   vals[i], sizeof vals[i]);
            char label[128];
            snprintf(label, sizeof label, "%s", keys[k]);
            for (char *p = label; *p; p++)
                if (*p == '_') *p = ' ';
            settings_row(b, label, vals, n);
        }
    }
    /* The model file: what it is, as its checkpoint says. */
    report_printf(b, "<tr class=sec><td colspan=%d>Model file</td></tr>", n + 1);
    for (int row = 0; row < 5; row++) {
        static const char *labels[] = {"path", "size", "written", "architecture", "metadata"};
        for (int i = 0; i < n; i++) {
            const struct page_run *r = &pg->runs[i];
            char *v = vals[i];
            v[0] = 0;
            if (!r->have_model) {
                snprintf(v, 512, "%s", row == 0 ? "(none)" : "");
                continue;
            }
            char t[64];
            if (row == 0) snprintf(v, 512, "%s", r->model_path);
            else if (row == 1) snprintf(v, 512, "%s", report_human_bytes(t, sizeof t, r->model_bytes));
            else if (row == 2)
                report_time(v, 512, "%Y-%m-%d %H:%M:%S", (time_t)r->model_mtime);
            else if (row == 3 && r->model_ok) {
                char depth[32] = "";
                if (r->cfg.arch == UNET_ARCH_UNET || r->cfg.arch == UNET_ARCH_UNET_PAPER)
                    snprintf(depth, sizeof depth, ", depth %d", r->cfg.depth);
                snprintf(v, 512, "%s, base %d%s, %d classes, %d input channel%s, %zu parameters",
                         unet_arch_name(r->cfg.arch), r->cfg.base, depth, r->cfg.classes,
                         r->cfg.in_channels, r->cfg.in_channels == 1 ? "" : "s", r->params);
            } else if (row == 3) {
                snprintf(v, 512, "cannot be loaded (see above)");
            } else if (row == 4 && r->meta) {
                size_t len = 0;
                for (const cJSON *m = r->meta->child; m && len < 480; m = m->next)
                    len += (size_t)snprintf(v + len, 512 - len, "%s%s=%s", len ? ", " : "",
                                            m->string, m->valuestring);
            }
        }
        settings_row(b, labels[row], vals, n);
    }
    /* The command lines. */
    report_printf(b, "<tr class=sec><td colspan=%d>Command</td></tr><tr><td></td>", n + 1);
    for (int i = 0; i < n; i++) {
        const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(pg->runs[i].record, "command");
        report_puts(b, "<td class=mono>");
        for (const cJSON *a = cJSON_IsArray(cmd) ? cmd->child : NULL; a; a = a->next) {
            if (!cJSON_IsString(a)) continue;
            bool quote = strpbrk(a->valuestring, " \t\"'$*?") != NULL || !*a->valuestring;
            report_puts(b, quote ? "'" : "");
            report_html(b, a->valuestring);
            report_puts(b, quote ? "' " : " ");
        }
        report_puts(b, "</td>");
    }
    report_puts(b, "</tr></table></section>");
    free(vals);
}
