/* json.c - the minimal JSON reader for the safetensors header: whitespace, single
 * characters, strings and integers, read from a cursor (RFC 8259, with the limits of
 * docs/checkpoint.md "Validation": no NUL, valid UTF-8, integers only up to 2^53).
 * Objects and arrays are walked by the caller (safetensors.c), which knows the only
 * shapes a header may have. Nothing is allocated; strings are decoded into the caller's
 * buffer or only measured. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

qrt_status qrt_json_fail(qrt_json *j, const char *fmt, ...) {
    char msg[224];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qrt_fail(j->err, QRT_STATUS_FORMAT, 0, "JSON header, byte %zu: %s",
                    (size_t)(j->p - j->begin), msg);
}

void qrt_json_ws(qrt_json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

bool qrt_json_peek(const qrt_json *j, char c) { return j->p < j->end && *j->p == (uint8_t)c; }

qrt_status qrt_json_expect(qrt_json *j, char c, const char *what) {
    if (qrt_json_peek(j, c)) {
        j->p++;
        return QRT_STATUS_OK;
    }
    if (j->p >= j->end) return qrt_json_fail(j, "expected %s, found the end of the header", what);
    if (*j->p == 0) return qrt_json_fail(j, "expected %s, found a NUL byte", what);
    return qrt_json_fail(j, "expected %s, found '%c'", what, *j->p >= 0x20 && *j->p < 0x7f ? *j->p : '?');
}

/* Length of the well-formed UTF-8 sequence at p (2..4), or 0: no overlong forms, no
 * surrogates, nothing above U+10FFFF (RFC 3629). */
static int utf8_seq(const uint8_t *p, const uint8_t *end) {
    uint32_t cp, min;
    int n;
    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        n = 2;
        cp = p[0] & 0x1Fu;
        min = 0x80;
    } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        n = 3;
        cp = p[0] & 0x0Fu;
        min = 0x800;
    } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        n = 4;
        cp = p[0] & 0x07u;
        min = 0x10000;
    } else {
        return 0;
    }
    if (end - p < n) return 0;
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits at j->p (after "\u"). */
static qrt_status hex4(qrt_json *j, uint32_t *cp) {
    if (j->end - j->p < 4) return qrt_json_fail(j, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0) return qrt_json_fail(j, "bad \\u escape (four hex digits expected)");
        v = v << 4 | (uint32_t)h;
    }
    j->p += 4;
    *cp = v;
    return QRT_STATUS_OK;
}

static int utf8_encode(uint32_t cp, uint8_t *b) {
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (uint8_t)(0xC0 | cp >> 6);
        b[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | cp >> 12);
        b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        b[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (uint8_t)(0xF0 | cp >> 18);
    b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    b[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

qrt_status qrt_json_string(qrt_json *j, char *out, size_t cap, size_t *len_out, size_t *newlines) {
    qrt_status st;
    if ((st = qrt_json_expect(j, '"', "a string"))) return st;
    const uint8_t *start = j->p - 1;
    size_t len = 0, nl = 0;
    for (;;) {
        if (j->p >= j->end) {
            j->p = start;
            return qrt_json_fail(j, "unterminated string");
        }
        uint8_t c = *j->p, b[4];
        int n = 1;
        if (c == '"') {
            j->p++;
            break;
        }
        if (c == 0) return qrt_json_fail(j, "NUL byte in the header");
        if (c < 0x20) return qrt_json_fail(j, "raw control character 0x%02x in a string (must be escaped)", c);
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end) return qrt_json_fail(j, "unterminated string");
            c = *j->p++;
            switch (c) {
            case '"': case '\\': case '/': b[0] = c; break;
            case 'b': b[0] = '\b'; break;
            case 'f': b[0] = '\f'; break;
            case 'n': b[0] = '\n'; break;
            case 'r': b[0] = '\r'; break;
            case 't': b[0] = '\t'; break;
            case 'u': {
                uint32_t cp = 0, lo = 0;
                if ((st = hex4(j, &cp))) return st;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return qrt_json_fail(j, "lone low surrogate in a \\u escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                        return qrt_json_fail(j, "high surrogate not followed by a \\u low surrogate");
                    j->p += 2;
                    if ((st = hex4(j, &lo))) return st;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return qrt_json_fail(j, "high surrogate not followed by a low surrogate");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0) return qrt_json_fail(j, "\\u0000 (NUL) in a string");
                n = utf8_encode(cp, b);
                break;
            }
            default:
                j->p--;
                return qrt_json_fail(j, "unknown escape '\\%c'", c >= 0x20 && c < 0x7f ? c : '?');
            }
        } else if (c < 0x80) {
            b[0] = c;
            j->p++;
        } else {
            n = utf8_seq(j->p, j->end);
            if (!n) return qrt_json_fail(j, "invalid UTF-8 in a string");
            memcpy(b, j->p, (size_t)n);
            j->p += n;
        }
        if (b[0] == '\n') nl++;
        if (out)
            for (int i = 0; i < n; i++)
                if (len + (size_t)i + 1 < cap) out[len + (size_t)i] = (char)b[i];
        len += (size_t)n;
    }
    if (out && cap) out[len < cap ? len : cap - 1] = '\0';
    if (len_out) *len_out = len;
    if (newlines) *newlines = nl;
    return QRT_STATUS_OK;
}

qrt_status qrt_json_int(qrt_json *j, int64_t *v) {
    const uint64_t limit = (uint64_t)1 << 53;
    bool neg = qrt_json_peek(j, '-');
    if (neg) j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return qrt_json_fail(j, "expected an integer");
    if (*j->p == '0' && j->end - j->p > 1 && j->p[1] >= '0' && j->p[1] <= '9')
        return qrt_json_fail(j, "number with a leading zero");
    uint64_t x = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        x = x * 10 + (uint64_t)(*j->p++ - '0');
        if (x > limit) return qrt_json_fail(j, "integer beyond 2^53");
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return qrt_json_fail(j, "not an integer (fraction or exponent)");
    *v = neg ? -(int64_t)x : (int64_t)x;
    return QRT_STATUS_OK;
}
