/* prompt.h - the decoder prompts of spec §8 (QA) and §11 (paraphrase) as token ids, with the
 * positions of the memory slots that document vectors overwrite (§8.4). */
#ifndef CLARA_PROMPT_H
#define CLARA_PROMPT_H

#include "model.h"

typedef struct {
    clara_ids ids;
    uint32_t first_mem; /* index of the first memory token */
} clara_prompt;

/* A conversation around the prompt (clara_gen_params: turns, system; CLARA_TASK_CHAT). */
typedef struct {
    const char *system; /* NULL: the model's system text (QA, paraphrase), none when plain */
    size_t system_len;
    const clara_text *turns; /* earlier turns: user, assistant, ... (even count) */
    size_t n_turns;
    bool plain; /* the last user turn is the question as it is: no Background block, k = 0 */
} clara_chat;

/* QA prompt for k documents (question = NULL for paraphrase with template index `para`), laid
 * out with the chat's turns and system text (chat may be NULL: the reference's prompt). */
clara_status clara_prompt_build(const clara_model *m, const char *question, size_t question_len,
                                int para, size_t k, const clara_chat *chat, clara_prompt *out);

/* Row of the prompt that receives vector `i` of document `j` (spec §8.4, including the
 * bug-compatible layout when sep is false). */
uint32_t clara_prompt_slot_row(const clara_model *m, const clara_prompt *p, size_t j, uint32_t i);

#endif
