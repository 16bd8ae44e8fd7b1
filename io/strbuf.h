/* strbuf.h - a growable, NUL-terminated string for the writers of file formats (a JSON
 * header, a graph text, C source) and for error messages that list several problems.
 *
 *     qat_strbuf b = {0};
 *     qat_strbuf_puts(&b, "{");
 *     qat_strbuf_json_string(&b, name);          // "name", escaped
 *     qat_strbuf_printf(&b, ":%d}", 3);
 *     if (b.oom) { out of memory }
 *     ... use b.p (NULL until something was added), b.len ...
 *     free(b.p);
 *
 * An allocation failure sets `oom` and makes every later call a no-op, so a writer checks
 * once at the end instead of after every piece.
 */
#ifndef QAT_STRBUF_H
#define QAT_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct qat_strbuf {
    char *p;
    size_t len, cap;
    bool oom;
} qat_strbuf;

void qat_strbuf_putn(qat_strbuf *b, const char *s, size_t n);
void qat_strbuf_puts(qat_strbuf *b, const char *s);
void qat_strbuf_printf(qat_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (RFC 8259 section 7): quote, backslash and control characters
 * escaped; every other byte copied (the caller checks that s is valid UTF-8). */
void qat_strbuf_json_string(qat_strbuf *b, const char *s);

#endif
