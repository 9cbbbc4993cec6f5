/* cmd_stubs.c - TEMPORARY during bring-up; replaced by the real commands. */
#include <stdio.h>

#include "cli.h"

int cmd_convert(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "clara convert: not built yet\n");
    return 1;
}
int cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "clara info: not built yet\n");
    return 1;
}
int cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "clara-server: the HTTP server is not part of this build yet\n");
    return 1;
}
