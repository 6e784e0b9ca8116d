/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/container.h>

#include "commands.h"

static int resume(const struct cli_globals *g, int argc, char **argv)
{
	const char *id;
	struct kapsel_error *err = NULL;
	int r = cli_parse_id_only(&cmd_resume, argc, argv, &id);
	if (r >= 0)
		return r;
	if (kapsel_container_resume(g->root, id, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_resume = {
    .name = "resume",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "h",
    .options = cli_help_options,
    .summary = "resume a paused container",
    .run = resume,
    .usage = "Usage: kapsel resume <container-id>\n"
	     "\n"
	     "Thaw every process of a paused container.\n"
	     "\n"
	     "Options:\n"
	     "  --help, -h              print this help\n",
};
