/* test_options.c — the CLI's option tables (src/cli/options.c): defaults parsed into their
 * variables before argv, every kind of value, the ranges (both ends, one end), choices,
 * --name=value, `--` and positional arguments, the one-line errors with their exact words,
 * and the --help lines with their defaults.  The parser is compiled in with what cli.c needs
 * (the CLI is not a library; the process group is the single-process one); its messages go to
 * stderr, read back from a file. */
#include "harness.h"

#include "../src/cli/cli.c"
#include "../src/cli/dist.c"
#include "../src/cli/options.c"
#include "../src/dist/single.c"

static char err[4096];

/* Parses the words of line (split at spaces; argv[0], argv[1] = "unet", "test") against cmd;
 * the messages printed are in err. */
static bool parse(const struct cli_command *cmd, const char *line, const char **pos, int max_pos,
                  int *n_pos) {
    char buf[512], *argv[32];
    int argc = 0;
    snprintf(buf, sizeof buf, "unet test %s", line);
    for (char *t = strtok(buf, " "); t && argc < 31; t = strtok(NULL, " ")) argv[argc++] = t;
    argv[argc] = NULL;
    fflush(stderr);
    FILE *f = tmpfile();
    int saved = dup(2);
    dup2(fileno(f), 2);
    bool ok = cli_options_parse(cmd, argc, argv, pos, max_pos, n_pos);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(err, 1, sizeof err - 1, f);
    err[n] = 0;
    fclose(f);
    return ok;
}

static int i_val, choice;
static float f_val;
static double d_val;
static const char *s_val;
static bool flag;
static const struct cli_option OPTS[] = {
    {"--int", CLI_INT, &i_val, "N", .help = "an integer", .def = "7", .lo = 2, .hi = 64},
    {"--float", CLI_FLOAT, &f_val, "F", .help = "a float", .def = "0.5", .lo = 0, .hi = HUGE_VAL},
    {"--double", CLI_DOUBLE, &d_val, "D", .help = "a double", .lo = -HUGE_VAL, .hi = 1},
    {"--str", CLI_STR, &s_val, "TEXT", .help = "a string", .def = "abc"},
    {"--choice", CLI_CHOICE, &choice, "one|two|three", .help = "a word", .def = "two"},
    {"--flag", CLI_FLAG, &flag, NULL, .help = "a flag"},
};
static const struct cli_command CMD = {"test", "[options] [FILE]", OPTS, CLI_COUNT(OPTS)};

TEST(defaults_then_values) {
    d_val = 42, flag = false;
    CHECK(parse(&CMD, "", NULL, 0, NULL));
    CHECK_EQ(i_val, 7);
    CHECK_EQ(f_val, 0.5f);
    CHECK_EQ(d_val, 42.0); /* no default: the variable keeps its value */
    CHECK(strcmp(s_val, "abc") == 0);
    CHECK_EQ(choice, 1);
    CHECK(!flag);
    CHECK_EQ(err[0], 0);
    CHECK(parse(&CMD, "--int 64 --float=1e3 --double -2.5 --str x=y --choice three --flag",
                NULL, 0, NULL));
    CHECK_EQ(i_val, 64);
    CHECK_EQ(f_val, 1000.0f);
    CHECK_EQ(d_val, -2.5);
    CHECK(strcmp(s_val, "x=y") == 0);
    CHECK_EQ(choice, 2);
    CHECK(flag);
    /* Each parse starts from the defaults again. */
    CHECK(parse(&CMD, "--choice one", NULL, 0, NULL));
    CHECK_EQ(i_val, 7);
    CHECK_EQ(choice, 0);
}

TEST(positional_and_double_dash) {
    const char *pos[2];
    int n = -1;
    CHECK(parse(&CMD, "a --flag b", pos, 2, &n));
    CHECK_EQ(n, 2);
    CHECK(strcmp(pos[0], "a") == 0 && strcmp(pos[1], "b") == 0);
    CHECK(parse(&CMD, "-- --flag", pos, 2, &n));
    CHECK_EQ(n, 1);
    CHECK(strcmp(pos[0], "--flag") == 0);
    CHECK(!parse(&CMD, "a b c", pos, 2, &n));
    CHECK(strcmp(err, "unet: error: test: unexpected argument 'c' (see unet test --help)\n") == 0);
    CHECK(!parse(&CMD, "a", NULL, 0, NULL));
    CHECK_STR_CONTAINS(err, "unexpected argument 'a'");
}

/* Every refusal: one line, its exact words. */
TEST(errors_name_the_option) {
    static const char *cases[][2] = {
        {"--bogus", "test: unknown option '--bogus' (see unet test --help)"},
        {"--int=3 --bog=1", "test: unknown option '--bog' (see unet test --help)"},
        {"--int", "test: --int needs a value (N)"},
        {"--int abc", "test: --int: 'abc' is not a valid integer"},
        {"--int 3.5", "test: --int: '3.5' is not a valid integer"},
        {"--int 99999999999", "test: --int: '99999999999' is not a valid integer"},
        {"--int 1", "test: --int must be 2..64"},
        {"--int=65", "test: --int must be 2..64"},
        {"--float -0.1", "test: --float must be >= 0"},
        {"--float 1e39", "test: --float: '1e39' is not a valid number"},
        {"--double 1.5", "test: --double must be <= 1"},
        {"--double nan", "test: --double: 'nan' is not a valid number"},
        {"--double", "test: --double needs a value (D)"},
        {"--choice four", "--choice: 'four' (expected one, two or three)"},
        {"--choice=", "--choice: '' (expected one, two or three)"},
        {"--flag=1", "test: --flag takes no value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[256];
        snprintf(want, sizeof want, "unet: error: %s\n", cases[i][1]);
        bool ok = parse(&CMD, cases[i][0], NULL, 0, NULL);
        if (ok || strcmp(err, want) != 0)
            printf("  '%s': %s, got: %s", cases[i][0], ok ? "accepted" : "refused", err);
        CHECK(!ok);
        CHECK(strcmp(err, want) == 0);
    }
    /* The range's ends are in it. */
    CHECK(parse(&CMD, "--int 2 --float 0 --double 1", NULL, 0, NULL));
    CHECK(parse(&CMD, "--int 64", NULL, 0, NULL));
    /* A bad default is the table's bug, reported like a bad value. */
    static const struct cli_option bad[] = {
        {"--n", CLI_INT, &i_val, "N", .help = "n", .def = "100", .lo = 1, .hi = 10}};
    static const struct cli_command bad_cmd = {"bad", "", bad, 1};
    CHECK(!parse(&bad_cmd, "", NULL, 0, NULL));
    CHECK_STR_CONTAINS(err, "bad: --n must be 1..10");
}

TEST(help_lists_defaults) {
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    cli_options_usage(f, &CMD);
    fclose(f);
    CHECK_STR_CONTAINS(text, "usage: unet test [options] [FILE]\n\noptions:\n");
    CHECK_STR_CONTAINS(text, "\n  --int N                  an integer (7)\n");
    CHECK_STR_CONTAINS(text, "\n  --double D               a double\n");
    CHECK_STR_CONTAINS(text, "\n  --choice one|two|three   a word (two)\n");
    CHECK_STR_CONTAINS(text, "\n  --flag                   a flag\n");
    free(text);
}

/* train and predict's older rows (cli.h) go through the same parser: no defaults, no ranges. */
TEST(older_rows_same_parser) {
    int n = 5;
    bool q = false;
    const struct cli_opt old[] = {{"--n", CLI_INT, &n, "N", "n (5)"},
                                  {"--quiet", CLI_FLAG, &q, NULL, "quiet"}};
    char a0[] = "unet", a1[] = "train", a2[] = "--n", a3[] = "-3", a4[] = "--quiet";
    char *argv[] = {a0, a1, a2, a3, a4, NULL};
    CHECK(cli_parse("train", "", 5, argv, 2, old, 2, NULL, 0, NULL));
    CHECK_EQ(n, -3);
    CHECK(q);
}

int main(void) {
    RUN(defaults_then_values);
    RUN(positional_and_double_dash);
    RUN(errors_name_the_option);
    RUN(help_lists_defaults);
    RUN(older_rows_same_parser);
    return harness_finish();
}
