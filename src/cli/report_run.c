/* report_run.c — STEM.run.json: what a training run was, for the report.
 *
 * unet train writes it when the first step is about to start (status "running") and again
 * when the run ends (status "finished", "interrupted" or "failed", with the end time and
 * the last step), atomically both times, so a reader sees one or the other and a run killed
 * with -9 keeps "running".  It holds the command line, the architecture and parameter count
 * (from the model), the recipe (optimizer, learning rate, loss, augmentation, batch, tile,
 * steps, seed), the data (folders and image counts), the time and the machine (host, CPU,
 * cores, memory, OS, compiler, BLAS).  Sections are JSON objects whose keys the report shows
 * in order; a newer unet may add keys, and the report shows whatever it finds.
 *
 * The alternative, the same keys in the model's safetensors metadata, would put them only in
 * the model file, which is written at epoch ends, not when a run starts or dies.
 */
#include "cli/report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

/* The first "model name" line of /proc/cpuinfo, or "". */
static void cpu_name(char *buf, size_t size) {
    buf[0] = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        colon += 1 + (colon[1] == ' ');
        colon[strcspn(colon, "\n")] = 0;
        snprintf(buf, size, "%s", colon);
        break;
    }
    fclose(f);
}

static cJSON *machine(const struct report_run *r) {
    cJSON *o = cJSON_CreateObject();
    char buf[256];
    if (gethostname(buf, sizeof buf) == 0) {
        buf[sizeof buf - 1] = 0;
        cJSON_AddStringToObject(o, "host", buf);
    }
    cpu_name(buf, sizeof buf);
    if (buf[0]) cJSON_AddStringToObject(o, "cpu", buf);
    cJSON_AddNumberToObject(o, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddNumberToObject(o, "threads", r->threads);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0)
        cJSON_AddNumberToObject(o, "memory_gib", round((double)pages * page / 107374182.4) / 10);
    struct utsname u;
    if (uname(&u) == 0) {
        snprintf(buf, sizeof buf, "%s %s %s", u.sysname, u.release, u.machine);
        cJSON_AddStringToObject(o, "os", buf);
    }
    cJSON_AddStringToObject(o, "unet", UNET_VERSION);
#if defined(__clang__)
    cJSON_AddStringToObject(o, "compiler", "clang " __clang_version__);
#elif defined(__GNUC__)
    cJSON_AddStringToObject(o, "compiler", "gcc " __VERSION__);
#endif
#ifdef UNET_NO_BLAS
    cJSON_AddStringToObject(o, "gemm", "built-in (NO_BLAS)");
#else
    cJSON_AddStringToObject(o, "gemm", "OpenBLAS");
#endif
    return o;
}

static cJSON *architecture(const struct report_run *r) {
    cJSON *o = cJSON_CreateObject();
    const unet_config *c = unet_model_config(r->m);
    bool unet = c->arch == UNET_ARCH_UNET || c->arch == UNET_ARCH_UNET_PAPER;
    cJSON_AddStringToObject(o, "arch", unet_arch_name(c->arch));
    cJSON_AddNumberToObject(o, "base", c->base);
    if (unet) cJSON_AddNumberToObject(o, "depth", c->depth);
    else cJSON_AddNumberToObject(o, "fc_channels", c->fc_channels ? c->fc_channels : 64 * c->base);
    cJSON_AddNumberToObject(o, "classes", c->classes);
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    if (unet)
        cJSON_AddStringToObject(o, "up", c->up == UNET_UP_BILINEAR ? "bilinear" : "transpose");
    cJSON_AddStringToObject(o, "padding", c->padding == 0 ? "valid" : "same");
    cJSON_AddBoolToObject(o, "batchnorm", c->batchnorm);
    cJSON_AddBoolToObject(o, "conv_bias", c->conv_bias);
    cJSON_AddNumberToObject(o, "dropout", c->dropout);
    cJSON_AddNumberToObject(o, "parameters", (double)unet_model_param_count(r->m));
    return o;
}

static cJSON *recipe(const struct report_run *r) {
    static const char *names[] = {"sgd", "adam", "adamw"};
    const unet_optim *p = r->opt;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "recipe", r->recipe ? r->recipe : "seed");
    cJSON_AddStringToObject(o, "optimizer", (unsigned)p->kind < 3 ? names[p->kind] : "?");
    cJSON_AddNumberToObject(o, "lr", p->lr);
    if (p->kind == UNET_OPTIM_SGD) {
        cJSON_AddNumberToObject(o, "momentum", p->momentum);
        cJSON_AddBoolToObject(o, "nesterov", p->nesterov);
    } else {
        cJSON_AddNumberToObject(o, "beta1", p->beta1);
        cJSON_AddNumberToObject(o, "beta2", p->beta2);
    }
    cJSON_AddNumberToObject(o, "weight_decay", p->weight_decay);
    cJSON_AddStringToObject(o, "loss", r->loss);
    cJSON_AddStringToObject(o, "augment", r->augment);
    cJSON_AddNumberToObject(o, "batch", r->batch);
    cJSON_AddNumberToObject(o, "tile", r->tile);
    cJSON_AddNumberToObject(o, "output_tile", r->out_tile);
    if (r->steps == UNET_MAX_STEPS) /* only the time budget ends the run */
        cJSON_AddNullToObject(o, "steps");
    else
        cJSON_AddNumberToObject(o, "steps", (double)r->steps);
    cJSON_AddNumberToObject(o, "steps_per_epoch", (double)r->per_epoch);
    cJSON_AddNumberToObject(o, "seed", r->seed);
    return o;
}

static cJSON *data(const struct report_run *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "images", r->images);
    cJSON_AddStringToObject(o, "masks", r->masks);
    if (r->val_images) {
        cJSON_AddStringToObject(o, "val_images", r->val_images);
        cJSON_AddStringToObject(o, "val_masks", r->val_masks);
    } else {
        cJSON_AddNumberToObject(o, "val_split", round(r->val_split * 1e6) / 1e6);
    }
    cJSON_AddNumberToObject(o, "training_count", r->n_train);
    cJSON_AddNumberToObject(o, "validation_count", r->n_val);
    return o;
}

/* The whole record; status "running" leaves out the ending. */
static void write_record(struct report_run *r, const char *status, long step) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "unet_run", 1);
    cJSON_AddStringToObject(root, "status", status);
    cJSON_AddStringToObject(root, "model", r->model);
    cJSON_AddStringToObject(root, "log", r->log);
    cJSON *cmd = cJSON_AddArrayToObject(root, "command");
    for (int i = 0; cmd && i < r->argc; i++)
        cJSON_AddItemToArray(cmd, cJSON_CreateString(i == 0 ? "unet" : r->argv[i]));
    cJSON_AddItemToObject(root, "architecture", architecture(r));
    cJSON_AddItemToObject(root, "recipe", recipe(r));
    cJSON_AddItemToObject(root, "data", data(r));
    cJSON *t = cJSON_AddObjectToObject(root, "time");
    if (t) {
        cJSON_AddStringToObject(t, "started", r->kept.started);
        if (r->resumed_at >= 0)
            cJSON_AddNumberToObject(t, "resumed_at_step", (double)r->resumed_at);
        if (step >= 0) {
            char now[40];
            report_time(now, sizeof now, "%Y-%m-%dT%H:%M:%S%z", time(NULL));
            cJSON_AddStringToObject(t, "ended", now);
            cJSON_AddNumberToObject(t, "seconds", round((cli_now() - r->kept.t0) * 10) / 10);
            cJSON_AddNumberToObject(t, "last_step", (double)step);
        }
    }
    cJSON_AddItemToObject(root, "machine", machine(r));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text || !report_save(r->kept.path, text, strlen(text)))
        cli_note("note: %s could not be written; the report will lack the run's settings",
                 r->kept.path);
    free(text);
}

bool report_run_begin(struct report_run *r, const char *report) {
    if (report && !report_check_out(report)) return false;
    size_t n = strlen(r->model);
    const char *suf = ".safetensors";
    size_t k = strlen(suf);
    if (n > k && strcmp(r->model + n - k, suf) == 0) n -= k;
    r->kept.path = malloc(n + 16);
    if (!r->kept.path) return true;
    memcpy(r->kept.path, r->model, n);
    strcpy(r->kept.path + n, ".run.json");
    r->kept.t0 = cli_now();
    report_time(r->kept.started, sizeof r->kept.started, "%Y-%m-%dT%H:%M:%S%z", time(NULL));
    write_record(r, "running", -1);
    return true;
}

int report_run_end(struct report_run *r, int rc, long step, const char *report) {
    if (!r->kept.path) return 0;
    write_record(r, rc == 0                   ? "finished"
                    : rc == CLI_EXIT_DIVERGED ? "diverged"
                    : rc > 128                ? "interrupted"
                                              : "failed",
                 step);
    const char *in[] = {r->kept.path};
    int out = report ? report_write(report, in, 1) : 0;
    free(r->kept.path);
    r->kept.path = NULL;
    return out;
}
