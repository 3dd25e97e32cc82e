/*
 * fuzz_cql_frame.c - libFuzzer target of the CQL codec's decoding side
 * (lib/src/cql_codec.c) and of the getters over what it decodes
 * (lib/src/cql_values.c). Built and run by tests/fuzz/run.sh.
 *
 * The input is one response frame as it would come off the socket: its first 9
 * bytes are the header, checked by cql_header_decode against a bound; the rest
 * is the body, handed to cql_response_decode in a heap buffer of exactly the
 * length the header announces (or what the input has, when shorter: then the
 * header is patched to say so), so that AddressSanitizer sees a single byte read
 * past it. A Rows result is then read through every getter at every cell, and
 * one past the last row and column.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cql_codec.h"

/* A bound of its own, larger than any input the fuzzer makes: the size check
 * is the header's, exercised by inputs whose length field is large. */
#define FUZZ_MAX_BODY (1u << 20)

static void read_cells(const deta_cql_result_t *r) {
    char err[256], text[64], uuid[37];
    int32_t i32;
    int64_t i64;
    bool b, null;
    for (size_t row = 0; row <= r->nrows && row < 64; row++) {
        for (size_t col = 0; col <= r->ncolumns && col < 64; col++) {
            (void)deta_cql_cell(r, row, col);
            (void)deta_cql_get_text(r, row, col, text, sizeof text, &null, err, sizeof err);
            (void)deta_cql_get_text(r, row, col, text, 1, NULL, err, sizeof err);
            (void)deta_cql_get_int(r, row, col, &i32, &null, err, sizeof err);
            (void)deta_cql_get_bigint(r, row, col, &i64, &null, err, sizeof err);
            (void)deta_cql_get_bool(r, row, col, &b, &null, err, sizeof err);
            (void)deta_cql_get_uuid(r, row, col, uuid, &null, err, sizeof err);
        }
    }
    for (size_t col = 0; r->columns && col < r->ncolumns && col < 64; col++)
        (void)deta_cql_column_index(r, r->columns[col].name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < CQL_HEADER_LEN)
        return 0;
    uint8_t h[CQL_HEADER_LEN];
    memcpy(h, data, CQL_HEADER_LEN);
    char err[256];
    cql_header_t hdr;
    if (!cql_header_decode(h, FUZZ_MAX_BODY, &hdr, err, sizeof err))
        return 0;
    size_t have = size - CQL_HEADER_LEN;
    if (hdr.length > have)
        hdr.length = (uint32_t)have; /* as if the connection had read what there is */
    uint8_t *body = NULL;
    if (hdr.length) {
        body = malloc(hdr.length);
        if (!body)
            return 0;
        memcpy(body, data + CQL_HEADER_LEN, hdr.length);
    }
    cql_response_t r;
    if (!cql_response_decode(&hdr, body, &r, err, sizeof err))
        return 0; /* the decoder freed body */
    if (r.opcode == CQL_OP_RESULT)
        read_cells(&r.result);
    cql_response_clear(&r);
    return 0;
}
