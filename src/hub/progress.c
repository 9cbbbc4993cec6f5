/* progress.c - a pull's progress for people: on a terminal, one line per file in flight and a
 * total line (bytes, rate, ETA) redrawn in place; elsewhere (logs), one plain line every few
 * seconds and at each change of phase. */
#include <string.h>

#include "hub/hub.h"

void hub_format_bytes(uint64_t n, char *buf, size_t len) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 5) v /= 1024, u++;
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
}

static void format_eta(double s, char *buf, size_t len) {
    if (s < 0) {
        snprintf(buf, len, "--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, len, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, len, "%lds", t);
}

/* "downloading 1.2 GiB / 4.4 GiB (27%), 35.2 MiB/s, ETA 1m32s, 3/7 files" */
static void total_line(const hub_progress *p, char *buf, size_t len) {
    char d[32], t[32], r[32], eta[32];
    hub_format_bytes(p->done, d, sizeof d);
    hub_format_bytes(p->total, t, sizeof t);
    hub_format_bytes((uint64_t)p->rate, r, sizeof r);
    format_eta(p->eta_s, eta, sizeof eta);
    double pct = p->total ? 100.0 * (double)p->done / (double)p->total : 100.0;
    snprintf(buf, len, "%s %s / %s (%.0f%%), %s/s, ETA %s, %d/%d files", hub_phase_name(p->phase),
             d, t, pct, r, eta, p->files_done, p->files_total);
}

static void draw_tty(FILE *out, const hub_progress *p, hub_render_state *st) {
    if (st->lines_drawn) fprintf(out, "\033[%dA", st->lines_drawn); /* back to the first line */
    int lines = 0;
    char line[512];
    for (int i = 0; i < p->n_active; i++) {
        const hub_file_progress *f = &p->active[i];
        char d[32], t[32];
        hub_format_bytes(f->done, d, sizeof d);
        hub_format_bytes(f->total, t, sizeof t);
        double pct = f->total ? 100.0 * (double)f->done / (double)f->total : 100.0;
        fprintf(out, "\033[2K  %-48.48s %10s / %-10s %3.0f%%\n", f->name, d, t, pct);
        lines++;
    }
    total_line(p, line, sizeof line);
    fprintf(out, "\033[2K%s\n", line);
    lines++;
    /* fewer lines than last time: clear the ones left below */
    for (int i = lines; i < st->lines_drawn; i++) fprintf(out, "\033[2K\n");
    if (st->lines_drawn > lines) fprintf(out, "\033[%dA", st->lines_drawn - lines);
    st->lines_drawn = lines;
    fflush(out);
}

void hub_progress_render(FILE *out, bool tty, double every_s, const hub_progress *p,
                         hub_render_state *st) {
    if (tty) {
        /* the other phases are the pull's log lines: the drawn lines stay above them */
        if (p->phase == HUB_PHASE_DOWNLOADING)
            draw_tty(out, p, st);
        else
            st->lines_drawn = 0;
        return;
    }
    /* plain lines: the downloads' figures (the pull's log says when each phase starts), the
     * first at once, then every every_s seconds, and the last when all bytes are in */
    if (p->phase != HUB_PHASE_DOWNLOADING) return;
    bool first = !st->started, last = p->done == p->total && st->last_phase != HUB_PHASE_DONE;
    if (!first && !last && p->elapsed_s - st->last_line_s < every_s) return;
    st->started = true;
    st->last_line_s = p->elapsed_s;
    if (last) st->last_phase = HUB_PHASE_DONE;
    char line[512];
    total_line(p, line, sizeof line);
    fprintf(out, "clara: %s\n", line);
    fflush(out);
}
