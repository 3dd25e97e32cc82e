/*
 * progress.c - one progress line on stderr, redrawn in place.
 *
 * On a terminal the line is rewritten with '\r' at most ten times a second; when
 * stderr is a file or a pipe (CI logs, `make demo | tee`), carriage returns would
 * only make noise, so a full line is written every five seconds instead. stdout
 * stays free for the report. Only the demo's main thread draws.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define BAR_WIDTH 30

static double last_draw = -1e9;
static bool line_open;

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void progress_draw(const char *label, size_t done, size_t total, const char *extra) {
    bool tty = isatty(STDERR_FILENO);
    double now = monotonic();
    bool finished = done >= total;
    if (!finished && now - last_draw < (tty ? 0.1 : 5.0))
        return;
    last_draw = now;
    char bar[BAR_WIDTH + 1];
    size_t fill = total ? done * BAR_WIDTH / total : BAR_WIDTH;
    memset(bar, '#', fill);
    memset(bar + fill, '.', BAR_WIDTH - fill);
    bar[BAR_WIDTH] = '\0';
    fprintf(stderr, "%s%-22s [%s] %zu/%zu  %s%s", tty ? "\r" : "", label, bar, done, total,
            extra ? extra : "", tty ? "\033[K" : "\n");
    line_open = tty;
    fflush(stderr);
}

void progress_end(void) {
    if (line_open)
        fputc('\n', stderr);
    line_open = false;
    last_draw = -1e9;
}
