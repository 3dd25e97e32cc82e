/*
 * trace_context.c - the W3C Trace Context headers, traceparent and tracestate
 * (see deta/trace.h). Pure: no allocation, no global state, so that the fuzz
 * target (tests/fuzz/fuzz_trace_context.c) builds it alone.
 *
 * traceparent = version "-" trace-id "-" parent-id "-" trace-flags, lowercase
 * hex of 2, 32, 16 and 2 digits. Version ff is invalid; version 00 is exactly 55
 * characters; a later version may be longer, with a '-' after the first 55, and
 * is read as version 00 (the specification's forward compatibility). All-zero
 * trace or parent ids are invalid. Of the flags only "sampled" is kept: we pass
 * on what we understand.
 *
 * tracestate = up to 32 list members, comma-separated, blanks (space, tab)
 * around them allowed and empty members skipped; a member is key "=" value:
 *   key   = lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")
 *         | (lcalpha / DIGIT) 0*240(same) "@" lcalpha 0*13(same)
 *   value = 0*255(chr) nblk-chr, chr = %x20-7E except "," and "="; nblk-chr
 *           the same without space
 * A key twice, a malformed member, more than 32 members, or more than
 * DETA_TRACESTATE_MAX bytes once cleaned: the whole header is dropped (the
 * specification lets a vendor discard tracestate it cannot parse, and the trace
 * goes on without it).
 */
#include "deta/trace.h"

#include <string.h>

#define TRACESTATE_MAX_MEMBERS 32

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase too: the specification says lowercase */
}

/* n bytes from 2n lowercase hex digits; false on any other character. */
static bool unhex(const char *s, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

void deta_trace_hex(const uint8_t *bytes, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

bool deta_traceparent_parse(const char *s, size_t len, deta_trace_ctx_t *out) {
    out->valid = false;
    out->state[0] = '\0';
    if (!s || len < DETA_TRACEPARENT_LEN)
        return false;
    uint8_t version, flags;
    if (!unhex(s, &version, 1) || version == 0xff)
        return false;
    if (version == 0 ? len != DETA_TRACEPARENT_LEN
                     : len > DETA_TRACEPARENT_LEN && s[DETA_TRACEPARENT_LEN] != '-')
        return false;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return false;
    if (!unhex(s + 3, out->trace_id, 16) || !unhex(s + 36, out->span_id, 8) ||
        !unhex(s + 53, &flags, 1))
        return false;
    if (all_zero(out->trace_id, 16) || all_zero(out->span_id, 8))
        return false;
    out->flags = flags & DETA_TRACE_FLAG_SAMPLED;
    out->valid = true;
    return true;
}

void deta_traceparent_format(const deta_trace_ctx_t *ctx, char out[DETA_TRACEPARENT_LEN + 1]) {
    memcpy(out, "00-", 3);
    deta_trace_hex(ctx->trace_id, 16, out + 3);
    out[35] = '-';
    deta_trace_hex(ctx->span_id, 8, out + 36);
    out[52] = '-';
    deta_trace_hex(&ctx->flags, 1, out + 53);
}

/* ---- tracestate ---- */

static bool lcalpha(char c) { return c >= 'a' && c <= 'z'; }
static bool key_char(char c) {
    return lcalpha(c) || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '*' || c == '/';
}
static bool blank(char c) { return c == ' ' || c == '\t'; }

/* A key of n bytes by the grammar at the top. */
static bool valid_key(const char *k, size_t n) {
    const char *at = memchr(k, '@', n);
    if (!at) { /* a simple key */
        if (n < 1 || n > 256 || !lcalpha(k[0]))
            return false;
        for (size_t i = 1; i < n; i++)
            if (!key_char(k[i]))
                return false;
        return true;
    }
    size_t tenant = (size_t)(at - k), system = n - tenant - 1;
    if (tenant < 1 || tenant > 241 || system < 1 || system > 14 || !lcalpha(at[1]))
        return false;
    if (!(lcalpha(k[0]) || (k[0] >= '0' && k[0] <= '9')))
        return false;
    for (size_t i = 1; i < n; i++)
        if (i != tenant && !key_char(k[i]))
            return false;
    return true;
}

static bool valid_value(const char *v, size_t n) {
    if (n < 1 || n > 256 || v[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x20 || v[i] > 0x7e || v[i] == ',' || v[i] == '=')
            return false;
    return true;
}

bool deta_tracestate_clean(const char *s, size_t len, char *out, size_t outsize) {
    if (outsize)
        out[0] = '\0';
    if (!s || outsize <= DETA_TRACESTATE_MAX)
        return false;
    struct {
        const char *key;
        size_t keylen;
    } seen[TRACESTATE_MAX_MEMBERS];
    size_t nseen = 0, used = 0;
    size_t i = 0;
    while (i <= len) {
        size_t start = i;
        while (i < len && s[i] != ',')
            i++;
        size_t a = start, b = i; /* the member is s[a..b) once trimmed */
        while (a < b && blank(s[a]))
            a++;
        while (b > a && blank(s[b - 1]))
            b--;
        i++; /* past the comma (or the end) */
        if (a == b)
            continue; /* empty members are allowed, and skipped */
        const char *eq = memchr(s + a, '=', b - a);
        if (!eq || nseen == TRACESTATE_MAX_MEMBERS)
            goto invalid;
        size_t keylen = (size_t)(eq - (s + a)), vallen = b - a - keylen - 1;
        if (!valid_key(s + a, keylen) || !valid_value(eq + 1, vallen))
            goto invalid;
        for (size_t k = 0; k < nseen; k++)
            if (seen[k].keylen == keylen && memcmp(seen[k].key, s + a, keylen) == 0)
                goto invalid;
        seen[nseen].key = s + a;
        seen[nseen].keylen = keylen;
        nseen++;
        size_t need = (used ? 1 : 0) + (b - a);
        if (used + need > DETA_TRACESTATE_MAX)
            goto invalid;
        if (used)
            out[used++] = ',';
        memcpy(out + used, s + a, b - a);
        used += b - a;
        out[used] = '\0';
    }
    return used > 0;
invalid:
    out[0] = '\0';
    return false;
}

bool deta_trace_ctx_from_headers(const char *traceparent, const char *tracestate,
                                 deta_trace_ctx_t *ctx) {
    if (!traceparent || !deta_traceparent_parse(traceparent, strlen(traceparent), ctx))
        return false;
    if (tracestate)
        deta_tracestate_clean(tracestate, strlen(tracestate), ctx->state, sizeof ctx->state);
    return true;
}
