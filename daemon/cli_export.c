/*
 * cli_export.c: `ctxleak export`, to come in the next change.
 */
#include "cli.h"

int cli_export(struct cli *c)
{
	(void)c;
	return cli_error(CLI_EXIT_USAGE, "export: not available yet");
}
