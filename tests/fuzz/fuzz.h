/*
 * fuzz.h - what the libFuzzer targets of tests/fuzz share: cutting one input into
 * the several texts a parser takes, each copied into a heap buffer of exactly its
 * length plus the NUL, so that AddressSanitizer reports a read of one byte past
 * any of them, and a check that stops the run with the rule that failed.
 *
 * An input holding several texts separates them with NUL bytes (a text that
 * reaches a parser as a C string cannot hold one anyway). fuzz_split gives up to
 * max texts; those the input does not reach are NULL, so a target can use
 * "absent" as well as "empty".
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops the run (libFuzzer keeps the input as crash-*) naming the rule broken. */
#define FUZZ_CHECK(cond)                                                                         \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "fuzz: %s:%d: does not hold: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

/* A copy of n bytes with a NUL after them, in a buffer of exactly n + 1 bytes. */
static inline char *fuzz_text(const uint8_t *data, size_t n) {
    char *s = malloc(n + 1);
    if (!s)
        abort();
    if (n)
        memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

/* Cuts data at its NUL bytes into at most max texts (the last one takes the rest,
 * NULs included, cut at its first NUL); texts[i] is NULL past the input's end.
 * Returns how many there are; free them with fuzz_free. */
static inline int fuzz_split(const uint8_t *data, size_t size, char **texts, int max) {
    int n = 0;
    size_t at = 0;
    for (int i = 0; i < max; i++)
        texts[i] = NULL;
    while (n < max && (at < size || (n == 0 && size == 0))) {
        const uint8_t *nul = memchr(data + at, '\0', size - at);
        size_t len = nul ? (size_t)(nul - (data + at)) : size - at;
        texts[n++] = fuzz_text(data + at, len);
        at += len + 1;
        if (!nul)
            break;
    }
    return n;
}

static inline void fuzz_free(char **texts, int n) {
    for (int i = 0; i < n; i++)
        free(texts[i]);
}

#endif
