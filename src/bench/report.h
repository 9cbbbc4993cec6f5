/* report.h - `clara bench` output: a table for people, or one JSON document (the keys
 * bench/peer.sh reads: model, weight_type, isa, machine.threads[], results[] with compress[] and
 * answer; other keys may be added). Roofline percentages are computed here from the measured
 * machine limits of the same thread count; without them they are null / "-". */
#ifndef CLARA_BENCH_REPORT_H
#define CLARA_BENCH_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "bench/docs.h"
#include "bench/modelinfo.h"
#include "bench/roofline.h"
#include "bench/run.h"

#define BENCH_MAX_LIST 16

typedef struct {
    int threads;
    bench_compress_result compress[BENCH_MAX_LIST];
    size_t n_compress;
    bool has_answer; /* false: not timed (clara bench --parts compress) */
    bench_answer_result answer;
} bench_thread_result;

typedef struct {
    const char *model;                 /* the file, or "BASE + ADDON" */
    const char *isa;                   /* kernel level in use */
    const clara_backend_info *backend; /* the CPU, its kind and the kernel parameters chosen */
    const bench_model_info *mi;
    const bench_docs *docs;
    size_t answer_docs;
    const bench_roofline *machine; /* one per thread count; n_machine 0 with --no-roofline */
    size_t n_machine;
    const bench_thread_result *res;
    size_t n_res;
    const clara_ctx_backend_info *device; /* where the layers ran (NULL: not known) */
} bench_report;

void bench_report_table(FILE *out, const bench_report *r);
clara_status bench_report_json(FILE *out, const bench_report *r);

#endif
