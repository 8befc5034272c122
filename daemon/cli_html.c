/*
 * cli_html.c: `ctxleak show --html`, to come in the next change.
 */
#include "cli.h"

int cli_html(struct cli *c, int64_t id)
{
	(void)c;
	(void)id;
	return cli_error(CLI_EXIT_USAGE, "--html: not available yet");
}
