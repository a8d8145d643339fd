/* test_trainer.c — the training loop as a library call (unet_trainer, include/unet.h):
 *
 *   - a run through the API equals `unet train` ($UNET_BIN) with the same data, seed, options
 *     and threads: the same log rows and the same three model files, byte for byte
 *   - a run stopped by its callback and resumed through the API equals the uninterrupted one
 *   - the callback hears START once, every step, and every epoch end with its validation
 *   - bad options are UNET_STATUS_ARG naming the option
 *   - the seams for data-parallel training (issue 13): a sampler's shards are the slices of the
 *     whole batch; two "processes" (threads), each stepping on half of every batch and summing
 *     gradients in the gradient hook, end where one process with the whole batch ends (to the
 *     float summation order), and alike to the bit
 *
 * The data: 4 PNG images of 64x64 (bright squares on noise, the masks the squares) written
 * into tmp_dir; a U-Net of base 4 and depth 2 on tiles of 32, batches of 2: 6 steps per epoch
 * once one image is held back.
 */
#include "harness.h"

#include "model.h"

#include <pthread.h>

enum { N_IMAGES = 4, SIDE = 64, STEPS = 20, MAX_ROWS = 64 };

static char data_dir[300];

/* n_images of side x side: bright squares on a dark noisy background; the mask is the squares. */
static bool write_squares(const char *dir, int n_images, int side) {
    static const char *sub[] = {"", "/images", "/masks"};
    char p[512];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", dir, sub[i]);
        mkdir(p, 0755);
    }
    struct unet__rng r;
    unet__rng_seed(&r, 7);
    bool ok = true;
    for (int k = 0; k < n_images && ok; k++) {
        unet_image pair[2] = {{0}, {0}};    /* the image and its mask */
        for (int i = 0; i < 2; i++)
            ok = ok && unet_image_alloc(NULL, &pair[i], side, side, 1, UNET_DTYPE_U8) ==
                           UNET_STATUS_OK;
        uint8_t *x = pair[0].data, *m = pair[1].data;
        for (int i = 0; ok && i < side * side; i++) x[i] = (uint8_t)(30 + unet__rng_below(&r, 50));
        for (int q = 0; ok && q < 6; q++) {
            int y0 = (int)unet__rng_below(&r, (uint64_t)side - 12);
            int x0 = (int)unet__rng_below(&r, (uint64_t)side - 12), len = 4 + q;
            for (int y = y0; y < y0 + len; y++)
                for (int xx = x0; xx < x0 + len; xx++) {
                    x[y * side + xx] = (uint8_t)(170 + unet__rng_below(&r, 70));
                    m[y * side + xx] = 1;
                }
        }
        for (int i = 0; i < 2; i++) {
            snprintf(p, sizeof p, "%s%s/img%d.png", dir, sub[1 + i], k);
            ok = ok && unet_image_save(NULL, p, &pair[i]) == UNET_STATUS_OK;
            unet_image_free(&pair[i]);
        }
    }
    return ok;
}

/* The images of data_dir as `unet train` loads them (sorted names, normalised, targets from the
 * masks), with 25% held back as it holds them back (seed 3). */
static void load_sets(unet_ctx *ctx, unet_dataset **train, unet_dataset **val) {
    int file[N_IMAGES], kind = 0;
    unet_target_opts to = unet_target_defaults();
    CHECK_STATUS(unet_dataset_create(ctx, 1, train), UNET_STATUS_OK);
    for (int k = 0; k < N_IMAGES && *train; k++) {
        char p[512], q[512], name[32];
        snprintf(p, sizeof p, "%s/images/img%d.png", data_dir, k);
        snprintf(q, sizeof q, "%s/masks/img%d.png", data_dir, k);
        snprintf(name, sizeof name, "img%d.png", k);
        CHECK_STATUS(unet_dataset_add_file(ctx, *train, p, q, 0, UNET_NORM_AUTO, &to, name),
                     UNET_STATUS_OK);
        file[k] = k;
    }
    CHECK_STATUS(unet_dataset_holdout(ctx, *train, file, 0.25, UNET_HOLDOUT_MIN_ROWS, 3, &kind,
                                      val),
                 UNET_STATUS_OK);
    CHECK_EQ(kind, 1);
    CHECK_EQ(unet_dataset_count(*train), 3);
    CHECK_EQ(unet_dataset_count(*val), 1);
}

static unet_model *new_model(unet_ctx *ctx, int batchnorm) {
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 4;
    c.depth = 2;
    c.batchnorm = batchnorm;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 3, &m), UNET_STATUS_OK);
    return m;
}

/* A context, the data sets and a fresh model: what most tests start from. */
struct fixture {
    unet_ctx     *ctx;
    unet_dataset *train, *val;
    unet_model   *m;
};

static void fixture_init(struct fixture *f, int threads) {
    f->ctx = unet_ctx_create();
    if (threads) unet_ctx_set_threads(f->ctx, threads);
    f->train = f->val = NULL;
    load_sets(f->ctx, &f->train, &f->val);
    f->m = new_model(f->ctx, 1);
}

static void fixture_free(struct fixture *f) {
    unet_model_free(f->m);
    unet_dataset_free(f->train), unet_dataset_free(f->val);
    unet_ctx_free(f->ctx);
}

/* The options both runs use: unet train --tile 32 --batch 2 --steps 20 --seed 3 --ema 0.9
 * --clip 1, files in dir (NULL: none). */
static unet_train_opts run_opts(const char *dir, char paths[3][512]) {
    unet_train_opts o = unet_train_defaults();
    o.tile = 32;
    o.batch = 2;
    o.steps = STEPS;
    o.seed = 3;
    o.ema = 0.9;
    o.step.clip_norm = 1;
    if (dir) {
        snprintf(paths[0], 512, "%s/m.safetensors", dir);
        snprintf(paths[1], 512, "%s/m.last.safetensors", dir);
        snprintf(paths[2], 512, "%s/m.resume.safetensors", dir);
        mkdir(dir, 0755);
        o.out = paths[0], o.last = paths[1], o.resume_out = paths[2];
    }
    return o;
}

/* What a run's callback saw: the log's rows without the seconds column, and the events. */
struct seen {
    char  rows[MAX_ROWS][160];
    int   n_rows, starts, steps, epochs, validated;
    long  last_step, epoch_steps[8];
    bool  in_order;
    long  stop_at;      /* > 0: ask to stop after this step */
};

static void without_seconds(const char *row, char *out, size_t size) {
    int field = 0;
    size_t k = 0;
    for (const char *p = row; *p && *p != '\n' && k + 1 < size; p++) {
        if (*p == ',') field++;
        if (field != 9 || *p == ',') out[k++] = *p;
    }
    out[k] = 0;
}

static int on_event(const unet_train_event *e, void *user) {
    struct seen *s = user;
    char row[512];
    if (unet_train_log_row(e, row, sizeof row) > 0 && s->n_rows < MAX_ROWS)
        without_seconds(row, s->rows[s->n_rows++], sizeof s->rows[0]);
    if (e->kind == UNET_TRAIN_START) s->starts++, s->last_step = e->step;
    if (e->kind == UNET_TRAIN_STEP) {
        s->in_order &= e->step == s->last_step + 1;
        s->last_step = e->step;
        s->steps++;
    }
    if (e->kind == UNET_TRAIN_EPOCH && s->epochs < 8) {
        s->epoch_steps[s->epochs++] = e->step;
        s->validated += e->validated;
    }
    return s->stop_at > 0 && e->kind == UNET_TRAIN_STEP && e->step == s->stop_at;
}

/* The rows of a log file without the seconds column (the header skipped). */
static int read_log(const char *path, char rows[][160], int max) {
    FILE *f = fopen(path, "r");
    char line[512];
    int n = -1;
    while (f && fgets(line, sizeof line, f) && n < max) {
        if (n >= 0) without_seconds(line, rows[n], sizeof rows[0]);
        n++;
    }
    if (f) fclose(f);
    return n < 0 ? 0 : n;
}

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = read_all(a, &na), *y = read_all(b, &nb);
    bool same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x), free(y);
    if (!same) printf("  %s and %s differ\n", a, b);
    return same;
}

static int same_rows(char a[][160], int na, char b[][160], int nb) {
    int diff = na != nb;
    for (int i = 0; i < na && i < nb; i++)
        if (strcmp(a[i], b[i]) != 0 && diff++ < 3) printf("  row %d: '%s' vs '%s'\n", i, a[i], b[i]);
    return diff;
}

/* The uninterrupted API run (made once; the tests below compare with it). */
static struct seen ref;
static char ref_paths[3][512];
static unet_status ref_status = UNET_STATUS_IO;

static void reference_run(void) {
    if (ref_status == UNET_STATUS_OK) return;
    struct fixture f;
    fixture_init(&f, 1);
    char dir[300];
    unet_train_opts o = run_opts(tmp_path(dir, sizeof dir, "api"), ref_paths);
    unet_trainer *t = NULL;
    memset(&ref, 0, sizeof ref);
    ref.in_order = true;
    ref_status = unet_trainer_create(f.ctx, f.m, f.train, f.val, &o, &t);
    if (ref_status == UNET_STATUS_OK) ref_status = unet_trainer_run(f.ctx, t, on_event, &ref);
    if (ref_status != UNET_STATUS_OK) printf("  %s\n", unet_ctx_errmsg(f.ctx));
    unet_trainer_free(t);
    fixture_free(&f);
}

/* ---- tests ---- */

TEST(api_run_equals_cli) {
    reference_run();
    CHECK_STATUS(ref_status, UNET_STATUS_OK);
    const char *bin = getenv("UNET_BIN");
    if (!bin || !*bin) {
        printf("       UNET_BIN is not set (make test sets it); the CLI side is skipped\n");
        return;
    }
    char out[512], cmd[2048];
    tmp_path(out, sizeof out, "cli/m.safetensors");
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/cli && %s train --images %s/images --masks %s/masks --out %s --base 4 "
             "--depth 2 --tile 32 --batch 2 --steps %d --val-split 0.25 --seed 3 --threads 1 "
             "--ema 0.9 --clip 1 --quiet 2>%s/cli/stderr.txt",
             tmp_dir, bin, data_dir, data_dir, out, STEPS, tmp_dir);
    CHECK_EQ(system(cmd), 0);
    static char rows[MAX_ROWS][160];
    char p[512];
    int n = read_log(tmp_path(p, sizeof p, "cli/m.log.csv"), rows, MAX_ROWS);
    CHECK_EQ(n, STEPS + 4);
    CHECK_EQ(same_rows(ref.rows, ref.n_rows, rows, n), 0);
    const char *names[] = {"m.safetensors", "m.last.safetensors", "m.resume.safetensors"};
    for (int i = 0; i < 3; i++) {
        char c[600];
        snprintf(c, sizeof c, "%s/cli/%s", tmp_dir, names[i]);
        CHECK(same_file(ref_paths[i], c));
    }
    printf("       %d rows and 3 model files equal unet train's; last row %s\n", n,
           n ? rows[n - 1] : "-");
}

TEST(events_every_step) {
    reference_run();
    CHECK_EQ(ref.starts, 1);
    CHECK_EQ(ref.steps, STEPS);
    CHECK(ref.in_order);
    CHECK_EQ(ref.last_step, STEPS);
    /* 3 images of 64x64 in output tiles of 32x32, 2 a batch: 6 steps an epoch. */
    const long want[] = {6, 12, 18, 20};
    CHECK_EQ(ref.epochs, 4);
    for (int i = 0; i < 4 && i < ref.epochs; i++) CHECK_EQ(ref.epoch_steps[i], want[i]);
    CHECK_EQ(ref.validated, 4);
    CHECK_EQ(ref.n_rows, STEPS + 4);
}

/* Stopped by the callback after step 9 (in the middle of the second epoch), then resumed from
 * the resumable checkpoint through the API: the rows and the files of the uninterrupted run. */
TEST(stop_and_resume_equals_uninterrupted) {
    reference_run();
    struct fixture f;
    fixture_init(&f, 1);
    char dir[300], paths[3][512];
    unet_train_opts o = run_opts(tmp_path(dir, sizeof dir, "stopped"), paths);
    static struct seen s;
    memset(&s, 0, sizeof s);
    s.in_order = true;
    s.stop_at = 9;
    unet_trainer *t = NULL;
    CHECK_STATUS(unet_trainer_create(f.ctx, f.m, f.train, f.val, &o, &t), UNET_STATUS_OK);
    CHECK_STATUS(unet_trainer_run(f.ctx, t, on_event, &s), UNET_STATUS_INTERRUPTED);
    const unet_train_info *in = unet_trainer_info(t);
    CHECK_EQ(in->step, 9);
    CHECK_EQ(in->saved_step, 9);
    CHECK_STATUS(unet_trainer_run(f.ctx, t, on_event, &s), UNET_STATUS_ARG); /* once only */
    unet_trainer_free(t);
    unet_model_free(f.m);
    f.m = NULL;

    /* Resume with other seed, batch and tile given: the checkpoint's win. */
    o = run_opts(dir, paths);
    o.seed = 99, o.batch = 3, o.tile = 0;
    CHECK_STATUS(unet_model_load_training(f.ctx, paths[2], &f.m, NULL, NULL), UNET_STATUS_OK);
    CHECK_STATUS(unet_train_resume(f.ctx, f.m, paths[2], &o), UNET_STATUS_OK);
    CHECK_EQ(o.seed, 3);
    CHECK_EQ(o.batch, 2);
    CHECK_EQ(o.tile, 32);
    CHECK_EQ(o.resume, 1);
    s.stop_at = 0;
    CHECK_STATUS(unet_trainer_create(f.ctx, f.m, f.train, f.val, &o, &t), UNET_STATUS_OK);
    if (t) {
        CHECK_EQ(unet_trainer_info(t)->first_step, 9);
        CHECK_STATUS(unet_trainer_run(f.ctx, t, on_event, &s), UNET_STATUS_OK);
    }
    unet_trainer_free(t);
    CHECK_EQ(s.starts, 2);
    CHECK(s.in_order);
    CHECK_EQ(same_rows(ref.rows, ref.n_rows, s.rows, s.n_rows), 0);
    for (int i = 0; i < 3; i++) CHECK(same_file(ref_paths[i], paths[i]));

    /* A plain model is not a run to continue. */
    unet_model *plain = NULL;
    CHECK_STATUS(unet_model_load(f.ctx, paths[0], &plain), UNET_STATUS_OK);
    CHECK_STATUS(unet_train_resume(f.ctx, plain, "m.safetensors", &o), UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(f.ctx), "m.safetensors: not a resumable checkpoint");
    unet_model_free(plain);
    fixture_free(&f);
}

static int stop_at_start(const unet_train_event *e, void *user) {
    (void)user;
    return e->kind == UNET_TRAIN_START;
}

TEST(stop_before_the_first_step) {
    struct fixture f;
    fixture_init(&f, 0);
    char dir[300], paths[3][512];
    unet_train_opts o = run_opts(tmp_path(dir, sizeof dir, "early"), paths);
    unet_trainer *t = NULL;
    CHECK_STATUS(unet_trainer_create(f.ctx, f.m, f.train, f.val, &o, &t), UNET_STATUS_OK);
    CHECK_STATUS(unet_trainer_run(f.ctx, t, stop_at_start, NULL), UNET_STATUS_INTERRUPTED);
    CHECK_EQ(unet_trainer_info(t)->step, 0);
    CHECK_EQ(unet_trainer_info(t)->saved_step, -1);
    for (int i = 0; i < 3; i++) CHECK(access(paths[i], F_OK) != 0);
    unet_trainer_free(t);
    fixture_free(&f);
}

/* Each bad option alone: UNET_STATUS_ARG from unet_train_check and from create, the message
 * naming the option. */
TEST(bad_options_name_the_option) {
    struct fixture f;
    fixture_init(&f, 0);
    unet_ctx *ctx = f.ctx;
    static const char *names[] = {"batch", "tile", "epochs", "steps", "workers", "minutes",
                                  "snapshot_every", "save_every", "save_minutes", "ema", "shard",
                                  "clip", "lr", "loss reduction sum", "guard", "schedule",
                                  "momentum", "loss", "augment"};
    const int n = (int)(sizeof names / sizeof names[0]);
    for (int i = 0; i < n; i++) {
        unet_train_opts o = unet_train_defaults();
        switch (i) {
        case 0: o.batch = 0; break;
        case 1: o.tile = -5; break;
        case 2: o.epochs = 0; break;
        case 3: o.steps = -1; break;
        case 4: o.workers = 65; break;
        case 5: o.minutes = -1; break;
        case 6: o.snapshot_every = 0; break;
        case 7: o.save_every = -2; break;
        case 8: o.save_minutes = NAN; break;
        case 9: o.ema = 1.5; break;
        case 10: o.shard_first = 3, o.shard_count = 2; break;
        case 11: o.step.clip_norm = -1; break;
        case 12: o.optim.lr = -1; break;
        case 13: o.step.reduction = UNET_REDUCTION_SUM; break;  /* with ce+dice */
        case 14: o.guard.max_rollbacks = -1; break;
        case 15: o.schedule.kind = UNET_SCHEDULE_STEP, o.schedule.n_milestones = 0; break;
        case 16: o.optim.momentum = 1; break;
        case 17: o.step.loss = (unet_loss_kind)9; break;
        case 18: o.augment.rotate = -3; break;
        }
        unet_trainer *t = NULL;
        unet_status s = unet_train_check(ctx, &o);
        if (s != UNET_STATUS_ARG || !strstr(unet_ctx_errmsg(ctx), names[i]))
            printf("  case %d (%s): %s: %s\n", i, names[i], unet_status_str(s), unet_ctx_errmsg(ctx));
        CHECK_STATUS(s, UNET_STATUS_ARG);
        CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), names[i]);
        CHECK_STATUS(unet_trainer_create(ctx, f.m, f.train, f.val, &o, &t), UNET_STATUS_ARG);
        CHECK(t == NULL);
    }
    /* The data against the model and the loss. */
    unet_train_opts o = unet_train_defaults();
    o.step.loss = UNET_LOSS_WCE;
    unet_trainer *t = NULL;
    CHECK_STATUS(unet_trainer_create(ctx, f.m, f.train, f.val, &o, &t), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "loss wce");
    o = unet_train_defaults();
    o.schedule.warmup = 1000;
    o.steps = 10;
    CHECK_STATUS(unet_trainer_create(ctx, f.m, f.train, f.val, &o, &t), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "warm-up");
    unet_loss_kind lk;
    unet_optim opt;
    unet_augment aug;
    CHECK_STATUS(unet_loss_parse(ctx, "dice", &lk), UNET_STATUS_OK);
    CHECK_EQ((int)lk, (int)UNET_LOSS_DICE);
    CHECK_STATUS(unet_loss_parse(ctx, "bce", &lk), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "loss: 'bce'");
    CHECK_STATUS(unet_optim_parse(ctx, "sgd", &opt), UNET_STATUS_OK);
    CHECK_CLOSE(opt.momentum, 0.9, 0, 0);
    CHECK_STATUS(unet_optim_parse(ctx, "lion", &opt), UNET_STATUS_ARG);
    CHECK_STATUS(unet_augment_parse(ctx, "paper", &aug), UNET_STATUS_OK);
    CHECK_EQ(aug.elastic, 1);
    CHECK_STATUS(unet_augment_parse(ctx, "mixup", &aug), UNET_STATUS_ARG);
    fixture_free(&f);
}

/* ---- the data as unet train makes it ---- */

/* Two touching cells in an instance mask: separated by a background strip (the border class
 * with 3 classes), weighted there by the paper's map; a mismatched mask or image is refused
 * naming it. */
TEST(masks_become_targets) {
    enum { H = 12, W = 16 };
    unet_image mask = {0}, image = {0}, small = {0};
    CHECK_STATUS(unet_image_alloc(NULL, &mask, W, H, 1, UNET_DTYPE_U8), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_alloc(NULL, &image, W, H, 2, UNET_DTYPE_U8), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_alloc(NULL, &small, W, H - 1, 1, UNET_DTYPE_U8), UNET_STATUS_OK);
    uint8_t *mk = mask.data;
    for (int y = 2; y < 9; y++)
        for (int x = 2; x < 14; x++) mk[y * W + x] = x < 8 ? 1 : 2;   /* cells meet at x 7|8 */
    int32_t target[H * W];
    float weight[H * W];
    unet_target_opts to = unet_target_defaults();
    CHECK_STATUS(unet_mask_to_target(NULL, &mask, &to, "m", target, NULL), UNET_STATUS_OK);
    CHECK_EQ(target[5 * W + 7], 1);                 /* plain: both cells foreground */
    to.separate_cells = 1, to.weights = 1, to.classes = 3;
    CHECK_STATUS(unet_mask_to_target(NULL, &mask, &to, "m", target, weight), UNET_STATUS_OK);
    CHECK_EQ(target[5 * W + 7], 2);                 /* the border class between them */
    CHECK_EQ(target[5 * W + 4], 1);
    CHECK_EQ(target[0], 0);
    CHECK(weight[5 * W + 7] > 5 * weight[0]);       /* w0 = 10 on the strip */
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(NULL, 1, &ds), UNET_STATUS_OK);
    to = unet_target_defaults();
    unet_ctx *ctx = unet_ctx_create();
    CHECK_STATUS(unet_dataset_add_image(ctx, ds, &image, &mask, UNET_NORM_AUTO, &to, "two.png"),
                 UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "two.png has 2 channels, the other images 1");
    image.c = 1;
    CHECK_STATUS(unet_dataset_add_image(ctx, ds, &image, &small, UNET_NORM_AUTO, &to, "a.png"),
                 UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "a.png is 16x12 but its mask the mask of a.png is 16x11");
    CHECK_STATUS(unet_dataset_add_image(ctx, ds, &image, &mask, UNET_NORM_AUTO, &to, NULL),
                 UNET_STATUS_OK);
    const char *name = NULL;
    const int32_t *t = NULL;
    unet_dataset_get(ds, 0, NULL, &t, NULL, NULL, NULL, &name);
    CHECK(name && strcmp(name, "image 0") == 0);
    CHECK(t && t[5 * W + 9] == 1);
    unet_dataset_free(ds);
    unet_image_free(&mask), unet_image_free(&image), unet_image_free(&small);
    unet_ctx_free(ctx);
}

/* The default recipe's choice from the masks (docs/training.md, "The default recipe"): with 2
 * classes, masks that label each cell with its own id separate cells (one such mask in a set is
 * enough); a binary 0/255 mask does not, nor does a class mask of 0, 1, 2 with 3 classes (with
 * 2 classes it reads as two cells); unreadable, non-integer and several-channel masks count as
 * not labelling cells, left to the loading that follows. */
TEST(default_recipe_plans_from_masks) {
    enum { H = 10, W = 12 };
    unet_image m[4];
    CHECK_STATUS(unet_image_alloc(NULL, &m[0], W, H, 1, UNET_DTYPE_U8), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_alloc(NULL, &m[1], W, H, 1, UNET_DTYPE_U16), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_alloc(NULL, &m[2], W, H, 1, UNET_DTYPE_U8), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_alloc(NULL, &m[3], W, H, 1, UNET_DTYPE_F32), UNET_STATUS_OK);
    uint8_t *binary = m[0].data, *cls = m[2].data;
    uint16_t *ids = m[1].data;
    float *half = m[3].data;
    for (int i = 0; i < H * W; i++) {
        const int x = i % W, cell = i / W > 2 && i / W < 8 && x > 1 && x < 10;
        binary[i] = cell ? 255 : 0;
        ids[i] = cell ? (x < 6 ? 7 : 300) : 0;            /* two touching cells */
        cls[i] = cell ? (x < 6 ? 1 : 2) : 0;              /* classes 0, 1, 2 */
        half[i] = cell ? (x < 6 ? 1.0f : 2.5f) : 0.0f;    /* not integer labels */
    }
    unet_ctx *ctx = unet_ctx_create();
    int sep = -1;
    CHECK_STATUS(unet_plan_from_masks(ctx, &m[1], 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 1);
    CHECK_STATUS(unet_plan_from_masks(ctx, &m[0], 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);
    CHECK_STATUS(unet_plan_from_masks(ctx, &m[0], 2, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 1);                                     /* binary, then ids: one is enough */
    CHECK_STATUS(unet_plan_from_masks(ctx, &m[2], 1, 3, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);                                     /* class ids with 3 classes */
    CHECK_STATUS(unet_plan_from_masks(ctx, m, 2, 3, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);                                     /* only 2 classes plan */
    CHECK_STATUS(unet_plan_from_masks(ctx, &m[2], 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 1);                                     /* 1 and 2 with 2 classes: two cells */
    CHECK_STATUS(unet_plan_from_masks(ctx, &m[3], 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);                                     /* 2.5: the loading refuses it */
    m[1].c = 2;
    CHECK_STATUS(unet_plan_from_masks(ctx, &m[1], 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);
    m[1].c = 1;
    CHECK_STATUS(unet_plan_from_masks(ctx, m, 0, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);
    /* Cells that stand apart: five cells, two of them touching (2 in 5) separate; one more
     * cell apart (2 in 6), or the two moved one pixel apart, does not; diagonal neighbours
     * touch; the count is over all the masks. */
    unet_image apart;
    CHECK_STATUS(unet_image_alloc(NULL, &apart, W, H, 1, UNET_DTYPE_U16), UNET_STATUS_OK);
    uint16_t *a = apart.data;
    memset(a, 0, sizeof(uint16_t) * H * W);
    a[0] = a[1] = 11, a[2] = 12;                          /* 11 and 12 touch */
    a[4] = 13, a[6] = 14, a[8 * W] = 15;                  /* alone */
    CHECK_STATUS(unet_plan_from_masks(ctx, &apart, 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 1);
    a[9 * W + 11] = 16;
    CHECK_STATUS(unet_plan_from_masks(ctx, &apart, 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);
    a[2] = 0, a[W + 2] = 12;                              /* diagonal: still touching */
    CHECK_STATUS(unet_plan_from_masks(ctx, &apart, 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);
    a[9 * W + 11] = 0;
    CHECK_STATUS(unet_plan_from_masks(ctx, &apart, 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 1);
    a[W + 2] = 0, a[2 * W + 2] = 12;                      /* one pixel apart */
    CHECK_STATUS(unet_plan_from_masks(ctx, &apart, 1, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);
    unet_image pair[2] = {apart, m[1]};                   /* 0 + 2 touching of 5 + 2 cells */
    CHECK_STATUS(unet_plan_from_masks(ctx, pair, 2, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);
    pair[0].w = 5;                                        /* row 0 only: 11, 11, 0, 0, 13 */
    pair[0].h = 1;
    CHECK_STATUS(unet_plan_from_masks(ctx, pair, 2, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 1);                                     /* 2 touching of 2 + 2 cells */
    unet_image_free(&apart);
    CHECK_STATUS(unet_plan_from_masks(ctx, m, 1, 2, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_plan_from_masks(ctx, NULL, 1, 2, &sep), UNET_STATUS_ARG);
    /* Files: page 0 of each, in order; a missing file counts as no cells. */
    char bin_png[512], ids_tif[512], missing[512];
    tmp_path(bin_png, sizeof bin_png, "plan_binary.png");
    tmp_path(ids_tif, sizeof ids_tif, "plan_ids.tif");
    tmp_path(missing, sizeof missing, "plan_missing.png");
    CHECK_STATUS(unet_image_save(NULL, bin_png, &m[0]), UNET_STATUS_OK);
    CHECK_STATUS(unet_image_save(NULL, ids_tif, &m[1]), UNET_STATUS_OK);
    const char *files[] = {missing, bin_png, ids_tif};
    CHECK_STATUS(unet_plan_from_mask_files(ctx, files, 2, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);
    CHECK_STATUS(unet_plan_from_mask_files(ctx, files, 3, 2, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 1);
    CHECK_STATUS(unet_plan_from_mask_files(ctx, files + 2, 1, 3, &sep), UNET_STATUS_OK);
    CHECK_EQ(sep, 0);
    CHECK_STATUS(unet_plan_from_mask_files(ctx, NULL, 1, 2, &sep), UNET_STATUS_ARG);
    for (int i = 0; i < 4; i++) unet_image_free(&m[i]);
    unet_ctx_free(ctx);
}

/* The default recipe's sizes and length (unet_plan_run): a time budget plans base 16, batch 2
 * and no end but the budget; without one base 64, batch 4, 10 epochs; given values are kept;
 * the tile is the images' largest side rounded up to 2^depth, at most 256 (128 and a batch of
 * 8, if the batch was planned, under a budget), and only with a depth (a same-padded U-Net); a
 * schedule cannot decay over a run with no length. */
TEST(default_recipe_plans_sizes) {
    unet_plan p = {.minutes = 5};
    CHECK_STATUS(unet_plan_run(NULL, NULL, &p), UNET_STATUS_OK);
    CHECK(p.base == 16 && p.batch == 2 && p.steps == UNET_MAX_STEPS && p.epochs == 1);
    CHECK_EQ(p.tile, 0);
    CHECK_EQ(p.planned, UNET_PLANNED_BASE | UNET_PLANNED_BATCH | UNET_PLANNED_STEPS);
    p = (unet_plan){0};
    CHECK_STATUS(unet_plan_run(NULL, NULL, &p), UNET_STATUS_OK);
    CHECK(p.base == 64 && p.batch == 4 && p.steps == 0 && p.epochs == 10);
    p = (unet_plan){.base = 8, .batch = 3, .steps = 70, .minutes = 5};
    CHECK_STATUS(unet_plan_run(NULL, NULL, &p), UNET_STATUS_OK);
    CHECK(p.base == 8 && p.batch == 3 && p.steps == 70 && p.epochs == 10 && p.planned == 0);
    p = (unet_plan){.epochs = 3, .minutes = 5};
    CHECK_STATUS(unet_plan_run(NULL, NULL, &p), UNET_STATUS_OK);
    CHECK(p.steps == 0 && p.epochs == 3);
    p = (unet_plan){.batch = -1};                           /* left for the trainer to refuse */
    CHECK_STATUS(unet_plan_run(NULL, NULL, &p), UNET_STATUS_OK);
    CHECK_EQ(p.batch, -1);
    CHECK_STATUS(unet_plan_run(NULL, NULL, NULL), UNET_STATUS_ARG);

    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(NULL, 1, &ds), UNET_STATUS_OK);
    const int sizes[][2] = {{100, 37}, {61, 120}};          /* h, w */
    for (int k = 0; k < 2; k++) {
        const int h = sizes[k][0], w = sizes[k][1];
        float *x = calloc((size_t)h * w, sizeof *x);
        int32_t *t = calloc((size_t)h * w, sizeof *t);
        CHECK_STATUS(unet_dataset_add(NULL, ds, x, t, NULL, h, w, NULL), UNET_STATUS_OK);
        free(x), free(t);
    }
    p = (unet_plan){.depth = 4, .minutes = 1};
    CHECK_STATUS(unet_plan_run(NULL, NULL, &p), UNET_STATUS_OK);   /* no images: no tile */
    CHECK_EQ(p.tile, 0);
    CHECK_EQ(p.batch, 2);
    CHECK_STATUS(unet_plan_run(NULL, ds, &p), UNET_STATUS_OK);     /* the second call */
    CHECK_EQ(p.tile, 128);                                  /* 120 rounded up to 16 */
    CHECK_EQ(p.batch, 8);                                   /* planned with the tile */
    CHECK_EQ(p.planned, UNET_PLANNED_BASE | UNET_PLANNED_BATCH | UNET_PLANNED_STEPS |
                        UNET_PLANNED_TILE);
    p = (unet_plan){.depth = 3};
    CHECK_STATUS(unet_plan_run(NULL, ds, &p), UNET_STATUS_OK);
    CHECK_EQ(p.tile, 120);
    p = (unet_plan){.depth = 0};                            /* not a same-padded U-Net */
    CHECK_STATUS(unet_plan_run(NULL, ds, &p), UNET_STATUS_OK);
    CHECK_EQ(p.tile, 0);
    p = (unet_plan){.depth = 4, .tile = 64};
    CHECK_STATUS(unet_plan_run(NULL, ds, &p), UNET_STATUS_OK);
    CHECK_EQ(p.tile, 64);
    float *big = calloc(300 * 20, sizeof *big);
    int32_t *bt = calloc(300 * 20, sizeof *bt);
    CHECK_STATUS(unet_dataset_add(NULL, ds, big, bt, NULL, 300, 20, NULL), UNET_STATUS_OK);
    free(big), free(bt);
    p = (unet_plan){.depth = 4};
    CHECK_STATUS(unet_plan_run(NULL, ds, &p), UNET_STATUS_OK);
    CHECK_EQ(p.tile, 256);                                  /* at most the default */
    CHECK_EQ(p.batch, 4);
    p = (unet_plan){.depth = 4, .minutes = 5};
    CHECK_STATUS(unet_plan_run(NULL, ds, &p), UNET_STATUS_OK);
    CHECK(p.tile == 128 && p.batch == 8);                   /* a budget's: at most 128 */
    p = (unet_plan){.depth = 4, .batch = 3, .minutes = 5};
    CHECK_STATUS(unet_plan_run(NULL, ds, &p), UNET_STATUS_OK);
    CHECK(p.tile == 128 && p.batch == 3);                   /* a given batch is kept */
    p = (unet_plan){.depth = 4, .tile = 256, .minutes = 5};
    CHECK_STATUS(unet_plan_run(NULL, ds, &p), UNET_STATUS_OK);
    CHECK(p.tile == 256 && p.batch == 2);                   /* a given tile: the batch of 2 */
    unet_dataset_free(ds);

    unet_ctx *ctx = unet_ctx_create();
    unet_train_opts o = unet_train_defaults();
    o.steps = UNET_MAX_STEPS, o.minutes = 1;
    CHECK_STATUS(unet_train_check(ctx, &o), UNET_STATUS_OK);
    o.schedule.kind = UNET_SCHEDULE_COSINE;
    CHECK_STATUS(unet_train_check(ctx, &o), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "schedule cosine decays over the run's length");
    unet_ctx_free(ctx);
}

/* The held-back set moves images: whole ones (in order, the rest closing up), or the bottom
 * band of each (the kept rows' channel planes closing up in place). */
TEST(holdout_moves_images_and_bands) {
    enum { C = 2, H = 80, W = 6 };
    float x[C * H * W];
    int32_t t[H * W];
    unet_dataset *ds = NULL, *val = NULL;
    CHECK_STATUS(unet_dataset_create(NULL, C, &ds), UNET_STATUS_OK);
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < C * H * W; i++) x[i] = (float)(1000 * k + i);
        for (int i = 0; i < H * W; i++) t[i] = i % 2;
        CHECK_STATUS(unet_dataset_add(NULL, ds, x, t, NULL, H, W, k ? "b" : "a"), UNET_STATUS_OK);
    }
    int kind = -1;
    CHECK_STATUS(unet_dataset_holdout(NULL, ds, NULL, 0.2, UNET_HOLDOUT_MIN_ROWS, 1, &kind, &val),
                 UNET_STATUS_OK);
    CHECK_EQ(kind, 2);
    CHECK_EQ(unet_dataset_count(ds), 2);
    CHECK_EQ(unet_dataset_count(val), 2);
    for (int k = 0; k < 2 && unet_dataset_count(val) == 2; k++) {
        const float *img, *band;
        const int32_t *bt;
        const char *name;
        int h, w, bh;
        unet_dataset_get(ds, k, &img, NULL, NULL, &h, &w, NULL);
        unet_dataset_get(val, k, &band, &bt, NULL, &bh, NULL, &name);
        CHECK_EQ(h, 64);
        CHECK_EQ(bh, 16);
        CHECK_STR_CONTAINS(name, k ? "b[rows 64-79]" : "a[rows 64-79]");
        /* Channel 1's first kept pixel, and its band's first pixel. */
        CHECK_EQ(img[64 * W], (float)(1000 * k + H * W));
        CHECK_EQ(band[16 * W], (float)(1000 * k + H * W + 64 * W));
        CHECK_EQ(band[0], (float)(1000 * k + 64 * W));
        CHECK_EQ(bt[1], (64 * W + 1) % 2);
    }
    unet_dataset_free(val);
    /* Five images, two from one file: a seeded shuffle holds back ceil(0.2 x 5) = 1. */
    for (int k = 0; k < 3; k++)
        CHECK_STATUS(unet_dataset_add(NULL, ds, x, t, NULL, H, W, "c"), UNET_STATUS_OK);
    const int file[5] = {0, 1, 2, 2, 3};
    CHECK_STATUS(unet_dataset_holdout(NULL, ds, file, 0.2, UNET_HOLDOUT_MIN_ROWS, 1, &kind, &val),
                 UNET_STATUS_OK);
    CHECK_EQ(kind, 1);
    CHECK_EQ(unet_dataset_count(ds), 4);
    CHECK_EQ(unet_dataset_count(val), 1);
    unet_dataset_free(val);
    CHECK_STATUS(unet_dataset_holdout(NULL, ds, NULL, 0, UNET_HOLDOUT_MIN_ROWS, 1, &kind, &val),
                 UNET_STATUS_ARG);
    CHECK(val == NULL);
    CHECK_EQ(unet_dataset_count(ds), 4);
    unet_dataset_free(ds);
}

/* ---- data-parallel seams ---- */

/* Shards of a batch are its slices, with and without worker threads and after a seek. */
TEST(sampler_shards_are_slices) {
    struct fixture f;
    fixture_init(&f, 0);
    unet_ctx *ctx = f.ctx;
    enum { B = 4, T = 24, PER = T * T };
    const unet_augment aug = unet_augment_paper();
    float full[B * PER], part[B * PER];
    int32_t tf[B * PER], tp[B * PER];
    const int shards[][2] = {{0, 1}, {1, 2}, {3, 1}, {0, 4}};
    for (int workers = 0; workers <= 2; workers += 2) {
        unet_sampler *a = NULL, *b = NULL;
        CHECK_STATUS(unet_sampler_create(ctx, f.train, B, T, T, T, T, &aug, 11, workers, &a),
                     UNET_STATUS_OK);
        CHECK_STATUS(unet_sampler_create(ctx, f.train, B, T, T, T, T, &aug, 11, workers, &b),
                     UNET_STATUS_OK);
        if (!a || !b) break;
        CHECK_STATUS(unet_sampler_shard(ctx, b, 2, 3), UNET_STATUS_ARG);
        CHECK_STATUS(unet_sampler_shard(ctx, b, -1, 1), UNET_STATUS_ARG);
        for (int k = 0; k < 6; k++) {
            const int *sh = shards[k % 4];
            if (k == 4) {
                CHECK_STATUS(unet_sampler_seek(ctx, a, 9), UNET_STATUS_OK);
                CHECK_STATUS(unet_sampler_seek(ctx, b, 9), UNET_STATUS_OK);
            }
            CHECK_STATUS(unet_sampler_shard(ctx, b, sh[0], sh[1]), UNET_STATUS_OK);
            CHECK_STATUS(unet_sampler_next(ctx, a, full, tf, NULL), UNET_STATUS_OK);
            CHECK_STATUS(unet_sampler_next(ctx, b, part, tp, NULL), UNET_STATUS_OK);
            CHECK(memcmp(part, full + sh[0] * PER, sizeof(float) * (size_t)sh[1] * PER) == 0);
            CHECK(memcmp(tp, tf + sh[0] * PER, sizeof(int32_t) * (size_t)sh[1] * PER) == 0);
        }
        CHECK_EQ(unet_sampler_position(b), 11);
        unet_sampler_free(a);
        unet_sampler_free(b);
    }
    fixture_free(&f);
}

/* An allreduce between threads: each rank weights its gradient and statistics by its labeled
 * pixels, the sums are formed in rank order (the same bits on every rank). */
enum { RANKS = 2 };

struct allreduce {
    pthread_barrier_t bar;
    float            *slot[RANKS];
    size_t            n;
    unet_step_stats   st[RANKS];
};

struct rank {
    struct allreduce   *ar;
    int                 r;
    const unet_dataset *train;
    float              *weights;    /* the final parameters (n floats) */
    unet_status         status;
};

static unet_status allreduce(unet_ctx *ctx, float *g, size_t n, unet_step_stats *st, void *user) {
    (void)ctx;
    struct rank *rk = user;
    struct allreduce *ar = rk->ar;
    double lab = 0;
    for (int c = 0; c < st->classes; c++) lab += (double)st->truth[c];
    for (size_t i = 0; i < n; i++) ar->slot[rk->r][i] = (float)(g[i] * lab);
    ar->st[rk->r] = *st;
    pthread_barrier_wait(&ar->bar);
    double total = 0, loss = 0, base = 0;
    for (int r = 0; r < RANKS; r++) {
        double l = 0;
        for (int c = 0; c < ar->st[r].classes; c++) l += (double)ar->st[r].truth[c];
        total += l, loss += ar->st[r].loss * l, base += ar->st[r].baseline * l;
    }
    for (size_t i = 0; i < n; i++) {
        float sum = 0;
        for (int r = 0; r < RANKS; r++) sum += ar->slot[r][i];
        g[i] = (float)(sum / total);
    }
    unet_step_stats mine = *st;
    *st = ar->st[0];
    for (int r = 1; r < RANKS; r++) {
        for (int c = 0; c < UNET_MAX_CLASSES; c++)
            st->pred[c] += ar->st[r].pred[c], st->truth[c] += ar->st[r].truth[c];
        st->correct += ar->st[r].correct;
    }
    st->loss = loss / total, st->baseline = base / total, st->lr = mine.lr;
    pthread_barrier_wait(&ar->bar); /* nobody writes a slot before everyone has read them */
    return UNET_STATUS_OK;
}

/* A run of 8 steps of batch 4 without batch-norm: the whole batch (shard_count 0), or this
 * rank's half with the hook. */
static unet_status dp_run(struct rank *rk, bool sharded) {
    unet_ctx *ctx = unet_ctx_create();
    unet_ctx_set_threads(ctx, 1);
    unet_model *m = new_model(ctx, 0);
    unet_train_opts o = unet_train_defaults();
    o.step.loss = UNET_LOSS_CE;
    o.batch = 4, o.tile = 32, o.steps = 8, o.seed = 5;
    if (sharded) {
        o.shard_first = rk->r * 2, o.shard_count = 2;
        o.step.grad_fn = allreduce, o.step.grad_user = rk;
    }
    unet_trainer *t = NULL;
    unet_status s = unet_trainer_create(ctx, m, rk->train, NULL, &o, &t);
    if (s == UNET_STATUS_OK) s = unet_trainer_run(ctx, t, NULL, NULL);
    if (s != UNET_STATUS_OK) printf("  rank %d: %s\n", rk->r, unet_ctx_errmsg(ctx));
    size_t n = 0;
    const float *w = unet_model_block(m, UNET_BLOCK_WEIGHTS, &n);
    rk->weights = malloc(n * sizeof(float));
    if (rk->weights && w) memcpy(rk->weights, w, n * sizeof(float));
    unet_trainer_free(t);
    unet_model_free(m);
    unet_ctx_free(ctx);
    return s;
}

static void *rank_main(void *arg) {
    struct rank *rk = arg;
    rk->status = dp_run(rk, true);
    return NULL;
}

/* The hook sees every step, a step whose loss is NaN included (with NaN gradients, so that no
 * process waits forever for one that gave up); its failure fails the step; either way the
 * parameters stay as they were. */
struct hook_log {
    int    calls, nan_grads;
    size_t n;
    unet_status ret;
};

static unet_status count_calls(unet_ctx *ctx, float *g, size_t n, unet_step_stats *st, void *user) {
    (void)st;
    struct hook_log *h = user;
    h->calls++;
    h->n = n;
    h->nan_grads += n > 0 && isnan(g[0]) && isnan(g[n - 1]);
    return h->ret == UNET_STATUS_OK ? UNET_STATUS_OK : unet__fail(ctx, h->ret, "hook says no");
}

TEST(grad_hook_sees_every_step) {
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = new_model(ctx, 1);
    enum { B = 2, T = 16 };
    float x[B * T * T];
    int32_t tg[B * T * T];
    for (int i = 0; i < B * T * T; i++) x[i] = (float)(i % 7) / 7, tg[i] = i % 3 == 0;
    struct hook_log h = {0};
    unet_step_opts so = unet_step_defaults(UNET_LOSS_CE);
    so.grad_fn = count_calls, so.grad_user = &h;
    unet_optim opt = unet_optim_default(UNET_OPTIM_ADAM);
    CHECK_STATUS(unet_train_step_ex(ctx, m, &opt, &so, x, tg, NULL, B, T, T, NULL), UNET_STATUS_OK);
    size_t n = 0;
    float *w = unet_model_block(m, UNET_BLOCK_WEIGHTS, &n);
    CHECK(unet_model_block(m, UNET_BLOCK_GRADS, NULL) != NULL);
    CHECK_EQ(h.calls, 1);
    CHECK_EQ(h.n, n);
    float *before = malloc(n * sizeof(float));
    if (before) memcpy(before, w, n * sizeof(float));
    x[5] = INFINITY;    /* the logits, then the loss, are not finite */
    CHECK_STATUS(unet_train_step_ex(ctx, m, &opt, &so, x, tg, NULL, B, T, T, NULL),
                 UNET_STATUS_NUMERIC);
    CHECK_EQ(h.calls, 2);
    CHECK_EQ(h.nan_grads, 1);
    x[5] = 0;
    h.ret = UNET_STATUS_IO;
    CHECK_STATUS(unet_train_step_ex(ctx, m, &opt, &so, x, tg, NULL, B, T, T, NULL), UNET_STATUS_IO);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "hook says no");
    CHECK_EQ(h.calls, 3);
    CHECK(before && memcmp(before, w, n * sizeof(float)) == 0);
    CHECK_EQ(unet_train_steps(m), 1);
    free(before);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

TEST(data_parallel_seams) {
    struct fixture f;
    fixture_init(&f, 0);
    const unet_dataset *train = f.train;
    unet_model *probe = new_model(f.ctx, 0);
    size_t n = 0, nb = 0;
    CHECK(unet_model_block(probe, UNET_BLOCK_WEIGHTS, &n) != NULL);
    CHECK(unet_model_block(probe, UNET_BLOCK_GRADS, NULL) == NULL); /* before a step */
    unet_model_block(probe, UNET_BLOCK_BUFFERS, &nb);
    CHECK_EQ(nb, 0);   /* no batch-norm */
    CHECK_EQ(n, unet_model_param_count(probe));
    unet_model_free(probe);
    struct rank single = {.r = 0, .train = train};
    CHECK_STATUS(dp_run(&single, false), UNET_STATUS_OK);
    struct allreduce ar = {.n = n};
    pthread_barrier_init(&ar.bar, NULL, RANKS);
    struct rank rk[RANKS];
    pthread_t th[RANKS];
    for (int r = 0; r < RANKS; r++) {
        ar.slot[r] = malloc(n * sizeof(float));
        rk[r] = (struct rank){.ar = &ar, .r = r, .train = train};
        pthread_create(&th[r], NULL, rank_main, &rk[r]);
    }
    for (int r = 0; r < RANKS; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < RANKS; r++) CHECK_STATUS(rk[r].status, UNET_STATUS_OK);
    if (single.weights && rk[0].weights && rk[1].weights) {
        /* The ranks agree to the bit; the single process to the summation order. */
        CHECK(memcmp(rk[0].weights, rk[1].weights, n * sizeof(float)) == 0);
        double max_diff = 0, max_w = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)rk[0].weights[i] - single.weights[i]);
            if (d > max_diff) max_diff = d;
            if (fabs(single.weights[i]) > max_w) max_w = fabs(single.weights[i]);
        }
        printf("       2 ranks x 2 tiles vs 1 x 4, 8 Adam steps: max |dw| %.3g (max |w| %.3g)\n",
               max_diff, max_w);
        CHECK(max_diff < 1e-5);
    }
    for (int r = 0; r < RANKS; r++) free(ar.slot[r]), free(rk[r].weights);
    free(single.weights);
    pthread_barrier_destroy(&ar.bar);
    fixture_free(&f);
}

/* unet_dp between threads: a group whose sums are formed in rank order after a barrier (the
 * same bits on every rank, as MPI_Allreduce gives). */
struct group {
    pthread_barrier_t bar;
    void             *slot[RANKS];
};

struct member {
    struct group       *g;
    int                 r;
    const unet_dataset *train;
    int                 sync_bn, batchnorm;
    float              *weights, *buffers;
    size_t              n, nb;
    unet_status         status;
};

/* v (doubles, or floats when f32) summed over the members in rank order, in double. */
static void group_reduce(void *v, size_t n, bool f32, struct member *me) {
    me->g->slot[me->r] = v;
    pthread_barrier_wait(&me->g->bar);
    double *sum = calloc(n + 1, sizeof(double));
    for (int r = 0; r < RANKS && sum; r++)
        for (size_t i = 0; i < n; i++)
            sum[i] += f32 ? ((const float *)me->g->slot[r])[i] : ((const double *)me->g->slot[r])[i];
    pthread_barrier_wait(&me->g->bar);
    for (size_t i = 0; i < n && sum; i++)
        if (f32) ((float *)v)[i] = (float)sum[i];
        else ((double *)v)[i] = sum[i];
    free(sum);
}

static void group_sum(double *v, size_t n, void *user) {
    group_reduce(v, n, false, user);
}

static void group_sum_f32(float *v, size_t n, void *user) {
    group_reduce(v, n, true, user);
}

/* 8 Adam steps (cross entropy, batch 4) of a model with or without batch-norm: one process
 * (me->g NULL) or this member's share through unet_dp.  Keeps the weights and running
 * statistics. */
static unet_status dp_member_run(struct member *me) {
    unet_ctx *ctx = unet_ctx_create();
    unet_ctx_set_threads(ctx, 1);
    unet_model *m = new_model(ctx, me->batchnorm);
    unet_train_opts o = unet_train_defaults();
    o.step.loss = UNET_LOSS_CE;
    o.batch = 4, o.tile = 32, o.steps = 8, o.seed = 5;
    unet_dp dp = {.rank = me->r, .processes = RANKS, .sum = group_sum, .sum_f32 = group_sum_f32,
                  .user = me};
    unet_status s = me->g ? unet_dp_attach(ctx, &dp, m, &o, me->sync_bn) : UNET_STATUS_OK;
    unet_trainer *t = NULL;
    if (s == UNET_STATUS_OK) s = unet_trainer_create(ctx, m, me->train, NULL, &o, &t);
    if (s == UNET_STATUS_OK) s = unet_trainer_run(ctx, t, NULL, NULL);
    if (s != UNET_STATUS_OK) printf("  rank %d: %s\n", me->r, unet_ctx_errmsg(ctx));
    const float *w = unet_model_block(m, UNET_BLOCK_WEIGHTS, &me->n);
    const float *b = unet_model_block(m, UNET_BLOCK_BUFFERS, &me->nb);
    me->weights = malloc(me->n * sizeof(float));
    me->buffers = malloc(me->nb * sizeof(float) + 1);
    if (me->weights) memcpy(me->weights, w, me->n * sizeof(float));
    if (me->buffers && me->nb) memcpy(me->buffers, b, me->nb * sizeof(float));
    unet_trainer_free(t);
    unet_model_free(m);
    unet_ctx_free(ctx);
    return s;
}

static void *member_main(void *arg) {
    struct member *me = arg;
    me->status = dp_member_run(me);
    return NULL;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i] - b[i]) > d) d = fabs((double)a[i] - b[i]);
    return d;
}

/* Two members' run against one process's: {weights, running statistics} max differences;
 * the members must agree bit for bit. */
static void dp_compare(const struct member *one, int batchnorm, int sync_bn, double out[2]) {
    struct group g;
    pthread_barrier_init(&g.bar, NULL, RANKS);
    struct member mb[RANKS];
    pthread_t th[RANKS];
    for (int r = 0; r < RANKS; r++) {
        mb[r] = (struct member){.g = &g, .r = r, .train = one->train, .sync_bn = sync_bn,
                                .batchnorm = batchnorm};
        pthread_create(&th[r], NULL, member_main, &mb[r]);
    }
    for (int r = 0; r < RANKS; r++) pthread_join(th[r], NULL);
    out[0] = out[1] = INFINITY;
    for (int r = 0; r < RANKS; r++) CHECK_STATUS(mb[r].status, UNET_STATUS_OK);
    if (mb[0].weights && mb[1].weights && mb[0].buffers && mb[1].buffers && one->weights) {
        CHECK(memcmp(mb[0].weights, mb[1].weights, one->n * sizeof(float)) == 0);
        CHECK(memcmp(mb[0].buffers, mb[1].buffers, one->nb * sizeof(float)) == 0);
        out[0] = max_abs_diff(mb[0].weights, one->weights, one->n);
        out[1] = max_abs_diff(mb[0].buffers, one->buffers, one->nb);
    }
    for (int r = 0; r < RANKS; r++) free(mb[r].weights), free(mb[r].buffers);
    pthread_barrier_destroy(&g.bar);
}

/* unet_dp_attach: 2 threads x 2 tiles against 1 x 4.  Without batch-norm and with synchronised
 * batch-norm, the weights and running statistics match to float rounding; with per-process
 * batch statistics (the default) they differ by far more, the members staying alike. */
TEST(data_parallel_group) {
    struct fixture f;
    fixture_init(&f, 0);
    struct member bn = {.train = f.train, .batchnorm = 1}, plain = {.train = f.train};
    CHECK_STATUS(dp_member_run(&bn), UNET_STATUS_OK);
    CHECK_STATUS(dp_member_run(&plain), UNET_STATUS_OK);
    double d_plain[2], d_sync[2], d_local[2];
    dp_compare(&plain, 0, 0, d_plain);
    dp_compare(&bn, 1, 1, d_sync);
    dp_compare(&bn, 1, 0, d_local);
    printf("       max |dw|, |d running stats| vs 1 process: no batch-norm %.3g; sync-bn %.3g, "
           "%.3g; per-process bn %.3g, %.3g\n",
           d_plain[0], d_sync[0], d_sync[1], d_local[0], d_local[1]);
    CHECK(d_plain[0] < 1e-5);
    CHECK(d_sync[0] < 1e-5 && d_sync[1] < 1e-5);
    CHECK(d_local[0] > 100 * d_sync[0] && d_local[1] > 1e-4);
    /* The shares: batch 5 over 2 is 2 + 3; a batch below the processes is refused. */
    unet_model *m = new_model(f.ctx, 1);
    unet_train_opts o = unet_train_defaults();
    unet_dp dp = {.rank = 1, .processes = 2, .sum = group_sum, .sum_f32 = group_sum_f32};
    o.batch = 5;
    CHECK_STATUS(unet_dp_attach(f.ctx, &dp, m, &o, 0), UNET_STATUS_OK);
    CHECK(o.shard_first == 2 && o.shard_count == 3);
    o.batch = 1;
    CHECK_STATUS(unet_dp_attach(f.ctx, &dp, m, &o, 0), UNET_STATUS_ARG);
    CHECK(strstr(unet_ctx_errmsg(f.ctx), "batch") != NULL);
    unet_model_free(m);
    free(bn.weights), free(bn.buffers), free(plain.weights), free(plain.buffers);
    fixture_free(&f);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/unet_test_trainer_%d", (int)getpid());
    mkdir(tmp_dir, 0755);
    tmp_path(data_dir, sizeof data_dir, "data");
    if (!write_squares(data_dir, N_IMAGES, SIDE)) {
        printf("test_trainer: cannot write the dataset in %s\n", data_dir);
        harness_failed++;
        return harness_finish();
    }
    RUN(api_run_equals_cli);
    RUN(events_every_step);
    RUN(stop_and_resume_equals_uninterrupted);
    RUN(stop_before_the_first_step);
    RUN(bad_options_name_the_option);
    RUN(masks_become_targets);
    RUN(default_recipe_plans_from_masks);
    RUN(default_recipe_plans_sizes);
    RUN(holdout_moves_images_and_bands);
    RUN(sampler_shards_are_slices);
    RUN(grad_hook_sees_every_step);
    RUN(data_parallel_seams);
    RUN(data_parallel_group);
    remove_tree(tmp_dir);
    return harness_finish();
}
