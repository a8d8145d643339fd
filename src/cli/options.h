/* options.h — the CLI's option tables: one declarative table of options per command (name,
 * type, default, help, range), from which parsing, `--help` and the range errors come.
 *
 *     int classes, wc;
 *     const struct cli_option opts[] = {
 *         {"--classes", CLI_INT, &classes, "K", .help = "classes", .def = "2", .lo = 2, .hi = 64},
 *         {"--wc", CLI_CHOICE, &wc, "balance|none", .help = "class-balancing term",
 *          .def = "balance"},
 *     };
 *     const struct cli_command cmd = {"weightmap", "--mask FILE [options]", opts,
 *                                     CLI_COUNT(opts)};
 *     if (!cli_options_parse(&cmd, argc, argv, NULL, 0, NULL)) return CLI_EXIT_USAGE;
 *
 * A row gives name, kind, dst and arg in order and the rest by name (.help, .def, .lo, .hi),
 * so that rows without a default or a range stay short and compile warning-free.
 * Before argv is read each option with a default gets it (the text is parsed like a value on
 * the command line); options without one keep what their variable holds.  `--help` (or -h)
 * prints the usage, a line per option with its default in parentheses, and exits 0.
 * Messages (one line, "unet: error: ..."; the caller exits CLI_EXIT_USAGE):
 *     eval: unknown option '--bogus' (see unet eval --help)
 *     eval: --classes needs a value (K)
 *     eval: --classes: 'abc' is not a valid integer
 *     eval: --classes must be 2..64                  (also ">= 0", "<= 1")
 *     --wc: 'x' (expected balance or none)
 *     eval: --json takes no value
 *     eval: unexpected argument 'x' (see unet eval --help)
 * `--name=value` is the same as `--name value`; after `--` everything is positional.
 */
#ifndef UNET_CLI_OPTIONS_H
#define UNET_CLI_OPTIONS_H

#include <stdbool.h>
#include <stdio.h>

enum cli_kind {
    CLI_FLAG,       /* bool: true when given */
    CLI_INT,        /* int */
    CLI_FLOAT,      /* float (finite) */
    CLI_DOUBLE,     /* double (finite) */
    CLI_STR,        /* const char *: the argument itself */
    CLI_CHOICE      /* int: the index of the value among arg's words ("balance|none") */
};

struct cli_option {
    const char   *name;     /* "--tile" */
    enum cli_kind kind;
    void         *dst;      /* bool*, int*, float*, double*, const char**, int* (choice) */
    const char   *arg;      /* the value's name in the help ("N", "DIR"); NULL for flags;
                             * CLI_CHOICE: the words it takes, "balance|none" */
    const char   *help;     /* one line; the default is added as " (2)" */
    const char   *def;      /* the default as typed on the command line, or NULL */
    double        lo, hi;   /* numbers: the value must lie in [lo, hi] when lo < hi
                             * (-HUGE_VAL, HUGE_VAL: no bound on that side) */
};

struct cli_command {
    const char              *name;      /* "eval" */
    const char              *synopsis;  /* after "usage: unet eval " */
    const struct cli_option *opts;
    int                      n_opts;
};

#define CLI_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Sets the defaults, then parses argv[2..] (argv[1] is the command); positional arguments go
 * to pos (up to max_pos, the count in *n_pos; pos may be NULL when none are allowed).  false
 * with the message printed on an unknown option, a missing, malformed or out-of-range value or
 * an unexpected argument. */
bool cli_options_parse(const struct cli_command *cmd, int argc, char **argv, const char **pos,
                       int max_pos, int *n_pos);
void cli_options_usage(FILE *f, const struct cli_command *cmd);

#endif /* UNET_CLI_OPTIONS_H */
