/* main.c — the unet command line (placeholder until the model lands). */
#include "unet.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("unet %s\n", UNET_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: unet --version\n");
    return 2;
}
