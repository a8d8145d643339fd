/* test_threads.c — the library from several threads at once, each with its own context and
 * model (unet.h: "two threads with two contexts and two models share no mutable state").
 *
 * One job is the whole life of a model: a dataset and a sampler (with a worker thread), a
 * U-Net created from a seed, training steps, a checkpoint saved, loaded back and resumed,
 * prediction, an image written and read back.  Each job's losses and outputs are recorded
 * bit for bit.  The jobs run one after the other first, then all at the same time in
 * pthreads (two different jobs, and two copies of the same job): every result must equal the
 * sequential one exactly.  Each job's context uses 2 OpenMP threads, so the parallel run also
 * has two OpenMP teams (and OpenBLAS) working at once.
 *
 * Data races the comparison might miss are ThreadSanitizer's job: docs/robustness.md gives
 * the TSan build of this test and the helgrind command for the normal build.
 */
#include "harness.h"

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#define JOBS 4
#define STEPS 4
#define SIZE 32

struct job {
    int      id;
    uint64_t seed;
    /* results */
    double   loss[STEPS + 2];
    float   *pred;          /* (classes, SIZE, SIZE) after training */
    float   *pred_loaded;   /* the same from the checkpoint loaded back */
    uint8_t  image_back[SIZE * SIZE];
    char     err[512];
};

#define JOB_FAIL(j, ...)                                                                       \
    do {                                                                                       \
        snprintf((j)->err, sizeof (j)->err, __VA_ARGS__);                                      \
        goto done;                                                                             \
    } while (0)

static void *run_job(void *arg) {
    struct job *j = arg;
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = NULL, *back = NULL;
    unet_dataset *ds = NULL;
    unet_sampler *sm = NULL;
    float *img = malloc(sizeof(float) * SIZE * SIZE * 3);
    int32_t *tgt = malloc(sizeof(int32_t) * SIZE * SIZE * 3);
    float *x = malloc(sizeof(float) * 2 * SIZE * SIZE);
    int32_t *t = malloc(sizeof(int32_t) * 2 * SIZE * SIZE);
    char path[512];
    j->err[0] = 0;
    if (!ctx || !img || !tgt || !x || !t) JOB_FAIL(j, "out of memory");
    if (unet_ctx_set_threads(ctx, 2) != UNET_STATUS_OK) JOB_FAIL(j, "threads");

    /* Data: three images made from the seed, in a dataset sampled by a worker thread. */
    struct unet__rng r;
    unet__rng_seed(&r, j->seed);
    for (int i = 0; i < 3 * SIZE * SIZE; i++) {
        img[i] = unet__rng_uniform(&r);
        tgt[i] = img[i] > 0.6f;
    }
    if (unet_dataset_create(ctx, 1, &ds) != UNET_STATUS_OK) JOB_FAIL(j, "%s", unet_ctx_errmsg(ctx));
    for (int k = 0; k < 3; k++)
        if (unet_dataset_add(ctx, ds, img + k * SIZE * SIZE, tgt + k * SIZE * SIZE, NULL, SIZE,
                             SIZE, NULL) != UNET_STATUS_OK)
            JOB_FAIL(j, "%s", unet_ctx_errmsg(ctx));
    unet_augment aug = unet_augment_paper();
    if (unet_sampler_create(ctx, ds, 2, 16, 16, 16, 16, &aug, j->seed, 1, &sm) != UNET_STATUS_OK)
        JOB_FAIL(j, "%s", unet_ctx_errmsg(ctx));

    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 4;
    c.depth = 2;
    c.dropout = 0.2f;
    if (unet_model_create(ctx, &c, j->seed, &m) != UNET_STATUS_OK) JOB_FAIL(j, "%s", unet_ctx_errmsg(ctx));
    unet_optim opt = unet_optim_default(UNET_OPTIM_ADAM);
    for (int s = 0; s < STEPS; s++) {
        if (unet_sampler_next(ctx, sm, x, t, NULL) != UNET_STATUS_OK ||
            unet_train_step(ctx, m, &opt, UNET_LOSS_CE_DICE, x, t, NULL, 2, 16, 16,
                            &j->loss[s]) != UNET_STATUS_OK)
            JOB_FAIL(j, "step %d: %s", s, unet_ctx_errmsg(ctx));
    }

    /* Checkpoint round trip, then one more step on each copy: the same loss. */
    snprintf(path, sizeof path, "%s/job%d.safetensors", tmp_dir, j->id);
    if (unet_model_save_training(ctx, m, path, NULL, 0) != UNET_STATUS_OK ||
        unet_model_load_training(ctx, path, &back, NULL, NULL) != UNET_STATUS_OK)
        JOB_FAIL(j, "%s", unet_ctx_errmsg(ctx));
    if (unet_sampler_next(ctx, sm, x, t, NULL) != UNET_STATUS_OK ||
        unet_train_step(ctx, m, &opt, UNET_LOSS_CE_DICE, x, t, NULL, 2, 16, 16,
                        &j->loss[STEPS]) != UNET_STATUS_OK ||
        unet_train_step(ctx, back, &opt, UNET_LOSS_CE_DICE, x, t, NULL, 2, 16, 16,
                        &j->loss[STEPS + 1]) != UNET_STATUS_OK)
        JOB_FAIL(j, "%s", unet_ctx_errmsg(ctx));

    unet_predict_opts po = unet_predict_defaults();
    po.tile = 16;
    po.overlap = 4;
    if (unet_predict(ctx, m, img, SIZE, SIZE, &po, j->pred, NULL, NULL) != UNET_STATUS_OK ||
        unet_predict(ctx, back, img, SIZE, SIZE, &po, j->pred_loaded, NULL, NULL) != UNET_STATUS_OK)
        JOB_FAIL(j, "%s", unet_ctx_errmsg(ctx));

    /* Image I/O (libpng) from this thread too. */
    unet_image out, in;
    if (unet_image_alloc(ctx, &out, SIZE, SIZE, 1, UNET_DTYPE_U8) != UNET_STATUS_OK)
        JOB_FAIL(j, "%s", unet_ctx_errmsg(ctx));
    for (int i = 0; i < SIZE * SIZE; i++) ((uint8_t *)out.data)[i] = (uint8_t)(255 * j->pred[i]);
    snprintf(path, sizeof path, "%s/job%d.png", tmp_dir, j->id);
    unet_status s = unet_image_save(ctx, path, &out);
    unet_image_free(&out);
    if (s == UNET_STATUS_OK) s = unet_image_load(ctx, path, 0, &in);
    if (s != UNET_STATUS_OK) JOB_FAIL(j, "%s", unet_ctx_errmsg(ctx));
    memcpy(j->image_back, in.data, sizeof j->image_back);
    unet_image_free(&in);
done:
    unet_sampler_free(sm);
    unet_dataset_free(ds);
    unet_model_free(m);
    unet_model_free(back);
    unet_ctx_free(ctx);
    free(img), free(tgt), free(x), free(t);
    return NULL;
}

static void job_init(struct job *j, int id, uint64_t seed) {
    memset(j, 0, sizeof *j);
    j->id = id;
    j->seed = seed;
    j->pred = test_alloc(2 * SIZE * SIZE);
    j->pred_loaded = test_alloc(2 * SIZE * SIZE);
}

static void job_free(struct job *j) {
    free(j->pred);
    free(j->pred_loaded);
}

/* Bitwise equality of everything a job produced. */
static bool same_results(const struct job *a, const struct job *b) {
    return memcmp(a->loss, b->loss, sizeof a->loss) == 0 &&
           memcmp(a->pred, b->pred, sizeof(float) * 2 * SIZE * SIZE) == 0 &&
           memcmp(a->pred_loaded, b->pred_loaded, sizeof(float) * 2 * SIZE * SIZE) == 0 &&
           memcmp(a->image_back, b->image_back, sizeof a->image_back) == 0;
}

TEST(parallel_models_equal_sequential) {
    /* Seeds: two different models, and two copies of each. */
    const uint64_t seeds[JOBS] = {11, 22, 11, 22};
    struct job seq[JOBS], par[JOBS];
    for (int k = 0; k < JOBS; k++) {
        job_init(&seq[k], k, seeds[k]);
        job_init(&par[k], JOBS + k, seeds[k]);
    }
    for (int k = 0; k < 2; k++) {
        run_job(&seq[k]);
        if (seq[k].err[0]) printf("  sequential job %d: %s\n", k, seq[k].err);
        CHECK(!seq[k].err[0]);
    }
    printf("       sequential: seed 11 losses %.6f .. %.6f, seed 22 losses %.6f .. %.6f\n",
           seq[0].loss[0], seq[0].loss[STEPS], seq[1].loss[0], seq[1].loss[STEPS]);
    /* The resumed copy takes the same step as the original. */
    CHECK(seq[0].loss[STEPS] == seq[0].loss[STEPS + 1]);
    CHECK(!same_results(&seq[0], &seq[1])); /* the seeds matter: the comparison can fail */
    for (int round = 0; round < 2; round++) {
        pthread_t th[JOBS];
        for (int k = 0; k < JOBS; k++) CHECK_EQ(pthread_create(&th[k], NULL, run_job, &par[k]), 0);
        for (int k = 0; k < JOBS; k++) pthread_join(th[k], NULL);
        int equal = 0;
        for (int k = 0; k < JOBS; k++) {
            if (par[k].err[0]) printf("  parallel job %d: %s\n", k, par[k].err);
            CHECK(!par[k].err[0]);
            bool same = same_results(&par[k], &seq[k % 2]);
            if (!same) printf("  round %d: job %d (seed %llu) differs from the sequential run\n",
                              round, k, (unsigned long long)seeds[k]);
            equal += same;
        }
        printf("       round %d: %d threads at once, %d of %d results bitwise equal to the "
               "sequential run\n", round, JOBS, equal, JOBS);
        CHECK_EQ(equal, JOBS);
    }
    for (int k = 0; k < JOBS; k++) {
        job_free(&seq[k]);
        job_free(&par[k]);
    }
}

/* The error message of one context is not disturbed by failures in another thread. */
static void *fail_loop(void *arg) {
    int id = *(int *)arg;
    unet_ctx *ctx = unet_ctx_create();
    char path[64], want[96];
    int bad = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(path, sizeof path, "/nonexistent/thread%d_%d.png", id, i);
        unet_image img;
        unet_image_load(ctx, path, 0, &img);
        snprintf(want, sizeof want, "%s: cannot open", path);
        bad += strstr(unet_ctx_errmsg(ctx), want) == NULL;
    }
    unet_ctx_free(ctx);
    *(int *)arg = bad;
    return NULL;
}

TEST(error_messages_per_context) {
    pthread_t th[4];
    int ids[4] = {0, 1, 2, 3};
    for (int k = 0; k < 4; k++) CHECK_EQ(pthread_create(&th[k], NULL, fail_loop, &ids[k]), 0);
    for (int k = 0; k < 4; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < 4; k++) CHECK_EQ(ids[k], 0);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/unet_test_threads_%d", (int)getpid());
    mkdir(tmp_dir, 0755);
    RUN(parallel_models_equal_sequential);
    RUN(error_messages_per_context);
    char p[512];
    for (int k = 0; k < 2 * JOBS; k++) {
        snprintf(p, sizeof p, "%s/job%d.safetensors", tmp_dir, k);
        unlink(p);
        snprintf(p, sizeof p, "%s/job%d.png", tmp_dir, k);
        unlink(p);
    }
    rmdir(tmp_dir);
    return harness_finish();
}
