/* pipeline.h - internal pieces shared by compression (compress.c) and generation (generate.c). */
#ifndef CLARA_PIPELINE_H
#define CLARA_PIPELINE_H

#include "ctx.h"
#include "forward.h"

/* Spec §14.4: rejects text containing a special-token string ("<what> <index> contains ..."). */
clara_status clara_check_text(const clara_model *m, const char *what, size_t index,
                              const char *text, size_t len);

/* One encoder row of spec §7: <ENC><s>text</s> truncated to doc_max_length+3, then the memory
 * ids. Left padding is not materialised (pads are masked keys); `pad` keeps the reference's
 * absolute positions. */
typedef struct {
    clara_ids ids;
    uint32_t len;         /* real tokens before the memory ids */
    uint32_t pad;         /* pad columns the reference puts in front */
    clara_cancel *cancel; /* optional: the document's cancellation (shared by a request's rows) */
} clara_enc_row;

clara_status clara_enc_row_build(const clara_model *m, const clara_text *doc, size_t index,
                                 clara_enc_row *row);
/* Runs rows in batches (one weight read per batch) with adapter `ad`; vectors[i] receives row
 * i's n_mem final-norm states, except for rows cancelled on the way (left as they were). */
clara_status clara_enc_rows_run(clara_ctx *ctx, const clara_enc_row *rows, size_t n,
                                const clara_adapter *ad, float *vectors);
/* The same in passes of at most max_rows rows (a row longer than that goes alone). */
clara_status clara_enc_rows_run_max(clara_ctx *ctx, const clara_enc_row *rows, size_t n,
                                    const clara_adapter *ad, float *vectors, uint32_t max_rows);
/* clara_compress_ex in passes of at most max_rows rows (0 = the default batch). */
clara_status clara_compress_rows(clara_ctx *ctx, const clara_text *docs, size_t n_docs,
                                 float *vectors, uint32_t *n_tokens,
                                 const clara_compress_params *params, uint32_t max_rows);

static inline clara_adapter_set clara_one_adapter(const clara_adapter *a) {
    clara_adapter_set s = {{a}, 1};
    return s;
}

#endif
