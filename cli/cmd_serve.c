/* cmd_serve.c - `clara-server`: the HTTP service arrives with the server issue; until then the
 * program says so plainly rather than pretending. */
#include <stdio.h>

#include "cli.h"

int cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "clara-server: the HTTP server is not implemented in this version yet; "
                    "available now: clara convert, clara info\n");
    return 1;
}
