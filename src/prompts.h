/* prompts.h - the fixed texts of CLaRa's prompts (spec §8.1, §11). They are code constants in
 * Apple's reference; the converter also writes them into the GGUF (clara.prompt.*) so a model file
 * is self-describing, and the engine reads them from there. */
#ifndef CLARA_PROMPTS_H
#define CLARA_PROMPTS_H

#define CLARA_PROMPT_QA_SYSTEM                                                                     \
    "You are a helpful assistant. Your task is to extract relevant information from provided "     \
    "documents and to answer to questions as briefly as possible."

/* {docs} is replaced by the memory-token block, {question} by the question (spec §8.1). */
#define CLARA_PROMPT_QA_USER "Background:\n{docs}\n\nQuestion:{question}"

#define CLARA_PROMPT_PARAPHRASE_SYSTEM                                                             \
    "You are a helpful assistant. Your task is follow the instructions to paraphrase the "         \
    "background information."

#define CLARA_N_PARAPHRASE_TEMPLATES 13
extern const char *const clara_paraphrase_templates[CLARA_N_PARAPHRASE_TEMPLATES];

#endif
