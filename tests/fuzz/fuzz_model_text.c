/* fuzz_model_text.c - the model description language (layers/model_file.h). Promise:
 * an accepted text round-trips: the text qat writes for the model parses to a model
 * whose text is the same. Models are parsed, not built (no weights allocated). */
#include "fuzz_util.h"

#include "layers/model_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    qat_model *m = NULL, *m2 = NULL;
    qat_error err = {0};
    if (qat_model_parse(text, "fuzz.model", &m, &err) == QAT_STATUS_OK) {
        char *t1 = qat_model_to_text(m);
        if (t1) {
            qat_status s = qat_model_parse(t1, "round-trip", &m2, &err);
            FUZZ_CHECK(s == QAT_STATUS_OK, "the written text does not parse: %s\n%s", err.msg, t1);
            char *t2 = qat_model_to_text(m2);
            FUZZ_CHECK(t2 && strcmp(t1, t2) == 0, "the text does not round-trip:\n%s\n---\n%s", t1, t2 ? t2 : "");
            free(t2);
        }
        free(t1);
    }
    qat_model_free(m);
    qat_model_free(m2);
    free(text);
    return 0;
}
