/* cmd_pull.c - `clara pull MODEL[:SUBFOLDER]`, `clara list` and `clara rm MODEL`: the model
 * cache (src/hub/). Ctrl-C during downloads stops them and keeps the partial files (the same
 * command resumes); during the conversion it ends the process, removing the half-written file. */
#include <cJSON.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/outfile.h"
#include "cli.h"
#include "hub/hub.h"

static atomic_int g_cancel;
static atomic_int g_phase; /* hub_phase of the pull in progress */

static void on_interrupt(int sig) {
    (void)sig;
    /* a second Ctrl-C, or one during the conversion (which has no stopping point), ends now */
    if (atomic_load(&g_cancel) || atomic_load(&g_phase) >= HUB_PHASE_CONVERTING) {
        const char *tmp = clara_outfile_current_tmp();
        if (tmp) unlink(tmp);
        _exit(130);
    }
    atomic_store(&g_cancel, 1);
}

static void pull_usage(FILE *out) {
    fprintf(
        out,
        "usage: clara pull MODEL[:SUBFOLDER] [--type T] [--full] [--base-gguf REPO/FILE]\n"
        "                  [--jobs N] [--force] [--quiet]\n"
        "\n"
        "Downloads a CLaRa model from the Hugging Face Hub into the model cache and\n"
        "converts it, e.g. `clara pull apple/CLaRa-7B-Instruct` (sub-folder compression-16);\n"
        "then `clara-server --model apple/CLaRa-7B-Instruct` serves it.\n"
        "  --type T        q4_k_m (default), q4_0, q5_0, q5_k_m, q6_k, q8_0; with --full also\n"
        "                  f16, bf16, f32, q4_1, q5_1\n"
        "  (light route, the default) the CLaRa sub-folder plus a community GGUF of\n"
        "                  Mistral-7B-Instruct-v0.2 (TheBloke/Mistral-7B-Instruct-v0.2-GGUF,\n"
        "                  ~4.4 GB for q4_k_m), served in two-file mode; no gated repository\n"
        "  --full          the base safetensors (mistralai/Mistral-7B-Instruct-v0.2, ~14.5 GB,\n"
        "                  gated: accept its license and set HF_TOKEN) converted and quantized\n"
        "                  here into one file\n"
        "  --base-gguf R/F the base GGUF to use instead: repository R, file F\n"
        "  --jobs N        files downloaded at once (default 4)\n"
        "  --force         pull again even when the cache has the model as asked\n"
        "  --quiet         no progress display\n"
        "\n"
        "Environment: CLARA_CACHE_DIR (default ~/.cache/clara-server), HF_ENDPOINT (default\n"
        "https://huggingface.co), HF_TOKEN (else the file `huggingface-cli login` writes),\n"
        "HF_HUB_OFFLINE=1 (no network: the cache only), HF_HUB_DOWNLOAD_TIMEOUT (seconds a\n"
        "download may stall, default 10), CLARA_PULL_RETRIES (tries per request, default 6).\n"
        "Interrupted pulls resume; every file is checked (size, sha256) before it is used.\n");
}

typedef struct {
    bool tty, quiet;
    hub_render_state st;
} pull_view;

static void on_progress(const hub_progress *p, void *arg) {
    pull_view *v = arg;
    atomic_store(&g_phase, (int)p->phase);
    if (!v->quiet) hub_progress_render(stderr, v->tty, 5.0, p, &v->st);
}

static int parse_pull(int argc, char **argv, hub_pull_params *p, bool *quiet) {
    static const struct option opts[] = {
        {"type", required_argument, 0, 't'},
        {"full", no_argument, 0, 'F'},
        {"base-gguf", required_argument, 0, 'g'},
        {"jobs", required_argument, 0, 'j'},
        {"force", no_argument, 0, 'f'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't':
            p->type = optarg;
            break;
        case 'F':
            p->full = true;
            break;
        case 'g':
            p->base_gguf = optarg;
            break;
        case 'j': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 16) {
                fprintf(stderr, "clara pull: --jobs takes 1 to 16, not '%s'\n", optarg);
                return 2;
            }
            p->jobs = (int)n;
            break;
        }
        case 'f':
            p->force = true;
            break;
        case 'q':
            *quiet = true;
            break;
        case 'h':
            pull_usage(stdout);
            return -1;
        default:
            pull_usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "clara pull: give one MODEL, e.g. apple/CLaRa-7B-Instruct\n");
        pull_usage(stderr);
        return 2;
    }
    if (p->full && p->base_gguf) {
        fprintf(stderr, "clara pull: --base-gguf is for the light route, not --full\n");
        return 2;
    }
    p->name = argv[optind];
    return 0;
}

int cmd_pull(int argc, char **argv) {
    hub_pull_params p = hub_pull_default_params();
    bool quiet = false;
    int rc = parse_pull(argc, argv, &p, &quiet);
    if (rc) return rc < 0 ? 0 : rc;
    pull_view v = {isatty(STDERR_FILENO) != 0, quiet, {0}};
    atomic_store(&g_cancel, 0);
    atomic_store(&g_phase, HUB_PHASE_RESOLVING);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt; /* no SA_RESTART: blocking calls return at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    p.cancel = &g_cancel;
    p.progress = on_progress;
    p.progress_arg = &v;
    p.log = quiet ? NULL : stderr;
    clara_status s = hub_pull(&p);
    if (s == CLARA_ERR_CANCELLED) {
        fprintf(stderr, "clara pull: interrupted; partial downloads are kept: run the same "
                        "command again to resume\n");
        return 130;
    }
    if (s != CLARA_OK) {
        fprintf(stderr, "clara pull: error: %s\n", clara_last_error());
        return 1;
    }
    return 0;
}

int cmd_list(int argc, char **argv) {
    bool json = argc == 2 && strcmp(argv[1], "--json") == 0;
    if (argc > 1 && !json) {
        bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
        fprintf(help ? stdout : stderr,
                "usage: clara list [--json]\n\nThe models in the cache (CLARA_CACHE_DIR): name, "
                "route, type, size, when pulled.\n");
        return help ? 0 : 2;
    }
    hub_entry *e;
    size_t n;
    if (hub_list(&e, &n) != CLARA_OK) {
        fprintf(stderr, "clara list: error: %s\n", clara_last_error());
        return 1;
    }
    if (json) {
        cJSON *a = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", e[i].name);
            cJSON_AddStringToObject(o, "route", e[i].route);
            cJSON_AddStringToObject(o, "type", e[i].type);
            cJSON_AddNumberToObject(o, "bytes", (double)e[i].bytes);
            cJSON_AddStringToObject(o, "pulled_at", e[i].pulled_at);
            cJSON_AddStringToObject(o, "revision", e[i].revision);
            cJSON_AddItemToArray(a, o);
        }
        char *text = cJSON_PrintUnformatted(a);
        cJSON_Delete(a);
        hub_entries_free(e, n);
        if (!text) return 1;
        printf("%s\n", text);
        free(text);
        return 0;
    }
    printf("%-48s %-6s %-7s %10s  %s\n", "NAME", "ROUTE", "TYPE", "SIZE", "PULLED");
    for (size_t i = 0; i < n; i++) {
        char sz[32];
        hub_format_bytes(e[i].bytes, sz, sizeof sz);
        printf("%-48s %-6s %-7s %10s  %s\n", e[i].name, e[i].route, e[i].type, sz, e[i].pulled_at);
    }
    hub_entries_free(e, n);
    return 0;
}

int cmd_rm(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        bool help = argc >= 2;
        fprintf(help ? stdout : stderr,
                "usage: clara rm MODEL[:SUBFOLDER] ...\n\nRemoves pulled models from the cache, "
                "with their downloads and partial files.\n");
        return help ? 0 : 2;
    }
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        if (hub_rm(argv[i], NULL) != CLARA_OK) {
            fprintf(stderr, "clara rm: error: %s\n", clara_last_error());
            rc = 1;
        } else {
            printf("removed %s\n", argv[i]);
        }
    }
    return rc;
}
