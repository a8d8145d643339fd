/* main.c — the unet command: dispatch to the subcommands (one file each in src/cli/). */
#include "cli/cli.h"
#include "cli/dist.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* OpenMP threads wait passively unless OMP_WAIT_POLICY says otherwise.  unet's layers are
 * sequences of short parallel loops; where other jobs share the cores, a waiter that spins
 * burns the time slice its partner needs: a 2-thread training step (128x128, batch 2) took
 * 4.7 s spinning against 1.6 s passive on this 2-core machine under load (docs/performance.md).
 * GNU libgomp reads the variable once, in its constructor, before main (and the C library's
 * start-up resets the environment an executable's pre-initialiser could set), so when it is
 * unset unet sets it and starts itself again: one exec, a few milliseconds.  Not under
 * valgrind, which does not follow an exec by default.  LLVM's runtime reads it at its first
 * parallel region: setting it is enough. */
static void wait_passively(char **argv) {
#if defined(_OPENMP) && defined(__linux__)
    if (getenv("OMP_WAIT_POLICY")) return;
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
#if !defined(__clang__)
    execv("/proc/self/exe", argv); /* returns only when it failed: the runtime's default then */
#endif
#endif
    (void)argv;
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} commands[] = {
    {"train", cmd_train, "train a U-Net (or FCN) on a folder of images and masks"},
    {"predict", cmd_predict, "segment images of any size (overlap-tile)"},
    {"eval", cmd_eval, "score predicted masks against the truth (pixel, IoU, Dice, Rand, SEG)"},
    {"info", cmd_info, "architecture, parameters, FLOPs and memory of a model"},
    {"weightmap", cmd_weightmap, "the paper's border weight map of a mask"},
    {"convolutionalize", cmd_convolutionalize, "turn a VGG classifier into an FCN"},
    {"export", cmd_export, "write a model as ONNX or as a bioimage.io model package"},
    {"report", cmd_report, "one HTML page of training curves, settings and evaluations"},
};

static void usage(FILE *f) {
    fprintf(f, "unet %s — U-Net and FCN image segmentation in C\n\nusage: unet <command> [options]\n\n"
               "commands:\n", UNET_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-18s %s\n", commands[i].name, commands[i].what);
    fprintf(f, "\n'unet <command> --help' lists a command's options.\n");
}

int main(int argc, char **argv) {
    wait_passively(argv);
    /* Past a file-size limit (ulimit -f) a write fails with EFBIG and unet reports it, instead
     * of the default SIGXFSZ killing the process in the middle of a run. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("unet %s\n", UNET_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    /* Under mpirun (make MPI=1): the ranks form a group (dist.h, docs/scaling.md). */
    dist_init(&argc, &argv);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return dist_exit(commands[i].fn(argc, argv));
    dist_exit(0);
    cli_error("unknown command '%s' (see unet --help)", argv[1]);
    return CLI_EXIT_USAGE;
}
