/*
 * hex.h - private to libdeta: the value of one hexadecimal digit, either case,
 * for the parsers that read hex (pgoutput.c's WAL positions, cql_values.c's
 * UUIDs and blobs, http.c's percent escapes). trace_context.c keeps its own:
 * the W3C trace context allows lowercase only.
 */
#ifndef DETA_HEX_H
#define DETA_HEX_H

/* 0..15, or -1 when c is not a hex digit. */
static inline int deta_hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
