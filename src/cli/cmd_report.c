/* cmd_report.c — unet report: one self-contained HTML page for training runs and evaluations
 * (the page is made in report.c; docs/report.md describes it). */
#include "cli/report.h"

int cmd_report(int argc, char **argv) {
    const char *out = NULL;
    const struct cli_option opts[] = {
        {"--out", CLI_STR, &out, "FILE", .help = "the page to write (.html)"},
    };
    const struct cli_command cmd = {"report",
                                    "RUN_OR_EVAL... --out report.html\n\n  RUN_OR_EVAL: a "
                                    "folder (every STEM.run.json, STEM.log.csv, eval.json and\n"
                                    "  NAME.eval.json in it), STEM.run.json, STEM.log.csv, a "
                                    "model file, or the\n  JSON of unet eval --json",
                                    opts, CLI_COUNT(opts)};
    const char *pos[64];
    int npos = 0;
    if (!cli_options_parse(&cmd, argc, argv, pos, 64, &npos)) return CLI_EXIT_USAGE;
    if (!out || npos == 0) {
        cli_error("report: give at least one run or evaluation and --out FILE.html "
                  "(see unet report --help)");
        return CLI_EXIT_USAGE;
    }
    if (!report_check_out(out)) return CLI_EXIT_USAGE;
    return report_write(out, pos, npos);
}
