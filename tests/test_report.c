/* test_report.c — unet report, unet train --report and unet eval --report: the pages they write,
 * checked as text and as a browser draws them.
 *
 *   - a tiny training run with --report, predictions and unet eval --report: each page is
 *     self-contained (no http(s) reference; every src= and url() a data: URI or a fragment;
 *     no <link>, @import, frames or objects) and every embedded PNG loads with unet's reader;
 *     a matched predicted object has its true object's colour in the pictures
 *   - headless Chromium (Debian's chromium; scripts/deps.sh installs it when missing) draws
 *     each page: the screenshot is not blank (share of non-white pixels, distinct colours) and
 *     shows the first run's curve colour, and for the evaluation the false-positive red;
 *     its --dump-dom shows the page's script sorting the table worst first, 25 rows a page
 *   - two runs and an evaluation on one page: both runs in the legend, differing settings
 *     marked
 *   - endings: SIGINT gives "interrupted", a divergence past the rollbacks "diverged"
 *   - bad input: a missing, empty or torn log, a run still in progress, a damaged run record
 *     and model, a missing prediction and a missing input image, an evaluation that does not
 *     name its folders: the page says what is missing and the command does not fail; nothing
 *     to report at all is an error, and a page name that is not .html a usage error
 *   - log columns are found by name: a log with "event" and extra columns (a newer unet)
 *     draws its events and the extra column; a kind of event logged 70 times is counted
 *   - 1000 images of noise (the worst case for PNG) stay under 20 MB

 * UNET_TEST_NO_BROWSER=1 skips the screenshots with a note (for machines without chromium);
 * otherwise a missing browser is a failure.  UNET_TEST_KEEP=1 keeps the pages and screenshots
 * (the last line says where).
 */
#include "harness.h"

#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>

static const char *unet_bin;
static char out_text[65536];    /* the last command's stdout and stderr */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs a shell command line (paths here have no spaces) with its output in out_text;
 * returns the exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[4096], log[300], full[4500];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    tmp_path(log, sizeof log, "out.txt");
    snprintf(full, sizeof full, "( %s ) > %s 2>&1", cmd, log);
    int st = system(full);
    size_t n = 0;
    unsigned char *t = read_all(log, &n);
    snprintf(out_text, sizeof out_text, "%s", t ? (char *)t : "");
    free(t);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

#define CHECK_SH(rc_expr, want)                                                                \
    do {                                                                                       \
        int rc_ = (rc_expr);                                                                   \
        if (rc_ != (want))                                                                     \
            HARNESS_FAIL_AT(__FILE__, __LINE__, "exit %d, want %d; output:\n%s", rc_, (want),  \
                            out_text);                                                         \
    } while (0)

/* Checks that text holds every string of the list; a page can be megabytes, so a failure
 * prints the missing string, not the page. */
#define CHECK_HAS(text, ...)                                                                   \
    check_has(__FILE__, __LINE__, text, (const char *[]){__VA_ARGS__, NULL})
static void check_has(const char *file, int line, const char *text, const char **want) {
    for (; *want; want++)
        if (!text || !strstr(text, *want))
            HARNESS_FAIL_AT(file, line, "the text does not contain '%s'", *want);
}

static char *slurp(const char *path) {
    size_t n;
    return (char *)read_all(path, &n);
}

/* ---- data ---- */

/* n images of S x S in dir/images (8-bit), dir/masks (16-bit instance labels: disks) and
 * dir/pred (0/255: the same disks moved and resized, so there are false positives and false
 * negatives).  noise: uniform random pixels, the worst case for PNG compression. */
static bool write_set(const char *dir, int n, int S, bool noise) {
    char p[600];
    const char *sub[] = {"images", "masks", "pred"};
    mkdir(dir, 0755);
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, sub[k]);
        mkdir(p, 0755);
    }
    struct unet__rng r;
    unet__rng_seed(&r, 7);
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        unet_image img, mask, pred;
        ok = unet_image_alloc(NULL, &img, S, S, 1, UNET_DTYPE_U8) == UNET_STATUS_OK &&
             unet_image_alloc(NULL, &mask, S, S, 1, UNET_DTYPE_U16) == UNET_STATUS_OK &&
             unet_image_alloc(NULL, &pred, S, S, 1, UNET_DTYPE_U8) == UNET_STATUS_OK;
        if (!ok) break;
        uint8_t *x = img.data, *pm = pred.data;
        uint16_t *m = mask.data;
        for (int k = 0; k < S * S; k++)
            x[k] = (uint8_t)(noise ? unet__rng_below(&r, 256) : 30 + unet__rng_below(&r, 30));
        for (int d = 1; d <= 3 + S / 24; d++) {
            int cx = 6 + (int)unet__rng_below(&r, (uint64_t)S - 12);
            int cy = 6 + (int)unet__rng_below(&r, (uint64_t)S - 12);
            int rad = 3 + (int)unet__rng_below(&r, (uint64_t)(S / 12));
            int dx = (int)unet__rng_below(&r, 5) - 2, dr = (int)unet__rng_below(&r, 3);
            for (int y = 0; y < S; y++)
                for (int xx = 0; xx < S; xx++) {
                    int q = y * S + xx;
                    if ((xx - cx) * (xx - cx) + (y - cy) * (y - cy) <= rad * rad) {
                        m[q] = (uint16_t)(d * 3);
                        if (!noise) x[q] = (uint8_t)(170 + unet__rng_below(&r, 60));
                    }
                    if ((xx - cx - dx) * (xx - cx - dx) + (y - cy) * (y - cy) <=
                        (rad + dr) * (rad + dr))
                        pm[q] = 255;
                }
        }
        snprintf(p, sizeof p, "%s/images/im%04d.png", dir, i);
        ok = unet_image_save(NULL, p, &img) == UNET_STATUS_OK;
        snprintf(p, sizeof p, "%s/masks/im%04d.png", dir, i);
        ok = ok && unet_image_save(NULL, p, &mask) == UNET_STATUS_OK;
        snprintf(p, sizeof p, "%s/pred/im%04d.png", dir, i);
        ok = ok && unet_image_save(NULL, p, &pred) == UNET_STATUS_OK;
        unet_image_free(&img);
        unet_image_free(&mask);
        unet_image_free(&pred);
    }
    return ok;
}

/* ---- what a page may hold ---- */

static bool starts(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The first reference to anything outside the page, described in why; false when none. */
static bool external_ref(const char *html, char *why, size_t size) {
    static const char *never[] = {"http://", "https://", "<link", "@import", "<iframe",
                                  "<object", "<embed", "srcset", "<base", "//cdn", "ftp://"};
    for (size_t k = 0; k < sizeof never / sizeof never[0]; k++) {
        for (const char *p = html; *p; p++)
            if (strncasecmp(p, never[k], strlen(never[k])) == 0) {
                snprintf(why, size, "'%s' at offset %ld: %.60s", never[k], (long)(p - html), p);
                return true;
            }
    }
    /* Where a page names another resource: only its own data: URIs and #fragments. */
    static const char *refs[][3] = {{"src=", "data:", "data:"}, {"url(", "data:", "#"},
                                    {"href=", "#", "#"}};
    for (size_t k = 0; k < 3; k++) {
        size_t n = strlen(refs[k][0]);
        for (const char *p = html; (p = strstr(p, refs[k][0])); p += n) {
            const char *v = p + n + (p[n] == '"' || p[n] == '\'');
            if (!starts(v, refs[k][1]) && !starts(v, refs[k][2])) {
                snprintf(why, size, "%s not %s: %.60s", refs[k][0], refs[k][1], p);
                return true;
            }
        }
    }
    return false;
}

static int b64(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* The embedded PNG that starts at p (after "base64,"), decoded and loaded with unet's
 * reader (a palette image comes back as RGB, its transparency dropped). */
static bool load_embedded(const char *p, unet_image *img) {
    size_t n = 0;
    while (b64(p[n]) >= 0) n++;
    unsigned char *bin = malloc(n);
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; bin && i < n; i++) {
        acc = acc << 6 | (uint32_t)b64(p[i]);
        if ((bits += 6) >= 8) bin[k++] = (unsigned char)(acc >> (bits -= 8));
    }
    char path[300];
    tmp_path(path, sizeof path, "embedded.png");
    bool ok = bin && write_all(path, bin, k) &&
              unet_image_load(NULL, path, 0, img) == UNET_STATUS_OK;
    free(bin);
    return ok;
}

static const char *PNG_TAG = "data:image/png;base64,";

/* Loads up to `max` embedded PNGs; returns how many loaded, *total the number found. */
static int check_pngs(const char *html, int max, int *total) {
    int good = 0;
    *total = 0;
    for (const char *p = html; (p = strstr(p, PNG_TAG)); (*total)++) {
        p += strlen(PNG_TAG);
        unet_image img;
        if (*total < max && load_embedded(p, &img)) {
            good += img.w > 0 && img.h > 0;
            unet_image_free(&img);
        }
    }
    return good;
}

static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* The page at path, checked for references outside it; NULL (a failure) when unreadable. */
#define page(path) page_at(__FILE__, __LINE__, path)
static char *page_at(const char *file, int line, const char *path) {
    char *h = slurp(path), why[200];
    if (!h) HARNESS_FAIL_AT(file, line, "%s: no page", path);
    else if (external_ref(h, why, sizeof why))
        HARNESS_FAIL_AT(file, line, "%s: external reference: %s", path, why);
    return h;
}

/* ---- the browser ---- */

static const char *browser_path(void) {
    static const char *paths[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser"};
    for (int attempt = 0; attempt < 2; attempt++) {
        for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
            if (access(paths[i], X_OK) == 0) return paths[i];
        if (attempt == 0) {
            printf("       chromium is missing: scripts/deps.sh chromium\n");
            sh("sh scripts/deps.sh chromium");
        }
    }
    return NULL;
}

/* false (with a note or a failure) when there is no browser to draw with */
static bool browser_ready(void) {
    if (getenv("UNET_TEST_NO_BROWSER") && *getenv("UNET_TEST_NO_BROWSER") == '1') {
        printf("       UNET_TEST_NO_BROWSER=1: screenshots skipped\n");
        return false;
    }
    if (browser_path()) return true;
    HARNESS_FAIL_AT(__FILE__, __LINE__, "no chromium, and scripts/deps.sh could not install it "
                    "(not root?); UNET_TEST_NO_BROWSER=1 skips the screenshots");
    return false;
}

/* Runs headless Chromium on the page with args (a screenshot, a DOM dump): as root without the
 * sandbox, no GPU, none of its network features, no /dev/shm (small in containers), a fresh
 * profile each time.  Returns its exit status. */
static int chromium(const char *args, const char *html) {
    char profile[300];
    tmp_path(profile, sizeof profile, "chromium-profile");
    remove_tree(profile);
    return sh("timeout 120 %s --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
              "--disable-background-networking --disable-component-update --disable-sync "
              "--disable-dev-shm-usage --user-data-dir=%s %s file://%s", browser_path(), profile,
              args, html);
}

/* Pixels of the picture (3, h, w) within tol of the colour rgb (0xRRGGBB) in each channel. */
static size_t pixels_like(const unet_image *img, uint32_t rgb, int tol) {
    size_t P = (size_t)img->w * img->h, n = 0;
    const uint8_t *d = img->data;
    int r = (int)(rgb >> 16), g = (int)(rgb >> 8 & 255), b = (int)(rgb & 255);
    for (size_t i = 0; img->c == 3 && i < P; i++)
        n += abs(d[i] - r) <= tol && abs(d[P + i] - g) <= tol && abs(d[2 * P + i] - b) <= tol;
    return n;
}

/* Draws the page in headless Chromium (1280 x h, a fresh profile, no network features), reads
 * the screenshot NAME.png back with unet's PNG reader and checks that it is not blank: at
 * least min_ink of its pixels not white, more than min_colors distinct colours (5 bits a
 * channel), and more than min_like pixels of the colour rgb (what must be drawn: a curve, the
 * false-positive red).  Skipped with a note when UNET_TEST_NO_BROWSER=1. */
static void check_drawn(const char *html, const char *name, int h, double min_ink, int min_colors,
                        uint32_t rgb, int tol, size_t min_like) {
    if (!browser_ready()) return;
    char png[300], args[400];
    tmp_path(png, sizeof png, name);
    unlink(png);
    double t0 = now();
    snprintf(args, sizeof args, "--hide-scrollbars --screenshot=%s --window-size=1280,%d", png, h);
    int rc = chromium(args, html);
    unet_image img;
    if (rc != 0 || unet_image_load(NULL, png, 0, &img) != UNET_STATUS_OK) {
        HARNESS_FAIL_AT(__FILE__, __LINE__, "chromium exit %d, no screenshot:\n%s", rc, out_text);
        return;
    }
    size_t P = (size_t)img.w * img.h, ink = 0;
    int colors = 0;
    static uint8_t seen[32768];
    memset(seen, 0, sizeof seen);
    const uint8_t *d = img.data;
    for (size_t i = 0; i < P; i++) {
        int r = d[i], g = img.c == 3 ? d[P + i] : r, b = img.c == 3 ? d[2 * P + i] : r;
        ink += r < 235 || g < 235 || b < 235;
        int q = (r >> 3) << 10 | (g >> 3) << 5 | b >> 3;
        colors += !seen[q];
        seen[q] = 1;
    }
    size_t like = pixels_like(&img, rgb, tol);
    printf("       chromium drew %s (%dx%d) in %.1f s: %.1f %% ink, %d colours, %zu pixels of "
           "#%06x\n", name, img.w, img.h, now() - t0, 100.0 * ink / P, colors, like, rgb);
    CHECK(img.w == 1280 && img.h == h);
    CHECK((double)ink / P > min_ink);
    CHECK(colors > min_colors);
    CHECK(like > min_like);
    unet_image_free(&img);
}

/* The page as the browser has it after its script ran (chromium --dump-dom) into dom;
 * false when there is no browser (noted) or it failed. */
static bool dump_dom(const char *html, const char *dom) {
    if (!browser_ready()) return false;
    char args[600];
    snprintf(args, sizeof args, "--dump-dom > %s", dom);
    int rc = chromium(args, html);
    if (rc != 0) HARNESS_FAIL_AT(__FILE__, __LINE__, "chromium --dump-dom exit %d:\n%s", rc,
                                 out_text);
    return rc == 0;
}

/* ---- the tests ---- */

static char data_dir[300], run_dir[300], eval_dir[300];

/* A tiny training run into dir/model.*; extra options may follow in `more`. */
static int train(const char *dir, const char *more) {
    mkdir(dir, 0755);
    return sh("%s train --images %s/images --masks %s/masks --out %s/model.safetensors --base 4 "
              "--depth 2 --tile 32 --batch 2 --steps 24 --val-split 0.25 --seed 3 --threads 1 "
              "--quiet %s", unet_bin, data_dir, data_dir, dir, more);
}

TEST(train_report_draws) {
    char html[400], rec[400];
    snprintf(html, sizeof html, "%s/report.html", run_dir);
    double t0 = now();
    char more[500];
    snprintf(more, sizeof more, "--report %s", html);
    CHECK_SH(train(run_dir, more), 0);
    printf("       train + report: %.1f s\n", now() - t0);
    CHECK_STR_CONTAINS(out_text, "wrote");
    snprintf(rec, sizeof rec, "%s/model.run.json", run_dir);
    char *r = slurp(rec);
    CHECK_HAS(r, "\"status\":\t\"finished\"", "\"parameters\":", "\"last_step\":\t24");
    free(r);
    char *h = page(html);
    if (!h) return;
    /* The curves, the status and the recipe (the masks are cell ids: the default recipe
     * trains them with the border-weighted loss, docs/training.md); a complete run has
     * nothing missing. */
    CHECK_HAS(h, "Training loss", "Validation Dice", "<svg class=chart", "badge finished",
              "wce", "<span class=muted>selected:</span> ");
    CHECK(!strstr(h, "What is missing"));
    free(h);
    /* The run's curve colour (#4e79a7), in the lines and the legends. */
    check_drawn(html, "train.png", 1400, 0.05, 40, 0x4e79a7, 8, 300);
}

TEST(eval_report_draws) {
    char html[400], p[600];
    CHECK(write_set(eval_dir, 6, 64, false));
    /* A prediction and an input image go missing. */
    snprintf(p, sizeof p, "%s/pred/im0002.png", eval_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/images/im0004.png", eval_dir);
    unlink(p);
    snprintf(html, sizeof html, "%s/eval.html", eval_dir);
    CHECK_SH(sh("%s eval --pred %s/pred --truth %s/masks --images %s/images --report %s", unet_bin,
                eval_dir, eval_dir, eval_dir, html), 1);
    /* unet eval's error for the missing prediction, then the summary lines. */
    CHECK_HAS(out_text, "im0002.png: no prediction", "Dice 0.", "n = 5 images");
    char *h = page(html);
    if (!h) return;
    CHECK_HAS(h, "What is missing", "im0002.png (no prediction)", "no input image",
              "mean \xc2\xb1 s.d., n = 5 images");
    int total, good = check_pngs(h, 100, &total);
    printf("       %d of %d embedded PNGs load\n", good, total);
    CHECK_EQ(total, 5 * 3 - 1);                    /* one image has no input picture */
    CHECK_EQ(good, total);
    CHECK_EQ(count(h, "<tr><td class=n data-v="), 5);
    /* The first row's pictures: input, prediction, truth.  Where both overlays draw an object
     * (not black, not an error colour), a matched predicted object has its true object's
     * colour: most such pixels agree (random colours would agree on about 1 in 40). */
    const char *row = strstr(h, "<tr><td class=n data-v=");
    const char *pp = row ? strstr(strstr(row, PNG_TAG) + 1, PNG_TAG) : NULL;
    const char *tp = pp ? strstr(pp + 1, PNG_TAG) : NULL;
    unet_image pred, truth;
    if (pp && tp && load_embedded(pp + strlen(PNG_TAG), &pred)) {
        if (load_embedded(tp + strlen(PNG_TAG), &truth)) {
            size_t P = (size_t)pred.w * pred.h, both = 0, same = 0;
            const uint8_t *a = pred.data, *t = truth.data;
            for (size_t i = 0; pred.c == 3 && truth.c == 3 && i < P; i++) {
                bool pa = a[i] | a[P + i] | a[2 * P + i], ta = t[i] | t[P + i] | t[2 * P + i];
                bool err = (a[i] == 235 && a[P + i] == 30) || (a[i] == 30 && a[P + i] == 100);
                if (!pa || !ta || err) continue;
                both++;
                same += a[i] == t[i] && a[P + i] == t[P + i] && a[2 * P + i] == t[2 * P + i];
            }
            printf("       object colours agree on %zu of %zu pixels\n", same, both);
            CHECK(both > 100);
            CHECK(same > both * 8 / 10);
            unet_image_free(&truth);
        }
        unet_image_free(&pred);
    } else {
        CHECK(!"the first row has no pictures");
    }
    free(h);
    /* The JSON names its folders, so unet report reads it later. */
    CHECK_SH(sh("%s eval --pred %s/pred --truth %s/masks --images %s/images --json > %s/eval.json",
                unet_bin, eval_dir, eval_dir, eval_dir, eval_dir), 1);
    /* False positives: the overlays' red over the dark images (the legend has 144 pixels). */
    check_drawn(html, "eval.png", 1400, 0.10, 100, 0xdc2332, 40, 600);
}

TEST(runs_and_eval_on_one_page) {
    char other[300], html[400];
    tmp_path(other, sizeof other, "run_b");
    CHECK_SH(train(other, "--lr 3e-3"), 0);
    snprintf(html, sizeof html, "%s/all.html", tmp_dir);
    CHECK_SH(sh("%s report %s %s %s/eval.json --out %s", unet_bin, run_dir, other, eval_dir, html),
             0);
    char *h = page(html);
    if (!h) return;
    /* both runs, told apart by folder */
    /* the learning rates differ */
    CHECK_HAS(h, ">run_a/model<", ">run_b/model<", "<td class=diff>0.003</td>", "id=eval0");
    free(h);
    /* The second run's colour (#f28e2b) is on the charts too. */
    check_drawn(html, "all.png", 1000, 0.05, 40, 0xf28e2b, 8, 300);
}

/* SIGINT in the middle of a run: the record says "interrupted" with the last step, and the
 * --report page is written all the same.  A run that diverges past its rollbacks (lr 100,
 * exit 3) says "diverged", with its rollbacks as red dashed lines. */
TEST(endings_are_named) {
    char dir[300], more[1200], p[400];
    tmp_path(dir, sizeof dir, "stopped");
    snprintf(more, sizeof more,
             "--steps 100000 --report %s/r.html & p=$!; i=0; while [ \"$(cat %s/model.log.csv "
             "2>/dev/null | wc -l)\" -lt 4 ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
             "kill -INT $p; wait $p", dir, dir);
    CHECK_SH(train(dir, more), 130);
    snprintf(p, sizeof p, "%s/model.run.json", dir);
    char *r = slurp(p);
    CHECK_HAS(r, "\"status\":\t\"interrupted\"", "\"last_step\":");
    free(r);
    snprintf(p, sizeof p, "%s/r.html", dir);
    char *h = page(p);
    CHECK_HAS(h, "badge interrupted", "of 100000");
    free(h);
    tmp_path(dir, sizeof dir, "diverged");
    snprintf(more, sizeof more, "--lr 100 --steps 200 --report %s/r.html", dir);
    CHECK_SH(train(dir, more), 3);
    snprintf(p, sizeof p, "%s/r.html", dir);
    h = page(p);
    CHECK_HAS(h, "badge diverged", "rollback:", "stroke='#d62728' stroke-dasharray");
    free(h);
}

/* Copies run_dir's files to dir. */
static void copy_run(const char *dir) {
    CHECK_SH(sh("rm -rf %s && mkdir -p %s && cp %s/model.* %s/", dir, dir, run_dir, dir), 0);
}

static void report_notes(const char *dir, const char *want1, const char *want2) {
    char html[400];
    snprintf(html, sizeof html, "%s/r.html", dir);
    CHECK_SH(sh("%s report %s --out %s", unet_bin, dir, html), 0);
    char *h = page(html);
    if (!h) return;
    CHECK_HAS(h, "What is missing", want1);
    if (want2) CHECK_HAS(h, want2);
    free(h);
}

TEST(bad_inputs_are_named) {
    char dir[300], p[600];
    /* A run still going: status running, the log torn in the middle of a line, no model. */
    tmp_path(dir, sizeof dir, "going");
    copy_run(dir);
    snprintf(p, sizeof p, "%s/model.log.csv", dir);
    size_t n;
    unsigned char *log = read_all(p, &n);
    CHECK(log && n > 10 && write_all(p, log, n - 7));
    free(log);
    CHECK_SH(sh("sed -i 's/\"finished\"/\"running\"/' %s/model.run.json && rm %s/model.safetensors",
                dir, dir), 0);
    report_notes(dir, "the last line is incomplete", "no model file");
    snprintf(p, sizeof p, "%s/r.html", dir);
    char *h = slurp(p);
    CHECK_HAS(h, "badge running");
    free(h);
    /* A damaged run record and model, a missing log. */
    tmp_path(dir, sizeof dir, "damaged");
    copy_run(dir);
    snprintf(p, sizeof p, "%s/model.run.json", dir);
    CHECK(write_all(p, "{\"status\": \"fini", 16));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(write_all(p, "not a model", 11));
    report_notes(dir, "not a valid run record", "the model cannot be loaded");
    snprintf(p, sizeof p, "%s/model.log.csv", dir);
    unlink(p);
    report_notes(dir, "the training log is missing", NULL);
    /* An evaluation that does not name its folders: the metrics, no pictures. */
    char old[600];
    snprintf(old, sizeof old, "%s/old.eval.json", dir);
    CHECK(write_all(old, "{\"images\": [{\"name\": \"a.png\", \"dice\": [0.5, 0.9]}]}", 52));
    report_notes(dir, "does not name its prediction and truth folders", "Dice 0.900 (n = 1 image)");
    unlink(old);
    /* An empty log (the run has not finished a step yet). */
    CHECK(write_all(p, "", 0));
    report_notes(dir, "the log is empty", NULL);
    /* Nothing to report: an error, and no page. */
    char html[400];
    snprintf(html, sizeof html, "%s/none.html", tmp_dir);
    CHECK_SH(sh("%s report %s/no_such_run --out %s", unet_bin, tmp_dir, html), 1);
    CHECK_HAS(out_text, "no_such_run: No such file or directory", "nothing to report");
    CHECK(access(html, F_OK) != 0);
    CHECK_SH(sh("%s report --out %s", unet_bin, html), 2);
    /* A page name that is not .html never replaces a log or a model: refused up front. */
    snprintf(p, sizeof p, "%s/model.log.csv", run_dir);
    CHECK_SH(sh("%s report %s --out %s", unet_bin, run_dir, p), 2);
    CHECK_HAS(out_text, "must end in .html");
    CHECK_SH(sh("%s eval --pred %s/pred --truth %s/masks --report %s", unet_bin, eval_dir,
                eval_dir, p), 2);
    snprintf(html, sizeof html, "%s/model.log.csv", run_dir);
    char *kept = slurp(html);
    CHECK_HAS(kept, "step,");
    free(kept);
}

TEST(log_columns_by_name) {
    char dir[300], p[600], html[600];
    tmp_path(dir, sizeof dir, "newer_log");
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/m.log.csv", dir);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f) return;
    /* Another column order, an extra column, events (one with a comma, quoted), a bad row. */
    fprintf(f, "epoch,step,seconds,loss,grad_norm,lr,val_dice,event\n");
    for (int k = 1; k <= 300; k++) {
        const char *ev = k == 120   ? "rollback:lr=5e-4"
                         : k == 200 ? "\"best val_dice=0.9,x\""
                         : k > 230  ? "clip:norm=2"
                                    : "";
        fprintf(f, "%d,%d,%.1f,%.4f,%.3f,%g,%s,%s\n", 1 + k / 100, k, k * 0.5,
                1.0 / (1 + 0.02 * k), 2.0 + (k % 7), k < 120 ? 1e-3 : 5e-4,
                k % 100 == 0 ? "0.8" : "", ev);
        if (k == 50) fprintf(f, "oops,this,row\n");
    }
    fclose(f);
    snprintf(html, sizeof html, "%s/r.html", dir);
    CHECK_SH(sh("%s report %s --out %s", unet_bin, p, html), 0);
    char *h = page(html);
    if (!h) return;
    CHECK_HAS(h, ">Gradient norm<", ">Learning rate<", "rollback:lr=5e-4", "best val_dice=0.9,x",
              "1 line could not be read (the first at line 52", "no run record");
    /* Two events on each of the 4 charts (loss, val_dice, grad_norm, lr), by step and time;
     * the 70 clips are counted, not marked. */
    CHECK_EQ(count(h, "<g class=ev>"), 2 * 4 * 2);
    CHECK_HAS(h, "rollback 1, best 1, clip 70");
    free(h);
}

/* The value (data-v) of cell k of the table row that starts at row, NaN when none. */
static double cell(const char *row, int k) {
    const char *end = strstr(row, "</tr>");
    for (const char *p = row; (p = strstr(p, "<td")) && (!end || p < end); p += 3)
        if (k-- == 0) {
            const char *v = strstr(p, "data-v=\"");
            return v && (!end || v < end) && v < strchr(p, '>') ? atof(v + 8) : NAN;
        }
    return NAN;
}

/* The script sorts the table worst first and shows 25 rows a page: 40 images, 4 different. */
TEST(table_sorts_and_pages) {
    char dir[300], html[400], dom[400];
    tmp_path(dir, sizeof dir, "forty");
    CHECK(write_set(dir, 4, 32, false));
    const char *sub[] = {"images", "masks", "pred"};
    for (int k = 0; k < 3; k++)
        for (int i = 4; i < 40; i++) {
            char a[600], b[600];
            snprintf(a, sizeof a, "%s/%s/im%04d.png", dir, sub[k], i % 4);
            snprintf(b, sizeof b, "%s/%s/im%04d.png", dir, sub[k], i);
            CHECK(link(a, b) == 0);
        }
    snprintf(html, sizeof html, "%s/r.html", dir);
    CHECK_SH(sh("%s eval --pred %s/pred --truth %s/masks --report %s", unet_bin, dir, dir, html),
             0);
    snprintf(dom, sizeof dom, "%s/dom.html", dir);
    if (!dump_dom(html, dom)) return;
    char *d = slurp(dom);
    const char *dice = d ? strstr(d, ">dice</th>") : NULL;
    CHECK(dice != NULL);
    if (!dice) {
        free(d);
        return;
    }
    /* The dice column's index, from its header cell's data-k. */
    const char *th = dice;
    while (th > d && strncmp(th, "<th", 3) != 0) th--;
    int k = atoi(strstr(th, "data-k=\"") + 8);
    int shown = 0, hidden = 0, order_ok = 1;
    double prev = -INFINITY;
    const char *body = strstr(dice, "<tbody>"), *body_end = body ? strstr(body, "</tbody>") : NULL;
    for (const char *p = body; p && (p = strstr(p, "<tr")) && p < body_end; p += 3) {
        bool h = strncmp(p, "<tr hidden", 10) == 0;
        hidden += h, shown += !h;
        double v = cell(p, k);
        if (v < prev) order_ok = 0;
        prev = v;
    }
    printf("       after the script: %d rows shown, %d hidden, dice column %d ascending: %s\n",
           shown, hidden, k, order_ok ? "yes" : "no");
    CHECK_EQ(shown, 25);
    CHECK_EQ(hidden, 15);
    CHECK(order_ok);
    CHECK_HAS(d, "page 1 of 2 (40 images)");
    free(d);
}

TEST(thousand_images_stay_small) {
    char dir[300], html[400];
    tmp_path(dir, sizeof dir, "thousand");
    double t0 = now();
    /* One image of noise, its mask and prediction, linked under 1000 names: the page holds
     * 1000 copies all the same (writing 3000 files atomically would take most of a minute). */
    CHECK(write_set(dir, 1, 128, true));
    const char *sub[] = {"images", "masks", "pred"};
    for (int k = 0; k < 3; k++)
        for (int i = 1; i < 1000; i++) {
            char a[600], b[600];
            snprintf(a, sizeof a, "%s/%s/im0000.png", dir, sub[k]);
            snprintf(b, sizeof b, "%s/%s/im%04d.png", dir, sub[k], i);
            CHECK(link(a, b) == 0);
        }
    double t1 = now();
    snprintf(html, sizeof html, "%s/r.html", dir);
    CHECK_SH(sh("%s eval --pred %s/pred --truth %s/masks --images %s/images --report %s",
                unet_bin, dir, dir, dir, html), 0);
    double t2 = now();
    struct stat sb;
    CHECK(stat(html, &sb) == 0);
    printf("       1000 images of noise: data %.1f s, eval + report %.1f s, page %.1f MB\n",
           t1 - t0, t2 - t1, sb.st_size / 1048576.0);
    CHECK(sb.st_size < 20 * 1048576);
    CHECK(sb.st_size > 2 * 1048576); /* the pictures are there */
    char *h = slurp(html);
    if (!h) return;
    CHECK_EQ(count(h, "<tr><td class=n data-v="), 1000);
    int total, good = check_pngs(h, 30, &total);
    CHECK_EQ(total, 3000);
    CHECK_EQ(good, 30);
    free(h);
}

int main(void) {
    unet_bin = getenv("UNET_BIN");
    if (!unet_bin || !*unet_bin) {
        printf("test_report: UNET_BIN is not set (make test sets it to $(BUILD)/unet); skipped\n");
        return harness_finish();
    }
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/unet_test_report_%d", (int)getpid());
    mkdir(tmp_dir, 0755);
    tmp_path(data_dir, sizeof data_dir, "data");
    tmp_path(run_dir, sizeof run_dir, "run_a");
    tmp_path(eval_dir, sizeof eval_dir, "eval");
    if (!write_set(data_dir, 4, 48, false)) {
        printf("test_report: cannot write the dataset in %s\n", data_dir);
        harness_failed++;
        return harness_finish();
    }
    RUN(train_report_draws);
    RUN(eval_report_draws);
    RUN(runs_and_eval_on_one_page);
    RUN(endings_are_named);
    RUN(bad_inputs_are_named);
    RUN(log_columns_by_name);
    RUN(table_sorts_and_pages);
    RUN(thousand_images_stay_small);
    if (getenv("UNET_TEST_KEEP")) printf("test_report: the pages are in %s\n", tmp_dir);
    else remove_tree(tmp_dir);
    return harness_finish();
}
