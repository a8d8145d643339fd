/* cli.h — what the unet subcommands share: option parsing, messages, file lists, progress.
 *
 * The CLI parses arguments, calls the library and prints; it holds no model logic.  Errors are
 * one line on stderr, "unet: error: <what>", and a non-zero exit: 1 for failures, 2 for usage
 * errors.  Bad values are rejected, never clamped silently.
 */
#ifndef UNET_CLI_H
#define UNET_CLI_H

#include "unet.h"
#include "cli/options.h"

#include <stdbool.h>
#include <stdio.h>

/* 3: unet train stopped a run that kept diverging after its rollbacks (docs/training.md). */
/* printf-style checking of a declaration's format (argument f) and values (from a). */
#if defined(__GNUC__)
#define CLI_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CLI_PRINTF(f, a)
#endif

enum { CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2, CLI_EXIT_DIVERGED = 3 };

/* ---- options ----
 * Every command declares its options in a table (options.h: struct cli_option,
 * cli_options_parse). */

/* ---- messages ---- */
/* "unet: error: <formatted>" on stderr. */
void cli_error(const char *fmt, ...) CLI_PRINTF(1, 2);
/* The library's failure: "unet: error: <status>: <detail>". */
void cli_lib_error(unet_ctx *ctx, unet_status s);
/* From here on nothing goes to stderr (the ranks of an mpirun but 0, at an ending rank 0
 * tells). */
void cli_silence(void);
void cli_note(const char *fmt, ...) CLI_PRINTF(1, 2);

/* Messages kept instead of printed (the predict pipeline prints each image's messages in
 * input order, whichever thread made them).  cli_capture(log) sends the calling thread's
 * cli_error, cli_lib_error and cli_note lines to log until cli_capture(NULL);
 * cli_log_flush prints what log holds to stderr and empties it. */
struct cli_log {
    char  *text;
    size_t len, cap;
};
void cli_capture(struct cli_log *log);
void cli_log_printf(struct cli_log *log, const char *fmt, ...) CLI_PRINTF(2, 3);
void cli_log_flush(struct cli_log *log);
/* Text as it is (no prefix, no newline added) to stderr, or to the calling thread's capture. */
void cli_message(const char *fmt, ...) CLI_PRINTF(1, 2);

/* ---- files ---- */
struct cli_files {
    char **paths;
    int    count;
};
/* The image files (.png .tif .tiff .npy, any case) directly in dir, sorted by name; or, when
 * path is a file, that file alone.  Returns false (message printed) when nothing is found. */
bool cli_list_images(const char *path, struct cli_files *out);
/* The same without messages (false when there is nothing to list). */
bool cli_list_images_quiet(const char *path, struct cli_files *out);
void cli_files_free(struct cli_files *f);
bool cli_is_dir(const char *path);
/* "dir/name" into a malloc'd string. */
char *cli_join(const char *dir, const char *name);
/* The file name without directory and extension, malloc'd ("a/b/c.tif" -> "c"). */
char *cli_stem(const char *path);
const char *cli_basename(const char *path);
/* The file in dir whose name equals basename(path), or failing that whose stem matches with any
 * image extension; malloc'd, or NULL. */
char *cli_find_match(const char *dir, const char *path);
/* Creates dir and its missing parents; false with a message on failure. */
bool cli_mkdir(const char *dir);
/* Creates the missing directories above file. */
bool cli_mkdirs_for(const char *file);

/* ---- the files of a run: the path rule, one writer, the log (guard.c) ----
 * Before any work a command lists what it reads and writes; cli_uses_check refuses (message
 * naming both files, exit status returned) an output that is an input or another output (by
 * device and inode after following links; outputs that do not exist yet by resolved directory
 * and name, case-insensitively where the directory folds case), and an existing output that is
 * not a unet file of its kind unless force.  Uses with the same non-zero group may be one file
 * (--resume and the resumable checkpoint that replaces it). */
enum cli_out_kind { CLI_OUT_ANY, CLI_OUT_MODEL, CLI_OUT_LOG, CLI_OUT_LOCK };
struct cli_use {
    char              *path;
    const char        *role;    /* "--out", "the mask", ... (static) */
    const char        *of;      /* the input an output belongs to, or NULL (borrowed) */
    bool               write;
    enum cli_out_kind  kind;
    int                group;
    bool               exists;  /* set by cli_uses_check */
    unsigned long long dev, ino;
    char              *canon;
};
struct cli_uses {
    struct cli_use *u;
    int             n, cap;
    bool            oom;
};
void cli_uses_read(struct cli_uses *us, const char *path, const char *role, int group);
/* Every image file of a directory (or the file itself). */
void cli_uses_read_images(struct cli_uses *us, const char *path, const char *role);
void cli_uses_write(struct cli_uses *us, const char *path, const char *role, const char *of,
                    enum cli_out_kind kind, int group);
/* 0 when the rule holds; else the exit status, the message printed. */
int cli_uses_check(struct cli_uses *us, bool force);
void cli_uses_free(struct cli_uses *us);

/* The path rule for a command that reads one file and writes one or two (out[1] may be NULL),
 * after creating the outputs' directories: weightmap, convolutionalize. */
int cli_guard_io(const char *in, const char *in_role, const char *const out[2],
                 const char *const out_role[2]);

/* An exclusive advisory lock (flock, never waiting) on path: a lock file (created, empty) or a
 * directory.  The descriptor, or -1 with a message naming what and path when another process
 * holds it.  cli_unlock removes remove_path (the lock file; NULL for a directory) first. */
int cli_lock(const char *path, const char *what);
void cli_unlock(int fd, const char *remove_path);

/* The files of unet train: creates the missing directories of the outputs, applies the path
 * rule (inputs: every image of the four folders, --init, --resume), takes the lock on lock
 * (the output model's lock file), removes temporaries of earlier runs killed mid-write, and
 * checks that each output's directory takes a new file.  0 with *lock_fd held, or the exit
 * status (message printed). */
struct cli_train_files {
    const char *images, *masks, *val_images, *val_masks, *init, *resume;   /* read */
    const char *out, *last, *resume_out, *log, *lock, *run_json, *report; /* written */
};
int cli_train_guard(const struct cli_train_files *f, bool force, int *lock_fd);

/* Memory: --max-memory SIZE ("512M", "8G", bytes; K M G T are powers of 1024) into *out, or
 * false with a message naming opt.  The default budget is the physical memory, or the cgroup
 * limit when lower.  cli_within_budget prints "WHAT needs about N of memory, over the budget
 * of M" and returns false when need > budget. */
bool cli_parse_bytes(const char *opt, const char *s, uint64_t *out);
uint64_t cli_memory_default(void);
const char *cli_bytes_str(double bytes, char *buf, size_t size);
/* What the program itself takes beside its data: code, libraries, thread stacks. */
#define CLI_PROGRAM_BYTES (16.0 * 1048576)
bool cli_within_budget(const char *what, double need, uint64_t budget);
#define CLI_MAX_MEMORY_HELP "memory budget checked before loading (default: the machine's)"
/* Train's data estimate, from the image headers only, before anything is loaded: the images
 * of dirs[0] and dirs[2] kept as floats, the masks of dirs[1] and dirs[3] as class ids (and a
 * weight map when weights), plus the largest image while it decodes (NULL dirs skipped). */
bool cli_train_memory(unet_ctx *ctx, const char *const dirs[4], bool weights, uint64_t budget);
/* ... and the model's: parameters with gradients and moments, activations, batches. */
bool cli_train_model_memory(unet_ctx *ctx, const unet_model *m, int batch, int tile,
                            uint64_t budget);

/* The training log for appending (line-buffered): a new file holding header, or when resuming
 * the existing rows of steps <= step.  Either way the new content goes to a temporary file that
 * is renamed over path: nothing is truncated.  NULL with a message on failure. */
FILE *cli_log_open(const char *path, const char *header, bool resume, long step);

/* ---- parsing values ---- */
bool cli_parse_norm(const char *s, unet_norm *out);
/* --precision fp32|bf16 (usage error otherwise), and setting it on a model with a note when the
 * CPU runs fp32 instead. */
bool cli_parse_precision(const char *s, unet_precision *out);
void cli_set_precision(unet_ctx *ctx, unet_model *m, unet_precision p, bool quiet);
void cli_precision_note(unet_precision p, bool quiet); /* the note alone */
/* --max-pixels: a positive decimal count of pixels (width x height), the largest image the
 * loaders accept (unet_ctx_set_max_pixels); false with a message otherwise. */
bool cli_parse_max_pixels(const char *s, uint64_t *out);
#define CLI_MAX_PIXELS_HELP "largest image (width x height) to load (268435456 = 2^28)"
/* "512x384" or "512" -> h, w. */
bool cli_parse_size(const char *s, int *h, int *w);

/* ---- progress ---- */
struct cli_progress {
    bool   tty;
    double start;
    int    last_len;
};
void cli_progress_init(struct cli_progress *p);
/* Rewrites the status line on a terminal; prints nothing otherwise. */
void cli_progress_line(struct cli_progress *p, const char *fmt, ...) CLI_PRINTF(2, 3);
/* Ends the status line (a newline on a terminal). */
void cli_progress_done(struct cli_progress *p);
double cli_now(void);
/* "1h02m", "3m05s", "12s" */
const char *cli_duration(double seconds, char *buf, size_t size);

/* ---- images: layout, channels, normalisation, non-finite values (docs/images.md) ---- */
struct cli_input {
    const char     *axis_arg, *channels_arg; /* --channel-axis, --channels as given, or NULL */
    unet_image_opts opts;                    /* how images are read (masks: palette indices) */
    const char     *channels;                /* the channel spec applied, or NULL: all */
    unet_norm       norm;
};
#define CLI_CHANNEL_AXIS_HELP "where a .npy's channels are: first, last, none (a stack) or an " \
                              "axis; TIFF first: pages are channels (default: docs/images.md)"
#define CLI_CHANNELS_HELP "the input channels: gray (luminance), all, or numbers like 0 or 1,2"
/* --channel-axis, --channels and --norm (each may be NULL) into in; false (printed) for a bad
 * value, a usage error. */
bool cli_input_parse(struct cli_input *in, const char *axis, const char *channels,
                     const char *norm);
/* The layout model m records (unet_model_input), for the options not given, with a note
 * naming `from` (unless quiet).  strict (a resumed run): a given option that differs from the
 * record is an error, since the run must read its data as it began. */
bool cli_input_from_model(struct cli_input *in, const unet_model *m, const char *from,
                          bool strict, bool quiet);
/* train, once the model exists: records the layout on m (saved with it). */
bool cli_input_done(unet_ctx *ctx, const struct cli_input *in, unet_model *m);
/* Pages of an image (mask false) or a mask file under in's layout; false (printed) on failure. */
bool cli_image_pages(unet_ctx *ctx, const struct cli_input *in, const char *path, int *pages);
/* The header of page `page` and the channels it gives after --channels, before decoding. */
bool cli_image_channels(unet_ctx *ctx, const struct cli_input *in, const char *path, int page,
                        unet_image *info, int *channels);
/* "PATH has C channels; the model takes K" with what would make them fit (--channels gray,
 * --channel-axis none, ...). */
void cli_channels_mismatch(const struct cli_input *in, const char *path, const unet_image *info,
                           int channels, int want, const char *want_what);
/* Loads page `page` of path as normalised floats (c, h, w) after in's layout and channels:
 * *data malloc'd; non-finite values as cli_nonfinite_to_zero. */
bool cli_load_image(unet_ctx *ctx, const struct cli_input *in, const char *path, int page,
                    float **data, int *c, int *h, int *w);
/* The mask of image `path` in dir: the same file name, else the same stem with an image
 * extension; an error (printed, NULL) when there is none, or when the stem matches a file that
 * is another image's mask by its full name (a.png and a.tif side by side). */
char *cli_find_mask(const char *dir, const char *path);

/* Non-finite values in a normalised image (n floats): none, true; all, an error naming path
 * and false; some, a warning with the count, each set to 0, and true. */
bool cli_nonfinite_to_zero(const char *path, float *x, size_t n);

/* ---- subcommands ---- */
int cmd_train(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_weightmap(int argc, char **argv);
int cmd_convolutionalize(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_report(int argc, char **argv);

#endif /* UNET_CLI_H */
