/*
 * test_options.c: ctxleakd's options table, daemon/ctxleakd.8 and
 * ctxleakd --help name the same options.  --help is printed from the table,
 * so every option it lists is one of the table's; each must be an item of
 * the man page's OPTIONS, each item there must be in --help, and getopt
 * must know each one (it asks for the argument that --help shows, or takes
 * the option without one).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_run.h"
#include "check_main.h"
#include "harness.h"

#define MAX_OPTS 64

struct opts {
	char name[MAX_OPTS][40]; /* without the dashes */
	int has_arg[MAX_OPTS];	 /* --help shows an argument */
	int n;
};

static void add(struct opts *o, const char *name, size_t len, int has_arg)
{
	ck_assert_int_lt(o->n, MAX_OPTS);
	ck_assert_uint_lt(len, sizeof o->name[0]);
	memcpy(o->name[o->n], name, len);
	o->name[o->n][len] = '\0';
	o->has_arg[o->n++] = has_arg;
}

static int find(const struct opts *o, const char *name)
{
	for (int i = 0; i < o->n; i++)
		if (strcmp(o->name[i], name) == 0)
			return i;
	return -1;
}

/* The options of ctxleakd --help: each line that starts "  --name". */
static void help_options(struct opts *o)
{
	const char *argv[] = {"ctxleakd", "--help", NULL};
	char *out, *line;

	memset(o, 0, sizeof *o);
	ck_assert_int_eq(harness_exec(argv, &out), 0);
	for (line = out; line != NULL && *line != '\0';) {
		if (strncmp(line, "  --", 4) == 0) {
			const char *name = line + 4;
			size_t len = strcspn(name, " \n");

			add(o, name, len,
			    name[len] == ' ' && name[len + 1] != ' ');
		}
		line = strchr(line, '\n');
		line = line != NULL ? line + 1 : NULL;
	}
	free(out);
}

/* The option names in the tag lines (the line after each .TP) of the man
 * page's OPTIONS section: all of a line's in *all, its first in *first. */
static void man_options(struct opts *all, struct opts *first)
{
	char *page = read_file_at("daemon/ctxleakd.8");
	char *sec, *end, *p;

	memset(all, 0, sizeof *all);
	memset(first, 0, sizeof *first);
	ck_assert_ptr_nonnull(page);
	sec = strstr(page, "\n.SH OPTIONS\n");
	ck_assert_ptr_nonnull(sec);
	end = strstr(sec + 1, "\n.SH ");
	ck_assert_ptr_nonnull(end);
	*end = '\0';
	for (p = strstr(sec, "\n.TP\n"); p != NULL;
	     p = strstr(p + 1, "\n.TP\n")) {
		char *tag = p + 5, *eol = strchr(tag, '\n');
		int n = 0;

		ck_assert_ptr_nonnull(eol);
		*eol = '\0';
		/* Names are written \-\-max\-held: take [a-z\-] after it. */
		for (char *q = strstr(tag, "\\-\\-"); q != NULL;
		     q = strstr(q, "\\-\\-")) {
			char name[40];
			size_t len = 0;

			for (q += 4; (*q >= 'a' && *q <= 'z') ||
				     strncmp(q, "\\-", 2) == 0;)
				if (*q == '\\') {
					name[len++] = '-';
					q += 2;
				} else {
					name[len++] = *q++;
				}
			if (n++ == 0)
				add(first, name, len, 0);
			add(all, name, len, 0);
		}
		*eol = '\n';
	}
	free(page);
}

START_TEST(test_help_and_man_page_agree)
{
	struct opts help, man, items;

	help_options(&help);
	man_options(&man, &items);
	/* The table has 22 options today; fewer means the parse failed. */
	ck_assert_int_ge(help.n, 22);
	for (int i = 0; i < help.n; i++)
		ck_assert_msg(find(&man, help.name[i]) >= 0,
			      "--%s is not an item of ctxleakd.8's OPTIONS",
			      help.name[i]);
	for (int i = 0; i < items.n; i++)
		ck_assert_msg(find(&help, items.name[i]) >= 0,
			      "ctxleakd.8 describes --%s, --help does not",
			      items.name[i]);
}
END_TEST

/* getopt_long knows every option --help lists, with the argument it
 * shows: alone, one with an argument asks for it; one without takes no
 * argument (an extra word is refused after it, or it exits at once). */
START_TEST(test_every_listed_option_parsed)
{
	struct opts help;
	char opt[48], *out;

	help_options(&help);
	for (int i = 0; i < help.n; i++) {
		const char *argv[] = {"ctxleakd", opt, "extra", NULL};
		int st;

		snprintf(opt, sizeof opt, "--%s", help.name[i]);
		if (help.has_arg[i])
			argv[2] = NULL;
		st = harness_exec(argv, &out);
		ck_assert_msg(strstr(out, "unrecognized") == NULL, "%s: %s",
			      opt, out);
		if (help.has_arg[i])
			ck_assert_msg(st == 2 &&
					  strstr(out, "requires an "
						      "argument") != NULL,
				      "%s: status %d: %s", opt, st, out);
		else
			ck_assert_msg(
			    st == 0 ||
				(st == 2 && strstr(out, "unexpected "
							"argument "
							"'extra'") != NULL),
			    "%s: status %d: %s", opt, st, out);
		free(out);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("options");

	suite_add_tcase(s, check_tcase("table", 60,
				       test_help_and_man_page_agree,
				       test_every_listed_option_parsed, NULL));
	return check_main(s, NULL);
}
