/* backend.c - the public description of the compute backend (clara.h: clara_backend_describe,
 * clara_backend_isa), so that the server and the CLI report it without reaching into src/cpu/. */
#include <stdio.h>
#include <string.h>

#include "clara.h"
#include "cpu/dispatch.h"
#include "cpu/params.h"

_Static_assert(CPU_PARAM_COUNT <= CLARA_BACKEND_MAX_PARAMS, "room for every kernel parameter");

const char *clara_backend_isa(void) {
    return clara_isa_name(clara_isa_active());
}

void clara_backend_describe(clara_backend_info *out) {
    const cpu_info *c = cpu_info_get();
    const cpu_params *p = cpu_params_get();
    memset(out, 0, sizeof *out);
    snprintf(out->backend, sizeof out->backend, "cpu");
    snprintf(out->isa, sizeof out->isa, "%s", clara_backend_isa());
    snprintf(out->device, sizeof out->device, "%s", c->name);
    snprintf(out->vendor, sizeof out->vendor, "%s", c->vendor);
    snprintf(out->kind, sizeof out->kind, "%s", cpu_kind_name(c->kind));
    snprintf(out->kind_why, sizeof out->kind_why, "%s", c->kind_why);
    out->family = c->family, out->model = c->model;
    out->l1d_kib = c->l1d_kib, out->l2_kib = c->l2_kib, out->l3_kib = c->l3_kib;
    out->cores = c->cores;
    out->amx = clara_amx_active();
    out->wide_units_halved = c->avx512_256bit_units;
    for (int i = 0; i < CPU_PARAM_COUNT; i++) {
        clara_backend_param *q = &out->params[i];
        const cpu_param_desc *d = &cpu_param_table[i];
        snprintf(q->name, sizeof q->name, "%s", d->name);
        snprintf(q->env, sizeof q->env, "%s", d->env);
        q->value = cpu_param_value(p, i);
        snprintf(q->source, sizeof q->source, "%s", cpu_param_source(i));
        snprintf(q->what, sizeof q->what, "%s", d->what);
    }
    out->n_params = CPU_PARAM_COUNT;
}
