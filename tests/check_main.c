/*
 * check_main.c: one runner for a test program's suites, and suites and
 * test cases built from lists (see check_main.h).
 */
#include <stdarg.h>
#include <stdlib.h>

#include "check_main.h"

int check_main(Suite *first, ...)
{
	SRunner *sr = srunner_create(first);
	va_list ap;
	Suite *s;
	int failed;

	va_start(ap, first);
	while ((s = va_arg(ap, Suite *)) != NULL)
		srunner_add_suite(sr, s);
	va_end(ap);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

TCase *check_tcase(const char *name, int timeout_sec, ...)
{
	TCase *tc = tcase_create(name);
	const TTest *t;
	va_list ap;

	if (timeout_sec != 0)
		tcase_set_timeout(tc, timeout_sec);
	va_start(ap, timeout_sec);
	while ((t = va_arg(ap, const TTest *)) != NULL)
		tcase_add_test(tc, t);
	va_end(ap);
	return tc;
}

Suite *check_suite(const char *name, TCase *first, ...)
{
	Suite *s = suite_create(name);
	va_list ap;
	TCase *tc;

	va_start(ap, first);
	for (tc = first; tc != NULL; tc = va_arg(ap, TCase *))
		suite_add_tcase(s, tc);
	va_end(ap);
	return s;
}
