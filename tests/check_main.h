/*
 * check_main.h: the main() of every Check test program.  Each runs its
 * suites in one runner and exits non-zero when a test failed; tests/run
 * reads the runner's summary line.
 */
#ifndef CTXLEAK_CHECK_MAIN_H
#define CTXLEAK_CHECK_MAIN_H

#include <check.h>

/* Runs first and the suites after it (NULL-terminated) with CK_NORMAL
 * output; EXIT_SUCCESS when every test passed, else EXIT_FAILURE. */
int check_main(Suite *first, ...);

/* A suite named name with these test cases (NULL-terminated). */
Suite *check_suite(const char *name, TCase *first, ...);

/* A test case named name with these tests (NULL-terminated), and Check's
 * timeout raised to timeout_sec when that is not 0. */
TCase *check_tcase(const char *name, int timeout_sec, ...);

#endif /* CTXLEAK_CHECK_MAIN_H */
