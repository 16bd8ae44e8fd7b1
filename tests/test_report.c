/* test_report.c - qat report (cli/report.c), judged by a real browser.
 *
 * The reference CNN trained briefly (2,000 images, one epoch), then QAT w4a4 with PACT from
 * it with --report: the report file is self-contained (no script, no external address),
 * under 2 MB, and holds every section; headless Chromium (Debian's chromium, which
 * scripts/bootstrap.sh installs: a missing browser fails the test, it does not skip)
 * renders it without a console message or a failed load, its rendered DOM has the figures,
 * and it takes a screenshot (into the build tree; with QAT_UPDATE_DOCS=1 into
 * docs/images/report.png, the one the docs show). Then qat report after the fact: on a
 * run directory, on a float checkpoint, and its refusals.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char dir[64];
static char out[4 << 20];

static int qat(const char *args) { return test_run_cli(dir, QAT_CLI_PATH, out, sizeof out, args); }

/* Under the sanitizers (QAT_TEST_QUICK) the model trains on fewer images. */
#ifdef QAT_TEST_QUICK
#define SAMPLES "--train-samples 1000 --test-samples 400"
#define SENS "--sens-samples 150"
#else
#define SAMPLES "--train-samples 2000 --test-samples 1000"
#define SENS "--sens-samples 300"
#endif

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/qat-report-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

/* Runs chromium on the file; returns its stdout+stderr in out. */
static int chromium(const char *args, const char *file) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && HOME=%s %s --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run "
             "--enable-logging=stderr --v=0 %s file://%s/%s 2>&1",
             dir, dir, QAT_CHROMIUM, args, dir, file);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = '\0';
    return pclose(p);
}

static void check_sections(const char *html, size_t len) {
    assert_true(len < 2u << 20); /* under 2 MB */
    const char *ids[] = {"id=\"accuracy-table\"", "id=\"confusion-table\"", "id=\"loss-curve\"",
                         "id=\"accuracy-curve\"", "id=\"lr-curve\"", "id=\"quant-params\"", "id=\"weights-0\"",
                         "id=\"activations-0\"", "id=\"weights-11\"", "id=\"sensitivity-chart\"",
                         "id=\"model-table\"", "int8 runtime (integer-only)", "pact_alpha"};
    for (size_t k = 0; k < sizeof ids / sizeof *ids; k++)
        if (!strstr(html, ids[k])) fail_msg("the report has no %s", ids[k]);
    /* self-contained: no script, no address outside the file (the images are data: URIs) */
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "http://"));
    assert_null(strstr(html, "https://"));
    assert_null(strstr(html, "src=\"file"));
    assert_true(count(html, "<svg") >= 12);
}

static void test_report_in_browser(void **state) {
    (void)state;
    if (qat("train --model cnn " SAMPLES " --epochs 1 --out f.st --quiet") != 0) fail_msg("%s", out);
    if (qat("train --from f.st --quant w4a4,pact " SAMPLES " --epochs 2 --out q.st --report run") != 0)
        fail_msg("%s", out);
    assert_non_null(strstr(out, "report run/report.html"));
    char path[256];
    snprintf(path, sizeof path, "%s/run/report.html", dir);
    size_t len = 0;
    char *html = test_read_file(path, &len);
    check_sections(html, len);
    assert_true(count(html, "class=\"disagree\"") >= 1); /* 4 bits: the models disagree somewhere */
    free(html);

    /* the browser: no console message, no failed load; the rendered DOM has the figures */
    int st = chromium("--dump-dom", "run/report.html");
    if (st != 0) fail_msg("chromium failed (%d; run scripts/bootstrap.sh to install it): %s", st, out);
    const char *bad[] = {"CONSOLE", "Uncaught", "Failed to load", "net::ERR", "Refused to"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++)
        if (strstr(out, bad[k])) fail_msg("chromium reports '%s':\n%s", bad[k], out);
    assert_non_null(strstr(out, "id=\"sensitivity-chart\""));
    assert_true(count(out, "<svg") >= 12);
    assert_true(count(out, "<img") >= 1);

    /* the screenshot */
    const char *update = getenv("QAT_UPDATE_DOCS");
    char shot[512], args[700];
    if (update && !strcmp(update, "1")) snprintf(shot, sizeof shot, "%s/docs/images/report.png", QAT_SOURCE_DIR);
    else snprintf(shot, sizeof shot, "%s/report.png", dir);
    snprintf(args, sizeof args, "--window-size=1100,2600 --screenshot=%s", shot);
    st = chromium(args, "run/report.html");
    if (st != 0) fail_msg("chromium --screenshot failed: %s", out);
    struct stat sb;
    assert_int_equal(stat(shot, &sb), 0);
    assert_true(sb.st_size > 50000); /* a real page, not a blank one */
}

static void test_report_after_the_fact(void **state) {
    (void)state;
    /* a run directory: its newest checkpoint (q.st is newer than f.st) */
    if (qat("report . --out again.html --test-samples 300 --sens-samples 0 --quiet") != 0) fail_msg("%s", out);
    char path[256];
    snprintf(path, sizeof path, "%s/again.html", dir);
    size_t len = 0;
    char *html = test_read_file(path, &len);
    assert_non_null(strstr(html, "<code>./q.st</code>"));
    assert_non_null(strstr(html, "Not measured"));
    free(html);
    /* a float checkpoint: no quantization, its own sensitivity */
    if (qat("report f.st --out float.html --test-samples 300 " SENS " --quiet") != 0) fail_msg("%s", out);
    snprintf(path, sizeof path, "%s/float.html", dir);
    html = test_read_file(path, &len);
    assert_non_null(strstr(html, "float (not quantized)"));
    assert_non_null(strstr(html, "id=\"sensitivity-chart\""));
    assert_null(strstr(html, "class=\"disagree\""));
    free(html);
    /* refusals: no --out, a missing checkpoint, a directory without checkpoints, an int8 file */
    assert_int_not_equal(qat("report q.st"), 0);
    assert_non_null(strstr(out, "--out"));
    assert_int_not_equal(qat("report nothing.st --out x.html"), 0);
    assert_non_null(strstr(out, "nothing.st"));
    assert_int_equal(qat("export q.st --out q.int8"), 0);
    assert_int_not_equal(qat("report q.int8 --out x.html"), 0);
    assert_non_null(strstr(out, "q.int8"));
    assert_int_not_equal(qat("report run --out x.html"), 0);
    assert_non_null(strstr(out, "no checkpoint"));
    /* qat train --report DIR, on a small MLP on features (the history of a QAT run) */
    FILE *f = fopen(strcat(strcpy((char[128]){0}, dir), "/t.csv"), "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++) fprintf(f, "%d,%g,%g,%g\n", i % 2, (i % 2) + 0.1 * (i % 7), 0.3 * (i % 5), 1.0);
    fclose(f);
    f = fopen(strcat(strcpy((char[128]){0}, dir), "/t.model"), "w");
    assert_non_null(f);
    fputs("input 3\nlinear out=8\nrelu\nlinear out=2\n", f);
    fclose(f);
    if (qat("train --model t.model --data t.csv --epochs 3 --out tf.st --quiet") != 0) fail_msg("%s", out);
    if (qat("train --from tf.st --data t.csv --quant w8a8,lsq --epochs 3 --out tq.st --report trun") != 0)
        fail_msg("%s", out);
    assert_non_null(strstr(out, "report trun/report.html"));
    snprintf(path, sizeof path, "%s/trun/report.html", dir);
    html = test_read_file(path, &len);
    assert_non_null(strstr(html, "id=\"loss-curve\""));
    assert_non_null(strstr(html, "act_step"));           /* LSQ steps over training */
    assert_non_null(strstr(html, "<code>tf.st</code>")); /* the sensitivity of the float model it came from */
    free(html);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_in_browser),
        cmocka_unit_test(test_report_after_the_fact),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
