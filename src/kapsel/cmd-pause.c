/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/container.h>

#include "commands.h"

static int pause(const struct cli_globals *g, int argc, char **argv)
{
	const char *id;
	struct kapsel_error *err = NULL;
	int r = cli_parse_id_only(&cmd_pause, argc, argv, &id);
	if (r >= 0)
		return r;
	if (kapsel_container_pause(g->root, id, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_pause = {
    .name = "pause",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "h",
    .options = cli_help_options,
    .summary = "suspend every process in a container",
    .run = pause,
    .usage = "Usage: kapsel pause <container-id>\n"
	     "\n"
	     "Freeze every process in the container (cgroup freezer).\n"
	     "\n"
	     "Options:\n"
	     "  --help, -h              print this help\n",
};
