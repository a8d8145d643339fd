/* options.c — parsing a command's arguments against its option table (options.h): defaults,
 * values, ranges, choices, positional arguments and the --help text. */
#include "cli/options.h"

#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void cli_options_usage(FILE *f, const struct cli_command *cmd) {
    fprintf(f, "usage: unet %s %s\n\noptions:\n", cmd->name, cmd->synopsis);
    for (int i = 0; i < cmd->n_opts; i++) {
        const struct cli_option *o = &cmd->opts[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(f, "  %-24s %s", left, o->help);
        if (o->def) fprintf(f, " (%s)", o->def);
        fputc('\n', f);
    }
}

static bool parse_int(const char *s, int *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno || v < -2147483647L || v > 2147483647L) return false;
    *out = (int)v;
    return true;
}

static bool parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* The index of word s among the '|'-separated words of list, or -1. */
static int choice_index(const char *list, const char *s) {
    size_t n = strlen(s);
    int k = 0;
    for (const char *p = list; p; k++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return k;
        p = bar ? bar + 1 : NULL;
    }
    return -1;
}

/* "--wc: 'x' (expected balance or none)": the words joined by commas, the last by "or". */
static void choice_error(const struct cli_option *o, const char *v) {
    char words[256] = "";
    size_t at = 0;
    for (const char *p = o->arg; p && at < sizeof words;) {
        const char *bar = strchr(p, '|');
        int len = bar ? (int)(bar - p) : (int)strlen(p);
        const char *sep = at == 0 ? "" : bar ? ", " : " or ";
        at += (size_t)snprintf(words + at, sizeof words - at, "%s%.*s", sep, len, p);
        p = bar ? bar + 1 : NULL;
    }
    cli_error("%s: '%s' (expected %s)", o->name, v, words);
}

/* "2..64", ">= 0" or "<= 1". */
static void range_error(const char *cmd, const struct cli_option *o) {
    char r[96];
    if (o->hi == HUGE_VAL) snprintf(r, sizeof r, ">= %g", o->lo);
    else if (o->lo == -HUGE_VAL) snprintf(r, sizeof r, "<= %g", o->hi);
    else snprintf(r, sizeof r, "%g..%g", o->lo, o->hi);
    cli_error("%s: %s must be %s", cmd, o->name, r);
}

/* Stores the text v as o's value; false with the message printed. */
static bool set_value(const char *cmd, const struct cli_option *o, const char *v) {
    double x = 0;
    bool ok = true;
    switch (o->kind) {
    case CLI_FLAG: *(bool *)o->dst = true; return true;
    case CLI_STR: *(const char **)o->dst = v; return true;
    case CLI_CHOICE: {
        int k = choice_index(o->arg, v);
        if (k < 0) {
            choice_error(o, v);
            return false;
        }
        *(int *)o->dst = k;
        return true;
    }
    case CLI_INT: {
        int i = 0;
        ok = parse_int(v, &i);
        x = i;
        break;
    }
    case CLI_FLOAT: ok = parse_double(v, &x) && fabs(x) <= 3.4e38; break;
    case CLI_DOUBLE: ok = parse_double(v, &x); break;
    }
    if (!ok) {
        cli_error("%s: %s: '%s' is not a valid %s", cmd, o->name, v,
                  o->kind == CLI_INT ? "integer" : "number");
        return false;
    }
    if (o->lo < o->hi && !(x >= o->lo && x <= o->hi)) {
        range_error(cmd, o);
        return false;
    }
    if (o->kind == CLI_INT) *(int *)o->dst = (int)x;
    else if (o->kind == CLI_FLOAT) *(float *)o->dst = (float)x;
    else *(double *)o->dst = x;
    return true;
}

static bool positional(const char *cmd, const char *a, const char **pos, int max_pos, int *np) {
    if (*np >= max_pos || !pos) {
        cli_error("%s: unexpected argument '%s' (see unet %s --help)", cmd, a, cmd);
        return false;
    }
    pos[(*np)++] = a;
    return true;
}

bool cli_options_parse(const struct cli_command *cmd, int argc, char **argv, const char **pos,
                       int max_pos, int *n_pos) {
    const char *name = cmd->name;
    for (int k = 0; k < cmd->n_opts; k++)
        if (cmd->opts[k].def && !set_value(name, &cmd->opts[k], cmd->opts[k].def)) return false;
    int np = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_options_usage(stdout, cmd);
            exit(0);
        }
        if (strcmp(a, "--") == 0) { /* the end of the options: the rest is positional */
            for (i++; i < argc; i++)
                if (!positional(name, argv[i], pos, max_pos, &np)) return false;
            break;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (!positional(name, a, pos, max_pos, &np)) return false;
            continue;
        }
        /* --name=value is accepted too. */
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        int k;
        for (k = 0; k < cmd->n_opts; k++)
            if (strlen(cmd->opts[k].name) == len && strncmp(cmd->opts[k].name, a, len) == 0) break;
        if (k == cmd->n_opts) {
            cli_error("%s: unknown option '%.*s' (see unet %s --help)", name, (int)len, a, name);
            return false;
        }
        const struct cli_option *o = &cmd->opts[k];
        if (o->kind == CLI_FLAG && eq) {
            cli_error("%s: %s takes no value", name, o->name);
            return false;
        }
        const char *v = o->kind == CLI_FLAG ? "" : eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!v) {
            cli_error("%s: %s needs a value (%s)", name, o->name, o->arg ? o->arg : "value");
            return false;
        }
        if (!set_value(name, o, v)) return false;
    }
    if (n_pos) *n_pos = np;
    return true;
}
