/* cmd_serve.c - `clara serve` and `clara-server` (the same binary by name): the HTTP service,
 * implemented in server/. */
#include "cli.h"

int srv_main(int argc, char **argv);

int cmd_serve(int argc, char **argv) {
    return srv_main(argc, argv);
}
