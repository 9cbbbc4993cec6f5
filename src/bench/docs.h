/* docs.h - the documents `clara bench` compresses: real text (a JSONL file of passages) or, if
 * none is available, generated sentences, cut at word boundaries and topped up with one-token
 * words so that each document's encoder row (<ENC><s>text</s>, what clara_compress reports as
 * n_tokens) has exactly the target length under the model's own tokenizer. */
#ifndef CLARA_BENCH_DOCS_H
#define CLARA_BENCH_DOCS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clara.h"

/* Used when no --text-file is given and the file exists: the project's passages, found relative
 * to the executable (build/clara or build/asan/clara -> tests/data/...), so a clone of the
 * repository has them. */
#define BENCH_DEFAULT_TEXT_REL "tests/data/wiki-passages-qa.jsonl"

/* The default text file's path (in a static buffer), or NULL when it is not there. */
const char *bench_default_text(void);

typedef struct {
    const char *tokenizer_gguf; /* the model file, or the add-on in two-file mode */
    const char *text_file;      /* NULL: bench_default_text() if there, else generated text */
    bool generated;             /* generated text even if the default file exists */
    size_t n_docs;
    uint32_t target; /* encoder-row tokens per document (text tokens + 3) */
} bench_docs_params;

typedef struct {
    clara_text *docs; /* n documents (text owned here) */
    size_t n;
    uint32_t *tokens;  /* each document's encoder-row length by the tokenizer */
    char *query;       /* a question for the answer benchmark (from the file if it has one) */
    char source[4200]; /* the text file, or "generated" */
} bench_docs;

/* JSONL lines: {"docs": [passage, ...], "question": [q, ...]} (the wiki QA set), {"text": ...}
 * or a JSON string. */
clara_status bench_docs_build(const bench_docs_params *p, bench_docs *out);
void bench_docs_free(bench_docs *d);
/* Writes the documents, one JSON string per line (what `clara tokenize --input-file` and
 * `--docs-file` read), to a temporary name renamed into place. */
clara_status bench_docs_save(const bench_docs *d, const char *path);

#endif
