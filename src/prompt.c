/* prompt.c - building the chat prompt string exactly as the reference does and tokenizing it:
 *   "<s> [INST] " + SYSTEM + "\n\n" + USER + " [/INST]"
 * USER = "Background:\n" + DOCS + "\n\nQuestion:" + question (QA) or a paraphrase template with
 * {docs} = DOCS; then every ":\ " (colon, backslash, space) in USER becomes ": " (spec §8.1).
 * DOCS is the memory block "<MEM0>…<MEM{n-1}><SEP>" repeated once per document. A conversation
 * (clara_chat) puts its earlier turns before that last user turn as the chat template lays them
 * out (the system text in the first user turn); without one the prompt is the reference's. */
#include "prompt.h"

#include <stdlib.h>
#include <string.h>

#include "base/status.h"

typedef struct {
    char *s;
    size_t n, cap;
} strbuf;

static clara_status sb_add(strbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) return clara_fail(CLARA_ERR_NOMEM, "out of memory building the prompt");
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return CLARA_OK;
}

static clara_status sb_str(strbuf *b, const char *s) {
    return sb_add(b, s, strlen(s));
}

/* Appends `tmpl` with "{docs}" and "{question}" substituted. */
static clara_status fill_template(strbuf *b, const char *tmpl, const strbuf *docs, const char *q,
                                  size_t q_len) {
    clara_status s = CLARA_OK;
    while (*tmpl && s == CLARA_OK) {
        if (strncmp(tmpl, "{docs}", 6) == 0) {
            s = sb_add(b, docs->s ? docs->s : "", docs->n);
            tmpl += 6;
        } else if (q && strncmp(tmpl, "{question}", 10) == 0) {
            s = sb_add(b, q, q_len);
            tmpl += 10;
        } else {
            s = sb_add(b, tmpl++, 1);
        }
    }
    return s;
}

/* In-place ":\ " -> ": ". */
static void replace_colon_backslash(strbuf *b) {
    size_t w = 0;
    for (size_t r = 0; r < b->n; r++) {
        if (b->s[r] == ':' && r + 2 < b->n && b->s[r + 1] == '\\' && b->s[r + 2] == ' ') {
            b->s[w++] = ':';
            b->s[w++] = ' ';
            r += 2;
            continue;
        }
        b->s[w++] = b->s[r];
    }
    b->n = w;
    if (b->s) b->s[w] = '\0';
}

static clara_status docs_block(const clara_model *m, size_t k, strbuf *docs) {
    clara_status s = CLARA_OK;
    for (size_t j = 0; j < k && s == CLARA_OK; j++) {
        for (uint32_t i = 0; i < m->meta.n_mem && s == CLARA_OK; i++)
            s = sb_str(docs, clara_tokenizer_piece(m->tok, m->meta.mem_ids[i]));
        if (s == CLARA_OK) s = sb_str(docs, clara_tokenizer_piece(m->tok, m->meta.sep_id));
    }
    return s;
}

static clara_status find_first_mem(const clara_model *m, size_t k, clara_prompt *out) {
    for (size_t i = 0; i < out->ids.n; i++)
        if (out->ids.ids[i] == m->meta.mem_ids[0]) {
            out->first_mem = (uint32_t)i;
            /* every slot row must lie inside the prompt */
            if (k && clara_prompt_slot_row(m, out, k - 1, m->meta.n_mem - 1) >= out->ids.n) break;
            return CLARA_OK;
        }
    if (k == 0) return CLARA_OK;
    return clara_fail(CLARA_ERR_FORMAT, "the prompt's memory slots could not be located");
}

/* " [INST] " + (system + "\n\n" on the first user turn) + content + " [/INST]": a user turn as
 * the chat template writes it (spec §8.2). */
static clara_status user_turn(strbuf *all, const char *system, size_t system_len, bool *first,
                              const char *content, size_t len) {
    clara_status s = sb_str(all, " [INST] ");
    if (s == CLARA_OK && *first && system) s = sb_add(all, system, system_len);
    if (s == CLARA_OK && *first && system) s = sb_str(all, "\n\n");
    *first = false;
    if (s == CLARA_OK) s = sb_add(all, content ? content : "", len);
    if (s == CLARA_OK) s = sb_str(all, " [/INST]");
    return s;
}

/* The earlier turns: user turns as above, assistant turns " " + content + "</s>". */
static clara_status earlier_turns(const clara_model *m, strbuf *all, const clara_chat *c,
                                  const char *system, size_t system_len, bool *first) {
    clara_status s = CLARA_OK;
    for (size_t i = 0; c && i < c->n_turns && s == CLARA_OK; i++) {
        const clara_text *t = &c->turns[i];
        if (i % 2 == 0) {
            s = user_turn(all, system, system_len, first, t->text, t->len);
            continue;
        }
        s = sb_str(all, " ");
        if (s == CLARA_OK) s = sb_add(all, t->text ? t->text : "", t->len);
        if (s == CLARA_OK) s = sb_str(all, clara_tokenizer_piece(m->tok, m->meta.eos_id));
    }
    return s;
}

clara_status clara_prompt_build(const clara_model *m, const char *question, size_t question_len,
                                int para, size_t k, const clara_chat *chat, clara_prompt *out) {
    memset(out, 0, sizeof *out);
    strbuf docs = {0}, user = {0}, all = {0};
    bool plain = chat && chat->plain;
    clara_status s = plain ? CLARA_OK : docs_block(m, k, &docs);
    const char *system = question ? m->meta.qa_system : m->meta.para_system;
    size_t system_len = strlen(system);
    if (chat && chat->system) {
        system = chat->system;
        system_len = chat->system_len;
    } else if (plain) {
        system = NULL; /* a plain chat has no system text unless given */
    }
    const char *tmpl = question ? m->meta.qa_user : m->meta.para_templates[para];
    if (s == CLARA_OK && plain) s = sb_add(&user, question, question_len);
    if (s == CLARA_OK && !plain) s = fill_template(&user, tmpl, &docs, question, question_len);
    if (s == CLARA_OK && !plain) replace_colon_backslash(&user);
    bool first = true;
    if (s == CLARA_OK) s = sb_str(&all, clara_tokenizer_piece(m->tok, m->meta.bos_id));
    if (s == CLARA_OK) s = earlier_turns(m, &all, chat, system, system_len, &first);
    if (s == CLARA_OK) s = user_turn(&all, system, system_len, &first, user.s, user.n);
    if (s == CLARA_OK) s = clara_tokenizer_encode(m->tok, all.s, all.n, &out->ids);
    if (s == CLARA_OK) s = find_first_mem(m, plain ? 0 : k, out);
    free(docs.s);
    free(user.s);
    free(all.s);
    if (s != CLARA_OK) clara_ids_free(&out->ids);
    return s;
}

uint32_t clara_prompt_slot_row(const clara_model *m, const clara_prompt *p, size_t j, uint32_t i) {
    uint32_t slot = m->meta.n_mem + (m->meta.sep ? 1 : 0);
    return p->first_mem + (uint32_t)j * slot + i;
}
