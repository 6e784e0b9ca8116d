/* SPDX-License-Identifier: Apache-2.0 */
#include <kapsel/container.h>

#include "commands.h"

static int start(const struct cli_globals *g, int argc, char **argv)
{
	const char *id;
	struct kapsel_error *err = NULL;
	int r = cli_parse_id_only(&cmd_start, argc, argv, &id);
	if (r >= 0)
		return r;
	if (kapsel_container_start(g->root, id, &err) < 0)
		return cli_fail_err(err);
	return 0;
}

const struct cli_command cmd_start = {
    .name = "start",
    .summary = "start a created container",
    .run = start,
    .usage = "Usage: kapsel start <container-id>\n"
	     "\n"
	     "Run the user process of a created container.\n"
	     "\n"
	     "Options:\n"
	     "  --help, -h              print this help\n",
};
