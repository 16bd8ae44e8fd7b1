/* strbuf.c - the growable string (strbuf.h). */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qat_strbuf_putn(qat_strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void qat_strbuf_puts(qat_strbuf *b, const char *s) { qat_strbuf_putn(b, s, strlen(s)); }

void qat_strbuf_printf(qat_strbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        qat_strbuf_putn(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    qat_strbuf_putn(b, big, (size_t)n);
    free(big);
}

void qat_strbuf_json_string(qat_strbuf *b, const char *s) {
    qat_strbuf_putn(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': qat_strbuf_puts(b, "\\\""); break;
        case '\\': qat_strbuf_puts(b, "\\\\"); break;
        case '\n': qat_strbuf_puts(b, "\\n"); break;
        case '\r': qat_strbuf_puts(b, "\\r"); break;
        case '\t': qat_strbuf_puts(b, "\\t"); break;
        case '\b': qat_strbuf_puts(b, "\\b"); break;
        case '\f': qat_strbuf_puts(b, "\\f"); break;
        default:
            if (*p < 0x20) qat_strbuf_printf(b, "\\u%04x", *p);
            else qat_strbuf_putn(b, (const char *)p, 1);
        }
    }
    qat_strbuf_putn(b, "\"", 1);
}
