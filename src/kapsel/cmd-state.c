/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>

#include <kapsel/container.h>

#include "commands.h"

static int state(const struct cli_globals *g, int argc, char **argv)
{
	const char *id;
	char *json = NULL;
	struct kapsel_error *err = NULL;
	int r = cli_parse_id_only(&cmd_state, argc, argv, &id);
	if (r >= 0)
		return r;
	if (kapsel_container_state(g->root, id, &json, &err) < 0)
		return cli_fail_err(err);
	puts(json);
	free(json);
	return 0;
}

const struct cli_command cmd_state = {
    .name = "state",
    .operands = CLI_OPERAND_CONTAINER,
    .shortopts = "h",
    .options = cli_help_options,
    .summary = "print the state of a container (OCI state JSON)",
    .run = state,
    .usage = "Usage: kapsel state <container-id>\n"
	     "\n"
	     "Print the container's state as OCI runtime-spec state JSON.\n"
	     "\n"
	     "Options:\n"
	     "  --help, -h              print this help\n",
};
