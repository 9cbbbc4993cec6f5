/* clara.h - the one public header of the clara-server engine.
 *
 * CLaRa (Apple, arXiv 2511.18659) is Mistral-7B-Instruct-v0.2 plus LoRA adapters that compress
 * documents into a few "memory token" vectors and answer questions from them. This header is the
 * stable C interface: opaque objects, status codes, and clara_last_error() for the message that
 * explains the last failure on the calling thread.
 */
#ifndef CLARA_H
#define CLARA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLARA_VERSION "0.1.0"

/* Every fallible library function returns one of these and records a message (what failed, in
 * which file or field) that clara_last_error() returns on the same thread. */
typedef enum {
    CLARA_OK = 0,
    CLARA_ERR_IO = 1,     /* a file could not be opened, read, written or mapped */
    CLARA_ERR_FORMAT = 2, /* input is malformed or corrupt (the SQLITE_CORRUPT of this project) */
    CLARA_ERR_UNSUPPORTED = 3, /* well-formed but uses something we do not implement */
    CLARA_ERR_NOMEM = 4,       /* allocation failed or a size exceeds a safety limit */
    CLARA_ERR_INVALID_ARG = 5, /* the caller passed something invalid */
    CLARA_ERR_NOT_FOUND = 6,   /* a required key, tensor or file is missing */
    CLARA_ERR_CANCELLED = 7,   /* the caller's cancellation callback asked to stop */
} clara_status;

/* Tensor element types. The numeric values are GGUF's (ggml_type) so they are written to files
 * as-is; the quantized block types are listed so the type table has room for them. */
typedef enum {
    CLARA_TYPE_F32 = 0,
    CLARA_TYPE_F16 = 1,
    CLARA_TYPE_Q4_0 = 2,
    CLARA_TYPE_Q4_1 = 3,
    CLARA_TYPE_Q5_0 = 6,
    CLARA_TYPE_Q5_1 = 7,
    CLARA_TYPE_Q8_0 = 8,
    CLARA_TYPE_Q8_1 = 9,
    CLARA_TYPE_Q2_K = 10,
    CLARA_TYPE_Q3_K = 11,
    CLARA_TYPE_Q4_K = 12,
    CLARA_TYPE_Q5_K = 13,
    CLARA_TYPE_Q6_K = 14,
    CLARA_TYPE_Q8_K = 15,
    CLARA_TYPE_I8 = 24,
    CLARA_TYPE_I16 = 25,
    CLARA_TYPE_I32 = 26,
    CLARA_TYPE_I64 = 27,
    CLARA_TYPE_F64 = 28,
    CLARA_TYPE_BF16 = 30,
    CLARA_TYPE_COUNT = 31, /* one past ggml's ids; CLaRa's own types below start at 64 */
    /* CLaRa extension (docs/FORMAT.md): 32 unsigned 8-bit codes with an f16 scale and an integer
     * zero point, w = d * (q - z); the exact image of 8-bit asymmetric GPTQ groups */
    CLARA_TYPE_Q8_Z = 64,
} clara_type;

/* Message describing the last error on this thread ("" if none). Valid until the next failing
 * call on the same thread. */
const char *clara_last_error(void);

/* Short name of a status code, e.g. "format error". */
const char *clara_status_name(clara_status st);

/* ---- models and contexts ------------------------------------------------------------------ */

typedef struct clara_model clara_model; /* weights (mmapped), vocabulary, CLaRa settings */
typedef struct clara_ctx clara_ctx;     /* per-thread-of-use state: buffers, KV cache, threads */

/* Which adapters of adapters.pth are used (spec §6). HF reproduces AutoModel.from_pretrained
 * (what the Python server runs); ALL is pure_inference=True (Apple's evaluation script). */
typedef enum {
    CLARA_ADAPTER_POLICY_HF = 0,
    CLARA_ADAPTER_POLICY_ALL = 1,
} clara_adapter_policy;

typedef struct {
    clara_adapter_policy adapter_policy;
} clara_model_params;

/* Where a context's transformer layers run (docs/VULKAN.md). */
typedef enum {
    CLARA_BACKEND_AUTO = 0,   /* a GPU through Vulkan when there is one, else the CPU (never a
                                 CPU Vulkan device such as lavapipe) */
    CLARA_BACKEND_CPU = 1,    /* the CPU only */
    CLARA_BACKEND_VULKAN = 2, /* a Vulkan device, lavapipe included; none is an error */
    CLARA_BACKEND_GPU = 3,    /* a GPU through Vulkan ("cuda", "mps", "gpu"): never a CPU
                                 Vulkan device; none is an error */
} clara_backend_choice;

typedef struct {
    int n_threads; /* 0 = number of physical cores */
    clara_backend_choice backend;
    /* Layers on the device (the last ones): -1 = as many as fit in its memory (the default of
     * clara_ctx_default_params), 0 = none (the CPU only), N = N of them (all when N >= the
     * model's layers; too little memory is an error naming the need and the heap). */
    int gpu_layers;
} clara_ctx_params;

/* Parses a backend name: "auto", "cpu", "vulkan", and the Python server's "cuda" and "mps" (and
 * "gpu"), which mean a GPU (CLARA_BACKEND_GPU): through Vulkan here, never lavapipe.
 * CLARA_ERR_INVALID_ARG naming the choices otherwise. */
clara_status clara_backend_parse(const char *name, clara_backend_choice *out);

/* Whether `backend` can be had on this machine, without loading a model (a server checks at
 * startup): for vulkan a device is opened and named in device[cap] with its type ("llvmpipe
 * (cpu device)"); for auto the GPU it would take, or "" when it would run on the CPU; for cpu
 * "". Errors: vulkan with no Vulkan device, gpu with no GPU among them (CLARA_ERR_NOT_FOUND), or
 * either in a build without the backend (CLARA_ERR_UNSUPPORTED), with the message saying so. */
clara_status clara_backend_probe(clara_backend_choice backend, char *device, size_t cap);

clara_model_params clara_model_default_params(void);
clara_ctx_params clara_ctx_default_params(void);

clara_status clara_model_load(const char *path, const clara_model_params *params,
                              clara_model **out);
/* Two-file mode: a base transformer GGUF in llama.cpp's layout (any Mistral-7B-Instruct-v0.2
 * GGUF, e.g. a community Q4_K_M) plus a CLaRa add-on written by `clara convert --addon-only`
 * (adapters, resized tables, vocabulary, CLaRa settings). The pair is checked to match. */
clara_status clara_model_load_pair(const char *base_path, const char *clara_path,
                                   const clara_model_params *params, clara_model **out);
void clara_model_free(clara_model *model);

uint32_t clara_model_n_embd(const clara_model *model);
uint32_t clara_model_n_mem(const clara_model *model);
uint32_t clara_model_n_vocab(const clara_model *model);
uint32_t clara_model_n_ctx(const clara_model *model);
uint32_t clara_model_generation_top_k(const clara_model *model);
/* True when retrieval (a query-reasoner adapter) is available under the model's policy. */
int clara_model_can_retrieve(const clara_model *model);

/* Fails when the backend asked for cannot be had: `vulkan` with no Vulkan device or in a build
 * without the Vulkan backend, or too little device memory for gpu_layers. */
clara_status clara_ctx_create(clara_model *model, const clara_ctx_params *params, clara_ctx **out);
void clara_ctx_free(clara_ctx *ctx);

/* Where a context's layers run, for reports (the CLI's --json, `clara bench`, /status). */
typedef struct {
    char backend[16];       /* "cpu" or "vulkan" */
    char device[256];       /* the Vulkan device's name ("" on the CPU) */
    char device_type[16];   /* "discrete", "integrated", "virtual", "cpu" (lavapipe), "other" */
    uint64_t device_memory; /* its largest device-local heap, bytes */
    uint32_t gpu_layers, n_layer; /* layers on the device, of the model's */
    uint64_t bytes_used;   /* device memory the context holds now: weights, KV mirrors, scratch */
    char note[160];        /* why the context runs where it does ("" when as asked) */
    uint64_t cpu_repacked; /* bytes of the model's weights the CPU kernels read from a copy made
                              at load in their own order (q4_0 / q8_0 on AVX-512; 0: none, as
                              with CLARA_REPACK=0) */
} clara_ctx_backend_info;
void clara_ctx_backend(const clara_ctx *ctx, clara_ctx_backend_info *out);

/* ---- the CLaRa pipeline (spec §7-§11) ------------------------------------------------------ */

typedef struct {
    const char *text;
    size_t len;
} clara_text;

/* Compresses documents into n_mem vectors each: vectors[n_docs][n_mem][n_embd]. n_tokens[i] is
 * the length of document i's encoder row before padding (<ENC><s>text</s>, at most
 * doc_max_length + 3). Documents containing special-token strings are rejected (spec §14.4). */
clara_status clara_compress(clara_ctx *ctx, const clara_text *docs, size_t n_docs, float *vectors,
                            uint32_t *n_tokens);

/* Cancellation of a clara_compress_ex call, per document (a server compresses the documents of
 * several requests in one call, and one request's client may leave). */
typedef struct {
    /* Optional. Polled on the calling thread for each document still being compressed, between
     * transformer layers (several times per layer for long passes). Once it returns true for a
     * document, that document leaves the running pass and is not asked about again; a pass whose
     * documents are all cancelled stops there. It should stay true once true, so that the caller
     * can tell afterwards which documents were dropped. */
    bool (*cancelled)(void *arg, size_t doc);
    void *cancel_arg;
} clara_compress_params;

/* clara_compress with cancellation. Returns CLARA_ERR_CANCELLED when any document was cancelled;
 * the vectors of the others are written all the same (bit-identical to an uncancelled call), and
 * n_tokens of every document. params may be NULL (= clara_compress). */
clara_status clara_compress_ex(clara_ctx *ctx, const clara_text *docs, size_t n_docs,
                               float *vectors, uint32_t *n_tokens,
                               const clara_compress_params *params);

typedef enum {
    CLARA_TASK_ANSWER = 0,   /* QA prompt (spec §8) from documents or vectors */
    CLARA_TASK_RETRIEVE = 1, /* E2E: rank documents by the query vector, answer from top-k (§10) */
    CLARA_TASK_PARAPHRASE = 2, /* paraphrase prompt (§11) */
    /* the conversation as the chat template lays it out, the question as the last user turn as
     * it is (no Background block, no documents): what an OpenAI client without context gets */
    CLARA_TASK_CHAT = 3,
} clara_task;

/* Why a request stopped generating. */
typedef enum {
    CLARA_FINISH_EOS = 0,    /* the model chose </s> */
    CLARA_FINISH_LENGTH = 1, /* max_new_tokens were generated */
    CLARA_FINISH_CALLER = 2, /* on_token returned false (a stop sequence, ...) */
} clara_finish;

typedef struct {
    clara_task task;
    const char *query; /* answer/retrieve */
    size_t query_len;
    const clara_text *docs; /* documents to compress, or NULL when `vectors` are given */
    size_t n_docs;
    const float *vectors; /* [n_docs][n_mem][n_embd] precomputed by clara_compress */
    uint32_t max_new_tokens;
    uint32_t top_k;          /* retrieve: 0 = the model's generation_top_k */
    int paraphrase_template; /* 0..12 */
    float *first_logits;     /* optional out [n_vocab]: logits of the first generated step */
    int ignore_eos; /* 1: keep generating after </s> until max_new_tokens (benchmarks); default 0 */
    /* Optional cancellation (llama.cpp's abort callback, per request): polled on the calling
     * thread between transformer layers (several times per layer for a long prompt) and between
     * decoding steps. Once it returns true, the request leaves the running batch (status
     * CLARA_ERR_CANCELLED, its KV slot is no longer extended) and is not asked about again; the
     * other requests go on and get exactly the ids they get without it. */
    bool (*cancelled)(void *arg);
    void *cancel_arg;
    /* Sampling. temperature 0 (the default) is the reference's greedy decoding (spec §9). Above 0
     * the next id is drawn from softmax(logits / temperature) restricted to the sample_top_k most
     * likely ids (0 = all) and then to the fewest most likely ids whose probability reaches top_p
     * (1 = all; ties by lower id), with a generator seeded by `seed`: the same seed, inputs and
     * model give the same ids, alone or in any batch. */
    float temperature, top_p;
    uint32_t sample_top_k;
    uint64_t seed;
    /* Optional streaming: called on the calling thread each time an id is chosen, with the
     * request's ids so far (the new one last). Returning false ends the request there
     * (CLARA_FINISH_CALLER; its result holds the ids up to and including that one). */
    bool (*on_token)(void *arg, const int32_t *ids, size_t n_ids);
    void *token_arg;
    /* Optional chat turns before the question: user, assistant, user, ... (an even count), laid
     * out by the chat template (spec §8.2), each assistant turn ended by </s>; the question is the
     * last user turn. `system` replaces the model's system text when not NULL (for CHAT: there is
     * none unless given); it goes in the first user turn, as the template puts it. */
    const clara_text *turns;
    size_t n_turns;
    const char *system;
    size_t system_len;
} clara_gen_params;

typedef struct {
    char *text;      /* decoded answer (special tokens skipped), NUL-terminated */
    size_t text_len; /* its bytes: a decoded <0x00> puts a NUL byte inside the text */
    int32_t *ids;    /* generated ids, including a final </s> if generated */
    size_t n_ids;
    float *top2_gaps; /* per generated step: largest minus second-largest logit */
    uint32_t prompt_tokens;
    uint32_t *top_k; /* retrieve: indices of the selected documents in rank order */
    float *scores;   /* retrieve: cosine score of every document, input order */
    size_t k, n_scores;
    char *error; /* clara_generate_batch: why this request failed (NULL on success) */
    /* wall-clock time of this request's phases (shared passes count for every request in them) */
    double compress_ms, prefill_ms, decode_ms;
    clara_finish finish;
} clara_gen_result;

clara_gen_params clara_gen_default_params(void);
clara_status clara_generate(clara_ctx *ctx, const clara_gen_params *params, clara_gen_result *out);
/* Several requests at once: their documents are compressed in shared passes and their decoding
 * steps run together (one forward pass per step for all). Each result equals what
 * clara_generate gives for that request alone; statuses[i] (and results[i].error) tell whether
 * request i succeeded. Returns non-OK only when the whole batch failed. */
clara_status clara_generate_batch(clara_ctx *ctx, const clara_gen_params *params, size_t n,
                                  clara_gen_result *results, clara_status *statuses);
void clara_gen_result_free(clara_gen_result *r);

/* ---- continuous batching ------------------------------------------------------------------- */

/* Requests in flight on one context (llama.cpp's slots, vLLM's running batch): a request added at
 * any time has its documents compressed, its prompt prefilled and then joins the decoding steps
 * of the others at the next step; one that finishes leaves at once. Each request gets exactly what
 * clara_generate gives it alone (rows of a batch never see each other). Work is done in pieces —
 * compression and prefill passes of at most piece_rows rows — and while a long pass runs, the
 * decoding requests still get a step whenever yield_ms have passed since their last one (between
 * the pass's layers), so one large compression does not stall every running stream. */
typedef struct clara_batch clara_batch;

typedef struct {
    /* rows of one compression or prefill pass while requests decode (fewer when a layer of it
     * would take longer than yield_ms at the pace measured; more when one request's documents
     * need them and a layer still keeps that pace: they are not cut by a decoding step);
     * 0 = as many as fit (2,200) */
    uint32_t piece_rows;
    /* During a long pass, the decoding requests step between its layers so that they go at most
     * about this long without one (the next layer's time is estimated by the last one's); 0 =
     * never. */
    float yield_ms;
} clara_batch_params;

typedef struct {
    void *user;          /* as given to clara_batch_add */
    clara_status status; /* CLARA_OK, or why it failed (result.error says more) */
} clara_batch_done;

clara_batch_params clara_batch_default_params(void);
/* One batch per context, and the context is the batch's while it exists. */
clara_status clara_batch_create(clara_ctx *ctx, const clara_batch_params *params,
                                clara_batch **out);
/* Frees the batch; requests still in it are dropped (their results freed). */
void clara_batch_free(clara_batch *b);
/* Adds a request. params (and what it points to) and result must stay valid until the request is
 * returned by clara_batch_step. A request that is invalid is returned, failed, by the next step. */
clara_status clara_batch_add(clara_batch *b, const clara_gen_params *params,
                             clara_gen_result *result, void *user);
/* One round: a piece of compression or prefill work (if any request needs it), then one decoding
 * step of every decoding request. Requests that finished are written to done (at most max_done;
 * the rest wait for the next call); their results are complete (text decoded, times set). */
clara_status clara_batch_step(clara_batch *b, clara_batch_done *done, size_t max_done,
                              size_t *n_done);
/* clara_compress_ex on the batch's context while its requests decode: in pieces, with their
 * decoding steps between the layers as during the batch's own passes (the vectors are the same
 * bits). Requests that finish meanwhile are returned by the next clara_batch_step. */
clara_status clara_batch_compress(clara_batch *b, const clara_text *docs, size_t n_docs,
                                  float *vectors, uint32_t *n_tokens,
                                  const clara_compress_params *params);
/* Requests in the batch (not yet returned), and of those the ones decoding. */
size_t clara_batch_size(const clara_batch *b);
size_t clara_batch_decoding(const clara_batch *b);

/* Text of generated ids as the reference decodes it (special ids skipped, one leading space
 * removed): what clara_gen_result.text holds for those ids. *text is malloc'd; *len its bytes
 * (may be NULL; the text can hold NUL bytes, where an id decodes to U+0000). */
clara_status clara_detokenize(const clara_model *model, const int32_t *ids, size_t n, char **text,
                              size_t *len);

/* The part of clara_detokenize's text that no later id can change, for streaming: the text of the
 * ids up to the last one that is neither a byte-fallback piece nor special. A run of byte pieces
 * decodes as a whole (its bytes if they are valid UTF-8, else one U+FFFD per byte, as the
 * reference's ByteFallback), so the next byte can rewrite what the run decoded to so far: "#"
 * from <0x23> becomes "\uFFFD\uFFFD" when <0x80> follows. The text of more ids always extends
 * this one. */
clara_status clara_detokenize_stable(const clara_model *model, const int32_t *ids, size_t n,
                                     char **text, size_t *len);

/* ---- memory-store support: chunks, query vectors, model fingerprints ----------------------- */

/* The encoder's doc_max_length (256 for the released checkpoints): a document of at most this
 * many text tokens is compressed whole; a longer one is cut (the reference's behaviour). */
uint32_t clara_model_doc_max_length(const clara_model *model);

/* Number of text tokens of `text` as the encoder sees it (without <ENC>, <s> and </s>). */
clara_status clara_count_tokens(const clara_model *model, const char *text, size_t len,
                                uint32_t *n_tokens);

typedef struct {
    size_t start, len; /* byte range of the chunk in the text */
    uint32_t n_tokens; /* its text tokens when encoded on its own */
} clara_chunk;

/* Splits text into consecutive chunks of at most max_tokens text tokens each (0 = the model's
 * doc_max_length), so that compressing each chunk as its own document cuts nothing. Chunks end
 * after whitespace (a word is split only when it alone exceeds max_tokens, then at a UTF-8
 * character boundary); the chunks cover the text exactly, in order, and whitespace-only text
 * gives no chunk. *chunks is malloc'd (free()); *n_chunks its count. max_chunks > 0 bounds the
 * count: more fail with CLARA_ERR_NOMEM naming the limit. */
clara_status clara_split_text(const clara_model *model, const char *text, size_t len,
                              uint32_t max_tokens, size_t max_chunks, clara_chunk **chunks,
                              size_t *n_chunks);

/* Compresses queries with the query-reasoner adapter (E2E retrieval, the same vectors
 * CLARA_TASK_RETRIEVE ranks with): vectors[n][n_mem][n_embd]. CLARA_ERR_UNSUPPORTED when the
 * model has no query reasoner. */
clara_status clara_compress_queries(clara_ctx *ctx, const clara_text *queries, size_t n,
                                    float *vectors);

/* A fingerprint of everything a document's vectors depend on: the engine's numerics version, the
 * model's shape and CLaRa settings, every tensor's name, type and shape, and a SHA-256 over the
 * adapters' bytes and samples of every other tensor's bytes (docs/STORE.md). 64 lowercase hex
 * digits and a NUL. Vectors stored under one fingerprint are never mixed with another's. */
#define CLARA_FINGERPRINT_LEN 64
clara_status clara_model_fingerprint(const clara_model *model, char out[CLARA_FINGERPRINT_LEN + 1]);

/* The compute backend the engine's kernels run on, for reports (`clara bench`, the server's
 * /status): general enough for any backend (today "cpu"; a GPU backend names its device the same
 * way). Strings are NUL-terminated; numbers a backend does not know are 0. */
#define CLARA_BACKEND_MAX_PARAMS 16
typedef struct {
    char name[32];   /* the parameter, e.g. "pf_bytes" */
    char env[32];    /* the environment variable that forces it, e.g. "CLARA_PF_BYTES" */
    long long value; /* the value in use */
    char source[96]; /* where it came from: "default for zen4", "environment (NAME=value)" */
    char what[96];   /* what it controls, one line */
} clara_backend_param;

typedef struct {
    char backend[16];  /* "cpu" */
    char isa[16];      /* the kernel level in use: "ref", "avx2", "avx512" (CLARA_ISA forces it) */
    char device[64];   /* the device's own name (a CPU's brand string) */
    char vendor[16];   /* "GenuineIntel", "AuthenticAMD", ... */
    char kind[24];     /* what the parameters were chosen for: "zen4", "zen5", "intel-avx512",
                          "intel-avx2", "other" */
    char kind_why[64]; /* the facts the kind was chosen from */
    unsigned family, model;           /* cpuid display family and model */
    unsigned l1d_kib, l2_kib, l3_kib; /* cache sizes (per instance, as cpuid reports them) */
    int cores;                        /* physical cores */
    bool amx;                         /* the q4_0/q8_0 decode GEMV runs on AMX tiles */
    bool wide_units_halved;           /* 512-bit operations run as two 256-bit halves (Zen 4) */
    clara_backend_param params[CLARA_BACKEND_MAX_PARAMS];
    int n_params;
} clara_backend_info;

/* Fills *out with the backend in use and the kernel parameters chosen for it (detected once per
 * process; the CLARA_* overrides read then). */
void clara_backend_describe(clara_backend_info *out);

/* The kernel level in use ("ref", "avx2", "avx512"): the short form of clara_backend_describe. */
const char *clara_backend_isa(void);

#ifdef __cplusplus
}
#endif

#endif /* CLARA_H */
