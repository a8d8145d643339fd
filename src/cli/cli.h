/* cli.h — what the unet subcommands share: option parsing, messages, file lists, progress.
 *
 * The CLI parses arguments, calls the library and prints; it holds no model logic.  Errors are
 * one line on stderr, "unet: error: <what>", and a non-zero exit: 1 for failures, 2 for usage
 * errors.  Bad values are rejected, never clamped silently.
 */
#ifndef UNET_CLI_H
#define UNET_CLI_H

#include "unet.h"

#include <stdbool.h>
#include <stdio.h>

/* 3: unet train stopped a run that kept diverging after its rollbacks (docs/training.md). */
enum { CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2, CLI_EXIT_DIVERGED = 3 };

/* ---- options ---- */
enum cli_kind { CLI_FLAG, CLI_INT, CLI_FLOAT, CLI_DOUBLE, CLI_STR };

struct cli_opt {
    const char   *name;     /* "--tile" */
    enum cli_kind kind;
    void         *dst;      /* bool*, int*, float*, double*, const char** */
    const char   *arg;      /* "N", "DIR", ... for the help text (NULL for flags) */
    const char   *help;
};

/* Parses argv[first..] against opts; positional arguments go to pos (up to max_pos, count in
 * *n_pos; pos may be NULL when none are allowed).  Prints the error and returns false on an
 * unknown option, a missing or malformed value.  "--help" prints the usage and exits 0. */
bool cli_parse(const char *cmd, const char *synopsis, int argc, char **argv, int first,
               const struct cli_opt *opts, int n_opts, const char **pos, int max_pos, int *n_pos);
void cli_usage(FILE *f, const char *cmd, const char *synopsis, const struct cli_opt *opts, int n_opts);

/* ---- messages ---- */
/* "unet: error: <formatted>" on stderr. */
void cli_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* The library's failure: "unet: error: <status>: <detail>". */
void cli_lib_error(unet_ctx *ctx, unet_status s);
void cli_note(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* ---- files ---- */
struct cli_files {
    char **paths;
    int    count;
};
/* The image files (.png .tif .tiff .npy, any case) directly in dir, sorted by name; or, when
 * path is a file, that file alone.  Returns false (message printed) when nothing is found. */
bool cli_list_images(const char *path, struct cli_files *out);
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
/* Creates dir (one level) if missing; false with a message on failure. */
bool cli_mkdir(const char *dir);

/* ---- parsing values ---- */
bool cli_parse_norm(const char *s, unet_norm *out);
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
void cli_progress_line(struct cli_progress *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Ends the status line (a newline on a terminal). */
void cli_progress_done(struct cli_progress *p);
double cli_now(void);
/* "1h02m", "3m05s", "12s" */
const char *cli_duration(double seconds, char *buf, size_t size);

/* ---- images ---- */
/* Loads page `page` of path as normalised floats (c, h, w): *data malloc'd. */
bool cli_load_image(unet_ctx *ctx, const char *path, int page, unet_norm norm, float **data,
                    int *c, int *h, int *w);

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
